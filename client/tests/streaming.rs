//! `Client::stream` (ModelStreamInfer) against the reference server: 100
//! requests in flight on one stream, two streams at once on one connection,
//! an in-band error that leaves the stream going, cancellation of queued
//! requests, and a typed refusal on a REST-only client.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use reference_server::server::{self, Config, Running};
use serving_client::{Client, Error, InferRequest, NamedTensor, Tensor};

fn config() -> Config {
    Config {
        grpc_address: ([127, 0, 0, 1], 0).into(),
        rest_address: ([127, 0, 0, 1], 0).into(),
        poll_interval: None,
        ..Config::default()
    }
}

fn add(model: &str, id: &str, v: f32) -> InferRequest {
    let x = Tensor::from_vec(&[2, 2], vec![v; 4]).unwrap();
    InferRequest {
        model_name: model.into(),
        id: id.into(),
        inputs: vec![NamedTensor::new("x1", x.clone()), NamedTensor::new("x2", x)],
        ..Default::default()
    }
}

fn client(server: &Running) -> Client {
    Client::builder()
        .endpoint(format!("grpc://{}", server.grpc_address))
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hundred_requests_in_flight_come_back_in_order_with_their_ids() {
    let server = server::start(config()).await.unwrap();
    let client = client(&server);
    // The stream opens before any request is sent (the server answers
    // with its headers at once).
    let (requests, mut answers) = tokio::time::timeout(Duration::from_secs(5), client.stream())
        .await
        .expect("the stream opens without a first request")
        .unwrap();
    // All 100 are sent before any answer is read.
    for i in 0..100 {
        requests
            .send(&add("add", &format!("r{i}"), i as f32))
            .await
            .unwrap();
    }
    requests.finish();
    let mut n = 0;
    while let Some(answer) = answers.next().await {
        let r = answer.unwrap();
        assert_eq!(r.id, format!("r{n}"));
        assert_eq!(r.output::<f32>("y").unwrap(), vec![2.0 * n as f32; 4]);
        n += 1;
    }
    assert_eq!(n, 100, "every request answered, then the stream ended");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_streams_at_once_each_get_their_own_answers() {
    let server = server::start(config()).await.unwrap();
    let client = client(&server);
    let (a, mut a_answers) = client.stream().await.unwrap();
    let (b, mut b_answers) = client.stream().await.unwrap();
    for i in 0..50 {
        a.send(&add("add", &format!("a{i}"), i as f32))
            .await
            .unwrap();
        b.send(&add("add", &format!("b{i}"), -(i as f32)))
            .await
            .unwrap();
    }
    drop((a, b));
    for i in 0..50 {
        let ra = a_answers.next().await.unwrap().unwrap();
        let rb = b_answers.next().await.unwrap().unwrap();
        assert_eq!(
            (ra.id.as_str(), rb.id.as_str()),
            (&*format!("a{i}"), &*format!("b{i}"))
        );
        assert_eq!(ra.output::<f32>("y").unwrap(), vec![2.0 * i as f32; 4]);
        assert_eq!(rb.output::<f32>("y").unwrap(), vec![-2.0 * i as f32; 4]);
    }
    assert!(a_answers.next().await.is_none() && b_answers.next().await.is_none());
    server.shutdown().await;
}

#[tokio::test]
async fn an_in_band_error_is_that_requests_own_and_the_stream_goes_on() {
    let server = server::start(config()).await.unwrap();
    let client = client(&server);
    let (requests, mut answers) = client.stream().await.unwrap();
    requests.send(&add("add", "ok-1", 1.0)).await.unwrap();
    requests.send(&add("nope", "bad", 1.0)).await.unwrap();
    requests.send(&add("add", "ok-2", 2.0)).await.unwrap();
    requests.finish();
    assert_eq!(answers.next().await.unwrap().unwrap().id, "ok-1");
    match answers.next().await.unwrap() {
        Err(Error::Stream {
            id, model, message, ..
        }) => {
            assert_eq!((id.as_str(), model.as_str()), ("bad", "nope"));
            assert!(message.contains("nope"), "{message}");
        }
        other => panic!("the bad request's own error: {other:?}"),
    }
    assert_eq!(answers.next().await.unwrap().unwrap().id, "ok-2");
    assert!(answers.next().await.is_none());
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dropping_the_answers_cancels_the_queued_requests() {
    // One replica that holds each batch open for 2 s, so requests queue.
    let dir = tempfile::tempdir().unwrap();
    let toml = "[[model]]\nname = \"m\"\nfile = \"m.onnx\"\n\n[[method]]\nname = \"add_common\"\ninputs = [\"x1\", \"x2\"]\noutputs = [\"y\"]\n\n[[method.stage]]\nmodel = \"m\"\ninputs = [\"x1\", \"x2\"]\noutputs = [\"y\"]\n\n[deployment]\nmax_batch_size = 8\nbatch_timeout_us = 2000000\n";
    std::fs::create_dir_all(dir.path().join("slow/1")).unwrap();
    std::fs::write(dir.path().join("slow/servable.toml"), toml).unwrap();
    std::fs::write(
        dir.path().join("slow/1/m.onnx"),
        reference_server::demo::add_model(),
    )
    .unwrap();
    let server = server::start(Config {
        model_repository: Some(dir.path().to_owned()),
        ..config()
    })
    .await
    .unwrap();
    let sv = server.state.registry.get("slow", 0).unwrap();
    let client = client(&server);
    let (requests, answers) = client.stream().await.unwrap();
    for i in 0..5 {
        requests
            .send(&add("slow", &format!("c{i}"), 1.0))
            .await
            .unwrap();
    }
    let start = Instant::now();
    while sv.scheduler().outstanding() < 5 {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "five requests queued"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    answers.cancel();
    let counters = sv.scheduler().counters();
    let start = Instant::now();
    while counters.cancelled_queued.load(Ordering::Relaxed) < 5 {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "cancelled with the stream: {} so far",
            counters.cancelled_queued.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(
        counters.execution_count.load(Ordering::Relaxed),
        0,
        "none ran"
    );
    // The sending half sees the stream gone.
    let mut refused = false;
    for _ in 0..200 {
        if let Err(e) = requests.send(&add("slow", "late", 1.0)).await {
            assert!(matches!(e, Error::StreamClosed { .. }), "{e:?}");
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(refused, "sending on a cancelled stream fails");
    drop(sv);
    server.shutdown().await;
}

#[tokio::test]
async fn a_client_without_a_grpc_endpoint_cannot_stream() {
    let server = server::start(config()).await.unwrap();
    let client = Client::builder()
        .endpoint(format!("http://{}", server.rest_address))
        .build()
        .unwrap();
    let e = client.stream().await.unwrap_err();
    assert!(matches!(e, Error::NotSupported { .. }), "{e:?}");
    assert!(e.to_string().contains("gRPC endpoint"), "{e}");
    server.shutdown().await;
}
