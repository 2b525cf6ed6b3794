//! A replica: one session per model of a servable version, on one device,
//! owned by the worker thread that runs it.

use ort::session::Session;
use ort::value::ValueType;
use serving_proto::Tensor;

use super::config::ServableSpec;
use super::model::{ModelInfo, TensorSpec};
use crate::runtime::device::Device;
use crate::runtime::{Runtime, RuntimeError, tensor_io};

/// Sessions on one device.
#[derive(Debug)]
pub struct Replica {
    /// Where it runs.
    pub device: Device,
    sessions: Vec<Session>,
}

/// What loading a replica needs.
#[derive(Clone, Copy, Debug)]
pub struct ReplicaSpec<'a> {
    /// Servable name (for messages).
    pub servable: &'a str,
    /// Version (for messages).
    pub version: u64,
    /// The servable.
    pub spec: &'a ServableSpec,
    /// Each model's bytes, in configuration order.
    pub models: &'a [std::sync::Arc<Vec<u8>>],
    /// ONNX Runtime intra-op threads.
    pub threads: usize,
    /// Run on the CPU when the device cannot be used.
    pub cpu_fallback: bool,
}

fn spec(name: &str, ty: &ValueType) -> Result<TensorSpec, String> {
    match ty {
        ValueType::Tensor { ty, shape, .. } => Ok(TensorSpec {
            name: name.to_owned(),
            element: *ty,
            dtype: tensor_io::data_type(*ty).ok_or_else(|| {
                format!("'{name}' has element type {ty}, which neither protocol carries")
            })?,
            shape: shape.to_vec(),
        }),
        other => Err(format!("'{name}' is not a tensor ({other})")),
    }
}

impl Replica {
    /// Loads every model on `device`; returns the replica and the models'
    /// metadata.
    pub fn load(
        runtime: &Runtime,
        s: ReplicaSpec<'_>,
        device: Device,
    ) -> Result<(Replica, Vec<ModelInfo>), RuntimeError> {
        let mut sessions = Vec::with_capacity(s.spec.models.len());
        let mut infos = Vec::with_capacity(s.spec.models.len());
        for (model, bytes) in s.spec.models.iter().zip(s.models) {
            let label = format!("{}/{}/{}", s.servable, s.version, model.file);
            let session = runtime.session(&label, bytes, device, s.threads, s.cpu_fallback)?;
            let err = |reason: String| RuntimeError::Model {
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
            infos.push(ModelInfo {
                spec: model.clone(),
                inputs,
                outputs,
            });
            sessions.push(session);
        }
        Ok((Replica { device, sessions }, infos))
    }
}

/// Runs models of one servable version on one replica.
#[derive(Debug)]
pub struct Runner<'a> {
    /// The models' metadata.
    pub models: &'a [ModelInfo],
    /// The replica.
    pub replica: &'a mut Replica,
    /// Time spent making the runtime's input values from the tensors
    /// (Triton's `compute_input`), over the runs so far.
    pub input_time: std::time::Duration,
    /// Time spent taking the outputs from the runtime's values (Triton's
    /// `compute_output`).
    pub output_time: std::time::Duration,
}

impl<'a> Runner<'a> {
    /// A runner of `replica`'s sessions of `models`, its times at zero.
    pub fn new(models: &'a [ModelInfo], replica: &'a mut Replica) -> Runner<'a> {
        Runner {
            models,
            replica,
            input_time: std::time::Duration::ZERO,
            output_time: std::time::Duration::ZERO,
        }
    }

    /// Runs model `index` with inputs in model order (`None` for an input
    /// left out: the model runs without it); returns the outputs in model
    /// order.
    pub fn run_model(
        &mut self,
        index: usize,
        inputs: &[Option<&Tensor>],
    ) -> Result<Vec<Tensor>, String> {
        let info = &self.models[index];
        let started = std::time::Instant::now();
        let values = info
            .inputs
            .iter()
            .zip(inputs)
            .filter_map(|(spec, t)| Some((spec, (*t)?)))
            .map(|(spec, t)| Ok((spec.name.clone(), tensor_io::input_value(spec.element, t)?)))
            .collect::<Result<Vec<_>, String>>()?;
        let session = &mut self.replica.sessions[index];
        let ran = std::time::Instant::now();
        self.input_time += ran - started;
        let mut outputs = session.run(values).map_err(|e| e.to_string())?;
        let taking = std::time::Instant::now();
        let given: Vec<&Tensor> = inputs.iter().flatten().copied().collect();
        let taken = info
            .outputs
            .iter()
            .map(|spec| match outputs.remove(&spec.name) {
                Some(v) => tensor_io::output_tensor(v, &given),
                None => Err(format!("the model produced no output '{}'", spec.name)),
            })
            .collect();
        drop(outputs);
        self.output_time += taking.elapsed();
        taken
    }
}
