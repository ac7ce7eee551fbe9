//! Dockerfile builds: the parser, and the builder that turns stages into image layers.

pub mod builder;
pub mod dockerfile;
