//! The queue of one servable version: jobs by priority level (FIFO within
//! a level; jobs whose queue timeout passed and that are delayed rather
//! than refused come after a level's jobs on time), and the rule that forms
//! a batch from it.
//!
//! A free replica looks at the *head*, the oldest job of the highest
//! non-empty level. A job that must run alone (a retry) runs by itself.
//! Otherwise the batch is the head and the queued jobs of the same method
//! whose rows are joinable with it (same types and row shapes), in priority
//! order, as long as their rows fit the method's batch size. (For a method
//! without a batch dimension every job counts as one row and is run on its
//! own, one after another; its batch size is 1 unless configured.) It is run when it is full, when it reaches
//! a preferred batch size, or when the head has waited the batching delay;
//! until then every job stays queued, so that one whose client goes away is
//! removed and never runs.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::error::EngineError;
use super::method::{MethodPlan, Signature};
use super::sequence::{SequenceJob, Sequences, Strategy};

/// A request's place in the queue limit, given back when its last job is
/// answered or dropped.
#[derive(Debug)]
pub(crate) struct Admission(pub(crate) Arc<AtomicUsize>);

impl Drop for Admission {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// One queued job.
#[derive(Debug)]
pub(crate) struct Job {
    pub(crate) id: u64,
    pub(crate) method: usize,
    pub(crate) inputs: Vec<Option<serving_proto::Tensor>>,
    pub(crate) rows: usize,
    pub(crate) signature: Signature,
    pub(crate) deadline: Option<Instant>,
    /// Priority level index: 0 is the highest.
    pub(crate) level: usize,
    pub(crate) enqueued: Instant,
    /// Times it was put back after a failed run.
    pub(crate) attempts: u8,
    /// Run by itself (a retry out of a failed batch).
    pub(crate) alone: bool,
    /// What the client said about its request.
    pub(crate) info: Option<Arc<super::scheduler::RequestInfo>>,
    /// Where its responses go, when its model answers several times.
    pub(crate) partials: Option<super::scheduler::PartialSender>,
    /// Its sequence, for a sequence model.
    pub(crate) sequence: Option<SequenceJob>,
    /// Where its times go (a traced request's).
    pub(crate) timing: Option<Arc<super::scheduler::JobTiming>>,
    pub(crate) reply: oneshot::Sender<Result<Vec<serving_proto::Tensor>, EngineError>>,
    /// Held until the job is answered: the request's place in the limit.
    pub(crate) _admission: Arc<Admission>,
}

/// Jobs by level, each level in two lanes: jobs on time, then jobs whose
/// queue timeout passed and were delayed (Triton's `timeout_action:
/// DELAY`). Lanes are taken in order: level 1 on time, level 1 delayed,
/// level 2 on time, ...
#[derive(Debug)]
pub(crate) struct Queue {
    levels: Vec<VecDeque<Job>>,
    /// A sequence model's sequences (`engine::sequence`): its jobs are
    /// taken by the rules of sequence batching instead.
    pub(crate) sequences: Option<Sequences>,
}

/// The lane of jobs on time at level index `level`.
fn on_time(level: usize) -> usize {
    2 * level
}

/// What a free replica should do next.
#[derive(Debug)]
pub(crate) enum Next {
    /// Run these jobs as one batch.
    Run(Vec<Job>),
    /// Nothing to run before this instant (or a new job).
    WaitUntil(Instant),
    /// The queue is empty.
    Wait,
}

/// Batching rules of one servable version.
#[derive(Clone, Debug)]
pub(crate) struct Rules {
    /// Whether rows of different jobs are joined.
    pub(crate) join: bool,
    pub(crate) max_delay: Duration,
    pub(crate) preferred: Vec<usize>,
}

impl Queue {
    pub(crate) fn new(levels: usize) -> Queue {
        Queue {
            levels: (0..2 * levels.max(1)).map(|_| VecDeque::new()).collect(),
            sequences: None,
        }
    }

    /// The on-time lane of a job's level.
    fn lane(&self, job: &Job) -> usize {
        on_time(job.level.min(self.levels.len() / 2 - 1))
    }

    pub(crate) fn push(&mut self, job: Job) {
        let lane = self.lane(&job);
        self.levels[lane].push_back(job);
    }

    /// Puts a job back at the front of its level (a retry).
    pub(crate) fn push_front(&mut self, job: Job) {
        if let (Some(seqs), Some(sj)) = (self.sequences.as_mut(), &job.sequence) {
            seqs.requeue(sj.serial);
        }
        let lane = self.lane(&job);
        self.levels[lane].push_front(job);
    }

    /// Jobs queued at level index `level`, on time or delayed.
    pub(crate) fn queued_at(&self, level: usize) -> usize {
        let lane = on_time(level.min(self.levels.len() / 2 - 1));
        self.levels[lane].len() + self.levels[lane + 1].len()
    }

    /// Moves a queued job whose queue timeout passed behind the jobs on
    /// time of its level (and of the levels above, which come first
    /// anyway); `false` when it is no longer queued.
    pub(crate) fn delay(&mut self, id: u64) -> bool {
        for lane in (0..self.levels.len()).step_by(2) {
            if let Some(i) = self.levels[lane].iter().position(|j| j.id == id) {
                let job = self.levels[lane].remove(i).expect("found");
                self.levels[lane + 1].push_back(job);
                return true;
            }
            if self.levels[lane + 1].iter().any(|j| j.id == id) {
                return true;
            }
        }
        false
    }

    /// Takes a queued job out by id.
    pub(crate) fn remove(&mut self, id: u64) -> Option<Job> {
        for level in &mut self.levels {
            if let Some(i) = level.iter().position(|j| j.id == id) {
                let job = level.remove(i)?;
                if let (Some(seqs), Some(sj)) = (self.sequences.as_mut(), &job.sequence) {
                    seqs.dequeued(sj.serial, Instant::now());
                }
                return Some(job);
            }
        }
        None
    }

    /// Every queued job (the last replica died).
    pub(crate) fn drain(&mut self) -> Vec<Job> {
        let jobs: Vec<Job> = self.levels.iter_mut().flat_map(|l| l.drain(..)).collect();
        if let Some(seqs) = self.sequences.as_mut() {
            let now = Instant::now();
            for sj in jobs.iter().filter_map(|j| j.sequence.as_ref()) {
                seqs.dequeued(sj.serial, now);
            }
        }
        jobs
    }

    /// The next batch for replica `replica`, by the rules above (or by
    /// those of sequence batching).
    pub(crate) fn next(
        &mut self,
        methods: &[MethodPlan],
        rules: &Rules,
        now: Instant,
        flush: bool,
        replica: usize,
    ) -> Next {
        if self.sequences.is_some() {
            return self.next_in_sequences(methods, now, flush, replica);
        }
        let Some(head) = self.levels.iter().find_map(|l| l.front()) else {
            return Next::Wait;
        };
        let plan = &methods[head.method];
        if head.alone || plan.info.max_batch_size == 1 || !rules.join {
            let level = self
                .levels
                .iter()
                .position(|l| !l.is_empty())
                .expect("a head");
            return Next::Run(self.levels[level].pop_front().into_iter().collect());
        }
        let max = plan.info.max_batch_size;
        let (method, signature, waited_until) = (
            head.method,
            head.signature.clone(),
            head.enqueued + rules.max_delay,
        );
        // (level, index) of the jobs that would form the batch.
        let mut chosen: Vec<(usize, usize)> = Vec::new();
        let mut rows = 0;
        'levels: for (l, level) in self.levels.iter().enumerate() {
            for (i, job) in level.iter().enumerate() {
                if rows == max {
                    break 'levels;
                }
                let joinable = !plan.info.batched || job.signature == signature;
                if job.method == method && !job.alone && joinable && rows + job.rows <= max {
                    rows += job.rows;
                    chosen.push((l, i));
                }
            }
        }
        let mut take = chosen.len();
        let ready = if rows == max || flush || now >= waited_until {
            true
        } else if let Some(&p) = rules.preferred.iter().filter(|&&p| p <= rows).max() {
            // Run the largest preferred size the queue can make now.
            let mut sum = 0;
            take = chosen
                .iter()
                .take_while(|&&(l, i)| {
                    let r = self.levels[l][i].rows;
                    let fits = sum + r <= p;
                    if fits {
                        sum += r;
                    }
                    fits
                })
                .count()
                .max(1);
            true
        } else {
            false
        };
        if !ready {
            return Next::WaitUntil(waited_until);
        }
        chosen.truncate(take);
        // Remove from the back so that earlier indices stay valid.
        let mut jobs: Vec<Job> = Vec::with_capacity(chosen.len());
        for &(l, i) in chosen.iter().rev() {
            jobs.extend(self.levels[l].remove(i));
        }
        jobs.reverse();
        Next::Run(jobs)
    }

    /// The next batch of a sequence model for replica `replica`: the
    /// oldest ready request of each sequence whose slot is on it (one per
    /// sequence, the sequence's requests in order), under `Direct` ordered
    /// by slot (each job's row is its slot), under `Oldest` oldest first
    /// up to the batch size.
    fn next_in_sequences(
        &mut self,
        methods: &[MethodPlan],
        now: Instant,
        flush: bool,
        replica: usize,
    ) -> Next {
        let Queue { levels, sequences } = self;
        let seqs = sequences.as_mut().expect("a sequence model");
        let next_idle = seqs.reap(now);
        let max_batch = methods.first().map_or(1, |m| m.info.max_batch_size).max(1);
        let (max, delay) = match &seqs.spec.strategy {
            Strategy::Direct { max_delay, .. } => (seqs.slots, *max_delay),
            Strategy::Oldest { max_delay, .. } => (max_batch, *max_delay),
        };
        let mut seen = std::collections::HashSet::new();
        // (lane, index, slot position, enqueued)
        let mut chosen: Vec<(usize, usize, usize, Instant)> = Vec::new();
        let mut waiting = false;
        'lanes: for (l, lane) in levels.iter().enumerate() {
            for (i, job) in lane.iter().enumerate() {
                let Some(sj) = &job.sequence else { continue };
                // A sequence's later requests wait for its first.
                if !seen.insert(sj.serial) {
                    continue;
                }
                let slot = match seqs.runnable(sj.serial) {
                    Some(slot) if slot.replica == replica => slot,
                    _ => {
                        waiting = true;
                        continue;
                    }
                };
                if job.alone {
                    // A retry out of a failed batch runs by itself.
                    chosen = vec![(l, i, slot.position, job.enqueued)];
                    break 'lanes;
                }
                chosen.push((l, i, slot.position, job.enqueued));
                if chosen.len() == max {
                    break 'lanes;
                }
            }
        }
        let Some(oldest) = chosen.iter().map(|c| c.3).min() else {
            // Requests wait for a slot (or their sequence's running
            // request): a slot frees when a sequence ends, or idles out.
            return match (waiting, next_idle) {
                (true, Some(t)) => Next::WaitUntil(t),
                _ => Next::Wait,
            };
        };
        let mut take = chosen.len();
        let ready = match &seqs.spec.strategy {
            Strategy::Direct {
                min_utilization, ..
            } => {
                *min_utilization <= 0.0
                    || chosen.len() as f32 >= *min_utilization * seqs.slots as f32
                    || flush
                    || now >= oldest + delay
            }
            Strategy::Oldest { preferred, .. } => {
                if chosen.len() == max || flush || now >= oldest + delay {
                    true
                } else if let Some(&p) = preferred.iter().filter(|&&p| p <= chosen.len()).max() {
                    take = p.max(1);
                    true
                } else {
                    false
                }
            }
        };
        if !ready {
            return Next::WaitUntil(oldest + delay);
        }
        chosen.truncate(take);
        let mut order: Vec<(usize, usize, usize)> =
            chosen.iter().map(|&(l, i, p, _)| (l, i, p)).collect();
        // Remove from the back so that earlier indices stay valid.
        order.sort_by_key(|&(l, i, _)| std::cmp::Reverse((l, i)));
        let mut jobs: Vec<Job> = Vec::with_capacity(order.len());
        for &(l, i, position) in &order {
            if let Some(mut job) = levels[l].remove(i) {
                if let Some(sj) = job.sequence.as_mut() {
                    seqs.begin(sj.serial);
                    sj.position = position;
                }
                jobs.push(job);
            }
        }
        match &seqs.spec.strategy {
            Strategy::Direct { .. } => {
                jobs.sort_by_key(|j| j.sequence.as_ref().map_or(0, |s| s.position))
            }
            Strategy::Oldest { .. } => jobs.sort_by_key(|j| j.enqueued),
        }
        Next::Run(jobs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(id: u64, level: usize) -> Job {
        let (reply, _) = oneshot::channel();
        Job {
            id,
            method: 0,
            inputs: Vec::new(),
            rows: 1,
            signature: Vec::new(),
            deadline: None,
            level,
            enqueued: Instant::now(),
            attempts: 0,
            alone: true,
            info: None,
            partials: None,
            sequence: None,
            timing: None,
            reply,
            _admission: Arc::new(Admission(Arc::new(AtomicUsize::new(1)))),
        }
    }

    fn order(q: &Queue) -> Vec<u64> {
        q.levels.iter().flatten().map(|j| j.id).collect()
    }

    #[test]
    fn a_delayed_job_waits_behind_its_level_on_time_and_before_lower_levels() {
        let mut q = Queue::new(2);
        for (id, level) in [(1, 0), (2, 0), (3, 1)] {
            q.push(job(id, level));
        }
        assert!(q.delay(1));
        assert_eq!(order(&q), [2, 1, 3]);
        // Jobs that come later, on time, still go first.
        q.push(job(4, 0));
        assert_eq!(order(&q), [2, 4, 1, 3]);
        assert_eq!((q.queued_at(0), q.queued_at(1)), (3, 1));
        // Delayed twice, or gone: nothing moves.
        assert!(q.delay(1));
        assert!(!q.delay(99));
        assert_eq!(order(&q), [2, 4, 1, 3]);
        assert!(q.remove(1).is_some());
        assert!(!q.delay(1));
        assert_eq!(q.drain().len(), 3);
    }
}
