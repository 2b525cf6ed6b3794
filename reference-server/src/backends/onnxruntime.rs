//! The ONNX Runtime backend: a model is one session on a device; inputs
//! are borrowed from the tensors where their layout allows, outputs taken
//! from the session's values.

use std::sync::Arc;
use std::time::Instant;

use ort::session::Session;
use ort::value::{TensorElementType, ValueType};
use serving_proto::Tensor;

use crate::engine::backend::{
    Backend, Batch, IoTimes, LoadError, ModelInstance, ModelIo, ModelLoad, RunError,
};
use crate::engine::config::ONNX_BACKEND;
use crate::engine::model::TensorSpec;
use crate::runtime::device::Device;
use crate::runtime::{Runtime, tensor_io};

/// ONNX Runtime, loaded once for the process.
#[derive(Debug)]
pub struct OnnxRuntime {
    runtime: Arc<Runtime>,
}

impl OnnxRuntime {
    /// The backend over `runtime`.
    pub fn new(runtime: Arc<Runtime>) -> OnnxRuntime {
        OnnxRuntime { runtime }
    }
}

/// One session and its inputs' element types.
#[derive(Debug)]
struct Instance {
    session: Session,
    inputs: Vec<(String, TensorElementType)>,
    outputs: Vec<String>,
}

fn spec(name: &str, ty: &ValueType) -> Result<(TensorSpec, TensorElementType), String> {
    match ty {
        ValueType::Tensor { ty, shape, .. } => Ok((
            TensorSpec {
                name: name.to_owned(),
                dtype: tensor_io::data_type(*ty).ok_or_else(|| {
                    format!("'{name}' has element type {ty}, which neither protocol carries")
                })?,
                shape: shape.to_vec(),
                untyped: false,
            },
            *ty,
        )),
        other => Err(format!("'{name}' is not a tensor ({other})")),
    }
}

impl Backend for OnnxRuntime {
    fn name(&self) -> &'static str {
        ONNX_BACKEND
    }

    fn load(
        &self,
        load: &ModelLoad<'_>,
        device: Device,
    ) -> Result<(Box<dyn ModelInstance>, ModelIo), LoadError> {
        let label = load.label();
        let session = self
            .runtime
            .session(&label, load.bytes, device, load.threads, load.cpu_fallback)
            .map_err(|e| LoadError::Backend(Box::new(e)))?;
        let err = |reason: String| LoadError::Model {
            model: label.clone(),
            reason,
        };
        let inputs = session
            .inputs()
            .iter()
            .map(|o| spec(o.name(), o.dtype()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(err)?;
        let outputs = session
            .outputs()
            .iter()
            .map(|o| spec(o.name(), o.dtype()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(err)?;
        let instance = Instance {
            inputs: inputs.iter().map(|(s, e)| (s.name.clone(), *e)).collect(),
            outputs: outputs.iter().map(|(s, _)| s.name.clone()).collect(),
            session,
        };
        let io = ModelIo {
            inputs: inputs.into_iter().map(|(s, _)| s).collect(),
            outputs: outputs.into_iter().map(|(s, _)| s).collect(),
            decoupled: false,
        };
        Ok((Box::new(instance), io))
    }
}

impl ModelInstance for Instance {
    fn run(&mut self, batch: &Batch<'_>, times: &mut IoTimes) -> Result<Vec<Tensor>, RunError> {
        let started = Instant::now();
        let values = self
            .inputs
            .iter()
            .zip(batch.inputs)
            .filter_map(|((name, element), t)| Some((name, *element, (*t)?)))
            .map(|(name, element, t)| Ok((name.clone(), tensor_io::input_value(element, t)?)))
            .collect::<Result<Vec<_>, String>>()?;
        let ran = Instant::now();
        times.input += ran - started;
        let mut outputs = self
            .session
            .run(values)
            .map_err(|e| RunError::Failed(e.to_string()))?;
        let taking = Instant::now();
        let given: Vec<&Tensor> = batch.inputs.iter().flatten().copied().collect();
        let taken = self
            .outputs
            .iter()
            .map(|name| match outputs.remove(name) {
                Some(v) => tensor_io::output_tensor(v, &given),
                None => Err(format!("the model produced no output '{name}'")),
            })
            .collect::<Result<Vec<_>, String>>();
        drop(outputs);
        times.output += taking.elapsed();
        Ok(taken?)
    }
}
