//! Every byte a client can make the server hold is bounded and charged to
//! the server-wide budget (`--max-incoming-mb`) before it is allocated:
//! requests whose decoding would amplify their bytes, compressed stream
//! messages while they inflate and once idle, control RPCs, and the text
//! of a classification. Each case here was a measured defect: a 10 MB
//! `ModelInferRequest` of empty inputs peaked at 2.7 GB, six idle streams
//! held 700 MiB, a classification built 85 MB of text before refusing it.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use prost::Message;
use reference_server::onnx::{self, Dim};
use reference_server::server::{Config, Running};
use serving_proto::DataType;
use serving_proto::compression::{self, Encoding};
use serving_proto::pb::inference as oip_pb;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const INFER: &str = "/inference.GRPCInferenceService/ModelInfer";
const STREAM: &str = "/inference.GRPCInferenceService/ModelStreamInfer";
const PREDICT: &str = "/mindspore.serving.proto.MSService/Predict";

fn varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// `name` in field 1, then `count` empty entries of field `field`.
fn empty_entries(name: &[u8], field: u8, count: usize) -> Vec<u8> {
    let mut out = vec![0x0a];
    varint(name.len() as u64, &mut out);
    out.extend_from_slice(name);
    out.reserve(2 * count);
    for _ in 0..count {
        out.extend_from_slice(&[field << 3 | 2, 0]);
    }
    out
}

async fn small_server(mb: u32) -> (tempfile::TempDir, Running) {
    let repo = common::repository();
    let server = common::start(Config {
        model_repository: Some(repo.path().to_owned()),
        max_msg_mb_size: mb,
        max_incoming_mb: mb,
        ..common::config()
    })
    .await;
    (repo, server)
}

fn size_request(len: usize) -> oip_pb::ModelInferRequest {
    oip_pb::ModelInferRequest {
        model_name: "size".into(),
        inputs: vec![oip_pb::model_infer_request::InferInputTensor {
            name: "x".into(),
            datatype: "UINT8".into(),
            shape: vec![len as i64],
            ..Default::default()
        }],
        raw_input_contents: vec![Bytes::from(vec![0u8; len])],
        ..Default::default()
    }
}

/// The messages of a gRPC body's frames.
fn frames(body: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = body;
    std::iter::from_fn(move || {
        let (header, after) = rest.split_at_checked(5)?;
        let len = u32::from_be_bytes(header[1..5].try_into().ok()?) as usize;
        let (message, after) = after.split_at_checked(len)?;
        rest = after;
        Some(message)
    })
}

async fn still_serves(server: &Running, len: usize) {
    let mut oip = common::oip(server).await;
    let reply = oip
        .model_infer(size_request(len))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.raw_output_contents[0][..], (len as i64).to_le_bytes());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_that_decode_to_more_than_the_budget_are_refused_before_decoding() {
    let (_repo, server) = small_server(8).await;
    // 3.9 MB on the wire; prost would build ~1.9M structs of ~300 bytes.
    let count = 1_950_000;
    for (path, message, what) in [
        (INFER, empty_entries(b"size", 5, count), "empty inputs"),
        (INFER, empty_entries(b"size", 6, count), "empty outputs"),
        (
            INFER,
            empty_entries(b"size", 7, count),
            "empty raw contents",
        ),
        // PredictRequest: field 1 is the servable spec, field 2 instances.
        (PREDICT, empty_entries(b"", 2, count), "empty instances"),
    ] {
        let started = Instant::now();
        let (code, text) = common::raw_grpc(&server, path, &message, &[]).await;
        let took = started.elapsed();
        println!("{what}: {} bytes refused in {took:?}", message.len());
        assert_eq!(code, 8, "{what}: RESOURCE_EXHAUSTED, got {code} {text}");
        assert!(
            text.contains("bytes%20of%20server%20memory")
                || text.contains("bytes of server memory"),
            "{what}: {text}"
        );
        assert_eq!(server.state.incoming.held(), 0, "{what}: all given back");
    }
    // The same on a stream: the refused message is answered in its turn,
    // in band, and the stream goes on to serve the next one.
    let mut framed = vec![];
    for message in [
        empty_entries(b"size", 5, count),
        size_request(1000).encode_to_vec(),
    ] {
        framed.push(0u8);
        framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
        framed.extend_from_slice(&message);
    }
    let reply = common::raw_grpc_framed(&server, STREAM, framed, &[]).await;
    assert_eq!(reply.code, 0, "{}", reply.message);
    let answers: Vec<oip_pb::ModelStreamInferResponse> = frames(&reply.body)
        .map(|m| oip_pb::ModelStreamInferResponse::decode(m).unwrap())
        .collect();
    assert_eq!(answers.len(), 2, "{answers:?}");
    assert!(
        answers[0].error_message.contains("bytes of server memory"),
        "{:?}",
        answers[0].error_message
    );
    assert_eq!(answers[1].error_message, "");
    let served = answers[1].infer_response.as_ref().unwrap();
    assert_eq!(served.raw_output_contents[0][..], 1000i64.to_le_bytes());
    // Ordinary requests of the same size are served.
    still_serves(&server, 4 << 20).await;
    assert_eq!(server.state.incoming.held(), 0);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_of_the_whole_budget_is_served_by_an_idle_server() {
    // --max-incoming-mb equal to --max-msg-mb-size, the documented
    // minimum: the largest request still fits (its gathering once charged
    // the message and its alignment slack before giving back the pieces).
    let (_repo, server) = small_server(8).await;
    still_serves(&server, (8 << 20) - 4096).await;
    let mut framed = Vec::new();
    let message = size_request((8 << 20) - 4096).encode_to_vec();
    framed.push(0);
    framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
    framed.extend_from_slice(&message);
    let reply = common::raw_grpc_framed(&server, STREAM, framed, &[]).await;
    assert_eq!(reply.code, 0, "{}", reply.message);
    assert_eq!(server.state.incoming.held(), 0);
    server.shutdown().await;
}

/// A minimal `Stream` over a tokio channel (no tokio-stream dependency).
struct Frames(
    tokio::sync::mpsc::Receiver<Result<http_body::Frame<Bytes>, std::convert::Infallible>>,
);

impl futures_util::Stream for Frames {
    type Item = Result<http_body::Frame<Bytes>, std::convert::Infallible>;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.0.poll_recv(cx)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_streams_hold_nothing_once_their_requests_are_answered() {
    use http_body_util::BodyExt;
    let (_repo, server) = small_server(16).await;
    // One gzip message of ~60 KiB inflating to 12 MiB on each of six
    // streams, which then stay open and silent.
    let message = size_request(12 << 20).encode_to_vec();
    let packed = compression::compress(Encoding::Gzip, &message);
    assert!(packed.len() < 100 << 10, "{}", packed.len());
    let mut frame = vec![1u8];
    frame.extend_from_slice(&(packed.len() as u32).to_be_bytes());
    frame.extend_from_slice(&packed);
    let frame = Bytes::from(frame);
    let mut open = Vec::new();
    for _ in 0..6 {
        let mut send = common::h2(&server).await;
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let req = http::Request::post(format!("http://{}{STREAM}", server.grpc_address))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .header("grpc-encoding", "gzip")
            .body(http_body_util::StreamBody::new(Frames(rx)))
            .unwrap();
        let response = send.send_request(req).await.unwrap();
        tx.send(Ok(http_body::Frame::data(frame.clone())))
            .await
            .unwrap();
        let mut body = response.into_body();
        // The answer: one data frame with the 8-byte shape of 12 MiB.
        let mut got = Vec::new();
        while got.len() < 5 {
            let f = body.frame().await.unwrap().unwrap();
            got.extend_from_slice(&f.into_data().unwrap());
        }
        let len = u32::from_be_bytes(got[1..5].try_into().unwrap()) as usize;
        while got.len() < 5 + len {
            let f = body.frame().await.unwrap().unwrap();
            got.extend_from_slice(&f.into_data().unwrap());
        }
        let answer = oip_pb::ModelStreamInferResponse::decode(&got[5..5 + len]).unwrap();
        assert_eq!(answer.error_message, "");
        let reply = answer.infer_response.unwrap();
        assert_eq!(
            reply.raw_output_contents[0][..],
            (12i64 << 20).to_le_bytes()
        );
        open.push((send, tx, body));
    }
    // Six open streams, every request answered: nothing is held for them.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(server.state.incoming.held(), 0);
    // A bomb: 100 KiB inflating past the 16 MiB limit ends its stream with
    // RESOURCE_EXHAUSTED, having held at most the limit.
    let bomb = compression::compress(Encoding::Gzip, &vec![0u8; 17 << 20]);
    let mut framed = vec![1u8];
    framed.extend_from_slice(&(bomb.len() as u32).to_be_bytes());
    framed.extend_from_slice(&bomb);
    let reply =
        common::raw_grpc_framed(&server, STREAM, framed, &[("grpc-encoding", "gzip")]).await;
    assert_eq!(reply.code, 8, "{}", reply.message);
    drop(open);
    assert_eq!(server.state.incoming.held(), 0);
    still_serves(&server, 1 << 20).await;
    server.shutdown().await;
}

#[tokio::test]
async fn control_rpcs_take_control_sized_messages() {
    let (_repo, server) = small_server(8).await;
    let index = oip_pb::RepositoryIndexRequest {
        repository_name: "r".repeat(100 << 10),
        ready: false,
    };
    let (code, text) = common::raw_grpc(
        &server,
        "/inference.GRPCInferenceService/RepositoryIndex",
        &index.encode_to_vec(),
        &[],
    )
    .await;
    assert_eq!(code, 8, "{text}");
    assert!(text.contains("65536"), "{text}");
    // A compressed one is held to the same once inflated.
    let index = oip_pb::RepositoryIndexRequest {
        repository_name: "r".repeat(1 << 20),
        ready: false,
    };
    let packed = compression::compress(Encoding::Gzip, &index.encode_to_vec());
    let mut framed = vec![1u8];
    framed.extend_from_slice(&(packed.len() as u32).to_be_bytes());
    framed.extend_from_slice(&packed);
    let reply = common::raw_grpc_framed(
        &server,
        "/inference.GRPCInferenceService/RepositoryIndex",
        framed,
        &[("grpc-encoding", "gzip")],
    )
    .await;
    assert_eq!(reply.code, 8, "{}", reply.message);
    // An ordinary one is answered.
    let mut oip = common::oip(&server).await;
    oip.repository_index(oip_pb::RepositoryIndexRequest::default())
        .await
        .unwrap();
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_classification_longer_than_the_reply_limit_is_refused_before_it_is_written() {
    // A 2 MiB FP64 output of values near 1e308: each class prints 316
    // bytes, all of them 83 MB.
    let repo = tempfile::tempdir().unwrap();
    let n = 262_144usize;
    common::write(
        repo.path(),
        "scores/1/model.onnx",
        &onnx::identity(DataType::Fp64, &[Dim::Fixed(n as i64)]),
    );
    let server = common::start(Config {
        model_repository: Some(repo.path().to_owned()),
        max_msg_mb_size: 8,
        ..common::config()
    })
    .await;
    let values: Vec<u8> = (0..n)
        .flat_map(|i| (1e308 - i as f64 * 1e292).to_le_bytes())
        .collect();
    let request = |k: i64| oip_pb::ModelInferRequest {
        model_name: "scores".into(),
        inputs: vec![oip_pb::model_infer_request::InferInputTensor {
            name: "x".into(),
            datatype: "FP64".into(),
            shape: vec![n as i64],
            ..Default::default()
        }],
        outputs: vec![oip_pb::model_infer_request::InferRequestedOutputTensor {
            name: "y".into(),
            parameters: [(
                "classification".to_owned(),
                oip_pb::InferParameter {
                    parameter_choice: Some(oip_pb::infer_parameter::ParameterChoice::Int64Param(k)),
                },
            )]
            .into(),
        }],
        raw_input_contents: vec![Bytes::from(values.clone())],
        ..Default::default()
    };
    let mut oip = common::oip(&server).await;
    let started = Instant::now();
    let e = oip.model_infer(request(n as i64)).await.unwrap_err();
    println!("refused in {:?}", started.elapsed());
    assert_eq!(e.code(), tonic::Code::ResourceExhausted, "{e}");
    assert!(
        e.message()
            .contains("takes more than 8388608 bytes of text"),
        "{}",
        e.message()
    );
    // The same output with a k whose text fits is answered.
    let reply = oip.model_infer(request(1000)).await.unwrap().into_inner();
    assert_eq!(reply.outputs[0].shape, [1000]);
    server.shutdown().await;
}

/// Reads one gRPC message from `body`, or `None` at the body's end (its
/// trailers then in `trailers`).
async fn next_answer(
    body: &mut hyper::body::Incoming,
    got: &mut Vec<u8>,
    trailers: &mut Option<http::HeaderMap>,
) -> Option<oip_pb::ModelStreamInferResponse> {
    use http_body_util::BodyExt;
    loop {
        if got.len() >= 5 {
            let len = u32::from_be_bytes(got[1..5].try_into().unwrap()) as usize;
            if got.len() >= 5 + len {
                let answer = oip_pb::ModelStreamInferResponse::decode(&got[5..5 + len]).unwrap();
                got.drain(..5 + len);
                return Some(answer);
            }
        }
        let frame = body.frame().await?.unwrap();
        match frame.into_data() {
            Ok(data) => got.extend_from_slice(&data),
            Err(frame) => {
                *trailers = frame.into_trailers().ok();
                return None;
            }
        }
    }
}

fn framed(message: &[u8]) -> Bytes {
    let mut out = vec![0u8];
    out.extend_from_slice(&(message.len() as u32).to_be_bytes());
    out.extend_from_slice(message);
    Bytes::from(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_body_fails_at_the_body_timeout_and_a_silent_stream_does_not() {
    let repo = common::repository();
    let server = common::start(Config {
        model_repository: Some(repo.path().to_owned()),
        request_body_timeout: Some(Duration::from_secs(1)),
        ..common::config()
    })
    .await;
    let message = framed(&size_request(1 << 20).encode_to_vec());
    let half = message.slice(..message.len() / 2);
    let within = |took: Duration, what: &str| {
        assert!(
            took >= Duration::from_millis(900) && took < Duration::from_secs(5),
            "{what}: failed after {took:?}, not at the 1 s timeout"
        );
    };

    // A unary call that sends half its message, then nothing.
    let mut send = common::h2(&server).await;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let req = http::Request::post(format!("http://{}{INFER}", server.grpc_address))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(http_body_util::StreamBody::new(Frames(rx)))
        .unwrap();
    let started = Instant::now();
    let pending = send.send_request(req);
    tx.send(Ok(http_body::Frame::data(half.clone())))
        .await
        .unwrap();
    let response = pending.await.unwrap();
    within(started.elapsed(), "unary gRPC");
    let status = response.headers().get("grpc-status").unwrap();
    assert_eq!(status, "4", "DEADLINE_EXCEEDED: {:?}", response.headers());
    assert_eq!(server.state.incoming.held(), 0, "given back");

    // A REST request whose body stops after 10 of its 1000 bytes.
    let mut tcp = tokio::net::TcpStream::connect(server.rest_address)
        .await
        .unwrap();
    let started = Instant::now();
    tcp.write_all(
        b"POST /v2/models/size/infer HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{\"inputs\":",
    )
    .await
    .unwrap();
    let mut reply = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(8), tcp.read_to_end(&mut reply)).await;
    within(started.elapsed(), "REST");
    let reply = String::from_utf8_lossy(&reply);
    assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");
    assert!(reply.contains("--request-body-timeout"), "{reply}");
    // The metrics record the error's own class, not one read back from
    // the 408 (which used to count as INTERNAL).
    let metrics = common::http()
        .get(common::rest(&server, "/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(
            r#"serving_requests_total{protocol="oip",transport="rest",model="size",code="DEADLINE_EXCEEDED"} 1"#
        ),
        "{metrics}"
    );

    // A stream: silent between its messages for longer than the timeout,
    // and served; then half a message and nothing, which ends it.
    let mut send = common::h2(&server).await;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let req = http::Request::post(format!("http://{}{STREAM}", server.grpc_address))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(http_body_util::StreamBody::new(Frames(rx)))
        .unwrap();
    let response = send.send_request(req).await.unwrap();
    let mut body = response.into_body();
    let (mut got, mut trailers) = (Vec::new(), None);
    for _ in 0..2 {
        tx.send(Ok(http_body::Frame::data(message.clone())))
            .await
            .unwrap();
        let answer = next_answer(&mut body, &mut got, &mut trailers)
            .await
            .unwrap();
        assert_eq!(answer.error_message, "");
        tokio::time::sleep(Duration::from_millis(2500)).await;
    }
    let started = Instant::now();
    tx.send(Ok(http_body::Frame::data(half))).await.unwrap();
    assert!(
        next_answer(&mut body, &mut got, &mut trailers)
            .await
            .is_none()
    );
    within(started.elapsed(), "stream");
    let trailers = trailers.unwrap();
    assert_eq!(trailers.get("grpc-status").unwrap(), "4", "{trailers:?}");
    assert_eq!(server.state.incoming.held(), 0);
    drop(tx);
    still_serves(&server, 1000).await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_bodies_that_decode_to_more_than_the_budget_are_refused_while_decoding() {
    let (_repo, server) = small_server(8).await;
    let http = common::http();
    // 3 MB of text; 1M elements of 32-byte handles (32 MB) decoded.
    let count = 1_000_000;
    let data = vec![r#""""#; count].join(",");
    let body = format!(
        r#"{{"inputs":[{{"name":"x","shape":[{count}],"datatype":"BYTES","data":[{data}]}}]}}"#
    );
    // A MindSpore body of 500k instances of one input: 4 MB of text, a map
    // of a few hundred bytes each.
    let instances = vec![r#"{"x":1}"#; 500_000].join(",");
    let ms_body = format!(r#"{{"instances":[{instances}]}}"#);
    for (path, body, what) in [
        ("/v2/models/size/infer", body, "OIP BYTES of empty strings"),
        ("/model/size:predict", ms_body, "MindSpore tiny instances"),
    ] {
        assert!(body.len() < 8 << 20, "{what}: {}", body.len());
        let reply = http
            .post(common::rest(&server, path))
            .body(body)
            .send()
            .await
            .unwrap();
        let status = reply.status();
        let text = reply.text().await.unwrap();
        assert_eq!(status, 413, "{what}: {text}");
        assert!(
            text.contains("needs at least") && text.contains("--max-incoming-mb"),
            "{what}: {text}"
        );
        assert_eq!(server.state.incoming.held(), 0, "{what}: all given back");
    }
    // Ordinary REST requests are served, and give back what they held.
    let reply = http
        .post(common::rest(&server, "/v2/models/size/infer"))
        .body(r#"{"inputs":[{"name":"x","shape":[3],"datatype":"UINT8","data":[1,2,3]}]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 200, "{}", reply.text().await.unwrap());
    // A raw binary body (`Inference-Header-Content-Length: 0`): the data of
    // the model's one input, its variable dimension from the body's size.
    let reply = http
        .post(common::rest(&server, "/v2/models/size/infer"))
        .header("inference-header-content-length", "0")
        .body(vec![7u8; 1000])
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 200);
    let header: usize = reply.headers()["inference-header-content-length"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let body = reply.bytes().await.unwrap();
    // The answer's output as binary data: n = 1000, INT64.
    assert_eq!(body[header..], 1000i64.to_le_bytes());
    assert_eq!(server.state.incoming.held(), 0);
    server.shutdown().await;
}
