//! The built-in demo over REST: MindSpore routes and OIP `/v2` routes, JSON
//! and the binary tensor extension, against a real server.

mod common;

use bytes::Bytes;
use serde_json::{Value, json};
use serving_proto::Tensor;
use serving_proto::oip::rest as codec;
use serving_proto::oip::{InferRequest, NamedTensor, Parameter};

#[tokio::test]
async fn mindspore_rest_add_common_and_add_cast() {
    let server = common::demo().await;
    let http = common::http();
    let x = json!([[1.0, 2.0], [3.0, 4.0]]);
    let body =
        json!({"instances": [{"x1": x, "x2": x}, {"x1": x, "x2": [[0.5, 0.5], [0.5, 0.5]]}]});
    let r = http
        .post(common::rest(&server, "/model/add:add_common"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/json");
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        v,
        json!({"instances": [{"y": [[2.0, 4.0], [6.0, 8.0]]}, {"y": [[1.5, 2.5], [3.5, 4.5]]}]})
    );
    // Version in the path. Segments in another order, which MindSpore's
    // substring parsing accepts, are no MindSpore URL here (see
    // docs/deviations.md): a 404 of the REST port.
    let body = json!({"instances": {"x1": [[1, 2], [3, 4]], "x2": [[1, 1], [1, 1]]}});
    let r = http
        .post(common::rest(&server, "/version/0/model/add:add_cast"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let v: Value = r.json().await.unwrap();
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .starts_with("no route for POST /version/0/model/add:add_cast"),
        "{v}"
    );
    for path in [
        "/model/add/version/1:add_cast",
        "/model/add/version/0:add_cast",
    ] {
        let v: Value = http
            .post(common::rest(&server, path))
            .json(&body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(
            v,
            json!({"instances": [{"y": [[2.0, 3.0], [4.0, 5.0]]}]}),
            "{path}"
        );
    }
    // b64 objects carry exact float32 values.
    let body = json!({"instances": {"x1": {"b64": "AACAPwAAAEAAAEBAAACAQA==", "type": "fp32", "shape": [2, 2]}, "x2": x}});
    let v: Value = http
        .post(common::rest(&server, "/model/add:add_common"))
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v, json!({"instances": [{"y": [[2.0, 4.0], [6.0, 8.0]]}]}));
    server.shutdown().await;
}

#[tokio::test]
async fn oip_rest_json_and_binary() {
    let server = common::demo().await;
    let http = common::http();
    let body = json!({"id": "abc", "inputs": [
        {"name": "x1", "shape": [2, 2], "datatype": "FP32", "data": [[1, 2], [3, 4]]},
        {"name": "x2", "shape": [2, 2], "datatype": "FP32", "data": [1, 1, 1, 1]}]});
    let r = http
        .post(common::rest(&server, "/v2/models/add/infer"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        v,
        json!({"model_name": "add", "model_version": "1", "id": "abc",
        "outputs": [{"name": "y", "datatype": "FP32", "shape": [2, 2], "data": [2.0, 3.0, 4.0, 5.0]}]})
    );
    // Binary in, binary out, through the versioned route.
    let req = InferRequest {
        parameters: [(codec::BINARY_DATA_OUTPUT.to_string(), Parameter::Bool(true))].into(),
        inputs: vec![
            NamedTensor::new(
                "x1",
                Tensor::from_slice(&[2, 2], &[1f32, 2.0, 3.0, 4.0]).unwrap(),
            ),
            NamedTensor::new("x2", Tensor::from_slice(&[2, 2], &[0.25f32; 4]).unwrap()),
        ],
        ..Default::default()
    };
    let body = codec::encode_request(&req, true).unwrap();
    let r = http
        .post(common::rest(&server, "/v2/models/add/versions/1/infer"))
        .header(codec::HEADER_LENGTH, body.header_len.unwrap())
        .header("content-type", body.content_type())
        .body(body.to_bytes())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let header_len: usize = r.headers()[codec::HEADER_LENGTH]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let bytes = r.bytes().await.unwrap();
    let resp = codec::decode_response(bytes, Some(header_len)).unwrap();
    assert_eq!(
        resp.outputs[0].tensor.to_vec::<f32>().unwrap(),
        vec![1.25, 2.25, 3.25, 4.25]
    );
    server.shutdown().await;
}

#[tokio::test]
async fn oip_rest_health_and_metadata() {
    let server = common::demo().await;
    let http = common::http();
    let get = |path: &str| http.get(common::rest(&server, path)).send();
    let r = get("/v2/health/live").await.unwrap();
    assert_eq!(r.status(), 200);
    let r = get("/v2/health/ready").await.unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = get("/v2").await.unwrap().json().await.unwrap();
    assert_eq!(v["name"], "serving-reference-server");
    let v: Value = get("/v2/models/add").await.unwrap().json().await.unwrap();
    assert_eq!(
        v["inputs"][0],
        json!({"name": "x1", "datatype": "FP32", "shape": [2, 2]})
    );
    assert_eq!(v["versions"], json!(["1"]));
    assert_eq!(
        get("/v2/models/add/versions/1").await.unwrap().status(),
        200
    );
    assert_eq!(get("/v2/models/add/ready").await.unwrap().status(), 200);
    assert_eq!(
        get("/v2/models/add/versions/1/ready")
            .await
            .unwrap()
            .status(),
        200
    );
    let r = get("/v2/models/nope/ready").await.unwrap();
    assert_eq!(r.status(), 404);
    let v: Value = r.json().await.unwrap();
    // Triton's text, which scripts and tritonclient's examples match.
    assert_eq!(
        v,
        json!({"error": "Request for unknown model: 'nope' is not found"})
    );
    let _ = Bytes::new();
    server.shutdown().await;
}
