//! weftd: the weft agent of one host. Flags override the TOML file given with `--config`.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Parser;
use serde::Deserialize;
use weft_agent::daemon::{self, Config};

/// weftd: container runtime, overlay manager and control-plane member of one host.
#[derive(Debug, Parser)]
#[command(name = "weftd", version, about)]
struct Args {
    /// TOML configuration file; flags given on the command line win.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Directory for identity, certificates, the raft log, images and containers.
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Local admin socket (root only).
    #[arg(long)]
    socket: Option<PathBuf>,
    /// Cluster API listen address (gRPC, mutual TLS).
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// This host's underlay address (VXLAN endpoint; host part of the advertised API address).
    #[arg(long)]
    advertise: Option<IpAddr>,
    /// Create a new cluster with this node as its first manager.
    #[arg(long)]
    bootstrap: bool,
    /// Join the cluster through this manager (IP:PORT).
    #[arg(long)]
    join: Option<String>,
    /// Join token (`weft cluster token worker|manager`).
    #[arg(long, env = "WEFT_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Join as a manager (needs the manager token).
    #[arg(long)]
    manager: bool,
    /// Node name (default: the host name).
    #[arg(long)]
    name: Option<String>,
    /// How long a Down node keeps its addresses (e.g. 24h, 90s).
    #[arg(long, value_parser = parse_duration)]
    lease_ttl: Option<Duration>,
    /// A node silent this long is marked Down (e.g. 5s).
    #[arg(long, value_parser = parse_duration)]
    down_after: Option<Duration>,
    /// Serve Prometheus metrics at http://ADDR/metrics (e.g. 127.0.0.1:9946).
    #[arg(long)]
    metrics: Option<SocketAddr>,
    /// Validity of the node certificates this manager issues (e.g. 90d, 12h; at least 10s);
    /// nodes renew theirs when two thirds of it have passed.
    #[arg(long, value_parser = parse_duration)]
    cert_ttl: Option<Duration>,
    /// Log format.
    #[arg(long, value_parser = ["text", "json"])]
    log_format: Option<String>,
    /// Serve the Docker Engine API on this unix socket (mode 0660), for the docker client and
    /// docker-compose (`DOCKER_HOST=unix://PATH`).
    #[arg(long)]
    docker_socket: Option<PathBuf>,
}

/// The TOML file: the same settings as the flags.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct FileConfig {
    state_dir: Option<PathBuf>,
    socket: Option<PathBuf>,
    listen: Option<SocketAddr>,
    advertise: Option<IpAddr>,
    bootstrap: Option<bool>,
    join: Option<String>,
    token: Option<String>,
    manager: Option<bool>,
    name: Option<String>,
    lease_ttl: Option<String>,
    down_after: Option<String>,
    metrics: Option<SocketAddr>,
    cert_ttl: Option<String>,
    log_format: Option<String>,
    docker_socket: Option<PathBuf>,
}

/// Parses `500ms`, `30s`, `5m`, `24h`, `90d` or plain seconds.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => text.split_at(i),
        None => (text, "s"),
    };
    let n: u64 =
        number.parse().map_err(|_| format!("{text:?} is not a duration (like 500ms, 30s, 5m, 24h)"))?;
    Ok(match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        "d" => Duration::from_secs(n * 24 * 3600),
        _ => return Err(format!("{text:?}: unknown unit {unit:?} (use ms, s, m, h or d)")),
    })
}

fn config(args: Args) -> Result<(Config, String)> {
    let file: FileConfig = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
            toml::from_str(&text).with_context(|| format!("{}", path.display()))?
        }
        None => FileConfig::default(),
    };
    let state_dir = args.state_dir.or(file.state_dir).unwrap_or_else(|| PathBuf::from("/var/lib/weft"));
    let mut c = Config::new(state_dir);
    if let Some(s) = args.socket.or(file.socket) {
        c.socket = s;
    }
    if let Some(l) = args.listen.or(file.listen) {
        c.listen = l;
    }
    c.advertise = args.advertise.or(file.advertise);
    c.bootstrap = args.bootstrap || file.bootstrap.unwrap_or(false);
    c.join = args.join.or(file.join);
    c.token = args.token.or(file.token);
    c.manager = args.manager || file.manager.unwrap_or(false);
    c.name = args.name.or(file.name);
    c.metrics = args.metrics.or(file.metrics);
    c.docker_socket = args.docker_socket.or(file.docker_socket);
    if let Some(t) = args.lease_ttl {
        c.lease_ttl = t;
    } else if let Some(t) = file.lease_ttl {
        c.lease_ttl = parse_duration(&t).map_err(anyhow::Error::msg).context("lease-ttl")?;
    }
    if let Some(t) = args.down_after {
        c.down_after = t;
    } else if let Some(t) = file.down_after {
        c.down_after = parse_duration(&t).map_err(anyhow::Error::msg).context("down-after")?;
    }
    if let Some(t) = args.cert_ttl {
        c.cert_ttl = t;
    } else if let Some(t) = file.cert_ttl {
        c.cert_ttl = parse_duration(&t).map_err(anyhow::Error::msg).context("cert-ttl")?;
    }
    if c.cert_ttl < Duration::from_secs(10) {
        bail!("cert-ttl must be at least 10s, not {:?}: nodes need time to renew", c.cert_ttl);
    }
    let log_format = args.log_format.or(file.log_format).unwrap_or_else(|| "text".into());
    if log_format != "text" && log_format != "json" {
        bail!("log-format must be text or json, not {log_format:?}");
    }
    Ok((c, log_format))
}

/// Tells systemd (Type=notify) that the daemon serves.
fn sd_notify_ready() {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else { return };
    let Ok(socket) = std::os::unix::net::UnixDatagram::unbound() else { return };
    let path = path.to_string_lossy().into_owned();
    let result = if let Some(name) = path.strip_prefix('@') {
        use std::os::linux::net::SocketAddrExt;
        std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())
            .and_then(|addr| socket.send_to_addr(b"READY=1", &addr))
    } else {
        socket.send_to(b"READY=1", &path)
    };
    if let Err(e) = result {
        tracing::warn!(error = %e, "sd_notify failed");
    }
}

fn main() {
    // weftd is also the container monitor: `weftd monitor DIR` (started by weftd itself).
    let raw: Vec<String> = std::env::args().skip(1).collect();
    if matches!(raw.first().map(String::as_str), Some("monitor" | "exec")) {
        weft_runtime::container::monitor::shim_main(&raw);
    }
    let args = Args::parse();
    let (config, log_format) = match config(args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("weftd: {e:#}");
            std::process::exit(2);
        }
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("WEFT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    if log_format == "json" {
        tracing_subscriber::fmt().json().with_env_filter(filter).with_writer(std::io::stderr).init();
    } else {
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    let result = runtime.block_on(async move {
        let shutdown = async {
            use tokio::signal::unix::{SignalKind, signal};
            let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
            let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
            tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
            tracing::info!("shutting down; containers and kernel state stay as they are");
        };
        daemon::run(config, shutdown, sd_notify_ready).await
    });
    if let Err(e) = result {
        eprintln!("weftd: {e:#}");
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_example_config_parses_and_flags_win() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/weftd.toml");
        let args = Args::parse_from(["weftd", "--config", path, "--name", "from-flag"]);
        let (c, format) = config(args).unwrap();
        assert_eq!(c.state_dir, PathBuf::from("/var/lib/weft"));
        assert_eq!(c.advertise, Some("192.168.56.11".parse().unwrap()));
        assert!(c.bootstrap);
        assert_eq!(c.metrics, Some("127.0.0.1:9946".parse().unwrap()));
        assert_eq!(c.down_after, Duration::from_secs(5));
        assert_eq!(c.lease_ttl, Duration::from_secs(24 * 3600));
        assert_eq!(c.name.as_deref(), Some("from-flag"));
        assert_eq!(c.cert_ttl, Duration::from_secs(90 * 24 * 3600));
        assert_eq!(format, "text");
        let short = config(Args::parse_from(["weftd", "--config", path, "--cert-ttl", "5s"])).unwrap_err();
        assert!(short.to_string().contains("cert-ttl must be at least 10s"), "{short}");
        let hours = config(Args::parse_from(["weftd", "--config", path, "--cert-ttl", "12h"])).unwrap().0;
        assert_eq!(hours.cert_ttl, Duration::from_secs(12 * 3600));
    }
}
