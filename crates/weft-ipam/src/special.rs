//! Address ranges no container network may use: a subnet overlapping one of them would put
//! container addresses where the host's own stack gives them another meaning (loopback,
//! link-local, multicast, "this network", the reserved and broadcast ranges). Documentation and
//! private ranges are ordinary subnets.

use crate::Cidr;

/// The special-use ranges (IANA's registries), with what each is.
const SPECIAL: &[(&str, &str)] = &[
    ("0.0.0.0/8", "\"this network\" (0.0.0.0/8)"),
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local"),
    ("224.0.0.0/4", "multicast"),
    ("240.0.0.0/4", "reserved (240.0.0.0/4 and the broadcast address)"),
    ("::/128", "the unspecified address"),
    ("::1/128", "loopback"),
    ("::ffff:0:0/96", "IPv4-mapped"),
    ("fe80::/10", "link-local"),
    ("ff00::/8", "multicast"),
];

/// The special-use range `subnet` overlaps, and what it is, if any.
pub fn special_use(subnet: &Cidr) -> Option<(Cidr, &'static str)> {
    SPECIAL.iter().find_map(|(range, what)| {
        let range: Cidr = range.parse().expect("the table's ranges parse");
        range.overlaps(subnet).then_some((range, *what))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(text: &str) -> Cidr {
        text.parse().unwrap()
    }

    #[test]
    fn host_ranges_are_special_and_ordinary_subnets_are_not() {
        for (subnet, what) in [
            ("127.0.0.0/16", "loopback"),
            ("0.0.0.0/0", "\"this network\" (0.0.0.0/8)"),
            ("224.1.0.0/16", "multicast"),
            ("169.254.10.0/24", "link-local"),
            ("255.255.255.0/24", "reserved (240.0.0.0/4 and the broadcast address)"),
            ("fe80::/64", "link-local"),
            ("ff02::/16", "multicast"),
            ("::1/128", "loopback"),
        ] {
            assert_eq!(special_use(&cidr(subnet)).map(|(_, w)| w), Some(what), "{subnet}");
        }
        for ordinary in [
            "10.44.0.0/16",
            "172.17.0.0/16",
            "192.168.0.0/24",
            "198.51.100.0/24",
            "fd00:44::/64",
            "2001:db8::/64",
        ] {
            assert_eq!(special_use(&cidr(ordinary)), None, "{ordinary}");
        }
    }
}
