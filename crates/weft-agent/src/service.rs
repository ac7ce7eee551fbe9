//! The cluster API (`weft.v1.Cluster`), served by every agent: managers answer from their raft
//! node (writes proposed through the log, fresh reads through ReadIndex, the leader's view for
//! `node ls`); workers forward to the manager they watch. The same service runs on the local unix
//! socket (root's) and, on managers, on the mutual-TLS listener; both sit behind the
//! authorization layer ([`crate::authz`]), and the handlers make the checks that need the
//! request (whose heartbeat, whose endpoint).

use std::collections::BTreeSet;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::Stream;
use prost::Message as _;
use tokio::sync::{mpsc, watch};
use tonic::{Request, Response, Status};
use weft_proto::v1 as pb;
use weft_proto::v1::cluster_client::ClusterClient;
use weft_raft::{NodeHandle, RaftError, WatchStart};
use weft_state::{Mirror, Role, State, cmd};

use crate::authz::{self, Caller, caller_of};
use crate::identity::ManagerKeys;
use crate::liveness::{Liveness, LivenessConfig};
use crate::peers::Peers;
use crate::pki::{self, CertRole, Token};

/// How long a write may take to commit before the caller is told it timed out.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// How often the raft transport's streams look whether their caller has been removed from the
/// cluster since they started; a Watch stream looks when a change arrives and once more this
/// long after it (a removal is a change), so an idle one does not wake.
pub const REVOCATION_TICK: Duration = Duration::from_millis(250);

/// How long a write waits for a leader to be elected before failing with "no quorum".
pub const LEADER_WAIT: Duration = Duration::from_secs(3);

/// Maps raft and state errors to gRPC statuses with the message intact and the reason attached.
pub fn status_of(e: RaftError) -> Status {
    crate::reason::of_raft(e)
}

/// Fault injection for tests: `WEFTD_FAILPOINT_JOIN_ID=HEX[,HEX...]` gives the next node that
/// joins through this manager the first of these ids no node has yet, so a test can have nodes
/// whose ids start with zeros. Nothing else reads it.
pub const JOIN_ID_FAILPOINT: &str = "WEFTD_FAILPOINT_JOIN_ID";

fn state_has_no_node(core: &Core, id: u64) -> bool {
    match &core.role {
        RoleCore::Manager(m) => m.node.state().node(id).is_none(),
        RoleCore::Worker(_) => false,
    }
}

/// Wall clock in milliseconds (stamped into commands by their proposer).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A manager's side of the API.
pub struct ManagerCore {
    /// The raft node.
    pub node: NodeHandle,
    /// The CA and its key.
    pub keys: ManagerKeys,
    /// How long the certificates this manager issues are valid.
    pub cert_ttl: Duration,
    /// Turns true when this node stops being a manager (demotion, shutdown): the Watch streams
    /// it serves end then, so their workers move to another manager instead of waiting on a
    /// stream that no longer carries anything.
    pub stopping: watch::Receiver<bool>,
    /// The leader's heartbeat table (used while this node leads).
    pub liveness: Mutex<Liveness>,
    /// Host reports wanted and received for `weft net why` (used while this node leads).
    pub reports: crate::why::ReportBoard,
    /// Liveness timing.
    pub liveness_config: LivenessConfig,
    /// Beats heard from this manager's workers, held for the leader while it follows.
    pub relay: crate::beats::Relay,
}

/// The managers a worker can talk to, and which one it uses now.
pub struct Upstream {
    managers: Mutex<(Vec<String>, usize)>,
}

impl Upstream {
    /// Starts with `managers` (API addresses).
    pub fn new(managers: Vec<String>) -> Upstream {
        Upstream { managers: Mutex::new((managers, 0)) }
    }

    /// The manager in use.
    pub fn current(&self) -> Option<String> {
        let m = self.managers.lock().unwrap();
        m.0.get(m.1 % m.0.len().max(1)).cloned()
    }

    /// The one in use failed: move to the next.
    pub fn failed(&self) {
        let mut m = self.managers.lock().unwrap();
        m.1 = m.1.wrapping_add(1);
    }

    /// Replaces the list (from the state), keeping the current one if it is still there.
    pub fn update(&self, managers: Vec<String>) {
        if managers.is_empty() {
            return;
        }
        let mut m = self.managers.lock().unwrap();
        let current = m.0.get(m.1 % m.0.len().max(1)).cloned();
        let index = current.and_then(|c| managers.iter().position(|a| *a == c)).unwrap_or(0);
        *m = (managers, index);
    }

    /// All known managers.
    pub fn all(&self) -> Vec<String> {
        self.managers.lock().unwrap().0.clone()
    }
}

/// A worker's side of the API.
pub struct WorkerCore {
    /// Where it forwards.
    pub upstream: Arc<Upstream>,
    /// Its copy of the state.
    pub mirror: watch::Receiver<Arc<Mirror>>,
}

/// The role-specific half.
pub enum RoleCore {
    /// A manager.
    Manager(ManagerCore),
    /// A worker.
    Worker(WorkerCore),
}

/// Everything the API needs.
pub struct Core {
    /// This node.
    pub id: u64,
    /// Its name.
    pub name: String,
    /// Its cluster API address (managers; empty on workers).
    pub api_addr: String,
    /// The CA fingerprint (for tokens and `cluster info`).
    pub ca_fingerprint: String,
    /// Outgoing channels.
    pub peers: Arc<Peers>,
    /// Manager or worker.
    pub role: RoleCore,
    /// Where this node's measurements go.
    pub telemetry: Arc<crate::telemetry::Telemetry>,
}

impl Core {
    fn manager(&self) -> Result<&ManagerCore, Status> {
        match &self.role {
            RoleCore::Manager(m) => Ok(m),
            RoleCore::Worker(_) => Err(Status::failed_precondition(format!(
                "node {} is a worker: send this to a manager",
                self.name
            ))),
        }
    }

    /// On a worker, a client of the manager it forwards API calls to; `None` on a manager, which
    /// answers itself. A worker moves to another manager when its heartbeats or its Watch fail,
    /// not per call.
    fn forward(&self) -> Result<Option<ClusterClient<tonic::transport::Channel>>, Status> {
        let RoleCore::Worker(w) = &self.role else { return Ok(None) };
        let addr = w.upstream.current().ok_or_else(|| Status::unavailable("this worker knows no manager"))?;
        Ok(Some(self.peers.cluster(&addr)?))
    }

    /// A client of the leader, when this manager is not it. While no leader is known, or its
    /// address is not yet in this manager's state (an election; a manager that has just joined),
    /// it waits up to [`LEADER_WAIT`].
    async fn leader_client(
        &self,
        m: &ManagerCore,
    ) -> Result<Option<ClusterClient<tonic::transport::Channel>>, Status> {
        let deadline = Instant::now() + LEADER_WAIT;
        loop {
            let leader = m.node.status().leader;
            if leader == self.id {
                return Ok(None);
            }
            let addr = m.node.state().node(leader).map(|n| n.api_addr.clone()).filter(|a| !a.is_empty());
            match addr {
                Some(addr) => return Ok(Some(self.peers.cluster(&addr)?)),
                None if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(50)).await,
                None if leader == 0 => return Err(status_of(RaftError::NoLeader)),
                None => {
                    return Err(Status::unavailable(format!(
                        "the leader (node {leader}) has no known address yet"
                    )));
                }
            }
        }
    }

    /// Proposes `command` and waits for its result, at most [`WRITE_TIMEOUT`]. While no leader is
    /// known (an election), it waits up to [`LEADER_WAIT`] for one: the command was not sent, so
    /// retrying cannot apply it twice.
    pub async fn propose(&self, command: &pb::Command) -> Result<weft_state::Applied, Status> {
        let m = self.manager()?;
        let bytes = command.encode_to_vec();
        let started = Instant::now();
        let attempt = async {
            loop {
                match m.node.propose(bytes.clone()).await {
                    Err(RaftError::NoLeader) if started.elapsed() < LEADER_WAIT => {
                        tokio::time::sleep(Duration::from_millis(50)).await
                    }
                    other => return other,
                }
            }
        };
        match tokio::time::timeout(WRITE_TIMEOUT, attempt).await {
            Ok(result) => {
                self.telemetry.proposals.observe(started.elapsed());
                result.map_err(status_of)
            }
            Err(_) if m.node.status().leader == 0 => Err(status_of(RaftError::NoLeader)),
            Err(_) => Err(Status::deadline_exceeded(format!(
                "the command did not commit within {} s; it may or may not have been applied",
                WRITE_TIMEOUT.as_secs()
            ))),
        }
    }

    /// Applies `command` through the cluster: proposed by this node on a manager, forwarded to
    /// its manager on a worker. Used by the agent API for network and endpoint changes.
    pub async fn apply(&self, command: pb::Command) -> Result<pb::ApplyResponse, Status> {
        if let Some(mut upstream) = self.forward()? {
            let mut request = Request::new(pb::ApplyRequest { command: Some(command) });
            request.set_timeout(WRITE_TIMEOUT + LEADER_WAIT);
            return Ok(upstream.apply(request).await?.into_inner());
        }
        let applied = self.propose(&command).await?;
        Ok(pb::ApplyResponse { revision: applied.revision, outcome: Some(applied.outcome.to_proto()) })
    }

    /// A state confirmed fresh with the leader (ReadIndex), at most [`WRITE_TIMEOUT`]. While no
    /// leader is known (an election, a cluster just bootstrapped) it waits up to [`LEADER_WAIT`].
    pub async fn fresh_state(&self) -> Result<Arc<State>, Status> {
        let m = self.manager()?;
        let started = Instant::now();
        let read = async {
            loop {
                match m.node.read_index().await {
                    Err(RaftError::NoLeader) if started.elapsed() < LEADER_WAIT => {
                        tokio::time::sleep(Duration::from_millis(50)).await
                    }
                    other => return other,
                }
            }
        };
        match tokio::time::timeout(WRITE_TIMEOUT, read).await {
            Ok(result) => result.map_err(status_of),
            Err(_) => Err(status_of(RaftError::NoLeader)),
        }
    }

    /// Records a heartbeat (and the report it carries) if this manager leads; forwards it to the
    /// leader otherwise. The answer asks for the node's report when a `weft net why` wants it.
    pub async fn heartbeat(&self, request: pb::HeartbeatRequest) -> Result<pb::HeartbeatResponse, Status> {
        match &self.role {
            RoleCore::Manager(m) => match self.leader_client(m).await? {
                None => {
                    let node_id = request.node_id;
                    m.liveness.lock().unwrap().record(node_id, request.revision, Instant::now());
                    if let Some(report) = request.report {
                        m.reports.store(pb::HostReport { node_id, ..report });
                    }
                    Ok(pb::HeartbeatResponse {
                        leader_id: self.id,
                        revision: m.node.status().revision,
                        report: m.reports.wanted(node_id),
                    })
                }
                Some(mut leader) => {
                    let mut request = Request::new(request);
                    request.set_timeout(Duration::from_secs(2));
                    Ok(leader.heartbeat(request).await?.into_inner())
                }
            },
            RoleCore::Worker(w) => {
                let mut upstream = self.forward()?.ok_or_else(|| Status::internal("a worker forwards"))?;
                let mut request = Request::new(request);
                request.set_timeout(Duration::from_secs(2));
                upstream.heartbeat(request).await.map(|r| r.into_inner()).inspect_err(|_| w.upstream.failed())
            }
        }
    }

    fn find_node<'s>(&self, state: &'s State, name: &str) -> Result<&'s weft_state::Node, Status> {
        state
            .nodes()
            .find(|n| weft_state::names::node_matches(n.id, &n.name, name))
            .ok_or_else(|| Status::not_found(format!("no node {name:?} in the cluster (see `weft node ls`)")))
    }

    fn node_rows(&self, m: &ManagerCore, state: &State) -> pb::NodesResponse {
        let status = m.node.status();
        let voters: BTreeSet<u64> = status.voters.iter().copied().collect();
        let learners: BTreeSet<u64> = status.learners.iter().copied().collect();
        let liveness = m.liveness.lock().unwrap();
        let now = Instant::now();
        let nodes = state
            .nodes()
            .map(|n| {
                let raft = if voters.contains(&n.id) {
                    "voter"
                } else if learners.contains(&n.id) {
                    "learner"
                } else {
                    ""
                };
                let (applied, lag) = if !raft.is_empty() {
                    let matched = if n.id == self.id {
                        status.applied
                    } else {
                        status.matched.get(&n.id).copied().unwrap_or(0)
                    };
                    (matched, status.last_index.saturating_sub(matched))
                } else {
                    let rev = liveness.seen(n.id).map_or(0, |s| s.revision);
                    (rev, state.revision().saturating_sub(rev))
                };
                let last_seen_ms = liveness
                    .seen(n.id)
                    .map(|s| now.saturating_duration_since(s.at).as_millis() as u64)
                    .unwrap_or(0);
                pb::NodeInfo {
                    node: Some(n.to_proto()),
                    leader: n.id == status.leader,
                    raft: raft.into(),
                    applied,
                    lag,
                    last_seen_ms,
                }
            })
            .collect();
        pb::NodesResponse { nodes, revision: state.revision() }
    }

    fn join_response(&self, m: &ManagerCore, id: u64, manager: bool) -> Result<pb::JoinResponse, Status> {
        let role = if manager { CertRole::Manager } else { CertRole::Worker };
        let cert = m.keys.ca.issue_node(id, role, m.cert_ttl).map_err(|e| Status::internal(e.to_string()))?;
        let state = m.node.state();
        let mut managers: Vec<pb::ManagerAddr> = state
            .nodes()
            .filter(|n| n.role == Role::Manager && !n.api_addr.is_empty())
            .map(|n| pb::ManagerAddr { id: n.id, api_addr: n.api_addr.clone() })
            .collect();
        // This manager may not be in its own state yet (a join racing the bootstrap's own
        // registration); the joiner must still be able to answer it, so it is always listed.
        if !managers.iter().any(|a| a.id == self.id) {
            managers.push(pb::ManagerAddr { id: self.id, api_addr: self.api_addr.clone() });
        }
        // The manager it joined through first: a worker watches the manager its operator chose.
        managers.sort_by_key(|a| a.id != self.id);
        let mut response = pb::JoinResponse {
            node_id: id,
            ca_cert_pem: m.keys.ca.cert_pem.clone(),
            cert_pem: cert.chain_pem,
            key_pem: cert.key_pem,
            managers,
            ..Default::default()
        };
        if manager {
            response.ca_key_pem = m.keys.ca.key_pem.clone();
        }
        Ok(response)
    }
}

/// The gRPC service over a [`Core`].
#[derive(Clone)]
pub struct ClusterService {
    core: Arc<Core>,
}

impl ClusterService {
    /// The service; its servers put it behind the authorization layer.
    pub fn new(core: Arc<Core>) -> ClusterService {
        ClusterService { core }
    }

    /// Repeats the table's verdict where the call is served (a server built without the layer
    /// serves nobody but Join).
    fn check<T>(&self, request: &Request<T>, path: &str) -> Result<Caller, Status> {
        let caller = caller_of(request);
        authz::decide(path, &caller)?;
        Ok(caller)
    }

    /// The node holding endpoint `id`, in a manager's applied state (workers' callers are the
    /// local socket, which may release any).
    fn endpoint_owner(&self, id: u64) -> Option<u64> {
        match &self.core.role {
            RoleCore::Manager(m) => m.node.state().endpoint(id).map(|e| e.node),
            RoleCore::Worker(_) => None,
        }
    }
}

/// Takes one message's beats on manager `m`: recorded in the liveness table when it leads,
/// held for the leader otherwise. A report is kept on the board either way (on a follower this
/// ends the want it answers).
fn take(core: &Core, m: &ManagerCore, beats: &pb::Beats, now: Instant) {
    let leading = m.node.status().leader == core.id;
    for (i, beat) in beats.beats.iter().enumerate() {
        let heard = crate::beats::heard_at(now, beats.age_ms.get(i).copied().unwrap_or(0));
        if let Some(report) = &beat.report {
            m.reports.store(pb::HostReport { node_id: beat.node_id, ..report.clone() });
        }
        if leading {
            m.liveness.lock().unwrap().record(beat.node_id, beat.revision, heard);
        } else {
            m.relay.put(beat.clone(), heard);
        }
    }
}

/// Checks that `caller` may send `beats` on manager `m`: a worker only its own, and no node
/// the cluster has removed.
fn admit(caller: &Caller, m: &ManagerCore, beats: &pb::Beats) -> Result<(), Status> {
    if let Some(id) = caller.node()
        && m.node.state().is_revoked(id)
    {
        return Err(authz::decide("", &Caller::Revoked { id }).unwrap_err());
    }
    match beats.beats.iter().find(|b| !caller.may_speak_for(b.node_id)) {
        Some(beat) => Err(authz::denied(format!(
            "a worker heartbeats only for itself, and this is not node {}'s certificate",
            weft_state::names::node_id_text(beat.node_id)
        ))),
        None => Ok(()),
    }
}

/// Serves one heartbeat session `caller` opened on this manager ([`crate::beats`]), until either end closes it; a beat the
/// caller may not send ends it with the refusal.
async fn serve_beats(
    core: Arc<Core>,
    caller: Caller,
    mut inbound: tonic::Streaming<pb::Beats>,
    answers: mpsc::Sender<Result<pb::BeatsAnswer, Status>>,
) {
    let RoleCore::Manager(m) = &core.role else { return };
    let mut wants = m.reports.wants();
    let mut session = crate::beats::Session::default();
    loop {
        let sender_revision = tokio::select! {
            message = inbound.message() => match message {
                Ok(Some(beats)) => {
                    if let Err(refusal) = admit(&caller, m, &beats) {
                        let _ = answers.send(Err(refusal)).await;
                        return;
                    }
                    take(&core, m, &beats, Instant::now());
                    core.telemetry.beat_messages.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    core.telemetry.beats.fetch_add(beats.beats.len() as u64, std::sync::atomic::Ordering::Relaxed);
                    session.heard(&beats.beats);
                    beats.beats.first().map(|b| b.revision)
                }
                Ok(None) | Err(_) => return,
            },
            changed = wants.changed() => {
                if changed.is_err() {
                    return;
                }
                None
            }
            () = answers.closed() => return,
        };
        let status = m.node.status();
        let answer = session.answer(status.leader, status.revision, sender_revision, |n| m.reports.wanted(n));
        if let Some(answer) = answer
            && answers.send(Ok(answer)).await.is_err()
        {
            return;
        }
    }
}

/// The current join secret for `manager` (or worker) tokens in `state`.
fn secret_in(m: &ManagerCore, state: &State, manager: bool) -> String {
    let role = if manager { Role::Manager } else { Role::Worker };
    m.keys.ca.join_secret(manager, state.token_generation(role))
}

/// The current join secret for `manager` (or worker) tokens, from a fresh read of the state.
async fn join_secret(core: &Core, m: &ManagerCore, manager: bool) -> Result<String, Status> {
    let state = core.fresh_state().await?;
    Ok(secret_in(m, &state, manager))
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::WatchResponse, Status>> + Send>>;
type HeartbeatsStream = Pin<Box<dyn Stream<Item = Result<pb::BeatsAnswer, Status>> + Send>>;

fn batch_response(batch: &pb::EventBatch) -> pb::WatchResponse {
    pb::WatchResponse { kind: Some(pb::watch_response::Kind::Batch(batch.clone())) }
}

#[tonic::async_trait]
impl pb::cluster_server::Cluster for ClusterService {
    async fn join(&self, request: Request<pb::JoinRequest>) -> Result<Response<pb::JoinResponse>, Status> {
        let core = &self.core;
        let m = core.manager()?;
        let req = request.into_inner();
        let wants_manager = req.role == pb::NodeRole::Manager as i32;
        let state = core.fresh_state().await?;
        let manager_ok = pki::secrets_equal(&req.secret, &secret_in(m, &state, true));
        let worker_ok = pki::secrets_equal(&req.secret, &secret_in(m, &state, false));
        if !manager_ok && !worker_ok {
            return Err(Status::permission_denied("the join token is not valid for this cluster"));
        }
        if wants_manager && !manager_ok {
            return Err(Status::permission_denied(
                "this is a worker token; joining as a manager needs the manager token (`weft cluster token manager`)",
            ));
        }
        let role = if wants_manager { Role::Manager } else { Role::Worker };
        let forced = std::env::var(JOIN_ID_FAILPOINT).ok().and_then(|ids| {
            ids.split(',')
                .filter_map(|id| u64::from_str_radix(id.trim(), 16).ok())
                .find(|id| state_has_no_node(core, *id))
        });
        let id = match forced {
            Some(id) => id,
            None => pki::random_id().map_err(|e| Status::internal(e.to_string()))?,
        };
        let command = cmd::with_underlay_mtu(
            cmd::register_agent(
                id,
                &req.name,
                &req.underlay_addr,
                req.underlay_prefix_len,
                &req.api_addr,
                role,
                now_ms(),
            ),
            req.underlay_mtu,
        );
        core.propose(&command).await?;
        Ok(Response::new(core.join_response(m, id, wants_manager)?))
    }

    async fn apply(&self, request: Request<pb::ApplyRequest>) -> Result<Response<pb::ApplyResponse>, Status> {
        let caller = self.check(&request, "/weft.v1.Cluster/Apply")?;
        let command = request.into_inner().command.ok_or_else(|| Status::invalid_argument("no command"))?;
        authz::command(&caller, &command, |id| self.endpoint_owner(id))?;
        Ok(Response::new(self.core.apply(command).await?))
    }

    async fn heartbeat(
        &self,
        request: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatResponse>, Status> {
        let caller = self.check(&request, "/weft.v1.Cluster/Heartbeat")?;
        let id = request.get_ref().node_id;
        if !caller.may_speak_for(id) {
            return Err(crate::authz::denied(format!(
                "a worker heartbeats only for itself, and this is not node {}'s certificate",
                weft_state::names::node_id_text(id)
            )));
        }
        Ok(Response::new(self.core.heartbeat(request.into_inner()).await?))
    }

    type HeartbeatsStream = HeartbeatsStream;

    async fn heartbeats(
        &self,
        request: Request<tonic::Streaming<pb::Beats>>,
    ) -> Result<Response<HeartbeatsStream>, Status> {
        let caller = self.check(&request, "/weft.v1.Cluster/Heartbeats")?;
        self.core.manager()?;
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(serve_beats(self.core.clone(), caller, request.into_inner(), tx));
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }

    type WatchStream = WatchStream;

    async fn watch(&self, request: Request<pb::WatchRequest>) -> Result<Response<WatchStream>, Status> {
        let caller = self.check(&request, "/weft.v1.Cluster/Watch")?;
        let m = self.core.manager()?;
        // A node removed while it watches loses its stream within a revocation tick.
        let revocable = caller.node().map(|id| (id, m.node.clone()));
        let mut stopping = m.stopping.clone();
        let from = request.into_inner().from_revision;
        let (start, mut live) = m.node.history().subscribe(from);
        let (tx, rx) = mpsc::channel::<Result<pb::WatchResponse, Status>>(256);
        tokio::spawn(async move {
            let mut last = from;
            let backlog = match start {
                WatchStart::Batches(b) => b,
                WatchStart::Snapshot(state, b) => {
                    last = state.revision();
                    let snapshot = pb::WatchResponse {
                        kind: Some(pb::watch_response::Kind::Snapshot(state.snapshot())),
                    };
                    if tx.send(Ok(snapshot)).await.is_err() {
                        return;
                    }
                    b
                }
            };
            for batch in backlog {
                if batch.revision > last {
                    last = batch.revision;
                    if tx.send(Ok(batch_response(&batch))).await.is_err() {
                        return;
                    }
                }
            }
            // A removal comes with a state change: the stream looks whether its caller was
            // removed when a batch arrives and once more a tick later (the batch may be seen
            // before the state that applied it is published), and sleeps while nothing changes.
            let revoked = || revocable.as_ref().is_some_and(|(id, node)| node.state().is_revoked(*id));
            let mut recheck: Option<std::pin::Pin<Box<tokio::time::Sleep>>> = None;
            if *stopping.borrow() {
                return;
            }
            loop {
                let received = tokio::select! {
                    received = live.recv() => Some(received),
                    changed = stopping.changed() => {
                        let stopped = changed.is_err() || *stopping.borrow();
                        if !stopped {
                            continue;
                        }
                        None
                    }
                    () = async { recheck.as_mut().expect("armed").await }, if recheck.is_some() => {
                        recheck = None;
                        if revoked() {
                            let id = revocable.as_ref().map_or(0, |(id, _)| *id);
                            let _ = tx.send(Err(authz::decide("", &Caller::Revoked { id }).unwrap_err())).await;
                            return;
                        }
                        continue;
                    }
                };
                let Some(received) = received else {
                    let _ = tx
                        .send(Err(Status::unavailable("this manager stepped down: watch another one")))
                        .await;
                    return;
                };
                match received {
                    Ok(batch) if batch.revision > last => {
                        last = batch.revision;
                        if tx.send(Ok(batch_response(&batch))).await.is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        let _ = tx
                            .send(Err(Status::aborted("the watcher fell behind; resume from its revision")))
                            .await;
                        return;
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                }
                if let Some((id, _)) = &revocable {
                    if revoked() {
                        let _ =
                            tx.send(Err(authz::decide("", &Caller::Revoked { id: *id }).unwrap_err())).await;
                        return;
                    }
                    recheck = Some(Box::pin(tokio::time::sleep(REVOCATION_TICK)));
                }
            }
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }

    async fn get_state(
        &self,
        request: Request<pb::StateRequest>,
    ) -> Result<Response<pb::StateResponse>, Status> {
        self.check(&request, "/weft.v1.Cluster/GetState")?;
        let core = &self.core;
        if let Some(mut upstream) = core.forward()? {
            return upstream.get_state(request.into_inner()).await;
        }
        let m = core.manager()?;
        let state = if request.get_ref().linearizable { core.fresh_state().await? } else { m.node.state() };
        Ok(Response::new(pb::StateResponse { state: Some(state.snapshot()) }))
    }

    async fn nodes(&self, request: Request<pb::NodesRequest>) -> Result<Response<pb::NodesResponse>, Status> {
        self.check(&request, "/weft.v1.Cluster/Nodes")?;
        let core = &self.core;
        if let Some(mut upstream) = core.forward()? {
            return upstream.nodes(request.into_inner()).await;
        }
        let m = core.manager()?;
        match core.leader_client(m).await {
            Ok(None) => {
                let state = core.fresh_state().await?;
                Ok(Response::new(core.node_rows(m, &state)))
            }
            Ok(Some(mut leader)) => leader.nodes(request.into_inner()).await,
            // No leader: this manager's own (possibly stale) view, with no leader marked.
            Err(_) => Ok(Response::new(core.node_rows(m, &m.node.state()))),
        }
    }

    async fn why(&self, request: Request<pb::WhyRequest>) -> Result<Response<pb::WhyResponse>, Status> {
        self.check(&request, "/weft.v1.Cluster/Why")?;
        let core = &self.core;
        if let Some(mut upstream) = core.forward()? {
            return upstream.why(request.into_inner()).await;
        }
        let m = core.manager()?;
        if let Some(mut leader) = core.leader_client(m).await? {
            return leader.why(request.into_inner()).await;
        }
        let state = core.fresh_state().await?;
        Ok(Response::new(crate::why::answer(&m.reports, &state, &request.into_inner()).await?))
    }

    async fn change_role(
        &self,
        request: Request<pb::ChangeRoleRequest>,
    ) -> Result<Response<pb::Node>, Status> {
        self.check(&request, "/weft.v1.Cluster/ChangeRole")?;
        let core = &self.core;
        if let Some(mut upstream) = core.forward()? {
            return upstream.change_role(request.into_inner()).await;
        }
        let req = request.into_inner();
        let role = match pb::NodeRole::try_from(req.role) {
            Ok(pb::NodeRole::Manager) => Role::Manager,
            Ok(pb::NodeRole::Worker) => Role::Worker,
            _ => return Err(Status::invalid_argument("role must be manager or worker")),
        };
        let state = core.fresh_state().await?;
        let node = core.find_node(&state, &req.node)?;
        if node.role == role {
            return Ok(Response::new(node.to_proto()));
        }
        if role == Role::Manager && node.api_addr.is_empty() {
            return Err(Status::failed_precondition(format!(
                "node {} has no API address in the cluster state (it joined with an older weftd): its raft peers could not reach it; remove it and join it again with --manager",
                node.name
            )));
        }
        if role == Role::Worker && state.nodes().filter(|n| n.role == Role::Manager).count() == 1 {
            return Err(Status::failed_precondition(format!(
                "node {} is the last manager: promote another node before demoting it",
                node.name
            )));
        }
        let applied = core.propose(&cmd::set_node_role(node.id, role)).await?;
        match applied.outcome {
            weft_state::Outcome::Node(n) => Ok(Response::new(n.to_proto())),
            _ => Ok(Response::new(node.to_proto())),
        }
    }

    async fn remove_node(
        &self,
        request: Request<pb::RemoveNodeRequest>,
    ) -> Result<Response<pb::RemoveNodeResponse>, Status> {
        self.check(&request, "/weft.v1.Cluster/RemoveNode")?;
        let core = &self.core;
        if let Some(mut upstream) = core.forward()? {
            return upstream.remove_node(request.into_inner()).await;
        }
        let req = request.into_inner();
        let state = core.fresh_state().await?;
        let node = core.find_node(&state, &req.node)?;
        if node.role == Role::Manager && state.nodes().filter(|n| n.role == Role::Manager).count() == 1 {
            return Err(Status::failed_precondition(format!(
                "node {} is the last manager: the cluster cannot lose it",
                node.name
            )));
        }
        if node.status == weft_state::Status::Ready && !req.force {
            return Err(Status::failed_precondition(format!(
                "node {} is Ready (its weftd is running): stop it first, or remove it with --force",
                node.name
            )));
        }
        core.propose(&cmd::remove_node(node.id)).await?;
        Ok(Response::new(pb::RemoveNodeResponse {}))
    }

    async fn token(&self, request: Request<pb::TokenRequest>) -> Result<Response<pb::TokenResponse>, Status> {
        self.check(&request, "/weft.v1.Cluster/Token")?;
        let core = &self.core;
        if let Some(mut upstream) = core.forward()? {
            return upstream.token(request.into_inner()).await;
        }
        let m = core.manager()?;
        let manager = token_role(request.get_ref().role)? == Role::Manager;
        // This manager's applied state, not a fresh read: printing a token must not wait for an
        // election (a cluster just bootstrapped), and a rotation made through another manager
        // reaches this one within milliseconds; Join checks against a fresh read.
        let secret = secret_in(m, &m.node.state(), manager);
        let token = Token { ca_fingerprint: core.ca_fingerprint.clone(), secret };
        Ok(Response::new(pb::TokenResponse { token: token.render() }))
    }

    async fn info(&self, request: Request<pb::InfoRequest>) -> Result<Response<pb::InfoResponse>, Status> {
        self.check(&request, "/weft.v1.Cluster/Info")?;
        let core = &self.core;
        let mut info = pb::InfoResponse {
            node_id: core.id,
            name: core.name.clone(),
            ca_fingerprint: core.ca_fingerprint.clone(),
            ..Default::default()
        };
        match &core.role {
            RoleCore::Manager(m) => {
                let s = m.node.status();
                info.role = pb::NodeRole::Manager as i32;
                info.leader_id = s.leader;
                info.term = s.term;
                info.commit = s.commit;
                info.applied = s.applied;
                info.revision = s.revision;
            }
            RoleCore::Worker(w) => {
                info.role = pb::NodeRole::Worker as i32;
                info.revision = w.mirror.borrow().revision();
                info.upstream = w.upstream.current().unwrap_or_default();
            }
        }
        Ok(Response::new(info))
    }

    async fn manager_kit(
        &self,
        request: Request<pb::InfoRequest>,
    ) -> Result<Response<pb::JoinResponse>, Status> {
        let caller = self.check(&request, "/weft.v1.Cluster/ManagerKit")?;
        let core = &self.core;
        let m = core.manager()?;
        let id = caller.node().ok_or_else(|| crate::authz::denied("the manager kit is only for nodes"))?;
        let state = core.fresh_state().await?;
        let node = state
            .node(id)
            .ok_or_else(|| crate::authz::denied("this certificate belongs to no node of the cluster"))?;
        if node.role != Role::Manager {
            return Err(crate::authz::denied(format!("node {} is not a manager", node.name)));
        }
        Ok(Response::new(core.join_response(m, node.id, true)?))
    }

    async fn rotate_token(
        &self,
        request: Request<pb::TokenRequest>,
    ) -> Result<Response<pb::TokenResponse>, Status> {
        self.check(&request, "/weft.v1.Cluster/RotateToken")?;
        let core = &self.core;
        if let Some(mut upstream) = core.forward()? {
            return upstream.rotate_token(request.into_inner()).await;
        }
        let m = core.manager()?;
        let role = token_role(request.get_ref().role)?;
        core.propose(&cmd::rotate_join_token(role)).await?;
        tracing::info!(role = role.as_str(), "join token rotated");
        let token = Token {
            ca_fingerprint: core.ca_fingerprint.clone(),
            secret: join_secret(core, m, role == Role::Manager).await?,
        };
        Ok(Response::new(pb::TokenResponse { token: token.render() }))
    }

    async fn issue_admin_cert(
        &self,
        request: Request<pb::AdminCertRequest>,
    ) -> Result<Response<pb::CertBundle>, Status> {
        let caller = self.check(&request, "/weft.v1.Cluster/IssueAdminCert")?;
        let core = &self.core;
        if let Some(mut upstream) = core.forward()? {
            return upstream.issue_admin_cert(request.into_inner()).await;
        }
        let m = core.manager()?;
        let ttl = match request.get_ref().ttl_seconds {
            0 => m.cert_ttl,
            s => Duration::from_secs(s),
        };
        let cert = m.keys.ca.issue_admin(ttl).map_err(|e| Status::internal(e.to_string()))?;
        let name = cert.identity().map(|i| i.name).unwrap_or_default();
        tracing::info!(%name, by = ?caller, ttl_s = ttl.as_secs(), "admin certificate issued");
        Ok(Response::new(pb::CertBundle {
            ca_cert_pem: m.keys.ca.cert_pem.clone(),
            cert_pem: cert.chain_pem,
            key_pem: cert.key_pem,
        }))
    }

    async fn renew_cert(
        &self,
        request: Request<pb::InfoRequest>,
    ) -> Result<Response<pb::CertBundle>, Status> {
        let caller = self.check(&request, "/weft.v1.Cluster/RenewCert")?;
        let core = &self.core;
        let m = core.manager()?;
        let id = caller.node().ok_or_else(|| crate::authz::denied("only nodes renew certificates"))?;
        let state = core.fresh_state().await?;
        let node = state
            .node(id)
            .ok_or_else(|| crate::authz::denied("this certificate belongs to no node of the cluster"))?;
        let role = match node.role {
            Role::Manager => CertRole::Manager,
            Role::Worker => CertRole::Worker,
        };
        let cert = m.keys.ca.issue_node(id, role, m.cert_ttl).map_err(|e| Status::internal(e.to_string()))?;
        tracing::info!(node = %node.name, "certificate renewed");
        Ok(Response::new(pb::CertBundle {
            ca_cert_pem: m.keys.ca.cert_pem.clone(),
            cert_pem: cert.chain_pem,
            key_pem: cert.key_pem,
        }))
    }
}

fn token_role(raw: i32) -> Result<Role, Status> {
    match pb::NodeRole::try_from(raw) {
        Ok(pb::NodeRole::Manager) => Ok(Role::Manager),
        Ok(pb::NodeRole::Worker) => Ok(Role::Worker),
        _ => Err(Status::invalid_argument("token role must be worker or manager")),
    }
}
