//! Dockerfile builds: the parser, and the builder that turns stages into image layers.
//!
//! [`builder`] is the entry point. Behind it: `context` (the build context, `.dockerignore`,
//! COPY/ADD sources), `stage` (the stage loop and instruction execution), `layer` (directory
//! diffs written as layer tars), `view` (a stage's layers read as one file system), `cache`
//! (layer cache keys, lookup and store) and `config` (the image config, typed with `oci-spec`).

pub mod builder;
mod cache;
mod config;
mod context;
pub mod dockerfile;
mod layer;
mod options;
mod stage;
mod view;
