//! Triton Python-backend models (`model.py`), unchanged, served by real
//! Python with numpy: the shapes model files take in public repositories.
//! Several requests per `execute` under concurrent load, strings in and
//! out, `auto_complete_config`, BLS calls to an ONNX and a Python model,
//! error responses and exceptions, a worker
//! that crashes and one that hangs (each restarted, the server up), and
//! `finalize` on shutdown; and Python and ONNX models batching side by
//! side under one concurrent load.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use reference_server::server::Running;
use serde_json::{Value, json};
use serving_proto::pb::inference as pb;

const ADD_SUB: &str = r#"
import json
import numpy as np
import triton_python_backend_utils as pb_utils

class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        out = pb_utils.get_output_config_by_name(config, "OUTPUT0")
        self.dtype = pb_utils.triton_string_to_numpy(out["data_type"])
        self.name = args["model_instance_name"]

    def execute(self, requests):
        responses = []
        for request in requests:
            a = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            b = pb_utils.get_input_tensor_by_name(request, "INPUT1").as_numpy()
            seen = np.full((a.shape[0], 1), len(requests), dtype=np.int32)
            responses.append(pb_utils.InferenceResponse(output_tensors=[
                pb_utils.Tensor("OUTPUT0", (a + b).astype(self.dtype)),
                pb_utils.Tensor("OUTPUT1", (a - b).astype(self.dtype)),
                pb_utils.Tensor("REQUESTS", seen),
            ]))
        return responses
"#;

const ADD_SUB_CONFIG: &str = r#"
name: "add_sub"
backend: "python"
max_batch_size: 8
dynamic_batching { max_queue_delay_microseconds: 20000 }
input [
  { name: "INPUT0" data_type: TYPE_FP32 dims: [ 4 ] },
  { name: "INPUT1" data_type: TYPE_FP32 dims: [ 4 ] }
]
output [
  { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 4 ] },
  { name: "OUTPUT1" data_type: TYPE_FP32 dims: [ 4 ] },
  { name: "REQUESTS" data_type: TYPE_INT32 dims: [ 1 ] }
]
"#;

const STRINGS: &str = r#"
import json
import numpy as np
import triton_python_backend_utils as pb_utils

class TritonPythonModel:
    def execute(self, requests):
        out = []
        for r in requests:
            x = pb_utils.get_input_tensor_by_name(r, "text").as_numpy()
            y = np.array([s.upper() + b"!" for s in x.reshape(-1)], dtype=object).reshape(x.shape)
            n = np.array([len(s) for s in x.reshape(-1)], dtype=np.int64).reshape(x.shape)
            seen = json.dumps({"id": r.request_id(), "parameters": json.loads(r.parameters())}, sort_keys=True)
            context = np.array([seen.encode()], dtype=object)
            out.append(pb_utils.InferenceResponse([pb_utils.Tensor("loud", y), pb_utils.Tensor("length", n),
                                                   pb_utils.Tensor("context", context)]))
        return out
"#;

const STRINGS_CONFIG: &str = r#"
name: "strings"
backend: "python"
max_batch_size: 0
input [ { name: "text" data_type: TYPE_STRING dims: [ -1 ] } ]
output [
  { name: "loud" data_type: TYPE_STRING dims: [ -1 ] },
  { name: "length" data_type: TYPE_INT64 dims: [ -1 ] },
  { name: "context" data_type: TYPE_STRING dims: [ 1 ] }
]
"#;

const AUTO: &str = r#"
import triton_python_backend_utils as pb_utils

class TritonPythonModel:
    @staticmethod
    def auto_complete_config(auto_complete_model_config):
        auto_complete_model_config.add_input({"name": "x", "data_type": "TYPE_FP32", "dims": [-1]})
        auto_complete_model_config.add_output({"name": "y", "data_type": "TYPE_FP32", "dims": [-1]})
        auto_complete_model_config.set_max_batch_size(0)
        return auto_complete_model_config

    def execute(self, requests):
        return [pb_utils.InferenceResponse([pb_utils.Tensor("y", pb_utils.get_input_tensor_by_name(r, "x").as_numpy() * 3)])
                for r in requests]
"#;

const FAILS: &str = r#"
import triton_python_backend_utils as pb_utils

class TritonPythonModel:
    def execute(self, requests):
        out = []
        for r in requests:
            x = pb_utils.get_input_tensor_by_name(r, "x").as_numpy()
            if x[0] == 0:
                raise ValueError("zero is not allowed here")
            if x[0] < 0:
                out.append(pb_utils.InferenceResponse(error=pb_utils.TritonError("x must be positive")))
            else:
                out.append(pb_utils.InferenceResponse([pb_utils.Tensor("y", x)]))
        return out
"#;

/// Dies at -1, hangs at -2; `finalize` writes the marker file its
/// configuration names.
const FRAGILE: &str = r#"
import json, os, time
import triton_python_backend_utils as pb_utils

class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.marker = config["parameters"]["marker"]["string_value"]

    def execute(self, requests):
        out = []
        for r in requests:
            x = pb_utils.get_input_tensor_by_name(r, "x").as_numpy()
            if x[0] == -1:
                os._exit(3)
            if x[0] == -2:
                time.sleep(3600)
            out.append(pb_utils.InferenceResponse([pb_utils.Tensor("y", x)]))
        return out

    def finalize(self):
        with open(self.marker, "w") as f:
            f.write("finalized")
"#;

/// BLS: calls the ONNX model `mul` (x1 * x2 over [2, 2]) and the Python
/// model `auto` (x * 3), in the server, and returns both; a call to a model
/// that does not exist comes back as a response with an error.
const BLS: &str = r#"
import numpy as np
import triton_python_backend_utils as pb_utils

class TritonPythonModel:
    def execute(self, requests):
        out = []
        for r in requests:
            x = pb_utils.get_input_tensor_by_name(r, "x").as_numpy()
            square = x.reshape(2, 2)
            onnx = pb_utils.InferenceRequest(
                model_name="mul", requested_output_names=["y"],
                inputs=[pb_utils.Tensor("x1", square), pb_utils.Tensor("x2", square)]).exec()
            if onnx.has_error():
                raise pb_utils.TritonModelException(onnx.error().message())
            tripled = pb_utils.InferenceRequest(
                model_name="auto", requested_output_names=["y"],
                inputs=[pb_utils.Tensor("x", x)]).exec()
            missing = pb_utils.InferenceRequest(
                model_name="nope", requested_output_names=["y"], inputs=[pb_utils.Tensor("x", x)]).exec()
            note = missing.error().message() if missing.has_error() else "no error"
            out.append(pb_utils.InferenceResponse([
                pb_utils.Tensor("squared", pb_utils.get_output_tensor_by_name(onnx, "y").as_numpy().reshape(-1)),
                pb_utils.Tensor("tripled", pb_utils.get_output_tensor_by_name(tripled, "y").as_numpy()),
                pb_utils.Tensor("note", np.array([note.encode()], dtype=object)),
            ]))
        return out
"#;

/// BLS with `exec(decoupled=True)`: reads the decoupled `repeat`'s
/// responses as it sends them (the last one empty: its final flag alone),
/// an error response of it, a model that answers once (one response), and
/// a stream cancelled after its first response (the model does not check,
/// so the rest still come); reports what it saw.
const BLS_STREAM: &str = r#"
import json
import numpy as np
import triton_python_backend_utils as pb_utils

def repeat(values):
    return pb_utils.InferenceRequest(
        model_name="repeat", requested_output_names=["OUT", "IDX"],
        inputs=[pb_utils.Tensor("IN", np.array(values, dtype=np.int32))]).exec(decoupled=True)

class TritonPythonModel:
    def execute(self, requests):
        out = []
        for r in requests:
            x = pb_utils.get_input_tensor_by_name(r, "IN").as_numpy()
            values, indices, empty = [], [], 0
            for response in repeat(x):
                if response.has_error():
                    raise pb_utils.TritonModelException(response.error().message())
                if not response.output_tensors():
                    empty += 1
                    continue
                values.append(int(pb_utils.get_output_tensor_by_name(response, "OUT").as_numpy()[0]))
                indices.append(int(pb_utils.get_output_tensor_by_name(response, "IDX").as_numpy()[0]))
            errors = [e.error().message() for e in repeat([-5]) if e.has_error()]
            once = list(pb_utils.InferenceRequest(
                model_name="auto", requested_output_names=["y"],
                inputs=[pb_utils.Tensor("x", np.array([2.0], dtype=np.float32))]).exec(decoupled=True))
            stream = repeat([7, 8, 9, 10, 11, 12, 13, 14])
            first = pb_utils.get_output_tensor_by_name(next(stream), "OUT").as_numpy()[0]
            stream.cancel()
            report = {"values": values, "indices": indices, "empty": empty, "errors": errors,
                      "once": [float(pb_utils.get_output_tensor_by_name(o, "y").as_numpy()[0]) for o in once],
                      "first": int(first), "after_cancel": len(list(stream))}
            out.append(pb_utils.InferenceResponse([
                pb_utils.Tensor("report", np.array([json.dumps(report).encode()], dtype=object))]))
        return out
"#;

const BLS_STREAM_CONFIG: &str = r#"
name: "bls_stream"
backend: "python"
max_batch_size: 0
input [ { name: "IN" data_type: TYPE_INT32 dims: [ -1 ] } ]
output [ { name: "report" data_type: TYPE_STRING dims: [ 1 ] } ]
"#;

/// A decoupled model that relays `repeat`'s responses to its own client
/// as they come, from inside `execute`: after the first it waits for the
/// file its request names (so the first must reach the client while
/// `execute` still runs), then relays the rest.
const RELAY: &str = r#"
import os
import time
import numpy as np
import triton_python_backend_utils as pb_utils

class TritonPythonModel:
    def execute(self, requests):
        for request in requests:
            sender = request.get_response_sender()
            x = pb_utils.get_input_tensor_by_name(request, "IN").as_numpy()
            marker = pb_utils.get_input_tensor_by_name(request, "MARKER").as_numpy()[0].decode()
            stream = pb_utils.InferenceRequest(
                model_name="repeat", requested_output_names=["OUT", "IDX"],
                inputs=[pb_utils.Tensor("IN", x)]).exec(decoupled=True)
            for k, response in enumerate(stream):
                if response.output_tensors():
                    sender.send(response)
                if k == 0:
                    deadline = time.time() + 30
                    while not os.path.exists(marker) and time.time() < deadline:
                        time.sleep(0.01)
            sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
        return None
"#;

const RELAY_CONFIG: &str = r#"
name: "relay"
backend: "python"
max_batch_size: 0
model_transaction_policy { decoupled: true }
input [
  { name: "IN" data_type: TYPE_INT32 dims: [ -1 ] },
  { name: "MARKER" data_type: TYPE_STRING dims: [ 1 ] }
]
output [
  { name: "OUT" data_type: TYPE_INT32 dims: [ 1 ] },
  { name: "IDX" data_type: TYPE_UINT32 dims: [ 1 ] }
]
"#;

const BLS_CONFIG: &str = r#"
name: "bls"
backend: "python"
max_batch_size: 0
input [ { name: "x" data_type: TYPE_FP32 dims: [ 4 ] } ]
output [
  { name: "squared" data_type: TYPE_FP32 dims: [ 4 ] },
  { name: "tripled" data_type: TYPE_FP32 dims: [ 4 ] },
  { name: "note" data_type: TYPE_STRING dims: [ 1 ] }
]
"#;

/// A decoupled model, as Triton's `repeat` example: one response per value
/// of `IN`, sent from a thread of the model's own, then the final flag
/// alone; a negative first value gets an error response.
const REPEAT: &str = r#"
import json
import threading
import numpy as np
import triton_python_backend_utils as pb_utils

class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        assert pb_utils.using_decoupled_model_transaction_policy(config)
        self.threads = []

    def execute(self, requests):
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "IN").as_numpy().copy()
            sender = request.get_response_sender()
            if x.size and x[0] < 0:
                sender.send(pb_utils.InferenceResponse(error=pb_utils.TritonError("negative: %d" % x[0])))
                sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
                continue
            t = threading.Thread(target=self.repeat, args=(x, sender))
            t.start()
            self.threads.append(t)
        return None

    def repeat(self, x, sender):
        for i, v in enumerate(x):
            sender.send(pb_utils.InferenceResponse([
                pb_utils.Tensor("OUT", np.array([v], dtype=np.int32)),
                pb_utils.Tensor("IDX", np.array([i], dtype=np.uint32)),
            ]))
        sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)

    def finalize(self):
        for t in self.threads:
            t.join()
"#;

const REPEAT_CONFIG: &str = r#"
name: "repeat"
backend: "python"
max_batch_size: 0
model_transaction_policy { decoupled: true }
input [ { name: "IN" data_type: TYPE_INT32 dims: [ -1 ] } ]
output [
  { name: "OUT" data_type: TYPE_INT32 dims: [ 1 ] },
  { name: "IDX" data_type: TYPE_UINT32 dims: [ 1 ] }
]
"#;

fn one_in_one_out(name: &str, extra: &str) -> String {
    format!(
        "name: \"{name}\"\nbackend: \"python\"\nmax_batch_size: 0\n{extra}\ninput [ {{ name: \"x\" data_type: TYPE_FP32 dims: [ -1 ] }} ]\noutput [ {{ name: \"y\" data_type: TYPE_FP32 dims: [ -1 ] }} ]\n"
    )
}

fn repository(marker: &Path) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let model = |name: &str, config: &str, py: &str| {
        common::write(d, &format!("{name}/config.pbtxt"), config.as_bytes());
        common::write(d, &format!("{name}/1/model.py"), py.as_bytes());
    };
    model("add_sub", ADD_SUB_CONFIG, ADD_SUB);
    model("strings", STRINGS_CONFIG, STRINGS);
    model("auto", "name: \"auto\"\nbackend: \"python\"\n", AUTO);
    model("fails", &one_in_one_out("fails", ""), FAILS);
    model("bls", BLS_CONFIG, BLS);
    model("bls_stream", BLS_STREAM_CONFIG, BLS_STREAM);
    model("relay", RELAY_CONFIG, RELAY);
    model("repeat", REPEAT_CONFIG, REPEAT);
    common::write(d, "mul/1/model.onnx", &common::binary_op("Mul"));
    model(
        "fragile",
        &one_in_one_out(
            "fragile",
            &format!(
                "parameters {{ key: \"marker\" value: {{ string_value: \"{}\" }} }}",
                marker.display()
            ),
        ),
        FRAGILE,
    );
    dir
}

async fn serve(repo: &Path) -> Running {
    common::with_python_models(repo)
        .await
        .expect("the Python models load")
}

async fn infer(http: &reqwest::Client, server: &Running, model: &str, body: Value) -> (u16, Value) {
    let r = http
        .post(common::rest(server, &format!("/v2/models/{model}/infer")))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

fn x(values: &[f32]) -> Value {
    json!({"inputs": [{"name": "x", "datatype": "FP32", "shape": [values.len()], "data": values}]})
}

/// Sends `body` until it is answered 200 (a restarting replica answers an
/// error meanwhile), for up to 30 s.
async fn until_served(http: &reqwest::Client, server: &Running, model: &str, body: Value) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, v) = infer(http, server, model, body.clone()).await;
        if status == 200 {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "never served again: {status} {v}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn triton_python_models_run_unchanged() {
    let marker_dir = tempfile::tempdir().unwrap();
    let marker = marker_dir.path().join("finalized");
    let repo = repository(&marker);
    let server = serve(repo.path()).await;
    let http = common::http();

    // 16 concurrent requests to a dynamically batched model: each its own
    // answer, and the model saw several requests in one execute call.
    // (Up to five bursts: on a loaded machine one may trickle in.)
    let mut most = 0;
    for _ in 0..5 {
        let tasks: Vec<_> = (0..16)
            .map(|k| {
                let http = http.clone();
                let url = common::rest(&server, "/v2/models/add_sub/infer");
                tokio::spawn(async move {
                    let a: Vec<f32> = (0..4).map(|i| (k * 4 + i) as f32).collect();
                    let body = json!({"inputs": [
                        {"name": "INPUT0", "datatype": "FP32", "shape": [1, 4], "data": a},
                        {"name": "INPUT1", "datatype": "FP32", "shape": [1, 4], "data": [1, 1, 1, 1]},
                    ]});
                    let v: Value = http
                        .post(url)
                        .json(&body)
                        .send()
                        .await
                        .unwrap()
                        .json()
                        .await
                        .unwrap();
                    (a, v)
                })
            })
            .collect();
        for t in tasks {
            let (a, v) = t.await.unwrap();
            let sum: Vec<f64> = a.iter().map(|&v| f64::from(v) + 1.0).collect();
            let diff: Vec<f64> = a.iter().map(|&v| f64::from(v) - 1.0).collect();
            assert_eq!(common::output(&v, "OUTPUT0")["data"], json!(sum), "{v}");
            assert_eq!(common::output(&v, "OUTPUT1")["data"], json!(diff), "{v}");
            most = most.max(common::output(&v, "REQUESTS")["data"][0].as_i64().unwrap());
        }
        if most > 1 {
            break;
        }
    }
    assert!(most > 1, "every execute call held one request");

    // Strings in and out, any bytes (BYTES is not text for Python).
    let (status, v) = infer(
        &http,
        &server,
        "strings",
        json!({"id": "req-7", "parameters": {"temperature": 0.5, "mode": "fast", "top_k": 3, "priority": 0, "timeout": 5000000},
               "inputs": [{"name": "text", "datatype": "BYTES", "shape": [2], "data": ["héllo", "ab"]}]}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(common::output(&v, "loud")["data"], json!(["HéLLO!", "AB!"]));
    assert_eq!(common::output(&v, "length")["data"], json!([6, 2]));
    // The request's id and its parameters reach the model; those the
    // server acts on itself (priority, timeout) do not, as in Triton.
    assert_eq!(
        common::output(&v, "context")["data"],
        json!([
            r#"{"id": "req-7", "parameters": {"mode": "fast", "temperature": 0.5, "top_k": 3}}"#
        ])
    );

    // auto_complete_config declared the inputs and outputs.
    let meta = common::get_json(&server, "/v2/models/auto").await;
    assert_eq!(meta["inputs"][0]["name"], "x", "{meta}");
    assert_eq!(meta["outputs"][0]["datatype"], "FP32", "{meta}");
    assert_eq!(meta["platform"], "python", "as Triton names it: {meta}");
    let config = common::get_json(&server, "/v2/models/auto/config").await;
    assert_eq!(config["backend"], "python", "{config}");
    assert_eq!(config["default_model_filename"], "model.py", "{config}");
    let (status, v) = infer(&http, &server, "auto", x(&[1.0, 2.0])).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(common::output(&v, "y")["data"], json!([3.0, 6.0]));

    // BLS of a decoupled model: its responses one by one, as Triton's
    // ResponseIterator gives them.
    let (status, v) = infer(
        &http,
        &server,
        "bls_stream",
        json!({"inputs": [{"name": "IN", "datatype": "INT32", "shape": [3], "data": [4, 5, 6]}]}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let report: Value =
        serde_json::from_str(common::output(&v, "report")["data"][0].as_str().unwrap()).unwrap();
    assert_eq!(
        report,
        json!({"values": [4, 5, 6], "indices": [0, 1, 2], "empty": 1, "errors": ["negative: -5"],
               "once": [6.0], "first": 7, "after_cancel": 8}),
    );

    // BLS: a Python model calls an ONNX model and a Python model of the
    // server, and learns of a call that failed.
    let (status, v) = infer(
        &http,
        &server,
        "bls",
        json!({"inputs": [{"name": "x", "datatype": "FP32", "shape": [4], "data": [1, 2, 3, 4]}]}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        common::output(&v, "squared")["data"],
        json!([1.0, 4.0, 9.0, 16.0])
    );
    assert_eq!(
        common::output(&v, "tripled")["data"],
        json!([3.0, 6.0, 9.0, 12.0])
    );
    let note = common::output(&v, "note")["data"][0]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        note.contains("Request for unknown model: 'nope' is not found"),
        "{note}"
    );

    // A response with an error, and an exception: the request's error,
    // with the model's text; the model goes on.
    let (status, v) = infer(&http, &server, "fails", x(&[-1.0])).await;
    assert_eq!(status, 500, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("x must be positive"),
        "{v}"
    );
    let (status, v) = infer(&http, &server, "fails", x(&[0.0])).await;
    assert_eq!(status, 500, "{v}");
    let text = v["error"].as_str().unwrap();
    assert!(
        text.contains("ValueError: zero is not allowed here"),
        "{text}"
    );
    let (status, v) = infer(&http, &server, "fails", x(&[5.0])).await;
    assert_eq!(
        (status, &common::output(&v, "y")["data"]),
        (200, &json!([5.0]))
    );

    // A worker that dies: the request fails, the replica restarts, the
    // model serves again; the other models never stopped.
    let (status, v) = infer(&http, &server, "fragile", x(&[-1.0])).await;
    assert_ne!(status, 200, "{v}");
    let v = until_served(&http, &server, "fragile", x(&[7.0])).await;
    assert_eq!(common::output(&v, "y")["data"], json!([7.0]));
    let (status, _) = infer(&http, &server, "auto", x(&[1.0])).await;
    assert_eq!(status, 200);

    // A worker that hangs past the request's deadline: the client gets
    // DEADLINE_EXCEEDED, the worker is stopped at the deadline (not an
    // hour later), the model serves again.
    let mut grpc = common::oip(&server).await;
    let mut request = tonic::Request::new(serving_proto::pb::inference::ModelInferRequest {
        model_name: "fragile".into(),
        inputs: vec![
            serving_proto::pb::inference::model_infer_request::InferInputTensor {
                name: "x".into(),
                datatype: "FP32".into(),
                shape: vec![1],
                ..Default::default()
            },
        ],
        raw_input_contents: vec![(-2f32).to_le_bytes().to_vec().into()],
        ..Default::default()
    });
    request.set_timeout(Duration::from_secs(1));
    let e = grpc.model_infer(request).await.unwrap_err();
    // The server's answer, or the client's own timer firing first.
    assert!(
        matches!(
            e.code(),
            tonic::Code::DeadlineExceeded | tonic::Code::Cancelled
        ),
        "{e:?}"
    );
    let v = until_served(&http, &server, "fragile", x(&[8.0])).await;
    assert_eq!(common::output(&v, "y")["data"], json!([8.0]));

    // An input larger than the worker's region (1 MiB at first), returned
    // as it is: the region grows for it, the output passes through, and
    // the bytes come back exact.
    let raw: Vec<u8> = (0..4u32 << 20)
        .flat_map(|i| (i as f32).to_le_bytes())
        .collect();
    let reply = grpc
        .model_infer(serving_proto::pb::inference::ModelInferRequest {
            model_name: "fragile".into(),
            inputs: vec![
                serving_proto::pb::inference::model_infer_request::InferInputTensor {
                    name: "x".into(),
                    datatype: "FP32".into(),
                    shape: vec![4 << 20],
                    ..Default::default()
                },
            ],
            raw_input_contents: vec![raw.clone().into()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        reply.raw_output_contents[0] == raw[..],
        "16 MiB came back changed"
    );

    // Shutdown finalizes every instance.
    server.shutdown().await;
    assert_eq!(
        std::fs::read_to_string(&marker).ok().as_deref(),
        Some("finalized")
    );
}

/// Python and ONNX models under one concurrent load: 48 clients, half on
/// each, every answer its own, and both models batched (Python: several
/// requests in one execute; ONNX: a run of more than one row).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn python_and_onnx_models_batch_side_by_side_under_concurrent_load() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    common::write(d, "add_sub/config.pbtxt", ADD_SUB_CONFIG.as_bytes());
    common::write(d, "add_sub/1/model.py", ADD_SUB.as_bytes());
    common::write(
        d,
        "rows/config.pbtxt",
        b"name: \"rows\"\nmax_batch_size: 8\ndynamic_batching { max_queue_delay_microseconds: 20000 }\n",
    );
    common::write(d, "rows/1/model.onnx", &common::matmul_stack(4, 1));
    let server = serve(d).await;
    let http = common::http();
    // Whether a burst is batched depends on when its requests arrive: on a
    // loaded machine one burst may trickle in, so up to five are sent.
    let mut seen = (0, Vec::new());
    for _ in 0..5 {
        let most = burst(&http, &server).await;
        let stats = common::get_json(&server, "/v2/models/rows/stats").await;
        let sizes: Vec<i64> = stats["model_stats"][0]["batch_stats"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["batch_size"].as_i64().unwrap())
            .collect();
        seen = (seen.0.max(most), sizes);
        if seen.0 > 1 && seen.1.iter().any(|&s| s > 1) {
            break;
        }
    }
    assert!(
        seen.0 > 1,
        "the Python model never saw several requests at once"
    );
    assert!(
        seen.1.iter().any(|&s| s > 1),
        "the ONNX model never batched: {:?}",
        seen.1
    );
    server.shutdown().await;
}

/// 48 concurrent clients, half on the Python model and half on the ONNX
/// one, each checked for its own answer; returns the most requests the
/// Python model saw in one execute.
async fn burst(http: &reqwest::Client, server: &Running) -> i64 {
    let tasks: Vec<_> = (0..48)
        .map(|k| {
            let http = http.clone();
            let python = k % 2 == 0;
            let url = common::rest(
                server,
                if python {
                    "/v2/models/add_sub/infer"
                } else {
                    "/v2/models/rows/infer"
                },
            );
            tokio::spawn(async move {
                let a: Vec<f32> = (0..4).map(|i| (k * 4 + i) as f32).collect();
                let body = if python {
                    json!({"inputs": [
                        {"name": "INPUT0", "datatype": "FP32", "shape": [1, 4], "data": a},
                        {"name": "INPUT1", "datatype": "FP32", "shape": [1, 4], "data": [1, 1, 1, 1]},
                    ]})
                } else {
                    json!({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": a}]})
                };
                let r = http.post(url).json(&body).send().await.unwrap();
                assert_eq!(r.status(), 200);
                let v: Value = r.json().await.unwrap();
                (python, a, v)
            })
        })
        .collect();
    let mut most = 0;
    for t in tasks {
        let (python, a, v) = t.await.unwrap();
        if python {
            let sum: Vec<f64> = a.iter().map(|&v| f64::from(v) + 1.0).collect();
            assert_eq!(common::output(&v, "OUTPUT0")["data"], json!(sum), "{v}");
            most = most.max(common::output(&v, "REQUESTS")["data"][0].as_i64().unwrap());
        } else {
            // An identity: the client's own row back.
            let row: Vec<f64> = a.iter().map(|&v| f64::from(v)).collect();
            assert_eq!(v["outputs"][0]["data"], json!(row), "{v}");
        }
    }
    most
}

fn repeat_request(id: &str, values: &[i32], empty_final: bool) -> pb::ModelInferRequest {
    let mut parameters = std::collections::BTreeMap::new();
    if empty_final {
        parameters.insert(
            "triton_enable_empty_final_response".to_owned(),
            pb::InferParameter {
                parameter_choice: Some(pb::infer_parameter::ParameterChoice::BoolParam(true)),
            },
        );
    }
    pb::ModelInferRequest {
        model_name: "repeat".into(),
        id: id.into(),
        parameters,
        inputs: vec![pb::model_infer_request::InferInputTensor {
            name: "IN".into(),
            datatype: "INT32".into(),
            shape: vec![values.len() as i64],
            ..Default::default()
        }],
        raw_input_contents: vec![
            values
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect::<Vec<u8>>()
                .into(),
        ],
        ..Default::default()
    }
}

/// One streamed response of `repeat`: its `OUT` and `IDX` (none in an
/// empty response), and whether it is final.
type Streamed = (Option<(i32, u32)>, bool);

fn is_final(r: &pb::ModelInferResponse) -> bool {
    match r
        .parameters
        .get("triton_final_response")
        .and_then(|p| p.parameter_choice.as_ref())
    {
        Some(pb::infer_parameter::ParameterChoice::BoolParam(b)) => *b,
        other => panic!("no triton_final_response in {r:?}: {other:?}"),
    }
}

/// A decoupled model answers a stream request with as many responses as it
/// sends, as it sends them, marked final or not; an error response goes
/// in-band and the stream goes on; the empty final response comes when
/// asked for. Unary requests are refused with Triton's texts, and
/// tritonclient's stream reads the same responses.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn decoupled_models_stream_their_responses() {
    let marker_dir = tempfile::tempdir().unwrap();
    let repo = repository(&marker_dir.path().join("finalized"));
    let server = serve(repo.path()).await;
    let mut client = common::oip(&server).await;
    let requests = vec![
        repeat_request("a", &[5, 6, 7], true),
        repeat_request("b", &[-3], false),
        repeat_request("c", &[], true),
        repeat_request("d", &[9, 8], false),
    ];
    let mut answers = client
        .model_stream_infer(futures_util::stream::iter(requests))
        .await
        .unwrap()
        .into_inner();
    let mut by_id: std::collections::BTreeMap<String, Vec<Streamed>> = Default::default();
    let mut errors = Vec::new();
    while let Some(a) = tokio::time::timeout(Duration::from_secs(60), answers.message())
        .await
        .expect("the stream answers")
        .unwrap()
    {
        let r = a.infer_response.unwrap();
        if !a.error_message.is_empty() {
            errors.push((r.id, a.error_message));
            continue;
        }
        let value = (!r.raw_output_contents.is_empty()).then(|| {
            let at = |name: &str| r.outputs.iter().position(|o| o.name == name).unwrap();
            let out = i32::from_le_bytes(r.raw_output_contents[at("OUT")][..4].try_into().unwrap());
            let idx = u32::from_le_bytes(r.raw_output_contents[at("IDX")][..4].try_into().unwrap());
            (out, idx)
        });
        by_id
            .entry(r.id.clone())
            .or_default()
            .push((value, is_final(&r)));
    }
    assert_eq!(
        by_id["a"],
        vec![
            (Some((5, 0)), false),
            (Some((6, 1)), false),
            (Some((7, 2)), false),
            (None, true)
        ],
        "one response per value, then the empty final one asked for"
    );
    assert_eq!(
        by_id["c"],
        vec![(None, true)],
        "no values: the final response alone"
    );
    assert_eq!(
        by_id["d"],
        vec![(Some((9, 0)), false), (Some((8, 1)), false)],
        "no empty final response unless asked for"
    );
    assert!(!by_id.contains_key("b"));
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].0, "b");
    assert!(errors[0].1.contains("negative: -3"), "{errors:?}");

    // A decoupled model relaying a BLS stream: each response reaches the
    // client while the model's execute still runs (it waits for the
    // marker, which is made only once the first response has arrived).
    let marker = marker_dir.path().join("first-arrived");
    let mut relay = repeat_request("r", &[3, 4], false);
    relay.model_name = "relay".into();
    relay
        .inputs
        .push(pb::model_infer_request::InferInputTensor {
            name: "MARKER".into(),
            datatype: "BYTES".into(),
            shape: vec![1],
            ..Default::default()
        });
    let path = marker.display().to_string();
    let mut element = (path.len() as u32).to_le_bytes().to_vec();
    element.extend_from_slice(path.as_bytes());
    relay.raw_input_contents.push(element.into());
    let mut relayed = client
        .model_stream_infer(futures_util::stream::iter(vec![relay]))
        .await
        .unwrap()
        .into_inner();
    let mut values = Vec::new();
    while let Some(a) = tokio::time::timeout(Duration::from_secs(20), relayed.message())
        .await
        .expect("each relayed response comes while execute runs")
        .unwrap()
    {
        assert!(a.error_message.is_empty(), "{}", a.error_message);
        let r = a.infer_response.unwrap();
        if let Some(at) = r.outputs.iter().position(|o| o.name == "OUT") {
            values.push(i32::from_le_bytes(
                r.raw_output_contents[at][..4].try_into().unwrap(),
            ));
            std::fs::write(&marker, b"").unwrap();
        }
        if is_final(&r) {
            break;
        }
    }
    assert_eq!(values, vec![3, 4]);

    // Unary requests: Triton's refusals.
    let e = client
        .model_infer(repeat_request("u", &[1], false))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unimplemented);
    assert_eq!(
        e.message(),
        "ModelInfer RPC doesn't support models with decoupled transaction policy"
    );
    let (status, v) = infer(
        &common::http(),
        &server,
        "repeat",
        json!({"inputs": [{"name": "IN", "datatype": "INT32", "shape": [1], "data": [1]}]}),
    )
    .await;
    assert_eq!(status, 501, "{v}");
    assert_eq!(
        v["error"],
        "HTTP end point doesn't support models with decoupled transaction policy"
    );

    // NVIDIA's tritonclient reads the same stream.
    common::run_compat(
        "decoupled_stream.py",
        vec![server.grpc_address.to_string()],
        "decoupled stream agrees",
    )
    .await;
    server.shutdown().await;
}

const COPY: &str = r#"
import triton_python_backend_utils as pb_utils

class TritonPythonModel:
    def execute(self, requests):
        return [pb_utils.InferenceResponse([pb_utils.Tensor("y", pb_utils.get_input_tensor_by_name(r, "x").as_numpy().copy())])
                for r in requests]
"#;

/// Serves `repo` with 8 MiB for requests, messages and the memory they
/// hold together.
async fn serve_in_8_mib(repo: &Path) -> Running {
    let venv = tokio::task::spawn_blocking(common::compat_venv)
        .await
        .unwrap();
    common::start(reference_server::server::Config {
        model_repository: Some(repo.to_owned()),
        poll_interval: None,
        python: venv.join("bin/python"),
        max_msg_mb_size: 8,
        max_incoming_mb: 8,
        ..common::config()
    })
    .await
}

/// `x` of `floats` FP32 values to the model `copy`, raw.
fn copy_request(floats: usize) -> pb::ModelInferRequest {
    pb::ModelInferRequest {
        model_name: "copy".into(),
        inputs: vec![pb::model_infer_request::InferInputTensor {
            name: "x".into(),
            datatype: "FP32".into(),
            shape: vec![floats as i64],
            ..Default::default()
        }],
        raw_input_contents: vec![
            (0..floats)
                .flat_map(|i| (i as f32).to_le_bytes())
                .collect::<Vec<u8>>()
                .into(),
        ],
        ..Default::default()
    }
}

/// What a call writes into a Python worker's shared memory (its inputs'
/// copy, its outputs) is charged to `--max-incoming-mb` with the request
/// itself: a request that fits, with its copies, is answered and gives
/// everything back; one whose copies cannot fit beside it is refused
/// `RESOURCE_EXHAUSTED` saying why, before the worker's region is grown,
/// and the model serves on.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_python_model_s_shared_memory_is_charged_to_the_server_s_memory() {
    let repo = tempfile::tempdir().unwrap();
    common::write(
        repo.path(),
        "copy/config.pbtxt",
        one_in_one_out("copy", "").as_bytes(),
    );
    common::write(repo.path(), "copy/1/model.py", COPY.as_bytes());
    let server = serve_in_8_mib(repo.path()).await;
    let mut client = common::oip(&server).await;
    let idle = async |server: &Running| {
        let deadline = Instant::now() + Duration::from_secs(10);
        while server.state.incoming.held() != 0 {
            assert!(
                Instant::now() < deadline,
                "{} bytes still held",
                server.state.incoming.held()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    // 1.5 MiB: the message, its copy in the region and the output's
    // (4.5 MiB with the region's first 1 MiB free) fit the 8 MiB.
    let fits = 3 << 17;
    let answer = client
        .model_infer(copy_request(fits))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.raw_output_contents[0].len(), fits * 4);
    assert_eq!(
        &answer.raw_output_contents[0][4..8],
        &1f32.to_le_bytes(),
        "the output is the input"
    );
    idle(&server).await;
    // 3.5 MiB: with its two copies (6 MiB beyond the first 1 MiB) it needs
    // 9.5 MiB, which the server never has.
    let status = client
        .model_infer(copy_request(7 << 17))
        .await
        .expect_err("too large with its copies");
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    for words in [
        "model 'copy' needs",
        "besides the",
        "(--max-incoming-mb)",
        "send a smaller request",
    ] {
        assert!(
            status.message().contains(words),
            "{words}: {}",
            status.message()
        );
    }
    idle(&server).await;
    // The worker was not lost: the model answers again at once.
    let again = client
        .model_infer(copy_request(fits))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.raw_output_contents[0].len(), fits * 4);
    idle(&server).await;
}

/// A decoupled model that sends, from a thread of its own, a response of
/// as many MiB as its input says.
const BIG: &str = r#"
import threading
import numpy as np
import triton_python_backend_utils as pb_utils

class TritonPythonModel:
    def execute(self, requests):
        for request in requests:
            mib = int(pb_utils.get_input_tensor_by_name(request, "IN").as_numpy()[0])
            threading.Thread(target=self.send, args=(mib, request.get_response_sender())).start()
        return None

    def send(self, mib, sender):
        try:
            sender.send(pb_utils.InferenceResponse([pb_utils.Tensor("OUT", np.ones(mib << 18, dtype=np.float32))]))
            sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
        except pb_utils.TritonModelException:
            pass
"#;

const BIG_CONFIG: &str = r#"
name: "big"
backend: "python"
max_batch_size: 0
model_transaction_policy { decoupled: true }
input [ { name: "IN" data_type: TYPE_INT32 dims: [ 1 ] } ]
output [ { name: "OUT" data_type: TYPE_FP32 dims: [ -1 ] } ]
"#;

/// A decoupled model's response sent from its own thread that the
/// server's memory has no room for ends its request with the reason, in
/// band: the request does not hang, and the model serves on.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_decoupled_response_without_room_ends_its_request_saying_why() {
    let repo = tempfile::tempdir().unwrap();
    common::write(repo.path(), "big/config.pbtxt", BIG_CONFIG.as_bytes());
    common::write(repo.path(), "big/1/model.py", BIG.as_bytes());
    let server = serve_in_8_mib(repo.path()).await;
    let mut client = common::oip(&server).await;
    let request = |mib: i32| {
        let mut r = repeat_request("big", &[mib], false);
        r.model_name = "big".into();
        r
    };
    let answers = |mib: i32| {
        let mut client = client.clone();
        async move {
            let mut stream = client
                .model_stream_infer(futures_util::stream::iter(vec![request(mib)]))
                .await
                .unwrap()
                .into_inner();
            let mut got = Vec::new();
            while let Some(a) = tokio::time::timeout(Duration::from_secs(30), stream.message())
                .await
                .expect("the request ends")
                .unwrap()
            {
                let last =
                    a.error_message.is_empty() && a.infer_response.as_ref().is_some_and(is_final);
                got.push(a.error_message.clone());
                if last || !a.error_message.is_empty() {
                    break;
                }
            }
            got
        }
    };
    // 10 MiB: more than the server gives all requests.
    let refused = answers(10).await;
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert!(refused[0].contains("--max-incoming-mb"), "{refused:?}");
    // 1 MiB: answered, then the final flag.
    let answered = answers(1).await;
    assert!(answered.iter().all(String::is_empty), "{answered:?}");
    assert!(!answered.is_empty());
    let _ = client.server_live(pb::ServerLiveRequest {}).await.unwrap();
}

/// A model whose `execute` writes the file its input names, then sleeps
/// for an hour.
const STUCK: &str = r#"
import time
import triton_python_backend_utils as pb_utils

class TritonPythonModel:
    def execute(self, requests):
        path = pb_utils.get_input_tensor_by_name(requests[0], "MARKER").as_numpy()[0].decode()
        open(path, "w").close()
        time.sleep(3600)
"#;

/// The live, non-zombie processes whose parent is `parent`, with their
/// command lines.
fn children(parent: u32) -> Vec<(u32, String)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // pid (comm) state ppid ...
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map_or(vec![], |(_, r)| r.split_whitespace().collect());
        if fields.first() == Some(&"Z") || fields.get(1) != Some(&parent.to_string().as_str()) {
            continue;
        }
        let cmd = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        found.push((pid, cmd.replace('\0', " ")));
    }
    found
}

/// Whether process `pid` is gone (or a zombie nobody has reaped).
fn gone(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |s| {
        s.rsplit_once(')')
            .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
    })
}

/// A Python worker goes with its server, even one killed outright while
/// the worker is busy inside the model's execute (which reads no control
/// message that would tell it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_worker_goes_when_its_server_is_killed() {
    let repo = tempfile::tempdir().unwrap();
    common::write(
        repo.path(),
        "stuck/config.pbtxt",
        b"name: \"stuck\"\nbackend: \"python\"\nmax_batch_size: 0\ninput [ { name: \"MARKER\" data_type: TYPE_STRING dims: [ 1 ] } ]\noutput [ { name: \"y\" data_type: TYPE_FP32 dims: [ 1 ] } ]\n",
    );
    common::write(repo.path(), "stuck/1/model.py", STUCK.as_bytes());
    let venv = tokio::task::spawn_blocking(common::compat_venv)
        .await
        .unwrap();
    let args: Vec<String> = [
        "--model-repository",
        &repo.path().display().to_string(),
        "--python",
        &venv.join("bin/python").display().to_string(),
        "--grpc-address",
        "127.0.0.1:0",
        "--rest-address",
        "127.0.0.1:0",
    ]
    .map(str::to_owned)
    .to_vec();
    let server = common::Process::start(
        Path::new(env!("CARGO_BIN_EXE_reference-server")),
        &args,
        &[],
    );
    let workers: Vec<u32> = children(server.id())
        .into_iter()
        .filter(|(_, cmd)| cmd.contains("serving_python_worker.py"))
        .map(|(pid, _)| pid)
        .collect();
    assert_eq!(workers.len(), 1, "{:?}", children(server.id()));
    let (_, rest) = server.addresses();
    let marker = repo.path().join("executing");
    let body = json!({"inputs": [{"name": "MARKER", "datatype": "BYTES", "shape": [1], "data": [marker.display().to_string()]}]});
    let request = tokio::spawn(
        common::http()
            .post(format!("http://{rest}/v2/models/stuck/infer"))
            .json(&body)
            .send(),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while !marker.exists() {
        assert!(Instant::now() < deadline, "execute never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    std::process::Command::new("kill")
        .args(["-KILL", &server.id().to_string()])
        .status()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !gone(workers[0]) {
        assert!(Instant::now() < deadline, "the worker outlived its server");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(request.await.unwrap().is_err(), "the server is gone");
}
