//! Suite `convergence`: how long a new host's block takes to be routable from every peer.
//!
//! Method: N virtual hosts (10, 50, 100), each running its own reconciler in its namespace with
//! the same replicated state (an overlay network in which N-5 hosts hold a block). In each of 5
//! rounds one more host gets its first endpoint, so a new block is leased; the new state is handed
//! to every reconciler at t0, and on every other block holder a watcher subscribed to the kernel's
//! route notifications records when the route to the new block exists. One sample per peer and
//! round; p50 and p99 reported. Baseline: the same percentile at 10 hosts in the same run.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures::StreamExt;
use weft_ipam::Cidr;
use weft_state::{Outcome, State, cmd};
use weft_tests::VirtualHosts;
use weft_tests::overlay::{Agent, cluster_state, eventually};

use crate::report::Figure;

const ROUNDS: usize = 5;

/// Starts, inside host `i`, a watcher that reports when a route to `block` appears.
fn watch_route(bed: &VirtualHosts, i: usize, block: Cidr) -> tokio::sync::oneshot::Receiver<Option<Instant>> {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let done = bed
        .host(i)
        .worker()
        .start(move |nl| async move {
            let mut events = weft_net::events::subscribe().expect("subscribe");
            let present = |nl: weft_net::Netlink| async move {
                nl.routes(None).await.map(|r| r.iter().any(|r| r.dst == block)).unwrap_or(false)
            };
            let _ = ready_tx.send(());
            let deadline = tokio::time::sleep(Duration::from_secs(20));
            tokio::pin!(deadline);
            loop {
                tokio::select! {
                    event = events.next() => match event {
                        Some(weft_net::events::KernelEvent::RouteChanged { .. }) => {
                            if present(nl.clone()).await {
                                return Some(Instant::now());
                            }
                        }
                        Some(_) => {}
                        None => return None,
                    },
                    _ = &mut deadline => return None,
                }
            }
        })
        .expect("start watcher");
    ready_rx.recv().expect("watcher ready");
    done
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Convergence samples in milliseconds for `n` hosts.
fn measure(n: usize) -> Vec<f64> {
    eprintln!("convergence: building {n} virtual hosts");
    let bed = VirtualHosts::new(n);
    let mut state: State = cluster_state(&bed, &[("conv", "10.88.0.0/16", 88)]);
    let holders = n - ROUNDS;
    for node in 1..=holders as u64 {
        state.apply(&cmd::allocate_endpoint("conv", node, &format!("c{node}"), "", "")).expect("allocate");
    }
    let agents: Vec<Agent> =
        (0..n).map(|i| Agent::start(bed.host(i), i as u64 + 1, &state, Duration::from_secs(60))).collect();
    eventually("every reconciler ran", Duration::from_secs(120), || {
        agents.iter().all(|a| a.metrics.runs.load(Ordering::Relaxed) > 0)
    });
    std::thread::sleep(Duration::from_secs(1));
    let mut samples = Vec::new();
    for round in 0..ROUNDS {
        let node = (holders + round + 1) as u64;
        let mut next = state.clone();
        let applied = next
            .apply(&cmd::allocate_endpoint("conv", node, &format!("c{node}"), "", ""))
            .expect("new block");
        let Outcome::Endpoint(endpoint) = applied.outcome else { panic!("no endpoint") };
        let block = next.blocks(endpoint.network).into_iter().find(|b| b.node == node).expect("block").cidr;
        let peers: Vec<usize> = (0..holders + round).collect();
        let watchers: Vec<_> = peers.iter().map(|&i| watch_route(&bed, i, block)).collect();
        let t0 = Instant::now();
        for agent in &agents {
            agent.publish(&next);
        }
        for watcher in watchers {
            let seen =
                watcher.blocking_recv().expect("watcher finished").expect("route appeared within 20 s");
            samples.push(seen.duration_since(t0).as_secs_f64() * 1000.0);
        }
        state = next;
    }
    drop(agents);
    samples.sort_by(f64::total_cmp);
    samples
}

/// Runs the suite and returns its figures.
pub fn run() -> Vec<Figure> {
    let mut figures = Vec::new();
    let mut base = None;
    for n in [10usize, 50, 100] {
        let samples = measure(n);
        let (p50, p99) = (percentile(&samples, 50.0), percentile(&samples, 99.0));
        let (b50, b99) = *base.get_or_insert((p50, p99));
        eprintln!(
            "convergence: {n} hosts, {} samples, max {:.1} ms",
            samples.len(),
            samples[samples.len() - 1]
        );
        figures.push(Figure::new(
            format!("convergence.p50.{n}_hosts"),
            p50,
            "ms",
            "p50 at 10 hosts, same run",
            b50,
        ));
        figures.push(Figure::new(
            format!("convergence.p99.{n}_hosts"),
            p99,
            "ms",
            "p99 at 10 hosts, same run",
            b99,
        ));
    }
    figures
}
