//! weftd, the per-host agent: the cluster control plane's servers and clients (Raft peers for
//! managers, a Watch for workers), TLS and join tokens, liveness and membership.

pub mod agent_api;
pub mod authz;
pub mod beats;
pub mod daemon;
pub mod dns;
pub mod error;
pub mod heartbeat;
pub mod host;
pub mod identity;
pub mod listener;
pub mod liveness;
pub mod membership;
pub mod metrics;
pub mod peers;
pub mod pki;
pub mod ports;
pub mod reason;
pub mod renewal;
pub mod report;
pub mod restart;
pub mod service;
pub mod spec;
pub mod supervisor;
pub mod telemetry;
pub mod tls;
pub mod transport;
pub mod tty;
pub mod watch;
pub mod why;
