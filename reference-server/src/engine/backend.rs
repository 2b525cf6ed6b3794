//! The one interface between the engine and what runs models.
//!
//! A [`Backend`] loads one model of a servable version on a device as a
//! [`ModelInstance`], and says what its inputs and outputs are; an instance
//! runs batches of tensors. ONNX Runtime (`crate::backends::onnxruntime`)
//! and Python (`crate::backends::python`) are the two; the scheduler,
//! batching, priorities, statistics, restarts and both protocols are the
//! same for every backend, and nothing here names one.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serving_proto::Tensor;
use serving_proto::gather::{Budget, Exhausted};

use super::config::ModelSpec;
use super::model::TensorSpec;
pub use super::replica::Siblings;
use super::scheduler::{Partial, PartialSender, RequestInfo};
use crate::runtime::device::Device;

/// What runs models: loads them, one instance per replica.
pub trait Backend: Send + Sync + std::fmt::Debug + 'static {
    /// The name models choose it by (a model's [`ModelSpec::backend`]).
    fn name(&self) -> &'static str;

    /// Loads `load.model` on `device`: an instance to run it, and its
    /// inputs and outputs in model order. Blocking.
    fn load(
        &self,
        load: &ModelLoad<'_>,
        device: Device,
    ) -> Result<(Box<dyn ModelInstance>, ModelIo), LoadError>;
}

/// A model loaded on one device, owned by the worker thread of its
/// replica (one batch at a time).
pub trait ModelInstance: Send + std::fmt::Debug {
    /// Runs one batch; returns the outputs in model order, rows in the
    /// order of the batch's jobs. Blocking.
    fn run(&mut self, batch: &Batch<'_>, times: &mut IoTimes) -> Result<Vec<Tensor>, RunError>;
}

/// What loading one model needs.
#[derive(Clone, Copy, Debug)]
pub struct ModelLoad<'a> {
    /// The servable (for messages and names).
    pub servable: &'a str,
    /// Its version.
    pub version: u64,
    /// The model.
    pub model: &'a ModelSpec,
    /// The model file's bytes.
    pub bytes: &'a Arc<Vec<u8>>,
    /// Which replica of the version this is, counting from 0.
    pub replica: usize,
    /// Threads a backend with a thread pool may use.
    pub threads: usize,
    /// Run on the CPU when the device cannot be used.
    pub cpu_fallback: bool,
    /// The server's memory for requests: memory an instance allocates for
    /// a run beyond its inputs (buffers grown to fit a batch) is charged to
    /// it first, and a run that finds no room fails with
    /// [`RunError::Memory`].
    pub memory: &'a Arc<Budget>,
}

impl ModelLoad<'_> {
    /// `servable/version/file`, how messages name the model.
    pub fn label(&self) -> String {
        format!("{}/{}/{}", self.servable, self.version, self.model.file)
    }
}

/// A model's inputs and outputs, in model order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ModelIo {
    /// Inputs.
    pub inputs: Vec<TensorSpec>,
    /// Outputs.
    pub outputs: Vec<TensorSpec>,
    /// Whether it answers each job with any number of responses, sent
    /// through [`Batch::responses`] as they come (Triton's decoupled
    /// models); its runs then return no outputs.
    pub decoupled: bool,
}

/// Where the jobs of a batch send their responses, for a model that
/// answers several times.
#[derive(Clone, Copy, Debug)]
pub struct Responses<'a> {
    pub(crate) senders: &'a [Option<PartialSender>],
}

impl Responses<'_> {
    /// Hands job `job` (its index in the batch) a response, waiting while
    /// its client has not read the ones before; false when nobody waits
    /// for it any more (the client went away) or it takes none. Blocking:
    /// called from the replica's thread.
    pub fn send(&self, job: usize, partial: Partial) -> bool {
        match self.senders.get(job) {
            Some(Some(tx)) => tx.blocking_send(partial).is_ok(),
            _ => false,
        }
    }
}

/// One batch for an instance.
#[derive(Clone, Copy, Debug)]
pub struct Batch<'a> {
    /// The inputs in model order, each the jobs' rows joined; `None` for
    /// an input left out (the model runs without it).
    pub inputs: &'a [Option<&'a Tensor>],
    /// The rows of each job, in order (one job of one row for a model
    /// without a batch dimension): backends that answer requests apart
    /// (Python's `execute(requests)`) split the batch by them.
    pub jobs: &'a [usize],
    /// What the client said about each job's request, in the order of
    /// `jobs` (`None` where it said nothing).
    pub requests: &'a [Option<Arc<RequestInfo>>],
    /// Where a model that answers a job several times (decoupled) sends
    /// its responses.
    pub responses: Responses<'a>,
    /// The earliest deadline of the batch's jobs: a backend that can hang
    /// gives up at it.
    pub deadline: Option<Instant>,
    /// The replica's other models, which the run may call (a MindSpore
    /// Python stage's `Model.call`); `None` in a run that is such a call.
    pub siblings: Option<&'a Siblings<'a>>,
}

/// Time a run spent making the backend's inputs from the tensors and the
/// tensors from its outputs (Triton's `compute_input` and
/// `compute_output`); the rest of the run is the model's.
#[derive(Clone, Copy, Debug, Default)]
pub struct IoTimes {
    /// Making the inputs.
    pub input: Duration,
    /// Taking the outputs.
    pub output: Duration,
}

/// Why a run failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// The run failed; the instance is fine (a bad value, the model's own
    /// error). The jobs get the text.
    #[error("{0}")]
    Failed(String),
    /// The instance is gone (its process died or hung and was stopped):
    /// the replica is restarted, as after a panic.
    #[error("{0}")]
    Lost(String),
    /// The run needed memory the server's budget had no room for; the
    /// instance is fine.
    #[error("the run needs memory the server has no room for: {0}")]
    Memory(Exhausted),
}

impl From<String> for RunError {
    fn from(text: String) -> RunError {
        RunError::Failed(text)
    }
}

/// Why a model or servable version could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// The servable's configuration cannot be served.
    #[error("cannot load {servable}: {reason}")]
    Servable {
        /// `servable/version`.
        servable: String,
        /// Why.
        reason: String,
    },
    /// A model asks for a backend this server does not have.
    #[error(
        "model {model} needs backend \"{backend}\", which this server does not run (it runs: {known})"
    )]
    NoBackend {
        /// The model.
        model: String,
        /// The backend asked for.
        backend: String,
        /// Those it has.
        known: String,
    },
    /// A model could not be loaded.
    #[error("cannot load model {model}: {reason}")]
    Model {
        /// `servable/version/file`.
        model: String,
        /// Why.
        reason: String,
    },
    /// The backend could not be used at all (its library, a device).
    #[error(transparent)]
    Backend(Box<dyn std::error::Error + Send + Sync>),
}

/// The backends of a server, by name.
#[derive(Clone, Debug, Default)]
pub struct Backends {
    by_name: BTreeMap<&'static str, Arc<dyn Backend>>,
}

impl Backends {
    /// No backends.
    pub fn new() -> Backends {
        Backends::default()
    }

    /// These backends and `backend` (replacing one of its name).
    pub fn with(mut self, backend: Arc<dyn Backend>) -> Backends {
        self.by_name.insert(backend.name(), backend);
        self
    }

    /// The backend model `load.model` asks for.
    pub fn for_model(&self, load: &ModelLoad<'_>) -> Result<&Arc<dyn Backend>, LoadError> {
        self.by_name
            .get(load.model.backend.as_str())
            .ok_or_else(|| LoadError::NoBackend {
                model: load.label(),
                backend: load.model.backend.clone(),
                known: self.by_name.keys().copied().collect::<Vec<_>>().join(", "),
            })
    }
}
