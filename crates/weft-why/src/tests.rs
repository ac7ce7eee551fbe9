//! Each cause `net why` names, on a state and reports made by hand: a healthy report is built
//! from the desired state, then one thing is broken in it.

use super::*;
use weft_overlay::desired::desired;
use weft_state::{Role, cmd};

const NOW: u64 = 1_000_000;

/// Two hosts; `app` (overlay) with c1 on h1 and c2 on h2, `db` (overlay) with d1 on h2, `priv`
/// (overlay, internal) with p1 on h1.
fn state() -> State {
    let mut s = State::new();
    s.apply(&cmd::register_node(1, "h1", "198.51.100.1", Role::Manager, 0)).unwrap();
    s.apply(&cmd::register_node(2, "h2", "198.51.100.2", Role::Worker, 0)).unwrap();
    s.apply(&cmd::create_network("app", Driver::Overlay, &["10.44.0.0/16"], 4097, 0)).unwrap();
    s.apply(&cmd::create_network("db", Driver::Overlay, &["10.45.0.0/16"], 4098, 0)).unwrap();
    let mut internal = cmd::create_network("priv", Driver::Overlay, &["10.46.0.0/16"], 4099, 0);
    if let Some(pb::command::Kind::CreateNetwork(c)) = &mut internal.kind {
        c.internal = true;
    }
    s.apply(&internal).unwrap();
    s.apply(&cmd::allocate_endpoint("app", 1, "c1id0000", "c1", "")).unwrap();
    s.apply(&cmd::allocate_endpoint("app", 2, "c2id0000", "c2", "")).unwrap();
    s.apply(&cmd::allocate_endpoint("db", 2, "d1id0000", "d1", "")).unwrap();
    s.apply(&cmd::allocate_endpoint("priv", 1, "p1id0000", "p1", "")).unwrap();
    s
}

/// What a converged host reports: every desired device and entry, its containers running, every
/// probe answered.
fn healthy(s: &State, node: NodeId) -> pb::HostReport {
    let d = desired(s, node, 1500);
    let overlays = d
        .networks
        .values()
        .map(|n| {
            let mut ov = pb::OverlayView {
                vni: n.vni,
                bridge_present: true,
                bridge_up: true,
                vxlan_present: true,
                vxlan_up: true,
                vxlan_mtu: n.mtu,
                bridge_addrs: n.gateways.iter().map(|g| g.to_string()).collect(),
                vtep_addrs: n.vtep_addrs.iter().map(|g| g.to_string()).collect(),
                ..Default::default()
            };
            for peer in n.peers.values() {
                ov.fdb.push(pb::FdbView { mac: peer.mac.to_string(), dst: peer.underlay.to_string() });
                for b in &peer.blocks {
                    ov.routes.push(pb::RouteView { dst: b.to_string(), via: b.addr().to_string() });
                    ov.neighbours.push(pb::NeighbourView {
                        ip: b.addr().to_string(),
                        mac: peer.mac.to_string(),
                        permanent: true,
                    });
                }
            }
            ov
        })
        .collect();
    let mut containers: BTreeMap<String, pb::ContainerInfo> = BTreeMap::new();
    for e in s.endpoints().filter(|e| e.node == node) {
        let c = containers.entry(e.container_id.clone()).or_insert_with(|| pb::ContainerInfo {
            id: e.container_id.clone(),
            name: e.name.clone(),
            state: "running".into(),
            ..Default::default()
        });
        c.networks.push(pb::ContainerNetwork {
            network: s.network_by_id(e.network).unwrap().name.clone(),
            ips: e.ips.iter().map(|i| i.to_string()).collect(),
            ..Default::default()
        });
    }
    let probes = s
        .networks()
        .flat_map(|n| {
            s.blocks(n.id).into_iter().filter(|b| b.node != node).map(move |b| pb::ProbeResult {
                vni: n.vni,
                node: b.node,
                small_ok: true,
                full_ok: true,
                full_size: 1450,
                rtt_us: 250,
                ..Default::default()
            })
        })
        .collect();
    pb::HostReport {
        node_id: node,
        taken_ms: NOW - 100,
        underlay_link: "eth0".into(),
        underlay_mtu: 1500,
        overlays,
        containers: containers.into_values().collect(),
        probes,
        firewall_loaded: true,
        ..Default::default()
    }
}

fn reports(s: &State) -> BTreeMap<NodeId, pb::HostReport> {
    [1, 2].into_iter().map(|n| (n, healthy(s, n))).collect()
}

fn why(s: &State, reports: &BTreeMap<NodeId, pb::HostReport>, src: &str, dst: &str) -> pb::WhyResponse {
    why_port(s, reports, src, dst, None)
}

fn why_port(
    s: &State,
    reports: &BTreeMap<NodeId, pb::HostReport>,
    src: &str,
    dst: &str,
    port: Option<PortCheck>,
) -> pb::WhyResponse {
    let (a, b) = (resolve(s, src).unwrap(), resolve(s, dst).unwrap());
    explain(s, &a, &b, port, reports, NOW).unwrap()
}

fn answer(r: &pb::WhyResponse) -> &pb::Hop {
    assert!(!r.clear, "expected a blocked path: {:#?}", r.hops);
    &r.hops[r.blocked_at as usize]
}

fn overlay(r: &mut pb::HostReport, vni: u32) -> &mut pb::OverlayView {
    r.overlays.iter_mut().find(|o| o.vni == vni).unwrap()
}

#[test]
fn a_healthy_path_is_clear_and_names_every_hop() {
    let s = state();
    let r = why(&s, &reports(&s), "c1", "c2");
    assert!(r.clear, "{:#?}", r.hops);
    let whats: Vec<&str> = r.hops.iter().map(|h| h.what.as_str()).collect();
    assert_eq!(
        whats,
        [
            "container c1",
            "bridge wbr-4097",
            "VXLAN device wvx-4097",
            "route to h2's block",
            "neighbour h2's VTEP",
            "FDB entry for h2's VTEP",
            "firewall",
            "underlay (VXLAN, UDP 4789)",
            "VXLAN device wvx-4097",
            "route to h1's block",
            "neighbour h1's VTEP",
            "FDB entry for h1's VTEP",
            "bridge wbr-4097",
            "container c2",
        ]
    );
    assert!(r.hops[7].detail.contains("answered in 0.25 ms"), "{}", r.hops[7].detail);
    assert_eq!(r.report_age_ms, 100);
}

#[test]
fn needs_asks_both_hosts_and_a_probe_each_way() {
    let s = state();
    let (a, b) = (resolve(&s, "c1").unwrap(), resolve(&s, "c2").unwrap());
    let n = needs(&s, &a, &b);
    assert_eq!(n[&1], vec![(4097, 2)]);
    assert_eq!(n[&2], vec![(4097, 1)]);
}

#[test]
fn containers_on_different_networks_are_isolated() {
    let s = state();
    let r = why(&s, &reports(&s), "c1", "d1");
    let a = answer(&r);
    assert_eq!(a.what, "firewall (isolation)");
    assert!(a.detail.contains("c1 is on app, d1 on db"), "{}", a.detail);
    assert!(a.detail.contains("isolate"), "{}", a.detail);
}

#[test]
fn an_internal_network_does_not_reach_outside() {
    let s = state();
    let r = why(&s, &reports(&s), "p1", "h2");
    let a = answer(&r);
    assert_eq!(a.what, "firewall (internal network)");
    assert!(a.detail.contains("priv is --internal"), "{}", a.detail);
    assert!(a.detail.contains("\"internal 4099\""), "{}", a.detail);
    // The same from a network that is not internal leaves, masqueraded.
    let r = why(&s, &reports(&s), "c1", "h2");
    assert!(r.clear, "{:#?}", r.hops);
    let r = why(&s, &reports(&s), "c1", "192.0.2.7");
    assert!(r.clear, "{:#?}", r.hops);
}

#[test]
fn a_missing_fdb_entry_is_named_with_what_was_expected() {
    let s = state();
    let mut reps = reports(&s);
    overlay(reps.get_mut(&2).unwrap(), 4097).fdb.clear();
    // With the entry gone on h2, h1's echoes go unanswered: the entry is the answer, not the underlay.
    for p in &mut reps.get_mut(&1).unwrap().probes {
        p.small_ok = false;
        p.full_ok = false;
    }
    let r = why(&s, &reps, "c1", "c2");
    let a = answer(&r);
    assert_eq!((a.place.as_str(), a.what.as_str()), ("h2", "FDB entry for h1's VTEP"));
    let mac = vtep_mac(1, 4097).to_string();
    assert!(
        a.detail.contains(&format!("h2 has no FDB entry for h1's VTEP {mac}; expected dst 198.51.100.1")),
        "{}",
        a.detail
    );
    let underlay = r.hops.iter().find(|h| h.what.starts_with("underlay")).unwrap();
    assert!(underlay.ok && underlay.detail.contains("explained by the entries"), "{}", underlay.detail);
}

#[test]
fn reconciler_failures_come_with_a_missing_entry() {
    let s = state();
    let mut reps = reports(&s);
    overlay(reps.get_mut(&1).unwrap(), 4097).routes.clear();
    reps.get_mut(&1).unwrap().failures = vec!["apply add_peer_block: File exists (errno 17)".into()];
    let a = why(&s, &reps, "c1", "c2");
    let a = answer(&a);
    assert_eq!(a.what, "route to h2's block");
    assert!(a.detail.contains("reports 1 failed action(s), first: apply add_peer_block"), "{}", a.detail);
}

#[test]
fn a_repaired_entry_is_said_to_be_repaired_and_the_path_clear() {
    let s = state();
    let mut reps = reports(&s);
    reps.get_mut(&2).unwrap().repairs.push(pb::Repair {
        at_ms: NOW - 1500,
        vni: 4097,
        kind: "add_peer_block".into(),
        peer_underlay: "198.51.100.1".into(),
        text: "restored the route to 10.44.0.0/24, its neighbour and the FDB entry".into(),
    });
    let r = why(&s, &reps, "c1", "c2");
    assert!(r.clear, "{:#?}", r.hops);
    let repaired = r.hops.iter().find(|h| h.what == "drift towards h1").expect("a repair hop");
    assert_eq!(repaired.place, "h2");
    assert!(
        repaired.detail.contains("restored the route") && repaired.detail.contains("1.5 s ago"),
        "{}",
        repaired.detail
    );
    // An old repair is forgotten.
    reps.get_mut(&2).unwrap().repairs[0].at_ms = NOW - REPAIR_MEMORY_MS - 1;
    assert!(why(&s, &reps, "c1", "c2").hops.iter().all(|h| h.what != "drift towards h1"));
}

#[test]
fn vxlan_dropped_between_hosts_is_the_underlay() {
    let s = state();
    let mut reps = reports(&s);
    for n in [1, 2] {
        for p in &mut reps.get_mut(&n).unwrap().probes {
            p.small_ok = false;
            p.full_ok = false;
            p.error = format!("no echo reply from 10.44.{}.0", n);
        }
    }
    let r = why(&s, &reps, "c1", "c2");
    let a = answer(&r);
    assert_eq!((a.place.as_str(), a.what.as_str()), ("h1 -> h2", "underlay (VXLAN, UDP 4789)"));
    assert!(a.detail.contains("drops VXLAN (UDP 4789)"), "{}", a.detail);
    assert!(a.detail.contains("198.51.100.1 and 198.51.100.2"), "{}", a.detail);
}

#[test]
fn an_underlay_mtu_below_the_overlay_is_named_on_its_host() {
    let s = state();
    let mut reps = reports(&s);
    let h2 = reps.get_mut(&2).unwrap();
    h2.underlay_mtu = 1400;
    // h2's own devices follow its link; h1's do not know.
    for o in &mut h2.overlays {
        o.vxlan_mtu = 1350;
    }
    let r = why(&s, &reps, "c1", "c2");
    let a = answer(&r);
    assert_eq!(a.what, "underlay (VXLAN, UDP 4789)");
    assert!(
        a.detail.contains("h2's underlay link eth0 has MTU 1400, but h1 sends overlay packets of up to 1450 bytes, 1500 on the wire"),
        "{}",
        a.detail
    );
    // A full-size echo that does not pass with the MTUs as reported: a link in between.
    let mut reps = reports(&s);
    reps.get_mut(&1).unwrap().probes[0].full_ok = false;
    let a = why(&s, &reps, "c1", "c2");
    assert!(answer(&a).detail.contains("small echoes pass, but one of 1450 bytes"), "{}", answer(&a).detail);
}

#[test]
fn a_stopped_destination_is_named() {
    let s = state();
    let mut reps = reports(&s);
    let c2 = reps.get_mut(&2).unwrap().containers.iter_mut().find(|c| c.name == "c2").unwrap();
    c2.state = "exited".into();
    c2.exit_code = 137;
    c2.finished_ns = (NOW - 4000) * 1_000_000;
    let r = why(&s, &reps, "c1", "c2");
    let a = answer(&r);
    assert_eq!((a.place.as_str(), a.what.as_str()), ("h2", "container c2"));
    assert!(a.detail.contains("c2 is not running: exited with code 137 4.0 s ago"), "{}", a.detail);
    assert!(a.detail.contains("`weft start c2` on h2"), "{}", a.detail);
}

#[test]
fn a_down_host_is_named_and_its_missing_report_not_blamed_on_the_network() {
    let mut s = state();
    s.apply(&cmd::set_node_status(2, Status::Down, NOW - 7000)).unwrap();
    let mut reps = reports(&s);
    reps.remove(&2);
    let r = why(&s, &reps, "c1", "c2");
    let a = answer(&r);
    assert_eq!((a.place.as_str(), a.what.as_str()), ("h1 -> h2", "underlay (VXLAN, UDP 4789)"));
    assert!(a.detail.contains("h2 is Down since 7.0 s ago"), "{}", a.detail);
    // A host that is Ready but did not report is said to be silent.
    let s = state();
    let mut reps = reports(&s);
    reps.remove(&2);
    let r = why(&s, &reps, "c1", "c2");
    assert!(answer(&r).detail.contains("h2 sent no report in time"), "{}", answer(&r).detail);
}

#[test]
fn a_published_port_whose_container_exited() {
    let s = state();
    let mut reps = reports(&s);
    let c2 = reps.get_mut(&2).unwrap().containers.iter_mut().find(|c| c.name == "c2").unwrap();
    c2.ports.push(pb::PortMapping {
        host_port: 8080,
        container_port: 80,
        protocol: "tcp".into(),
        ..Default::default()
    });
    let port = Some(PortCheck { port: 8080, udp: false });
    let r = why_port(&s, &reps, "h1", "h2", port);
    assert!(r.clear, "{:#?}", r.hops);
    assert!(r.hops.last().unwrap().detail.contains("DNAT to c2"), "{:#?}", r.hops);
    let c2 = reps.get_mut(&2).unwrap().containers.iter_mut().find(|c| c.name == "c2").unwrap();
    c2.state = "exited".into();
    c2.exit_code = 1;
    let r = why_port(&s, &reps, "h1", "h2", port);
    let a = answer(&r);
    assert_eq!(a.what, "published port 8080/tcp");
    assert!(a.detail.contains("published by c2, which is not running (exited with code 1)"), "{}", a.detail);
    let r = why_port(&s, &reps, "h1", "h2", Some(PortCheck { port: 9090, udp: true }));
    assert!(answer(&r).detail.contains("nothing on h2 publishes 9090/udp (published there: 8080/tcp by c2)"));
}

#[test]
fn ends_resolve_by_name_id_address_and_host() {
    let s = state();
    assert!(matches!(resolve(&s, "c1").unwrap(), End::Container { node: 1, .. }));
    assert!(matches!(resolve(&s, "c2id").unwrap(), End::Container { node: 2, .. }));
    assert!(matches!(resolve(&s, "10.44.0.2").unwrap(), End::Container { node: 1, .. }));
    assert_eq!(resolve(&s, "h2").unwrap(), End::Host(2));
    assert_eq!(resolve(&s, "198.51.100.2").unwrap(), End::Host(2));
    assert_eq!(resolve(&s, "192.0.2.1").unwrap(), End::Outside("192.0.2.1".parse().unwrap()));
    assert!(matches!(resolve(&s, "nothing"), Err(WhyError::NotFound(_))));
    let mut s = s;
    s.apply(&cmd::allocate_endpoint("db", 1, "c1other0", "c1", "")).unwrap();
    let e = resolve(&s, "c1").unwrap_err();
    assert!(e.to_string().contains("c1 on h1 (id c1id0000), c1 on h1 (id c1other0)"), "{e}");
    assert_eq!(PortCheck::of(80, "sctp"), Err(WhyError::BadProtocol("sctp".into())));
    let r =
        explain(&s, &End::Outside("192.0.2.1".parse().unwrap()), &End::Host(1), None, &BTreeMap::new(), NOW);
    assert!(matches!(r, Err(WhyError::SourceOutside(_))));
}
