//! A replica: one instance of each model of a servable version, on one
//! device, owned by the worker thread that runs it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serving_proto::Tensor;
use serving_proto::gather::Budget;

use super::backend::Responses;
use super::backend::{Backends, Batch, IoTimes, LoadError, ModelInstance, ModelLoad, RunError};
use super::config::ServableSpec;
use super::model::ModelInfo;
use super::scheduler::{PartialSender, RequestInfo};
use crate::runtime::device::Device;

/// Instances of a servable version's models on one device.
#[derive(Debug)]
pub struct Replica {
    /// Where it runs.
    pub device: Device,
    instances: Vec<Box<dyn ModelInstance>>,
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
    pub models: &'a [Arc<Vec<u8>>],
    /// Which replica of the version this is, counting from 0.
    pub index: usize,
    /// Threads a backend with a thread pool may use.
    pub threads: usize,
    /// Run on the CPU when the device cannot be used.
    pub cpu_fallback: bool,
    /// The server's memory for requests, which instances charge what they
    /// grow for a run to.
    pub memory: &'a Arc<Budget>,
}

impl Replica {
    /// Loads every model on `device`, each with its backend; returns the
    /// replica and the models' metadata.
    pub fn load(
        backends: &Backends,
        s: ReplicaSpec<'_>,
        device: Device,
    ) -> Result<(Replica, Vec<ModelInfo>), LoadError> {
        let mut instances = Vec::with_capacity(s.spec.models.len());
        let mut infos = Vec::with_capacity(s.spec.models.len());
        for (model, bytes) in s.spec.models.iter().zip(s.models) {
            let load = ModelLoad {
                servable: s.servable,
                version: s.version,
                model,
                bytes,
                replica: s.index,
                threads: s.threads,
                cpu_fallback: s.cpu_fallback,
                memory: s.memory,
            };
            let (instance, io) = backends.for_model(&load)?.load(&load, device)?;
            infos.push(ModelInfo {
                spec: model.clone(),
                inputs: io.inputs,
                outputs: io.outputs,
                decoupled: io.decoupled,
            });
            instances.push(instance);
        }
        Ok((Replica { device, instances }, infos))
    }
}

/// Runs models of one servable version on one replica.
#[derive(Debug)]
pub struct Runner<'a> {
    /// The models' metadata.
    pub models: &'a [ModelInfo],
    /// The replica.
    pub replica: &'a mut Replica,
    /// The rows of each job of the batch being run (see [`Batch::jobs`]).
    pub jobs: Vec<usize>,
    /// The batch's earliest deadline.
    pub deadline: Option<Instant>,
    /// What the client said about each job's request (see
    /// [`Batch::requests`]).
    pub infos: Vec<Option<Arc<RequestInfo>>>,
    /// Where each job's responses go, for a model that answers several
    /// times (see [`Batch::responses`]).
    pub partials: Vec<Option<PartialSender>>,
    /// Time spent making the backends' inputs from the tensors (Triton's
    /// `compute_input`), over the runs so far.
    pub input_time: Duration,
    /// Time spent taking the outputs from the backends' values (Triton's
    /// `compute_output`).
    pub output_time: Duration,
}

impl<'a> Runner<'a> {
    /// A runner of `replica`'s instances of `models`, for one job of one
    /// row with no deadline, its times at zero.
    pub fn new(models: &'a [ModelInfo], replica: &'a mut Replica) -> Runner<'a> {
        Runner {
            models,
            replica,
            jobs: vec![1],
            deadline: None,
            infos: vec![None],
            partials: vec![None],
            input_time: Duration::ZERO,
            output_time: Duration::ZERO,
        }
    }

    /// Runs model `index` with inputs in model order (`None` for an input
    /// left out: the model runs without it); returns the outputs in model
    /// order.
    pub fn run_model(
        &mut self,
        index: usize,
        inputs: &[Option<&Tensor>],
    ) -> Result<Vec<Tensor>, RunError> {
        let mut times = IoTimes::default();
        let batch = Batch {
            inputs,
            jobs: &self.jobs,
            requests: &self.infos,
            responses: Responses {
                senders: &self.partials,
            },
            deadline: self.deadline,
        };
        let out = self.replica.instances[index].run(&batch, &mut times);
        self.input_time += times.input;
        self.output_time += times.output;
        out
    }
}
