//! The engine: one core that every front end feeds, knowing jobs, rows,
//! deadlines, priorities and typed errors, and no protocol.
//!
//! A *job* is one method call: named input tensors (for a batched method,
//! rows along dimension 0), a deadline, a priority, a queue timeout, and one
//! answer. A protocol's single instance is a job of one row; a request of
//! rows to a batched model is a job of those rows; a model without a batch
//! dimension runs each job whole. Rows of queued jobs to the same method,
//! whatever protocol they came from, are joined into batches, run once and
//! split back. Front ends turn their wire forms into jobs and the engine's
//! answers ([`EngineError`] for failures) into their protocol's texts and
//! codes (`service/`); nothing here knows a protocol.
//!
//! | module | job |
//! |---|---|
//! | [`backend`] | the interface to what runs models (ONNX Runtime, Python) |
//! | [`config`] | what the engine knows of a servable: models, methods, deployment |
//! | [`servable`] | a loaded servable version: models, methods, scheduler |
//! | [`model`] | one loaded model's inputs and outputs |
//! | [`method`] | a method compiled against its models: input checks, stages over rows |
//! | [`scheduler`] | submitting jobs, replica workers, retries, restarts |
//! | `queue` | jobs by priority, and how a batch is formed |
//! | `rows` | joining, padding and splitting tensors along dimension 0 |
//! | [`replica`] | one instance of each model on one device |
//! | [`sequence`] | sequence batching: slots, control inputs, implicit state |
//! | [`stats`] | counters and histograms per servable version |
//! | [`error`] | the engine's error kinds |
//! | [`faults`] | test hooks: failing, blocking and holding replicas |
//! | [`registry`] | servable versions by name and version |

pub mod backend;
pub mod cache;
pub mod config;
pub mod ensemble;
pub mod error;
pub mod faults;
pub mod method;
pub mod model;
mod queue;
pub mod registry;
pub mod replica;
mod rows;
pub mod scheduler;
pub mod sequence;
pub mod servable;
pub mod stats;

pub use backend::{Backend, Backends, LoadError, ModelInstance, RunError};
pub use error::{EngineError, InputProblem};
pub use method::{DYNAMIC_BATCH, InputInfo, MethodInfo, OutputInfo};
pub use model::{ModelInfo, TensorSpec};
pub use scheduler::{
    DEFAULT_INLINE_MAX, JobRequest, JobResult, JobTiming, Partial, PartialSender, RequestInfo,
    Timing,
};
pub use servable::{DEFAULT_QUEUE_LIMIT, LoadOptions, ServableVersion};
