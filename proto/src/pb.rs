//! Messages generated from `proto/*.proto` (prost), with the tonic client and
//! server stubs under the `grpc` feature. Every `bytes` field is
//! [`bytes::Bytes`] and every map a `BTreeMap`.

#![allow(missing_docs, clippy::all)]

/// `mindspore.serving.proto`: the MindSpore Serving public API (`MSService`).
pub mod mindspore {
    include!(concat!(env!("OUT_DIR"), "/mindspore.serving.proto.rs"));
}

/// `inference`: the Open Inference Protocol (`GRPCInferenceService`).
pub mod inference {
    include!(concat!(env!("OUT_DIR"), "/inference.rs"));
}
