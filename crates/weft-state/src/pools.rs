//! One subnet of a network: which node holds which block, and the addresses inside each block.
//!
//! Allocation is split into a read-only `plan` that can fail and a `commit` that cannot, so a
//! command that touches several subnets either changes all of them or none.

use core::net::IpAddr;
use std::collections::{BTreeMap, BTreeSet};

use weft_ipam::{Block, BlockPool, Cidr, IpamError};

use crate::model::NodeId;
use crate::{Result, StateError};

/// A leased block and the addresses handed out in it.
#[derive(Debug, Clone)]
pub(crate) struct LeasedBlock {
    pub(crate) node: NodeId,
    pub(crate) generation: u64,
    pub(crate) addrs: Block,
}

/// How an address will be taken.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Plan {
    /// The lowest free address of a block the node holds.
    Existing(u128),
    /// Lease the pool's lowest free block, then take its lowest free address.
    Lease,
    /// This exact address in a block the node holds.
    ExistingExact(u128, IpAddr),
    /// Lease this block, then take this exact address.
    LeaseExact(u128, IpAddr),
}

/// What a commit did.
pub(crate) struct Taken {
    pub(crate) ip: IpAddr,
    /// The block leased for it, with its generation, if one was.
    pub(crate) leased: Option<(Cidr, u64)>,
}

#[derive(Debug, Clone)]
pub(crate) struct PoolState {
    pub(crate) pool: BlockPool,
    pub(crate) blocks: BTreeMap<u128, LeasedBlock>,
    by_node: BTreeMap<NodeId, BTreeSet<u128>>,
    with_free: BTreeMap<NodeId, BTreeSet<u128>>,
    /// The generation of every block ever leased, by index.
    pub(crate) generations: BTreeMap<u128, u64>,
}

impl PoolState {
    pub(crate) fn new(pool: BlockPool) -> PoolState {
        PoolState {
            pool,
            blocks: BTreeMap::new(),
            by_node: BTreeMap::new(),
            with_free: BTreeMap::new(),
            generations: BTreeMap::new(),
        }
    }

    pub(crate) fn plan(&self, node: NodeId, requested: Option<IpAddr>) -> Result<Plan> {
        let Some(ip) = requested else {
            if let Some(index) = self.with_free.get(&node).and_then(|s| s.first()) {
                return Ok(Plan::Existing(*index));
            }
            if self.pool.leased() >= self.pool.block_count() {
                return Err(IpamError::PoolExhausted {
                    subnet: self.pool.subnet(),
                    blocks: self.pool.block_count(),
                    block_len: self.pool.block_len(),
                }
                .into());
            }
            return Ok(Plan::Lease);
        };
        let index = self.pool.block_index_of(ip)?;
        let cidr = self.pool.block_cidr(index)?;
        match self.blocks.get(&index) {
            Some(block) if block.node != node => Err(StateError::BlockOfOtherNode {
                addr: ip.to_string(),
                block: cidr,
                owner: block.node,
                node,
            }),
            Some(block) => {
                if let Some(role) = block.addrs.role_of(ip) {
                    return Err(IpamError::Reserved { addr: ip, block: cidr, role }.into());
                }
                if block.addrs.is_allocated(ip) {
                    return Err(IpamError::Taken(format!("address {ip}")).into());
                }
                Ok(Plan::ExistingExact(index, ip))
            }
            None => {
                let fresh = Block::new(cidr)?;
                if let Some(role) = fresh.role_of(ip) {
                    return Err(IpamError::Reserved { addr: ip, block: cidr, role }.into());
                }
                Ok(Plan::LeaseExact(index, ip))
            }
        }
    }

    /// Carries out a plan made against the current state; cannot fail.
    pub(crate) fn commit(&mut self, node: NodeId, plan: Plan) -> Taken {
        let (index, exact, leased) = match plan {
            Plan::Existing(index) => (index, None, None),
            Plan::ExistingExact(index, ip) => (index, Some(ip), None),
            Plan::Lease => {
                let index = self.pool.lease().expect("planned: a block is free");
                (index, None, Some(self.start_lease(index, node)))
            }
            Plan::LeaseExact(index, ip) => {
                self.pool.lease_index(index).expect("planned: the block is free");
                (index, Some(ip), Some(self.start_lease(index, node)))
            }
        };
        let block = self.blocks.get_mut(&index).expect("leased block");
        let ip = match exact {
            Some(ip) => {
                block.addrs.reserve(ip).expect("planned: the address is free");
                ip
            }
            None => block.addrs.allocate().expect("planned: the block has a free address"),
        };
        if block.addrs.free() == 0 {
            remove_from(&mut self.with_free, node, index);
        }
        Taken { ip, leased }
    }

    fn start_lease(&mut self, index: u128, node: NodeId) -> (Cidr, u64) {
        let cidr = self.pool.block_cidr(index).expect("index inside the pool");
        let generation = self.generations.get(&index).map_or(1, |g| g + 1);
        self.generations.insert(index, generation);
        let addrs = Block::new(cidr).expect("pool blocks are valid");
        self.blocks.insert(index, LeasedBlock { node, generation, addrs });
        self.by_node.entry(node).or_default().insert(index);
        self.with_free.entry(node).or_default().insert(index);
        (cidr, generation)
    }

    /// Leases block `index` to `node` with a known generation (snapshot restore).
    pub(crate) fn restore_lease(&mut self, index: u128, node: NodeId, generation: u64) -> Result<()> {
        self.pool.lease_index(index)?;
        self.start_lease(index, node);
        self.generations.insert(index, generation);
        self.blocks.get_mut(&index).expect("just leased").generation = generation;
        Ok(())
    }

    /// Marks `ip` taken in its block, which `node` must hold (snapshot restore).
    pub(crate) fn restore_address(&mut self, node: NodeId, ip: IpAddr) -> Result<()> {
        match self.plan(node, Some(ip))? {
            plan @ Plan::ExistingExact(..) => {
                self.commit(node, plan);
                Ok(())
            }
            _ => Err(StateError::Decode(format!("address {ip} lies outside the blocks of node {node}"))),
        }
    }

    /// Gives `ip` back to its block; the block stays leased to its node.
    pub(crate) fn release_address(&mut self, ip: IpAddr) {
        let Ok(index) = self.pool.block_index_of(ip) else { return };
        if let Some(block) = self.blocks.get_mut(&index)
            && block.addrs.release(ip).is_ok()
        {
            let node = block.node;
            self.with_free.entry(node).or_default().insert(index);
        }
    }

    /// Releases every block `node` holds; returns them with their generation.
    pub(crate) fn release_node(&mut self, node: NodeId) -> Vec<(Cidr, u64)> {
        let indices = self.by_node.remove(&node).unwrap_or_default();
        self.with_free.remove(&node);
        let mut released = Vec::with_capacity(indices.len());
        for index in indices {
            if let Some(block) = self.blocks.remove(&index) {
                self.pool.release(index).expect("leased block is allocated in the pool");
                released.push((block.addrs.cidr(), block.generation));
            }
        }
        released
    }
}

fn remove_from(map: &mut BTreeMap<NodeId, BTreeSet<u128>>, node: NodeId, index: u128) {
    if let Some(set) = map.get_mut(&node) {
        set.remove(&index);
        if set.is_empty() {
            map.remove(&node);
        }
    }
}
