//! One error type for the front ends, with its gRPC status and HTTP status
//! from the DESIGN.md table.

use http::StatusCode;

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
    /// The gRPC status.
    pub(crate) fn to_status(&self) -> tonic::Status {
        let m = serving_proto::text::bounded(&self.to_string()).into_owned();
        match self {
            ServeError::InvalidArgument(_) => tonic::Status::invalid_argument(m),
            ServeError::NotFound(_) => tonic::Status::not_found(m),
            ServeError::ResourceExhausted(_) => tonic::Status::resource_exhausted(m),
            ServeError::Unavailable(_) => tonic::Status::unavailable(m),
            ServeError::DeadlineExceeded(_) => tonic::Status::deadline_exceeded(m),
            ServeError::Internal(_) => tonic::Status::internal(m),
            ServeError::FailedPrecondition(_) => tonic::Status::failed_precondition(m),
            ServeError::AlreadyExists(_) => tonic::Status::already_exists(m),
            ServeError::BodyStalled(_) => tonic::Status::deadline_exceeded(m),
            ServeError::Unsupported(_) => tonic::Status::unimplemented(m),
        }
    }

    /// The HTTP status.
    pub(crate) fn http_status(&self) -> StatusCode {
        match self {
            ServeError::InvalidArgument(_) => StatusCode::BAD_REQUEST,
            ServeError::NotFound(_) => StatusCode::NOT_FOUND,
            ServeError::ResourceExhausted(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ServeError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ServeError::DeadlineExceeded(_) => StatusCode::GATEWAY_TIMEOUT,
            ServeError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ServeError::FailedPrecondition(_) => StatusCode::BAD_REQUEST,
            ServeError::AlreadyExists(_) => StatusCode::CONFLICT,
            ServeError::BodyStalled(_) => StatusCode::REQUEST_TIMEOUT,
            ServeError::Unsupported(_) => StatusCode::BAD_REQUEST,
        }
    }
}

impl From<serving_proto::oip::OipError> for ServeError {
    fn from(e: serving_proto::oip::OipError) -> ServeError {
        ServeError::InvalidArgument(e.to_string())
    }
}
