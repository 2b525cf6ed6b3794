//! `Predict`: look up the servable, version and method, run the instances,
//! and answer with MindSpore's in-band errors and texts (spec §2.5, §2.7).

use std::sync::Arc;

use serving_proto::NamedTensors;
use serving_proto::mindspore::{Outcome, ServableError, StatusCode};

use super::State;
use crate::engine::instances;
use crate::engine::registry::Lookup;

/// Runs a MindSpore prediction; every failure is in the outcome.
pub async fn predict(
    state: &State,
    servable: &str,
    method: &str,
    version: u64,
    instances: Vec<NamedTensors>,
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
    let method = method.to_owned();
    let sv2 = Arc::clone(&sv);
    let run = tokio::task::spawn_blocking(move || {
        let Some(m) = sv2.method(&method) else {
            return Err(ServableError::method_not_available(&sv2.name, &method));
        };
        instances::predict(&sv2, m, instances)
    })
    .await;
    match run {
        Ok(Ok(results)) => Outcome::from_results(results),
        Ok(Err(e)) => Outcome::Failed(e),
        Err(join) => Outcome::Failed(ServableError::new(
            StatusCode::SystemError,
            format!("Serving Error: exception occurred: {join}"),
        )),
    }
}
