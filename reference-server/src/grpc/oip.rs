//! `inference.GRPCInferenceService`: the six Open Inference Protocol RPCs.

use std::sync::Arc;

use serving_proto::oip::grpc::{self as codec, Contents};
use serving_proto::pb::inference::{
    self as pb, grpc_inference_service_server::GrpcInferenceService,
};
use tonic::{Request, Response, Status};

use super::mindspore::check_reply_size;
use crate::error::ServeError;
use crate::metrics::Front;
use crate::service::Class;
use crate::service::{State, oip};

/// The `GRPCInferenceService` implementation.
#[derive(Clone, Debug)]
pub(crate) struct OipGrpc {
    state: Arc<State>,
}

impl OipGrpc {
    /// A service over the shared state.
    pub(crate) fn new(state: Arc<State>) -> OipGrpc {
        OipGrpc { state }
    }
}

impl OipGrpc {
    /// `ModelInfer` without the metrics.
    async fn infer(
        &self,
        request: Request<pb::ModelInferRequest>,
    ) -> Result<Response<pb::ModelInferResponse>, Status> {
        let deadline = super::deadline::deadline_of(request.metadata());
        let msg = request.into_inner();
        // An unknown model is NOT_FOUND whatever the tensors hold.
        oip::resolve(&self.state, &msg.model_name, &msg.model_version).map_err(status)?;
        // Answer in the form the client used: raw if it sent raw contents.
        let contents = if msg.raw_input_contents.is_empty() && !msg.inputs.is_empty() {
            Contents::Typed
        } else {
            Contents::Raw
        };
        let req = codec::decode_request(msg).map_err(|e| status(e.into()))?;
        let resp = oip::infer(&self.state, req, deadline)
            .await
            .map_err(status)?;
        let reply = codec::encode_response(&resp, contents).map_err(|e| status(e.into()))?;
        check_reply_size(&reply, self.state.max_msg_bytes)?;
        Ok(Response::new(reply))
    }
}

fn status(e: ServeError) -> Status {
    e.to_status()
}

#[tonic::async_trait]
impl GrpcInferenceService for OipGrpc {
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
        Ok(Response::new(pb::ServerReadyResponse {
            ready: self.state.is_ready(),
        }))
    }

    async fn model_ready(
        &self,
        request: Request<pb::ModelReadyRequest>,
    ) -> Result<Response<pb::ModelReadyResponse>, Status> {
        let r = request.into_inner();
        let ready = oip::model_ready(&self.state, &r.name, &r.version).map_err(status)?;
        Ok(Response::new(pb::ModelReadyResponse { ready }))
    }

    async fn server_metadata(
        &self,
        _: Request<pb::ServerMetadataRequest>,
    ) -> Result<Response<pb::ServerMetadataResponse>, Status> {
        Ok(Response::new(pb::ServerMetadataResponse {
            name: oip::SERVER_NAME.into(),
            version: env!("CARGO_PKG_VERSION").into(),
            extensions: oip::EXTENSIONS.iter().map(|s| (*s).to_owned()).collect(),
        }))
    }

    async fn model_metadata(
        &self,
        request: Request<pb::ModelMetadataRequest>,
    ) -> Result<Response<pb::ModelMetadataResponse>, Status> {
        let r = request.into_inner();
        let m = oip::model_metadata(&self.state, &r.name, &r.version).map_err(status)?;
        Ok(Response::new(m.into()))
    }

    async fn model_infer(
        &self,
        request: Request<pb::ModelInferRequest>,
    ) -> Result<Response<pb::ModelInferResponse>, Status> {
        let started = std::time::Instant::now();
        let model = request.get_ref().model_name.clone();
        let result = self.infer(request).await;
        let class = match &result {
            Ok(_) => Class::Ok,
            Err(s) => Class::of_grpc(s.code()),
        };
        self.state
            .record(Front::OipGrpc, &model, class, started.elapsed());
        result
    }
}
