//! MindSpore Serving gRPC messages to and from tensors.
//!
//! Decoding moves each `data` field (a [`Bytes`]) into the tensor: a tensor
//! decoded from a message shares the message's buffer.

use crate::text::quote;
use std::collections::BTreeMap;

use bytes::Bytes;

use super::{InstanceResult, Outcome, PredictRequest, ServableError, StatusCode};
use crate::pb::mindspore as pb;
use crate::tensor::{ShapeDisplay, element_count};
use crate::{DataType, NamedTensors, Tensor, TensorData, UnsupportedType};

/// Why a request tensor fails MindSpore's checks (spec §2.4); the Display is
/// the `detail` of `Instances input {name} check failed, detail: {detail}`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TensorCheckError {
    /// A negative dimension, or a dimension after a zero one.
    #[error("Tensor check failed: input  shape {} invalid", ShapeDisplay(.0))]
    Shape(Vec<i64>),
    /// `MS_UNKNOWN` or a value outside the enum.
    #[error("Tensor check failed: input data type {} invalid", quote(.0))]
    DataType(String),
    /// `data` is not element count x item size bytes long.
    #[error("Tensor check failed: input data size {0} invalid")]
    DataSize(usize),
    /// A string/bytes input without exactly one `bytes_val`.
    #[error("Instance tensor check failed: bytes or string type shape batch size can only be 1")]
    StringCount,
    /// A string/bytes input whose shape is neither `[]` nor `[1]`.
    #[error(
        "Instance tensor check failed: bytes or string type input  shape can only be (1,) or empty, but given shape is {}",
        ShapeDisplay(.0)
    )]
    StringShape(Vec<i64>),
    /// A BOOL element that is neither 0 nor 1 (MindSpore passes it on; we
    /// refuse it).
    #[error("Tensor check failed: {0}")]
    InvalidBool(String),
    /// Shared-memory tensors are internal to MindSpore and never accepted here.
    #[error(
        "Tensor check failed: shared memory data is not supported over the public API, send the bytes in 'data'"
    )]
    SharedMemory,
    /// Output tensors: a string/bytes tensor whose `bytes_val` count differs
    /// from its shape's element count.
    #[error("Tensor check failed: {actual} bytes_val entries for shape {} of {expected} elements", ShapeDisplay(.shape))]
    ElementCount {
        /// The shape.
        shape: Vec<i64>,
        /// Its element count.
        expected: usize,
        /// Entries given.
        actual: usize,
    },
}

fn dtype_of(t: &pb::Tensor) -> Result<DataType, TensorCheckError> {
    DataType::from_mindspore(t.dtype).ok_or_else(|| {
        TensorCheckError::DataType(match pb::DataType::try_from(t.dtype) {
            Ok(d) => format!("proto::{}", d.as_str_name()),
            Err(_) => format!("proto::DataType({})", t.dtype),
        })
    })
}

/// Shape rules of spec §2.4: every dim >= 0, nothing after a 0 dim, and an
/// element count that fits in memory.
fn checked_shape(t: &mut pb::Tensor) -> Result<Vec<i64>, TensorCheckError> {
    let dims = t.shape.take().map(|s| s.dims).unwrap_or_default();
    let zero_not_last = dims
        .iter()
        .position(|&d| d == 0)
        .is_some_and(|i| i + 1 < dims.len());
    if dims.iter().any(|&d| d < 0) || zero_not_last || element_count(&dims).is_none() {
        return Err(TensorCheckError::Shape(dims));
    }
    Ok(dims)
}

/// Decodes a request (input) tensor with MindSpore's checks: a known type,
/// a valid shape, `len(data) == count x item size`, and for string/bytes
/// exactly one element with shape `[]` or `[1]`.
pub fn input_tensor(mut t: pb::Tensor) -> Result<Tensor, TensorCheckError> {
    let dtype = dtype_of(&t)?;
    let shape = checked_shape(&mut t)?;
    match t.tensor_data {
        Some(pb::tensor::TensorData::ShmData(_)) => Err(TensorCheckError::SharedMemory),
        _ if dtype.is_variable() => {
            if t.bytes_val.len() != 1 {
                return Err(TensorCheckError::StringCount);
            }
            if !(shape.is_empty() || shape == [1]) {
                return Err(TensorCheckError::StringShape(shape));
            }
            Tensor::from_elements(dtype, shape, t.bytes_val)
                .map_err(|_| TensorCheckError::StringCount)
        }
        data => raw_tensor(dtype, shape, data),
    }
}

/// A numeric tensor from `data` (absent data is empty), with the check
/// errors both directions report.
fn raw_tensor(
    dtype: DataType,
    shape: Vec<i64>,
    data: Option<pb::tensor::TensorData>,
) -> Result<Tensor, TensorCheckError> {
    let raw = match data {
        Some(pb::tensor::TensorData::Data(raw)) => raw,
        _ => Bytes::new(),
    };
    let len = raw.len();
    Tensor::from_raw(dtype, shape, raw).map_err(|e| match e {
        crate::TensorError::InvalidBool { .. } => TensorCheckError::InvalidBool(e.to_string()),
        _ => TensorCheckError::DataSize(len),
    })
}

/// Decodes a reply (output) tensor. Outputs may have any shape; a
/// string/bytes output needs one `bytes_val` per element.
pub fn output_tensor(mut t: pb::Tensor) -> Result<Tensor, TensorCheckError> {
    let dtype = dtype_of(&t)?;
    let dims = t.shape.take().map(|s| s.dims).unwrap_or_default();
    let Some(count) = element_count(&dims) else {
        return Err(TensorCheckError::Shape(dims));
    };
    match t.tensor_data {
        Some(pb::tensor::TensorData::ShmData(_)) => Err(TensorCheckError::SharedMemory),
        _ if dtype.is_variable() => {
            let actual = t.bytes_val.len();
            Tensor::from_elements(dtype, dims.clone(), t.bytes_val).map_err(|_| {
                TensorCheckError::ElementCount {
                    shape: dims,
                    expected: count,
                    actual,
                }
            })
        }
        data => raw_tensor(dtype, dims, data),
    }
}

/// Encodes a tensor; the data is shared, not copied. `BF16` is refused.
pub fn encode_tensor(t: &Tensor) -> Result<pb::Tensor, UnsupportedType> {
    let dtype = t.dtype().to_mindspore()?;
    let shape = Some(pb::TensorShape {
        dims: t.shape().to_vec(),
    });
    Ok(match t.data() {
        TensorData::Raw(raw) => pb::Tensor {
            shape,
            dtype: dtype as i32,
            tensor_data: Some(pb::tensor::TensorData::Data(raw.clone())),
            bytes_val: Vec::new(),
        },
        TensorData::Elements(elements) => pb::Tensor {
            shape,
            dtype: dtype as i32,
            tensor_data: None,
            bytes_val: elements.clone(),
        },
    })
}

fn encode_instance(tensors: &NamedTensors) -> Result<pb::Instance, UnsupportedType> {
    let items = tensors
        .iter()
        .map(|(name, t)| Ok((name.clone(), encode_tensor(t)?)))
        .collect::<Result<BTreeMap<_, _>, UnsupportedType>>()?;
    Ok(pb::Instance {
        items,
        output_buffers: BTreeMap::new(),
    })
}

fn invalid(message: String) -> ServableError {
    ServableError::new(StatusCode::InvalidInputs, message)
}

/// Decodes a `PredictRequest`, checking every tensor (spec §2.4). A failure
/// is the request-level error MindSpore answers, with its text. A request
/// with no instances is refused, where MindSpore never answers it.
pub fn decode_request(req: pb::PredictRequest) -> Result<PredictRequest, ServableError> {
    let spec = req.servable_spec.unwrap_or_default();
    if req.instances.is_empty() {
        return Err(invalid(format!(
            "Instances count of request cannot be 0, servable: {}, method: {}",
            quote(&spec.name),
            quote(&spec.method_name)
        )));
    }
    let mut instances = Vec::with_capacity(req.instances.len());
    for instance in req.instances {
        if let Some(name) = instance.output_buffers.keys().next() {
            return Err(invalid(format!(
                "The output buffer {} uses shared memory, which is not supported over the public API, servable {}, method {}",
                quote(name),
                quote(&spec.name),
                quote(&spec.method_name)
            )));
        }
        let mut tensors = NamedTensors::new();
        for (name, t) in instance.items {
            let tensor = input_tensor(t).map_err(|detail| {
                invalid(format!(
                    "Instances input {} check failed, detail: {detail}",
                    quote(&name)
                ))
            })?;
            tensors.insert(name, tensor);
        }
        instances.push(tensors);
    }
    Ok(PredictRequest {
        servable: spec.name,
        method: spec.method_name,
        version: spec.version_number,
        instances,
    })
}

/// Builds a `PredictRequest` (what a client sends).
pub fn encode_request(
    servable: &str,
    method: &str,
    version: u64,
    instances: &[NamedTensors],
) -> Result<pb::PredictRequest, UnsupportedType> {
    Ok(pb::PredictRequest {
        servable_spec: Some(pb::ServableSpec {
            name: servable.to_owned(),
            method_name: method.to_owned(),
            version_number: version,
        }),
        instances: instances
            .iter()
            .map(encode_instance)
            .collect::<Result<_, _>>()?,
    })
}

fn error_msg(e: &ServableError) -> pb::ErrorMsg {
    let text = if e.message.is_empty() {
        "Predict failed"
    } else {
        &e.message
    };
    pb::ErrorMsg {
        error_code: e.code,
        error_msg: Bytes::copy_from_slice(crate::text::bounded(text).as_bytes()),
    }
}

/// Builds the `PredictReply` for an outcome, in MindSpore's exact forms: no
/// error entries when all succeed, one entry and no instances for a
/// request-level failure, one entry per instance for mixed results. The
/// caller's `spec` is echoed unchanged. Per-instance results should come
/// through [`Outcome::from_results`] so that identical failures collapse.
pub fn encode_reply(
    spec: Option<pb::ServableSpec>,
    outcome: &Outcome,
) -> Result<pb::PredictReply, UnsupportedType> {
    let mut reply = pb::PredictReply {
        servable_spec: spec,
        instances: Vec::new(),
        error_msg: Vec::new(),
    };
    match outcome {
        Outcome::Failed(e) => reply.error_msg.push(error_msg(e)),
        Outcome::Instances(results) => {
            let any_failed = results.iter().any(Result::is_err);
            for result in results {
                match result {
                    Ok(tensors) => {
                        reply.instances.push(encode_instance(tensors)?);
                        if any_failed {
                            reply.error_msg.push(pb::ErrorMsg::default());
                        }
                    }
                    Err(e) => {
                        reply.instances.push(pb::Instance::default());
                        reply.error_msg.push(error_msg(e));
                    }
                }
            }
        }
    }
    Ok(reply)
}

/// A reply that breaks the rules of spec §2.5.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReplyError {
    /// `error_msg` has neither 0, 1 nor one entry per instance.
    #[error("error msg result size {errors} is not 0, 1 or length of instances {instances}")]
    ErrorCount {
        /// Entries in `error_msg`.
        errors: usize,
        /// Instances sent.
        instances: usize,
    },
    /// The reply has a different number of instances from the request.
    #[error("reply has {actual} instances but the request sent {expected}")]
    InstanceCount {
        /// Instances sent.
        expected: usize,
        /// Instances received.
        actual: usize,
    },
    /// An output tensor is malformed.
    #[error("reply output {name} of instance {index} is malformed: {source}")]
    Tensor {
        /// Instance index.
        index: usize,
        /// Output name.
        name: String,
        /// What is wrong.
        source: TensorCheckError,
    },
}

/// Interprets a `PredictReply` for a request of `sent` instances, as the
/// official clients do (spec §2.5): one non-zero error entry applies to the
/// whole request; otherwise one entry per instance, or none.
pub fn decode_reply(reply: pb::PredictReply, sent: usize) -> Result<Outcome, ReplyError> {
    let text = |m: &pb::ErrorMsg| String::from_utf8_lossy(&m.error_msg).into_owned();
    if let [only] = reply.error_msg.as_slice()
        && only.error_code != 0
    {
        return Ok(Outcome::Failed(ServableError {
            code: only.error_code,
            message: text(only),
        }));
    }
    let errors = reply.error_msg.len();
    if errors != 0 && errors != sent && errors != 1 {
        return Err(ReplyError::ErrorCount {
            errors,
            instances: sent,
        });
    }
    if reply.instances.len() != sent {
        return Err(ReplyError::InstanceCount {
            expected: sent,
            actual: reply.instances.len(),
        });
    }
    let mut results = Vec::with_capacity(sent);
    for (index, instance) in reply.instances.into_iter().enumerate() {
        let entry = if errors == sent {
            reply.error_msg.get(index)
        } else {
            None
        };
        if let Some(e) = entry.filter(|e| e.error_code != 0) {
            results.push(Err(ServableError {
                code: e.error_code,
                message: text(e),
            }));
            continue;
        }
        let mut tensors = NamedTensors::new();
        for (name, t) in instance.items {
            match output_tensor(t) {
                Ok(tensor) => {
                    tensors.insert(name, tensor);
                }
                Err(source) => {
                    return Err(ReplyError::Tensor {
                        index,
                        name,
                        source,
                    });
                }
            }
        }
        results.push(Ok(tensors));
    }
    Ok(Outcome::Instances(results))
}

/// Convenience: the per-instance results of a decoded outcome, with a
/// request-level failure repeated for each of the `sent` instances.
pub fn per_instance(outcome: Outcome, sent: usize) -> Vec<InstanceResult> {
    match outcome {
        Outcome::Failed(e) => vec![Err(e); sent],
        Outcome::Instances(results) => results,
    }
}
