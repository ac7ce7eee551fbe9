//! The agent API (`weft.v1.Agent`): networks, images and containers of this host, as the CLI
//! drives them. Served on the local socket, and over mutual TLS on managers' listeners.

use std::io::Write;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use weft_proto::v1 as pb;
use weft_runtime::container::{ContainerSpec, ContainerStatus, NetworkMode};
use weft_runtime::image::ImageRecord;
use weft_state::{Driver, State, cmd};

use crate::authz::{Caller, caller_of};
use crate::error::HostError;
use crate::host::{Host, blocking};

type Stream_<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// The service over a [`Host`].
#[derive(Clone)]
pub struct AgentService {
    host: Arc<Host>,
}

impl AgentService {
    /// The service; its servers put it behind the authorization layer ([`crate::authz`]).
    pub fn new(host: Arc<Host>) -> AgentService {
        AgentService { host }
    }

    /// The layer already refused everyone but the local socket and admins; this repeats that
    /// check where the calls are served, so a server built without the layer serves nobody.
    fn check<T>(&self, request: &Request<T>) -> Result<(), Status> {
        match caller_of(request) {
            Caller::Local | Caller::Admin { .. } => Ok(()),
            _ => Err(crate::authz::denied(
                "a host's Agent API is for the local socket and admin certificates only",
            )),
        }
    }
}

/// `network inspect`'s view of a network from the replicated state.
pub fn network_info(state: &State, network: &weft_state::Network) -> pb::NetworkInfo {
    let gateways = state
        .blocks(network.id)
        .iter()
        .filter_map(|b| {
            let node = state.node(b.node).map(|n| n.name.clone()).unwrap_or_else(|| b.node.to_string());
            b.cidr.nth(1).map(|g| format!("{node}={g}"))
        })
        .collect();
    let endpoints: Vec<pb::EndpointInfo> = state
        .network_endpoints(network.id)
        .map(|e| pb::EndpointInfo {
            endpoint: Some(e.to_proto()),
            node_name: state.node(e.node).map(|n| n.name.clone()).unwrap_or_default(),
        })
        .collect();
    let counts = state.network_addresses(network);
    let used = counts.iter().fold(0u128, |sum, c| sum.saturating_add(c.used));
    let free = counts.iter().fold(0u128, |sum, c| sum.saturating_add(c.free()));
    let addresses = counts
        .iter()
        .map(|c| pb::SubnetAddresses {
            subnet: c.subnet.to_string(),
            family: c.family().name().into(),
            block_len: c.block_len.into(),
            usable: weft_ipam::saturating_u64(c.usable),
            used: weft_ipam::saturating_u64(c.used),
            free: weft_ipam::saturating_u64(c.free()),
        })
        .collect();
    pb::NetworkInfo {
        network: Some(network.to_proto()),
        gateways,
        endpoints,
        used: weft_ipam::saturating_u64(used),
        free: weft_ipam::saturating_u64(free),
        addresses,
    }
}

fn image_info(image: &ImageRecord) -> pb::ImageInfo {
    let created = image.config["created"].as_str().unwrap_or("").to_string();
    pb::ImageInfo {
        id: image.id.clone(),
        names: image.names.clone(),
        layers: image.diff_ids.len() as u32,
        created,
        config_json: image.runtime_config().to_string(),
        history: Vec::new(),
    }
}

/// `SIGTERM` for 15 (the number itself for one nix does not name).
fn signal_name(signal: i32) -> String {
    nix::sys::signal::Signal::try_from(signal).map_or_else(|_| signal.to_string(), |s| s.as_str().to_string())
}

/// The health of a container with a health check: `starting` for a run no check has finished in
/// yet (as Docker shows it from the start), else the last recorded.
fn health_info(host: &Host, spec: &ContainerSpec, status: &ContainerStatus) -> Option<pb::Health> {
    spec.healthcheck.as_ref()?;
    let recorded = host.health_of(&spec.id);
    let state = match status {
        ContainerStatus::Running(run) => recorded
            .filter(|h| h.run_started_ns == run.started_ns)
            .unwrap_or_else(|| crate::host::HealthState::starting(run.started_ns)),
        _ => recorded?,
    };
    Some(state.to_proto())
}

pub(crate) fn container_info(
    host: &Host,
    spec: &ContainerSpec,
    status: &ContainerStatus,
) -> pb::ContainerInfo {
    let conf = host.netconf_for_display(&spec.id);
    let mut info = pb::ContainerInfo {
        id: spec.id.clone(),
        name: spec.name.clone(),
        image: if conf.image.is_empty() { spec.image.clone() } else { conf.image.clone() },
        image_id: spec.image.clone(),
        command: spec.argv.clone(),
        network_mode: if conf.mode.is_empty() {
            match &spec.network {
                NetworkMode::Host => "host".into(),
                NetworkMode::None => "none".into(),
                NetworkMode::Join(p) => p.display().to_string(),
            }
        } else {
            conf.mode.clone()
        },
        networks: host.networks_of(&spec.id),
        revoked_networks: host.revoked_of(&spec.id),
        ports: conf
            .ports
            .iter()
            .map(|p| pb::PortMapping {
                host_ip: p.host_ip.map(|i| i.to_string()).unwrap_or_default(),
                host_port: p.host_port.into(),
                container_port: p.container_port.into(),
                protocol: p.protocol.clone(),
            })
            .collect(),
        hostname: spec.hostname.clone(),
        auto_remove: conf.auto_remove,
        restart_policy: conf.restart.render(),
        restart_count: host.restart_record(&spec.id).count,
        health: health_info(host, spec, status),
        stop_signal: signal_name(spec.stop_signal.unwrap_or(libc::SIGTERM)),
        labels: conf
            .labels
            .iter()
            .map(|(key, value)| pb::Label { key: key.clone(), value: value.clone() })
            .collect(),
        ..Default::default()
    };
    match status {
        ContainerStatus::Created => info.state = "created".into(),
        ContainerStatus::Running(run) => {
            info.state = "running".into();
            info.pid = run.pid;
            info.started_ns = run.started_ns;
        }
        ContainerStatus::Exited(exit) => {
            info.state = "exited".into();
            info.exit_code = exit.code;
            info.finished_ns = exit.finished_ns;
            info.oom_killed = exit.oom_killed;
            info.error = exit.error.clone().unwrap_or_default();
        }
    }
    info
}

impl AgentService {
    async fn info_of(&self, reference: &str) -> Result<pb::ContainerInfo, Status> {
        let host = self.host.clone();
        let reference = reference.to_string();
        Ok(blocking(move || {
            let spec = host.runtime.find(&reference)?;
            let status = host.runtime.status(&spec.id)?;
            Ok(container_info(&host, &spec, &status))
        })
        .await?)
    }
}

#[tonic::async_trait]
impl pb::agent_server::Agent for AgentService {
    async fn create_network(
        &self,
        request: Request<pb::CreateNetworkRequest>,
    ) -> Result<Response<pb::NetworkInfo>, Status> {
        self.check(&request)?;
        let r = request.into_inner();
        let driver = pb::NetworkDriver::try_from(r.driver).unwrap_or(pb::NetworkDriver::Unspecified);
        let driver = match driver {
            pb::NetworkDriver::Unspecified | pb::NetworkDriver::Bridge => Driver::Bridge,
            pb::NetworkDriver::Overlay => Driver::Overlay,
        };
        if ["host", "none", "default"].contains(&r.name.as_str()) || r.name.starts_with("container:") {
            return Err(Status::invalid_argument(format!(
                "{:?} is a network mode, not a network name",
                r.name
            )));
        }
        let subnets: Vec<&str> = r.subnets.iter().map(String::as_str).collect();
        let mut command = cmd::create_network(&r.name, driver, &subnets, 0, 0);
        if let Some(pb::command::Kind::CreateNetwork(c)) = command.kind.as_mut() {
            c.internal = r.internal;
            c.labels = r.labels;
        }
        self.host.apply(command).await?;
        let state = self.host.state();
        let network =
            state.network(&r.name).ok_or_else(|| Status::internal("created network not visible"))?;
        Ok(Response::new(network_info(&state, network)))
    }

    async fn list_networks(
        &self,
        request: Request<pb::Empty>,
    ) -> Result<Response<pb::ListNetworksResponse>, Status> {
        self.check(&request)?;
        let state = self.host.state();
        Ok(Response::new(pb::ListNetworksResponse {
            networks: state.networks().map(|n| network_info(&state, n)).collect(),
        }))
    }

    async fn inspect_network(
        &self,
        request: Request<pb::NetworkRef>,
    ) -> Result<Response<pb::NetworkInfo>, Status> {
        self.check(&request)?;
        let name = request.into_inner().name;
        let state = self.host.state();
        let network = state.network(&name).ok_or_else(|| {
            Status::not_found(format!("network {name:?} not found (see `weft network ls`)"))
        })?;
        Ok(Response::new(network_info(&state, network)))
    }

    async fn remove_network(&self, request: Request<pb::NetworkRef>) -> Result<Response<pb::Empty>, Status> {
        self.check(&request)?;
        let name = request.into_inner().name;
        self.host.apply(cmd::delete_network(&name)).await?;
        Ok(Response::new(pb::Empty {}))
    }

    async fn connect_network(
        &self,
        request: Request<pb::ConnectRequest>,
    ) -> Result<Response<pb::ContainerInfo>, Status> {
        self.check(&request)?;
        let r = request.into_inner();
        let spec = self.host.connect(&r).await?;
        Ok(Response::new(self.info_of(&spec.id).await?))
    }

    async fn disconnect_network(
        &self,
        request: Request<pb::ConnectRequest>,
    ) -> Result<Response<pb::ContainerInfo>, Status> {
        self.check(&request)?;
        let r = request.into_inner();
        let spec = self.host.disconnect(&r).await?;
        Ok(Response::new(self.info_of(&spec.id).await?))
    }

    async fn import_image(
        &self,
        request: Request<Streaming<pb::ImportChunk>>,
    ) -> Result<Response<pb::ImportResponse>, Status> {
        self.check(&request)?;
        let mut stream = request.into_inner();
        let path = self.host.tmp_dir().join(format!(
            "import-{}.tar",
            weft_runtime::container::Runtime::new_id().map_err(HostError::from)?
        ));
        let mut file = std::fs::File::create(&path).map_err(|e| Status::internal(format!("import: {e}")))?;
        let mut name = String::new();
        let mut first = true;
        let result: Result<(), Status> = async {
            while let Some(chunk) = stream.next().await {
                let chunk = chunk?;
                if first {
                    name = chunk.name.clone();
                    first = false;
                }
                file.write_all(&chunk.data).map_err(|e| Status::internal(format!("import: {e}")))?;
            }
            file.flush().map_err(|e| Status::internal(format!("import: {e}")))
        }
        .await;
        drop(file);
        if let Err(e) = result {
            let _ = std::fs::remove_file(&path);
            return Err(e);
        }
        let host = self.host.clone();
        let imported = {
            let path = path.clone();
            blocking(move || Ok(host.images.import(&path, (!name.is_empty()).then_some(name.as_str()))?))
                .await
        };
        let _ = std::fs::remove_file(&path);
        let images = imported?;
        Ok(Response::new(pb::ImportResponse { images: images.iter().map(image_info).collect() }))
    }

    type ExportImageStream = Stream_<pb::DataChunk>;

    async fn export_image(
        &self,
        request: Request<pb::ExportRequest>,
    ) -> Result<Response<Self::ExportImageStream>, Status> {
        self.check(&request)?;
        let r = request.into_inner();
        let host = self.host.clone();
        let dest = host.tmp_dir().join(format!(
            "export-{}.tar",
            weft_runtime::container::Runtime::new_id().map_err(HostError::from)?
        ));
        {
            let dest = dest.clone();
            let host = host.clone();
            blocking(move || {
                match r.format.as_str() {
                    "" | "docker" => host.images.export_docker(&r.reference, &dest)?,
                    "oci" => host.images.export_oci(&r.reference, &dest)?,
                    other => {
                        return Err(HostError::Invalid(format!(
                            "export format {other:?}: use docker or oci"
                        )));
                    }
                }
                Ok(())
            })
            .await?;
        }
        let mut file =
            tokio::fs::File::open(&dest).await.map_err(|e| Status::internal(format!("export: {e}")))?;
        let _ = std::fs::remove_file(&dest);
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(async move {
            let mut buf = vec![0u8; 1 << 20];
            loop {
                match file.read(&mut buf).await {
                    Ok(0) => return,
                    Ok(n) => {
                        if tx.send(Ok(pb::DataChunk { data: buf[..n].to_vec() })).await.is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(Status::internal(format!("export: {e}")))).await;
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn list_images(
        &self,
        request: Request<pb::Empty>,
    ) -> Result<Response<pb::ListImagesResponse>, Status> {
        self.check(&request)?;
        let host = self.host.clone();
        let images = blocking(move || Ok(host.images.list()?)).await?;
        Ok(Response::new(pb::ListImagesResponse { images: images.iter().map(image_info).collect() }))
    }

    async fn inspect_image(&self, request: Request<pb::ImageRef>) -> Result<Response<pb::ImageInfo>, Status> {
        self.check(&request)?;
        let host = self.host.clone();
        let reference = request.into_inner().reference;
        let (image, history) = blocking(move || {
            let image = host.images.get(&reference)?;
            let history = host.images.history(&image);
            Ok((image, history))
        })
        .await?;
        let mut info = image_info(&image);
        info.history = history
            .into_iter()
            .map(|h| pb::ImageHistoryEntry {
                created: h.created,
                created_by: h.created_by,
                comment: h.comment,
                empty_layer: h.empty_layer,
                size: h.size,
            })
            .collect();
        Ok(Response::new(info))
    }

    async fn remove_image(&self, request: Request<pb::ImageRef>) -> Result<Response<pb::Empty>, Status> {
        self.check(&request)?;
        let host = self.host.clone();
        let reference = request.into_inner().reference;
        blocking(move || {
            let image = host.images.get(&reference)?;
            if weft_runtime::image::ImageStore::untags_only(&image, &reference) {
                return Ok(host.images.remove(&reference)?);
            }
            let users: Vec<String> = host
                .runtime
                .list()?
                .into_iter()
                .filter(|(s, _)| s.image == image.id)
                .map(|(s, _)| s.name)
                .collect();
            if !users.is_empty() {
                return Err(HostError::Precondition(format!(
                    "image {reference} is used by container(s) {}: remove them first",
                    users.join(", ")
                )));
            }
            Ok(host.images.remove(&reference)?)
        })
        .await?;
        Ok(Response::new(pb::Empty {}))
    }

    async fn tag_image(&self, request: Request<pb::TagRequest>) -> Result<Response<pb::ImageInfo>, Status> {
        self.check(&request)?;
        let host = self.host.clone();
        let r = request.into_inner();
        let image = blocking(move || Ok(host.images.tag(&r.reference, &r.name)?)).await?;
        Ok(Response::new(image_info(&image)))
    }

    async fn build_image(
        &self,
        request: Request<Streaming<pb::BuildChunk>>,
    ) -> Result<Response<pb::BuildResponse>, Status> {
        self.check(&request)?;
        let mut stream = request.into_inner();
        let id = weft_runtime::container::Runtime::new_id().map_err(HostError::from)?;
        let archive = self.host.tmp_dir().join(format!("context-{id}.tar"));
        let context = self.host.tmp_dir().join(format!("context-{id}"));
        let cleanup = |archive: &std::path::Path, context: &std::path::Path| {
            let _ = std::fs::remove_file(archive);
            let _ = std::fs::remove_dir_all(context);
        };
        let mut options: Option<pb::BuildChunk> = None;
        let received: Result<(), Status> = async {
            let mut file = std::fs::File::create(&archive)
                .map_err(|e| Status::internal(format!("build context: {e}")))?;
            while let Some(chunk) = stream.next().await {
                let mut chunk = chunk?;
                file.write_all(&chunk.context)
                    .map_err(|e| Status::internal(format!("build context: {e}")))?;
                if options.is_none() {
                    chunk.context.clear();
                    options = Some(chunk);
                }
            }
            Ok(())
        }
        .await;
        if let Err(e) = received {
            cleanup(&archive, &context);
            return Err(e);
        }
        let options = options.unwrap_or_default();
        let host = self.host.clone();
        let (archive2, context2) = (archive.clone(), context.clone());
        let built = blocking(move || {
            let file = std::fs::File::open(&archive2)
                .map_err(|e| HostError::Internal(format!("build context: {e}")))?;
            std::fs::create_dir_all(&context2)
                .map_err(|e| HostError::Internal(format!("build context: {e}")))?;
            // The tar crate refuses entries that would land outside the directory.
            tar::Archive::new(file)
                .unpack(&context2)
                .map_err(|e| HostError::Invalid(format!("the build context is not a valid tar: {e}")))?;
            let mut build_args = std::collections::BTreeMap::new();
            for pair in &options.build_args {
                let (k, v) = pair
                    .split_once('=')
                    .ok_or_else(|| HostError::Invalid(format!("--build-arg {pair}: expected KEY=VALUE")))?;
                build_args.insert(k.to_string(), v.to_string());
            }
            let dockerfile = (!options.dockerfile.is_empty()).then(|| context2.join(&options.dockerfile));
            // BuildKit's convention: --build-arg SOURCE_DATE_EPOCH=SECONDS fixes the image's times.
            let source_date_epoch = match build_args.get("SOURCE_DATE_EPOCH") {
                None => None,
                Some(v) => Some(v.parse::<u64>().map_err(|_| {
                    HostError::Invalid(format!(
                        "--build-arg SOURCE_DATE_EPOCH={v}: expected seconds since the epoch"
                    ))
                })?),
            };
            let report = weft_runtime::build::builder::Builder::new(&host.images, &host.runtime).build(
                &weft_runtime::build::builder::BuildOptions {
                    context: context2.clone(),
                    dockerfile,
                    tags: options.tags.clone(),
                    build_args,
                    target: (!options.target.is_empty()).then(|| options.target.clone()),
                    no_cache: options.no_cache,
                    network_host: false,
                    source_date_epoch,
                },
            )?;
            Ok(report)
        })
        .await;
        cleanup(&archive, &context);
        let report = built?;
        Ok(Response::new(pb::BuildResponse {
            image: Some(image_info(&report.image)),
            steps: report
                .steps
                .iter()
                .map(|s| pb::BuildStep {
                    stage: s.stage as u32,
                    line: s.line as u32,
                    text: s.text.clone(),
                    cached: s.cached,
                })
                .collect(),
            runs_executed: report.runs_executed as u32,
        }))
    }

    async fn run(&self, request: Request<pb::RunRequest>) -> Result<Response<pb::ContainerInfo>, Status> {
        self.check(&request)?;
        let spec = self.host.run(request.into_inner()).await?;
        Ok(Response::new(self.info_of(&spec.id).await?))
    }

    async fn list_containers(
        &self,
        request: Request<pb::ListContainersRequest>,
    ) -> Result<Response<pb::ListContainersResponse>, Status> {
        self.check(&request)?;
        let all = request.into_inner().all;
        let host = self.host.clone();
        let containers = blocking(move || {
            Ok(host
                .runtime
                .list()?
                .iter()
                .filter(|(_, status)| all || matches!(status, ContainerStatus::Running(_)))
                .map(|(spec, status)| container_info(&host, spec, status))
                .collect())
        })
        .await?;
        Ok(Response::new(pb::ListContainersResponse { containers }))
    }

    async fn inspect_container(
        &self,
        request: Request<pb::ContainerRef>,
    ) -> Result<Response<pb::ContainerInfo>, Status> {
        self.check(&request)?;
        Ok(Response::new(self.info_of(&request.into_inner().reference).await?))
    }

    type LogsStream = Stream_<pb::LogLine>;

    async fn logs(&self, request: Request<pb::LogsRequest>) -> Result<Response<Self::LogsStream>, Status> {
        self.check(&request)?;
        let r = request.into_inner();
        let id = self.host.runtime.find(&r.reference).map_err(HostError::from)?.id;
        let (tx, rx) = mpsc::channel(64);
        let host = self.host.clone();
        // Woken by the container's directory changing (new lines, its exit), not by a timer; a
        // watch that cannot be made falls back to looking every 100 ms.
        let watch = if r.follow {
            host.runtime.watch(&id).ok().and_then(|w| {
                // SAFETY: the watch owns its inotify descriptor, which stays open and the same
                // until the watch (owned by the AsyncFd) is dropped.
                unsafe { tokio::io::unix::AsyncFd::register_with_interest(w, tokio::io::Interest::READABLE) }
                    .ok()
            })
        } else {
            None
        };
        tokio::spawn(async move {
            let mut offset = 0;
            loop {
                let (host2, id2) = (host.clone(), id.clone());
                let read = blocking(move || {
                    let (lines, next) = host2.runtime.logs(&id2, offset)?;
                    let exited = !matches!(host2.runtime.status(&id2)?, ContainerStatus::Running(_));
                    Ok((lines, next, exited))
                })
                .await;
                let (lines, next, exited) = match read {
                    Ok(got) => got,
                    Err(e) => {
                        let _ = tx.send(Err(Status::from(e))).await;
                        return;
                    }
                };
                let quiet = lines.is_empty();
                for l in lines {
                    if tx.send(Ok(pb::LogLine { ts: l.ts, stream: l.stream, line: l.line })).await.is_err() {
                        return;
                    }
                }
                offset = next;
                // Follow until the container has exited and its last lines are out.
                if !r.follow || (exited && quiet) {
                    return;
                }
                if quiet {
                    match &watch {
                        Some(watch) => {
                            // A second at most: a change the watch missed is still picked up.
                            if let Ok(Ok(mut ready)) =
                                tokio::time::timeout(Duration::from_secs(1), watch.readable()).await
                            {
                                ready.get_inner().drain();
                                ready.clear_ready();
                            }
                        }
                        None => tokio::time::sleep(Duration::from_millis(100)).await,
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    type ExecStream = Stream_<pb::ExecOutput>;

    async fn exec(
        &self,
        request: Request<Streaming<pb::ExecInput>>,
    ) -> Result<Response<Self::ExecStream>, Status> {
        self.check(&request)?;
        let mut input = request.into_inner();
        let first = input.next().await.ok_or_else(|| Status::invalid_argument("exec: no request"))??;
        let options = weft_runtime::container::ExecOptions {
            argv: first.command.clone(),
            user: first.user.clone(),
            workdir: first.workdir.clone(),
            env: first.env.clone(),
        };
        let command = self.host.runtime.exec_command(&first.reference, &options).map_err(HostError::from)?;
        if first.tty {
            let spec = self.host.runtime.find(&first.reference).map_err(HostError::from)?;
            let ContainerStatus::Running(run) =
                self.host.runtime.status(&spec.id).map_err(HostError::from)?
            else {
                return Err(Status::failed_precondition(format!("container {} is not running", spec.name)));
            };
            let ptmx = std::path::PathBuf::from(format!("/proc/{}/root/dev/pts/ptmx", run.pid));
            let (tx, rx) = mpsc::channel::<Result<pb::ExecOutput, Status>>(64);
            crate::tty::run(&ptmx, command, first, input, tx)?;
            return Ok(Response::new(Box::pin(ReceiverStream::new(rx))));
        }
        let mut command = tokio::process::Command::from(command);
        command
            .stdin(if first.interactive { std::process::Stdio::piped() } else { std::process::Stdio::null() })
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        let mut child = command.spawn().map_err(|e| Status::internal(format!("exec: {e}")))?;
        let (tx, rx) = mpsc::channel::<Result<pb::ExecOutput, Status>>(64);
        if let Some(mut stdin) = child.stdin.take() {
            let early = first.stdin;
            tokio::spawn(async move {
                if !early.is_empty() && stdin.write_all(&early).await.is_err() {
                    return;
                }
                if first.close_stdin {
                    return;
                }
                while let Some(Ok(message)) = input.next().await {
                    if !message.stdin.is_empty() && stdin.write_all(&message.stdin).await.is_err() {
                        return;
                    }
                    if message.close_stdin {
                        return;
                    }
                }
            });
        }
        let pump =
            |mut reader: Box<dyn tokio::io::AsyncRead + Unpin + Send>, stderr: bool, tx: mpsc::Sender<_>| {
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 32 << 10];
                    loop {
                        match reader.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => {
                                let data = buf[..n].to_vec();
                                let out = if stderr {
                                    pb::ExecOutput { stderr: data, ..Default::default() }
                                } else {
                                    pb::ExecOutput { stdout: data, ..Default::default() }
                                };
                                if tx.send(Ok(out)).await.is_err() {
                                    return;
                                }
                            }
                        }
                    }
                })
            };
        let out = pump(Box::new(child.stdout.take().expect("piped")), false, tx.clone());
        let err = pump(Box::new(child.stderr.take().expect("piped")), true, tx.clone());
        tokio::spawn(async move {
            let status = child.wait().await;
            let _ = out.await;
            let _ = err.await;
            let code = match status {
                Ok(s) => s
                    .code()
                    .unwrap_or_else(|| 128 + std::os::unix::process::ExitStatusExt::signal(&s).unwrap_or(0)),
                Err(_) => 126,
            };
            let _ = tx.send(Ok(pb::ExecOutput { exited: true, exit_code: code, ..Default::default() })).await;
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn stop(&self, request: Request<pb::StopRequest>) -> Result<Response<pb::ContainerInfo>, Status> {
        self.check(&request)?;
        let r = request.into_inner();
        let grace = r.grace_seconds.map(|s| Duration::from_secs(s.into()));
        let spec = self.host.stop(&r.reference, grace).await?;
        Ok(Response::new(self.info_of(&spec.id).await?))
    }

    async fn start(&self, request: Request<pb::ContainerRef>) -> Result<Response<pb::ContainerInfo>, Status> {
        self.check(&request)?;
        let spec = self.host.start_again(&request.into_inner().reference).await?;
        Ok(Response::new(self.info_of(&spec.id).await?))
    }

    async fn kill(&self, request: Request<pb::KillRequest>) -> Result<Response<pb::Empty>, Status> {
        self.check(&request)?;
        let r = request.into_inner();
        if !(1..=64).contains(&r.signal) {
            return Err(Status::invalid_argument(format!(
                "signal {} is not a valid signal number",
                r.signal
            )));
        }
        let host = self.host.clone();
        blocking(move || {
            let spec = host.runtime.find(&r.reference)?;
            host.mark_stopped_by_hand(&spec.id);
            Ok(host.runtime.kill(&spec.id, r.signal)?)
        })
        .await?;
        Ok(Response::new(pb::Empty {}))
    }

    async fn remove_container(
        &self,
        request: Request<pb::RemoveContainerRequest>,
    ) -> Result<Response<pb::Empty>, Status> {
        self.check(&request)?;
        let r = request.into_inner();
        self.host.remove(&r.reference, r.force).await?;
        Ok(Response::new(pb::Empty {}))
    }

    async fn wait(&self, request: Request<pb::ContainerRef>) -> Result<Response<pb::WaitResponse>, Status> {
        self.check(&request)?;
        let host = self.host.clone();
        let reference = request.into_inner().reference;
        let exit = blocking(move || Ok(host.runtime.wait(&reference, None)?)).await?;
        Ok(Response::new(pb::WaitResponse { exit_code: exit.code }))
    }

    async fn stats(&self, request: Request<pb::ContainerRef>) -> Result<Response<pb::StatsResponse>, Status> {
        self.check(&request)?;
        let host = self.host.clone();
        let reference = request.into_inner().reference;
        let response = blocking(move || {
            let spec = host.runtime.find(&reference)?;
            let stats = host.runtime.stats(&spec.id)?;
            Ok(pb::StatsResponse {
                id: spec.id,
                name: spec.name,
                memory_bytes: stats.memory_bytes,
                memory_limit: spec.limits.memory.unwrap_or(0),
                cpu_usage_ns: stats.cpu_ns,
                pids: stats.pids,
            })
        })
        .await?;
        Ok(Response::new(response))
    }
}
