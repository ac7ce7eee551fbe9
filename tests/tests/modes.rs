//! Docker's network modes through weft, on virtual hosts with a plain namespace on the underlay
//! standing for the outside world: `host`, `none`, `container:`, the default NAT bridge `weft0`
//! and published ports, plus the refusals of bad input.

use std::time::Duration;

use weft_tests::VirtualHosts;
use weft_tests::cluster::{WeftCluster, stderr, stdout};

#[test]
fn host_none_container_bridge_and_published_ports() {
    // h0 and h1 run weftd; h2 runs nothing and has no route to any container subnet: "outside".
    let bed = VirtualHosts::new(3);
    let mut cluster = WeftCluster::new(&bed);
    cluster.flags.extend(["--metrics".to_string(), "127.0.0.1:9946".to_string()]);
    cluster.form(1, 1);
    cluster.import_busybox(&[0, 1]);

    // host: the host's own eth0 and underlay address.
    let links = cluster.weft_ok(0, &["run", "--rm", "--network", "host", "busybox", "ip", "-o", "addr"]);
    assert!(links.contains("eth0") && links.contains("198.51.100.1/24"), "{links}");
    // none: loopback only.
    let links = cluster.weft_ok(0, &["run", "--rm", "--network", "none", "busybox", "ip", "-o", "link"]);
    assert_eq!(links.lines().count(), 1, "{links}");
    assert!(links.contains("lo:"), "{links}");

    // bridge (the default): an address on weft0's subnet, and the outside reached through NAT
    // (the outside has no route back to 172.17.0.0/16, so replies arrive only if masqueraded).
    cluster.weft_ok(0, &["run", "-d", "--name", "srv", "busybox", "nc", "-l", "-p", "8081"]);
    let inspect: serde_json::Value = serde_json::from_str(&cluster.weft_ok(0, &["inspect", "srv"])).unwrap();
    assert_eq!(inspect[0]["network_mode"], "bridge");
    let srv_ip = inspect[0]["networks"][0]["ips"][0].as_str().unwrap().to_string();
    assert!(srv_ip.starts_with("172.17."), "{inspect}");
    let out = cluster.weft(0, &["run", "--rm", "busybox", "ping", "-c", "1", "-W", "3", "198.51.100.3"]);
    assert!(out.status.success(), "bridge reaches the outside: {}{}", stdout(&out), stderr(&out));
    let weft0 = bed.host(0).output("ip", &["-o", "addr", "show", "weft0"]);
    assert!(stdout(&weft0).contains("172.17."), "weft0 holds the gateway: {}", stdout(&weft0));

    // container:NAME shares srv's address and sees its listening port.
    let shared = cluster.weft_ok(
        0,
        &[
            "run",
            "--rm",
            "--network",
            "container:srv",
            "busybox",
            "sh",
            "-c",
            "ip -o addr show eth0; netstat -ltn",
        ],
    );
    assert!(shared.contains(&format!("{srv_ip}/")), "{shared}");
    assert!(shared.contains(":8081"), "the joined container sees srv's listening port: {shared}");

    // -p: reached from the outside, from another host and from the host itself.
    cluster.weft_ok(
        0,
        &[
            "run",
            "-d",
            "--name",
            "web",
            "-p",
            "8080:80",
            "busybox",
            "sh",
            "-c",
            "mkdir -p /www && echo hello-from-web > /www/index.html && exec httpd -f -p 80 -h /www",
        ],
    );
    let fetch = |ns: &weft_tests::Namespace| {
        // busybox's static wget crashes on Debian 12; plain HTTP/1.0 over nc does the same.
        let get = "printf 'GET / HTTP/1.0\r\n\r\n' | busybox nc -w 3 198.51.100.1 8080";
        stdout(&ns.output("sh", &["-c", get])).contains("hello-from-web")
    };
    cluster.eventually("published port from outside", Duration::from_secs(10), || fetch(bed.host(2)));
    assert!(fetch(bed.host(1)), "published port from another host");
    assert!(fetch(bed.host(0)), "published port from the host itself");

    // The same port again is refused, and nothing is left of the refused container.
    let before = cluster.weft_ok(0, &["ps", "-a"]).lines().count();
    let clash =
        cluster.weft(0, &["run", "-d", "--name", "web2", "-p", "8080:8080", "busybox", "sleep", "60"]);
    assert_eq!(clash.status.code(), Some(125));
    assert!(stderr(&clash).contains("already published"), "{}", stderr(&clash));
    assert_eq!(cluster.weft_ok(0, &["ps", "-a"]).lines().count(), before);

    // Prometheus metrics, as curl sees them on the manager and on the worker.
    let metrics = stdout(&bed.host(0).output("curl", &["-sf", "http://127.0.0.1:9946/metrics"]));
    for want in [
        "# TYPE weft_raft_term gauge",
        "weft_raft_leader ",
        "weft_raft_commit_index ",
        "weft_raft_applied_index ",
        "weft_raft_proposal_duration_seconds_bucket{le=\"0.1\"}",
        "weft_raft_proposal_duration_seconds_count ",
        "weft_watch_lag_revisions ",
        "weft_reconcile_runs_total ",
        "weft_reconcile_actions_total{action=\"ensure_bridge\"}",
        "weft_reconcile_drift_repaired_total ",
        "weft_reconcile_duration_seconds ",
        "weft_containers{state=\"running\"} 2",
        "weft_network_addresses{network=\"bridge\",kind=\"used\"} 2",
        "weft_network_addresses{network=\"bridge\",kind=\"free\"} ",
    ] {
        assert!(metrics.contains(want), "metrics lack {want:?}:\n{metrics}");
    }
    let proposals: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("weft_raft_proposal_duration_seconds_count "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap();
    assert!(proposals >= 3, "network and endpoint writes were proposed: {proposals}");
    let worker = stdout(&bed.host(1).output("curl", &["-sf", "http://127.0.0.1:9946/metrics"]));
    assert!(worker.contains("weft_watch_lag_revisions ") && !worker.contains("weft_raft_term"), "{worker}");
    let missing = bed
        .host(0)
        .output("curl", &["-s", "-o", "/dev/null", "-w", "%{http_code}", "http://127.0.0.1:9946/nope"]);
    assert_eq!(stdout(&missing), "404");

    // Stopping the container withdraws its port.
    cluster.weft_ok(0, &["stop", "-t", "1", "web"]);
    assert!(!fetch(bed.host(2)), "the port is gone once the container stops");
    let table = bed.host(0).output("nft", &["list", "table", "inet", "weft_ports"]);
    assert!(!table.status.success() || !stdout(&table).contains("8080"), "{}", stdout(&table));

    // run's container flags, end to end.
    let volume = cluster.scratch().join("volume");
    std::fs::create_dir_all(&volume).unwrap();
    std::fs::write(volume.join("f"), "from-the-host").unwrap();
    let mount = format!("{}:/mnt:ro", volume.display());
    let out = cluster.weft_ok(
        0,
        &[
            "run",
            "--rm",
            "--network",
            "none",
            "-e",
            "A=1",
            "-w",
            "/tmp",
            "-u",
            "65534",
            "--hostname",
            "hh",
            "--memory",
            "64m",
            "--cpus",
            "0.5",
            "--pids-limit",
            "50",
            "-v",
            &mount,
            "--entrypoint",
            "/bin/sh",
            "busybox",
            "-c",
            "echo $A $(pwd) $(id -u) $(hostname) $(cat /mnt/f)",
        ],
    );
    assert_eq!(out.trim(), "1 /tmp 65534 hh from-the-host");

    // An --internal network reaches nothing outside, where the default bridge did.
    cluster.weft_ok(0, &["network", "create", "--internal", "iso"]);
    let out = cluster.weft(
        0,
        &["run", "--rm", "--network", "iso", "busybox", "ping", "-c", "1", "-W", "2", "198.51.100.3"],
    );
    assert!(!out.status.success(), "internal networks do not reach the outside: {}", stdout(&out));
    cluster.weft_ok(0, &["network", "rm", "iso"]);

    // Bad input: each a clear error, nothing changed.
    let networks = cluster.weft_ok(0, &["network", "ls"]);
    cluster.weft_ok(0, &["run", "--name", "done", "--network", "none", "busybox", "true"]);
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["run", "--network", "nosuch", "busybox", "true"], "network \"nosuch\" not found"),
        (vec!["run", "--network", "container:ghost", "busybox", "true"], "no such container"),
        (vec!["run", "--network", "container:done", "busybox", "true"], "not running"),
        (vec!["run", "--network", "none", "-p", "1:1", "busybox", "true"], "-p needs a network"),
        (vec!["run", "-p", "80", "busybox", "true"], "expected [IP:]HOST_PORT"),
        (vec!["network", "create", "--subnet", "172.17.128.0/17", "clash"], "overlaps"),
        (vec!["network", "rm", "bridge"], "in use"),
        (vec!["network", "create", "--gateway", "10.99.0.1", "gw"], "drop --gateway"),
    ];
    let count = cluster.weft_ok(0, &["ps", "-a"]).lines().count();
    for (args, want) in cases {
        let out = cluster.weft(0, &args);
        assert_eq!(out.status.code(), Some(125), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(want), "{args:?}: {}", stderr(&out));
    }
    assert_eq!(cluster.weft_ok(0, &["ps", "-a"]).lines().count(), count, "no container was left behind");
    assert_eq!(cluster.weft_ok(0, &["network", "ls"]), networks, "no network was created or removed");
}

/// A subnet that would break a host is refused, naming why, and changes nothing: one on the
/// hosts' own underlay (198.51.100.0/24 on this bed), loopback, multicast, link-local.
#[test]
fn subnets_that_would_break_a_host_are_refused() {
    let bed = VirtualHosts::new(2);
    let cluster = WeftCluster::new(&bed);
    cluster.form(1, 1);
    let nodes = cluster.nodes(0).unwrap();
    assert!(
        nodes.iter().all(|n| n["underlay_prefix_len"] == 24),
        "each agent reports its underlay subnet: {nodes:?}"
    );
    let before = cluster.weft_ok(0, &["network", "ls"]);
    for (subnet, why) in [
        ("198.51.100.0/24", "overlaps the underlay 198.51.100.0/24 of node"),
        ("198.51.100.0/28", "overlaps the underlay"),
        ("198.51.0.0/16", "overlaps the underlay"),
        ("127.0.0.0/16", "loopback"),
        ("127.0.0.0/8", "loopback"),
        ("224.0.0.0/4", "multicast"),
        ("239.1.0.0/16", "multicast"),
        ("169.254.0.0/16", "link-local"),
        ("fe80::/10", "link-local"),
        ("fe80::/64", "link-local"),
        ("ff00::/8", "multicast"),
    ] {
        let out = cluster.weft(0, &["network", "create", "--subnet", subnet, "bad"]);
        assert_eq!(out.status.code(), Some(125), "{subnet}: {}", stderr(&out));
        assert!(stderr(&out).contains(why), "{subnet}: {}", stderr(&out));
    }
    assert_eq!(cluster.weft_ok(0, &["network", "ls"]), before, "nothing was created");
    cluster.weft_ok(0, &["network", "create", "--subnet", "198.51.101.0/24", "beside"]);
}

/// `nft flush ruleset` on a host, or one of weft's chains emptied: weft's tables (the overlay's
/// and the published ports') are back within a second (nftables notifications, not the 10 s
/// resync), counted as drift repaired.
#[test]
fn a_flushed_firewall_is_restored_within_a_second() {
    let bed = VirtualHosts::new(1);
    let mut cluster = WeftCluster::new(&bed);
    cluster.flags.extend(["--metrics".to_string(), "127.0.0.1:9948".to_string()]);
    cluster.form(1, 0);
    cluster.weft_ok(0, &["network", "create", "--driver", "overlay", "--subnet", "10.98.0.0/24", "fw"]);
    cluster.import_busybox(&[0]);
    cluster.weft_ok(
        0,
        &["run", "-d", "--name", "web", "--network", "fw", "-p", "18080:8080", "busybox", "sleep", "3600"],
    );
    let host = bed.host(0);
    let ports = || {
        let out = host.output("nft", &["-s", "list", "table", "inet", "weft_ports"]);
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let listing = || {
        let out = host.output("nft", &["-s", "list", "table", "inet", "weft"]);
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let drift = || {
        let out = host.output("curl", &["-sf", "http://127.0.0.1:9948/metrics"]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .find_map(|l| l.strip_prefix("weft_reconcile_drift_repaired_total "))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    cluster.eventually("weft's table is loaded", Duration::from_secs(10), || {
        listing().is_some_and(|l| l.contains("cluster_hosts4"))
    });
    let original = listing().unwrap();
    cluster.eventually("the port table is loaded", Duration::from_secs(10), || {
        ports().is_some_and(|l| l.contains("18080"))
    });
    let published = ports().unwrap();
    for (what, args) in [
        ("nft flush ruleset", vec!["flush", "ruleset"]),
        ("an emptied chain", vec!["flush", "chain", "inet", "weft", "input"]),
    ] {
        let before = drift();
        let out = host.output("nft", &args);
        assert!(out.status.success(), "{what}: {out:?}");
        let started = std::time::Instant::now();
        // That the flush took effect is shown by the repair it causes (counted below): a listing
        // taken now may already show the table restored, the reconciler being that quick.
        while listing().as_deref() != Some(original.as_str()) {
            assert!(started.elapsed() < Duration::from_secs(1), "{what}: not restored within 1 s");
            std::thread::sleep(Duration::from_millis(20));
        }
        let took = started.elapsed();
        eprintln!("{what}: restored after {took:?}");
        while ports().as_deref() != Some(published.as_str()) {
            assert!(started.elapsed() < Duration::from_secs(1), "{what}: ports not restored within 1 s");
            std::thread::sleep(Duration::from_millis(20));
        }
        cluster.eventually("the repair is counted", Duration::from_secs(2), || drift() > before);
    }
}

/// The host-side veths of `host`'s containers, by name.
fn host_veths(host: &weft_tests::Namespace) -> Vec<String> {
    let out = stdout(&host.output("ip", &["-o", "link", "show", "type", "veth"]));
    out.lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_string())
        .collect()
}

#[test]
fn rm_leaves_no_veth_behind_and_cuts_a_joined_container_off_at_once() {
    let bed = VirtualHosts::new(1);
    let cluster = WeftCluster::new(&bed);
    cluster.form(1, 0);
    cluster.import_busybox(&[0]);
    cluster.weft_ok(0, &["network", "create", "-d", "overlay", "--subnet", "10.77.0.0/24", "ov"]);
    let host = bed.host(0);
    let before = host_veths(host);

    // A namespace no other container joined: its veth goes with it (the kernel's namespace
    // teardown deletes it, shortly after rm returns).
    for network in ["bridge", "ov"] {
        cluster.weft_ok(0, &["run", "-d", "--name", "solo", "--network", network, "busybox", "sleep", "600"]);
        assert_eq!(host_veths(host).len(), before.len() + 1, "solo's veth on {network}");
        cluster.weft_ok(0, &["rm", "-f", "solo"]);
        cluster.eventually("solo's veth gone", Duration::from_secs(5), || host_veths(host) == before);
    }

    // A namespace another container joined outlives its owner's removal: the owner's veth is
    // deleted by rm itself, so the joined container is cut off before rm returns (its address is
    // released and may go to another container).
    cluster.weft_ok(0, &["run", "-d", "--name", "owner", "--network", "ov", "busybox", "sleep", "600"]);
    cluster.weft_ok(
        0,
        &["run", "-d", "--name", "joined", "--network", "container:owner", "busybox", "sleep", "600"],
    );
    let addr = cluster.weft_ok(0, &["exec", "joined", "ip", "-o", "-4", "addr", "show", "eth0"]);
    assert!(addr.contains("10.77.0."), "joined shares owner's address: {addr}");
    assert_eq!(host_veths(host).len(), before.len() + 1);
    cluster.weft_ok(0, &["rm", "-f", "owner"]);
    assert_eq!(host_veths(host), before, "owner's veth outlived rm while joined still runs");
    let links = cluster.weft_ok(0, &["exec", "joined", "ip", "-o", "link"]);
    assert!(!links.contains("eth0"), "joined still has owner's interface: {links}");
    cluster.weft_ok(0, &["rm", "-f", "joined"]);
}
