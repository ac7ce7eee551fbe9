//! Suite `names`: how fast a container started on one host becomes resolvable by name on
//! another, against how fast a put to one etcd member reaches a watcher on another member, on
//! the same virtual hosts, in one run.
//!
//! Method: a 3-host test bed. weft: release `weftd` on each host (bootstrap + 2 manager joins,
//! production defaults), an overlay network, a probe container on host 0. Twenty times: `weft run
//! -d` of a new container on host 2 (through the CLI, as a user would), then, from inside the
//! probe's network namespace, DNS queries for the new name to host 0's gateway every 0.5 ms until
//! one is answered; the figure is the time from `weft run` returning (the container runs, its
//! endpoint is committed) to that answer. etcd 3.4: 3 members in the same namespaces, a watch on
//! member 0, twenty puts through member 2; the time from a put returning to its event arriving at
//! the watcher. Both are "committed on one host, usable on another". Target: p99 under 1 s; the
//! ratio (> 1 means weft is faster) compares with etcd's watch.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use weft_tests::VirtualHosts;
use weft_tests::cluster::WeftCluster;

use crate::raft::{Procs, build_binaries, etcd_member, etcd_start, percentile};
use crate::report::Figure;

const ROUNDS: usize = 20;

pub(crate) fn weft(cluster: &WeftCluster<'_>, i: usize, args: &[&str]) -> Result<String> {
    let out = cluster.weft_command(i).args(args).output()?;
    if !out.status.success() {
        bail!("weft {args:?} on h{i}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Polls `server` for `name` from the calling thread's namespace, `pause` between queries (after
/// the socket's read timeout), until it answers with an address, which it returns.
pub(crate) fn resolve(
    socket: &UdpSocket,
    server: SocketAddr,
    name: &str,
    deadline: Instant,
    pause: Duration,
) -> Result<IpAddr> {
    let query = weft_dns::codec::query_packet(7, name, weft_dns::codec::TYPE_A);
    let mut buf = [0u8; 512];
    loop {
        socket.send_to(&query, server)?;
        if let Ok((n, _)) = socket.recv_from(&mut buf)
            && let Ok((0, ips)) = weft_dns::codec::parse_answers(&buf[..n])
            && let Some(ip) = ips.first()
        {
            return Ok(*ip);
        }
        if Instant::now() > deadline {
            bail!("no answer from {server} by the deadline");
        }
        std::thread::sleep(pause);
    }
}

fn weft_side(cluster: &WeftCluster<'_>) -> Result<Vec<f64>> {
    cluster.import_busybox(&[0, 2]);
    weft(cluster, 0, &["network", "create", "--driver", "overlay", "--subnet", "10.44.0.0/16", "names"])?;
    weft(cluster, 0, &["run", "-d", "--name", "probe", "--network", "names", "busybox", "sleep", "3600"])?;
    let probe: serde_json::Value = serde_json::from_str(&weft(cluster, 0, &["inspect", "probe"])?)?;
    let id = probe[0]["id"].as_str().context("probe id")?.to_string();
    let gateway: IpAddr = probe[0]["networks"][0]["gateway"].as_str().context("probe gateway")?.parse()?;
    let netns = cluster.state_dir(0).join("netns").join(&id[..12]);
    let ns = weft_net::NetNs::open(&netns)?;
    std::thread::scope(|s| {
        s.spawn(|| -> Result<Vec<f64>> {
            ns.enter()?;
            let socket = UdpSocket::bind("0.0.0.0:0")?;
            socket.set_read_timeout(Some(Duration::from_millis(2)))?;
            let server = SocketAddr::new(gateway, 53);
            let mut times = Vec::new();
            for k in 0..ROUNDS {
                let name = format!("n{k}");
                weft(
                    cluster,
                    2,
                    &["run", "-d", "--name", &name, "--network", "names", "busybox", "sleep", "600"],
                )?;
                let ran = Instant::now();
                resolve(&socket, server, &name, ran + Duration::from_secs(10), Duration::from_micros(500))
                    .with_context(|| format!("{name} did not resolve within 10 s"))?;
                times.push(ran.elapsed().as_secs_f64() * 1000.0);
            }
            Ok(times)
        })
        .join()
        .map_err(|_| anyhow!("probe thread panicked"))?
    })
}

async fn etcd_side(bed: &VirtualHosts) -> Result<Vec<f64>> {
    let endpoint = |i: usize| format!("http://{}:2379", bed.host(i).addr);
    let mut watcher = etcd_member(endpoint(0)).await?;
    let mut writer = etcd_member(endpoint(2)).await?;
    let mut events = watcher.watch("names/", Some(etcd_client::WatchOptions::new().with_prefix())).await?;
    let mut times = Vec::new();
    for k in 0..ROUNDS {
        let key = format!("names/n{k}");
        writer.put(key.clone(), "10.44.0.2", None).await?;
        let put = Instant::now();
        loop {
            let response = tokio::time::timeout(Duration::from_secs(10), events.message())
                .await
                .map_err(|_| anyhow!("no watch event for {key} within 10 s"))??
                .ok_or_else(|| anyhow!("watch ended"))?;
            if response.events().iter().any(|e| e.kv().is_some_and(|kv| kv.key() == key.as_bytes())) {
                break;
            }
        }
        times.push(put.elapsed().as_secs_f64() * 1000.0);
    }
    Ok(times)
}

fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v
}

/// Runs the suite.
pub fn run() -> Result<Vec<Figure>> {
    build_binaries()?;
    let bed = VirtualHosts::new(3);
    let w = {
        let mut cluster = WeftCluster::new(&bed);
        cluster.flags.clear(); // production defaults
        cluster.form(3, 0);
        sorted(weft_side(&cluster)?)
    };
    let dir = std::env::temp_dir().join(format!("{}-etcd", bed.prefix()));
    std::fs::create_dir_all(&dir)?;
    let procs = Procs((0..3).map(|i| etcd_start(&bed, &dir, i).map(Some)).collect::<Result<_>>()?);
    let netns = bed.host(1).netns().clone();
    let e = std::thread::scope(|s| {
        s.spawn(|| -> Result<Vec<f64>> {
            netns.enter()?;
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            rt.block_on(etcd_side(&bed))
        })
        .join()
        .map_err(|_| anyhow!("etcd client thread panicked"))?
    });
    drop(procs);
    let _ = std::fs::remove_dir_all(&dir);
    let e = sorted(e.context(format!("etcd logs in {}", Path::new(&dir).display()))?);
    let baseline = "etcd 3.4 put on member 2 to watch event on member 0";
    Ok(vec![
        Figure::new("names.resolvable.p50", percentile(&w, 0.5), "ms", baseline, percentile(&e, 0.5))
            .inverted(),
        Figure::new("names.resolvable.p99", percentile(&w, 0.99), "ms", baseline, percentile(&e, 0.99))
            .inverted(),
        Figure::new("names.resolvable.max", w[w.len() - 1], "ms", baseline, e[e.len() - 1]).inverted(),
    ])
}
