//! ONNX models this project did not write, served from a bare Triton
//! repository (one `model.onnx` per model, no `config.pbtxt`: the server
//! completes each configuration from the model), queried with NVIDIA's
//! tritonclient over HTTP and gRPC, every output compared with the
//! reference the onnx maintainers computed. The models and references come
//! from the onnx package's backend tests (PyTorch-converted models and the
//! light image CNNs: AlexNet, DenseNet-121, Inception, ResNet-50,
//! ShuffleNet, SqueezeNet, VGG-19, ZFNet-512), pinned
//! in tests/compat/requirements.txt and provisioned with the test's virtual
//! environment; nothing is downloaded while the test runs.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

/// The onnx package's backend test data in the virtual environment.
fn onnx_data(venv: &Path) -> PathBuf {
    let out = Command::new(venv.join("bin/python"))
        .args([
            "-c",
            "import onnx, os; print(os.path.join(os.path.dirname(onnx.__file__), 'backend', 'test', 'data'))",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// Every PyTorch-converted or -operator model with a test data set, and
/// the image CNNs of `light/` (with the reference outputs shipped beside
/// them): (model name, source).
fn models(data: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(data.join("light")) {
        for e in entries.filter_map(Result::ok) {
            let file = e.file_name().to_string_lossy().into_owned();
            if let Some(stem) = file.strip_suffix(".onnx")
                && data.join(format!("light/{stem}_output_0.pb")).is_file()
            {
                out.push((stem.to_owned(), format!("light/{file}")));
            }
        }
    }
    for kind in ["pytorch-converted", "pytorch-operator"] {
        let Ok(entries) = std::fs::read_dir(data.join(kind)) else {
            continue;
        };
        for e in entries.filter_map(Result::ok) {
            let dir = e.path();
            if dir.join("model.onnx").is_file() && dir.join("test_data_set_0").is_dir() {
                let name = e.file_name().to_string_lossy().into_owned();
                out.push((name.to_lowercase(), format!("{kind}/{name}")));
            }
        }
    }
    out.sort();
    out
}

#[tokio::test]
async fn third_party_models_from_a_bare_triton_repository_answer_as_their_references() {
    let venv = tokio::task::spawn_blocking(common::compat_venv)
        .await
        .unwrap();
    let data = onnx_data(&venv);
    let models = models(&data);
    assert!(
        models.len() >= 120,
        "{} models in {}",
        models.len(),
        data.display()
    );
    let repo = tempfile::tempdir().unwrap();
    for (name, source) in &models {
        let dir = repo.path().join(name).join("1");
        std::fs::create_dir_all(&dir).unwrap();
        let file = if source.ends_with(".onnx") {
            data.join(source)
        } else {
            data.join(source).join("model.onnx")
        };
        std::fs::copy(file, dir.join("model.onnx")).unwrap();
    }
    // Some of these models use opset-1 and opset-6 operators that ONNX
    // Runtime 1.24 no longer implements: the server starts without them
    // (--exit-on-error false) and reports them not ready, with ONNX
    // Runtime's reason; every other model must answer as its reference.
    let server = common::start(reference_server::server::Config {
        model_repository: Some(repo.path().to_owned()),
        exit_on_error: false,
        ..common::config()
    })
    .await;
    let unloadable = server.state.failures();
    for f in &unloadable {
        assert!(
            f.reason.contains("Could not find an implementation for"),
            "{} failed to load for another reason than an operator ONNX Runtime lacks: {}",
            f.model,
            f.reason
        );
    }
    let models: Vec<(String, String)> = models
        .into_iter()
        .filter(|(n, _)| !unloadable.iter().any(|f| &f.model == n))
        .collect();
    println!(
        "{} models served, {} not loadable by ONNX Runtime ({})",
        models.len(),
        unloadable.len(),
        unloadable
            .iter()
            .map(|f| f.model.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    assert!(models.len() >= 80, "{} models served", models.len());
    let mut args = vec![
        server.grpc_address.to_string(),
        server.rest_address.to_string(),
        data.display().to_string(),
    ];
    args.extend(models.iter().map(|(n, s)| format!("{n}={s}")));
    let done = format!("all {} third-party models match", models.len());
    common::run_compat("third_party_models.py", args, &done).await;
    server.shutdown().await;
}
