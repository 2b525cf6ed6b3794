//! `serving-client`: the Rust SDK for model servers speaking the MindSpore
//! Serving protocol or the Open Inference Protocol, over gRPC and REST.
//!
//! The transports arrive with the client issue; today the crate re-exports
//! the wire layer it is built on, so the tensor and codec types are already
//! the ones the client will take and return.

pub use serving_proto::{DataType, NamedTensors, Tensor, TensorData, TensorError};
