//! `Predict`: look up the servable, version and method, run the instances,
//! and answer with MindSpore's in-band errors and texts (spec §2.5, §2.7).

use std::time::Instant;

use serving_proto::NamedTensors;
use serving_proto::mindspore::{Outcome, ServableError, StatusCode};

use super::State;
use crate::engine::registry::Lookup;
use crate::engine::scheduler::Refusal;

/// Runs a MindSpore prediction; every failure is in the outcome.
pub async fn predict(
    state: &State,
    servable: &str,
    method: &str,
    version: u64,
    instances: Vec<NamedTensors>,
    deadline: Option<Instant>,
) -> Outcome {
    if instances.is_empty() {
        return Outcome::Failed(ServableError::new(
            StatusCode::InvalidInputs,
            format!(
                "Instances count of request cannot be 0, servable: {servable}, method: {method}"
            ),
        ));
    }
    let sv = match state.registry.get(servable, version) {
        Ok(sv) => sv,
        Err(Lookup::NoServable | Lookup::NoVersion) => {
            return Outcome::Failed(ServableError::servable_not_available(
                servable, method, version,
            ));
        }
    };
    if sv.method(method).is_none() {
        return Outcome::Failed(ServableError::method_not_available(servable, method));
    }
    match sv.scheduler().predict(method, instances, deadline).await {
        Ok(results) => Outcome::from_results(results),
        Err(Refusal::NotAvailable) => Outcome::Failed(
            ServableError::servable_not_available(servable, method, version)
                .with_code(StatusCode::ServableUnavailable),
        ),
        Err(Refusal::QueueFull(limit)) => Outcome::Failed(ServableError::queue_full(limit)),
        Err(Refusal::Deadline) => Outcome::Failed(ServableError::new(
            StatusCode::Failed,
            "Deadline Exceeded: the request's deadline passed before it ran",
        )),
    }
}

/// The HTTP status of a whole-request MindSpore error (DESIGN.md table).
pub fn http_status(e: &ServableError) -> http::StatusCode {
    match StatusCode::from_code(e.code) {
        Some(StatusCode::InvalidInputs)
            if e.message.ends_with("servable is not available")
                || e.message.ends_with("method is not available") =>
        {
            http::StatusCode::NOT_FOUND
        }
        Some(StatusCode::InvalidInputs) => http::StatusCode::BAD_REQUEST,
        Some(StatusCode::SystemError) => http::StatusCode::INTERNAL_SERVER_ERROR,
        Some(StatusCode::Failed) if e.message.starts_with("Deadline Exceeded") => {
            http::StatusCode::GATEWAY_TIMEOUT
        }
        Some(
            StatusCode::Failed | StatusCode::WorkerUnavailable | StatusCode::ServableUnavailable,
        ) => http::StatusCode::SERVICE_UNAVAILABLE,
        _ => http::StatusCode::INTERNAL_SERVER_ERROR,
    }
}
