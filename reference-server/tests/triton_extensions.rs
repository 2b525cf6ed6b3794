//! Triton's protocol extensions: tritonclient (the virtual environment of
//! the third-party tests) drives every one on both transports against real
//! servers (tests/compat/triton_extensions.py); the stream behaviours a
//! Python client cannot show (several streams on one connection, requests
//! cancelled when their stream goes away) are checked here with tonic.

mod common;

use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use reference_server::onnx::{self, Dim};
use reference_server::server::{Config, Running};
use serving_proto::DataType;
use serving_proto::compression::Encoding;
use serving_proto::pb::inference::{self as pb, model_infer_request::InferInputTensor};

/// Triton models `identity` (float32 `[-1]`, no batching) and `rows`
/// (float32 rows of 10, batched up to 32 with a 50 ms delay), both with a
/// config.pbtxt, and `adder`, a servable.toml servable (rows of 4, batched
/// up to 8, 1 ms).
fn repository(rows_delay_us: u64) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    common::write(
        d,
        "identity/config.pbtxt",
        br#"
name: "identity"
platform: "onnxruntime_onnx"
max_batch_size: 0
input [ { name: "x" data_type: TYPE_FP32 dims: [ -1 ] } ]
output [ { name: "y" data_type: TYPE_FP32 dims: [ -1 ] } ]
"#,
    );
    common::write(
        d,
        "identity/1/model.onnx",
        &onnx::identity(DataType::Fp32, &[Dim::Dynamic("n")]),
    );
    common::write(
        d,
        "rows/config.pbtxt",
        format!(
            r#"
name: "rows"
max_batch_size: 32
input [ {{ name: "x" data_type: TYPE_FP32 dims: [ 10 ] }} ]
output [ {{ name: "y" data_type: TYPE_FP32 dims: [ 10 ] label_filename: "labels.txt" }} ]
dynamic_batching {{ max_queue_delay_microseconds: {rows_delay_us} }}
"#
        )
        .as_bytes(),
    );
    // Labels of the first nine classes: the tenth has none.
    let labels: String = (0..9).map(|i| format!("class{i}\n")).collect();
    common::write(d, "rows/labels.txt", labels.as_bytes());
    common::write(
        d,
        "rows/1/model.onnx",
        &onnx::identity(DataType::Fp32, &[Dim::Dynamic("batch"), Dim::Fixed(10)]),
    );
    common::write(
        d,
        "adder/servable.toml",
        br#"
[[model]]
name = "m"
file = "m.onnx"
with_batch_dim = true

[[method]]
name = "predict"
inputs = ["x"]
outputs = ["y"]

[[method.stage]]
model = "m"
inputs = ["x"]
outputs = ["y"]

[deployment]
max_batch_size = 8
batch_timeout_us = 1000
"#,
    );
    common::write(
        d,
        "adder/1/m.onnx",
        &onnx::identity(DataType::Fp32, &[Dim::Dynamic("batch"), Dim::Fixed(4)]),
    );
    dir
}

async fn serve(dir: &Path, shared_memory: bool, reply: Option<Encoding>) -> Running {
    common::start(Config {
        model_repository: Some(dir.to_owned()),
        poll_interval: None,
        allow_shared_memory: shared_memory,
        grpc_response_compression: reply,
        ..common::config()
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tritonclient_drives_every_extension_on_both_transports() {
    let dir = repository(50_000);
    let a = serve(dir.path(), true, Some(Encoding::Gzip)).await;
    let b = common::start(Config {
        grpc_response_compression: Some(Encoding::Deflate),
        ..common::config()
    })
    .await;
    let args = vec![
        a.grpc_address.to_string(),
        a.rest_address.to_string(),
        b.grpc_address.to_string(),
        b.rest_address.to_string(),
    ];
    common::run_compat("triton_extensions.py", args, "all Triton extensions agree").await;
    a.shutdown().await;
    b.shutdown().await;
}

fn rows_request(id: &str, seed: f32) -> pb::ModelInferRequest {
    let x: Vec<u8> = (0..10)
        .flat_map(|i| (seed + i as f32).to_le_bytes())
        .collect();
    pb::ModelInferRequest {
        model_name: "rows".into(),
        id: id.into(),
        inputs: vec![InferInputTensor {
            name: "x".into(),
            datatype: "FP32".into(),
            shape: vec![1, 10],
            ..Default::default()
        }],
        raw_input_contents: vec![Bytes::from(x)],
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn streams_share_a_connection_and_their_requests_end_with_them() {
    let dir = repository(20_000);
    let server = serve(dir.path(), false, None).await;
    let channel = common::channel(&server).await;
    // Two streams at once on one HTTP/2 connection, 50 requests each, all
    // sent before any answer is read.
    let run = |tag: &'static str| {
        let mut client =
            pb::grpc_inference_service_client::GrpcInferenceServiceClient::new(channel.clone());
        async move {
            let requests: Vec<_> = (0..50)
                .map(|k| rows_request(&format!("{tag}{k}"), k as f32))
                .collect();
            let mut answers = client
                .model_stream_infer(futures_util::stream::iter(requests))
                .await
                .unwrap()
                .into_inner();
            let mut ids = Vec::new();
            while let Some(a) = answers.message().await.unwrap() {
                assert_eq!(a.error_message, "");
                let r = a.infer_response.unwrap();
                let first = f32::from_le_bytes(r.raw_output_contents[0][..4].try_into().unwrap());
                assert_eq!(
                    format!("{tag}{first}"),
                    r.id,
                    "each answer is its request's"
                );
                ids.push(r.id);
            }
            ids
        }
    };
    let (a, b) = tokio::join!(run("a"), run("b"));
    let want = |tag: &str| (0..50).map(|k| format!("{tag}{k}")).collect::<Vec<_>>();
    assert_eq!(a, want("a"), "answers come in request order");
    assert_eq!(b, want("b"));
    let sv = server.state.registry.get("rows", 0).unwrap();
    let counters = sv.scheduler().counters();
    let runs = counters.execution_count.load(Ordering::Relaxed);
    assert!(
        runs < 100,
        "100 stream requests ran in {runs} runs: batched together"
    );

    // A stream that goes away with requests still queued: they are
    // cancelled, never run.
    let slow = repository(2_000_000);
    let server2 = serve(slow.path(), false, None).await;
    // The client sends five requests, half-closes, then cancels the call
    // (dropping its answers resets the HTTP/2 stream) while they wait.
    let mut client = common::oip(&server2).await;
    let requests = futures_util::stream::iter((0..5).map(|k| rows_request(&format!("c{k}"), 0.0)));
    let answers = client.model_stream_infer(requests).await.unwrap();
    let sv = server2.state.registry.get("rows", 0).unwrap();
    let counters = sv.scheduler().counters();
    for _ in 0..100 {
        if sv.scheduler().outstanding() == 5 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        sv.scheduler().outstanding(),
        5,
        "the five requests are queued"
    );
    drop(answers);
    for _ in 0..200 {
        if counters.cancelled_queued.load(Ordering::Relaxed) == 5 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        counters.cancelled_queued.load(Ordering::Relaxed),
        5,
        "cancelled with their stream"
    );
    assert_eq!(
        counters.execution_count.load(Ordering::Relaxed),
        0,
        "and never run"
    );
    server.shutdown().await;
    server2.shutdown().await;
}

#[tokio::test]
async fn repository_names_never_leave_the_repository() {
    let dir = repository(1000);
    let server = serve(dir.path(), false, None).await;
    // Raw HTTP/1.1: URL libraries would resolve the dot segments first.
    for name in [
        "%2e%2e",
        "%2E%2E",
        "a%2Fb",
        "%2Fetc%2Fpasswd",
        "..%5Crows",
        ".rows",
    ] {
        for action in ["load", "unload"] {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut tcp = tokio::net::TcpStream::connect(server.rest_address)
                .await
                .unwrap();
            let request = format!(
                "POST /v2/repository/models/{name}/{action} HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            );
            tcp.write_all(request.as_bytes()).await.unwrap();
            let mut reply = String::new();
            tcp.read_to_string(&mut reply).await.unwrap();
            assert!(
                reply.starts_with("HTTP/1.1 400"),
                "{action} {name}: {reply}"
            );
            assert!(
                reply.contains("is not a model name of the repository"),
                "{reply}"
            );
        }
    }
    let mut client = common::oip(&server).await;
    for name in ["", "../rows", "/abs", "a/b", "a\\b", "..", "x\0y"] {
        let e = client
            .repository_model_load(pb::RepositoryModelLoadRequest {
                model_name: name.into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{name:?}: {e:?}");
    }
    let e = client
        .repository_index(pb::RepositoryIndexRequest {
            repository_name: "other".into(),
            ready: false,
        })
        .await
        .unwrap_err();
    assert!(
        e.message().contains("this server has one repository"),
        "{e:?}"
    );
    server.shutdown().await;
}
