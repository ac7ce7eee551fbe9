//! Carries out planned actions through weft-net.

use weft_ipam::Cidr;
use weft_net::{BridgeSpec, NetError, Netlink, RouteSpec, VxlanSpec};

use crate::desired::{bridge_name, vxlan_name};
use crate::plan::Action;
use crate::{OverlayError, Result};

fn step(action: &Action, err: NetError) -> OverlayError {
    OverlayError::Apply { action: format!("{action:?}"), source: err }
}

/// Applies one action.
pub async fn apply(nl: &Netlink, action: &Action) -> Result<()> {
    match action {
        Action::EnsureBridge { vni, mtu } => {
            let spec = BridgeSpec { mtu: Some(*mtu), ..BridgeSpec::new(bridge_name(*vni)) };
            nl.ensure_bridge(&spec).await.map_err(|e| step(action, e))?;
        }
        Action::EnsureVxlan { vni, local, underlay, mtu, mac } => {
            let spec = VxlanSpec {
                local: Some(*local),
                underlay: *underlay,
                mtu: Some(*mtu),
                mac: Some(*mac),
                ..VxlanSpec::new(vxlan_name(*vni), *vni)
            };
            nl.ensure_vxlan(&spec).await.map_err(|e| step(action, e))?;
        }
        Action::AddAddress { dev, cidr } => {
            let link = nl.require_link(dev).await.map_err(|e| step(action, e))?;
            nl.ensure_address(link.index, *cidr).await.map_err(|e| step(action, e))?;
        }
        Action::DelAddress { dev, cidr } => {
            let link = nl.require_link(dev).await.map_err(|e| step(action, e))?;
            ignore_missing(nl.delete_address(link.index, *cidr).await).map_err(|e| step(action, e))?;
        }
        Action::AddPeerBlock { vni, block, mac, underlay } => {
            add_peer_block(nl, *vni, *block, *mac, *underlay).await.map_err(|e| step(action, e))?;
        }
        Action::DelRoute { vni, dst, gateway } => {
            let vx = nl.require_link(&vxlan_name(*vni)).await.map_err(|e| step(action, e))?;
            let spec = RouteSpec::via(*dst, *gateway).with_dev(vx.index).with_onlink();
            ignore_missing(nl.delete_route(&spec).await).map_err(|e| step(action, e))?;
        }
        Action::DelNeighbour { vni, ip } => {
            let vx = nl.require_link(&vxlan_name(*vni)).await.map_err(|e| step(action, e))?;
            ignore_missing(nl.delete_neighbour(vx.index, *ip).await).map_err(|e| step(action, e))?;
        }
        Action::DelFdb { vni, mac, dst } => {
            let vx = nl.require_link(&vxlan_name(*vni)).await.map_err(|e| step(action, e))?;
            ignore_missing(nl.fdb_delete(vx.index, *mac, Some(*dst)).await).map_err(|e| step(action, e))?;
        }
        Action::DeleteLink { name } => {
            nl.delete_link_by_name(name).await.map_err(|e| step(action, e))?;
        }
    }
    Ok(())
}

fn ignore_missing(result: weft_net::Result<()>) -> weft_net::Result<()> {
    match result {
        Err(NetError::NotFound { .. }) => Ok(()),
        other => other,
    }
}

/// Neighbour, then FDB, then the onlink route; whatever this call added is taken back if a later
/// step fails, so a remote block is either fully reachable or not touched.
async fn add_peer_block(
    nl: &Netlink,
    vni: u32,
    block: Cidr,
    mac: weft_net::MacAddr,
    underlay: std::net::IpAddr,
) -> weft_net::Result<()> {
    let vx = nl.require_link(&vxlan_name(vni)).await?;
    let gateway = block.addr();
    let neigh_added = nl.ensure_neighbour(vx.index, gateway, mac).await?;
    let fdb_added = match nl.ensure_fdb(vx.index, mac, Some(underlay)).await {
        Ok(added) => added,
        Err(e) => {
            if neigh_added {
                let _ = nl.delete_neighbour(vx.index, gateway).await;
            }
            return Err(e);
        }
    };
    let route = RouteSpec::via(block, gateway).with_dev(vx.index).with_onlink();
    if let Err(e) = nl.ensure_route(&route).await {
        if fdb_added {
            let _ = nl.fdb_delete(vx.index, mac, Some(underlay)).await;
        }
        if neigh_added {
            let _ = nl.delete_neighbour(vx.index, gateway).await;
        }
        return Err(e);
    }
    Ok(())
}
