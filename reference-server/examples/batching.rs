//! Throughput with dynamic batching on and off, at 1 and 64 concurrent
//! clients, for a batchable model (`y = x W`, W 1024x1024, one row of 1024
//! float32 per instance), over MindSpore gRPC on loopback.
//!
//! ```sh
//! cargo run --release -p reference-server --example batching
//! ```
//!
//! Prints one line per configuration; a benchmark, not a test.

use std::time::{Duration, Instant};

use reference_server::onnx::{Dim, ModelBuilder};
use reference_server::server::{self, Config, Running};
use serving_proto::mindspore::{self, Outcome};
use serving_proto::pb::mindspore::ms_service_client::MsServiceClient;
use serving_proto::{DataType, NamedTensors, Tensor};

const WIDTH: usize = 1024;
const WARMUP: Duration = Duration::from_secs(1);
const MEASURE: Duration = Duration::from_secs(4);

fn repository(batching: bool) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let rows = [Dim::Dynamic("batch"), Dim::Fixed(WIDTH as i64)];
    let weights: Vec<f32> = (0..WIDTH * WIDTH)
        .map(|i| ((i % 17) as f32 - 8.0) / 64.0)
        .collect();
    let model = ModelBuilder::new("matmul")
        .input("x", DataType::Fp32, &rows)
        .output("y", DataType::Fp32, &rows)
        .constant_f32("w", &[WIDTH as i64, WIDTH as i64], &weights)
        .node("MatMul", &["x", "w"], &["y"], vec![])
        .build();
    let deployment = if batching {
        "max_batch_size = 64\nbatch_timeout_us = 500"
    } else {
        "max_batch_size = 1"
    };
    let toml = format!(
        "[[model]]\nname = \"m\"\nfile = \"m.onnx\"\nwith_batch_dim = true\n\n[[method]]\nname = \"predict\"\ninputs = [\"x\"]\noutputs = [\"y\"]\n\n[[method.stage]]\nmodel = \"m\"\ninputs = [\"x\"]\noutputs = [\"y\"]\n\n[deployment]\ndevices = [\"cpu\"]\n{deployment}\n"
    );
    std::fs::create_dir_all(dir.path().join("mm/1")).unwrap();
    std::fs::write(dir.path().join("mm/servable.toml"), toml).unwrap();
    std::fs::write(dir.path().join("mm/1/m.onnx"), model).unwrap();
    dir
}

async fn client_loop(server: &Running, until: Instant, measure_from: Instant) -> Vec<Duration> {
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", server.grpc_address))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = MsServiceClient::new(channel);
    let x: Vec<f32> = (0..WIDTH).map(|i| i as f32 / WIDTH as f32).collect();
    let instance: NamedTensors = [(
        "x".to_string(),
        Tensor::from_slice(&[WIDTH as i64], &x).unwrap(),
    )]
    .into();
    let req = mindspore::grpc::encode_request("mm", "predict", 0, &[instance]).unwrap();
    let mut latencies = Vec::new();
    while Instant::now() < until {
        let start = Instant::now();
        let reply = client.predict(req.clone()).await.unwrap().into_inner();
        let outcome = mindspore::grpc::decode_reply(reply, 1).unwrap();
        assert!(
            matches!(outcome, Outcome::Instances(ref r) if r[0].is_ok()),
            "{outcome:?}"
        );
        if start >= measure_from {
            latencies.push(start.elapsed());
        }
    }
    latencies
}

async fn run(batching: bool, clients: usize) {
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
    let server = std::sync::Arc::new(server);
    let measure_from = Instant::now() + WARMUP;
    let until = measure_from + MEASURE;
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let server = server.clone();
        tasks.push(tokio::spawn(async move {
            client_loop(&server, until, measure_from).await
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort();
    let pct = |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)];
    let sv = server.state.registry.get("mm", 0).unwrap();
    let batches = sv.scheduler().batch_sizes();
    let runs = batches.count();
    let instances: u64 = sv
        .scheduler()
        .stats()
        .iter()
        .map(|s| s.items.load(std::sync::atomic::Ordering::Relaxed))
        .sum();
    println!(
        "batching {:<3}  clients {clients:>2}  throughput {:>8.0} req/s  p50 {:>8.1} us  p99 {:>8.1} us  mean batch {:>5.1}",
        if batching { "on" } else { "off" },
        all.len() as f64 / MEASURE.as_secs_f64(),
        pct(0.50).as_secs_f64() * 1e6,
        pct(0.99).as_secs_f64() * 1e6,
        instances as f64 / runs.max(1) as f64,
    );
    drop(sv);
    if let Ok(server) = std::sync::Arc::try_unwrap(server) {
        server.shutdown().await;
    }
}

#[tokio::main]
async fn main() {
    println!(
        "model: y = x W, W {WIDTH}x{WIDTH} float32, one row per request; 1 CPU replica; {} s per configuration after {} s warm-up",
        MEASURE.as_secs(),
        WARMUP.as_secs()
    );
    for clients in [1, 64] {
        for batching in [false, true] {
            run(batching, clients).await;
        }
    }
}
