//! The builder: runs a parsed Dockerfile's stages against the image store and runtime. Every
//! RUN executes in a build container on the stage's current layers and its writable layer becomes
//! an image layer; COPY and ADD write layers straight from the context (or another stage); other
//! instructions only change the image config. A layer cache keyed by parent, instruction and (for
//! COPY/ADD) the content of what is copied reuses layers until the first miss.
//!
//! This is the entry point; the parts live beside it: `context` (the build context and
//! `.dockerignore`), `stage` (the stage loop), `layer` (layer tars), `cache` (the layer cache)
//! and `config` (the typed image config).

use std::collections::BTreeMap;
use std::fs;

use super::config::{ImageParts, rfc3339};
use super::context::Ignore;
use super::dockerfile::parse_with_bases;
use super::stage::{Build, Progress, StageState, build_err, stages_needed};
use crate::container::Runtime;
use crate::image::ImageStore;
use crate::{Result, RuntimeError};

pub use super::options::{BuildOptions, BuildReport, StepReport};

/// Builds images from Dockerfiles.
#[derive(Debug)]
pub struct Builder<'a> {
    store: &'a ImageStore,
    runtime: &'a Runtime,
}

impl<'a> Builder<'a> {
    /// A builder over `store`, running RUN steps with `runtime`.
    pub fn new(store: &'a ImageStore, runtime: &'a Runtime) -> Builder<'a> {
        Builder { store, runtime }
    }

    /// Runs a build. Nothing is recorded as an image unless every step succeeds.
    pub fn build(&self, options: &BuildOptions) -> Result<BuildReport> {
        let dockerfile_path =
            options.dockerfile.clone().unwrap_or_else(|| options.context.join("Dockerfile"));
        let text = fs::read_to_string(&dockerfile_path)
            .map_err(RuntimeError::io("read Dockerfile", &dockerfile_path))?;
        // Variables expand with the base image's environment too (`ENV PATH=/app:$PATH`).
        let base_env = |name: &str| {
            let image = self.store.get(name).ok()?;
            let env = image.runtime_config()["Env"]
                .as_array()?
                .iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect();
            Some(env)
        };
        let dockerfile = parse_with_bases(&text, &options.build_args, &base_env)
            .map_err(|e| build_err(e.line, e.message))?;
        for tag in &options.tags {
            if tag.is_empty()
                || tag.contains(char::is_whitespace)
                || tag.chars().any(|c| c.is_ascii_uppercase())
            {
                return Err(RuntimeError::invalid("tag", tag, "expected lowercase repo[:tag]"));
            }
        }
        let target = match &options.target {
            Some(t) => dockerfile
                .stage_index(t)
                .ok_or_else(|| RuntimeError::invalid("target", t, "no stage of that name"))?,
            None => dockerfile.stages.len().checked_sub(1).ok_or_else(|| {
                RuntimeError::invalid("Dockerfile", dockerfile_path.display().to_string(), "no FROM")
            })?,
        };
        let needed = stages_needed(self.store, &dockerfile, target)?;
        let ignore = Ignore::load(&options.context)?;
        let now =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let created = rfc3339(options.source_date_epoch.unwrap_or(now));
        let build = Build {
            store: self.store,
            runtime: self.runtime,
            dockerfile: &dockerfile,
            options,
            ignore: &ignore,
            created: &created,
        };
        let mut done: BTreeMap<usize, StageState> = BTreeMap::new();
        let mut progress = Progress::default();
        for index in (0..=target).filter(|i| needed.contains(i)) {
            let state = build.stage(index, &done, &mut progress)?;
            done.insert(index, state);
        }
        let state = done
            .remove(&target)
            .ok_or_else(|| build_err(dockerfile.stages[target].line, "the target stage was not built"))?;
        // The image is as old as its newest step (a build served from the cache is the image
        // it built before).
        let image_created = state.history.last().and_then(|h| h.created().clone()).unwrap_or(created);
        let parts = ImageParts {
            config: &state.config,
            diff_ids: &state.diff_ids,
            history: &state.history,
            created: &image_created,
        };
        let image = self.store.add_image(&parts.to_json()?, &options.tags)?;
        Ok(BuildReport { image, steps: progress.steps, runs_executed: progress.runs })
    }
}
