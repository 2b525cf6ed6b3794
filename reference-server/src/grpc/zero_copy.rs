//! The two RPCs that carry tensors, `MSService/Predict` and
//! `GRPCInferenceService/ModelInfer`, framed without tonic's codec, and the
//! stream `ModelStreamInfer` (see [`super::stream`]).
//!
//! tonic decodes into a buffer it grows as frames arrive and encodes every
//! reply by copying it, tensor bytes included, into a second buffer. Here
//! the request is gathered once into a buffer sized from its checked frame
//! header (the tensors are then slices of it, handed to ONNX Runtime in
//! place), and the reply is sent as chunks that share the output tensors'
//! bytes ([`serving_proto::chunked`]). The services themselves are the same
//! `MsService` / `GrpcInferenceService` implementations tonic serves; every
//! other RPC goes to tonic unchanged.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body::Body;
use prost::Message;
use serving_proto::compression::{self, Encoding};
use serving_proto::frame::{FrameError, TooLarge};
use serving_proto::grpc_body::method::{MODEL_INFER, MODEL_STREAM_INFER, PREDICT};
use serving_proto::grpc_body::{MessageBody, ReadError, read_unary_compressed, tensor_path};
use serving_proto::pb::inference::grpc_inference_service_server::GrpcInferenceService;
use serving_proto::pb::mindspore::ms_service_server::MsService;
use serving_proto::{chunked, decode_cost};
use tonic::Status;
use tonic::metadata::MetadataMap;

use super::mindspore::MindSporeGrpc;
use super::oip::OipGrpc;
use crate::service::State;

/// A tower service answering [`PREDICT`], [`MODEL_INFER`] and
/// [`MODEL_STREAM_INFER`] itself and passing every other request to
/// `inner`, each of those under the control-message limit.
#[derive(Clone, Debug)]
pub(crate) struct ZeroCopy<S> {
    inner: S,
    ms: MindSporeGrpc,
    oip: OipGrpc,
    state: Arc<State>,
}

impl<S> ZeroCopy<S> {
    /// Wraps `inner`; requests over the state's message limit are refused,
    /// and requests still arriving take their memory from its budget.
    pub(crate) fn new(inner: S, ms: MindSporeGrpc, oip: OipGrpc, state: Arc<State>) -> ZeroCopy<S> {
        ZeroCopy {
            inner,
            ms,
            oip,
            state,
        }
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B> tower::Service<Request<B>> for ZeroCopy<S>
where
    S: tower::Service<
            Request<tonic::body::Body>,
            Response = Response<tonic::body::Body>,
            Error = Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send,
    B: Body<Data = Bytes> + Unpin + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Response<tonic::body::Body>, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let state = self.state.clone();
        match req.uri().path() {
            PREDICT => {
                let ms = self.ms.clone();
                Box::pin(async move {
                    Ok(unary(
                        req,
                        &state,
                        tensor_path::PREDICT_REQUEST,
                        decode_cost::predict_request,
                        chunked::predict_reply,
                        |r| async move { ms.predict(r).await },
                    )
                    .await)
                })
            }
            MODEL_INFER => {
                let oip = self.oip.clone();
                Box::pin(async move {
                    Ok(unary(
                        req,
                        &state,
                        tensor_path::MODEL_INFER_REQUEST,
                        decode_cost::model_infer_request,
                        chunked::model_infer_response,
                        |r| async move { oip.model_infer(r).await },
                    )
                    .await)
                })
            }
            MODEL_STREAM_INFER => {
                let oip = self.oip.clone();
                Box::pin(async move { Ok(super::stream::model_stream_infer(req, oip, state)) })
            }
            _ => {
                let clone = self.inner.clone();
                let mut inner = std::mem::replace(&mut self.inner, clone);
                let path = req.uri().path().to_owned();
                // The other RPCs are control calls with small messages, held
                // to what REST's control routes take.
                let limit = crate::service::CONTROL_BODY_MAX as u64;
                let encoding = req
                    .headers()
                    .get("grpc-encoding")
                    .and_then(|v| v.to_str().ok())
                    .and_then(Encoding::from_name);
                // Whole messages only, inflated here under the limit: tonic
                // reads complete plain frames. An encoding we do not speak
                // stays named, for tonic to refuse by name.
                let (mut parts, body) = req.into_parts();
                if encoding.is_some() {
                    parts.headers.remove("grpc-encoding");
                }
                let req =
                    Request::from_parts(parts, super::inflate::inflating(body, encoding, limit));
                Box::pin(async move {
                    let response = inner.call(req).await?;
                    Ok(with_unimplemented_text(response, &path))
                })
            }
        }
    }
}

/// Reads the request message (its first tensor aligned where `tensor_path`
/// finds it, so ONNX Runtime reads it in place), runs `handle` on it and
/// writes its reply with `encode`, answering any failure as tonic would
/// (same codes, same texts where tonic has one). The services check their
/// replies against the limit themselves (and count a refusal in the
/// metrics); `encode` checks again, so no path sends an oversized reply.
async fn unary<B, M, R, F, Fut>(
    req: Request<B>,
    state: &State,
    tensor_path: &[u32],
    cost: fn(&[u8]) -> u64,
    encode: fn(R, u64) -> Result<Vec<Bytes>, TooLarge>,
    handle: F,
) -> Response<tonic::body::Body>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    M: Message + Default,
    F: FnOnce(tonic::Request<M>) -> Fut,
    Fut: Future<Output = Result<tonic::Response<R>, Status>>,
{
    let limit = state.max_msg_bytes as u64;
    let (parts, mut body) = req.into_parts();
    let encoding = match request_encoding(&parts.headers) {
        Ok(e) => e,
        Err(status) => return status.into_http(),
    };
    let read = match read_unary_compressed(
        &mut body,
        limit,
        tensor_path,
        &state.incoming,
        encoding.is_some(),
    )
    .await
    {
        Ok(read) => read,
        Err(e) => return read_status(e).into_http(),
    };
    let Some(mut message) = read.message else {
        return Status::internal("Missing request message.").into_http();
    };
    let mut inflating = None;
    if read.compressed
        && let Some(encoding) = encoding
    {
        (message, inflating) = match super::memory::inflate(state, encoding, message, limit).await {
            Ok((m, charge)) => (m, Some(charge)),
            Err(refused) => return Status::from(refused).into_http(),
        };
    }
    // The message and what decoding it builds stay charged until the
    // reply's body has been sent (the body holds the charge).
    let charge =
        match super::memory::charge_message(state, inflating, message.len(), cost(&message)) {
            Ok(c) => c,
            Err(refused) => return Status::from(refused).into_http(),
        };
    let reply_encoding = reply_encoding(state, &parts.headers);
    let message = match M::decode(message) {
        Ok(m) => m,
        Err(e) => return Status::internal(e.to_string()).into_http(),
    };
    let request = tonic::Request::from_parts(
        MetadataMap::from_headers(parts.headers),
        parts.extensions,
        message,
    );
    match handle(request).await {
        Ok(reply) => {
            let (metadata, message, extensions) = reply.into_parts();
            let mut chunks = match encode(message, limit) {
                Ok(chunks) => chunks,
                Err(e) => return Status::resource_exhausted(e.to_string()).into_http(),
            };
            if let Some(e) = reply_encoding {
                chunks = compressed_frame(e, chunks).await;
            }
            let mut trailers = HeaderMap::new();
            trailers.insert("grpc-status", HeaderValue::from_static("0"));
            let body = MessageBody::with_trailers(chunks, trailers).holding(charge);
            let mut response = Response::new(tonic::body::Body::new(body));
            *response.headers_mut() = metadata.into_headers();
            response.headers_mut().insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/grpc"),
            );
            if let Some(e) = reply_encoding {
                response
                    .headers_mut()
                    .insert("grpc-encoding", HeaderValue::from_static(e.name()));
            }
            response
                .headers_mut()
                .insert("grpc-accept-encoding", HeaderValue::from_static(ACCEPTED));
            *response.extensions_mut() = extensions;
            response
        }
        Err(status) => status.into_http(),
    }
}

/// The request's `grpc-encoding`: `None` for none or identity, an
/// UNIMPLEMENTED status (as tonic's) for one this server does not speak.
pub(crate) fn request_encoding(headers: &HeaderMap) -> Result<Option<Encoding>, Status> {
    match headers.get("grpc-encoding") {
        None => Ok(None),
        Some(v) if v == "identity" => Ok(None),
        Some(v) => match v.to_str().ok().and_then(Encoding::from_name) {
            Some(e) => Ok(Some(e)),
            None => {
                let mut status = Status::unimplemented(format!(
                    "Content is compressed with `{}` which isn't supported",
                    serving_proto::text::quote(&String::from_utf8_lossy(v.as_bytes()))
                ));
                status
                    .metadata_mut()
                    .insert("grpc-accept-encoding", ACCEPTED.parse().expect("ASCII"));
                Err(status)
            }
        },
    }
}

/// The encoding of the replies: the server's configured one when the
/// client accepts it (as Triton's --grpc-infer-response-compression-level).
pub(crate) fn reply_encoding(state: &State, headers: &HeaderMap) -> Option<Encoding> {
    state.grpc_response_compression.filter(|e| {
        headers
            .get_all("grpc-accept-encoding")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| compression::accepted(v).contains(e))
    })
}

/// tonic answers an RPC no service has with a bare UNIMPLEMENTED; say
/// which RPC, and what is served.
fn with_unimplemented_text(
    response: Response<tonic::body::Body>,
    path: &str,
) -> Response<tonic::body::Body> {
    let headers = response.headers();
    if headers.get("grpc-status").is_some_and(|s| s == "12")
        && headers.get("grpc-message").is_none()
    {
        return Status::unimplemented(format!(
            "unknown RPC {}: this server serves inference.GRPCInferenceService, mindspore.serving.proto.MSService/Predict and grpc.health.v1.Health",
            serving_proto::text::quote(path)
        ))
        .into_http();
    }
    response
}

/// The encodings requests may use, as `grpc-accept-encoding` lists them.
pub(crate) const ACCEPTED: &str = "identity,deflate,gzip";

/// One gRPC message given as frame chunks, compressed into one frame (CPU
/// work in proportion to the message: off the connection's thread).
async fn compressed_frame(encoding: Encoding, chunks: Vec<Bytes>) -> Vec<Bytes> {
    tokio::task::spawn_blocking(move || compression::compress_frame(encoding, &chunks))
        .await
        .unwrap_or_default()
}

/// The status for a request body that could not be read.
fn read_status(e: ReadError) -> Status {
    match e {
        ReadError::Frame(FrameError::TooLarge(e)) => Status::resource_exhausted(e.to_string()),
        ReadError::Busy(e) => Status::unavailable(e.to_string()),
        ReadError::Body(e) => super::body_status(e),
        other => Status::internal(other.to_string()),
    }
}
