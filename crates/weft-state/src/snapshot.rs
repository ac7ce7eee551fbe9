//! Snapshots: the whole state as one prost message, in key order, so that encoding is
//! byte-identical on every host and after every round trip.

use core::net::IpAddr;

use prost::Message;
use weft_ipam::BlockPool;

use crate::error::parse_cidr;
use crate::model::{Driver, Endpoint, Mac, Network, Node, Role, Status};
use crate::pools::PoolState;
use crate::{Result, State, StateError, names, pb};

fn corrupt(what: impl Into<String>) -> StateError {
    StateError::Decode(what.into())
}

impl State {
    /// The whole state as a snapshot message.
    pub fn snapshot(&self) -> pb::StateSnapshot {
        let mut blocks = Vec::new();
        let mut generations = Vec::new();
        for (id, net) in &self.networks {
            for pool in &net.pools {
                for block in pool.blocks.values() {
                    blocks.push(pb::Block {
                        network_id: *id,
                        cidr: block.addrs.cidr().to_string(),
                        node_id: block.node,
                        generation: block.generation,
                    });
                }
                for (index, generation) in &pool.generations {
                    let cidr = pool.pool.block_cidr(*index).expect("recorded index is in the pool");
                    generations.push(pb::BlockGeneration {
                        network_id: *id,
                        cidr: cidr.to_string(),
                        generation: *generation,
                    });
                }
            }
        }
        pb::StateSnapshot {
            revision: self.revision,
            nodes: self.nodes.values().map(Node::to_proto).collect(),
            networks: self.networks.values().map(|n| n.network.to_proto()).collect(),
            blocks,
            endpoints: self.endpoints.values().map(Endpoint::to_proto).collect(),
            next_network_id: self.next_network_id,
            next_endpoint_id: self.next_endpoint_id,
            generations,
            revoked_nodes: self.revoked.iter().copied().collect(),
            worker_token_generation: self.token_generations.0,
            manager_token_generation: self.token_generations.1,
        }
    }

    /// The snapshot, encoded.
    pub fn snapshot_bytes(&self) -> Vec<u8> {
        self.snapshot().encode_to_vec()
    }

    /// Rebuilds a state from encoded snapshot bytes.
    pub fn from_snapshot_bytes(bytes: &[u8]) -> Result<State> {
        State::from_snapshot(&pb::StateSnapshot::decode(bytes)?)
    }

    /// Rebuilds a state from a snapshot, checking it as it goes: a snapshot that could not have
    /// come from `apply` is refused.
    pub fn from_snapshot(snap: &pb::StateSnapshot) -> Result<State> {
        let mut state = State::new();
        for n in &snap.nodes {
            let underlay: IpAddr =
                n.underlay_addr.parse().map_err(|_| corrupt(format!("node {} address", n.id)))?;
            let node = Node {
                id: n.id,
                name: n.name.clone(),
                underlay,
                underlay_net: crate::model::underlay_net(underlay, n.underlay_prefix_len),
                api_addr: n.api_addr.clone(),
                underlay_mtu: n.underlay_mtu,
                role: Role::from_proto(n.role).ok_or_else(|| corrupt(format!("node {} role", n.id)))?,
                status: Status::from_proto(n.status)
                    .ok_or_else(|| corrupt(format!("node {} status", n.id)))?,
                status_since_ms: n.status_since_ms,
            };
            names::dns_label("node", &node.name)?;
            if node.id == 0
                || state.nodes.contains_key(&node.id)
                || state.node_names.contains_key(&names::key(&node.name))
                || state.underlays.contains_key(&underlay)
            {
                return Err(corrupt(format!("duplicate node {}", node.id)));
            }
            state.node_names.insert(names::key(&node.name), node.id);
            state.underlays.insert(underlay, node.id);
            state.nodes.insert(node.id, node);
        }
        for n in &snap.networks {
            state.restore_network(n)?;
        }
        for b in &snap.blocks {
            let cidr = parse_cidr("block", &b.cidr)?;
            if !state.nodes.contains_key(&b.node_id) {
                return Err(corrupt(format!("block {cidr} of unknown node {}", b.node_id)));
            }
            let pool = state.pool_of(b.network_id, cidr.addr())?;
            let index = pool.pool.block_index_of(cidr.addr())?;
            if pool.pool.block_cidr(index)? != cidr {
                return Err(corrupt(format!("block {cidr} does not match the pool's block length")));
            }
            pool.restore_lease(index, b.node_id, b.generation)?;
        }
        for e in &snap.endpoints {
            state.restore_endpoint(e)?;
        }
        for g in &snap.generations {
            let cidr = parse_cidr("block", &g.cidr)?;
            let pool = state.pool_of(g.network_id, cidr.addr())?;
            let index = pool.pool.block_index_of(cidr.addr())?;
            if pool.blocks.get(&index).is_some_and(|b| b.generation != g.generation) {
                return Err(corrupt(format!("generation of block {cidr} disagrees with its lease")));
            }
            pool.generations.insert(index, g.generation);
        }
        let max_net = state.networks.keys().next_back().copied().unwrap_or(0);
        let max_ep = state.endpoints.keys().next_back().copied().unwrap_or(0);
        if snap.next_network_id <= max_net || snap.next_endpoint_id <= max_ep {
            return Err(corrupt("id counters behind the ids in use"));
        }
        state.next_network_id = snap.next_network_id;
        state.next_endpoint_id = snap.next_endpoint_id;
        state.revision = snap.revision;
        for id in &snap.revoked_nodes {
            if state.nodes.contains_key(id) {
                return Err(corrupt(format!("node {id} is both present and removed")));
            }
            state.revoked.insert(*id);
        }
        state.token_generations = (snap.worker_token_generation, snap.manager_token_generation);
        Ok(state)
    }

    fn pool_of(&mut self, network: u64, ip: IpAddr) -> Result<&mut PoolState> {
        let net =
            self.networks.get_mut(&network).ok_or_else(|| corrupt(format!("unknown network {network}")))?;
        net.pools
            .iter_mut()
            .find(|p| p.pool.subnet().contains(ip))
            .ok_or_else(|| corrupt(format!("{ip} outside network {network}")))
    }

    fn restore_network(&mut self, n: &pb::Network) -> Result<()> {
        names::resolvable_name("network", &n.name)?;
        let driver = Driver::from_proto(n.driver).ok_or_else(|| corrupt("network driver"))?;
        if n.subnets.len() != n.block_lens.len() || n.subnets.is_empty() {
            return Err(corrupt(format!("network {} subnets", n.id)));
        }
        let mut subnets = Vec::new();
        let mut pools = Vec::new();
        for (text, len) in n.subnets.iter().zip(&n.block_lens) {
            let subnet = parse_cidr("subnet", text)?;
            let len = u8::try_from(*len).map_err(|_| corrupt("block length"))?;
            for other in self.networks.values().flat_map(|o| o.network.subnets.iter()).chain(&subnets) {
                if other.overlaps(&subnet) {
                    return Err(corrupt(format!("subnet {subnet} overlaps {other}")));
                }
            }
            pools.push(PoolState::new(BlockPool::new(subnet, Some(len))?));
            subnets.push(subnet);
        }
        let vni_ok = match driver {
            Driver::Bridge => n.vni == 0,
            Driver::Overlay => (1..=crate::MAX_VNI).contains(&n.vni) && !self.vni_owner.contains_key(&n.vni),
        };
        if !vni_ok
            || n.id == 0
            || self.networks.contains_key(&n.id)
            || self.network_names.contains_key(&names::key(&n.name))
        {
            return Err(corrupt(format!("network {} id, name or VNI", n.id)));
        }
        let mut labels: Vec<(String, String)> =
            n.labels.iter().map(|l| (l.key.clone(), l.value.clone())).collect();
        labels.sort();
        let network = Network {
            id: n.id,
            name: n.name.clone(),
            driver,
            block_lens: pools.iter().map(|p| p.pool.block_len()).collect(),
            subnets,
            vni: n.vni,
            internal: n.internal,
            labels,
        };
        self.insert_network(network, pools);
        Ok(())
    }

    fn restore_endpoint(&mut self, e: &pb::Endpoint) -> Result<()> {
        names::container_id(&e.container_id)?;
        let net =
            self.networks.get(&e.network_id).ok_or_else(|| corrupt(format!("endpoint {} network", e.id)))?;
        if e.id == 0 || self.endpoints.contains_key(&e.id) || net.containers.contains_key(&e.container_id) {
            return Err(corrupt(format!("duplicate endpoint {}", e.id)));
        }
        if !self.nodes.contains_key(&e.node_id) {
            return Err(corrupt(format!("endpoint {} of unknown node", e.id)));
        }
        let keys = crate::endpoint_keys(net, &e.name, &e.aliases)
            .map_err(|err| corrupt(format!("endpoint {}: {err}", e.id)))?;
        let ips: Vec<IpAddr> = e
            .ips
            .iter()
            .map(|ip| ip.parse().map_err(|_| corrupt(format!("endpoint {} address", e.id))))
            .collect::<Result<_>>()?;
        if ips.len() != net.pools.len() {
            return Err(corrupt(format!("endpoint {} has {} addresses", e.id, ips.len())));
        }
        for (ip, pool) in ips.iter().zip(&net.pools) {
            if !pool.pool.subnet().contains(*ip) {
                return Err(corrupt(format!("endpoint {} address {ip} in the wrong subnet", e.id)));
            }
        }
        for ip in &ips {
            self.pool_of(e.network_id, *ip)?.restore_address(e.node_id, *ip)?;
        }
        let endpoint = Endpoint {
            id: e.id,
            network: e.network_id,
            node: e.node_id,
            container_id: e.container_id.clone(),
            name: e.name.clone(),
            aliases: e.aliases.clone(),
            mac: Mac::for_ip(ips[0]),
            ips,
        };
        if endpoint.mac.to_string() != e.mac {
            return Err(corrupt(format!("endpoint {} MAC", e.id)));
        }
        self.index_endpoint(&endpoint, keys);
        self.endpoints.insert(endpoint.id, endpoint);
        Ok(())
    }
}
