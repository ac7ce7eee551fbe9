//! Runs inside a container and tries, for real, what a hostile workload would try to reach its
//! host: host sysctls, the sysrq trigger, kernel memory, keys, a host disk, mounts, user
//! namespaces, the kernel keyring, processes outside, inherited descriptors, the cgroup tree.
//! Prints one line per attempt, `NAME: ok` or `NAME: ERRNO` (`EPERM`, `EROFS`, ...), or what was
//! seen; the escape tests compare these lines with what Docker answers.
//!
//! Usage: `weft-escape-probe DISK_MAJOR:DISK_MINOR HOST_PID` (a block device of the host and a
//! pid outside the container).

use std::ffi::CString;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};

fn errno_name(e: &std::io::Error) -> String {
    let name = match e.raw_os_error() {
        Some(libc::EPERM) => "EPERM",
        Some(libc::EACCES) => "EACCES",
        Some(libc::EROFS) => "EROFS",
        Some(libc::ESRCH) => "ESRCH",
        Some(libc::ENOENT) => "ENOENT",
        Some(libc::ENOSYS) => "ENOSYS",
        Some(libc::EINVAL) => "EINVAL",
        Some(libc::ENXIO) => "ENXIO",
        _ => return format!("{e}"),
    };
    name.to_string()
}

fn report(name: &str, result: std::io::Result<String>) {
    match result {
        Ok(seen) => println!("{name}: {seen}"),
        Err(e) => println!("{name}: {}", errno_name(&e)),
    }
}

fn last_error<T>() -> std::io::Result<T> {
    Err(std::io::Error::last_os_error())
}

fn c(s: &str) -> CString {
    CString::new(s).expect("no NUL")
}

/// Runs `f` in a forked child (for attempts that change the process, like unshare) and reports
/// its result: the child exits 0 on success or with the errno.
fn in_child(f: impl FnOnce() -> std::io::Result<()>) -> std::io::Result<String> {
    // SAFETY: the probe is single-threaded; the child only makes syscalls and exits.
    match unsafe { libc::fork() } {
        -1 => last_error(),
        0 => {
            let code = match f() {
                Ok(()) => 0,
                Err(e) => e.raw_os_error().unwrap_or(255),
            };
            // SAFETY: ending the child without running the parent's destructors.
            unsafe { libc::_exit(code) }
        }
        child => {
            let mut status = 0;
            // SAFETY: waiting for our own child.
            unsafe { libc::waitpid(child, &mut status, 0) };
            match libc::WEXITSTATUS(status) {
                0 => Ok("ok".into()),
                errno => Err(std::io::Error::from_raw_os_error(errno)),
            }
        }
    }
}

fn status_field(name: &str) -> String {
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:")).map(|v| v.trim().to_string()))
        .unwrap_or_default()
}

/// How a masked-or-not /proc file looks: a character device 1:3 (/dev/null over it) or the
/// kernel's own file.
fn looks(path: &str) -> std::io::Result<String> {
    let meta = fs::metadata(path)?;
    if meta.file_type().is_char_device() {
        let dev = meta.rdev();
        Ok(format!("masked (char {}:{})", libc::major(dev), libc::minor(dev)))
    } else if meta.is_dir() {
        let entries = fs::read_dir(path)?.count();
        Ok(format!("directory with {entries} entries"))
    } else {
        Ok("kernel file".into())
    }
}

/// Descriptors open in `dir` (a /proc/PID/fd) beyond stdin, stdout and stderr, with targets.
fn extra_fds(dir: &str) -> std::io::Result<String> {
    let mut extra = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let Ok(n) = entry.file_name().to_string_lossy().parse::<i32>() else { continue };
        if n <= 2 {
            continue;
        }
        let target = fs::read_link(entry.path()).map(|p| p.display().to_string()).unwrap_or_default();
        // The directory handle read_dir itself holds.
        if target.starts_with("/proc/") && target.ends_with("/fd") {
            continue;
        }
        extra.push(format!("{n}->{target}"));
    }
    Ok(if extra.is_empty() { "none".into() } else { extra.join(" ") })
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let disk = args.first().cloned().unwrap_or_else(|| "254:0".into());
    let host_pid: i32 = args.get(1).and_then(|p| p.parse().ok()).unwrap_or(1);
    let (major, minor) =
        disk.split_once(':').map(|(a, b)| (a.parse().unwrap_or(0), b.parse().unwrap_or(0))).unwrap_or((0, 0));

    println!("CapEff: {}", status_field("CapEff"));
    println!("NoNewPrivs: {}", status_field("NoNewPrivs"));
    println!("Seccomp: {}", status_field("Seccomp"));

    report(
        "write /proc/sys",
        fs::OpenOptions::new()
            .write(true)
            .open("/proc/sys/net/ipv4/ip_forward")
            .and_then(|mut f| f.write_all(b"0\n"))
            .map(|()| "ok".into()),
    );
    // Opened for writing only: a privileged probe must not trigger anything.
    report(
        "open /proc/sysrq-trigger",
        fs::OpenOptions::new().write(true).open("/proc/sysrq-trigger").map(|_| "ok".into()),
    );
    report(
        "read /proc/kcore",
        fs::File::open("/proc/kcore").and_then(|mut f| {
            let mut buf = [0u8; 4];
            let n = f.read(&mut buf)?;
            Ok(if n >= 4 && &buf == b"\x7fELF" { "ELF".into() } else { format!("{n} bytes") })
        }),
    );
    report("/proc/keys", looks("/proc/keys"));
    report("/proc/timer_list", looks("/proc/timer_list"));
    report("/sys/firmware", looks("/sys/firmware"));

    let node = "/tmp/probe-disk";
    let _ = fs::remove_file(node);
    // SAFETY: mknod with a NUL-terminated path and a device number.
    let made = unsafe { libc::mknod(c(node).as_ptr(), libc::S_IFBLK | 0o600, libc::makedev(major, minor)) };
    report("mknod block device", if made == 0 { Ok("ok".into()) } else { last_error() });
    report(
        "read block device",
        fs::File::open(node).and_then(|mut f| {
            let mut buf = [0u8; 512];
            // An unbound loop device reads as empty: opening and reading at all is the point.
            let _bytes = f.read(&mut buf)?;
            Ok("ok".into())
        }),
    );
    let _ = fs::remove_file(node);

    let _ = fs::create_dir_all("/tmp/probe-mnt");
    report(
        "mount tmpfs",
        in_child(|| {
            // SAFETY: mount with NUL-terminated strings.
            let rc = unsafe {
                libc::mount(
                    c("none").as_ptr(),
                    c("/tmp/probe-mnt").as_ptr(),
                    c("tmpfs").as_ptr(),
                    0,
                    std::ptr::null(),
                )
            };
            if rc == 0 { Ok(()) } else { last_error() }
        }),
    );
    report(
        "unshare user namespace",
        in_child(|| {
            // SAFETY: unshare with a flag, in a child that exits right after.
            if unsafe { libc::unshare(libc::CLONE_NEWUSER) } == 0 { Ok(()) } else { last_error() }
        }),
    );
    report(
        "keyctl",
        in_child(|| {
            // SAFETY: KEYCTL_GET_KEYRING_ID (0) of the user keyring (-4), without creating it.
            let rc = unsafe { libc::syscall(libc::SYS_keyctl, 0, -4i32, 0) };
            if rc >= 0 { Ok(()) } else { last_error() }
        }),
    );
    report(
        "ptrace a host process",
        in_child(|| {
            // SAFETY: PTRACE_ATTACH to a pid; the child exits right after.
            let rc = unsafe { libc::ptrace(libc::PTRACE_ATTACH, host_pid, 0, 0) };
            if rc == 0 { Ok(()) } else { last_error() }
        }),
    );
    report("descriptors of the probe", extra_fds("/proc/self/fd"));
    report("descriptors of pid 1", extra_fds("/proc/1/fd"));
    report("mkdir in /sys/fs/cgroup", fs::create_dir("/sys/fs/cgroup/probe").map(|()| "ok".into()));
    // The container's own pids limit, v1 or v2 layout: opened for writing only.
    let pids_max = ["/sys/fs/cgroup/pids/pids.max", "/sys/fs/cgroup/pids.max"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .unwrap_or("/sys/fs/cgroup/pids.max");
    report("open cgroup pids.max", fs::OpenOptions::new().write(true).open(pids_max).map(|_| "ok".into()));
    report(
        "open /sys/kernel/profiling",
        fs::OpenOptions::new().write(true).open("/sys/kernel/profiling").map(|_| "ok".into()),
    );
}
