//! How a container is confined: capabilities, masked and read-only paths, and (in their own
//! modules) seccomp filters and device rules. Everything here is pure: it decides, the container
//! setup applies.

pub mod caps;
pub mod paths;
pub mod seccomp;
