//! What a build is asked for and what it reports: shared by the entry point and the stage loop.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::image::ImageRecord;

/// What to build.
#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    /// The build context directory.
    pub context: PathBuf,
    /// The Dockerfile (`-f`); `context/Dockerfile` when `None`.
    pub dockerfile: Option<PathBuf>,
    /// Names for the result.
    pub tags: Vec<String>,
    /// `--build-arg` values.
    pub build_args: BTreeMap<String, String>,
    /// Stop at this stage (`--target`).
    pub target: Option<String>,
    /// Ignore the layer cache.
    pub no_cache: bool,
    /// Give RUN the host's network (else only loopback).
    pub network_host: bool,
    /// The build's time, seconds since the epoch, for the image's `created` and its history
    /// (`SOURCE_DATE_EPOCH`, for reproducible image ids); now when `None`.
    pub source_date_epoch: Option<u64>,
}

/// What happened to one step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepReport {
    /// Stage index.
    pub stage: usize,
    /// Dockerfile line.
    pub line: usize,
    /// The instruction.
    pub text: String,
    /// Whether its layer came from the cache (always false for metadata-only steps).
    pub cached: bool,
    /// Whether it made a layer.
    pub layer: bool,
}

/// The result of a build.
#[derive(Debug, Clone)]
pub struct BuildReport {
    /// The image.
    pub image: ImageRecord,
    /// Every step that ran, in order.
    pub steps: Vec<StepReport>,
    /// How many RUN instructions were executed (not taken from the cache).
    pub runs_executed: usize,
}
