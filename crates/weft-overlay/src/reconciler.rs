//! The reconcile loop: re-runs on every state change, on kernel events for weft's own devices,
//! and on a periodic resync, and applies only the difference.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use tokio::sync::watch;
use weft_net::events::KernelEvent;
use weft_net::{BridgeSpec, Netlink};
use weft_state::{NodeId, State};

use crate::desired::{Desired, LocalBridge, desired, vni_of};
use crate::journal::{Repair, SharedJournal, now_ms};
use crate::observed::{Observed, observe};
use crate::plan::{ACTION_KINDS, Action, plan};
use crate::{OverlayError, Result, apply, firewall};

/// How long kernel events settle before the run they trigger: repairs stay well under a second,
/// and a cluster-wide state change lands on every host before the follow-up checks compete for CPU.
const EVENT_DEBOUNCE: Duration = Duration::from_millis(50);

/// How long nftables notifications settle before weft's table is looked at (`nft -f` of a
/// whole ruleset notifies once per object).
const FIREWALL_DEBOUNCE: Duration = Duration::from_millis(20);

/// What started a reconcile run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// The loop started.
    Start,
    /// The replicated state changed.
    StateChange,
    /// The kernel reported a change to one of weft's devices.
    KernelEvent,
    /// The periodic resync.
    Timer,
}

/// Counters for Prometheus: runs, actions by kind, drift repaired, last duration.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Reconcile runs.
    pub runs: AtomicU64,
    /// Runs that failed in part.
    pub errors: AtomicU64,
    /// Actions applied on runs not caused by a state change: drift the reconciler repaired.
    pub drift_repaired: AtomicU64,
    /// Duration of the last run, in microseconds.
    pub last_duration_us: AtomicU64,
    actions: [AtomicU64; ACTION_KINDS.len()],
}

impl Metrics {
    /// Actions applied so far, per kind.
    pub fn actions(&self) -> Vec<(&'static str, u64)> {
        ACTION_KINDS.iter().zip(&self.actions).map(|(k, v)| (*k, v.load(Ordering::Relaxed))).collect()
    }

    fn count(&self, action: &Action) {
        if let Some(i) = ACTION_KINDS.iter().position(|k| *k == action.kind()) {
            self.actions[i].fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Settings of a reconciler.
#[derive(Debug, Clone)]
pub struct OverlayConfig {
    /// This host's node id.
    pub node: NodeId,
    /// Periodic resync interval.
    pub resync: Duration,
    /// The underlay MTU, when it should not be read from the advertise address's link.
    pub underlay_mtu: Option<u32>,
    /// Program weft's nftables table.
    pub firewall: bool,
}

impl OverlayConfig {
    /// Defaults: 10 s resync, MTU detected, firewall on.
    pub fn new(node: NodeId) -> OverlayConfig {
        OverlayConfig { node, resync: Duration::from_secs(10), underlay_mtu: None, firewall: true }
    }
}

/// The result of one run.
#[derive(Debug, Default)]
pub struct Report {
    /// Actions applied.
    pub applied: Vec<Action>,
    /// Actions that failed, with the error.
    pub failed: Vec<OverlayError>,
}

/// The overlay reconciler of one host. Runs in the host's network namespace.
#[derive(Debug)]
pub struct Reconciler {
    config: OverlayConfig,
    nl: Netlink,
    metrics: Arc<Metrics>,
    last_script: Option<String>,
    /// weft's table as listed right after the last apply: a change notification whose listing
    /// differs means someone else changed or removed it.
    firewall_listing: Option<String>,
    indexes: BTreeSet<u32>,
    underlay_index: Option<u32>,
    /// The last full observation, while no kernel event has touched weft's devices since and no
    /// action has been applied on top of it.
    cache: Option<Observed>,
    /// The last state fully applied to the kernel (every action succeeded).
    reconciled: watch::Sender<Arc<State>>,
    /// Drift repaired and the last run's failures, for `weft net why`.
    journal: SharedJournal,
}

impl Reconciler {
    /// A reconciler acting through `nl`.
    pub fn new(nl: Netlink, config: OverlayConfig) -> Reconciler {
        Reconciler {
            config,
            nl,
            metrics: Arc::new(Metrics::default()),
            last_script: None,
            firewall_listing: None,
            indexes: BTreeSet::new(),
            underlay_index: None,
            cache: None,
            reconciled: watch::channel(Arc::new(State::new())).0,
            journal: SharedJournal::default(),
        }
    }

    /// Its journal: the drift it repaired and what its last run could not apply.
    pub fn journal(&self) -> SharedJournal {
        self.journal.clone()
    }

    /// The last state this host's kernel fully reflects: what may be promised to others (a name
    /// that resolves is a name whose routes are in place here).
    pub fn reconciled(&self) -> watch::Receiver<Arc<State>> {
        self.reconciled.subscribe()
    }

    /// Its counters.
    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    /// One run: observe, plan, apply. Nothing is done when this node is not (yet) in `state`, so an
    /// agent that starts before it has synced never tears down a working data path.
    pub async fn reconcile(&mut self, state: &State, trigger: Trigger) -> Result<Report> {
        let Some(me) = state.node(self.config.node) else { return Ok(Report::default()) };
        let started = Instant::now();
        let underlay: IpAddr = me.underlay;
        // A state change on a quiet host plans against the last observation: the kernel has not
        // reported any change to weft's devices since, so a new peer costs three netlink requests,
        // not a dump of every route, neighbour and FDB entry. Events, timers and starts observe.
        let observed = match self.cache.take() {
            Some(cached) if trigger == Trigger::StateChange => cached,
            _ => observe(&self.nl, Some(underlay)).await.map_err(OverlayError::Observe)?,
        };
        self.indexes = observed.indexes.clone();
        self.underlay_index = observed.underlay.as_ref().map(|l| l.index);
        let mtu = self.config.underlay_mtu.or(observed.underlay.as_ref().map(|l| l.mtu)).unwrap_or(1500);
        let wanted = desired(state, self.config.node, mtu);
        let mut report = Report::default();
        if !wanted.networks.is_empty() || !wanted.bridges.is_empty() {
            self.ensure_forwarding(&wanted);
        }
        for (dev, bridge) in &wanted.bridges {
            if let Err(e) = self.ensure_local_bridge(dev, bridge).await {
                report.failed.push(OverlayError::Apply { action: format!("ensure bridge {dev}"), source: e });
            }
        }
        for action in plan(&wanted, &observed) {
            match apply::apply(&self.nl, &action).await {
                Ok(()) => {
                    self.metrics.count(&action);
                    report.applied.push(action);
                }
                Err(e) => report.failed.push(e),
            }
        }
        if report.applied.is_empty() && report.failed.is_empty() {
            self.cache = Some(observed);
        }
        if self.config.firewall
            && let Err(e) = self.sync_firewall(&wanted, trigger).await
        {
            report.failed.push(e);
        }
        self.metrics.runs.fetch_add(1, Ordering::Relaxed);
        if !report.failed.is_empty() {
            self.metrics.errors.fetch_add(1, Ordering::Relaxed);
        }
        if matches!(trigger, Trigger::KernelEvent | Trigger::Timer) {
            self.metrics.drift_repaired.fetch_add(report.applied.len() as u64, Ordering::Relaxed);
            let at = now_ms();
            let mut journal = self.journal.lock().unwrap();
            for action in &report.applied {
                journal.repaired(Repair::of(action, at));
            }
        }
        self.journal.lock().unwrap().set_failures(report.failed.iter().map(|f| f.to_string()).collect());
        self.metrics.last_duration_us.store(started.elapsed().as_micros() as u64, Ordering::Relaxed);
        Ok(report)
    }

    /// A local bridge network's bridge: present, up, holding this host's gateways. Idempotent;
    /// containers attaching create it too, so it exists before the first reconcile after them.
    async fn ensure_local_bridge(&self, dev: &str, bridge: &LocalBridge) -> weft_net::Result<()> {
        let link =
            self.nl.ensure_bridge(&BridgeSpec { mtu: Some(bridge.mtu), ..BridgeSpec::new(dev) }).await?;
        for gateway in &bridge.gateways {
            self.nl.ensure_address(link.index, *gateway).await?;
        }
        if !link.up {
            self.nl.set_up(link.index).await?;
        }
        Ok(())
    }

    /// Forwarding on for every family a network of this host uses, looked at on every run:
    /// whatever was there before (IPv4-only networks first, a user's sysctl) is corrected, and a
    /// correction counts as drift repaired.
    fn ensure_forwarding(&mut self, wanted: &Desired) {
        let subnets = wanted
            .networks
            .values()
            .flat_map(|n| n.subnets.iter())
            .chain(wanted.bridges.values().flat_map(|b| b.subnets.iter()));
        let (mut v4, mut v6) = (false, false);
        for subnet in subnets {
            if subnet.addr().is_ipv6() { v6 = true } else { v4 = true }
        }
        for (needed, key) in [(v4, "net.ipv4.ip_forward"), (v6, "net.ipv6.conf.all.forwarding")] {
            if !needed || weft_net::sysctl::read(key).is_ok_and(|v| v.trim() == "1") {
                continue;
            }
            match weft_net::sysctl::write(key, "1") {
                Ok(()) => {
                    tracing::info!(key, "forwarding turned on");
                    self.metrics.drift_repaired.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => tracing::warn!(key, error = %e, "cannot turn forwarding on"),
            }
        }
    }

    async fn sync_firewall(&mut self, wanted: &Desired, trigger: Trigger) -> Result<()> {
        let script = firewall::script(wanted);
        let stale = self.last_script.as_deref() != Some(script.as_str());
        if stale || (trigger == Trigger::Timer && !firewall::table_exists().await) {
            firewall::apply(&script).await.map_err(OverlayError::Firewall)?;
            self.last_script = Some(script);
            self.firewall_listing = firewall::listing().await;
        }
        Ok(())
    }

    /// After an nftables change notification: if weft's table is not as weft left it (flushed,
    /// deleted, a rule edited), it is loaded again and counted as drift repaired. weft's own
    /// loads notify too; their listing matches and nothing happens.
    async fn heal_firewall(&mut self) {
        let Some(script) = self.last_script.clone() else { return };
        let now = firewall::listing().await;
        if now.is_some() && now == self.firewall_listing {
            return;
        }
        match firewall::apply(&script).await {
            Ok(()) => {
                self.firewall_listing = firewall::listing().await;
                self.metrics.drift_repaired.fetch_add(1, Ordering::Relaxed);
                self.journal.lock().unwrap().repaired(Repair {
                    at_ms: now_ms(),
                    vni: 0,
                    kind: "firewall",
                    peer_underlay: None,
                    text: "loaded weft's nftables table again after someone changed or removed it".into(),
                });
                tracing::warn!("weft's nftables table was changed or removed by someone else; restored");
            }
            Err(e) => {
                tracing::warn!(error = %e, "restoring weft's nftables table failed; retried on the next run")
            }
        }
    }

    fn relevant(&self, event: &KernelEvent) -> bool {
        let ours = |index: &u32| self.indexes.contains(index) || self.underlay_index == Some(*index);
        match event {
            KernelEvent::LinkChanged { index, name } | KernelEvent::LinkRemoved { index, name } => {
                vni_of(name).is_some() || ours(index)
            }
            KernelEvent::AddressChanged { index } | KernelEvent::NeighbourChanged { index } => ours(index),
            KernelEvent::RouteChanged { dev } => dev.as_ref().is_some_and(ours),
        }
    }

    /// Runs until `stop` turns true or the state channel closes: a run at start, on every new
    /// state, on kernel events for weft's devices (debounced by a few milliseconds) and every
    /// resync interval. Must run on a thread inside the host's network namespace.
    pub async fn run(
        mut self,
        mut states: watch::Receiver<Arc<State>>,
        mut stop: watch::Receiver<bool>,
    ) -> Result<()> {
        let mut events = weft_net::events::subscribe().map_err(OverlayError::Observe)?;
        // nftables changes, so a flushed table comes back at once (the resync still covers a
        // kernel that cannot notify).
        let mut nft = match self.config.firewall {
            true => match weft_net::nft_events::NftEvents::subscribe() {
                Ok(nft) => Some(nft),
                Err(e) => {
                    tracing::warn!(error = %e, "no nftables notifications: the firewall is checked at each resync only");
                    None
                }
            },
            false => None,
        };
        let mut firewall_due: Option<tokio::time::Instant> = None;
        let mut ticker = tokio::time::interval(self.config.resync);
        ticker.tick().await;
        let mut pending = Some(Trigger::Start);
        // When a run for kernel events is due: events settle for a moment first (our own actions
        // raise them too), without holding up state changes meanwhile.
        let mut event_due: Option<tokio::time::Instant> = None;
        loop {
            if *stop.borrow() {
                return Ok(());
            }
            if let Some(trigger) = pending.take() {
                let state = states.borrow_and_update().clone();
                tracing::debug!(?trigger, revision = state.revision(), "reconcile run");
                // Errors are counted in the metrics and retried on the next trigger.
                match self.reconcile(&state, trigger).await {
                    Ok(report) => {
                        // Routes and devices in place (a firewall failure does not unmake them).
                        let datapath_ok =
                            report.failed.iter().all(|f| matches!(f, OverlayError::Firewall(_)));
                        if datapath_ok && state.revision() >= self.reconciled.borrow().revision() {
                            self.reconciled.send_replace(state.clone());
                        }
                        for failure in &report.failed {
                            tracing::warn!(?trigger, error = %failure, "reconcile action failed; retried on the next run");
                        }
                        if !report.applied.is_empty() {
                            tracing::debug!(
                                ?trigger,
                                actions = report.applied.len(),
                                revision = state.revision(),
                                "reconciled"
                            );
                        }
                    }
                    Err(e) => {
                        tracing::warn!(?trigger, error = %e, "reconcile failed; retried on the next run")
                    }
                }
            }
            let due = async {
                match event_due {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending::<()>().await,
                }
            };
            let firewall_check = async {
                match firewall_due {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending::<()>().await,
                }
            };
            let nft_changed = async {
                match nft.as_mut() {
                    Some(nft) => nft.changed().await,
                    None => std::future::pending().await,
                }
            };
            // Kernel events first, so a state change never plans against an observation they made stale.
            tokio::select! {
                biased;
                _ = stop.changed() => return Ok(()),
                Some(event) = events.next() => {
                    tracing::trace!(?event, relevant = self.relevant(&event), "kernel event");
                    if self.relevant(&event) {
                        self.cache = None;
                        event_due.get_or_insert_with(|| tokio::time::Instant::now() + EVENT_DEBOUNCE);
                    }
                }
                changed = states.changed() => {
                    if changed.is_err() {
                        return Ok(());
                    }
                    pending = Some(Trigger::StateChange);
                }
                _ = due => {
                    event_due = None;
                    pending = Some(Trigger::KernelEvent);
                }
                changed = nft_changed => match changed {
                    Ok(()) => {
                        firewall_due.get_or_insert_with(|| tokio::time::Instant::now() + FIREWALL_DEBOUNCE);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "nftables notifications stopped: the firewall is checked at each resync only");
                        nft = None;
                    }
                },
                _ = firewall_check => {
                    firewall_due = None;
                    self.heal_firewall().await;
                }
                _ = ticker.tick() => pending = Some(Trigger::Timer),
            }
        }
    }
}
