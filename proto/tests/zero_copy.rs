//! Decoding a 256 MiB raw tensor out of a gRPC message does not copy it: the
//! tensor's bytes lie inside the received buffer (pointer identity).

use bytes::Bytes;
use prost::Message;
use serving_proto::oip::grpc::{self as oip_grpc, Contents};
use serving_proto::oip::{InferRequest, NamedTensor};
use serving_proto::pb::{inference as oip_pb, mindspore as ms_pb};
use serving_proto::{DataType, NamedTensors, Tensor, mindspore};

const SIZE: usize = 256 << 20;

fn big_tensor() -> Tensor {
    Tensor::from_raw(
        DataType::Fp32,
        vec![(SIZE / 4) as i64],
        Bytes::from(vec![7u8; SIZE]),
    )
    .unwrap()
}

fn inside(buffer: &Bytes, part: &Bytes) -> bool {
    let start = buffer.as_ptr() as usize;
    let p = part.as_ptr() as usize;
    p >= start && p + part.len() <= start + buffer.len()
}

#[test]
fn oip_raw_input_is_not_copied() {
    let req = InferRequest {
        model_name: "identity".into(),
        inputs: vec![NamedTensor::new("x", big_tensor())],
        ..Default::default()
    };
    let wire = Bytes::from(
        oip_grpc::encode_request(&req, Contents::Raw)
            .unwrap()
            .encode_to_vec(),
    );
    let decoded =
        oip_grpc::decode_request(oip_pb::ModelInferRequest::decode(wire.clone()).unwrap()).unwrap();
    let raw = decoded.inputs[0].tensor.raw().unwrap();
    assert_eq!(raw.len(), SIZE);
    assert!(
        inside(&wire, raw),
        "the decoded tensor must share the wire buffer"
    );
}

#[test]
fn mindspore_data_is_not_copied() {
    let mut instance = NamedTensors::new();
    instance.insert("x".into(), big_tensor());
    let msg = mindspore::grpc::encode_request("s", "m", 0, &[instance]).unwrap();
    // Encoding shares the tensor's bytes too: the message holds the same buffer.
    let Some(ms_pb::tensor::TensorData::Data(data)) = &msg.instances[0].items["x"].tensor_data
    else {
        panic!("raw data expected")
    };
    assert_eq!(data.len(), SIZE);
    let wire = Bytes::from(msg.encode_to_vec());
    let decoded =
        mindspore::grpc::decode_request(ms_pb::PredictRequest::decode(wire.clone()).unwrap())
            .unwrap();
    let raw = decoded.instances[0]["x"].raw().unwrap();
    assert_eq!(raw.len(), SIZE);
    assert!(
        inside(&wire, raw),
        "the decoded tensor must share the wire buffer"
    );
}
