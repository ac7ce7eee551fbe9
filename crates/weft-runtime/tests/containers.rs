//! Containers for real: a busybox image (made here from Debian's busybox-static, imported through
//! the image store), run by weft's monitor and init in new namespaces on an overlayfs root, with
//! cgroup v1 limits. Needs root.

use std::fs;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use weft_runtime::RuntimeError;
use weft_runtime::container::{ContainerSpec, ContainerStatus, ExecOptions, Runtime, SpecLimits};
use weft_runtime::image::ImageStore;

static N: AtomicU32 = AtomicU32::new(0);

/// A state directory with an image store holding busybox, removed (with every container in it
/// killed) on drop.
struct Host {
    dir: PathBuf,
    runtime: Runtime,
    layers: Vec<PathBuf>,
}

impl Host {
    fn new(tag: &str) -> Host {
        let dir = std::env::temp_dir().join(format!(
            "weft-ctr-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        fs::create_dir_all(&dir).unwrap();
        let store = ImageStore::open(dir.join("images")).unwrap();
        let image = store.import(&weft_test_images::busybox_save_dir(&dir), None).unwrap().remove(0);
        let layers = store.layer_dirs(&image).unwrap();
        let runtime = Runtime::new(&dir, env!("CARGO_BIN_EXE_weft-shim")).unwrap();
        Host { dir, runtime, layers }
    }

    fn spec(&self, name: &str, script: &str) -> ContainerSpec {
        ContainerSpec {
            name: name.into(),
            image: "busybox".into(),
            env: vec!["GREETING=hello".into()],
            hostname: format!("{name}-host"),
            cgroup_path: PathBuf::from(format!(
                "weft-test-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::SeqCst)
            )),
            ..ContainerSpec::new(self.layers.clone(), vec!["/bin/sh".into(), "-c".into(), script.into()])
        }
    }

    fn run(&self, spec: ContainerSpec) -> (String, i32, Vec<String>) {
        let spec = self.runtime.create(spec).unwrap();
        self.runtime.start(&spec.id).unwrap();
        let exit = self.runtime.wait(&spec.id, Some(Duration::from_secs(30))).unwrap();
        let lines = self.runtime.logs(&spec.id, 0).unwrap().0.into_iter().map(|l| l.line).collect();
        (spec.id, exit.code, lines)
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        if let Ok(all) = self.runtime.list() {
            for (spec, _) in all {
                let _ = self.runtime.remove(&spec.id, true);
            }
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn isolation_is_observed_from_inside() {
    let host = Host::new("iso");
    let script = "echo pid=$$; hostname; cat /proc/1/cmdline | tr '\\0' ' '; echo; \
                  ls /proc | grep -c '^[0-9]'; cat /proc/self/mountinfo | wc -l; echo $GREETING; \
                  echo written > /tmp/mine; ls /sys/class/net";
    let (id, code, lines) = host.run(host.spec("iso", script));
    assert_eq!(code, 0, "{lines:?}");
    assert_eq!(lines[0], "pid=2", "the workload is PID 2 under weft's init");
    assert_eq!(lines[1], "iso-host");
    assert!(
        lines[2].contains("weft-shim") && lines[2].contains("monitor"),
        "PID 1 is weft's init: {}",
        lines[2]
    );
    let mounts: usize = lines[4].parse().unwrap();
    // root, proc, dev and its nodes, pts, shm, mqueue, sys, the masked and read-only paths, /etc.
    assert!(mounts < 35, "only the container's own mounts ({mounts})");
    assert_eq!(lines[5], "hello", "env from the spec");
    assert_eq!(lines[6..], ["lo".to_string()], "network mode none: only loopback");
    // The file landed in this container's upper layer only: not in the image, not elsewhere.
    let upper = host.dir.join("containers").join(&id).join("rootfs/upper/tmp/mine");
    assert_eq!(fs::read_to_string(upper).unwrap(), "written\n");
    assert!(!host.layers[0].join("tmp/mine").exists());
    let (_, _, other) = host.run(host.spec("other", "cat /tmp/mine 2>&1; echo end"));
    assert!(other[0].contains("No such file"), "{other:?}");
    // IPC namespace: its own, empty, SysV queue table.
    let (_, _, ipc) = host.run(host.spec("ipc", "cat /proc/sysvipc/msg | wc -l"));
    assert_eq!(ipc, ["1"]);
}

#[test]
fn init_reaps_orphans_and_stop_is_graceful_then_forceful() {
    let host = Host::new("init");
    // Orphans re-parented to init are reaped: no zombie is left.
    let (_, code, lines) = host.run(host.spec(
        "reap",
        "for i in 1 2 3; do (sleep 0.1 &) ; done; sleep 0.5; cat /proc/[0-9]*/stat | grep -c ' Z ' ; true",
    ));
    assert_eq!(code, 0);
    assert_eq!(lines.last().map(String::as_str), Some("0"), "no zombies: {lines:?}");

    let rt = &host.runtime;
    let trapper = rt
        .create(host.spec("trap", "trap 'echo got TERM; exit 3' TERM; while true; do sleep 0.1; done"))
        .unwrap();
    rt.start(&trapper.id).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let exit = rt.stop(&trapper.id, Duration::from_secs(10)).unwrap();
    assert_eq!(exit.code, 3, "the workload handled SIGTERM itself");
    assert!(rt.logs(&trapper.id, 0).unwrap().0.iter().any(|l| l.line == "got TERM"));

    let stubborn = rt.create(host.spec("stubborn", "trap '' TERM; while true; do sleep 0.1; done")).unwrap();
    rt.start(&stubborn.id).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let exit = rt.stop(&stubborn.id, Duration::from_millis(500)).unwrap();
    assert_eq!((exit.code, exit.signal), (137, Some(9)), "killed after the grace period");
}

#[test]
fn limits_oom_and_pids() {
    let host = Host::new("lim");
    let mut spec = host.spec("oom", "x=$(head -c 100000000 /dev/zero | tr '\\0' x); echo survived");
    spec.limits = SpecLimits { memory: Some(32 << 20), cpus: Some(0.5), pids: Some(16) };
    let spec = host.runtime.create(spec).unwrap();
    host.runtime.start(&spec.id).unwrap();
    let exit = host.runtime.wait(&spec.id, Some(Duration::from_secs(30))).unwrap();
    assert!(exit.oom_killed, "the exit reason says OOM: {exit:?}");

    let mut spec = host.spec("bomb", "for i in $(seq 40); do sleep 2 & done 2>&1; wait; echo done");
    spec.limits.pids = Some(10);
    let (_, _, lines) = host.run(spec);
    assert!(lines.iter().any(|l| l.contains("fork")), "forks beyond the pids limit fail: {lines:?}");
}

#[test]
fn containers_outlive_the_runtime_object_and_exec_joins_them() {
    let host = Host::new("exec");
    let spec = host.runtime.create(host.spec("svc", "echo started; while true; do sleep 0.1; done")).unwrap();
    host.runtime.start(&spec.id).unwrap();
    // A new Runtime over the same state dir, as after an agent restart, finds it running.
    let again = Runtime::new(&host.dir, env!("CARGO_BIN_EXE_weft-shim")).unwrap();
    assert!(matches!(again.status(&spec.id).unwrap(), ContainerStatus::Running(_)));
    assert_eq!(again.find("svc").unwrap().id, spec.id);
    let out = again
        .exec_command(
            "svc",
            &ExecOptions {
                argv: vec![
                    "sh".into(),
                    "-c".into(),
                    "hostname; echo $GREETING; cat /proc/1/cmdline | tr '\\0' ' '".into(),
                ],
                ..Default::default()
            },
        )
        .unwrap()
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("svc-host\nhello\n"), "{text} {}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("weft-shim monitor"), "exec joined the container's PID namespace: {text}");
    assert!(again.stats(&spec.id).unwrap().pids >= 2);
    assert!(matches!(again.remove(&spec.id, false), Err(RuntimeError::Running(_))));
    again.remove(&spec.id, true).unwrap();
    assert!(matches!(again.status(&spec.id), Err(RuntimeError::NoSuchContainer(_))));

    // Bad input is refused and leaves nothing.
    let mut bad = host.spec("bad name!", "true");
    assert!(host.runtime.create(bad.clone()).is_err());
    bad.name = "ok".into();
    bad.argv.clear();
    assert!(host.runtime.create(bad).is_err());
    let failing = host.runtime.create({
        let mut s = host.spec("noexec", "true");
        s.argv = vec!["/bin/does-not-exist".into()];
        s
    });
    let failing = failing.unwrap();
    let err = host.runtime.start(&failing.id).unwrap_err();
    assert!(err.to_string().contains("does-not-exist"), "{err}");
    assert_eq!(host.runtime.list().unwrap().len(), 1);
}

#[test]
fn volumes_read_only_root_and_users() {
    let host = Host::new("vol");
    let shared = host.dir.join("shared");
    fs::create_dir_all(&shared).unwrap();
    fs::write(shared.join("in"), "from the host\n").unwrap();
    fs::set_permissions(&shared, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let mut spec = host.spec(
        "vol",
        "cat /data/in; echo back > /data/out; (echo no > /ro/x) 2>/dev/null || echo ro-refused; \
         (echo no > /etc/x) 2>/dev/null || echo root-ro; id -u; id -g",
    );
    spec.mounts = vec![
        weft_runtime::container::BindMount {
            source: shared.clone(),
            target: "/data".into(),
            readonly: false,
        },
        weft_runtime::container::BindMount { source: shared.clone(), target: "/ro".into(), readonly: true },
    ];
    spec.readonly_rootfs = true;
    spec.user = "nobody".into();
    let (_, code, lines) = host.run(spec);
    assert_eq!(code, 0, "{lines:?}");
    assert_eq!(lines[0], "from the host");
    assert!(lines.contains(&"ro-refused".to_string()) && lines.contains(&"root-ro".to_string()), "{lines:?}");
    assert_eq!(lines[lines.len() - 2..], ["65534".to_string(), "65534".to_string()], "runs as nobody");
    assert_eq!(fs::read_to_string(shared.join("out")).unwrap(), "back\n", "written through the volume");
    let mut bad = host.spec("badvol", "true");
    bad.mounts = vec![weft_runtime::container::BindMount {
        source: "/does/not/exist".into(),
        target: "/x".into(),
        readonly: false,
    }];
    assert!(host.runtime.create(bad).unwrap_err().to_string().contains("volume"));
}

/// Not a test on its own: the "agent" process of the next test. It starts a container through
/// the runtime, records its id, and then waits to be killed.
#[test]
fn helper_agent_process() {
    let Ok(dir) = std::env::var("WEFT_HELPER_STATE") else { return };
    let dir = PathBuf::from(dir);
    let store = ImageStore::open(dir.join("images")).unwrap();
    let image = store.get("busybox").unwrap();
    let runtime = Runtime::new(&dir, env!("CARGO_BIN_EXE_weft-shim")).unwrap();
    let script =
        "trap 'echo bye; exit 0' TERM; i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.1; done";
    let spec = ContainerSpec {
        name: "survivor".into(),
        image: image.id.clone(),
        hostname: "survivor".into(),
        cgroup_path: PathBuf::from(format!("weft-test-survivor-{}", std::process::id())),
        ..ContainerSpec::new(
            store.layer_dirs(&image).unwrap(),
            vec!["/bin/sh".into(), "-c".into(), script.into()],
        )
    };
    let spec = runtime.create(spec).unwrap();
    runtime.start(&spec.id).unwrap();
    fs::write(dir.join("started"), &spec.id).unwrap();
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

#[test]
fn containers_keep_running_when_the_agent_is_killed_and_are_found_again() {
    let host = Host::new("agentkill");
    // The "agent": this test binary, re-run as the helper above, in its own process.
    let mut agent = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "helper_agent_process", "--nocapture", "--test-threads=1"])
        .env("WEFT_HELPER_STATE", &host.dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = host.dir.join("started");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !started.exists() {
        assert!(std::time::Instant::now() < deadline, "the agent never started its container");
        std::thread::sleep(Duration::from_millis(20));
    }
    let id = fs::read_to_string(&started).unwrap();
    agent.kill().unwrap(); // SIGKILL
    agent.wait().unwrap();

    // A restarted agent (a new Runtime over the same state dir) finds the container running.
    let runtime = Runtime::new(&host.dir, env!("CARGO_BIN_EXE_weft-shim")).unwrap();
    let all = runtime.list().unwrap();
    assert!(
        matches!(all.iter().find(|(s, _)| s.id == id).map(|(_, st)| st), Some(ContainerStatus::Running(_))),
        "{all:?}"
    );
    // logs -f: the log keeps growing after the agent died.
    let (lines, offset) = runtime.logs("survivor", 0).unwrap();
    assert!(!lines.is_empty());
    std::thread::sleep(Duration::from_millis(400));
    let (more, _) = runtime.logs("survivor", offset).unwrap();
    assert!(more.iter().any(|l| l.line.starts_with("tick")), "new lines after the agent's death: {more:?}");
    let out = runtime
        .exec_command("survivor", &ExecOptions { argv: vec!["hostname".into()], ..Default::default() })
        .unwrap()
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "survivor\n");
    let exit = runtime.stop("survivor", Duration::from_secs(10)).unwrap();
    assert_eq!(exit.code, 0, "stopped through SIGTERM by the new agent");
    assert!(runtime.logs("survivor", 0).unwrap().0.iter().any(|l| l.line == "bye"));
}

#[test]
fn long_lines_are_split_at_16k_and_a_reused_pid_is_not_the_container() {
    let host = Host::new("logs");
    // 40000 bytes without a newline, then a short line: pieces of 16 KiB, then the rest.
    let (id, code, lines) = host.run(host.spec(
        "long",
        "i=0; while [ $i -lt 4000 ]; do printf 0123456789; i=$((i+1)); done; echo; echo short",
    ));
    assert_eq!(code, 0);
    let lens: Vec<usize> = lines.iter().map(String::len).collect();
    assert_eq!(lens, [16384, 16384, 40000 - 2 * 16384, 5], "Docker's 16 KiB limit");

    // A state that names a live pid with another start time (as after a reboot) is not running.
    let dir = host.dir.join("containers").join(&id);
    let state: serde_json::Value =
        serde_json::from_slice(&fs::read(dir.join("state.json")).unwrap()).unwrap();
    assert!(state["pid_start"].as_u64().unwrap() > 0, "the start time is recorded: {state}");
    fs::remove_file(dir.join("exit.json")).unwrap();
    let me = std::process::id();
    let forged = serde_json::json!({"pid": me, "monitor_pid": me, "started_ns": 1, "pid_start": 1, "monitor_start": 1});
    fs::write(dir.join("state.json"), forged.to_string()).unwrap();
    match host.runtime.status(&id).unwrap() {
        ContainerStatus::Exited(exit) => assert!(exit.error.unwrap().contains("monitor disappeared")),
        other => panic!("a reused pid was taken for the container: {other:?}"),
    }
    assert!(matches!(host.runtime.kill(&id, libc::SIGTERM), Err(RuntimeError::NotRunning(_))));
}
