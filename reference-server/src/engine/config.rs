//! What the engine knows of a servable: its models, its methods (named
//! inputs, a chain of model stages, named outputs) and its deployment
//! (replicas, batching, queue policy). Repository formats (`servable.toml`,
//! and later Triton's `config.pbtxt`) are translated into these types; the
//! engine reads no file and knows no format.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::runtime::device::Device;

/// A servable as the engine runs it.
#[derive(Clone, Debug, PartialEq)]
pub struct ServableSpec {
    /// The models, in the order their bytes are given.
    pub models: Vec<ModelSpec>,
    /// The methods.
    pub methods: Vec<MethodSpec>,
    /// Where and how it runs.
    pub deployment: Deployment,
}

/// One model of a servable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelSpec {
    /// The name stages refer to.
    pub name: String,
    /// Its file, for messages.
    pub file: String,
    /// Whether dim 0 of every input and output is the batch.
    pub batched: bool,
}

/// One method: named inputs, model stages run in order, named outputs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MethodSpec {
    /// Method name.
    pub name: String,
    /// Input names.
    pub inputs: Vec<String>,
    /// Output names: method inputs or stage outputs.
    pub outputs: Vec<String>,
    /// The model stages.
    pub stages: Vec<StageSpec>,
    /// Inputs and outputs whose shape, as clients see it, differs from the
    /// model's: by name, the shape of one row (batched methods) or of the
    /// whole tensor, with as many elements as the model's (`-1` for one
    /// dimension that follows from the others). The tensor is reshaped on
    /// its way in or out.
    pub reshape: BTreeMap<String, Vec<i64>>,
    /// Inputs a job may leave out (the model then runs without them).
    pub optional: BTreeSet<String>,
}

/// One model call inside a method.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StageSpec {
    /// The model, by name.
    pub model: String,
    /// Values fed to the model's inputs, in order.
    pub inputs: Vec<String>,
    /// Names given to the model's outputs, in order.
    pub outputs: Vec<String>,
}

/// Replicas, batching and the queue.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Deployment {
    /// One replica per entry; empty means the server's default devices.
    pub devices: Vec<Device>,
    /// ONNX Runtime intra-op threads per replica; `None` splits the cores.
    pub intra_op_threads: Option<usize>,
    /// How jobs are batched.
    pub batching: Batching,
    /// How jobs wait.
    pub queue: QueuePolicy,
}

/// How rows of queued jobs are batched.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Batching {
    /// Whether rows of different jobs are joined into one run; without, each
    /// job (up to `max_batch_size` rows of its own) runs alone.
    pub join: bool,
    /// The most rows one run takes; `None`: the model's fixed batch, else
    /// [`crate::engine::DYNAMIC_BATCH`] (1 for methods without a batch
    /// dimension).
    pub max_batch_size: Option<usize>,
    /// Batch sizes run as soon as they are reached, without waiting for
    /// the delay.
    pub preferred_batch_sizes: Vec<usize>,
    /// How long the oldest queued job may wait for more rows to join it.
    pub max_delay: Duration,
}

/// How jobs wait in the queue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueuePolicy {
    /// The most requests queued or running; `None`: the server's default.
    pub limit: Option<usize>,
    /// Priority levels, 1 (the highest) to `priority_levels`.
    pub priority_levels: u32,
    /// The level of jobs that ask for none (priority 0).
    pub default_priority: u32,
    /// How long a job may wait in the queue before it is refused unrun.
    pub default_timeout: Option<Duration>,
    /// How a job's own queue timeout counts beside the default.
    pub request_timeouts: RequestTimeouts,
}

impl Default for Batching {
    fn default() -> Batching {
        Batching {
            join: true,
            max_batch_size: None,
            preferred_batch_sizes: Vec::new(),
            max_delay: Duration::ZERO,
        }
    }
}

/// Whether a job's own queue timeout counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RequestTimeouts {
    /// A job's timeout replaces the default.
    #[default]
    Override,
    /// A job's timeout counts only where it is shorter than the default.
    Shorten,
    /// Only the default counts.
    Ignore,
}

impl RequestTimeouts {
    /// The queue timeout of a job that asks for `asked`, with the default
    /// `default`.
    pub fn apply(self, asked: Option<Duration>, default: Option<Duration>) -> Option<Duration> {
        match (self, asked, default) {
            (RequestTimeouts::Override, Some(t), _) => Some(t),
            (RequestTimeouts::Shorten, Some(t), Some(d)) => Some(t.min(d)),
            (RequestTimeouts::Shorten, Some(t), None) => Some(t),
            (_, _, d) => d,
        }
    }
}

impl Default for QueuePolicy {
    fn default() -> QueuePolicy {
        QueuePolicy {
            limit: None,
            priority_levels: 1,
            default_priority: 1,
            default_timeout: None,
            request_timeouts: RequestTimeouts::Override,
        }
    }
}

impl QueuePolicy {
    /// Checks the levels: at least one, the default among them.
    pub fn check(&self) -> Result<(), String> {
        if self.priority_levels == 0 {
            return Err("priority_levels must be at least 1".into());
        }
        if !(1..=self.priority_levels).contains(&self.default_priority) {
            return Err(format!(
                "default_priority_level {} is outside the priority levels 1..={}",
                self.default_priority, self.priority_levels
            ));
        }
        Ok(())
    }
}
