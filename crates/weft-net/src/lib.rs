//! weft-net is the only crate that talks to the kernel's network stack: network namespaces,
//! links (bridge, veth, vxlan), addresses, routes, permanent neighbours, bridge FDB entries and
//! sysctls, over rtnetlink.
//!
//! It must never decide what the network should look like (that is weft-overlay's job) and never
//! flush or touch objects it was not asked about. Every `ensure_*` call is idempotent: an object
//! that already has the wanted attributes is left alone, one with wrong attributes is corrected,
//! and "already exists" is never an error. Input is validated before anything is sent.

mod addr;
mod error;
pub mod events;
mod link;
mod mac;
mod neigh;
mod netns;
pub mod nft_events;
pub mod probe;
mod route;
pub mod sysctl;
pub mod validate;

pub use addr::IfAddress;
pub use error::{KernelError, NetError, Result};
pub use link::{BridgeSpec, Link, LinkKind, VXLAN_PORT, VethSpec, VxlanInfo, VxlanSpec};
pub use mac::MacAddr;
pub use neigh::{FdbEntry, Neighbour};
pub use netns::{NETNS_RUN_DIR, NetNs, NetnsWorker};
pub use route::{Route, RouteSpec};
pub use weft_ipam::Cidr;

use futures::StreamExt;
use netlink_packet_core::{NLM_F_ACK, NLM_F_REQUEST, NetlinkMessage, NetlinkPayload};
use netlink_packet_route::RouteNetlinkMessage;

/// A netlink connection to the network namespace it was opened in.
///
/// Cheap to clone; every clone shares the connection. It stays bound to the namespace of the
/// thread that called [`Netlink::connect`], wherever it is used afterwards.
#[derive(Debug, Clone)]
pub struct Netlink {
    handle: rtnetlink::Handle,
}

impl Netlink {
    /// Opens a connection in the calling thread's network namespace. Must run inside a tokio
    /// runtime, which drives the connection.
    pub fn connect() -> Result<Netlink> {
        let (connection, handle, _) = rtnetlink::new_connection().map_err(|source| NetError::Netns {
            ns: "current".into(),
            op: "open netlink socket",
            source,
        })?;
        tokio::spawn(connection);
        Ok(Netlink { handle })
    }

    /// The underlying rtnetlink handle, for requests this crate does not wrap.
    pub fn handle(&self) -> &rtnetlink::Handle {
        &self.handle
    }

    /// Sends `message` with `flags` (plus REQUEST and ACK) and waits for the kernel's answer.
    async fn request_ack(&self, message: RouteNetlinkMessage, flags: u16) -> Result<(), rtnetlink::Error> {
        let mut request = NetlinkMessage::from(message);
        request.header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
        let mut handle = self.handle.clone();
        let mut replies = handle.request(request)?;
        while let Some(reply) = replies.next().await {
            if let NetlinkPayload::Error(err) = reply.payload
                && err.code.is_some()
            {
                return Err(rtnetlink::Error::NetlinkError(err));
            }
        }
        Ok(())
    }
}
