//! weft-ipam is the pure address logic every weft host must agree on: CIDR prefixes, a network's
//! pool carved into per-host blocks, and addresses handed out inside a block.
//!
//! It must never do I/O (no sockets, files, clocks or randomness): the same calls in the same order
//! give the same answers on every host, so Raft only has to replicate the calls.
//!
//! Parsing and containment come from the `ipnetwork` crate ([`Cidr`] is a thin newtype over
//! [`ipnetwork::IpNetwork`]); the pools, blocks, allocations and address counts are weft's own.

mod alloc;
mod cidr;
mod count;
mod pool;
mod special;

pub use alloc::IndexAllocator;
pub use cidr::{Cidr, Family, from_u128, to_u128};
pub use count::{
    SubnetAddresses, network_usable_addresses, reserved_per_block, saturating_u64, subnet_addresses,
    usable_addresses,
};
/// The CIDR crate [`Cidr`] wraps, re-exported so callers convert without naming a version.
pub use ipnetwork;
pub use pool::{AddressRole, Block, BlockPool, default_block_len, max_block_len};
pub use special::special_use;

use core::net::IpAddr;

/// Everything that can go wrong when parsing prefixes or handing out blocks and addresses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IpamError {
    /// The text is not `ADDR` or `ADDR/LEN`.
    #[error("invalid CIDR {0:?}: expected ADDRESS/PREFIX-LENGTH, e.g. 10.44.0.0/16")]
    CidrSyntax(String),
    /// The prefix length is longer than the address family allows.
    #[error("prefix length /{len} does not fit address {addr} (at most /{max})")]
    PrefixLength {
        /// The address given.
        addr: IpAddr,
        /// The length given.
        len: u8,
        /// The family's maximum.
        max: u8,
    },
    /// A network prefix was given with host bits set.
    #[error("{cidr} has host bits set: did you mean {network}?")]
    HostBitsSet {
        /// The prefix given.
        cidr: Cidr,
        /// The network it lies in.
        network: Cidr,
    },
    /// The pool's prefix is too small to hold even one block with a usable address.
    #[error("subnet {subnet} is too small: it cannot hold one /{block_len} block with a usable address")]
    PoolTooSmall {
        /// The pool's subnet.
        subnet: Cidr,
        /// The block length that was asked for or chosen.
        block_len: u8,
    },
    /// The block length does not fit the pool: shorter than the subnet, or too long for a usable
    /// address.
    #[error("block length /{block_len} does not fit subnet {subnet}: it must be /{min} to /{max}")]
    BlockLength {
        /// The pool's subnet.
        subnet: Cidr,
        /// The block length asked for.
        block_len: u8,
        /// The shortest allowed (the subnet's own length).
        min: u8,
        /// The longest allowed.
        max: u8,
    },
    /// Every block of the pool is leased.
    #[error("subnet {subnet} is exhausted: all {blocks} blocks of /{block_len} are leased")]
    PoolExhausted {
        /// The pool's subnet.
        subnet: Cidr,
        /// The number of blocks it holds.
        blocks: u128,
        /// The block length.
        block_len: u8,
    },
    /// Every usable address of the block is taken.
    #[error("block {0} is exhausted")]
    BlockExhausted(Cidr),
    /// The address is not inside the pool or block it was asked of.
    #[error("address {addr} is outside {range}")]
    OutOfRange {
        /// The address asked for.
        addr: IpAddr,
        /// The range it should have been in.
        range: Cidr,
    },
    /// The address is the network, gateway or broadcast address of its block.
    #[error("address {addr} is reserved in block {block} ({role}) and cannot be handed out")]
    Reserved {
        /// The address asked for.
        addr: IpAddr,
        /// Its block.
        block: Cidr,
        /// What it is reserved as.
        role: AddressRole,
    },
    /// The address (or block) is already handed out.
    #[error("{0} is already taken")]
    Taken(String),
    /// The address (or block) was not handed out, so it cannot be released.
    #[error("{0} is not allocated")]
    NotAllocated(String),
    /// Two subnets overlap.
    #[error("subnet {0} overlaps {1}")]
    Overlap(Cidr, Cidr),
}
