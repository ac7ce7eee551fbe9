//! What the kernel holds of weft's overlay devices, read over netlink.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use weft_ipam::Cidr;
use weft_net::{Link, MacAddr, Netlink, Route};

use crate::desired::{DeviceRole, vni_of};

/// A neighbour entry: its MAC and whether it is static.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NeighbourState {
    /// The MAC it resolves to.
    pub mac: Option<MacAddr>,
    /// NUD_PERMANENT.
    pub permanent: bool,
}

/// One network's devices and entries as found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObservedNetwork {
    /// `wbr-<vni>`.
    pub bridge: Option<Link>,
    /// `wvx-<vni>`.
    pub vxlan: Option<Link>,
    /// Addresses on the bridge.
    pub bridge_addrs: BTreeSet<Cidr>,
    /// Addresses on the vxlan device.
    pub vxlan_addrs: BTreeSet<Cidr>,
    /// Routes out of the vxlan device, by destination.
    pub routes: BTreeMap<Cidr, Route>,
    /// Neighbours on the vxlan device, by IP.
    pub neighbours: BTreeMap<IpAddr, NeighbourState>,
    /// Static FDB entries with a destination on the vxlan device.
    pub fdb: BTreeMap<MacAddr, BTreeSet<IpAddr>>,
}

/// Everything weft-owned the kernel holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observed {
    /// By VNI.
    pub networks: BTreeMap<u32, ObservedNetwork>,
    /// Index of the link that carries the local underlay address.
    pub underlay: Option<Link>,
    /// Interface indexes of weft's devices (for filtering kernel events).
    pub indexes: BTreeSet<u32>,
}

/// Reads weft's devices and their addresses, routes, neighbours and FDB entries. Five dumps,
/// whatever the number of hosts or containers.
pub async fn observe(nl: &Netlink, underlay: Option<IpAddr>) -> weft_net::Result<Observed> {
    let links = nl.links().await?;
    let mut observed = Observed::default();
    let mut by_index: BTreeMap<u32, (DeviceRole, u32)> = BTreeMap::new();
    for link in links {
        if let Some((role, vni)) = vni_of(&link.name) {
            by_index.insert(link.index, (role, vni));
            observed.indexes.insert(link.index);
            let net = observed.networks.entry(vni).or_default();
            match role {
                DeviceRole::Bridge => net.bridge = Some(link),
                DeviceRole::Vxlan => net.vxlan = Some(link),
            }
        }
    }
    let addresses = nl.addresses(None).await?;
    if let Some(ip) = underlay
        && let Some(a) = addresses.iter().find(|a| a.cidr.addr() == ip)
    {
        observed.underlay = nl.link_by_index(a.index).await?;
    }
    for addr in addresses {
        if let Some((role, vni)) = by_index.get(&addr.index) {
            let net = observed.networks.get_mut(vni).expect("indexed network");
            match role {
                DeviceRole::Bridge => net.bridge_addrs.insert(addr.cidr),
                DeviceRole::Vxlan => net.vxlan_addrs.insert(addr.cidr),
            };
        }
    }
    if by_index.is_empty() {
        return Ok(observed);
    }
    let vxlan_of = |index: u32| match by_index.get(&index) {
        Some((DeviceRole::Vxlan, vni)) => Some(*vni),
        _ => None,
    };
    for route in nl.routes(None).await? {
        if let Some(vni) = route.dev.and_then(vxlan_of) {
            let net = observed.networks.get_mut(&vni).expect("indexed network");
            // Kernel-made prefix routes of the device's own addresses are not ours to manage.
            if route.gateway.is_some() {
                net.routes.insert(route.dst, route);
            }
        }
    }
    for n in nl.neighbours(None).await? {
        if let Some(vni) = vxlan_of(n.index) {
            let net = observed.networks.get_mut(&vni).expect("indexed network");
            net.neighbours.insert(n.ip, NeighbourState { mac: n.mac, permanent: n.permanent });
        }
    }
    for f in nl.fdb(None).await? {
        if let (Some(vni), Some(dst)) = (vxlan_of(f.index), f.dst)
            && f.self_entry
        {
            let net = observed.networks.get_mut(&vni).expect("indexed network");
            net.fdb.entry(f.mac).or_default().insert(dst);
        }
    }
    Ok(observed)
}
