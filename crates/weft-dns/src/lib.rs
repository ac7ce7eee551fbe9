//! weft-dns is the embedded name server of user-defined networks (Docker's 127.0.0.11): it answers
//! the names and aliases of every container on a network, on every host, from the replicated
//! endpoints, and forwards other names to the host's resolvers.
//!
//! The message codec is pure ([`codec`]); the server ([`server`]) listens on each network's
//! gateway address and never answers a client outside the network it asks.

pub mod codec;
pub mod server;

pub use codec::{DnsError, Query, Rcode};
pub use server::{Zone, Zones, run};
