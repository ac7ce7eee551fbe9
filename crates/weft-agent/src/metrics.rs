//! Prometheus metrics on `--metrics ADDR`: `GET /metrics` in the text exposition format. Raft
//! (term, leader, commit and applied index, proposal latency), the worker's watch lag, the
//! overlay reconciler (runs, actions, drift repaired, duration), containers by state and
//! addresses used and free per network and per subnet.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::watch;
use weft_runtime::container::ContainerStatus;

use crate::host::Host;
use crate::service::RoleCore;
use crate::telemetry::Telemetry;

fn gauge(out: &mut String, name: &str, help: &str, value: impl std::fmt::Display) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}");
}

fn counter(out: &mut String, name: &str, help: &str, value: &AtomicU64) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
        value.load(Ordering::Relaxed)
    );
}

fn escape(label: &str) -> String {
    label.replace('\\', "\\\\").replace('"', "\\\"")
}

/// The metrics page.
pub fn render(host: &Host, overlay: &weft_overlay::Metrics, telemetry: &Telemetry) -> String {
    let mut out = String::new();
    let state = host.state();
    gauge(
        &mut out,
        "weft_state_revision",
        "Revision of this node's copy of the cluster state.",
        state.revision(),
    );
    if let Some(core) = host.current_core() {
        match &core.role {
            RoleCore::Manager(m) => {
                let status = m.node.status();
                gauge(&mut out, "weft_raft_term", "Current Raft term.", status.term);
                gauge(&mut out, "weft_raft_leader", "Raft id of the leader (0: none known).", status.leader);
                gauge(
                    &mut out,
                    "weft_raft_is_leader",
                    "1 when this node leads.",
                    u8::from(status.leader == core.id),
                );
                gauge(&mut out, "weft_raft_commit_index", "Raft commit index.", status.commit);
                gauge(&mut out, "weft_raft_applied_index", "Raft applied index.", status.applied);
                gauge(&mut out, "weft_raft_voters", "Voting members.", status.voters.len());
            }
            RoleCore::Worker(_) => {}
        }
    }
    telemetry.proposals.render(
        "weft_raft_proposal_duration_seconds",
        "Time from proposing a command to its applied outcome.",
        &mut out,
    );
    gauge(
        &mut out,
        "weft_watch_lag_revisions",
        "Revisions this node's state was behind the leader at the last heartbeat.",
        telemetry.watch_lag.load(Ordering::Relaxed),
    );
    counter(
        &mut out,
        "weft_heartbeat_messages_total",
        "Messages received on the heartbeat sessions this manager serves.",
        &telemetry.beat_messages,
    );
    counter(
        &mut out,
        "weft_heartbeat_beats_total",
        "Beats those messages carried (a follower relays its workers' beats together).",
        &telemetry.beats,
    );
    telemetry.render_refusals(&mut out);
    counter(&mut out, "weft_reconcile_runs_total", "Overlay reconcile runs.", &overlay.runs);
    counter(&mut out, "weft_reconcile_errors_total", "Reconcile runs that failed in part.", &overlay.errors);
    counter(
        &mut out,
        "weft_reconcile_drift_repaired_total",
        "Kernel changes undone by the reconciler.",
        &overlay.drift_repaired,
    );
    let _ = writeln!(
        out,
        "# HELP weft_reconcile_actions_total Kernel actions applied, by kind.\n# TYPE weft_reconcile_actions_total counter"
    );
    for (kind, n) in overlay.actions() {
        let _ = writeln!(out, "weft_reconcile_actions_total{{action=\"{kind}\"}} {n}");
    }
    gauge(
        &mut out,
        "weft_reconcile_duration_seconds",
        "Duration of the last reconcile run.",
        overlay.last_duration_us.load(Ordering::Relaxed) as f64 / 1e6,
    );
    let (mut created, mut running, mut exited) = (0, 0, 0);
    for (_, status) in host.runtime.list().unwrap_or_default() {
        match status {
            ContainerStatus::Created => created += 1,
            ContainerStatus::Running(_) => running += 1,
            ContainerStatus::Exited(_) => exited += 1,
        }
    }
    let _ = writeln!(
        out,
        "# HELP weft_containers Containers on this host, by state.\n# TYPE weft_containers gauge"
    );
    for (label, n) in [("created", created), ("running", running), ("exited", exited)] {
        let _ = writeln!(out, "weft_containers{{state=\"{label}\"}} {n}");
    }
    let counts: Vec<_> = state.networks().map(|n| (n, state.network_addresses(n))).collect();
    let _ = writeln!(
        out,
        "# HELP weft_network_addresses Addresses of each network over all its subnets, used or free.\n# TYPE weft_network_addresses gauge"
    );
    for (network, subnets) in &counts {
        let name = escape(&network.name);
        let used = subnets.iter().fold(0u128, |sum, c| sum.saturating_add(c.used));
        let free = subnets.iter().fold(0u128, |sum, c| sum.saturating_add(c.free()));
        let _ = writeln!(out, "weft_network_addresses{{network=\"{name}\",kind=\"used\"}} {used}");
        let _ = writeln!(out, "weft_network_addresses{{network=\"{name}\",kind=\"free\"}} {free}");
    }
    let _ = writeln!(
        out,
        "# HELP weft_subnet_addresses Addresses of each subnet of each network: usable, used or free.\n# TYPE weft_subnet_addresses gauge"
    );
    for (network, subnets) in &counts {
        let name = escape(&network.name);
        for c in subnets {
            let labels = format!("network=\"{name}\",subnet=\"{}\",family=\"{}\"", c.subnet, c.family());
            for (kind, n) in [("usable", c.usable), ("used", c.used), ("free", c.free())] {
                let _ = writeln!(out, "weft_subnet_addresses{{{labels},kind=\"{kind}\"}} {n}");
            }
        }
    }
    out
}

/// Serves `/metrics` on `listener` until shutdown.
pub async fn serve(
    listener: TcpListener,
    host: Arc<Host>,
    overlay: Arc<weft_overlay::Metrics>,
    telemetry: Arc<Telemetry>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let (mut stream, _) = tokio::select! {
            _ = shutdown.wait_for(|s| *s) => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(_) => continue,
            },
        };
        let (host, overlay, telemetry) = (host.clone(), overlay.clone(), telemetry.clone());
        tokio::spawn(async move {
            let mut request = Vec::new();
            let mut buf = [0u8; 1024];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 8192 {
                match tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await {
                    Ok(Ok(n)) if n > 0 => request.extend_from_slice(&buf[..n]),
                    _ => return,
                }
            }
            let line = String::from_utf8_lossy(&request).lines().next().unwrap_or("").to_string();
            let path = line.split_whitespace().nth(1).unwrap_or("");
            let (status, kind, body) =
                if line.starts_with("GET ") && (path == "/metrics" || path.starts_with("/metrics?")) {
                    let h = host.clone();
                    let body = tokio::task::spawn_blocking(move || render(&h, &overlay, &telemetry))
                        .await
                        .unwrap_or_default();
                    ("200 OK", "text/plain; version=0.0.4; charset=utf-8", body)
                } else {
                    ("404 Not Found", "text/plain", "only /metrics is served here\n".to_string())
                };
            let head = format!(
                "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes()).await;
            let _ = stream.write_all(body.as_bytes()).await;
        });
    }
}
