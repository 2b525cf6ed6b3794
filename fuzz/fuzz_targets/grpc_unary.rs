//! The unary gRPC body reader both sides run on every `Predict` and
//! `ModelInfer` (server: the request; client: the reply), and the walker
//! that finds where the first large tensor lies so the gathered buffer can
//! align it. The input is a limit, a message path, cut points and the body
//! bytes, delivered as chunks at the cuts.
//! Properties: a message is returned only if the body holds exactly one
//! frame with a valid header within the limit, and it is the frame's bytes;
//! when the walker finds a tensor in the first chunk, that tensor starts
//! aligned in the returned message; memory follows the bytes received (at
//! most 8x them), never the length a header claims;
//! a budget too small is refused as busy, and every byte taken from it is
//! given back.
#![no_main]

use std::task::{Context, Poll};

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use serving_proto::frame;
use serving_proto::gather::SWITCH;
use serving_proto::grpc_body::{
    self, ALIGN, Budget, MessageBody, ReadError, payload_offset, read_unary, tensor_path,
};

const PATHS: [&[u32]; 5] = [
    &[],
    tensor_path::MODEL_INFER_REQUEST,
    tensor_path::MODEL_INFER_RESPONSE,
    tensor_path::PREDICT_REQUEST,
    tensor_path::PREDICT_REPLY,
];

fuzz_target!(|data: &[u8]| {
    let [l0, l1, which, c0, c1, c2, rest @ ..] = data else {
        return;
    };
    let limit = u64::from(u16::from_le_bytes([*l0, *l1]));
    let path = PATHS[usize::from(*which) % PATHS.len()];
    let body = Bytes::copy_from_slice(rest);
    let mut cuts: Vec<usize> = [c0, c1, c2]
        .iter()
        .map(|&&c| usize::from(c).min(body.len()))
        .collect();
    cuts.sort_unstable();
    let mut chunks = Vec::new();
    let mut at = 0;
    for cut in cuts.into_iter().chain([body.len()]) {
        if cut > at {
            chunks.push(body.slice(at..cut));
            at = cut;
        }
    }
    let first = chunks.first().cloned().unwrap_or_default();
    // 64 bytes to 16 KiB: a message that needs more is refused as busy.
    let budget = Budget::new((u64::from(*which) + 1) << 6);

    serving_fuzz::reset();
    let mut reader = MessageBody::new(chunks);
    let mut read = std::pin::pin!(read_unary(&mut reader, limit, path, &budget));
    let mut cx = Context::from_waker(std::task::Waker::noop());
    let Poll::Ready(result) = read.as_mut().poll(&mut cx) else {
        panic!("a ready body made the read wait");
    };
    serving_fuzz::assert_bounded(SWITCH * rest.len() + ALIGN, "read_unary");
    assert_eq!(budget.held(), 0, "the budget is given back");

    let header = frame::check_header(rest, limit);
    match result {
        Ok(unary) => match unary.message {
            Some(message) => {
                let h = header.expect("a message came from a valid header");
                assert!(!h.compressed);
                assert_eq!(rest.len(), frame::HEADER_LEN + h.len as usize);
                assert_eq!(&message[..], &rest[frame::HEADER_LEN..]);
                // Gathered from several chunks: the first large tensor is aligned.
                if first.len() > frame::HEADER_LEN && first.len() < rest.len() {
                    if let Some(off) = payload_offset(&first[frame::HEADER_LEN..], path) {
                        assert_eq!((message.as_ptr() as usize + off) % ALIGN, 0);
                    }
                }
            }
            None => assert!(rest.is_empty()),
        },
        Err(ReadError::Frame(_)) => assert!(header.is_err()),
        Err(ReadError::Compressed) => assert_eq!(rest[0], 1),
        Err(ReadError::Truncated { got, expected }) => assert!(got < expected),
        Err(ReadError::Extra) => {
            let h = header.expect("extra data after a valid frame");
            assert!(rest.len() > frame::HEADER_LEN + h.len as usize);
        }
        Err(ReadError::Busy(e)) => assert!(e.held + e.wanted > e.limit),
        Err(other) => panic!("unexpected error {other}"),
    }

    // The walker alone, on the whole input as a prefix.
    for path in PATHS {
        if let Some(off) = grpc_body::payload_offset(rest, path) {
            assert!(off <= rest.len());
        }
    }
});
