//! Prometheus metrics, served as text at `GET /metrics` on the REST port:
//! requests and failures by protocol, transport, model and result code;
//! request latency; per servable version the queue depth and the batch
//! sizes run; per replica its runs, instances, failures and liveness.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::engine::registry::Registry;

/// A histogram with fixed upper bounds, updated without locks.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    counts: Vec<AtomicU64>,
    /// Sum of observations, in millionths.
    sum_micros: AtomicU64,
    count: AtomicU64,
}

/// Latency buckets, seconds.
pub const LATENCY_BOUNDS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];
/// Batch-size buckets, instances.
pub const BATCH_BOUNDS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];

impl Histogram {
    /// An empty histogram.
    pub fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            counts: (0..bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_micros: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    /// Records one observation.
    pub fn observe(&self, value: f64) {
        if let Some(i) = self.bounds.iter().position(|&b| value <= b) {
            self.counts[i].fetch_add(1, Ordering::Relaxed);
        }
        self.sum_micros
            .fetch_add((value * 1e6).max(0.0) as u64, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Observations above `bound`.
    pub fn count_above(&self, bound: f64) -> u64 {
        let at_or_below: u64 = self
            .bounds
            .iter()
            .zip(&self.counts)
            .filter(|(b, _)| **b <= bound)
            .map(|(_, c)| c.load(Ordering::Relaxed))
            .sum();
        self.count() - at_or_below
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            cumulative += c.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{b}\"}} {cumulative}");
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}",
            self.count()
        );
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum{{{labels}}} {sum}");
        let _ = writeln!(out, "{name}_count{{{labels}}} {}", self.count());
    }
}

/// Which front end answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Front {
    /// MindSpore Serving over gRPC.
    MindSporeGrpc,
    /// MindSpore Serving over REST.
    MindSporeRest,
    /// Open Inference Protocol over gRPC.
    OipGrpc,
    /// Open Inference Protocol over REST.
    OipRest,
}

impl Front {
    fn labels(self) -> (&'static str, &'static str) {
        match self {
            Front::MindSporeGrpc => ("mindspore", "grpc"),
            Front::MindSporeRest => ("mindspore", "rest"),
            Front::OipGrpc => ("oip", "grpc"),
            Front::OipRest => ("oip", "rest"),
        }
    }
}

/// The result class of an HTTP status (DESIGN.md's table, read backwards).
pub fn class_of_http(status: u16) -> &'static str {
    match status {
        200..=299 => "OK",
        400 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        404 => "NOT_FOUND",
        405 => "INVALID_ARGUMENT",
        413 => "RESOURCE_EXHAUSTED",
        503 => "UNAVAILABLE",
        504 => "DEADLINE_EXCEEDED",
        _ => "INTERNAL",
    }
}

/// The result class of a gRPC status.
pub fn class_of_grpc(code: tonic::Code) -> &'static str {
    match code {
        tonic::Code::Ok => "OK",
        tonic::Code::InvalidArgument => "INVALID_ARGUMENT",
        tonic::Code::NotFound => "NOT_FOUND",
        tonic::Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        tonic::Code::Unavailable => "UNAVAILABLE",
        tonic::Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        tonic::Code::Unauthenticated => "UNAUTHENTICATED",
        _ => "INTERNAL",
    }
}

/// The server's request metrics.
#[derive(Debug)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(Front, String, &'static str), u64>>,
    latency: BTreeMap<Front, Histogram>,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics {
            requests: Mutex::new(BTreeMap::new()),
            latency: [
                Front::MindSporeGrpc,
                Front::MindSporeRest,
                Front::OipGrpc,
                Front::OipRest,
            ]
            .into_iter()
            .map(|f| (f, Histogram::new(LATENCY_BOUNDS)))
            .collect(),
        }
    }
}

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Metrics {
    /// Records one answered request.
    pub fn record(&self, front: Front, model: &str, class: &'static str, elapsed: Duration) {
        // Unknown model names are folded so that clients cannot grow the map.
        let model = if class == "NOT_FOUND" { "" } else { model };
        *self
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry((front, model.to_owned(), class))
            .or_default() += 1;
        if let Some(h) = self.latency.get(&front) {
            h.observe(elapsed.as_secs_f64());
        }
    }

    /// The Prometheus text exposition of these metrics and of `registry`.
    pub fn render(&self, registry: &Registry) -> String {
        let mut out = String::new();
        out.push_str("# HELP serving_requests_total Requests answered, by protocol, transport, model and result code.\n");
        out.push_str("# TYPE serving_requests_total counter\n");
        for ((front, model, class), n) in self
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let (p, t) = front.labels();
            let _ = writeln!(
                out,
                "serving_requests_total{{protocol=\"{p}\",transport=\"{t}\",model=\"{}\",code=\"{class}\"}} {n}",
                escape(model)
            );
        }
        out.push_str("# HELP serving_request_duration_seconds Time from request to answer, by protocol and transport.\n");
        out.push_str("# TYPE serving_request_duration_seconds histogram\n");
        for (front, h) in &self.latency {
            let (p, t) = front.labels();
            h.render(
                &mut out,
                "serving_request_duration_seconds",
                &format!("protocol=\"{p}\",transport=\"{t}\""),
            );
        }
        let versions = registry.all();
        out.push_str(
            "# HELP serving_queue_depth Requests queued or running, by servable version.\n",
        );
        out.push_str("# TYPE serving_queue_depth gauge\n");
        for sv in &versions {
            let _ = writeln!(
                out,
                "serving_queue_depth{{servable=\"{}\",version=\"{}\"}} {}",
                escape(&sv.name),
                sv.version,
                sv.scheduler().outstanding()
            );
        }
        out.push_str("# HELP serving_batch_size Instances per model run, by servable version.\n");
        out.push_str("# TYPE serving_batch_size histogram\n");
        for sv in &versions {
            let labels = format!(
                "servable=\"{}\",version=\"{}\"",
                escape(&sv.name),
                sv.version
            );
            sv.scheduler()
                .batch_sizes()
                .render(&mut out, "serving_batch_size", &labels);
        }
        for (name, help, kind) in [
            (
                "serving_replica_runs_total",
                "Model runs completed by a replica.",
                "counter",
            ),
            (
                "serving_replica_instances_total",
                "Instances (or whole requests) completed by a replica.",
                "counter",
            ),
            (
                "serving_replica_failures_total",
                "Times a replica failed and was restarted.",
                "counter",
            ),
            (
                "serving_replica_alive",
                "Whether a replica is alive (1) or restarting (0).",
                "gauge",
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for sv in &versions {
                for (i, (s, device)) in sv.scheduler().stats().iter().zip(sv.devices()).enumerate()
                {
                    let value = match name {
                        "serving_replica_runs_total" => s.runs.load(Ordering::Relaxed),
                        "serving_replica_instances_total" => s.items.load(Ordering::Relaxed),
                        "serving_replica_failures_total" => s.failures.load(Ordering::Relaxed),
                        _ => u64::from(s.alive.load(Ordering::Relaxed)),
                    };
                    let _ = writeln!(
                        out,
                        "{name}{{servable=\"{}\",version=\"{}\",replica=\"{i}\",device=\"{device}\"}} {value}",
                        escape(&sv.name),
                        sv.version
                    );
                }
            }
        }
        out
    }
}
