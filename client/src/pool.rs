//! The endpoints of a client and how a call goes to them: balancing
//! ([`Balance`]), setting failed endpoints aside, and retrying retryable
//! failures of idempotent calls on another endpoint within the call's
//! deadline; calls bound to one endpoint ([`Route::Endpoint`]) stay there,
//! and calls that change a server's state ([`Retry::Never`]) are sent once.

use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
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

/// Where a call may go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Route {
    /// Any endpoint, as the balance picks; retries go to others.
    Balanced,
    /// Endpoint `i` (in the order given) and no other.
    Endpoint(usize),
}

/// Whether a call may be sent again after a retryable failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Retry {
    /// Idempotent: sending it again (where its [`Route`] allows) changes
    /// nothing the first attempt may have done.
    Idempotent,
    /// Sent once: the server may have acted on a failed attempt (loaded a
    /// model, registered a region), so the failure is the caller's.
    Never,
}

/// A call counted in flight on an endpoint until dropped: completed,
/// failed or cancelled (a timeout, a `select!` that dropped it).
struct InFlight<'a>(&'a AtomicUsize);

impl<'a> InFlight<'a> {
    fn enter(count: &'a AtomicUsize) -> InFlight<'a> {
        count.fetch_add(1, Ordering::Relaxed);
        InFlight(count)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The pause before going round the endpoints again after attempt
/// `attempt` (from 0): up to 25 ms doubled per attempt, at most 800 ms,
/// of which the upper half is random, so that clients that failed
/// together do not come back together.
pub(crate) fn backoff(attempt: usize) -> Duration {
    let cap = 25_000u64 << attempt.min(5);
    let half = cap / 2;
    Duration::from_micros(half + random() % (cap - half + 1))
}

/// A random number: the standard library's randomly keyed hash (keys drawn
/// from the system once per thread, then varied per use) of a counter.
fn random() -> u64 {
    use std::hash::BuildHasher;
    static DRAWS: AtomicU64 = AtomicU64::new(0);
    std::collections::hash_map::RandomState::new().hash_one(DRAWS.fetch_add(1, Ordering::Relaxed))
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

    /// How many endpoints.
    pub(crate) fn len(&self) -> usize {
        self.endpoints.len()
    }

    /// The calls in flight on endpoint `i`.
    #[cfg(test)]
    pub(crate) fn in_flight(&self, i: usize) -> usize {
        self.endpoints[i].in_flight.load(Ordering::Relaxed)
    }

    /// Picks the endpoint of a call that may go to endpoint `only` alone,
    /// or else one not yet tried by this call and not set aside; when
    /// every endpoint is set aside, the one set aside longest ago is probed
    /// (a client never refuses to try).
    fn pick(&self, route: Route, tried: &[usize]) -> (usize, &Endpoint) {
        let eps = &self.endpoints;
        if let Route::Endpoint(i) = route {
            return (i, &eps[i]);
        }
        let now = Instant::now();
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

    /// Runs `op` on an endpoint `route` allows with the context `ctx`
    /// makes for the time left, setting failed endpoints aside and, for an
    /// idempotent call, retrying retryable failures within `timeout` (on
    /// others where the route allows).
    pub(crate) async fn call<'a, T, F, Fut>(
        &'a self,
        name: &'static str,
        route: Route,
        retry: Retry,
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
            let (index, endpoint) = self.pick(route, &tried);
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
            let result = {
                // Counted until the attempt ends, however it ends.
                let _in_flight = InFlight::enter(&endpoint.in_flight);
                op(&*endpoint.transport, ctx(left)).instrument(span).await
            };
            match result {
                Err(e) if e.is_retryable() => {
                    tracing::debug!(endpoint = %label, error = %e, attempt, "retryable failure; setting the endpoint aside");
                    endpoint.set_aside(Some(Instant::now() + self.set_aside));
                    if retry == Retry::Never || attempt >= self.retries {
                        return Err(e);
                    }
                    tried.push(index);
                    // Once every endpoint the call may go to has been
                    // tried, wait a little before going round again.
                    let candidates = match route {
                        Route::Balanced => self.endpoints.len(),
                        Route::Endpoint(_) => 1,
                    };
                    if tried.len() >= candidates {
                        let pause = backoff(attempt);
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

#[cfg(all(test, feature = "rest"))]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// A client of `n` REST endpoints nothing listens on (nothing is sent:
    /// the calls below never touch their transport).
    fn client(n: usize, balance: Balance) -> crate::Client {
        crate::Client::builder()
            .endpoints((0..n).map(|i| format!("http://127.0.0.1:{}", 9 + i)))
            .balance(balance)
            .retries(3)
            .build()
            .unwrap()
    }

    fn ctx(_: Option<Duration>) -> CallCtx {
        CallCtx {
            headers: Default::default(),
            timeout: None,
            max_send: 1,
            max_receive: 1,
            compression: None,
            output_regions: None,
            timing: None,
        }
    }

    #[tokio::test]
    async fn a_cancelled_call_leaves_nothing_in_flight_and_least_loaded_still_picks_its_endpoint() {
        let client = client(2, Balance::LeastLoaded);
        let pool = &client.inner.pool;
        // The first call goes to endpoint 0 and never answers: cancelled by
        // a timeout, then by a select! that another branch wins.
        let hang = pool.call(
            "hang",
            Route::Balanced,
            Retry::Idempotent,
            None,
            ctx,
            |_, _| std::future::pending::<Result<(), Error>>(),
        );
        assert!(
            tokio::time::timeout(Duration::from_millis(20), hang)
                .await
                .is_err()
        );
        assert_eq!((pool.in_flight(0), pool.in_flight(1)), (0, 0));
        let hang = pool.call(
            "hang",
            Route::Endpoint(1),
            Retry::Idempotent,
            None,
            ctx,
            |_, _| std::future::pending::<Result<(), Error>>(),
        );
        tokio::select! {
            _ = hang => unreachable!(),
            _ = tokio::task::yield_now() => {}
        }
        assert_eq!((pool.in_flight(0), pool.in_flight(1)), (0, 0));
        // Both endpoints still get calls.
        let seen = Mutex::new(Vec::new());
        for _ in 0..4 {
            pool.call(
                "ok",
                Route::Balanced,
                Retry::Idempotent,
                None,
                ctx,
                |t, _| {
                    seen.lock().unwrap().push(t.label().to_owned());
                    std::future::ready(Ok::<_, Error>(()))
                },
            )
            .await
            .unwrap();
        }
        let seen = seen.into_inner().unwrap();
        for label in client.endpoints() {
            assert!(
                seen.iter().any(|s| s == label),
                "{label} never picked: {seen:?}"
            );
        }
    }

    /// The endpoints a call of `route` and `retry` was sent to, each
    /// attempt failing retryably.
    async fn attempts(route: Route, retry: Retry) -> Vec<String> {
        let client = client(3, Balance::RoundRobin);
        let seen = Mutex::new(Vec::new());
        let e = client
            .inner
            .pool
            .call("fails", route, retry, None, ctx, |t, _| {
                seen.lock().unwrap().push(t.label().to_owned());
                std::future::ready(Err::<(), _>(Error::Unavailable {
                    endpoint: t.label().to_owned(),
                    message: "busy".into(),
                }))
            })
            .await
            .unwrap_err();
        assert!(matches!(e, Error::Unavailable { .. }), "{e:?}");
        seen.into_inner().unwrap()
    }

    #[tokio::test]
    async fn only_idempotent_calls_are_sent_again_and_bound_ones_stay_on_their_endpoint() {
        let balanced = attempts(Route::Balanced, Retry::Idempotent).await;
        assert_eq!(balanced.len(), 4, "{balanced:?}");
        let mut distinct = balanced[..3].to_vec();
        distinct.sort();
        distinct.dedup();
        assert_eq!(distinct.len(), 3, "retried on the others: {balanced:?}");
        assert_eq!(
            attempts(Route::Endpoint(2), Retry::Idempotent).await,
            vec!["http://127.0.0.1:11"; 4]
        );
        assert_eq!(
            attempts(Route::Endpoint(1), Retry::Never).await,
            vec!["http://127.0.0.1:10"]
        );
        assert_eq!(attempts(Route::Balanced, Retry::Never).await.len(), 1);
    }

    #[test]
    fn backoff_is_bounded_and_jittered() {
        for attempt in 0..12 {
            let cap = Duration::from_millis(25 << attempt.min(5));
            let pauses: Vec<Duration> = (0..64).map(|_| backoff(attempt)).collect();
            assert!(
                pauses.iter().all(|p| *p >= cap / 2 && *p <= cap),
                "{attempt}: {pauses:?}"
            );
            let mut distinct = pauses.clone();
            distinct.sort();
            distinct.dedup();
            assert!(distinct.len() > 8, "{attempt}: lock-step pauses {pauses:?}");
        }
        assert!(backoff(usize::MAX) <= Duration::from_millis(800));
    }
}
