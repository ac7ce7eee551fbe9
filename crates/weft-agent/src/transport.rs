//! The Raft peer transport over gRPC: per peer one bounded queue and one task that keeps a
//! client stream open and sends batches of raft-rs messages (raft's own protobuf encoding). A full
//! queue drops messages and reports the peer unreachable (raft retransmits), so a slow or dead
//! peer never holds up the others.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;

use protobuf::Message as _;
use raft::eraftpb::Message;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use weft_proto::v1 as pb;
use weft_proto::v1::raft_transport_client::RaftTransportClient;
use weft_raft::{NodeHandle, Refusal, Transport};

use crate::authz::{self, Caller, caller_of};

use crate::peers::Peers;

/// Messages queued per peer before they are dropped.
const QUEUE: usize = 4096;
/// Messages per frame at most.
const BATCH: usize = 256;

struct Shared {
    peers: Arc<Peers>,
    /// Addresses learned outside the state (seeds from joining).
    seeds: RwLock<HashMap<u64, String>>,
    node: OnceLock<NodeHandle>,
}

impl Shared {
    fn addr(&self, id: u64) -> Option<String> {
        if let Some(node) = self.node.get()
            && let Some(n) = node.state().node(id)
            && !n.api_addr.is_empty()
        {
            return Some(n.api_addr.clone());
        }
        self.seeds.read().unwrap().get(&id).cloned()
    }

    fn unreachable(&self, id: u64) {
        if let Some(node) = self.node.get() {
            node.report_unreachable(id);
        }
    }

    /// Messages to `id` were lost (among them a snapshot, if `snapshot`).
    fn lost(&self, id: u64, snapshot: bool) {
        self.unreachable(id);
        if snapshot && let Some(node) = self.node.get() {
            node.report_snapshot_failed(id);
        }
    }
}

/// The transport a manager's raft node sends with.
#[derive(Clone)]
pub struct GrpcTransport {
    shared: Arc<Shared>,
    queues: Arc<Mutex<HashMap<u64, mpsc::Sender<Message>>>>,
    /// The daemon's runtime: peer streams run there, not on the raft driver's own thread that
    /// calls `send`.
    runtime: tokio::runtime::Handle,
}

impl GrpcTransport {
    /// A transport dialing through `peers`. Call it inside the runtime its peer streams run on.
    pub fn new(peers: Arc<Peers>) -> GrpcTransport {
        GrpcTransport {
            shared: Arc::new(Shared { peers, seeds: RwLock::new(HashMap::new()), node: OnceLock::new() }),
            queues: Arc::new(Mutex::new(HashMap::new())),
            runtime: tokio::runtime::Handle::current(),
        }
    }

    /// Connects the transport to its node (for unreachable reports and addresses from the state).
    pub fn attach(&self, node: NodeHandle) {
        let _ = self.shared.node.set(node);
    }

    /// Records a peer's address known before the state has it.
    pub fn add_seed(&self, id: u64, addr: String) {
        self.shared.seeds.write().unwrap().insert(id, addr);
    }
}

impl Transport for GrpcTransport {
    fn send(&self, messages: Vec<Message>) {
        let mut queues = self.queues.lock().unwrap();
        for m in messages {
            let to = m.to;
            let queue = queues.entry(to).or_insert_with(|| {
                let (tx, rx) = mpsc::channel(QUEUE);
                self.runtime.spawn(peer_loop(to, rx, self.shared.clone()));
                tx
            });
            if let Err(e) = queue.try_send(m) {
                let snapshot = match &e {
                    mpsc::error::TrySendError::Full(m) | mpsc::error::TrySendError::Closed(m) => {
                        is_snapshot(m)
                    }
                };
                self.shared.lost(to, snapshot);
            }
        }
    }
}

fn is_snapshot(m: &Message) -> bool {
    m.get_msg_type() == raft::eraftpb::MessageType::MsgSnapshot
}

async fn peer_loop(id: u64, mut rx: mpsc::Receiver<Message>, shared: Arc<Shared>) {
    let mut pending: Option<Message> = None;
    loop {
        let first = match pending.take() {
            Some(m) => m,
            None => match rx.recv().await {
                Some(m) => m,
                None => return,
            },
        };
        let channel = shared.addr(id).and_then(|addr| shared.peers.channel_to_node(&addr, id).ok());
        let Some(channel) = channel else {
            shared.lost(id, is_snapshot(&first));
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let (out, out_rx) = mpsc::channel::<pb::RaftBatch>(16);
        let mut client = RaftTransportClient::new(channel);
        let call =
            tokio::spawn(
                async move { client.stream(tokio_stream::wrappers::ReceiverStream::new(out_rx)).await },
            );
        // Whether this stream carried a snapshot: if it breaks, that snapshot may be lost.
        let mut carried_snapshot = false;
        let mut next = Some(first);
        loop {
            let mut batch = pb::RaftBatch::default();
            while batch.messages.len() < BATCH {
                let Some(m) = next.take().or_else(|| rx.try_recv().ok()) else { break };
                carried_snapshot |= is_snapshot(&m);
                batch.messages.push(m.write_to_bytes().unwrap_or_default());
            }
            if batch.messages.is_empty() {
                tokio::select! {
                    m = rx.recv() => match m {
                        Some(m) => { next = Some(m); continue; }
                        None => return,
                    },
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {
                        if call.is_finished() { break; }
                        continue;
                    }
                }
            }
            if call.is_finished() || out.send(batch).await.is_err() {
                break;
            }
        }
        // The stream broke: raft resends what was lost once told the peer is unreachable.
        call.abort();
        shared.lost(id, carried_snapshot);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The receiving side: steps every message of a manager's stream into the local node, which
/// admits it only if its sender is the node the stream's certificate names and a member
/// ([`weft_raft::guard`]). A stream whose node is removed from the cluster is cut at its next
/// batch or revocation tick.
pub struct RaftReceiver {
    node: NodeHandle,
    /// Turns true when this manager's role ends: open streams end with it.
    stopping: tokio::sync::watch::Receiver<bool>,
}

impl RaftReceiver {
    /// Receives for `node` until `stopping` turns true.
    pub fn new(node: NodeHandle, stopping: tokio::sync::watch::Receiver<bool>) -> RaftReceiver {
        RaftReceiver { node, stopping }
    }
}

#[tonic::async_trait]
impl pb::raft_transport_server::RaftTransport for RaftReceiver {
    async fn stream(
        &self,
        request: tonic::Request<tonic::Streaming<pb::RaftBatch>>,
    ) -> Result<tonic::Response<pb::RaftAck>, tonic::Status> {
        let caller = caller_of(&request);
        authz::decide("/weft.v1.RaftTransport/Stream", &caller)?;
        let Some(sender) = caller.node() else {
            return Err(crate::authz::denied("the raft transport is for manager nodes only"));
        };
        let revoked = || self.node.state().is_revoked(sender);
        let mut stream = request.into_inner();
        let mut tick = tokio::time::interval(crate::service::REVOCATION_TICK);
        let mut stopping = self.stopping.clone();
        loop {
            let batch = tokio::select! {
                _ = stopping.wait_for(|s| *s) => break,
                batch = stream.next() => match batch {
                    Some(batch) => batch?,
                    None => break,
                },
                _ = tick.tick() => {
                    if revoked() { break; }
                    continue;
                }
            };
            if revoked() {
                break;
            }
            for bytes in batch.messages {
                let mut m = Message::default();
                match m.merge_from_bytes(&bytes) {
                    Ok(()) => self.node.step(sender, m),
                    Err(_) => self.node.refusals().count(Refusal::Garbled),
                }
            }
        }
        if revoked() {
            return Err(authz::decide("", &Caller::Revoked { id: sender }).unwrap_err());
        }
        Ok(tonic::Response::new(pb::RaftAck {}))
    }
}
