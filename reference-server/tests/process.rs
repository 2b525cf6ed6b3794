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
    let _ = rustls::crypto::ring::default_provider().install_default();
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

#[test]
fn a_missing_or_foreign_library_is_an_error_not_a_panic() {
    let out = binary()
        .args(["--ort-lib", "/nonexistent/libonnxruntime.so"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(
            "ONNX Runtime library /nonexistent/libonnxruntime.so (from --ort-lib) does not exist"
        ),
        "{stderr}"
    );
    let foreign = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(foreign.path(), b"not a shared library").unwrap();
    let out = binary()
        .arg("--ort-lib")
        .arg(foreign.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("cannot load ONNX Runtime from"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// Fetches and extracts an ONNX Runtime older than the API level allows.
fn old_onnxruntime() -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("onnxruntime-1.20.1");
    let lib = dir.join("onnxruntime/capi/libonnxruntime.so.1.20.1");
    if lib.is_file() {
        return lib;
    }
    let wheels = dir.join("wheel");
    let ok = Command::new("python3")
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--disable-pip-version-check",
            "--quiet",
            "--dest",
        ])
        .arg(&wheels)
        .arg("onnxruntime==1.20.1")
        .status()
        .unwrap()
        .success();
    assert!(ok, "pip download onnxruntime==1.20.1 failed");
    let script = "import sys, zipfile, glob\nw = glob.glob(sys.argv[1] + '/*.whl')[0]\nz = zipfile.ZipFile(w)\n[z.extract(n, sys.argv[2]) for n in z.namelist() if n.startswith('onnxruntime/capi/lib')]";
    let ok = Command::new("python3")
        .args(["-c", script])
        .arg(&wheels)
        .arg(&dir)
        .status()
        .unwrap()
        .success();
    assert!(ok && lib.is_file(), "extracting the 1.20.1 wheel failed");
    lib
}

#[test]
fn an_onnx_runtime_older_than_the_api_level_is_refused_naming_both_versions() {
    let lib = old_onnxruntime();
    let out = binary().arg("--ort-lib").arg(&lib).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("ONNX Runtime 1.20.1 at "), "{stderr}");
    assert!(stderr.contains("needs version 1.24 or newer"), "{stderr}");
}

#[test]
fn concurrent_first_starts_share_one_provisioning() {
    let cache = tempfile::tempdir().unwrap();
    let spawn = || {
        binary()
            .env("SERVING_CACHE_DIR", cache.path())
            .env_remove("ORT_DYLIB_PATH")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let mut children = [spawn(), spawn()];
    for child in &mut children {
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let ready = lines.find(|l| {
            l.as_ref()
                .is_ok_and(|l| l.starts_with("reference-server ready"))
        });
        assert!(ready.is_some(), "both servers start");
    }
    for child in &mut children {
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(child.wait().unwrap().success());
    }
    let mut stderr = String::new();
    for child in &mut children {
        std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    }
    // Exactly one process downloaded (unless a Python onnxruntime package
    // is installed, which both then use).
    let downloads = stderr
        .matches("provisioning ONNX Runtime: downloading")
        .count();
    let from_python = stderr.contains("installed Python package");
    assert!(
        downloads == 1 || (downloads == 0 && from_python),
        "{stderr}"
    );
    let dirs: Vec<_> = std::fs::read_dir(cache.path().join("onnxruntime"))
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.file_name())
        .collect();
    assert!(
        dirs.iter()
            .all(|d| !d.to_string_lossy().starts_with(".work-")),
        "no half-done work left: {dirs:?}"
    );
}

#[test]
fn help_says_where_logs_and_metrics_are_and_how_to_serve_a_repository() {
    let out = Command::new(env!("CARGO_BIN_EXE_reference-server"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for want in [
        "RUST_LOG",
        "GET /metrics",
        "reference-server --model-repository ./models",
        "--model-control-mode",
        "tritonserver --model-repository=/models",
    ] {
        assert!(help.contains(want), "--help lacks {want:?}:\n{help}");
    }
}
