//! `Predict`: look up the servable, version and method, turn each instance
//! into a job of one row (or a whole job, for a method without a batch
//! dimension), and answer with MindSpore's in-band errors and texts (spec
//! §2.4, §2.5, §2.7).
//!
//! Instances are checked as MindSpore checks them, by data type and byte
//! size, never by shape; a mismatch fails that instance alone. Instance
//! inputs the method does not declare are ignored, as MindSpore does.

use std::time::Instant;

use serving_proto::NamedTensors;
use serving_proto::mindspore::{InstanceResult, Outcome, ServableError, StatusCode};
use serving_proto::text::quote;

use super::{Class, State};
use crate::engine::registry::Lookup;
use crate::engine::{EngineError, InputProblem, JobRequest, MethodInfo};

/// A MindSpore answer: the outcome the reply carries, and its class (the
/// HTTP status of the REST routes, the metrics' code).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Answer {
    /// What the reply says.
    pub outcome: Outcome,
    /// Its class: that of the whole-request error, else `Ok`.
    pub class: Class,
}

impl Answer {
    /// A whole-request failure.
    pub(crate) fn failed(error: ServableError, class: Class) -> Answer {
        Answer {
            outcome: Outcome::Failed(error),
            class,
        }
    }
}

/// Where a request goes, for the texts.
struct Target<'a> {
    servable: &'a str,
    method: &'a str,
    version: u64,
}

/// The text `Deadline Exceeded: ...` with code 1.
fn deadline() -> ServableError {
    ServableError::new(
        StatusCode::Failed,
        "Deadline Exceeded: the request's deadline passed before it ran",
    )
}

/// MindSpore's text, code and class for an engine error.
fn error(e: &EngineError, t: &Target<'_>) -> (ServableError, Class) {
    let invalid = |m: String| {
        (
            ServableError::new(StatusCode::InvalidInputs, m),
            Class::InvalidArgument,
        )
    };
    match e {
        EngineError::NoMethod(_) => (
            ServableError::method_not_available(t.servable, t.method),
            Class::NotFound,
        ),
        EngineError::MissingInput { input, .. } => (
            ServableError::missing_input(input, t.servable, t.method),
            Class::InvalidArgument,
        ),
        EngineError::InvalidInput {
            model_input,
            problem:
                InputProblem::Mismatch {
                    expected_dtype,
                    given_dtype,
                    ..
                },
            ..
        } if expected_dtype != given_dtype => {
            invalid(dtype_text(*model_input, *given_dtype, *expected_dtype))
        }
        EngineError::InvalidInput {
            model_input,
            problem,
            ..
        } => invalid(format!("Given model input {model_input} {problem}")),
        EngineError::UnexpectedInput { .. }
        | EngineError::TooManyRows { .. }
        | EngineError::Priority { .. }
        | EngineError::Sequence(_) => invalid(format!(
            "{e}, servable {}, method {}",
            quote(t.servable),
            quote(t.method)
        )),
        EngineError::Unavailable => (
            ServableError::servable_not_available(t.servable, t.method, t.version)
                .with_code(StatusCode::ServableUnavailable),
            Class::Unavailable,
        ),
        EngineError::QueueFull { limit } => (ServableError::queue_full(*limit), Class::Unavailable),
        EngineError::LevelFull { limit, .. } => {
            (ServableError::queue_full(*limit), Class::Unavailable)
        }
        EngineError::Deadline | EngineError::QueueTimeout => (deadline(), Class::DeadlineExceeded),
        EngineError::Step {
            step,
            model,
            error: inner,
        } => {
            let (e, class) = error(inner, t);
            let text = format!(
                "in ensemble '{}', step {step} (model '{}'): {}",
                quote(t.servable),
                quote(model),
                e.message
            );
            (
                ServableError {
                    code: e.code,
                    message: text,
                },
                class,
            )
        }
        EngineError::NeedsStream => (
            ServableError::new(
                StatusCode::InvalidInputs,
                format!(
                    "Request servable({}) method({}) , the model answers each instance with any number of responses (a decoupled model), which Predict cannot carry: use the Open Inference Protocol's ModelStreamInfer",
                    quote(t.servable),
                    quote(t.method)
                ),
            ),
            Class::Unimplemented,
        ),
        EngineError::Runtime(detail) => (
            ServableError::new(
                StatusCode::SystemError,
                format!("Serving Error: runtime error occurred: {detail}"),
            ),
            Class::Internal,
        ),
        EngineError::Memory {
            wanted,
            held,
            limit,
            own,
        } => {
            let (text, class) = super::memory_refusal(
                &format!("servable {} method {}", quote(t.servable), quote(t.method)),
                *wanted,
                *held,
                *limit,
                *own,
            );
            (
                ServableError::new(StatusCode::SystemError, format!("Serving Error: {text}")),
                class,
            )
        }
        EngineError::ReplicasFailed => (
            ServableError::new(
                StatusCode::SystemError,
                format!(
                    "Serving Error: runtime error occurred: replicas of servable {} failed twice running method {}",
                    quote(t.servable),
                    quote(t.method)
                ),
            ),
            Class::Internal,
        ),
    }
}

fn dtype_text(
    i: usize,
    given: serving_proto::DataType,
    expected: serving_proto::DataType,
) -> String {
    format!(
        "Given model input {i} data type {} not match the data type {} defined in model",
        given.mindspore_internal_name(),
        expected.mindspore_internal_name()
    )
}

/// One instance as the job the method takes: checked by type and byte
/// size (MindSpore's rule) and shaped as the model wants it, with a row
/// dimension for a batched method.
fn job_of(info: &MethodInfo, mut instance: NamedTensors) -> Result<NamedTensors, ServableError> {
    let invalid = |m: String| ServableError::new(StatusCode::InvalidInputs, m);
    instance.retain(|k, _| info.inputs.iter().any(|i| &i.name == k));
    let mut order: Vec<_> = info.inputs.iter().collect();
    order.sort_by_key(|i| i.model_input);
    for spec in order {
        let i = spec.model_input;
        let Some(t) = instance.remove(&spec.name) else {
            continue;
        };
        if !spec.accepts(t.dtype()) {
            return Err(invalid(dtype_text(i, t.dtype(), spec.dtype)));
        }
        // An input that feeds a Python function first takes what comes.
        let fixed = !spec.untyped && spec.unit.iter().all(|&d| d >= 0);
        if fixed && !t.dtype().is_variable() {
            let expected =
                serving_proto::tensor::byte_size(t.dtype(), &spec.unit).unwrap_or(usize::MAX);
            if t.payload_len() != expected {
                return Err(invalid(format!(
                    "Given model input {i} size {} not match the size {expected} defined in model",
                    t.payload_len()
                )));
            }
        }
        let mut shape: Vec<i64> = if fixed {
            spec.unit.clone()
        } else {
            t.shape().to_vec()
        };
        if info.batched {
            shape.insert(0, 1);
        }
        let shaped = t
            .reshape(shape)
            .map_err(|e| invalid(format!("Given model input {i} {e}")))?;
        instance.insert(spec.name.clone(), shaped);
    }
    Ok(instance)
}

/// An instance's outputs without the row dimension of a batched method.
fn instance_of(info: &MethodInfo, outputs: NamedTensors) -> Result<NamedTensors, String> {
    if !info.batched {
        return Ok(outputs);
    }
    outputs
        .into_iter()
        .map(|(name, t)| {
            let unit = t.shape().get(1..).unwrap_or_default().to_vec();
            Ok((name, t.reshape(unit).map_err(|e| e.to_string())?))
        })
        .collect()
}

/// MindSpore's error while the server is not ready (starting, or draining
/// for shutdown) for a request to `servable`'s `method`, of class
/// [`Class::Unavailable`]: `None` once it is ready. Both MindSpore front
/// ends ask before they predict.
pub(crate) fn unready(state: &State, servable: &str, method: &str) -> Option<ServableError> {
    (!state.is_ready()).then(|| {
        ServableError::servable_not_available(servable, method, 0)
            .with_code(StatusCode::ServableUnavailable)
    })
}

/// Runs a MindSpore prediction; every failure is in the outcome.
pub(crate) async fn predict(
    state: &State,
    servable: &str,
    method: &str,
    version: u64,
    instances: Vec<NamedTensors>,
    deadline: Option<Instant>,
) -> Answer {
    let target = Target {
        servable,
        method,
        version,
    };
    if instances.is_empty() {
        return Answer::failed(
            ServableError::new(
                StatusCode::InvalidInputs,
                format!(
                    "Instances count of request cannot be 0, servable: {}, method: {}",
                    quote(servable),
                    quote(method)
                ),
            ),
            Class::InvalidArgument,
        );
    }
    let Ok(sv) = state
        .registry
        .get(servable, version)
        .map_err(|_: Lookup| ())
    else {
        return Answer::failed(
            ServableError::servable_not_available(servable, method, version),
            Class::NotFound,
        );
    };
    let Some(info) = sv.method(method) else {
        return Answer::failed(
            ServableError::method_not_available(servable, method),
            Class::NotFound,
        );
    };
    for instance in &instances {
        if let Some(missing) = info.inputs.iter().find(|i| !instance.contains_key(&i.name)) {
            return Answer::failed(
                ServableError::missing_input(&missing.name, servable, method),
                Class::InvalidArgument,
            );
        }
    }
    // Instances that fail MindSpore's checks are answered in place; the
    // others become jobs.
    let mut results: Vec<Option<(InstanceResult, Class)>> = Vec::with_capacity(instances.len());
    let mut jobs = Vec::new();
    for instance in instances {
        match job_of(info, instance) {
            Ok(inputs) => {
                results.push(None);
                jobs.push(JobRequest {
                    inputs,
                    deadline,
                    ..Default::default()
                });
            }
            Err(e) => results.push(Some((Err(e), Class::InvalidArgument))),
        }
    }
    if !jobs.is_empty() {
        let answers = match sv.submit_in(&state.registry, method, jobs).await {
            Ok(answers) => answers,
            Err(e) => {
                let (e, class) = error(&e, &target);
                return Answer::failed(e, class);
            }
        };
        let mut answers = answers.into_iter();
        for slot in results.iter_mut().filter(|r| r.is_none()) {
            let answer = answers
                .next()
                .unwrap_or(Err(EngineError::Unavailable))
                .and_then(|outputs| instance_of(info, outputs).map_err(EngineError::Runtime));
            *slot = Some(match answer {
                Ok(outputs) => (Ok(outputs), Class::Ok),
                Err(e) => {
                    let (e, class) = error(&e, &target);
                    (Err(e), class)
                }
            });
        }
    }
    let (results, classes): (Vec<InstanceResult>, Vec<Class>) =
        results.into_iter().flatten().unzip();
    let outcome = Outcome::from_results(results);
    let class = match outcome {
        Outcome::Failed(_) => classes.first().copied().unwrap_or(Class::Internal),
        Outcome::Instances(_) => Class::Ok,
    };
    Answer { outcome, class }
}
