//! What a client measures of its own inference calls, as Triton's client
//! libraries do (`InferStat`): how many completed, and how long they took
//! in all, encoding their requests and decoding their replies. A load
//! generator reads the counters before and after a window; the time that is
//! neither is the network and the server (perf_analyzer's "Client Send",
//! "Client Recv" and "Network+Server Send/Recv").

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Cumulative counters of a client's completed Open Inference `infer`
/// calls (every transport, placed or not; streams not included), shared by
/// all clones of the client. A failed call is not counted.
///
/// ```no_run
/// # async fn demo(client: serving_client::Client) -> Result<(), serving_client::Error> {
/// let before = client.infer_stats();
/// // ... requests ...
/// let window = client.infer_stats().since(&before);
/// if let Some(send) = window.mean_send() {
///     println!("{} requests, encoding {send:?} each", window.completed_requests);
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct InferStats {
    /// Calls answered with their outputs.
    pub completed_requests: u64,
    /// Nanoseconds from each call's start to its response decoded (a
    /// retried call's earlier attempts and pauses included).
    pub total_request_ns: u64,
    /// Nanoseconds turning requests into their wire form: the message's
    /// frames on gRPC, the body on REST (compression, done as the bytes
    /// are sent, not included); a retried call's last attempt only.
    pub send_ns: u64,
    /// Nanoseconds turning replies from their wire form into responses
    /// (decompression included); a retried call's last attempt only.
    pub receive_ns: u64,
}

impl InferStats {
    /// The counts since `earlier` (an earlier reading of the same client).
    pub fn since(&self, earlier: &InferStats) -> InferStats {
        InferStats {
            completed_requests: self
                .completed_requests
                .saturating_sub(earlier.completed_requests),
            total_request_ns: self
                .total_request_ns
                .saturating_sub(earlier.total_request_ns),
            send_ns: self.send_ns.saturating_sub(earlier.send_ns),
            receive_ns: self.receive_ns.saturating_sub(earlier.receive_ns),
        }
    }

    fn mean(&self, ns: u64) -> Option<Duration> {
        (self.completed_requests > 0).then(|| Duration::from_nanos(ns / self.completed_requests))
    }

    /// Mean time per completed call; `None` before the first.
    pub fn mean_total(&self) -> Option<Duration> {
        self.mean(self.total_request_ns)
    }

    /// Mean encoding time per completed call.
    pub fn mean_send(&self) -> Option<Duration> {
        self.mean(self.send_ns)
    }

    /// Mean decoding time per completed call.
    pub fn mean_receive(&self) -> Option<Duration> {
        self.mean(self.receive_ns)
    }
}

fn nanos(d: Duration) -> u64 {
    d.as_nanos().min(u64::MAX as u128) as u64
}

/// The client's counters.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    completed: AtomicU64,
    total: AtomicU64,
    send: AtomicU64,
    receive: AtomicU64,
}

impl Counters {
    pub(crate) fn get(&self) -> InferStats {
        // First, and paired with the Release in `complete`: every call
        // counted here has its times in the sums read after.
        let completed_requests = self.completed.load(Ordering::Acquire);
        InferStats {
            completed_requests,
            total_request_ns: self.total.load(Ordering::Relaxed),
            send_ns: self.send.load(Ordering::Relaxed),
            receive_ns: self.receive.load(Ordering::Relaxed),
        }
    }

    /// Counts one completed call, its last attempt's times in `timing`.
    pub(crate) fn complete(&self, took: Duration, timing: &CallTiming) {
        self.total.fetch_add(nanos(took), Ordering::Relaxed);
        self.send
            .fetch_add(timing.send.load(Ordering::Relaxed), Ordering::Relaxed);
        self.receive
            .fetch_add(timing.receive.load(Ordering::Relaxed), Ordering::Relaxed);
        // Last, so that a reader never sees a call counted without its times.
        self.completed.fetch_add(1, Ordering::Release);
    }
}

/// The encoding and decoding times of one call's current attempt.
#[derive(Debug, Default)]
pub(crate) struct CallTiming {
    send: AtomicU64,
    receive: AtomicU64,
}

impl CallTiming {
    /// A new attempt: what an earlier one measured no longer counts.
    pub(crate) fn restart(&self) {
        self.send.store(0, Ordering::Relaxed);
        self.receive.store(0, Ordering::Relaxed);
    }

    pub(crate) fn sent(&self, took: Duration) {
        self.send.fetch_add(nanos(took), Ordering::Relaxed);
    }

    pub(crate) fn received(&self, took: Duration) {
        self.receive.fetch_add(nanos(took), Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_is_the_difference_and_means_are_per_completed_call() {
        let counters = Counters::default();
        let before = counters.get();
        assert_eq!(before.since(&before).mean_send(), None);
        let timing = CallTiming::default();
        for _ in 0..4 {
            timing.restart();
            timing.sent(Duration::from_micros(3));
            timing.received(Duration::from_micros(1));
            timing.received(Duration::from_micros(1));
            counters.complete(Duration::from_micros(100), &timing);
        }
        let w = counters.get().since(&before);
        assert_eq!(w.completed_requests, 4);
        assert_eq!(w.mean_send(), Some(Duration::from_micros(3)));
        assert_eq!(w.mean_receive(), Some(Duration::from_micros(2)));
        assert_eq!(w.mean_total(), Some(Duration::from_micros(100)));
    }
}
