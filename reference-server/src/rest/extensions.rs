//! Triton's protocol extensions on REST, at the paths and in the JSON of
//! Triton's extension documents: model configuration, statistics, the
//! model repository and system shared memory. CUDA shared memory, trace
//! and log settings answer 404 with a text saying why.

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State as Extract};
use axum::response::{IntoResponse, Response};
use http::HeaderMap;
use serde_json::{Value, json};
use serving_proto::json_mapping;
use serving_proto::oip::extensions::{
    RegisterSystemSharedMemory, RepositoryIndexRequest, RepositoryModel, SystemSharedMemoryRegion,
};
use serving_proto::pb::inference::ModelStatisticsResponse;

use super::oip::error;
use super::read_body;
use crate::error::ServeError;
use crate::service::shared_memory::SharedMemory;
use crate::service::{
    CONTROL_BODY_MAX, State, cuda_shared_memory, logging as service_logging, model_config,
    repository, statistics, trace as service_trace,
};

fn ok(result: Result<Value, ServeError>) -> Response {
    match result {
        Ok(v) => Json(v).into_response(),
        Err(e) => error(&e),
    }
}

/// A control request's JSON object; an empty body is `{}`.
async fn control_body(
    state: &State,
    headers: &HeaderMap,
    body: Body,
) -> Result<serde_json::Map<String, Value>, ServeError> {
    let bytes = read_body(headers, body, CONTROL_BODY_MAX, &state.incoming, None)
        .await
        .map_err(|e| {
            e.into_serve_error(|_| {
                format!(
                    "the request body is larger than {CONTROL_BODY_MAX} bytes, the most a control request takes"
                )
            })
        })?;
    json_object(&bytes)
}

/// A repository load's request: a body up to the message limit, since
/// `file:` contents carry a model's files, decoded (the JSON, the base64
/// files) off the async workers when large, with what decoding builds
/// measured and charged to `--max-incoming-mb` as an inference body's is,
/// until the load is done.
async fn load_request(
    state: &State,
    model: &str,
    headers: &HeaderMap,
    body: Body,
) -> Result<(repository::LoadRequest, serving_proto::gather::Charge), ServeError> {
    let limit = state.max_msg_bytes;
    let bytes = read_body(headers, body, limit, &state.incoming, None)
        .await
        .map_err(|e| {
            e.into_serve_error(|_| {
                format!("the load request's body is larger than {limit} bytes, the message limit (--max-msg-mb)")
            })
        })?;
    let charge = super::memory::charge_body(state, bytes.len())?;
    let large = bytes.len() >= super::oip::BLOCKING_BYTES;
    let model = model.to_owned();
    let (request, charge) = super::memory::decode(charge, large, move || {
        let body = json_object(&bytes)?;
        parameter_names(&body)?;
        let parameters = body.get("parameters").and_then(Value::as_object);
        repository::load_request(
            &model,
            parameters.into_iter().flatten().map(|(k, v)| {
                let value = match v.as_str() {
                    Some(t) => repository::LoadValue::Text(t),
                    None => repository::LoadValue::Other,
                };
                (k.as_str(), value)
            }),
        )
    })
    .await?;
    Ok((request?, charge))
}

fn json_object(bytes: &[u8]) -> Result<serde_json::Map<String, Value>, ServeError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Default::default());
    }
    match serde_json::from_slice(bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(ServeError::InvalidArgument(
            "the request body must be a JSON object".into(),
        )),
        Err(e) => Err(ServeError::InvalidArgument(format!(
            "the request body is not valid JSON: {e}"
        ))),
    }
}

fn config(state: &State, model: &str, version: &str) -> Response {
    ok(model_config::model_config(state, model, version)
        .map(|c| json_mapping::to_json(&c, "inference.ModelConfig").unwrap_or_default()))
}

/// `GET /v2/models/{model}/config`.
pub(crate) async fn model_config(
    Extract(state): Extract<Arc<State>>,
    Path(model): Path<String>,
) -> Response {
    config(&state, &model, "")
}

/// `GET /v2/models/{model}/versions/{version}/config`.
pub(crate) async fn model_config_version(
    Extract(state): Extract<Arc<State>>,
    Path((model, version)): Path<(String, String)>,
) -> Response {
    config(&state, &model, &version)
}

fn stats(state: &State, model: &str, version: &str) -> Response {
    ok(
        statistics::statistics(state, model, version).map(|model_stats| {
            json_mapping::to_json(
                &ModelStatisticsResponse { model_stats },
                "inference.ModelStatisticsResponse",
            )
            .unwrap_or_default()
        }),
    )
}

/// `GET /v2/models/stats`: every model.
pub(crate) async fn all_stats(Extract(state): Extract<Arc<State>>) -> Response {
    stats(&state, "", "")
}

/// `GET /v2/models/{model}/stats`.
pub(crate) async fn model_stats(
    Extract(state): Extract<Arc<State>>,
    Path(model): Path<String>,
) -> Response {
    stats(&state, &model, "")
}

/// `GET /v2/models/{model}/versions/{version}/stats`.
pub(crate) async fn model_stats_version(
    Extract(state): Extract<Arc<State>>,
    Path((model, version)): Path<(String, String)>,
) -> Response {
    stats(&state, &model, &version)
}

/// `POST /v2/repository/index`, body `{"ready": bool}` optional: every
/// loaded model version, `READY`, and every model or version that failed
/// to load, `UNAVAILABLE` with the reason.
pub(crate) async fn repository_index(
    Extract(state): Extract<Arc<State>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let body = match control_body(&state, &headers, body).await {
        Ok(b) => b,
        Err(e) => return error(&e),
    };
    let request: RepositoryIndexRequest = match typed(body) {
        Ok(r) => r,
        Err(e) => return error(&e),
    };
    let index: Vec<RepositoryModel> = repository::index(&state, request.ready)
        .into_iter()
        .map(|e| RepositoryModel {
            name: e.name,
            version: e.version,
            state: e.state.to_owned(),
            reason: e.reason,
        })
        .collect();
    Json(index).into_response()
}

/// A control body read as its typed request: a field of the wrong type
/// or one the call does not know is a 400 naming it (serde's text quotes
/// the client's field name: bounded like every echo).
fn typed<T: serde::de::DeserializeOwned>(
    body: serde_json::Map<String, Value>,
) -> Result<T, ServeError> {
    serde_json::from_value(Value::Object(body)).map_err(|e| {
        ServeError::InvalidArgument(format!(
            "the request body is not valid: {}",
            serving_proto::text::quote(&e.to_string())
        ))
    })
}

fn parameter_names(body: &serde_json::Map<String, Value>) -> Result<Vec<String>, ServeError> {
    match body.get("parameters") {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Object(p)) => Ok(p.keys().cloned().collect()),
        Some(_) => Err(ServeError::InvalidArgument(
            "'parameters' must be an object".into(),
        )),
    }
}

/// `POST /v2/repository/models/{model}/load`: (re)loads a model's versions
/// from the repository now.
pub(crate) async fn repository_load(
    Extract(state): Extract<Arc<State>>,
    Path(model): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let result = async {
        // Refused before a body of up to the message limit is read.
        repository::check_control(&state)?;
        let (request, _charge) = load_request(&state, &model, &headers, body).await?;
        repository::load(state.clone(), model, request).await
    };
    ok(result.await.map(|()| json!({})))
}

/// `POST /v2/repository/models/{model}/unload`: unloads every version
/// until loaded again; running requests finish.
pub(crate) async fn repository_unload(
    Extract(state): Extract<Arc<State>>,
    Path(model): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let result = async {
        let body = control_body(&state, &headers, body).await?;
        parameter_names(&body)?;
        let dependents = match body
            .get("parameters")
            .and_then(|p| p.get("unload_dependents"))
        {
            None => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => {
                return Err(ServeError::InvalidArgument(
                    "parameter 'unload_dependents' must be a boolean".into(),
                ));
            }
        };
        repository::unload(state.clone(), model, dependents).await
    };
    ok(result.await.map(|()| json!({})))
}

fn shm_status(state: &State, name: &str) -> Response {
    ok(state.shared_memory.status(name).map(|regions| {
        let regions: Vec<SystemSharedMemoryRegion> = regions
            .into_iter()
            .map(|r| SystemSharedMemoryRegion {
                name: r.name,
                key: r.key,
                offset: r.offset,
                byte_size: r.byte_size,
            })
            .collect();
        serde_json::to_value(regions).unwrap_or_default()
    }))
}

/// `GET /v2/systemsharedmemory/status`.
pub(crate) async fn shm_status_all(Extract(state): Extract<Arc<State>>) -> Response {
    shm_status(&state, "")
}

/// `GET /v2/systemsharedmemory/region/{name}/status`.
pub(crate) async fn shm_status_region(
    Extract(state): Extract<Arc<State>>,
    Path(name): Path<String>,
) -> Response {
    shm_status(&state, &name)
}

/// `POST /v2/systemsharedmemory/region/{name}/register`, body
/// `{"key": string, "offset": number, "byte_size": number}`.
pub(crate) async fn shm_register(
    Extract(state): Extract<Arc<State>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let result = async {
        if !state.shared_memory.enabled() {
            return Err(ServeError::FailedPrecondition(
                crate::service::shared_memory::DISABLED.into(),
            ));
        }
        let body = control_body(&state, &headers, body).await?;
        let RegisterSystemSharedMemory {
            key,
            offset,
            byte_size,
        } = typed(body)?;
        SharedMemory::register_off_workers(state.clone(), name, key, offset, byte_size).await
    };
    ok(result.await.map(|()| json!({})))
}

/// `POST /v2/systemsharedmemory/unregister`: every region.
pub(crate) async fn shm_unregister_all(Extract(state): Extract<Arc<State>>) -> Response {
    ok(state.shared_memory.unregister("").map(|()| json!({})))
}

/// `POST /v2/systemsharedmemory/region/{name}/unregister`.
pub(crate) async fn shm_unregister_region(
    Extract(state): Extract<Arc<State>>,
    Path(name): Path<String>,
) -> Response {
    ok(state.shared_memory.unregister(&name).map(|()| json!({})))
}

/// `GET /v2/cudasharedmemory/status`: no region (see
/// [`cuda_shared_memory`]).
pub(crate) async fn cuda_status_all() -> Response {
    ok(cuda_shared_memory::status("").map(|()| json!([])))
}

/// `GET /v2/cudasharedmemory/region/{name}/status`: not found.
pub(crate) async fn cuda_status_region(Path(name): Path<String>) -> Response {
    ok(cuda_shared_memory::status(&name).map(|()| json!([])))
}

/// `POST /v2/cudasharedmemory/region/{name}/register`: refused.
pub(crate) async fn cuda_register(Path(name): Path<String>) -> Response {
    ok(Err::<serde_json::Value, _>(cuda_shared_memory::register(
        &name,
    )))
}

/// `POST /v2/cudasharedmemory/unregister`: nothing to unregister.
pub(crate) async fn cuda_unregister_all() -> Response {
    ok(cuda_shared_memory::unregister("").map(|()| json!({})))
}

/// `POST /v2/cudasharedmemory/region/{name}/unregister`.
pub(crate) async fn cuda_unregister_region(Path(name): Path<String>) -> Response {
    ok(cuda_shared_memory::unregister(&name).map(|()| json!({})))
}

/// `GET /v2/trace/setting`.
pub(crate) async fn trace_get(Extract(state): Extract<Arc<State>>) -> Response {
    ok(service_trace::settings(&state, "").map(trace_json))
}

/// `GET /v2/models/{model}/trace/setting`.
pub(crate) async fn model_trace_get(
    Extract(state): Extract<Arc<State>>,
    Path(model): Path<String>,
) -> Response {
    ok(service_trace::settings(&state, &model).map(trace_json))
}

/// `POST /v2/trace/setting`.
pub(crate) async fn trace_post(
    Extract(state): Extract<Arc<State>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    trace_update(&state, String::new(), &headers, body).await
}

/// `POST /v2/models/{model}/trace/setting`.
pub(crate) async fn model_trace_post(
    Extract(state): Extract<Arc<State>>,
    Path(model): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    trace_update(&state, model, &headers, body).await
}

async fn trace_update(
    state: &Arc<State>,
    model: String,
    headers: &HeaderMap,
    body: Body,
) -> Response {
    let result = async {
        let body = control_body(state, headers, body).await?;
        let mut changes = Vec::with_capacity(body.len());
        for (name, v) in body {
            let value = match v {
                Value::Null => None,
                Value::String(s) => Some(vec![s]),
                Value::Array(items) => {
                    if items.is_empty() {
                        None
                    } else {
                        Some(
                            items
                                .into_iter()
                                .map(|i| match i {
                                    Value::String(s) => s,
                                    other => other.to_string(),
                                })
                                .collect(),
                        )
                    }
                }
                other => Some(vec![other.to_string()]),
            };
            changes.push((name, value));
        }
        service_trace::update(state, &model, changes)
    };
    ok(result.await.map(trace_json))
}

/// Triton's JSON form: `trace_level` a list, the others strings.
fn trace_json(settings: Vec<(&'static str, Vec<String>)>) -> Value {
    Value::Object(
        settings
            .into_iter()
            .map(|(k, mut v)| {
                let value = if k == "trace_level" {
                    Value::from(v)
                } else {
                    Value::String(v.pop().unwrap_or_default())
                };
                (k.to_owned(), value)
            })
            .collect(),
    )
}

/// `GET /v2/logging`: the log settings.
pub(crate) async fn logging_get() -> Response {
    Json(settings_json(service_logging::current())).into_response()
}

/// `POST /v2/logging`, a JSON object of settings to change: all of them,
/// changed.
pub(crate) async fn logging_post(
    Extract(state): Extract<Arc<State>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let result = async {
        let body = control_body(&state, &headers, body).await?;
        let mut changes = Vec::with_capacity(body.len());
        for (name, v) in body {
            let value = match v {
                Value::Bool(b) => service_logging::Value::Bool(b),
                Value::String(s) => service_logging::Value::Text(s),
                Value::Number(n) => match n.as_u64().and_then(|n| u32::try_from(n).ok()) {
                    Some(n) => service_logging::Value::Uint(n),
                    None => service_logging::Value::Text(n.to_string()),
                },
                other => service_logging::Value::Text(other.to_string()),
            };
            changes.push((name, value));
        }
        service_logging::update(changes)
    };
    ok(result.await.map(settings_json))
}

fn settings_json(settings: Vec<(&'static str, service_logging::Value)>) -> Value {
    Value::Object(
        settings
            .into_iter()
            .map(|(k, v)| {
                let v = match v {
                    service_logging::Value::Bool(b) => Value::Bool(b),
                    service_logging::Value::Uint(n) => Value::from(n),
                    service_logging::Value::Text(s) => Value::String(s),
                };
                (k.to_owned(), v)
            })
            .collect(),
    )
}
