//! Endpoint attachment: the seam through which the runtime (and later a CNI plugin) puts a
//! container's network namespace on an overlay network.

use std::net::IpAddr;

use weft_ipam::Cidr;
use weft_net::{BridgeSpec, MacAddr, NetNs, Netlink, RouteSpec, VethSpec};
use weft_state::{Driver, EndpointId, State};

use crate::desired::{bridge_device, overlay_mtu, path_mtu};
use crate::{OverlayError, Result};

/// How to wire one endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachSpec {
    /// Host end of the veth pair.
    pub host_ifname: String,
    /// Name of the interface inside the container.
    pub ifname: String,
    /// Bridge the host end joins.
    pub bridge: String,
    /// The container's addresses, with their block's prefix length.
    pub addresses: Vec<Cidr>,
    /// Default gateways (one per family).
    pub gateways: Vec<IpAddr>,
    /// MTU of both ends.
    pub mtu: u32,
    /// The container interface's MAC.
    pub mac: Option<MacAddr>,
    /// Addresses the bridge itself must hold (the gateway of a local bridge network, which no
    /// reconciler run may have created yet); empty for overlays, whose reconciler owns them.
    pub bridge_addresses: Vec<Cidr>,
    /// Routes to add inside the container besides the default one: (destination, gateway).
    pub extra_routes: Vec<(Cidr, IpAddr)>,
}

/// Host-side veth name of an endpoint: unique per endpoint, at most 15 bytes.
pub fn host_ifname(endpoint: EndpointId) -> String {
    format!("wv{endpoint:x}")
}

/// The attachment of endpoint `id`, from the replicated state. Pure. Overlay networks use the
/// overlay MTU; local bridge networks the underlay's and have the bridge hold the gateway.
pub fn spec_for(state: &State, id: EndpointId, underlay_mtu: u32) -> Option<AttachSpec> {
    let endpoint = state.endpoint(id)?;
    let network = state.network_by_id(endpoint.network)?;
    let underlay = state.node(endpoint.node)?.underlay;
    let blocks = state.blocks(network.id);
    let mut addresses = Vec::new();
    let mut gateways = Vec::new();
    let mut bridge_addresses = Vec::new();
    for ip in &endpoint.ips {
        let block = blocks.iter().find(|b| b.cidr.contains(*ip))?;
        addresses.push(Cidr::new(*ip, block.cidr.prefix_len()).ok()?);
        let gateway = block.cidr.nth(1)?;
        gateways.push(gateway);
        bridge_addresses.push(Cidr::new(gateway, block.cidr.prefix_len()).ok()?);
    }
    let (mtu, bridge_addresses) = match network.driver {
        Driver::Overlay => (overlay_mtu(path_mtu(state, underlay_mtu), underlay), Vec::new()),
        Driver::Bridge => (underlay_mtu, bridge_addresses),
    };
    Some(AttachSpec {
        host_ifname: host_ifname(id),
        ifname: "eth0".into(),
        bridge: bridge_device(network),
        addresses,
        gateways,
        mtu,
        mac: Some(MacAddr(endpoint.mac.0)),
        bridge_addresses,
        extra_routes: Vec::new(),
    })
}

/// Wires `container` (a network namespace) as `spec` says: a veth pair whose peer is created
/// directly inside the namespace under its final name, MTU, MAC, addresses, a default route via
/// the gateway, loopback up. `host` is a netlink connection of the host's namespace. Idempotent.
pub async fn attach(host: &Netlink, container: &NetNs, spec: &AttachSpec) -> Result<()> {
    let err = |e| OverlayError::Attach { ifname: spec.host_ifname.clone(), source: e };
    let bridge = host
        .ensure_bridge(&BridgeSpec { mtu: Some(spec.mtu), ..BridgeSpec::new(spec.bridge.clone()) })
        .await
        .map_err(err)?;
    for cidr in &spec.bridge_addresses {
        host.ensure_address(bridge.index, *cidr).await.map_err(err)?;
    }
    if !bridge.up {
        host.set_up(bridge.index).await.map_err(err)?;
    }
    let veth = VethSpec {
        peer_netns: Some(container.clone()),
        mtu: Some(spec.mtu),
        master: Some(bridge.index),
        ..VethSpec::new(spec.host_ifname.clone(), spec.ifname.clone())
    };
    host.ensure_veth(&veth).await.map_err(err)?;
    let inside = spec.clone();
    let worker = container.worker().map_err(err)?;
    worker.run(move |nl| async move { configure_inside(&nl, &inside).await }).await.map_err(err)?.map_err(err)
}

async fn configure_inside(nl: &Netlink, spec: &AttachSpec) -> weft_net::Result<()> {
    let lo = nl.require_link("lo").await?;
    if !lo.up {
        nl.set_up(lo.index).await?;
    }
    let link = nl.require_link(&spec.ifname).await?;
    if let Some(mac) = spec.mac.filter(|m| link.mac != Some(*m)) {
        nl.set_mac(link.index, mac).await?;
    }
    if link.mtu != spec.mtu {
        nl.set_mtu(link.index, spec.mtu).await?;
    }
    for cidr in &spec.addresses {
        nl.ensure_address(link.index, *cidr).await?;
    }
    if !link.up {
        nl.set_up(link.index).await?;
    }
    for gateway in &spec.gateways {
        nl.ensure_route(&RouteSpec::default_via(*gateway).with_dev(link.index)).await?;
    }
    for (dst, gateway) in &spec.extra_routes {
        nl.ensure_route(&RouteSpec::via(*dst, *gateway).with_dev(link.index)).await?;
    }
    Ok(())
}

/// Removes an endpoint's veth pair (its peer goes with it). False when it was not there.
pub async fn detach(host: &Netlink, host_ifname: &str) -> Result<bool> {
    host.delete_link_by_name(host_ifname)
        .await
        .map_err(|e| OverlayError::Attach { ifname: host_ifname.to_string(), source: e })
}

#[cfg(test)]
mod tests {
    use weft_state::{Role, cmd};

    use super::*;

    #[test]
    fn a_container_on_an_overlay_fits_the_smallest_underlay_of_the_cluster() {
        let mut s = State::default();
        s.apply(&cmd::with_underlay_mtu(cmd::register_node(1, "h1", "198.51.100.1", Role::Manager, 0), 1500))
            .unwrap();
        s.apply(&cmd::with_underlay_mtu(cmd::register_node(2, "h2", "198.51.100.2", Role::Worker, 0), 1400))
            .unwrap();
        s.apply(&cmd::create_network("n", Driver::Overlay, &["10.9.0.0/16"], 0, 0)).unwrap();
        s.apply(&cmd::create_network("b", Driver::Bridge, &["10.10.0.0/16"], 0, 0)).unwrap();
        s.apply(&cmd::allocate_endpoint("n", 1, &"a".repeat(64), "a", "")).unwrap();
        s.apply(&cmd::allocate_endpoint("b", 1, &"a".repeat(64), "a", "")).unwrap();
        let mtu = |network: &str| {
            let id = s
                .endpoints()
                .find(|e| s.network_by_id(e.network).is_some_and(|n| n.name == network))
                .unwrap()
                .id;
            spec_for(&s, id, 1500).unwrap().mtu
        };
        assert_eq!(mtu("n"), 1350, "h2's link carries 1400");
        assert_eq!(mtu("b"), 1500, "a local bridge network stays on this host's link");
    }
}
