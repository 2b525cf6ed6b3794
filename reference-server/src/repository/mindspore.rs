//! MindSpore Serving's own servable directories: a `servable_config.py`
//! beside the version directories, unchanged but for the model files.
//!
//! ```text
//! add/
//!   servable_config.py      declare_model(...), @register_method(...), add_stage(...)
//!   1/
//!     tensor_add.mindir     (kept or not: the server does not read it)
//!     tensor_add.onnx       what runs: the ONNX export of the same name
//! ```
//!
//! The file is imported once per load by a Python worker with our
//! `mindspore_serving.server.register`, which records what it declares (the
//! plan); the plan becomes a servable: each declared model an ONNX model,
//! each Python stage a model of the Python backend, each method a chain of
//! stages, and the engine batches, schedules and serves it like any other.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use super::{Options, RepositoryError, ServableDir, fail, is_inside_path};
use crate::backends::python::{BACKEND as PYTHON_BACKEND, option};
use crate::engine::config::{MethodSpec, ModelSpec, ServableSpec, StageSpec};

/// The configuration file of a MindSpore servable.
pub const CONFIG_FILE: &str = "servable_config.py";

/// The model formats `declare_model` takes that name a MindSpore graph,
/// served from the ONNX file of the same name.
const MINDIR_FORMATS: [&str; 4] = ["mindir", "mindir_lite", "om", "mindir_opt"];

/// What `servable_config.py` declared.
#[derive(Debug, Deserialize)]
struct Plan {
    models: Vec<Declared>,
    methods: Vec<Method>,
}

#[derive(Debug, Deserialize)]
struct Declared {
    file: String,
    format: String,
    with_batch_dim: bool,
    #[serde(default)]
    without_batch_dim_inputs: Vec<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
struct Method {
    name: String,
    inputs: Vec<String>,
    outputs: Vec<String>,
    /// Where each output comes from.
    returns: Vec<(usize, usize)>,
    stages: Vec<Stage>,
}

#[derive(Debug, Deserialize)]
struct Stage {
    kind: String,
    #[serde(default)]
    model: Option<usize>,
    #[serde(default)]
    function: Option<String>,
    /// Where each argument comes from: `(0, i)` the method's input `i`,
    /// `(k, j)` output `j` of stage `k` (from 1).
    inputs: Vec<(usize, usize)>,
    outputs_count: usize,
}

/// The ONNX file a declared model runs from: the file itself for
/// `model_format="ONNX"`, else the `.onnx` file of the same stem.
pub fn onnx_file(file: &str, format: &str) -> Result<String, String> {
    let format = format.to_ascii_lowercase();
    if format == "onnx" {
        return Ok(file.to_owned());
    }
    if !MINDIR_FORMATS.contains(&format.as_str()) {
        return Err(format!(
            "model '{file}' has format '{format}'; the server runs 'ONNX' models, and MindIR ones ('MindIR', 'MindIR_Lite', 'OM', 'mindir_opt') from the ONNX file of the same name"
        ));
    }
    Ok(Path::new(file)
        .with_extension("onnx")
        .to_string_lossy()
        .into_owned())
}

/// The servable version `version` of the MindSpore servable `servable`
/// (whose `servable_config.py` is `config_file`): its spec and each model's
/// bytes (none for Python stages).
pub(crate) fn load(
    servable: &ServableDir,
    config_file: &Path,
    version: u64,
    options: &Options,
) -> Result<(ServableSpec, Vec<Vec<u8>>), RepositoryError> {
    let backend = options.python.as_ref().ok_or_else(|| {
        fail(
            config_file,
            "MindSpore servables are not served: this server has no Python backend",
        )
    })?;
    let plan = backend
        .register_servable(config_file, &servable.name, None)
        .map_err(|r| fail(config_file, format!("importing it failed: {r}")))?;
    let plan: Plan = serde_json::from_value(plan).map_err(|e| {
        fail(
            config_file,
            format!("its registration is not understood: {e}"),
        )
    })?;
    let (spec, files) = translate(&servable.name, config_file, &plan)
        .map_err(|reason| fail(config_file, reason))?;
    let vdir = servable.version_dir(version);
    let mut bytes = Vec::with_capacity(files.len());
    for ModelFile { read, declared } in files {
        let Some(file) = read else {
            bytes.push(Vec::new());
            continue;
        };
        let resolved = servable.model_path(version, &file)?;
        if !resolved.is_file() {
            let why = if declared == file {
                format!("model '{file}' is missing from version {version}")
            } else {
                format!(
                    "model '{declared}' runs from its ONNX export '{file}', which is missing from version {version}: export the network to ONNX under that name beside it (see docs/server.md, \"MindSpore servable_config.py\")"
                )
            };
            return Err(fail(&vdir.join(&file), why));
        }
        tracing::info!(file = %resolved.display(), "loading model");
        bytes.push(std::fs::read(&resolved).map_err(|e| fail(&vdir.join(&file), e.to_string()))?);
    }
    Ok((spec, bytes))
}

/// The name of a value of a method: its input's name, or `k:j` for output
/// `j` of stage `k` (no input name holds a colon: they are Python names).
fn value(
    method: &Method,
    done: &[Stage],
    (stage, index): (usize, usize),
) -> Result<String, String> {
    if stage == 0 {
        return method.inputs.get(index).cloned().ok_or_else(|| {
            format!(
                "method '{}' uses input {index}, and has {}",
                method.name,
                method.inputs.len()
            )
        });
    }
    match done.get(stage - 1) {
        Some(s) if index < s.outputs_count => Ok(format!("{stage}:{index}")),
        _ => Err(format!(
            "method '{}' uses output {index} of stage {stage}, which it has not",
            method.name
        )),
    }
}

/// A model's file: the one to read (`None` for a Python stage) and the
/// one `servable_config.py` declared.
struct ModelFile {
    read: Option<String>,
    declared: String,
}

/// The servable a plan describes, and the file of each of its models.
fn translate(
    servable: &str,
    config_file: &Path,
    plan: &Plan,
) -> Result<(ServableSpec, Vec<ModelFile>), String> {
    let mut spec = ServableSpec::default();
    let mut files = Vec::new();
    for m in &plan.models {
        if !m.without_batch_dim_inputs.is_empty() {
            return Err(format!(
                "model '{}' declares without_batch_dim_inputs, which the server does not support: declare it with_batch_dim=False, or give those inputs a batch dimension",
                m.file
            ));
        }
        if !is_inside_path(&m.file) {
            return Err(format!("model '{}' {}", m.file, super::ESCAPES));
        }
        let onnx = onnx_file(&m.file, &m.format)?;
        spec.models
            .push(ModelSpec::onnx(&m.file, &onnx, m.with_batch_dim));
        files.push(ModelFile {
            read: Some(onnx),
            declared: m.file.clone(),
        });
    }
    for method in &plan.methods {
        let mut stages = Vec::with_capacity(method.stages.len());
        for (i, stage) in method.stages.iter().enumerate() {
            let k = i + 1;
            let inputs = stage
                .inputs
                .iter()
                .map(|&r| value(method, &method.stages[..i], r))
                .collect::<Result<Vec<_>, _>>()?;
            let outputs = (0..stage.outputs_count)
                .map(|j| format!("{k}:{j}"))
                .collect();
            let model = match (stage.kind.as_str(), stage.model, &stage.function) {
                ("model", Some(index), _) => plan
                    .models
                    .get(index)
                    .map(|m| m.file.clone())
                    .ok_or_else(|| {
                        format!(
                            "method '{}' stage {k} uses an undeclared model",
                            method.name
                        )
                    })?,
                ("function", _, Some(function)) => {
                    if inputs.is_empty() {
                        return Err(format!(
                            "method '{}' stage {k}: function '{function}' takes no arguments; a stage takes at least one",
                            method.name
                        ));
                    }
                    let name = format!("{}:{k}:{function}", method.name);
                    let mut model = ModelSpec::onnx(&name, CONFIG_FILE, true);
                    model.backend = PYTHON_BACKEND.into();
                    model.options = BTreeMap::from([
                        (
                            option::SERVABLE_CONFIG.to_owned(),
                            config_file.display().to_string(),
                        ),
                        (option::SERVABLE.to_owned(), servable.to_owned()),
                        (option::METHOD.to_owned(), method.name.clone()),
                        (option::STAGE.to_owned(), k.to_string()),
                        (option::ARGUMENTS.to_owned(), inputs.len().to_string()),
                        (option::RESULTS.to_owned(), stage.outputs_count.to_string()),
                    ]);
                    spec.models.push(model);
                    files.push(ModelFile {
                        read: None,
                        declared: CONFIG_FILE.to_owned(),
                    });
                    name
                }
                (kind, _, _) => {
                    return Err(format!(
                        "method '{}' stage {k} is of kind '{kind}', which the server does not run",
                        method.name
                    ));
                }
            };
            stages.push(StageSpec {
                model,
                inputs,
                outputs,
            });
        }
        if method.returns.len() != method.outputs.len() {
            return Err(format!(
                "Method return output size {} not match registered {}",
                method.returns.len(),
                method.outputs.len()
            ));
        }
        let mut output_sources = BTreeMap::new();
        for (name, &r) in method.outputs.iter().zip(&method.returns) {
            let source = value(method, &method.stages, r)?;
            if &source != name {
                output_sources.insert(name.clone(), source);
            }
        }
        spec.methods.push(MethodSpec {
            name: method.name.clone(),
            inputs: method.inputs.clone(),
            outputs: method.outputs.clone(),
            stages,
            output_sources,
            ..MethodSpec::default()
        });
    }
    Ok((spec, files))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mindir_models_run_from_the_onnx_file_of_the_same_name() {
        assert_eq!(
            onnx_file("tensor_add.mindir", "MindIR").unwrap(),
            "tensor_add.onnx"
        );
        assert_eq!(onnx_file("net.mindir", "mindir_lite").unwrap(), "net.onnx");
        assert_eq!(onnx_file("net.onnx", "ONNX").unwrap(), "net.onnx");
        assert!(onnx_file("net.pb", "TensorFlow").is_err());
    }
}
