//! `conformance perf`: a load generator for servers of either family, and
//! the benchmarks of `docs/benchmarks.md` with their baselines (ONNX
//! Runtime in-process, bare echo servers of each transport, raw loopback
//! TCP).

pub mod analyzer;
#[cfg(feature = "reference")]
pub mod baselines;
#[cfg(feature = "reference")]
pub mod bench;
pub mod echo;
pub mod feed;
#[cfg(feature = "reference")]
pub mod hostile;
pub mod load;
pub mod memory;
#[cfg(feature = "reference")]
pub mod peers;
#[cfg(feature = "reference")]
pub mod stalled;
pub mod steal;

pub use feed::Feed;
pub use load::{Stats, Workload, run_feed, run_load};
