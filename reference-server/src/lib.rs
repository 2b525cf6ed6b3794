//! `reference-server`: an inference server over ONNX Runtime serving the
//! MindSpore Serving protocol and the Open Inference Protocol.
//!
//! The serving code arrives with the reference-server issue.

pub use serving_proto as wire;
