//! The replicated objects as typed values, and their wire form.

use core::fmt;
use core::net::IpAddr;

use weft_ipam::Cidr;
use weft_proto::v1 as pb;

/// A node's id: the same number as its Raft peer id.
pub type NodeId = u64;
/// A network's id, assigned by the state machine.
pub type NetworkId = u64;
/// An endpoint's id, assigned by the state machine.
pub type EndpointId = u64;

/// Whether a node votes in Raft.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Votes and serves the cluster API.
    Manager,
    /// Follows a manager's Watch stream.
    Worker,
}

/// A node's liveness as the leader last recorded it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Status {
    /// Heartbeating.
    Ready,
    /// Missed heartbeats.
    Down,
}

/// What kind of network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Driver {
    /// VXLAN across every host.
    Overlay,
    /// A local bridge on each host.
    Bridge,
}

/// A host of the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// Raft peer id.
    pub id: NodeId,
    /// Host name (DNS label).
    pub name: String,
    /// Underlay address other hosts send VXLAN to.
    pub underlay: IpAddr,
    /// The subnet of the interface that address is on (the address alone when the node did not
    /// say): no network may overlap it, or the host would route its own underlay into a bridge.
    pub underlay_net: Cidr,
    /// Address of its cluster API (`IP:PORT`), empty when it serves none.
    pub api_addr: String,
    /// MTU of its underlay interface (0: unknown); the overlay's MTU follows the smallest.
    pub underlay_mtu: u32,
    /// Manager or worker.
    pub role: Role,
    /// Ready or down.
    pub status: Status,
    /// Proposer's clock (ms since the epoch) when the status last changed.
    pub status_since_ms: u64,
}

/// A network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Network {
    /// Id.
    pub id: NetworkId,
    /// Name (DNS label).
    pub name: String,
    /// Overlay or bridge.
    pub driver: Driver,
    /// At most one subnet per address family.
    pub subnets: Vec<Cidr>,
    /// Block prefix length of each subnet.
    pub block_lens: Vec<u8>,
    /// VXLAN network identifier (0 for bridge networks).
    pub vni: u32,
    /// No masquerading to the outside.
    pub internal: bool,
    /// User labels, sorted by key.
    pub labels: Vec<(String, String)>,
}

/// A block leased to a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockLease {
    /// The network.
    pub network: NetworkId,
    /// The block's prefix.
    pub cidr: Cidr,
    /// The node holding it.
    pub node: NodeId,
    /// Lease generation: grows each time the block is leased again.
    pub generation: u64,
}

/// A container's attachment to a network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Id.
    pub id: EndpointId,
    /// The network.
    pub network: NetworkId,
    /// The node the container runs on.
    pub node: NodeId,
    /// The container's id.
    pub container_id: String,
    /// The container's name on the network (may be empty).
    pub name: String,
    /// More names it answers to on the network.
    pub aliases: Vec<String>,
    /// One address per subnet, in the network's subnet order.
    pub ips: Vec<IpAddr>,
    /// The MAC of its interface.
    pub mac: Mac,
}

/// An endpoint's Ethernet address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Mac(pub [u8; 6]);

impl Mac {
    /// Docker's scheme: 02:42 followed by the IPv4 address, or the last four bytes of the IPv6
    /// address; the same address always gets the same MAC on every host.
    pub fn for_ip(ip: IpAddr) -> Mac {
        let tail = match ip {
            IpAddr::V4(v4) => v4.octets(),
            IpAddr::V6(v6) => {
                let o = v6.octets();
                [o[12], o[13], o[14], o[15]]
            }
        };
        Mac([0x02, 0x42, tail[0], tail[1], tail[2], tail[3]])
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(f, "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", b[0], b[1], b[2], b[3], b[4], b[5])
    }
}

impl Role {
    /// The name users see (`manager`, `worker`).
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Manager => "manager",
            Role::Worker => "worker",
        }
    }

    /// The wire form.
    pub fn to_proto(self) -> pb::NodeRole {
        match self {
            Role::Manager => pb::NodeRole::Manager,
            Role::Worker => pb::NodeRole::Worker,
        }
    }

    pub(crate) fn from_proto(raw: i32) -> Option<Role> {
        match pb::NodeRole::try_from(raw).ok()? {
            pb::NodeRole::Manager => Some(Role::Manager),
            pb::NodeRole::Worker => Some(Role::Worker),
            pb::NodeRole::Unspecified => None,
        }
    }
}

impl Status {
    /// The wire form.
    pub fn to_proto(self) -> pb::NodeStatus {
        match self {
            Status::Ready => pb::NodeStatus::Ready,
            Status::Down => pb::NodeStatus::Down,
        }
    }

    pub(crate) fn from_proto(raw: i32) -> Option<Status> {
        match pb::NodeStatus::try_from(raw).ok()? {
            pb::NodeStatus::Ready => Some(Status::Ready),
            pb::NodeStatus::Down => Some(Status::Down),
            pb::NodeStatus::Unspecified => None,
        }
    }
}

impl Driver {
    /// The wire form.
    pub fn to_proto(self) -> pb::NetworkDriver {
        match self {
            Driver::Overlay => pb::NetworkDriver::Overlay,
            Driver::Bridge => pb::NetworkDriver::Bridge,
        }
    }

    pub(crate) fn from_proto(raw: i32) -> Option<Driver> {
        match pb::NetworkDriver::try_from(raw).ok()? {
            pb::NetworkDriver::Overlay | pb::NetworkDriver::Unspecified => Some(Driver::Overlay),
            pb::NetworkDriver::Bridge => Some(Driver::Bridge),
        }
    }
}

impl Node {
    /// The wire form.
    pub fn to_proto(&self) -> pb::Node {
        pb::Node {
            id: self.id,
            name: self.name.clone(),
            underlay_addr: self.underlay.to_string(),
            role: self.role.to_proto() as i32,
            status: self.status.to_proto() as i32,
            status_since_ms: self.status_since_ms,
            api_addr: self.api_addr.clone(),
            underlay_prefix_len: u32::from(self.underlay_net.prefix_len()),
            underlay_mtu: self.underlay_mtu,
        }
    }
}

/// The underlay subnet of a node at `underlay` with prefix length `len` (0 or out of range: the
/// address alone).
pub(crate) fn underlay_net(underlay: IpAddr, len: u32) -> Cidr {
    let full = weft_ipam::Family::of(underlay).bits();
    let len = u8::try_from(len).ok().filter(|l| *l > 0 && *l <= full).unwrap_or(full);
    match Cidr::new(underlay, len) {
        Ok(cidr) => cidr.network(),
        // Unreachable (the length is within the family), but apply must never panic.
        Err(_) => Cidr::new(underlay, full).unwrap_or_else(|_| unreachable!("full length of its family")),
    }
}

impl Network {
    /// The wire form.
    pub fn to_proto(&self) -> pb::Network {
        pb::Network {
            id: self.id,
            name: self.name.clone(),
            driver: self.driver.to_proto() as i32,
            subnets: self.subnets.iter().map(|s| s.to_string()).collect(),
            vni: self.vni,
            block_lens: self.block_lens.iter().map(|l| u32::from(*l)).collect(),
            internal: self.internal,
            labels: self.labels.iter().map(|(k, v)| pb::Label { key: k.clone(), value: v.clone() }).collect(),
        }
    }
}

impl BlockLease {
    /// The wire form.
    pub fn to_proto(&self) -> pb::Block {
        pb::Block {
            network_id: self.network,
            cidr: self.cidr.to_string(),
            node_id: self.node,
            generation: self.generation,
        }
    }
}

impl Endpoint {
    /// The wire form.
    pub fn to_proto(&self) -> pb::Endpoint {
        pb::Endpoint {
            id: self.id,
            network_id: self.network,
            node_id: self.node,
            container_id: self.container_id.clone(),
            name: self.name.clone(),
            aliases: self.aliases.clone(),
            ips: self.ips.iter().map(|ip| ip.to_string()).collect(),
            mac: self.mac.to_string(),
        }
    }
}

/// What an accepted command produced for its caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A node was registered or changed.
    Node(Node),
    /// A network was created.
    Network(Network),
    /// An endpoint was allocated.
    Endpoint(Endpoint),
    /// Nothing beyond the events (removals, releases).
    Done,
}

impl Outcome {
    /// The wire form.
    pub fn to_proto(&self) -> pb::Outcome {
        let kind = match self {
            Outcome::Node(n) => pb::outcome::Kind::Node(n.to_proto()),
            Outcome::Network(n) => pb::outcome::Kind::Network(n.to_proto()),
            Outcome::Endpoint(e) => pb::outcome::Kind::Endpoint(e.to_proto()),
            Outcome::Done => pb::outcome::Kind::Done(pb::Done {}),
        };
        pb::Outcome { kind: Some(kind) }
    }
}
