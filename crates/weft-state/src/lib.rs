//! weft-state is the replicated state machine: nodes, networks, per-host address blocks and
//! endpoints, the commands that change them, one deterministic `apply`, and snapshots.
//!
//! It must never do I/O, read a clock or draw a random number: every host applies the same
//! commands in the same order and must reach byte-identical state. Time enters only as a field of a
//! command, stamped by its proposer.

pub mod cmd;
mod error;
mod mirror;
mod model;
pub mod names;
mod pools;
mod snapshot;

pub use error::{Result, StateError};
pub use mirror::{Mirror, MirrorError};
pub use model::{
    BlockLease, Driver, Endpoint, EndpointId, Mac, Network, NetworkId, Node, NodeId, Outcome, Role, Status,
};
pub use weft_proto::v1 as pb;

use core::net::IpAddr;
use std::collections::BTreeSet;

use imbl::{OrdMap, OrdSet};

use prost::Message;
use weft_ipam::{BlockPool, Cidr, IndexAllocator, default_block_len};

use error::parse_cidr;
use pools::{Plan, PoolState};

/// The largest VNI.
pub const MAX_VNI: u32 = 0x00FF_FFFF;

/// A network with its address pools and name indexes.
#[derive(Debug, Clone)]
struct NetworkState {
    network: Network,
    pools: Vec<PoolState>,
    /// Lower-cased container names of its endpoints: unique on the network.
    names: OrdMap<String, EndpointId>,
    /// Lower-cased aliases: any number of endpoints may share one (Compose's `--scale`, DNS
    /// round robin).
    aliases: OrdMap<String, OrdSet<EndpointId>>,
    containers: OrdMap<String, EndpointId>,
    endpoints: OrdSet<EndpointId>,
}

/// The name keys of one endpoint: its container name (unique on the network) and its aliases
/// (shared freely).
#[derive(Debug, Default)]
struct EndpointKeys {
    name: Option<String>,
    aliases: BTreeSet<String>,
}

/// Checks an endpoint's name and aliases on `net`: valid DNS labels; the name is no other
/// endpoint's name or alias (it stays its own); an alias is no other container's name, and may
/// be shared with any number of endpoints.
fn endpoint_keys(net: &NetworkState, name: &str, aliases: &[String]) -> Result<EndpointKeys> {
    let taken = |name: &str, owner: EndpointId| StateError::EndpointNameTaken {
        network: net.network.name.clone(),
        name: name.to_string(),
        endpoint: owner,
    };
    let mut keys = EndpointKeys::default();
    if !name.is_empty() {
        names::resolvable_name("container", name)?;
        let key = names::key(name);
        if let Some(owner) = net.names.get(&key) {
            return Err(taken(name, *owner));
        }
        if let Some(owner) = net.aliases.get(&key).and_then(|ids| ids.iter().next()) {
            return Err(taken(name, *owner));
        }
        keys.name = Some(key);
    }
    for alias in aliases {
        names::resolvable_name("container", alias)?;
        let key = names::key(alias);
        if let Some(owner) = net.names.get(&key) {
            return Err(taken(alias, *owner));
        }
        if keys.name.as_ref() != Some(&key) {
            keys.aliases.insert(key);
        }
    }
    Ok(keys)
}

/// The result of an accepted command.
#[derive(Debug, Clone, PartialEq)]
pub struct Applied {
    /// The state's revision after the command.
    pub revision: u64,
    /// What the caller asked for.
    pub outcome: Outcome,
    /// Every change, in order, for Watch streams.
    pub events: Vec<pb::Event>,
}

/// The whole replicated state.
#[derive(Debug, Clone)]
pub struct State {
    revision: u64,
    nodes: OrdMap<NodeId, Node>,
    node_names: OrdMap<String, NodeId>,
    underlays: OrdMap<IpAddr, NodeId>,
    networks: OrdMap<NetworkId, NetworkState>,
    network_names: OrdMap<String, NetworkId>,
    vnis: IndexAllocator,
    vni_owner: OrdMap<u32, NetworkId>,
    endpoints: OrdMap<EndpointId, Endpoint>,
    node_endpoints: OrdMap<NodeId, OrdSet<EndpointId>>,
    next_network_id: NetworkId,
    next_endpoint_id: EndpointId,
    /// Nodes removed from the cluster, whose certificates every manager refuses from then on.
    revoked: OrdSet<NodeId>,
    /// How often each join token was rotated: (worker, manager).
    token_generations: (u64, u64),
}

impl Default for State {
    fn default() -> State {
        State::new()
    }
}

/// Collects the events of one command, all at the command's revision.
struct Events {
    revision: u64,
    list: Vec<pb::Event>,
}

impl Events {
    fn push(&mut self, kind: pb::event::Kind) {
        self.list.push(pb::Event { revision: self.revision, kind: Some(kind) });
    }
}

impl State {
    /// An empty state at revision 0.
    pub fn new() -> State {
        State {
            revision: 0,
            nodes: OrdMap::new(),
            node_names: OrdMap::new(),
            underlays: OrdMap::new(),
            networks: OrdMap::new(),
            network_names: OrdMap::new(),
            vnis: IndexAllocator::new(u128::from(MAX_VNI)),
            vni_owner: OrdMap::new(),
            endpoints: OrdMap::new(),
            node_endpoints: OrdMap::new(),
            next_network_id: 1,
            next_endpoint_id: 1,
            revoked: OrdSet::new(),
            token_generations: (0, 0),
        }
    }

    /// True when node `id` was removed from the cluster: its certificate no longer counts.
    pub fn is_revoked(&self, id: NodeId) -> bool {
        self.revoked.contains(&id)
    }

    /// The removed nodes.
    pub fn revoked(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.revoked.iter().copied()
    }

    /// The generation of `role`'s join token: tokens of an older generation are refused.
    pub fn token_generation(&self, role: Role) -> u64 {
        match role {
            Role::Worker => self.token_generations.0,
            Role::Manager => self.token_generations.1,
        }
    }

    /// The revision: the number of accepted commands.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// Every node, by id.
    pub fn nodes(&self) -> impl Iterator<Item = &Node> {
        self.nodes.values()
    }

    /// One node.
    pub fn node(&self, id: NodeId) -> Option<&Node> {
        self.nodes.get(&id)
    }

    /// Every network, by id.
    pub fn networks(&self) -> impl Iterator<Item = &Network> {
        self.networks.values().map(|n| &n.network)
    }

    /// A network by name.
    pub fn network(&self, name: &str) -> Option<&Network> {
        let id = self.network_names.get(&names::key(name))?;
        self.networks.get(id).map(|n| &n.network)
    }

    /// A network by id.
    pub fn network_by_id(&self, id: NetworkId) -> Option<&Network> {
        self.networks.get(&id).map(|n| &n.network)
    }

    /// Every leased block of a network, per subnet in order, by block index.
    pub fn blocks(&self, network: NetworkId) -> Vec<BlockLease> {
        let Some(net) = self.networks.get(&network) else { return Vec::new() };
        net.pools
            .iter()
            .flat_map(|pool| {
                pool.blocks.values().map(move |b| BlockLease {
                    network,
                    cidr: b.addrs.cidr(),
                    node: b.node,
                    generation: b.generation,
                })
            })
            .collect()
    }

    /// Every endpoint, by id.
    pub fn endpoints(&self) -> impl Iterator<Item = &Endpoint> {
        self.endpoints.values()
    }

    /// One endpoint.
    pub fn endpoint(&self, id: EndpointId) -> Option<&Endpoint> {
        self.endpoints.get(&id)
    }

    /// The endpoints of one network.
    pub fn network_endpoints(&self, network: NetworkId) -> impl Iterator<Item = &Endpoint> {
        self.networks
            .get(&network)
            .into_iter()
            .flat_map(|n| n.endpoints.iter())
            .filter_map(|id| self.endpoints.get(id))
    }

    /// The address counts of each subnet of `network`, in its subnet order, every subnet paired
    /// with its own block length (a missing one: the subnet is its own single block); an address
    /// is used when an endpoint of the network holds it.
    pub fn network_addresses(&self, network: &Network) -> Vec<weft_ipam::SubnetAddresses> {
        let subnets =
            network.subnets.iter().enumerate().map(|(i, subnet)| {
                (*subnet, network.block_lens.get(i).copied().unwrap_or(subnet.prefix_len()))
            });
        let assigned = self.network_endpoints(network.id).flat_map(|e| e.ips.iter().copied());
        weft_ipam::subnet_addresses(subnets, assigned)
    }

    /// The endpoint answering to `name` (a name or alias, any case) on a network.
    pub fn resolve(&self, network: NetworkId, name: &str) -> Option<&Endpoint> {
        let net = self.networks.get(&network)?;
        let key = names::key(name);
        let id = net.names.get(&key).or_else(|| net.aliases.get(&key).and_then(|ids| ids.iter().next()))?;
        self.endpoints.get(id)
    }

    /// Decodes a prost-encoded [`pb::Command`] and applies it.
    pub fn apply_bytes(&mut self, bytes: &[u8]) -> Result<Applied> {
        let command = pb::Command::decode(bytes)?;
        self.apply(&command)
    }

    /// Applies one command. Total and deterministic: the same commands in the same order give the
    /// same state and answers everywhere. A rejected command changes nothing; an accepted one bumps
    /// the revision by one and returns its outcome and events.
    pub fn apply(&mut self, command: &pb::Command) -> Result<Applied> {
        use pb::command::Kind;
        let kind = command.kind.as_ref().ok_or_else(|| StateError::Invalid("command has no kind".into()))?;
        let mut events = Events { revision: self.revision + 1, list: Vec::new() };
        let outcome = match kind {
            Kind::RegisterNode(c) => self.register_node(c, &mut events)?,
            Kind::SetNodeStatus(c) => self.set_node_status(c, &mut events)?,
            Kind::SetNodeRole(c) => self.set_node_role(c, &mut events)?,
            Kind::RemoveNode(c) => self.remove_node(c.node_id, &mut events)?,
            Kind::ExpireNode(c) => self.expire_node(c, &mut events)?,
            Kind::CreateNetwork(c) => self.create_network(c, &mut events)?,
            Kind::DeleteNetwork(c) => self.delete_network(&c.name, &mut events)?,
            Kind::AllocateEndpoint(c) => self.allocate_endpoint(c, &mut events)?,
            Kind::ReleaseEndpoint(c) => self.release_endpoint(c.endpoint_id, &mut events)?,
            Kind::RotateJoinToken(c) => self.rotate_join_token(c)?,
        };
        self.revision += 1;
        Ok(Applied { revision: self.revision, outcome, events: events.list })
    }

    fn register_node(&mut self, c: &pb::RegisterNode, ev: &mut Events) -> Result<Outcome> {
        if c.id == 0 {
            return Err(StateError::Invalid("node id 0 is reserved".into()));
        }
        if self.nodes.contains_key(&c.id) {
            return Err(StateError::NodeExists(c.id));
        }
        if self.revoked.contains(&c.id) {
            return Err(StateError::NodeRevoked(c.id));
        }
        names::dns_label("node", &c.name)?;
        if let Some(id) = self.node_names.get(&names::key(&c.name)) {
            return Err(StateError::NodeNameTaken { name: c.name.clone(), id: *id });
        }
        let underlay: IpAddr = c
            .underlay_addr
            .parse()
            .map_err(|_| StateError::value("underlay address", &c.underlay_addr, "not an IP address"))?;
        if underlay.is_unspecified() || underlay.is_multicast() || underlay.is_loopback() {
            return Err(StateError::value(
                "underlay address",
                &c.underlay_addr,
                "must be a unicast host address",
            ));
        }
        if let Some(id) = self.underlays.get(&underlay) {
            return Err(StateError::UnderlayTaken { addr: underlay.to_string(), id: *id });
        }
        let role = Role::from_proto(c.role)
            .ok_or_else(|| StateError::value("node role", c.role.to_string(), "must be manager or worker"))?;
        let underlay_net = model::underlay_net(underlay, c.underlay_prefix_len);
        if let Some(subnet) =
            self.networks.values().flat_map(|n| n.network.subnets.iter()).find(|s| s.overlaps(&underlay_net))
        {
            return Err(StateError::SubnetOnUnderlay {
                subnet: *subnet,
                underlay: underlay_net,
                node: c.name.clone(),
            });
        }
        if !c.api_addr.is_empty() && c.api_addr.parse::<core::net::SocketAddr>().is_err() {
            return Err(StateError::value("API address", &c.api_addr, "must be IP:PORT"));
        }
        let node = Node {
            id: c.id,
            name: c.name.clone(),
            underlay,
            underlay_net,
            api_addr: c.api_addr.clone(),
            underlay_mtu: c.underlay_mtu,
            role,
            status: Status::Ready,
            status_since_ms: c.now_ms,
        };
        self.node_names.insert(names::key(&node.name), node.id);
        self.underlays.insert(underlay, node.id);
        self.nodes.insert(node.id, node.clone());
        ev.push(pb::event::Kind::NodePut(node.to_proto()));
        Ok(Outcome::Node(node))
    }

    fn set_node_status(&mut self, c: &pb::SetNodeStatus, ev: &mut Events) -> Result<Outcome> {
        let status = Status::from_proto(c.status)
            .ok_or_else(|| StateError::value("node status", c.status.to_string(), "must be ready or down"))?;
        let node = self.nodes.get_mut(&c.node_id).ok_or(StateError::UnknownNode(c.node_id))?;
        if node.status != status {
            node.status = status;
            node.status_since_ms = c.now_ms;
        }
        let node = node.clone();
        ev.push(pb::event::Kind::NodePut(node.to_proto()));
        Ok(Outcome::Node(node))
    }

    fn set_node_role(&mut self, c: &pb::SetNodeRole, ev: &mut Events) -> Result<Outcome> {
        let role = Role::from_proto(c.role)
            .ok_or_else(|| StateError::value("node role", c.role.to_string(), "must be manager or worker"))?;
        let node = self.nodes.get_mut(&c.node_id).ok_or(StateError::UnknownNode(c.node_id))?;
        node.role = role;
        let node = node.clone();
        ev.push(pb::event::Kind::NodePut(node.to_proto()));
        Ok(Outcome::Node(node))
    }

    /// Releases every endpoint and block of `node`, emitting the events.
    fn release_node_leases(&mut self, node: NodeId, ev: &mut Events) {
        for id in self.node_endpoints.remove(&node).unwrap_or_default() {
            self.drop_endpoint(id, ev);
        }
        let network_ids: Vec<NetworkId> = self.networks.keys().copied().collect();
        for network_id in network_ids {
            let Some(net) = self.networks.get_mut(&network_id) else { continue };
            for pool in &mut net.pools {
                for (cidr, generation) in pool.release_node(node) {
                    let lease = BlockLease { network: network_id, cidr, node, generation };
                    ev.push(pb::event::Kind::BlockDeleted(lease.to_proto()));
                }
            }
        }
    }

    fn remove_node(&mut self, id: NodeId, ev: &mut Events) -> Result<Outcome> {
        let node = self.nodes.get(&id).ok_or(StateError::UnknownNode(id))?.clone();
        self.release_node_leases(id, ev);
        self.nodes.remove(&id);
        self.node_names.remove(&names::key(&node.name));
        self.underlays.remove(&node.underlay);
        self.revoked.insert(id);
        ev.push(pb::event::Kind::NodeDeleted(id));
        Ok(Outcome::Done)
    }

    fn rotate_join_token(&mut self, c: &pb::RotateJoinToken) -> Result<Outcome> {
        let role = Role::from_proto(c.role).ok_or_else(|| {
            StateError::value("token role", c.role.to_string(), "must be manager or worker")
        })?;
        match role {
            Role::Worker => self.token_generations.0 += 1,
            Role::Manager => self.token_generations.1 += 1,
        }
        Ok(Outcome::Done)
    }

    fn expire_node(&mut self, c: &pb::ExpireNode, ev: &mut Events) -> Result<Outcome> {
        let node = self.nodes.get(&c.node_id).ok_or(StateError::UnknownNode(c.node_id))?;
        if node.status != Status::Down {
            return Err(StateError::NotExpired { node: c.node_id, reason: "it is not down".into() });
        }
        let due = node.status_since_ms.saturating_add(c.ttl_ms);
        if c.now_ms < due {
            return Err(StateError::NotExpired {
                node: c.node_id,
                reason: format!(
                    "down for {} ms of a {} ms lease",
                    c.now_ms.saturating_sub(node.status_since_ms),
                    c.ttl_ms
                ),
            });
        }
        self.release_node_leases(c.node_id, ev);
        Ok(Outcome::Done)
    }

    fn create_network(&mut self, c: &pb::CreateNetwork, ev: &mut Events) -> Result<Outcome> {
        names::resolvable_name("network", &c.name)?;
        if self.network_names.contains_key(&names::key(&c.name)) {
            return Err(StateError::NetworkExists(c.name.clone()));
        }
        let driver = Driver::from_proto(c.driver)
            .ok_or_else(|| StateError::value("driver", c.driver.to_string(), "must be overlay or bridge"))?;
        let picked;
        let texts: &[String] = if c.subnets.is_empty() {
            picked = [self.free_subnet().ok_or_else(|| {
                StateError::Invalid("no free /16 left in 10.44.0.0-10.254.255.255: give --subnet".into())
            })?];
            &picked
        } else {
            &c.subnets
        };
        let mut subnets: Vec<Cidr> = Vec::with_capacity(texts.len());
        for text in texts {
            let subnet = parse_cidr("subnet", text)?;
            if !subnet.is_network() {
                return Err(
                    weft_ipam::IpamError::HostBitsSet { cidr: subnet, network: subnet.network() }.into()
                );
            }
            if let Some((range, what)) = weft_ipam::special_use(&subnet) {
                return Err(StateError::SubnetSpecial { subnet, range, what });
            }
            if let Some(node) = self.nodes.values().find(|n| n.underlay_net.overlaps(&subnet)) {
                return Err(StateError::SubnetOnUnderlay {
                    subnet,
                    underlay: node.underlay_net,
                    node: node.name.clone(),
                });
            }
            if subnets.iter().any(|s| s.family() == subnet.family()) {
                return Err(StateError::value(
                    "subnet",
                    text,
                    "a network has at most one subnet per address family",
                ));
            }
            for other in self.networks.values() {
                if let Some(o) = other.network.subnets.iter().find(|o| o.overlaps(&subnet)) {
                    return Err(StateError::SubnetOverlap {
                        subnet,
                        other: *o,
                        network: other.network.name.clone(),
                    });
                }
            }
            subnets.push(subnet);
        }
        let mut pools = Vec::with_capacity(subnets.len());
        for subnet in &subnets {
            let block_len = match c.block_len {
                0 => default_block_len(*subnet)?,
                n => u8::try_from(n)
                    .map_err(|_| StateError::value("block length", n.to_string(), "too long"))?,
            };
            pools.push(PoolState::new(BlockPool::new(*subnet, Some(block_len))?));
        }
        let vni = match (driver, c.vni) {
            (Driver::Bridge, 0) => 0,
            (Driver::Bridge, v) => {
                return Err(StateError::value("VNI", v.to_string(), "bridge networks have no VNI"));
            }
            (Driver::Overlay, 0) => {
                let index = self.vnis.allocate().ok_or(StateError::VniExhausted)?;
                self.vnis.release(index);
                index as u32 + 1
            }
            (Driver::Overlay, v) if v > MAX_VNI => return Err(StateError::VniRange(v)),
            (Driver::Overlay, v) => {
                if let Some(owner) = self.vni_owner.get(&v) {
                    let network = self.networks[owner].network.name.clone();
                    return Err(StateError::VniTaken { vni: v, network });
                }
                v
            }
        };
        let mut labels: Vec<(String, String)> = Vec::with_capacity(c.labels.len());
        for label in &c.labels {
            if label.key.is_empty() || label.key.len() > 256 || label.value.len() > 4096 {
                return Err(StateError::value(
                    "label",
                    &label.key,
                    "keys are 1-256 bytes, values at most 4096",
                ));
            }
            if labels.iter().any(|(k, _)| *k == label.key) {
                return Err(StateError::value("label", &label.key, "given twice"));
            }
            labels.push((label.key.clone(), label.value.clone()));
        }
        labels.sort();
        // Everything is checked: from here on nothing fails.
        let id = self.next_network_id;
        self.insert_network(
            Network {
                id,
                name: c.name.clone(),
                driver,
                block_lens: pools.iter().map(|p| p.pool.block_len()).collect(),
                subnets,
                vni,
                internal: c.internal,
                labels,
            },
            pools,
        );
        self.next_network_id += 1;
        let network = self.networks[&id].network.clone();
        ev.push(pb::event::Kind::NetworkPut(network.to_proto()));
        Ok(Outcome::Network(network))
    }

    /// The automatic subnet of a network created without one: the first /16 from 10.44.0.0/16 up
    /// to 10.254.0.0/16 that overlaps no network. Decided inside the state machine, so two
    /// concurrent creations can never pick the same one.
    fn free_subnet(&self) -> Option<String> {
        (44u8..=254).map(|b| format!("10.{b}.0.0/16")).find(|text| {
            let candidate: Cidr = text.parse().expect("valid literal");
            !self.networks.values().any(|n| n.network.subnets.iter().any(|o| o.overlaps(&candidate)))
        })
    }

    fn insert_network(&mut self, network: Network, pools: Vec<PoolState>) {
        if network.vni != 0 {
            self.vnis.reserve(u128::from(network.vni - 1));
            self.vni_owner.insert(network.vni, network.id);
        }
        self.network_names.insert(names::key(&network.name), network.id);
        self.networks.insert(
            network.id,
            NetworkState {
                network,
                pools,
                names: OrdMap::new(),
                aliases: OrdMap::new(),
                containers: OrdMap::new(),
                endpoints: OrdSet::new(),
            },
        );
    }

    fn delete_network(&mut self, name: &str, ev: &mut Events) -> Result<Outcome> {
        let id = *self
            .network_names
            .get(&names::key(name))
            .ok_or_else(|| StateError::UnknownNetwork(name.into()))?;
        let net = &self.networks[&id];
        if !net.endpoints.is_empty() {
            return Err(StateError::NetworkInUse {
                name: net.network.name.clone(),
                endpoints: net.endpoints.len(),
            });
        }
        let blocks = self.blocks(id);
        let net = self.networks.remove(&id).expect("looked up");
        self.network_names.remove(&names::key(name));
        if net.network.vni != 0 {
            self.vnis.release(u128::from(net.network.vni - 1));
            self.vni_owner.remove(&net.network.vni);
        }
        for block in blocks {
            ev.push(pb::event::Kind::BlockDeleted(block.to_proto()));
        }
        ev.push(pb::event::Kind::NetworkDeleted(id));
        Ok(Outcome::Done)
    }

    fn allocate_endpoint(&mut self, c: &pb::AllocateEndpoint, ev: &mut Events) -> Result<Outcome> {
        let net_id = *self
            .network_names
            .get(&names::key(&c.network))
            .ok_or_else(|| StateError::UnknownNetwork(c.network.clone()))?;
        let node = self.nodes.get(&c.node_id).ok_or(StateError::UnknownNode(c.node_id))?;
        if node.status == Status::Down {
            return Err(StateError::NodeDown(c.node_id));
        }
        names::container_id(&c.container_id)?;
        let net = &self.networks[&net_id];
        if let Some(endpoint) = net.containers.get(&c.container_id) {
            return Err(StateError::AlreadyAttached {
                network: net.network.name.clone(),
                container: c.container_id.clone(),
                endpoint: *endpoint,
            });
        }
        let keys = endpoint_keys(net, &c.name, &c.aliases)?;
        let requested: Option<IpAddr> = if c.requested_ip.is_empty() {
            None
        } else {
            let ip: IpAddr = c
                .requested_ip
                .parse()
                .map_err(|_| StateError::value("requested address", &c.requested_ip, "not an IP address"))?;
            if !net.network.subnets.iter().any(|s| s.contains(ip)) {
                return Err(StateError::value(
                    "requested address",
                    &c.requested_ip,
                    format!("outside the subnets of network {:?}", net.network.name),
                ));
            }
            Some(ip)
        };
        let plans: Vec<Plan> = net
            .pools
            .iter()
            .map(|pool| {
                let exact = requested.filter(|ip| pool.pool.subnet().contains(*ip));
                pool.plan(c.node_id, exact)
            })
            .collect::<Result<_>>()?;
        // Everything is checked: from here on nothing fails.
        let id = self.next_endpoint_id;
        self.next_endpoint_id += 1;
        let net = self.networks.get_mut(&net_id).expect("looked up");
        let mut ips = Vec::with_capacity(plans.len());
        for (pool, plan) in net.pools.iter_mut().zip(plans) {
            let taken = pool.commit(c.node_id, plan);
            if let Some((cidr, generation)) = taken.leased {
                let lease = BlockLease { network: net_id, cidr, node: c.node_id, generation };
                ev.push(pb::event::Kind::BlockPut(lease.to_proto()));
            }
            ips.push(taken.ip);
        }
        let endpoint = Endpoint {
            id,
            network: net_id,
            node: c.node_id,
            container_id: c.container_id.clone(),
            name: c.name.clone(),
            aliases: c.aliases.clone(),
            mac: Mac::for_ip(ips[0]),
            ips,
        };
        self.index_endpoint(&endpoint, keys);
        ev.push(pb::event::Kind::EndpointPut(endpoint.to_proto()));
        self.endpoints.insert(id, endpoint.clone());
        Ok(Outcome::Endpoint(endpoint))
    }

    fn index_endpoint(&mut self, endpoint: &Endpoint, keys: EndpointKeys) {
        let net = self.networks.get_mut(&endpoint.network).expect("endpoint's network exists");
        if let Some(key) = keys.name {
            net.names.insert(key, endpoint.id);
        }
        for key in keys.aliases {
            net.aliases.entry(key).or_default().insert(endpoint.id);
        }
        net.containers.insert(endpoint.container_id.clone(), endpoint.id);
        net.endpoints.insert(endpoint.id);
        self.node_endpoints.entry(endpoint.node).or_default().insert(endpoint.id);
    }

    fn release_endpoint(&mut self, id: EndpointId, ev: &mut Events) -> Result<Outcome> {
        let node = self.endpoints.get(&id).ok_or(StateError::UnknownEndpoint(id))?.node;
        if let Some(set) = self.node_endpoints.get_mut(&node) {
            set.remove(&id);
            if set.is_empty() {
                self.node_endpoints.remove(&node);
            }
        }
        self.drop_endpoint(id, ev);
        Ok(Outcome::Done)
    }

    /// Removes an endpoint from its network and frees its addresses (not from `node_endpoints`).
    fn drop_endpoint(&mut self, id: EndpointId, ev: &mut Events) {
        let Some(endpoint) = self.endpoints.remove(&id) else { return };
        if let Some(net) = self.networks.get_mut(&endpoint.network) {
            net.endpoints.remove(&id);
            net.containers.remove(&endpoint.container_id);
            if !endpoint.name.is_empty() {
                net.names.remove(&names::key(&endpoint.name));
            }
            for alias in &endpoint.aliases {
                let key = names::key(alias);
                if let Some(ids) = net.aliases.get_mut(&key) {
                    ids.remove(&id);
                    if ids.is_empty() {
                        net.aliases.remove(&key);
                    }
                }
            }
            for ip in &endpoint.ips {
                if let Some(pool) = net.pools.iter_mut().find(|p| p.pool.subnet().contains(*ip)) {
                    pool.release_address(*ip);
                }
            }
        }
        ev.push(pb::event::Kind::EndpointDeleted(endpoint.to_proto()));
    }
}
