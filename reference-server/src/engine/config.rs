//! What the engine knows of a servable: its models, its methods (named
//! inputs, a chain of model stages, named outputs) and its deployment
//! (replicas, batching, queue policy). Repository formats (`servable.toml`,
//! and later Triton's `config.pbtxt`) are translated into these types; the
//! engine reads no file and knows no format.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use crate::runtime::device::Device;

/// A servable as the engine runs it.
#[derive(Clone, Debug, Default, PartialEq)]
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
    /// The backend that runs it ([`crate::engine::backend::Backend::name`]).
    pub backend: String,
    /// What its backend needs besides the file's bytes (for a Python
    /// model: where its `model.py` is, its configuration), by name.
    pub options: BTreeMap<String, String>,
}

/// The backend of ONNX models, the default.
pub const ONNX_BACKEND: &str = "onnxruntime";

impl ModelSpec {
    /// An ONNX model.
    pub fn onnx(name: impl Into<String>, file: impl Into<String>, batched: bool) -> ModelSpec {
        ModelSpec {
            name: name.into(),
            file: file.into(),
            batched,
            backend: ONNX_BACKEND.into(),
            options: BTreeMap::new(),
        }
    }
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
    /// Class labels of outputs, by output name: label `i` names element
    /// `i` of a row (Triton's `label_filename`), for classification.
    pub labels: BTreeMap<String, Arc<[String]>>,
    /// Inputs and outputs whose shape, as clients see it, differs from the
    /// model's: by name, the shape of one row (batched methods) or of the
    /// whole tensor, with as many elements as the model's (`-1` for one
    /// dimension that follows from the others). The tensor is reshaped on
    /// its way in or out.
    pub reshape: BTreeMap<String, Vec<i64>>,
    /// Inputs a job may leave out (the model then runs without them).
    pub optional: BTreeSet<String>,
    /// Outputs that are another value under a name of their own: by
    /// output name, the input or stage output it is (a MindSpore method
    /// returning an input, or one value under two names).
    pub output_sources: BTreeMap<String, String>,
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
    /// Whether answers are kept in the server's response cache (when it
    /// has one) and given again for the same inputs.
    pub response_cache: bool,
    /// Sequence batching: jobs belong to sequences that keep a slot and
    /// state (see [`crate::engine::sequence`]).
    pub sequence: Option<super::sequence::SequenceSpec>,
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
    /// What becomes of a job whose queue timeout passes.
    pub timeout_action: TimeoutAction,
    /// Levels with a policy of their own (Triton's
    /// `priority_queue_policy`), by level (1 the highest).
    pub levels: BTreeMap<u32, LevelPolicy>,
}

/// What becomes of a job whose queue timeout passes before it runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TimeoutAction {
    /// It is refused, unrun.
    #[default]
    Reject,
    /// It stays queued, behind every job of its level and the levels above
    /// whose timeout has not passed (Triton's `DELAY`).
    Delay,
}

/// The queue policy of one priority level, in place of the defaults.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LevelPolicy {
    /// How long a job of this level may wait in the queue.
    pub default_timeout: Option<Duration>,
    /// How a job's own queue timeout counts beside it.
    pub request_timeouts: RequestTimeouts,
    /// What becomes of a job whose queue timeout passes.
    pub timeout_action: TimeoutAction,
    /// The most jobs queued (not running) at this level; `None`: no bound
    /// of its own.
    pub max_queued: Option<usize>,
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
            timeout_action: TimeoutAction::Reject,
            levels: BTreeMap::new(),
        }
    }
}

impl QueuePolicy {
    /// The policy of `level` (1 the highest): its own, or the defaults.
    pub fn level(&self, level: u32) -> LevelPolicy {
        self.levels.get(&level).cloned().unwrap_or(LevelPolicy {
            default_timeout: self.default_timeout,
            request_timeouts: self.request_timeouts,
            timeout_action: self.timeout_action,
            max_queued: None,
        })
    }

    /// Checks the levels: at least one, at most [`MAX_PRIORITY_LEVELS`],
    /// the default among them.
    pub fn check(&self) -> Result<(), String> {
        if self.priority_levels == 0 {
            return Err("priority_levels must be at least 1".into());
        }
        if self.priority_levels > MAX_PRIORITY_LEVELS {
            return Err(over(
                "priority_levels",
                self.priority_levels,
                MAX_PRIORITY_LEVELS,
            ));
        }
        if !(1..=self.priority_levels).contains(&self.default_priority) {
            return Err(format!(
                "default_priority_level {} is outside the priority levels 1..={}",
                self.default_priority, self.priority_levels
            ));
        }
        if let Some(level) = self
            .levels
            .keys()
            .find(|&&l| !(1..=self.priority_levels).contains(&l))
        {
            return Err(format!(
                "priority_queue_policy names level {level}, outside the priority levels 1..={}",
                self.priority_levels
            ));
        }
        Ok(())
    }
}

// Bounds on what a repository configuration sets. A model repository is
// untrusted input: each number it sets is checked against one of these
// before anything is allocated or started for it, so that a hostile or
// mistaken configuration fails its own load (naming the field, the value
// and the bound) instead of exhausting the server. They are far above what
// real deployments use (docs/server.md, "Bounds on repository
// configurations").

/// The most request priority levels (the queue holds one list per level).
pub const MAX_PRIORITY_LEVELS: u32 = 1024;
/// The most replicas of one servable version on one device (Triton's
/// `instance_group[i].count`; a device named repeatedly in
/// `servable.toml`'s `devices`).
pub const MAX_REPLICAS_PER_DEVICE: usize = 64;
/// The most replicas of one servable version, over all devices (each is an
/// ONNX Runtime session with its own copy of the models).
pub const MAX_REPLICAS: usize = 256;
/// The most ONNX Runtime intra-op threads of one replica.
pub const MAX_INTRA_OP_THREADS: usize = 256;
/// The most intra-op threads of one servable version: replicas times
/// threads per replica, where the threads are configured.
pub const MAX_THREADS: usize = 1024;
/// The most rows of one run (`max_batch_size`, each preferred batch size).
pub const MAX_BATCH_SIZE: usize = 1 << 20;
/// The most requests queued or running per servable version (`queue_limit`,
/// Triton's `max_queue_size`).
pub const MAX_QUEUE_LIMIT: usize = 1 << 20;
/// The longest batching delay or default queue timeout, in microseconds
/// (one hour).
pub const MAX_DELAY_US: u64 = 3_600_000_000;
/// The most elements a configured tensor shape holds: every fixed
/// dimension, and the product of the fixed dimensions (computed without
/// wrapping), is at most this.
pub const MAX_ELEMENTS: i64 = 1 << 40;
/// The highest GPU id a configuration may name.
pub const MAX_GPU_ID: i32 = 1023;

/// The error of a configured number over its bound: `{field} {value} is
/// over the bound {bound}`.
pub fn over(field: &str, value: impl std::fmt::Display, bound: impl std::fmt::Display) -> String {
    format!("{field} {value} is over the bound {bound}")
}

/// Checks a number a configuration sets against its bound.
pub fn at_most<T: PartialOrd + std::fmt::Display>(
    field: &str,
    value: T,
    bound: T,
) -> Result<(), String> {
    if value > bound {
        Err(over(field, value, bound))
    } else {
        Ok(())
    }
}

/// Checks a configured shape: each dimension is -1 (any) or between 0 and
/// [`MAX_ELEMENTS`], and the product of the fixed ones, computed without
/// wrapping, is at most [`MAX_ELEMENTS`].
pub fn check_dims(field: &str, dims: &[i64]) -> Result<(), String> {
    let mut product: i64 = 1;
    for &d in dims {
        if d < -1 {
            return Err(format!(
                "{field} {dims:?} holds {d}; a dimension is -1 (any) or at least 0"
            ));
        }
        if d > MAX_ELEMENTS {
            return Err(format!(
                "{field} {dims:?} holds {d}, over the bound {MAX_ELEMENTS}"
            ));
        }
        if d > 0 {
            product = product
                .checked_mul(d)
                .filter(|&p| p <= MAX_ELEMENTS)
                .ok_or_else(|| {
                    format!(
                        "{field} {dims:?}: the product of the dimensions is over the bound {MAX_ELEMENTS}"
                    )
                })?;
        }
    }
    Ok(())
}

impl Deployment {
    /// Checks the replicas (per device and in all) and the threads against
    /// their bounds; `devices_field` and `threads_field` name the
    /// configuration's fields in the messages.
    pub fn check_bounds(&self, devices_field: &str, threads_field: &str) -> Result<(), String> {
        let mut per: std::collections::HashMap<Device, usize> = Default::default();
        for d in &self.devices {
            *per.entry(*d).or_default() += 1;
        }
        if let Some((device, n)) = self
            .devices
            .iter()
            .map(|d| (d, per[d]))
            .find(|&(_, n)| n > MAX_REPLICAS_PER_DEVICE)
        {
            return Err(format!(
                "{devices_field}: {n} replicas on {device} is over the bound {MAX_REPLICAS_PER_DEVICE} per device"
            ));
        }
        let replicas = self.devices.len();
        if replicas > MAX_REPLICAS {
            return Err(format!(
                "{devices_field}: {replicas} replicas is over the bound {MAX_REPLICAS}"
            ));
        }
        if let Some(threads) = self.intra_op_threads {
            at_most(threads_field, threads, MAX_INTRA_OP_THREADS)?;
            let total = threads.saturating_mul(replicas.max(1));
            if total > MAX_THREADS {
                return Err(format!(
                    "{threads_field} {threads} times {} replicas is {total} threads, over the bound {MAX_THREADS}",
                    replicas.max(1)
                ));
            }
        }
        Ok(())
    }
}
