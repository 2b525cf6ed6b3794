//! Memory held by stalled requests: a server process (`conformance serve`)
//! is sent many gRPC `ModelInfer` streams that each announce a large
//! message in their frame header, send a little of it and stall. The
//! server's resident memory is read from `/proc` before, while they stall,
//! and after they close. A server that reserves the announced size up
//! front grows with the claims; one that grows with the bytes received
//! holds about what was sent.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::StreamBody;
use hyper::body::Frame;
use hyper::client::conn::http2::SendRequest;

use super::memory;

pub(super) type Item = Result<Frame<Bytes>, Infallible>;

/// A request body fed from a channel: it stalls while the sender lives.
pub(super) struct Feed(pub(super) tokio::sync::mpsc::Receiver<Item>);

impl futures_util::Stream for Feed {
    type Item = Item;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Item>> {
        self.0.poll_recv(cx)
    }
}

type Conn = SendRequest<StreamBody<Feed>>;

async fn connect(authority: &str) -> Result<Conn, String> {
    let tcp = tokio::net::TcpStream::connect(authority)
        .await
        .map_err(|e| format!("connect {authority}: {e}"))?;
    let (send, conn) =
        hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
            .handshake(hyper_util::rt::TokioIo::new(tcp))
            .await
            .map_err(|e| format!("HTTP/2 handshake: {e}"))?;
    tokio::spawn(conn);
    Ok(send)
}

/// Opens one stalled stream: a frame header claiming `claimed` bytes and
/// `sent` bytes of the message. The stream lives while the returned
/// sender does.
async fn stall(
    conn: &mut Conn,
    authority: &str,
    rpc: &str,
    claimed: u32,
    sent: usize,
) -> Result<tokio::sync::mpsc::Sender<Item>, String> {
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let mut first = vec![0u8];
    first.extend_from_slice(&claimed.to_be_bytes());
    first.resize(5 + sent, 0);
    tx.send(Ok(Frame::data(Bytes::from(first))))
        .await
        .map_err(|_| "the stream closed")?;
    let req = hyper::Request::post(format!(
        "http://{authority}/inference.GRPCInferenceService/{rpc}"
    ))
    .header("content-type", "application/grpc")
    .header("te", "trailers")
    .body(StreamBody::new(Feed(rx)))
    .map_err(|e| e.to_string())?;
    conn.ready().await.map_err(|e| e.to_string())?;
    let response = conn.send_request(req);
    tokio::spawn(async move {
        let _ = response.await;
    });
    Ok(tx)
}

/// `conformance perf --bench stalled`: `streams` stalled streams over
/// `connections` connections, each claiming 99 MiB and sending 1 KiB, for
/// the unary tensor RPC (our own reader) and the streaming one (tonic's,
/// behind our splitter), each against a fresh server.
pub async fn stalled(
    exe: &std::path::Path,
    streams: usize,
    connections: usize,
) -> Result<(), String> {
    for rpc in ["ModelInfer", "ModelStreamInfer"] {
        stalled_rpc(exe, rpc, streams, connections).await?;
    }
    Ok(())
}

async fn stalled_rpc(
    exe: &std::path::Path,
    rpc: &str,
    streams: usize,
    connections: usize,
) -> Result<(), String> {
    let (child, grpc, _) = crate::control::spawn_with(exe, 100).await?;
    let pid = child.id().ok_or("the server process has no pid")?;
    let authority = grpc.trim_start_matches("grpc://").to_owned();
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    let rss = || {
        memory::rss(pid)
            .map(|(now, _)| now)
            .ok_or("cannot read /proc")
    };
    // Warm up connection handling and the allocator with a few streams.
    {
        let mut c = connect(&authority).await?;
        let mut warm = Vec::new();
        for _ in 0..8 {
            warm.push(stall(&mut c, &authority, rpc, 99 << 20, 1024).await?);
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle = rss()?;
    let mut conns = Vec::with_capacity(connections);
    for _ in 0..connections {
        conns.push(connect(&authority).await?);
    }
    let mut held = Vec::with_capacity(streams);
    for i in 0..streams {
        held.push(stall(&mut conns[i % connections], &authority, rpc, 99 << 20, 1024).await?);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let stalled = rss()?;
    drop(held);
    drop(conns);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = rss()?;
    println!(
        "{streams} stalled {rpc} streams over {connections} connections, each claiming 99 MiB and sending 1 KiB ({} MiB claimed, {:.1} MiB sent):",
        streams * 99,
        streams as f64 / 1024.0
    );
    println!(
        "  server RSS idle {:.1} MiB, with the streams stalled {:.1} MiB (+{:.1} MiB, {:.0} KiB per stream), after they closed {:.1} MiB",
        mib(idle),
        mib(stalled),
        mib(stalled.saturating_sub(idle)),
        stalled.saturating_sub(idle) as f64 / 1024.0 / streams as f64,
        mib(after)
    );
    drop(child);
    Ok(())
}
