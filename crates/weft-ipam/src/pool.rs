//! A network's subnet carved into per-host blocks, and the addresses inside one block.

use core::fmt;
use core::net::IpAddr;

use crate::{Cidr, Family, IndexAllocator, IpamError};

/// The longest block prefix that still leaves one usable address: /30 for IPv4 (network,
/// gateway, one endpoint, broadcast) and /126 for IPv6 (subnet-router anycast, gateway, endpoints).
pub const fn max_block_len(family: Family) -> u8 {
    match family {
        Family::V4 => 30,
        Family::V6 => 126,
    }
}

/// The block prefix length weft picks for a pool when none is given.
///
/// IPv4: a /16 or larger pool gets /24 blocks (254 addresses per host, 256+ hosts, as flannel);
/// /17–/22 get /26; /23–/26 get /28; smaller pools get /30 or are themselves one block.
/// IPv6: /112 blocks (65 534 addresses per host) for pools of /112 or larger; a smaller pool is
/// one block. A pool too small for one usable address is refused.
pub fn default_block_len(subnet: Cidr) -> Result<u8, IpamError> {
    let len = subnet.prefix_len();
    let chosen = match subnet.family() {
        Family::V4 => match len {
            0..=16 => 24,
            17..=22 => 26,
            23..=26 => 28,
            _ => len.max(30),
        },
        Family::V6 => len.max(112),
    };
    if chosen > max_block_len(subnet.family()) {
        return Err(IpamError::PoolTooSmall { subnet, block_len: chosen });
    }
    Ok(chosen)
}

/// What a non-assignable address of a block is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressRole {
    /// The block's first address.
    Network,
    /// The first usable address: the host bridge's address, the containers' default gateway.
    Gateway,
    /// The last address of an IPv4 block.
    Broadcast,
}

impl fmt::Display for AddressRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AddressRole::Network => "network address",
            AddressRole::Gateway => "gateway",
            AddressRole::Broadcast => "broadcast address",
        })
    }
}

/// A network's subnet divided into equal blocks, each leased to at most one host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockPool {
    subnet: Cidr,
    block_len: u8,
    blocks: IndexAllocator,
}

impl BlockPool {
    /// A pool over `subnet` (a network prefix) with blocks of `block_len` bits, or the default.
    pub fn new(subnet: Cidr, block_len: Option<u8>) -> Result<BlockPool, IpamError> {
        if !subnet.is_network() {
            return Err(IpamError::HostBitsSet { cidr: subnet, network: subnet.network() });
        }
        let block_len = match block_len {
            Some(len) => len,
            None => default_block_len(subnet)?,
        };
        let max = max_block_len(subnet.family());
        if subnet.prefix_len() > max {
            return Err(IpamError::PoolTooSmall { subnet, block_len });
        }
        if block_len < subnet.prefix_len() || block_len > max {
            return Err(IpamError::BlockLength { subnet, block_len, min: subnet.prefix_len(), max });
        }
        let bits = block_len - subnet.prefix_len();
        let count = if bits >= 128 { u128::MAX } else { 1u128 << bits };
        Ok(BlockPool { subnet, block_len, blocks: IndexAllocator::new(count) })
    }

    /// The pool's subnet.
    pub fn subnet(&self) -> Cidr {
        self.subnet
    }

    /// The prefix length of every block.
    pub fn block_len(&self) -> u8 {
        self.block_len
    }

    /// How many blocks the pool holds.
    pub fn block_count(&self) -> u128 {
        self.blocks.capacity()
    }

    /// How many addresses containers can get from the whole pool, saturating
    /// ([`crate::usable_addresses`] of its subnet and block length).
    pub fn usable_addresses(&self) -> u128 {
        crate::usable_addresses(self.subnet, self.block_len)
    }

    /// How many blocks are leased.
    pub fn leased(&self) -> u128 {
        self.blocks.allocated()
    }

    /// Leases the lowest free block and returns its index.
    pub fn lease(&mut self) -> Result<u128, IpamError> {
        self.blocks.allocate().ok_or(IpamError::PoolExhausted {
            subnet: self.subnet,
            blocks: self.blocks.capacity(),
            block_len: self.block_len,
        })
    }

    /// Leases the block with `index`.
    pub fn lease_index(&mut self, index: u128) -> Result<(), IpamError> {
        let cidr = self.block_cidr(index)?;
        if self.blocks.reserve(index) { Ok(()) } else { Err(IpamError::Taken(format!("block {cidr}"))) }
    }

    /// Gives the block with `index` back to the pool.
    pub fn release(&mut self, index: u128) -> Result<(), IpamError> {
        let cidr = self.block_cidr(index)?;
        if self.blocks.release(index) {
            Ok(())
        } else {
            Err(IpamError::NotAllocated(format!("block {cidr}")))
        }
    }

    /// True when the block with `index` is leased.
    pub fn is_leased(&self, index: u128) -> bool {
        self.blocks.is_allocated(index)
    }

    /// The prefix of the block with `index`.
    pub fn block_cidr(&self, index: u128) -> Result<Cidr, IpamError> {
        self.subnet
            .subnet(self.block_len, index)
            .ok_or_else(|| IpamError::OutOfRange { addr: self.subnet.last(), range: self.subnet })
    }

    /// The index of the block that holds `ip`.
    pub fn block_index_of(&self, ip: IpAddr) -> Result<u128, IpamError> {
        let offset =
            self.subnet.index_of(ip).ok_or(IpamError::OutOfRange { addr: ip, range: self.subnet })?;
        let shift = self.subnet.family().bits() - self.block_len;
        Ok(offset >> shift)
    }
}

/// The addresses of one block: network, gateway and (IPv4) broadcast are never handed out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    cidr: Cidr,
    addrs: IndexAllocator,
    reserved: u128,
}

impl Block {
    /// A block over `cidr` with every usable address free.
    pub fn new(cidr: Cidr) -> Result<Block, IpamError> {
        let cidr = cidr.network();
        if cidr.prefix_len() > max_block_len(cidr.family()) {
            return Err(IpamError::PoolTooSmall { subnet: cidr, block_len: cidr.prefix_len() });
        }
        let mut addrs = IndexAllocator::new(cidr.size());
        let mut reserved = 0;
        for index in Block::reserved_indices(cidr) {
            addrs.reserve(index);
            reserved += 1;
        }
        Ok(Block { cidr, addrs, reserved })
    }

    fn reserved_indices(cidr: Cidr) -> impl Iterator<Item = u128> {
        let broadcast = (cidr.family() == Family::V4).then(|| cidr.size() - 1);
        [0, 1].into_iter().chain(broadcast)
    }

    /// The block's prefix.
    pub fn cidr(&self) -> Cidr {
        self.cidr
    }

    /// The gateway: the block's first usable address.
    pub fn gateway(&self) -> IpAddr {
        self.cidr.nth(1).expect("a block has at least four addresses")
    }

    /// What `ip` is reserved as, if it is one of the block's non-assignable addresses.
    pub fn role_of(&self, ip: IpAddr) -> Option<AddressRole> {
        let index = self.cidr.index_of(ip)?;
        match index {
            0 => Some(AddressRole::Network),
            1 => Some(AddressRole::Gateway),
            i if self.cidr.family() == Family::V4 && i == self.cidr.size() - 1 => {
                Some(AddressRole::Broadcast)
            }
            _ => None,
        }
    }

    /// How many addresses are handed out (not counting the reserved ones).
    pub fn used(&self) -> u128 {
        self.addrs.allocated() - self.reserved
    }

    /// How many addresses can still be handed out.
    pub fn free(&self) -> u128 {
        self.addrs.free()
    }

    /// Hands out the lowest free address.
    pub fn allocate(&mut self) -> Result<IpAddr, IpamError> {
        let index = self.addrs.allocate().ok_or(IpamError::BlockExhausted(self.cidr))?;
        Ok(self.cidr.nth(index).expect("index inside the block"))
    }

    fn checked_index(&self, ip: IpAddr) -> Result<u128, IpamError> {
        let index = self.cidr.index_of(ip).ok_or(IpamError::OutOfRange { addr: ip, range: self.cidr })?;
        if let Some(role) = self.role_of(ip) {
            return Err(IpamError::Reserved { addr: ip, block: self.cidr, role });
        }
        Ok(index)
    }

    /// Hands out exactly `ip`.
    pub fn reserve(&mut self, ip: IpAddr) -> Result<(), IpamError> {
        let index = self.checked_index(ip)?;
        if self.addrs.reserve(index) { Ok(()) } else { Err(IpamError::Taken(format!("address {ip}"))) }
    }

    /// Takes `ip` back.
    pub fn release(&mut self, ip: IpAddr) -> Result<(), IpamError> {
        let index = self.checked_index(ip)?;
        if self.addrs.release(index) { Ok(()) } else { Err(IpamError::NotAllocated(format!("address {ip}"))) }
    }

    /// True when `ip` is handed out (reserved addresses are not).
    pub fn is_allocated(&self, ip: IpAddr) -> bool {
        match self.checked_index(ip) {
            Ok(index) => self.addrs.is_allocated(index),
            Err(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(s: &str) -> Cidr {
        s.parse().unwrap()
    }
    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn default_block_lengths() {
        assert_eq!(default_block_len(c("10.0.0.0/8")).unwrap(), 24);
        assert_eq!(default_block_len(c("10.44.0.0/16")).unwrap(), 24);
        assert_eq!(default_block_len(c("10.44.0.0/20")).unwrap(), 26);
        assert_eq!(default_block_len(c("10.44.0.0/24")).unwrap(), 28);
        assert_eq!(default_block_len(c("10.44.0.0/28")).unwrap(), 30);
        assert_eq!(default_block_len(c("10.44.0.0/30")).unwrap(), 30);
        assert!(matches!(default_block_len(c("10.44.0.0/31")), Err(IpamError::PoolTooSmall { .. })));
        assert_eq!(default_block_len(c("fd00::/64")).unwrap(), 112);
        assert_eq!(default_block_len(c("fd00::/120")).unwrap(), 120);
        assert!(default_block_len(c("fd00::/127")).is_err());
    }

    #[test]
    fn pool_leases_lowest_and_maps_addresses() {
        let mut pool = BlockPool::new(c("10.44.0.0/16"), None).unwrap();
        assert_eq!(pool.block_count(), 256);
        assert_eq!(pool.lease().unwrap(), 0);
        assert_eq!(pool.lease().unwrap(), 1);
        assert_eq!(pool.block_cidr(1).unwrap(), c("10.44.1.0/24"));
        assert_eq!(pool.block_index_of(ip("10.44.7.9")).unwrap(), 7);
        assert!(pool.block_index_of(ip("10.45.0.1")).is_err());
        assert!(pool.lease_index(1).is_err());
        pool.release(0).unwrap();
        assert!(pool.release(0).is_err());
        assert_eq!(pool.lease().unwrap(), 0);
        assert!(BlockPool::new(c("10.44.0.1/16"), None).is_err());
        assert!(BlockPool::new(c("10.44.0.0/16"), Some(31)).is_err());
        assert!(BlockPool::new(c("10.44.0.0/16"), Some(8)).is_err());
    }

    #[test]
    fn pool_exhausts() {
        let mut pool = BlockPool::new(c("10.0.0.0/29"), None).unwrap();
        assert_eq!(pool.block_count(), 2);
        pool.lease().unwrap();
        pool.lease().unwrap();
        assert!(matches!(pool.lease(), Err(IpamError::PoolExhausted { .. })));
    }

    #[test]
    fn block_never_hands_out_reserved() {
        let mut b = Block::new(c("10.44.1.0/30")).unwrap();
        assert_eq!(b.gateway(), ip("10.44.1.1"));
        assert_eq!(b.allocate().unwrap(), ip("10.44.1.2"));
        assert!(matches!(b.allocate(), Err(IpamError::BlockExhausted(_))));
        assert!(matches!(
            b.reserve(ip("10.44.1.3")),
            Err(IpamError::Reserved { role: AddressRole::Broadcast, .. })
        ));
        assert!(matches!(
            b.reserve(ip("10.44.1.1")),
            Err(IpamError::Reserved { role: AddressRole::Gateway, .. })
        ));
        assert!(matches!(b.reserve(ip("10.44.2.2")), Err(IpamError::OutOfRange { .. })));
        assert!(matches!(b.reserve(ip("10.44.1.2")), Err(IpamError::Taken(_))));
        b.release(ip("10.44.1.2")).unwrap();
        assert!(b.release(ip("10.44.1.2")).is_err());
        assert_eq!(b.used(), 0);

        let mut v6 = Block::new(c("fd00::/112")).unwrap();
        assert_eq!(v6.allocate().unwrap(), ip("fd00::2"));
        assert_eq!(v6.free(), 65536 - 3);
        v6.reserve(ip("fd00::ffff")).unwrap();
    }
}
