//! Why a command was rejected. A rejected command changes nothing.

use weft_ipam::{Cidr, IpamError};

/// Every reason `apply` can refuse a command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    /// The bytes are not a valid encoded command.
    #[error("cannot decode command: {0}")]
    Decode(String),
    /// The command is structurally incomplete (no kind, a missing field).
    #[error("invalid command: {0}")]
    Invalid(String),
    /// A name breaks DNS label rules.
    #[error("invalid {what} name {name:?}: {reason}")]
    InvalidName {
        /// What is being named (node, network, container...).
        what: &'static str,
        /// The name given.
        name: String,
        /// The rule it breaks.
        reason: &'static str,
    },
    /// An address, prefix or other field could not be parsed.
    #[error("invalid {what} {value:?}: {reason}")]
    InvalidValue {
        /// Which field.
        what: &'static str,
        /// The value given.
        value: String,
        /// Why.
        reason: String,
    },
    /// No node has this id.
    #[error("unknown node {0}")]
    UnknownNode(u64),
    /// No network has this name.
    #[error("unknown network {0:?}")]
    UnknownNetwork(String),
    /// No endpoint has this id.
    #[error("unknown endpoint {0}")]
    UnknownEndpoint(u64),
    /// A node with this id already exists.
    #[error("node {0} already exists")]
    NodeExists(u64),
    /// The id belongs to a node that was removed; it is never given out again.
    #[error("node {0} was removed from the cluster; its id is not reused")]
    NodeRevoked(u64),
    /// Another node has this name.
    #[error("node name {name:?} is taken by node {id}")]
    NodeNameTaken {
        /// The name.
        name: String,
        /// Its owner.
        id: u64,
    },
    /// Another node uses this underlay address.
    #[error("underlay address {addr} is used by node {id}")]
    UnderlayTaken {
        /// The address.
        addr: String,
        /// Its owner.
        id: u64,
    },
    /// The node is down; nothing new is placed on it.
    #[error("node {0} is down")]
    NodeDown(u64),
    /// The node is not down, or not down for long enough, to expire its leases.
    #[error("node {node} cannot expire yet: {reason}")]
    NotExpired {
        /// The node.
        node: u64,
        /// Why.
        reason: String,
    },
    /// A network with this name exists.
    #[error("network {0:?} already exists")]
    NetworkExists(String),
    /// The VNI is outside 1..=16777215.
    #[error("VNI {0} is out of range: must be 1..=16777215")]
    VniRange(u32),
    /// Another network uses this VNI.
    #[error("VNI {vni} is used by network {network:?}")]
    VniTaken {
        /// The VNI.
        vni: u32,
        /// Its owner.
        network: String,
    },
    /// Every VNI is in use.
    #[error("no free VNI left")]
    VniExhausted,
    /// A subnet overlaps one of another network.
    #[error("subnet {subnet} overlaps {other} of network {network:?}")]
    SubnetOverlap {
        /// The subnet asked for.
        subnet: Cidr,
        /// The one it overlaps.
        other: Cidr,
        /// The network holding it.
        network: String,
    },
    /// A subnet overlaps a range the host stack reserves (loopback, multicast, link-local...).
    #[error("subnet {subnet} overlaps {range}, which is {what}: a container network cannot use it")]
    SubnetSpecial {
        /// The subnet asked for.
        subnet: Cidr,
        /// The special-use range.
        range: Cidr,
        /// What that range is.
        what: &'static str,
    },
    /// A subnet overlaps the underlay of a node: that host would route its own peers into a
    /// bridge and drop off the cluster.
    #[error(
        "subnet {subnet} overlaps the underlay {underlay} of node {node:?}: that host would lose its route to its peers; pick a subnet outside every host's network"
    )]
    SubnetOnUnderlay {
        /// The subnet (asked for, or of an existing network).
        subnet: Cidr,
        /// The node's underlay subnet.
        underlay: Cidr,
        /// The node's name.
        node: String,
    },
    /// The network still has endpoints.
    #[error("network {name:?} is in use by {endpoints} endpoint(s); disconnect them first")]
    NetworkInUse {
        /// The network.
        name: String,
        /// How many endpoints remain.
        endpoints: usize,
    },
    /// Another endpoint of the network has this name or alias.
    #[error("name {name:?} is already used on network {network:?} by endpoint {endpoint}")]
    EndpointNameTaken {
        /// The network.
        network: String,
        /// The name.
        name: String,
        /// Its owner.
        endpoint: u64,
    },
    /// The container already has an endpoint on the network.
    #[error("container {container:?} is already attached to network {network:?} (endpoint {endpoint})")]
    AlreadyAttached {
        /// The network.
        network: String,
        /// The container.
        container: String,
        /// Its endpoint.
        endpoint: u64,
    },
    /// The requested address lies in a block leased to another node.
    #[error("address {addr} lies in block {block} leased to node {owner}, not node {node}")]
    BlockOfOtherNode {
        /// The address asked for.
        addr: String,
        /// Its block.
        block: Cidr,
        /// The block's holder.
        owner: u64,
        /// The node asking.
        node: u64,
    },
    /// An address-management error.
    #[error(transparent)]
    Ipam(#[from] weft_ipam::IpamError),
}

impl StateError {
    pub(crate) fn value(what: &'static str, value: impl Into<String>, reason: impl ToString) -> StateError {
        StateError::InvalidValue { what, value: value.into(), reason: reason.to_string() }
    }
}

impl From<prost::DecodeError> for StateError {
    fn from(err: prost::DecodeError) -> StateError {
        StateError::Decode(err.to_string())
    }
}

/// Shorthand for results of this crate.
pub type Result<T, E = StateError> = core::result::Result<T, E>;

pub(crate) fn parse_cidr(what: &'static str, s: &str) -> Result<Cidr> {
    s.parse::<Cidr>().map_err(|e: IpamError| StateError::value(what, s, e))
}
