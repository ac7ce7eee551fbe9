//! The host operations' error: typed, with the reason that goes on the wire, mapped to a gRPC
//! status only at the edge (the services).

use tonic::{Code, Status};
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
    /// The cluster could not be reached or refused: what its answer said, kept as domain values
    /// (built by [`HostError::from_cluster`] where a cluster call's Status comes back). Shown as
    /// tonic shows a Status, so logs read as before.
    #[error("code: '{code}'{}", shown(message, cause))]
    Cluster {
        /// The reason the cluster gave (`Unspecified` when it gave none, e.g. the transport).
        reason: pb::Reason,
        /// The gRPC code of its answer, which callers of this node's API see again.
        code: Code,
        /// Its message, intact.
        message: String,
        /// What the Status said caused it (a transport error, in this process only), for logs.
        cause: Option<String>,
    },
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

/// What tonic's `Display` of a Status shows after its code: the message unless empty, and the
/// source if there is one.
fn shown(message: &str, cause: &Option<String>) -> String {
    let mut text = String::new();
    if !message.is_empty() {
        text.push_str(&format!(", message: {message:?}"));
    }
    if let Some(cause) = cause {
        text.push_str(&format!(", source: {cause}"));
    }
    text
}

impl HostError {
    /// The error of a cluster call whose answer was `status`: its reason, code and message.
    pub fn from_cluster(status: &Status) -> HostError {
        HostError::Cluster {
            reason: crate::reason::of(status),
            code: status.code(),
            message: status.message().to_string(),
            cause: std::error::Error::source(status).map(|s| format!("{s:?}")),
        }
    }

    /// The reason on the wire (for a cluster error, the one the cluster gave).
    pub fn reason(&self) -> pb::Reason {
        match self {
            HostError::Invalid(_) => pb::Reason::Invalid,
            HostError::NotFound(_) => pb::Reason::NotFound,
            HostError::Conflict(_) => pb::Reason::Conflict,
            HostError::Precondition(_) => pb::Reason::Precondition,
            HostError::Cluster { reason, .. } => *reason,
            HostError::CannotRun { code: 127, .. } => pb::Reason::CommandNotFound,
            HostError::CannotRun { code: 126, .. } => pb::Reason::CannotExecute,
            HostError::CannotRun { .. } | HostError::Internal(_) => pb::Reason::Internal,
        }
    }
}

impl From<HostError> for Status {
    fn from(e: HostError) -> Status {
        let reason = e.reason();
        let code = match &e {
            HostError::Invalid(_) => Code::InvalidArgument,
            HostError::NotFound(_) => Code::NotFound,
            HostError::Conflict(_) => Code::AlreadyExists,
            HostError::Precondition(_) => Code::FailedPrecondition,
            HostError::Cluster { code, message, .. } => {
                return crate::reason::status(*code, reason, message.clone());
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_error_comes_back_as_the_status_it_was() {
        let from = crate::reason::status(Code::NotFound, pb::Reason::UnknownEndpoint, "endpoint 7 unknown");
        let e = HostError::from_cluster(&from);
        assert_eq!(e.reason(), pb::Reason::UnknownEndpoint);
        assert_eq!(e.to_string(), from.to_string(), "logged as the Status was");
        let back = Status::from(e);
        assert_eq!((back.code(), back.message()), (Code::NotFound, "endpoint 7 unknown"));
        assert_eq!((crate::reason::of(&back), back.details()), (pb::Reason::UnknownEndpoint, from.details()));
        // One without a reason (the transport's) keeps its code and stays without details.
        let e = HostError::from_cluster(&Status::unavailable("tcp connect error"));
        assert_eq!(e.reason(), pb::Reason::Unspecified);
        assert_eq!(e.to_string(), Status::unavailable("tcp connect error").to_string());
        let back = Status::from(e);
        assert_eq!((back.code(), back.details().is_empty()), (Code::Unavailable, true));
    }
}
