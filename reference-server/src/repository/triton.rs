//! Triton model directories: `config.pbtxt` (Triton's `ModelConfig` in
//! protobuf text format), or none at all, the configuration then completed
//! from the ONNX file as Triton's ONNX Runtime backend does.
//!
//! ```text
//! models/
//!   resnet/
//!     config.pbtxt          optional
//!     1/model.onnx
//!     2/model.onnx
//! ```
//!
//! A Triton model is served as servable `{name}` with one method, `predict`,
//! whose inputs and outputs are the model's, so that both protocols reach
//! it: Open Inference by model name, MindSpore Serving by servable `{name}`
//! and method `predict`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// The data type Triton names `t` (kept here for this module's users; the
/// mapping lives in `serving_proto`).
pub use serving_proto::model_config::triton_type;
use serving_proto::model_config::{
    ModelConfig, ModelDynamicBatching, ModelInput, ModelInstanceGroup, ModelOutput,
    ModelQueuePolicy, ModelVersionPolicy, TritonType,
};
use serving_proto::pb::inference::model_config::SchedulingChoice;
use serving_proto::pb::inference::model_instance_group::Kind;
use serving_proto::pb::inference::model_queue_policy::TimeoutAction;
use serving_proto::pb::inference::model_version_policy::PolicyChoice;

use crate::engine::MethodInfo;
use crate::engine::config::{
    Batching, Deployment, LevelPolicy, MAX_BATCH_SIZE, MAX_DELAY_US, MAX_GPU_ID,
    MAX_INTRA_OP_THREADS, MAX_PRIORITY_LEVELS, MAX_QUEUE_LIMIT, MAX_REPLICAS,
    MAX_REPLICAS_PER_DEVICE, MethodSpec, ModelSpec, QueuePolicy, RequestTimeouts, ServableSpec,
    StageSpec, TimeoutAction as EngineTimeoutAction, at_most, check_dims,
};
use crate::engine::sequence::{
    Control, ControlKind, ControlValue, DEFAULT_IDLE, SequenceSpec, StateSpec, Strategy,
};
use crate::onnx::{Declared, Signature};
use crate::runtime::device::Device;

/// The platform Triton names ONNX models by, and the backend.
pub const PLATFORM: &str = "onnxruntime_onnx";
/// Triton's ONNX Runtime backend.
pub const BACKEND: &str = "onnxruntime";
/// The file a version directory holds unless `default_model_filename` says
/// otherwise.
pub const MODEL_FILE: &str = "model.onnx";
/// Triton's Python backend, and the file its version directories hold.
pub const PYTHON_BACKEND: &str = "python";
/// The model file of a Python-backend version.
pub const PYTHON_FILE: &str = "model.py";

/// The platform of Triton's ensembles.
pub const ENSEMBLE_PLATFORM: &str = "ensemble";

/// Whether a configuration is an ensemble's.
pub fn is_ensemble(config: Option<&ModelConfig>) -> bool {
    config.is_some_and(|c| c.platform == ENSEMBLE_PLATFORM)
}

/// An ensemble's method (its inputs and outputs as declared, rows first
/// when it batches) and steps, from its configuration.
pub fn ensemble_of(
    c: &ModelConfig,
) -> Result<(MethodInfo, crate::engine::ensemble::EnsembleSpec), String> {
    use crate::engine::ensemble::{EnsembleSpec, StepSpec};
    let Some(SchedulingChoice::EnsembleScheduling(e)) = &c.scheduling_choice else {
        return Err(format!(
            "platform \"{ENSEMBLE_PLATFORM}\" needs ensemble_scheduling {{ step [ ... ] }}"
        ));
    };
    let declared = |what: &str, name: &str, data_type: i32, dims: &[i64]| {
        let dtype = TritonType::try_from(data_type)
            .ok()
            .and_then(serving_proto::model_config::data_type)
            .ok_or_else(|| format!("{what} '{name}' has no data_type"))?;
        Ok::<_, String>((name.to_owned(), dtype, dims.to_vec()))
    };
    let inputs = c
        .input
        .iter()
        .map(|i| declared("input", &i.name, i.data_type, &i.dims))
        .collect::<Result<Vec<_>, _>>()?;
    let outputs = c
        .output
        .iter()
        .map(|o| declared("output", &o.name, o.data_type, &o.dims))
        .collect::<Result<Vec<_>, _>>()?;
    if e.step.is_empty() {
        return Err("ensemble_scheduling has no step".into());
    }
    let mut steps = Vec::with_capacity(e.step.len());
    for (k, s) in e.step.iter().enumerate() {
        if s.model_name.is_empty() {
            return Err(format!("ensemble step {} names no model_name", k + 1));
        }
        let version = match s.model_version {
            -1 => 0,
            v if v >= 1 => v as u64,
            v => {
                return Err(format!(
                    "ensemble step {} (model '{}') has model_version {v}: -1 (the newest) or a version from 1",
                    k + 1,
                    s.model_name
                ));
            }
        };
        steps.push(StepSpec {
            model: s.model_name.clone(),
            version,
            inputs: s
                .input_map
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            outputs: s
                .output_map
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        });
    }
    let batched = c.max_batch_size > 0;
    let method = MethodInfo::declared(
        METHOD,
        inputs,
        outputs,
        batched,
        usize::try_from(c.max_batch_size).unwrap_or(1).max(1),
    );
    Ok((method, EnsembleSpec { steps }))
}

/// Whether a configuration is a Python-backend model's.
pub fn is_python(config: Option<&ModelConfig>) -> bool {
    config.is_some_and(|c| c.backend == PYTHON_BACKEND)
}
/// The method a Triton model is served as, for MindSpore Serving clients.
pub const METHOD: &str = "predict";

/// A Triton model as the engine runs it, the configuration as completed,
/// and what was read but has no effect here.
#[derive(Clone, Debug)]
pub struct Translated {
    /// What the engine runs.
    pub spec: ServableSpec,
    /// The configuration with everything Triton would complete filled in
    /// (what the model-configuration endpoint answers).
    pub config: ModelConfig,
    /// Fields that only tune performance elsewhere, ignored here.
    pub ignored: Vec<String>,
}

/// What a Triton directory needs from the server.
#[derive(Clone, Debug)]
pub struct Defaults {
    /// `max_batch_size` of a model without a configuration whose inputs
    /// and outputs all have a dynamic first dimension (Triton's
    /// `default-max-batch-size`, 4); 0 turns that batching off.
    pub max_batch_size: u32,
    /// The devices of a model that names none.
    pub devices: Vec<Device>,
}

fn type_name(t: i32) -> String {
    TritonType::try_from(t)
        .map_or_else(|_| format!("data type {t}"), |t| t.as_str_name().to_owned())
}

/// The model file of a configuration.
pub fn model_file(config: Option<&ModelConfig>) -> &str {
    match config {
        Some(c) if !c.default_model_filename.is_empty() => &c.default_model_filename,
        c if is_python(c) => PYTHON_FILE,
        _ => MODEL_FILE,
    }
}

/// The versions a configuration serves of those on disk (ascending):
/// Triton's `version_policy`, by default the latest one.
pub fn served(config: Option<&ModelConfig>, on_disk: &[u64]) -> Vec<u64> {
    let policy = config
        .and_then(|c| c.version_policy.as_ref())
        .and_then(|p| p.policy_choice.as_ref());
    match policy {
        Some(PolicyChoice::All(_)) => on_disk.to_vec(),
        Some(PolicyChoice::Specific(s)) => on_disk
            .iter()
            .copied()
            .filter(|v| s.versions.contains(&(*v as i64)))
            .collect(),
        Some(PolicyChoice::Latest(l)) => {
            let n = (l.num_versions as usize).max(1);
            on_disk[on_disk.len().saturating_sub(n)..].to_vec()
        }
        None => on_disk.last().copied().into_iter().collect(),
    }
}

/// The parameter that sets ONNX Runtime's intra-op threads per replica.
const THREADS: &str = "intra_op_thread_count";

/// `parameters["intra_op_thread_count"]`, checked: a positive integer at
/// most [`MAX_INTRA_OP_THREADS`].
fn intra_op_threads(config: &ModelConfig) -> Result<Option<usize>, String> {
    let Some(p) = config.parameters.get(THREADS) else {
        return Ok(None);
    };
    let field = format!("parameters[\"{THREADS}\"]");
    let n = p
        .string_value
        .trim()
        .parse::<u64>()
        .ok()
        .filter(|&n| n > 0)
        .ok_or_else(|| format!("{field} \"{}\" is not a positive integer", p.string_value))?;
    at_most(&field, n, MAX_INTRA_OP_THREADS as u64)?;
    Ok(Some(n as usize))
}

/// Checks the fields of a configuration that do not depend on the model
/// file: the name, the platform, the model file's path, the fields with no
/// meaning here, and every number against its bound
/// (`crate::engine::config::MAX_*`).
pub fn check(config: &ModelConfig, directory: &str) -> Result<(), String> {
    let decoupled = config
        .model_transaction_policy
        .as_ref()
        .is_some_and(|p| p.decoupled);
    if decoupled && config.backend != PYTHON_BACKEND {
        return Err(format!(
            "model_transaction_policy {{ decoupled: true }}: only Python models (backend \"{PYTHON_BACKEND}\") send their responses themselves; an ONNX model answers each request once"
        ));
    }
    if !config.name.is_empty() && config.name != directory {
        return Err(format!(
            "name \"{}\" does not match the model directory '{directory}'",
            config.name
        ));
    }
    let ensemble = config.platform == ENSEMBLE_PLATFORM;
    let ensembling = matches!(
        config.scheduling_choice,
        Some(SchedulingChoice::EnsembleScheduling(_))
    );
    if ensemble != ensembling {
        return Err(format!(
            "platform \"{ENSEMBLE_PLATFORM}\" and ensemble_scheduling go together; this configuration has {}",
            if ensemble {
                "the platform without ensemble_scheduling"
            } else {
                "ensemble_scheduling without the platform"
            }
        ));
    }
    if !ensemble && !config.platform.is_empty() && config.platform != PLATFORM {
        return Err(format!(
            "platform \"{}\" is not served: this server runs ONNX models (platform \"{PLATFORM}\") and Python models (backend \"{PYTHON_BACKEND}\")",
            config.platform
        ));
    }
    if !config.backend.is_empty() && config.backend != BACKEND && config.backend != PYTHON_BACKEND {
        return Err(format!(
            "backend \"{}\" is not served: this server runs ONNX models (backend \"{BACKEND}\") and Python models (backend \"{PYTHON_BACKEND}\")",
            config.backend
        ));
    }
    if config.backend == PYTHON_BACKEND && !config.platform.is_empty() {
        return Err(format!(
            "platform \"{}\" with backend \"{PYTHON_BACKEND}\": a Python model names no platform",
            config.platform
        ));
    }
    if !config.default_model_filename.is_empty()
        && !super::is_inside_path(&config.default_model_filename)
    {
        return Err(format!(
            "default_model_filename \"{}\" must be a path inside the version directory: relative, without '..'",
            config.default_model_filename
        ));
    }
    let unsupported =
        |field: &str, why: &str| Err(format!("field '{field}' is not supported: {why}"));
    if !config.runtime.is_empty() {
        return unsupported("runtime", "backend libraries are not loaded here");
    }
    if !config.cc_model_filenames.is_empty() {
        return unsupported(
            "cc_model_filenames",
            "one model file per version; use default_model_filename",
        );
    }
    for (i, g) in config.instance_group.iter().enumerate() {
        if !g.profile.is_empty() {
            return unsupported(&format!("instance_group[{i}].profile"), "TensorRT profiles");
        }
        if g.passive {
            return unsupported(
                &format!("instance_group[{i}].passive"),
                "every instance serves",
            );
        }
        if g.count < 0 {
            return Err(format!("instance_group[{i}].count {} is negative", g.count));
        }
        at_most(
            &format!("instance_group[{i}].count"),
            g.count as usize,
            MAX_REPLICAS_PER_DEVICE,
        )?;
        if g.gpus.len() > MAX_REPLICAS {
            return Err(format!(
                "instance_group[{i}].gpus lists {} GPUs, over the bound {MAX_REPLICAS}",
                g.gpus.len()
            ));
        }
        if let Some(&id) = g.gpus.iter().find(|&&id| !(0..=MAX_GPU_ID).contains(&id)) {
            return Err(format!(
                "instance_group[{i}].gpus holds {id}; GPU ids are 0 to {MAX_GPU_ID}"
            ));
        }
    }
    // The replicas the groups ask for, counted before their device list is
    // built (thousands of groups of 64 instances on 256 GPUs each would
    // otherwise build a list of millions first); groups that name no GPU
    // count once per instance here, and their devices are checked again
    // once known.
    let replicas = config
        .instance_group
        .iter()
        .map(|g| (g.count.max(1) as usize).saturating_mul(g.gpus.len().max(1)))
        .fold(0usize, usize::saturating_add);
    if replicas > MAX_REPLICAS {
        return Err(format!(
            "instance_group: {replicas} replicas is over the bound {MAX_REPLICAS}"
        ));
    }
    for i in &config.input {
        check_dims(&format!("input '{}' dims", i.name), &i.dims)?;
        if let Some(r) = &i.reshape {
            check_dims(&format!("input '{}' reshape.shape", i.name), &r.shape)?;
        }
    }
    for o in &config.output {
        check_dims(&format!("output '{}' dims", o.name), &o.dims)?;
        if let Some(r) = &o.reshape {
            check_dims(&format!("output '{}' reshape.shape", o.name), &r.shape)?;
        }
    }
    intra_op_threads(config)?;
    for i in &config.input {
        let field = |f: &str| format!("input '{}' {f}", i.name);
        if i.is_shape_tensor {
            return unsupported(&field("is_shape_tensor"), "shape tensors are TensorRT's");
        }
        if i.allow_ragged_batch {
            return unsupported(
                &field("allow_ragged_batch"),
                "rows batch only with equal shapes",
            );
        }
        if i.is_non_linear_format_io {
            return unsupported(&field("is_non_linear_format_io"), "TensorRT only");
        }
    }
    for o in &config.output {
        let field = |f: &str| format!("output '{}' {f}", o.name);
        if o.is_shape_tensor {
            return unsupported(&field("is_shape_tensor"), "shape tensors are TensorRT's");
        }
        if o.is_non_linear_format_io {
            return unsupported(&field("is_non_linear_format_io"), "TensorRT only");
        }
    }
    if config.max_batch_size < 0 {
        return Err(format!(
            "max_batch_size {} is negative",
            config.max_batch_size
        ));
    }
    at_most(
        "max_batch_size",
        config.max_batch_size as usize,
        MAX_BATCH_SIZE,
    )?;
    if let Some(SchedulingChoice::DynamicBatching(d)) = &config.scheduling_choice {
        if let Some(&p) = d.preferred_batch_size.iter().find(|&&p| p <= 0) {
            return Err(format!(
                "dynamic_batching.preferred_batch_size holds {p}; sizes are at least 1"
            ));
        }
        for (i, &p) in d.preferred_batch_size.iter().enumerate() {
            at_most(
                &format!("dynamic_batching.preferred_batch_size[{i}]"),
                p as usize,
                MAX_BATCH_SIZE,
            )?;
        }
        at_most(
            "dynamic_batching.max_queue_delay_microseconds",
            d.max_queue_delay_microseconds,
            MAX_DELAY_US,
        )?;
        let levels = u64::from(MAX_PRIORITY_LEVELS);
        at_most(
            "dynamic_batching.priority_levels",
            d.priority_levels,
            levels,
        )?;
        at_most(
            "dynamic_batching.default_priority_level",
            d.default_priority_level,
            levels,
        )?;
        let policies = d
            .default_queue_policy
            .iter()
            .map(|q| ("dynamic_batching.default_queue_policy".to_owned(), q))
            .chain(d.priority_queue_policy.iter().map(|(level, q)| {
                (
                    format!("dynamic_batching.priority_queue_policy[{level}]"),
                    q,
                )
            }));
        for (field, q) in policies {
            at_most(
                &format!("{field}.default_timeout_microseconds"),
                q.default_timeout_microseconds,
                MAX_DELAY_US,
            )?;
            at_most(
                &format!("{field}.max_queue_size"),
                q.max_queue_size as usize,
                MAX_QUEUE_LIMIT,
            )?;
            if TimeoutAction::try_from(q.timeout_action).is_err() {
                return Err(format!(
                    "{field}.timeout_action {} is neither REJECT nor DELAY",
                    q.timeout_action
                ));
            }
        }
    }
    Ok(())
}

/// The fields read but without effect here (they tune performance in
/// Triton's backends).
/// A configuration's `sequence_batching` as the engine runs it, checked
/// against the model's inputs and outputs (its control inputs and states
/// must be the model's, of their types); `None` without one.
pub fn sequence_of(c: &ModelConfig, model: &Signature) -> Result<Option<SequenceSpec>, String> {
    use serving_proto::pb::inference::model_sequence_batching::StrategyChoice;
    use serving_proto::pb::inference::model_sequence_batching::control::Kind as ControlKindPb;
    use serving_proto::pb::inference::model_sequence_batching::initial_state::StateData;
    let Some(SchedulingChoice::SequenceBatching(sb)) = &c.scheduling_choice else {
        return Ok(None);
    };
    let delay_us = |field: &str, us: u64| at_most(field, us, MAX_DELAY_US).map(|()| us);
    if sb.iterative_sequence {
        return Err("sequence_batching.iterative_sequence is not supported: a model that reschedules its own requests needs a backend API this server does not offer".into());
    }
    let strategy = match &sb.strategy_choice {
        None => Strategy::Direct {
            max_delay: Duration::ZERO,
            min_utilization: 0.0,
        },
        Some(StrategyChoice::Direct(d)) => {
            if !(0.0..=1.0).contains(&d.minimum_slot_utilization) {
                return Err(format!(
                    "sequence_batching.direct.minimum_slot_utilization is {}: a share from 0 to 1",
                    d.minimum_slot_utilization
                ));
            }
            Strategy::Direct {
                max_delay: Duration::from_micros(delay_us(
                    "sequence_batching.direct.max_queue_delay_microseconds",
                    d.max_queue_delay_microseconds,
                )?),
                min_utilization: d.minimum_slot_utilization,
            }
        }
        Some(StrategyChoice::Oldest(o)) => {
            let candidates = match o.max_candidate_sequences {
                n if n < 0 => {
                    return Err(format!(
                        "sequence_batching.oldest.max_candidate_sequences is {n}: at least 1"
                    ));
                }
                0 => c.max_batch_size.max(1) as usize,
                n => {
                    let n = n as usize;
                    at_most(
                        "sequence_batching.oldest.max_candidate_sequences",
                        n,
                        MAX_BATCH_SIZE,
                    )?;
                    n
                }
            };
            Strategy::Oldest {
                max_candidates: candidates,
                max_delay: Duration::from_micros(delay_us(
                    "sequence_batching.oldest.max_queue_delay_microseconds",
                    o.max_queue_delay_microseconds,
                )?),
                preferred: o
                    .preferred_batch_size
                    .iter()
                    .map(|&p| p.max(1) as usize)
                    .collect(),
            }
        }
    };
    let input_of = |name: &str, what: &str| {
        model.inputs.iter().find(|d| d.name == name).ok_or_else(|| {
            format!(
                "sequence_batching {what} '{name}' is not an input of the model (its inputs: {})",
                names(&model.inputs)
            )
        })
    };
    let mut controls = Vec::new();
    for ci in &sb.control_input {
        let input = input_of(&ci.name, "control input")?;
        if ci.control.len() != 1 {
            return Err(format!(
                "sequence_batching control input '{}' has {} controls: give each input exactly one",
                ci.name,
                ci.control.len()
            ));
        }
        let ctl = &ci.control[0];
        let kind = match ControlKindPb::try_from(ctl.kind) {
            Ok(ControlKindPb::ControlSequenceStart) => ControlKind::Start,
            Ok(ControlKindPb::ControlSequenceEnd) => ControlKind::End,
            Ok(ControlKindPb::ControlSequenceReady) => ControlKind::Ready,
            Ok(ControlKindPb::ControlSequenceCorrid) => ControlKind::CorrId,
            Err(_) => {
                return Err(format!(
                    "sequence_batching control input '{}' has an unknown kind {}",
                    ci.name, ctl.kind
                ));
            }
        };
        let pair = |what: &str, n: usize| {
            if n == 2 {
                Ok(())
            } else {
                Err(format!(
                    "sequence_batching control input '{}': {what} must hold two values, false then true",
                    ci.name
                ))
            }
        };
        let (value, dtype) = if kind == ControlKind::CorrId {
            let dtype = TritonType::try_from(ctl.data_type)
                .ok()
                .and_then(serving_proto::model_config::data_type)
                .filter(|t| {
                    matches!(
                        t,
                        serving_proto::DataType::Uint64
                            | serving_proto::DataType::Int64
                            | serving_proto::DataType::Uint32
                            | serving_proto::DataType::Int32
                            | serving_proto::DataType::Bytes
                    )
                })
                .ok_or_else(|| {
                    format!(
                        "sequence_batching control input '{}' (CONTROL_SEQUENCE_CORRID) needs data_type TYPE_UINT64, TYPE_INT64, TYPE_UINT32, TYPE_INT32 or TYPE_STRING",
                        ci.name
                    )
                })?;
            (ControlValue::CorrId(dtype), dtype)
        } else {
            let given = [
                !ctl.int32_false_true.is_empty(),
                !ctl.fp32_false_true.is_empty(),
                !ctl.bool_false_true.is_empty(),
            ];
            if given.iter().filter(|&&g| g).count() != 1 {
                return Err(format!(
                    "sequence_batching control input '{}' must give exactly one of int32_false_true, fp32_false_true and bool_false_true",
                    ci.name
                ));
            }
            if given[0] {
                pair("int32_false_true", ctl.int32_false_true.len())?;
                let v = &ctl.int32_false_true;
                (
                    ControlValue::Int32([v[0], v[1]]),
                    serving_proto::DataType::Int32,
                )
            } else if given[1] {
                pair("fp32_false_true", ctl.fp32_false_true.len())?;
                let v = &ctl.fp32_false_true;
                (
                    ControlValue::Fp32([v[0], v[1]]),
                    serving_proto::DataType::Fp32,
                )
            } else {
                pair("bool_false_true", ctl.bool_false_true.len())?;
                let v = &ctl.bool_false_true;
                (
                    ControlValue::Bool([v[0], v[1]]),
                    serving_proto::DataType::Bool,
                )
            }
        };
        if input
            .dtype
            .is_some_and(|t| t != dtype && !(t.is_variable() && dtype.is_variable()))
        {
            return Err(format!(
                "sequence_batching control input '{}' carries {dtype}, but the model's input is {}",
                ci.name,
                input.dtype.map_or("untyped".into(), |t| t.to_string())
            ));
        }
        controls.push(Control {
            input: ci.name.clone(),
            kind,
            value,
        });
    }
    let mut states = Vec::new();
    for st in &sb.state {
        let input = input_of(&st.input_name, "state input")?;
        if !model.outputs.iter().any(|d| d.name == st.output_name) {
            return Err(format!(
                "sequence_batching state output '{}' is not an output of the model (its outputs: {})",
                st.output_name,
                names(&model.outputs)
            ));
        }
        let dtype = TritonType::try_from(st.data_type)
            .ok()
            .and_then(serving_proto::model_config::data_type)
            .ok_or_else(|| {
                format!(
                    "sequence_batching state '{}' has no data_type",
                    st.input_name
                )
            })?;
        if input.dtype.is_some_and(|t| t != dtype) {
            return Err(format!(
                "sequence_batching state '{}' is {dtype}, but the model's input is {}",
                st.input_name,
                input.dtype.map_or("untyped".into(), |t| t.to_string())
            ));
        }
        check_dims(
            &format!("sequence_batching state '{}' dims", st.input_name),
            &st.dims,
        )?;
        for init in &st.initial_state {
            if let Some(StateData::DataFile(f)) = &init.state_data {
                return Err(format!(
                    "sequence_batching state '{}': initial_state data_file \"{f}\" is not supported; zero_data is",
                    st.input_name
                ));
            }
        }
        if st.use_growable_memory {
            return Err(format!(
                "sequence_batching state '{}': use_growable_memory is a TensorRT option this server does not have",
                st.input_name
            ));
        }
        states.push(StateSpec {
            input: st.input_name.clone(),
            output: st.output_name.clone(),
            dtype,
            dims: st.dims.clone(),
        });
    }
    Ok(Some(SequenceSpec {
        strategy,
        idle: match sb.max_sequence_idle_microseconds {
            0 => DEFAULT_IDLE,
            us => Duration::from_micros(delay_us(
                "sequence_batching.max_sequence_idle_microseconds",
                us,
            )?),
        },
        controls,
        states,
    }))
}

fn ignored(config: &ModelConfig) -> Vec<String> {
    let mut out = Vec::new();
    let mut note = |present: bool, field: &str| {
        if present {
            out.push(field.to_owned());
        }
    };
    note(config.optimization.is_some(), "optimization");
    note(config.model_metrics.is_some(), "model_metrics");
    note(!config.metric_tags.is_empty(), "metric_tags");
    for (i, g) in config.instance_group.iter().enumerate() {
        note(
            g.rate_limiter.is_some(),
            &format!("instance_group[{i}].rate_limiter"),
        );
        note(
            !g.host_policy.is_empty(),
            &format!("instance_group[{i}].host_policy"),
        );
    }
    if let Some(SchedulingChoice::DynamicBatching(d)) = &config.scheduling_choice {
        note(d.preserve_ordering, "dynamic_batching.preserve_ordering");
    }
    if let Some(SchedulingChoice::SequenceBatching(sb)) = &config.scheduling_choice {
        use serving_proto::pb::inference::model_sequence_batching::StrategyChoice;
        if let Some(StrategyChoice::Oldest(o)) = &sb.strategy_choice {
            note(
                o.preserve_ordering,
                "sequence_batching.oldest.preserve_ordering",
            );
        }
    }
    for key in config.parameters.keys().filter(|k| *k != THREADS) {
        out.push(format!("parameters[\"{key}\"]"));
    }
    out
}

fn declared_type(d: &Declared) -> Option<i32> {
    d.dtype.map(|t| triton_type(t) as i32)
}

/// The config dims of a declared tensor (without the batch dimension when
/// batching).
fn dims_of(d: &Declared, batching: bool) -> Vec<i64> {
    if batching {
        d.dims.get(1..).unwrap_or_default().to_vec()
    } else {
        d.dims.clone()
    }
}

/// Compares a configured tensor with the model's: type, rank, fixed
/// dimensions.
fn agree(
    what: &str,
    name: &str,
    data_type: i32,
    shape: &[i64],
    model: &Declared,
    batching: bool,
    file: &str,
) -> Result<(), String> {
    let model_type = declared_type(model);
    if model_type != Some(data_type) {
        return Err(format!(
            "{what} '{name}' is {} in config.pbtxt but {} in {file}",
            type_name(data_type),
            model_type.map_or_else(|| "a type the protocols cannot carry".into(), type_name)
        ));
    }
    let expected = dims_of(model, batching);
    let rank_ok = model.dims.len() == shape.len() + usize::from(batching);
    let dims_ok = rank_ok
        && expected
            .iter()
            .zip(shape)
            .all(|(&m, &c)| m < 0 || c < 0 || m == c);
    if !dims_ok {
        return Err(format!(
            "{what} '{name}' has dims {shape:?} in config.pbtxt{} but shape {:?} in {file}",
            if batching {
                " (after the batch dimension)"
            } else {
                ""
            },
            model.dims
        ));
    }
    if batching && model.dims.first().is_some_and(|&d| d >= 0) {
        return Err(format!(
            "{what} '{name}': max_batch_size > 0 needs a dynamic first dimension, but {file} fixes it at {:?}",
            model.dims[0]
        ));
    }
    Ok(())
}

fn devices(groups: &[ModelInstanceGroup], defaults: &[Device]) -> Vec<Device> {
    let mut out = Vec::new();
    for g in groups {
        let count = if g.count == 0 { 1 } else { g.count as usize };
        let gpus: Vec<Device> = if g.gpus.is_empty() {
            let cuda: Vec<Device> = defaults
                .iter()
                .copied()
                .filter(|d| matches!(d, Device::Cuda(_)))
                .collect();
            if cuda.is_empty() {
                vec![Device::Cuda(0)]
            } else {
                cuda
            }
        } else {
            g.gpus.iter().map(|&id| Device::Cuda(id)).collect()
        };
        let each: Vec<Device> = match Kind::try_from(g.kind).unwrap_or(Kind::Auto) {
            Kind::Cpu => vec![Device::Cpu],
            Kind::Gpu => gpus,
            _ if !g.gpus.is_empty() => gpus,
            _ => defaults.to_vec(),
        };
        for device in each {
            out.extend(std::iter::repeat_n(device, count));
        }
    }
    out
}

/// How a request's own `timeout` counts under a Triton queue policy.
fn request_timeouts(q: Option<&ModelQueuePolicy>) -> RequestTimeouts {
    match q {
        None => RequestTimeouts::Override,
        Some(q) if q.allow_timeout_override => RequestTimeouts::Shorten,
        Some(_) => RequestTimeouts::Ignore,
    }
}

/// What a Triton queue policy does with a job past its queue timeout.
fn timeout_action(q: Option<&ModelQueuePolicy>) -> EngineTimeoutAction {
    match q.map(|q| TimeoutAction::try_from(q.timeout_action)) {
        Some(Ok(TimeoutAction::Delay)) => EngineTimeoutAction::Delay,
        _ => EngineTimeoutAction::Reject,
    }
}

/// A queue policy as Triton writes it.
fn queue_policy_of(
    default_timeout: Option<Duration>,
    request_timeouts: RequestTimeouts,
    action: EngineTimeoutAction,
    max_queue_size: Option<usize>,
) -> ModelQueuePolicy {
    ModelQueuePolicy {
        timeout_action: match action {
            EngineTimeoutAction::Delay => TimeoutAction::Delay as i32,
            _ => TimeoutAction::Reject as i32,
        },
        default_timeout_microseconds: default_timeout.map_or(0, |t| t.as_micros() as u64),
        allow_timeout_override: request_timeouts != RequestTimeouts::Ignore,
        max_queue_size: max_queue_size.map_or(0, |n| u32::try_from(n).unwrap_or(u32::MAX)),
    }
}

/// The instance groups of the devices, for the completed configuration.
pub fn groups_of(model: &str, devices: &[Device]) -> Vec<ModelInstanceGroup> {
    let mut by: BTreeMap<Option<i32>, i32> = BTreeMap::new();
    for d in devices {
        let key = match d {
            Device::Cuda(id) => Some(*id),
            _ => None,
        };
        *by.entry(key).or_default() += 1;
    }
    // Named as Triton names groups it completes: the model's name for one,
    // `<model>_<i>` for several.
    let several = by.len() > 1;
    by.into_iter()
        .enumerate()
        .map(|(i, (gpu, count))| ModelInstanceGroup {
            name: if several {
                format!("{model}_{i}")
            } else {
                model.to_owned()
            },
            kind: if gpu.is_some() { Kind::Gpu } else { Kind::Cpu } as i32,
            count,
            gpus: gpu.into_iter().collect(),
            ..Default::default()
        })
        .collect()
}

/// Translates a Triton model (its configuration if it has one, the ONNX
/// model's signature) into what the engine runs, completing the
/// configuration as Triton does.
pub fn translate(
    directory: &str,
    file_config: Option<&ModelConfig>,
    model: &Signature,
    defaults: &Defaults,
) -> Result<Translated, String> {
    let mut c = file_config.cloned().unwrap_or_default();
    check(&c, directory)?;
    let file = model_file(file_config).to_owned();
    c.name = directory.to_owned();
    if c.platform.is_empty() && c.backend.is_empty() {
        c.platform = PLATFORM.to_owned();
        c.backend = BACKEND.to_owned();
    }
    // Without any tensors configured, everything is completed from the
    // model, batching included.
    let complete = c.input.is_empty() && c.output.is_empty();
    if complete && c.max_batch_size == 0 {
        let all_dynamic = model
            .inputs
            .iter()
            .chain(&model.outputs)
            .all(|d| d.dims.first().is_some_and(|&n| n < 0));
        if all_dynamic && defaults.max_batch_size > 0 && !model.inputs.is_empty() {
            c.max_batch_size = defaults.max_batch_size as i32;
            if c.scheduling_choice.is_none() {
                c.scheduling_choice = Some(SchedulingChoice::DynamicBatching(
                    ModelDynamicBatching::default(),
                ));
            }
        }
    }
    let batching = c.max_batch_size > 0;
    let sequence = sequence_of(&c, model)?;
    // Model inputs and outputs the server feeds and keeps itself (a
    // sequence model's controls and states) are not the client's.
    let internal_input = |name: &str| sequence.as_ref().is_some_and(|s| s.feeds(name));
    let internal_output = |name: &str| {
        sequence
            .as_ref()
            .is_some_and(|s| s.states.iter().any(|st| st.output == name))
    };
    let carryable = |d: &Declared, what: &str| {
        d.dtype.ok_or_else(|| {
            format!(
                "{file} {what} '{}' has an element type neither protocol carries",
                d.name
            )
        })
    };
    if c.input.is_empty() {
        for d in model.inputs.iter().filter(|d| !internal_input(&d.name)) {
            c.input.push(ModelInput {
                name: d.name.clone(),
                data_type: triton_type(carryable(d, "input")?) as i32,
                dims: dims_of(d, batching),
                ..Default::default()
            });
        }
    }
    if c.output.is_empty() {
        for d in model.outputs.iter().filter(|d| !internal_output(&d.name)) {
            c.output.push(ModelOutput {
                name: d.name.clone(),
                data_type: triton_type(carryable(d, "output")?) as i32,
                dims: dims_of(d, batching),
                ..Default::default()
            });
        }
    }
    let mut reshape = BTreeMap::new();
    let mut optional = BTreeSet::new();
    for i in &c.input {
        let Some(m) = model.inputs.iter().find(|d| d.name == i.name) else {
            return Err(format!(
                "input '{}' of config.pbtxt is not an input of {file} (its inputs: {})",
                i.name,
                names(&model.inputs)
            ));
        };
        let model_shape = i.reshape.as_ref().map_or(&i.dims, |r| &r.shape);
        agree(
            "input",
            &i.name,
            i.data_type,
            model_shape,
            m,
            batching,
            &file,
        )?;
        if i.reshape.is_some() || i.dims != dims_of(m, batching) {
            reshape.insert(i.name.clone(), i.dims.clone());
        }
        if i.optional {
            optional.insert(i.name.clone());
        }
    }
    if let Some(m) = model
        .inputs
        .iter()
        .find(|d| !internal_input(&d.name) && !c.input.iter().any(|i| i.name == d.name))
    {
        return Err(format!(
            "input '{}' of {file} is missing from config.pbtxt (its inputs: {})",
            m.name,
            names(&model.inputs)
        ));
    }
    for o in &c.output {
        let Some(m) = model.outputs.iter().find(|d| d.name == o.name) else {
            return Err(format!(
                "output '{}' of config.pbtxt is not an output of {file} (its outputs: {})",
                o.name,
                names(&model.outputs)
            ));
        };
        let model_shape = o.reshape.as_ref().map_or(&o.dims, |r| &r.shape);
        agree(
            "output",
            &o.name,
            o.data_type,
            model_shape,
            m,
            batching,
            &file,
        )?;
        if o.reshape.is_some() || o.dims != dims_of(m, batching) {
            reshape.insert(o.name.clone(), o.dims.clone());
        }
    }
    let dynamic = c.scheduling_choice.as_ref().and_then(|s| match s {
        SchedulingChoice::DynamicBatching(d) => Some(d.clone()),
        _ => None,
    });
    let queue_policy: Option<&ModelQueuePolicy> = dynamic
        .as_ref()
        .and_then(|d| d.default_queue_policy.as_ref());
    let levels = dynamic
        .as_ref()
        .map_or(0, |d| d.priority_levels)
        .clamp(1, u64::from(u32::MAX)) as u32;
    let default_priority = match dynamic.as_ref().map_or(0, |d| d.default_priority_level) {
        0 => levels,
        p => u32::try_from(p).unwrap_or(u32::MAX),
    };
    let queue = QueuePolicy {
        limit: queue_policy
            .map(|q| q.max_queue_size as usize)
            .filter(|&n| n > 0),
        priority_levels: levels,
        default_priority,
        default_timeout: queue_policy
            .map(|q| q.default_timeout_microseconds)
            .filter(|&us| us > 0)
            .map(Duration::from_micros),
        // Without dynamic batching Triton has no queue policy, and a
        // request's own `timeout` is not applied.
        request_timeouts: if dynamic.is_some() {
            request_timeouts(queue_policy)
        } else {
            RequestTimeouts::Ignore
        },
        timeout_action: timeout_action(queue_policy),
        levels: dynamic
            .as_ref()
            .map(|d| {
                d.priority_queue_policy
                    .iter()
                    .map(|(&level, q)| {
                        let policy = LevelPolicy {
                            default_timeout: Some(q.default_timeout_microseconds)
                                .filter(|&us| us > 0)
                                .map(Duration::from_micros),
                            request_timeouts: request_timeouts(Some(q)),
                            timeout_action: timeout_action(Some(q)),
                            max_queued: Some(q.max_queue_size as usize).filter(|&n| n > 0),
                        };
                        (u32::try_from(level).unwrap_or(u32::MAX), policy)
                    })
                    .collect()
            })
            .unwrap_or_default(),
    };
    queue
        .check()
        .map_err(|e| format!("dynamic_batching: {e}"))?;
    let intra_op_threads = intra_op_threads(&c)?;
    let devices = devices(&c.instance_group, &defaults.devices);
    if !devices.is_empty() {
        c.instance_group = groups_of(&c.name, &devices);
    }
    for (what, declared) in [("input", &model.inputs), ("output", &model.outputs)] {
        for d in declared {
            check_dims(&format!("{file} {what} '{}' shape", d.name), &d.dims)?;
        }
    }
    let mut model_spec = ModelSpec::onnx("model", file.clone(), batching);
    if c.backend == PYTHON_BACKEND {
        // Where its model.py is and its configuration are the
        // repository's to add.
        model_spec.backend = PYTHON_BACKEND.into();
    }
    let spec = ServableSpec {
        models: vec![model_spec],
        methods: vec![MethodSpec {
            name: METHOD.into(),
            inputs: c.input.iter().map(|i| i.name.clone()).collect(),
            outputs: c.output.iter().map(|o| o.name.clone()).collect(),
            stages: vec![StageSpec {
                model: "model".into(),
                inputs: model.inputs.iter().map(|d| d.name.clone()).collect(),
                outputs: model.outputs.iter().map(|d| d.name.clone()).collect(),
            }],
            reshape,
            optional,
            // Read from the model directory by the repository.
            labels: BTreeMap::new(),
            output_sources: BTreeMap::new(),
        }],
        deployment: Deployment {
            devices,
            intra_op_threads,
            batching: Batching {
                join: dynamic.is_some(),
                max_batch_size: batching.then_some(c.max_batch_size as usize),
                preferred_batch_sizes: dynamic
                    .as_ref()
                    .map(|d| d.preferred_batch_size.iter().map(|&p| p as usize).collect())
                    .unwrap_or_default(),
                max_delay: Duration::from_micros(
                    dynamic
                        .as_ref()
                        .map_or(0, |d| d.max_queue_delay_microseconds),
                ),
            },
            queue,
            // Never for a decoupled model (its answers are its responses)
            // nor a sequence model (its answers depend on the sequence).
            response_cache: c.response_cache.as_ref().is_some_and(|r| r.enable)
                && sequence.is_none()
                && !c
                    .model_transaction_policy
                    .as_ref()
                    .is_some_and(|p| p.decoupled),
            sequence,
        },
    };
    spec.deployment
        .check_bounds("instance_group", &format!("parameters[\"{THREADS}\"]"))?;
    let ignored = ignored(&c);
    complete_as_triton(&mut c, &file);
    Ok(Translated {
        ignored,
        spec,
        config: c,
    })
}

/// The fields Triton 2.51 fills in a configuration it serves, filled the
/// same way, so that the configuration endpoint answers as Triton's: the
/// ONNX Runtime backend beside its platform, the model file's name, the
/// version policy (the latest one), and the dynamic batcher's preferred
/// size (the largest batch, which changes nothing: a full batch runs at
/// once anyway). Pinned-memory `optimization`, which Triton fills too,
/// has no meaning on this server and is left out.
fn complete_as_triton(c: &mut ModelConfig, file: &str) {
    if c.backend.is_empty() && c.platform == PLATFORM {
        c.backend = BACKEND.to_owned();
    }
    if c.default_model_filename.is_empty() {
        c.default_model_filename = file.to_owned();
    }
    if c.version_policy.is_none() {
        c.version_policy = Some(ModelVersionPolicy {
            policy_choice: Some(PolicyChoice::Latest(
                serving_proto::pb::inference::model_version_policy::Latest { num_versions: 1 },
            )),
        });
    }
    if let Some(SchedulingChoice::DynamicBatching(d)) = &mut c.scheduling_choice
        && d.preferred_batch_size.is_empty()
        && c.max_batch_size > 0
    {
        d.preferred_batch_size = vec![c.max_batch_size];
    }
}

/// An ensemble's configuration completed as Triton 2.51 completes it: the
/// version policy (the latest one) and an empty transaction policy, which
/// clients such as perf_analyzer read.
pub fn complete_ensemble(c: &mut ModelConfig) {
    if c.version_policy.is_none() {
        c.version_policy = Some(ModelVersionPolicy {
            policy_choice: Some(PolicyChoice::Latest(
                serving_proto::pb::inference::model_version_policy::Latest { num_versions: 1 },
            )),
        });
    }
    if c.model_transaction_policy.is_none() {
        c.model_transaction_policy = Some(Default::default());
    }
}

/// The Triton configuration equivalent to one method of a servable that
/// has none of its own (a `servable.toml` servable, or the demo): its
/// inputs and outputs (row shapes when it batches), `max_batch_size`, the
/// dynamic batcher and queue policy of its deployment, and an instance
/// group per device of its replicas.
pub fn config_of(
    name: &str,
    method: &MethodInfo,
    deployment: &Deployment,
    devices: &[Device],
) -> ModelConfig {
    let dims = |shape: &[i64]| -> Vec<i64> {
        if method.batched {
            shape.get(1..).unwrap_or_default().to_vec()
        } else {
            shape.to_vec()
        }
    };
    let queue = &deployment.queue;
    let dynamic = (method.batched && deployment.batching.join).then(|| ModelDynamicBatching {
        preferred_batch_size: deployment
            .batching
            .preferred_batch_sizes
            .iter()
            .map(|&p| i32::try_from(p).unwrap_or(i32::MAX))
            .collect(),
        max_queue_delay_microseconds: deployment.batching.max_delay.as_micros() as u64,
        priority_levels: if queue.priority_levels > 1 {
            u64::from(queue.priority_levels)
        } else {
            0
        },
        default_priority_level: if queue.priority_levels > 1 {
            u64::from(queue.default_priority)
        } else {
            0
        },
        default_queue_policy: Some(queue_policy_of(
            queue.default_timeout,
            queue.request_timeouts,
            queue.timeout_action,
            queue.limit,
        )),
        priority_queue_policy: queue
            .levels
            .iter()
            .map(|(&level, p)| {
                let policy = queue_policy_of(
                    p.default_timeout,
                    p.request_timeouts,
                    p.timeout_action,
                    p.max_queued,
                );
                (u64::from(level), policy)
            })
            .collect(),
        ..Default::default()
    });
    ModelConfig {
        name: name.to_owned(),
        platform: PLATFORM.to_owned(),
        backend: BACKEND.to_owned(),
        max_batch_size: if method.batched {
            i32::try_from(method.max_batch_size).unwrap_or(i32::MAX)
        } else {
            0
        },
        input: method
            .inputs
            .iter()
            .map(|i| ModelInput {
                name: i.name.clone(),
                data_type: typed(i.untyped, i.dtype),
                dims: if i.untyped { vec![-1] } else { dims(&i.shape) },
                optional: i.optional,
                ..Default::default()
            })
            .collect(),
        output: method
            .outputs
            .iter()
            .map(|o| ModelOutput {
                name: o.name.clone(),
                data_type: typed(o.untyped, o.dtype),
                dims: if o.untyped { vec![-1] } else { dims(&o.shape) },
                ..Default::default()
            })
            .collect(),
        scheduling_choice: dynamic.map(SchedulingChoice::DynamicBatching),
        instance_group: groups_of(name, devices),
        ..Default::default()
    }
}

/// The `data_type` of an input or output: `TYPE_INVALID` where any type
/// goes (a Python function's argument or result).
fn typed(untyped: bool, dtype: serving_proto::DataType) -> i32 {
    if untyped {
        TritonType::TypeInvalid as i32
    } else {
        triton_type(dtype) as i32
    }
}

fn names(d: &[Declared]) -> String {
    d.iter()
        .map(|d| d.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// A description of a model's inputs and outputs, for a user writing its
/// configuration.
pub fn describe(model: &Signature) -> String {
    let tensors = |ds: &[Declared]| {
        ds.iter()
            .map(|d| {
                format!(
                    "{} {} {:?}",
                    d.name,
                    d.dtype
                        .map_or("(unsupported type)", |t| triton_type(t).as_str_name()),
                    d.dims
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        "inputs: {}; outputs: {}",
        tensors(&model.inputs),
        tensors(&model.outputs)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serving_proto::DataType;
    use serving_proto::model_config::parse_text;

    fn sig(inputs: &[(&str, DataType, &[i64])], outputs: &[(&str, DataType, &[i64])]) -> Signature {
        let d = |v: &[(&str, DataType, &[i64])]| {
            v.iter()
                .map(|(n, t, dims)| Declared {
                    name: (*n).into(),
                    dtype: Some(*t),
                    dims: dims.to_vec(),
                })
                .collect()
        };
        Signature {
            inputs: d(inputs),
            outputs: d(outputs),
        }
    }

    fn defaults() -> Defaults {
        Defaults {
            max_batch_size: 4,
            devices: vec![Device::Cpu],
        }
    }

    #[test]
    fn a_model_without_configuration_is_completed() {
        let dynamic = sig(
            &[("x", DataType::Fp32, &[-1, 3])],
            &[("y", DataType::Fp32, &[-1, 3])],
        );
        let t = translate("m", None, &dynamic, &defaults()).unwrap();
        assert_eq!(t.config.max_batch_size, 4);
        assert!(matches!(
            t.config.scheduling_choice,
            Some(SchedulingChoice::DynamicBatching(_))
        ));
        assert_eq!(t.config.input[0].dims, vec![3]);
        assert_eq!(t.config.platform, PLATFORM);
        assert!(t.spec.deployment.batching.join);
        assert!(t.spec.models[0].batched);
        let fixed = sig(
            &[("x", DataType::Fp32, &[1, 3])],
            &[("y", DataType::Fp32, &[-1, 3])],
        );
        let t = translate("m", None, &fixed, &defaults()).unwrap();
        assert_eq!(t.config.max_batch_size, 0);
        assert_eq!(t.config.input[0].dims, vec![1, 3]);
        assert!(!t.spec.models[0].batched);
    }

    #[test]
    fn configurations_that_contradict_the_model_name_both() {
        let model = sig(
            &[("x", DataType::Fp32, &[-1, 3])],
            &[("y", DataType::Fp32, &[-1, 3])],
        );
        let e = |text: &str| {
            translate("m", Some(&parse_text(text).unwrap()), &model, &defaults()).unwrap_err()
        };
        assert_eq!(
            e("name: \"other\""),
            "name \"other\" does not match the model directory 'm'"
        );
        assert_eq!(
            e("max_batch_size: 2 input [ { name: \"x\" data_type: TYPE_INT32 dims: [ 3 ] } ]"),
            "input 'x' is TYPE_INT32 in config.pbtxt but TYPE_FP32 in model.onnx"
        );
        assert_eq!(
            e("max_batch_size: 2 input [ { name: \"x\" data_type: TYPE_FP32 dims: [ 3, 1 ] } ]"),
            "input 'x' has dims [3, 1] in config.pbtxt (after the batch dimension) but shape [-1, 3] in model.onnx"
        );
        assert_eq!(
            e("input [ { name: \"z\" data_type: TYPE_FP32 dims: [ 3 ] } ]"),
            "input 'z' of config.pbtxt is not an input of model.onnx (its inputs: x)"
        );
        assert!(
            e("platform: \"tensorrt_plan\"").contains("platform \"tensorrt_plan\" is not served")
        );
        assert_eq!(
            e(
                "dynamic_batching { priority_levels: 2 priority_queue_policy { key: 3 value: { } } }"
            ),
            "dynamic_batching: priority_queue_policy names level 3, outside the priority levels 1..=2"
        );
    }

    #[test]
    fn a_request_timeout_counts_only_with_dynamic_batching_as_in_triton() {
        let model = sig(
            &[("x", DataType::Fp32, &[-1, 3])],
            &[("y", DataType::Fp32, &[-1, 3])],
        );
        let timeouts = |text: &str| {
            let c = parse_text(text).unwrap();
            translate("m", Some(&c), &model, &defaults())
                .unwrap()
                .spec
                .deployment
                .queue
                .request_timeouts
        };
        assert_eq!(timeouts("max_batch_size: 8"), RequestTimeouts::Ignore);
        assert_eq!(
            timeouts("max_batch_size: 8 dynamic_batching { }"),
            RequestTimeouts::Override
        );
    }

    #[test]
    fn deployment_fields_map_onto_the_engine() {
        let model = sig(
            &[("x", DataType::Fp32, &[-1, 3])],
            &[("y", DataType::Fp32, &[-1, 3])],
        );
        let c = parse_text(
            r#"max_batch_size: 8
input [ { name: "x" data_type: TYPE_FP32 dims: [ 3 ] } ]
output [ { name: "y" data_type: TYPE_FP32 dims: [ 3 ] } ]
dynamic_batching {
  preferred_batch_size: [ 4 ] max_queue_delay_microseconds: 250
  priority_levels: 3 default_priority_level: 2
  default_queue_policy { default_timeout_microseconds: 1000 allow_timeout_override: true max_queue_size: 7 }
}
instance_group [ { count: 2 kind: KIND_GPU gpus: [ 0, 1 ] }, { count: 1 kind: KIND_CPU } ]
parameters { key: "intra_op_thread_count" value: { string_value: "3" } }
optimization { graph { level: 1 } }
"#,
        )
        .unwrap();
        let t = translate("m", Some(&c), &model, &defaults()).unwrap();
        let d = &t.spec.deployment;
        assert_eq!(
            d.devices,
            vec![
                Device::Cuda(0),
                Device::Cuda(0),
                Device::Cuda(1),
                Device::Cuda(1),
                Device::Cpu
            ]
        );
        assert_eq!(d.intra_op_threads, Some(3));
        assert_eq!(d.batching.max_batch_size, Some(8));
        assert_eq!(d.batching.preferred_batch_sizes, vec![4]);
        assert_eq!(d.batching.max_delay, Duration::from_micros(250));
        assert_eq!(d.queue.priority_levels, 3);
        assert_eq!(d.queue.default_priority, 2);
        assert_eq!(d.queue.limit, Some(7));
        assert_eq!(d.queue.request_timeouts, RequestTimeouts::Shorten);
        assert_eq!(d.queue.timeout_action, EngineTimeoutAction::Reject);
        assert_eq!(t.ignored, vec!["optimization".to_string()]);
        // Per-level policies, DELAY, KIND_MODEL (the devices the server
        // was given), as Triton serves them; the completed configuration
        // says them back.
        let c = parse_text(
            r#"max_batch_size: 8
dynamic_batching {
  priority_levels: 2
  default_queue_policy { timeout_action: DELAY default_timeout_microseconds: 500 }
  priority_queue_policy { key: 1 value: { default_timeout_microseconds: 9 max_queue_size: 4 } }
}
instance_group [ { count: 2 kind: KIND_MODEL } ]
"#,
        )
        .unwrap();
        let t = translate("m", Some(&c), &model, &defaults()).unwrap();
        let q = &t.spec.deployment.queue;
        assert_eq!(q.timeout_action, EngineTimeoutAction::Delay);
        assert_eq!(q.level(2).timeout_action, EngineTimeoutAction::Delay);
        assert_eq!(q.level(2).default_timeout, Some(Duration::from_micros(500)));
        let one = q.level(1);
        assert_eq!(one.timeout_action, EngineTimeoutAction::Reject);
        assert_eq!(one.default_timeout, Some(Duration::from_micros(9)));
        assert_eq!(one.max_queued, Some(4));
        assert_eq!(t.spec.deployment.devices.len(), 2);
        let back = &t.config;
        let Some(SchedulingChoice::DynamicBatching(d)) = &back.scheduling_choice else {
            panic!("{back:?}");
        };
        assert_eq!(
            d.default_queue_policy.as_ref().unwrap().timeout_action,
            TimeoutAction::Delay as i32
        );
        assert_eq!(d.priority_queue_policy[&1].max_queue_size, 4);
        // Without dynamic_batching, requests run alone, up to 8 rows each.
        let alone = parse_text("max_batch_size: 8").unwrap();
        let t = translate("m", Some(&alone), &model, &defaults()).unwrap();
        assert!(!t.spec.deployment.batching.join);
    }

    #[test]
    fn the_configuration_is_completed_as_triton_completes_it() {
        let model = sig(
            &[("x", DataType::Fp32, &[-1, 3])],
            &[("y", DataType::Fp32, &[-1, 3])],
        );
        let c = parse_text("platform: \"onnxruntime_onnx\" max_batch_size: 8 dynamic_batching { }")
            .unwrap();
        let t = translate("m", Some(&c), &model, &defaults()).unwrap();
        let c = &t.config;
        assert_eq!(c.backend, "onnxruntime");
        assert_eq!(c.default_model_filename, "model.onnx");
        assert_eq!(
            c.version_policy,
            Some(ModelVersionPolicy {
                policy_choice: Some(PolicyChoice::Latest(
                    serving_proto::pb::inference::model_version_policy::Latest { num_versions: 1 }
                ))
            })
        );
        let Some(SchedulingChoice::DynamicBatching(d)) = &c.scheduling_choice else {
            panic!("{c:?}");
        };
        assert_eq!(d.preferred_batch_size, [8]);
        // The engine's batching is as configured: no preferred size.
        assert!(t.spec.deployment.batching.preferred_batch_sizes.is_empty());
        // Groups the server completes (the devices it serves on): the
        // model's name for one, `<model>_<i>` for several.
        assert_eq!(groups_of("m", &[Device::Cpu, Device::Cpu])[0].name, "m");
        let groups = groups_of("m", &[Device::Cpu, Device::Cuda(0)]);
        assert_eq!(
            groups.iter().map(|g| g.name.as_str()).collect::<Vec<_>>(),
            ["m_0", "m_1"]
        );
    }

    #[test]
    fn version_policies_select_versions() {
        let on_disk = [1, 2, 3, 5];
        let p = |text: &str| served(Some(&parse_text(text).unwrap()), &on_disk);
        assert_eq!(served(None, &on_disk), vec![5]);
        assert_eq!(
            p("version_policy { latest { num_versions: 2 } }"),
            vec![3, 5]
        );
        assert_eq!(p("version_policy { all {} }"), vec![1, 2, 3, 5]);
        assert_eq!(
            p("version_policy { specific { versions: [ 1, 3, 4 ] } }"),
            vec![1, 3]
        );
        assert_eq!(served(None, &[]), Vec::<u64>::new());
    }
}
