//! Escape attempts from inside containers started through `weft run` and entered with
//! `weft exec`, on a manager (so a raft log is open in weftd): every attempt a hostile workload
//! would make on its host fails with the error Docker gives, and the same attempts succeed with
//! `--privileged` where Docker lets them. Also: an image whose /etc points at a host directory,
//! a volume target climbing out with `..`, and the state dir against an unprivileged host user.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use weft_tests::VirtualHosts;
use weft_tests::cluster::{WeftCluster, stderr, stdout};
use weft_tests::images::{Variant, variant_save_tar};

/// A block device of this machine that the test itself can open and read (so a refusal inside
/// the container is the container's confinement, not the machine's), as `MAJOR:MINOR`; disks
/// first, then loop devices (an unbound one reads as empty).
fn readable_block_device() -> String {
    let mut names: Vec<String> = std::fs::read_dir("/sys/block")
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort_by_key(|n| (["loop", "ram", "zram"].iter().any(|p| n.starts_with(p)), n.clone()));
    for name in names {
        let readable =
            std::fs::File::open(format!("/dev/{name}")).and_then(|mut f| f.read(&mut [0u8; 512])).is_ok();
        if readable && let Ok(dev) = std::fs::read_to_string(format!("/sys/block/{name}/dev")) {
            return dev.trim().to_string();
        }
    }
    panic!("no readable block device on this machine");
}

/// The probe's lines as NAME -> result.
fn parse(out: &str) -> BTreeMap<String, String> {
    out.lines().filter_map(|l| l.split_once(": ")).map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// `when_present` if the host's kernel has `path`, else ENOENT (this machine's kernel has no
/// /proc/kcore and no /proc/sysrq-trigger).
fn if_present(path: &str, when_present: &str) -> String {
    if Path::new(path).exists() { when_present.into() } else { "ENOENT".into() }
}

/// What Docker answers an unprivileged container for each attempt.
fn confined() -> Vec<(String, String)> {
    let mut expected: Vec<(String, String)> = [
        ("CapEff", "00000000a80425fb"),
        ("NoNewPrivs", "1"),
        ("Seccomp", "2"),
        ("write /proc/sys", "EROFS"),
        ("/proc/keys", "masked (char 1:3)"),
        ("/proc/timer_list", "masked (char 1:3)"),
        ("/sys/firmware", "directory with 0 entries"),
        // CAP_MKNOD stays (Docker keeps it); the device cgroup refuses the node's use.
        ("mknod block device", "ok"),
        ("read block device", "EPERM"),
        ("mount tmpfs", "EPERM"),
        ("unshare user namespace", "EPERM"),
        ("keyctl", "EPERM"),
        ("ptrace a host process", "ESRCH"),
        ("descriptors of the probe", "none"),
        ("descriptors of pid 1", "none"),
        ("mkdir in /sys/fs/cgroup", "EROFS"),
        ("open cgroup pids.max", "EROFS"),
        ("open /sys/kernel/profiling", "EROFS"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    expected.push(("open /proc/sysrq-trigger".into(), if_present("/proc/sysrq-trigger", "EROFS")));
    expected.push(("read /proc/kcore".into(), if_present("/proc/kcore", "0 bytes")));
    expected
}

/// What Docker lets a `--privileged` container do of the same.
fn privileged() -> Vec<(String, String)> {
    let mut expected: Vec<(String, String)> = [
        ("NoNewPrivs", "0"),
        ("Seccomp", "0"),
        ("write /proc/sys", "ok"),
        ("/proc/keys", "kernel file"),
        ("/proc/timer_list", "kernel file"),
        ("mknod block device", "ok"),
        ("read block device", "ok"),
        ("mount tmpfs", "ok"),
        ("unshare user namespace", "ok"),
        ("keyctl", "ok"),
        // Still its own PID namespace: the host's processes are not there to trace.
        ("ptrace a host process", "ESRCH"),
        ("descriptors of the probe", "none"),
        ("descriptors of pid 1", "none"),
        ("mkdir in /sys/fs/cgroup", "ok"),
        ("open cgroup pids.max", "ok"),
        ("open /sys/kernel/profiling", "ok"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    // Every capability the host holds (this machine's bounding set lacks CAP_SYS_RESOURCE).
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let bounding = status.lines().find_map(|l| l.strip_prefix("CapBnd:")).unwrap().trim().to_string();
    expected.push(("CapEff".into(), bounding));
    expected.push(("open /proc/sysrq-trigger".into(), if_present("/proc/sysrq-trigger", "ok")));
    expected.push(("read /proc/kcore".into(), if_present("/proc/kcore", "ELF")));
    expected
}

fn check(what: &str, out: &str, expected: &[(String, String)]) {
    let seen = parse(out);
    let wrong: Vec<String> = expected
        .iter()
        .filter(|(k, v)| seen.get(k) != Some(v))
        .map(|(k, v)| format!("{k}: expected {v}, saw {:?}", seen.get(k)))
        .collect();
    assert!(wrong.is_empty(), "{what}:\n{}\n--- probe output:\n{out}", wrong.join("\n"));
}

#[test]
fn escape_attempts_fail_as_in_docker_and_privileged_is_the_control() {
    let bed = VirtualHosts::new(1);
    let cluster = WeftCluster::new(&bed);
    cluster.form(1, 0);
    let probe =
        Variant::with_program("probe:latest", Path::new(env!("CARGO_BIN_EXE_weft-escape-probe")), "probe");
    let tar = variant_save_tar(&cluster.scratch(), &probe);
    cluster.weft_ok(0, &["image", "import", tar.to_str().unwrap()]);
    let disk = readable_block_device();
    let outside = std::process::id().to_string();
    let probe_argv = ["/probe", disk.as_str(), outside.as_str()];

    let run = |flags: &[&str]| {
        let mut args = vec!["run", "--rm"];
        args.extend_from_slice(flags);
        args.push("probe:latest");
        args.extend_from_slice(&probe_argv);
        cluster.weft_ok(0, &args)
    };
    check("weft run", &run(&["--network", "none"]), &confined());
    check("weft run --network host", &run(&["--network", "host"]), &confined());
    check("weft run --privileged", &run(&["--network", "none", "--privileged"]), &privileged());

    // The same attempts through exec, into a running container of each kind.
    cluster
        .weft_ok(0, &["run", "-d", "--name", "plain", "--network", "none", "probe:latest", "sleep", "600"]);
    cluster.weft_ok(
        0,
        &["run", "-d", "--name", "root", "--network", "none", "--privileged", "probe:latest", "sleep", "600"],
    );
    let exec = |container: &str, extra: &[&str]| {
        let mut args = vec!["exec"];
        args.extend_from_slice(extra);
        args.push(container);
        args.extend_from_slice(&probe_argv);
        cluster.weft_ok(0, &args)
    };
    check("weft exec", &exec("plain", &[]), &confined());
    check("weft exec into a privileged container", &exec("root", &[]), &privileged());
    // exec -u: the container's confinement as another user, who holds no capability at all.
    let as_nobody = parse(&exec("plain", &["-u", "nobody"]));
    assert_eq!(as_nobody["CapEff"], "0000000000000000", "{as_nobody:?}");
    assert_eq!(as_nobody["Seccomp"], "2", "{as_nobody:?}");
    let id = cluster.weft_ok(
        0,
        &["exec", "-u", "65534:65534", "-w", "/tmp", "-e", "X=1", "plain", "sh", "-c", "id -u; pwd; echo $X"],
    );
    assert_eq!(id.lines().collect::<Vec<_>>(), ["65534", "/tmp", "1"], "{id}");

    // --cap-add / --cap-drop move single capabilities; seccomp=unconfined lifts only the filter.
    let out = parse(&run(&["--network", "none", "--cap-drop", "ALL", "--cap-add", "NET_ADMIN"]));
    assert_eq!(out["CapEff"], "0000000000001000", "only CAP_NET_ADMIN (bit 12): {out:?}");
    let out = parse(&run(&["--network", "none", "--security-opt", "seccomp=unconfined"]));
    assert_eq!((out["Seccomp"].as_str(), out["keyctl"].as_str()), ("0", "ok"), "{out:?}");
    assert_eq!(out["mount tmpfs"], "EPERM", "no CAP_SYS_ADMIN without the filter either: {out:?}");
    // A profile of Docker's format, read by the CLI: here one that refuses getcwd with EACCES.
    let profile = cluster.scratch().join("profile.json");
    std::fs::write(
        &profile,
        r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["mkdir","mkdirat"],"action":"SCMP_ACT_ERRNO","errnoRet":13}]}"#,
    )
    .unwrap();
    let opt = format!("seccomp={}", profile.display());
    let out = cluster.weft(
        0,
        &[
            "run",
            "--rm",
            "--security-opt",
            &opt,
            "probe:latest",
            "sh",
            "-c",
            "mkdir /tmp/d 2>&1; touch /tmp/f && echo touched",
        ],
    );
    let text = stdout(&out);
    assert!(
        text.contains("Permission denied") && text.contains("touched"),
        "the profile refuses mkdir only: {text}"
    );
    // --read-only and --tmpfs.
    let out = cluster.weft(
        0,
        &[
            "run",
            "--rm",
            "--read-only",
            "--tmpfs",
            "/scratch:size=1m",
            "probe:latest",
            "sh",
            "-c",
            "touch /x 2>&1; touch /scratch/y && echo tmpfs-ok; grep ' /scratch ' /proc/mounts",
        ],
    );
    let text = stdout(&out);
    assert!(text.contains("Read-only file system") && text.contains("tmpfs-ok"), "{text}{}", stderr(&out));
    assert!(
        text.contains("nosuid,nodev,noexec") && text.contains("size=1024k"),
        "Docker's tmpfs flags: {text}"
    );

    // Bad input is refused by name and changes nothing.
    let before = cluster.weft_ok(0, &["ps", "-a", "--format", "json"]);
    for (flags, says) in [
        (vec!["--cap-add", "FLY"], "not a Linux capability"),
        (vec!["--security-opt", "apparmor=unconfined"], "--security-opt apparmor"),
        (vec!["--device", "/etc/passwd"], "not a character or block device"),
        (vec!["-v", "/tmp:/../../etc"], "'..'"),
        (vec!["--tmpfs", "relative"], "absolute"),
    ] {
        let mut args = vec!["run", "--rm"];
        args.extend_from_slice(&flags);
        args.extend(["probe:latest", "true"]);
        let out = cluster.weft(0, &args);
        assert_eq!(out.status.code(), Some(125), "{flags:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(says), "{flags:?}: {}", stderr(&out));
    }
    assert_eq!(
        cluster.weft_ok(0, &["ps", "-a", "--format", "json"]),
        before,
        "refused runs leave no container"
    );
}

#[test]
fn dockerfile_run_steps_are_confined_like_containers() {
    let bed = VirtualHosts::new(1);
    let cluster = WeftCluster::new(&bed);
    cluster.form(1, 0);
    cluster.import_busybox(&[0]);
    let context = cluster.scratch().join("ctx");
    std::fs::create_dir_all(&context).unwrap();
    std::fs::write(
        context.join("Dockerfile"),
        "FROM busybox\nRUN grep -E '^(CapEff|NoNewPrivs|Seccomp):' /proc/self/status > /confinement; \\\n    (echo 1 > /proc/sys/net/ipv4/ip_forward) 2>> /confinement; true\nCMD [\"cat\", \"/confinement\"]\n",
    )
    .unwrap();
    cluster.weft_ok(0, &["image", "build", "-t", "confined", context.to_str().unwrap()]);
    let seen = cluster.weft_ok(0, &["run", "--rm", "--network", "none", "confined"]);
    assert!(seen.contains("CapEff:\t00000000a80425fb"), "{seen}");
    assert!(seen.contains("NoNewPrivs:\t1") && seen.contains("Seccomp:\t2"), "{seen}");
    assert!(seen.contains("Read-only file system"), "RUN cannot write host sysctls: {seen}");
}

#[test]
fn an_image_cannot_make_weft_write_outside_its_root() {
    let bed = VirtualHosts::new(1);
    let cluster = WeftCluster::new(&bed);
    cluster.form(1, 0);
    // The image's /etc is a symlink to a host directory: weft resolves it inside the root.
    let host_dir = cluster.scratch().join("host-etc");
    std::fs::create_dir_all(&host_dir).unwrap();
    let variant = Variant {
        tag: "etclink:latest".into(),
        etc_link: Some(host_dir.display().to_string()),
        ..Variant::default()
    };
    let tar = variant_save_tar(&cluster.scratch(), &variant);
    cluster.weft_ok(0, &["image", "import", tar.to_str().unwrap()]);
    let out = cluster
        .weft_ok(0, &["run", "--rm", "--hostname", "inside", "etclink:latest", "cat", "/etc/hostname"]);
    assert_eq!(out.trim(), "inside", "the container has its files");
    let leaked: Vec<_> = std::fs::read_dir(&host_dir).unwrap().flatten().map(|e| e.file_name()).collect();
    assert!(leaked.is_empty(), "nothing was written in the host directory: {leaked:?}");
    // A volume's target is resolved inside the root too: the link is followed within it.
    let vol = cluster.scratch().join("vol");
    std::fs::create_dir_all(&vol).unwrap();
    std::fs::write(vol.join("data"), "volume").unwrap();
    let spec = format!("{}:/etc/mounted:ro", vol.display());
    let out = cluster.weft_ok(0, &["run", "--rm", "-v", &spec, "etclink:latest", "cat", "/etc/mounted/data"]);
    assert_eq!(out.trim(), "volume");
    assert!(std::fs::read_dir(&host_dir).unwrap().next().is_none(), "still nothing on the host side");
}

#[test]
fn read_only_volumes_are_read_only_all_the_way_down() {
    let bed = VirtualHosts::new(1);
    let cluster = WeftCluster::new(&bed);
    cluster.form(1, 0);
    cluster.import_busybox(&[0]);
    // A volume with a mount below it: `:ro` covers the submount too (mount_setattr AT_RECURSIVE).
    let vol = cluster.scratch().join("rvol");
    let sub = vol.join("sub");
    std::fs::create_dir_all(&sub).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "weft-test", sub.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(mounted.success());
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }
    let _guard = Unmount(sub.clone());
    let spec = format!("{}:/data:ro", vol.display());
    let out = cluster.weft(
        0,
        &[
            "run",
            "--rm",
            "-v",
            &spec,
            "busybox",
            "sh",
            "-c",
            "touch /data/a 2>&1; touch /data/sub/b 2>&1; echo end",
        ],
    );
    let text = stdout(&out);
    assert_eq!(text.matches("Read-only file system").count(), 2, "both levels refuse writes: {text}");
    assert!(!sub.join("b").exists());
    // rw volumes stay writable (the control).
    let spec = format!("{}:/data", vol.display());
    cluster.weft_ok(0, &["run", "--rm", "-v", &spec, "busybox", "touch", "/data/sub/b"]);
    assert!(sub.join("b").exists());
}

#[test]
fn an_unprivileged_host_user_reaches_nothing_under_the_state_dir() {
    let bed = VirtualHosts::new(1);
    let cluster = WeftCluster::new(&bed);
    cluster.form(1, 0);
    let busybox = std::fs::read("/bin/busybox").unwrap();
    let variant = Variant {
        tag: "suid:latest".into(),
        files: vec![("bin/busybox-suid".into(), busybox, 0o4755)],
        ..Variant::default()
    };
    let tar = variant_save_tar(&cluster.scratch(), &variant);
    cluster.weft_ok(0, &["image", "import", tar.to_str().unwrap()]);
    let state = cluster.state_dir(0);
    // Find the setuid binary as root (the control: it is there, setuid, and runs for root).
    let found = std::process::Command::new("find")
        .arg(&state)
        .args(["-name", "busybox-suid", "-perm", "-4000"])
        .output()
        .unwrap();
    let suid = stdout(&found).lines().next().unwrap_or_default().to_string();
    assert!(!suid.is_empty(), "the layer keeps the setuid binary: {}", stderr(&found));
    let as_root = std::process::Command::new(&suid).arg("true").status().unwrap();
    assert!(as_root.success());
    // A shell of user nobody (setpriv itself still holds root's capabilities while it execs its
    // command, so the attempts are made from a shell it started).
    let as_nobody = |args: &[&str]| {
        std::process::Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--", "/bin/sh", "-c"])
            .arg(args.join(" "))
            .output()
            .unwrap()
    };
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&state).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o700, "the state dir is root's alone");
    let ls = as_nobody(&["ls", state.to_str().unwrap()]);
    assert!(!ls.status.success() && stderr(&ls).contains("Permission denied"), "{}", stderr(&ls));
    let run = as_nobody(&[&suid, "id", "-u"]);
    assert!(!run.status.success(), "nobody cannot run the setuid binary {suid}: {}", stdout(&run));
    assert!(stderr(&run).contains("Permission denied"), "{}", stderr(&run));
}
