//! The load generator's perf_analyzer mode against the reference server in
//! this process: closed- and open-loop levels measured over repeated
//! windows, the server's breakdown from its statistics extension, a CSV.

use std::time::Duration;

use conformance::perf::analyzer::{Measure, Schedule, csv, level};
use conformance::perf::{Feed, Workload};

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
        let feed = std::sync::Arc::new(Feed::plain(target.family, Workload::Add));
        let l = level(&client, &target, &feed, schedule, measure).await;
        assert!((3..=6).contains(&l.trials), "{}", l.line());
        assert_eq!(l.stats.errors, 0, "{}", l.line());
        assert!(l.stats.requests > 0, "{}", l.line());
        let server = l.server.expect("the reference server offers statistics");
        assert!(server.compute_infer > 0.0, "{}", l.line());
        let client = l.client.expect("the client counts its OIP calls");
        assert!(client.send > 0.0 && client.receive > 0.0, "{}", l.line());
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
    assert!(
        lines[0].contains(",Client Send,Network+Server Send/Recv,Server Queue,")
            && lines[0].contains(",Client Recv,p50 latency,"),
        "{text}"
    );
    for line in &lines[1..] {
        assert_eq!(line.split(',').count(), 15, "{line}");
    }
    if let Some(c) = suite.control.take() {
        c.running.shutdown().await;
    }
}

/// `--shared-memory system`: the tensors travel through regions the feed
/// registered, each client writes to its own output region, and the
/// server's statistics count every request; the regions are unregistered
/// afterwards.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_memory_feeds_place_every_tensor_in_regions() {
    use conformance::perf::run_feed;
    let mut suite = conformance::Suite::from_env_with_limit(None, 0, 16)
        .await
        .expect("the reference server starts");
    let target = suite
        .targets
        .iter()
        .find(|t| {
            t.family == conformance::Family::OpenInference
                && t.transport == conformance::Transport::Grpc
        })
        .expect("an OIP gRPC target")
        .clone();
    let client = suite.client(&target).unwrap();
    // Over the server's 16 MiB message limit: only placed tensors fit.
    let bytes = 20 << 20;
    let feed = std::sync::Arc::new(
        Feed::shared_memory(&client, target.family, Workload::Identity(bytes), 2)
            .await
            .expect("regions are created and registered"),
    );
    assert!(feed.placed());
    let regions = client.system_shared_memory_status(None).await.unwrap();
    assert_eq!(
        regions.len(),
        3,
        "one input and two output regions: {regions:?}"
    );
    let before = client
        .model_statistics(Some("identity_fp32"), None)
        .await
        .unwrap();
    let s = run_feed(
        &client,
        &feed,
        2,
        Duration::ZERO,
        Duration::from_secs(60),
        Some(12),
    )
    .await;
    assert_eq!((s.requests, s.errors), (12, 0), "{}", s.line());
    let after = client
        .model_statistics(Some("identity_fp32"), None)
        .await
        .unwrap();
    let count = |m: &[serving_client::ModelStatistics]| {
        m.iter()
            .filter_map(|v| v.inference_stats.as_ref()?.success.as_ref())
            .map(|d| d.count)
            .sum::<u64>()
    };
    assert_eq!(count(&after) - count(&before), 12);
    feed.release(&client).await;
    assert!(
        client
            .system_shared_memory_status(None)
            .await
            .unwrap()
            .is_empty()
    );
    if let Some(c) = suite.control.take() {
        c.running.shutdown().await;
    }
}
