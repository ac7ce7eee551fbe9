//! Node ids are printed and matched in one form: a node whose id starts with zeros (one in eight
//! of them) is inspected, promoted and removed by the id `weft node ls` prints. The ids are
//! forced with weftd's join-id failpoint.

use std::time::Duration;

use weft_tests::VirtualHosts;
use weft_tests::cluster::{WeftCluster, stderr};

#[test]
fn a_node_whose_id_starts_with_zero_is_promoted_and_removed_by_its_printed_id() {
    let bed = VirtualHosts::new(3);
    let mut cluster = WeftCluster::new(&bed);
    cluster.env.push(("WEFTD_FAILPOINT_JOIN_ID".into(), "0123456789abcdef,00abcdef01234567".into()));
    cluster.form(1, 2);
    let id_of = |name: &str| {
        let nodes = cluster.nodes(0).unwrap();
        nodes.iter().find(|n| n["name"] == name).map(|n| n["id"].as_str().unwrap().to_string())
    };
    let (h1, h2) = (id_of("h1").unwrap(), id_of("h2").unwrap());
    assert_eq!(
        (h1.as_str(), h2.as_str()),
        ("0123456789abcdef", "00abcdef01234567"),
        "as node ls prints them"
    );

    let inspect = cluster.weft_ok(0, &["node", "inspect", &h2]);
    assert!(inspect.contains("\"h2\""), "{inspect}");
    cluster.weft_ok(0, &["node", "promote", &h1]);
    cluster.eventually("h1 is a manager", Duration::from_secs(30), || {
        cluster.nodes(0).unwrap().iter().any(|n| n["name"] == "h1" && n["role"] == "manager")
    });
    cluster.kill(2);
    let out = cluster.weft(0, &["node", "rm", "-f", &h2]);
    assert!(out.status.success(), "rm by the printed id: {}", stderr(&out));
    cluster.eventually("h2 is gone", Duration::from_secs(30), || id_of("h2").is_none());
}
