//! What the engine knows of one loaded model: its entry in the servable and
//! its inputs and outputs as ONNX Runtime reports them.

use ort::value::TensorElementType;
use serving_proto::DataType;

use super::config::ModelSpec;

/// One input or output of a model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorSpec {
    /// Name inside the model.
    pub name: String,
    /// ONNX element type.
    pub element: TensorElementType,
    /// The protocol type (ONNX strings are `String`).
    pub dtype: DataType,
    /// Dimensions, -1 where dynamic.
    pub shape: Vec<i64>,
}

/// A model of a servable version and its metadata.
#[derive(Clone, Debug)]
pub struct ModelInfo {
    /// Its entry in the servable.
    pub spec: ModelSpec,
    /// Inputs in model order.
    pub inputs: Vec<TensorSpec>,
    /// Outputs in model order.
    pub outputs: Vec<TensorSpec>,
}

impl ModelInfo {
    /// The batch size when the model has a fixed batch dimension.
    pub fn fixed_batch(&self) -> Option<usize> {
        if !self.spec.batched {
            return None;
        }
        let d = *self.inputs.first()?.shape.first()?;
        usize::try_from(d).ok().filter(|&d| d > 0)
    }
}
