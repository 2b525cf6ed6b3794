//! [`Client`] and [`ClientBuilder`]: endpoints, protocol, TLS, timeouts,
//! size caps, balancing and retries.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serving_proto::mindspore::InstanceResult;
use serving_proto::oip::grpc::Contents;
use serving_proto::oip::{InferRequest, InferResponse, NamedTensor, Parameter, RequestedOutput};
use serving_proto::{NamedTensors, Tensor};
use tracing::Instrument;

use crate::endpoint::{self, Target};
use crate::error::Error;
use crate::stream::{InferStream, StreamResponses};
use crate::tls::TlsOptions;
use crate::transport::grpc::Grpc;
use crate::transport::rest::Rest;
use crate::transport::{CallCtx, ModelMetadata, ServerMetadata};

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

/// How requests spread over several endpoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Balance {
    /// In turn.
    #[default]
    RoundRobin,
    /// To the endpoint with the fewest calls in flight from this client.
    LeastLoaded,
}

enum Transport {
    Grpc(Grpc),
    Rest(Rest),
}

impl Transport {
    /// The endpoint's URL as the user gave it (the transport's label in
    /// errors).
    fn url(&self) -> &str {
        match self {
            Transport::Grpc(g) => &g.label,
            Transport::Rest(r) => &r.label,
        }
    }
}

struct Endpoint {
    transport: Transport,
    in_flight: AtomicUsize,
    set_aside_until: Mutex<Option<Instant>>,
}

impl Endpoint {
    fn available(&self, now: Instant) -> bool {
        self.set_aside_until
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_none_or(|until| until <= now)
    }
}

struct Inner {
    endpoints: Vec<Endpoint>,
    protocol: Protocol,
    next: AtomicUsize,
    balance: Balance,
    retries: usize,
    set_aside: Duration,
    timeout: Option<Duration>,
    max_send: u64,
    max_receive: u64,
    headers: Arc<http::HeaderMap>,
    compression: Option<crate::Compression>,
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
/// let client = Client::new("grpc://127.0.0.1:5500", Protocol::OpenInference)?;
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
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field(
                "endpoints",
                &self
                    .inner
                    .endpoints
                    .iter()
                    .map(|e| e.transport.url())
                    .collect::<Vec<_>>(),
            )
            .field("protocol", &self.inner.protocol)
            .finish()
    }
}

/// Builds a [`Client`].
#[derive(Clone, Debug)]
pub struct ClientBuilder {
    endpoints: Vec<String>,
    protocol: Protocol,
    tls: TlsOptions,
    connect_timeout: Duration,
    timeout: Option<Duration>,
    max_send: u64,
    max_receive: u64,
    balance: Balance,
    retries: usize,
    set_aside: Duration,
    contents: Contents,
    binary_threshold: usize,
    headers: Vec<(String, String)>,
    compression: Option<crate::Compression>,
}

impl Default for ClientBuilder {
    fn default() -> ClientBuilder {
        ClientBuilder {
            endpoints: Vec::new(),
            protocol: Protocol::OpenInference,
            tls: TlsOptions::default(),
            connect_timeout: Duration::from_secs(10),
            timeout: None,
            max_send: MAX_MESSAGE_SIZE,
            max_receive: MAX_MESSAGE_SIZE,
            balance: Balance::RoundRobin,
            retries: 2,
            set_aside: Duration::from_secs(5),
            contents: Contents::Raw,
            binary_threshold: 1024,
            headers: Vec::new(),
            compression: None,
        }
    }
}

impl ClientBuilder {
    /// Adds an endpoint: `grpc://`, `grpcs://`, `http://`, `https://` or `unix:`.
    pub fn endpoint(mut self, url: impl Into<String>) -> ClientBuilder {
        self.endpoints.push(url.into());
        self
    }

    /// Adds several endpoints; requests spread over them.
    pub fn endpoints<I: IntoIterator<Item = S>, S: Into<String>>(
        mut self,
        urls: I,
    ) -> ClientBuilder {
        self.endpoints.extend(urls.into_iter().map(Into::into));
        self
    }

    /// The protocol family (default: Open Inference).
    pub fn protocol(mut self, protocol: Protocol) -> ClientBuilder {
        self.protocol = protocol;
        self
    }

    /// Trusts this PEM CA bundle for `grpcs://` and `https://` endpoints
    /// (instead of the platform's roots).
    pub fn ca_certificate_pem(mut self, pem: impl Into<Vec<u8>>) -> ClientBuilder {
        self.tls.ca_pem = Some(pem.into());
        self
    }

    /// Presents this PEM certificate chain and key (mutual TLS).
    pub fn identity_pem(
        mut self,
        certificate: impl Into<Vec<u8>>,
        key: impl Into<Vec<u8>>,
    ) -> ClientBuilder {
        self.tls.identity = Some((certificate.into(), key.into()));
        self
    }

    /// Verifies the server's certificate against this name instead of the
    /// endpoint's host.
    pub fn server_name(mut self, name: impl Into<String>) -> ClientBuilder {
        self.tls.server_name = Some(name.into());
        self
    }

    /// How long opening a connection may take (default 10 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> ClientBuilder {
        self.connect_timeout = timeout;
        self
    }

    /// The deadline of each call, retries included; sent to the server as
    /// `grpc-timeout` or `Request-Timeout-Ms` (default: none).
    pub fn timeout(mut self, timeout: Duration) -> ClientBuilder {
        self.timeout = Some(timeout);
        self
    }

    /// The largest request sent, in bytes: at most (and by default) 512 MiB.
    /// Larger requests fail before a byte is sent.
    pub fn max_send_size(mut self, bytes: u64) -> ClientBuilder {
        self.max_send = bytes;
        self
    }

    /// The largest reply accepted, in bytes: at most (and by default) 512 MiB.
    pub fn max_receive_size(mut self, bytes: u64) -> ClientBuilder {
        self.max_receive = bytes;
        self
    }

    /// How requests spread over endpoints (default: round robin).
    pub fn balance(mut self, balance: Balance) -> ClientBuilder {
        self.balance = balance;
        self
    }

    /// How many times a retryable failure (unreachable or busy server) is
    /// retried on another endpoint, within the call's deadline (default 2).
    pub fn retries(mut self, retries: usize) -> ClientBuilder {
        self.retries = retries;
        self
    }

    /// How long a failed endpoint is set aside before it is tried again
    /// (default 5 s).
    pub fn set_aside_for(mut self, duration: Duration) -> ClientBuilder {
        self.set_aside = duration;
        self
    }

    /// OIP over gRPC: send tensors as typed contents instead of raw bytes.
    pub fn typed_contents(mut self, typed: bool) -> ClientBuilder {
        self.contents = if typed {
            Contents::Typed
        } else {
            Contents::Raw
        };
        self
    }

    /// Compresses every request with `compression` (gzip or deflate) and
    /// accepts replies compressed with either, on gRPC (`grpc-encoding`)
    /// and REST (`Content-Encoding`); off by default. The send cap counts
    /// the request before compression, as the server's limit does; a reply
    /// is inflated under the receive cap.
    ///
    /// ```no_run
    /// # fn demo() -> Result<(), serving_client::Error> {
    /// use serving_client::{Client, Compression};
    /// let client = Client::builder()
    ///     .endpoint("grpc://127.0.0.1:5500")
    ///     .compression(Compression::Gzip)
    ///     .build()?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn compression(mut self, compression: crate::Compression) -> ClientBuilder {
        self.compression = Some(compression);
        self
    }

    /// OIP over REST: requests with an input of at least this many bytes use
    /// the binary tensor extension, in both directions (default 1024).
    pub fn binary_threshold(mut self, bytes: usize) -> ClientBuilder {
        self.binary_threshold = bytes;
        self
    }

    /// Sends `Authorization: Bearer <token>` with every call (gRPC metadata
    /// or HTTP header).
    pub fn bearer_token(self, token: impl AsRef<str>) -> ClientBuilder {
        let value = format!("Bearer {}", token.as_ref());
        self.header("authorization", value)
    }

    /// Sends this header (gRPC metadata) with every call; checked by
    /// [`ClientBuilder::build`].
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> ClientBuilder {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Builds the client. No connection is opened yet.
    pub fn build(self) -> Result<Client, Error> {
        // reqwest is built here with rustls and no bundled provider; a
        // process without a default provider gets ring, so other reqwest
        // clients of the program keep working too.
        let _ = rustls::crypto::ring::default_provider().install_default();
        if self.endpoints.is_empty() {
            return Err(Error::Config(
                "no endpoint: add one with .endpoint(url)".into(),
            ));
        }
        let mut headers = http::HeaderMap::new();
        for (name, value) in &self.headers {
            let name = http::HeaderName::try_from(name.to_ascii_lowercase())
                .map_err(|e| Error::Config(format!("header name '{name}': {e}")))?;
            let mut value = http::HeaderValue::try_from(value.as_str())
                .map_err(|e| Error::Config(format!("header '{name}': {e}")))?;
            if name == http::header::AUTHORIZATION {
                value.set_sensitive(true);
            }
            headers.append(name, value);
        }
        for (what, value) in [
            ("max_send_size", self.max_send),
            ("max_receive_size", self.max_receive),
        ] {
            if value > MAX_MESSAGE_SIZE || value == 0 {
                return Err(Error::Config(format!(
                    "{what} {value} is outside 1..={MAX_MESSAGE_SIZE} bytes (512 MiB)"
                )));
            }
        }
        let mut rest_client = None;
        let mut endpoints = Vec::with_capacity(self.endpoints.len());
        for url in &self.endpoints {
            let transport = match endpoint::parse(url)? {
                Target::Grpc {
                    authority,
                    host,
                    tls,
                } => {
                    let scheme = if tls { "https" } else { "http" };
                    let mut ep =
                        tonic::transport::Endpoint::from_shared(format!("{scheme}://{authority}"))
                            .map_err(|e| Error::Config(format!("endpoint '{url}': {e}")))?
                            .connect_timeout(self.connect_timeout)
                            .tcp_nodelay(true)
                            .http2_adaptive_window(false)
                            .initial_stream_window_size(8 << 20)
                            .initial_connection_window_size(8 << 20);
                    if tls {
                        ep = ep
                            .tls_config(self.tls.tonic(&host))
                            .map_err(|e| Error::Config(format!("endpoint '{url}': {e}")))?;
                    }
                    Transport::Grpc(Grpc {
                        channel: ep.connect_lazy(),
                        label: url.clone(),
                        contents: self.contents,
                    })
                }
                Target::Unix { path } => {
                    let ep = tonic::transport::Endpoint::from_static("http://localhost")
                        .connect_timeout(self.connect_timeout);
                    let channel =
                        ep.connect_with_connector_lazy(tower::service_fn(move |_: http::Uri| {
                            let path = path.clone();
                            async move {
                                let stream = tokio::net::UnixStream::connect(path).await?;
                                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
                            }
                        }));
                    Transport::Grpc(Grpc {
                        channel,
                        label: url.clone(),
                        contents: self.contents,
                    })
                }
                Target::Rest { authority, tls } => {
                    if rest_client.is_none() {
                        let builder = reqwest::Client::builder()
                            .connect_timeout(self.connect_timeout)
                            .tcp_nodelay(true)
                            .tls_backend_preconfigured(self.tls.rustls()?);
                        rest_client =
                            Some(builder.build().map_err(|e| Error::Config(e.to_string()))?);
                    }
                    let scheme = if tls { "https" } else { "http" };
                    Transport::Rest(Rest {
                        http: rest_client.clone().expect("built above"),
                        base: format!("{scheme}://{authority}"),
                        label: url.clone(),
                        binary_threshold: self.binary_threshold,
                    })
                }
            };
            endpoints.push(Endpoint {
                transport,
                in_flight: AtomicUsize::new(0),
                set_aside_until: Mutex::new(None),
            });
        }
        Ok(Client {
            inner: Arc::new(Inner {
                endpoints,
                protocol: self.protocol,
                next: AtomicUsize::new(0),
                balance: self.balance,
                retries: self.retries,
                set_aside: self.set_aside,
                timeout: self.timeout,
                max_send: self.max_send,
                max_receive: self.max_receive,
                headers: Arc::new(headers),
                compression: self.compression,
            }),
        })
    }
}

/// A call's instance results: one per instance sent, in order, each the
/// outputs or that instance's in-band error.
pub type Predictions = Vec<InstanceResult>;

impl Client {
    /// A builder.
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }

    /// A client of one endpoint with default settings.
    pub fn new(url: &str, protocol: Protocol) -> Result<Client, Error> {
        Client::builder().endpoint(url).protocol(protocol).build()
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

    /// Picks an endpoint not yet tried by this call and not set aside; when
    /// every endpoint is set aside, the one set aside longest ago is probed
    /// (a client never refuses to try).
    fn pick(&self, tried: &[usize]) -> (usize, &Endpoint) {
        let now = Instant::now();
        let eps = &self.inner.endpoints;
        let fresh: Vec<usize> = (0..eps.len()).filter(|i| !tried.contains(i)).collect();
        let pool = if fresh.is_empty() {
            (0..eps.len()).collect()
        } else {
            fresh
        };
        let available: Vec<usize> = pool
            .iter()
            .copied()
            .filter(|&i| eps[i].available(now))
            .collect();
        if available.is_empty() {
            let i = pool
                .into_iter()
                .min_by_key(|&i| {
                    *eps[i]
                        .set_aside_until
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                })
                .expect("at least one endpoint");
            return (i, &eps[i]);
        }
        let start = self.inner.next.fetch_add(1, Ordering::Relaxed);
        let n = available.len();
        let i = match self.inner.balance {
            Balance::RoundRobin => available[start % n],
            Balance::LeastLoaded => (0..n)
                .map(|k| available[(start + k) % n])
                .min_by_key(|&i| eps[i].in_flight.load(Ordering::Relaxed))
                .expect("not empty"),
        };
        (i, &eps[i])
    }

    /// Runs `op` on an endpoint, retrying retryable failures on others
    /// within the deadline and setting failed endpoints aside.
    async fn call<'a, T, F, Fut>(&'a self, name: &'static str, op: F) -> Result<T, Error>
    where
        F: Fn(&'a Endpoint, CallCtx) -> Fut,
        Fut: Future<Output = Result<T, Error>> + 'a,
    {
        let deadline = self.inner.timeout.map(|t| Instant::now() + t);
        let mut tried = Vec::new();
        loop {
            let attempt = tried.len();
            let (index, endpoint) = self.pick(&tried);
            let timeout = match deadline {
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(Error::DeadlineExceeded {
                            endpoint: endpoint.transport.url().to_owned(),
                            timeout: self.inner.timeout,
                            message: "the deadline passed before the call could be sent".into(),
                            source: None,
                        });
                    }
                    Some(left)
                }
                None => None,
            };
            let ctx = CallCtx {
                headers: self.inner.headers.clone(),
                timeout,
                max_send: self.inner.max_send,
                max_receive: self.inner.max_receive,
                compression: self.inner.compression,
            };
            let span = tracing::debug_span!("serving_client", call = name, endpoint = %endpoint.transport.url(), attempt);
            endpoint.in_flight.fetch_add(1, Ordering::Relaxed);
            let result = op(endpoint, ctx).instrument(span).await;
            endpoint.in_flight.fetch_sub(1, Ordering::Relaxed);
            let set_aside = |until: Option<Instant>| {
                *endpoint
                    .set_aside_until
                    .lock()
                    .unwrap_or_else(|p| p.into_inner()) = until;
            };
            match result {
                Err(e) if e.is_retryable() => {
                    tracing::debug!(endpoint = %endpoint.transport.url(), error = %e, attempt, "retryable failure; setting the endpoint aside");
                    set_aside(Some(Instant::now() + self.inner.set_aside));
                    if attempt >= self.inner.retries {
                        return Err(e);
                    }
                    tried.push(index);
                    // Once every endpoint has been tried, wait a little
                    // before going round again.
                    if tried.len() >= self.inner.endpoints.len() {
                        let pause = Duration::from_millis(25 << attempt.min(5));
                        if deadline.is_some_and(|d| Instant::now() + pause >= d) {
                            return Err(e);
                        }
                        tokio::time::sleep(pause).await;
                    }
                }
                Ok(value) => {
                    if !endpoint.available(Instant::now()) {
                        set_aside(None);
                    }
                    return Ok(value);
                }
                Err(e) => return Err(e),
            }
        }
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
        self.call("predict", move |ep, ctx| async move {
            match &ep.transport {
                Transport::Grpc(g) => g.predict(ctx, servable, method, version, instances).await,
                Transport::Rest(r) => r.predict(ctx, servable, method, version, instances).await,
            }
        })
        .await
    }

    /// Open Inference: an inference call on `model`, built step by step.
    pub fn infer(&self, model: &str) -> InferBuilder<'_> {
        InferBuilder {
            client: self,
            request: InferRequest {
                model_name: model.to_owned(),
                ..Default::default()
            },
        }
    }

    /// Open Inference: sends a complete request.
    pub async fn infer_request(&self, request: &InferRequest) -> Result<InferResponse, Error> {
        self.require(Protocol::OpenInference)?;
        self.call("infer", move |ep, ctx| async move {
            match &ep.transport {
                Transport::Grpc(g) => g.infer(ctx, request).await,
                Transport::Rest(r) => r.infer(ctx, request).await,
            }
        })
        .await
    }

    /// Open Inference: opens a stream (Triton's `ModelStreamInfer`) on a
    /// gRPC endpoint: send requests on the [`InferStream`] without waiting,
    /// read their answers from the [`StreamResponses`] in request order.
    /// Several streams may be open at once, on one connection. The stream
    /// has no deadline of its own (the client's timeout is per call); drop
    /// the answers to cancel it. Without a gRPC endpoint:
    /// [`Error::NotSupported`].
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
    pub async fn stream(&self) -> Result<(InferStream, StreamResponses), Error> {
        self.require(Protocol::OpenInference)?;
        let grpc = self
            .inner
            .endpoints
            .iter()
            .filter_map(|ep| match &ep.transport {
                Transport::Grpc(g) => Some(g),
                Transport::Rest(_) => None,
            })
            .next()
            .ok_or(Error::NotSupported {
                what: "streaming (ModelStreamInfer)",
                needs: "a gRPC endpoint (grpc://, grpcs:// or unix:)",
            })?;
        let ctx = CallCtx {
            headers: self.inner.headers.clone(),
            timeout: None,
            max_send: self.inner.max_send,
            max_receive: self.inner.max_receive,
            compression: self.inner.compression,
        };
        grpc.stream(ctx).await
    }

    /// Open Inference: whether the server is live.
    pub async fn server_live(&self) -> Result<bool, Error> {
        self.call("server_live", |ep, ctx| async move {
            match &ep.transport {
                Transport::Grpc(g) => g.server_live(ctx).await,
                Transport::Rest(r) => r.server_live(ctx).await,
            }
        })
        .await
    }

    /// Open Inference: whether the server is ready.
    pub async fn server_ready(&self) -> Result<bool, Error> {
        self.call("server_ready", |ep, ctx| async move {
            match &ep.transport {
                Transport::Grpc(g) => g.server_ready(ctx).await,
                Transport::Rest(r) => r.server_ready(ctx).await,
            }
        })
        .await
    }

    /// Open Inference: whether a model (optionally a version) is ready.
    pub async fn model_ready(&self, model: &str, version: Option<&str>) -> Result<bool, Error> {
        let version = version.unwrap_or_default();
        self.call("model_ready", |ep, ctx| async move {
            match &ep.transport {
                Transport::Grpc(g) => g.model_ready(ctx, model, version).await,
                Transport::Rest(r) => r.model_ready(ctx, model, version).await,
            }
        })
        .await
    }

    /// Open Inference: server metadata.
    pub async fn server_metadata(&self) -> Result<ServerMetadata, Error> {
        self.call("server_metadata", |ep, ctx| async move {
            match &ep.transport {
                Transport::Grpc(g) => g.server_metadata(ctx).await,
                Transport::Rest(r) => r.server_metadata(ctx).await,
            }
        })
        .await
    }

    /// Open Inference: model metadata.
    pub async fn model_metadata(
        &self,
        model: &str,
        version: Option<&str>,
    ) -> Result<ModelMetadata, Error> {
        let version = version.unwrap_or_default();
        self.call("model_metadata", |ep, ctx| async move {
            match &ep.transport {
                Transport::Grpc(g) => g.model_metadata(ctx, model, version).await,
                Transport::Rest(r) => r.model_metadata(ctx, model, version).await,
            }
        })
        .await
    }
}

/// Builds an Open Inference request.
#[derive(Debug)]
pub struct InferBuilder<'a> {
    client: &'a Client,
    request: InferRequest,
}

impl InferBuilder<'_> {
    /// The model version (default: the server's choice, usually the newest).
    pub fn version(mut self, version: impl Into<String>) -> Self {
        self.request.model_version = version.into();
        self
    }

    /// The request id, echoed in the response.
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.request.id = id.into();
        self
    }

    /// A named input.
    pub fn input(mut self, name: impl Into<String>, tensor: Tensor) -> Self {
        self.request.inputs.push(NamedTensor::new(name, tensor));
        self
    }

    /// An output to return (default: all).
    pub fn output(mut self, name: impl Into<String>) -> Self {
        self.request.outputs.push(RequestedOutput {
            name: name.into(),
            parameters: Default::default(),
        });
        self
    }

    /// A request parameter.
    pub fn parameter(mut self, name: impl Into<String>, value: Parameter) -> Self {
        self.request.parameters.insert(name.into(), value);
        self
    }

    /// The request built so far.
    pub fn request(&self) -> &InferRequest {
        &self.request
    }

    /// Sends it.
    pub async fn send(self) -> Result<InferResponse, Error> {
        self.client.infer_request(&self.request).await
    }
}
