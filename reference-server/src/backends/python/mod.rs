//! The Python backend: Triton Python-backend models (`model.py` with a
//! `TritonPythonModel`) and the Python stages of MindSpore methods (a
//! `servable_config.py`'s `register.add_stage(function, ...)`) run
//! unchanged, one worker process per model instance.
//!
//! A worker is the model's interpreter (`python3` on the `PATH`, the
//! server's `--python`, or the model's `EXECUTION_ENV_PATH` environment)
//! running `serving_python_worker.py`, with this server's
//! `triton_python_backend_utils` on its `PYTHONPATH`; it needs numpy and
//! nothing else. Control messages go over the worker's stdin and stdout;
//! tensors cross a shared-memory region the server creates and the worker
//! maps, inputs viewed in place by numpy. A worker that dies, or does not
//! answer by the batch's deadline and is stopped, fails its replica, which
//! the engine restarts; the requests get an error and the server stays up.
//!
//! | module | job |
//! |---|---|
//! | `process` | one worker process: start, control channel, logs, stop |
//! | `region` | the shared memory a worker and the server exchange tensors through |
//! | `bls` | a model's requests to the server's models (BLS), decoupled ones too |
//! | `instance` | a batch as the requests of one `execute` call, and back |

mod bls;
mod instance;
mod process;
mod region;

pub use bls::{Bls, BlsResponses, Streamed};

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use serving_proto::gather::Budget;
use serving_proto::model_config::{self, ModelConfig, TritonType};
use serving_proto::pb::inference::model_config::SchedulingChoice;

use crate::engine::backend::{Backend, LoadError, ModelInstance, ModelIo, ModelLoad};
use crate::engine::model::TensorSpec;
use crate::runtime::device::Device;
use instance::PythonInstance;
use process::{Launch, Process};

/// The backend's name, as Triton's configurations give it.
pub const BACKEND: &str = "python";

/// The options a Python model's [`crate::engine::config::ModelSpec`]
/// carries.
pub mod option {
    /// The `model.py` file.
    pub const MODEL_FILE: &str = "model_file";
    /// The model's directory in the repository (Triton's
    /// `args["model_repository"]`).
    pub const MODEL_DIR: &str = "model_dir";
    /// The completed configuration, in Triton's JSON form.
    pub const MODEL_CONFIG: &str = "model_config";
    /// The interpreter, when the model names its own environment.
    pub const PYTHON: &str = "python";
    /// For a MindSpore method's Python stage: the `servable_config.py`.
    pub const SERVABLE_CONFIG: &str = "servable_config";
    /// The servable's name (what its stage error texts name).
    pub const SERVABLE: &str = "servable";
    /// The method the stage is of.
    pub const METHOD: &str = "method";
    /// The stage's index in the method, counting from 1.
    pub const STAGE: &str = "stage";
    /// How many arguments the stage's function takes.
    pub const ARGUMENTS: &str = "arguments";
    /// How many results it gives.
    pub const RESULTS: &str = "results";
}

/// The scripts every worker runs, written once per server into a private
/// directory.
const WORKER: &str = include_str!("serving_python_worker.py");
const UTILS: &str = include_str!("triton_python_backend_utils.py");
const STAGE: &str = include_str!("serving_mindspore_stage.py");
/// MindSpore's `mindspore_serving` package as `servable_config.py` files
/// import it.
const MINDSPORE: [(&str, &str); 4] = [
    (
        "mindspore_serving/__init__.py",
        include_str!("mindspore_serving/__init__.py"),
    ),
    (
        "mindspore_serving/server/__init__.py",
        include_str!("mindspore_serving/server/__init__.py"),
    ),
    (
        "mindspore_serving/server/register.py",
        include_str!("mindspore_serving/server/register.py"),
    ),
    (
        "mindspore_serving/server/distributed.py",
        include_str!("mindspore_serving/server/distributed.py"),
    ),
];

/// How long loading a model (importing it, `initialize`) may take.
const LOAD_TIMEOUT: Duration = Duration::from_secs(300);

/// The first size of a worker's region; it grows to what a batch needs.
const FIRST_REGION: usize = 1 << 20;

/// A region grown past this is given back after the call that grew it.
const KEEP_REGION: usize = 64 << 20;

/// Runs Python models.
pub struct Python {
    python: PathBuf,
    scripts: tempfile::TempDir,
    bls: Arc<OnceLock<Bls>>,
}

impl std::fmt::Debug for Python {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Python")
            .field("python", &self.python)
            .field("scripts", &self.scripts.path())
            .field("bls", &self.bls.get().is_some())
            .finish()
    }
}

/// Why the Python backend cannot start.
#[derive(Debug, thiserror::Error)]
#[error("cannot prepare the Python backend's scripts in {dir}: {source}")]
pub struct PythonError {
    dir: PathBuf,
    #[source]
    source: std::io::Error,
}

impl Python {
    /// The backend, running models with `python` (an interpreter with
    /// numpy) unless a model names its own.
    pub fn new(python: impl Into<PathBuf>) -> Result<Python, PythonError> {
        let scripts = tempfile::Builder::new()
            .prefix("serving-python-")
            .tempdir()
            .map_err(|source| PythonError {
                dir: std::env::temp_dir(),
                source,
            })?;
        let files = [
            ("serving_python_worker.py", WORKER),
            ("triton_python_backend_utils.py", UTILS),
            ("serving_mindspore_stage.py", STAGE),
        ];
        for (name, text) in files.into_iter().chain(MINDSPORE) {
            let path = scripts.path().join(name);
            let written = match path.parent() {
                Some(dir) => std::fs::create_dir_all(dir),
                None => Ok(()),
            }
            .and_then(|()| std::fs::write(&path, text));
            written.map_err(|source| PythonError {
                dir: scripts.path().to_owned(),
                source,
            })?;
        }
        Ok(Python {
            python: python.into(),
            scripts,
            bls: Arc::default(),
        })
    }

    /// Lets models call the server's models (BLS) through `bls`; until it
    /// is set, their calls fail saying so.
    pub fn set_bls(&self, bls: Bls) {
        let _ = self.bls.set(bls);
    }

    /// How a worker starts: with `python` or the backend's interpreter,
    /// its grown regions charged to `memory`.
    fn launch(&self, python: Option<&str>, memory: &Arc<Budget>) -> Launch {
        Launch {
            python: python.map_or_else(|| self.python.clone(), PathBuf::from),
            scripts: self.scripts.path().to_owned(),
            memory: memory.clone(),
        }
    }

    /// Completes a model's configuration as Triton does before it loads
    /// it: the model class's `auto_complete_config`, when it has one, given
    /// `config` (Triton's JSON form). Blocking: starts a worker for it.
    pub fn complete_config(
        &self,
        model_file: &Path,
        python: Option<&str>,
        config: &Value,
    ) -> Result<Value, String> {
        let label = format!("{} (auto-complete)", model_file.display());
        let unlimited = Arc::new(Budget::unlimited());
        let mut p = Process::start(&self.launch(python, &unlimited), &label, 4096)?;
        let deadline = Some(Instant::now() + LOAD_TIMEOUT);
        let load =
            json!({"op": "load", "model_file": model_file, "model_dir": version_dir(model_file)});
        p.call(&load, deadline, None).map_err(|e| e.to_string())?;
        let reply = p
            .call(
                &json!({"op": "auto_complete", "config": config}),
                deadline,
                None,
            )
            .map_err(|e| e.to_string())?;
        p.stop();
        reply
            .get("config")
            .cloned()
            .ok_or_else(|| "auto_complete_config returned no configuration".into())
    }
}

impl Python {
    /// What a MindSpore `servable_config.py` declares, as our
    /// `mindspore_serving.server.register` records it on import: `{"models":
    /// [...], "methods": [...]}`. Blocking: starts a worker for it.
    pub fn register_servable(
        &self,
        config_file: &Path,
        servable: &str,
        python: Option<&str>,
    ) -> Result<Value, String> {
        let label = format!("{} (registration)", config_file.display());
        let unlimited = Arc::new(Budget::unlimited());
        let mut p = Process::start(&self.launch(python, &unlimited), &label, 4096)?;
        let deadline = Some(Instant::now() + LOAD_TIMEOUT);
        let reply = p
            .call(
                &json!({"op": "register", "config_file": config_file, "servable": servable}),
                deadline,
                None,
            )
            .map_err(|e| e.to_string());
        p.stop();
        reply?
            .get("plan")
            .cloned()
            .ok_or_else(|| "servable_config.py's registration returned no plan".into())
    }

    /// Loads a MindSpore method's Python stage: its arguments and results
    /// are untyped, rows first.
    fn load_stage(
        &self,
        load: &ModelLoad<'_>,
        fail: &dyn Fn(String) -> LoadError,
    ) -> Result<(Box<dyn ModelInstance>, ModelIo), LoadError> {
        let options = &load.model.options;
        let option = |name: &str| {
            options
                .get(name)
                .ok_or_else(|| fail(format!("a MindSpore stage needs the option '{name}'")))
        };
        let count = |name: &str| {
            option(name)?
                .parse::<usize>()
                .map_err(|e| fail(format!("option '{name}': {e}")))
        };
        let stage: u64 = option(option::STAGE)?
            .parse()
            .map_err(|e| fail(format!("option 'stage': {e}")))?;
        let untyped = |prefix: &str, n: usize| -> Vec<TensorSpec> {
            (0..n)
                .map(|i| TensorSpec {
                    name: format!("{prefix}{i}"),
                    dtype: serving_proto::DataType::Bytes,
                    shape: vec![-1],
                    untyped: true,
                })
                .collect()
        };
        let io = ModelIo {
            inputs: untyped("in", count(option::ARGUMENTS)?),
            outputs: untyped("out", count(option::RESULTS)?),
            decoupled: false,
        };
        let python = options.get(option::PYTHON).map(String::as_str);
        let mut process = Process::start(
            &self.launch(python, load.memory),
            &format!("{}/{}", load.label(), load.replica),
            FIRST_REGION,
        )
        .map_err(fail)?;
        let message = json!({
            "op": "load_stage",
            "config_file": option(option::SERVABLE_CONFIG)?,
            "servable": option(option::SERVABLE)?,
            "method": option(option::METHOD)?,
            "stage": stage,
        });
        process
            .call(&message, Some(Instant::now() + LOAD_TIMEOUT), None)
            .map_err(|e| fail(e.to_string()))?;
        tracing::info!(model = %load.label(), replica = load.replica, "MindSpore Python stage loaded");
        let instance = PythonInstance {
            bls: self.bls.clone(),
            process: Some(process),
            inputs: io.inputs.clone(),
            outputs: io.outputs.clone(),
            batched: true,
            decoupled: false,
        };
        Ok((Box::new(instance), io))
    }
}

/// The directory of `model.py` (its version directory), which the model
/// imports its own modules from.
fn version_dir(model_file: &Path) -> PathBuf {
    model_file
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_owned)
}

/// A model's inputs and outputs from its configuration: the batch
/// dimension first where it batches, BYTES for `TYPE_STRING`.
pub fn model_io(config: &ModelConfig) -> Result<ModelIo, String> {
    let batched = config.max_batch_size > 0;
    let spec = |what: &str, name: &str, data_type: i32, dims: &[i64]| {
        let dtype = TritonType::try_from(data_type)
            .ok()
            .and_then(model_config::data_type)
            .ok_or_else(|| format!("{what} '{name}' has no data_type"))?;
        let mut shape = Vec::with_capacity(dims.len() + 1);
        if batched {
            shape.push(-1);
        }
        shape.extend_from_slice(dims);
        Ok::<_, String>(TensorSpec {
            name: name.to_owned(),
            dtype,
            shape,
            untyped: false,
        })
    };
    let mut inputs: Vec<TensorSpec> = config
        .input
        .iter()
        .map(|i| spec("input", &i.name, i.data_type, &i.dims))
        .collect::<Result<_, _>>()?;
    let mut outputs: Vec<TensorSpec> = config
        .output
        .iter()
        .map(|o| spec("output", &o.name, o.data_type, &o.dims))
        .collect::<Result<_, _>>()?;
    // A sequence model's control inputs and states are inputs (and
    // outputs) of the model too, as Triton hands them to `execute`.
    if let Some(SchedulingChoice::SequenceBatching(sb)) = &config.scheduling_choice {
        for ci in &sb.control_input {
            let Some(c) = ci.control.first() else {
                continue;
            };
            let data_type = if !c.int32_false_true.is_empty() {
                TritonType::TypeInt32 as i32
            } else if !c.fp32_false_true.is_empty() {
                TritonType::TypeFp32 as i32
            } else if !c.bool_false_true.is_empty() {
                TritonType::TypeBool as i32
            } else {
                c.data_type
            };
            if !inputs.iter().any(|i| i.name == ci.name) {
                inputs.push(spec("control input", &ci.name, data_type, &[1])?);
            }
        }
        for st in &sb.state {
            if !inputs.iter().any(|i| i.name == st.input_name) {
                inputs.push(spec("state", &st.input_name, st.data_type, &st.dims)?);
            }
            if !outputs.iter().any(|o| o.name == st.output_name) {
                outputs.push(spec("state", &st.output_name, st.data_type, &st.dims)?);
            }
        }
    }
    Ok(ModelIo {
        inputs,
        outputs,
        decoupled: config
            .model_transaction_policy
            .as_ref()
            .is_some_and(|p| p.decoupled),
    })
}

impl Backend for Python {
    fn name(&self) -> &'static str {
        BACKEND
    }

    fn load(
        &self,
        load: &ModelLoad<'_>,
        device: Device,
    ) -> Result<(Box<dyn ModelInstance>, ModelIo), LoadError> {
        let label = load.label();
        let fail = |reason: String| LoadError::Model {
            model: label.clone(),
            reason,
        };
        if load.model.options.contains_key(option::SERVABLE_CONFIG) {
            return self.load_stage(load, &fail);
        }
        let option = |name: &str| {
            load.model
                .options
                .get(name)
                .ok_or_else(|| fail(format!("the Python backend needs the option '{name}'")))
        };
        let model_file = PathBuf::from(option(option::MODEL_FILE)?);
        let model_dir = option(option::MODEL_DIR)?;
        let config_json = option(option::MODEL_CONFIG)?;
        let config = model_config::from_json(config_json)
            .map_err(|e| fail(format!("its configuration: {e}")))?;
        let io = model_io(&config).map_err(&fail)?;
        let python = load.model.options.get(option::PYTHON).map(String::as_str);
        // Triton's instance names: the group's name and the instance's
        // index in it.
        let instance_name = format!("{}_0_{}", config.name, load.replica);
        let mut process = Process::start(
            &self.launch(python, load.memory),
            &format!("{}/{}", config.name, load.replica),
            FIRST_REGION,
        )
        .map_err(&fail)?;
        let deadline = Some(Instant::now() + LOAD_TIMEOUT);
        let load_msg = json!({
            "op": "load",
            "model_file": model_file,
            "model_dir": version_dir(&model_file),
            "decoupled": io.decoupled,
        });
        process
            .call(&load_msg, deadline, None)
            .map_err(|e| fail(e.to_string()))?;
        let (kind, device_id) = match device {
            Device::Cpu => ("CPU", 0),
            Device::Cuda(n) => ("GPU", n),
            Device::Cann(n) => ("NPU", n),
        };
        let args = json!({
            "model_config": config_json,
            "model_instance_kind": kind,
            "model_instance_name": instance_name,
            "model_instance_device_id": device_id.to_string(),
            "model_repository": model_dir,
            "model_version": load.version.to_string(),
            "model_name": config.name,
        });
        let bls = self.bls.get().cloned();
        process
            .call(
                &json!({"op": "initialize", "args": args}),
                deadline,
                bls.as_ref(),
            )
            .map_err(|e| fail(format!("initialize: {e}")))?;
        tracing::info!(model = %config.name, instance = %instance_name, "Python model loaded");
        let instance = PythonInstance {
            bls: self.bls.clone(),
            process: Some(process),
            inputs: io.inputs.clone(),
            outputs: io.outputs.clone(),
            batched: load.model.batched,
            decoupled: io.decoupled,
        };
        Ok((Box::new(instance), io))
    }
}
