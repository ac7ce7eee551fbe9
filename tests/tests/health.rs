//! STOPSIGNAL and HEALTHCHECK as Docker runs them, end to end through `weft image build`,
//! `weft run`, `ps`, `inspect` and `stop`: the image's stop signal is what `stop` sends (the
//! workload traps it and exits cleanly within the grace period), `--stop-signal` overrides it; the
//! image's health check goes from starting to healthy and, once its file is gone, to unhealthy
//! after its retries, with the results' output in `inspect`; `--health-*` replace it,
//! `--no-healthcheck` drops it, and an unhealthy container is not restarted by its policy.

use std::time::{Duration, Instant};

use weft_tests::VirtualHosts;
use weft_tests::cluster::{WeftCluster, stderr};

fn inspect(cluster: &WeftCluster<'_>, name: &str) -> serde_json::Value {
    serde_json::from_str::<serde_json::Value>(&cluster.weft_ok(0, &["inspect", name])).unwrap()[0].clone()
}

#[test]
fn stop_signals_and_health_checks_as_docker_runs_them() {
    let bed = VirtualHosts::new(1);
    let cluster = WeftCluster::new(&bed);
    cluster.form(1, 0);
    cluster.import_busybox(&[0]);
    let ctx = cluster.scratch().join("hc");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        r#"FROM busybox
STOPSIGNAL SIGUSR1
HEALTHCHECK --interval=300ms --timeout=2s --retries=2 CMD test -f /tmp/ok && echo fine
CMD ["sh", "-c", "trap 'echo got-usr1; exit 0' USR1; touch /tmp/ok; while true; do sleep 0.1; done"]
"#,
    )
    .unwrap();
    cluster.weft_ok(0, &["image", "build", "-t", "hc", ctx.to_str().unwrap()]);
    // `weft image history`: newest step first, as `docker history` prints it.
    let history = cluster.weft_ok(0, &["image", "history", "hc"]);
    let rows: Vec<&str> = history.lines().collect();
    assert!(rows[0].starts_with("CREATED") && rows[1].contains("CMD [\"sh\""), "{history}");
    assert!(rows.iter().any(|r| r.contains("HEALTHCHECK --interval=300ms")), "{history}");
    assert!(rows.last().unwrap().contains("<missing>") || rows.last().unwrap().contains("B"), "{history}");
    let json: serde_json::Value =
        serde_json::from_str(&cluster.weft_ok(0, &["image", "history", "--format", "json", "hc"])).unwrap();
    assert_eq!(json[0]["empty_layer"], true, "{json}");
    assert!(json.as_array().unwrap().iter().any(|h| h["size"].as_u64().unwrap_or(0) > 0), "{json}");

    // The image's STOPSIGNAL is what stop sends: the trap runs and the container exits 0 long
    // before the grace period ends. --stop-signal overrides it (TERM is not trapped: 143).
    cluster.weft_ok(0, &["run", "-d", "--name", "sig", "hc"]);
    assert_eq!(inspect(&cluster, "sig")["stop_signal"], "SIGUSR1");
    std::thread::sleep(Duration::from_millis(500));
    let started = Instant::now();
    cluster.weft_ok(0, &["stop", "-t", "20", "sig"]);
    assert!(started.elapsed() < Duration::from_secs(10), "stopped by its signal, not the grace period");
    let sig = inspect(&cluster, "sig");
    assert_eq!(sig["exit_code"], 0, "{sig}");
    assert!(cluster.weft_ok(0, &["logs", "sig"]).contains("got-usr1"));
    cluster.weft_ok(0, &["run", "-d", "--name", "term", "--stop-signal", "SIGTERM", "hc"]);
    std::thread::sleep(Duration::from_millis(500));
    cluster.weft_ok(0, &["stop", "-t", "20", "term"]);
    let term = inspect(&cluster, "term");
    assert_eq!(term["exit_code"], 143, "{term}");
    assert!(!cluster.weft_ok(0, &["logs", "term"]).contains("got-usr1"));
    let bad = cluster.weft(0, &["run", "-d", "--name", "bad", "--stop-signal", "SIGNOPE", "hc"]);
    assert_eq!(bad.status.code(), Some(125));
    assert!(stderr(&bad).contains("--stop-signal"), "{}", stderr(&bad));

    // The image's health check: starting, then healthy; the file removed: unhealthy after two
    // failures in a row, with each result's output kept.
    cluster.weft_ok(0, &["run", "-d", "--name", "hc", "--restart", "always", "hc"]);
    assert!(
        inspect(&cluster, "hc")["health"]["status"] == "starting"
            || inspect(&cluster, "hc")["health"]["status"] == "healthy"
    );
    cluster.eventually("healthy", Duration::from_secs(10), || {
        inspect(&cluster, "hc")["health"]["status"] == "healthy"
    });
    let healthy = inspect(&cluster, "hc");
    let log = healthy["health"]["log"].as_array().unwrap();
    assert_eq!(log.last().unwrap()["exit_code"], 0, "{healthy}");
    assert_eq!(log.last().unwrap()["output"], "fine\n", "{healthy}");
    assert!(cluster.weft_ok(0, &["ps"]).contains("(healthy)"));
    cluster.weft_ok(0, &["exec", "hc", "rm", "/tmp/ok"]);
    cluster.eventually("unhealthy", Duration::from_secs(10), || {
        inspect(&cluster, "hc")["health"]["status"] == "unhealthy"
    });
    let sick = inspect(&cluster, "hc");
    assert!(sick["health"]["failing_streak"].as_u64().unwrap() >= 2, "{sick}");
    assert_ne!(sick["health"]["log"].as_array().unwrap().last().unwrap()["exit_code"], 0);
    assert!(cluster.weft_ok(0, &["ps"]).contains("(unhealthy)"));
    // Health never restarts a container, whatever its policy.
    std::thread::sleep(Duration::from_secs(1));
    let still = inspect(&cluster, "hc");
    assert_eq!(
        (still["state"].as_str(), still["restart_count"].as_u64()),
        (Some("running"), Some(0)),
        "{still}"
    );

    // --health-* replace the image's check; --no-healthcheck drops it.
    cluster.weft_ok(
        0,
        &[
            "run",
            "-d",
            "--name",
            "flagged",
            "--health-cmd",
            "exit 3",
            "--health-interval",
            "200ms",
            "--health-retries",
            "1",
            "hc",
        ],
    );
    cluster.eventually("unhealthy by the flag's command", Duration::from_secs(10), || {
        inspect(&cluster, "flagged")["health"]["status"] == "unhealthy"
    });
    cluster.weft_ok(0, &["run", "-d", "--name", "plain", "--no-healthcheck", "hc"]);
    std::thread::sleep(Duration::from_millis(800));
    assert!(inspect(&cluster, "plain")["health"].is_null(), "{}", inspect(&cluster, "plain"));
    assert!(!cluster.weft_ok(0, &["ps"]).lines().any(|l| l.contains("plain") && l.contains("health")));
    let conflict = cluster.weft(0, &["run", "-d", "--no-healthcheck", "--health-cmd", "true", "hc"]);
    assert_eq!(conflict.status.code(), Some(125));
    assert!(stderr(&conflict).contains("conflicts"), "{}", stderr(&conflict));
    cluster.weft_ok(0, &["rm", "-f", "sig", "term", "hc", "flagged", "plain"]);
}
