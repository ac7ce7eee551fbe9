//! Endpoints nobody holds: an allocation whose answer never reached this host (the leader was
//! lost mid-call, weftd was killed right after proposing) may still have been committed, leaving
//! an endpoint of this node for a container that does not exist here. Every container weft wires
//! has a netconf file before its first endpoint is allocated, so an endpoint of this node whose
//! container has neither a record nor a netconf file, for [`ORPHAN_AFTER`] on a live copy of the
//! state, is released: its address goes back to the pool instead of leaking for good.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use weft_proto::v1 as pb;
use weft_state::cmd;

use super::Host;
use super::janitor::Survey;

/// How long an endpoint must have no container before it is released.
const ORPHAN_AFTER: Duration = Duration::from_secs(10);

/// Fault injection for tests: with `WEFTD_FAILPOINT_KEEP_ORPHANS` set, no endpoint is released
/// as an orphan, so a test of the control plane can allocate endpoints for containers that do
/// not exist (raw `Apply` calls) and still find them all, however slow its machine. Nothing else
/// reads it.
const KEEP_ORPHANS_FAILPOINT: &str = "WEFTD_FAILPOINT_KEEP_ORPHANS";

/// The endpoints of `node` in `state` whose container is in neither `containers` nor
/// `netconfs` (container ids): candidates for release.
pub(super) fn unheld(state: &weft_state::State, node: u64, known: &BTreeSet<&str>) -> Vec<(u64, String)> {
    state
        .endpoints()
        .filter(|e| e.node == node && !known.contains(e.container_id.as_str()))
        .map(|e| (e.id, e.container_id.clone()))
        .collect()
}

impl Host {
    /// Releases endpoints of this node that no container holds (see the module doc), once they
    /// have been seen so for [`ORPHAN_AFTER`]. `since` keeps when each was first seen so.
    pub(super) async fn release_orphan_endpoints(&self, survey: &Survey, since: &mut HashMap<u64, Instant>) {
        if !self.live.load(std::sync::atomic::Ordering::SeqCst)
            || std::env::var_os(KEEP_ORPHANS_FAILPOINT).is_some()
        {
            return;
        }
        let known: BTreeSet<&str> =
            survey.containers.keys().chain(survey.netconfs.keys()).map(String::as_str).collect();
        let state = self.state();
        let candidates = unheld(&state, self.id, &known);
        since.retain(|id, _| candidates.iter().any(|(c, _)| c == id));
        let now = Instant::now();
        for (endpoint, container) in candidates {
            let first = *since.entry(endpoint).or_insert(now);
            if now.duration_since(first) < ORPHAN_AFTER {
                continue;
            }
            match self.apply(cmd::release_endpoint(endpoint)).await {
                Ok(_) => {
                    tracing::warn!(endpoint, container = %container, "released an endpoint no container on this host holds (an allocation whose answer was lost)");
                    since.remove(&endpoint);
                }
                Err(e) if e.reason() == pb::Reason::UnknownEndpoint => {
                    since.remove(&endpoint);
                }
                Err(e) => {
                    tracing::warn!(endpoint, error = %e, "releasing an orphaned endpoint failed; will retry")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_state::{Driver, Role, State};

    #[test]
    fn only_this_nodes_endpoints_without_a_container_are_unheld() {
        let mut state = State::default();
        let c = |id: &str| id.repeat(64 / id.len());
        state.apply(&cmd::register_node(1, "h1", "198.51.100.1", Role::Manager, 0)).unwrap();
        state.apply(&cmd::register_node(2, "h2", "198.51.100.2", Role::Worker, 0)).unwrap();
        state.apply(&cmd::create_network("n", Driver::Overlay, &["10.9.0.0/24"], 0, 0)).unwrap();
        for (node, container) in [(1, c("a")), (1, c("b")), (2, c("c"))] {
            state.apply(&cmd::allocate_endpoint("n", node, &container, "", "")).unwrap();
        }
        let held = c("a");
        let known: BTreeSet<&str> = [held.as_str()].into_iter().collect();
        let got: Vec<String> = unheld(&state, 1, &known).into_iter().map(|(_, c)| c).collect();
        assert_eq!(got, [c("b")]);
        assert!(unheld(&state, 3, &known).is_empty());
    }
}
