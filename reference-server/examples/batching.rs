//! Open Inference throughput and latency with dynamic batching on and off,
//! at 1, 16 and 64 concurrent clients, over gRPC and REST, for a batchable
//! model with real compute: a stack of matrix products of float32 rows
//! (`y = x W1 ... Wn`; by default 4 products of 1024-wide rows, about 1 ms
//! a row alone), one row per request, one CPU replica.
//!
//! ```sh
//! cargo run --release -p reference-server --example batching
//! cargo run --release -p reference-server --example batching -- 512 8   # width, depth
//! ```
//!
//! Prints one line per configuration; a benchmark, not a test.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use reference_server::server::{self, Config, Running};
use serving_proto::pb::inference::grpc_inference_service_client::GrpcInferenceServiceClient;
use serving_proto::pb::inference::{ModelInferRequest, model_infer_request::InferInputTensor};

/// Row width and number of products, from the command line.
fn shape() -> (usize, usize) {
    let mut args = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("a number"));
    (args.next().unwrap_or(1024), args.next().unwrap_or(4))
}
const WARMUP: Duration = Duration::from_secs(1);
const MEASURE: Duration = Duration::from_secs(3);

fn model() -> Vec<u8> {
    let (width, depth) = shape();
    // A shifted identity: values stay bounded through the chain.
    let w: Vec<f32> = (0..width * width)
        .map(|i| {
            if (i / width + 1) % width == i % width {
                1.0
            } else {
                0.0
            }
        })
        .collect();
    reference_server::onnx::matmul_chain(width, depth, &w)
}

fn repository(batching: bool) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let deployment = if batching {
        "max_batch_size = 64\nbatch_timeout_us = 500"
    } else {
        "max_batch_size = 1"
    };
    let toml = format!(
        "[[model]]\nname = \"m\"\nfile = \"m.onnx\"\nwith_batch_dim = true\n\n[[method]]\nname = \"predict\"\ninputs = [\"x\"]\noutputs = [\"y\"]\n\n[[method.stage]]\nmodel = \"m\"\ninputs = [\"x\"]\noutputs = [\"y\"]\n\n[deployment]\ndevices = [\"cpu\"]\n{deployment}\n"
    );
    std::fs::create_dir_all(dir.path().join("stack/1")).unwrap();
    std::fs::write(dir.path().join("stack/servable.toml"), toml).unwrap();
    std::fs::write(dir.path().join("stack/1/m.onnx"), model()).unwrap();
    dir
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Transport {
    Grpc,
    /// REST with the binary tensor extension, as tritonclient sends.
    RestBinary,
    /// REST with JSON tensors.
    RestJson,
}

fn row() -> Vec<f32> {
    let width = shape().0;
    (0..width).map(|i| i as f32 / width as f32).collect()
}

async fn client_loop(
    server: Arc<Running>,
    transport: Transport,
    until: Instant,
    measure_from: Instant,
) -> Vec<Duration> {
    let x = row();
    let mut latencies = Vec::new();
    match transport {
        Transport::Grpc => {
            let channel =
                tonic::transport::Channel::from_shared(format!("http://{}", server.grpc_address))
                    .unwrap()
                    .connect()
                    .await
                    .unwrap();
            let mut client = GrpcInferenceServiceClient::new(channel);
            let req = ModelInferRequest {
                model_name: "stack".into(),
                inputs: vec![InferInputTensor {
                    name: "x".into(),
                    datatype: "FP32".into(),
                    shape: vec![1, x.len() as i64],
                    ..Default::default()
                }],
                raw_input_contents: vec![Bytes::from(
                    x.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>(),
                )],
                ..Default::default()
            };
            while Instant::now() < until {
                let start = Instant::now();
                let reply = client.model_infer(req.clone()).await.unwrap().into_inner();
                assert_eq!(reply.raw_output_contents[0].len(), x.len() * 4);
                if start >= measure_from {
                    latencies.push(start.elapsed());
                }
            }
        }
        Transport::RestBinary | Transport::RestJson => {
            let http = reqwest::Client::new();
            let url = format!("http://{}/v2/models/stack/infer", server.rest_address);
            let (body, header) = if transport == Transport::RestJson {
                let json = serde_json::json!({
                    "inputs": [{"name": "x", "shape": [1, x.len()], "datatype": "FP32", "data": x}]
                });
                (Bytes::from(json.to_string()), None)
            } else {
                let json = serde_json::json!({
                    "inputs": [{"name": "x", "shape": [1, x.len()], "datatype": "FP32",
                                "parameters": {"binary_data_size": x.len() * 4}}],
                    "outputs": [{"name": "y", "parameters": {"binary_data": true}}]
                })
                .to_string();
                let mut body = json.clone().into_bytes();
                body.extend(x.iter().flat_map(|v| v.to_le_bytes()));
                (Bytes::from(body), Some(json.len()))
            };
            while Instant::now() < until {
                let start = Instant::now();
                let mut req = http.post(&url).body(body.clone());
                if let Some(n) = header {
                    req = req.header("Inference-Header-Content-Length", n);
                }
                let r = req.send().await.unwrap();
                assert_eq!(r.status(), 200);
                r.bytes().await.unwrap();
                if start >= measure_from {
                    latencies.push(start.elapsed());
                }
            }
        }
    }
    latencies
}

async fn run(transport: Transport, batching: bool, clients: usize) {
    let repo = repository(batching);
    let server = server::start(Config {
        grpc_address: ([127, 0, 0, 1], 0).into(),
        rest_address: ([127, 0, 0, 1], 0).into(),
        model_repository: Some(repo.path().to_owned()),
        poll_interval: None,
        ..Config::default()
    })
    .await
    .unwrap();
    let server = Arc::new(server);
    let measure_from = Instant::now() + WARMUP;
    let until = measure_from + MEASURE;
    let mut tasks = Vec::new();
    for _ in 0..clients {
        tasks.push(tokio::spawn(client_loop(
            server.clone(),
            transport,
            until,
            measure_from,
        )));
    }
    // The batches run in the measured window: the per-batch-size counters
    // (Triton's batch_stats) after it, less those before it.
    let sv = server.state.registry.get("stack", 0).unwrap();
    tokio::time::sleep_until(measure_from.into()).await;
    let before = sv.scheduler().counters().by_batch_size();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let after = sv.scheduler().counters().by_batch_size();
    drop(sv);
    let runs: Vec<(usize, u64)> = after
        .iter()
        .map(|(&rows, c)| (rows, c.count - before.get(&rows).map_or(0, |b| b.count)))
        .filter(|&(_, n)| n > 0)
        .collect();
    all.sort();
    let pct = |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)];
    let total_runs: u64 = runs.iter().map(|&(_, n)| n).sum();
    let total_rows: u64 = runs.iter().map(|&(r, n)| r as u64 * n).sum();
    let mean_batch = total_rows as f64 / total_runs.max(1) as f64;
    println!(
        "{:<11}  batching {:<3}  clients {clients:>2}  throughput {:>7.0} req/s  p50 {:>8.0} us  p99 {:>8.0} us  mean batch {:>5.1}  batches {}",
        match transport {
            Transport::Grpc => "gRPC",
            Transport::RestBinary => "REST binary",
            Transport::RestJson => "REST JSON",
        },
        if batching { "on" } else { "off" },
        all.len() as f64 / MEASURE.as_secs_f64(),
        pct(0.50).as_secs_f64() * 1e6,
        pct(0.99).as_secs_f64() * 1e6,
        mean_batch,
        distribution(&runs, total_runs),
    );
    if let Ok(server) = Arc::try_unwrap(server) {
        server.shutdown().await;
    }
}

#[tokio::main]
async fn main() {
    // serving-client (built in the same workspace) turns on reqwest's
    // rustls feature without a provider: name the process default.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (width, depth) = shape();
    println!(
        "OIP, model: {depth} products of {width}-wide float32 rows, one row per request; one CPU replica; {} s per configuration after {} s warm-up; batching on = max_batch_size 64, batch_timeout_us 500",
        MEASURE.as_secs(),
        WARMUP.as_secs()
    );
    for transport in [Transport::Grpc, Transport::RestBinary, Transport::RestJson] {
        for clients in [1, 16, 64] {
            for batching in [false, true] {
                run(transport, batching, clients).await;
            }
        }
    }
}

/// The share of runs by batch size, in power-of-two buckets: `1: 3%,
/// 2: 1%, 3-4: 2%, ..., 33-64: 81%` (buckets without runs left out).
fn distribution(runs: &[(usize, u64)], total: u64) -> String {
    let mut buckets: Vec<(usize, usize, u64)> = Vec::new();
    for &(rows, n) in runs {
        let hi = rows.next_power_of_two();
        let lo = if hi <= 2 { hi } else { hi / 2 + 1 };
        match buckets.iter_mut().find(|b| b.1 == hi) {
            Some(b) => b.2 += n,
            None => buckets.push((lo, hi, n)),
        }
    }
    buckets.sort();
    buckets
        .iter()
        .map(|&(lo, hi, n)| {
            let share = 100.0 * n as f64 / total.max(1) as f64;
            if lo == hi {
                format!("{hi}: {share:.0}%")
            } else {
                format!("{lo}-{hi}: {share:.0}%")
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}
