//! Constructors for [`pb::Command`]s, so callers (agent, CLI, tests, benchmarks) need not spell
//! out the oneof nesting.

use crate::pb::{self, command::Kind};
use crate::{Driver, Role, Status};

fn wrap(kind: Kind) -> pb::Command {
    pb::Command { kind: Some(kind) }
}

/// Registers a node.
pub fn register_node(id: u64, name: &str, underlay: &str, role: Role, now_ms: u64) -> pb::Command {
    wrap(Kind::RegisterNode(pb::RegisterNode {
        id,
        name: name.into(),
        underlay_addr: underlay.into(),
        role: role.to_proto() as i32,
        now_ms,
        api_addr: String::new(),
        underlay_prefix_len: 0,
        underlay_mtu: 0,
    }))
}

/// `command` (a RegisterNode) with the node's underlay MTU (0: unknown); other commands as they
/// are.
pub fn with_underlay_mtu(mut command: pb::Command, underlay_mtu: u32) -> pb::Command {
    if let Some(Kind::RegisterNode(r)) = command.kind.as_mut() {
        r.underlay_mtu = underlay_mtu;
    }
    command
}

/// Registers an agent's node: its cluster API at `api_addr`, its underlay interface's subnet
/// prefix length (0: unknown).
pub fn register_agent(
    id: u64,
    name: &str,
    underlay: &str,
    underlay_prefix_len: u32,
    api_addr: &str,
    role: Role,
    now_ms: u64,
) -> pb::Command {
    let mut command = register_node_with_api(id, name, underlay, api_addr, role, now_ms);
    if let Some(Kind::RegisterNode(r)) = command.kind.as_mut() {
        r.underlay_prefix_len = underlay_prefix_len;
    }
    command
}

/// Registers a node that serves the cluster API at `api_addr` (agents do; tests of the pure state
/// need not).
pub fn register_node_with_api(
    id: u64,
    name: &str,
    underlay: &str,
    api_addr: &str,
    role: Role,
    now_ms: u64,
) -> pb::Command {
    let mut command = register_node(id, name, underlay, role, now_ms);
    if let Some(Kind::RegisterNode(r)) = command.kind.as_mut() {
        r.api_addr = api_addr.into();
    }
    command
}

/// Records a node's liveness transition.
pub fn set_node_status(node_id: u64, status: Status, now_ms: u64) -> pb::Command {
    wrap(Kind::SetNodeStatus(pb::SetNodeStatus { node_id, status: status.to_proto() as i32, now_ms }))
}

/// Promotes or demotes a node.
pub fn set_node_role(node_id: u64, role: Role) -> pb::Command {
    wrap(Kind::SetNodeRole(pb::SetNodeRole { node_id, role: role.to_proto() as i32 }))
}

/// Removes a node and everything it holds.
pub fn remove_node(node_id: u64) -> pb::Command {
    wrap(Kind::RemoveNode(pb::RemoveNode { node_id }))
}

/// Releases the leases of a node down for at least `ttl_ms` at `now_ms`.
pub fn expire_node(node_id: u64, now_ms: u64, ttl_ms: u64) -> pb::Command {
    wrap(Kind::ExpireNode(pb::ExpireNode { node_id, now_ms, ttl_ms }))
}

/// Creates a network (VNI 0: pick one; block_len 0: the default).
pub fn create_network(name: &str, driver: Driver, subnets: &[&str], vni: u32, block_len: u32) -> pb::Command {
    wrap(Kind::CreateNetwork(pb::CreateNetwork {
        name: name.into(),
        driver: driver.to_proto() as i32,
        subnets: subnets.iter().map(|s| s.to_string()).collect(),
        vni,
        block_len,
        internal: false,
        labels: Vec::new(),
    }))
}

/// Deletes a network.
pub fn delete_network(name: &str) -> pb::Command {
    wrap(Kind::DeleteNetwork(pb::DeleteNetwork { name: name.into() }))
}

/// Allocates an endpoint (`requested_ip` empty: the lowest free address).
pub fn allocate_endpoint(
    network: &str,
    node_id: u64,
    container_id: &str,
    name: &str,
    requested_ip: &str,
) -> pb::Command {
    wrap(Kind::AllocateEndpoint(pb::AllocateEndpoint {
        network: network.into(),
        node_id,
        container_id: container_id.into(),
        name: name.into(),
        aliases: Vec::new(),
        requested_ip: requested_ip.into(),
    }))
}

/// Releases an endpoint.
pub fn release_endpoint(endpoint_id: u64) -> pb::Command {
    wrap(Kind::ReleaseEndpoint(pb::ReleaseEndpoint { endpoint_id }))
}

/// Rotates the join token of `role`.
pub fn rotate_join_token(role: Role) -> pb::Command {
    wrap(Kind::RotateJoinToken(pb::RotateJoinToken { role: role.to_proto() as i32 }))
}
