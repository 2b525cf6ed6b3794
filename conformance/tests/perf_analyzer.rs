//! The load generator's perf_analyzer mode against the reference server in
//! this process: closed- and open-loop levels measured over repeated
//! windows, the server's breakdown from its statistics extension, a CSV.

use std::time::Duration;

use conformance::perf::Workload;
use conformance::perf::analyzer::{Measure, Schedule, csv, level};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn levels_are_measured_with_the_servers_breakdown_and_written_as_csv() {
    let mut suite = conformance::Suite::from_env_with_limit(None, 0, 16)
        .await
        .expect("the reference server starts");
    let target = suite
        .targets
        .iter()
        .find(|t| t.family == conformance::Family::OpenInference)
        .expect("an OIP target")
        .clone();
    let client = suite.client(&target).unwrap();
    let measure = Measure {
        warmup: Duration::from_millis(100),
        window: Duration::from_millis(200),
        stability: 50.0,
        max_trials: 6,
    };
    let mut levels = Vec::new();
    for schedule in [
        Schedule::Concurrency(2),
        Schedule::Rate {
            per_second: 100.0,
            poisson: true,
        },
    ] {
        let l = level(&client, &target, Workload::Add, schedule, measure).await;
        assert!((3..=6).contains(&l.trials), "{}", l.line());
        assert_eq!(l.stats.errors, 0, "{}", l.line());
        assert!(l.stats.requests > 0, "{}", l.line());
        let server = l.server.expect("the reference server offers statistics");
        assert!(server.compute_infer > 0.0, "{}", l.line());
        levels.push(l);
    }
    let text = csv(&levels);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(
        lines[0].starts_with("Concurrency,Inferences/Second,"),
        "{text}"
    );
    assert!(lines[2].starts_with("100,"), "{text}");
    if let Some(c) = suite.control.take() {
        c.running.shutdown().await;
    }
}
