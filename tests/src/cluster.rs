//! weftd clusters on a test bed: one `weftd` process per host namespace, driven through its local
//! socket (the `weft` binary or the gRPC client the CLI uses), killed with SIGKILL and restarted
//! from its state dir. Every process is killed when the cluster is dropped.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use weft_cli::client::{self, Host, TlsFiles};
use weft_proto::v1 as pb;

use crate::VirtualHosts;

/// The cluster API port every test weftd listens on (inside its own namespace).
pub const API_PORT: u16 = 7946;

/// Path of a binary of this workspace (`weftd`, `weft`), built by `cargo build --bins`: next to
/// the running executable (a binary such as weft-bench) or one level up (a test in `deps/`).
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().expect("exe dir");
    let candidates = [Some(dir.join(name)), dir.parent().map(|p| p.join(name))];
    candidates.into_iter().flatten().find(|p| p.exists()).unwrap_or_else(|| {
        panic!(
            "{name} is missing next to {}: run `cargo build --workspace --bins` first (tests/run.sh does)",
            exe.display()
        )
    })
}

/// A weftd cluster on the hosts of a test bed.
pub struct WeftCluster<'a> {
    bed: &'a VirtualHosts,
    dir: PathBuf,
    procs: Mutex<HashMap<usize, Child>>,
    /// Extra flags for every weftd.
    pub flags: Vec<String>,
    /// Extra environment variables for every weftd (failpoints).
    pub env: Vec<(String, String)>,
    /// The hosts speak over their IPv6 underlay addresses (listen, advertise, join, VXLAN).
    pub ipv6_underlay: bool,
    /// Every weftd serves the Docker Engine API on [`WeftCluster::docker_socket`].
    pub docker_api: bool,
    /// [`WeftCluster::form`] joins worker `i` through manager `i % managers` (an operator
    /// spreading its workers over the managers; a worker watches the one it joined through)
    /// instead of all through host 0.
    pub spread_workers: bool,
}

impl<'a> WeftCluster<'a> {
    /// An empty cluster on `bed` (state under a fresh temp dir).
    pub fn new(bed: &'a VirtualHosts) -> WeftCluster<'a> {
        let dir = std::env::temp_dir().join(format!("{}-weft", bed.prefix()));
        std::fs::create_dir_all(&dir).unwrap();
        WeftCluster {
            bed,
            dir,
            procs: Mutex::new(HashMap::new()),
            flags: vec!["--down-after".into(), "2s".into()],
            env: Vec::new(),
            ipv6_underlay: false,
            docker_api: false,
            spread_workers: false,
        }
    }

    /// Host `i`'s state dir.
    pub fn state_dir(&self, i: usize) -> PathBuf {
        self.dir.join(format!("h{i}"))
    }

    /// Host `i`'s admin socket.
    pub fn socket(&self, i: usize) -> PathBuf {
        self.state_dir(i).join("weft.sock")
    }

    /// Host `i`'s Docker API socket (served when [`WeftCluster::docker_api`] is set).
    pub fn docker_socket(&self, i: usize) -> PathBuf {
        self.state_dir(i).join("docker.sock")
    }

    /// Host `i`'s API address.
    pub fn api(&self, i: usize) -> String {
        std::net::SocketAddr::new(self.bed.host(i).underlay(self.ipv6_underlay), API_PORT).to_string()
    }

    fn log(&self, i: usize) -> PathBuf {
        self.dir.join(format!("h{i}.log"))
    }

    /// The last lines weftd on host `i` logged.
    pub fn log_tail(&self, i: usize) -> String {
        let text = std::fs::read_to_string(self.log(i)).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Starts weftd on host `i` with `extra` flags (bootstrap or join ones) and waits until it serves.
    pub fn start(&self, i: usize, extra: &[&str]) {
        // A SIGKILLed weftd leaves its socket file behind; the new one's socket is what we wait for.
        let _ = std::fs::remove_file(self.socket(i));
        let child = self.spawn(i, extra);
        self.procs.lock().unwrap().insert(i, child);
        let socket = self.socket(i);
        let deadline = Instant::now() + Duration::from_secs(30);
        while !socket.exists() {
            let exited = self.procs.lock().unwrap().get_mut(&i).and_then(|c| c.try_wait().ok().flatten());
            if let Some(status) = exited {
                panic!("weftd on h{i} exited with {status}:\n{}", self.log_tail(i));
            }
            assert!(Instant::now() < deadline, "weftd on h{i} did not start:\n{}", self.log_tail(i));
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// weftd for host `i` with the flags every start shares (state dir, socket, listen and
    /// advertise addresses, name), run inside the host's namespace.
    pub fn weftd(&self, i: usize) -> std::process::Command {
        let host = self.bed.host(i);
        let mut cmd = host.command(bin("weftd").to_str().unwrap());
        cmd.arg("--state-dir")
            .arg(self.state_dir(i))
            .arg("--socket")
            .arg(self.socket(i))
            .arg("--listen")
            .arg(self.api(i))
            .arg("--advertise")
            .arg(host.underlay(self.ipv6_underlay).to_string())
            .arg("--name")
            .arg(format!("h{i}"));
        if self.docker_api {
            cmd.arg("--docker-socket").arg(self.docker_socket(i));
        }
        cmd
    }

    fn spawn(&self, i: usize, extra: &[&str]) -> Child {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.log(i)).unwrap();
        let mut cmd = self.weftd(i);
        cmd.args(&self.flags)
            .args(extra)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("WEFT_LOG", "info,weft_agent=debug,weft_overlay=debug")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        cmd.spawn().expect("spawn weftd")
    }

    /// Runs weftd on host `i` to completion (for start-up errors) and returns its output.
    pub fn run_to_exit(&self, i: usize, extra: &[&str]) -> Output {
        self.weftd(i).args(extra).output().expect("run weftd")
    }

    /// Bootstraps a cluster on host 0, joins hosts `1..managers` as managers and the next
    /// `workers` hosts as workers (through host 0, or spread: [`WeftCluster::spread_workers`]),
    /// and waits until every node is Ready with one leader.
    pub fn form(&self, managers: usize, workers: usize) {
        self.start(0, &["--bootstrap"]);
        let manager_token = self.weft_ok(0, &["cluster", "token", "manager"]).trim().to_string();
        let worker_token = self.weft_ok(0, &["cluster", "token", "worker"]).trim().to_string();
        let join = self.api(0);
        for i in 1..managers {
            self.start(i, &["--join", &join, "--token", &manager_token, "--manager"]);
        }
        for i in managers..managers + workers {
            let join = if self.spread_workers { self.api(i % managers.max(1)) } else { join.clone() };
            self.start(i, &["--join", &join, "--token", &worker_token]);
        }
        let total = managers + workers;
        let voters = if managers.is_multiple_of(2) { managers - 1 } else { managers };
        self.eventually("every node Ready, one leader, voters in place", Duration::from_secs(30), || {
            let Ok(nodes) = self.nodes(0) else { return false };
            nodes.len() == total
                && nodes.iter().all(|n| n["status"] == "Ready")
                && nodes.iter().filter(|n| n["leader"] == true).count() == 1
                && nodes.iter().filter(|n| n["raft"] == "voter").count() == voters
        });
    }

    /// The pid of weftd on host `i`, while it runs.
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.procs.lock().unwrap().get(&i).map(Child::id)
    }

    /// Kills weftd on host `i` with SIGKILL.
    pub fn kill(&self, i: usize) {
        if let Some(mut child) = self.procs.lock().unwrap().remove(&i) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// A scratch directory beside the hosts' state dirs (images, contexts, volumes), removed with
    /// the cluster.
    pub fn scratch(&self) -> PathBuf {
        let dir = self.dir.join("scratch");
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// Imports the busybox test image (`busybox:latest`) through `weft image import` on each of
    /// `hosts`.
    pub fn import_busybox(&self, hosts: &[usize]) {
        let tar = weft_test_images::busybox_save_tar(&self.scratch());
        for &i in hosts {
            let out = self.weft_ok(i, &["image", "import", tar.to_str().unwrap()]);
            assert!(out.contains("busybox:latest"), "{out}");
        }
    }

    /// Stops weftd on host `i` with SIGTERM and returns its exit status.
    pub fn terminate(&self, i: usize) -> std::process::ExitStatus {
        let mut child = self.procs.lock().unwrap().remove(&i).expect("weftd runs on that host");
        // SAFETY: signalling a child process we spawned and have not reaped.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        child.wait().expect("wait for weftd")
    }

    /// What a reboot of host `i` does to weft, short of the kernel: weftd and every process of
    /// its containers are killed (through each container's cgroups, as the power going does),
    /// their cgroups are removed, every mount under the host's state dir goes (the containers'
    /// namespace bind mounts and root file systems), and the host namespace loses every link but
    /// `lo` and `eth0`, its nftables rules and its forwarding sysctls. The state dir itself stays,
    /// as a disk does. Start weftd again with [`WeftCluster::restart`].
    pub fn reboot(&self, i: usize) {
        self.kill(i);
        let state = self.state_dir(i);
        let ids: Vec<String> = std::fs::read_dir(state.join("containers"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        // Monitors name their container's directory on their command line.
        let _ = std::process::Command::new("pkill").args(["-KILL", "-f", &state.to_string_lossy()]).status();
        for id in &ids {
            let groups: Vec<PathBuf> = std::fs::read_dir("/sys/fs/cgroup")
                .into_iter()
                .flatten()
                .flatten()
                .map(|c| c.path().join(format!("weft-{id}")))
                .filter(|g| g.is_dir())
                .collect();
            for _ in 0..50 {
                let mut alive = false;
                for group in &groups {
                    let procs = std::fs::read_to_string(group.join("cgroup.procs")).unwrap_or_default();
                    for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                        alive = true;
                        // SAFETY: killing a process of a test container's cgroup.
                        unsafe { libc::kill(pid, libc::SIGKILL) };
                    }
                }
                if !alive {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            for group in &groups {
                let _ = std::fs::remove_dir(group);
            }
        }
        let prefix = format!("{}/", state.display());
        let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
        let mut points: Vec<&str> = mounts
            .lines()
            .filter_map(|l| l.split_whitespace().nth(1))
            .filter(|m| m.starts_with(&prefix))
            .collect();
        points.sort_by_key(|p| std::cmp::Reverse(p.len()));
        for point in points {
            let _ = nix::mount::umount2(point, nix::mount::MntFlags::MNT_DETACH);
        }
        let host = self.bed.host(i);
        let links = host.output("ip", &["-o", "link", "show"]);
        for line in String::from_utf8_lossy(&links.stdout).lines() {
            let name = line.split(':').nth(1).map(str::trim).unwrap_or("");
            let name = name.split('@').next().unwrap_or("");
            if !name.is_empty() && name != "lo" && name != "eth0" {
                let _ = host.output("ip", &["link", "del", name]);
            }
        }
        let _ = host.output("nft", &["flush", "ruleset"]);
        let _ = host.output("sysctl", &["-qw", "net.ipv4.ip_forward=0", "net.ipv6.conf.all.forwarding=0"]);
    }

    /// Restarts weftd on host `i` from its state dir.
    pub fn restart(&self, i: usize) {
        self.start(i, &[]);
    }

    /// `weft -H unix://<socket of i>`, to add arguments to and run (or spawn, for many at once).
    pub fn weft_command(&self, i: usize) -> std::process::Command {
        let mut cmd = std::process::Command::new(bin("weft"));
        cmd.arg("-H").arg(format!("unix://{}", self.socket(i).display()));
        cmd
    }

    /// Runs `weft -H unix://<socket of i> args...`.
    pub fn weft(&self, i: usize, args: &[&str]) -> Output {
        self.weft_command(i).args(args).output().expect("run weft")
    }

    /// Runs weft and returns its stdout, panicking (with its stderr) if it fails.
    pub fn weft_ok(&self, i: usize, args: &[&str]) -> String {
        let out = self.weft(i, args);
        assert!(out.status.success(), "weft {args:?} on h{i}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `weft node ls --format json` through host `i`.
    pub fn nodes(&self, i: usize) -> Result<Vec<serde_json::Value>, String> {
        let out = self.weft(i, &["node", "ls", "--format", "json"]);
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())
    }

    /// The host index of the leader, as host `via` reports it.
    pub fn leader(&self, via: usize) -> Option<usize> {
        let nodes = self.nodes(via).ok()?;
        let name = nodes.iter().find(|n| n["leader"] == true)?["name"].as_str()?.to_string();
        name.strip_prefix('h')?.parse().ok()
    }

    /// A gRPC client of host `i`'s local socket.
    pub async fn client(
        &self,
        i: usize,
    ) -> Result<weft_proto::v1::cluster_client::ClusterClient<tonic::transport::Channel>, String> {
        client::connect(&Host::Unix(self.socket(i)), &TlsFiles::default()).await.map_err(|e| e.to_string())
    }

    /// One `Apply` through host `i`'s socket; the error is the daemon's message (or why the socket
    /// could not be reached).
    pub async fn apply(&self, i: usize, request: pb::ApplyRequest) -> Result<pb::ApplyResponse, String> {
        let mut c = self.client(i).await?;
        c.apply(request).await.map(tonic::Response::into_inner).map_err(|s| s.message().to_string())
    }

    /// The state as host `i` (a manager) has it, confirmed with the leader.
    pub async fn state(&self, i: usize) -> Result<pb::StateSnapshot, String> {
        let mut c = self.client(i).await?;
        let r = c
            .get_state(pb::StateRequest { linearizable: true })
            .await
            .map_err(|s| s.message().to_string())?;
        Ok(r.into_inner().state.unwrap_or_default())
    }

    /// Polls `check` until true, panicking with the logs of every host after `timeout`.
    pub fn eventually(&self, what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
        let deadline = Instant::now() + timeout;
        while !check() {
            if Instant::now() > deadline {
                let hosts: Vec<usize> = {
                    let mut v: Vec<usize> = self.procs.lock().unwrap().keys().copied().collect();
                    v.sort();
                    v
                };
                let logs: Vec<String> =
                    hosts.iter().map(|i| format!("--- h{i}\n{}", self.log_tail(*i))).collect();
                panic!("timed out waiting for: {what}\n{}", logs.join("\n"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for WeftCluster<'_> {
    fn drop(&mut self) {
        for (_, mut child) in self.procs.lock().unwrap_or_else(|e| e.into_inner()).drain() {
            let _ = child.kill();
            let _ = child.wait();
        }
        remove_cluster_dir(&self.dir);
    }
}

/// Removes a cluster's state directory once its agents are gone. Containers outlive weftd by
/// design: every one the agents started is killed and removed, and the namespaces they kept
/// deleted, before the state dirs go. [`WeftCluster`]'s drop and [`crate::interrupt::sweep`]
/// (a run stopped by a signal) share it.
pub fn remove_cluster_dir(dir: &Path) {
    for host in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let state = host.path();
        if state.join("containers").is_dir()
            && let Ok(runtime) = weft_runtime::container::Runtime::new(&state, bin("weftd"))
        {
            for (spec, _) in runtime.list().unwrap_or_default() {
                let _ = runtime.remove(&spec.id, true);
            }
        }
        for ns in std::fs::read_dir(state.join("netns")).into_iter().flatten().flatten() {
            let _ = weft_net::NetNs::delete_at(&ns.path(), "test container");
        }
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// A finished command's stdout as text.
pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A finished command's stderr as text.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}
