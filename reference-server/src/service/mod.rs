//! The protocols' semantics, independent of transport: the gRPC and REST
//! front ends decode a request, call here, and encode the answer. Here,
//! and only here, the engine's jobs and typed errors meet each protocol's
//! rules, texts and codes.

pub(crate) mod classification;
pub(crate) mod cuda_shared_memory;
pub(crate) mod logging;
pub(crate) mod mindspore;
pub(crate) mod model_config;
pub(crate) mod oip;
pub(crate) mod repository;
pub(crate) mod shared_memory;
pub(crate) mod statistics;
pub(crate) mod trace;

/// A reply of `size` bytes against the message limit `limit`, on every
/// protocol and transport: `Sent message larger than max (size vs.
/// limit)`, gRPC's own text.
pub(crate) fn check_reply_size(size: usize, limit: usize) -> Result<(), crate::error::ServeError> {
    serving_proto::frame::check_size(
        serving_proto::frame::Direction::Sent,
        size as u64,
        limit as u64,
    )
    .map_err(|e| crate::error::ServeError::ResourceExhausted(e.to_string()))
}

/// The result class of an answer: the rows of DESIGN.md's error table,
/// shared by the HTTP statuses and the metrics' `code` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// Success.
    Ok,
    /// A malformed request or bad tensor.
    InvalidArgument,
    /// An unknown servable, model, version or method.
    NotFound,
    /// A message over the size limit.
    ResourceExhausted,
    /// Not ready, no replica alive, queue full.
    Unavailable,
    /// The deadline or queue timeout passed.
    DeadlineExceeded,
    /// The request's body stopped arriving (`--request-body-timeout`).
    RequestTimeout,
    /// Missing or bad credentials.
    Unauthenticated,
    /// The model failed to run.
    Internal,
    /// A feature the server does not implement.
    Unimplemented,
    /// A feature the server's configuration turns off.
    FailedPrecondition,
    /// A name already taken.
    AlreadyExists,
}

/// The text and class for a run that needed `wanted` bytes of memory
/// beyond its inputs (`own`) that the server's budget for requests (`held`
/// of `limit`) had no room for; `what` names the model or servable. One
/// that cannot fit even alone can never run; one that can may once other
/// requests finish.
pub(crate) fn memory_refusal(
    what: &str,
    wanted: u64,
    held: u64,
    limit: u64,
    own: u64,
) -> (String, Class) {
    if wanted.saturating_add(own) > limit {
        (
            format!(
                "{what} needs {wanted} bytes of server memory to run the request besides the {own} bytes of its inputs, more than the {limit} bytes this server gives all requests together (--max-incoming-mb); send a smaller request"
            ),
            Class::ResourceExhausted,
        )
    } else {
        (
            format!(
                "{what} needs {wanted} more bytes of server memory to run the request, and requests hold {held} of the {limit} bytes this server gives them (--max-incoming-mb); retry later"
            ),
            Class::Unavailable,
        )
    }
}

impl Class {
    /// The HTTP status of the class.
    pub fn http(self) -> http::StatusCode {
        use http::StatusCode as S;
        match self {
            Class::Ok => S::OK,
            Class::InvalidArgument => S::BAD_REQUEST,
            Class::NotFound => S::NOT_FOUND,
            Class::ResourceExhausted => S::PAYLOAD_TOO_LARGE,
            Class::Unavailable => S::SERVICE_UNAVAILABLE,
            Class::DeadlineExceeded => S::GATEWAY_TIMEOUT,
            Class::RequestTimeout => S::REQUEST_TIMEOUT,
            Class::Unauthenticated => S::UNAUTHORIZED,
            Class::Internal => S::INTERNAL_SERVER_ERROR,
            Class::Unimplemented => S::NOT_IMPLEMENTED,
            Class::FailedPrecondition => S::BAD_REQUEST,
            Class::AlreadyExists => S::CONFLICT,
        }
    }

    /// The class of an HTTP status a REST route answered with.
    pub fn of_http(status: http::StatusCode) -> Class {
        match status.as_u16() {
            200..=299 => Class::Ok,
            400 | 405 | 415 => Class::InvalidArgument,
            401 => Class::Unauthenticated,
            404 => Class::NotFound,
            408 => Class::RequestTimeout,
            409 => Class::AlreadyExists,
            501 => Class::Unimplemented,
            413 => Class::ResourceExhausted,
            503 => Class::Unavailable,
            504 => Class::DeadlineExceeded,
            _ => Class::Internal,
        }
    }

    /// The gRPC status code of the class.
    pub fn grpc(self) -> tonic::Code {
        use tonic::Code as C;
        match self {
            Class::Ok => C::Ok,
            Class::InvalidArgument => C::InvalidArgument,
            Class::NotFound => C::NotFound,
            Class::ResourceExhausted => C::ResourceExhausted,
            Class::Unavailable => C::Unavailable,
            Class::DeadlineExceeded | Class::RequestTimeout => C::DeadlineExceeded,
            Class::Unauthenticated => C::Unauthenticated,
            Class::Internal => C::Internal,
            Class::Unimplemented => C::Unimplemented,
            Class::FailedPrecondition => C::FailedPrecondition,
            Class::AlreadyExists => C::AlreadyExists,
        }
    }

    /// The class of a gRPC status code.
    pub fn of_grpc(code: tonic::Code) -> Class {
        match code {
            tonic::Code::Ok => Class::Ok,
            tonic::Code::InvalidArgument => Class::InvalidArgument,
            tonic::Code::NotFound => Class::NotFound,
            tonic::Code::ResourceExhausted => Class::ResourceExhausted,
            tonic::Code::Unavailable => Class::Unavailable,
            tonic::Code::DeadlineExceeded => Class::DeadlineExceeded,
            tonic::Code::Unauthenticated => Class::Unauthenticated,
            tonic::Code::Unimplemented => Class::Unimplemented,
            tonic::Code::FailedPrecondition => Class::FailedPrecondition,
            tonic::Code::AlreadyExists => Class::AlreadyExists,
            _ => Class::Internal,
        }
    }

    /// The metrics label of the class.
    pub fn label(self) -> &'static str {
        match self {
            Class::Ok => "OK",
            Class::InvalidArgument => "INVALID_ARGUMENT",
            Class::NotFound => "NOT_FOUND",
            Class::ResourceExhausted => "RESOURCE_EXHAUSTED",
            Class::Unavailable => "UNAVAILABLE",
            Class::DeadlineExceeded | Class::RequestTimeout => "DEADLINE_EXCEEDED",
            Class::Unauthenticated => "UNAUTHENTICATED",
            Class::Internal => "INTERNAL",
            Class::Unimplemented => "UNIMPLEMENTED",
            Class::FailedPrecondition => "FAILED_PRECONDITION",
            Class::AlreadyExists => "ALREADY_EXISTS",
        }
    }
}

use std::sync::atomic::{AtomicBool, Ordering};

use crate::engine::registry::Registry;

/// What every front end shares.
#[derive(Debug)]
pub struct State {
    /// The servable versions being served.
    pub registry: Registry,
    /// The message size limit in bytes (`max_msg_mb_size` MiB).
    pub max_msg_bytes: usize,
    /// Request metrics.
    pub(crate) metrics: crate::metrics::Metrics,
    /// The repository watcher, when serving a repository.
    pub watcher: Option<std::sync::Mutex<crate::repository::watch::Watcher>>,
    /// The repository's failures, published by the watcher after each poll.
    pub failures: Option<std::sync::Arc<std::sync::RwLock<Vec<crate::repository::watch::Failure>>>>,
    /// Memory held by requests, over all connections
    /// (`--max-incoming-mb`): bodies and messages while they arrive, and
    /// gRPC messages with what decoding them builds until they are
    /// answered.
    pub incoming: std::sync::Arc<serving_proto::gather::Budget>,
    /// Shared-memory regions clients registered (`--allow-shared-memory`).
    pub(crate) shared_memory: shared_memory::SharedMemory,
    /// The compression of gRPC replies, for clients that accept it
    /// (`--grpc-response-compression`); `None`: replies are not compressed.
    pub grpc_response_compression: Option<serving_proto::compression::Encoding>,
    /// Which requests are traced, and where their spans go.
    pub traces: crate::trace::Traces,
    /// How models are loaded and unloaded (`--model-control-mode`).
    pub model_control: crate::server::ModelControl,
    /// Whether the server is ready only while every model it was to load
    /// serves (`--strict-readiness`, Triton's default).
    pub strict_readiness: bool,
    /// The name server metadata reports (Triton's `--id`).
    pub server_name: String,
    /// The most bytes the files given with repository loads hold on disk
    /// together (`--max-load-files-mb`).
    pub max_load_files_bytes: u64,
    ready: AtomicBool,
}

/// The most bytes of a control request's body (repository, shared-memory,
/// configuration and statistics calls, on both transports).
pub(crate) const CONTROL_BODY_MAX: usize = 64 << 10;

impl State {
    /// A state serving `registry` with a message limit and a budget for
    /// requests still arriving, in bytes.
    pub fn new(registry: Registry, max_msg_bytes: usize, max_incoming_bytes: u64) -> State {
        State {
            registry,
            max_msg_bytes,
            metrics: Default::default(),
            watcher: None,
            failures: None,
            incoming: std::sync::Arc::new(serving_proto::gather::Budget::new(max_incoming_bytes)),
            shared_memory: shared_memory::SharedMemory::new(false),
            grpc_response_compression: None,
            traces: crate::trace::Traces::default(),
            model_control: crate::server::ModelControl::default(),
            strict_readiness: false,
            server_name: oip::SERVER_NAME.into(),
            max_load_files_bytes: crate::server::DEFAULT_MAX_LOAD_FILES_MB << 20,
            ready: AtomicBool::new(false),
        }
    }

    /// Whether the server accepts inference requests (false while starting
    /// and while draining).
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Records one answered request in the metrics. A model name that no
    /// loaded servable (or `servable.method`) answers to is recorded as ""
    /// whatever the result, so that clients cannot grow the metrics with
    /// names of their own.
    pub fn record(
        &self,
        front: crate::metrics::Front,
        model: &str,
        class: Class,
        elapsed: std::time::Duration,
    ) {
        let known = |name: &str| self.registry.get(name, 0).ok();
        let served = match known(model) {
            Some(_) => true,
            None => model
                .split_once('.')
                .and_then(|(s, m)| Some(known(s)?.method(m).is_some()))
                .unwrap_or(false),
        };
        let label = if served { model } else { "" };
        self.metrics.record(front, label, class.label(), elapsed);
    }

    /// What the repository failed to load (and has not changed since), as
    /// of the last poll.
    pub fn failures(&self) -> Vec<crate::repository::watch::Failure> {
        self.failures
            .as_ref()
            .map(|f| f.read().unwrap_or_else(|e| e.into_inner()).clone())
            .unwrap_or_default()
    }

    /// Lets clients register shared memory (`--allow-shared-memory`).
    pub fn allow_shared_memory(&mut self) {
        self.shared_memory = shared_memory::SharedMemory::new(true);
    }

    /// Whether the server answers ready (`/v2/health/ready`,
    /// `ServerReady`): accepting requests and, with strict readiness,
    /// every model it was to load serving (one unloaded on request does
    /// not count).
    pub fn server_ready(&self) -> bool {
        self.is_ready()
            && !(self.strict_readiness
                && self
                    .failures()
                    .iter()
                    .any(|f| f.reason != crate::repository::watch::UNLOADED))
    }

    /// Marks the server ready or not.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }
}
