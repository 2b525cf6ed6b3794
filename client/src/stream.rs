//! Streaming inference: Triton's `ModelStreamInfer`, many requests in
//! flight on one gRPC stream, answered in request order.

use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::Stream;
use serving_proto::oip::grpc::Contents;
use serving_proto::oip::{self, InferRequest, InferResponse};
use serving_proto::pb::inference as pb;
use tokio::sync::mpsc;

use crate::error::Error;
use crate::transport::grpc::status_error;
use crate::transport::{CallCtx, sent_too_large};

/// How many requests may wait to be written to the stream before
/// [`InferStream::send`] waits (backpressure from the connection).
const QUEUED: usize = 64;

/// The sending half of a stream opened by [`crate::Client::stream`].
///
/// Requests go out in the order sent; their answers come back on the
/// [`StreamResponses`] in the same order, each with its request's `id`
/// (give each request one to match them). Dropping this (or
/// [`InferStream::finish`]) half-closes the stream: the server answers
/// what it has and ends it.
#[derive(Debug)]
pub struct InferStream {
    sender: mpsc::Sender<pb::ModelInferRequest>,
    contents: Contents,
    max_send: u64,
    endpoint: String,
}

impl InferStream {
    pub(crate) fn new(
        contents: Contents,
        max_send: u64,
        endpoint: String,
    ) -> (InferStream, mpsc::Receiver<pb::ModelInferRequest>) {
        let (sender, receiver) = mpsc::channel(QUEUED);
        (
            InferStream {
                sender,
                contents,
                max_send,
                endpoint,
            },
            receiver,
        )
    }

    /// Sends one request on the stream. The send cap applies to each
    /// request, checked before it is queued. Fails once the stream has
    /// ended (the server closed it, or its answers were dropped).
    pub async fn send(&self, request: &InferRequest) -> Result<(), Error> {
        let msg = oip::grpc::encode_request(request, self.contents)
            .map_err(|e| Error::Request(e.to_string()))?;
        let size = prost::Message::encoded_len(&msg) as u64;
        serving_proto::frame::check_size(
            serving_proto::frame::Direction::Sent,
            size,
            self.max_send,
        )
        .map_err(sent_too_large)?;
        self.sender
            .send(msg)
            .await
            .map_err(|_| Error::StreamClosed {
                endpoint: self.endpoint.clone(),
            })
    }

    /// Half-closes the stream: no more requests; the answers to those
    /// sent still come.
    pub fn finish(self) {}
}

/// The answers of a stream opened by [`crate::Client::stream`], in request
/// order: each an [`InferResponse`], or that request's own failure as
/// [`Error::Stream`] (the stream goes on). A failure of the stream itself
/// (the connection, or a status that ends it) is the last item. Dropping
/// this cancels the stream: the server drops the requests still queued.
pub struct StreamResponses {
    pub(crate) inner: Answers,
    pub(crate) endpoint: String,
    pub(crate) ctx: CallCtx,
    pub(crate) ended: bool,
    /// Dropped with the answers: ends the request stream.
    pub(crate) _cancel: tokio::sync::oneshot::Sender<()>,
}

/// The answers' side of the call: opening until the server's headers
/// come (servers built on grpcio send them with the first answer, so the
/// requests must flow before this resolves), then the answers.
pub(crate) enum Answers {
    Opening(Opening),
    Open(Box<tonic::Streaming<pb::ModelStreamInferResponse>>),
}

/// The call, until the server's headers come: a task of its own, aborted
/// with the answers.
pub(crate) struct Opening(
    pub(crate)  tokio::task::JoinHandle<
        Result<tonic::Response<tonic::Streaming<pb::ModelStreamInferResponse>>, tonic::Status>,
    >,
);

impl Drop for Opening {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl std::fmt::Debug for StreamResponses {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamResponses")
            .field("endpoint", &self.endpoint)
            .field("ended", &self.ended)
            .finish()
    }
}

impl StreamResponses {
    /// Cancels the stream now (as dropping it does): the server drops the
    /// requests still queued and stops running them.
    pub fn cancel(self) {}

    fn answer(&self, m: pb::ModelStreamInferResponse) -> Result<InferResponse, Error> {
        if !m.error_message.is_empty() {
            let (id, model) = m
                .infer_response
                .map(|r| (r.id, r.model_name))
                .unwrap_or_default();
            return Err(Error::Stream {
                endpoint: self.endpoint.clone(),
                id,
                model,
                message: m.error_message,
            });
        }
        let reply = m.infer_response.ok_or_else(|| Error::Protocol {
            endpoint: self.endpoint.clone(),
            message: "a stream answer holds neither a response nor an error".into(),
        })?;
        oip::grpc::decode_response(reply).map_err(|e| Error::Protocol {
            endpoint: self.endpoint.clone(),
            message: e.to_string(),
        })
    }
}

impl Stream for StreamResponses {
    type Item = Result<InferResponse, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.ended {
            return Poll::Ready(None);
        }
        if let Answers::Opening(opening) = &mut self.inner {
            match Pin::new(&mut opening.0).poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(Ok(response))) => {
                    self.inner = Answers::Open(Box::new(response.into_inner()))
                }
                Poll::Ready(Ok(Err(status))) => {
                    self.ended = true;
                    let e = status_error(status, &self.endpoint, &self.ctx);
                    return Poll::Ready(Some(Err(e)));
                }
                Poll::Ready(Err(joined)) => {
                    self.ended = true;
                    return Poll::Ready(Some(Err(Error::Transport {
                        endpoint: self.endpoint.clone(),
                        kind: crate::TransportKind::Other,
                        message: format!("the stream's call ended without an answer: {joined}"),
                        source: Some(Box::new(joined)),
                    })));
                }
            }
        }
        let Answers::Open(inner) = &mut self.inner else {
            unreachable!("an opening stream returned above or became open");
        };
        match Pin::new(&mut **inner).poll_next(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => {
                self.ended = true;
                Poll::Ready(None)
            }
            Poll::Ready(Some(Ok(m))) => Poll::Ready(Some(self.answer(m))),
            Poll::Ready(Some(Err(status))) => {
                self.ended = true;
                let e = status_error(status, &self.endpoint, &self.ctx);
                Poll::Ready(Some(Err(e)))
            }
        }
    }
}
