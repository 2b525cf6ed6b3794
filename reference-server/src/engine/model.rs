//! What the engine knows of one loaded model: its entry in the servable and
//! its inputs and outputs as its backend reports them.

use serving_proto::{DataType, Tensor};

use super::config::ModelSpec;

/// One input or output of a model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorSpec {
    /// Name inside the model.
    pub name: String,
    /// The protocol type: `String` for text (an ONNX string tensor: UTF-8
    /// without NUL bytes), `Bytes` for any bytes.
    pub dtype: DataType,
    /// Dimensions, -1 where dynamic.
    pub shape: Vec<i64>,
    /// Whether any type and any shape goes (an argument or result of a
    /// Python function, which declares neither): `dtype` and `shape` then
    /// say nothing.
    pub untyped: bool,
}

/// The first element of a text tensor that is not UTF-8.
pub fn first_non_utf8(t: &Tensor) -> Option<usize> {
    t.elements()?
        .iter()
        .position(|e| std::str::from_utf8(e).is_err())
}

/// The first element of a text tensor holding a NUL byte, and where: text
/// inputs (ONNX Runtime's, which takes them as C strings) cannot carry one.
pub fn first_nul(t: &Tensor) -> Option<(usize, usize)> {
    t.elements()?
        .iter()
        .enumerate()
        .find_map(|(i, e)| Some((i, e.iter().position(|&b| b == 0)?)))
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
    /// Whether it answers a job with any number of responses, as it sends
    /// them (Triton's decoupled models), rather than once.
    pub decoupled: bool,
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
