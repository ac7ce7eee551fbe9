//! How many addresses a network can hand out, per subnet and in all, for either family.
//!
//! Counts are `u128` and saturate: an IPv6 subnet of /48 or larger holds more usable addresses
//! than a `u64` can count, and callers that must fit a narrower field saturate again at their edge.

use core::net::IpAddr;

use crate::cidr::pow2;
use crate::{Cidr, Family, max_block_len};

/// How many addresses of every block are never handed out: the network address and the gateway,
/// and for IPv4 the broadcast address too (the same ones [`crate::Block`] reserves).
pub const fn reserved_per_block(family: Family) -> u128 {
    match family {
        Family::V4 => 3,
        Family::V6 => 2,
    }
}

/// The addresses of `subnet` that containers can get once it is carved into blocks of
/// `block_len` bits: every block's addresses less the ones it reserves.
///
/// Zero when `block_len` does not fit the subnet (shorter than the subnet's own prefix, or longer
/// than [`max_block_len`] allows), since no block of that length can be leased from it. Never
/// panics; saturates at `u128::MAX`.
pub fn usable_addresses(subnet: Cidr, block_len: u8) -> u128 {
    let family = subnet.family();
    if block_len < subnet.prefix_len() || block_len > max_block_len(family) {
        return 0;
    }
    let blocks = pow2(block_len - subnet.prefix_len());
    let per_block = pow2(family.bits() - block_len).saturating_sub(reserved_per_block(family));
    blocks.saturating_mul(per_block)
}

/// The usable addresses of a whole network: [`usable_addresses`] of each subnet with its own
/// block length, added up (saturating).
pub fn network_usable_addresses<I>(subnets: I) -> u128
where
    I: IntoIterator<Item = (Cidr, u8)>,
{
    subnets.into_iter().fold(0u128, |sum, (subnet, len)| sum.saturating_add(usable_addresses(subnet, len)))
}

/// One subnet's addresses: how many can be handed out, and how many are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubnetAddresses {
    /// The subnet.
    pub subnet: Cidr,
    /// Its block length.
    pub block_len: u8,
    /// Addresses containers can get ([`usable_addresses`]).
    pub usable: u128,
    /// Addresses handed out.
    pub used: u128,
}

impl SubnetAddresses {
    /// The addresses still free: usable less used, never below zero.
    pub const fn free(&self) -> u128 {
        self.usable.saturating_sub(self.used)
    }

    /// The subnet's family.
    pub const fn family(&self) -> Family {
        self.subnet.family()
    }
}

/// The counts of each subnet of a network, in the order given, pairing every subnet with its own
/// block length; `used` counts the addresses of `assigned` that lie in each subnet (an address in
/// none of them is not counted).
pub fn subnet_addresses<S, A>(subnets: S, assigned: A) -> Vec<SubnetAddresses>
where
    S: IntoIterator<Item = (Cidr, u8)>,
    A: IntoIterator<Item = IpAddr>,
{
    let mut counts: Vec<SubnetAddresses> = subnets
        .into_iter()
        .map(|(subnet, block_len)| SubnetAddresses {
            subnet,
            block_len,
            usable: usable_addresses(subnet, block_len),
            used: 0,
        })
        .collect();
    for ip in assigned {
        if let Some(count) = counts.iter_mut().find(|c| c.subnet.contains(ip)) {
            count.used = count.used.saturating_add(1);
        }
    }
    counts
}

/// A count narrowed to `u64` for a wire field, saturating at `u64::MAX`.
pub fn saturating_u64(count: u128) -> u64 {
    u64::try_from(count).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Block, BlockPool, default_block_len};

    fn c(s: &str) -> Cidr {
        s.parse().unwrap()
    }

    #[test]
    fn ipv4_counts() {
        // 256 blocks of /24, each less network, gateway and broadcast.
        assert_eq!(usable_addresses(c("10.90.0.0/16"), 24), 256 * 253);
        assert_eq!(usable_addresses(c("10.90.0.0/24"), 24), 253);
        assert_eq!(usable_addresses(c("10.90.0.0/24"), 28), 16 * 13);
        assert_eq!(usable_addresses(c("10.0.0.0/30"), 30), 1);
        assert_eq!(usable_addresses(c("0.0.0.0/0"), 24), (1 << 24) * 253);
        // Misfits: shorter than the subnet, too long for a usable address, the other family's.
        assert_eq!(usable_addresses(c("10.90.0.0/16"), 8), 0);
        assert_eq!(usable_addresses(c("10.90.0.0/16"), 31), 0);
        assert_eq!(usable_addresses(c("10.90.0.0/16"), 112), 0);
    }

    #[test]
    fn ipv6_counts() {
        // A /64 in /112 blocks: 2^48 blocks of 65 536 - 2 usable addresses; past u32, under u64.
        let per_host = (1u128 << 16) - 2;
        assert_eq!(usable_addresses(c("fd00:90::/64"), 112), (1u128 << 48) * per_host);
        assert_eq!(usable_addresses(c("fd00:90::/112"), 112), per_host);
        assert_eq!(usable_addresses(c("fd00::/126"), 126), 2);
        // A /64 as one block, and a /48: more than a u64 holds.
        assert_eq!(usable_addresses(c("fd00:90::/64"), 64), (1u128 << 64) - 2);
        let big = usable_addresses(c("fd00:90::/48"), 112);
        assert_eq!(big, (1u128 << 64) * per_host);
        assert!(big > u128::from(u64::MAX));
        assert_eq!(saturating_u64(big), u64::MAX);
        assert_eq!(saturating_u64(253), 253);
        // The whole space never overflows or panics.
        assert_eq!(usable_addresses(c("::/0"), 126), (1u128 << 126) * 2);
        assert_eq!(usable_addresses(c("::/0"), 112), (1u128 << 112) * per_host);
        // Misfits.
        assert_eq!(usable_addresses(c("fd00:90::/64"), 24), 0);
        assert_eq!(usable_addresses(c("fd00:90::/64"), 127), 0);
    }

    #[test]
    fn agrees_with_blocks_and_pools() {
        for subnet in ["10.44.0.0/24", "10.44.0.0/28", "10.44.0.0/30", "fd00::/120", "fd00::/126"] {
            let subnet = c(subnet);
            let block = Block::new(subnet).unwrap();
            assert_eq!(usable_addresses(subnet, subnet.prefix_len()), block.free(), "{subnet}");
        }
        for subnet in ["10.44.0.0/16", "10.44.0.0/20", "fd00::/64", "fd00::/100"] {
            let subnet = c(subnet);
            let len = default_block_len(subnet).unwrap();
            let pool = BlockPool::new(subnet, Some(len)).unwrap();
            let block = Block::new(pool.block_cidr(0).unwrap()).unwrap();
            assert_eq!(usable_addresses(subnet, len), pool.block_count() * block.free(), "{subnet}");
            assert_eq!(pool.usable_addresses(), usable_addresses(subnet, len));
        }
    }

    #[test]
    fn dual_stack_network_pairs_each_subnet_with_its_own_block_length() {
        let subnets = [(c("10.90.0.0/16"), 24), (c("fd00:90::/64"), 112)];
        let v4 = 256 * 253;
        let v6 = (1u128 << 48) * ((1 << 16) - 2);
        assert_eq!(network_usable_addresses(subnets), v4 + v6);
        assert_eq!(network_usable_addresses([]), 0);
        assert_eq!(network_usable_addresses([(c("::/0"), 126), (c("::/0"), 126)]), u128::MAX, "saturates");

        let assigned = ["10.90.0.2", "fd00:90::2", "10.90.1.2", "192.0.2.1"].map(|s| s.parse().unwrap());
        let counts = subnet_addresses(subnets, assigned);
        assert_eq!(counts.len(), 2);
        assert_eq!((counts[0].family(), counts[0].used, counts[0].usable), (Family::V4, 2, v4));
        assert_eq!(counts[0].free(), v4 - 2);
        assert_eq!((counts[1].family(), counts[1].used, counts[1].usable), (Family::V6, 1, v6));
        assert_eq!(counts[1].free(), v6 - 1);
        assert_eq!(counts[1].block_len, 112);
    }
}
