//! The Open Inference Protocol: model resolution, inference, metadata and
//! readiness.
//!
//! A servable is visible as model `{servable}` (its first method) and as
//! model `{servable}.{method}` for every method.

use std::sync::Arc;
use std::time::Instant;

use serving_proto::oip::{InferRequest, InferResponse, NamedTensor};
use serving_proto::text::quote;
use serving_proto::{DataType, NamedTensors, Tensor};

use super::State;
use crate::engine::registry::Lookup;
use crate::engine::scheduler::Refusal;
use crate::engine::{ServableVersion, TensorSpec};
use crate::error::ServeError;

/// Name of this server in server metadata.
pub const SERVER_NAME: &str = "serving-reference-server";
/// Protocol extensions supported.
pub const EXTENSIONS: &[&str] = &["binary_tensor_data"];
/// The platform reported in model metadata.
pub const PLATFORM: &str = "onnxruntime_onnx";

/// A resolved model: a servable version and one of its methods.
#[derive(Clone, Debug)]
pub struct Model {
    /// The servable version.
    pub servable: Arc<ServableVersion>,
    /// The method's name.
    pub method: String,
}

fn parse_version(model: &str, version: &str) -> Result<u64, ServeError> {
    if version.is_empty() {
        return Ok(0);
    }
    match version.parse::<u64>() {
        Ok(v) if v > 0 => Ok(v),
        _ => Err(ServeError::InvalidArgument(format!(
            "model '{model}': version '{version}' is not a positive integer",
            model = quote(model),
            version = quote(version)
        ))),
    }
}

/// Finds model `name` at `version` (empty = newest).
pub fn resolve(state: &State, name: &str, version: &str) -> Result<Model, ServeError> {
    let v = parse_version(name, version)?;
    let (servable, method) = match state.registry.get(name, v) {
        Err(Lookup::NoServable) => match name.split_once('.') {
            Some((s, m)) => (s, Some(m)),
            None => (name, None),
        },
        _ => (name, None),
    };
    let sv = state.registry.get(servable, v).map_err(|e| match e {
        Lookup::NoServable => {
            ServeError::NotFound(format!("model '{name}' is not found", name = quote(name)))
        }
        Lookup::NoVersion => ServeError::NotFound(format!(
            "model '{name}' has no version {version}",
            name = quote(name),
            version = quote(version)
        )),
    })?;
    let method = match method {
        Some(m) if sv.method(m).is_some() => m.to_owned(),
        Some(_) => {
            return Err(ServeError::NotFound(format!(
                "model '{name}' is not found",
                name = quote(name)
            )));
        }
        None => sv.config.method[0].name.clone(),
    };
    Ok(Model {
        servable: sv,
        method,
    })
}

/// Runs an inference request.
pub async fn infer(
    state: &State,
    req: InferRequest,
    deadline: Option<Instant>,
) -> Result<InferResponse, ServeError> {
    if !state.is_ready() {
        return Err(ServeError::Unavailable("the server is not ready".into()));
    }
    let model = resolve(state, &req.model_name, &req.model_version)?;
    let mut inputs = NamedTensors::new();
    for input in req.inputs {
        if inputs.insert(input.name.clone(), input.tensor).is_some() {
            return Err(ServeError::InvalidArgument(format!(
                "input '{}' is given more than once",
                quote(&input.name)
            )));
        }
    }
    // Each output may be asked for once (as Triton's L0_grpc checks).
    let mut asked = std::collections::BTreeSet::new();
    for output in &req.outputs {
        if !asked.insert(output.name.as_str()) {
            return Err(ServeError::InvalidArgument(format!(
                "output '{}' is requested more than once",
                quote(&output.name)
            )));
        }
    }
    let outputs = match model
        .servable
        .scheduler()
        .infer(&model.method, &req.model_name, inputs, deadline)
        .await
    {
        Ok(result) => result?,
        Err(Refusal::NotAvailable) => {
            return Err(ServeError::Unavailable(format!(
                "no replica of model '{}' is alive",
                quote(&req.model_name)
            )));
        }
        Err(Refusal::QueueFull(limit)) => {
            return Err(ServeError::Unavailable(format!(
                "model '{}' has {limit} requests queued, its limit; retry later",
                quote(&req.model_name)
            )));
        }
        Err(Refusal::Deadline) => {
            return Err(ServeError::DeadlineExceeded(
                "Deadline Exceeded: the request's deadline passed before it ran".into(),
            ));
        }
    };
    let mut named: Vec<NamedTensor> = Vec::with_capacity(outputs.len());
    if req.outputs.is_empty() {
        named.extend(
            outputs
                .into_iter()
                .map(|(n, t)| NamedTensor::new(n, as_oip(t))),
        );
    } else {
        for wanted in &req.outputs {
            let t = outputs.get(&wanted.name).ok_or_else(|| {
                ServeError::InvalidArgument(format!(
                    "model '{}' has no output '{}' (outputs: {})",
                    quote(&req.model_name),
                    quote(&wanted.name),
                    outputs.keys().cloned().collect::<Vec<_>>().join(", ")
                ))
            })?;
            named.push(NamedTensor::new(wanted.name.clone(), as_oip(t.clone())));
        }
    }
    Ok(InferResponse {
        model_name: req.model_name,
        model_version: model.servable.version.to_string(),
        id: req.id,
        parameters: Default::default(),
        outputs: named,
    })
}

/// OIP has no STRING: text outputs travel as BYTES.
fn as_oip(t: Tensor) -> Tensor {
    if t.dtype() != DataType::String {
        return t;
    }
    let (_, shape, data) = t.into_parts();
    match data {
        serving_proto::TensorData::Elements(e) => {
            Tensor::from_elements(DataType::Bytes, shape, e).expect("same element count")
        }
        serving_proto::TensorData::Raw(_) => unreachable!("string tensors hold elements"),
    }
}

pub use serving_proto::oip::metadata::{ModelMetadata, TensorMetadata};

fn meta(name: &str, spec: &TensorSpec) -> TensorMetadata {
    let datatype = match spec.dtype {
        DataType::String => "BYTES",
        d => d.oip_name().unwrap_or("BYTES"),
    };
    TensorMetadata {
        name: name.to_owned(),
        datatype: datatype.to_owned(),
        shape: spec.shape.clone(),
    }
}

/// The metadata of a model.
pub fn model_metadata(
    state: &State,
    name: &str,
    version: &str,
) -> Result<ModelMetadata, ServeError> {
    let model = resolve(state, name, version)?;
    let sv = &model.servable;
    let method = sv.method(&model.method).expect("resolved method exists");
    let find = |value: &str, want_input: bool| -> Option<TensorMetadata> {
        for stage in &method.stage {
            let info = &sv.models[sv.model_index(&stage.model)];
            let (names, specs) = if want_input {
                (&stage.inputs, &info.inputs)
            } else {
                (&stage.outputs, &info.outputs)
            };
            if let Some(i) = names.iter().position(|n| n == value) {
                return Some(meta(value, &specs[i]));
            }
        }
        None
    };
    let versions = state
        .registry
        .list()
        .into_iter()
        .find(|(n, _)| *n == sv.name)
        .map(|(_, v)| v.iter().map(u64::to_string).collect())
        .unwrap_or_default();
    Ok(ModelMetadata {
        name: name.to_owned(),
        versions,
        platform: PLATFORM.to_owned(),
        inputs: method.inputs.iter().filter_map(|i| find(i, true)).collect(),
        outputs: method
            .outputs
            .iter()
            .filter_map(|o| find(o, false).or_else(|| find(o, true)))
            .collect(),
    })
}

/// Whether a model is ready.
pub fn model_ready(state: &State, name: &str, version: &str) -> Result<bool, ServeError> {
    resolve(state, name, version).map(|_| state.is_ready())
}
