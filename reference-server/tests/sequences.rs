//! Triton sequence batching (`sequence_batching`): a stateful ONNX model
//! whose running sum is implicit state the server keeps, under the
//! `oldest` strategy; a Python accumulator that reads START, END, READY and
//! CORRID under the `direct` strategy over two instances, with more
//! sequences than slots (the rest wait in the backlog); both under
//! interleaved concurrent sequences, each sequence's answers its own.
//! Requests without a correlation ID, continuing a sequence that never
//! started or has ended, and after the sequence idled out, are refused
//! with Triton's texts; string correlation IDs and gRPC too.

mod common;

use std::path::Path;
use std::time::Duration;

use reference_server::onnx;
use serde_json::{Value, json};

/// Triton's accumulator shape: state per correlation ID in the instance,
/// reset on START; not-ready (filler) rows answered with zeros. It says
/// which instance ran it, and what the controls said.
const ACCUMULATOR: &str = r#"
import os
import numpy as np
import triton_python_backend_utils as pb_utils

class TritonPythonModel:
    def initialize(self, args):
        self.sums = {}
        self.instance = args["model_instance_name"]

    def execute(self, requests):
        out = []
        for r in requests:
            get = lambda n: pb_utils.get_input_tensor_by_name(r, n).as_numpy()
            x, start, end, ready, corrid = get("INPUT"), get("START"), get("END"), get("READY"), get("CORRID")
            if not ready[0][0]:
                out.append(pb_utils.InferenceResponse([
                    pb_utils.Tensor("OUTPUT", np.zeros((1, 1), np.int32)),
                    pb_utils.Tensor("SEEN", np.array([[b""]], dtype=object))]))
                continue
            key = int(corrid[0][0])
            if start[0][0]:
                self.sums[key] = 0
            self.sums[key] = self.sums.get(key, 0) + int(x[0][0])
            if end[0][0]:
                self.sums.pop(key)
            seen = "%s:%d:%d:%d:%d:%s:%d" % (self.instance, key, int(start[0][0]), int(end[0][0]), len(requests),
                                           r.correlation_id(), r.flags())
            out.append(pb_utils.InferenceResponse([
                pb_utils.Tensor("OUTPUT", np.array([[self.sums.get(key, -1) if not end[0][0] else -2]], np.int32)),
                pb_utils.Tensor("SEEN", np.array([[seen.encode()]], dtype=object))]))
        return out
"#;

const ACCUMULATOR_CONFIG: &str = r#"
name: "accumulator"
backend: "python"
max_batch_size: 2
input [ { name: "INPUT" data_type: TYPE_INT32 dims: [ 1 ] } ]
output [
  { name: "OUTPUT" data_type: TYPE_INT32 dims: [ 1 ] },
  { name: "SEEN" data_type: TYPE_STRING dims: [ 1 ] }
]
instance_group [ { kind: KIND_CPU count: 2 } ]
sequence_batching {
  direct { }
  control_input [
    { name: "START" control [ { kind: CONTROL_SEQUENCE_START int32_false_true: [ 0, 1 ] } ] },
    { name: "END" control [ { kind: CONTROL_SEQUENCE_END int32_false_true: [ 0, 1 ] } ] },
    { name: "READY" control [ { kind: CONTROL_SEQUENCE_READY int32_false_true: [ 0, 1 ] } ] },
    { name: "CORRID" control [ { kind: CONTROL_SEQUENCE_CORRID data_type: TYPE_UINT64 } ] }
  ]
}
"#;

fn repository() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let d: &Path = dir.path();
    common::write(d, "stateful/1/model.onnx", &onnx::running_sum());
    let oldest = "oldest { max_candidate_sequences: 8 max_queue_delay_microseconds: 2000 }";
    let config = onnx::running_sum_config("stateful", oldest, 300_000);
    common::write(d, "stateful/config.pbtxt", config.as_bytes());
    common::write(d, "accumulator/1/model.py", ACCUMULATOR.as_bytes());
    common::write(d, "accumulator/config.pbtxt", ACCUMULATOR_CONFIG.as_bytes());
    dir
}

fn request(datatype: &str, value: Value, parameters: Value) -> Value {
    json!({
        "inputs": [{"name": "INPUT", "datatype": datatype, "shape": [1, 1], "data": [value]}],
        "parameters": parameters,
    })
}

async fn infer(http: &reqwest::Client, url: &str, body: &Value) -> (u16, Value) {
    let r = http.post(url).json(body).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sequences_keep_their_own_state_slot_and_order_under_interleaved_load() {
    let repo = repository();
    let server = common::with_python_models(repo.path())
        .await
        .expect("the sequence models load");
    let http = common::http();

    // The stateful ONNX model: 12 sequences at once, each a running sum
    // kept by the server as implicit state.
    let url = common::rest(&server, "/v2/models/stateful/infer");
    let tasks: Vec<_> = (1..=12u64)
        .map(|id| {
            let (http, url) = (http.clone(), url.clone());
            tokio::spawn(async move {
                let mut sum = 0.0;
                for step in 1..=6u64 {
                    let value = (id * 10 + step) as f64;
                    sum += value;
                    let parameters = json!({
                        "sequence_id": id,
                        "sequence_start": step == 1,
                        "sequence_end": step == 6,
                    });
                    let (status, v) =
                        infer(&http, &url, &request("FP32", json!(value), parameters)).await;
                    assert_eq!(status, 200, "{v}");
                    assert_eq!(
                        common::output(&v, "OUTPUT")["data"],
                        json!([sum]),
                        "sequence {id}: {v}"
                    );
                    assert_eq!(
                        v["outputs"].as_array().unwrap().len(),
                        1,
                        "the state is not an output: {v}"
                    );
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    // The oldest strategy batched ready requests of different sequences.
    let stats = common::get_json(&server, "/v2/models/stateful/stats").await;
    let s = &stats["model_stats"][0];
    assert_eq!(s["inference_count"], json!(72), "{stats}");
    assert!(
        s["execution_count"].as_u64().unwrap() < 72,
        "requests of different sequences never batched: {stats}"
    );
    // A new START of the same ID starts from zero again.
    let start = json!({"sequence_id": 3, "sequence_start": true});
    let (_, v) = infer(&http, &url, &request("FP32", json!(5.0), start)).await;
    assert_eq!(common::output(&v, "OUTPUT")["data"], json!([5.0]), "{v}");

    // The Python accumulator, direct strategy: 2 instances x 2 slots, and
    // 6 sequences, so that two wait in the backlog for a slot.
    let url = common::rest(&server, "/v2/models/accumulator/infer");
    let tasks: Vec<_> = (101..=106u64)
        .map(|id| {
            let (http, url) = (http.clone(), url.clone());
            tokio::spawn(async move {
                let mut sum = 0;
                let mut instance = None;
                for step in 1..=5i64 {
                    sum += step;
                    let last = step == 5;
                    let parameters = json!({
                        "sequence_id": id,
                        "sequence_start": step == 1,
                        "sequence_end": last,
                    });
                    let (status, v) =
                        infer(&http, &url, &request("INT32", json!(step), parameters)).await;
                    assert_eq!(status, 200, "{v}");
                    let expected = if last { -2 } else { sum };
                    assert_eq!(
                        common::output(&v, "OUTPUT")["data"],
                        json!([expected]),
                        "{id}: {v}"
                    );
                    let seen = common::output(&v, "SEEN")["data"][0]
                        .as_str()
                        .unwrap()
                        .to_owned();
                    let parts: Vec<&str> = seen.split(':').collect();
                    assert_eq!(
                        parts[1],
                        id.to_string(),
                        "CORRID is the sequence id: {seen}"
                    );
                    assert_eq!(parts[2], if step == 1 { "1" } else { "0" }, "START: {seen}");
                    assert_eq!(parts[3], if last { "1" } else { "0" }, "END: {seen}");
                    assert_eq!(parts[5], id.to_string(), "correlation_id(): {seen}");
                    let flags = u8::from(step == 1) | (u8::from(last) << 1);
                    assert_eq!(parts[6], flags.to_string(), "flags(): {seen}");
                    let here = parts[0].to_owned();
                    assert_eq!(
                        instance.get_or_insert_with(|| here.clone()),
                        &here,
                        "a sequence's requests reach one instance"
                    );
                }
                instance.unwrap()
            })
        })
        .collect();
    let mut instances = std::collections::BTreeSet::new();
    for t in tasks {
        instances.insert(t.await.unwrap());
    }
    assert_eq!(instances.len(), 2, "sequences spread over both instances");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequence_errors_are_tritons() {
    let repo = repository();
    let server = common::with_python_models(repo.path())
        .await
        .expect("the sequence models load");
    let http = common::http();
    let url = common::rest(&server, "/v2/models/stateful/infer");
    let refused = |v: &Value| v["error"].as_str().unwrap_or_default().to_owned();

    let (status, v) = infer(&http, &url, &request("FP32", json!(1.0), json!({}))).await;
    assert_eq!(status, 400, "{v}");
    assert_eq!(
        refused(&v),
        "inference request to model 'stateful' must specify a non-zero or non-empty correlation ID"
    );
    let (status, v) = infer(
        &http,
        &url,
        &request(
            "FP32",
            json!(1.0),
            json!({"sequence_id": 0, "sequence_start": true}),
        ),
    )
    .await;
    assert_eq!(status, 400, "{v}");
    let (status, v) = infer(
        &http,
        &url,
        &request("FP32", json!(1.0), json!({"sequence_id": 77})),
    )
    .await;
    assert_eq!(status, 400, "{v}");
    assert_eq!(
        refused(&v),
        "inference request for sequence 77 to model 'stateful' must specify the START flag on the first request of the sequence"
    );
    // Two rows in one request.
    let two = json!({
        "inputs": [{"name": "INPUT", "datatype": "FP32", "shape": [2, 1], "data": [1.0, 2.0]}],
        "parameters": {"sequence_id": 5, "sequence_start": true},
    });
    let (status, v) = infer(&http, &url, &two).await;
    assert_eq!(status, 400, "{v}");
    assert_eq!(
        refused(&v),
        "inference request to model 'stateful' must specify batch-size 1 due to requirements of sequence batcher"
    );
    // A text correlation ID; after its END, it is closed.
    let seq = |start: bool, end: bool| json!({"sequence_id": "user-a", "sequence_start": start, "sequence_end": end});
    let (status, v) = infer(&http, &url, &request("FP32", json!(2.0), seq(true, false))).await;
    assert_eq!(
        (status, &common::output(&v, "OUTPUT")["data"]),
        (200, &json!([2.0])),
        "{v}"
    );
    let (_, v) = infer(&http, &url, &request("FP32", json!(3.0), seq(false, true))).await;
    assert_eq!(common::output(&v, "OUTPUT")["data"], json!([5.0]), "{v}");
    let (status, v) = infer(&http, &url, &request("FP32", json!(3.0), seq(false, false))).await;
    assert_eq!(status, 400, "{v}");
    assert_eq!(
        refused(&v),
        "inference request for sequence user-a to model 'stateful' must specify the START flag on the first request of the sequence"
    );
    // Idle past max_sequence_idle_microseconds (0.3 s): released.
    let idle = |start: bool| json!({"sequence_id": 9, "sequence_start": start});
    let (status, _) = infer(&http, &url, &request("FP32", json!(1.0), idle(true))).await;
    assert_eq!(status, 200);
    let (_, v) = infer(&http, &url, &request("FP32", json!(1.0), idle(false))).await;
    assert_eq!(common::output(&v, "OUTPUT")["data"], json!([2.0]), "{v}");
    tokio::time::sleep(Duration::from_millis(600)).await;
    let (status, v) = infer(&http, &url, &request("FP32", json!(1.0), idle(false))).await;
    assert_eq!(status, 400, "released for being idle: {v}");

    // gRPC: the same sequence parameters.
    let mut grpc = common::oip(&server).await;
    use serving_proto::pb::inference as pb;
    let param = |p: pb::infer_parameter::ParameterChoice| pb::InferParameter {
        parameter_choice: Some(p),
    };
    let mut sum = 0.0f32;
    for step in 1..=3 {
        let value = step as f32;
        sum += value;
        let req = pb::ModelInferRequest {
            model_name: "stateful".into(),
            parameters: [
                (
                    "sequence_id".to_owned(),
                    param(pb::infer_parameter::ParameterChoice::Int64Param(42)),
                ),
                (
                    "sequence_start".to_owned(),
                    param(pb::infer_parameter::ParameterChoice::BoolParam(step == 1)),
                ),
                (
                    "sequence_end".to_owned(),
                    param(pb::infer_parameter::ParameterChoice::BoolParam(step == 3)),
                ),
            ]
            .into_iter()
            .collect(),
            inputs: vec![pb::model_infer_request::InferInputTensor {
                name: "INPUT".into(),
                datatype: "FP32".into(),
                shape: vec![1, 1],
                ..Default::default()
            }],
            raw_input_contents: vec![value.to_le_bytes().to_vec().into()],
            ..Default::default()
        };
        let reply = grpc.model_infer(req).await.unwrap().into_inner();
        let got = f32::from_le_bytes(reply.raw_output_contents[0][..4].try_into().unwrap());
        assert_eq!(got, sum);
    }
    server.shutdown().await;
}

#[tokio::test]
async fn sequence_configurations_that_cannot_run_are_refused_at_load() {
    let base = onnx::running_sum_config("m", "direct { }", 1_000_000);
    let cases: &[(&str, &str, &str)] = &[
        (
            "control_input [",
            "control_input [ { name: \"NOPE\" control [ { kind: CONTROL_SEQUENCE_END int32_false_true: [ 0, 1 ] } ] },",
            "sequence_batching control input 'NOPE' is not an input of the model",
        ),
        (
            "fp32_false_true: [ 0, 1 ]",
            "int32_false_true: [ 0, 1 ]",
            "sequence_batching control input 'START' carries INT32, but the model's input is FP32",
        ),
        (
            "fp32_false_true: [ 0, 1 ]",
            "fp32_false_true: [ 1 ]",
            "fp32_false_true must hold two values, false then true",
        ),
        (
            "output_name: \"STATE_OUT\"",
            "output_name: \"NOPE\"",
            "sequence_batching state output 'NOPE' is not an output of the model",
        ),
        (
            "direct { }",
            "iterative_sequence: true",
            "sequence_batching.iterative_sequence is not supported",
        ),
        (
            "dims: [ 1 ] } ]\n}",
            "dims: [ 1 ] initial_state [ { data_type: TYPE_FP32 dims: [ 1 ] data_file: \"f\" } ] } ]\n}",
            "initial_state data_file \"f\" is not supported",
        ),
        (
            "  control_input [\n    { name: \"START\" control [ { kind: CONTROL_SEQUENCE_START fp32_false_true: [ 0, 1 ] } ] }\n  ]\n",
            "",
            "input 'START' of model.onnx is missing from config.pbtxt",
        ),
    ];
    for (from, to, want) in cases {
        assert!(base.contains(from), "{from}");
        let text = base.replacen(from, to, 1);
        let dir = tempfile::tempdir().unwrap();
        common::write(dir.path(), "m/config.pbtxt", text.as_bytes());
        common::write(dir.path(), "m/1/model.onnx", &onnx::running_sum());
        let e = common::start_error(dir.path()).await;
        assert!(e.contains(want), "{text}\n  got: {e}\n  want: {want}");
    }
}
