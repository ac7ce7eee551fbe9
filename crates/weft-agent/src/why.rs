//! `weft net why` in the agent. Workers have no listener, so hosts are not asked directly: the
//! leader marks the hosts on the path as wanted ([`ReportBoard`]), each learns it from the answer
//! to its next heartbeat, runs the echo probes asked of it, and sends its report
//! ([`crate::report::host_report`]) in a heartbeat right away, through its manager as every
//! heartbeat goes. The leader then explains the path with `weft-why`'s pure functions ([`answer`]).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tonic::{Code, Status};
use weft_proto::v1 as pb;
use weft_state::{NodeId, State, Status as NodeStatus};
use weft_why::WhyError;

use crate::reason;

/// How long the leader waits for the reports of a path. A host learns it is wanted within a
/// heartbeat (1 s by default) and its probes take at most [`crate::report::PROBE_TIMEOUT`].
pub const REPORT_WAIT: Duration = Duration::from_secs(6);

/// A want nobody collects any more (its `net why` gave up, leadership moved) is dropped after this.
const WANT_TTL: Duration = Duration::from_secs(30);

#[derive(Debug)]
struct Wanted {
    probes: BTreeSet<(u32, NodeId)>,
    since: Instant,
}

#[derive(Debug, Default)]
struct Board {
    wanted: BTreeMap<NodeId, Wanted>,
    reports: BTreeMap<NodeId, (Instant, pb::HostReport)>,
}

/// The leader's table of wanted and received host reports (on a follower manager, the wants the
/// leader passed on for its workers).
#[derive(Debug)]
pub struct ReportBoard {
    board: Mutex<Board>,
    arrived: tokio::sync::Notify,
    /// Bumped by every want: the heartbeat sessions tell their hosts at once.
    wants: tokio::sync::watch::Sender<u64>,
}

impl Default for ReportBoard {
    fn default() -> ReportBoard {
        ReportBoard {
            board: Mutex::default(),
            arrived: tokio::sync::Notify::new(),
            wants: tokio::sync::watch::Sender::new(0),
        }
    }
}

impl ReportBoard {
    /// Marks `node`'s report as wanted, with `probes` (VNI, peer) run first.
    pub fn want(&self, node: NodeId, probes: &[(u32, NodeId)]) {
        let mut b = self.board.lock().unwrap();
        let w =
            b.wanted.entry(node).or_insert_with(|| Wanted { probes: BTreeSet::new(), since: Instant::now() });
        w.probes.extend(probes.iter().copied());
        drop(b);
        self.wants.send_modify(|generation| *generation += 1);
    }

    /// Changes whenever a report is wanted.
    pub fn wants(&self) -> tokio::sync::watch::Receiver<u64> {
        self.wants.subscribe()
    }

    /// What `node` is asked for in the answer to its heartbeat, if anything.
    pub fn wanted(&self, node: NodeId) -> Option<pb::ReportWanted> {
        let mut b = self.board.lock().unwrap();
        b.wanted.retain(|_, w| w.since.elapsed() < WANT_TTL);
        b.wanted.get(&node).map(|w| pb::ReportWanted {
            probes: w.probes.iter().map(|(vni, node)| pb::ProbeTarget { vni: *vni, node: *node }).collect(),
        })
    }

    /// A report came with a heartbeat: kept, and whoever waits for it woken.
    pub fn store(&self, report: pb::HostReport) {
        let mut b = self.board.lock().unwrap();
        b.wanted.remove(&report.node_id);
        b.reports.insert(report.node_id, (Instant::now(), report));
        drop(b);
        self.arrived.notify_waiters();
    }

    /// The reports of `nodes` received after `since`, waiting up to `wait` for the missing ones.
    pub async fn collect(
        &self,
        nodes: &BTreeSet<NodeId>,
        since: Instant,
        wait: Duration,
    ) -> BTreeMap<NodeId, pb::HostReport> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let arrived = self.arrived.notified();
            let found: BTreeMap<NodeId, pb::HostReport> = {
                let b = self.board.lock().unwrap();
                nodes
                    .iter()
                    .filter_map(|n| {
                        b.reports.get(n).filter(|(at, _)| *at >= since).map(|(_, r)| (*n, r.clone()))
                    })
                    .collect()
            };
            if found.len() == nodes.len() {
                return found;
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                return found;
            }
        }
    }
}

fn why_status(e: WhyError) -> Status {
    let (code, why) = match e {
        WhyError::NotFound(_) => (Code::NotFound, pb::Reason::NotFound),
        _ => (Code::InvalidArgument, pb::Reason::Invalid),
    };
    reason::status(code, why, e.to_string())
}

/// The leader's answer to `request` over `state`: the ends resolved, the reports of their hosts
/// gathered (hosts that are Down are not waited for), the path explained.
pub async fn answer(
    board: &ReportBoard,
    state: &State,
    request: &pb::WhyRequest,
) -> Result<pb::WhyResponse, Status> {
    let src = weft_why::resolve(state, &request.src).map_err(why_status)?;
    let dst = weft_why::resolve(state, &request.dst).map_err(why_status)?;
    let port = weft_why::PortCheck::of(request.port, &request.protocol).map_err(why_status)?;
    if request.port > u32::from(u16::MAX) {
        return Err(reason::status(
            Code::InvalidArgument,
            pb::Reason::Invalid,
            format!("port {}: at most 65535", request.port),
        ));
    }
    let since = Instant::now();
    let mut nodes = BTreeSet::new();
    for (node, probes) in weft_why::needs(state, &src, &dst) {
        if state.node(node).is_some_and(|n| n.status == NodeStatus::Ready) {
            board.want(node, &probes);
            nodes.insert(node);
        }
    }
    let reports = board.collect(&nodes, since, REPORT_WAIT).await;
    weft_why::explain(state, &src, &dst, port, &reports, weft_overlay::journal::now_ms()).map_err(why_status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_report_received_after_the_want_is_collected_and_clears_it() {
        let board = ReportBoard::default();
        let since = Instant::now();
        board.want(7, &[(4097, 8)]);
        board.want(7, &[(4097, 9)]);
        let asked = board.wanted(7).unwrap();
        assert_eq!(asked.probes.len(), 2, "two paths' probes merge");
        assert!(board.wanted(8).is_none());
        let nodes: BTreeSet<NodeId> = [7].into();
        let waiting = board.collect(&nodes, since, Duration::from_secs(5));
        let deliver = async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            board.store(pb::HostReport { node_id: 7, taken_ms: 1, ..Default::default() });
        };
        let (got, ()) = tokio::join!(waiting, deliver);
        assert_eq!(got.len(), 1);
        assert!(board.wanted(7).is_none(), "answered");
        // A report older than the question is not an answer: the wait ends empty-handed.
        let later = Instant::now();
        let got = board.collect(&nodes, later, Duration::from_millis(30)).await;
        assert!(got.is_empty());
    }
}
