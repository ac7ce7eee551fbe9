//! weft-raft drives raft-rs for weft's control plane: the durable log (raft-engine), snapshots of
//! weft-state, the ready loop, proposals with request ids and membership changes. The peer
//! transport is a trait, so the gRPC service (and tests' in-memory network) plug in.
//!
//! It must never interpret commands itself: it orders them and hands committed entries to
//! `weft-state`'s `apply`, which alone decides what they do.

pub mod guard;
pub mod history;
pub mod node;
pub mod storage;

pub use guard::{Refusal, Refusals};
pub use history::{History, WatchStart};
pub use node::{Membership, NodeHandle, NodeStatus, start};
pub use storage::EngineStorage;

/// Sends raft messages to peers. Must not block: a slow or unreachable peer never holds up the
/// others (raft retransmits what is lost).
pub trait Transport: Send + Sync {
    /// Queues messages for their `to` peers.
    fn send(&self, messages: Vec<raft::eraftpb::Message>);
}

/// What the control plane can fail with.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RaftError {
    /// No leader is known: the cluster is electing, or this node is on a minority side.
    #[error("no leader: the cluster has no quorum reachable from this manager (no quorum)")]
    NoLeader,
    /// Only the leader can do this; the leader's id is given (0 when none is known).
    #[error("this manager is not the leader (leader: node {0})")]
    NotLeader(u64),
    /// The leader was lost while the command was in flight: it may or may not commit.
    #[error(
        "the leader changed before the command committed (no quorum?); it may or may not have been applied"
    )]
    LeaderLost,
    /// raft-rs refused a proposal.
    #[error("proposal refused: {0}")]
    Proposal(String),
    /// The command was applied and rejected by the state machine.
    #[error(transparent)]
    Rejected(#[from] weft_state::StateError),
    /// The durable log failed.
    #[error("raft storage: {0}")]
    Storage(String),
    /// Bad configuration.
    #[error("raft config: {0}")]
    Config(String),
    /// The node has stopped.
    #[error("the raft node has stopped")]
    Stopped,
}
