//! The replicas' side of a scheduler: each replica's worker thread takes
//! batches from the queue, runs them (see [`mod@super::run`]), restarts its
//! replica when it fails, and answers the jobs.

use super::*;

/// Takes the next batch (see [`crate::engine::queue`]) for replica `index`;
/// `None` when stopping or when the replica has failed (an inline run
/// panicked). Jobs whose client went away or whose deadline passed are
/// answered here instead of run.
pub(super) fn take(shared: &Shared, index: usize) -> Option<Vec<Job>> {
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

pub(super) fn worker(shared: &Shared, ctx: &Context, index: usize, device: Device) {
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
pub(super) fn execute(
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
                super::super::faults::INJECTED
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
pub(super) fn elements(inputs: &[Option<Tensor>]) -> u64 {
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
pub(super) struct RunCost {
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
    pub(super) fn record(&self, took: Duration, elements: u64) {
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
    pub(super) fn estimate(&self, elements: u64) -> Option<u64> {
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
pub(super) fn answer(shared: &Shared, job: Job, result: Result<Vec<Tensor>, EngineError>) {
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
pub(super) fn retry(shared: &Shared, batch: Vec<Job>, error: impl Fn(&Job) -> EngineError) {
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
pub(super) fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic".into())
}

/// With no replica alive, every queued job is answered at once.
pub(super) fn fail_all(shared: &Shared) {
    let drained = lock(&shared.queue).drain();
    for job in drained {
        answer(shared, job, Err(EngineError::Unavailable));
    }
}
