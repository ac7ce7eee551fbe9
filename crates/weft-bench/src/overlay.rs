//! Suite `overlay`: container-to-container throughput and latency across two virtual hosts
//! through weft's VXLAN overlay, against host-to-host on the same underlay, in one run.
//!
//! Method: a 2-host test bed (network namespaces on a veth/bridge underlay, MTU 1500), an overlay
//! network with one container per host, both reconcilers running. iperf3 TCP for 5 s, 1 stream
//! and 4 streams, alternating underlay (host eth0 to host eth0) and overlay (container eth0 to
//! container eth0), 3 rounds each, median reported. RTT: 300 pings 10 ms apart each way, mean.

use std::time::Duration;

use weft_state::State;
use weft_tests::overlay::{Agent, can_ping, cluster_state, container, eventually};
use weft_tests::{Namespace, VirtualHosts, iperf3};

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

/// Runs the suite and returns its figures.
pub fn run() -> Vec<Figure> {
    let bed = VirtualHosts::new(2);
    let mut state: State = cluster_state(&bed, &[("bench", "10.77.0.0/16", 77)]);
    let (c0, _) = container(&bed, &mut state, "bench", 0, "c0", 1500);
    let (c1, c1_ip) = container(&bed, &mut state, "bench", 1, "c1", 1500);
    let agents: Vec<Agent> =
        (0..2).map(|i| Agent::start(bed.host(i), i as u64 + 1, &state, Duration::from_secs(10))).collect();
    eventually("overlay up", Duration::from_secs(10), || can_ping(&bed, &c0, &c1_ip));
    let h1_addr = bed.host(1).addr.to_string();
    let mut figures = Vec::new();
    let (c0, c1) = (bed.namespace(&c0), bed.namespace(&c1));
    {
        {
            for streams in [1u32, 4] {
                let (mut under, mut over) = (Vec::new(), Vec::new());
                for round in 0..ROUNDS {
                    eprintln!("overlay: iperf3 {streams} stream(s), round {}", round + 1);
                    under.push(iperf3(bed.host(0), bed.host(1), &h1_addr, SECONDS, streams));
                    over.push(iperf3(&c0, &c1, &c1_ip, SECONDS, streams));
                }
                let (u, o) = (median(under) / 1e9, median(over) / 1e9);
                figures.push(Figure::new(
                    format!("overlay.tcp.{streams}_stream{}", if streams > 1 { "s" } else { "" }),
                    o,
                    "Gbit/s",
                    format!("underlay host-to-host, {streams} stream(s), same run"),
                    u,
                ));
            }
            eprintln!("overlay: RTT");
            let u = rtt_us(bed.host(0), &h1_addr);
            let o = rtt_us(&c0, &c1_ip);
            figures.push(Figure::new("overlay.rtt.mean", o, "us", "underlay host-to-host RTT, same run", u));
            figures.push(Figure::new(
                "overlay.rtt.overhead",
                o - u,
                "us",
                "underlay host-to-host RTT, same run",
                u,
            ));
        }
    }
    drop(agents);
    figures
}
