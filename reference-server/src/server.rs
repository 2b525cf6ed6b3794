//! Configuration, start-up, readiness and shutdown.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic_health::ServingStatus;

use crate::engine::registry::Registry;
use crate::engine::{Backends, LoadOptions};
use crate::repository::watch::Watcher;
use crate::repository::{self, RepositoryError};
use crate::runtime::device::{self, Device, MixedFamilies};
use crate::runtime::{Runtime, RuntimeError};
use crate::service::State;
use crate::tls::{self, TlsError, TlsFiles};
use crate::{demo, grpc, rest, serve};

/// How models are loaded and unloaded: Triton's `--model-control-mode`,
/// and this server's own default.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum ModelControl {
    /// This server's own: every model at start, the repository polled
    /// (`poll_interval`), and the repository API's loads and unloads
    /// taken too.
    #[default]
    Open,
    /// Triton's `none`: every model at start; nothing changes after (no
    /// polling; the repository API's loads and unloads are refused).
    None,
    /// Triton's `poll`: every model at start, then the repository polled;
    /// the repository API's loads and unloads are refused.
    Poll,
    /// Triton's `explicit`: the models of `load_models` at start (`*`:
    /// all), then only the repository API's loads and unloads; no polling.
    Explicit,
}

impl ModelControl {
    /// Whether the repository API may load and unload models.
    pub fn api_loads(&self) -> bool {
        matches!(self, ModelControl::Open | ModelControl::Explicit)
    }

    /// Whether the repository is polled for changes.
    pub fn polls(&self) -> bool {
        matches!(self, ModelControl::Open | ModelControl::Poll)
    }

    /// Triton's name of the mode (`open` for this server's own).
    pub fn name(&self) -> &'static str {
        match self {
            ModelControl::Open => "open",
            ModelControl::None => "none",
            ModelControl::Poll => "poll",
            ModelControl::Explicit => "explicit",
        }
    }
}

/// Everything a server needs to start.
#[derive(Clone, Debug)]
pub struct Config {
    /// The gRPC address (default `127.0.0.1:5500`).
    pub grpc_address: SocketAddr,
    /// The REST address (default `127.0.0.1:1500`).
    pub rest_address: SocketAddr,
    /// Serve gRPC (Triton's `--allow-grpc`); when false, `grpc_address`
    /// is not bound.
    pub serve_grpc: bool,
    /// Serve REST (Triton's `--allow-http`); when false, `rest_address`
    /// is not bound.
    pub serve_rest: bool,
    /// Also serve `GET /metrics` alone on this address (Triton's
    /// `--metrics-port`); the REST port serves it too.
    pub metrics_address: Option<SocketAddr>,
    /// Also serve gRPC on this Unix domain socket (a stale socket file there
    /// is replaced).
    pub grpc_unix: Option<PathBuf>,
    /// A model repository; `None` serves the built-in demo.
    pub model_repository: Option<PathBuf>,
    /// Serve `model_repository` as this one model (see
    /// [`repository::Source::new`]): a single model's directory, as KServe
    /// mounts it at `/mnt/models`.
    pub model_name: Option<String>,
    /// Refuse to start when a model of the repository cannot be loaded
    /// (Triton's `--exit-on-error`); `false` starts with that model
    /// reported not ready.
    pub exit_on_error: bool,
    /// How models are loaded and unloaded (Triton's
    /// `--model-control-mode`).
    pub model_control: ModelControl,
    /// The models loaded at start under [`ModelControl::Explicit`]
    /// (Triton's `--load-model`; `*` loads all); ignored otherwise.
    pub load_models: Vec<String>,
    /// Ready only while every model the server was to load serves
    /// (Triton's `--strict-readiness`, on by default).
    pub strict_readiness: bool,
    /// The name server metadata reports (Triton's `--id`; default
    /// `serving-reference-server`).
    pub server_id: Option<String>,
    /// Tracing (Triton's `--trace-config`): the starting settings and the
    /// OpenTelemetry collector.
    pub trace: crate::trace::TraceConfig,
    /// `max_batch_size` of Triton models completed from their ONNX file
    /// (Triton's `default-max-batch-size`).
    pub default_max_batch_size: u32,
    /// Devices for the demo and for servables that name none.
    pub devices: Vec<Device>,
    /// Run a replica on the CPU when its device cannot be used.
    pub allow_cpu_fallback: bool,
    /// An explicit ONNX Runtime library.
    pub ort_lib: Option<PathBuf>,
    /// The interpreter of Python models (`python3`: the first on the
    /// `PATH`).
    pub python: PathBuf,
    /// The response cache's size in bytes (Triton's `--cache-config
    /// local,size=N`), for models whose configuration enables it; `None`:
    /// no cache.
    pub response_cache_bytes: Option<usize>,
    /// The message limit in MiB, 1 to 512.
    pub max_msg_mb_size: u32,
    /// The most memory, in MiB, held by requests still arriving (gRPC
    /// messages and REST bodies) over all connections; at least
    /// `max_msg_mb_size`.
    pub max_incoming_mb: u32,
    /// The most requests queued or running per servable version.
    pub max_enqueued_requests: usize,
    /// The longest last run of a method for which a lone request to an
    /// idle CPU replica runs on its caller's thread; zero: never.
    pub inline_max: std::time::Duration,
    /// Whether tests may make replicas fail on purpose (never in production).
    pub fault_injection: bool,
    /// How often the repository is polled for new and removed versions;
    /// `None` turns hot reload off.
    pub poll_interval: Option<std::time::Duration>,
    /// TLS on both ports.
    pub tls: Option<TlsFiles>,
    /// A bearer token every request must carry (health checks excepted).
    pub auth_token: Option<String>,
    /// How long a shutdown waits for open requests to finish.
    pub drain_timeout: std::time::Duration,
    /// How long a new connection may take to send its first request's
    /// headers (HTTP/1.1) or the HTTP/2 preface, a TLS handshake included,
    /// before it is closed; more than zero.
    pub connection_first_bytes_timeout: std::time::Duration,
    /// How long a connection with no request in flight stays open (HTTP/2
    /// clients get a GOAWAY); `None`: as long as the client keeps it.
    pub connection_idle_timeout: Option<std::time::Duration>,
    /// How long a request's body may send nothing while it is read before
    /// the request fails (REST 408, gRPC `DEADLINE_EXCEEDED`); a stream
    /// between two messages is not bounded; `None`: no limit.
    pub request_body_timeout: Option<std::time::Duration>,
    /// The most connections open at once over all the server's ports (at
    /// the cap, the server stops accepting until one closes), 1 to
    /// [`MAX_CONNECTIONS`]; `None`: [`default_max_connections`].
    pub max_connections: Option<usize>,
    /// Let clients register system shared memory and place tensors in it
    /// (Triton's `--allow-client-shm`; off by default).
    pub allow_shared_memory: bool,
    /// The most shared memory mapped for registered regions at once, MiB
    /// (address space, not memory: see `docs/server.md`); 0 refuses every
    /// region.
    pub max_shared_memory_mb: u64,
    /// The most disk the files given with repository loads hold together,
    /// MiB (Triton sets no bound); 0 refuses loads with files.
    pub max_load_files_mb: u64,
    /// Compress gRPC replies for clients that accept the encoding (Triton's
    /// `--grpc-infer-response-compression-level`); `None`, the default,
    /// sends them uncompressed.
    pub grpc_response_compression: Option<serving_proto::compression::Encoding>,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            grpc_address: ([127, 0, 0, 1], 5500).into(),
            rest_address: ([127, 0, 0, 1], 1500).into(),
            serve_grpc: true,
            serve_rest: true,
            metrics_address: None,
            grpc_unix: None,
            model_repository: None,
            model_name: None,
            exit_on_error: true,
            model_control: ModelControl::Open,
            load_models: Vec::new(),
            strict_readiness: true,
            server_id: None,
            trace: crate::trace::TraceConfig::default(),
            default_max_batch_size: repository::DEFAULT_MAX_BATCH_SIZE,
            devices: vec![Device::Cpu],
            allow_cpu_fallback: false,
            ort_lib: None,
            python: PathBuf::from("python3"),
            response_cache_bytes: None,
            max_msg_mb_size: DEFAULT_MAX_MSG_MB,
            max_incoming_mb: DEFAULT_MAX_INCOMING_MB,
            max_enqueued_requests: crate::engine::DEFAULT_QUEUE_LIMIT,
            inline_max: crate::engine::DEFAULT_INLINE_MAX,
            fault_injection: false,
            poll_interval: Some(std::time::Duration::from_secs(5)),
            tls: None,
            auth_token: None,
            drain_timeout: std::time::Duration::from_secs(30),
            connection_first_bytes_timeout: DEFAULT_FIRST_BYTES_TIMEOUT,
            connection_idle_timeout: Some(DEFAULT_IDLE_TIMEOUT),
            request_body_timeout: Some(DEFAULT_BODY_TIMEOUT),
            max_connections: None,
            allow_shared_memory: false,
            max_shared_memory_mb: DEFAULT_MAX_SHARED_MEMORY_MB,
            max_load_files_mb: DEFAULT_MAX_LOAD_FILES_MB,
            grpc_response_compression: None,
        }
    }
}

/// MindSpore's default message limit, MiB.
pub const DEFAULT_MAX_MSG_MB: u32 = 100;

/// The default memory for requests still arriving, MiB.
pub const DEFAULT_MAX_INCOMING_MB: u32 = 1024;

/// The default time from accepting a connection to its first request's
/// headers or HTTP/2 preface.
pub const DEFAULT_FIRST_BYTES_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The default time a connection with no request in flight stays open.
pub const DEFAULT_IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(300);

/// The default time a request's body may send nothing while it is read.
pub const DEFAULT_BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// The longest connection timeout (and the longest duration any flag
/// takes): one year.
pub const MAX_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(365 * 24 * 3600);

/// The largest `max_connections`.
pub const MAX_CONNECTIONS: usize = 1 << 20;

/// The connection cap when [`Config::max_connections`] is `None`: 10000,
/// or the process's descriptor limit (`RLIMIT_NOFILE`) less a reserve (an
/// eighth of it, at least 32, at most half) when that is lower, so that
/// the descriptors model files and shared memory need are left.
pub fn default_max_connections() -> usize {
    serve::default_max_connections()
}

/// The default cap on shared memory mapped for registered regions, MiB:
/// 1 TiB, a 128th of a 47-bit address space and more than the RAM-backed
/// `/dev/shm` of most hosts holds.
pub const DEFAULT_MAX_SHARED_MEMORY_MB: u64 = 1 << 20;

/// The default `--max-load-files-mb`: 4 GiB of files given with loads.
pub const DEFAULT_MAX_LOAD_FILES_MB: u64 = 4096;

/// Why the server did not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// `max_msg_mb_size` outside 1..=512 (MindSpore's text).
    #[error("Parameter 'max_msg_mb_size' should be in range [1,512]")]
    MaxMsgSize(u32),
    /// `max_incoming_mb` below `max_msg_mb_size`: no request of the largest
    /// allowed size could ever be received.
    #[error(
        "--max-incoming-mb {incoming} is below --max-msg-mb-size {message}: a request of the largest allowed size could never be received"
    )]
    MaxIncoming {
        /// `max_incoming_mb`.
        incoming: u32,
        /// `max_msg_mb_size`.
        message: u32,
    },
    /// A setting outside the range it must be in.
    #[error("{setting} {value} is out of range: {range}")]
    OutOfRange {
        /// The flag.
        setting: &'static str,
        /// The value given.
        value: String,
        /// What it must be.
        range: &'static str,
    },
    /// `model_name` cannot be a model name (one URL path segment).
    #[error(
        "--model-name '{0}' cannot name a model: give one path segment, not hidden, without '/' or '\\'"
    )]
    ModelName(String),
    /// Devices of two accelerator families.
    #[error(transparent)]
    Devices(#[from] MixedFamilies),
    /// ONNX Runtime or a device is unusable.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// The Python backend could not be prepared.
    #[cfg(unix)]
    #[error(transparent)]
    Python(#[from] crate::backends::python::PythonError),
    /// The built-in demo could not be loaded.
    #[error(transparent)]
    Load(crate::engine::LoadError),
    /// The repository is invalid.
    #[error("invalid model repository: {0}")]
    Repository(#[from] RepositoryError),
    /// A port could not be bound.
    #[error("cannot listen on {address} ({what}): {source}")]
    Bind {
        /// gRPC or REST.
        what: &'static str,
        /// The address.
        address: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// The Unix socket could not be bound.
    #[error("cannot listen on the Unix socket {}: {source}", .path.display())]
    BindUnix {
        /// The socket path.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A certificate problem.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// A start-up task failed.
    #[error("start-up failed: {0}")]
    Task(String),
}

impl From<crate::engine::LoadError> for StartError {
    /// ONNX Runtime's own failures (its library, a device) stay what they
    /// are; any other is a load failure.
    fn from(e: crate::engine::LoadError) -> StartError {
        match e {
            crate::engine::LoadError::Backend(b) => match b.downcast::<RuntimeError>() {
                Ok(r) => StartError::Runtime(*r),
                Err(b) => StartError::Load(crate::engine::LoadError::Backend(b)),
            },
            e => StartError::Load(e),
        }
    }
}

/// A started server.
#[derive(Debug)]
pub struct Running {
    /// The bound gRPC address.
    pub grpc_address: SocketAddr,
    /// The bound REST address.
    pub rest_address: SocketAddr,
    /// The bound metrics address (`--metrics-port`), if any.
    pub metrics_address: Option<SocketAddr>,
    /// The shared state.
    pub state: Arc<State>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    /// The Unix socket gRPC also listens on (`--grpc-unix`), removed at
    /// shutdown.
    pub unix_socket: Option<PathBuf>,
    health: tonic_health::server::HealthReporter,
}

fn blocking_err(e: tokio::task::JoinError) -> StartError {
    StartError::Task(e.to_string())
}

/// How Python models' BLS requests reach the server's models: as any
/// Open Inference request, by the service (its checks, its texts), from the
/// replica thread of the calling model. It holds the state weakly: the
/// state holds the models.
#[cfg(unix)]
fn bls_through(state: &Arc<State>) -> crate::backends::python::Bls {
    use crate::backends::python::{Bls, BlsResponses};
    // Waits for `f` on the runtime: a replica thread is outside it; a run
    // inline on an async worker is inside it.
    fn block<T>(handle: &tokio::runtime::Handle, f: impl std::future::Future<Output = T>) -> T {
        if tokio::runtime::Handle::try_current().is_ok() {
            tokio::task::block_in_place(|| handle.block_on(f))
        } else {
            handle.block_on(f)
        }
    }
    let weak = Arc::downgrade(state);
    let handle = tokio::runtime::Handle::current();
    let (infer_state, infer_handle) = (weak.clone(), handle.clone());
    let infer = Arc::new(move |request, deadline| {
        let state = infer_state
            .upgrade()
            .ok_or_else(|| "the server is shutting down".to_owned())?;
        let incoming = crate::service::oip::Incoming::now("BLS", None);
        block(
            &infer_handle,
            crate::service::oip::infer(&state, request, deadline, &incoming),
        )
        .map_err(|e| e.to_string())
    });
    let once = infer.clone();
    let stream = Arc::new(
        move |request: serving_proto::oip::InferRequest,
              deadline: Option<std::time::Instant>|
              -> Result<BlsResponses, String> {
            let state = weak
                .upgrade()
                .ok_or_else(|| "the server is shutting down".to_owned())?;
            // A model that answers once gives its one response, the last.
            if !crate::service::oip::is_decoupled(
                &state,
                &request.model_name,
                &request.model_version,
            ) {
                let mut answer = Some(
                    once(request, deadline)
                        .map(|r| (r, true))
                        .map_err(|e| (e, true)),
                );
                return Ok(Box::new(move |_| answer.take()));
            }
            let mut responses = {
                let _in_runtime = handle.enter();
                crate::service::oip::infer_decoupled(state, request, deadline)
                    .map_err(|e| e.to_string())?
            };
            let handle = handle.clone();
            Ok(Box::new(move |deadline: Option<std::time::Instant>| {
                let next = block(&handle, async {
                    match deadline {
                        Some(d) => tokio::time::timeout_at(d.into(), responses.recv())
                            .await
                            .ok(),
                        None => Some(responses.recv().await),
                    }
                });
                match next {
                    None => Some(Err((
                        "the request's deadline passed before the model's next response".into(),
                        true,
                    ))),
                    Some(None) => None,
                    Some(Some(Ok(s))) => Some(Ok((s.response, s.last))),
                    Some(Some(Err(e))) => Some(Err((e.to_string(), false))),
                }
            }))
        },
    );
    Bls { infer, stream }
}

/// Loads ONNX Runtime and the servables, binds both ports and starts
/// serving. Returns once the server is ready.
pub async fn start(config: Config) -> Result<Running, StartError> {
    if !(1..=512).contains(&config.max_msg_mb_size) {
        return Err(StartError::MaxMsgSize(config.max_msg_mb_size));
    }
    if config.max_incoming_mb < config.max_msg_mb_size {
        return Err(StartError::MaxIncoming {
            incoming: config.max_incoming_mb,
            message: config.max_msg_mb_size,
        });
    }
    check_ranges(&config)?;
    if config.fault_injection {
        quiet_injected_panics();
    }
    let max_msg_bytes = config.max_msg_mb_size as usize * 1024 * 1024;
    let (grpc_tls, rest_tls) = match &config.tls {
        Some(files) => (
            Some(tls::server_config(files, &[b"h2"])?),
            Some(tls::server_config(files, &[b"h2", b"http/1.1"])?),
        ),
        None => (None, None),
    };
    // Every device the repository names, so that one ONNX Runtime build
    // serves them all.
    if let Some(name) = &config.model_name
        && !repository::watch::is_servable_name(name)
    {
        return Err(StartError::ModelName(
            serving_proto::text::quote(name).to_string(),
        ));
    }
    let source = config
        .model_repository
        .clone()
        .map(|dir| repository::Source::new(dir, config.model_name.clone()));
    let mut all_devices = config.devices.clone();
    if let Some(source) = &source {
        for s in source.scan()?.iter().flatten() {
            all_devices.extend(s.devices());
        }
    }
    let family = device::family_of(&all_devices)?;
    let ort_lib = config.ort_lib.clone();
    let runtime = tokio::task::spawn_blocking(move || Runtime::global(ort_lib, family))
        .await
        .map_err(blocking_err)??;
    // What requests hold, from their first byte to their answer, over the
    // whole server: the protocols charge what arrives and what decoding
    // builds, the engine what a run adds.
    let memory = Arc::new(serving_proto::gather::Budget::new(
        u64::from(config.max_incoming_mb) << 20,
    ));
    let backends = Backends::new().with(Arc::new(crate::backends::onnxruntime::OnnxRuntime::new(
        runtime,
    )));
    #[cfg(unix)]
    let python = Arc::new(crate::backends::python::Python::new(config.python.clone())?);
    #[cfg(unix)]
    let backends = backends.with(python.clone());
    #[cfg(unix)]
    let bls_backend = python.clone();
    let backends = Arc::new(backends);
    let options = repository::Options {
        load: LoadOptions {
            default_devices: config.devices.clone(),
            cpu_fallback: config.allow_cpu_fallback,
            queue_limit: config.max_enqueued_requests,
            inline_max: config.inline_max,
            fault_injection: config.fault_injection,
            cache: config
                .response_cache_bytes
                .map(|n| Arc::new(crate::engine::cache::ResponseCache::new(n))),
            memory: memory.clone(),
        },
        default_max_batch_size: config.default_max_batch_size,
        #[cfg(unix)]
        python: Some(python),
    };
    let exit_on_error = config.exit_on_error;
    // Explicit control loads only the models named at start.
    let start_only: Option<std::collections::BTreeSet<String>> = (config.model_control
        == ModelControl::Explicit
        && !config.load_models.iter().any(|m| m == "*"))
    .then(|| config.load_models.iter().cloned().collect());
    let (registry, watcher) = tokio::task::spawn_blocking(
        move || -> Result<(Registry, Option<Watcher>), StartError> {
            let registry = Registry::default();
            match source {
                None => {
                    registry.insert(demo::load(&backends, &options.load)?);
                    Ok((registry, None))
                }
                Some(source) => {
                    let mut watcher = Watcher::new(source, backends, options);
                    if let Some(only) = start_only {
                        watcher.hold_all_but(&only);
                    }
                    watcher.start(&registry, exit_on_error)?;
                    for f in watcher.failures() {
                        tracing::error!(model = %f.model, version = f.version, reason = %f.reason, "model not loaded (--exit-on-error false): reported not ready, retried when it changes");
                    }
                    Ok((registry, Some(watcher)))
                }
            }
        },
    )
    .await
    .map_err(blocking_err)??;
    let mut state = State::new(
        registry,
        max_msg_bytes,
        u64::from(config.max_incoming_mb) << 20,
    );
    state.incoming = memory;
    state.failures = watcher.as_ref().map(Watcher::published);
    if config.allow_shared_memory {
        state.allow_shared_memory();
        state
            .shared_memory
            .set_max_mapped(config.max_shared_memory_mb.saturating_mul(1 << 20));
    }
    state.grpc_response_compression = config.grpc_response_compression;
    state.max_load_files_bytes = config.max_load_files_mb.saturating_mul(1 << 20);
    state.model_control = config.model_control.clone();
    state.strict_readiness = config.strict_readiness;
    if let Some(id) = &config.server_id {
        state.server_name = id.clone();
    }
    state.traces = crate::trace::Traces::new(config.trace.clone());
    state.watcher = watcher.map(std::sync::Mutex::new);
    let state = Arc::new(state);
    #[cfg(unix)]
    bls_backend.set_bls(bls_through(&state));
    let bind = |what, address| async move {
        TcpListener::bind(address)
            .await
            .map_err(|source| StartError::Bind {
                what,
                address,
                source,
            })
    };
    let grpc_listener = match config.serve_grpc {
        true => Some(bind("gRPC", config.grpc_address).await?),
        false => None,
    };
    let rest_listener = match config.serve_rest {
        true => Some(bind("REST", config.rest_address).await?),
        false => None,
    };
    let metrics_listener = match config.metrics_address {
        Some(address) => Some(bind("metrics", address).await?),
        None => None,
    };
    let unix_listener = match &config.grpc_unix {
        Some(path) => Some(bind_unix(path)?),
        None => None,
    };
    let bound = |what, address, listener: Option<&TcpListener>| match listener {
        // Not served: the address says so (port 0 of no interface).
        None => Ok(SocketAddr::from(([0, 0, 0, 0], 0))),
        Some(l) => l.local_addr().map_err(|source| StartError::Bind {
            what,
            address,
            source,
        }),
    };
    let grpc_address = bound("gRPC", config.grpc_address, grpc_listener.as_ref())?;
    let rest_address = bound("REST", config.rest_address, rest_listener.as_ref())?;
    let metrics_address = match (&metrics_listener, config.metrics_address) {
        (Some(l), Some(address)) => Some(bound("metrics", address, Some(l))?),
        _ => None,
    };
    let (stop, stopped) = watch::channel(false);
    let signal = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let token: Option<Arc<str>> = config.auth_token.as_deref().map(Arc::from);
    let (grpc_service, health) = grpc::routes(state.clone(), token.clone());
    // The metrics listener asks for the same token as every other route.
    let metrics_service =
        crate::auth::RestAuth::new(rest::metrics_router(state.clone()), token.clone());
    let rest_service = rest::router(state.clone(), token);
    let grace = config.drain_timeout;
    let limits = serve::Limits {
        first_bytes: config.connection_first_bytes_timeout,
        idle: config.connection_idle_timeout,
        body_stall: config.request_body_timeout,
        connections: Arc::new(tokio::sync::Semaphore::new(
            config
                .max_connections
                .unwrap_or_else(default_max_connections),
        )),
    };
    let mut tasks = vec![];
    if let Some(listener) = unix_listener {
        tasks.push(tokio::spawn(serve::serve(
            listener,
            grpc_service.clone(),
            grpc_tls.clone(),
            signal(stopped.clone()),
            grace,
            limits.clone(),
        )));
    }
    if let Some(listener) = grpc_listener {
        tasks.push(tokio::spawn(serve::serve(
            listener,
            grpc_service,
            grpc_tls,
            signal(stopped.clone()),
            grace,
            limits.clone(),
        )));
    }
    if let Some(listener) = rest_listener {
        tasks.push(tokio::spawn(serve::serve(
            listener,
            rest_service,
            rest_tls.clone(),
            signal(stopped.clone()),
            grace,
            limits.clone(),
        )));
    }
    if let Some(listener) = metrics_listener {
        // Plain HTTP, as Triton's metrics port.
        tasks.push(tokio::spawn(serve::serve(
            listener,
            metrics_service,
            None,
            signal(stopped.clone()),
            grace,
            limits,
        )));
    }
    if let (Some(every), true, true) = (
        config.poll_interval,
        state.watcher.is_some(),
        config.model_control.polls(),
    ) {
        tasks.push(tokio::spawn(poll_repository(
            state.clone(),
            every,
            signal(stopped),
        )));
    }
    set_health(&health, ServingStatus::Serving).await;
    state.set_ready(true);
    tracing::info!(%grpc_address, %rest_address, "serving");
    Ok(Running {
        grpc_address,
        rest_address,
        metrics_address,
        state,
        stop,
        tasks,
        unix_socket: config.grpc_unix.clone(),
        health,
    })
}

/// A replica made to fail on purpose (fault injection) panics; its panic
/// is logged as the replica's failure, so the default hook's message and
/// backtrace, which read as a real crash, are left out for it. Other
/// panics print as before.
fn quiet_injected_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let injected = info
                .payload()
                .downcast_ref::<String>()
                .is_some_and(|m| m.starts_with(crate::engine::faults::INJECTED));
            if !injected {
                previous(info);
            }
        }));
    });
}

/// Refuses settings that would wrap, overflow a clock or close every
/// connection.
fn check_ranges(config: &Config) -> Result<(), StartError> {
    let out = |setting, value: String, range| {
        Err(StartError::OutOfRange {
            setting,
            value,
            range,
        })
    };
    if i32::try_from(config.default_max_batch_size).is_err() {
        return out(
            "--default-max-batch-size",
            config.default_max_batch_size.to_string(),
            "0 to 2147483647 (Triton's max_batch_size is an int32)",
        );
    }
    let timeouts = [
        (
            "--connection-first-bytes-timeout",
            Some(config.connection_first_bytes_timeout),
            "more than 0, at most a year",
        ),
        (
            "--connection-idle-timeout",
            config.connection_idle_timeout,
            "more than 0, at most a year (None: no limit)",
        ),
        (
            "--request-body-timeout",
            config.request_body_timeout,
            "more than 0, at most a year (None: no limit)",
        ),
    ];
    for (flag, timeout, range) in timeouts {
        if let Some(t) = timeout
            && (t.is_zero() || t > MAX_TIMEOUT)
        {
            return out(flag, format!("{t:?}"), range);
        }
    }
    if let Some(n) = config.max_connections
        && !(1..=MAX_CONNECTIONS).contains(&n)
    {
        return out("--max-connections", n.to_string(), "1 to 1048576");
    }
    Ok(())
}

/// Binds a Unix socket, replacing a stale socket file (never another kind
/// of file).
fn bind_unix(path: &std::path::Path) -> Result<tokio::net::UnixListener, StartError> {
    use std::os::unix::fs::FileTypeExt;
    let err = |source| StartError::BindUnix {
        path: path.to_owned(),
        source,
    };
    if let Ok(meta) = std::fs::symlink_metadata(path)
        && meta.file_type().is_socket()
    {
        std::fs::remove_file(path).map_err(err)?;
    }
    tokio::net::UnixListener::bind(path).map_err(err)
}

/// Polls the repository every `every` until `stop`.
async fn poll_repository(
    state: Arc<State>,
    every: std::time::Duration,
    stop: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(stop);
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = &mut stop => return,
        }
        let state = state.clone();
        let polled = tokio::task::spawn_blocking(move || {
            if let Some(w) = &state.watcher {
                let mut w = w.lock().unwrap_or_else(|e| e.into_inner());
                w.poll(&state.registry);
            }
        })
        .await;
        if let Err(e) = polled {
            tracing::error!(error = %e, "repository poll failed");
        }
    }
}

/// The services whose health `grpc.health.v1.Health` reports; "" is the
/// server as a whole.
pub const HEALTH_SERVICES: [&str; 3] = [
    "",
    "mindspore.serving.proto.MSService",
    "inference.GRPCInferenceService",
];

async fn set_health(reporter: &tonic_health::server::HealthReporter, status: ServingStatus) {
    for service in HEALTH_SERVICES {
        reporter.set_service_status(service, status).await;
    }
}

impl Running {
    /// Stops accepting, reports not ready, lets open connections finish,
    /// and returns when both ports are closed.
    pub async fn shutdown(self) {
        self.state.set_ready(false);
        set_health(&self.health, ServingStatus::NotServing).await;
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
        // Every model is unloaded, as Triton unloads them at exit: each
        // replica released (a Python model's finalize runs) before this
        // returns, for up to 30 s.
        let versions = self.state.registry.clear();
        let _ = tokio::task::spawn_blocking(move || {
            for sv in versions {
                if !sv.scheduler().stop(std::time::Duration::from_secs(30)) {
                    tracing::warn!(servable = %sv.name, version = sv.version, "replicas still busy at shutdown; not waiting for them");
                }
            }
        })
        .await;
        if let Some(path) = self.unix_socket {
            let _ = std::fs::remove_file(path);
        }
    }
}
