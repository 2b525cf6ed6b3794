//! `serving-client`: a client for model servers, in two protocol families
//! and over two transports.
//!
//! - **Protocols**: MindSpore Serving ([`Client::predict`]) and the Open
//!   Inference Protocol, a.k.a. KServe v2, which Triton, KServe, MLServer,
//!   OpenVINO Model Server and TorchServe speak ([`Client::infer`]).
//! - **Transports**: the endpoint URL's scheme picks gRPC (`grpc://`,
//!   `grpcs://`, `unix:`) or REST (`http://`, `https://`; large OIP tensors
//!   travel with the binary tensor extension). Each is a default feature,
//!   `grpc` and `rest`: build with one to leave the other's dependencies
//!   out.
//! - **Sizes**: requests over the send cap (512 MiB, configurable lower) fail
//!   before a byte is sent, with [`Error::MessageTooLarge`] carrying both
//!   numbers; a server's size refusal is the same variant with the server's
//!   numbers; a busy server is [`Error::Unavailable`], which
//!   [`Error::is_retryable`].
//! - **Several endpoints**: requests spread over them, a failing endpoint is
//!   set aside for a while, and retryable failures of idempotent calls
//!   (inference, health, metadata, statistics) are retried on another within
//!   the call's deadline, after a jittered pause once every endpoint has
//!   been tried. Calls that act on one server's state (loading, unloading,
//!   shared memory) are sent once, to the endpoint meant:
//!   [`Client::endpoint`].
//!
//! The one-line case:
//!
//! ```no_run
//! # async fn demo() -> Result<(), serving_client::Error> {
//! use serving_client::{Client, Tensor, instance};
//!
//! let client = Client::mindspore("grpc://127.0.0.1:5500")?;
//! let x = Tensor::from_slice(&[2, 2], &[1f32, 2.0, 3.0, 4.0])?;
//! let results = client.predict("add", "add_common", &[instance([("x1", x.clone()), ("x2", x)])]).await?;
//! let y = results[0].clone()?["y"].to_vec::<f32>()?;
//! assert_eq!(y, vec![2.0, 4.0, 6.0, 8.0]);
//!
//! // Open Inference (Triton, KServe, MLServer): the same in one chain.
//! let client = Client::new("grpc://127.0.0.1:8001")?;
//! let x = Tensor::from_slice(&[2, 2], &[1f32, 2.0, 3.0, 4.0])?;
//! let y: Vec<f32> = client.infer("add").input("x1", x.clone()).input("x2", x).send().await?.output("y")?;
//! # Ok(())
//! # }
//! ```
//!
//! And the rare ones:
//!
//! ```no_run
//! # fn demo(ca: Vec<u8>, cert: Vec<u8>, key: Vec<u8>) -> Result<(), serving_client::Error> {
//! use std::time::Duration;
//! use serving_client::{Balance, Client, Protocol};
//!
//! let client = Client::builder()
//!     .endpoints(["grpcs://10.0.0.1:8001", "grpcs://10.0.0.2:8001", "https://10.0.0.3:8000"])
//!     .protocol(Protocol::OpenInference)
//!     .ca_certificate_pem(ca)
//!     .identity_pem(cert, key)
//!     .server_name("models.internal")
//!     .timeout(Duration::from_secs(2))
//!     .max_send_size(64 << 20)
//!     .balance(Balance::LeastLoaded)
//!     .retries(2)
//!     .build()?;
//! # Ok(())
//! # }
//! ```

// The README's example compiles (and its crates.io page stays true), and
// so does every Rust snippet of the repository's README and guides.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeExample;
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct RepositoryReadme;
#[cfg(doctest)]
#[doc = include_str!("../../docs/client.md")]
struct ClientGuide;
#[cfg(doctest)]
#[doc = include_str!("../../docs/deploy.md")]
struct DeployGuide;

mod builder;
mod client;
mod connections;
mod control;
mod endpoint;
mod error;
mod infer;
mod pool;
mod stats;
#[cfg(feature = "grpc")]
mod stream;
mod tls;
mod transport;

#[cfg(all(unix, feature = "shared-memory"))]
pub mod shared_memory;

#[cfg(feature = "ndarray")]
pub mod array;
#[cfg(feature = "blocking")]
pub mod blocking;

pub use builder::ClientBuilder;
pub use client::{Client, MAX_MESSAGE_SIZE, Predictions, Protocol, instance};
pub use connections::{Resolve, SystemResolver};
pub use control::{LoadOptions, LogSetting, LogSettings, TraceChanges, TraceSettings};
pub use error::{BoxError, Error, SizeSide, TransportKind};
pub use infer::InferBuilder;
pub use pool::Balance;
pub use stats::InferStats;
#[cfg(feature = "grpc")]
pub use stream::{InferStream, StreamResponses};
pub use transport::{ModelMetadata, ServerMetadata, TensorMetadata};

pub use serving_proto::compression::Encoding as Compression;
pub use serving_proto::mindspore::{InstanceResult, ServableError};
pub use serving_proto::oip::extensions::{
    CudaSharedMemoryRegion, RepositoryModel, SystemSharedMemoryRegion,
};
pub use serving_proto::oip::{InferRequest, InferResponse, NamedTensor, Parameter, SequenceId};
pub use serving_proto::pb::inference::{ModelConfig, ModelStatistics};
pub use serving_proto::{DataType, Element, NamedTensors, Tensor, TensorData, TensorError};

/// The README's Rust snippets, compiled (and the wire layer's run) as
/// whole programs by `cargo test --doc`.
#[doc = include_str!("../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
