//! `GRPCInferenceService/ModelStreamInfer`, read and answered here rather
//! than by tonic, so that a stream holds only what its requests need.
//!
//! tonic reads a stream's messages into one buffer that keeps the capacity
//! of the largest message for as long as the stream stays open: six idle
//! streams that had each sent one message inflating to 60 MiB held over
//! 600 MiB. Here each message is gathered into a buffer of exactly its
//! size under the server's budget ([`serving_proto::gather`]), inflated
//! under the budget when compressed, charged with what decoding it builds
//! ([`serving_proto::decode_cost`]), and given back as soon as its request
//! is answered; between messages a stream holds nothing. The requests then
//! run as every other stream's ([`OipGrpc::run_stream`]).

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body::{Body, Frame};
use prost::Message;
use serving_proto::compression::{self, Encoding};
use serving_proto::decode_cost;
use serving_proto::frame::{self, FrameError};
use serving_proto::gather::Gather;
use serving_proto::pb::inference as pb;
use tokio::sync::mpsc;
use tonic::Status;
use tonic::metadata::MetadataMap;

use super::memory;
use super::memory::Refused;
use super::oip::{OipGrpc, STATUS_ERRORS_HEADER, StreamRequest};
use super::zero_copy::{ACCEPTED, reply_encoding, request_encoding};
use crate::body_stall::StallSwitch;
use crate::service::State;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// One request read from the stream, or the error that ends it.
type Read = Result<StreamRequest, Status>;

/// Answers one `ModelStreamInfer` call: the response headers at once (a
/// client may wait for them before it sends), then an answer per request.
pub(crate) fn model_stream_infer<B>(
    req: Request<B>,
    oip: OipGrpc,
    state: Arc<State>,
) -> Response<tonic::body::Body>
where
    B: Body<Data = Bytes> + Unpin + Send + 'static,
    B::Error: Into<BoxError>,
{
    let (parts, body) = req.into_parts();
    // A stream may be silent between messages as long as it likes; the
    // body's stall timer runs only while a message is partly read.
    let switch = parts.extensions.get::<StallSwitch>().cloned();
    if let Some(s) = &switch {
        s.disarm();
    }
    let encoding = match request_encoding(&parts.headers) {
        Ok(e) => e,
        Err(status) => return status.into_http(),
    };
    let replies = reply_encoding(&state, &parts.headers);
    let status_errors = parts
        .headers
        .get(STATUS_ERRORS_HEADER)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"true"));
    let deadline = super::deadline::deadline_of(&MetadataMap::from_headers(parts.headers));
    // One request read ahead at most: the rest waits in the connection's
    // flow-control window, not in this server's memory.
    let (tx, mut rx) = mpsc::channel::<Read>(1);
    tokio::spawn(read_requests(body, encoding, state, tx, switch));
    let requests = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
    let answers = oip.run_stream(Box::pin(requests), deadline, status_errors);
    let frames = futures_util::stream::unfold(Some(answers), move |answers| async move {
        let mut answers = answers?;
        let trailers = match answers.next().await {
            Some(Ok(reply)) => {
                let frame = encode(&reply, replies).await;
                return Some((
                    Ok::<_, std::convert::Infallible>(Frame::data(frame)),
                    Some(answers),
                ));
            }
            Some(Err(status)) => status_trailers(status),
            None => ok_trailers(),
        };
        Some((Ok(Frame::trailers(trailers)), None))
    });
    let mut response = Response::new(tonic::body::Body::new(http_body_util::StreamBody::new(
        frames,
    )));
    let headers = response.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    if let Some(e) = replies {
        headers.insert("grpc-encoding", HeaderValue::from_static(e.name()));
    }
    headers.insert("grpc-accept-encoding", HeaderValue::from_static(ACCEPTED));
    response
}

/// A status as trailers: its `grpc-status`, `grpc-message` and details.
fn status_trailers(status: Status) -> HeaderMap {
    let (parts, ()) = status.into_http::<()>().into_parts();
    let mut trailers = parts.headers;
    trailers.remove(http::header::CONTENT_TYPE);
    trailers
}

fn ok_trailers() -> HeaderMap {
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from_static("0"));
    trailers
}

/// One answer as a gRPC frame, compressed off the connection's thread when
/// the client accepts it.
async fn encode(reply: &pb::ModelStreamInferResponse, encoding: Option<Encoding>) -> Bytes {
    let len = reply.encoded_len();
    let mut frame = BytesMut::with_capacity(frame::HEADER_LEN + len);
    frame.extend_from_slice(&[0]);
    frame.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes());
    reply
        .encode(&mut frame)
        .expect("the buffer has the message's size");
    let frame = frame.freeze();
    let Some(e) = encoding else {
        return frame;
    };
    // `compress_frame` takes a whole frame and compresses its message.
    tokio::task::spawn_blocking(move || compression::compress_frame(e, &[frame]).concat())
        .await
        .map(Bytes::from)
        .unwrap_or_default()
}

/// Reads the stream's messages one at a time and sends each, decoded and
/// charged, to `tx`; ends with the error that stops the stream, if any.
async fn read_requests<B>(
    mut body: B,
    encoding: Option<Encoding>,
    state: Arc<State>,
    tx: mpsc::Sender<Read>,
    switch: Option<StallSwitch>,
) where
    B: Body<Data = Bytes> + Unpin + Send + 'static,
    B::Error: Into<BoxError>,
{
    let limit = state.max_msg_bytes as u64;
    let mut leftover = Bytes::new();
    loop {
        let read = tokio::select! {
            read = next_message(&mut body, &mut leftover, &state, limit, switch.as_ref()) => read,
            // The answers went away (the client reset the stream): stop
            // reading.
            () = tx.closed() => return,
        };
        let item = match read {
            Ok(None) => return,
            Ok(Some((compressed, message))) => {
                request(&state, encoding, compressed, message, limit).await
            }
            Err(status) => Err(status),
        };
        let ends = item.is_err();
        if tx.send(item).await.is_err() || ends {
            return;
        }
    }
}

/// Inflates (when compressed), charges and decodes one message. A message
/// refused for the server's memory is answered in its turn and the stream
/// goes on; a bad one ends the stream.
async fn request(
    state: &State,
    encoding: Option<Encoding>,
    compressed: bool,
    mut message: Bytes,
    limit: u64,
) -> Read {
    let mut inflating = None;
    if compressed {
        let Some(encoding) = encoding else {
            return Err(Status::internal(
                "protocol error: received message with compressed-flag but no grpc-encoding was specified",
            ));
        };
        match memory::inflate(state, encoding, message, limit).await {
            Ok((inflated, charge)) => {
                message = inflated;
                inflating = Some(charge);
            }
            Err(Refused::Budget(status)) => return Ok(StreamRequest::Refused(status)),
            Err(Refused::Message(status)) => return Err(status),
        }
    }
    let held = match memory::charge_message(
        state,
        inflating,
        message.len(),
        decode_cost::model_infer_request(&message),
    ) {
        Ok(held) => held,
        Err(refused) => return Ok(StreamRequest::Refused(refused.into())),
    };
    let request =
        pb::ModelInferRequest::decode(message).map_err(|e| Status::internal(e.to_string()))?;
    Ok(StreamRequest::Run(request, Some(held)))
}

/// The next whole message of the body and its compressed flag: `None` at
/// the body's end. While it arrives, its bytes are held in a buffer of
/// exactly its size (never the header's claim before the bytes come)
/// under the server's budget. Bytes of the next message that came in the
/// same frame are left in `leftover`.
async fn next_message<B>(
    body: &mut B,
    leftover: &mut Bytes,
    state: &State,
    limit: u64,
    switch: Option<&StallSwitch>,
) -> Result<Option<(bool, Bytes)>, Status>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    let mut header = [0u8; frame::HEADER_LEN];
    let mut have = 0;
    let mut gathering: Option<(bool, Gather<'_>)> = None;
    let set_switch = |mid_message: bool| {
        if let Some(s) = switch {
            if mid_message { s.arm() } else { s.disarm() }
        }
    };
    loop {
        set_switch(have > 0 || gathering.is_some());
        let mut data = if leftover.is_empty() {
            let polled =
                std::future::poll_fn(|cx| std::pin::Pin::new(&mut *body).poll_frame(cx)).await;
            let Some(frame) = polled else {
                return match (have, gathering) {
                    (0, None) => Ok(None),
                    (_, Some((_, g))) => Err(truncated(g.received(), g.expected())),
                    (got, None) => Err(truncated(got, frame::HEADER_LEN)),
                };
            };
            let frame = frame.map_err(|e| super::body_status(e.into()))?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            data
        } else {
            std::mem::take(leftover)
        };
        if gathering.is_none() {
            let take = (frame::HEADER_LEN - have).min(data.len());
            header[have..have + take].copy_from_slice(&data[..take]);
            have += take;
            data = data.slice(take..);
            if have < frame::HEADER_LEN {
                continue;
            }
            let h = frame::check_header(&header, limit).map_err(|e| match e {
                FrameError::TooLarge(t) => Status::resource_exhausted(t.to_string()),
                other => Status::internal(other.to_string()),
            })?;
            gathering = Some((
                h.compressed,
                Gather::new(&state.incoming, h.len as usize, None),
            ));
        }
        let Some((compressed, g)) = &mut gathering else {
            continue;
        };
        let took = g
            .push(data.clone())
            .map_err(|e| Status::unavailable(e.to_string()))?;
        if g.is_complete() {
            set_switch(false);
            *leftover = data.slice(took..);
            let compressed = *compressed;
            let message = gathering
                .take()
                .map(|(_, g)| g.finish())
                .unwrap_or_default();
            return Ok(Some((compressed, message)));
        }
    }
}

fn truncated(got: usize, expected: usize) -> Status {
    Status::internal(format!(
        "Unexpected EOF decoding stream: the body ended inside a message ({got} of {expected} bytes received)"
    ))
}
