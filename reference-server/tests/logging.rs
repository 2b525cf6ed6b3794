//! The logging extension changes what the running executable logs: debug
//! events appear once `log_verbose_level` is raised over REST and stop
//! once it is lowered over gRPC; Triton's `--log-*` flags and MindSpore's
//! `GLOG_v` set the level at start.

mod common;

use std::sync::Mutex;
use std::time::Duration;

use serde_json::json;

/// The executable on free ports, and its gRPC and REST addresses.
fn start(env: &[(&str, &str)], args: &[&str]) -> (common::Process, String, String) {
    let mut all: Vec<String> = [
        "--grpc-address",
        "127.0.0.1:0",
        "--rest-address",
        "127.0.0.1:0",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    all.extend(args.iter().map(|s| (*s).to_owned()));
    let p = common::Process::start(
        std::path::Path::new(env!("CARGO_BIN_EXE_reference-server")),
        &all,
        env,
    );
    let (grpc, rest) = p.addresses();
    (p, grpc, rest)
}

fn debug_lines(log: &Mutex<Vec<String>>) -> usize {
    log.lock()
        .unwrap()
        .iter()
        .filter(|l| l.contains("DEBUG"))
        .count()
}

async fn some_requests(rest: &str) {
    let http = common::http();
    for _ in 0..3 {
        let r = http
            .post(format!("http://{rest}/v2/models/add/infer"))
            .json(&json!({"inputs": [
                {"name": "x1", "datatype": "FP32", "shape": [2, 2], "data": [1, 2, 3, 4]},
                {"name": "x2", "datatype": "FP32", "shape": [2, 2], "data": [1, 2, 3, 4]}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn the_log_level_changes_while_the_server_runs() {
    let (child, grpc, rest) = start(&[], &[]);
    let log = child.stderr.clone();
    some_requests(&rest).await;
    assert_eq!(
        debug_lines(&log),
        0,
        "info by default: {:?}",
        log.lock().unwrap()
    );
    let http = common::http();
    let v: serde_json::Value = http
        .post(format!("http://{rest}/v2/logging"))
        .json(&json!({"log_verbose_level": 1}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["log_verbose_level"], 1, "{v}");
    some_requests(&rest).await;
    let raised = debug_lines(&log);
    assert!(
        raised > 0,
        "debug events once verbose: {:?}",
        log.lock().unwrap()
    );
    // Back to info over gRPC.
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{grpc}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client =
        serving_proto::pb::inference::grpc_inference_service_client::GrpcInferenceServiceClient::new(channel);
    use serving_proto::pb::inference::log_settings_request::{
        SettingValue, setting_value::ParameterChoice,
    };
    let reply = client
        .log_settings(serving_proto::pb::inference::LogSettingsRequest {
            settings: [(
                "log_verbose_level".to_owned(),
                SettingValue {
                    parameter_choice: Some(ParameterChoice::Uint32Param(0)),
                },
            )]
            .into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(reply.settings.contains_key("log_info"));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let after = debug_lines(&log);
    some_requests(&rest).await;
    assert_eq!(
        debug_lines(&log),
        after,
        "no debug events once back at info"
    );
    drop(child);
}

#[tokio::test]
async fn tritons_flags_and_mindspores_glog_v_set_the_level_at_start() {
    for (env, args, debug) in [
        (vec![], vec!["--log-verbose=1"], true),
        (vec![("GLOG_v", "0")], vec![], true),
        (vec![("GLOG_v", "3")], vec!["--log-verbose=1"], false),
        (
            vec![("MS_SUBMODULE_LOG_v", "{SERVING:0}"), ("GLOG_v", "3")],
            vec![],
            true,
        ),
    ] {
        let (child, _, rest) = start(&env, &args);
        let log = child.stderr.clone();
        some_requests(&rest).await;
        assert_eq!(debug_lines(&log) > 0, debug, "{env:?} {args:?}");
        drop(child);
    }
}
