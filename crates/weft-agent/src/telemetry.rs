//! Measurements weftd takes of itself (proposal latency, watch lag), kept in one value that the
//! recording parts and the metrics endpoint share.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// Upper bounds of the proposal latency buckets, in seconds.
const BUCKETS: [f64; 11] = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];

/// A latency histogram with fixed buckets, lock-free.
#[derive(Debug)]
pub struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_us: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Histogram {
        Histogram::new()
    }
}

impl Histogram {
    const fn new() -> Histogram {
        Histogram {
            buckets: [const { AtomicU64::new(0) }; BUCKETS.len()],
            count: AtomicU64::new(0),
            sum_us: AtomicU64::new(0),
        }
    }

    /// Records one observation.
    pub fn observe(&self, took: Duration) {
        let secs = took.as_secs_f64();
        for (bound, bucket) in BUCKETS.iter().zip(&self.buckets) {
            if secs <= *bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(took.as_micros() as u64, Ordering::Relaxed);
    }

    /// Appends the histogram in Prometheus' text format.
    pub fn render(&self, name: &str, help: &str, out: &mut String) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (bound, bucket) in BUCKETS.iter().zip(&self.buckets) {
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {}", bucket.load(Ordering::Relaxed));
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "{name}_sum {}", self.sum_us.load(Ordering::Relaxed) as f64 / 1e6);
        let _ = writeln!(out, "{name}_count {count}");
    }
}

/// What weftd's parts measure about themselves, for the metrics endpoint: one per process,
/// handed to each part that records (the cluster service, the heartbeat loop) and to the
/// endpoint that renders it, instead of global statics.
#[derive(Debug, Default)]
pub struct Telemetry {
    /// Latency of the proposals this manager made, from submission to the applied outcome.
    pub proposals: Histogram,
    /// Revisions this node's copy of the state was behind the leader at its last heartbeat.
    pub watch_lag: AtomicU64,
    /// Messages received on the heartbeat sessions this manager serves.
    pub beat_messages: AtomicU64,
    /// Beats those messages carried (a follower's message carries its workers' beats too).
    pub beats: AtomicU64,
    /// Calls the authorization layer refused (local socket and TLS listener).
    pub api_denied: Arc<AtomicU64>,
    /// Peer raft messages refused before raft-rs saw them, while this node is a manager.
    raft_refusals: RwLock<Option<Arc<weft_raft::Refusals>>>,
}

impl Telemetry {
    /// Reports the raft node's refusal counters from now on (a manager's role started).
    pub fn set_raft_refusals(&self, refusals: Arc<weft_raft::Refusals>) {
        *self.raft_refusals.write().unwrap_or_else(|e| e.into_inner()) = Some(refusals);
    }

    /// Appends the security counters in Prometheus' text format.
    pub fn render_refusals(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "# HELP weft_api_denied_total Calls refused by the authorization table.\n# TYPE weft_api_denied_total counter\nweft_api_denied_total {}",
            self.api_denied.load(Ordering::Relaxed)
        );
        let refusals = self.raft_refusals.read().unwrap_or_else(|e| e.into_inner()).clone();
        let _ = writeln!(
            out,
            "# HELP weft_raft_refused_total Peer raft messages dropped before raft, by reason.\n# TYPE weft_raft_refused_total counter"
        );
        for (reason, count) in refusals.map(|r| r.snapshot()).unwrap_or_default() {
            let _ = writeln!(out, "weft_raft_refused_total{{reason=\"{}\"}} {count}", reason.label());
        }
    }
}
