//! `reference-server`: serves the built-in demo, or a model repository, over
//! the MindSpore Serving protocol and the Open Inference Protocol.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use reference_server::cli;
use reference_server::runtime::device::{self, Device};
use reference_server::runtime::{library, tensor_io};
use reference_server::server::{self, Config};

/// An inference server over ONNX Runtime for the MindSpore Serving protocol
/// and the Open Inference Protocol (KServe v2), on one gRPC and one REST port.
/// mimalloc keeps freed large blocks for reuse: each large tensor then
/// does not cost a fresh mapping, page faults and zeroing (glibc maps and
/// unmaps blocks over 32 MiB every time). See docs/benchmarks.md.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(
    name = "reference-server",
    disable_version_flag = true,
    after_help = "Examples:
  reference-server                                  the built-in demo: gRPC 127.0.0.1:5500, REST 127.0.0.1:1500
  reference-server --model-repository ./models      a repository (servable.toml, Triton config.pbtxt,
                                                    model.onnx or model.py folders, servable_config.py)
  reference-server --model-repository ./models --model-control-mode explicit --load-model resnet
  tritonserver --model-repository=/models           a link named tritonserver: Triton's ports 8000/8001/8002

Logs go to stderr: RUST_LOG (e.g. RUST_LOG=debug), else GLOG_v / MS_SUBMODULE_LOG_v, else the
--log-* flags; changed while running through POST /v2/logging.
Metrics (Prometheus): GET /metrics on the REST port, and on --metrics-port when given.
Docs: docs/server.md."
)]
struct Args {
    /// gRPC address (MSService, GRPCInferenceService, grpc.health.v1.Health)
    /// [default: 127.0.0.1:5500; 0.0.0.0:8001 when started as Triton is]
    #[arg(long, env = "SERVING_GRPC_ADDRESS")]
    grpc_address: Option<SocketAddr>,
    /// REST address (/model/... and /v2/...) [default: 127.0.0.1:1500;
    /// 0.0.0.0:8000 when started as Triton is]
    #[arg(long, env = "SERVING_REST_ADDRESS")]
    rest_address: Option<SocketAddr>,
    /// Triton's: REST on this port (every interface unless --rest-address
    /// gives one). Any of Triton's listener flags (--http-port,
    /// --grpc-port, --metrics-port, --allow-*) or --model-store, or the
    /// program's name `tritonserver`, start the server as Triton is: ports
    /// 8000, 8001 and 8002 on every interface, model control `none`.
    #[arg(long, value_name = "PORT")]
    http_port: Option<u16>,
    /// Triton's: gRPC on this port.
    #[arg(long, value_name = "PORT")]
    grpc_port: Option<u16>,
    /// Triton's: also serve GET /metrics alone on this port (the REST port
    /// serves it too).
    #[arg(long, value_name = "PORT")]
    metrics_port: Option<u16>,
    /// Triton's: serve REST (false: no REST listener).
    #[arg(long, value_name = "BOOL", action = clap::ArgAction::Set)]
    allow_http: Option<bool>,
    /// Triton's: serve gRPC (false: no gRPC listener).
    #[arg(long, value_name = "BOOL", action = clap::ArgAction::Set)]
    allow_grpc: Option<bool>,
    /// Triton's: the metrics listener (on by default when started as
    /// Triton is).
    #[arg(long, value_name = "BOOL", action = clap::ArgAction::Set)]
    allow_metrics: Option<bool>,
    /// How models are loaded and unloaded, as Triton's: none (all at start,
    /// then nothing), poll (all at start, then the repository polled),
    /// explicit (the --load-model ones at start, then the repository API's
    /// loads and unloads). Without it: all at start, polled, and the API's
    /// loads and unloads taken too (none when started as Triton is).
    #[arg(long, value_enum, ignore_case = true, value_name = "MODE")]
    model_control_mode: Option<ControlMode>,
    /// A model to load at start under --model-control-mode explicit
    /// (repeat; `*` loads all).
    #[arg(long = "load-model", value_name = "NAME")]
    load_models: Vec<String>,
    /// Answer ready (/v2/health/ready, ServerReady) only while every model
    /// the server was to load serves.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    strict_readiness: bool,
    /// Triton's: the name server metadata reports (default
    /// serving-reference-server; `triton` when started as Triton is,
    /// with Triton's listener flags or as `tritonserver`).
    #[arg(long, value_name = "NAME")]
    id: Option<String>,
    /// Triton's trace settings, repeatable: level=TIMESTAMPS, rate=N,
    /// count=N, mode=opentelemetry, opentelemetry,url=HOST:4318/v1/traces
    /// (spans exported with OTLP over HTTP); changed while running through
    /// /v2/trace/setting.
    #[arg(long = "trace-config", value_name = "SETTING")]
    trace_config: Vec<String>,
    /// Triton's: log verbosity; above 0 logs debug events (when RUST_LOG
    /// is unset).
    #[arg(long, default_value_t = 0, value_name = "N")]
    log_verbose: u32,
    /// Triton's: log info events (when RUST_LOG is unset).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    log_info: bool,
    /// Triton's: log warnings (when RUST_LOG is unset).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    log_warning: bool,
    /// Triton's: log errors (when RUST_LOG is unset).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    log_error: bool,
    /// Triton's: the log line format (both give RFC 3339 timestamps here).
    #[arg(long, value_name = "FORMAT", value_parser = ["default", "ISO8601"])]
    log_format: Option<String>,
    /// Also serve gRPC on this Unix domain socket (clients: `unix:PATH`).
    #[arg(long, value_name = "PATH")]
    grpc_unix: Option<PathBuf>,
    /// Model repository: <DIR>/<model>/ with servable.toml, or Triton's
    /// config.pbtxt, or version directories holding model.onnx alone.
    /// Without it, the built-in demo servable `add` is served.
    #[arg(
        long,
        alias = "model-store",
        value_name = "DIR",
        env = "SERVING_MODEL_REPOSITORY"
    )]
    model_repository: Option<PathBuf>,
    /// Serve --model-repository as this one model: DIR/NAME when that is a
    /// directory, else DIR itself (servable.toml, config.pbtxt, version
    /// directories, or model.onnx directly, served as version 1), as KServe
    /// puts a model at /mnt/models.
    #[arg(
        long,
        value_name = "NAME",
        requires = "model_repository",
        env = "SERVING_MODEL_NAME"
    )]
    model_name: Option<String>,
    /// Refuse to start when a model of the repository cannot be loaded
    /// (`--exit-on-error false`: start, report that model not ready, and
    /// retry it when its files change).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    exit_on_error: bool,
    /// `max_batch_size` given to a Triton model without config.pbtxt (or
    /// without tensors in it) when all its inputs and outputs have a
    /// dynamic first dimension; 0 turns that batching off; at most
    /// 2147483647 (Triton's max_batch_size is an int32).
    #[arg(long, default_value_t = reference_server::repository::DEFAULT_MAX_BATCH_SIZE, value_name = "N", value_parser = clap::value_parser!(u32).range(0..=i64::from(i32::MAX)))]
    default_max_batch_size: u32,
    /// The response cache, as Triton's flag gives it: `local,size=BYTES`
    /// (only the local cache), for the models whose configuration says
    /// `response_cache { enable: true }`.
    #[arg(long, value_name = "local,size=BYTES", value_parser = parse_cache_config)]
    cache_config: Option<usize>,
    /// A device for the demo and for servables that name none; repeat for one
    /// replica each: cpu, cuda:N, cann:N.
    #[arg(long = "device", value_name = "DEVICE", default_value = "cpu")]
    devices: Vec<Device>,
    /// Run a replica on the CPU, with a warning, when its device cannot be used.
    #[arg(long)]
    allow_cpu_fallback: bool,
    /// The ONNX Runtime library (libonnxruntime.so); else ORT_DYLIB_PATH, one
    /// next to the executable, an installed onnxruntime Python package, or the
    /// pinned wheel provisioned into SERVING_CACHE_DIR.
    #[arg(long, value_name = "PATH")]
    ort_lib: Option<PathBuf>,
    /// The Python interpreter of Python models (Triton's Python backend),
    /// which needs numpy; a model's EXECUTION_ENV_PATH names its own.
    #[arg(long, value_name = "PATH", default_value = "python3")]
    python: PathBuf,
    /// Largest gRPC message and REST body, in MiB (1 to 512).
    #[arg(long, default_value_t = server::DEFAULT_MAX_MSG_MB)]
    max_msg_mb_size: u32,
    /// The most memory, over all connections, held by requests: gRPC
    /// messages and REST bodies while they arrive, and gRPC messages with
    /// what decoding them builds until they are answered, MiB; at least
    /// --max-msg-mb-size. Beyond it, data that needs more is refused with
    /// UNAVAILABLE / 503 (RESOURCE_EXHAUSTED when it could never fit).
    #[arg(long, default_value_t = server::DEFAULT_MAX_INCOMING_MB, value_name = "MIB")]
    max_incoming_mb: u32,
    /// The most requests queued or running per servable version; beyond it
    /// requests are refused at once (MindSpore's set_max_enqueued_requests).
    #[arg(long, default_value_t = reference_server::engine::DEFAULT_QUEUE_LIMIT)]
    max_enqueued_requests: usize,
    /// A lone request to an idle CPU model whose last run took under this
    /// many microseconds runs on the connection's own thread, not handed to
    /// the replica thread (one client's latency); 0 hands every run over.
    #[arg(long, default_value_t = reference_server::engine::DEFAULT_INLINE_MAX.as_micros() as u64, value_name = "MICROSECONDS")]
    inline_max_us: u64,
    /// Seconds between polls of the model repository for new and removed
    /// version directories (hot reload); 0 turns it off.
    #[arg(long, alias = "repository-poll-secs", default_value = "5", value_name = "SECONDS", value_parser = seconds)]
    repository_poll_interval: Duration,
    /// PEM certificate chain: serve TLS on both ports (with --tls-key).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// PEM CA bundle: require client certificates signed by it (mutual TLS).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_client_ca: Option<PathBuf>,
    /// Require `authorization: Bearer <TOKEN>` on every request except health checks.
    #[arg(
        long,
        env = "SERVING_AUTH_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    auth_token: Option<String>,
    /// Seconds a shutdown (SIGTERM, Ctrl-C) waits for open requests.
    #[arg(long, alias = "exit-timeout-secs", default_value = "30", value_name = "SECONDS", value_parser = seconds)]
    drain_timeout: Duration,
    /// Seconds a new connection may take to send its first request's
    /// headers or the HTTP/2 preface (a TLS handshake included) before it
    /// is closed.
    #[arg(long, default_value = "10", value_name = "SECONDS", value_parser = positive_seconds)]
    connection_first_bytes_timeout: Duration,
    /// Seconds a connection with no request in flight stays open (HTTP/2
    /// clients get a GOAWAY); 0: as long as the client keeps it.
    #[arg(long, default_value = "300", value_name = "SECONDS", value_parser = seconds)]
    connection_idle_timeout: Duration,
    /// Seconds a request's body may send nothing while the server reads
    /// it before the request fails (REST 408, gRPC DEADLINE_EXCEEDED); a
    /// stream between two messages may be silent as long as it likes; 0:
    /// no limit.
    #[arg(long, default_value = "60", value_name = "SECONDS", value_parser = seconds)]
    request_body_timeout: Duration,
    /// The most connections open at once over all ports; at the cap the
    /// server stops accepting until one closes. Default: 10000, or the
    /// descriptor limit (ulimit -n) less a reserve when that is lower.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=server::MAX_CONNECTIONS as u64))]
    max_connections: Option<u64>,
    /// Let clients register system shared memory (/dev/shm) and place
    /// inputs and outputs in it (Triton's system_shared_memory extension).
    /// Only for local clients you trust.
    #[arg(long)]
    allow_shared_memory: bool,
    /// The most shared memory mapped for registered regions at once, MiB
    /// (address space: a region maps its bytes only). A registration
    /// beyond it is refused with UNAVAILABLE / 503.
    #[arg(long, default_value_t = server::DEFAULT_MAX_SHARED_MEMORY_MB, value_name = "MIB", value_parser = clap::value_parser!(u64).range(1..))]
    max_shared_memory_mb: u64,
    /// The most disk the files given with repository loads (Triton's
    /// `file:` parameters) hold together, MiB; a load beyond it is refused
    /// with RESOURCE_EXHAUSTED / 413.
    #[arg(long, default_value_t = server::DEFAULT_MAX_LOAD_FILES_MB, value_name = "MIB")]
    max_load_files_mb: u64,
    /// Compress gRPC replies with this encoding for clients that accept it.
    #[arg(long, value_name = "ENCODING", default_value = "none", value_parser = ["none", "gzip", "deflate"])]
    grpc_response_compression: String,
    /// Let tests make replicas fail on purpose. Never use in production.
    #[arg(long, hide = true)]
    enable_fault_injection: bool,
    /// Print the version and the ONNX Runtime this server would use, then exit.
    #[arg(long, short = 'V')]
    version: bool,
}

/// Triton's model control modes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum ControlMode {
    None,
    Poll,
    Explicit,
}

/// A number of seconds, 0 to a year (`inf`, `NaN`, negative and larger
/// values are refused: they panicked, or overflowed the clocks).
fn seconds(text: &str) -> Result<Duration, String> {
    let range = || {
        format!(
            "give a number of seconds from 0 to {}",
            server::MAX_TIMEOUT.as_secs()
        )
    };
    let value: f64 = text.trim().parse().map_err(|_| range())?;
    if !value.is_finite() || value < 0.0 {
        return Err(range());
    }
    Duration::try_from_secs_f64(value)
        .ok()
        .filter(|d| *d <= server::MAX_TIMEOUT)
        .ok_or_else(range)
}

/// [`seconds`], more than 0.
fn positive_seconds(text: &str) -> Result<Duration, String> {
    match seconds(text)? {
        d if d.is_zero() => Err(format!(
            "give a number of seconds more than 0, at most {}",
            server::MAX_TIMEOUT.as_secs()
        )),
        d => Ok(d),
    }
}

fn print_version(args: &Args) {
    let mut out = std::io::stdout().lock();
    // A closed pipe (`--version | head -1`) ends the output, not the process
    // with a panic.
    let _ = writeln!(out, "reference-server {}", env!("CARGO_PKG_VERSION"));
    let family = device::family_of(&args.devices).map_or(library::Family::Cpu, |f| f);
    let resolver = library::Resolver::from_env(args.ort_lib.clone(), family);
    match resolver.locate() {
        Ok(Some(found)) => {
            let version =
                tensor_io::library_version(&found.path).unwrap_or_else(|| "unknown".into());
            let _ = writeln!(
                out,
                "ONNX Runtime {version} at {} ({})",
                found.path.display(),
                found.origin
            );
        }
        _ => {
            let _ = writeln!(out, "ONNX Runtime: {}", resolver.describe());
        }
    }
}

async fn terminate() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return std::future::pending().await,
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let raw: Vec<String> = std::env::args().collect();
    let triton = cli::triton_style(&raw);
    let args = Args::parse();
    if args.version {
        print_version(&args);
        return ExitCode::SUCCESS;
    }
    // RUST_LOG, else MindSpore Serving's GLOG_v / MS_SUBMODULE_LOG_v, else
    // Triton's --log-* flags (info by default).
    let env = |name| std::env::var(name).ok();
    let default_filter = cli::mindspore_log_filter(
        env("GLOG_v").as_deref(),
        env("MS_SUBMODULE_LOG_v").as_deref(),
    )
    .unwrap_or_else(|| {
        cli::triton_log_filter(
            args.log_verbose,
            args.log_info,
            args.log_warning,
            args.log_error,
        )
    });
    // The filter sits behind a reload layer: the logging extension
    // (`/v2/logging`, `LogSettings`) changes it while the server runs.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    let (filter, reload) = tracing_subscriber::reload::Layer::new(filter);
    {
        use tracing_subscriber::layer::SubscriberExt as _;
        use tracing_subscriber::util::SubscriberInitExt as _;
        tracing_subscriber::registry()
            .with(filter)
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())),
            )
            .init();
    }
    reference_server::logging::install(
        reference_server::logging::LogSettings {
            info: args.log_info,
            warning: args.log_warning,
            error: args.log_error,
            verbose: args.log_verbose,
            format: args.log_format.clone().unwrap_or_else(|| "default".into()),
        },
        Box::new(move |level| {
            reload
                .reload(tracing_subscriber::EnvFilter::new(level))
                .map_err(|e| format!("the log filter cannot be changed: {e}"))
        }),
    );
    let trace = match reference_server::trace::parse_config(&args.trace_config) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("reference-server: {e}");
            return ExitCode::from(2);
        }
    };
    let (http_port, grpc_port, metrics_port) = cli::TRITON_PORTS;
    let own = Config::default();
    let metrics_address = match (args.allow_metrics, args.metrics_port) {
        (Some(false), _) => None,
        (_, Some(port)) => Some(SocketAddr::from(([0, 0, 0, 0], port))),
        (Some(true), None) => Some(SocketAddr::from(([0, 0, 0, 0], metrics_port))),
        (None, None) if triton => Some(SocketAddr::from(([0, 0, 0, 0], metrics_port))),
        (None, None) => None,
    };
    let model_control = match args.model_control_mode {
        Some(ControlMode::None) => server::ModelControl::None,
        Some(ControlMode::Poll) => server::ModelControl::Poll,
        Some(ControlMode::Explicit) => server::ModelControl::Explicit,
        None if triton => server::ModelControl::None,
        None => server::ModelControl::Open,
    };
    let config = Config {
        grpc_address: cli::listen(
            args.grpc_address,
            args.grpc_port,
            triton,
            grpc_port,
            own.grpc_address,
        ),
        rest_address: cli::listen(
            args.rest_address,
            args.http_port,
            triton,
            http_port,
            own.rest_address,
        ),
        serve_grpc: args.allow_grpc.unwrap_or(true),
        serve_rest: args.allow_http.unwrap_or(true),
        metrics_address,
        model_control,
        load_models: args.load_models,
        strict_readiness: args.strict_readiness,
        server_id: args.id.or_else(|| triton.then(|| "triton".to_owned())),
        trace,
        grpc_unix: args.grpc_unix,
        model_repository: args.model_repository,
        model_name: args.model_name,
        exit_on_error: args.exit_on_error,
        default_max_batch_size: args.default_max_batch_size,
        devices: args.devices,
        allow_cpu_fallback: args.allow_cpu_fallback,
        ort_lib: args.ort_lib,
        python: args.python,
        response_cache_bytes: args.cache_config,
        max_msg_mb_size: args.max_msg_mb_size,
        max_incoming_mb: args.max_incoming_mb,
        max_enqueued_requests: args.max_enqueued_requests,
        inline_max: std::time::Duration::from_micros(args.inline_max_us),
        fault_injection: args.enable_fault_injection,
        poll_interval: Some(args.repository_poll_interval).filter(|d| !d.is_zero()),
        tls: match (args.tls_cert, args.tls_key) {
            (Some(certificate), Some(private_key)) => Some(reference_server::tls::TlsFiles {
                certificate,
                private_key,
                client_ca: args.tls_client_ca,
            }),
            _ => None,
        },
        auth_token: args.auth_token,
        drain_timeout: args.drain_timeout,
        connection_first_bytes_timeout: args.connection_first_bytes_timeout,
        connection_idle_timeout: Some(args.connection_idle_timeout).filter(|d| !d.is_zero()),
        request_body_timeout: Some(args.request_body_timeout).filter(|d| !d.is_zero()),
        max_connections: args.max_connections.map(|n| n as usize),
        allow_shared_memory: args.allow_shared_memory,
        max_shared_memory_mb: args.max_shared_memory_mb,
        max_load_files_mb: args.max_load_files_mb,
        grpc_response_compression: serving_proto::compression::Encoding::from_name(
            &args.grpc_response_compression,
        ),
    };
    let running = match server::start(config).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("reference-server: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Readiness lines: MindSpore Serving's banners, which harnesses grep for,
    // then one line with both addresses. A reader that went away (a closed
    // pipe) does not stop the server.
    let mut out = std::io::stdout().lock();
    let (grpc_on, rest_on) = (
        running.grpc_address.port() != 0,
        running.rest_address.port() != 0,
    );
    if grpc_on {
        let _ = writeln!(
            out,
            "Serving: Serving gRPC server start success, listening on {}",
            running.grpc_address
        );
    }
    if rest_on {
        let _ = writeln!(
            out,
            "Serving: Serving RESTful server start success, listening on {}",
            running.rest_address
        );
    }
    // Triton's lines, which its users' scripts wait for.
    if grpc_on {
        let _ = writeln!(
            out,
            "Started GRPCInferenceService at {}",
            running.grpc_address
        );
    }
    if rest_on {
        let _ = writeln!(out, "Started HTTPService at {}", running.rest_address);
    }
    if let Some(metrics) = running.metrics_address {
        let _ = writeln!(out, "Started Metrics Service at {metrics}");
    }
    if let Some(path) = &running.unix_socket {
        let _ = writeln!(
            out,
            "Serving: gRPC also listening on unix:{}",
            path.display()
        );
    }
    let _ = writeln!(
        out,
        "reference-server ready: gRPC {} REST {}",
        running.grpc_address, running.rest_address
    );
    let _ = out.flush();
    drop(out);
    terminate().await;
    tracing::info!("stopping: finishing open requests");
    running.shutdown().await;
    ExitCode::SUCCESS
}

/// `--cache-config local,size=BYTES`: the local cache's size (Triton also
/// takes `local,size=BYTES` as two settings of one cache).
fn parse_cache_config(text: &str) -> Result<usize, String> {
    let (cache, settings) = text.split_once(',').unwrap_or((text, ""));
    if cache != "local" {
        return Err(format!(
            "cache '{cache}' is not served: only the local cache (local,size=BYTES)"
        ));
    }
    let mut size = None;
    for setting in settings.split(',').filter(|s| !s.is_empty()) {
        match setting.split_once('=') {
            Some(("size", n)) => {
                size = Some(
                    n.parse::<usize>()
                        .map_err(|e| format!("size '{n}': {e}; give the cache's size in bytes"))?,
                );
            }
            _ => {
                return Err(format!(
                    "setting '{setting}' of the local cache is not known: it takes size=BYTES"
                ));
            }
        }
    }
    size.ok_or_else(|| "the local cache needs size=BYTES".into())
}

#[cfg(test)]
mod tests {
    use super::parse_cache_config;

    #[test]
    fn the_cache_flag_takes_triton_s_local_cache_and_its_size() {
        assert_eq!(parse_cache_config("local,size=1048576"), Ok(1_048_576));
        assert!(
            parse_cache_config("redis,host=x")
                .unwrap_err()
                .contains("only the local cache")
        );
        assert!(
            parse_cache_config("local")
                .unwrap_err()
                .contains("size=BYTES")
        );
        assert!(
            parse_cache_config("local,size=lots")
                .unwrap_err()
                .contains("size 'lots'")
        );
        assert!(
            parse_cache_config("local,ttl=3")
                .unwrap_err()
                .contains("setting 'ttl=3'")
        );
    }
}
