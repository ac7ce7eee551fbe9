//! What the kernel of one host should hold for the overlay, computed from the replicated state.
//! Pure: no I/O.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use weft_ipam::Cidr;
use weft_net::MacAddr;
use weft_state::{Driver, Network, NodeId, State};

/// The VXLAN port weft uses.
pub const VXLAN_PORT: u16 = 4789;

/// Name of a network's bridge on every host.
pub fn bridge_name(vni: u32) -> String {
    format!("wbr-{vni}")
}

/// Name of a network's VXLAN device on every host.
pub fn vxlan_name(vni: u32) -> String {
    format!("wvx-{vni}")
}

/// The name of a local bridge network's bridge: `weft0` for the default network `bridge`
/// (Docker's docker0), `wlb-<network id>` for user-defined bridge networks.
pub fn local_bridge_name(name: &str, id: u64) -> String {
    if name == DEFAULT_BRIDGE_NETWORK { "weft0".into() } else { format!("wlb-{id}") }
}

/// The name of the default local bridge network.
pub const DEFAULT_BRIDGE_NETWORK: &str = "bridge";

/// The bridge device containers of `network` attach to on every host.
pub fn bridge_device(network: &Network) -> String {
    match network.driver {
        Driver::Overlay => bridge_name(network.vni),
        Driver::Bridge => local_bridge_name(&network.name, network.id),
    }
}

/// The VNI in a weft device name (`wbr-42`, `wvx-42`), if it is one.
pub fn vni_of(name: &str) -> Option<(DeviceRole, u32)> {
    let (role, rest) = if let Some(rest) = name.strip_prefix("wbr-") {
        (DeviceRole::Bridge, rest)
    } else {
        (DeviceRole::Vxlan, name.strip_prefix("wvx-")?)
    };
    if rest.is_empty() || !rest.bytes().all(|b| b.is_ascii_digit()) || rest.starts_with('0') {
        return None;
    }
    Some((role, rest.parse().ok()?))
}

/// Which of a network's two devices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceRole {
    /// `wbr-<vni>`.
    Bridge,
    /// `wvx-<vni>`.
    Vxlan,
}

/// The VTEP MAC of `node` in network `vni`: derived, so it survives restarts and re-creation and
/// every host computes the same one.
pub fn vtep_mac(node: NodeId, vni: u32) -> MacAddr {
    let mut seed = [0u8; 16];
    seed[..8].copy_from_slice(&node.to_be_bytes());
    seed[8..].copy_from_slice(&u64::from(vni).to_be_bytes());
    MacAddr::derived(&seed)
}

/// The MTU the overlay's packets must fit on every path: the smallest underlay MTU any node
/// reported, or this host's own (`local`) when that is smaller or nobody reported one. A host
/// with a 1500-byte link must not send 1450-byte overlay packets to one whose link carries 1400.
pub fn path_mtu(state: &State, local: u32) -> u32 {
    state.nodes().map(|n| n.underlay_mtu).filter(|m| *m > 0).fold(local, u32::min)
}

/// The MTU inside the overlay: the underlay's minus the VXLAN encapsulation (50 bytes over IPv4,
/// 70 over IPv6).
pub fn overlay_mtu(underlay_mtu: u32, underlay: IpAddr) -> u32 {
    underlay_mtu.saturating_sub(if underlay.is_ipv4() { 50 } else { 70 })
}

/// A remote host of a network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// Its VTEP MAC in this network.
    pub mac: MacAddr,
    /// Its underlay address.
    pub underlay: IpAddr,
    /// Its blocks in this network.
    pub blocks: BTreeSet<Cidr>,
}

/// One overlay network as this host should have it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredNetwork {
    /// The network's name.
    pub name: String,
    /// VNI.
    pub vni: u32,
    /// Its subnets.
    pub subnets: Vec<Cidr>,
    /// No masquerading, no traffic to the outside.
    pub internal: bool,
    /// MTU of bridge, vxlan and container links.
    pub mtu: u32,
    /// This host's VTEP MAC.
    pub vtep_mac: MacAddr,
    /// This host's underlay address (vxlan `local`).
    pub local: IpAddr,
    /// Gateway address (with the block's prefix) of each local block: the bridge's addresses.
    pub gateways: BTreeSet<Cidr>,
    /// The network address of each local block as a host prefix: the vxlan device's addresses.
    pub vtep_addrs: BTreeSet<Cidr>,
    /// Remote hosts holding blocks.
    pub peers: BTreeMap<NodeId, Peer>,
}

/// A local bridge network as this host should have it: a bridge holding the gateway of this
/// host's block, nothing towards other hosts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalBridge {
    /// The network's name.
    pub name: String,
    /// Its subnets.
    pub subnets: Vec<Cidr>,
    /// No masquerading, no traffic to the outside.
    pub internal: bool,
    /// MTU of the bridge and its container links: the underlay's.
    pub mtu: u32,
    /// Gateway address (with the block's prefix) of each local block.
    pub gateways: BTreeSet<Cidr>,
}

/// Everything the overlay wants on this host.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Desired {
    /// Overlay networks this host takes part in (holds a block of), by VNI.
    pub networks: BTreeMap<u32, DesiredNetwork>,
    /// Local bridge networks this host holds a block of, by bridge device name.
    pub bridges: BTreeMap<String, LocalBridge>,
    /// Underlay addresses of every cluster host: the only sources VXLAN is accepted from.
    pub cluster_hosts: BTreeSet<IpAddr>,
}

fn host_prefix(ip: IpAddr) -> Cidr {
    let len = if ip.is_ipv4() { 32 } else { 128 };
    Cidr::new(ip, len).expect("host prefix fits")
}

/// The desired overlay of node `me`, whose underlay link has MTU `underlay_mtu` (overlay devices
/// take the cluster's smallest, see [`path_mtu`]; local bridges this host's).
pub fn desired(state: &State, me: NodeId, underlay_mtu: u32) -> Desired {
    let cluster_hosts = state.nodes().map(|n| n.underlay).collect();
    let Some(local) = state.node(me).map(|n| n.underlay) else {
        return Desired { cluster_hosts, ..Desired::default() };
    };
    let mut bridges = BTreeMap::new();
    for net in state.networks().filter(|n| n.driver == Driver::Bridge) {
        let gateways: BTreeSet<Cidr> = state
            .blocks(net.id)
            .iter()
            .filter(|b| b.node == me)
            .map(|b| {
                Cidr::new(b.cidr.nth(1).expect("blocks have a gateway"), b.cidr.prefix_len())
                    .expect("same family")
            })
            .collect();
        if gateways.is_empty() {
            continue;
        }
        bridges.insert(
            bridge_device(net),
            LocalBridge {
                name: net.name.clone(),
                subnets: net.subnets.clone(),
                internal: net.internal,
                mtu: underlay_mtu,
                gateways,
            },
        );
    }
    let mut networks = BTreeMap::new();
    for net in state.networks().filter(|n| n.driver == Driver::Overlay) {
        let blocks = state.blocks(net.id);
        if !blocks.iter().any(|b| b.node == me) {
            continue;
        }
        let mut wanted = DesiredNetwork {
            name: net.name.clone(),
            vni: net.vni,
            subnets: net.subnets.clone(),
            internal: net.internal,
            mtu: overlay_mtu(path_mtu(state, underlay_mtu), local),
            vtep_mac: vtep_mac(me, net.vni),
            local,
            gateways: BTreeSet::new(),
            vtep_addrs: BTreeSet::new(),
            peers: BTreeMap::new(),
        };
        for block in blocks {
            if block.node == me {
                let gateway = block.cidr.nth(1).expect("blocks have a gateway");
                wanted.gateways.insert(Cidr::new(gateway, block.cidr.prefix_len()).expect("same family"));
                wanted.vtep_addrs.insert(host_prefix(block.cidr.addr()));
            } else if let Some(node) = state.node(block.node) {
                wanted
                    .peers
                    .entry(node.id)
                    .or_insert_with(|| Peer {
                        mac: vtep_mac(node.id, net.vni),
                        underlay: node.underlay,
                        blocks: BTreeSet::new(),
                    })
                    .blocks
                    .insert(block.cidr);
            }
        }
        networks.insert(net.vni, wanted);
    }
    Desired { networks, bridges, cluster_hosts }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_state::{Role, cmd};

    #[test]
    fn names_and_macs() {
        assert_eq!(vni_of("wvx-42"), Some((DeviceRole::Vxlan, 42)));
        assert_eq!(vni_of("wbr-7"), Some((DeviceRole::Bridge, 7)));
        assert_eq!(vni_of("wbr-07"), None);
        assert_eq!(vni_of("wvx-"), None);
        assert_eq!(vni_of("eth0"), None);
        assert_eq!(vtep_mac(1, 42), vtep_mac(1, 42));
        assert_ne!(vtep_mac(1, 42), vtep_mac(2, 42));
        assert_eq!(overlay_mtu(1500, "198.51.100.1".parse().unwrap()), 1450);
    }

    #[test]
    fn desired_follows_blocks() {
        let mut s = State::new();
        for id in 1..=3 {
            s.apply(&cmd::register_node(id, &format!("h{id}"), &format!("198.51.100.{id}"), Role::Worker, 0))
                .unwrap();
        }
        s.apply(&cmd::create_network("app", Driver::Overlay, &["10.44.0.0/16"], 42, 0)).unwrap();
        s.apply(&cmd::allocate_endpoint("app", 1, "a", "", "")).unwrap();
        s.apply(&cmd::allocate_endpoint("app", 2, "b", "", "")).unwrap();
        s.apply(&cmd::allocate_endpoint("app", 2, "c", "", "10.44.9.9")).unwrap();
        let d = desired(&s, 1, 1400);
        let net = &d.networks[&42];
        assert_eq!(net.mtu, 1350);
        assert_eq!(net.gateways.iter().map(|c| c.to_string()).collect::<Vec<_>>(), ["10.44.0.1/24"]);
        assert_eq!(net.vtep_addrs.iter().map(|c| c.to_string()).collect::<Vec<_>>(), ["10.44.0.0/32"]);
        let peer = &net.peers[&2];
        assert_eq!(peer.blocks.len(), 2, "one route per block, one FDB entry per host");
        assert_eq!(peer.mac, vtep_mac(2, 42));
        assert_eq!(d.cluster_hosts.len(), 3);
        // Host 3 holds no block: it takes no part in the network.
        assert!(desired(&s, 3, 1500).networks.is_empty());
    }

    #[test]
    fn the_overlay_takes_the_smallest_underlay_mtu_of_the_cluster() {
        let mut s = State::default();
        let register = |id, name: &str, addr: &str, mtu| {
            weft_state::cmd::with_underlay_mtu(
                weft_state::cmd::register_node(id, name, addr, Role::Manager, 0),
                mtu,
            )
        };
        s.apply(&register(1, "h1", "198.51.100.1", 1500)).unwrap();
        s.apply(&register(2, "h2", "198.51.100.2", 0)).unwrap();
        s.apply(&weft_state::cmd::create_network("n", Driver::Overlay, &["10.9.0.0/16"], 0, 0)).unwrap();
        s.apply(&weft_state::cmd::allocate_endpoint("n", 1, &"a".repeat(64), "a", "")).unwrap();
        assert_eq!(path_mtu(&s, 1500), 1500, "an unknown MTU does not count");
        assert_eq!(desired(&s, 1, 1500).networks.values().next().unwrap().mtu, 1450);
        s.apply(&register(3, "h3", "198.51.100.3", 1400)).unwrap();
        assert_eq!(path_mtu(&s, 1500), 1400);
        assert_eq!(
            desired(&s, 1, 1500).networks.values().next().unwrap().mtu,
            1350,
            "h3's link carries 1400"
        );
        assert_eq!(path_mtu(&s, 1300), 1300, "this host's own link is smaller still");
    }
}
