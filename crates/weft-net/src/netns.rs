//! Network namespaces: create, open, delete, and run netlink work inside one.
//!
//! `unshare(CLONE_NEWNET)` and `setns` act on the calling thread, so nothing here ever moves a
//! caller's thread: creation happens on a short-lived thread, and work inside a namespace runs on
//! a [`NetnsWorker`], a dedicated thread that entered it once and owns its own netlink connection.

use std::fs::{File, OpenOptions};
use std::future::Future;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::thread::JoinHandle;

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, setns, unshare};
use tokio::sync::{mpsc, oneshot};

use crate::{NetError, Netlink, Result};

/// Where named namespaces are bind-mounted, as `ip netns` does, so both tools see the same ones.
pub const NETNS_RUN_DIR: &str = "/run/netns";

/// An open network namespace. Holding it keeps the namespace alive.
#[derive(Debug, Clone)]
pub struct NetNs {
    label: String,
    path: PathBuf,
    file: Arc<File>,
}

fn io_err(e: nix::Error) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}

impl NetNs {
    /// Creates the named namespace `/run/netns/NAME` (as `ip netns add NAME`) and opens it.
    pub fn create(name: &str) -> Result<NetNs> {
        validate_name(name)?;
        prepare_run_dir().map_err(|source| NetError::Netns {
            ns: name.to_string(),
            op: "prepare /run/netns",
            source,
        })?;
        NetNs::create_at(&Path::new(NETNS_RUN_DIR).join(name), name)
    }

    /// Creates a namespace bind-mounted at `path` (whose directory must exist; the file must not)
    /// and opens it, labelled `label` in errors. weftd keeps its containers' namespaces in its
    /// state dir this way, out of `ip netns`'s list.
    pub fn create_at(path: &Path, label: &str) -> Result<NetNs> {
        let err = |op, source| NetError::Netns { ns: label.to_string(), op, source };
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(|e| err("create mount point", e))?;
        let target = path.to_path_buf();
        let made = std::thread::spawn(move || -> io::Result<()> {
            unshare(CloneFlags::CLONE_NEWNET).map_err(io_err)?;
            mount(Some("/proc/thread-self/ns/net"), &target, None::<&str>, MsFlags::MS_BIND, None::<&str>)
                .map_err(io_err)
        })
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("namespace thread panicked")));
        if let Err(e) = made {
            let _ = std::fs::remove_file(path);
            return Err(err("unshare and bind-mount", e));
        }
        NetNs::open_labelled(path, label.to_string())
    }

    /// Opens the named namespace `/run/netns/NAME`.
    pub fn named(name: &str) -> Result<NetNs> {
        validate_name(name)?;
        NetNs::open_labelled(&Path::new(NETNS_RUN_DIR).join(name), name.to_string())
    }

    /// Opens a namespace by path (a bind mount, or `/proc/PID/ns/net`).
    pub fn open(path: impl AsRef<Path>) -> Result<NetNs> {
        let path = path.as_ref();
        NetNs::open_labelled(path, path.display().to_string())
    }

    /// Opens the namespace of process `pid`.
    pub fn of_pid(pid: u32) -> Result<NetNs> {
        NetNs::open(format!("/proc/{pid}/ns/net"))
    }

    /// Opens the namespace of the calling thread.
    pub fn current() -> Result<NetNs> {
        NetNs::open("/proc/thread-self/ns/net")
    }

    fn open_labelled(path: &Path, label: String) -> Result<NetNs> {
        let file =
            File::open(path).map_err(|source| NetError::Netns { ns: label.clone(), op: "open", source })?;
        Ok(NetNs { label, path: path.to_path_buf(), file: Arc::new(file) })
    }

    /// True when `/run/netns/NAME` exists.
    pub fn exists(name: &str) -> bool {
        validate_name(name).is_ok() && Path::new(NETNS_RUN_DIR).join(name).exists()
    }

    /// True when a namespace is bind-mounted at `path`. The mount point of a namespace made by
    /// [`NetNs::create_at`] under a persistent directory outlives the namespace across a reboot
    /// (as an empty file): this tells the two apart.
    pub fn is_mounted_at(path: &Path) -> bool {
        /// `NSFS_MAGIC` of linux/magic.h: the file system of namespace files.
        const NSFS_MAGIC: nix::sys::statfs::FsType = nix::sys::statfs::FsType(0x6e73_6673);
        nix::sys::statfs::statfs(path).is_ok_and(|fs| fs.filesystem_type() == NSFS_MAGIC)
    }

    /// Removes the named namespace `/run/netns/NAME` (as `ip netns delete NAME`). The namespace
    /// itself goes away once no process and no open handle holds it.
    pub fn delete(name: &str) -> Result<()> {
        validate_name(name)?;
        NetNs::delete_at(&Path::new(NETNS_RUN_DIR).join(name), name)
    }

    /// Removes the namespace bind-mounted at `path` (see [`NetNs::create_at`]).
    pub fn delete_at(path: &Path, label: &str) -> Result<()> {
        let err = |op, source| NetError::Netns { ns: label.to_string(), op, source };
        match umount2(path, MntFlags::MNT_DETACH) {
            Ok(()) | Err(nix::Error::EINVAL) => {}
            Err(nix::Error::ENOENT) => {
                return Err(err("unmount", io::Error::from(io::ErrorKind::NotFound)));
            }
            Err(e) => return Err(err("unmount", io_err(e))),
        }
        std::fs::remove_file(path).map_err(|e| err("remove mount point", e))
    }

    /// The name or path this namespace was opened by.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The path it was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Moves the calling thread into this namespace. Only for threads made for the purpose (a
    /// [`NetnsWorker`], a child between fork and exec): a thread of a shared pool must never call it.
    pub fn enter(&self) -> Result<()> {
        setns(self.file.as_fd(), CloneFlags::CLONE_NEWNET).map_err(|e| NetError::Netns {
            ns: self.label.clone(),
            op: "setns",
            source: io_err(e),
        })
    }

    /// Starts a worker thread inside this namespace.
    pub fn worker(&self) -> Result<NetnsWorker> {
        NetnsWorker::spawn(self)
    }
}

impl AsFd for NetNs {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

impl AsRawFd for NetNs {
    fn as_raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}

fn validate_name(name: &str) -> Result<()> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') || name.len() > 255 {
        return Err(NetError::invalid(
            "namespace name",
            name,
            "must be 1-255 bytes, without '/', and not . or ..",
        ));
    }
    Ok(())
}

/// Makes /run/netns a shared mount point, as iproute2 does, so namespaces bind-mounted there are
/// seen from mount namespaces created later.
fn prepare_run_dir() -> io::Result<()> {
    std::fs::create_dir_all(NETNS_RUN_DIR)?;
    let shared = MsFlags::MS_SHARED | MsFlags::MS_REC;
    match mount(Some("none"), NETNS_RUN_DIR, None::<&str>, shared, None::<&str>) {
        Ok(()) => Ok(()),
        Err(nix::Error::EINVAL) => {
            let bind = MsFlags::MS_BIND | MsFlags::MS_REC;
            mount(Some(NETNS_RUN_DIR), NETNS_RUN_DIR, None::<&str>, bind, None::<&str>).map_err(io_err)?;
            mount(Some("none"), NETNS_RUN_DIR, None::<&str>, shared, None::<&str>).map_err(io_err)
        }
        Err(e) => Err(io_err(e)),
    }
}

type Job = Box<dyn FnOnce(Netlink) -> Pin<Box<dyn Future<Output = ()>>> + Send>;

/// A thread that lives inside one network namespace with its own netlink connection and runs the
/// jobs sent to it, concurrently, on a single-threaded runtime.
///
/// Dropping the worker stops the thread (jobs still running are cancelled).
#[derive(Debug)]
pub struct NetnsWorker {
    label: String,
    jobs: Option<mpsc::UnboundedSender<Job>>,
    thread: Option<JoinHandle<()>>,
}

impl NetnsWorker {
    /// Starts a worker inside `ns`.
    pub fn spawn(ns: &NetNs) -> Result<NetnsWorker> {
        let label = ns.label.clone();
        let ns = ns.clone();
        let (jobs_tx, mut jobs_rx) = mpsc::unbounded_channel::<Job>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<()>>();
        let thread = std::thread::Builder::new()
            .name(format!("netns:{}", short(&label)))
            .spawn(move || {
                if let Err(e) = ns.enter() {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
                let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(rt) => rt,
                    Err(source) => {
                        let _ = ready_tx.send(Err(NetError::Netns {
                            ns: ns.label.clone(),
                            op: "start runtime",
                            source,
                        }));
                        return;
                    }
                };
                let local = tokio::task::LocalSet::new();
                local.block_on(&runtime, async move {
                    let netlink = match Netlink::connect() {
                        Ok(nl) => nl,
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                            return;
                        }
                    };
                    let _ = ready_tx.send(Ok(()));
                    while let Some(job) = jobs_rx.recv().await {
                        tokio::task::spawn_local(job(netlink.clone()));
                    }
                });
            })
            .map_err(|source| NetError::Netns { ns: label.clone(), op: "spawn worker thread", source })?;
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(NetnsWorker { label, jobs: Some(jobs_tx), thread: Some(thread) }),
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(e)
            }
            Err(_) => {
                let _ = thread.join();
                Err(NetError::WorkerGone(label))
            }
        }
    }

    /// The namespace's name or path.
    pub fn label(&self) -> &str {
        &self.label
    }

    fn submit<F, Fut, T>(&self, f: F) -> Result<oneshot::Receiver<T>>
    where
        F: FnOnce(Netlink) -> Fut + Send + 'static,
        Fut: Future<Output = T> + 'static,
        T: Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |nl| {
            Box::pin(async move {
                let _ = tx.send(f(nl).await);
            })
        });
        self.jobs
            .as_ref()
            .and_then(|jobs| jobs.send(job).ok())
            .ok_or_else(|| NetError::WorkerGone(self.label.clone()))?;
        Ok(rx)
    }

    /// Runs `f` inside the namespace and returns its output. The future `f` makes runs on the
    /// worker's thread, so it need not be `Send`.
    pub async fn run<F, Fut, T>(&self, f: F) -> Result<T>
    where
        F: FnOnce(Netlink) -> Fut + Send + 'static,
        Fut: Future<Output = T> + 'static,
        T: Send + 'static,
    {
        let rx = self.submit(f)?;
        rx.await.map_err(|_| NetError::WorkerGone(self.label.clone()))
    }

    /// Starts `f` inside the namespace without waiting for it: for long-running loops. The
    /// receiver yields its output when it finishes (an error if it panicked or the worker stopped).
    pub fn start<F, Fut, T>(&self, f: F) -> Result<oneshot::Receiver<T>>
    where
        F: FnOnce(Netlink) -> Fut + Send + 'static,
        Fut: Future<Output = T> + 'static,
        T: Send + 'static,
    {
        self.submit(f)
    }

    /// Like [`NetnsWorker::run`], for callers outside any async runtime.
    pub fn run_blocking<F, Fut, T>(&self, f: F) -> Result<T>
    where
        F: FnOnce(Netlink) -> Fut + Send + 'static,
        Fut: Future<Output = T> + 'static,
        T: Send + 'static,
    {
        let rx = self.submit(f)?;
        rx.blocking_recv().map_err(|_| NetError::WorkerGone(self.label.clone()))
    }
}

fn short(label: &str) -> String {
    label.rsplit('/').next().unwrap_or(label).chars().take(8).collect()
}

impl Drop for NetnsWorker {
    fn drop(&mut self) {
        self.jobs.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
