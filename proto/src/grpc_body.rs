//! One unary gRPC message as an HTTP/2 body: sent as the chunks
//! [`crate::chunked`] wrote (tensor bytes not copied), and read back into
//! one buffer (no copy at all when the message arrived in one piece). The
//! frame header's length is checked against the limit, but memory is never
//! reserved from it: the buffer grows with the bytes that arrive, under a
//! server-wide [`Budget`] (see [`crate::gather`]).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};

use crate::frame::{self, FrameError};
use crate::gather::Gather;
pub use crate::gather::{ALIGN, Budget, Exhausted};

/// A body of chunks, then optionally trailers (a server's `grpc-status`).
#[derive(Debug, Default)]
pub struct MessageBody {
    chunks: VecDeque<Bytes>,
    /// Bytes of `chunks` not yet yielded.
    remaining: u64,
    trailers: Option<HeaderMap>,
    /// Memory charged for the request this body answers, given back when
    /// the body is dropped (sent, or abandoned by the client).
    held: Option<crate::gather::Charge>,
}

impl MessageBody {
    /// A body of `chunks` (a request, or any body sent in parts).
    pub fn new(chunks: Vec<Bytes>) -> MessageBody {
        MessageBody {
            remaining: chunks.iter().map(|c| c.len() as u64).sum(),
            chunks: chunks.into(),
            trailers: None,
            held: None,
        }
    }

    /// A body of `chunks` ending with `trailers` (a reply).
    pub fn with_trailers(chunks: Vec<Bytes>, trailers: HeaderMap) -> MessageBody {
        MessageBody {
            trailers: Some(trailers),
            ..MessageBody::new(chunks)
        }
    }

    /// This body, holding `charge` until it is dropped: a server's reply
    /// keeps its request's memory charged until it has been sent.
    pub fn holding(mut self, charge: crate::gather::Charge) -> MessageBody {
        self.held = Some(charge);
        self
    }
}

impl Body for MessageBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if let Some(chunk) = self.chunks.pop_front() {
            self.remaining -= chunk.len() as u64;
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        Poll::Ready(self.trailers.take().map(|t| Ok(Frame::trailers(t))))
    }

    fn is_end_stream(&self) -> bool {
        self.chunks.is_empty() && self.trailers.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

/// Why a unary message could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    /// The body failed (the connection broke, the stream was reset).
    #[error("{0}")]
    Body(Box<dyn std::error::Error + Send + Sync>),
    /// A bad or oversized frame header.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// The compressed flag is set; this side negotiates no compression.
    #[error(
        "protocol error: received message with compressed-flag but no grpc-encoding was specified"
    )]
    Compressed,
    /// The body ended inside the message.
    #[error("Unexpected EOF decoding stream: the body ended after {got} of {expected} bytes")]
    Truncated {
        /// Bytes of the message (or the 5-byte header) received.
        got: usize,
        /// Bytes expected.
        expected: usize,
    },
    /// Data after the one message of a unary call.
    #[error("a unary call carried more than one message")]
    Extra,
    /// The server's memory for requests still arriving is spent.
    #[error(transparent)]
    Busy(#[from] Exhausted),
}

/// What a unary body held.
#[derive(Debug, Default)]
pub struct Unary {
    /// The message (without its frame header); `None` if the body held no
    /// data at all (a trailers-only reply, or an empty request).
    pub message: Option<Bytes>,
    /// Whether the message is compressed (the frame's flag; only with
    /// [`read_unary_compressed`]): it is then still to be inflated, with
    /// the call's `grpc-encoding`.
    pub compressed: bool,
    /// The trailers, if the body ended with some.
    pub trailers: Option<HeaderMap>,
}

async fn next<B>(body: &mut B) -> Option<Result<Frame<Bytes>, ReadError>>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    std::future::poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx))
        .await
        .map(|r| r.map_err(|e| ReadError::Body(e.into())))
}

/// The RPCs that carry tensors, as HTTP/2 paths.
pub mod method {
    /// `mindspore.serving.proto.MSService/Predict`.
    pub const PREDICT: &str = "/mindspore.serving.proto.MSService/Predict";
    /// `inference.GRPCInferenceService/ModelInfer`.
    pub const MODEL_INFER: &str = "/inference.GRPCInferenceService/ModelInfer";
    /// `inference.GRPCInferenceService/ModelStreamInfer`, the one streaming
    /// RPC.
    pub const MODEL_STREAM_INFER: &str = "/inference.GRPCInferenceService/ModelStreamInfer";
}

/// Where the first tensor's bytes lie in each message, as a path of field
/// numbers from the top-level message to the `bytes` field (for
/// [`read_unary`]'s alignment).
pub mod tensor_path {
    /// `ModelInferRequest.raw_input_contents`.
    pub const MODEL_INFER_REQUEST: &[u32] = &[7];
    /// `ModelInferResponse.raw_output_contents`.
    pub const MODEL_INFER_RESPONSE: &[u32] = &[6];
    /// `PredictRequest.instances` / `Instance.items` / map value / `Tensor.data`.
    pub const PREDICT_REQUEST: &[u32] = &[2, 1, 2, 3];
    /// `PredictReply.instances` / `Instance.items` / map value / `Tensor.data`.
    pub const PREDICT_REPLY: &[u32] = &[3, 1, 2, 3];
}

/// The offset, in a message starting with `prefix`, of the payload of the
/// first length-delimited field along `path` (field numbers, outermost
/// first) that does not end inside `prefix`: the first large tensor, whose
/// bytes are still to come (tensors wholly inside the first chunk are small
/// and are skipped). Total: any bytes give `Some` or `None`.
pub fn payload_offset(prefix: &[u8], path: &[u32]) -> Option<usize> {
    let (&want, rest) = path.split_first()?;
    let mut at = 0usize;
    while at < prefix.len() {
        let mut cursor = prefix.get(at..)?;
        let before = cursor.len();
        let key = prost::encoding::decode_varint(&mut cursor).ok()?;
        let field = u32::try_from(key >> 3).ok()?;
        let wire = key & 7;
        let value = match wire {
            0 => {
                prost::encoding::decode_varint(&mut cursor).ok()?;
                0
            }
            1 => 8,
            5 => 4,
            2 => usize::try_from(prost::encoding::decode_varint(&mut cursor).ok()?).ok()?,
            _ => return None,
        };
        let start = at.checked_add(before - cursor.len())?;
        let end = start.checked_add(value)?;
        if wire == 2 && field == want {
            if rest.is_empty() {
                if end > prefix.len() {
                    return Some(start);
                }
            } else if let Some(inner) =
                payload_offset(prefix.get(start..end.min(prefix.len()))?, rest)
            {
                // Descended into a nested message the prefix may end inside.
                return start.checked_add(inner);
            }
        }
        at = end;
    }
    None
}

/// Reads a whole unary body: at most one message of at most `limit` bytes
/// (refused from its header), then the trailers. When the message arrives
/// in several chunks it is gathered into one buffer that grows with the
/// bytes received, its capacity taken from `budget`, and placed so that the
/// first tensor along `tensor_path` (see [`tensor_path`]; empty for none)
/// starts [`ALIGN`]-aligned, if the first chunk shows where that tensor
/// starts.
pub async fn read_unary<B>(
    body: &mut B,
    limit: u64,
    tensor_path: &[u32],
    budget: &Budget,
) -> Result<Unary, ReadError>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    read_unary_compressed(body, limit, tensor_path, budget, false).await
}

/// [`read_unary`], also taking a compressed message when `accept_compressed`
/// (the call negotiated an encoding): [`Unary::compressed`] then says so,
/// and `limit` bounds the compressed bytes (what they inflate to is the
/// caller's to bound, see [`crate::compression::inflate`]).
pub async fn read_unary_compressed<B>(
    body: &mut B,
    limit: u64,
    tensor_path: &[u32],
    budget: &Budget,
    accept_compressed: bool,
) -> Result<Unary, ReadError>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut out = Unary::default();
    let mut header = [0u8; frame::HEADER_LEN];
    let mut have = 0;
    // The message being gathered, once the header is in.
    let mut gathering: Option<Gather<'_>> = None;
    while let Some(f) = next(body).await {
        let f = f?;
        let mut data = match f.into_data() {
            Ok(data) => data,
            Err(f) => {
                out.trailers = f.into_trailers().ok();
                break;
            }
        };
        if out.message.is_some() {
            if data.is_empty() {
                continue;
            }
            return Err(ReadError::Extra);
        }
        if gathering.is_none() {
            let take = (frame::HEADER_LEN - have).min(data.len());
            header[have..have + take].copy_from_slice(&data[..take]);
            have += take;
            data = data.slice(take..);
            if have < frame::HEADER_LEN {
                continue;
            }
            let h = frame::check_header(&header, limit)?;
            if h.compressed && !accept_compressed {
                return Err(ReadError::Compressed);
            }
            out.compressed = h.compressed;
            let len = h.len as usize;
            if data.len() >= len {
                // The whole message in this chunk: no copy.
                out.message = Some(data.split_to(len));
                if !data.is_empty() {
                    return Err(ReadError::Extra);
                }
                continue;
            }
            // Compressed bytes have no tensor to align.
            let aligned = if h.compressed {
                None
            } else {
                payload_offset(&data, tensor_path)
            };
            gathering = Some(Gather::new(budget, len, aligned));
        }
        let Some(g) = &mut gathering else {
            continue;
        };
        let all = data.len();
        let took = g.push(data)?;
        if g.is_complete() {
            if took < all {
                return Err(ReadError::Extra);
            }
            out.message = gathering.take().map(Gather::finish);
        }
    }
    if let Some(g) = gathering {
        return Err(ReadError::Truncated {
            got: g.received(),
            expected: g.expected(),
        });
    }
    if have > 0 && have < frame::HEADER_LEN {
        return Err(ReadError::Truncated {
            got: have,
            expected: frame::HEADER_LEN,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(chunks: &[&[u8]], trailers: bool) -> MessageBody {
        let chunks = chunks.iter().map(|c| Bytes::copy_from_slice(c)).collect();
        if trailers {
            let mut t = HeaderMap::new();
            t.insert("grpc-status", "0".parse().unwrap());
            MessageBody::with_trailers(chunks, t)
        } else {
            MessageBody::new(chunks)
        }
    }

    fn read(chunks: &[&[u8]], trailers: bool, limit: u64) -> Result<Unary, ReadError> {
        let mut body = frames(chunks, trailers);
        futures_lite(read_unary(&mut body, limit, &[], &Budget::unlimited()))
    }

    /// Runs a future that never waits (the test bodies are always ready).
    fn futures_lite<F: std::future::Future>(f: F) -> F::Output {
        let mut f = std::pin::pin!(f);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        match f.as_mut().poll(&mut cx) {
            Poll::Ready(v) => v,
            Poll::Pending => panic!("a ready body made the read wait"),
        }
    }

    #[test]
    fn messages_are_gathered_across_any_chunking() {
        let msg: Vec<u8> = (0..100u8).collect();
        let mut wire = vec![0, 0, 0, 0, 100];
        wire.extend_from_slice(&msg);
        for cut in [1, 3, 5, 6, 50, 104, 105] {
            for cut2 in [cut, (cut + 7).min(105)] {
                let (a, rest) = wire.split_at(cut);
                let (b, c) = rest.split_at(cut2 - cut);
                let u = read(&[a, b, c], true, 100).unwrap();
                assert_eq!(u.message.as_deref(), Some(&msg[..]), "cut at {cut}, {cut2}");
                assert_eq!(u.trailers.unwrap()["grpc-status"], "0");
            }
        }
    }

    #[test]
    fn a_message_in_one_chunk_is_not_copied() {
        let wire = Bytes::from_static(&[0, 0, 0, 0, 3, 7, 8, 9]);
        let mut body = MessageBody::new(vec![wire.clone()]);
        let u = futures_lite(read_unary(&mut body, 10, &[], &Budget::unlimited())).unwrap();
        assert_eq!(u.message.unwrap().as_ptr(), wire[5..].as_ptr());
    }

    #[test]
    fn oversized_and_malformed_bodies_are_refused() {
        let e = read(&[&[0, 0, 0, 0, 11]], false, 10).unwrap_err();
        assert_eq!(
            e.to_string(),
            "Received message larger than max (11 vs. 10)"
        );
        let e = read(&[&[1, 0, 0, 0, 1, 0]], false, 10).unwrap_err();
        assert!(matches!(e, ReadError::Compressed), "{e}");
        let e = read(&[&[2, 0, 0, 0, 1, 0]], false, 10).unwrap_err();
        assert!(e.to_string().contains("compression flag 2"), "{e}");
        let e = read(&[&[0, 0, 0, 0, 4, 1, 2]], true, 10).unwrap_err();
        assert_eq!(
            e.to_string(),
            "Unexpected EOF decoding stream: the body ended after 2 of 4 bytes"
        );
        let e = read(&[&[0, 0, 0]], false, 10).unwrap_err();
        assert!(matches!(
            e,
            ReadError::Truncated {
                got: 3,
                expected: 5
            }
        ));
        let e = read(&[&[0, 0, 0, 0, 1, 1, 0]], false, 10).unwrap_err();
        assert!(matches!(e, ReadError::Extra));
        let e = read(&[&[0, 0, 0, 0, 1], &[1, 0]], false, 10).unwrap_err();
        assert!(matches!(e, ReadError::Extra));
        let e = read(&[&[0, 0, 0, 0, 1, 1], &[0]], false, 10).unwrap_err();
        assert!(matches!(e, ReadError::Extra));
    }

    #[test]
    fn the_first_tensor_of_a_gathered_message_is_aligned() {
        use crate::pb::inference::ModelInferRequest;
        use crate::pb::mindspore::{Instance, PredictRequest, Tensor, tensor::TensorData};
        let tensor = Bytes::from(vec![7u8; crate::chunked::SHARE_AT + 3]);
        let oip = ModelInferRequest {
            model_name: "m".repeat(5),
            raw_input_contents: vec![Bytes::from_static(b"abcd"), tensor.clone(), tensor.clone()],
            ..Default::default()
        };
        let mut instance = Instance::default();
        instance.items.insert(
            "a".into(),
            Tensor {
                dtype: 11,
                tensor_data: Some(TensorData::Data(Bytes::from_static(b"abcd"))),
                ..Default::default()
            },
        );
        instance.items.insert(
            "x".into(),
            Tensor {
                dtype: 11,
                tensor_data: Some(TensorData::Data(tensor.clone())),
                ..Default::default()
            },
        );
        let ms = PredictRequest {
            servable_spec: None,
            instances: vec![instance],
        };
        let cases = [
            (
                crate::chunked::model_infer_request(oip, u64::MAX).unwrap(),
                tensor_path::MODEL_INFER_REQUEST,
            ),
            (
                crate::chunked::predict_request(ms, u64::MAX).unwrap(),
                tensor_path::PREDICT_REQUEST,
            ),
        ];
        for (chunks, path) in cases {
            let offset = payload_offset(&chunks[0][frame::HEADER_LEN..], path).unwrap();
            let mut body = MessageBody::new(chunks);
            let u =
                futures_lite(read_unary(&mut body, u64::MAX, path, &Budget::unlimited())).unwrap();
            let message = u.message.unwrap();
            assert_eq!(&message[offset..offset + tensor.len()], &tensor[..]);
            assert_eq!((message.as_ptr() as usize + offset) % ALIGN, 0);
        }
    }

    #[test]
    fn payload_offsets_are_found_or_not_without_panicking() {
        // field 1 varint 5, field 7 (LEN 1) "z", field 7 (LEN 3) "abc".
        let m = [0x08, 5, 0x3a, 1, b'z', 0x3a, 3, b'a', b'b', b'c'];
        // The tensor wholly inside the prefix is skipped; one that goes on
        // past it is found.
        assert_eq!(payload_offset(&m, &[7]), None);
        assert_eq!(payload_offset(&m[..9], &[7]), Some(7));
        assert_eq!(payload_offset(&m[..7], &[7]), Some(7));
        assert_eq!(payload_offset(&m[..6], &[7]), None);
        assert_eq!(payload_offset(&m[..4], &[7]), Some(4));
        assert_eq!(payload_offset(&m[..9], &[6]), None);
        assert_eq!(payload_offset(&m[..9], &[]), None);
        // field 2 (LEN 5) holding field 3 (LEN 1) then field 3 (LEN 3 of 2).
        let nested = [0x12, 6, 0x1a, 1, 9, 0x1a, 3, 1, 2];
        assert_eq!(payload_offset(&nested, &[2, 3]), Some(7));
        assert_eq!(payload_offset(&nested[..5], &[2, 3]), None);
        for n in 0..=255u8 {
            for m in 0..=255u8 {
                let _ = payload_offset(&[n, m, 0xff, 0xff], &[2, 1, 2, 3]);
            }
        }
        assert_eq!(payload_offset(&[0xff; 12], &[7]), None);
    }

    #[test]
    fn empty_bodies_and_empty_messages_differ() {
        let u = read(&[], true, 10).unwrap();
        assert!(u.message.is_none() && u.trailers.is_some());
        let u = read(&[&[0, 0, 0, 0, 0]], false, 10).unwrap();
        assert_eq!(u.message.as_deref(), Some(&[][..]));
    }

    #[test]
    fn a_message_body_yields_its_chunks_then_trailers() {
        let mut t = HeaderMap::new();
        t.insert("grpc-status", "0".parse().unwrap());
        let chunks = crate::chunked::model_infer_response(Default::default(), 0).unwrap();
        let mut body = MessageBody::with_trailers(chunks, t);
        assert_eq!(body.size_hint().exact(), Some(5));
        let u = futures_lite(read_unary(&mut body, 0, &[], &Budget::unlimited())).unwrap();
        assert_eq!(u.message.as_deref(), Some(&[][..]));
        assert!(u.trailers.is_some());
        assert!(body.is_end_stream());
    }
}
