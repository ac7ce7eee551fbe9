//! `exec`: a program started inside a running container, joined natively (no util-linux
//! `nsenter`) and confined exactly as the workload is. The shim's `exec DIR OPTIONS` verb runs
//! this in a fresh single-threaded process: it joins the container's cgroup, enters the
//! namespaces of its init (checked by pid and start time), takes its root, and forks the program
//! (which is then in the container's PID namespace). The shim stays outside, forwards signals to
//! the program and exits with its status; the program dies with it.

use std::fs;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;

use nix::sched::{CloneFlags, setns};
use serde::{Deserialize, Serialize};

use super::confine::{self, Confinement, Process};
use super::procfs::process_start;
use super::spec::{ContainerSpec, RunState};
use crate::cgroup::{Cgroup, Hierarchy, Limits, join_self};

/// What `weft exec` asks for beyond the command.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecOptions {
    /// The command and its arguments.
    pub argv: Vec<String>,
    /// `-u user[:group]`; empty: the container's user.
    pub user: String,
    /// `-w DIR`; empty: the container's working directory.
    pub workdir: String,
    /// `-e KEY=value`, over the container's environment.
    pub env: Vec<String>,
}

/// The namespaces an exec joins, in the order it joins them (mount last: the others are opened
/// through the host's /proc before it is left behind).
const NAMESPACES: &[(&str, CloneFlags)] = &[
    ("ipc", CloneFlags::CLONE_NEWIPC),
    ("uts", CloneFlags::CLONE_NEWUTS),
    ("net", CloneFlags::CLONE_NEWNET),
    ("pid", CloneFlags::CLONE_NEWPID),
    ("cgroup", CloneFlags::CLONE_NEWCGROUP),
    ("mnt", CloneFlags::CLONE_NEWNS),
];

fn ctx<T, E: std::fmt::Display>(what: &str, r: Result<T, E>) -> Result<T, String> {
    r.map_err(|e| format!("{what}: {e}"))
}

/// Runs the exec for the container in `dir`; returns the exit code for the shim (the program's,
/// 128+signal, 126/127 when it could not start).
pub(crate) fn run(dir: &Path, options: &ExecOptions) -> i32 {
    match enter(dir, options) {
        Ok(code) => code,
        Err(message) => {
            eprintln!("weft exec: {message}");
            126
        }
    }
}

fn enter(dir: &Path, options: &ExecOptions) -> Result<i32, String> {
    let read = |name: &str| ctx(&format!("read {name}"), fs::read(dir.join(name)));
    let spec: ContainerSpec = ctx("config.json", serde_json::from_slice(&read("config.json")?))?;
    let run: RunState = ctx("state.json", serde_json::from_slice(&read("state.json")?))
        .map_err(|_| format!("container {} is not running", spec.name))?;
    if run.pid_start != 0 && process_start(run.pid) != Some(run.pid_start) {
        return Err(format!("container {} is not running", spec.name));
    }
    let confinement = Confinement::load(&spec, dir)?;
    let cgroup = ctx(
        "container cgroup",
        Cgroup::create(&Hierarchy::detect(&spec.cgroup_root), &spec.cgroup_path, &Limits::default()),
    )?;
    let namespaces: Vec<(OwnedFd, CloneFlags)> = NAMESPACES
        .iter()
        .map(|(name, flag)| {
            let path = format!("/proc/{}/ns/{name}", run.pid);
            fs::File::open(&path).map(|f| (OwnedFd::from(f), *flag)).map_err(|e| format!("open {path}: {e}"))
        })
        .collect::<Result<_, _>>()?;
    let root: OwnedFd =
        ctx("open the container's root", fs::File::open(format!("/proc/{}/root", run.pid)))?.into();
    // The start time again, now that the namespaces are held: the pid cannot have been reused
    // between the check and the opens.
    if run.pid_start != 0 && process_start(run.pid) != Some(run.pid_start) {
        return Err(format!("container {} is not running", spec.name));
    }
    ctx("join the container's cgroup", join_self(&cgroup.join_paths()))?;
    for (fd, flag) in &namespaces {
        ctx(&format!("join namespace {flag:?}"), setns(fd, *flag))?;
    }
    // SAFETY: fchdir/chroot on a directory descriptor we own.
    unsafe {
        if libc::fchdir(root.as_raw_fd()) != 0 || libc::chroot(c".".as_ptr()) != 0 {
            return Err(format!("enter the container's root: {}", std::io::Error::last_os_error()));
        }
    }
    drop((namespaces, root));
    let mut env = spec.env.clone();
    for pair in &options.env {
        if let Some((key, _)) = pair.split_once('=') {
            env.retain(|e| e.split_once('=').map(|(k, _)| k) != Some(key));
            env.push(pair.clone());
        }
    }
    let process = Process {
        argv: &options.argv,
        env,
        cwd: if options.workdir.is_empty() { &spec.cwd } else { &options.workdir },
        user: if options.user.is_empty() { &spec.user } else { &options.user },
        hostname: &spec.hostname,
    };
    Ok(fork_and_wait(&confinement, &process))
}

/// Forks the program (into the joined PID namespace), forwards every signal the shim gets to it,
/// and returns its exit code.
fn fork_and_wait(confinement: &Confinement, process: &Process<'_>) -> i32 {
    // SAFETY: the shim is single-threaded; classic fork / sigwait / waitpid.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::sigprocmask(libc::SIG_BLOCK, &all, std::ptr::null_mut());
        let child = libc::fork();
        if child < 0 {
            eprintln!("weft exec: fork: {}", std::io::Error::last_os_error());
            return 126;
        }
        if child == 0 {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            let empty: libc::sigset_t = std::mem::zeroed();
            libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
            let failure = confine::exec(confinement, process);
            let message = format!("weft exec: {}\n", failure.message);
            libc::write(2, message.as_ptr().cast(), message.len());
            libc::_exit(failure.code);
        }
        loop {
            let mut sig: libc::c_int = 0;
            if libc::sigwait(&all, &mut sig) != 0 {
                continue;
            }
            if sig == libc::SIGCHLD {
                let mut status = 0;
                let pid = libc::waitpid(child, &mut status, libc::WNOHANG);
                if pid == child {
                    return if libc::WIFEXITED(status) {
                        libc::WEXITSTATUS(status)
                    } else {
                        128 + libc::WTERMSIG(status)
                    };
                }
            } else {
                libc::kill(child, sig);
            }
        }
    }
}
