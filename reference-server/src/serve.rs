//! The accept loop shared by the gRPC and REST ports: HTTP/1.1 and HTTP/2
//! (prior knowledge, as gRPC clients speak it) on one listener, with a
//! graceful shutdown that lets accepted connections finish, optionally over
//! TLS.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};

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
/// (slow-header clients are cut off).
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

/// Serves `service` on `listener` until `shutdown` resolves, then waits up
/// to `grace` for the open connections to finish. With `tls`, connections
/// are TLS; a failed handshake closes that connection only.
pub(crate) async fn serve<L, S, B>(
    listener: L,
    service: S,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) where
    L: Listener,
    S: tower::Service<Request<Incoming>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let graceful = GracefulShutdown::new();
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
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let service = TowerToHyperService::new(service.clone());
        match &tls {
            None => {
                let conn = graceful.watch(
                    builder
                        .serve_connection(TokioIo::new(stream), service)
                        .into_owned(),
                );
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                });
            }
            Some(config) => {
                let acceptor = tokio_rustls::TlsAcceptor::from(config.clone());
                let builder = builder.clone();
                let watcher = graceful.watcher();
                tokio::spawn(async move {
                    let stream =
                        match tokio::time::timeout(HANDSHAKE, acceptor.accept(stream)).await {
                            Ok(Ok(s)) => s,
                            Ok(Err(e)) => {
                                tracing::debug!(%peer, error = %e, "TLS handshake failed");
                                return;
                            }
                            Err(_) => {
                                tracing::debug!(%peer, "TLS handshake timed out");
                                return;
                            }
                        };
                    let conn = watcher.watch(
                        builder
                            .serve_connection(TokioIo::new(stream), service)
                            .into_owned(),
                    );
                    if let Err(e) = conn.await {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                });
            }
        }
    }
    drop(listener);
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            ?grace,
            "open connections did not finish within the grace period; closing them"
        );
    }
}

/// The longest a TLS handshake may take.
const HANDSHAKE: Duration = Duration::from_secs(10);
