//! Server and model metadata, the replies of the metadata endpoints in
//! both transports (spec §2 `ServerMetadata`, `ModelMetadata`), and their
//! conversions from and to the gRPC messages.

use crate::pb::inference::{self as pb, model_metadata_response::TensorMetadata as PbTensor};

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

impl From<pb::ServerMetadataResponse> for ServerMetadata {
    fn from(m: pb::ServerMetadataResponse) -> ServerMetadata {
        ServerMetadata {
            name: m.name,
            version: m.version,
            extensions: m.extensions,
        }
    }
}

impl From<PbTensor> for TensorMetadata {
    fn from(t: PbTensor) -> TensorMetadata {
        TensorMetadata {
            name: t.name,
            datatype: t.datatype,
            shape: t.shape,
        }
    }
}

impl From<TensorMetadata> for PbTensor {
    fn from(t: TensorMetadata) -> PbTensor {
        PbTensor {
            name: t.name,
            datatype: t.datatype,
            shape: t.shape,
        }
    }
}

impl From<pb::ModelMetadataResponse> for ModelMetadata {
    fn from(m: pb::ModelMetadataResponse) -> ModelMetadata {
        ModelMetadata {
            name: m.name,
            versions: m.versions,
            platform: m.platform,
            inputs: m.inputs.into_iter().map(Into::into).collect(),
            outputs: m.outputs.into_iter().map(Into::into).collect(),
        }
    }
}

impl From<ModelMetadata> for pb::ModelMetadataResponse {
    fn from(m: ModelMetadata) -> pb::ModelMetadataResponse {
        pb::ModelMetadataResponse {
            name: m.name,
            versions: m.versions,
            platform: m.platform,
            inputs: m.inputs.into_iter().map(Into::into).collect(),
            outputs: m.outputs.into_iter().map(Into::into).collect(),
        }
    }
}
