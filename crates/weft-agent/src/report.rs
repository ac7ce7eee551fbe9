//! A host's report for `weft net why`: its overlay as the kernel holds it, its containers, the
//! reconciler's journal, its firewall, and echo probes through the overlay towards the peers the
//! leader named. Sent in a heartbeat when the leader asks (see [`crate::why`]).

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use weft_overlay::desired::vxlan_name;
use weft_proto::v1 as pb;
use weft_state::{NodeId, State};

use crate::agent_api::container_info;
use crate::host::Host;

/// How long one echo probe waits for its reply.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// The size of the small echo (an IP packet of 84 bytes, as ping's default).
const SMALL_ECHO: usize = 84;

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
