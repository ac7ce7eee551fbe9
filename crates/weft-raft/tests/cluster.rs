//! Three raft nodes in one process over an in-memory network (the gRPC transport comes with the
//! agent): election, proposals from every node (followers forward to the leader), identical
//! state everywhere, the leader crashing, and a crashed node restarting from its raft-engine log.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use raft::eraftpb::Message;
use weft_raft::{EngineStorage, NodeHandle, RaftError, Transport, start};
use weft_state::{Driver, Outcome, Role, cmd};

#[derive(Default)]
struct Net {
    nodes: Mutex<HashMap<u64, NodeHandle>>,
    down: Mutex<HashSet<u64>>,
}

struct Link(Arc<Net>);

impl Transport for Link {
    fn send(&self, messages: Vec<Message>) {
        let down = self.0.down.lock().unwrap().clone();
        let nodes = self.0.nodes.lock().unwrap();
        for m in messages {
            if down.contains(&m.from) || down.contains(&m.to) {
                continue;
            }
            if let Some(node) = nodes.get(&m.to) {
                node.step(m.from, m);
            }
        }
    }
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn boot(net: &Arc<Net>, dir: &std::path::Path, id: u64, peers: &[u64]) -> NodeHandle {
    let storage = EngineStorage::open(&dir.join(format!("node{id}"))).unwrap();
    let node = start(id, peers, storage, Arc::new(Link(net.clone()))).unwrap();
    net.nodes.lock().unwrap().insert(id, node.clone());
    node
}

async fn leader_of(net: &Arc<Net>, ids: &[u64]) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let leaders: BTreeSet<u64> = {
            let nodes = net.nodes.lock().unwrap();
            ids.iter().filter_map(|i| nodes.get(i)).map(|n| n.status().leader).collect()
        };
        if leaders.len() == 1 && !leaders.contains(&0) && ids.contains(leaders.iter().next().unwrap()) {
            return *leaders.iter().next().unwrap();
        }
        assert!(Instant::now() < deadline, "no agreed leader: {leaders:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until every node's state is at least at `revision` and all are byte-identical.
async fn converge(nodes: &[NodeHandle], revision: u64) -> Vec<u8> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ready = nodes.iter().all(|n| n.state().revision() >= revision);
        let snaps: Vec<Vec<u8>> = nodes.iter().map(|n| n.state().snapshot_bytes()).collect();
        if ready && snaps.windows(2).all(|w| w[0] == w[1]) {
            return snaps[0].clone();
        }
        assert!(Instant::now() < deadline, "states never converged");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn propose_retrying(node: &NodeHandle, command: Vec<u8>) -> weft_state::Applied {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match node.propose(command.clone()).await {
            Ok(applied) => return applied,
            Err(RaftError::NoLeader | RaftError::LeaderLost | RaftError::Proposal(_))
                if Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(e) => panic!("{e}"),
        }
    }
}

fn encode(c: &weft_state::pb::Command) -> Vec<u8> {
    use prost::Message as _;
    c.encode_to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_agree_survive_a_leader_crash_and_recover_from_disk() {
    let dir = TempDir(std::env::temp_dir().join(format!("weft-raft-{}", std::process::id())));
    let net = Arc::new(Net::default());
    let mut nodes: Vec<NodeHandle> = (1..=3).map(|id| boot(&net, &dir.0, id, &[1, 2, 3])).collect();
    let leader = leader_of(&net, &[1, 2, 3]).await;

    for id in 1..=3 {
        let c = cmd::register_node(id, &format!("m{id}"), &format!("198.51.100.{id}"), Role::Manager, 0);
        propose_retrying(&nodes[0], encode(&c)).await;
    }
    propose_retrying(
        &nodes[1],
        encode(&cmd::create_network("app", Driver::Overlay, &["10.44.0.0/16"], 0, 0)),
    )
    .await;
    // 60 allocations, from every node at once.
    let mut tasks = Vec::new();
    for i in 0..60u64 {
        let node = nodes[(i % 3) as usize].clone();
        tasks.push(tokio::spawn(async move {
            let c = cmd::allocate_endpoint("app", 1 + i % 3, &format!("c{i}"), "", "");
            propose_retrying(&node, encode(&c)).await
        }));
    }
    let mut ips = BTreeSet::new();
    let mut revision = 0;
    for t in tasks {
        let applied = t.await.unwrap();
        revision = revision.max(applied.revision);
        let Outcome::Endpoint(e) = applied.outcome else { panic!() };
        assert!(ips.insert(e.ips[0]), "address handed out twice");
    }
    converge(&nodes, revision).await;
    // A rejected command comes back as the state machine's error, through raft.
    let err = nodes[2].propose(encode(&cmd::delete_network("nope"))).await.unwrap_err();
    assert!(err.to_string().contains("unknown network"), "{err}");

    // The leader crashes: the other two elect a new one and keep accepting writes.
    net.down.lock().unwrap().insert(leader);
    net.nodes.lock().unwrap().remove(&leader);
    nodes.retain(|n| n.status().id != leader);
    let survivors: Vec<u64> = (1..=3).filter(|i| *i != leader).collect();
    let new_leader = leader_of(&net, &survivors).await;
    assert_ne!(new_leader, leader);
    for i in 60..70u64 {
        let c = cmd::allocate_endpoint("app", survivors[0], &format!("c{i}"), "", "");
        revision = propose_retrying(&nodes[0], encode(&c)).await.revision;
    }
    // Read-your-writes: the proposer's own state already holds its result.
    assert_eq!(nodes[0].state().revision(), revision);
    let state = converge(&nodes, revision).await;
    tokio::time::sleep(Duration::from_millis(300)).await; // the crashed driver has stopped

    // It comes back from its own log and catches up to the same state.
    net.down.lock().unwrap().remove(&leader);
    let back = boot(&net, &dir.0, leader, &[]);
    nodes.push(back);
    let caught_up = converge(&nodes, revision).await;
    if caught_up != state {
        let a = weft_state::State::from_snapshot_bytes(&caught_up).unwrap();
        let b = weft_state::State::from_snapshot_bytes(&state).unwrap();
        panic!(
            "caught up rev {} endpoints {}, before rev {} endpoints {}",
            a.revision(),
            a.endpoints().count(),
            b.revision(),
            b.endpoints().count()
        );
    }
    assert_eq!(nodes.last().unwrap().state().endpoints().count(), 70);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_changes_are_answered_once_applied_and_survive_a_restart() {
    let dir = TempDir(std::env::temp_dir().join(format!("weft-raft-members-{}", std::process::id())));
    let net = Arc::new(Net::default());
    let one = boot(&net, &dir.0, 1, &[1]);
    leader_of(&net, &[1]).await;
    let two = boot(&net, &dir.0, 2, &[]);
    let within = |f| tokio::time::timeout(Duration::from_secs(3), f);
    within(one.change_membership(weft_raft::Membership::AddLearner(2))).await.expect("answered").unwrap();
    within(one.change_membership(weft_raft::Membership::AddVoter(2))).await.expect("answered").unwrap();
    assert_eq!(one.status().voters, vec![1, 2]);
    // The joiner knows the founding voter too (it got the founding snapshot, not just the changes).
    let deadline = Instant::now() + Duration::from_secs(10);
    while two.status().voters != vec![1, 2] {
        assert!(Instant::now() < deadline, "joined node: {:?}", two.status());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Node 2 restarts from its log and still knows both voters (conf changes are not replayed
    // over the stored configuration).
    net.nodes.lock().unwrap().remove(&2);
    drop(two);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let two = boot(&net, &dir.0, 2, &[]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while two.status().voters != vec![1, 2] || two.status().leader == 0 {
        assert!(Instant::now() < deadline, "restarted node: {:?}", two.status());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
