//! Compressed messages on the wire: gzip and deflate requests inflated on
//! both transports and both protocols, replies compressed when asked (REST
//! by `Accept-Encoding`; gRPC when the server is configured to and the
//! client accepts), and compression bombs refused while inflating, with
//! the server's memory bounded by the message limit.
//!
//! One test function: the memory figure is the process's peak, which
//! other tests running beside it would disturb.

mod common;

use std::io::Write;
use std::time::Instant;

use bytes::Bytes;
use prost::Message;
use reference_server::server::{Config, Running};
use serving_proto::compression::{self, Encoding};
use serving_proto::pb::inference as pb;

const LIMIT_MB: u32 = 32;

/// `/proc/self/status` field in bytes.
fn status_bytes(field: &str) -> u64 {
    let text = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = text.lines().find(|l| l.starts_with(field)).unwrap();
    let kb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kb * 1024
}

/// Clears the peak RSS so that `VmHWM` is the peak from now on.
fn reset_peak() {
    std::fs::write("/proc/self/clear_refs", "5").unwrap();
}

/// A gzip or zlib stream of `gib` GiB of zeros, made without compressing
/// them: one sync-flushed block of 16 MiB of zeros, byte-aligned and
/// referring only to zeros, repeated. About 16 KiB per 16 MiB.
fn bomb(encoding: Encoding, gib: usize) -> Vec<u8> {
    let zeros = vec![0u8; 16 << 20];
    let level = flate2::Compression::best();
    let (mut head, block) = match encoding {
        Encoding::Gzip => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), level);
            e.write_all(&zeros).unwrap();
            e.flush().unwrap();
            let all = e.get_ref().clone();
            (all[..10].to_vec(), all[10..].to_vec())
        }
        _ => {
            let mut e = flate2::write::ZlibEncoder::new(Vec::new(), level);
            e.write_all(&zeros).unwrap();
            e.flush().unwrap();
            let all = e.get_ref().clone();
            (all[..2].to_vec(), all[2..].to_vec())
        }
    };
    for _ in 0..gib * 64 {
        head.extend_from_slice(&block);
    }
    // A final empty block and a trailer: never reached, the limit comes
    // first.
    head.extend_from_slice(&[3, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    head
}

async fn serve(reply: Option<Encoding>) -> Running {
    common::start(Config {
        max_msg_mb_size: LIMIT_MB,
        max_incoming_mb: LIMIT_MB * 4,
        grpc_response_compression: reply,
        ..common::config()
    })
    .await
}

/// One gRPC call with its body framed as given: the status, the decoded
/// message, the reply's `grpc-encoding` and its body.
async fn grpc_call(
    s: &Running,
    path: &str,
    framed: Vec<u8>,
    headers: &[(&str, &str)],
) -> (i32, String, Option<String>, Bytes) {
    let r = common::raw_grpc_framed(s, path, framed, headers).await;
    let encoding = r
        .headers
        .get("grpc-encoding")
        .map(|v| v.to_str().unwrap().to_owned());
    (r.code, percent_decoded(&r.message), encoding, r.body)
}

/// A `grpc-message` value, percent-decoded.
fn percent_decoded(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && let Some(v) = text
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn frame(compressed: bool, message: &[u8]) -> Vec<u8> {
    let mut out = vec![u8::from(compressed)];
    out.extend_from_slice(&(message.len() as u32).to_be_bytes());
    out.extend_from_slice(message);
    out
}

/// The message of a reply frame, inflated if its flag says so.
fn unframe(body: &[u8], encoding: Option<&str>) -> Vec<u8> {
    let (flag, message) = (body[0], &body[5..]);
    match (flag, encoding) {
        (0, _) => message.to_vec(),
        (1, Some(e)) => {
            compression::inflate(Encoding::from_name(e).unwrap(), message, usize::MAX).unwrap()
        }
        other => panic!("reply frame {other:?}"),
    }
}

fn demo_request() -> pb::ModelInferRequest {
    let x: Vec<u8> = [1f32, 2.0, 3.0, 4.0]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let input = |name: &str| pb::model_infer_request::InferInputTensor {
        name: name.into(),
        datatype: "FP32".into(),
        shape: vec![2, 2],
        ..Default::default()
    };
    pb::ModelInferRequest {
        model_name: "add".into(),
        inputs: vec![input("x1"), input("x2")],
        raw_input_contents: vec![Bytes::from(x.clone()), Bytes::from(x)],
        ..Default::default()
    }
}

const INFER_JSON: &str = r#"{"inputs":[{"name":"x1","shape":[2,2],"datatype":"FP32","data":[1,2,3,4]},{"name":"x2","shape":[2,2],"datatype":"FP32","data":[1,1,1,1]}]}"#;
const MS_JSON: &str = r#"{"instances":[{"x1":[[1.0,2.0],[3.0,4.0]],"x2":[[1.0,1.0],[1.0,1.0]]}]}"#;

async fn post(
    s: &Running,
    path: &str,
    body: Vec<u8>,
    headers: &[(&str, &str)],
) -> (u16, Option<String>, Bytes) {
    let mut req = common::http().post(common::rest(s, path)).body(body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let coding = resp
        .headers()
        .get("content-encoding")
        .map(|v| v.to_str().unwrap().to_owned());
    (status, coding, resp.bytes().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn compressed_both_ways_and_bombs_refused_with_memory_bounded() {
    let gzip_server = serve(Some(Encoding::Gzip)).await;
    let plain = serve(None).await;
    let want_y = [2f32, 3.0, 4.0, 5.0];

    // gRPC ModelInfer (framed without tonic) and ModelConfig (tonic), in
    // each encoding, the reply compressed only by the server configured to
    // and only for a client that accepts it.
    let infer = demo_request().encode_to_vec();
    for e in [Encoding::Gzip, Encoding::Deflate] {
        let packed = frame(true, &compression::compress(e, &infer));
        for (server, accept, reply) in [
            (&gzip_server, "gzip", Some("gzip")),
            (&gzip_server, "identity", None),
            (&plain, "gzip,deflate", None),
        ] {
            let (code, message, coding, body) = grpc_call(
                server,
                "/inference.GRPCInferenceService/ModelInfer",
                packed.clone(),
                &[
                    ("grpc-encoding", e.name()),
                    ("grpc-accept-encoding", accept),
                ],
            )
            .await;
            assert_eq!(code, 0, "{e:?}: {message}");
            assert_eq!(coding.as_deref(), reply, "{e:?} accept {accept}");
            let r = pb::ModelInferResponse::decode(&unframe(&body, coding.as_deref())[..]).unwrap();
            let y: Vec<f32> = r.raw_output_contents[0]
                .chunks(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect();
            assert_eq!(y, [2.0, 4.0, 6.0, 8.0]);
        }
        let config = pb::ModelConfigRequest {
            name: "add".into(),
            version: String::new(),
        }
        .encode_to_vec();
        let (code, message, coding, body) = grpc_call(
            &gzip_server,
            "/inference.GRPCInferenceService/ModelConfig",
            frame(true, &compression::compress(e, &config)),
            &[
                ("grpc-encoding", e.name()),
                ("grpc-accept-encoding", "gzip"),
            ],
        )
        .await;
        assert_eq!(code, 0, "{message}");
        assert_eq!(coding.as_deref(), Some("gzip"));
        let r = pb::ModelConfigResponse::decode(&unframe(&body, coding.as_deref())[..]).unwrap();
        assert_eq!(r.config.unwrap().name, "add");
    }

    // REST, both protocols: gzip and deflate bodies, replies compressed
    // when Accept-Encoding asks, with the binary extension's header length
    // counting the inflated JSON.
    for e in [Encoding::Gzip, Encoding::Deflate] {
        for (path, body) in [
            ("/v2/models/add/infer", INFER_JSON),
            ("/model/add:add_common", MS_JSON),
        ] {
            let (status, coding, reply) = post(
                &plain,
                path,
                compression::compress(e, body.as_bytes()),
                &[
                    ("content-encoding", e.name()),
                    ("accept-encoding", e.name()),
                ],
            )
            .await;
            assert_eq!(status, 200, "{path} {e:?}");
            assert_eq!(coding.as_deref(), Some(e.name()), "{path}");
            let text = compression::inflate(e, &reply, usize::MAX).unwrap();
            let v: serde_json::Value = serde_json::from_slice(&text).unwrap();
            assert!(v.to_string().contains('5'), "{v}");
        }
        let header = r#"{"inputs":[{"name":"x1","shape":[2,2],"datatype":"FP32","parameters":{"binary_data_size":16}},{"name":"x2","shape":[2,2],"datatype":"FP32","parameters":{"binary_data_size":16}}],"outputs":[{"name":"y","parameters":{"binary_data":true}}]}"#;
        let mut body = header.as_bytes().to_vec();
        for _ in 0..2 {
            body.extend(want_y.iter().map(|v| v - 1.0).flat_map(|v| v.to_le_bytes()));
        }
        let len = header.len().to_string();
        let (status, _, reply) = post(
            &plain,
            "/v2/models/add/infer",
            compression::compress(e, &body),
            &[
                ("content-encoding", e.name()),
                ("inference-header-content-length", &len),
            ],
        )
        .await;
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&reply));
        let y: Vec<f32> = reply[reply.len() - 16..]
            .chunks(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        assert_eq!(y, [2.0, 4.0, 6.0, 8.0]);
    }
    let (status, coding, _) = post(&plain, "/v2/models/add/infer", INFER_JSON.into(), &[]).await;
    assert_eq!(
        (status, coding),
        (200, None),
        "no Accept-Encoding, no compression"
    );
    // Only successful inference replies are compressed, as Triton's are:
    // tritonclient's aio client inflates those only.
    let (status, coding, _) = post(
        &plain,
        "/v2/models/nope/infer",
        INFER_JSON.into(),
        &[("accept-encoding", "gzip")],
    )
    .await;
    assert_eq!((status, coding), (404, None), "an error is not compressed");
    for path in ["/v2/models/add/stats", "/v2/models/add", "/v2"] {
        let r = common::http()
            .get(common::rest(&plain, path))
            .header("accept-encoding", "gzip")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
        assert_eq!(r.headers().get("content-encoding"), None, "{path}");
        let _: serde_json::Value = r.json().await.unwrap();
    }

    // Bombs: 4 MiB that inflate to 4 GiB, against a 32 MiB limit.
    let bombs = [Encoding::Gzip, Encoding::Deflate].map(|e| (e, bomb(e, 4)));
    let started = Instant::now();
    let mut figures = Vec::new();
    // Routes that inflate on the same threads may reuse memory an earlier
    // one freed (the allocator keeps it): the first of each kind is its
    // own cost.
    for route in [
        "gRPC ModelStreamInfer",
        "REST OIP",
        "REST MindSpore",
        "gRPC ModelInfer",
    ] {
        let mut most = 0;
        for (e, b) in &bombs {
            // The allocator returns freed memory to the system after a
            // delay: wait for it, so that each bomb's peak is its own.
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            let baseline = status_bytes("VmRSS:");
            reset_peak();
            assert!(b.len() < 5 << 20, "{} bytes", b.len());
            match route {
                "REST OIP" | "REST MindSpore" => {
                    let path = if route == "REST OIP" {
                        "/v2/models/add/infer"
                    } else {
                        "/model/add:add_common"
                    };
                    let (status, _, reply) =
                        post(&plain, path, b.clone(), &[("content-encoding", e.name())]).await;
                    assert_eq!(
                        status,
                        413,
                        "{path} {e:?}: {}",
                        String::from_utf8_lossy(&reply)
                    );
                }
                _ => {
                    let path = if route == "gRPC ModelInfer" {
                        "/inference.GRPCInferenceService/ModelInfer"
                    } else {
                        "/inference.GRPCInferenceService/ModelStreamInfer"
                    };
                    let (code, message, _, _) =
                        grpc_call(&plain, path, frame(true, b), &[("grpc-encoding", e.name())])
                            .await;
                    assert!(code == 8 || code == 13, "{path} {e:?}: {code} {message}");
                    assert!(
                        message.contains("inflates past the") || message.contains("decompress"),
                        "{message}"
                    );
                }
            }
            // The process holds client and server: what a bomb costs is
            // the server's inflated bytes up to the limit, and both sides'
            // copies of the 4 MiB in flight.
            let grew = status_bytes("VmHWM:").saturating_sub(baseline);
            most = most.max(grew);
            assert!(
                grew < (u64::from(LIMIT_MB) * 2) << 20,
                "{route} {e:?}: peak RSS grew by {} MiB",
                grew >> 20
            );
        }
        figures.push(format!("{route} +{} MiB", most >> 20));
    }
    println!(
        "compression bombs: 4 MiB inflating to 4 GiB, gzip and deflate, all refused against a {LIMIT_MB} MiB limit; peak RSS over the process's before each route: {}",
        figures.join(", ")
    );
    let _ = started;
    for s in [&plain, &gzip_server] {
        let (status, _, _) = post(s, "/v2/models/add/infer", INFER_JSON.into(), &[]).await;
        assert_eq!(status, 200, "the server still serves");
    }
    gzip_server.shutdown().await;
    plain.shutdown().await;
}
