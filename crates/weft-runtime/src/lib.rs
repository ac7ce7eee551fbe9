//! weft-runtime is the node-local container runtime: content-addressed image layers, overlayfs
//! root filesystems, namespaces, cgroups (v1 and v2), weft's own init as PID 1, the per-container
//! monitor, logs and exec.
//!
//! It must never configure networking beyond the namespace a container is given (network modes
//! are wired by the agent through `weft-net` and `weft-overlay`), and never trust an image: every
//! layer is checked against its digest and unpacked so that nothing can land outside it.

pub mod build;
pub mod cgroup;
pub mod container;
pub mod devices;
pub mod duration;
pub mod image;
pub mod security;

use std::path::PathBuf;

/// Everything the runtime can fail with.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// Input refused before anything was written.
    #[error("invalid {what} {value:?}: {reason}")]
    Invalid {
        /// What kind of value.
        what: &'static str,
        /// The value.
        value: String,
        /// Why.
        reason: String,
    },
    /// A layer or archive entry that would escape its root or is not allowed.
    #[error("refused layer entry {entry:?}: {reason}")]
    UnsafeEntry {
        /// The entry's path as stored in the archive.
        entry: String,
        /// Why it is refused.
        reason: String,
    },
    /// Content whose digest is not the one it was announced with.
    #[error("digest mismatch for {what}: expected {expected}, got {actual}")]
    DigestMismatch {
        /// What was checked.
        what: String,
        /// The announced digest.
        expected: String,
        /// The digest of the bytes.
        actual: String,
    },
    /// An image or archive that does not follow its format.
    #[error("bad image: {0}")]
    BadImage(String),
    /// No image of that name or id.
    #[error("no such image: {0}")]
    NoSuchImage(String),
    /// No container of that name or id.
    #[error("no such container: {0}")]
    NoSuchContainer(String),
    /// Another container has the name.
    #[error("the container name {0:?} is already in use")]
    NameInUse(String),
    /// The container is running and the operation needs it stopped (or forced).
    #[error("container {0} is running: stop it first or force removal")]
    Running(String),
    /// The container is not running.
    #[error("container {0} is not running")]
    NotRunning(String),
    /// The container could not start.
    #[error("container {id} could not start: {reason}")]
    StartFailed {
        /// The container.
        id: String,
        /// What the monitor or init reported.
        reason: String,
        /// The exit status Docker reports for it: 127 the command does not exist, 126 it cannot
        /// be invoked, 125 anything else (set-up).
        code: i32,
    },
    /// Waiting for the container timed out.
    #[error("timed out waiting for container {0}")]
    Timeout(String),
    /// A Dockerfile build failed at a line.
    #[error("Dockerfile line {line}: {message}")]
    Build {
        /// The line.
        line: usize,
        /// What failed.
        message: String,
    },
    /// A device cgroup does not hold the rules it was given, or cannot hold them.
    #[error("device rules of cgroup {path}: {reason}")]
    Devices {
        /// The group's directory.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A BPF program could not be loaded, attached, queried or detached.
    #[error("bpf {op} on {path}: {source}{}", verifier_log(.log))]
    Bpf {
        /// The operation.
        op: &'static str,
        /// The cgroup directory.
        path: PathBuf,
        /// The error bpf(2) returned.
        #[source]
        source: std::io::Error,
        /// The verifier's log when a load was refused (empty otherwise).
        log: String,
    },
    /// A state file could not be written or read back.
    #[error(transparent)]
    File(#[from] weft_fs::FileError),
    /// A file-system operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// The operation.
        op: &'static str,
        /// The path.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

impl RuntimeError {
    pub(crate) fn invalid(
        what: &'static str,
        value: impl Into<String>,
        reason: impl Into<String>,
    ) -> RuntimeError {
        RuntimeError::Invalid { what, value: value.into(), reason: reason.into() }
    }

    pub(crate) fn unsafe_entry(entry: impl Into<String>, reason: impl Into<String>) -> RuntimeError {
        RuntimeError::UnsafeEntry { entry: entry.into(), reason: reason.into() }
    }

    pub(crate) fn io(
        op: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> RuntimeError {
        let path = path.into();
        move |source| RuntimeError::Io { op, path, source }
    }
}

fn verifier_log(log: &str) -> String {
    if log.is_empty() { String::new() } else { format!("; verifier log:\n{log}") }
}

/// Results of this crate.
pub type Result<T, E = RuntimeError> = std::result::Result<T, E>;
