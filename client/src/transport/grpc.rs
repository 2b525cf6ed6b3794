//! gRPC: `MSService` and `GRPCInferenceService` over a tonic channel.

use std::time::Instant;

use serving_proto::grpc_body::method::{MODEL_INFER, PREDICT};
use serving_proto::grpc_body::tensor_path;
use serving_proto::mindspore::{self, InstanceResult, Outcome};
use serving_proto::oip::grpc::Contents;
use serving_proto::oip::{self, InferRequest, InferResponse};
use serving_proto::pb::inference::{
    self as pb, grpc_inference_service_client::GrpcInferenceServiceClient,
};
use serving_proto::pb::mindspore as pb_ms;
use serving_proto::{NamedTensors, chunked, frame};
use tonic::transport::Channel;

use serving_proto::oip::extensions::{
    CudaSharedMemoryRegion, RepositoryModel, SystemSharedMemoryRegion,
};

use super::unary;
use super::{
    Call, CallCtx, CudaRegistration, ModelMetadata, ServerMetadata, Transport, sent_too_large,
};
use crate::error::{Error, SizeSide, chain_text, transport_kind, visit_causes};

/// One gRPC endpoint.
#[derive(Clone, Debug)]
pub(crate) struct Grpc {
    pub channel: Channel,
    pub label: String,
    pub contents: Contents,
}

/// Whether an error of type `T` is among `e`'s causes.
fn has<T: std::error::Error + 'static>(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut found = false;
    visit_causes(e, &mut |e| found |= e.is::<T>());
    found
}

/// Whether `e`'s chain holds an error of the layers below gRPC.
fn below_grpc(e: &(dyn std::error::Error + 'static)) -> bool {
    has::<tonic::ConnectError>(e)
        || has::<std::io::Error>(e)
        || has::<hyper::Error>(e)
        || has::<rustls::Error>(e)
        || has::<tonic::transport::Error>(e)
}

/// Maps a gRPC status to the client's error. A status the channel made
/// from a failure below gRPC (it carries that failure as its source) is a
/// [`Error::Transport`] or a timeout, classified by the causes' types; a
/// status from the server is mapped by its code.
pub(crate) fn status_error(s: tonic::Status, endpoint: &str, ctx: &CallCtx) -> Error {
    if let Some(cause) = std::error::Error::source(&s) {
        if has::<tonic::TimeoutExpired>(cause) {
            return Error::DeadlineExceeded {
                endpoint: endpoint.into(),
                timeout: ctx.timeout,
                message: chain_text(cause),
                source: Some(Box::new(s)),
            };
        }
        if below_grpc(cause) {
            let kind = transport_kind(cause, has::<tonic::ConnectError>(cause));
            return Error::Transport {
                endpoint: endpoint.into(),
                kind,
                message: chain_text(cause),
                source: Some(Box::new(s)),
            };
        }
    }
    let message = s.message().to_owned();
    match s.code() {
        // gRPC's size refusal carries both numbers in its standard text
        // ("... larger than max (size vs. limit)"); any other exhausted
        // resource (a full queue) is the server being busy.
        tonic::Code::ResourceExhausted => match frame::parse_too_large(&message) {
            Some((size, limit)) => Error::MessageTooLarge {
                size: Some(size),
                limit: Some(limit),
                side: SizeSide::Server,
            },
            None => Error::Unavailable {
                endpoint: endpoint.into(),
                message,
            },
        },
        // tonic's own refusal of a reply over the receive cap (the calls
        // decoded by tonic's codec); the server sends no OutOfRange.
        tonic::Code::OutOfRange if std::error::Error::source(&s).is_none() => {
            let numbers: Vec<u64> = message
                .split(|c: char| !c.is_ascii_digit())
                .filter_map(|n| n.parse().ok())
                .collect();
            Error::MessageTooLarge {
                size: numbers.first().copied(),
                limit: Some(ctx.max_receive),
                side: SizeSide::Client,
            }
        }
        tonic::Code::Unavailable => Error::Unavailable {
            endpoint: endpoint.into(),
            message,
        },
        tonic::Code::DeadlineExceeded => Error::DeadlineExceeded {
            endpoint: endpoint.into(),
            timeout: ctx.timeout,
            message,
            source: None,
        },
        // This client cancels nothing itself: a cancelled call lost its
        // connection (the server or a proxy reset the stream).
        tonic::Code::Cancelled => Error::Transport {
            endpoint: endpoint.into(),
            kind: crate::error::TransportKind::Closed,
            message,
            source: Some(Box::new(s)),
        },
        tonic::Code::NotFound => Error::NotFound { message },
        tonic::Code::Unimplemented => Error::Unimplemented {
            endpoint: endpoint.into(),
            message,
        },
        tonic::Code::InvalidArgument => Error::InvalidArgument { message },
        tonic::Code::Unauthenticated => Error::Unauthenticated { message },
        _ => Error::Server {
            endpoint: endpoint.into(),
            message: format!("{:?}: {message}", s.code()),
        },
    }
}

impl Grpc {
    /// A reply's message, or the call's error.
    fn reply<T>(
        &self,
        r: Result<tonic::Response<T>, tonic::Status>,
        ctx: &CallCtx,
    ) -> Result<T, Error> {
        r.map(tonic::Response::into_inner)
            .map_err(|s| status_error(s, &self.label, ctx))
    }

    /// A reply that does not decode.
    fn protocol(&self, e: impl std::fmt::Display) -> Error {
        super::protocol_error(&self.label, e)
    }

    fn oip(&self, ctx: &CallCtx) -> GrpcInferenceServiceClient<Channel> {
        use serving_proto::compression::Encoding;
        use tonic::codec::CompressionEncoding;
        let client = GrpcInferenceServiceClient::new(self.channel.clone())
            .max_decoding_message_size(ctx.max_receive as usize)
            .max_encoding_message_size(usize::MAX);
        match ctx.compression {
            None => client,
            Some(e) => client
                .send_compressed(match e {
                    Encoding::Deflate => CompressionEncoding::Deflate,
                    _ => CompressionEncoding::Gzip,
                })
                .accept_compressed(CompressionEncoding::Gzip)
                .accept_compressed(CompressionEncoding::Deflate),
        }
    }

    /// Opens a `ModelStreamInfer` stream.
    pub async fn stream(
        &self,
        ctx: CallCtx,
    ) -> Result<(crate::InferStream, crate::StreamResponses), Error> {
        let (sender, receiver) =
            crate::InferStream::new(self.contents, ctx.max_send, self.label.clone());
        // The request stream ends when the answers are dropped, so that
        // no handle keeps the HTTP/2 stream open and it is reset.
        let (cancel, cancelled) = tokio::sync::oneshot::channel::<()>();
        let requests = futures_util::stream::unfold(
            (receiver, cancelled),
            |(mut r, mut cancelled)| async move {
                tokio::select! {
                    m = r.recv() => m.map(|m| (m, (r, cancelled))),
                    _ = &mut cancelled => None,
                }
            },
        );
        // Started now but not awaited: the server's headers may wait for
        // the first answer, which waits for requests the caller has yet to
        // send (grpcio servers), while requests flow from the start.
        let mut client = self.oip(&ctx);
        let request = ctx.grpc_request(requests);
        let call = tokio::spawn(async move { client.model_stream_infer(request).await });
        let inner = crate::stream::Answers::Opening(crate::stream::Opening(call));
        Ok((
            sender,
            crate::StreamResponses {
                inner,
                endpoint: self.label.clone(),
                ctx,
                ended: false,
                _cancel: cancel,
            },
        ))
    }
}

impl Transport for Grpc {
    fn label(&self) -> &str {
        &self.label
    }

    fn as_grpc(&self) -> Option<&Grpc> {
        Some(self)
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
            let msg = mindspore::grpc::encode_request(servable, method, version, instances)
                .map_err(|e| Error::Request(e.to_string()))?;
            let chunks = chunked::predict_request(msg, ctx.max_send).map_err(sent_too_large)?;
            let reply: pb_ms::PredictReply = unary::call(
                &self.channel,
                &self.label,
                PREDICT,
                chunks,
                tensor_path::PREDICT_REPLY,
                &ctx,
            )
            .await?;
            match mindspore::grpc::decode_reply(reply, instances.len()) {
                Ok(Outcome::Instances(results)) => Ok(results),
                Ok(Outcome::Failed(e)) => Err(Error::Servable(e)),
                Err(e) => Err(self.protocol(e)),
            }
        })
    }

    fn infer<'a>(&'a self, ctx: CallCtx, req: &'a InferRequest) -> Call<'a, InferResponse> {
        Box::pin(async move {
            let encoding = Instant::now();
            let msg = oip::grpc::encode_request(req, self.contents)
                .map_err(|e| Error::Request(e.to_string()))?;
            let chunks = chunked::model_infer_request(msg, ctx.max_send).map_err(sent_too_large)?;
            ctx.sent(encoding.elapsed());
            let reply: pb::ModelInferResponse = unary::call(
                &self.channel,
                &self.label,
                MODEL_INFER,
                chunks,
                tensor_path::MODEL_INFER_RESPONSE,
                &ctx,
            )
            .await?;
            let decoding = Instant::now();
            let mut external = ctx.outputs_in_shared_memory();
            // Outputs placed in shared memory come back without data: with
            // their placement (this server), or with nothing (Triton), read
            // then where the request placed them.
            let response = oip::grpc::decode_response_placed(reply, &req.outputs, &mut external)
                .map_err(|e| self.protocol(e));
            ctx.received(decoding.elapsed());
            response
        })
    }

    fn server_live(&self, ctx: CallCtx) -> Call<'_, bool> {
        Box::pin(async move {
            let r = self
                .oip(&ctx)
                .server_live(ctx.grpc_request(pb::ServerLiveRequest {}))
                .await;
            Ok(self.reply(r, &ctx)?.live)
        })
    }

    fn server_ready(&self, ctx: CallCtx) -> Call<'_, bool> {
        Box::pin(async move {
            let r = self
                .oip(&ctx)
                .server_ready(ctx.grpc_request(pb::ServerReadyRequest {}))
                .await;
            Ok(self.reply(r, &ctx)?.ready)
        })
    }

    fn model_ready<'a>(&'a self, ctx: CallCtx, name: &'a str, version: &'a str) -> Call<'a, bool> {
        Box::pin(async move {
            let msg = pb::ModelReadyRequest {
                name: name.into(),
                version: version.into(),
            };
            let r = self.oip(&ctx).model_ready(ctx.grpc_request(msg)).await;
            Ok(self.reply(r, &ctx)?.ready)
        })
    }

    fn server_metadata(&self, ctx: CallCtx) -> Call<'_, ServerMetadata> {
        Box::pin(async move {
            let r = self
                .oip(&ctx)
                .server_metadata(ctx.grpc_request(pb::ServerMetadataRequest {}))
                .await;
            Ok(self.reply(r, &ctx)?.into())
        })
    }

    fn model_metadata<'a>(
        &'a self,
        ctx: CallCtx,
        name: &'a str,
        version: &'a str,
    ) -> Call<'a, ModelMetadata> {
        Box::pin(async move {
            let msg = pb::ModelMetadataRequest {
                name: name.into(),
                version: version.into(),
            };
            let r = self.oip(&ctx).model_metadata(ctx.grpc_request(msg)).await;
            Ok(self.reply(r, &ctx)?.into())
        })
    }

    fn model_config<'a>(
        &'a self,
        ctx: CallCtx,
        name: &'a str,
        version: &'a str,
    ) -> Call<'a, pb::ModelConfig> {
        Box::pin(async move {
            let msg = pb::ModelConfigRequest {
                name: name.into(),
                version: version.into(),
            };
            let r = self.oip(&ctx).model_config(ctx.grpc_request(msg)).await;
            self.reply(r, &ctx)?
                .config
                .ok_or_else(|| self.protocol("the ModelConfig reply carries no configuration"))
        })
    }

    fn model_statistics<'a>(
        &'a self,
        ctx: CallCtx,
        name: &'a str,
        version: &'a str,
    ) -> Call<'a, Vec<pb::ModelStatistics>> {
        Box::pin(async move {
            let msg = pb::ModelStatisticsRequest {
                name: name.into(),
                version: version.into(),
            };
            let r = self.oip(&ctx).model_statistics(ctx.grpc_request(msg)).await;
            Ok(self.reply(r, &ctx)?.model_stats)
        })
    }

    fn repository_index(&self, ctx: CallCtx, ready: bool) -> Call<'_, Vec<RepositoryModel>> {
        Box::pin(async move {
            let msg = pb::RepositoryIndexRequest {
                repository_name: String::new(),
                ready,
            };
            let r = self.oip(&ctx).repository_index(ctx.grpc_request(msg)).await;
            Ok(self
                .reply(r, &ctx)?
                .models
                .into_iter()
                .map(Into::into)
                .collect())
        })
    }

    fn model_control<'a>(
        &'a self,
        ctx: CallCtx,
        name: &'a str,
        load: Option<&'a crate::LoadOptions>,
    ) -> Call<'a, ()> {
        use pb::model_repository_parameter::ParameterChoice;
        Box::pin(async move {
            let r = match load {
                Some(options) => {
                    let mut parameters = std::collections::HashMap::new();
                    if let Some(config) = &options.config {
                        parameters.insert(
                            "config".to_owned(),
                            pb::ModelRepositoryParameter {
                                parameter_choice: Some(ParameterChoice::StringParam(
                                    config.clone(),
                                )),
                            },
                        );
                    }
                    for (path, contents) in &options.files {
                        parameters.insert(
                            format!("file:{path}"),
                            pb::ModelRepositoryParameter {
                                parameter_choice: Some(ParameterChoice::BytesParam(
                                    contents.clone(),
                                )),
                            },
                        );
                    }
                    let msg = pb::RepositoryModelLoadRequest {
                        repository_name: String::new(),
                        model_name: name.into(),
                        parameters: parameters.into_iter().collect(),
                    };
                    self.oip(&ctx)
                        .repository_model_load(ctx.grpc_request(msg))
                        .await
                        .map(|_| ())
                }
                None => {
                    let msg = pb::RepositoryModelUnloadRequest {
                        repository_name: String::new(),
                        model_name: name.into(),
                        parameters: Default::default(),
                    };
                    self.oip(&ctx)
                        .repository_model_unload(ctx.grpc_request(msg))
                        .await
                        .map(|_| ())
                }
            };
            r.map_err(|s| status_error(s, &self.label, &ctx))
        })
    }

    fn register_system_shared_memory<'a>(
        &'a self,
        ctx: CallCtx,
        region: &'a SystemSharedMemoryRegion,
    ) -> Call<'a, ()> {
        Box::pin(async move {
            let msg = pb::SystemSharedMemoryRegisterRequest {
                name: region.name.clone(),
                key: region.key.clone(),
                offset: region.offset,
                byte_size: region.byte_size,
            };
            let r = self
                .oip(&ctx)
                .system_shared_memory_register(ctx.grpc_request(msg))
                .await;
            self.reply(r, &ctx).map(|_| ())
        })
    }

    fn unregister_system_shared_memory<'a>(&'a self, ctx: CallCtx, name: &'a str) -> Call<'a, ()> {
        Box::pin(async move {
            let msg = pb::SystemSharedMemoryUnregisterRequest { name: name.into() };
            let r = self
                .oip(&ctx)
                .system_shared_memory_unregister(ctx.grpc_request(msg))
                .await;
            self.reply(r, &ctx).map(|_| ())
        })
    }

    fn system_shared_memory_status<'a>(
        &'a self,
        ctx: CallCtx,
        name: &'a str,
    ) -> Call<'a, Vec<SystemSharedMemoryRegion>> {
        Box::pin(async move {
            let msg = pb::SystemSharedMemoryStatusRequest { name: name.into() };
            let r = self
                .oip(&ctx)
                .system_shared_memory_status(ctx.grpc_request(msg))
                .await;
            Ok(in_name_order(self.reply(r, &ctx)?.regions))
        })
    }

    fn register_cuda_shared_memory<'a>(
        &'a self,
        ctx: CallCtx,
        region: &'a CudaRegistration,
    ) -> Call<'a, ()> {
        Box::pin(async move {
            let msg = pb::CudaSharedMemoryRegisterRequest {
                name: region.name.clone(),
                raw_handle: region.raw_handle.clone().into(),
                device_id: region.device_id,
                byte_size: region.byte_size,
            };
            let r = self
                .oip(&ctx)
                .cuda_shared_memory_register(ctx.grpc_request(msg))
                .await;
            self.reply(r, &ctx).map(|_| ())
        })
    }

    fn unregister_cuda_shared_memory<'a>(&'a self, ctx: CallCtx, name: &'a str) -> Call<'a, ()> {
        Box::pin(async move {
            let msg = pb::CudaSharedMemoryUnregisterRequest { name: name.into() };
            let r = self
                .oip(&ctx)
                .cuda_shared_memory_unregister(ctx.grpc_request(msg))
                .await;
            self.reply(r, &ctx).map(|_| ())
        })
    }

    fn cuda_shared_memory_status<'a>(
        &'a self,
        ctx: CallCtx,
        name: &'a str,
    ) -> Call<'a, Vec<CudaSharedMemoryRegion>> {
        Box::pin(async move {
            let msg = pb::CudaSharedMemoryStatusRequest { name: name.into() };
            let r = self
                .oip(&ctx)
                .cuda_shared_memory_status(ctx.grpc_request(msg))
                .await;
            Ok(in_name_order(self.reply(r, &ctx)?.regions))
        })
    }

    fn trace_settings<'a>(
        &'a self,
        ctx: CallCtx,
        model: &'a str,
        changes: &'a crate::TraceChanges,
    ) -> Call<'a, crate::TraceSettings> {
        Box::pin(async move {
            let settings = changes
                .iter()
                .map(|(k, v)| {
                    let value = pb::trace_setting_request::SettingValue {
                        value: v.clone().unwrap_or_default(),
                    };
                    (k.clone(), value)
                })
                .collect();
            let msg = pb::TraceSettingRequest {
                settings,
                model_name: model.to_owned(),
            };
            let r = self.oip(&ctx).trace_setting(ctx.grpc_request(msg)).await;
            Ok(self
                .reply(r, &ctx)?
                .settings
                .into_iter()
                .map(|(k, v)| (k, v.value))
                .collect())
        })
    }

    fn log_settings<'a>(
        &'a self,
        ctx: CallCtx,
        changes: &'a crate::LogSettings,
    ) -> Call<'a, crate::LogSettings> {
        use crate::LogSetting;
        use pb::log_settings_request::setting_value::ParameterChoice as In;
        use pb::log_settings_response::setting_value::ParameterChoice as Out;
        Box::pin(async move {
            let settings = changes
                .iter()
                .map(|(k, v)| {
                    let choice = match v {
                        LogSetting::Bool(b) => In::BoolParam(*b),
                        LogSetting::Uint(n) => In::Uint32Param(*n),
                        LogSetting::Text(s) => In::StringParam(s.clone()),
                    };
                    let value = pb::log_settings_request::SettingValue {
                        parameter_choice: Some(choice),
                    };
                    (k.clone(), value)
                })
                .collect();
            let msg = pb::LogSettingsRequest { settings };
            let r = self.oip(&ctx).log_settings(ctx.grpc_request(msg)).await;
            Ok(self
                .reply(r, &ctx)?
                .settings
                .into_iter()
                .filter_map(|(k, v)| {
                    let v = match v.parameter_choice? {
                        Out::BoolParam(b) => LogSetting::Bool(b),
                        Out::Uint32Param(n) => LogSetting::Uint(n),
                        Out::StringParam(s) => LogSetting::Text(s),
                    };
                    Some((k, v))
                })
                .collect())
        })
    }
}

/// A status reply's regions: a map by name on the wire, in name order here.
fn in_name_order<S, T: From<S>>(regions: std::collections::BTreeMap<String, S>) -> Vec<T> {
    regions.into_values().map(Into::into).collect()
}
