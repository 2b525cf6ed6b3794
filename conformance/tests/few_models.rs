//! A server with only a few models of its own (FP32 and INT64 identities
//! with a batch dimension, under names the suite does not know): the suite
//! discovers them, checks what applies through them, and reports the rest
//! not applicable, never failed. With a profile, the roles it names are
//! used and the report carries it.

use conformance::profile::Profile;
use conformance::{Family, Limits, Outcome, Suite, Target, Transport};
use reference_server::onnx::{self, Dim};
use reference_server::server::{self, Config};
use serving_proto::DataType;

fn write(dir: &std::path::Path, rel: &str, bytes: &[u8]) {
    let path = dir.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

/// `rows` (FP32 rows of 3, batched up to 8) and `ids` (INT64 `[-1]`).
fn repository() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(
        d,
        "rows/config.pbtxt",
        br#"
max_batch_size: 8
input [ { name: "x" data_type: TYPE_FP32 dims: [ 3 ] } ]
output [ { name: "y" data_type: TYPE_FP32 dims: [ 3 ] } ]
"#,
    );
    write(
        d,
        "rows/1/model.onnx",
        &onnx::identity(DataType::Fp32, &[Dim::Dynamic("batch"), Dim::Fixed(3)]),
    );
    write(
        d,
        "ids/config.pbtxt",
        br#"
max_batch_size: 0
input [ { name: "x" data_type: TYPE_INT64 dims: [ -1 ] } ]
output [ { name: "y" data_type: TYPE_INT64 dims: [ -1 ] } ]
"#,
    );
    write(
        d,
        "ids/1/model.onnx",
        &onnx::identity(DataType::Int64, &[Dim::Dynamic("n")]),
    );
    dir
}

async fn run(profile: Profile) -> conformance::Report {
    let dir = repository();
    let running = server::start(Config {
        grpc_address: ([127, 0, 0, 1], 0).into(),
        rest_address: ([127, 0, 0, 1], 0).into(),
        model_repository: Some(dir.path().to_owned()),
        poll_interval: None,
        ..Config::default()
    })
    .await
    .expect("the repository serves");
    let target = |transport, authority: std::net::SocketAddr| Target {
        family: Family::OpenInference,
        transport,
        tls: false,
        authority: authority.to_string(),
    };
    let mut suite = Suite::new(
        vec![
            target(Transport::Grpc, running.grpc_address),
            target(Transport::Http, running.rest_address),
        ],
        profile.limits(Limits::all(100 << 20)),
        8,
    );
    suite.profile = profile;
    let report = conformance::run(&suite, &[]).await;
    running.shutdown().await;
    println!("{}", report.table());
    report
}

fn outcome<'a>(report: &'a conformance::Report, check: &str, transport: &str) -> &'a Outcome {
    &report
        .rows
        .iter()
        .find(|r| r.check == check && r.target.starts_with(&format!("oip+{transport}")))
        .unwrap_or_else(|| panic!("no {check} on {transport}"))
        .outcome
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn what_applies_is_checked_through_the_servers_own_models_and_the_rest_is_not_applicable() {
    let report = run(Profile::default()).await;
    let failures: Vec<String> = report
        .failures()
        .map(|r| format!("{} on {}: {}", r.check, r.target, r.outcome.detail()))
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    for transport in ["grpc", "http"] {
        // Round trips through the discovered identities, both types.
        match outcome(&report, "roundtrip.identity", transport) {
            Outcome::Pass(d) => assert!(d.contains("over 2 types"), "{d}"),
            o => panic!("{transport}: {o:?}"),
        }
        match outcome(&report, "health.model_ready", transport) {
            Outcome::Pass(d) => assert!(d.starts_with("2 models ready"), "{d}"),
            o => panic!("{transport}: {o:?}"),
        }
        // Six special FP32 values travel as two rows of three.
        assert!(
            matches!(
                outcome(&report, "roundtrip.special_floats", transport),
                Outcome::Pass(_)
            ),
            "{transport}"
        );
        for check in ["errors.oip_classes", "roundtrip.outputs_and_id"] {
            match outcome(&report, check, transport) {
                Outcome::NotApplicable(why) => assert!(why.contains("serves no"), "{why}"),
                o => panic!("{check} on {transport}: {o:?}"),
            }
        }
    }
    // OIP names no REST limit and none was declared here... but Limits::all
    // declares one: the gRPC boundary has no size probe to use.
    match outcome(&report, "limits.boundary", "grpc") {
        Outcome::NotApplicable(why) => assert!(why.contains("size_probe"), "{why}"),
        o => panic!("{o:?}"),
    }
    assert_eq!(report.profile, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_profile_names_the_roles_and_the_limits() {
    let profile = Profile::from_toml(
        r#"
name = "few models"
[models]
identity_fp32 = "rows"
identity_int64 = ""
[limits]
http_mb = "none"
"#,
    )
    .unwrap();
    let report = run(profile).await;
    assert_eq!(report.failures().count(), 0, "{}", report.table());
    match outcome(&report, "roundtrip.identity", "grpc") {
        Outcome::Pass(d) => {
            assert!(d.contains("over 1 types"), "{d}");
            assert!(
                d.contains("no identity model for") && d.contains("Int64"),
                "{d}"
            );
        }
        o => panic!("{o:?}"),
    }
    match outcome(&report, "limits.boundary", "http") {
        Outcome::NotApplicable(why) => assert!(why.contains("no REST body limit"), "{why}"),
        o => panic!("{o:?}"),
    }
    assert_eq!(report.profile.as_deref(), Some("few models"));
    assert_eq!(report.json()["profile"], "few models");
}

/// The first thing a new user tries: the suite pointed at the demo (one
/// servable, `add`) on both protocols and transports. What the demo does
/// not serve is not applicable, on MindSpore Serving too (which has no
/// metadata: a servable it lacks answers `servable is not available`);
/// nothing fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_suite_against_the_demo_finds_no_failure() {
    let running = server::start(Config {
        grpc_address: ([127, 0, 0, 1], 0).into(),
        rest_address: ([127, 0, 0, 1], 0).into(),
        ..Config::default()
    })
    .await
    .expect("the demo serves");
    let target = |family, transport, authority: std::net::SocketAddr| Target {
        family,
        transport,
        tls: false,
        authority: authority.to_string(),
    };
    let suite = Suite::new(
        vec![
            target(Family::MindSpore, Transport::Grpc, running.grpc_address),
            target(Family::MindSpore, Transport::Http, running.rest_address),
            target(Family::OpenInference, Transport::Grpc, running.grpc_address),
            target(Family::OpenInference, Transport::Http, running.rest_address),
        ],
        Limits::all(100 << 20),
        4,
    );
    let report = conformance::run(&suite, &[]).await;
    running.shutdown().await;
    println!("{}", report.table());
    let failures: Vec<String> = report
        .failures()
        .map(|r| format!("{} on {}: {}", r.check, r.target, r.outcome.detail()))
        .collect();
    assert!(failures.is_empty(), "{failures:#?}");
    let passed = report
        .rows
        .iter()
        .filter(|r| matches!(r.outcome, Outcome::Pass(_)))
        .count();
    assert!(passed >= 20, "the demo's own checks pass: {passed}");
}
