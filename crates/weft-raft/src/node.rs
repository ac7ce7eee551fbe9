//! The Raft driver: one task owns the `RawNode` and runs raft-rs's ready loop in the documented
//! order — send the leader's messages, install a snapshot, apply committed entries (and answer
//! their proposers), persist new entries and hard state (fsync) before sending the messages that
//! depend on them, advance.
//! Committed commands go through weft-state's `apply`; the proposer gets its entry's result.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use protobuf::Message as _;
use raft::eraftpb::{ConfChange, ConfChangeType, Entry, EntryType, Message, Snapshot};
use raft::{RawNode, StateRole};
use tokio::sync::{mpsc, oneshot, watch};
use weft_state::{Applied, State, StateError, pb};

use crate::guard::{self, Refusals};
use crate::history::History;
use crate::storage::EngineStorage;
use crate::{RaftError, Transport};

/// How often raft ticks. Election after 10 ticks (randomised up to 20), heartbeat every 2: a dead
/// leader is replaced in roughly 0.5-1 s.
pub const TICK: Duration = Duration::from_millis(50);

/// Take a snapshot of the state and compact the log every this many applied entries.
pub const SNAPSHOT_EVERY: u64 = 1000;

/// What a node publishes after every ready: for status displays and waiting in tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeStatus {
    /// This node's id.
    pub id: u64,
    /// The current leader (0 when none is known).
    pub leader: u64,
    /// The term.
    pub term: u64,
    /// Highest committed index.
    pub commit: u64,
    /// Highest applied index.
    pub applied: u64,
    /// The state's revision.
    pub revision: u64,
    /// Index of the last entry in the log.
    pub last_index: u64,
    /// Voting members.
    pub voters: Vec<u64>,
    /// Non-voting members that replicate the log.
    pub learners: Vec<u64>,
    /// On the leader: each member's highest replicated index.
    pub matched: BTreeMap<u64, u64>,
    /// A membership change is proposed and not yet applied.
    pub conf_pending: bool,
}

/// One membership change (raft-rs's simple conf changes: one member at a time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Membership {
    /// Make `id` a voter (new, or a learner promoted).
    AddVoter(u64),
    /// Add `id` as a learner.
    AddLearner(u64),
    /// Remove `id` (voter or learner).
    Remove(u64),
}

type Reply = oneshot::Sender<Result<Applied, RaftError>>;

type ReadReply = oneshot::Sender<Result<Arc<State>, RaftError>>;
type ConfReply = oneshot::Sender<Result<(), RaftError>>;

enum Request {
    Propose { command: Vec<u8>, reply: Reply },
    Membership { change: Membership, reply: oneshot::Sender<Result<(), RaftError>> },
    ReadIndex { reply: ReadReply },
    Unreachable { id: u64 },
    SnapshotFailed { id: u64 },
    TransferLeader { to: u64 },
    Stop,
}

/// A handle to a running node: propose commands, feed peer messages, read status and state.
#[derive(Clone)]
pub struct NodeHandle {
    requests: mpsc::UnboundedSender<Request>,
    inbound: mpsc::UnboundedSender<(u64, Message)>,
    status: watch::Receiver<NodeStatus>,
    state: watch::Receiver<Arc<State>>,
    history: Arc<History>,
    ended: watch::Receiver<Option<String>>,
    refusals: Arc<Refusals>,
}

impl NodeHandle {
    /// Turns `Some` once the driver thread has ended, with how: after [`NodeHandle::stop`], or
    /// because it panicked (raft-rs treats some inconsistencies as fatal). A node whose driver is
    /// gone serves nothing but stale state, so its owner must not go on as if it ran.
    pub fn ended(&self) -> watch::Receiver<Option<String>> {
        self.ended.clone()
    }

    /// Proposes an encoded `weft_state` command and waits for its result once applied.
    pub async fn propose(&self, command: Vec<u8>) -> Result<Applied, RaftError> {
        let (reply, rx) = oneshot::channel();
        self.requests.send(Request::Propose { command, reply }).map_err(|_| RaftError::Stopped)?;
        rx.await.map_err(|_| RaftError::Stopped)?
    }

    /// Adds a voter (a conf change through the log).
    pub async fn add_voter(&self, id: u64) -> Result<(), RaftError> {
        self.change_membership(Membership::AddVoter(id)).await
    }

    /// Proposes one membership change and waits until it is applied.
    pub async fn change_membership(&self, change: Membership) -> Result<(), RaftError> {
        let (reply, rx) = oneshot::channel();
        self.requests.send(Request::Membership { change, reply }).map_err(|_| RaftError::Stopped)?;
        rx.await.map_err(|_| RaftError::Stopped)?
    }

    /// A linearizable read: confirms with the leader (ReadIndex) that no newer write exists, waits
    /// until this node has applied up to there, and returns the state.
    pub async fn read_index(&self) -> Result<Arc<State>, RaftError> {
        let (reply, rx) = oneshot::channel();
        self.requests.send(Request::ReadIndex { reply }).map_err(|_| RaftError::Stopped)?;
        rx.await.map_err(|_| RaftError::Stopped)?
    }

    /// Tells raft that sending to `id` failed, so it probes instead of streaming to it.
    pub fn report_unreachable(&self, id: u64) {
        let _ = self.requests.send(Request::Unreachable { id });
    }

    /// Tells raft that a snapshot sent to `id` may not have arrived, so it probes and sends
    /// another instead of waiting for an answer that will never come.
    pub fn report_snapshot_failed(&self, id: u64) {
        let _ = self.requests.send(Request::SnapshotFailed { id });
    }

    /// Asks the leader (this node) to hand leadership to `to`.
    pub fn transfer_leader(&self, to: u64) {
        let _ = self.requests.send(Request::TransferLeader { to });
    }

    /// Stops the driver: pending calls fail with `Stopped`; the log stays on disk.
    pub fn stop(&self) {
        let _ = self.requests.send(Request::Stop);
    }

    /// The event history, for Watch streams.
    pub fn history(&self) -> &Arc<History> {
        &self.history
    }

    /// Hands a message to the node that arrived from the peer `sender` (the node its transport
    /// authenticated). It reaches raft-rs only if [`guard::admit`] lets it through on the driver
    /// thread; a refused message is dropped and counted in [`NodeHandle::refusals`].
    pub fn step(&self, sender: u64, message: Message) {
        let _ = self.inbound.send((sender, message));
    }

    /// Peer messages refused before raft-rs saw them, by reason.
    pub fn refusals(&self) -> &Arc<Refusals> {
        &self.refusals
    }

    /// The latest status.
    pub fn status(&self) -> NodeStatus {
        self.status.borrow().clone()
    }

    /// A receiver of status changes.
    pub fn watch_status(&self) -> watch::Receiver<NodeStatus> {
        self.status.clone()
    }

    /// A receiver of every newly applied state.
    pub fn watch_state(&self) -> watch::Receiver<Arc<State>> {
        self.state.clone()
    }

    /// The applied state.
    pub fn state(&self) -> Arc<State> {
        self.state.borrow().clone()
    }
}

/// Proposal envelope: origin node, request id, command.
fn envelope(origin: u64, request: u64, command: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + command.len());
    out.extend_from_slice(&origin.to_be_bytes());
    out.extend_from_slice(&request.to_be_bytes());
    out.extend_from_slice(command);
    out
}

fn open_envelope(data: &[u8]) -> Option<(u64, u64, &[u8])> {
    if data.len() < 16 {
        return None;
    }
    let origin = u64::from_be_bytes(data[..8].try_into().ok()?);
    let request = u64::from_be_bytes(data[8..16].try_into().ok()?);
    Some((origin, request, &data[16..]))
}

struct Driver {
    id: u64,
    raw: RawNode<EngineStorage>,
    storage: EngineStorage,
    state: State,
    applied: u64,
    next_request: u64,
    pending: HashMap<u64, Reply>,
    pending_conf: HashMap<u64, oneshot::Sender<Result<(), RaftError>>>,
    pending_reads: HashMap<u64, ReadReply>,
    /// Reads confirmed by the leader, waiting for this node to apply up to their index.
    confirmed_reads: Vec<(u64, ReadReply)>,
    history: Arc<History>,
    /// A conf change was applied: snapshot at the next chance.
    snapshot_due: bool,
    /// Results to hand out once the state they produced is published (read-your-writes).
    replies: Vec<(Reply, Result<Applied, RaftError>)>,
    /// Membership results, likewise handed out after the status shows the new configuration.
    conf_replies: Vec<(ConfReply, Result<(), RaftError>)>,
    transport: Arc<dyn Transport>,
    status: watch::Sender<NodeStatus>,
    state_tx: watch::Sender<Arc<State>>,
    refusals: Arc<Refusals>,
}

/// Starts node `id` on `storage`, its driver on a thread of its own. `peers` are the initial
/// voters when the log is empty (a bootstrap); an initialised log keeps its own membership.
pub fn start(
    id: u64,
    peers: &[u64],
    storage: EngineStorage,
    transport: Arc<dyn Transport>,
) -> Result<NodeHandle, RaftError> {
    let config = raft::Config {
        id,
        election_tick: 10,
        heartbeat_tick: 2,
        pre_vote: true,
        check_quorum: true,
        max_size_per_msg: 1 << 20,
        max_inflight_msgs: 256,
        ..raft::Config::default()
    };
    config.validate().map_err(|e| RaftError::Config(e.to_string()))?;
    if !storage.is_initialized() && !peers.is_empty() {
        let conf = raft::eraftpb::ConfState { voters: peers.to_vec(), ..Default::default() };
        let mut snapshot = Snapshot::default();
        snapshot.mut_metadata().set_conf_state(conf);
        // Index and term 1, not 0: a node that joins later has an empty log (last index 0), so
        // its log does not match the leader's at the start and it is sent this snapshot, which
        // carries the founding voters. At index 0 it would apply only the conf changes that
        // follow and never learn of the founders.
        snapshot.mut_metadata().index = 1;
        snapshot.mut_metadata().term = 1;
        snapshot.set_data(State::new().snapshot_bytes().into());
        storage.install_snapshot(&snapshot)?;
    }
    let snap = storage.snapshot_data();
    let state = if snap.get_data().is_empty() {
        State::new()
    } else {
        State::from_snapshot_bytes(snap.get_data()).map_err(|e| RaftError::Storage(e.to_string()))?
    };
    let applied = snap.get_metadata().index;
    let logger = slog::Logger::root(slog::Discard, slog::o!());
    let mut config = config;
    config.applied = applied;
    let raw =
        RawNode::new(&config, storage.clone(), &logger).map_err(|e| RaftError::Config(e.to_string()))?;
    let (requests_tx, requests) = mpsc::unbounded_channel();
    let (inbound_tx, inbound) = mpsc::unbounded_channel();
    let (status, status_rx) = watch::channel(NodeStatus { id, ..NodeStatus::default() });
    let (state_tx, state_rx) = watch::channel(Arc::new(state.clone()));
    let history = Arc::new(History::new(state_rx.borrow().clone()));
    let refusals = Arc::new(Refusals::default());
    let driver = Driver {
        refusals: refusals.clone(),
        id,
        raw,
        storage,
        state,
        applied,
        next_request: 1,
        pending: HashMap::new(),
        pending_conf: HashMap::new(),
        pending_reads: HashMap::new(),
        confirmed_reads: Vec::new(),
        history: history.clone(),
        snapshot_due: false,
        conf_replies: Vec::new(),
        replies: Vec::new(),
        transport,
        status,
        state_tx,
    };
    // The driver gets a thread of its own: its fsyncs block, and on a shared worker they would
    // hold up whatever that worker runs next (often the very reply the driver just sent).
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .map_err(|e| RaftError::Config(format!("raft driver runtime: {e}")))?;
    let (ended_tx, ended) = watch::channel(None);
    std::thread::Builder::new()
        .name(format!("raft-{id:x}"))
        .spawn(move || {
            let run = std::panic::AssertUnwindSafe(|| runtime.block_on(driver.run(requests, inbound)));
            let how = match std::panic::catch_unwind(run) {
                Ok(()) => "the raft driver stopped".to_string(),
                Err(panic) => {
                    let message = panic
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_default();
                    format!("the raft driver panicked: {message}")
                }
            };
            let _ = ended_tx.send(Some(how));
        })
        .map_err(|e| RaftError::Config(format!("raft driver thread: {e}")))?;
    Ok(NodeHandle {
        requests: requests_tx,
        inbound: inbound_tx,
        status: status_rx,
        state: state_rx,
        history,
        ended,
        refusals,
    })
}

impl Driver {
    async fn run(
        mut self,
        mut requests: mpsc::UnboundedReceiver<Request>,
        mut inbound: mpsc::UnboundedReceiver<(u64, Message)>,
    ) {
        let mut ticker = tokio::time::interval(TICK);
        loop {
            tokio::select! {
                _ = ticker.tick() => { self.raw.tick(); }
                message = inbound.recv() => match message {
                    Some((sender, m)) => self.step(sender, m),
                    None => return,
                },
                request = requests.recv() => match request {
                    Some(Request::Stop) | None => return,
                    Some(r) => self.handle(r),
                },
            }
            // Take everything that is already waiting before the next ready: concurrent
            // proposals and peer messages then share one fsynced write instead of one each.
            while let Ok((sender, m)) = inbound.try_recv() {
                self.step(sender, m);
            }
            while let Ok(r) = requests.try_recv() {
                if matches!(r, Request::Stop) {
                    return;
                }
                self.handle(r);
            }
            if let Err(e) = self.on_ready() {
                // Storage failure: stop rather than diverge.
                for (_, reply) in self.pending.drain() {
                    let _ = reply.send(Err(e.clone()));
                }
                return;
            }
        }
    }

    /// Steps a peer's message into raft-rs once the guard has admitted it.
    fn step(&mut self, sender: u64, message: Message) {
        let conf = self.raw.raft.prs().conf().to_conf_state();
        let view = guard::View {
            id: self.id,
            members: conf.voters.iter().chain(&conf.learners).copied().collect(),
            last_index: self.raw.raft.raft_log.last_index(),
        };
        match guard::admit(&view, sender, &message, |data| State::from_snapshot_bytes(data).is_ok()) {
            Ok(()) => {
                let _ = self.raw.step(message);
            }
            Err(reason) => self.refusals.count(reason),
        }
    }

    fn handle(&mut self, request: Request) {
        match request {
            Request::Propose { command, reply } => {
                if self.raw.raft.leader_id == raft::INVALID_ID {
                    let _ = reply.send(Err(RaftError::NoLeader));
                    return;
                }
                let id = self.next_request;
                self.next_request += 1;
                match self.raw.propose(vec![], envelope(self.id, id, &command)) {
                    Ok(()) => {
                        self.pending.insert(id, reply);
                    }
                    Err(e) => {
                        let _ = reply.send(Err(RaftError::Proposal(e.to_string())));
                    }
                }
            }
            Request::Unreachable { id } => self.raw.report_unreachable(id),
            Request::SnapshotFailed { id } => self.raw.report_snapshot(id, raft::SnapshotStatus::Failure),
            Request::TransferLeader { to } => self.raw.transfer_leader(to),
            Request::Stop => {}
            Request::ReadIndex { reply } => {
                if self.raw.raft.leader_id == raft::INVALID_ID {
                    let _ = reply.send(Err(RaftError::NoLeader));
                    return;
                }
                let id = self.next_request;
                self.next_request += 1;
                self.raw.read_index(id.to_be_bytes().to_vec());
                self.pending_reads.insert(id, reply);
            }
            Request::Membership { change, reply } => {
                if self.raw.raft.state != StateRole::Leader {
                    let _ = reply.send(Err(RaftError::NotLeader(self.raw.raft.leader_id)));
                    return;
                }
                let mut cc = ConfChange::default();
                let (kind, id) = match change {
                    Membership::AddVoter(id) => (ConfChangeType::AddNode, id),
                    Membership::AddLearner(id) => (ConfChangeType::AddLearnerNode, id),
                    Membership::Remove(id) => (ConfChangeType::RemoveNode, id),
                };
                cc.set_change_type(kind);
                cc.node_id = id;
                let request = self.next_request;
                self.next_request += 1;
                match self.raw.propose_conf_change(envelope(self.id, request, &[]), cc) {
                    Ok(()) => {
                        self.pending_conf.insert(request, reply);
                    }
                    Err(e) => {
                        let _ = reply.send(Err(RaftError::Proposal(e.to_string())));
                    }
                }
            }
        }
    }

    fn apply_entries(&mut self, entries: Vec<Entry>) -> Result<(), RaftError> {
        for entry in entries {
            self.applied = entry.index;
            if entry.data.is_empty() {
                continue; // the empty entry a new leader appends
            }
            match entry.get_entry_type() {
                EntryType::EntryNormal => {
                    let Some((origin, request, command)) = open_envelope(&entry.data) else { continue };
                    let result: Result<Applied, StateError> = self.state.apply_bytes(command);
                    if let Ok(applied) = &result {
                        self.history.push(pb::EventBatch {
                            revision: applied.revision,
                            events: applied.events.clone(),
                        });
                    }
                    if origin == self.id
                        && let Some(reply) = self.pending.remove(&request)
                    {
                        self.replies.push((reply, result.map_err(RaftError::Rejected)));
                    }
                }
                EntryType::EntryConfChange => {
                    let mut cc = ConfChange::default();
                    cc.merge_from_bytes(&entry.data).map_err(|e| RaftError::Storage(e.to_string()))?;
                    // An impossible change (say, removing the last voter) is refused the same
                    // way on every member; the configuration stays as it was.
                    // After a restart, committed entries are replayed from the last snapshot;
                    // conf changes the stored conf state already reflects are not applied twice.
                    let result = if entry.index <= self.storage.conf_index() {
                        Ok(())
                    } else {
                        match self.raw.apply_conf_change(&cc) {
                            Ok(conf) => {
                                self.storage.persist_conf(&conf, entry.index)?;
                                // A node being added is sent the stored snapshot; raft-rs refuses
                                // one whose configuration lacks the node, so take a fresh one.
                                self.snapshot_due = true;
                                Ok(())
                            }
                            Err(e) => Err(RaftError::Proposal(e.to_string())),
                        }
                    };
                    if let Some((origin, request, _)) = open_envelope(&entry.context)
                        && origin == self.id
                        && let Some(reply) = self.pending_conf.remove(&request)
                    {
                        self.conf_replies.push((reply, result));
                    }
                }
                EntryType::EntryConfChangeV2 => {}
            }
        }
        Ok(())
    }

    fn on_ready(&mut self) -> Result<(), RaftError> {
        if !self.raw.has_ready() {
            return Ok(());
        }
        let mut ready = self.raw.ready();
        if !ready.messages().is_empty() {
            self.transport.send(ready.take_messages());
        }
        if !ready.snapshot().is_empty() {
            let snapshot = ready.snapshot().clone();
            self.storage.install_snapshot(&snapshot)?;
            self.state = State::from_snapshot_bytes(snapshot.get_data())
                .map_err(|e| RaftError::Storage(e.to_string()))?;
            self.applied = snapshot.get_metadata().index;
            self.history.reset(Arc::new(self.state.clone()));
        }
        for read in ready.take_read_states() {
            let Ok(ctx) = <[u8; 8]>::try_from(read.request_ctx.as_slice()) else { continue };
            if let Some(reply) = self.pending_reads.remove(&u64::from_be_bytes(ctx)) {
                self.confirmed_reads.push((read.index, reply));
            }
        }
        let committed = ready.take_committed_entries();
        if !committed.is_empty() {
            self.apply_entries(committed)?;
            // Committed means durable on a quorum: answer now, not after this node's own fsync
            // of the new entries below (under load that would add a disk flush to every reply).
            self.hand_out();
        }
        self.storage.persist(ready.entries(), ready.hs())?;
        if !ready.persisted_messages().is_empty() {
            self.transport.send(ready.take_persisted_messages());
        }
        let mut light = self.raw.advance(ready);
        if let Some(commit) = light.commit_index() {
            let mut hs = self.raw.raft.hard_state();
            hs.commit = commit;
            self.storage.persist(&[], Some(&hs))?;
        }
        if !light.messages().is_empty() {
            self.transport.send(light.take_messages());
        }
        let committed = light.take_committed_entries();
        self.apply_entries(committed)?;
        self.raw.advance_apply();
        self.maybe_snapshot()?;
        self.hand_out();
        Ok(())
    }

    /// Publishes the applied state and status, then hands out the results and reads waiting for
    /// them (after the publish, so a caller reads its own write).
    fn hand_out(&mut self) {
        self.publish();
        for (reply, result) in self.replies.drain(..) {
            let _ = reply.send(result);
        }
        for (reply, result) in self.conf_replies.drain(..) {
            let _ = reply.send(result);
        }
        if !self.confirmed_reads.is_empty() {
            let state = self.state_tx.borrow().clone();
            let applied = self.applied;
            let (done, waiting): (Vec<_>, Vec<_>) =
                self.confirmed_reads.drain(..).partition(|(index, _)| *index <= applied);
            self.confirmed_reads = waiting;
            for (_, reply) in done {
                let _ = reply.send(Ok(state.clone()));
            }
        }
    }

    fn maybe_snapshot(&mut self) -> Result<(), RaftError> {
        let last = self.storage.snapshot_data().get_metadata().index;
        if self.applied < last + SNAPSHOT_EVERY && !self.snapshot_due {
            return Ok(());
        }
        self.snapshot_due = false;
        let mut snapshot = Snapshot::default();
        let term = raft::Storage::term(&self.storage, self.applied)
            .map_err(|e| RaftError::Storage(e.to_string()))?;
        snapshot.mut_metadata().index = self.applied;
        snapshot.mut_metadata().term = term;
        snapshot.mut_metadata().set_conf_state(self.raw.raft.prs().conf().to_conf_state());
        snapshot.set_data(self.state.snapshot_bytes().into());
        self.storage.compact_with(&snapshot)
    }

    fn publish(&mut self) {
        let leader = self.raw.raft.leader_id;
        let conf = self.raw.raft.prs().conf().to_conf_state();
        let matched = if self.raw.raft.state == StateRole::Leader {
            self.raw.raft.prs().iter().map(|(id, pr)| (*id, pr.matched)).collect()
        } else {
            BTreeMap::new()
        };
        let status = NodeStatus {
            id: self.id,
            leader,
            term: self.raw.raft.term,
            commit: self.raw.raft.raft_log.committed,
            applied: self.applied,
            revision: self.state.revision(),
            last_index: self.raw.raft.raft_log.last_index(),
            voters: conf.voters.clone(),
            learners: conf.learners.clone(),
            matched,
            conf_pending: self.raw.raft.has_pending_conf(),
        };
        self.status.send_if_modified(|s| {
            let changed = *s != status;
            *s = status.clone();
            changed
        });
        if self.state_tx.borrow().revision() != self.state.revision() {
            let state = Arc::new(self.state.clone());
            self.history.publish(state.clone());
            self.state_tx.send_replace(state);
        }
        if self.raw.raft.state != StateRole::Leader && leader == raft::INVALID_ID {
            // Nobody to forward to: fail pending proposals fast instead of letting them hang.
            for (_, reply) in self.pending.drain() {
                let _ = reply.send(Err(RaftError::LeaderLost));
            }
            for (_, reply) in self.pending_reads.drain() {
                let _ = reply.send(Err(RaftError::NoLeader));
            }
        }
    }
}
