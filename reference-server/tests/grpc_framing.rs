//! The server's own framing of `Predict` and `ModelInfer` (tensor bytes not
//! copied) against raw HTTP/2 requests: any chunking and any field order of
//! a valid message, and tonic's codes and texts for every malformed body.

mod common;

use bytes::Bytes;
use http::{HeaderValue, Request};
use prost::Message;
use serving_proto::grpc_body::{MessageBody, read_unary};
use serving_proto::oip::grpc::Contents;
use serving_proto::oip::{InferRequest, NamedTensor};
use serving_proto::pb::inference as oip_pb;
use serving_proto::{Tensor, mindspore, oip};
use tonic::transport::Channel;
use tonic::{Code, Status};
use tower::{Service, ServiceExt};

const MODEL_INFER: &str = "/inference.GRPCInferenceService/ModelInfer";
const PREDICT: &str = "/mindspore.serving.proto.MSService/Predict";

/// Sends `chunks` as the body and returns the reply's message or status.
async fn raw(
    channel: &Channel,
    path: &'static str,
    chunks: Vec<Bytes>,
    encoding: Option<&'static str>,
) -> Result<Bytes, Status> {
    let mut req = Request::new(tonic::body::Body::new(MessageBody::new(chunks)));
    *req.method_mut() = http::Method::POST;
    *req.uri_mut() = http::Uri::from_static(path);
    let h = req.headers_mut();
    h.insert("content-type", HeaderValue::from_static("application/grpc"));
    h.insert("te", HeaderValue::from_static("trailers"));
    if let Some(e) = encoding {
        h.insert("grpc-encoding", HeaderValue::from_static(e));
    }
    let mut channel = channel.clone();
    let response = channel.ready().await.unwrap().call(req).await.unwrap();
    if let Some(s) = Status::from_header_map(response.headers()) {
        return Err(s);
    }
    let mut body = response.into_body();
    let read = read_unary(
        &mut body,
        u64::MAX,
        &[],
        &serving_proto::grpc_body::Budget::unlimited(),
    )
    .await
    .unwrap();
    let status = Status::from_header_map(read.trailers.as_ref().unwrap()).unwrap();
    if status.code() != Code::Ok {
        return Err(status);
    }
    Ok(read.message.unwrap())
}

fn framed(message: &[u8], flag: u8) -> Vec<u8> {
    let mut out = vec![flag];
    out.extend((message.len() as u32).to_be_bytes());
    out.extend_from_slice(message);
    out
}

/// `bytes` cut into pieces of `size`.
fn cut(bytes: &[u8], size: usize) -> Vec<Bytes> {
    bytes.chunks(size).map(Bytes::copy_from_slice).collect()
}

fn add_request() -> oip_pb::ModelInferRequest {
    let x = |v: f32| Tensor::from_slice(&[2, 2], &[v, v, v, v]).unwrap();
    let req = InferRequest {
        model_name: "add".into(),
        id: "framing".into(),
        inputs: vec![
            NamedTensor::new("x1", x(1.0)),
            NamedTensor::new("x2", x(2.5)),
        ],
        ..Default::default()
    };
    oip::grpc::encode_request(&req, Contents::Raw).unwrap()
}

#[tokio::test]
async fn any_chunking_and_field_order_of_a_valid_request_is_served() {
    let server = common::demo().await;
    let channel = common::channel(&server).await;
    let msg = add_request();
    // prost's field order, and the reverse: raw contents first.
    let mut reversed = msg.clone();
    let raw = std::mem::take(&mut reversed.raw_input_contents);
    let mut backwards = Vec::new();
    for r in &raw {
        prost::encoding::bytes::encode(7, r, &mut backwards);
    }
    reversed.encode(&mut backwards).unwrap();
    for body in [msg.encode_to_vec(), backwards] {
        for size in [1, 3, 7, 64, 4096] {
            let reply = raw_call(&channel, MODEL_INFER, cut(&framed(&body, 0), size)).await;
            let reply = oip_pb::ModelInferResponse::decode(reply.unwrap()).unwrap();
            let out = oip::grpc::decode_response(reply).unwrap();
            assert_eq!(out.id, "framing");
            let y = out.outputs[0].tensor.to_vec::<f32>().unwrap();
            assert_eq!(y, vec![3.5; 4], "chunks of {size}");
        }
    }
    // MindSpore too, in single bytes.
    let x = |v: f32| Tensor::from_slice(&[2, 2], &[v, v, v, v]).unwrap();
    let instance = [("x1".to_string(), x(1.0)), ("x2".to_string(), x(2.0))].into();
    let req = mindspore::grpc::encode_request("add", "add_common", 0, &[instance]).unwrap();
    let reply = raw_call(&channel, PREDICT, cut(&framed(&req.encode_to_vec(), 0), 1)).await;
    let reply = serving_proto::pb::mindspore::PredictReply::decode(reply.unwrap()).unwrap();
    let results =
        mindspore::grpc::per_instance(mindspore::grpc::decode_reply(reply, 1).unwrap(), 1);
    let y = results[0].as_ref().unwrap()["y"].to_vec::<f32>().unwrap();
    assert_eq!(y, vec![3.0; 4]);
    server.shutdown().await;
}

async fn raw_call(
    channel: &Channel,
    path: &'static str,
    chunks: Vec<Bytes>,
) -> Result<Bytes, Status> {
    raw(channel, path, chunks, None).await
}

/// What is wrong, the body, its `grpc-encoding`, the code and a part of the text.
type Case = (
    &'static str,
    Vec<Bytes>,
    Option<&'static str>,
    Code,
    &'static str,
);

#[tokio::test]
async fn malformed_bodies_get_tonics_codes_and_texts_and_the_server_stays_up() {
    let server = common::demo().await;
    let channel = common::channel(&server).await;
    let good = framed(&add_request().encode_to_vec(), 0);
    let cases: Vec<Case> = vec![
        (
            "empty body",
            vec![],
            None,
            Code::Internal,
            "Missing request message.",
        ),
        (
            "compressed flag, no grpc-encoding",
            vec![Bytes::from(framed(b"\x0a\x01m", 1))],
            None,
            Code::Internal,
            "compressed-flag but no grpc-encoding",
        ),
        (
            "an encoding the server does not speak",
            vec![Bytes::from(good.clone())],
            Some("br"),
            Code::Unimplemented,
            "Content is compressed with `br` which isn't supported",
        ),
        (
            "gzip flagged but not gzip",
            vec![Bytes::from(framed(b"not gzip", 1))],
            Some("gzip"),
            Code::Internal,
            "is not valid gzip data",
        ),
        (
            "invalid flag",
            vec![Bytes::from(framed(b"", 2))],
            None,
            Code::Internal,
            "invalid gRPC compression flag 2",
        ),
        (
            "truncated message",
            vec![Bytes::copy_from_slice(&good[..good.len() - 3])],
            None,
            Code::Internal,
            "Unexpected EOF decoding stream",
        ),
        (
            "two messages",
            vec![Bytes::from(good.clone()), Bytes::from(good.clone())],
            None,
            Code::Internal,
            "more than one message",
        ),
        (
            "not protobuf",
            vec![Bytes::from(framed(&[0xff; 9], 0))],
            None,
            Code::Internal,
            "failed to decode Protobuf message",
        ),
    ];
    for (what, chunks, encoding, code, text) in cases {
        for path in [MODEL_INFER, PREDICT] {
            let e = raw(&channel, path, chunks.clone(), encoding)
                .await
                .unwrap_err();
            assert_eq!(e.code(), code, "{what} on {path}: {e:?}");
            assert!(e.message().contains(text), "{what} on {path}: {e:?}");
        }
    }
    // Still serving.
    assert!(
        raw_call(&channel, MODEL_INFER, vec![Bytes::from(good)])
            .await
            .is_ok()
    );
    server.shutdown().await;
}
