//! The reply decoders the client runs on what a server sends back: the first
//! byte picks MindSpore `PredictReply`, MindSpore REST JSON, OIP
//! `ModelInferResponse` or OIP REST (header length in the second and third
//! bytes); the next byte is how many instances were sent. Properties: no
//! panic, tensors consistent, as many results as instances sent, bounded
//! allocations.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use prost::Message;
use serving_fuzz::{assert_bounded, check_tensor, reset};
use serving_proto::mindspore::{self, Outcome};
use serving_proto::oip;
use serving_proto::pb;

fn check_outcome(outcome: &Outcome, sent: usize) {
    if let Outcome::Instances(results) = outcome {
        assert_eq!(results.len(), sent, "one result per instance sent");
        for outputs in results.iter().flatten() {
            outputs.values().for_each(check_tensor);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let [which, sent, rest @ ..] = data else {
        return;
    };
    let sent = usize::from(*sent % 8) + 1;
    reset();
    match which % 4 {
        0 => {
            if let Ok(reply) = pb::mindspore::PredictReply::decode(rest)
                && let Ok(outcome) = mindspore::grpc::decode_reply(reply, sent)
            {
                check_outcome(&outcome, sent);
            }
        }
        1 => {
            if let Ok(outcome) = mindspore::rest::decode_response(rest, sent) {
                check_outcome(&outcome, sent);
            }
        }
        2 => {
            if let Ok(resp) = pb::inference::ModelInferResponse::decode(rest)
                && let Ok(resp) = oip::grpc::decode_response(resp)
            {
                resp.outputs.iter().for_each(|o| check_tensor(&o.tensor));
            }
        }
        _ => {
            let [a, b, body @ ..] = rest else { return };
            let header_len = usize::from(u16::from_le_bytes([*a, *b]));
            let header_len = (header_len != u16::MAX as usize).then_some(header_len);
            if let Ok(resp) = oip::rest::decode_response(Bytes::copy_from_slice(body), header_len) {
                resp.outputs.iter().for_each(|o| check_tensor(&o.tensor));
            }
        }
    }
    assert_bounded(data.len(), "a reply");
});
