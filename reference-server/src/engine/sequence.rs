//! Sequence batching (Triton's `sequence_batching`): the requests of one
//! sequence, named by a correlation ID, run in order, one at a time, on
//! one slot of one replica; the model learns where a sequence starts and
//! ends from control inputs the engine adds to each row; state the model
//! outputs for a sequence comes back to it as an input on the sequence's
//! next request (implicit state).
//!
//! - **Slots.** Each replica has a number of sequence slots: the batch
//!   size under the `Direct` strategy (a sequence keeps its batch row, the
//!   row of its slot, for its whole life; rows of slots with nothing ready
//!   are filled with zeros marked not ready), the candidate sequences
//!   under `Oldest` (ready requests of different sequences batch together,
//!   oldest first). A sequence takes a free slot at its start, and waits in
//!   the backlog, its requests queued, while none is free.
//! - **Life.** A request whose START flag is set opens its correlation ID;
//!   one without it must continue an open sequence. The request carrying
//!   END closes it: its slot is freed once that request has run, for the
//!   oldest backlogged sequence if there is one. A sequence with nothing
//!   queued or running for longer than its idle time is released, and a
//!   later request for it must start again.
//! - **State.** What the model outputs as a state's output is kept for the
//!   sequence and given as the state's input to its next request; a
//!   request that starts a sequence gets zeros.
//!
//! All of it lives in the queue's lock (`Queue::sequences`): the order of
//! a sequence's requests is the order they were queued in.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::fmt;
use std::time::{Duration, Instant};

use serving_proto::{DataType, Tensor};

/// A sequence's correlation ID: an integer, or a text. `0` and `""` are
/// no ID at all.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum SequenceId {
    /// An integer ID.
    Int(u64),
    /// A text ID.
    Text(String),
}

impl SequenceId {
    /// Whether it names a sequence (neither 0 nor empty).
    pub fn in_sequence(&self) -> bool {
        match self {
            SequenceId::Int(n) => *n != 0,
            SequenceId::Text(s) => !s.is_empty(),
        }
    }
}

impl fmt::Display for SequenceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SequenceId::Int(n) => write!(f, "{n}"),
            SequenceId::Text(s) => write!(f, "{}", serving_proto::text::quote(s)),
        }
    }
}

/// A request's place in a sequence, as the request gives it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SequenceFlags {
    /// The sequence's correlation ID.
    pub id: SequenceId,
    /// The sequence starts with this request.
    pub start: bool,
    /// The sequence ends with this request.
    pub end: bool,
}

/// How a sequence model's sequences share its replicas' batches.
#[derive(Clone, Debug, PartialEq)]
pub enum Strategy {
    /// Each sequence keeps one batch row (slot) of one replica.
    Direct {
        /// How long a batch waits for more slots to be ready, once
        /// `min_utilization` is set.
        max_delay: Duration,
        /// The share of a replica's slots that must be ready for a batch to
        /// run before `max_delay`; 0 runs any ready slot at once.
        min_utilization: f32,
    },
    /// Ready requests of up to `max_candidates` sequences per replica
    /// batch together, oldest first.
    Oldest {
        /// Sequences each replica takes at once; the rest wait in the
        /// backlog.
        max_candidates: usize,
        /// How long the oldest ready request waits for others to join it.
        max_delay: Duration,
        /// Batch sizes run as soon as they are reached.
        preferred: Vec<usize>,
    },
}

/// What a control input tells the model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ControlKind {
    /// The row starts its sequence.
    Start,
    /// The row ends its sequence.
    End,
    /// The row holds a request (not a filler row).
    Ready,
    /// The row's correlation ID.
    CorrId,
}

/// How a control input carries its value.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ControlValue {
    /// A flag as an `INT32`: the false value, then the true one.
    Int32([i32; 2]),
    /// A flag as an `FP32`.
    Fp32([f32; 2]),
    /// A flag as a `BOOL`.
    Bool([bool; 2]),
    /// The correlation ID in this type (`UINT64`, `INT64`, `UINT32`,
    /// `INT32`: an integer ID, truncated to the type; `BYTES`: a text ID).
    CorrId(DataType),
}

/// One control input of a sequence model.
#[derive(Clone, Debug, PartialEq)]
pub struct Control {
    /// The model input it feeds.
    pub input: String,
    /// What it says.
    pub kind: ControlKind,
    /// How.
    pub value: ControlValue,
}

/// One implicit state: a model output kept for the sequence and fed back
/// as a model input on its next request.
#[derive(Clone, Debug, PartialEq)]
pub struct StateSpec {
    /// The model input it is fed back as.
    pub input: String,
    /// The model output it is taken from.
    pub output: String,
    /// Its type.
    pub dtype: DataType,
    /// Its shape (of one row for a batched model); a sequence's first
    /// request gets zeros of it, a `-1` counting as 1.
    pub dims: Vec<i64>,
}

/// A sequence model's sequence batching.
#[derive(Clone, Debug, PartialEq)]
pub struct SequenceSpec {
    /// How sequences share batches.
    pub strategy: Strategy,
    /// How long a sequence with nothing queued or running is kept.
    pub idle: Duration,
    /// The control inputs.
    pub controls: Vec<Control>,
    /// The implicit states.
    pub states: Vec<StateSpec>,
}

/// Triton's default idle time: one second.
pub const DEFAULT_IDLE: Duration = Duration::from_secs(1);

impl SequenceSpec {
    /// Whether `name` is a model input the engine feeds (a control or a
    /// state), not the client.
    pub fn feeds(&self, name: &str) -> bool {
        self.controls.iter().any(|c| c.input == name) || self.states.iter().any(|s| s.input == name)
    }

    /// Sequence slots per replica, for a method batching `max_batch` rows.
    pub fn slots_per_replica(&self, max_batch: usize) -> usize {
        match &self.strategy {
            Strategy::Direct { .. } => max_batch.max(1),
            Strategy::Oldest { max_candidates, .. } => (*max_candidates).max(1),
        }
    }

    /// The control inputs of one row: a request's (`Some(flags)`) or a
    /// filler row's; `batched` puts a batch dimension first.
    pub(crate) fn control_row(
        &self,
        flags: Option<&SequenceFlags>,
        batched: bool,
    ) -> Vec<(String, Tensor)> {
        let shape: &[i64] = if batched { &[1, 1] } else { &[1] };
        self.controls
            .iter()
            .map(|c| {
                let on = match (c.kind, flags) {
                    (ControlKind::Start, Some(f)) => f.start,
                    (ControlKind::End, Some(f)) => f.end,
                    (ControlKind::Ready, Some(_)) => true,
                    _ => false,
                };
                let t = match c.value {
                    ControlValue::Int32(v) => Tensor::from_slice(shape, &[v[usize::from(on)]]),
                    ControlValue::Fp32(v) => Tensor::from_slice(shape, &[v[usize::from(on)]]),
                    ControlValue::Bool(v) => Tensor::from_slice(shape, &[v[usize::from(on)]]),
                    ControlValue::CorrId(dtype) => corr_id(flags.map(|f| &f.id), dtype, shape),
                };
                (c.input.clone(), t.expect("one element of a fixed shape"))
            })
            .collect()
    }

    /// The states a sequence starts with: zeros, one row when `batched`.
    pub(crate) fn initial_states(&self, batched: bool) -> Vec<Tensor> {
        self.states
            .iter()
            .map(|s| {
                let mut shape: Vec<i64> = s.dims.iter().map(|&d| d.max(1)).collect();
                if batched {
                    shape.insert(0, 1);
                }
                zeros(s.dtype, &shape)
            })
            .collect()
    }
}

/// The correlation ID as a control tensor of `dtype`.
fn corr_id(
    id: Option<&SequenceId>,
    dtype: DataType,
    shape: &[i64],
) -> Result<Tensor, serving_proto::tensor::TensorError> {
    let n = match id {
        Some(SequenceId::Int(n)) => *n,
        _ => 0,
    };
    match dtype {
        DataType::Int64 => Tensor::from_slice(shape, &[n as i64]),
        DataType::Uint32 => Tensor::from_slice(shape, &[n as u32]),
        DataType::Int32 => Tensor::from_slice(shape, &[n as i32]),
        DataType::Bytes | DataType::String => {
            let text = match id {
                Some(SequenceId::Text(s)) => s.clone(),
                Some(SequenceId::Int(n)) => n.to_string(),
                None => String::new(),
            };
            Tensor::from_byte_strings(shape, &[text.as_bytes()])
        }
        _ => Tensor::from_slice(shape, &[n]),
    }
}

/// A tensor of zeros (empty elements for a variable-length type).
pub(crate) fn zeros(dtype: DataType, shape: &[i64]) -> Tensor {
    let count = serving_proto::tensor::element_count(shape).unwrap_or(0);
    match dtype.item_size() {
        Some(size) => Tensor::from_raw(
            dtype,
            shape.to_vec(),
            bytes::Bytes::from(vec![0u8; count * size]),
        ),
        None => Tensor::from_byte_strings(shape, &vec![&b""[..]; count]),
    }
    .expect("zeros of a checked shape")
}

/// Why a request cannot join a sequence.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SequenceError {
    /// The request names no sequence (no ID, 0 or "").
    #[error(
        "the request names no sequence: a sequence model needs a non-zero or non-empty correlation ID"
    )]
    NoCorrelationId,
    /// The request continues a sequence that is not open (never started,
    /// ended, or released for being idle).
    #[error("sequence {id} is not open: its first request must set the START flag")]
    NotStarted {
        /// The sequence.
        id: SequenceId,
    },
    /// The request has more than one row.
    #[error("a request to a sequence model has one row; this one has {rows}")]
    Rows {
        /// Its rows.
        rows: usize,
    },
    /// Every slot is taken and the backlog is full: the sequence cannot
    /// start now.
    #[error(
        "{waiting} sequences already wait for a slot (at most {max}): end sequences, or retry the START later"
    )]
    Backlog {
        /// Sequences waiting.
        waiting: usize,
        /// The most that may wait.
        max: usize,
    },
}

/// Sequences that may wait for a slot, per slot of the model (at least
/// [`MIN_BACKLOG`]): a sequence whose client went away holds its entry
/// until it is idle past `max_sequence_idle_microseconds`, so without a
/// bound the backlog would grow with the rate of STARTs.
const BACKLOG_PER_SLOT: usize = 64;
/// Sequences that may wait for a slot at least.
const MIN_BACKLOG: usize = 1024;

/// Where a sequence runs: a slot of a replica. Ordered by slot first, so
/// that new sequences spread over the replicas before they fill one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Slot {
    /// The slot within its replica: under `Direct`, the batch row.
    pub(crate) position: usize,
    /// The replica.
    pub(crate) replica: usize,
}

/// A queued job's sequence.
#[derive(Clone, Debug)]
pub(crate) struct SequenceJob {
    /// What its request said.
    pub(crate) flags: SequenceFlags,
    /// The sequence it belongs to (a serial number: one correlation ID
    /// started twice is two sequences).
    pub(crate) serial: u64,
    /// Its slot's position on its replica when it was taken to run: under
    /// `Direct`, its batch row.
    pub(crate) position: usize,
}

#[derive(Debug)]
struct Entry {
    id: SequenceId,
    slot: Option<Slot>,
    /// The state its next request gets; `None`: zeros.
    state: Option<Vec<Tensor>>,
    last: Instant,
    queued: usize,
    running: bool,
    /// Its END request has been queued.
    ended: bool,
}

/// The sequences of one servable version: which are open, where each
/// runs, their states, and the backlog.
#[derive(Debug)]
pub(crate) struct Sequences {
    pub(crate) spec: SequenceSpec,
    /// Slots per replica.
    pub(crate) slots: usize,
    open: HashMap<SequenceId, u64>,
    entries: HashMap<u64, Entry>,
    free: BTreeSet<Slot>,
    backlog: VecDeque<u64>,
    /// The most sequences the backlog holds.
    max_backlog: usize,
    next_serial: u64,
}

impl Sequences {
    pub(crate) fn new(spec: SequenceSpec, replicas: usize, max_batch: usize) -> Sequences {
        let slots = spec.slots_per_replica(max_batch);
        let free: BTreeSet<Slot> = (0..replicas)
            .flat_map(|replica| (0..slots).map(move |position| Slot { position, replica }))
            .collect();
        Sequences {
            spec,
            slots,
            open: HashMap::new(),
            entries: HashMap::new(),
            max_backlog: (free.len() * BACKLOG_PER_SLOT).max(MIN_BACKLOG),
            free,
            backlog: VecDeque::new(),
            next_serial: 1,
        }
    }

    /// Takes a request of `rows` rows into its sequence (about to be
    /// queued); returns the sequence's serial number.
    pub(crate) fn admit(
        &mut self,
        flags: &SequenceFlags,
        rows: usize,
        now: Instant,
    ) -> Result<u64, SequenceError> {
        if !flags.id.in_sequence() {
            return Err(SequenceError::NoCorrelationId);
        }
        if rows > 1 {
            return Err(SequenceError::Rows { rows });
        }
        self.reap(now);
        let serial = match self.open.get(&flags.id) {
            Some(&serial) => {
                if flags.start {
                    // As Triton: the sequence that did not end goes on in
                    // its slot, and starts anew with this request.
                    tracing::warn!(sequence = %flags.id, "a sequence started again before it ended; it goes on as a new sequence in its slot");
                }
                serial
            }
            None if !flags.start => {
                return Err(SequenceError::NotStarted {
                    id: flags.id.clone(),
                });
            }
            None => {
                if self.free.is_empty() && self.backlog.len() >= self.max_backlog {
                    return Err(SequenceError::Backlog {
                        waiting: self.backlog.len(),
                        max: self.max_backlog,
                    });
                }
                let serial = self.next_serial;
                self.next_serial += 1;
                let slot = self.free.pop_first();
                if slot.is_none() {
                    self.backlog.push_back(serial);
                }
                self.entries.insert(
                    serial,
                    Entry {
                        id: flags.id.clone(),
                        slot,
                        state: None,
                        last: now,
                        queued: 0,
                        running: false,
                        ended: false,
                    },
                );
                self.open.insert(flags.id.clone(), serial);
                serial
            }
        };
        let entry = self.entries.get_mut(&serial).expect("open");
        entry.queued += 1;
        entry.last = now;
        if flags.end {
            entry.ended = true;
            self.open.remove(&flags.id);
        }
        Ok(serial)
    }

    /// Where sequence `serial` runs, and whether it is free to run its
    /// next request now.
    pub(crate) fn runnable(&self, serial: u64) -> Option<Slot> {
        let e = self.entries.get(&serial)?;
        if e.running { None } else { e.slot }
    }

    /// A request of `serial` was taken to run.
    pub(crate) fn begin(&mut self, serial: u64) {
        if let Some(e) = self.entries.get_mut(&serial) {
            e.queued = e.queued.saturating_sub(1);
            e.running = true;
        }
    }

    /// A request of `serial` taken to run goes back to the queue (its
    /// batch failed, or its replica did).
    pub(crate) fn requeue(&mut self, serial: u64) {
        if let Some(e) = self.entries.get_mut(&serial) {
            e.queued += 1;
            e.running = false;
        }
    }

    /// A queued request of `serial` left the queue without running (its
    /// client went away, its deadline passed).
    pub(crate) fn dequeued(&mut self, serial: u64, now: Instant) {
        if let Some(e) = self.entries.get_mut(&serial) {
            e.queued = e.queued.saturating_sub(1);
            e.last = now;
        }
        self.release_if_done(serial);
    }

    /// A request of `serial` ran (or was answered without running); its
    /// state after it, when it ran.
    pub(crate) fn finish(&mut self, serial: u64, state: Option<Vec<Tensor>>, now: Instant) {
        if let Some(e) = self.entries.get_mut(&serial) {
            e.running = false;
            e.last = now;
            if state.is_some() {
                e.state = state;
            }
        }
        self.release_if_done(serial);
    }

    /// The state the next request of `serial` gets (`None`: the initial).
    pub(crate) fn state(&self, serial: u64, start: bool) -> Option<Vec<Tensor>> {
        if start {
            return None;
        }
        self.entries.get(&serial)?.state.clone()
    }

    fn release_if_done(&mut self, serial: u64) {
        if self
            .entries
            .get(&serial)
            .is_some_and(|e| e.ended && e.queued == 0 && !e.running)
        {
            self.release(serial);
        }
    }

    /// Frees sequence `serial`'s slot for the oldest backlogged sequence,
    /// or for the next to start.
    fn release(&mut self, serial: u64) {
        let Some(e) = self.entries.remove(&serial) else {
            return;
        };
        if self.open.get(&e.id) == Some(&serial) {
            self.open.remove(&e.id);
        }
        self.backlog.retain(|&s| s != serial);
        let Some(slot) = e.slot else { return };
        match self.backlog.pop_front() {
            Some(next) => {
                if let Some(n) = self.entries.get_mut(&next) {
                    n.slot = Some(slot);
                }
            }
            None => {
                self.free.insert(slot);
            }
        }
    }

    /// Releases the sequences idle for longer than their idle time;
    /// returns when the next one would be.
    pub(crate) fn reap(&mut self, now: Instant) -> Option<Instant> {
        let idle = self.spec.idle;
        let expired: Vec<u64> = self
            .entries
            .iter()
            .filter(|(_, e)| e.queued == 0 && !e.running && now.duration_since(e.last) >= idle)
            .map(|(&s, _)| s)
            .collect();
        for serial in expired {
            tracing::debug!(serial, "sequence idle past its limit; released");
            self.release(serial);
        }
        self.entries
            .values()
            .filter(|e| e.queued == 0 && !e.running)
            .map(|e| e.last + idle)
            .min()
    }

    /// Open sequences.
    #[cfg(test)]
    pub(crate) fn open(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(strategy: Strategy) -> SequenceSpec {
        SequenceSpec {
            strategy,
            idle: Duration::from_millis(50),
            controls: Vec::new(),
            states: Vec::new(),
        }
    }

    fn flags(id: u64, start: bool, end: bool) -> SequenceFlags {
        SequenceFlags {
            id: SequenceId::Int(id),
            start,
            end,
        }
    }

    #[test]
    fn sequences_take_slots_wait_in_the_backlog_and_free_them_at_end() {
        let direct = Strategy::Direct {
            max_delay: Duration::ZERO,
            min_utilization: 0.0,
        };
        // One replica, one slot.
        let mut s = Sequences::new(spec(direct), 1, 1);
        let now = Instant::now();
        assert_eq!(
            s.admit(&flags(0, true, false), 1, now),
            Err(SequenceError::NoCorrelationId)
        );
        assert_eq!(
            s.admit(&flags(7, false, false), 1, now),
            Err(SequenceError::NotStarted {
                id: SequenceId::Int(7)
            })
        );
        let a = s.admit(&flags(1, true, false), 1, now).unwrap();
        let b = s.admit(&flags(2, true, true), 1, now).unwrap();
        assert_eq!(s.runnable(a).map(|s| s.position), Some(0));
        assert_eq!(s.runnable(b), None, "the second waits in the backlog");
        s.begin(a);
        assert_eq!(s.runnable(a), None, "one request of a sequence at a time");
        s.finish(a, None, now);
        // Its END: the slot goes to the backlogged sequence once it ran.
        let a2 = s.admit(&flags(1, false, true), 1, now).unwrap();
        assert_eq!(a2, a);
        s.begin(a);
        s.finish(a, None, now);
        assert_eq!(s.runnable(b).map(|s| s.position), Some(0));
        assert_eq!(
            s.admit(&flags(1, false, false), 1, now),
            Err(SequenceError::NotStarted {
                id: SequenceId::Int(1)
            }),
            "an ended sequence is closed"
        );
        s.begin(b);
        s.finish(b, None, now);
        assert_eq!(s.open(), 0);
        assert_eq!(
            s.admit(&flags(3, true, false), 2, now),
            Err(SequenceError::Rows { rows: 2 })
        );
    }

    #[test]
    fn the_backlog_is_bounded_and_a_start_past_it_is_refused_until_a_slot_frees() {
        let direct = Strategy::Direct {
            max_delay: Duration::ZERO,
            min_utilization: 0.0,
        };
        // One replica, one slot: the backlog holds MIN_BACKLOG.
        let mut s = Sequences::new(spec(direct.clone()), 1, 1);
        let now = Instant::now();
        let first = s.admit(&flags(1, true, false), 1, now).unwrap();
        for id in 0..MIN_BACKLOG as u64 {
            s.admit(&flags(100 + id, true, false), 1, now).unwrap();
        }
        assert_eq!(
            s.admit(&flags(99, true, false), 1, now),
            Err(SequenceError::Backlog {
                waiting: MIN_BACKLOG,
                max: MIN_BACKLOG
            })
        );
        // An open sequence goes on; a freed slot makes room again.
        s.admit(&flags(1, false, true), 1, now).unwrap();
        s.begin(first);
        s.finish(first, None, now);
        s.begin(first);
        s.finish(first, None, now);
        s.admit(&flags(99, true, false), 1, now).unwrap();
        assert_eq!(s.max_backlog, MIN_BACKLOG);
        let many = Sequences::new(spec(direct), 4, 8);
        assert_eq!(
            many.max_backlog,
            (4 * 8 * BACKLOG_PER_SLOT).max(MIN_BACKLOG)
        );
    }

    #[test]
    fn an_idle_sequence_is_released() {
        let oldest = Strategy::Oldest {
            max_candidates: 2,
            max_delay: Duration::ZERO,
            preferred: Vec::new(),
        };
        let mut s = Sequences::new(spec(oldest), 1, 4);
        let t0 = Instant::now();
        let a = s.admit(&flags(1, true, false), 1, t0).unwrap();
        s.begin(a);
        s.finish(a, Some(vec![Tensor::scalar(1.0f32)]), t0);
        assert_eq!(s.state(a, false).map(|v| v.len()), Some(1));
        assert_eq!(s.state(a, true), None, "a start gets the initial state");
        assert_eq!(s.reap(t0), Some(t0 + Duration::from_millis(50)));
        s.reap(t0 + Duration::from_millis(60));
        assert_eq!(s.open(), 0);
        assert!(s.admit(&flags(1, false, false), 1, t0).is_err());
    }

    #[test]
    fn control_rows_say_start_end_ready_and_the_id() {
        let mut sp = spec(Strategy::Direct {
            max_delay: Duration::ZERO,
            min_utilization: 0.0,
        });
        sp.controls = vec![
            Control {
                input: "S".into(),
                kind: ControlKind::Start,
                value: ControlValue::Fp32([0.0, 1.0]),
            },
            Control {
                input: "R".into(),
                kind: ControlKind::Ready,
                value: ControlValue::Int32([0, 1]),
            },
            Control {
                input: "C".into(),
                kind: ControlKind::CorrId,
                value: ControlValue::CorrId(DataType::Uint64),
            },
        ];
        let row = sp.control_row(Some(&flags(9, true, false)), true);
        assert_eq!(row[0].1.to_vec::<f32>().unwrap(), [1.0]);
        assert_eq!(row[0].1.shape(), [1, 1]);
        assert_eq!(row[1].1.to_vec::<i32>().unwrap(), [1]);
        assert_eq!(row[2].1.to_vec::<u64>().unwrap(), [9]);
        let filler = sp.control_row(None, false);
        assert_eq!(filler[1].1.to_vec::<i32>().unwrap(), [0]);
        assert_eq!(filler[2].1.shape(), [1]);
    }
}
