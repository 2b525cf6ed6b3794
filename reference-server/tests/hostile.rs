//! Hostile clients: what an attacker tries with hand-built HTTP/1.1, raw
//! HTTP/2 and protobuf bytes (Triton's qa/L0_http and its 2025-26 CVEs are
//! the catalogue), each case followed by a check that the server is still
//! live and still answers correctly.

mod common;

use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use reference_server::server::{Config, Running};
use serde_json::{Value, json};
use serving_proto::compression::{self, Encoding};
use serving_proto::pb::inference as oip_pb;
use serving_proto::pb::mindspore as ms_pb;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TOKEN: &str = "secret";
const INFER_BODY: &str = r#"{"inputs":[{"name":"x1","shape":[2,2],"datatype":"FP32","data":[1,2,3,4]},{"name":"x2","shape":[2,2],"datatype":"FP32","data":[1,2,3,4]}]}"#;
const MS_BODY: &str = r#"{"instances":[{"x1":[[1.0,2.0],[3.0,4.0]],"x2":[[1.0,2.0],[3.0,4.0]]}]}"#;

/// One HTTP/1.1 exchange written byte for byte (no client normalises the
/// path): the status, the headers (lower-case names) and the body.
async fn raw_http(
    server: &Running,
    head: &str,
    body: &[u8],
) -> (u16, Vec<(String, String)>, String) {
    let mut tcp = tokio::net::TcpStream::connect(server.rest_address)
        .await
        .unwrap();
    tcp.write_all(head.as_bytes()).await.unwrap();
    tcp.write_all(body).await.unwrap();
    read_response(&mut tcp, head.starts_with("HEAD ")).await
}

async fn read_response(
    tcp: &mut tokio::net::TcpStream,
    head_only: bool,
) -> (u16, Vec<(String, String)>, String) {
    let mut buf = Vec::new();
    let head_end = loop {
        let mut chunk = [0u8; 8192];
        let n = tokio::time::timeout(Duration::from_secs(10), tcp.read(&mut chunk))
            .await
            .expect("an answer within 10 s")
            .unwrap();
        assert!(
            n > 0,
            "the connection closed without an answer: {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let len: usize = match headers.iter().find(|(k, _)| k == "content-length") {
        Some((_, v)) if !head_only => v.parse().unwrap(),
        _ => 0,
    };
    while buf.len() < head_end + len {
        let mut chunk = [0u8; 8192];
        let n = tcp.read(&mut chunk).await.unwrap();
        assert!(n > 0);
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = String::from_utf8_lossy(&buf[head_end..head_end + len]).into_owned();
    (status, headers, body)
}

fn request(method: &str, path: &str, extra: &str, body: &str) -> (String, Vec<u8>) {
    (
        format!(
            "{method} {path} HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n{extra}\r\n",
            body.len()
        ),
        body.as_bytes().to_vec(),
    )
}

async fn send(
    server: &Running,
    method: &str,
    path: &str,
    extra: &str,
    body: &str,
) -> (u16, Vec<(String, String)>, String) {
    let (head, body) = request(method, path, extra, body);
    raw_http(server, &head, &body).await
}

/// The server is live and computes the demo's sum on both ports.
async fn still_serving(server: &Running, token: Option<&str>) {
    let auth = token.map_or(String::new(), |t| format!("authorization: Bearer {t}\r\n"));
    let (status, _, body) = send(server, "POST", "/v2/models/add/infer", &auth, INFER_BODY).await;
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["outputs"][0]["data"], json!([2.0, 4.0, 6.0, 8.0]));
    let (status, _, body) = send(server, "POST", "/model/add:add_common", &auth, MS_BODY).await;
    assert_eq!(
        (status, body.as_str()),
        (200, r#"{"instances":[{"y":[[2.0,4.0],[6.0,8.0]]}]}"#)
    );
    let mut headers = vec![];
    if let Some(t) = token {
        headers.push(("authorization", format!("Bearer {t}")));
    }
    let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (code, message) = common::raw_grpc(
        server,
        "/inference.GRPCInferenceService/ServerLive",
        &[],
        &headers,
    )
    .await;
    assert_eq!(code, 0, "{message}");
}

/// Every REST route of both protocols, as (method, path, body).
const REST_ROUTES: &[(&str, &str, &str)] = &[
    ("GET", "/v2", ""),
    ("GET", "/v2/models/add", ""),
    ("GET", "/v2/models/add/ready", ""),
    ("POST", "/v2/models/add/infer", INFER_BODY),
    ("GET", "/v2/models/add/versions/1", ""),
    ("GET", "/v2/models/add/versions/1/ready", ""),
    ("POST", "/v2/models/add/versions/1/infer", INFER_BODY),
    ("GET", "/metrics", ""),
    ("POST", "/v2/repository/index", ""),
    ("POST", "/v2/repository/models/add/load", ""),
    ("POST", "/v2/repository/models/add/unload", ""),
    ("GET", "/v2/models/add/config", ""),
    ("GET", "/v2/models/add/versions/1/config", ""),
    ("GET", "/v2/models/stats", ""),
    ("GET", "/v2/models/add/stats", ""),
    ("GET", "/v2/models/add/versions/1/stats", ""),
    ("GET", "/v2/systemsharedmemory/status", ""),
    ("GET", "/v2/systemsharedmemory/region/r/status", ""),
    ("POST", "/v2/systemsharedmemory/region/r/register", ""),
    ("POST", "/v2/systemsharedmemory/unregister", ""),
    ("POST", "/v2/systemsharedmemory/region/r/unregister", ""),
    ("GET", "/v2/cudasharedmemory/status", ""),
    ("POST", "/model/add:add_common", MS_BODY),
    ("POST", "/model/add/version/1:add_common", MS_BODY),
];

/// Paths that try to pass for a health check, or to reach a servable past
/// a prefix rule.
const PATH_TRICKS: &[&str] = &[
    "/v2/health/model/add:add_common",
    "/v2/health/../model/add:add_common",
    "/v2/health/live/../../model/add:add_common",
    "/v2/health/ready/model/add:add_common",
    "/v2/health/../models/add/infer",
    "/v2/health/%2e%2e/models/add/infer",
    "/v2/health/%2E%2E/models/add/infer",
    "/v2/health/live/",
    "/v2/health/live/x",
    "/v2/health/live%2f..%2fmodels%2fadd%2finfer",
    "/v2/health//live",
    "//v2/health/live",
    "/V2/health/live",
    "/v2/Health/live",
    "/v2/health/LIVE",
    "/v2/health/",
    "/v2/health",
    "/v2/health/livex",
    "/v2/models/add/infer/",
    "//model/add:add_common",
    "/./model/add:add_common",
    "/Model/add:add_common",
    "/x/../model/add:add_common",
    "*",
];

#[tokio::test]
async fn the_token_guards_every_route_and_path_variant_but_the_two_health_checks() {
    let server = common::start(Config {
        auth_token: Some(TOKEN.into()),
        ..common::config()
    })
    .await;
    let mut walked = 0;
    for &(method, path, body) in REST_ROUTES {
        for m in [
            method, "GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD",
        ] {
            let (status, headers, text) = send(&server, m, path, "", body).await;
            assert_eq!(status, 401, "{m} {path}: {text}");
            assert!(
                headers.contains(&("www-authenticate".into(), "Bearer".into())),
                "{m} {path}"
            );
            walked += 1;
        }
    }
    for &path in PATH_TRICKS {
        for m in ["GET", "POST"] {
            let (status, _, text) = send(&server, m, path, "", MS_BODY).await;
            assert_eq!(status, 401, "{m} {path}: {text}");
            walked += 1;
        }
    }
    // A wrong token, a token in another scheme, a token with a suffix.
    for auth in [
        "authorization: Bearer wrong\r\n",
        "authorization: Basic c2VjcmV0\r\n",
        "authorization: Bearer secretx\r\n",
        "authorization: bearer secret\r\n",
        "authorization: Bearer  secret\r\n",
    ] {
        let (status, _, _) = send(&server, "POST", "/v2/models/add/infer", auth, INFER_BODY).await;
        assert_eq!(status, 401, "{auth}");
    }
    // A refused request is refused before its body is read: a client
    // announcing 100 MiB and sending nothing gets its 401 at once.
    let (status, _, _) = raw_http(
        &server,
        "POST /v2/health/../models/add/infer HTTP/1.1\r\nhost: x\r\ncontent-length: 104857600\r\n\r\n",
        b"",
    )
    .await;
    assert_eq!(status, 401);
    // Only the two documented health routes are open.
    for path in [
        "/v2/health/live",
        "/v2/health/ready",
        "/v2/health/live?x=/../model/add:add_common",
    ] {
        let (status, _, body) = send(&server, "GET", path, "", "").await;
        assert_eq!(status, 200, "{path}: {body}");
    }
    // gRPC: every RPC and the same tricks, UNAUTHENTICATED (16) without a
    // token; the health service's two RPCs open.
    let rpcs = [
        "/mindspore.serving.proto.MSService/Predict",
        "/inference.GRPCInferenceService/ServerLive",
        "/inference.GRPCInferenceService/ServerReady",
        "/inference.GRPCInferenceService/ModelReady",
        "/inference.GRPCInferenceService/ServerMetadata",
        "/inference.GRPCInferenceService/ModelMetadata",
        "/inference.GRPCInferenceService/ModelInfer",
        "/inference.GRPCInferenceService/ModelStreamInfer",
        "/inference.GRPCInferenceService/ModelConfig",
        "/inference.GRPCInferenceService/ModelStatistics",
        "/inference.GRPCInferenceService/RepositoryIndex",
        "/inference.GRPCInferenceService/RepositoryModelLoad",
        "/inference.GRPCInferenceService/RepositoryModelUnload",
        "/inference.GRPCInferenceService/SystemSharedMemoryStatus",
        "/inference.GRPCInferenceService/SystemSharedMemoryRegister",
        "/inference.GRPCInferenceService/SystemSharedMemoryUnregister",
        "/inference.GRPCInferenceService/CudaSharedMemoryStatus",
        "/inference.GRPCInferenceService/TraceSetting",
        "/inference.GRPCInferenceService/NoSuchRpc",
        "/grpc.health.v1.Health/Check/",
        "/grpc.health.v1.Health/CheckX",
        "/grpc.health.v1.Health//Check",
        "/Grpc.health.v1.Health/Check",
        "/grpc.health.v1.Health/../inference.GRPCInferenceService/ModelInfer",
        "/grpc.health.v1.Health/%2e%2e/inference.GRPCInferenceService/ModelInfer",
        "/grpc.health.v1.Health/Check/../../inference.GRPCInferenceService/ServerLive",
    ];
    for rpc in rpcs {
        let (code, message) = common::raw_grpc(&server, rpc, &[], &[]).await;
        assert_eq!(code, 16, "{rpc}: {message}");
        walked += 1;
    }
    let (code, message) = common::raw_grpc(&server, "/grpc.health.v1.Health/Check", &[], &[]).await;
    assert_eq!(code, 0, "{message}");
    println!("{walked} requests without the token, all refused");
    still_serving(&server, Some(TOKEN)).await;
    server.shutdown().await;
}

#[tokio::test]
async fn unknown_paths_are_oip_404s_and_wrong_methods_405s() {
    let server = common::demo().await;
    let oip_error = |body: &str| -> String {
        let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
        assert_eq!(v.as_object().unwrap().len(), 1, "{body}");
        v["error"]
            .as_str()
            .unwrap_or_else(|| panic!("no 'error' in {body}"))
            .to_owned()
    };
    for (method, path) in [
        ("GET", "/v2/models/add/labels"),
        ("GET", "/v2/models/add/versions/1/stats/x"),
        ("POST", "/x/:add_common"),
        ("POST", "/v2/health/model/add:add_common"),
        ("POST", "/v2/health/../model/add:add_common"),
        ("POST", "/v2/health/../models/add/infer"),
        ("POST", "//model/add:add_common"),
        ("POST", "/prefix/model/add:add_common"),
        ("POST", "/version/0/model/add:add_common"),
        ("GET", "/"),
    ] {
        let (status, _, body) = send(&server, method, path, "", MS_BODY).await;
        assert_eq!(status, 404, "{method} {path}: {body}");
        let text = oip_error(&body);
        assert!(
            text.starts_with(&format!("no route for {method} ")),
            "{text}"
        );
        assert!(!text.contains("only support POST"), "{text}");
    }
    for (method, path) in [
        ("GET", "/v2/models/add/infer"),
        ("POST", "/v2/health/live"),
        ("DELETE", "/v2/models/add"),
        ("GET", "/v2/repository/index"),
    ] {
        let (status, _, body) = send(&server, method, path, "", "").await;
        assert_eq!(status, 405, "{method} {path}: {body}");
        assert_eq!(
            oip_error(&body),
            format!("method {method} is not allowed on {path}")
        );
    }
    // MindSpore's grammar keeps MindSpore's texts.
    let (status, _, body) = send(&server, "GET", "/model/add:add_common", "", "").await;
    assert_eq!(
        (status, body.as_str()),
        (
            405,
            r#"{"error_msg":"http message only support POST right now"}"#
        )
    );
    let (status, _, body) = send(&server, "POST", "/model/add/extra:add_common", "", MS_BODY).await;
    assert_eq!(status, 400);
    assert_eq!(
        body,
        r#"{"error_msg":"please check url, unexpected segment 'extra': the url must be /model/{servable}[/version/{N}]:{method}"}"#
    );
    // A long path is quoted, not echoed.
    let long = format!("/{}", "p".repeat(60_000));
    let (status, _, body) = send(&server, "GET", &long, "", "").await;
    assert_eq!(status, 404);
    assert!(body.len() < 1024, "{} bytes", body.len());
    still_serving(&server, None).await;
    server.shutdown().await;
}

#[tokio::test]
async fn a_content_encoding_the_server_does_not_inflate_is_415_on_every_route() {
    let server = common::demo().await;
    for coding in [
        "br",
        "x-unknown",
        "zstd",
        "gzip, deflate",
        "identity, gzip, gzip",
    ] {
        for &(method, path, body) in REST_ROUTES {
            let (status, headers, text) = send(
                &server,
                method,
                path,
                &format!("content-encoding: {coding}\r\n"),
                body,
            )
            .await;
            assert_eq!(status, 415, "{coding} {method} {path}: {text}");
            assert!(text.contains("Content-Encoding '"), "{text}");
            assert!(
                headers.contains(&("accept-encoding".into(), "gzip, deflate, identity".into()))
            );
            let key = if path.starts_with("/model") {
                "error_msg"
            } else {
                "error"
            };
            assert!(
                serde_json::from_str::<Value>(&text).unwrap()[key].is_string(),
                "{text}"
            );
        }
    }
    let (_, _, text) = send(
        &server,
        "POST",
        "/v2/models/add/infer",
        "content-encoding: br\r\n",
        INFER_BODY,
    )
    .await;
    assert_eq!(
        serde_json::from_str::<Value>(&text).unwrap()["error"],
        "Content-Encoding 'br' is not supported: send the body as gzip, deflate or uncompressed (identity)"
    );
    let long = format!("content-encoding: {}\r\n", "z".repeat(20_000));
    let (status, _, text) = send(&server, "POST", "/v2/models/add/infer", &long, INFER_BODY).await;
    assert_eq!(status, 415);
    assert!(text.len() < 512);
    // gzip and deflate (any case) inflate; identity is no coding.
    for (coding, encoding) in [
        ("gzip", Encoding::Gzip),
        ("GZIP", Encoding::Gzip),
        ("deflate", Encoding::Deflate),
        ("identity, deflate", Encoding::Deflate),
    ] {
        let packed = compression::compress(encoding, INFER_BODY.as_bytes());
        let (head, _) = request(
            "POST",
            "/v2/models/add/infer",
            &format!("content-encoding: {coding}\r\n"),
            "",
        );
        let head = head.replace(
            "content-length: 0",
            &format!("content-length: {}", packed.len()),
        );
        let (status, _, text) = raw_http(&server, &head, &packed).await;
        assert_eq!(status, 200, "{coding}: {text}");
    }
    let (status, _, _) = send(
        &server,
        "POST",
        "/v2/models/add/infer",
        "content-encoding: identity\r\n",
        INFER_BODY,
    )
    .await;
    assert_eq!(status, 200);
    still_serving(&server, None).await;
    server.shutdown().await;
}

fn oip_request(model: &str, tensor: &str) -> oip_pb::ModelInferRequest {
    oip_pb::ModelInferRequest {
        model_name: model.into(),
        inputs: vec![oip_pb::model_infer_request::InferInputTensor {
            name: tensor.into(),
            datatype: "FP32".into(),
            shape: vec![2, 2],
            ..Default::default()
        }],
        raw_input_contents: vec![Bytes::from(vec![0u8; 16])],
        ..Default::default()
    }
}

#[tokio::test]
async fn error_texts_quote_request_values_within_a_bound() {
    let server = common::demo().await;
    let huge = "m".repeat(1 << 20);
    let bound = 1024;
    // OIP gRPC: the client reads the status (a 1 MiB grpc-message made
    // tonic fail with "metadata size exceeds hard limit").
    let mut oip = common::oip(&server).await;
    let s = oip.model_infer(oip_request(&huge, "x1")).await.unwrap_err();
    assert_eq!(s.code(), tonic::Code::NotFound, "{s}");
    assert!(
        s.message().len() < bound && s.message().starts_with("Request for unknown model: 'mmmm"),
        "{}",
        s.message().len()
    );
    for call in [
        oip.model_metadata(oip_pb::ModelMetadataRequest {
            name: huge.clone(),
            version: String::new(),
        })
        .await
        .map(|_| ()),
        oip.model_ready(oip_pb::ModelReadyRequest {
            name: "add".into(),
            version: huge.clone(),
        })
        .await
        .map(|_| ()),
        oip.model_infer(oip_request("add", &huge)).await.map(|_| ()),
    ] {
        let s = call.unwrap_err();
        assert!(
            s.message().len() < bound,
            "{:?}: {} bytes",
            s.code(),
            s.message().len()
        );
    }
    // MindSpore gRPC: in-band texts.
    let mut ms = common::ms(&server).await;
    let mut instance = ms_pb::Instance::default();
    instance.items.insert(
        huge.clone(),
        ms_pb::Tensor {
            dtype: 99,
            ..Default::default()
        },
    );
    for (servable, method, instances) in [
        (
            huge.as_str(),
            "add_common",
            vec![ms_pb::Instance::default()],
        ),
        ("add", huge.as_str(), vec![ms_pb::Instance::default()]),
        ("add", "add_common", vec![instance]),
        (huge.as_str(), huge.as_str(), vec![]),
    ] {
        let reply = ms
            .predict(ms_pb::PredictRequest {
                servable_spec: Some(ms_pb::ServableSpec {
                    name: servable.into(),
                    method_name: method.into(),
                    version_number: 0,
                }),
                instances,
            })
            .await
            .unwrap()
            .into_inner();
        let text = &reply.error_msg[0].error_msg;
        assert!(
            text.len() < bound,
            "{} bytes: {}",
            text.len(),
            String::from_utf8_lossy(&text[..100])
        );
    }
    // REST, both protocols: names and values inside the body.
    let cases = [
        ("/v2/models/add/infer", json!({"inputs": [{"name": huge, "shape": [1], "datatype": "FP32", "data": [1]}]}).to_string()),
        ("/v2/models/add/infer", json!({"inputs": [{"name": "x1", "shape": [1], "datatype": huge, "data": [1]}]}).to_string()),
        ("/v2/models/add/infer", json!({"inputs": [{"name": "x1", "shape": vec![1; 100_000], "datatype": "FP32", "data": [1]}]}).to_string()),
        ("/v2/models/add/infer", json!({"inputs": [{"name": "x1", "shape": [2], "datatype": "FP32", "data": [1, 2]}], "parameters": {huge.clone(): [1]}}).to_string()),
        ("/model/add:add_common", json!({"instances": [{"x1": {"b64": huge}}]}).to_string()),
        ("/model/add:add_common", json!({"instances": [{"x1": {"b64": "AA==", huge.clone(): 1}}]}).to_string()),
        ("/model/add:add_common", json!({"instances": [{"x1": {"b64": "AA==", "type": huge}}]}).to_string()),
    ];
    for (path, body) in cases {
        let (status, _, text) = send(&server, "POST", path, "", &body).await;
        assert!((400..500).contains(&status), "{path}: {status}");
        assert!(
            text.len() < bound,
            "{path}: {} bytes: {}",
            text.len(),
            &text[..200]
        );
    }
    for (path, body) in [
        (format!("/model/{}:add_common", "s".repeat(60_000)), MS_BODY),
        (
            format!("/v2/models/{}/infer", "s".repeat(60_000)),
            INFER_BODY,
        ),
    ] {
        let (status, _, text) = send(&server, "POST", &path, "", body).await;
        assert_eq!(status, 404);
        assert!(text.len() < bound, "{} bytes", text.len());
    }
    // Unknown names do not grow the metrics.
    let metrics = common::metrics(&server).await;
    assert!(
        !metrics.contains("mmmmmmmm") && !metrics.contains("ssssssss"),
        "{} bytes of metrics",
        metrics.len()
    );
    still_serving(&server, None).await;
    server.shutdown().await;
}

#[tokio::test]
async fn duplicate_requested_outputs_are_refused_on_both_transports() {
    let server = common::demo().await;
    let body = json!({
        "inputs": serde_json::from_str::<Value>(INFER_BODY).unwrap()["inputs"],
        "outputs": [{"name": "y"}, {"name": "y"}],
    })
    .to_string();
    let (status, _, text) = send(&server, "POST", "/v2/models/add/infer", "", &body).await;
    assert_eq!(
        (status, text.as_str()),
        (400, r#"{"error":"output 'y' is requested more than once"}"#)
    );
    let mut req = oip_request("add", "x1");
    req.inputs
        .push(oip_pb::model_infer_request::InferInputTensor {
            name: "x2".into(),
            datatype: "FP32".into(),
            shape: vec![2, 2],
            ..Default::default()
        });
    req.raw_input_contents.push(Bytes::from(vec![0u8; 16]));
    let y = oip_pb::model_infer_request::InferRequestedOutputTensor {
        name: "y".into(),
        ..Default::default()
    };
    req.outputs = vec![y.clone(), y.clone()];
    let s = common::oip(&server)
        .await
        .model_infer(req.clone())
        .await
        .unwrap_err();
    assert_eq!(s.code(), tonic::Code::InvalidArgument);
    assert_eq!(s.message(), "output 'y' is requested more than once");
    req.outputs = vec![y];
    let reply = common::oip(&server)
        .await
        .model_infer(req)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.outputs.len(), 1);
    still_serving(&server, None).await;
    server.shutdown().await;
}

/// A gRPC stream on its own HTTP/2 connection that sends a frame header
/// claiming `claimed` bytes and `sent` bytes of it, then stalls until
/// dropped.
struct Stalled {
    _body: tokio::sync::mpsc::Sender<Result<http_body::Frame<Bytes>, std::convert::Infallible>>,
    _response: tokio::task::JoinHandle<()>,
}

/// A bare HTTP/2 connection to the gRPC port, its driver spawned.
async fn h2<B>(
    server: &Running,
) -> (
    hyper::client::conn::http2::SendRequest<B>,
    tokio::task::JoinHandle<Result<(), hyper::Error>>,
)
where
    B: http_body::Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let tcp = tokio::net::TcpStream::connect(server.grpc_address)
        .await
        .unwrap();
    let (send, conn) =
        hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
            .initial_stream_window_size(8 << 20)
            .initial_connection_window_size(64 << 20)
            .handshake(hyper_util::rt::TokioIo::new(tcp))
            .await
            .unwrap();
    (send, tokio::spawn(conn))
}

/// A minimal `Stream` over a tokio channel (no tokio-stream dependency).
mod tokio_stream_shim {
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use bytes::Bytes;

    type Item = Result<http_body::Frame<Bytes>, std::convert::Infallible>;

    pub struct Receiver(pub tokio::sync::mpsc::Receiver<Item>);

    impl futures_util::Stream for Receiver {
        type Item = Item;
        fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Item>> {
            self.0.poll_recv(cx)
        }
    }
}

async fn stall(
    send: &mut hyper::client::conn::http2::SendRequest<
        http_body_util::StreamBody<tokio_stream_shim::Receiver>,
    >,
    server: &Running,
    claimed: u32,
    sent: usize,
) -> Stalled {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let mut first = vec![0u8];
    first.extend_from_slice(&claimed.to_be_bytes());
    first.extend(std::iter::repeat_n(7u8, sent));
    tx.send(Ok(http_body::Frame::data(Bytes::from(first))))
        .await
        .unwrap();
    let req = http::Request::post(format!(
        "http://{}/inference.GRPCInferenceService/ModelInfer",
        server.grpc_address
    ))
    .header("content-type", "application/grpc")
    .header("te", "trailers")
    .body(http_body_util::StreamBody::new(
        tokio_stream_shim::Receiver(rx),
    ))
    .unwrap();
    send.ready().await.unwrap();
    let response = send.send_request(req);
    Stalled {
        _body: tx,
        _response: tokio::spawn(async move {
            let _ = response.await;
        }),
    }
}

async fn settle(what: &str, mut done: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !done() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_requests_hold_what_they_sent_within_a_server_wide_budget() {
    let repo = common::repository();
    let server = common::start(Config {
        model_repository: Some(repo.path().to_owned()),
        max_msg_mb_size: 8,
        max_incoming_mb: 8,
        ..common::config()
    })
    .await;
    let budget = &server.state.incoming;
    // 100 streams on 4 connections, each claiming 7.9 MiB and sending
    // 60 KiB: they hold what they sent (5.9 MiB of the 8 MiB budget).
    let mut conns = Vec::new();
    for _ in 0..4 {
        conns.push(h2(&server).await.0);
    }
    let mut stalled = Vec::new();
    let sent = 60 << 10;
    for i in 0..100 {
        let claimed = (8 << 20) - 100_000;
        stalled.push(stall(&mut conns[i % 4], &server, claimed, sent).await);
    }
    settle("the stalled streams to be read", || {
        budget.held() >= 100 * sent as u64
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let held = budget.held();
    println!(
        "100 stalled streams claiming 7.9 MiB each hold {held} bytes ({} per stream)",
        held / 100
    );
    // Each stream's 60 KiB arrived in one small frame, copied into a
    // staging buffer charged at its capacity (the next power of two).
    assert_eq!(
        held,
        100 * sent.next_power_of_two() as u64,
        "held what was sent, in buffers of its size, nothing more"
    );
    // A real request of 5 MiB needs more than the budget has left: refused
    // with UNAVAILABLE and the numbers, not queued behind the stalled ones.
    let mut oip = common::oip(&server).await;
    let big = || oip_pb::ModelInferRequest {
        model_name: "size".into(),
        inputs: vec![oip_pb::model_infer_request::InferInputTensor {
            name: "x".into(),
            datatype: "UINT8".into(),
            shape: vec![5 << 20],
            ..Default::default()
        }],
        raw_input_contents: vec![Bytes::from(vec![1u8; 5 << 20])],
        ..Default::default()
    };
    let s = oip.model_infer(big()).await.unwrap_err();
    assert_eq!(s.code(), tonic::Code::Unavailable, "{s}");
    assert!(
        s.message().starts_with("the server holds ") && s.message().ends_with("retry later"),
        "{}",
        s.message()
    );
    // Closing the stalled streams gives everything back.
    drop(stalled);
    drop(conns);
    settle("the budget to be given back", || budget.held() == 0).await;
    let reply = oip.model_infer(big()).await.unwrap().into_inner();
    assert_eq!(reply.raw_output_contents[0][..], (5i64 << 20).to_le_bytes());
    // REST: a body announced as 7 MiB of which 300 KiB arrive, then a stall.
    let mut tcp = tokio::net::TcpStream::connect(server.rest_address)
        .await
        .unwrap();
    tcp.write_all(
        b"POST /v2/models/size/infer HTTP/1.1\r\nhost: x\r\ncontent-length: 7340032\r\n\r\n",
    )
    .await
    .unwrap();
    for _ in 0..30 {
        tcp.write_all(&[b' '; 10 << 10]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    settle("the REST body to be read", || budget.held() > 0).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let held = budget.held();
    // Small reads are copied into one staging buffer charged at its
    // capacity: at most the next power of two of what arrived.
    assert!(
        held <= (300usize * 1024).next_power_of_two() as u64,
        "REST: {held} bytes held for 300 KiB received"
    );
    drop(tcp);
    settle("the REST budget to be given back", || budget.held() == 0).await;
    let reply = oip.model_infer(big()).await.unwrap().into_inner();
    assert_eq!(reply.raw_output_contents[0][..], (5i64 << 20).to_le_bytes());

    server.shutdown().await;
}

#[tokio::test]
async fn malformed_headers_shapes_and_bodies_are_refused_and_the_server_stays_up() {
    let server = common::demo().await;
    // Inference-Header-Content-Length out of range.
    for value in [
        "-1",
        "99999999999999999999",
        "abc",
        "1000",
        " 5",
        "0x10",
        "1e3",
    ] {
        let (status, _, text) = send(
            &server,
            "POST",
            "/v2/models/add/infer",
            &format!("inference-header-content-length: {value}\r\n"),
            INFER_BODY,
        )
        .await;
        assert_eq!(status, 400, "{value}: {text}");
    }
    // Shape products that overflow, on REST and gRPC.
    for shape in [
        json!([4611686018427387904i64, 4]),
        json!([9223372036854775807i64, 2]),
        json!([65536, 65536, 65536, 65536]),
    ] {
        let body =
            json!({"inputs": [{"name": "x1", "shape": shape, "datatype": "FP32", "data": [1]}]})
                .to_string();
        let (status, _, text) = send(&server, "POST", "/v2/models/add/infer", "", &body).await;
        assert_eq!(status, 400, "{shape}: {text}");
    }
    let mut req = oip_request("add", "x1");
    req.inputs[0].shape = vec![i64::MAX, 2];
    let s = common::oip(&server)
        .await
        .model_infer(req)
        .await
        .unwrap_err();
    assert_eq!(s.code(), tonic::Code::InvalidArgument, "{s}");
    let mut instance = ms_pb::Instance::default();
    instance.items.insert(
        "x1".into(),
        ms_pb::Tensor {
            dtype: 11,
            shape: Some(ms_pb::TensorShape {
                dims: vec![i64::MAX, i64::MAX],
            }),
            tensor_data: Some(ms_pb::tensor::TensorData::Data(Bytes::from_static(
                &[0; 16],
            ))),
            ..Default::default()
        },
    );
    let reply = common::ms(&server)
        .await
        .predict(ms_pb::PredictRequest {
            servable_spec: Some(ms_pb::ServableSpec {
                name: "add".into(),
                method_name: "add_common".into(),
                version_number: 0,
            }),
            instances: vec![instance],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.error_msg[0].error_code, 2);
    // JSON nested far deeper than any tensor: refused by depth, quickly.
    let deep = format!(
        "{{\"inputs\": [{{\"name\": \"x1\", \"shape\": [1], \"datatype\": \"FP32\", \"data\": {}1{}}}]}}",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    let (status, _, _) = send(&server, "POST", "/v2/models/add/infer", "", &deep).await;
    assert_eq!(status, 400);
    let deep_ms = format!(
        "{{\"instances\": [{{\"x1\": {}1{}}}]}}",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    let (status, _, _) = send(&server, "POST", "/model/add:add_common", "", &deep_ms).await;
    assert_eq!(status, 400);
    // A chunk flood: the body in 20 000 one-byte chunks, then the same in
    // chunks that claim more than they hold.
    let mut flood = Vec::new();
    for b in INFER_BODY.bytes().cycle().take(20_000) {
        flood.extend_from_slice(format!("1\r\n{}\r\n", b as char).as_bytes());
    }
    flood.extend_from_slice(b"0\r\n\r\n");
    let (status, _, _) = raw_http(
        &server,
        "POST /v2/models/add/infer HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n",
        &flood,
    )
    .await;
    assert_eq!(status, 400);
    // Too many header lines, and one header of 1 MiB: refused (431 or a
    // closed connection), never a crash.
    let many: String = (0..500).map(|i| format!("x-h{i}: v\r\n")).collect();
    let mut tcp = tokio::net::TcpStream::connect(server.rest_address)
        .await
        .unwrap();
    let _ = tcp
        .write_all(format!("GET /v2 HTTP/1.1\r\nhost: x\r\n{many}\r\n").as_bytes())
        .await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut answer)).await;
    assert!(
        answer.is_empty() || answer.starts_with(b"HTTP/1.1 431"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    let mut tcp = tokio::net::TcpStream::connect(server.rest_address)
        .await
        .unwrap();
    let _ = tcp
        .write_all(
            format!(
                "GET /v2 HTTP/1.1\r\nhost: x\r\nx-big: {}\r\n\r\n",
                "v".repeat(1 << 20)
            )
            .as_bytes(),
        )
        .await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut answer)).await;
    assert!(
        answer.is_empty() || answer.starts_with(b"HTTP/1.1 431"),
        "{}",
        String::from_utf8_lossy(&answer[..answer.len().min(200)])
    );
    still_serving(&server, None).await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_floods_of_resets_and_streams_leave_other_clients_served() {
    let server = common::demo().await;
    // Rapid reset (CVE-2023-44487): open streams and drop them at once.
    let (mut send, conn) = h2(&server).await;
    let mut refused = 0;
    for _ in 0..2000 {
        if send.ready().await.is_err() {
            refused += 1;
            break;
        }
        let req = http::Request::post(format!(
            "http://{}/inference.GRPCInferenceService/ServerLive",
            server.grpc_address
        ))
        .header("content-type", "application/grpc")
        .body(http_body_util::Full::new(Bytes::from_static(&[
            0, 0, 0, 0, 0,
        ])))
        .unwrap();
        drop(send.send_request(req));
    }
    let _ = tokio::time::timeout(Duration::from_secs(10), conn).await;
    println!(
        "rapid reset: the connection was {}",
        if refused > 0 {
            "closed by the server"
        } else {
            "kept"
        }
    );
    // Many concurrent streams on one connection, each a real call.
    let (send, _conn) = h2(&server).await;
    let mut calls = Vec::new();
    for _ in 0..1000 {
        let mut send = send.clone();
        let addr = server.grpc_address;
        calls.push(tokio::spawn(async move {
            send.ready().await.ok()?;
            let req = http::Request::post(format!(
                "http://{addr}/inference.GRPCInferenceService/ServerLive"
            ))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(http_body_util::Full::new(Bytes::from_static(&[
                0, 0, 0, 0, 0,
            ])))
            .unwrap();
            let resp = send.send_request(req).await.ok()?;
            let body = resp.into_body().collect().await.ok()?;
            Some(body.trailers()?.get("grpc-status")?.to_str().ok()? == "0")
        }));
    }
    let mut ok = 0;
    for c in calls {
        if c.await.unwrap() == Some(true) {
            ok += 1;
        }
    }
    assert!(ok > 0, "none of 1000 concurrent streams was answered");
    still_serving(&server, None).await;
    server.shutdown().await;
}
