//! `reference-server`: an inference server over ONNX Runtime that serves the
//! MindSpore Serving protocol and the Open Inference Protocol (KServe v2) on
//! one gRPC port and one REST port.
//!
//! | module | job |
//! |---|---|
//! | [`server`] | configuration, start-up, readiness and shutdown: the entry point |
//! | [`engine`] | the protocol-neutral core: jobs, batching, replicas, typed errors, the backend interface |
//! | [`backends`] | what runs models behind that interface: ONNX Runtime |
//! | [`repository`] | model repositories on disk, `servable.toml`, hot reload |
//! | [`runtime`] | finding or provisioning ONNX Runtime, devices, sessions, tensors in and out |
//! | [`onnx`] | writing ONNX models in memory (the demo, test models) |
//! | [`demo`] | the built-in `add` servable |
//! | [`service`] | what every front end shares ([`service::State`]); each protocol's rules and texts |
//! | [`tls`] | TLS and mutual TLS on both ports |
//!
//! The front ends (`grpc`, `rest`), authentication (`auth`), the accept
//! loop (`serve`) and the metrics exposition (`metrics`) are internal: a
//! server is started with [`server::start`] and reached over its ports.
//!
//! ```no_run
//! # async fn run() -> Result<(), reference_server::server::StartError> {
//! use reference_server::server::{self, Config};
//!
//! let running = server::start(Config::default()).await?; // the demo on 5500 / 1500
//! println!("gRPC {} REST {}", running.grpc_address, running.rest_address);
//! running.shutdown().await;
//! # Ok(())
//! # }
//! ```

#![warn(unreachable_pub)]

mod auth;
pub mod backends;
mod body_stall;
pub mod cli;
pub mod demo;
pub mod engine;
mod error;
mod grpc;
pub mod logging;
mod metrics;
pub mod onnx;
pub mod repository;
mod rest;
pub mod runtime;
mod serve;
pub mod server;
pub mod service;
pub mod tls;
pub mod trace;
