//! The Docker Engine API (versions 1.24 to 1.44) on a unix socket, served from weftd's own agent
//! API, so the docker client, docker-compose and the Docker SDKs drive weft: a container started
//! by `docker run` is a weft container, on weft's networks, seen by `weft ps`.
//!
//! Layers: `route` (which endpoint), `create` (Docker's create body to weft's run request) and
//! `model` (weft's answers in Docker's shapes) are pure; `engine` holds what lives only here
//! (containers created and not yet started); the handlers (`system`, `containers`, `exec`,
//! `events`, `images`, `build`, `networks`) call weftd; `server` is the HTTP glue.

pub mod build;
pub mod containers;
pub mod create;
pub mod engine;
pub mod error;
pub mod events;
pub mod exec;
pub mod frame;
pub mod images;
pub mod model;
pub mod networks;
pub mod reply;
pub mod route;
pub mod server;
pub mod system;

pub use engine::Engine;
pub use error::ApiError;
pub use server::{ServeError, bind, local_agent, serve};
