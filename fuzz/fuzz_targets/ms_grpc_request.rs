//! MindSpore `PredictRequest` bytes -> tensors, as the server decodes them.
//! Properties: every tensor is consistent; encoding the decoded request and
//! decoding it again gives the same request; allocations within what the
//! server charges (`decode_cost`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use serving_fuzz::{assert_charged, check_tensor, reset};
use serving_proto::mindspore::grpc;
use serving_proto::pb::mindspore::PredictRequest;

fuzz_target!(|data: &[u8]| {
    // What the server charges to its budget before decoding: every
    // allocation of the decode must lie within it.
    let charged = serving_proto::decode_cost::predict_request(data);
    reset();
    let Ok(message) = PredictRequest::decode(data) else {
        return;
    };
    let decoded = grpc::decode_request(message);
    assert_charged(data.len(), charged, "PredictRequest");
    let Ok(request) = decoded else { return };
    for instance in &request.instances {
        instance.values().for_each(check_tensor);
    }
    let again = grpc::encode_request(
        &request.servable,
        &request.method,
        request.version,
        &request.instances,
    )
    .expect("a decoded request re-encodes");
    let again = grpc::decode_request(again).expect("a re-encoded request decodes");
    assert_eq!(again, request);
});
