//! Suite `raft`: committed allocations through weft's control plane against puts of the same size
//! into a 3-member etcd cluster, on the same virtual hosts, in one run.
//!
//! Method: a 3-host test bed (network namespaces on one switch). weft: one release `weftd` per
//! host (bootstrap + 2 manager joins), clients call `Apply(AllocateEndpoint)` on the managers'
//! local sockets, spread round-robin over the three managers (followers forward through raft).
//! etcd: Debian's etcd 3.4 started in the same three namespaces (default fsync of its WAL, as
//! weft fsyncs every raft-engine write), clients are etcd-client `put`s of a key and a value as
//! long as weft's encoded command, spread over the three members, from a thread inside host 0's
//! namespace. Each side: 30 untimed warm-up writes (on weft they lease each host its block), then
//! 1 client doing 300 sequential writes, then 64 concurrent clients doing
//! 4000 writes in all; throughput = writes / wall time, latency percentiles per call. Failover:
//! SIGKILL of the leader process, then writes through another member until the first is
//! accepted; median of 3 kills. Three rounds of both sides (a fresh cluster each), every figure the
//! median over the rounds. Ratios are oriented so that > 1 means weft is better.

use std::future::Future;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use prost::Message as _;
use weft_proto::v1 as pb;
use weft_tests::VirtualHosts;
use weft_tests::cluster::WeftCluster;

use crate::report::Figure;

/// Untimed writes before the measured ones, the same on both sides: on weft the first allocation
/// for each host leases that host a block, and every host's reconciler then creates the network's
/// devices and firewall rules (one-off work per host and network, not the write path measured here).
const WARMUP: Range<usize> = 900_000..900_030;
const SEQUENTIAL: Range<usize> = 0..300;
const CONCURRENT: Range<usize> = 300..4300;
const CONCURRENT_CLIENTS: usize = 64;
/// Rounds of both sides; every figure is the median over the rounds (a single round swings by
/// tens of percent on a shared 2-core machine, for etcd as for weft).
const ROUNDS: usize = 3;

/// Builds the release `weftd` and `weft` the suite runs (next to this binary).
pub(crate) fn build_binaries() -> Result<()> {
    let status = Command::new(env!("CARGO"))
        .args(["build", "--release", "-p", "weft-agent", "-p", "weft-cli", "--bins"])
        .status()
        .context("cargo build weftd and weft")?;
    if !status.success() {
        bail!("building weftd and weft failed");
    }
    Ok(())
}

/// Child processes killed when dropped.
pub(crate) struct Procs(pub(crate) Vec<Option<Child>>);

impl Drop for Procs {
    fn drop(&mut self) {
        for child in self.0.iter_mut().flatten() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The `p` quantile of sorted values.
pub(crate) fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Rate, p50 and p99 of one load.
struct Load {
    rate: f64,
    p50: f64,
    p99: f64,
}

/// Runs `call(i)` for every `i` of `indexes`, split over `clients` concurrent tasks, timing each.
async fn timed<F, Fut>(clients: usize, indexes: Range<usize>, call: F) -> Result<Load>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    let call = Arc::new(call);
    let start = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|k| {
            let call = call.clone();
            let mine: Vec<usize> = indexes.clone().skip(k).step_by(clients).collect();
            tokio::spawn(async move {
                let mut lat = Vec::with_capacity(mine.len());
                for i in mine {
                    let t = Instant::now();
                    call(i).await?;
                    lat.push(t.elapsed().as_secs_f64() * 1000.0);
                }
                Ok::<_, String>(lat)
            })
        })
        .collect();
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await?.map_err(|e| anyhow!("write failed: {e}"))?);
    }
    let wall = start.elapsed();
    lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
    Ok(Load {
        rate: lat.len() as f64 / wall.as_secs_f64(),
        p50: percentile(&lat, 0.5),
        p99: percentile(&lat, 0.99),
    })
}

/// Results of one side.
struct Side {
    one: Load,
    many: Load,
    failover_ms: f64,
}

fn median(mut times: Vec<f64>) -> f64 {
    times.sort_by(|a, b| a.partial_cmp(b).unwrap());
    times[times.len() / 2]
}

async fn weft_client(socket: &Path) -> Result<pb::cluster_client::ClusterClient<tonic::transport::Channel>> {
    Ok(weft_cli::client::connect(&weft_cli::client::Host::Unix(socket.to_path_buf()), &Default::default())
        .await?)
}

fn alloc(node_id: u64, i: usize) -> pb::ApplyRequest {
    pb::ApplyRequest {
        command: Some(weft_state::cmd::allocate_endpoint("bench", node_id, &format!("c{i:07}"), "", "")),
    }
}

async fn weft_side(cluster: &WeftCluster<'_>) -> Result<Side> {
    let sockets: Vec<PathBuf> = (0..3).map(|i| cluster.socket(i)).collect();
    let mut c0 = weft_client(&sockets[0]).await?;
    let create = weft_state::cmd::create_network("bench", weft_state::Driver::Overlay, &["10.0.0.0/8"], 0, 0);
    c0.apply(pb::ApplyRequest { command: Some(create) }).await?;
    let state =
        c0.get_state(pb::StateRequest { linearizable: true }).await?.into_inner().state.unwrap_or_default();
    let nodes: Arc<Vec<u64>> = Arc::new(state.nodes.iter().map(|n| n.id).collect());
    let mut clients = Vec::new();
    for s in &sockets {
        clients.push(weft_client(s).await?);
    }
    let clients = Arc::new(clients);
    type Client = pb::cluster_client::ClusterClient<tonic::transport::Channel>;
    let load = |clients: Arc<Vec<Client>>, nodes: Arc<Vec<u64>>| {
        move |i: usize| {
            let mut client = clients[i % 3].clone();
            let request = alloc(nodes[i % nodes.len()], i);
            async move { client.apply(request).await.map(|_| ()).map_err(|s| s.message().to_string()) }
        }
    };
    timed(1, WARMUP, load(clients.clone(), nodes.clone())).await?;
    let one = timed(1, SEQUENTIAL, load(clients.clone(), nodes.clone())).await?;
    let many = timed(CONCURRENT_CLIENTS, CONCURRENT, load(clients.clone(), nodes.clone())).await?;
    // Failover: kill the leader, write through another manager until one write is accepted.
    let mut times = Vec::new();
    for round in 0..3 {
        let leader = cluster.leader(0).or_else(|| cluster.leader(1)).context("no leader to kill")?;
        let via = (leader + 1) % 3;
        cluster.kill(leader);
        let killed = Instant::now();
        let mut i = 0;
        loop {
            i += 1;
            let request = alloc(nodes[via % nodes.len()], 100_000 * (round + 1) + i);
            match cluster.apply(via, request).await {
                Ok(_) => break,
                Err(e) if killed.elapsed() > Duration::from_secs(30) => {
                    eprintln!(
                        "weft accepted no write through h{via} 30 s after leader h{leader} died (round {round}): {e}"
                    );
                    return Ok(Side { one, many, failover_ms: f64::NAN });
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        }
        times.push(killed.elapsed().as_secs_f64() * 1000.0);
        cluster.restart(leader);
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    Ok(Side { one, many, failover_ms: median(times) })
}

/// Starts etcd member `i` of a 3-member cluster inside host `i`'s namespace.
pub(crate) fn etcd_start(bed: &VirtualHosts, dir: &Path, i: usize) -> Result<Child> {
    let host = bed.host(i);
    let cluster: Vec<String> = (0..3).map(|j| format!("e{j}=http://{}:2380", bed.host(j).addr)).collect();
    let data = dir.join(format!("e{i}"));
    let state = if data.exists() { "existing" } else { "new" };
    let log = std::fs::File::create(dir.join(format!("e{i}.log")))?;
    host.command("etcd")
        .arg("--name")
        .arg(format!("e{i}"))
        .arg("--data-dir")
        .arg(&data)
        .arg("--listen-client-urls")
        .arg(format!("http://{}:2379", host.addr))
        .arg("--advertise-client-urls")
        .arg(format!("http://{}:2379", host.addr))
        .arg("--listen-peer-urls")
        .arg(format!("http://{}:2380", host.addr))
        .arg("--initial-advertise-peer-urls")
        .arg(format!("http://{}:2380", host.addr))
        .arg("--initial-cluster")
        .arg(cluster.join(","))
        .arg("--initial-cluster-state")
        .arg(state)
        .env("ETCD_UNSUPPORTED_ARCH", "")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .context("start etcd (apt-get install etcd-server)")
}

/// A client of one etcd member, once that member accepts writes (at most 30 s).
pub(crate) async fn etcd_member(endpoint: String) -> Result<etcd_client::Client> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let options = etcd_client::ConnectOptions::new().with_connect_timeout(Duration::from_secs(2));
        if let Ok(mut c) = etcd_client::Client::connect([endpoint.clone()], Some(options)).await
            && c.put("warmup", "x", None).await.is_ok()
        {
            return Ok(c);
        }
        if Instant::now() > deadline {
            bail!("etcd member {endpoint} did not come up");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn etcd_side(bed: &VirtualHosts, dir: &Path, procs: &mut Procs, value_len: usize) -> Result<Side> {
    let endpoints: Vec<String> = (0..3).map(|i| format!("http://{}:2379", bed.host(i).addr)).collect();
    let mut clients = Vec::new();
    for e in &endpoints {
        clients.push(etcd_member(e.clone()).await.with_context(|| format!("see {}/e*.log", dir.display()))?);
    }
    let value = Arc::new(vec![b'v'; value_len]);
    let load = |clients: Arc<Vec<etcd_client::Client>>, value: Arc<Vec<u8>>| {
        move |i: usize| {
            let mut client = clients[i % 3].clone();
            let value = (*value).clone();
            async move {
                client.put(format!("ep/c{i:07}"), value, None).await.map(|_| ()).map_err(|e| e.to_string())
            }
        }
    };
    let shared = Arc::new(clients.clone());
    timed(1, WARMUP, load(shared.clone(), value.clone())).await?;
    let one = timed(1, SEQUENTIAL, load(shared.clone(), value.clone())).await?;
    let many = timed(CONCURRENT_CLIENTS, CONCURRENT, load(shared, value.clone())).await?;
    let mut times = Vec::new();
    for round in 0..3 {
        let leader_id = clients[0].status().await?.leader();
        let members = clients[0].member_list().await?;
        let leader_name = members
            .members()
            .iter()
            .find(|m| m.id() == leader_id)
            .map(|m| m.name().to_string())
            .unwrap_or_default();
        let leader: usize = leader_name.trim_start_matches('e').parse().unwrap_or(0);
        let via = (leader + 1) % 3;
        if let Some(mut child) = procs.0[leader].take() {
            child.kill()?;
            child.wait()?;
        }
        let killed = Instant::now();
        let mut i = 0;
        loop {
            i += 1;
            let put = tokio::time::timeout(
                Duration::from_millis(500),
                clients[via].put(format!("fo/{round}/{i}"), (*value).clone(), None),
            )
            .await;
            if matches!(put, Ok(Ok(_))) {
                break;
            }
            if killed.elapsed() > Duration::from_secs(30) {
                bail!("etcd accepted no write 30 s after the leader died");
            }
        }
        times.push(killed.elapsed().as_secs_f64() * 1000.0);
        procs.0[leader] = Some(etcd_start(bed, dir, leader)?);
        clients[leader] = etcd_member(endpoints[leader].clone()).await?;
    }
    Ok(Side { one, many, failover_ms: median(times) })
}

/// Runs the suite.
pub fn run() -> Result<Vec<Figure>> {
    build_binaries()?;
    let bed = VirtualHosts::new(3);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let mut weft = Vec::new();
    let mut etcd = Vec::new();
    for round in 0..ROUNDS {
        let (w, e) = one_round(&bed, &rt, round)?;
        weft.push(w);
        etcd.push(e);
    }
    let (one, many) = ("etcd 3.4 put, 1 client", "etcd 3.4 put, 64 clients");
    let m = |sides: &[Side], f: fn(&Side) -> f64| median(sides.iter().map(f).collect());
    let figure = |name: &str, unit: &'static str, baseline: &str, f: fn(&Side) -> f64| {
        Figure::new(name, m(&weft, f), unit, baseline, m(&etcd, f))
    };
    Ok(vec![
        figure("raft.alloc.1client.rate", "writes/s", one, |s| s.one.rate),
        figure("raft.alloc.1client.p50", "ms", one, |s| s.one.p50).inverted(),
        figure("raft.alloc.1client.p99", "ms", one, |s| s.one.p99).inverted(),
        figure("raft.alloc.64clients.rate", "writes/s", many, |s| s.many.rate),
        figure("raft.alloc.64clients.p50", "ms", many, |s| s.many.p50).inverted(),
        figure("raft.alloc.64clients.p99", "ms", many, |s| s.many.p99).inverted(),
        figure("raft.failover", "ms", "etcd 3.4 leader kill to first put", |s| s.failover_ms).inverted(),
    ])
}

/// One round: a fresh weft cluster measured, torn down, then a fresh etcd cluster measured.
fn one_round(bed: &VirtualHosts, rt: &tokio::runtime::Runtime, round: usize) -> Result<(Side, Side)> {
    let w = {
        let mut cluster = WeftCluster::new(bed);
        cluster.flags.clear(); // production defaults
        cluster.form(3, 0);
        rt.block_on(weft_side(&cluster))?
    };
    let value_len = alloc(1, 1).command.map(|c| c.encoded_len()).unwrap_or(32);
    // etcd's data dirs; made only now, so a failed weft side leaves nothing behind.
    let dir = std::env::temp_dir().join(format!("{}-etcd{round}", bed.prefix()));
    std::fs::create_dir_all(&dir)?;
    let mut procs = Procs((0..3).map(|i| etcd_start(bed, &dir, i).map(Some)).collect::<Result<_>>()?);
    // etcd's clients must dial from inside a host namespace.
    let netns = bed.host(0).netns().clone();
    let e = std::thread::scope(|s| {
        s.spawn(|| -> Result<Side> {
            netns.enter()?;
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            rt.block_on(etcd_side(bed, &dir, &mut procs, value_len))
        })
        .join()
        .map_err(|_| anyhow!("etcd client thread panicked"))?
    });
    drop(procs);
    let _ = std::fs::remove_dir_all(&dir);
    Ok((w, e?))
}
