//! The two transports behind every endpoint, and what a call carries.

pub(crate) mod grpc;
pub(crate) mod rest;
mod unary;

use std::sync::Arc;
use std::time::Duration;

/// Per-call settings handed to a transport.
#[derive(Clone, Debug)]
pub(crate) struct CallCtx {
    /// Headers (gRPC metadata) sent with every call: authorization, ...
    pub headers: Arc<http::HeaderMap>,
    /// Time left for this attempt.
    pub timeout: Option<Duration>,
    /// The send cap in bytes.
    pub max_send: u64,
    /// The receive cap in bytes.
    pub max_receive: u64,
    /// Requests compressed with this, and compressed replies accepted.
    pub compression: Option<serving_proto::compression::Encoding>,
}

impl CallCtx {
    /// Refuses a request of `size` encoded bytes over the send cap, before
    /// anything is sent.
    pub fn check_send(&self, size: u64) -> Result<(), crate::Error> {
        serving_proto::frame::check_size(serving_proto::frame::Direction::Sent, size, self.max_send)
            .map_err(sent_too_large)
    }

    /// A tonic request carrying this call's headers and `grpc-timeout`.
    pub fn grpc_request<T>(&self, message: T) -> tonic::Request<T> {
        let mut r = tonic::Request::new(message);
        if !self.headers.is_empty() {
            *r.metadata_mut() = tonic::metadata::MetadataMap::from_headers((*self.headers).clone());
        }
        if let Some(t) = self.timeout {
            r.set_timeout(t);
        }
        r
    }
}

/// Inflates a compressed reply under the receive cap, off the async
/// threads (CPU work in proportion to the reply).
pub(crate) async fn inflate_reply(
    encoding: serving_proto::compression::Encoding,
    body: bytes::Bytes,
    max_receive: u64,
    endpoint: &str,
) -> Result<bytes::Bytes, crate::Error> {
    use serving_proto::compression::{self, InflateError};
    let limit = usize::try_from(max_receive).unwrap_or(usize::MAX);
    match tokio::task::spawn_blocking(move || compression::inflate(encoding, &body, limit)).await {
        Ok(Ok(bytes)) => Ok(bytes::Bytes::from(bytes)),
        Ok(Err(InflateError::TooLarge { .. })) => Err(crate::Error::MessageTooLarge {
            size: None,
            limit: Some(max_receive),
            side: crate::SizeSide::Client,
        }),
        Ok(Err(e)) => Err(crate::Error::Protocol {
            endpoint: endpoint.to_owned(),
            message: format!("the compressed reply cannot be inflated: {e}"),
        }),
        Err(e) => Err(crate::Error::Protocol {
            endpoint: endpoint.to_owned(),
            message: format!("inflating the reply failed: {e}"),
        }),
    }
}

/// Compresses a request body given in pieces, off the async threads.
pub(crate) async fn compress_body(
    encoding: serving_proto::compression::Encoding,
    parts: Vec<bytes::Bytes>,
) -> bytes::Bytes {
    tokio::task::spawn_blocking(move || {
        bytes::Bytes::from(serving_proto::compression::compress_chunks(
            encoding, &parts,
        ))
    })
    .await
    .unwrap_or_default()
}

/// A request refused by the send cap.
pub(crate) fn sent_too_large(e: serving_proto::frame::TooLarge) -> crate::Error {
    crate::Error::MessageTooLarge {
        size: Some(e.size),
        limit: Some(e.limit),
        side: crate::SizeSide::Client,
    }
}

pub use serving_proto::oip::metadata::{ModelMetadata, ServerMetadata, TensorMetadata};
