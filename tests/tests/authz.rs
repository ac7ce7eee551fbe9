//! Who may do what, over the real TLS listener of real weftd processes: every row of the
//! authorization table tried by every kind of caller, a worker's certificate trying to become
//! root on the cluster, forged raft messages, removal revoking a certificate, token rotation,
//! certificate renewal in place, and a worker's heartbeats through a follower.

use std::path::Path;
use std::time::{Duration, Instant};

use protobuf::Message as _;
use raft::eraftpb::{ConfState, Entry, Message, MessageType, Snapshot};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use weft_agent::authz::{TABLE, Who};
use weft_agent::pki::{CertRole, ClusterCa, MANAGER_NAME};
use weft_proto::v1 as pb;
use weft_proto::v1::agent_client::AgentClient;
use weft_proto::v1::cluster_client::ClusterClient;
use weft_proto::v1::raft_transport_client::RaftTransportClient;
use weft_tests::VirtualHosts;
use weft_tests::cluster::{WeftCluster, bin};

/// A client's key material, PEM.
#[derive(Clone)]
struct Creds {
    ca: String,
    cert: Option<(String, String)>,
}

impl Creds {
    /// The `node.pem`, `node-key.pem` and `ca.pem` of `dir` (a node's `tls/`, an admin bundle).
    fn of(dir: &Path) -> Creds {
        let read = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap();
        Creds { ca: read("ca.pem"), cert: Some((read("node.pem"), read("node-key.pem"))) }
    }

    fn anonymous(ca: &str) -> Creds {
        Creds { ca: ca.to_string(), cert: None }
    }
}

/// A channel to `api` over mutual TLS with `creds`; call it inside a host's namespace.
async fn channel(api: &str, creds: &Creds) -> Result<Channel, String> {
    let mut tls =
        ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&creds.ca)).domain_name(MANAGER_NAME);
    if let Some((cert, key)) = &creds.cert {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    Endpoint::from_shared(format!("https://{api}"))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect_timeout(Duration::from_secs(3))
        .connect()
        .await
        .map_err(|e| format!("{e}: {:?}", std::error::Error::source(&e)))
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

/// True when the status is the authorization layer's (or a handler's ownership check's) refusal.
fn refused(result: &Result<(), tonic::Status>) -> bool {
    matches!(result, Err(s) if weft_agent::reason::of(s) == pb::Reason::NotAuthorized
        && matches!(s.code(), tonic::Code::PermissionDenied | tonic::Code::Unauthenticated))
}

/// One harmless call of the method at `path` (a row of the table): an allowed caller gets past
/// authorization (and mostly succeeds), a refused one is stopped before the body is read.
async fn probe(path: &str, channel: Channel, me: u64) -> Result<(), tonic::Status> {
    let mut c = ClusterClient::new(channel.clone());
    match path {
        "/weft.v1.Cluster/Join" => c
            .join(pb::JoinRequest {
                secret: "0".repeat(32),
                name: "probe".into(),
                underlay_addr: "192.0.2.99".into(),
                api_addr: String::new(),
                role: pb::NodeRole::Worker as i32,
                ..Default::default()
            })
            .await
            .map(done),
        "/weft.v1.Cluster/Apply" => {
            let command = weft_state::cmd::release_endpoint(999_999);
            c.apply(pb::ApplyRequest { command: Some(command) }).await.map(done)
        }
        "/weft.v1.Cluster/Heartbeat" => {
            c.heartbeat(pb::HeartbeatRequest { node_id: me, revision: 0, report: None }).await.map(done)
        }
        "/weft.v1.Cluster/Heartbeats" => {
            let beat = pb::HeartbeatRequest { node_id: me, revision: 0, report: None };
            let opening = pb::Beats { beats: vec![beat], age_ms: vec![0] };
            let mut answers = c.heartbeats(futures::stream::iter(vec![opening])).await?.into_inner();
            answers.message().await.map(done)
        }
        "/weft.v1.Cluster/Watch" => {
            let mut stream = c.watch(pb::WatchRequest { from_revision: 0 }).await?.into_inner();
            stream.message().await.map(done)
        }
        "/weft.v1.Cluster/GetState" => c.get_state(pb::StateRequest { linearizable: true }).await.map(done),
        "/weft.v1.Cluster/Nodes" => c.nodes(pb::NodesRequest {}).await.map(done),
        "/weft.v1.Cluster/Info" => c.info(pb::InfoRequest {}).await.map(done),
        "/weft.v1.Cluster/Why" => {
            c.why(pb::WhyRequest { src: "h0".into(), dst: "h1".into(), ..Default::default() }).await.map(done)
        }
        "/weft.v1.Cluster/ChangeRole" => c
            .change_role(pb::ChangeRoleRequest { node: "nosuch".into(), role: pb::NodeRole::Manager as i32 })
            .await
            .map(done),
        "/weft.v1.Cluster/RemoveNode" => {
            c.remove_node(pb::RemoveNodeRequest { node: "nosuch".into(), force: true }).await.map(done)
        }
        "/weft.v1.Cluster/Token" => {
            c.token(pb::TokenRequest { role: pb::NodeRole::Worker as i32 }).await.map(done)
        }
        // An unspecified role: past authorization it is refused as bad input, rotating nothing.
        "/weft.v1.Cluster/RotateToken" => c.rotate_token(pb::TokenRequest { role: 0 }).await.map(done),
        "/weft.v1.Cluster/IssueAdminCert" => {
            c.issue_admin_cert(pb::AdminCertRequest { ttl_seconds: 600 }).await.map(done)
        }
        "/weft.v1.Cluster/RenewCert" => c.renew_cert(pb::InfoRequest {}).await.map(done),
        "/weft.v1.Cluster/ManagerKit" => c.manager_kit(pb::InfoRequest {}).await.map(done),
        "/weft.v1.RaftTransport/Stream" => RaftTransportClient::new(channel)
            .stream(futures::stream::iter(vec![pb::RaftBatch::default()]))
            .await
            .map(done),
        "/weft.v1.Agent/" => AgentClient::new(channel).list_networks(pb::Empty {}).await.map(done),
        other => panic!("no probe for the row {other}: add one"),
    }
}

/// Drops a call's answer: the probes care only whether it got through.
fn done<T>(_: T) {}

fn node_id(cluster: &WeftCluster<'_>, i: usize) -> u64 {
    let info: serde_json::Value =
        serde_json::from_str(&cluster.weft_ok(i, &["cluster", "info", "--format", "json"])).unwrap();
    u64::from_str_radix(info["id"].as_str().unwrap(), 16).unwrap()
}

fn info(cluster: &WeftCluster<'_>, i: usize) -> serde_json::Value {
    serde_json::from_str(&cluster.weft_ok(i, &["cluster", "info", "--format", "json"])).unwrap()
}

fn revision(cluster: &WeftCluster<'_>) -> u64 {
    runtime().block_on(cluster.state(0)).unwrap().revision
}

/// Runs `weft --host https://API` with the bundle in `dir`, inside host `from`'s namespace.
fn remote_weft(
    bed: &VirtualHosts,
    from: usize,
    api: &str,
    dir: &Path,
    args: &[&str],
) -> std::process::Output {
    let mut cmd = bed.host(from).command(bin("weft").to_str().unwrap());
    cmd.arg("--host").arg(format!("https://{api}"));
    for (flag, file) in [("--tls-cert", "node.pem"), ("--tls-key", "node-key.pem"), ("--tls-ca", "ca.pem")] {
        cmd.arg(flag).arg(dir.join(file));
    }
    cmd.args(args).output().unwrap()
}

#[test]
fn every_row_of_the_table_admits_exactly_its_callers() {
    let bed = VirtualHosts::new(4);
    let cluster = WeftCluster::new(&bed);
    cluster.form(2, 1);
    let admin_dir = cluster.scratch().join("admin");
    cluster.weft_ok(0, &["cluster", "cert", "admin", "-o", admin_dir.to_str().unwrap()]);
    let ca = std::fs::read_to_string(cluster.state_dir(0).join("tls/ca.pem")).unwrap();
    let callers = [
        (Who::Admin, Creds::of(&admin_dir), 0),
        (Who::Manager, Creds::of(&cluster.state_dir(1).join("tls")), node_id(&cluster, 1)),
        (Who::Worker, Creds::of(&cluster.state_dir(2).join("tls")), node_id(&cluster, 2)),
        (Who::Anonymous, Creds::anonymous(&ca), 0),
    ];
    let api = cluster.api(0);
    let before = revision(&cluster);
    let h0 = node_id(&cluster, 0);
    // Rows whose handler refuses a caller the row admits, for what the request asks.
    let handler_refuses = |path: &str, who: Who| path == "/weft.v1.Cluster/ManagerKit" && who == Who::Worker;
    for rule in TABLE {
        for (who, creds, me) in &callers {
            let (path, creds, api) = (rule.path, creds.clone(), api.clone());
            let result = bed.host(3).run(move || {
                runtime()
                    .block_on(async move { probe(path, channel(&api, &creds).await.unwrap(), *me).await })
            });
            let expect_refused = !rule.allowed.contains(who) || handler_refuses(path, *who);
            assert_eq!(refused(&result), expect_refused, "{path} by {who:?}: {result:?}");
            if expect_refused && *who == Who::Anonymous {
                assert_eq!(result.unwrap_err().code(), tonic::Code::Unauthenticated, "{path}");
            }
        }
        // The local socket is root's on that host: its column, through h0's socket.
        let socket = cluster.socket(0);
        let local = runtime().block_on(async {
            let channel =
                weft_cli::client::channel(&weft_cli::client::Host::Unix(socket), &Default::default())
                    .await
                    .unwrap();
            probe(rule.path, channel, h0).await
        });
        assert_eq!(refused(&local), !rule.allowed.contains(&Who::Local), "{} locally: {local:?}", rule.path);
    }
    // A certificate of another CA does not get through the handshake at all.
    let foreign = ClusterCa::generate()
        .unwrap()
        .issue_node(node_id(&cluster, 1), CertRole::Manager, Duration::from_secs(600))
        .unwrap();
    let creds = Creds { ca: ca.clone(), cert: Some((foreign.chain_pem, foreign.key_pem)) };
    let api0 = api.clone();
    let outcome = bed.host(3).run(move || {
        runtime().block_on(async move {
            match channel(&api0, &creds).await {
                Err(e) => Err(e),
                Ok(ch) => probe("/weft.v1.Cluster/Nodes", ch, 0).await.map_err(|s| s.to_string()),
            }
        })
    });
    // rustls refuses it during the handshake (with TLS 1.3 the client learns so as the server
    // closes the connection): the call never reaches the service.
    let err = outcome.expect_err("a foreign certificate is refused");
    assert!(
        ["connection closed", "alert", "certificate", "broken pipe", "transport error"]
            .iter()
            .any(|m| err.contains(m)),
        "{err}"
    );
    // Without a certificate, a request is cut at 16 KiB before it is decoded: 8 KiB reaches the
    // token check, 64 KiB has its stream reset.
    let join = |size: usize| {
        let (api0, anonymous) = (api.clone(), Creds::anonymous(&ca));
        bed.host(3).run(move || {
            runtime().block_on(async move {
                let mut c = ClusterClient::new(channel(&api0, &anonymous).await.unwrap());
                let request =
                    pb::JoinRequest { secret: "0".repeat(32), name: "x".repeat(size), ..Default::default() };
                c.join(request).await.map(done)
            })
        })
    };
    let small = join(8 << 10).expect_err("a bad token");
    assert!(small.message().contains("not valid for this cluster"), "{small:?}");
    let big = join(64 << 10).expect_err("an oversized anonymous request is refused");
    assert!(!big.message().contains("not valid for this cluster"), "{big:?}");
    assert_eq!(revision(&cluster), before, "no refused call changed the state");

    // The remote admin CLI: an admin bundle reaches both APIs, a manager's certificate only the
    // cluster API, a worker's neither's admin verbs.
    let ls = remote_weft(&bed, 3, &api, &admin_dir, &["node", "ls"]);
    assert!(ls.status.success() && String::from_utf8_lossy(&ls.stdout).contains("h2"), "{ls:?}");
    let ps = remote_weft(&bed, 3, &api, &admin_dir, &["network", "ls"]);
    assert!(ps.status.success(), "{ps:?}");
    let manager_tls = cluster.state_dir(1).join("tls");
    assert!(remote_weft(&bed, 3, &api, &manager_tls, &["node", "ls"]).status.success());
    let agent = remote_weft(&bed, 3, &api, &manager_tls, &["network", "ls"]);
    assert_eq!(agent.status.code(), Some(125));
    assert!(String::from_utf8_lossy(&agent.stderr).contains("admin certificates"), "{agent:?}");
    // A bundle is not written over, and a worker cannot make one.
    let again = cluster.weft(0, &["cluster", "cert", "admin", "-o", admin_dir.to_str().unwrap()]);
    assert!(!again.status.success() && String::from_utf8_lossy(&again.stderr).contains("already holds"));
    let from_worker =
        cluster.weft(2, &["cluster", "cert", "admin", "-o", cluster.scratch().join("w").to_str().unwrap()]);
    assert!(!from_worker.status.success(), "{from_worker:?}");
    assert!(!cluster.scratch().join("w").exists());
}

#[test]
fn a_workers_certificate_cannot_take_over_the_cluster() {
    let bed = VirtualHosts::new(4);
    let cluster = WeftCluster::new(&bed);
    cluster.form(2, 1);
    // Something to steal: a container with an address on a manager.
    cluster.import_busybox(&[0]);
    cluster.weft_ok(0, &["network", "create", "--subnet", "10.91.0.0/16", "app"]);
    cluster.weft_ok(0, &["run", "-d", "--name", "victim", "--network", "app", "busybox", "sleep", "3600"]);
    let worker = Creds::of(&cluster.state_dir(2).join("tls"));
    let (h0, h1, me) = (node_id(&cluster, 0), node_id(&cluster, 1), node_id(&cluster, 2));
    let before = runtime().block_on(cluster.state(0)).unwrap();
    let api = cluster.api(1);
    let attempts = bed.host(3).run(move || {
        runtime().block_on(async move {
            let ch = channel(&api, &worker).await.unwrap();
            let mut c = ClusterClient::new(ch.clone());
            let apply = |kind| pb::ApplyRequest { command: Some(pb::Command { kind: Some(kind) }) };
            use pb::command::Kind;
            let mut out: Vec<(&str, Result<(), tonic::Status>)> = Vec::new();
            out.push((
                "manager token",
                c.token(pb::TokenRequest { role: pb::NodeRole::Manager as i32 }).await.map(done),
            ));
            out.push((
                "promote itself",
                c.change_role(pb::ChangeRoleRequest {
                    node: "h2".into(),
                    role: pb::NodeRole::Manager as i32,
                })
                .await
                .map(done),
            ));
            out.push(("the CA key", c.manager_kit(pb::InfoRequest {}).await.map(done)));
            out.push((
                "remove a manager",
                c.remove_node(pb::RemoveNodeRequest { node: "h0".into(), force: true }).await.map(done),
            ));
            out.push((
                "raw RemoveNode",
                c.apply(apply(Kind::RemoveNode(pb::RemoveNode { node_id: h0 }))).await.map(done),
            ));
            out.push((
                "expire a live node",
                c.apply(apply(Kind::ExpireNode(pb::ExpireNode {
                    node_id: h1,
                    now_ms: u64::MAX / 2,
                    ttl_ms: 0,
                })))
                .await
                .map(done),
            ));
            out.push((
                "mark a manager down",
                c.apply(apply(Kind::SetNodeStatus(pb::SetNodeStatus {
                    node_id: h0,
                    status: pb::NodeStatus::Down as i32,
                    now_ms: 0,
                })))
                .await
                .map(done),
            ));
            out.push((
                "raw promotion",
                c.apply(apply(Kind::SetNodeRole(pb::SetNodeRole {
                    node_id: me,
                    role: pb::NodeRole::Manager as i32,
                })))
                .await
                .map(done),
            ));
            out.push((
                "an address for a manager",
                c.apply(pb::ApplyRequest {
                    command: Some(weft_state::cmd::allocate_endpoint("app", h0, "evil", "evil", "")),
                })
                .await
                .map(done),
            ));
            out.push(("release another node's address", {
                let state = c
                    .get_state(pb::StateRequest { linearizable: true })
                    .await
                    .unwrap()
                    .into_inner()
                    .state
                    .unwrap();
                let theirs = state.endpoints.iter().find(|e| e.node_id != me).unwrap().id;
                c.apply(pb::ApplyRequest { command: Some(weft_state::cmd::release_endpoint(theirs)) })
                    .await
                    .map(done)
            }));
            out.push((
                "run -v /:/host on a manager",
                AgentClient::new(ch.clone())
                    .run(pb::RunRequest {
                        image: "busybox:latest".into(),
                        volumes: vec!["/:/host".into()],
                        command: vec!["true".into()],
                        ..Default::default()
                    })
                    .await
                    .map(|_| ()),
            ));
            out.push((
                "a heartbeat for a manager",
                c.heartbeat(pb::HeartbeatRequest { node_id: h0, revision: 0, report: None }).await.map(done),
            ));
            out.push(("a manager's beat in its own heartbeat session", {
                // Its own beat first (allowed on its own: the authorization table's probe), then
                // one for h0 in the same message, as a follower manager would relay it.
                let own = pb::HeartbeatRequest { node_id: me, revision: 0, report: None };
                let forged = pb::HeartbeatRequest { node_id: h0, revision: 0, report: None };
                let message = pb::Beats { beats: vec![own, forged], age_ms: vec![0, 0] };
                match c.heartbeats(futures::stream::iter(vec![message])).await {
                    Ok(answers) => answers.into_inner().message().await.map(done),
                    Err(e) => Err(e),
                }
            }));
            out.push((
                "the raft transport",
                RaftTransportClient::new(ch)
                    .stream(futures::stream::iter(vec![pb::RaftBatch::default()]))
                    .await
                    .map(done),
            ));
            out
        })
    });
    for (what, result) in &attempts {
        assert!(refused(result), "{what}: {result:?}");
    }
    let after = runtime().block_on(cluster.state(0)).unwrap();
    assert_eq!(after, before, "the state is unchanged");
    let nodes = cluster.nodes(0).unwrap();
    assert!(nodes.iter().all(|n| n["status"] == "Ready"), "{nodes:?}");
    assert_eq!(nodes.iter().filter(|n| n["role"] == "manager").count(), 2);
}

fn raft_message(kind: MessageType, from: u64, to: u64, term: u64) -> Message {
    let mut m = Message::default();
    m.set_msg_type(kind);
    m.from = from;
    m.to = to;
    m.term = term;
    m
}

/// `weft_raft_refused_total` by reason, and `weft_api_denied_total`, from host `i`'s metrics.
fn refusals(bed: &VirtualHosts, i: usize) -> std::collections::BTreeMap<String, u64> {
    let out = bed.host(i).output("curl", &["-sf", "http://127.0.0.1:9946/metrics"]);
    assert!(out.status.success(), "metrics of h{i}: {out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            let key = if let Some(reason) = name.strip_prefix("weft_raft_refused_total{reason=\"") {
                reason.trim_end_matches("\"}").to_string()
            } else if name == "weft_api_denied_total" {
                "api_denied".to_string()
            } else {
                return None;
            };
            Some((key, value.parse().ok()?))
        })
        .collect()
}

#[test]
fn forged_raft_messages_are_dropped_and_counted_and_every_manager_runs_on() {
    let bed = VirtualHosts::new(4);
    let mut cluster = WeftCluster::new(&bed);
    cluster.flags.extend(["--metrics".to_string(), "127.0.0.1:9946".to_string()]);
    cluster.form(3, 1);
    let ids: Vec<u64> = (0..3).map(|i| node_id(&cluster, i)).collect();
    let view = |i| {
        let v = info(&cluster, i);
        (v["term"].as_u64().unwrap(), v["commit"].as_u64().unwrap(), v["revision"].as_u64().unwrap())
    };
    let before: Vec<_> = (0..3).map(view).collect();
    // The target is a follower (a leader ignores heartbeats and snapshots from its followers);
    // the forger holds the certificate of another manager, `s`; `o` is the third.
    let leader = cluster.leader(0).expect("a leader");
    let target = (0..3).find(|i| *i != leader).unwrap();
    let forger = (0..3).find(|i| *i != target).unwrap();
    let other = (0..3).find(|i| *i != target && *i != forger).unwrap();
    let counted_before = refusals(&bed, target);
    let (h0, h1, h2) = (ids[target], ids[forger], ids[other]);
    let term = before[0].0;
    let mut forged = Vec::new();
    // A manager's certificate speaking for another manager.
    forged.push(raft_message(MessageType::MsgHeartbeat, h2, h0, term));
    // A commit index far past the end of the target's log: raft-rs would end in fatal!.
    let mut commit = raft_message(MessageType::MsgHeartbeat, h1, h0, term);
    commit.commit = 1 << 40;
    forged.push(commit);
    // A snapshot whose data is no weft state: it would be persisted before being decoded.
    let mut snapshot = raft_message(MessageType::MsgSnapshot, h1, h0, term);
    let mut data = Snapshot::default();
    data.mut_metadata().index = 1 << 20;
    data.mut_metadata().term = term;
    data.mut_metadata().set_conf_state(ConfState { voters: ids.clone(), ..Default::default() });
    data.set_data(b"certainly not a weft state".to_vec().into());
    snapshot.set_snapshot(data);
    forged.push(snapshot);
    // A local-only message type, and one for another node.
    forged.push(raft_message(MessageType::MsgHup, h1, h0, term));
    forged.push(raft_message(MessageType::MsgHeartbeat, h1, h2, term));
    // Entries that do not follow the message's index.
    let mut append = raft_message(MessageType::MsgAppend, h1, h0, term);
    append.index = 3;
    append.log_term = term;
    append.entries = vec![Entry { index: 9, term, ..Default::default() }].into();
    forged.push(append);
    let mut frame: Vec<Vec<u8>> = forged.iter().map(|m| m.write_to_bytes().unwrap()).collect();
    frame.push(b"\xff\xfe not protobuf".to_vec());
    let manager = Creds::of(&cluster.state_dir(forger).join("tls"));
    let worker = Creds::of(&cluster.state_dir(3).join("tls"));
    let api = cluster.api(target);
    let (by_worker, by_manager) = bed.host(3).run(move || {
        runtime().block_on(async move {
            let batch = pb::RaftBatch { messages: frame };
            let send = |creds: Creds, batch: pb::RaftBatch| {
                let api = api.clone();
                async move {
                    let ch = channel(&api, &creds).await.unwrap();
                    RaftTransportClient::new(ch).stream(futures::stream::iter(vec![batch])).await.map(done)
                }
            };
            (send(worker, batch.clone()).await, send(manager, batch).await)
        })
    });
    assert!(refused(&by_worker), "a worker's certificate has no raft transport: {by_worker:?}");
    assert!(by_manager.is_ok(), "the stream itself is a manager's: {by_manager:?}");
    // Give raft time to have done whatever it would do (an election takes well under a second).
    std::thread::sleep(Duration::from_secs(2));
    for (i, was) in before.iter().enumerate() {
        assert!(cluster.nodes(i).is_ok(), "h{i} still serves:\n{}", cluster.log_tail(i));
        assert_eq!(view(i), *was, "h{i}: term, commit and revision unchanged");
    }
    let counted = refusals(&bed, target);
    let moved = |reason: &str| {
        counted.get(reason).copied().unwrap_or(0) > counted_before.get(reason).copied().unwrap_or(0)
    };
    for reason in
        ["wrong_sender", "out_of_range", "bad_snapshot", "local_only", "not_for_me", "garbled", "api_denied"]
    {
        assert!(moved(reason), "{reason} did not move: {counted_before:?} -> {counted:?}");
    }
    // The cluster still writes.
    cluster.weft_ok(1, &["network", "create", "--subnet", "10.92.0.0/16", "after"]);
}

/// `Nodes` with `creds` from host `from`'s namespace: what a certificate still gets.
fn nodes_with(bed: &VirtualHosts, from: usize, api: &str, creds: &Creds) -> Result<(), String> {
    let (api, creds) = (api.to_string(), creds.clone());
    bed.host(from).run(move || {
        runtime().block_on(async move {
            let ch = channel(&api, &creds).await?;
            probe("/weft.v1.Cluster/Nodes", ch, 0)
                .await
                .map_err(|s| format!("{:?}: {}", s.code(), s.message()))
        })
    })
}

#[test]
fn removal_revokes_at_once_and_a_rotated_token_refuses_the_old_one() {
    let bed = VirtualHosts::new(4);
    let cluster = WeftCluster::new(&bed);
    cluster.form(1, 2);
    let api = cluster.api(0);
    let removed = Creds::of(&cluster.state_dir(2).join("tls"));
    nodes_with(&bed, 3, &api, &removed).expect("h2's certificate works while h2 is a node");
    // A Watch opened with h2's certificate before the removal.
    let (tx, rx) = std::sync::mpsc::channel::<(Instant, Option<tonic::Status>)>();
    let watcher = {
        let (api, creds, netns) = (api.clone(), removed.clone(), bed.host(3).netns().clone());
        std::thread::spawn(move || {
            netns.enter().unwrap();
            runtime().block_on(async move {
                let mut c = ClusterClient::new(channel(&api, &creds).await.unwrap());
                let mut stream = c.watch(pb::WatchRequest { from_revision: 0 }).await.unwrap().into_inner();
                stream.message().await.unwrap().expect("the first answer");
                let _ = tx.send((Instant::now(), None));
                loop {
                    match stream.message().await {
                        Ok(Some(_)) => {}
                        Ok(None) => break tx.send((Instant::now(), None)).unwrap(),
                        Err(s) => break tx.send((Instant::now(), Some(s))).unwrap(),
                    }
                }
            })
        })
    };
    rx.recv_timeout(Duration::from_secs(10)).expect("the watch started");
    cluster.weft_ok(0, &["node", "rm", "--force", "h2"]);
    let removed_at = Instant::now();
    cluster.eventually(
        "h2's certificate is refused",
        Duration::from_secs(1),
        || matches!(nodes_with(&bed, 3, &api, &removed), Err(e) if e.contains("revoked")),
    );
    let (ended_at, status) = rx.recv_timeout(Duration::from_secs(2)).expect("the open watch was cut");
    watcher.join().unwrap();
    assert!(
        ended_at.duration_since(removed_at) < Duration::from_secs(1),
        "cut after {:?}",
        ended_at - removed_at
    );
    let status = status.expect("the watch ends with an error");
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    assert!(status.message().contains("revoked"), "{status:?}");
    // The other worker's certificate still works.
    nodes_with(&bed, 3, &api, &Creds::of(&cluster.state_dir(1).join("tls"))).unwrap();

    // A rotated worker token: the old one is refused, the new one joins; the manager token stays.
    let old = cluster.weft_ok(0, &["cluster", "token", "worker"]).trim().to_string();
    let manager_token = cluster.weft_ok(0, &["cluster", "token", "manager"]);
    let new = cluster.weft_ok(0, &["cluster", "token", "rotate", "worker"]).trim().to_string();
    assert_ne!(old, new);
    assert_eq!(cluster.weft_ok(0, &["cluster", "token", "worker"]).trim(), new);
    assert_eq!(cluster.weft_ok(0, &["cluster", "token", "manager"]), manager_token);
    let refused = cluster.run_to_exit(3, &["--join", &api, "--token", &old]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("not valid for this cluster"), "{refused:?}");
    let bad = cluster.weft(0, &["cluster", "token", "rotate"]);
    assert!(!bad.status.success() && String::from_utf8_lossy(&bad.stderr).contains("needs the role"));
    cluster.start(3, &["--join", &api, "--token", &new]);
    cluster.eventually("h3 joined with the new token", Duration::from_secs(15), || {
        cluster.nodes(0).is_ok_and(|n| n.iter().any(|n| n["name"] == "h3" && n["status"] == "Ready"))
    });
}

#[test]
fn certificates_are_renewed_in_place_before_they_expire() {
    let bed = VirtualHosts::new(4);
    let mut cluster = WeftCluster::new(&bed);
    cluster.flags.extend(["--cert-ttl".to_string(), "20s".to_string()]);
    cluster.form(2, 1);
    let identity = |i: usize| {
        let pem = std::fs::read_to_string(cluster.state_dir(i).join("tls/node.pem")).unwrap();
        weft_agent::pki::CertIdentity::from_pem(&pem).unwrap()
    };
    let first: Vec<_> = (0..3).map(identity).collect();
    assert!(first.iter().all(|c| c.not_after - c.not_before <= 20 + 300), "{first:?}");
    let expired = Creds::of(&cluster.state_dir(2).join("tls"));
    cluster.eventually("every node renewed its certificate", Duration::from_secs(40), || {
        (0..3).all(|i| identity(i).serial != first[i].serial)
    });
    assert_eq!(identity(1).role, CertRole::Manager);
    assert_eq!(identity(2).role, CertRole::Worker);
    // Past the first certificates' end: the nodes are still in the cluster, on connections made
    // with the renewed certificates (a manager's listener serves its new one).
    let end = first.iter().map(|c| c.not_after).max().unwrap();
    let now = || std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    while now() <= end + 1 {
        std::thread::sleep(Duration::from_millis(200));
    }
    let err = nodes_with(&bed, 3, &cluster.api(1), &expired).expect_err("an expired certificate is refused");
    assert!(!err.is_empty());
    let renewed = Creds::of(&cluster.state_dir(2).join("tls"));
    for manager in [0, 1] {
        nodes_with(&bed, 3, &cluster.api(manager), &renewed)
            .unwrap_or_else(|e| panic!("renewed worker certificate at h{manager}: {e}"));
    }
    cluster.eventually("every node Ready", Duration::from_secs(10), || {
        cluster.nodes(0).is_ok_and(|n| n.len() == 3 && n.iter().all(|n| n["status"] == "Ready"))
    });
    cluster.weft_ok(1, &["network", "create", "--subnet", "10.93.0.0/16", "renewed"]);
    assert!(cluster.weft_ok(2, &["network", "ls"]).contains("renewed"));
}

#[test]
fn a_worker_watching_a_follower_stays_ready_and_returns_after_its_lease_expired() {
    let bed = VirtualHosts::new(4);
    let mut cluster = WeftCluster::new(&bed);
    // Down after 4 s (not the beds' 2 s): on a loaded 2-core machine a heartbeat can be late by
    // a second or two; with the old rule every forwarded heartbeat failed, so any window of
    // twice this still catches it.
    cluster.flags = ["--down-after", "4s", "--lease-ttl", "3s"].map(String::from).to_vec();
    cluster.form(3, 0);
    let leader = cluster.leader(0).expect("a leader");
    let follower = (0..3).find(|i| *i != leader).unwrap();
    let token = cluster.weft_ok(0, &["cluster", "token", "worker"]).trim().to_string();
    cluster.start(3, &["--join", &cluster.api(follower), "--token", &token]);
    let ready = |cluster: &WeftCluster<'_>| {
        cluster.nodes(leader).is_ok_and(|n| n.iter().any(|n| n["name"] == "h3" && n["status"] == "Ready"))
    };
    cluster.eventually("h3 Ready", Duration::from_secs(15), || ready(&cluster));
    // Its heartbeats reach the leader through the follower, for two Down periods.
    for _ in 0..40 {
        std::thread::sleep(Duration::from_millis(200));
        assert!(ready(&cluster), "h3 fell Down while watching h{follower}:\n{}", cluster.log_tail(follower));
    }
    assert_eq!(info(&cluster, 3)["upstream"], cluster.api(follower), "it never had to move");
    // Stopped until its lease is gone, it is Ready again within seconds of its restart.
    cluster.kill(3);
    cluster.eventually("h3 Down", Duration::from_secs(10), || {
        cluster.nodes(leader).is_ok_and(|n| n.iter().any(|n| n["name"] == "h3" && n["status"] == "Down"))
    });
    std::thread::sleep(Duration::from_secs(4));
    cluster.restart(3);
    cluster.eventually("h3 Ready again", Duration::from_secs(10), || ready(&cluster));
}

#[test]
fn a_running_node_removed_with_force_takes_its_containers_off_the_network_before_it_exits() {
    let bed = VirtualHosts::new(2);
    let cluster = WeftCluster::new(&bed);
    cluster.form(1, 1);
    cluster.import_busybox(&[1]);
    cluster.weft_ok(0, &["network", "create", "--driver", "overlay", "--subnet", "10.97.0.0/24", "app"]);
    cluster.weft_ok(1, &["run", "-d", "--name", "c", "--network", "app", "busybox", "sleep", "3600"]);
    let c: serde_json::Value = serde_json::from_str(&cluster.weft_ok(1, &["inspect", "c"])).unwrap();
    let pid = c[0]["pid"].as_u64().unwrap().to_string();
    let links = || {
        let out = std::process::Command::new("nsenter")
            .args(["-t", &pid, "-n", "ip", "-o", "link"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(links().contains("eth0"), "{}", links());
    cluster.weft_ok(0, &["node", "rm", "--force", "h1"]);
    // Its addresses are the cluster's again: the container keeps running without its interface.
    cluster.eventually("c lost its interface", Duration::from_secs(10), || !links().contains("eth0"));
    cluster.eventually("h1's weftd logged its removal", Duration::from_secs(10), || {
        cluster.log_tail(1).contains("removed from the cluster")
    });
    assert!(std::path::Path::new(&format!("/proc/{pid}")).exists(), "the container itself still runs");
}
