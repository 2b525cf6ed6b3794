//! `inference.GRPCInferenceService`: the Open Inference Protocol RPCs and
//! Triton's extensions (streaming, model configuration, statistics,
//! repository, system shared memory). CUDA shared memory, trace and log
//! settings answer UNIMPLEMENTED with a text saying why.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use futures_util::future::Either;
use futures_util::stream::{BoxStream, FuturesOrdered, SelectAll, Stream, StreamExt};
use serving_proto::oip::grpc::{self as codec, Contents};
use serving_proto::pb::inference::{
    self as pb, grpc_inference_service_server::GrpcInferenceService,
};
use tonic::{Request, Response, Status, Streaming};

use super::mindspore::check_reply_size;
use crate::error::ServeError;
use crate::metrics::Front;
use crate::service::Class;
use crate::service::shared_memory::SharedMemory;
use crate::service::{State, cuda_shared_memory, model_config, oip, repository, statistics};

/// The `GRPCInferenceService` implementation.
#[derive(Clone, Debug)]
pub(crate) struct OipGrpc {
    state: Arc<State>,
}

/// The header with which a Triton client asks for stream errors as a gRPC
/// status that ends the stream, instead of in-band messages.
pub(crate) const STATUS_ERRORS_HEADER: &str = "triton_grpc_error";

/// The most requests of one stream running at once; the stream's next
/// request is read when one of them is answered.
pub(crate) const STREAM_IN_FLIGHT: usize = 256;

impl OipGrpc {
    /// A service over the shared state.
    pub(crate) fn new(state: Arc<State>) -> OipGrpc {
        OipGrpc { state }
    }

    /// One `ModelInferRequest`, unary or on a stream, without the metrics.
    async fn infer_message(
        &self,
        msg: pb::ModelInferRequest,
        deadline: Option<Instant>,
        incoming: &oip::Incoming,
    ) -> Result<pb::ModelInferResponse, Status> {
        let state = &self.state;
        // An unknown model is NOT_FOUND whatever the tensors hold.
        let model = oip::resolve(state, &msg.model_name, &msg.model_version).map_err(status)?;
        if model
            .servable
            .method(&model.method)
            .is_some_and(|m| m.decoupled)
        {
            return Err(Status::unimplemented(DECOUPLED_UNARY));
        }
        let req = codec::decode_request_with(msg, &mut |_, p| state.shared_memory.input(p))
            .map_err(|e| status(e.into()))?;
        let resp = oip::infer(state, req, deadline, incoming)
            .await
            .map_err(status)?;
        // Outputs are raw whatever form the inputs took, as Triton answers
        // (clients read `raw_output_contents`; tritonclient's typed-contents
        // examples do).
        let reply = codec::encode_response(&resp, Contents::Raw).map_err(|e| status(e.into()))?;
        check_reply_size(&reply, state.max_msg_bytes)?;
        Ok(reply)
    }

    /// [`OipGrpc::infer_message`], recorded in the metrics.
    async fn infer_recorded(
        &self,
        msg: pb::ModelInferRequest,
        deadline: Option<Instant>,
        incoming: &oip::Incoming,
    ) -> Result<pb::ModelInferResponse, Status> {
        let started = Instant::now();
        let model = msg.model_name.clone();
        let result = self.infer_message(msg, deadline, incoming).await;
        let class = match &result {
            Ok(_) => Class::Ok,
            Err(s) => Class::of_grpc(s.code()),
        };
        self.state
            .record(Front::OipGrpc, &model, class, started.elapsed());
        result
    }
    /// The responses of one request to a decoupled model, as the model
    /// sends them, then nothing: each marked last or not, the empty last
    /// one only when the request asked for it
    /// (`triton_enable_empty_final_response`). What the request held is
    /// given back when its last response is handed on.
    fn decoupled(
        &self,
        msg: pb::ModelInferRequest,
        deadline: Option<Instant>,
        held: Held,
    ) -> BoxStream<'static, StreamAnswer> {
        let state = self.state.clone();
        let (id, model, version) = (
            msg.id.clone(),
            msg.model_name.clone(),
            msg.model_version.clone(),
        );
        let empty_final = matches!(
            msg.parameters
                .get(EMPTY_FINAL)
                .and_then(|p| p.parameter_choice.as_ref()),
            Some(pb::infer_parameter::ParameterChoice::BoolParam(true))
        );
        let started = Instant::now();
        let decoded = codec::decode_request_with(msg, &mut |_, p| state.shared_memory.input(p))
            .map_err(|e| status(e.into()))
            .and_then(|req| oip::infer_decoupled(state.clone(), req, deadline).map_err(status));
        let rx = match decoded {
            Ok(rx) => rx,
            Err(e) => {
                state.record(
                    Front::OipGrpc,
                    &model,
                    Class::of_grpc(e.code()),
                    started.elapsed(),
                );
                return futures_util::stream::once(std::future::ready(Err((
                    e, id, model, version,
                ))))
                .boxed();
            }
        };
        let max = state.max_msg_bytes;
        futures_util::stream::unfold(Some((rx, held, state)), move |s| {
            let (id, model, version) = (id.clone(), model.clone(), version.clone());
            async move {
                let (mut rx, held, state) = s?;
                let Some(item) = rx.recv().await else {
                    // The request's task went away (the server stops):
                    // nothing more comes.
                    drop(held);
                    return None;
                };
                let answer = item.map_err(status).and_then(|r| {
                    let reply = codec::encode_response(&r.response, Contents::Raw)
                        .map_err(|e| status(e.into()))?;
                    check_reply_size(&reply, max)?;
                    Ok((reply, r.last, r.response.outputs.is_empty()))
                });
                match answer {
                    Ok((reply, last, empty)) => {
                        if last {
                            state.record(Front::OipGrpc, &model, Class::Ok, started.elapsed());
                        }
                        if last && empty && !empty_final {
                            drop(held);
                            return None;
                        }
                        let next = (!last).then_some((rx, held, state));
                        Some((Ok(marked(reply, last)), next))
                    }
                    Err(e) => {
                        // A response with the model's error: the request
                        // goes on, as in Triton; a failure of the whole
                        // request ends it.
                        let ends = rx.is_closed() && rx.is_empty();
                        let next = (!ends).then_some((rx, held, state));
                        Some((Err((e, id, model, version)), next))
                    }
                }
            }
        })
        .boxed()
    }

    /// Answers a stream of requests: each is an ordinary job, batched with
    /// every other client's, prioritised, refused when its deadline passes.
    /// Up to [`STREAM_IN_FLIGHT`] run at once; answers come in request
    /// order (as Triton's for a model that is not decoupled), each with its
    /// request's id. When the client goes away, the requests still queued
    /// or running are cancelled. Each request comes with the budget charge
    /// for what it holds, given back once it is answered.
    pub(crate) fn run_stream<S>(
        &self,
        mut incoming: S,
        deadline: Option<Instant>,
        status_errors: bool,
    ) -> AnswerStream
    where
        S: Stream<Item = Result<StreamRequest, Status>> + Send + Unpin + 'static,
    {
        // One answer waits in the channel at most: the others wait, still
        // charged, in `running`.
        let (tx, mut rx) = tokio::sync::mpsc::channel(1);
        let this = self.clone();
        tokio::spawn(async move {
            let mut running = FuturesOrdered::new();
            // Requests to decoupled models: their responses come as the
            // models send them, between the others' answers.
            let mut streams: SelectAll<BoxStream<'static, StreamAnswer>> = SelectAll::new();
            let mut input_done = false;
            loop {
                if input_done && running.is_empty() && streams.is_empty() {
                    return;
                }
                tokio::select! {
                    msg = incoming.next(), if !input_done && running.len() + streams.len() < STREAM_IN_FLIGHT => {
                        match msg {
                            Some(Ok(StreamRequest::Run(m, held)))
                                if oip::is_decoupled(&this.state, &m.model_name, &m.model_version) =>
                            {
                                streams.push(this.decoupled(m, deadline, held));
                            }
                            Some(Ok(StreamRequest::Run(m, held))) => {
                                let this = this.clone();
                                let (id, model, version) =
                                    (m.id.clone(), m.model_name.clone(), m.model_version.clone());
                                running.push_back(Either::Left(async move {
                                    let answer = this
                                        .infer_recorded(
                                            m,
                                            deadline,
                                            &oip::Incoming::now("ModelStreamInfer", None),
                                        )
                                        .await
                                        .map_err(|e| (e, id, model, version));
                                    (answer, held)
                                }));
                            }
                            Some(Ok(StreamRequest::Refused(e))) => {
                                // Read whole but not decoded: its id and
                                // model are unknown.
                                let answer = Err((e, String::new(), String::new(), String::new()));
                                running.push_back(Either::Right(std::future::ready((answer, None))));
                            }
                            None => input_done = true,
                            Some(Err(e)) => {
                                // The stream itself broke (a bad frame):
                                // nothing more can be read from it.
                                let _ = tx.send(Err(e)).await;
                                return;
                            }
                        }
                    }
                    Some((answer, held)) = running.next(), if !running.is_empty() => {
                        let item = match answer {
                            Ok(resp) => Ok(pb::ModelStreamInferResponse {
                                error_message: String::new(),
                                infer_response: Some(final_response(resp)),
                            }),
                            Err((e, ..)) if status_errors => Err(e),
                            Err((e, id, model, version)) => Ok(in_band(&e, id, model, version)),
                        };
                        let ends = item.is_err();
                        // A send fails only when the client went away:
                        // returning drops the running requests, which
                        // cancels them. What the request held is charged
                        // until its answer is handed on.
                        let sent = tx.send(item).await;
                        drop(held);
                        if sent.is_err() || ends {
                            return;
                        }
                    }
                    answer = streams.next(), if !streams.is_empty() => {
                        // None: the last stream ended as it was polled.
                        let Some(answer) = answer else { continue };
                        let item = match answer {
                            Ok(resp) => Ok(pb::ModelStreamInferResponse {
                                error_message: String::new(),
                                infer_response: Some(resp),
                            }),
                            Err((e, ..)) if status_errors => Err(e),
                            Err((e, id, model, version)) => Ok(in_band(&e, id, model, version)),
                        };
                        let ends = item.is_err();
                        if tx.send(item).await.is_err() || ends {
                            return;
                        }
                    }
                    () = tx.closed() => return,
                }
            }
        });
        let answers = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
        Box::pin(answers)
    }
}

/// One request of a stream as its reader hands it on.
#[derive(Debug)]
pub(crate) enum StreamRequest {
    /// Decoded, with what it holds of the server's memory budget.
    Run(pb::ModelInferRequest, Held),
    /// Read whole but refused before it was decoded (the server's memory
    /// for requests is spent): answered in its turn like a failed request,
    /// and the stream goes on.
    Refused(Status),
}

fn status(e: ServeError) -> Status {
    e.to_status()
}

/// What one request of a stream holds from the server's memory budget,
/// given back when it is answered (`None` where tonic read it).
pub(crate) type Held = Option<serving_proto::gather::Charge>;

/// The answers of a stream, in the order of its requests.
pub(crate) type AnswerStream =
    Pin<Box<dyn Stream<Item = Result<pb::ModelStreamInferResponse, Status>> + Send>>;

/// The parameter Triton puts on every streamed response: whether it is the
/// request's last. A model here answers each request with exactly one
/// response, so it is always `true`.
const FINAL_RESPONSE: &str = "triton_final_response";

/// A streamed response, marked as its request's last, as Triton marks it.
fn final_response(resp: pb::ModelInferResponse) -> pb::ModelInferResponse {
    marked(resp, true)
}

/// A streamed response marked as its request's last or not.
fn marked(mut resp: pb::ModelInferResponse, last: bool) -> pb::ModelInferResponse {
    resp.parameters.insert(
        FINAL_RESPONSE.to_owned(),
        pb::InferParameter {
            parameter_choice: Some(pb::infer_parameter::ParameterChoice::BoolParam(last)),
        },
    );
    resp
}

/// The request parameter with which a client of a decoupled model asks
/// for an empty response when the model's last carried nothing.
const EMPTY_FINAL: &str = "triton_enable_empty_final_response";

/// Triton's refusal of a unary request to a decoupled model (UNIMPLEMENTED).
pub(crate) const DECOUPLED_UNARY: &str =
    "ModelInfer RPC doesn't support models with decoupled transaction policy";

/// A streamed answer: the response, or the error with its request's id,
/// model and version.
type StreamAnswer = Result<pb::ModelInferResponse, (Status, String, String, String)>;

/// An in-band stream error: the text, and the request's id (as Triton
/// 2.51 sends it) with its model and version (which Triton leaves out), so
/// that the client can tell which request failed and where it went.
fn in_band(
    e: &Status,
    id: String,
    model_name: String,
    model_version: String,
) -> pb::ModelStreamInferResponse {
    pb::ModelStreamInferResponse {
        error_message: e.message().to_owned(),
        infer_response: Some(pb::ModelInferResponse {
            model_name,
            model_version,
            id,
            ..Default::default()
        }),
    }
}

#[tonic::async_trait]
impl GrpcInferenceService for OipGrpc {
    async fn server_live(
        &self,
        _: Request<pb::ServerLiveRequest>,
    ) -> Result<Response<pb::ServerLiveResponse>, Status> {
        Ok(Response::new(pb::ServerLiveResponse { live: true }))
    }

    async fn server_ready(
        &self,
        _: Request<pb::ServerReadyRequest>,
    ) -> Result<Response<pb::ServerReadyResponse>, Status> {
        Ok(Response::new(pb::ServerReadyResponse {
            ready: self.state.server_ready(),
        }))
    }

    async fn model_ready(
        &self,
        request: Request<pb::ModelReadyRequest>,
    ) -> Result<Response<pb::ModelReadyResponse>, Status> {
        let r = request.into_inner();
        let ready = oip::grpc_model_ready(&self.state, &r.name, &r.version).map_err(status)?;
        Ok(Response::new(pb::ModelReadyResponse { ready }))
    }

    async fn server_metadata(
        &self,
        _: Request<pb::ServerMetadataRequest>,
    ) -> Result<Response<pb::ServerMetadataResponse>, Status> {
        Ok(Response::new(pb::ServerMetadataResponse {
            name: self.state.server_name.clone(),
            version: env!("CARGO_PKG_VERSION").into(),
            extensions: oip::extensions(&self.state)
                .into_iter()
                .map(str::to_owned)
                .collect(),
        }))
    }

    async fn model_metadata(
        &self,
        request: Request<pb::ModelMetadataRequest>,
    ) -> Result<Response<pb::ModelMetadataResponse>, Status> {
        let r = request.into_inner();
        let m = oip::model_metadata(&self.state, &r.name, &r.version).map_err(status)?;
        Ok(Response::new(m.into()))
    }

    async fn model_infer(
        &self,
        request: Request<pb::ModelInferRequest>,
    ) -> Result<Response<pb::ModelInferResponse>, Status> {
        let deadline = super::deadline::deadline_of(request.metadata());
        let incoming =
            oip::Incoming::now("ModelInfer", request.metadata().as_ref().get("traceparent"));
        let reply = self
            .infer_recorded(request.into_inner(), deadline, &incoming)
            .await?;
        Ok(Response::new(reply))
    }

    /// Each request of the stream is an ordinary job: batched with every
    /// other client's, prioritised, refused when its deadline passes. Up to
    /// [`STREAM_IN_FLIGHT`] run at once; answers come in request order (as
    /// Triton's for a model that is not decoupled), each with its request's
    /// id. When the client goes away, the requests still queued or running
    /// are cancelled.
    async fn model_stream_infer(
        &self,
        request: Request<Streaming<pb::ModelInferRequest>>,
    ) -> Result<Response<AnswerStream>, Status> {
        let status_errors = request
            .metadata()
            .get(STATUS_ERRORS_HEADER)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"true"));
        let deadline = super::deadline::deadline_of(request.metadata());
        let incoming = request
            .into_inner()
            .map(|m| m.map(|m| StreamRequest::Run(m, None)));
        Ok(Response::new(self.run_stream(
            incoming,
            deadline,
            status_errors,
        )))
    }

    async fn model_config(
        &self,
        request: Request<pb::ModelConfigRequest>,
    ) -> Result<Response<pb::ModelConfigResponse>, Status> {
        let r = request.into_inner();
        let config =
            model_config::model_config(&self.state, &r.name, &r.version).map_err(status)?;
        Ok(Response::new(pb::ModelConfigResponse {
            config: Some(config),
        }))
    }

    async fn model_statistics(
        &self,
        request: Request<pb::ModelStatisticsRequest>,
    ) -> Result<Response<pb::ModelStatisticsResponse>, Status> {
        let r = request.into_inner();
        let model_stats =
            statistics::statistics(&self.state, &r.name, &r.version).map_err(status)?;
        Ok(Response::new(pb::ModelStatisticsResponse { model_stats }))
    }

    async fn repository_index(
        &self,
        request: Request<pb::RepositoryIndexRequest>,
    ) -> Result<Response<pb::RepositoryIndexResponse>, Status> {
        let r = request.into_inner();
        repository::check_repository(&r.repository_name).map_err(status)?;
        let models = repository::index(&self.state, r.ready)
            .into_iter()
            .map(|e| pb::repository_index_response::ModelIndex {
                name: e.name,
                version: e.version,
                state: e.state.to_owned(),
                reason: e.reason,
            })
            .collect();
        Ok(Response::new(pb::RepositoryIndexResponse { models }))
    }

    async fn repository_model_load(
        &self,
        request: Request<pb::RepositoryModelLoadRequest>,
    ) -> Result<Response<pb::RepositoryModelLoadResponse>, Status> {
        let r = request.into_inner();
        repository::check_repository(&r.repository_name).map_err(status)?;
        use pb::model_repository_parameter::ParameterChoice;
        let request = repository::load_request(
            &r.model_name,
            r.parameters.iter().map(|(k, v)| {
                let value = match &v.parameter_choice {
                    Some(ParameterChoice::StringParam(s)) => repository::LoadValue::Text(s),
                    Some(ParameterChoice::BytesParam(b)) => repository::LoadValue::Bytes(b),
                    _ => repository::LoadValue::Other,
                };
                (k.as_str(), value)
            }),
        )
        .map_err(status)?;
        repository::load(self.state.clone(), r.model_name, request)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::RepositoryModelLoadResponse {}))
    }

    async fn repository_model_unload(
        &self,
        request: Request<pb::RepositoryModelUnloadRequest>,
    ) -> Result<Response<pb::RepositoryModelUnloadResponse>, Status> {
        let r = request.into_inner();
        repository::check_repository(&r.repository_name).map_err(status)?;
        use pb::model_repository_parameter::ParameterChoice;
        let dependents = match r
            .parameters
            .get("unload_dependents")
            .and_then(|p| p.parameter_choice.as_ref())
        {
            None => false,
            Some(ParameterChoice::BoolParam(b)) => *b,
            Some(_) => {
                return Err(Status::invalid_argument(
                    "parameter 'unload_dependents' must be a bool_param",
                ));
            }
        };
        repository::unload(self.state.clone(), r.model_name, dependents)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::RepositoryModelUnloadResponse {}))
    }

    async fn system_shared_memory_status(
        &self,
        request: Request<pb::SystemSharedMemoryStatusRequest>,
    ) -> Result<Response<pb::SystemSharedMemoryStatusResponse>, Status> {
        let r = request.into_inner();
        let regions = self
            .state
            .shared_memory
            .status(&r.name)
            .map_err(status)?
            .into_iter()
            .map(|s| {
                (
                    s.name.clone(),
                    pb::system_shared_memory_status_response::RegionStatus {
                        name: s.name,
                        key: s.key,
                        offset: s.offset,
                        byte_size: s.byte_size,
                    },
                )
            })
            .collect();
        Ok(Response::new(pb::SystemSharedMemoryStatusResponse {
            regions,
        }))
    }

    async fn system_shared_memory_register(
        &self,
        request: Request<pb::SystemSharedMemoryRegisterRequest>,
    ) -> Result<Response<pb::SystemSharedMemoryRegisterResponse>, Status> {
        let r = request.into_inner();
        SharedMemory::register_off_workers(
            self.state.clone(),
            r.name,
            r.key,
            r.offset,
            r.byte_size,
        )
        .await
        .map_err(status)?;
        Ok(Response::new(pb::SystemSharedMemoryRegisterResponse {}))
    }

    async fn system_shared_memory_unregister(
        &self,
        request: Request<pb::SystemSharedMemoryUnregisterRequest>,
    ) -> Result<Response<pb::SystemSharedMemoryUnregisterResponse>, Status> {
        let r = request.into_inner();
        self.state
            .shared_memory
            .unregister(&r.name)
            .map_err(status)?;
        Ok(Response::new(pb::SystemSharedMemoryUnregisterResponse {}))
    }

    async fn cuda_shared_memory_status(
        &self,
        request: Request<pb::CudaSharedMemoryStatusRequest>,
    ) -> Result<Response<pb::CudaSharedMemoryStatusResponse>, Status> {
        cuda_shared_memory::status(&request.into_inner().name).map_err(status)?;
        Ok(Response::new(pb::CudaSharedMemoryStatusResponse::default()))
    }

    async fn cuda_shared_memory_register(
        &self,
        request: Request<pb::CudaSharedMemoryRegisterRequest>,
    ) -> Result<Response<pb::CudaSharedMemoryRegisterResponse>, Status> {
        Err(status(cuda_shared_memory::register(
            &request.into_inner().name,
        )))
    }

    async fn cuda_shared_memory_unregister(
        &self,
        request: Request<pb::CudaSharedMemoryUnregisterRequest>,
    ) -> Result<Response<pb::CudaSharedMemoryUnregisterResponse>, Status> {
        cuda_shared_memory::unregister(&request.into_inner().name).map_err(status)?;
        Ok(Response::new(pb::CudaSharedMemoryUnregisterResponse {}))
    }

    async fn trace_setting(
        &self,
        request: Request<pb::TraceSettingRequest>,
    ) -> Result<Response<pb::TraceSettingResponse>, Status> {
        use crate::service::trace;
        let r = request.into_inner();
        let all = if r.settings.is_empty() {
            trace::settings(&self.state, &r.model_name)
        } else {
            let changes = r
                .settings
                .into_iter()
                .map(|(k, v)| (k, (!v.value.is_empty()).then_some(v.value)))
                .collect();
            trace::update(&self.state, &r.model_name, changes)
        }
        .map_err(status)?;
        let settings = all
            .into_iter()
            .map(|(k, value)| {
                (
                    k.to_owned(),
                    pb::trace_setting_response::SettingValue { value },
                )
            })
            .collect();
        Ok(Response::new(pb::TraceSettingResponse { settings }))
    }

    async fn log_settings(
        &self,
        request: Request<pb::LogSettingsRequest>,
    ) -> Result<Response<pb::LogSettingsResponse>, Status> {
        use crate::service::logging::{self, Value};
        use pb::log_settings_request::setting_value::ParameterChoice as In;
        use pb::log_settings_response::setting_value::ParameterChoice as Out;
        let settings = request.into_inner().settings;
        let all = if settings.is_empty() {
            logging::current()
        } else {
            let changes = settings
                .into_iter()
                .map(|(name, v)| {
                    let value = match v.parameter_choice {
                        Some(In::BoolParam(b)) => Value::Bool(b),
                        Some(In::Uint32Param(n)) => Value::Uint(n),
                        Some(In::StringParam(s)) => Value::Text(s),
                        None => Value::Text(String::new()),
                    };
                    (name, value)
                })
                .collect();
            logging::update(changes).map_err(status)?
        };
        let settings = all
            .into_iter()
            .map(|(k, v)| {
                let choice = match v {
                    Value::Bool(b) => Out::BoolParam(b),
                    Value::Uint(n) => Out::Uint32Param(n),
                    Value::Text(s) => Out::StringParam(s),
                };
                let value = pb::log_settings_response::SettingValue {
                    parameter_choice: Some(choice),
                };
                (k.to_owned(), value)
            })
            .collect();
        Ok(Response::new(pb::LogSettingsResponse { settings }))
    }
}
