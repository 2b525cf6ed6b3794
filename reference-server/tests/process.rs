//! The `reference-server` executable: readiness lines, SIGTERM, flags that
//! refuse to start, `--version`, and an Ascend device on a machine without
//! CANN, which must fail with ONNX Runtime's cause (provisioning the
//! onnxruntime-cann wheel on the way, as a user's first start would).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

fn binary() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_reference-server"));
    c.args([
        "--grpc-address",
        "127.0.0.1:0",
        "--rest-address",
        "127.0.0.1:0",
    ]);
    c
}

#[tokio::test]
async fn serves_after_the_readiness_line_and_stops_on_sigterm() {
    let mut child = binary()
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut banner = Vec::new();
    let ready = loop {
        let line = lines.next().expect("a readiness line").unwrap();
        banner.push(line.clone());
        if let Some(rest) = line.strip_prefix("reference-server ready: ") {
            break rest.to_owned();
        }
    };
    assert!(
        banner[0]
            .starts_with("Serving: Serving gRPC server start success, listening on 127.0.0.1:")
    );
    assert!(
        banner[1]
            .starts_with("Serving: Serving RESTful server start success, listening on 127.0.0.1:")
    );
    let rest = ready.split(" REST ").nth(1).unwrap();
    let v: serde_json::Value = reqwest::Client::new()
        .post(format!("http://{rest}/model/add:add_common"))
        .body(r#"{"instances":{"x1":[[1.0,2.0],[3.0,4.0]],"x2":[[1.0,2.0],[3.0,4.0]]}}"#)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        v,
        serde_json::json!({"instances": [{"y": [[2.0, 4.0], [6.0, 8.0]]}]})
    );
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = child.wait().unwrap();
    assert!(
        exit.success(),
        "SIGTERM must stop the server cleanly: {exit}"
    );
}

#[test]
fn out_of_range_message_size_exits_non_zero() {
    let out = binary().args(["--max-msg-mb-size", "0"]).output().unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("Parameter 'max_msg_mb_size' should be in range [1,512]")
    );
}

#[test]
fn version_names_onnx_runtime() {
    let out = Command::new(env!("CARGO_BIN_EXE_reference-server"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with(concat!(
            "reference-server ",
            env!("CARGO_PKG_VERSION"),
            "\nONNX Runtime"
        )),
        "{text}"
    );
    // Either the library found, or the one the first start will provision.
    assert!(text.contains("1.24.4"), "{text}");
}

#[test]
fn an_ascend_device_without_cann_fails_with_the_cause() {
    let out = binary().args(["--device", "cann:0"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("device cann:0 cannot be used with ONNX Runtime "),
        "{stderr}"
    );
    assert!(stderr.contains("onnxruntime-cann"), "{stderr}");
    assert!(
        stderr.contains("libascendcl.so: cannot open shared object file"),
        "{stderr}"
    );
}
