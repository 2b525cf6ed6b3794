//! The protocols' semantics, independent of transport: the gRPC and REST
//! front ends decode a request, call here, and encode the answer.

pub mod mindspore;
pub mod oip;

use std::sync::atomic::{AtomicBool, Ordering};

use crate::engine::registry::Registry;

/// What every front end shares.
#[derive(Debug)]
pub struct State {
    /// The servable versions being served.
    pub registry: Registry,
    /// The message size limit in bytes (`max_msg_mb_size` MiB).
    pub max_msg_bytes: usize,
    /// Request metrics.
    pub metrics: crate::metrics::Metrics,
    /// The repository watcher, when serving a repository.
    pub watcher: Option<std::sync::Mutex<crate::repository::watch::Watcher>>,
    ready: AtomicBool,
}

impl State {
    /// A state serving `registry` with a message limit in bytes.
    pub fn new(registry: Registry, max_msg_bytes: usize) -> State {
        State {
            registry,
            max_msg_bytes,
            metrics: Default::default(),
            watcher: None,
            ready: AtomicBool::new(false),
        }
    }

    /// Whether the server accepts inference requests (false while starting
    /// and while draining).
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Marks the server ready or not.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }
}
