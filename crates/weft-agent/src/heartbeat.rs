//! A host's end of its heartbeat session (`Cluster.Heartbeats`, see [`crate::beats`]): every
//! agent runs [`run`], supervised. A worker holds a session with the manager it watches; a
//! follower manager with the leader, carrying its own beat and, at most once per
//! [`relay_window`], the beats its workers sent it; the leader records its own in place. A want
//! of this host's report (a `weft net why`) is answered at once with a fresh report.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Status};
use weft_proto::v1 as pb;

use crate::beats::{Relay, relay_window};
use crate::host::Host;
use crate::service::{Core, RoleCore};

/// How long a session lives before the host opens a new one: a session outlives neither a
/// certificate renewal (the new one is dialled with the new certificate) nor a move of the host's
/// manager by more than this.
pub const SESSION_LIFETIME: Duration = Duration::from_secs(60);

/// How long a host waits before opening a session again after one failed.
const RETRY_AFTER: Duration = Duration::from_millis(500);

/// Where this host's beats go now.
enum Target {
    /// This manager leads: its beat is recorded in place.
    Leading,
    /// A manager's cluster API address.
    Remote(String),
    /// Nowhere yet (no leader known, or no address for it).
    Unknown,
}

fn target(core: &Core) -> Target {
    match &core.role {
        RoleCore::Worker(w) => w.upstream.current().map_or(Target::Unknown, Target::Remote),
        RoleCore::Manager(m) => {
            let leader = m.node.status().leader;
            if leader == core.id {
                return Target::Leading;
            }
            m.node
                .state()
                .node(leader)
                .map(|n| n.api_addr.clone())
                .filter(|a| !a.is_empty())
                .map_or(Target::Unknown, Target::Remote)
        }
    }
}

fn own_revision(core: &Core) -> u64 {
    match &core.role {
        RoleCore::Manager(m) => m.node.status().revision,
        RoleCore::Worker(w) => w.mirror.borrow().revision(),
    }
}

fn relay_of(core: &Core) -> Option<&Relay> {
    match &core.role {
        RoleCore::Manager(m) => Some(&m.relay),
        RoleCore::Worker(_) => None,
    }
}

/// This host's side, for as long as the agent runs: a beat every `every`, through a session with
/// its manager (a worker's upstream; a follower's leader), or recorded in place while it leads.
pub async fn run(core: Arc<Core>, host: Arc<Host>, me: u64, every: Duration) {
    loop {
        let outcome = match target(&core) {
            Target::Leading => {
                lead(&core, &host, me, every).await;
                continue;
            }
            Target::Unknown => Err(Status::unavailable("no manager to send heartbeats to yet")),
            Target::Remote(addr) => session(&core, &host, me, every, &addr).await,
        };
        match outcome {
            Ok(()) => {}
            Err(e) if e.code() == Code::Unimplemented => {
                // A manager of an earlier version: one answered heartbeat a period.
                let request =
                    pb::HeartbeatRequest { node_id: me, revision: own_revision(&core), report: None };
                if let Err(e) = core.heartbeat(request).await {
                    tracing::debug!(error = %e.message(), "heartbeat failed");
                }
                tokio::time::sleep(every).await;
            }
            Err(e) => {
                tracing::debug!(error = %e.message(), "heartbeat session ended");
                if let RoleCore::Worker(w) = &core.role {
                    w.upstream.failed();
                }
                tokio::time::sleep(RETRY_AFTER.min(every)).await;
            }
        }
    }
}

/// While this manager leads: its own beat, and any beats its relay held from before it led,
/// recorded in place every `every`; its own report made as soon as a `net why` wants it.
async fn lead(core: &Core, host: &Arc<Host>, me: u64, every: Duration) {
    let RoleCore::Manager(m) = &core.role else { return };
    core.telemetry.watch_lag.store(0, std::sync::atomic::Ordering::Relaxed);
    let mut wants = m.reports.wants();
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            changed = wants.changed() => {
                if changed.is_err() {
                    return;
                }
            }
        }
        if !matches!(target(core), Target::Leading) {
            return;
        }
        if let Some(want) = m.reports.wanted(me) {
            let report = crate::report::host_report(host, &want).await;
            m.reports.store(pb::HostReport { node_id: me, ..report });
        }
        let now = Instant::now();
        let mut liveness = m.liveness.lock().unwrap();
        liveness.record(me, m.node.status().revision, now);
        for (beat, age) in m.relay.drain(now) {
            liveness.record(beat.node_id, beat.revision, crate::beats::heard_at(now, age));
        }
    }
}

/// One session with the manager at `addr`, until it fails, ends, outlives
/// [`SESSION_LIFETIME`], or (on a manager) the leader changes.
async fn session(core: &Core, host: &Arc<Host>, me: u64, every: Duration, addr: &str) -> Result<(), Status> {
    let relay = relay_of(core);
    let step = if relay.is_some() { relay_window(every) } else { every };
    let (out, outbound) = mpsc::channel::<pb::Beats>(4);
    let first = beats(me, own_revision(core), None, relay);
    out.send(first).await.map_err(|_| Status::internal("session closed"))?;
    let mut client = core.peers.cluster(addr)?;
    let mut inbound = client.heartbeats(ReceiverStream::new(outbound)).await?.into_inner();
    let opened = Instant::now();
    let mut last_own = Instant::now();
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + step, step);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let mut report = None;
        tokio::select! {
            _ = tick.tick() => {}
            () = urgent(relay) => {}
            answer = inbound.message() => {
                let Some(answer) = answer? else {
                    return Err(Status::unavailable("the manager ended the heartbeat session"));
                };
                core.telemetry.watch_lag.store(
                    answer.revision.saturating_sub(own_revision(core)),
                    std::sync::atomic::Ordering::Relaxed,
                );
                for asked in answer.wanted {
                    let want = asked.wanted.unwrap_or_default();
                    if asked.node_id == me {
                        report = Some(crate::report::host_report(host, &want).await);
                    } else if let RoleCore::Manager(m) = &core.role {
                        // A worker of this follower: it is asked on its own session here.
                        let probes: Vec<(u32, u64)> = want.probes.iter().map(|p| (p.vni, p.node)).collect();
                        m.reports.want(asked.node_id, &probes);
                    }
                }
                if report.is_none() {
                    continue;
                }
            }
        }
        if opened.elapsed() >= SESSION_LIFETIME {
            return Ok(());
        }
        if let (RoleCore::Manager(_), Target::Remote(now)) = (&core.role, target(core))
            && now != addr
        {
            return Ok(());
        }
        let own_due = last_own.elapsed() + step / 2 >= every;
        let message = beats(me, own_revision(core), report, relay);
        if !own_due && message.beats.len() == 1 && message.beats[0].report.is_none() {
            continue;
        }
        last_own = Instant::now();
        out.send(message).await.map_err(|_| Status::unavailable("the heartbeat session closed"))?;
    }
}

/// A message: this host's own beat first (the one its lag is told against), then whatever its
/// relay holds.
fn beats(me: u64, revision: u64, report: Option<pb::HostReport>, relay: Option<&Relay>) -> pb::Beats {
    let mut message =
        pb::Beats { beats: vec![pb::HeartbeatRequest { node_id: me, revision, report }], age_ms: vec![0] };
    for (beat, age) in relay.map(|r| r.drain(Instant::now())).unwrap_or_default() {
        message.beats.push(beat);
        message.age_ms.push(age);
    }
    message
}

async fn urgent(relay: Option<&Relay>) {
    match relay {
        Some(r) => r.urgent().await,
        None => std::future::pending().await,
    }
}
