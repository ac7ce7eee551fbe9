//! `weft net why` in the agent. Workers have no listener, so hosts are not asked directly: the
//! leader marks the hosts on the path as wanted ([`ReportBoard`]), each learns it from the answer
//! to its next heartbeat, runs the echo probes asked of it, and sends its report
//! ([`host_report`]) in a heartbeat right away, through its manager as every heartbeat goes. The
//! leader then explains the path with `weft-why`'s pure functions ([`answer`]).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tonic::{Code, Status};
use weft_overlay::desired::vxlan_name;
use weft_proto::v1 as pb;
use weft_state::{NodeId, State, Status as NodeStatus};
use weft_why::WhyError;

use crate::agent_api::container_info;
use crate::host::Host;
use crate::reason;

/// How long the leader waits for the reports of a path. A host learns it is wanted within a
/// heartbeat (1 s by default) and its probes take at most [`PROBE_TIMEOUT`].
pub const REPORT_WAIT: Duration = Duration::from_secs(6);

/// How long one echo probe waits for its reply.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// A want nobody collects any more (its `net why` gave up, leadership moved) is dropped after this.
const WANT_TTL: Duration = Duration::from_secs(30);

/// The size of the small echo (an IP packet of 84 bytes, as ping's default).
const SMALL_ECHO: usize = 84;

#[derive(Debug)]
struct Wanted {
    probes: BTreeSet<(u32, NodeId)>,
    since: Instant,
}

#[derive(Debug, Default)]
struct Board {
    wanted: BTreeMap<NodeId, Wanted>,
    reports: BTreeMap<NodeId, (Instant, pb::HostReport)>,
}

/// The leader's table of wanted and received host reports.
#[derive(Debug, Default)]
pub struct ReportBoard {
    board: Mutex<Board>,
    arrived: tokio::sync::Notify,
}

impl ReportBoard {
    /// Marks `node`'s report as wanted, with `probes` (VNI, peer) run first.
    pub fn want(&self, node: NodeId, probes: &[(u32, NodeId)]) {
        let mut b = self.board.lock().unwrap();
        let w =
            b.wanted.entry(node).or_insert_with(|| Wanted { probes: BTreeSet::new(), since: Instant::now() });
        w.probes.extend(probes.iter().copied());
    }

    /// What `node` is asked for in the answer to its heartbeat, if anything.
    pub fn wanted(&self, node: NodeId) -> Option<pb::ReportWanted> {
        let mut b = self.board.lock().unwrap();
        b.wanted.retain(|_, w| w.since.elapsed() < WANT_TTL);
        b.wanted.get(&node).map(|w| pb::ReportWanted {
            probes: w.probes.iter().map(|(vni, node)| pb::ProbeTarget { vni: *vni, node: *node }).collect(),
        })
    }

    /// A report came with a heartbeat: kept, and whoever waits for it woken.
    pub fn store(&self, report: pb::HostReport) {
        let mut b = self.board.lock().unwrap();
        b.wanted.remove(&report.node_id);
        b.reports.insert(report.node_id, (Instant::now(), report));
        drop(b);
        self.arrived.notify_waiters();
    }

    /// The reports of `nodes` received after `since`, waiting up to `wait` for the missing ones.
    pub async fn collect(
        &self,
        nodes: &BTreeSet<NodeId>,
        since: Instant,
        wait: Duration,
    ) -> BTreeMap<NodeId, pb::HostReport> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let arrived = self.arrived.notified();
            let found: BTreeMap<NodeId, pb::HostReport> = {
                let b = self.board.lock().unwrap();
                nodes
                    .iter()
                    .filter_map(|n| {
                        b.reports.get(n).filter(|(at, _)| *at >= since).map(|(_, r)| (*n, r.clone()))
                    })
                    .collect()
            };
            if found.len() == nodes.len() {
                return found;
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                return found;
            }
        }
    }
}

fn why_status(e: WhyError) -> Status {
    let (code, why) = match e {
        WhyError::NotFound(_) => (Code::NotFound, pb::Reason::NotFound),
        _ => (Code::InvalidArgument, pb::Reason::Invalid),
    };
    reason::status(code, why, e.to_string())
}

/// The leader's answer to `request` over `state`: the ends resolved, the reports of their hosts
/// gathered (hosts that are Down are not waited for), the path explained.
pub async fn answer(
    board: &ReportBoard,
    state: &State,
    request: &pb::WhyRequest,
) -> Result<pb::WhyResponse, Status> {
    let src = weft_why::resolve(state, &request.src).map_err(why_status)?;
    let dst = weft_why::resolve(state, &request.dst).map_err(why_status)?;
    let port = weft_why::PortCheck::of(request.port, &request.protocol).map_err(why_status)?;
    if request.port > u32::from(u16::MAX) {
        return Err(reason::status(
            Code::InvalidArgument,
            pb::Reason::Invalid,
            format!("port {}: at most 65535", request.port),
        ));
    }
    let since = Instant::now();
    let mut nodes = BTreeSet::new();
    for (node, probes) in weft_why::needs(state, &src, &dst) {
        if state.node(node).is_some_and(|n| n.status == NodeStatus::Ready) {
            board.want(node, &probes);
            nodes.insert(node);
        }
    }
    let reports = board.collect(&nodes, since, REPORT_WAIT).await;
    weft_why::explain(state, &src, &dst, port, &reports, weft_overlay::journal::now_ms()).map_err(why_status)
}

/// The VTEP address of `node` in the network of `vni`: the network address of its first IPv4
/// block, which its VXLAN device holds.
fn vtep_address(state: &State, vni: u32, node: NodeId) -> Option<Ipv4Addr> {
    let net = state.networks().find(|n| n.vni == vni && n.driver == weft_state::Driver::Overlay)?;
    state.blocks(net.id).into_iter().filter(|b| b.node == node).find_map(|b| match b.cidr.addr() {
        IpAddr::V4(v4) => Some(v4),
        IpAddr::V6(_) => None,
    })
}

/// One probe: a small echo and one filling the VXLAN device's MTU, at once.
async fn probe(vni: u32, node: NodeId, address: Option<Ipv4Addr>, mtu: u32) -> pb::ProbeResult {
    let mut result = pb::ProbeResult { vni, node, full_size: mtu, ..Default::default() };
    let Some(address) = address else {
        result.error = format!("node {node:x} holds no IPv4 block in VNI {vni}");
        return result;
    };
    result.address = address.to_string();
    let echo = |size: usize| {
        let dev = vxlan_name(vni);
        tokio::task::spawn_blocking(move || weft_net::probe::echo(&dev, address, size, PROBE_TIMEOUT))
    };
    let (small, full) = tokio::join!(echo(SMALL_ECHO), echo(mtu as usize));
    let flat = |r: Result<std::io::Result<Duration>, tokio::task::JoinError>| match r {
        Ok(r) => r,
        Err(e) => Err(std::io::Error::other(e.to_string())),
    };
    match flat(small) {
        Ok(rtt) => {
            result.small_ok = true;
            result.rtt_us = rtt.as_micros() as u64;
        }
        Err(e) => result.error = format!("small echo to {address}: {e}"),
    }
    match flat(full) {
        Ok(_) => result.full_ok = true,
        Err(e) if result.error.is_empty() => result.error = format!("{mtu}-byte echo to {address}: {e}"),
        Err(_) => {}
    }
    result
}

/// This host's report: its overlay devices and entries as the kernel holds them, its containers,
/// the reconciler's repairs and failures, whether weft's firewall is loaded, and the probes the
/// leader asked for.
pub async fn host_report(host: &Arc<Host>, wanted: &pb::ReportWanted) -> pb::HostReport {
    let state = host.state();
    let mut report =
        pb::HostReport { node_id: host.id, taken_ms: weft_overlay::journal::now_ms(), ..Default::default() };
    let underlay = state.node(host.id).map(|n| n.underlay);
    let observed = match weft_net::Netlink::connect() {
        Ok(nl) => weft_overlay::observed::observe(&nl, underlay).await.map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    match observed {
        Ok(observed) => {
            if let Some(link) = &observed.underlay {
                report.underlay_link = link.name.clone();
                report.underlay_mtu = link.mtu;
            }
            for (vni, net) in &observed.networks {
                report.overlays.push(pb::OverlayView {
                    vni: *vni,
                    bridge_present: net.bridge.is_some(),
                    bridge_up: net.bridge.as_ref().is_some_and(|l| l.up),
                    vxlan_present: net.vxlan.is_some(),
                    vxlan_up: net.vxlan.as_ref().is_some_and(|l| l.up),
                    vxlan_mtu: net.vxlan.as_ref().map(|l| l.mtu).unwrap_or(0),
                    bridge_addrs: net.bridge_addrs.iter().map(|c| c.to_string()).collect(),
                    vtep_addrs: net.vxlan_addrs.iter().map(|c| c.to_string()).collect(),
                    routes: net
                        .routes
                        .values()
                        .map(|r| pb::RouteView {
                            dst: r.dst.to_string(),
                            via: r.gateway.map(|g| g.to_string()).unwrap_or_default(),
                        })
                        .collect(),
                    neighbours: net
                        .neighbours
                        .iter()
                        .map(|(ip, n)| pb::NeighbourView {
                            ip: ip.to_string(),
                            mac: n.mac.map(|m| m.to_string()).unwrap_or_default(),
                            permanent: n.permanent,
                        })
                        .collect(),
                    fdb: net
                        .fdb
                        .iter()
                        .flat_map(|(mac, dsts)| {
                            dsts.iter().map(move |d| pb::FdbView { mac: mac.to_string(), dst: d.to_string() })
                        })
                        .collect(),
                });
            }
        }
        Err(e) => report.failures.push(format!("reading the kernel's overlay state: {e}")),
    }
    let containers = {
        let host = host.clone();
        crate::host::blocking(move || {
            let list = host.runtime.list()?;
            Ok(list.iter().map(|(spec, status)| container_info(&host, spec, status)).collect())
        })
    };
    match containers.await {
        Ok(containers) => report.containers = containers,
        Err(e) => report.failures.push(format!("listing the containers: {e}")),
    }
    if let Some(journal) = host.journal() {
        let journal = journal.lock().unwrap();
        report.failures.extend(journal.failures().iter().cloned());
        report.repairs = journal
            .repairs()
            .map(|r| pb::Repair {
                at_ms: r.at_ms,
                vni: r.vni,
                kind: r.kind.into(),
                peer_underlay: r.peer_underlay.map(|u| u.to_string()).unwrap_or_default(),
                text: r.text.clone(),
            })
            .collect();
    }
    report.firewall_loaded = weft_overlay::firewall::table_exists().await;
    let probes = wanted.probes.iter().map(|t| {
        let mtu = report.overlays.iter().find(|o| o.vni == t.vni).map(|o| o.vxlan_mtu).unwrap_or(0);
        probe(t.vni, t.node, vtep_address(&state, t.vni, t.node), mtu)
    });
    report.probes = futures::future::join_all(probes).await;
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_report_received_after_the_want_is_collected_and_clears_it() {
        let board = ReportBoard::default();
        let since = Instant::now();
        board.want(7, &[(4097, 8)]);
        board.want(7, &[(4097, 9)]);
        let asked = board.wanted(7).unwrap();
        assert_eq!(asked.probes.len(), 2, "two paths' probes merge");
        assert!(board.wanted(8).is_none());
        let nodes: BTreeSet<NodeId> = [7].into();
        let waiting = board.collect(&nodes, since, Duration::from_secs(5));
        let deliver = async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            board.store(pb::HostReport { node_id: 7, taken_ms: 1, ..Default::default() });
        };
        let (got, ()) = tokio::join!(waiting, deliver);
        assert_eq!(got.len(), 1);
        assert!(board.wanted(7).is_none(), "answered");
        // A report older than the question is not an answer: the wait ends empty-handed.
        let later = Instant::now();
        let got = board.collect(&nodes, later, Duration::from_millis(30)).await;
        assert!(got.is_empty());
    }
}
