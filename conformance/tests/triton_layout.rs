//! The reference server serving the conformance models as a Triton
//! repository (what `conformance models --layout triton` writes: a
//! `config.pbtxt` per model), and as a bare one (the same ONNX files, no
//! configuration at all: completed from the models): every Open Inference
//! check passes on both transports.

use conformance::{Family, Suite, Target, Transport, models};
use reference_server::server::{self, Config};

async fn check(repo: &std::path::Path) {
    let running = server::start(Config {
        grpc_address: ([127, 0, 0, 1], 0).into(),
        rest_address: ([127, 0, 0, 1], 0).into(),
        model_repository: Some(repo.to_owned()),
        max_msg_mb_size: conformance::control::MAX_MSG_MB,
        poll_interval: None,
        ..Config::default()
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
