//! A device that cannot be used stops start-up with ONNX Runtime's cause,
//! never running silently on the CPU; `--allow-cpu-fallback` runs it on the
//! CPU with a warning.

mod common;

use reference_server::runtime::device::Device;
use reference_server::server::{self, Config, StartError};

#[tokio::test]
async fn unusable_accelerators_are_refused_unless_fallback_is_allowed() {
    // Loads the CPU build of ONNX Runtime for this process first: the CUDA
    // and CANN provider libraries are then missing, as on any CPU machine.
    common::demo().await.shutdown().await;
    for device in [Device::Cann(0), Device::Cuda(0)] {
        let err = server::start(Config {
            devices: vec![device],
            ..common::config()
        })
        .await
        .expect_err("an unusable device must not start");
        assert!(matches!(err, StartError::Runtime(_)), "{err}");
        let text = err.to_string();
        assert!(
            text.contains(&format!(
                "device {device} cannot be used with ONNX Runtime "
            )),
            "{text}"
        );
        assert!(
            text.contains("execution provider is not enabled in this build"),
            "{text}"
        );
        assert!(text.contains("--allow-cpu-fallback"), "{text}");
        println!("{device}: {text}");

        let running = server::start(Config {
            devices: vec![device],
            allow_cpu_fallback: true,
            ..common::config()
        })
        .await
        .expect("with fallback the replica runs on the CPU");
        let v: serde_json::Value = common::http()
            .post(common::rest(&running, "/model/add:add_common"))
            .body(r#"{"instances":{"x1":[[1.0,1.0],[1.0,1.0]],"x2":[[1.0,1.0],[1.0,1.0]]}}"#)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(
            v,
            serde_json::json!({"instances": [{"y": [[2.0, 2.0], [2.0, 2.0]]}]})
        );
        running.shutdown().await;
    }
}

#[tokio::test]
async fn max_msg_mb_size_outside_the_range_is_refused() {
    for size in [0, 513] {
        let err = server::start(Config {
            max_msg_mb_size: size,
            ..common::config()
        })
        .await
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "Parameter 'max_msg_mb_size' should be in range [1,512]"
        );
    }
}
