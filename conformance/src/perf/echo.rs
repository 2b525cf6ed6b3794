//! Bare echo servers, the floor of each transport: they answer every
//! request with its own tensors, with no model, queue or checks. gRPC: both
//! services through plain tonic, codec included (the reference server frames
//! `Predict` and `ModelInfer` itself, without the codec's copies, so it can
//! beat this floor on large tensors); REST: hyper, the body returned with
//! `inputs` renamed `outputs`.

use std::net::SocketAddr;

use bytes::Bytes;
use serving_proto::pb::inference::grpc_inference_service_server::{
    GrpcInferenceService, GrpcInferenceServiceServer,
};
use serving_proto::pb::inference::{self as pb};
use serving_proto::pb::mindspore::ms_service_server::{MsService, MsServiceServer};
use serving_proto::pb::mindspore::{PredictReply, PredictRequest};
use tonic::{Request, Response, Status};

#[derive(Clone, Copy, Debug, Default)]
struct Echo;

#[tonic::async_trait]
impl MsService for Echo {
    async fn predict(
        &self,
        request: Request<PredictRequest>,
    ) -> Result<Response<PredictReply>, Status> {
        let r = request.into_inner();
        Ok(Response::new(PredictReply {
            servable_spec: r.servable_spec,
            instances: r.instances,
            error_msg: Vec::new(),
        }))
    }
}

#[tonic::async_trait]
impl GrpcInferenceService for Echo {
    async fn server_live(
        &self,
        _: Request<pb::ServerLiveRequest>,
    ) -> Result<Response<pb::ServerLiveResponse>, Status> {
        Ok(Response::new(pb::ServerLiveResponse { live: true }))
    }
    async fn server_ready(
        &self,
        _: Request<pb::ServerReadyRequest>,
    ) -> Result<Response<pb::ServerReadyResponse>, Status> {
        Ok(Response::new(pb::ServerReadyResponse { ready: true }))
    }
    async fn model_ready(
        &self,
        _: Request<pb::ModelReadyRequest>,
    ) -> Result<Response<pb::ModelReadyResponse>, Status> {
        Ok(Response::new(pb::ModelReadyResponse { ready: true }))
    }
    async fn server_metadata(
        &self,
        _: Request<pb::ServerMetadataRequest>,
    ) -> Result<Response<pb::ServerMetadataResponse>, Status> {
        Ok(Response::new(pb::ServerMetadataResponse {
            name: "echo".into(),
            version: "0".into(),
            extensions: vec![],
        }))
    }
    async fn model_metadata(
        &self,
        _: Request<pb::ModelMetadataRequest>,
    ) -> Result<Response<pb::ModelMetadataResponse>, Status> {
        Err(Status::unimplemented("an echo server has no models"))
    }
    async fn model_infer(
        &self,
        request: Request<pb::ModelInferRequest>,
    ) -> Result<Response<pb::ModelInferResponse>, Status> {
        let r = request.into_inner();
        let outputs = r
            .inputs
            .into_iter()
            .map(|i| pb::model_infer_response::InferOutputTensor {
                name: i.name.replacen('x', "y", 1),
                datatype: i.datatype,
                shape: i.shape,
                parameters: Default::default(),
                contents: i.contents,
            })
            .collect();
        Ok(Response::new(pb::ModelInferResponse {
            model_name: r.model_name,
            model_version: "1".into(),
            id: r.id,
            parameters: Default::default(),
            outputs,
            raw_output_contents: r.raw_input_contents,
        }))
    }
}

/// Serves both echo servers on ephemeral ports and prints
/// `READY <grpc> <rest>`, as `conformance serve` does, until killed.
pub async fn serve_forever() -> Result<(), String> {
    let grpc = grpc().await.map_err(|e| e.to_string())?;
    let rest = rest().await.map_err(|e| e.to_string())?;
    println!("READY {grpc} {rest}");
    std::future::pending::<()>().await;
    Ok(())
}

/// Starts the gRPC echo server on an ephemeral loopback port.
pub async fn grpc() -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    tokio::spawn(
        tonic::transport::Server::builder()
            .initial_stream_window_size(8 << 20)
            .initial_connection_window_size(8 << 20)
            .add_service(
                MsServiceServer::new(Echo)
                    .max_decoding_message_size(usize::MAX)
                    .max_encoding_message_size(usize::MAX),
            )
            .add_service(
                GrpcInferenceServiceServer::new(Echo)
                    .max_decoding_message_size(usize::MAX)
                    .max_encoding_message_size(usize::MAX),
            )
            .serve_with_incoming(incoming),
    );
    Ok(addr)
}

/// Starts the REST echo server on an ephemeral loopback port: a POST's body
/// comes back with the first `"inputs"` renamed `"outputs"` and
/// `Inference-Header-Content-Length` adjusted.
pub async fn rest() -> std::io::Result<SocketAddr> {
    use hyper::service::service_fn;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let service = service_fn(|req: hyper::Request<hyper::body::Incoming>| async move {
                    use http_body_util::BodyExt;
                    let header = req
                        .headers()
                        .get("inference-header-content-length")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse::<usize>().ok());
                    let body = req
                        .into_body()
                        .collect()
                        .await
                        .map(|b| b.to_bytes())
                        .unwrap_or_default();
                    let (parts, header) = rename(body, header);
                    let mut resp = hyper::Response::builder()
                        .status(200)
                        .header("content-type", "application/json");
                    if let Some(h) = header {
                        resp = resp.header("inference-header-content-length", h);
                    }
                    Ok::<_, std::convert::Infallible>(
                        resp.body(serving_proto::grpc_body::MessageBody::new(parts))
                            .expect("a valid response"),
                    )
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(addr)
}

/// The reply of the REST echo: the request's JSON header parsed (a small
/// document), its inputs returned as outputs named `y…`, and the binary
/// parts, if any, sent back as they came (shared, not copied).
fn rename(body: Bytes, header: Option<usize>) -> (Vec<Bytes>, Option<usize>) {
    let json_len = header.unwrap_or(body.len()).min(body.len());
    let Ok(mut json) = serde_json::from_slice::<serde_json::Value>(&body[..json_len]) else {
        return (vec![body], header);
    };
    // MindSpore REST: the instances come back as they are.
    let Some(inputs) = json.get_mut("inputs").map(serde_json::Value::take) else {
        return (vec![body], header);
    };
    let mut outputs = inputs;
    if let Some(list) = outputs.as_array_mut() {
        for o in list {
            if let Some(name) = o
                .get("name")
                .and_then(|n| n.as_str())
                .map(|n| n.replacen('x', "y", 1))
            {
                o["name"] = name.into();
            }
        }
    }
    let reply = serde_json::json!({"model_name": json.get("model_name").cloned().unwrap_or_default(), "outputs": outputs});
    let head = Bytes::from(reply.to_string());
    if header.is_none() {
        return (vec![head], None);
    }
    let n = head.len();
    (vec![head, body.slice(json_len..)], Some(n))
}

/// Raw loopback TCP, request and response like an inference: the client
/// sends `bytes` (after an 8-byte length), the server reads them all and
/// sends them back, the client reads them all. Returns payload GB/s (bytes
/// / round-trip time), best of `rounds`: the ceiling for a protocol that
/// moves the same payload each way.
pub async fn raw_tcp(bytes: usize, rounds: usize) -> std::io::Result<f64> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let _ = s.set_nodelay(true);
            tokio::spawn(async move {
                let (mut len, mut buf) = ([0u8; 8], Vec::new());
                while s.read_exact(&mut len).await.is_ok() {
                    buf.resize(u64::from_le_bytes(len) as usize, 0);
                    if s.read_exact(&mut buf).await.is_err() || s.write_all(&buf).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    let data = vec![7u8; bytes];
    let mut back = vec![0u8; bytes];
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let mut best = 0f64;
    for _ in 0..rounds {
        let start = std::time::Instant::now();
        stream.write_all(&(bytes as u64).to_le_bytes()).await?;
        stream.write_all(&data).await?;
        stream.read_exact(&mut back).await?;
        best = best.max(bytes as f64 / start.elapsed().as_secs_f64() / 1e9);
    }
    Ok(best)
}
