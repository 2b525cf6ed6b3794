//! OIP REST JSON request bodies, as the server decodes them. Properties:
//! tensors consistent; JSON and binary re-encodings decode to a fixed point;
//! allocations bounded.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use serving_fuzz::{assert_bounded, check_tensor, reset};
use serving_proto::oip::rest;

fuzz_target!(|data: &[u8]| {
    reset();
    let decoded = rest::decode_request(Bytes::copy_from_slice(data), None);
    assert_bounded(data.len(), "OIP REST request");
    let Ok(request) = decoded else { return };
    for input in &request.inputs {
        check_tensor(&input.tensor);
    }
    for binary in [false, true] {
        // JSON has no NaN or infinity: such values have no JSON form.
        let Ok(body) = rest::encode_request(&request, binary) else {
            continue;
        };
        let once = rest::decode_request(body.to_bytes(), body.header_len)
            .expect("a re-encoded body decodes");
        let body = rest::encode_request(&once, binary).expect("a decoded body re-encodes");
        let twice = rest::decode_request(body.to_bytes(), body.header_len)
            .expect("a re-encoded body decodes");
        assert_eq!(once, twice, "binary: {binary}");
    }
});
