//! `weft net why` on the virtual-host bed: every cause the issue names is induced for real and
//! named correctly, each next to a control (the same traffic passing, or failing, for real):
//! containers on different networks, an `--internal` network to outside, the peer host's FDB
//! entry deleted by hand (repaired meanwhile: said so), UDP 4789 dropped on the underlay between
//! the hosts, an underlay MTU lowered on one host below the overlay's plus 50, the destination
//! stopped, a published port whose container exited, and the destination's host Down. A clear
//! path says so, also asked from a worker.

use std::time::Duration;

use weft_tests::VirtualHosts;
use weft_tests::cluster::{WeftCluster, stderr, stdout};

/// `weft net why ARGS --format json` through host `i`: exit code and the answer.
fn why(cluster: &WeftCluster<'_>, i: usize, args: &[&str]) -> (i32, serde_json::Value) {
    let mut all = vec!["net", "why", "--format", "json"];
    all.extend_from_slice(args);
    let out = cluster.weft(i, &all);
    let json = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("net why {args:?}: {e}: {}{}", stdout(&out), stderr(&out)));
    (out.status.code().unwrap_or(-1), json)
}

/// The answer's hop, asserting the path is blocked there.
fn blocked(cluster: &WeftCluster<'_>, args: &[&str]) -> serde_json::Value {
    let (code, json) = why(cluster, 0, args);
    assert_eq!(code, 1, "a blocked path exits 1: {json:#}");
    assert_eq!(json["clear"], false, "{json:#}");
    json["answer"].clone()
}

fn clear(cluster: &WeftCluster<'_>, i: usize, args: &[&str]) -> serde_json::Value {
    let (code, json) = why(cluster, i, args);
    assert_eq!((code, &json["clear"]), (0, &serde_json::Value::Bool(true)), "{json:#}");
    json
}

/// `weft inspect` (or `network inspect`) through host `i`: the first object.
fn inspect(cluster: &WeftCluster<'_>, i: usize, args: &[&str]) -> serde_json::Value {
    serde_json::from_str::<serde_json::Value>(&cluster.weft_ok(i, args)).unwrap()[0].clone()
}

fn pings(cluster: &WeftCluster<'_>, from: &str, to: &str) -> bool {
    cluster.weft(0, &["exec", from, "ping", "-c", "1", "-W", "1", to]).status.success()
}

#[test]
fn net_why_names_each_cause() {
    let bed = VirtualHosts::new(2);
    let cluster = WeftCluster::new(&bed);
    cluster.form(1, 1);
    cluster.import_busybox(&[0, 1]);
    for (name, subnet, internal) in
        [("app", "10.71.0.0/16", false), ("db", "10.72.0.0/16", false), ("priv", "10.73.0.0/16", true)]
    {
        let mut args = vec!["network", "create", "-d", "overlay", "--subnet", subnet, name];
        if internal {
            args.insert(4, "--internal");
        }
        cluster.weft_ok(0, &args);
    }
    let sleeper: &[&str] = &["sleep", "3600"];
    let site: &[&str] =
        &["sh", "-c", "mkdir -p /srv && echo why > /srv/index.html && exec httpd -f -p 80 -h /srv"];
    let run = |host: usize, name: &str, net: &str, extra: &[&str], cmd: &[&str]| {
        let mut args = vec!["run", "-d", "--name", name, "--network", net];
        args.extend_from_slice(extra);
        args.push("busybox");
        args.extend_from_slice(cmd);
        cluster.weft_ok(host, &args);
    };
    run(0, "a", "app", &[], sleeper);
    run(1, "b", "app", &[], sleeper);
    run(1, "d", "db", &[], sleeper);
    run(0, "p", "priv", &[], sleeper);
    run(1, "web", "app", &["-p", "8080:80"], site);
    let h1 = bed.host(1).underlay(false).to_string();
    cluster.eventually("a reaches b", Duration::from_secs(10), || pings(&cluster, "a", "b"));

    // A clear path, asked on the manager and on the worker (forwarded to the leader).
    let json = clear(&cluster, 0, &["a", "b"]);
    let hops = json["hops"].as_array().unwrap();
    assert!(hops.iter().any(|h| h["what"] == "FDB entry for h1's VTEP" && h["ok"] == true), "{json:#}");
    let underlay = hops.iter().find(|h| h["place"] == "h0 -> h1").unwrap();
    assert!(underlay["detail"].as_str().unwrap().contains("answered in"), "the probe ran: {underlay}");
    clear(&cluster, 1, &["b", "a"]);
    let text = cluster.weft(0, &["net", "why", "a", "b"]);
    assert!(text.status.success() && stdout(&text).ends_with("the path is clear\n"), "{}", stdout(&text));

    // Bad input: named, nothing asked of anyone.
    let out = cluster.weft(0, &["net", "why", "a", "nosuch"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(stderr(&out).contains("no container, host or address \"nosuch\""), "{}", stderr(&out));
    let out = cluster.weft(0, &["net", "why", "a", "b", "--port", "80/sctp"]);
    assert!(stderr(&out).contains("tcp or udp"), "{}", stderr(&out));

    // Different networks: a cannot reach d's address; net why names the isolation.
    let d_ip = inspect(&cluster, 1, &["inspect", "d"])["networks"][0]["ips"][0].as_str().unwrap().to_string();
    assert!(!pings(&cluster, "a", &d_ip), "isolated networks must not pass");
    let answer = blocked(&cluster, &["a", "d"]);
    assert_eq!(answer["what"], "firewall (isolation)", "{answer}");
    assert!(answer["detail"].as_str().unwrap().contains("a is on app, d on db"), "{answer}");

    // An --internal network to outside: p cannot reach h1's underlay address, a can.
    assert!(!pings(&cluster, "p", &h1), "an internal network must not leave");
    assert!(pings(&cluster, "a", &h1), "control: a non-internal network leaves");
    let answer = blocked(&cluster, &["p", "h1"]);
    assert_eq!(answer["what"], "firewall (internal network)", "{answer}");
    assert!(answer["detail"].as_str().unwrap().contains("priv is --internal"), "{answer}");
    clear(&cluster, 0, &["a", "h1"]);

    // The peer host's FDB entry deleted by hand on h1: the reconciler puts it back, and net why
    // says it was missing and repaired.
    let vni = inspect(&cluster, 0, &["network", "inspect", "app"])["vni"].as_u64().unwrap();
    let dev = format!("wvx-{vni}");
    let h0 = bed.host(0).underlay(false).to_string();
    let fdb_to_h0 = || -> Option<String> {
        let out = bed.host(1).output("bridge", &["-j", "fdb", "show", "dev", &dev]);
        let entries: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        entries
            .as_array()?
            .iter()
            .find(|e| e["dst"] == h0.as_str())
            .map(|e| e["mac"].as_str().unwrap().to_string())
    };
    let mac = fdb_to_h0().expect("h1 has an FDB entry for h0");
    let del = bed.host(1).output("bridge", &["fdb", "del", &mac, "dev", &dev, "dst", &h0, "self"]);
    assert!(del.status.success(), "{}", stderr(&del));
    cluster.eventually("the FDB entry back on h1", Duration::from_secs(15), || fdb_to_h0().is_some());
    let json = clear(&cluster, 0, &["a", "b"]);
    let drift = json["hops"].as_array().unwrap().iter().find(|h| h["what"] == "drift towards h0").cloned();
    let drift = drift.unwrap_or_else(|| panic!("no repair reported: {json:#}"));
    assert_eq!(drift["place"], "h1");
    assert!(drift["detail"].as_str().unwrap().contains(&format!("FDB entry {mac} dst {h0}")), "{drift}");

    // UDP 4789 dropped on the underlay between the hosts (in the switch).
    let sw = |args: &[&str]| {
        let out = bed.switch().output("nft", args);
        assert!(out.status.success(), "nft {args:?}: {}", stderr(&out));
    };
    let rules = cluster.scratch().join("drop-vxlan.nft");
    std::fs::write(
        &rules,
        "table bridge weftwhy {\n  chain drop_vxlan {\n    type filter hook forward priority 0;\n    udp dport 4789 drop\n  }\n}\n",
    )
    .unwrap();
    sw(&["-f", rules.to_str().unwrap()]);
    assert!(!pings(&cluster, "a", "b"), "VXLAN dropped: no overlay traffic");
    let answer = blocked(&cluster, &["a", "b"]);
    assert_eq!(
        (&answer["place"], &answer["what"]),
        (&"h0 -> h1".into(), &"underlay (VXLAN, UDP 4789)".into()),
        "{answer}"
    );
    assert!(answer["detail"].as_str().unwrap().contains("drops VXLAN (UDP 4789)"), "{answer}");
    sw(&["delete", "table", "bridge", "weftwhy"]);
    cluster.eventually("a reaches b again", Duration::from_secs(10), || pings(&cluster, "a", "b"));

    // h1's underlay MTU lowered below the overlay's 1450 + 50: full-size packets from h0 are lost.
    let b_ip = inspect(&cluster, 1, &["inspect", "b"])["networks"][0]["ips"][0].as_str().unwrap().to_string();
    let a_pid = inspect(&cluster, 0, &["inspect", "a"])["pid"].as_u64().unwrap();
    let a_ns = weft_tests::Namespace::of_process(a_pid as u32).unwrap();
    let big_ping =
        || a_ns.output("ping", &["-M", "do", "-c", "1", "-W", "1", "-s", "1422", &b_ip]).status.success();
    assert!(big_ping(), "control: 1450-byte packets pass at MTU 1500");
    bed.host(1).output("ip", &["link", "set", "eth0", "mtu", "1400"]);
    assert!(!big_ping(), "1450-byte overlay packets cannot reach a 1400-byte underlay");
    assert!(pings(&cluster, "a", "b"), "small ones still pass");
    let answer = blocked(&cluster, &["a", "b"]);
    assert!(answer["detail"].as_str().unwrap().contains("h1's underlay link eth0 has MTU 1400"), "{answer}");
    bed.host(1).output("ip", &["link", "set", "eth0", "mtu", "1500"]);
    // h1 sized its own devices down for its link; once they are back at 1450 (before that, a
    // full-size reply from b would teach b a smaller path MTU), full-size packets pass again.
    let h1_vxlan_mtu = || {
        let out = bed.host(1).output("ip", &["-j", "link", "show", &dev]);
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap_or_default()[0]["mtu"].as_u64()
    };
    cluster.eventually("h1's VXLAN device back at 1450", Duration::from_secs(15), || {
        h1_vxlan_mtu() == Some(1450)
    });
    cluster.eventually("full-size packets pass again", Duration::from_secs(10), big_ping);
    drop(a_ns);
    clear(&cluster, 0, &["a", "b"]);

    // The destination stopped.
    cluster.weft_ok(1, &["stop", "-t", "1", "b"]);
    assert!(
        !cluster.weft(0, &["exec", "b", "true"]).status.success()
            || !cluster.weft(1, &["exec", "b", "true"]).status.success()
    );
    let answer = blocked(&cluster, &["a", "b"]);
    assert_eq!((&answer["place"], &answer["what"]), (&"h1".into(), &"container b".into()), "{answer}");
    assert!(answer["detail"].as_str().unwrap().contains("b is not running"), "{answer}");
    cluster.weft_ok(1, &["start", "b"]);
    cluster.eventually("b back", Duration::from_secs(10), || pings(&cluster, "a", "b"));

    // A published port: served while web runs; named as exited once it is stopped.
    let curl = || {
        let out = bed.host(0).output(
            "curl",
            &["-s", "-o", "/dev/null", "-m", "2", "-w", "%{http_code}", &format!("http://{h1}:8080/")],
        );
        stdout(&out) == "200"
    };
    cluster.eventually("web answers on h1:8080", Duration::from_secs(10), curl);
    let json = clear(&cluster, 0, &["h0", "h1", "--port", "8080/tcp"]);
    assert!(json["hops"].to_string().contains("DNAT to web"), "{json:#}");
    cluster.weft_ok(1, &["stop", "-t", "1", "web"]);
    assert!(!curl(), "nothing answers once web stopped");
    let answer = blocked(&cluster, &["h0", "h1", "--port", "8080/tcp"]);
    assert_eq!(answer["what"], "published port 8080/tcp", "{answer}");
    assert!(
        answer["detail"].as_str().unwrap().contains("published by web, which is not running"),
        "{answer}"
    );

    // The destination's host Down.
    cluster.kill(1);
    cluster.eventually("h1 Down", Duration::from_secs(15), || {
        cluster.nodes(0).is_ok_and(|n| n.iter().any(|n| n["name"] == "h1" && n["status"] == "Down"))
    });
    let answer = blocked(&cluster, &["a", "b"]);
    assert!(answer["detail"].as_str().unwrap().contains("h1 is Down since"), "{answer}");
    cluster.weft_ok(0, &["rm", "-f", "a", "p"]);
}
