//! REST: MindSpore Serving's `POST /model/...` and the Open Inference
//! Protocol's `/v2` routes, with the binary tensor extension.

use std::time::Instant;

use bytes::{Bytes, BytesMut};
use serde_json::Value;
use serving_proto::mindspore::{self, InstanceResult, Outcome, StatusCode};
use serving_proto::oip::rest::{self as oip_rest, BINARY_DATA_OUTPUT, HEADER_LENGTH};
use serving_proto::oip::{InferRequest, InferResponse, Parameter};
use serving_proto::{NamedTensors, TensorData, frame};

use serving_proto::oip::extensions::{
    CudaSharedMemoryRegion, ModelControlRequest, RawHandle, RegisterCudaSharedMemory,
    RegisterSystemSharedMemory, RepositoryIndexRequest, RepositoryModel, SystemSharedMemoryRegion,
};
use serving_proto::pb::inference::{ModelConfig, ModelStatistics, ModelStatisticsResponse};

use super::{Call, CallCtx, CudaRegistration, ModelMetadata, ServerMetadata, Transport};
use crate::error::{Error, SizeSide, chain_text, transport_kind};
use serving_proto::compression::Encoding;

/// One REST endpoint.
#[derive(Clone, Debug)]
pub(crate) struct Rest {
    pub http: reqwest::Client,
    pub base: String,
    pub label: String,
    /// Inputs of at least this many payload bytes make the request binary.
    pub binary_threshold: usize,
}

struct Reply {
    status: u16,
    header_len: Option<String>,
    body: Bytes,
}

/// Refuses a JSON body that is certainly over the cap and too big to build
/// just to measure; its size is then reported as the lower bound.
fn check_lower_bound(bound: u64, ctx: &CallCtx) -> Result<(), Error> {
    if bound > BUILD_LIMIT {
        ctx.check_send(bound)?;
    }
    Ok(())
}

/// Bodies at least this large are refused from their lower bound without
/// being built (building them would cost as much memory again).
const BUILD_LIMIT: u64 = 64 << 20;

/// The smallest a JSON body of these tensors can be: one byte per element
/// at least, and the raw size of variable-length elements.
fn json_lower_bound<'a>(tensors: impl Iterator<Item = &'a serving_proto::Tensor>) -> u64 {
    tensors
        .map(|t| match t.data() {
            TensorData::Raw(_) => t.element_count() as u64,
            TensorData::Elements(e) => e.iter().map(|b| b.len() as u64).sum(),
        })
        .sum()
}

impl Rest {
    fn error(&self, reply: &Reply, ctx: &CallCtx, sent: u64) -> Error {
        let text = serde_json::from_slice::<Value>(&reply.body)
            .ok()
            .and_then(|v| {
                v.get("error")
                    .or_else(|| v.get("error_msg"))
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            })
            .unwrap_or_else(|| {
                String::from_utf8_lossy(&reply.body)
                    .chars()
                    .take(300)
                    .collect()
            });
        let endpoint = self.label.clone();
        match reply.status {
            413 => {
                let (size, limit) = match frame::parse_too_large(&text) {
                    Some((s, l)) => (Some(s), Some(l)),
                    None => (
                        Some(sent),
                        text.rsplit(' ').next().and_then(|n| n.parse().ok()),
                    ),
                };
                Error::MessageTooLarge {
                    size,
                    limit,
                    side: SizeSide::Server,
                }
            }
            400 | 405 => Error::InvalidArgument { message: text },
            401 | 403 => Error::Unauthenticated { message: text },
            404 => Error::NotFound { message: text },
            429 | 503 => Error::Unavailable {
                endpoint,
                message: text,
            },
            501 => Error::Unimplemented {
                endpoint,
                message: text,
            },
            504 => Error::DeadlineExceeded {
                endpoint,
                timeout: ctx.timeout,
                message: text,
                source: None,
            },
            _ => Error::Server {
                endpoint,
                message: format!("HTTP {}: {text}", reply.status),
            },
        }
    }

    /// A failure below HTTP, classified by reqwest's own kinds and the
    /// typed causes it keeps.
    fn transport(&self, e: reqwest::Error, ctx: &CallCtx) -> Error {
        let message = chain_text(&e);
        if e.is_timeout() {
            return Error::DeadlineExceeded {
                endpoint: self.label.clone(),
                timeout: ctx.timeout,
                message,
                source: Some(Box::new(e)),
            };
        }
        Error::Transport {
            endpoint: self.label.clone(),
            kind: transport_kind(&e, e.is_connect()),
            message,
            source: Some(Box::new(e)),
        }
    }

    async fn send(&self, ctx: &CallCtx, req: reqwest::RequestBuilder) -> Result<Reply, Error> {
        let mut req = req.headers((*ctx.headers).clone());
        if ctx.compression.is_some() {
            req = req.header("accept-encoding", "gzip, deflate");
        }
        if let Some(t) = ctx.timeout {
            req = req.timeout(t).header(
                serving_proto::REST_TIMEOUT_HEADER,
                t.as_millis().max(1).to_string(),
            );
        }
        let mut resp = req.send().await.map_err(|e| self.transport(e, ctx))?;
        if let Some(len) = resp.content_length()
            && len > ctx.max_receive
        {
            return Err(Error::MessageTooLarge {
                size: Some(len),
                limit: Some(ctx.max_receive),
                side: SizeSide::Client,
            });
        }
        let status = resp.status().as_u16();
        let encoding = match resp.headers().get("content-encoding") {
            None => None,
            Some(v) if v.as_bytes().eq_ignore_ascii_case(b"identity") => None,
            Some(v) => Some(
                v.to_str()
                    .ok()
                    .and_then(Encoding::from_name)
                    .filter(|_| ctx.compression.is_some())
                    .ok_or_else(|| Error::Protocol {
                        endpoint: self.label.clone(),
                        message: format!(
                            "the reply's Content-Encoding {v:?} is not one this client accepted"
                        ),
                    })?,
            ),
        };
        let header_len = resp
            .headers()
            .get(HEADER_LENGTH)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        // The chunks are kept as they come and joined once at the end (a
        // body in one chunk is not copied at all).
        let mut chunks: Vec<Bytes> = Vec::new();
        let mut received = 0u64;
        while let Some(chunk) = resp.chunk().await.map_err(|e| self.transport(e, ctx))? {
            received += chunk.len() as u64;
            if received > ctx.max_receive {
                return Err(Error::MessageTooLarge {
                    size: Some(received),
                    limit: Some(ctx.max_receive),
                    side: SizeSide::Client,
                });
            }
            chunks.push(chunk);
        }
        let mut body = match chunks.len() {
            0 => Bytes::new(),
            1 => chunks.swap_remove(0),
            _ => {
                let mut joined = BytesMut::with_capacity(received as usize);
                chunks.iter().for_each(|c| joined.extend_from_slice(c));
                joined.freeze()
            }
        };
        if let Some(e) = encoding {
            let inflating = Instant::now();
            body = super::inflate_reply(e, body, ctx.max_receive, &self.label).await?;
            ctx.received(inflating.elapsed());
        }
        Ok(Reply {
            status,
            header_len,
            body,
        })
    }

    async fn get(&self, ctx: &CallCtx, path: &str) -> Result<Reply, Error> {
        self.send(ctx, self.http.get(format!("{}{path}", self.base)))
            .await
    }

    /// A POST of a JSON body.
    async fn post_json(
        &self,
        ctx: &CallCtx,
        path: &str,
        body: &impl serde::Serialize,
    ) -> Result<Reply, Error> {
        let body = serde_json::to_vec(body).map_err(|e| Error::Request(e.to_string()))?;
        ctx.check_send(body.len() as u64)?;
        let req = self
            .http
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .body(body);
        self.send(ctx, req).await
    }

    async fn health(&self, ctx: CallCtx, path: &str) -> Result<bool, Error> {
        let reply = self.get(&ctx, path).await?;
        match reply.status {
            200 => Ok(true),
            400..=499 | 503 if reply.status != 401 && reply.status != 404 => Ok(false),
            _ => Err(self.error(&reply, &ctx, 0)),
        }
    }

    fn model_path(name: &str, version: &str) -> String {
        let name = segment(name);
        if version.is_empty() {
            format!("/v2/models/{name}")
        } else {
            format!("/v2/models/{name}/versions/{}", segment(version))
        }
    }

    /// A 200 reply's JSON body as `T`; any other reply is the call's error.
    fn typed<T: serde::de::DeserializeOwned>(
        &self,
        reply: Reply,
        ctx: &CallCtx,
    ) -> Result<T, Error> {
        if reply.status != 200 {
            return Err(self.error(&reply, ctx, 0));
        }
        serde_json::from_slice(&reply.body).map_err(|e| self.protocol(e))
    }

    /// A 200 reply's JSON body as the protobuf message `M` in its JSON
    /// mapping (Triton's configuration and statistics).
    fn message<M: prost::Message + Default>(
        &self,
        reply: Reply,
        ctx: &CallCtx,
        full_name: &str,
    ) -> Result<M, Error> {
        let json: Value = self.typed(reply, ctx)?;
        serving_proto::json_mapping::from_json(&json, full_name).map_err(|e| self.protocol(e))
    }

    /// A 200 reply whose body is not needed.
    fn done(&self, reply: Reply, ctx: &CallCtx) -> Result<(), Error> {
        if reply.status != 200 {
            return Err(self.error(&reply, ctx, 0));
        }
        Ok(())
    }

    /// A reply that does not decode.
    fn protocol(&self, e: impl std::fmt::Display) -> Error {
        super::protocol_error(&self.label, e)
    }
}

impl Transport for Rest {
    fn label(&self) -> &str {
        &self.label
    }

    fn predict<'a>(
        &'a self,
        ctx: CallCtx,
        servable: &'a str,
        method: &'a str,
        version: u64,
        instances: &'a [NamedTensors],
    ) -> Call<'a, Vec<InstanceResult>> {
        Box::pin(async move {
            let servable = plain_segment("servable", servable)?;
            let method = plain_segment("method", method)?;
            check_lower_bound(
                json_lower_bound(instances.iter().flat_map(|i| i.values())),
                &ctx,
            )?;
            let body = mindspore::rest::encode_request(instances)
                .map_err(|e| Error::Request(e.to_string()))?;
            let sent = body.len() as u64;
            ctx.check_send(sent)?;
            let path = if version == 0 {
                format!("{}/model/{servable}:{method}", self.base)
            } else {
                format!("{}/model/{servable}/version/{version}:{method}", self.base)
            };
            let mut http = self
                .http
                .post(path)
                .header("content-type", "application/json");
            http = match ctx.compression {
                Some(e) => http
                    .header("content-encoding", e.name())
                    .body(super::compress_body(e, vec![Bytes::from(body)]).await),
                None => http.body(body),
            };
            let reply = self.send(&ctx, http).await?;
            // MindSpore answers 200 to everything, errors included; servers that
            // also set an HTTP status (ours does) still carry the in-band text.
            // A size refusal is the typed size error either way.
            if reply.status == 413 {
                return Err(self.error(&reply, &ctx, sent));
            }
            match mindspore::rest::decode_response(&reply.body, instances.len()) {
                Ok(Outcome::Failed(e)) => Err(Error::Servable(match reply.status {
                    // JSON carries no code: the status restores the class.
                    400 | 404 => e.with_code(StatusCode::InvalidInputs),
                    500 => e.with_code(StatusCode::SystemError),
                    503 if e.message.ends_with("servable is not available") => {
                        e.with_code(StatusCode::ServableUnavailable)
                    }
                    _ => e,
                })),
                _ if reply.status != 200 => Err(self.error(&reply, &ctx, sent)),
                Ok(Outcome::Instances(results)) => Ok(results),
                Err(e) => Err(self.protocol(e)),
            }
        })
    }

    fn infer<'a>(&'a self, ctx: CallCtx, req: &'a InferRequest) -> Call<'a, InferResponse> {
        Box::pin(async move {
            let binary = req
                .inputs
                .iter()
                .any(|i| i.tensor.payload_len() >= self.binary_threshold);
            // Binary outputs when the inputs go binary, asked for as Triton
            // reads it: `binary_data_output` applies only when no output is
            // listed; a listed output says so with its own `binary_data`.
            let asks =
                |params: &serving_proto::oip::Parameters, key: &str| params.contains_key(key);
            // Outputs placed in shared memory travel in neither form (Triton
            // refuses `binary_data` beside a region).
            let placed = |o: &serving_proto::oip::RequestedOutput| {
                serving_proto::oip::shared_memory::is_placed(&o.parameters)
            };
            let unasked = if req.outputs.is_empty() {
                !asks(&req.parameters, BINARY_DATA_OUTPUT)
            } else {
                req.outputs
                    .iter()
                    .any(|o| !placed(o) && !asks(&o.parameters, oip_rest::BINARY_DATA))
            };
            let mut owned;
            let req = if binary && unasked {
                owned = req.clone();
                if owned.outputs.is_empty() {
                    owned
                        .parameters
                        .insert(BINARY_DATA_OUTPUT.into(), Parameter::Bool(true));
                }
                for o in owned.outputs.iter_mut().filter(|o| !placed(o)) {
                    o.parameters
                        .entry(oip_rest::BINARY_DATA.into())
                        .or_insert(Parameter::Bool(true));
                }
                &owned
            } else {
                req
            };
            if !binary {
                check_lower_bound(json_lower_bound(req.inputs.iter().map(|i| &i.tensor)), &ctx)?;
            }
            let encoding = Instant::now();
            let body =
                oip_rest::encode_request(req, binary).map_err(|e| Error::Request(e.to_string()))?;
            ctx.sent(encoding.elapsed());
            let sent = body.len() as u64;
            ctx.check_send(sent)?;
            let path = format!(
                "{}{}/infer",
                self.base,
                Self::model_path(&req.model_name, &req.model_version)
            );
            let mut http = self
                .http
                .post(path)
                .header("content-type", body.content_type());
            if let Some(n) = body.header_len {
                http = http.header(HEADER_LENGTH, n);
            }
            let http = match ctx.compression {
                Some(e) => http
                    .header("content-encoding", e.name())
                    .body(super::compress_body(e, body.parts).await),
                None => http.body(futures_body(body.parts)),
            };
            let reply = self.send(&ctx, http).await?;
            if reply.status != 200 {
                return Err(self.error(&reply, &ctx, sent));
            }
            let decoding = Instant::now();
            let header_len = match &reply.header_len {
                None => None,
                Some(v) => Some(
                    oip_rest::parse_header_length(v, reply.body.len())
                        .map_err(|e| self.protocol(e))?,
                ),
            };
            // Outputs placed in shared memory come back without data:
            // with their placement (this server), or with nothing (Triton),
            // read then where the request placed them.
            let resp = oip_rest::decode_response_placed(
                reply.body,
                header_len,
                &req.outputs,
                &mut ctx.outputs_in_shared_memory(),
            )
            .map_err(|e| self.protocol(e));
            ctx.received(decoding.elapsed());
            let mut resp = resp?;
            if resp.model_name.is_empty() {
                resp.model_name = req.model_name.clone();
            }
            Ok(resp)
        })
    }

    fn server_live(&self, ctx: CallCtx) -> Call<'_, bool> {
        Box::pin(self.health(ctx, "/v2/health/live"))
    }

    fn server_ready(&self, ctx: CallCtx) -> Call<'_, bool> {
        Box::pin(self.health(ctx, "/v2/health/ready"))
    }

    fn model_ready<'a>(&'a self, ctx: CallCtx, name: &'a str, version: &'a str) -> Call<'a, bool> {
        Box::pin(async move {
            self.health(ctx, &format!("{}/ready", Self::model_path(name, version)))
                .await
        })
    }

    fn server_metadata(&self, ctx: CallCtx) -> Call<'_, ServerMetadata> {
        Box::pin(async move { self.typed(self.get(&ctx, "/v2").await?, &ctx) })
    }

    fn model_metadata<'a>(
        &'a self,
        ctx: CallCtx,
        name: &'a str,
        version: &'a str,
    ) -> Call<'a, ModelMetadata> {
        Box::pin(async move {
            let reply = self.get(&ctx, &Self::model_path(name, version)).await?;
            let mut m: ModelMetadata = self.typed(reply, &ctx)?;
            if m.name.is_empty() {
                m.name = name.to_owned();
            }
            Ok(m)
        })
    }

    fn model_config<'a>(
        &'a self,
        ctx: CallCtx,
        name: &'a str,
        version: &'a str,
    ) -> Call<'a, ModelConfig> {
        Box::pin(async move {
            let path = format!("{}/config", Self::model_path(name, version));
            let reply = self.get(&ctx, &path).await?;
            self.message(reply, &ctx, "inference.ModelConfig")
        })
    }

    fn model_statistics<'a>(
        &'a self,
        ctx: CallCtx,
        name: &'a str,
        version: &'a str,
    ) -> Call<'a, Vec<ModelStatistics>> {
        Box::pin(async move {
            let path = if name.is_empty() {
                "/v2/models/stats".to_owned()
            } else {
                format!("{}/stats", Self::model_path(name, version))
            };
            let reply = self.get(&ctx, &path).await?;
            let stats: ModelStatisticsResponse =
                self.message(reply, &ctx, "inference.ModelStatisticsResponse")?;
            Ok(stats.model_stats)
        })
    }

    fn repository_index(&self, ctx: CallCtx, ready: bool) -> Call<'_, Vec<RepositoryModel>> {
        Box::pin(async move {
            let reply = self
                .post_json(
                    &ctx,
                    "/v2/repository/index",
                    &RepositoryIndexRequest { ready },
                )
                .await?;
            self.typed(reply, &ctx)
        })
    }

    fn model_control<'a>(
        &'a self,
        ctx: CallCtx,
        name: &'a str,
        load: Option<&'a crate::LoadOptions>,
    ) -> Call<'a, ()> {
        use base64::Engine as _;
        Box::pin(async move {
            let mut body = ModelControlRequest::default();
            if let Some(options) = load {
                if let Some(config) = &options.config {
                    body.parameters
                        .insert("config".into(), Value::String(config.clone()));
                }
                for (path, contents) in &options.files {
                    body.parameters.insert(
                        format!("file:{path}"),
                        Value::String(base64::engine::general_purpose::STANDARD.encode(contents)),
                    );
                }
            }
            let action = if load.is_some() { "load" } else { "unload" };
            let reply = self
                .post_json(
                    &ctx,
                    &format!("/v2/repository/models/{}/{action}", segment(name)),
                    &body,
                )
                .await?;
            self.done(reply, &ctx)
        })
    }

    fn register_system_shared_memory<'a>(
        &'a self,
        ctx: CallCtx,
        region: &'a SystemSharedMemoryRegion,
    ) -> Call<'a, ()> {
        Box::pin(async move {
            let body = RegisterSystemSharedMemory {
                key: region.key.clone(),
                offset: region.offset,
                byte_size: region.byte_size,
            };
            let path = memory_path("systemsharedmemory", &region.name, "register");
            let reply = self.post_json(&ctx, &path, &body).await?;
            self.done(reply, &ctx)
        })
    }

    fn unregister_system_shared_memory<'a>(&'a self, ctx: CallCtx, name: &'a str) -> Call<'a, ()> {
        Box::pin(async move {
            let path = memory_path("systemsharedmemory", name, "unregister");
            let reply = self.post_json(&ctx, &path, &serde_json::json!({})).await?;
            self.done(reply, &ctx)
        })
    }

    fn system_shared_memory_status<'a>(
        &'a self,
        ctx: CallCtx,
        name: &'a str,
    ) -> Call<'a, Vec<SystemSharedMemoryRegion>> {
        Box::pin(async move {
            let path = memory_path("systemsharedmemory", name, "status");
            let reply = self.get(&ctx, &path).await?;
            self.typed(reply, &ctx)
        })
    }

    fn register_cuda_shared_memory<'a>(
        &'a self,
        ctx: CallCtx,
        region: &'a CudaRegistration,
    ) -> Call<'a, ()> {
        Box::pin(async move {
            use base64::Engine as _;
            let body = RegisterCudaSharedMemory {
                raw_handle: RawHandle {
                    b64: base64::engine::general_purpose::STANDARD.encode(&region.raw_handle),
                },
                device_id: region.device_id,
                byte_size: region.byte_size,
            };
            let path = memory_path("cudasharedmemory", &region.name, "register");
            let reply = self.post_json(&ctx, &path, &body).await?;
            self.done(reply, &ctx)
        })
    }

    fn unregister_cuda_shared_memory<'a>(&'a self, ctx: CallCtx, name: &'a str) -> Call<'a, ()> {
        Box::pin(async move {
            let path = memory_path("cudasharedmemory", name, "unregister");
            let reply = self.post_json(&ctx, &path, &serde_json::json!({})).await?;
            self.done(reply, &ctx)
        })
    }

    fn cuda_shared_memory_status<'a>(
        &'a self,
        ctx: CallCtx,
        name: &'a str,
    ) -> Call<'a, Vec<CudaSharedMemoryRegion>> {
        Box::pin(async move {
            let path = memory_path("cudasharedmemory", name, "status");
            let reply = self.get(&ctx, &path).await?;
            self.typed(reply, &ctx)
        })
    }

    fn trace_settings<'a>(
        &'a self,
        ctx: CallCtx,
        model: &'a str,
        changes: &'a crate::TraceChanges,
    ) -> Call<'a, crate::TraceSettings> {
        Box::pin(async move {
            let path = if model.is_empty() {
                "/v2/trace/setting".to_owned()
            } else {
                format!("/v2/models/{}/trace/setting", segment(model))
            };
            let reply = if changes.is_empty() {
                self.get(&ctx, &path).await?
            } else {
                self.post_json(&ctx, &path, changes).await?
            };
            // Triton writes `trace_level` as a list, the others as strings.
            let all: std::collections::BTreeMap<String, serde_json::Value> =
                self.typed(reply, &ctx)?;
            Ok(all
                .into_iter()
                .map(|(k, v)| {
                    let values = match v {
                        serde_json::Value::Array(items) => items
                            .into_iter()
                            .map(|i| match i {
                                serde_json::Value::String(s) => s,
                                other => other.to_string(),
                            })
                            .collect(),
                        serde_json::Value::String(s) => vec![s],
                        other => vec![other.to_string()],
                    };
                    (k, values)
                })
                .collect())
        })
    }

    fn log_settings<'a>(
        &'a self,
        ctx: CallCtx,
        changes: &'a crate::LogSettings,
    ) -> Call<'a, crate::LogSettings> {
        Box::pin(async move {
            let reply = if changes.is_empty() {
                self.get(&ctx, "/v2/logging").await?
            } else {
                self.post_json(&ctx, "/v2/logging", changes).await?
            };
            self.typed(reply, &ctx)
        })
    }
}

/// The route of a shared-memory call (`family`: `systemsharedmemory` or
/// `cudasharedmemory`) on region `name`, or on every region when `name` is
/// empty (unregister, status).
fn memory_path(family: &str, name: &str, action: &str) -> String {
    if name.is_empty() {
        format!("/v2/{family}/{action}")
    } else {
        format!("/v2/{family}/region/{}/{action}", segment(name))
    }
}

fn futures_body(parts: Vec<Bytes>) -> reqwest::Body {
    if let [one] = parts.as_slice() {
        return reqwest::Body::from(one.clone());
    }
    reqwest::Body::wrap(serving_proto::grpc_body::MessageBody::new(parts))
}

/// What a path segment percent-encodes: controls, space, the characters
/// that end or split a path (`/ ? #`), `%` itself, and those a URL may not
/// hold bare. A model named `a/b` is then one segment (`a%2Fb`), which the
/// server decodes back, instead of another route.
const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'/')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'[')
    .add(b'\\')
    .add(b']')
    .add(b'^')
    .add(b'`')
    .add(b'{')
    .add(b'|')
    .add(b'}');

/// `s` as one path segment.
fn segment(s: &str) -> percent_encoding::PercentEncode<'_> {
    percent_encoding::utf8_percent_encode(s, SEGMENT)
}

/// `s` as it stands in a MindSpore `/model/{servable}:{method}` path, or a
/// refusal: MindSpore servers do not percent-decode that path, so a name
/// that would need encoding, holds the `:` that ends the servable, or is a
/// dot segment (which URL normalisation removes) cannot be sent there.
fn plain_segment<'s>(what: &str, s: &'s str) -> Result<&'s str, Error> {
    let unchanged = matches!(
        std::borrow::Cow::from(segment(s)),
        std::borrow::Cow::Borrowed(_)
    );
    if unchanged && !matches!(s, "" | "." | "..") && !s.contains(':') {
        return Ok(s);
    }
    let shown: String = s.chars().take(128).collect();
    Err(Error::Request(format!(
        "the {what} name {shown:?} cannot be sent in a MindSpore REST path: MindSpore servers do not decode one, so it must be non-empty, not '.' or '..', and hold no ':' and nothing that needs percent-encoding (such as '/', '%', '?', '#', spaces, quotes, brackets, control or non-ASCII characters); use gRPC for such a name"
    )))
}
