//! The per-container monitor: a small process that owns the container's log pipes and waits for
//! its exit, so that weftd can die and restart without touching running containers. It is the
//! container init's parent; it writes `state.json` once the workload runs and `exit.json` when it
//! is gone.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use nix::fcntl::OFlag;
use nix::sched::{CloneFlags, unshare};

use super::exec::{self, ExecOptions};
use super::procfs::process_start;
use super::setup::container_main;
use super::spec::{ContainerSpec, ExitState, LogLine, RunState, Security};
use crate::cgroup::{Cgroup, Hierarchy};
use crate::devices::{Access, DeviceKind, DeviceRule};

/// Nanoseconds since the epoch.
pub fn now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

/// Writes a container's record as JSON to `path` atomically. Its config is durable; its run and
/// exit state only atomic (they describe processes that do not outlive a reboot).
pub(crate) fn write_json<T: serde::Serialize>(
    path: &Path,
    value: &T,
    durability: weft_fs::Durability,
) -> Result<(), weft_fs::FileError> {
    weft_fs::write_json(path, value, 0o600, durability)
}

/// What the container's cgroup lets it open: everything when privileged, otherwise Docker's
/// allow-list and each `--device` with its permissions.
fn device_rules(security: &Security) -> crate::Result<Vec<DeviceRule>> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    if security.privileged {
        return Ok(vec![DeviceRule::allow(DeviceKind::All, None, None, Access::ALL)]);
    }
    let mut rules = DeviceRule::docker_default();
    for device in &security.devices {
        let meta = fs::metadata(&device.host).map_err(crate::RuntimeError::io("--device", &device.host))?;
        let kind = if meta.file_type().is_block_device() { DeviceKind::Block } else { DeviceKind::Char };
        let (major, minor) = (libc::major(meta.rdev()), libc::minor(meta.rdev()));
        rules.push(DeviceRule::allow(kind, Some(major), Some(minor), Access::parse(&device.access)?));
    }
    Ok(rules)
}

fn finish(dir: &Path, state: ExitState) -> i32 {
    if let Err(e) = write_json(&dir.join("exit.json"), &state, weft_fs::Durability::Volatile) {
        eprintln!("weft monitor: {e}");
    }
    0
}

/// Runs the monitor for the container in `dir`; returns the monitor's own exit code. The caller
/// (the shim binary) has already detached it from weftd.
pub fn run(dir: &Path) -> i32 {
    let failed = |error: String| ExitState {
        code: 125,
        signal: None,
        oom_killed: false,
        error: Some(error),
        finished_ns: now_ns(),
    };
    let spec: ContainerSpec = match fs::read(dir.join("config.json"))
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
    {
        Ok(spec) => spec,
        Err(e) => return finish(dir, failed(format!("read config: {e}"))),
    };
    let cgroup =
        match Cgroup::create(&Hierarchy::detect(&spec.cgroup_root), &spec.cgroup_path, &spec.limits.into()) {
            Ok(c) => c,
            Err(e) => return finish(dir, failed(format!("create cgroup: {e}"))),
        };
    if let Err(e) = device_rules(&spec.security).and_then(|rules| cgroup.set_devices(&rules)) {
        let _ = cgroup.remove();
        return finish(dir, failed(format!("device rules: {e}")));
    }
    let pipe = || nix::unistd::pipe2(OFlag::O_CLOEXEC);
    let (Ok((out_r, out_w)), Ok((err_r, err_w)), Ok((sync_r, sync_w))) = (pipe(), pipe(), pipe()) else {
        return finish(dir, failed("create pipes".into()));
    };
    if let Err(e) = unshare(CloneFlags::CLONE_NEWPID) {
        return finish(dir, failed(format!("unshare pid namespace: {e}")));
    }
    // SAFETY: the monitor is single-threaded, so the child may allocate before it execs.
    let child = unsafe { libc::fork() };
    if child < 0 {
        return finish(dir, failed(format!("fork: {}", std::io::Error::last_os_error())));
    }
    if child == 0 {
        drop((out_r, err_r, sync_r));
        container_main(&spec, dir, [out_w.as_raw_fd(), err_w.as_raw_fd()], sync_w.as_raw_fd(), &cgroup);
    }
    drop((out_w, err_w, sync_w));
    let mut error = Vec::new();
    let _ = std::io::Read::read_to_end(&mut fs::File::from(sync_r), &mut error);
    if !error.is_empty() {
        let mut status = 0;
        // SAFETY: waiting for our own child.
        unsafe { libc::waitpid(child, &mut status, 0) };
        let _ = cgroup.remove();
        let text = String::from_utf8_lossy(&error).into_owned();
        let (code, message) = match text.split_once('\n') {
            Some((code, message)) if code.parse::<i32>().is_ok() => {
                (code.parse().unwrap_or(125), message.to_string())
            }
            _ => (125, text),
        };
        return finish(dir, ExitState { code, ..failed(message) });
    }
    let monitor_pid = std::process::id();
    let state = RunState {
        pid: child as u32,
        monitor_pid,
        started_ns: now_ns(),
        pid_start: process_start(child as u32).unwrap_or(0),
        monitor_start: process_start(monitor_pid).unwrap_or(0),
    };
    if let Err(e) = write_json(&dir.join("state.json"), &state, weft_fs::Durability::Volatile) {
        eprintln!("weft monitor: {e}");
    }
    pump_logs(dir, out_r, err_r);
    let mut status = 0;
    // SAFETY: waiting for our own child.
    unsafe { libc::waitpid(child, &mut status, 0) };
    let (code, signal) = if libc::WIFEXITED(status) {
        let code = libc::WEXITSTATUS(status);
        (code, (code > 128).then_some(code - 128))
    } else {
        let sig = libc::WTERMSIG(status);
        (128 + sig, Some(sig))
    };
    let oom_killed = cgroup.stats().map(|s| s.oom_kills > 0).unwrap_or(false);
    let _ = cgroup.remove();
    finish(dir, ExitState { code, signal, oom_killed, error: None, finished_ns: now_ns() })
}

/// The longest line the monitor holds (Docker's limit): a longer one is logged in pieces of this
/// size, so a workload that never writes a newline cannot make the monitor grow without bound.
pub const MAX_LOG_LINE: usize = 16 * 1024;

/// Copies both pipes into `container.log` as JSON lines until both reach end of file.
fn pump_logs(dir: &Path, out: OwnedFd, err: OwnedFd) {
    let mut log = match OpenOptions::new().create(true).append(true).open(dir.join("container.log")) {
        Ok(f) => f,
        Err(_) => return,
    };
    let mut streams = [(out, "stdout", Vec::new(), true), (err, "stderr", Vec::new(), true)];
    let mut buf = [0u8; 16384];
    while streams.iter().any(|s| s.3) {
        let mut fds: Vec<libc::pollfd> = streams
            .iter()
            .filter(|s| s.3)
            .map(|s| libc::pollfd { fd: s.0.as_raw_fd(), events: libc::POLLIN, revents: 0 })
            .collect();
        // SAFETY: a valid array of pollfds.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) };
        if n < 0 {
            continue;
        }
        for pfd in fds.iter().filter(|p| p.revents != 0) {
            let stream = streams.iter_mut().find(|s| s.0.as_raw_fd() == pfd.fd).expect("polled stream");
            // SAFETY: reading into a stack buffer from an fd we own.
            let got = unsafe { libc::read(pfd.fd, buf.as_mut_ptr().cast(), buf.len()) };
            if got <= 0 {
                stream.3 = false;
                if !stream.2.is_empty() {
                    let rest = std::mem::take(&mut stream.2);
                    emit(&mut log, stream.1, &rest);
                }
                continue;
            }
            stream.2.extend_from_slice(&buf[..got as usize]);
            let name = stream.1;
            split_lines(&mut stream.2, |line| emit(&mut log, name, line));
        }
    }
}

/// Takes every complete line off `buf` (without its newline) and hands it to `out`; a line
/// longer than [`MAX_LOG_LINE`] goes out in pieces of that size, however the reads cut it, so
/// `buf` never holds a full piece after this returns.
fn split_lines(buf: &mut Vec<u8>, mut out: impl FnMut(&[u8])) {
    loop {
        let newline = buf.iter().take(MAX_LOG_LINE + 1).position(|b| *b == b'\n');
        if let Some(pos) = newline {
            let line: Vec<u8> = buf.drain(..=pos).collect();
            out(&line[..line.len() - 1]);
        } else if buf.len() >= MAX_LOG_LINE {
            let piece: Vec<u8> = buf.drain(..MAX_LOG_LINE).collect();
            out(&piece);
        } else {
            return;
        }
    }
}

fn emit(log: &mut fs::File, stream: &str, line: &[u8]) {
    let entry =
        LogLine { ts: now_ns(), stream: stream.into(), line: String::from_utf8_lossy(line).into_owned() };
    if let Ok(mut bytes) = serde_json::to_vec(&entry) {
        bytes.push(b'\n');
        let _ = log.write_all(&bytes);
    }
}

/// The `monitor DIR` verb of any executable that serves as weft's shim: detaches from its caller
/// (a fork whose parent exits at once, then a new session), so weftd can exit and restart freely,
/// and runs the monitor for the container in DIR. Never returns.
pub fn shim_main(args: &[String]) -> ! {
    // Nothing the caller held open (weftd's raft log, sockets) may reach a container.
    // SAFETY: close_range with integer arguments, before anything here opens a descriptor.
    unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) };
    const USAGE: &str = "usage: monitor <container-dir> | exec <container-dir> <options-json>";
    let dir = match args {
        [verb, dir, options] if verb == "exec" => {
            let options: ExecOptions = match serde_json::from_str(options) {
                Ok(o) => o,
                Err(e) => {
                    eprintln!("weft exec: bad options: {e}");
                    std::process::exit(126);
                }
            };
            std::process::exit(exec::run(Path::new(dir), &options));
        }
        [verb, dir] if verb == "monitor" => dir,
        _ => {
            eprintln!("{USAGE}");
            std::process::exit(2);
        }
    };
    // SAFETY: called at the start of main, single-threaded; the parent only exits.
    match unsafe { libc::fork() } {
        -1 => {
            eprintln!("fork: {}", std::io::Error::last_os_error());
            std::process::exit(1);
        }
        0 => {
            // SAFETY: a new session so no terminal or process group of the caller reaches us.
            unsafe { libc::setsid() };
            std::process::exit(run(Path::new(dir)));
        }
        _ => std::process::exit(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_cut_at_16k_whatever_the_reads() {
        // One 40000-byte line, a newline, a short line: fed in chunks of several sizes.
        let mut input = vec![b'x'; 40_000];
        input.extend_from_slice(b"\nshort\n");
        for chunk in [1, 7, 4096, 16_384, 30_000, input.len()] {
            let (mut buf, mut lens) = (Vec::new(), Vec::new());
            for part in input.chunks(chunk) {
                buf.extend_from_slice(part);
                split_lines(&mut buf, |l| lens.push(l.len()));
                assert!(buf.len() < MAX_LOG_LINE, "never holds a full piece");
            }
            assert_eq!(lens, [16_384, 16_384, 7_232, 5], "chunks of {chunk}");
        }
        // A line of exactly 16 KiB stays one line.
        let mut buf = vec![b'y'; MAX_LOG_LINE];
        buf.push(b'\n');
        let mut lens = Vec::new();
        split_lines(&mut buf, |l| lens.push(l.len()));
        assert_eq!(lens, [MAX_LOG_LINE]);
    }
}
