//! One queue per servable version feeding its replicas.
//!
//! Each replica is a worker thread with its sessions (in a slot that an
//! inline run, below, may hold instead) that takes the
//! next batch from the shared queue when it is free (`engine::queue`), so
//! work always goes to a replica with spare capacity. Front ends submit
//! jobs; each request (one or more jobs) takes one place in the queue
//! limit, and is refused at once when the limit is reached or no replica
//! is alive.
//!
//! - A job's inputs are checked before it is queued, so a bad one never
//!   joins a batch. If a batch of several jobs still fails at run time, its
//!   jobs go back to the front of the queue to run alone, once, and only
//!   the guilty one gets the error.
//! - A worker that panics has its jobs put back once for the others and is
//!   restarted with backoff; while no replica is alive, queued jobs and new
//!   requests are answered at once.
//! - A request of one job that finds its version idle (nothing else queued
//!   or running, a CPU replica free) to a method expected to run within
//!   the inline bound ([`DEFAULT_INLINE_MAX`] unless configured: the
//!   method's last CPU run, scaled up when this job has more input
//!   elements) runs on the caller's thread instead: the hand-off to the
//!   replica thread and the wake-up back are most of one client's latency
//!   for a small model. Everything else about the run (statistics, retries,
//!   a panic failing the replica, fault injection) is the worker's. Under
//!   load, with a batching delay, and while a test hook waits for a
//!   replica's next batch, every job goes through the queue, so batches
//!   form as before.
//! - A job whose client goes away (its future dropped) is taken out of the
//!   queue and never runs; one that is running finishes and its reply is
//!   dropped. A job whose queue timeout passes while queued is answered
//!   at once, never run; one whose deadline passes is answered at once,
//!   and dropped from the queue if it had not started.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serving_proto::gather::{Budget, Charge};
use serving_proto::{NamedTensors, Tensor, TensorData};
use tokio::sync::oneshot;

use super::backend::{Backends, RunError};
use super::config::{QueuePolicy, ServableSpec, TimeoutAction};
use super::error::EngineError;
use super::faults::Faults;
use super::method::MethodPlan;
use super::model::ModelInfo;
use super::queue::{Admission, Job, Next, Queue, Rules};
use super::replica::{Replica, ReplicaSpec, Runner};
use super::rows;
use super::sequence::{SequenceFlags, SequenceJob, SequenceSpec, Sequences, Strategy};
use super::stats::{RunTimes, Stats};
use crate::runtime::device::Device;
use run::*;
use worker::*;

mod run;
mod worker;

/// What a front end submits: one job.
#[derive(Clone, Debug, Default)]
pub struct JobRequest {
    /// Inputs by method input name. For a batched method each is
    /// `[rows, ...]`.
    pub inputs: NamedTensors,
    /// When the client stops waiting.
    pub deadline: Option<Instant>,
    /// Priority level, 1 the highest; 0 for the model's default.
    pub priority: u64,
    /// How long the job may wait in the queue; `None`: the model's default.
    pub queue_timeout: Option<Duration>,
    /// What the client said about its request, for backends that read it.
    pub info: Option<Arc<RequestInfo>>,
    /// Where the responses of a method that answers a job several times
    /// (a decoupled model) go, as the model sends them; the job's own
    /// answer then holds no outputs and says that the model is done.
    pub partials: Option<PartialSender>,
    /// The job's sequence, as its request names it: what a sequence model
    /// needs (ignored by other models).
    pub sequence: Option<SequenceFlags>,
    /// Where the job's times go when it runs (a traced request's).
    pub timing: Option<Arc<JobTiming>>,
}

/// When a job waited and ran, for a traced request: filled by the replica
/// that runs it.
#[derive(Debug, Default)]
pub struct JobTiming {
    ran: Mutex<Option<Timing>>,
}

/// A job's times: queued, taken to run, and its batch's input, infer and
/// output times (Triton's compute_input, compute_infer, compute_output).
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    /// When it was queued.
    pub queued: Instant,
    /// When its batch started.
    pub started: Instant,
    /// Its batch's time making the backend's inputs.
    pub input: Duration,
    /// Its batch's time in the model.
    pub infer: Duration,
    /// Its batch's time taking the outputs.
    pub output: Duration,
}

impl JobTiming {
    /// The times, once the job ran.
    pub fn get(&self) -> Option<Timing> {
        *lock(&self.ran)
    }

    fn set(&self, timing: Timing) {
        *lock(&self.ran) = Some(timing);
    }
}

/// One of the responses of a job that a model answers several times
/// (Triton's decoupled models).
#[derive(Debug)]
pub struct Partial {
    /// The response's outputs by name (none: a response that only says it
    /// is the last), or the model's error for it.
    pub outputs: Result<NamedTensors, String>,
    /// Whether the model said it is the job's last.
    pub last: bool,
}

/// Where a job's [`Partial`] responses go. Bounded: a model that answers
/// faster than its client reads waits for it.
pub type PartialSender = tokio::sync::mpsc::Sender<Partial>;

/// What a client said about its request, for the backends that hand it to
/// models (a Python model's `request_id()` and `parameters()`); the engine
/// only carries it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RequestInfo {
    /// The request's id.
    pub id: String,
    /// Its parameters meant for the model (those the server acts on left
    /// out), as JSON values.
    pub parameters: serde_json::Map<String, serde_json::Value>,
    /// Its sequence's correlation ID (a number or a text), for models
    /// that read it (a Python model's `correlation_id()`).
    pub correlation_id: Option<serde_json::Value>,
    /// Triton's request flags: 1 the sequence starts, 2 it ends.
    pub flags: u32,
}

/// A job's answer: the method's outputs by name, or why not.
pub type JobResult = Result<NamedTensors, EngineError>;

/// Counters of one replica.
#[derive(Debug, Default)]
pub struct ReplicaStats {
    /// Runs completed.
    pub runs: AtomicU64,
    /// Rows of the jobs run (padding not counted).
    pub items: AtomicU64,
    /// Times the replica failed and was restarted.
    pub failures: AtomicU64,
    /// Whether it is alive now.
    pub alive: AtomicBool,
}

/// The default inline bound: the longest last run of a method for which a
/// request may run on its caller's thread. The caller is an async worker,
/// which must not block for long.
pub const DEFAULT_INLINE_MAX: Duration = Duration::from_micros(50);

struct Shared {
    name: String,
    methods: Vec<MethodPlan>,
    /// Each method's last run on a CPU replica: whether a request to it
    /// may run inline.
    last_cpu_run: Vec<RunCost>,
    /// Each replica's sessions, `None` while it is failed. Its worker
    /// thread holds the lock while it runs a batch, an inline run while
    /// it runs one job.
    slots: Vec<Mutex<Option<Replica>>>,
    rules: Rules,
    /// The inline bound in nanoseconds (0: never inline).
    inline_max_ns: u64,
    policy: QueuePolicy,
    /// A sequence model's sequence batching.
    sequence: Option<SequenceSpec>,
    queue: Mutex<Queue>,
    cond: Condvar,
    alive: AtomicUsize,
    stopping: AtomicBool,
    outstanding: Arc<AtomicUsize>,
    limit: usize,
    next_id: AtomicU64,
    faults: Faults,
    replicas: Vec<ReplicaStats>,
    stats: Stats,
}

/// What workers need to restart replicas.
struct Context {
    backends: Arc<Backends>,
    version: u64,
    spec: ServableSpec,
    model_bytes: Vec<Arc<Vec<u8>>>,
    models: Vec<ModelInfo>,
    threads: usize,
    cpu_fallback: bool,
    /// The server's memory for requests: a batch's joined rows, and what
    /// backends grow for a run, are charged to it.
    memory: Arc<Budget>,
}

/// The queue and workers of one servable version.
pub struct Scheduler {
    shared: Arc<Shared>,
    ctx: Arc<Context>,
    workers: Mutex<Vec<std::thread::JoinHandle<()>>>,
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
            .finish()
    }
}

/// Everything [`Scheduler::start`] needs.
pub(crate) struct StartSpec {
    pub(crate) backends: Arc<Backends>,
    pub(crate) name: String,
    pub(crate) version: u64,
    pub(crate) spec: ServableSpec,
    pub(crate) model_bytes: Vec<Arc<Vec<u8>>>,
    pub(crate) models: Vec<ModelInfo>,
    pub(crate) methods: Vec<MethodPlan>,
    pub(crate) replicas: Vec<Replica>,
    pub(crate) threads: usize,
    pub(crate) cpu_fallback: bool,
    pub(crate) queue_limit: usize,
    pub(crate) inline_max: Duration,
    pub(crate) fault_injection: bool,
    pub(crate) memory: Arc<Budget>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A queued job a request is waiting for.
struct Waiting {
    id: u64,
    rx: oneshot::Receiver<Result<Vec<Tensor>, EngineError>>,
    deadline: Option<Instant>,
    queue_deadline: Option<Instant>,
    /// Past its queue deadline, the job is delayed rather than refused.
    delay: bool,
    enqueued: Instant,
}

/// Takes a request's jobs that are still queued out of the queue when the
/// request is dropped (its client went away).
struct Pending {
    shared: Arc<Shared>,
    ids: Vec<u64>,
}

impl Drop for Pending {
    fn drop(&mut self) {
        if self.ids.is_empty() {
            return;
        }
        let removed: Vec<Job> = {
            let mut q = lock(&self.shared.queue);
            self.ids.iter().filter_map(|&id| q.remove(id)).collect()
        };
        if !removed.is_empty() {
            self.shared
                .stats
                .cancelled_queued
                .fetch_add(removed.len() as u64, Ordering::Relaxed);
            // The batch a replica waits to fill may have changed.
            self.shared.cond.notify_all();
        }
    }
}

/// A replica's worker thread could not be started (the process is out of
/// threads or memory): the version fails to load, and the replicas already
/// started stop.
#[derive(Debug, thiserror::Error)]
#[error("cannot start the worker thread of replica {replica} ({device}): {source}")]
pub struct SpawnError {
    /// The replica's index.
    pub replica: usize,
    /// Its device.
    pub device: Device,
    /// Why the thread did not start.
    #[source]
    pub source: std::io::Error,
}

impl Scheduler {
    /// Starts one worker thread per replica.
    pub(crate) fn start(spec: StartSpec) -> Result<Scheduler, SpawnError> {
        let n = spec.replicas.len();
        let deployment = &spec.spec.deployment;
        let devices: Vec<_> = spec.replicas.iter().map(|r| r.device).collect();
        let max_batch = spec.methods.first().map_or(1, |m| m.info.max_batch_size);
        let shared = Arc::new(Shared {
            name: spec.name.clone(),
            last_cpu_run: spec.methods.iter().map(|_| RunCost::default()).collect(),
            methods: spec.methods,
            slots: spec
                .replicas
                .into_iter()
                .map(|r| Mutex::new(Some(r)))
                .collect(),
            rules: Rules {
                join: deployment.batching.join,
                max_delay: deployment.batching.max_delay,
                preferred: deployment.batching.preferred_batch_sizes.clone(),
            },
            inline_max_ns: spec.inline_max.as_nanos().min(u64::MAX as u128) as u64,
            policy: deployment.queue.clone(),
            sequence: deployment.sequence.clone(),
            queue: Mutex::new({
                let mut q = Queue::new(deployment.queue.priority_levels as usize);
                q.sequences = deployment
                    .sequence
                    .clone()
                    .map(|s| Sequences::new(s, n, max_batch));
                q
            }),
            cond: Condvar::new(),
            alive: AtomicUsize::new(n),
            stopping: AtomicBool::new(false),
            outstanding: Arc::new(AtomicUsize::new(0)),
            limit: spec.queue_limit.max(1),
            next_id: AtomicU64::new(0),
            faults: Faults::new(spec.fault_injection, n),
            replicas: (0..n)
                .map(|_| ReplicaStats {
                    alive: AtomicBool::new(true),
                    ..Default::default()
                })
                .collect(),
            stats: Stats::default(),
        });
        let ctx = Arc::new(Context {
            backends: spec.backends,
            version: spec.version,
            spec: spec.spec,
            model_bytes: spec.model_bytes,
            models: spec.models,
            threads: spec.threads,
            cpu_fallback: spec.cpu_fallback,
            memory: spec.memory,
        });
        // Dropped on a failure below, it stops the workers already started.
        let scheduler = Scheduler {
            shared,
            ctx,
            workers: Mutex::new(Vec::new()),
        };
        for (index, device) in devices.into_iter().enumerate() {
            let shared = scheduler.shared.clone();
            let ctx = scheduler.ctx.clone();
            let handle = std::thread::Builder::new()
                .name(format!("replica-{}-{}-{index}", shared.name, ctx.version))
                .spawn(move || worker(&shared, &ctx, index, device))
                .map_err(|source| SpawnError {
                    replica: index,
                    device,
                    source,
                })?;
            lock(&scheduler.workers).push(handle);
        }
        Ok(scheduler)
    }

    /// Stops the workers and waits up to `wait` for them to release their
    /// replicas (a backend's clean-up, such as a Python model's
    /// `finalize`, runs then); returns whether they all did. Requests
    /// still queued are answered as the version goes. Blocking.
    pub fn stop(&self, wait: Duration) -> bool {
        self.shared.stopping.store(true, Ordering::SeqCst);
        self.shared.cond.notify_all();
        let deadline = Instant::now() + wait;
        let mut workers = std::mem::take(&mut *lock(&self.workers));
        while Instant::now() < deadline && !workers.iter().all(|w| w.is_finished()) {
            std::thread::sleep(Duration::from_millis(10));
        }
        let all = workers.iter().all(|w| w.is_finished());
        for w in workers.drain(..).filter(|w| w.is_finished()) {
            let _ = w.join();
        }
        all
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
        &self.shared.replicas
    }

    /// The version's counters (every protocol's traffic).
    pub fn counters(&self) -> &Stats {
        &self.shared.stats
    }

    /// The rows of the runs.
    pub fn batch_sizes(&self) -> &super::stats::Histogram {
        &self.shared.stats.batch_sizes
    }

    /// The fault-injection hooks.
    pub fn faults(&self) -> &Faults {
        &self.shared.faults
    }

    /// The most requests queued or running.
    pub fn limit(&self) -> usize {
        self.shared.limit
    }

    fn admit(&self) -> Result<Admission, EngineError> {
        if self.alive() == 0 {
            return Err(EngineError::Unavailable);
        }
        let before = self.shared.outstanding.fetch_add(1, Ordering::SeqCst);
        let admission = Admission(self.shared.outstanding.clone());
        if before >= self.shared.limit {
            return Err(EngineError::QueueFull {
                limit: self.shared.limit,
            });
        }
        Ok(admission)
    }

    /// The priority level index of a job's priority.
    fn level(&self, priority: u64) -> Result<usize, EngineError> {
        let levels = self.shared.policy.priority_levels;
        match priority {
            0 => Ok(self.shared.policy.default_priority as usize - 1),
            p if p <= u64::from(levels) => Ok(p as usize - 1),
            given => Err(EngineError::Priority { given, levels }),
        }
    }

    /// A free CPU replica for `job` to run on the caller's thread, when
    /// nothing else is queued or running and the job's method runs quickly
    /// (see the module's documentation).
    fn idle_replica(
        &self,
        job: &Job,
        now: Instant,
    ) -> Option<(usize, MutexGuard<'_, Option<Replica>>)> {
        let shared = &self.shared;
        let plan = &shared.methods[job.method];
        // As `Queue::next`: the head of such a method waits for others.
        let waits_for_rows =
            plan.info.max_batch_size > 1 && shared.rules.join && !shared.rules.max_delay.is_zero();
        // A job answered several times sends from the replica's thread,
        // which must not be the caller's.
        if shared.faults.engaged()
            || shared.sequence.is_some()
            || job.partials.is_some()
            || waits_for_rows
            || shared.outstanding.load(Ordering::SeqCst) != 1
            || job.deadline.is_some_and(|d| d <= now)
            || shared.last_cpu_run[job.method]
                .estimate(elements(&job.inputs))
                .is_none_or(|ns| ns >= shared.inline_max_ns)
        {
            return None;
        }
        shared.slots.iter().enumerate().find_map(|(i, slot)| {
            let guard = slot.try_lock().ok()?;
            guard
                .as_ref()
                .is_some_and(|r| r.device == Device::Cpu)
                .then_some((i, guard))
        })
    }

    /// Submits the jobs of one request to `method` and waits for their
    /// answers, in order. The request as a whole is refused when the
    /// method does not exist, no replica is alive or the queue is full;
    /// otherwise each job has its own answer (a job with bad inputs is
    /// answered without being queued).
    pub async fn submit(
        &self,
        method: &str,
        jobs: Vec<JobRequest>,
    ) -> Result<Vec<JobResult>, EngineError> {
        let shared = &self.shared;
        let index = shared
            .methods
            .iter()
            .position(|m| m.info.name == method)
            .ok_or_else(|| EngineError::NoMethod(method.to_owned()))?;
        let plan = &shared.methods[index];
        let checked: Vec<_> = jobs
            .into_iter()
            .map(|req| {
                if plan.info.decoupled && req.partials.is_none() {
                    return Err(EngineError::NeedsStream);
                }
                let level = self.level(req.priority)?;
                Ok((
                    req.deadline,
                    req.queue_timeout,
                    level,
                    plan.check(req.inputs)?,
                    req.info,
                    req.partials,
                    req.sequence,
                    req.timing,
                ))
            })
            .collect();
        let mut answers: Vec<Option<Result<Vec<Tensor>, EngineError>>> = Vec::new();
        let mut waiting: Vec<(usize, Waiting)> = Vec::new();
        // A job refused here never reached the model: as in Triton, whose
        // statistics leave out requests that fail validation, it is not a
        // failed inference. Refusals for want of room below are.
        let refused = checked.iter().filter(|c| c.is_err()).count() as u64;
        if checked.iter().any(Result::is_ok) {
            let admission = match self.admit() {
                Ok(a) => Arc::new(a),
                Err(e) => {
                    shared
                        .stats
                        .fail
                        .add_n(checked.len() as u64 - refused, Duration::ZERO);
                    return Err(e);
                }
            };
            let now = Instant::now();
            let mut jobs: Vec<Job> = Vec::new();
            let mut sequences: Vec<Option<SequenceFlags>> = Vec::new();
            for (k, c) in checked.into_iter().enumerate() {
                answers.push(None);
                let (deadline, timeout, level, checked, info, partials, sequence, timing) = match c
                {
                    Ok(c) => c,
                    Err(e) => {
                        answers[k] = Some(Err(e));
                        continue;
                    }
                };
                let policy = shared.policy.level(level as u32 + 1);
                if let Some(max) = policy.max_queued {
                    let ahead = jobs.iter().filter(|j| j.level == level).count();
                    if lock(&shared.queue).queued_at(level) + ahead >= max {
                        shared.stats.fail.add(Duration::ZERO);
                        answers[k] = Some(Err(EngineError::LevelFull {
                            level: level as u32 + 1,
                            limit: max,
                        }));
                        continue;
                    }
                }
                let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
                let (tx, rx) = oneshot::channel();
                jobs.push(Job {
                    id,
                    method: index,
                    inputs: checked.inputs,
                    rows: checked.rows,
                    signature: checked.signature,
                    deadline,
                    level,
                    enqueued: now,
                    attempts: 0,
                    alone: false,
                    info,
                    partials,
                    sequence: None,
                    timing,
                    reply: tx,
                    _admission: admission.clone(),
                });
                sequences.push(sequence);
                let queue_deadline = policy
                    .request_timeouts
                    .apply(timeout, policy.default_timeout)
                    .and_then(|t| now.checked_add(t));
                waiting.push((
                    k,
                    Waiting {
                        id,
                        rx,
                        deadline,
                        queue_deadline,
                        delay: policy.timeout_action == TimeoutAction::Delay,
                        enqueued: now,
                    },
                ));
            }
            let idle = match jobs.as_slice() {
                [job] if answers.len() == 1 => self.idle_replica(job, now),
                _ => None,
            };
            if let Some((replica, slot)) = idle {
                // The job is answered when `wait` below looks, unless the
                // run panicked: then it was put back for the others.
                if execute(shared, &self.ctx, replica, slot, jobs) {
                    shared.stats.inline_runs.fetch_add(1, Ordering::Relaxed);
                }
            } else {
                let mut q = lock(&shared.queue);
                for (mut job, flags) in jobs.into_iter().zip(sequences) {
                    if let Some(seqs) = q.sequences.as_mut() {
                        // A sequence model's job joins its sequence as it
                        // is queued: the order of a sequence's jobs is the
                        // queue's.
                        let admitted = flags
                            .ok_or(super::sequence::SequenceError::NoCorrelationId)
                            .and_then(|f| {
                                let serial = seqs.admit(&f, job.rows, now)?;
                                Ok(SequenceJob {
                                    flags: f,
                                    serial,
                                    position: 0,
                                })
                            });
                        match admitted {
                            Ok(sj) => job.sequence = Some(sj),
                            Err(e) => {
                                let _ = job.reply.send(Err(e.into()));
                                continue;
                            }
                        }
                    }
                    q.push(job);
                }
                drop(q);
                shared.cond.notify_all();
            }
        } else {
            answers = checked
                .into_iter()
                .map(|c| Some(c.map(|_| Vec::new())))
                .collect();
        }
        let mut pending = Pending {
            shared: shared.clone(),
            ids: waiting.iter().map(|(_, w)| w.id).collect(),
        };
        for (k, w) in waiting {
            let id = w.id;
            answers[k] = Some(wait(shared, w).await);
            pending.ids.retain(|&i| i != id);
        }
        let names: Vec<&str> = plan.info.outputs.iter().map(|o| o.name.as_str()).collect();
        Ok(answers
            .into_iter()
            .map(|a| {
                a.unwrap_or(Err(EngineError::Unavailable))
                    .map(|outputs| names.iter().map(|n| (*n).to_owned()).zip(outputs).collect())
            })
            .collect())
    }
}

/// Waits for one queued job: its answer, or its queue timeout or deadline,
/// whichever comes first.
async fn wait(shared: &Shared, mut w: Waiting) -> Result<Vec<Tensor>, EngineError> {
    let far = || tokio::time::Instant::now() + Duration::from_secs(86400 * 365);
    let at = |t: Option<Instant>| t.map_or_else(far, tokio::time::Instant::from_std);
    let mut queue_deadline = w.queue_deadline;
    loop {
        tokio::select! {
            // An answer that is there wins over a deadline that passed
            // while it was computed (an inline run).
            biased;
            answer = &mut w.rx => return answer.unwrap_or(Err(EngineError::Unavailable)),
            () = tokio::time::sleep_until(at(queue_deadline)), if queue_deadline.is_some() => {
                if w.delay {
                    // Still queued or not, it is no longer refused for
                    // its queue timeout: delayed behind the jobs on time.
                    if lock(&shared.queue).delay(w.id) {
                        shared.stats.queue_delays.fetch_add(1, Ordering::Relaxed);
                        shared.cond.notify_all();
                    }
                    queue_deadline = None;
                    continue;
                }
                if lock(&shared.queue).remove(w.id).is_some() {
                    shared.stats.queue_timeouts.fetch_add(1, Ordering::Relaxed);
                    shared.stats.fail.add(w.enqueued.elapsed());
                    shared.cond.notify_all();
                    return Err(EngineError::QueueTimeout);
                }
                // Already running: the queue timeout no longer applies.
                queue_deadline = None;
            }
            () = tokio::time::sleep_until(at(w.deadline)), if w.deadline.is_some() => {
                if lock(&shared.queue).remove(w.id).is_some() {
                    shared.cond.notify_all();
                }
                shared.stats.fail.add(w.enqueued.elapsed());
                return Err(EngineError::Deadline);
            }
        }
    }
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        self.shared.cond.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_inline_estimate_scales_up_with_a_larger_job_and_never_down() {
        let cost = RunCost::default();
        assert_eq!(cost.estimate(8), None, "no run yet");
        cost.record(Duration::from_micros(10), 8);
        assert_eq!(cost.estimate(8), Some(10_000));
        // A model's fixed cost does not shrink with its inputs.
        assert_eq!(cost.estimate(1), Some(10_000));
        assert_eq!(cost.estimate(0), Some(10_000));
        // Eight times the elements: eight times the time.
        assert_eq!(cost.estimate(64), Some(80_000));
        // A run of no elements counts as one.
        cost.record(Duration::from_micros(3), 0);
        assert_eq!(cost.estimate(5), Some(15_000));
        assert_eq!(cost.estimate(u64::MAX), Some(u64::MAX));
    }
}
