//! A dual-stack overlay network (one IPv4 and one IPv6 subnet, each with its own block length)
//! end to end: a container gets one address of each family, and `network ls`, `network inspect`
//! and the metrics page count both families' addresses, each with its own block length.

use weft_tests::VirtualHosts;
use weft_tests::cluster::{WeftCluster, stdout};

const NET: &str = "ds";
const V4: &str = "10.90.0.0/16";
const V6: &str = "fd00:90::/64";
/// 10.90.0.0/16 in /24 blocks: 256 blocks of 256 less network, gateway and broadcast.
const V4_USABLE: u64 = 256 * 253;
/// fd00:90::/64 in /112 blocks: 2^48 blocks of 65 536 less network and gateway. More than
/// `u32::MAX` per host pair, still under `u64::MAX`.
const V6_USABLE: u64 = (1 << 48) * 65_534;

/// Checks one network's JSON (an element of `network ls --format json` or `network inspect`)
/// against `used` addresses in each family.
fn check_counts(net: &serde_json::Value, used: u64) {
    assert_eq!(net["name"], NET, "{net}");
    assert_eq!(net["subnets"], serde_json::json!([V4, V6]), "{net}");
    assert_eq!(net["addresses_used"], 2 * used, "{net}");
    assert_eq!(net["addresses_free"], V4_USABLE + V6_USABLE - 2 * used, "{net}");
    let per_subnet = net["addresses"].as_array().unwrap_or_else(|| panic!("no per-subnet counts: {net}"));
    assert_eq!(per_subnet.len(), 2, "{net}");
    let want = [(V4, "ipv4", 24, V4_USABLE), (V6, "ipv6", 112, V6_USABLE)];
    for (got, (subnet, family, block_len, usable)) in per_subnet.iter().zip(want) {
        assert_eq!(got["subnet"], subnet, "{got}");
        assert_eq!(got["family"], family, "{got}");
        assert_eq!(got["block_len"], block_len, "{got}");
        assert_eq!(got["usable"], usable, "{got}");
        assert_eq!(got["used"], used, "{got}");
        assert_eq!(got["free"], usable - used, "{got}");
    }
}

fn network_ls_json(cluster: &WeftCluster<'_>) -> serde_json::Value {
    let list: serde_json::Value =
        serde_json::from_str(&cluster.weft_ok(0, &["network", "ls", "--format", "json"])).unwrap();
    let found = list.as_array().unwrap().iter().find(|n| n["name"] == NET).cloned();
    found.unwrap_or_else(|| panic!("{NET} missing from network ls: {list}"))
}

fn network_inspect(cluster: &WeftCluster<'_>) -> serde_json::Value {
    let inspect: serde_json::Value =
        serde_json::from_str(&cluster.weft_ok(0, &["network", "inspect", NET])).unwrap();
    inspect[0].clone()
}

#[test]
fn dual_stack_network_counts_both_families() {
    let bed = VirtualHosts::new(1);
    let mut cluster = WeftCluster::new(&bed);
    cluster.flags.extend(["--metrics".to_string(), "127.0.0.1:9947".to_string()]);
    cluster.form(1, 0);
    cluster.import_busybox(&[0]);

    let created = cluster
        .weft_ok(0, &["network", "create", "--driver", "overlay", "--subnet", V4, "--subnet", V6, NET]);
    assert!(created.contains(&format!("{NET} overlay {V4},{V6}")), "{created}");
    check_counts(&network_ls_json(&cluster), 0);

    cluster.weft_ok(0, &["run", "-d", "--name", "c", "--network", NET, "busybox", "sleep", "60"]);
    let inspect: serde_json::Value = serde_json::from_str(&cluster.weft_ok(0, &["inspect", "c"])).unwrap();
    let ips = &inspect[0]["networks"][0]["ips"];
    assert!(
        ips[0].as_str().is_some_and(|ip| ip.starts_with("10.90."))
            && ips[1].as_str().is_some_and(|ip| ip.starts_with("fd00:90::")),
        "one address of each family: {inspect}"
    );

    // Every verb that counts, more than once: the count used to underflow on the IPv6 subnet.
    for _ in 0..2 {
        let table = cluster.weft_ok(0, &["network", "ls"]);
        let row = table.lines().find(|l| l.starts_with(&format!("{NET} "))).unwrap_or("");
        assert!(row.contains(&format!("{V4},{V6}")), "{table}");
        check_counts(&network_ls_json(&cluster), 1);
        check_counts(&network_inspect(&cluster), 1);
    }

    let metrics = stdout(&bed.host(0).output("curl", &["-sf", "http://127.0.0.1:9947/metrics"]));
    let label = |subnet: &str, family: &str, kind: &str| {
        format!(
            "weft_subnet_addresses{{network=\"{NET}\",subnet=\"{subnet}\",family=\"{family}\",kind=\"{kind}\"}} "
        )
    };
    for (want, value) in [
        (format!("weft_network_addresses{{network=\"{NET}\",kind=\"used\"}} "), 2),
        (format!("weft_network_addresses{{network=\"{NET}\",kind=\"free\"}} "), V4_USABLE + V6_USABLE - 2),
        (label(V4, "ipv4", "usable"), V4_USABLE),
        (label(V4, "ipv4", "used"), 1),
        (label(V4, "ipv4", "free"), V4_USABLE - 1),
        (label(V6, "ipv6", "usable"), V6_USABLE),
        (label(V6, "ipv6", "used"), 1),
        (label(V6, "ipv6", "free"), V6_USABLE - 1),
    ] {
        let line = metrics.lines().find_map(|l| l.strip_prefix(want.as_str()));
        assert_eq!(line, Some(value.to_string().as_str()), "metrics lack {want:?}{value}:\n{metrics}");
    }

    // Removing the container gives both addresses back; weftd is still serving.
    cluster.weft_ok(0, &["rm", "-f", "c"]);
    check_counts(&network_inspect(&cluster), 0);
    check_counts(&network_ls_json(&cluster), 0);
    assert!(cluster.weft_ok(0, &["node", "ls"]).contains("Ready"));
}

/// Two hosts that already had IPv4-only networks get a dual-stack one: IPv6 forwarding is turned
/// on for it on both (it used to stay off, set once for IPv4 only, and IPv6 across the hosts then
/// lost every packet), a container's IPv6 address is usable the moment `weft run` returns (added
/// without duplicate address detection, never tentative): ping and TCP over IPv6 cross the hosts
/// at once, with IPv4 beside them as the control.
#[test]
fn ipv6_crosses_hosts_the_moment_run_returns_after_ipv4_only_networks() {
    let bed = VirtualHosts::new(2);
    let cluster = WeftCluster::new(&bed);
    cluster.form(1, 1);
    cluster.import_busybox(&[0, 1]);
    cluster.weft_ok(0, &["network", "create", "--driver", "overlay", "--subnet", "10.91.0.0/16", "v4only"]);
    for (host, name) in [(0, "old0"), (1, "old1")] {
        cluster
            .weft_ok(host, &["run", "-d", "--name", name, "--network", "v4only", "busybox", "sleep", "3600"]);
    }
    cluster.eventually("IPv4 between the old containers", std::time::Duration::from_secs(10), || {
        cluster.weft(0, &["exec", "old0", "ping", "-c", "1", "-W", "1", "old1"]).status.success()
    });
    let forwarding = |host: usize| {
        let out =
            bed.host(host).output("sysctl", &["-n", "net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding"]);
        String::from_utf8_lossy(&out.stdout).split_whitespace().map(str::to_string).collect::<Vec<_>>()
    };
    assert_eq!(forwarding(1), ["1", "0"], "IPv4-only networks turn on IPv4 forwarding only");
    cluster.weft_ok(0, &["network", "create", "--driver", "overlay", "--subnet", V4, "--subnet", V6, NET]);
    // A serves HTTP on every address, both families.
    cluster.weft_ok(
        0,
        &[
            "run",
            "-d",
            "--name",
            "a",
            "--network",
            NET,
            "busybox",
            "sh",
            "-c",
            "mkdir -p /srv && echo hello-v6 > /srv/index.html && httpd -f -p 8080 -h /srv",
        ],
    );
    let ips = |host: usize, name: &str| {
        let c: serde_json::Value = serde_json::from_str(&cluster.weft_ok(host, &["inspect", name])).unwrap();
        let ips = c[0]["networks"][0]["ips"].as_array().unwrap().clone();
        (ips[0].as_str().unwrap().to_string(), ips[1].as_str().unwrap().to_string())
    };
    let (a4, a6) = ips(0, "a");
    // The other host has learnt A's block by the time it starts B.
    std::thread::sleep(std::time::Duration::from_secs(1));
    cluster.weft_ok(1, &["run", "-d", "--name", "b", "--network", NET, "busybox", "sleep", "3600"]);
    // The moment run returns: no retries.
    let v4 = cluster.weft(1, &["exec", "b", "ping", "-c", "1", "-W", "3", &a4]);
    let v6 = cluster.weft(1, &["exec", "b", "ping", "-6", "-c", "1", "-W", "3", &a6]);
    let addr = cluster.weft(1, &["exec", "b", "ip", "-6", "addr", "show", "dev", "eth0"]);
    assert!(v4.status.success(), "IPv4 across the hosts at once: {}", stdout(&v4));
    assert!(v6.status.success(), "IPv6 across the hosts at once: {}\n{}", stdout(&v6), stdout(&addr));
    let text = stdout(&addr);
    let global = text
        .lines()
        .find(|l| l.contains("inet6 fd00:90:"))
        .unwrap_or_else(|| panic!("no IPv6 address: {text}"));
    assert!(!global.contains("tentative"), "{text}");
    let http = cluster.weft(1, &["exec", "b", "wget", "-q", "-O", "-", &format!("http://[{a6}]:8080/")]);
    assert_eq!(stdout(&http).trim(), "hello-v6", "TCP over IPv6 across the hosts: {http:?}");
    for host in 0..2 {
        assert_eq!(forwarding(host), ["1", "1"], "h{host}");
    }
    let (_, b6) = ips(1, "b");
    assert!(cluster.weft(0, &["exec", "a", "ping", "-6", "-c", "1", "-W", "3", &b6]).status.success());
    cluster.weft_ok(0, &["rm", "-f", "a", "old0"]);
    cluster.weft_ok(1, &["rm", "-f", "b", "old1"]);
}

/// IPv6 between containers on two hosts, on an IPv4 or an IPv6 underlay (`ipv6_underlay`: the
/// hosts listen, advertise, join and carry VXLAN over 2001:db8::/64; Swarm's overlay cannot):
/// ping -6 the moment `run` returns, an AAAA answer for the peer's name, a published port on the
/// host's IPv4 and IPv6 addresses, and an iperf3 TCP stream
/// over IPv6 from one container's namespace to the other's (its rate printed, not asserted).
fn ipv6_between_hosts(ipv6_underlay: bool) {
    let bed = VirtualHosts::new(2);
    let mut cluster = WeftCluster::new(&bed);
    cluster.ipv6_underlay = ipv6_underlay;
    cluster.form(1, 1);
    cluster.import_busybox(&[0, 1]);
    cluster.weft_ok(0, &["network", "create", "--driver", "overlay", "--subnet", V4, "--subnet", V6, NET]);
    let web = "mkdir -p /srv && echo hello-both-families > /srv/index.html && httpd -f -p 80 -h /srv";
    cluster.weft_ok(
        0,
        &["run", "-d", "--name", "a", "--network", NET, "-p", "8080:80", "busybox", "sh", "-c", web],
    );
    let inspect = |host: usize, name: &str| -> serde_json::Value {
        serde_json::from_str::<serde_json::Value>(&cluster.weft_ok(host, &["inspect", name])).unwrap()[0]
            .clone()
    };
    let a = inspect(0, "a");
    let a6 = a["networks"][0]["ips"][1].as_str().unwrap().to_string();
    std::thread::sleep(std::time::Duration::from_secs(1));
    cluster.weft_ok(1, &["run", "-d", "--name", "b", "--network", NET, "busybox", "sleep", "3600"]);
    let v6 = cluster.weft(1, &["exec", "b", "ping", "-6", "-c", "1", "-W", "3", &a6]);
    assert!(v6.status.success(), "IPv6 across the hosts at once: {}", stdout(&v6));
    let aaaa = cluster.weft(1, &["exec", "b", "nslookup", "-type=AAAA", "a"]);
    assert!(stdout(&aaaa).contains(&a6), "AAAA of a: {}", stdout(&aaaa));

    // The overlay really runs over the underlay family asked for.
    let vni = {
        let net: serde_json::Value =
            serde_json::from_str(&cluster.weft_ok(0, &["network", "inspect", NET])).unwrap();
        net[0]["vni"].as_u64().unwrap()
    };
    let link = bed.host(0).output("ip", &["-d", "-j", "link", "show", &format!("wvx-{vni}")]);
    let link: serde_json::Value = serde_json::from_slice(&link.stdout).unwrap();
    let data = &link[0]["linkinfo"]["info_data"];
    let fdb = stdout(&bed.host(0).output("bridge", &["fdb", "show", "dev", &format!("wvx-{vni}")]));
    if ipv6_underlay {
        assert_eq!(data["local6"], bed.host(0).addr6.to_string(), "{data}");
        assert!(fdb.contains(&format!("dst {}", bed.host(1).addr6)), "{fdb}");
        assert_eq!(link[0]["mtu"], 1500 - 70, "VXLAN over IPv6 costs 70 bytes");
    } else {
        assert_eq!(data["local"], bed.host(0).addr.to_string(), "{data}");
        assert!(fdb.contains(&format!("dst {}", bed.host(1).addr)), "{fdb}");
    }

    // The published port answers on h0's IPv4 and IPv6 addresses, from the other host.
    for target in [bed.host(0).addr.to_string(), bed.host(0).addr6.to_string()] {
        let get = format!("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | busybox nc -w 3 {target} 8080");
        let got = bed.host(1).output("sh", &["-c", &get]);
        assert!(stdout(&got).contains("hello-both-families"), "-p 8080:80 via {target}: {got:?}");
    }

    let pid = |host: usize, name: &str| inspect(host, name)["pid"].as_u64().unwrap() as u32;
    let server = weft_tests::Namespace::of_process(pid(0, "a")).unwrap();
    let client = weft_tests::Namespace::of_process(pid(1, "b")).unwrap();
    let bps = weft_tests::iperf3(&client, &server, &a6, 2, 1);
    let underlay = if ipv6_underlay { "IPv6" } else { "IPv4" };
    eprintln!("iperf3 over IPv6 across hosts on an {underlay} underlay: {:.2} Gbit/s", bps / 1e9);
    assert!(bps > 0.0);
    cluster.weft_ok(0, &["rm", "-f", "a"]);
    cluster.weft_ok(1, &["rm", "-f", "b"]);
}

#[test]
fn ipv6_between_hosts_on_an_ipv4_underlay() {
    ipv6_between_hosts(false);
}

#[test]
fn ipv6_between_hosts_on_an_ipv6_underlay() {
    ipv6_between_hosts(true);
}
