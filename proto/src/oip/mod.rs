//! The Open Inference Protocol (KServe v2): gRPC `GRPCInferenceService` and
//! the REST API with the binary tensor extension.
//!
//! Both transports decode into one [`InferRequest`] and encode from one
//! [`InferResponse`]; the servers and the client never see wire types.

pub mod extensions;
pub mod grpc;
pub mod metadata;
pub mod rest;
pub mod shared_memory;

mod contents;

use std::collections::BTreeMap;

use crate::tensor::ShapeDisplay;
use crate::text::quote;
use crate::{DataType, Tensor, UnsupportedType};

/// An inference parameter value.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Parameter {
    /// `bool_param`.
    Bool(bool),
    /// `int64_param`.
    Int64(i64),
    /// `string_param`.
    String(String),
    /// `double_param` (OIP and Triton addition).
    Double(f64),
    /// `uint64_param` (OIP and Triton addition).
    Uint64(u64),
}

impl Parameter {
    /// The value as a non-negative integer, if it is one.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Parameter::Int64(v) => u64::try_from(v).ok(),
            Parameter::Uint64(v) => Some(v),
            _ => None,
        }
    }

    /// The value as a bool, if it is one.
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Parameter::Bool(b) => Some(b),
            _ => None,
        }
    }
}

/// Parameters by name.
pub type Parameters = BTreeMap<String, Parameter>;

/// A named tensor with its parameters: an input of a request or an output of
/// a response.
#[derive(Clone, Debug, PartialEq)]
pub struct NamedTensor {
    /// The tensor name.
    pub name: String,
    /// The tensor.
    pub tensor: Tensor,
    /// Its parameters (framing parameters such as `binary_data_size` removed).
    pub parameters: Parameters,
}

impl NamedTensor {
    /// A named tensor without parameters.
    pub fn new(name: impl Into<String>, tensor: Tensor) -> NamedTensor {
        NamedTensor {
            name: name.into(),
            tensor,
            parameters: Parameters::new(),
        }
    }
}

/// An output the client asks for.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct RequestedOutput {
    /// Output name.
    pub name: String,
    /// Its parameters (for example `binary_data`).
    pub parameters: Parameters,
}

/// An inference request, transport-neutral.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct InferRequest {
    /// Model name (from the message on gRPC, from the URL on REST).
    pub model_name: String,
    /// Model version; empty means the server's choice.
    pub model_version: String,
    /// Request id, echoed in the response.
    pub id: String,
    /// Request parameters.
    pub parameters: Parameters,
    /// The inputs, in order.
    pub inputs: Vec<NamedTensor>,
    /// The outputs asked for; empty means all.
    pub outputs: Vec<RequestedOutput>,
}

/// A sequence's correlation ID (Triton's `sequence_id` parameter): an
/// integer or a text.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SequenceId {
    /// An integer ID (0 is none).
    Int(u64),
    /// A text ID ("" is none).
    Text(String),
}

impl From<u64> for SequenceId {
    fn from(n: u64) -> SequenceId {
        SequenceId::Int(n)
    }
}

impl From<&str> for SequenceId {
    fn from(s: &str) -> SequenceId {
        SequenceId::Text(s.to_owned())
    }
}

impl From<String> for SequenceId {
    fn from(s: String) -> SequenceId {
        SequenceId::Text(s)
    }
}

impl InferRequest {
    /// Puts the request in a sequence, for a model with sequence batching
    /// (Triton's `sequence_batching`): the parameters `sequence_id`,
    /// `sequence_start` and `sequence_end`. An integer ID goes as an
    /// `int64` parameter, as Triton's clients send it (one above
    /// `i64::MAX` as a `uint64`).
    ///
    /// ```
    /// use serving_proto::oip::{InferRequest, Parameter};
    ///
    /// let mut r = InferRequest::default();
    /// r.set_sequence(7u64, true, false);
    /// assert_eq!(r.parameters["sequence_id"], Parameter::Int64(7));
    /// assert_eq!(r.parameters["sequence_start"], Parameter::Bool(true));
    /// r.set_sequence("user-a", false, true);
    /// assert_eq!(r.parameters["sequence_id"], Parameter::String("user-a".into()));
    /// ```
    pub fn set_sequence(&mut self, id: impl Into<SequenceId>, start: bool, end: bool) {
        let id = match id.into() {
            SequenceId::Int(n) => match i64::try_from(n) {
                Ok(n) => Parameter::Int64(n),
                Err(_) => Parameter::Uint64(n),
            },
            SequenceId::Text(s) => Parameter::String(s),
        };
        self.parameters.insert("sequence_id".into(), id);
        self.parameters
            .insert("sequence_start".into(), Parameter::Bool(start));
        self.parameters
            .insert("sequence_end".into(), Parameter::Bool(end));
    }
}

/// An inference response, transport-neutral.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct InferResponse {
    /// Model name.
    pub model_name: String,
    /// The version that answered.
    pub model_version: String,
    /// The request's id.
    pub id: String,
    /// Response parameters.
    pub parameters: Parameters,
    /// The outputs, in order.
    pub outputs: Vec<NamedTensor>,
}

impl InferResponse {
    /// The output tensor named `name`.
    pub fn tensor(&self, name: &str) -> Option<&Tensor> {
        self.outputs
            .iter()
            .find(|o| o.name == name)
            .map(|o| &o.tensor)
    }

    /// The elements of output `name` as `T`, row-major: an error names the
    /// outputs present when there is none of that name, and both types
    /// when it holds another type.
    ///
    /// ```
    /// use serving_proto::Tensor;
    /// use serving_proto::oip::{InferResponse, NamedTensor};
    ///
    /// let response = InferResponse {
    ///     outputs: vec![NamedTensor::new("y", Tensor::from_slice(&[2], &[1f32, 2.0])?)],
    ///     ..Default::default()
    /// };
    /// assert_eq!(response.output::<f32>("y")?, vec![1.0, 2.0]);
    /// assert!(response.output::<f32>("z").is_err());
    /// assert!(response.output::<i64>("y").is_err());
    /// # Ok::<(), serving_proto::TensorError>(())
    /// ```
    pub fn output<T: crate::Element>(&self, name: &str) -> Result<Vec<T>, crate::TensorError> {
        self.tensor(name)
            .ok_or_else(|| crate::TensorError::NoOutput {
                name: name.to_owned(),
                present: self.outputs.iter().map(|o| o.name.clone()).collect(),
            })?
            .to_vec()
    }
}

/// A request or response that is not valid Open Inference Protocol. Every
/// variant is a client error: INVALID_ARGUMENT on gRPC, 400 on REST.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OipError {
    /// A datatype string outside the protocol's table.
    #[error(
        "tensor '{}': unknown datatype '{}'; expected one of BOOL, INT8, INT16, INT32, INT64, UINT8, UINT16, UINT32, UINT64, FP16, BF16, FP32, FP64, BYTES", quote(.name), quote(.datatype)
    )]
    UnknownDatatype {
        /// Tensor name.
        name: String,
        /// The datatype given.
        datatype: String,
    },
    /// A tensor type the protocol cannot carry.
    #[error(
        "tensor '{}': {source}", quote(.name)
    )]
    Unsupported {
        /// Tensor name.
        name: String,
        /// The refusal.
        source: UnsupportedType,
    },
    /// Data the tensor refuses (BOOL bytes other than 0 and 1, a length
    /// that does not match the shape).
    #[error(
        "tensor '{}': {source}", quote(.name)
    )]
    Value {
        /// Tensor name.
        name: String,
        /// What is wrong with the data.
        source: crate::TensorError,
    },
    /// A negative dimension or an element count that overflows.
    #[error(
        "tensor '{}': invalid shape {}: dimensions must be non-negative and the size must fit in memory", quote(.name), ShapeDisplay(.shape)
    )]
    Shape {
        /// Tensor name.
        name: String,
        /// The shape.
        shape: Vec<i64>,
    },
    /// Raw and typed contents in one message (Triton's text first).
    #[error(
        "contents field must not be specified when using raw_input_contents for '{}' for model '{}': raw and typed contents are mixed; when raw_input_contents is used, no tensor may carry contents",
        quote(.tensor),
        quote(.model)
    )]
    MixedContents {
        /// The first tensor with typed contents.
        tensor: String,
        /// The message's model.
        model: String,
    },
    /// Raw contents whose count differs from the tensor count.
    #[error("expected {tensors} raw contents (one per tensor) but got {raw}")]
    RawCount {
        /// Tensors in the message.
        tensors: usize,
        /// Raw contents in the message.
        raw: usize,
    },
    /// Data of the wrong byte size for shape and datatype.
    #[error(
        "tensor '{}': {datatype} data of shape {} must be {expected} bytes but is {actual}", quote(.name), ShapeDisplay(.shape)
    )]
    DataSize {
        /// Tensor name.
        name: String,
        /// The type.
        datatype: DataType,
        /// The shape.
        shape: Vec<i64>,
        /// Element count times item size.
        expected: u64,
        /// Bytes given.
        actual: u64,
    },
    /// A number of typed elements that differs from the shape's.
    #[error(
        "tensor '{}': shape {} holds {expected} elements but {actual} were given", quote(.name), ShapeDisplay(.shape)
    )]
    ElementCount {
        /// Tensor name.
        name: String,
        /// The shape.
        shape: Vec<i64>,
        /// Element count of the shape.
        expected: u64,
        /// Elements given.
        actual: u64,
    },
    /// Typed contents in a field that does not match the datatype.
    #[error(
        "tensor '{}': {datatype} data must be in {expected}", quote(.name)
    )]
    WrongContents {
        /// Tensor name.
        name: String,
        /// The type.
        datatype: DataType,
        /// Where it must be.
        expected: &'static str,
    },
    /// A value outside the range of its datatype.
    #[error(
        "tensor '{}': value {value} is out of range for {datatype}", quote(.name)
    )]
    ValueRange {
        /// Tensor name.
        name: String,
        /// The type.
        datatype: DataType,
        /// The value as text.
        value: String,
    },
    /// A value of the wrong JSON kind for its datatype.
    #[error(
        "tensor '{}': element {index} ({value}) is not a valid {datatype} value", quote(.name)
    )]
    ValueKind {
        /// Tensor name.
        name: String,
        /// The type.
        datatype: DataType,
        /// Flat element index.
        index: usize,
        /// The value as JSON text (truncated).
        value: String,
    },
    /// A BYTES element whose 4-byte length prefix runs past its tensor.
    #[error(
        "tensor '{}': BYTES element {index} at offset {offset} declares {declared} bytes but only {available} remain in the tensor", quote(.name)
    )]
    BytesElement {
        /// Tensor name.
        name: String,
        /// Element index.
        index: usize,
        /// Offset of its length prefix.
        offset: usize,
        /// The declared length.
        declared: u64,
        /// Bytes left.
        available: usize,
    },
    /// A malformed REST body; holds what is wrong.
    #[error("{0}")]
    Json(String),
    /// A bad `Inference-Header-Content-Length`.
    #[error("Inference-Header-Content-Length {} is invalid: {reason}", quote(.value))]
    HeaderLength {
        /// The header value.
        value: String,
        /// Why it is invalid.
        reason: String,
    },
    /// A binary tensor running past the body.
    #[error(
        "tensor '{}': binary_data_size {declared} exceeds the {available} bytes left in the body", quote(.name)
    )]
    BinaryOverrun {
        /// Tensor name.
        name: String,
        /// Its binary_data_size.
        declared: u64,
        /// Bytes left.
        available: usize,
    },
    /// An input placed in shared memory whose data could not be had.
    #[error("tensor '{}': {reason}", quote(.name))]
    SharedMemory {
        /// Tensor name.
        name: String,
        /// Why.
        reason: String,
    },
    /// An input placed in shared memory that also carries data.
    #[error(
        "tensor '{}' is placed in shared memory ('shared_memory_region') and also carries data in the message; give one or the other", quote(.name)
    )]
    PlacedWithData {
        /// Tensor name.
        name: String,
    },
    /// Binary data left after the last binary tensor.
    #[error(
        "{0} bytes of binary data follow the last binary tensor; binary_data_size values must add up to the body after the JSON header"
    )]
    TrailingBinary(usize),
}

impl OipError {
    /// The error with the message's model named where the text names it.
    pub(crate) fn of_model(self, model_name: &str) -> OipError {
        match self {
            OipError::MixedContents { tensor, .. } => OipError::MixedContents {
                tensor,
                model: model_name.to_owned(),
            },
            other => other,
        }
    }
}

/// A tensor's bytes as the protocol's raw form holds them: little-endian
/// elements, or BYTES elements each after its 4-byte little-endian length
/// (what shared memory holds too). Numeric tensors share their bytes.
pub fn raw_contents(t: &Tensor) -> bytes::Bytes {
    contents::encode_raw(t)
}

/// Supplies the data of an input that its message does not carry (Triton's
/// shared-memory parameters): given the input's name and placement, its
/// bytes, or why there are none.
pub type External<'a> =
    &'a mut dyn FnMut(&str, &shared_memory::Placement) -> Result<bytes::Bytes, String>;

/// Refuses every placement: for decoders that read no shared memory.
pub fn no_shared_memory(_: &str, _: &shared_memory::Placement) -> Result<bytes::Bytes, String> {
    Err("inputs in shared memory are not supported here; send the data in the message".into())
}

/// The data of input `name` placed by `parameters`, if they place it.
pub(crate) fn external_input(
    name: &str,
    parameters: &Parameters,
    external: &mut External<'_>,
) -> Result<Option<bytes::Bytes>, OipError> {
    let placed = shared_memory::placement(parameters).map_err(|e| OipError::SharedMemory {
        name: name.to_owned(),
        reason: e.to_string(),
    })?;
    match placed {
        None => Ok(None),
        Some(p) => external(name, &p)
            .map(Some)
            .map_err(|reason| OipError::SharedMemory {
                name: name.to_owned(),
                reason,
            }),
    }
}

pub(crate) fn resolve_datatype(name: &str, datatype: &str) -> Result<DataType, OipError> {
    DataType::from_oip_name(datatype).ok_or_else(|| OipError::UnknownDatatype {
        name: name.to_owned(),
        datatype: datatype.to_owned(),
    })
}

/// The error of a tensor whose parts were checked but whose data is not a
/// valid value (a BOOL byte other than 0 or 1); shape errors otherwise.
pub(crate) fn value_error(
    name: &str,
    shape: Vec<i64>,
) -> impl FnOnce(crate::TensorError) -> OipError + '_ {
    move |e| match e {
        crate::TensorError::InvalidBool { .. } => OipError::Value {
            name: name.to_owned(),
            source: e,
        },
        _ => OipError::Shape {
            name: name.to_owned(),
            shape,
        },
    }
}

pub(crate) fn checked_count(name: &str, dtype: DataType, shape: &[i64]) -> Result<usize, OipError> {
    let bad = || OipError::Shape {
        name: name.to_owned(),
        shape: shape.to_vec(),
    };
    let count = crate::tensor::element_count(shape).ok_or_else(bad)?;
    count
        .checked_mul(dtype.item_size().unwrap_or(1))
        .ok_or_else(bad)?;
    Ok(count)
}

pub(crate) fn datatype_name(name: &str, dtype: DataType) -> Result<&'static str, OipError> {
    dtype.oip_name().map_err(|source| OipError::Unsupported {
        name: name.to_owned(),
        source,
    })
}
