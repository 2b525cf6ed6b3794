//! `ClientBuilder::compression` against the reference server: requests go
//! out compressed and compressed replies come back inflated, on gRPC (both
//! the tensor path and tonic's calls) and REST, gzip and deflate. A proxy
//! counting the bytes on the wire proves each direction was compressed.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use reference_server::onnx::{Dim, ModelBuilder};
use reference_server::server::{self, Config, Running};
use serving_client::{Client, Compression, Protocol, Tensor};
use serving_proto::DataType;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// 4 MiB of FP32 that compresses well (a short repeating pattern).
const ELEMENTS: usize = 1 << 20;

async fn identity_server(grpc_compression: Option<Compression>) -> (Running, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let any = [Dim::Dynamic("n"), Dim::Dynamic("m")];
    let model = ModelBuilder::new("identity")
        .input("x", DataType::Fp32, &any)
        .output("y", DataType::Fp32, &any)
        .node("Identity", &["x"], &["y"], vec![])
        .build();
    std::fs::create_dir_all(dir.path().join("identity/1")).unwrap();
    std::fs::write(dir.path().join("identity/1/model.onnx"), model).unwrap();
    let server = server::start(Config {
        grpc_address: ([127, 0, 0, 1], 0).into(),
        rest_address: ([127, 0, 0, 1], 0).into(),
        poll_interval: None,
        model_repository: Some(dir.path().to_owned()),
        grpc_response_compression: grpc_compression,
        ..Config::default()
    })
    .await
    .expect("server starts");
    (server, dir)
}

/// Bytes sent each way through a proxy.
#[derive(Default)]
struct Wire {
    up: AtomicU64,
    down: AtomicU64,
}

/// A TCP proxy to `target` that counts the bytes in each direction.
async fn counting_proxy(target: std::net::SocketAddr) -> (std::net::SocketAddr, Arc<Wire>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let wire = Arc::new(Wire::default());
    let counts = wire.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let server = TcpStream::connect(target).await.unwrap();
            let counts = counts.clone();
            tokio::spawn(async move {
                let (mut cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                let up = counts.clone();
                let a = tokio::spawn(async move {
                    let mut buf = vec![0u8; 64 << 10];
                    while let Ok(n) = cr.read(&mut buf).await {
                        if n == 0 || sw.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                        up.up.fetch_add(n as u64, Ordering::Relaxed);
                    }
                    let _ = sw.shutdown().await;
                });
                let mut buf = vec![0u8; 64 << 10];
                while let Ok(n) = sr.read(&mut buf).await {
                    if n == 0 || cw.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                    counts.down.fetch_add(n as u64, Ordering::Relaxed);
                }
                let _ = cw.shutdown().await;
                let _ = a.await;
            });
        }
    });
    (address, wire)
}

fn input() -> Vec<f32> {
    (0..ELEMENTS).map(|i| (i % 16) as f32).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn requests_and_replies_are_compressed_both_ways_on_both_transports() {
    let payload = (ELEMENTS * 4) as u64;
    for encoding in [Compression::Gzip, Compression::Deflate] {
        let (server, _dir) = identity_server(Some(encoding)).await;
        for (scheme, target) in [("grpc", server.grpc_address), ("http", server.rest_address)] {
            let (proxy, wire) = counting_proxy(target).await;
            let url = format!("{scheme}://{proxy}");
            for compressed in [false, true] {
                let mut builder = Client::builder().endpoint(&url).retries(0);
                if compressed {
                    builder = builder.compression(encoding);
                }
                let client = builder.build().unwrap();
                // tonic's calls (gRPC metadata) and plain GETs (REST)
                // accept compression too.
                assert!(client.model_ready("identity", None).await.unwrap());
                assert_eq!(
                    client.model_metadata("identity", None).await.unwrap().name,
                    "identity"
                );
                let (up, down) = (
                    wire.up.load(Ordering::Relaxed),
                    wire.down.load(Ordering::Relaxed),
                );
                let x = input();
                let response = client
                    .infer("identity")
                    .input(
                        "x",
                        Tensor::from_vec(&[1, ELEMENTS as i64], x.clone()).unwrap(),
                    )
                    .send()
                    .await
                    .unwrap();
                let y: Vec<f32> = response.output("y").unwrap();
                assert!(
                    y == x,
                    "{url} {encoding:?}: the identity comes back bit-exact"
                );
                let sent = wire.up.load(Ordering::Relaxed) - up;
                let received = wire.down.load(Ordering::Relaxed) - down;
                println!(
                    "{url} {encoding:?} compressed={compressed}: {sent} bytes up, {received} down for {payload} each way"
                );
                if compressed {
                    assert!(
                        sent < payload / 8,
                        "{url}: the request went compressed ({sent})"
                    );
                    assert!(
                        received < payload / 8,
                        "{url}: the reply came compressed ({received})"
                    );
                } else {
                    assert!(sent > payload, "{url}: plain request ({sent})");
                    assert!(received > payload, "{url}: plain reply ({received})");
                }
            }
        }
        server.shutdown().await;
    }
}

#[tokio::test]
async fn mindspore_calls_compress_too() {
    let server = server::start(Config {
        grpc_address: ([127, 0, 0, 1], 0).into(),
        rest_address: ([127, 0, 0, 1], 0).into(),
        poll_interval: None,
        grpc_response_compression: Some(Compression::Deflate),
        ..Config::default()
    })
    .await
    .unwrap();
    for url in [
        format!("grpc://{}", server.grpc_address),
        format!("http://{}", server.rest_address),
    ] {
        let client = Client::builder()
            .endpoint(&url)
            .protocol(Protocol::MindSpore)
            .compression(Compression::Gzip)
            .build()
            .unwrap();
        let x = Tensor::from_slice(&[2, 2], &[1f32, 2.0, 3.0, 4.0]).unwrap();
        let results = client
            .predict(
                "add",
                "add_common",
                &[[("x1".to_string(), x.clone()), ("x2".to_string(), x)].into()],
            )
            .await
            .unwrap();
        assert_eq!(
            results[0].as_ref().unwrap()["y"].to_f64_vec().unwrap(),
            [2.0, 4.0, 6.0, 8.0],
            "{url}"
        );
    }
    server.shutdown().await;
}

#[tokio::test]
async fn a_compressed_reply_past_the_receive_cap_is_refused_as_too_large() {
    let (server, _dir) = identity_server(Some(Compression::Gzip)).await;
    for url in [
        format!("grpc://{}", server.grpc_address),
        format!("http://{}", server.rest_address),
    ] {
        // The request fits the send cap; its echo inflates past a 1 MiB
        // receive cap although it arrives as a few KiB.
        let client = Client::builder()
            .endpoint(&url)
            .compression(Compression::Gzip)
            .max_receive_size(1 << 20)
            .retries(0)
            .build()
            .unwrap();
        let zeros = vec![0f32; 512 << 10];
        let e = client
            .infer("identity")
            .input(
                "x",
                Tensor::from_vec(&[1, zeros.len() as i64], zeros).unwrap(),
            )
            .send()
            .await
            .unwrap_err();
        assert!(
            matches!(
                e,
                serving_client::Error::MessageTooLarge {
                    side: serving_client::SizeSide::Client,
                    ..
                }
            ),
            "{url}: {e:?}"
        );
    }
    server.shutdown().await;
}
