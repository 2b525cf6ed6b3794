//! Every error class of the DESIGN.md table on both transports and both
//! protocols, with MindSpore's exact texts, and the server still serving
//! after each.

mod common;

use std::time::Duration;

use bytes::Bytes;
use serde_json::{Value, json};
use serving_proto::mindspore::{self, Outcome, ServableError};
use serving_proto::oip::grpc::Contents;
use serving_proto::oip::{InferRequest, NamedTensor};
use serving_proto::pb::mindspore as ms_pb;
use serving_proto::{NamedTensors, Tensor, oip};

fn instance(pairs: &[(&str, Tensor)]) -> NamedTensors {
    pairs
        .iter()
        .map(|(n, t)| (n.to_string(), t.clone()))
        .collect()
}

fn f32s(shape: &[i64], v: &[f32]) -> Tensor {
    Tensor::from_slice(shape, v).unwrap()
}

async fn ms_predict(
    client: &mut ms_pb::ms_service_client::MsServiceClient<tonic::transport::Channel>,
    servable: &str,
    method: &str,
    version: u64,
    instances: &[NamedTensors],
) -> Outcome {
    let req = mindspore::grpc::encode_request(servable, method, version, instances).unwrap();
    let reply = client
        .predict(req)
        .await
        .expect("MSService answers with status OK")
        .into_inner();
    mindspore::grpc::decode_reply(reply, instances.len()).unwrap()
}

fn failed(outcome: Outcome) -> ServableError {
    match outcome {
        Outcome::Failed(e) => e,
        other => panic!("a request-level error expected, got {other:?}"),
    }
}

#[tokio::test]
async fn mindspore_grpc_in_band_errors() {
    let server = common::demo().await;
    let mut c = common::ms(&server).await;
    let good = instance(&[
        ("x1", f32s(&[2, 2], &[1.0; 4])),
        ("x2", f32s(&[2, 2], &[1.0; 4])),
    ]);
    // Not found: servable, version, method (code 2, exact spacing).
    let e = failed(ms_predict(&mut c, "nope", "add_common", 0, std::slice::from_ref(&good)).await);
    assert_eq!(
        (e.code, e.message.as_str()),
        (
            2,
            "Request servable(nope) method(add_common) , servable is not available"
        )
    );
    let e = failed(ms_predict(&mut c, "add", "add_common", 2, std::slice::from_ref(&good)).await);
    assert_eq!(
        e.message,
        "Request servable(add) method(add_common)  version(2) , servable is not available"
    );
    let e = failed(ms_predict(&mut c, "add", "add_common2", 0, std::slice::from_ref(&good)).await);
    assert_eq!(
        e.message,
        "Request servable(add) method(add_common2) , method is not available"
    );
    // Invalid: missing input, bad tensor, zero instances.
    let e = failed(
        ms_predict(
            &mut c,
            "add",
            "add_common",
            0,
            &[instance(&[
                ("x3", f32s(&[2, 2], &[1.0; 4])),
                ("x2", f32s(&[2, 2], &[1.0; 4])),
            ])],
        )
        .await,
    );
    assert_eq!(
        e.message,
        "Cannot find input x1 in instance input , servable add, method add_common"
    );
    let e = failed(ms_predict(&mut c, "add", "add_common", 0, &[]).await);
    assert_eq!(
        e.message,
        "Instances count of request cannot be 0, servable: add, method: add_common"
    );
    let mut bad =
        mindspore::grpc::encode_request("add", "add_common", 0, std::slice::from_ref(&good))
            .unwrap();
    if let Some(ms_pb::tensor::TensorData::Data(d)) =
        &mut bad.instances[0].items.get_mut("x1").unwrap().tensor_data
    {
        *d = Bytes::from_static(&[0; 12]);
    }
    let reply = c.predict(bad).await.unwrap().into_inner();
    let e = failed(mindspore::grpc::decode_reply(reply, 1).unwrap());
    assert_eq!(
        e.message,
        "Instances input x1 check failed, detail: Tensor check failed: input data size 12 invalid"
    );
    // Per instance: size and type mismatches leave the others alone (form 3).
    let wrong_size = instance(&[
        ("x1", f32s(&[2, 2], &[1.0; 4])),
        ("x2", f32s(&[2, 3], &[1.0; 6])),
    ]);
    let wrong_type = instance(&[
        ("x1", f32s(&[2, 2], &[1.0; 4])),
        ("x2", Tensor::from_slice(&[2, 2], &[1i32; 4]).unwrap()),
    ]);
    let extra = instance(&[
        ("x1", f32s(&[1, 4], &[1.0; 4])),
        ("x2", f32s(&[4], &[2.0; 4])),
        ("x3", f32s(&[1], &[0.0])),
    ]);
    let Outcome::Instances(r) = ms_predict(
        &mut c,
        "add",
        "add_common",
        0,
        &[good.clone(), wrong_size, wrong_type, extra],
    )
    .await
    else {
        panic!("per-instance results expected")
    };
    assert!(r[0].is_ok());
    assert_eq!(
        r[1].as_ref().unwrap_err().message,
        "Given model input 1 size 24 not match the size 16 defined in model"
    );
    assert_eq!(
        r[2].as_ref().unwrap_err().message,
        "Given model input 1 data type kMSI_Int32 not match the data type kMSI_Float32 defined in model"
    );
    // Shapes are not checked, only sizes: [1,4] and [4] feed a [2,2] model; extra inputs are ignored.
    assert_eq!(
        r[3].as_ref().unwrap()["y"].to_vec::<f32>().unwrap(),
        vec![3.0; 4]
    );
    // Identical failures collapse into one request-level error.
    let twice = instance(&[
        ("x1", f32s(&[2, 2], &[1.0; 4])),
        ("x2", f32s(&[3], &[1.0; 3])),
    ]);
    let e = failed(ms_predict(&mut c, "add", "add_common", 0, &[twice.clone(), twice]).await);
    assert_eq!(
        e.message,
        "Given model input 1 size 12 not match the size 16 defined in model"
    );
    // Still serving.
    assert!(
        ms_predict(&mut c, "add", "add_common", 0, &[good])
            .await
            .instance(0)
            .unwrap()
            .is_ok()
    );
    server.shutdown().await;
}

#[tokio::test]
async fn mindspore_rest_errors_and_statuses() {
    let server = common::demo().await;
    let http = common::http();
    let post = |path: &str, body: String| http.post(common::rest(&server, path)).body(body).send();
    let x = json!([[1.0, 2.0], [3.0, 4.0]]);
    let good = json!({"instances": [{"x1": x, "x2": x}]}).to_string();
    let cases: Vec<(&str, String, u16, &str)> = vec![
        (
            "/model/nope:add_common",
            good.clone(),
            404,
            "Request servable(nope) method(add_common) , servable is not available",
        ),
        (
            "/model/add/version/2:add_common",
            good.clone(),
            404,
            "Request servable(add) method(add_common)  version(2) , servable is not available",
        ),
        (
            "/model/add:add_common2",
            good.clone(),
            404,
            "Request servable(add) method(add_common2) , method is not available",
        ),
        (
            "/model:add_common",
            good.clone(),
            400,
            "please check url, the keyword:[model] must contain.",
        ),
        (
            "/model/add",
            good.clone(),
            400,
            "please check url, the keyword:[service method] must contain.",
        ),
        (
            "/model/add/version/-1:add_common",
            good.clone(),
            400,
            "please check url, version number range failed, request version number -1",
        ),
        (
            "/model/add:add_common",
            String::new(),
            400,
            "http message invalid",
        ),
        (
            "/model/add:add_common",
            "{\"instances\": {\"x1\": {\"b64\": \"A*A=\"}}}".into(),
            400,
            "Parser request failed, 'A*A=' is illegal b64 encode string",
        ),
        (
            "/model/add:add_common",
            "{\"instances\": []}".into(),
            400,
            "Parser request failed, instances value is array type, but no value",
        ),
        (
            "/model/add:add_common",
            json!({"instances": [{"x1": x}]}).to_string(),
            400,
            "Cannot find input x2 in instance input , servable add, method add_common",
        ),
    ];
    for (path, body, status, text) in cases {
        let r = post(path, body).await.unwrap();
        assert_eq!(r.status().as_u16(), status, "{path}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v, json!({"error_msg": text}), "{path}");
    }
    let r = post("/model/add:add_common", "not json".into())
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert!(
        v["error_msg"]
            .as_str()
            .unwrap()
            .starts_with("Illegal JSON format.")
    );
    let r = http
        .get(common::rest(&server, "/model/add:add_common"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"error_msg": "http message only support POST right now"})
    );
    // A per-instance failure is a 200 with the error in its place.
    let mixed =
        json!({"instances": [{"x1": x, "x2": x}, {"x1": x, "x2": [1.0, 2.0, 3.0]}]}).to_string();
    let r = post("/model/add:add_common", mixed).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"instances": [{"y": [[2.0, 4.0], [6.0, 8.0]]}, {"error_msg": "Given model input 1 size 12 not match the size 16 defined in model"}]})
    );
    assert_eq!(
        post("/model/add:add_common", good).await.unwrap().status(),
        200
    );
    server.shutdown().await;
}

fn oip_req(model: &str, inputs: Vec<NamedTensor>) -> InferRequest {
    InferRequest {
        model_name: model.into(),
        inputs,
        ..Default::default()
    }
}

#[tokio::test]
async fn oip_errors_on_grpc_and_rest() {
    let repo = common::repository();
    let server = common::with_repository(repo.path()).await;
    let mut c = common::oip(&server).await;
    let x = |v: f32| NamedTensor::new("x1", f32s(&[2, 2], &[v; 4]));
    let y = NamedTensor::new("x2", f32s(&[2, 2], &[1.0; 4]));
    let cases = [
        (
            oip_req("nope", vec![x(1.0), y.clone()]),
            tonic::Code::NotFound,
            404,
        ),
        (
            InferRequest {
                model_version: "9".into(),
                ..oip_req("math", vec![x(1.0), y.clone()])
            },
            tonic::Code::NotFound,
            404,
        ),
        (
            oip_req("math", vec![x(1.0)]),
            tonic::Code::InvalidArgument,
            400,
        ),
        (
            oip_req(
                "math",
                vec![NamedTensor::new("x1", f32s(&[4], &[1.0; 4])), y.clone()],
            ),
            tonic::Code::InvalidArgument,
            400,
        ),
        (
            oip_req(
                "math",
                vec![
                    x(1.0),
                    y.clone(),
                    NamedTensor::new("x3", f32s(&[1], &[0.0])),
                ],
            ),
            tonic::Code::InvalidArgument,
            400,
        ),
        (
            oip_req("fail", vec![NamedTensor::new("x", f32s(&[4], &[1.0; 4]))]),
            tonic::Code::Internal,
            500,
        ),
    ];
    let http = common::http();
    for (req, code, status) in cases {
        let e = c
            .model_infer(oip::grpc::encode_request(&req, Contents::Raw).unwrap())
            .await
            .unwrap_err();
        assert_eq!(e.code(), code, "{}: {}", req.model_name, e.message());
        let path = if req.model_version.is_empty() {
            format!("/v2/models/{}/infer", req.model_name)
        } else {
            format!(
                "/v2/models/{}/versions/{}/infer",
                req.model_name, req.model_version
            )
        };
        let body = oip::rest::encode_request(&req, false).unwrap().to_bytes();
        let r = http
            .post(common::rest(&server, &path))
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), status, "{path}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(
            v["error"].as_str().unwrap(),
            e.message(),
            "the same text on both transports"
        );
    }
    // A malformed REST body and a bad binary header.
    let r = http
        .post(common::rest(&server, "/v2/models/math/infer"))
        .body("{")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = http
        .post(common::rest(&server, "/v2/models/math/infer"))
        .header("Inference-Header-Content-Length", "99999999999")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(
        r.json::<Value>().await.unwrap()["error"]
            .as_str()
            .unwrap()
            .contains("Inference-Header-Content-Length 99999999999 is invalid")
    );
    // Still serving, both versions.
    for (version, expected) in [("", 0.0f32), ("1", 2.0), ("2", 0.0)] {
        let req = InferRequest {
            model_version: version.into(),
            ..oip_req("math", vec![x(1.0), y.clone()])
        };
        let resp = c
            .model_infer(oip::grpc::encode_request(&req, Contents::Typed).unwrap())
            .await
            .unwrap();
        let resp = oip::grpc::decode_response(resp.into_inner()).unwrap();
        assert_eq!(
            resp.outputs[0].tensor.to_vec::<f32>().unwrap(),
            vec![expected; 4],
            "version '{version}'"
        );
    }
    server.shutdown().await;
}

#[tokio::test]
async fn unavailable_while_not_ready() {
    let server = common::demo().await;
    server.state.set_ready(false);
    let mut c = common::oip(&server).await;
    let req = oip_req(
        "add",
        vec![
            NamedTensor::new("x1", f32s(&[2, 2], &[1.0; 4])),
            NamedTensor::new("x2", f32s(&[2, 2], &[1.0; 4])),
        ],
    );
    let e = c
        .model_infer(oip::grpc::encode_request(&req, Contents::Raw).unwrap())
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unavailable);
    let http = common::http();
    assert_eq!(
        http.get(common::rest(&server, "/v2/health/ready"))
            .send()
            .await
            .unwrap()
            .status(),
        503
    );
    let body = oip::rest::encode_request(&req, false).unwrap().to_bytes();
    assert_eq!(
        http.post(common::rest(&server, "/v2/models/add/infer"))
            .body(body)
            .send()
            .await
            .unwrap()
            .status(),
        503
    );
    let r = http
        .post(common::rest(&server, "/model/add:add_common"))
        .body(
            json!({"instances": {"x1": [[1.0, 1.0], [1.0, 1.0]], "x2": [[1.0, 1.0], [1.0, 1.0]]}})
                .to_string(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    let mut ms = common::ms(&server).await;
    let good = instance(&[
        ("x1", f32s(&[2, 2], &[1.0; 4])),
        ("x2", f32s(&[2, 2], &[1.0; 4])),
    ]);
    let e = failed(ms_predict(&mut ms, "add", "add_common", 0, &[good]).await);
    assert_eq!(
        (e.code, e.message.as_str()),
        (
            5,
            "Request servable(add) method(add_common) , servable is not available"
        )
    );
    server.state.set_ready(true);
    server.shutdown().await;
}

#[tokio::test]
async fn grpc_deadline_exceeded() {
    use prost::Message;
    let server = common::demo().await;
    let req = oip_req(
        "add",
        vec![
            NamedTensor::new("x1", f32s(&[2, 2], &[1.0; 4])),
            NamedTensor::new("x2", f32s(&[2, 2], &[1.0; 4])),
        ],
    );
    let message = oip::grpc::encode_request(&req, Contents::Raw)
        .unwrap()
        .encode_to_vec();
    let path = "/inference.GRPCInferenceService/ModelInfer";
    // An expired deadline never runs (a bare HTTP/2 client, so that no
    // client-side timer answers first).
    let (code, text) = common::raw_grpc(&server, path, &message, &[("grpc-timeout", "0n")]).await;
    assert_eq!(code, tonic::Code::DeadlineExceeded as i32, "{text}");
    assert!(text.contains("grpc-timeout"), "{text}");
    let (code, _) = common::raw_grpc(&server, path, &message, &[("grpc-timeout", "30S")]).await;
    assert_eq!(code, 0);
    // A tonic client's own deadline works end to end.
    let mut c = common::oip(&server).await;
    let mut generous = tonic::Request::new(oip::grpc::encode_request(&req, Contents::Raw).unwrap());
    generous.set_timeout(Duration::from_secs(30));
    assert!(c.model_infer(generous).await.is_ok());
    server.shutdown().await;
}

#[tokio::test]
async fn malformed_oip_tensors_are_invalid_arguments() {
    use serving_proto::pb::inference::{ModelInferRequest, model_infer_request::InferInputTensor};
    let server = common::demo().await;
    let mut c = common::oip(&server).await;
    let input = |datatype: &str, shape: Vec<i64>| InferInputTensor {
        name: "x1".into(),
        datatype: datatype.into(),
        shape,
        ..Default::default()
    };
    let cases = [
        (
            input("FP32", vec![-1, 2]),
            vec![Bytes::new()],
            "invalid shape [-1, 2]",
        ),
        (
            input("FP32", vec![i64::MAX, 4]),
            vec![Bytes::new()],
            "invalid shape",
        ),
        (
            input("FP99", vec![2, 2]),
            vec![Bytes::from_static(&[0; 16])],
            "unknown datatype 'FP99'",
        ),
        (
            input("FP32", vec![2, 2]),
            vec![Bytes::from_static(&[0; 15])],
            "must be 16 bytes but is 15",
        ),
    ];
    for (tensor, raw, text) in cases {
        let req = ModelInferRequest {
            model_name: "add".into(),
            inputs: vec![tensor],
            raw_input_contents: raw,
            ..Default::default()
        };
        let e = c.model_infer(req).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{}", e.message());
        assert!(e.message().contains(text), "{}", e.message());
    }
    assert!(
        c.server_live(serving_proto::pb::inference::ServerLiveRequest {})
            .await
            .unwrap()
            .into_inner()
            .live
    );
    server.shutdown().await;
}
