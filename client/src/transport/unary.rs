//! A unary gRPC call over a tonic channel without tonic's codec, for the
//! two calls that carry tensors (`Predict`, `ModelInfer`).
//!
//! tonic's codec copies the whole request, tensors included, into its
//! encode buffer, and gathers the reply into a buffer it grows as frames
//! arrive. Here the request goes out as chunks that share the tensors'
//! bytes ([`serving_proto::chunked`]) and the reply is gathered once into a
//! buffer sized from its frame header, after the receive cap has been
//! checked. The channel (connection, TLS, `grpc-timeout` enforcement) is the
//! same tonic channel the other calls use, and failures come back as the
//! `tonic::Status` tonic would have produced, so one mapping serves both.

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Uri, Version};
use prost::Message;
use serving_proto::compression::Encoding;
use serving_proto::frame::FrameError;
use serving_proto::grpc_body::{Budget, MessageBody, ReadError, read_unary_compressed};
use tonic::transport::Channel;
use tonic::{Code, Status};
use tower::{Service, ServiceExt};

use super::CallCtx;

/// Replies are bounded by the receive cap alone: a client holds only its
/// own calls.
static UNLIMITED: Budget = Budget::unlimited();

use super::grpc::status_error;
use crate::error::{Error, SizeSide};

/// Sends `chunks` (a framed message from [`serving_proto::chunked`]) to
/// `path` on the endpoint `label` and decodes the reply, its first tensor
/// (found along `tensor_path`) aligned so callers can view it as a slice in
/// place.
pub(crate) async fn call<M: Message + Default>(
    channel: &Channel,
    label: &str,
    path: &'static str,
    chunks: Vec<Bytes>,
    tensor_path: &[u32],
    ctx: &CallCtx,
) -> Result<M, Error> {
    let failed = |s: Status| status_error(s, label, ctx);
    let chunks = match ctx.compression {
        // The send cap was checked on the message before compression, as
        // the server checks what it inflates to.
        Some(e) => tokio::task::spawn_blocking(move || {
            serving_proto::compression::compress_frame(e, &chunks)
        })
        .await
        .map_err(|e| Error::Request(format!("compressing the request failed: {e}")))?,
        None => chunks,
    };
    // tonic's own metadata handling and `grpc-timeout` formatting; the
    // channel enforces the timeout.
    let (metadata, _, _) = ctx.grpc_request(()).into_parts();
    let mut request = Request::new(tonic::body::Body::new(MessageBody::new(chunks)));
    *request.method_mut() = Method::POST;
    *request.uri_mut() = Uri::from_static(path);
    *request.version_mut() = Version::HTTP_2;
    *request.headers_mut() = metadata.into_headers();
    let headers = request.headers_mut();
    headers.insert(http::header::TE, HeaderValue::from_static("trailers"));
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    if let Some(e) = ctx.compression {
        headers.insert("grpc-encoding", HeaderValue::from_static(e.name()));
        headers.insert(
            "grpc-accept-encoding",
            HeaderValue::from_static("gzip,deflate"),
        );
    }

    let mut channel = channel.clone();
    let ready = channel
        .ready()
        .await
        .map_err(|e| failed(Status::from_error(e.into())))?;
    let response = ready
        .call(request)
        .await
        .map_err(|e| failed(Status::from_error(e.into())))?;

    // A trailers-only reply: the status is in the headers.
    if let Some(status) = Status::from_header_map(response.headers())
        && status.code() != Code::Ok
    {
        return Err(failed(status));
    }
    let http_status = response.status();
    let reply_encoding = response
        .headers()
        .get("grpc-encoding")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let mut body = response.into_body();
    let read = read_unary_compressed(
        &mut body,
        ctx.max_receive,
        tensor_path,
        &UNLIMITED,
        ctx.compression.is_some(),
    )
    .await
    .map_err(|e| match e {
        ReadError::Frame(FrameError::TooLarge(t)) => Error::MessageTooLarge {
            size: Some(t.size),
            limit: Some(ctx.max_receive),
            side: SizeSide::Client,
        },
        ReadError::Body(e) => failed(Status::from_error(e)),
        other => failed(Status::internal(other.to_string())),
    })?;
    match read.trailers.as_ref().and_then(Status::from_header_map) {
        Some(status) if status.code() != Code::Ok => return Err(failed(status)),
        Some(_) => {}
        None if http_status == http::StatusCode::OK => {}
        None => {
            return Err(failed(Status::new(
                http_code(http_status),
                format!(
                    "grpc-status header missing, mapped from HTTP status code {}",
                    http_status.as_u16()
                ),
            )));
        }
    }
    let mut reply = read
        .message
        .ok_or_else(|| failed(Status::internal("Missing response message.")))?;
    let decoding = std::time::Instant::now();
    if read.compressed {
        let encoding = reply_encoding
            .as_deref()
            .and_then(Encoding::from_name)
            .ok_or_else(|| Error::Protocol {
                endpoint: label.to_owned(),
                message: format!(
                    "the reply is compressed with {:?}, which this client did not offer",
                    reply_encoding.as_deref().unwrap_or("no grpc-encoding")
                ),
            })?;
        reply = super::inflate_reply(encoding, reply, ctx.max_receive, label).await?;
    }
    let decoded = M::decode(reply).map_err(|e| Error::Protocol {
        endpoint: label.to_owned(),
        message: format!("the reply is not a valid protobuf message: {e}"),
    });
    ctx.received(decoding.elapsed());
    decoded
}

/// The gRPC code for an HTTP status without a `grpc-status`, per gRPC's
/// HTTP-to-gRPC mapping.
fn http_code(s: http::StatusCode) -> Code {
    match s {
        http::StatusCode::BAD_REQUEST => Code::Internal,
        http::StatusCode::UNAUTHORIZED => Code::Unauthenticated,
        http::StatusCode::FORBIDDEN => Code::PermissionDenied,
        http::StatusCode::NOT_FOUND => Code::Unimplemented,
        http::StatusCode::TOO_MANY_REQUESTS
        | http::StatusCode::BAD_GATEWAY
        | http::StatusCode::SERVICE_UNAVAILABLE
        | http::StatusCode::GATEWAY_TIMEOUT => Code::Unavailable,
        _ => Code::Unknown,
    }
}
