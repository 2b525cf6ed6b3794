//! A replica: one instance of each model of a servable version, on one
//! device, owned by the worker thread that runs it.

use std::cell::RefCell;
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
        let (before, rest) = self.replica.instances.split_at_mut(index);
        let (running, after) = rest
            .split_first_mut()
            .ok_or_else(|| RunError::Failed(format!("the replica has no model {index}")))?;
        let siblings = Siblings {
            models: self.models,
            running: index,
            instances: RefCell::new((before, after)),
            deadline: self.deadline,
        };
        let batch = Batch {
            inputs,
            jobs: &self.jobs,
            requests: &self.infos,
            responses: Responses {
                senders: &self.partials,
            },
            deadline: self.deadline,
            siblings: Some(&siblings),
        };
        let out = running.run(&batch, &mut times);
        self.input_time += times.input;
        self.output_time += times.output;
        out
    }
}

/// Some of a replica's model instances.
type Instances<'a> = &'a mut [Box<dyn ModelInstance>];

/// The models of a replica besides the one running, which that one may
/// call while it runs (a MindSpore Python stage's `Model.call`): on the
/// replica's own thread, with the run's deadline.
pub struct Siblings<'a> {
    models: &'a [ModelInfo],
    running: usize,
    /// The instances before the running one, and after it.
    instances: RefCell<(Instances<'a>, Instances<'a>)>,
    deadline: Option<Instant>,
}

impl std::fmt::Debug for Siblings<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Siblings")
            .field("running", &self.running)
            .finish_non_exhaustive()
    }
}

impl Siblings<'_> {
    /// Runs the model named `model` (its [`ModelSpec::name`]) on `inputs`,
    /// in model order, of `rows` rows where it has a batch dimension;
    /// its outputs in model order. `Err(Failed)` with the reason when the
    /// model is not there or the inputs do not fit it.
    ///
    /// [`ModelSpec::name`]: super::config::ModelSpec::name
    pub fn call(&self, model: &str, inputs: &[Tensor]) -> Result<Vec<Tensor>, RunError> {
        let failed = |why: String| RunError::Failed(why);
        let index = self
            .models
            .iter()
            .position(|m| m.spec.name == model)
            .ok_or_else(|| failed("the model is not declared".into()))?;
        if index == self.running {
            return Err(failed("a model cannot call itself".into()));
        }
        let info = &self.models[index];
        if inputs.len() != info.inputs.len() {
            return Err(failed(format!(
                "The inputs count {} of instance 0 is not equal to the inputs count {} of the model",
                inputs.len(),
                info.inputs.len()
            )));
        }
        for (k, (t, spec)) in inputs.iter().zip(&info.inputs).enumerate() {
            if !spec.untyped && t.dtype() != spec.dtype {
                return Err(failed(format!(
                    "Given model input {k} data type {} not match the data type {} defined in model",
                    t.dtype(),
                    spec.dtype
                )));
            }
            if let Some(problem) = shape_problem(t, &spec.shape, info.spec.batched) {
                return Err(failed(format!("Given model input {k} {problem}")));
            }
        }
        let rows = match info.spec.batched {
            true => inputs
                .first()
                .and_then(|t| t.shape().first())
                .map_or(1, |&r| r.max(0) as usize),
            false => 1,
        };
        let jobs = [rows];
        let borrowed: Vec<Option<&Tensor>> = inputs.iter().map(Some).collect();
        let batch = Batch {
            inputs: &borrowed,
            jobs: &jobs,
            requests: &[None],
            responses: Responses { senders: &[None] },
            deadline: self.deadline,
            siblings: None,
        };
        let mut instances = self.instances.borrow_mut();
        let instance = match index < self.running {
            true => &mut instances.0[index],
            false => &mut instances.1[index - self.running - 1],
        };
        instance.run(&batch, &mut IoTimes::default())
    }
}

/// Why tensor `t` does not fit a model input of `declared` shape (-1: any
/// size), its first dimension the batch's where `batched`: as MindSpore
/// says it, in bytes of one row, where the model's row has a fixed size.
fn shape_problem(t: &Tensor, declared: &[i64], batched: bool) -> Option<String> {
    let shape = t.shape();
    let skip = usize::from(batched);
    let fits = shape.len() == declared.len()
        && shape
            .iter()
            .zip(declared)
            .skip(skip)
            .all(|(&g, &d)| d < 0 || g == d);
    if fits {
        return None;
    }
    let row = |dims: &[i64]| -> Option<i64> {
        let item = t.dtype().item_size()? as i64;
        dims.iter()
            .skip(skip)
            .try_fold(item, |n, &d| (d >= 0).then(|| n.saturating_mul(d)))
    };
    Some(match (row(shape), row(declared)) {
        (Some(given), Some(expected)) => {
            format!("size {given} not match the size {expected} defined in model")
        }
        _ => format!(
            "shape {} not match the shape {} defined in model",
            serving_proto::tensor::ShapeDisplay(shape),
            serving_proto::tensor::ShapeDisplay(declared)
        ),
    })
}
