//! Triton's `model_configuration` extension: a model's `ModelConfig`.
//!
//! A Triton model answers with its configuration as completed at load
//! (the file's fields, and what Triton would fill in from the ONNX file);
//! any other servable with the equivalent configuration of the method the
//! model name reaches ([`crate::repository::triton::config_of`]).

use serving_proto::model_config::ModelConfig;

use super::State;
use super::oip::resolve;
use crate::error::ServeError;
use crate::repository::triton;

/// The configuration of model `name` at `version` (empty: the newest).
pub(crate) fn model_config(
    state: &State,
    name: &str,
    version: &str,
) -> Result<ModelConfig, ServeError> {
    let model = resolve(state, name, version)?;
    let sv = &model.servable;
    if let Some(config) = sv
        .attachment
        .as_ref()
        .and_then(|a| a.downcast_ref::<ModelConfig>())
    {
        let mut config = config.clone();
        // A configuration without instance groups serves on the server's
        // default devices: say which, as Triton completes it.
        if config.instance_group.is_empty() {
            config.instance_group = triton::groups_of(&config.name, sv.devices());
        }
        return Ok(config);
    }
    let method = sv.method(&model.method).ok_or_else(|| {
        ServeError::NotFound(format!(
            "model '{}' has no method",
            serving_proto::text::quote(name)
        ))
    })?;
    Ok(triton::config_of(
        name,
        method,
        &sv.spec.deployment,
        sv.devices(),
    ))
}
