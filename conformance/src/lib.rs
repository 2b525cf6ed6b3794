//! `conformance`: protocol checks that run against any server speaking the
//! MindSpore Serving protocol or the Open Inference Protocol.
//!
//! The checks arrive with the conformance issue; they see a server only
//! through `serving-client` and the raw wire of `serving-proto`.

pub use serving_proto as wire;
