//! The deployment files in `deploy/` against the real server: every flag
//! they pass exists, every environment variable the image sets is one the
//! server reads, and the server started with their arguments (on loopback
//! ports) serves every port and path they probe. The KServe runtime serves
//! a model laid out as KServe's storage initializer lays it out.
//! (`deploy/check.sh` validates the same files against the Kubernetes and
//! KServe schemas.)

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use serde_json::json;
use yaml_rust2::{Yaml, YamlLoader};

fn deploy(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .join(rel)
}

fn load(rel: &str) -> Yaml {
    let path = deploy(rel);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut docs = YamlLoader::load_from_str(&text).unwrap();
    assert_eq!(docs.len(), 1, "{rel}: one object per file");
    docs.remove(0)
}

/// `v` at the `.`-separated path (numbers index lists).
fn at<'a>(v: &'a Yaml, path: &str) -> &'a Yaml {
    path.split('.')
        .fold(v, |v, key| match key.parse::<usize>() {
            Ok(i) => &v[i],
            Err(_) => &v[key],
        })
}

fn strings(v: &Yaml) -> Vec<String> {
    v.as_vec()
        .unwrap_or_else(|| panic!("a list: {v:?}"))
        .iter()
        .map(|s| s.as_str().expect("a string").to_owned())
        .collect()
}

fn help() -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_reference-server"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

/// The long flags `--help` lists.
fn flags(help: &str) -> Vec<String> {
    help.split_whitespace()
        .filter_map(|w| w.strip_prefix("--"))
        .map(|w| {
            w.trim_end_matches(|c: char| !c.is_ascii_alphanumeric())
                .to_owned()
        })
        .filter(|w| !w.is_empty())
        .collect()
}

/// The flag of an argument `--name=value` or `--name`.
fn flag_of(arg: &str) -> &str {
    let arg = arg.strip_prefix("--").expect("arguments are long flags");
    arg.split('=').next().unwrap()
}

/// The value of `--name=value` among `args`.
fn value<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    args.iter()
        .find_map(|a| a.strip_prefix(&format!("--{name}=")))
}

/// The port of a `host:port` argument.
fn port_of(address: &str) -> i64 {
    address.rsplit(':').next().unwrap().parse().unwrap()
}

const DEPLOYMENT: &str = "kubernetes/deployment.yaml";
const RUNTIME: &str = "kserve/cluster-serving-runtime.yaml";

fn container_args(rel: &str) -> Vec<String> {
    let doc = load(rel);
    let container = match rel {
        DEPLOYMENT => at(&doc, "spec.template.spec.containers.0"),
        _ => at(&doc, "spec.containers.0"),
    };
    strings(&container["args"])
}

#[test]
fn every_flag_and_variable_the_deployment_files_use_exists() {
    let help = help();
    let known = flags(&help);
    for rel in [DEPLOYMENT, RUNTIME] {
        let args = container_args(rel);
        assert!(!args.is_empty(), "{rel} passes arguments");
        for arg in &args {
            assert!(
                known.iter().any(|k| k == flag_of(arg)),
                "{rel} passes {arg}, which `reference-server --help` does not list"
            );
        }
    }
    // The image configures the server through the variables clap reads.
    let dockerfile = std::fs::read_to_string(deploy("Dockerfile")).unwrap();
    let mut variables = 0;
    for word in dockerfile.split_whitespace() {
        if let Some((name, _)) = word.split_once('=')
            && name.starts_with("SERVING_")
            && name != "SERVING_CACHE_DIR"
        {
            variables += 1;
            assert!(
                help.contains(&format!("[env: {name}=")),
                "the Dockerfile sets {name}, which no flag reads"
            );
        }
    }
    assert!(variables >= 2, "the image sets the listening addresses");
    // The image's addresses are the manifests' ports.
    assert!(dockerfile.contains("SERVING_GRPC_ADDRESS=0.0.0.0:9000"));
    assert!(dockerfile.contains("SERVING_REST_ADDRESS=0.0.0.0:8080"));
    assert!(dockerfile.contains("EXPOSE 9000 8080"));
    // The CI validates exactly the objects kustomize applies.
    let kustomization = load("kubernetes/kustomization.yaml");
    let mut listed = strings(&kustomization["resources"]);
    listed.sort();
    let mut on_disk: Vec<String> = std::fs::read_dir(deploy("kubernetes"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".yaml") && n != "kustomization.yaml")
        .collect();
    on_disk.sort();
    assert_eq!(listed, on_disk, "kustomization.yaml lists every object");
}

/// The server, started as the manifests start it.
struct Started {
    child: Child,
    grpc: String,
    rest: String,
}

impl Drop for Started {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the binary with `args`, its listening addresses moved to
/// loopback port 0 and every other argument unchanged, but `replace`d.
fn start(args: &[String], replace: &BTreeMap<&str, String>) -> Started {
    let mut argv = Vec::new();
    for arg in args {
        let flag = flag_of(arg);
        let arg = match flag {
            "grpc-address" | "rest-address" => format!("--{flag}=127.0.0.1:0"),
            _ => replace
                .get(flag)
                .map_or(arg.clone(), |v| format!("--{flag}={v}")),
        };
        argv.push(arg);
    }
    let mut child = Command::new(env!("CARGO_BIN_EXE_reference-server"))
        .args(&argv)
        .stdout(Stdio::piped())
        .env("RUST_LOG", "warn")
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let ready = loop {
        let line = lines
            .next()
            .unwrap_or_else(|| {
                panic!("the server started with {argv:?} printed its readiness line")
            })
            .unwrap();
        if let Some(rest) = line.strip_prefix("reference-server ready: gRPC ") {
            break rest.to_owned();
        }
    };
    let (grpc, rest) = ready.split_once(" REST ").unwrap();
    Started {
        grpc: grpc.to_owned(),
        rest: rest.to_owned(),
        child,
    }
}

async fn get(address: &str, path: &str) -> reqwest::Response {
    common::http()
        .get(format!("http://{address}{path}"))
        .send()
        .await
        .unwrap()
}

/// grpc.health.v1.Health/Check for `service`, as the kubelet's gRPC probe.
async fn grpc_health(address: &str, service: &str) -> i32 {
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let channel = tonic::transport::Channel::from_shared(format!("http://{address}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .status
}

const SERVING: i32 = 1;

fn model_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    common::write(dir.path(), "add/1/model.onnx", &common::binary_op("Add"));
    dir
}

#[tokio::test]
async fn the_deployment_serves_the_ports_and_paths_it_probes() {
    let doc = load(DEPLOYMENT);
    let spec = at(&doc, "spec.template.spec");
    let container = &spec["containers"][0];
    let args = strings(&container["args"]);
    let grpc_port = port_of(value(&args, "grpc-address").unwrap());
    let rest_port = port_of(value(&args, "rest-address").unwrap());
    let mount = value(&args, "model-repository").unwrap();
    assert_eq!(
        at(container, "volumeMounts.0.mountPath").as_str(),
        Some(mount),
        "the repository flag points at the mounted volume"
    );
    // Named ports: their numbers are the listening addresses'.
    let ports: BTreeMap<String, i64> = container["ports"]
        .as_vec()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap().to_owned(),
                p["containerPort"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(ports["grpc"], grpc_port);
    assert_eq!(ports["http"], rest_port);
    let resolve = |port: &Yaml| match port {
        Yaml::Integer(n) => *n,
        Yaml::String(name) => ports[name.as_str()],
        other => panic!("a port: {other:?}"),
    };
    // Shutdown: the grace period covers the pause before SIGTERM and the
    // drain.
    let drain: f64 = value(&args, "drain-timeout").unwrap().parse().unwrap();
    let pause = at(container, "lifecycle.preStop.sleep.seconds")
        .as_i64()
        .unwrap() as f64;
    let grace = spec["terminationGracePeriodSeconds"].as_i64().unwrap() as f64;
    assert!(
        grace > pause + drain,
        "terminationGracePeriodSeconds {grace} must exceed the preStop pause {pause} plus --drain-timeout {drain}"
    );
    // The Services route to ports the container declares, the gRPC one as
    // h2c.
    for rel in [
        "kubernetes/service.yaml",
        "kubernetes/headless-service.yaml",
    ] {
        let service = load(rel);
        for port in at(&service, "spec.ports").as_vec().unwrap() {
            let target = port["targetPort"].as_str().unwrap();
            assert!(ports.contains_key(target), "{rel}: targetPort {target}");
            assert_eq!(port["port"].as_i64(), Some(ports[target]), "{rel}");
            if target == "grpc" {
                assert_eq!(port["appProtocol"].as_str(), Some("kubernetes.io/h2c"));
            }
        }
    }
    let annotations = at(&doc, "spec.template.metadata.annotations");
    assert_eq!(
        annotations["prometheus.io/port"].as_str(),
        Some(rest_port.to_string().as_str())
    );

    let repo = model_dir();
    let server = start(
        &args,
        &[("model-repository", repo.path().display().to_string())].into(),
    );
    let mut probed = 0;
    for probe in ["startupProbe", "readinessProbe", "livenessProbe"] {
        let probe = &container[probe];
        if let Yaml::Hash(_) = &probe["httpGet"] {
            assert_eq!(resolve(&probe["httpGet"]["port"]), rest_port);
            let path = probe["httpGet"]["path"].as_str().unwrap();
            let r = get(&server.rest, path).await;
            assert_eq!(r.status(), 200, "GET {path}");
            probed += 1;
        }
        if let Yaml::Hash(_) = &probe["grpc"] {
            assert_eq!(resolve(&probe["grpc"]["port"]), grpc_port);
            let service = probe["grpc"]["service"].as_str().unwrap_or("");
            assert_eq!(grpc_health(&server.grpc, service).await, SERVING);
            probed += 1;
        }
    }
    assert_eq!(probed, 3, "three probes, each on a served endpoint");
    let metrics = get(
        &server.rest,
        annotations["prometheus.io/path"].as_str().unwrap(),
    )
    .await;
    assert_eq!(metrics.status(), 200);
    assert!(metrics.text().await.unwrap().contains("# TYPE"));
    // The repository is served: the model answers.
    let r = common::http()
        .post(format!("http://{}/v2/models/add/infer", server.rest))
        .json(&json!({"inputs": [
            {"name": "x1", "shape": [2, 2], "datatype": "FP32", "data": [1.0, 2.0, 3.0, 4.0]},
            {"name": "x2", "shape": [2, 2], "datatype": "FP32", "data": [1.0, 1.0, 1.0, 1.0]}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["outputs"][0]["data"], json!([2.0, 3.0, 4.0, 5.0]));
}

/// Lays out `/mnt/models` for the InferenceService named `name` in each way
/// KServe's storage initializer can leave it.
fn kserve_layouts(name: &str) -> Vec<(&'static str, tempfile::TempDir)> {
    let add = common::binary_op("Add");
    let mut layouts = Vec::new();
    // storageUri names a directory holding model.onnx (or the file).
    let flat = tempfile::tempdir().unwrap();
    common::write(flat.path(), "model.onnx", &add);
    layouts.push(("model.onnx at the root", flat));
    // A model directory with versions (and Triton's configuration).
    let versions = tempfile::tempdir().unwrap();
    common::write(versions.path(), "1/model.onnx", &add);
    common::write(versions.path(), "2/model.onnx", &add);
    common::write(
        versions.path(),
        "config.pbtxt",
        format!("name: \"{name}\"\nplatform: \"onnxruntime_onnx\"\nmax_batch_size: 0\n").as_bytes(),
    );
    layouts.push(("version directories and config.pbtxt", versions));
    // A repository whose model directory is named like the service.
    let repository = tempfile::tempdir().unwrap();
    common::write(repository.path(), &format!("{name}/1/model.onnx"), &add);
    layouts.push(("a repository with a directory of that name", repository));
    layouts
}

#[tokio::test]
async fn the_kserve_runtime_serves_the_model_where_kserve_puts_it() {
    let runtime = load(RUNTIME);
    let container = at(&runtime, "spec.containers.0");
    assert_eq!(container["name"].as_str(), Some("kserve-container"));
    let args = strings(&container["args"]);
    assert_eq!(value(&args, "model-repository"), Some("/mnt/models"));
    assert_eq!(value(&args, "model-name"), Some("{{.Name}}"));
    let rest_port = port_of(value(&args, "rest-address").unwrap());
    let grpc_port = port_of(value(&args, "grpc-address").unwrap());
    assert_eq!(rest_port, 8080, "KServe sends HTTP to 8080");
    assert_eq!(at(container, "ports.0.containerPort").as_i64(), Some(8080));
    assert_eq!(
        at(&runtime, "spec.annotations")["prometheus.kserve.io/port"].as_str(),
        Some("8080")
    );
    assert_eq!(
        strings(at(&runtime, "spec.protocolVersions")),
        ["v2", "grpc-v2"]
    );
    // The gRPC InferenceService sends gRPC to the port named h2c.
    let grpc_service = load("kserve/inference-service-grpc.yaml");
    let h2c = at(&grpc_service, "spec.predictor.model.ports.0");
    assert_eq!(h2c["name"].as_str(), Some("h2c"));
    assert_eq!(h2c["containerPort"].as_i64(), Some(grpc_port));

    let service = load("kserve/inference-service.yaml");
    let name = at(&service, "metadata.name").as_str().unwrap().to_owned();
    assert_eq!(
        at(&service, "spec.predictor.model.runtime").as_str(),
        at(&runtime, "metadata.name").as_str()
    );
    let readiness = at(container, "readinessProbe.httpGet");
    assert_eq!(readiness["port"].as_i64(), Some(rest_port));
    let ready_path = readiness["path"].as_str().unwrap();
    for (layout, mnt) in kserve_layouts(&name) {
        // KServe fills in {{.Name}} with the InferenceService's name.
        let server = start(
            &args,
            &[
                ("model-repository", mnt.path().display().to_string()),
                ("model-name", name.clone()),
            ]
            .into(),
        );
        assert_eq!(
            get(&server.rest, ready_path).await.status(),
            200,
            "{layout}"
        );
        assert_eq!(
            get(&server.rest, &format!("/v2/models/{name}/ready"))
                .await
                .status(),
            200,
            "{layout}"
        );
        let index: serde_json::Value = common::http()
            .post(format!("http://{}/v2/repository/index", server.rest))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(
            index.as_array().unwrap().len(),
            1,
            "{layout}: one model, {index}"
        );
        assert_eq!(index[0]["name"], json!(name), "{layout}");
        let r = common::http()
            .post(format!("http://{}/v2/models/{name}/infer", server.rest))
            .json(&json!({"inputs": [
                {"name": "x1", "shape": [2, 2], "datatype": "FP32", "data": [1.0, 2.0, 3.0, 4.0]},
                {"name": "x2", "shape": [2, 2], "datatype": "FP32", "data": [0.5, 0.5, 0.5, 0.5]}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{layout}");
        let v: serde_json::Value = r.json().await.unwrap();
        assert_eq!(
            v["outputs"][0]["data"],
            json!([1.5, 2.5, 3.5, 4.5]),
            "{layout}"
        );
        assert_eq!(grpc_health(&server.grpc, "").await, SERVING, "{layout}");
    }
}

#[test]
fn a_model_name_that_is_not_one_path_segment_is_refused() {
    let dir = model_dir();
    for name in ["../add", "a/b", ".hidden", ""] {
        let out = Command::new(env!("CARGO_BIN_EXE_reference-server"))
            .args(["--grpc-address=127.0.0.1:0", "--rest-address=127.0.0.1:0"])
            .arg(format!("--model-repository={}", dir.path().display()))
            .arg(format!("--model-name={name}"))
            .output()
            .unwrap();
        assert!(!out.status.success(), "--model-name {name:?} is refused");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("cannot name a model"), "{name:?}: {err}");
    }
}

#[test]
fn the_image_layout_finds_onnx_runtime_next_to_the_executable() {
    // The Dockerfile copies the wheel's libraries next to the executable
    // and sets no ORT_DYLIB_PATH: the server must find them there before
    // any cache (which it must never need to fill).
    use reference_server::runtime::library::{Family, Resolver};
    let library = Resolver::from_env(None, Family::Cpu)
        .resolve()
        .expect("the tests' ONNX Runtime (provisioned on first use)")
        .path;
    let image = tempfile::tempdir().unwrap();
    let bin = image.path().join("opt/serving/bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::copy(
        env!("CARGO_BIN_EXE_reference-server"),
        bin.join("reference-server"),
    )
    .unwrap();
    std::fs::copy(&library, bin.join(library.file_name().unwrap())).unwrap();
    let empty_cache = image.path().join("tmp/serving");
    let out = Command::new(bin.join("reference-server"))
        .arg("--version")
        .env_remove("ORT_DYLIB_PATH")
        .env("SERVING_CACHE_DIR", &empty_cache)
        .env("PATH", "/usr/bin:/bin")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("at {}", bin.display())) && text.contains("next to the executable"),
        "{text}"
    );
    assert!(!empty_cache.exists(), "nothing was provisioned");
}
