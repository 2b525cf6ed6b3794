//! A blocking facade over [`crate::Client`] for programs without an async
//! runtime: each call runs to completion on a runtime the facade owns.
//!
//! ```no_run
//! use serving_client::blocking::Client;
//!
//! let client = Client::new("http://127.0.0.1:1500")?;
//! assert!(client.server_live()?);
//! # Ok::<(), serving_client::Error>(())
//! ```

use std::sync::Arc;

use crate::{
    ClientBuilder, Error, InferRequest, InferResponse, LoadOptions, ModelConfig, ModelMetadata,
    ModelStatistics, NamedTensors, Predictions, Protocol, RepositoryModel, ServerMetadata,
    SystemSharedMemoryRegion,
};

/// Blocking forms of async methods of the same names and arguments.
macro_rules! blocking {
    ($($(#[$doc:meta])* fn $name:ident($($arg:ident: $ty:ty),*) -> $out:ty;)*) => {$(
        $(#[$doc])*
        pub fn $name(&self $(, $arg: $ty)*) -> Result<$out, Error> {
            self.runtime.block_on(self.inner.$name($($arg),*))
        }
    )*};
}

/// The blocking client. Do not use it from inside an async runtime.
#[derive(Clone, Debug)]
pub struct Client {
    inner: crate::Client,
    runtime: Arc<tokio::runtime::Runtime>,
}

impl Client {
    /// An Open Inference client of one endpoint with default settings.
    pub fn new(url: &str) -> Result<Client, Error> {
        Client::from_builder(ClientBuilder::default().endpoint(url))
    }

    /// A MindSpore Serving client of one endpoint with default settings.
    pub fn mindspore(url: &str) -> Result<Client, Error> {
        Client::from_builder(
            ClientBuilder::default()
                .endpoint(url)
                .protocol(Protocol::MindSpore),
        )
    }

    /// The async client this wraps (for streaming, which has no blocking
    /// form, run it on a runtime of your own).
    pub fn as_async(&self) -> &crate::Client {
        &self.inner
    }

    /// See [`crate::Client::endpoints`].
    pub fn endpoints(&self) -> Vec<&str> {
        self.inner.endpoints()
    }

    /// See [`crate::Client::endpoint`]: a blocking client of endpoint
    /// `index` alone, sharing this one's runtime.
    pub fn endpoint(&self, index: usize) -> Option<Client> {
        Some(Client {
            inner: self.inner.endpoint(index)?,
            runtime: self.runtime.clone(),
        })
    }

    /// A client from a configured builder.
    pub fn from_builder(builder: ClientBuilder) -> Result<Client, Error> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("serving-client-blocking")
            .enable_all()
            .build()
            .map_err(|e| {
                Error::Config(format!("cannot start the blocking client's runtime: {e}"))
            })?;
        let inner = {
            let _guard = runtime.enter();
            builder.build()?
        };
        Ok(Client {
            inner,
            runtime: Arc::new(runtime),
        })
    }

    blocking! {
        /// See [`crate::Client::predict`].
        fn predict(servable: &str, method: &str, instances: &[NamedTensors]) -> Predictions;
        /// See [`crate::Client::predict_version`].
        fn predict_version(servable: &str, method: &str, version: u64, instances: &[NamedTensors]) -> Predictions;
        /// See [`crate::Client::server_live`].
        fn server_live() -> bool;
        /// See [`crate::Client::server_ready`].
        fn server_ready() -> bool;
        /// See [`crate::Client::model_ready`].
        fn model_ready(model: &str, version: Option<&str>) -> bool;
        /// See [`crate::Client::server_metadata`].
        fn server_metadata() -> ServerMetadata;
        /// See [`crate::Client::model_metadata`].
        fn model_metadata(model: &str, version: Option<&str>) -> ModelMetadata;
        /// See [`crate::Client::model_config`].
        fn model_config(model: &str, version: Option<&str>) -> ModelConfig;
        /// See [`crate::Client::model_statistics`].
        fn model_statistics(model: Option<&str>, version: Option<&str>) -> Vec<ModelStatistics>;
        /// See [`crate::Client::repository_index`].
        fn repository_index(ready_only: bool) -> Vec<RepositoryModel>;
        /// See [`crate::Client::load_model`].
        fn load_model(model: &str) -> ();
        /// See [`crate::Client::load_model_with`].
        fn load_model_with(model: &str, options: &LoadOptions) -> ();
        /// See [`crate::Client::unload_model`].
        fn unload_model(model: &str) -> ();
        /// See [`crate::Client::register_system_shared_memory`].
        fn register_system_shared_memory(name: &str, key: &str, offset: u64, byte_size: u64) -> ();
        /// See [`crate::Client::unregister_system_shared_memory`].
        fn unregister_system_shared_memory(name: Option<&str>) -> ();
        /// See [`crate::Client::system_shared_memory_status`].
        fn system_shared_memory_status(name: Option<&str>) -> Vec<SystemSharedMemoryRegion>;
    }

    /// See [`crate::Client::infer_request`].
    pub fn infer(&self, request: &InferRequest) -> Result<InferResponse, Error> {
        self.runtime.block_on(self.inner.infer_request(request))
    }

    /// See [`crate::Client::infer`]: the same builder, sent with
    /// [`InferBuilder::send`].
    pub fn infer_builder(&self, model: &str) -> InferBuilder<'_> {
        InferBuilder {
            inner: self.inner.infer(model),
            runtime: &self.runtime,
        }
    }

    /// See [`crate::Client::register_region`].
    #[cfg(all(unix, feature = "shared-memory"))]
    pub fn register_region(
        &self,
        region: &crate::shared_memory::SharedMemoryRegion,
    ) -> Result<(), Error> {
        self.runtime.block_on(self.inner.register_region(region))
    }
}

/// [`crate::InferBuilder`] with a blocking [`InferBuilder::send`].
#[derive(Debug)]
pub struct InferBuilder<'a> {
    inner: crate::InferBuilder<'a>,
    runtime: &'a tokio::runtime::Runtime,
}

impl<'a> InferBuilder<'a> {
    /// Changes the request with the async builder's methods.
    pub fn with(
        mut self,
        f: impl FnOnce(crate::InferBuilder<'a>) -> crate::InferBuilder<'a>,
    ) -> InferBuilder<'a> {
        self.inner = f(self.inner);
        self
    }

    /// Changes the request with a fallible method of the async builder
    /// (the shared-memory placements).
    pub fn try_with(
        mut self,
        f: impl FnOnce(crate::InferBuilder<'a>) -> Result<crate::InferBuilder<'a>, Error>,
    ) -> Result<InferBuilder<'a>, Error> {
        self.inner = f(self.inner)?;
        Ok(self)
    }

    /// Sends it and waits for the response.
    pub fn send(self) -> Result<InferResponse, Error> {
        self.runtime.block_on(self.inner.send())
    }
}
