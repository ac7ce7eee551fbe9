//! weftd, the per-host agent: the cluster control plane's servers and clients (Raft peers for
//! managers, a Watch for workers), TLS and join tokens, liveness and membership.

pub mod daemon;
pub mod identity;
pub mod liveness;
pub mod membership;
pub mod peers;
pub mod service;
pub mod tls;
pub mod transport;
pub mod watch;
