//! Sequences (`InferBuilder::sequence`, `InferRequest::set_sequence`)
//! against the reference server serving a stateful model with sequence
//! batching: a running sum the server keeps per sequence, on gRPC and
//! REST, integer and text correlation IDs, and two sequences interleaved
//! on one stream.

use futures_util::StreamExt;
use reference_server::onnx;
use reference_server::server::{self, Config, Running};
use serving_client::{Client, InferRequest, NamedTensor, Tensor};

async fn serve(dir: &std::path::Path) -> Running {
    server::start(Config {
        grpc_address: ([127, 0, 0, 1], 0).into(),
        rest_address: ([127, 0, 0, 1], 0).into(),
        model_repository: Some(dir.to_owned()),
        poll_interval: None,
        ..Config::default()
    })
    .await
    .expect("server starts")
}

fn repository() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("sum");
    std::fs::create_dir_all(model.join("1")).unwrap();
    std::fs::write(model.join("1/model.onnx"), onnx::running_sum()).unwrap();
    let config = onnx::running_sum_config("sum", "direct { }", 1_000_000);
    std::fs::write(model.join("config.pbtxt"), config).unwrap();
    dir
}

fn value(x: f32) -> Tensor {
    Tensor::from_vec(&[1, 1], vec![x]).unwrap()
}

fn sum_of(r: &serving_client::InferResponse) -> f32 {
    r.output::<f32>("OUTPUT").unwrap()[0]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sequence_keeps_its_sum_on_both_transports_and_on_a_stream() {
    let dir = repository();
    let s = serve(dir.path()).await;
    for url in [
        format!("grpc://{}", s.grpc_address),
        format!("http://{}", s.rest_address),
    ] {
        let client = Client::builder().endpoint(&url).build().unwrap();
        let ids: [serving_client::SequenceId; 2] = [11u64.into(), "user-b".into()];
        for id in ids {
            let mut sum = 0.0;
            for step in 1..=4 {
                sum += step as f32;
                let r = client
                    .infer("sum")
                    .input("INPUT", value(step as f32))
                    .sequence(id.clone(), step == 1, step == 4)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(sum_of(&r), sum, "{url} {id:?} step {step}");
            }
        }
        // Without a sequence: refused with Triton's text.
        let e = client
            .infer("sum")
            .input("INPUT", value(1.0))
            .send()
            .await
            .unwrap_err();
        assert!(
            e.to_string()
                .contains("must specify a non-zero or non-empty correlation ID"),
            "{url}: {e}"
        );
    }

    // Two sequences interleaved on one stream, all sent before any answer
    // is read: each answer is its own sequence's sum so far.
    let client = Client::builder()
        .endpoint(format!("grpc://{}", s.grpc_address))
        .build()
        .unwrap();
    let (requests, mut answers) = client.stream().await.unwrap();
    let mut expected = Vec::new();
    let mut sums = [0.0f32; 2];
    for step in 1..=5u64 {
        for (k, id) in [21u64, 22].into_iter().enumerate() {
            let x = (step * (k as u64 + 1)) as f32;
            sums[k] += x;
            let mut r = InferRequest {
                model_name: "sum".into(),
                id: format!("{id}-{step}"),
                inputs: vec![NamedTensor::new("INPUT", value(x))],
                ..Default::default()
            };
            r.set_sequence(id, step == 1, step == 5);
            requests.send(&r).await.unwrap();
            expected.push((format!("{id}-{step}"), sums[k]));
        }
    }
    requests.finish();
    let mut got = Vec::new();
    while let Some(answer) = answers.next().await {
        let r = answer.unwrap();
        got.push((r.id.clone(), sum_of(&r)));
    }
    got.sort_by(|a, b| a.0.cmp(&b.0));
    expected.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(got, expected);
    s.shutdown().await;
}
