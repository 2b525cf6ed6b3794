//! Triton's model warm-up (`model_warmup`): zero, random and file data,
//! batch sizes and counts, run before the model serves (the first client
//! finds the model already run); a failing sample fails the load with its
//! name.

mod common;

use serde_json::{Value, json};

/// Counts its runs and keeps the sum of its last input; answers both.
const COUNTER: &str = r#"
import numpy as np
import triton_python_backend_utils as pb_utils

class TritonPythonModel:
    def initialize(self, args):
        self.runs = 0
        self.last = 0.0
        self.rows = 0

    def execute(self, requests):
        out = []
        for r in requests:
            x = pb_utils.get_input_tensor_by_name(r, "x").as_numpy()
            seen = np.array([[self.runs, self.last, self.rows]], np.float64).repeat(x.shape[0], 0)
            self.runs += 1
            self.last = float(x.sum())
            self.rows = x.shape[0]
            out.append(pb_utils.InferenceResponse([pb_utils.Tensor("seen", seen)]))
        return out
"#;

fn config(warmup: &str) -> String {
    format!(
        r#"name: "counter"
backend: "python"
max_batch_size: 4
input [ {{ name: "x" data_type: TYPE_FP32 dims: [ 3 ] }} ]
output [ {{ name: "seen" data_type: TYPE_FP64 dims: [ 3 ] }} ]
{warmup}
"#
    )
}

const WARMUP: &str = r#"
model_warmup [
  { name: "zeros" batch_size: 2 count: 2 inputs { key: "x" value: { data_type: TYPE_FP32 dims: [ 3 ] zero_data: true } } },
  { name: "random" batch_size: 1 inputs { key: "x" value: { data_type: TYPE_FP32 dims: [ 3 ] random_data: true } } },
  { name: "file" batch_size: 3 inputs { key: "x" value: { data_type: TYPE_FP32 dims: [ 3 ] input_data_file: "x.bin" } } }
]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_up_runs_every_sample_before_the_model_serves() {
    let dir = tempfile::tempdir().unwrap();
    common::write(dir.path(), "counter/1/model.py", COUNTER.as_bytes());
    common::write(
        dir.path(),
        "counter/config.pbtxt",
        config(WARMUP).as_bytes(),
    );
    let row: Vec<u8> = [1.0f32, 2.0, 3.5]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    common::write(dir.path(), "counter/warmup/x.bin", &row);
    let server = common::with_python_models(dir.path())
        .await
        .expect("the model loads, warmed");
    let r = common::http()
        .post(common::rest(&server, "/v2/models/counter/infer"))
        .json(&json!({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 3], "data": [0, 0, 0]}]}))
        .send()
        .await
        .unwrap();
    let v: Value = r.json().await.unwrap();
    // zeros twice, random once, the file once (its row three times).
    assert_eq!(
        common::output(&v, "seen")["data"],
        json!([4.0, 19.5, 3.0]),
        "{v}"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_or_malformed_sample_fails_the_load_with_its_name() {
    let cases = [
        (
            r#"model_warmup [ { name: "short" batch_size: 1 inputs { key: "x" value: { data_type: TYPE_FP32 dims: [ 2 ] zero_data: true } } } ]"#,
            "model_warmup sample 'short' failed: ",
        ),
        (
            r#"model_warmup [ { name: "big" batch_size: 9 inputs { key: "x" value: { data_type: TYPE_FP32 dims: [ 3 ] zero_data: true } } } ]"#,
            "model_warmup sample 'big': batch_size 9 is more than max_batch_size 4",
        ),
        (
            r#"model_warmup [ { name: "nofile" batch_size: 1 inputs { key: "x" value: { data_type: TYPE_FP32 dims: [ 3 ] input_data_file: "none.bin" } } } ]"#,
            "model_warmup sample 'nofile': warmup/none.bin: ",
        ),
        (
            r#"model_warmup [ { name: "escape" batch_size: 1 inputs { key: "x" value: { data_type: TYPE_FP32 dims: [ 3 ] input_data_file: "../config.pbtxt" } } } ]"#,
            "must be a path inside the model's warmup/ directory",
        ),
    ];
    for (warmup, want) in cases {
        let dir = tempfile::tempdir().unwrap();
        common::write(dir.path(), "counter/1/model.py", COUNTER.as_bytes());
        common::write(
            dir.path(),
            "counter/config.pbtxt",
            config(warmup).as_bytes(),
        );
        let e = match common::with_python_models(dir.path()).await {
            Ok(_) => panic!("{warmup}: the load must fail"),
            Err(e) => e.to_string(),
        };
        assert!(e.contains(want), "{warmup}\n  got: {e}\n  want: {want}");
    }
}

const SERVABLE: &str = r#"
[[model]]
name = "add"
file = "add.onnx"

[[method]]
name = "add_common"
inputs = ["x1", "x2"]
outputs = ["y"]

[[method.stage]]
model = "add"
inputs = ["x1", "x2"]
outputs = ["y"]

[[warmup]]
name = "zeros"
count = 2
inputs.x1 = { datatype = "FP32", dims = [2, 2], data = "zero" }
inputs.x2 = { datatype = "FP32", dims = [2, 2], file = "x2.bin" }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servable_toml_takes_warm_up_samples_too() {
    let dir = tempfile::tempdir().unwrap();
    common::write(
        dir.path(),
        "add/1/add.onnx",
        &reference_server::demo::add_model(),
    );
    common::write(dir.path(), "add/servable.toml", SERVABLE.as_bytes());
    let x2: Vec<u8> = [1f32, 2.0, 3.0, 4.0]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    common::write(dir.path(), "add/warmup/x2.bin", &x2);
    let server = common::with_repository(dir.path()).await;
    // The two warm-up runs are the version's first inferences.
    let stats = common::get_json(&server, "/v2/models/add/stats").await;
    assert_eq!(
        stats["model_stats"][0]["inference_stats"]["success"]["count"],
        json!(2),
        "{stats}"
    );
    server.shutdown().await;

    // A sample that does not fit the method fails the load, named.
    common::write(
        dir.path(),
        "add/servable.toml",
        SERVABLE
            .replace("dims = [2, 2], data", "dims = [3], data")
            .as_bytes(),
    );
    let e = common::start_error(dir.path()).await;
    assert!(e.contains("model_warmup sample 'zeros' failed: "), "{e}");
}
