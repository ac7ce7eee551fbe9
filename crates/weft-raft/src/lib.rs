//! weft-raft drives raft-rs for weft's control plane: the durable log (raft-engine), snapshots of
//! weft-state, the peer transport, proposals with request ids, ReadIndex reads and membership
//! changes.
//!
//! It must never interpret commands itself: it orders them and hands committed entries to
//! `weft-state`'s `apply`, which alone decides what they do.
