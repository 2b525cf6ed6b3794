//! The protocol-neutral engine: Open Inference requests batched across
//! clients and with MindSpore instances, oversized batches refused, a
//! failing job isolated from its batch, priorities, queue timeouts and
//! cancellation. Every run is counted by the replica counters.

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use reference_server::onnx::{Dim, ModelBuilder, attr_int};
use reference_server::server::{Config, Running};
use serde_json::{Value, json};
use serving_proto::mindspore::{self, Outcome};
use serving_proto::pb::inference::{self as pb, model_infer_request::InferInputTensor};
use serving_proto::{DataType, NamedTensors, Tensor};

const WIDTH: usize = 16;

async fn serve(dir: &std::path::Path) -> Running {
    common::start(Config {
        model_repository: Some(dir.to_owned()),
        poll_interval: None,
        ..common::config()
    })
    .await
}

/// `rows` rows of `WIDTH` float32, each row `seed + column`.
fn rows_of(seed: f32, rows: usize) -> Vec<f32> {
    (0..rows * WIDTH)
        .map(|i| seed + (i / WIDTH) as f32 * 100.0 + (i % WIDTH) as f32)
        .collect()
}

fn grpc_request(model: &str, x: &[f32], parameters: &[(&str, u64)]) -> pb::ModelInferRequest {
    pb::ModelInferRequest {
        model_name: model.into(),
        inputs: vec![InferInputTensor {
            name: "x".into(),
            datatype: "FP32".into(),
            shape: vec![(x.len() / WIDTH) as i64, WIDTH as i64],
            ..Default::default()
        }],
        parameters: parameters
            .iter()
            .map(|(k, v)| {
                (
                    (*k).to_owned(),
                    pb::InferParameter {
                        parameter_choice: Some(pb::infer_parameter::ParameterChoice::Uint64Param(
                            *v,
                        )),
                    },
                )
            })
            .collect(),
        raw_input_contents: vec![Bytes::from(
            x.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>(),
        )],
        ..Default::default()
    }
}

async fn grpc_infer(
    server: &Running,
    model: &str,
    x: &[f32],
    parameters: &[(&str, u64)],
) -> Result<Vec<f32>, tonic::Status> {
    let reply = common::oip(server)
        .await
        .model_infer(grpc_request(model, x, parameters))
        .await?
        .into_inner();
    assert_eq!(
        reply.outputs[0].shape,
        vec![(x.len() / WIDTH) as i64, WIDTH as i64]
    );
    Ok(reply.raw_output_contents[0]
        .chunks(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect())
}

async fn rest_infer(
    http: &reqwest::Client,
    server: &Running,
    model: &str,
    x: &[f32],
    parameters: Value,
) -> (u16, Value) {
    let body = json!({
        "inputs": [{"name": "x", "shape": [x.len() / WIDTH, WIDTH], "datatype": "FP32", "data": x}],
        "parameters": parameters,
    });
    let r = http
        .post(common::rest(server, &format!("/v2/models/{model}/infer")))
        .json(&body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

fn floats(v: &Value) -> Vec<f32> {
    v["outputs"][0]["data"]
        .as_array()
        .unwrap_or_else(|| panic!("no data in {v}"))
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

/// Servable `mm`: `depth` identity products of `WIDTH`-wide rows.
fn mm(depth: usize, deployment: &str) -> tempfile::TempDir {
    common::one_servable(
        "mm",
        &common::matmul_stack(WIDTH, depth),
        &["x"],
        &["y"],
        deployment,
    )
}

/// Runs and rows run over the replicas of a servable (failed runs are not
/// counted).
fn totals(server: &Running, servable: &str) -> (u64, u64) {
    let sv = server.state.registry.get(servable, 0).unwrap();
    sv.scheduler()
        .stats()
        .iter()
        .fold((0, 0), |(runs, rows), s| {
            (
                runs + s.runs.load(Ordering::Relaxed),
                rows + s.items.load(Ordering::Relaxed),
            )
        })
}

fn rows_run(server: &Running, servable: &str) -> u64 {
    totals(server, servable).1
}

fn runs(server: &Running, servable: &str) -> u64 {
    totals(server, servable).0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixty_four_oip_clients_on_both_transports_are_batched_and_get_their_own_rows() {
    let dir = mm(
        2,
        "devices = [\"cpu\"]\nintra_op_threads = 1\nmax_batch_size = 32\nbatch_timeout_us = 2000",
    );
    let server = Arc::new(serve(dir.path()).await);
    let mut tasks = Vec::new();
    for c in 0..64usize {
        let server = server.clone();
        tasks.push(tokio::spawn(async move {
            let http = common::http();
            for r in 0..10usize {
                let rows = 1 + (c + r) % 3;
                let x = rows_of((c * 10_000 + r * 1000) as f32, rows);
                let y = if c % 2 == 0 {
                    grpc_infer(&server, "mm", &x, &[]).await.unwrap()
                } else {
                    let (status, v) = rest_infer(&http, &server, "mm", &x, json!({})).await;
                    assert_eq!(status, 200, "{v}");
                    floats(&v)
                };
                assert_eq!(y, x, "client {c} request {r}: another client's rows");
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let sv = server.state.registry.get("mm", 0).unwrap();
    let batches = sv.scheduler().batch_sizes();
    let rows: u64 = (0..64usize)
        .flat_map(|c| (0..10usize).map(move |r| 1 + (c + r) % 3))
        .sum::<usize>() as u64;
    assert_eq!(rows_run(&server, "mm"), rows, "every row ran once");
    println!(
        "{} requests, {rows} rows in {} runs ({} of more than one row, {} of more than 8)",
        64 * 10,
        batches.count(),
        batches.count_above(1.0),
        batches.count_above(8.0)
    );
    assert!(batches.count_above(1.0) > 0, "requests were batched");
    assert!(batches.count() < 640, "fewer runs than requests");
    assert_eq!(batches.count_above(32.0), 0, "no batch over max_batch_size");
    // The metrics show the same rows for all traffic.
    let text = common::metrics(&server).await;
    let count = format!(
        "serving_batch_size_count{{servable=\"mm\",version=\"1\"}} {}",
        batches.count()
    );
    assert!(text.contains(&count), "{count} in\n{text}");
    assert!(text.contains(&format!(
        "serving_batch_size_sum{{servable=\"mm\",version=\"1\"}} {rows}"
    )));
    assert!(
        text.contains("serving_queue_duration_seconds_count{servable=\"mm\",version=\"1\"} 640")
    );
    drop(sv);
    Arc::try_unwrap(server).unwrap().shutdown().await;
}

/// As `serve`, with a generous inline bound: a debug build's runs are
/// slower than the default bound allows.
async fn serve_inline(dir: &std::path::Path) -> Running {
    common::start(Config {
        model_repository: Some(dir.to_owned()),
        poll_interval: None,
        inline_max: Duration::from_millis(10),
        ..common::config()
    })
    .await
}

/// Jobs run on their caller's thread (see `engine::scheduler`).
fn inline_runs(server: &Running, servable: &str) -> u64 {
    let sv = server.state.registry.get(servable, 0).unwrap();
    sv.scheduler()
        .counters()
        .inline_runs
        .load(Ordering::Relaxed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_client_at_a_time_runs_on_its_own_thread_and_is_counted_as_any_run() {
    let dir = mm(
        1,
        "devices = [\"cpu\"]\nintra_op_threads = 1\nmax_batch_size = 8",
    );
    let server = serve_inline(dir.path()).await;
    let http = common::http();
    for r in 0..40usize {
        let x = rows_of(r as f32 * 1000.0, 1 + r % 3);
        let y = if r % 2 == 0 {
            grpc_infer(&server, "mm", &x, &[]).await.unwrap()
        } else {
            let (status, v) = rest_infer(&http, &server, "mm", &x, json!({})).await;
            assert_eq!(status, 200, "{v}");
            floats(&v)
        };
        assert_eq!(y, x, "request {r}");
    }
    let inline = inline_runs(&server, "mm");
    println!("{inline} of 40 one-at-a-time requests ran inline");
    // The first run goes to the replica thread (its time is not known
    // yet); every later one finds the version idle.
    assert!(inline >= 35, "only {inline} of 40 ran inline");
    assert!(inline < 40, "the first run cannot be inline");
    let rows: u64 = (0..40u64).map(|r| 1 + r % 3).sum();
    assert_eq!(totals(&server, "mm"), (40, rows), "every run counted once");
    let sv = server.state.registry.get("mm", 0).unwrap();
    assert_eq!(sv.scheduler().counters().success.get().0, 40);
    assert_eq!(sv.scheduler().counters().queue_time.count(), 40);
    drop(sv);
    let text = common::metrics(&server).await;
    let line = format!("serving_inline_runs_total{{servable=\"mm\",version=\"1\"}} {inline}");
    assert!(text.contains(&line), "{line} in\n{text}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batching_delay_keeps_every_job_on_the_queue_even_when_idle() {
    // A configured delay is a promise to wait for other clients' rows: a
    // lone request still waits for it instead of running at once.
    let dir = mm(
        1,
        "devices = [\"cpu\"]\nintra_op_threads = 1\nmax_batch_size = 8\nbatch_timeout_us = 20000",
    );
    let server = serve_inline(dir.path()).await;
    for r in 0..5usize {
        let x = rows_of(r as f32, 1);
        let started = Instant::now();
        assert_eq!(grpc_infer(&server, "mm", &x, &[]).await.unwrap(), x);
        assert!(
            started.elapsed() >= Duration::from_millis(20),
            "request {r} answered in {:?}, before the batching delay",
            started.elapsed()
        );
    }
    assert_eq!(inline_runs(&server, "mm"), 0);
    assert_eq!(runs(&server, "mm"), 5);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn oip_and_mindspore_requests_to_one_model_batch_together() {
    let dir = mm(
        1,
        "devices = [\"cpu\"]\nmax_batch_size = 8\nbatch_timeout_us = 300000",
    );
    let server = Arc::new(serve(dir.path()).await);
    let oip = {
        let server = server.clone();
        tokio::spawn(async move { grpc_infer(&server, "mm", &rows_of(1.0, 2), &[]).await })
    };
    let ms = {
        let server = server.clone();
        tokio::spawn(async move {
            let x = rows_of(500.0, 1);
            let instance: NamedTensors = [(
                "x".to_string(),
                Tensor::from_slice(&[WIDTH as i64], &x).unwrap(),
            )]
            .into();
            let req =
                mindspore::grpc::encode_request("mm", "predict", 0, &[instance.clone(), instance])
                    .unwrap();
            let reply = common::ms(&server)
                .await
                .predict(req)
                .await
                .unwrap()
                .into_inner();
            let Outcome::Instances(r) = mindspore::grpc::decode_reply(reply, 2).unwrap() else {
                panic!("the MindSpore request failed")
            };
            r.into_iter()
                .map(|i| i.unwrap()["y"].to_vec::<f32>().unwrap())
                .collect::<Vec<_>>()
        })
    };
    assert_eq!(oip.await.unwrap().unwrap(), rows_of(1.0, 2));
    for y in ms.await.unwrap() {
        assert_eq!(y, rows_of(500.0, 1));
    }
    // Two OIP rows and two MindSpore instances: one run of four rows.
    assert_eq!((runs(&server, "mm"), rows_run(&server, "mm")), (1, 4));
    let sv = server.state.registry.get("mm", 0).unwrap();
    assert_eq!(sv.scheduler().batch_sizes().count_above(2.0), 1);
    drop(sv);
    Arc::try_unwrap(server).unwrap().shutdown().await;
}

#[tokio::test]
async fn an_oip_request_with_more_rows_than_the_batch_size_is_refused_with_both_numbers() {
    let dir = mm(1, "max_batch_size = 4");
    let server = serve(dir.path()).await;
    let text = "inference request batch-size must be <= 4 for 'mm': this request has a batch of 5 rows; send at most 4 rows per request";
    let s = grpc_infer(&server, "mm", &rows_of(0.0, 5), &[])
        .await
        .unwrap_err();
    assert_eq!(
        (s.code(), s.message()),
        (tonic::Code::InvalidArgument, text)
    );
    let (status, v) = rest_infer(&common::http(), &server, "mm", &rows_of(0.0, 5), json!({})).await;
    assert_eq!((status, v), (400, json!({ "error": text })));
    assert_eq!(
        grpc_infer(&server, "mm", &rows_of(0.0, 4), &[])
            .await
            .unwrap(),
        rows_of(0.0, 4)
    );
    // As in Triton, a request the checks refuse is not a failed inference
    // in the statistics: only the one that ran is counted.
    let sv = server.state.registry.get("mm", 0).unwrap();
    let counters = sv.scheduler().counters();
    assert_eq!((counters.success.get().0, counters.fail.get().0), (1, 0));
    // The metadata says rows first.
    let meta = common::get_json(&server, "/v2/models/mm").await;
    assert_eq!(meta["inputs"][0]["shape"], json!([-1, WIDTH]));
    server.shutdown().await;
}

/// `y = GatherElements(x, index, axis 1)` over rows of 4 float32 and one
/// int64 index: an index past the row fails at run time, not at the checks.
fn gather_model() -> Vec<u8> {
    ModelBuilder::new("gather")
        .input("x", DataType::Fp32, &[Dim::Dynamic("batch"), Dim::Fixed(4)])
        .input(
            "index",
            DataType::Int64,
            &[Dim::Dynamic("batch"), Dim::Fixed(1)],
        )
        .output("y", DataType::Fp32, &[Dim::Dynamic("batch"), Dim::Fixed(1)])
        .node(
            "GatherElements",
            &["x", "index"],
            &["y"],
            vec![attr_int("axis", 1)],
        )
        .build()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_job_that_fails_at_run_time_in_a_batch_fails_alone() {
    let dir = common::one_servable(
        "pick",
        &gather_model(),
        &["x", "index"],
        &["y"],
        "devices = [\"cpu\"]\nmax_batch_size = 16",
    );
    let server = serve_held(dir.path()).await;
    let request = |index: i64| {
        let mut req = pb::ModelInferRequest {
            model_name: "pick".into(),
            ..Default::default()
        };
        for (name, datatype, shape, raw) in [
            (
                "x",
                "FP32",
                vec![1, 4],
                [10f32, 20.0, 30.0, 40.0]
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect::<Vec<u8>>(),
            ),
            ("index", "INT64", vec![1, 1], index.to_le_bytes().to_vec()),
        ] {
            req.inputs.push(InferInputTensor {
                name: name.into(),
                datatype: datatype.into(),
                shape,
                ..Default::default()
            });
            req.raw_input_contents.push(Bytes::from(raw));
        }
        req
    };
    // The replica takes a first job and holds it, so that the eight jobs
    // below queue up and are taken as one batch.
    let sv = server.state.registry.get("pick", 0).unwrap();
    let faults = sv.scheduler().faults();
    assert!(faults.hold(true));
    let first = {
        let server = server.clone();
        let req = request(0);
        tokio::spawn(async move { common::oip(&server).await.model_infer(req).await })
    };
    while faults.held() == 0 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let mut tasks = Vec::new();
    for index in [0i64, 1, 9, 2, 3] {
        let server = server.clone();
        let req = request(index);
        tasks.push(tokio::spawn(async move {
            common::oip(&server).await.model_infer(req).await
        }));
    }
    // A MindSpore request of three instances, one of them poisoned too.
    let ms = {
        let server = server.clone();
        tokio::spawn(async move {
            let instance = |index: i64| -> NamedTensors {
                [
                    (
                        "x".to_string(),
                        Tensor::from_slice(&[4], &[1f32, 2.0, 3.0, 4.0]).unwrap(),
                    ),
                    (
                        "index".to_string(),
                        Tensor::from_slice(&[1], &[index]).unwrap(),
                    ),
                ]
                .into()
            };
            let req = mindspore::grpc::encode_request(
                "pick",
                "predict",
                0,
                &[instance(3), instance(-7), instance(0)],
            )
            .unwrap();
            let reply = common::ms(&server)
                .await
                .predict(req)
                .await
                .unwrap()
                .into_inner();
            mindspore::grpc::decode_reply(reply, 3).unwrap()
        })
    };
    while sv.scheduler().outstanding() < 1 + 5 + 1 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    faults.hold(false);
    first.await.unwrap().unwrap();
    let mut answers = Vec::new();
    for t in tasks {
        answers.push(t.await.unwrap());
    }
    for (answer, (index, want)) in
        answers
            .iter()
            .zip([(0, 10f32), (1, 20.0), (9, 0.0), (2, 30.0), (3, 40.0)])
    {
        match answer {
            Ok(reply) if index != 9 => {
                let y = f32::from_le_bytes(
                    reply.get_ref().raw_output_contents[0][..4]
                        .try_into()
                        .unwrap(),
                );
                assert_eq!(y, want, "index {index}");
            }
            Err(s) if index == 9 => {
                assert_eq!(s.code(), tonic::Code::Internal);
                assert!(
                    s.message().starts_with("model 'pick' failed to run: "),
                    "{}",
                    s.message()
                );
            }
            other => panic!("index {index}: {other:?}"),
        }
    }
    let Outcome::Instances(results) = ms.await.unwrap() else {
        panic!("the MindSpore request failed as a whole")
    };
    assert_eq!(
        results[0].as_ref().unwrap()["y"].to_vec::<f32>().unwrap(),
        vec![4.0]
    );
    let e = results[1].as_ref().unwrap_err();
    assert_eq!(e.code, 3);
    assert!(
        e.message
            .starts_with("Serving Error: runtime error occurred: "),
        "{}",
        e.message
    );
    assert_eq!(
        results[2].as_ref().unwrap()["y"].to_vec::<f32>().unwrap(),
        vec![1.0]
    );
    // The first job ran; the batched run of the other eight rows failed
    // (two are poisoned), and each of its jobs then ran alone: six of them
    // succeeded. Failed runs are not counted.
    assert_eq!(runs(&server, "pick"), 1 + 6);
    assert_eq!(rows_run(&server, "pick"), 1 + 6);
    drop(sv);
    Arc::try_unwrap(server).unwrap().shutdown().await;
}

/// A repository of one replica of `slow` (rows of 256, batches of at most
/// 8 rows), with the given queue settings, served with fault injection so
/// that a test can hold the replica.
fn slow_repository(queue: &str) -> tempfile::TempDir {
    common::one_servable(
        "slow",
        &common::matmul_stack(256, 2),
        &["x"],
        &["y"],
        &format!("devices = [\"cpu\"]\nintra_op_threads = 1\nmax_batch_size = 8\n{queue}"),
    )
}

async fn serve_held(dir: &std::path::Path) -> Arc<Running> {
    Arc::new(
        common::start(Config {
            model_repository: Some(dir.to_owned()),
            poll_interval: None,
            fault_injection: true,
            ..common::config()
        })
        .await,
    )
}

fn slow_request(seed: f32, rows: usize, parameters: &[(&str, u64)]) -> pb::ModelInferRequest {
    let x: Vec<f32> = (0..rows * 256).map(|i| seed + i as f32).collect();
    let mut req = grpc_request("slow", &[], parameters);
    req.inputs[0].shape = vec![rows as i64, 256];
    req.raw_input_contents = vec![Bytes::from(
        x.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>(),
    )];
    req
}

/// Sends a full batch that the only replica takes and holds; returns once
/// it is held. [`release`] lets it run.
async fn occupy(
    server: &Arc<Running>,
) -> tokio::task::JoinHandle<Result<tonic::Response<pb::ModelInferResponse>, tonic::Status>> {
    let sv = server.state.registry.get("slow", 0).unwrap();
    assert!(sv.scheduler().faults().hold(true));
    let blocker = {
        let server = server.clone();
        tokio::spawn(async move {
            common::oip(&server)
                .await
                .model_infer(slow_request(0.0, 8, &[]))
                .await
        })
    };
    let start = Instant::now();
    while sv.scheduler().faults().held() == 0 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the replica takes the blocker"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    blocker
}

fn release(server: &Running) {
    let sv = server.state.registry.get("slow", 0).unwrap();
    assert!(sv.scheduler().faults().hold(false));
}

/// A request running or queued on `slow`, by name.
type Named = (
    &'static str,
    tokio::task::JoinHandle<Result<tonic::Response<pb::ModelInferResponse>, tonic::Status>>,
);

/// Lets the held replica of `slow` run one batch at a time, as many as
/// there are requests (full batches: one request each), and returns the
/// names in the order their requests were answered, each answer checked
/// to be a full batch of outputs.
async fn run_order(server: &Running, mut requests: Vec<Named>) -> Vec<&'static str> {
    let sv = server.state.registry.get("slow", 0).unwrap();
    let faults = sv.scheduler().faults();
    let mut order = Vec::new();
    for _ in 0..requests.len() {
        assert!(faults.step());
        let start = Instant::now();
        loop {
            if let Some(i) = requests.iter().position(|(_, t)| t.is_finished()) {
                let (name, t) = requests.remove(i);
                let reply = t.await.unwrap().unwrap_or_else(|e| panic!("{name}: {e}"));
                assert_eq!(reply.get_ref().outputs[0].shape, vec![8, 256], "{name}");
                order.push(name);
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "a step runs a batch"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    faults.hold(false);
    order
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_high_priority_job_overtakes_queued_low_priority_ones() {
    let dir = slow_repository("priority_levels = 2\ndefault_priority_level = 2");
    let server = serve_held(dir.path()).await;
    let blocker = occupy(&server).await;
    let sv = server.state.registry.get("slow", 0).unwrap();
    let mut tasks: Vec<Named> = vec![("blocker", blocker)];
    for (name, priority) in [("low1", 0u64), ("low2", 2), ("low3", 0), ("high", 1)] {
        let server = server.clone();
        let task = tokio::spawn(async move {
            let params: &[(&str, u64)] = &[("priority", priority)];
            common::oip(&server)
                .await
                .model_infer(slow_request(1.0, 8, params))
                .await
        });
        tasks.push((name, task));
        // Queued in this order: the blocker and the requests so far.
        while sv.scheduler().outstanding() < tasks.len() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    drop(sv);
    // One batch at a time: each step lets the held batch run, and the
    // replica takes (and holds) the next.
    assert_eq!(
        run_order(&server, tasks).await,
        vec!["blocker", "high", "low1", "low2", "low3"],
        "run order"
    );
    // A priority outside the levels is refused.
    let s = common::oip(&server)
        .await
        .model_infer(slow_request(1.0, 1, &[("priority", 3)]))
        .await
        .unwrap_err();
    assert_eq!(s.code(), tonic::Code::InvalidArgument);
    assert_eq!(
        s.message(),
        "parameter 'priority' 3 is outside the priority levels of model 'slow', 1 (the highest) to 2; 0 asks for the default"
    );
    Arc::try_unwrap(server).unwrap().shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_queue_timeout_answers_at_once_and_the_job_never_runs() {
    let dir = slow_repository("default_queue_timeout_us = 60000");
    let server = serve_held(dir.path()).await;
    let blocker = occupy(&server).await;
    // The request's own timeout (OIP gRPC), then the model's default (REST
    // and MindSpore), each far shorter than the blocker's run.
    let started = Instant::now();
    let s = common::oip(&server)
        .await
        .model_infer(slow_request(2.0, 1, &[("timeout", 30_000)]))
        .await
        .unwrap_err();
    let waited = started.elapsed();
    assert_eq!(s.code(), tonic::Code::DeadlineExceeded, "{s}");
    assert_eq!(
        s.message(),
        "Deadline Exceeded: the request waited in the queue of model 'slow' past its timeout, and did not run"
    );
    let x: Vec<f32> = vec![0.5; 256];
    let r = common::http()
        .post(common::rest(&server, "/v2/models/slow/infer"))
        .json(&json!({"inputs": [{"name": "x", "shape": [1, 256], "datatype": "FP32", "data": x}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 504);
    let instance: NamedTensors =
        [("x".to_string(), Tensor::from_slice(&[256], &x).unwrap())].into();
    let reply = common::ms(&server)
        .await
        .predict(mindspore::grpc::encode_request("slow", "predict", 0, &[instance]).unwrap())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.error_msg[0].error_code, 1);
    assert_eq!(
        reply.error_msg[0].error_msg.as_ref(),
        b"Deadline Exceeded: the request's deadline passed before it ran"
    );
    release(&server);
    let blocked = blocker.await.unwrap().unwrap();
    assert_eq!(blocked.get_ref().outputs[0].shape, vec![8, 256]);
    println!("the queue timeout answered after {waited:?}");
    // Only the blocker's eight rows ran.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(rows_run(&server, "slow"), 8);
    let sv = server.state.registry.get("slow", 0).unwrap();
    assert_eq!(
        sv.scheduler()
            .counters()
            .queue_timeouts
            .load(Ordering::Relaxed),
        3
    );
    drop(sv);
    Arc::try_unwrap(server).unwrap().shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_job_past_its_queue_timeout_is_delayed_behind_jobs_on_time_not_refused() {
    // Triton's `timeout_action: DELAY` (here servable.toml's
    // `queue_timeout_action = "delay"`).
    let dir = slow_repository("default_queue_timeout_us = 30000\nqueue_timeout_action = \"delay\"");
    let server = serve_held(dir.path()).await;
    let blocker = occupy(&server).await;
    let sv = server.state.registry.get("slow", 0).unwrap();
    let send = |name: &'static str, params: &'static [(&'static str, u64)]| {
        let server = server.clone();
        let task = tokio::spawn(async move {
            common::oip(&server)
                .await
                .model_infer(slow_request(1.0, 8, params))
                .await
        });
        (name, task)
    };
    // `late` waits past its 30 ms; `on_time` comes after it, with a
    // timeout of its own of 10 s.
    let mut tasks: Vec<Named> = vec![("blocker", blocker), send("late", &[])];
    let start = Instant::now();
    while sv
        .scheduler()
        .counters()
        .queue_delays
        .load(Ordering::Relaxed)
        == 0
    {
        assert!(start.elapsed() < Duration::from_secs(10), "late is delayed");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    tasks.push(send("on_time", &[("timeout", 10_000_000)]));
    while sv.scheduler().outstanding() < 3 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    // Every request answered (a delayed job is not refused), `late` last.
    assert_eq!(
        run_order(&server, tasks).await,
        vec!["blocker", "on_time", "late"],
        "run order"
    );
    let counters = sv.scheduler().counters();
    assert_eq!(counters.queue_timeouts.load(Ordering::Relaxed), 0);
    assert_eq!(counters.queue_delays.load(Ordering::Relaxed), 1);
    drop(sv);
    Arc::try_unwrap(server).unwrap().shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cancelled_queued_job_never_runs() {
    let dir = slow_repository("");
    let server = serve_held(dir.path()).await;
    let blocker = occupy(&server).await;
    let sv = server.state.registry.get("slow", 0).unwrap();
    // Waits until `n` requests are queued or running (the blocker is one).
    let outstanding = |n: usize, what: &'static str| {
        let sv = sv.clone();
        async move {
            let start = Instant::now();
            while sv.scheduler().outstanding() < n {
                assert!(start.elapsed() < Duration::from_secs(5), "{what}");
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
    };
    // Waits until `n` queued jobs were cancelled.
    let cancelled = |n: u64, what: &'static str| {
        let sv = sv.clone();
        async move {
            let start = Instant::now();
            let count = || {
                sv.scheduler()
                    .counters()
                    .cancelled_queued
                    .load(Ordering::Relaxed)
            };
            while count() < n {
                assert!(
                    start.elapsed() < Duration::from_secs(5),
                    "{what}: {} so far",
                    count()
                );
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
    };
    // gRPC: the client gives up (its stream is reset) once the job is
    // queued (not before: a call dropped before it arrives cancels nothing).
    let mut client = common::oip(&server).await;
    let call = client.model_infer(slow_request(3.0, 4, &[]));
    tokio::select! {
        r = call => panic!("the held call answered: {r:?}"),
        () = outstanding(2, "the gRPC job is queued") => {}
    }
    cancelled(1, "the reset gRPC stream's job leaves the queue").await;
    // REST: the client closes its connection while the job is queued.
    let body = json!({"inputs": [{"name": "x", "shape": [1, 256], "datatype": "FP32", "data": vec![0.25f32; 256]}]}).to_string();
    let mut tcp = tokio::net::TcpStream::connect(server.rest_address)
        .await
        .unwrap();
    use tokio::io::AsyncWriteExt;
    tcp.write_all(
        format!("POST /v2/models/slow/infer HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}", body.len()).as_bytes(),
    )
    .await
    .unwrap();
    outstanding(2, "the REST job is queued").await;
    drop(tcp);
    cancelled(2, "the closed connection's job leaves the queue").await;
    release(&server);
    blocker.await.unwrap().unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(rows_run(&server, "slow"), 8, "only the blocker's rows ran");
    let text = common::metrics(&server).await;
    assert!(
        text.contains("serving_cancelled_total{servable=\"slow\",version=\"1\",when=\"queued\"} 2"),
        "{text}"
    );
    drop(sv);
    Arc::try_unwrap(server).unwrap().shutdown().await;
}

#[tokio::test]
async fn mindspore_string_bytes_that_are_not_utf8_fail_their_instance_only() {
    let dir = tempfile::tempdir().unwrap();
    let any = [Dim::Dynamic("n")];
    common::write(
        dir.path(),
        "text/servable.toml",
        b"[[model]]\nname = \"m\"\nfile = \"m.onnx\"\n\n[[method]]\nname = \"echo\"\ninputs = [\"s\"]\noutputs = [\"t\"]\n\n[[method.stage]]\nmodel = \"m\"\ninputs = [\"s\"]\noutputs = [\"t\"]\n",
    );
    common::write(
        dir.path(),
        "text/1/m.onnx",
        &ModelBuilder::new("text")
            .input("s", DataType::String, &any)
            .output("t", DataType::String, &any)
            .node("Identity", &["s"], &["t"], vec![])
            .build(),
    );
    let server = serve(dir.path()).await;
    let instance = |b: &[u8]| -> NamedTensors {
        [(
            "s".to_string(),
            Tensor::from_elements(DataType::Bytes, vec![1], vec![Bytes::copy_from_slice(b)])
                .unwrap(),
        )]
        .into()
    };
    let req = mindspore::grpc::encode_request(
        "text",
        "echo",
        0,
        &[instance(b"ok"), instance(&[0xff, 0xfe]), instance(b"a\0b")],
    )
    .unwrap();
    let reply = common::ms(&server)
        .await
        .predict(req)
        .await
        .unwrap()
        .into_inner();
    let Outcome::Instances(r) = mindspore::grpc::decode_reply(reply, 3).unwrap() else {
        panic!("the request failed as a whole")
    };
    assert!(r[0].is_ok());
    let e = r[1].as_ref().unwrap_err();
    assert_eq!(e.code, 2, "invalid input, not a system error");
    assert_eq!(
        e.message,
        "Given model input 0 element 0 is not UTF-8 text, which the model's string input requires"
    );
    // A NUL byte, which ONNX Runtime's C strings cannot carry: the client's
    // error (it was a 500, "Attempted to pass invalid string to C").
    let e = r[2].as_ref().unwrap_err();
    assert_eq!(
        e.code, 2,
        "invalid input, not a system error: {}",
        e.message
    );
    assert!(e.message.contains("holds a NUL byte at 1"), "{}", e.message);
    server.shutdown().await;
}
