//! `servable.toml`: what a servable's methods compute and where it runs.
//!
//! ```toml
//! # Models, by name, each an .onnx file inside every version directory.
//! [[model]]
//! name = "add"
//! file = "add.onnx"
//! with_batch_dim = false      # MindSpore semantics: true = dim 0 is the batch
//!
//! # Methods: named inputs, a chain of model stages, named outputs.
//! [[method]]
//! name = "add_common"
//! inputs = ["x1", "x2"]
//! outputs = ["y"]
//!
//! [[method.stage]]
//! model = "add"
//! inputs = ["x1", "x2"]       # fed to the model's inputs, in order
//! outputs = ["y"]             # names for the model's outputs, in order
//!
//! [deployment]
//! devices = ["cpu", "cpu"]    # one replica each; empty = the --device flags
//! intra_op_threads = 1
//! max_batch_size = 8          # rows per run, across requests and protocols
//! batch_timeout_us = 500      # how long the oldest job waits for a batch to fill
//! preferred_batch_sizes = [4, 8]   # run at once when a batch reaches one
//! queue_limit = 10000         # requests queued or running
//! priority_levels = 2         # request priorities 1 (highest) ..= 2
//! default_priority_level = 2  # for requests that ask for none
//! default_queue_timeout_us = 100000   # refuse jobs queued longer, unrun
//! queue_timeout_action = "reject"     # or "delay": keep them, behind the rest
//!
//! # Warm-up samples, run before a version serves (Triton's model_warmup).
//! [[warmup]]
//! name = "zeros"
//! method = "add_common"       # default: the first method
//! batch_size = 1              # rows, for a method with a batch dimension
//! count = 2                   # runs (default 1)
//! inputs.x1 = { datatype = "FP32", dims = [2, 2], data = "zero" }     # or "random"
//! inputs.x2 = { datatype = "FP32", dims = [2, 2], file = "x2.bin" }   # warmup/x2.bin
//! ```

use std::collections::BTreeSet;

use serde::Deserialize;

use crate::engine::config::{
    Batching, Deployment, MAX_BATCH_SIZE, MAX_DELAY_US, MAX_QUEUE_LIMIT, MethodSpec, ModelSpec,
    QueuePolicy, ServableSpec, StageSpec, TimeoutAction, at_most, over,
};
use crate::runtime::device::Device;

/// The parsed `servable.toml`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ServableConfig {
    /// The models, by name.
    #[serde(default)]
    pub model: Vec<ModelConfig>,
    /// The methods.
    pub method: Vec<MethodConfig>,
    /// Where the replicas run.
    #[serde(default)]
    pub deployment: DeploymentConfig,
    /// Warm-up samples, run before a version serves.
    #[serde(default)]
    pub warmup: Vec<WarmupConfig>,
}

/// One warm-up sample (Triton's `model_warmup` entry).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WarmupConfig {
    /// Its name, in messages.
    pub name: String,
    /// The method it runs; default: the first.
    #[serde(default)]
    pub method: Option<String>,
    /// Rows, for a method with a batch dimension (default 1).
    #[serde(default)]
    pub batch_size: u32,
    /// Runs (default 1).
    #[serde(default)]
    pub count: u32,
    /// Each input of the method.
    pub inputs: std::collections::BTreeMap<String, WarmupInput>,
}

/// One input of a warm-up sample.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WarmupInput {
    /// Its Open Inference datatype (`FP32`, `INT64`, `BYTES`, ...).
    pub datatype: String,
    /// Its shape, without the batch dimension.
    pub dims: Vec<i64>,
    /// `"zero"` (the default) or `"random"`.
    #[serde(default)]
    pub data: Option<String>,
    /// A file of the servable's `warmup/` directory: one row's elements.
    #[serde(default)]
    pub file: Option<String>,
}

impl ServableConfig {
    /// The warm-up samples as Triton's `model_warmup` entries, with the
    /// method each runs (`None`: the first).
    pub fn warmup_samples(
        &self,
    ) -> Result<Vec<(Option<String>, serving_proto::pb::inference::ModelWarmup)>, String> {
        use serving_proto::pb::inference::model_warmup::{Input, input::InputDataType};
        let mut out = Vec::with_capacity(self.warmup.len());
        for w in &self.warmup {
            let mut inputs = std::collections::BTreeMap::new();
            for (name, i) in &w.inputs {
                let dtype = serving_proto::DataType::from_oip_name(&i.datatype).ok_or_else(|| {
                    format!(
                        "warmup '{}' input '{name}': datatype '{}' is not an Open Inference datatype",
                        w.name, i.datatype
                    )
                })?;
                let data = match (i.data.as_deref(), &i.file) {
                    (None, Some(f)) => InputDataType::InputDataFile(f.clone()),
                    (None | Some("zero"), None) => InputDataType::ZeroData(true),
                    (Some("random"), None) => InputDataType::RandomData(true),
                    (Some(other), None) => {
                        return Err(format!(
                            "warmup '{}' input '{name}': data '{other}' is not \"zero\" or \"random\"",
                            w.name
                        ));
                    }
                    (Some(_), Some(_)) => {
                        return Err(format!(
                            "warmup '{}' input '{name}': give data or file, not both",
                            w.name
                        ));
                    }
                };
                inputs.insert(
                    name.clone(),
                    Input {
                        data_type: serving_proto::model_config::triton_type(dtype) as i32,
                        dims: i.dims.clone(),
                        input_data_type: Some(data),
                    },
                );
            }
            out.push((
                w.method.clone(),
                serving_proto::pb::inference::ModelWarmup {
                    name: w.name.clone(),
                    batch_size: w.batch_size,
                    inputs,
                    count: w.count,
                },
            ));
        }
        Ok(out)
    }
}

/// One model of a servable.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// The name stages refer to.
    pub name: String,
    /// The `.onnx` file, relative to each version directory.
    pub file: String,
    /// Whether dim 0 of every input and output is the batch (MindSpore's
    /// `with_batch_dim`): instances are then checked by byte size per
    /// instance and batched together.
    #[serde(default)]
    pub with_batch_dim: bool,
}

/// One method of a servable.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MethodConfig {
    /// Method name.
    pub name: String,
    /// Input names.
    pub inputs: Vec<String>,
    /// Output names: method inputs or stage outputs.
    pub outputs: Vec<String>,
    /// The model stages, run in order.
    #[serde(default)]
    pub stage: Vec<StageConfig>,
}

/// One model call inside a method.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StageConfig {
    /// The model.
    pub model: String,
    /// Values fed to the model's inputs, in order: method inputs or outputs
    /// of earlier stages.
    pub inputs: Vec<String>,
    /// Names given to the model's outputs, in order.
    pub outputs: Vec<String>,
}

/// Where a servable's replicas run.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DeploymentConfig {
    /// One replica per entry (`cpu`, `cuda:0`, `cann:1`, ...); empty means
    /// the server's `--device` flags.
    #[serde(default)]
    pub devices: Vec<String>,
    /// ONNX Runtime intra-op threads per replica; absent = the cores split
    /// evenly between the replicas.
    pub intra_op_threads: Option<usize>,
    /// The most rows one run takes (default: the model's fixed batch, 64
    /// for a dynamic batch, 1 without a batch dimension).
    pub max_batch_size: Option<usize>,
    /// How long the oldest queued job waits for more rows to fill a batch,
    /// in microseconds (default 0: run what is queued).
    pub batch_timeout_us: Option<u64>,
    /// Batch sizes run as soon as they are reached (default none).
    #[serde(default)]
    pub preferred_batch_sizes: Vec<usize>,
    /// The most requests queued or running (default: the server's
    /// `--max-enqueued-requests`, 10000).
    pub queue_limit: Option<usize>,
    /// Priority levels of requests, 1 the highest (default 1).
    pub priority_levels: Option<u32>,
    /// The level of requests that ask for none (default: the lowest).
    pub default_priority_level: Option<u32>,
    /// How long a job may wait in the queue before it is refused unrun,
    /// in microseconds (default: no limit); a request's own `timeout`
    /// parameter takes precedence.
    pub default_queue_timeout_us: Option<u64>,
    /// What becomes of a job past its queue timeout: `"reject"` (refused
    /// unrun, the default) or `"delay"` (kept, behind the jobs of its level
    /// and the levels above whose timeout has not passed; Triton's
    /// `timeout_action: DELAY`).
    pub queue_timeout_action: Option<QueueTimeoutAction>,
}

/// `queue_timeout_action`.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum QueueTimeoutAction {
    /// Refuse the job unrun.
    Reject,
    /// Keep it, behind the jobs on time.
    Delay,
}

impl ServableConfig {
    /// Parses and checks the names and references of a configuration.
    pub fn parse(text: &str) -> Result<ServableConfig, String> {
        let config: ServableConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        config.check()?;
        Ok(config)
    }

    /// What the engine runs: the models, methods and deployment, checked.
    pub fn spec(&self) -> Result<ServableSpec, String> {
        let d = &self.deployment;
        if let Some(n) = d.max_batch_size {
            at_most("max_batch_size", n, MAX_BATCH_SIZE)?;
        }
        for (i, &p) in d.preferred_batch_sizes.iter().enumerate() {
            if p > MAX_BATCH_SIZE {
                return Err(over(
                    &format!("preferred_batch_sizes[{i}]"),
                    p,
                    MAX_BATCH_SIZE,
                ));
            }
        }
        if let Some(n) = d.queue_limit {
            at_most("queue_limit", n, MAX_QUEUE_LIMIT)?;
        }
        if let Some(us) = d.batch_timeout_us {
            at_most("batch_timeout_us", us, MAX_DELAY_US)?;
        }
        if let Some(us) = d.default_queue_timeout_us {
            at_most("default_queue_timeout_us", us, MAX_DELAY_US)?;
        }
        let levels = d.priority_levels.unwrap_or(1);
        let queue = QueuePolicy {
            limit: d.queue_limit,
            priority_levels: levels,
            default_priority: d.default_priority_level.unwrap_or(levels),
            default_timeout: d
                .default_queue_timeout_us
                .map(std::time::Duration::from_micros),
            timeout_action: match d.queue_timeout_action {
                Some(QueueTimeoutAction::Delay) => TimeoutAction::Delay,
                _ => TimeoutAction::Reject,
            },
            ..QueuePolicy::default()
        };
        queue.check()?;
        if let Some(&bad) = d.preferred_batch_sizes.iter().find(|&&p| p == 0) {
            return Err(format!(
                "preferred_batch_sizes holds {bad}; sizes are at least 1"
            ));
        }
        let spec = ServableSpec {
            models: self
                .model
                .iter()
                .map(|m| ModelSpec::onnx(&m.name, &m.file, m.with_batch_dim))
                .collect(),
            methods: self
                .method
                .iter()
                .map(|m| MethodSpec {
                    name: m.name.clone(),
                    inputs: m.inputs.clone(),
                    outputs: m.outputs.clone(),
                    stages: m
                        .stage
                        .iter()
                        .map(|s| StageSpec {
                            model: s.model.clone(),
                            inputs: s.inputs.clone(),
                            outputs: s.outputs.clone(),
                        })
                        .collect(),
                    ..MethodSpec::default()
                })
                .collect(),
            deployment: Deployment {
                devices: self.devices()?,
                intra_op_threads: d.intra_op_threads,
                batching: Batching {
                    max_batch_size: d.max_batch_size,
                    preferred_batch_sizes: d.preferred_batch_sizes.clone(),
                    max_delay: std::time::Duration::from_micros(d.batch_timeout_us.unwrap_or(0)),
                    ..Batching::default()
                },
                queue,
                response_cache: false,
                sequence: None,
            },
        };
        spec.deployment
            .check_bounds("devices", "intra_op_threads")?;
        Ok(spec)
    }

    /// The devices of the deployment, parsed.
    pub fn devices(&self) -> Result<Vec<Device>, String> {
        self.deployment
            .devices
            .iter()
            .map(|d| d.parse::<Device>().map_err(|e| e.to_string()))
            .collect()
    }

    fn check(&self) -> Result<(), String> {
        let mut models = BTreeSet::new();
        for m in &self.model {
            if !models.insert(m.name.as_str()) {
                return Err(format!("model '{}' is declared twice", m.name));
            }
            if !super::is_inside_path(&m.file) {
                return Err(format!(
                    "model '{}': file '{}' must be a path inside the version directory",
                    m.name, m.file
                ));
            }
        }
        if self.method.is_empty() {
            return Err("there is no [[method]]".into());
        }
        let mut methods = BTreeSet::new();
        for method in &self.method {
            let name = &method.name;
            if name.is_empty() || !methods.insert(name.as_str()) {
                return Err(format!("method '{name}' is empty or declared twice"));
            }
            let mut values = BTreeSet::new();
            for input in &method.inputs {
                if !values.insert(input.as_str()) {
                    return Err(format!("method '{name}': input '{input}' is listed twice"));
                }
            }
            for (i, stage) in method.stage.iter().enumerate() {
                let n = i + 1;
                if !models.contains(stage.model.as_str()) {
                    return Err(format!(
                        "method '{name}' stage {n}: model '{}' is not declared in [[model]]",
                        stage.model
                    ));
                }
                for input in &stage.inputs {
                    if !values.contains(input.as_str()) {
                        return Err(format!(
                            "method '{name}' stage {n}: input '{input}' is neither a method input nor an output of an earlier stage"
                        ));
                    }
                }
                for output in &stage.outputs {
                    if !values.insert(output.as_str()) {
                        return Err(format!(
                            "method '{name}' stage {n}: output '{output}' reuses a name already defined"
                        ));
                    }
                }
            }
            if method.outputs.is_empty() {
                return Err(format!("method '{name}' has no outputs"));
            }
            for output in &method.outputs {
                if !values.contains(output.as_str()) {
                    return Err(format!(
                        "method '{name}': output '{output}' is neither a method input nor a stage output"
                    ));
                }
            }
        }
        self.spec().map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[[model]]
name = "add"
file = "add.onnx"

[[method]]
name = "add_common"
inputs = ["x1", "x2"]
outputs = ["y"]

[[method.stage]]
model = "add"
inputs = ["x1", "x2"]
outputs = ["y"]

[deployment]
devices = ["cpu", "cpu"]
"#;

    #[test]
    fn parses_the_documented_example() {
        let c = ServableConfig::parse(GOOD).unwrap();
        assert_eq!(c.method[0].stage[0].model, "add");
        assert_eq!(c.devices().unwrap(), vec![Device::Cpu, Device::Cpu]);
    }

    #[test]
    fn bad_references_are_named() {
        let e = ServableConfig::parse(&GOOD.replace(
            "inputs = [\"x1\", \"x2\"]\noutputs = [\"y\"]\n\n[deployment]",
            "inputs = [\"x1\", \"x3\"]\noutputs = [\"y\"]\n\n[deployment]",
        ))
        .unwrap_err();
        assert_eq!(
            e,
            "method 'add_common' stage 1: input 'x3' is neither a method input nor an output of an earlier stage"
        );
        let e =
            ServableConfig::parse(&GOOD.replace("model = \"add\"", "model = \"sub\"")).unwrap_err();
        assert!(e.contains("model 'sub' is not declared"), "{e}");
        let e = ServableConfig::parse(&GOOD.replace("\"cpu\", \"cpu\"", "\"tpu:0\"")).unwrap_err();
        assert!(e.contains("invalid device 'tpu:0'"), "{e}");
        let e = ServableConfig::parse(
            &GOOD
                .replace("with_batch_dim", "x")
                .replace("file = ", "fil = "),
        )
        .unwrap_err();
        assert!(e.contains("unknown field"), "{e}");
    }
}
