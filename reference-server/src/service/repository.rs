//! Triton's `model_repository` extension: the index of the repository, and
//! loading and unloading its models, for both transports.
//!
//! Names reach the repository only as one path segment of a model
//! directory ([`crate::repository::watch::is_servable_name`]): `..`,
//! absolute paths and separators are refused before any file is touched.

use std::sync::Arc;

use serving_proto::text::{bounded, quote};

use super::State;
use crate::error::ServeError;
use crate::repository::watch::{LoadedFiles, Watcher, is_servable_name};

/// Triton's state of a model version that serves.
pub(crate) const READY: &str = "READY";
/// Triton's state of a model version that failed to load.
pub(crate) const UNAVAILABLE: &str = "UNAVAILABLE";

/// One entry of the repository index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Entry {
    pub(crate) name: String,
    /// Empty for a model directory that is unusable as a whole.
    pub(crate) version: String,
    pub(crate) state: &'static str,
    pub(crate) reason: String,
}

/// Every loaded model version, `READY`, then (unless `ready_only`) every
/// model or version that failed to load, `UNAVAILABLE` with the reason.
pub(crate) fn index(state: &State, ready_only: bool) -> Vec<Entry> {
    let mut index: Vec<Entry> = state
        .registry
        .list()
        .into_iter()
        .flat_map(|(name, versions)| {
            versions.into_iter().map(move |v| Entry {
                name: name.clone(),
                version: v.to_string(),
                state: READY,
                reason: String::new(),
            })
        })
        .collect();
    if !ready_only {
        index.extend(state.failures().into_iter().map(|f| Entry {
            name: f.model,
            version: if f.version == 0 {
                String::new()
            } else {
                f.version.to_string()
            },
            state: UNAVAILABLE,
            reason: bounded(&f.reason).into_owned(),
        }));
    }
    index
}

/// Checks a request's repository name (Triton's `repository_name`): this
/// server has one repository, so only "" names it.
pub(crate) fn check_repository(name: &str) -> Result<(), ServeError> {
    if name.is_empty() {
        return Ok(());
    }
    Err(ServeError::InvalidArgument(format!(
        "repository '{}' is unknown: this server has one repository, named by an empty repository_name",
        quote(name)
    )))
}

/// A load parameter's value as it came: a string, or bytes (gRPC's
/// `bytes_param`), or something else.
#[derive(Clone, Copy, Debug)]
pub(crate) enum LoadValue<'a> {
    /// A string.
    Text(&'a str),
    /// Bytes (shared, not copied).
    Bytes(&'a bytes::Bytes),
    /// Any other type.
    Other,
}

/// What a load asks for beyond the repository: Triton's `config` (the
/// configuration's JSON, used instead of the model's config.pbtxt) and
/// `file:<path>` contents (the model's files, used instead of its
/// directory; they need a `config`).
#[derive(Debug, Default)]
pub(crate) struct LoadRequest {
    /// The configuration to use.
    pub(crate) config: Option<serving_proto::model_config::ModelConfig>,
    /// The model directory's files: path under the directory, contents.
    pub(crate) files: Vec<(String, bytes::Bytes)>,
}

/// Files one load may carry at most.
const LOAD_FILES_MAX: usize = 256;

/// A `file:` path: relative, in at most 8 plain components (no `.`, `..`,
/// hidden or empty ones), so that the file lands inside the model's new
/// directory.
fn confined(path: &str) -> Option<&str> {
    let parts: Vec<&str> = path.split('/').collect();
    let plain = |p: &&str| {
        !p.is_empty() && !p.starts_with('.') && p.len() <= 255 && !p.contains(['\\', '\0'])
    };
    (parts.len() <= 8 && parts.iter().all(plain)).then_some(path)
}

/// A load's parameters for `model` (see [`LoadRequest`]); `file:`
/// contents are base64 text over REST and bytes over gRPC, as Triton takes
/// them. Texts start with Triton's "failed to load 'model'".
pub(crate) fn load_request<'a>(
    model: &str,
    parameters: impl Iterator<Item = (&'a str, LoadValue<'a>)>,
) -> Result<LoadRequest, ServeError> {
    use base64::Engine as _;
    let model = quote(model);
    let mut config = None;
    let mut files = Vec::new();
    for (name, value) in parameters {
        if let Some(path) = name.strip_prefix("file:") {
            let Some(path) = confined(path) else {
                return Err(ServeError::InvalidArgument(format!(
                    "failed to load '{model}': file path '{}' is not a relative path of plain names inside the model directory",
                    quote(path)
                )));
            };
            if files.len() == LOAD_FILES_MAX {
                return Err(ServeError::InvalidArgument(format!(
                    "failed to load '{model}': a load carries at most {LOAD_FILES_MAX} files"
                )));
            }
            let contents = match value {
                LoadValue::Bytes(b) => b.clone(),
                LoadValue::Text(t) => base64::engine::general_purpose::STANDARD
                    .decode(t)
                    .map(bytes::Bytes::from)
                    .map_err(|e| {
                        ServeError::InvalidArgument(format!(
                            "failed to load '{model}': the contents of file '{}' are not base64: {e}",
                            quote(path)
                        ))
                    })?,
                LoadValue::Other => {
                    return Err(ServeError::InvalidArgument(format!(
                        "failed to load '{model}': the contents of file '{}' must be bytes (gRPC bytes_param) or base64 text (REST)",
                        quote(path)
                    )));
                }
            };
            files.push((path.to_owned(), contents));
            continue;
        }
        let value = match value {
            LoadValue::Text(t) => Some(t),
            _ => None,
        };
        match (name, value) {
            ("config", Some(json)) => {
                let parsed = serving_proto::model_config::from_json(json).map_err(|e| {
                    ServeError::InvalidArgument(format!(
                        "failed to load '{model}': load parameter 'config' is not a model configuration: {}",
                        bounded(&e.to_string())
                    ))
                })?;
                config = Some(parsed);
            }
            ("config", None) => {
                return Err(ServeError::InvalidArgument(format!(
                    "failed to load '{model}': load parameter 'config' must be a string holding the configuration's JSON"
                )));
            }
            (p, _) => {
                return Err(ServeError::InvalidArgument(format!(
                    "failed to load '{model}': load parameter '{}' is not supported: a load takes 'config' and 'file:<path>' contents",
                    quote(p)
                )));
            }
        }
    }
    if !files.is_empty() && config.is_none() {
        return Err(ServeError::InvalidArgument(format!(
            "failed to load '{model}': file contents need the model's configuration: give 'config' with them"
        )));
    }
    Ok(LoadRequest { config, files })
}

/// Writes a load's files into a new private directory (removed when the
/// model loads from elsewhere again).
fn model_dir(files: Vec<(String, bytes::Bytes)>) -> Result<tempfile::TempDir, String> {
    let dir = tempfile::Builder::new()
        .prefix("serving-load-")
        .tempdir()
        .map_err(|e| format!("a directory for the model's files cannot be made: {e}"))?;
    for (path, contents) in files {
        let to = dir.path().join(&path);
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| format!("file '{}' cannot be written: {e}", quote(&path)))?;
        }
        std::fs::write(&to, contents)
            .map_err(|e| format!("file '{}' cannot be written: {e}", quote(&path)))?;
    }
    Ok(dir)
}

fn check_name(name: &str) -> Result<(), ServeError> {
    if is_servable_name(name) {
        return Ok(());
    }
    Err(ServeError::InvalidArgument(format!(
        "'{}' is not a model name of the repository: one path segment, not hidden, no separators",
        quote(name)
    )))
}

async fn with_watcher<T: Send + 'static>(
    state: Arc<State>,
    f: impl FnOnce(&State, &mut Watcher) -> T + Send + 'static,
) -> Result<T, ServeError> {
    tokio::task::spawn_blocking(move || {
        let Some(w) = &state.watcher else {
            return Err(ServeError::InvalidArgument(
                "the server was started without --model-repository; there is no repository to load from".into(),
            ));
        };
        let mut w = w.lock().unwrap_or_else(|e| e.into_inner());
        Ok(f(&state, &mut w))
    })
    .await
    .map_err(|e| ServeError::Internal(e.to_string()))?
}

/// Refuses the repository API's loads and unloads where the model control
/// mode does not take them, with Triton's status and words.
pub(crate) fn check_control(state: &State) -> Result<(), ServeError> {
    if state.model_control.api_loads() {
        return Ok(());
    }
    Err(ServeError::Unavailable(format!(
        "explicit model load / unload is not allowed if polling is enabled: the server runs with --model-control-mode {}; start it with --model-control-mode explicit to load and unload models through this API",
        state.model_control.name()
    )))
}

/// (Re)loads model `name`'s versions from the repository now.
pub(crate) async fn load(
    state: Arc<State>,
    name: String,
    request: LoadRequest,
) -> Result<(), ServeError> {
    check_control(&state)?;
    check_name(&name)?;
    let model = name.clone();
    let LoadRequest { config, files } = request;
    let loaded = with_watcher(state, move |s, w| {
        let dir = if files.is_empty() {
            None
        } else {
            // Files stay on disk while their model is loaded or until a
            // load without them: all of them together are bounded.
            let bytes: u64 = files.iter().map(|(_, c)| c.len() as u64).sum();
            let held = w.files_held(&model);
            if held.saturating_add(bytes) > s.max_load_files_bytes {
                return Err(ServeError::ResourceExhausted(format!(
                    "failed to load '{}': its files need {bytes} bytes on disk, and the files given with other models' loads hold {held} of the {} this server keeps (--max-load-files-mb); load models without files, or load the others again without theirs",
                    quote(&model),
                    s.max_load_files_bytes
                )));
            }
            match model_dir(files) {
                Ok(dir) => Some(LoadedFiles { dir, bytes }),
                Err(e) => return Ok(Err(e)),
            }
        };
        Ok(w.load_with(&s.registry, &model, config, dir))
    });
    match loaded.await?? {
        Ok(_) => Ok(()),
        Err(reason) => Err(ServeError::InvalidArgument(format!(
            "failed to load '{}': {}",
            quote(&name),
            bounded(&reason)
        ))),
    }
}

/// Unloads every version of model `name` until it is loaded again;
/// requests already running on it finish. With `dependents` (Triton's
/// `unload_dependents`), an ensemble's composing models go too.
pub(crate) async fn unload(
    state: Arc<State>,
    name: String,
    dependents: bool,
) -> Result<(), ServeError> {
    check_control(&state)?;
    check_name(&name)?;
    let steps: Vec<String> = match (dependents, state.registry.get(&name, 0)) {
        (true, Ok(version)) => {
            let mut models: Vec<String> = version
                .ensemble_steps()
                .map(|e| e.steps.iter().map(|s| s.model.clone()).collect())
                .unwrap_or_default();
            models.sort();
            models.dedup();
            models
        }
        _ => Vec::new(),
    };
    let model = name.clone();
    let known = state.failures().iter().any(|f| f.model == name);
    let unloaded = with_watcher(state.clone(), move |s, w| w.unload(&s.registry, &model)).await?;
    if unloaded.is_empty() && !known {
        return Err(ServeError::NotFound(format!(
            "model '{}' is not found",
            quote(&name)
        )));
    }
    for step in steps.into_iter().filter(|s| *s != name) {
        let model = step.clone();
        let gone = with_watcher(state.clone(), move |s, w| w.unload(&s.registry, &model)).await?;
        tracing::info!(model = %step, versions = ?gone, ensemble = %name, "composing model unloaded with its ensemble (unload_dependents)");
    }
    Ok(())
}
