//! cgroups: v2 against fixture directories (this machine's v2 mount has no controllers), v1 for
//! real: limits read back from the kernel, a process over its memory limit OOM-killed, a fork
//! bomb stopped at the pids limit. Needs root.

use std::fs;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use weft_runtime::cgroup::{Cgroup, Hierarchy, Limits, join_self};

static N: AtomicU32 = AtomicU32::new(0);

fn unique(tag: &str) -> String {
    format!("weft-test-{tag}-{}-{}", std::process::id(), N.fetch_add(1, Ordering::SeqCst))
}

const MIB: u64 = 1024 * 1024;

#[test]
fn v2_paths_and_values_match_fixtures() {
    let root = std::env::temp_dir().join(unique("v2"));
    fs::create_dir_all(&root).unwrap();
    fs::write(root.join("cgroup.controllers"), "cpuset cpu io memory pids\n").unwrap();
    let hierarchy = Hierarchy::detect(&root);
    assert_eq!(hierarchy, Hierarchy::V2(root.clone()));
    let limits = Limits { memory: Some(64 * MIB), cpus: Some(0.5), pids: Some(32) };
    let group = Cgroup::create(&hierarchy, "weft/abc", &limits).unwrap();
    let read = |p: &str| fs::read_to_string(root.join(p)).unwrap();
    assert_eq!(read("cgroup.subtree_control"), "+memory +cpu +pids");
    assert_eq!(read("weft/cgroup.subtree_control"), "+memory +cpu +pids");
    assert_eq!(read("weft/abc/memory.max"), "67108864");
    assert_eq!(read("weft/abc/memory.swap.max"), "0");
    assert_eq!(read("weft/abc/cpu.max"), "50000 100000");
    assert_eq!(read("weft/abc/pids.max"), "32");
    assert_eq!(group.procs_files(), vec![root.join("weft/abc/cgroup.procs")]);
    group.add_process(4242).unwrap();
    assert_eq!(read("weft/abc/cgroup.procs"), "4242");
    fs::write(root.join("weft/abc/memory.current"), "1048576\n").unwrap();
    fs::write(root.join("weft/abc/cpu.stat"), "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\n").unwrap();
    fs::write(root.join("weft/abc/pids.current"), "3\n").unwrap();
    fs::write(root.join("weft/abc/memory.events"), "low 0\nhigh 0\nmax 4\noom 2\noom_kill 2\n").unwrap();
    let stats = group.stats().unwrap();
    assert_eq!((stats.memory_bytes, stats.cpu_ns, stats.pids, stats.oom_kills), (MIB, 1_500_000, 3, 2));
    fs::remove_dir_all(&root).unwrap();
}

#[test]
fn bad_limits_and_paths_are_refused_before_anything_is_written() {
    let root = std::env::temp_dir().join(unique("bad"));
    fs::create_dir_all(&root).unwrap();
    let h = Hierarchy::V1(root.clone());
    for limits in [
        Limits { memory: Some(1024), ..Limits::default() },
        Limits { cpus: Some(0.0), ..Limits::default() },
        Limits { cpus: Some(f64::NAN), ..Limits::default() },
        Limits { pids: Some(0), ..Limits::default() },
    ] {
        assert!(Cgroup::create(&h, "weft/x", &limits).is_err(), "{limits:?}");
    }
    assert!(Cgroup::create(&h, "../escape", &Limits::default()).is_err());
    assert!(Cgroup::create(&h, "/abs", &Limits::default()).is_err());
    assert_eq!(fs::read_dir(&root).unwrap().count(), 0, "nothing created");
    fs::remove_dir_all(&root).unwrap();
}

/// A real v1 group, removed (after killing what is left in it) on drop.
struct Group(Cgroup);

impl Drop for Group {
    fn drop(&mut self) {
        if let Ok(pids) = self.0.processes() {
            for pid in pids {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
        let _ = self.0.remove();
    }
}

fn v1() -> (Hierarchy, PathBuf) {
    let root = PathBuf::from("/sys/fs/cgroup");
    let h = Hierarchy::detect(&root);
    assert!(matches!(h, Hierarchy::V1(_)), "this machine mounts cgroup v1 controllers");
    (h, root)
}

fn run_in(group: &Cgroup, script: &str) -> std::process::Output {
    let paths = group.join_paths();
    let mut cmd = Command::new("busybox");
    cmd.args(["sh", "-c", script]);
    // SAFETY: join_self only calls open, write and close.
    unsafe { cmd.pre_exec(move || join_self(&paths)) };
    cmd.output().unwrap()
}

#[test]
fn v1_limits_are_enforced_by_the_kernel() {
    let (h, root) = v1();
    let rel = unique("v1");
    let limits = Limits { memory: Some(32 * MIB), cpus: Some(0.5), pids: Some(8) };
    let group = Group(Cgroup::create(&h, &rel, &limits).unwrap());
    let read =
        |c: &str, f: &str| fs::read_to_string(root.join(c).join(&rel).join(f)).unwrap().trim().to_string();
    assert_eq!(read("memory", "memory.limit_in_bytes"), (32 * MIB).to_string());
    assert_eq!(read("cpu", "cpu.cfs_quota_us"), "50000");
    assert_eq!(read("pids", "pids.max"), "8");

    // A process inside sees itself in the group.
    let out = run_in(&group.0, "cat /proc/self/cgroup");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.lines().any(|l| l.contains(":memory:") && l.ends_with(&rel)), "{text}");

    // Over the memory limit: OOM-killed, and the group counts the kill.
    let out = run_in(&group.0, "x=$(head -c 100000000 /dev/zero | tr '\\0' x); echo ${#x}");
    assert_eq!(out.status.signal(), Some(9), "killed by SIGKILL: {out:?}");
    assert!(group.0.stats().unwrap().oom_kills >= 1, "the kernel recorded an OOM kill");

    // A fork bomb stops at the pids limit.
    let out = run_in(&group.0, "i=0; while [ $i -lt 30 ]; do sleep 1 & i=$((i+1)); done; wait");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("fork"), "forks beyond the limit fail: {err}");
    let stats = group.0.stats().unwrap();
    assert!(stats.pids <= 8, "{stats:?}");
    assert!(stats.cpu_ns > 0, "CPU time is accounted");
}
