//! The two transports behind every endpoint, and what a call carries.

pub(crate) mod grpc;
pub(crate) mod rest;

use std::time::Duration;

/// Per-call settings handed to a transport.
#[derive(Clone, Copy, Debug)]
pub(crate) struct CallCtx {
    /// Time left for this attempt.
    pub timeout: Option<Duration>,
    /// The send cap in bytes.
    pub max_send: u64,
    /// The receive cap in bytes.
    pub max_receive: u64,
}

/// Server metadata (Open Inference Protocol).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerMetadata {
    /// Server name.
    pub name: String,
    /// Server version.
    pub version: String,
    /// Supported extensions.
    pub extensions: Vec<String>,
}

/// One tensor of model metadata.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorMetadata {
    /// Tensor name.
    pub name: String,
    /// OIP datatype name (`FP32`, `BYTES`, ...).
    pub datatype: String,
    /// Shape; -1 marks a variable dimension.
    pub shape: Vec<i64>,
}

/// Model metadata (Open Inference Protocol).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelMetadata {
    /// Model name.
    pub name: String,
    /// Available versions.
    pub versions: Vec<String>,
    /// Platform (`onnxruntime_onnx`, ...).
    pub platform: String,
    /// Inputs.
    pub inputs: Vec<TensorMetadata>,
    /// Outputs.
    pub outputs: Vec<TensorMetadata>,
}
