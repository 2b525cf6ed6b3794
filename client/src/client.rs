//! [`Client`]: the calls of both protocols (inference, health, metadata,
//! streaming); the control extensions are in `control.rs`, the builder in
//! `builder.rs`, endpoints and retries in `pool.rs`.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serving_proto::mindspore::InstanceResult;
use serving_proto::oip::{InferRequest, InferResponse};
use serving_proto::{NamedTensors, Tensor};

use crate::builder::ClientBuilder;
use crate::error::Error;
use crate::infer::InferBuilder;
use crate::pool::{Pool, Retry, Route};
use crate::stats::{CallTiming, InferStats};
#[cfg(feature = "grpc")]
use crate::stream::{InferStream, StreamResponses};
use crate::transport::{CallCtx, ModelMetadata, OutputRegions, ServerMetadata, Transport};

/// The largest message the client sends or receives by default, and the
/// most it can be configured to: 512 MiB, as MindSpore's Python client.
pub const MAX_MESSAGE_SIZE: u64 = 512 << 20;

/// The protocol family a client speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Protocol {
    /// MindSpore Serving: `Predict` over gRPC, `/model/...` over REST.
    MindSpore,
    /// The Open Inference Protocol (KServe v2): Triton, KServe, MLServer, ...
    OpenInference,
}

pub(crate) struct Inner {
    pub(crate) pool: Pool,
    pub(crate) protocol: Protocol,
    pub(crate) timeout: Option<Duration>,
    pub(crate) max_send: u64,
    pub(crate) max_receive: u64,
    pub(crate) headers: Arc<http::HeaderMap>,
    pub(crate) compression: Option<crate::Compression>,
    /// What [`Client::infer_stats`] reads.
    pub(crate) stats: crate::stats::Counters,
}

/// A client of one or more model servers.
///
/// Cheap to clone: clones share connections. Connections are opened on first
/// use.
///
/// ```no_run
/// # async fn demo() -> Result<(), serving_client::Error> {
/// use serving_client::{Client, Protocol, Tensor};
///
/// let client = Client::new("grpc://127.0.0.1:5500")?;
/// let response = client
///     .infer("add")
///     .input("x1", Tensor::from_slice(&[2, 2], &[1f32, 2.0, 3.0, 4.0]).unwrap())
///     .input("x2", Tensor::from_slice(&[2, 2], &[1f32; 4]).unwrap())
///     .send()
///     .await?;
/// println!("{:?}", response.outputs[0].tensor.to_vec::<f32>());
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Client {
    pub(crate) inner: Arc<Inner>,
    /// The one endpoint every call goes to ([`Client::endpoint`]), if any.
    pub(crate) pin: Option<usize>,
}

/// What a call does to a server, which decides where it may go and
/// whether it is sent again after a retryable failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CallKind {
    /// Idempotent, and the same wherever it goes (inference, health,
    /// metadata, configuration, statistics, the repository index):
    /// balanced, and retried on other endpoints.
    Any,
    /// Idempotent, but about one server's state (inference placing tensors
    /// in shared memory, the regions' status): sent to the endpoint meant,
    /// and retried there only.
    Bound,
    /// Changes one server's state (load, unload, registering and
    /// unregistering shared memory): sent to the endpoint meant, once.
    Control,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("endpoints", &self.endpoints())
            .field("protocol", &self.inner.protocol)
            .finish()
    }
}

/// A call's instance results: one per instance sent, in order, each the
/// outputs or that instance's in-band error.
pub type Predictions = Vec<InstanceResult>;

/// A MindSpore instance from `(name, tensor)` pairs, names as `&str` or
/// `String`.
///
/// ```
/// use serving_client::{Tensor, instance};
///
/// let x = Tensor::from_slice(&[2], &[1f32, 2.0])?;
/// let one = instance([("x1", x.clone()), ("x2", x)]);
/// assert_eq!(one.len(), 2);
/// # Ok::<(), serving_client::TensorError>(())
/// ```
pub fn instance<K: Into<String>>(pairs: impl IntoIterator<Item = (K, Tensor)>) -> NamedTensors {
    pairs.into_iter().map(|(k, t)| (k.into(), t)).collect()
}

impl Client {
    /// A builder.
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }

    /// An Open Inference client of one endpoint with default settings
    /// (Triton, KServe, MLServer, ...).
    pub fn new(url: &str) -> Result<Client, Error> {
        Client::builder().endpoint(url).build()
    }

    /// A MindSpore Serving client of one endpoint with default settings.
    pub fn mindspore(url: &str) -> Result<Client, Error> {
        Client::builder()
            .endpoint(url)
            .protocol(Protocol::MindSpore)
            .build()
    }

    /// The protocol family.
    pub fn protocol(&self) -> Protocol {
        self.inner.protocol
    }

    fn require(&self, protocol: Protocol) -> Result<(), Error> {
        if self.inner.protocol == protocol {
            Ok(())
        } else {
            Err(Error::Config(format!(
                "this client speaks {:?}; build one with .protocol(Protocol::{protocol:?}) for this call",
                self.inner.protocol
            )))
        }
    }

    /// The endpoints' URLs, in the order given to the builder: what
    /// [`Client::endpoint`] picks from. A client from
    /// [`Client::endpoint`] has the one.
    pub fn endpoints(&self) -> Vec<&str> {
        let all = self.inner.pool.transports().map(|t| t.label());
        match self.pin {
            Some(i) => all.skip(i).take(1).collect(),
            None => all.collect(),
        }
    }

    /// A client of endpoint `index` alone (of [`Client::endpoints`]),
    /// sharing this client's connections, settings and counters: every
    /// call goes to that endpoint, and retries of idempotent calls too.
    /// `None` past the last endpoint.
    ///
    /// Calls that act on one server's state are refused
    /// ([`Error::Config`]) on a client of several endpoints, because the
    /// endpoint they are meant for is the caller's to say: loading and
    /// unloading models, registering, unregistering and listing shared
    /// memory, and inference with tensors placed in shared memory (which
    /// must reach the server the regions are registered with). They go
    /// through this. A client of one endpoint sends them there.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), serving_client::Error> {
    /// let client = serving_client::Client::builder()
    ///     .endpoints(["grpc://10.0.0.1:8001", "grpc://10.0.0.2:8001"])
    ///     .build()?;
    /// for i in 0..client.endpoints().len() {
    ///     client.endpoint(i).expect("in range").load_model("add").await?;
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn endpoint(&self, index: usize) -> Option<Client> {
        match self.pin {
            Some(_) => (index == 0).then(|| self.clone()),
            None => (index < self.inner.pool.len()).then(|| Client {
                inner: self.inner.clone(),
                pin: Some(index),
            }),
        }
    }

    /// Where a call of `kind` may go, and whether it is retried.
    fn route(&self, name: &str, kind: CallKind) -> Result<(Route, Retry), Error> {
        let retry = match kind {
            CallKind::Control => Retry::Never,
            CallKind::Any | CallKind::Bound => Retry::Idempotent,
        };
        let n = self.inner.pool.len();
        match (self.pin, kind) {
            (Some(i), _) => Ok((Route::Endpoint(i), retry)),
            (None, CallKind::Any) => Ok((Route::Balanced, retry)),
            (None, _) if n == 1 => Ok((Route::Endpoint(0), retry)),
            (None, _) => Err(Error::Config(format!(
                "{name} acts on one server, and this client has {n} endpoints: send it through Client::endpoint(i), to the endpoint it is meant for"
            ))),
        }
    }

    /// The context of one attempt with `timeout` left.
    fn ctx(&self, timeout: Option<Duration>, output_regions: Option<&OutputRegions>) -> CallCtx {
        CallCtx {
            headers: with_traceparent(&self.inner.headers),
            timeout,
            max_send: self.inner.max_send,
            max_receive: self.inner.max_receive,
            compression: self.inner.compression,
            output_regions: output_regions.cloned(),
            timing: None,
        }
    }

    /// Runs idempotent `op` on an endpoint (see [`Pool::call`]).
    pub(crate) async fn call<'a, T, F, Fut>(&'a self, name: &'static str, op: F) -> Result<T, Error>
    where
        F: Fn(&'a dyn Transport, CallCtx) -> Fut,
        Fut: Future<Output = Result<T, Error>> + 'a,
    {
        self.call_as(name, CallKind::Any, op).await
    }

    /// Runs `op`, a call of `kind`, on an endpoint (see [`Pool::call`]).
    pub(crate) async fn call_as<'a, T, F, Fut>(
        &'a self,
        name: &'static str,
        kind: CallKind,
        op: F,
    ) -> Result<T, Error>
    where
        F: Fn(&'a dyn Transport, CallCtx) -> Fut,
        Fut: Future<Output = Result<T, Error>> + 'a,
    {
        let (route, retry) = self.route(name, kind)?;
        let ctx = |left| self.ctx(left, None);
        self.inner
            .pool
            .call(name, route, retry, self.inner.timeout, ctx, op)
            .await
    }

    /// MindSpore: runs `method` of the newest version of `servable` on
    /// `instances`. A whole-request error is `Err(Error::Servable)`; per
    /// instance errors are in the results.
    pub async fn predict(
        &self,
        servable: &str,
        method: &str,
        instances: &[NamedTensors],
    ) -> Result<Predictions, Error> {
        self.predict_version(servable, method, 0, instances).await
    }

    /// MindSpore: as [`Client::predict`], for an explicit version (0 = newest).
    pub async fn predict_version(
        &self,
        servable: &str,
        method: &str,
        version: u64,
        instances: &[NamedTensors],
    ) -> Result<Predictions, Error> {
        self.require(Protocol::MindSpore)?;
        self.call("predict", |t, ctx| {
            t.predict(ctx, servable, method, version, instances)
        })
        .await
    }

    /// Open Inference: an inference call on `model`, built step by step.
    pub fn infer(&self, model: &str) -> InferBuilder<'_> {
        InferBuilder::new(self, model)
    }

    /// Open Inference: sends a complete request.
    pub async fn infer_request(&self, request: &InferRequest) -> Result<InferResponse, Error> {
        self.infer_placed(request, None).await
    }

    /// Sends `request`, whose outputs placed in shared memory are read
    /// through `regions`.
    pub(crate) async fn infer_placed(
        &self,
        request: &InferRequest,
        regions: Option<&OutputRegions>,
    ) -> Result<InferResponse, Error> {
        self.require(Protocol::OpenInference)?;
        // Tensors placed in shared memory must reach the server that has
        // the regions registered.
        use serving_proto::oip::shared_memory::is_placed;
        let placed = request.inputs.iter().any(|i| is_placed(&i.parameters))
            || request.outputs.iter().any(|o| is_placed(&o.parameters));
        let kind = if placed {
            CallKind::Bound
        } else {
            CallKind::Any
        };
        let (route, retry) = self.route("infer with tensors in shared memory", kind)?;
        let started = Instant::now();
        let timing = Arc::new(CallTiming::default());
        let ctx = |left| {
            timing.restart();
            CallCtx {
                timing: Some(timing.clone()),
                ..self.ctx(left, regions)
            }
        };
        let response = self
            .inner
            .pool
            .call("infer", route, retry, self.inner.timeout, ctx, |t, ctx| {
                t.infer(ctx, request)
            })
            .await?;
        self.inner.stats.complete(started.elapsed(), &timing);
        Ok(response)
    }

    /// The counters of this client's completed Open Inference `infer`
    /// calls so far: how many, and the time they spent in all, encoding
    /// requests and decoding replies (Triton's `InferStat`). Shared by the
    /// client's clones.
    pub fn infer_stats(&self) -> InferStats {
        self.inner.stats.get()
    }

    /// Open Inference: opens a stream (Triton's `ModelStreamInfer`) on a
    /// gRPC endpoint: send requests on the [`InferStream`] without waiting,
    /// read their answers from the [`StreamResponses`] in request order.
    /// Several streams may be open at once, on one connection. The stream
    /// has no deadline of its own (the client's timeout is per call); drop
    /// the answers to cancel it. It opens on the first gRPC endpoint (on a
    /// client from [`Client::endpoint`], its endpoint). Without a gRPC
    /// endpoint: [`Error::NotSupported`].
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), serving_client::Error> {
    /// use futures_util::StreamExt;
    /// use serving_client::{Client, InferRequest, NamedTensor, Tensor};
    ///
    /// let client = Client::builder().endpoint("grpc://127.0.0.1:5500").build()?;
    /// let (requests, mut answers) = client.stream().await?;
    /// for i in 0..100 {
    ///     let x = Tensor::from_vec(&[2, 2], vec![i as f32; 4])?;
    ///     requests
    ///         .send(&InferRequest {
    ///             model_name: "add".into(),
    ///             id: format!("r{i}"),
    ///             inputs: vec![NamedTensor::new("x1", x.clone()), NamedTensor::new("x2", x)],
    ///             ..Default::default()
    ///         })
    ///         .await?;
    /// }
    /// requests.finish();
    /// while let Some(answer) = answers.next().await {
    ///     let response = answer?;
    ///     println!("{}: {:?}", response.id, response.output::<f32>("y")?);
    /// }
    /// # Ok(())
    /// # }
    /// ```
    #[cfg(feature = "grpc")]
    pub async fn stream(&self) -> Result<(InferStream, StreamResponses), Error> {
        self.require(Protocol::OpenInference)?;
        let grpc = self
            .inner
            .pool
            .transports()
            .skip(self.pin.unwrap_or(0))
            .take(if self.pin.is_some() { 1 } else { usize::MAX })
            .find_map(Transport::as_grpc)
            .ok_or(Error::NotSupported {
                what: "streaming (ModelStreamInfer)",
                needs: "a gRPC endpoint (grpc://, grpcs:// or unix:)",
            })?;
        grpc.stream(self.ctx(None, None)).await
    }

    /// Open Inference: whether the server is live.
    pub async fn server_live(&self) -> Result<bool, Error> {
        self.call("server_live", |t, ctx| t.server_live(ctx)).await
    }

    /// Open Inference: whether the server is ready.
    pub async fn server_ready(&self) -> Result<bool, Error> {
        self.call("server_ready", |t, ctx| t.server_ready(ctx))
            .await
    }

    /// Open Inference: whether a model (optionally a version) is ready.
    pub async fn model_ready(&self, model: &str, version: Option<&str>) -> Result<bool, Error> {
        let version = version.unwrap_or_default();
        self.call("model_ready", |t, ctx| t.model_ready(ctx, model, version))
            .await
    }

    /// Open Inference: server metadata.
    pub async fn server_metadata(&self) -> Result<ServerMetadata, Error> {
        self.call("server_metadata", |t, ctx| t.server_metadata(ctx))
            .await
    }

    /// Open Inference: model metadata.
    pub async fn model_metadata(
        &self,
        model: &str,
        version: Option<&str>,
    ) -> Result<ModelMetadata, Error> {
        let version = version.unwrap_or_default();
        self.call("model_metadata", |t, ctx| {
            t.model_metadata(ctx, model, version)
        })
        .await
    }
}

/// The call's headers, with a W3C `traceparent` naming the current
/// OpenTelemetry span when there is one (feature `opentelemetry`).
#[cfg(feature = "opentelemetry")]
fn with_traceparent(headers: &Arc<http::HeaderMap>) -> Arc<http::HeaderMap> {
    use opentelemetry::trace::TraceContextExt as _;
    let cx = opentelemetry::Context::current();
    let span = cx.span();
    let sc = span.span_context();
    if !sc.is_valid() {
        return headers.clone();
    }
    let value = format!(
        "00-{}-{}-{:02x}",
        sc.trace_id(),
        sc.span_id(),
        sc.trace_flags().to_u8()
    );
    let mut h = (**headers).clone();
    if let Ok(v) = http::HeaderValue::from_str(&value) {
        h.insert("traceparent", v);
    }
    Arc::new(h)
}

/// The call's headers.
#[cfg(not(feature = "opentelemetry"))]
fn with_traceparent(headers: &Arc<http::HeaderMap>) -> Arc<http::HeaderMap> {
    headers.clone()
}
