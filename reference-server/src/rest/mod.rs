//! The REST front end: MindSpore Serving's `POST /model/...` routes and the
//! Open Inference Protocol's `/v2` routes on one port.

pub mod mindspore;
pub mod oip;

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::routing::{get, post};
use bytes::Bytes;
use http::HeaderMap;
use http_body_util::{BodyExt, Limited};

use crate::service::State;

/// The REST router.
pub fn router(state: Arc<State>, token: Option<Arc<str>>) -> Router {
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
        .route("/v2/repository/index", post(oip::repository_index))
        .route(
            "/v2/repository/models/{model}/load",
            post(oip::repository_load),
        )
        .route(
            "/v2/repository/models/{model}/unload",
            post(oip::repository_unload),
        )
        .fallback(mindspore::predict)
        .with_state(state)
        .layer(axum::middleware::from_fn_with_state(
            token,
            crate::auth::rest,
        ))
}

/// The REST request header giving a deadline in milliseconds from arrival.
pub use serving_proto::REST_TIMEOUT_HEADER as TIMEOUT_HEADER;

/// The deadline a request's `Request-Timeout-Ms` header sets.
pub fn deadline_of(headers: &HeaderMap) -> Option<std::time::Instant> {
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
pub async fn until<F: std::future::Future>(
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
pub struct TooBig {
    /// Bytes announced or read so far.
    pub size: u64,
    /// The limit.
    pub limit: usize,
}

/// Reads a body of at most `limit` bytes. A `Content-Length` over the limit
/// is refused before a byte of the body is read.
pub async fn read_body(headers: &HeaderMap, body: Body, limit: usize) -> Result<Bytes, ReadError> {
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
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(ReadError::TooBig(TooBig {
            size: limit as u64 + 1,
            limit,
        })),
        Err(e) => Err(ReadError::Transport(e.to_string())),
    }
}

/// How far over the limit a refused body is still read (and dropped).
const DRAIN_MAX: u64 = 64 << 20;

/// Reads and drops up to `max` bytes of `body`, without keeping them.
async fn drain(mut body: Body, max: u64) {
    use http_body_util::BodyExt;
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
pub enum ReadError {
    /// Over the limit.
    TooBig(TooBig),
    /// The connection failed.
    Transport(String),
}
