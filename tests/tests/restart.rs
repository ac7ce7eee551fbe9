//! Restart policies with Docker's semantics: on-failure with a retry limit, always, unless-stopped,
//! a stop by hand, and the reboot case (weftd and the container killed, weftd started again):
//! the container runs again with its network working.

use std::time::Duration;

use weft_tests::VirtualHosts;
use weft_tests::cluster::{WeftCluster, stderr};

fn inspect(cluster: &WeftCluster<'_>, name: &str) -> serde_json::Value {
    let text = cluster.weft_ok(0, &["inspect", name]);
    serde_json::from_str::<serde_json::Value>(&text).unwrap()[0].clone()
}

#[test]
fn restart_policies_bring_containers_back_as_docker_does() {
    let bed = VirtualHosts::new(1);
    let cluster = WeftCluster::new(&bed);
    cluster.form(1, 0);
    cluster.import_busybox(&[0]);
    cluster.weft_ok(0, &["network", "create", "--subnet", "10.95.0.0/24", "app"]);

    // Bad input is refused and leaves no container.
    let before = cluster.weft_ok(0, &["ps", "-a"]);
    for (args, why) in [
        (vec!["run", "-d", "--restart", "sometimes", "busybox", "true"], "invalid --restart"),
        (vec!["run", "-d", "--restart", "on-failure:x", "busybox", "true"], "invalid --restart"),
        (vec!["run", "-d", "--rm", "--restart", "always", "busybox", "true"], "conflict"),
        (vec!["run", "--rm", "--restart", "always", "busybox", "true"], "conflict"),
    ] {
        let out = cluster.weft(0, &args);
        assert_eq!(out.status.code(), Some(125), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(why), "{args:?}: {}", stderr(&out));
    }
    assert_eq!(cluster.weft_ok(0, &["ps", "-a"]), before);

    // on-failure:2 restarts a failing command twice, then leaves it exited.
    cluster.weft_ok(
        0,
        &["run", "-d", "--name", "flaky", "--restart", "on-failure:2", "busybox", "sh", "-c", "exit 3"],
    );
    cluster.eventually("flaky restarted twice", Duration::from_secs(15), || {
        let c = inspect(&cluster, "flaky");
        c["restart_count"] == 2 && c["state"] == "exited"
    });
    std::thread::sleep(Duration::from_millis(1500));
    let flaky = inspect(&cluster, "flaky");
    assert_eq!((flaky["restart_count"].as_u64(), flaky["exit_code"].as_i64()), (Some(2), Some(3)), "{flaky}");
    assert_eq!(flaky["restart_policy"], "on-failure:2");
    // A clean exit is not a failure.
    cluster.weft_ok(0, &["run", "-d", "--name", "clean", "--restart", "on-failure", "busybox", "true"]);
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(inspect(&cluster, "clean")["restart_count"], 0);

    // always: an exit of its own brings it back; a stop by hand does not.
    cluster.weft_ok(
        0,
        &[
            "run",
            "-d",
            "--name",
            "svc",
            "--restart",
            "always",
            "--network",
            "app",
            "busybox",
            "sleep",
            "3600",
        ],
    );
    cluster.weft_ok(0, &["run", "-d", "--name", "peer", "--network", "app", "busybox", "sleep", "3600"]);
    let pid = inspect(&cluster, "svc")["pid"].as_u64().unwrap();
    // SAFETY: signalling the workload pid weft reported.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    cluster.eventually("svc runs again after its workload was killed", Duration::from_secs(10), || {
        let c = inspect(&cluster, "svc");
        c["state"] == "running" && c["restart_count"] == 1 && c["pid"].as_u64() != Some(pid)
    });
    cluster.weft_ok(0, &["run", "-d", "--name", "manual", "--restart", "always", "busybox", "sleep", "3600"]);
    cluster.weft_ok(
        0,
        &["run", "-d", "--name", "kept", "--restart", "unless-stopped", "busybox", "sleep", "3600"],
    );
    cluster.weft_ok(0, &["stop", "-t", "1", "manual", "kept"]);
    std::thread::sleep(Duration::from_millis(1500));
    for name in ["manual", "kept"] {
        let c = inspect(&cluster, name);
        assert_eq!(
            (c["state"].as_str(), c["restart_count"].as_u64()),
            (Some("exited"), Some(0)),
            "{name}: {c}"
        );
    }

    // The reboot case: weftd and svc's processes die; weftd starts again and brings svc back
    // (and `always` after a stop by hand, as Docker's daemon does), but not the unless-stopped one.
    let svc = inspect(&cluster, "svc");
    let (id, pid) = (svc["id"].as_str().unwrap().to_string(), svc["pid"].as_u64().unwrap());
    cluster.kill(0);
    let _ = std::process::Command::new("pkill").args(["-KILL", "-f", &id]).status();
    // SAFETY: signalling the workload pid weft reported.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    cluster.restart(0);
    cluster.eventually("svc is back after the reboot", Duration::from_secs(20), || {
        let c = inspect(&cluster, "svc");
        c["state"] == "running" && c["restart_count"] == 2
    });
    cluster.eventually("svc answers on its network", Duration::from_secs(10), || {
        cluster.weft(0, &["exec", "peer", "ping", "-c", "1", "-W", "1", "svc"]).status.success()
    });
    cluster.eventually("always comes back after weftd started again", Duration::from_secs(10), || {
        inspect(&cluster, "manual")["state"] == "running"
    });
    assert_eq!(inspect(&cluster, "kept")["state"], "exited", "unless-stopped stays stopped");
    cluster.weft_ok(0, &["rm", "-f", "svc", "peer", "manual", "kept", "flaky", "clean"]);
}

/// The rest of a reboot (see [`WeftCluster::reboot`]): the container's network namespace, its
/// interfaces, the host's devices and firewall are gone with it. A worker's `--restart always`
/// container comes back in a new namespace with the addresses it had (the cluster still held
/// them), its alias and published port working from another host; after a second reboot that
/// outlasted the lease, the cluster had released its endpoint and it comes back with a new one,
/// which names and the port follow.
#[test]
fn a_rebooted_host_brings_its_containers_back_with_their_network() {
    let bed = VirtualHosts::new(2);
    let mut cluster = WeftCluster::new(&bed);
    cluster.flags = ["--down-after", "2s", "--lease-ttl", "3s"].map(String::from).to_vec();
    cluster.form(1, 1);
    cluster.import_busybox(&[0, 1]);
    cluster.weft_ok(0, &["network", "create", "-d", "overlay", "--subnet", "10.96.0.0/16", "app"]);
    let web = "mkdir -p /srv && echo hello-after-reboot > /srv/index.html && httpd -f -p 80 -h /srv";
    cluster.weft_ok(
        1,
        &[
            "run",
            "-d",
            "--name",
            "svc",
            "--restart",
            "always",
            "--network",
            "app",
            "--network-alias",
            "api",
            "-p",
            "8080:80",
            "busybox",
            "sh",
            "-c",
            web,
        ],
    );
    cluster.weft_ok(0, &["run", "-d", "--name", "peer", "--network", "app", "busybox", "sleep", "3600"]);
    let svc_of = || {
        let text = cluster.weft_ok(1, &["inspect", "svc"]);
        serde_json::from_str::<serde_json::Value>(&text).unwrap()[0].clone()
    };
    let before = svc_of();
    let ip = before["networks"][0]["ips"][0].as_str().unwrap().to_string();
    let endpoint = before["networks"][0]["endpoint"].clone();
    let get = format!("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | busybox nc -w 3 {} 8080", bed.host(1).addr);
    let reachable = |name: &str, want_ip: &str| {
        let ping = cluster.weft(0, &["exec", "peer", "ping", "-c", "1", "-W", "1", name]);
        let lookup = cluster.weft(0, &["exec", "peer", "nslookup", name]);
        // From the other host's own namespace, as a client outside the cluster would.
        let http = bed.host(0).output("sh", &["-c", &get]);
        ping.status.success()
            && String::from_utf8_lossy(&lookup.stdout).contains(want_ip)
            && String::from_utf8_lossy(&http.stdout).contains("hello-after-reboot")
    };
    cluster.eventually("svc reachable before the reboot", Duration::from_secs(10), || {
        reachable("svc", &ip) && reachable("api", &ip)
    });

    // A quick reboot: the cluster still holds svc's endpoint.
    cluster.reboot(1);
    cluster.restart(1);
    cluster.eventually("svc back with its address, name, alias and port", Duration::from_secs(30), || {
        let c = svc_of();
        c["state"] == "running" && reachable("svc", &ip) && reachable("api", &ip)
    });
    let after = svc_of();
    assert_eq!(after["networks"][0]["endpoint"], endpoint, "the same endpoint: {after}");
    assert_eq!(after["networks"][0]["ips"][0], ip.as_str());
    let inside = cluster.weft_ok(1, &["exec", "svc", "cat", "/etc/hosts"]);
    assert!(inside.contains(&ip), "{inside}");

    // A reboot longer than the lease: the cluster releases svc's endpoint meanwhile.
    cluster.reboot(1);
    cluster.eventually("h1's endpoints released", Duration::from_secs(30), || {
        let inspect = cluster.weft_ok(0, &["network", "inspect", "app"]);
        !inspect.contains("svc")
    });
    cluster.restart(1);
    cluster.eventually("svc back with a new endpoint", Duration::from_secs(30), || {
        let c = svc_of();
        c["state"] == "running"
            && !c["networks"].as_array().is_none_or(Vec::is_empty)
            && c["networks"][0]["endpoint"] != endpoint
    });
    let now = svc_of();
    let new_ip = now["networks"][0]["ips"][0].as_str().unwrap().to_string();
    assert!(now["revoked_networks"].as_array().is_none_or(Vec::is_empty), "{now}");
    cluster.eventually("the new endpoint answers by name, alias and port", Duration::from_secs(15), || {
        reachable("svc", &new_ip) && reachable("api", &new_ip)
    });
    let inside = cluster.weft_ok(1, &["exec", "svc", "cat", "/etc/hosts"]);
    assert!(inside.contains(&new_ip), "{inside}");
    cluster.weft_ok(1, &["rm", "-f", "svc"]);
    cluster.weft_ok(0, &["rm", "-f", "peer"]);
}
