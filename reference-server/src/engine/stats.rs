//! What the engine measures of each servable version, for every protocol
//! alike: rows per run, time in the queue and in compute, cancellations,
//! and Triton's statistics counters (successes and failures with their
//! durations, per batch size). Updated without locks on the hot path,
//! but for the per-batch-size table.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

/// A histogram with fixed upper bounds, updated without locks.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    counts: Vec<AtomicU64>,
    /// Sum of observations, in millionths.
    sum_micros: AtomicU64,
    count: AtomicU64,
}

/// Duration buckets, seconds.
pub const LATENCY_BOUNDS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];
/// Batch-size buckets, rows.
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

    /// The sum of the observations.
    pub fn sum(&self) -> f64 {
        self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6
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

    /// Upper bounds with the cumulative count at each.
    pub fn buckets(&self) -> impl Iterator<Item = (f64, u64)> + '_ {
        let mut cumulative = 0;
        self.bounds.iter().zip(&self.counts).map(move |(b, c)| {
            cumulative += c.load(Ordering::Relaxed);
            (*b, cumulative)
        })
    }
}

/// A count with a total duration, as Triton's `StatisticDuration`.
#[derive(Debug, Default)]
pub struct Timed {
    count: AtomicU64,
    ns: AtomicU64,
}

impl Timed {
    /// Adds one occurrence lasting `d`.
    pub fn add(&self, d: Duration) {
        self.add_n(1, d);
    }

    /// Adds `n` occurrences lasting `d` in all.
    pub fn add_n(&self, n: u64, d: Duration) {
        self.count.fetch_add(n, Ordering::Relaxed);
        self.ns
            .fetch_add(d.as_nanos().min(u64::MAX as u128) as u64, Ordering::Relaxed);
    }

    /// The count and the total nanoseconds.
    pub fn get(&self) -> (u64, u64) {
        (
            self.count.load(Ordering::Relaxed),
            self.ns.load(Ordering::Relaxed),
        )
    }
}

/// Compute time of the runs of one batch size.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BatchCounters {
    /// Runs of this size.
    pub count: u64,
    /// Nanoseconds joining inputs.
    pub compute_input_ns: u64,
    /// Nanoseconds in the model.
    pub compute_infer_ns: u64,
    /// Nanoseconds splitting outputs.
    pub compute_output_ns: u64,
}

/// The counters of one servable version.
#[derive(Debug)]
pub struct Stats {
    /// Rows per run.
    pub batch_sizes: Histogram,
    /// Seconds each job waited in the queue.
    pub queue_time: Histogram,
    /// Seconds each run took.
    pub compute_time: Histogram,
    /// Jobs whose client went away while they were queued: never run.
    pub cancelled_queued: AtomicU64,
    /// Jobs whose client went away while they ran: the reply was dropped.
    pub cancelled_running: AtomicU64,
    /// Jobs refused unrun when their queue timeout passed.
    pub queue_timeouts: AtomicU64,
    /// Jobs whose queue timeout passed and that were delayed behind the
    /// jobs on time (`timeout_action: DELAY`), not refused.
    pub queue_delays: AtomicU64,
    /// Jobs answered with their outputs, with the time from queue to reply.
    pub success: Timed,
    /// Jobs that passed the model's checks and were answered with an
    /// error: refused for want of queue room, timed out, or failed in a
    /// run. A request the checks refuse (shape, type, priority) is not
    /// counted, as in Triton.
    pub fail: Timed,
    /// Time in the queue of the jobs that ran.
    pub queue: Timed,
    /// Joining the inputs of each run (per job).
    pub compute_input: Timed,
    /// The model's runs (per job).
    pub compute_infer: Timed,
    /// Splitting the outputs of each run (per job).
    pub compute_output: Timed,
    /// Jobs answered from the response cache, with the time to find them.
    pub cache_hit: Timed,
    /// Jobs not in the response cache, with the time to look them up and
    /// keep their answers.
    pub cache_miss: Timed,
    /// Rows run (Triton's `inference_count`).
    pub inference_count: AtomicU64,
    /// Runs (Triton's `execution_count`).
    pub execution_count: AtomicU64,
    /// Milliseconds since the Unix epoch of the last run's end.
    pub last_inference_ms: AtomicU64,
    /// Jobs run on their caller's thread because the version was idle
    /// (counted in the runs above as well).
    pub inline_runs: AtomicU64,
    by_batch: Mutex<BTreeMap<usize, BatchCounters>>,
}

impl Default for Stats {
    fn default() -> Stats {
        Stats {
            batch_sizes: Histogram::new(BATCH_BOUNDS),
            queue_time: Histogram::new(LATENCY_BOUNDS),
            compute_time: Histogram::new(LATENCY_BOUNDS),
            cancelled_queued: AtomicU64::new(0),
            cancelled_running: AtomicU64::new(0),
            queue_timeouts: AtomicU64::new(0),
            queue_delays: AtomicU64::new(0),
            success: Timed::default(),
            fail: Timed::default(),
            queue: Timed::default(),
            compute_input: Timed::default(),
            compute_infer: Timed::default(),
            compute_output: Timed::default(),
            cache_hit: Timed::default(),
            cache_miss: Timed::default(),
            inference_count: AtomicU64::new(0),
            execution_count: AtomicU64::new(0),
            last_inference_ms: AtomicU64::new(0),
            inline_runs: AtomicU64::new(0),
            by_batch: Mutex::new(BTreeMap::new()),
        }
    }
}

/// The three parts of one run.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct RunTimes {
    pub(crate) input: Duration,
    pub(crate) infer: Duration,
    pub(crate) output: Duration,
}

impl Stats {
    /// Records one run of `rows` rows for `jobs` jobs.
    pub(crate) fn record_run(&self, rows: usize, jobs: usize, t: RunTimes) {
        self.batch_sizes.observe(rows as f64);
        self.compute_time
            .observe((t.input + t.infer + t.output).as_secs_f64());
        self.execution_count.fetch_add(1, Ordering::Relaxed);
        self.inference_count
            .fetch_add(rows as u64, Ordering::Relaxed);
        let n = jobs as u64;
        self.compute_input.add_n(n, t.input * jobs as u32);
        self.compute_infer.add_n(n, t.infer * jobs as u32);
        self.compute_output.add_n(n, t.output * jobs as u32);
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        self.last_inference_ms.store(now, Ordering::Relaxed);
        let mut by = self.by_batch.lock().unwrap_or_else(|e| e.into_inner());
        let c = by.entry(rows).or_default();
        c.count += 1;
        c.compute_input_ns += t.input.as_nanos() as u64;
        c.compute_infer_ns += t.infer.as_nanos() as u64;
        c.compute_output_ns += t.output.as_nanos() as u64;
    }

    /// Records one request of `rows` rows that an ensemble answered in
    /// `took`, as Triton counts an ensemble's (its steps count their own
    /// runs): an inference of each row, an execution, a queue entry and a
    /// run whose time is the whole request's. perf_analyzer needs the queue
    /// count: it takes a model without one for a model that did not run.
    pub(crate) fn record_ensemble(&self, rows: usize, took: Duration) {
        self.record_run(
            rows,
            1,
            RunTimes {
                infer: took,
                ..RunTimes::default()
            },
        );
        self.queue.add(Duration::ZERO);
    }

    /// Compute counters per batch size, ascending.
    pub fn by_batch_size(&self) -> BTreeMap<usize, BatchCounters> {
        self.by_batch
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}
