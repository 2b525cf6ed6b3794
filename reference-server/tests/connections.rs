//! Connections against the real server: a deadline for the first bytes
//! (silent connections, half an HTTP/2 preface, half a request head), an
//! idle timeout, a cap on open connections, an accept loop that backs off
//! when the process is out of descriptors; authentication before routing
//! on both ports; flags that refuse values which panicked or wrapped.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use reference_server::server::{Config, Running};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A server whose connections must open within 1 s and may idle 1 s.
fn quick(idle: Option<Duration>) -> Config {
    Config {
        connection_first_bytes_timeout: Duration::from_secs(1),
        connection_idle_timeout: idle,
        ..common::config()
    }
}

/// Writes `bytes` to a new connection to `address`, then waits for the
/// server to close it: returns how long that took, or `None` if it was
/// still open after `wait`.
async fn closed_after(
    address: std::net::SocketAddr,
    bytes: &[u8],
    wait: Duration,
) -> Option<Duration> {
    let start = Instant::now();
    let mut tcp = TcpStream::connect(address).await.unwrap();
    tcp.write_all(bytes).await.unwrap();
    let mut sink = Vec::new();
    match tokio::time::timeout(wait, tcp.read_to_end(&mut sink)).await {
        // EOF, or a reset when the server closed with bytes unread.
        Ok(Ok(_)) | Ok(Err(_)) => Some(start.elapsed()),
        Err(_) => None,
    }
}

#[tokio::test]
async fn silent_and_half_open_connections_are_closed_at_the_first_bytes_deadline() {
    let server = common::start(quick(None)).await;
    let half_preface = &b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"[..12];
    let half_head = b"GET /v2/health/live HTTP/1.1\r\nhost: x\r\n";
    for (what, address, bytes) in [
        ("silent REST", server.rest_address, &b""[..]),
        ("silent gRPC", server.grpc_address, &b""[..]),
        ("half a preface, gRPC", server.grpc_address, half_preface),
        ("half a preface, REST", server.rest_address, half_preface),
        (
            "half a request head, REST",
            server.rest_address,
            &half_head[..],
        ),
    ] {
        let took = closed_after(address, bytes, Duration::from_secs(8))
            .await
            .unwrap_or_else(|| panic!("{what}: still open after 8 s"));
        assert!(
            took >= Duration::from_millis(900) && took < Duration::from_secs(4),
            "{what}: closed after {took:?}, not at the 1 s deadline"
        );
    }
    // A connection that completed the HTTP/2 preface is past the deadline:
    // it is served after it.
    let tcp = TcpStream::connect(server.grpc_address).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .unwrap();
    let conn = tokio::spawn(conn);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(!conn.is_finished(), "the HTTP/2 connection was closed");
    let r = send
        .send_request(
            http::Request::get(format!("http://{}/v2/health/live", server.grpc_address))
                .body(Empty::<Bytes>::new())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // So is an HTTP/1.1 connection whose first request came in time, for
    // its next request after the deadline.
    let (status, mut send, _conn) = h1_get(&server, "/v2/health/live").await;
    assert_eq!(status, 200);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(h1_again(&mut send, &server, "/v2/health/ready").await, 200);
    server.shutdown().await;
}

/// One HTTP/1.1 GET on a new keep-alive connection.
async fn h1_get(
    server: &Running,
    path: &str,
) -> (
    u16,
    hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
    tokio::task::JoinHandle<Result<(), hyper::Error>>,
) {
    let tcp = TcpStream::connect(server.rest_address).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
        .await
        .unwrap();
    let conn = tokio::spawn(conn);
    let status = h1_again(&mut send, server, path).await;
    (status, send, conn)
}

async fn h1_again(
    send: &mut hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
    server: &Running,
    path: &str,
) -> u16 {
    let r = send
        .send_request(
            http::Request::get(format!("http://{}{path}", server.rest_address))
                .header("host", "x")
                .body(Empty::new())
                .unwrap(),
        )
        .await
        .unwrap();
    let status = r.status().as_u16();
    r.into_body().collect().await.unwrap();
    status
}

#[tokio::test]
async fn idle_connections_are_closed_and_busy_ones_are_not() {
    let server = common::start(quick(Some(Duration::from_secs(1)))).await;
    // HTTP/1.1 keep-alive, after one request.
    let start = Instant::now();
    let (status, _send, conn) = h1_get(&server, "/v2/health/live").await;
    assert_eq!(status, 200);
    tokio::time::timeout(Duration::from_secs(8), conn)
        .await
        .expect("the idle HTTP/1.1 connection is closed")
        .unwrap()
        .ok();
    assert!(start.elapsed() >= Duration::from_millis(900));
    // HTTP/2, after one request: a GOAWAY, then the connection ends.
    let tcp = TcpStream::connect(server.grpc_address).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .unwrap();
    let conn = tokio::spawn(conn);
    let start = Instant::now();
    let r = send
        .send_request(
            http::Request::get(format!("http://{}/v2/health/live", server.grpc_address))
                .body(Empty::<Bytes>::new())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    drop(r);
    tokio::time::timeout(Duration::from_secs(8), conn)
        .await
        .expect("the idle HTTP/2 connection is closed")
        .unwrap()
        .ok();
    assert!(start.elapsed() >= Duration::from_millis(900));
    // A request in flight (a health Watch stream) keeps its connection.
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let mut health = HealthClient::new(common::channel(&server).await);
    let mut stream = health
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(stream.message().await.unwrap().is_some());
    assert!(
        tokio::time::timeout(Duration::from_secs(3), stream.message())
            .await
            .is_err(),
        "the watch stream ended while in flight"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn the_connection_cap_holds_new_connections_until_one_closes() {
    let server = common::start(Config {
        max_connections: Some(2),
        ..common::config()
    })
    .await;
    let (status, send1, conn1) = h1_get(&server, "/v2/health/live").await;
    assert_eq!(status, 200);
    let (status, _send2, _conn2) = h1_get(&server, "/v2/health/live").await;
    assert_eq!(status, 200);
    // The cap counts both ports: a gRPC connection waits too.
    let third = {
        let server_rest = server.rest_address;
        tokio::spawn(async move {
            let tcp = TcpStream::connect(server_rest).await.unwrap();
            let (mut send, conn) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
                    .await
                    .unwrap();
            tokio::spawn(conn);
            let r = send
                .send_request(
                    http::Request::get(format!("http://{server_rest}/v2/health/ready"))
                        .header("host", "x")
                        .body(Empty::<Bytes>::new())
                        .unwrap(),
                )
                .await
                .unwrap();
            r.status().as_u16()
        })
    };
    let grpc = closed_after(server.grpc_address, b"", Duration::from_millis(1500)).await;
    assert_eq!(grpc, None, "a connection over the cap was accepted");
    assert!(!third.is_finished(), "a request over the cap was served");
    drop(send1);
    conn1.abort();
    let status = tokio::time::timeout(Duration::from_secs(5), third)
        .await
        .expect("served once a connection closed")
        .unwrap();
    assert_eq!(status, 200);
    server.shutdown().await;
}

/// The `reference-server` executable under `ulimit -n 128`, on port 0,
/// its stderr in `log`; returns the child and its REST address.
fn limited_server(args: &[&str], log: &std::path::Path) -> (std::process::Child, String) {
    let mut child = Command::new("sh")
        .arg("-c")
        .arg("ulimit -n 128 && exec \"$0\" \"$@\"")
        .arg(env!("CARGO_BIN_EXE_reference-server"))
        .args([
            "--grpc-address",
            "127.0.0.1:0",
            "--rest-address",
            "127.0.0.1:0",
            "--connection-first-bytes-timeout",
            "120",
        ])
        .args(args)
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let rest = loop {
        let line = lines.next().expect("a readiness line").unwrap();
        if let Some(ready) = line.strip_prefix("reference-server ready: ") {
            break ready.split(" REST ").nth(1).unwrap().to_owned();
        }
    };
    (child, rest)
}

/// CPU seconds (user and system) `pid` has used.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime and stime, fields 14 and 15 of proc(5), in clock ticks.
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    ticks as f64 / 100.0
}

/// Opens more connections than the child has descriptors, checks that it
/// neither spins nor floods its log meanwhile, closes them, and checks that
/// it serves again.
async fn exhaust(args: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("stderr.log");
    let (mut child, rest) = limited_server(args, &log);
    let pid = child.id();
    // More than the 128 descriptors; the kernel's backlog holds those not
    // accepted (here about 128 more).
    let mut held = Vec::new();
    while held.len() < 200 {
        match tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(&rest)).await {
            Ok(Ok(tcp)) => held.push(tcp),
            _ if held.len() > 150 => break,
            other => panic!("connection {} failed: {other:?}", held.len()),
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (cpu, size) = (cpu_seconds(pid), std::fs::metadata(&log).unwrap().len());
    tokio::time::sleep(Duration::from_secs(3)).await;
    let used = cpu_seconds(pid) - cpu;
    let written = std::fs::metadata(&log).unwrap().len() - size;
    drop(held);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        used < 0.3,
        "{used} s of CPU in 3 s with the descriptors spent\n{text}"
    );
    assert!(
        written < 2048,
        "{written} bytes of log in 3 s with the descriptors spent"
    );
    // Served again once the connections are gone.
    let http = common::http();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let r = http
            .get(format!("http://{rest}/v2/health/live"))
            .timeout(Duration::from_secs(2))
            .send()
            .await;
        if let Ok(r) = r
            && r.status() == 200
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not serving again after the connections closed"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let _ = child.wait();
    std::fs::read_to_string(&log).unwrap()
}

#[tokio::test]
async fn out_of_descriptors_the_accept_loop_backs_off_with_one_log_line() {
    // A cap above the descriptor limit: accept fails with EMFILE.
    let log = exhaust(&["--max-connections", "100000"]).await;
    let lines = log.matches("accept failed").count();
    assert!(
        (1..=3).contains(&lines),
        "{lines} 'accept failed' lines:\n{log}"
    );
    assert!(log.contains("Too many open files"), "{log}");
}

#[tokio::test]
async fn the_default_cap_stays_under_the_descriptor_limit() {
    // 128 descriptors: the default cap is 96, and accept never fails.
    let log = exhaust(&[]).await;
    assert!(!log.contains("accept failed"), "{log}");
    let lines = log
        .matches("connection limit (--max-connections) reached")
        .count();
    assert!((1..=2).contains(&lines), "{lines} lines:\n{log}");
}

#[tokio::test]
async fn unauthenticated_rest_requests_learn_nothing_of_the_routes() {
    let server = common::start(Config {
        auth_token: Some("s3cret".into()),
        ..common::config()
    })
    .await;
    let http = common::http();
    let mut answers = Vec::new();
    for (method, path) in [
        ("GET", "/v2/repository/index"),
        ("POST", "/v2/repository/index"),
        ("DELETE", "/v2/models/add"),
        ("GET", "/v2/models/add"),
        ("GET", "/no/such/path"),
        ("PUT", "/v2/health/live/"),
        ("POST", "/metrics"),
    ] {
        let r = http
            .request(method.parse().unwrap(), common::rest(&server, path))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{method} {path}");
        let headers = r.headers().clone();
        assert_eq!(headers["www-authenticate"], "Bearer", "{method} {path}");
        assert!(
            headers.get("allow").is_none(),
            "{method} {path}: allow {:?}",
            headers.get("allow")
        );
        let mut names: Vec<String> = headers
            .keys()
            .map(|k| k.as_str().to_owned())
            .filter(|k| k != "date")
            .collect();
        names.sort();
        answers.push((names, r.text().await.unwrap()));
    }
    assert!(
        answers.windows(2).all(|w| w[0] == w[1]),
        "different refusals: {answers:#?}"
    );
    // MindSpore's routes keep their error form.
    let r = http
        .get(common::rest(&server, "/model/add:add_common"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers().get("allow").is_none());
    let v: serde_json::Value = r.json().await.unwrap();
    assert!(v["error_msg"].is_string(), "{v}");
    // With the token, routing answers as before.
    let r = http
        .get(common::rest(&server, "/v2/repository/index"))
        .bearer_auth("s3cret")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(r.headers()["allow"], "POST");
    let r = http
        .get(common::rest(&server, "/no/such/path"))
        .bearer_auth("s3cret")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    server.shutdown().await;
}

#[tokio::test]
async fn unauthenticated_grpc_calls_get_one_answer_known_or_not() {
    let server = common::start(Config {
        auth_token: Some("s3cret".into()),
        ..common::config()
    })
    .await;
    let mut answers = Vec::new();
    for path in [
        "/inference.GRPCInferenceService/ServerLive",
        "/inference.GRPCInferenceService/NoSuchRpc",
        "/mindspore.serving.proto.MSService/Predict",
        "/no.such.Service/Call",
    ] {
        let r = common::raw_grpc_framed(&server, path, vec![0, 0, 0, 0, 0], &[]).await;
        assert_eq!(r.code, 16, "{path}: {}", r.message);
        let mut names: Vec<String> = r
            .headers
            .keys()
            .map(|k| k.as_str().to_owned())
            .filter(|k| k != "date")
            .collect();
        names.sort();
        answers.push((r.code, r.message, names, r.body));
    }
    assert!(
        answers.windows(2).all(|w| w[0] == w[1]),
        "different refusals: {answers:#?}"
    );
    server.shutdown().await;
}

#[test]
fn flags_refuse_durations_and_sizes_that_panicked_or_wrapped() {
    for (flag, value) in [
        ("--drain-timeout", "inf"),
        ("--drain-timeout", "-1"),
        ("--drain-timeout", "NaN"),
        ("--drain-timeout", "1e300"),
        ("--repository-poll-interval", "inf"),
        ("--repository-poll-interval", "-5"),
        ("--connection-first-bytes-timeout", "0"),
        ("--connection-idle-timeout", "1e20"),
        ("--default-max-batch-size", "2147483648"),
        ("--default-max-batch-size", "4294967295"),
        ("--max-connections", "0"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_reference-server"))
            .args([
                "--grpc-address",
                "127.0.0.1:0",
                "--rest-address",
                "127.0.0.1:0",
            ])
            .arg(format!("{flag}={value}"))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flag} {value}: {stderr}");
        assert!(
            stderr.contains(&format!("invalid value '{value}' for '{flag}")),
            "{flag} {value}: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

#[tokio::test]
async fn the_library_refuses_a_batch_size_that_wraps() {
    let e = reference_server::server::start(Config {
        default_max_batch_size: u32::MAX,
        ..common::config()
    })
    .await
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "--default-max-batch-size 4294967295 is out of range: 0 to 2147483647 (Triton's max_batch_size is an int32)"
    );
}
