//! The last steps before a container's program runs, shared by the workload that init starts
//! and by every `exec`: user and groups, working directory, environment, capabilities
//! (bounding, effective, permitted, inheritable), no_new_privs, the seccomp filter, and no
//! descriptor above stderr left open. Runs in a single-threaded child between fork and exec;
//! nothing here returns on success.

use std::ffi::CString;
use std::fs;
use std::path::Path;

use super::spec::{ContainerSpec, SeccompMode};
use crate::security::caps;
use crate::security::seccomp::Bpf;

type Step<T> = Result<T, String>;

fn ctx<T, E: std::fmt::Display>(what: &str, r: Result<T, E>) -> Step<T> {
    r.map_err(|e| format!("{what}: {e}"))
}

/// Docker's default PATH.
pub(super) const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The name of the compiled seccomp program in a container's directory.
pub(crate) const SECCOMP_FILE: &str = "seccomp.bpf";

/// What a container's processes run under, read before the root is pivoted (the seccomp program
/// lives in the container's directory, outside its root).
pub(crate) struct Confinement {
    caps: Vec<u32>,
    no_new_privs: bool,
    seccomp: Option<Bpf>,
}

impl Confinement {
    /// The confinement `spec` asks for, with the seccomp program compiled at create.
    pub(crate) fn load(spec: &ContainerSpec, dir: &Path) -> Step<Confinement> {
        let names = ctx(
            "capabilities",
            caps::effective(spec.security.privileged, &spec.security.cap_add, &spec.security.cap_drop),
        )?;
        let caps = names.iter().filter_map(|n| caps::number(n)).collect();
        let seccomp = if spec.security.privileged || spec.security.seccomp == SeccompMode::Unconfined {
            None
        } else {
            let path = dir.join(SECCOMP_FILE);
            let bytes = ctx(&format!("read {}", path.display()), fs::read(&path))?;
            Some(ctx("seccomp program", Bpf::from_bytes(&bytes))?)
        };
        let no_new_privs = !(spec.security.privileged || spec.security.allow_new_privileges);
        Ok(Confinement { caps, no_new_privs, seccomp })
    }
}

/// uid, gid and supplementary groups from `user` (`name`, `uid`, `name:group`, `uid:gid`),
/// looked up in the container's /etc/passwd and /etc/group (after pivot_root).
pub(crate) fn resolve_user(user: &str) -> Step<(u32, u32, Vec<u32>)> {
    if user.is_empty() {
        return Ok((0, 0, Vec::new()));
    }
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let passwd = fs::read_to_string("/etc/passwd").unwrap_or_default();
    let group = fs::read_to_string("/etc/group").unwrap_or_default();
    let rows = |table: &str| -> Vec<Vec<String>> {
        table.lines().map(|l| l.split(':').map(String::from).collect::<Vec<_>>()).collect()
    };
    let (passwd, group) = (rows(&passwd), rows(&group));
    let (uid, default_gid, name) = match u.parse::<u32>() {
        Ok(uid) => {
            let row = passwd.iter().find(|f| f.len() > 3 && f[2] == u);
            (uid, row.and_then(|f| f[3].parse().ok()).unwrap_or(0), row.map(|f| f[0].clone()))
        }
        Err(_) => {
            let f = passwd
                .iter()
                .find(|f| f.len() > 3 && f[0] == u)
                .ok_or_else(|| format!("unable to find user {u}: no matching entries in passwd file"))?;
            (
                f[2].parse().map_err(|_| format!("bad uid for {u}"))?,
                f[3].parse().map_err(|_| format!("bad gid for {u}"))?,
                Some(u.to_string()),
            )
        }
    };
    let gid = match g {
        None => default_gid,
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => {
                let f = group
                    .iter()
                    .find(|f| f.len() > 2 && f[0] == g)
                    .ok_or_else(|| format!("unable to find group {g}: no matching entries in group file"))?;
                f[2].parse().map_err(|_| format!("bad gid for group {g}"))?
            }
        },
    };
    // Supplementary groups: every group listing the user by name (Docker's behaviour).
    let mut groups = vec![gid];
    if let Some(name) = name {
        for f in group.iter().filter(|f| f.len() > 3) {
            if f[3].split(',').any(|m| m == name)
                && let Ok(g) = f[2].parse::<u32>()
                && !groups.contains(&g)
            {
                groups.push(g);
            }
        }
    }
    Ok((uid, gid, groups))
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

fn last_cap() -> u32 {
    fs::read_to_string("/proc/sys/kernel/cap_last_cap").ok().and_then(|s| s.trim().parse().ok()).unwrap_or(40)
}

/// Drops every capability outside `keep` from the bounding set, then sets effective,
/// permitted and inheritable to `keep`.
pub(crate) fn set_capabilities(keep: &[u32]) -> Step<()> {
    drop_bounding(keep)?;
    set_process_capabilities(keep)
}

/// Drops every capability outside `keep` from the bounding set (needs CAP_SETPCAP: before any
/// change of user).
fn drop_bounding(keep: &[u32]) -> Step<()> {
    for cap in 0..=last_cap() {
        if !keep.contains(&cap) {
            // SAFETY: prctl with integer arguments.
            if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) } != 0 {
                let err = std::io::Error::last_os_error();
                if err.raw_os_error() != Some(libc::EINVAL) {
                    return Err(format!("drop capability {cap} from the bounding set: {err}"));
                }
            }
        }
    }
    Ok(())
}

/// Sets effective, permitted and inheritable to `keep` (what of it this process holds).
fn set_process_capabilities(keep: &[u32]) -> Step<()> {
    // Only what this process holds can be kept (a host whose own bounding set lacks a
    // capability gives a privileged container everything else).
    let mut held = [CapData::default(); 2];
    let mut header = CapHeader { version: 0x2008_0522, pid: 0 };
    // SAFETY: capget with a v3 header and two data words, as the kernel ABI requires.
    if unsafe { libc::syscall(libc::SYS_capget, &mut header as *mut CapHeader, held.as_mut_ptr()) } != 0 {
        return Err(format!("capget: {}", std::io::Error::last_os_error()));
    }
    let is_held = |cap: u32| cap < 64 && held[(cap / 32) as usize].permitted & (1 << (cap % 32)) != 0;
    let mut data = [CapData::default(); 2];
    for cap in keep.iter().filter(|c| is_held(**c)) {
        let (word, bit) = ((*cap / 32) as usize, cap % 32);
        if word < 2 {
            data[word].effective |= 1 << bit;
            data[word].permitted |= 1 << bit;
            data[word].inheritable |= 1 << bit;
        }
    }
    let mut header = CapHeader { version: 0x2008_0522, pid: 0 };
    // SAFETY: capset with a v3 header and two data words, as the kernel ABI requires.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &mut header as *mut CapHeader, data.as_ptr()) };
    if rc != 0 {
        return Err(format!("capset: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

/// Marks every descriptor above stderr close-on-exec, so nothing weft holds (raft logs, sockets,
/// the state dir) is inherited by the program (runc's fix for CVE-2024-21626).
pub(crate) fn cloexec_above_stderr() -> Step<()> {
    // SAFETY: close_range with integer arguments.
    let rc = unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, libc::CLOSE_RANGE_CLOEXEC) };
    if rc != 0 {
        return Err(format!("close_range: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

fn c(s: &str) -> Step<CString> {
    CString::new(s).map_err(|_| format!("{s:?} contains NUL"))
}

/// What one program of a container runs as.
pub(crate) struct Process<'a> {
    /// The command.
    pub(crate) argv: &'a [String],
    /// `KEY=value` pairs, later ones winning.
    pub(crate) env: Vec<String>,
    /// Working directory (created when missing, as Docker does for the workload).
    pub(crate) cwd: &'a str,
    /// `user[:group]`.
    pub(crate) user: &'a str,
    /// Host name, for $HOSTNAME.
    pub(crate) hostname: &'a str,
}

/// Why a program could not be started, with the exit status Docker reports for it: 127 when the
/// command does not exist, 126 when it cannot be invoked.
pub(crate) struct Failure {
    /// What failed.
    pub(crate) message: String,
    /// 126 or 127.
    pub(crate) code: i32,
}

/// Confines the calling process and execs `process`. Only returns with the reason it could not.
pub(crate) fn exec(confinement: &Confinement, process: &Process<'_>) -> Failure {
    match prepare_and_exec(confinement, process) {
        Ok(errno) => Failure {
            message: format!(
                "exec {}: {}",
                process.argv.first().map(String::as_str).unwrap_or(""),
                std::io::Error::from_raw_os_error(errno)
            ),
            code: if errno == libc::ENOENT { 127 } else { 126 },
        },
        Err(message) => Failure { message, code: 126 },
    }
}

/// Everything up to execvp; returns its errno when exec itself failed.
fn prepare_and_exec(confinement: &Confinement, process: &Process<'_>) -> Step<i32> {
    let (uid, gid, groups) = resolve_user(process.user)?;
    let cwd = if process.cwd.is_empty() { "/" } else { process.cwd };
    if !Path::new(cwd).is_dir() {
        ctx("create working directory", fs::create_dir_all(cwd))?;
    }
    ctx(&format!("chdir {cwd}"), std::env::set_current_dir(cwd))?;
    // Without no_new_privs the filter needs CAP_SYS_ADMIN to be installed: do it while we have it.
    if !confinement.no_new_privs
        && let Some(bpf) = &confinement.seccomp
    {
        // SAFETY: installing a seccomp program in this single-threaded child.
        ctx("install seccomp filter", unsafe { bpf.install() })?;
    }
    // User and groups first, while CAP_SETUID/CAP_SETGID are still held (the container may have
    // dropped them), keeping the permitted set across the uid change; then the container's set.
    drop_bounding(&confinement.caps)?;
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) };
    let gids: Vec<nix::unistd::Gid> = groups.iter().map(|g| nix::unistd::Gid::from_raw(*g)).collect();
    ctx("setgroups", nix::unistd::setgroups(&gids))?;
    ctx("setgid", nix::unistd::setgid(nix::unistd::Gid::from_raw(gid)))?;
    ctx("setuid", nix::unistd::setuid(nix::unistd::Uid::from_raw(uid)))?;
    set_process_capabilities(&confinement.caps)?;
    // SAFETY: single-threaded; the environment is rebuilt right before exec.
    unsafe {
        libc::clearenv();
        let mut has_path = false;
        for pair in &process.env {
            if let Some((k, v)) = pair.split_once('=') {
                has_path |= k == "PATH";
                libc::setenv(c(k)?.as_ptr(), c(v)?.as_ptr(), 1);
            }
        }
        if !has_path {
            libc::setenv(c"PATH".as_ptr(), c(DEFAULT_PATH)?.as_ptr(), 1);
        }
        libc::setenv(c"HOSTNAME".as_ptr(), c(process.hostname)?.as_ptr(), 0);
        if uid == 0 {
            libc::setenv(c"HOME".as_ptr(), c"/root".as_ptr(), 0);
        } else {
            libc::setenv(c"HOME".as_ptr(), c"/".as_ptr(), 0);
        }
    }
    let argv: Vec<CString> = process.argv.iter().map(|a| c(a)).collect::<Step<_>>()?;
    let program =
        argv.first().ok_or("no command given: the image has no Cmd or Entrypoint and none was given")?;
    let mut ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    ptrs.push(std::ptr::null());
    cloexec_above_stderr()?;
    if confinement.no_new_privs {
        // SAFETY: prctl with integer arguments.
        if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
            return Err(format!("no_new_privs: {}", std::io::Error::last_os_error()));
        }
        if let Some(bpf) = &confinement.seccomp {
            // SAFETY: installing a seccomp program in this single-threaded child, last before
            // exec, so the filter never has to allow weft's own set-up calls.
            ctx("install seccomp filter", unsafe { bpf.install() })?;
        }
    }
    // SAFETY: NUL-terminated argv array of valid C strings.
    unsafe { libc::execvp(program.as_ptr(), ptrs.as_ptr()) };
    Ok(std::io::Error::last_os_error().raw_os_error().unwrap_or(libc::ENOENT))
}
