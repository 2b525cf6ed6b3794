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

/// Takes the next batch (see [`super::queue`]) for replica `index`;
/// `None` when stopping or when the replica has failed (an inline run
/// panicked). Jobs whose client went away or whose deadline passed are
/// answered here instead of run.
fn take(shared: &Shared, index: usize) -> Option<Vec<Job>> {
    let mut q = lock(&shared.queue);
    loop {
        if shared.stopping.load(Ordering::SeqCst)
            || !shared.replicas[index].alive.load(Ordering::SeqCst)
        {
            return None;
        }
        let now = Instant::now();
        match q.next(&shared.methods, &shared.rules, now, false, index) {
            Next::Run(jobs) => {
                let (live, gone): (Vec<Job>, Vec<Job>) = jobs
                    .into_iter()
                    .partition(|j| !j.reply.is_closed() && j.deadline.is_none_or(|d| d > now));
                if !gone.is_empty() {
                    if let Some(seqs) = q.sequences.as_mut() {
                        for sj in gone.iter().filter_map(|j| j.sequence.as_ref()) {
                            seqs.finish(sj.serial, None, now);
                        }
                    }
                    drop(q);
                    for job in gone {
                        if job.reply.is_closed() {
                            shared
                                .stats
                                .cancelled_queued
                                .fetch_add(1, Ordering::Relaxed);
                        } else {
                            shared.stats.fail.add(job.enqueued.elapsed());
                            let _ = job.reply.send(Err(EngineError::Deadline));
                        }
                    }
                    q = lock(&shared.queue);
                }
                if !live.is_empty() {
                    return Some(live);
                }
            }
            Next::WaitUntil(t) => {
                q = shared
                    .cond
                    .wait_timeout(q, t.saturating_duration_since(now))
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
            Next::Wait => q = shared.cond.wait(q).unwrap_or_else(|e| e.into_inner()),
        }
    }
}

fn worker(shared: &Shared, ctx: &Context, index: usize, device: Device) {
    let mut backoff = Duration::from_millis(100);
    let stats = &shared.replicas[index];
    let slot = &shared.slots[index];
    loop {
        if shared.stopping.load(Ordering::SeqCst) {
            // The sessions are freed here, not by whoever drops the last
            // handle on the version.
            drop(lock(slot).take());
            return;
        }
        if !stats.alive.load(Ordering::SeqCst) {
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(Duration::from_secs(5));
            if shared.faults.restarts_blocked() {
                continue;
            }
            let spec = ReplicaSpec {
                servable: &shared.name,
                version: ctx.version,
                spec: &ctx.spec,
                models: &ctx.model_bytes,
                index,
                threads: ctx.threads,
                cpu_fallback: ctx.cpu_fallback,
                memory: &ctx.memory,
            };
            match Replica::load(&ctx.backends, spec, device) {
                Ok((r, _)) => {
                    tracing::info!(servable = %shared.name, version = ctx.version, replica = index, %device, "replica restarted");
                    backoff = Duration::from_millis(100);
                    // The sessions and the counts change together: an inline
                    // run that takes the slot sees the replica alive.
                    let mut s = lock(slot);
                    *s = Some(r);
                    stats.alive.store(true, Ordering::SeqCst);
                    shared.alive.fetch_add(1, Ordering::SeqCst);
                }
                Err(e) => {
                    tracing::warn!(servable = %shared.name, replica = index, error = %e, "replica restart failed; retrying")
                }
            }
            continue;
        }
        let Some(batch) = take(shared, index) else {
            continue;
        };
        shared.faults.wait_while_held();
        execute(shared, ctx, index, lock(slot), batch);
    }
}

/// Runs one batch on replica `index` (its slot locked by the caller) and
/// answers its jobs; a panic fails the replica, whose worker restarts it.
/// Returns whether the batch ran and its outputs were sent.
fn execute(
    shared: &Shared,
    ctx: &Context,
    index: usize,
    mut slot: MutexGuard<'_, Option<Replica>>,
    batch: Vec<Job>,
) -> bool {
    let Some(r) = slot.as_mut() else {
        // The replica failed after this batch was taken (an inline run
        // panicked): the batch goes back, unchanged, for the others.
        drop(slot);
        {
            let mut q = lock(&shared.queue);
            for job in batch.into_iter().rev() {
                q.push_front(job);
            }
        }
        shared.cond.notify_all();
        // The failed run may have answered the queue already, finding no
        // replica left: then these are answered too.
        if shared.alive.load(Ordering::SeqCst) == 0 {
            fail_all(shared);
        }
        return false;
    };
    let device = r.device;
    let stats = &shared.replicas[index];
    let started = Instant::now();
    let kill = shared.faults.take_kill(index);
    let ran = catch_unwind(AssertUnwindSafe(|| {
        if kill {
            panic!(
                "{} replica {index} ({device}) made to fail",
                super::faults::INJECTED
            );
        }
        run(shared, ctx, r, &batch)
    }));
    // A replica whose instance is gone (a backend's process died or hung)
    // fails as one that panicked does.
    let ran = match ran {
        Ok(Err(RunError::Lost(why))) => Err(why),
        Ok(Err(e)) => Ok(Err(job_error(e, &batch))),
        Ok(Ok(out)) => Ok(Ok(out)),
        Err(panic) => Err(panic_text(&panic)),
    };
    // A failed replica's sessions and counts change together, under its
    // slot: nobody takes a slot that is empty but alive.
    let left = ran.is_err().then(|| {
        *slot = None;
        stats.failures.fetch_add(1, Ordering::Relaxed);
        stats.alive.store(false, Ordering::SeqCst);
        shared.alive.fetch_sub(1, Ordering::SeqCst) - 1
    });
    drop(slot);
    match ran {
        Ok(Ok((outputs, states, times))) => {
            if device == Device::Cpu {
                shared.last_cpu_run[batch[0].method].record(
                    started.elapsed(),
                    batch.iter().map(|j| elements(&j.inputs)).sum(),
                );
            }
            let rows: usize = batch.iter().map(|j| j.rows).sum();
            stats.items.fetch_add(rows as u64, Ordering::Relaxed);
            if shared.methods[batch[0].method].info.batched {
                stats.runs.fetch_add(1, Ordering::Relaxed);
                shared.stats.record_run(rows, batch.len(), times);
            } else {
                // Each job ran on its own.
                let n = batch.len() as u32;
                stats.runs.fetch_add(n.into(), Ordering::Relaxed);
                let each = RunTimes {
                    infer: times.infer / n.max(1),
                    ..times
                };
                for _ in 0..n {
                    shared.stats.record_run(1, 1, each);
                }
            }
            let mut batch = batch;
            if shared.sequence.is_some() {
                // Each sequence's next state, and its slot free for its
                // next job, before its client hears of this one.
                let now = Instant::now();
                let mut q = lock(&shared.queue);
                if let Some(seqs) = q.sequences.as_mut() {
                    for (job, state) in batch.iter_mut().zip(states) {
                        if let Some(sj) = job.sequence.take() {
                            seqs.finish(sj.serial, state, now);
                        }
                    }
                }
                drop(q);
                shared.cond.notify_all();
            }
            for job in &batch {
                if let Some(t) = &job.timing {
                    t.set(Timing {
                        queued: job.enqueued,
                        started,
                        input: times.input,
                        infer: times.infer,
                        output: times.output,
                    });
                }
            }
            for (job, out) in batch.into_iter().zip(outputs) {
                shared
                    .stats
                    .queue_time
                    .observe((started - job.enqueued).as_secs_f64());
                shared.stats.queue.add(started - job.enqueued);
                answer(shared, job, out);
            }
            true
        }
        Ok(Err(e)) if batch.len() > 1 => {
            tracing::debug!(servable = %shared.name, jobs = batch.len(), error = %e, "a batch failed; running its jobs alone");
            retry(shared, batch, |_| e.clone());
            false
        }
        Ok(Err(e)) => {
            for job in batch {
                answer(shared, job, Err(e.clone()));
            }
            false
        }
        Err(why) => {
            tracing::error!(servable = %shared.name, version = ctx.version, replica = index, %device, reason = %why, "replica failed; re-queueing its work and restarting it");
            // Wakes the replica's worker, too, to restart it.
            retry(shared, batch, |_| EngineError::ReplicasFailed);
            if left == Some(0) {
                fail_all(shared);
            }
            false
        }
    }
}

/// The elements of a job's inputs: its size, for the inline estimate.
fn elements(inputs: &[Option<Tensor>]) -> u64 {
    inputs
        .iter()
        .flatten()
        .map(|t| t.element_count() as u64)
        .sum()
}

/// A method's last run on a CPU replica: its time and its inputs'
/// elements. Read and written without a lock; a torn pair only skews one
/// estimate.
#[derive(Debug)]
struct RunCost {
    ns: AtomicU64,
    elements: AtomicU64,
}

impl Default for RunCost {
    fn default() -> RunCost {
        RunCost {
            ns: AtomicU64::new(u64::MAX),
            elements: AtomicU64::new(0),
        }
    }
}

impl RunCost {
    fn record(&self, took: Duration, elements: u64) {
        self.ns.store(
            took.as_nanos().min(u64::MAX as u128) as u64,
            Ordering::Relaxed,
        );
        self.elements.store(elements, Ordering::Relaxed);
    }

    /// How long a run of `elements` input elements should take: the last
    /// run's time, scaled up for a larger job and never down (a model's
    /// fixed cost does not shrink with its inputs); `None` before the
    /// first run.
    fn estimate(&self, elements: u64) -> Option<u64> {
        let ns = self.ns.load(Ordering::Relaxed);
        if ns == u64::MAX {
            return None;
        }
        let last = self.elements.load(Ordering::Relaxed).max(1);
        let scaled = u128::from(ns) * u128::from(elements.max(last)) / u128::from(last);
        Some(scaled.min(u128::from(u64::MAX)) as u64)
    }
}

/// Sends a job its answer and counts it.
fn answer(shared: &Shared, job: Job, result: Result<Vec<Tensor>, EngineError>) {
    let Job {
        reply,
        enqueued,
        _admission,
        sequence,
        ..
    } = job;
    if let Some(sj) = sequence {
        // Its sequence may go on (or end) without it.
        if let Some(seqs) = lock(&shared.queue).sequences.as_mut() {
            seqs.finish(sj.serial, None, Instant::now());
        }
        shared.cond.notify_all();
    }
    if reply.is_closed() {
        // The client went away (or its deadline passed) while it ran; the
        // waiter has counted the failure.
        shared
            .stats
            .cancelled_running
            .fetch_add(1, Ordering::Relaxed);
        return;
    }
    let took = enqueued.elapsed();
    match &result {
        Ok(_) => shared.stats.success.add(took),
        Err(_) => shared.stats.fail.add(took),
    }
    // The request's place in the limit is given back before its client
    // hears of it: a client's next request must not find this one still
    // outstanding (and queue behind it instead of running inline).
    drop(_admission);
    if reply.send(result).is_err() {
        shared
            .stats
            .cancelled_running
            .fetch_add(1, Ordering::Relaxed);
    }
}

/// Puts the jobs of a failed run back at the front of the queue, each to
/// run alone, once; a job already put back once gets `error` instead.
fn retry(shared: &Shared, batch: Vec<Job>, error: impl Fn(&Job) -> EngineError) {
    let mut failed = Vec::new();
    {
        let mut q = lock(&shared.queue);
        let alone = batch.len() > 1;
        for mut job in batch.into_iter().rev() {
            if job.attempts == 0 {
                job.attempts = 1;
                job.alone |= alone;
                q.push_front(job);
            } else {
                failed.push(job);
            }
        }
    }
    shared.cond.notify_all();
    for job in failed {
        let e = error(&job);
        answer(shared, job, Err(e));
    }
}

/// What a panic says, for the log.
fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic".into())
}

/// With no replica alive, every queued job is answered at once.
fn fail_all(shared: &Shared) {
    let drained = lock(&shared.queue).drain();
    for job in drained {
        answer(shared, job, Err(EngineError::Unavailable));
    }
}

/// One job's outputs from a run, or why the model failed on it.
type Outputs = Result<Vec<Tensor>, EngineError>;

/// What a failed run of `jobs` means for them (a lost instance is the
/// replica's failure, not theirs).
fn job_error(e: RunError, jobs: &[Job]) -> EngineError {
    match e {
        RunError::Memory(x) => EngineError::Memory {
            wanted: x.wanted,
            held: x.held,
            limit: x.limit,
            own: jobs
                .iter()
                .flat_map(|j| j.inputs.iter().flatten())
                .map(|t| t.payload_len() as u64)
                .sum(),
        },
        RunError::Failed(e) | RunError::Lost(e) => EngineError::Runtime(e),
    }
}

/// Charges the copy joining a batch's rows makes of its jobs' inputs
/// (raw bytes; a handle per element of BYTES): before it is made, for as
/// long as the run holds it. `None` for a batch of one job, whose inputs
/// go through unjoined.
fn charge_join(ctx: &Context, batch: &[Job]) -> Result<Option<Charge>, RunError> {
    if batch.len() < 2 {
        return Ok(None);
    }
    let bytes: u64 = batch
        .iter()
        .flat_map(|j| j.inputs.iter().flatten())
        .map(|t| match t.data() {
            TensorData::Raw(r) => r.len() as u64,
            TensorData::Elements(e) => (e.len() * std::mem::size_of::<bytes::Bytes>()) as u64,
        })
        .sum();
    ctx.memory.charge(bytes).map(Some).map_err(RunError::Memory)
}

/// What a run gives: each job's outputs, each job's sequence state after
/// it (a sequence model's, where it ran), and the times.
type Ran = (Vec<Outputs>, Vec<Option<Vec<Tensor>>>, RunTimes);

/// Runs one batch: its jobs' rows joined, the method's stages, the outputs
/// split back per job. `Err` when the joined run failed (its jobs are then
/// retried alone); the jobs of a method without a batch dimension run one
/// after another, each with its own result. Blocking.
fn run(
    shared: &Shared,
    ctx: &Context,
    replica: &mut Replica,
    batch: &[Job],
) -> Result<Ran, RunError> {
    if let Some(spec) = &shared.sequence {
        return run_sequences(shared, ctx, replica, batch, spec);
    }
    let plan = &shared.methods[batch[0].method];
    let mut runner = Runner::new(&ctx.models, replica);
    runner.deadline = batch.iter().filter_map(|j| j.deadline).min();
    // Making the runtime's values from the tensors is input time, taking
    // the outputs from its values output time (Triton's compute_input and
    // compute_output); the rest of a model's run is infer time.
    let split = |runner: &Runner<'_>, total: Duration| {
        (
            runner.input_time,
            total.saturating_sub(runner.input_time + runner.output_time),
            runner.output_time,
        )
    };
    if !plan.info.batched {
        let t0 = Instant::now();
        let mut each = Vec::with_capacity(batch.len());
        for job in batch {
            runner.deadline = job.deadline;
            runner.infos = vec![job.info.clone()];
            runner.partials = vec![job.partials.clone()];
            each.push(match plan.run(&mut runner, job.inputs.clone(), 1) {
                Ok(out) => Ok(out),
                Err(RunError::Lost(why)) => return Err(RunError::Lost(why)),
                Err(e) => Err(job_error(e, std::slice::from_ref(job))),
            });
        }
        let (input, infer, output) = split(&runner, t0.elapsed());
        let times = RunTimes {
            input,
            infer,
            output,
        };
        let states = vec![None; each.len()];
        return Ok((each, states, times));
    }
    let t0 = Instant::now();
    let rows: usize = batch.iter().map(|j| j.rows).sum();
    let _joined = charge_join(ctx, batch)?;
    // Jobs of one batch have the same inputs present (their signatures).
    let inputs = (0..plan.info.inputs.len())
        .map(|k| {
            let parts: Vec<&Tensor> = batch.iter().filter_map(|j| j.inputs[k].as_ref()).collect();
            (!parts.is_empty()).then(|| rows::join(&parts)).transpose()
        })
        .collect::<Result<Vec<Option<Tensor>>, String>>()?;
    let t1 = Instant::now();
    runner.jobs = batch.iter().map(|j| j.rows).collect();
    runner.infos = batch.iter().map(|j| j.info.clone()).collect();
    runner.partials = batch.iter().map(|j| j.partials.clone()).collect();
    let outputs = plan.run(&mut runner, inputs, rows)?;
    let t2 = Instant::now();
    let (model_input, model_infer, model_output) = split(&runner, t2 - t1);
    let per_job = if batch.len() == 1 {
        vec![Ok(outputs)]
    } else {
        let mut start = 0;
        batch
            .iter()
            .map(|job| {
                let range = start..start + job.rows;
                start = range.end;
                outputs
                    .iter()
                    .map(|o| rows::slice(o, range.start, range.end))
                    .collect::<Result<Vec<Tensor>, String>>()
                    .map(Ok)
            })
            .collect::<Result<Vec<_>, String>>()?
    };
    let times = RunTimes {
        input: (t1 - t0) + model_input,
        infer: model_infer,
        output: t2.elapsed() + model_output,
    };
    let states = vec![None; per_job.len()];
    Ok((per_job, states, times))
}

/// Runs one batch of a sequence model: each job with its sequence's
/// control inputs and state. Under `Direct` each job's row is its slot,
/// rows without a job filled with zeros marked not ready; under `Oldest`
/// the jobs' rows in order. A model without a batch dimension runs each
/// job alone. Blocking.
fn run_sequences(
    shared: &Shared,
    ctx: &Context,
    replica: &mut Replica,
    batch: &[Job],
    spec: &SequenceSpec,
) -> Result<Ran, RunError> {
    let plan = &shared.methods[batch[0].method];
    let batched = plan.info.batched;
    fn flags(job: &Job) -> Option<&SequenceFlags> {
        job.sequence.as_ref().map(|s| &s.flags)
    }
    let keep: Vec<String> = spec.states.iter().map(|s| s.output.clone()).collect();
    let states: Vec<Vec<Tensor>> = {
        let q = lock(&shared.queue);
        batch
            .iter()
            .map(|j| {
                j.sequence
                    .as_ref()
                    .zip(q.sequences.as_ref())
                    .and_then(|(sj, seqs)| seqs.state(sj.serial, sj.flags.start))
                    .unwrap_or_else(|| spec.initial_states(batched))
            })
            .collect()
    };
    let with_states = |extra: &mut Vec<(String, Tensor)>, state: Vec<Tensor>| {
        extra.extend(spec.states.iter().map(|s| s.input.clone()).zip(state));
    };
    let mut runner = Runner::new(&ctx.models, replica);
    let t0 = Instant::now();
    let split = |runner: &Runner<'_>, total: Duration| RunTimes {
        input: runner.input_time,
        infer: total.saturating_sub(runner.input_time + runner.output_time),
        output: runner.output_time,
    };
    if !batched {
        let mut each = Vec::with_capacity(batch.len());
        let mut after = Vec::with_capacity(batch.len());
        for (job, state) in batch.iter().zip(states) {
            runner.deadline = job.deadline;
            runner.infos = vec![job.info.clone()];
            runner.partials = vec![job.partials.clone()];
            let mut extra = spec.control_row(flags(job), false);
            with_states(&mut extra, state);
            match plan.run_with(&mut runner, job.inputs.clone(), 1, extra, &keep) {
                Ok((out, kept)) => {
                    each.push(Ok(out));
                    after.push(Some(kept));
                }
                Err(RunError::Lost(why)) => return Err(RunError::Lost(why)),
                Err(e) => {
                    each.push(Err(job_error(e, std::slice::from_ref(job))));
                    after.push(None);
                }
            }
        }
        let times = split(&runner, t0.elapsed());
        return Ok((each, after, times));
    }
    let direct = matches!(spec.strategy, Strategy::Direct { .. });
    // The job of each row (`None`: a filler row).
    let rows_n = if direct {
        batch
            .iter()
            .filter_map(|j| j.sequence.as_ref().map(|s| s.position + 1))
            .max()
            .unwrap_or(1)
    } else {
        batch.len()
    };
    let mut at: Vec<Option<usize>> = vec![None; rows_n];
    for (k, job) in batch.iter().enumerate() {
        let row = match (&job.sequence, direct) {
            (Some(sj), true) => sj.position,
            _ => k,
        };
        at[row] = Some(k);
    }
    fn join_rows<'a>(
        at: &[Option<usize>],
        row_of: impl Fn(usize) -> Option<&'a Tensor>,
        filler: &'a Tensor,
    ) -> Result<Tensor, String> {
        let parts: Vec<&Tensor> = at
            .iter()
            .map(|a| a.and_then(&row_of).unwrap_or(filler))
            .collect();
        rows::join(&parts)
    }
    let _joined = charge_join(ctx, batch)?;
    let mut inputs = Vec::with_capacity(plan.info.inputs.len());
    for i in 0..plan.info.inputs.len() {
        // Jobs of one batch have the same inputs present (their signatures).
        let Some(first) = batch[0].inputs[i].as_ref() else {
            inputs.push(None);
            continue;
        };
        let filler = super::sequence::zeros(first.dtype(), first.shape());
        inputs.push(Some(join_rows(
            &at,
            |k| batch[k].inputs[i].as_ref(),
            &filler,
        )?));
    }
    let controls: Vec<Vec<(String, Tensor)>> = at
        .iter()
        .map(|a| spec.control_row(a.and_then(|k| flags(&batch[k])), true))
        .collect();
    let mut extra: Vec<(String, Tensor)> = Vec::new();
    for (c, control) in spec.controls.iter().enumerate() {
        let parts: Vec<&Tensor> = controls.iter().map(|row| &row[c].1).collect();
        extra.push((control.input.clone(), rows::join(&parts)?));
    }
    let initial = spec.initial_states(true);
    for (s, state) in spec.states.iter().enumerate() {
        extra.push((
            state.input.clone(),
            join_rows(&at, |k| states.get(k).and_then(|v| v.get(s)), &initial[s])?,
        ));
    }
    runner.deadline = batch.iter().filter_map(|j| j.deadline).min();
    runner.jobs = vec![1; rows_n];
    runner.infos = at
        .iter()
        .map(|a| a.and_then(|k| batch[k].info.clone()))
        .collect();
    runner.partials = at
        .iter()
        .map(|a| a.and_then(|k| batch[k].partials.clone()))
        .collect();
    let t1 = Instant::now();
    let (outputs, kept) = plan.run_with(&mut runner, inputs, rows_n, extra, &keep)?;
    let mut each = Vec::with_capacity(batch.len());
    let mut after = Vec::with_capacity(batch.len());
    for k in 0..batch.len() {
        let row = at
            .iter()
            .position(|a| *a == Some(k))
            .expect("every job has a row");
        let slice = |ts: &[Tensor]| {
            ts.iter()
                .map(|t| rows::slice(t, row, row + 1))
                .collect::<Result<Vec<Tensor>, String>>()
        };
        each.push(Ok(slice(&outputs)?));
        after.push(Some(slice(&kept)?));
    }
    let mut times = split(&runner, t1.elapsed());
    times.input += t1 - t0;
    Ok((each, after, times))
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
