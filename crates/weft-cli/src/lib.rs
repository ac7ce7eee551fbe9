//! weft-cli is `weft`, the admin CLI: Docker-shaped verbs over the local unix socket or a remote
//! mutual-TLS connection.
//!
//! It must never reach into the agent's state directory or the kernel: everything goes through the
//! agent's API.
