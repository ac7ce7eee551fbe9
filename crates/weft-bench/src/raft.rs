//! Suite `raft`: committed allocations through weft's control plane against puts of the same size
//! into a 3-member etcd cluster, on the same virtual hosts, in one run.
//!
//! Method: a 3-host test bed (network namespaces on one switch). weft: one release `weftd` per
//! host (bootstrap + 2 manager joins), clients call `Apply(AllocateEndpoint)` on the managers'
//! local sockets, spread round-robin over the three managers (followers forward through raft).
//! etcd: Debian's etcd 3.4 started in the same three namespaces (default fsync of its WAL, as
//! weft fsyncs every raft-engine write), clients are etcd-client `put`s of a key and a value as
//! long as weft's encoded command, spread over the three members, from a thread inside host 0's
//! namespace. Each side: 1 client doing 300 sequential writes, then 64 concurrent clients doing
//! 4000 writes in all; throughput = writes / wall time, latency percentiles per call. Failover:
//! SIGKILL of the leader process, then writes through another member until the first is
//! accepted; median of 3 kills. Ratios are oriented so that > 1 means weft is better.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use prost::Message as _;
use weft_proto::v1 as pb;
use weft_tests::VirtualHosts;

use crate::report::Figure;

const SEQUENTIAL: usize = 300;
const CONCURRENT_CLIENTS: usize = 64;
const CONCURRENT_TOTAL: usize = 4000;

fn weftd() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let path = exe.parent().context("exe dir")?.join("weftd");
    if !path.exists() {
        let status = Command::new(env!("CARGO"))
            .args(["build", "--release", "-p", "weft-agent", "--bin", "weftd"])
            .status()
            .context("cargo build weftd")?;
        if !status.success() {
            bail!("building weftd failed");
        }
    }
    Ok(path)
}

struct Procs(Vec<Option<Child>>);

impl Drop for Procs {
    fn drop(&mut self) {
        for child in self.0.iter_mut().flatten() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Results of one side.
struct Side {
    seq_rate: f64,
    seq_p50: f64,
    seq_p99: f64,
    conc_rate: f64,
    conc_p50: f64,
    conc_p99: f64,
    failover_ms: f64,
}

fn summarise(mut lat: Vec<f64>, wall: Duration) -> (f64, f64, f64) {
    lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (lat.len() as f64 / wall.as_secs_f64(), percentile(&lat, 0.5), percentile(&lat, 0.99))
}

struct Weft<'a> {
    bed: &'a VirtualHosts,
    dir: PathBuf,
    procs: Procs,
    bin: PathBuf,
}

impl Weft<'_> {
    fn socket(&self, i: usize) -> PathBuf {
        self.dir.join(format!("h{i}/weft.sock"))
    }

    fn start(&mut self, i: usize, extra: &[&str]) -> Result<()> {
        let host = self.bed.host(i);
        let _ = std::fs::remove_file(self.socket(i));
        let log =
            std::fs::OpenOptions::new().create(true).append(true).open(self.dir.join(format!("h{i}.log")))?;
        let child = host
            .command(self.bin.to_str().unwrap())
            .arg("--state-dir")
            .arg(self.dir.join(format!("h{i}")))
            .arg("--socket")
            .arg(self.socket(i))
            .arg("--listen")
            .arg(format!("{}:7946", host.addr))
            .arg("--name")
            .arg(format!("h{i}"))
            .args(extra)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
        self.procs.0[i] = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.socket(i).exists() {
            if Instant::now() > deadline {
                bail!("weftd h{i} did not start");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }
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

async fn weft_side(weft: &mut Weft<'_>) -> Result<Side> {
    let sockets: Vec<PathBuf> = (0..3).map(|i| weft.socket(i)).collect();
    let mut c0 = weft_client(&sockets[0]).await?;
    let create = weft_state::cmd::create_network("bench", weft_state::Driver::Overlay, &["10.0.0.0/8"], 0, 0);
    c0.apply(pb::ApplyRequest { command: Some(create) }).await?;
    let state =
        c0.get_state(pb::StateRequest { linearizable: true }).await?.into_inner().state.unwrap_or_default();
    let nodes: Vec<u64> = state.nodes.iter().map(|n| n.id).collect();
    let mut clients = Vec::new();
    for s in &sockets {
        clients.push(weft_client(s).await?);
    }
    // 1 client.
    let mut lat = Vec::new();
    let start = Instant::now();
    for i in 0..SEQUENTIAL {
        let t = Instant::now();
        clients[i % 3].apply(alloc(nodes[i % nodes.len()], i)).await?;
        lat.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let (seq_rate, seq_p50, seq_p99) = summarise(lat, start.elapsed());
    // 64 clients.
    let start = Instant::now();
    let mut tasks = Vec::new();
    for k in 0..CONCURRENT_CLIENTS {
        let mut client = clients[k % 3].clone();
        let nodes = nodes.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            for i in (k..CONCURRENT_TOTAL).step_by(CONCURRENT_CLIENTS) {
                let t = Instant::now();
                client.apply(alloc(nodes[i % nodes.len()], SEQUENTIAL + i)).await?;
                lat.push(t.elapsed().as_secs_f64() * 1000.0);
            }
            Ok::<_, tonic::Status>(lat)
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await??);
    }
    let (conc_rate, conc_p50, conc_p99) = summarise(lat, start.elapsed());
    // Failover.
    let mut times = Vec::new();
    for round in 0..3 {
        let info = clients[0].info(pb::InfoRequest {}).await?.into_inner();
        let leader_name = state.nodes.iter().find(|n| n.id == info.leader_id).map(|n| n.name.clone());
        let leader: usize = leader_name.and_then(|n| n.trim_start_matches('h').parse().ok()).unwrap_or(0);
        let via = (leader + 1) % 3;
        if let Some(mut child) = weft.procs.0[leader].take() {
            child.kill()?;
            child.wait()?;
        }
        let killed = Instant::now();
        let mut i = 0;
        loop {
            i += 1;
            let r = match weft_client(&sockets[via]).await {
                Ok(mut c) => c
                    .apply(alloc(nodes[via % nodes.len()], 100_000 * (round + 1) + i))
                    .await
                    .map_err(|s| s.message().to_string()),
                Err(e) => Err(e.to_string()),
            };
            match r {
                Ok(_) => break,
                Err(e) if killed.elapsed() > Duration::from_secs(30) => {
                    eprintln!(
                        "weft accepted no write through h{via} 30 s after leader h{leader} died (round {round}): {e}"
                    );
                    return Ok(Side {
                        seq_rate,
                        seq_p50,
                        seq_p99,
                        conc_rate,
                        conc_p50,
                        conc_p99,
                        failover_ms: f64::NAN,
                    });
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        }
        times.push(killed.elapsed().as_secs_f64() * 1000.0);
        weft.start(leader, &[])?;
        clients[leader] = weft_client(&sockets[leader]).await?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        if leader == 0 {
            clients[0] = weft_client(&sockets[0]).await?;
        }
    }
    times.sort_by(|a, b| a.partial_cmp(b).unwrap());
    Ok(Side { seq_rate, seq_p50, seq_p99, conc_rate, conc_p50, conc_p99, failover_ms: times[1] })
}

fn etcd_start(bed: &VirtualHosts, dir: &Path, i: usize) -> Result<Child> {
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

async fn etcd_side(bed: &VirtualHosts, dir: &Path, procs: &mut Procs, value_len: usize) -> Result<Side> {
    let endpoints: Vec<String> = (0..3).map(|i| format!("http://{}:2379", bed.host(i).addr)).collect();
    let connect = |eps: Vec<String>| async move {
        let options = etcd_client::ConnectOptions::new().with_connect_timeout(Duration::from_secs(2));
        etcd_client::Client::connect(eps, Some(options)).await
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut clients = loop {
        let mut ok = Vec::new();
        for e in &endpoints {
            if let Ok(mut c) = connect(vec![e.clone()]).await
                && c.put("warmup", "x", None).await.is_ok()
            {
                ok.push(c);
            }
        }
        if ok.len() == 3 {
            break ok;
        }
        if Instant::now() > deadline {
            bail!("etcd cluster did not come up (see {}/e*.log)", dir.display());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let value = vec![b'v'; value_len];
    let mut lat = Vec::new();
    let start = Instant::now();
    for i in 0..SEQUENTIAL {
        let t = Instant::now();
        clients[i % 3].put(format!("ep/c{i:07}"), value.clone(), None).await?;
        lat.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let (seq_rate, seq_p50, seq_p99) = summarise(lat, start.elapsed());
    let start = Instant::now();
    let mut tasks = Vec::new();
    let value = Arc::new(value);
    for k in 0..CONCURRENT_CLIENTS {
        let mut client = clients[k % 3].clone();
        let value = value.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            for i in (k..CONCURRENT_TOTAL).step_by(CONCURRENT_CLIENTS) {
                let t = Instant::now();
                client.put(format!("ep/c{:07}", SEQUENTIAL + i), (*value).clone(), None).await?;
                lat.push(t.elapsed().as_secs_f64() * 1000.0);
            }
            Ok::<_, etcd_client::Error>(lat)
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await??);
    }
    let (conc_rate, conc_p50, conc_p99) = summarise(lat, start.elapsed());
    let mut times = Vec::new();
    for round in 0..3 {
        let status = clients[0].status().await?;
        let leader_id = status.leader();
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
        tokio::time::sleep(Duration::from_secs(2)).await;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(mut c) = connect(vec![endpoints[leader].clone()]).await
                && c.put("warmup", "x", None).await.is_ok()
            {
                clients[leader] = c;
                break;
            }
            if Instant::now() > deadline {
                bail!("restarted etcd member e{leader} did not come back");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    times.sort_by(|a, b| a.partial_cmp(b).unwrap());
    Ok(Side { seq_rate, seq_p50, seq_p99, conc_rate, conc_p50, conc_p99, failover_ms: times[1] })
}

/// Runs the suite.
pub fn run() -> Result<Vec<Figure>> {
    let bin = weftd()?;
    let bed = VirtualHosts::new(3);
    let dir = std::env::temp_dir().join(format!("{}-raftbench", bed.prefix()));
    std::fs::create_dir_all(&dir)?;
    let result = (|| -> Result<(Side, Side)> {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
        let mut weft = Weft { bed: &bed, dir: dir.clone(), procs: Procs(vec![None, None, None]), bin };
        weft.start(0, &["--bootstrap"])?;
        let token = |role: &str| -> Result<String> {
            let out = Command::new(weft.bin.parent().unwrap().join("weft"))
                .args(["-H", &format!("unix://{}", weft.socket(0).display()), "cluster", "token", role])
                .output();
            match out {
                Ok(o) if o.status.success() => Ok(String::from_utf8_lossy(&o.stdout).trim().to_string()),
                _ => rt.block_on(async {
                    let mut c = weft_client(&weft.socket(0)).await?;
                    let t = c.token(pb::TokenRequest { role: pb::NodeRole::Manager as i32 }).await?;
                    Ok(t.into_inner().token)
                }),
            }
        };
        let manager_token = token("manager")?;
        let join = format!("{}:7946", bed.host(0).addr);
        weft.start(1, &["--join", &join, "--token", &manager_token, "--manager"])?;
        weft.start(2, &["--join", &join, "--token", &manager_token, "--manager"])?;
        // Wait for three voters.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let voters = rt.block_on(async {
                let mut c = weft_client(&weft.socket(0)).await.ok()?;
                let n = c.nodes(pb::NodesRequest {}).await.ok()?.into_inner();
                Some(n.nodes.iter().filter(|n| n.raft == "voter" || n.leader).count())
            });
            if voters == Some(3) {
                break;
            }
            if Instant::now() > deadline {
                bail!("weft cluster did not form (see {}/h*.log)", dir.display());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let weft_result = rt.block_on(weft_side(&mut weft))?;
        drop(weft);
        let value_len = alloc(1, 1).command.map(|c| c.encoded_len()).unwrap_or(32);
        let mut procs = Procs((0..3).map(|i| etcd_start(&bed, &dir, i).map(Some)).collect::<Result<_>>()?);
        // etcd's clients must dial from inside a host namespace.
        let netns = bed.host(0).netns().clone();
        let bed_ref = &bed;
        let dir_ref = &dir;
        let etcd_result = std::thread::scope(|s| {
            s.spawn(move || -> Result<Side> {
                netns.enter()?;
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
                rt.block_on(etcd_side(bed_ref, dir_ref, &mut procs, value_len))
            })
            .join()
            .map_err(|_| anyhow::anyhow!("etcd client thread panicked"))?
        })?;
        Ok((weft_result, etcd_result))
    })();
    if result.is_ok() {
        let _ = std::fs::remove_dir_all(&dir);
    } else {
        eprintln!("logs kept in {}", dir.display());
    }
    let (w, e) = result?;
    Ok(vec![
        Figure::new("raft.alloc.1client.rate", w.seq_rate, "writes/s", "etcd 3.4 put, 1 client", e.seq_rate),
        Figure::new("raft.alloc.1client.p50", w.seq_p50, "ms", "etcd 3.4 put, 1 client", e.seq_p50)
            .inverted(),
        Figure::new("raft.alloc.1client.p99", w.seq_p99, "ms", "etcd 3.4 put, 1 client", e.seq_p99)
            .inverted(),
        Figure::new(
            "raft.alloc.64clients.rate",
            w.conc_rate,
            "writes/s",
            "etcd 3.4 put, 64 clients",
            e.conc_rate,
        ),
        Figure::new("raft.alloc.64clients.p50", w.conc_p50, "ms", "etcd 3.4 put, 64 clients", e.conc_p50)
            .inverted(),
        Figure::new("raft.alloc.64clients.p99", w.conc_p99, "ms", "etcd 3.4 put, 64 clients", e.conc_p99)
            .inverted(),
        Figure::new("raft.failover", w.failover_ms, "ms", "etcd 3.4 leader kill to first put", e.failover_ms)
            .inverted(),
    ])
}
