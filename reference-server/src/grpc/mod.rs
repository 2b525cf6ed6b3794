//! The gRPC front end: `MSService`, `GRPCInferenceService` and
//! `grpc.health.v1.Health` on one port, behind the frame-header size check
//! and the `grpc-timeout` deadline.

pub(crate) mod deadline;
pub(crate) mod inflate;
pub(crate) mod memory;
pub(crate) mod mindspore;
pub(crate) mod oip;
pub(crate) mod size_limit;
pub(crate) mod stream;
pub(crate) mod zero_copy;

use std::sync::Arc;

use serving_proto::compression::Encoding;
use serving_proto::pb::inference::grpc_inference_service_server::GrpcInferenceServiceServer;
use tonic::codec::CompressionEncoding;
use tonic::service::Routes;

use crate::auth::GrpcAuth;
use crate::service::State;
use deadline::Deadline;
use size_limit::MaxRequestSize;
use zero_copy::ZeroCopy;

/// The gRPC service stack and the health reporter that drives its health
/// service.
pub(crate) fn routes(
    state: Arc<State>,
    token: Option<Arc<str>>,
) -> (
    GrpcAuth<MaxRequestSize<Deadline<ZeroCopy<Routes>>>>,
    tonic_health::server::HealthReporter,
) {
    let limit = state.max_msg_bytes;
    let (reporter, health) = tonic_health::server::health_reporter();
    let ms = mindspore::MindSporeGrpc::new(state.clone());
    let oip = oip::OipGrpc::new(state.clone());
    // tonic serves every RPC but the two that carry tensors, which
    // `ZeroCopy` answers with the same implementations (so `MSService`,
    // whose only RPC is `Predict`, needs no tonic route; its other paths
    // get tonic's UNIMPLEMENTED like any unknown service).
    // tonic inflates compressed messages of the RPCs it serves under the
    // same limit (`max_decoding_message_size` bounds what they inflate to).
    let mut inference = GrpcInferenceServiceServer::new(oip.clone())
        .max_decoding_message_size(limit)
        .max_encoding_message_size(usize::MAX)
        .accept_compressed(CompressionEncoding::Gzip)
        .accept_compressed(CompressionEncoding::Deflate);
    match state.grpc_response_compression {
        Some(Encoding::Gzip) => inference = inference.send_compressed(CompressionEncoding::Gzip),
        Some(Encoding::Deflate) => {
            inference = inference.send_compressed(CompressionEncoding::Deflate)
        }
        _ => {}
    }
    let routes = Routes::new(inference).add_service(health).prepare();
    let routes = ZeroCopy::new(routes, ms, oip, state);
    (
        GrpcAuth::new(
            MaxRequestSize::new(Deadline::new(routes), limit as u64),
            token,
        ),
        reporter,
    )
}

/// The status of a body that failed: a stalled one is `DEADLINE_EXCEEDED`.
pub(crate) fn body_status(e: Box<dyn std::error::Error + Send + Sync>) -> tonic::Status {
    if crate::body_stall::is_stalled(&*e) {
        tonic::Status::deadline_exceeded(e.to_string())
    } else {
        tonic::Status::from_error(e)
    }
}
