//! Loaded servables: one [`ServableVersion`] per servable and version, with
//! its models' metadata and one replica (a session per model) per device.

pub mod instances;
pub mod registry;
pub mod tensors;

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use ort::session::Session;
use ort::value::{TensorElementType, ValueType};
use serving_proto::{DataType, Tensor};

use crate::repository::config::{MethodConfig, ModelConfig, ServableConfig};
use crate::runtime::device::Device;
use crate::runtime::{Runtime, RuntimeError, tensor_io};

/// One input or output of a model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorSpec {
    /// Name inside the model.
    pub name: String,
    /// ONNX element type.
    pub element: TensorElementType,
    /// The protocol type (ONNX strings are `String`).
    pub dtype: DataType,
    /// Dimensions, -1 where dynamic.
    pub shape: Vec<i64>,
}

impl TensorSpec {
    /// Whether every dimension is fixed.
    pub fn is_static(&self) -> bool {
        self.shape.iter().all(|&d| d >= 0)
    }
}

/// A model of a servable version and its metadata.
#[derive(Clone, Debug)]
pub struct ModelInfo {
    /// The configuration entry.
    pub config: ModelConfig,
    /// Inputs in model order.
    pub inputs: Vec<TensorSpec>,
    /// Outputs in model order.
    pub outputs: Vec<TensorSpec>,
}

impl ModelInfo {
    /// The batch size when the model has a fixed batch dimension.
    pub fn fixed_batch(&self) -> Option<usize> {
        if !self.config.with_batch_dim {
            return None;
        }
        let d = *self.inputs.first()?.shape.first()?;
        usize::try_from(d).ok().filter(|&d| d > 0)
    }
}

/// One replica: a session per model, on one device.
#[derive(Debug)]
pub struct Replica {
    /// Where it runs.
    pub device: Device,
    sessions: Vec<Mutex<Session>>,
}

/// A servable version ready to serve.
#[derive(Debug)]
pub struct ServableVersion {
    /// Servable name.
    pub name: String,
    /// Version number (>= 1).
    pub version: u64,
    /// Its configuration.
    pub config: ServableConfig,
    /// Models, in configuration order.
    pub models: Vec<ModelInfo>,
    replicas: Vec<Replica>,
    next: AtomicUsize,
}

/// How to load a servable version.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// Devices when the configuration names none.
    pub default_devices: Vec<Device>,
    /// Run a replica on the CPU when its device cannot be used.
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

impl ServableVersion {
    /// Loads every model of `config` on every device, checking that the
    /// stages fit the models. `models` holds each model's bytes in
    /// configuration order.
    pub fn load(
        runtime: &Runtime,
        name: &str,
        version: u64,
        config: ServableConfig,
        models: &[Vec<u8>],
        options: &LoadOptions,
    ) -> Result<ServableVersion, RuntimeError> {
        let mut devices = config.devices().map_err(|reason| RuntimeError::Model {
            model: name.to_owned(),
            reason,
        })?;
        if devices.is_empty() {
            devices = options.default_devices.clone();
        }
        if devices.is_empty() {
            devices.push(Device::Cpu);
        }
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let threads = config
            .deployment
            .intra_op_threads
            .unwrap_or_else(|| (cores / devices.len()).max(1));
        let mut replicas = Vec::with_capacity(devices.len());
        let mut infos: Vec<ModelInfo> = Vec::with_capacity(config.model.len());
        for &device in &devices {
            let mut sessions = Vec::with_capacity(config.model.len());
            for (model, bytes) in config.model.iter().zip(models) {
                let label = format!("{name}/{version}/{}", model.file);
                let session =
                    runtime.session(&label, bytes, device, threads, options.cpu_fallback)?;
                if infos.len() < config.model.len() {
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
                        config: model.clone(),
                        inputs,
                        outputs,
                    });
                }
                sessions.push(Mutex::new(session));
            }
            tracing::info!(servable = name, version, %device, threads, "replica loaded");
            replicas.push(Replica { device, sessions });
        }
        check_stages(name, &config, &infos).map_err(|reason| RuntimeError::Model {
            model: format!("{name}/{version}"),
            reason,
        })?;
        Ok(ServableVersion {
            name: name.to_owned(),
            version,
            config,
            models: infos,
            replicas,
            next: AtomicUsize::new(0),
        })
    }

    /// The method called `name`.
    pub fn method(&self, name: &str) -> Option<&MethodConfig> {
        self.config.method.iter().find(|m| m.name == name)
    }

    /// The model index of a stage.
    pub fn model_index(&self, model: &str) -> usize {
        self.models
            .iter()
            .position(|m| m.config.name == model)
            .unwrap_or(0)
    }

    /// The devices of the replicas.
    pub fn devices(&self) -> Vec<Device> {
        self.replicas.iter().map(|r| r.device).collect()
    }

    /// The replica for the next run (round robin).
    fn replica(&self) -> &Replica {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.replicas.len().max(1);
        &self.replicas[i]
    }

    /// Runs model `index` on one replica with inputs in model order; returns
    /// the outputs in model order. Blocking.
    pub fn run_model(&self, index: usize, inputs: &[&Tensor]) -> Result<Vec<Tensor>, String> {
        let info = &self.models[index];
        let replica = self.replica();
        let values = info
            .inputs
            .iter()
            .zip(inputs)
            .map(|(spec, t)| Ok((spec.name.clone(), tensor_io::input_value(spec.element, t)?)))
            .collect::<Result<Vec<_>, String>>()?;
        let mut session = replica.sessions[index]
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let outputs = session.run(values).map_err(|e| e.to_string())?;
        info.outputs
            .iter()
            .map(|spec| match outputs.get(&spec.name) {
                Some(v) => tensor_io::output_tensor(v),
                None => Err(format!("the model produced no output '{}'", spec.name)),
            })
            .collect()
    }
}

/// Stage inputs and outputs must match the model's counts.
fn check_stages(name: &str, config: &ServableConfig, infos: &[ModelInfo]) -> Result<(), String> {
    for method in &config.method {
        for (i, stage) in method.stage.iter().enumerate() {
            let Some(info) = infos.iter().find(|m| m.config.name == stage.model) else {
                continue;
            };
            if stage.inputs.len() != info.inputs.len() || stage.outputs.len() != info.outputs.len()
            {
                return Err(format!(
                    "servable '{name}' method '{}' stage {}: model '{}' has {} inputs and {} outputs, the stage names {} and {}",
                    method.name,
                    i + 1,
                    stage.model,
                    info.inputs.len(),
                    info.outputs.len(),
                    stage.inputs.len(),
                    stage.outputs.len()
                ));
            }
        }
    }
    Ok(())
}
