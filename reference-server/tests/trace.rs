//! The trace extension with OpenTelemetry: a traced request's spans reach
//! an OTLP collector (here one in this process, decoding what the
//! exporter sends), in the client's trace when it sends a W3C
//! `traceparent`, with a span per phase; the settings (level, rate, count,
//! per model) are read and changed on both transports and decide what is
//! traced.

mod common;

use std::time::Duration;

use opentelemetry_proto::tonic::trace::v1::Span;
use reference_server::server::Config;
use reference_server::trace::{Level, Mode, TraceConfig, TraceSettings};
use serde_json::{Value, json};

type Spans = reference_server::trace::Received;

async fn collector() -> (String, Spans) {
    reference_server::trace::collector()
        .await
        .expect("a collector on a free port")
}

async fn wait_for(spans: &Spans, n: usize) -> Vec<Span> {
    for _ in 0..100 {
        if spans.lock().unwrap().len() >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    spans.lock().unwrap().clone()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn add_request() -> Value {
    json!({"inputs": [
        {"name": "x1", "datatype": "FP32", "shape": [2, 2], "data": [1, 2, 3, 4]},
        {"name": "x2", "datatype": "FP32", "shape": [2, 2], "data": [1, 2, 3, 4]}]})
}

/// `add` over gRPC, as add_request() is over REST.
fn grpc_add_request() -> serving_proto::pb::inference::ModelInferRequest {
    let x = serving_proto::pb::inference::model_infer_request::InferInputTensor {
        name: "x1".into(),
        datatype: "FP32".into(),
        shape: vec![2, 2],
        ..Default::default()
    };
    let data: Vec<u8> = [1f32, 2.0, 3.0, 4.0]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    serving_proto::pb::inference::ModelInferRequest {
        model_name: "add".into(),
        inputs: vec![
            x.clone(),
            serving_proto::pb::inference::model_infer_request::InferInputTensor {
                name: "x2".into(),
                ..x
            },
        ],
        raw_input_contents: vec![data.clone().into(), data.into()],
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_traced_request_exports_its_phases_in_the_clients_trace() {
    let (url, spans) = collector().await;
    let server = common::start(Config {
        trace: TraceConfig {
            settings: TraceSettings {
                level: Level::Timestamps,
                rate: 1,
                mode: Mode::OpenTelemetry,
                ..TraceSettings::default()
            },
            url: Some(url),
        },
        ..common::config()
    })
    .await;
    let http = common::http();
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let parent = "00f067aa0ba902b7";
    let r = http
        .post(common::rest(&server, "/v2/models/add/infer"))
        .header("traceparent", format!("00-{trace_id}-{parent}-01"))
        .json(&add_request())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let got = wait_for(&spans, 7).await;
    let root = got
        .iter()
        .find(|s| s.name == "POST /v2/models/{model}/infer")
        .unwrap_or_else(|| panic!("no request span: {got:#?}"));
    assert_eq!(hex(&root.trace_id), trace_id, "the client's trace");
    assert_eq!(
        hex(&root.parent_span_id),
        parent,
        "the client's span is its parent"
    );
    for phase in [
        "receive",
        "queue",
        "compute_input",
        "compute_infer",
        "compute_output",
        "send",
    ] {
        let s = got
            .iter()
            .find(|s| s.name == phase)
            .unwrap_or_else(|| panic!("no {phase} span: {got:#?}"));
        assert_eq!(s.parent_span_id, root.span_id, "{phase} is the request's");
        assert_eq!(s.trace_id, root.trace_id);
        assert!(
            s.start_time_unix_nano >= root.start_time_unix_nano
                && s.end_time_unix_nano <= root.end_time_unix_nano,
            "{phase} lies within the request"
        );
    }
    // gRPC, without a traceparent: a trace of its own.
    spans.lock().unwrap().clear();
    let mut grpc = common::oip(&server).await;
    grpc.model_infer(grpc_add_request()).await.unwrap();
    let got = wait_for(&spans, 7).await;
    let root = got
        .iter()
        .find(|s| s.name == "ModelInfer")
        .expect("a ModelInfer span");
    assert!(root.parent_span_id.is_empty(), "a root span");

    // Settings: off, then one trace only.
    let settings = |body: Value| {
        let http = http.clone();
        let url = common::rest(&server, "/v2/trace/setting");
        async move {
            http.post(url)
                .json(&body)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    let v = settings(json!({"trace_level": ["OFF"]})).await;
    assert_eq!(v["trace_level"], json!(["OFF"]), "{v}");
    assert_eq!(v["trace_mode"], "opentelemetry");
    spans.lock().unwrap().clear();
    for _ in 0..3 {
        http.post(common::rest(&server, "/v2/models/add/infer"))
            .json(&add_request())
            .send()
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(spans.lock().unwrap().is_empty(), "nothing traced while off");
    let v = settings(json!({"trace_level": ["TIMESTAMPS"], "trace_count": "1"})).await;
    assert_eq!(v["trace_count"], "1", "{v}");
    for _ in 0..3 {
        http.post(common::rest(&server, "/v2/models/add/infer"))
            .json(&add_request())
            .send()
            .await
            .unwrap();
    }
    let got = wait_for(&spans, 7).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let roots = spans
        .lock()
        .unwrap()
        .iter()
        .filter(|s| s.name.starts_with("POST"))
        .count();
    assert_eq!(roots, 1, "trace_count 1 traces one request: {got:#?}");
    let v = common::get_json(&server, "/v2/trace/setting").await;
    assert_eq!(v["trace_count"], "0", "{v}");
    // Per model, and refusals.
    let r = http
        .post(common::rest(&server, "/v2/models/add/trace/setting"))
        .json(&json!({"trace_rate": "7"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v = common::get_json(&server, "/v2/models/add/trace/setting").await;
    assert_eq!(v["trace_rate"], "7", "{v}");
    let v = common::get_json(&server, "/v2/trace/setting").await;
    assert_eq!(v["trace_rate"], "1", "the server's own is unchanged: {v}");
    for (body, want) in [
        (
            json!({"trace_level": ["TENSORS"]}),
            "TENSORS is not supported",
        ),
        (json!({"trace_rate": "0"}), "at least 1"),
        (json!({"trace_nope": "1"}), "unknown trace setting"),
    ] {
        let r = http
            .post(common::rest(&server, "/v2/trace/setting"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400);
        let v: Value = r.json().await.unwrap();
        assert!(v["error"].as_str().unwrap().contains(want), "{v}");
    }
    let r = http
        .get(common::rest(&server, "/v2/models/nope/trace/setting"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    server.shutdown().await;
}

#[tokio::test]
async fn without_a_collector_settings_are_kept_and_nothing_is_exported() {
    let server = common::demo().await;
    let v = common::get_json(&server, "/v2/trace/setting").await;
    assert_eq!(
        v,
        json!({"trace_level": ["OFF"], "trace_rate": "1000", "trace_count": "-1", "log_frequency": "0", "trace_file": "", "trace_mode": "triton"})
    );
    let r = common::http()
        .post(common::rest(&server, "/v2/trace/setting"))
        .json(&json!({"trace_mode": "opentelemetry"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "opentelemetry needs a collector");
    server.shutdown().await;
}

/// Reads a trace file once it holds `n` objects (it is a whole JSON array
/// after every trace).
async fn trace_file(path: &std::path::Path, n: usize) -> Vec<Value> {
    let mut got = Vec::new();
    for _ in 0..100 {
        if let Ok(bytes) = std::fs::read(path) {
            got = serde_json::from_slice::<Vec<Value>>(&bytes)
                .unwrap_or_else(|e| panic!("{} is not a JSON array: {e}", path.display()));
            if got.len() >= n {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tritons_trace_mode_writes_tritons_json_trace_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("trace.json");
    let config = reference_server::trace::parse_config(&[
        format!("triton,file={}", path.display()),
        "triton,log-frequency=2".into(),
        "level=TIMESTAMPS".into(),
        "rate=1".into(),
    ])
    .unwrap();
    let server = common::start(Config {
        trace: config,
        ..common::config()
    })
    .await;
    let http = common::http();
    for _ in 0..2 {
        let r = http
            .post(common::rest(&server, "/v2/models/add/infer"))
            .json(&add_request())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    // Two traces of 13 objects (the model's and 12 timestamps) in .0.
    let first = trace_file(&dir.path().join("trace.json.0"), 26).await;
    assert_eq!(first.len(), 26, "{first:#?}");
    let names = |trace: &[Value], id: u64| -> Vec<String> {
        trace
            .iter()
            .filter(|o| o["id"] == id)
            .filter_map(|o| o["timestamps"][0]["name"].as_str().map(str::to_owned))
            .collect()
    };
    assert_eq!(
        names(&first, 1),
        [
            "HTTP_RECV_START",
            "HTTP_RECV_END",
            "REQUEST_START",
            "QUEUE_START",
            "INFER_RESPONSE_COMPLETE",
            "COMPUTE_START",
            "COMPUTE_INPUT_END",
            "COMPUTE_OUTPUT_START",
            "COMPUTE_END",
            "REQUEST_END",
            "HTTP_SEND_START",
            "HTTP_SEND_END"
        ],
        "Triton's timestamps, in Triton's order"
    );
    assert_eq!(
        first[2],
        json!({"id": 1, "model_name": "add", "model_version": 1}),
        "the model's object after the receive times, as Triton writes it"
    );
    let ns = |trace: &[Value], id: u64, name: &str| -> u64 {
        trace
            .iter()
            .find(|o| o["id"] == id && o["timestamps"][0]["name"] == name)
            .and_then(|o| o["timestamps"][0]["ns"].as_u64())
            .unwrap_or_else(|| panic!("no {name} in trace {id}"))
    };
    for id in [1, 2] {
        let order = [
            "HTTP_RECV_START",
            "REQUEST_START",
            "QUEUE_START",
            "COMPUTE_START",
            "COMPUTE_INPUT_END",
            "COMPUTE_OUTPUT_START",
            "COMPUTE_END",
            "REQUEST_END",
            "HTTP_SEND_END",
        ];
        for pair in order.windows(2) {
            assert!(
                ns(&first, id, pair[0]) <= ns(&first, id, pair[1]),
                "{} before {} in trace {id}",
                pair[0],
                pair[1]
            );
        }
    }
    // The third, over gRPC, starts trace.json.1 with gRPC's names.
    let mut grpc = common::oip(&server).await;
    grpc.model_infer(grpc_add_request()).await.unwrap();
    let second = trace_file(&dir.path().join("trace.json.1"), 13).await;
    assert_eq!(second.len(), 13, "{second:#?}");
    let n = names(&second, 3);
    assert_eq!(
        (n[0].as_str(), n[11].as_str()),
        ("GRPC_WAITREAD_START", "GRPC_SEND_END")
    );
    // The file is the operator's: a client cannot name one.
    let r = http
        .post(common::rest(&server, "/v2/trace/setting"))
        .json(&json!({"trace_file": dir.path().join("elsewhere.json")}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .starts_with("trace file location can not be updated through network protocol"),
        "{v}"
    );
    let v = common::get_json(&server, "/v2/trace/setting").await;
    assert_eq!(v["trace_file"], path.display().to_string(), "{v}");
    assert_eq!(v["log_frequency"], "2", "{v}");
    server.shutdown().await;
}
