//! The load generator: fixed concurrency, warm-up, a measured window;
//! latency percentiles, throughput, errors and payload bytes per second.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serving_client::{Client, InferRequest, NamedTensor, NamedTensors, Tensor};

use crate::target::{Family, Target};

/// What each request carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Workload {
    /// The demo `add`: two FP32 [2, 2] inputs.
    Add,
    /// `identity_fp32` with an FP32 input of this many bytes.
    Identity(usize),
}

impl Workload {
    /// Payload bytes sent per request (the tensors' data).
    pub fn payload(self) -> usize {
        match self {
            Workload::Add => 32,
            Workload::Identity(n) => n,
        }
    }
}

/// A prepared request of either family; tensors share their buffers
/// between calls (cloning is a reference count).
#[derive(Clone, Debug)]
pub enum Prepared {
    /// MindSpore: servable, method, instances.
    MindSpore(&'static str, &'static str, Vec<NamedTensors>),
    /// Open Inference.
    OpenInference(InferRequest),
    /// Open Inference with its tensors in system shared memory: the
    /// request, and the regions its outputs are written to.
    #[cfg(unix)]
    Placed(
        InferRequest,
        Vec<serving_client::shared_memory::SharedMemoryRegion>,
    ),
}

fn identity_inputs(bytes: usize) -> Vec<(String, Tensor)> {
    let n = bytes / 4;
    let x1 = Tensor::from_vec(&[n as i64], (0..n).map(|i| i as f32).collect()).expect("n values");
    crate::models::identity_feed(x1)
}

/// The request of a workload for a family.
pub fn prepare(family: Family, workload: Workload) -> Prepared {
    let (model, method, inputs): (&'static str, &'static str, Vec<(String, Tensor)>) =
        match workload {
            Workload::Add => {
                let x = Tensor::from_vec(&[2, 2], vec![1f32, 2.0, 3.0, 4.0]).expect("4");
                (
                    "add",
                    "add_common",
                    vec![("x1".into(), x.clone()), ("x2".into(), x)],
                )
            }
            Workload::Identity(bytes) => ("identity_fp32", "predict", identity_inputs(bytes)),
        };
    match family {
        Family::MindSpore => Prepared::MindSpore(model, method, vec![inputs.into_iter().collect()]),
        Family::OpenInference => {
            let mut outputs = Vec::new();
            if matches!(workload, Workload::Identity(_)) {
                outputs.push(serving_proto::oip::RequestedOutput {
                    name: "y1".into(),
                    parameters: Default::default(),
                });
            }
            Prepared::OpenInference(InferRequest {
                model_name: model.into(),
                inputs: inputs
                    .into_iter()
                    .map(|(n, t)| NamedTensor::new(n, t))
                    .collect(),
                outputs,
                ..Default::default()
            })
        }
    }
}

/// Sends one prepared request; an in-band MindSpore error counts as an
/// error.
pub async fn send(client: &Client, request: &Prepared) -> Result<(), String> {
    match request {
        Prepared::MindSpore(s, m, instances) => {
            let r = client
                .predict(s, m, instances)
                .await
                .map_err(|e| e.to_string())?;
            match r.first() {
                Some(Ok(_)) => Ok(()),
                Some(Err(e)) => Err(e.message.clone()),
                None => Err("no result".into()),
            }
        }
        Prepared::OpenInference(req) => client
            .infer_request(req)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string()),
        #[cfg(unix)]
        Prepared::Placed(req, regions) => client
            .infer_request_placed(req, regions)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string()),
    }
}

/// What a measured window saw.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    /// Concurrent clients.
    pub concurrency: usize,
    /// Requests completed in the window.
    pub requests: usize,
    /// Failed requests in the window.
    pub errors: usize,
    /// The first error text.
    pub first_error: Option<String>,
    /// The window.
    pub window: Duration,
    /// Sorted latencies of successful requests.
    pub latencies: Vec<Duration>,
    /// Payload bytes per request (sent; replies carry as much again for
    /// the identity workload).
    pub payload: usize,
}

impl Stats {
    /// The `q` quantile of latency (0..=1).
    pub fn quantile(&self, q: f64) -> Duration {
        quantile(&self.latencies, q)
    }

    /// Requests per second.
    pub fn rate(&self) -> f64 {
        self.requests as f64 / self.window.as_secs_f64().max(1e-9)
    }

    /// Payload GB/s (10^9 bytes), request payload only.
    pub fn gbps(&self) -> f64 {
        self.rate() * self.payload as f64 / 1e9
    }

    /// One line: concurrency, throughput, percentiles, errors.
    pub fn line(&self) -> String {
        format!(
            "c={:<3} {:>9.1} req/s  p50 {:>9.1} µs  p90 {:>9.1} µs  p99 {:>9.1} µs  {:>7.3} GB/s  {} errors{}",
            self.concurrency,
            self.rate(),
            self.quantile(0.5).as_secs_f64() * 1e6,
            self.quantile(0.9).as_secs_f64() * 1e6,
            self.quantile(0.99).as_secs_f64() * 1e6,
            self.gbps(),
            self.errors,
            self.first_error
                .as_ref()
                .map(|e| format!(" (first: {e})"))
                .unwrap_or_default()
        )
    }
}

/// Runs `concurrency` clients against `target` for `warmup` then `window`
/// (or until `max_requests` in the window), all sharing one client.
pub async fn run_load(
    client: &Client,
    target: &Target,
    workload: Workload,
    concurrency: usize,
    warmup: Duration,
    window: Duration,
    max_requests: Option<usize>,
) -> Stats {
    let feed = Arc::new(super::feed::Feed::plain(target.family, workload));
    run_feed(client, &feed, concurrency, warmup, window, max_requests).await
}

/// As [`run_load`], sending what `feed` prepared (client `i` its
/// `feed.request(i)`).
pub async fn run_feed(
    client: &Client,
    feed: &Arc<super::feed::Feed>,
    concurrency: usize,
    warmup: Duration,
    window: Duration,
    max_requests: Option<usize>,
) -> Stats {
    let workload = feed.workload();
    let start = Instant::now();
    let measure_from = start + warmup;
    let until = measure_from + window;
    let budget = Arc::new(std::sync::atomic::AtomicUsize::new(
        max_requests.unwrap_or(usize::MAX),
    ));
    let tasks: Vec<_> = (0..concurrency)
        .map(|i| {
            let client = client.clone();
            let feed = feed.clone();
            let budget = budget.clone();
            tokio::spawn(async move {
                let request = feed.request(i);
                let (mut lat, mut errors, mut first) = (Vec::new(), 0usize, None);
                loop {
                    let t0 = Instant::now();
                    if t0 >= until {
                        break;
                    }
                    let measured = t0 >= measure_from;
                    if measured
                        && budget
                            .fetch_update(
                                std::sync::atomic::Ordering::SeqCst,
                                std::sync::atomic::Ordering::SeqCst,
                                |b| b.checked_sub(1),
                            )
                            .is_err()
                    {
                        break;
                    }
                    let result = send(&client, request).await;
                    if measured {
                        match result {
                            Ok(()) => lat.push(t0.elapsed()),
                            Err(e) => {
                                errors += 1;
                                first.get_or_insert(e);
                            }
                        }
                    }
                }
                (lat, errors, first)
            })
        })
        .collect();
    let mut stats = Stats {
        concurrency,
        payload: workload.payload(),
        ..Stats::default()
    };
    for t in tasks {
        if let Ok((lat, errors, first)) = t.await {
            stats.latencies.extend(lat);
            stats.errors += errors;
            if stats.first_error.is_none() {
                stats.first_error = first;
            }
        }
    }
    stats.window = Instant::now()
        .min(until)
        .saturating_duration_since(measure_from);
    stats.requests = stats.latencies.len();
    stats.latencies.sort_unstable();
    stats
}

/// The `q` quantile of sorted latencies.
pub fn quantile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}
