//! The exact data path of DESIGN.md, built with weft-net alone on two virtual hosts: per host a
//! bridge holding the block's gateway, a vxlan device with a MAC derived from (node, VNI), a
//! "container" namespace on a veth, and for the peer exactly one route, one neighbour and one FDB
//! entry. Then real ping and an iperf3 TCP stream between the two containers.

use std::net::IpAddr;

use weft_net::{BridgeSpec, Cidr, MacAddr, RouteSpec, VethSpec, VxlanSpec, sysctl};
use weft_tests::{Namespace, VirtualHosts, iperf3, ping};

const VNI: u32 = 4242;

struct Site {
    block: Cidr,
    vtep_mac: MacAddr,
    underlay: IpAddr,
}

fn site(node: u64, block: &str, underlay: IpAddr) -> Site {
    let seed = [node.to_be_bytes(), u64::from(VNI).to_be_bytes()].concat();
    Site { block: block.parse().unwrap(), vtep_mac: MacAddr::derived(&seed), underlay }
}

fn build_host(host: &Namespace, container: &Namespace, me: &Site, peer: &Site, underlay_mtu: u32) {
    let block = me.block;
    let gateway = Cidr::new(block.nth(1).unwrap(), block.prefix_len()).unwrap();
    let vtep_mac = me.vtep_mac;
    let local = me.underlay;
    let (peer_block, peer_mac, peer_underlay) = (peer.block, peer.vtep_mac, peer.underlay);
    let target = container.netns().clone();
    host.netlink(move |nl| async move {
        sysctl::write("net.ipv4.ip_forward", "1").unwrap();
        let eth0 = nl.link_of_address(local).await.unwrap();
        assert_eq!(eth0.mtu, underlay_mtu);
        let mtu = eth0.mtu - 50;
        let bridge = nl
            .ensure_bridge(&BridgeSpec { mtu: Some(mtu), ..BridgeSpec::new(format!("wbr-{VNI}")) })
            .await
            .unwrap();
        nl.ensure_address(bridge.index, gateway).await.unwrap();
        let vx = nl
            .ensure_vxlan(&VxlanSpec {
                local: Some(local),
                underlay: Some(eth0.index),
                mtu: Some(mtu),
                mac: Some(vtep_mac),
                ..VxlanSpec::new(format!("wvx-{VNI}"), VNI)
            })
            .await
            .unwrap();
        nl.ensure_address(vx.index, Cidr::new(block.addr(), 32).unwrap()).await.unwrap();
        nl.ensure_veth(&VethSpec {
            peer_netns: Some(target),
            mtu: Some(mtu),
            master: Some(bridge.index),
            ..VethSpec::new("vethc0", "eth0")
        })
        .await
        .unwrap();
        // The three static entries per remote host; nothing is learned.
        let peer_net = peer_block.addr();
        nl.ensure_neighbour(vx.index, peer_net, peer_mac).await.unwrap();
        nl.ensure_fdb(vx.index, peer_mac, Some(peer_underlay)).await.unwrap();
        let route = RouteSpec::via(peer_block, peer_net).with_dev(vx.index).with_onlink();
        nl.ensure_route(&route).await.unwrap();
    });
    let addr = Cidr::new(block.nth(2).unwrap(), block.prefix_len()).unwrap();
    let gw = block.nth(1).unwrap();
    container.netlink(move |nl| async move {
        let lo = nl.require_link("lo").await.unwrap();
        nl.set_up(lo.index).await.unwrap();
        let eth0 = nl.require_link("eth0").await.unwrap();
        nl.ensure_address(eth0.index, addr).await.unwrap();
        nl.set_up(eth0.index).await.unwrap();
        nl.ensure_route(&RouteSpec::default_via(gw).with_dev(eth0.index)).await.unwrap();
    });
}

#[test]
fn two_hosts_share_one_overlay_built_from_weft_net() {
    let bed = VirtualHosts::new(2);
    let c0 = bed.add_namespace("c0");
    let c1 = bed.add_namespace("c1");
    let a = site(1, "10.99.0.0/24", bed.host(0).addr.into());
    let b = site(2, "10.99.1.0/24", bed.host(1).addr.into());
    bed.with_namespace(&c0, |ns| build_host(bed.host(0), ns, &a, &b, 1500));
    bed.with_namespace(&c1, |ns| build_host(bed.host(1), ns, &b, &a, 1500));

    // The kernel state matches the design: per peer exactly one route, neighbour and FDB entry.
    let host0 = bed.host(0);
    let vx = format!("wvx-{VNI}");
    let fdb = host0.output("bridge", &["-j", "fdb", "show", "dev", &vx]);
    let fdb: serde_json::Value = serde_json::from_slice(&fdb.stdout).unwrap();
    let remote: Vec<_> = fdb.as_array().unwrap().iter().filter(|e| e.get("dst").is_some()).collect();
    assert_eq!(remote.len(), 1, "{fdb}");
    assert_eq!(remote[0]["mac"], b.vtep_mac.to_string());
    assert_eq!(remote[0]["dst"], "198.51.100.2");
    let neigh = host0.output("ip", &["-j", "neigh", "show", "dev", &vx]);
    let neigh: serde_json::Value = serde_json::from_slice(&neigh.stdout).unwrap();
    assert_eq!(neigh.as_array().unwrap().len(), 1);
    assert_eq!(neigh[0]["lladdr"], b.vtep_mac.to_string());
    let link = host0.output("ip", &["-d", "-j", "link", "show", &vx]);
    let link: serde_json::Value = serde_json::from_slice(&link.stdout).unwrap();
    assert_eq!(link[0]["address"], a.vtep_mac.to_string());
    assert_eq!(link[0]["mtu"], 1450);
    assert_eq!(link[0]["linkinfo"]["info_data"]["learning"], false);

    bed.with_namespace(&c0, |c0| {
        assert!(ping(c0, "10.99.1.2", 3), "container on host 0 pings container on host 1");
    });
    bed.with_namespace(&c1, |c1| {
        assert!(ping(c1, "10.99.0.2", 3), "and back");
        assert!(ping(c1, "10.99.0.1", 1), "the remote gateway answers too");
    });

    // An iperf3 TCP stream across the overlay.
    let (c0, c1) = (bed.namespace(&c0), bed.namespace(&c1));
    let bits = iperf3(&c0, &c1, "10.99.1.2", 2, 1);
    let received = (bits * 2.0 / 8.0) as u64;
    assert!(received > 1_000_000, "iperf3 moved only {received} bytes");
}
