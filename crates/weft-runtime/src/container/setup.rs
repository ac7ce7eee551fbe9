//! The container side of start: runs in the child the monitor forked into a new PID namespace
//! (so it is PID 1 there). It joins the cgroup, enters the other namespaces, builds the root file
//! system and pivots into it, then becomes weft's init: it starts the workload, forwards signals
//! to it, reaps every zombie and exits with the workload's status.
//!
//! Single-threaded by construction (the monitor never starts a thread), so allocation between
//! fork and exec is safe here. Any failure is written to the sync pipe and ends the child with
//! status 127; nothing here returns.

use std::ffi::CString;
use std::fs;
use std::os::fd::RawFd;
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, setns, unshare};

use super::spec::{ContainerSpec, NetworkMode};
use crate::cgroup::{JoinPaths, join_self};

/// Docker's default PATH.
pub(super) const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Docker's default capability set (by number, see capability.h).
const DEFAULT_CAPS: &[u32] = &[
    0,  // CHOWN
    1,  // DAC_OVERRIDE
    3,  // FOWNER
    4,  // FSETID
    5,  // KILL
    6,  // SETGID
    7,  // SETUID
    8,  // SETPCAP
    10, // NET_BIND_SERVICE
    13, // NET_RAW
    18, // SYS_CHROOT
    27, // MKNOD
    29, // AUDIT_WRITE
    31, // SETFCAP
];

type Step<T> = Result<T, String>;

fn fail(sync: RawFd, message: &str) -> ! {
    // SAFETY: writing a byte buffer to an fd we own, then ending the process without unwinding.
    unsafe {
        libc::write(sync, message.as_ptr().cast(), message.len());
        libc::_exit(127)
    }
}

fn ctx<T, E: std::fmt::Display>(what: &str, r: Result<T, E>) -> Step<T> {
    r.map_err(|e| format!("{what}: {e}"))
}

/// Entry point of the container's PID 1. Never returns.
pub(crate) fn container_main(
    spec: &ContainerSpec,
    dir: &Path,
    stdio: [RawFd; 2],
    sync: RawFd,
    cgroup: &JoinPaths,
) -> ! {
    if let Err(message) = prepare(spec, dir, cgroup) {
        fail(sync, &message);
    }
    init(spec, stdio, sync)
}

fn prepare(spec: &ContainerSpec, dir: &Path, cgroup: &JoinPaths) -> Step<()> {
    ctx("join cgroup", join_self(cgroup))?;
    let mut flags = CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWUTS
        | CloneFlags::CLONE_NEWIPC
        | CloneFlags::CLONE_NEWCGROUP;
    if spec.network == NetworkMode::None {
        flags |= CloneFlags::CLONE_NEWNET;
    }
    ctx("unshare namespaces", unshare(flags))?;
    match &spec.network {
        NetworkMode::None => loopback_up()?,
        NetworkMode::Host => {}
        NetworkMode::Join(path) => {
            let ns = ctx(&format!("open network namespace {}", path.display()), fs::File::open(path))?;
            ctx("join network namespace", setns(ns, CloneFlags::CLONE_NEWNET))?;
        }
    }
    build_rootfs(spec, dir)?;
    ctx("set hostname", nix::unistd::sethostname(&spec.hostname))?;
    Ok(())
}

fn loopback_up() -> Step<()> {
    // SAFETY: plain socket/ioctl calls on a zeroed ifreq whose name is "lo".
    unsafe {
        let sock = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if sock < 0 {
            return Err(format!("socket: {}", std::io::Error::last_os_error()));
        }
        let mut req: libc::ifreq = std::mem::zeroed();
        for (i, b) in b"lo".iter().enumerate() {
            req.ifr_name[i] = *b as libc::c_char;
        }
        let ok = libc::ioctl(sock, libc::SIOCGIFFLAGS, &mut req) == 0 && {
            req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            libc::ioctl(sock, libc::SIOCSIFFLAGS, &mut req) == 0
        };
        let err = std::io::Error::last_os_error();
        libc::close(sock);
        if !ok {
            return Err(format!("bring loopback up: {err}"));
        }
    }
    Ok(())
}

fn mount_at(
    what: &str,
    src: Option<&Path>,
    target: &Path,
    fstype: Option<&str>,
    flags: MsFlags,
    data: Option<&str>,
) -> Step<()> {
    mount(src, target, fstype, flags, data).map_err(|e| format!("mount {what} on {}: {e}", target.display()))
}

fn inside(root: &Path, path: impl AsRef<Path>) -> PathBuf {
    root.join(path.as_ref().strip_prefix("/").unwrap_or(path.as_ref()))
}

fn build_rootfs(spec: &ContainerSpec, dir: &Path) -> Step<()> {
    mount_at("/ private", None, Path::new("/"), None, MsFlags::MS_REC | MsFlags::MS_PRIVATE, None)?;
    let rootfs = dir.join("rootfs");
    let (upper, work, merged) = (rootfs.join("upper"), rootfs.join("work"), rootfs.join("merged"));
    let lower: Vec<String> = spec.layers.iter().rev().map(|p| p.display().to_string()).collect();
    if lower.is_empty() {
        return Err("the image has no layers".into());
    }
    let options =
        format!("lowerdir={},upperdir={},workdir={}", lower.join(":"), upper.display(), work.display());
    mount_at(
        "overlay",
        Some(Path::new("overlay")),
        &merged,
        Some("overlay"),
        MsFlags::empty(),
        Some(&options),
    )?;

    let nosuid_noexec_nodev = MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC | MsFlags::MS_NODEV;
    let proc_dir = inside(&merged, "/proc");
    ctx("create /proc", fs::create_dir_all(&proc_dir))?;
    mount_at("proc", Some(Path::new("proc")), &proc_dir, Some("proc"), nosuid_noexec_nodev, None)?;

    let dev = inside(&merged, "/dev");
    ctx("create /dev", fs::create_dir_all(&dev))?;
    mount_at(
        "tmpfs",
        Some(Path::new("tmpfs")),
        &dev,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME,
        Some("mode=755,size=65536k"),
    )?;
    for node in ["null", "zero", "full", "random", "urandom", "tty"] {
        let target = dev.join(node);
        ctx("create device file", fs::File::create(&target))?;
        mount_at("device", Some(&Path::new("/dev").join(node)), &target, None, MsFlags::MS_BIND, None)?;
    }
    for (link, to) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("ptmx", "pts/ptmx"),
    ] {
        ctx("create /dev link", std::os::unix::fs::symlink(to, dev.join(link)))?;
    }
    let pts = dev.join("pts");
    ctx("create /dev/pts", fs::create_dir_all(&pts))?;
    mount_at(
        "devpts",
        Some(Path::new("devpts")),
        &pts,
        Some("devpts"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620"),
    )?;
    let shm = dev.join("shm");
    ctx("create /dev/shm", fs::create_dir_all(&shm))?;
    mount_at(
        "shm",
        Some(Path::new("shm")),
        &shm,
        Some("tmpfs"),
        nosuid_noexec_nodev,
        Some("mode=1777,size=65536k"),
    )?;
    let mqueue = dev.join("mqueue");
    ctx("create /dev/mqueue", fs::create_dir_all(&mqueue))?;
    mount_at("mqueue", Some(Path::new("mqueue")), &mqueue, Some("mqueue"), nosuid_noexec_nodev, None)?;

    let sys = inside(&merged, "/sys");
    ctx("create /sys", fs::create_dir_all(&sys))?;
    if spec.network == NetworkMode::Host {
        // sysfs belongs to the network namespace it is mounted in: bind the host's, read-only.
        mount_at("/sys", Some(Path::new("/sys")), &sys, None, MsFlags::MS_BIND | MsFlags::MS_REC, None)?;
        mount_at(
            "/sys read-only",
            None,
            &sys,
            None,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
            None,
        )?;
    } else {
        mount_at(
            "sysfs",
            Some(Path::new("sysfs")),
            &sys,
            Some("sysfs"),
            nosuid_noexec_nodev | MsFlags::MS_RDONLY,
            None,
        )?;
    }

    for file in ["hosts", "hostname", "resolv.conf"] {
        let target = inside(&merged, Path::new("/etc").join(file));
        ctx("create /etc", fs::create_dir_all(inside(&merged, "/etc")))?;
        if fs::symlink_metadata(&target).is_ok_and(|m| m.file_type().is_symlink()) {
            ctx("replace /etc link", fs::remove_file(&target))?;
        }
        if !target.exists() {
            ctx("create /etc file", fs::File::create(&target))?;
        }
        mount_at(file, Some(&dir.join(file)), &target, None, MsFlags::MS_BIND, None)?;
    }
    for bind in &spec.mounts {
        let target = inside(&merged, &bind.target);
        if bind.source.is_dir() {
            ctx("create mount point", fs::create_dir_all(&target))?;
        } else {
            ctx("create mount point", fs::create_dir_all(target.parent().unwrap_or(&merged)))?;
            if !target.exists() {
                ctx("create mount point", fs::File::create(&target))?;
            }
        }
        mount_at("volume", Some(&bind.source), &target, None, MsFlags::MS_BIND | MsFlags::MS_REC, None)?;
        if bind.readonly {
            mount_at(
                "volume read-only",
                None,
                &target,
                None,
                MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
                None,
            )?;
        }
    }
    if spec.readonly_rootfs {
        mount_at(
            "root read-only",
            None,
            &merged,
            None,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
            None,
        )?;
    }
    ctx("chdir to new root", std::env::set_current_dir(&merged))?;
    ctx("pivot_root", nix::unistd::pivot_root(".", "."))?;
    ctx("detach old root", umount2(".", MntFlags::MNT_DETACH))?;
    ctx("chdir /", std::env::set_current_dir("/"))?;
    Ok(())
}

/// uid, gid from `user` (`name`, `uid`, `name:group`, `uid:gid`), looked up in the container's
/// /etc/passwd and /etc/group.
fn resolve_user(user: &str) -> Step<(u32, u32)> {
    if user.is_empty() {
        return Ok((0, 0));
    }
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let passwd = fs::read_to_string("/etc/passwd").unwrap_or_default();
    let find = |table: &str, name: &str, field: usize| -> Option<Vec<String>> {
        table
            .lines()
            .map(|l| l.split(':').map(String::from).collect::<Vec<_>>())
            .find(|f| f.len() > field && f[0] == name)
    };
    let (uid, default_gid) = match u.parse::<u32>() {
        Ok(uid) => {
            let gid = passwd
                .lines()
                .map(|l| l.split(':').collect::<Vec<_>>())
                .find(|f| f.len() > 3 && f[2] == u)
                .and_then(|f| f[3].parse().ok())
                .unwrap_or(uid);
            (uid, gid)
        }
        Err(_) => {
            let f = find(&passwd, u, 3)
                .ok_or_else(|| format!("unable to find user {u}: no matching entries in passwd file"))?;
            (
                f[2].parse().map_err(|_| format!("bad uid for {u}"))?,
                f[3].parse().map_err(|_| format!("bad gid for {u}"))?,
            )
        }
    };
    let gid = match g {
        None => default_gid,
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => {
                let group = fs::read_to_string("/etc/group").unwrap_or_default();
                let f = find(&group, g, 2).ok_or_else(|| format!("unable to find group {g}"))?;
                f[2].parse().map_err(|_| format!("bad gid for group {g}"))?
            }
        },
    };
    Ok((uid, gid))
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

/// Drops every capability outside Docker's default set from the bounding set and the process.
fn restrict_capabilities() -> Step<()> {
    let last: u32 = fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40);
    for cap in 0..=last {
        if !DEFAULT_CAPS.contains(&cap) {
            // SAFETY: prctl with integer arguments.
            unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
        }
    }
    let mut data = [CapData::default(); 2];
    for cap in DEFAULT_CAPS {
        let (word, bit) = ((*cap / 32) as usize, cap % 32);
        data[word].effective |= 1 << bit;
        data[word].permitted |= 1 << bit;
        data[word].inheritable |= 1 << bit;
    }
    let mut header = CapHeader { version: 0x2008_0522, pid: 0 };
    // SAFETY: capset with a v3 header and two data words, as the kernel ABI requires.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &mut header as *mut CapHeader, data.as_ptr()) };
    if rc != 0 {
        return Err(format!("capset: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

fn c(s: &str) -> Step<CString> {
    CString::new(s).map_err(|_| format!("{s:?} contains NUL"))
}

/// The workload, between fork and exec.
fn exec_workload(spec: &ContainerSpec, stdio: [RawFd; 2]) -> Step<()> {
    // SAFETY: single-threaded child: fd and signal-mask manipulation before exec.
    unsafe {
        let empty: libc::sigset_t = std::mem::zeroed();
        libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY);
        libc::dup2(null, 0);
        libc::dup2(stdio[0], 1);
        libc::dup2(stdio[1], 2);
    }
    let (uid, gid) = resolve_user(&spec.user)?;
    let cwd = if spec.cwd.is_empty() { "/" } else { &spec.cwd };
    if !Path::new(cwd).is_dir() {
        ctx("create working directory", fs::create_dir_all(cwd))?;
    }
    ctx(&format!("chdir {cwd}"), std::env::set_current_dir(cwd))?;
    restrict_capabilities()?;
    ctx("setgroups", nix::unistd::setgroups(&[nix::unistd::Gid::from_raw(gid)]))?;
    ctx("setgid", nix::unistd::setgid(nix::unistd::Gid::from_raw(gid)))?;
    ctx("setuid", nix::unistd::setuid(nix::unistd::Uid::from_raw(uid)))?;
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
    // SAFETY: single-threaded; the environment is rebuilt right before exec.
    unsafe {
        libc::clearenv();
        let mut has_path = false;
        for pair in &spec.env {
            if let Some((k, v)) = pair.split_once('=') {
                has_path |= k == "PATH";
                libc::setenv(c(k)?.as_ptr(), c(v)?.as_ptr(), 1);
            }
        }
        if !has_path {
            libc::setenv(c"PATH".as_ptr(), c(DEFAULT_PATH)?.as_ptr(), 1);
        }
        libc::setenv(c"HOSTNAME".as_ptr(), c(&spec.hostname)?.as_ptr(), 0);
        if uid == 0 {
            libc::setenv(c"HOME".as_ptr(), c"/root".as_ptr(), 0);
        }
    }
    let argv: Vec<CString> = spec.argv.iter().map(|a| c(a)).collect::<Step<_>>()?;
    let program =
        argv.first().ok_or("no command given: the image has no Cmd or Entrypoint and none was given")?;
    let mut ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    ptrs.push(std::ptr::null());
    // SAFETY: NUL-terminated argv array of valid C strings.
    unsafe { libc::execvp(program.as_ptr(), ptrs.as_ptr()) };
    Err(format!("exec {}: {}", spec.argv[0], std::io::Error::last_os_error()))
}

/// weft's init: PID 1 of the container.
fn init(spec: &ContainerSpec, stdio: [RawFd; 2], sync: RawFd) -> ! {
    // SAFETY: single-threaded process; classic fork / sigwait / waitpid init loop.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::sigprocmask(libc::SIG_BLOCK, &all, std::ptr::null_mut());
        let workload = libc::fork();
        if workload < 0 {
            fail(sync, &format!("fork workload: {}", std::io::Error::last_os_error()));
        }
        if workload == 0 {
            match exec_workload(spec, stdio) {
                Ok(()) => fail(sync, "exec returned"),
                Err(message) => fail(sync, &message),
            }
        }
        libc::close(sync);
        libc::close(stdio[0]);
        libc::close(stdio[1]);
        // Keep stdio away from the log pipes so the monitor sees EOF when the workload is gone.
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        for fd in 0..3 {
            libc::dup2(null, fd);
        }
        loop {
            let mut sig: libc::c_int = 0;
            if libc::sigwait(&all, &mut sig) != 0 {
                continue;
            }
            if sig == libc::SIGCHLD {
                loop {
                    let mut status = 0;
                    let pid = libc::waitpid(-1, &mut status, libc::WNOHANG);
                    if pid <= 0 {
                        break;
                    }
                    if pid == workload {
                        let code = if libc::WIFEXITED(status) {
                            libc::WEXITSTATUS(status)
                        } else {
                            128 + libc::WTERMSIG(status)
                        };
                        libc::_exit(code);
                    }
                }
            } else {
                libc::kill(workload, sig);
            }
        }
    }
}
