//! The Open Inference Protocol: model resolution, inference, metadata and
//! readiness.
//!
//! A servable is visible as model `{servable}` (its first method) and as
//! model `{servable}.{method}` for every method.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serving_proto::oip::{InferRequest, InferResponse, NamedTensor};
use serving_proto::text::quote;
use serving_proto::{DataType, NamedTensors, Tensor};

use serving_proto::oip::shared_memory;

use super::{State, classification};
use crate::engine::registry::Lookup;
use crate::engine::sequence::{SequenceError, SequenceFlags, SequenceId};
use crate::engine::{
    EngineError, InputProblem, JobRequest, MethodInfo, RequestInfo, ServableVersion,
};
use crate::error::ServeError;

/// Outputs placed in shared memory from this size on are copied there on a
/// blocking thread, not on the async worker.
const OFF_RUNTIME_COPY: usize = 1 << 20;

/// Name of this server in server metadata.
pub(crate) const SERVER_NAME: &str = "serving-reference-server";
/// Protocol extensions always served (Triton's names).
pub(crate) const EXTENSIONS: &[&str] = &[
    "binary_tensor_data",
    "classification",
    // The log settings, read and changed (`/v2/logging`, `LogSettings`).
    "logging",
    "model_configuration",
    "model_repository",
    // An ensemble unloaded with `unload_dependents` takes its composing
    // models with it.
    "model_repository(unload_dependents)",
    // Request and tensor `parameters` are read and carried.
    "parameters",
    // The request parameters `priority` and `timeout`.
    "schedule_policy",
    // The request parameters `sequence_id`, `sequence_start` and
    // `sequence_end`, for models with sequence batching.
    "sequence",
    "statistics",
    // Trace settings, and spans exported to OpenTelemetry.
    "trace",
];

/// The extensions a server lists: [`EXTENSIONS`], and
/// `system_shared_memory` when it is on.
pub(crate) fn extensions(state: &State) -> Vec<&'static str> {
    let mut all = EXTENSIONS.to_vec();
    if state.shared_memory.enabled() {
        all.push("system_shared_memory");
    }
    all.sort_unstable();
    all
}
/// The platform reported in model metadata for ONNX models.
pub(crate) const PLATFORM: &str = "onnxruntime_onnx";

/// The platform model metadata reports, as Triton does: a backend model's
/// backend name (`python`), else the platform of ONNX models.
fn platform(sv: &crate::engine::ServableVersion) -> &'static str {
    use crate::repository::triton::{ENSEMBLE_PLATFORM, PYTHON_BACKEND};
    if sv.ensemble_steps().is_some() {
        return ENSEMBLE_PLATFORM;
    }
    match sv.models.first() {
        Some(m) if m.spec.backend == PYTHON_BACKEND => PYTHON_BACKEND,
        _ => PLATFORM,
    }
}

/// A resolved model: a servable version and one of its methods.
#[derive(Clone, Debug)]
pub(crate) struct Model {
    /// The servable version.
    pub servable: Arc<ServableVersion>,
    /// The method's name.
    pub method: String,
}

fn parse_version(model: &str, version: &str) -> Result<u64, ServeError> {
    if version.is_empty() {
        return Ok(0);
    }
    match version.parse::<u64>() {
        Ok(v) if v > 0 => Ok(v),
        _ => Err(ServeError::InvalidArgument(format!(
            "failed to get model version from specified version string '{version}': version should be an integral value > 0 (model '{model}')",
            model = quote(model),
            version = quote(version)
        ))),
    }
}

/// Finds model `name` at `version` (empty = newest).
/// Why model `name` failed to load, when the repository has it and it
/// did (not one unloaded on request).
fn failed_to_load(state: &State, name: &str) -> Option<String> {
    state
        .failures()
        .into_iter()
        .find(|f| f.model == name && f.reason != crate::repository::watch::UNLOADED)
        .map(|f| f.reason)
}

pub(crate) fn resolve(state: &State, name: &str, version: &str) -> Result<Model, ServeError> {
    let v = parse_version(name, version)?;
    // `servable.method` names a MindSpore method where no model is called
    // so; the first lookup is the answer otherwise.
    let found = match state.registry.get(name, v) {
        Err(Lookup::NoServable) => match name.split_once('.') {
            Some((s, m)) => state.registry.get(s, v).map(|sv| (sv, Some(m))),
            None => Err(Lookup::NoServable),
        },
        other => other.map(|sv| (sv, None)),
    };
    let (sv, method) = found.map_err(|e| match e {
        Lookup::NoServable => match failed_to_load(state, name) {
            // A model of the repository that failed to load says why.
            Some(reason) => ServeError::Unavailable(format!(
                "model '{}' is not available: it failed to load: {}",
                quote(name),
                serving_proto::text::bounded(&reason)
            )),
            None => ServeError::NotFound(format!(
                "Request for unknown model: '{name}' is not found",
                name = quote(name)
            )),
        },
        Lookup::NoVersion => ServeError::NotFound(format!(
            "Request for unknown model: '{name}' version {version} is not found",
            name = quote(name),
            version = quote(version)
        )),
    })?;
    let method = match method {
        Some(m) if sv.method(m).is_some() => m.to_owned(),
        Some(_) => {
            return Err(ServeError::NotFound(format!(
                "Request for unknown model: '{name}' is not found",
                name = quote(name)
            )));
        }
        None => match sv.methods().first() {
            Some(m) => m.name.clone(),
            None => {
                return Err(ServeError::NotFound(format!(
                    "model '{name}' has no method",
                    name = quote(name)
                )));
            }
        },
    };
    Ok(Model {
        servable: sv,
        method,
    })
}

/// A shape as Triton writes one in its texts: `[2,2]`.
fn triton_shape(shape: &[i64]) -> String {
    let dims: Vec<String> = shape.iter().map(i64::to_string).collect();
    format!("[{}]", dims.join(","))
}

/// The OIP status and text of an engine error for model `model`: Triton's
/// wording for the same condition first (scripts match on it, as
/// tritonclient's own examples do), then what ours says more.
fn error(e: EngineError, model: &str, info: Option<&MethodInfo>) -> ServeError {
    let model = quote(model);
    let inputs = || {
        info.map(|i| {
            i.inputs
                .iter()
                .map(|i| i.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default()
    };
    match e {
        EngineError::NoMethod(_) => {
            ServeError::NotFound(format!("Request for unknown model: '{model}' is not found"))
        }
        EngineError::MissingInput {
            input,
            missing,
            given,
            given_count,
            required,
        } => {
            let names = |v: &[String], more: usize| {
                let mut list: Vec<String> = v.iter().map(|n| format!("'{}'", quote(n))).collect();
                if more > v.len() {
                    list.push(format!("... {} more", more - v.len()));
                }
                list.join(", ")
            };
            // Triton's text, then ours.
            ServeError::InvalidArgument(format!(
                "expected {required} inputs but got {given_count} inputs for model '{model}'. Got input(s) [{}], but missing required input(s) [{}]. Please provide all required input(s): model '{model}' expects input '{}', which the request does not have (inputs: {})",
                names(&given, given_count),
                names(&missing, missing.len()),
                quote(&input),
                inputs()
            ))
        }
        EngineError::UnexpectedInput { input } => ServeError::InvalidArgument(format!(
            "unexpected inference input '{}' for model '{model}' (its inputs: {})",
            quote(&input),
            inputs()
        )),
        EngineError::InvalidInput { input, problem, .. } => {
            let input = quote(&input);
            ServeError::InvalidArgument(match problem {
                // Triton's text first, then ours (which gives the whole
                // signature, -1 meaning any size).
                InputProblem::Mismatch {
                    expected_dtype,
                    given_dtype,
                    ..
                } if expected_dtype != given_dtype => format!(
                    "inference input '{input}' data-type is '{given_dtype}', but model '{model}' expects '{expected_dtype}': input '{input}' {problem}"
                ),
                InputProblem::Mismatch {
                    ref expected_shape,
                    ref given_shape,
                    ..
                } => format!(
                    "unexpected shape for input '{input}' for model '{model}'. Expected {}, got {}: input '{input}' {problem}",
                    triton_shape(expected_shape),
                    triton_shape(given_shape)
                ),
                InputProblem::NotUtf8 { element } => format!(
                    "input '{input}' of model '{model}': element {element} is not UTF-8 text, which this model's string input (an ONNX string tensor) requires"
                ),
                InputProblem::Nul { element, at } => format!(
                    "input '{input}' of model '{model}': element {element} holds a NUL byte at {at}, which this model's string input (an ONNX string tensor) cannot carry; send text without NUL bytes"
                ),
                InputProblem::NoRows => format!(
                    "input '{input}' of model '{model}' has no rows: dimension 0 is the batch, at least 1"
                ),
                other => format!("input '{input}' of model '{model}' {other}"),
            })
        }
        EngineError::TooManyRows { rows, max } => ServeError::InvalidArgument(format!(
            "inference request batch-size must be <= {max} for '{model}': this request has a batch of {rows} rows; send at most {max} rows per request"
        )),
        EngineError::Priority { given, levels } => ServeError::InvalidArgument(format!(
            "parameter 'priority' {given} is outside the priority levels of model '{model}', 1 (the highest) to {levels}; 0 asks for the default"
        )),
        EngineError::Unavailable => {
            ServeError::Unavailable(format!("no replica of model '{model}' is alive"))
        }
        EngineError::QueueFull { limit } => ServeError::Unavailable(format!(
            "model '{model}' has {limit} requests queued, its limit; retry later"
        )),
        EngineError::LevelFull { level, limit } => ServeError::Unavailable(format!(
            "model '{model}' has {limit} requests queued at priority level {level}, that level's limit; retry later"
        )),
        EngineError::Deadline => ServeError::DeadlineExceeded(
            "Deadline Exceeded: the request's deadline passed before it completed".into(),
        ),
        EngineError::QueueTimeout => ServeError::DeadlineExceeded(format!(
            "Deadline Exceeded: the request waited in the queue of model '{model}' past its timeout, and did not run"
        )),
        EngineError::Runtime(detail) => {
            ServeError::Internal(format!("model '{model}' failed to run: {detail}"))
        }
        EngineError::Memory {
            wanted,
            held,
            limit,
            own,
        } => match super::memory_refusal(&format!("model '{model}'"), wanted, held, limit, own) {
            (text, super::Class::ResourceExhausted) => ServeError::ResourceExhausted(text),
            (text, _) => ServeError::Unavailable(text),
        },
        EngineError::ReplicasFailed => ServeError::Internal(format!(
            "Serving Error: runtime error occurred: replicas of model '{model}' failed twice running the request"
        )),
        EngineError::Step {
            step,
            model: m,
            error: inner,
        } => {
            // The step's error as its model gives it, said to be the step's.
            error(*inner, m.as_str(), None).in_context(&format!(
                "in ensemble '{model}', step {step} (model '{}')",
                quote(&m)
            ))
        }
        EngineError::Sequence(SequenceError::Backlog { waiting, max }) => {
            ServeError::Unavailable(format!(
                "model '{model}' cannot start another sequence now: every slot is taken and {waiting} sequences wait for one (at most {max}); end sequences, or retry the START later"
            ))
        }
        EngineError::Sequence(e) => ServeError::InvalidArgument(match e {
            // Triton's texts.
            SequenceError::NoCorrelationId => format!(
                "inference request to model '{model}' must specify a non-zero or non-empty correlation ID"
            ),
            SequenceError::NotStarted { id } => format!(
                "inference request for sequence {id} to model '{model}' must specify the START flag on the first request of the sequence"
            ),
            SequenceError::Rows { .. } => format!(
                "inference request to model '{model}' must specify batch-size 1 due to requirements of sequence batcher"
            ),
            other => format!("model '{model}': {other}"),
        }),
        EngineError::NeedsStream => ServeError::Unsupported(format!(
            "model '{model}' is decoupled: it answers a request with any number of responses, which only a stream (ModelStreamInfer) carries"
        )),
    }
}

/// The request's sequence (`sequence_id`, an integer or a text, with
/// `sequence_start` and `sequence_end`), if it names one.
fn sequence_parameters(
    parameters: &serving_proto::oip::Parameters,
) -> Result<Option<SequenceFlags>, ServeError> {
    use serving_proto::oip::Parameter;
    let id = match parameters.get("sequence_id") {
        None => None,
        Some(Parameter::String(s)) => Some(SequenceId::Text(s.clone())),
        Some(p) => Some(SequenceId::Int(p.as_u64().ok_or_else(|| {
            ServeError::InvalidArgument(
                "parameter 'sequence_id' must be a non-negative integer or a string".into(),
            )
        })?)),
    };
    let flag = |name: &str| match parameters.get(name) {
        None => Ok(false),
        Some(Parameter::Bool(b)) => Ok(*b),
        Some(_) => Err(ServeError::InvalidArgument(format!(
            "parameter '{name}' must be a boolean"
        ))),
    };
    let (start, end) = (flag("sequence_start")?, flag("sequence_end")?);
    Ok(match id {
        None if !start && !end => None,
        id => Some(SequenceFlags {
            id: id.unwrap_or(SequenceId::Int(0)),
            start,
            end,
        }),
    })
}

/// A non-negative integer request parameter, if given.
fn uint_parameter(
    parameters: &serving_proto::oip::Parameters,
    name: &str,
) -> Result<Option<u64>, ServeError> {
    match parameters.get(name) {
        None => Ok(None),
        Some(p) => p.as_u64().map(Some).ok_or_else(|| {
            ServeError::InvalidArgument(format!(
                "parameter '{name}' must be a non-negative integer"
            ))
        }),
    }
}

/// Runs an inference request.
/// Request parameters the server acts on itself; Triton hands the others
/// to the model (a Python model's `request.parameters()`), and so do we.
const SERVER_PARAMETERS: [&str; 7] = [
    "priority",
    "timeout",
    "sequence_id",
    "sequence_start",
    "sequence_end",
    "binary_data_output",
    "triton_enable_empty_final_response",
];

/// The request's id and the parameters meant for the model; `None` when
/// it has neither.
fn request_info(req: &InferRequest, sequence: Option<&SequenceFlags>) -> Option<Arc<RequestInfo>> {
    use serde_json::Value;
    use serving_proto::oip::Parameter;
    let parameters: serde_json::Map<String, Value> = req
        .parameters
        .iter()
        .filter(|(k, _)| !SERVER_PARAMETERS.contains(&k.as_str()))
        .filter_map(|(k, v)| {
            let v = match v {
                Parameter::Bool(b) => Value::Bool(*b),
                Parameter::Int64(n) => Value::from(*n),
                Parameter::Uint64(n) => Value::from(*n),
                Parameter::Double(d) => Value::from(*d),
                Parameter::String(s) => Value::String(s.clone()),
                _ => return None,
            };
            Some((k.clone(), v))
        })
        .collect();
    // The sequence as `sequence_parameters` read it: a Python model's
    // `correlation_id()` and `flags()`.
    let correlation_id = sequence.map(|s| match &s.id {
        SequenceId::Text(t) => Value::String(t.clone()),
        SequenceId::Int(n) => Value::from(*n),
    });
    let flags = sequence.map_or(0, |s| u32::from(s.start) | (u32::from(s.end) << 1));
    (!req.id.is_empty() || !parameters.is_empty() || correlation_id.is_some() || flags != 0).then(
        || {
            Arc::new(RequestInfo {
                id: req.id.clone(),
                parameters,
                correlation_id,
                flags,
            })
        },
    )
}

/// A request checked and made a job: its model, the job, and the outputs
/// to write to shared memory.
struct Prepared {
    model: Model,
    job: JobRequest,
    placements: std::collections::BTreeMap<String, shared_memory::Placement>,
}

/// Checks a request against the server and its model and makes it a job
/// (its inputs taken out of `req`).
fn prepare(
    state: &State,
    req: &mut InferRequest,
    deadline: Option<Instant>,
) -> Result<Prepared, ServeError> {
    if !state.is_ready() {
        return Err(ServeError::Unavailable("the server is not ready".into()));
    }
    tracing::debug!(model = %serving_proto::text::bounded(&req.model_name), version = %serving_proto::text::bounded(&req.model_version), id = %serving_proto::text::bounded(&req.id), inputs = req.inputs.len(), "inference request");
    let model = resolve(state, &req.model_name, &req.model_version)?;
    if model.servable.method(&model.method).is_none() {
        return Err(error(
            EngineError::NoMethod(model.method.clone()),
            &req.model_name,
            None,
        ));
    }
    let priority = uint_parameter(&req.parameters, "priority")?.unwrap_or(0);
    let queue_timeout = uint_parameter(&req.parameters, "timeout")?
        .filter(|&us| us > 0)
        .map(Duration::from_micros);
    let sequence = sequence_parameters(&req.parameters)?;
    let request = request_info(req, sequence.as_ref());
    let mut inputs = NamedTensors::new();
    for input in std::mem::take(&mut req.inputs) {
        if inputs.insert(input.name.clone(), input.tensor).is_some() {
            return Err(ServeError::InvalidArgument(format!(
                "input '{}' already exists in request: each input is given once",
                quote(&input.name)
            )));
        }
    }
    // Each output may be asked for once (as Triton's L0_grpc checks).
    let mut asked = std::collections::BTreeSet::new();
    // Outputs to write to shared memory, checked before the model runs.
    let mut placements = std::collections::BTreeMap::new();
    for output in &req.outputs {
        if !asked.insert(output.name.as_str()) {
            return Err(ServeError::InvalidArgument(format!(
                "output '{}' is requested more than once",
                quote(&output.name)
            )));
        }
        classification::class_count(&output.name, &output.parameters)?;
        let placed = shared_memory::placement(&output.parameters).map_err(|e| {
            ServeError::InvalidArgument(format!("output '{}': {e}", quote(&output.name)))
        })?;
        if let Some(p) = placed {
            if !state.shared_memory.enabled() {
                return Err(ServeError::FailedPrecondition(
                    super::shared_memory::DISABLED.into(),
                ));
            }
            placements.insert(output.name.clone(), p);
        }
    }
    let job = JobRequest {
        info: request,
        inputs,
        deadline,
        priority,
        queue_timeout,
        partials: None,
        sequence,
        timing: None,
    };
    Ok(Prepared {
        model,
        job,
        placements,
    })
}

/// Whether model `name` at `version` answers a request with any number of
/// responses (a decoupled model), which only a stream can carry; false
/// for a model that is not there (its request fails on its own).
pub(crate) fn is_decoupled(state: &State, name: &str, version: &str) -> bool {
    resolve(state, name, version).is_ok_and(|m| {
        m.servable
            .method(&m.method)
            .is_some_and(|info| info.decoupled)
    })
}

/// Where a request came from, for its trace: when it arrived, the
/// client's W3C `traceparent`, and the call's name.
#[derive(Clone, Debug)]
pub(crate) struct Incoming {
    pub(crate) received: Instant,
    pub(crate) traceparent: Option<http::HeaderValue>,
    pub(crate) call: &'static str,
}

impl Incoming {
    /// A request arriving now.
    pub(crate) fn now(call: &'static str, traceparent: Option<&http::HeaderValue>) -> Incoming {
        Incoming {
            received: Instant::now(),
            traceparent: traceparent.cloned(),
            call,
        }
    }
}

/// Runs one request of a model that answers once; traced when the trace
/// settings pick it.
pub(crate) async fn infer(
    state: &State,
    req: InferRequest,
    deadline: Option<Instant>,
    incoming: &Incoming,
) -> Result<InferResponse, ServeError> {
    let Some(sink) = state.traces.sample(&req.model_name) else {
        return infer_once(state, req, deadline, None).await;
    };
    let timing = Arc::new(crate::engine::JobTiming::default());
    let model = req.model_name.clone();
    let submitted = Instant::now();
    let result = infer_once(state, req, deadline, Some(timing.clone())).await;
    let version = match &result {
        Ok(r) => r.model_version.parse().unwrap_or(-1),
        Err(_) => -1,
    };
    crate::trace::Traced {
        sink,
        parent: crate::trace::parent(incoming.traceparent.as_ref().and_then(|v| v.to_str().ok())),
        name: incoming.call,
        model,
        version,
        grpc: !incoming.call.starts_with("POST "),
        received: incoming.received,
        submitted,
        answered: Instant::now(),
    }
    .record(timing.get(), result.is_ok());
    result
}

async fn infer_once(
    state: &State,
    mut req: InferRequest,
    deadline: Option<Instant>,
    timing: Option<Arc<crate::engine::JobTiming>>,
) -> Result<InferResponse, ServeError> {
    let Prepared {
        model,
        mut job,
        mut placements,
    } = prepare(state, &mut req, deadline)?;
    job.timing = timing;
    let info = model.servable.method(&model.method).expect("prepared");
    if info.decoupled {
        return Err(ServeError::Unsupported(format!(
            "model '{}' is decoupled: it answers a request with any number of responses, which only a stream (ModelStreamInfer) carries",
            quote(&req.model_name)
        )));
    }
    let outputs = model
        .servable
        .submit_in(&state.registry, &model.method, vec![job])
        .await
        .map_err(|e| error(e, &req.model_name, Some(info)))?
        .pop()
        .unwrap_or(Err(EngineError::Unavailable))
        .map_err(|e| error(e, &req.model_name, Some(info)))?;
    let mut named: Vec<NamedTensor> = Vec::with_capacity(outputs.len());
    if req.outputs.is_empty() {
        // All of them, in the model's order (as Triton answers), not by
        // name.
        let mut outputs = outputs;
        for o in &info.outputs {
            if let Some(t) = outputs.remove(&o.name) {
                named.push(NamedTensor::new(o.name.clone(), as_oip(t)));
            }
        }
        named.extend(
            outputs
                .into_iter()
                .map(|(n, t)| NamedTensor::new(n, as_oip(t))),
        );
    } else {
        for wanted in &req.outputs {
            let t = outputs.get(&wanted.name).ok_or_else(|| {
                ServeError::InvalidArgument(format!(
                    "unexpected inference output '{}' for model '{}' (its outputs: {})",
                    quote(&wanted.name),
                    quote(&req.model_name),
                    outputs.keys().cloned().collect::<Vec<_>>().join(", ")
                ))
            })?;
            let mut t = as_oip(t.clone());
            if let Some(k) = classification::class_count(&wanted.name, &wanted.parameters)? {
                let labels = info
                    .outputs
                    .iter()
                    .find(|o| o.name == wanted.name)
                    .and_then(|o| o.labels.as_deref());
                t = classification::classify(
                    &wanted.name,
                    &t,
                    k,
                    info.batched,
                    labels,
                    state.max_msg_bytes,
                )?;
            }
            let mut out = NamedTensor::new(wanted.name.clone(), t);
            if let Some(p) = placements.remove(wanted.name.as_str()) {
                let bytes = serving_proto::oip::raw_contents(&out.tensor);
                let len = bytes.len();
                let slot = state.shared_memory.output_slot(&wanted.name, &p, len)?;
                if len >= OFF_RUNTIME_COPY {
                    // From 0.1 ms at 1 MiB to tens of ms at 256 MiB: off
                    // the async workers, which serve every other connection.
                    tokio::task::spawn_blocking(move || slot.write(&bytes))
                        .await
                        .map_err(|e| {
                            ServeError::Internal(format!(
                                "writing output '{}' to shared memory failed: {e}",
                                quote(&wanted.name)
                            ))
                        })?;
                } else {
                    slot.write(&bytes);
                }
                // The placement as asked, with the size actually written.
                out.parameters = wanted
                    .parameters
                    .iter()
                    .filter(|(k, _)| k.starts_with("shared_memory_"))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                out.parameters.insert(
                    serving_proto::oip::shared_memory::BYTE_SIZE.into(),
                    serving_proto::oip::Parameter::Int64(len as i64),
                );
            }
            named.push(out);
        }
    }
    // Triton's ensembles answer with the sequence parameters they pass to
    // their steps (no sequence: 0, false, false); so do ours.
    let parameters = if model.servable.ensemble_steps().is_some() {
        use serving_proto::oip::Parameter;
        [
            ("sequence_id", Parameter::Int64(0)),
            ("sequence_start", Parameter::Bool(false)),
            ("sequence_end", Parameter::Bool(false)),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    } else {
        Default::default()
    };
    Ok(InferResponse {
        model_name: req.model_name,
        model_version: model.servable.version.to_string(),
        id: req.id,
        parameters,
        outputs: named,
    })
}

/// One response of a decoupled model's request, or its failure.
pub(crate) type Streamed = Result<StreamedResponse, ServeError>;

/// One response of a decoupled model's request.
#[derive(Debug)]
pub(crate) struct StreamedResponse {
    /// The response (no outputs: one that only says it is the last).
    pub(crate) response: InferResponse,
    /// Whether it is the request's last.
    pub(crate) last: bool,
}

/// A decoupled model's response as its client gets it: the response made
/// by `respond` from its outputs, or its error (bounded: it is the
/// model's text).
fn streamed(
    respond: &impl Fn(NamedTensors) -> InferResponse,
    p: crate::engine::Partial,
) -> Streamed {
    match p.outputs {
        Ok(outputs) => Ok(StreamedResponse {
            response: respond(outputs),
            last: p.last,
        }),
        Err(text) => Err(ServeError::Internal(
            serving_proto::text::bounded(&text).into_owned(),
        )),
    }
}

/// How many responses of one decoupled request wait for its client before
/// the model waits.
const STREAMED_AHEAD: usize = 4;

/// Runs one request of a decoupled model: its responses, as the model
/// sends them, each marked last or not; the request's last response is
/// always marked (an empty one when the model's last carried nothing).
/// A failure of the whole request (refused, the model failed) ends it;
/// a response with the model's error does not.
pub(crate) fn infer_decoupled(
    state: Arc<State>,
    mut req: InferRequest,
    deadline: Option<Instant>,
) -> Result<tokio::sync::mpsc::Receiver<Streamed>, ServeError> {
    let Prepared {
        model,
        mut job,
        placements,
    } = prepare(&state, &mut req, deadline)?;
    if !placements.is_empty() {
        return Err(ServeError::InvalidArgument(format!(
            "model '{}' is decoupled: its outputs cannot go to shared memory",
            quote(&req.model_name)
        )));
    }
    let (partial_tx, mut partials) = tokio::sync::mpsc::channel(STREAMED_AHEAD);
    job.partials = Some(partial_tx);
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let version = model.servable.version.to_string();
    let name = req.model_name.clone();
    let wanted: Vec<String> = req.outputs.iter().map(|o| o.name.clone()).collect();
    let respond = move |outputs: NamedTensors| InferResponse {
        model_name: req.model_name.clone(),
        model_version: version.clone(),
        id: req.id.clone(),
        parameters: Default::default(),
        outputs: outputs
            .into_iter()
            .filter(|(n, _)| wanted.is_empty() || wanted.contains(n))
            .map(|(n, t)| NamedTensor::new(n, as_oip(t)))
            .collect(),
    };
    tokio::spawn(async move {
        let servable = model.servable.clone();
        let submit = servable.submit(&model.method, vec![job]);
        tokio::pin!(submit);
        let mut last_sent = false;
        loop {
            tokio::select! {
                Some(p) = partials.recv() => {
                    last_sent |= p.last;
                    if tx.send(streamed(&respond, p)).await.is_err() {
                        return;
                    }
                }
                result = &mut submit => {
                    let info = servable.method(&model.method);
                    let failed = match result {
                        Ok(mut answers) => answers.pop().unwrap_or(Err(EngineError::Unavailable)).err(),
                        Err(e) => Some(e),
                    };
                    if let Some(e) = failed {
                        let _ = tx.send(Err(error(e, &name, info))).await;
                        return;
                    }
                    // Every response was sent before the job's answer.
                    while let Ok(p) = partials.try_recv() {
                        last_sent |= p.last;
                        if tx.send(streamed(&respond, p)).await.is_err() {
                            return;
                        }
                    }
                    if !last_sent {
                        let _ = tx
                            .send(Ok(StreamedResponse { response: respond(NamedTensors::new()), last: true }))
                            .await;
                    }
                    return;
                }
            }
        }
    });
    Ok(rx)
}

/// `Inference-Header-Content-Length: 0`: the body is the data of the
/// model's single input.
pub(crate) fn raw_binary_request(
    state: &State,
    model: &str,
    version: &str,
    bytes: bytes::Bytes,
) -> Result<serving_proto::oip::InferRequest, ServeError> {
    let meta = model_metadata(state, model, version)?;
    let [input] = meta.inputs.as_slice() else {
        return Err(ServeError::InvalidArgument(format!(
            "a raw binary request needs a model with one input; '{model}' has {}",
            meta.inputs.len(),
            model = quote(model)
        )));
    };
    let dtype = serving_proto::DataType::from_oip_name(&input.datatype).ok_or_else(|| {
        ServeError::InvalidArgument(format!("input '{}' has no OIP datatype", input.name))
    })?;
    let mut shape = input.shape.clone();
    let variable: Vec<usize> = shape
        .iter()
        .enumerate()
        .filter(|(_, d)| **d < 0)
        .map(|(i, _)| i)
        .collect();
    match (variable.as_slice(), dtype.item_size()) {
        ([], _) => {}
        ([i], Some(item)) => {
            let fixed: i64 = shape.iter().filter(|d| **d >= 0).product();
            let per = fixed.max(1) as usize * item;
            if !bytes.len().is_multiple_of(per) {
                return Err(ServeError::InvalidArgument(format!(
                    "raw binary body of {} bytes is not a whole number of {} rows",
                    bytes.len(),
                    input.datatype
                )));
            }
            shape[*i] = (bytes.len() / per) as i64;
        }
        ([i], None) => shape[*i] = 1,
        _ => {
            return Err(ServeError::InvalidArgument(format!(
                "a raw binary request needs at most one variable dimension; input '{}' has {}",
                input.name,
                variable.len()
            )));
        }
    }
    Ok(serving_proto::oip::rest::decode_raw_binary_request(
        bytes,
        &input.name,
        dtype,
        shape,
    )?)
}

/// OIP has no STRING: text outputs travel as BYTES.
fn as_oip(t: Tensor) -> Tensor {
    if t.dtype() != DataType::String {
        return t;
    }
    let (_, shape, data) = t.into_parts();
    match data {
        serving_proto::TensorData::Elements(e) => {
            Tensor::from_elements(DataType::Bytes, shape, e).expect("same element count")
        }
        serving_proto::TensorData::Raw(_) => unreachable!("string tensors hold elements"),
    }
}

pub(crate) use serving_proto::oip::metadata::{ModelMetadata, TensorMetadata};

/// The metadata of an input or output; `dtype` `None` where any type goes
/// (an argument or result of a MindSpore method's Python function):
/// `ANY`, which names no OIP type, so that no client takes it for one.
fn meta(name: &str, dtype: Option<DataType>, shape: &[i64]) -> TensorMetadata {
    let datatype = match dtype {
        None => "ANY",
        Some(DataType::String) => "BYTES",
        Some(d) => d.oip_name().unwrap_or("BYTES"),
    };
    TensorMetadata {
        name: name.to_owned(),
        datatype: datatype.to_owned(),
        shape: shape.to_vec(),
    }
}

/// The metadata of a model: its method's inputs and outputs, rows first
/// (`-1`) when requests batch.
pub(crate) fn model_metadata(
    state: &State,
    name: &str,
    version: &str,
) -> Result<ModelMetadata, ServeError> {
    let model = resolve(state, name, version)?;
    let sv = &model.servable;
    let method = sv.method(&model.method).expect("resolved method exists");
    let versions = state
        .registry
        .versions(&sv.name)
        .iter()
        .map(u64::to_string)
        .collect();
    Ok(ModelMetadata {
        name: name.to_owned(),
        versions,
        platform: platform(sv).to_owned(),
        inputs: method
            .inputs
            .iter()
            .map(|i| meta(&i.name, (!i.untyped).then_some(i.dtype), &i.shape))
            .collect(),
        outputs: method
            .outputs
            .iter()
            .map(|o| meta(&o.name, (!o.untyped).then_some(o.dtype), &o.shape))
            .collect(),
    })
}

/// Whether a model is ready: a model the repository failed to load is
/// known, and not ready.
pub(crate) fn model_ready(state: &State, name: &str, version: &str) -> Result<bool, ServeError> {
    match resolve(state, name, version) {
        // An ensemble is ready when each of its steps' models is there.
        Ok(m) => Ok(state.is_ready()
            && m.servable.ensemble_steps().is_none_or(|e| {
                e.steps
                    .iter()
                    .all(|s| is_step_there(state, &s.model, s.version))
            })),
        Err(ServeError::NotFound(_)) if state.failures().iter().any(|f| f.model == name) => {
            Ok(false)
        }
        Err(e) => Err(e),
    }
}

/// Whether an ensemble step's model (`servable` or `servable.method`) is
/// loaded at `version` (0: any).
fn is_step_there(state: &State, model: &str, version: u64) -> bool {
    state.registry.get(model, version).is_ok()
        || model.split_once('.').is_some_and(|(s, m)| {
            state
                .registry
                .get(s, version)
                .is_ok_and(|sv| sv.method(m).is_some())
        })
}

/// gRPC `ModelReady`: as Triton answers it, a model or version the server
/// does not have is not ready (`ready: false`), not an error; the reply has
/// no room for why, which REST's 404 body gives.
pub(crate) fn grpc_model_ready(
    state: &State,
    name: &str,
    version: &str,
) -> Result<bool, ServeError> {
    match model_ready(state, name, version) {
        Err(ServeError::NotFound(_)) => Ok(false),
        r => r,
    }
}
