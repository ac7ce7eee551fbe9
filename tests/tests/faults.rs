//! The history-checked fault test (Jepsen's method) on the virtual-host bed: three managers and
//! two workers; eight clients on random hosts run, remove and network-connect containers for a
//! fixed number of operations while a nemesis SIGKILLs, SIGSTOPs/SIGCONTs and cuts the underlay
//! of random managers, three rounds. Every operation is recorded as invoked and as ok, fail or
//! unknown with its time, beside linearizable reads of the state; after healing,
//! `weft_tests::history::check` looks for an address held twice, a lost acknowledged container,
//! a failed run left behind and an endpoint nobody holds, and every host's routes are compared
//! with the final state. The history is a JSON-lines file each failure names.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use weft_tests::VirtualHosts;
use weft_tests::cluster::{WeftCluster, bin};
use weft_tests::history::{Completed, Final, FinalContainer, History, Op, Outcome, SeenEndpoint, check};

const MANAGERS: usize = 3;
const WORKERS: usize = 2;
const HOSTS: usize = MANAGERS + WORKERS;
const CLIENTS: usize = 8;
const OPS_PER_CLIENT: usize = 30;
const ROUNDS: usize = 3;
/// /23 in /28 blocks: 32 blocks of 13 addresses, so blocks and addresses are reused.
const NET: &str = "hist";
const NET_SUBNET: &str = "10.97.0.0/23";
const NET2: &str = "hist2";
const NET2_SUBNET: &str = "10.99.0.0/23";

/// A small deterministic generator (xorshift), seeded per client and printed, so a failing
/// schedule can be read back.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

/// Runs `weft args...` against host `i`'s socket, killed after a minute (a hung call is a
/// finding of its own, recorded as unknown).
fn weft(cluster: &WeftCluster<'_>, i: usize, args: &[&str]) -> std::process::Output {
    Command::new("timeout")
        .args(["-s", "KILL", "60"])
        .arg(bin("weft"))
        .arg("-H")
        .arg(format!("unix://{}", cluster.socket(i).display()))
        .args(args)
        .output()
        .expect("run weft")
}

/// How a finished command counts: ok, a definite failure (nothing reached weftd, or the cluster
/// refused and weftd undid what it had done), or unknown.
fn outcome(out: &std::process::Output) -> (Outcome, String) {
    let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
    if out.status.success() {
        return (Outcome::Ok, err);
    }
    let definite = ["cannot connect to weftd", "no quorum", "no leader", "no free address", "is down"];
    if definite.iter().any(|d| err.contains(d)) { (Outcome::Fail, err) } else { (Outcome::Info, err) }
}

/// The addresses of `name` on each network, as `weft inspect` on its host shows them (retried
/// while that host's weftd is restarting).
fn addresses(cluster: &WeftCluster<'_>, host: usize, name: &str) -> Option<BTreeMap<String, Vec<IpAddr>>> {
    for _ in 0..100 {
        let out = weft(cluster, host, &["inspect", name]);
        if out.status.success() {
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
            return Some(networks_of(&v[0]));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}

fn networks_of(container: &serde_json::Value) -> BTreeMap<String, Vec<IpAddr>> {
    container["networks"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|n| {
            let ips =
                n["ips"].as_array().into_iter().flatten().filter_map(|i| i.as_str()?.parse().ok()).collect();
            (n["network"].as_str().unwrap_or_default().to_string(), ips)
        })
        .collect()
}

/// One client's loop: run, rm and connect containers on random hosts.
fn client(cluster: &WeftCluster<'_>, history: &History, id: usize, seed: u64) {
    let mut rng = Rng(seed);
    // Containers this client ran with an acknowledgment and has not removed: name -> (host, connected).
    let mut mine: BTreeMap<String, (usize, bool)> = BTreeMap::new();
    for n in 0..OPS_PER_CLIENT {
        let roll = rng.below(100);
        let op = if roll < 45 || mine.is_empty() {
            Op::Run { host: rng.below(HOSTS), name: format!("c{id}-{n}"), network: NET.into() }
        } else {
            let names: Vec<&String> = mine.keys().collect();
            let name = names[rng.below(names.len())].clone();
            let (host, connected) = mine[&name];
            if roll < 80 || connected {
                Op::Rm { host, name }
            } else {
                Op::Connect { host, name, network: NET2.into() }
            }
        };
        let invoked_us = history.invoke(id, &op);
        let (out, host) = match &op {
            Op::Run { host, name, network } => (
                weft(
                    cluster,
                    *host,
                    &["run", "-d", "--name", name, "--network", network, "busybox", "sleep", "3600"],
                ),
                *host,
            ),
            Op::Rm { host, name } => (weft(cluster, *host, &["rm", "-f", name]), *host),
            Op::Connect { host, name, network } => {
                (weft(cluster, *host, &["network", "connect", network, name]), *host)
            }
        };
        let completed_us = history.now_us();
        let (outcome, error) = outcome(&out);
        let mut ips = Vec::new();
        if outcome == Outcome::Ok {
            match &op {
                Op::Run { name, network, .. } | Op::Connect { name, network, .. } => {
                    ips = addresses(cluster, host, name)
                        .and_then(|mut n| n.remove(network))
                        .unwrap_or_default();
                    let connected = matches!(op, Op::Connect { .. });
                    mine.insert(name.clone(), (host, connected));
                }
                Op::Rm { name, .. } => {
                    mine.remove(name);
                }
            }
        } else if let Op::Rm { name, .. } = &op {
            // Not to be tried again: the checker treats it as removed (unless it failed for sure).
            if outcome == Outcome::Info {
                mine.remove(name);
            }
        }
        history.complete(Completed { client: id, op, invoked_us, completed_us, outcome, ips, error });
    }
}

/// Linearizable reads of the state from the managers in turn, until `done`.
fn observer(cluster: &WeftCluster<'_>, history: &History, done: &AtomicBool) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let mut turn = 0;
    while !done.load(Ordering::SeqCst) {
        turn += 1;
        if let Some(snapshot) = read_state(cluster, &runtime, turn % MANAGERS) {
            history.observe(snapshot.revision, endpoints_of(&snapshot));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn read_state(
    cluster: &WeftCluster<'_>,
    runtime: &tokio::runtime::Runtime,
    manager: usize,
) -> Option<weft_proto::v1::StateSnapshot> {
    runtime.block_on(async {
        tokio::time::timeout(Duration::from_secs(2), cluster.state(manager)).await.ok()?.ok()
    })
}

fn endpoints_of(snapshot: &weft_proto::v1::StateSnapshot) -> Vec<SeenEndpoint> {
    let networks: BTreeMap<u64, String> = snapshot.networks.iter().map(|n| (n.id, n.name.clone())).collect();
    snapshot
        .endpoints
        .iter()
        .map(|e| SeenEndpoint {
            id: e.id,
            network: networks.get(&e.network_id).cloned().unwrap_or_default(),
            node: e.node_id,
            name: e.name.clone(),
            ips: e.ips.iter().filter_map(|i| i.parse().ok()).collect(),
        })
        .collect()
}

/// The faults, three rounds: a random manager is SIGKILLed (and restarted), SIGSTOPped (and
/// continued) or cut off the underlay (and restored).
fn nemesis(cluster: &WeftCluster<'_>, bed: &VirtualHosts, history: &History, seed: u64) {
    let mut rng = Rng(seed);
    for round in 0..ROUNDS {
        std::thread::sleep(Duration::from_secs(2));
        let victim = rng.below(MANAGERS);
        match (round + rng.below(3)) % 3 {
            0 => {
                history.nemesis(format!("kill weftd on h{victim}"));
                cluster.kill(victim);
                std::thread::sleep(Duration::from_secs(2));
                cluster.restart(victim);
                history.nemesis(format!("restarted weftd on h{victim}"));
            }
            1 => {
                let pid = cluster.pid(victim).expect("weftd runs") as i32;
                history.nemesis(format!("SIGSTOP weftd on h{victim}"));
                // SAFETY: signalling a weftd this test started.
                unsafe { libc::kill(pid, libc::SIGSTOP) };
                std::thread::sleep(Duration::from_secs(4));
                // SAFETY: as above.
                unsafe { libc::kill(pid, libc::SIGCONT) };
                history.nemesis(format!("SIGCONT weftd on h{victim}"));
            }
            _ => {
                history.nemesis(format!("cut h{victim}'s underlay"));
                bed.cut(victim);
                std::thread::sleep(Duration::from_secs(4));
                bed.restore(victim);
                history.nemesis(format!("restored h{victim}'s underlay"));
            }
        }
        std::thread::sleep(Duration::from_secs(3));
    }
}

/// The routes every host should have to other hosts' blocks, from the state: host index ->
/// (destination block, device).
fn wanted_routes(
    snapshot: &weft_proto::v1::StateSnapshot,
    ids: &[u64],
) -> BTreeMap<usize, BTreeSet<(String, String)>> {
    let vni: BTreeMap<u64, u32> = snapshot.networks.iter().map(|n| (n.id, n.vni)).collect();
    let mut wanted: BTreeMap<usize, BTreeSet<(String, String)>> =
        (0..ids.len()).map(|h| (h, BTreeSet::new())).collect();
    for block in &snapshot.blocks {
        for (h, id) in ids.iter().enumerate() {
            if *id != block.node_id {
                wanted
                    .get_mut(&h)
                    .unwrap()
                    .insert((block.cidr.clone(), format!("wvx-{}", vni[&block.network_id])));
            }
        }
    }
    wanted
}

/// The routes host `i` has through weft's VXLAN devices.
fn vxlan_routes(bed: &VirtualHosts, i: usize) -> BTreeSet<(String, String)> {
    let out = bed.host(i).output("ip", &["-j", "route", "show"]);
    let routes: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    routes
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| {
            let dev = r["dev"].as_str()?;
            dev.starts_with("wvx-")
                .then(|| (r["dst"].as_str().unwrap_or_default().to_string(), dev.to_string()))
        })
        .collect()
}

#[test]
fn no_address_twice_and_nothing_acknowledged_lost_under_faults() {
    let started = Instant::now();
    let bed = VirtualHosts::new(HOSTS);
    let cluster = WeftCluster::new(&bed);
    cluster.form(MANAGERS, WORKERS);
    cluster.import_busybox(&(0..HOSTS).collect::<Vec<_>>());
    cluster.weft_ok(0, &["network", "create", "-d", "overlay", "--subnet", NET_SUBNET, NET]);
    cluster.weft_ok(0, &["network", "create", "-d", "overlay", "--subnet", NET2_SUBNET, NET2]);
    let path =
        std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("faults-{}.jsonl", bed.prefix()));
    let history = History::create(&path).unwrap();
    let seed =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1;
    eprintln!("history: {} (seed {seed})", path.display());
    history.nemesis(format!("seed {seed}"));

    let done = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| observer(&cluster, &history, &done));
        let clients: Vec<_> = (0..CLIENTS)
            .map(|id| {
                let (cluster, history) = (&cluster, &history);
                s.spawn(move || client(cluster, history, id, seed.wrapping_mul(id as u64 + 3) | 1))
            })
            .collect();
        // On this thread: a weftd the nemesis restarts dies with the thread that started it
        // (the test bed's commands carry PR_SET_PDEATHSIG), and this one outlives the test.
        nemesis(&cluster, &bed, &history, seed.rotate_left(7));
        for c in clients {
            c.join().expect("client");
        }
        done.store(true, Ordering::SeqCst);
    });
    eprintln!("operations and faults done after {:?}", started.elapsed());

    // Healed (the nemesis undoes each fault): the cluster settles, and every host's janitor has
    // had its chance to release what failed operations left.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let healthy = cluster.nodes(0).is_ok_and(|nodes| {
            nodes.iter().all(|n| n["status"] == "Ready")
                && nodes.iter().filter(|n| n["leader"] == true).count() == 1
        });
        if healthy {
            break;
        }
        if Instant::now() > deadline {
            let views: Vec<String> = (0..MANAGERS)
                .map(|m| {
                    let out = weft(&cluster, m, &["node", "ls"]);
                    format!(
                        "h{m}: {}{}",
                        String::from_utf8_lossy(&out.stdout),
                        String::from_utf8_lossy(&out.stderr)
                    )
                })
                .collect();
            let logs: Vec<String> =
                (0..HOSTS).map(|i| format!("--- h{i}\n{}", cluster.log_tail(i))).collect();
            panic!(
                "the cluster did not settle after healing (history {}):\n{}\n{}",
                path.display(),
                views.join("\n"),
                logs.join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    // Every container on every host (by name), and what could not be read.
    let containers = || -> (BTreeMap<String, FinalContainer>, Vec<String>) {
        let mut all = BTreeMap::new();
        let mut errors = Vec::new();
        for host in 0..HOSTS {
            let out = weft(&cluster, host, &["ps", "-a", "--format", "json"]);
            if !out.status.success() {
                errors.push(format!("ps on h{host}: {}", String::from_utf8_lossy(&out.stderr)));
                continue;
            }
            let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
            for name in list.as_array().into_iter().flatten().filter_map(|c| c["name"].as_str()) {
                let out = weft(&cluster, host, &["inspect", name]);
                let found: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
                if !out.status.success() {
                    errors
                        .push(format!("inspect {name} on h{host}: {}", String::from_utf8_lossy(&out.stderr)));
                    continue;
                }
                let c = &found[0];
                all.insert(
                    name.to_string(),
                    FinalContainer { running: c["state"] == "running", ips: networks_of(c) },
                );
            }
        }
        (all, errors)
    };
    // Settled once no endpoint is left without its container (or after 90 s: the checker then
    // names what is left).
    let mut last = None;
    let deadline = Instant::now() + Duration::from_secs(90);
    while Instant::now() < deadline {
        let Some(snapshot) = read_state(&cluster, &runtime, 0) else { continue };
        let (found, errors) = containers();
        let settled = errors.is_empty() && snapshot.endpoints.iter().all(|e| found.contains_key(&e.name));
        last = Some((snapshot, found, errors));
        if settled {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let (snapshot, found, errors) = last.expect("a final read");
    history.observe(snapshot.revision, endpoints_of(&snapshot));
    let end = Final { containers: found, endpoints: endpoints_of(&snapshot) };
    let entries = history.entries();
    let count = |o: Outcome| {
        entries
            .iter()
            .filter(|e| matches!(e, weft_tests::history::Entry::Complete(c) if c.outcome == o))
            .count()
    };
    eprintln!(
        "{} operations: {} ok, {} failed, {} unknown; {} reads; {} containers at the end",
        count(Outcome::Ok) + count(Outcome::Fail) + count(Outcome::Info),
        count(Outcome::Ok),
        count(Outcome::Fail),
        count(Outcome::Info),
        entries.iter().filter(|e| matches!(e, weft_tests::history::Entry::Observe(_))).count(),
        end.containers.len()
    );
    let mut problems = check(&entries, &end);
    problems.extend(errors);
    assert!(problems.is_empty(), "the history {} breaks the rules:\n{}", path.display(), problems.join("\n"));
    assert!(
        count(Outcome::Ok) > CLIENTS * OPS_PER_CLIENT / 2,
        "most operations should succeed: see {}",
        path.display()
    );

    // Every host's kernel routes match the final state.
    let mut ids = vec![0; HOSTS];
    for n in cluster.nodes(0).unwrap() {
        let i: usize = n["name"].as_str().unwrap()[1..].parse().unwrap();
        ids[i] = n["id"]
            .as_str()
            .and_then(|t| u64::from_str_radix(t, 16).ok())
            .unwrap_or_else(|| n["id"].as_u64().unwrap());
    }
    let wanted = wanted_routes(&snapshot, &ids);
    cluster.eventually("every host's routes match the final state", Duration::from_secs(20), || {
        (0..HOSTS).all(|h| vxlan_routes(&bed, h) == wanted[&h])
    });
    eprintln!("checked in {:?}", started.elapsed());
}
