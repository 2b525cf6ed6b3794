//! Wire compatibility with clients no one here wrote: NVIDIA's tritonclient
//! (HTTP and gRPC), grpcio with stubs generated from our ms_service.proto by
//! grpcio-tools, requests, and grpcio-health-checking. The test provisions
//! them into a virtual environment under the target directory (pinned in
//! tests/compat/requirements.txt) and runs tests/compat/third_party_clients.py
//! against a real server.

mod common;

use std::path::Path;
use std::process::Command;

#[tokio::test]
async fn third_party_clients_interoperate() {
    let venv = tokio::task::spawn_blocking(common::compat_venv)
        .await
        .unwrap();
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
