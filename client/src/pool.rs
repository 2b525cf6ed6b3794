//! The endpoints of a client and how a call goes to them: balancing
//! ([`Balance`]), setting failed endpoints aside, and retrying retryable
//! failures on another endpoint within the call's deadline.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tracing::Instrument;

use crate::error::Error;
use crate::transport::{CallCtx, Transport};

/// How requests spread over several endpoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Balance {
    /// In turn.
    #[default]
    RoundRobin,
    /// To the endpoint with the fewest calls in flight from this client.
    LeastLoaded,
}

/// One endpoint: its transport and what the pool knows of it.
struct Endpoint {
    transport: Arc<dyn Transport>,
    in_flight: AtomicUsize,
    set_aside_until: Mutex<Option<Instant>>,
}

impl Endpoint {
    fn until(&self) -> Option<Instant> {
        *self
            .set_aside_until
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    fn set_aside(&self, until: Option<Instant>) {
        *self
            .set_aside_until
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = until;
    }

    fn available(&self, now: Instant) -> bool {
        self.until().is_none_or(|until| until <= now)
    }
}

/// The endpoints and the rules a call follows over them.
pub(crate) struct Pool {
    endpoints: Vec<Endpoint>,
    next: AtomicUsize,
    balance: Balance,
    retries: usize,
    set_aside: Duration,
}

impl Pool {
    pub(crate) fn new(
        transports: Vec<Arc<dyn Transport>>,
        balance: Balance,
        retries: usize,
        set_aside: Duration,
    ) -> Pool {
        Pool {
            endpoints: transports
                .into_iter()
                .map(|transport| Endpoint {
                    transport,
                    in_flight: AtomicUsize::new(0),
                    set_aside_until: Mutex::new(None),
                })
                .collect(),
            next: AtomicUsize::new(0),
            balance,
            retries,
            set_aside,
        }
    }

    /// The endpoints' transports, in the order given.
    pub(crate) fn transports(&self) -> impl Iterator<Item = &dyn Transport> {
        self.endpoints.iter().map(|e| &*e.transport)
    }

    /// Picks an endpoint not yet tried by this call and not set aside; when
    /// every endpoint is set aside, the one set aside longest ago is probed
    /// (a client never refuses to try).
    fn pick(&self, tried: &[usize]) -> (usize, &Endpoint) {
        let now = Instant::now();
        let eps = &self.endpoints;
        let fresh: Vec<usize> = (0..eps.len()).filter(|i| !tried.contains(i)).collect();
        let pool = if fresh.is_empty() {
            (0..eps.len()).collect()
        } else {
            fresh
        };
        let available: Vec<usize> = pool
            .iter()
            .copied()
            .filter(|&i| eps[i].available(now))
            .collect();
        if available.is_empty() {
            let i = pool
                .into_iter()
                .min_by_key(|&i| eps[i].until())
                .expect("at least one endpoint");
            return (i, &eps[i]);
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let n = available.len();
        let i = match self.balance {
            Balance::RoundRobin => available[start % n],
            Balance::LeastLoaded => (0..n)
                .map(|k| available[(start + k) % n])
                .min_by_key(|&i| eps[i].in_flight.load(Ordering::Relaxed))
                .expect("not empty"),
        };
        (i, &eps[i])
    }

    /// Runs `op` on an endpoint with the context `ctx` makes for the time
    /// left, retrying retryable failures on others within `timeout` and
    /// setting failed endpoints aside.
    pub(crate) async fn call<'a, T, F, Fut>(
        &'a self,
        name: &'static str,
        timeout: Option<Duration>,
        ctx: impl Fn(Option<Duration>) -> CallCtx,
        op: F,
    ) -> Result<T, Error>
    where
        F: Fn(&'a dyn Transport, CallCtx) -> Fut,
        Fut: Future<Output = Result<T, Error>> + 'a,
    {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut tried = Vec::new();
        loop {
            let attempt = tried.len();
            let (index, endpoint) = self.pick(&tried);
            let label = endpoint.transport.label();
            let left = match deadline {
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(Error::DeadlineExceeded {
                            endpoint: label.to_owned(),
                            timeout,
                            message: "the deadline passed before the call could be sent".into(),
                            source: None,
                        });
                    }
                    Some(left)
                }
                None => None,
            };
            let span =
                tracing::debug_span!("serving_client", call = name, endpoint = %label, attempt);
            endpoint.in_flight.fetch_add(1, Ordering::Relaxed);
            let result = op(&*endpoint.transport, ctx(left)).instrument(span).await;
            endpoint.in_flight.fetch_sub(1, Ordering::Relaxed);
            match result {
                Err(e) if e.is_retryable() => {
                    tracing::debug!(endpoint = %label, error = %e, attempt, "retryable failure; setting the endpoint aside");
                    endpoint.set_aside(Some(Instant::now() + self.set_aside));
                    if attempt >= self.retries {
                        return Err(e);
                    }
                    tried.push(index);
                    // Once every endpoint has been tried, wait a little
                    // before going round again.
                    if tried.len() >= self.endpoints.len() {
                        let pause = Duration::from_millis(25 << attempt.min(5));
                        if deadline.is_some_and(|d| Instant::now() + pause >= d) {
                            return Err(e);
                        }
                        tokio::time::sleep(pause).await;
                    }
                }
                Ok(value) => {
                    if !endpoint.available(Instant::now()) {
                        endpoint.set_aside(None);
                    }
                    return Ok(value);
                }
                Err(e) => return Err(e),
            }
        }
    }
}
