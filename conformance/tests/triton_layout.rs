//! The reference server serving the conformance models as a Triton
//! repository (what `conformance models --layout triton` writes: a
//! `config.pbtxt` per model), and as a bare one (the same ONNX files, no
//! configuration at all: completed from the models), and as Triton
//! Python-backend models (`--layout triton-python`: a `model.py` per model,
//! run by real Python with numpy): every Open Inference check passes on both
//! transports.

use conformance::{Family, Suite, Target, Transport, models};
use reference_server::server::{self, Config};

async fn check(repo: &std::path::Path) {
    check_with(repo, Config::default()).await;
}

async fn check_with(repo: &std::path::Path, config: Config) {
    let running = server::start(Config {
        grpc_address: ([127, 0, 0, 1], 0).into(),
        rest_address: ([127, 0, 0, 1], 0).into(),
        model_repository: Some(repo.to_owned()),
        max_msg_mb_size: conformance::control::MAX_MSG_MB,
        poll_interval: None,
        ..config
    })
    .await
    .expect("the Triton repository serves");
    let target = |transport, authority: std::net::SocketAddr| Target {
        family: Family::OpenInference,
        transport,
        tls: false,
        authority: authority.to_string(),
    };
    let suite = Suite::new(
        vec![
            target(Transport::Grpc, running.grpc_address),
            target(Transport::Http, running.rest_address),
        ],
        conformance::Limits::all(u64::from(conformance::control::MAX_MSG_MB) << 20),
        8,
    );
    let report = conformance::run(&suite, &[]).await;
    println!("{}", report.table());
    let failures: Vec<String> = report
        .failures()
        .map(|r| format!("{} on {}: {}", r.check, r.target, r.outcome.detail()))
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    let counts = report.counts();
    assert!(counts.passed >= 20, "{}", report.table());
    assert_eq!(counts.warnings, 0, "{}", report.table());
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_triton_repository_with_config_pbtxt_passes_every_oip_check() {
    let dir = tempfile::tempdir().unwrap();
    models::write(models::Layout::Triton, dir.path(), Default::default()).unwrap();
    check(dir.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_same_models_without_any_configuration_pass_too() {
    let dir = tempfile::tempdir().unwrap();
    models::write(models::Layout::Triton, dir.path(), Default::default()).unwrap();
    for m in models::model_set() {
        std::fs::remove_file(dir.path().join(&m.name).join("config.pbtxt")).unwrap();
    }
    check(dir.path()).await;
}

/// A Python interpreter with numpy, what Python models need: a virtual
/// environment under the target directory, provisioned on first use with
/// the numpy of `tests/python-requirements.txt`.
fn numpy_python() -> std::path::PathBuf {
    use std::process::Command;
    let manifest = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let requirements = manifest.join("tests/python-requirements.txt");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| manifest.join("../target"));
    let dir = target.join("python-models-venv");
    let stamp = dir.join("requirements.installed");
    let wanted = std::fs::read_to_string(&requirements).unwrap();
    if std::fs::read_to_string(&stamp).ok().as_deref() != Some(wanted.as_str()) {
        eprintln!(
            "provisioning Python with numpy into {} (once)",
            dir.display()
        );
        let python = std::env::var("SERVING_PYTHON").unwrap_or_else(|_| "python3".into());
        assert!(
            Command::new(&python)
                .args(["-m", "venv"])
                .arg(&dir)
                .status()
                .unwrap()
                .success(),
            "python3 -m venv failed"
        );
        assert!(
            Command::new(dir.join("bin/pip"))
                .args(["install", "--quiet", "--disable-pip-version-check", "-r"])
                .arg(&requirements)
                .status()
                .unwrap()
                .success(),
            "pip install numpy failed"
        );
        std::fs::write(&stamp, wanted).unwrap();
    }
    dir.join("bin/python")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_same_models_as_triton_python_backend_models_pass_too() {
    let python = tokio::task::spawn_blocking(numpy_python).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    models::write(models::Layout::TritonPython, dir.path(), Default::default()).unwrap();
    check_with(
        dir.path(),
        Config {
            python,
            ..Config::default()
        },
    )
    .await;
}
