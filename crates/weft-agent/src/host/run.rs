//! `weft run`: resolves the image and the network (creating the default bridge on first use),
//! builds the spec, wires the container's network as `--network` asks (a namespace of its own
//! with an endpoint, the host's, none, or another container's), publishes its ports, then creates
//! and starts it; on any failure everything done so far is undone.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use weft_net::NetNs;
use weft_proto::v1 as pb;
use weft_runtime::container::{ContainerSpec, ContainerStatus, NetworkMode, Runtime};
use weft_state::{Driver, cmd};

use super::{Host, HostError, NetConf, Result, blocking};
use crate::ports::{self, PortSpec};

/// The default network's name (Docker's `bridge`).
pub const DEFAULT_BRIDGE: &str = weft_overlay::desired::DEFAULT_BRIDGE_NETWORK;

/// The default network's subnet, as Docker's docker0. Each host gets a block of it on `weft0`.
pub const DEFAULT_BRIDGE_SUBNET: &str = "172.17.0.0/16";

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

/// `--label` pairs, each key given once and not empty.
fn labels(given: &[pb::Label]) -> Result<std::collections::BTreeMap<String, String>> {
    let mut out = std::collections::BTreeMap::new();
    for l in given {
        if l.key.is_empty() {
            return Err(HostError::Invalid(format!("--label ={}: the key is empty", l.value)));
        }
        out.insert(l.key.clone(), l.value.clone());
    }
    Ok(out)
}

/// Checks an id the caller chose: 64 lowercase hex digits that no container has yet.
fn chosen_id(runtime: &Runtime, id: &str) -> Result<String> {
    if id.len() != 64 || !id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        return Err(HostError::Invalid(format!("container id {id:?} is not 64 lowercase hex digits")));
    }
    if runtime.find(id).is_ok() {
        return Err(HostError::Conflict(format!("container id {id} is already in use")));
    }
    Ok(id.to_string())
}

impl Host {
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
        spec.id =
            if request.id.is_empty() { Runtime::new_id()? } else { chosen_id(&self.runtime, &request.id)? };
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
        let restart = crate::restart::RestartPolicy::parse(&request.restart).map_err(HostError::Invalid)?;
        if request.auto_remove && restart != crate::restart::RestartPolicy::No {
            return Err(HostError::Invalid(format!(
                "--restart {} and --rm conflict: a container removed on exit cannot be restarted",
                restart.render()
            )));
        }
        let mut conf = NetConf {
            mode: if request.network.is_empty() { "bridge".into() } else { request.network.clone() },
            auto_remove: request.auto_remove,
            restart,
            stop_grace: request.stop_grace,
            image: request.image.clone(),
            labels: labels(&request.labels)?,
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
        self.containers_changed();
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

    /// Wires the container's network as `mode` says (recording each step in `conf` first, so
    /// [`Host::undo`] can take it back), publishes its ports, then creates and starts it.
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
                    conf.ports = ports.into_iter().map(|p| p.to(&attachment.ips)).collect();
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
}
