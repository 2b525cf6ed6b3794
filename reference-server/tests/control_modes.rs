//! Operating the server as Triton users do: the model control modes (none,
//! poll, explicit with `--load-model`) and the repository API in each,
//! strict readiness, and the executable started with Triton's own flags:
//! KServe's Triton runtime's argument list, and the name `tritonserver`.

mod common;

use std::path::Path;
use std::time::Duration;

use reference_server::onnx::{Dim, identity};
use reference_server::server::{Config, ModelControl};
use serde_json::{Value, json};
use serving_proto::DataType;

fn repository(models: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for m in models {
        common::write(
            dir.path(),
            &format!("{m}/1/model.onnx"),
            &identity(DataType::Fp32, &[Dim::Dynamic("n")]),
        );
    }
    dir
}

async fn status(http: &reqwest::Client, method: &str, url: String) -> (u16, Value) {
    let r = match method {
        "GET" => http.get(url).send().await.unwrap(),
        _ => http.post(url).send().await.unwrap(),
    };
    let code = r.status().as_u16();
    let text = r.text().await.unwrap();
    (
        code,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn config(dir: &Path, control: ModelControl, load: &[&str]) -> Config {
    Config {
        model_repository: Some(dir.to_owned()),
        model_control: control,
        load_models: load.iter().map(|s| (*s).to_owned()).collect(),
        poll_interval: Some(Duration::from_millis(100)),
        ..common::config()
    }
}

#[tokio::test]
async fn explicit_mode_loads_the_named_models_then_only_what_the_api_asks() {
    let dir = repository(&["a", "b"]);
    let server = common::start(config(dir.path(), ModelControl::Explicit, &["a"])).await;
    let http = common::http();
    let url = |p: &str| common::rest(&server, p);
    assert_eq!(status(&http, "GET", url("/v2/models/a/ready")).await.0, 200);
    assert_ne!(status(&http, "GET", url("/v2/models/b/ready")).await.0, 200);
    // Held back, not failed: the server is ready (strict readiness).
    assert_eq!(status(&http, "GET", url("/v2/health/ready")).await.0, 200);
    let (_, index) = status(&http, "POST", url("/v2/repository/index")).await;
    let b = index.as_array().unwrap().iter().find(|m| m["name"] == "b");
    assert_eq!(b.unwrap()["state"], "UNAVAILABLE", "{index}");
    // No polling: a new model directory stays unloaded.
    common::write(
        dir.path(),
        "c/1/model.onnx",
        &identity(DataType::Fp32, &[Dim::Dynamic("n")]),
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_ne!(status(&http, "GET", url("/v2/models/c/ready")).await.0, 200);
    // The API loads and unloads.
    assert_eq!(
        status(&http, "POST", url("/v2/repository/models/b/load"))
            .await
            .0,
        200
    );
    assert_eq!(status(&http, "GET", url("/v2/models/b/ready")).await.0, 200);
    assert_eq!(
        status(&http, "POST", url("/v2/repository/models/a/unload"))
            .await
            .0,
        200
    );
    assert_ne!(status(&http, "GET", url("/v2/models/a/ready")).await.0, 200);
    server.shutdown().await;

    // `*` loads every model at start.
    let server = common::start(config(dir.path(), ModelControl::Explicit, &["*"])).await;
    for m in ["a", "b", "c"] {
        let path = format!("/v2/models/{m}/ready");
        assert_eq!(
            status(&http, "GET", common::rest(&server, &path)).await.0,
            200
        );
    }
    server.shutdown().await;
}

#[tokio::test]
async fn none_and_poll_refuse_the_repository_api_as_triton_does() {
    let dir = repository(&["a"]);
    let http = common::http();
    for control in [ModelControl::None, ModelControl::Poll] {
        let name = control.name();
        let server = common::start(config(dir.path(), control.clone(), &[])).await;
        for action in ["load", "unload"] {
            let path = format!("/v2/repository/models/a/{action}");
            let (code, v) = status(&http, "POST", common::rest(&server, &path)).await;
            assert_eq!(code, 503, "{name} {action}: {v}");
            let text = v["error"].as_str().unwrap();
            assert!(
                text.starts_with(
                    "explicit model load / unload is not allowed if polling is enabled"
                ) && text.contains(&format!("--model-control-mode {name}")),
                "{text}"
            );
        }
        let mut grpc = common::oip(&server).await;
        let e = grpc
            .repository_model_load(serving_proto::pb::inference::RepositoryModelLoadRequest {
                model_name: "a".into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unavailable, "{name}: {e:?}");
        // The model is served all the while.
        let (code, _) = status(&http, "GET", common::rest(&server, "/v2/models/a/ready")).await;
        assert_eq!(code, 200);
        // Only poll mode sees a new directory.
        let new = format!("new_{name}");
        common::write(
            dir.path(),
            &format!("{new}/1/model.onnx"),
            &identity(DataType::Fp32, &[Dim::Dynamic("n")]),
        );
        let ready = common::rest(&server, &format!("/v2/models/{new}/ready"));
        let mut seen = false;
        for _ in 0..30 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if status(&http, "GET", ready.clone()).await.0 == 200 {
                seen = true;
                break;
            }
        }
        assert_eq!(seen, control == ModelControl::Poll, "{name}");
        server.shutdown().await;
    }
}

#[tokio::test]
async fn strict_readiness_counts_models_that_failed_to_load() {
    let dir = repository(&["good"]);
    common::write(
        dir.path(),
        "bad/config.pbtxt",
        b"name: \"bad\"\nmax_batch_size: -1\n",
    );
    common::write(
        dir.path(),
        "bad/1/model.onnx",
        &identity(DataType::Fp32, &[Dim::Dynamic("n")]),
    );
    let http = common::http();
    for (strict, want) in [(true, 503), (false, 200)] {
        let server = common::start(Config {
            exit_on_error: false,
            strict_readiness: strict,
            ..config(dir.path(), ModelControl::None, &[])
        })
        .await;
        let (code, v) = status(&http, "GET", common::rest(&server, "/v2/health/ready")).await;
        assert_eq!(code, want, "strict {strict}: {v}");
        let (code, _) = status(&http, "GET", common::rest(&server, "/v2/models/good/ready")).await;
        assert_eq!(code, 200);
        server.shutdown().await;
    }
}

/// Ports free now (bound to port 0, then let go).
fn free_ports<const N: usize>() -> [u16; N] {
    let listeners: Vec<std::net::TcpListener> = (0..N)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    std::array::from_fn(|i| listeners[i].local_addr().unwrap().port())
}

#[tokio::test]
async fn kserves_triton_runtime_arguments_start_the_server_and_it_serves() {
    let dir = repository(&["a"]);
    let [grpc, http_port, metrics] = free_ports::<3>();
    // ../shared/kserve/example-runtime-tritonserver.yaml's args, the model
    // store and ports ours; --metrics-port added only because this
    // machine's 8002 may be taken.
    let args: Vec<String> = vec![
        format!("--model-store={}", dir.path().display()),
        format!("--grpc-port={grpc}"),
        format!("--http-port={http_port}"),
        "--allow-grpc=true".into(),
        "--allow-http=true".into(),
        format!("--metrics-port={metrics}"),
    ];
    let child = common::Process::start(
        Path::new(env!("CARGO_BIN_EXE_reference-server")),
        &args,
        &[],
    );
    let banner = &child.banner;
    assert!(
        banner.contains(&format!("Started HTTPService at 0.0.0.0:{http_port}")),
        "{banner:?}"
    );
    assert!(banner.contains(&format!("Started GRPCInferenceService at 0.0.0.0:{grpc}")));
    assert!(banner.contains(&format!("Started Metrics Service at 0.0.0.0:{metrics}")));
    let http = common::http();
    let (code, v) = {
        let r = http
            .post(format!("http://127.0.0.1:{http_port}/v2/models/a/infer"))
            .json(&json!({"inputs": [{"name": "x", "datatype": "FP32", "shape": [2], "data": [1.5, 2.5]}]}))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json::<Value>().await.unwrap())
    };
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["outputs"][0]["data"], json!([1.5, 2.5]));
    let metrics_text = http
        .get(format!("http://127.0.0.1:{metrics}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics_text.contains("serving_"), "{metrics_text}");
    // Triton's default control mode: none.
    let (code, _) = status(
        &http,
        "POST",
        format!("http://127.0.0.1:{http_port}/v2/repository/models/a/unload"),
    )
    .await;
    assert_eq!(code, 503);
    drop(child);
}

#[tokio::test]
async fn named_tritonserver_it_takes_tritons_flags_and_modes() {
    let dir = repository(&["a", "b"]);
    let bin = tempfile::tempdir().unwrap();
    let tritonserver = bin.path().join("tritonserver");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_reference-server"), &tritonserver).unwrap();
    let [grpc, http_port, metrics] = free_ports::<3>();
    let args: Vec<String> = vec![
        format!("--model-repository={}", dir.path().display()),
        "--model-control-mode=EXPLICIT".into(),
        "--load-model=b".into(),
        format!("--http-port={http_port}"),
        format!("--grpc-port={grpc}"),
        format!("--metrics-port={metrics}"),
        "--log-verbose=1".into(),
        "--exit-timeout-secs=5".into(),
        "--repository-poll-secs=0".into(),
        "--id=edge-1".into(),
    ];
    let child = common::Process::start(&tritonserver, &args, &[]);
    let http = common::http();
    let (_, v) = status(&http, "GET", format!("http://127.0.0.1:{http_port}/v2")).await;
    assert_eq!(v["name"], "edge-1", "--id names the server: {v}");
    let ready = |m: &str| format!("http://127.0.0.1:{http_port}/v2/models/{m}/ready");
    assert_ne!(status(&http, "GET", ready("a")).await.0, 200);
    assert_eq!(status(&http, "GET", ready("b")).await.0, 200);
    let load = format!("http://127.0.0.1:{http_port}/v2/repository/models/a/load");
    assert_eq!(status(&http, "POST", load).await.0, 200);
    assert_eq!(status(&http, "GET", ready("a")).await.0, 200);
    drop(child);
}

/// Triton's quick start, unchanged: `tritonserver --model-repository=DIR`
/// and nothing else serves REST on 8000, gRPC on 8001 and metrics on 8002
/// (every address), as its guide's `curl localhost:8000/v2/health/ready`
/// and client examples expect. The one test on fixed ports: nothing else
/// in the workspace or CI binds 8000-8002 (the peers take free ports).
#[tokio::test]
async fn tritons_quick_start_serves_on_tritons_ports() {
    let dir = repository(&["a"]);
    let bin = tempfile::tempdir().unwrap();
    let tritonserver = bin.path().join("tritonserver");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_reference-server"), &tritonserver).unwrap();
    for port in [8000, 8001, 8002] {
        if let Err(e) = std::net::TcpListener::bind(("0.0.0.0", port)) {
            panic!("port {port} is taken ({e}): Triton's quick start needs 8000-8002 free");
        }
    }
    let args = vec![format!("--model-repository={}", dir.path().display())];
    let child = common::Process::start(&tritonserver, &args, &[]);
    let banner = &child.banner;
    for line in [
        "Started GRPCInferenceService at 0.0.0.0:8001",
        "Started HTTPService at 0.0.0.0:8000",
        "Started Metrics Service at 0.0.0.0:8002",
    ] {
        assert!(banner.iter().any(|l| l == line), "{line} in {banner:?}");
    }
    let http = common::http();
    let (code, _) = status(&http, "GET", "http://localhost:8000/v2/health/ready".into()).await;
    assert_eq!(code, 200);
    // Started as Triton, it is named as Triton (`--id` unset).
    let (_, v) = status(&http, "GET", "http://localhost:8000/v2".into()).await;
    assert_eq!(v["name"], "triton", "{v}");
    let r = http
        .post("http://localhost:8000/v2/models/a/infer")
        .json(&json!({"inputs": [{"name": "x", "datatype": "FP32", "shape": [2], "data": [1.5, 2.5]}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let channel = tonic::transport::Endpoint::from_static("http://127.0.0.1:8001")
        .connect()
        .await
        .expect("gRPC on 8001");
    let mut grpc =
        serving_proto::pb::inference::grpc_inference_service_client::GrpcInferenceServiceClient::new(
            channel,
        );
    let live = grpc
        .server_live(serving_proto::pb::inference::ServerLiveRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(live.live);
    let metrics_text = http
        .get("http://localhost:8002/metrics")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics_text.contains("serving_"), "{metrics_text}");
    drop(child);
}

#[tokio::test]
async fn a_load_reads_a_changed_configuration_and_a_broken_one_keeps_the_old() {
    let dir = repository(&[]);
    let batched = reference_server::onnx::matmul_chain(2, 1, &[1.0, 0.0, 0.0, 1.0]);
    common::write(dir.path(), "m/1/model.onnx", &batched);
    let config = |mbs: u32| {
        format!(
            "name: \"m\"\nmax_batch_size: {mbs}\ninput [ {{ name: \"x\" data_type: TYPE_FP32 dims: [ 2 ] }} ]\noutput [ {{ name: \"y\" data_type: TYPE_FP32 dims: [ 2 ] }} ]\n"
        )
    };
    common::write(dir.path(), "m/config.pbtxt", config(2).as_bytes());
    let server = common::start(config_of(dir.path())).await;
    let http = common::http();
    let max_batch = |server: &reference_server::server::Running| {
        let http = http.clone();
        let url = common::rest(server, "/v2/models/m/config");
        async move { status(&http, "GET", url).await.1["max_batch_size"].clone() }
    };
    assert_eq!(max_batch(&server).await, json!(2));
    common::write(dir.path(), "m/config.pbtxt", config(8).as_bytes());
    let load = common::rest(&server, "/v2/repository/models/m/load");
    assert_eq!(status(&http, "POST", load.clone()).await.0, 200);
    assert_eq!(
        max_batch(&server).await,
        json!(8),
        "the load read the new configuration"
    );
    common::write(
        dir.path(),
        "m/config.pbtxt",
        b"name: \"m\"\nmax_batch_size: -1\n",
    );
    let (code, v) = status(&http, "POST", load).await;
    assert_eq!(code, 400, "{v}");
    assert!(v["error"].as_str().unwrap().contains("keep serving"), "{v}");
    assert_eq!(max_batch(&server).await, json!(8), "the old one serves on");
    server.shutdown().await;
}

fn config_of(dir: &Path) -> Config {
    config(dir, ModelControl::Explicit, &["*"])
}

#[tokio::test]
async fn every_model_that_cannot_be_served_is_reported_and_answers_why() {
    let dir = repository(&["good"]);
    common::write(
        dir.path(),
        "bad_batch/config.pbtxt",
        b"name: \"bad_batch\"\nmax_batch_size: -1\n",
    );
    common::write(
        dir.path(),
        "bad_batch/1/model.onnx",
        &identity(DataType::Fp32, &[Dim::Dynamic("n")]),
    );
    common::write(
        dir.path(),
        "bad_field/config.pbtxt",
        b"name: \"bad_field\"\nbatch_input { }\n",
    );
    common::write(
        dir.path(),
        "bad_field/1/model.onnx",
        &identity(DataType::Fp32, &[Dim::Dynamic("n")]),
    );
    common::write(dir.path(), "no_file/1/model.txt", b"not a model");
    // One start names them all.
    let e = common::start_error(dir.path()).await;
    assert!(e.contains("3 models cannot be served"), "{e}");
    for model in ["bad_batch", "bad_field", "no_file"] {
        assert!(
            e.contains(&format!("/{model}")),
            "{model} missing from: {e}"
        );
    }
    // Served without them, each answers with its load error.
    let server = common::start(Config {
        exit_on_error: false,
        ..config(dir.path(), ModelControl::None, &[])
    })
    .await;
    let http = common::http();
    let r = http
        .post(common::rest(&server, "/v2/models/bad_batch/infer"))
        .json(&json!({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1]}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    let v: Value = r.json().await.unwrap();
    let text = v["error"].as_str().unwrap();
    assert!(
        text.starts_with("model 'bad_batch' is not available: it failed to load: ")
            && text.contains("max_batch_size -1 is negative"),
        "{text}"
    );
    let (code, _) = status(&http, "GET", common::rest(&server, "/v2/models/nope/ready")).await;
    assert_eq!(code, 404, "an unknown model is still not found");
    server.shutdown().await;
}

#[tokio::test]
async fn a_load_with_a_configuration_uses_it_until_a_load_without() {
    let dir = repository(&[]);
    let batched = reference_server::onnx::matmul_chain(2, 1, &[1.0, 0.0, 0.0, 1.0]);
    common::write(dir.path(), "m/1/model.onnx", &batched);
    common::write(
        dir.path(),
        "m/config.pbtxt",
        b"name: \"m\"\nmax_batch_size: 2\ninput [ { name: \"x\" data_type: TYPE_FP32 dims: [ 2 ] } ]\noutput [ { name: \"y\" data_type: TYPE_FP32 dims: [ 2 ] } ]\n",
    );
    let server = common::start(config_of(dir.path())).await;
    let http = common::http();
    let url = |p: &str| common::rest(&server, p);
    let load = |body: Value| {
        let http = http.clone();
        let url = url("/v2/repository/models/m/load");
        async move {
            let r = http.post(url).json(&body).send().await.unwrap();
            let code = r.status().as_u16();
            (code, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let override_ = json!({
        "name": "m", "max_batch_size": 6,
        "input": [{"name": "x", "data_type": "TYPE_FP32", "dims": [2]}],
        "output": [{"name": "y", "data_type": "TYPE_FP32", "dims": [2]}],
        "parameters": {"note": {"string_value": "given with the load"}}
    });
    let (code, v) = load(json!({"parameters": {"config": override_.to_string()}})).await;
    assert_eq!(code, 200, "{v}");
    let c = common::get_json(&server, "/v2/models/m/config").await;
    assert_eq!(c["max_batch_size"], 6, "{c}");
    assert_eq!(
        c["parameters"]["note"]["string_value"],
        "given with the load"
    );
    // Without one, config.pbtxt again.
    assert_eq!(load(json!({})).await.0, 200);
    let c = common::get_json(&server, "/v2/models/m/config").await;
    assert_eq!(c["max_batch_size"], 2, "{c}");
    for (body, want) in [
        (
            json!({"parameters": {"config": "{not json"}}),
            "is not a model configuration",
        ),
        (json!({"parameters": {"config": 7}}), "must be a string"),
        (
            json!({"parameters": {"file:1/model.onnx": "AAAA"}}),
            "give 'config' with them",
        ),
        (
            json!({"parameters": {"config": "{}", "file:../escape/model.onnx": "AAAA"}}),
            "is not a relative path of plain names",
        ),
        (
            json!({"parameters": {"config": "{}", "file:/etc/x": "AAAA"}}),
            "is not a relative path of plain names",
        ),
        (
            json!({"parameters": {"config": "{}", "file:1/model.onnx": "not base64!"}}),
            "are not base64",
        ),
        (
            json!({"parameters": {"config": "{}", "file:1/model.onnx": 7}}),
            "must be bytes",
        ),
        (json!({"parameters": {"bogus": "x"}}), "is not supported"),
    ] {
        let (code, v) = load(body).await;
        assert_eq!(code, 400, "{v}");
        assert!(v["error"].as_str().unwrap().contains(want), "{v}");
    }
    // gRPC: the same string parameter.
    let loaded = grpc_load_with_config(&server, &override_.to_string()).await;
    assert!(loaded.is_ok(), "{loaded:?}");
    let c = common::get_json(&server, "/v2/models/m/config").await;
    assert_eq!(c["max_batch_size"], 6, "{c}");
    server.shutdown().await;
}

/// A gRPC load with a `config` string parameter.
/// Triton's `file:` load parameters: a model's files given with the load
/// (base64 over REST, bytes over gRPC, with its configuration) stand for
/// its directory, also for a model the repository does not have, until a
/// load without files; they land in a new private directory only.
#[tokio::test]
async fn a_load_with_files_serves_them_until_a_load_without() {
    use base64::Engine as _;
    let dir = repository(&["a"]);
    let server = common::start(config_of(dir.path())).await;
    let http = common::http();
    let load = |model: &str, body: Value| {
        let http = http.clone();
        let url = common::rest(&server, &format!("/v2/repository/models/{model}/load"));
        async move {
            let r = http.post(url).json(&body).send().await.unwrap();
            let code = r.status().as_u16();
            (code, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let infer = |model: &str| {
        let http = http.clone();
        let url = common::rest(&server, &format!("/v2/models/{model}/infer"));
        async move {
            let r = http
                .post(url)
                .json(&json!({"inputs": [{"name": "x", "datatype": "INT32", "shape": [2], "data": [7, 8]}]}))
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    // A model the repository lacks, from an INT32 identity sent as files.
    let model = identity(DataType::Int32, &[Dim::Dynamic("n")]);
    let b64 = base64::engine::general_purpose::STANDARD.encode(&model);
    let config = json!({"name": "fresh", "backend": "onnxruntime"}).to_string();
    let (code, v) = load(
        "fresh",
        json!({"parameters": {"config": config, "file:1/model.onnx": b64}}),
    )
    .await;
    assert_eq!(code, 200, "{v}");
    let (code, v) = infer("fresh").await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["outputs"][0]["data"], json!([7, 8]));
    assert!(
        !dir.path().join("fresh").exists(),
        "nothing is written into the repository"
    );
    // An existing model's files replaced: "a" becomes the INT32 identity.
    let config_a = json!({"name": "a"}).to_string();
    let mut grpc = common::oip(&server).await;
    use serving_proto::pb::inference::{
        ModelRepositoryParameter, RepositoryModelLoadRequest,
        model_repository_parameter::ParameterChoice,
    };
    grpc.repository_model_load(RepositoryModelLoadRequest {
        model_name: "a".into(),
        parameters: [
            (
                "config".to_owned(),
                ModelRepositoryParameter {
                    parameter_choice: Some(ParameterChoice::StringParam(config_a)),
                },
            ),
            (
                "file:1/model.onnx".to_owned(),
                ModelRepositoryParameter {
                    parameter_choice: Some(ParameterChoice::BytesParam(model.clone().into())),
                },
            ),
        ]
        .into(),
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(infer("a").await.0, 200, "the INT32 model from the files");
    // Files that are no model: the load fails and "a" serves on as it was.
    let (code, v) = load(
        "a",
        json!({"parameters": {"config": json!({"name": "a"}).to_string(), "file:1/model.onnx": "b25ueA=="}}),
    )
    .await;
    assert_eq!(code, 400, "{v}");
    assert_eq!(infer("a").await.0, 200, "still the INT32 model");
    // Without files, the repository's again: FP32, so INT32 is refused.
    assert_eq!(load("a", json!({})).await.0, 200);
    let (code, v) = infer("a").await;
    assert_eq!(code, 400, "{v}");
    // "fresh" has no directory of its own: a load without files fails as
    // Triton's does.
    let (code, v) = load("fresh", json!({})).await;
    assert_eq!(code, 400, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .starts_with("failed to load 'fresh'"),
        "{v}"
    );
    server.shutdown().await;
}

/// The files given with loads are bounded together (`--max-load-files-mb`):
/// a load whose files would pass the bound is refused before a file is
/// written, a model's own files are replaced (not added to), and a failed
/// load keeps none of its files.
#[tokio::test]
async fn the_files_given_with_loads_are_bounded_together() {
    use base64::Engine as _;
    let dir = repository(&["served"]);
    let server = common::start(Config {
        max_load_files_mb: 1,
        ..config_of(dir.path())
    })
    .await;
    let http = common::http();
    let load = |model: &str, files: &[(&str, Vec<u8>)]| {
        let http = http.clone();
        let url = common::rest(&server, &format!("/v2/repository/models/{model}/load"));
        let mut parameters =
            json!({"config": json!({"name": model, "backend": "onnxruntime"}).to_string()});
        for (path, bytes) in files {
            parameters[format!("file:{path}")] =
                Value::from(base64::engine::general_purpose::STANDARD.encode(bytes));
        }
        async move {
            let r = http
                .post(url)
                .json(&json!({"parameters": parameters}))
                .send()
                .await
                .unwrap();
            let code = r.status().as_u16();
            (code, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let model = identity(DataType::Int32, &[Dim::Dynamic("n")]);
    let blob = |kib: usize| vec![7u8; kib << 10];
    // 600 KiB of 1 MiB.
    let (code, v) = load(
        "a",
        &[("1/model.onnx", model.clone()), ("1/blob", blob(600))],
    )
    .await;
    assert_eq!(code, 200, "{v}");
    // 600 KiB more would pass the bound: refused, saying why.
    let (code, v) = load(
        "b",
        &[("1/model.onnx", model.clone()), ("1/blob", blob(600))],
    )
    .await;
    assert_eq!(code, 413, "{v}");
    let text = v["error"].as_str().unwrap();
    for words in [
        "failed to load 'b'",
        "--max-load-files-mb",
        "load models without files",
    ] {
        assert!(text.contains(words), "{words}: {text}");
    }
    // "a" again: its new files replace its old ones.
    let (code, v) = load(
        "a",
        &[("1/model.onnx", model.clone()), ("1/blob", blob(700))],
    )
    .await;
    assert_eq!(code, 200, "{v}");
    // A failed load keeps nothing: two of 200 KiB fail as loads (no
    // model), and neither is refused for the other's files.
    for name in ["c", "d"] {
        let (code, v) = load(name, &[("1/model.onnx", blob(200))]).await;
        assert_eq!(code, 400, "{name}: {v}");
    }
    server.shutdown().await;
}

async fn grpc_load_with_config(
    server: &reference_server::server::Running,
    config: &str,
) -> Result<(), tonic::Status> {
    use serving_proto::pb::inference::{
        ModelRepositoryParameter, RepositoryModelLoadRequest,
        model_repository_parameter::ParameterChoice,
    };
    let mut grpc = common::oip(server).await;
    grpc.repository_model_load(RepositoryModelLoadRequest {
        model_name: "m".into(),
        parameters: [(
            "config".to_owned(),
            ModelRepositoryParameter {
                parameter_choice: Some(ParameterChoice::StringParam(config.to_owned())),
            },
        )]
        .into(),
        ..Default::default()
    })
    .await
    .map(|_| ())
}

#[tokio::test]
async fn the_metrics_port_asks_for_the_token_as_every_route_does() {
    let server = common::start(Config {
        metrics_address: Some(([127, 0, 0, 1], 0).into()),
        auth_token: Some("secret".into()),
        ..common::config()
    })
    .await;
    let url = format!("http://{}/metrics", server.metrics_address.unwrap());
    let http = common::http();
    assert_eq!(http.get(&url).send().await.unwrap().status(), 401);
    let r = http.get(&url).bearer_auth("secret").send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("serving_"));
    server.shutdown().await;
}
