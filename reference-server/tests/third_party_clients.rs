//! Wire compatibility with clients no one here wrote: NVIDIA's tritonclient
//! (HTTP and gRPC), grpcio with stubs generated from our ms_service.proto by
//! grpcio-tools, requests, and grpcio-health-checking. The test provisions
//! them into a virtual environment under the target directory (pinned in
//! tests/compat/requirements.txt) and runs tests/compat/third_party_clients.py
//! against a real server.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

fn venv() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let requirements = manifest.join("tests/compat/requirements.txt");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| manifest.join("../target"));
    let dir = target.join("compat-venv");
    let stamp = dir.join("requirements.installed");
    let wanted = std::fs::read_to_string(&requirements).unwrap();
    if std::fs::read_to_string(&stamp).ok().as_deref() == Some(wanted.as_str()) {
        return dir;
    }
    eprintln!(
        "provisioning third-party clients into {} (once)",
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

#[tokio::test]
async fn third_party_clients_interoperate() {
    let venv = tokio::task::spawn_blocking(venv).await.unwrap();
    let server = common::demo().await;
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let script = manifest.join("tests/compat/third_party_clients.py");
    let proto_dir = manifest.join("../proto/proto");
    let grpc = server.grpc_address.to_string();
    let rest = server.rest_address.to_string();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(venv.join("bin/python"))
            .arg(script)
            .args([&grpc, &rest])
            .arg(proto_dir)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "third-party clients failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("all third-party clients agree"));
    server.shutdown().await;
}
