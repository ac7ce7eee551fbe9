//! cgroups v1 and v2: create a container's group, set memory, CPU and pids limits and device
//! rules, add processes, read stats and OOM kills, remove.
//!
//! The version is detected from the mount: v2 when `cgroup.controllers` sits at the root, v1
//! otherwise (one hierarchy per controller, `cpu` often joined with `cpuacct`). Every path is
//! relative to a root given by the caller, so tests run the v2 code against fixture directories.

use std::fs;
use std::path::{Path, PathBuf};

use crate::devices::{self, DeviceRule};
use crate::{Result, RuntimeError};

/// The CFS period weft uses for CPU quotas (100 ms, as Docker).
pub const CPU_PERIOD_US: u64 = 100_000;

/// Which cgroup layout a root holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hierarchy {
    /// Unified hierarchy at the root.
    V2(PathBuf),
    /// One hierarchy per controller under the root (`memory/`, `cpu/`, `pids/`, ...).
    V1(PathBuf),
}

impl Hierarchy {
    /// Detects the layout under `root` (normally `/sys/fs/cgroup`).
    pub fn detect(root: impl Into<PathBuf>) -> Hierarchy {
        let root = root.into();
        if root.join("cgroup.controllers").is_file() { Hierarchy::V2(root) } else { Hierarchy::V1(root) }
    }
}

/// Resource limits of a container (Docker's `--memory`, `--cpus`, `--pids-limit`).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Limits {
    /// Memory limit in bytes (swap is not allowed beyond it).
    pub memory: Option<u64>,
    /// CPUs, e.g. 0.5 for half a CPU.
    pub cpus: Option<f64>,
    /// Maximum number of tasks.
    pub pids: Option<u64>,
}

impl Limits {
    /// Refuses nonsensical limits before any file is written.
    pub fn validate(&self) -> Result<()> {
        if let Some(m) = self.memory
            && m < 6 * 1024 * 1024
        {
            return Err(RuntimeError::invalid(
                "memory limit",
                m.to_string(),
                "at least 6 MiB (Docker's minimum)",
            ));
        }
        if let Some(c) = self.cpus
            && !(c > 0.0 && c.is_finite() && c <= 1024.0)
        {
            return Err(RuntimeError::invalid("cpus", c.to_string(), "must be above 0 and at most 1024"));
        }
        if self.pids == Some(0) {
            return Err(RuntimeError::invalid("pids limit", "0", "must be at least 1"));
        }
        Ok(())
    }

    fn quota_us(&self) -> Option<u64> {
        self.cpus.map(|c| ((c * CPU_PERIOD_US as f64).round() as u64).max(1000))
    }
}

/// Usage figures for `weft stats`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Memory in use, bytes.
    pub memory_bytes: u64,
    /// CPU time used, nanoseconds.
    pub cpu_ns: u64,
    /// Tasks.
    pub pids: u64,
    /// Times the OOM killer killed a task of the group.
    pub oom_kills: u64,
}

/// One container's cgroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cgroup {
    hierarchy: Hierarchy,
    /// Path below each hierarchy root, e.g. `weft/3f2a...`.
    rel: PathBuf,
    /// v1 only: whether the `devices` hierarchy is mounted, so the group has a directory there.
    v1_devices: bool,
}

/// The v1 controllers every group is created in.
const V1_CONTROLLERS: &[&str] = &["memory", "cpu", "cpuacct", "pids"];

/// The v1 controller that holds device rules, used when mounted.
const V1_DEVICES: &str = "devices";

fn write(path: &Path, value: &str) -> Result<()> {
    fs::write(path, value).map_err(RuntimeError::io("write", path))
}

fn read_u64(path: &Path) -> Result<u64> {
    let text = fs::read_to_string(path).map_err(RuntimeError::io("read", path))?;
    text.trim()
        .parse()
        .map_err(|_| RuntimeError::invalid("cgroup value", text.trim(), format!("in {}", path.display())))
}

/// The value of `key` in a flat-keyed file (`oom_kill 3`, `usage_usec 12`).
fn keyed(path: &Path, key: &str) -> Result<u64> {
    let text = fs::read_to_string(path).map_err(RuntimeError::io("read", path))?;
    Ok(text
        .lines()
        .filter_map(|l| l.split_once(' '))
        .find(|(k, _)| *k == key)
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0))
}

impl Cgroup {
    /// Creates (or reuses) the group `rel` and applies `limits`.
    pub fn create(hierarchy: &Hierarchy, rel: impl Into<PathBuf>, limits: &Limits) -> Result<Cgroup> {
        limits.validate()?;
        let rel = rel.into();
        if rel.is_absolute() || rel.components().any(|c| matches!(c, std::path::Component::ParentDir)) {
            return Err(RuntimeError::invalid(
                "cgroup path",
                rel.display().to_string(),
                "must be relative, without '..'",
            ));
        }
        let v1_devices = match hierarchy {
            Hierarchy::V1(root) => root.join(V1_DEVICES).join("devices.allow").is_file(),
            Hierarchy::V2(_) => false,
        };
        let group = Cgroup { hierarchy: hierarchy.clone(), rel, v1_devices };
        match hierarchy {
            Hierarchy::V2(root) => group.create_v2(root, limits)?,
            Hierarchy::V1(root) => group.create_v1(root, limits)?,
        }
        Ok(group)
    }

    fn create_v2(&self, root: &Path, limits: &Limits) -> Result<()> {
        // Enable the controllers on every ancestor, so the leaf gets their files.
        let mut dir = root.to_path_buf();
        for part in self.rel.iter() {
            write(&dir.join("cgroup.subtree_control"), "+memory +cpu +pids")?;
            dir.push(part);
            fs::create_dir_all(&dir).map_err(RuntimeError::io("create cgroup", &dir))?;
        }
        if let Some(m) = limits.memory {
            write(&dir.join("memory.max"), &m.to_string())?;
            write(&dir.join("memory.swap.max"), "0")?;
        }
        if let Some(q) = limits.quota_us() {
            write(&dir.join("cpu.max"), &format!("{q} {CPU_PERIOD_US}"))?;
        }
        if let Some(p) = limits.pids {
            write(&dir.join("pids.max"), &p.to_string())?;
        }
        Ok(())
    }

    fn create_v1(&self, root: &Path, limits: &Limits) -> Result<()> {
        for dir in self.dirs() {
            fs::create_dir_all(&dir).map_err(RuntimeError::io("create cgroup", &dir))?;
        }
        let memory = root.join("memory").join(&self.rel);
        if let Some(m) = limits.memory {
            write(&memory.join("memory.limit_in_bytes"), &m.to_string())?;
            let memsw = memory.join("memory.memsw.limit_in_bytes");
            if memsw.exists() {
                write(&memsw, &m.to_string())?;
            }
        }
        if let Some(q) = limits.quota_us() {
            let cpu = root.join("cpu").join(&self.rel);
            write(&cpu.join("cpu.cfs_period_us"), &CPU_PERIOD_US.to_string())?;
            write(&cpu.join("cpu.cfs_quota_us"), &q.to_string())?;
        }
        if let Some(p) = limits.pids {
            write(&root.join("pids").join(&self.rel).join("pids.max"), &p.to_string())?;
        }
        Ok(())
    }

    /// The layout the group lives in.
    pub fn hierarchy(&self) -> &Hierarchy {
        &self.hierarchy
    }

    /// Every directory of the group (one for v2, one per controller for v1: memory, cpu,
    /// cpuacct, pids, then devices when that hierarchy is mounted).
    pub fn dirs(&self) -> Vec<PathBuf> {
        match &self.hierarchy {
            Hierarchy::V2(root) => vec![root.join(&self.rel)],
            Hierarchy::V1(root) => V1_CONTROLLERS
                .iter()
                .chain(self.v1_devices.then_some(&V1_DEVICES))
                .map(|c| root.join(c).join(&self.rel))
                .collect(),
        }
    }

    /// Restricts the device nodes the group's processes may open or create to `rules` (e.g.
    /// [`DeviceRule::docker_default`]): written to the `devices` controller for v1, a BPF device
    /// program attached to the group for v2 (replacing one attached before). Call it before a
    /// process joins: under v1 the rules are reset first.
    pub fn set_devices(&self, rules: &[DeviceRule]) -> Result<()> {
        match &self.hierarchy {
            Hierarchy::V2(root) => devices::attach_v2(&root.join(&self.rel), rules),
            Hierarchy::V1(root) => {
                let dir = root.join(V1_DEVICES).join(&self.rel);
                if !self.v1_devices {
                    return Err(RuntimeError::Devices {
                        path: dir,
                        reason: "the v1 devices controller is not mounted".into(),
                    });
                }
                devices::apply_v1(&dir, rules)
            }
        }
    }

    /// The `cgroup.procs` files a new process must be written to, so a child can join its group
    /// between fork and exec without allocating.
    pub fn procs_files(&self) -> Vec<PathBuf> {
        self.dirs().into_iter().map(|d| d.join("cgroup.procs")).collect()
    }

    /// Moves process `pid` into the group.
    pub fn add_process(&self, pid: u32) -> Result<()> {
        for file in self.procs_files() {
            write(&file, &pid.to_string())?;
        }
        Ok(())
    }

    /// The processes in the group.
    pub fn processes(&self) -> Result<Vec<u32>> {
        let file = self.procs_files().remove(0);
        let text = fs::read_to_string(&file).map_err(RuntimeError::io("read", &file))?;
        Ok(text.lines().filter_map(|l| l.trim().parse().ok()).collect())
    }

    /// Current usage.
    pub fn stats(&self) -> Result<Stats> {
        match &self.hierarchy {
            Hierarchy::V2(root) => {
                let dir = root.join(&self.rel);
                Ok(Stats {
                    memory_bytes: read_u64(&dir.join("memory.current"))?,
                    cpu_ns: keyed(&dir.join("cpu.stat"), "usage_usec")? * 1000,
                    pids: read_u64(&dir.join("pids.current"))?,
                    oom_kills: keyed(&dir.join("memory.events"), "oom_kill")?,
                })
            }
            Hierarchy::V1(root) => {
                let memory = root.join("memory").join(&self.rel);
                Ok(Stats {
                    memory_bytes: read_u64(&memory.join("memory.usage_in_bytes"))?,
                    cpu_ns: read_u64(&root.join("cpuacct").join(&self.rel).join("cpuacct.usage"))?,
                    pids: read_u64(&root.join("pids").join(&self.rel).join("pids.current"))?,
                    oom_kills: keyed(&memory.join("memory.oom_control"), "oom_kill")?,
                })
            }
        }
    }

    /// Removes the group (it must hold no process).
    pub fn remove(&self) -> Result<()> {
        for dir in self.dirs() {
            match fs::remove_dir(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(RuntimeError::io("remove cgroup", &dir)(e)),
            }
        }
        Ok(())
    }
}

/// Paths of `cgroup.procs` files prepared for [`join_self`].
#[derive(Debug, Clone)]
pub struct JoinPaths(Vec<std::ffi::CString>);

impl Cgroup {
    /// The group's `cgroup.procs` files in a form a child can use between fork and exec.
    pub fn join_paths(&self) -> JoinPaths {
        use std::os::unix::ffi::OsStrExt;
        JoinPaths(
            self.procs_files()
                .iter()
                .map(|p| std::ffi::CString::new(p.as_os_str().as_bytes()).expect("cgroup paths have no NUL"))
                .collect(),
        )
    }
}

/// Moves the calling process into the group by writing "0" to each `cgroup.procs`. Only
/// async-signal-safe calls (open, write, close): safe in a `pre_exec` hook.
pub fn join_self(paths: &JoinPaths) -> std::io::Result<()> {
    for path in &paths.0 {
        // SAFETY: a valid NUL-terminated path; the fd is closed on every path out.
        unsafe {
            let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let n = libc::write(fd, b"0".as_ptr().cast(), 1);
            libc::close(fd);
            if n != 1 {
                return Err(std::io::Error::last_os_error());
            }
        }
    }
    Ok(())
}
