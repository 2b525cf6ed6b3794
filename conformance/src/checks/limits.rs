//! Message-size limits: requests of exactly limit-1, limit and limit+1
//! bytes, and the client's own cap.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use base64::Engine as _;
use prost::Message;
use serving_client::{Client, Error, SizeSide, Tensor};
use serving_proto::pb::inference::{
    self as oip_pb, grpc_inference_service_client::GrpcInferenceServiceClient,
};
use serving_proto::pb::mindspore::ms_service_client::MsServiceClient;
use serving_proto::{DataType, NamedTensors};

use crate::check::{BOTH, Check, Outcome, Suite, describe};
use crate::profile::Role;
use crate::target::{Family, Target, Transport};

pub(crate) fn checks() -> Vec<Check> {
    vec![
        Check {
            name: "limits.boundary",
            families: BOTH,
            summary: "size_probe requests of exactly limit-1, limit and limit+1 bytes (gRPC: the protobuf message; REST: the body): the first two succeed and return the length, the third gets the size error (MindSpore gRPC: RESOURCE_EXHAUSTED `Received message larger than max (<size> vs. <limit>)`; MindSpore REST: `http message is bigger than <limit>`; OIP: RESOURCE_EXHAUSTED, or a 4xx with an error body)",
            spec: "mindspore-serving.md §2.8, §3.2, §9 (max_msg_mb_size, strictly greater); gRPC max receive message size; OIP REST: only a declared limit",
            run: |s, t| Box::pin(boundary(s, t)),
        },
        Check {
            name: "limits.client_cap",
            families: BOTH,
            summary: "a client capped at 1 MiB sending 2 MiB fails locally with `Sent message larger than max (<size> vs. 1048576)` and opens no connection",
            spec: "mindspore-serving.md §2.8 (the Python client's 512 MiB cap), §10",
            run: |s, t| Box::pin(client_cap(s, t)),
        },
    ]
}

/// The result of one sized request.
enum Answer {
    /// Succeeded: the length the model saw.
    Length(i64),
    /// Refused: gRPC code or HTTP status, and the text.
    Refused(String, String),
}

async fn boundary(suite: &Suite, target: &Target) -> Outcome {
    let Some(limit) = suite.limits.of(target) else {
        return Outcome::NotApplicable(match (target.family, target.transport) {
            (Family::OpenInference, Transport::Http) => "the Open Inference Protocol names no REST body limit, and none is declared for this target (SERVING_TARGET_MAX_MSG_MB_HTTP or the profile's limits.http)".into(),
            (Family::OpenInference, Transport::Grpc) => "the Open Inference Protocol names no gRPC message limit (Triton's is 2 GiB, gRPC's default 4 MiB), and none is declared for this target (SERVING_TARGET_MAX_MSG_MB_GRPC or the profile's limits.grpc_mb)".into(),
            _ => "no message limit is declared for this transport (SERVING_TARGET_MAX_MSG_MB, the profile's limits)".into(),
        });
    };
    let probe_model = match suite.model(target, Role::SizeProbe).await {
        Ok(m) => m,
        Err(why) => return Outcome::NotApplicable(why),
    };
    let mut lines = Vec::new();
    for size in [limit - 1, limit, limit + 1] {
        let answer = match (target.family, target.transport) {
            (Family::MindSpore, Transport::Grpc) => ms_grpc(suite, target, size).await,
            (Family::MindSpore, Transport::Http) => ms_rest(suite, target, size).await,
            (Family::OpenInference, Transport::Grpc) => {
                oip_grpc(suite, target, &probe_model, size).await
            }
            (Family::OpenInference, Transport::Http) => {
                oip_rest(suite, target, &probe_model, size).await
            }
        };
        let (answer, payload) = match answer {
            Ok(a) => a,
            Err(e) => return Outcome::Fail(format!("{size} bytes: {e}")),
        };
        match (size <= limit, answer) {
            (true, Answer::Length(n)) if n == payload as i64 => lines.push(format!("{size}: ok")),
            (true, Answer::Length(n)) => {
                return Outcome::Fail(format!(
                    "{size} bytes: the model saw {n} bytes, not {payload}"
                ));
            }
            (true, Answer::Refused(code, text)) => {
                return Outcome::Fail(format!(
                    "{size} bytes (limit {limit}) refused: {code} {text}"
                ));
            }
            (false, Answer::Length(_)) => {
                return Outcome::Fail(format!("{size} bytes accepted over a limit of {limit}"));
            }
            (false, Answer::Refused(code, text)) => {
                let ok = match (target.family, target.transport) {
                    (Family::MindSpore, Transport::Grpc) => {
                        code == "ResourceExhausted"
                            && text
                                == format!("Received message larger than max ({size} vs. {limit})")
                    }
                    (Family::MindSpore, Transport::Http) => {
                        text == format!("http message is bigger than {limit}")
                    }
                    (Family::OpenInference, Transport::Grpc) => code == "ResourceExhausted",
                    (Family::OpenInference, Transport::Http) => code.starts_with('4'),
                };
                if !ok {
                    return Outcome::Fail(format!(
                        "{size} bytes over {limit}: expected the spec's size error, got {code} '{text}'"
                    ));
                }
                lines.push(format!("{size}: {code} '{text}'"));
            }
        }
        if let Err(e) = suite.still_correct(target).await {
            return Outcome::Fail(e);
        }
    }
    Outcome::Pass(lines.join("; "))
}

/// The largest payload `n` whose encoding `len(n)` is at most `size`
/// (`len` grows with `n`), by bisection.
fn fit(size: u64, len: impl Fn(u64) -> u64) -> u64 {
    let (mut lo, mut hi) = (0u64, size);
    while lo < hi {
        let mid = lo + (hi - lo).div_ceil(2);
        if len(mid) <= size {
            lo = mid
        } else {
            hi = mid - 1
        }
    }
    lo
}

/// `n` zero bytes of `zeros` (shared: the bisections build a request per
/// step, and the payload can be hundreds of MiB).
fn payload(zeros: &bytes::Bytes, n: u64) -> bytes::Bytes {
    zeros.slice(..n as usize)
}

fn probe(zeros: &bytes::Bytes, n: u64) -> NamedTensors {
    let t = Tensor::from_raw(DataType::Uint8, vec![n as i64], payload(zeros, n)).expect("n bytes");
    [("x".to_string(), t)].into()
}

async fn ms_grpc(suite: &Suite, target: &Target, size: u64) -> Result<(Answer, u64), String> {
    let zeros = bytes::Bytes::from(vec![0u8; size as usize]);
    let encode = |n: u64, version: u64| {
        serving_proto::mindspore::grpc::encode_request(
            "size_probe",
            "predict",
            version,
            &[probe(&zeros, n)],
        )
        .expect("uint8 encodes")
    };
    let len = |version: u64| move |n: u64| encode(n, version).encoded_len() as u64;
    let mut n = fit(size, len(0));
    let mut request = encode(n, 0);
    // A length prefix that grew skips a size: asking for version 1 (which
    // every layout has) adds two bytes.
    if request.encoded_len() as u64 != size {
        n = fit(size, len(1));
        request = encode(n, 1);
    }
    if request.encoded_len() as u64 != size {
        return Err(format!(
            "cannot build a request of exactly {size} bytes (got {})",
            request.encoded_len()
        ));
    }
    let mut client = MsServiceClient::new(suite.channel(target).await?)
        .max_encoding_message_size(usize::MAX)
        .max_decoding_message_size(usize::MAX);
    match client.predict(request).await {
        Ok(reply) => {
            let outcome = serving_proto::mindspore::grpc::decode_reply(reply.into_inner(), 1)
                .map_err(|e| e.to_string())?;
            let result = outcome
                .instance(0)
                .ok_or("no result")?
                .map_err(|e| format!("in-band error {}: {}", e.code, e.message))?;
            let v = result
                .get("n")
                .ok_or("no output n")?
                .to_vec::<i64>()
                .map_err(|e| e.to_string())?;
            Ok((Answer::Length(v[0]), n))
        }
        Err(status) => Ok((
            Answer::Refused(format!("{:?}", status.code()), status.message().to_owned()),
            n,
        )),
    }
}

fn ms_body(n: u64) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(vec![0u8; n as usize]);
    format!(
        "{{\"instances\":[{{\"x\":{{\"b64\":\"{b64}\",\"type\":\"uint8\",\"shape\":[{n}]}}}}]}}"
    )
}

/// A JSON body padded with trailing white space to exactly `size` bytes.
fn padded(mut body: String, size: u64) -> Result<String, String> {
    body.push_str(&" ".repeat((size as usize).saturating_sub(body.len())));
    if body.len() as u64 != size {
        return Err(format!("cannot build a body of exactly {size} bytes"));
    }
    Ok(body)
}

async fn ms_rest(suite: &Suite, target: &Target, size: u64) -> Result<(Answer, u64), String> {
    let ms_len =
        |n: u64| (n.div_ceil(3) * 4) + ms_body(0).len() as u64 + n.to_string().len() as u64 - 1;
    let n = fit(size, ms_len);
    let body = padded(ms_body(n), size)?;
    let url = format!("{}/model/size_probe:predict", target.http_base());
    let reply = suite
        .http()?
        .post(url)
        .body(body)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = reply.status().as_u16();
    let v: serde_json::Value = reply
        .json()
        .await
        .map_err(|e| format!("HTTP {status}, not JSON: {e}"))?;
    if let Some(e) = v.get("error_msg").and_then(|e| e.as_str()) {
        return Ok((Answer::Refused(status.to_string(), e.to_owned()), n));
    }
    let got = v
        .pointer("/instances/0/n")
        .and_then(|n| n.get(0).or(Some(n)))
        .and_then(serde_json::Value::as_i64);
    got.map(|g| (Answer::Length(g), n)).ok_or_else(|| {
        format!(
            "HTTP {status}: unexpected reply {}",
            truncate(&v.to_string())
        )
    })
}

fn oip_request(model: &str, zeros: &bytes::Bytes, n: u64, id: &str) -> oip_pb::ModelInferRequest {
    oip_pb::ModelInferRequest {
        model_name: model.into(),
        id: id.to_owned(),
        inputs: vec![oip_pb::model_infer_request::InferInputTensor {
            name: "x".into(),
            datatype: "UINT8".into(),
            shape: vec![n as i64],
            ..Default::default()
        }],
        raw_input_contents: vec![payload(zeros, n)],
        ..Default::default()
    }
}

async fn oip_grpc(
    suite: &Suite,
    target: &Target,
    model: &str,
    size: u64,
) -> Result<(Answer, u64), String> {
    let zeros = bytes::Bytes::from(vec![0u8; size as usize]);
    let oip_request = |zeros: &bytes::Bytes, n: u64, id: &str| oip_request(model, zeros, n, id);
    let n = fit(size, |n| oip_request(&zeros, n, "").encoded_len() as u64);
    let mut request = oip_request(&zeros, n, "");
    // Pad to the exact size with the id (a string field: 2 bytes + its length).
    let short = size - request.encoded_len() as u64;
    if short > 0 {
        let n = fit(size - 3, |n| {
            oip_request(&zeros, n, "").encoded_len() as u64
        });
        let pad = size - oip_request(&zeros, n, "").encoded_len() as u64 - 2;
        request = oip_request(&zeros, n, &"p".repeat(pad as usize));
    }
    if request.encoded_len() as u64 != size {
        return Err(format!(
            "cannot build a request of exactly {size} bytes (got {})",
            request.encoded_len()
        ));
    }
    let n = request.inputs[0].shape[0] as u64;
    let mut client = GrpcInferenceServiceClient::new(suite.channel(target).await?)
        .max_encoding_message_size(usize::MAX)
        .max_decoding_message_size(usize::MAX);
    match client.model_infer(request).await {
        Ok(reply) => {
            let r = serving_proto::oip::grpc::decode_response(reply.into_inner())
                .map_err(|e| e.to_string())?;
            let out = r
                .outputs
                .iter()
                .find(|o| o.name == "n")
                .ok_or("no output n")?;
            let v = out.tensor.to_f64_vec().map_err(|e| e.to_string())?;
            Ok((Answer::Length(v[0] as i64), n))
        }
        Err(status) => Ok((
            Answer::Refused(format!("{:?}", status.code()), status.message().to_owned()),
            n,
        )),
    }
}

fn oip_body(n: u64) -> String {
    let data = vec!["0"; n as usize].join(",");
    format!(
        "{{\"inputs\":[{{\"name\":\"x\",\"shape\":[{n}],\"datatype\":\"UINT8\",\"data\":[{data}]}}]}}"
    )
}

async fn oip_rest(
    suite: &Suite,
    target: &Target,
    model: &str,
    size: u64,
) -> Result<(Answer, u64), String> {
    let len = |n: u64| {
        oip_body(0).len() as u64 + n.to_string().len() as u64 - 1
            + if n == 0 { 0 } else { 2 * n - 1 }
    };
    let n = fit(size, len);
    let body = padded(oip_body(n), size)?;
    let url = format!("{}/v2/models/{model}/infer", target.http_base());
    let reply = suite
        .http()?
        .post(url)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = reply.status().as_u16();
    let text = reply.text().await.map_err(|e| e.to_string())?;
    if status != 200 {
        let message = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
            .unwrap_or_else(|| truncate(&text));
        return Ok((Answer::Refused(status.to_string(), message), n));
    }
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| format!("not JSON: {e}"))?;
    let got = v
        .pointer("/outputs/0/data/0")
        .and_then(serde_json::Value::as_i64);
    got.map(|g| (Answer::Length(g), n))
        .ok_or_else(|| format!("unexpected reply {}", truncate(&text)))
}

fn truncate(s: &str) -> String {
    s.chars().take(200).collect()
}

async fn client_cap(_suite: &Suite, target: &Target) -> Outcome {
    let Ok(listener) = tokio::net::TcpListener::bind("127.0.0.1:0").await else {
        return Outcome::Fail("cannot bind a local port".into());
    };
    let addr = listener.local_addr().expect("bound");
    let connections = Arc::new(AtomicUsize::new(0));
    let counter = connections.clone();
    let accept = tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            drop(s);
        }
    });
    let local = Target {
        tls: false,
        authority: addr.to_string(),
        ..target.clone()
    };
    let client = match Client::builder()
        .endpoint(local.url())
        .protocol(target.family.protocol())
        .max_send_size(1 << 20)
        .retries(0)
        .build()
    {
        Ok(c) => c,
        Err(e) => return Outcome::Fail(e.to_string()),
    };
    let big = Tensor::from_raw(
        DataType::Uint8,
        vec![2 << 20],
        bytes::Bytes::from(vec![0u8; 2 << 20]),
    )
    .expect("2 MiB");
    let result = match target.family {
        Family::MindSpore => client
            .predict("size_probe", "predict", &[[("x".to_string(), big)].into()])
            .await
            .map(|_| ()),
        Family::OpenInference => client
            .infer("size_probe")
            .input("x", big)
            .send()
            .await
            .map(|_| ()),
    };
    accept.abort();
    match result {
        Err(
            e @ Error::MessageTooLarge {
                size: Some(size),
                limit: Some(1_048_576),
                side: SizeSide::Client,
            },
        ) => {
            let text = e.to_string();
            if !text.starts_with(&format!(
                "Sent message larger than max ({size} vs. 1048576)"
            )) {
                return Outcome::Fail(format!("wrong text: {text}"));
            }
            if connections.load(Ordering::SeqCst) != 0 {
                return Outcome::Fail("the client connected before refusing".into());
            }
            Outcome::Pass(text.split(';').next().unwrap_or_default().to_owned())
        }
        Err(e) => Outcome::Fail(describe(&e)),
        Ok(()) => Outcome::Fail("a 2 MiB request passed a 1 MiB cap".into()),
    }
}
