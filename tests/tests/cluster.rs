//! The control plane on virtual hosts: one weftd process per host namespace, formed with
//! bootstrap and join tokens, faults made by SIGKILL and by cutting underlay links.

use std::time::Duration;

use weft_tests::VirtualHosts;
use weft_tests::cluster::WeftCluster;

#[test]
fn three_managers_and_two_workers_form_one_cluster() {
    let bed = VirtualHosts::new(6);
    let cluster = WeftCluster::new(&bed);
    cluster.form(3, 2);
    // Every node, manager or worker, shows the same five nodes with one leader.
    for i in 0..5 {
        let nodes = cluster.nodes(i).unwrap();
        assert_eq!(nodes.len(), 5, "via h{i}: {nodes:?}");
        let managers: Vec<_> = nodes.iter().filter(|n| n["role"] == "manager").collect();
        assert_eq!(managers.len(), 3);
        assert!(managers.iter().all(|n| n["raft"] == "voter"));
        assert_eq!(nodes.iter().filter(|n| n["role"] == "worker" && n["raft"] == "").count(), 2);
        assert_eq!(nodes.iter().filter(|n| n["leader"] == true).count(), 1);
    }
    let table = cluster.weft_ok(3, &["node", "ls"]);
    assert!(table.starts_with("ID"), "{table}");
    assert_eq!(table.lines().count(), 6, "{table}");
    assert!(table.lines().any(|l| l.contains("h0") && l.contains("manager")), "{table}");

    // A wrong secret is refused by the manager; a wrong CA fingerprint is refused by the joiner
    // before it sends anything. Neither leaves a node behind.
    let token = cluster.weft_ok(0, &["cluster", "token", "worker"]).trim().to_string();
    let (head, _) = token.rsplit_once('-').unwrap();
    let wrong_secret = format!("{head}-{}", "0".repeat(32));
    let out = cluster.run_to_exit(5, &["--join", &cluster.api(0), "--token", &wrong_secret]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("not valid for this cluster"), "{err}");
    let secret = token.rsplit_once('-').unwrap().1;
    let wrong_ca = format!("WEFT-1-{}-{secret}", "ab".repeat(32));
    let out = cluster.run_to_exit(5, &["--join", &cluster.api(0), "--token", &wrong_ca]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("does not match the token's fingerprint"), "{err}");
    // A worker token cannot make a manager.
    let out = cluster.run_to_exit(5, &["--join", &cluster.api(0), "--token", &token, "--manager"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("manager token"), "{err}");
    assert_eq!(cluster.nodes(0).unwrap().len(), 5);

    // A client without a certificate reaches the TLS listener but every call is refused.
    let ca = std::fs::read_to_string(cluster.state_dir(0).join("tls/ca.pem")).unwrap();
    let api = cluster.api(0);
    let refused = bed.host(5).run(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            let tls = tonic::transport::ClientTlsConfig::new()
                .ca_certificate(tonic::transport::Certificate::from_pem(ca))
                .domain_name(weft_agent::pki::MANAGER_NAME);
            let channel = tonic::transport::Endpoint::from_shared(format!("https://{api}"))
                .unwrap()
                .tls_config(tls)
                .unwrap()
                .connect_timeout(Duration::from_secs(3))
                .connect()
                .await
                .expect("TLS without a client certificate still connects");
            let mut client = weft_proto::v1::cluster_client::ClusterClient::new(channel);
            client.nodes(weft_proto::v1::NodesRequest {}).await.unwrap_err()
        })
    });
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused:?}");
    assert!(refused.message().contains("client certificate"), "{refused:?}");
}

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use weft_proto::v1 as pb;

/// A cluster whose tests write endpoints for containers that do not exist (raw `Apply` calls):
/// its agents keep them instead of releasing them as orphans after 10 s, which a slow run would
/// otherwise reach before its last check.
fn raw_endpoint_cluster(bed: &VirtualHosts) -> WeftCluster<'_> {
    let mut cluster = WeftCluster::new(bed);
    cluster.env.push(("WEFTD_FAILPOINT_KEEP_ORPHANS".into(), "1".into()));
    cluster
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

fn command(kind: pb::command::Kind) -> pb::ApplyRequest {
    pb::ApplyRequest { command: Some(pb::Command { kind: Some(kind) }) }
}

fn create_network(name: &str, subnet: &str) -> pb::ApplyRequest {
    command(pb::command::Kind::CreateNetwork(pb::CreateNetwork {
        name: name.into(),
        driver: pb::NetworkDriver::Overlay as i32,
        subnets: vec![subnet.into()],
        ..Default::default()
    }))
}

fn allocate(network: &str, node_id: u64, container: &str) -> pb::ApplyRequest {
    command(pb::command::Kind::AllocateEndpoint(pb::AllocateEndpoint {
        network: network.into(),
        node_id,
        container_id: container.into(),
        ..Default::default()
    }))
}

/// Applies through host `i`'s socket, retrying while the cluster elects a leader.
async fn apply_retrying(cluster: &WeftCluster<'_>, i: usize, request: pb::ApplyRequest) -> pb::ApplyResponse {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match cluster.apply(i, request.clone()).await {
            Ok(r) => return r,
            Err(_) if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(200)).await,
            Err(e) => panic!("apply through h{i}: {e}"),
        }
    }
}

fn endpoint_of(response: &pb::ApplyResponse) -> pb::Endpoint {
    match response.outcome.as_ref().and_then(|o| o.kind.clone()) {
        Some(pb::outcome::Kind::Endpoint(e)) => e,
        other => panic!("expected an endpoint, got {other:?}"),
    }
}

/// Every manager's state, once they all agree (same revision, same bytes).
fn agreed_state(
    cluster: &WeftCluster<'_>,
    rt: &tokio::runtime::Runtime,
    managers: &[usize],
) -> pb::StateSnapshot {
    let mut last = None;
    cluster.eventually("managers agree on one state", Duration::from_secs(30), || {
        let states: Vec<_> = managers.iter().map(|i| rt.block_on(cluster.state(*i))).collect();
        if states.iter().any(|s| s.is_err()) {
            return false;
        }
        let states: Vec<pb::StateSnapshot> = states.into_iter().map(Result::unwrap).collect();
        let same = states.windows(2).all(|w| w[0] == w[1]);
        last = Some(states[0].clone());
        same
    });
    last.unwrap()
}

#[test]
fn allocations_stay_linearizable_through_leader_kills_and_a_full_restart() {
    let bed = VirtualHosts::new(3);
    let cluster = raw_endpoint_cluster(&bed);
    cluster.form(3, 0);
    let rt = runtime();
    rt.block_on(apply_retrying(&cluster, 0, create_network("app", "10.60.0.0/16")));
    let node_ids: Vec<u64> = rt.block_on(cluster.state(0)).unwrap().nodes.iter().map(|n| n.id).collect();

    const TOTAL: usize = 1000;
    const CLIENTS: usize = 8;
    let done = AtomicUsize::new(0);
    let acked: Mutex<BTreeMap<String, pb::Endpoint>> = Mutex::new(BTreeMap::new());
    let failed: Mutex<Vec<(String, String)>> = Mutex::new(Vec::new());
    let kills = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            rt.block_on(async {
                let mut tasks = Vec::new();
                for k in 0..CLIENTS {
                    let (cluster, done, acked, failed, node_ids) =
                        (&cluster, &done, &acked, &failed, &node_ids);
                    tasks.push(async move {
                        for i in (k..TOTAL).step_by(CLIENTS) {
                            let container = format!("c{i}");
                            let via = i % 3;
                            let request = allocate("app", node_ids[i % node_ids.len()], &container);
                            match cluster.apply(via, request).await {
                                Ok(r) => {
                                    acked.lock().unwrap().insert(container, endpoint_of(&r));
                                }
                                Err(e) => failed.lock().unwrap().push((container, e)),
                            }
                            done.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        }
                    });
                }
                futures::future::join_all(tasks).await;
            })
        });
        // The leader is killed three times while the clients run, and restarted each time.
        for target in [150, 400, 650] {
            while done.load(Ordering::SeqCst) < target {
                std::thread::sleep(Duration::from_millis(10));
            }
            let alive = (0..3).find(|i| cluster.socket(*i).exists()).unwrap();
            let Some(leader) = cluster.leader(alive) else { continue };
            cluster.kill(leader);
            kills.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(800));
            cluster.restart(leader);
        }
    });
    assert_eq!(kills.load(Ordering::SeqCst), 3, "the leader was killed three times");
    let acked = acked.into_inner().unwrap();
    let failed = failed.into_inner().unwrap();
    assert_eq!(acked.len() + failed.len(), TOTAL);
    eprintln!("{} acknowledged, {} reported failed", acked.len(), failed.len());
    assert!(
        acked.len() >= TOTAL / 2,
        "most calls succeed: {} failed, e.g. {:?}",
        failed.len(),
        failed.first()
    );
    for (_, message) in &failed {
        assert!(!message.is_empty(), "a failure says what failed");
    }

    let state = agreed_state(&cluster, &rt, &[0, 1, 2]);
    let by_container: BTreeMap<&str, &pb::Endpoint> =
        state.endpoints.iter().map(|e| (e.container_id.as_str(), e)).collect();
    for (container, endpoint) in &acked {
        let stored =
            by_container.get(container.as_str()).unwrap_or_else(|| panic!("acknowledged {container} lost"));
        assert_eq!(*stored, endpoint, "acknowledged {container} changed");
    }
    let ips: BTreeSet<&String> = state.endpoints.iter().flat_map(|e| e.ips.iter()).collect();
    assert_eq!(ips.len(), state.endpoints.len(), "an address is owned twice");

    // Every manager killed, then restarted: the same state at the same revision.
    cluster.eventually("every node Ready", Duration::from_secs(20), || {
        rt.block_on(cluster.state(0))
            .is_ok_and(|s| s.nodes.iter().all(|n| n.status == pb::NodeStatus::Ready as i32))
    });
    let state = agreed_state(&cluster, &rt, &[0, 1, 2]);
    for i in 0..3 {
        cluster.kill(i);
    }
    for i in 0..3 {
        cluster.restart(i);
    }
    let again = agreed_state(&cluster, &rt, &[0, 1, 2]);
    assert_eq!(again.revision, state.revision, "revision changed across a full restart");
    assert_eq!(again, state, "state changed across a full restart");
}

#[test]
fn a_cut_off_manager_refuses_writes_and_recovers_when_its_link_returns() {
    let bed = VirtualHosts::new(3);
    let cluster = raw_endpoint_cluster(&bed);
    cluster.form(3, 0);
    let rt = runtime();
    rt.block_on(apply_retrying(&cluster, 0, create_network("app", "10.61.0.0/16")));
    let ids: Vec<u64> = rt.block_on(cluster.state(0)).unwrap().nodes.iter().map(|n| n.id).collect();

    bed.cut(2);
    // The minority manager refuses with a clear "no quorum" within a few seconds.
    let started = Instant::now();
    let refused = rt.block_on(async {
        let mut n = 0;
        loop {
            n += 1;
            let mut c = cluster.client(2).await.unwrap();
            match c.apply(allocate("app", ids[2], &format!("minority{n}"))).await {
                Err(s) if s.message().contains("no quorum") => return s,
                _ if started.elapsed() > Duration::from_secs(20) => {
                    panic!("h2 kept accepting writes while cut off")
                }
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    });
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
    assert!(started.elapsed() < Duration::from_secs(10), "refusal took {:?}", started.elapsed());
    // The majority keeps working.
    for i in 0..20 {
        let r = rt.block_on(apply_retrying(
            &cluster,
            i % 2,
            allocate("app", ids[i % 2], &format!("majority{i}")),
        ));
        endpoint_of(&r);
    }
    // Link restored: the former minority manager accepts writes again and catches up.
    bed.restore(2);
    let r = rt.block_on(apply_retrying(&cluster, 2, allocate("app", ids[2], "after")));
    endpoint_of(&r);
    let state = agreed_state(&cluster, &rt, &[0, 1, 2]);
    let containers: BTreeSet<&str> = state.endpoints.iter().map(|e| e.container_id.as_str()).collect();
    assert!((0..20).all(|i| containers.contains(format!("majority{i}").as_str())));
    assert!(containers.contains("after"));
}

#[test]
fn a_workers_watch_survives_its_managers_restart_without_gap_or_duplicate() {
    let bed = VirtualHosts::new(4);
    let cluster = raw_endpoint_cluster(&bed);
    cluster.form(3, 0);
    let rt = runtime();
    rt.block_on(apply_retrying(&cluster, 1, create_network("app", "10.62.0.0/16")));
    let ids: Vec<u64> = rt.block_on(cluster.state(1)).unwrap().nodes.iter().map(|n| n.id).collect();

    // A worker on host 3 joins with the worker token and watches manager h0 first.
    let token =
        weft_agent::pki::Token::parse(cluster.weft_ok(0, &["cluster", "token", "worker"]).trim()).unwrap();
    let (api0, api1) = (cluster.api(0), cluster.api(1));
    let worker_addr = bed.host(3).addr.to_string();
    let seen: Arc<Mutex<Vec<(bool, u64)>>> = Arc::new(Mutex::new(Vec::new()));
    let mirror_rev = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicUsize::new(0));
    let watcher = {
        let (seen, mirror_rev, stop) = (seen.clone(), mirror_rev.clone(), stop.clone());
        let host = bed.host(3);
        let netns = host.netns().clone();
        std::thread::spawn(move || {
            netns.enter().unwrap();
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                let _ = rustls::crypto::ring::default_provider().install_default();
                let channel = weft_agent::tls::join_channel(&api0, &token.ca_fingerprint).await.unwrap();
                let mut client = pb::cluster_client::ClusterClient::new(channel);
                let kit = client
                    .join(pb::JoinRequest {
                        secret: token.secret.clone(),
                        name: "watcher".into(),
                        underlay_addr: worker_addr,
                        api_addr: String::new(),
                        role: pb::NodeRole::Worker as i32,
                        ..Default::default()
                    })
                    .await
                    .unwrap()
                    .into_inner();
                let tls = weft_agent::tls::NodeTls {
                    ca_pem: kit.ca_cert_pem,
                    cert: weft_agent::tls::NodeCert { chain_pem: kit.cert_pem, key_pem: kit.key_pem },
                };
                let peers = Arc::new(weft_agent::peers::Peers::new(tls));
                let upstream = Arc::new(weft_agent::service::Upstream::new(vec![api0.clone(), api1]));
                let (tx, mut rx) = tokio::sync::watch::channel(Arc::new(weft_state::Mirror::default()));
                let observer = seen.clone();
                let task = tokio::spawn(weft_agent::watch::run_watch(peers, upstream, tx, move |r| {
                    let entry = match &r.kind {
                        Some(pb::watch_response::Kind::Snapshot(s)) => (true, s.revision),
                        Some(pb::watch_response::Kind::Batch(b)) => (false, b.revision),
                        None => return,
                    };
                    observer.lock().unwrap().push(entry);
                }));
                while stop.load(Ordering::SeqCst) == 0 {
                    let _ = tokio::time::timeout(Duration::from_millis(100), rx.changed()).await;
                    mirror_rev.store(rx.borrow().revision() as usize, Ordering::SeqCst);
                }
                task.abort();
                rx.borrow().clone()
            })
        })
    };
    let write = |n: std::ops::Range<usize>, tag: &str| {
        for i in n {
            rt.block_on(apply_retrying(&cluster, 1, allocate("app", ids[i % 3], &format!("{tag}{i}"))));
        }
    };
    let revision = |i| rt.block_on(cluster.state(i)).unwrap().revision as usize;
    write(0..30, "a");
    let rev = revision(1);
    cluster.eventually("the watcher has the first writes", Duration::from_secs(20), || {
        mirror_rev.load(Ordering::SeqCst) >= rev
    });
    // The watched manager dies: the watcher moves to h1 and keeps up with writes made meanwhile.
    cluster.kill(0);
    write(30..60, "b");
    let rev = revision(1);
    cluster.eventually("the watcher fails over to h1", Duration::from_secs(20), || {
        mirror_rev.load(Ordering::SeqCst) >= rev
    });
    cluster.restart(0);
    write(60..90, "c");
    let mut snapshots = Vec::new();
    cluster.eventually("the watcher reaches the managers' revision", Duration::from_secs(20), || {
        let state = agreed_state(&cluster, &rt, &[0, 1, 2]);
        let caught_up = mirror_rev.load(Ordering::SeqCst) as u64 == state.revision;
        snapshots.push(state);
        caught_up
    });
    stop.store(1, Ordering::SeqCst);
    let mirror = watcher.join().unwrap();
    snapshots.push(agreed_state(&cluster, &rt, &[0, 1, 2]));
    // The mirror holds exactly the managers' state at its revision...
    let final_state = snapshots
        .iter()
        .rev()
        .find(|s| s.revision == mirror.revision())
        .expect("a state at the mirror's revision");
    assert_eq!(*mirror, weft_state::Mirror::from_snapshot(final_state), "the worker's copy diverged");
    // ...and got there with every revision once, in order: a snapshot can only come first (a
    // manager whose history is complete replays from revision 1 instead); after that, batches.
    let seen = seen.lock().unwrap().clone();
    let mut last = 0;
    let mut batches = BTreeSet::new();
    for (i, (snapshot, revision)) in seen.iter().enumerate() {
        if *snapshot {
            assert_eq!(i, 0, "a resumed watch must not start over from a snapshot: {seen:?}");
        } else {
            assert_eq!(*revision, last + 1, "gap or duplicate after revision {last}");
            assert!(batches.insert(*revision));
        }
        last = *revision;
    }
    assert!(last >= final_state.revision);
}
