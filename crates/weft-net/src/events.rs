//! Kernel change notifications (`ip monitor`), so a reconciler can repair drift at once instead of
//! waiting for its next resync.

use futures::channel::mpsc::UnboundedReceiver;
use futures::{Stream, StreamExt};
use netlink_packet_core::{NetlinkMessage, NetlinkPayload};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::link::LinkAttribute;
use rtnetlink::MulticastGroup;

use crate::{NetError, Result};

/// Something changed in the namespace's network configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KernelEvent {
    /// A link was created or changed (state, MTU, master, address...).
    LinkChanged {
        /// Interface index.
        index: u32,
        /// Interface name.
        name: String,
    },
    /// A link was deleted.
    LinkRemoved {
        /// Interface index it had.
        index: u32,
        /// Interface name it had.
        name: String,
    },
    /// An address was added or removed on link `index`.
    AddressChanged {
        /// Interface index.
        index: u32,
    },
    /// A route was added or removed.
    RouteChanged {
        /// Its output interface, if any.
        dev: Option<u32>,
    },
    /// A neighbour or FDB entry was added, changed or removed on link `index`.
    NeighbourChanged {
        /// Interface index.
        index: u32,
    },
}

fn link_name(attrs: &[LinkAttribute]) -> String {
    attrs
        .iter()
        .find_map(|a| if let LinkAttribute::IfName(n) = a { Some(n.clone()) } else { None })
        .unwrap_or_default()
}

fn translate(msg: NetlinkMessage<RouteNetlinkMessage>) -> Option<KernelEvent> {
    let NetlinkPayload::InnerMessage(inner) = msg.payload else { return None };
    Some(match inner {
        RouteNetlinkMessage::NewLink(l) => {
            KernelEvent::LinkChanged { index: l.header.index, name: link_name(&l.attributes) }
        }
        RouteNetlinkMessage::DelLink(l) => {
            KernelEvent::LinkRemoved { index: l.header.index, name: link_name(&l.attributes) }
        }
        RouteNetlinkMessage::NewAddress(a) | RouteNetlinkMessage::DelAddress(a) => {
            KernelEvent::AddressChanged { index: a.header.index }
        }
        RouteNetlinkMessage::NewRoute(r) | RouteNetlinkMessage::DelRoute(r) => {
            let dev = r.attributes.iter().find_map(|a| match a {
                netlink_packet_route::route::RouteAttribute::Oif(i) => Some(*i),
                _ => None,
            });
            KernelEvent::RouteChanged { dev }
        }
        RouteNetlinkMessage::NewNeighbour(n) | RouteNetlinkMessage::DelNeighbour(n) => {
            KernelEvent::NeighbourChanged { index: n.header.ifindex }
        }
        _ => return None,
    })
}

/// Subscribes to link, address, route and neighbour changes of the calling thread's namespace.
/// Must run inside a tokio runtime, which drives the socket; the stream ends if it breaks.
pub fn subscribe() -> Result<impl Stream<Item = KernelEvent> + Unpin> {
    let groups = [
        MulticastGroup::Link,
        MulticastGroup::Ipv4Ifaddr,
        MulticastGroup::Ipv6Ifaddr,
        MulticastGroup::Ipv4Route,
        MulticastGroup::Ipv6Route,
        MulticastGroup::Neigh,
    ];
    let (connection, _handle, messages) = rtnetlink::new_multicast_connection(&groups).map_err(|source| {
        NetError::Netns { ns: "current".into(), op: "subscribe to netlink events", source }
    })?;
    tokio::spawn(connection);
    let messages: UnboundedReceiver<_> = messages;
    Ok(messages.filter_map(|(msg, _)| futures::future::ready(translate(msg))))
}
