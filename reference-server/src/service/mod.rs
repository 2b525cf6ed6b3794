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
    /// Memory held by requests still arriving (gRPC messages and REST
    /// bodies), over all connections (`--max-incoming-mb`).
    pub incoming: serving_proto::gather::Budget,
    ready: AtomicBool,
}

impl State {
    /// A state serving `registry` with a message limit and a budget for
    /// requests still arriving, in bytes.
    pub fn new(registry: Registry, max_msg_bytes: usize, max_incoming_bytes: u64) -> State {
        State {
            registry,
            max_msg_bytes,
            metrics: Default::default(),
            watcher: None,
            incoming: serving_proto::gather::Budget::new(max_incoming_bytes),
            ready: AtomicBool::new(false),
        }
    }

    /// Whether the server accepts inference requests (false while starting
    /// and while draining).
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Records one answered request in the metrics. A model name that no
    /// loaded servable (or `servable.method`) answers to is recorded as ""
    /// whatever the result, so that clients cannot grow the metrics with
    /// names of their own.
    pub fn record(
        &self,
        front: crate::metrics::Front,
        model: &str,
        class: &'static str,
        elapsed: std::time::Duration,
    ) {
        let known = |name: &str| self.registry.get(name, 0).ok();
        let served = match known(model) {
            Some(_) => true,
            None => model
                .split_once('.')
                .and_then(|(s, m)| Some(known(s)?.method(m).is_some()))
                .unwrap_or(false),
        };
        let label = if served { model } else { "" };
        self.metrics.record(front, label, class, elapsed);
    }

    /// Marks the server ready or not.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }
}
