//! OIP REST with the binary tensor extension: an arbitrary
//! `Inference-Header-Content-Length` value (the first line of the input)
//! over an arbitrary body (the rest), including the raw single-input form.
//! Properties: a header length is accepted only within the body; tensors
//! consistent; a binary re-encoding decodes to the same request; allocations
//! bounded.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use serving_fuzz::{assert_bounded, check_tensor, reset};
use serving_proto::DataType;
use serving_proto::oip::rest;

fuzz_target!(|data: &[u8]| {
    reset();
    let (line, body) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &data[..0]),
    };
    let Ok(header) = std::str::from_utf8(line) else {
        return;
    };
    let Ok(header_len) = rest::parse_header_length(header, body.len()) else {
        return;
    };
    assert!(
        header_len <= body.len(),
        "header length {header_len} past a body of {}",
        body.len()
    );
    let body = Bytes::copy_from_slice(body);
    if header_len == 0 {
        // The raw form: the whole body is one input's data.
        let shape = vec![(body.len() / 4) as i64];
        let raw = rest::decode_raw_binary_request(body.clone(), "x", DataType::Fp32, shape);
        if let Ok(r) = raw {
            check_tensor(&r.inputs[0].tensor);
        }
    }
    let decoded = rest::decode_request(body, Some(header_len));
    assert_bounded(data.len(), "OIP binary request");
    let Ok(request) = decoded else { return };
    for input in &request.inputs {
        check_tensor(&input.tensor);
    }
    let Ok(body) = rest::encode_request(&request, true) else {
        return;
    };
    let again =
        rest::decode_request(body.to_bytes(), body.header_len).expect("a re-encoded body decodes");
    let Ok(body) = rest::encode_request(&again, true) else {
        return;
    };
    let twice =
        rest::decode_request(body.to_bytes(), body.header_len).expect("a re-encoded body decodes");
    assert_eq!(again, twice);
});
