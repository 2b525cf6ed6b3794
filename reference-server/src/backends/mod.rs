//! What runs models, behind the engine's one interface
//! ([`crate::engine::backend::Backend`]): ONNX Runtime, and Python.

pub mod onnxruntime;
#[cfg(unix)]
pub mod python;
