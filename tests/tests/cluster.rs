//! The control plane on virtual hosts: one weftd process per host namespace, formed with
//! bootstrap and join tokens, faults made by SIGKILL and by cutting underlay links.

use std::time::Duration;

use weft_tests::VirtualHosts;
use weft_tests::cluster::WeftCluster;

#[test]
fn three_managers_and_two_workers_form_one_cluster() {
    let bed = VirtualHosts::new(6);
    let cluster = WeftCluster::new(&bed);
    cluster.form(3, 2);
    // Every node, manager or worker, shows the same five nodes with one leader.
    for i in 0..5 {
        let nodes = cluster.nodes(i).unwrap();
        assert_eq!(nodes.len(), 5, "via h{i}: {nodes:?}");
        let managers: Vec<_> = nodes.iter().filter(|n| n["role"] == "manager").collect();
        assert_eq!(managers.len(), 3);
        assert!(managers.iter().all(|n| n["raft"] == "voter"));
        assert_eq!(nodes.iter().filter(|n| n["role"] == "worker" && n["raft"] == "").count(), 2);
        assert_eq!(nodes.iter().filter(|n| n["leader"] == true).count(), 1);
    }
    let table = cluster.weft_ok(3, &["node", "ls"]);
    assert!(table.starts_with("ID"), "{table}");
    assert_eq!(table.lines().count(), 6, "{table}");
    assert!(table.lines().any(|l| l.contains("h0") && l.contains("manager")), "{table}");

    // A wrong secret is refused by the manager; a wrong CA fingerprint is refused by the joiner
    // before it sends anything. Neither leaves a node behind.
    let token = cluster.weft_ok(0, &["cluster", "token", "worker"]).trim().to_string();
    let (head, _) = token.rsplit_once('-').unwrap();
    let wrong_secret = format!("{head}-{}", "0".repeat(32));
    let out = cluster.run_to_exit(5, &["--join", &cluster.api(0), "--token", &wrong_secret]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("not valid for this cluster"), "{err}");
    let secret = token.rsplit_once('-').unwrap().1;
    let wrong_ca = format!("WEFT-1-{}-{secret}", "ab".repeat(32));
    let out = cluster.run_to_exit(5, &["--join", &cluster.api(0), "--token", &wrong_ca]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("does not match the token's fingerprint"), "{err}");
    // A worker token cannot make a manager.
    let out = cluster.run_to_exit(5, &["--join", &cluster.api(0), "--token", &token, "--manager"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("manager token"), "{err}");
    assert_eq!(cluster.nodes(0).unwrap().len(), 5);

    // A client without a certificate reaches the TLS listener but every call is refused.
    let ca = std::fs::read_to_string(cluster.state_dir(0).join("tls/ca.pem")).unwrap();
    let api = cluster.api(0);
    let refused = bed.host(5).run(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            let tls = tonic::transport::ClientTlsConfig::new()
                .ca_certificate(tonic::transport::Certificate::from_pem(ca))
                .domain_name("weft.cluster");
            let channel = tonic::transport::Endpoint::from_shared(format!("https://{api}"))
                .unwrap()
                .tls_config(tls)
                .unwrap()
                .connect_timeout(Duration::from_secs(3))
                .connect()
                .await
                .expect("TLS without a client certificate still connects");
            let mut client = weft_proto::v1::cluster_client::ClusterClient::new(channel);
            client.nodes(weft_proto::v1::NodesRequest {}).await.unwrap_err()
        })
    });
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused:?}");
    assert!(refused.message().contains("client certificate"), "{refused:?}");
}
