//! `reference-server`: an inference server over ONNX Runtime that serves the
//! MindSpore Serving protocol and the Open Inference Protocol (KServe v2) on
//! one gRPC port and one REST port.
//!
//! | module | job |
//! |---|---|
//! | [`runtime`] | finding or provisioning ONNX Runtime, devices, sessions, tensors in and out |
//! | [`onnx`] | writing ONNX models in memory (the demo, test models) |
//! | [`repository`] | model repositories on disk and `servable.toml` |
//! | [`demo`] | the built-in `add` servable |
//! | [`engine`] | loaded servable versions and running their methods |
//! | [`service`] | each protocol's semantics, independent of transport |
//! | [`grpc`] | the gRPC front end: `MSService`, `GRPCInferenceService`, health |
//! | [`rest`] | the REST front end: MindSpore routes and OIP `/v2` |
//! | [`tls`], [`auth`] | TLS and mutual TLS on both ports; bearer-token authentication |
//! | [`serve`] | the accept loop shared by both ports, with graceful drain |
//! | [`metrics`] | Prometheus metrics |
//! | [`server`] | configuration, start-up, readiness and shutdown |

pub mod auth;
pub mod demo;
pub mod engine;
pub mod error;
pub mod grpc;
pub mod metrics;
pub mod onnx;
pub mod repository;
pub mod rest;
pub mod runtime;
pub mod serve;
pub mod server;
pub mod service;
pub mod tls;
