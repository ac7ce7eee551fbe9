//! weftd and weft end to end, driven only through the two binaries as a user would: an overlay
//! network across virtual hosts, containers that find each other by name on every host, the
//! container verbs, refusals of bad input, and a killed manager shown Down and Ready again.

use std::time::Duration;

use weft_tests::VirtualHosts;
use weft_tests::cluster::{WeftCluster, stderr, stdout};

#[test]
fn overlay_containers_find_each_other_by_name_across_hosts() {
    let bed = VirtualHosts::new(3);
    let cluster = WeftCluster::new(&bed);
    cluster.form(3, 0);
    let scratch = cluster.scratch();
    cluster.import_busybox(&[0, 1, 2]);

    // image build: a Dockerfile on top of the imported image, its context sent by the CLI.
    let context = scratch.join("ctx");
    std::fs::create_dir_all(&context).unwrap();
    std::fs::write(context.join("greeting"), "hello\n").unwrap();
    std::fs::write(
        context.join("Dockerfile"),
        "FROM busybox\nCOPY greeting /greeting\nRUN echo built > /built\nCMD [\"cat\", \"/greeting\", \"/built\"]\n",
    )
    .unwrap();
    let built = cluster.weft_ok(0, &["image", "build", "-t", "greeter", context.to_str().unwrap()]);
    assert!(built.contains("built ") && built.contains("greeter"), "{built}");
    let greeting = cluster.weft_ok(0, &["run", "--rm", "--network", "none", "greeter"]);
    assert_eq!(greeting.lines().collect::<Vec<_>>(), ["hello", "built"]);
    assert!(cluster.weft_ok(0, &["image", "ls"]).contains("greeter"));
    cluster.weft_ok(0, &["run", "-d", "--name", "user", "--network", "none", "greeter", "sleep", "60"]);
    let in_use = cluster.weft(0, &["image", "rm", "greeter"]);
    assert!(stderr(&in_use).contains("used by container(s) user"), "{}", stderr(&in_use));
    cluster.weft_ok(0, &["rm", "-f", "user"]);
    cluster.weft_ok(0, &["image", "rm", "greeter"]);
    assert!(!cluster.weft_ok(0, &["image", "ls"]).contains("greeter"));

    let created =
        cluster.weft_ok(0, &["network", "create", "--driver", "overlay", "--subnet", "10.44.0.0/16", "app"]);
    assert!(created.contains("app overlay 10.44.0.0/16"), "{created}");
    cluster.weft_ok(0, &["network", "create", "--driver", "overlay", "other"]);

    let db = cluster.weft_ok(
        1,
        &[
            "run",
            "-d",
            "--name",
            "db",
            "--network",
            "app",
            "--network-alias",
            "database",
            "busybox",
            "sleep",
            "3600",
        ],
    );
    assert_eq!(db.trim().len(), 64, "run -d prints the id: {db}");
    cluster.weft_ok(0, &["run", "-d", "--name", "web", "--network", "app", "busybox", "sleep", "3600"]);

    // By name, both ways, across hosts.
    let ping = |host: usize, from: &str, to: &str| {
        cluster.weft(host, &["exec", from, "ping", "-c", "1", "-W", "2", to])
    };
    cluster.eventually("web pings db by name", Duration::from_secs(10), || {
        ping(0, "web", "db").status.success()
    });
    if std::env::var_os("WEFT_TEST_SHOW").is_some() {
        for args in [
            vec!["exec", "web", "ping", "-c", "1", "db"],
            vec!["exec", "web", "cat", "/etc/resolv.conf", "/etc/hosts"],
            vec!["exec", "web", "ip", "addr"],
            vec!["ps"],
        ] {
            eprintln!("$ weft {}\n{}", args.join(" "), cluster.weft_ok(0, &args));
        }
    }
    let out = ping(1, "db", "web");
    assert!(out.status.success(), "db pings web: {}", stdout(&out));

    let alias = ping(0, "web", "database");
    assert!(
        alias.status.success(),
        "aliases resolve too: {} {} {}",
        stdout(&alias),
        stderr(&alias),
        cluster.weft_ok(0, &["network", "inspect", "app"])
    );

    // connect adds an interface on a second network (routes to its subnet, no second default
    // route); disconnect removes it and releases the address.
    cluster.weft_ok(0, &["network", "create", "--driver", "overlay", "--subnet", "10.60.0.0/16", "backend"]);
    cluster.weft_ok(0, &["network", "connect", "--alias", "api", "backend", "web"]);
    let eth1 = cluster.weft_ok(0, &["exec", "web", "ip", "-o", "addr", "show", "eth1"]);
    assert!(eth1.contains("10.60."), "{eth1}");
    let routes = cluster.weft_ok(0, &["exec", "web", "ip", "route"]);
    assert!(routes.contains("10.60.0.0/16 via") && routes.matches("default").count() == 1, "{routes}");
    let refused = cluster.weft(0, &["network", "connect", "backend", "web"]);
    assert!(stderr(&refused).contains("already connected"), "{}", stderr(&refused));
    cluster.weft_ok(0, &["network", "disconnect", "backend", "web"]);
    assert!(!cluster.weft(0, &["exec", "web", "ip", "link", "show", "eth1"]).status.success());
    cluster.weft_ok(0, &["network", "rm", "backend"]);

    // A container started later on a third host is resolvable at once from the first two.
    cluster.weft_ok(2, &["run", "-d", "--name", "late", "--network", "app", "busybox", "sleep", "3600"]);
    cluster.eventually("late resolves from web", Duration::from_secs(1), || {
        cluster.weft(0, &["exec", "web", "nslookup", "late"]).status.success()
    });
    // A name resolves on a host only once that host's routes to it are in place, and `run`
    // returns only once its own host's are: the very first packet gets through.
    assert!(ping(0, "web", "late").status.success(), "the first ping after resolution is answered");

    // A container on another network is neither resolvable nor reachable.
    cluster
        .weft_ok(2, &["run", "-d", "--name", "stranger", "--network", "other", "busybox", "sleep", "3600"]);
    let lookup = cluster.weft(2, &["exec", "stranger", "nslookup", "db"]);
    assert!(!lookup.status.success(), "db must not resolve on another network");
    let inspect: serde_json::Value = serde_json::from_str(&cluster.weft_ok(1, &["inspect", "db"])).unwrap();
    let db_ip = inspect[0]["networks"][0]["ips"][0].as_str().unwrap().to_string();
    assert!(db_ip.starts_with("10.44."), "{inspect}");
    assert!(!ping(2, "stranger", &db_ip).status.success(), "another network's address is unreachable");
    let late: serde_json::Value = serde_json::from_str(&cluster.weft_ok(2, &["inspect", "late"])).unwrap();
    let late_ip = late[0]["networks"][0]["ips"][0].as_str().unwrap().to_string();
    assert!(!ping(2, "stranger", &late_ip).status.success(), "isolated on the same host too");

    // network inspect lists the endpoints of every host.
    let net: serde_json::Value =
        serde_json::from_str(&cluster.weft_ok(2, &["network", "inspect", "app"])).unwrap();
    let mut names: Vec<&str> =
        net[0]["endpoints"].as_array().unwrap().iter().map(|e| e["name"].as_str().unwrap()).collect();
    names.sort();
    assert_eq!(names, ["db", "late", "web"]);
    let nodes: Vec<&str> =
        net[0]["endpoints"].as_array().unwrap().iter().map(|e| e["node"].as_str().unwrap()).collect();
    assert!(nodes.contains(&"h0") && nodes.contains(&"h1") && nodes.contains(&"h2"), "{net}");

    // ps, logs -f, exec, stop, rm.
    let ps = cluster.weft_ok(1, &["ps"]);
    assert!(ps.lines().any(|l| l.contains("db") && l.contains("Up") && l.contains(&db_ip)), "{ps}");
    cluster.weft_ok(
        1,
        &[
            "run",
            "-d",
            "--name",
            "talker",
            "--network",
            "app",
            "busybox",
            "sh",
            "-c",
            "for i in 1 2 3; do echo line$i; sleep 0.2; done",
        ],
    );
    let logs = cluster.weft_ok(1, &["logs", "-f", "talker"]);
    assert_eq!(logs.lines().collect::<Vec<_>>(), ["line1", "line2", "line3"], "logs -f follows to the end");
    // exec -i feeds stdin; exec -t runs on a terminal inside the container.
    let mut cat = std::process::Command::new(weft_tests::cluster::bin("weft"))
        .arg("-H")
        .arg(format!("unix://{}", cluster.socket(1).display()))
        .args(["exec", "-i", "db", "cat"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut cat.stdin.take().unwrap(), b"through stdin\n").unwrap();
    let cat = cat.wait_with_output().unwrap();
    assert_eq!(stdout(&cat), "through stdin\n");
    let tty = cluster.weft_ok(1, &["exec", "-t", "db", "sh", "-c", "tty; exit 0"]);
    assert!(tty.contains("/dev/pts/"), "{tty}");
    let code = cluster.weft(1, &["exec", "db", "sh", "-c", "exit 7"]);
    assert_eq!(code.status.code(), Some(7), "exec returns the command's status");
    let attached =
        cluster.weft(1, &["run", "--rm", "--network", "none", "busybox", "sh", "-c", "echo hello; exit 3"]);
    assert_eq!(attached.status.code(), Some(3));
    assert_eq!(stdout(&attached).trim(), "hello");
    cluster.weft_ok(1, &["stop", "-t", "1", "db"]);
    let ps_all = cluster.weft_ok(1, &["ps", "-a"]);
    assert!(ps_all.lines().any(|l| l.contains("db") && l.contains("Exited")), "{ps_all}");
    assert!(!cluster.weft_ok(1, &["ps"]).contains(" db "), "stopped containers leave ps");

    // A network in use cannot be removed; once its containers are gone it can, with their addresses.
    let refused = cluster.weft(0, &["network", "rm", "app"]);
    assert_eq!(refused.status.code(), Some(125));
    assert!(stderr(&refused).contains("in use"), "{}", stderr(&refused));
    for (host, name) in [(1, "db"), (1, "talker"), (0, "web"), (2, "late")] {
        cluster.weft_ok(host, &["rm", "-f", name]);
    }
    cluster.weft_ok(0, &["network", "rm", "app"]);
    let ls = cluster.weft_ok(2, &["network", "ls"]);
    assert!(!ls.contains("app") && ls.contains("other"), "{ls}");
    assert!(
        std::fs::read_dir(cluster.state_dir(1).join("netns")).unwrap().next().is_none(),
        "removed containers leave no namespace behind"
    );
}

#[test]
fn killed_manager_is_down_then_ready_and_bad_input_is_refused() {
    let bed = VirtualHosts::new(3);
    let cluster = WeftCluster::new(&bed);
    cluster.form(3, 0);
    let leader = cluster.leader(0).expect("a leader");
    let victim = (0..3).find(|i| *i != leader).unwrap();
    let observer = (0..3).find(|i| *i != leader && *i != victim).unwrap();
    cluster.kill(victim);
    let name = format!("h{victim}");
    let status = |want: &str| {
        cluster
            .nodes(observer)
            .is_ok_and(|nodes| nodes.iter().any(|n| n["name"] == name.as_str() && n["status"] == want))
    };
    cluster.eventually("killed manager shown Down", Duration::from_secs(15), || status("Down"));
    let table = cluster.weft_ok(observer, &["node", "ls"]);
    assert!(table.lines().any(|l| l.contains(&name) && l.contains("Down")), "{table}");
    cluster.restart(victim);
    cluster.eventually("restarted manager shown Ready", Duration::from_secs(15), || status("Ready"));

    // Bad input: a clear message, exit 125, no stack trace, nothing changed.
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["frobnicate"], "unrecognized subcommand"),
        (vec!["ps", "--bogus"], "unexpected argument"),
        (vec!["network", "create", "--subnet", "10.50.0.0/33", "n1"], "/33"),
        (vec!["network", "create", "--subnet", "banana", "n1"], "invalid CIDR"),
        (vec!["logs", "nosuch"], "no such container"),
        (vec!["stop", "nosuch"], "no such container"),
        (vec!["run", "--network", "nosuch", "busybox"], "no such image"),
        (vec!["network", "rm", "nosuch"], "unknown network"),
    ];
    for (args, want) in cases {
        let out = cluster.weft(observer, &args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(125), "{args:?} must fail with 125: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
        assert!(!err.contains("panicked") && !err.contains("RUST_BACKTRACE"), "{args:?}: {err}");
    }
    assert!(cluster.weft_ok(observer, &["network", "ls"]).lines().count() == 1, "nothing was created");
    let down = std::process::Command::new(weft_tests::cluster::bin("weft"))
        .args(["-H", "unix:///nonexistent/weft.sock", "ps"])
        .output()
        .unwrap();
    assert_eq!(down.status.code(), Some(125));
    assert!(stderr(&down).contains("is weftd running?"), "{}", stderr(&down));
}

#[test]
fn the_readme_demo_runs_and_pings_across_hosts() {
    // The README's first command, with the binaries this test run built (its own namespaces are
    // named weftdemo<pid>-*, its addresses 192.0.2.0/24 inside them only).
    let bin_dir = weft_tests::cluster::bin("weft").parent().unwrap().to_path_buf();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let out = std::process::Command::new("bash")
        .arg(root.join("deploy/demo.sh"))
        .env("WEFT_BIN_DIR", &bin_dir)
        .output()
        .unwrap();
    let text = stdout(&out);
    assert!(out.status.success(), "demo failed:\n{text}\n{}", stderr(&out));
    assert!(text.contains("PING db (10.44."), "{text}");
    assert!(text.contains("PING web (10.44."), "{text}");
    assert_eq!(text.matches("3 packets transmitted, 3 packets received").count(), 2, "{text}");
    assert!(text.contains("\"name\": \"demo\"") && text.contains("host2"), "{text}");
    // Its clean-up stopped every weftd it started, with SIGTERM.
    assert!(!stderr(&out).contains("did not stop"), "{}", stderr(&out));
    let left: Vec<String> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|p| std::fs::read(p.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains("weftd") && c.contains("/tmp/weft-demo."))
        .collect();
    assert!(left.is_empty(), "the demo left weftd running: {left:?}");
}

#[test]
fn local_bridge_networks_resolve_names_and_containers_outlive_weftd() {
    let bed = VirtualHosts::new(2);
    let cluster = WeftCluster::new(&bed);
    cluster.form(1, 1);
    let scratch = cluster.scratch();
    // image import - reads the archive from stdin.
    let tar = weft_tests::images::busybox_save_tar(&scratch);
    let import = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "{} -H unix://{} image import -t busybox:piped - < {}",
            weft_tests::cluster::bin("weft").display(),
            cluster.socket(1).display(),
            tar.display()
        ))
        .output()
        .unwrap();
    assert!(import.status.success(), "{}", stderr(&import));
    assert!(cluster.weft_ok(1, &["image", "ls"]).contains("busybox:piped"));
    // Networks are the cluster's: a worker may not make them (its certificate allows endpoints of
    // its own only), a manager does, and the worker uses them at once.
    let refused = cluster.weft(1, &["network", "create", "--subnet", "10.70.0.0/24", "lan"]);
    assert_eq!(refused.status.code(), Some(125), "{}", stderr(&refused));
    assert!(stderr(&refused).contains("needs a manager or an admin certificate"), "{}", stderr(&refused));
    assert!(!cluster.weft_ok(0, &["network", "ls"]).contains("lan"));
    cluster.weft_ok(0, &["network", "create", "--subnet", "10.70.0.0/24", "lan"]);
    cluster.weft_ok(0, &["network", "create", "--driver", "bridge", "lan2"]);
    for name in ["a", "b"] {
        cluster
            .weft_ok(1, &["run", "-d", "--name", name, "--network", "lan", "busybox:piped", "sleep", "3600"]);
    }
    cluster.weft_ok(1, &["run", "-d", "--name", "c", "--network", "lan2", "busybox", "sleep", "3600"]);
    // --ip: a fixed address, refused once taken.
    cluster.weft_ok(
        1,
        &[
            "run",
            "-d",
            "--name",
            "fixed",
            "--network",
            "lan",
            "--ip",
            "10.70.0.9",
            "busybox",
            "sleep",
            "3600",
        ],
    );
    let fixed: serde_json::Value = serde_json::from_str(&cluster.weft_ok(1, &["inspect", "fixed"])).unwrap();
    assert_eq!(fixed[0]["networks"][0]["ips"][0], "10.70.0.9");
    let taken =
        cluster.weft(1, &["run", "-d", "--network", "lan", "--ip", "10.70.0.9", "busybox", "sleep", "3600"]);
    assert_eq!(taken.status.code(), Some(125), "{}", stderr(&taken));
    cluster.weft_ok(1, &["rm", "-f", "fixed"]);
    let ping = |from: &str, to: &str| cluster.weft(1, &["exec", from, "ping", "-c", "1", "-W", "2", to]);
    cluster.eventually("a pings b by name on a local bridge", Duration::from_secs(10), || {
        ping("a", "b").status.success()
    });
    let inspect: serde_json::Value = serde_json::from_str(&cluster.weft_ok(1, &["inspect", "b"])).unwrap();
    let b_ip = inspect[0]["networks"][0]["ips"][0].as_str().unwrap().to_string();
    assert!(b_ip.starts_with("10.70.0."), "{inspect}");
    // Another bridge network on the same host: neither its names nor its addresses.
    assert!(!cluster.weft(1, &["exec", "c", "nslookup", "b"]).status.success());
    assert!(!ping("c", &b_ip).status.success(), "bridge networks are isolated from each other");
    let links = bed.host(1).output("ip", &["-o", "link", "show", "type", "bridge"]);
    assert!(stdout(&links).contains("wlb-"), "a wlb-<id> bridge per network");

    // weftd stopped with SIGTERM exits 0, then killed with SIGKILL: each time the containers kept
    // running, their traffic too, and the new weftd finds and manages them.
    assert!(cluster.terminate(1).success(), "SIGTERM: exit 0");
    cluster.restart(1);
    assert!(ping("a", "b").status.success());
    cluster.kill(1);
    assert!(bed.host(1).output("ip", &["-o", "link", "show", "type", "bridge"]).status.success());
    cluster.restart(1);
    let ps = cluster.weft_ok(1, &["ps"]);
    assert!(
        ["a", "b", "c"].iter().all(|n| ps.lines().any(|l| l.contains(&format!(" {n} ")) && l.contains("Up"))),
        "{ps}"
    );
    let after = ping("a", "b");
    assert!(
        after.status.success(),
        "traffic survives an agent restart: {} {}\n{}\n{}",
        stdout(&after),
        stderr(&after),
        cluster.weft_ok(1, &["exec", "a", "cat", "/etc/resolv.conf"]),
        String::from_utf8_lossy(
            &bed.host(1).output("sh", &["-c", "ip -o addr; ss -lun; nft list ruleset | head -50"]).stdout
        )
    );
    cluster.weft_ok(1, &["rm", "-f", "a", "b", "c"]);
    cluster.weft_ok(0, &["network", "rm", "lan", "lan2"]);
}

#[test]
fn a_host_back_after_its_lease_expired_never_uses_a_released_address() {
    let bed = VirtualHosts::new(2);
    let mut cluster = WeftCluster::new(&bed);
    cluster.flags.extend(["--lease-ttl".to_string(), "3s".to_string()]);
    cluster.form(1, 1);
    cluster.import_busybox(&[0, 1]);
    cluster.weft_ok(0, &["network", "create", "--driver", "overlay", "--subnet", "10.80.0.0/16", "app"]);
    cluster.weft_ok(1, &["run", "-d", "--name", "x", "--network", "app", "busybox", "sleep", "3600"]);
    let x: serde_json::Value = serde_json::from_str(&cluster.weft_ok(1, &["inspect", "x"])).unwrap();
    let ip = x[0]["networks"][0]["ips"][0].as_str().unwrap().to_string();

    // h1 vanishes for longer than the lease TTL: the cluster takes its address back and may hand
    // it out again.
    bed.cut(1);
    cluster.eventually("h1's endpoint released", Duration::from_secs(30), || {
        let net: serde_json::Value =
            serde_json::from_str(&cluster.weft_ok(0, &["network", "inspect", "app"])).unwrap();
        net[0]["endpoints"].as_array().is_some_and(|e| e.is_empty())
    });
    cluster.weft_ok(
        0,
        &["run", "-d", "--name", "y", "--network", "app", "--ip", &ip, "busybox", "sleep", "3600"],
    );

    // h1 returns: x keeps running but loses the interface holding the address that is y's now.
    bed.restore(1);
    cluster.eventually("x's released address revoked on h1", Duration::from_secs(30), || {
        let x: serde_json::Value = serde_json::from_str(&cluster.weft_ok(1, &["inspect", "x"])).unwrap();
        x[0]["networks"].as_array().is_some_and(|n| n.is_empty())
            && x[0]["revoked_networks"][0]["ips"][0] == ip.as_str()
    });
    assert_eq!(x[0]["state"], "running");
    assert!(
        !cluster.weft(1, &["exec", "x", "ip", "link", "show", "eth0"]).status.success(),
        "x has no eth0 any more"
    );
    let y: serde_json::Value = serde_json::from_str(&cluster.weft_ok(0, &["inspect", "y"])).unwrap();
    assert_eq!(y[0]["networks"][0]["ips"][0], ip.as_str());
    // x can still be removed cleanly.
    cluster.weft_ok(1, &["rm", "-f", "x"]);
}
