//! Heartbeat sessions on the virtual-host bed: a follower manager relays its workers' beats to
//! the leader in batches (the leader's messages do not grow with the hosts behind a follower,
//! while a worker beating to the leader itself costs it one message a beat: the control), and
//! `weft net why` still reaches workers behind a follower, both ways through it.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use weft_tests::VirtualHosts;
use weft_tests::cluster::WeftCluster;

/// `weft_heartbeat_messages_total` and `weft_heartbeat_beats_total` of host `i`.
fn beat_counters(bed: &VirtualHosts, i: usize) -> (u64, u64) {
    let out = bed.host(i).output("curl", &["-sf", "http://127.0.0.1:9946/metrics"]);
    assert!(out.status.success(), "metrics of h{i}: {out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    let values: BTreeMap<&str, u64> = text
        .lines()
        .filter_map(|l| l.split_once(' '))
        .filter_map(|(name, value)| Some((name, value.parse().ok()?)))
        .collect();
    (values["weft_heartbeat_messages_total"], values["weft_heartbeat_beats_total"])
}

/// Messages and beats per second received by host `i` over `window`.
fn rates(bed: &VirtualHosts, i: usize, window: Duration) -> (f64, f64) {
    let (m0, b0) = beat_counters(bed, i);
    let started = Instant::now();
    std::thread::sleep(window);
    let (m1, b1) = beat_counters(bed, i);
    let secs = started.elapsed().as_secs_f64();
    ((m1 - m0) as f64 / secs, (b1 - b0) as f64 / secs)
}

#[test]
fn a_follower_relays_its_workers_beats_to_the_leader_in_batches() {
    // h0 bootstraps and leads, h1 follows; h2..h9 join through h1, h10 through h0.
    let bed = VirtualHosts::new(11);
    let mut cluster = WeftCluster::new(&bed);
    cluster.flags = ["--down-after", "4s", "--metrics", "127.0.0.1:9946"].map(String::from).to_vec();
    cluster.form(2, 0);
    let leader = cluster.leader(0).expect("a leader");
    assert_eq!(leader, 0, "the bootstrap node leads a fresh cluster");
    let token = cluster.weft_ok(0, &["cluster", "token", "worker"]).trim().to_string();
    for i in 2..10 {
        cluster.start(i, &["--join", &cluster.api(1), "--token", &token]);
    }
    cluster.start(10, &["--join", &cluster.api(0), "--token", &token]);
    cluster.eventually("all 11 Ready", Duration::from_secs(30), || {
        cluster.nodes(0).is_ok_and(|n| n.len() == 11 && n.iter().all(|n| n["status"] == "Ready"))
    });
    let (follower_messages, follower_beats) = rates(&bed, 1, Duration::from_secs(6));
    let (leader_messages, leader_beats) = rates(&bed, 0, Duration::from_secs(6));
    // The follower hears each of its eight workers once a second, one beat a message.
    assert!(
        follower_messages >= 6.0 && (follower_beats - follower_messages).abs() < 1.0,
        "follower: {follower_messages:.1} messages/s, {follower_beats:.1} beats/s"
    );
    // The leader hears all ten other hosts a second, in at most four messages a second from
    // the follower plus one a beat from h10, which beats to it directly (the control).
    assert!(leader_beats >= 8.0, "the leader hears every host: {leader_beats:.1} beats/s");
    assert!(
        leader_messages <= 4.0 + 1.0 + 1.0,
        "the leader's messages grow with the managers, not the hosts: {leader_messages:.1} messages/s for {leader_beats:.1} beats/s"
    );
    // Every host stays Ready throughout: relayed beats are dated when they were heard.
    for _ in 0..20 {
        std::thread::sleep(Duration::from_millis(200));
        let nodes = cluster.nodes(0).unwrap();
        assert!(nodes.iter().all(|n| n["status"] == "Ready"), "{nodes:?}");
    }

    // A worker behind the follower that stops is Down within --down-after plus the relay window.
    cluster.kill(9);
    let killed = Instant::now();
    cluster.eventually("h9 Down", Duration::from_secs(15), || {
        cluster.nodes(0).is_ok_and(|n| n.iter().any(|n| n["name"] == "h9" && n["status"] == "Down"))
    });
    let took = killed.elapsed();
    assert!(took >= Duration::from_secs(3), "not before --down-after (4 s) less a beat: {took:?}");

    // `net why` between two workers behind the follower: each is asked on its session through
    // h1, probes, and its report comes back through h1 to the leader.
    cluster.import_busybox(&[2, 3]);
    cluster.weft_ok(0, &["network", "create", "--driver", "overlay", "--subnet", "10.94.0.0/16", "app"]);
    cluster.weft_ok(2, &["run", "-d", "--name", "a", "--network", "app", "busybox", "sleep", "3600"]);
    cluster.weft_ok(3, &["run", "-d", "--name", "b", "--network", "app", "busybox", "sleep", "3600"]);
    cluster.eventually("a reaches b", Duration::from_secs(15), || {
        cluster.weft(2, &["exec", "a", "ping", "-c", "1", "-W", "1", "b"]).status.success()
    });
    let asked = Instant::now();
    let out = cluster.weft(0, &["net", "why", "--format", "json", "a", "b"]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("a JSON answer");
    assert_eq!((out.status.code(), &json["clear"]), (Some(0), &serde_json::Value::Bool(true)), "{json:#}");
    let underlay = json["hops"].as_array().unwrap().iter().find(|h| h["place"] == "h2 -> h3").cloned();
    let detail = underlay.as_ref().and_then(|h| h["detail"].as_str()).unwrap_or_default();
    assert!(detail.contains("answered in"), "h2's probe ran and its report came back: {json:#}");
    assert!(
        asked.elapsed() < Duration::from_secs(5),
        "asked at once, not after the reports' wait: {:?}",
        asked.elapsed()
    );
}
