//! The two RPCs that carry tensors, `MSService/Predict` and
//! `GRPCInferenceService/ModelInfer`, framed without tonic's codec.
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
use serving_proto::chunked;
use serving_proto::frame::{FrameError, TooLarge};
use serving_proto::grpc_body::method::{MODEL_INFER, PREDICT};
use serving_proto::grpc_body::{MessageBody, ReadError, read_unary, tensor_path};
use serving_proto::pb::inference::grpc_inference_service_server::GrpcInferenceService;
use serving_proto::pb::mindspore::ms_service_server::MsService;
use tonic::Status;
use tonic::metadata::MetadataMap;

use super::mindspore::MindSporeGrpc;
use super::oip::OipGrpc;
use crate::service::State;

/// A tower service answering [`PREDICT`] and [`MODEL_INFER`] itself and
/// passing every other request to `inner`.
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
    S: tower::Service<Request<B>, Response = Response<tonic::body::Body>, Error = Infallible>
        + Clone
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
                        chunked::model_infer_response,
                        |r| async move { oip.model_infer(r).await },
                    )
                    .await)
                })
            }
            _ => {
                let clone = self.inner.clone();
                let mut inner = std::mem::replace(&mut self.inner, clone);
                Box::pin(async move { inner.call(req).await })
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
    if let Some(encoding) = parts.headers.get("grpc-encoding")
        && encoding != "identity"
    {
        let mut status = Status::unimplemented(format!(
            "Content is compressed with `{}` which isn't supported",
            serving_proto::text::quote(&String::from_utf8_lossy(encoding.as_bytes()))
        ));
        status
            .metadata_mut()
            .insert("grpc-accept-encoding", "identity".parse().expect("ASCII"));
        return status.into_http();
    }
    let message = match read_unary(&mut body, limit, tensor_path, &state.incoming).await {
        Ok(read) => match read.message {
            Some(m) => m,
            None => return Status::internal("Missing request message.").into_http(),
        },
        Err(e) => return read_status(e).into_http(),
    };
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
            let chunks = match encode(message, limit) {
                Ok(chunks) => chunks,
                Err(e) => return Status::resource_exhausted(e.to_string()).into_http(),
            };
            let mut trailers = HeaderMap::new();
            trailers.insert("grpc-status", HeaderValue::from_static("0"));
            let body = MessageBody::with_trailers(chunks, trailers);
            let mut response = Response::new(tonic::body::Body::new(body));
            *response.headers_mut() = metadata.into_headers();
            response.headers_mut().insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/grpc"),
            );
            *response.extensions_mut() = extensions;
            response
        }
        Err(status) => status.into_http(),
    }
}

/// The status for a request body that could not be read.
fn read_status(e: ReadError) -> Status {
    match e {
        ReadError::Frame(FrameError::TooLarge(e)) => Status::resource_exhausted(e.to_string()),
        ReadError::Busy(e) => Status::unavailable(e.to_string()),
        ReadError::Body(e) => Status::from_error(e),
        other => Status::internal(other.to_string()),
    }
}
