//! Watches on a container's directory, so whoever waits for a container (its start, its exit, its
//! next log line) is woken by the change instead of polling.
//!
//! Closing an inotify descriptor waits for an SRCU grace period in the kernel (10-20 ms here), and
//! a watch lives for one wait or one follower: so descriptors are not closed but kept in a small
//! pool, their watch removed, and handed to the next watch.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};

/// Idle descriptors kept for reuse; beyond that they are closed (each process has at most 128
/// inotify instances by default, so the pool stays well under).
const POOL_MAX: usize = 16;

/// inotify descriptors without a watch, ready for the next [`ChangeWatch`].
#[derive(Debug)]
struct Pool(Mutex<Vec<Inotify>>);

/// The process's pool.
static IDLE: Pool = Pool(Mutex::new(Vec::new()));

impl Pool {
    fn take(&self) -> std::io::Result<Inotify> {
        match self.0.lock().unwrap_or_else(|p| p.into_inner()).pop() {
            Some(inotify) => Ok(inotify),
            None => Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC).map_err(to_io),
        }
    }

    /// Takes back a descriptor without watches (or closes it when the pool is full).
    fn give_back(&self, inotify: Inotify) {
        // What the removed watch queued (at least its IN_IGNORED) must not wake the next user.
        while inotify.read_events().is_ok_and(|events| !events.is_empty()) {}
        let mut idle = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < POOL_MAX {
            idle.push(inotify);
        }
    }
}

fn to_io(e: nix::Error) -> std::io::Error {
    std::io::Error::from_raw_os_error(e as i32)
}

/// Changes to a container's directory (see [`crate::container::Runtime::watch`]): poll its
/// descriptor for readability, then [`ChangeWatch::drain`] it and look at the container again.
#[derive(Debug)]
pub struct ChangeWatch {
    /// Always `Some` until dropped (then the descriptor goes back to the pool).
    inotify: Option<Inotify>,
    watch: WatchDescriptor,
    pool: &'static Pool,
}

impl ChangeWatch {
    /// A watch on `dir`: written files, renames into it, new entries, its removal.
    pub(crate) fn on(dir: &Path) -> std::io::Result<ChangeWatch> {
        ChangeWatch::from_pool(dir, &IDLE)
    }

    fn from_pool(dir: &Path, pool: &'static Pool) -> std::io::Result<ChangeWatch> {
        let inotify = pool.take()?;
        let flags = AddWatchFlags::IN_MODIFY
            | AddWatchFlags::IN_CLOSE_WRITE
            | AddWatchFlags::IN_MOVED_TO
            | AddWatchFlags::IN_CREATE
            | AddWatchFlags::IN_DELETE_SELF;
        match inotify.add_watch(dir, flags) {
            Ok(watch) => Ok(ChangeWatch { inotify: Some(inotify), watch, pool }),
            Err(e) => {
                pool.give_back(inotify);
                Err(to_io(e))
            }
        }
    }

    fn inotify(&self) -> &Inotify {
        self.inotify.as_ref().expect("a live watch holds its descriptor")
    }

    /// Blocks until a change is pending or `timeout` passed, then reads the pending ones away.
    pub(crate) fn wait(&self, timeout: Duration) {
        readable_within(self, timeout);
        self.drain();
    }

    /// Reads away the pending notifications (their content does not matter: the container is
    /// looked at again whole).
    pub fn drain(&self) {
        while self.inotify().read_events().is_ok_and(|events| !events.is_empty()) {}
    }
}

impl Drop for ChangeWatch {
    fn drop(&mut self) {
        if let Some(inotify) = self.inotify.take() {
            // Fails only when the directory is gone, which removed the watch already.
            let _ = inotify.rm_watch(self.watch);
            self.pool.give_back(inotify);
        }
    }
}

impl AsFd for ChangeWatch {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.inotify().as_fd()
    }
}

impl AsRawFd for ChangeWatch {
    fn as_raw_fd(&self) -> RawFd {
        self.inotify().as_fd().as_raw_fd()
    }
}

/// Readable once a running container's monitor has exited, which it does only after recording
/// the container's exit (`exit.json`): a pidfd on the monitor, so whoever keeps track of exits
/// (restart policies, health checks, `--rm`) is woken by the exit itself instead of polling.
#[derive(Debug)]
pub struct ExitNotice {
    pidfd: std::os::fd::OwnedFd,
}

impl ExitNotice {
    /// A notice for the monitor `pid` that started at `start` (clock ticks after boot, 0 when
    /// unknown). `Ok(None)`: that monitor is gone already (the container's exit is recorded, or
    /// its monitor died), so there is nothing to wait for.
    pub(crate) fn on(pid: u32, start: u64) -> std::io::Result<Option<ExitNotice>> {
        use std::os::fd::FromRawFd;
        // SAFETY: pidfd_open with a pid and no flags returns a new descriptor or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
        if fd < 0 {
            let err = std::io::Error::last_os_error();
            return match err.raw_os_error() {
                Some(libc::ESRCH) => Ok(None),
                _ => Err(err),
            };
        }
        // SAFETY: the kernel just returned this descriptor, owned by nobody else.
        let pidfd = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as RawFd) };
        // The pid may have been reused since the monitor recorded it: checked after opening, so
        // the descriptor is known to be the monitor's (a pidfd never follows a reused pid).
        if start != 0 && super::procfs::process_start(pid) != Some(start) {
            return Ok(None);
        }
        Ok(Some(ExitNotice { pidfd }))
    }

    /// Blocks until the monitor has exited or `timeout` passed.
    pub(crate) fn wait(&self, timeout: Duration) {
        readable_within(self, timeout);
    }
}

/// Whether `fd` becomes readable within `timeout` (blocking the calling thread until then).
fn readable_within(fd: &impl AsRawFd, timeout: Duration) -> bool {
    let mut pfd = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    let millis = timeout.as_millis().min(i32::MAX as u128) as i32;
    // SAFETY: one valid pollfd for the length of the call.
    unsafe { libc::poll(&mut pfd, 1, millis) == 1 }
}

impl AsFd for ExitNotice {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.pidfd.as_fd()
    }
}

impl AsRawFd for ExitNotice {
    fn as_raw_fd(&self) -> RawFd {
        self.pidfd.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(tag: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("weft-watch-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_write_wakes_the_watch_and_a_reused_descriptor_carries_no_old_events() {
        let pool: &'static Pool = Box::leak(Box::new(Pool(Mutex::new(Vec::new()))));
        let (a, b) = (scratch("a"), scratch("b"));
        let first = ChangeWatch::from_pool(&a, pool).unwrap();
        let fd = first.as_raw_fd();
        std::fs::write(a.join("state.json"), b"{}").unwrap();
        let started = std::time::Instant::now();
        first.wait(Duration::from_secs(5));
        assert!(started.elapsed() < Duration::from_secs(1), "the write did not wake the watch");
        // Pending events of a dropped watch never reach the next one on the same descriptor.
        std::fs::write(a.join("other"), b"x").unwrap();
        drop(first);
        let second = ChangeWatch::from_pool(&b, pool).unwrap();
        assert_eq!(second.as_raw_fd(), fd, "the descriptor was not reused from the pool");
        std::fs::write(a.join("later"), b"x").unwrap();
        assert!(
            !readable_within(&second, Duration::from_millis(100)),
            "a reused descriptor woke for the previous directory's change"
        );
        // Control: a change in its own directory wakes it.
        std::fs::write(b.join("exit.json"), b"{}").unwrap();
        assert!(readable_within(&second, Duration::from_secs(1)));
        drop(second);
        let _ = (std::fs::remove_dir_all(&a), std::fs::remove_dir_all(&b));
    }

    #[test]
    fn an_exit_notice_becomes_readable_when_the_process_exits_and_not_before() {
        let mut child = std::process::Command::new("sleep").arg("0.3").spawn().unwrap();
        let start = super::super::procfs::process_start(child.id()).unwrap();
        let notice = ExitNotice::on(child.id(), start).unwrap().expect("the process runs");
        assert!(!readable_within(&notice, Duration::from_millis(50)), "readable while the process runs");
        assert!(readable_within(&notice, Duration::from_secs(5)), "not readable after the exit");
        child.wait().unwrap();
        // A recorded start time that is not the process's: another process has that pid now.
        let mut other = std::process::Command::new("sleep").arg("5").spawn().unwrap();
        let reused = ExitNotice::on(other.id(), start.wrapping_add(1)).unwrap();
        other.kill().unwrap();
        other.wait().unwrap();
        assert!(reused.is_none(), "a notice was made for a process that is not the recorded one");
    }
}
