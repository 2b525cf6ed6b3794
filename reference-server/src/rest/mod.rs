//! The REST front end: MindSpore Serving's `POST /model/...` routes and the
//! Open Inference Protocol's `/v2` routes on one port.
//!
//! Every request passes, in order: authentication ([`crate::auth`]), the
//! `Content-Encoding` check ([`encoding`]: gzip and deflate bodies are
//! inflated as they are read, under the message limit), then routing;
//! replies are compressed when `Accept-Encoding` asks for gzip or deflate. Paths are matched
//! exactly: the OIP routes below, MindSpore's grammar for paths whose first
//! segment is `model`, and nothing else. Any other path is an OIP-style
//! 404 `{"error": ...}`, a known path with the wrong method a 405.

pub(crate) mod encoding;
pub(crate) mod extensions;
pub(crate) mod memory;
pub(crate) mod mindspore;
pub(crate) mod oip;

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode, Uri, header};
use http_body_util::BodyExt;
use serving_proto::gather::{Budget, Exhausted, Gather};
use serving_proto::mindspore::url::is_predict_path;
use serving_proto::text::quote;

use crate::service::State;

/// The REST service: authentication, then the router.
pub(crate) fn router(state: Arc<State>, token: Option<Arc<str>>) -> crate::auth::RestAuth<Router> {
    // Authentication wraps the router, not its routes: a refused request
    // learns nothing of which paths exist (a route's layer ran after
    // routing, and a 401 on a known path with another method carried the
    // router's `allow` header).
    crate::auth::RestAuth::new(routes(state), token)
}

/// The metrics listener's service (Triton's `--metrics-port`): `GET
/// /metrics` alone (behind `--auth-token` when one is set, as every
/// route; Triton's metrics port has no authentication).
pub(crate) fn metrics_router(state: Arc<State>) -> Router {
    Router::new()
        .route("/metrics", get(oip::metrics))
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(unmatched)
        .with_state(state)
}

/// The routes, behind the encoding checks.
fn routes(state: Arc<State>) -> Router {
    Router::new()
        .route("/v2", get(oip::server_metadata))
        .route("/v2/health/live", get(oip::live))
        .route("/v2/health/ready", get(oip::ready))
        .route("/v2/models/{model}", get(oip::model_metadata))
        .route("/v2/models/{model}/ready", get(oip::model_ready))
        .route("/v2/models/{model}/infer", post(oip::infer))
        .route(
            "/v2/models/{model}/versions/{version}",
            get(oip::model_metadata_version),
        )
        .route(
            "/v2/models/{model}/versions/{version}/ready",
            get(oip::model_ready_version),
        )
        .route(
            "/v2/models/{model}/versions/{version}/infer",
            post(oip::infer_version),
        )
        .route("/metrics", get(oip::metrics))
        .route("/v2/models/{model}/config", get(extensions::model_config))
        .route(
            "/v2/models/{model}/versions/{version}/config",
            get(extensions::model_config_version),
        )
        .route("/v2/models/stats", get(extensions::all_stats))
        .route("/v2/models/{model}/stats", get(extensions::model_stats))
        .route(
            "/v2/models/{model}/versions/{version}/stats",
            get(extensions::model_stats_version),
        )
        .route("/v2/repository/index", post(extensions::repository_index))
        .route(
            "/v2/repository/models/{model}/load",
            post(extensions::repository_load),
        )
        .route(
            "/v2/repository/models/{model}/unload",
            post(extensions::repository_unload),
        )
        .route(
            "/v2/systemsharedmemory/status",
            get(extensions::shm_status_all),
        )
        .route(
            "/v2/systemsharedmemory/region/{name}/status",
            get(extensions::shm_status_region),
        )
        .route(
            "/v2/systemsharedmemory/region/{name}/register",
            post(extensions::shm_register),
        )
        .route(
            "/v2/systemsharedmemory/unregister",
            post(extensions::shm_unregister_all),
        )
        .route(
            "/v2/systemsharedmemory/region/{name}/unregister",
            post(extensions::shm_unregister_region),
        )
        .route(
            "/v2/cudasharedmemory/status",
            get(extensions::cuda_status_all),
        )
        .route(
            "/v2/cudasharedmemory/region/{name}/status",
            get(extensions::cuda_status_region),
        )
        .route(
            "/v2/cudasharedmemory/region/{name}/register",
            post(extensions::cuda_register),
        )
        .route(
            "/v2/cudasharedmemory/unregister",
            post(extensions::cuda_unregister_all),
        )
        .route(
            "/v2/cudasharedmemory/region/{name}/unregister",
            post(extensions::cuda_unregister_region),
        )
        .route(
            "/v2/trace/setting",
            get(extensions::trace_get).post(extensions::trace_post),
        )
        .route(
            "/v2/models/{model}/trace/setting",
            get(extensions::model_trace_get).post(extensions::model_trace_post),
        )
        .route(
            "/v2/logging",
            get(extensions::logging_get).post(extensions::logging_post),
        )
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(unmatched)
        .with_state(state)
        // Inner to outer: gzip and deflate bodies inflate as they are read
        // (read_body bounds what they inflate to); other encodings are
        // refused first; replies are compressed when Accept-Encoding asks.
        .layer(
            tower_http::decompression::RequestDecompressionLayer::new()
                .gzip(true)
                .deflate(true),
        )
        .layer(axum::middleware::from_fn(encoding::supported_only))
        .layer(
            tower_http::compression::CompressionLayer::new()
                .gzip(true)
                .deflate(true)
                .compress_when(inference_replies()),
        )
}

/// Marks a successful reply to an inference request: the only replies
/// compressed (when `Accept-Encoding` asks), as Triton compresses only
/// those. tritonclient's aio client inflates successful inference replies
/// only, and failed on a gzipped statistics reply and on a gzipped 404.
#[derive(Clone, Copy, Debug)]
pub(crate) struct InferenceReply;

/// Which replies are compressed: inference replies, as tower-http's default
/// rule allows (not tiny ones, not already compressed).
fn inference_replies() -> impl tower_http::compression::Predicate {
    use tower_http::compression::predicate::{DefaultPredicate, Predicate as _};
    DefaultPredicate::new().and(
        |_: StatusCode, _: http::Version, _: &HeaderMap, extensions: &http::Extensions| {
            extensions.get::<InferenceReply>().is_some()
        },
    )
}

/// The answer to a request without the bearer token (`--auth-token`): 401
/// with `WWW-Authenticate: Bearer` and the protocol's error body (see
/// [`crate::auth::RestAuth`]).
pub(crate) fn unauthenticated(path: &str) -> Response {
    let mut refusal = error_response(path, StatusCode::UNAUTHORIZED, crate::auth::REFUSAL);
    refusal.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        http::HeaderValue::from_static("Bearer"),
    );
    refusal
}

/// An error answer in the form of the protocol `path` belongs to:
/// MindSpore's `{"error_msg": ...}` for its grammar, else OIP's
/// `{"error": ...}`.
pub(crate) fn error_response(path: &str, status: StatusCode, text: &str) -> Response {
    let body = if is_predict_path(path) {
        serving_proto::mindspore::rest::encode_error(text)
    } else {
        serving_proto::oip::rest::encode_error(text)
    };
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// A path no OIP route matches: MindSpore's grammar, or a 404.
async fn unmatched(
    state: axum::extract::State<Arc<State>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if is_predict_path(uri.path()) {
        return mindspore::predict(state, method, uri, headers, body).await;
    }
    error_response(
        uri.path(),
        StatusCode::NOT_FOUND,
        &format!(
            "no route for {method} {}: the REST routes are the Open Inference Protocol's /v2/... and MindSpore Serving's POST /model/{{servable}}[/version/{{N}}]:{{method}}",
            quote(uri.path())
        ),
    )
}

/// A known OIP path asked with a method it does not serve.
async fn method_not_allowed(method: Method, uri: Uri) -> Response {
    error_response(
        uri.path(),
        StatusCode::METHOD_NOT_ALLOWED,
        &format!("method {method} is not allowed on {}", quote(uri.path())),
    )
}

/// The REST request header giving a deadline in milliseconds from arrival.
pub(crate) use serving_proto::REST_TIMEOUT_HEADER as TIMEOUT_HEADER;

/// The deadline a request's `Request-Timeout-Ms` header sets.
pub(crate) fn deadline_of(headers: &HeaderMap) -> Option<std::time::Instant> {
    let ms: u64 = headers
        .get(TIMEOUT_HEADER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    std::time::Instant::now().checked_add(std::time::Duration::from_millis(ms))
}

/// Runs `work` until `deadline`; `None` when it passed first.
pub(crate) async fn until<F: std::future::Future>(
    deadline: Option<std::time::Instant>,
    work: F,
) -> Option<F::Output> {
    match deadline {
        None => Some(work.await),
        Some(d) => tokio::time::timeout_at(d.into(), work).await.ok(),
    }
}

/// A body over the limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TooBig {
    /// Bytes announced or read so far.
    pub size: u64,
    /// The limit.
    pub limit: usize,
}

/// Reads a body of at most `limit` bytes. A `Content-Length` over the limit
/// is refused before a byte of the body is read; otherwise the body is
/// gathered into a buffer that grows with the bytes received, its capacity
/// taken from `budget` (a body that arrives in one piece is not copied).
/// `aligned` is an offset of the body to place at a 64-byte boundary (the
/// first binary tensor).
pub(crate) async fn read_body(
    headers: &HeaderMap,
    mut body: Body,
    limit: usize,
    budget: &Budget,
    aligned: Option<usize>,
) -> Result<Bytes, ReadError> {
    let announced = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(size) = announced
        && size > limit as u64
    {
        // Read and drop a body that is not far over the limit, so that the
        // client, still sending, reliably reads the 413 instead of a reset
        // connection; a much larger one is refused at once.
        if size - limit as u64 <= DRAIN_MAX {
            drain(body, DRAIN_MAX + limit as u64).await;
        }
        return Err(ReadError::TooBig(TooBig { size, limit }));
    }
    let most = announced.map_or(limit, |n| n as usize);
    let too_big = || {
        ReadError::TooBig(TooBig {
            size: limit as u64 + 1,
            limit,
        })
    };
    let mut first: Option<Bytes> = None;
    let mut gather: Option<Gather<'_>> = None;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            if crate::body_stall::is_stalled(&e) {
                ReadError::Stalled(e.to_string())
            } else {
                ReadError::Transport(e.to_string())
            }
        })?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if data.is_empty() {
            continue;
        }
        if gather.is_none() {
            match first.take() {
                None if data.len() <= most => {
                    first = Some(data);
                    continue;
                }
                None => return Err(too_big()),
                Some(earlier) => {
                    let mut g = Gather::new(budget, most, aligned);
                    g.push(earlier).map_err(ReadError::Busy)?;
                    gather = Some(g);
                }
            }
        }
        let Some(g) = gather.as_mut() else { continue };
        let all = data.len();
        if g.push(data).map_err(ReadError::Busy)? < all {
            return Err(too_big());
        }
    }
    Ok(match (gather, first) {
        (Some(g), _) => g.finish(),
        (None, first) => first.unwrap_or_default(),
    })
}

/// How far over the limit a refused body is still read (and dropped).
const DRAIN_MAX: u64 = 64 << 20;

/// Reads and drops up to `max` bytes of `body`, without keeping them.
async fn drain(mut body: Body, max: u64) {
    let mut seen = 0u64;
    while let Some(Ok(frame)) = body.frame().await {
        if let Some(data) = frame.data_ref() {
            seen += data.len() as u64;
        }
        if seen > max {
            break;
        }
    }
}

/// Why a body could not be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum ReadError {
    /// Over the limit.
    TooBig(TooBig),
    /// The connection failed.
    Transport(String),
    /// The body stopped arriving (`--request-body-timeout`).
    Stalled(String),
    /// The server's memory for requests still arriving is spent.
    Busy(Exhausted),
}

impl ReadError {
    /// The request's error: a body over the limit with the route's text
    /// (`too_big`), the others as every route answers them.
    pub(crate) fn into_serve_error(
        self,
        too_big: impl FnOnce(TooBig) -> String,
    ) -> crate::error::ServeError {
        use crate::error::ServeError;
        match self {
            ReadError::TooBig(t) => ServeError::ResourceExhausted(too_big(t)),
            ReadError::Transport(t) => ServeError::InvalidArgument(t),
            ReadError::Stalled(t) => ServeError::BodyStalled(t),
            ReadError::Busy(e) => ServeError::Unavailable(e.to_string()),
        }
    }
}
