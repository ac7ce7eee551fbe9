//! `weft run` and the container verbs beside it: ps, logs, stop, kill, rm, inspect, stats, wait
//! (`exec` is parsed here and run by [`crate::exec`]).

use clap::{Args, Subcommand};
use tokio_stream::StreamExt;
use weft_proto::v1 as pb;

use crate::exec::{ExecFlags, exec};
use crate::failure::Failure;
use crate::output::{Format, json, print_table, short};
use crate::parse::{parse_signal, parse_size, security_opt};
use crate::rpc::{Api, err};

/// `weft run`'s flags.
#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    /// Run in the background and print the container's id.
    #[arg(short, long)]
    detach: bool,
    /// Remove the container when it exits.
    #[arg(long)]
    rm: bool,
    /// Container name.
    #[arg(long)]
    name: Option<String>,
    /// bridge (default), host, none, container:NAME, or a network's name.
    #[arg(long, alias = "net")]
    network: Option<String>,
    /// Another name on the network.
    #[arg(long = "network-alias")]
    network_alias: Vec<String>,
    /// A fixed address on the network.
    #[arg(long)]
    ip: Option<String>,
    /// Publish a port: [IP:]HOST_PORT:CONTAINER_PORT[/tcp|udp].
    #[arg(short = 'p', long = "publish")]
    publish: Vec<String>,
    /// Environment variable KEY=VALUE.
    #[arg(short = 'e', long = "env")]
    env: Vec<String>,
    /// A label KEY=VALUE (or KEY, with an empty value) on the container, shown by inspect.
    #[arg(short = 'l', long = "label")]
    label: Vec<String>,
    /// Bind mount HOST_PATH:CONTAINER_PATH[:ro].
    #[arg(short = 'v', long = "volume")]
    volume: Vec<String>,
    /// Memory limit (e.g. 64m, 1g, or bytes).
    #[arg(short = 'm', long)]
    memory: Option<String>,
    /// CPUs (e.g. 0.5).
    #[arg(long)]
    cpus: Option<f64>,
    /// Maximum number of tasks.
    #[arg(long)]
    pids_limit: Option<u64>,
    /// Host name inside the container.
    #[arg(long)]
    hostname: Option<String>,
    /// Working directory inside the container.
    #[arg(short = 'w', long)]
    workdir: Option<String>,
    /// User (uid[:gid] or name[:group]).
    #[arg(short = 'u', long)]
    user: Option<String>,
    /// Replaces the image's entrypoint ("" clears it).
    #[arg(long)]
    entrypoint: Option<String>,
    /// Seconds `weft stop` waits after SIGTERM before SIGKILL, unless told otherwise.
    #[arg(long, default_value_t = 10)]
    init_grace: u32,
    /// Every capability and device, no seccomp, no masked paths: gives the host away.
    #[arg(long)]
    privileged: bool,
    /// Add a capability to Docker's default set (e.g. NET_ADMIN; ALL for every one).
    #[arg(long = "cap-add")]
    cap_add: Vec<String>,
    /// Drop a capability from the set (ALL for every one).
    #[arg(long = "cap-drop")]
    cap_drop: Vec<String>,
    /// seccomp=unconfined, seccomp=PROFILE.json (Docker's format), no-new-privileges[=false].
    #[arg(long = "security-opt")]
    security_opt: Vec<String>,
    /// Mount the container's root file system read-only.
    #[arg(long = "read-only")]
    read_only: bool,
    /// Give a host device: HOST[:CONTAINER][:PERMISSIONS] (permissions: any of r, w, m).
    #[arg(long)]
    device: Vec<String>,
    /// Mount a tmpfs: PATH[:OPTIONS] (e.g. /run:size=64m,mode=1777).
    #[arg(long)]
    tmpfs: Vec<String>,
    /// Restart policy: no, on-failure[:MAX-RETRIES], always, unless-stopped (also after a reboot).
    #[arg(long, default_value = "no")]
    restart: String,
    /// The signal `stop` sends first (default: the image's STOPSIGNAL, else SIGTERM).
    #[arg(long = "stop-signal", default_value = "")]
    stop_signal: String,
    /// Health check command, run by /bin/sh -c inside the container (replaces the image's).
    #[arg(long = "health-cmd", default_value = "")]
    health_cmd: String,
    /// Time between health checks (e.g. 30s, 1m30s).
    #[arg(long = "health-interval", default_value = "")]
    health_interval: String,
    /// Time one health check may take.
    #[arg(long = "health-timeout", default_value = "")]
    health_timeout: String,
    /// Time after the start during which failed checks do not count.
    #[arg(long = "health-start-period", default_value = "")]
    health_start_period: String,
    /// Failed checks in a row that make the container unhealthy.
    #[arg(long = "health-retries", default_value_t = 0)]
    health_retries: u32,
    /// Disable the image's health check.
    #[arg(long = "no-healthcheck")]
    no_healthcheck: bool,
    /// The image.
    image: String,
    /// The command and its arguments.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

/// One container as `ps --format json` and `inspect` print it.
fn container_json(c: &pb::ContainerInfo) -> serde_json::Value {
    serde_json::json!({
        "id": c.id, "name": c.name, "image": c.image, "image_id": c.image_id, "command": c.command, "state": c.state,
        "exit_code": c.exit_code, "pid": c.pid, "started_ns": c.started_ns, "finished_ns": c.finished_ns,
        "oom_killed": c.oom_killed, "error": c.error, "hostname": c.hostname,
        "network_mode": c.network_mode, "auto_remove": c.auto_remove,
        "restart_policy": c.restart_policy, "restart_count": c.restart_count, "stop_signal": c.stop_signal,
        "labels": c.labels.iter().map(|l| (l.key.clone(), serde_json::Value::from(l.value.clone()))).collect::<serde_json::Map<_, _>>(),
        "health": c.health.as_ref().map(|h| serde_json::json!({
            "status": h.status, "failing_streak": h.failing_streak,
            "log": h.log.iter().map(|r| serde_json::json!({
                "start_ns": r.start_ns, "end_ns": r.end_ns, "exit_code": r.exit_code, "output": r.output,
            })).collect::<Vec<_>>(),
        })),
        "networks": c.networks.iter().map(|n| serde_json::json!({
            "network": n.network, "ips": n.ips, "mac": n.mac, "gateway": n.gateway, "endpoint": n.endpoint_id,
        })).collect::<Vec<_>>(),
        "revoked_networks": c.revoked_networks.iter().map(|n| serde_json::json!({
            "network": n.network, "ips": n.ips,
        })).collect::<Vec<_>>(),
        "ports": c.ports.iter().map(|p| serde_json::json!({
            "host_ip": p.host_ip, "host_port": p.host_port, "container_port": p.container_port, "protocol": p.protocol,
        })).collect::<Vec<_>>(),
    })
}

/// Prints a container's output, stderr lines to stderr; with `follow`, until it exits.
async fn follow_logs(api: &mut Api, reference: &str, follow: bool) -> Result<(), Failure> {
    let mut stream =
        api.logs(pb::LogsRequest { reference: reference.into(), follow }).await.map_err(err)?.into_inner();
    while let Some(line) = stream.next().await {
        let line = line.map_err(err)?;
        if line.stream == "stderr" {
            eprintln!("{}", line.line);
        } else {
            println!("{}", line.line);
        }
    }
    Ok(())
}

/// `weft run`.
pub(crate) async fn run(api: &mut Api, args: RunArgs) -> Result<u8, Failure> {
    let memory = args.memory.as_deref().map(parse_size).transpose()?.unwrap_or(0);
    let (has_entrypoint, entrypoint) = match &args.entrypoint {
        Some(e) if e.is_empty() => (true, vec![]),
        Some(e) => (true, vec![e.clone()]),
        None => (false, vec![]),
    };
    let request = pb::RunRequest {
        image: args.image,
        name: args.name.unwrap_or_default(),
        network: args.network.unwrap_or_default(),
        ip: args.ip.unwrap_or_default(),
        publish: args.publish,
        env: args.env,
        volumes: args.volume,
        memory,
        cpus: args.cpus.unwrap_or(0.0),
        pids_limit: args.pids_limit.unwrap_or(0),
        hostname: args.hostname.unwrap_or_default(),
        workdir: args.workdir.unwrap_or_default(),
        user: args.user.unwrap_or_default(),
        has_entrypoint,
        entrypoint,
        command: args.command,
        // Attached runs remove the container themselves once they have its exit status.
        auto_remove: args.rm && args.detach,
        aliases: args.network_alias,
        stop_grace: args.init_grace,
        privileged: args.privileged,
        cap_add: args.cap_add,
        cap_drop: args.cap_drop,
        security_opt: args.security_opt.iter().map(|o| security_opt(o)).collect::<Result<_, _>>()?,
        read_only: args.read_only,
        devices: args.device,
        tmpfs: args.tmpfs,
        restart: args.restart.clone(),
        stop_signal: args.stop_signal,
        health_cmd: args.health_cmd,
        health_interval: args.health_interval,
        health_timeout: args.health_timeout,
        health_start_period: args.health_start_period,
        health_retries: args.health_retries,
        no_healthcheck: args.no_healthcheck,
        id: String::new(),
        labels: args
            .label
            .iter()
            .map(|l| {
                let (key, value) = l.split_once('=').unwrap_or((l.as_str(), ""));
                pb::Label { key: key.into(), value: value.into() }
            })
            .collect(),
    };
    if args.rm && !matches!(args.restart.as_str(), "" | "no") {
        return Err(Failure::from(format!(
            "--restart {} and --rm conflict: a container removed on exit cannot be restarted",
            args.restart
        )));
    }
    let info = api.run(request).await.map_err(err)?.into_inner();
    if args.detach {
        println!("{}", info.id);
        return Ok(0);
    }
    follow_logs(api, &info.id, true).await?;
    let code =
        api.wait(pb::ContainerRef { reference: info.id.clone() }).await.map_err(err)?.into_inner().exit_code;
    if args.rm {
        api.remove_container(pb::RemoveContainerRequest { reference: info.id, force: true })
            .await
            .map_err(err)?;
    }
    Ok(code.clamp(0, 255) as u8)
}

/// The container verbs beside `run`.
#[derive(Debug, Subcommand)]
pub(crate) enum ContainerCommand {
    /// Lists containers (running ones; -a for all).
    Ps {
        /// Show all containers, also stopped ones.
        #[arg(short, long)]
        all: bool,
        /// Output format.
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
    /// Prints a container's output.
    Logs {
        /// Keep following the output until the container exits.
        #[arg(short, long)]
        follow: bool,
        /// The container.
        container: String,
    },
    /// Runs a command inside a running container.
    Exec {
        /// Run in the background.
        #[arg(short, long)]
        detach: bool,
        /// Pass stdin to the command.
        #[arg(short, long)]
        interactive: bool,
        /// Run the command on a terminal (with -i: an interactive shell).
        #[arg(short, long)]
        tty: bool,
        /// Run as this user (uid[:gid] or name[:group]) instead of the container's.
        #[arg(short, long)]
        user: Option<String>,
        /// Working directory inside the container instead of the container's.
        #[arg(short, long)]
        workdir: Option<String>,
        /// Environment variable KEY=VALUE, over the container's.
        #[arg(short = 'e', long = "env")]
        env: Vec<String>,
        /// The container.
        container: String,
        /// The command and its arguments.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        command: Vec<String>,
    },
    /// Stops containers: SIGTERM, then SIGKILL after the grace period.
    Stop {
        /// Seconds to wait before SIGKILL (default: the container's --init-grace, 10).
        #[arg(short, long)]
        time: Option<u32>,
        /// Containers.
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Starts exited containers again (their networks and ports back).
    Start {
        /// Containers.
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Stops running containers, then starts them again.
    Restart {
        /// Seconds to wait before SIGKILL (default: the container's --init-grace, 10).
        #[arg(short, long)]
        time: Option<u32>,
        /// Containers.
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Sends a signal to containers.
    Kill {
        /// The signal (name or number).
        #[arg(short, long, default_value = "KILL")]
        signal: String,
        /// Containers.
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Removes containers.
    Rm {
        /// Kill running containers first.
        #[arg(short, long)]
        force: bool,
        /// Containers.
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Shows containers (JSON).
    Inspect {
        /// Containers.
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Resource usage of running containers.
    Stats {
        /// Output format.
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
        /// Containers (default: every running one).
        containers: Vec<String>,
    },
    /// Waits for containers to exit and prints their exit codes.
    Wait {
        /// Containers.
        #[arg(required = true)]
        containers: Vec<String>,
    },
}

/// How long ago `ns` (nanoseconds since the Unix epoch) was, in `ps`'s words.
fn age(ns: u64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let secs = now.saturating_sub(ns) / 1_000_000_000;
    match secs {
        0..=59 => format!("{secs} seconds"),
        60..=3599 => format!("{} minutes", secs / 60),
        3600..=86399 => format!("{} hours", secs / 3600),
        _ => format!("{} days", secs / 86400),
    }
}

/// Runs a container verb.
pub(crate) async fn container(api: &mut Api, command: ContainerCommand) -> Result<u8, Failure> {
    match command {
        ContainerCommand::Ps { all, format } => {
            let list =
                api.list_containers(pb::ListContainersRequest { all }).await.map_err(err)?.into_inner();
            if format == Format::Json {
                json(&list.containers.iter().map(container_json).collect::<Vec<_>>());
                return Ok(0);
            }
            let rows = list
                .containers
                .iter()
                .map(|c| {
                    let status = match c.state.as_str() {
                        "running" => match &c.health {
                            Some(h) if h.status == "starting" => {
                                format!("Up {} (health: starting)", age(c.started_ns))
                            }
                            Some(h) => format!("Up {} ({})", age(c.started_ns), h.status),
                            None => format!("Up {}", age(c.started_ns)),
                        },
                        "exited" => format!("Exited ({}) {} ago", c.exit_code, age(c.finished_ns)),
                        other => other.to_string(),
                    };
                    let ips: Vec<String> = c.networks.iter().flat_map(|n| n.ips.clone()).collect();
                    let ports: Vec<String> = c
                        .ports
                        .iter()
                        .map(|p| {
                            let ip =
                                if p.host_ip.is_empty() { String::new() } else { format!("{}:", p.host_ip) };
                            format!("{ip}{}->{}/{}", p.host_port, p.container_port, p.protocol)
                        })
                        .collect();
                    vec![
                        short(&c.id),
                        c.name.clone(),
                        c.image.clone(),
                        c.command.join(" ").chars().take(30).collect(),
                        status,
                        c.network_mode.clone(),
                        ips.join(","),
                        ports.join(","),
                    ]
                })
                .collect();
            print_table(
                &["CONTAINER ID", "NAME", "IMAGE", "COMMAND", "STATUS", "NETWORK", "IP", "PORTS"],
                rows,
            );
        }
        ContainerCommand::Logs { follow, container } => follow_logs(api, &container, follow).await?,
        ContainerCommand::Exec { detach, interactive, tty, user, workdir, env, container, command } => {
            let options = ExecFlags { interactive, tty, detach, user, workdir, env };
            return exec(api, container, command, options).await;
        }
        ContainerCommand::Stop { time, containers } => {
            for reference in containers {
                api.stop(pb::StopRequest { reference: reference.clone(), grace_seconds: time })
                    .await
                    .map_err(err)?;
                println!("{reference}");
            }
        }
        ContainerCommand::Start { containers } => {
            for reference in containers {
                api.start(pb::ContainerRef { reference: reference.clone() }).await.map_err(err)?;
                println!("{reference}");
            }
        }
        ContainerCommand::Restart { time, containers } => {
            for reference in containers {
                let info = api
                    .inspect_container(pb::ContainerRef { reference: reference.clone() })
                    .await
                    .map_err(err)?
                    .into_inner();
                if info.state == "running" {
                    api.stop(pb::StopRequest { reference: reference.clone(), grace_seconds: time })
                        .await
                        .map_err(err)?;
                }
                api.start(pb::ContainerRef { reference: reference.clone() }).await.map_err(err)?;
                println!("{reference}");
            }
        }
        ContainerCommand::Kill { signal, containers } => {
            let signal = parse_signal(&signal)?;
            for reference in containers {
                api.kill(pb::KillRequest { reference: reference.clone(), signal }).await.map_err(err)?;
                println!("{reference}");
            }
        }
        ContainerCommand::Rm { force, containers } => {
            for reference in containers {
                api.remove_container(pb::RemoveContainerRequest { reference: reference.clone(), force })
                    .await
                    .map_err(err)?;
                println!("{reference}");
            }
        }
        ContainerCommand::Inspect { containers } => {
            let mut out = Vec::new();
            for reference in containers {
                let c =
                    api.inspect_container(pb::ContainerRef { reference }).await.map_err(err)?.into_inner();
                out.push(container_json(&c));
            }
            json(&out);
        }
        ContainerCommand::Stats { format, containers } => {
            let references = if containers.is_empty() {
                let list =
                    api.list_containers(pb::ListContainersRequest { all: false }).await.map_err(err)?;
                list.into_inner().containers.into_iter().map(|c| c.id).collect()
            } else {
                containers
            };
            let mut stats = Vec::new();
            for reference in references {
                stats.push(api.stats(pb::ContainerRef { reference }).await.map_err(err)?.into_inner());
            }
            if format == Format::Json {
                json(&stats
                    .iter()
                    .map(|s| serde_json::json!({
                        "id": s.id, "name": s.name, "memory_bytes": s.memory_bytes,
                        "memory_limit": s.memory_limit, "cpu_usage_ns": s.cpu_usage_ns, "pids": s.pids,
                    }))
                    .collect::<Vec<_>>());
                return Ok(0);
            }
            let rows = stats
                .iter()
                .map(|s| {
                    let limit = if s.memory_limit == 0 {
                        "-".into()
                    } else {
                        format!("{:.1}MiB", s.memory_limit as f64 / 1048576.0)
                    };
                    vec![
                        short(&s.id),
                        s.name.clone(),
                        format!("{:.1}MiB", s.memory_bytes as f64 / 1048576.0),
                        limit,
                        format!("{:.2}s", s.cpu_usage_ns as f64 / 1e9),
                        s.pids.to_string(),
                    ]
                })
                .collect();
            print_table(&["CONTAINER ID", "NAME", "MEM USAGE", "MEM LIMIT", "CPU TIME", "PIDS"], rows);
        }
        ContainerCommand::Wait { containers } => {
            let mut last = 0;
            for reference in containers {
                last = api.wait(pb::ContainerRef { reference }).await.map_err(err)?.into_inner().exit_code;
                println!("{last}");
            }
            return Ok(last.clamp(0, 255) as u8);
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use clap::error::ErrorKind;

    use super::*;
    use crate::Command;
    use crate::tests::{command, refusal};

    fn run_args(line: &[&str]) -> RunArgs {
        match command(line) {
            Command::Run(args) => args,
            other => panic!("not run: {other:?}"),
        }
    }

    fn verb(line: &[&str]) -> ContainerCommand {
        match command(line) {
            Command::Container(c) => c,
            other => panic!("not a container verb: {other:?}"),
        }
    }

    #[test]
    fn run_accepts_the_documented_flags() {
        let line = "run -d --name a --network app -p 8080:80 --cap-add NET_ADMIN \
                    --security-opt seccomp=unconfined --read-only --tmpfs /run busybox sleep 1";
        let a = run_args(&line.split_whitespace().collect::<Vec<_>>());
        assert!(a.detach && a.read_only && !a.rm && !a.privileged);
        assert_eq!(a.name.as_deref(), Some("a"));
        assert_eq!(a.network.as_deref(), Some("app"));
        assert_eq!(a.publish, ["8080:80"]);
        assert_eq!(a.cap_add, ["NET_ADMIN"]);
        assert_eq!(a.security_opt, ["seccomp=unconfined"]);
        assert_eq!(a.tmpfs, ["/run"]);
        assert_eq!(a.image, "busybox");
        assert_eq!(a.command, ["sleep", "1"]);
    }

    #[test]
    fn run_accepts_every_other_flag() {
        let a = run_args(&[
            "run",
            "--rm",
            "--net",
            "app",
            "--network-alias",
            "web",
            "--network-alias",
            "www",
            "--ip",
            "10.44.0.9",
            "--publish",
            "127.0.0.1:53:53/udp",
            "-e",
            "A=1",
            "--env",
            "B=2",
            "-v",
            "/srv:/data:ro",
            "-m",
            "64m",
            "--cpus",
            "0.5",
            "--pids-limit",
            "100",
            "--hostname",
            "h",
            "-w",
            "/tmp",
            "-u",
            "1000:1000",
            "--entrypoint",
            "",
            "--init-grace",
            "3",
            "--privileged",
            "--cap-drop",
            "ALL",
            "--security-opt",
            "no-new-privileges",
            "--device",
            "/dev/fuse:/dev/fuse:rwm",
            "--stop-signal",
            "SIGUSR1",
            "--health-cmd",
            "wget -q localhost",
            "--health-interval",
            "5s",
            "--health-timeout",
            "2s",
            "--health-start-period",
            "1m",
            "--health-retries",
            "4",
            "busybox",
        ]);
        assert!(a.rm && a.privileged && !a.detach && !a.read_only);
        assert_eq!(a.network.as_deref(), Some("app"));
        assert_eq!(a.network_alias, ["web", "www"]);
        assert_eq!(a.ip.as_deref(), Some("10.44.0.9"));
        assert_eq!(a.publish, ["127.0.0.1:53:53/udp"]);
        assert_eq!(a.env, ["A=1", "B=2"]);
        assert_eq!(a.volume, ["/srv:/data:ro"]);
        assert_eq!(a.memory.as_deref(), Some("64m"));
        assert_eq!(a.cpus, Some(0.5));
        assert_eq!(a.pids_limit, Some(100));
        assert_eq!(a.hostname.as_deref(), Some("h"));
        assert_eq!(a.workdir.as_deref(), Some("/tmp"));
        assert_eq!(a.user.as_deref(), Some("1000:1000"));
        // An empty --entrypoint is given (it clears the image's), not absent.
        assert_eq!(a.entrypoint.as_deref(), Some(""));
        assert_eq!(a.init_grace, 3);
        assert_eq!(a.cap_drop, ["ALL"]);
        assert_eq!(a.security_opt, ["no-new-privileges"]);
        assert_eq!(a.device, ["/dev/fuse:/dev/fuse:rwm"]);
        assert_eq!(a.stop_signal, "SIGUSR1");
        assert_eq!(
            (a.health_cmd.as_str(), a.health_interval.as_str(), a.health_timeout.as_str()),
            ("wget -q localhost", "5s", "2s")
        );
        assert_eq!((a.health_start_period.as_str(), a.health_retries, a.no_healthcheck), ("1m", 4, false));
        assert!(a.command.is_empty());
        assert!(run_args(&["run", "--no-healthcheck", "busybox"]).no_healthcheck);
    }

    #[test]
    fn run_defaults_and_what_follows_the_image_is_the_command() {
        let a = run_args(&["run", "busybox"]);
        assert!(!a.detach && !a.rm && !a.privileged && !a.read_only);
        assert_eq!(a.init_grace, 10);
        assert_eq!((a.name, a.network, a.memory, a.entrypoint), (None, None, None, None));
        assert!(a.command.is_empty());
        let a = run_args(&["run", "busybox", "sh", "-c", "echo -n hi", "--rm", "-d"]);
        assert!(!a.rm && !a.detach);
        assert_eq!(a.command, ["sh", "-c", "echo -n hi", "--rm", "-d"]);
        assert_eq!(refusal(&["run"]), ErrorKind::MissingRequiredArgument);
        assert_eq!(refusal(&["run", "--cpus", "half", "busybox"]), ErrorKind::ValueValidation);
        assert_eq!(refusal(&["run", "--bogus", "busybox"]), ErrorKind::UnknownArgument);
    }

    #[test]
    fn exec_accepts_the_documented_flags() {
        let line = "exec -it -u nobody -w /tmp -e A=1 c sh";
        let ContainerCommand::Exec { detach, interactive, tty, user, workdir, env, container, command } =
            verb(&line.split_whitespace().collect::<Vec<_>>())
        else {
            panic!("not exec");
        };
        assert!(interactive && tty && !detach);
        assert_eq!(user.as_deref(), Some("nobody"));
        assert_eq!(workdir.as_deref(), Some("/tmp"));
        assert_eq!(env, ["A=1"]);
        assert_eq!(container, "c");
        assert_eq!(command, ["sh"]);
    }

    #[test]
    fn exec_passes_what_follows_the_container_to_the_command() {
        let ContainerCommand::Exec { detach, interactive, tty, user, container, command, .. } =
            verb(&["exec", "-d", "--user", "0", "c", "ls", "-la", "-t"])
        else {
            panic!("not exec");
        };
        assert!(detach && !interactive && !tty);
        assert_eq!(user.as_deref(), Some("0"));
        assert_eq!(container, "c");
        assert_eq!(command, ["ls", "-la", "-t"]);
        assert_eq!(refusal(&["exec", "c"]), ErrorKind::MissingRequiredArgument);
        assert_eq!(refusal(&["exec"]), ErrorKind::MissingRequiredArgument);
    }

    #[test]
    fn the_other_container_verbs_parse() {
        assert!(matches!(verb(&["ps"]), ContainerCommand::Ps { all: false, format: Format::Table }));
        assert!(matches!(
            verb(&["ps", "-a", "--format", "json"]),
            ContainerCommand::Ps { all: true, format: Format::Json }
        ));
        assert!(matches!(
            verb(&["logs", "-f", "c"]),
            ContainerCommand::Logs { follow: true, container } if container == "c"
        ));
        assert!(matches!(verb(&["logs", "c"]), ContainerCommand::Logs { follow: false, .. }));
        assert!(matches!(
            verb(&["stop", "a", "b"]),
            ContainerCommand::Stop { time: None, containers } if containers == ["a", "b"]
        ));
        assert!(matches!(verb(&["stop", "-t", "3", "a"]), ContainerCommand::Stop { time: Some(3), .. }));
        assert!(matches!(verb(&["kill", "a"]), ContainerCommand::Kill { signal, .. } if signal == "KILL"));
        assert!(
            matches!(verb(&["start", "a"]), ContainerCommand::Start { containers } if containers == ["a"])
        );
        assert!(matches!(
            verb(&["restart", "-t", "1", "a"]),
            ContainerCommand::Restart { time: Some(1), .. }
        ));
        assert!(matches!(
            verb(&["kill", "-s", "HUP", "a"]),
            ContainerCommand::Kill { signal, .. } if signal == "HUP"
        ));
        assert!(matches!(
            verb(&["rm", "-f", "a", "b"]),
            ContainerCommand::Rm { force: true, containers } if containers.len() == 2
        ));
        assert!(matches!(
            verb(&["inspect", "a"]),
            ContainerCommand::Inspect { containers } if containers == ["a"]
        ));
        assert!(matches!(
            verb(&["stats"]),
            ContainerCommand::Stats { format: Format::Table, containers } if containers.is_empty()
        ));
        assert!(matches!(
            verb(&["stats", "--format", "json", "a"]),
            ContainerCommand::Stats { format: Format::Json, .. }
        ));
        assert!(matches!(
            verb(&["wait", "a", "b"]),
            ContainerCommand::Wait { containers } if containers.len() == 2
        ));
        for needs_a_container in ["logs", "stop", "kill", "rm", "inspect", "wait"] {
            assert_eq!(
                refusal(&[needs_a_container]),
                ErrorKind::MissingRequiredArgument,
                "{needs_a_container}"
            );
        }
        assert_eq!(refusal(&["ps", "--format", "yaml"]), ErrorKind::InvalidValue);
        assert_eq!(refusal(&["stop", "-t", "-1", "a"]), ErrorKind::UnknownArgument);
    }

    #[test]
    fn ages_read_as_ps_prints_them() {
        let now =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64;
        let ago = |secs: u64| age(now - secs * 1_000_000_000);
        assert!(ago(5).ends_with(" seconds"));
        assert_eq!(ago(150), "2 minutes");
        assert_eq!(ago(3 * 3600 + 60), "3 hours");
        assert_eq!(ago(4 * 86400 + 60), "4 days");
        // A start in the future (clock skew) reads as now, not as a huge age.
        assert_eq!(age(now + 3_600_000_000_000), "0 seconds");
    }
}
