//! The difference between desired and observed state as a list of minimal actions. Pure.

use std::net::IpAddr;

use weft_ipam::Cidr;
use weft_net::{Link, MacAddr, VXLAN_PORT};

use crate::desired::{Desired, DesiredNetwork, bridge_name, vxlan_name};
use crate::observed::{Observed, ObservedNetwork};

/// One change to make to the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Create or correct the network's bridge.
    EnsureBridge {
        /// The network.
        vni: u32,
        /// Its MTU.
        mtu: u32,
    },
    /// Create or correct (re-create, if immutable attributes differ) the vxlan device.
    EnsureVxlan {
        /// The network.
        vni: u32,
        /// Local underlay address.
        local: IpAddr,
        /// Underlay link index.
        underlay: Option<u32>,
        /// MTU.
        mtu: u32,
        /// VTEP MAC.
        mac: MacAddr,
    },
    /// Add an address to a device.
    AddAddress {
        /// Device name.
        dev: String,
        /// The address.
        cidr: Cidr,
    },
    /// Remove an address from a device.
    DelAddress {
        /// Device name.
        dev: String,
        /// The address.
        cidr: Cidr,
    },
    /// Reach a remote block: neighbour, then FDB, then the onlink route (rolled back on failure).
    AddPeerBlock {
        /// The network.
        vni: u32,
        /// The remote block.
        block: Cidr,
        /// The remote VTEP's MAC.
        mac: MacAddr,
        /// The remote host's underlay address.
        underlay: IpAddr,
    },
    /// Remove a route out of the vxlan device.
    DelRoute {
        /// The network.
        vni: u32,
        /// Its destination.
        dst: Cidr,
        /// Its gateway.
        gateway: IpAddr,
    },
    /// Remove a neighbour of the vxlan device.
    DelNeighbour {
        /// The network.
        vni: u32,
        /// The neighbour.
        ip: IpAddr,
    },
    /// Remove an FDB entry of the vxlan device.
    DelFdb {
        /// The network.
        vni: u32,
        /// The MAC.
        mac: MacAddr,
        /// Its destination.
        dst: IpAddr,
    },
    /// Delete a weft device of a network this host no longer takes part in.
    DeleteLink {
        /// Device name.
        name: String,
    },
}

impl Action {
    /// A short name for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Action::EnsureBridge { .. } => "ensure_bridge",
            Action::EnsureVxlan { .. } => "ensure_vxlan",
            Action::AddAddress { .. } => "add_address",
            Action::DelAddress { .. } => "del_address",
            Action::AddPeerBlock { .. } => "add_peer_block",
            Action::DelRoute { .. } => "del_route",
            Action::DelNeighbour { .. } => "del_neighbour",
            Action::DelFdb { .. } => "del_fdb",
            Action::DeleteLink { .. } => "delete_link",
        }
    }
}

/// Every action kind, for metrics.
pub const ACTION_KINDS: &[&str] = &[
    "ensure_bridge",
    "ensure_vxlan",
    "add_address",
    "del_address",
    "add_peer_block",
    "del_route",
    "del_neighbour",
    "del_fdb",
    "delete_link",
];

fn bridge_ok(link: &Link, want: &DesiredNetwork) -> bool {
    link.mtu == want.mtu && link.up
}

/// Whether the vxlan device can be kept as is (else it is re-created, losing its entries).
fn vxlan_immutable_ok(link: &Link, want: &DesiredNetwork, underlay: Option<u32>) -> bool {
    link.vxlan.as_ref().is_some_and(|v| {
        v.vni == want.vni
            && v.local == Some(want.local)
            && v.port == VXLAN_PORT
            && !v.learning
            && !v.udp_csum
            && (underlay.is_none() || v.underlay == underlay)
    })
}

fn vxlan_mutable_ok(link: &Link, want: &DesiredNetwork) -> bool {
    link.mtu == want.mtu && link.mac == Some(want.vtep_mac) && link.up
}

/// The actions that turn `observed` into `desired`, in a safe order: devices first, removals of
/// stale entries (route, then neighbour, then FDB) before additions, networks no longer wanted last.
pub fn plan(desired: &Desired, observed: &Observed) -> Vec<Action> {
    let mut actions = Vec::new();
    let underlay = observed.underlay.as_ref().map(|l| l.index);
    let empty = ObservedNetwork::default();
    for (vni, want) in &desired.networks {
        let vni = *vni;
        let seen = observed.networks.get(&vni).unwrap_or(&empty);
        if !seen.bridge.as_ref().is_some_and(|b| bridge_ok(b, want)) {
            actions.push(Action::EnsureBridge { vni, mtu: want.mtu });
        }
        let keep_vxlan = seen.vxlan.as_ref().is_some_and(|v| vxlan_immutable_ok(v, want, underlay));
        if !keep_vxlan || !seen.vxlan.as_ref().is_some_and(|v| vxlan_mutable_ok(v, want)) {
            actions.push(Action::EnsureVxlan {
                vni,
                local: want.local,
                underlay,
                mtu: want.mtu,
                mac: want.vtep_mac,
            });
        }
        // A re-created vxlan device starts empty.
        let seen_vx = if keep_vxlan { seen } else { &empty };
        let bridge_addrs = if seen.bridge.is_some() { &seen.bridge_addrs } else { &empty.bridge_addrs };
        diff_addresses(&mut actions, &bridge_name(vni), &want.gateways, bridge_addrs);
        diff_addresses(&mut actions, &vxlan_name(vni), &want.vtep_addrs, &seen_vx.vxlan_addrs);

        // Stale entries: routes first, then neighbours, then FDB.
        let wanted_block = |dst: &Cidr| want.peers.values().any(|p| p.blocks.contains(dst));
        for (dst, route) in &seen_vx.routes {
            let ok = wanted_block(dst) && route.gateway == Some(dst.addr()) && route.onlink;
            if !ok && let Some(gateway) = route.gateway {
                actions.push(Action::DelRoute { vni, dst: *dst, gateway });
            }
        }
        // Only static entries are weft's; whatever the kernel learned on its own ages out by itself.
        for (ip, neighbour) in &seen_vx.neighbours {
            let wanted = want.peers.values().any(|p| p.blocks.iter().any(|b| b.addr() == *ip));
            if neighbour.permanent && !wanted {
                actions.push(Action::DelNeighbour { vni, ip: *ip });
            }
        }
        for (mac, dsts) in &seen_vx.fdb {
            for dst in dsts {
                let wanted = want.peers.values().any(|p| p.mac == *mac && p.underlay == *dst);
                if !wanted {
                    actions.push(Action::DelFdb { vni, mac: *mac, dst: *dst });
                }
            }
        }
        // Missing or wrong entries, per remote block.
        for peer in want.peers.values() {
            let fdb_ok = seen_vx.fdb.get(&peer.mac).is_some_and(|d| d.contains(&peer.underlay));
            for block in &peer.blocks {
                let neigh_ok = seen_vx
                    .neighbours
                    .get(&block.addr())
                    .is_some_and(|n| n.permanent && n.mac == Some(peer.mac));
                let route_ok =
                    seen_vx.routes.get(block).is_some_and(|r| r.gateway == Some(block.addr()) && r.onlink);
                if !(fdb_ok && neigh_ok && route_ok) {
                    actions.push(Action::AddPeerBlock {
                        vni,
                        block: *block,
                        mac: peer.mac,
                        underlay: peer.underlay,
                    });
                }
            }
        }
    }
    for (vni, seen) in &observed.networks {
        if desired.networks.contains_key(vni) {
            continue;
        }
        if seen.vxlan.is_some() {
            actions.push(Action::DeleteLink { name: vxlan_name(*vni) });
        }
        if seen.bridge.is_some() {
            actions.push(Action::DeleteLink { name: bridge_name(*vni) });
        }
    }
    actions
}

fn diff_addresses(
    actions: &mut Vec<Action>,
    dev: &str,
    want: &std::collections::BTreeSet<Cidr>,
    seen: &std::collections::BTreeSet<Cidr>,
) {
    for cidr in seen.difference(want) {
        // Link-local IPv6 addresses belong to the kernel.
        if let IpAddr::V6(v6) = cidr.addr()
            && v6.segments()[0] & 0xffc0 == 0xfe80
        {
            continue;
        }
        actions.push(Action::DelAddress { dev: dev.to_string(), cidr: *cidr });
    }
    for cidr in want.difference(seen) {
        actions.push(Action::AddAddress { dev: dev.to_string(), cidr: *cidr });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::desired;
    use crate::observed::NeighbourState;
    use weft_net::{LinkKind, Route, VxlanInfo};
    use weft_state::{Driver, Role, State, cmd};

    fn state() -> State {
        let mut s = State::new();
        for id in 1..=3 {
            s.apply(&cmd::register_node(id, &format!("h{id}"), &format!("198.51.100.{id}"), Role::Worker, 0))
                .unwrap();
        }
        s.apply(&cmd::create_network("app", Driver::Overlay, &["10.44.0.0/16"], 42, 0)).unwrap();
        for (node, c) in [(1, "a"), (2, "b"), (3, "c")] {
            s.apply(&cmd::allocate_endpoint("app", node, c, "", "")).unwrap();
        }
        s
    }

    fn link(index: u32, name: &str, kind: LinkKind, mtu: u32) -> Link {
        Link {
            index,
            name: name.into(),
            kind,
            mtu,
            mac: None,
            up: true,
            lower_up: true,
            master: None,
            link: None,
            vxlan: None,
        }
    }

    /// The observed state of a host on which every desired object exists.
    fn converged(d: &Desired) -> Observed {
        let mut o = Observed { underlay: Some(link(2, "eth0", LinkKind::Veth, 1500)), ..Observed::default() };
        for (vni, w) in &d.networks {
            let mut vx = link(100 + vni, &vxlan_name(*vni), LinkKind::Vxlan, w.mtu);
            vx.mac = Some(w.vtep_mac);
            vx.vxlan = Some(VxlanInfo {
                vni: *vni,
                local: Some(w.local),
                port: 4789,
                learning: false,
                underlay: Some(2),
                udp_csum: false,
            });
            let mut net = ObservedNetwork {
                bridge: Some(link(200 + vni, &bridge_name(*vni), LinkKind::Bridge, w.mtu)),
                vxlan: Some(vx),
                bridge_addrs: w.gateways.clone(),
                vxlan_addrs: w.vtep_addrs.clone(),
                ..ObservedNetwork::default()
            };
            for p in w.peers.values() {
                net.fdb.entry(p.mac).or_default().insert(p.underlay);
                for b in &p.blocks {
                    net.neighbours.insert(b.addr(), NeighbourState { mac: Some(p.mac), permanent: true });
                    let route = Route {
                        dst: *b,
                        gateway: Some(b.addr()),
                        dev: Some(100 + vni),
                        onlink: true,
                        metric: 0,
                        table: 254,
                    };
                    net.routes.insert(*b, route);
                }
            }
            o.networks.insert(*vni, net);
        }
        o
    }

    #[test]
    fn a_fresh_host_gets_devices_then_one_entry_set_per_remote_block() {
        let d = desired(&state(), 1, 1500);
        let actions = plan(&d, &Observed::default());
        let kinds: Vec<_> = actions.iter().map(Action::kind).collect();
        assert_eq!(
            kinds,
            [
                "ensure_bridge",
                "ensure_vxlan",
                "add_address",
                "add_address",
                "add_peer_block",
                "add_peer_block"
            ]
        );
    }

    #[test]
    fn a_converged_host_needs_nothing() {
        let d = desired(&state(), 1, 1500);
        assert_eq!(plan(&d, &converged(&d)), vec![]);
    }

    #[test]
    fn stale_entries_go_in_reverse_order_and_missing_ones_come_back() {
        let s = state();
        let d = desired(&s, 1, 1500);
        let mut o = converged(&d);
        // Host 3 left: its entries are stale. Host 2's route was deleted by hand.
        let mut without_3 = s.clone();
        without_3.apply(&cmd::remove_node(3)).unwrap();
        let d2 = desired(&without_3, 1, 1500);
        o.networks.get_mut(&42).unwrap().routes.remove(&"10.44.1.0/24".parse().unwrap());
        let actions = plan(&d2, &o);
        let kinds: Vec<_> = actions.iter().map(Action::kind).collect();
        assert_eq!(kinds, ["del_route", "del_neighbour", "del_fdb", "add_peer_block"]);
        assert!(
            matches!(&actions[3], Action::AddPeerBlock { block, .. } if block.to_string() == "10.44.1.0/24")
        );
    }

    #[test]
    fn a_wrong_vxlan_is_recreated_and_refilled_and_unwanted_networks_removed() {
        let d = desired(&state(), 1, 1500);
        let mut o = converged(&d);
        o.networks.get_mut(&42).unwrap().vxlan.as_mut().unwrap().vxlan.as_mut().unwrap().learning = true;
        o.networks.insert(
            7,
            ObservedNetwork {
                bridge: Some(link(9, "wbr-7", LinkKind::Bridge, 1450)),
                ..ObservedNetwork::default()
            },
        );
        let kinds: Vec<_> = plan(&d, &o).iter().map(Action::kind).collect();
        assert_eq!(kinds, ["ensure_vxlan", "add_address", "add_peer_block", "add_peer_block", "delete_link"]);
        // Only the MTU is wrong: corrected in place, entries kept.
        let mut o = converged(&d);
        o.networks.get_mut(&42).unwrap().vxlan.as_mut().unwrap().mtu = 1400;
        assert_eq!(plan(&d, &o).iter().map(Action::kind).collect::<Vec<_>>(), ["ensure_vxlan"]);
    }
}
