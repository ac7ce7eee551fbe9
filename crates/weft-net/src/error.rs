//! Typed errors that name the kernel object and the operation.

use std::fmt;

/// An error the kernel returned for a netlink request, with its errno.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelError {
    /// The positive errno, or 0 when the failure was not an errno (a broken connection, a reply
    /// that could not be decoded).
    pub errno: i32,
    /// What went wrong, in words.
    pub message: String,
}

impl fmt::Display for KernelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.errno == 0 {
            f.write_str(&self.message)
        } else {
            write!(f, "{} (errno {})", self.message, self.errno)
        }
    }
}

impl std::error::Error for KernelError {}

impl From<rtnetlink::Error> for KernelError {
    fn from(err: rtnetlink::Error) -> KernelError {
        match err {
            rtnetlink::Error::NetlinkError(msg) => match msg.code {
                Some(code) => {
                    let errno = -code.get();
                    KernelError { errno, message: std::io::Error::from_raw_os_error(errno).to_string() }
                }
                None => KernelError { errno: 0, message: "netlink error without a code".into() },
            },
            other => KernelError { errno: 0, message: other.to_string() },
        }
    }
}

/// Everything weft-net can fail with.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// Input refused before anything was sent to the kernel.
    #[error("invalid {what} {value:?}: {reason}")]
    Invalid {
        /// What kind of value (link name, VNI, route...).
        what: &'static str,
        /// The value as given.
        value: String,
        /// Why it is refused.
        reason: String,
    },
    /// The kernel refused a request.
    #[error("{op} {object}: {source}")]
    Kernel {
        /// The operation, e.g. "create vxlan".
        op: &'static str,
        /// The object, e.g. "link wvx-42".
        object: String,
        /// The kernel's answer.
        #[source]
        source: KernelError,
    },
    /// The object does not exist.
    #[error("{op} {object}: not found")]
    NotFound {
        /// The operation.
        op: &'static str,
        /// The object looked for.
        object: String,
    },
    /// A link of the wanted name exists but is of another kind; weft will not replace it.
    #[error("link {name} exists but is a {found} link, not a {wanted} link; remove it or pick another name")]
    WrongKind {
        /// The link's name.
        name: String,
        /// Its kind.
        found: String,
        /// The kind asked for.
        wanted: &'static str,
    },
    /// A network namespace operation failed.
    #[error("network namespace {ns}: {op}: {source}")]
    Netns {
        /// The namespace's name or path.
        ns: String,
        /// The operation.
        op: &'static str,
        /// The system error.
        #[source]
        source: std::io::Error,
    },
    /// A socket of weft's own (the nftables event subscription) failed.
    #[error("{op}: {source}")]
    Socket {
        /// What was being done.
        op: &'static str,
        /// The system error.
        #[source]
        source: std::io::Error,
    },
    /// Reading or writing a sysctl failed.
    #[error("sysctl {key}: {source}")]
    Sysctl {
        /// The key, e.g. net.ipv4.ip_forward.
        key: String,
        /// The system error.
        #[source]
        source: std::io::Error,
    },
    /// A job sent to a namespace worker did not finish: it panicked or the worker stopped.
    #[error("netns worker {0}: the job panicked or the worker has stopped")]
    WorkerGone(String),
}

impl NetError {
    /// The errno behind a kernel error, if any.
    pub fn errno(&self) -> Option<i32> {
        match self {
            NetError::Kernel { source, .. } if source.errno != 0 => Some(source.errno),
            NetError::Netns { source, .. } | NetError::Sysctl { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }

    pub(crate) fn kernel(op: &'static str, object: impl Into<String>, err: rtnetlink::Error) -> NetError {
        NetError::Kernel { op, object: object.into(), source: err.into() }
    }

    pub(crate) fn invalid(
        what: &'static str,
        value: impl fmt::Display,
        reason: impl Into<String>,
    ) -> NetError {
        NetError::Invalid { what, value: value.to_string(), reason: reason.into() }
    }
}

/// The result type of weft-net.
pub type Result<T, E = NetError> = std::result::Result<T, E>;

pub(crate) fn errno_of(err: &rtnetlink::Error) -> i32 {
    match err {
        rtnetlink::Error::NetlinkError(msg) => msg.code.map(|c| -c.get()).unwrap_or(0),
        _ => 0,
    }
}
