//! Overlay MTU across hosts whose underlay links differ: every node reports its underlay link's
//! MTU when it registers, and every host sizes its VXLAN devices and containers for the smallest
//! one, so a host on a 1500-byte link never sends overlay packets that a host on a 1400-byte link
//! cannot take. A DF ping at the largest size that fits passes between the 1500 and the 1400
//! host, and one byte more is refused at the sender.

use weft_tests::VirtualHosts;
use weft_tests::cluster::{WeftCluster, stdout};

#[test]
fn the_overlay_fits_the_smallest_underlay_mtu_of_the_cluster() {
    let bed = VirtualHosts::new(3);
    // h2's link (both ends) carries only 1400 bytes.
    bed.switch().output("ip", &["link", "set", "h2", "mtu", "1400"]);
    bed.host(2).output("ip", &["link", "set", "eth0", "mtu", "1400"]);
    let cluster = WeftCluster::new(&bed);
    cluster.form(1, 2);
    let nodes = cluster.nodes(0).unwrap();
    let mtu_of = |name: &str| nodes.iter().find(|n| n["name"] == name).unwrap()["underlay_mtu"].as_u64();
    assert_eq!((mtu_of("h0"), mtu_of("h1"), mtu_of("h2")), (Some(1500), Some(1500), Some(1400)));
    cluster.import_busybox(&[0, 2]);
    cluster.weft_ok(0, &["network", "create", "-d", "overlay", "--subnet", "10.94.0.0/16", "mtu"]);
    cluster.weft_ok(0, &["run", "-d", "--name", "a", "--network", "mtu", "busybox", "sleep", "3600"]);
    cluster.weft_ok(2, &["run", "-d", "--name", "b", "--network", "mtu", "busybox", "sleep", "3600"]);
    for (host, name) in [(0, "a"), (2, "b")] {
        let mtu = cluster.weft_ok(host, &["exec", name, "cat", "/sys/class/net/eth0/mtu"]);
        assert_eq!(mtu.trim(), "1350", "{name} on h{host}: 1400 - 50");
    }
    let links: serde_json::Value =
        serde_json::from_slice(&bed.host(0).output("ip", &["-j", "link", "show", "type", "vxlan"]).stdout)
            .unwrap();
    assert_eq!(links[0]["mtu"], 1350, "h0's VXLAN device, though its own link carries 1500: {links}");
    cluster.eventually("b reachable from a", std::time::Duration::from_secs(10), || {
        cluster.weft(0, &["exec", "a", "ping", "-c", "1", "-W", "1", "b"]).status.success()
    });
    // 1322 bytes of ICMP data + 28 of headers = 1350: fits; one more does not (refused at a).
    // iputils' ping from the host in a's namespace (busybox's cannot set DF).
    let inspect = |host: usize, name: &str| -> serde_json::Value {
        serde_json::from_str::<serde_json::Value>(&cluster.weft_ok(host, &["inspect", name])).unwrap()[0]
            .clone()
    };
    let b_ip = inspect(2, "b")["networks"][0]["ips"][0].as_str().unwrap().to_string();
    let a_ns = weft_tests::Namespace::of_process(inspect(0, "a")["pid"].as_u64().unwrap() as u32).unwrap();
    let fits = a_ns.output("ping", &["-M", "do", "-c", "2", "-W", "2", "-s", "1322", &b_ip]);
    assert!(fits.status.success(), "{}{}", stdout(&fits), String::from_utf8_lossy(&fits.stderr));
    let over = a_ns.output("ping", &["-M", "do", "-c", "1", "-W", "2", "-s", "1323", &b_ip]);
    assert!(!over.status.success(), "{}", stdout(&over));
    drop(a_ns);
    cluster.weft_ok(0, &["rm", "-f", "a"]);
    cluster.weft_ok(2, &["rm", "-f", "b"]);
}
