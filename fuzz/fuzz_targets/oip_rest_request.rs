//! OIP REST JSON request bodies, as the server decodes them. Properties:
//! tensors consistent; JSON and binary re-encodings decode to a fixed point;
//! allocations bounded; under a memory budget, no allocation passes what
//! was charged for it, and a refusal gives everything back.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use serving_fuzz::{assert_bounded, assert_charged, check_tensor, reset};
use serving_proto::gather::Budget;
use serving_proto::json_charge;
use serving_proto::oip::rest;

fuzz_target!(|data: &[u8]| {
    reset();
    let budget = std::sync::Arc::new(Budget::new(1 << 20));
    let charged = json_charge::charged(budget.charge(0).unwrap(), || {
        rest::decode_request(Bytes::copy_from_slice(data), None)
    });
    if let Ok((_, charge)) = &charged {
        assert_charged(data.len(), charge.bytes(), "OIP REST request, charged");
    }
    drop(charged);
    assert_eq!(budget.held(), 0, "a charged decode gives everything back");
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
