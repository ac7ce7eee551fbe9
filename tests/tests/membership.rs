//! Raft membership follows the cluster's managers on every path (join as manager, promote,
//! demote, the leader demoted, rm of a stopped manager, rm -f of a running one): each ends with an
//! odd number of caught-up voters, and with three managers a write is accepted whichever one of
//! them is killed.

use std::time::Duration;

use weft_tests::VirtualHosts;
use weft_tests::cluster::WeftCluster;

/// Waits until `via` shows `managers` managers, an odd number of them voters (all of them when
/// odd), the rest learners, every voter caught up, one leader and every node Ready.
fn settled(cluster: &WeftCluster<'_>, via: usize, managers: usize, what: &str) {
    let voters = if managers.is_multiple_of(2) { managers - 1 } else { managers };
    cluster.eventually(what, Duration::from_secs(45), || {
        let Ok(nodes) = cluster.nodes(via) else { return false };
        let of = |role: &str| nodes.iter().filter(|n| n["role"] == role).count();
        let raft = |kind: &str| nodes.iter().filter(|n| n["raft"] == kind).count();
        of("manager") == managers
            && raft("voter") == voters
            && raft("learner") == managers - voters
            && nodes
                .iter()
                .filter(|n| n["raft"] == "voter")
                .all(|n| n["lag"].as_u64().is_some_and(|l| l <= 3))
            && nodes.iter().filter(|n| n["leader"] == true).count() == 1
            && nodes.iter().all(|n| n["status"] == "Ready")
    });
}

fn index_of(name: &str) -> usize {
    name.strip_prefix('h').unwrap().parse().unwrap()
}

/// With every one of `managers` (three) killed in turn, a write through another one commits;
/// the killed one comes back and the voters settle again.
fn writes_survive_any_one_kill(cluster: &WeftCluster<'_>, managers: &[usize], tag: &str) {
    for (round, &victim) in managers.iter().enumerate() {
        cluster.kill(victim);
        let via = *managers.iter().find(|m| **m != victim).unwrap();
        let name = format!("{tag}{round}");
        let subnet = format!("10.{}.{}.0/24", 120 + round, tag.as_bytes()[0]);
        cluster.eventually(&format!("a write with h{victim} killed"), Duration::from_secs(15), || {
            cluster.weft(via, &["network", "create", "--subnet", &subnet, &name]).status.success()
                || cluster.weft_ok(via, &["network", "ls"]).contains(&name)
        });
        cluster.restart(victim);
        settled(cluster, via, managers.len(), &format!("voters settle after h{victim} restarted"));
    }
}

#[test]
fn membership_converges_on_every_path() {
    let bed = VirtualHosts::new(5);
    let cluster = WeftCluster::new(&bed);
    cluster.form(2, 2);
    settled(&cluster, 0, 2, "two managers: one voter, one learner");

    // A worker promoted: it gets the log, votes, and the three survive any one kill.
    cluster.weft_ok(0, &["node", "promote", "h2"]);
    settled(&cluster, 0, 3, "h2 promoted: three voters");
    writes_survive_any_one_kill(&cluster, &[0, 1, 2], "p");

    // The leader itself demoted: it hands leadership over and leaves the voters.
    let leader = cluster.leader(0).expect("a leader");
    let via = [0, 1, 2].into_iter().find(|i| *i != leader).unwrap();
    cluster.weft_ok(via, &["node", "demote", &format!("h{leader}")]);
    settled(&cluster, via, 2, "the leader demoted: two managers");
    let nodes = cluster.nodes(via).unwrap();
    let demoted = nodes.iter().find(|n| n["name"] == format!("h{leader}")).unwrap();
    assert_eq!((demoted["role"].as_str(), demoted["raft"].as_str()), (Some("worker"), Some("")), "{demoted}");

    // Another promotion brings three again.
    cluster.weft_ok(via, &["node", "promote", "h3"]);
    settled(&cluster, via, 3, "h3 promoted: three voters");
    let managers: Vec<usize> = cluster
        .nodes(via)
        .unwrap()
        .iter()
        .filter(|n| n["role"] == "manager")
        .map(|n| index_of(n["name"].as_str().unwrap()))
        .collect();
    writes_survive_any_one_kill(&cluster, &managers, "q");

    // A stopped manager removed: two managers remain.
    let stopped = *managers.iter().find(|m| Some(**m) != cluster.leader(via)).unwrap();
    let via = *managers.iter().find(|m| **m != stopped).unwrap();
    cluster.kill(stopped);
    cluster.eventually("the stopped manager is Down", Duration::from_secs(15), || {
        cluster
            .nodes(via)
            .is_ok_and(|n| n.iter().any(|n| n["name"] == format!("h{stopped}") && n["status"] == "Down"))
    });
    cluster.weft_ok(via, &["node", "rm", &format!("h{stopped}")]);
    settled(&cluster, via, 2, "a stopped manager removed");

    // A running manager removed with --force: one manager, one voter, and it still writes.
    let running = *managers.iter().find(|m| **m != stopped && **m != via).unwrap();
    cluster.weft_ok(via, &["node", "rm", "--force", &format!("h{running}")]);
    settled(&cluster, via, 1, "a running manager removed with --force");
    cluster.weft_ok(via, &["network", "create", "--subnet", "10.130.0.0/24", "last"]);
}
