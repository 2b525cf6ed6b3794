//! The gRPC front end: `MSService`, `GRPCInferenceService` and
//! `grpc.health.v1.Health` on one port, behind the frame-header size check
//! and the `grpc-timeout` deadline.

pub mod deadline;
pub mod mindspore;
pub mod oip;
pub mod size_limit;

use std::sync::Arc;

use serving_proto::pb::inference::grpc_inference_service_server::GrpcInferenceServiceServer;
use serving_proto::pb::mindspore::ms_service_server::MsServiceServer;
use tonic::service::Routes;

use crate::auth::GrpcAuth;
use crate::service::State;
use deadline::Deadline;
use size_limit::MaxRequestSize;

/// The gRPC service stack and the health reporter that drives its health
/// service.
pub fn routes(
    state: Arc<State>,
    token: Option<Arc<str>>,
) -> (
    GrpcAuth<MaxRequestSize<Deadline<Routes>>>,
    tonic_health::server::HealthReporter,
) {
    let limit = state.max_msg_bytes;
    let (reporter, health) = tonic_health::server::health_reporter();
    let ms = MsServiceServer::new(mindspore::MindSporeGrpc::new(state.clone()))
        .max_decoding_message_size(limit)
        .max_encoding_message_size(usize::MAX);
    let oip = GrpcInferenceServiceServer::new(oip::OipGrpc::new(state))
        .max_decoding_message_size(limit)
        .max_encoding_message_size(usize::MAX);
    let routes = Routes::new(ms)
        .add_service(oip)
        .add_service(health)
        .prepare();
    (
        GrpcAuth::new(
            MaxRequestSize::new(Deadline::new(routes), limit as u64),
            token,
        ),
        reporter,
    )
}
