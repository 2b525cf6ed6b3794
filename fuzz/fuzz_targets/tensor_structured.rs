//! Structure-aware: an arbitrary tensor description is built into a valid
//! tensor, encoded by every codec, checked to round-trip, then one byte of
//! each encoding is mutated and decoded again, which must not panic and must
//! keep every tensor consistent.
#![no_main]

use arbitrary::Arbitrary;
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use prost::Message;
use serving_fuzz::check_tensor;
use serving_proto::oip::{InferRequest, NamedTensor};
use serving_proto::{DataType, NamedTensors, Tensor, mindspore, oip};

/// Every type but STRING (which MindSpore and OIP carry differently).
fn types() -> Vec<DataType> {
    DataType::ALL
        .into_iter()
        .filter(|&d| d != DataType::String)
        .collect()
}

#[derive(Arbitrary, Debug)]
struct Description {
    dtype: u8,
    dims: Vec<u8>,
    data: Vec<u8>,
    /// Where to flip a byte of each encoding, and with what.
    at: u32,
    xor: u8,
}

fn build(d: &Description) -> Option<Tensor> {
    let types = types();
    let dtype = types[usize::from(d.dtype) % types.len()];
    let shape: Vec<i64> = d.dims.iter().take(4).map(|&x| i64::from(x % 5)).collect();
    let count = serving_proto::tensor::element_count(&shape)?;
    match dtype.item_size() {
        Some(item) => {
            let mut raw: Vec<u8> = d.data.iter().copied().cycle().take(count * item).collect();
            raw.resize(count * item, 0);
            if dtype == DataType::Bool {
                raw.iter_mut().for_each(|b| *b &= 1);
            }
            Tensor::from_raw(dtype, shape, Bytes::from(raw)).ok()
        }
        None => {
            let elements = (0..count)
                .map(|i| Bytes::copy_from_slice(&d.data[..i.min(d.data.len())]))
                .collect();
            Tensor::from_elements(dtype, shape, elements).ok()
        }
    }
}

/// MindSpore allows a zero dimension only last (spec §2.4).
fn zero_not_last(shape: &[i64]) -> bool {
    shape
        .iter()
        .position(|&d| d == 0)
        .is_some_and(|i| i + 1 < shape.len())
}

fn mutate(mut bytes: Vec<u8>, d: &Description) -> Vec<u8> {
    if !bytes.is_empty() {
        let i = d.at as usize % bytes.len();
        bytes[i] ^= d.xor.max(1);
    }
    bytes
}

fuzz_target!(|d: Description| {
    let Some(tensor) = build(&d) else { return };
    let instances: Vec<NamedTensors> = vec![[("x".to_string(), tensor.clone())].into()];

    // MindSpore gRPC: exact round trip, then a mutated message.
    if let Ok(message) = mindspore::grpc::encode_request("s", "m", 0, &instances) {
        let bytes = message.encode_to_vec();
        // MindSpore refuses string/bytes inputs of other than one element
        // and dimensions after a zero one (spec §2.4); everything else comes
        // back exactly.
        let shape = tensor.shape();
        let refused = (tensor.dtype() == DataType::Bytes && !(shape.is_empty() || shape == [1]))
            || zero_not_last(shape);
        match mindspore::grpc::decode_request(message) {
            Ok(back) => {
                assert!(!refused, "{shape:?} {:?} accepted", tensor.dtype());
                assert_eq!(back.instances, instances);
            }
            Err(e) => assert!(refused, "{e:?}"),
        }
        if let Ok(m) = serving_proto::pb::mindspore::PredictRequest::decode(&*mutate(bytes, &d))
            && let Ok(r) = mindspore::grpc::decode_request(m)
        {
            r.instances
                .iter()
                .flat_map(|i| i.values())
                .for_each(check_tensor);
        }
    }

    // OIP gRPC, raw and typed: exact round trips, then a mutated message.
    let request = InferRequest {
        model_name: "m".into(),
        inputs: vec![NamedTensor::new("x", tensor.clone())],
        ..Default::default()
    };
    for contents in [oip::grpc::Contents::Raw, oip::grpc::Contents::Typed] {
        let message =
            oip::grpc::encode_request(&request, contents).expect("every OIP type encodes");
        let bytes = message.encode_to_vec();
        assert_eq!(
            oip::grpc::decode_request(message).expect("an encoded request decodes"),
            request
        );
        if let Ok(m) = serving_proto::pb::inference::ModelInferRequest::decode(&*mutate(bytes, &d))
            && let Ok(r) = oip::grpc::decode_request(m)
        {
            r.inputs.iter().for_each(|i| check_tensor(&i.tensor));
        }
    }

    // OIP REST binary: exact round trip, then a mutated body.
    let body = oip::rest::encode_request(&request, true).expect("binary encodes every OIP type");
    let back = oip::rest::decode_request(body.to_bytes(), body.header_len)
        .expect("an encoded body decodes");
    assert_eq!(back.inputs, request.inputs);
    let mutated = Bytes::from(mutate(body.to_bytes().to_vec(), &d));
    if let Ok(r) = oip::rest::decode_request(mutated, body.header_len) {
        r.inputs.iter().for_each(|i| check_tensor(&i.tensor));
    }

    // MindSpore REST: a fixed point after one decode; then a mutated body.
    if let Ok(json) = mindspore::rest::encode_request(&instances) {
        let once = match mindspore::rest::decode_request(json.as_bytes(), usize::MAX) {
            Ok(once) => once,
            Err(e) if zero_not_last(tensor.shape()) => {
                assert!(
                    matches!(
                        e,
                        mindspore::rest::RestError::Parse(
                            mindspore::rest::ParseError::ShapeInvalid(_)
                        )
                    ),
                    "{e:?}"
                );
                return;
            }
            Err(e) => panic!("an encoded body decodes: {e:?}"),
        };
        let json2 = mindspore::rest::encode_request(&once).expect("a decoded body re-encodes");
        let twice = mindspore::rest::decode_request(json2.as_bytes(), usize::MAX)
            .expect("a re-encoded body decodes");
        assert_eq!(once, twice);
        if let Ok(r) = mindspore::rest::decode_request(&mutate(json.into_bytes(), &d), usize::MAX) {
            r.iter().flat_map(|i| i.values()).for_each(check_tensor);
        }
    }
});
