//! The message limit at limit-1, limit and limit+1 bytes, on gRPC (refused
//! from the frame header) and REST, for both protocols; replies over the
//! limit; and the server serving the next request after each refusal.

mod common;

use prost::Message;
use serde_json::{Value, json};
use serving_proto::oip::grpc::Contents;
use serving_proto::oip::{InferRequest, NamedTensor};
use serving_proto::pb::{inference as oip_pb, mindspore as ms_pb};
use serving_proto::{NamedTensors, Tensor, mindspore, oip};

const LIMIT: usize = 1 << 20;

async fn small_server(repo: &std::path::Path) -> reference_server::server::Running {
    common::start(reference_server::server::Config {
        model_repository: Some(repo.to_owned()),
        max_msg_mb_size: 1,
        ..common::config()
    })
    .await
}

/// A request for `size` whose encoded length is exactly `target`, found by
/// growing the payload and, where a varint boundary skips the target, the id.
fn oip_request_of(target: usize) -> oip_pb::ModelInferRequest {
    for pad in 0..8 {
        let mut n = target.saturating_sub(100);
        for _ in 0..16 {
            let req = InferRequest {
                model_name: "size".into(),
                id: "p".repeat(pad),
                inputs: vec![NamedTensor::new(
                    "x",
                    Tensor::from_slice(&[n as i64], &vec![7u8; n]).unwrap(),
                )],
                ..Default::default()
            };
            let msg = oip::grpc::encode_request(&req, Contents::Raw).unwrap();
            let len = msg.encoded_len();
            if len == target {
                return msg;
            }
            n = (n as i64 + target as i64 - len as i64).max(0) as usize;
        }
    }
    panic!("no request of {target} bytes")
}

fn ms_request_of(target: usize) -> ms_pb::PredictRequest {
    let square = Tensor::from_slice(&[2, 2], &[1.0f32; 4]).unwrap();
    for pad in 1..8 {
        let mut n = target.saturating_sub(200);
        for _ in 0..16 {
            let instance: NamedTensors = [
                ("x1".to_string(), square.clone()),
                ("x2".to_string(), square.clone()),
                (
                    "p".repeat(pad),
                    Tensor::from_slice(&[n as i64], &vec![0u8; n]).unwrap(),
                ),
            ]
            .into();
            let msg = mindspore::grpc::encode_request("add", "add_common", 0, &[instance]).unwrap();
            let len = msg.encoded_len();
            if len == target {
                return msg;
            }
            n = (n as i64 + target as i64 - len as i64).max(0) as usize;
        }
    }
    panic!("no request of {target} bytes")
}

#[tokio::test]
async fn grpc_requests_at_the_limit() {
    let repo = common::repository();
    let server = small_server(repo.path()).await;
    let mut c = common::oip(&server).await;
    for size in [LIMIT - 1, LIMIT] {
        let r = c
            .model_infer(oip_request_of(size))
            .await
            .expect("at or under the limit is served");
        let resp = oip::grpc::decode_response(r.into_inner()).unwrap();
        assert!(resp.outputs[0].tensor.to_vec::<i64>().unwrap()[0] > 0);
    }
    let e = c.model_infer(oip_request_of(LIMIT + 1)).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::ResourceExhausted);
    assert_eq!(
        e.message(),
        "Received message larger than max (1048577 vs. 1048576)"
    );
    // The same connection still serves.
    assert!(c.model_infer(oip_request_of(1000)).await.is_ok());
    server.shutdown().await;
}

#[tokio::test]
async fn mindspore_grpc_requests_at_the_limit() {
    let server = common::start(reference_server::server::Config {
        max_msg_mb_size: 1,
        ..common::config()
    })
    .await;
    let mut c = common::ms(&server).await;
    for size in [LIMIT - 1, LIMIT] {
        let reply = c
            .predict(ms_request_of(size))
            .await
            .expect("served")
            .into_inner();
        let out = mindspore::grpc::decode_reply(reply, 1)
            .unwrap()
            .instance(0)
            .unwrap()
            .unwrap();
        assert_eq!(out["y"].to_vec::<f32>().unwrap(), vec![2.0; 4]);
    }
    let e = c.predict(ms_request_of(LIMIT + 1)).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::ResourceExhausted);
    assert_eq!(
        e.message(),
        "Received message larger than max (1048577 vs. 1048576)"
    );
    assert!(c.predict(ms_request_of(5000)).await.is_ok());
    server.shutdown().await;
}

#[tokio::test]
async fn replies_over_the_limit() {
    let repo = common::repository();
    let server = small_server(repo.path()).await;
    let mut c = common::oip(&server).await;
    let n = 600_000usize;
    let req = InferRequest {
        model_name: "double".into(),
        inputs: vec![NamedTensor::new(
            "x",
            Tensor::from_slice(&[n as i64], &vec![1u8; n]).unwrap(),
        )],
        ..Default::default()
    };
    let e = c
        .model_infer(oip::grpc::encode_request(&req, Contents::Raw).unwrap())
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::ResourceExhausted);
    assert!(
        e.message()
            .starts_with("Sent message larger than max (12000"),
        "{}",
        e.message()
    );
    assert!(e.message().ends_with(" vs. 1048576)"));
    let body = oip::rest::encode_request(&req, true).unwrap();
    let r = common::http()
        .post(common::rest(&server, "/v2/models/double/infer"))
        .header(oip::rest::HEADER_LENGTH, body.header_len.unwrap())
        .body(body.to_bytes())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    assert!(
        r.json::<Value>().await.unwrap()["error"]
            .as_str()
            .unwrap()
            .starts_with("Sent message larger than max (")
    );
    server.shutdown().await;
}

fn padded(mut body: String, size: usize) -> String {
    assert!(body.len() <= size);
    body.extend(std::iter::repeat_n(' ', size - body.len()));
    body
}

#[tokio::test]
async fn rest_bodies_at_the_limit() {
    let repo = common::repository();
    let server = small_server(repo.path()).await;
    let http = common::http();
    let ms_body =
        json!({"instances": {"x1": [[1.0, 2.0], [3.0, 4.0]], "x2": [[1.0, 2.0], [3.0, 4.0]]}})
            .to_string();
    let oip_body =
        json!({"inputs": [{"name": "x", "shape": [3], "datatype": "UINT8", "data": [1, 2, 3]}]})
            .to_string();
    for size in [LIMIT - 1, LIMIT, LIMIT + 1] {
        // MindSpore routes: the demo-like servable `math` of the repository.
        let r = http
            .post(common::rest(&server, "/model/math:calc"))
            .body(padded(ms_body.clone(), size))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let v: Value = r.json().await.unwrap();
        if size <= LIMIT {
            assert_eq!(
                (status, v),
                (200, json!({"instances": [{"y": [[0.0, 0.0], [0.0, 0.0]]}]})),
                "{size}"
            );
        } else {
            assert_eq!(
                (status, v),
                (
                    413,
                    json!({"error_msg": "http message is bigger than 1048576"})
                ),
                "{size}"
            );
        }
        let r = http
            .post(common::rest(&server, "/v2/models/size/infer"))
            .body(padded(oip_body.clone(), size))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let v: Value = r.json().await.unwrap();
        if size <= LIMIT {
            assert_eq!(
                (status, v["outputs"][0]["data"].clone()),
                (200, json!([3])),
                "{size}"
            );
        } else {
            assert_eq!(
                (status, v),
                (413, json!({"error": "http message is bigger than 1048576"})),
                "{size}"
            );
        }
    }
    server.shutdown().await;
}
