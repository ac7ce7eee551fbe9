//! What a run stopped by a signal leaves behind, removed. A benchmark stopped with Ctrl-C (or a
//! `kill`) never unwinds, so no bed, cluster or namespace is dropped: its namespaces, the
//! processes inside them, weftd agents, containers and state directories would stay. Everything a
//! process of this crate makes is named with its [`crate::unique_prefix`] (`wt<pid>x<n>`), which
//! is what [`sweep`] looks for.

use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// The name prefix of everything process `pid` made (namespaces, temp dirs).
pub fn prefix_of(pid: u32) -> String {
    format!("wt{pid}x")
}

/// On SIGINT, SIGTERM or SIGHUP: [`sweep`] what this process made, say what could not be
/// removed, and exit with 128 + the signal's number, as a shell reports a process it killed.
/// Call it once, first thing in `main`.
pub fn sweep_on_signal() -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let runtime = tokio::runtime::Builder::new_current_thread().enable_io().build()?;
    let mut streams = {
        let _entered = runtime.enter();
        [SignalKind::interrupt(), SignalKind::terminate(), SignalKind::hangup()]
            .into_iter()
            .map(|kind| signal(kind).map(|s| (kind, s)))
            .collect::<std::io::Result<Vec<_>>>()?
    };
    std::thread::Builder::new().name("interrupt sweep".into()).spawn(move || {
        let number = runtime.block_on(async {
            let waits = streams.iter_mut().map(|(kind, s)| {
                let number = kind.as_raw_value();
                Box::pin(async move {
                    s.recv().await;
                    number
                })
            });
            futures::future::select_all(waits).await.0
        });
        eprintln!("interrupted (signal {number}): removing what this run made");
        for problem in sweep(std::process::id()) {
            eprintln!("  left behind: {problem}");
        }
        std::process::exit(128 + number);
    })?;
    Ok(())
}

/// Removes what process `pid` made and returns what could not be removed (every problem, not
/// only the first). In order: its child processes are killed (agents, iperf3, etcd), the weft
/// clusters' containers removed (they outlive their agents by design), any process still inside
/// one of its namespaces killed, the namespaces deleted and its temp dirs removed.
pub fn sweep(pid: u32) -> Vec<String> {
    let prefix = prefix_of(pid);
    let mut problems = Vec::new();
    for child in children_of(pid) {
        if let Err(e) = kill(Pid::from_raw(child as i32), Signal::SIGKILL) {
            problems.push(format!("process {child}: kill: {e}"));
        }
    }
    let dirs = entries_named(&std::env::temp_dir(), &prefix);
    for dir in dirs.iter().filter(|d| d.to_string_lossy().ends_with("-weft")) {
        crate::cluster::remove_cluster_dir(dir);
    }
    let namespaces = entries_named(Path::new("/run/netns"), &prefix);
    let inodes: BTreeSet<u64> =
        namespaces.iter().filter_map(|ns| std::fs::metadata(ns).ok()).map(|m| m.ino()).collect();
    for inside in processes_in(&inodes) {
        if inside != std::process::id() {
            let _ = kill(Pid::from_raw(inside as i32), Signal::SIGKILL);
        }
    }
    for ns in &namespaces {
        let name = ns.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        if let Err(e) = weft_net::NetNs::delete(&name) {
            problems.push(format!("namespace {name}: {e}"));
        }
    }
    for dir in dirs {
        let removed = if dir.is_dir() { std::fs::remove_dir_all(&dir) } else { std::fs::remove_file(&dir) };
        if let Err(e) = removed
            && e.kind() != std::io::ErrorKind::NotFound
        {
            problems.push(format!("{}: {e}", dir.display()));
        }
    }
    problems
}

/// The entries of `dir` whose names start with `prefix`.
fn entries_named(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
        .map(|e| e.path())
        .collect();
    found.sort();
    found
}

/// Every process id in /proc.
fn pids() -> impl Iterator<Item = u32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse::<u32>().ok())
}

/// The processes whose parent is `pid` (what it started and has not reaped).
pub fn children_of(pid: u32) -> Vec<u32> {
    pids()
        .filter(|p| {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else { return false };
            // The command name (field 2) is in parentheses and may hold spaces: count after it.
            let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
            after.split_whitespace().nth(1).and_then(|ppid| ppid.parse::<u32>().ok()) == Some(pid)
        })
        .collect()
}

/// The processes whose network namespace is one of `inodes` (the inode numbers of
/// namespace files).
pub fn processes_in(inodes: &BTreeSet<u64>) -> Vec<u32> {
    if inodes.is_empty() {
        return Vec::new();
    }
    pids()
        .filter(|p| std::fs::metadata(format!("/proc/{p}/ns/net")).is_ok_and(|m| inodes.contains(&m.ino())))
        .collect()
}
