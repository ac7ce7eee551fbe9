//! weftd's control-plane life: become a cluster member (bootstrap, join, or resume from the state
//! dir), then run as a manager (raft node, TLS listener, leader duties) or a worker (Watch, local
//! API), switching when the cluster promotes or demotes this node, until shutdown.

use std::collections::BTreeSet;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use tokio::sync::watch;
use weft_proto::v1 as pb;
use weft_raft::EngineStorage;
use weft_state::{Mirror, Role, cmd};

use crate::agent_api::AgentService;
use crate::authz::AuthzLayer;
use crate::host::Host;
use crate::identity::{ManagerKeys, NodeFile, StateDir};
use crate::liveness::{Liveness, LivenessConfig};
use crate::membership::{Members, next_change};
use crate::peers::Peers;
use crate::pki::{self, CertRole, ClusterCa, NodeCert, Token};
use crate::reason;
use crate::service::{ClusterService, Core, ManagerCore, RoleCore, Upstream, WorkerCore, now_ms};
use crate::supervisor::Supervisor;
use crate::telemetry::Telemetry;
use crate::tls::{self, NodeTls, ServerCert};
use crate::transport::{GrpcTransport, RaftReceiver};

/// The daemon's control-plane settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where identity, certificates and the raft log live.
    pub state_dir: PathBuf,
    /// The local admin socket.
    pub socket: PathBuf,
    /// The cluster API's listen address (managers).
    pub listen: SocketAddr,
    /// Underlay address (VXLAN, and the host part of the advertised API address).
    pub advertise: Option<IpAddr>,
    /// Start a new cluster.
    pub bootstrap: bool,
    /// A manager to join through.
    pub join: Option<String>,
    /// The join token.
    pub token: Option<String>,
    /// Join as a manager.
    pub manager: bool,
    /// This node's name.
    pub name: Option<String>,
    /// A node Down this long loses its addresses.
    pub lease_ttl: Duration,
    /// A node silent this long is Down.
    pub down_after: Duration,
    /// How often agents heartbeat.
    pub heartbeat: Duration,
    /// Where to serve Prometheus `/metrics` (off when `None`).
    pub metrics: Option<SocketAddr>,
    /// How long the certificates this node issues as a manager are valid.
    pub cert_ttl: Duration,
    /// Where to serve the Docker Engine API (off when `None`).
    pub docker_socket: Option<PathBuf>,
}

impl Config {
    /// Defaults for everything but the state dir.
    pub fn new(state_dir: PathBuf) -> Config {
        Config {
            state_dir,
            socket: PathBuf::from("/run/weft/weft.sock"),
            listen: SocketAddr::from(([0, 0, 0, 0], 7946)),
            advertise: None,
            bootstrap: false,
            join: None,
            token: None,
            manager: false,
            name: None,
            lease_ttl: Duration::from_secs(24 * 3600),
            down_after: Duration::from_secs(5),
            docker_socket: None,
            heartbeat: Duration::from_secs(1),
            metrics: None,
            cert_ttl: pki::DEFAULT_CERT_TTL,
        }
    }

    fn underlay(&self) -> Result<IpAddr> {
        if let Some(a) = self.advertise {
            return Ok(a);
        }
        if !self.listen.ip().is_unspecified() {
            return Ok(self.listen.ip());
        }
        bail!("--advertise ADDR is required: the underlay address other hosts reach this one at")
    }

    fn api_addr(&self) -> Result<String> {
        Ok(SocketAddr::new(self.underlay()?, self.listen.port()).to_string())
    }

    fn node_name(&self) -> Result<String> {
        if let Some(n) = &self.name {
            return Ok(n.clone());
        }
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").context("read the host name")?;
        Ok(host.trim().to_string())
    }
}

/// How a role's run ended.
enum Exit {
    Shutdown,
    Demoted,
    Promoted,
}

/// Runs the daemon until `shutdown` completes. Calls `ready` once the API is being served.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
    ready: impl Fn() + Send + Sync,
) -> Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    if config.bootstrap && config.join.is_some() {
        bail!("--bootstrap and --join exclude each other: bootstrap the first manager, join the others");
    }
    let dir = StateDir::new(&config.state_dir);
    std::fs::create_dir_all(dir.root()).with_context(|| format!("create {}", dir.root().display()))?;
    // Images (with their setuid binaries), containers, raft and tls: nothing for other users.
    std::fs::set_permissions(dir.root(), std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .with_context(|| format!("make {} private (0700)", dir.root().display()))?;
    let mut fresh_bootstrap = false;
    let mut node = match dir.node()? {
        Some(node) => {
            if config.bootstrap || config.join.is_some() {
                // A restart (or a reboot) of a node whose configuration still says how it first
                // came in: nothing to warn about.
                tracing::info!(
                    id = node.id,
                    "resuming from the state dir; bootstrap/join settings apply to a first start only"
                );
            }
            node
        }
        None if config.bootstrap => {
            fresh_bootstrap = true;
            bootstrap(&config, &dir)?
        }
        None if config.join.is_some() => join(&config, &dir).await?,
        None => bail!(
            "{} is not part of a cluster: start with --bootstrap (first manager) or --join ADDR --token TOKEN",
            dir.root().display()
        ),
    };
    let shutdown = shutdown_watch(shutdown);
    let shim = std::env::current_exe().context("find weftd's own executable (the container monitor)")?;
    let host = Host::new(node.id, dir.root(), shim)?;
    let supervisor = Supervisor::new();
    let telemetry = Arc::new(Telemetry::default());
    let local = LocalServices::start(
        &config,
        host.clone(),
        node.id,
        shutdown.clone(),
        &supervisor,
        telemetry.clone(),
    )
    .await?;
    let ready = || {
        if !local.ready.swap(true, std::sync::atomic::Ordering::SeqCst) {
            ready();
        }
    };
    loop {
        let agent = Agent {
            config: &config,
            dir: &dir,
            me: &node,
            host: &host,
            supervisor: &supervisor,
            telemetry: &telemetry,
        };
        let role = async {
            if node.manager {
                run_manager(&agent, fresh_bootstrap, shutdown.clone(), &ready).await
            } else {
                run_worker(&agent, shutdown.clone(), &ready).await
            }
        };
        // A background task that stops on its own takes weftd down (systemd restarts it): a
        // weftd without its reconciler, DNS or raft driver must not look healthy.
        let exit = tokio::select! {
            exit = role => exit?,
            failure = supervisor.failed() => bail!("{failure}"),
        };
        host.set_core(None);
        fresh_bootstrap = false;
        match exit {
            Exit::Shutdown => {
                let late = supervisor.join(Duration::from_secs(5)).await;
                if !late.is_empty() {
                    tracing::warn!(tasks = ?late, "background tasks still running at exit");
                }
                return Ok(());
            }
            Exit::Demoted => {
                tracing::info!("demoted to worker");
                let _ = std::fs::remove_dir_all(dir.raft_dir());
                node.manager = false;
            }
            Exit::Promoted => {
                tracing::info!("promoted to manager");
                let _ = std::fs::remove_dir_all(dir.raft_dir());
                node.manager = true;
            }
        }
        dir.save_node(&node)?;
    }
}

/// Shutdown as a cloneable watch.
fn shutdown_watch(shutdown: impl Future<Output = ()> + Send + 'static) -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = tx.send(true);
    });
    rx
}

fn bootstrap(config: &Config, dir: &StateDir) -> Result<NodeFile> {
    config.api_addr()?;
    let ca = ClusterCa::generate()?;
    let id = pki::random_id()?;
    let name = config.node_name()?;
    weft_state::names::dns_label("node", &name).map_err(|e| anyhow!("--name: {e}"))?;
    let cert = ca.issue_node(id, CertRole::Manager, config.cert_ttl)?;
    dir.save_tls(&NodeTls { ca_pem: ca.cert_pem.clone(), cert })?;
    dir.save_manager_keys(&ManagerKeys { ca })?;
    let node = NodeFile { id, name, manager: true };
    dir.save_node(&node)?;
    Ok(node)
}

/// How long a joining node waits out a cluster that is electing a leader or not listening yet.
const JOIN_PATIENCE: Duration = Duration::from_secs(60);

async fn join(config: &Config, dir: &StateDir) -> Result<NodeFile> {
    let addr = config.join.clone().unwrap_or_default();
    let token = Token::parse(config.token.as_deref().ok_or_else(|| anyhow!("--join needs --token TOKEN"))?)?;
    let name = config.node_name()?;
    weft_state::names::dns_label("node", &name).map_err(|e| anyhow!("--name: {e}"))?;
    let role = if config.manager { pb::NodeRole::Manager } else { pb::NodeRole::Worker };
    let request = pb::JoinRequest {
        secret: token.secret.clone(),
        name: name.clone(),
        underlay_addr: config.underlay()?.to_string(),
        // Workers too: a worker promoted later is reached by its raft peers at this address.
        api_addr: config.api_addr()?,
        role: role as i32,
        underlay_prefix_len: underlay_prefix_len(config.underlay()?).await,
        underlay_mtu: underlay_mtu(config.underlay()?).await,
    };
    // A cluster that is electing a leader (just bootstrapped, or a manager lost) refuses for a
    // moment with "no quorum": that is waited out, as is a manager not listening yet. Anything
    // else (a wrong token, a name in use) is final.
    let deadline = tokio::time::Instant::now() + JOIN_PATIENCE;
    let mut pause = Duration::from_millis(250);
    let response = loop {
        let attempt = async {
            // Not listening (yet) is worth waiting for; a TLS refusal (the wrong CA) is not.
            tokio::net::TcpStream::connect(&addr)
                .await
                .map_err(|e| (true, anyhow!("cannot reach manager {addr}: {e}")))?;
            let channel = tls::join_channel(&addr, &token.ca_fingerprint)
                .await
                .map_err(|e| (false, anyhow!("cannot reach manager {addr}: {e}")))?;
            let mut client = pb::cluster_client::ClusterClient::new(channel);
            client.join(request.clone()).await.map(tonic::Response::into_inner).map_err(|s| {
                let transient =
                    s.code() == tonic::Code::Unavailable || reason::of(&s) == pb::Reason::NoQuorum;
                (transient, anyhow!("join refused by {addr}: {}", s.message()))
            })
        };
        match attempt.await {
            Ok(response) => break response,
            Err((true, e)) if tokio::time::Instant::now() + pause < deadline => {
                tracing::warn!(error = %e, retry_in = ?pause, "joining the cluster: trying again");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(5));
            }
            Err((_, e)) => return Err(e),
        }
    };
    save_kit(dir, &response)?;
    let node = NodeFile { id: response.node_id, name, manager: config.manager };
    dir.save_node(&node)?;
    Ok(node)
}

fn save_kit(dir: &StateDir, response: &pb::JoinResponse) -> Result<()> {
    dir.save_tls(&NodeTls {
        ca_pem: response.ca_cert_pem.clone(),
        cert: NodeCert { chain_pem: response.cert_pem.clone(), key_pem: response.key_pem.clone() },
    })?;
    if !response.ca_key_pem.is_empty() {
        dir.save_manager_keys(&ManagerKeys {
            ca: ClusterCa { cert_pem: response.ca_cert_pem.clone(), key_pem: response.ca_key_pem.clone() },
        })?;
    }
    let managers: Vec<(u64, String)> = response
        .managers
        .iter()
        .filter(|m| !m.api_addr.is_empty())
        .map(|m| (m.id, m.api_addr.clone()))
        .collect();
    if !managers.is_empty() {
        dir.save_managers(&managers)?;
    }
    Ok(())
}

/// Binds the local admin socket (root only, like docker.sock).
fn bind_socket(path: &std::path::Path) -> Result<tokio::net::UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).with_context(|| format!("create {}", parent.display()))?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            bail!("{} is in use: another weftd is running with this socket", path.display());
        }
        std::fs::remove_file(path).with_context(|| format!("remove stale {}", path.display()))?;
    }
    let listener =
        tokio::net::UnixListener::bind(path).with_context(|| format!("bind {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

fn serve_local(
    core: Arc<Core>,
    host: Arc<Host>,
    listener: tokio::net::UnixListener,
    stop: watch::Receiver<bool>,
    supervisor: &Supervisor,
) -> crate::supervisor::Supervised {
    let denied = core.telemetry.api_denied.clone();
    let service = pb::cluster_server::ClusterServer::new(ClusterService::new(core))
        .max_decoding_message_size(CLUSTER_MESSAGE_LIMIT);
    let agent = pb::agent_server::AgentServer::new(AgentService::new(host))
        .max_decoding_message_size(AGENT_MESSAGE_LIMIT);
    let mut until = stop.clone();
    supervisor.spawn("local API server", stop, async move {
        let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
        tonic::transport::Server::builder()
            .layer(AuthzLayer::local(denied))
            .add_service(service)
            .add_service(agent)
            .serve_with_incoming_shutdown(incoming, async move {
                let _ = until.wait_for(|s| *s).await;
            })
            .await
    })
}

/// The largest cluster API message decoded (commands, node lists, state snapshots).
const CLUSTER_MESSAGE_LIMIT: usize = 16 << 20;

/// The largest Agent API message decoded (image layers arrive in chunks of this at most).
const AGENT_MESSAGE_LIMIT: usize = 64 << 20;

/// The largest raft transport frame decoded (a batch of entries, or a snapshot of the state).
const RAFT_MESSAGE_LIMIT: usize = 64 << 20;

/// What both roles run with: this agent's configuration, state dir, node, host and supervisor.
struct Agent<'a> {
    config: &'a Config,
    dir: &'a StateDir,
    me: &'a NodeFile,
    host: &'a Arc<Host>,
    supervisor: &'a Supervisor,
    telemetry: &'a Arc<Telemetry>,
}

async fn run_manager(
    agent: &Agent<'_>,
    fresh_bootstrap: bool,
    shutdown: watch::Receiver<bool>,
    ready: &(impl Fn() + Send + Sync),
) -> Result<Exit> {
    let Agent { config, dir, me, host, supervisor, telemetry } = *agent;
    let node_tls = dir.tls()?;
    let keys = dir.manager_keys()?;
    let ca_fingerprint = keys.ca.fingerprint()?;
    let ca = keys.ca.clone();
    let peers = Arc::new(Peers::new(node_tls.clone()));
    let storage = EngineStorage::open(&dir.raft_dir())?;
    let transport = GrpcTransport::new(peers.clone());
    for (id, addr) in dir.managers() {
        transport.add_seed(id, addr);
    }
    let initial: Vec<u64> = if fresh_bootstrap { vec![me.id] } else { vec![] };
    let node = weft_raft::start(me.id, &initial, storage, Arc::new(transport.clone()))?;
    transport.attach(node.clone());
    let liveness_config = LivenessConfig { down_after: config.down_after, lease_ttl: config.lease_ttl };
    // The role's stop signal: background tasks and the long-lived streams this manager serves
    // (Watch, raft) end with it, so a demoted manager's server can finish.
    let (stop_tx, stop_rx) = watch::channel(false);
    let core = Arc::new(Core {
        id: me.id,
        name: me.name.clone(),
        api_addr: config.api_addr()?,
        ca_fingerprint,
        peers: peers.clone(),
        telemetry: telemetry.clone(),
        role: RoleCore::Manager(ManagerCore {
            node: node.clone(),
            keys,
            stopping: stop_rx.clone(),
            cert_ttl: config.cert_ttl,
            liveness: Mutex::new(Liveness::new(Instant::now())),
            liveness_config,
            reports: crate::why::ReportBoard::default(),
            relay: crate::beats::Relay::default(),
        }),
    });
    telemetry.set_raft_refusals(node.refusals().clone());
    let server_cert = Arc::new(ServerCert::new(&node_tls.cert)?);
    let tls_server = {
        let cluster = pb::cluster_server::ClusterServer::new(ClusterService::new(core.clone()))
            .max_decoding_message_size(CLUSTER_MESSAGE_LIMIT);
        let raft = pb::raft_transport_server::RaftTransportServer::new(RaftReceiver::new(
            node.clone(),
            stop_rx.clone(),
        ))
        .max_decoding_message_size(RAFT_MESSAGE_LIMIT);
        let agent = pb::agent_server::AgentServer::new(AgentService::new(host.clone()))
            .max_decoding_message_size(AGENT_MESSAGE_LIMIT);
        let mut stop = stop_rx.clone();
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("listen on {}", config.listen))?;
        let rustls =
            tls::server_config(&node_tls.ca_pem, server_cert.clone()).context("TLS configuration")?;
        let incoming = crate::listener::incoming(listener, Arc::new(rustls));
        let state_of = node.clone();
        let server = tonic::transport::Server::builder()
            .layer(AuthzLayer::tls(move || state_of.state(), telemetry.api_denied.clone()))
            .add_service(cluster)
            .add_service(raft)
            .add_service(agent);
        supervisor.spawn("cluster API server (TLS)", stop_rx.clone(), async move {
            server
                .serve_with_incoming_shutdown(incoming, async move {
                    let _ = stop.wait_for(|s| *s).await;
                })
                .await
        })
    };
    let renewal = supervisor.spawn(
        "certificate renewal",
        stop_rx.clone(),
        crate::renewal::run(
            dir.clone(),
            peers.clone(),
            Some(server_cert),
            crate::renewal::Issuer::Own { ca, id: me.id, ttl: config.cert_ttl },
        ),
    );
    supervisor.watch_thread("raft driver", stop_rx.clone(), node.ended());
    let local =
        serve_local(core.clone(), host.clone(), bind_socket(&config.socket)?, stop_rx.clone(), supervisor);
    host.set_core(Some(core.clone()));
    let feed = {
        let (host, mut states) = (host.clone(), node.watch_state());
        supervisor.spawn("state feed", stop_rx.clone(), async move {
            loop {
                let state = states.borrow_and_update().clone();
                host.publish_state(state);
                if states.changed().await.is_err() {
                    return;
                }
            }
        })
    };
    tracing::info!(id = me.id, name = %me.name, listen = %config.listen, "manager serving");
    ready();

    if fresh_bootstrap {
        register_self(&core, config, me).await?;
    }
    let duties = supervisor.spawn("leader duties", stop_rx.clone(), leader_duties(core.clone(), me.id));
    let beats = supervisor.spawn(
        "heartbeats",
        stop_rx.clone(),
        crate::heartbeat::run(core.clone(), host.clone(), me.id, config.heartbeat),
    );
    let exit = role_watch_manager(&node, me.id, dir, host, shutdown).await;
    let _ = stop_tx.send(true);
    feed.abort();
    duties.abort();
    beats.abort();
    renewal.abort();
    node.stop();
    tls_server.finished().await;
    local.finished().await;
    let _ = std::fs::remove_file(&config.socket);
    exit
}

/// The prefix length of the subnet of the interface holding `underlay` (0 when no local
/// interface has it: behind NAT, or not up yet), which the cluster keeps every network out of.
async fn underlay_prefix_len(underlay: IpAddr) -> u32 {
    let found = async {
        let netlink = weft_net::Netlink::connect().ok()?;
        let addresses = netlink.addresses(None).await.ok()?;
        addresses.into_iter().find(|a| a.cidr.addr() == underlay).map(|a| u32::from(a.cidr.prefix_len()))
    };
    found.await.unwrap_or(0)
}

/// The MTU of the link holding `underlay` (0 when no local interface has it).
async fn underlay_mtu(underlay: IpAddr) -> u32 {
    match weft_net::Netlink::connect() {
        Ok(netlink) => netlink.underlay_mtu(underlay).await.unwrap_or(0),
        Err(_) => 0,
    }
}

async fn register_self(core: &Core, config: &Config, me: &NodeFile) -> Result<()> {
    let RoleCore::Manager(m) = &core.role else { unreachable!("manager") };
    let underlay = config.underlay()?;
    let command = cmd::with_underlay_mtu(
        cmd::register_agent(
            me.id,
            &me.name,
            &underlay.to_string(),
            underlay_prefix_len(underlay).await,
            &config.api_addr()?,
            Role::Manager,
            now_ms(),
        ),
        underlay_mtu(underlay).await,
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if m.node.state().node(me.id).is_some() {
            return Ok(());
        }
        match core.propose(&command).await {
            Ok(_) => return Ok(()),
            Err(e) if Instant::now() > deadline => bail!("registering this node failed: {}", e.message()),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Watches the state for this node's demotion or removal; returns on shutdown too.
async fn role_watch_manager(
    node: &weft_raft::NodeHandle,
    id: u64,
    dir: &StateDir,
    host: &Host,
    mut shutdown: watch::Receiver<bool>,
) -> Result<Exit> {
    let mut registered = false;
    let mut recorded = dir.managers();
    let mut tick = tokio::time::interval(Duration::from_millis(300));
    loop {
        tokio::select! {
            _ = shutdown.wait_for(|s| *s) => return Ok(Exit::Shutdown),
            _ = tick.tick() => {}
        }
        let state = node.state();
        let status = node.status();
        let managers: Vec<(u64, String)> = state
            .nodes()
            .filter(|n| n.role == Role::Manager && !n.api_addr.is_empty())
            .map(|n| (n.id, n.api_addr.clone()))
            .collect();
        dir.record_managers(&managers, &mut recorded);
        match state.node(id) {
            Some(n) => {
                registered = true;
                let member = status.voters.contains(&id) || status.learners.contains(&id);
                if n.role == Role::Worker && !member && !status.voters.is_empty() {
                    return Ok(Exit::Demoted);
                }
            }
            None if registered => {
                host.revoke_all_addresses(&state).await;
                bail!("this node was removed from the cluster; clear {} to join again", dir.root().display())
            }
            None => {}
        }
    }
}

/// While this manager leads: liveness transitions and membership changes.
/// Logs a liveness transition the leader committed: what operators look for when a host went
/// away (Down), came back, or lost its addresses after the lease TTL.
fn log_liveness(state: &weft_state::State, command: &pb::Command) {
    let name = |id: u64| state.node(id).map_or_else(|| format!("{id:016x}"), |n| n.name.clone());
    match &command.kind {
        Some(pb::command::Kind::SetNodeStatus(s)) if s.status == pb::NodeStatus::Down as i32 => {
            tracing::warn!(node = %name(s.node_id), "node Down: no heartbeat within --down-after");
        }
        Some(pb::command::Kind::SetNodeStatus(s)) => {
            tracing::info!(node = %name(s.node_id), "node Ready again");
        }
        Some(pb::command::Kind::ExpireNode(e)) => {
            let blocks: usize = state
                .networks()
                .map(|n| state.blocks(n.id).iter().filter(|b| b.node == e.node_id).count())
                .sum();
            tracing::warn!(
                node = %name(e.node_id), blocks, ttl_ms = e.ttl_ms,
                "node's lease expired: its blocks and endpoints are released and its routes leave every host"
            );
        }
        _ => {}
    }
}

async fn leader_duties(core: Arc<Core>, me: u64) {
    let RoleCore::Manager(m) = &core.role else { return };
    let mut leading = false;
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    loop {
        tick.tick().await;
        let status = m.node.status();
        if status.leader != me {
            leading = false;
            continue;
        }
        if !leading {
            *m.liveness.lock().unwrap() = Liveness::new(Instant::now());
            leading = true;
        }
        let state = m.node.state();
        let commands =
            m.liveness.lock().unwrap().decide(&state, Instant::now(), now_ms(), &m.liveness_config);
        for c in commands {
            match core.propose(&c).await {
                Ok(_) => log_liveness(&state, &c),
                Err(e) => tracing::warn!(error = %e.message(), "liveness update failed"),
            }
        }
        if status.conf_pending {
            continue;
        }
        let managers: BTreeSet<u64> =
            state.nodes().filter(|n| n.role == Role::Manager).map(|n| n.id).collect();
        if state.node(me).is_none() && managers.is_empty() {
            continue; // bootstrapping: not registered yet
        }
        if !managers.contains(&me) {
            if let Some(to) = status.voters.iter().find(|v| managers.contains(v)) {
                m.node.transfer_leader(*to);
            }
            continue;
        }
        let members = Members {
            leader: me,
            voters: status.voters.iter().copied().collect(),
            learners: status.learners.iter().copied().collect(),
            caught_up: status
                .learners
                .iter()
                .filter(|l| status.matched.get(l).is_some_and(|m| *m > 0 && m + 64 >= status.last_index))
                .copied()
                .collect(),
        };
        if let Some(change) = next_change(&managers, &members) {
            tracing::info!(?change, "membership change");
            match tokio::time::timeout(Duration::from_secs(5), m.node.change_membership(change)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "membership change failed"),
                Err(_) => tracing::warn!("membership change timed out"),
            }
        }
    }
}

async fn run_worker(
    agent: &Agent<'_>,
    mut shutdown: watch::Receiver<bool>,
    ready: &(impl Fn() + Send + Sync),
) -> Result<Exit> {
    let Agent { config, dir, me, host, supervisor, telemetry } = *agent;
    let node_tls = dir.tls()?;
    let ca_fingerprint = pki::fingerprint(&pki::first_der(&node_tls.ca_pem)?);
    let peers = Arc::new(Peers::new(node_tls));
    let mut recorded = dir.managers();
    let managers: Vec<String> = recorded.iter().map(|(_, a)| a.clone()).collect();
    if managers.is_empty() {
        bail!("this worker knows no manager: {} has no managers.json", dir.root().display());
    }
    let upstream = Arc::new(Upstream::new(managers));
    let (mirror_tx, mirror_rx) = watch::channel(Arc::new(Mirror::default()));
    let (stop_tx, stop_rx) = watch::channel(false);
    let watcher = supervisor.spawn(
        "watch",
        stop_rx.clone(),
        crate::watch::run_watch(peers.clone(), upstream.clone(), mirror_tx, |_| {}),
    );
    let core = Arc::new(Core {
        id: me.id,
        name: me.name.clone(),
        api_addr: String::new(),
        ca_fingerprint,
        peers: peers.clone(),
        role: RoleCore::Worker(WorkerCore { upstream: upstream.clone(), mirror: mirror_rx.clone() }),
        telemetry: telemetry.clone(),
    });
    let local =
        serve_local(core.clone(), host.clone(), bind_socket(&config.socket)?, stop_rx.clone(), supervisor);
    host.set_core(Some(core.clone()));
    tracing::info!(id = me.id, name = %me.name, "worker serving");
    ready();
    let beats = supervisor.spawn(
        "heartbeats",
        stop_rx.clone(),
        crate::heartbeat::run(core.clone(), host.clone(), me.id, config.heartbeat),
    );
    let renewal = supervisor.spawn(
        "certificate renewal",
        stop_rx.clone(),
        crate::renewal::run(
            dir.clone(),
            peers.clone(),
            None,
            crate::renewal::Issuer::Upstream(upstream.clone()),
        ),
    );
    let mut mirror = mirror_rx.clone();
    let mut registered = false;
    let exit = loop {
        tokio::select! {
            _ = shutdown.wait_for(|s| *s) => break Ok(Exit::Shutdown),
            changed = mirror.changed() => if changed.is_err() { break Ok(Exit::Shutdown) },
        }
        let view = mirror.borrow_and_update().clone();
        match view.to_state() {
            Ok(state) => host.publish_state(Arc::new(state)),
            Err(e) => tracing::warn!(error = %e, "the watched state does not rebuild"),
        }
        dir.record_managers(&crate::watch::managers_of(&view), &mut recorded);
        match view.nodes().find(|n| n.id == me.id) {
            Some(n) if n.role == pb::NodeRole::Manager as i32 => {
                match fetch_manager_kit(&peers, &upstream).await {
                    Ok(kit) => {
                        save_kit(dir, &kit)?;
                        break Ok(Exit::Promoted);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "promoted, but the manager kit is not available yet")
                    }
                }
            }
            Some(_) => registered = true,
            None if registered => {
                if let Ok(state) = view.to_state() {
                    host.revoke_all_addresses(&state).await;
                }
                break Err(anyhow!(
                    "this node was removed from the cluster; clear {} to join again",
                    dir.root().display()
                ));
            }
            None => {}
        }
    };
    let _ = stop_tx.send(true);
    beats.abort();
    watcher.abort();
    renewal.abort();
    local.finished().await;
    let _ = std::fs::remove_file(&config.socket);
    exit
}

async fn fetch_manager_kit(peers: &Peers, upstream: &Upstream) -> Result<pb::JoinResponse> {
    let addr = upstream.current().ok_or_else(|| anyhow!("no manager known"))?;
    let mut client = peers.cluster(&addr)?;
    Ok(client.manager_kit(pb::InfoRequest {}).await.map_err(|s| anyhow!("{}", s.message()))?.into_inner())
}

/// What runs for the whole life of the process, whatever the role: the overlay reconciler, the
/// embedded DNS, the janitor, the state persister and the metrics endpoint, all supervised.
struct LocalServices {
    /// The ready callback has been called.
    ready: std::sync::atomic::AtomicBool,
}

impl LocalServices {
    async fn start(
        config: &Config,
        host: Arc<Host>,
        id: u64,
        shutdown: watch::Receiver<bool>,
        supervisor: &Supervisor,
        telemetry: Arc<Telemetry>,
    ) -> Result<LocalServices> {
        let reconciler = weft_overlay::Reconciler::new(
            weft_net::Netlink::connect()?,
            weft_overlay::OverlayConfig::new(id),
        );
        let overlay_metrics = reconciler.metrics();
        let reconciled = reconciler.reconciled();
        host.set_reconciled(reconciled.clone());
        host.set_journal(reconciler.journal());
        let states = host.states();
        let stop = shutdown.clone();
        supervisor.spawn("overlay reconciler", shutdown.clone(), reconciler.run(states, stop));
        let (zones_tx, zones_rx) = watch::channel(Arc::new(weft_dns::Zones::default()));
        supervisor.spawn(
            "DNS zones",
            shutdown.clone(),
            follow_zones(id, reconciled, host.states(), zones_tx, shutdown.clone()),
        );
        let upstreams =
            weft_dns::server::upstreams_of(&std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default());
        supervisor.spawn(
            "DNS server",
            shutdown.clone(),
            weft_dns::run(zones_rx, upstreams, shutdown.clone()),
        );
        supervisor.spawn("janitor", shutdown.clone(), host.clone().janitor(shutdown.clone()));
        supervisor.spawn("exit watcher", shutdown.clone(), host.clone().watch_exits(shutdown.clone()));
        supervisor.spawn("restart manager", shutdown.clone(), host.clone().restart_manager(shutdown.clone()));
        supervisor.spawn("health checks", shutdown.clone(), host.clone().health_monitor(shutdown.clone()));
        supervisor.spawn("state persister", shutdown.clone(), host.clone().persist_state(shutdown.clone()));
        if let Some(path) = &config.docker_socket {
            let listener = weft_docker::bind(path)?;
            let engine = weft_docker::Engine::new(weft_docker::local_agent(config.socket.clone()));
            supervisor.spawn(
                "docker API",
                shutdown.clone(),
                weft_docker::serve(listener, engine, shutdown.clone()),
            );
        }
        if let Some(addr) = config.metrics {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("metrics: listen on {addr}"))?;
            supervisor.spawn(
                "metrics endpoint",
                shutdown.clone(),
                crate::metrics::serve(listener, host, overlay_metrics, telemetry, shutdown),
            );
        }
        Ok(LocalServices { ready: std::sync::atomic::AtomicBool::new(false) })
    }
}

/// How long DNS keeps answering from the reconciled state while the reconciler cannot catch up
/// with a newer one (a failing action); after that it answers from the newest state.
const ZONES_FALLBACK: Duration = Duration::from_secs(2);

/// The least time between two rebuilds of the zones: a lone change is served at once, a burst of
/// changes (hundreds of writes a second) costs one rebuild per interval instead of one per
/// revision, each of which walks every endpoint of the host's networks.
const ZONES_MIN_INTERVAL: Duration = Duration::from_millis(20);

/// Keeps the DNS zones of node `id` current. Names resolve once this host's kernel can reach
/// them: zones follow the state the overlay reconciler has applied, not the newest one; only a
/// reconciler stuck behind for [`ZONES_FALLBACK`] makes them follow the newest state instead.
async fn follow_zones(
    id: u64,
    mut reconciled: watch::Receiver<Arc<weft_state::State>>,
    mut latest: watch::Receiver<Arc<weft_state::State>>,
    zones: watch::Sender<Arc<weft_dns::Zones>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut behind_since: Option<Instant> = None;
    // The revision the zones were last built from, and when.
    let mut built: Option<(u64, Instant)> = None;
    loop {
        if let Some((_, at)) = built {
            let next_allowed = at + ZONES_MIN_INTERVAL;
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                _ = tokio::time::sleep_until(next_allowed.into()) => {}
            }
        }
        let applied = reconciled.borrow_and_update().clone();
        let newest = latest.borrow_and_update().clone();
        let source = if applied.revision() >= newest.revision() {
            behind_since = None;
            applied
        } else if behind_since.get_or_insert_with(Instant::now).elapsed() >= ZONES_FALLBACK {
            newest
        } else {
            applied
        };
        if built.is_none_or(|(revision, _)| revision != source.revision()) {
            let next = crate::dns::zones(&source, id);
            built = Some((source.revision(), Instant::now()));
            zones.send_if_modified(|current| {
                let changed = **current != next;
                if changed {
                    *current = Arc::new(next);
                }
                changed
            });
        }
        // Still within the grace period: look again when it ends (not after: no busy loop).
        let recheck_at = behind_since.map(|since| since + ZONES_FALLBACK).filter(|at| *at > Instant::now());
        let recheck = async {
            match recheck_at {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            changed = reconciled.changed() => if changed.is_err() { return },
            changed = latest.changed() => if changed.is_err() { return },
            _ = recheck => {}
        }
    }
}
