//! Triton model repositories: `config.pbtxt` and bare ONNX files beside our
//! own `servable.toml`, batching and instance groups from the
//! configuration, version policies, and the errors a bad configuration
//! gets.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use reference_server::onnx::{Dim, ModelBuilder};
use reference_server::server::{Config, Running};
use serde_json::{Value, json};
use serving_proto::mindspore::{self, Outcome};
use serving_proto::pb::inference::{self as pb, model_infer_request::InferInputTensor};
use serving_proto::{DataType, NamedTensors, Tensor};

/// `y = x1 + x2` over float32 rows of 4, batch dimension dynamic.
fn rows_model() -> Vec<u8> {
    let rows = [Dim::Dynamic("batch"), Dim::Fixed(4)];
    ModelBuilder::new("add_rows")
        .input("x1", DataType::Fp32, &rows)
        .input("x2", DataType::Fp32, &rows)
        .output("y", DataType::Fp32, &rows)
        .node("Add", &["x1", "x2"], &["y"], vec![])
        .build()
}

/// `y = x * 2`, float32 scalars.
fn scalar_model() -> Vec<u8> {
    ModelBuilder::new("twice")
        .input("x", DataType::Fp32, &[])
        .output("y", DataType::Fp32, &[])
        .constant_f32("two", &[], &[2.0])
        .node("Mul", &["x", "two"], &["y"], vec![])
        .build()
}

async fn serve(dir: &Path) -> Running {
    common::start(Config {
        model_repository: Some(dir.to_owned()),
        poll_interval: None,
        ..common::config()
    })
    .await
}

fn rows_request(model: &str, rows: usize, seed: f32) -> pb::ModelInferRequest {
    let x: Vec<u8> = (0..rows * 4)
        .flat_map(|i| (seed + i as f32).to_le_bytes())
        .collect();
    let input = |name: &str| InferInputTensor {
        name: name.into(),
        datatype: "FP32".into(),
        shape: vec![rows as i64, 4],
        ..Default::default()
    };
    pb::ModelInferRequest {
        model_name: model.into(),
        inputs: vec![input("x1"), input("x2")],
        raw_input_contents: vec![Bytes::from(x.clone()), Bytes::from(x)],
        ..Default::default()
    }
}

fn floats(raw: &[u8]) -> Vec<f32> {
    raw.chunks(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_formats_side_by_side_serve_both_protocols() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Ours.
    common::write(
        d,
        "math/servable.toml",
        b"[[model]]\nname = \"m\"\nfile = \"m.onnx\"\n\n[[method]]\nname = \"calc\"\ninputs = [\"x1\", \"x2\"]\noutputs = [\"y\"]\n\n[[method.stage]]\nmodel = \"m\"\ninputs = [\"x1\", \"x2\"]\noutputs = [\"y\"]\n",
    );
    common::write(d, "math/1/m.onnx", &common::binary_op("Add"));
    // Triton's, with a configuration (a scalar as dims [1] reshaped).
    common::write(
        d,
        "twice/config.pbtxt",
        br#"name: "twice"
platform: "onnxruntime_onnx"
max_batch_size: 0
input [ { name: "x" data_type: TYPE_FP32 dims: [ 1 ] reshape: { shape: [ ] } } ]
output [ { name: "y" data_type: TYPE_FP32 dims: [ 1 ] reshape: { shape: [ ] } } ]
"#,
    );
    common::write(d, "twice/1/model.onnx", &scalar_model());
    // Triton's, bare: completed from the model.
    common::write(d, "rows/1/model.onnx", &rows_model());
    let server = serve(d).await;
    let mut oip = common::oip(&server).await;
    // The bare model batches (max_batch_size 4, Triton's default).
    let reply = oip
        .model_infer(rows_request("rows", 3, 1.0))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.outputs[0].shape, vec![3, 4]);
    assert_eq!(floats(&reply.raw_output_contents[0])[..3], [2.0, 4.0, 6.0]);
    let s = oip
        .model_infer(rows_request("rows", 5, 1.0))
        .await
        .unwrap_err();
    assert_eq!(s.code(), tonic::Code::InvalidArgument);
    assert!(
        s.message().contains("batch-size must be <= 4"),
        "{}",
        s.message()
    );
    let meta = common::get_json(&server, "/v2/models/rows").await;
    assert_eq!(meta["inputs"][0]["shape"], json!([-1, 4]));
    assert_eq!(meta["platform"], "onnxruntime_onnx");
    // The configured scalar: clients send [1], the model sees [].
    let body = json!({"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [21.0]}]});
    let r: Value = common::http()
        .post(common::rest(&server, "/v2/models/twice/infer"))
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["outputs"][0]["shape"], json!([1]), "{r}");
    assert_eq!(r["outputs"][0]["data"], json!([42.0]));
    // MindSpore clients reach Triton models as servable NAME, method predict.
    let instance: NamedTensors = [
        (
            "x1".to_string(),
            Tensor::from_slice(&[4], &[1f32, 2.0, 3.0, 4.0]).unwrap(),
        ),
        (
            "x2".to_string(),
            Tensor::from_slice(&[4], &[1f32; 4]).unwrap(),
        ),
    ]
    .into();
    let req = mindspore::grpc::encode_request("rows", "predict", 0, &[instance.clone(), instance])
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
    assert_eq!(
        r[1].as_ref().unwrap()["y"].to_vec::<f32>().unwrap(),
        vec![2.0, 3.0, 4.0, 5.0]
    );
    // And ours still serves.
    let r = common::http()
        .post(common::rest(&server, "/model/math:calc"))
        .json(&json!({"instances": [{"x1": [[1.0, 1.0], [1.0, 1.0]], "x2": [[1.0, 2.0], [3.0, 4.0]]}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dynamic_batching_and_instance_groups_come_from_the_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let config = |name: &str, extra: &str| {
        format!(
            "name: \"{name}\"\nmax_batch_size: 8\ninput [ {{ name: \"x1\" data_type: TYPE_FP32 dims: [ 4 ] }}, {{ name: \"x2\" data_type: TYPE_FP32 dims: [ 4 ] }} ]\noutput [ {{ name: \"y\" data_type: TYPE_FP32 dims: [ 4 ] }} ]\n{extra}"
        )
    };
    common::write(
        dir.path(),
        "batched/config.pbtxt",
        config("batched", "dynamic_batching { max_queue_delay_microseconds: 20000 }\ninstance_group [ { count: 1 kind: KIND_CPU } ]").as_bytes(),
    );
    common::write(dir.path(), "batched/1/model.onnx", &rows_model());
    common::write(
        dir.path(),
        "twins/config.pbtxt",
        config("twins", "instance_group [ { count: 2 kind: KIND_CPU } ]").as_bytes(),
    );
    common::write(dir.path(), "twins/1/model.onnx", &rows_model());
    let server = Arc::new(serve(dir.path()).await);
    let mut tasks = Vec::new();
    for c in 0..16 {
        let server = server.clone();
        tasks.push(tokio::spawn(async move {
            let mut oip = common::oip(&server).await;
            for r in 0..5 {
                let seed = (c * 100 + r * 10) as f32;
                let reply = oip
                    .model_infer(rows_request("batched", 1, seed))
                    .await
                    .unwrap()
                    .into_inner();
                assert_eq!(
                    floats(&reply.raw_output_contents[0]),
                    (0..4).map(|i| 2.0 * (seed + i as f32)).collect::<Vec<_>>()
                );
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let sv = server.state.registry.get("batched", 0).unwrap();
    let batches = sv.scheduler().batch_sizes();
    println!("80 requests of one row in {} runs", batches.count());
    assert!(
        batches.count_above(1.0) > 0,
        "OIP requests of several clients batched"
    );
    assert_eq!(sv.devices().len(), 1);
    let twins = server.state.registry.get("twins", 0).unwrap();
    assert_eq!(
        twins.devices().len(),
        2,
        "count: 2 KIND_CPU is two replicas"
    );
    assert_eq!(twins.scheduler().stats().len(), 2);
    // Without dynamic_batching a request runs alone, with up to 8 rows.
    let mut oip = common::oip(&server).await;
    let reply = oip
        .model_infer(rows_request("twins", 8, 0.0))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.outputs[0].shape, vec![8, 4]);
    let metrics = common::metrics(&server).await;
    assert!(metrics.contains("serving_batch_size_count{servable=\"batched\",version=\"1\"}"));
    drop((sv, twins));
    Arc::try_unwrap(server).unwrap().shutdown().await;
}

#[tokio::test]
async fn each_version_policy_serves_exactly_its_versions() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("latest_default", ""),
        (
            "latest_two",
            "version_policy: { latest: { num_versions: 2 } }",
        ),
        ("all", "version_policy: { all: {} }"),
        (
            "specific",
            "version_policy: { specific: { versions: [ 1, 3 ] } }",
        ),
    ];
    for (name, policy) in cases {
        common::write(
            dir.path(),
            &format!("{name}/config.pbtxt"),
            format!("name: \"{name}\"\n{policy}\n").as_bytes(),
        );
        for v in 1..=3 {
            common::write(dir.path(), &format!("{name}/{v}/model.onnx"), &rows_model());
        }
    }
    let server = common::start(Config {
        model_repository: Some(dir.path().to_owned()),
        poll_interval: None,
        ..common::config()
    })
    .await;
    let r = &server.state.registry;
    assert_eq!(r.versions("latest_default"), vec![3]);
    assert_eq!(r.versions("latest_two"), vec![2, 3]);
    assert_eq!(r.versions("all"), vec![1, 2, 3]);
    assert_eq!(r.versions("specific"), vec![1, 3]);
    // Hot reload under the default policy: version 4 replaces 3 once it
    // serves (two polls after its last write).
    common::write(dir.path(), "latest_default/4/model.onnx", &rows_model());
    let poll = || {
        server
            .state
            .watcher
            .as_ref()
            .unwrap()
            .lock()
            .unwrap()
            .poll(r)
    };
    assert!(poll().loaded.is_empty());
    assert_eq!(
        r.versions("latest_default"),
        vec![3],
        "the old version serves until the new one loads"
    );
    let changes = poll();
    assert_eq!(changes.loaded, vec!["latest_default/4".to_string()]);
    assert_eq!(changes.unloaded, vec!["latest_default/3".to_string()]);
    assert_eq!(r.versions("latest_default"), vec![4]);
    server.shutdown().await;
}

#[tokio::test]
async fn bad_configurations_name_the_file_and_the_reason() {
    let cases: &[(&str, &str)] = &[
        (
            "name: \"m\"\nbatch_input { }",
            "config.pbtxt: 2:1: field 'batch_input' of Triton's ModelConfig is not supported: batch inputs",
        ),
        (
            "name: \"m\"\nmax_batch_size: \"eight\"",
            "config.pbtxt: 2:17: ",
        ),
        (
            "name: \"other\"",
            "config.pbtxt: name \"other\" does not match the model directory 'm'",
        ),
        (
            "name: \"m\"\nmax_batch_size: 8\ninput [ { name: \"x1\" data_type: TYPE_INT64 dims: [ 4 ] }, { name: \"x2\" data_type: TYPE_FP32 dims: [ 4 ] } ]",
            "config.pbtxt: input 'x1' is TYPE_INT64 in config.pbtxt but TYPE_FP32 in model.onnx",
        ),
        (
            "name: \"m\"\nmax_batch_size: 8\ninput [ { name: \"x1\" data_type: TYPE_FP32 dims: [ 4, 2 ] }, { name: \"x2\" data_type: TYPE_FP32 dims: [ 4 ] } ]",
            "config.pbtxt: input 'x1' has dims [4, 2] in config.pbtxt (after the batch dimension) but shape [-1, 4] in model.onnx",
        ),
        (
            "name: \"m\"\nplatform: \"pytorch_libtorch\"",
            "config.pbtxt: platform \"pytorch_libtorch\" is not served",
        ),
        (
            "name: \"m\"\ninstance_group [ { kind: KIND_CPU profile: \"p\" } ]",
            "config.pbtxt: field 'instance_group[0].profile' is not supported",
        ),
    ];
    for (text, want) in cases {
        let dir = tempfile::tempdir().unwrap();
        common::write(dir.path(), "m/config.pbtxt", text.as_bytes());
        common::write(dir.path(), "m/1/model.onnx", &rows_model());
        let e = common::start_error(dir.path()).await;
        assert!(e.contains(want), "{text}\n  got: {e}\n  want: {want}");
    }
    // A directory with neither file says what is missing and what the model
    // holds.
    let dir = tempfile::tempdir().unwrap();
    common::write(dir.path(), "m/1/resnet.onnx", &rows_model());
    let e = common::start_error(dir.path()).await;
    assert!(e.contains("neither servable.toml nor config.pbtxt"), "{e}");
    assert!(
        e.contains("has inputs: x1 TYPE_FP32 [-1, 4], x2 TYPE_FP32 [-1, 4]; outputs: y TYPE_FP32 [-1, 4]: name it model.onnx, or write a config.pbtxt with default_model_filename: \"resnet.onnx\""),
        "{e}"
    );
}

#[tokio::test]
async fn with_exit_on_error_false_a_broken_model_is_not_ready_and_retried() {
    let dir = tempfile::tempdir().unwrap();
    common::write(dir.path(), "good/1/model.onnx", &rows_model());
    common::write(
        dir.path(),
        "bad/config.pbtxt",
        b"name: \"bad\"\nmax_batch_size: -1\n",
    );
    common::write(dir.path(), "bad/1/model.onnx", &rows_model());
    let server = common::start(Config {
        model_repository: Some(dir.path().to_owned()),
        exit_on_error: false,
        poll_interval: None,
        ..common::config()
    })
    .await;
    let ready = |model: &'static str| {
        let server = &server;
        async move {
            common::http()
                .get(common::rest(server, &format!("/v2/models/{model}/ready")))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(ready("good").await, 200);
    assert_eq!(ready("bad").await, 503);
    let index: Value = common::http()
        .post(common::rest(&server, "/v2/repository/index"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let bad = index
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "bad")
        .unwrap();
    assert_eq!(bad["state"], "UNAVAILABLE");
    assert!(
        bad["reason"]
            .as_str()
            .unwrap()
            .contains("max_batch_size -1 is negative"),
        "{bad}"
    );
    // Fixed: loaded once two polls agree.
    common::write(dir.path(), "bad/config.pbtxt", b"name: \"bad\"\n");
    let poll = || {
        server
            .state
            .watcher
            .as_ref()
            .unwrap()
            .lock()
            .unwrap()
            .poll(&server.state.registry)
    };
    poll();
    assert_eq!(poll().loaded, vec!["bad/1".to_string()]);
    assert_eq!(ready("bad").await, 200);
    server.shutdown().await;
}

#[tokio::test]
async fn the_repository_api_loads_and_unloads_triton_models() {
    let dir = tempfile::tempdir().unwrap();
    common::write(dir.path(), "rows/1/model.onnx", &rows_model());
    let server = serve(dir.path()).await;
    let post = |path: &str| common::http().post(common::rest(&server, path)).send();
    assert_eq!(
        post("/v2/repository/models/rows/unload")
            .await
            .unwrap()
            .status(),
        200
    );
    assert!(server.state.registry.versions("rows").is_empty());
    common::write(dir.path(), "rows/2/model.onnx", &rows_model());
    assert_eq!(
        post("/v2/repository/models/rows/load")
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(server.state.registry.versions("rows"), vec![2]);
    let sv = server.state.registry.get("rows", 0).unwrap();
    assert_eq!(sv.scheduler().stats()[0].runs.load(Ordering::Relaxed), 0);
    drop(sv);
    tokio::time::sleep(Duration::from_millis(10)).await;
    server.shutdown().await;
}
