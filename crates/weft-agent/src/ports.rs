//! Published ports (`-p [ip:]host:container[/tcp|udp]`): parsing, conflict checks, and weft's
//! own nftables table of DNAT rules, `ip weft_ports`, rewritten whole whenever the set changes.
//! Pure but for [`apply`].

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::error::{HostError, Result};

/// The name of weft's port table (family ip).
pub const TABLE: &str = "ip weft_ports";

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
    /// The container's address, once it has one.
    pub container_ip: Option<IpAddr>,
}

impl PortSpec {
    /// This mapping towards the container at `ip`.
    pub fn to(self, ip: IpAddr) -> PortSpec {
        PortSpec { container_ip: Some(ip), ..self }
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
    let parts: Vec<&str> = rest.rsplitn(3, ':').collect();
    let (host_ip, host, container) = match parts.as_slice() {
        [container, host] => (None, *host, *container),
        [container, host, ip] => {
            let ip: IpAddr = ip
                .parse()
                .map_err(|_| HostError::Invalid(format!("-p {text}: {ip:?} is not an IP address")))?;
            if !ip.is_ipv4() {
                return Err(HostError::Invalid(format!(
                    "-p {text}: only IPv4 host addresses can be published"
                )));
            }
            (Some(ip), *host, *container)
        }
        _ => {
            return Err(HostError::Invalid(format!(
                "-p {text}: expected [IP:]HOST_PORT:CONTAINER_PORT[/tcp|udp]"
            )));
        }
    };
    Ok(PortSpec {
        protocol: protocol.into(),
        host_port: port(host, "host", text)?,
        host_ip,
        container_port: port(container, "container", text)?,
        container_ip: None,
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
/// and output (from this host itself) for every port, towards the container's address.
pub fn script(ports: &[PortSpec]) -> String {
    let mut s = format!("table {TABLE}\ndelete table {TABLE}\n");
    let rules: Vec<String> = ports
        .iter()
        .filter_map(|p| {
            let ip = p.container_ip?;
            let dst = match p.host_ip {
                Some(h) => format!("ip daddr {h}"),
                None => "fib daddr type local".into(),
            };
            Some(format!(
                "    {dst} {} dport {} counter dnat to {ip}:{}\n",
                p.protocol, p.host_port, p.container_port
            ))
        })
        .collect();
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
        for (bad, want) in [
            ("80", "expected"),
            ("0:80", "host port"),
            ("80:99999", "container port"),
            ("80:80/sctp", "tcp or udp"),
            ("x:80:80", "not an IP"),
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
        let ip: IpAddr = "10.44.0.2".parse().unwrap();
        let text = script(&[a.to(ip), b.to(ip)]);
        assert!(text.contains("fib daddr type local tcp dport 8080 counter dnat to 10.44.0.2:80"), "{text}");
        assert!(text.contains("ip daddr 198.51.100.7 tcp dport 8080 counter dnat to 10.44.0.2:81"));
        assert_eq!(script(&[]), "table ip weft_ports\ndelete table ip weft_ports\n");
    }
}
