//! CIDR prefixes as plain values, for IPv4 and IPv6 alike.

use core::fmt;
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use core::str::FromStr;

use crate::IpamError;

/// The address family of a prefix or address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    /// IPv4, 32-bit addresses.
    V4,
    /// IPv6, 128-bit addresses.
    V6,
}

impl Family {
    /// Number of bits in an address of this family.
    pub const fn bits(self) -> u8 {
        match self {
            Family::V4 => 32,
            Family::V6 => 128,
        }
    }

    /// The family of `ip`.
    pub const fn of(ip: IpAddr) -> Family {
        match ip {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }
}

/// An address with a prefix length, such as `10.44.0.5/16` or `fd00::/64`.
///
/// The address may have host bits set (an interface address); [`Cidr::network`] and
/// [`Cidr::is_network`] tell the network apart from such an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cidr {
    addr: IpAddr,
    len: u8,
}

impl Cidr {
    /// A prefix of `len` bits at `addr`; refuses a length longer than the family allows.
    pub fn new(addr: IpAddr, len: u8) -> Result<Cidr, IpamError> {
        let bits = Family::of(addr).bits();
        if len > bits {
            return Err(IpamError::PrefixLength { addr, len, max: bits });
        }
        Ok(Cidr { addr, len })
    }

    /// A network prefix: like [`Cidr::new`], but refuses an address with host bits set, since a
    /// route or a subnet with stray host bits is almost always a typo.
    pub fn network_of(addr: IpAddr, len: u8) -> Result<Cidr, IpamError> {
        let cidr = Cidr::new(addr, len)?;
        if !cidr.is_network() {
            return Err(IpamError::HostBitsSet { cidr, network: cidr.network() });
        }
        Ok(cidr)
    }

    /// The address as given (host bits kept).
    pub const fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length in bits.
    pub const fn prefix_len(&self) -> u8 {
        self.len
    }

    /// The address family.
    pub const fn family(&self) -> Family {
        Family::of(self.addr)
    }

    /// Number of host bits (family bits minus prefix length).
    pub const fn host_bits(&self) -> u8 {
        self.family().bits() - self.len
    }

    /// Number of addresses covered, as `u128` (a /0 IPv6 prefix saturates to `u128::MAX`).
    pub fn size(&self) -> u128 {
        let host = self.host_bits();
        if host >= 128 { u128::MAX } else { 1u128 << host }
    }

    /// The network prefix: host bits cleared.
    pub fn network(&self) -> Cidr {
        let base = to_u128(self.addr) & self.mask();
        Cidr { addr: from_u128(self.family(), base), len: self.len }
    }

    /// True when no host bit is set.
    pub fn is_network(&self) -> bool {
        to_u128(self.addr) & !self.mask() == 0
    }

    /// The network address as a number.
    pub fn base(&self) -> u128 {
        to_u128(self.addr) & self.mask()
    }

    /// The last address covered (the IPv4 broadcast address).
    pub fn last(&self) -> IpAddr {
        from_u128(self.family(), self.base() | !self.mask() & family_mask(self.family()))
    }

    /// The `index`-th address of the network, or `None` past its end.
    pub fn nth(&self, index: u128) -> Option<IpAddr> {
        if index >= self.size() && self.host_bits() < 128 {
            return None;
        }
        Some(from_u128(self.family(), self.base() + index))
    }

    /// The offset of `ip` inside this network, or `None` when it lies outside.
    pub fn index_of(&self, ip: IpAddr) -> Option<u128> {
        if !self.contains(ip) {
            return None;
        }
        Some(to_u128(ip) - self.base())
    }

    /// True when `ip` is inside this network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        Family::of(ip) == self.family() && to_u128(ip) & self.mask() == self.base()
    }

    /// True when the two networks share any address.
    pub fn overlaps(&self, other: &Cidr) -> bool {
        if self.family() != other.family() {
            return false;
        }
        let shorter = if self.len <= other.len { self } else { other };
        shorter.contains(if shorter == self { other.addr } else { self.addr })
    }

    /// The `index`-th sub-network of length `len` inside this one.
    pub fn subnet(&self, len: u8, index: u128) -> Option<Cidr> {
        if len < self.len || len > self.family().bits() {
            return None;
        }
        let count_bits = len - self.len;
        if count_bits < 128 && index >= (1u128 << count_bits) {
            return None;
        }
        let step_bits = self.family().bits() - len;
        let offset = if step_bits >= 128 { 0 } else { index << step_bits };
        Some(Cidr { addr: from_u128(self.family(), self.base() + offset), len })
    }

    fn mask(&self) -> u128 {
        let bits = self.family().bits();
        let host = bits - self.len;
        let all = family_mask(self.family());
        if host >= 128 { 0 } else { all & !((1u128 << host) - 1) }
    }
}

fn family_mask(family: Family) -> u128 {
    match family {
        Family::V4 => u32::MAX as u128,
        Family::V6 => u128::MAX,
    }
}

/// An address as a number (IPv4 in the low 32 bits).
pub fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u32::from(v4) as u128,
        IpAddr::V6(v6) => u128::from(v6),
    }
}

/// A number as an address of `family` (IPv4 takes the low 32 bits).
pub fn from_u128(family: Family, value: u128) -> IpAddr {
    match family {
        Family::V4 => IpAddr::V4(Ipv4Addr::from(value as u32)),
        Family::V6 => IpAddr::V6(Ipv6Addr::from(value)),
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl FromStr for Cidr {
    type Err = IpamError;

    /// Parses `ADDR/LEN`; a bare address is a host prefix (/32 or /128).
    fn from_str(s: &str) -> Result<Cidr, IpamError> {
        let bad = || IpamError::CidrSyntax(s.to_string());
        let (addr, len) = match s.split_once('/') {
            Some((a, l)) => {
                if l.is_empty() || !l.bytes().all(|b| b.is_ascii_digit()) || l.len() > 3 {
                    return Err(bad());
                }
                (a, Some(l.parse::<u8>().map_err(|_| bad())?))
            }
            None => (s, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| bad())?;
        let len = len.unwrap_or(Family::of(addr).bits());
        Cidr::new(addr, len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(s: &str) -> Cidr {
        s.parse().unwrap()
    }

    #[test]
    fn parses_and_prints() {
        assert_eq!(c("10.44.0.0/16").to_string(), "10.44.0.0/16");
        assert_eq!(c("10.0.0.1").prefix_len(), 32);
        assert_eq!(c("fd00::/64").prefix_len(), 64);
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("10.0.0.300/24".parse::<Cidr>().is_err());
        assert!("10.0.0.0/".parse::<Cidr>().is_err());
        assert!("10.0.0.0/+8".parse::<Cidr>().is_err());
        assert!("fd00::/129".parse::<Cidr>().is_err());
    }

    #[test]
    fn network_math() {
        let n = c("10.44.3.7/16");
        assert!(!n.is_network());
        assert_eq!(n.network(), c("10.44.0.0/16"));
        assert_eq!(n.last().to_string(), "10.44.255.255");
        assert_eq!(c("10.44.0.0/16").subnet(24, 3), Some(c("10.44.3.0/24")));
        assert_eq!(c("10.44.0.0/16").subnet(24, 256), None);
        assert_eq!(c("10.44.0.0/24").nth(1).unwrap().to_string(), "10.44.0.1");
        assert_eq!(c("10.44.0.0/24").index_of("10.44.0.9".parse().unwrap()), Some(9));
        assert!(c("10.44.0.0/16").overlaps(&c("10.44.7.0/24")));
        assert!(c("10.44.7.0/24").overlaps(&c("10.0.0.0/8")));
        assert!(!c("10.44.0.0/16").overlaps(&c("10.45.0.0/16")));
        assert!(!c("10.44.0.0/16").overlaps(&c("fd00::/8")));
        assert_eq!(c("0.0.0.0/0").size(), 1 << 32);
        assert_eq!(c("::/0").subnet(1, 1), Some(c("8000::/1")));
        assert!(Cidr::network_of("10.0.0.1".parse().unwrap(), 24).is_err());
    }
}
