//! Triton's response cache: `--cache-config local,size=BYTES` and a model's
//! `response_cache { enable: true }`. A repeated request is answered from
//! the cache, identically, without running the model; the hits and misses
//! are in the statistics extension and the metrics; the cache keeps to its
//! byte bound by giving up the least recently used answer; a model that
//! does not enable it runs every time.

mod common;

use reference_server::onnx::{Dim, ModelBuilder};
use reference_server::server::Config;
use serde_json::{Value, json};
use serving_proto::DataType;

fn model(dir: &std::path::Path, name: &str, cache: bool) {
    let dims = [Dim::Dynamic("batch"), Dim::Fixed(4)];
    let onnx = ModelBuilder::new(name)
        .input("x", DataType::Fp32, &dims)
        .output("y", DataType::Fp32, &dims)
        .node("Add", &["x", "x"], &["y"], vec![])
        .build();
    common::write(dir, &format!("{name}/1/model.onnx"), &onnx);
    let config = format!(
        "name: \"{name}\"\nplatform: \"onnxruntime_onnx\"\nmax_batch_size: 8\n{}input [ {{ name: \"x\" data_type: TYPE_FP32 dims: [ 4 ] }} ]\noutput [ {{ name: \"y\" data_type: TYPE_FP32 dims: [ 4 ] }} ]\n",
        if cache {
            "response_cache { enable: true }\n"
        } else {
            ""
        }
    );
    common::write(dir, &format!("{name}/config.pbtxt"), config.as_bytes());
}

fn body(v: f32) -> Value {
    json!({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [v, v, v, v]}]})
}

async fn infer(server: &reference_server::server::Running, name: &str, v: f32) -> Value {
    let r = common::http()
        .post(common::rest(server, &format!("/v2/models/{name}/infer")))
        .json(&body(v))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let out: Value = r.json().await.unwrap();
    assert_eq!(
        out["outputs"][0]["data"],
        json!([2.0 * v, 2.0 * v, 2.0 * v, 2.0 * v])
    );
    out
}

/// (cache hits, cache misses, runs) of a model.
async fn counts(server: &reference_server::server::Running, name: &str) -> (u64, u64, u64) {
    let stats = common::get_json(server, &format!("/v2/models/{name}/stats")).await;
    let s = &stats["model_stats"][0];
    let n = |v: &Value| v.as_u64().unwrap_or_else(|| panic!("{stats}"));
    (
        n(&s["inference_stats"]["cache_hit"]["count"]),
        n(&s["inference_stats"]["cache_miss"]["count"]),
        n(&s["execution_count"]),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_requests_are_answered_from_the_cache_within_its_bound() {
    let dir = tempfile::tempdir().unwrap();
    model(dir.path(), "cached", true);
    model(dir.path(), "uncached", false);
    // Room for two answers of this model, not three.
    let server = common::start(Config {
        model_repository: Some(dir.path().to_owned()),
        response_cache_bytes: Some(800),
        ..common::config()
    })
    .await;

    let first = infer(&server, "cached", 1.0).await;
    let again = infer(&server, "cached", 1.0).await;
    assert_eq!(first, again, "the cached answer is the same answer");
    assert_eq!(
        counts(&server, "cached").await,
        (1, 1, 1),
        "one run, one hit"
    );

    // Two more answers: the least recently used (1.0) is given up.
    infer(&server, "cached", 2.0).await;
    infer(&server, "cached", 3.0).await;
    infer(&server, "cached", 3.0).await;
    assert_eq!(counts(&server, "cached").await, (2, 3, 3));
    infer(&server, "cached", 1.0).await;
    assert_eq!(
        counts(&server, "cached").await,
        (2, 4, 4),
        "1.0 was given up for the bound and runs again"
    );

    // A model that does not enable the cache runs every time.
    infer(&server, "uncached", 1.0).await;
    infer(&server, "uncached", 1.0).await;
    assert_eq!(counts(&server, "uncached").await, (0, 0, 2));

    let metrics = common::metrics(&server).await;
    let line = metrics
        .lines()
        .find(|l| l.starts_with("serving_cache_hits_total{") && l.contains("\"cached\""))
        .unwrap_or_else(|| panic!("{metrics}"));
    assert!(line.ends_with(" 2"), "{line}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_server_cache_an_enabled_model_runs_every_time() {
    let dir = tempfile::tempdir().unwrap();
    model(dir.path(), "cached", true);
    let server = common::with_repository(dir.path()).await;
    infer(&server, "cached", 1.0).await;
    infer(&server, "cached", 1.0).await;
    assert_eq!(counts(&server, "cached").await, (0, 0, 2));
    server.shutdown().await;
}
