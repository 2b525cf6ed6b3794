//! `mindspore.serving.proto.MSService/Predict`: always status OK, errors
//! in-band in `PredictReply.error_msg` (spec §2.1, §2.5); only transport
//! limits give a non-OK status.

use std::sync::Arc;

use prost::Message;
use serving_proto::mindspore;
use serving_proto::mindspore::{Outcome, ServableError, StatusCode};
use serving_proto::pb::mindspore::{self as pb, ms_service_server::MsService};
use tonic::{Request, Response, Status};

use crate::metrics::Front;
use crate::service::{Class, State, mindspore as service};

/// The `MSService` implementation.
#[derive(Clone, Debug)]
pub(crate) struct MindSporeGrpc {
    state: Arc<State>,
}

impl MindSporeGrpc {
    /// A service over the shared state.
    pub(crate) fn new(state: Arc<State>) -> MindSporeGrpc {
        MindSporeGrpc { state }
    }
}

/// A reply over the limit is refused with gRPC's own text.
pub(crate) fn check_reply_size(message: &impl Message, limit: usize) -> Result<(), Status> {
    crate::service::check_reply_size(message.encoded_len(), limit).map_err(|e| e.to_status())
}

#[tonic::async_trait]
impl MsService for MindSporeGrpc {
    async fn predict(
        &self,
        request: Request<pb::PredictRequest>,
    ) -> Result<Response<pb::PredictReply>, Status> {
        let started = std::time::Instant::now();
        let deadline = super::deadline::deadline_of(request.metadata());
        let req = request.into_inner();
        let spec = req.servable_spec.clone();
        let model = spec.as_ref().map(|s| s.name.clone()).unwrap_or_default();
        let s = spec.clone().unwrap_or_default();
        let answer = if let Some(e) = service::unready(&self.state, &s.name, &s.method_name) {
            service::Answer::failed(e, Class::Unavailable)
        } else {
            match mindspore::grpc::decode_request(req) {
                Ok(r) => {
                    service::predict(
                        &self.state,
                        &r.servable,
                        &r.method,
                        r.version,
                        r.instances,
                        deadline,
                    )
                    .await
                }
                Err(e) => service::Answer::failed(e, Class::InvalidArgument),
            }
        };
        let outcome = answer.outcome;
        let reply = match mindspore::grpc::encode_reply(spec.clone(), &outcome) {
            Ok(reply) => reply,
            Err(e) => mindspore::grpc::encode_reply(
                spec,
                &Outcome::Failed(ServableError::new(StatusCode::SystemError, e.to_string())),
            )
            .map_err(|e| Status::internal(e.to_string()))?,
        };
        let sized = check_reply_size(&reply, self.state.max_msg_bytes);
        let class = match &sized {
            Err(_) => Class::ResourceExhausted,
            Ok(()) => answer.class,
        };
        self.state
            .record(Front::MindSporeGrpc, &model, class, started.elapsed());
        sized?;
        Ok(Response::new(reply))
    }
}
