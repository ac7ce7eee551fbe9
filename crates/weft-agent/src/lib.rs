//! weft-agent is `weftd`, the per-host agent: configuration, the local and remote gRPC servers,
//! and the wiring of runtime, reconciler and control plane, plus metrics.
//!
//! It must never hold logic of its own that another crate should own: it connects the pieces.
