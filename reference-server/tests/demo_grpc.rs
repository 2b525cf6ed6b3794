//! The built-in demo over gRPC: MindSpore `Predict`, all six OIP RPCs, and
//! the health service, against a real server and real ONNX Runtime.

mod common;

use serving_proto::mindspore::{self, Outcome};
use serving_proto::oip::grpc::Contents;
use serving_proto::oip::{InferRequest, NamedTensor};
use serving_proto::pb::inference as pb;
use serving_proto::{NamedTensors, Tensor, oip};

fn square(values: [f32; 4]) -> Tensor {
    Tensor::from_slice(&[2, 2], &values).unwrap()
}

fn instance(x1: Tensor, x2: Tensor) -> NamedTensors {
    [("x1".to_string(), x1), ("x2".to_string(), x2)].into()
}

#[tokio::test]
async fn mindspore_add_common_and_add_cast() {
    let server = common::demo().await;
    let mut client = common::ms(&server).await;
    let instances: Vec<NamedTensors> = (0..3)
        .map(|i| {
            let base = i as f32;
            instance(square([base, 1.0, 2.0, 3.0]), square([1.0, 1.0, 1.0, base]))
        })
        .collect();
    let req = mindspore::grpc::encode_request("add", "add_common", 0, &instances).unwrap();
    let reply = client.predict(req).await.unwrap().into_inner();
    // The spec is echoed, version unresolved.
    assert_eq!(reply.servable_spec.as_ref().unwrap().version_number, 0);
    let Outcome::Instances(results) = mindspore::grpc::decode_reply(reply, 3).unwrap() else {
        panic!("instances expected")
    };
    for (i, r) in results.into_iter().enumerate() {
        let y = r.unwrap().remove("y").unwrap();
        let b = i as f32;
        assert_eq!(y.shape(), &[2, 2]);
        assert_eq!(y.to_vec::<f32>().unwrap(), vec![b + 1.0, 2.0, 3.0, 3.0 + b]);
    }
    let ints = instance(
        Tensor::from_slice(&[2, 2], &[1i32, 2, 3, 4]).unwrap(),
        Tensor::from_slice(&[2, 2], &[10i32, 20, 30, 40]).unwrap(),
    );
    let req = mindspore::grpc::encode_request("add", "add_cast", 1, &[ints]).unwrap();
    let reply = client.predict(req).await.unwrap().into_inner();
    let y = mindspore::grpc::decode_reply(reply, 1)
        .unwrap()
        .instance(0)
        .unwrap()
        .unwrap();
    assert_eq!(
        y["y"].to_vec::<f32>().unwrap(),
        vec![11.0, 22.0, 33.0, 44.0]
    );
    server.shutdown().await;
}

fn add_request(contents: Contents) -> pb::ModelInferRequest {
    let req = InferRequest {
        model_name: "add".into(),
        id: "req-7".into(),
        inputs: vec![
            NamedTensor::new("x1", square([1.0, 2.0, 3.0, 4.0])),
            NamedTensor::new("x2", square([0.5, 0.5, 0.5, 0.5])),
        ],
        ..Default::default()
    };
    oip::grpc::encode_request(&req, contents).unwrap()
}

#[tokio::test]
async fn oip_infer_typed_and_raw() {
    let server = common::demo().await;
    let mut client = common::oip(&server).await;
    for contents in [Contents::Typed, Contents::Raw] {
        let reply = client
            .model_infer(add_request(contents))
            .await
            .unwrap()
            .into_inner();
        // Raw outputs whatever form the inputs took, as Triton answers.
        assert_eq!(reply.raw_output_contents.len(), 1, "{contents:?}");
        assert!(reply.outputs[0].contents.is_none(), "{contents:?}");
        let resp = oip::grpc::decode_response(reply).unwrap();
        assert_eq!(
            (
                resp.model_name.as_str(),
                resp.model_version.as_str(),
                resp.id.as_str()
            ),
            ("add", "1", "req-7")
        );
        assert_eq!(resp.outputs[0].name, "y");
        assert_eq!(
            resp.outputs[0].tensor.to_vec::<f32>().unwrap(),
            vec![1.5, 2.5, 3.5, 4.5]
        );
    }
    // The second method is model "add.add_cast".
    let req = InferRequest {
        model_name: "add.add_cast".into(),
        inputs: vec![
            NamedTensor::new("x1", Tensor::from_slice(&[2, 2], &[1i32, 2, 3, 4]).unwrap()),
            NamedTensor::new("x2", Tensor::from_slice(&[2, 2], &[1i32, 1, 1, 1]).unwrap()),
        ],
        ..Default::default()
    };
    let reply = client
        .model_infer(oip::grpc::encode_request(&req, Contents::Raw).unwrap())
        .await
        .unwrap();
    let resp = oip::grpc::decode_response(reply.into_inner()).unwrap();
    assert_eq!(
        resp.outputs[0].tensor.to_vec::<f32>().unwrap(),
        vec![2.0, 3.0, 4.0, 5.0]
    );
    server.shutdown().await;
}

#[tokio::test]
async fn oip_health_and_metadata() {
    let server = common::demo().await;
    let mut c = common::oip(&server).await;
    assert!(
        c.server_live(pb::ServerLiveRequest {})
            .await
            .unwrap()
            .into_inner()
            .live
    );
    assert!(
        c.server_ready(pb::ServerReadyRequest {})
            .await
            .unwrap()
            .into_inner()
            .ready
    );
    let ready = |name: &str, version: &str| pb::ModelReadyRequest {
        name: name.into(),
        version: version.into(),
    };
    assert!(
        c.model_ready(ready("add", ""))
            .await
            .unwrap()
            .into_inner()
            .ready
    );
    assert!(
        c.model_ready(ready("add", "1"))
            .await
            .unwrap()
            .into_inner()
            .ready
    );
    // As Triton answers: a model or version the server lacks is not ready,
    // not an error.
    for (name, version) in [("nope", ""), ("add", "9"), ("", "")] {
        assert!(
            !c.model_ready(ready(name, version))
                .await
                .unwrap()
                .into_inner()
                .ready,
            "{name}:{version}"
        );
    }
    let meta = c
        .server_metadata(pb::ServerMetadataRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(meta.name, "serving-reference-server");
    assert!(meta.extensions.contains(&"binary_tensor_data".to_string()));
    let m = c
        .model_metadata(pb::ModelMetadataRequest {
            name: "add".into(),
            version: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (m.name.as_str(), m.platform.as_str()),
        ("add", "onnxruntime_onnx")
    );
    assert_eq!(m.versions, vec!["1"]);
    let io: Vec<(String, String, Vec<i64>)> = m
        .inputs
        .iter()
        .chain(&m.outputs)
        .map(|t| (t.name.clone(), t.datatype.clone(), t.shape.clone()))
        .collect();
    assert_eq!(
        io,
        vec![
            ("x1".into(), "FP32".into(), vec![2, 2]),
            ("x2".into(), "FP32".into(), vec![2, 2]),
            ("y".into(), "FP32".into(), vec![2, 2]),
        ]
    );
    server.shutdown().await;
}

#[tokio::test]
async fn grpc_health_service() {
    use tonic_health::pb::{
        HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
    };
    let server = common::demo().await;
    let mut health = HealthClient::new(common::channel(&server).await);
    for service in [
        "",
        "mindspore.serving.proto.MSService",
        "inference.GRPCInferenceService",
    ] {
        let r = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            r.status,
            ServingStatus::Serving as i32,
            "service '{service}'"
        );
    }
    server.shutdown().await;
}
