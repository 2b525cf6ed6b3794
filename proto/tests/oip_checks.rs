//! Negative cases and wire forms of the Open Inference Protocol codecs.

use bytes::Bytes;
use serving_proto::oip::grpc::{self as oip_grpc, Contents};
use serving_proto::oip::rest as oip_rest;
use serving_proto::oip::{InferRequest, InferResponse, NamedTensor, OipError, Parameter};
use serving_proto::pb::inference::{self as pb, model_infer_request::InferInputTensor};
use serving_proto::{DataType, Tensor};

fn input(
    name: &str,
    datatype: &str,
    shape: &[i64],
    contents: Option<pb::InferTensorContents>,
) -> InferInputTensor {
    InferInputTensor {
        name: name.into(),
        datatype: datatype.into(),
        shape: shape.to_vec(),
        parameters: Default::default(),
        contents,
    }
}

fn grpc_err(inputs: Vec<InferInputTensor>, raw: Vec<Bytes>) -> OipError {
    oip_grpc::decode_request(pb::ModelInferRequest {
        model_name: "m".into(),
        inputs,
        raw_input_contents: raw,
        ..Default::default()
    })
    .unwrap_err()
}

fn fp32(values: &[f32]) -> Option<pb::InferTensorContents> {
    Some(pb::InferTensorContents {
        fp32_contents: values.to_vec(),
        ..Default::default()
    })
}

#[test]
fn grpc_request_errors() {
    let e = grpc_err(
        vec![
            input("x", "FP32", &[1], fp32(&[1.0])),
            input("y", "FP32", &[1], None),
        ],
        vec![Bytes::from_static(&[0; 4])],
    );
    assert!(
        matches!(&e, OipError::MixedContents { tensor, .. } if tensor == "x"),
        "{e:?}"
    );
    assert!(
        e.to_string().starts_with(
            "contents field must not be specified when using raw_input_contents for 'x' for model '"
        ),
        "Triton's text first: {e}"
    );
    let e = grpc_err(
        vec![
            input("x", "FP32", &[1], None),
            input("y", "FP32", &[1], None),
        ],
        vec![Bytes::from_static(&[0; 4])],
    );
    assert_eq!(
        e.to_string(),
        "expected 2 raw contents (one per tensor) but got 1"
    );
    let e = grpc_err(
        vec![input("x", "FP32", &[2, 2], None)],
        vec![Bytes::from_static(&[0; 12])],
    );
    assert_eq!(
        e.to_string(),
        "tensor 'x': FP32 data of shape [2, 2] must be 16 bytes but is 12"
    );
    let e = grpc_err(vec![input("x", "FP32", &[3], fp32(&[1.0]))], vec![]);
    assert_eq!(
        e.to_string(),
        "tensor 'x': shape [3] holds 3 elements but 1 were given"
    );
    let e = grpc_err(vec![input("x", "fp32", &[1], fp32(&[1.0]))], vec![]);
    assert!(
        e.to_string()
            .starts_with("tensor 'x': unknown datatype 'fp32'")
    );
    let e = grpc_err(vec![input("x", "FP32", &[-1], fp32(&[1.0]))], vec![]);
    assert!(matches!(e, OipError::Shape { .. }));
    let e = grpc_err(
        vec![input("x", "FP32", &[i64::MAX, 2], None)],
        vec![Bytes::new()],
    );
    assert!(matches!(e, OipError::Shape { .. }));
    let ints = Some(pb::InferTensorContents {
        int_contents: vec![1],
        ..Default::default()
    });
    let e = grpc_err(vec![input("x", "FP32", &[1], ints)], vec![]);
    assert_eq!(
        e.to_string(),
        "tensor 'x': FP32 data must be in fp32_contents"
    );
    let e = grpc_err(vec![input("x", "FP16", &[1], fp32(&[1.0]))], vec![]);
    assert_eq!(
        e.to_string(),
        "tensor 'x': FP16 data must be in raw contents"
    );
    let big = Some(pb::InferTensorContents {
        int_contents: vec![300],
        ..Default::default()
    });
    let e = grpc_err(vec![input("x", "INT8", &[1], big)], vec![]);
    assert_eq!(
        e.to_string(),
        "tensor 'x': value 300 is out of range for INT8"
    );
}

#[test]
fn raw_bytes_elements_are_framed_and_checked() {
    let good = Bytes::from_static(b"\x02\x00\x00\x00hi\x00\x00\x00\x00");
    let req = oip_grpc::decode_request(pb::ModelInferRequest {
        inputs: vec![input("s", "BYTES", &[2], None)],
        raw_input_contents: vec![good.clone()],
        ..Default::default()
    })
    .unwrap();
    let elements = req.inputs[0].tensor.elements().unwrap();
    assert_eq!(elements, &[Bytes::from_static(b"hi"), Bytes::new()]);
    // Elements share the message buffer.
    assert_eq!(elements[0].as_ptr(), good[4..].as_ptr());
    let e = grpc_err(
        vec![input("s", "BYTES", &[1], None)],
        vec![Bytes::from_static(b"\x09\x00\x00\x00abc")],
    );
    assert_eq!(
        e.to_string(),
        "tensor 's': BYTES element 0 at offset 0 declares 9 bytes but only 3 remain in the tensor"
    );
    let e = grpc_err(
        vec![input("s", "BYTES", &[1], None)],
        vec![Bytes::from_static(b"\x01\x00")],
    );
    assert!(matches!(
        e,
        OipError::BytesElement {
            declared: 4,
            available: 2,
            ..
        }
    ));
    let e = grpc_err(vec![input("s", "BYTES", &[3], None)], vec![good]);
    assert!(matches!(
        e,
        OipError::ElementCount {
            expected: 3,
            actual: 2,
            ..
        }
    ));
}

#[test]
fn string_tensors_need_bytes_on_oip() {
    let req = InferRequest {
        inputs: vec![NamedTensor::new(
            "s",
            Tensor::from_strings(&[1], &["a"]).unwrap(),
        )],
        ..Default::default()
    };
    let e = oip_grpc::encode_request(&req, Contents::Raw).unwrap_err();
    assert_eq!(
        e.to_string(),
        "tensor 's': data type STRING cannot be carried by the Open Inference Protocol; send the UTF-8 text as a BYTES tensor"
    );
}

#[test]
fn fp16_switches_a_typed_message_to_raw() {
    let req = InferRequest {
        inputs: vec![
            NamedTensor::new("a", Tensor::from_slice(&[1], &[half::f16::ONE]).unwrap()),
            NamedTensor::new("b", Tensor::from_slice(&[1], &[2.0f32]).unwrap()),
        ],
        ..Default::default()
    };
    let msg = oip_grpc::encode_request(&req, Contents::Typed).unwrap();
    assert_eq!(msg.raw_input_contents.len(), 2);
    assert!(msg.inputs.iter().all(|i| i.contents.is_none()));
}

fn rest(body: &str) -> Result<InferRequest, OipError> {
    oip_rest::decode_request(Bytes::copy_from_slice(body.as_bytes()), None)
}

#[test]
fn rest_json_forms() {
    let nested =
        rest(r#"{"inputs":[{"name":"x","shape":[2,2],"datatype":"INT32","data":[[1,2],[4,5]]}]}"#)
            .unwrap();
    let flat =
        rest(r#"{"inputs":[{"name":"x","shape":[2,2],"datatype":"INT32","data":[1,2,4,5]}]}"#)
            .unwrap();
    assert_eq!(nested, flat);
    assert_eq!(
        flat.inputs[0].tensor.to_vec::<i32>().unwrap(),
        vec![1, 2, 4, 5]
    );
    let r = rest(r#"{"id":"42","parameters":{"binary_data_output":true,"n":-1,"big":18446744073709551615,"f":0.5,"s":"x"},
        "inputs":[{"name":"s","shape":[1],"datatype":"BYTES","data":["hello"]}],"outputs":[{"name":"y","parameters":{"binary_data":false}}]}"#).unwrap();
    assert_eq!(r.id, "42");
    assert_eq!(r.parameters["n"], Parameter::Int64(-1));
    assert_eq!(r.parameters["big"], Parameter::Uint64(u64::MAX));
    assert_eq!(r.parameters["f"], Parameter::Double(0.5));
    // Outputs listed: `binary_data_output` does not apply (Triton's rule);
    // each listed output's own `binary_data` does.
    let binary = oip_rest::BinaryOutputs::of(&r);
    assert!(!binary.wants("y"));
    assert!(!binary.wants("z"));
    let mut none_listed = r.clone();
    none_listed.outputs.clear();
    assert!(oip_rest::BinaryOutputs::of(&none_listed).wants("y"));
    let resp = InferResponse {
        model_name: "add".into(),
        model_version: "1".into(),
        id: "42".into(),
        parameters: Default::default(),
        outputs: vec![
            NamedTensor::new(
                "y",
                Tensor::from_slice(&[2, 2], &[2.0f32, 4.0, 6.0, 8.5]).unwrap(),
            ),
            NamedTensor::new("b", Tensor::from_byte_strings(&[1], &[b"ok"]).unwrap()),
        ],
    };
    insta::assert_snapshot!(
        "json_response",
        String::from_utf8(
            oip_rest::encode_response(&resp, |_| false)
                .unwrap()
                .to_bytes()
                .to_vec()
        )
        .unwrap()
    );
    let binary = oip_rest::encode_response(&resp, |n| n == "y").unwrap();
    let header = &binary.parts[0];
    assert_eq!(binary.header_len, Some(header.len()));
    assert_eq!(binary.content_type(), "application/octet-stream");
    insta::assert_snapshot!(
        "binary_response_header",
        std::str::from_utf8(header).unwrap()
    );
    // The binary part is the tensor's own buffer.
    assert_eq!(
        binary.parts[1].as_ptr(),
        resp.outputs[0].tensor.raw().unwrap().as_ptr()
    );
    assert_eq!(oip_rest::encode_error("boom"), r#"{"error":"boom"}"#);
}

#[test]
fn rest_json_errors() {
    let e = |body: &str| rest(body).unwrap_err().to_string();
    assert_eq!(
        e(r#"{"inputs":[{"name":"x","shape":[3],"datatype":"FP32","data":[1,2]}]}"#),
        "tensor 'x': shape [3] holds 3 elements but 2 were given"
    );
    assert_eq!(
        e(r#"{"inputs":[{"name":"x","shape":[1],"datatype":"INT8","data":[128]}]}"#),
        "tensor 'x': value 128 is out of range for INT8"
    );
    assert_eq!(
        e(r#"{"inputs":[{"name":"x","shape":[1],"datatype":"INT32","data":[1.5]}]}"#),
        "tensor 'x': element 0 (1.5) is not a valid INT32 value"
    );
    assert_eq!(
        e(r#"{"inputs":[{"name":"x","shape":[-1],"datatype":"INT32","data":[1]}]}"#),
        "tensor 'x': 'shape' must be an array of non-negative integers"
    );
    assert_eq!(
        e(r#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP32"}]}"#),
        "tensor 'x': neither 'data' nor 'binary_data_size' is given"
    );
    assert_eq!(
        e(r#"{"inputs":{}}"#),
        "'inputs' must be an array of tensors"
    );
    assert!(
        e(r#"{"inputs":[{"shape":[1],"datatype":"FP32","data":[1]}]}"#)
            .contains("'name' is missing")
    );
    assert!(e("not json").starts_with("the JSON header is invalid"));
}

#[test]
fn binary_extension_errors() {
    let header = r#"{"inputs":[{"name":"x","shape":[2],"datatype":"FP32","parameters":{"binary_data_size":8}}]}"#;
    let mut body = header.as_bytes().to_vec();
    body.extend_from_slice(&[0; 8]);
    let body = Bytes::from(body);
    let ok = oip_rest::decode_request(body.clone(), Some(header.len())).unwrap();
    // The tensor shares the body buffer.
    assert_eq!(
        ok.inputs[0].tensor.raw().unwrap().as_ptr(),
        body[header.len()..].as_ptr()
    );
    // Header length past the body, and Triton's out-of-range value.
    let e = oip_rest::parse_header_length("99999999999", body.len()).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "Inference-Header-Content-Length 99999999999 is invalid: it exceeds the body length {}",
            body.len()
        )
    );
    let e = oip_rest::parse_header_length("-1", body.len()).unwrap_err();
    assert!(e.to_string().contains("non-negative decimal integer"));
    // Binary size past the body.
    let e = oip_rest::decode_request(body.slice(..body.len() - 1), Some(header.len())).unwrap_err();
    assert_eq!(
        e.to_string(),
        "tensor 'x': binary_data_size 8 exceeds the 7 bytes left in the body"
    );
    // Binary size that disagrees with shape x dtype.
    let header6 = header.replace("\"binary_data_size\":8", "\"binary_data_size\":6");
    let mut b = header6.as_bytes().to_vec();
    b.extend_from_slice(&[0; 6]);
    let e = oip_rest::decode_request(Bytes::from(b), Some(header6.len())).unwrap_err();
    assert_eq!(
        e.to_string(),
        "tensor 'x': FP32 data of shape [2] must be 8 bytes but is 6"
    );
    // Leftover bytes.
    let mut b = body.to_vec();
    b.push(0);
    let e = oip_rest::decode_request(Bytes::from(b), Some(header.len())).unwrap_err();
    assert_eq!(e, OipError::TrailingBinary(1));
    // A BYTES element running past its tensor.
    let hb = r#"{"inputs":[{"name":"s","shape":[1],"datatype":"BYTES","parameters":{"binary_data_size":6}}]}"#;
    let mut b = hb.as_bytes().to_vec();
    b.extend_from_slice(b"\x05\x00\x00\x00ab");
    let e = oip_rest::decode_request(Bytes::from(b), Some(hb.len())).unwrap_err();
    assert_eq!(
        e.to_string(),
        "tensor 's': BYTES element 0 at offset 0 declares 5 bytes but only 2 remain in the tensor"
    );
    // A raw binary request is decoded against the model's single input.
    let raw = oip_rest::decode_raw_binary_request(
        Bytes::from_static(&[0; 8]),
        "x",
        DataType::Fp32,
        vec![2],
    )
    .unwrap();
    assert_eq!(raw.inputs[0].tensor.element_count(), 2);
    assert!(oip_rest::decode_request(Bytes::from_static(&[0; 8]), Some(0)).is_err());
}

#[test]
fn a_reply_output_without_data_is_read_where_its_request_placed_it() {
    use serving_proto::oip::RequestedOutput;
    use serving_proto::oip::shared_memory::{BYTE_SIZE, OFFSET, REGION};
    // Triton's reply for an output written to shared memory: no data, no
    // parameters.
    let body = Bytes::from_static(
        br#"{"model_name":"m","outputs":[{"name":"y","datatype":"INT32","shape":[2]},{"name":"z","datatype":"INT32","shape":[1],"data":[7]}]}"#,
    );
    let requested = vec![
        RequestedOutput {
            name: "y".into(),
            parameters: [
                (REGION.to_owned(), Parameter::String("out".into())),
                (OFFSET.to_owned(), Parameter::Int64(8)),
                (BYTE_SIZE.to_owned(), Parameter::Int64(8)),
            ]
            .into(),
        },
        RequestedOutput {
            name: "z".into(),
            parameters: Default::default(),
        },
    ];
    let asked = std::cell::RefCell::new(Vec::new());
    let mut external = |name: &str, p: &serving_proto::oip::shared_memory::Placement| {
        asked
            .borrow_mut()
            .push((name.to_owned(), p.region.clone(), p.offset, p.byte_size));
        Ok(Bytes::from_static(&[1, 0, 0, 0, 2, 0, 0, 0]))
    };
    let resp =
        oip_rest::decode_response_placed(body.clone(), None, &requested, &mut external).unwrap();
    assert_eq!(*asked.borrow(), [("y".to_owned(), "out".to_owned(), 8, 8)]);
    assert_eq!(resp.outputs[0].tensor.to_vec::<i32>().unwrap(), [1, 2]);
    assert!(resp.outputs[0].parameters.is_empty(), "nothing added");
    assert_eq!(resp.outputs[1].tensor.to_vec::<i32>().unwrap(), [7]);
    // Without the request's placements, such an output is an error.
    assert!(oip_rest::decode_response_with(body, None, &mut external).is_err());
}
