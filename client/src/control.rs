//! Triton's control extensions on [`Client`]: model configuration,
//! statistics, the model repository (index, load, unload) and system
//! shared-memory registration, on both transports, as typed values (the
//! generated protobuf messages for configuration and statistics, the
//! shared serde types of [`serving_proto::oip::extensions`] for the rest).

use bytes::Bytes;
use serving_proto::oip::extensions::{
    CudaSharedMemoryRegion, RepositoryModel, SystemSharedMemoryRegion,
};
use serving_proto::pb::inference::{ModelConfig, ModelStatistics};

use crate::client::CallKind;
use crate::transport::CudaRegistration;
use crate::{Client, Error};

/// What a repository load call carries besides the model's name: a
/// configuration to load the model with instead of its `config.pbtxt`
/// (Triton's `config` parameter, the configuration's JSON form), and files
/// that replace the repository's (`file:{path}`, by their path in the model
/// directory). The reference server takes the configuration and refuses
/// files, with a 400 naming the parameter.
#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    pub(crate) config: Option<String>,
    pub(crate) files: Vec<(String, Bytes)>,
}

impl LoadOptions {
    /// No override: the model loads from the repository as it is.
    pub fn new() -> LoadOptions {
        LoadOptions::default()
    }

    /// Loads the model with this configuration (JSON, as
    /// [`Client::model_config`] returns it) instead of its own.
    pub fn config(mut self, json: impl Into<String>) -> LoadOptions {
        self.config = Some(json.into());
        self
    }

    /// Loads the model with this file in place of the one at `path` in the
    /// model directory (for example `1/model.onnx`).
    pub fn file(mut self, path: impl Into<String>, contents: impl Into<Bytes>) -> LoadOptions {
        self.files.push((path.into(), contents.into()));
        self
    }
}

/// One of Triton's log settings (`log_info`, `log_warning`, `log_error`:
/// booleans; `log_verbose_level`: a number; `log_format`, `log_file`:
/// text).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(untagged)]
#[non_exhaustive]
pub enum LogSetting {
    /// A boolean setting.
    Bool(bool),
    /// A number.
    Uint(u32),
    /// Text.
    Text(String),
}

/// Log settings by name.
pub type LogSettings = std::collections::BTreeMap<String, LogSetting>;

/// Triton's trace settings by name (`trace_level`, `trace_rate`,
/// `trace_count`, `log_frequency`, `trace_file`, `trace_mode`), each a
/// list of strings as Triton gives them (`["TIMESTAMPS"]`, `["1000"]`).
pub type TraceSettings = std::collections::BTreeMap<String, Vec<String>>;

/// Changes to trace settings: a setting's new values, or `None` to take the
/// server's value again (for a model's settings).
pub type TraceChanges = std::collections::BTreeMap<String, Option<Vec<String>>>;

impl Client {
    /// Triton's trace extension: the trace settings of `model` (`None`:
    /// the server's), of one server.
    pub async fn trace_settings(&self, model: Option<&str>) -> Result<TraceSettings, Error> {
        let none = TraceChanges::new();
        let model = model.unwrap_or_default();
        self.call_as("trace_settings", CallKind::Bound, |t, ctx| {
            t.trace_settings(ctx, model, &none)
        })
        .await
    }

    /// Triton's trace extension: changes trace settings of `model` (`None`:
    /// the server's), for example `trace_level` `["TIMESTAMPS"]` and
    /// `trace_rate` `["100"]`; returns them all. Sent once, to one server,
    /// as [`Client::load_model`].
    pub async fn update_trace_settings(
        &self,
        model: Option<&str>,
        changes: &TraceChanges,
    ) -> Result<TraceSettings, Error> {
        let model = model.unwrap_or_default();
        self.call_as("update_trace_settings", CallKind::Control, |t, ctx| {
            t.trace_settings(ctx, model, changes)
        })
        .await
    }

    /// Triton's logging extension: the server's log settings, of one
    /// server (on a client of several endpoints, ask through
    /// [`Client::endpoint`]).
    pub async fn log_settings(&self) -> Result<LogSettings, Error> {
        let none = LogSettings::new();
        self.call_as("log_settings", CallKind::Bound, |t, ctx| {
            t.log_settings(ctx, &none)
        })
        .await
    }

    /// Triton's logging extension: changes the settings in `changes` (for
    /// example `log_verbose_level` to 1 for debug events) while the server
    /// runs; returns them all. Sent once, to one server, as
    /// [`Client::load_model`].
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), serving_client::Error> {
    /// use serving_client::{Client, LogSetting};
    /// let client = Client::builder().endpoint("http://127.0.0.1:8000").build()?;
    /// let changes = [("log_verbose_level".to_owned(), LogSetting::Uint(1))].into();
    /// let now = client.update_log_settings(&changes).await?;
    /// assert_eq!(now["log_verbose_level"], LogSetting::Uint(1));
    /// # Ok(())
    /// # }
    /// ```
    pub async fn update_log_settings(&self, changes: &LogSettings) -> Result<LogSettings, Error> {
        self.call_as("update_log_settings", CallKind::Control, |t, ctx| {
            t.log_settings(ctx, changes)
        })
        .await
    }

    /// Triton: the configuration of `model` (`version` `None`: the server's
    /// choice), the same [`ModelConfig`] message on both transports.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), serving_client::Error> {
    /// let client = serving_client::Client::builder().endpoint("http://127.0.0.1:8000").build()?;
    /// let config = client.model_config("add", None).await?;
    /// println!("{} batches up to {}", config.name, config.max_batch_size);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn model_config(
        &self,
        model: &str,
        version: Option<&str>,
    ) -> Result<ModelConfig, Error> {
        let version = version.unwrap_or_default();
        self.call("model_config", |t, ctx| t.model_config(ctx, model, version))
            .await
    }

    /// Triton: the statistics of `model` (`None`: of every model), per
    /// loaded version (`version` `None`: every one).
    pub async fn model_statistics(
        &self,
        model: Option<&str>,
        version: Option<&str>,
    ) -> Result<Vec<ModelStatistics>, Error> {
        let model = model.unwrap_or_default();
        let version = version.unwrap_or_default();
        self.call("model_statistics", |t, ctx| {
            t.model_statistics(ctx, model, version)
        })
        .await
    }

    /// Triton: the repository index, every model version the server knows
    /// and its state (`ready_only`: only those ready for inference).
    pub async fn repository_index(&self, ready_only: bool) -> Result<Vec<RepositoryModel>, Error> {
        self.call("repository_index", |t, ctx| {
            t.repository_index(ctx, ready_only)
        })
        .await
    }

    /// Triton: loads (or reloads) `model` from the repository and returns
    /// once it is loaded; a model that fails to load is an error with the
    /// server's reason.
    ///
    /// Sent once, to one server: never retried, and on a client of several
    /// endpoints refused unless sent through [`Client::endpoint`].
    pub async fn load_model(&self, model: &str) -> Result<(), Error> {
        self.load_model_with(model, &LoadOptions::new()).await
    }

    /// Triton: loads `model` with a configuration or files of the call's
    /// own (see [`LoadOptions`]).
    pub async fn load_model_with(&self, model: &str, options: &LoadOptions) -> Result<(), Error> {
        self.call_as("load_model", CallKind::Control, |t, ctx| {
            t.model_control(ctx, model, Some(options))
        })
        .await
    }

    /// Triton: unloads every version of `model`; requests already running
    /// finish. Sent once, to one server, as [`Client::load_model`].
    pub async fn unload_model(&self, model: &str) -> Result<(), Error> {
        self.call_as("unload_model", CallKind::Control, |t, ctx| {
            t.model_control(ctx, model, None)
        })
        .await
    }

    /// Triton: registers `byte_size` bytes at `offset` of the POSIX
    /// shared-memory object `key` as region `name`, for inputs and outputs
    /// placed there (see [`crate::shared_memory`]). Needs a server on the
    /// same host that allows it. Sent once, to one server, as
    /// [`Client::load_model`]: send the requests placing tensors in the
    /// region to the same endpoint.
    pub async fn register_system_shared_memory(
        &self,
        name: &str,
        key: &str,
        offset: u64,
        byte_size: u64,
    ) -> Result<(), Error> {
        let region = SystemSharedMemoryRegion {
            name: name.to_owned(),
            key: key.to_owned(),
            offset,
            byte_size,
        };
        let region = &region;
        self.call_as(
            "register_system_shared_memory",
            CallKind::Control,
            |t, ctx| t.register_system_shared_memory(ctx, region),
        )
        .await
        .map_err(|e| match e {
            // The server could not open or map the object, or does not
            // allow shared memory: the region's error, the server's text.
            Error::InvalidArgument { message } | Error::NotFound { message } => {
                Error::SharedMemory {
                    region: name.to_owned(),
                    message: format!("the server cannot use the region: {message}"),
                    source: None,
                }
            }
            Error::Server { endpoint, message } | Error::Unimplemented { endpoint, message } => {
                Error::SharedMemory {
                    region: name.to_owned(),
                    message: format!("the server at {endpoint} cannot use the region: {message}"),
                    source: None,
                }
            }
            e => e,
        })
    }

    /// Triton: unregisters region `name` (`None`: every region). Sent
    /// once, to one server, as [`Client::load_model`].
    pub async fn unregister_system_shared_memory(&self, name: Option<&str>) -> Result<(), Error> {
        let name = name.unwrap_or_default();
        self.call_as(
            "unregister_system_shared_memory",
            CallKind::Control,
            |t, ctx| t.unregister_system_shared_memory(ctx, name),
        )
        .await
    }

    /// Triton: the registered system shared-memory regions (`name` given:
    /// that one), of one server: on a client of several endpoints, ask
    /// through [`Client::endpoint`].
    pub async fn system_shared_memory_status(
        &self,
        name: Option<&str>,
    ) -> Result<Vec<SystemSharedMemoryRegion>, Error> {
        let name = name.unwrap_or_default();
        self.call_as("system_shared_memory_status", CallKind::Bound, |t, ctx| {
            t.system_shared_memory_status(ctx, name)
        })
        .await
    }

    /// Triton: registers `byte_size` bytes of GPU `device_id`'s memory,
    /// exported by the `cudaIpcMemHandle_t` `raw_handle` (64 bytes), as
    /// CUDA shared-memory region `name`. Needs a server with a GPU on the
    /// same host; this project's reference server refuses it
    /// ([`Error::Unimplemented`]). Sent once, to one server, as
    /// [`Client::load_model`].
    pub async fn register_cuda_shared_memory(
        &self,
        name: &str,
        raw_handle: &[u8],
        device_id: i64,
        byte_size: u64,
    ) -> Result<(), Error> {
        let region = CudaRegistration {
            name: name.to_owned(),
            raw_handle: raw_handle.to_vec(),
            device_id,
            byte_size,
        };
        let region = &region;
        self.call_as(
            "register_cuda_shared_memory",
            CallKind::Control,
            |t, ctx| t.register_cuda_shared_memory(ctx, region),
        )
        .await
    }

    /// Triton: unregisters CUDA shared-memory region `name` (`None`: every
    /// region), as tools do when they exit. Sent once, to one server, as
    /// [`Client::load_model`].
    pub async fn unregister_cuda_shared_memory(&self, name: Option<&str>) -> Result<(), Error> {
        let name = name.unwrap_or_default();
        self.call_as(
            "unregister_cuda_shared_memory",
            CallKind::Control,
            |t, ctx| t.unregister_cuda_shared_memory(ctx, name),
        )
        .await
    }

    /// Triton: the registered CUDA shared-memory regions (`name` given:
    /// that one), of one server: on a client of several endpoints, ask
    /// through [`Client::endpoint`].
    pub async fn cuda_shared_memory_status(
        &self,
        name: Option<&str>,
    ) -> Result<Vec<CudaSharedMemoryRegion>, Error> {
        let name = name.unwrap_or_default();
        self.call_as("cuda_shared_memory_status", CallKind::Bound, |t, ctx| {
            t.cuda_shared_memory_status(ctx, name)
        })
        .await
    }
}
