//! Python-backend models in a Triton repository (`backend: "python"`, a
//! `model.py` per version): the configuration the model completes itself
//! (`auto_complete_config`, as Triton calls it before loading), the
//! interpreter the model asks for (`EXECUTION_ENV_PATH`), and what the
//! Python backend is told to load.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serving_proto::model_config::{self, ModelConfig};

use super::{Options, RepositoryError, ServableDir, fail};
use crate::backends::python::option;
use crate::onnx::{Declared, Signature};

/// The configuration parameter naming a model's own Python environment.
const EXECUTION_ENV_PATH: &str = "EXECUTION_ENV_PATH";

/// A Python model ready to translate and load.
#[derive(Debug)]
pub(crate) struct Prepared {
    /// Its configuration, completed by the model where it completes it.
    pub(crate) config: ModelConfig,
    /// Its inputs and outputs, from that configuration.
    pub(crate) signature: Signature,
    model_file: PathBuf,
    model_dir: PathBuf,
    python: Option<String>,
}

impl Prepared {
    /// What the Python backend needs, with the translated (completed)
    /// configuration.
    pub(crate) fn options(&self, translated: &ModelConfig) -> BTreeMap<String, String> {
        let mut o = BTreeMap::from([
            (
                option::MODEL_FILE.to_owned(),
                self.model_file.display().to_string(),
            ),
            (
                option::MODEL_DIR.to_owned(),
                self.model_dir.display().to_string(),
            ),
            (
                option::MODEL_CONFIG.to_owned(),
                model_config::to_json(translated).to_string(),
            ),
        ]);
        if let Some(p) = &self.python {
            o.insert(option::PYTHON.to_owned(), p.clone());
        }
        o
    }
}

/// Prepares version `version` of the Python model `servable`, whose model
/// file is `name` (`bytes` read).
pub(crate) fn prepare(
    servable: &ServableDir,
    version: u64,
    name: &str,
    config: Option<&ModelConfig>,
    bytes: &[u8],
    options: &Options,
) -> Result<Prepared, RepositoryError> {
    let model_file = servable.model_path(version, name)?;
    let where_ = servable.config_file();
    let mut config = config.cloned().unwrap_or_default();
    config.name = servable.name.clone();
    let python = interpreter(&config, &servable.dir).map_err(|r| fail(&where_, r))?;
    // The model completes its configuration only when its class says how:
    // a worker is started for it then, and only then.
    let completes = bytes
        .windows(b"auto_complete_config".len())
        .any(|w| w == b"auto_complete_config");
    if completes {
        let backend = options.python.as_ref().ok_or_else(|| {
            fail(
                &model_file,
                "Python models are not served: this server has no Python backend",
            )
        })?;
        let json = model_config::to_json(&config);
        let completed = backend
            .complete_config(&model_file, python.as_deref(), &json)
            .map_err(|r| fail(&model_file, format!("auto_complete_config: {r}")))?;
        config = model_config::from_json(&completed.to_string()).map_err(|e| {
            fail(
                &model_file,
                format!("auto_complete_config returned a configuration that is not one: {e}"),
            )
        })?;
        config.name = servable.name.clone();
    }
    if config.input.is_empty() && config.output.is_empty() {
        return Err(fail(
            &where_,
            "a Python model's configuration declares its inputs and outputs (or its model completes them in auto_complete_config); this one has none",
        ));
    }
    let signature = signature(&config).map_err(|r| fail(&where_, r))?;
    Ok(Prepared {
        config,
        signature,
        model_file,
        model_dir: servable.dir.clone(),
        python,
    })
}

/// The inputs and outputs a Python model's configuration declares (the
/// model is what its configuration says), as the backend reads them.
fn signature(config: &ModelConfig) -> Result<Signature, String> {
    let io = crate::backends::python::model_io(config)?;
    let declared = |t: crate::engine::model::TensorSpec| Declared {
        name: t.name,
        dtype: Some(t.dtype),
        dims: t.shape,
    };
    Ok(Signature {
        inputs: io.inputs.into_iter().map(declared).collect(),
        outputs: io.outputs.into_iter().map(declared).collect(),
    })
}

/// The interpreter a model's `EXECUTION_ENV_PATH` names: a directory
/// holding a Python environment (a virtual environment, an unpacked
/// conda-pack archive), `$$TRITON_MODEL_DIRECTORY` standing for the
/// model's directory. `None`: the server's interpreter.
fn interpreter(config: &ModelConfig, model_dir: &Path) -> Result<Option<String>, String> {
    let Some(p) = config.parameters.get(EXECUTION_ENV_PATH) else {
        return Ok(None);
    };
    let path = p
        .string_value
        .replace("$$TRITON_MODEL_DIRECTORY", &model_dir.display().to_string());
    let path = PathBuf::from(path);
    if path.is_file() {
        return Err(format!(
            "parameter {EXECUTION_ENV_PATH} names the file {}: this server takes the environment's directory (unpack a conda-pack archive with tar, then name the directory)",
            path.display()
        ));
    }
    for candidate in ["bin/python3", "bin/python"] {
        let python = path.join(candidate);
        if python.is_file() {
            return Ok(Some(python.display().to_string()));
        }
    }
    Err(format!(
        "parameter {EXECUTION_ENV_PATH} names {}, which holds no bin/python3",
        path.display()
    ))
}
