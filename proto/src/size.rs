//! Encoded sizes of requests, computed before they are built or sent, so a
//! client can refuse an oversized request without putting a byte on the wire.
//!
//! gRPC sizes are the protobuf message length (what gRPC limits compare),
//! computed by prost without encoding; the tensors' bytes are shared, not
//! copied, while the message is assembled.

use crate::mindspore;
use crate::oip::{self, InferRequest, OipError};
use crate::{NamedTensors, UnsupportedType};

/// The encoded length of any protobuf message.
pub fn message_len(message: &impl prost::Message) -> u64 {
    message.encoded_len() as u64
}

/// The encoded length of a MindSpore `PredictRequest`.
pub fn mindspore_grpc_request(
    servable: &str,
    method: &str,
    version: u64,
    instances: &[NamedTensors],
) -> Result<u64, UnsupportedType> {
    let req = mindspore::grpc::encode_request(servable, method, version, instances)?;
    Ok(message_len(&req))
}

/// The encoded length of an OIP `ModelInferRequest`.
pub fn oip_grpc_request(
    req: &InferRequest,
    contents: oip::grpc::Contents,
) -> Result<u64, OipError> {
    Ok(message_len(&oip::grpc::encode_request(req, contents)?))
}

/// The body length of an OIP REST request, JSON or binary.
pub fn oip_rest_request(req: &InferRequest, binary: bool) -> Result<u64, OipError> {
    Ok(oip::rest::encode_request(req, binary)?.len() as u64)
}
