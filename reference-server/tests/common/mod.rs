//! Test harness: real servers on 127.0.0.1:0 with real ONNX Runtime
//! (provisioned like the server does), test repositories written by our own
//! ONNX writer, and clients for both protocols on both transports.
#![allow(dead_code)]

use std::path::Path;

use reference_server::onnx::{Dim, ModelBuilder};
use reference_server::server::{self, Config, Running};
use serving_proto::DataType;
use serving_proto::pb::inference::grpc_inference_service_client::GrpcInferenceServiceClient;
use serving_proto::pb::mindspore::ms_service_client::MsServiceClient;
use tonic::transport::Channel;

pub fn config() -> Config {
    Config {
        grpc_address: ([127, 0, 0, 1], 0).into(),
        rest_address: ([127, 0, 0, 1], 0).into(),
        ..Config::default()
    }
}

pub async fn start(config: Config) -> Running {
    server::start(config).await.expect("server starts")
}

pub async fn demo() -> Running {
    start(config()).await
}

pub async fn channel(s: &Running) -> Channel {
    Channel::from_shared(format!("http://{}", s.grpc_address))
        .unwrap()
        .connect()
        .await
        .expect("gRPC connects")
}

pub async fn ms(s: &Running) -> MsServiceClient<Channel> {
    MsServiceClient::new(channel(s).await).max_decoding_message_size(usize::MAX)
}

pub async fn oip(s: &Running) -> GrpcInferenceServiceClient<Channel> {
    GrpcInferenceServiceClient::new(channel(s).await).max_decoding_message_size(usize::MAX)
}

pub fn rest(s: &Running, path: &str) -> String {
    format!("http://{}{path}", s.rest_address)
}

pub fn http() -> reqwest::Client {
    // serving-client (built in the same workspace) turns on reqwest's
    // rustls feature without a provider: name the process default.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

const SQUARE: [Dim; 2] = [Dim::Fixed(2), Dim::Fixed(2)];

pub fn binary_op(op: &str) -> Vec<u8> {
    ModelBuilder::new(op)
        .input("x1", DataType::Fp32, &SQUARE)
        .input("x2", DataType::Fp32, &SQUARE)
        .output("y", DataType::Fp32, &SQUARE)
        .node(op, &["x1", "x2"], &["y"], vec![])
        .build()
}

pub fn write(dir: &Path, rel: &str, bytes: &[u8]) {
    let path = dir.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

const ONE_MODEL: &str = r#"
[[model]]
name = "m"
file = "m.onnx"
with_batch_dim = BATCH

[[method]]
name = "METHOD"
inputs = [INPUTS]
outputs = ["y"]

[[method.stage]]
model = "m"
inputs = [INPUTS]
outputs = ["y"]
"#;

fn servable_toml(method: &str, inputs: &[&str], batch: bool) -> String {
    let inputs = inputs
        .iter()
        .map(|i| format!("\"{i}\""))
        .collect::<Vec<_>>()
        .join(", ");
    ONE_MODEL
        .replace("METHOD", method)
        .replace("INPUTS", &inputs)
        .replace("BATCH", if batch { "true" } else { "false" })
}

/// A repository for the tests:
/// - `math`: method `calc`, version 1 `y = x1 + x2`, version 2 `y = x1 - x2` (float32 [2, 2]);
/// - `size`: method `size`, `y = Shape(x)` for uint8 `x` of any length (a tiny reply);
/// - `double`: method `double`, `y = Tile(x, [2])` for uint8 `x` (a reply twice the request);
/// - `fail`: method `reshape`, `y = Reshape(x, [3])` for float32 `x` of any length (fails at run time unless 3 elements);
/// - `batch`: method `add`, `with_batch_dim`, float32 [2, 2] `y = x1 + x2`, one row per instance.
pub fn repository() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(
        d,
        "math/servable.toml",
        servable_toml("calc", &["x1", "x2"], false).as_bytes(),
    );
    write(d, "math/1/m.onnx", &binary_op("Add"));
    write(d, "math/2/m.onnx", &binary_op("Sub"));
    let any = [Dim::Dynamic("n")];
    write(
        d,
        "size/servable.toml",
        servable_toml("size", &["x"], false).as_bytes(),
    );
    write(
        d,
        "size/1/m.onnx",
        &ModelBuilder::new("size")
            .input("x", DataType::Uint8, &any)
            .output("y", DataType::Int64, &[Dim::Fixed(1)])
            .node("Shape", &["x"], &["y"], vec![])
            .build(),
    );
    write(
        d,
        "double/servable.toml",
        servable_toml("double", &["x"], false).as_bytes(),
    );
    write(
        d,
        "double/1/m.onnx",
        &ModelBuilder::new("double")
            .input("x", DataType::Uint8, &any)
            .output("y", DataType::Uint8, &[Dim::Dynamic("m")])
            .constant_i64("repeats", &[1], &[2])
            .node("Tile", &["x", "repeats"], &["y"], vec![])
            .build(),
    );
    write(
        d,
        "fail/servable.toml",
        servable_toml("reshape", &["x"], false).as_bytes(),
    );
    write(
        d,
        "fail/1/m.onnx",
        &ModelBuilder::new("fail")
            .input("x", DataType::Fp32, &any)
            .output("y", DataType::Fp32, &[Dim::Fixed(3)])
            .constant_i64("shape", &[1], &[3])
            .node("Reshape", &["x", "shape"], &["y"], vec![])
            .build(),
    );
    write(
        d,
        "batch/servable.toml",
        servable_toml("add", &["x1", "x2"], true).as_bytes(),
    );
    write(d, "batch/1/m.onnx", &binary_op("Add"));
    dir
}

/// The error a server on repository `dir` refuses to start with.
pub async fn start_error(dir: &Path) -> String {
    let e = server::start(Config {
        model_repository: Some(dir.to_owned()),
        ..config()
    })
    .await
    .expect_err("the repository must not start");
    assert!(matches!(e, server::StartError::Repository(_)), "{e}");
    e.to_string()
}

pub async fn with_repository(dir: &Path) -> Running {
    start(Config {
        model_repository: Some(dir.to_owned()),
        ..config()
    })
    .await
}

/// One unary gRPC call over a bare HTTP/2 connection, with `headers` sent
/// as given (no client-side deadline or size handling): returns the gRPC
/// status code and message.
pub async fn raw_grpc(
    s: &Running,
    path: &str,
    message: &[u8],
    headers: &[(&str, &str)],
) -> (i32, String) {
    let mut body = vec![0u8];
    body.extend_from_slice(&(message.len() as u32).to_be_bytes());
    body.extend_from_slice(message);
    let r = raw_grpc_framed(s, path, body, headers).await;
    (r.code, r.message)
}

/// What [`raw_grpc_framed`] got back.
pub struct RawReply {
    /// `grpc-status`, -1 if none.
    pub code: i32,
    /// `grpc-message`, as sent (percent-encoded).
    pub message: String,
    /// The reply's headers.
    pub headers: http::HeaderMap,
    /// The reply body: its frames, as sent.
    pub body: bytes::Bytes,
}

/// One gRPC call over a bare HTTP/2 connection whose body is `framed`
/// exactly as given (frames, compressed flags and all).
pub async fn raw_grpc_framed(
    s: &Running,
    path: &str,
    framed: Vec<u8>,
    headers: &[(&str, &str)],
) -> RawReply {
    use http_body_util::{BodyExt, Full};
    let mut send = h2(s).await;
    let mut req = http::Request::post(format!("http://{}{path}", s.grpc_address))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = send
        .send_request(req.body(Full::new(bytes::Bytes::from(framed))).unwrap())
        .await
        .unwrap();
    let (parts, body) = resp.into_parts();
    let collected = body.collect().await.unwrap();
    let trailers = collected.trailers().cloned().unwrap_or_default();
    let get = |name: &str| {
        trailers
            .get(name)
            .or_else(|| parts.headers.get(name))
            .map(|v| v.to_str().unwrap().to_owned())
    };
    RawReply {
        code: get("grpc-status").map_or(-1, |c| c.parse().unwrap()),
        message: get("grpc-message").unwrap_or_default(),
        body: collected.to_bytes(),
        headers: parts.headers,
    }
}

/// A bare HTTP/2 connection to the gRPC port (its driver spawned), for
/// requests whose body the test feeds as it likes.
pub async fn h2<B>(s: &Running) -> hyper::client::conn::http2::SendRequest<B>
where
    B: http_body::Body<Data = bytes::Bytes> + Send + Unpin + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let tcp = tokio::net::TcpStream::connect(s.grpc_address)
        .await
        .unwrap();
    let (send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    send
}

/// A model `y = x W ... W` over float32 rows of `width` (batch dimension
/// dynamic), `W` the identity: `y = x`, at the cost of `depth` matrix
/// products per row.
pub fn matmul_stack(width: usize, depth: usize) -> Vec<u8> {
    let identity: Vec<f32> = (0..width * width)
        .map(|i| if i / width == i % width { 1.0 } else { 0.0 })
        .collect();
    reference_server::onnx::matmul_chain(width, depth, &identity)
}

/// A REST GET's JSON body.
/// Output `name` of an OIP REST answer, or a panic that shows the answer.
pub fn output<'a>(v: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    v["outputs"]
        .as_array()
        .unwrap_or_else(|| panic!("no outputs in {v}"))
        .iter()
        .find(|o| o["name"] == name)
        .unwrap_or_else(|| panic!("no output {name} in {v}"))
}

pub async fn get_json(s: &Running, path: &str) -> serde_json::Value {
    http()
        .get(rest(s, path))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// The Prometheus text of `/metrics`.
pub async fn metrics(s: &Running) -> String {
    http()
        .get(rest(s, "/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// A repository of one servable `name`, method `predict`, one model with a
/// batch dimension whose inputs and outputs are `inputs` / `outputs`, and
/// the given `[deployment]` lines.
pub fn one_servable(
    name: &str,
    model: &[u8],
    inputs: &[&str],
    outputs: &[&str],
    deployment: &str,
) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let list = |v: &[&str]| {
        v.iter()
            .map(|i| format!("\"{i}\""))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let toml = format!(
        "[[model]]\nname = \"m\"\nfile = \"m.onnx\"\nwith_batch_dim = true\n\n[[method]]\nname = \"predict\"\ninputs = [{i}]\noutputs = [{o}]\n\n[[method.stage]]\nmodel = \"m\"\ninputs = [{i}]\noutputs = [{o}]\n\n[deployment]\n{deployment}\n",
        i = list(inputs),
        o = list(outputs)
    );
    write(
        dir.path(),
        &format!("{name}/servable.toml"),
        toml.as_bytes(),
    );
    write(dir.path(), &format!("{name}/1/m.onnx"), model);
    dir
}

/// The virtual environment of the third-party clients and models (pinned
/// in tests/compat/requirements.txt), provisioned under the target
/// directory on first use.
pub fn compat_venv() -> std::path::PathBuf {
    use std::path::PathBuf;
    use std::process::Command;
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let requirements = manifest.join("tests/compat/requirements.txt");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| manifest.join("../target"));
    let dir = target.join("compat-venv");
    let stamp = dir.join("requirements.installed");
    let wanted = std::fs::read_to_string(&requirements).unwrap();
    // Tests of one binary run in parallel and several of them need the
    // environment: one provisions it while the others wait (two pips in one
    // environment break each other), across processes too.
    std::fs::create_dir_all(&target).unwrap();
    let lock = std::fs::File::create(target.join("compat-venv.lock")).unwrap();
    lock.lock().unwrap();
    if std::fs::read_to_string(&stamp).ok().as_deref() == Some(wanted.as_str()) {
        return dir;
    }
    eprintln!(
        "provisioning third-party clients and models into {} (once)",
        dir.display()
    );
    let python = std::env::var("SERVING_PYTHON").unwrap_or_else(|_| "python3".into());
    let ok = Command::new(&python)
        .args(["-m", "venv"])
        .arg(&dir)
        .status()
        .unwrap()
        .success();
    assert!(ok, "python3 -m venv failed");
    let ok = Command::new(dir.join("bin/pip"))
        .args(["install", "--quiet", "--disable-pip-version-check", "-r"])
        .arg(&requirements)
        .status()
        .unwrap()
        .success();
    assert!(ok, "pip install -r {} failed", requirements.display());
    std::fs::write(&stamp, wanted).unwrap();
    dir
}

/// Starts a server on `repo` whose Python models run with the compat
/// environment's interpreter (which has numpy), on ports of its own,
/// without polling the repository.
pub async fn with_python_models(repo: &Path) -> Result<Running, server::StartError> {
    let venv = tokio::task::spawn_blocking(compat_venv).await.unwrap();
    server::start(Config {
        grpc_address: ([127, 0, 0, 1], 0).into(),
        rest_address: ([127, 0, 0, 1], 0).into(),
        model_repository: Some(repo.to_owned()),
        poll_interval: None,
        python: venv.join("bin/python"),
        ..Config::default()
    })
    .await
}

/// The arguments of the compat scripts that drive a server: its gRPC and
/// REST addresses and the directory of our protos.
pub fn compat_args(server: &Running) -> Vec<String> {
    let proto_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../proto/proto");
    vec![
        server.grpc_address.to_string(),
        server.rest_address.to_string(),
        proto_dir.display().to_string(),
    ]
}

/// Runs `tests/compat/{script}` with the compat virtual environment's
/// Python and `args`, prints what it printed, and asserts that it exited 0
/// and printed `done`.
pub async fn run_compat(script: &str, args: Vec<String>, done: &str) {
    let venv = tokio::task::spawn_blocking(compat_venv).await.unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/compat")
        .join(script);
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(venv.join("bin/python"))
            .arg(script)
            .args(args)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains(done), "no '{done}' in:\n{stdout}");
}

/// The `reference-server` executable (or a link to it), started with
/// `args` and `env` (`RUST_LOG` unset), its stdout read up to the
/// readiness line and its stderr collected; stopped with SIGTERM when
/// dropped.
pub struct Process {
    child: std::process::Child,
    /// Its stdout lines up to the readiness line.
    pub banner: Vec<String>,
    /// Its stderr lines so far.
    pub stderr: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Process {
    pub fn start(program: &Path, args: &[String], env: &[(&str, &str)]) -> Process {
        use std::io::{BufRead, BufReader};
        let mut cmd = std::process::Command::new(program);
        cmd.args(args)
            .env_remove("RUST_LOG")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let stderr = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (pipe, sink) = (child.stderr.take().unwrap(), stderr.clone());
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut banner = Vec::new();
        loop {
            let line = lines
                .next()
                .unwrap_or_else(|| {
                    panic!("no readiness line; stderr: {:?}", stderr.lock().unwrap())
                })
                .unwrap();
            let done = line.starts_with("reference-server ready");
            banner.push(line);
            if done {
                break;
            }
        }
        Process {
            child,
            banner,
            stderr,
        }
    }

    /// Its process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// The gRPC and REST addresses of its readiness line.
    pub fn addresses(&self) -> (String, String) {
        let ready = self.banner.last().unwrap();
        let rest = ready.strip_prefix("reference-server ready: gRPC ").unwrap();
        let (grpc, rest) = rest.split_once(" REST ").unwrap();
        (grpc.to_owned(), rest.to_owned())
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}
