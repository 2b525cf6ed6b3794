//! Triton ensembles (`platform: "ensemble"` with `ensemble_scheduling`):
//! Python pre-processing, an ONNX model and Python post-processing, each
//! step a request of its own model, batched by that model's scheduler
//! under concurrent load; a failing step named in the error; metadata,
//! readiness and configuration as Triton gives them; configurations whose
//! steps cannot run refused at load.

mod common;

use std::path::Path;

use reference_server::onnx::{Dim, ModelBuilder};
use serde_json::{Value, json};
use serving_proto::DataType;

const PREPROCESS: &str = r#"
import numpy as np
import triton_python_backend_utils as pb_utils

class TritonPythonModel:
    def execute(self, requests):
        out = []
        for r in requests:
            text = pb_utils.get_input_tensor_by_name(r, "TEXT").as_numpy()
            x = np.array([[float(v) for v in t[0].decode().split(",")] for t in text], dtype=np.float32)
            out.append(pb_utils.InferenceResponse([pb_utils.Tensor("X", x)]))
        return out
"#;

const POSTPROCESS: &str = r#"
import numpy as np
import triton_python_backend_utils as pb_utils

class TritonPythonModel:
    def execute(self, requests):
        out = []
        for r in requests:
            y = pb_utils.get_input_tensor_by_name(r, "Y").as_numpy()
            if (y.sum(axis=1) < 0).any():
                out.append(pb_utils.InferenceResponse(error=pb_utils.TritonError("negative sum")))
                continue
            label = np.array([[("sum=%g" % s).encode()] for s in y.sum(axis=1)], dtype=object)
            peak = y.max(axis=1, keepdims=True)
            out.append(pb_utils.InferenceResponse([pb_utils.Tensor("LABEL", label), pb_utils.Tensor("PEAK", peak)]))
        return out
"#;

fn python(dir: &Path, name: &str, io: &str, code: &str) {
    let config = format!(
        "name: \"{name}\"\nbackend: \"python\"\nmax_batch_size: 8\ndynamic_batching {{ max_queue_delay_microseconds: 20000 }}\n{io}\n"
    );
    common::write(dir, &format!("{name}/config.pbtxt"), config.as_bytes());
    common::write(dir, &format!("{name}/1/model.py"), code.as_bytes());
}

const PIPELINE: &str = r#"
name: "pipeline"
platform: "ensemble"
max_batch_size: 8
input [ { name: "TEXT" data_type: TYPE_STRING dims: [ 1 ] } ]
output [
  { name: "LABEL" data_type: TYPE_STRING dims: [ 1 ] },
  { name: "DOUBLED" data_type: TYPE_FP32 dims: [ 4 ] }
]
ensemble_scheduling {
  step [
    {
      model_name: "preprocess"
      model_version: -1
      input_map { key: "TEXT" value: "TEXT" }
      output_map { key: "X" value: "features" }
    },
    {
      model_name: "double"
      model_version: -1
      input_map { key: "x" value: "features" }
      output_map { key: "y" value: "DOUBLED" }
    },
    {
      model_name: "postprocess"
      model_version: 1
      input_map { key: "Y" value: "DOUBLED" }
      output_map { key: "LABEL" value: "LABEL" }
    }
  ]
}
"#;

fn repository(pipeline: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    python(
        d,
        "preprocess",
        "input [ { name: \"TEXT\" data_type: TYPE_STRING dims: [ 1 ] } ]\noutput [ { name: \"X\" data_type: TYPE_FP32 dims: [ 4 ] } ]",
        PREPROCESS,
    );
    python(
        d,
        "postprocess",
        "input [ { name: \"Y\" data_type: TYPE_FP32 dims: [ 4 ] } ]\noutput [ { name: \"LABEL\" data_type: TYPE_STRING dims: [ 1 ] }, { name: \"PEAK\" data_type: TYPE_FP32 dims: [ 1 ] } ]",
        POSTPROCESS,
    );
    let dims = [Dim::Dynamic("batch"), Dim::Fixed(4)];
    let double = ModelBuilder::new("double")
        .input("x", DataType::Fp32, &dims)
        .output("y", DataType::Fp32, &dims)
        .node("Add", &["x", "x"], &["y"], vec![])
        .build();
    common::write(d, "double/1/model.onnx", &double);
    common::write(
        d,
        "double/config.pbtxt",
        b"name: \"double\"\nplatform: \"onnxruntime_onnx\"\nmax_batch_size: 8\ndynamic_batching { max_queue_delay_microseconds: 20000 }\ninput [ { name: \"x\" data_type: TYPE_FP32 dims: [ 4 ] } ]\noutput [ { name: \"y\" data_type: TYPE_FP32 dims: [ 4 ] } ]\n",
    );
    common::write(d, "pipeline/config.pbtxt", pipeline.as_bytes());
    std::fs::create_dir_all(d.join("pipeline/1")).unwrap();
    dir
}

fn request(text: &str) -> Value {
    json!({"inputs": [{"name": "TEXT", "datatype": "BYTES", "shape": [1, 1], "data": [text]}]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_ensemble_of_python_and_onnx_steps_batches_each_step_under_load() {
    let repo = repository(PIPELINE);
    let server = common::with_python_models(repo.path())
        .await
        .expect("the ensemble and its models load");
    let http = common::http();
    let url = common::rest(&server, "/v2/models/pipeline/infer");

    // Concurrent requests: each its own answer; each step's model batched
    // several of them together (up to three bursts, for a loaded machine).
    let mut batched = false;
    let mut sent = 0;
    for _ in 0..3 {
        let tasks: Vec<_> = (0..16)
            .map(|k| {
                let (http, url) = (http.clone(), url.clone());
                tokio::spawn(async move {
                    let text = format!("{k},1,2,3");
                    let r = http.post(url).json(&request(&text)).send().await.unwrap();
                    assert_eq!(r.status(), 200);
                    (k, r.json::<Value>().await.unwrap())
                })
            })
            .collect();
        for t in tasks {
            let (k, v) = t.await.unwrap();
            let doubled: Vec<f64> = [k as f64, 1.0, 2.0, 3.0].iter().map(|x| x * 2.0).collect();
            assert_eq!(common::output(&v, "DOUBLED")["data"], json!(doubled), "{v}");
            assert_eq!(common::output(&v, "DOUBLED")["shape"], json!([1, 4]));
            let sum: f64 = doubled.iter().sum();
            assert_eq!(
                common::output(&v, "LABEL")["data"],
                json!([format!("sum={sum}")])
            );
            assert!(
                v["outputs"].as_array().unwrap().len() == 2,
                "only the ensemble's outputs: {v}"
            );
            assert_eq!(v["model_name"], "pipeline");
        }
        sent += 16;
        let stats = common::get_json(&server, "/v2/models/double/stats").await;
        let s = &stats["model_stats"][0];
        assert_eq!(s["inference_count"], json!(sent), "{stats}");
        if s["execution_count"].as_u64().unwrap() < sent {
            batched = true;
            break;
        }
    }
    assert!(batched, "the ONNX step never batched requests together");
    // The ensemble counts its own requests, as Triton's statistics do.
    let stats = common::get_json(&server, "/v2/models/pipeline/stats").await;
    assert_eq!(
        stats["model_stats"][0]["inference_stats"]["success"]["count"],
        json!(sent),
        "{stats}"
    );

    // A failing step: the error names the ensemble, the step and its model.
    let r = http
        .post(&url)
        .json(&request("-1,-1,-1,-1"))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let v: Value = r.json().await.unwrap();
    assert_eq!(status, 500, "{v}");
    let e = v["error"].as_str().unwrap();
    assert!(
        e.starts_with("in ensemble 'pipeline', step 3 (model 'postprocess'): ")
            && e.contains("negative sum"),
        "{e}"
    );
    // A bad input to the first step is the client's error.
    let r = http
        .post(&url)
        .json(&json!({"inputs": [{"name": "TEXT", "datatype": "FP32", "shape": [1, 1], "data": [1.0]}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    // The failing step is a failed inference; the refused input is not.
    let stats = common::get_json(&server, "/v2/models/pipeline/stats").await;
    assert_eq!(
        stats["model_stats"][0]["inference_stats"]["fail"]["count"],
        json!(1),
        "{stats}"
    );

    // Metadata, readiness and configuration.
    let meta = common::get_json(&server, "/v2/models/pipeline").await;
    assert_eq!(meta["platform"], "ensemble", "{meta}");
    assert_eq!(
        meta["inputs"][0],
        json!({"name": "TEXT", "datatype": "BYTES", "shape": [-1, 1]})
    );
    let ready = http
        .get(common::rest(&server, "/v2/models/pipeline/ready"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    let config = common::get_json(&server, "/v2/models/pipeline/config").await;
    assert_eq!(config["platform"], "ensemble", "{config}");
    assert_eq!(
        config["ensemble_scheduling"]["step"][1]["model_name"], "double",
        "{config}"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ensembles_whose_steps_cannot_run_are_refused_at_load() {
    let cases = [
        (
            PIPELINE.replace(
                "value: \"features\" }\n      output_map { key: \"y\"",
                "value: \"nowhere\" }\n      output_map { key: \"y\"",
            ),
            "step 2 (model 'double') takes tensor 'nowhere', which neither an ensemble input nor a step's output_map gives",
        ),
        (
            PIPELINE.replace(
                "output_map { key: \"LABEL\" value: \"LABEL\" }",
                "output_map { key: \"LABEL\" value: \"OTHER\" }",
            ),
            "output 'LABEL' is given by no step's output_map",
        ),
        (
            PIPELINE.replace("model_version: 1\n", "model_version: 0\n"),
            "model_version 0",
        ),
        (
            PIPELINE.replace("platform: \"ensemble\"\n", ""),
            "ensemble_scheduling without the platform",
        ),
    ];
    for (config, expected) in cases {
        assert_ne!(config, PIPELINE, "the case changes the configuration");
        let repo = repository(&config);
        let e = common::with_python_models(repo.path())
            .await
            .expect_err("the ensemble must not load")
            .to_string();
        assert!(e.contains(expected), "expected '{expected}' in: {e}");
        assert!(e.contains("pipeline"), "{e}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unload_dependents_takes_the_composing_models_with_the_ensemble() {
    let repo = repository(PIPELINE);
    let server = common::with_python_models(repo.path())
        .await
        .expect("the ensemble and its models load");
    let http = common::http();
    let ready = |m: &str| {
        let url = common::rest(&server, &format!("/v2/models/{m}/ready"));
        let http = http.clone();
        async move { http.get(url).send().await.unwrap().status().as_u16() }
    };
    let unload = |m: &str, body: Value| {
        let url = common::rest(&server, &format!("/v2/repository/models/{m}/unload"));
        let http = http.clone();
        async move {
            http.post(url)
                .json(&body)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    // Without it, the steps stay.
    assert_eq!(unload("pipeline", json!({})).await, 200);
    assert_ne!(ready("pipeline").await, 200);
    assert_eq!(ready("double").await, 200);
    let load = common::rest(&server, "/v2/repository/models/pipeline/load");
    assert_eq!(http.post(&load).send().await.unwrap().status(), 200);
    // With it, every composing model goes.
    let dependents = json!({"parameters": {"unload_dependents": true}});
    assert_eq!(unload("pipeline", dependents).await, 200);
    for m in ["pipeline", "preprocess", "double", "postprocess"] {
        assert_ne!(ready(m).await, 200, "{m} unloaded");
    }
    assert_eq!(
        unload(
            "pipeline",
            json!({"parameters": {"unload_dependents": "yes"}})
        )
        .await,
        400
    );
    server.shutdown().await;
}
