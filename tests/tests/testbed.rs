//! The test bed itself: hosts reach each other over the switch, a cut link stops traffic and a
//! restored one carries it again, and every namespace is gone after drop, also after a panic or
//! a signal that stopped a benchmark.

use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use weft_tests::cluster::bin;
use weft_tests::interrupt::{children_of, prefix_of, processes_in, sweep};
use weft_tests::{BedOptions, VirtualHosts, netns_names, ping};

#[test]
fn hosts_share_an_underlay_and_links_can_be_cut() {
    let bed = VirtualHosts::new(3);
    let h0 = bed.host(0);
    assert_eq!(h0.addr.to_string(), "198.51.100.1");
    assert!(ping(h0, "198.51.100.3", 1), "host 0 reaches host 2");
    // The hosts see only their own eth0 and lo.
    let out = h0.output("ip", &["-o", "link", "show"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.lines().count(), 2, "{text}");
    bed.cut(2);
    assert!(!ping(h0, "198.51.100.3", 1), "cut host is unreachable");
    assert!(ping(h0, "198.51.100.2", 1), "others are unaffected");
    bed.restore(2);
    assert!(ping(h0, "198.51.100.3", 2), "restored host answers again");
    // A closure runs inside the host (/proc/thread-self, since /proc/net follows the main thread).
    let seen = bed.host(1).run(|| std::fs::read_to_string("/proc/thread-self/net/fib_trie").unwrap());
    assert!(seen.contains("198.51.100.2"));
}

#[test]
fn pinned_underlay_neighbours_are_permanent_kernel_entries_with_each_peers_mac() {
    let bed = VirtualHosts::new(3);
    let permanent = |i: usize| {
        bed.host(i).netlink(|nl| async move {
            let eth0 = nl.require_link("eth0").await.unwrap();
            let mut found: Vec<(String, String)> = nl
                .neighbours(Some(eth0.index))
                .await
                .unwrap()
                .into_iter()
                .filter(|n| n.permanent)
                .map(|n| (n.ip.to_string(), n.mac.map(|m| m.to_string()).unwrap_or_default()))
                .collect();
            found.sort();
            found
        })
    };
    assert!(permanent(0).is_empty(), "a bed resolves its underlay itself until it is pinned");
    bed.pin_underlay_neighbours();
    let mac = |i: usize| {
        let eth0 = bed.host(i).netlink(|nl| async move { nl.require_link("eth0").await.unwrap() });
        eth0.mac.unwrap().to_string()
    };
    let mut expected: Vec<(String, String)> = [1, 2]
        .into_iter()
        .flat_map(|i| {
            let h = bed.host(i);
            [(h.addr.to_string(), mac(i)), (h.addr6.to_string(), mac(i))]
        })
        .collect();
    expected.sort();
    assert_eq!(permanent(0), expected, "h0 holds h1's and h2's addresses, IPv4 and IPv6, nothing of its own");
    assert!(ping(bed.host(0), "198.51.100.3", 1), "traffic goes over the pinned entries");
}

#[test]
fn everything_is_removed_on_drop_and_on_panic() {
    let bed = VirtualHosts::with(BedOptions { hosts: 2, mtu: 1400 });
    let extra = bed.add_namespace("outside");
    let names = bed.namespace_names();
    assert_eq!(names.len(), 4);
    assert!(names.contains(&extra));
    let mtu = bed.host(0).netlink(|nl| async move { nl.require_link("eth0").await.unwrap().mtu });
    assert_eq!(mtu, 1400);
    let pid = bed.spawn({
        let mut cmd = bed.host(0).command("sleep");
        cmd.arg("600");
        cmd
    });
    drop(bed);
    let left = netns_names();
    assert!(names.iter().all(|n| !left.contains(n)), "left behind: {left:?}");
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists() || is_zombie_or_gone(pid));

    let names = std::panic::catch_unwind(|| {
        let bed = VirtualHosts::new(2);
        let names = bed.namespace_names();
        std::panic::panic_any(names);
    })
    .unwrap_err()
    .downcast::<Vec<String>>()
    .unwrap();
    let left = netns_names();
    assert!(names.iter().all(|n| !left.contains(n)), "left behind after panic: {left:?}");
}

fn is_zombie_or_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat.split_whitespace().nth(2) == Some("Z"),
        Err(_) => true,
    }
}

/// Kills bench process `.0` (if it still runs) and sweeps what it made when dropped, so a
/// failing test leaves nothing either.
struct SweptAtEnd(u32);

impl Drop for SweptAtEnd {
    fn drop(&mut self) {
        let _ = kill(Pid::from_raw(self.0 as i32), Signal::SIGKILL);
        sweep(self.0);
    }
}

/// `weft-bench overlay`, once its bed, containers and peers' paths are built (it has started its
/// first iperf3): the process, the names of its namespaces and their inodes.
fn bench_with_its_bed() -> (Child, SweptAtEnd, Vec<String>, BTreeSet<u64>) {
    let mut bench = Command::new(bin("weft-bench"))
        .arg("overlay")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start weft-bench");
    let pid = bench.id();
    let swept = SweptAtEnd(pid);
    let started = Instant::now();
    while !children_of(pid)
        .iter()
        .any(|c| std::fs::read_to_string(format!("/proc/{c}/comm")).is_ok_and(|comm| comm.trim() == "iperf3"))
    {
        if let Ok(Some(status)) = bench.try_wait() {
            panic!("weft-bench overlay ended before its first iperf3: {status}");
        }
        if started.elapsed() > Duration::from_secs(120) {
            let _ = bench.kill();
            panic!("weft-bench overlay started no iperf3 in 120 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let prefix = prefix_of(pid);
    let names: Vec<String> = netns_names().into_iter().filter(|n| n.starts_with(&prefix)).collect();
    let inodes = names
        .iter()
        .filter_map(|n| std::fs::metadata(format!("/run/netns/{n}")).ok())
        .map(|m| m.ino())
        .collect();
    (bench, swept, names, inodes)
}

#[test]
fn a_benchmark_stopped_by_a_signal_leaves_nothing_behind() {
    // Ctrl-C: the bench removes its namespaces and what runs inside them, and exits 130.
    let (mut bench, _swept, names, inodes) = bench_with_its_bed();
    assert!(names.len() >= 5, "the overlay bed has hosts, a switch and containers: {names:?}");
    kill(Pid::from_raw(bench.id() as i32), Signal::SIGINT).unwrap();
    let status = bench.wait().unwrap();
    assert_eq!(status.code(), Some(130), "exit after SIGINT: {status}");
    let left = netns_names();
    assert!(names.iter().all(|n| !left.contains(n)), "namespaces left behind: {left:?}");
    assert_eq!(processes_in(&inodes), Vec::<u32>::new(), "processes left inside its namespaces");

    // The control: SIGKILL leaves no chance to clean up, and the same bed stays behind until
    // it is swept by name.
    let (mut bench, _swept, names, inodes) = bench_with_its_bed();
    let pid = bench.id();
    bench.kill().unwrap();
    assert_eq!(bench.wait().unwrap().signal(), Some(Signal::SIGKILL as i32));
    let left = netns_names();
    assert!(names.iter().all(|n| left.contains(n)), "a killed bench's namespaces stay: {left:?}");
    assert_eq!(sweep(pid), Vec::<String>::new(), "sweeping a killed bench");
    let left = netns_names();
    assert!(names.iter().all(|n| !left.contains(n)), "namespaces left after the sweep: {left:?}");
    assert_eq!(processes_in(&inodes), Vec::<u32>::new(), "processes left after the sweep");
}
