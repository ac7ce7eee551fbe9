//! The Docker API's errors: a status code and `{"message": ...}`, as moby's `httpstatus` maps
//! its error kinds (404 not found, 409 conflict, 400 bad parameter, 501 not implemented).

use http::StatusCode;
use tonic::Code;

/// An error answered to a Docker client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status}: {message}")]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// What the client prints after "Error response from daemon: ".
    pub message: String,
}

impl ApiError {
    /// 400: the request is malformed or names a bad value.
    pub fn bad(message: impl Into<String>) -> ApiError {
        ApiError { status: StatusCode::BAD_REQUEST, message: message.into() }
    }

    /// 404: the object does not exist.
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError { status: StatusCode::NOT_FOUND, message: message.into() }
    }

    /// 409: the request conflicts with the object's state (a name in use, a running container).
    pub fn conflict(message: impl Into<String>) -> ApiError {
        ApiError { status: StatusCode::CONFLICT, message: message.into() }
    }

    /// 501: weft does not implement this part of the API.
    pub fn unsupported(what: impl std::fmt::Display) -> ApiError {
        ApiError { status: StatusCode::NOT_IMPLEMENTED, message: format!("weft does not support {what}") }
    }

    /// 500: weftd failed.
    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError { status: StatusCode::INTERNAL_SERVER_ERROR, message: message.into() }
    }

    /// Docker's answer for a container reference that matches nothing.
    pub fn no_such_container(reference: &str) -> ApiError {
        ApiError::not_found(format!("No such container: {reference}"))
    }

    /// Docker's answer for an image reference that matches nothing.
    pub fn no_such_image(reference: &str) -> ApiError {
        ApiError::not_found(format!("No such image: {}", with_tag(reference)))
    }

    /// The same error with `context` before its message.
    pub fn prefixed(self, context: &str) -> ApiError {
        ApiError { status: self.status, message: format!("{context}: {}", self.message) }
    }

    /// The JSON body Docker answers errors with.
    pub fn body(&self) -> String {
        serde_json::json!({ "message": self.message }).to_string()
    }

    /// Maps an error of weft's agent API, keeping its message (which names the problem).
    pub fn from_status(status: &tonic::Status) -> ApiError {
        let message = status.message().to_string();
        match status.code() {
            Code::NotFound => ApiError::not_found(message),
            Code::AlreadyExists | Code::FailedPrecondition | Code::Aborted => ApiError::conflict(message),
            Code::InvalidArgument | Code::OutOfRange => ApiError::bad(message),
            Code::PermissionDenied | Code::Unauthenticated => {
                ApiError { status: StatusCode::FORBIDDEN, message }
            }
            Code::Unimplemented => ApiError { status: StatusCode::NOT_IMPLEMENTED, message },
            Code::Unavailable => ApiError { status: StatusCode::SERVICE_UNAVAILABLE, message },
            _ => ApiError::internal(message),
        }
    }
}

impl From<tonic::Status> for ApiError {
    fn from(status: tonic::Status) -> ApiError {
        ApiError::from_status(&status)
    }
}

/// `busybox` as Docker names it in messages: `busybox:latest`.
pub fn with_tag(reference: &str) -> String {
    let last = reference.rsplit('/').next().unwrap_or(reference);
    if last.contains(':') || reference.contains('@') || reference.len() == 64 {
        reference.to_string()
    } else {
        format!("{reference}:latest")
    }
}

/// A result whose error is answered to the client.
pub type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_codes_map_to_dockers_statuses() {
        let cases = [
            (Code::NotFound, 404),
            (Code::AlreadyExists, 409),
            (Code::FailedPrecondition, 409),
            (Code::InvalidArgument, 400),
            (Code::Internal, 500),
        ];
        for (code, want) in cases {
            let e = ApiError::from_status(&tonic::Status::new(code, "why"));
            assert_eq!((e.status.as_u16(), e.message.as_str()), (want, "why"), "{code:?}");
        }
    }

    #[test]
    fn messages_are_dockers_json() {
        assert_eq!(
            ApiError::no_such_image("busybox").body(),
            r#"{"message":"No such image: busybox:latest"}"#
        );
        assert_eq!(with_tag("localhost:5000/app"), "localhost:5000/app:latest");
        assert_eq!(with_tag("app:1"), "app:1");
    }
}
