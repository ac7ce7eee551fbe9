//! Heartbeat sessions (`Cluster.Heartbeats`), Swarm's agent sessions in weft's shape: each host
//! holds one stream to a manager and sends a beat on it every period; the manager answers only
//! when it has something to say (the session's start, a change in how far the host's copy of the
//! state is behind, a report a `weft net why` wants). A follower manager does not forward each
//! beat it hears: it keeps them in its [`Relay`] and sends them to the leader together, at most
//! once per [`relay_window`], each dated by how long ago it was heard, so the leader's work per
//! period grows with the number of managers rather than with the number of hosts. A manager that
//! leads records its own beat in place.
//!
//! This module is the pure part both ends share: [`Session`], a manager's bookkeeping for one
//! session (when to answer, what), and [`Relay`], what a follower holds for the leader. The
//! manager's end runs in [`crate::service`]; a host's end is [`crate::heartbeat`].

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use weft_proto::v1 as pb;

/// How long a follower manager holds the beats it heard before relaying them: a quarter of the
/// heartbeat period, so the leader hears of a host at most that much later than if the host
/// had called it, and takes at most four messages a period from each follower.
pub fn relay_window(period: Duration) -> Duration {
    (period / 4).max(Duration::from_millis(10))
}

/// When a beat relayed with `age_ms` was heard, seen at `now` (the wire carries ages, not
/// instants: each host's monotonic clock is its own).
pub fn heard_at(now: Instant, age_ms: u32) -> Instant {
    now.checked_sub(Duration::from_millis(u64::from(age_ms))).unwrap_or(now)
}

/// The beats a follower manager heard and has not relayed yet, newest per host.
#[derive(Debug, Default)]
pub struct Relay {
    pending: Mutex<BTreeMap<u64, (Instant, pb::HeartbeatRequest)>>,
    /// Woken when a beat carries a report: reports are relayed at once, not after the window.
    urgent: Notify,
}

impl Relay {
    /// Keeps `beat`, heard at `at`; a report already waiting for the same host is kept with it.
    pub fn put(&self, mut beat: pb::HeartbeatRequest, at: Instant) {
        let report = beat.report.is_some();
        let mut pending = self.pending.lock().unwrap();
        if let Some((_, earlier)) = pending.get_mut(&beat.node_id)
            && beat.report.is_none()
        {
            beat.report = earlier.report.take();
        }
        pending.insert(beat.node_id, (at, beat));
        drop(pending);
        if report {
            self.urgent.notify_one();
        }
    }

    /// Everything held, each with its age at `now` in milliseconds.
    pub fn drain(&self, now: Instant) -> Vec<(pb::HeartbeatRequest, u32)> {
        let pending = std::mem::take(&mut *self.pending.lock().unwrap());
        pending
            .into_values()
            .map(|(at, beat)| {
                let age = now.saturating_duration_since(at).as_millis();
                (beat, u32::try_from(age).unwrap_or(u32::MAX))
            })
            .collect()
    }

    /// Resolves when a held beat carries a report.
    pub async fn urgent(&self) {
        self.urgent.notified().await
    }
}

/// What a manager remembers of one session, so that it answers only with something new.
#[derive(Debug, Default)]
pub struct Session {
    /// Every host whose beat came on this session (the sender; on a follower's, its workers).
    spoken_for: BTreeSet<u64>,
    /// The sender's lag last told.
    told_lag: Option<u64>,
    /// Hosts told that their report is wanted, and not yet seen sending it.
    told_wanted: BTreeSet<u64>,
}

impl Session {
    /// Beats arrived: their hosts are spoken for here, and a report among them answers its want.
    pub fn heard(&mut self, beats: &[pb::HeartbeatRequest]) {
        for beat in beats {
            self.spoken_for.insert(beat.node_id);
            if beat.report.is_some() {
                self.told_wanted.remove(&beat.node_id);
            }
        }
    }

    /// The answer to send now, if there is anything to say: `sender_revision` is the revision the
    /// sender's latest beat carried (`None` when the session wakes for a new want), `revision`
    /// this manager's, `wanted` what is wanted of a host.
    pub fn answer(
        &mut self,
        leader_id: u64,
        revision: u64,
        sender_revision: Option<u64>,
        wanted: impl Fn(u64) -> Option<pb::ReportWanted>,
    ) -> Option<pb::BeatsAnswer> {
        let lag_changed = match sender_revision {
            Some(theirs) => {
                let lag = revision.saturating_sub(theirs);
                let changed = self.told_lag != Some(lag);
                self.told_lag = Some(lag);
                changed
            }
            None => false,
        };
        let mut asks = Vec::new();
        let mut still_wanted = BTreeSet::new();
        for node in &self.spoken_for {
            if let Some(want) = wanted(*node) {
                still_wanted.insert(*node);
                if !self.told_wanted.contains(node) {
                    asks.push(pb::WantedReport { node_id: *node, wanted: Some(want) });
                }
            }
        }
        // A want that ended without a report (its `net why` gave up) may be asked again later.
        self.told_wanted.retain(|n| still_wanted.contains(n));
        self.told_wanted.extend(asks.iter().map(|a| a.node_id));
        (lag_changed || !asks.is_empty()).then_some(pb::BeatsAnswer { leader_id, revision, wanted: asks })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn beat(node_id: u64, revision: u64, report: bool) -> pb::HeartbeatRequest {
        pb::HeartbeatRequest { node_id, revision, report: report.then(pb::HostReport::default) }
    }

    fn want() -> pb::ReportWanted {
        pb::ReportWanted { probes: vec![pb::ProbeTarget { vni: 7, node: 3 }] }
    }

    #[test]
    fn a_session_answers_its_start_and_then_only_changes_of_lag() {
        let mut s = Session::default();
        s.heard(&[beat(1, 10, false)]);
        let first = s.answer(9, 10, Some(10), |_| None).expect("the start is answered");
        assert_eq!((first.leader_id, first.revision), (9, 10));
        s.heard(&[beat(1, 10, false)]);
        assert_eq!(s.answer(9, 10, Some(10), |_| None), None, "in step: nothing to say");
        s.heard(&[beat(1, 10, false)]);
        assert_eq!(s.answer(9, 12, Some(10), |_| None).map(|a| a.revision), Some(12), "behind by 2");
        s.heard(&[beat(1, 11, false)]);
        assert_eq!(s.answer(9, 12, Some(11), |_| None).map(|a| a.revision), Some(12), "behind by 1");
        s.heard(&[beat(1, 12, false)]);
        assert!(s.answer(9, 12, Some(12), |_| None).is_some(), "caught up: told once");
        s.heard(&[beat(1, 12, false)]);
        assert_eq!(s.answer(9, 12, Some(12), |_| None), None);
    }

    #[test]
    fn a_want_is_told_once_per_session_until_its_report_comes_and_again_after() {
        let mut s = Session::default();
        s.heard(&[beat(1, 5, false), beat(2, 5, false)]);
        s.answer(9, 5, Some(5), |_| None);
        // Host 2 (relayed by this session's sender) is wanted: told at once, without a beat.
        let wanted = |n: u64| (n == 2).then(want);
        let told = s.answer(9, 5, None, wanted).expect("the want is pushed");
        assert_eq!(told.wanted, vec![pb::WantedReport { node_id: 2, wanted: Some(want()) }]);
        s.heard(&[beat(1, 5, false), beat(2, 5, false)]);
        assert_eq!(s.answer(9, 5, Some(5), wanted), None, "not told twice");
        // Its report comes; the same host is wanted again by a later `net why`: told again.
        s.heard(&[beat(1, 5, false), beat(2, 5, true)]);
        assert!(s.answer(9, 5, Some(5), wanted).is_some());
        // A host this session never spoke for is not told here.
        let mut other = Session::default();
        other.heard(&[beat(1, 5, false)]);
        other.answer(9, 5, Some(5), |_| None);
        assert_eq!(other.answer(9, 5, None, wanted), None);
    }

    #[test]
    fn a_want_that_ended_without_a_report_can_be_told_again() {
        let mut s = Session::default();
        s.heard(&[beat(1, 5, false)]);
        s.answer(9, 5, Some(5), |_| None);
        assert!(s.answer(9, 5, None, |_| Some(want())).is_some());
        assert_eq!(s.answer(9, 5, None, |_| None), None, "the want ended");
        assert!(s.answer(9, 5, None, |_| Some(want())).is_some(), "a new want is told");
    }

    #[test]
    fn the_relay_keeps_the_newest_beat_per_host_with_its_age_and_any_report() {
        let relay = Relay::default();
        let t0 = Instant::now();
        relay.put(beat(4, 1, true), t0);
        relay.put(beat(4, 2, false), t0 + Duration::from_millis(100));
        relay.put(beat(5, 2, false), t0 + Duration::from_millis(200));
        let drained = relay.drain(t0 + Duration::from_millis(300));
        assert_eq!(drained.len(), 2);
        let (four, age) = &drained[0];
        assert_eq!((four.node_id, four.revision, *age), (4, 2, 200));
        assert!(four.report.is_some(), "the report heard earlier is not lost");
        assert_eq!(drained[1].1, 100);
        assert!(relay.drain(t0 + Duration::from_millis(400)).is_empty(), "drained once");
    }

    #[test]
    fn the_relay_window_is_a_quarter_period() {
        assert_eq!(relay_window(Duration::from_secs(1)), Duration::from_millis(250));
        assert_eq!(relay_window(Duration::from_millis(20)), Duration::from_millis(10));
    }
}
