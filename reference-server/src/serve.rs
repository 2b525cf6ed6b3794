//! The accept loop shared by the gRPC and REST ports: HTTP/1.1 and HTTP/2
//! (prior knowledge, as gRPC clients speak it) on one listener, with a
//! graceful shutdown that lets accepted connections finish, optionally over
//! TLS.
//!
//! Connections are bounded in number and in time:
//!
//! - at most [`Limits::connections`] are open at once over all the
//!   server's listeners; at the cap the loop stops accepting (clients wait
//!   in the kernel's backlog) until one closes;
//! - a connection must send its first request's headers (HTTP/1.1) or the
//!   HTTP/2 preface within [`Limits::first_bytes`] of being accepted (a TLS
//!   handshake included), or it is closed: a client that connects and sends
//!   nothing, or half a preface, no longer holds a descriptor forever;
//! - a connection with no request in flight for [`Limits::idle`] is closed
//!   (gracefully: HTTP/2 clients get a GOAWAY);
//! - a request's body that sends nothing for [`Limits::body_stall`] while
//!   it is read fails ([`crate::body_stall`]);
//! - when `accept` fails for want of descriptors (`EMFILE`, `ENFILE`) or
//!   memory, the loop sleeps with a doubling backoff (10 ms to 1 s) and logs
//!   one line per [`LOG_EVERY`], instead of retrying at once, which spun a
//!   core and wrote the same line to the log as fast as it could.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::{Semaphore, watch};
use tokio::time::Instant;

use crate::body_stall::Stalling;

/// A listening socket: TCP, or a Unix domain socket for gRPC on one host.
pub(crate) trait Listener: Send + 'static {
    /// The accepted stream.
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    /// Accepts the next connection and names its peer for logs.
    fn accept(&self) -> impl Future<Output = std::io::Result<(Self::Stream, String)>> + Send;
}

impl Listener for TcpListener {
    type Stream = tokio::net::TcpStream;
    async fn accept(&self) -> std::io::Result<(Self::Stream, String)> {
        let (stream, peer) = TcpListener::accept(self).await?;
        // Without it, Nagle's algorithm and delayed ACKs stall replies by
        // 40 ms (seen at 1 MiB over gRPC).
        let _ = stream.set_nodelay(true);
        Ok((stream, peer.to_string()))
    }
}

impl Listener for UnixListener {
    type Stream = tokio::net::UnixStream;
    async fn accept(&self) -> std::io::Result<(Self::Stream, String)> {
        let (stream, _) = UnixListener::accept(self).await?;
        Ok((stream, "unix".to_owned()))
    }
}

/// HTTP/2 flow-control windows large enough for big tensors on loopback.
const WINDOW: u32 = 8 << 20;

/// How long an HTTP/1.1 client may take to send a request's headers
/// (slow-header clients are cut off); the first request's are bounded by
/// [`Limits::first_bytes`] as well.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// The most header lines of an HTTP/1.1 request.
const MAX_HEADERS: usize = 100;
/// Concurrent HTTP/2 streams per connection.
const MAX_STREAMS: u32 = 256;
/// The largest HTTP/2 header list (decoded) a request may carry.
const MAX_HEADER_LIST: u32 = 64 << 10;
/// Streams a client may open and reset before the server accepted them
/// ("rapid reset", CVE-2023-44487) before the connection is closed.
const MAX_PENDING_RESETS: usize = 20;
/// HTTP/2 keep-alive pings on idle connections, and how long to wait for
/// the answer before closing a dead one.
const KEEP_ALIVE: Duration = Duration::from_secs(60);
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(20);
/// The longest a TLS handshake may take.
const HANDSHAKE: Duration = Duration::from_secs(10);
/// How long an idle connection asked to close (an HTTP/2 GOAWAY) may take
/// to do so before it is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(10);
/// The first delay after a failed `accept`, doubled on each failure in a
/// row up to [`BACKOFF_MAX`].
const BACKOFF_MIN: Duration = Duration::from_millis(10);
/// The longest delay between two `accept` attempts that failed.
const BACKOFF_MAX: Duration = Duration::from_secs(1);
/// At most one log line per this interval for failed accepts, and one for
/// the connection cap.
pub(crate) const LOG_EVERY: Duration = Duration::from_secs(10);

/// The HTTP/2 client connection preface (RFC 9113 §3.4).
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The bounds on connections (see the module's documentation).
#[derive(Clone, Debug)]
pub(crate) struct Limits {
    /// The time from `accept` to the first request's headers or the HTTP/2
    /// preface.
    pub(crate) first_bytes: Duration,
    /// How long a connection may stay open with no request in flight;
    /// `None`: no limit.
    pub(crate) idle: Option<Duration>,
    /// Permits for open connections, shared by the server's listeners.
    pub(crate) connections: Arc<Semaphore>,
    /// How long a request's body may send nothing while it is read (see
    /// [`crate::body_stall`]); `None`: no limit.
    pub(crate) body_stall: Option<Duration>,
}

/// The default connection cap: 10000, or the descriptor limit
/// (`RLIMIT_NOFILE`) less a reserve for model files, shared memory and the
/// runtime (an eighth, at least 32, at most half) when that is lower.
pub(crate) fn default_max_connections() -> usize {
    const MOST: usize = 10_000;
    match open_files_limit() {
        Some(limit) => {
            let reserve = (limit / 8).max(32).min(limit / 2);
            limit.saturating_sub(reserve).clamp(1, MOST)
        }
        None => MOST,
    }
}

/// The soft limit on open descriptors, from `/proc/self/limits`.
fn open_files_limit() -> Option<usize> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    let soft = line
        .trim_start_matches("Max open files")
        .split_whitespace()
        .next()?;
    match soft {
        "unlimited" => Some(usize::MAX),
        n => n.parse().ok(),
    }
}

/// Where the server's shutdown stands, as its connections see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Serving,
    /// Finish the requests in flight, then close.
    Draining,
    /// The grace period is over: close now.
    Closing,
}

/// Serves `service` on `listener` until `shutdown` resolves, then waits up
/// to `grace` for the open connections to finish. With `tls`, connections
/// are TLS; a failed handshake closes that connection only.
pub(crate) async fn serve<L, S, B>(
    listener: L,
    service: S,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
    limits: Limits,
) where
    L: Listener,
    S: tower::Service<Request<Stalling<Incoming>>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + Unpin + 'static,
    B: http_body::Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_headers(MAX_HEADERS);
    builder
        .http2()
        .timer(TokioTimer::new())
        .initial_stream_window_size(WINDOW)
        .initial_connection_window_size(WINDOW)
        .max_frame_size(1 << 20)
        .adaptive_window(false)
        .max_concurrent_streams(MAX_STREAMS)
        .max_header_list_size(MAX_HEADER_LIST)
        .max_pending_accept_reset_streams(MAX_PENDING_RESETS)
        .keep_alive_interval(KEEP_ALIVE)
        .keep_alive_timeout(KEEP_ALIVE_TIMEOUT);
    // Every connection task holds a receiver: the sender learns when the
    // last one ended.
    let (phase, phase_rx) = watch::channel(Phase::Serving);
    let mut failures = Backoff::default();
    let mut at_cap = RateLimited::default();
    tokio::pin!(shutdown);
    loop {
        let permit = match limits.connections.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                if let Some(earlier) = at_cap.due() {
                    tracing::warn!(
                        earlier,
                        "connection limit (--max-connections) reached: not accepting until a connection closes"
                    );
                }
                tokio::select! {
                    p = limits.connections.clone().acquire_owned() => match p {
                        Ok(p) => p,
                        Err(_) => break,
                    },
                    () = &mut shutdown => break,
                }
            }
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => {
                    failures.reset();
                    pair
                }
                Err(e) if is_connection_error(&e) => {
                    // The pending connection failed before it was accepted:
                    // the next one may be fine.
                    tracing::debug!(error = %e, "accept failed for one connection");
                    continue;
                }
                Err(e) => {
                    let delay = failures.next();
                    if let Some(earlier) = failures.log.due() {
                        tracing::warn!(
                            error = %e,
                            retry_in = ?delay,
                            earlier,
                            "accept failed; backing off (at most one such line every {LOG_EVERY:?}; `earlier`: failures not logged since the last)"
                        );
                    }
                    tokio::select! {
                        () = tokio::time::sleep(delay) => continue,
                        () = &mut shutdown => break,
                    }
                }
            },
            () = &mut shutdown => break,
        };
        let accepted = Instant::now();
        let activity = Arc::new(Activity::new(accepted));
        let service = TowerToHyperService::new(Track {
            inner: service.clone(),
            activity: activity.clone(),
            body_stall: limits.body_stall,
        });
        let builder = builder.clone();
        let phase = phase_rx.clone();
        let limits = limits.clone();
        match &tls {
            None => {
                let io = Watched::new(stream, activity.clone());
                tokio::spawn(async move {
                    let conn = builder
                        .serve_connection(TokioIo::new(io), service)
                        .into_owned();
                    drive(conn, &activity, &limits, phase, &peer).await;
                    drop(permit);
                });
            }
            Some(config) => {
                let acceptor = tokio_rustls::TlsAcceptor::from(config.clone());
                tokio::spawn(async move {
                    let mut phase = phase;
                    let deadline = accepted + HANDSHAKE.min(limits.first_bytes);
                    let handshake = tokio::time::timeout_at(deadline, acceptor.accept(stream));
                    let stream = tokio::select! {
                        done = handshake => match done {
                            Ok(Ok(s)) => s,
                            Ok(Err(e)) => {
                                tracing::debug!(%peer, error = %e, "TLS handshake failed");
                                return;
                            }
                            Err(_) => {
                                tracing::debug!(%peer, "TLS handshake timed out");
                                return;
                            }
                        },
                        _ = phase.wait_for(|p| *p != Phase::Serving) => return,
                    };
                    let io = Watched::new(stream, activity.clone());
                    let conn = builder
                        .serve_connection(TokioIo::new(io), service)
                        .into_owned();
                    drive(conn, &activity, &limits, phase, &peer).await;
                    drop(permit);
                });
            }
        }
    }
    drop(listener);
    drop(phase_rx);
    phase.send_replace(Phase::Draining);
    if tokio::time::timeout(grace, phase.closed()).await.is_err() {
        tracing::warn!(
            ?grace,
            "open connections did not finish within the grace period; closing them"
        );
        phase.send_replace(Phase::Closing);
    }
}

/// Errors of `accept` that concern one pending connection only (Linux
/// reports some network errors of the new socket this way): retried at
/// once, since the next connection may be fine, and without spinning,
/// since each consumed a connection.
fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionAborted
            | ConnectionReset
            | ConnectionRefused
            | Interrupted
            | WouldBlock
            | NetworkDown
            | NetworkUnreachable
            | HostUnreachable
    )
}

/// The delays between failed accepts, and their log lines.
#[derive(Debug, Default)]
struct Backoff {
    /// The last delay; zero after a success.
    delay: Duration,
    log: RateLimited,
}

impl Backoff {
    fn reset(&mut self) {
        self.delay = Duration::ZERO;
    }

    /// The delay before the next attempt.
    fn next(&mut self) -> Duration {
        self.delay = (self.delay * 2).clamp(BACKOFF_MIN, BACKOFF_MAX);
        self.delay
    }
}

/// One log line per [`LOG_EVERY`], counting the events in between.
#[derive(Debug, Default)]
struct RateLimited {
    last: Option<Instant>,
    skipped: u64,
}

impl RateLimited {
    /// `Some(events not logged since the last line)` when a line is due.
    fn due(&mut self) -> Option<u64> {
        let now = Instant::now();
        match self.last {
            Some(t) if now.duration_since(t) < LOG_EVERY => {
                self.skipped += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.skipped))
            }
        }
    }
}

/// What a connection has done, for its deadlines.
#[derive(Debug)]
struct Activity {
    /// When it was accepted.
    start: Instant,
    /// A request began or the HTTP/2 preface arrived.
    opened: AtomicBool,
    /// Requests begun and not finished (their reply bodies sent or
    /// dropped).
    in_flight: AtomicUsize,
    /// When the last request finished, in milliseconds from `start`.
    idle_since_ms: AtomicU64,
}

impl Activity {
    fn new(start: Instant) -> Activity {
        Activity {
            start,
            opened: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(0),
        }
    }

    fn idle_since(&self) -> Instant {
        self.start + Duration::from_millis(self.idle_since_ms.load(Ordering::Relaxed))
    }
}

/// What [`drive`] does with a connection.
trait Connection: Future<Output = Result<(), Box<dyn std::error::Error + Send + Sync>>> {
    /// Asks it to finish its requests and close.
    fn graceful_shutdown(self: Pin<&mut Self>);
}

impl<I, S, E, B> Connection for auto::Connection<'static, I, S, E>
where
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>>,
    S::Future: 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: http_body::Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + 'static,
    E: auto::HttpServerConnExec<S::Future, B>,
{
    fn graceful_shutdown(self: Pin<&mut Self>) {
        auto::Connection::graceful_shutdown(self)
    }
}

/// Runs `conn` to its end under its deadlines and the server's shutdown.
async fn drive(
    conn: impl Connection,
    activity: &Activity,
    limits: &Limits,
    mut phase: watch::Receiver<Phase>,
    peer: &str,
) {
    let mut conn = std::pin::pin!(conn);
    // When the connection was asked to close for being idle.
    let mut closing: Option<Instant> = None;
    loop {
        let now = Instant::now();
        let opened = activity.opened.load(Ordering::Acquire);
        let busy = activity.in_flight.load(Ordering::Acquire) > 0;
        let next = if !opened {
            activity.start + limits.first_bytes
        } else if let Some(asked) = closing {
            let due = asked + CLOSE_GRACE;
            match (now >= due, busy) {
                (true, false) => {
                    tracing::debug!(%peer, "a connection asked to close did not: dropped");
                    return;
                }
                (true, true) => now + CLOSE_GRACE,
                (false, _) => due,
            }
        } else if let Some(idle) = limits.idle {
            if busy {
                now + idle
            } else if now >= activity.idle_since() + idle {
                tracing::debug!(%peer, ?idle, "closing a connection idle for the idle timeout");
                conn.as_mut().graceful_shutdown();
                closing = Some(now);
                continue;
            } else {
                activity.idle_since() + idle
            }
        } else {
            now + Duration::from_secs(3600)
        };
        if !opened && now >= next {
            tracing::debug!(
                %peer,
                first_bytes = ?limits.first_bytes,
                "closing a connection that sent no request headers or HTTP/2 preface in time"
            );
            return;
        }
        tokio::select! {
            ended = conn.as_mut() => {
                if let Err(e) = ended {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
                return;
            }
            changed = phase.changed() => {
                let now_phase = if changed.is_err() { Phase::Closing } else { *phase.borrow_and_update() };
                match now_phase {
                    Phase::Serving => {}
                    Phase::Draining if activity.opened.load(Ordering::Acquire) => {
                        if closing.is_none() {
                            conn.as_mut().graceful_shutdown();
                            closing = Some(Instant::now());
                        }
                    }
                    Phase::Draining | Phase::Closing => return,
                }
            }
            () = tokio::time::sleep_until(next) => {}
        }
    }
}

/// The server's service, counting a connection's requests in flight: from
/// the call until the reply's body is sent (or dropped).
#[derive(Clone, Debug)]
struct Track<S> {
    inner: S,
    activity: Arc<Activity>,
    body_stall: Option<Duration>,
}

impl<S, B> tower::Service<Request<Incoming>> for Track<S>
where
    S: tower::Service<Request<Stalling<Incoming>>, Response = Response<B>>,
    S::Future: Unpin,
{
    type Response = Response<TrackedBody<B>>;
    type Error = S::Error;
    type Future = TrackedFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Incoming>) -> Self::Future {
        let guard = InFlight::new(self.activity.clone());
        let (mut parts, body) = req.into_parts();
        let (body, switch) = Stalling::new(body, self.body_stall);
        parts.extensions.insert(switch);
        TrackedFuture {
            inner: self.inner.call(Request::from_parts(parts, body)),
            guard: Some(guard),
        }
    }
}

/// One request in flight on a connection.
#[derive(Debug)]
struct InFlight(Arc<Activity>);

impl InFlight {
    fn new(activity: Arc<Activity>) -> InFlight {
        activity.opened.store(true, Ordering::Release);
        activity.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(activity)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let a = &self.0;
        let ms = Instant::now().duration_since(a.start).as_millis();
        a.idle_since_ms
            .store(u64::try_from(ms).unwrap_or(u64::MAX), Ordering::Relaxed);
        a.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// [`Track`]'s future: the reply, its body carrying the request's
/// [`InFlight`].
#[derive(Debug)]
struct TrackedFuture<F> {
    inner: F,
    guard: Option<InFlight>,
}

impl<F, B, E> Future for TrackedFuture<F>
where
    F: Future<Output = Result<Response<B>, E>> + Unpin,
{
    type Output = Result<Response<TrackedBody<B>>, E>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let res = std::task::ready!(Pin::new(&mut this.inner).poll(cx));
        let guard = this.guard.take();
        Poll::Ready(res.map(|r| {
            r.map(|inner| TrackedBody {
                inner,
                _guard: guard,
            })
        }))
    }
}

/// A reply body that ends its request's [`InFlight`] when dropped.
#[derive(Debug)]
struct TrackedBody<B> {
    inner: B,
    _guard: Option<InFlight>,
}

impl<B: http_body::Body + Unpin> http_body::Body for TrackedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<B::Data>, B::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// A connection's stream, watching its first bytes for the HTTP/2 preface.
#[derive(Debug)]
struct Watched<S> {
    inner: S,
    activity: Arc<Activity>,
    /// Bytes of the preface seen so far; `None` once decided.
    preface: Option<usize>,
}

impl<S> Watched<S> {
    fn new(inner: S, activity: Arc<Activity>) -> Watched<S> {
        Watched {
            inner,
            activity,
            preface: Some(0),
        }
    }

    fn saw(&mut self, bytes: &[u8]) {
        let Some(seen) = self.preface else { return };
        let n = bytes.len().min(PREFACE.len() - seen);
        if bytes[..n] != PREFACE[seen..seen + n] {
            self.preface = None;
        } else if seen + n == PREFACE.len() {
            self.activity.opened.store(true, Ordering::Release);
            self.preface = None;
        } else {
            self.preface = Some(seen + n);
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        std::task::ready!(Pin::new(&mut self.inner).poll_read(cx, buf))?;
        if self.preface.is_some() {
            self.saw(&buf.filled()[before..]);
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_preface_is_recognised_in_pieces_and_nothing_else_is() {
        let a = Arc::new(Activity::new(Instant::now()));
        let mut w = Watched::new((), a.clone());
        w.saw(b"PRI * HTTP/2.0\r\n");
        assert!(!a.opened.load(Ordering::Relaxed));
        w.saw(b"\r\nSM\r\n\r\n\0\0\x12\x04");
        assert!(a.opened.load(Ordering::Relaxed));
        let b = Arc::new(Activity::new(Instant::now()));
        let mut w = Watched::new((), b.clone());
        w.saw(b"PRI * HTTP/1.1\r\n\r\nSM\r\n\r\n");
        assert!(!b.opened.load(Ordering::Relaxed));
        assert_eq!(w.preface, None);
    }

    #[test]
    fn backoff_doubles_to_its_ceiling_and_resets() {
        let mut b = Backoff::default();
        let delays: Vec<_> = (0..9).map(|_| b.next()).collect();
        assert_eq!(delays[0], BACKOFF_MIN);
        assert_eq!(delays[1], BACKOFF_MIN * 2);
        assert_eq!(delays[8], BACKOFF_MAX);
        b.reset();
        assert_eq!(b.next(), BACKOFF_MIN);
    }

    #[test]
    fn the_default_cap_leaves_descriptors_in_reserve() {
        let n = default_max_connections();
        assert!((1..=10_000).contains(&n));
        if let Some(limit) = open_files_limit() {
            assert!(n < limit, "{n} of {limit}");
        }
    }
}
