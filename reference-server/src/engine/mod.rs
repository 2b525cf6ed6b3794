//! Loaded servables: one [`ServableVersion`] per servable and version, with
//! its models' metadata and a scheduler feeding one replica per device.

pub mod instances;
pub mod registry;
pub mod replica;
pub mod scheduler;
pub mod tensors;

use std::sync::Arc;
use std::time::Duration;

use ort::value::TensorElementType;
use serving_proto::DataType;

use crate::repository::config::{MethodConfig, ModelConfig, ServableConfig};
use crate::runtime::device::Device;
use crate::runtime::{Runtime, RuntimeError};
use replica::{Replica, ReplicaSpec};
use scheduler::{BatchPolicy, Scheduler, StartSpec};

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

/// A servable version ready to serve: its models' metadata and the
/// scheduler that runs work on its replicas.
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
    devices: Vec<Device>,
    scheduler: Scheduler,
}

/// How to load a servable version.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// Devices when the configuration names none.
    pub default_devices: Vec<Device>,
    /// Run a replica on the CPU when its device cannot be used.
    pub cpu_fallback: bool,
    /// The most requests queued or running per servable version.
    pub queue_limit: usize,
    /// Whether tests may make replicas fail on purpose.
    pub fault_injection: bool,
}

impl Default for LoadOptions {
    fn default() -> LoadOptions {
        LoadOptions {
            default_devices: vec![Device::Cpu],
            cpu_fallback: false,
            queue_limit: DEFAULT_QUEUE_LIMIT,
            fault_injection: false,
        }
    }
}

/// MindSpore's default limit of enqueued requests.
pub const DEFAULT_QUEUE_LIMIT: usize = 10_000;

/// The largest batch formed for a model whose batch dimension is dynamic
/// (and the default `max_batch_size` of such a servable).
pub const DYNAMIC_BATCH: usize = 64;

impl ServableVersion {
    /// Loads every model of `config` on every device, checks that the stages
    /// fit the models, and starts one worker per replica. `models` holds each
    /// model's bytes in configuration order.
    pub fn load(
        runtime: &Arc<Runtime>,
        name: &str,
        version: u64,
        config: ServableConfig,
        models: Vec<Vec<u8>>,
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
        let model_bytes: Vec<Arc<Vec<u8>>> = models.into_iter().map(Arc::new).collect();
        let spec = ReplicaSpec {
            servable: name,
            version,
            config: &config,
            models: &model_bytes,
            threads,
            cpu_fallback: options.cpu_fallback,
        };
        let mut replicas = Vec::with_capacity(devices.len());
        let mut infos = Vec::new();
        for &device in &devices {
            let (replica, models) = Replica::load(runtime, spec, device)?;
            tracing::info!(servable = name, version, %device, threads, "replica loaded");
            infos = models;
            replicas.push(replica);
        }
        check_stages(name, &config, &infos).map_err(|reason| RuntimeError::Model {
            model: format!("{name}/{version}"),
            reason,
        })?;
        let policy = batch_policy(&config, &infos);
        let scheduler = Scheduler::start(StartSpec {
            runtime: runtime.clone(),
            name: name.to_owned(),
            version,
            config: config.clone(),
            model_bytes,
            models: infos.clone(),
            replicas,
            threads,
            cpu_fallback: options.cpu_fallback,
            policy,
            queue_limit: config.deployment.queue_limit.unwrap_or(options.queue_limit),
            fault_injection: options.fault_injection,
        });
        Ok(ServableVersion {
            name: name.to_owned(),
            version,
            config,
            models: infos,
            devices,
            scheduler,
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
    pub fn devices(&self) -> &[Device] {
        &self.devices
    }

    /// The scheduler (queue, replicas, counters, fault hooks).
    pub fn scheduler(&self) -> &Scheduler {
        &self.scheduler
    }
}

/// `max_batch_size`: the configuration's, else the fixed batch of the first
/// batched model, else 64 for a dynamic batch, else 1 (instances of models
/// without a batch dimension run one per run, spread over the replicas).
fn batch_policy(config: &ServableConfig, models: &[ModelInfo]) -> BatchPolicy {
    let batched = models.iter().find(|m| m.config.with_batch_dim);
    let default = match batched {
        Some(m) => m.fixed_batch().unwrap_or(DYNAMIC_BATCH),
        None => 1,
    };
    BatchPolicy {
        max_batch_size: config.deployment.max_batch_size.unwrap_or(default).max(1),
        batch_timeout: Duration::from_micros(config.deployment.batch_timeout_us.unwrap_or(0)),
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
