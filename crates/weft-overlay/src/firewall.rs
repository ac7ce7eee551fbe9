//! weft's nftables table: isolation between networks, masquerade for non-internal networks, and
//! the VXLAN allow-list. weft owns exactly one table, `inet weft`, and replaces it atomically; it
//! never flushes or edits anyone else's rules.

use std::net::IpAddr;

use crate::desired::{Desired, VXLAN_PORT, bridge_name, vxlan_name};

/// The family and name of weft's table.
pub const TABLE: &str = "inet weft";

fn quoted_set<'a>(names: impl IntoIterator<Item = &'a String>) -> String {
    let items: Vec<String> = names.into_iter().map(|n| format!("\"{n}\"")).collect();
    format!("{{ {} }}", items.join(", "))
}

/// The nft script that (re)defines weft's table for `desired`, atomically: it creates the table if
/// needed, deletes it, and defines it again, in one transaction.
pub fn script(desired: &Desired) -> String {
    let mut s = String::new();
    s.push_str(&format!("table {TABLE}\ndelete table {TABLE}\ntable {TABLE} {{\n"));
    let v4: Vec<String> =
        desired.cluster_hosts.iter().filter(|a| a.is_ipv4()).map(IpAddr::to_string).collect();
    let v6: Vec<String> =
        desired.cluster_hosts.iter().filter(|a| a.is_ipv6()).map(IpAddr::to_string).collect();
    s.push_str("  set cluster_hosts4 {\n    type ipv4_addr\n");
    if !v4.is_empty() {
        s.push_str(&format!("    elements = {{ {} }}\n", v4.join(", ")));
    }
    s.push_str("  }\n  set cluster_hosts6 {\n    type ipv6_addr\n");
    if !v6.is_empty() {
        s.push_str(&format!("    elements = {{ {} }}\n", v6.join(", ")));
    }
    s.push_str("  }\n");
    s.push_str("  chain input {\n    type filter hook input priority filter; policy accept;\n");
    s.push_str(&format!(
        "    meta nfproto ipv4 udp dport {VXLAN_PORT} ip saddr != @cluster_hosts4 counter drop\n"
    ));
    s.push_str(&format!(
        "    meta nfproto ipv6 udp dport {VXLAN_PORT} ip6 saddr != @cluster_hosts6 counter drop\n"
    ));
    s.push_str("  }\n");

    // Connection tracking is only needed for masquerade and published ports: VXLAN itself and
    // traffic inside one network skip it (measured: conntrack costs the overlay ~5% throughput).
    s.push_str("  chain raw_prerouting {\n    type filter hook prerouting priority raw; policy accept;\n");
    s.push_str(&format!("    udp dport {VXLAN_PORT} notrack\n"));
    for net in desired.networks.values() {
        for subnet in &net.subnets {
            let proto = if subnet.addr().is_ipv4() { "ip" } else { "ip6" };
            s.push_str(&format!("    {proto} saddr {subnet} {proto} daddr {subnet} notrack\n"));
        }
    }
    for b in desired.bridges.values() {
        for subnet in &b.subnets {
            let proto = if subnet.addr().is_ipv4() { "ip" } else { "ip6" };
            s.push_str(&format!("    {proto} saddr {subnet} {proto} daddr {subnet} notrack\n"));
        }
    }
    s.push_str("  }\n  chain raw_output {\n    type filter hook output priority raw; policy accept;\n");
    s.push_str(&format!("    udp dport {VXLAN_PORT} notrack\n  }}\n"));

    // Every network's own devices: an overlay's bridge and vxlan device, a bridge network's bridge.
    struct Member {
        label: String,
        own: Vec<String>,
        subnets: Vec<weft_ipam::Cidr>,
        internal: bool,
    }
    let mut members: Vec<Member> = desired
        .networks
        .iter()
        .map(|(vni, n)| Member {
            label: vni.to_string(),
            own: vec![bridge_name(*vni), vxlan_name(*vni)],
            subnets: n.subnets.clone(),
            internal: n.internal,
        })
        .collect();
    members.extend(desired.bridges.iter().map(|(dev, b)| Member {
        label: dev.clone(),
        own: vec![dev.clone()],
        subnets: b.subnets.clone(),
        internal: b.internal,
    }));
    let all: Vec<String> = members.iter().flat_map(|m| m.own.iter().cloned()).collect();
    s.push_str("  chain forward {\n    type filter hook forward priority filter; policy accept;\n");
    for m in &members {
        let own_set = quoted_set(&m.own);
        if all.len() > m.own.len() {
            s.push_str(&format!(
                "    iifname {own_set} oifname != {own_set} oifname {} counter drop comment \"isolate {}\"\n",
                quoted_set(&all),
                m.label
            ));
        }
        if m.internal {
            s.push_str(&format!(
                "    iifname {own_set} oifname != {own_set} counter drop comment \"internal {}\"\n",
                m.label
            ));
            s.push_str(&format!(
                "    oifname {own_set} iifname != {own_set} counter drop comment \"internal {}\"\n",
                m.label
            ));
        }
    }
    s.push_str("  }\n");
    s.push_str("  chain postrouting {\n    type nat hook postrouting priority srcnat; policy accept;\n");
    for m in members.iter().filter(|m| !m.internal) {
        let own_set = quoted_set(&m.own);
        for subnet in &m.subnets {
            let proto = if subnet.addr().is_ipv4() { "ip" } else { "ip6" };
            s.push_str(&format!(
                "    {proto} saddr {subnet} {proto} daddr != {subnet} oifname != {own_set} counter masquerade\n"
            ));
        }
    }
    s.push_str("  }\n}\n");
    s
}

/// Runs `nft -f -` with `script` in the calling thread's network namespace.
pub async fn apply(script: &str) -> std::io::Result<()> {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new("nft")
        .args(["-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    let mut stdin = child.stdin.take().expect("piped stdin");
    stdin.write_all(script.as_bytes()).await?;
    drop(stdin);
    let out = child.wait_with_output().await?;
    if out.status.success() {
        Ok(())
    } else {
        Err(std::io::Error::other(format!("nft -f -: {}", String::from_utf8_lossy(&out.stderr).trim())))
    }
}

/// True when weft's table exists in the calling thread's namespace.
/// weft's table as the kernel holds it now, without counters (`nft -s`), or `None` when it is
/// missing: what a change notification is checked against.
pub async fn listing() -> Option<String> {
    listing_of(TABLE).await
}

/// Table `table` (`FAMILY NAME`) as the kernel holds it now, without counters, or `None`.
pub async fn listing_of(table: &str) -> Option<String> {
    let out = tokio::process::Command::new("nft")
        .args(["-s", "list", "table", table])
        .stderr(std::process::Stdio::null())
        .output()
        .await
        .ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// True when weft's table exists.
pub async fn table_exists() -> bool {
    tokio::process::Command::new("nft")
        .args(["list", "table", "inet", "weft"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .await
        .is_ok_and(|s| s.success())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::desired;
    use weft_state::{Driver, Role, State, cmd, pb};

    #[test]
    fn script_isolates_masquerades_and_allow_lists() {
        let mut s = State::new();
        s.apply(&cmd::register_node(1, "h1", "198.51.100.1", Role::Worker, 0)).unwrap();
        s.apply(&cmd::register_node(2, "h2", "198.51.100.2", Role::Worker, 0)).unwrap();
        s.apply(&cmd::create_network("a", Driver::Overlay, &["10.44.0.0/16"], 1, 0)).unwrap();
        let mut internal = cmd::create_network("b", Driver::Overlay, &["10.45.0.0/16"], 2, 0);
        if let Some(pb::command::Kind::CreateNetwork(c)) = &mut internal.kind {
            c.internal = true;
        }
        s.apply(&internal).unwrap();
        s.apply(&cmd::allocate_endpoint("a", 1, "x", "", "")).unwrap();
        s.apply(&cmd::allocate_endpoint("b", 1, "y", "", "")).unwrap();
        s.apply(&cmd::create_network("bridge", Driver::Bridge, &["172.17.0.0/16"], 0, 0)).unwrap();
        s.apply(&cmd::allocate_endpoint("bridge", 1, "z", "", "")).unwrap();
        let text = script(&desired(&s, 1, 1500));
        assert!(text.contains(
            "iifname { \"weft0\" } oifname != { \"weft0\" } oifname { \"wbr-1\", \"wvx-1\", \"wbr-2\", \"wvx-2\", \"weft0\" } counter drop"
        ), "{text}");
        assert!(text.contains(
            "ip saddr 172.17.0.0/16 ip daddr != 172.17.0.0/16 oifname != { \"weft0\" } counter masquerade"
        ));
        assert!(text.starts_with("table inet weft\ndelete table inet weft\n"));
        assert!(text.contains("elements = { 198.51.100.1, 198.51.100.2 }"));
        assert!(text.contains("udp dport 4789 ip saddr != @cluster_hosts4 counter drop"));
        assert!(text.contains(
            "iifname { \"wbr-1\", \"wvx-1\" } oifname != { \"wbr-1\", \"wvx-1\" } oifname { \"wbr-1\", \"wvx-1\", \"wbr-2\", \"wvx-2\", \"weft0\" } counter drop"
        ));
        assert!(text.contains("ip saddr 10.44.0.0/16 ip daddr != 10.44.0.0/16 oifname != { \"wbr-1\", \"wvx-1\" } counter masquerade"));
        assert!(
            !text.lines().any(|l| l.contains("saddr 10.45.0.0/16") && l.contains("masquerade")),
            "internal networks are not masqueraded"
        );
        assert!(text.contains("udp dport 4789 notrack"));
        assert!(text.contains("ip saddr 10.44.0.0/16 ip daddr 10.44.0.0/16 notrack"));
        assert!(text.contains("comment \"internal 2\""));
    }
}
