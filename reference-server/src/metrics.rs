//! Prometheus metrics, served as text at `GET /metrics` on the REST port:
//! requests and failures by protocol, transport, model and result code;
//! request latency; per servable version the queue depth and the batch
//! sizes run; per replica its runs, instances, failures and liveness.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::engine::registry::Registry;
use crate::engine::stats::{Histogram, LATENCY_BOUNDS};

fn render(h: &Histogram, out: &mut String, name: &str, labels: &str) {
    let sep = if labels.is_empty() { "" } else { "," };
    for (b, cumulative) in h.buckets() {
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{b}\"}} {cumulative}");
    }
    let _ = writeln!(
        out,
        "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}",
        h.count()
    );
    let _ = writeln!(out, "{name}_sum{{{labels}}} {}", h.sum());
    let _ = writeln!(out, "{name}_count{{{labels}}} {}", h.count());
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

/// The server's request metrics.
#[derive(Debug)]
pub(crate) struct Metrics {
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
    pub(crate) fn record(&self, front: Front, model: &str, class: &'static str, elapsed: Duration) {
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
    pub(crate) fn render(&self, registry: &Registry) -> String {
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
            render(
                h,
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
        let labels = |sv: &crate::engine::ServableVersion| {
            format!(
                "servable=\"{}\",version=\"{}\"",
                escape(&sv.name),
                sv.version
            )
        };
        for (name, help, pick) in [
            (
                "serving_batch_size",
                "Rows per model run (every protocol), by servable version.",
                (|s| &s.batch_sizes) as fn(&crate::engine::stats::Stats) -> &Histogram,
            ),
            (
                "serving_queue_duration_seconds",
                "Time each job waited in the queue before it ran, by servable version.",
                |s| &s.queue_time,
            ),
            (
                "serving_compute_duration_seconds",
                "Time of each model run (joining inputs, the model, splitting outputs), by servable version.",
                |s| &s.compute_time,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
            for sv in &versions {
                render(pick(sv.scheduler().counters()), &mut out, name, &labels(sv));
            }
        }
        out.push_str("# HELP serving_cancelled_total Jobs whose client went away: while queued (never run) or while running (reply dropped).\n# TYPE serving_cancelled_total counter\n");
        for sv in &versions {
            let c = sv.scheduler().counters();
            for (when, n) in [
                ("queued", &c.cancelled_queued),
                ("running", &c.cancelled_running),
            ] {
                let _ = writeln!(
                    out,
                    "serving_cancelled_total{{{},when=\"{when}\"}} {}",
                    labels(sv),
                    n.load(Ordering::Relaxed)
                );
            }
        }
        for (name, help, pick) in [
            (
                "serving_queue_timeouts_total",
                "Jobs refused unrun when their queue timeout passed.",
                (|s| s.queue_timeouts.load(Ordering::Relaxed))
                    as fn(&crate::engine::stats::Stats) -> u64,
            ),
            (
                "serving_inline_runs_total",
                "Jobs run on the thread of the connection that received them, the version being idle (also counted as runs).",
                |s| s.inline_runs.load(Ordering::Relaxed),
            ),
            (
                "serving_cache_hits_total",
                "Jobs answered from the response cache.",
                |s| s.cache_hit.get().0,
            ),
            (
                "serving_cache_misses_total",
                "Jobs of cached models not in the response cache (run, and their answers kept).",
                |s| s.cache_miss.get().0,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for sv in &versions {
                let _ = writeln!(
                    out,
                    "{name}{{{}}} {}",
                    labels(sv),
                    pick(sv.scheduler().counters())
                );
            }
        }
        for (name, help, kind) in [
            (
                "serving_replica_runs_total",
                "Model runs completed by a replica.",
                "counter",
            ),
            (
                "serving_replica_instances_total",
                "Rows of the jobs a replica ran (padding not counted).",
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
