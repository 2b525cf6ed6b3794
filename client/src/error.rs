//! The one error type of the client.

use std::time::Duration;

use serving_proto::TensorError;
use serving_proto::mindspore::ServableError;

/// A cause kept as [`std::error::Error::source`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What failed in a [`Error::Transport`], read from the typed causes
/// (I/O error kinds, TLS and HTTP/2 errors), never from their texts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TransportKind {
    /// No connection could be made (refused, unreachable, name not
    /// resolved).
    Connect,
    /// The TLS handshake failed (an untrusted or mismatched certificate,
    /// a client certificate refused).
    Tls,
    /// An open connection broke (reset, closed mid-call, a call the
    /// connection's end cancelled).
    Closed,
    /// Anything else below the protocol.
    Other,
}

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
        /// The transport's timeout error, when it raised it.
        #[source]
        source: Option<BoxError>,
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
    Servable(#[from] ServableError),
    /// The server does not implement the call (gRPC `UNIMPLEMENTED`, HTTP
    /// 501): an extension or RPC it does not offer.
    #[error("not implemented by the server at {endpoint}: {message}")]
    Unimplemented {
        /// The endpoint.
        endpoint: String,
        /// The server's text.
        message: String,
    },
    /// The server failed internally.
    #[error("server error at {endpoint}: {message}")]
    Server {
        /// The endpoint.
        endpoint: String,
        /// The server's text.
        message: String,
    },
    /// The connection failed (refused, reset, TLS handshake): see
    /// [`Error::transport_kind`].
    #[error("transport error at {endpoint}: {message}")]
    Transport {
        /// The endpoint.
        endpoint: String,
        /// What failed, from the typed causes.
        kind: TransportKind,
        /// The causes' texts, outermost first.
        message: String,
        /// The cause.
        #[source]
        source: Option<BoxError>,
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
    /// One request of a stream failed ([`crate::Client::stream`]); the
    /// stream goes on. `id` and `model` are the request's.
    #[error("stream request '{id}' to model '{model}' failed at {endpoint}: {message}")]
    Stream {
        /// The endpoint.
        endpoint: String,
        /// The failed request's id.
        id: String,
        /// Its model.
        model: String,
        /// The server's text.
        message: String,
    },
    /// The stream has ended: no more requests can be sent on it.
    #[error("the stream to {endpoint} has ended; open a new one")]
    StreamClosed {
        /// The endpoint.
        endpoint: String,
    },
    /// The call is not offered on any of the client's endpoints' transports
    /// (streaming needs gRPC).
    #[error("{what} needs {needs}; none of this client's endpoints speaks it")]
    NotSupported {
        /// The call.
        what: &'static str,
        /// What it needs.
        needs: &'static str,
    },
    /// A tensor could not be built or read (its shape and data disagree,
    /// or it is read as the wrong type).
    #[error(transparent)]
    Tensor(#[from] TensorError),
    /// A shared-memory region could not be created, mapped, written or
    /// read here, or the server could not open or use it (the server's
    /// text in `message`).
    #[error("shared memory region '{region}': {message}")]
    SharedMemory {
        /// The region's name (or key, before it has one).
        region: String,
        /// What failed.
        message: String,
        /// The cause (an I/O error here, the server's error there).
        #[source]
        source: Option<BoxError>,
    },
}

impl Error {
    /// Whether retrying, here or on another endpoint, can succeed: a busy
    /// or unreachable server, not a bad request.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Unavailable { .. } => true,
            // Another endpoint may answer; a certificate does not change.
            Error::Transport { kind, .. } => *kind != TransportKind::Tls,
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

    /// Whether the call ran out of time (its timeout, or the server's
    /// deadline).
    pub fn is_timeout(&self) -> bool {
        matches!(self, Error::DeadlineExceeded { .. })
    }

    /// Whether no connection could be made (including a failed TLS
    /// handshake).
    pub fn is_connect(&self) -> bool {
        matches!(
            self,
            Error::Transport {
                kind: TransportKind::Connect | TransportKind::Tls,
                ..
            }
        )
    }

    /// What failed below the protocol, for a [`Error::Transport`].
    pub fn transport_kind(&self) -> Option<TransportKind> {
        match self {
            Error::Transport { kind, .. } => Some(*kind),
            _ => None,
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

/// The texts of `e` and its causes, outermost first, each once.
pub(crate) fn chain_text(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(e);
    while let Some(e) = next {
        let text = e.to_string();
        // A wrapper that repeats its cause's text adds nothing.
        if !text.is_empty() && !parts.iter().any(|p| p.ends_with(&text)) {
            parts.push(text);
        }
        next = e.source();
    }
    parts.join(": ")
}

/// Calls `visit` on `e` and every cause below it, including the error an
/// `std::io::Error` wraps (which its `source` skips).
pub(crate) fn visit_causes(
    e: &(dyn std::error::Error + 'static),
    visit: &mut dyn FnMut(&(dyn std::error::Error + 'static)),
) {
    let mut next = Some(e);
    while let Some(e) = next {
        visit(e);
        if let Some(inner) = e
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref)
        {
            visit_causes(inner, visit);
        }
        next = e.source();
    }
}

/// The kind of a transport failure, from the typed errors in `e`'s chain:
/// `connecting` says whether the failure came while connecting.
pub(crate) fn transport_kind(
    e: &(dyn std::error::Error + 'static),
    connecting: bool,
) -> TransportKind {
    let mut kind = if connecting {
        TransportKind::Connect
    } else {
        TransportKind::Other
    };
    let mut tls = false;
    visit_causes(e, &mut |e| {
        if e.is::<rustls::Error>() {
            tls = true;
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind as K;
            match io.kind() {
                K::ConnectionRefused
                | K::AddrNotAvailable
                | K::HostUnreachable
                | K::NetworkUnreachable
                | K::NotFound => kind = TransportKind::Connect,
                K::ConnectionReset
                | K::ConnectionAborted
                | K::BrokenPipe
                | K::UnexpectedEof
                | K::NotConnected
                    if !connecting =>
                {
                    kind = TransportKind::Closed;
                }
                _ => {}
            }
        }
        if let Some(h) = e.downcast_ref::<hyper::Error>()
            && !connecting
            && (h.is_closed() || h.is_canceled() || h.is_incomplete_message())
        {
            kind = TransportKind::Closed;
        }
    });
    if tls { TransportKind::Tls } else { kind }
}
