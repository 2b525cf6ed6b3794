//! Running a method on whole tensors (the Open Inference Protocol): each
//! input must have the model's data type and shape, dynamic dimensions
//! aside; batching is the caller's.

use serving_proto::text::quote;
use serving_proto::{NamedTensors, Tensor};

use super::replica::Runner;
use crate::error::ServeError;
use crate::repository::config::MethodConfig;
use crate::runtime::tensor_io;
use serving_proto::tensor::ShapeDisplay;

/// Runs `method` on named input tensors and returns its outputs. Blocking.
pub fn infer(
    runner: &mut Runner<'_>,
    method: &MethodConfig,
    mut values: NamedTensors,
    model: &str,
) -> Result<NamedTensors, ServeError> {
    if let Some(missing) = method.inputs.iter().find(|i| !values.contains_key(*i)) {
        return Err(ServeError::InvalidArgument(format!(
            "model '{model}' expects input '{missing}', which the request does not have (inputs: {})",
            method.inputs.join(", "),
            model = quote(model),
            missing = quote(missing)
        )));
    }
    if let Some(extra) = values.keys().find(|k| !method.inputs.contains(k)) {
        return Err(ServeError::InvalidArgument(format!(
            "unexpected input '{extra}' for model '{model}' (inputs: {})",
            method.inputs.join(", "),
            model = quote(model),
            extra = quote(extra)
        )));
    }
    for stage in &method.stage {
        let index = runner.model_index(&stage.model);
        let info = &runner.models[index];
        let mut inputs: Vec<&Tensor> = Vec::with_capacity(stage.inputs.len());
        for (name, spec) in stage.inputs.iter().zip(&info.inputs) {
            let t = &values[name];
            let shape_ok = t.shape().len() == spec.shape.len()
                && t.shape()
                    .iter()
                    .zip(&spec.shape)
                    .all(|(&d, &s)| s < 0 || d == s);
            if !tensor_io::accepts(spec.element, t.dtype()) || !shape_ok {
                return Err(ServeError::InvalidArgument(format!(
                    "input '{name}' of model '{model}' must be {} of shape {} (-1 = any), got {} of shape {}",
                    spec.dtype,
                    ShapeDisplay(&spec.shape),
                    t.dtype(),
                    ShapeDisplay(t.shape()),
                    model = quote(model),
                    name = quote(name)
                )));
            }
            // ONNX string tensors hold UTF-8 text: other bytes are the
            // request's fault, not the model's.
            if let Some(bad) = tensor_io::first_non_utf8(t) {
                return Err(ServeError::InvalidArgument(format!(
                    "input '{name}' of model '{model}': element {bad} is not UTF-8 text, which this model's string input (an ONNX string tensor) requires",
                    model = quote(model),
                    name = quote(name)
                )));
            }
            inputs.push(t);
        }
        let outputs = runner.run_model(index, &inputs).map_err(|e| {
            ServeError::Internal(format!(
                "model '{model}' failed to run: {e}",
                model = quote(model)
            ))
        })?;
        for (name, t) in stage.outputs.iter().zip(outputs) {
            values.insert(name.clone(), t);
        }
    }
    Ok(method
        .outputs
        .iter()
        .filter_map(|o| Some((o.clone(), values.get(o)?.clone())))
        .collect())
}
