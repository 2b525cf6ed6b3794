//! MindSpore REST: the URL path (first line of the input) and the JSON body
//! (the rest), as the server decodes them. Properties: tensors consistent;
//! encoding the decoded instances and decoding again is a fixed point (JSON
//! carries no dtype, so the first decode picks the types the second keeps);
//! allocations bounded; under a memory budget, no allocation passes what
//! was charged for it, and a refusal gives everything back.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serving_fuzz::{assert_bounded, assert_charged, check_tensor, reset};
use serving_proto::gather::Budget;
use serving_proto::json_charge;
use serving_proto::mindspore::{rest, url};

fuzz_target!(|data: &[u8]| {
    reset();
    let (line, body) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (&data[..0], data),
    };
    if let Ok(path) = std::str::from_utf8(line) {
        let _ = url::parse(path);
    }
    let budget = std::sync::Arc::new(Budget::new(1 << 20));
    let charged = json_charge::charged(budget.charge(0).unwrap(), || {
        rest::decode_request(body, body.len())
    });
    if let Ok((_, charge)) = &charged {
        assert_charged(
            data.len(),
            charge.bytes(),
            "MindSpore REST request, charged",
        );
    }
    drop(charged);
    assert_eq!(budget.held(), 0, "a charged decode gives everything back");
    reset();
    let decoded = rest::decode_request(body, body.len());
    assert_bounded(data.len(), "MindSpore REST request");
    let Ok(instances) = decoded else { return };
    for instance in &instances {
        instance.values().for_each(check_tensor);
    }
    // Some decoded values have no JSON form (several strings in one input
    // are refused by the encoder, as MindSpore's client refuses them).
    let Ok(body) = rest::encode_request(&instances) else {
        return;
    };
    let once =
        rest::decode_request(body.as_bytes(), usize::MAX).expect("a re-encoded body decodes");
    let body = rest::encode_request(&once).expect("a decoded body re-encodes");
    let twice =
        rest::decode_request(body.as_bytes(), usize::MAX).expect("a re-encoded body decodes");
    assert_eq!(once, twice);
});
