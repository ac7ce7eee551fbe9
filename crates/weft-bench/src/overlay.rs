//! Suite `overlay`: container-to-container throughput and latency across two virtual hosts
//! through weft's VXLAN overlay, against host-to-host on the same underlay, in one run.
//!
//! Method: a 2-host test bed (network namespaces on a veth/bridge underlay, MTU 1500), an overlay
//! network with one container per host, both reconcilers running. iperf3 TCP for 5 s, 1 stream
//! and 4 streams, alternating underlay (host eth0 to host eth0) and overlay (container eth0 to
//! container eth0), 3 rounds each, median reported. RTT: 300 pings 10 ms apart each way, mean.
//! Beside weft's overlay, the same measurements through flannel's and Docker Swarm's data paths
//! built by hand on the same two hosts (`peers`), in the same rounds (the order rotates), each
//! reported against the underlay and weft's against each of them (TCP: weft / peer, above 1 is
//! weft faster; RTT: peer / weft, likewise). A fourth path is a candidate for weft's own: its
//! shape without the per-network bridge (`peers::routed`), reported against weft's as it is
//! (above 1: the candidate is faster), so the step is measured before it is built.

use std::time::Duration;

use weft_state::State;
use weft_tests::overlay::{Agent, can_ping, cluster_state, container, eventually};
use weft_tests::{Namespace, VirtualHosts, iperf3, ping};

use crate::peers;
use crate::report::Figure;

const ROUNDS: usize = 3;
const SECONDS: u32 = 5;

/// Mean RTT in microseconds of 300 pings.
fn rtt_us(from: &Namespace, addr: &str) -> f64 {
    let out = from.output("ping", &["-c", "300", "-i", "0.01", "-q", addr]);
    let text = String::from_utf8_lossy(&out.stdout);
    // rtt min/avg/max/mdev = 0.031/0.046/0.120/0.011 ms
    let line = text.lines().find(|l| l.contains("min/avg/max")).expect("ping summary");
    let numbers = line.split('=').nth(1).expect("values").trim();
    let avg: f64 = numbers.split('/').nth(1).expect("avg").parse().expect("number");
    avg * 1000.0
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// One data path's container pair: the client side's namespace, the server side's, the server's
/// address.
struct Path<'a> {
    label: &'static str,
    client: std::sync::Arc<Namespace>,
    server: std::sync::Arc<Namespace>,
    addr: String,
    _bed: &'a VirtualHosts,
}

/// Runs the suite and returns its figures.
pub fn run() -> Vec<Figure> {
    let bed = VirtualHosts::new(2);
    let mut state: State = cluster_state(&bed, &[("bench", "10.77.0.0/16", 77)]);
    let (c0, _) = container(&bed, &mut state, "bench", 0, "c0", 1500);
    let (c1, c1_ip) = container(&bed, &mut state, "bench", 1, "c1", 1500);
    let agents: Vec<Agent> =
        (0..2).map(|i| Agent::start(bed.host(i), i as u64 + 1, &state, Duration::from_secs(10))).collect();
    eventually("overlay up", Duration::from_secs(10), || can_ping(&bed, &c0, &c1_ip));
    // The peers' shapes on the same two hosts, beside weft's.
    let flannel = peers::flannel(&bed);
    let swarm = peers::swarm(&bed);
    let routed = peers::routed(&bed);
    let pair = |label: &'static str, pair: &[(String, String)]| Path {
        label,
        client: bed.namespace(&pair[0].0),
        server: bed.namespace(&pair[1].0),
        addr: pair[1].1.clone(),
        _bed: &bed,
    };
    let paths = [
        Path {
            label: "weft",
            client: bed.namespace(&c0),
            server: bed.namespace(&c1),
            addr: c1_ip.clone(),
            _bed: &bed,
        },
        pair("flannel", &flannel),
        pair("swarm", &swarm),
        pair("routed", &routed),
    ];
    for p in &paths {
        eventually(&format!("{} path up", p.label), Duration::from_secs(10), || ping(&p.client, &p.addr, 1));
    }
    let h1_addr = bed.host(1).addr.to_string();
    let mut figures = Vec::new();
    for streams in [1u32, 4] {
        let mut under = Vec::new();
        let mut over: Vec<Vec<f64>> = vec![Vec::new(); paths.len()];
        for round in 0..ROUNDS {
            eprintln!("overlay: iperf3 {streams} stream(s), round {}", round + 1);
            under.push(iperf3(bed.host(0), bed.host(1), &h1_addr, SECONDS, streams));
            for k in 0..paths.len() {
                // A different path goes first every round.
                let p = &paths[(k + round) % paths.len()];
                let i = paths.iter().position(|q| q.label == p.label).expect("a path");
                over[i].push(iperf3(&p.client, &p.server, &p.addr, SECONDS, streams));
            }
        }
        let u = median(under) / 1e9;
        let rates: Vec<f64> = over.into_iter().map(|v| median(v) / 1e9).collect();
        let name = format!("overlay.tcp.{streams}_stream{}", if streams > 1 { "s" } else { "" });
        figures.push(Figure::new(
            &name,
            rates[0],
            "Gbit/s",
            format!("underlay host-to-host, {streams} stream(s), same run"),
            u,
        ));
        for (k, peer) in [(1, "flannel's VXLAN backend"), (2, "Docker Swarm's overlay")] {
            figures.push(Figure::new(
                format!("{name}.vs_{}", paths[k].label),
                rates[0],
                "Gbit/s",
                format!("{peer} built by hand on the same hosts, {streams} stream(s), same run"),
                rates[k],
            ));
            figures.push(Figure::new(
                format!(
                    "overlay.tcp.{streams}_stream{}.{}",
                    if streams > 1 { "s" } else { "" },
                    paths[k].label
                ),
                rates[k],
                "Gbit/s",
                format!("underlay host-to-host, {streams} stream(s), same run"),
                u,
            ));
        }
        // The candidate step for weft's own path: above 1 when routing without the bridge wins.
        figures.push(Figure::new(
            format!("{name}.routed_candidate.vs_weft"),
            rates[3],
            "Gbit/s",
            format!("weft's overlay as it is, {streams} stream(s), same run"),
            rates[0],
        ));
        figures.push(Figure::new(
            format!("{name}.routed_candidate"),
            rates[3],
            "Gbit/s",
            format!("underlay host-to-host, {streams} stream(s), same run"),
            u,
        ));
    }
    eprintln!("overlay: RTT");
    let u = rtt_us(bed.host(0), &h1_addr);
    let rtts: Vec<f64> = paths.iter().map(|p| rtt_us(&p.client, &p.addr)).collect();
    figures.push(Figure::new("overlay.rtt.mean", rtts[0], "us", "underlay host-to-host RTT, same run", u));
    figures.push(Figure::new(
        "overlay.rtt.overhead",
        rtts[0] - u,
        "us",
        "underlay host-to-host RTT, same run",
        u,
    ));
    figures.push(
        Figure::new(
            "overlay.rtt.mean.routed_candidate.vs_weft",
            rtts[3],
            "us",
            "weft's overlay RTT as it is, same run",
            rtts[0],
        )
        .inverted(),
    );
    for k in 1..3 {
        figures.push(
            Figure::new(
                format!("overlay.rtt.mean.vs_{}", paths[k].label),
                rtts[0],
                "us",
                format!("{} RTT built by hand on the same hosts, same run", paths[k].label),
                rtts[k],
            )
            .inverted(),
        );
    }
    drop(agents);
    figures
}
