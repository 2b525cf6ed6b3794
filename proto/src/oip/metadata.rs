//! Server and model metadata, the replies of the metadata endpoints in
//! both transports (spec §2 `ServerMetadata`, `ModelMetadata`).

/// Server metadata.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ServerMetadata {
    /// Server name.
    pub name: String,
    /// Server version.
    pub version: String,
    /// Supported extensions.
    pub extensions: Vec<String>,
}

/// One tensor of model metadata.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct TensorMetadata {
    /// Tensor name.
    pub name: String,
    /// OIP datatype name (`FP32`, `BYTES`, ...).
    pub datatype: String,
    /// Shape; -1 marks a variable dimension.
    pub shape: Vec<i64>,
}

/// Model metadata.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
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
