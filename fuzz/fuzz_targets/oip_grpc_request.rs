//! OIP `ModelInferRequest` bytes -> tensors, as the server decodes them.
//! Properties: tensors consistent; re-encoding (raw and typed contents) and
//! decoding again gives the same request; allocations bounded.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use serving_fuzz::{assert_charged, check_tensor, reset};
use serving_proto::oip::grpc::{self, Contents};
use serving_proto::pb::inference::ModelInferRequest;

fuzz_target!(|data: &[u8]| {
    // What the server charges to its budget before decoding: every
    // allocation of the decode must lie within it.
    let charged = serving_proto::decode_cost::model_infer_request(data);
    reset();
    let Ok(message) = ModelInferRequest::decode(data) else {
        return;
    };
    let decoded = grpc::decode_request(message);
    assert_charged(data.len(), charged, "ModelInferRequest");
    let Ok(request) = decoded else { return };
    for input in &request.inputs {
        check_tensor(&input.tensor);
    }
    for contents in [Contents::Raw, Contents::Typed] {
        let encoded =
            grpc::encode_request(&request, contents).expect("a decoded request re-encodes");
        let bytes = encoded.encode_to_vec();
        let again = grpc::decode_request(encoded).expect("a re-encoded request decodes");
        // Compared as encodings: a NaN parameter is not equal to itself.
        let twice = grpc::encode_request(&again, contents)
            .expect("re-encodes")
            .encode_to_vec();
        assert_eq!(twice, bytes, "{contents:?}");
        assert_eq!(again.inputs, request.inputs, "{contents:?}");
    }
});
