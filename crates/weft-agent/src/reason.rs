//! Failure reasons on the wire: every Status weftd returns carries an `ErrorDetail` with a
//! `Reason` in its details, so callers (the CLI, another weftd, weftd itself when a manager
//! applies its own command) decide by reason, never by matching message text.

use prost::Message;
use tonic::{Code, Status};
use weft_proto::v1 as pb;
use weft_raft::RaftError;
use weft_state::StateError;

/// A Status of `code` with `message` whose details name `reason`.
pub fn status(code: Code, reason: pb::Reason, message: impl Into<String>) -> Status {
    let detail = pb::ErrorDetail { reason: reason as i32 };
    Status::with_details(code, message, detail.encode_to_vec().into())
}

/// The reason a Status carries (`Unspecified` for one from elsewhere, e.g. the transport).
pub fn of(status: &Status) -> pb::Reason {
    pb::ErrorDetail::decode(status.details()).map(|d| d.reason()).unwrap_or(pb::Reason::Unspecified)
}

/// The reason of a state machine's rejection.
pub fn of_state(e: &StateError) -> pb::Reason {
    match e {
        StateError::UnknownEndpoint(_) => pb::Reason::UnknownEndpoint,
        StateError::UnknownNode(_) => pb::Reason::UnknownNode,
        StateError::UnknownNetwork(_) => pb::Reason::UnknownNetwork,
        StateError::NetworkExists(_) => pb::Reason::NetworkExists,
        StateError::NodeExists(_) => pb::Reason::Conflict,
        StateError::Decode(_)
        | StateError::Invalid(_)
        | StateError::InvalidName { .. }
        | StateError::InvalidValue { .. } => pb::Reason::Invalid,
        _ => pb::Reason::Precondition,
    }
}

/// Maps raft and state errors to gRPC statuses, the message intact and the reason attached.
pub fn of_raft(e: RaftError) -> Status {
    let text = e.to_string();
    match &e {
        RaftError::NoLeader | RaftError::LeaderLost | RaftError::Stopped => {
            status(Code::Unavailable, pb::Reason::NoQuorum, text)
        }
        RaftError::NotLeader(_) => status(Code::FailedPrecondition, pb::Reason::Precondition, text),
        RaftError::Rejected(state) => {
            let reason = of_state(state);
            let code = match reason {
                pb::Reason::Invalid => Code::InvalidArgument,
                pb::Reason::UnknownEndpoint | pb::Reason::UnknownNode | pb::Reason::UnknownNetwork => {
                    Code::NotFound
                }
                pb::Reason::NetworkExists | pb::Reason::Conflict => Code::AlreadyExists,
                _ => Code::FailedPrecondition,
            };
            status(code, reason, text)
        }
        _ => status(Code::Internal, pb::Reason::Internal, text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_survive_the_status() {
        let s = of_raft(RaftError::Rejected(StateError::UnknownEndpoint(7)));
        assert_eq!((s.code(), of(&s)), (Code::NotFound, pb::Reason::UnknownEndpoint));
        let s = of_raft(RaftError::Rejected(StateError::NetworkExists("app".into())));
        assert_eq!((s.code(), of(&s)), (Code::AlreadyExists, pb::Reason::NetworkExists));
        assert_eq!(of(&of_raft(RaftError::NoLeader)), pb::Reason::NoQuorum);
        assert_eq!(of(&Status::internal("from elsewhere")), pb::Reason::Unspecified);
        // The reason survives the wire: encoded and decoded as tonic does.
        let s = status(Code::NotFound, pb::Reason::CommandNotFound, "exec nope");
        let back = Status::with_details(s.code(), s.message(), s.details().to_vec().into());
        assert_eq!(of(&back), pb::Reason::CommandNotFound);
    }
}
