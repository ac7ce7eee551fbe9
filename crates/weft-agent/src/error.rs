//! The host operations' error: typed, with the reason that goes on the wire, mapped to a gRPC
//! status only at the edge (the services).

use tonic::Status;
use weft_proto::v1 as pb;
use weft_runtime::RuntimeError;

/// A typed error of the node API, mapped to a gRPC status at the edge.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// Bad input; nothing was changed.
    #[error("{0}")]
    Invalid(String),
    /// No such object.
    #[error("{0}")]
    NotFound(String),
    /// The object exists or the resource is taken.
    #[error("{0}")]
    Conflict(String),
    /// The object is in the wrong state for this.
    #[error("{0}")]
    Precondition(String),
    /// The cluster could not be reached or refused.
    #[error("{0}")]
    Cluster(Status),
    /// The container's command could not be started: `code` is Docker's exit status for it
    /// (127 not found, 126 cannot be invoked, 125 set-up).
    #[error("{message}")]
    CannotRun {
        /// What failed.
        message: String,
        /// 125, 126 or 127.
        code: i32,
    },
    /// Something failed on this host.
    #[error("{0}")]
    Internal(String),
}

impl HostError {
    /// The reason on the wire (for a cluster error, the one the cluster gave).
    pub fn reason(&self) -> pb::Reason {
        match self {
            HostError::Invalid(_) => pb::Reason::Invalid,
            HostError::NotFound(_) => pb::Reason::NotFound,
            HostError::Conflict(_) => pb::Reason::Conflict,
            HostError::Precondition(_) => pb::Reason::Precondition,
            HostError::Cluster(s) => crate::reason::of(s),
            HostError::CannotRun { code: 127, .. } => pb::Reason::CommandNotFound,
            HostError::CannotRun { code: 126, .. } => pb::Reason::CannotExecute,
            HostError::CannotRun { .. } | HostError::Internal(_) => pb::Reason::Internal,
        }
    }
}

impl From<HostError> for Status {
    fn from(e: HostError) -> Status {
        use tonic::Code;
        let reason = e.reason();
        let code = match &e {
            HostError::Invalid(_) => Code::InvalidArgument,
            HostError::NotFound(_) => Code::NotFound,
            HostError::Conflict(_) => Code::AlreadyExists,
            HostError::Precondition(_) => Code::FailedPrecondition,
            HostError::Cluster(s) => return s.clone(),
            HostError::CannotRun { code: 126 | 127, .. } => Code::FailedPrecondition,
            HostError::CannotRun { .. } | HostError::Internal(_) => Code::Internal,
        };
        crate::reason::status(code, reason, e.to_string())
    }
}

impl From<RuntimeError> for HostError {
    fn from(e: RuntimeError) -> HostError {
        let text = e.to_string();
        match e {
            RuntimeError::NoSuchContainer(_) | RuntimeError::NoSuchImage(_) => HostError::NotFound(text),
            RuntimeError::NameInUse(_) => HostError::Conflict(text),
            RuntimeError::Invalid { .. } => HostError::Invalid(text),
            RuntimeError::Running(_) | RuntimeError::NotRunning(_) => HostError::Precondition(text),
            RuntimeError::StartFailed { code, .. } => HostError::CannotRun { message: text, code },
            _ => HostError::Internal(text),
        }
    }
}

impl From<weft_fs::FileError> for HostError {
    fn from(e: weft_fs::FileError) -> HostError {
        HostError::Internal(e.to_string())
    }
}

impl From<weft_net::NetError> for HostError {
    fn from(e: weft_net::NetError) -> HostError {
        HostError::Internal(e.to_string())
    }
}

/// Results of the host operations.
pub type Result<T, E = HostError> = std::result::Result<T, E>;
