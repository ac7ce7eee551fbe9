//! The weft CLI's connection to an agent: the local unix socket (default `/run/weft/weft.sock`)
//! or a remote manager over mutual TLS. Shared by the `weft` binary and the end-to-end tests.

pub mod client;
