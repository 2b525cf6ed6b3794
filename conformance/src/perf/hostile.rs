//! What one hostile request makes a server hold: a server process
//! (`conformance serve`, at the default 100 MiB message limit) is sent,
//! one kind at a time, the requests that used to amplify their bytes, and
//! its resident memory is read from `/proc` before and at the peak:
//!
//! - an OIP gRPC `ModelInfer` of ~99 MB whose inputs are all empty (`2a 00`
//!   repeated: prost builds a ~300-byte struct per 2-byte entry);
//! - OIP REST and MindSpore REST JSON bodies of ~99 MB of `[0,0,...]`
//!   (decoders that build a `serde_json::Value` tree hold ~32x);
//! - a classification asking for every class of a 64 MiB FP64 output of
//!   values near 1e308 (316 bytes of text per class);
//! - 64 `ModelStreamInfer` streams, each sending one gzip message that
//!   inflates to 60 MiB, then staying open and silent.
//!
//! Each case runs against a fresh server process. Each line prints the
//! bytes received, the peak over idle, and their ratio (the target: at
//! most 3x).

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use prost::Message;
use serving_proto::pb::inference as pb;

use super::memory;
use super::stalled::Feed;

/// A server process of its own for one case, so that each idle reading is
/// a fresh server's (an allocator keeps what an earlier case freed).
struct Server {
    _child: tokio::process::Child,
    pid: u32,
    grpc: String,
    rest: String,
}

async fn server(exe: &std::path::Path) -> Result<Server, String> {
    let (child, grpc, rest) = crate::control::spawn_with(exe, 100).await?;
    let pid = child.id().ok_or("the server process has no pid")?;
    Ok(Server {
        _child: child,
        pid,
        grpc: grpc.trim_start_matches("grpc://").to_owned(),
        rest: rest.trim_start_matches("http://").to_owned(),
    })
}

/// One measurement: the server's RSS over idle at the peak of `f`.
async fn measure<F, Fut>(pid: u32, what: &str, received: usize, f: F) -> Result<(), String>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<String, String>>,
{
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (idle, _) = memory::rss(pid).ok_or("cannot read /proc")?;
    let reset = memory::reset_peak(pid);
    let started = Instant::now();
    let outcome = f().await?;
    let took = started.elapsed();
    let (now, peak) = memory::rss(pid).ok_or("cannot read /proc")?;
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    let over = peak.saturating_sub(idle);
    println!(
        "{what}: {:.1} MiB received, {outcome} in {:.1} s; RSS idle {:.0} MiB, peak {:.0} MiB{}, now {:.0} MiB; peak - idle = {:.2} x received",
        received as f64 / (1 << 20) as f64,
        took.as_secs_f64(),
        mib(idle),
        mib(peak),
        if reset { "" } else { " (since start)" },
        mib(now),
        over as f64 / received as f64
    );
    Ok(())
}

async fn h2<B>(authority: &str) -> Result<hyper::client::conn::http2::SendRequest<B>, String>
where
    B: hyper::body::Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let tcp = tokio::net::TcpStream::connect(authority)
        .await
        .map_err(|e| format!("connect {authority}: {e}"))?;
    let (send, conn) =
        hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
            .initial_stream_window_size(8 << 20)
            .initial_connection_window_size(64 << 20)
            .handshake(hyper_util::rt::TokioIo::new(tcp))
            .await
            .map_err(|e| format!("HTTP/2 handshake: {e}"))?;
    tokio::spawn(conn);
    Ok(send)
}

fn framed(compressed: bool, message: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(5 + message.len());
    out.push(u8::from(compressed));
    out.extend_from_slice(&(message.len() as u32).to_be_bytes());
    out.extend_from_slice(message);
    Bytes::from(out)
}

/// One unary gRPC call; its `grpc-status` and `grpc-message`.
async fn unary(authority: &str, rpc: &str, body: Bytes) -> Result<String, String> {
    let mut send = h2::<Full<Bytes>>(authority).await?;
    let req = hyper::Request::post(format!("http://{authority}{rpc}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(body))
        .map_err(|e| e.to_string())?;
    let resp = send.send_request(req).await.map_err(|e| e.to_string())?;
    let (parts, body) = resp.into_parts();
    let collected = body.collect().await.map_err(|e| e.to_string())?;
    let trailers = collected.trailers().cloned().unwrap_or_default();
    let get = |name: &str| {
        trailers
            .get(name)
            .or_else(|| parts.headers.get(name))
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    Ok(format!(
        "grpc-status {} ({})",
        get("grpc-status"),
        get("grpc-message").chars().take(120).collect::<String>()
    ))
}

/// A JSON array of `n` zeros.
fn zeros(n: usize) -> String {
    let mut s = String::with_capacity(2 * n + 2);
    s.push('[');
    for i in 0..n {
        if i > 0 {
            s.push(',');
        }
        s.push('0');
    }
    s.push(']');
    s
}

async fn post_json(url: &str, body: String) -> Result<String, String> {
    let client = reqwest::Client::new();
    let resp = client
        .post(url)
        .header("content-type", "application/json")
        .body(body)
        .timeout(Duration::from_secs(300))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = resp.status();
    let text = resp.text().await.map_err(|e| e.to_string())?;
    Ok(format!(
        "HTTP {} ({})",
        status.as_u16(),
        text.chars().take(120).collect::<String>()
    ))
}

/// `conformance perf --bench hostile`.
pub async fn hostile(exe: &std::path::Path) -> Result<(), String> {
    let _ = rustls::crypto::ring::default_provider().install_default();

    // 1. OIP gRPC: model_name, then ~49.5M empty inputs.
    let count = 49_500_000usize;
    let mut message = vec![0x0a, 10];
    message.extend_from_slice(b"size_probe");
    message.reserve(2 * count);
    for _ in 0..count {
        message.extend_from_slice(&[0x2a, 0x00]);
    }
    let body = framed(false, &message);
    drop(message);
    let received = body.len();
    let s = server(exe).await?;
    measure(s.pid, "OIP gRPC, ~99 MB of empty inputs", received, || {
        unary(&s.grpc, "/inference.GRPCInferenceService/ModelInfer", body)
    })
    .await?;
    drop(s);

    // 2. OIP REST JSON: ~99 MB of UINT8 zeros to size_probe.
    let n = 49_500_000usize;
    let body = format!(
        r#"{{"inputs":[{{"name":"x","shape":[{n}],"datatype":"UINT8","data":{}}}]}}"#,
        zeros(n)
    );
    let received = body.len();
    let s = server(exe).await?;
    let url = format!("http://{}/v2/models/size_probe/infer", s.rest);
    measure(s.pid, "OIP REST JSON, ~99 MB of zeros", received, || {
        post_json(&url, body)
    })
    .await?;
    drop(s);

    // 3. MindSpore REST JSON: ~99 MB of zeros in one instance.
    let body = format!(r#"{{"instances":[{{"x":{}}}]}}"#, zeros(n));
    let received = body.len();
    let s = server(exe).await?;
    let url = format!("http://{}/model/size_probe:predict", s.rest);
    measure(
        s.pid,
        "MindSpore REST JSON, ~99 MB of zeros",
        received,
        || post_json(&url, body),
    )
    .await?;
    drop(s);

    // 4. Classification of every class of a 64 MiB FP64 output.
    let elements = 8usize << 20;
    let values: Vec<u8> = (0..elements)
        .flat_map(|i| (1e308 - i as f64 * 1e292).to_le_bytes())
        .collect();
    let zero = |shape: Vec<i64>, n: usize| {
        (
            pb::model_infer_request::InferInputTensor {
                datatype: "FP64".into(),
                shape,
                ..Default::default()
            },
            Bytes::from(vec![0u8; 8 * n]),
        )
    };
    let mut inputs = Vec::new();
    let mut raw = Vec::new();
    for (i, (mut t, data)) in [
        zero(vec![], 1),
        (
            pb::model_infer_request::InferInputTensor {
                datatype: "FP64".into(),
                shape: vec![elements as i64],
                ..Default::default()
            },
            Bytes::from(values),
        ),
        zero(vec![1, 1], 1),
        zero(vec![1, 1, 1], 1),
    ]
    .into_iter()
    .enumerate()
    {
        t.name = format!("x{i}");
        inputs.push(t);
        raw.push(data);
    }
    let request = pb::ModelInferRequest {
        model_name: "identity_fp64".into(),
        inputs,
        outputs: vec![pb::model_infer_request::InferRequestedOutputTensor {
            name: "y1".into(),
            parameters: [(
                "classification".to_owned(),
                pb::InferParameter {
                    parameter_choice: Some(pb::infer_parameter::ParameterChoice::Int64Param(
                        elements as i64,
                    )),
                },
            )]
            .into(),
        }],
        raw_input_contents: raw,
        ..Default::default()
    };
    let body = framed(false, &request.encode_to_vec());
    drop(request);
    let received = body.len();
    let s = server(exe).await?;
    measure(
        s.pid,
        "classification of every class of a 64 MiB FP64 output",
        received,
        || unary(&s.grpc, "/inference.GRPCInferenceService/ModelInfer", body),
    )
    .await?;
    drop(s);

    // 5. 64 streams, one gzip message inflating to 60 MiB each, then idle.
    let n = 60usize << 20;
    let request = pb::ModelInferRequest {
        model_name: "size_probe".into(),
        inputs: vec![pb::model_infer_request::InferInputTensor {
            name: "x".into(),
            datatype: "UINT8".into(),
            shape: vec![n as i64],
            ..Default::default()
        }],
        raw_input_contents: vec![Bytes::from(vec![0u8; n])],
        ..Default::default()
    };
    let packed = serving_proto::compression::compress(
        serving_proto::compression::Encoding::Gzip,
        &request.encode_to_vec(),
    );
    drop(request);
    let frame = framed(true, &packed);
    let streams = 64;
    // The streams send one after another: what is in flight at once is one
    // message, inflated; the ratio is over that.
    let received = n;
    let mut open = Vec::new();
    let s = server(exe).await?;
    let grpc2 = s.grpc.clone();
    measure(
        s.pid,
        "64 streams, one gzip message of 60 MiB inflated each (ratio over one inflated message), then idle",
        received,
        || async {
            let mut answered = 0;
            for _ in 0..streams {
                let mut send = h2::<StreamBody<Feed>>(&grpc2).await?;
                let (tx, rx) = tokio::sync::mpsc::channel(1);
                let req = hyper::Request::post(format!(
                    "http://{grpc2}/inference.GRPCInferenceService/ModelStreamInfer"
                ))
                .header("content-type", "application/grpc")
                .header("te", "trailers")
                .header("grpc-encoding", "gzip")
                .body(StreamBody::new(Feed(rx)))
                .map_err(|e| e.to_string())?;
                let resp = send.send_request(req).await.map_err(|e| e.to_string())?;
                tx.send(Ok(Frame::data(frame.clone())))
                    .await
                    .map_err(|_| "the stream closed")?;
                let mut body = resp.into_body();
                // The first frame of the answer (or the end of the stream).
                if let Some(Ok(f)) = body.frame().await
                    && f.is_data()
                {
                    answered += 1;
                }
                open.push((send, tx, body));
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            Ok(format!("{answered} answered, streams left open"))
        },
    )
    .await?;
    let (held, _) = memory::rss(s.pid).ok_or("cannot read /proc")?;
    println!(
        "  while the 64 streams stay open and idle: RSS {:.0} MiB",
        held as f64 / (1 << 20) as f64
    );
    drop(open);
    drop(s);
    Ok(())
}
