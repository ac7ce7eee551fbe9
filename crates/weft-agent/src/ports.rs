//! Published ports (`-p [ip:]host:container[/tcp|udp]`): parsing, conflict checks, and weft's
//! own nftables table of DNAT rules, `inet weft_ports`, rewritten whole whenever the set
//! changes. A port is published on the host's IPv4 addresses towards the container's IPv4
//! address and on its IPv6 addresses towards the container's IPv6 address, for the families the
//! container has (as Docker does with IPv6 enabled). Pure but for [`apply`].

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::error::{HostError, Result};

/// The name of weft's port table (family inet: both IPv4 and IPv6).
pub const TABLE: &str = "inet weft_ports";

/// The IPv4-only table earlier versions loaded; removed with every load of [`TABLE`].
const LEGACY_TABLE: &str = "ip weft_ports";

/// One published port.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PortSpec {
    /// `tcp` or `udp`.
    pub protocol: String,
    /// The host port.
    pub host_port: u16,
    /// Only this host address (all local addresses when `None`).
    pub host_ip: Option<IpAddr>,
    /// The container's port.
    pub container_port: u16,
    /// The container's IPv4 address (an IPv6 one only in files of earlier versions), once it
    /// has one.
    pub container_ip: Option<IpAddr>,
    /// The container's IPv6 address, when its network has an IPv6 subnet.
    #[serde(default)]
    pub container_ip6: Option<IpAddr>,
}

impl PortSpec {
    /// This mapping towards the container at `ips` (its first address of each family).
    pub fn to(self, ips: &[IpAddr]) -> PortSpec {
        PortSpec {
            container_ip: ips.iter().find(|ip| ip.is_ipv4()).copied(),
            container_ip6: ips.iter().find(|ip| ip.is_ipv6()).copied(),
            ..self
        }
    }

    /// Where this port leads, per family: (IPv4 target, IPv6 target).
    fn targets(&self) -> (Option<IpAddr>, Option<IpAddr>) {
        let mut v4 = None;
        let mut v6 = self.container_ip6;
        match self.container_ip {
            Some(ip) if ip.is_ipv4() => v4 = Some(ip),
            Some(ip) => v6 = v6.or(Some(ip)),
            None => {}
        }
        (v4, v6)
    }
}

fn port(text: &str, what: &str, whole: &str) -> Result<u16> {
    match text.parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(HostError::Invalid(format!("-p {whole}: {what} port {text:?} must be 1-65535"))),
    }
}

/// Parses `[ip:]host:container[/tcp|udp]`.
pub fn parse(text: &str) -> Result<PortSpec> {
    let (rest, protocol) = match text.rsplit_once('/') {
        Some((rest, p @ ("tcp" | "udp"))) => (rest, p),
        Some((_, p)) => {
            return Err(HostError::Invalid(format!("-p {text}: protocol {p:?} must be tcp or udp")));
        }
        None => (text, "tcp"),
    };
    // `[IPv6]:host:container`, as Docker writes an IPv6 host address.
    let (bracketed, rest) = match rest.strip_prefix('[') {
        Some(inner) => match inner.split_once("]:") {
            Some((ip, rest)) => (Some(ip), rest),
            None => {
                return Err(HostError::Invalid(format!(
                    "-p {text}: an IPv6 host address is written [IP]:HOST_PORT:CONTAINER_PORT"
                )));
            }
        },
        None => (None, rest),
    };
    let parts: Vec<&str> = rest.rsplitn(3, ':').collect();
    let ip_text = match (bracketed, parts.as_slice()) {
        (Some(ip), [_, _]) => Some(ip),
        (None, [_, _, ip]) => Some(*ip),
        (None, [_, _]) => None,
        _ => {
            return Err(HostError::Invalid(format!(
                "-p {text}: expected [IP:]HOST_PORT:CONTAINER_PORT[/tcp|udp]"
            )));
        }
    };
    let (container, host) = (parts[0], parts[1]);
    let host_ip = match ip_text {
        None => None,
        Some(ip) => Some(
            ip.parse::<IpAddr>()
                .map_err(|_| HostError::Invalid(format!("-p {text}: {ip:?} is not an IP address")))?,
        ),
    };
    Ok(PortSpec {
        protocol: protocol.into(),
        host_port: port(host, "host", text)?,
        host_ip,
        container_port: port(container, "container", text)?,
        container_ip: None,
        container_ip6: None,
    })
}

fn clash(a: &PortSpec, b: &PortSpec) -> bool {
    a.protocol == b.protocol
        && a.host_port == b.host_port
        && (a.host_ip.is_none() || b.host_ip.is_none() || a.host_ip == b.host_ip)
}

/// Refuses `new` ports that clash with `existing` ones or with each other.
pub fn check_free(existing: &[PortSpec], new: &[PortSpec]) -> Result<()> {
    for (i, p) in new.iter().enumerate() {
        if existing.iter().chain(&new[..i]).any(|e| clash(e, p)) {
            return Err(HostError::Conflict(format!(
                "port {}/{} is already published on this host: pick another host port",
                p.host_port, p.protocol
            )));
        }
    }
    Ok(())
}

/// The nft script that (re)defines weft's port table: DNAT in prerouting (from other hosts)
/// and output (from this host itself) for every port, towards the container's address of the
/// same family as the host address the packet came to.
pub fn script(ports: &[PortSpec]) -> String {
    let mut s =
        format!("table {LEGACY_TABLE}\ndelete table {LEGACY_TABLE}\ntable {TABLE}\ndelete table {TABLE}\n");
    let mut rules = Vec::new();
    for p in ports {
        let (v4, v6) = p.targets();
        for (target, family, nat) in [(v4, "ipv4", "ip"), (v6, "ipv6", "ip6")] {
            let Some(ip) = target else { continue };
            let dst = match p.host_ip {
                Some(h) if h.is_ipv4() != (family == "ipv4") => continue,
                Some(h) => format!("{nat} daddr {h}"),
                None => format!("meta nfproto {family} fib daddr type local"),
            };
            let to = if ip.is_ipv6() { format!("[{ip}]") } else { ip.to_string() };
            rules.push(format!(
                "    {dst} {} dport {} counter dnat {nat} to {to}:{}\n",
                p.protocol, p.host_port, p.container_port
            ));
        }
    }
    if rules.is_empty() {
        return s;
    }
    s.push_str(&format!("table {TABLE} {{\n"));
    s.push_str("  chain prerouting {\n    type nat hook prerouting priority dstnat; policy accept;\n");
    rules.iter().for_each(|r| s.push_str(r));
    s.push_str("  }\n  chain output {\n    type nat hook output priority -100; policy accept;\n");
    rules.iter().for_each(|r| s.push_str(r));
    s.push_str("  }\n}\n");
    s
}

/// Loads `script` with `nft -f -`.
pub async fn apply(script: &str) -> std::io::Result<()> {
    weft_overlay::firewall::apply(script).await
}

/// The port table as the kernel holds it now, without counters, or `None` when it is missing.
pub async fn listing() -> Option<String> {
    weft_overlay::firewall::listing_of(TABLE).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_forms_and_errors() {
        let p = parse("8080:80").unwrap();
        assert_eq!((p.host_ip, p.host_port, p.container_port, p.protocol.as_str()), (None, 8080, 80, "tcp"));
        let p = parse("198.51.100.7:53:5353/udp").unwrap();
        assert_eq!(
            (p.host_ip.unwrap().to_string(), p.host_port, p.protocol.as_str()),
            ("198.51.100.7".into(), 53, "udp")
        );
        let p = parse("[2001:db8::7]:8443:443").unwrap();
        assert_eq!(
            (p.host_ip.unwrap().to_string(), p.host_port, p.container_port),
            ("2001:db8::7".into(), 8443, 443)
        );
        for (bad, want) in [
            ("80", "expected"),
            ("0:80", "host port"),
            ("80:99999", "container port"),
            ("80:80/sctp", "tcp or udp"),
            ("x:80:80", "not an IP"),
            ("[2001:db8::7:80:80", "[IP]:HOST_PORT"),
            ("[x]:80:80", "not an IP"),
            ("[::1]:1:80:80", "expected"),
        ] {
            let err = parse(bad).unwrap_err().to_string();
            assert!(err.contains(want), "{bad}: {err}");
        }
    }

    #[test]
    fn clashes_and_script() {
        let a = parse("8080:80").unwrap();
        let b = parse("198.51.100.7:8080:81").unwrap();
        let c = parse("8080:80/udp").unwrap();
        assert!(
            check_free(std::slice::from_ref(&a), std::slice::from_ref(&b))
                .unwrap_err()
                .to_string()
                .contains("already published")
        );
        assert!(check_free(std::slice::from_ref(&a), std::slice::from_ref(&c)).is_ok());
        assert!(check_free(&[], &[c.clone(), c.clone()]).is_err());
        let ips: Vec<IpAddr> = vec!["10.44.0.2".parse().unwrap(), "fd00:44::2".parse().unwrap()];
        let v6 = parse("[2001:db8::7]:8443:443").unwrap();
        let text = script(&[a.clone().to(&ips), b.to(&ips[..1]), v6.to(&ips)]);
        for want in [
            "meta nfproto ipv4 fib daddr type local tcp dport 8080 counter dnat ip to 10.44.0.2:80",
            "meta nfproto ipv6 fib daddr type local tcp dport 8080 counter dnat ip6 to [fd00:44::2]:80",
            "ip daddr 198.51.100.7 tcp dport 8080 counter dnat ip to 10.44.0.2:81",
            "ip6 daddr 2001:db8::7 tcp dport 8443 counter dnat ip6 to [fd00:44::2]:443",
        ] {
            assert!(text.contains(want), "{want}\n{text}");
        }
        assert!(!text.contains("dnat ip6 to [fd00:44::2]:81"), "b's container has no IPv6 target: {text}");
        assert_eq!(
            script(&[]),
            "table ip weft_ports\ndelete table ip weft_ports\ntable inet weft_ports\ndelete table inet weft_ports\n"
        );
        // A file of an earlier version: one address, which may be either family.
        let old = PortSpec { container_ip: Some(ips[1]), ..a.clone() };
        assert!(script(&[old]).contains("dnat ip6 to [fd00:44::2]:80"));
    }
}
