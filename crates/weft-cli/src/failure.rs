//! How a verb fails, and the exit status that says so, as Docker's client does: 125 for weft's
//! own errors (bad input, a refused or failed call), 126 when the container's command cannot be
//! invoked, 127 when it does not exist. A command that ran exits with its own status instead.

use prost::Message;
use weft_proto::v1 as pb;

/// Exit status of weft's own errors.
pub(crate) const EXIT_ERROR: u8 = 125;
/// Exit status when the command exists but cannot be invoked.
pub(crate) const EXIT_CANNOT_EXECUTE: u8 = 126;
/// Exit status when the command does not exist.
pub(crate) const EXIT_NOT_FOUND: u8 = 127;

/// A failed verb: what to print and the status to exit with.
#[derive(Debug)]
pub(crate) struct Failure {
    /// Printed as `weft: MESSAGE`.
    pub(crate) message: String,
    /// The exit status.
    pub(crate) code: u8,
}

impl From<String> for Failure {
    fn from(message: String) -> Failure {
        Failure { message, code: EXIT_ERROR }
    }
}

impl From<&str> for Failure {
    fn from(message: &str) -> Failure {
        Failure::from(message.to_string())
    }
}

impl From<tonic::Status> for Failure {
    fn from(status: tonic::Status) -> Failure {
        let reason = pb::ErrorDetail::decode(status.details()).map(|d| d.reason()).unwrap_or_default();
        Failure { message: status.message().to_string(), code: exit_code(reason) }
    }
}

/// The exit status for a failure of `reason`.
pub(crate) fn exit_code(reason: pb::Reason) -> u8 {
    match reason {
        pb::Reason::CommandNotFound => EXIT_NOT_FOUND,
        pb::Reason::CannotExecute => EXIT_CANNOT_EXECUTE,
        _ => EXIT_ERROR,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_map_to_docker_exit_codes() {
        let with = |reason: pb::Reason| {
            let detail = pb::ErrorDetail { reason: reason as i32 }.encode_to_vec();
            Failure::from(tonic::Status::with_details(tonic::Code::FailedPrecondition, "m", detail.into()))
                .code
        };
        assert_eq!(with(pb::Reason::CommandNotFound), 127);
        assert_eq!(with(pb::Reason::CannotExecute), 126);
        assert_eq!(with(pb::Reason::NotFound), 125);
        assert_eq!(Failure::from(tonic::Status::unavailable("no details")).code, 125);
        assert_eq!(Failure::from("bad flag").code, 125);
    }
}
