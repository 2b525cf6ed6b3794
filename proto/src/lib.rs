//! The wire layer of the serving toolkit.
//!
//! One protocol-neutral [`Tensor`] and, for each wire form of the two protocol
//! families, a codec between that form and tensors. Every decoder is total: it
//! returns an error for any input, never panics, and never allocates from an
//! untrusted length before checking it against the size of the input.
//!
//! | module | wire form |
//! |---|---|
//! | [`mindspore::grpc`] | MindSpore Serving `PredictRequest` / `PredictReply` (protobuf) |
//! | [`mindspore::rest`] | MindSpore Serving REST JSON (`instances`, b64 objects) and its URLs |
//! | [`oip::grpc`] | Open Inference Protocol `ModelInferRequest` / `ModelInferResponse` |
//! | [`oip::rest`] | Open Inference Protocol REST JSON and the binary tensor extension |
//! | [`size`] | encoded sizes of requests, computed before they are built or sent |
//! | [`frame`] | the gRPC length-prefixed frame header and its size limit |
//! | [`decode_cost`] | what decoding a `ModelInferRequest` or `PredictRequest` would allocate, read from its bytes before decoding |
//! | [`gather`] | a request arriving in pieces gathered into one buffer, memory in proportion to the bytes received, under a server-wide [`gather::Budget`] |
//! | `compression` | gzip and deflate bodies, inflated under a size bound (feature `compression`) |
//! | [`chunked`] | `Predict` / `ModelInfer` messages framed as chunks that share the tensors' bytes (no encode copy) |
//! | `grpc_body` | one unary message as an HTTP body: sent as those chunks, read back into one buffer with the first large tensor aligned (feature `grpc-body`) |
//! | [`text`] | bounded quotes of request values in error texts |
//! | `json_mapping` | protobuf's JSON mapping of the generated messages, as Triton's REST routes answer (feature `model-config`) |
//! | `model_config` | Triton's `ModelConfig`: `config.pbtxt` text format and JSON, by reflection (feature `model-config`) |
//! | [`pb`] | the generated protobuf messages (and tonic stubs with feature `grpc`) |
//!
//! ```
//! use serving_proto::{mindspore, Tensor, NamedTensors};
//!
//! let mut instance = NamedTensors::new();
//! instance.insert("x1".into(), Tensor::from_slice(&[2, 2], &[1.0f32, 2.0, 3.0, 4.0])?);
//! let body = mindspore::rest::encode_request(&[instance.clone()])?;
//! let decoded = mindspore::rest::decode_request(body.as_bytes(), usize::MAX)?;
//! assert_eq!(decoded, vec![instance]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

// The README's example compiles and its output is what it says.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeExample;

pub mod chunked;
#[cfg(feature = "compression")]
pub mod compression;
pub mod decode_cost;
pub mod dtype;
pub mod frame;
pub mod gather;
#[cfg(feature = "grpc-body")]
pub mod grpc_body;
pub mod json_charge;
#[cfg(feature = "model-config")]
pub mod json_mapping;
pub mod mindspore;
#[cfg(feature = "model-config")]
pub mod model_config;
pub mod oip;
pub mod pb;
pub mod size;
pub mod tensor;
pub mod text;

mod json;

pub use dtype::{DataType, UnsupportedType};
pub use tensor::{Element, Tensor, TensorData, TensorError};

/// The REST request header giving a call's deadline in milliseconds from
/// arrival, on both protocols' REST routes (gRPC has `grpc-timeout`).
pub const REST_TIMEOUT_HEADER: &str = "Request-Timeout-Ms";

/// The tensors of one instance (MindSpore) or one request (OIP), by name.
pub type NamedTensors = std::collections::BTreeMap<String, Tensor>;
