//! The overlay reconciler on virtual hosts: real devices, real packets. Each host runs a
//! reconciler inside its own namespace, fed the same replicated state built locally (Raft is
//! issue #4's job); endpoints are container namespaces attached through the seam.

use std::process::Stdio;
use std::sync::atomic::Ordering;
use std::time::Duration;

use weft_net::{Cidr, MacAddr, RouteSpec, VxlanSpec};
use weft_overlay::desired::vtep_mac;
use weft_state::cmd;
use weft_tests::overlay::{Agent, can_ping, cluster_state, container, eventually};
use weft_tests::{BedOptions, Namespace, VirtualHosts, ping, ping_with};

fn nft_counter(host: &Namespace, needle: &str) -> u64 {
    let out = host.output("nft", &["list", "table", "inet", "weft"]);
    let text = String::from_utf8_lossy(&out.stdout);
    let line =
        text.lines().find(|l| l.contains(needle)).unwrap_or_else(|| panic!("no rule {needle:?} in\n{text}"));
    let after = line.split("packets ").nth(1).unwrap();
    after.split_whitespace().next().unwrap().parse().unwrap()
}

#[test]
fn three_hosts_two_networks_isolation_and_the_vxlan_allow_list() {
    let bed = VirtualHosts::new(4); // host 3 is outside the cluster
    let mut state = cluster_state(&bed, &[("red", "10.10.0.0/16", 10), ("blue", "10.20.0.0/16", 20)]);
    state.apply(&cmd::remove_node(4)).unwrap();
    let (red0, _) = container(&bed, &mut state, "red", 0, "red0", 1500);
    let (_, red1_ip) = container(&bed, &mut state, "red", 1, "red1", 1500);
    let (red2, red2_ip) = container(&bed, &mut state, "red", 2, "red2", 1500);
    let (blue0, _) = container(&bed, &mut state, "blue", 0, "blue0", 1500);
    let (_, blue1_ip) = container(&bed, &mut state, "blue", 1, "blue1", 1500);
    let agents: Vec<Agent> =
        (0..3).map(|i| Agent::start(bed.host(i), i as u64 + 1, &state, Duration::from_secs(10))).collect();

    eventually("red0 -> red1", Duration::from_secs(10), || can_ping(&bed, &red0, &red1_ip));
    assert!(can_ping(&bed, &red0, &red2_ip));
    assert!(can_ping(&bed, &red2, &red1_ip));
    eventually("blue0 -> blue1", Duration::from_secs(10), || can_ping(&bed, &blue0, &blue1_ip));

    // Across networks: routed towards the other network's vxlan, and dropped by weft's table.
    let before = nft_counter(bed.host(0), "isolate 10");
    assert!(!can_ping(&bed, &red0, &blue1_ip), "red must not reach blue");
    assert!(nft_counter(bed.host(0), "isolate 10") > before, "dropped by the isolation rule");

    // Kernel state grows with hosts: on host 0, red has one route, one neighbour, one FDB entry
    // per remote host, whatever the number of containers.
    let routes = bed.host(0).output("ip", &["-j", "route", "show", "dev", "wvx-10"]);
    let routes: serde_json::Value = serde_json::from_slice(&routes.stdout).unwrap();
    assert_eq!(routes.as_array().unwrap().iter().filter(|r| r.get("gateway").is_some()).count(), 2);

    // A host outside the cluster sends VXLAN to host 0: dropped by the allow-list.
    let outsider = bed.host(3);
    let h0_mac = vtep_mac(1, 10);
    outsider.netlink(move |nl| async move {
        let eth0 = nl.require_link("eth0").await.unwrap();
        let spec = VxlanSpec {
            local: Some("198.51.100.4".parse().unwrap()),
            underlay: Some(eth0.index),
            mac: Some(MacAddr::derived(b"intruder")),
            ..VxlanSpec::new("wvx-10", 10)
        };
        let vx = nl.ensure_vxlan(&spec).await.unwrap();
        nl.ensure_address(vx.index, "10.10.99.0/32".parse().unwrap()).await.unwrap();
        nl.ensure_neighbour(vx.index, "10.10.0.0".parse().unwrap(), h0_mac).await.unwrap();
        nl.ensure_fdb(vx.index, h0_mac, Some("198.51.100.1".parse().unwrap())).await.unwrap();
        let route = RouteSpec::via("10.10.0.0/24".parse::<Cidr>().unwrap(), "10.10.0.0".parse().unwrap());
        nl.ensure_route(&route.with_dev(vx.index).with_onlink()).await.unwrap();
    });
    let before = nft_counter(bed.host(0), "udp dport 4789 ip saddr");
    assert!(!ping(outsider, "10.10.0.2", 2), "the outsider must not reach a container");
    assert!(nft_counter(bed.host(0), "udp dport 4789 ip saddr") > before, "its VXLAN packets were dropped");
    drop(agents);
}

#[test]
fn restarting_the_reconciler_loses_no_packet_and_keeps_every_device() {
    let bed = VirtualHosts::new(2);
    let mut state = cluster_state(&bed, &[("app", "10.30.0.0/16", 30)]);
    let (c0, _) = container(&bed, &mut state, "app", 0, "c0", 1500);
    let (_, c1_ip) = container(&bed, &mut state, "app", 1, "c1", 1500);
    let a0 = Agent::start(bed.host(0), 1, &state, Duration::from_secs(10));
    let a1 = Agent::start(bed.host(1), 2, &state, Duration::from_secs(10));
    eventually("c0 -> c1", Duration::from_secs(10), || can_ping(&bed, &c0, &c1_ip));
    let indexes = |h: usize| {
        let out = bed.host(h).output("ip", &["-j", "link", "show"]);
        let links: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        links
            .as_array()
            .unwrap()
            .iter()
            .map(|l| (l["ifname"].to_string(), l["ifindex"].as_u64().unwrap()))
            .collect::<Vec<_>>()
    };
    let before = (indexes(0), indexes(1));

    // 300 pings 10 ms apart, while both reconcilers stop and new ones start.
    let pinger = bed.with_namespace(&c0, |ns| {
        let mut cmd = ns.command("ping");
        cmd.args(["-c", "300", "-i", "0.01", "-W", "1", "-q", &c1_ip]).stdout(Stdio::piped());
        cmd.spawn().unwrap()
    });
    std::thread::sleep(Duration::from_millis(500));
    a0.stop();
    a1.stop();
    std::thread::sleep(Duration::from_millis(300));
    let b0 = Agent::start(bed.host(0), 1, &state, Duration::from_secs(10));
    let b1 = Agent::start(bed.host(1), 2, &state, Duration::from_secs(10));
    eventually("restarted reconcilers ran", Duration::from_secs(5), || {
        b0.metrics.runs.load(Ordering::Relaxed) > 0 && b1.metrics.runs.load(Ordering::Relaxed) > 0
    });
    let out = pinger.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("300 packets transmitted, 300 received"), "{text}");
    assert_eq!(
        b0.actions() + b1.actions(),
        0,
        "a restart on a converged host changes nothing: {:?} {:?}",
        b0.metrics.actions(),
        b1.metrics.actions()
    );
    assert_eq!((indexes(0), indexes(1)), before, "same devices, same ifindex");
}

#[test]
fn a_deleted_vxlan_device_is_repaired_by_the_event_path_and_removed_hosts_vanish() {
    let bed = VirtualHosts::new(3);
    let mut state = cluster_state(&bed, &[("app", "10.40.0.0/16", 40)]);
    let (c0, _) = container(&bed, &mut state, "app", 0, "c0", 1500);
    let (_, c1_ip) = container(&bed, &mut state, "app", 1, "c1", 1500);
    let (_, c2_ip) = container(&bed, &mut state, "app", 2, "c2", 1500);
    // Resync an hour away: any repair within the test comes from kernel events.
    let hour = Duration::from_secs(3600);
    let agents: Vec<Agent> = (0..3).map(|i| Agent::start(bed.host(i), i as u64 + 1, &state, hour)).collect();
    eventually("c0 -> c1", Duration::from_secs(10), || can_ping(&bed, &c0, &c1_ip));
    eventually("c0 -> c2", Duration::from_secs(10), || can_ping(&bed, &c0, &c2_ip));

    let repaired_before = agents[0].metrics.drift_repaired.load(Ordering::Relaxed);
    let out = bed.host(0).output("ip", &["link", "del", "wvx-40"]);
    assert!(out.status.success());
    let took = eventually("traffic restored after ip link del", Duration::from_secs(10), || {
        bed.with_namespace(&c0, |ns| ping_with(ns, &c1_ip, &["-W", "0.2"]).status.success())
    });
    eprintln!("traffic restored {took:?} after `ip link del wvx-40` (event path)");
    assert!(agents[0].metrics.drift_repaired.load(Ordering::Relaxed) > repaired_before, "repaired as drift");

    // Host 3 removed from the state: its route, neighbour and FDB entry leave every other host.
    let mac3 = vtep_mac(3, 40).to_string();
    state.apply(&cmd::remove_node(3)).unwrap();
    agents[0].publish(&state);
    agents[1].publish(&state);
    for h in 0..2 {
        eventually("host 3's entries removed", Duration::from_secs(10), || {
            let routes = String::from_utf8_lossy(
                &bed.host(h).output("ip", &["route", "show", "dev", "wvx-40"]).stdout,
            )
            .to_string();
            let neigh = String::from_utf8_lossy(
                &bed.host(h).output("ip", &["neigh", "show", "dev", "wvx-40"]).stdout,
            )
            .to_string();
            let fdb = String::from_utf8_lossy(
                &bed.host(h).output("bridge", &["fdb", "show", "dev", "wvx-40"]).stdout,
            )
            .to_string();
            !routes.contains("10.40.2.0/24")
                && !neigh.contains("10.40.2.0")
                && !fdb.contains(&mac3)
                && !fdb.contains("198.51.100.3")
        });
    }
    assert!(can_ping(&bed, &c0, &c1_ip), "the remaining hosts still talk");
}

#[test]
fn overlay_mtu_follows_the_underlay() {
    let bed = VirtualHosts::with(BedOptions { hosts: 2, mtu: 1400 });
    let mut state = cluster_state(&bed, &[("app", "10.50.0.0/16", 50)]);
    let (c0, _) = container(&bed, &mut state, "app", 0, "c0", 1400);
    let (_, c1_ip) = container(&bed, &mut state, "app", 1, "c1", 1400);
    let _agents: Vec<Agent> =
        (0..2).map(|i| Agent::start(bed.host(i), i as u64 + 1, &state, Duration::from_secs(10))).collect();
    eventually("c0 -> c1", Duration::from_secs(10), || can_ping(&bed, &c0, &c1_ip));
    let mtu = bed
        .with_namespace(&c0, |ns| ns.netlink(|nl| async move { nl.require_link("eth0").await.unwrap().mtu }));
    assert_eq!(mtu, 1350);
    let vx = bed.host(0).netlink(|nl| async move { nl.require_link("wvx-50").await.unwrap().mtu });
    assert_eq!(vx, 1350);
    bed.with_namespace(&c0, |ns| {
        // 1322 bytes of ICMP payload + 8 ICMP + 20 IP = 1350: fits, with don't-fragment set.
        let fits = ping_with(ns, &c1_ip, &["-M", "do", "-s", "1322"]);
        assert!(fits.status.success(), "{}", String::from_utf8_lossy(&fits.stdout));
        let too_big = ping_with(ns, &c1_ip, &["-M", "do", "-s", "1323"]);
        assert!(!too_big.status.success(), "one byte more must not fit");
    });
}
