//! What a perf_analyzer user expects of `conformance perf`: a range of
//! concurrencies or request rates (constant or Poisson), measurement
//! windows repeated until three in a row agree within a stability
//! percentage, the server's own breakdown (queue, compute input, infer,
//! output) from Triton's statistics extension where the server offers it,
//! the client's own encoding and decoding times (the client's
//! [`InferStats`], as perf_analyzer reads Triton's client's `InferStat`),
//! and a CSV with perf_analyzer's columns.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serving_client::{Client, InferStats, ModelStatistics};

use super::feed::Feed;
use super::load::{Stats, Workload, quantile, run_feed, send};
use crate::target::{Family, Target};

/// How load is offered.
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub enum Schedule {
    /// This many clients, each sending its next request when the last is
    /// answered (closed loop).
    Concurrency(usize),
    /// Requests started at this rate whatever the answers (open loop),
    /// evenly or with exponential gaps (Poisson arrivals).
    Rate {
        /// Requests per second.
        per_second: f64,
        /// Poisson arrivals instead of a constant interval.
        poisson: bool,
    },
}

impl Schedule {
    /// The CSV's first column and its value.
    fn column(&self) -> (&'static str, String) {
        match self {
            Schedule::Concurrency(c) => ("Concurrency", c.to_string()),
            Schedule::Rate { per_second, .. } => ("Request Rate", format!("{per_second}")),
        }
    }
}

/// A `start:end:step` range (perf_analyzer's `--concurrency-range`).
pub fn parse_range(text: &str) -> Result<Vec<usize>, String> {
    let bad = || format!("'{text}' is not start:end[:step] (for example 1:64:8)");
    let parts: Vec<usize> = text
        .split(':')
        .map(|p| p.trim().parse().map_err(|_| bad()))
        .collect::<Result<_, _>>()?;
    let (start, end, step) = match parts.as_slice() {
        [s] => (*s, *s, 1),
        [s, e] => (*s, *e, 1),
        [s, e, st] => (*s, *e, *st),
        _ => return Err(bad()),
    };
    if start == 0 || end < start || step == 0 {
        return Err(bad());
    }
    Ok((start..=end).step_by(step).collect())
}

/// The server's mean time per request in each stage over a window, µs.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Breakdown {
    /// Waiting in the queue.
    pub queue: f64,
    /// Preparing inputs.
    pub compute_input: f64,
    /// Running the model.
    pub compute_infer: f64,
    /// Preparing outputs.
    pub compute_output: f64,
}

/// The client's mean time per request over a window, µs.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ClientTimes {
    /// Encoding the request (perf_analyzer's "Client Send").
    pub send: f64,
    /// Decoding the reply ("Client Recv").
    pub receive: f64,
}

impl ClientTimes {
    /// Over a window of the client's counters; `None` when no Open
    /// Inference call completed in it (the counters count those only).
    fn of(window: &InferStats) -> Option<ClientTimes> {
        let us = |d: Option<Duration>| d.map(|d| d.as_secs_f64() * 1e6);
        Some(ClientTimes {
            send: us(window.mean_send())?,
            receive: us(window.mean_receive())?,
        })
    }
}

/// Totals of the statistics extension: (count, ns) per stage.
#[derive(Clone, Copy, Debug, Default)]
struct Totals([(u64, u64); 4]);

fn totals(stats: &[ModelStatistics]) -> Totals {
    let mut t = Totals::default();
    for s in stats {
        let Some(i) = &s.inference_stats else {
            continue;
        };
        for (k, d) in [i.queue, i.compute_input, i.compute_infer, i.compute_output]
            .into_iter()
            .enumerate()
        {
            let d = d.unwrap_or_default();
            t.0[k].0 += d.count;
            t.0[k].1 += d.ns;
        }
    }
    t
}

impl Totals {
    fn since(&self, before: &Totals) -> Breakdown {
        let mean = |k: usize| {
            let (c, ns) = (
                self.0[k].0.saturating_sub(before.0[k].0),
                self.0[k].1.saturating_sub(before.0[k].1),
            );
            if c == 0 {
                0.0
            } else {
                ns as f64 / c as f64 / 1e3
            }
        };
        Breakdown {
            queue: mean(0),
            compute_input: mean(1),
            compute_infer: mean(2),
            compute_output: mean(3),
        }
    }
}

/// One measured level: the stable window, how many windows it took, and
/// the server's breakdown over it.
#[derive(Clone, Debug)]
pub struct Level {
    /// The target, as `SERVING_TARGET` writes it.
    pub target: String,
    /// How load was offered.
    pub schedule: Schedule,
    /// The last window.
    pub stats: Stats,
    /// Whether the last three windows agreed within the stability
    /// percentage (false: `max_trials` ran out).
    pub stable: bool,
    /// Windows measured.
    pub trials: usize,
    /// The server's breakdown over the last window, when it offers
    /// statistics.
    pub server: Option<Breakdown>,
    /// The client's encoding and decoding over the last window (Open
    /// Inference targets).
    pub client: Option<ClientTimes>,
}

impl Level {
    /// One line for people.
    pub fn line(&self) -> String {
        let (name, value) = self.schedule.column();
        let client = self.client.map_or(String::new(), |c| {
            format!(
                "  client: send {:.1} µs, receive {:.1} µs",
                c.send, c.receive
            )
        });
        let server = self.server.map_or(String::new(), |b| {
            format!(
                "  server: queue {:.1} µs, input {:.1} µs, infer {:.1} µs, output {:.1} µs",
                b.queue, b.compute_input, b.compute_infer, b.compute_output
            )
        });
        format!(
            "{name} {value}: {}  ({} windows{}){client}{server}",
            self.stats.line(),
            self.trials,
            if self.stable {
                ", stable"
            } else {
                ", NOT stable"
            },
        )
    }
}

/// Whether the last three windows agree: throughput and p50 latency
/// each within `percent` of their mean.
pub fn agree(windows: &[Stats], percent: f64) -> bool {
    let Some(last) = windows.rchunks(3).next().filter(|w| w.len() == 3) else {
        return false;
    };
    let within = |values: [f64; 3]| {
        let mean = values.iter().sum::<f64>() / 3.0;
        mean > 0.0
            && values
                .iter()
                .all(|v| (v - mean).abs() <= mean * percent / 100.0)
    };
    within([last[0].rate(), last[1].rate(), last[2].rate()])
        && within([
            last[0].quantile(0.5).as_secs_f64(),
            last[1].quantile(0.5).as_secs_f64(),
            last[2].quantile(0.5).as_secs_f64(),
        ])
}

/// The model a workload runs, for its statistics.
fn model_of(workload: Workload, family: Family) -> Option<&'static str> {
    match (family, workload) {
        (Family::OpenInference, Workload::Add) => Some("add"),
        (Family::OpenInference, Workload::Identity(_)) => Some("identity_fp32"),
        _ => None,
    }
}

/// How a level is measured.
#[derive(Clone, Copy, Debug)]
pub struct Measure {
    /// Seconds of warm-up before the first window.
    pub warmup: Duration,
    /// One window.
    pub window: Duration,
    /// The percentage within which three windows must agree.
    pub stability: f64,
    /// The most windows per level.
    pub max_trials: usize,
}

/// Measures one level: windows until three agree (or `max_trials`), with
/// the server's breakdown over the last.
pub async fn level(
    client: &Client,
    target: &Target,
    feed: &Arc<Feed>,
    schedule: Schedule,
    measure: Measure,
) -> Level {
    let model = model_of(feed.workload(), target.family);
    let read = || async {
        match model {
            Some(m) => client.model_statistics(Some(m), None).await.ok(),
            None => None,
        }
    };
    // Warm-up: the same load, not measured.
    let _ = window(client, feed, schedule, measure.warmup).await;
    let mut windows = Vec::new();
    let mut server = None;
    let mut client_times = None;
    while windows.len() < measure.max_trials.max(3) {
        let before = read().await;
        let counted = client.infer_stats();
        let stats = window(client, feed, schedule, measure.window).await;
        client_times = ClientTimes::of(&client.infer_stats().since(&counted));
        let after = read().await;
        server = match (before, after) {
            (Some(b), Some(a)) => Some(totals(&a).since(&totals(&b))),
            _ => None,
        };
        windows.push(stats);
        if agree(&windows, measure.stability) {
            break;
        }
    }
    let stable = agree(&windows, measure.stability);
    let trials = windows.len();
    Level {
        target: target.to_string(),
        schedule,
        stats: windows.pop().unwrap_or_default(),
        stable,
        trials,
        server,
        client: client_times,
    }
}

async fn window(client: &Client, feed: &Arc<Feed>, schedule: Schedule, length: Duration) -> Stats {
    match schedule {
        Schedule::Concurrency(c) => run_feed(client, feed, c, Duration::ZERO, length, None).await,
        Schedule::Rate {
            per_second,
            poisson,
        } => run_rate(client, feed, per_second, poisson, length).await,
    }
}

/// Open loop: requests started at `per_second` (evenly, or with
/// exponential gaps) for `length`; each one's latency from its start.
pub async fn run_rate(
    client: &Client,
    feed: &Arc<Feed>,
    per_second: f64,
    poisson: bool,
    length: Duration,
) -> Stats {
    // xorshift64*: the same arrivals every run.
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        state.wrapping_mul(0x2545_F491_4F6C_DD1D)
    };
    let start = Instant::now();
    let mut at = start;
    let mut tasks = Vec::new();
    let mean_gap = 1.0 / per_second.max(1e-3);
    while at < start + length {
        tokio::time::sleep_until(at.into()).await;
        let client = client.clone();
        let feed = feed.clone();
        let i = tasks.len();
        tasks.push(tokio::spawn(async move {
            let t0 = Instant::now();
            send(&client, feed.request(i)).await.map(|()| t0.elapsed())
        }));
        let gap = if poisson {
            // Exponential gaps: -ln(U) × mean, U uniform in (0, 1].
            let u = (next() >> 11) as f64 / (1u64 << 53) as f64;
            -(1.0 - u).ln() * mean_gap
        } else {
            mean_gap
        };
        at += Duration::from_secs_f64(gap);
    }
    let sent = tasks.len();
    let mut stats = Stats {
        concurrency: 0,
        payload: feed.workload().payload(),
        ..Stats::default()
    };
    for t in tasks {
        match t.await {
            Ok(Ok(latency)) => stats.latencies.push(latency),
            Ok(Err(e)) => {
                stats.errors += 1;
                stats.first_error.get_or_insert(e);
            }
            Err(e) => {
                stats.errors += 1;
                stats.first_error.get_or_insert(e.to_string());
            }
        }
    }
    // Throughput over the offered window (answers that came later count).
    stats.window = length;
    stats.requests = stats.latencies.len();
    stats.latencies.sort_unstable();
    debug_assert!(stats.requests + stats.errors == sent);
    stats
}

/// The levels as CSV with perf_analyzer's columns, in its order
/// (microseconds; the client's and the server's columns 0 where not
/// measured, as perf_analyzer writes them), and the target last.
/// "Network+Server Send/Recv" is what the mean latency leaves after the
/// client's and the server's measured parts, as perf_analyzer computes it.
pub fn csv(levels: &[Level]) -> String {
    let mut out = String::new();
    let first = levels
        .first()
        .map_or("Concurrency", |l| l.schedule.column().0);
    let _ = writeln!(
        out,
        "{first},Inferences/Second,Client Send,Network+Server Send/Recv,Server Queue,Server Compute Input,Server Compute Infer,Server Compute Output,Client Recv,p50 latency,p90 latency,p95 latency,p99 latency,Avg latency,Target"
    );
    for l in levels {
        let us = |d: Duration| (d.as_secs_f64() * 1e6).round() as u64;
        let mean = if l.stats.latencies.is_empty() {
            0.0
        } else {
            (l.stats.latencies.iter().sum::<Duration>() / l.stats.latencies.len() as u32)
                .as_secs_f64()
                * 1e6
        };
        let b = l.server.unwrap_or_default();
        let c = l.client.unwrap_or_default();
        let network = (mean
            - c.send
            - c.receive
            - b.queue
            - b.compute_input
            - b.compute_infer
            - b.compute_output)
            .max(0.0);
        let _ = writeln!(
            out,
            "{},{:.2},{},{},{},{},{},{},{},{},{},{},{},{},{}",
            l.schedule.column().1,
            l.stats.rate(),
            c.send.round() as u64,
            network.round() as u64,
            b.queue.round() as u64,
            b.compute_input.round() as u64,
            b.compute_infer.round() as u64,
            b.compute_output.round() as u64,
            c.receive.round() as u64,
            us(quantile(&l.stats.latencies, 0.5)),
            us(quantile(&l.stats.latencies, 0.9)),
            us(quantile(&l.stats.latencies, 0.95)),
            us(quantile(&l.stats.latencies, 0.99)),
            mean.round() as u64,
            l.target,
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(requests: usize, p50_us: u64) -> Stats {
        Stats {
            requests,
            window: Duration::from_secs(1),
            latencies: vec![Duration::from_micros(p50_us); requests.max(1)],
            ..Stats::default()
        }
    }

    #[test]
    fn ranges_windows_and_csv() {
        assert_eq!(parse_range("1:16:4").unwrap(), vec![1, 5, 9, 13]);
        assert_eq!(parse_range("2:4").unwrap(), vec![2, 3, 4]);
        assert_eq!(parse_range("8").unwrap(), vec![8]);
        for bad in ["0:4", "4:2", "1:4:0", "a", "1:2:3:4"] {
            assert!(parse_range(bad).is_err(), "{bad}");
        }
        assert!(!agree(&[stats(100, 50), stats(100, 50)], 10.0));
        assert!(agree(
            &[stats(1, 1), stats(100, 50), stats(105, 52), stats(98, 49)],
            10.0
        ));
        assert!(!agree(
            &[stats(100, 50), stats(150, 50), stats(100, 50)],
            10.0
        ));
        let level = Level {
            target: "oip+grpc://h:1".into(),
            schedule: Schedule::Concurrency(4),
            stats: stats(200, 120),
            stable: true,
            trials: 3,
            server: Some(Breakdown {
                queue: 10.4,
                compute_input: 1.0,
                compute_infer: 50.0,
                compute_output: 2.0,
            }),
            client: Some(ClientTimes {
                send: 3.4,
                receive: 4.0,
            }),
        };
        let text = csv(&[level]);
        let mut lines = text.lines();
        assert!(lines.next().unwrap().starts_with(
            "Concurrency,Inferences/Second,Client Send,Network+Server Send/Recv,Server Queue"
        ));
        // 120 - 3.4 - 4 - 10.4 - 1 - 50 - 2 = 49.2 µs of network and
        // server send/receive.
        assert_eq!(
            lines.next().unwrap(),
            "4,200.00,3,49,10,1,50,2,4,120,120,120,120,120,oip+grpc://h:1"
        );
    }
}
