//! Round trips through the MindSpore codecs, gRPC and REST, for every type
//! the protocol carries and random shapes, including empty and scalar.

mod common;

use bytes::Bytes;
use common::{Limits, all_but, named};
use proptest::prelude::*;
use prost::Message;
use serving_proto::mindspore::{self, Outcome, ServableError, StatusCode};
use serving_proto::pb::mindspore as pb;
use serving_proto::{DataType, NamedTensors, Tensor, TensorData};

const MS_INPUTS: Limits = Limits {
    finite: false,
    utf8: false,
    zero_only_last: true,
    single_string: true,
};

const MS_OUTPUTS: Limits = Limits {
    finite: false,
    utf8: false,
    zero_only_last: false,
    single_string: false,
};

fn ms_types() -> Vec<DataType> {
    all_but(&[DataType::Bf16])
}

fn outcome() -> impl Strategy<Value = Outcome> {
    let result = prop_oneof![
        named(&ms_types(), MS_OUTPUTS).prop_map(Ok),
        (1i64..6, ".{0,12}").prop_map(|(code, message)| Err(ServableError { code, message })),
    ];
    prop::collection::vec(result, 1..4).prop_map(Outcome::from_results)
}

/// Empty error texts are sent as "Predict failed".
fn expected_after_wire(outcome: Outcome) -> Outcome {
    let fix = |mut e: ServableError| {
        if e.message.is_empty() {
            e.message = "Predict failed".into();
        }
        e
    };
    match outcome {
        Outcome::Failed(e) => Outcome::Failed(fix(e)),
        Outcome::Instances(r) => {
            Outcome::Instances(r.into_iter().map(|r| r.map_err(fix)).collect())
        }
    }
}

proptest! {
    #[test]
    fn grpc_request_round_trips(instances in prop::collection::vec(named(&ms_types(), MS_INPUTS), 1..4), version in 0u64..5) {
        let msg = mindspore::grpc::encode_request("add", "add_common", version, &instances).unwrap();
        let wire = Bytes::from(msg.encode_to_vec());
        prop_assert_eq!(serving_proto::size::message_len(&msg), wire.len() as u64);
        let decoded = mindspore::grpc::decode_request(pb::PredictRequest::decode(wire).unwrap()).unwrap();
        prop_assert_eq!(decoded.servable, "add");
        prop_assert_eq!(decoded.method, "add_common");
        prop_assert_eq!(decoded.version, version);
        prop_assert_eq!(decoded.instances, instances);
    }

    #[test]
    fn grpc_reply_round_trips(outcome in outcome()) {
        let sent = match &outcome { Outcome::Instances(r) => r.len(), Outcome::Failed(_) => 2 };
        let reply = mindspore::grpc::encode_reply(None, &outcome).unwrap();
        let wire = reply.encode_to_vec();
        let decoded = mindspore::grpc::decode_reply(pb::PredictReply::decode(wire.as_slice()).unwrap(), sent).unwrap();
        prop_assert_eq!(decoded, expected_after_wire(outcome));
    }

    #[test]
    fn rest_request_round_trips(instances in prop::collection::vec(named(&ms_types(), MS_INPUTS), 1..4)) {
        let body = mindspore::rest::encode_request(&instances).unwrap();
        let decoded = mindspore::rest::decode_request(body.as_bytes(), usize::MAX).unwrap();
        prop_assert_eq!(decoded, instances);
    }

    #[test]
    fn rest_response_round_trips_values(outcome in outcome()) {
        // JSON has no types and no NaN, and cannot write [0, 3] or string
        // outputs of rank 2: compare values under those rules.
        let representable = |t: &Tensor| {
            let zero_ok = t.shape().iter().position(|&d| d == 0).is_none_or(|i| i + 1 == t.shape().len());
            let strings_ok = !t.dtype().is_variable() || t.shape().len() <= 1;
            let finite = canonical(t).1.iter().all(|v| v != "NaN" && !v.contains("inf"));
            zero_ok && strings_ok && finite
        };
        let Outcome::Instances(results) = &outcome else {
            let body = mindspore::rest::encode_response(&outcome).unwrap();
            prop_assert_eq!(mindspore::rest::decode_response(body.as_bytes(), 3).unwrap(),
                expected_rest_failure(&outcome));
            return Ok(());
        };
        prop_assume!(results.iter().flatten().flat_map(|m| m.values()).all(representable));
        let body = mindspore::rest::encode_response(&outcome).unwrap();
        let decoded = mindspore::rest::decode_response(body.as_bytes(), results.len()).unwrap();
        let Outcome::Instances(got) = decoded else { panic!("instances expected") };
        for (want, got) in results.iter().zip(got) {
            match (want, got) {
                (Ok(w), Ok(g)) => {
                    prop_assert_eq!(w.keys().collect::<Vec<_>>(), g.keys().collect::<Vec<_>>());
                    for (name, t) in w {
                        prop_assert_eq!(canonical(t), at_width_of(t.dtype(), &g[name]));
                    }
                }
                (Err(w), Err(g)) => prop_assert_eq!(&w.message, &g.message),
                (w, g) => prop_assert!(false, "{w:?} vs {g:?}"),
            }
        }
    }
}

fn expected_rest_failure(outcome: &Outcome) -> Outcome {
    match outcome {
        Outcome::Failed(e) => {
            Outcome::Failed(ServableError::new(StatusCode::Failed, e.message.clone()))
        }
        other => other.clone(),
    }
}

/// [`canonical`] of `got`, its floats read at the width of `dtype`: the
/// JSON of a reply names no type, and a float is written with the shortest
/// text that reads back at its own width (`6e-8` for FP16's 2^-24), so
/// only at that width is it the value sent.
fn at_width_of(dtype: DataType, got: &Tensor) -> (Vec<i64>, Vec<String>) {
    let (shape, values) = canonical(got);
    let narrow = |v: f64| match dtype {
        DataType::Fp16 => half::f16::from_f64(v).to_f64(),
        DataType::Bf16 => half::bf16::from_f64(v).to_f64(),
        DataType::Fp32 => f64::from(v as f32),
        _ => v,
    };
    let values = match dtype {
        DataType::Fp16 | DataType::Bf16 | DataType::Fp32 => values
            .iter()
            .map(|v| {
                v.parse::<f64>()
                    .map_or(v.clone(), |v| narrow(v).to_string())
            })
            .collect(),
        _ => values,
    };
    (shape, values)
}

/// Shape and values as text, independent of the integer or float width.
fn canonical(t: &Tensor) -> (Vec<i64>, Vec<String>) {
    let values = match t.data() {
        TensorData::Elements(e) => e.iter().map(|b| format!("{b:?}")).collect(),
        TensorData::Raw(raw) => {
            let item = t.dtype().item_size().unwrap();
            raw.chunks_exact(item)
                .map(|b| {
                    let mut a = [0u8; 8];
                    a[..item].copy_from_slice(b);
                    match t.dtype() {
                        DataType::Bool => (b[0] != 0).to_string(),
                        DataType::Int8 => (b[0] as i8).to_string(),
                        DataType::Int16 => i16::from_le_bytes([a[0], a[1]]).to_string(),
                        DataType::Int32 => i32::from_le_bytes([a[0], a[1], a[2], a[3]]).to_string(),
                        DataType::Int64 => i64::from_le_bytes(a).to_string(),
                        DataType::Uint8 => b[0].to_string(),
                        DataType::Uint16 => u16::from_le_bytes([a[0], a[1]]).to_string(),
                        DataType::Uint32 => {
                            u32::from_le_bytes([a[0], a[1], a[2], a[3]]).to_string()
                        }
                        DataType::Uint64 => u64::from_le_bytes(a).to_string(),
                        DataType::Fp16 => {
                            half::f16::from_le_bytes([a[0], a[1]]).to_f64().to_string()
                        }
                        DataType::Fp32 => {
                            f64::from(f32::from_le_bytes([a[0], a[1], a[2], a[3]])).to_string()
                        }
                        DataType::Fp64 => f64::from_le_bytes(a).to_string(),
                        other => panic!("{other} is not numeric"),
                    }
                })
                .collect()
        }
    };
    let values = if t.dtype() == DataType::String {
        t.elements()
            .unwrap()
            .iter()
            .map(|e| format!("{e:?}"))
            .collect()
    } else {
        values
    };
    (t.shape().to_vec(), values)
}

fn instance(pairs: &[(&str, Tensor)]) -> NamedTensors {
    pairs
        .iter()
        .map(|(n, t)| (n.to_string(), t.clone()))
        .collect()
}

#[test]
fn json_forms_snapshot() {
    let inputs = instance(&[
        ("bool", Tensor::from_slice(&[2], &[false, true]).unwrap()),
        (
            "i32",
            Tensor::from_slice(&[2, 2], &[1i32, 2, 3, 4]).unwrap(),
        ),
        ("f32", Tensor::from_slice(&[2], &[3.2f32, 4.3]).unwrap()),
        ("i64", Tensor::from_slice(&[2], &[1i64, -1]).unwrap()),
        (
            "f16",
            Tensor::from_slice(&[1], &[half::f16::from_f32(1.5)]).unwrap(),
        ),
        ("empty", Tensor::from_slice::<i32>(&[0], &[]).unwrap()),
        ("scalar", Tensor::scalar(7i32)),
        ("str", Tensor::from_strings(&[], &["ABC"]).unwrap()),
        (
            "bytes",
            Tensor::from_byte_strings(&[1], &[b"DEF456"]).unwrap(),
        ),
    ]);
    insta::assert_snapshot!(
        "request",
        mindspore::rest::encode_request(std::slice::from_ref(&inputs)).unwrap()
    );
    let outcome = Outcome::Instances(vec![
        Ok(inputs),
        Err(ServableError::new(
            StatusCode::InvalidInputs,
            "Given model input 1 size 12 not match the size 8 defined in model",
        )),
    ]);
    insta::assert_snapshot!(
        "response",
        mindspore::rest::encode_response(&outcome).unwrap()
    );
    let failed = Outcome::Failed(ServableError::servable_not_available(
        "add",
        "add_common",
        0,
    ));
    insta::assert_snapshot!(
        "failure",
        mindspore::rest::encode_response(&failed).unwrap()
    );
}

#[test]
fn b64_defaults_and_spellings() {
    let one = |body: &str| {
        let mut v = mindspore::rest::decode_request(body.as_bytes(), usize::MAX).unwrap();
        v.remove(0).remove("x").unwrap()
    };
    // No shape: a scalar (the code and tests, not the r2.0 docs).
    let t = one(r#"{"instances": {"x": {"b64": "AQAAAA==", "type": "int32"}}}"#);
    assert_eq!(
        (t.shape(), t.to_vec::<i32>().unwrap()),
        (&[] as &[i64], vec![1])
    );
    // No type: bytes.
    let t = one(r#"{"instances": {"x": {"b64": "QUJD"}}}"#);
    assert_eq!(t.dtype(), DataType::Bytes);
    assert_eq!(t.elements().unwrap(), &[Bytes::from_static(b"ABC")]);
    // str objects become STRING.
    let t = one(r#"{"instances": [{"x": {"b64": "QUJD", "type": "str", "shape": [1]}}]}"#);
    assert_eq!(
        (t.dtype(), t.shape()),
        (DataType::String, &[1i64] as &[i64])
    );
    for (name, dtype) in [
        ("fp16", DataType::Fp16),
        ("float16", DataType::Fp16),
        ("fp32", DataType::Fp32),
        ("float32", DataType::Fp32),
        ("fp64", DataType::Fp64),
        ("float64", DataType::Fp64),
    ] {
        let item = dtype.item_size().unwrap();
        let b64 = base64_zeros(2 * item);
        let t = one(&format!(
            r#"{{"instances": {{"x": {{"b64": "{b64}", "type": "{name}", "shape": [2]}}}}}}"#
        ));
        assert_eq!(t.dtype(), dtype);
    }
    // int16 [3,2] from the C++ unit test.
    let t = one(
        r#"{"instances": {"x": {"b64": "AQACAAIAAwADAAQA", "type": "int16", "shape": [3, 2]}}}"#,
    );
    assert_eq!(t.to_vec::<i16>().unwrap(), vec![1, 2, 2, 3, 3, 4]);
    // Zero-size shapes.
    let t = one(r#"{"instances": {"x": {"b64": "", "type": "int32", "shape": [1, 0]}}}"#);
    assert_eq!((t.shape(), t.element_count()), (&[1i64, 0] as &[i64], 0));
    // JSON scalars and arrays.
    assert_eq!(one(r#"{"instances": {"x": 2}}"#), Tensor::scalar(2i32));
    assert_eq!(one(r#"{"instances": {"x": 2.5}}"#), Tensor::scalar(2.5f32));
    assert_eq!(
        one(r#"{"instances": {"x": [[true]]}}"#),
        Tensor::from_slice(&[1, 1], &[true]).unwrap()
    );
    assert_eq!(
        one(r#"{"instances": {"x": ["ABC"]}}"#),
        Tensor::from_strings(&[1], &["ABC"]).unwrap()
    );
    assert_eq!(
        one(r#"{"instances": {"x": ""}}"#),
        Tensor::from_strings(&[], &[""]).unwrap()
    );
}

fn base64_zeros(n: usize) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(vec![0u8; n])
}
