//! `cargo test -p conformance`: every check against the reference server
//! started in this process on ephemeral ports (or against `SERVING_TARGET`
//! when it is set). Any failure fails the test, with the report printed.

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_check_passes() {
    let exe = std::path::PathBuf::from(env!("CARGO_BIN_EXE_conformance"));
    let mut suite = conformance::Suite::from_env(Some(exe), 16)
        .await
        .expect("the suite starts");
    let report = conformance::run(&suite, &[]).await;
    println!("{}", report.table());
    // Stop the in-process server before asserting: a panic while it runs
    // leaves the runtime waiting on its blocking tasks, and the test hangs
    // instead of failing.
    let in_process = suite.control.is_some();
    if let Some(control) = suite.control.take() {
        control.running.shutdown().await;
    }
    let failures: Vec<String> = report
        .failures()
        .map(|r| format!("{} on {}: {}", r.check, r.target, r.outcome.detail()))
        .collect();
    assert!(
        failures.is_empty(),
        "{} checks failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    let counts = report.counts();
    let (passed, not_applicable) = (counts.passed, counts.not_applicable);
    if in_process {
        // The reference server keeps every "should" too.
        assert_eq!(counts.warnings, 0, "{}", report.table());
        // On the reference server only the transport-specific checks are
        // not applicable: 6 of them (two MindSpore REST grammar checks on
        // gRPC, special floats and string counts on MindSpore REST, binary
        // data on gRPC, streaming on REST).
        assert_eq!(not_applicable, 6, "{}", report.table());
        assert!(passed >= 50, "{}", report.table());
    }
}
