//! Connections: several HTTP/2 connections per endpoint, reconnecting after
//! a server restart without failing the call, balancing over addresses
//! that are resolved again as replicas come and go, and a server's early
//! reply (an error sent before the request body was read) reported as that
//! reply.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::BoxFuture;
use reference_server::server::{self, Config, Running};
use serving_client::{Client, Error, Resolve, SizeSide, Tensor};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn config(grpc: u16, rest: u16) -> Config {
    Config {
        grpc_address: ([127, 0, 0, 1], grpc).into(),
        rest_address: ([127, 0, 0, 1], rest).into(),
        poll_interval: None,
        ..Config::default()
    }
}

async fn demo() -> Running {
    server::start(config(0, 0)).await.expect("server starts")
}

async fn add(client: &Client) -> Result<Vec<f32>, Error> {
    let x = Tensor::from_slice(&[2, 2], &[1f32, 2.0, 3.0, 4.0])?;
    client
        .infer("add")
        .input("x1", x.clone())
        .input("x2", x)
        .send()
        .await?
        .output::<f32>("y")
        .map_err(Into::into)
}

/// How many `add` requests a server has answered.
fn served(s: &Running) -> u64 {
    s.state
        .registry
        .get("add", 0)
        .map(|sv| {
            sv.scheduler()
                .counters()
                .inference_count
                .load(Ordering::Relaxed)
        })
        .unwrap_or(0)
}

/// A TCP proxy to `target` that counts the connections it accepts.
async fn counting_proxy(target: SocketAddr) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(async move {
                if let Ok(mut server) = TcpStream::connect(target).await {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                }
            });
        }
    });
    (address, accepted)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_connections_per_endpoint_carry_concurrent_calls() {
    let server = demo().await;
    for n in [1usize, 4] {
        let (proxy, accepted) = counting_proxy(server.grpc_address).await;
        let client = Client::builder()
            .endpoint(format!("grpc://{proxy}"))
            .connections_per_endpoint(n)
            .build()
            .unwrap();
        let calls: Vec<_> = (0..64)
            .map(|_| {
                let c = client.clone();
                tokio::spawn(async move { add(&c).await })
            })
            .collect();
        for c in calls {
            assert_eq!(c.await.unwrap().unwrap(), vec![2.0, 4.0, 6.0, 8.0]);
        }
        assert_eq!(
            accepted.load(Ordering::Relaxed),
            n,
            "{n} connections asked for"
        );
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_after_a_server_restart_succeed_on_both_transports() {
    let first = demo().await;
    let (grpc, rest) = (first.grpc_address.port(), first.rest_address.port());
    let clients = [
        Client::new(&format!("grpc://127.0.0.1:{grpc}")).unwrap(),
        Client::builder()
            .endpoint(format!("grpc://127.0.0.1:{grpc}"))
            .keep_alive(Duration::from_millis(200), Duration::from_secs(1))
            .build()
            .unwrap(),
        Client::new(&format!("http://127.0.0.1:{rest}")).unwrap(),
    ];
    for c in &clients {
        add(c).await.unwrap();
    }
    first.shutdown().await;
    // The same ports again: the connections the clients hold are dead.
    let second = server::start(config(grpc, rest)).await.expect("restarts");
    for (i, c) in clients.iter().enumerate() {
        for _ in 0..3 {
            let y = add(c).await.unwrap_or_else(|e| panic!("client {i}: {e:?}"));
            assert_eq!(y, vec![2.0, 4.0, 6.0, 8.0]);
        }
    }
    second.shutdown().await;
}

/// A resolver whose answer the test sets.
#[derive(Clone, Default)]
struct Replicas(Arc<Mutex<Vec<SocketAddr>>>);

impl Resolve for Replicas {
    fn resolve(&self, _: &str, _: u16) -> BoxFuture<'static, std::io::Result<Vec<SocketAddr>>> {
        let addresses = self.0.lock().unwrap().clone();
        Box::pin(async move { Ok(addresses) })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_spread_over_addresses_resolved_again_as_replicas_come_and_go() {
    let a = demo().await;
    let b = demo().await;
    let replicas = Replicas::default();
    replicas.0.lock().unwrap().push(a.grpc_address);
    let client = Client::builder()
        .endpoint("grpc://models.test:9000")
        .resolver(replicas.clone())
        .resolve_every(Duration::from_millis(50))
        .build()
        .unwrap();
    for _ in 0..10 {
        add(&client).await.unwrap();
    }
    assert_eq!((served(&a), served(&b)), (10, 0));

    // A second replica appears: calls reach both.
    replicas.0.lock().unwrap().push(b.grpc_address);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let concurrent: Vec<_> = (0..200)
        .map(|_| {
            let c = client.clone();
            tokio::spawn(async move { add(&c).await })
        })
        .collect();
    for c in concurrent {
        c.await.unwrap().unwrap();
    }
    let (on_a, on_b) = (served(&a) - 10, served(&b));
    assert_eq!(on_a + on_b, 200);
    assert!(on_a > 0 && on_b > 0, "a {on_a}, b {on_b}");

    // The first goes away: every call still succeeds, on the second.
    replicas.0.lock().unwrap().retain(|x| *x == b.grpc_address);
    tokio::time::sleep(Duration::from_millis(300)).await;
    a.shutdown().await;
    let before = served(&b);
    for _ in 0..20 {
        add(&client).await.unwrap();
    }
    assert_eq!(served(&b) - before, 20);
    b.shutdown().await;
}

/// A server that answers 413 as soon as it has the request's headers,
/// before reading the body (as servers that refuse a declared
/// Content-Length do), then reads and drops the body until the client is
/// done and closes.
async fn early_413() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut byte).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&byte[..n]),
                    }
                }
                let body = br#"{"error":"Sent message larger than max (33554832 vs. 1048576)"}"#;
                let reply = format!(
                    "HTTP/1.1 413 Payload Too Large\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                let _ = socket.write_all(reply.as_bytes()).await;
                let _ = socket.write_all(body).await;
                let _ = socket.flush().await;
                let mut sink = vec![0u8; 64 << 10];
                while let Ok(n) = socket.read(&mut sink).await {
                    if n == 0 {
                        break;
                    }
                }
            });
        }
    });
    address
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_early_reply_is_reported_as_that_reply() {
    let address = early_413().await;
    let client = Client::new(&format!("http://{address}")).unwrap();
    let x = Tensor::from_vec(&[8 << 20], vec![1f32; 8 << 20]).unwrap();
    for attempt in 0..5 {
        let e = client
            .infer("add")
            .input("x1", x.clone())
            .input("x2", x.clone())
            .send()
            .await
            .unwrap_err();
        match e {
            Error::MessageTooLarge {
                size,
                limit,
                side: SizeSide::Server,
            } => {
                assert_eq!((size, limit), (Some(33554832), Some(1048576)));
            }
            e => panic!("attempt {attempt}: {e:?}"),
        }
    }
}
