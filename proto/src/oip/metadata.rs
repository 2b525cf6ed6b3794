//! Server and model metadata, the replies of the metadata endpoints in
//! both transports (spec §2 `ServerMetadata`, `ModelMetadata`): their JSON
//! form on REST (serde, tolerant of `null` lists) and their conversions
//! from and to the gRPC messages.
//!
//! ```
//! use serving_proto::oip::metadata::ModelMetadata;
//!
//! let m: ModelMetadata = serde_json::from_str(
//!     r#"{"name": "m", "versions": null, "platform": "", "inputs": [], "outputs": []}"#,
//! )?;
//! assert!(m.versions.is_empty());
//! # Ok::<(), serde_json::Error>(())
//! ```

use serde::{Deserialize, Deserializer, Serialize};

use crate::pb::inference::{self as pb, model_metadata_response::TensorMetadata as PbTensor};

/// A list that a server may also write as `null` or leave out (KServe
/// writes `"versions": null`).
fn null_as_empty<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Vec<T>, D::Error> {
    Ok(Option::<Vec<T>>::deserialize(d)?.unwrap_or_default())
}

/// Server metadata.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ServerMetadata {
    /// Server name.
    #[serde(default)]
    pub name: String,
    /// Server version.
    #[serde(default)]
    pub version: String,
    /// Supported extensions.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub extensions: Vec<String>,
}

/// One tensor of model metadata.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TensorMetadata {
    /// Tensor name.
    pub name: String,
    /// OIP datatype name (`FP32`, `BYTES`, ...).
    pub datatype: String,
    /// Shape; -1 marks a variable dimension.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub shape: Vec<i64>,
}

/// Model metadata.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ModelMetadata {
    /// Model name.
    pub name: String,
    /// Available versions (empty where the server has none: KServe).
    #[serde(default, deserialize_with = "null_as_empty")]
    pub versions: Vec<String>,
    /// Platform (`onnxruntime_onnx`, ...).
    #[serde(default)]
    pub platform: String,
    /// Inputs.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub inputs: Vec<TensorMetadata>,
    /// Outputs.
    #[serde(default, deserialize_with = "null_as_empty")]
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
