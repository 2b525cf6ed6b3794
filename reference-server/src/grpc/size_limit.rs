//! Refuses an oversized gRPC request from its 5-byte frame header, before the
//! message body is buffered: RESOURCE_EXHAUSTED with gRPC's own text,
//! `Received message larger than max (<size> vs. <limit>)`.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use serving_proto::frame::{self, FrameError};

/// A tower layer checking the first frame header of every request.
#[derive(Clone, Debug)]
pub(crate) struct MaxRequestSize<S> {
    inner: S,
    limit: u64,
}

impl<S> MaxRequestSize<S> {
    /// Wraps `inner`, refusing requests whose message exceeds `limit` bytes.
    pub(crate) fn new(inner: S, limit: u64) -> MaxRequestSize<S> {
        MaxRequestSize { inner, limit }
    }
}

/// The request body with the chunks read for the header check put back in
/// front, unchanged (no copy).
pub(crate) struct Prefixed<B> {
    read: std::collections::VecDeque<Bytes>,
    inner: B,
}

impl<B> Body for Prefixed<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        if let Some(chunk) = self.read.pop_front() {
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.read.is_empty() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        let mut hint = self.inner.size_hint();
        let extra: u64 = self.read.iter().map(|c| c.len() as u64).sum();
        hint.set_lower(hint.lower() + extra);
        if let Some(upper) = hint.upper() {
            hint.set_upper(upper + extra);
        }
        hint
    }
}

/// The one streaming RPC: its messages are checked as they come.
use serving_proto::grpc_body::method::MODEL_STREAM_INFER as STREAM_INFER;

type BoxFuture<T> = Pin<Box<dyn std::future::Future<Output = T> + Send>>;

impl<S, B, RB> tower::Service<Request<B>> for MaxRequestSize<S>
where
    S: tower::Service<Request<Prefixed<B>>, Response = Response<RB>> + Clone + Send + 'static,
    S::Future: Send,
    B: Body<Data = Bytes> + Unpin + Send + 'static,
    B::Error: Send,
    RB: Default + Send,
{
    type Response = Response<RB>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Response<RB>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let limit = self.limit;
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        // A stream's first message may come long after it opens, and its
        // client may wait for the response headers first (tonic does):
        // waiting here for that message would deadlock them. Every message
        // of a stream is bounded by the service's decoding limit instead.
        if req.uri().path() == STREAM_INFER {
            let (parts, body) = req.into_parts();
            let body = Prefixed {
                read: std::collections::VecDeque::new(),
                inner: body,
            };
            return Box::pin(async move { inner.call(Request::from_parts(parts, body)).await });
        }
        Box::pin(async move {
            let (parts, mut body) = req.into_parts();
            let mut read = std::collections::VecDeque::new();
            let mut header = Vec::with_capacity(frame::HEADER_LEN);
            // Read just enough data frames to see the 5-byte header; a
            // broken or finished body is left to the service to report.
            while header.len() < frame::HEADER_LEN {
                let Some(Ok(f)) = body.frame().await else {
                    break;
                };
                let Ok(data) = f.into_data() else { break };
                let take = (frame::HEADER_LEN - header.len()).min(data.len());
                header.extend_from_slice(&data[..take]);
                read.push_back(data);
            }
            if header.len() == frame::HEADER_LEN
                && let Err(FrameError::TooLarge(e)) = frame::check_header(&header, limit)
            {
                tracing::warn!(size = e.size, limit = e.limit, path = %parts.uri.path(), "gRPC request refused from its frame header");
                return Ok(tonic::Status::resource_exhausted(e.to_string()).into_http());
            }
            let body = Prefixed { read, inner: body };
            inner.call(Request::from_parts(parts, body)).await
        })
    }
}
