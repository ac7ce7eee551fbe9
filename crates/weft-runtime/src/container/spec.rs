//! What a container is made of, as written to its directory (`config.json`), and what the monitor
//! records about it (`state.json`, `exit.json`).

use std::path::PathBuf;
use std::time::Duration;

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
    /// How it is confined (Docker's security options).
    #[serde(default)]
    pub security: Security,
    /// The signal `stop` sends first (the image's STOPSIGNAL or `--stop-signal`); SIGTERM when
    /// unset.
    #[serde(default)]
    pub stop_signal: Option<i32>,
    /// The health check the agent runs in the container (the image's HEALTHCHECK or `--health-*`).
    #[serde(default)]
    pub healthcheck: Option<HealthConfig>,
}

/// A container's health check, as Docker's `Healthcheck` config: a command run in the container
/// every `interval`, failed when it exits non-zero or outlives `timeout`; `retries` failures in a
/// row make the container unhealthy, except failures within `start_period` of its start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthConfig {
    /// The command: `["CMD", arg...]` run as is, or `["CMD-SHELL", line]` run by `/bin/sh -c`.
    pub test: Vec<String>,
    /// Between the end of one check and the start of the next.
    pub interval: Duration,
    /// How long one check may run.
    pub timeout: Duration,
    /// How long after the start failures do not count.
    pub start_period: Duration,
    /// Failures in a row that make the container unhealthy.
    pub retries: u32,
}

impl HealthConfig {
    /// Docker's defaults: every 30 s, 30 s timeout, no start period, 3 retries.
    pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);
    /// The default timeout of one check.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
    /// The default number of failures in a row before unhealthy.
    pub const DEFAULT_RETRIES: u32 = 3;

    /// The argv that runs the check inside the container.
    pub fn argv(&self) -> Vec<String> {
        match self.test.split_first() {
            Some((kind, rest)) if kind == "CMD-SHELL" => {
                vec!["/bin/sh".into(), "-c".into(), rest.join(" ")]
            }
            Some((kind, rest)) if kind == "CMD" => rest.to_vec(),
            _ => Vec::new(),
        }
    }
}

/// Which seccomp filter a container runs under.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SeccompMode {
    /// Docker's default profile.
    #[default]
    Default,
    /// No filter (`--security-opt seccomp=unconfined`).
    Unconfined,
    /// A profile in Docker's JSON format (`--security-opt seccomp=PROFILE.json`), as text.
    Profile(String),
}

/// A host device given to a container (`--device HOST[:CONTAINER[:rwm]]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceMapping {
    /// The device node on the host.
    pub host: PathBuf,
    /// Where it appears inside the container (under /dev).
    pub container: PathBuf,
    /// What the container may do with it: any of `r`, `w`, `m`.
    pub access: String,
}

/// A tmpfs mounted in the container (`--tmpfs PATH[:OPTIONS]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TmpfsMount {
    /// Where, inside the container.
    pub target: PathBuf,
    /// Mount options as Docker takes them (`size=64m,mode=1777,ro,exec`), empty for defaults.
    pub options: String,
}

/// A container's confinement. The default is Docker's: its capability set, its seccomp profile,
/// masked and read-only /proc and /sys paths, its device allow-list; weft adds no_new_privs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Security {
    /// `--privileged`: every capability and device, no seccomp, no masked or read-only paths,
    /// writable /sys and /proc/sys. Gives the host away.
    pub privileged: bool,
    /// `--cap-add`.
    pub cap_add: Vec<String>,
    /// `--cap-drop`.
    pub cap_drop: Vec<String>,
    /// The seccomp filter.
    pub seccomp: SeccompMode,
    /// `--security-opt no-new-privileges=false`: let setuid binaries and file capabilities gain
    /// privileges (Docker's default; weft sets no_new_privs unless told so).
    pub allow_new_privileges: bool,
    /// `--device`.
    pub devices: Vec<DeviceMapping>,
    /// `--tmpfs`.
    pub tmpfs: Vec<TmpfsMount>,
}

impl ContainerSpec {
    /// Whether `reference` names this container: its name, its id, or a prefix of its id of at
    /// least 4 characters (Docker's rule; [`crate::container::Runtime::find`] applies it to every
    /// container, `--network container:` references are matched by it too).
    pub fn answers_to(&self, reference: &str) -> bool {
        self.name == reference
            || self.id == reference
            || (reference.len() >= 4 && self.id.starts_with(reference))
    }

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
            security: Security::default(),
            stop_signal: None,
            healthcheck: None,
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
    /// The init's start time in clock ticks after boot (/proc/PID/stat field 22), so a pid the
    /// kernel has reused for another process (after a reboot) is never taken for the container.
    #[serde(default)]
    pub pid_start: u64,
    /// The same for the monitor.
    #[serde(default)]
    pub monitor_start: u64,
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
