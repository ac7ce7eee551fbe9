//! `weft net why SRC DST`: the path between two containers (or a container and a host, or two
//! hosts) checked hop by hop, and the first thing that blocks it.
//!
//! Everything here is pure: [`resolve`] finds the ends in the replicated state, [`needs`] says
//! which hosts must report (and which echo probes they run first), and [`explain`] walks the
//! path over the state (what every host should have) and the hosts' reports (what their kernels
//! and agents hold), so each cause is unit-tested without root. The agent gathers the reports;
//! the CLI prints the hops and the first broken one last, as the answer.

use std::collections::BTreeMap;
use std::net::IpAddr;

use weft_ipam::Cidr;
use weft_overlay::desired::{bridge_name, overlay_mtu, path_mtu, vtep_mac, vxlan_name};
use weft_state::names::node_matches;
use weft_state::{Driver, Endpoint, Network, Node, NodeId, State, Status, pb};

/// How long after a repair `net why` still mentions it.
pub const REPAIR_MEMORY_MS: u64 = 10 * 60 * 1000;

/// What keeps a path from being explained at all.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WhyError {
    /// Nothing in the cluster has that name, id or address.
    #[error(
        "no container, host or address {0:?} in the cluster (containers are found by the networks they are on; hosts by `weft node ls`)"
    )]
    NotFound(String),
    /// More than one container answers to the reference.
    #[error("{reference:?} names more than one container: {candidates}; give an id")]
    Ambiguous {
        /// What was typed.
        reference: String,
        /// The containers it names.
        candidates: String,
    },
    /// A path starts at a container or a host.
    #[error("the source must be a container or a host of the cluster, not the address {0}")]
    SourceOutside(IpAddr),
    /// Not tcp or udp.
    #[error("protocol {0:?}: expected tcp or udp")]
    BadProtocol(String),
}

/// One end of a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// A container on some host, with its endpoints (one per network).
    Container {
        /// Its host.
        node: NodeId,
        /// Its id.
        id: String,
        /// Its name (or the id's first 12 characters).
        name: String,
        /// Its endpoints.
        endpoints: Vec<Endpoint>,
    },
    /// A host of the cluster.
    Host(NodeId),
    /// An address outside the cluster.
    Outside(IpAddr),
}

impl End {
    /// The host the end is on, if it is in the cluster.
    pub fn node(&self) -> Option<NodeId> {
        match self {
            End::Container { node, .. } => Some(*node),
            End::Host(node) => Some(*node),
            End::Outside(_) => None,
        }
    }
}

/// A port to check, as `--port N/tcp` gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortCheck {
    /// The port.
    pub port: u16,
    /// `tcp` or `udp`.
    pub udp: bool,
}

impl PortCheck {
    /// From a request's fields; `None` when no port was asked.
    pub fn of(port: u32, protocol: &str) -> Result<Option<PortCheck>, WhyError> {
        if port == 0 {
            return Ok(None);
        }
        let udp = match protocol {
            "" | "tcp" => false,
            "udp" => true,
            other => return Err(WhyError::BadProtocol(other.into())),
        };
        Ok(Some(PortCheck { port: port as u16, udp }))
    }

    fn protocol(&self) -> &'static str {
        if self.udp { "udp" } else { "tcp" }
    }
}

fn containers_of<'s>(endpoints: impl Iterator<Item = &'s Endpoint>) -> Vec<End> {
    let mut by_id: BTreeMap<(NodeId, String), Vec<Endpoint>> = BTreeMap::new();
    for e in endpoints {
        by_id.entry((e.node, e.container_id.clone())).or_default().push(e.clone());
    }
    by_id
        .into_iter()
        .map(|((node, id), endpoints)| {
            let name = endpoints
                .iter()
                .map(|e| e.name.clone())
                .find(|n| !n.is_empty())
                .unwrap_or_else(|| id.chars().take(12).collect());
            End::Container { node, id, name, endpoints }
        })
        .collect()
}

/// Finds what `reference` names: a container (by name or id, or an address it holds), a host (by
/// name or id, or its underlay address), or an address outside the cluster.
pub fn resolve(state: &State, reference: &str) -> Result<End, WhyError> {
    let reference = reference.trim();
    let named = |e: &&Endpoint| {
        e.container_id == reference
            || (reference.len() >= 4 && e.container_id.starts_with(reference))
            || (!e.name.is_empty() && e.name == reference)
    };
    let mut found = containers_of(state.endpoints().filter(named));
    if found.is_empty()
        && let Ok(ip) = reference.parse::<IpAddr>()
    {
        found = containers_of(state.endpoints().filter(|e| e.ips.contains(&ip)));
        if found.is_empty() {
            return Ok(match state.nodes().find(|n| n.underlay == ip) {
                Some(n) => End::Host(n.id),
                None => End::Outside(ip),
            });
        }
    }
    match found.len() {
        1 => return Ok(found.remove(0)),
        0 => {}
        _ => {
            let candidates: Vec<String> = found
                .iter()
                .map(|c| match c {
                    End::Container { node, id, name, .. } => {
                        format!("{name} on {} (id {})", host_name(state, *node), &id[..id.len().min(12)])
                    }
                    _ => unreachable!("containers only"),
                })
                .collect();
            return Err(WhyError::Ambiguous {
                reference: reference.into(),
                candidates: candidates.join(", "),
            });
        }
    }
    match state.nodes().find(|n| node_matches(n.id, &n.name, reference)) {
        Some(n) => Ok(End::Host(n.id)),
        None => Err(WhyError::NotFound(reference.into())),
    }
}

fn host_name(state: &State, id: NodeId) -> String {
    state.node(id).map(|n| n.name.clone()).unwrap_or_else(|| format!("node {id:x}"))
}

/// The network a path between `src` and `dst` runs in: one both are on (an overlay first), or,
/// from a host, an overlay network of the container that the host takes part in.
fn shared_network<'s>(state: &'s State, src: &End, dst: &End) -> Option<&'s Network> {
    let networks_of = |end: &End| -> Vec<u64> {
        match end {
            End::Container { endpoints, .. } => endpoints.iter().map(|e| e.network).collect(),
            End::Host(node) => state
                .networks()
                .filter(|n| n.driver == Driver::Overlay && state.blocks(n.id).iter().any(|b| b.node == *node))
                .map(|n| n.id)
                .collect(),
            End::Outside(_) => Vec::new(),
        }
    };
    let (a, b) = (networks_of(src), networks_of(dst));
    let mut shared: Vec<&Network> =
        a.iter().filter(|n| b.contains(n)).filter_map(|id| state.network_by_id(*id)).collect();
    shared.sort_by_key(|n| (n.driver != Driver::Overlay, n.id));
    shared.into_iter().next()
}

/// Which hosts must report for a path, each with the echo probes (VNI, peer node) it runs first.
pub fn needs(state: &State, src: &End, dst: &End) -> BTreeMap<NodeId, Vec<(u32, NodeId)>> {
    let mut wanted: BTreeMap<NodeId, Vec<(u32, NodeId)>> = BTreeMap::new();
    for node in [src.node(), dst.node()].into_iter().flatten() {
        wanted.entry(node).or_default();
    }
    let host_to_host = matches!((src, dst), (End::Host(_), End::Host(_)));
    if !host_to_host
        && let (Some(a), Some(b), Some(net)) = (src.node(), dst.node(), shared_network(state, src, dst))
        && a != b
        && net.driver == Driver::Overlay
    {
        wanted.entry(a).or_default().push((net.vni, b));
        wanted.entry(b).or_default().push((net.vni, a));
    }
    wanted
}

/// The hops as they are found.
struct Walk<'a> {
    state: &'a State,
    reports: &'a BTreeMap<NodeId, pb::HostReport>,
    now_ms: u64,
    hops: Vec<pb::Hop>,
}

fn hop(place: &str, what: impl Into<String>, ok: bool, detail: impl Into<String>) -> pb::Hop {
    pb::Hop { place: place.into(), what: what.into(), ok, detail: detail.into() }
}

fn ago(now_ms: u64, at_ms: u64) -> String {
    let ms = now_ms.saturating_sub(at_ms);
    if ms < 60_000 { format!("{:.1} s ago", ms as f64 / 1000.0) } else { format!("{} min ago", ms / 60_000) }
}

/// The overhead VXLAN adds on the wire: 50 bytes over an IPv4 underlay, 70 over IPv6.
fn vxlan_overhead(underlay: IpAddr) -> u32 {
    if underlay.is_ipv4() { 50 } else { 70 }
}

impl<'a> Walk<'a> {
    fn name(&self, id: NodeId) -> String {
        host_name(self.state, id)
    }

    fn push(&mut self, hop: pb::Hop) -> bool {
        let ok = hop.ok;
        self.hops.push(hop);
        ok
    }

    /// The report of `node`, or the hop that says why there is none.
    fn report(&self, node: NodeId) -> Result<&'a pb::HostReport, pb::Hop> {
        let place = self.name(node);
        if let Some(n) = self.state.node(node)
            && n.status == Status::Down
        {
            return Err(hop(
                &place,
                "host",
                false,
                format!(
                    "{place} is Down since {}: no heartbeat reached the leader; its containers are unreachable until it is back, and they lose their addresses when its lease ends",
                    ago(self.now_ms, n.status_since_ms)
                ),
            ));
        }
        self.reports.get(&node).ok_or_else(|| {
            hop(
                &place,
                "host",
                false,
                format!("{place} sent no report in time: its agent may be stuck or cut off (see weftd's log on {place})"),
            )
        })
    }

    /// The container hop: present on its host and running.
    fn container(&mut self, node: NodeId, id: &str, name: &str, net: Option<&Network>) -> bool {
        let place = self.name(node);
        let report = match self.report(node) {
            Ok(r) => r,
            Err(h) => return self.push(h),
        };
        let what = format!("container {name}");
        let Some(info) = report.containers.iter().find(|c| c.id == id) else {
            return self.push(hop(
                &place,
                what,
                false,
                format!("{name} is not on {place} any more, though the cluster still holds its addresses"),
            ));
        };
        if info.state != "running" {
            let oom = if info.oom_killed { ", killed for memory" } else { "" };
            let when = match info.finished_ns {
                0 => String::new(),
                ns => format!(" {}", ago(self.now_ms, ns / 1_000_000)),
            };
            return self.push(hop(
                &place,
                what,
                false,
                format!(
                    "{name} is not running: {} with code {}{oom}{when}; nothing runs in it. Expected it running (`weft start {name}` on {place})",
                    info.state, info.exit_code
                ),
            ));
        }
        let iface = info
            .networks
            .iter()
            .filter(|n| net.is_none_or(|net| net.name == n.network))
            .map(|n| format!("{} on {} (gateway {})", n.ips.join(", "), n.network, n.gateway))
            .collect::<Vec<_>>()
            .join("; ");
        let mtu = net
            .filter(|n| n.driver == Driver::Overlay)
            .and_then(|n| report.overlays.iter().find(|o| o.vni == n.vni))
            .map(|o| format!(", MTU {}", o.vxlan_mtu))
            .unwrap_or_default();
        self.push(hop(&place, what, true, format!("running on {place}: {iface}{mtu}")))
    }

    /// A host's bridge of `net`.
    fn bridge(&mut self, node: NodeId, net: &Network) -> bool {
        let place = self.name(node);
        let Ok(report) = self.report(node) else { return true };
        let dev = bridge_name(net.vni);
        let Some(ov) = report.overlays.iter().find(|o| o.vni == net.vni) else {
            let failures = self.failures(report);
            return self.push(hop(
                &place,
                format!("bridge {dev}"),
                false,
                format!(
                    "{place} has no devices of network {} (VNI {}); expected {dev} and {}{failures}",
                    net.name,
                    net.vni,
                    vxlan_name(net.vni)
                ),
            ));
        };
        if !ov.bridge_present || !ov.bridge_up {
            let state = if ov.bridge_present { "down" } else { "missing" };
            return self.push(hop(
                &place,
                format!("bridge {dev}"),
                false,
                format!("{dev} is {state} on {place}; expected it up, holding the gateways"),
            ));
        }
        self.push(hop(
            &place,
            format!("bridge {dev}"),
            true,
            format!("up, gateways {}", ov.bridge_addrs.join(", ")),
        ))
    }

    fn failures(&self, report: &pb::HostReport) -> String {
        match report.failures.first() {
            None => String::new(),
            Some(first) => format!(
                "; the reconciler on {} reports {} failed action(s), first: {first} (see weftd's log)",
                self.name(report.node_id),
                report.failures.len()
            ),
        }
    }

    /// `here`'s VXLAN device of `net` and its three entries towards `peer`'s block. Returns
    /// whether all are in place.
    fn entries_towards(&mut self, here: &Node, net: &Network, peer: &Node, peer_block: Cidr) -> bool {
        let place = here.name.clone();
        let Ok(report) = self.report(here.id) else { return true };
        let dev = vxlan_name(net.vni);
        let failures = self.failures(report);
        let Some(ov) = report.overlays.iter().find(|o| o.vni == net.vni) else {
            return self.push(hop(
                &place,
                format!("VXLAN device {dev}"),
                false,
                format!("{place} has no devices of network {} (VNI {}){failures}", net.name, net.vni),
            ));
        };
        if !ov.vxlan_present || !ov.vxlan_up {
            let state = if ov.vxlan_present { "down" } else { "missing" };
            return self.push(hop(
                &place,
                format!("VXLAN device {dev}"),
                false,
                format!("{dev} is {state} on {place}; expected it up with local {}{failures}", here.underlay),
            ));
        }
        let expected_mtu = overlay_mtu(path_mtu(self.state, report.underlay_mtu), here.underlay);
        let mtu_note = if ov.vxlan_mtu == expected_mtu {
            String::new()
        } else {
            format!(" (the cluster's smallest underlay asks for {expected_mtu})")
        };
        self.push(hop(
            &place,
            format!("VXLAN device {dev}"),
            true,
            format!("up, MTU {}{mtu_note}, local {}", ov.vxlan_mtu, here.underlay),
        ));
        let mut all = true;
        let gateway = peer_block.addr().to_string();
        let want_route = format!("{peer_block} via {gateway} dev {dev} onlink");
        let route = ov.routes.iter().find(|r| r.dst == peer_block.to_string());
        let (ok, detail) = match route {
            Some(r) if r.via == gateway => (true, want_route.clone()),
            Some(r) => (
                false,
                format!("the route to {peer_block} goes via {}; expected `{want_route}`{failures}", r.via),
            ),
            None => (
                false,
                format!(
                    "{place} has no route to {}'s block {peer_block}; expected `{want_route}`{failures}",
                    peer.name
                ),
            ),
        };
        all &= self.push(hop(&place, format!("route to {}'s block", peer.name), ok, detail));
        let mac = vtep_mac(peer.id, net.vni).to_string();
        let want_neigh = format!("{gateway} lladdr {mac} dev {dev} permanent");
        let neigh = ov.neighbours.iter().find(|n| n.ip == gateway);
        let (ok, detail) = match neigh {
            Some(n) if n.mac == mac && n.permanent => (true, want_neigh.clone()),
            Some(n) => (
                false,
                format!(
                    "the neighbour {gateway} is {} ({}); expected `{want_neigh}`{failures}",
                    n.mac,
                    if n.permanent { "permanent" } else { "not permanent" }
                ),
            ),
            None => (
                false,
                format!(
                    "{place} has no neighbour entry for {}'s VTEP {gateway}; expected `{want_neigh}`{failures}",
                    peer.name
                ),
            ),
        };
        all &= self.push(hop(&place, format!("neighbour {}'s VTEP", peer.name), ok, detail));
        let want_fdb = format!("{mac} dst {} dev {dev} self permanent", peer.underlay);
        let fdb: Vec<&pb::FdbView> = ov.fdb.iter().filter(|f| f.mac == mac).collect();
        let (ok, detail) = if fdb.iter().any(|f| f.dst == peer.underlay.to_string()) {
            (true, want_fdb.clone())
        } else if let Some(f) = fdb.first() {
            (
                false,
                format!(
                    "{place}'s FDB entry for {}'s VTEP {mac} points at {}; expected dst {}{failures}",
                    peer.name, f.dst, peer.underlay
                ),
            )
        } else {
            (
                false,
                format!(
                    "{place} has no FDB entry for {}'s VTEP {mac}; expected dst {}{failures}",
                    peer.name, peer.underlay
                ),
            )
        };
        all &= self.push(hop(&place, format!("FDB entry for {}'s VTEP", peer.name), ok, detail));
        let repaired = report.repairs.iter().rev().find(|r| {
            r.vni == net.vni
                && r.peer_underlay == peer.underlay.to_string()
                && self.now_ms.saturating_sub(r.at_ms) < REPAIR_MEMORY_MS
        });
        if let Some(r) = repaired {
            self.push(hop(
                &place,
                format!("drift towards {}", peer.name),
                true,
                format!(
                    "an entry towards {} was missing or wrong (changed by someone else) and the reconciler on {place} {} {}; repaired",
                    peer.name,
                    r.text,
                    ago(self.now_ms, r.at_ms)
                ),
            ));
        }
        all
    }

    /// The firewall's verdict for two ends on one network.
    fn firewall_same_network(&mut self, node: NodeId, net: &Network, src: &str, dst: &str) -> bool {
        let place = self.name(node);
        let Ok(report) = self.report(node) else { return true };
        let detail = if report.firewall_loaded {
            format!("table inet weft loaded; {src} and {dst} share network {}: forwarded", net.name)
        } else {
            format!(
                "weft's table inet weft is not loaded on {place}: nothing isolates networks there (the reconciler loads it again on its next run{})",
                self.failures(report)
            )
        };
        self.push(hop(&place, "firewall", true, detail))
    }

    /// The underlay between two hosts of `net`, with both sides' MTUs and both echo probes.
    /// `entries_ok`: both hosts' entries are in place (an unanswered echo is then the underlay's).
    fn underlay(&mut self, a: &Node, b: &Node, net: &Network, entries_ok: bool) -> pb::Hop {
        let place = format!("{} -> {}", a.name, b.name);
        let what = "underlay (VXLAN, UDP 4789)";
        for end in [a, b] {
            if let Err(h) = self.report(end.id) {
                let mut h = h;
                h.place = place.clone();
                h.what = what.into();
                return h;
            }
        }
        let (ra, rb) = (&self.reports[&a.id], &self.reports[&b.id]);
        let vxlan_mtu = |r: &pb::HostReport| {
            r.overlays.iter().find(|o| o.vni == net.vni).map(|o| o.vxlan_mtu).unwrap_or(0)
        };
        for (from, rf, to, rt) in [(a, ra, b, rb), (b, rb, a, ra)] {
            let inner = vxlan_mtu(rf);
            let wire = inner + vxlan_overhead(to.underlay);
            if inner > 0 && rt.underlay_mtu > 0 && wire > rt.underlay_mtu {
                return hop(
                    &place,
                    what,
                    false,
                    format!(
                        "{}'s underlay link {} has MTU {}, but {} sends overlay packets of up to {inner} bytes, {wire} on the wire with VXLAN's {}: larger ones are dropped on the way to {}. Expected an underlay MTU of at least {wire} on {} (or restart weftd on {} so the cluster sizes the overlay for {})",
                        to.name,
                        rt.underlay_link,
                        rt.underlay_mtu,
                        from.name,
                        vxlan_overhead(to.underlay),
                        to.name,
                        to.name,
                        to.name,
                        rt.underlay_mtu
                    ),
                );
            }
        }
        let probe = |r: &'a pb::HostReport, peer: NodeId| {
            r.probes.iter().find(|p| p.vni == net.vni && p.node == peer)
        };
        let (pa, pb_) = (probe(ra, b.id), probe(rb, a.id));
        let mtus = format!(
            "{} ({}, MTU {}) <-> {} ({}, MTU {})",
            a.underlay, ra.underlay_link, ra.underlay_mtu, b.underlay, rb.underlay_link, rb.underlay_mtu
        );
        let small_failed = [pa, pb_].iter().flatten().any(|p| !p.small_ok);
        if small_failed {
            if !entries_ok {
                return hop(
                    &place,
                    what,
                    true,
                    format!(
                        "{mtus}; echoes through VNI {} unanswered, explained by the entries above and below",
                        net.vni
                    ),
                );
            }
            let errors: Vec<String> =
                [pa, pb_].iter().flatten().filter(|p| !p.error.is_empty()).map(|p| p.error.clone()).collect();
            let errors = if errors.is_empty() { String::new() } else { format!(" ({})", errors.join("; ")) };
            return hop(
                &place,
                what,
                false,
                format!(
                    "an echo through VNI {} between {}'s and {}'s VTEPs got no answer{errors}, though both hosts' entries are in place and their agents reach each other: something between {} and {} drops VXLAN (UDP 4789). Expected UDP 4789 open between cluster hosts",
                    net.vni, a.name, b.name, a.underlay, b.underlay
                ),
            );
        }
        if let Some(p) = [pa, pb_].iter().flatten().find(|p| !p.full_ok) {
            return hop(
                &place,
                what,
                false,
                format!(
                    "small echoes pass, but one of {} bytes (the overlay's MTU) does not: a link between {} and {} carries less than {} bytes. Expected every underlay link to carry the overlay's MTU plus {}",
                    p.full_size,
                    a.name,
                    b.name,
                    p.full_size + vxlan_overhead(b.underlay),
                    vxlan_overhead(b.underlay)
                ),
            );
        }
        let echo = match pa.or(pb_) {
            Some(p) => format!(
                "; echo through VNI {} answered in {:.2} ms, at the full {} bytes too",
                net.vni,
                p.rtt_us as f64 / 1000.0,
                p.full_size
            ),
            None => "; not probed".into(),
        };
        hop(&place, what, true, format!("{mtus}{echo}"))
    }

    /// A published port on `node`: which container it leads to and whether that one runs.
    fn published(&mut self, node: NodeId, port: PortCheck) -> bool {
        let place = self.name(node);
        let report = match self.report(node) {
            Ok(r) => r,
            Err(h) => return self.push(h),
        };
        let what = format!("published port {}/{}", port.port, port.protocol());
        let by: Vec<(&pb::ContainerInfo, &pb::PortMapping)> = report
            .containers
            .iter()
            .flat_map(|c| c.ports.iter().map(move |p| (c, p)))
            .filter(|(_, p)| p.host_port == u32::from(port.port) && p.protocol == port.protocol())
            .collect();
        if let Some((c, p)) = by.iter().find(|(c, _)| c.state == "running") {
            let ip = c.networks.first().and_then(|n| n.ips.first()).cloned().unwrap_or_default();
            return self.push(hop(
                &place,
                what,
                true,
                format!("DNAT to {} ({ip}:{})", c.name, p.container_port),
            ));
        }
        if let Some((c, _)) = by.first() {
            return self.push(hop(
                &place,
                what,
                false,
                format!(
                    "{}/{} on {place} is published by {}, which is not running ({} with code {}): weft withdrew its DNAT rule and nothing answers. Expected {} running (`weft start {}` on {place})",
                    port.port, port.protocol(), c.name, c.state, c.exit_code, c.name, c.name
                ),
            ));
        }
        let others: Vec<String> = report
            .containers
            .iter()
            .flat_map(|c| {
                c.ports.iter().map(move |p| format!("{}/{} by {}", p.host_port, p.protocol, c.name))
            })
            .collect();
        let others = if others.is_empty() { "none".into() } else { others.join(", ") };
        self.push(hop(
            &place,
            what,
            false,
            format!(
                "nothing on {place} publishes {}/{} (published there: {others})",
                port.port,
                port.protocol()
            ),
        ))
    }

    fn host_ready(&mut self, node: NodeId) -> bool {
        match self.report(node) {
            Ok(r) => {
                let place = self.name(node);
                let detail = format!(
                    "Ready; underlay {} on {} (MTU {})",
                    self.state.node(node).map(|n| n.underlay.to_string()).unwrap_or_default(),
                    r.underlay_link,
                    r.underlay_mtu
                );
                self.push(hop(&place, "host", true, detail))
            }
            Err(h) => self.push(h),
        }
    }
}

/// The block of `node` in `net` holding `ip`, or its first block when `ip` is `None`.
fn block_of(state: &State, net: &Network, node: NodeId, ip: Option<IpAddr>) -> Option<Cidr> {
    state
        .blocks(net.id)
        .into_iter()
        .filter(|b| b.node == node && b.cidr.addr().is_ipv4() == ip.is_none_or(|i| i.is_ipv4()))
        .find(|b| ip.is_none_or(|ip| b.cidr.contains(ip)))
        .map(|b| b.cidr)
}

fn first_ip(end: &End, net: &Network) -> Option<IpAddr> {
    match end {
        End::Container { endpoints, .. } => {
            endpoints.iter().find(|e| e.network == net.id).and_then(|e| e.ips.first().copied())
        }
        _ => None,
    }
}

fn label(state: &State, end: &End) -> String {
    match end {
        End::Container { name, .. } => name.clone(),
        End::Host(node) => host_name(state, *node),
        End::Outside(ip) => ip.to_string(),
    }
}

/// Walks the path from `src` to `dst` over the state and the hosts' reports (taken at or before
/// `now_ms`). The answer is clear when every hop is.
pub fn explain(
    state: &State,
    src: &End,
    dst: &End,
    port: Option<PortCheck>,
    reports: &BTreeMap<NodeId, pb::HostReport>,
    now_ms: u64,
) -> Result<pb::WhyResponse, WhyError> {
    let mut walk = Walk { state, reports, now_ms, hops: Vec::new() };
    match (src, dst) {
        (End::Outside(ip), _) => return Err(WhyError::SourceOutside(*ip)),
        (End::Container { .. }, End::Container { .. }) | (End::Host(_), End::Container { .. }) => {
            container_to_container(&mut walk, src, dst, port)
        }
        (End::Container { node, id, name, endpoints }, End::Host(_) | End::Outside(_)) => {
            if walk.container(*node, id, name, None) {
                out_of_networks(&mut walk, *node, name, endpoints, dst);
                if let End::Host(h) = dst
                    && walk.host_ready(*h)
                    && let Some(port) = port
                {
                    walk.published(*h, port);
                }
            }
        }
        (End::Host(a), End::Host(b)) => {
            if walk.host_ready(*a) && walk.host_ready(*b) {
                match port {
                    Some(port) => {
                        walk.published(*b, port);
                    }
                    None => {
                        let place = format!("{} -> {}", host_name(state, *a), host_name(state, *b));
                        walk.push(hop(&place, "underlay", true, "the agents reach each other (heartbeats)"));
                    }
                }
            }
        }
        (End::Host(a), End::Outside(_)) => {
            walk.host_ready(*a);
        }
    }
    let blocked = walk.hops.iter().position(|h| !h.ok);
    let oldest = [src.node(), dst.node()]
        .into_iter()
        .flatten()
        .filter_map(|n| reports.get(&n))
        .map(|r| now_ms.saturating_sub(r.taken_ms))
        .max()
        .unwrap_or(0);
    Ok(pb::WhyResponse {
        clear: blocked.is_none(),
        blocked_at: blocked.unwrap_or(0) as u32,
        hops: walk.hops,
        report_age_ms: oldest,
    })
}

/// From a container to a host or an address outside every network: it leaves through a network
/// that is not `--internal`, masqueraded.
fn out_of_networks(walk: &mut Walk<'_>, node: NodeId, name: &str, endpoints: &[Endpoint], dst: &End) {
    let place = walk.name(node);
    let nets: Vec<&Network> = endpoints.iter().filter_map(|e| walk.state.network_by_id(e.network)).collect();
    let target = label(walk.state, dst);
    match nets.iter().find(|n| !n.internal) {
        Some(n) => {
            walk.push(hop(
                &place,
                "firewall",
                true,
                format!("{name} leaves network {} through its gateway on {place}, masqueraded to {place}'s address, towards {target}", n.name),
            ));
        }
        None => {
            let names: Vec<&str> = nets.iter().map(|n| n.name.as_str()).collect();
            let rules: Vec<String> = nets
                .iter()
                .map(|n| match n.driver {
                    Driver::Overlay => format!("\"internal {}\"", n.vni),
                    Driver::Bridge => format!("\"internal {}\"", weft_overlay::desired::bridge_device(n)),
                })
                .collect();
            walk.push(hop(
                &place,
                "firewall (internal network)",
                false,
                format!(
                    "{name}'s network {} is --internal: weft's firewall on {place} drops traffic leaving it (rule {} of table inet weft) and nothing is masqueraded, so {target} is out of reach. Expected: a network without --internal for traffic out (`weft network connect NETWORK {name}`)",
                    names.join(", "),
                    rules.join(", ")
                ),
            ));
        }
    }
}

fn container_to_container(walk: &mut Walk<'_>, src: &End, dst: &End, port: Option<PortCheck>) {
    let state = walk.state;
    let End::Container { node: dst_node, id: dst_id, name: dst_name, endpoints: dst_eps } = dst else {
        return;
    };
    let net = shared_network(state, src, dst);
    let src_node = src.node().expect("a container or a host");
    let src_label = label(state, src);
    if let End::Container { node, id, name, .. } = src
        && !walk.container(*node, id, name, net)
    {
        return;
    }
    let Some(net) = net else {
        let place = walk.name(src_node);
        let detail = match src {
            End::Container { endpoints, .. } => {
                let names = |eps: &[Endpoint]| -> String {
                    eps.iter()
                        .filter_map(|e| state.network_by_id(e.network))
                        .map(|n| n.name.clone())
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                format!(
                    "{src_label} is on {}, {dst_name} on {}: they share no network, and weft's firewall drops forwarding between networks (the \"isolate\" rules of table inet weft). Expected both on one network (`weft network connect NETWORK {src_label}`)",
                    names(endpoints),
                    names(dst_eps)
                )
            }
            _ => format!(
                "{src_label} takes part in none of {dst_name}'s overlay networks (it holds no block of them): a host reaches the containers of the networks it has containers on. Publish a port (`-p`) to reach {dst_name} from anywhere"
            ),
        };
        walk.push(hop(&place, "firewall (isolation)", false, detail));
        return;
    };
    let (Some(a), Some(b)) = (state.node(src_node), state.node(*dst_node)) else { return };
    if net.driver == Driver::Bridge && a.id != b.id {
        walk.push(hop(
            &a.name,
            format!("network {}", net.name),
            false,
            format!(
                "{} is a local bridge network: its containers on {} and {} are on two separate bridges. Expected an overlay network for containers on different hosts",
                net.name, a.name, b.name
            ),
        ));
        return;
    }
    if net.driver == Driver::Overlay {
        walk.bridge(a.id, net);
    }
    if a.id != b.id {
        let src_block = block_of(state, net, a.id, first_ip(src, net));
        let dst_block = block_of(state, net, b.id, first_ip(dst, net));
        let (Some(src_block), Some(dst_block)) = (src_block, dst_block) else { return };
        let here = walk.entries_towards(a, net, b, dst_block);
        walk.firewall_same_network(a.id, net, &src_label, dst_name);
        let at = walk.hops.len();
        let back = walk.entries_towards(b, net, a, src_block);
        let underlay = walk.underlay(a, b, net, here && back);
        walk.hops.insert(at, underlay);
        if net.driver == Driver::Overlay {
            walk.bridge(b.id, net);
        }
    } else {
        walk.firewall_same_network(a.id, net, &src_label, dst_name);
    }
    walk.container(*dst_node, dst_id, dst_name, Some(net));
    if let Some(port) = port {
        let place = walk.name(*dst_node);
        walk.push(hop(
            &place,
            format!("port {}/{}", port.port, port.protocol()),
            true,
            format!("weft does not filter traffic inside a network; whether {dst_name} listens on it is up to its process"),
        ));
    }
}

#[cfg(test)]
mod tests;
