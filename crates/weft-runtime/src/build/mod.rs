//! Dockerfile builds: the parser, and the builder that turns stages into image layers.

pub mod builder;
mod cache;
mod config;
mod context;
pub mod dockerfile;
mod layer;
