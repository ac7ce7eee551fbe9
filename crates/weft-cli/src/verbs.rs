//! The node-local verbs: networks, images and containers, over the agent API.

use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};
use tokio_stream::StreamExt;
use tonic::transport::Channel;
use weft_proto::v1 as pb;
use weft_proto::v1::agent_client::AgentClient;

use crate::failure::Failure;
use crate::output::{Format, json, print_table, short};
use crate::parse::{parse_signal, parse_size, security_opt};

type Api = AgentClient<Channel>;

fn err(s: tonic::Status) -> Failure {
    Failure::from(s)
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub(crate) enum DriverArg {
    Bridge,
    Overlay,
}

/// `weft network ...`
#[derive(Debug, Subcommand)]
pub(crate) enum NetworkCommand {
    /// Creates a network.
    Create {
        /// overlay (every host, VXLAN) or bridge (a local bridge on each host).
        #[arg(short, long, value_enum, default_value = "bridge")]
        driver: DriverArg,
        /// Subnet in CIDR form, one per address family (default: a free /16 from 10.44.0.0 up).
        #[arg(long)]
        subnet: Vec<String>,
        /// Not settable in weft: every host's gateway is the first address of its own block (see
        /// `network inspect`); given, the command is refused.
        #[arg(long)]
        gateway: Option<String>,
        /// No traffic to or from outside the network.
        #[arg(long)]
        internal: bool,
        /// Labels, KEY=VALUE.
        #[arg(long)]
        label: Vec<String>,
        /// The network's name.
        name: String,
    },
    /// Lists networks.
    #[command(alias = "list")]
    Ls {
        /// Output format.
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
    /// Shows networks with their endpoints on every host (JSON).
    Inspect {
        /// Network names.
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Removes networks (refused while containers use them).
    Rm {
        /// Network names.
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Connects a running container to a network.
    Connect {
        /// Another name for the container on this network.
        #[arg(long)]
        alias: Vec<String>,
        /// A fixed address.
        #[arg(long)]
        ip: Option<String>,
        /// The network.
        network: String,
        /// The container.
        container: String,
    },
    /// Disconnects a container from a network.
    Disconnect {
        /// The network.
        network: String,
        /// The container.
        container: String,
    },
}

/// `weft image ...`
#[derive(Debug, Subcommand)]
pub(crate) enum ImageCommand {
    /// Imports an OCI image layout or docker-save archive (a tar file, or - for stdin).
    Import {
        /// Name to give the image (NAME[:TAG]).
        #[arg(short = 't', long)]
        tag: Option<String>,
        /// The archive, or - for stdin.
        file: String,
    },
    /// Writes an image as a tar archive (docker-save or OCI layout).
    Export {
        /// docker or oci.
        #[arg(long, default_value = "docker")]
        format: String,
        /// Output file (default: stdout).
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// The image.
        image: String,
    },
    /// Lists images.
    #[command(alias = "list")]
    Ls {
        /// Output format.
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
    /// Shows images (JSON).
    Inspect {
        /// Image names or ids.
        #[arg(required = true)]
        images: Vec<String>,
    },
    /// Removes images (refused while containers use them).
    Rm {
        /// Image names or ids.
        #[arg(required = true)]
        images: Vec<String>,
    },
    /// Builds an image from a Dockerfile and a context directory.
    Build {
        /// Name for the image (NAME[:TAG]); may be given more than once.
        #[arg(short = 't', long = "tag")]
        tags: Vec<String>,
        /// The Dockerfile, relative to the context (default: Dockerfile).
        #[arg(short = 'f', long = "file")]
        file: Option<String>,
        /// Build argument KEY=VALUE.
        #[arg(long = "build-arg")]
        build_args: Vec<String>,
        /// Stop at this stage.
        #[arg(long)]
        target: Option<String>,
        /// Do not use the layer cache.
        #[arg(long)]
        no_cache: bool,
        /// The context directory.
        context: PathBuf,
    },
    /// Adds a name to an image.
    Tag {
        /// The image.
        image: String,
        /// The new name.
        name: String,
    },
}

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
    /// The image.
    image: String,
    /// The command and its arguments.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

fn driver_name(driver: i32) -> &'static str {
    match pb::NetworkDriver::try_from(driver) {
        Ok(pb::NetworkDriver::Overlay) => "overlay",
        Ok(pb::NetworkDriver::Bridge) => "bridge",
        _ => "?",
    }
}

fn network_json(info: &pb::NetworkInfo) -> serde_json::Value {
    let n = info.network.clone().unwrap_or_default();
    let endpoints: Vec<serde_json::Value> = info
        .endpoints
        .iter()
        .map(|e| {
            let ep = e.endpoint.clone().unwrap_or_default();
            serde_json::json!({
                "id": ep.id, "container": ep.container_id, "name": ep.name, "aliases": ep.aliases,
                "ips": ep.ips, "mac": ep.mac, "node": e.node_name,
            })
        })
        .collect();
    serde_json::json!({
        "id": n.id, "name": n.name, "driver": driver_name(n.driver), "subnets": n.subnets,
        "vni": n.vni, "internal": n.internal,
        "labels": n.labels.iter().map(|l| (l.key.clone(), serde_json::Value::from(l.value.clone()))).collect::<serde_json::Map<_, _>>(),
        "gateways": info.gateways, "addresses_used": info.used, "addresses_free": info.free,
        "addresses": info.addresses.iter().map(|a| serde_json::json!({
            "subnet": a.subnet, "family": a.family, "block_len": a.block_len,
            "usable": a.usable, "used": a.used, "free": a.free,
        })).collect::<Vec<_>>(),
        "endpoints": endpoints,
    })
}

fn image_json(i: &pb::ImageInfo) -> serde_json::Value {
    serde_json::json!({
        "id": i.id, "names": i.names, "created": i.created, "layers": i.layers,
        "config": serde_json::from_str::<serde_json::Value>(&i.config_json).unwrap_or_default(),
    })
}

fn container_json(c: &pb::ContainerInfo) -> serde_json::Value {
    serde_json::json!({
        "id": c.id, "name": c.name, "image": c.image, "image_id": c.image_id, "command": c.command, "state": c.state,
        "exit_code": c.exit_code, "pid": c.pid, "started_ns": c.started_ns, "finished_ns": c.finished_ns,
        "oom_killed": c.oom_killed, "error": c.error, "hostname": c.hostname,
        "network_mode": c.network_mode, "auto_remove": c.auto_remove,
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

/// Runs a `network` verb.
pub(crate) async fn network(api: &mut Api, command: NetworkCommand) -> Result<u8, Failure> {
    match command {
        NetworkCommand::Create { driver, subnet, gateway, internal, label, name } => {
            if let Some(g) = gateway {
                return Err(format!(
                    "--gateway {g}: weft routes per host, so each host's gateway is the first address of its own block of the subnet (`weft network inspect` lists them); drop --gateway"
                ).into());
            }
            let mut labels = Vec::new();
            for l in label {
                let (key, value) =
                    l.split_once('=').ok_or_else(|| format!("--label {l:?}: expected KEY=VALUE"))?;
                labels.push(pb::Label { key: key.into(), value: value.into() });
            }
            let driver = match driver {
                DriverArg::Bridge => pb::NetworkDriver::Bridge,
                DriverArg::Overlay => pb::NetworkDriver::Overlay,
            } as i32;
            let request = pb::CreateNetworkRequest { name, driver, subnets: subnet, internal, labels };
            let info = api.create_network(request).await.map_err(err)?.into_inner();
            let n = info.network.unwrap_or_default();
            println!("{} {} {}", n.name, driver_name(n.driver), n.subnets.join(","));
        }
        NetworkCommand::Ls { format } => {
            let list = api.list_networks(pb::Empty {}).await.map_err(err)?.into_inner();
            if format == Format::Json {
                json(&list.networks.iter().map(network_json).collect::<Vec<_>>());
                return Ok(0);
            }
            let rows = list
                .networks
                .iter()
                .map(|i| {
                    let n = i.network.clone().unwrap_or_default();
                    vec![
                        n.name,
                        driver_name(n.driver).into(),
                        n.subnets.join(","),
                        if n.vni == 0 { "-".into() } else { n.vni.to_string() },
                        if n.internal { "yes".into() } else { "no".into() },
                        i.endpoints.len().to_string(),
                    ]
                })
                .collect();
            print_table(&["NAME", "DRIVER", "SUBNET", "VNI", "INTERNAL", "ENDPOINTS"], rows);
        }
        NetworkCommand::Inspect { names } => {
            let mut out = Vec::new();
            for name in names {
                out.push(network_json(
                    &api.inspect_network(pb::NetworkRef { name }).await.map_err(err)?.into_inner(),
                ));
            }
            json(&out);
        }
        NetworkCommand::Rm { names } => {
            for name in names {
                api.remove_network(pb::NetworkRef { name: name.clone() }).await.map_err(err)?;
                println!("{name}");
            }
        }
        NetworkCommand::Connect { alias, ip, network, container } => {
            let request =
                pb::ConnectRequest { network, container, aliases: alias, ip: ip.unwrap_or_default() };
            let c = api.connect_network(request).await.map_err(err)?.into_inner();
            println!("{}", c.name);
        }
        NetworkCommand::Disconnect { network, container } => {
            let request = pb::ConnectRequest { network, container, ..Default::default() };
            let c = api.disconnect_network(request).await.map_err(err)?.into_inner();
            println!("{}", c.name);
        }
    }
    Ok(0)
}

/// Runs an `image` verb.
pub(crate) async fn image(api: &mut Api, command: ImageCommand) -> Result<u8, Failure> {
    match command {
        ImageCommand::Import { tag, file } => {
            let mut reader: Box<dyn Read + Send> = if file == "-" {
                Box::new(std::io::stdin())
            } else {
                Box::new(std::fs::File::open(&file).map_err(|e| format!("cannot read {file}: {e}"))?)
            };
            let total = if file == "-" { None } else { std::fs::metadata(&file).ok().map(|m| m.len()) };
            let (tx, rx) = tokio::sync::mpsc::channel::<pb::ImportChunk>(4);
            let name = tag.unwrap_or_default();
            let progress = std::io::stderr().is_terminal();
            let sender = tokio::task::spawn_blocking(move || -> Result<u64, String> {
                let mut sent = 0u64;
                let mut first = true;
                let mut buf = vec![0u8; 1 << 20];
                loop {
                    let n = reader.read(&mut buf).map_err(|e| format!("read: {e}"))?;
                    if n == 0 && !first {
                        return Ok(sent);
                    }
                    let chunk = pb::ImportChunk {
                        name: if first { name.clone() } else { String::new() },
                        data: buf[..n].to_vec(),
                    };
                    first = false;
                    sent += n as u64;
                    if tx.blocking_send(chunk).is_err() {
                        return Ok(sent);
                    }
                    if progress {
                        match total {
                            Some(t) => eprint!("\rimporting: {} / {} MiB", sent >> 20, t >> 20),
                            None => eprint!("\rimporting: {} MiB", sent >> 20),
                        }
                    }
                    if n == 0 {
                        return Ok(sent);
                    }
                }
            });
            let result = api.import_image(tokio_stream::wrappers::ReceiverStream::new(rx)).await;
            let sent = sender.await.map_err(|e| e.to_string())??;
            if progress {
                eprintln!();
            }
            let response = result.map_err(err)?.into_inner();
            for i in &response.images {
                println!("imported {} ({} bytes read) {}", short(&i.id), sent, i.names.join(" "));
            }
        }
        ImageCommand::Export { format, output, image } => {
            let mut stream = api
                .export_image(pb::ExportRequest { reference: image, format })
                .await
                .map_err(err)?
                .into_inner();
            let mut out: Box<dyn Write> = match &output {
                Some(path) => Box::new(
                    std::fs::File::create(path)
                        .map_err(|e| format!("cannot write {}: {e}", path.display()))?,
                ),
                None if std::io::stdout().is_terminal() => {
                    return Err(
                        "refusing to write an image to a terminal: use -o FILE or redirect stdout".into()
                    );
                }
                None => Box::new(std::io::stdout()),
            };
            while let Some(chunk) = stream.next().await {
                out.write_all(&chunk.map_err(err)?.data).map_err(|e| format!("write: {e}"))?;
            }
            out.flush().map_err(|e| format!("write: {e}"))?;
        }
        ImageCommand::Ls { format } => {
            let list = api.list_images(pb::Empty {}).await.map_err(err)?.into_inner();
            if format == Format::Json {
                json(&list.images.iter().map(image_json).collect::<Vec<_>>());
                return Ok(0);
            }
            let mut rows = Vec::new();
            for i in &list.images {
                let names = if i.names.is_empty() { vec!["<none>".to_string()] } else { i.names.clone() };
                for n in names {
                    rows.push(vec![n, short(&i.id), i.layers.to_string(), i.created.clone()]);
                }
            }
            print_table(&["NAME", "ID", "LAYERS", "CREATED"], rows);
        }
        ImageCommand::Inspect { images } => {
            let mut out = Vec::new();
            for reference in images {
                out.push(image_json(
                    &api.inspect_image(pb::ImageRef { reference }).await.map_err(err)?.into_inner(),
                ));
            }
            json(&out);
        }
        ImageCommand::Rm { images } => {
            for reference in images {
                api.remove_image(pb::ImageRef { reference: reference.clone() }).await.map_err(err)?;
                println!("{reference}");
            }
        }
        ImageCommand::Build { tags, file, build_args, target, no_cache, context } => {
            if !context.is_dir() {
                return Err(format!("build context {} is not a directory", context.display()).into());
            }
            // The context travels as a tar, streamed in 1 MiB chunks; the first carries the options.
            let mut archive = tar::Builder::new(Vec::new());
            archive.follow_symlinks(false);
            archive
                .append_dir_all(".", &context)
                .map_err(|e| format!("cannot read the build context {}: {e}", context.display()))?;
            let bytes = archive.into_inner().map_err(|e| format!("build context: {e}"))?;
            let mut chunks: Vec<pb::BuildChunk> = bytes
                .chunks(1 << 20)
                .map(|c| pb::BuildChunk { context: c.to_vec(), ..Default::default() })
                .collect();
            if chunks.is_empty() {
                chunks.push(pb::BuildChunk::default());
            }
            chunks[0].tags = tags;
            chunks[0].dockerfile = file.unwrap_or_default();
            chunks[0].build_args = build_args;
            chunks[0].target = target.unwrap_or_default();
            chunks[0].no_cache = no_cache;
            let report = api.build_image(tokio_stream::iter(chunks)).await.map_err(err)?.into_inner();
            for step in &report.steps {
                let cached = if step.cached { " (cached)" } else { "" };
                println!("stage {} line {}: {}{cached}", step.stage, step.line, step.text);
            }
            let image = report.image.unwrap_or_default();
            println!("built {} {}", short(&image.id), image.names.join(" "));
        }
        ImageCommand::Tag { image, name } => {
            api.tag_image(pb::TagRequest { reference: image, name }).await.map_err(err)?;
        }
    }
    Ok(0)
}

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
    };
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
                        "running" => format!("Up {}", age(c.started_ns)),
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

/// The terminal's rows and columns, when stdout is one.
fn window_size() -> (u32, u32) {
    let mut size = libc::winsize { ws_row: 0, ws_col: 0, ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: TIOCGWINSZ writes a winsize to the pointer.
    if unsafe { libc::ioctl(1, libc::TIOCGWINSZ, &mut size) } == 0 {
        (size.ws_row.into(), size.ws_col.into())
    } else {
        (0, 0)
    }
}

/// Puts the terminal on stdin in raw mode while alive (keys go to the container's terminal as
/// they are typed), and restores it when dropped.
struct RawMode(Option<libc::termios>);

impl RawMode {
    fn enter() -> RawMode {
        if !std::io::stdin().is_terminal() {
            return RawMode(None);
        }
        // SAFETY: tcgetattr/tcsetattr on fd 0 with a termios we own.
        unsafe {
            let mut saved: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(0, &mut saved) != 0 {
                return RawMode(None);
            }
            let mut raw = saved;
            libc::cfmakeraw(&mut raw);
            libc::tcsetattr(0, libc::TCSANOW, &raw);
            RawMode(Some(saved))
        }
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Some(saved) = &self.0 {
            // SAFETY: restores the attributes saved by enter().
            unsafe { libc::tcsetattr(0, libc::TCSANOW, saved) };
        }
    }
}

/// `weft exec`'s flags beside the container and command.
struct ExecFlags {
    interactive: bool,
    tty: bool,
    detach: bool,
    user: Option<String>,
    workdir: Option<String>,
    env: Vec<String>,
}

async fn exec(
    api: &mut Api,
    container: String,
    command: Vec<String>,
    flags: ExecFlags,
) -> Result<u8, Failure> {
    let ExecFlags { interactive, tty, detach, user, workdir, env } = flags;
    let (tx, rx) = tokio::sync::mpsc::channel::<pb::ExecInput>(8);
    let (rows, cols) = if tty { window_size() } else { (0, 0) };
    let first = pb::ExecInput {
        reference: container,
        command,
        interactive,
        close_stdin: !interactive,
        tty,
        rows,
        cols,
        user: user.unwrap_or_default(),
        workdir: workdir.unwrap_or_default(),
        env,
        ..Default::default()
    };
    tx.send(first).await.map_err(|e| e.to_string())?;
    if tty {
        // The window follows the client's terminal.
        let resize = tx.clone();
        tokio::spawn(async move {
            use tokio::signal::unix::{SignalKind, signal};
            let Ok(mut changes) = signal(SignalKind::window_change()) else { return };
            while changes.recv().await.is_some() {
                let (rows, cols) = window_size();
                if resize.send(pb::ExecInput { rows, cols, ..Default::default() }).await.is_err() {
                    return;
                }
            }
        });
    }
    if interactive {
        std::thread::spawn(move || {
            let mut stdin = std::io::stdin();
            let mut buf = vec![0u8; 32 << 10];
            loop {
                match stdin.read(&mut buf) {
                    Ok(0) | Err(_) => {
                        let _ = tx.blocking_send(pb::ExecInput { close_stdin: true, ..Default::default() });
                        return;
                    }
                    Ok(n) => {
                        if tx
                            .blocking_send(pb::ExecInput { stdin: buf[..n].to_vec(), ..Default::default() })
                            .is_err()
                        {
                            return;
                        }
                    }
                }
            }
        });
    } else if !tty {
        drop(tx);
    }
    let mut stream =
        api.exec(tokio_stream::wrappers::ReceiverStream::new(rx)).await.map_err(err)?.into_inner();
    if detach {
        return Ok(0);
    }
    let _raw = if tty && interactive { Some(RawMode::enter()) } else { None };
    let (mut out, mut errout) = (std::io::stdout(), std::io::stderr());
    while let Some(message) = stream.next().await {
        let message = message.map_err(err)?;
        if !message.stdout.is_empty() {
            let _ = out.write_all(&message.stdout);
            let _ = out.flush();
        }
        if !message.stderr.is_empty() {
            let _ = errout.write_all(&message.stderr);
        }
        if message.exited {
            return Ok(message.exit_code.clamp(0, 255) as u8);
        }
    }
    Err("the exec stream ended without an exit status".into())
}
