//! Replicas, batching across requests, faults, backpressure and deadlines.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use reference_server::onnx::{Dim, ModelBuilder};
use reference_server::server::{Config, Running};
use serde_json::{Value, json};
use serving_proto::mindspore::{self, Outcome};
use serving_proto::oip::grpc::Contents;
use serving_proto::oip::{InferRequest, NamedTensor};
use serving_proto::{DataType, NamedTensors, Tensor, oip};

/// `y = x1 + x2` over float32 rows of 4, batch dimension dynamic, with the
/// given deployment.
fn repo(deployment: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let rows = [Dim::Dynamic("batch"), Dim::Fixed(4)];
    let model = ModelBuilder::new("add_rows")
        .input("x1", DataType::Fp32, &rows)
        .input("x2", DataType::Fp32, &rows)
        .output("y", DataType::Fp32, &rows)
        .node("Add", &["x1", "x2"], &["y"], vec![])
        .build();
    let toml = format!(
        "[[model]]\nname = \"m\"\nfile = \"m.onnx\"\nwith_batch_dim = true\n\n[[method]]\nname = \"add\"\ninputs = [\"x1\", \"x2\"]\noutputs = [\"y\"]\n\n[[method.stage]]\nmodel = \"m\"\ninputs = [\"x1\", \"x2\"]\noutputs = [\"y\"]\n\n[deployment]\n{deployment}\n"
    );
    common::write(dir.path(), "rows/servable.toml", toml.as_bytes());
    common::write(dir.path(), "rows/1/m.onnx", &model);
    dir
}

async fn serve(dir: &std::path::Path, tweak: impl FnOnce(&mut Config)) -> Running {
    let mut config = Config {
        model_repository: Some(dir.to_owned()),
        ..common::config()
    };
    tweak(&mut config);
    common::start(config).await
}

fn row(seed: f32) -> NamedTensors {
    let x1: Vec<f32> = (0..4).map(|i| seed + i as f32).collect();
    [
        ("x1".to_string(), Tensor::from_slice(&[4], &x1).unwrap()),
        (
            "x2".to_string(),
            Tensor::from_slice(&[4], &[seed; 4]).unwrap(),
        ),
    ]
    .into()
}

fn expected(seed: f32) -> Vec<f32> {
    (0..4).map(|i| 2.0 * seed + i as f32).collect()
}

fn stats(server: &Running) -> Vec<(u64, u64, u64)> {
    let sv = server.state.registry.get("rows", 0).unwrap();
    sv.scheduler()
        .stats()
        .iter()
        .map(|s| {
            use std::sync::atomic::Ordering::Relaxed;
            (
                s.runs.load(Relaxed),
                s.items.load(Relaxed),
                s.failures.load(Relaxed),
            )
        })
        .collect()
}

/// Many clients, each checking that it gets exactly its own answers.
async fn load(server: &Running, clients: usize, requests: usize) -> usize {
    let mut tasks = Vec::new();
    for c in 0..clients {
        let mut client = common::ms(server).await;
        tasks.push(tokio::spawn(async move {
            let mut ok = 0;
            for r in 0..requests {
                let seeds: Vec<f32> = (0..1 + (c + r) % 3)
                    .map(|k| (c * 1000 + r * 10 + k) as f32)
                    .collect();
                let instances: Vec<NamedTensors> = seeds.iter().map(|&s| row(s)).collect();
                let req = mindspore::grpc::encode_request("rows", "add", 0, &instances).unwrap();
                let reply = client.predict(req).await.unwrap().into_inner();
                let Outcome::Instances(results) =
                    mindspore::grpc::decode_reply(reply, seeds.len()).unwrap()
                else {
                    panic!("client {c} request {r} failed")
                };
                for (seed, result) in seeds.iter().zip(results) {
                    let y = result
                        .unwrap_or_else(|e| panic!("client {c} request {r}: {e}"))
                        .remove("y")
                        .unwrap();
                    assert_eq!(y.shape(), &[4]);
                    assert_eq!(
                        y.to_vec::<f32>().unwrap(),
                        expected(*seed),
                        "client {c} request {r}: cross-talk"
                    );
                }
                ok += 1;
            }
            ok
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_share_concurrent_work_without_cross_talk() {
    let dir = repo(
        "devices = [\"cpu\", \"cpu\", \"cpu\"]\nintra_op_threads = 1\nmax_batch_size = 4\nbatch_timeout_us = 2000",
    );
    let server = serve(dir.path(), |_| {}).await;
    assert_eq!(load(&server, 24, 20).await, 24 * 20);
    let stats = stats(&server);
    println!("per-replica (runs, instances, failures): {stats:?}");
    assert_eq!(stats.len(), 3);
    assert!(
        stats.iter().all(|&(runs, items, _)| runs > 0 && items > 0),
        "every replica did work: {stats:?}"
    );
    let sv = server.state.registry.get("rows", 0).unwrap();
    let batches = sv.scheduler().batch_sizes();
    assert!(
        batches.count_above(1.0) > 0,
        "instances of different requests were batched"
    );
    assert_eq!(batches.count_above(4.0), 0, "no batch over max_batch_size");
    // The metrics endpoint tells the same story.
    let text = common::metrics(&server).await;
    let line = |prefix: &str| {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix} in\n{text}"))
            .to_owned()
    };
    let ok =
        r#"serving_requests_total{protocol="mindspore",transport="grpc",model="rows",code="OK"}"#;
    assert_eq!(line(ok), format!("{ok} 480"));
    assert!(
        line(r#"serving_request_duration_seconds_count{protocol="mindspore",transport="grpc"}"#)
            .ends_with(" 480")
    );
    assert!(line(r#"serving_queue_depth{servable="rows",version="1"}"#).ends_with(" 0"));
    assert!(
        line(r#"serving_batch_size_count{servable="rows",version="1"}"#)
            .ends_with(&format!(" {}", batches.count()))
    );
    for replica in 0..3 {
        let prefix = format!(
            r#"serving_replica_alive{{servable="rows",version="1",replica="{replica}",device="cpu"}}"#
        );
        assert_eq!(line(&prefix), format!("{prefix} 1"));
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failing_replica_loses_no_request() {
    let dir = repo("devices = [\"cpu\", \"cpu\"]\nintra_op_threads = 1");
    let server = serve(dir.path(), |c| c.fault_injection = true).await;
    let sv = server.state.registry.get("rows", 0).unwrap();
    let load = load(&server, 8, 60);
    // One replica at a time fails while the other carries on; each comes back
    // before the next failure.
    let killer = async {
        let mut probe = common::ms(&server).await;
        for i in 0..2 {
            tokio::time::sleep(Duration::from_millis(20)).await;
            assert!(sv.scheduler().faults().kill(i));
            let start = Instant::now();
            while stats(&server).iter().map(|s| s.2).sum::<u64>() < i as u64 + 1
                || sv.scheduler().alive() < 2
            {
                assert!(
                    start.elapsed() < Duration::from_secs(20),
                    "replica {i} fails and restarts"
                );
                // Traffic of its own, so that the marked replica runs again
                // even after the load has finished; it must succeed too.
                let req = mindspore::grpc::encode_request("rows", "add", 0, &[row(7.0)]).unwrap();
                let reply = probe.predict(req).await.unwrap().into_inner();
                let out = mindspore::grpc::decode_reply(reply, 1)
                    .unwrap()
                    .instance(0)
                    .unwrap();
                assert_eq!(out.unwrap()["y"].to_vec::<f32>().unwrap(), expected(7.0));
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    };
    let (done, ()) = tokio::join!(load, killer);
    assert_eq!(done, 8 * 60, "every request answered correctly");
    let failures: u64 = stats(&server).iter().map(|s| s.2).sum();
    assert!(
        failures >= 1,
        "a replica failed on purpose: {:?}",
        stats(&server)
    );
    // The failed replicas come back.
    let start = Instant::now();
    while sv.scheduler().alive() < 2 {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "replicas restart"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.shutdown().await;
}

async fn rest_add(server: &Running) -> (u16, Value) {
    let r = common::http()
        .post(common::rest(server, "/model/rows:add"))
        .json(&json!({"instances": [{"x1": [1.0, 2.0, 3.0, 4.0], "x2": [1.0, 1.0, 1.0, 1.0]}]}))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

fn oip_rows() -> InferRequest {
    InferRequest {
        model_name: "rows".into(),
        inputs: vec![
            NamedTensor::new("x1", Tensor::from_slice(&[1, 4], &[1f32; 4]).unwrap()),
            NamedTensor::new("x2", Tensor::from_slice(&[1, 4], &[1f32; 4]).unwrap()),
        ],
        ..Default::default()
    }
}

#[tokio::test]
async fn no_replica_alive_is_servable_not_available_and_the_server_stays_up() {
    let dir = repo("devices = [\"cpu\"]");
    let server = serve(dir.path(), |c| c.fault_injection = true).await;
    let sv = server.state.registry.get("rows", 0).unwrap();
    assert!(sv.scheduler().faults().block_restarts(true));
    assert!(sv.scheduler().faults().kill(0));
    // The request that meets the failing replica is re-queued, finds no
    // replica, and gets MindSpore's code 5.
    let (status, body) = rest_add(&server).await;
    assert_eq!(
        (status, body),
        (
            503,
            json!({"error_msg": "Request servable(rows) method(add) , servable is not available"})
        )
    );
    let mut ms = common::ms(&server).await;
    let req = mindspore::grpc::encode_request("rows", "add", 0, &[row(1.0)]).unwrap();
    let reply = ms.predict(req).await.unwrap().into_inner();
    assert_eq!(reply.error_msg[0].error_code, 5);
    let e = common::oip(&server)
        .await
        .model_infer(oip::grpc::encode_request(&oip_rows(), Contents::Raw).unwrap())
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unavailable);
    // Restarts allowed again: the replica returns and requests succeed.
    sv.scheduler().faults().block_restarts(false);
    let start = Instant::now();
    while sv.scheduler().alive() == 0 {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the replica restarts"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        rest_add(&server).await,
        (200, json!({"instances": [{"y": [2.0, 3.0, 4.0, 5.0]}]}))
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_full_queue_answers_at_once() {
    // One replica holding a batch open for 800 ms keeps one request in flight.
    let dir = repo("devices = [\"cpu\"]\nmax_batch_size = 8\nbatch_timeout_us = 800000");
    let server = Arc::new(serve(dir.path(), |c| c.max_enqueued_requests = 1).await);
    let first = {
        let server = server.clone();
        tokio::spawn(async move { rest_add(&server).await })
    };
    tokio::time::sleep(Duration::from_millis(150)).await;
    let started = Instant::now();
    let (status, body) = rest_add(&server).await;
    assert_eq!(
        (status, body),
        (
            503,
            json!({"error_msg": "Serving Error: enqueued requests count exceeds the limit 1"})
        )
    );
    let mut ms = common::ms(&server).await;
    let reply = ms
        .predict(mindspore::grpc::encode_request("rows", "add", 0, &[row(1.0)]).unwrap())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (
            reply.error_msg[0].error_code,
            reply.error_msg[0].error_msg.as_ref()
        ),
        (
            1,
            &b"Serving Error: enqueued requests count exceeds the limit 1"[..]
        )
    );
    let e = common::oip(&server)
        .await
        .model_infer(oip::grpc::encode_request(&oip_rows(), Contents::Raw).unwrap())
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unavailable);
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "refused at once, not queued"
    );
    assert_eq!(
        first.await.unwrap(),
        (200, json!({"instances": [{"y": [2.0, 3.0, 4.0, 5.0]}]}))
    );
    Arc::try_unwrap(server).unwrap().shutdown().await;
}

#[tokio::test]
async fn an_expired_deadline_drops_the_work_before_it_runs() {
    let dir = repo("devices = [\"cpu\"]\nmax_batch_size = 8\nbatch_timeout_us = 600000");
    let server = Arc::new(serve(dir.path(), |_| {}).await);
    // The only replica is busy filling a batch for 600 ms.
    let first = {
        let server = server.clone();
        tokio::spawn(async move { rest_add(&server).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    // An OIP request (run whole, not batched) waits behind it with a 100 ms deadline.
    let mut req =
        tonic::Request::new(oip::grpc::encode_request(&oip_rows(), Contents::Raw).unwrap());
    req.set_timeout(Duration::from_millis(100));
    let e = common::oip(&server)
        .await
        .model_infer(req)
        .await
        .unwrap_err();
    assert!(
        matches!(
            e.code(),
            tonic::Code::DeadlineExceeded | tonic::Code::Cancelled
        ),
        "{e:?}"
    );
    // REST with Request-Timeout-Ms.
    let r = common::http()
        .post(common::rest(&server, "/v2/models/rows/infer"))
        .header("Request-Timeout-Ms", "100")
        .body(
            oip::rest::encode_request(&oip_rows(), false)
                .unwrap()
                .to_bytes(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 504);
    assert_eq!(first.await.unwrap().0, 200);
    // Only the first request ran: the expired ones were answered unrun.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let items: u64 = stats(&server).iter().map(|s| s.1).sum();
    assert_eq!(items, 1, "expired work must not run");
    Arc::try_unwrap(server).unwrap().shutdown().await;
}
