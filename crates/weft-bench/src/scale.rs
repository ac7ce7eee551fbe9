//! Suite `scale`: whole weftd agents on N virtual hosts (3 managers, the rest workers), for N in
//! 10, 50, 100 and 200 (`WEFT_SCALE_HOSTS=10,50` to choose): how long a new container takes to be
//! resolvable by name and answer a ping on every other host, and what each agent costs in memory
//! and CPU at idle and under 20 container starts a second.
//!
//! Method: release binaries, production defaults. Every host runs one container on an overlay
//! network (so it holds a block and its DNS server answers on its gateway). Five rounds: `weft run
//! -d` of a new container on a host (a different one each round), then, from a thread in every
//! other host's network namespace, a DNS query for the name to that host's gateway every 10 ms
//! until answered, then an ICMP echo to the answered address out of the host's VXLAN device every
//! 10 ms until answered; each time is from `weft run` returning. Idle: each agent's RSS (VmRSS)
//! and CPU (utime + stime over 10 s) after the cluster has settled. Load: the same over 5 s while
//! the CLI starts 20 containers a second spread over the hosts. Baseline: the same figure at the
//! smallest N of the run, so the ratio says what grows with N.
//!
//! The hosts share one kernel, whose neighbour tables are global: the bed pins every host's
//! underlay neighbours ([`VirtualHosts::pin_underlay_neighbours`]), as separate machines would
//! each hold their own; without it, past ~30 hosts new underlay ARP entries fail with "neighbor
//! table overflow" and VXLAN between two workers that never spoke before is lost.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use weft_tests::VirtualHosts;
use weft_tests::cluster::WeftCluster;

use crate::names::weft;
use crate::raft::{build_binaries, percentile};
use crate::report::Figure;

const ROUNDS: usize = 5;
const POLL: Duration = Duration::from_millis(10);
const IDLE_WINDOW: Duration = Duration::from_secs(10);
const LOAD_WINDOW: Duration = Duration::from_secs(5);
const STARTS_PER_SECOND: u32 = 20;
/// How long a host may take to resolve and reach a new container before the run fails.
const DEADLINE: Duration = Duration::from_secs(10);
/// What every container of the suite runs, after `weft run -d --name NAME`.
const WORKLOAD: &[&str] = &["--network", "scale", "busybox", "sleep", "3600"];

/// `weft run -d --name NAME` of the suite's workload, as arguments.
fn run_args(name: &str) -> Vec<&str> {
    [&["run", "-d", "--name", name][..], WORKLOAD].concat()
}

/// A probe that gave up: on which host, the address it had resolved, what it saw.
struct Failed {
    host: usize,
    address: Option<IpAddr>,
    text: String,
}

/// What the kernel holds on host `from` and host `on` for the path of a failed probe, and
/// whether the echo answers a few seconds later: the bench's error says where the time went.
fn diagnose(bed: &VirtualHosts, vxlan: &str, failed: &Failed, on: usize) -> String {
    let run = |i: usize, program: &str, args: &[&str]| -> String {
        match bed.host(i).command(program).args(args).output() {
            Ok(o) => format!(
                "h{i}$ {program} {}\n{}{}",
                args.join(" "),
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            ),
            Err(e) => format!("h{i}$ {program}: {e}\n"),
        }
    };
    let mut out = format!("h{}: {}\n", failed.host, failed.text);
    let Some(ip) = failed.address.map(|a| a.to_string()) else { return out };
    for i in [failed.host, on] {
        out += &run(i, "ip", &["-4", "route", "get", &ip]);
        out += &run(i, "ip", &["-4", "neigh", "show", "dev", vxlan]);
        out += &run(i, "bridge", &["fdb", "show", "dev", vxlan]);
    }
    out += &run(on, "ip", &["-4", "neigh", "show", &ip]);
    std::thread::sleep(Duration::from_secs(3));
    out += &run(failed.host, "ping", &["-c", "3", "-W", "1", "-I", vxlan, &ip]);
    out
}

/// What one N measured.
struct Scale {
    hosts: usize,
    formed_s: f64,
    resolvable: Vec<f64>,
    pingable: Vec<f64>,
    /// Per round, the slowest host.
    everywhere: Vec<f64>,
    idle_rss_mb: Vec<f64>,
    idle_cpu: Vec<f64>,
    load_cpu: Vec<f64>,
    leader_idle_rss_mb: f64,
    leader_idle_cpu: f64,
    leader_load_cpu: f64,
    /// Of the starts under load, how many the CLI reported failed.
    load_failed: usize,
}

fn cpu_ticks(pid: u32) -> Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after = stat.rsplit_once(')').map(|(_, a)| a).context("stat format")?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 and 15 of stat(5), counted after the command's closing parenthesis (field 3 is 0 here).
    Ok(fields[11].parse::<u64>()? + fields[12].parse::<u64>()?)
}

fn rss_mb(pid: u32) -> Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .context("VmRSS")?;
    Ok(kb / 1024.0)
}

/// Each agent's CPU use in percent of one core over `window`, while `during` runs.
fn cpu_percent(pids: &[u32], window: Duration, during: impl FnOnce() -> Result<()>) -> Result<Vec<f64>> {
    let ticks = |pids: &[u32]| pids.iter().map(|p| cpu_ticks(*p)).collect::<Result<Vec<u64>>>();
    // SAFETY: sysconf only reads a constant of the system.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let before = ticks(pids)?;
    let started = Instant::now();
    during()?;
    if let Some(left) = window.checked_sub(started.elapsed()) {
        std::thread::sleep(left);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let after = ticks(pids)?;
    Ok(before.iter().zip(&after).map(|(b, a)| (a - b) as f64 / hz / elapsed * 100.0).collect())
}

/// Probes each name sent in `jobs` from host `host`'s namespace: (ms to a DNS answer, ms to an
/// echo reply).
fn probe_from(
    host: usize,
    ns: &weft_net::NetNs,
    gateway: IpAddr,
    vxlan: &str,
    jobs: mpsc::Receiver<(String, Instant)>,
    done: mpsc::Sender<Result<(f64, f64), Failed>>,
) {
    if let Err(e) = ns.enter() {
        let _ = done.send(Err(Failed { host, address: None, text: format!("enter namespace: {e}") }));
        return;
    }
    let socket = match UdpSocket::bind("0.0.0.0:0") {
        Ok(s) => s,
        Err(e) => {
            let _ = done.send(Err(Failed { host, address: None, text: format!("UDP socket: {e}") }));
            return;
        }
    };
    let _ = socket.set_read_timeout(Some(POLL));
    let server = SocketAddr::new(gateway, 53);
    for (name, ran) in jobs {
        let (deadline, limit) = (ran + DEADLINE, DEADLINE.as_secs());
        let since = || ran.elapsed().as_secs_f64() * 1000.0;
        let result = match crate::names::resolve(&socket, server, &name, deadline, Duration::ZERO) {
            Err(e) => Err(Failed { host, address: None, text: format!("{name} within {limit} s: {e}") }),
            Ok(IpAddr::V6(ip)) => {
                Err(Failed { host, address: None, text: format!("{name} resolved to IPv6 {ip}") })
            }
            Ok(IpAddr::V4(ip)) => {
                let dns_ms = since();
                loop {
                    if weft_net::probe::echo(vxlan, ip, 84, POLL).is_ok() {
                        break Ok((dns_ms, since()));
                    }
                    if Instant::now() > deadline {
                        let text =
                            format!("{name} resolved to {ip} from {gateway}, no echo reply within {limit} s");
                        break Err(Failed { host, address: Some(ip.into()), text });
                    }
                    std::thread::sleep(POLL);
                }
            }
        };
        if done.send(result).is_err() {
            return;
        }
    }
}

fn measure(hosts: usize) -> Result<Scale> {
    let bed = VirtualHosts::new(hosts);
    bed.pin_underlay_neighbours();
    let mut cluster = WeftCluster::new(&bed);
    cluster.flags.clear(); // production defaults
    // Workers join through the managers in turn, as an operator spreads them (each then keeps
    // its session with the manager it joined through); WEFT_SCALE_JOIN=first joins them all
    // through host 0, which then leads and hears every host itself.
    cluster.spread_workers = std::env::var("WEFT_SCALE_JOIN").map_or(true, |v| v != "first");
    let started = Instant::now();
    cluster.form(3, hosts - 3);
    let formed_s = started.elapsed().as_secs_f64();
    let all: Vec<usize> = (0..hosts).collect();
    cluster.import_busybox(&all);
    weft(&cluster, 0, &["network", "create", "--driver", "overlay", "--subnet", "10.60.0.0/16", "scale"])?;
    for i in 0..hosts {
        weft(&cluster, i, &run_args(&format!("base{i}")))?;
    }
    let net: serde_json::Value = serde_json::from_str(&weft(&cluster, 0, &["network", "inspect", "scale"])?)?;
    let vxlan = format!("wvx-{}", net[0]["vni"].as_u64().context("vni")?);
    let gateways: Vec<IpAddr> = (0..hosts)
        .map(|i| {
            let prefix = format!("h{i}=");
            net[0]["gateways"]
                .as_array()
                .and_then(|g| g.iter().filter_map(|v| v.as_str()).find_map(|v| v.strip_prefix(&prefix)))
                .context("a gateway per host")?
                .parse::<IpAddr>()
                .map_err(Into::into)
        })
        .collect::<Result<_>>()?;
    let (done_tx, done_rx) = mpsc::channel();
    let (mut resolvable, mut pingable, mut everywhere) = (Vec::new(), Vec::new(), Vec::new());
    std::thread::scope(|s| -> Result<()> {
        // The senders live in this closure: however it returns, they go, and the probe threads
        // end before the scope joins them.
        let mut jobs = Vec::new();
        for (i, gateway) in gateways.iter().enumerate() {
            let (tx, rx) = mpsc::channel();
            jobs.push(tx);
            let (ns, vxlan, done) = (bed.host(i).netns().clone(), vxlan.clone(), done_tx.clone());
            let gateway = *gateway;
            s.spawn(move || probe_from(i, &ns, gateway, &vxlan, rx, done));
        }
        for k in 0..ROUNDS {
            let on = 1 + k % (hosts - 1);
            let name = format!("new{k}");
            weft(&cluster, on, &run_args(&name))?;
            let ran = Instant::now();
            for (i, job) in jobs.iter().enumerate() {
                if i != on {
                    job.send((name.clone(), ran))?;
                }
            }
            let mut slowest: f64 = 0.0;
            for _ in 0..hosts - 1 {
                let (dns, ping) = match done_rx.recv()? {
                    Ok(times) => times,
                    Err(failed) => bail!("{}", diagnose(&bed, &vxlan, &failed, on)),
                };
                resolvable.push(dns);
                pingable.push(ping);
                slowest = slowest.max(ping); // the echo comes after the answer
            }
            everywhere.push(slowest);
        }
        Ok(())
    })?;
    let pids: Vec<u32> = (0..hosts).map(|i| cluster.pid(i).context("weftd pid")).collect::<Result<_>>()?;
    let leader = cluster.leader(0).context("a leader")?;
    std::thread::sleep(Duration::from_secs(2));
    let idle_cpu = cpu_percent(&pids, IDLE_WINDOW, || Ok(()))?;
    let idle_rss_mb: Vec<f64> = pids.iter().map(|p| rss_mb(*p)).collect::<Result<_>>()?;
    let mut load_failed = 0;
    let load_cpu = cpu_percent(&pids, LOAD_WINDOW, || {
        let mut children: Vec<Child> = Vec::new();
        let every = Duration::from_secs(1) / STARTS_PER_SECOND;
        let count = STARTS_PER_SECOND as usize * LOAD_WINDOW.as_secs() as usize;
        let begin = Instant::now();
        for n in 0..count {
            if let Some(wait) = (begin + every * n as u32).checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            let host = n % hosts;
            children.push(
                cluster
                    .weft_command(host)
                    .args(run_args(&format!("load{n}")))
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped())
                    .spawn()?,
            );
        }
        // A failed start is a figure, not the end of the run; why it failed goes to stderr.
        let mut why: BTreeMap<String, usize> = BTreeMap::new();
        for child in children {
            let out = child.wait_with_output()?;
            if !out.status.success() {
                let text = String::from_utf8_lossy(&out.stderr);
                *why.entry(text.lines().next().unwrap_or("no message").to_string()).or_default() += 1;
            }
        }
        for (text, n) in &why {
            eprintln!("scale.{hosts}: {n} start(s) under load failed: {text}");
        }
        load_failed = why.values().sum::<usize>();
        Ok(())
    })?;
    resolvable.sort_by(f64::total_cmp);
    pingable.sort_by(f64::total_cmp);
    everywhere.sort_by(f64::total_cmp);
    let workers = |v: &[f64]| -> Vec<f64> {
        let mut w: Vec<f64> = v.iter().enumerate().filter(|(i, _)| *i != leader).map(|(_, x)| *x).collect();
        w.sort_by(f64::total_cmp);
        w
    };
    Ok(Scale {
        hosts,
        formed_s,
        resolvable,
        pingable,
        everywhere,
        leader_idle_rss_mb: idle_rss_mb[leader],
        leader_idle_cpu: idle_cpu[leader],
        leader_load_cpu: load_cpu[leader],
        load_failed,
        idle_rss_mb: workers(&idle_rss_mb),
        idle_cpu: workers(&idle_cpu),
        load_cpu: workers(&load_cpu),
    })
}

/// The figures of one N, each against the same figure at `base` (the run's smallest N).
fn figures(s: &Scale, base: &Scale) -> Vec<Figure> {
    let max = |v: &[f64]| v.last().copied().unwrap_or(0.0);
    let baseline = format!("the same at {} hosts, same run", base.hosts);
    let rows: Vec<(&str, f64, f64, &'static str)> = vec![
        ("formed", s.formed_s, base.formed_s, "s"),
        ("resolvable.p50", percentile(&s.resolvable, 0.5), percentile(&base.resolvable, 0.5), "ms"),
        ("resolvable.p99", percentile(&s.resolvable, 0.99), percentile(&base.resolvable, 0.99), "ms"),
        ("pingable.p50", percentile(&s.pingable, 0.5), percentile(&base.pingable, 0.5), "ms"),
        ("pingable.p99", percentile(&s.pingable, 0.99), percentile(&base.pingable, 0.99), "ms"),
        ("everywhere.max", max(&s.everywhere), max(&base.everywhere), "ms"),
        ("agent_rss_idle.p50", percentile(&s.idle_rss_mb, 0.5), percentile(&base.idle_rss_mb, 0.5), "MB"),
        ("agent_rss_idle.max", max(&s.idle_rss_mb), max(&base.idle_rss_mb), "MB"),
        ("agent_cpu_idle.p50", percentile(&s.idle_cpu, 0.5), percentile(&base.idle_cpu, 0.5), "%"),
        ("agent_cpu_idle.max", max(&s.idle_cpu), max(&base.idle_cpu), "%"),
        ("agent_cpu_load.p50", percentile(&s.load_cpu, 0.5), percentile(&base.load_cpu, 0.5), "%"),
        ("leader_rss_idle", s.leader_idle_rss_mb, base.leader_idle_rss_mb, "MB"),
        ("leader_cpu_idle", s.leader_idle_cpu, base.leader_idle_cpu, "%"),
        ("leader_cpu_load", s.leader_load_cpu, base.leader_load_cpu, "%"),
        ("load_starts_failed", s.load_failed as f64, base.load_failed as f64, "starts"),
    ];
    rows.into_iter()
        .map(|(name, value, base_value, unit)| {
            Figure::new(format!("scale.{}.{name}", s.hosts), value, unit, baseline.clone(), base_value)
        })
        .collect()
}

/// The host counts to measure: `WEFT_SCALE_HOSTS` (comma separated) or 10, 50, 100, 200.
fn host_counts() -> Result<Vec<usize>> {
    match std::env::var("WEFT_SCALE_HOSTS") {
        Ok(list) => list
            .split(',')
            .map(|n| match n.trim().parse::<usize>() {
                Ok(n) if (4..=250).contains(&n) => Ok(n),
                _ => bail!("WEFT_SCALE_HOSTS: {n:?} is not a host count from 4 to 250"),
            })
            .collect(),
        Err(_) => Ok(vec![10, 50, 100, 200]),
    }
}

/// Runs the suite; the figures of each N are printed as soon as it is measured.
pub fn run() -> Result<Vec<Figure>> {
    build_binaries()?;
    let counts = host_counts()?;
    let mut base: Option<Scale> = None;
    for n in counts {
        let s = measure(n).with_context(|| format!("{n} hosts"))?;
        for f in figures(&s, base.as_ref().unwrap_or(&s)) {
            f.print();
        }
        base.get_or_insert(s);
    }
    Ok(Vec::new())
}
