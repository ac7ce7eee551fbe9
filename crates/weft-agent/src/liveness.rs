//! Liveness as the leader sees it: heartbeats are kept in memory only, and what goes through the
//! log are the transitions (Ready -> Down, Down -> Ready) and, after the lease TTL, the release
//! of a dead node's addresses. Pure: the caller supplies the clocks.
//!
//! A lease runs on the leader's own monotonic clock, as etcd's do: a node's addresses are released
//! only once this leader has itself not heard from it for the whole TTL, counted from its last
//! heartbeat or from this leader's election, whichever is later (a new leader starts every lease
//! over), and the replicated wall-clock check of `ExpireNode` must agree too. A leader whose wall
//! clock runs ahead cannot release anything early; one whose clock lags releases late, never
//! early.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use weft_state::{State, Status, cmd, pb};

/// Timing of liveness.
#[derive(Debug, Clone, Copy)]
pub struct LivenessConfig {
    /// A node not heard from for this long is marked Down.
    pub down_after: Duration,
    /// A node Down for this long loses its blocks and endpoints.
    pub lease_ttl: Duration,
}

/// What the leader last heard from a node.
#[derive(Debug, Clone, Copy)]
pub struct Seen {
    /// When.
    pub at: Instant,
    /// The revision its copy of the state had reached.
    pub revision: u64,
}

/// The leader's heartbeat table.
#[derive(Debug)]
pub struct Liveness {
    seen: HashMap<u64, Seen>,
    /// When this node became leader: nodes it has not heard from yet get a grace period from here.
    since: Instant,
}

impl Liveness {
    /// An empty table for a leader elected at `now`.
    pub fn new(now: Instant) -> Liveness {
        Liveness { seen: HashMap::new(), since: now }
    }

    /// Records a heartbeat heard at `at` (a relayed one may be older than one already recorded:
    /// the later time is kept).
    pub fn record(&mut self, id: u64, revision: u64, at: Instant) {
        let seen = self.seen.entry(id).or_insert(Seen { at, revision });
        if at >= seen.at {
            *seen = Seen { at, revision };
        }
    }

    /// What was last heard from `id`.
    pub fn seen(&self, id: u64) -> Option<Seen> {
        self.seen.get(&id).copied()
    }

    /// The commands the leader should propose now (`wall_ms`: the wall clock for the log).
    pub fn decide(
        &self,
        state: &State,
        now: Instant,
        wall_ms: u64,
        config: &LivenessConfig,
    ) -> Vec<pb::Command> {
        let mut out = Vec::new();
        for node in state.nodes() {
            let last = self.seen.get(&node.id).map_or(self.since, |s| s.at.max(self.since));
            let fresh = now.saturating_duration_since(last) < config.down_after;
            let heard = self.seen.contains_key(&node.id) && fresh;
            match node.status {
                Status::Ready if !fresh => out.push(cmd::set_node_status(node.id, Status::Down, wall_ms)),
                Status::Down if heard => out.push(cmd::set_node_status(node.id, Status::Ready, wall_ms)),
                Status::Down => {
                    let down_for = wall_ms.saturating_sub(node.status_since_ms);
                    let ttl = config.lease_ttl.as_millis() as u64;
                    let silent = now.saturating_duration_since(last);
                    if silent >= config.lease_ttl && down_for >= ttl && holds_addresses(state, node.id) {
                        out.push(cmd::expire_node(node.id, wall_ms, ttl));
                    }
                }
                _ => {}
            }
        }
        out
    }
}

fn holds_addresses(state: &State, node: u64) -> bool {
    state.endpoints().any(|e| e.node == node)
        || state.networks().any(|n| state.blocks(n.id).iter().any(|b| b.node == node))
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_state::{Driver, Role};

    fn state() -> State {
        let mut s = State::new();
        s.apply(&cmd::register_node(1, "a", "198.51.100.1", Role::Manager, 0)).unwrap();
        s.apply(&cmd::register_node(2, "b", "198.51.100.2", Role::Worker, 0)).unwrap();
        s.apply(&cmd::create_network("app", Driver::Overlay, &["10.44.0.0/16"], 0, 0)).unwrap();
        s.apply(&cmd::allocate_endpoint("app", 2, "c1", "", "")).unwrap();
        s
    }

    #[test]
    fn only_transitions_are_proposed_and_expiry_follows_the_ttl() {
        let config =
            LivenessConfig { down_after: Duration::from_secs(3), lease_ttl: Duration::from_secs(10) };
        let t0 = Instant::now();
        let mut s = state();
        let mut live = Liveness::new(t0);
        live.record(1, 4, t0);
        live.record(2, 4, t0);
        // Fresh heartbeats: nothing to write.
        assert!(live.decide(&s, t0 + Duration::from_secs(1), 1000, &config).is_empty());
        // Node 2 falls silent: one Down transition, and only one once applied.
        live.record(1, 4, t0 + Duration::from_secs(4));
        let cmds = live.decide(&s, t0 + Duration::from_secs(4), 4000, &config);
        assert_eq!(cmds, vec![cmd::set_node_status(2, Status::Down, 4000)]);
        s.apply(&cmds[0]).unwrap();
        assert!(live.decide(&s, t0 + Duration::from_secs(5), 5000, &config).is_empty());
        // Past the TTL: its addresses are released, once.
        let cmds = live.decide(&s, t0 + Duration::from_secs(15), 15_000, &config);
        assert!(cmds.contains(&cmd::expire_node(2, 15_000, 10_000)), "{cmds:?}");
        s.apply(&cmd::expire_node(2, 15_000, 10_000)).unwrap();
        assert_eq!(s.endpoints().count(), 0);
        live.record(1, 4, t0 + Duration::from_secs(16));
        assert!(live.decide(&s, t0 + Duration::from_secs(16), 16_000, &config).is_empty());
        // It comes back: Ready again.
        live.record(2, 9, t0 + Duration::from_secs(17));
        let cmds = live.decide(&s, t0 + Duration::from_secs(17), 17_000, &config);
        assert_eq!(cmds, vec![cmd::set_node_status(2, Status::Ready, 17_000)]);
    }

    #[test]
    fn a_lease_runs_on_the_leaders_monotonic_clock_and_restarts_with_a_new_leader() {
        let config =
            LivenessConfig { down_after: Duration::from_secs(3), lease_ttl: Duration::from_secs(10) };
        let mut s = state();
        // Node 2 went Down at wall 1000 under an earlier leader.
        s.apply(&cmd::set_node_status(2, Status::Down, 1000)).unwrap();
        let t0 = Instant::now();
        let live = Liveness::new(t0);
        // A new leader whose wall clock is far ahead: by the wall clock the lease is long over,
        // but this leader has not itself waited the TTL yet.
        let ahead = 1000 + 3_600_000;
        let expiries = |at: u64, wall: u64| {
            live.decide(&s, t0 + Duration::from_secs(at), wall, &config)
                .into_iter()
                .filter(|c| matches!(c.kind, Some(pb::command::Kind::ExpireNode(_))))
                .count()
        };
        assert_eq!(expiries(5, ahead), 0, "a clock ahead releases nothing early");
        assert_eq!(expiries(9, ahead), 0);
        assert_eq!(expiries(10, ahead), 1, "after the TTL on its own clock");
        // A leader whose wall clock lags: the replicated check holds it back (late, not early).
        assert_eq!(expiries(30, 5000), 0);
        assert_eq!(expiries(30, 11_000), 1);
    }

    #[test]
    fn a_new_leader_gives_silent_nodes_a_grace_period() {
        let config =
            LivenessConfig { down_after: Duration::from_secs(3), lease_ttl: Duration::from_secs(10) };
        let t0 = Instant::now();
        let live = Liveness::new(t0);
        assert!(live.decide(&state(), t0 + Duration::from_secs(2), 0, &config).is_empty());
        assert_eq!(live.decide(&state(), t0 + Duration::from_secs(4), 0, &config).len(), 2);
    }
}
