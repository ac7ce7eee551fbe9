//! What a container is made of, as written to its directory (`config.json`), and what the monitor
//! records about it (`state.json`, `exit.json`).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::cgroup::Limits;

/// Which network namespace a container gets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NetworkMode {
    /// A new namespace with only loopback (Docker's `none`).
    None,
    /// The host's namespace.
    Host,
    /// An existing namespace (a bind-mounted netns, or another container's `/proc/PID/ns/net`).
    Join(PathBuf),
}

/// A bind mount (`-v host:ctr[:ro]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BindMount {
    /// Host path.
    pub source: PathBuf,
    /// Path inside the container.
    pub target: PathBuf,
    /// Mounted read-only.
    pub readonly: bool,
}

/// A container's configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerSpec {
    /// Id (64 hex characters).
    pub id: String,
    /// Name.
    pub name: String,
    /// Image id it was created from.
    pub image: String,
    /// The image's layer directories, bottom first.
    pub layers: Vec<PathBuf>,
    /// The command: entrypoint and arguments.
    pub argv: Vec<String>,
    /// `KEY=value` pairs.
    pub env: Vec<String>,
    /// Working directory inside the container.
    pub cwd: String,
    /// `uid[:gid]` or `name[:group]`; empty for root.
    pub user: String,
    /// Host name.
    pub hostname: String,
    /// Network namespace.
    pub network: NetworkMode,
    /// Resource limits.
    pub limits: SpecLimits,
    /// Bind mounts.
    pub mounts: Vec<BindMount>,
    /// Mount the root file system read-only.
    pub readonly_rootfs: bool,
    /// Lines of /etc/hosts beside the defaults.
    pub hosts: Vec<String>,
    /// Name servers for /etc/resolv.conf.
    pub dns: Vec<String>,
    /// Root of the cgroup mount (normally /sys/fs/cgroup).
    pub cgroup_root: PathBuf,
    /// The container's cgroup below it (normally `weft-<id>`).
    pub cgroup_path: PathBuf,
}

impl ContainerSpec {
    /// A spec running `argv` on `layers` with Docker's defaults: generated id, name and host
    /// name, root user in `/`, network `none`, no limits, mounts or extra hosts, the host's
    /// resolv.conf, and the cgroup `weft-<id>` under /sys/fs/cgroup.
    pub fn new(layers: Vec<PathBuf>, argv: Vec<String>) -> ContainerSpec {
        ContainerSpec {
            id: String::new(),
            name: String::new(),
            image: String::new(),
            layers,
            argv,
            env: Vec::new(),
            cwd: "/".into(),
            user: String::new(),
            hostname: String::new(),
            network: NetworkMode::None,
            limits: SpecLimits::default(),
            mounts: Vec::new(),
            readonly_rootfs: false,
            hosts: Vec::new(),
            dns: Vec::new(),
            cgroup_root: PathBuf::new(),
            cgroup_path: PathBuf::new(),
        }
    }
}

/// Limits in serialisable form.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct SpecLimits {
    /// Memory, bytes.
    pub memory: Option<u64>,
    /// CPUs.
    pub cpus: Option<f64>,
    /// Tasks.
    pub pids: Option<u64>,
}

impl From<SpecLimits> for Limits {
    fn from(l: SpecLimits) -> Limits {
        Limits { memory: l.memory, cpus: l.cpus, pids: l.pids }
    }
}

/// Written by the monitor once the container's init runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunState {
    /// Host pid of the container's init (PID 1 inside).
    pub pid: u32,
    /// Host pid of the monitor.
    pub monitor_pid: u32,
    /// Start time, ns since the epoch.
    pub started_ns: u64,
}

/// Written by the monitor when the container has exited.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitState {
    /// Exit code as Docker reports it (128+signal when killed).
    pub code: i32,
    /// The signal that killed init's workload, if any.
    pub signal: Option<i32>,
    /// The kernel's OOM killer killed a task of the container.
    pub oom_killed: bool,
    /// Why it could not start, if it did not.
    pub error: Option<String>,
    /// Exit time, ns since the epoch.
    pub finished_ns: u64,
}

/// One line of a container's log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    /// Time it was read, ns since the epoch.
    pub ts: u64,
    /// `stdout` or `stderr`.
    pub stream: String,
    /// The line, without its newline.
    pub line: String,
}
