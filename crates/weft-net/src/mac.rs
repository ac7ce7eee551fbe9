//! Ethernet addresses.

use std::fmt;
use std::str::FromStr;

use crate::NetError;

/// A 48-bit Ethernet address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// A locally administered unicast address derived from `seed` (FNV-1a), so that the same seed
    /// gives the same address on every host and after every restart; weft derives a VTEP's MAC
    /// from (node id, VNI) this way.
    pub fn derived(seed: &[u8]) -> MacAddr {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in seed {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
        let b = hash.to_be_bytes();
        // Locally administered (bit 1 set), unicast (bit 0 clear).
        MacAddr([(b[2] & 0xfe) | 0x02, b[3], b[4], b[5], b[6], b[7]])
    }

    /// The address from a netlink attribute, if it has six bytes.
    pub fn from_slice(bytes: &[u8]) -> Option<MacAddr> {
        <[u8; 6]>::try_from(bytes).ok().map(MacAddr)
    }

    /// The six bytes.
    pub fn octets(&self) -> [u8; 6] {
        self.0
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(f, "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", b[0], b[1], b[2], b[3], b[4], b[5])
    }
}

impl FromStr for MacAddr {
    type Err = NetError;

    fn from_str(s: &str) -> Result<MacAddr, NetError> {
        let bad = || NetError::invalid("MAC address", s, "expected six hex bytes like 02:42:0a:2c:00:05");
        let mut out = [0u8; 6];
        let mut parts = s.split(':');
        for slot in &mut out {
            let part = parts.next().ok_or_else(bad)?;
            if part.len() != 2 {
                return Err(bad());
            }
            *slot = u8::from_str_radix(part, 16).map_err(|_| bad())?;
        }
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(MacAddr(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_is_stable_local_unicast() {
        let a = MacAddr::derived(b"node-1/vni-42");
        assert_eq!(a, MacAddr::derived(b"node-1/vni-42"));
        assert_ne!(a, MacAddr::derived(b"node-2/vni-42"));
        assert_eq!(a.0[0] & 0x03, 0x02);
        assert_eq!(a.to_string().parse::<MacAddr>().unwrap(), a);
        assert!("02:42:0a".parse::<MacAddr>().is_err());
        assert!("02:42:0a:2c:00:05:07".parse::<MacAddr>().is_err());
    }
}
