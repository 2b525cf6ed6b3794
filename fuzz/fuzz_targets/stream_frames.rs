//! A streaming call's body (ModelStreamInfer), as the server reads it: the
//! bytes, cut into pieces where the input says, split into gRPC messages
//! under a limit, compressed ones inflated under the same limit, each
//! decoded as a `ModelInferRequest`. Properties: never a panic; a message
//! is never over the limit, before or after inflating; the bytes held for
//! the message in progress never exceed what arrived; allocations bounded
//! (a message whose decoding `decode_cost` charges more than the target's
//! budget is refused undecoded, as the server does).
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use serving_fuzz::{assert_bounded, check_tensor, reset};
use serving_proto::compression::{self, Encoding};
use serving_proto::frame::Splitter;
use serving_proto::oip::grpc as codec;
use serving_proto::pb::inference::ModelInferRequest;

const LIMIT: usize = 32 << 10;
/// The decoded bytes a message may be charged: no more than the smallest
/// allocation bound asserted.
const BUDGET: usize = 64 * (LIMIT / 64);

fuzz_target!(|data: &[u8]| {
    let Some((&control, body)) = data.split_first() else {
        return;
    };
    let encoding = if control & 1 == 0 {
        Encoding::Gzip
    } else {
        Encoding::Deflate
    };
    let piece = usize::from(control >> 1).max(1);
    reset();
    let mut split = Splitter::new(LIMIT as u64);
    let mut received = 0;
    'pieces: for chunk in body.chunks(piece) {
        split.push(chunk);
        received += chunk.len();
        loop {
            match split.next_message() {
                Ok(Some((compressed, message))) => {
                    assert!(message.len() <= LIMIT);
                    let message = if compressed {
                        match compression::inflate(encoding, &message, LIMIT) {
                            Ok(m) => bytes::Bytes::from(m),
                            Err(_) => continue,
                        }
                    } else {
                        message
                    };
                    assert!(message.len() <= LIMIT);
                    // The server charges what decoding builds to its budget
                    // first: a message the target's budget (the bound
                    // asserted below) cannot hold is refused undecoded.
                    let charged = serving_proto::decode_cost::model_infer_request(&message);
                    if charged > BUDGET as u64 {
                        continue;
                    }
                    let Ok(m) = ModelInferRequest::decode(message) else {
                        continue;
                    };
                    if let Ok(r) = codec::decode_request(m) {
                        for input in &r.inputs {
                            check_tensor(&input.tensor);
                        }
                    }
                }
                Ok(None) => break,
                Err(_) => break 'pieces,
            }
        }
        assert!(split.partial() <= received);
    }
    assert_bounded(body.len().max(LIMIT / 64), "stream frames");
    debug_assert!(BUDGET <= serving_fuzz::bound(LIMIT / 64));
});
