//! In-process overlay agents for tests and benchmarks: a reconciler per virtual host, fed a
//! replicated state built locally, and containers attached through the seam.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{oneshot, watch};
use weft_overlay::{Metrics, OverlayConfig, Reconciler, attach};
use weft_state::{Driver, Outcome, Role, State, cmd};

use crate::{Namespace, VirtualHosts, ping};

/// A reconciler running inside one host.
pub struct Agent {
    states: watch::Sender<Arc<State>>,
    stop: watch::Sender<bool>,
    /// The reconciler's counters.
    pub metrics: Arc<Metrics>,
    done: Option<oneshot::Receiver<weft_overlay::Result<()>>>,
}

impl Agent {
    /// Starts a reconciler for `node` inside `host`.
    pub fn start(host: &Namespace, node: u64, state: &State, resync: Duration) -> Agent {
        let (states, states_rx) = watch::channel(Arc::new(state.clone()));
        let (stop, stop_rx) = watch::channel(false);
        let (metrics_tx, metrics_rx) = std::sync::mpsc::channel();
        let done = host
            .worker()
            .start(move |nl| async move {
                let config = OverlayConfig { resync, ..OverlayConfig::new(node) };
                let reconciler = Reconciler::new(nl, config);
                metrics_tx.send(reconciler.metrics()).unwrap();
                reconciler.run(states_rx, stop_rx).await
            })
            .unwrap();
        let metrics = metrics_rx.recv().unwrap();
        Agent { states, stop, metrics, done: Some(done) }
    }

    /// Hands the reconciler a new state.
    pub fn publish(&self, state: &State) {
        self.states.send_replace(Arc::new(state.clone()));
    }

    /// Stops the reconciler and waits for it.
    pub fn stop(mut self) {
        self.stop.send_replace(true);
        let result = self.done.take().unwrap().blocking_recv().expect("reconciler finished");
        result.expect("reconciler ran cleanly");
    }

    /// Actions applied so far.
    pub fn actions(&self) -> u64 {
        self.metrics.actions().iter().map(|(_, n)| n).sum()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.stop.send_replace(true);
    }
}

/// Polls `check` every 20 ms until true; panics after `timeout`. Returns the time it took.
pub fn eventually(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
    start.elapsed()
}

/// The endpoint id of an allocation outcome.
pub fn endpoint_id(applied: weft_state::Applied) -> u64 {
    match applied.outcome {
        Outcome::Endpoint(e) => e.id,
        other => panic!("{other:?}"),
    }
}

/// A state with one node per host of the bed and the given networks (name, subnet, vni).
pub fn cluster_state(bed: &VirtualHosts, networks: &[(&str, &str, u32)]) -> State {
    let mut s = State::new();
    for h in bed.hosts() {
        let id = h.index as u64 + 1;
        s.apply(&cmd::register_node(id, &format!("host{id}"), &h.addr.to_string(), Role::Manager, 0))
            .unwrap();
    }
    for (name, subnet, vni) in networks {
        s.apply(&cmd::create_network(name, Driver::Overlay, &[subnet], *vni, 0)).unwrap();
    }
    s
}

/// Allocates an endpoint on `host` and attaches a new container namespace to it; returns the
/// namespace's name and the endpoint's first address.
pub fn container(
    bed: &VirtualHosts,
    state: &mut State,
    network: &str,
    host: usize,
    label: &str,
    mtu: u32,
) -> (String, String) {
    let id = endpoint_id(
        state.apply(&cmd::allocate_endpoint(network, host as u64 + 1, label, label, "")).unwrap(),
    );
    let spec = attach::spec_for(state, id, mtu).unwrap();
    let ip = spec.addresses[0].addr().to_string();
    let name = bed.add_namespace(label);
    let ns = bed.with_namespace(&name, |n| n.netns().clone());
    bed.host(host).netlink(move |nl| async move { attach::attach(&nl, &ns, &spec).await }).unwrap();
    (name, ip)
}

/// One ping from the namespace `from` to `to`.
pub fn can_ping(bed: &VirtualHosts, from: &str, to: &str) -> bool {
    bed.with_namespace(from, |ns| ping(ns, to, 1))
}
