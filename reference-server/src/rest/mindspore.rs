//! `POST /model/{servable}[/version/{N}]:{method}`: MindSpore's request
//! grammar, conversions and error texts (spec §3), with HTTP statuses from
//! the error table where MindSpore answers 200 to everything. Only paths
//! whose first segment is `model` come here ([`url::is_predict_path`]).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State as Extract;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, Method, StatusCode, Uri, header};
use serving_proto::mindspore::rest::{self as codec, RestError};
use serving_proto::mindspore::{Outcome, url};

use super::oip::{BLOCKING_BYTES, off_workers};
use super::{memory, read_body};
use crate::service::Class;
use crate::service::{State, mindspore as service};

const SHUTTING_DOWN: &str = "the server is shutting down";

/// The tensor bytes of a reply (what its JSON is written from).
fn outcome_bytes(outcome: &Outcome) -> usize {
    match outcome {
        Outcome::Failed(_) => 0,
        Outcome::Instances(results) => results
            .iter()
            .flatten()
            .flat_map(|tensors| tensors.values())
            .map(|t| t.payload_len())
            .sum(),
    }
}

fn json(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// An error answer of `class`, which the metrics record as it is (not
/// read back from the HTTP status).
fn error(class: Class, text: &str) -> Response {
    classed(class.http(), class, codec::encode_error(text))
}

/// A JSON answer with its status and class.
fn classed(status: StatusCode, class: Class, body: String) -> Response {
    let mut response = json(status, body);
    response.extensions_mut().insert(class);
    response
}

/// Handles a request on MindSpore's grammar, and records it.
pub(crate) async fn predict(
    state: Extract<Arc<State>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let started = std::time::Instant::now();
    let metrics_state = state.0.clone();
    let model = url::parse(uri.path())
        .map(|u| u.servable)
        .unwrap_or_default();
    let mut response = answer(state, method, uri, headers, body).await;
    if response.status().is_success() {
        response.extensions_mut().insert(super::InferenceReply);
    }
    let class = response
        .extensions()
        .get::<Class>()
        .copied()
        .unwrap_or_else(|| Class::of_http(response.status()));
    metrics_state.record(
        crate::metrics::Front::MindSporeRest,
        &model,
        class,
        started.elapsed(),
    );
    response
}

async fn answer(
    Extract(state): Extract<Arc<State>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let deadline = super::deadline_of(&headers);
    // MindSpore's order: method, body size, JSON, URL.
    if method != Method::POST {
        return classed(
            StatusCode::METHOD_NOT_ALLOWED,
            Class::InvalidArgument,
            codec::encode_error(&RestError::OnlyPost.to_string()),
        );
    }
    let limit = state.max_msg_bytes;
    let bytes = match read_body(&headers, body, limit, &state.incoming, None).await {
        Ok(b) => b,
        Err(e) => {
            let e = e.into_serve_error(|t| {
                RestError::TooBig {
                    limit,
                    size: t.size as usize,
                }
                .to_string()
            });
            return error(e.class(), &e.to_string());
        }
    };
    // The body and what decoding it builds stay charged until the request
    // is answered.
    let large = bytes.len() >= BLOCKING_BYTES;
    let decoded = match memory::charge_body(&state, bytes.len()) {
        Ok(charge) => {
            memory::decode(charge, large, move || codec::decode_request(&bytes, limit)).await
        }
        Err(refused) => Err(refused),
    };
    let (instances, _charge) = match decoded {
        Ok((Ok(i), charge)) => (i, charge),
        Ok((Err(e), _)) => return error(Class::InvalidArgument, &e.to_string()),
        Err(refused) => {
            let class = if refused.never_fits() {
                Class::ResourceExhausted
            } else {
                Class::Unavailable
            };
            return error(class, &refused.to_string());
        }
    };
    let target = match url::parse(uri.path()) {
        Ok(t) => t,
        Err(e) => return error(Class::InvalidArgument, &RestError::from(e).to_string()),
    };
    if let Some(e) = service::unready(&state, &target.servable, &target.method) {
        return error(Class::Unavailable, &e.message);
    }
    let work = service::predict(
        &state,
        &target.servable,
        &target.method,
        target.version,
        instances,
        deadline,
    );
    let Some(answer) = super::until(deadline, work).await else {
        return error(
            Class::DeadlineExceeded,
            "Deadline Exceeded: the request's Request-Timeout-Ms passed before it completed",
        );
    };
    let class = answer.class;
    let outcome = answer.outcome;
    let large = outcome_bytes(&outcome) >= BLOCKING_BYTES / 4;
    let Some(encoded) = off_workers(large, move || codec::encode_response(&outcome)).await else {
        return error(Class::Unavailable, SHUTTING_DOWN);
    };
    match encoded {
        Ok(body) => match crate::service::check_reply_size(body.len(), limit) {
            Ok(()) => classed(class.http(), class, body),
            Err(e) => error(e.class(), &e.to_string()),
        },
        Err(e) => error(Class::Internal, &e.to_string()),
    }
}
