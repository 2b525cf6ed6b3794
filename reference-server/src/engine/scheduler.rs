//! One queue per servable version feeding its replicas.
//!
//! Each replica is a worker thread that owns its sessions and pulls work from
//! the shared queue when it is free, so work always goes to a replica with
//! spare capacity. MindSpore requests enter as one task per instance; a free
//! worker takes up to `max_batch_size` instances of one method, from any
//! requests, waiting up to `batch_timeout` for more, and runs them as one
//! batch. A worker that panics has its batch re-queued once to the others
//! and is restarted with backoff; while no replica is alive, requests are
//! refused at once. The number of requests queued or running is bounded.

use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serving_proto::NamedTensors;
use serving_proto::mindspore::{InstanceResult, ServableError, StatusCode};
use tokio::sync::oneshot;

use super::replica::{Replica, ReplicaSpec, Runner};
use super::{ModelInfo, instances, tensors};
use crate::error::ServeError;
use crate::metrics::{BATCH_BOUNDS, Histogram};
use crate::repository::config::ServableConfig;
use crate::runtime::Runtime;

/// How instances are batched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchPolicy {
    /// The most instances one run takes.
    pub max_batch_size: usize,
    /// How long a free replica waits for more instances to fill a batch.
    pub batch_timeout: Duration,
}

/// Why work was refused or dropped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No replica is alive.
    NotAvailable,
    /// The queue holds `limit` requests already.
    QueueFull(usize),
    /// The deadline passed before the work ran.
    Deadline,
}

/// Counters of one replica.
#[derive(Debug, Default)]
pub struct ReplicaStats {
    /// Runs (batches or whole requests) completed.
    pub runs: AtomicU64,
    /// Instances (or whole requests) completed.
    pub items: AtomicU64,
    /// Times the replica failed and was restarted.
    pub failures: AtomicU64,
    /// Whether it is alive now.
    pub alive: AtomicBool,
}

/// Test hooks, inert unless the server was started with fault injection.
#[derive(Debug, Default)]
pub struct Faults {
    enabled: bool,
    kill_next: Vec<AtomicBool>,
    block_restart: AtomicBool,
}

impl Faults {
    /// Makes replica `index` panic at its next run. Returns false when fault
    /// injection is off.
    pub fn kill(&self, index: usize) -> bool {
        match self.kill_next.get(index) {
            Some(flag) if self.enabled => {
                flag.store(true, Ordering::SeqCst);
                true
            }
            _ => false,
        }
    }

    /// Makes restarts fail (or succeed again).
    pub fn block_restarts(&self, block: bool) -> bool {
        if self.enabled {
            self.block_restart.store(block, Ordering::SeqCst);
        }
        self.enabled
    }
}

struct PredictJob {
    method: String,
    deadline: Option<Instant>,
    results: Mutex<Vec<Option<InstanceResult>>>,
    remaining: AtomicUsize,
    done: Mutex<Option<oneshot::Sender<Vec<InstanceResult>>>>,
}

struct InstanceWork {
    job: Arc<PredictJob>,
    index: usize,
    tensors: NamedTensors,
    attempts: u8,
}

struct WholeWork {
    method: String,
    model: String,
    inputs: NamedTensors,
    deadline: Option<Instant>,
    attempts: u8,
    done: oneshot::Sender<Result<NamedTensors, ServeError>>,
}

enum Work {
    Instance(InstanceWork),
    Whole(WholeWork),
}

enum Batch {
    Instances(Vec<InstanceWork>),
    Whole(WholeWork),
}

struct Shared {
    name: String,
    queue: Mutex<VecDeque<Work>>,
    cond: Condvar,
    alive: AtomicUsize,
    stopping: AtomicBool,
    outstanding: AtomicUsize,
    limit: usize,
    faults: Faults,
    stats: Vec<ReplicaStats>,
    batch_sizes: Histogram,
}

/// What workers need to run and to restart replicas.
struct Context {
    runtime: Arc<Runtime>,
    name: String,
    version: u64,
    config: ServableConfig,
    model_bytes: Vec<Arc<Vec<u8>>>,
    models: Vec<ModelInfo>,
    threads: usize,
    cpu_fallback: bool,
    policy: BatchPolicy,
}

/// The queue and workers of one servable version.
pub struct Scheduler {
    shared: Arc<Shared>,
    policy: BatchPolicy,
}

impl std::fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler")
            .field("servable", &self.shared.name)
            .field("alive", &self.shared.alive.load(Ordering::Relaxed))
            .field(
                "outstanding",
                &self.shared.outstanding.load(Ordering::Relaxed),
            )
            .field("policy", &self.policy)
            .finish()
    }
}

/// Everything [`Scheduler::start`] needs.
pub struct StartSpec {
    /// The loaded ONNX Runtime.
    pub runtime: Arc<Runtime>,
    /// Servable name.
    pub name: String,
    /// Version.
    pub version: u64,
    /// The configuration.
    pub config: ServableConfig,
    /// Each model's bytes, to restart replicas.
    pub model_bytes: Vec<Arc<Vec<u8>>>,
    /// The models' metadata.
    pub models: Vec<ModelInfo>,
    /// The loaded replicas.
    pub replicas: Vec<Replica>,
    /// Intra-op threads per replica.
    pub threads: usize,
    /// Restart on the CPU when the device cannot be used.
    pub cpu_fallback: bool,
    /// Batching.
    pub policy: BatchPolicy,
    /// The most requests queued or running.
    pub queue_limit: usize,
    /// Whether the fault-injection hooks work.
    pub fault_injection: bool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Scheduler {
    /// Starts one worker thread per replica.
    pub fn start(spec: StartSpec) -> Scheduler {
        let n = spec.replicas.len();
        let shared = Arc::new(Shared {
            name: spec.name.clone(),
            queue: Mutex::new(VecDeque::new()),
            cond: Condvar::new(),
            alive: AtomicUsize::new(n),
            stopping: AtomicBool::new(false),
            outstanding: AtomicUsize::new(0),
            limit: spec.queue_limit.max(1),
            faults: Faults {
                enabled: spec.fault_injection,
                kill_next: (0..n).map(|_| AtomicBool::new(false)).collect(),
                block_restart: AtomicBool::new(false),
            },
            stats: (0..n)
                .map(|_| ReplicaStats {
                    alive: AtomicBool::new(true),
                    ..Default::default()
                })
                .collect(),
            batch_sizes: Histogram::new(BATCH_BOUNDS),
        });
        let policy = spec.policy;
        let ctx = Arc::new(Context {
            runtime: spec.runtime,
            name: spec.name,
            version: spec.version,
            config: spec.config,
            model_bytes: spec.model_bytes,
            models: spec.models,
            threads: spec.threads,
            cpu_fallback: spec.cpu_fallback,
            policy,
        });
        for (index, replica) in spec.replicas.into_iter().enumerate() {
            let shared = shared.clone();
            let ctx = ctx.clone();
            let device = replica.device;
            std::thread::Builder::new()
                .name(format!("replica-{}-{}-{index}", ctx.name, ctx.version))
                .spawn(move || worker(&shared, &ctx, index, replica))
                .unwrap_or_else(|e| {
                    panic!("cannot spawn the worker thread of replica {index} ({device}): {e}")
                });
        }
        Scheduler { shared, policy }
    }

    /// Replicas alive now.
    pub fn alive(&self) -> usize {
        self.shared.alive.load(Ordering::SeqCst)
    }

    /// Requests queued or running.
    pub fn outstanding(&self) -> usize {
        self.shared.outstanding.load(Ordering::SeqCst)
    }

    /// Per-replica counters.
    pub fn stats(&self) -> &[ReplicaStats] {
        &self.shared.stats
    }

    /// The sizes of the batches run.
    pub fn batch_sizes(&self) -> &Histogram {
        &self.shared.batch_sizes
    }

    /// The fault-injection hooks.
    pub fn faults(&self) -> &Faults {
        &self.shared.faults
    }

    /// The batching policy.
    pub fn policy(&self) -> BatchPolicy {
        self.policy
    }

    fn admit(&self) -> Result<(), Refusal> {
        if self.alive() == 0 {
            return Err(Refusal::NotAvailable);
        }
        let before = self.shared.outstanding.fetch_add(1, Ordering::SeqCst);
        if before >= self.shared.limit {
            self.shared.outstanding.fetch_sub(1, Ordering::SeqCst);
            return Err(Refusal::QueueFull(self.shared.limit));
        }
        Ok(())
    }

    /// Runs MindSpore instances of `method`; one result per instance.
    pub async fn predict(
        &self,
        method: &str,
        instances: Vec<NamedTensors>,
        deadline: Option<Instant>,
    ) -> Result<Vec<InstanceResult>, Refusal> {
        self.admit()?;
        let n = instances.len();
        let (tx, rx) = oneshot::channel();
        let job = Arc::new(PredictJob {
            method: method.to_owned(),
            deadline,
            results: Mutex::new(vec![None; n]),
            remaining: AtomicUsize::new(n),
            done: Mutex::new(Some(tx)),
        });
        {
            let mut q = lock(&self.shared.queue);
            for (index, tensors) in instances.into_iter().enumerate() {
                q.push_back(Work::Instance(InstanceWork {
                    job: job.clone(),
                    index,
                    tensors,
                    attempts: 0,
                }));
            }
        }
        self.shared.cond.notify_all();
        rx.await.map_err(|_| Refusal::NotAvailable)
    }

    /// Runs whole tensors through `method` (the Open Inference Protocol).
    pub async fn infer(
        &self,
        method: &str,
        model: &str,
        inputs: NamedTensors,
        deadline: Option<Instant>,
    ) -> Result<Result<NamedTensors, ServeError>, Refusal> {
        self.admit()?;
        let (tx, rx) = oneshot::channel();
        lock(&self.shared.queue).push_back(Work::Whole(WholeWork {
            method: method.to_owned(),
            model: model.to_owned(),
            inputs,
            deadline,
            attempts: 0,
            done: tx,
        }));
        self.shared.cond.notify_one();
        rx.await.map_err(|_| Refusal::NotAvailable)
    }
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        self.shared.cond.notify_all();
    }
}

fn not_available(name: &str, method: &str) -> ServableError {
    ServableError::servable_not_available(name, method, 0)
        .with_code(StatusCode::ServableUnavailable)
}

fn deadline_error() -> ServableError {
    ServableError::new(
        StatusCode::Failed,
        "Deadline Exceeded: the request's deadline passed before it ran",
    )
}

impl PredictJob {
    /// Records one instance's result; the last one answers the request.
    fn complete(&self, index: usize, result: InstanceResult, shared: &Shared) {
        lock(&self.results)[index] = Some(result);
        if self.remaining.fetch_sub(1, Ordering::SeqCst) == 1 {
            let results = std::mem::take(&mut *lock(&self.results))
                .into_iter()
                .map(|r| r.unwrap_or_else(|| Err(not_available(&shared.name, &self.method))))
                .collect();
            if let Some(tx) = lock(&self.done).take() {
                let _ = tx.send(results);
            }
            shared.outstanding.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

fn finish_whole(w: WholeWork, result: Result<NamedTensors, ServeError>, shared: &Shared) {
    let _ = w.done.send(result);
    shared.outstanding.fetch_sub(1, Ordering::SeqCst);
}

/// Takes the next batch: up to `max_batch_size` instances of one method, or
/// one whole request. `None` when stopping.
fn take(shared: &Shared, policy: BatchPolicy) -> Option<Batch> {
    let mut q = lock(&shared.queue);
    loop {
        if shared.stopping.load(Ordering::SeqCst) {
            return None;
        }
        match q.pop_front() {
            Some(Work::Whole(w)) => return Some(Batch::Whole(w)),
            Some(Work::Instance(first)) => {
                let method = first.job.method.clone();
                let max = policy.max_batch_size.max(1);
                let mut items = vec![first];
                gather(&mut q, &method, max, &mut items);
                let until = Instant::now() + policy.batch_timeout;
                while items.len() < max && !policy.batch_timeout.is_zero() {
                    let now = Instant::now();
                    if now >= until || shared.stopping.load(Ordering::SeqCst) {
                        break;
                    }
                    q = shared
                        .cond
                        .wait_timeout(q, until - now)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                    gather(&mut q, &method, max, &mut items);
                }
                return Some(Batch::Instances(items));
            }
            None => q = shared.cond.wait(q).unwrap_or_else(|e| e.into_inner()),
        }
    }
}

fn gather(q: &mut VecDeque<Work>, method: &str, max: usize, items: &mut Vec<InstanceWork>) {
    let mut i = 0;
    while i < q.len() && items.len() < max {
        if matches!(&q[i], Work::Instance(w) if w.job.method == method) {
            if let Some(Work::Instance(w)) = q.remove(i) {
                items.push(w);
            }
        } else {
            i += 1;
        }
    }
}

fn worker(shared: &Shared, ctx: &Context, index: usize, replica: Replica) {
    let device = replica.device;
    let mut replica = Some(replica);
    let mut backoff = Duration::from_millis(100);
    let stats = &shared.stats[index];
    loop {
        if shared.stopping.load(Ordering::SeqCst) {
            return;
        }
        let Some(r) = replica.as_mut() else {
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(Duration::from_secs(5));
            if shared.faults.block_restart.load(Ordering::SeqCst) {
                continue;
            }
            let spec = ReplicaSpec {
                servable: &ctx.name,
                version: ctx.version,
                config: &ctx.config,
                models: &ctx.model_bytes,
                threads: ctx.threads,
                cpu_fallback: ctx.cpu_fallback,
            };
            match Replica::load(&ctx.runtime, spec, device) {
                Ok((r, _)) => {
                    tracing::info!(servable = %ctx.name, version = ctx.version, replica = index, %device, "replica restarted");
                    replica = Some(r);
                    backoff = Duration::from_millis(100);
                    stats.alive.store(true, Ordering::SeqCst);
                    shared.alive.fetch_add(1, Ordering::SeqCst);
                }
                Err(e) => {
                    tracing::warn!(servable = %ctx.name, replica = index, error = %e, "replica restart failed; retrying")
                }
            }
            continue;
        };
        let Some(batch) = take(shared, ctx.policy) else {
            return;
        };
        let batch = drop_expired(batch, shared);
        let Some(batch) = batch else { continue };
        let kill =
            shared.faults.enabled && shared.faults.kill_next[index].swap(false, Ordering::SeqCst);
        let ran = catch_unwind(AssertUnwindSafe(|| {
            if kill {
                panic!("fault injection: replica {index} ({device}) made to fail");
            }
            run(ctx, r, &batch)
        }));
        match ran {
            Ok(outcome) => {
                stats.runs.fetch_add(1, Ordering::Relaxed);
                deliver(batch, outcome, shared, stats);
            }
            Err(_) => {
                tracing::error!(servable = %ctx.name, version = ctx.version, replica = index, %device, "replica failed; re-queueing its work and restarting it");
                replica = None;
                stats.failures.fetch_add(1, Ordering::Relaxed);
                stats.alive.store(false, Ordering::SeqCst);
                let left = shared.alive.fetch_sub(1, Ordering::SeqCst) - 1;
                requeue(batch, shared, ctx);
                if left == 0 {
                    fail_all(shared, ctx);
                }
            }
        }
    }
}

/// Answers work whose deadline passed instead of running it.
fn drop_expired(batch: Batch, shared: &Shared) -> Option<Batch> {
    let now = Instant::now();
    let expired = |d: Option<Instant>| d.is_some_and(|d| d <= now);
    match batch {
        Batch::Whole(w) if expired(w.deadline) => {
            finish_whole(
                w,
                Err(ServeError::DeadlineExceeded(
                    "Deadline Exceeded: the request's deadline passed before it ran".into(),
                )),
                shared,
            );
            None
        }
        Batch::Whole(w) => Some(Batch::Whole(w)),
        Batch::Instances(items) => {
            let (late, live): (Vec<_>, Vec<_>) =
                items.into_iter().partition(|w| expired(w.job.deadline));
            for w in late {
                w.job.complete(w.index, Err(deadline_error()), shared);
            }
            (!live.is_empty()).then_some(Batch::Instances(live))
        }
    }
}

enum Outcome {
    Instances(Result<Vec<InstanceResult>, ServableError>),
    Whole(Result<NamedTensors, ServeError>),
}

fn run(ctx: &Context, replica: &mut Replica, batch: &Batch) -> Outcome {
    let mut runner = Runner {
        models: &ctx.models,
        replica,
    };
    match batch {
        Batch::Instances(items) => {
            let method = &items[0].job.method;
            let Some(m) = ctx.config.method.iter().find(|m| &m.name == method) else {
                return Outcome::Instances(Err(ServableError::method_not_available(
                    &ctx.name, method,
                )));
            };
            let inputs = items.iter().map(|w| w.tensors.clone()).collect();
            Outcome::Instances(instances::predict(&mut runner, &ctx.name, m, inputs))
        }
        Batch::Whole(w) => {
            let Some(m) = ctx.config.method.iter().find(|m| m.name == w.method) else {
                return Outcome::Whole(Err(ServeError::NotFound(format!(
                    "model '{}' is not found",
                    w.model
                ))));
            };
            Outcome::Whole(tensors::infer(&mut runner, m, w.inputs.clone(), &w.model))
        }
    }
}

fn deliver(batch: Batch, outcome: Outcome, shared: &Shared, stats: &ReplicaStats) {
    match (batch, outcome) {
        (Batch::Instances(items), Outcome::Instances(results)) => {
            stats.items.fetch_add(items.len() as u64, Ordering::Relaxed);
            shared.batch_sizes.observe(items.len() as f64);
            match results {
                Ok(results) => {
                    for (w, r) in items.into_iter().zip(results) {
                        w.job.complete(w.index, r, shared);
                    }
                }
                Err(e) => {
                    for w in items {
                        w.job.complete(w.index, Err(e.clone()), shared);
                    }
                }
            }
        }
        (Batch::Whole(w), Outcome::Whole(result)) => {
            stats.items.fetch_add(1, Ordering::Relaxed);
            finish_whole(w, result, shared);
        }
        _ => unreachable!("the outcome follows the batch"),
    }
}

/// Puts a failed replica's work back once; work that already failed once
/// gets an error instead.
fn requeue(batch: Batch, shared: &Shared, ctx: &Context) {
    let failed = |method: &str| {
        ServableError::new(
            StatusCode::SystemError,
            format!(
                "Serving Error: runtime error occurred: replicas of servable {} failed twice running method {method}",
                ctx.name
            ),
        )
    };
    let mut q = lock(&shared.queue);
    match batch {
        Batch::Whole(mut w) if w.attempts == 0 => {
            w.attempts = 1;
            q.push_front(Work::Whole(w));
        }
        Batch::Whole(w) => {
            drop(q);
            let text = failed(&w.method).message;
            finish_whole(w, Err(ServeError::Internal(text)), shared);
            return;
        }
        Batch::Instances(items) => {
            for mut w in items.into_iter().rev() {
                if w.attempts == 0 {
                    w.attempts = 1;
                    q.push_front(Work::Instance(w));
                } else {
                    let e = failed(&w.job.method);
                    w.job.complete(w.index, Err(e), shared);
                }
            }
        }
    }
    drop(q);
    shared.cond.notify_all();
}

/// With no replica alive, every queued request is answered at once.
fn fail_all(shared: &Shared, ctx: &Context) {
    let drained: Vec<Work> = lock(&shared.queue).drain(..).collect();
    for work in drained {
        match work {
            Work::Instance(w) => {
                let e = not_available(&ctx.name, &w.job.method);
                w.job.complete(w.index, Err(e), shared);
            }
            Work::Whole(w) => finish_whole(
                w,
                Err(ServeError::Unavailable(format!(
                    "no replica of model '{}' is alive; it is being restarted",
                    ctx.name
                ))),
                shared,
            ),
        }
    }
}
