//! The Open Inference Protocol's REST routes, with the binary tensor
//! extension. Errors are `{"error": "..."}` with the DESIGN.md statuses.

use std::convert::Infallible;
use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State as Extract};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use serde_json::json;
use serving_proto::oip::rest::{self as codec, HEADER_LENGTH};

use super::{memory, read_body};
use crate::error::ServeError;
use crate::service::{State, oip};

/// Bodies (and replies) of at least this many bytes are decoded (and
/// encoded) on the blocking pool: a 100 MB JSON body takes most of a
/// second to read, which would stall every other connection on the worker.
pub(super) const BLOCKING_BYTES: usize = 1 << 20;

/// Runs `f` on the blocking pool when `large`, else here. A panic in `f`
/// goes on as a panic here; `None` when the runtime is shutting down.
pub(super) async fn off_workers<T: Send + 'static>(
    large: bool,
    f: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
    if !large {
        return Some(f());
    }
    match tokio::task::spawn_blocking(f).await {
        Ok(v) => Some(v),
        Err(e) => match e.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            Err(_) => None,
        },
    }
}

fn shutting_down() -> ServeError {
    ServeError::Unavailable("the server is shutting down".into())
}

pub(crate) fn error(e: &ServeError) -> Response {
    (
        e.http_status(),
        [(header::CONTENT_TYPE, "application/json")],
        codec::encode_error(&e.to_string()),
    )
        .into_response()
}

/// `GET /v2`.
pub(crate) async fn server_metadata(Extract(state): Extract<Arc<State>>) -> Response {
    Json(serving_proto::oip::metadata::ServerMetadata {
        name: state.server_name.clone(),
        version: env!("CARGO_PKG_VERSION").into(),
        extensions: oip::extensions(&state)
            .into_iter()
            .map(Into::into)
            .collect(),
    })
    .into_response()
}

/// `GET /v2/health/live`.
pub(crate) async fn live() -> Response {
    Json(json!({ "live": true })).into_response()
}

/// `GET /v2/health/ready`: 200 when ready, 503 while starting or draining.
pub(crate) async fn ready(Extract(state): Extract<Arc<State>>) -> Response {
    let ready = state.server_ready();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(json!({ "ready": ready }))).into_response()
}

fn metadata(state: &State, model: &str, version: &str) -> Response {
    match oip::model_metadata(state, model, version) {
        Ok(m) => Json(m).into_response(),
        Err(e) => error(&e),
    }
}

/// `GET /v2/models/{model}`.
pub(crate) async fn model_metadata(
    Extract(state): Extract<Arc<State>>,
    Path(model): Path<String>,
) -> Response {
    metadata(&state, &model, "")
}

/// `GET /v2/models/{model}/versions/{version}`.
pub(crate) async fn model_metadata_version(
    Extract(state): Extract<Arc<State>>,
    Path((model, version)): Path<(String, String)>,
) -> Response {
    metadata(&state, &model, &version)
}

fn readiness(state: &State, model: &str, version: &str) -> Response {
    match oip::model_ready(state, model, version) {
        Ok(true) => Json(json!({ "name": model, "ready": true })).into_response(),
        Ok(false) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "name": model, "ready": false })),
        )
            .into_response(),
        Err(e) => error(&e),
    }
}

/// `GET /v2/models/{model}/ready`.
pub(crate) async fn model_ready(
    Extract(state): Extract<Arc<State>>,
    Path(model): Path<String>,
) -> Response {
    readiness(&state, &model, "")
}

/// `GET /v2/models/{model}/versions/{version}/ready`.
pub(crate) async fn model_ready_version(
    Extract(state): Extract<Arc<State>>,
    Path((model, version)): Path<(String, String)>,
) -> Response {
    readiness(&state, &model, &version)
}

/// `POST /v2/models/{model}/infer`.
pub(crate) async fn infer(
    Extract(state): Extract<Arc<State>>,
    Path(model): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    run(&state, model, String::new(), &headers, body).await
}

/// `POST /v2/models/{model}/versions/{version}/infer`.
pub(crate) async fn infer_version(
    Extract(state): Extract<Arc<State>>,
    Path((model, version)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    run(&state, model, version, &headers, body).await
}

async fn run(
    state: &Arc<State>,
    model: String,
    version: String,
    headers: &HeaderMap,
    body: Body,
) -> Response {
    let started = std::time::Instant::now();
    let name = model.clone();
    // The class is the error's own, not read back from the status.
    let (response, class) = match infer_inner(state, model, version, headers, body).await {
        Ok(mut r) => {
            r.extensions_mut().insert(super::InferenceReply);
            (r, crate::service::Class::Ok)
        }
        Err(e) => (error(&e), e.class()),
    };
    state.record(
        crate::metrics::Front::OipRest,
        &name,
        class,
        started.elapsed(),
    );
    response
}

/// `GET /metrics`: Prometheus text.
pub(crate) async fn metrics(Extract(state): Extract<Arc<State>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(&state.registry),
    )
        .into_response()
}

async fn infer_inner(
    state: &Arc<State>,
    model: String,
    version: String,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ServeError> {
    // An unknown model is 404 whatever the body holds (the version is not
    // held while the body arrives).
    let decoupled = oip::resolve(state, &model, &version).map(|m| {
        m.servable
            .method(&m.method)
            .is_some_and(|info| info.decoupled)
    })?;
    let limit = state.max_msg_bytes;
    // The binary extension's JSON header length, if given, places the
    // first binary tensor at an aligned address (ONNX Runtime then reads it
    // in place); it is checked against the body once that is in.
    let header_text = match headers.get(HEADER_LENGTH) {
        None => None,
        Some(v) => Some(v.to_str().map_err(|_| {
            ServeError::InvalidArgument(format!("{HEADER_LENGTH} is not a decimal integer"))
        })?),
    };
    let aligned = header_text.and_then(|t| t.trim().parse::<usize>().ok());
    let bytes = read_body(headers, body, limit, &state.incoming, aligned)
        .await
        .map_err(|e| e.into_serve_error(|_| format!("http message is bigger than {limit}")))?;
    let header_len = header_text
        .map(|text| codec::parse_header_length(text, bytes.len()))
        .transpose()?;
    // The body and what decoding it builds stay charged until the request
    // is answered.
    // Triton's refusal (501): a decoupled model's responses need a stream.
    if decoupled {
        return Err(ServeError::Unsupported(
            "HTTP end point doesn't support models with decoupled transaction policy".into(),
        ));
    }
    let charge = memory::charge_body(state, bytes.len())?;
    let (mut req, _charge) = if header_len == Some(0) {
        (
            oip::raw_binary_request(state, &model, &version, bytes)?,
            charge,
        )
    } else {
        let decoding = state.clone();
        let large = bytes.len() >= BLOCKING_BYTES;
        let (decoded, charge) = memory::decode(charge, large, move || {
            codec::decode_request_with(bytes, header_len, &mut |_, p| {
                decoding.shared_memory.input(p)
            })
        })
        .await?;
        (decoded?, charge)
    };
    req.model_name = model;
    req.model_version = version;
    let binary = if header_len == Some(0) {
        codec::BinaryOutputs::all()
    } else {
        codec::BinaryOutputs::of(&req)
    };
    let deadline = super::deadline_of(headers);
    let incoming = oip::Incoming::now("POST /v2/models/{model}/infer", headers.get("traceparent"));
    let resp = super::until(deadline, oip::infer(state, req, deadline, &incoming))
        .await
        .ok_or_else(|| {
            ServeError::DeadlineExceeded(
                "Deadline Exceeded: the request's Request-Timeout-Ms passed before it completed"
                    .into(),
            )
        })??;
    let text_bytes: usize = resp
        .outputs
        .iter()
        .filter(|t| !binary.wants(&t.name))
        .map(|t| t.tensor.payload_len())
        .sum();
    let body = off_workers(text_bytes >= BLOCKING_BYTES / 4, move || {
        codec::encode_response(&resp, |name| binary.wants(name))
    })
    .await
    .ok_or_else(shutting_down)??;
    crate::service::check_reply_size(body.len(), limit)?;
    let len = body.len();
    let mut response = Response::new(Body::from_stream(futures_util::stream::iter(
        body.parts.into_iter().map(Ok::<_, Infallible>),
    )));
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(if body.header_len.is_some() {
            "application/octet-stream"
        } else {
            "application/json"
        }),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    if let Some(n) = body.header_len {
        h.insert(HEADER_LENGTH, HeaderValue::from(n));
    }
    Ok(response)
}
