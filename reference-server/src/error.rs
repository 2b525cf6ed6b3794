//! One error type for the front ends, with its gRPC status and HTTP status
//! from the DESIGN.md table.

use http::StatusCode;

use crate::service::Class;

/// A request the server refuses or cannot complete.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum ServeError {
    /// Malformed request, bad tensor, wrong dtype or size.
    #[error("{0}")]
    InvalidArgument(String),
    /// Unknown servable, model, version or method.
    #[error("{0}")]
    NotFound(String),
    /// A message over the size limit.
    #[error("{0}")]
    ResourceExhausted(String),
    /// Queue full, no replica alive, not ready.
    #[error("{0}")]
    Unavailable(String),
    /// The deadline passed.
    #[error("{0}")]
    DeadlineExceeded(String),
    /// An internal failure.
    #[error("{0}")]
    Internal(String),
    /// A feature the server's configuration turns off.
    #[error("{0}")]
    FailedPrecondition(String),
    /// A name already taken (a shared memory region).
    #[error("{0}")]
    AlreadyExists(String),
    /// The request's body stopped arriving (`--request-body-timeout`).
    #[error("{0}")]
    BodyStalled(String),
    /// A feature this server does not have (CUDA shared memory).
    #[error("{0}")]
    Unsupported(String),
}

impl ServeError {
    /// The row of the error table (DESIGN.md) this error is: the one
    /// mapping from which its gRPC status, HTTP status and metrics label
    /// follow.
    pub(crate) fn class(&self) -> Class {
        match self {
            ServeError::InvalidArgument(_) => Class::InvalidArgument,
            ServeError::NotFound(_) => Class::NotFound,
            ServeError::ResourceExhausted(_) => Class::ResourceExhausted,
            ServeError::Unavailable(_) => Class::Unavailable,
            ServeError::DeadlineExceeded(_) => Class::DeadlineExceeded,
            ServeError::Internal(_) => Class::Internal,
            ServeError::FailedPrecondition(_) => Class::FailedPrecondition,
            ServeError::AlreadyExists(_) => Class::AlreadyExists,
            ServeError::BodyStalled(_) => Class::RequestTimeout,
            ServeError::Unsupported(_) => Class::Unimplemented,
        }
    }

    /// The same error, its text after `context` (an ensemble naming the
    /// step that failed).
    pub(crate) fn in_context(self, context: &str) -> ServeError {
        let with = |m: String| format!("{context}: {m}");
        match self {
            ServeError::InvalidArgument(m) => ServeError::InvalidArgument(with(m)),
            ServeError::NotFound(m) => ServeError::NotFound(with(m)),
            ServeError::ResourceExhausted(m) => ServeError::ResourceExhausted(with(m)),
            ServeError::Unavailable(m) => ServeError::Unavailable(with(m)),
            ServeError::DeadlineExceeded(m) => ServeError::DeadlineExceeded(with(m)),
            ServeError::Internal(m) => ServeError::Internal(with(m)),
            ServeError::FailedPrecondition(m) => ServeError::FailedPrecondition(with(m)),
            ServeError::AlreadyExists(m) => ServeError::AlreadyExists(with(m)),
            ServeError::BodyStalled(m) => ServeError::BodyStalled(with(m)),
            ServeError::Unsupported(m) => ServeError::Unsupported(with(m)),
        }
    }

    /// The gRPC status.
    pub(crate) fn to_status(&self) -> tonic::Status {
        let m = serving_proto::text::bounded(&self.to_string()).into_owned();
        tonic::Status::new(self.class().grpc(), m)
    }

    /// The HTTP status.
    pub(crate) fn http_status(&self) -> StatusCode {
        self.class().http()
    }
}

impl From<serving_proto::oip::OipError> for ServeError {
    fn from(e: serving_proto::oip::OipError) -> ServeError {
        ServeError::InvalidArgument(e.to_string())
    }
}
