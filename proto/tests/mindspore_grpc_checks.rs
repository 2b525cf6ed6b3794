//! The request checks and reply forms of the MindSpore gRPC codec (spec
//! §2.4, §2.5, §2.7), with their exact texts.

use std::collections::BTreeMap;

use bytes::Bytes;
use serving_proto::mindspore::grpc::{self, ReplyError};
use serving_proto::mindspore::{Outcome, ServableError, StatusCode};
use serving_proto::pb::mindspore as pb;
use serving_proto::{NamedTensors, Tensor};

fn tensor(dtype: pb::DataType, dims: &[i64], data: &[u8]) -> pb::Tensor {
    pb::Tensor {
        shape: Some(pb::TensorShape {
            dims: dims.to_vec(),
        }),
        dtype: dtype as i32,
        tensor_data: Some(pb::tensor::TensorData::Data(Bytes::copy_from_slice(data))),
        bytes_val: vec![],
    }
}

fn strings(dtype: pb::DataType, dims: &[i64], items: &[&str]) -> pb::Tensor {
    pb::Tensor {
        shape: Some(pb::TensorShape {
            dims: dims.to_vec(),
        }),
        dtype: dtype as i32,
        tensor_data: None,
        bytes_val: items
            .iter()
            .map(|s| Bytes::copy_from_slice(s.as_bytes()))
            .collect(),
    }
}

fn request(items: Vec<(&str, pb::Tensor)>) -> pb::PredictRequest {
    pb::PredictRequest {
        servable_spec: Some(pb::ServableSpec {
            name: "add".into(),
            method_name: "add_common".into(),
            version_number: 0,
        }),
        instances: vec![pb::Instance {
            items: items.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
            output_buffers: BTreeMap::new(),
        }],
    }
}

fn error_of(items: Vec<(&str, pb::Tensor)>) -> String {
    let e = grpc::decode_request(request(items)).unwrap_err();
    assert_eq!(e.code, StatusCode::InvalidInputs.code());
    e.message
}

#[test]
fn tensor_check_texts() {
    use pb::DataType::*;
    assert_eq!(
        error_of(vec![("x1", tensor(MsFloat32, &[2, 2], &[0; 12]))]),
        "Instances input x1 check failed, detail: Tensor check failed: input data size 12 invalid"
    );
    assert_eq!(
        error_of(vec![("x1", tensor(MsFloat32, &[0, 3], &[]))]),
        "Instances input x1 check failed, detail: Tensor check failed: input  shape [0, 3] invalid"
    );
    assert_eq!(
        error_of(vec![("x1", tensor(MsFloat32, &[0, 0], &[]))]),
        "Instances input x1 check failed, detail: Tensor check failed: input  shape [0, 0] invalid"
    );
    assert_eq!(
        error_of(vec![("x1", tensor(MsFloat32, &[-1], &[]))]),
        "Instances input x1 check failed, detail: Tensor check failed: input  shape [-1] invalid"
    );
    assert_eq!(
        error_of(vec![("x1", tensor(MsUnknown, &[1], &[0]))]),
        "Instances input x1 check failed, detail: Tensor check failed: input data type proto::MS_UNKNOWN invalid"
    );
    let mut odd = tensor(MsInt8, &[1], &[0]);
    odd.dtype = 99;
    assert_eq!(
        error_of(vec![("x1", odd)]),
        "Instances input x1 check failed, detail: Tensor check failed: input data type proto::DataType(99) invalid"
    );
    assert_eq!(
        error_of(vec![("s", strings(MsString, &[1], &["a", "b"]))]),
        "Instances input s check failed, detail: Instance tensor check failed: bytes or string type shape batch size can only be 1"
    );
    assert_eq!(
        error_of(vec![("s", strings(MsBytes, &[1, 1], &["a"]))]),
        "Instances input s check failed, detail: Instance tensor check failed: bytes or string type input  shape can only be (1,) or empty, but given shape is [1, 1]"
    );
    let mut shm = tensor(MsFloat32, &[1], &[]);
    shm.tensor_data = Some(pb::tensor::TensorData::ShmData(pb::ShmTensorData::default()));
    assert!(error_of(vec![("x1", shm)]).contains("shared memory"));
    // A valid pair, for contrast: [0] and [1,0] are fine.
    assert!(grpc::decode_request(request(vec![("x", tensor(MsFloat32, &[1, 0], &[]))])).is_ok());
}

#[test]
fn zero_instances_are_refused_not_left_hanging() {
    let mut req = request(vec![]);
    req.instances.clear();
    let e = grpc::decode_request(req).unwrap_err();
    assert_eq!(
        e.message,
        "Instances count of request cannot be 0, servable: add, method: add_common"
    );
}

#[test]
fn reply_forms_follow_the_spec() {
    let y = |v: f32| -> NamedTensors {
        [("y".to_string(), Tensor::from_slice(&[1], &[v]).unwrap())].into()
    };
    let bad = ServableError::new(
        StatusCode::InvalidInputs,
        "Given model input 1 size 12 not match the size 8 defined in model",
    );
    // Form 2: all OK, no error entries.
    let r = grpc::encode_reply(None, &Outcome::from_results(vec![Ok(y(1.0)), Ok(y(2.0))])).unwrap();
    assert_eq!((r.instances.len(), r.error_msg.len()), (2, 0));
    // Form 3: mixed, N entries, empty instance for the failure.
    let r = grpc::encode_reply(
        None,
        &Outcome::from_results(vec![Ok(y(1.0)), Err(bad.clone())]),
    )
    .unwrap();
    assert_eq!((r.instances.len(), r.error_msg.len()), (2, 2));
    assert_eq!(r.error_msg[0].error_code, 0);
    assert!(r.instances[1].items.is_empty());
    // Form 4: identical failures collapse into form 1.
    let r = grpc::encode_reply(
        None,
        &Outcome::from_results(vec![Err(bad.clone()), Err(bad.clone())]),
    )
    .unwrap();
    assert_eq!((r.instances.len(), r.error_msg.len()), (0, 1));
    // An empty text becomes "Predict failed".
    let r = grpc::encode_reply(
        None,
        &Outcome::Failed(ServableError::new(StatusCode::Failed, "")),
    )
    .unwrap();
    assert_eq!(
        r.error_msg[0].error_msg,
        Bytes::from_static(b"Predict failed")
    );
}

#[test]
fn reply_decoding_follows_the_official_clients() {
    let entry = |code: i64, text: &str| pb::ErrorMsg {
        error_code: code,
        error_msg: Bytes::copy_from_slice(text.as_bytes()),
    };
    // One non-zero entry applies to the whole request, whatever else is there.
    let reply = pb::PredictReply {
        error_msg: vec![entry(5, "gone")],
        ..Default::default()
    };
    assert_eq!(
        grpc::decode_reply(reply, 3).unwrap(),
        Outcome::Failed(ServableError {
            code: 5,
            message: "gone".into()
        })
    );
    // Error bytes are decoded leniently.
    let reply = pb::PredictReply {
        error_msg: vec![pb::ErrorMsg {
            error_code: 2,
            error_msg: Bytes::from_static(b"bad \xff"),
        }],
        ..Default::default()
    };
    assert_eq!(
        grpc::decode_reply(reply, 1).unwrap(),
        Outcome::Failed(ServableError {
            code: 2,
            message: "bad \u{fffd}".into()
        })
    );
    // Neither 0, 1 nor N entries.
    let reply = pb::PredictReply {
        instances: vec![pb::Instance::default(); 3],
        error_msg: vec![entry(0, ""), entry(0, "")],
        ..Default::default()
    };
    assert_eq!(
        grpc::decode_reply(reply, 3).unwrap_err(),
        ReplyError::ErrorCount {
            errors: 2,
            instances: 3
        }
    );
    assert_eq!(
        ReplyError::ErrorCount {
            errors: 2,
            instances: 3
        }
        .to_string(),
        "error msg result size 2 is not 0, 1 or length of instances 3"
    );
    // Missing instances.
    let reply = pb::PredictReply {
        instances: vec![pb::Instance::default()],
        ..Default::default()
    };
    assert!(matches!(
        grpc::decode_reply(reply, 2),
        Err(ReplyError::InstanceCount {
            expected: 2,
            actual: 1
        })
    ));
    // A malformed output tensor is a protocol error, not a panic.
    let mut items = BTreeMap::new();
    items.insert(
        "y".to_string(),
        tensor(pb::DataType::MsFloat32, &[2], &[0; 3]),
    );
    let reply = pb::PredictReply {
        instances: vec![pb::Instance {
            items,
            output_buffers: BTreeMap::new(),
        }],
        ..Default::default()
    };
    assert!(matches!(
        grpc::decode_reply(reply, 1),
        Err(ReplyError::Tensor { index: 0, .. })
    ));
}

#[test]
fn bf16_cannot_be_sent_to_mindspore() {
    let mut i = NamedTensors::new();
    i.insert(
        "x".into(),
        Tensor::from_slice(&[1], &[half::bf16::ONE]).unwrap(),
    );
    let e = grpc::encode_request("s", "m", 0, &[i]).unwrap_err();
    assert!(
        e.to_string()
            .contains("cannot be carried by the MindSpore Serving protocol")
    );
}
