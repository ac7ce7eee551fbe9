//! weftd's background tasks are supervised: one that panics takes weftd down with a non-zero
//! exit within a second (so systemd restarts it), instead of leaving a weftd that looks healthy
//! without its janitor, reconciler or DNS. The panic is injected with the supervisor's failpoint.

use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use weft_tests::VirtualHosts;
use weft_tests::cluster::WeftCluster;

/// Seconds since midnight UTC of a log line's RFC 3339 timestamp (`2026-12-01T23:20:01.123Z ...`).
fn seconds_of_day(line: &str) -> Option<f64> {
    // Without the terminal colour codes tracing may put around the fields.
    let mut plain = String::new();
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            chars.by_ref().find(|c| c.is_ascii_alphabetic());
        } else {
            plain.push(c);
        }
    }
    let time = plain.split_whitespace().next()?.split_once('T')?.1.trim_end_matches('Z');
    let mut parts = time.split(':');
    let (h, m, s): (f64, f64, f64) =
        (parts.next()?.parse().ok()?, parts.next()?.parse().ok()?, parts.next()?.parse().ok()?);
    Some(h * 3600.0 + m * 60.0 + s)
}

#[test]
fn a_panicking_background_task_makes_weftd_exit_non_zero_within_a_second() {
    for task in ["janitor", "overlay reconciler", "DNS zones"] {
        let bed = VirtualHosts::new(1);
        let cluster = WeftCluster::new(&bed);
        let log = cluster.scratch().join("weftd.log");
        let file = std::fs::File::create(&log).unwrap();
        let mut child = cluster
            .weftd(0)
            .arg("--bootstrap")
            .env("WEFTD_FAILPOINT_PANIC", format!("{task}@1500"))
            .env("WEFT_LOG", "info")
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            assert!(Instant::now() < deadline, "weftd did not exit after {task} panicked");
            std::thread::sleep(Duration::from_millis(10));
        };
        let exited = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64() % 86400.0;
        let text = std::fs::read_to_string(&log).unwrap();
        assert_eq!(status.code(), Some(1), "{text}");
        assert!(text.contains("manager serving"), "it was up before the panic: {text}");
        // The first failure the supervisor saw (a task fed by the one that panicked may stop in
        // the same instant): weftd exits within a second of it.
        let line = text
            .lines()
            .find(|l| l.contains("background task stopped"))
            .unwrap_or_else(|| panic!("the supervisor reports the failure: {text}"));
        let reported = seconds_of_day(line).expect("a timestamp");
        assert!(exited - reported < 1.0, "exit {:.3} s after the failure was reported", exited - reported);
        // weftd's last word names the task that panicked, and why.
        let last = text.lines().rfind(|l| l.starts_with("weftd: ")).unwrap_or_default();
        assert!(
            last.contains(&format!("background task {task:?} stopped: it panicked")),
            "weftd's last word: {last}\n{text}"
        );
    }
}
