//! Test hooks on a servable version's replicas, inert unless the server was
//! started with fault injection (`--enable-fault-injection`, never in
//! production): make a replica panic, block its restarts, or hold the
//! batches replicas take so that a test can fill the queue behind them.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};

/// How an injected failure's panic message starts.
pub const INJECTED: &str = "fault injection:";

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Test hooks, inert unless the server was started with fault injection.
#[derive(Debug, Default)]
pub struct Faults {
    enabled: bool,
    kill_next: Vec<AtomicBool>,
    block_restart: AtomicBool,
    /// Whether replicas hold each batch they take before running it, and
    /// how many held batches may go on ([`Faults::step`]).
    hold: Mutex<(bool, usize)>,
    released: Condvar,
    /// Batches held now.
    held: AtomicUsize,
}

impl Faults {
    pub(crate) fn new(enabled: bool, replicas: usize) -> Faults {
        Faults {
            enabled,
            kill_next: (0..replicas).map(|_| AtomicBool::new(false)).collect(),
            ..Faults::default()
        }
    }

    /// Whether a hook waits for a replica's next batch: replicas hold the
    /// batches they take ([`Faults::hold`]) or one is to fail at its next
    /// run ([`Faults::kill`]). Then no job runs on its caller's thread,
    /// which would take the first free replica, not the one the test means.
    pub(crate) fn engaged(&self) -> bool {
        self.enabled
            && (lock(&self.hold).0 || self.kill_next.iter().any(|k| k.load(Ordering::SeqCst)))
    }

    /// Whether replica `index` is to fail now (and no longer after).
    pub(crate) fn take_kill(&self, index: usize) -> bool {
        self.enabled
            && self
                .kill_next
                .get(index)
                .is_some_and(|f| f.swap(false, Ordering::SeqCst))
    }

    pub(crate) fn restarts_blocked(&self) -> bool {
        self.block_restart.load(Ordering::SeqCst)
    }

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

    /// Makes replicas hold every batch they take, without running it,
    /// until called again with `false` (so that a test can fill the queue
    /// behind a batch). Returns false when fault injection is off.
    pub fn hold(&self, hold: bool) -> bool {
        if self.enabled {
            lock(&self.hold).0 = hold;
            self.released.notify_all();
        }
        self.enabled
    }

    /// Lets one held batch run; the next ones are held again.
    pub fn step(&self) -> bool {
        if self.enabled {
            lock(&self.hold).1 += 1;
            self.released.notify_all();
        }
        self.enabled
    }

    /// Batches taken and held now.
    pub fn held(&self) -> usize {
        self.held.load(Ordering::SeqCst)
    }

    pub(crate) fn wait_while_held(&self) {
        if !self.enabled {
            return;
        }
        let mut hold = lock(&self.hold);
        if hold.0 {
            self.held.fetch_add(1, Ordering::SeqCst);
            while hold.0 && hold.1 == 0 {
                hold = self.released.wait(hold).unwrap_or_else(|e| e.into_inner());
            }
            hold.1 = hold.1.saturating_sub(1);
            self.held.fetch_sub(1, Ordering::SeqCst);
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
