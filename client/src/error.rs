//! The one error type of the client.

use std::time::Duration;

use serving_proto::mindspore::ServableError;

/// Which side refused a message for its size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SizeSide {
    /// This client, before a byte was sent.
    Client,
    /// The server, which answered RESOURCE_EXHAUSTED or 413.
    Server,
}

/// Everything that can go wrong with a call.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A message over a size limit: the client's send cap (checked before
    /// anything is sent) or the server's limit. Display uses gRPC's wording.
    #[error("{} message larger than max ({} vs. {}){}", match .side { SizeSide::Client => "Sent", SizeSide::Server => "Received" },
        .size.map_or("?".to_string(), |s| s.to_string()),
        .limit.map_or("?".to_string(), |l| l.to_string()),
        match .side { SizeSide::Client => "; lower the request size or raise max_send_size (at most 512 MiB)", SizeSide::Server => "; the server refused it: send less, or raise the server's max_msg_mb_size" })]
    MessageTooLarge {
        /// The message size in bytes (the server's number when it gave one).
        size: Option<u64>,
        /// The limit in bytes.
        limit: Option<u64>,
        /// Who refused it.
        side: SizeSide,
    },
    /// The server is busy or not ready (queue full, no replica alive,
    /// draining): retry later or elsewhere.
    #[error("server unavailable at {endpoint}: {message}")]
    Unavailable {
        /// The endpoint.
        endpoint: String,
        /// The server's text.
        message: String,
    },
    /// The deadline passed.
    #[error("deadline of {timeout:?} exceeded at {endpoint}: {message}")]
    DeadlineExceeded {
        /// The endpoint.
        endpoint: String,
        /// The call's timeout.
        timeout: Option<Duration>,
        /// What was said.
        message: String,
    },
    /// Unknown model, servable, version or method.
    #[error("not found: {message}")]
    NotFound {
        /// The server's text.
        message: String,
    },
    /// The server refused the request as malformed.
    #[error("invalid argument: {message}")]
    InvalidArgument {
        /// The server's text.
        message: String,
    },
    /// Missing or bad credentials.
    #[error("unauthenticated: {message}")]
    Unauthenticated {
        /// The server's text.
        message: String,
    },
    /// A MindSpore in-band error for the whole request, with its code.
    #[error("servable error (code {}): {}", .0.code, .0.message)]
    Servable(ServableError),
    /// The server failed internally.
    #[error("server error at {endpoint}: {message}")]
    Server {
        /// The endpoint.
        endpoint: String,
        /// The server's text.
        message: String,
    },
    /// The connection failed (refused, reset, TLS handshake).
    #[error("transport error at {endpoint}: {message}")]
    Transport {
        /// The endpoint.
        endpoint: String,
        /// What failed.
        message: String,
    },
    /// The server answered something the protocol does not allow.
    #[error("protocol violation from {endpoint}: {message}")]
    Protocol {
        /// The endpoint.
        endpoint: String,
        /// What is wrong.
        message: String,
    },
    /// The request cannot be expressed in the protocol (a STRING tensor on
    /// OIP, BF16 on MindSpore, several strings in one MindSpore REST input).
    #[error("invalid request: {0}")]
    Request(String),
    /// The client was configured wrongly.
    #[error("invalid client configuration: {0}")]
    Config(String),
}

impl Error {
    /// Whether retrying, here or on another endpoint, can succeed: a busy
    /// or unreachable server, not a bad request.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Unavailable { .. } | Error::Transport { .. } => true,
            // MindSpore's in-band "busy" answers: no replica alive (code 5)
            // and a full queue.
            Error::Servable(e) => {
                e.code == 5
                    || e.message
                        .starts_with("Serving Error: enqueued requests count exceeds the limit")
            }
            _ => false,
        }
    }

    /// The MindSpore status code of an in-band error.
    pub fn servable_code(&self) -> Option<i64> {
        match self {
            Error::Servable(e) => Some(e.code),
            _ => None,
        }
    }
}
