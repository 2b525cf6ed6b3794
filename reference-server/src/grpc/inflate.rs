//! The request messages of the RPCs tonic serves (the control RPCs, under
//! [`crate::service::CONTROL_BODY_MAX`]; `ModelStreamInfer` is read by
//! [`super::stream`]), each handed to tonic only once all its bytes are
//! in, and inflated first if compressed.
//!
//! tonic reserves a message's buffer from its frame header's claim, before
//! the bytes arrive (800 stalled streams claiming 99 MiB each cost it +521
//! MiB), and inflates into a buffer that doubles as it fills, so a
//! compression bomb can cost it about twice the message limit.
//! Here each message is split off the body as it arrives
//! ([`serving_proto::frame::Splitter`], which holds only the bytes
//! received), inflated into pieces under the limit
//! ([`compression::inflate`], off the connection's thread) when
//! compressed, and handed on whole and uncompressed; tonic then reads
//! complete plain frames. A message that inflates past the limit ends the
//! call with RESOURCE_EXHAUSTED.

use bytes::Bytes;
use futures_util::StreamExt;
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use serving_proto::compression::{self, Encoding};
use serving_proto::frame::{FrameError, HEADER_LEN, Splitter};
use tonic::Status;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

struct Reading<B> {
    body: B,
    split: Splitter,
    /// A message inflated, to follow the header just yielded.
    queued: Option<Bytes>,
    ended: bool,
}

/// `body` as whole messages, every compressed one inflated under `limit`
/// bytes with the call's `encoding` (`None`: the call named none, and a
/// compressed message is a protocol error, as gRPC says).
pub(crate) fn inflating<B>(body: B, encoding: Option<Encoding>, limit: u64) -> tonic::body::Body
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    let start = Reading {
        body,
        split: Splitter::new(limit),
        queued: None,
        ended: false,
    };
    let frames = futures_util::stream::unfold(start, move |mut r| async move {
        if let Some(message) = r.queued.take() {
            return Some((Ok(Frame::data(message)), r));
        }
        loop {
            if r.ended {
                return None;
            }
            match r.split.next_message() {
                Err(e) => {
                    r.ended = true;
                    let status = match e {
                        FrameError::TooLarge(t) => Status::resource_exhausted(t.to_string()),
                        other => Status::internal(other.to_string()),
                    };
                    return Some((Err(BoxError::from(status)), r));
                }
                Ok(Some((compressed, message))) => {
                    let message = if compressed {
                        let Some(encoding) = encoding else {
                            r.ended = true;
                            let status = Status::internal(
                                "protocol error: received message with compressed-flag but no grpc-encoding was specified",
                            );
                            return Some((Err(BoxError::from(status)), r));
                        };
                        match inflate(encoding, message, limit).await {
                            Ok(m) => m,
                            Err(status) => {
                                r.ended = true;
                                return Some((Err(BoxError::from(status)), r));
                            }
                        }
                    } else {
                        message
                    };
                    let mut header = [0u8; HEADER_LEN];
                    header[1..].copy_from_slice(
                        &u32::try_from(message.len())
                            .unwrap_or(u32::MAX)
                            .to_be_bytes(),
                    );
                    r.queued = Some(message);
                    return Some((Ok(Frame::data(Bytes::copy_from_slice(&header))), r));
                }
                Ok(None) => match r.body.frame().await {
                    None => {
                        r.ended = true;
                        if r.split.partial() > 0 {
                            let status = Status::internal(format!(
                                "Unexpected EOF decoding stream: the body ended inside a message ({} bytes of it received)",
                                r.split.partial()
                            ));
                            return Some((Err(BoxError::from(status)), r));
                        }
                    }
                    Some(Err(e)) => {
                        r.ended = true;
                        return Some((Err(e.into()), r));
                    }
                    Some(Ok(frame)) => {
                        if let Some(data) = frame.data_ref() {
                            r.split.push(data);
                        }
                    }
                },
            }
        }
    });
    tonic::body::Body::new(http_body_util::StreamBody::new(frames.boxed()))
}

async fn inflate(encoding: Encoding, message: Bytes, limit: u64) -> Result<Bytes, Status> {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    match tokio::task::spawn_blocking(move || compression::inflate(encoding, &message, limit)).await
    {
        Ok(Ok(bytes)) => Ok(Bytes::from(bytes)),
        Ok(Err(e @ compression::InflateError::TooLarge { .. })) => Err(Status::resource_exhausted(
            format!("Received message larger than max: {e}"),
        )),
        Ok(Err(e)) => Err(Status::internal(e.to_string())),
        Err(e) => Err(Status::internal(e.to_string())),
    }
}
