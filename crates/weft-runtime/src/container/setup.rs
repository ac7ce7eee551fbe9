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
use std::os::fd::{OwnedFd, RawFd};
use std::path::Path;

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, setns, unshare};

use super::confine::{self, Confinement, Process};
use super::inroot::{self, Create, fd_path, open_in_root};
use super::spec::{ContainerSpec, NetworkMode};
use crate::cgroup::{Cgroup, Hierarchy, join_self};
use crate::security::paths;

type Step<T> = Result<T, String>;

/// Exit status of a container whose set-up failed before its command ran (weft's own error, as
/// Docker's 125).
pub(crate) const SETUP_FAILED: i32 = 125;

/// Reports a failure to the monitor through the sync pipe as `CODE\nMESSAGE` (the exit status
/// Docker would report: 125 set-up, 126 cannot execute, 127 not found) and ends the child.
fn fail(sync: RawFd, code: i32, message: &str) -> ! {
    let text = format!("{code}\n{message}");
    // SAFETY: writing a byte buffer to an fd we own, then ending the process without unwinding.
    unsafe {
        libc::write(sync, text.as_ptr().cast(), text.len());
        libc::_exit(code)
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
    cgroup: &Cgroup,
) -> ! {
    let confinement = match prepare(spec, dir, cgroup) {
        Ok(c) => c,
        Err(message) => fail(sync, SETUP_FAILED, &message),
    };
    init(spec, &confinement, stdio, sync)
}

fn prepare(spec: &ContainerSpec, dir: &Path, cgroup: &Cgroup) -> Step<Confinement> {
    ctx("join cgroup", join_self(&cgroup.join_paths()))?;
    let confinement = Confinement::load(spec, dir)?;
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
    build_rootfs(spec, dir, cgroup)?;
    ctx("set hostname", nix::unistd::sethostname(&spec.hostname))?;
    Ok(confinement)
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

/// Mounts a new file system of `fstype` on `path` inside the root (made when missing).
fn mount_fs(root: &OwnedFd, path: &str, fstype: &str, flags: MsFlags, data: Option<&str>) -> Step<OwnedFd> {
    let target = ctx(&format!("create {path}"), open_in_root(root, Path::new(path), Create::Dir))?;
    mount_at(fstype, Some(Path::new(fstype)), &fd_path(&target), Some(fstype), flags, data)
        .map_err(|e| e.replace(&fd_path(&target).display().to_string(), path))?;
    Ok(target)
}

/// Covers Docker's masked paths: files with /dev/null, directories with an empty read-only tmpfs.
fn mask(root: &OwnedFd, path: &str) -> Step<()> {
    let target = match open_in_root(root, Path::new(path), Create::Nothing) {
        Ok(fd) => fd,
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(()),
        Err(e) => return Err(format!("mask {path}: {e}")),
    };
    if Path::new(&fd_path(&target)).is_dir() {
        mount_at(
            "tmpfs",
            Some(Path::new("tmpfs")),
            &fd_path(&target),
            Some("tmpfs"),
            MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            Some("size=0"),
        )
    } else {
        ctx(&format!("mask {path}"), inroot::bind(Path::new("/dev/null"), &target, false, false))
    }
}

/// Docker's `--tmpfs` options: flags (ro, noexec, ...) and data (size=, mode=, uid=, gid=).
/// Docker's defaults are noexec, nosuid and nodev.
fn tmpfs_options(options: &str) -> (MsFlags, String) {
    let mut flags = MsFlags::MS_NOEXEC | MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    let mut data = Vec::new();
    for opt in options.split(',').map(str::trim).filter(|o| !o.is_empty()) {
        match opt {
            "ro" => flags |= MsFlags::MS_RDONLY,
            "rw" => flags.remove(MsFlags::MS_RDONLY),
            "exec" => flags.remove(MsFlags::MS_NOEXEC),
            "noexec" => flags |= MsFlags::MS_NOEXEC,
            "suid" => flags.remove(MsFlags::MS_NOSUID),
            "nosuid" => flags |= MsFlags::MS_NOSUID,
            "dev" => flags.remove(MsFlags::MS_NODEV),
            "nodev" => flags |= MsFlags::MS_NODEV,
            other => data.push(other.to_string()),
        }
    }
    (flags, data.join(","))
}

fn build_rootfs(spec: &ContainerSpec, dir: &Path, cgroup: &Cgroup) -> Step<()> {
    mount_at("/ private", None, Path::new("/"), None, MsFlags::MS_REC | MsFlags::MS_PRIVATE, None)?;
    let privileged = spec.security.privileged;
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
    // Every path below is looked up inside the new root, never through the host's view of it.
    let root = ctx("open the root file system", inroot::open_root(&merged))?;

    let nosuid_noexec_nodev = MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC | MsFlags::MS_NODEV;
    mount_fs(&root, "/proc", "proc", nosuid_noexec_nodev, None)?;

    let dev = mount_fs(
        &root,
        "/dev",
        "tmpfs",
        MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME,
        Some("mode=755,size=65536k"),
    )?;
    let dev_path = fd_path(&dev);
    for node in ["null", "zero", "full", "random", "urandom", "tty"] {
        let target =
            ctx("create device file", open_in_root(&root, &Path::new("/dev").join(node), Create::File))?;
        ctx(
            &format!("bind /dev/{node}"),
            inroot::bind(&Path::new("/dev").join(node), &target, false, false),
        )?;
    }
    if privileged {
        populate_host_devices(&dev_path)?;
    }
    for device in &spec.security.devices {
        let target = ctx(
            &format!("create {}", device.container.display()),
            open_in_root(&root, &device.container, Create::File),
        )?;
        ctx(
            &format!("bind device {}", device.host.display()),
            inroot::bind(&device.host, &target, false, false),
        )?;
    }
    for (link, to) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("ptmx", "pts/ptmx"),
    ] {
        let _ = std::os::unix::fs::symlink(to, dev_path.join(link));
    }
    mount_fs(
        &root,
        "/dev/pts",
        "devpts",
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620"),
    )?;
    let shm = ctx("create /dev/shm", open_in_root(&root, Path::new("/dev/shm"), Create::Dir))?;
    mount_at(
        "shm",
        Some(Path::new("shm")),
        &fd_path(&shm),
        Some("tmpfs"),
        nosuid_noexec_nodev,
        Some("mode=1777,size=65536k"),
    )?;
    mount_fs(&root, "/dev/mqueue", "mqueue", nosuid_noexec_nodev, None)?;

    // A fresh sysfs even in the host's network namespace (it shows that namespace's devices):
    // a bind of the host's /sys would bring its writable submounts (/sys/fs/cgroup) along.
    let sys_flags = if privileged { nosuid_noexec_nodev } else { nosuid_noexec_nodev | MsFlags::MS_RDONLY };
    mount_fs(&root, "/sys", "sysfs", sys_flags, None)?;

    mount_cgroups(&root, spec, cgroup, privileged)?;

    if !privileged {
        for path in paths::MASKED {
            mask(&root, path)?;
        }
        for path in paths::READ_ONLY {
            match inroot::freeze(&root, Path::new(path)) {
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
                other => ctx(&format!("make {path} read-only"), other)?,
            }
        }
    }

    for file in ["hosts", "hostname", "resolv.conf"] {
        ctx("replace /etc link", inroot::unlink_symlink(&root, Path::new("/etc"), file))?;
        let target = ctx(
            &format!("create /etc/{file}"),
            open_in_root(&root, &Path::new("/etc").join(file), Create::File),
        )?;
        ctx(&format!("bind /etc/{file}"), inroot::bind(&dir.join(file), &target, false, false))?;
    }
    for bind in &spec.mounts {
        let kind = if bind.source.is_dir() { Create::Dir } else { Create::File };
        let target = ctx(
            &format!("create mount point {}", bind.target.display()),
            open_in_root(&root, &bind.target, kind),
        )?;
        ctx(
            &format!("mount volume {}:{}", bind.source.display(), bind.target.display()),
            inroot::bind(&bind.source, &target, true, bind.readonly),
        )?;
    }
    for tmpfs in &spec.security.tmpfs {
        let (flags, data) = tmpfs_options(&tmpfs.options);
        let target = ctx(
            &format!("create mount point {}", tmpfs.target.display()),
            open_in_root(&root, &tmpfs.target, Create::Dir),
        )?;
        mount_at(
            "tmpfs",
            Some(Path::new("tmpfs")),
            &fd_path(&target),
            Some("tmpfs"),
            flags,
            (!data.is_empty()).then_some(data.as_str()),
        )?;
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
    drop((root, dev));
    ctx("chdir to new root", std::env::set_current_dir(&merged))?;
    ctx("pivot_root", nix::unistd::pivot_root(".", "."))?;
    ctx("detach old root", umount2(".", MntFlags::MNT_DETACH))?;
    ctx("chdir /", std::env::set_current_dir("/"))?;
    Ok(())
}

/// /sys/fs/cgroup as Docker gives it: the container's own groups (its cgroup namespace's root is
/// its group), read-only unless privileged. cgroup v2: one cgroup2 mount. v1: a tmpfs holding
/// one mount per hierarchy the container was put in (with the host's controller sets, so
/// `cpu,cpuacct` stay joined), then made read-only.
fn mount_cgroups(root: &OwnedFd, spec: &ContainerSpec, cgroup: &Cgroup, privileged: bool) -> Step<()> {
    let ro = if privileged { MsFlags::empty() } else { MsFlags::MS_RDONLY };
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    if matches!(cgroup.hierarchy(), Hierarchy::V2(_)) {
        mount_fs(root, "/sys/fs/cgroup", "cgroup2", flags | ro, None)?;
        return Ok(());
    }
    let base =
        ctx("create /sys/fs/cgroup", open_in_root(root, Path::new("/sys/fs/cgroup"), Create::Nothing))?;
    mount_at("tmpfs", Some(Path::new("tmpfs")), &fd_path(&base), Some("tmpfs"), flags, Some("mode=755"))?;
    // The descriptor names the directory under the new tmpfs: look it up again to get the tmpfs.
    let base = ctx("open /sys/fs/cgroup", open_in_root(root, Path::new("/sys/fs/cgroup"), Create::Nothing))?;
    // The hierarchies the monitor put the container in (the first component below the root).
    let joined: Vec<String> = cgroup
        .dirs()
        .iter()
        .filter_map(|d| {
            d.strip_prefix(&spec.cgroup_root).ok()?.iter().next().map(|c| c.to_string_lossy().into_owned())
        })
        .collect();
    let mounts = fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    for line in mounts.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [_, target, "cgroup", options, ..] = fields.as_slice() else { continue };
        let Ok(rel) = Path::new(target).strip_prefix(&spec.cgroup_root) else { continue };
        let name = rel.to_string_lossy().into_owned();
        let controllers: Vec<&str> = options
            .split(',')
            .filter(|o| !["rw", "ro", "relatime", "nosuid", "nodev", "noexec"].contains(o))
            .collect();
        if name.is_empty() || name.contains('/') || !controllers.iter().any(|c| joined.iter().any(|j| j == c))
        {
            continue;
        }
        let dir = fd_path(&base).join(&name);
        ctx(&format!("create /sys/fs/cgroup/{name}"), fs::create_dir_all(&dir))?;
        mount_at(
            "cgroup",
            Some(Path::new("cgroup")),
            &dir,
            Some("cgroup"),
            flags | ro,
            Some(&controllers.join(",")),
        )?;
    }
    if !privileged {
        mount_at(
            "/sys/fs/cgroup read-only",
            None,
            &fd_path(&base),
            None,
            MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY | flags,
            None,
        )?;
    }
    Ok(())
}

/// `--privileged`: every character and block device of the host's /dev, as Docker gives them.
fn populate_host_devices(dev: &Path) -> Step<()> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let Ok(entries) = fs::read_dir("/dev") else { return Ok(()) };
    for entry in entries.flatten() {
        let Ok(meta) = entry.metadata() else { continue };
        let kind = if meta.file_type().is_block_device() {
            libc::S_IFBLK
        } else if meta.file_type().is_char_device() {
            libc::S_IFCHR
        } else {
            continue;
        };
        let target = dev.join(entry.file_name());
        if target.exists() {
            continue;
        }
        let Ok(path) = CString::new(target.as_os_str().as_encoded_bytes()) else { continue };
        // SAFETY: mknod of a path we built inside the container's own /dev tmpfs.
        unsafe { libc::mknod(path.as_ptr(), kind | (meta.mode() & 0o7777), meta.rdev()) };
    }
    Ok(())
}

/// The workload, between fork and exec: stdio onto the log pipes, then confined and executed.
fn exec_workload(spec: &ContainerSpec, confinement: &Confinement, stdio: [RawFd; 2]) -> confine::Failure {
    // SAFETY: single-threaded child: fd and signal-mask manipulation before exec.
    unsafe {
        let empty: libc::sigset_t = std::mem::zeroed();
        libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY);
        libc::dup2(null, 0);
        libc::dup2(stdio[0], 1);
        libc::dup2(stdio[1], 2);
        if null > 2 {
            libc::close(null);
        }
    }
    let process = Process {
        argv: &spec.argv,
        env: spec.env.clone(),
        cwd: &spec.cwd,
        user: &spec.user,
        hostname: &spec.hostname,
    };
    confine::exec(confinement, &process)
}

/// weft's init: PID 1 of the container. Once the workload is forked it keeps no capability: it
/// only forwards signals and reaps, so a workload that reached it would gain nothing.
fn init(spec: &ContainerSpec, confinement: &Confinement, stdio: [RawFd; 2], sync: RawFd) -> ! {
    // SAFETY: single-threaded process; classic fork / sigwait / waitpid init loop.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::sigprocmask(libc::SIG_BLOCK, &all, std::ptr::null_mut());
        let workload = libc::fork();
        if workload < 0 {
            fail(sync, SETUP_FAILED, &format!("fork workload: {}", std::io::Error::last_os_error()));
        }
        if workload == 0 {
            let failure = exec_workload(spec, confinement, stdio);
            fail(sync, failure.code, &failure.message);
        }
        libc::close(sync);
        libc::close(stdio[0]);
        libc::close(stdio[1]);
        // Keep stdio away from the log pipes so the monitor sees EOF when the workload is gone.
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        for fd in 0..3 {
            libc::dup2(null, fd);
        }
        if null > 2 {
            libc::close(null);
        }
        let _ = libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
        if !spec.security.privileged {
            libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
            // CAP_KILL stays: the workload may run as another user and still gets its signals.
            let _ = confine::set_capabilities(&[5]);
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
