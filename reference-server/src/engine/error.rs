//! The engine's one error type. Each kind carries what a front end needs to
//! write its protocol's text and code (`service/`); none of them is a
//! protocol text, and nothing reads a kind back from a message.

use serving_proto::DataType;
use serving_proto::tensor::ShapeDisplay;
use serving_proto::text::quote;

/// Why a job was refused or failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// The servable version has no such method.
    #[error("no method '{}'", quote(.0))]
    NoMethod(String),
    /// A method input the job does not have.
    #[error("input '{}' is missing", quote(.input))]
    MissingInput {
        /// The first input missing.
        input: String,
        /// Every required input missing.
        missing: Vec<String>,
        /// The inputs the job has (at most 16 named).
        given: Vec<String>,
        /// How many inputs the job has.
        given_count: usize,
        /// How many inputs the method requires.
        required: usize,
    },
    /// A job input the method does not have.
    #[error("unexpected input '{}'", quote(.input))]
    UnexpectedInput {
        /// The input.
        input: String,
    },
    /// An input that does not fit the model.
    #[error("input '{}': {problem}", quote(.input))]
    InvalidInput {
        /// The input.
        input: String,
        /// Its position among the inputs of the model it feeds.
        model_input: usize,
        /// What is wrong.
        problem: InputProblem,
    },
    /// More rows than one run of the model takes.
    #[error("{rows} rows, more than the batch size {max}")]
    TooManyRows {
        /// Rows of the job.
        rows: usize,
        /// The most rows one run takes.
        max: usize,
    },
    /// A priority outside the model's levels.
    #[error("priority {given} is outside the levels 1..={levels} (0: the default)")]
    Priority {
        /// The priority asked for.
        given: u64,
        /// The model's levels.
        levels: u32,
    },
    /// No replica is alive.
    #[error("no replica is alive")]
    Unavailable,
    /// The queue holds its limit of requests.
    #[error("{limit} requests are queued or running, the limit")]
    QueueFull {
        /// The limit.
        limit: usize,
    },
    /// The job's priority level holds its limit of queued jobs (its own
    /// `max_queue_size` in Triton's `priority_queue_policy`).
    #[error("{limit} jobs are queued at priority level {level}, its limit")]
    LevelFull {
        /// The level, 1 the highest.
        level: u32,
        /// Its limit.
        limit: usize,
    },
    /// The job's deadline passed before it ran (or while it ran: its result
    /// is dropped).
    #[error("the deadline passed before the job completed")]
    Deadline,
    /// The job's queue timeout passed before it ran.
    #[error("the queue timeout passed before the job ran")]
    QueueTimeout,
    /// The model failed to run the job (alone, so the job is the cause).
    #[error("the model failed to run: {0}")]
    Runtime(String),
    /// Running the job needed memory beyond its inputs (a batch's joined
    /// rows, a backend's buffers) that the server's budget for requests
    /// had no room for: `wanted` more than the whole budget can never run,
    /// less may once other requests are done.
    #[error("the run needs {wanted} more bytes of memory; {held} of {limit} are held")]
    Memory {
        /// Bytes the run asked for.
        wanted: u64,
        /// Bytes the budget held then.
        held: u64,
        /// The budget.
        limit: u64,
        /// Bytes the job's own inputs hold (charged already): with
        /// `wanted`, past `limit` the job can never run.
        own: u64,
    },
    /// Replicas failed (panicked) twice running the job.
    #[error("replicas failed twice running the job")]
    ReplicasFailed,
    /// The method's model answers a job with any number of responses (a
    /// decoupled model), and the job gives nowhere to send them.
    #[error(
        "the model answers each request with any number of responses, which only a stream carries"
    )]
    NeedsStream,
    /// The job cannot join its sequence (a sequence model's).
    #[error(transparent)]
    Sequence(#[from] super::sequence::SequenceError),
    /// A step of an ensemble failed.
    #[error("step {step} (model '{}'): {error}", quote(.model))]
    Step {
        /// The step, counting from 1.
        step: usize,
        /// Its model.
        model: String,
        /// Why.
        error: Box<EngineError>,
    },
}

/// What is wrong with one input.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InputProblem {
    /// Another data type or shape than the model's.
    #[error(
        "must be {expected_dtype} of shape {} (-1 = any), got {given_dtype} of shape {}",
        ShapeDisplay(.expected_shape),
        ShapeDisplay(.given_shape)
    )]
    Mismatch {
        /// The model's type.
        expected_dtype: DataType,
        /// The shape the job must have (rows first for batched methods).
        expected_shape: Vec<i64>,
        /// The type given.
        given_dtype: DataType,
        /// The shape given.
        given_shape: Vec<i64>,
    },
    /// Inputs with different numbers of rows.
    #[error("has {rows} rows where input '{}' has {other_rows}", quote(.other))]
    Rows {
        /// Rows of this input.
        rows: usize,
        /// The first input.
        other: String,
        /// Its rows.
        other_rows: usize,
    },
    /// A batched input with no rows.
    #[error("has no rows")]
    NoRows,
    /// A string element that is not UTF-8 (ONNX string tensors hold text).
    #[error("element {element} is not UTF-8 text, which the model's string input requires")]
    NotUtf8 {
        /// The element's index.
        element: usize,
    },
    /// A string element holding a NUL byte, which ONNX Runtime's string
    /// tensors cannot carry.
    #[error(
        "element {element} holds a NUL byte at {at}, which ONNX Runtime's string tensors cannot carry"
    )]
    Nul {
        /// The element's index.
        element: usize,
        /// The byte's position in it.
        at: usize,
    },
}
