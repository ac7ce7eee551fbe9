//! The runtime API: containers live in `<state>/containers/<id>/` (config, state, exit status,
//! log, root file system dirs), so a restarted agent finds every container again, running or not.

use std::fs;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::confine::SECCOMP_FILE;
use super::exec::ExecOptions;
use super::monitor::write_json;
use super::procfs::process_start;
use super::spec::{ContainerSpec, ExitState, LogLine, NetworkMode, RunState, SeccompMode};
use super::watch::{ChangeWatch, ExitNotice};
use crate::cgroup::{Cgroup, Hierarchy, Limits, Stats};
use crate::{Result, RuntimeError};

/// Where a container stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContainerStatus {
    /// Created, never started.
    Created,
    /// Its init runs.
    Running(RunState),
    /// It has exited.
    Exited(ExitState),
}

/// How a caller waits for a container's directory to change (its monitor wrote `state.json` or
/// `exit.json`): woken by its inotify watch at once, or, when no watch could be made, after a
/// short sleep. Never longer than [`DirWaiter::MAX_NAP`] at a time, so a monitor that died
/// without writing anything is noticed as well (its status is read again after each wake).
struct DirWaiter {
    watch: Option<ChangeWatch>,
}

impl DirWaiter {
    /// The longest single wait: how late a vanished monitor is noticed.
    const MAX_NAP: Duration = Duration::from_millis(50);
    /// The nap without a watch.
    const NAP_UNWATCHED: Duration = Duration::from_millis(2);

    /// A waiter on `dir`; made before the change it waits for can happen, so none is missed.
    fn new(dir: &Path) -> DirWaiter {
        DirWaiter { watch: ChangeWatch::on(dir).ok() }
    }

    /// Returns after the next change, `MAX_NAP`, or `deadline`, whichever comes first.
    fn wait(&mut self, deadline: Option<Instant>) {
        let mut nap = Self::MAX_NAP;
        if let Some(deadline) = deadline {
            nap = nap.min(deadline.saturating_duration_since(Instant::now()));
        }
        match &self.watch {
            Some(watch) => watch.wait(nap),
            None => std::thread::sleep(nap.min(Self::NAP_UNWATCHED)),
        }
    }
}

/// The longest a wait for an exit sleeps on its pidfd before it looks again (a safety net only:
/// the pidfd wakes it at the exit).
const EXIT_NAP: Duration = Duration::from_secs(1);

/// The container runtime of one host.
#[derive(Debug, Clone)]
pub struct Runtime {
    dir: PathBuf,
    shim: PathBuf,
    seccomp_cache: std::sync::Arc<SeccompCache>,
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Option<T> {
    fs::read(path).ok().and_then(|b| serde_json::from_slice(&b).ok())
}

fn valid_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_alphanumeric())
        && bytes.all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
        && name.len() <= 128
}

/// Whether `pid` is still the process that started at `start` (0: not recorded, pid only).
fn alive(pid: u32, start: u64) -> bool {
    if start != 0 {
        return process_start(pid) == Some(start);
    }
    // SAFETY: signal 0 only checks that the process exists.
    unsafe { libc::kill(pid as i32, 0) == 0 }
}

/// Refuses a path inside the container that is relative or climbs with `..`.
fn check_container_path(what: &'static str, path: &Path) -> Result<()> {
    if !path.is_absolute() || path.components().any(|c| matches!(c, std::path::Component::ParentDir)) {
        return Err(RuntimeError::invalid(
            what,
            path.display().to_string(),
            "the path inside the container must be absolute and must not contain '..'",
        ));
    }
    Ok(())
}

/// Compiled seccomp programs by what they were compiled from (profile, capabilities), for the
/// kernel this runtime runs on: libseccomp takes ~20 ms for Docker's profile, which would
/// otherwise be paid by every container.
#[derive(Debug)]
struct SeccompCache {
    /// The running kernel's (major, minor), read once: rules depend on it, it does not change.
    kernel: (u32, u32),
    programs: std::sync::Mutex<std::collections::HashMap<String, Vec<u8>>>,
}

/// Checks a spec's security options and compiles its seccomp program (None: unconfined), or
/// takes it from `cache` when the same profile, capabilities and kernel were compiled before.
fn compile_security(spec: &ContainerSpec, cache: &SeccompCache) -> Result<Option<Vec<u8>>> {
    use crate::security::{caps, seccomp};
    let sec = &spec.security;
    let names = caps::effective(sec.privileged, &sec.cap_add, &sec.cap_drop)?;
    for device in &sec.devices {
        use std::os::unix::fs::FileTypeExt;
        let meta = fs::metadata(&device.host).map_err(RuntimeError::io("--device", &device.host))?;
        if !(meta.file_type().is_char_device() || meta.file_type().is_block_device()) {
            return Err(RuntimeError::invalid(
                "device",
                device.host.display().to_string(),
                "not a character or block device",
            ));
        }
        check_container_path("device path", &device.container)?;
        if device.access.is_empty() || !device.access.chars().all(|c| "rwm".contains(c)) {
            return Err(RuntimeError::invalid(
                "device permissions",
                &device.access,
                "expected any of r, w, m",
            ));
        }
    }
    for tmpfs in &sec.tmpfs {
        check_container_path("tmpfs path", &tmpfs.target)?;
    }
    if sec.privileged || sec.seccomp == SeccompMode::Unconfined {
        return Ok(None);
    }
    // The cache is asked first: a hit builds or parses no profile at all.
    let key = serde_json::json!([sec.seccomp, names]).to_string();
    if let Some(bpf) = cache.programs.lock().ok().and_then(|c| c.get(&key).cloned()) {
        return Ok(Some(bpf));
    }
    let profile = match &sec.seccomp {
        SeccompMode::Profile(text) => seccomp::Profile::from_json(text.as_bytes())
            .map_err(|e| RuntimeError::invalid("seccomp profile", "", e.to_string()))?,
        _ => seccomp::Profile::docker_default(),
    };
    let kernel = cache.kernel;
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let bpf = profile
        .resolve(&names, kernel)
        .and_then(|r| r.compile())
        .map_err(|e| RuntimeError::invalid("seccomp profile", "", e.to_string()))?
        .to_bytes();
    if let Ok(mut c) = cache.programs.lock() {
        c.insert(key, bpf.clone());
    }
    Ok(Some(bpf))
}

impl Runtime {
    /// A runtime keeping containers under `state_dir/containers`, starting monitors with the shim
    /// binary at `shim`.
    pub fn new(state_dir: &Path, shim: impl Into<PathBuf>) -> Result<Runtime> {
        let dir = state_dir.join("containers");
        fs::create_dir_all(&dir).map_err(RuntimeError::io("create", &dir))?;
        // Containers' directories hold their logs, configs and root file systems: root only.
        fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .map_err(RuntimeError::io("set permissions of", &dir))?;
        let kernel = crate::security::seccomp::host_kernel()
            .map_err(|e| RuntimeError::invalid("kernel release", "", e.to_string()))?;
        let seccomp_cache = std::sync::Arc::new(SeccompCache { kernel, programs: Default::default() });
        Ok(Runtime { dir, shim: shim.into(), seccomp_cache })
    }

    fn container_dir(&self, id: &str) -> PathBuf {
        self.dir.join(id)
    }

    /// The id of a container given by id, name or unique id prefix.
    fn resolve(&self, reference: &str) -> Result<String> {
        let valid_id = reference.len() == 64 && reference.bytes().all(|b| b.is_ascii_hexdigit());
        if valid_id && self.container_dir(reference).join("config.json").exists() {
            return Ok(reference.to_string());
        }
        Ok(self.find(reference)?.id)
    }

    /// A fresh container id: 64 hex characters from the kernel's random source.
    pub fn new_id() -> Result<String> {
        let mut bytes = [0u8; 32];
        fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut bytes))
            .map_err(RuntimeError::io("read", "/dev/urandom"))?;
        Ok(hex::encode(bytes))
    }

    /// Every container, by id.
    pub fn list(&self) -> Result<Vec<(ContainerSpec, ContainerStatus)>> {
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(RuntimeError::io("list", &self.dir))?.flatten() {
            if let Some(spec) = read_json::<ContainerSpec>(&entry.path().join("config.json")) {
                let status = self.status(&spec.id)?;
                out.push((spec, status));
            }
        }
        out.sort_by(|a, b| a.0.id.cmp(&b.0.id));
        Ok(out)
    }

    /// A container by name, id or unique id prefix (at least 4 characters).
    pub fn find(&self, reference: &str) -> Result<ContainerSpec> {
        let all = self.list()?;
        let hits: Vec<_> = all.iter().filter(|(s, _)| s.answers_to(reference)).collect();
        match hits.as_slice() {
            [(spec, _)] => Ok(spec.clone()),
            [] => Err(RuntimeError::NoSuchContainer(reference.into())),
            _ => Err(RuntimeError::invalid(
                "container reference",
                reference,
                "matches more than one container",
            )),
        }
    }

    /// Records a new container. Checks everything first; a refused spec leaves nothing behind.
    pub fn create(&self, mut spec: ContainerSpec) -> Result<ContainerSpec> {
        if spec.id.is_empty() {
            spec.id = Runtime::new_id()?;
        }
        if spec.id.len() != 64 || !spec.id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(RuntimeError::invalid("container id", &spec.id, "expected 64 hex characters"));
        }
        if spec.name.is_empty() {
            spec.name = spec.id[..12].to_string();
        }
        if !valid_name(&spec.name) {
            return Err(RuntimeError::invalid(
                "container name",
                &spec.name,
                "only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed",
            ));
        }
        if self.list()?.iter().any(|(s, _)| s.name == spec.name) {
            return Err(RuntimeError::NameInUse(spec.name));
        }
        if spec.argv.is_empty() {
            return Err(RuntimeError::invalid(
                "command",
                "",
                "no command: the image has no Cmd or Entrypoint and none was given",
            ));
        }
        Limits::from(spec.limits).validate()?;
        if spec.layers.is_empty() || spec.layers.iter().any(|l| !l.is_dir()) {
            return Err(RuntimeError::invalid(
                "image layers",
                format!("{:?}", spec.layers),
                "missing layer directories",
            ));
        }
        if spec.hostname.is_empty() {
            spec.hostname = spec.id[..12].to_string();
        }
        if spec.hostname.len() > 64
            || !spec.hostname.bytes().all(|b| b.is_ascii_alphanumeric() || b"-.".contains(&b))
        {
            return Err(RuntimeError::invalid(
                "hostname",
                &spec.hostname,
                "at most 64 letters, digits, - and .",
            ));
        }
        for m in &spec.mounts {
            if !m.source.is_absolute() || !m.target.is_absolute() || !m.source.exists() {
                return Err(RuntimeError::invalid(
                    "volume",
                    format!("{}:{}", m.source.display(), m.target.display()),
                    "both paths must be absolute and the host path must exist",
                ));
            }
            check_container_path("volume target", &m.target)?;
        }
        let seccomp = compile_security(&spec, &self.seccomp_cache)?;
        if let NetworkMode::Join(path) = &spec.network
            && !path.exists()
        {
            return Err(RuntimeError::invalid(
                "network namespace",
                path.display().to_string(),
                "does not exist",
            ));
        }
        if spec.cgroup_root.as_os_str().is_empty() {
            spec.cgroup_root = PathBuf::from("/sys/fs/cgroup");
        }
        if spec.cgroup_path.as_os_str().is_empty() {
            spec.cgroup_path = PathBuf::from(format!("weft-{}", spec.id));
        }
        let dir = self.container_dir(&spec.id);
        let made = (|| -> std::io::Result<()> {
            for sub in ["rootfs/upper", "rootfs/work", "rootfs/merged"] {
                fs::create_dir_all(dir.join(sub))?;
            }
            fs::write(dir.join("hosts"), hosts_file(&spec.hosts))?;
            fs::write(dir.join("hostname"), format!("{}\n", spec.hostname))?;
            let resolv = if spec.dns.is_empty() {
                fs::read_to_string("/etc/resolv.conf").unwrap_or_default()
            } else {
                resolv_file(&spec.dns)
            };
            fs::write(dir.join("resolv.conf"), resolv)?;
            if let Some(bpf) = &seccomp {
                fs::write(dir.join(SECCOMP_FILE), bpf)?;
            }
            write_json(&dir.join("config.json"), &spec, weft_fs::Durability::Durable)
                .map_err(std::io::Error::other)
        })();
        if let Err(e) = made {
            let _ = fs::remove_dir_all(&dir);
            return Err(RuntimeError::io("create container", &dir)(e));
        }
        Ok(spec)
    }

    /// Rewrites the container's `/etc/hosts` (localhost lines, then `hosts`) and, when `dns` is
    /// given, its `/etc/resolv.conf`: its addresses changed while it was stopped (a reboot). The
    /// files are bind-mounted from its directory at every start.
    pub fn rewrite_name_files(&self, id: &str, hosts: &[String], dns: Option<&[String]>) -> Result<()> {
        let id = &self.resolve(id)?;
        let dir = self.container_dir(id);
        let write = |name: &str, text: String| {
            fs::write(dir.join(name), text).map_err(RuntimeError::io("rewrite", dir.join(name)))
        };
        write("hosts", hosts_file(hosts))?;
        if let Some(dns) = dns {
            write("resolv.conf", resolv_file(dns))?;
        }
        Ok(())
    }

    /// Where the container stands, from its directory.
    pub fn status(&self, id: &str) -> Result<ContainerStatus> {
        let id = &self.resolve(id)?;
        let dir = self.container_dir(id);
        if !dir.join("config.json").exists() {
            return Err(RuntimeError::NoSuchContainer(id.into()));
        }
        if let Some(exit) = read_json::<ExitState>(&dir.join("exit.json")) {
            return Ok(ContainerStatus::Exited(exit));
        }
        match read_json::<RunState>(&dir.join("state.json")) {
            // Still running, or just exited with the monitor about to record it.
            Some(run) if alive(run.pid, run.pid_start) || alive(run.monitor_pid, run.monitor_start) => {
                Ok(ContainerStatus::Running(run))
            }
            // The monitor would have written exit.json; its loss is reported, not hidden.
            Some(_) => Ok(ContainerStatus::Exited(ExitState {
                code: -1,
                signal: None,
                oom_killed: false,
                error: Some("the container's monitor disappeared without recording an exit status".into()),
                finished_ns: 0,
            })),
            None => Ok(ContainerStatus::Created),
        }
    }

    /// Starts (or restarts) a container and returns once its workload runs.
    pub fn start(&self, id: &str) -> Result<RunState> {
        let id = &self.resolve(id)?;
        if let ContainerStatus::Running(_) = self.status(id)? {
            return Err(RuntimeError::Running(id.into()));
        }
        let dir = self.container_dir(id);
        let _ = fs::remove_file(dir.join("exit.json"));
        let _ = fs::remove_file(dir.join("state.json"));
        // Watching before the monitor starts: its records are seen the moment they are written.
        let mut waiter = DirWaiter::new(&dir);
        let status = Command::new(&self.shim)
            .arg("monitor")
            .arg(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map_err(RuntimeError::io("start monitor", &self.shim))?;
        if !status.success() {
            return Err(RuntimeError::StartFailed {
                id: id.into(),
                reason: format!("monitor exited with {status}"),
                code: 125,
            });
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(exit) = read_json::<ExitState>(&dir.join("exit.json")) {
                if let Some(reason) = exit.error {
                    return Err(RuntimeError::StartFailed { id: id.into(), reason, code: exit.code });
                }
                // It ran and already finished: report its run anyway.
                return read_json::<RunState>(&dir.join("state.json")).ok_or_else(|| {
                    RuntimeError::StartFailed {
                        id: id.into(),
                        reason: "exited before it ran".into(),
                        code: 125,
                    }
                });
            }
            if let Some(run) = read_json::<RunState>(&dir.join("state.json")) {
                return Ok(run);
            }
            if Instant::now() > deadline {
                return Err(RuntimeError::Timeout(id.into()));
            }
            waiter.wait(Some(deadline));
        }
    }

    /// Sends `signal` to the container's init, which forwards it to the workload.
    pub fn kill(&self, id: &str, signal: i32) -> Result<()> {
        let id = &self.resolve(id)?;
        match self.status(id)? {
            ContainerStatus::Running(run) => {
                // SAFETY: sending a signal to a pid we recorded.
                if unsafe { libc::kill(run.pid as i32, signal) } != 0 {
                    let err = std::io::Error::last_os_error();
                    if err.raw_os_error() == Some(libc::ESRCH) {
                        return Ok(()); // already exiting
                    }
                    return Err(RuntimeError::io("signal", format!("pid {}", run.pid))(
                        std::io::Error::last_os_error(),
                    ));
                }
                Ok(())
            }
            _ => Err(RuntimeError::NotRunning(id.into())),
        }
    }

    /// Waits until the container has exited (or `timeout`).
    pub fn wait(&self, id: &str, timeout: Option<Duration>) -> Result<ExitState> {
        let id = &self.resolve(id)?;
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            let run = match self.status(id)? {
                ContainerStatus::Exited(exit) => return Ok(exit),
                ContainerStatus::Created => return Err(RuntimeError::NotRunning(id.into())),
                ContainerStatus::Running(run) => run,
            };
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            if left.is_some_and(|l| l.is_zero()) {
                return Err(RuntimeError::Timeout(id.into()));
            }
            // The monitor exits right after it recorded the exit: a pidfd on it wakes this wait
            // at that moment, however long the container runs (a `docker wait` of a service
            // costs nothing meanwhile).
            let nap = left.map_or(EXIT_NAP, |l| l.min(EXIT_NAP));
            match ExitNotice::on(run.monitor_pid, run.monitor_start) {
                Ok(Some(notice)) => notice.wait(nap),
                // Its monitor is gone, so its exit is recorded (looked at again at once), unless
                // the monitor died and left the workload running: then a look now and then.
                _ => {
                    if matches!(self.status(id)?, ContainerStatus::Running(_)) {
                        std::thread::sleep(nap.min(Duration::from_millis(50)));
                    }
                }
            }
        }
    }

    /// Docker's stop: the container's stop signal (its image's STOPSIGNAL or `--stop-signal`,
    /// SIGTERM when it has none), then SIGKILL after `grace`.
    pub fn stop(&self, id: &str, grace: Duration) -> Result<ExitState> {
        let id = &self.resolve(id)?;
        match self.status(id)? {
            ContainerStatus::Exited(exit) => return Ok(exit),
            ContainerStatus::Created => return Err(RuntimeError::NotRunning(id.into())),
            ContainerStatus::Running(_) => {}
        }
        let signal = read_json::<ContainerSpec>(&self.container_dir(id).join("config.json"))
            .and_then(|spec| spec.stop_signal)
            .unwrap_or(libc::SIGTERM);
        let _ = self.kill(id, signal);
        match self.wait(id, Some(grace)) {
            Err(RuntimeError::Timeout(_)) => {
                let _ = self.kill(id, libc::SIGKILL);
                self.wait(id, Some(Duration::from_secs(30)))
            }
            other => other,
        }
    }

    /// Removes a container; a running one only when `force` (it is killed first).
    pub fn remove(&self, id: &str, force: bool) -> Result<()> {
        let id = &self.resolve(id)?;
        if let ContainerStatus::Running(_) = self.status(id)? {
            if !force {
                return Err(RuntimeError::Running(id.into()));
            }
            let _ = self.kill(id, libc::SIGKILL);
            self.wait(id, Some(Duration::from_secs(30)))?;
        }
        let dir = self.container_dir(id);
        fs::remove_dir_all(&dir).map_err(RuntimeError::io("remove", &dir))
    }

    /// A watch on container `id`'s directory: readable when its log grows or its state changes
    /// (it started, it exited), so a follower of its logs or its exit reacts at once instead of
    /// polling.
    pub fn watch(&self, id: &str) -> Result<ChangeWatch> {
        let id = &self.resolve(id)?;
        let dir = self.container_dir(id);
        ChangeWatch::on(&dir).map_err(RuntimeError::io("watch", &dir))
    }

    /// A notice that becomes readable when container `id`'s current run has ended and its exit
    /// is recorded; `None` when it is not running.
    pub fn exit_notice(&self, id: &str) -> Result<Option<ExitNotice>> {
        let id = &self.resolve(id)?;
        let ContainerStatus::Running(run) = self.status(id)? else { return Ok(None) };
        ExitNotice::on(run.monitor_pid, run.monitor_start)
            .map_err(RuntimeError::io("watch the monitor of", self.container_dir(id)))
    }

    /// Log lines from byte `offset` of the log; returns them and the offset to continue from
    /// (`logs -f` calls it again with that offset).
    pub fn logs(&self, id: &str, offset: u64) -> Result<(Vec<LogLine>, u64)> {
        let id = &self.resolve(id)?;
        self.status(id)?;
        let path = self.container_dir(id).join("container.log");
        let Ok(mut file) = fs::File::open(&path) else { return Ok((Vec::new(), 0)) };
        file.seek(SeekFrom::Start(offset)).map_err(RuntimeError::io("read", &path))?;
        let mut reader = BufReader::new(file);
        let (mut lines, mut pos) = (Vec::new(), offset);
        let mut text = String::new();
        loop {
            text.clear();
            let n = reader.read_line(&mut text).map_err(RuntimeError::io("read", &path))?;
            if n == 0 || !text.ends_with('\n') {
                break;
            }
            pos += n as u64;
            if let Ok(line) = serde_json::from_str::<LogLine>(&text) {
                lines.push(line);
            }
        }
        Ok((lines, pos))
    }

    /// A command that runs a program inside the running container: the shim's `exec` verb, which
    /// joins every namespace of its init, its cgroup and root, and confines the program as the
    /// workload is (capabilities, no_new_privs, seccomp, user), with the container's environment
    /// under the options' additions.
    pub fn exec_command(&self, id: &str, options: &ExecOptions) -> Result<Command> {
        let id = &self.resolve(id)?;
        let ContainerStatus::Running(_) = self.status(id)? else {
            return Err(RuntimeError::NotRunning(id.into()));
        };
        if options.argv.is_empty() {
            return Err(RuntimeError::invalid("command", "", "exec needs a command"));
        }
        for pair in &options.env {
            if pair.split_once('=').is_none_or(|(k, _)| k.is_empty()) {
                return Err(RuntimeError::invalid("environment variable", pair, "expected KEY=VALUE"));
            }
        }
        let json = serde_json::to_string(options)
            .map_err(|e| RuntimeError::invalid("exec options", "", e.to_string()))?;
        let mut cmd = Command::new(&self.shim);
        cmd.arg("exec").arg(self.container_dir(id)).arg(json);
        cmd.env_clear();
        Ok(cmd)
    }

    /// The container's writable layer (its overlayfs upper directory): what a build step turns
    /// into an image layer.
    pub fn upper_dir(&self, id: &str) -> Result<PathBuf> {
        let id = self.resolve(id)?;
        Ok(self.container_dir(&id).join("rootfs/upper"))
    }

    /// Resource usage of a running container.
    pub fn stats(&self, id: &str) -> Result<Stats> {
        let id = &self.resolve(id)?;
        let spec = read_json::<ContainerSpec>(&self.container_dir(id).join("config.json"))
            .ok_or_else(|| RuntimeError::NoSuchContainer(id.into()))?;
        let ContainerStatus::Running(_) = self.status(id)? else {
            return Err(RuntimeError::NotRunning(id.into()));
        };
        Cgroup::create(&Hierarchy::detect(&spec.cgroup_root), &spec.cgroup_path, &Limits::default())?.stats()
    }
}

/// A container's `/etc/hosts`: localhost for both families, then `lines`.
fn hosts_file(lines: &[String]) -> String {
    let mut hosts = String::from("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
    for line in lines {
        hosts.push_str(line);
        hosts.push('\n');
    }
    hosts
}

/// A container's `/etc/resolv.conf` naming `servers`.
fn resolv_file(servers: &[String]) -> String {
    servers.iter().map(|d| format!("nameserver {d}\n")).collect()
}
