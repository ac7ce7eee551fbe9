//! A history of client operations and observations, recorded under faults and checked afterwards,
//! in the manner of Jepsen: each operation is recorded when invoked and again when it completes,
//! as `ok` (acknowledged), `fail` (definitely not done) or `info` (unknown: the client cannot
//! tell), with times; observers add reads of the replicated state. [`check`] is pure: it takes a
//! history and the final observations and names every violation it finds.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use serde::{Deserialize, Serialize};

/// How an operation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Acknowledged.
    Ok,
    /// Definitely not done.
    Fail,
    /// Unknown: it may or may not have taken effect.
    Info,
}

/// What a client asked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "f", rename_all = "lowercase")]
pub enum Op {
    /// `weft run` of container `name` on `host`, on network `network`.
    Run {
        /// Host index.
        host: usize,
        /// Container name (unique in the history).
        name: String,
        /// Network.
        network: String,
    },
    /// `weft rm -f` of container `name` on `host`.
    Rm {
        /// Host index.
        host: usize,
        /// Container name.
        name: String,
    },
    /// `weft network connect` of container `name` on `host` to `network`.
    Connect {
        /// Host index.
        host: usize,
        /// Container name.
        name: String,
        /// Network.
        network: String,
    },
}

impl Op {
    /// The container the operation is about.
    pub fn container(&self) -> &str {
        match self {
            Op::Run { name, .. } | Op::Rm { name, .. } | Op::Connect { name, .. } => name,
        }
    }
}

/// One completed client operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Completed {
    /// Which client (thread) ran it.
    pub client: usize,
    /// What it asked for.
    pub op: Op,
    /// Microseconds since the history began, when invoked.
    pub invoked_us: u64,
    /// Microseconds since the history began, when it completed.
    pub completed_us: u64,
    /// How it ended.
    pub outcome: Outcome,
    /// The addresses the container holds on the operation's network, as the client read them
    /// right after an acknowledged run or connect (`weft inspect`).
    pub ips: Vec<IpAddr>,
    /// What the command printed on failure.
    pub error: String,
}

/// One endpoint as a read of the replicated state showed it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SeenEndpoint {
    /// Endpoint id.
    pub id: u64,
    /// Network name.
    pub network: String,
    /// Node id.
    pub node: u64,
    /// The container's name on the network.
    pub name: String,
    /// Its addresses.
    pub ips: Vec<IpAddr>,
}

/// One read of the replicated state (linearizable, through a manager).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Observation {
    /// Microseconds since the history began, when the read completed.
    pub at_us: u64,
    /// The state's revision.
    pub revision: u64,
    /// Every endpoint of the state.
    pub endpoints: Vec<SeenEndpoint>,
}

/// A fault the nemesis injected or healed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NemesisEvent {
    /// Microseconds since the history began.
    pub at_us: u64,
    /// What it did.
    pub what: String,
}

/// One line of the history file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Entry {
    /// A client operation was invoked.
    Invoke {
        /// Client.
        client: usize,
        /// Operation.
        op: Op,
        /// When.
        at_us: u64,
    },
    /// A client operation completed.
    Complete(Completed),
    /// A read of the state.
    Observe(Observation),
    /// The nemesis acted.
    Nemesis(NemesisEvent),
}

/// The recorder: thread-safe, written to a JSON-lines file as it goes (so a test that dies
/// still leaves it) and kept in memory for the checker.
pub struct History {
    start: Instant,
    path: PathBuf,
    file: Mutex<std::fs::File>,
    entries: Mutex<Vec<Entry>>,
}

impl History {
    /// A new history written to `path`.
    pub fn create(path: &Path) -> std::io::Result<History> {
        Ok(History {
            start: Instant::now(),
            path: path.to_path_buf(),
            file: Mutex::new(std::fs::File::create(path)?),
            entries: Mutex::new(Vec::new()),
        })
    }

    /// Where the history is written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Microseconds since the history began.
    pub fn now_us(&self) -> u64 {
        self.start.elapsed().as_micros() as u64
    }

    fn push(&self, entry: Entry) {
        let line = serde_json::to_string(&entry).expect("history entries serialize");
        let mut file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        let _ = writeln!(file, "{line}");
        self.entries.lock().unwrap_or_else(|e| e.into_inner()).push(entry);
    }

    /// Records an invocation and returns its time.
    pub fn invoke(&self, client: usize, op: &Op) -> u64 {
        let at_us = self.now_us();
        self.push(Entry::Invoke { client, op: op.clone(), at_us });
        at_us
    }

    /// Records a completion.
    pub fn complete(&self, done: Completed) {
        self.push(Entry::Complete(done));
    }

    /// Records a read of the state.
    pub fn observe(&self, revision: u64, endpoints: Vec<SeenEndpoint>) {
        let at_us = self.now_us();
        self.push(Entry::Observe(Observation { at_us, revision, endpoints }));
    }

    /// Records what the nemesis did.
    pub fn nemesis(&self, what: impl Into<String>) {
        let at_us = self.now_us();
        self.push(Entry::Nemesis(NemesisEvent { at_us, what: what.into() }));
    }

    /// Everything recorded so far.
    pub fn entries(&self) -> Vec<Entry> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// A container as the checker finds it at the end, on the host it was run on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FinalContainer {
    /// Whether it is running.
    pub running: bool,
    /// Its addresses per network.
    pub ips: BTreeMap<String, Vec<IpAddr>>,
}

/// What the world looks like after healing: the containers on each host (by name) and a final
/// read of the state.
#[derive(Debug, Clone)]
pub struct Final {
    /// Container name -> what it is now (absent: no such container).
    pub containers: BTreeMap<String, FinalContainer>,
    /// The state's endpoints.
    pub endpoints: Vec<SeenEndpoint>,
}

/// From when to when (microseconds) a container certainly held an address: (from, until, name).
type Span = (u64, u64, String);

/// Checks a history and the final state; returns every violation found (empty: none).
///
/// - No address is held by two endpoints at overlapping times: no read shows two endpoints with
///   one address on one network; across reads (in revision order) an address never goes back to
///   a holder it had left; and no two acknowledged runs or connects hold one address over
///   overlapping spans (from the acknowledgment to the invocation of the rm that ended it).
/// - Every acknowledged run's container exists at the end with the address it was given, and
///   the state holds that address for it, unless an rm (acknowledged or unknown) followed.
/// - Nothing that failed is present: a failed run left no container and no endpoint.
/// - No endpoint is left in the state for a container that does not exist.
pub fn check(entries: &[Entry], end: &Final) -> Vec<String> {
    let mut problems = Vec::new();
    let completed: Vec<&Completed> = entries
        .iter()
        .filter_map(|e| match e {
            Entry::Complete(c) => Some(c),
            _ => None,
        })
        .collect();
    let mut observations: Vec<&Observation> = entries
        .iter()
        .filter_map(|e| match e {
            Entry::Observe(o) => Some(o),
            _ => None,
        })
        .collect();
    observations.sort_by_key(|o| (o.revision, o.at_us));

    // Reads: one holder per address at a time, and never back to an earlier one.
    let mut holders: BTreeMap<(String, IpAddr), Vec<u64>> = BTreeMap::new();
    for o in &observations {
        let mut seen: BTreeMap<(String, IpAddr), u64> = BTreeMap::new();
        for e in &o.endpoints {
            for ip in &e.ips {
                if let Some(other) = seen.insert((e.network.clone(), *ip), e.id) {
                    problems.push(format!(
                        "revision {}: address {ip} on network {} held by endpoints {other} and {} at once",
                        o.revision, e.network, e.id
                    ));
                }
            }
        }
        for (key, id) in seen {
            let list = holders.entry(key).or_default();
            if list.last() != Some(&id) {
                list.push(id);
            }
        }
    }
    for ((network, ip), list) in &holders {
        let mut left = BTreeSet::new();
        for pair in list.windows(2) {
            left.insert(pair[0]);
            if left.contains(&pair[1]) {
                problems.push(format!(
                    "address {ip} on network {network} went back to endpoint {} after another held it (holders in order: {list:?})",
                    pair[1]
                ));
            }
        }
    }

    // Clients: the spans over which an acknowledged container certainly held its address.
    let rm_of = |name: &str| -> Option<&Completed> {
        completed
            .iter()
            .copied()
            .find(|c| matches!(&c.op, Op::Rm { name: n, .. } if n == name) && c.outcome != Outcome::Fail)
    };
    let mut spans: BTreeMap<(String, IpAddr), Vec<Span>> = BTreeMap::new();
    for c in &completed {
        let network = match &c.op {
            Op::Run { network, .. } | Op::Connect { network, .. } if c.outcome == Outcome::Ok => network,
            _ => continue,
        };
        let until = rm_of(c.op.container()).map(|rm| rm.invoked_us).unwrap_or(u64::MAX);
        for ip in &c.ips {
            spans.entry((network.clone(), *ip)).or_default().push((
                c.completed_us,
                until,
                c.op.container().to_string(),
            ));
        }
    }
    for ((network, ip), list) in &spans {
        for (i, a) in list.iter().enumerate() {
            for b in &list[i + 1..] {
                if a.0 < b.1 && b.0 < a.1 {
                    problems.push(format!(
                        "address {ip} on network {network} held by {} and {} at overlapping times ({}..{} and {}..{} us)",
                        a.2, b.2, a.0, a.1, b.0, b.1
                    ));
                }
            }
        }
    }

    // The end: acknowledged runs are there, failed ones are not, and no endpoint is orphaned.
    let state_ips = |name: &str, network: &str| -> Option<Vec<IpAddr>> {
        end.endpoints.iter().find(|e| e.name == name && e.network == network).map(|e| e.ips.clone())
    };
    for c in &completed {
        let Op::Run { name, network, .. } = &c.op else { continue };
        let removed = rm_of(name).is_some();
        match c.outcome {
            Outcome::Ok if !removed => match end.containers.get(name) {
                None => problems.push(format!("acknowledged run of {name} has no container at the end")),
                Some(found) => {
                    if found.ips.get(network) != Some(&c.ips) {
                        problems.push(format!(
                            "{name} was given {:?} on {network} but holds {:?} at the end",
                            c.ips,
                            found.ips.get(network)
                        ));
                    }
                    if state_ips(name, network).as_ref() != Some(&c.ips) {
                        problems.push(format!(
                            "the state holds {:?} for {name} on {network}, the run was given {:?}",
                            state_ips(name, network),
                            c.ips
                        ));
                    }
                }
            },
            Outcome::Fail => {
                if end.containers.contains_key(name) {
                    problems.push(format!("failed run of {name} left a container"));
                }
                if end.endpoints.iter().any(|e| e.name == *name) {
                    problems.push(format!("failed run of {name} left an endpoint in the state"));
                }
            }
            _ => {}
        }
    }
    for e in &end.endpoints {
        if !end.containers.contains_key(&e.name) {
            problems.push(format!(
                "endpoint {} ({:?} on {}) is held for {}, which no host has",
                e.id, e.ips, e.network, e.name
            ));
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn run(name: &str, outcome: Outcome, at: (u64, u64), ips: &[&str]) -> Entry {
        Entry::Complete(Completed {
            client: 0,
            op: Op::Run { host: 0, name: name.into(), network: "n".into() },
            invoked_us: at.0,
            completed_us: at.1,
            outcome,
            ips: ips.iter().map(|i| ip(i)).collect(),
            error: String::new(),
        })
    }

    fn rm(name: &str, outcome: Outcome, at: (u64, u64)) -> Entry {
        Entry::Complete(Completed {
            client: 0,
            op: Op::Rm { host: 0, name: name.into() },
            invoked_us: at.0,
            completed_us: at.1,
            outcome,
            ips: vec![],
            error: String::new(),
        })
    }

    fn endpoint(id: u64, name: &str, addr: &str) -> SeenEndpoint {
        SeenEndpoint { id, network: "n".into(), node: 1, name: name.into(), ips: vec![ip(addr)] }
    }

    fn observe(revision: u64, endpoints: Vec<SeenEndpoint>) -> Entry {
        Entry::Observe(Observation { at_us: revision, revision, endpoints })
    }

    fn running(addr: &str) -> FinalContainer {
        FinalContainer { running: true, ips: [("n".to_string(), vec![ip(addr)])].into_iter().collect() }
    }

    #[test]
    fn a_clean_history_passes() {
        let history = vec![
            run("a", Outcome::Ok, (0, 10), &["10.0.0.2"]),
            rm("a", Outcome::Ok, (20, 30)),
            // The address is handed out again only after a's rm was invoked.
            run("b", Outcome::Ok, (25, 40), &["10.0.0.2"]),
            run("c", Outcome::Fail, (50, 60), &[]),
            run("d", Outcome::Info, (50, 60), &[]),
            observe(1, vec![endpoint(1, "a", "10.0.0.2")]),
            observe(2, vec![endpoint(2, "b", "10.0.0.2")]),
        ];
        let end = Final {
            containers: [("b".to_string(), running("10.0.0.2")), ("d".to_string(), running("10.0.0.3"))]
                .into_iter()
                .collect(),
            endpoints: vec![endpoint(2, "b", "10.0.0.2"), endpoint(3, "d", "10.0.0.3")],
        };
        assert_eq!(check(&history, &end), Vec::<String>::new());
    }

    /// The injected bug: an address handed out twice. Every way it shows is named.
    #[test]
    fn an_address_handed_out_twice_is_caught() {
        let history = vec![
            run("a", Outcome::Ok, (0, 10), &["10.0.0.2"]),
            run("b", Outcome::Ok, (5, 15), &["10.0.0.2"]),
            observe(1, vec![endpoint(1, "a", "10.0.0.2"), endpoint(2, "b", "10.0.0.2")]),
        ];
        let end = Final {
            containers: [("a".to_string(), running("10.0.0.2")), ("b".to_string(), running("10.0.0.2"))]
                .into_iter()
                .collect(),
            endpoints: vec![endpoint(1, "a", "10.0.0.2"), endpoint(2, "b", "10.0.0.2")],
        };
        let problems = check(&history, &end);
        assert!(problems.iter().any(|p| p.contains("held by endpoints 1 and 2 at once")), "{problems:?}");
        assert!(problems.iter().any(|p| p.contains("held by a and b at overlapping times")), "{problems:?}");
    }

    #[test]
    fn an_address_going_back_to_its_first_holder_is_caught() {
        let history = vec![
            observe(1, vec![endpoint(1, "a", "10.0.0.2")]),
            observe(2, vec![endpoint(2, "b", "10.0.0.2")]),
            observe(3, vec![endpoint(1, "a", "10.0.0.2")]),
        ];
        let end = Final { containers: BTreeMap::new(), endpoints: vec![] };
        let problems = check(&history, &end);
        assert!(problems.iter().any(|p| p.contains("went back to endpoint 1")), "{problems:?}");
    }

    #[test]
    fn lost_acknowledged_runs_and_leftovers_of_failed_ones_are_caught() {
        let history = vec![
            run("a", Outcome::Ok, (0, 10), &["10.0.0.2"]),
            run("b", Outcome::Ok, (0, 10), &["10.0.0.3"]),
            run("c", Outcome::Fail, (0, 10), &[]),
            // An rm that failed does not excuse a missing container.
            rm("b", Outcome::Fail, (20, 30)),
        ];
        let end = Final {
            containers: [("c".to_string(), running("10.0.0.4"))].into_iter().collect(),
            endpoints: vec![endpoint(3, "c", "10.0.0.4"), endpoint(9, "ghost", "10.0.0.9")],
        };
        let problems = check(&history, &end);
        for want in [
            "acknowledged run of a has no container",
            "acknowledged run of b has no container",
            "failed run of c left a container",
            "failed run of c left an endpoint",
            "held for ghost, which no host has",
        ] {
            assert!(problems.iter().any(|p| p.contains(want)), "{want}: {problems:?}");
        }
    }
}
