//! CIDR prefixes as plain values, for IPv4 and IPv6 alike: a thin newtype over
//! [`ipnetwork::IpNetwork`], which parses, validates and answers containment, with the index
//! arithmetic weft's pools need on top (the `n`-th block of a pool, an address's offset).

use core::fmt;
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use core::str::FromStr;

use ipnetwork::IpNetwork;

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

    /// The name used in labels and JSON: `ipv4` or `ipv6`.
    pub const fn name(self) -> &'static str {
        match self {
            Family::V4 => "ipv4",
            Family::V6 => "ipv6",
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An address with a prefix length, such as `10.44.0.5/16` or `fd00::/64`.
///
/// The address may have host bits set (an interface address); [`Cidr::network`] and
/// [`Cidr::is_network`] tell the network apart from such an address. Ordered by family, then
/// address, then prefix length.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cidr(IpNetwork);

impl Cidr {
    /// A prefix of `len` bits at `addr`; refuses a length longer than the family allows.
    pub fn new(addr: IpAddr, len: u8) -> Result<Cidr, IpamError> {
        IpNetwork::new(addr, len).map(Cidr).map_err(|_| IpamError::PrefixLength {
            addr,
            len,
            max: Family::of(addr).bits(),
        })
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

    /// The [`ipnetwork`] value underneath.
    pub const fn ip_network(&self) -> IpNetwork {
        self.0
    }

    /// The address as given (host bits kept).
    pub fn addr(&self) -> IpAddr {
        self.0.ip()
    }

    /// The prefix length in bits.
    pub fn prefix_len(&self) -> u8 {
        self.0.prefix()
    }

    /// The address family.
    pub const fn family(&self) -> Family {
        match self.0 {
            IpNetwork::V4(_) => Family::V4,
            IpNetwork::V6(_) => Family::V6,
        }
    }

    /// Number of host bits (family bits minus prefix length).
    pub fn host_bits(&self) -> u8 {
        self.family().bits() - self.prefix_len()
    }

    /// Number of addresses covered, as `u128` (a /0 IPv6 prefix saturates to `u128::MAX`).
    pub fn size(&self) -> u128 {
        // Not ipnetwork's `size()`: it saturates an IPv4 /0 to `u32::MAX`, one short.
        pow2(self.host_bits())
    }

    /// The network prefix: host bits cleared.
    pub fn network(&self) -> Cidr {
        // The same, valid prefix length: never refused.
        Cidr::new(self.0.network(), self.prefix_len()).unwrap_or(*self)
    }

    /// True when no host bit is set.
    pub fn is_network(&self) -> bool {
        self.0.ip() == self.0.network()
    }

    /// The network address as a number.
    pub fn base(&self) -> u128 {
        to_u128(self.0.network())
    }

    /// The last address covered (the IPv4 broadcast address).
    pub fn last(&self) -> IpAddr {
        self.0.broadcast()
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

    /// True when `ip` is inside this network (never for the other family).
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.contains(ip)
    }

    /// True when the two networks share any address.
    pub fn overlaps(&self, other: &Cidr) -> bool {
        match (self.0, other.0) {
            (IpNetwork::V4(a), IpNetwork::V4(b)) => a.overlaps(b),
            (IpNetwork::V6(a), IpNetwork::V6(b)) => a.overlaps(b),
            _ => false,
        }
    }

    /// The `index`-th sub-network of length `len` inside this one.
    pub fn subnet(&self, len: u8, index: u128) -> Option<Cidr> {
        if len < self.prefix_len() || len > self.family().bits() {
            return None;
        }
        let count_bits = len - self.prefix_len();
        if count_bits < 128 && index >= (1u128 << count_bits) {
            return None;
        }
        let step_bits = self.family().bits() - len;
        let offset = if step_bits >= 128 { 0 } else { index << step_bits };
        Cidr::new(from_u128(self.family(), self.base() + offset), len).ok()
    }
}

/// `2^bits`, saturating at `u128::MAX` for 128 bits and more.
pub(crate) const fn pow2(bits: u8) -> u128 {
    if bits >= 128 { u128::MAX } else { 1u128 << bits }
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

impl From<IpNetwork> for Cidr {
    fn from(net: IpNetwork) -> Cidr {
        Cidr(net)
    }
}

impl From<Cidr> for IpNetwork {
    fn from(cidr: Cidr) -> IpNetwork {
        cidr.0
    }
}

impl fmt::Debug for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cidr").field("addr", &self.addr()).field("len", &self.prefix_len()).finish()
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr(), self.prefix_len())
    }
}

impl FromStr for Cidr {
    type Err = IpamError;

    /// Parses `ADDR/LEN`; a bare address is a host prefix (/32 or /128).
    ///
    /// Stricter than ipnetwork's own parser on purpose: the length is one to three decimal
    /// digits, never a sign or a dotted netmask, so what weft accepts stays what it always did.
    fn from_str(s: &str) -> Result<Cidr, IpamError> {
        let bad = || IpamError::CidrSyntax(s.to_string());
        let len_text = s.split_once('/').map(|(_, l)| l);
        if let Some(l) = len_text
            && (l.is_empty() || l.len() > 3 || !l.bytes().all(|b| b.is_ascii_digit()))
        {
            return Err(bad());
        }
        match s.parse::<IpNetwork>() {
            Ok(net) => Ok(Cidr(net)),
            // ipnetwork says only "invalid": tell a too-long length apart from a bad address.
            Err(_) => {
                let (addr, len) = s.split_once('/').ok_or_else(bad)?;
                let addr: IpAddr = addr.parse().map_err(|_| bad())?;
                let len: u8 = len.parse().map_err(|_| bad())?;
                Err(Cidr::new(addr, len).err().unwrap_or_else(bad))
            }
        }
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
        assert_eq!(c("fd00::1").to_string(), "fd00::1/128");
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("10.0.0.300/24".parse::<Cidr>().is_err());
        assert!("10.0.0.0/".parse::<Cidr>().is_err());
        assert!("10.0.0.0/+8".parse::<Cidr>().is_err());
        assert!("fd00::/129".parse::<Cidr>().is_err());
    }

    #[test]
    fn refuses_what_ipnetwork_alone_would_take() {
        for text in ["10.0.0.0/255.255.0.0", "10.0.0.0/0016", "10.0.0.0/8/8", "10.1/16", " 10.0.0.0/8"] {
            assert_eq!(text.parse::<Cidr>(), Err(IpamError::CidrSyntax(text.into())), "{text}");
        }
    }

    #[test]
    fn errors_keep_their_messages() {
        let err = "banana".parse::<Cidr>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid CIDR \"banana\": expected ADDRESS/PREFIX-LENGTH, e.g. 10.44.0.0/16"
        );
        let err = "10.0.0.0/33".parse::<Cidr>().unwrap_err();
        assert_eq!(err.to_string(), "prefix length /33 does not fit address 10.0.0.0 (at most /32)");
        let err = "fd00::/200".parse::<Cidr>().unwrap_err();
        assert_eq!(err.to_string(), "prefix length /200 does not fit address fd00:: (at most /128)");
        assert!(matches!("10.0.0.0/300".parse::<Cidr>(), Err(IpamError::CidrSyntax(_))));
        let err = Cidr::network_of("10.0.0.1".parse().unwrap(), 24).unwrap_err();
        assert_eq!(err.to_string(), "10.0.0.1/24 has host bits set: did you mean 10.0.0.0/24?");
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
        assert!(c("fd00::/8").overlaps(&c("fd00:90::/64")));
        assert!(!c("fd00::/64").contains("10.0.0.1".parse().unwrap()));
        assert_eq!(c("0.0.0.0/0").size(), 1 << 32);
        assert_eq!(c("::/0").size(), u128::MAX);
        assert_eq!(c("fd00::/64").size(), 1 << 64);
        assert_eq!(c("::/0").subnet(1, 1), Some(c("8000::/1")));
        assert_eq!(c("fd00::5/64").network(), c("fd00::/64"));
        assert_eq!(c("fd00::/64").last().to_string(), "fd00::ffff:ffff:ffff:ffff");
        assert!(Cidr::network_of("10.0.0.1".parse().unwrap(), 24).is_err());
    }

    #[test]
    fn order_and_debug_stay() {
        let mut list = vec![c("fd00::/64"), c("10.44.0.0/24"), c("10.44.0.0/16"), c("9.0.0.0/8")];
        list.sort();
        assert_eq!(list, [c("9.0.0.0/8"), c("10.44.0.0/16"), c("10.44.0.0/24"), c("fd00::/64")]);
        assert_eq!(format!("{:?}", c("10.44.0.0/16")), "Cidr { addr: 10.44.0.0, len: 16 }");
        let net: IpNetwork = c("fd00::/64").into();
        assert_eq!(Cidr::from(net), c("fd00::/64"));
    }
}
