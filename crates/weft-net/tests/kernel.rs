//! weft-net against the real kernel. Every test works in network namespaces of its own (unique
//! names, removed on drop, also on panic) and reads each object back over netlink and through
//! `ip -j` / `bridge -j`, so a wrong encoding on our side cannot hide behind our own decoder.

use std::net::IpAddr;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use serde_json::Value;
use weft_net::{
    BridgeSpec, Cidr, LinkKind, MacAddr, NetError, NetNs, Netlink, NetnsWorker, RouteSpec, VethSpec,
    VxlanSpec, sysctl,
};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A private namespace with a worker inside; deleted on drop.
struct TestNs {
    name: String,
    worker: Option<NetnsWorker>,
    ns: Option<NetNs>,
}

impl TestNs {
    fn new(tag: &str) -> TestNs {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let name = format!("wnt-{tag}-{}-{n}", std::process::id());
        let ns = NetNs::create(&name).expect("create namespace");
        let worker = ns.worker().expect("start worker");
        TestNs { name, worker: Some(worker), ns: Some(ns) }
    }

    fn ns(&self) -> &NetNs {
        self.ns.as_ref().unwrap()
    }

    async fn run<F, Fut, T>(&self, f: F) -> T
    where
        F: FnOnce(Netlink) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = T> + 'static,
        T: Send + 'static,
    {
        self.worker.as_ref().unwrap().run(f).await.expect("worker job")
    }

    /// `ip -n NS -j ARGS...` parsed.
    fn ip(&self, args: &[&str]) -> Value {
        json_of("ip", &[&["-n", &self.name, "-j"], args].concat())
    }

    fn bridge(&self, args: &[&str]) -> Value {
        json_of("bridge", &[&["-n", &self.name, "-j"], args].concat())
    }
}

impl Drop for TestNs {
    fn drop(&mut self) {
        self.worker.take();
        self.ns.take();
        let _ = NetNs::delete(&self.name);
    }
}

fn json_of(tool: &str, args: &[&str]) -> Value {
    let out = Command::new(tool).args(args).output().expect("run iproute2");
    assert!(out.status.success(), "{tool} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    if text.trim().is_empty() { Value::Array(vec![]) } else { serde_json::from_str(&text).expect("json") }
}

fn cidr(s: &str) -> Cidr {
    s.parse().unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[tokio::test]
async fn namespaces_are_created_listed_and_deleted() {
    let name = format!("wnt-ns-{}", std::process::id());
    let ns = NetNs::create(&name).unwrap();
    let listed = Command::new("ip").args(["netns", "list"]).output().unwrap();
    assert!(
        String::from_utf8_lossy(&listed.stdout).lines().any(|l| l.split_whitespace().next() == Some(&name))
    );
    assert!(NetNs::exists(&name));
    // A second create of the same name is refused and leaves the first alone.
    assert!(matches!(NetNs::create(&name), Err(NetError::Netns { .. })));
    // The worker sees only the namespace's own loopback.
    let worker = ns.worker().unwrap();
    let links = worker.run(|nl| async move { nl.links().await }).await.unwrap().unwrap();
    assert_eq!(links.iter().map(|l| l.name.as_str()).collect::<Vec<_>>(), ["lo"]);
    drop(worker);
    drop(ns);
    NetNs::delete(&name).unwrap();
    assert!(!NetNs::exists(&name));
    assert!(NetNs::delete(&name).is_err());
    assert!(NetNs::create("a/b").is_err());
}

/// A namespace bind-mounted under a directory of its own is told apart from the empty mount
/// point a reboot leaves behind (here: the mount taken away by hand), and a new one can be made
/// at the same place once that file is gone.
#[test]
fn a_mount_point_without_its_namespace_is_told_apart() {
    let dir = std::env::temp_dir().join(format!("wnt-mp-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("c1");
    let ns = NetNs::create_at(&path, "c1").unwrap();
    assert!(NetNs::is_mounted_at(&path));
    drop(ns);
    nix::mount::umount2(&path, nix::mount::MntFlags::MNT_DETACH).unwrap();
    assert!(path.exists(), "the mount point stays, as after a reboot");
    assert!(!NetNs::is_mounted_at(&path));
    assert!(!NetNs::is_mounted_at(&dir.join("missing")));
    assert!(NetNs::create_at(&path, "c1").is_err(), "create refuses an existing file");
    std::fs::remove_file(&path).unwrap();
    let again = NetNs::create_at(&path, "c1").unwrap();
    assert!(NetNs::is_mounted_at(&path));
    drop(again);
    NetNs::delete_at(&path, "c1").unwrap();
    std::fs::remove_dir(&dir).unwrap();
}

#[tokio::test]
async fn bridge_is_read_back_and_ensure_is_idempotent() {
    let t = TestNs::new("br");
    let spec = BridgeSpec {
        mtu: Some(1400),
        mac: Some("02:00:00:00:00:aa".parse().unwrap()),
        ..BridgeSpec::new("wbr-7")
    };
    let (first, second) = t
        .run(move |nl| async move {
            let first = nl.ensure_bridge(&spec).await.unwrap();
            let second = nl.ensure_bridge(&spec).await.unwrap();
            (first, second)
        })
        .await;
    assert_eq!(first.index, second.index, "ensure twice keeps the same ifindex");
    assert_eq!(first.kind, LinkKind::Bridge);
    let shown = &t.ip(&["-d", "link", "show", "wbr-7"])[0];
    assert_eq!(shown["ifindex"], first.index);
    assert_eq!(shown["mtu"], 1400);
    assert_eq!(shown["address"], "02:00:00:00:00:aa");
    assert_eq!(shown["linkinfo"]["info_kind"], "bridge");
    assert!(shown["flags"].as_array().unwrap().iter().any(|f| f == "UP"));

    // A wrong MTU and a downed link are corrected in place.
    let index = first.index;
    let fixed = t
        .run(move |nl| async move {
            nl.set_mtu(index, 1300).await.unwrap();
            nl.set_down(index).await.unwrap();
            let spec = BridgeSpec { mtu: Some(1400), ..BridgeSpec::new("wbr-7") };
            nl.ensure_bridge(&spec).await.unwrap()
        })
        .await;
    assert_eq!(fixed.index, index);
    assert_eq!(fixed.mtu, 1400);
    assert!(fixed.up);
    assert_eq!(t.ip(&["link", "show", "wbr-7"])[0]["mtu"], 1400);
}

#[tokio::test]
async fn veth_peer_is_created_inside_the_target_namespace() {
    let host = TestNs::new("vh");
    let ctr = TestNs::new("vc");
    let target = ctr.ns().clone();
    let (veth, bridge) = host
        .run(move |nl| async move {
            let bridge = nl.ensure_bridge(&BridgeSpec::new("br0")).await.unwrap();
            let spec = VethSpec {
                peer_netns: Some(target),
                mtu: Some(1450),
                master: Some(bridge.index),
                ..VethSpec::new("vethab12", "eth0")
            };
            let veth = nl.ensure_veth(&spec).await.unwrap();
            let again = nl.ensure_veth(&spec).await.unwrap();
            assert_eq!(veth.index, again.index);
            (veth, bridge)
        })
        .await;
    assert_eq!(veth.kind, LinkKind::Veth);
    assert_eq!(veth.master, Some(bridge.index));
    let shown = &host.ip(&["link", "show", "vethab12"])[0];
    assert_eq!(shown["master"], "br0");
    assert_eq!(shown["mtu"], 1450);
    // The peer exists only in the container namespace, under its final name.
    assert_eq!(
        host.ip(&["link", "show"]).as_array().unwrap().iter().filter(|l| l["ifname"] == "eth0").count(),
        0
    );
    let peer = &ctr.ip(&["link", "show", "eth0"])[0];
    assert_eq!(peer["mtu"], 1450);
    assert_eq!(peer["link_index"], veth.index);
    let seen = ctr.run(|nl| async move { nl.require_link("eth0").await.unwrap() }).await;
    assert_eq!(seen.kind, LinkKind::Veth);
    assert_eq!(seen.link, Some(veth.index));

    // Detach from the bridge, change the MAC, then delete: the peer goes with it.
    let index = veth.index;
    host.run(move |nl| async move {
        nl.set_master(index, None).await.unwrap();
        nl.set_mac(index, "02:11:22:33:44:55".parse().unwrap()).await.unwrap();
    })
    .await;
    let shown = &host.ip(&["link", "show", "vethab12"])[0];
    assert!(shown.get("master").is_none());
    assert_eq!(shown["address"], "02:11:22:33:44:55");
    let existed = host.run(|nl| async move { nl.delete_link_by_name("vethab12").await.unwrap() }).await;
    assert!(existed);
    assert!(ctr.ip(&["link", "show"]).as_array().unwrap().iter().all(|l| l["ifname"] != "eth0"));
}

#[tokio::test]
async fn vxlan_attributes_match_iproute2_and_wrong_ones_are_corrected() {
    let t = TestNs::new("vx");
    let mac = MacAddr::derived(b"node-1/vni-42");
    let (underlay, vx) = t
        .run(move |nl| async move {
            let underlay = nl
                .ensure_veth(&VethSpec { mtu: Some(1400), ..VethSpec::new("eth0", "eth0p") })
                .await
                .unwrap();
            nl.ensure_address(underlay.index, cidr("198.51.100.1/24")).await.unwrap();
            let spec = VxlanSpec {
                local: Some(ip("198.51.100.1")),
                underlay: Some(underlay.index),
                mtu: Some(1350),
                mac: Some(mac),
                ..VxlanSpec::new("wvx-42", 42)
            };
            let vx = nl.ensure_vxlan(&spec).await.unwrap();
            assert_eq!(nl.ensure_vxlan(&spec).await.unwrap().index, vx.index, "idempotent");
            assert_eq!(nl.underlay_mtu(ip("198.51.100.1")).await.unwrap(), 1400);
            (underlay, vx)
        })
        .await;
    let info = vx.vxlan.clone().unwrap();
    assert_eq!((info.vni, info.port, info.learning, info.udp_csum), (42, 4789, false, false));
    let shown = &t.ip(&["-d", "link", "show", "wvx-42"])[0];
    assert_eq!(shown["ifindex"], vx.index);
    assert_eq!(shown["mtu"], 1350);
    assert_eq!(shown["address"], mac.to_string());
    let data = &shown["linkinfo"]["info_data"];
    assert_eq!(shown["linkinfo"]["info_kind"], "vxlan");
    assert_eq!(data["id"], 42);
    assert_eq!(data["local"], "198.51.100.1");
    assert_eq!(data["port"], 4789);
    assert_eq!(data["learning"], false);
    assert_eq!(data["udp_csum"], false);
    assert_eq!(data["link"], "eth0");
    assert_eq!(underlay.mtu, 1400);

    // A device with a different VNI under our name is replaced; a wrong MTU is corrected in place.
    let index = vx.index;
    let (recreated, corrected) = t
        .run(move |nl| async move {
            let spec = VxlanSpec { local: Some(ip("198.51.100.1")), ..VxlanSpec::new("wvx-42", 43) };
            let recreated = nl.ensure_vxlan(&spec).await.unwrap();
            nl.set_mtu(recreated.index, 1200).await.unwrap();
            let corrected = nl.ensure_vxlan(&VxlanSpec { mtu: Some(1350), ..spec }).await.unwrap();
            (recreated, corrected)
        })
        .await;
    assert_ne!(recreated.index, index);
    assert_eq!(recreated.vxlan.unwrap().vni, 43);
    assert_eq!(corrected.index, recreated.index);
    assert_eq!(t.ip(&["link", "show", "wvx-42"])[0]["mtu"], 1350);
}

#[tokio::test]
async fn addresses_are_added_ensured_and_deleted() {
    let t = TestNs::new("ad");
    let index = t
        .run(|nl| async move {
            let br = nl.ensure_bridge(&BridgeSpec::new("br0")).await.unwrap();
            nl.add_address(br.index, cidr("10.44.1.1/24")).await.unwrap();
            assert!(!nl.ensure_address(br.index, cidr("10.44.1.1/24")).await.unwrap(), "already there");
            assert!(nl.ensure_address(br.index, cidr("fd00:44::1/64")).await.unwrap());
            // Same IP, other prefix: replaced, not duplicated.
            assert!(nl.ensure_address(br.index, cidr("10.44.1.1/16")).await.unwrap());
            br.index
        })
        .await;
    let shown = &t.ip(&["addr", "show", "br0"])[0]["addr_info"];
    let mut seen: Vec<String> = shown
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["scope"] == "global")
        .map(|a| format!("{}/{}", a["local"].as_str().unwrap(), a["prefixlen"]))
        .collect();
    seen.sort();
    assert_eq!(seen, ["10.44.1.1/16", "fd00:44::1/64"]);
    let ours = t.run(move |nl| async move { nl.addresses(Some(index)).await.unwrap() }).await;
    assert!(ours.iter().any(|a| a.cidr == cidr("10.44.1.1/16")));
    t.run(move |nl| async move {
        nl.delete_address(index, cidr("10.44.1.1/16")).await.unwrap();
        assert!(matches!(
            nl.delete_address(index, cidr("10.44.1.1/16")).await,
            Err(NetError::NotFound { .. })
        ));
    })
    .await;
    assert!(
        t.ip(&["-4", "addr", "show", "br0"])[0]
            .get("addr_info")
            .is_none_or(|a| a.as_array().unwrap().is_empty())
    );
}

#[tokio::test]
async fn onlink_and_default_routes_round_trip() {
    let t = TestNs::new("rt");
    let index = t
        .run(|nl| async move {
            let link = nl.ensure_veth(&VethSpec::new("eth0", "eth0p")).await.unwrap();
            nl.ensure_address(link.index, cidr("198.51.100.1/24")).await.unwrap();
            let vx = nl.ensure_vxlan(&VxlanSpec::new("wvx-9", 9)).await.unwrap();
            let onlink =
                RouteSpec::via(cidr("10.44.2.0/24"), ip("10.44.2.0")).with_dev(vx.index).with_onlink();
            assert!(nl.ensure_route(&onlink).await.unwrap());
            assert!(!nl.ensure_route(&onlink).await.unwrap(), "second ensure changes nothing");
            let default = RouteSpec::default_via(ip("198.51.100.254")).with_dev(link.index);
            nl.add_route(&default).await.unwrap();
            assert!(nl.add_route(&default).await.is_err(), "plain add refuses a duplicate");
            // Ensure corrects a wrong next hop by replacing the route.
            let moved = RouteSpec::default_via(ip("198.51.100.253")).with_dev(link.index);
            assert!(nl.ensure_route(&moved).await.unwrap());
            vx.index
        })
        .await;
    let routes = t.ip(&["route", "show"]);
    let find = |dst: &str| routes.as_array().unwrap().iter().find(|r| r["dst"] == dst).cloned().unwrap();
    let onlink = find("10.44.2.0/24");
    assert_eq!(onlink["gateway"], "10.44.2.0");
    assert_eq!(onlink["dev"], "wvx-9");
    assert!(onlink["flags"].as_array().unwrap().iter().any(|f| f == "onlink"));
    assert_eq!(find("default")["gateway"], "198.51.100.253");
    assert_eq!(routes.as_array().unwrap().iter().filter(|r| r["dst"] == "default").count(), 1);
    let ours = t.run(|nl| async move { nl.routes(None).await.unwrap() }).await;
    let r = ours.iter().find(|r| r.dst == cidr("10.44.2.0/24")).unwrap();
    assert!(r.onlink);
    assert_eq!(r.dev, Some(index));
    t.run(move |nl| async move {
        let spec = RouteSpec::via(cidr("10.44.2.0/24"), ip("10.44.2.0")).with_dev(index).with_onlink();
        nl.delete_route(&spec).await.unwrap();
        assert!(matches!(nl.delete_route(&spec).await, Err(NetError::NotFound { .. })));
    })
    .await;
    assert!(t.ip(&["route", "show"]).as_array().unwrap().iter().all(|r| r["dst"] != "10.44.2.0/24"));
}

#[tokio::test]
async fn permanent_neighbours_and_fdb_entries() {
    let t = TestNs::new("nb");
    let mac_a: MacAddr = "02:00:00:00:0a:01".parse().unwrap();
    let mac_b: MacAddr = "02:00:00:00:0b:01".parse().unwrap();
    let zero: MacAddr = "00:00:00:00:00:00".parse().unwrap();
    t.run(move |nl| async move {
        let vx = nl.ensure_vxlan(&VxlanSpec::new("wvx-5", 5)).await.unwrap();
        assert!(nl.ensure_neighbour(vx.index, ip("10.44.2.0"), mac_a).await.unwrap());
        assert!(!nl.ensure_neighbour(vx.index, ip("10.44.2.0"), mac_a).await.unwrap());
        // Replace moves the entry to the new MAC.
        assert!(nl.ensure_neighbour(vx.index, ip("10.44.2.0"), mac_b).await.unwrap());
        assert!(nl.ensure_fdb(vx.index, mac_a, Some(ip("198.51.100.2"))).await.unwrap());
        assert!(!nl.ensure_fdb(vx.index, mac_a, Some(ip("198.51.100.2"))).await.unwrap());
        // Append keeps several destinations for the flood entry; replace would overwrite.
        nl.fdb_append(vx.index, zero, Some(ip("198.51.100.2"))).await.unwrap();
        nl.fdb_append(vx.index, zero, Some(ip("198.51.100.3"))).await.unwrap();
        nl.fdb_replace(vx.index, mac_a, Some(ip("198.51.100.4"))).await.unwrap();
        let fdb = nl.fdb(Some(vx.index)).await.unwrap();
        assert_eq!(fdb.iter().filter(|f| f.mac == zero).count(), 2);
        assert_eq!(
            fdb.iter().filter(|f| f.mac == mac_a).map(|f| f.dst).collect::<Vec<_>>(),
            [Some(ip("198.51.100.4"))]
        );
        // The link is up, so the kernel may add entries of its own (IPv6 multicast neighbours of
        // router solicitations and MLD): only the entry for our address is ours to check.
        let neigh = nl.neighbours(Some(vx.index)).await.unwrap();
        let ours: Vec<_> = neigh.iter().filter(|n| n.ip == ip("10.44.2.0")).collect();
        assert_eq!(ours.len(), 1, "one entry for 10.44.2.0 in {neigh:?}");
        assert!(ours[0].permanent);
        assert_eq!(ours[0].mac, Some(mac_b));
    })
    .await;
    let neigh = t.ip(&["neigh", "show", "dev", "wvx-5"]);
    let ours = neigh.as_array().unwrap().iter().find(|n| n["dst"] == "10.44.2.0").unwrap();
    assert_eq!(ours["lladdr"], mac_b.to_string());
    assert!(ours["state"].as_array().unwrap().iter().any(|s| s == "PERMANENT"));
    let fdb = t.bridge(&["fdb", "show", "dev", "wvx-5"]);
    let entries: Vec<(String, String)> = fdb
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e.get("dst").is_some())
        .map(|e| (e["mac"].as_str().unwrap().to_string(), e["dst"].as_str().unwrap().to_string()))
        .collect();
    assert!(entries.contains(&(zero.to_string(), "198.51.100.2".into())));
    assert!(entries.contains(&(zero.to_string(), "198.51.100.3".into())));
    assert!(entries.contains(&(mac_a.to_string(), "198.51.100.4".into())));
    assert!(
        fdb.as_array().unwrap().iter().filter(|e| e.get("dst").is_some()).all(|e| e["state"] == "permanent")
    );
    t.run(move |nl| async move {
        let vx = nl.require_link("wvx-5").await.unwrap();
        nl.fdb_delete(vx.index, mac_a, Some(ip("198.51.100.4"))).await.unwrap();
        nl.delete_neighbour(vx.index, ip("10.44.2.0")).await.unwrap();
        // The kernel may keep a stale, unreferenced entry for a moment; the static one is gone.
        assert!(
            nl.neighbours(Some(vx.index)).await.unwrap().iter().all(|n| !n.permanent || n.mac != Some(mac_b))
        );
        assert!(nl.fdb(Some(vx.index)).await.unwrap().iter().all(|f| f.mac != mac_a));
    })
    .await;
}

#[tokio::test]
async fn sysctls_are_per_namespace() {
    let t = TestNs::new("sc");
    let root_before = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap();
    let value = t
        .run(|_| async move {
            sysctl::write("net.ipv4.ip_forward", "1").unwrap();
            sysctl::read("net.ipv4.ip_forward").unwrap()
        })
        .await;
    assert_eq!(value, "1");
    let out = Command::new("ip")
        .args(["netns", "exec", &t.name, "cat", "/proc/sys/net/ipv4/ip_forward"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "1");
    assert_eq!(std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap(), root_before);
    assert!(sysctl::read("kernel.hostname").is_err());
}

#[tokio::test]
async fn bad_input_is_refused_before_the_kernel_sees_it() {
    let t = TestNs::new("bad");
    let before = t.ip(&["link", "show"]);
    t.run(|nl| async move {
        for vni in [0, 16_777_216] {
            let err = nl.ensure_vxlan(&VxlanSpec::new("wvx-bad", vni)).await.unwrap_err();
            assert!(matches!(err, NetError::Invalid { what: "VNI", .. }), "{err}");
            assert!(err.to_string().contains("VNI"), "{err}");
        }
        let err = nl.ensure_bridge(&BridgeSpec::new("a-name-of-16-byt")).await.unwrap_err();
        assert!(matches!(err, NetError::Invalid { what: "link name", .. }), "{err}");
        assert!(err.to_string().contains("16 bytes"), "{err}");
        let err = nl.add_veth(&VethSpec::new("ok", "peer-name-too-long")).await.unwrap_err();
        assert!(matches!(err, NetError::Invalid { .. }));
        // A route whose destination has host bits set.
        let lo = nl.require_link("lo").await.unwrap();
        let err = nl.add_route(&RouteSpec::dev(cidr("10.44.2.7/24"), lo.index)).await.unwrap_err();
        assert!(err.to_string().contains("did you mean") || err.to_string().contains("host bits"), "{err}");
        let err = nl.add_address(lo.index, cidr("0.0.0.0/8")).await.unwrap_err();
        assert!(matches!(err, NetError::Invalid { .. }));
    })
    .await;
    // An address whose prefix cannot fit its family never becomes a Cidr at all.
    let err = "10.1.2.3/33".parse::<Cidr>().unwrap_err();
    assert!(err.to_string().contains("/33"), "{err}");
    assert!("fd00::1/129".parse::<Cidr>().is_err());
    assert_eq!(t.ip(&["link", "show"]), before, "nothing was created");
}
