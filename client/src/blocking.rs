//! A blocking facade over [`crate::Client`] for programs without an async
//! runtime: each call runs to completion on a runtime the facade owns.
//!
//! ```no_run
//! use serving_client::blocking::Client;
//! use serving_client::Protocol;
//!
//! let client = Client::new("http://127.0.0.1:1500", Protocol::OpenInference)?;
//! assert!(client.server_live()?);
//! # Ok::<(), serving_client::Error>(())
//! ```

use std::sync::Arc;

use crate::{
    ClientBuilder, Error, InferRequest, InferResponse, ModelMetadata, NamedTensors, Predictions,
    Protocol, ServerMetadata,
};

/// The blocking client. Do not use it from inside an async runtime.
#[derive(Clone, Debug)]
pub struct Client {
    inner: crate::Client,
    runtime: Arc<tokio::runtime::Runtime>,
}

impl Client {
    /// A client of one endpoint with default settings.
    pub fn new(url: &str, protocol: Protocol) -> Result<Client, Error> {
        Client::from_builder(ClientBuilder::default().endpoint(url).protocol(protocol))
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

    /// See [`crate::Client::predict`].
    pub fn predict(
        &self,
        servable: &str,
        method: &str,
        instances: &[NamedTensors],
    ) -> Result<Predictions, Error> {
        self.runtime
            .block_on(self.inner.predict(servable, method, instances))
    }

    /// See [`crate::Client::predict_version`].
    pub fn predict_version(
        &self,
        servable: &str,
        method: &str,
        version: u64,
        instances: &[NamedTensors],
    ) -> Result<Predictions, Error> {
        self.runtime.block_on(
            self.inner
                .predict_version(servable, method, version, instances),
        )
    }

    /// See [`crate::Client::infer_request`].
    pub fn infer(&self, request: &InferRequest) -> Result<InferResponse, Error> {
        self.runtime.block_on(self.inner.infer_request(request))
    }

    /// See [`crate::Client::server_live`].
    pub fn server_live(&self) -> Result<bool, Error> {
        self.runtime.block_on(self.inner.server_live())
    }

    /// See [`crate::Client::server_ready`].
    pub fn server_ready(&self) -> Result<bool, Error> {
        self.runtime.block_on(self.inner.server_ready())
    }

    /// See [`crate::Client::model_ready`].
    pub fn model_ready(&self, model: &str, version: Option<&str>) -> Result<bool, Error> {
        self.runtime
            .block_on(self.inner.model_ready(model, version))
    }

    /// See [`crate::Client::server_metadata`].
    pub fn server_metadata(&self) -> Result<ServerMetadata, Error> {
        self.runtime.block_on(self.inner.server_metadata())
    }

    /// See [`crate::Client::model_metadata`].
    pub fn model_metadata(
        &self,
        model: &str,
        version: Option<&str>,
    ) -> Result<ModelMetadata, Error> {
        self.runtime
            .block_on(self.inner.model_metadata(model, version))
    }
}
