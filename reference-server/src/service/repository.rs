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
use crate::repository::watch::{Watcher, is_servable_name};

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

/// A load's parameters for `model`: Triton's `config` (the configuration's
/// JSON, used instead of the model's config.pbtxt), as a string when
/// given; `file:` contents and other names are refused, by name. Texts
/// start with Triton's "failed to load 'model'".
pub(crate) fn load_config<'a>(
    model: &str,
    parameters: impl Iterator<Item = (&'a str, Option<&'a str>)>,
) -> Result<Option<serving_proto::model_config::ModelConfig>, ServeError> {
    let model = quote(model);
    let mut config = None;
    for (name, value) in parameters {
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
                    "failed to load '{model}': load parameter '{}' is not supported: models load from the repository directory (with 'config' to give their configuration), not from file contents in the request",
                    quote(p)
                )));
            }
        }
    }
    Ok(config)
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
fn check_control(state: &State) -> Result<(), ServeError> {
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
    config: Option<serving_proto::model_config::ModelConfig>,
) -> Result<(), ServeError> {
    check_control(&state)?;
    check_name(&name)?;
    let model = name.clone();
    match with_watcher(state, move |s, w| w.load_with(&s.registry, &model, config)).await? {
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
