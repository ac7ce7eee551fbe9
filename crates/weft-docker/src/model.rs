//! The Engine API's response types, as moby's `api/swagger.yaml` names them (the fields clients
//! read), and their making from weft's own API types. Pure: no I/O.

use std::collections::BTreeMap;

use serde::Serialize;
use weft_proto::v1 as pb;

/// `GET /version`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Version {
    /// The product's version.
    pub version: String,
    /// The newest API version spoken.
    pub api_version: String,
    /// The oldest API version accepted.
    #[serde(rename = "MinAPIVersion")]
    pub min_api_version: String,
    /// "linux".
    pub os: String,
    /// "amd64" and so on, as Go names them.
    pub arch: String,
    /// The kernel's release.
    pub kernel_version: String,
    /// The engine's components.
    pub components: Vec<Component>,
}

/// One part of the engine in `/version`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Component {
    /// "Engine".
    pub name: String,
    /// Its version.
    pub version: String,
}

/// `POST /containers/create`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct CreateResponse {
    /// The new container's id.
    pub id: String,
    /// Warnings for the client to print.
    pub warnings: Vec<String>,
}

/// `POST /containers/{id}/wait`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct WaitResponse {
    /// The exit status.
    pub status_code: i64,
    /// Set when waiting failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<WaitError>,
}

/// Why a wait failed.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct WaitError {
    /// The reason.
    pub message: String,
}

/// A published port.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Port {
    /// The host address ("0.0.0.0" for all).
    #[serde(rename = "IP")]
    pub ip: String,
    /// The container's port.
    pub private_port: u32,
    /// The host's port.
    pub public_port: u32,
    /// "tcp" or "udp".
    #[serde(rename = "Type")]
    pub kind: String,
}

/// A container's place on one network.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct EndpointSettings {
    /// The network's id.
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    /// The endpoint's id.
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
    /// The network's gateway for this container.
    pub gateway: String,
    /// The IPv4 address.
    #[serde(rename = "IPAddress")]
    pub ip_address: String,
    /// Its prefix length.
    #[serde(rename = "IPPrefixLen")]
    pub ip_prefix_len: u32,
    /// The IPv6 address, if any.
    #[serde(rename = "GlobalIPv6Address")]
    pub global_ipv6_address: String,
    /// Its prefix length.
    #[serde(rename = "GlobalIPv6PrefixLen")]
    pub global_ipv6_prefix_len: u32,
    /// The interface's MAC address.
    pub mac_address: String,
    /// Other names of the container on the network.
    pub aliases: Option<Vec<String>>,
}

/// `NetworkSettings` of a container summary.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct SummaryNetworkSettings {
    /// By network name.
    pub networks: BTreeMap<String, EndpointSettings>,
}

/// `HostConfig` of a container summary.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct SummaryHostConfig {
    /// The network mode.
    pub network_mode: String,
}

/// One row of `GET /containers/json`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerSummary {
    /// The id.
    pub id: String,
    /// Its names, each with a leading slash.
    pub names: Vec<String>,
    /// The image as the user named it.
    pub image: String,
    /// The image's id.
    #[serde(rename = "ImageID")]
    pub image_id: String,
    /// The command, as one string.
    pub command: String,
    /// Creation time, Unix seconds.
    pub created: i64,
    /// Published ports.
    pub ports: Vec<Port>,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// "created", "running" or "exited".
    pub state: String,
    /// "Up 3 seconds", "Exited (0) 2 minutes ago".
    pub status: String,
    /// The host settings clients read here.
    pub host_config: SummaryHostConfig,
    /// The networks.
    pub network_settings: SummaryNetworkSettings,
    /// Mounts (weft reports none here).
    pub mounts: Vec<serde_json::Value>,
}

/// `State` of `GET /containers/{id}/json`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerState {
    /// "created", "running", "exited".
    pub status: String,
    /// Running now.
    pub running: bool,
    /// Paused (never, in weft).
    pub paused: bool,
    /// Being restarted.
    pub restarting: bool,
    /// Killed by the OOM killer.
    #[serde(rename = "OOMKilled")]
    pub oom_killed: bool,
    /// Dead (never, in weft).
    pub dead: bool,
    /// The init process's pid (0 when not running).
    pub pid: u32,
    /// The last exit status.
    pub exit_code: i32,
    /// Why the container could not run.
    pub error: String,
    /// RFC 3339.
    pub started_at: String,
    /// RFC 3339.
    pub finished_at: String,
    /// The health check's state, when it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthState>,
}

/// `State.Health`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct HealthState {
    /// "starting", "healthy", "unhealthy".
    pub status: String,
    /// Failed checks in a row.
    pub failing_streak: u32,
}

/// `HostConfig` of an inspected container.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct InspectHostConfig {
    /// The network mode.
    pub network_mode: String,
    /// Removed on exit.
    pub auto_remove: bool,
    /// The restart policy.
    pub restart_policy: RestartPolicy,
    /// Published ports by container port.
    pub port_bindings: BTreeMap<String, Vec<PortBinding>>,
}

/// `HostConfig.RestartPolicy`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct RestartPolicy {
    /// "no", "always", "unless-stopped", "on-failure".
    pub name: String,
    /// For on-failure.
    pub maximum_retry_count: u32,
}

/// A host address and port a container port is published on.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct PortBinding {
    /// The host address ("" for all).
    pub host_ip: String,
    /// The host port.
    pub host_port: String,
}

/// `Config` of an inspected container.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct InspectConfig {
    /// The host name.
    pub hostname: String,
    /// The image as named.
    pub image: String,
    /// The command.
    pub cmd: Vec<String>,
    /// Never a TTY in weft.
    pub tty: bool,
    /// Never stdin in weft.
    pub open_stdin: bool,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// The stop signal.
    pub stop_signal: String,
}

/// `NetworkSettings` of an inspected container.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct InspectNetworkSettings {
    /// The default network's address (Docker fills it for the bridge).
    #[serde(rename = "IPAddress")]
    pub ip_address: String,
    /// Published ports by container port.
    pub ports: BTreeMap<String, Vec<PortBinding>>,
    /// By network name.
    pub networks: BTreeMap<String, EndpointSettings>,
}

/// `GET /containers/{id}/json`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerInspect {
    /// The id.
    pub id: String,
    /// RFC 3339.
    pub created: String,
    /// The program.
    pub path: String,
    /// Its arguments.
    pub args: Vec<String>,
    /// The run state.
    pub state: ContainerState,
    /// The image's id.
    pub image: String,
    /// "/name".
    pub name: String,
    /// Restarts under the policy.
    pub restart_count: u32,
    /// "runc" for Docker; weft's own runtime here.
    pub driver: String,
    /// Host settings.
    pub host_config: InspectHostConfig,
    /// The container's config.
    pub config: InspectConfig,
    /// Its networks.
    pub network_settings: InspectNetworkSettings,
    /// Mounts (weft reports none here).
    pub mounts: Vec<serde_json::Value>,
}

/// Docker's zero time.
pub const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

/// RFC 3339 with nanoseconds, or Docker's zero time for 0.
pub fn rfc3339(ns: u64) -> String {
    if ns == 0 {
        return ZERO_TIME.into();
    }
    time::OffsetDateTime::from_unix_timestamp_nanos(ns as i128)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_else(|| ZERO_TIME.into())
}

/// Docker's `units.HumanDuration`.
pub fn human_duration(seconds: u64) -> String {
    let (m, h, d) = (seconds / 60, seconds / 3600, seconds / 86400);
    match seconds {
        0 => "Less than a second".into(),
        1 => "1 second".into(),
        s if s < 60 => format!("{s} seconds"),
        _ if m == 1 => "About a minute".into(),
        _ if m < 60 => format!("{m} minutes"),
        _ if h == 1 => "About an hour".into(),
        _ if h < 48 => format!("{h} hours"),
        _ if d < 14 => format!("{d} days"),
        _ if d < 60 => format!("{} weeks", d / 7),
        _ if d < 730 => format!("{} months", d / 30),
        _ => format!("{} years", d / 365),
    }
}

/// The `Status` column of `docker ps`.
pub fn status_text(c: &pb::ContainerInfo, now_ns: u64) -> String {
    let ago = |ns: u64| human_duration(now_ns.saturating_sub(ns) / 1_000_000_000);
    match c.state.as_str() {
        "running" => {
            let health = match c.health.as_ref().map(|h| h.status.as_str()) {
                Some("starting") => " (health: starting)",
                Some("healthy") => " (healthy)",
                Some("unhealthy") => " (unhealthy)",
                _ => "",
            };
            format!("Up {}{health}", ago(c.started_ns))
        }
        "exited" => format!("Exited ({}) {} ago", c.exit_code, ago(c.finished_ns)),
        "created" => "Created".into(),
        other => other.to_string(),
    }
}

fn split_ip(ip: &str) -> (String, Option<u32>) {
    match ip.split_once('/') {
        Some((a, len)) => (a.to_string(), len.parse().ok()),
        None => (ip.to_string(), None),
    }
}

/// A container's networks as Docker shows them.
fn endpoints(c: &pb::ContainerInfo) -> BTreeMap<String, EndpointSettings> {
    c.networks
        .iter()
        .map(|n| {
            let mut e = EndpointSettings {
                endpoint_id: format!("{:016x}", n.endpoint_id),
                gateway: n.gateway.clone(),
                mac_address: n.mac.clone(),
                ..EndpointSettings::default()
            };
            for ip in &n.ips {
                let (addr, len) = split_ip(ip);
                if addr.contains(':') {
                    e.global_ipv6_address = addr;
                    e.global_ipv6_prefix_len = len.unwrap_or(64);
                } else {
                    e.ip_address = addr;
                    e.ip_prefix_len = len.unwrap_or(0);
                }
            }
            (n.network.clone(), e)
        })
        .collect()
}

fn port_key(p: &pb::PortMapping) -> String {
    format!("{}/{}", p.container_port, if p.protocol.is_empty() { "tcp" } else { &p.protocol })
}

/// Published ports by container port; `all` is written for a port bound to every address
/// (HostConfig keeps "" as asked, NetworkSettings says "0.0.0.0", as Docker's do).
fn bindings(c: &pb::ContainerInfo, all: &str) -> BTreeMap<String, Vec<PortBinding>> {
    let mut out: BTreeMap<String, Vec<PortBinding>> = BTreeMap::new();
    for p in &c.ports {
        let host_ip = if p.host_ip.is_empty() { all.to_string() } else { p.host_ip.clone() };
        out.entry(port_key(p)).or_default().push(PortBinding { host_ip, host_port: p.host_port.to_string() });
    }
    out
}

/// A container's labels as a map.
pub fn labels(c: &pb::ContainerInfo) -> BTreeMap<String, String> {
    c.labels.iter().map(|l| (l.key.clone(), l.value.clone())).collect()
}

/// The image's id as Docker writes it.
pub fn image_id(id: &str) -> String {
    if id.is_empty() || id.starts_with("sha256:") { id.to_string() } else { format!("sha256:{id}") }
}

/// The earliest time weft reports for a container, standing in for Docker's creation time:
/// its start while it runs, its exit once it has exited (weft keeps no creation time).
fn known_since(c: &pb::ContainerInfo) -> u64 {
    if c.started_ns != 0 { c.started_ns } else { c.finished_ns }
}

/// A row of `docker ps`.
pub fn summary(c: &pb::ContainerInfo, now_ns: u64) -> ContainerSummary {
    ContainerSummary {
        id: c.id.clone(),
        names: vec![format!("/{}", c.name)],
        image: c.image.clone(),
        image_id: image_id(&c.image_id),
        command: c.command.join(" "),
        created: (known_since(c) / 1_000_000_000) as i64,
        ports: c
            .ports
            .iter()
            .map(|p| Port {
                ip: if p.host_ip.is_empty() { "0.0.0.0".into() } else { p.host_ip.clone() },
                private_port: p.container_port,
                public_port: p.host_port,
                kind: if p.protocol.is_empty() { "tcp".into() } else { p.protocol.clone() },
            })
            .collect(),
        labels: labels(c),
        state: c.state.clone(),
        status: status_text(c, now_ns),
        host_config: SummaryHostConfig { network_mode: c.network_mode.clone() },
        network_settings: SummaryNetworkSettings { networks: endpoints(c) },
        mounts: Vec::new(),
    }
}

/// `docker inspect` of a container.
pub fn inspect(c: &pb::ContainerInfo) -> ContainerInspect {
    let (name, retries) = match c.restart_policy.split_once(':') {
        Some((name, n)) => (name.to_string(), n.parse().unwrap_or(0)),
        None if c.restart_policy.is_empty() => ("no".to_string(), 0),
        None => (c.restart_policy.clone(), 0),
    };
    let networks = endpoints(c);
    ContainerInspect {
        id: c.id.clone(),
        created: rfc3339(known_since(c)),
        path: c.command.first().cloned().unwrap_or_default(),
        args: c.command.iter().skip(1).cloned().collect(),
        state: ContainerState {
            status: c.state.clone(),
            running: c.state == "running",
            paused: false,
            restarting: false,
            oom_killed: c.oom_killed,
            dead: false,
            pid: c.pid,
            exit_code: c.exit_code,
            error: c.error.clone(),
            started_at: rfc3339(c.started_ns),
            finished_at: rfc3339(c.finished_ns),
            health: c
                .health
                .as_ref()
                .map(|h| HealthState { status: h.status.clone(), failing_streak: h.failing_streak }),
        },
        image: image_id(&c.image_id),
        name: format!("/{}", c.name),
        restart_count: c.restart_count,
        driver: "weft".into(),
        host_config: InspectHostConfig {
            network_mode: c.network_mode.clone(),
            auto_remove: c.auto_remove,
            restart_policy: RestartPolicy { name, maximum_retry_count: retries },
            port_bindings: bindings(c, ""),
        },
        config: InspectConfig {
            hostname: c.hostname.clone(),
            image: c.image.clone(),
            cmd: c.command.clone(),
            tty: false,
            open_stdin: false,
            labels: labels(c),
            stop_signal: c.stop_signal.clone(),
        },
        network_settings: InspectNetworkSettings {
            ip_address: networks.get("bridge").map(|e| e.ip_address.clone()).unwrap_or_default(),
            ports: bindings(c, "0.0.0.0"),
            networks,
        },
        mounts: Vec::new(),
    }
}

/// A container the client created and has not started: weft runs containers at start, so until
/// then it lives only in the API layer.
pub fn created_info(id: &str, name: &str, run: &pb::RunRequest) -> pb::ContainerInfo {
    pb::ContainerInfo {
        id: id.to_string(),
        name: name.to_string(),
        image: run.image.clone(),
        command: run.entrypoint.iter().chain(&run.command).cloned().collect(),
        state: "created".into(),
        network_mode: if run.network.is_empty() { "bridge".into() } else { run.network.clone() },
        hostname: run.hostname.clone(),
        labels: run.labels.clone(),
        restart_policy: run.restart.clone(),
        ..Default::default()
    }
}

/// One row of `GET /images/json`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ImageSummary {
    /// `sha256:...`.
    pub id: String,
    /// The parent (none in weft).
    pub parent_id: String,
    /// `name:tag` references.
    pub repo_tags: Vec<String>,
    /// Digests: none in weft, written `null` as dockerd writes an image without any.
    pub repo_digests: Option<Vec<String>>,
    /// Unix seconds.
    pub created: i64,
    /// Bytes (not measured: 0).
    pub size: i64,
    /// Shared bytes (-1: not computed, as Docker).
    pub shared_size: i64,
    /// Labels: `null` for none, as dockerd writes it.
    pub labels: Option<BTreeMap<String, String>>,
    /// Containers using it (-1: not computed).
    pub containers: i64,
}

/// Unix seconds of an RFC 3339 time, 0 when unknown.
fn unix_seconds(text: &str) -> i64 {
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map(|t| t.unix_timestamp())
        .unwrap_or(0)
}

/// A row of `docker images`.
pub fn image_summary(i: &pb::ImageInfo) -> ImageSummary {
    ImageSummary {
        id: image_id(&i.id),
        parent_id: String::new(),
        repo_tags: i.names.clone(),
        repo_digests: None,
        created: unix_seconds(&i.created),
        size: 0,
        shared_size: -1,
        labels: None,
        containers: -1,
    }
}

/// `GET /images/{name}/json`.
pub fn image_inspect(i: &pb::ImageInfo) -> serde_json::Value {
    let config: serde_json::Value = serde_json::from_str(&i.config_json).unwrap_or_default();
    serde_json::json!({
        "Id": image_id(&i.id),
        "RepoTags": i.names,
        "RepoDigests": [],
        "Parent": "",
        "Created": if i.created.is_empty() { ZERO_TIME.to_string() } else { i.created.clone() },
        "Os": "linux",
        "Architecture": go_arch(),
        "Size": 0,
        "Config": config,
        "RootFS": {"Type": "layers", "Layers": []},
    })
}

/// The machine's architecture as Go names it.
pub fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// `GET /networks` and `/networks/{id}`.
pub fn network(n: &pb::NetworkInfo) -> serde_json::Value {
    let net = n.network.clone().unwrap_or_default();
    let driver = match pb::NetworkDriver::try_from(net.driver) {
        Ok(pb::NetworkDriver::Overlay) => "overlay",
        _ => "bridge",
    };
    let gateways: BTreeMap<&str, &str> = n.gateways.iter().filter_map(|g| g.split_once('=')).collect();
    let config: Vec<serde_json::Value> = net
        .subnets
        .iter()
        .map(|s| {
            // The first block's gateway is the one a client sees; each host has its own.
            let gateway = gateways.values().next().copied().filter(|g| g.contains(':') == s.contains(':'));
            serde_json::json!({"Subnet": s, "Gateway": gateway.unwrap_or("")})
        })
        .collect();
    let labels: BTreeMap<&str, &str> =
        net.labels.iter().map(|l| (l.key.as_str(), l.value.as_str())).collect();
    serde_json::json!({
        "Name": net.name,
        "Id": network_id(&net),
        "Created": ZERO_TIME,
        "Scope": if driver == "overlay" { "swarm" } else { "local" },
        "Driver": driver,
        "EnableIPv6": net.subnets.iter().any(|s| s.contains(':')),
        "IPAM": {"Driver": "default", "Options": {}, "Config": config},
        "Internal": net.internal,
        "Attachable": true,
        "Ingress": false,
        "ConfigFrom": {"Network": ""},
        "ConfigOnly": false,
        "Containers": {},
        "Options": {},
        "Labels": labels,
    })
}

/// A network's id in Docker's shape (64 hex digits) from weft's numeric id.
pub fn network_id(net: &pb::Network) -> String {
    format!("{:064x}", net.id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_dockers() {
        assert_eq!(human_duration(0), "Less than a second");
        assert_eq!(human_duration(5), "5 seconds");
        assert_eq!(human_duration(90), "About a minute");
        assert_eq!(human_duration(7200), "2 hours");
    }

    #[test]
    fn a_running_container_reads_as_in_docker_ps() {
        let c = pb::ContainerInfo {
            id: "ab".repeat(32),
            name: "web".into(),
            state: "running".into(),
            started_ns: 1_000_000_000,
            command: vec!["sh".into(), "-c".into(), "x".into()],
            networks: vec![pb::ContainerNetwork {
                network: "app".into(),
                ips: vec!["10.1.0.2".into(), "fd00::2".into()],
                ..Default::default()
            }],
            ports: vec![pb::PortMapping {
                host_port: 8080,
                container_port: 80,
                protocol: "tcp".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let s = serde_json::to_value(summary(&c, 6_000_000_000)).unwrap();
        assert_eq!(s["Names"][0], "/web");
        assert_eq!(s["Status"], "Up 5 seconds");
        assert_eq!(s["Command"], "sh -c x");
        assert_eq!(s["Ports"][0]["PublicPort"], 8080);
        assert_eq!(s["NetworkSettings"]["Networks"]["app"]["IPAddress"], "10.1.0.2");
        assert_eq!(s["NetworkSettings"]["Networks"]["app"]["GlobalIPv6Address"], "fd00::2");
        let i = serde_json::to_value(inspect(&c)).unwrap();
        assert_eq!(i["State"]["Running"], true);
        assert_eq!(i["HostConfig"]["PortBindings"]["80/tcp"][0]["HostPort"], "8080");
        assert_eq!(i["HostConfig"]["RestartPolicy"]["Name"], "no");
        assert_eq!(i["State"]["FinishedAt"], ZERO_TIME);
    }
}
