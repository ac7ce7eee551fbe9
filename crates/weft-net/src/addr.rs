//! Interface addresses.

use std::net::IpAddr;

use futures::TryStreamExt;
use netlink_packet_route::address::{AddressAttribute, AddressHeaderFlags, AddressMessage};

use crate::error::errno_of;
use crate::{Cidr, NetError, Netlink, Result};

/// An address assigned to an interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct IfAddress {
    /// Interface index.
    pub index: u32,
    /// Address and prefix length.
    pub cidr: Cidr,
}

fn from_message(msg: &AddressMessage) -> Option<IfAddress> {
    let mut address = None;
    let mut local = None;
    for attr in &msg.attributes {
        match attr {
            AddressAttribute::Address(ip) => address = Some(*ip),
            AddressAttribute::Local(ip) => local = Some(*ip),
            _ => {}
        }
    }
    // For IPv4, IFA_LOCAL is the interface's own address (IFA_ADDRESS is the peer on
    // point-to-point links); IPv6 only sends IFA_ADDRESS.
    let ip = local.or(address)?;
    let cidr = Cidr::new(ip, msg.header.prefix_len).ok()?;
    Some(IfAddress { index: msg.header.index, cidr })
}

fn check_assignable(cidr: Cidr) -> Result<()> {
    let ip = cidr.addr();
    if ip.is_unspecified() || ip.is_multicast() {
        return Err(NetError::invalid(
            "interface address",
            cidr,
            "unspecified and multicast addresses cannot be assigned",
        ));
    }
    if let IpAddr::V4(v4) = ip
        && v4.is_broadcast()
    {
        return Err(NetError::invalid("interface address", cidr, "the broadcast address cannot be assigned"));
    }
    Ok(())
}

impl Netlink {
    /// The addresses of link `index`, or of every link.
    pub async fn addresses(&self, index: Option<u32>) -> Result<Vec<IfAddress>> {
        let mut request = self.handle.address().get();
        if let Some(index) = index {
            request = request.set_link_index_filter(index);
        }
        let mut out: Vec<IfAddress> = request
            .execute()
            .try_filter_map(|msg| futures::future::ok(from_message(&msg)))
            .try_collect()
            .await
            .map_err(|e| NetError::kernel("list", "addresses", e))?;
        if let Some(index) = index {
            out.retain(|a| a.index == index);
        }
        Ok(out)
    }

    /// Adds `cidr` to link `index`; fails if it is already there. IPv6 addresses are added
    /// without duplicate address detection (`nodad`, as Docker does): weft's addresses are unique
    /// by its IPAM, and DAD would only keep them tentative, unusable, for a second or two.
    pub async fn add_address(&self, index: u32, cidr: Cidr) -> Result<()> {
        check_assignable(cidr)?;
        let mut request = self.handle.address().add(index, cidr.addr(), cidr.prefix_len());
        if cidr.addr().is_ipv6() {
            request.message_mut().header.flags |= AddressHeaderFlags::Nodad;
        }
        request
            .execute()
            .await
            .map_err(|e| NetError::kernel("add address", format!("{cidr} on link #{index}"), e))
    }

    /// Makes sure link `index` has `cidr`; an address with the same IP but another prefix length
    /// is replaced. Returns true when something changed.
    pub async fn ensure_address(&self, index: u32, cidr: Cidr) -> Result<bool> {
        check_assignable(cidr)?;
        let current = self.addresses(Some(index)).await?;
        if current.iter().any(|a| a.cidr == cidr) {
            return Ok(false);
        }
        for stale in current.iter().filter(|a| a.cidr.addr() == cidr.addr()) {
            self.delete_address(index, stale.cidr).await?;
        }
        match self.add_address(index, cidr).await {
            Err(e) if e.errno() == Some(nix::errno::Errno::EEXIST as i32) => Ok(false),
            other => other.map(|()| true),
        }
    }

    /// Removes `cidr` from link `index`.
    pub async fn delete_address(&self, index: u32, cidr: Cidr) -> Result<()> {
        let mut msg = AddressMessage::default();
        msg.header.family = match cidr.addr() {
            IpAddr::V4(_) => netlink_packet_route::AddressFamily::Inet,
            IpAddr::V6(_) => netlink_packet_route::AddressFamily::Inet6,
        };
        msg.header.index = index;
        msg.header.prefix_len = cidr.prefix_len();
        msg.attributes.push(AddressAttribute::Local(cidr.addr()));
        msg.attributes.push(AddressAttribute::Address(cidr.addr()));
        match self.handle.address().del(msg).execute().await {
            Ok(()) => Ok(()),
            Err(e) if errno_of(&e) == nix::errno::Errno::EADDRNOTAVAIL as i32 => {
                Err(NetError::NotFound { op: "delete address", object: format!("{cidr} on link #{index}") })
            }
            Err(e) => Err(NetError::kernel("delete address", format!("{cidr} on link #{index}"), e)),
        }
    }
}
