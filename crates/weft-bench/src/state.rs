//! Suite `state`: apply() throughput for endpoint allocation as the state grows.
//!
//! Method: one overlay network 10.0.0.0/8 (/24 blocks), 64 Ready nodes. The state is filled to N
//! endpoints (1k, 100k, 1M) spread round-robin over the nodes; then batches of pre-encoded
//! AllocateEndpoint commands go through `apply_bytes` (decode + apply, the path a Raft follower
//! takes) and the median batch rate is reported. The baseline is the same measurement at 1k
//! endpoints: a ratio near 1.0 at 1M means the cost does not grow with the state.

use std::time::Instant;

use prost::Message;
use weft_state::{Driver, Role, State, cmd};

use crate::report::Figure;

const NODES: u64 = 64;
const BATCH: usize = 20_000;
const BATCHES: usize = 5;

fn fresh() -> State {
    let mut s = State::new();
    for id in 1..=NODES {
        let addr = format!("192.0.2.{id}");
        s.apply(&cmd::register_node(id, &format!("node{id}"), &addr, Role::Worker, 0)).expect("register");
    }
    s.apply(&cmd::create_network("bench", Driver::Overlay, &["10.0.0.0/8"], 0, 0)).expect("network");
    s
}

fn allocation(i: usize) -> Vec<u8> {
    let node = 1 + (i as u64 % NODES);
    cmd::allocate_endpoint("bench", node, &format!("c{i}"), "", "").encode_to_vec()
}

/// Allocations per second with `existing` endpoints already in the state: median of batches.
fn rate_at(existing: usize) -> f64 {
    let mut s = fresh();
    for i in 0..existing {
        s.apply_bytes(&allocation(i)).expect("fill");
    }
    let mut rates = Vec::with_capacity(BATCHES);
    let mut next = existing;
    for _ in 0..BATCHES {
        let batch: Vec<Vec<u8>> = (next..next + BATCH).map(allocation).collect();
        next += BATCH;
        let start = Instant::now();
        for bytes in &batch {
            s.apply_bytes(bytes).expect("allocate");
        }
        rates.push(BATCH as f64 / start.elapsed().as_secs_f64());
    }
    rates.sort_by(f64::total_cmp);
    rates[BATCHES / 2]
}

/// Runs the suite and returns its figures.
pub fn run() -> Vec<Figure> {
    let sizes = [(1_000, "1k"), (100_000, "100k"), (1_000_000, "1m")];
    let mut out = Vec::new();
    let mut baseline = None;
    for (existing, label) in sizes {
        eprintln!("state: measuring allocation with {existing} existing endpoints");
        let rate = rate_at(existing);
        let base = *baseline.get_or_insert(rate);
        out.push(Figure::new(
            format!("state.apply.allocate_endpoint.{label}"),
            rate,
            "allocations/s",
            "state.apply.allocate_endpoint.1k (same run)",
            base,
        ));
    }
    out
}
