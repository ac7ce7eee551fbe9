//! apply() scenario by scenario: what is allocated, which events come out, and that every refused
//! command leaves the state byte-for-byte as it was.

use weft_state::{Driver, Outcome, Role, State, StateError, Status, cmd, pb};

fn state_with_nodes(n: u64) -> State {
    let mut s = State::new();
    for id in 1..=n {
        s.apply(&cmd::register_node(
            id,
            &format!("host{id}"),
            &format!("198.51.100.{id}"),
            Role::Manager,
            1000,
        ))
        .unwrap();
    }
    s
}

fn endpoint(applied: &weft_state::Applied) -> weft_state::Endpoint {
    match &applied.outcome {
        Outcome::Endpoint(e) => e.clone(),
        other => panic!("expected an endpoint, got {other:?}"),
    }
}

/// Applies `c`, expects a refusal, and checks nothing changed.
fn refused(s: &mut State, c: pb::Command) -> StateError {
    let before = s.snapshot_bytes();
    let revision = s.revision();
    let err = s.apply(&c).expect_err("command should be refused");
    assert_eq!(s.revision(), revision, "a refused command must not bump the revision");
    assert_eq!(s.snapshot_bytes(), before, "a refused command must change nothing ({err})");
    err
}

#[test]
fn endpoints_get_the_lowest_address_of_their_nodes_block() {
    let mut s = state_with_nodes(2);
    let net = s.apply(&cmd::create_network("app", Driver::Overlay, &["10.44.0.0/16"], 0, 0)).unwrap();
    let Outcome::Network(network) = net.outcome else { panic!() };
    assert_eq!(network.vni, 1, "lowest free VNI");
    assert_eq!(network.block_lens, vec![24]);
    let a = s.apply(&cmd::allocate_endpoint("app", 1, "c1", "web", "")).unwrap();
    let e = endpoint(&a);
    assert_eq!(e.ips[0].to_string(), "10.44.0.2");
    assert_eq!(e.mac.to_string(), "02:42:0a:2c:00:02");
    assert_eq!(a.revision, 4);
    // A new block lease comes before the endpoint in the events.
    let kinds: Vec<_> = a.events.iter().map(|e| e.kind.clone().unwrap()).collect();
    assert!(
        matches!(&kinds[0], pb::event::Kind::BlockPut(b) if b.cidr == "10.44.0.0/24" && b.node_id == 1 && b.generation == 1)
    );
    assert!(matches!(&kinds[1], pb::event::Kind::EndpointPut(_)));
    assert!(a.events.iter().all(|e| e.revision == 4));
    let b = endpoint(&s.apply(&cmd::allocate_endpoint("app", 2, "c2", "db", "")).unwrap());
    assert_eq!(b.ips[0].to_string(), "10.44.1.2", "node 2 leases the next block");
    let c = s.apply(&cmd::allocate_endpoint("app", 1, "c3", "", "")).unwrap();
    assert_eq!(endpoint(&c).ips[0].to_string(), "10.44.0.3");
    assert_eq!(c.events.len(), 1, "no new block needed");
    assert_eq!(s.resolve(network.id, "WEB").unwrap().id, e.id, "names resolve case-insensitively");
    // Release, then the same address is handed out again.
    s.apply(&cmd::release_endpoint(e.id)).unwrap();
    let again = endpoint(&s.apply(&cmd::allocate_endpoint("app", 1, "c4", "web", "")).unwrap());
    assert_eq!(again.ips[0].to_string(), "10.44.0.2");
}

#[test]
fn a_full_pool_refuses_and_changes_nothing() {
    let mut s = state_with_nodes(5);
    // 10.0.0.0/28 in /30 blocks: four blocks with one usable address each.
    s.apply(&cmd::create_network("tiny", Driver::Overlay, &["10.0.0.0/28"], 0, 30)).unwrap();
    for node in 1..=4 {
        let e =
            endpoint(&s.apply(&cmd::allocate_endpoint("tiny", node, &format!("c{node}"), "", "")).unwrap());
        assert_eq!(e.ips[0].to_string(), format!("10.0.0.{}", (node - 1) * 4 + 2));
    }
    let err = refused(&mut s, cmd::allocate_endpoint("tiny", 5, "c5", "", ""));
    assert!(matches!(err, StateError::Ipam(weft_ipam::IpamError::PoolExhausted { .. })), "{err}");
    assert!(err.to_string().contains("exhausted"));
    let err = refused(&mut s, cmd::allocate_endpoint("tiny", 1, "c6", "", ""));
    assert!(err.to_string().contains("exhausted"), "node 1's block is full and no block is free: {err}");
}

#[test]
fn expired_leases_come_back_with_a_higher_generation() {
    let mut s = state_with_nodes(2);
    s.apply(&cmd::create_network("app", Driver::Overlay, &["10.44.0.0/16"], 0, 0)).unwrap();
    let e = endpoint(&s.apply(&cmd::allocate_endpoint("app", 1, "c1", "web", "")).unwrap());
    let err = refused(&mut s, cmd::expire_node(1, 10_000, 5_000));
    assert!(err.to_string().contains("not down"), "{err}");
    s.apply(&cmd::set_node_status(1, Status::Down, 20_000)).unwrap();
    let err = refused(&mut s, cmd::allocate_endpoint("app", 1, "c2", "", ""));
    assert_eq!(err, StateError::NodeDown(1));
    let err = refused(&mut s, cmd::expire_node(1, 24_000, 5_000));
    assert!(err.to_string().contains("cannot expire yet"), "{err}");
    let expired = s.apply(&cmd::expire_node(1, 25_000, 5_000)).unwrap();
    let kinds: Vec<_> = expired.events.iter().map(|e| e.kind.clone().unwrap()).collect();
    assert!(matches!(&kinds[0], pb::event::Kind::EndpointDeleted(d) if d.id == e.id));
    assert!(
        matches!(&kinds[1], pb::event::Kind::BlockDeleted(b) if b.cidr == "10.44.0.0/24" && b.generation == 1)
    );
    assert!(s.endpoint(e.id).is_none());
    assert_eq!(s.node(1).unwrap().status, Status::Down, "the node stays, down");
    // Node 2 now gets the freed block, one generation later.
    let again = s.apply(&cmd::allocate_endpoint("app", 2, "c3", "web", "")).unwrap();
    assert!(
        matches!(&again.events[0].kind, Some(pb::event::Kind::BlockPut(b)) if b.cidr == "10.44.0.0/24" && b.generation == 2)
    );
    assert_eq!(endpoint(&again).ips[0].to_string(), "10.44.0.2");
}

#[test]
fn requested_addresses_are_honoured_or_refused() {
    let mut s = state_with_nodes(2);
    s.apply(&cmd::create_network("app", Driver::Overlay, &["10.44.0.0/16"], 0, 0)).unwrap();
    let e = endpoint(&s.apply(&cmd::allocate_endpoint("app", 1, "c1", "", "10.44.7.9")).unwrap());
    assert_eq!(e.ips[0].to_string(), "10.44.7.9");
    assert_eq!(s.blocks(e.network).iter().map(|b| b.cidr.to_string()).collect::<Vec<_>>(), ["10.44.7.0/24"]);
    let err = refused(&mut s, cmd::allocate_endpoint("app", 1, "c2", "", "10.44.7.9"));
    assert!(err.to_string().contains("already taken"), "{err}");
    for (ip, word) in
        [("10.44.7.1", "gateway"), ("10.44.7.0", "network address"), ("10.44.7.255", "broadcast")]
    {
        let err = refused(&mut s, cmd::allocate_endpoint("app", 1, "c2", "", ip));
        assert!(err.to_string().contains(word), "{ip}: {err}");
    }
    let err = refused(&mut s, cmd::allocate_endpoint("app", 2, "c2", "", "10.44.7.10"));
    assert!(matches!(err, StateError::BlockOfOtherNode { owner: 1, node: 2, .. }), "{err}");
    let err = refused(&mut s, cmd::allocate_endpoint("app", 2, "c2", "", "10.45.0.2"));
    assert!(err.to_string().contains("outside the subnets"), "{err}");
    let err = refused(&mut s, cmd::allocate_endpoint("app", 2, "c2", "", "not-an-ip"));
    assert!(err.to_string().contains("not an IP"), "{err}");
    // Automatic allocation on node 1 keeps using its block.
    let next = endpoint(&s.apply(&cmd::allocate_endpoint("app", 1, "c3", "", "")).unwrap());
    assert_eq!(next.ips[0].to_string(), "10.44.7.2");
}

#[test]
fn dual_stack_networks_give_one_address_per_family() {
    let mut s = state_with_nodes(1);
    let net = s
        .apply(&cmd::create_network("ds", Driver::Overlay, &["10.50.0.0/16", "fd00:50::/64"], 0, 0))
        .unwrap();
    let Outcome::Network(network) = net.outcome else { panic!() };
    assert_eq!(network.block_lens, vec![24, 112]);
    let e = endpoint(&s.apply(&cmd::allocate_endpoint("ds", 1, "c1", "a", "")).unwrap());
    assert_eq!(e.ips.iter().map(|i| i.to_string()).collect::<Vec<_>>(), ["10.50.0.2", "fd00:50::2"]);
    let f = endpoint(&s.apply(&cmd::allocate_endpoint("ds", 1, "c2", "b", "fd00:50::99")).unwrap());
    assert_eq!(f.ips.iter().map(|i| i.to_string()).collect::<Vec<_>>(), ["10.50.0.3", "fd00:50::99"]);
    let err =
        refused(&mut s, cmd::create_network("x", Driver::Overlay, &["10.60.0.0/16", "10.61.0.0/16"], 0, 0));
    assert!(err.to_string().contains("one subnet per address family"), "{err}");
}

#[test]
fn a_network_without_subnet_gets_the_first_free_16() {
    let mut s = state_with_nodes(1);
    s.apply(&cmd::create_network("a", Driver::Overlay, &["10.44.0.0/16"], 0, 0)).unwrap();
    s.apply(&cmd::create_network("b", Driver::Overlay, &["10.45.128.0/17"], 0, 0)).unwrap();
    s.apply(&cmd::create_network("c", Driver::Overlay, &[], 0, 0)).unwrap();
    s.apply(&cmd::create_network("d", Driver::Bridge, &[], 0, 0)).unwrap();
    let subnet = |n: &str| s.network(n).unwrap().subnets[0].to_string();
    assert_eq!((subnet("c"), subnet("d")), ("10.46.0.0/16".to_string(), "10.47.0.0/16".to_string()));
}

#[test]
fn bad_input_is_refused_with_a_clear_error() {
    let mut s = state_with_nodes(2);
    s.apply(&cmd::create_network("app", Driver::Overlay, &["10.44.0.0/16"], 7, 0)).unwrap();
    s.apply(&cmd::allocate_endpoint("app", 1, "c1", "web", "")).unwrap();
    let cases: Vec<(pb::Command, &str)> = vec![
        (cmd::create_network("App", Driver::Overlay, &["10.45.0.0/16"], 0, 0), "already exists"),
        (cmd::create_network("bad.name", Driver::Overlay, &["10.45.0.0/16"], 0, 0), "letters, digits"),
        (cmd::create_network("n2", Driver::Overlay, &["10.44.128.0/17"], 0, 0), "overlaps 10.44.0.0/16"),
        (cmd::create_network("n2", Driver::Overlay, &["10.0.0.0/8"], 0, 0), "overlaps"),
        (cmd::create_network("n2", Driver::Overlay, &["10.45.0.0/33"], 0, 0), "/33"),
        (cmd::create_network("n2", Driver::Overlay, &["10.45.0.1/16"], 0, 0), "host bits"),
        (cmd::create_network("n2", Driver::Overlay, &["banana"], 0, 0), "invalid CIDR"),
        (cmd::create_network("n2", Driver::Overlay, &["10.45.0.0/31"], 0, 0), "too small"),
        (cmd::create_network("n2", Driver::Overlay, &["10.45.0.0/16"], 7, 0), "VNI 7 is used"),
        (cmd::create_network("n2", Driver::Overlay, &["10.45.0.0/16"], 16_777_216, 0), "out of range"),
        (cmd::create_network("n2", Driver::Overlay, &["10.45.0.0/16"], 0, 8), "must be /16 to /30"),
        (cmd::delete_network("app"), "in use by 1 endpoint"),
        (cmd::delete_network("nope"), "unknown network"),
        (cmd::allocate_endpoint("nope", 1, "c2", "", ""), "unknown network"),
        (cmd::allocate_endpoint("app", 9, "c2", "", ""), "unknown node 9"),
        (cmd::allocate_endpoint("app", 1, "c1", "", ""), "already attached"),
        (cmd::allocate_endpoint("app", 2, "c2", "WEB", ""), "already used"),
        (cmd::allocate_endpoint("app", 2, "c 2", "", ""), "container id"),
        (cmd::release_endpoint(99), "unknown endpoint 99"),
        (cmd::register_node(1, "x", "198.51.100.9", Role::Worker, 0), "already exists"),
        (cmd::register_node(3, "HOST1", "198.51.100.9", Role::Worker, 0), "taken"),
        (cmd::register_node(3, "h3", "198.51.100.1", Role::Worker, 0), "used by node 1"),
        (cmd::register_node(3, "h3", "banana", Role::Worker, 0), "not an IP"),
        (cmd::register_node(0, "h3", "198.51.100.3", Role::Worker, 0), "reserved"),
        (cmd::remove_node(7), "unknown node 7"),
        (pb::Command { kind: None }, "no kind"),
    ];
    for (c, want) in cases {
        let err = refused(&mut s, c.clone());
        assert!(err.to_string().contains(want), "{c:?}: got {err:?} / {err}, wanted {want:?}");
    }
    let err = s.apply_bytes(&[0xff, 0xff, 0xff]).unwrap_err();
    assert!(matches!(err, StateError::Decode(_)), "{err}");
}

#[test]
fn networks_are_deleted_and_their_vni_reused() {
    let mut s = state_with_nodes(1);
    s.apply(&cmd::create_network("a", Driver::Overlay, &["10.1.0.0/16"], 0, 0)).unwrap();
    let b = s.apply(&cmd::create_network("b", Driver::Overlay, &["10.2.0.0/16"], 0, 0)).unwrap();
    assert!(matches!(b.outcome, Outcome::Network(ref n) if n.vni == 2));
    let e = endpoint(&s.apply(&cmd::allocate_endpoint("a", 1, "c1", "", "")).unwrap());
    s.apply(&cmd::release_endpoint(e.id)).unwrap();
    let del = s.apply(&cmd::delete_network("a")).unwrap();
    assert!(matches!(&del.events[0].kind, Some(pb::event::Kind::BlockDeleted(_))));
    assert!(matches!(&del.events[1].kind, Some(pb::event::Kind::NetworkDeleted(1))));
    let c = s.apply(&cmd::create_network("c", Driver::Overlay, &["10.1.0.0/16"], 0, 0)).unwrap();
    assert!(matches!(c.outcome, Outcome::Network(ref n) if n.vni == 1 && n.id == 3));
    let br = s.apply(&cmd::create_network("br", Driver::Bridge, &["172.30.0.0/16"], 0, 0)).unwrap();
    assert!(matches!(br.outcome, Outcome::Network(ref n) if n.vni == 0));
}

#[test]
fn removing_a_node_releases_everything_it_held() {
    let mut s = state_with_nodes(2);
    s.apply(&cmd::create_network("app", Driver::Overlay, &["10.44.0.0/16"], 0, 0)).unwrap();
    s.apply(&cmd::allocate_endpoint("app", 1, "c1", "web", "")).unwrap();
    s.apply(&cmd::allocate_endpoint("app", 2, "c2", "db", "")).unwrap();
    let removed = s.apply(&cmd::remove_node(1)).unwrap();
    assert_eq!(removed.events.len(), 3, "endpoint, block, node");
    assert!(matches!(removed.events[2].kind, Some(pb::event::Kind::NodeDeleted(1))));
    assert_eq!(s.endpoints().count(), 1);
    // The name and the underlay address are free again; the id is revoked for good, also
    // through a snapshot, while the token generations count rotations.
    assert!(s.is_revoked(1) && !s.is_revoked(2));
    let refused = s.apply(&cmd::register_node(1, "host1", "198.51.100.1", Role::Worker, 0)).unwrap_err();
    assert!(refused.to_string().contains("removed from the cluster"), "{refused}");
    s.apply(&cmd::register_node(9, "host1", "198.51.100.1", Role::Worker, 0)).unwrap();
    s.apply(&cmd::allocate_endpoint("app", 9, "c3", "web", "")).unwrap();
    s.apply(&cmd::rotate_join_token(Role::Worker)).unwrap();
    s.apply(&cmd::rotate_join_token(Role::Worker)).unwrap();
    assert_eq!((s.token_generation(Role::Worker), s.token_generation(Role::Manager)), (2, 0));
    let copy = weft_state::State::from_snapshot_bytes(&s.snapshot_bytes()).unwrap();
    assert!(copy.is_revoked(1));
    assert_eq!(copy.token_generation(Role::Worker), 2);
    assert_eq!(copy.snapshot_bytes(), s.snapshot_bytes());
}

#[test]
fn snapshots_round_trip_byte_for_byte_and_behave_the_same() {
    let mut s = state_with_nodes(3);
    s.apply(&cmd::create_network("app", Driver::Overlay, &["10.44.0.0/16", "fd00:44::/64"], 0, 0)).unwrap();
    s.apply(&cmd::create_network("br", Driver::Bridge, &["172.30.0.0/24"], 0, 0)).unwrap();
    let mut ids = Vec::new();
    for i in 0..40 {
        let node = 1 + i % 3;
        ids.push(
            endpoint(
                &s.apply(&cmd::allocate_endpoint("app", node, &format!("c{i}"), &format!("n{i}"), ""))
                    .unwrap(),
            )
            .id,
        );
    }
    for id in ids.iter().step_by(3) {
        s.apply(&cmd::release_endpoint(*id)).unwrap();
    }
    s.apply(&cmd::set_node_status(3, Status::Down, 5)).unwrap();
    s.apply(&cmd::expire_node(3, 10, 5)).unwrap();
    let bytes = s.snapshot_bytes();
    let mut restored = State::from_snapshot_bytes(&bytes).unwrap();
    assert_eq!(restored.snapshot_bytes(), bytes, "byte-identical round trip");
    assert_eq!(restored.revision(), s.revision());
    // Both continue identically: holes are filled in the same order, generations continue.
    for i in 0..30 {
        let c = cmd::allocate_endpoint("app", 1 + i % 2, &format!("d{i}"), "", "");
        assert_eq!(s.apply(&c), restored.apply(&c));
    }
    s.apply(&cmd::set_node_status(3, Status::Ready, 20)).unwrap();
    restored.apply(&cmd::set_node_status(3, Status::Ready, 20)).unwrap();
    let c = cmd::allocate_endpoint("app", 3, "e1", "", "");
    assert_eq!(s.apply(&c), restored.apply(&c));
    assert_eq!(s.snapshot_bytes(), restored.snapshot_bytes());
    assert!(State::from_snapshot_bytes(&[1, 2, 3]).is_err());
}

#[test]
fn a_mirror_fed_every_batch_matches_the_state_and_refuses_gaps() {
    let mut s = State::new();
    let mut mirror = weft_state::Mirror::from_snapshot(&s.snapshot());
    let mut late = None;
    let commands = vec![
        cmd::register_node(1, "a", "198.51.100.1", Role::Manager, 1),
        cmd::register_node(2, "b", "198.51.100.2", Role::Worker, 1),
        cmd::create_network("app", Driver::Overlay, &["10.44.0.0/16"], 0, 0),
        cmd::allocate_endpoint("app", 1, "c1", "web", ""),
        cmd::allocate_endpoint("app", 2, "c2", "db", ""),
        cmd::release_endpoint(1),
        cmd::set_node_status(2, Status::Down, 5),
        cmd::expire_node(2, 10, 1),
        cmd::remove_node(2),
    ];
    for (i, c) in commands.iter().enumerate() {
        let applied = s.apply(c).unwrap();
        let batch = pb::EventBatch { revision: applied.revision, events: applied.events };
        mirror.apply(&batch).unwrap();
        assert!(mirror.matches(&s), "mirror diverged after command {i}");
        if i == 3 {
            late = Some(weft_state::Mirror::from_snapshot(&s.snapshot()));
        }
    }
    assert_eq!(mirror.revision(), s.revision());
    assert_eq!(mirror.endpoints().count(), 0);
    // A batch that skips a revision, or repeats one, is refused and changes nothing.
    let mut late = late.unwrap();
    let before = late.clone();
    let err = late.apply(&pb::EventBatch { revision: 6, events: vec![] }).unwrap_err();
    assert_eq!(err, weft_state::MirrorError::OutOfOrder { have: 4, got: 6 });
    assert!(late.apply(&pb::EventBatch { revision: 4, events: vec![] }).is_err());
    assert_eq!(late, before);
}

#[test]
fn networks_stay_off_underlays_and_special_ranges_and_joins_off_networks() {
    let mut s = State::new();
    s.apply(&cmd::register_agent(1, "h1", "192.0.2.1", 24, "192.0.2.1:7946", Role::Manager, 0)).unwrap();
    let revision = s.revision();
    for subnet in ["192.0.2.0/25", "192.0.0.0/16", "127.0.0.0/16", "224.0.0.0/4", "fe80::/64", "ff02::/16"] {
        let e = s.apply(&cmd::create_network("bad", Driver::Overlay, &[subnet], 0, 0)).unwrap_err();
        assert!(
            matches!(e, StateError::SubnetOnUnderlay { .. } | StateError::SubnetSpecial { .. }),
            "{subnet}: {e}"
        );
    }
    assert_eq!(s.revision(), revision, "refusals change nothing");
    s.apply(&cmd::create_network("lan", Driver::Overlay, &["203.0.113.0/24"], 0, 0)).unwrap();
    // A host whose underlay subnet holds a network's addresses cannot join.
    let e = s.apply(&cmd::register_agent(2, "h2", "203.0.113.9", 16, "", Role::Worker, 0)).unwrap_err();
    assert!(e.to_string().contains("overlaps the underlay 203.0.0.0/16 of node \"h2\""), "{e}");
    // Without a prefix, the address alone counts.
    let e = s.apply(&cmd::register_agent(2, "h2", "203.0.113.9", 0, "", Role::Worker, 0)).unwrap_err();
    assert!(matches!(e, StateError::SubnetOnUnderlay { .. }), "{e}");
    s.apply(&cmd::register_agent(2, "h2", "198.51.100.9", 0, "", Role::Worker, 0)).unwrap();
}

#[test]
fn aliases_are_shared_and_names_stay_unique() {
    let mut s = state_with_nodes(2);
    s.apply(&cmd::create_network("app", Driver::Overlay, &["10.44.0.0/16"], 0, 0)).unwrap();
    let with_alias = |container: &str, name: &str, alias: &str| {
        let mut c = cmd::allocate_endpoint("app", 1, container, name, "");
        if let Some(pb::command::Kind::AllocateEndpoint(a)) = c.kind.as_mut() {
            a.aliases = vec![alias.to_string()];
        }
        c
    };
    let first = endpoint(&s.apply(&with_alias("c1", "web1", "svc")).unwrap());
    let second = endpoint(&s.apply(&with_alias("c2", "web2", "SVC")).unwrap());
    // A name is its container's own: neither another name nor an alias may take it.
    let e = s.apply(&with_alias("c3", "web1", "other")).unwrap_err();
    assert!(matches!(e, StateError::EndpointNameTaken { .. }), "{e}");
    let e = s.apply(&with_alias("c3", "svc", "other")).unwrap_err();
    assert!(matches!(e, StateError::EndpointNameTaken { .. }), "{e}");
    let e = s.apply(&with_alias("c3", "web3", "web2")).unwrap_err();
    assert!(matches!(e, StateError::EndpointNameTaken { .. }), "{e}");
    // Round trip through a snapshot keeps the sharing; releasing one leaves the other.
    let copy = State::from_snapshot_bytes(&s.snapshot_bytes()).unwrap();
    assert_eq!(copy.snapshot_bytes(), s.snapshot_bytes());
    let network = s.network("app").unwrap().id;
    s.apply(&cmd::release_endpoint(first.id)).unwrap();
    assert_eq!(s.resolve(network, "svc").map(|e| e.id), Some(second.id));
    s.apply(&cmd::release_endpoint(second.id)).unwrap();
    assert!(s.resolve(network, "svc").is_none());
    s.apply(&with_alias("c4", "svc", "x")).unwrap();
}
