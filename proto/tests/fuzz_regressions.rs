//! Inputs the fuzz targets in `fuzz/` found, kept as regression tests.

use bytes::Bytes;
use serving_proto::pb::inference::{ModelInferRequest, model_infer_request::InferInputTensor};
use serving_proto::pb::mindspore as ms;
use serving_proto::{mindspore, oip};

/// `oip_grpc_request`: a raw BOOL byte 0x1a was accepted, and typed contents
/// turned it into 0x01, so a decode-encode-decode round trip changed it.
#[test]
fn oip_raw_bool_bytes_other_than_zero_or_one_are_refused() {
    let request = ModelInferRequest {
        model_name: "identity".into(),
        inputs: vec![InferInputTensor {
            name: "q".into(),
            datatype: "BOOL".into(),
            shape: vec![1, 2],
            ..Default::default()
        }],
        raw_input_contents: vec![Bytes::from_static(&[0x1a, 0])],
        ..Default::default()
    };
    let e = oip::grpc::decode_request(request).unwrap_err();
    assert!(e.to_string().contains("BOOL element 0 is byte 0x1a"), "{e}");
}

#[test]
fn mindspore_bool_bytes_other_than_zero_or_one_are_refused() {
    let request = ms::PredictRequest {
        servable_spec: Some(ms::ServableSpec {
            name: "s".into(),
            method_name: "m".into(),
            version_number: 0,
        }),
        instances: vec![ms::Instance {
            items: [(
                "q".to_string(),
                ms::Tensor {
                    shape: Some(ms::TensorShape { dims: vec![2] }),
                    dtype: ms::DataType::MsBool as i32,
                    tensor_data: Some(ms::tensor::TensorData::Data(Bytes::from_static(&[1, 7]))),
                    ..Default::default()
                },
            )]
            .into(),
            ..Default::default()
        }],
    };
    let e = mindspore::grpc::decode_request(request).unwrap_err();
    assert_eq!(
        e.message,
        "Instances input q check failed, detail: Tensor check failed: BOOL element 1 is byte 0x07; BOOL elements are 0 (false) or 1 (true)"
    );
}

/// `client_replies`: an error about a JSON string value of a numeric tensor
/// cut the value at 40 bytes, inside a multi-byte character, and panicked.
#[test]
fn oip_value_errors_cut_long_values_on_a_character_boundary() {
    let body = "{\"outputs\":[{\"data\":[\"d1\\\\\\\\typXiz\\tpXiz\\t\\\\\\\\\\teeufaD0\\uea007\\ufaD0Wea008\\ufeeeam?iz\",\"\"],\"datatype\":\"INT16\",\"name\":\"b\",\"shape\":[2]}]}";
    let e = oip::rest::decode_response(Bytes::from(body), None).unwrap_err();
    assert!(e.to_string().contains("tensor 'b'"), "{e}");
    let request = "{\"inputs\":[{\"data\":[\"ééééééééééééééééééééééééé\"],\"datatype\":\"FP32\",\"name\":\"x\",\"shape\":[1]}]}";
    assert!(oip::rest::decode_request(Bytes::from(request), None).is_err());
}
