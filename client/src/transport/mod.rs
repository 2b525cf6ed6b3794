//! The two transports behind every endpoint ([`Transport`]: gRPC and
//! REST), and what a call carries ([`CallCtx`]).

#[cfg(feature = "grpc")]
pub(crate) mod grpc;
#[cfg(feature = "rest")]
pub(crate) mod rest;
#[cfg(feature = "grpc")]
mod unary;

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use serving_proto::NamedTensors;
use serving_proto::mindspore::InstanceResult;
use serving_proto::oip::extensions::{
    CudaSharedMemoryRegion, RepositoryModel, SystemSharedMemoryRegion,
};
use serving_proto::oip::{InferRequest, InferResponse};
use serving_proto::pb::inference::{ModelConfig, ModelStatistics};

use crate::Error;

/// What a transport's call returns.
pub(crate) type Call<'a, T> = BoxFuture<'a, Result<T, Error>>;

/// One endpoint's transport: every call of both protocols, each in that
/// transport's form. The client's pool picks an endpoint and calls it here
/// without knowing which transport it is.
pub(crate) trait Transport: Send + Sync + 'static {
    /// The endpoint's URL as the user gave it (the label in errors).
    fn label(&self) -> &str;

    /// The gRPC transport, for calls only gRPC has (streaming).
    #[cfg(feature = "grpc")]
    fn as_grpc(&self) -> Option<&grpc::Grpc> {
        None
    }

    /// MindSpore `Predict`.
    fn predict<'a>(
        &'a self,
        ctx: CallCtx,
        servable: &'a str,
        method: &'a str,
        version: u64,
        instances: &'a [NamedTensors],
    ) -> Call<'a, Vec<InstanceResult>>;

    /// OIP inference.
    fn infer<'a>(&'a self, ctx: CallCtx, req: &'a InferRequest) -> Call<'a, InferResponse>;

    /// OIP server liveness.
    fn server_live(&self, ctx: CallCtx) -> Call<'_, bool>;
    /// OIP server readiness.
    fn server_ready(&self, ctx: CallCtx) -> Call<'_, bool>;
    /// OIP model readiness (`version` empty: the server's choice).
    fn model_ready<'a>(&'a self, ctx: CallCtx, name: &'a str, version: &'a str) -> Call<'a, bool>;
    /// OIP server metadata.
    fn server_metadata(&self, ctx: CallCtx) -> Call<'_, ServerMetadata>;
    /// OIP model metadata.
    fn model_metadata<'a>(
        &'a self,
        ctx: CallCtx,
        name: &'a str,
        version: &'a str,
    ) -> Call<'a, ModelMetadata>;

    /// Triton's model configuration.
    fn model_config<'a>(
        &'a self,
        ctx: CallCtx,
        name: &'a str,
        version: &'a str,
    ) -> Call<'a, ModelConfig>;
    /// Triton's statistics (`name` empty: every model).
    fn model_statistics<'a>(
        &'a self,
        ctx: CallCtx,
        name: &'a str,
        version: &'a str,
    ) -> Call<'a, Vec<ModelStatistics>>;
    /// Triton's repository index.
    fn repository_index(&self, ctx: CallCtx, ready: bool) -> Call<'_, Vec<RepositoryModel>>;
    /// Triton's repository load (`Some`) or unload (`None`).
    fn model_control<'a>(
        &'a self,
        ctx: CallCtx,
        name: &'a str,
        load: Option<&'a crate::LoadOptions>,
    ) -> Call<'a, ()>;
    /// Triton's system shared memory: register a region.
    fn register_system_shared_memory<'a>(
        &'a self,
        ctx: CallCtx,
        region: &'a SystemSharedMemoryRegion,
    ) -> Call<'a, ()>;
    /// Unregister one region (`name` empty: every region).
    fn unregister_system_shared_memory<'a>(&'a self, ctx: CallCtx, name: &'a str) -> Call<'a, ()>;
    /// The registered regions (`name` empty: every region).
    fn system_shared_memory_status<'a>(
        &'a self,
        ctx: CallCtx,
        name: &'a str,
    ) -> Call<'a, Vec<SystemSharedMemoryRegion>>;
    /// Triton's CUDA shared memory: register a region by its IPC handle.
    fn register_cuda_shared_memory<'a>(
        &'a self,
        ctx: CallCtx,
        region: &'a CudaRegistration,
    ) -> Call<'a, ()>;
    /// Unregister one CUDA region (`name` empty: every region).
    fn unregister_cuda_shared_memory<'a>(&'a self, ctx: CallCtx, name: &'a str) -> Call<'a, ()>;
    /// The registered CUDA regions (`name` empty: every region).
    fn cuda_shared_memory_status<'a>(
        &'a self,
        ctx: CallCtx,
        name: &'a str,
    ) -> Call<'a, Vec<CudaSharedMemoryRegion>>;
    /// Triton's trace settings of `model` (empty: the server's): changes
    /// `changes` (none: only reads them), returns them all.
    fn trace_settings<'a>(
        &'a self,
        ctx: CallCtx,
        model: &'a str,
        changes: &'a crate::TraceChanges,
    ) -> Call<'a, crate::TraceSettings>;
    /// Triton's log settings: changes `changes` (none: only reads them),
    /// returns them all.
    fn log_settings<'a>(
        &'a self,
        ctx: CallCtx,
        changes: &'a crate::LogSettings,
    ) -> Call<'a, crate::LogSettings>;
}

/// A CUDA shared-memory registration as both transports send it.
pub(crate) struct CudaRegistration {
    pub(crate) name: String,
    /// The `cudaIpcMemHandle_t`'s bytes.
    pub(crate) raw_handle: Vec<u8>,
    pub(crate) device_id: i64,
    pub(crate) byte_size: u64,
}

/// Per-call settings handed to a transport.
#[derive(Clone)]
pub(crate) struct CallCtx {
    /// Headers (gRPC metadata) sent with every call: authorization, ...
    pub headers: Arc<http::HeaderMap>,
    /// Time left for this attempt.
    pub timeout: Option<Duration>,
    /// The send cap in bytes.
    pub max_send: u64,
    /// The receive cap in bytes.
    pub max_receive: u64,
    /// Requests compressed with this, and compressed replies accepted.
    pub compression: Option<serving_proto::compression::Encoding>,
    /// Where the data of outputs written to shared memory is read.
    pub output_regions: Option<OutputRegions>,
    /// Where an infer call's encoding and decoding times go.
    pub timing: Option<Arc<crate::stats::CallTiming>>,
}

/// Reads the data of an output written to shared memory, given its name
/// and placement (the regions a request placed its outputs in).
pub(crate) type OutputRegions = Arc<
    dyn Fn(&str, &serving_proto::oip::shared_memory::Placement) -> Result<bytes::Bytes, String>
        + Send
        + Sync,
>;

impl std::fmt::Debug for CallCtx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallCtx")
            .field("timeout", &self.timeout)
            .field("max_send", &self.max_send)
            .field("max_receive", &self.max_receive)
            .field("compression", &self.compression)
            .field("output_regions", &self.output_regions.is_some())
            .finish_non_exhaustive()
    }
}

impl CallCtx {
    /// Counts time spent encoding this call's request.
    pub fn sent(&self, took: Duration) {
        if let Some(t) = &self.timing {
            t.sent(took);
        }
    }

    /// Counts time spent decoding this call's reply.
    pub fn received(&self, took: Duration) {
        if let Some(t) = &self.timing {
            t.received(took);
        }
    }

    /// Refuses a request of `size` encoded bytes over the send cap, before
    /// anything is sent.
    #[cfg(feature = "rest")]
    pub fn check_send(&self, size: u64) -> Result<(), crate::Error> {
        serving_proto::frame::check_size(serving_proto::frame::Direction::Sent, size, self.max_send)
            .map_err(sent_too_large)
    }

    /// What decoding a response calls for each output written to shared
    /// memory: the regions this call placed outputs in, or a refusal.
    pub fn outputs_in_shared_memory(
        &self,
    ) -> impl FnMut(
        &str,
        &serving_proto::oip::shared_memory::Placement,
    ) -> Result<bytes::Bytes, String>
    + '_ {
        move |name, placement| match &self.output_regions {
            Some(read) => read(name, placement),
            None => Err(format!(
                "the server wrote output '{}' to shared memory region '{}', which this call did not place it in; ask for outputs in shared memory with InferBuilder::output_in_region",
                serving_proto::text::quote(name),
                serving_proto::text::quote(&placement.region)
            )),
        }
    }

    /// A tonic request carrying this call's headers and `grpc-timeout`.
    #[cfg(feature = "grpc")]
    pub fn grpc_request<T>(&self, message: T) -> tonic::Request<T> {
        let mut r = tonic::Request::new(message);
        if !self.headers.is_empty() {
            *r.metadata_mut() = tonic::metadata::MetadataMap::from_headers((*self.headers).clone());
        }
        if let Some(t) = self.timeout {
            r.set_timeout(t);
        }
        r
    }
}

/// Inflates a compressed reply under the receive cap, off the async
/// threads (CPU work in proportion to the reply).
pub(crate) async fn inflate_reply(
    encoding: serving_proto::compression::Encoding,
    body: bytes::Bytes,
    max_receive: u64,
    endpoint: &str,
) -> Result<bytes::Bytes, crate::Error> {
    use serving_proto::compression::{self, InflateError};
    let limit = usize::try_from(max_receive).unwrap_or(usize::MAX);
    match tokio::task::spawn_blocking(move || compression::inflate(encoding, &body, limit)).await {
        Ok(Ok(bytes)) => Ok(bytes::Bytes::from(bytes)),
        Ok(Err(InflateError::TooLarge { .. })) => Err(crate::Error::MessageTooLarge {
            size: None,
            limit: Some(max_receive),
            side: crate::SizeSide::Client,
        }),
        Ok(Err(e)) => Err(crate::Error::Protocol {
            endpoint: endpoint.to_owned(),
            message: format!("the compressed reply cannot be inflated: {e}"),
        }),
        Err(e) => Err(crate::Error::Protocol {
            endpoint: endpoint.to_owned(),
            message: format!("inflating the reply failed: {e}"),
        }),
    }
}

/// Compresses a request body given in pieces, off the async threads.
#[cfg(feature = "rest")]
pub(crate) async fn compress_body(
    encoding: serving_proto::compression::Encoding,
    parts: Vec<bytes::Bytes>,
) -> bytes::Bytes {
    tokio::task::spawn_blocking(move || {
        bytes::Bytes::from(serving_proto::compression::compress_chunks(
            encoding, &parts,
        ))
    })
    .await
    .unwrap_or_default()
}

/// A reply from `endpoint` that does not decode.
pub(crate) fn protocol_error(endpoint: &str, e: impl std::fmt::Display) -> crate::Error {
    crate::Error::Protocol {
        endpoint: endpoint.to_owned(),
        message: e.to_string(),
    }
}

/// A request refused by the send cap.
pub(crate) fn sent_too_large(e: serving_proto::frame::TooLarge) -> crate::Error {
    crate::Error::MessageTooLarge {
        size: Some(e.size),
        limit: Some(e.limit),
        side: crate::SizeSide::Client,
    }
}

pub use serving_proto::oip::metadata::{ModelMetadata, ServerMetadata, TensorMetadata};
