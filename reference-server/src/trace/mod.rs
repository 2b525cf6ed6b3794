//! Triton's trace extension: which inference requests are traced (the
//! settings `trace_level`, `trace_rate`, `trace_count`, for the server and
//! per model) and their spans, exported to an OpenTelemetry collector with
//! OTLP over HTTP (`--trace-config opentelemetry,url=...`).
//!
//! A traced request gives one span for the request (from its arrival to its
//! answer), its parent the client's when the request carries a W3C
//! `traceparent`, and child spans for its phases: `receive` (reading and
//! checking it), `queue`, `compute_input`, `compute_infer`,
//! `compute_output` (its batch's, as Triton's statistics count them) and
//! `send` (writing the answer). Spans are handed to a bounded queue and
//! exported in batches by a task of their own; a full queue drops spans,
//! never a request. With tracing off (the default) a request costs one
//! atomic load.
//!
//! In Triton's trace mode (`--trace-config triton,file=PATH`, the default
//! mode) the same times are written as Triton's JSON trace files instead
//! (`triton_file.rs`).

mod triton_file;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use opentelemetry::trace::{
    Span as _, SpanContext, SpanKind, TraceContextExt as _, TraceFlags, TraceState, Tracer as _,
    TracerProvider as _,
};
use opentelemetry::{Context, KeyValue, SpanId, TraceId};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider, SpanData, SpanExporter};

use crate::engine::Timing;

/// What is traced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Level {
    /// Nothing.
    Off,
    /// Each traced request's phases, with their times.
    Timestamps,
}

/// Where traces go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Mode {
    /// Triton's own JSON trace files (the setting `trace_file`).
    Triton,
    /// An OpenTelemetry collector, over OTLP.
    OpenTelemetry,
}

/// The trace settings of the server or of one model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceSettings {
    /// What is traced.
    pub level: Level,
    /// One request in `rate` is traced.
    pub rate: u64,
    /// How many more requests are traced (-1: no limit).
    pub count: i64,
    /// Traces per trace file in Triton's mode: `file.0`, `file.1`, ...
    /// (0: every trace in `file`).
    pub log_frequency: u64,
    /// Triton's trace file (`--trace-config triton,file=PATH`; empty:
    /// Triton's mode writes nothing). Only the command line sets it.
    pub file: String,
    /// Where traces go.
    pub mode: Mode,
}

impl Default for TraceSettings {
    fn default() -> TraceSettings {
        TraceSettings {
            level: Level::Off,
            rate: 1000,
            count: -1,
            log_frequency: 0,
            file: String::new(),
            mode: Mode::Triton,
        }
    }
}

/// How the server was started to trace (`--trace-config`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TraceConfig {
    /// The starting settings.
    pub settings: TraceSettings,
    /// The collector's OTLP/HTTP endpoint (`http://host:4318/v1/traces`).
    pub url: Option<String>,
}

/// Parses Triton's `--trace-config` values: `level=TIMESTAMPS`, `rate=N`,
/// `count=N`, `log_frequency=N`, `file=PATH`, `mode=opentelemetry|triton`,
/// and `opentelemetry,url=URL` (or `triton,file=PATH`).
pub fn parse_config(values: &[String]) -> Result<TraceConfig, String> {
    let mut config = TraceConfig::default();
    for value in values {
        let (section, setting) = match value.split_once(',') {
            Some((section, rest)) if !section.contains('=') => (Some(section), rest),
            _ => (None, value.as_str()),
        };
        let (key, v) = setting
            .split_once('=')
            .ok_or_else(|| format!("--trace-config '{value}': give SETTING=VALUE"))?;
        let number = |what: &str| {
            v.parse::<i64>()
                .map_err(|_| format!("--trace-config {what}={v}: not a number"))
        };
        match (section, key) {
            (Some("opentelemetry"), "url") | (None, "url") => {
                let url = if v.starts_with("http://") || v.starts_with("https://") {
                    v.to_owned()
                } else {
                    format!("http://{v}")
                };
                config.url = Some(url);
            }
            (Some("opentelemetry"), other) => {
                return Err(format!(
                    "--trace-config opentelemetry,{other}: only url is taken (OTLP over HTTP)"
                ));
            }
            (Some("triton") | None, "file") => config.settings.file = v.to_owned(),
            (Some("triton"), "log-frequency" | "log_frequency") => {
                config.settings.log_frequency = number("log-frequency")?.max(0) as u64
            }
            (None, "level") => config.settings.level = parse_level(&[v])?,
            (None, "rate") => config.settings.rate = number("rate")?.max(1) as u64,
            (None, "count") => config.settings.count = number("count")?,
            (None, "log_frequency") => {
                config.settings.log_frequency = number("log_frequency")?.max(0) as u64
            }
            (None, "mode") => config.settings.mode = parse_mode(v)?,
            _ => return Err(format!("--trace-config '{value}' is not a trace setting")),
        }
    }
    if config.settings.mode == Mode::OpenTelemetry && config.url.is_none() {
        return Err(
            "--trace-config mode=opentelemetry needs the collector: --trace-config opentelemetry,url=HOST:4318/v1/traces"
                .into(),
        );
    }
    Ok(config)
}

/// Triton's trace levels: `OFF`, `TIMESTAMPS` (`TENSORS` is refused: no
/// tensor is written to a trace).
pub fn parse_level(values: &[&str]) -> Result<Level, String> {
    let mut level = Level::Off;
    for v in values {
        match v.to_ascii_uppercase().as_str() {
            "OFF" => {}
            "TIMESTAMPS" => level = Level::Timestamps,
            "TENSORS" => {
                return Err(
                    "trace level TENSORS is not supported: spans carry times, not tensors".into(),
                );
            }
            other => {
                return Err(format!(
                    "trace level '{}' is not OFF or TIMESTAMPS",
                    serving_proto::text::quote(other)
                ));
            }
        }
    }
    Ok(level)
}

/// Triton's trace modes.
pub fn parse_mode(v: &str) -> Result<Mode, String> {
    match v {
        "triton" => Ok(Mode::Triton),
        "opentelemetry" => Ok(Mode::OpenTelemetry),
        other => Err(format!(
            "trace mode '{}' is not triton or opentelemetry",
            serving_proto::text::quote(other)
        )),
    }
}

/// The server's tracing: its settings and its exporter.
#[derive(Debug)]
pub struct Traces {
    /// Whether any setting traces at all (the hot path reads only this).
    on: AtomicBool,
    global: Mutex<TraceSettings>,
    models: Mutex<HashMap<String, TraceSettings>>,
    seen: AtomicU64,
    left: AtomicI64,
    /// The next trace's id in Triton's trace files.
    next_id: AtomicU64,
    tracer: Option<SdkTracer>,
    provider: Option<SdkTracerProvider>,
    /// The trace-file writer, started with the first file trace.
    files: OnceLock<Option<triton_file::Writer>>,
}

/// Where a traced request's times go.
#[derive(Debug)]
pub enum Sink<'a> {
    /// Spans, to the OpenTelemetry collector.
    OpenTelemetry(&'a SdkTracer),
    /// Triton's JSON trace file.
    File {
        /// The traces.
        traces: &'a Traces,
        /// `trace_file`.
        path: String,
        /// `log_frequency`.
        log_frequency: u64,
    },
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Default for Traces {
    fn default() -> Traces {
        Traces::new(TraceConfig::default())
    }
}

impl Traces {
    /// Tracing as configured; the exporter (when there is a collector)
    /// needs a Tokio runtime.
    pub fn new(config: TraceConfig) -> Traces {
        let provider = config.url.as_ref().and_then(|url| exporter(url));
        let tracer = provider.as_ref().map(|p| p.tracer("reference-server"));
        let traces = Traces {
            on: AtomicBool::new(false),
            left: AtomicI64::new(config.settings.count),
            global: Mutex::new(config.settings),
            models: Mutex::new(HashMap::new()),
            seen: AtomicU64::new(0),
            next_id: AtomicU64::new(1),
            tracer,
            provider,
            files: OnceLock::new(),
        };
        traces.refresh();
        traces
    }

    fn refresh(&self) {
        let on =
            self.traces(&lock(&self.global)) || lock(&self.models).values().any(|s| self.traces(s));
        self.on.store(on, Ordering::Release);
    }

    /// Whether `settings` trace anything: a level, and somewhere to put it.
    fn traces(&self, settings: &TraceSettings) -> bool {
        settings.level != Level::Off
            && match settings.mode {
                Mode::OpenTelemetry => self.tracer.is_some(),
                Mode::Triton => !settings.file.is_empty(),
            }
    }

    /// The settings of `model` (`""`: the server's).
    pub fn settings(&self, model: &str) -> TraceSettings {
        if !model.is_empty()
            && let Some(s) = lock(&self.models).get(model)
        {
            return s.clone();
        }
        let mut s = lock(&self.global).clone();
        if model.is_empty() {
            s.count = self.left.load(Ordering::Relaxed);
        }
        s
    }

    /// Changes the settings of `model` (`""`: the server's) with `change`;
    /// returns them.
    pub fn update(
        &self,
        model: &str,
        change: impl FnOnce(&mut TraceSettings) -> Result<(), String>,
    ) -> Result<TraceSettings, String> {
        let mut next = self.settings(model);
        change(&mut next)?;
        if next.mode == Mode::OpenTelemetry && self.tracer.is_none() {
            return Err("trace mode opentelemetry needs a collector: start the server with --trace-config opentelemetry,url=HOST:4318/v1/traces".into());
        }
        if model.is_empty() {
            self.left.store(next.count, Ordering::Relaxed);
            *lock(&self.global) = next.clone();
        } else {
            lock(&self.models).insert(model.to_owned(), next.clone());
        }
        self.refresh();
        Ok(next)
    }

    /// Whether to trace a request to `model` now; where its times go when
    /// so.
    pub fn sample(&self, model: &str) -> Option<Sink<'_>> {
        if !self.on.load(Ordering::Acquire) {
            return None;
        }
        let settings = self.settings(model);
        if !self.traces(&settings) {
            return None;
        }
        let n = self.seen.fetch_add(1, Ordering::Relaxed);
        if !n.is_multiple_of(settings.rate.max(1)) {
            return None;
        }
        // The count left: -1 never runs out.
        let taken =
            self.left
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| match left {
                    0 => None,
                    n if n < 0 => Some(n),
                    n => Some(n - 1),
                });
        taken.ok()?;
        match settings.mode {
            Mode::OpenTelemetry => self.tracer.as_ref().map(Sink::OpenTelemetry),
            Mode::Triton => Some(Sink::File {
                traces: self,
                path: settings.file,
                log_frequency: settings.log_frequency,
            }),
        }
    }

    /// Sends what is queued now (at shutdown), and writes what waits for
    /// the trace files.
    pub fn flush(&self) {
        if let Some(p) = &self.provider {
            let _ = p.force_flush();
        }
        if let Some(Some(w)) = self.files.get() {
            w.flush();
        }
    }

    /// The trace-file writer; none when its thread cannot start.
    fn file_writer(&self) -> Option<&triton_file::Writer> {
        self.files
            .get_or_init(|| match triton_file::Writer::start() {
                Ok(w) => Some(w),
                Err(e) => {
                    tracing::error!(error = %e, "the trace-file writer cannot start; requests are not traced to files");
                    None
                }
            })
            .as_ref()
    }
}

/// The OTLP exporter behind a bounded queue and a task of its own.
fn exporter(url: &str) -> Option<SdkTracerProvider> {
    use opentelemetry_otlp::WithExportConfig as _;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(url)
        .build();
    let exporter = match exporter {
        Ok(e) => e,
        Err(e) => {
            tracing::error!(%url, error = %e, "the OTLP exporter cannot be built; requests are not traced");
            return None;
        }
    };
    let handle = tokio::runtime::Handle::try_current().ok()?;
    let (tx, rx) = tokio::sync::mpsc::channel::<SpanData>(QUEUED_SPANS);
    handle.spawn(export_loop(exporter, rx));
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name("reference-server")
        .build();
    Some(
        SdkTracerProvider::builder()
            .with_span_processor(Queue { tx })
            .with_resource(resource)
            .build(),
    )
}

/// Spans waiting for export at most; more are dropped.
const QUEUED_SPANS: usize = 4096;
/// Spans sent in one export at most.
const BATCH: usize = 512;

async fn export_loop(
    exporter: opentelemetry_otlp::SpanExporter,
    mut rx: tokio::sync::mpsc::Receiver<SpanData>,
) {
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        let n = rx.recv_many(&mut batch, BATCH).await;
        if n == 0 {
            return;
        }
        // Spans of one request end together: a moment lets them join.
        tokio::time::sleep(Duration::from_millis(20)).await;
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(span) => batch.push(span),
                Err(_) => break,
            }
        }
        if let Err(e) = exporter.export(std::mem::take(&mut batch)).await {
            tracing::warn!(error = %e, "spans not exported");
        }
    }
}

/// The span processor: each ended span into the bounded queue.
#[derive(Debug)]
struct Queue {
    tx: tokio::sync::mpsc::Sender<SpanData>,
}

impl opentelemetry_sdk::trace::SpanProcessor for Queue {
    fn on_start(&self, _: &mut opentelemetry_sdk::trace::Span, _: &Context) {}

    fn on_end(&self, span: SpanData) {
        if self.tx.try_send(span).is_err() {
            tracing::debug!("trace queue full; a span is dropped");
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _: Duration) -> OTelSdkResult {
        Ok(())
    }
}

/// The parent context a W3C `traceparent` header names
/// (`00-<trace id>-<span id>-<flags>`); none when it is absent or
/// malformed.
pub fn parent(traceparent: Option<&str>) -> Context {
    let Some(header) = traceparent else {
        return Context::new();
    };
    let parts: Vec<&str> = header.trim().split('-').collect();
    let [version, trace, span, flags] = parts.as_slice() else {
        return Context::new();
    };
    let (Ok(trace), Ok(span), Ok(flags)) = (
        TraceId::from_hex(trace),
        SpanId::from_hex(span),
        u8::from_str_radix(flags, 16),
    ) else {
        return Context::new();
    };
    if version.len() != 2 || trace == TraceId::INVALID || span == SpanId::INVALID {
        return Context::new();
    }
    let cx = SpanContext::new(
        trace,
        span,
        TraceFlags::new(flags),
        true,
        TraceState::default(),
    );
    Context::new().with_remote_span_context(cx)
}

/// What a traced request's spans are made of.
#[derive(Debug)]
pub struct Traced<'a> {
    /// Where its times go.
    pub sink: Sink<'a>,
    /// Its parent (the client's span, or none).
    pub parent: Context,
    /// The span's name: the protocol's call (`ModelInfer`, `POST
    /// /v2/models/{m}/infer`).
    pub name: &'static str,
    /// The model.
    pub model: String,
    /// The model's version that answered (-1: not known).
    pub version: i64,
    /// Whether it came over gRPC (Triton's trace files name the phases by
    /// the protocol).
    pub grpc: bool,
    /// When the request arrived.
    pub received: Instant,
    /// When it was read and checked (its job submitted).
    pub submitted: Instant,
    /// When its outputs were ready.
    pub answered: Instant,
}

impl Traced<'_> {
    /// Records the request's spans: the request, then its phases.
    pub fn record(self, timing: Option<Timing>, ok: bool) {
        let tracer = match &self.sink {
            Sink::OpenTelemetry(tracer) => *tracer,
            Sink::File {
                traces,
                path,
                log_frequency,
            } => {
                self.write_file(traces, path, *log_frequency, timing);
                return;
            }
        };
        let end = Instant::now();
        // Instants to wall-clock times, from one pair read now.
        let (now_wall, now) = (SystemTime::now(), end);
        let wall = |t: Instant| now_wall - now.saturating_duration_since(t);
        let root = tracer
            .span_builder(self.name)
            .with_kind(SpanKind::Server)
            .with_start_time(wall(self.received))
            .with_attributes([
                // The name as the client sent it, bounded as error texts are.
                KeyValue::new(
                    "model_name",
                    serving_proto::text::quote(&self.model).to_string(),
                ),
                KeyValue::new("ok", ok),
            ])
            .start_with_context(tracer, &self.parent);
        let cx = self.parent.with_span(root);
        let child = |name: &'static str, from: Instant, to: Instant| {
            let mut s = tracer
                .span_builder(name)
                .with_start_time(wall(from))
                .start_with_context(tracer, &cx);
            s.end_with_timestamp(wall(to.max(from)));
        };
        child("receive", self.received, self.submitted);
        if let Some(t) = timing {
            child("queue", t.queued, t.started);
            let input_end = t.started + t.input;
            let infer_end = input_end + t.infer;
            child("compute_input", t.started, input_end);
            child("compute_infer", input_end, infer_end);
            child("compute_output", infer_end, infer_end + t.output);
        }
        child("send", self.answered, end);
        cx.span().end_with_timestamp(wall(end));
    }

    /// The request's times as Triton writes them to its trace file.
    fn write_file(&self, traces: &Traces, path: &str, log_frequency: u64, timing: Option<Timing>) {
        let end = Instant::now();
        let clock = triton_file::Clock::now();
        let (recv, send) = if self.grpc {
            (
                ["GRPC_WAITREAD_START", "GRPC_WAITREAD_END"],
                ["GRPC_SEND_START", "GRPC_SEND_END"],
            )
        } else {
            (
                ["HTTP_RECV_START", "HTTP_RECV_END"],
                ["HTTP_SEND_START", "HTTP_SEND_END"],
            )
        };
        let mut stamps = vec![
            (recv[0], clock.ns(self.received)),
            (recv[1], clock.ns(self.submitted)),
            ("REQUEST_START", clock.ns(self.submitted)),
        ];
        if let Some(t) = timing {
            let input_end = t.started + t.input;
            let output_start = input_end + t.infer;
            stamps.extend([
                ("QUEUE_START", clock.ns(t.queued)),
                ("INFER_RESPONSE_COMPLETE", clock.ns(self.answered)),
                ("COMPUTE_START", clock.ns(t.started)),
                ("COMPUTE_INPUT_END", clock.ns(input_end)),
                ("COMPUTE_OUTPUT_START", clock.ns(output_start)),
                ("COMPUTE_END", clock.ns(output_start + t.output)),
            ]);
        }
        stamps.extend([
            ("REQUEST_END", clock.ns(self.answered)),
            (send[0], clock.ns(self.answered)),
            (send[1], clock.ns(end)),
        ]);
        let id = traces.next_id.fetch_add(1, Ordering::Relaxed);
        // The name as the client sent it, bounded as error texts are.
        let model = serving_proto::text::quote(&self.model).to_string();
        let objects = triton_file::objects(id, &model, self.version, &stamps, 2);
        if let Some(w) = traces.file_writer() {
            w.send(triton_file::FileTrace {
                path: path.to_owned(),
                log_frequency,
                objects,
            });
        }
    }
}

/// Spans an OTLP collector received.
pub type Received = std::sync::Arc<Mutex<Vec<opentelemetry_proto::tonic::trace::v1::Span>>>;

/// An OTLP/HTTP collector on a free loopback port, keeping every span
/// posted to `/v1/traces`: for tests, and to look at a server's spans
/// without a collector of one's own. Returns its URL (for
/// `--trace-config opentelemetry,url=`) and the spans.
pub async fn collector() -> std::io::Result<(String, Received)> {
    use opentelemetry_proto::tonic::collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
    };
    use prost::Message as _;
    let spans: Received = Received::default();
    let sink = spans.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: axum::body::Bytes| {
            let sink = sink.clone();
            async move {
                let Ok(request) = ExportTraceServiceRequest::decode(body) else {
                    return (http::StatusCode::BAD_REQUEST, Vec::new());
                };
                let mut kept = lock(&sink);
                for rs in request.resource_spans {
                    for ss in rs.scope_spans {
                        kept.extend(ss.spans);
                    }
                }
                (
                    http::StatusCode::OK,
                    ExportTraceServiceResponse::default().encode_to_vec(),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/v1/traces", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((url, spans))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tritons_trace_config_and_traceparent_are_read() {
        let c = parse_config(&[
            "mode=opentelemetry".into(),
            "opentelemetry,url=localhost:4318/v1/traces".into(),
            "rate=1".into(),
            "level=TIMESTAMPS".into(),
            "count=5".into(),
        ])
        .unwrap();
        assert_eq!(c.url.as_deref(), Some("http://localhost:4318/v1/traces"));
        assert_eq!(c.settings.rate, 1);
        assert_eq!(c.settings.level, Level::Timestamps);
        assert_eq!(c.settings.count, 5);
        assert!(parse_config(&["mode=opentelemetry".into()]).is_err());
        assert!(parse_config(&["level=TENSORS".into()]).is_err());
        let cx = parent(Some(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ));
        assert_eq!(
            cx.span().span_context().trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert!(!parent(Some("garbage")).span().span_context().is_valid());
        assert!(!parent(None).span().span_context().is_valid());
    }

    #[test]
    fn without_a_collector_or_a_file_nothing_is_sampled() {
        let t = Traces::default();
        t.update("", |s| {
            s.level = Level::Timestamps;
            Ok(())
        })
        .unwrap();
        assert!(t.sample("m").is_none());
        assert_eq!(t.settings("").level, Level::Timestamps);
        t.update("", |s| {
            s.mode = Mode::OpenTelemetry;
            Ok(())
        })
        .unwrap_err();
        let c = parse_config(&[
            "triton,file=/nowhere/trace.json".into(),
            "triton,log-frequency=50".into(),
            "level=TIMESTAMPS".into(),
            "rate=1".into(),
        ])
        .unwrap();
        assert_eq!(c.settings.log_frequency, 50);
        let t = Traces::new(c);
        assert!(matches!(
            t.sample("m"),
            Some(Sink::File { path, log_frequency: 50, .. }) if path == "/nowhere/trace.json"
        ));
    }
}
