//! The data paths weft's users would otherwise run, built by hand with iproute2 on the same test
//! bed as weft's overlay, so the overlay suite compares with them in the same run:
//!
//! - flannel's VXLAN backend: per host a `cni0` bridge holding the host's pod subnet gateway and
//!   an L3 VXLAN device `flannel.1` (VNI 1, port 8472, no learning, MTU underlay - 50) holding
//!   the subnet's network address; per remote host a route `subnet via net(subnet) dev flannel.1
//!   onlink`, a permanent neighbour and an FDB entry, as flanneld programs them. Connection
//!   tracking stays on (flannel's iptables rules rely on it).
//! - Docker Swarm's overlay: per host a sandbox namespace with a bridge `br0` holding the
//!   network's gateway and an L2 VXLAN device (VNI 4097, MAC learning on, one flood entry per
//!   remote host), created in the host namespace (its UDP socket stays there) and moved into the
//!   sandbox; containers share one L2 subnet across hosts.
//!
//! Each shape gives one container per host: (namespace name, address) pairs, host 0's first.

use weft_tests::VirtualHosts;

/// Runs `ip` (or `bridge`) with `args` inside the namespace called `ns`, panicking on failure.
fn run_in(bed: &VirtualHosts, ns: &str, program: &str, args: &[&str]) {
    let out = if let Some(host) = bed.hosts().iter().find(|h| h.name() == ns) {
        host.output(program, args)
    } else {
        bed.namespace(ns).output(program, args)
    };
    assert!(out.status.success(), "{program} {args:?} in {ns}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A container namespace with `eth0` (a veth whose other end `host_end` is in namespace `ns`),
/// `addr` on it, MTU `mtu`, loopback up, and a default route via `gateway` when given.
fn container(
    bed: &VirtualHosts,
    ns: &str,
    label: &str,
    host_end: &str,
    addr: &str,
    mtu: u32,
    gateway: Option<&str>,
) -> String {
    let name = bed.add_namespace(label);
    let mtu = mtu.to_string();
    run_in(
        bed,
        ns,
        "ip",
        &["link", "add", host_end, "mtu", &mtu, "type", "veth", "peer", "name", "eth0", "netns", &name],
    );
    run_in(bed, &name, "ip", &["link", "set", "lo", "up"]);
    run_in(bed, &name, "ip", &["link", "set", "eth0", "mtu", &mtu, "up"]);
    run_in(bed, &name, "ip", &["addr", "add", addr, "dev", "eth0"]);
    if let Some(gw) = gateway {
        run_in(bed, &name, "ip", &["route", "add", "default", "via", gw]);
    }
    name
}

/// flannel's VXLAN backend on hosts 0 and 1 (pod subnets 10.78.N.0/24).
pub fn flannel(bed: &VirtualHosts) -> Vec<(String, String)> {
    let vxlan =
        L3Vxlan { dev: "flannel.1", vni: "1", port: "8472", mac_tag: "fa", prefix: "10.78", extra: &[] };
    let mut containers = Vec::new();
    for i in 0..2 {
        let host = bed.host(i).name().to_string();
        vxlan.create(bed, i);
        run_in(bed, &host, "ip", &["link", "add", "cni0", "mtu", "1450", "type", "bridge"]);
        run_in(bed, &host, "ip", &["addr", "add", &format!("10.78.{i}.1/24"), "dev", "cni0"]);
        run_in(bed, &host, "ip", &["link", "set", "cni0", "up"]);
        let c = container(
            bed,
            &host,
            &format!("fl{i}"),
            "vethfl",
            &format!("10.78.{i}.2/24"),
            1450,
            Some(&format!("10.78.{i}.1")),
        );
        run_in(bed, &host, "ip", &["link", "set", "vethfl", "master", "cni0", "up"]);
        containers.push((c, format!("10.78.{i}.2")));
    }
    vxlan.route_peers(bed);
    containers
}

/// An L3 VXLAN device as flanneld programs one, on hosts 0 and 1: `dev` with `vni` on UDP `port`
/// (no learning, plus `extra` flags), MAC `02:<mac_tag>:00:00:00:0N`, MTU 1450, holding
/// `<prefix>.N.0/32`; each host routes the other's `<prefix>.N.0/24` through it with a permanent
/// neighbour and FDB entry.
struct L3Vxlan<'a> {
    dev: &'a str,
    vni: &'a str,
    port: &'a str,
    mac_tag: &'a str,
    prefix: &'a str,
    extra: &'a [&'a str],
}

impl L3Vxlan<'_> {
    fn mac(&self, i: usize) -> String {
        format!("02:{}:00:00:00:{:02x}", self.mac_tag, i + 1)
    }

    /// The device on host `i`, with forwarding on.
    fn create(&self, bed: &VirtualHosts, i: usize) {
        let host = bed.host(i).name().to_string();
        let underlay = bed.host(i).addr.to_string();
        run_in(bed, &host, "sysctl", &["-qw", "net.ipv4.ip_forward=1"]);
        let mut add = vec![
            "link",
            "add",
            self.dev,
            "type",
            "vxlan",
            "id",
            self.vni,
            "local",
            &underlay,
            "dev",
            "eth0",
            "dstport",
            self.port,
            "nolearning",
        ];
        add.extend_from_slice(self.extra);
        run_in(bed, &host, "ip", &add);
        run_in(bed, &host, "ip", &["link", "set", self.dev, "address", &self.mac(i), "mtu", "1450", "up"]);
        run_in(bed, &host, "ip", &["addr", "add", &format!("{}.{i}.0/32", self.prefix), "dev", self.dev]);
    }

    /// Each host's route, neighbour and FDB entry for the other's subnet.
    fn route_peers(&self, bed: &VirtualHosts) {
        for (i, r) in [(0usize, 1usize), (1, 0)] {
            let host = bed.host(i).name().to_string();
            let remote = bed.host(r).addr.to_string();
            let (net, gw) = (format!("{}.{r}.0/24", self.prefix), format!("{}.{r}.0", self.prefix));
            run_in(bed, &host, "ip", &["route", "add", &net, "via", &gw, "dev", self.dev, "onlink"]);
            run_in(
                bed,
                &host,
                "ip",
                &["neigh", "add", &gw, "lladdr", &self.mac(r), "dev", self.dev, "nud", "permanent"],
            );
            run_in(
                bed,
                &host,
                "bridge",
                &["fdb", "add", &self.mac(r), "dev", self.dev, "dst", &remote, "self", "permanent"],
            );
        }
    }
}

/// Docker Swarm's overlay on hosts 0 and 1 (one L2 subnet 10.79.0.0/24 across them).
pub fn swarm(bed: &VirtualHosts) -> Vec<(String, String)> {
    let mut containers = Vec::new();
    let mut sandboxes = Vec::new();
    for i in 0..2 {
        let host = bed.host(i).name().to_string();
        let underlay = bed.host(i).addr.to_string();
        let sandbox = bed.add_namespace(&format!("ovsb{i}"));
        run_in(
            bed,
            &host,
            "ip",
            &[
                "link", "add", "vxlan1", "type", "vxlan", "id", "4097", "local", &underlay, "dev", "eth0",
                "dstport", "4790", "learning",
            ],
        );
        run_in(bed, &host, "ip", &["link", "set", "vxlan1", "netns", &sandbox]);
        run_in(bed, &sandbox, "ip", &["link", "set", "lo", "up"]);
        run_in(bed, &sandbox, "ip", &["link", "add", "br0", "type", "bridge"]);
        run_in(bed, &sandbox, "ip", &["addr", "add", "10.79.0.1/24", "dev", "br0"]);
        run_in(bed, &sandbox, "ip", &["link", "set", "vxlan1", "master", "br0", "mtu", "1450", "up"]);
        run_in(bed, &sandbox, "ip", &["link", "set", "br0", "up"]);
        let addr = format!("10.79.0.{}", i + 2);
        let c = container(bed, &sandbox, &format!("sw{i}"), "veth0", &format!("{addr}/24"), 1450, None);
        run_in(bed, &sandbox, "ip", &["link", "set", "veth0", "master", "br0", "up"]);
        containers.push((c, addr));
        sandboxes.push(sandbox);
    }
    for (i, r) in [(0usize, 1usize), (1, 0)] {
        let remote = bed.host(r).addr.to_string();
        run_in(
            bed,
            &sandboxes[i],
            "bridge",
            &["fdb", "append", "00:00:00:00:00:00", "dev", "vxlan1", "dst", &remote],
        );
    }
    containers
}

/// The step issue #19 names first for weft's own data path, built by hand to be measured before
/// it is built into weft: weft's shape (an L3 VXLAN device, outer UDP checksum off, connection
/// tracking skipped for the overlay's traffic) without the per-network bridge. Each container's
/// veth is routed: the host holds a /32 route to it, and the container reaches the host through a
/// fixed link-local gateway (169.254.1.1) whose neighbour entry is the host end's fixed MAC
/// (Calico's shape), so a packet goes veth -> routing -> VXLAN with no bridge on either side.
/// Subnets 10.80.N.0/24, VNI 2, port 4791.
pub fn routed(bed: &VirtualHosts) -> Vec<(String, String)> {
    const GATEWAY_MAC: &str = "ee:ee:ee:ee:ee:ee";
    let vxlan =
        L3Vxlan { dev: "rvx", vni: "2", port: "4791", mac_tag: "ca", prefix: "10.80", extra: &["noudpcsum"] };
    let mut containers = Vec::new();
    for i in 0..2 {
        let host = bed.host(i).name().to_string();
        vxlan.create(bed, i);
        let addr = format!("10.80.{i}.2");
        let c = container(bed, &host, &format!("rt{i}"), "vethrt", &format!("{addr}/32"), 1450, None);
        run_in(bed, &host, "ip", &["link", "set", "vethrt", "address", GATEWAY_MAC, "up"]);
        run_in(bed, &host, "ip", &["route", "add", &format!("{addr}/32"), "dev", "vethrt", "scope", "link"]);
        run_in(bed, &c, "ip", &["route", "add", "169.254.1.1", "dev", "eth0", "scope", "link"]);
        run_in(bed, &c, "ip", &["route", "add", "default", "via", "169.254.1.1", "dev", "eth0"]);
        run_in(
            bed,
            &c,
            "ip",
            &["neigh", "add", "169.254.1.1", "lladdr", GATEWAY_MAC, "dev", "eth0", "nud", "permanent"],
        );
        // As weft's table does for its own networks: no connection tracking for the overlay.
        let table = "table inet rtbench {\n  chain raw_prerouting {\n    type filter hook prerouting priority raw; policy accept;\n    udp dport 4791 notrack\n    ip saddr 10.80.0.0/16 ip daddr 10.80.0.0/16 notrack\n  }\n  chain raw_output {\n    type filter hook output priority raw; policy accept;\n    udp dport 4791 notrack\n  }\n}\n";
        let script = std::env::temp_dir().join(format!("{}-rtbench{i}.nft", bed.prefix()));
        std::fs::write(&script, table).expect("write the nftables script");
        run_in(bed, &host, "nft", &["-f", script.to_str().expect("utf-8 path")]);
        let _ = std::fs::remove_file(&script);
        containers.push((c, addr));
    }
    vxlan.route_peers(bed);
    containers
}
