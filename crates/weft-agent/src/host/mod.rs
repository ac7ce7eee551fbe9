//! The node-local half of weftd: images, containers and how each container is wired to its
//! network. It outlives role switches (a manager demoted to worker keeps its containers); the
//! control-plane half it uses for cluster-wide writes is swapped in with [`Host::set_core`].

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use weft_net::{NetNs, Netlink};
use weft_proto::v1 as pb;
use weft_runtime::container::{ContainerSpec, ContainerStatus, NetworkMode, Runtime};
use weft_runtime::image::ImageStore;
use weft_state::{Driver, State, cmd};

use crate::ports::{self, PortSpec};
use crate::service::Core;

/// The default network's name (Docker's `bridge`).
pub const DEFAULT_BRIDGE: &str = weft_overlay::desired::DEFAULT_BRIDGE_NETWORK;

/// The default network's subnet, as Docker's docker0. Each host gets a block of it on `weft0`.
pub const DEFAULT_BRIDGE_SUBNET: &str = "172.17.0.0/16";

/// Where the last state this host saw is kept across restarts (in the state dir).
const LAST_STATE: &str = "last-state.pb";

/// How long a live copy of the state must miss a running container's endpoint before its
/// interface is taken away.
const REVOKE_AFTER: Duration = Duration::from_secs(5);

/// How long a container start waits for this host's copy of the state to show its endpoint.
const STATE_WAIT: Duration = Duration::from_secs(10);

pub use crate::error::{HostError, Result};

/// One network attachment of a container, as weft wired it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    /// Network name.
    pub network: String,
    /// Endpoint id in the replicated state.
    pub endpoint: u64,
    /// Host end of the veth pair.
    pub host_ifname: String,
    /// Interface inside the container.
    pub ifname: String,
    /// Its addresses.
    pub ips: Vec<IpAddr>,
    /// Its MAC.
    pub mac: String,
    /// The gateway (and DNS server) it uses.
    pub gateway: Option<IpAddr>,
}

/// What weft did to a container's network, kept beside the runtime's own record so removal undoes
/// exactly that, also after an agent restart.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetConf {
    /// The `--network` value as given (`bridge`, `host`, `none`, `container:NAME`, a network).
    pub mode: String,
    /// The namespace weft made for it (a bind mount under the state dir), if any.
    pub netns: Option<PathBuf>,
    /// Its networks.
    pub attachments: Vec<Attachment>,
    /// Published ports.
    pub ports: Vec<PortSpec>,
    /// Remove the container when it exits (`--rm`).
    pub auto_remove: bool,
    /// Seconds `stop` waits after SIGTERM unless told (`--init-grace`).
    #[serde(default)]
    pub stop_grace: u32,
    /// The image as the user named it (`busybox`), for `ps`.
    #[serde(default)]
    pub image: String,
    /// Attachments whose address the cluster took back while this host was away; their
    /// interfaces are gone (see [`Host::janitor`]).
    #[serde(default)]
    pub revoked: Vec<Attachment>,
}

/// What `--network` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModeRequest {
    /// The host's namespace.
    Host,
    /// Loopback only.
    None,
    /// Another container's namespace.
    Container(String),
    /// A network by name (`bridge` included).
    Network(String),
}

/// Parses `--network` (empty: the default `bridge`).
pub fn parse_mode(text: &str) -> Result<ModeRequest> {
    Ok(match text {
        "" | "default" => ModeRequest::Network(DEFAULT_BRIDGE.into()),
        "host" => ModeRequest::Host,
        "none" => ModeRequest::None,
        other => match other.strip_prefix("container:") {
            Some("") => {
                return Err(HostError::Invalid("--network container: needs a container name or id".into()));
            }
            Some(target) => ModeRequest::Container(target.into()),
            None => ModeRequest::Network(other.into()),
        },
    })
}

/// The node-local half of the agent.
pub struct Host {
    /// This node's id.
    pub id: u64,
    dir: PathBuf,
    /// Containers.
    pub runtime: Runtime,
    /// Images.
    pub images: Arc<ImageStore>,
    nl: Netlink,
    state_tx: watch::Sender<Arc<State>>,
    core: RwLock<Option<Arc<Core>>>,
    /// Serialises changes that check-then-act on names, ports and namespaces.
    serial: tokio::sync::Mutex<()>,
    /// The port table last loaded into nftables.
    ports_loaded: tokio::sync::Mutex<Option<String>>,
    /// The state the overlay reconciler last applied in full.
    reconciled: std::sync::OnceLock<watch::Receiver<Arc<State>>>,
    /// A copy of the state has come from the cluster (not only from the last-state file).
    live: std::sync::atomic::AtomicBool,
    /// Endpoints of running containers missing from the state, and since when.
    missing_since: std::sync::Mutex<std::collections::HashMap<u64, std::time::Instant>>,
}

/// Runs blocking runtime work off the async threads.
pub async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f).await.map_err(|e| HostError::Internal(format!("task failed: {e}")))?
}

impl Host {
    /// The host of node `id` keeping images and containers under `dir`; `shim` is the executable
    /// serving the `monitor` verb (weftd itself).
    pub fn new(id: u64, dir: &Path, shim: PathBuf) -> anyhow::Result<Arc<Host>> {
        let runtime = Runtime::new(dir, shim)?;
        let images = Arc::new(ImageStore::open(dir.join("images"))?);
        for sub in ["netconf", "netns", "tmp"] {
            std::fs::create_dir_all(dir.join(sub))?;
        }
        // The copy of the state this host last saw, so that a restarted agent serves names and
        // keeps its data path from the first moment, before it has synced with the cluster.
        let last = std::fs::read(dir.join(LAST_STATE))
            .ok()
            .and_then(|bytes| State::from_snapshot_bytes(&bytes).ok())
            .unwrap_or_default();
        let (state_tx, _) = watch::channel(Arc::new(last));
        Ok(Arc::new(Host {
            id,
            dir: dir.to_path_buf(),
            runtime,
            images,
            nl: Netlink::connect()?,
            state_tx,
            core: RwLock::new(None),
            serial: tokio::sync::Mutex::new(()),
            ports_loaded: tokio::sync::Mutex::new(None),
            reconciled: std::sync::OnceLock::new(),
            live: std::sync::atomic::AtomicBool::new(false),
            missing_since: std::sync::Mutex::new(std::collections::HashMap::new()),
        }))
    }

    /// The control plane of the current role.
    pub fn set_core(&self, core: Option<Arc<Core>>) {
        *self.core.write().unwrap() = core;
    }

    /// Hands over the reconciler's view of what the kernel holds (set once, at start).
    pub fn set_reconciled(&self, reconciled: watch::Receiver<Arc<State>>) {
        let _ = self.reconciled.set(reconciled);
    }

    /// Waits (at most [`STATE_WAIT`]) until this host's routes and devices reflect `revision`, so
    /// a container is started with its whole network path in place. A reconciler that cannot
    /// catch up (a failing action) is logged, not fatal: it keeps retrying.
    async fn wait_reconciled(&self, revision: u64) {
        let Some(mut reconciled) = self.reconciled.get().cloned() else { return };
        let waited =
            tokio::time::timeout(STATE_WAIT, reconciled.wait_for(|s| s.revision() >= revision)).await;
        if !matches!(waited, Ok(Ok(_))) {
            tracing::warn!(revision, "the overlay has not caught up with this endpoint yet; starting anyway");
        }
    }

    /// The control plane of the current role, if one runs.
    pub fn current_core(&self) -> Option<Arc<Core>> {
        self.core.read().unwrap().clone()
    }

    fn core(&self) -> Result<Arc<Core>> {
        self.core.read().unwrap().clone().ok_or_else(|| {
            HostError::Cluster {
                reason: pb::Reason::Unspecified,
                code: tonic::Code::Unavailable,
                message: "this agent is between roles; try again in a moment".into(),
                cause: None,
            }
        })
    }

    /// Publishes a newer copy of the replicated state (from raft on managers, Watch on workers).
    pub fn publish_state(&self, state: Arc<State>) {
        // Live once the cluster's copy has caught up with what this host saw before a restart.
        if state.revision() >= self.state_tx.borrow().revision() {
            self.live.store(true, std::sync::atomic::Ordering::SeqCst);
        }
        self.state_tx.send_if_modified(|current| {
            if state.revision() > current.revision() || current.revision() == 0 {
                *current = state;
                true
            } else {
                false
            }
        });
    }

    /// Keeps the newest state on disk (coalescing changes for a second, and once more at
    /// shutdown), until `stop`.
    pub async fn persist_state(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut states = self.states();
        let mut saved = 0;
        loop {
            let state = states.borrow_and_update().clone();
            if state.revision() != saved {
                let path = self.dir.join(LAST_STATE);
                let bytes = state.snapshot_bytes();
                let written = tokio::task::spawn_blocking(move || {
                    weft_fs::write(&path, &bytes, 0o600, weft_fs::Durability::Durable)
                })
                .await
                .map_err(|e| HostError::Internal(format!("saving the last seen state: {e}")))
                .and_then(|r| Ok(r?));
                match written {
                    Ok(()) => saved = state.revision(),
                    Err(e) => tracing::warn!(error = %e, "saving the last seen state failed"),
                }
            }
            if *stop.borrow() {
                return;
            }
            tokio::select! {
                _ = stop.wait_for(|s| *s) => continue,
                changed = states.changed() => if changed.is_err() { return },
            }
            tokio::select! {
                _ = stop.wait_for(|s| *s) => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }

    /// Every new copy of the state.
    pub fn states(&self) -> watch::Receiver<Arc<State>> {
        self.state_tx.subscribe()
    }

    /// This host's current copy of the state.
    pub fn state(&self) -> Arc<State> {
        self.state_tx.borrow().clone()
    }

    /// A directory for temporary files (imports, exports) on the same file system as the store.
    pub fn tmp_dir(&self) -> PathBuf {
        self.dir.join("tmp")
    }

    /// Applies a command through the cluster and waits until this host's copy has caught up.
    pub async fn apply(&self, command: pb::Command) -> Result<pb::ApplyResponse> {
        let response = self.core()?.apply(command).await.map_err(|s| HostError::from_cluster(&s))?;
        self.wait_revision(response.revision).await?;
        Ok(response)
    }

    async fn wait_revision(&self, revision: u64) -> Result<Arc<State>> {
        let mut states = self.states();
        let waited = tokio::time::timeout(STATE_WAIT, states.wait_for(|s| s.revision() >= revision)).await;
        match waited {
            Ok(Ok(state)) => Ok(state.clone()),
            _ => Err(HostError::Internal(format!(
                "this host's copy of the cluster state did not reach revision {revision} within {} s",
                STATE_WAIT.as_secs()
            ))),
        }
    }

    fn netconf_path(&self, id: &str) -> PathBuf {
        self.dir.join("netconf").join(format!("{id}.json"))
    }

    /// What weft wired for container `id` (default for containers it did not wire).
    pub fn netconf(&self, id: &str) -> Result<NetConf> {
        Ok(weft_fs::read_json(&self.netconf_path(id))?.unwrap_or_default())
    }

    /// [`Host::netconf`] for what only shows it (inspect, ps, stop's grace): an unreadable file
    /// is logged with its name and shown as nothing wired.
    pub fn netconf_for_display(&self, id: &str) -> NetConf {
        self.netconf(id).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "network config unreadable");
            NetConf::default()
        })
    }

    /// Writes a container's network config durably (it says what to undo), off the async threads.
    fn save_netconf(&self, id: &str, conf: &NetConf) -> Result<()> {
        let path = self.netconf_path(id);
        let write = || weft_fs::write_json(&path, conf, 0o600, weft_fs::Durability::Durable);
        let multi_thread = tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
        Ok(if multi_thread { tokio::task::block_in_place(write) } else { write() }?)
    }

    /// [`Host::save_netconf`] where the caller goes on either way: a failure is logged.
    fn save_netconf_or_warn(&self, id: &str, conf: &NetConf) {
        if let Err(e) = self.save_netconf(id, conf) {
            tracing::warn!(container = id, error = %e, "saving the network config failed");
        }
    }

    /// Creates, wires and starts a container as `request` says. On any failure everything done so
    /// far is undone: no container, namespace, endpoint or port is left behind.
    pub async fn run(self: &Arc<Self>, request: pb::RunRequest) -> Result<ContainerSpec> {
        let _serial = self.serial.lock().await;
        let image = {
            let images = self.images.clone();
            let reference = request.image.clone();
            blocking(move || Ok(images.get(&reference)?)).await?
        };
        let layers = {
            let images = self.images.clone();
            let image = image.clone();
            blocking(move || Ok(images.layer_dirs(&image)?)).await?
        };
        let mut spec = crate::spec::container_spec(&image, layers, &request)?;
        spec.id = Runtime::new_id()?;
        if spec.name.is_empty() {
            spec.name = spec.id[..12].to_string();
        }
        if self.runtime.find(&spec.name).is_ok() {
            return Err(HostError::Conflict(format!(
                "the container name {:?} is already in use: pick another --name or remove that container",
                spec.name
            )));
        }
        let ports = request.publish.iter().map(|p| ports::parse(p)).collect::<Result<Vec<_>>>()?;
        let mode = parse_mode(&request.network)?;
        let mut conf = NetConf {
            mode: if request.network.is_empty() { "bridge".into() } else { request.network.clone() },
            auto_remove: request.auto_remove,
            stop_grace: request.stop_grace,
            image: request.image.clone(),
            ..NetConf::default()
        };
        if !ports.is_empty() && !matches!(mode, ModeRequest::Network(_)) {
            return Err(HostError::Invalid(format!(
                "-p needs a network of its own: --network {} shares another namespace",
                conf.mode
            )));
        }
        let network = match &mode {
            ModeRequest::Network(name) => Some(self.network_for_run(name).await?),
            _ => None,
        };
        ports::check_free(&self.all_ports(), &ports)?;
        // From here on, every step is undone on failure.
        let result =
            self.wire_and_start(&mut spec, &mode, network.as_ref(), &request, ports, &mut conf).await;
        if let Err(e) = result {
            self.undo(&spec.id, &conf).await;
            let _ = std::fs::remove_file(self.netconf_path(&spec.id));
            return Err(e);
        }
        Ok(spec)
    }

    /// The network `name` for a new container; the default bridge is created on first use.
    async fn network_for_run(&self, name: &str) -> Result<weft_state::Network> {
        if let Some(n) = self.state().network(name) {
            return Ok(n.clone());
        }
        if name == DEFAULT_BRIDGE {
            let command = cmd::create_network(name, Driver::Bridge, &[DEFAULT_BRIDGE_SUBNET], 0, 0);
            match self.apply(command).await {
                Ok(_) => {}
                Err(e) if e.reason() == pb::Reason::NetworkExists => {}
                Err(e) => return Err(e),
            }
            // Another host may have created it first: wait until this host sees it.
            for _ in 0..100 {
                if let Some(n) = self.state().network(name) {
                    return Ok(n.clone());
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Err(HostError::NotFound(format!(
            "network {name:?} not found: create it with `weft network create {name}` or see `weft network ls`"
        )))
    }

    async fn wire_and_start(
        &self,
        spec: &mut ContainerSpec,
        mode: &ModeRequest,
        network: Option<&weft_state::Network>,
        request: &pb::RunRequest,
        ports: Vec<PortSpec>,
        conf: &mut NetConf,
    ) -> Result<()> {
        match mode {
            ModeRequest::Host => spec.network = NetworkMode::Host,
            ModeRequest::None => spec.network = NetworkMode::None,
            ModeRequest::Container(target) => {
                let target_spec = self.runtime.find(target).map_err(|_| {
                    HostError::NotFound(format!("--network container:{target}: no such container"))
                })?;
                let ContainerStatus::Running(run) = self.runtime.status(&target_spec.id)? else {
                    return Err(HostError::Precondition(format!(
                        "--network container:{target}: that container is not running; start it first"
                    )));
                };
                spec.network = NetworkMode::Join(PathBuf::from(format!("/proc/{}/ns/net", run.pid)));
                let target_conf = self.netconf(&target_spec.id)?;
                spec.dns =
                    target_conf.attachments.iter().filter_map(|a| a.gateway).map(|g| g.to_string()).collect();
            }
            ModeRequest::Network(_) => {
                let network = network.expect("resolved network");
                let netns_path = self.dir.join("netns").join(&spec.id[..12]);
                let ns = NetNs::create_at(&netns_path, &spec.name)?;
                conf.netns = Some(netns_path.clone());
                self.save_netconf(&spec.id, conf)?;
                let attachment = self
                    .attach(&ns, network, &spec.id, &spec.name, &request.aliases, &request.ip, "eth0", conf)
                    .await?;
                spec.network = NetworkMode::Join(netns_path);
                let short = &spec.id[..12];
                for ip in &attachment.ips {
                    spec.hosts.push(format!("{ip}\t{} {short}", spec.name));
                }
                // User-defined networks resolve container names through the embedded DNS on their
                // gateway; the default bridge, as Docker's, uses the host's resolvers.
                if let Some(gateway) = attachment.gateway.filter(|_| network.name != DEFAULT_BRIDGE) {
                    spec.dns = vec![gateway.to_string()];
                }
                if !ports.is_empty() {
                    let ip = attachment.ips.iter().find(|i| i.is_ipv4()).copied().ok_or_else(|| {
                        HostError::Invalid("-p needs an IPv4 address on the container's network".into())
                    })?;
                    conf.ports = ports.into_iter().map(|p| p.to(ip)).collect();
                    self.save_netconf(&spec.id, conf)?;
                    self.sync_ports().await?;
                }
            }
        }
        if spec.hostname.is_empty() && matches!(mode, ModeRequest::Host) {
            spec.hostname =
                std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default().trim().into();
        }
        self.save_netconf(&spec.id, conf)?;
        let runtime = self.runtime.clone();
        let to_create = spec.clone();
        *spec = blocking(move || {
            let created = runtime.create(to_create)?;
            runtime.start(&created.id)?;
            Ok(created)
        })
        .await?;
        Ok(())
    }

    /// Allocates an endpoint of `network` for the container and wires it into `ns` as `ifname`.
    #[allow(clippy::too_many_arguments)]
    async fn attach(
        &self,
        ns: &NetNs,
        network: &weft_state::Network,
        container_id: &str,
        name: &str,
        aliases: &[String],
        ip: &str,
        ifname: &str,
        conf: &mut NetConf,
    ) -> Result<Attachment> {
        let mut command = cmd::allocate_endpoint(&network.name, self.id, container_id, name, ip);
        if let Some(pb::command::Kind::AllocateEndpoint(a)) = command.kind.as_mut() {
            a.aliases = aliases.to_vec();
        }
        let response = self.apply(command).await?;
        let response_revision = response.revision;
        let Some(pb::outcome::Kind::Endpoint(endpoint)) = response.outcome.and_then(|o| o.kind) else {
            return Err(HostError::Internal("the cluster answered an allocation without an endpoint".into()));
        };
        let state = self.state();
        let mut attachment = Attachment {
            network: network.name.clone(),
            endpoint: endpoint.id,
            host_ifname: weft_overlay::attach::host_ifname(endpoint.id),
            ifname: ifname.into(),
            ips: endpoint.ips.iter().filter_map(|i| i.parse().ok()).collect(),
            mac: endpoint.mac.clone(),
            gateway: None,
        };
        conf.attachments.push(attachment.clone());
        self.save_netconf(container_id, conf)?;
        let mtu = match state.node(self.id) {
            Some(me) => self.nl.underlay_mtu(me.underlay).await.unwrap_or(1500),
            None => 1500,
        };
        let mut spec = weft_overlay::attach::spec_for(&state, endpoint.id, mtu).ok_or_else(|| {
            HostError::Internal(format!("endpoint {} is not in this host's copy of the state", endpoint.id))
        })?;
        spec.ifname = ifname.into();
        if ifname != "eth0" {
            // A second network adds routes to its subnets, not a second default route.
            spec.extra_routes = spec.gateways.iter().zip(&network.subnets).map(|(g, s)| (*s, *g)).collect();
            spec.gateways.clear();
        }
        attachment.gateway = spec.gateways.first().copied().or(spec.extra_routes.first().map(|r| r.1));
        conf.attachments.last_mut().expect("pushed").gateway = attachment.gateway;
        self.save_netconf(container_id, conf)?;
        weft_overlay::attach::attach(&self.nl, ns, &spec)
            .await
            .map_err(|e| HostError::Internal(e.to_string()))?;
        self.wait_reconciled(response_revision).await;
        Ok(attachment)
    }

    /// Undoes what weft wired for a container (ports, veths, namespace, endpoints) and removes
    /// the container record if there is one. Best effort: what fails is logged, and an endpoint
    /// that could not be released stays in the netconf file for the janitor.
    async fn undo(&self, id: &str, conf: &NetConf) {
        // Every step is tried whatever failed before it; every failure is reported (netavark's
        // teardown), none is dropped.
        let mut failures: Vec<String> = Vec::new();
        let runtime = self.runtime.clone();
        let owned = id.to_string();
        if let Err(e) = blocking(move || Ok(runtime.remove(&owned, true)?)).await
            && !matches!(e, HostError::NotFound(_))
        {
            failures.push(format!("remove the container: {e}"));
        }
        let mut left = conf.clone();
        if !conf.ports.is_empty() {
            left.ports.clear();
            if let Err(e) = self.save_netconf(id, &left) {
                failures.push(format!("save the network config: {e}"));
            }
            if let Err(e) = self.sync_ports().await {
                failures.push(format!("withdraw published ports: {e}"));
            }
        }
        for a in &conf.attachments {
            if let Err(e) = weft_overlay::attach::detach(&self.nl, &a.host_ifname).await {
                failures.push(format!("detach {}: {e}", a.host_ifname));
            }
        }
        if let Some(path) = &conf.netns
            && path.exists()
            && let Err(e) = NetNs::delete_at(path, id)
        {
            failures.push(format!("remove the network namespace {}: {e}", path.display()));
        }
        left.netns = None;
        let mut kept = Vec::new();
        for a in &conf.attachments {
            if self.state().endpoint(a.endpoint).is_none() {
                continue;
            }
            match self.apply(cmd::release_endpoint(a.endpoint)).await {
                Ok(_) => {}
                Err(e) if e.reason() == pb::Reason::UnknownEndpoint => {}
                Err(e) => {
                    failures.push(format!("release endpoint {} (will retry): {e}", a.endpoint));
                    kept.push(a.clone());
                }
            }
        }
        left.attachments = kept;
        if left.attachments.is_empty() {
            match std::fs::remove_file(self.netconf_path(id)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    failures.push(format!("remove the network config: {e}"))
                }
                _ => {}
            }
        } else if let Err(e) = self.save_netconf(id, &left) {
            failures.push(format!("save the network config: {e}"));
        }
        if !failures.is_empty() {
            tracing::warn!(container = id, failures = %failures.join("; "), "teardown incomplete");
        }
    }

    /// Removes a container (a running one only with `force`) and everything weft wired for it.
    pub async fn remove(&self, reference: &str, force: bool) -> Result<()> {
        let _serial = self.serial.lock().await;
        let spec = self.runtime.find(reference)?;
        if !force && matches!(self.runtime.status(&spec.id)?, ContainerStatus::Running(_)) {
            return Err(HostError::Precondition(format!(
                "container {} is running: stop it first or use rm -f",
                spec.name
            )));
        }
        let conf = self.netconf(&spec.id)?;
        self.undo(&spec.id, &conf).await;
        Ok(())
    }

    /// Stops a container (SIGTERM, SIGKILL after `grace`, by default its own `--init-grace`) and
    /// withdraws its published ports.
    pub async fn stop(&self, reference: &str, grace: Option<Duration>) -> Result<ContainerSpec> {
        let spec = self.runtime.find(reference)?;
        let grace = grace.unwrap_or_else(|| match self.netconf_for_display(&spec.id).stop_grace {
            0 => Duration::from_secs(10),
            s => Duration::from_secs(s.into()),
        });
        let runtime = self.runtime.clone();
        let id = spec.id.clone();
        blocking(move || Ok(runtime.stop(&id, grace)?)).await?;
        let _serial = self.serial.lock().await;
        self.sync_ports().await?;
        Ok(spec)
    }

    /// Every published port of a container on this host that has not exited.
    fn all_ports(&self) -> Vec<PortSpec> {
        self.survey().map(|s| s.wanted_ports()).unwrap_or_default()
    }

    /// One look at this host's containers and network configs: each container's status read once
    /// and each netconf file read once, shared by everything the janitor does in a round.
    fn survey(&self) -> Option<Survey> {
        let list = self.runtime.list().ok()?;
        let containers = list
            .iter()
            .map(|(spec, status)| (spec.id.clone(), matches!(status, ContainerStatus::Exited(_))))
            .collect();
        let mut netconfs = BTreeMap::new();
        if let Ok(entries) = std::fs::read_dir(self.dir.join("netconf")) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let Some(id) = name.strip_suffix(".json") else { continue };
                let age = entry.metadata().and_then(|m| m.modified()).ok().and_then(|t| t.elapsed().ok());
                match self.netconf(id) {
                    Ok(conf) => {
                        netconfs.insert(id.to_string(), (conf, age));
                    }
                    // Never cleaned up on a guess: the file stays until it reads again.
                    Err(e) => tracing::warn!(error = %e, "network config unreadable; left alone"),
                }
            }
        }
        Some(Survey { containers, netconfs })
    }

    /// Rewrites weft's port table from the running containers' netconf files (plus the one being
    /// started, whose file is already written).
    pub async fn sync_ports(&self) -> Result<()> {
        let Some(survey) = self.survey() else { return Ok(()) };
        self.sync_ports_from(&survey).await
    }

    async fn sync_ports_from(&self, survey: &Survey) -> Result<()> {
        let script = ports::script(&survey.wanted_ports());
        let mut loaded = self.ports_loaded.lock().await;
        if loaded.as_deref() == Some(script.as_str()) {
            return Ok(());
        }
        ports::apply(&script).await.map_err(|e| HostError::Internal(format!("nftables: {e}")))?;
        *loaded = Some(script);
        Ok(())
    }

    /// Connects a running container to one more network.
    pub async fn connect(&self, request: &pb::ConnectRequest) -> Result<ContainerSpec> {
        let _serial = self.serial.lock().await;
        let spec = self.runtime.find(&request.container)?;
        let ContainerStatus::Running(run) = self.runtime.status(&spec.id)? else {
            return Err(HostError::Precondition(format!("container {} is not running", spec.name)));
        };
        let mut conf = self.netconf(&spec.id)?;
        if conf.netns.is_none() {
            return Err(HostError::Invalid(format!(
                "container {} uses --network {}: it has no network of its own to extend",
                spec.name, conf.mode
            )));
        }
        if conf.attachments.iter().any(|a| a.network == request.network) {
            return Err(HostError::Conflict(format!(
                "container {} is already connected to network {}",
                spec.name, request.network
            )));
        }
        let network = self.state().network(&request.network).cloned().ok_or_else(|| {
            HostError::NotFound(format!("network {:?} not found (see `weft network ls`)", request.network))
        })?;
        let ns = NetNs::of_pid(run.pid)?;
        let ifname = format!("eth{}", conf.attachments.len());
        let before = conf.clone();
        match self
            .attach(&ns, &network, &spec.id, &spec.name, &request.aliases, &request.ip, &ifname, &mut conf)
            .await
        {
            Ok(_) => Ok(spec),
            Err(e) => {
                if let Some(added) = conf.attachments.iter().find(|a| !before.attachments.contains(a)) {
                    let _ = weft_overlay::attach::detach(&self.nl, &added.host_ifname).await;
                    let _ = self.apply(cmd::release_endpoint(added.endpoint)).await;
                }
                self.save_netconf_or_warn(&spec.id, &before);
                Err(e)
            }
        }
    }

    /// Disconnects a running container from a network.
    pub async fn disconnect(&self, request: &pb::ConnectRequest) -> Result<ContainerSpec> {
        let _serial = self.serial.lock().await;
        let spec = self.runtime.find(&request.container)?;
        let mut conf = self.netconf(&spec.id)?;
        let Some(position) = conf.attachments.iter().position(|a| a.network == request.network) else {
            return Err(HostError::NotFound(format!(
                "container {} is not connected to network {}",
                spec.name, request.network
            )));
        };
        let attachment = conf.attachments.remove(position);
        weft_overlay::attach::detach(&self.nl, &attachment.host_ifname)
            .await
            .map_err(|e| HostError::Internal(e.to_string()))?;
        self.save_netconf(&spec.id, &conf)?;
        self.apply(cmd::release_endpoint(attachment.endpoint)).await?;
        Ok(spec)
    }

    /// Periodic housekeeping: removes exited `--rm` containers, and retries releasing endpoints
    /// of removed containers that the cluster could not take back at the time.
    pub async fn janitor(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                _ = tick.tick() => {}
            }
            // `--rm` containers that exited go first (removal takes the lock below itself).
            let Ok(list) = self.runtime.list() else { continue };
            for (spec, status) in &list {
                if matches!(status, ContainerStatus::Exited(_))
                    && self.netconf_for_display(&spec.id).auto_remove
                {
                    let _ = self.remove(&spec.id, true).await;
                }
            }
            let _serial = self.serial.lock().await;
            let Some(survey) = self.survey() else { continue };
            // Containers that exited by themselves withdraw their published ports.
            if let Err(e) = self.sync_ports_from(&survey).await {
                tracing::warn!(error = %e, "syncing published ports failed");
            }
            for (id, (conf, age)) in &survey.netconfs {
                match survey.containers.get(id) {
                    // Files younger than a few seconds may belong to a container being started.
                    None if age.is_some_and(|a| a > Duration::from_secs(30)) => self.undo(id, conf).await,
                    Some(false) => self.revoke_lost_addresses(id, conf.clone()).await,
                    _ => {}
                }
            }
        }
    }

    /// Takes the network away from a container whose address the cluster has taken back (its
    /// host was Down longer than the lease TTL, so the address may now belong to another
    /// container): its interface goes, the attachment is kept as revoked, and it is logged. Only
    /// with a live copy of the state, and only after the endpoint has been missing from it for
    /// [`REVOKE_AFTER`], so a copy that is merely behind never costs a container its network.
    async fn revoke_lost_addresses(&self, id: &str, mut conf: NetConf) {
        if !self.live.load(std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        let state = self.state();
        let mut missing = self.missing_since.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let mut lost = Vec::new();
        for a in &conf.attachments {
            let held = state.endpoint(a.endpoint).is_some_and(|e| e.container_id == id);
            if held {
                missing.remove(&a.endpoint);
            } else if missing.entry(a.endpoint).or_insert_with(std::time::Instant::now).elapsed()
                >= REVOKE_AFTER
            {
                lost.push(a.clone());
            }
        }
        *self.missing_since.lock().unwrap_or_else(|e| e.into_inner()) = missing;
        if lost.is_empty() {
            return;
        }
        for a in &lost {
            tracing::error!(
                container = %id, network = %a.network, ips = ?a.ips,
                "the cluster released this container's address (its host was down longer than the lease TTL); its interface is removed so the address is never used twice"
            );
            let _ = weft_overlay::attach::detach(&self.nl, &a.host_ifname).await;
            self.missing_since.lock().unwrap_or_else(|e| e.into_inner()).remove(&a.endpoint);
        }
        conf.attachments.retain(|a| !lost.contains(a));
        conf.revoked.extend(lost);
        self.save_netconf_or_warn(id, &conf);
    }

    /// The attachments of a container, for inspect and ps.
    pub fn networks_of(&self, id: &str) -> Vec<pb::ContainerNetwork> {
        Self::describe(&self.netconf_for_display(id).attachments)
    }

    /// The attachments of a container whose addresses the cluster took back.
    pub fn revoked_of(&self, id: &str) -> Vec<pb::ContainerNetwork> {
        Self::describe(&self.netconf_for_display(id).revoked)
    }

    fn describe(attachments: &[Attachment]) -> Vec<pb::ContainerNetwork> {
        attachments
            .iter()
            .map(|a| pb::ContainerNetwork {
                network: a.network.clone(),
                ips: a.ips.iter().map(ToString::to_string).collect(),
                mac: a.mac.clone(),
                endpoint_id: a.endpoint,
                gateway: a.gateway.map(|g| g.to_string()).unwrap_or_default(),
            })
            .collect()
    }
}

/// What the janitor saw in one round: [`Host::survey`].
struct Survey {
    /// Container id → whether it has exited.
    containers: BTreeMap<String, bool>,
    /// Container id → its network config and the age of the file (containers being started have
    /// a file before they exist; orphans have one after).
    netconfs: BTreeMap<String, (NetConf, Option<Duration>)>,
}

impl Survey {
    /// The ports that should be published: those of containers that have not exited, and of
    /// containers being started (a netconf file, no container yet).
    fn wanted_ports(&self) -> Vec<PortSpec> {
        let mut wanted: Vec<PortSpec> = self
            .netconfs
            .iter()
            .filter(|(id, _)| self.containers.get(*id) != Some(&true))
            .flat_map(|(_, (conf, _))| conf.ports.iter().cloned())
            .collect();
        wanted.sort();
        wanted.dedup();
        wanted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(ports: &[&str]) -> (NetConf, Option<Duration>) {
        let ports = ports.iter().map(|p| ports::parse(p).unwrap()).collect();
        (NetConf { ports, ..NetConf::default() }, Some(Duration::from_secs(1)))
    }

    #[test]
    fn wanted_ports_are_those_of_live_and_starting_containers() {
        let survey = Survey {
            containers: [("running".to_string(), false), ("exited".to_string(), true)].into(),
            netconfs: [
                ("running".to_string(), conf(&["8080:80", "53:53/udp"])),
                ("exited".to_string(), conf(&["9090:90"])),
                ("starting".to_string(), conf(&["7070:70", "8080:80"])),
            ]
            .into(),
        };
        let wanted: Vec<String> = survey
            .wanted_ports()
            .iter()
            .map(|p| format!("{}:{}/{}", p.host_port, p.container_port, p.protocol))
            .collect();
        assert_eq!(
            wanted.len(),
            3,
            "{wanted:?}: the exited container's port is withdrawn, duplicates merged"
        );
        assert!(wanted.contains(&"7070:70/tcp".to_string()), "{wanted:?}");
        assert!(!wanted.iter().any(|p| p.starts_with("9090")), "{wanted:?}");
    }
}
