//! A read-only copy of the state rebuilt from a Watch stream: what a worker holds. It takes one
//! snapshot and then the event batch of every later revision, in order; anything else is a gap,
//! refused so the watcher starts over instead of silently diverging.

use std::collections::BTreeMap;

use crate::pb::{self, event::Kind};

/// Why a batch did not fit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MirrorError {
    /// The batch is not the next revision.
    #[error("watch stream out of order: have revision {have}, got a batch for revision {got}")]
    OutOfOrder {
        /// The mirror's revision.
        have: u64,
        /// The batch's revision.
        got: u64,
    },
}

/// The objects of the state at one revision, keyed like the state keys them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Mirror {
    revision: u64,
    nodes: BTreeMap<u64, pb::Node>,
    networks: BTreeMap<u64, pb::Network>,
    blocks: BTreeMap<(u64, String), pb::Block>,
    endpoints: BTreeMap<u64, pb::Endpoint>,
}

impl Mirror {
    /// A mirror of `snapshot`.
    pub fn from_snapshot(snapshot: &pb::StateSnapshot) -> Mirror {
        Mirror {
            revision: snapshot.revision,
            nodes: snapshot.nodes.iter().map(|n| (n.id, n.clone())).collect(),
            networks: snapshot.networks.iter().map(|n| (n.id, n.clone())).collect(),
            blocks: snapshot.blocks.iter().map(|b| ((b.network_id, b.cidr.clone()), b.clone())).collect(),
            endpoints: snapshot.endpoints.iter().map(|e| (e.id, e.clone())).collect(),
        }
    }

    /// The mirror as a state snapshot (id counters just past the ids in use, no free-block
    /// generations, removals or token generations), so a worker can hand the same [`crate::State`] to the overlay and DNS that a
    /// manager does.
    pub fn to_snapshot(&self) -> pb::StateSnapshot {
        pb::StateSnapshot {
            revision: self.revision,
            nodes: self.nodes.values().cloned().collect(),
            networks: self.networks.values().cloned().collect(),
            blocks: self.blocks.values().cloned().collect(),
            endpoints: self.endpoints.values().cloned().collect(),
            next_network_id: self.networks.keys().next_back().map_or(1, |id| id + 1),
            next_endpoint_id: self.endpoints.keys().next_back().map_or(1, |id| id + 1),
            generations: Vec::new(),
            // Removals and token generations matter to managers only; events do not carry them.
            ..Default::default()
        }
    }

    /// The mirror as a state (see [`Mirror::to_snapshot`]).
    pub fn to_state(&self) -> crate::Result<crate::State> {
        crate::State::from_snapshot(&self.to_snapshot())
    }

    /// Applies the events of the next revision.
    pub fn apply(&mut self, batch: &pb::EventBatch) -> Result<(), MirrorError> {
        if batch.revision != self.revision + 1 {
            return Err(MirrorError::OutOfOrder { have: self.revision, got: batch.revision });
        }
        for event in &batch.events {
            match &event.kind {
                Some(Kind::NodePut(n)) => {
                    self.nodes.insert(n.id, n.clone());
                }
                Some(Kind::NodeDeleted(id)) => {
                    self.nodes.remove(id);
                }
                Some(Kind::NetworkPut(n)) => {
                    self.networks.insert(n.id, n.clone());
                }
                Some(Kind::NetworkDeleted(id)) => {
                    self.networks.remove(id);
                }
                Some(Kind::BlockPut(b)) => {
                    self.blocks.insert((b.network_id, b.cidr.clone()), b.clone());
                }
                Some(Kind::BlockDeleted(b)) => {
                    self.blocks.remove(&(b.network_id, b.cidr.clone()));
                }
                Some(Kind::EndpointPut(e)) => {
                    self.endpoints.insert(e.id, e.clone());
                }
                Some(Kind::EndpointDeleted(e)) => {
                    self.endpoints.remove(&e.id);
                }
                None => {}
            }
        }
        self.revision = batch.revision;
        Ok(())
    }

    /// The revision it reflects.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// Nodes by id.
    pub fn nodes(&self) -> impl Iterator<Item = &pb::Node> {
        self.nodes.values()
    }

    /// Networks by id.
    pub fn networks(&self) -> impl Iterator<Item = &pb::Network> {
        self.networks.values()
    }

    /// Blocks by (network, prefix).
    pub fn blocks(&self) -> impl Iterator<Item = &pb::Block> {
        self.blocks.values()
    }

    /// Endpoints by id.
    pub fn endpoints(&self) -> impl Iterator<Item = &pb::Endpoint> {
        self.endpoints.values()
    }

    /// True when it holds exactly the objects of `state` at `state`'s revision.
    pub fn matches(&self, state: &crate::State) -> bool {
        *self == Mirror::from_snapshot(&state.snapshot())
    }
}
