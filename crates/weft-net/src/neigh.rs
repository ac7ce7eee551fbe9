//! Permanent neighbours (ARP/NDP entries) and bridge FDB entries.

use std::net::IpAddr;

use futures::TryStreamExt;
use netlink_packet_core::{NLM_F_APPEND, NLM_F_CREATE, NLM_F_REPLACE};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::RouteType;
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use crate::error::errno_of;
use crate::{MacAddr, NetError, Netlink, Result};

/// An IP neighbour entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Neighbour {
    /// Interface index.
    pub index: u32,
    /// The neighbour's IP address.
    pub ip: IpAddr,
    /// Its Ethernet address (absent for incomplete entries).
    pub mac: Option<MacAddr>,
    /// True for static (NUD_PERMANENT) entries.
    pub permanent: bool,
}

/// A bridge forwarding-database entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FdbEntry {
    /// Interface index (the vxlan device or bridge port).
    pub index: u32,
    /// The Ethernet address.
    pub mac: MacAddr,
    /// The remote VTEP, for vxlan devices.
    pub dst: Option<IpAddr>,
    /// The entry belongs to the device itself (NTF_SELF), not to a bridge master.
    pub self_entry: bool,
    /// Static (NUD_PERMANENT) entry.
    pub permanent: bool,
}

fn neighbour_ip(addr: &NeighbourAddress) -> Option<IpAddr> {
    match addr {
        NeighbourAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        NeighbourAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        // FDB entries (family AF_BRIDGE) carry the VTEP address without a family of its own.
        NeighbourAddress::Other(bytes) => match bytes.len() {
            4 => <[u8; 4]>::try_from(&bytes[..]).ok().map(IpAddr::from),
            16 => <[u8; 16]>::try_from(&bytes[..]).ok().map(IpAddr::from),
            _ => None,
        },
        _ => None,
    }
}

fn neighbour_from(msg: &NeighbourMessage) -> Option<Neighbour> {
    let mut ip = None;
    let mut mac = None;
    for attr in &msg.attributes {
        match attr {
            NeighbourAttribute::Destination(a) => ip = neighbour_ip(a),
            NeighbourAttribute::LinkLayerAddress(b) => mac = MacAddr::from_slice(b),
            _ => {}
        }
    }
    Some(Neighbour {
        index: msg.header.ifindex,
        ip: ip?,
        mac,
        permanent: msg.header.state == NeighbourState::Permanent,
    })
}

fn fdb_from(msg: &NeighbourMessage) -> Option<FdbEntry> {
    let mut mac = None;
    let mut dst = None;
    for attr in &msg.attributes {
        match attr {
            NeighbourAttribute::Destination(a) => dst = neighbour_ip(a),
            NeighbourAttribute::LinkLayerAddress(b) => mac = MacAddr::from_slice(b),
            _ => {}
        }
    }
    Some(FdbEntry {
        index: msg.header.ifindex,
        mac: mac?,
        dst,
        self_entry: msg.header.flags.contains(NeighbourFlags::Own),
        permanent: msg.header.state == NeighbourState::Permanent,
    })
}

fn ip_family(ip: IpAddr) -> AddressFamily {
    if ip.is_ipv4() { AddressFamily::Inet } else { AddressFamily::Inet6 }
}

fn neighbour_message(index: u32, ip: IpAddr, mac: Option<MacAddr>) -> NeighbourMessage {
    let mut msg = NeighbourMessage::default();
    msg.header.family = ip_family(ip);
    msg.header.ifindex = index;
    msg.header.state = NeighbourState::Permanent;
    msg.header.kind = RouteType::Unspec;
    msg.attributes.push(NeighbourAttribute::Destination(match ip {
        IpAddr::V4(v4) => NeighbourAddress::Inet(v4),
        IpAddr::V6(v6) => NeighbourAddress::Inet6(v6),
    }));
    if let Some(mac) = mac {
        msg.attributes.push(NeighbourAttribute::LinkLayerAddress(mac.octets().to_vec()));
    }
    msg
}

fn fdb_message(index: u32, mac: MacAddr, dst: Option<IpAddr>) -> NeighbourMessage {
    let mut msg = NeighbourMessage::default();
    msg.header.family = AddressFamily::Bridge;
    msg.header.ifindex = index;
    msg.header.state = NeighbourState::Permanent;
    msg.header.flags = NeighbourFlags::Own;
    msg.header.kind = RouteType::Unspec;
    msg.attributes.push(NeighbourAttribute::LinkLayerAddress(mac.octets().to_vec()));
    if let Some(ip) = dst {
        msg.attributes.push(NeighbourAttribute::Destination(match ip {
            IpAddr::V4(v4) => NeighbourAddress::Inet(v4),
            IpAddr::V6(v6) => NeighbourAddress::Inet6(v6),
        }));
    }
    msg
}

impl Netlink {
    /// IP neighbour entries of link `index`, or of every link.
    pub async fn neighbours(&self, index: Option<u32>) -> Result<Vec<Neighbour>> {
        let mut out = Vec::new();
        for family in [AddressFamily::Inet, AddressFamily::Inet6] {
            let found: Vec<Neighbour> = self
                .handle
                .neighbours()
                .get()
                .set_address_family(family)
                .execute()
                .try_filter_map(|msg| futures::future::ok(neighbour_from(&msg)))
                .try_collect()
                .await
                .map_err(|e| NetError::kernel("list", "neighbours", e))?;
            out.extend(found.into_iter().filter(|n| index.is_none_or(|i| n.index == i)));
        }
        Ok(out)
    }

    /// Makes sure link `index` has a permanent neighbour `ip` -> `mac` (add or replace). Returns
    /// true when something changed.
    pub async fn ensure_neighbour(&self, index: u32, ip: IpAddr, mac: MacAddr) -> Result<bool> {
        let current = self.neighbours(Some(index)).await?;
        if current.iter().any(|n| n.ip == ip && n.mac == Some(mac) && n.permanent) {
            return Ok(false);
        }
        self.replace_neighbour(index, ip, mac).await?;
        Ok(true)
    }

    /// Adds or replaces the permanent neighbour `ip` -> `mac` on link `index` without reading
    /// the table first: for callers that write many entries and know they are new.
    pub async fn replace_neighbour(&self, index: u32, ip: IpAddr, mac: MacAddr) -> Result<()> {
        let msg = neighbour_message(index, ip, Some(mac));
        self.request_ack(RouteNetlinkMessage::NewNeighbour(msg), NLM_F_CREATE | NLM_F_REPLACE)
            .await
            .map_err(|e| NetError::kernel("replace neighbour", format!("{ip} on link #{index}"), e))
    }

    /// Deletes neighbour `ip` of link `index`.
    pub async fn delete_neighbour(&self, index: u32, ip: IpAddr) -> Result<()> {
        let msg = neighbour_message(index, ip, None);
        match self.handle.neighbours().del(msg).execute().await {
            Ok(()) => Ok(()),
            Err(e) if errno_of(&e) == nix::errno::Errno::ENOENT as i32 => {
                Err(NetError::NotFound { op: "delete neighbour", object: format!("{ip} on link #{index}") })
            }
            Err(e) => Err(NetError::kernel("delete neighbour", format!("{ip} on link #{index}"), e)),
        }
    }

    /// Bridge FDB entries of link `index`, or of every link.
    pub async fn fdb(&self, index: Option<u32>) -> Result<Vec<FdbEntry>> {
        let found: Vec<FdbEntry> = self
            .handle
            .neighbours()
            .get()
            .set_address_family(AddressFamily::Bridge)
            .execute()
            .try_filter_map(|msg| futures::future::ok(fdb_from(&msg)))
            .try_collect()
            .await
            .map_err(|e| NetError::kernel("list", "fdb entries", e))?;
        Ok(found.into_iter().filter(|f| index.is_none_or(|i| f.index == i)).collect())
    }

    /// Appends a permanent FDB entry `mac` -> `dst` (`bridge fdb append`): a vxlan device may hold
    /// several destinations for one MAC, as the all-zero MAC does for flooding.
    pub async fn fdb_append(&self, index: u32, mac: MacAddr, dst: Option<IpAddr>) -> Result<()> {
        let msg = fdb_message(index, mac, dst);
        self.request_ack(RouteNetlinkMessage::NewNeighbour(msg), NLM_F_CREATE | NLM_F_APPEND)
            .await
            .map_err(|e| NetError::kernel("append fdb entry", format!("{mac} on link #{index}"), e))
    }

    /// Adds or replaces the permanent FDB entry for `mac` (`bridge fdb replace`).
    pub async fn fdb_replace(&self, index: u32, mac: MacAddr, dst: Option<IpAddr>) -> Result<()> {
        let msg = fdb_message(index, mac, dst);
        self.request_ack(RouteNetlinkMessage::NewNeighbour(msg), NLM_F_CREATE | NLM_F_REPLACE)
            .await
            .map_err(|e| NetError::kernel("replace fdb entry", format!("{mac} on link #{index}"), e))
    }

    /// Makes sure link `index` sends `mac` to `dst`. Returns true when something changed.
    pub async fn ensure_fdb(&self, index: u32, mac: MacAddr, dst: Option<IpAddr>) -> Result<bool> {
        let current = self.fdb(Some(index)).await?;
        let present = current.iter().any(|f| f.mac == mac && f.dst == dst && f.self_entry && f.permanent);
        if present {
            return Ok(false);
        }
        self.fdb_replace(index, mac, dst).await.map(|()| true)
    }

    /// Deletes the FDB entry `mac` (-> `dst`, when given) of link `index`.
    pub async fn fdb_delete(&self, index: u32, mac: MacAddr, dst: Option<IpAddr>) -> Result<()> {
        let msg = fdb_message(index, mac, dst);
        match self.handle.neighbours().del(msg).execute().await {
            Ok(()) => Ok(()),
            Err(e) if errno_of(&e) == nix::errno::Errno::ENOENT as i32 => {
                Err(NetError::NotFound { op: "delete fdb entry", object: format!("{mac} on link #{index}") })
            }
            Err(e) => Err(NetError::kernel("delete fdb entry", format!("{mac} on link #{index}"), e)),
        }
    }
}
