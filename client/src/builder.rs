//! [`ClientBuilder`]: endpoints, protocol, TLS, timeouts, size caps,
//! balancing, retries and compression, checked once at
//! [`ClientBuilder::build`].

use std::sync::Arc;
use std::time::Duration;

use serving_proto::oip::grpc::Contents;

use crate::client::{Client, Inner, MAX_MESSAGE_SIZE, Protocol};
use crate::connections::Resolve;
#[cfg(feature = "grpc")]
use crate::connections::{self, SystemResolver};
use crate::endpoint::{self, Target};
use crate::error::Error;
use crate::pool::{Balance, Pool};
use crate::tls::TlsOptions;
use crate::transport::Transport;
#[cfg(feature = "grpc")]
use crate::transport::grpc::Grpc;
#[cfg(feature = "rest")]
use crate::transport::rest::Rest;

/// Builds a [`Client`].
#[derive(Clone)]
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
    keep_alive: Option<(Duration, Duration)>,
    connections: usize,
    resolve_every: Option<Duration>,
    resolver: Option<Arc<dyn Resolve>>,
}

impl std::fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("endpoints", &self.endpoints)
            .field("protocol", &self.protocol)
            .field("timeout", &self.timeout)
            .field("balance", &self.balance)
            .field("retries", &self.retries)
            .field("connections", &self.connections)
            .field("resolve_every", &self.resolve_every)
            .finish_non_exhaustive()
    }
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
            keep_alive: None,
            connections: 1,
            resolve_every: None,
            resolver: None,
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

    /// How many times a retryable failure (unreachable or busy server) of
    /// an idempotent call is retried on another endpoint, within the call's
    /// deadline (default 2); once every endpoint has been tried, after a
    /// pause of up to 25 ms doubled per attempt (at most 800 ms), half of
    /// it random. Calls that change a server's state (loading, unloading,
    /// registering shared memory) are never retried, and calls bound to an
    /// endpoint are retried there only: see [`crate::Client::endpoint`].
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

    /// Sends HTTP/2 keep-alive pings every `interval` on gRPC connections
    /// (idle ones too) and closes a connection whose ping is not answered
    /// within `timeout`, so that a dead peer (a node gone, a NAT that
    /// dropped the flow) is found before a call waits on it; REST
    /// connections get TCP keep-alive at the same interval. Off by default.
    pub fn keep_alive(mut self, interval: Duration, timeout: Duration) -> ClientBuilder {
        self.keep_alive = Some((interval, timeout));
        self
    }

    /// Opens `n` HTTP/2 connections to each gRPC endpoint (default 1) and
    /// spreads calls over them, least loaded of two: one connection caps a
    /// busy client at one socket. REST opens connections as calls need
    /// them (HTTP/1.1, kept alive and reused).
    pub fn connections_per_endpoint(mut self, n: usize) -> ClientBuilder {
        self.connections = n.max(1);
        self
    }

    /// Resolves each gRPC endpoint's host again every `interval` and
    /// spreads calls over all of its addresses, adding and dropping
    /// connections as addresses come and go: a Kubernetes headless Service
    /// (one address per pod) is balanced over every replica. Addresses are
    /// kept when a lookup fails. Needs a Tokio runtime at
    /// [`ClientBuilder::build`].
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), serving_client::Error> {
    /// use std::time::Duration;
    /// let client = serving_client::Client::builder()
    ///     .endpoint("grpc://models-headless.default.svc.cluster.local:9000")
    ///     .resolve_every(Duration::from_secs(10))
    ///     .build()?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn resolve_every(mut self, interval: Duration) -> ClientBuilder {
        self.resolve_every = Some(interval);
        self
    }

    /// Resolves names with `resolver` instead of the system resolver (for
    /// [`ClientBuilder::resolve_every`]).
    pub fn resolver(mut self, resolver: impl Resolve) -> ClientBuilder {
        self.resolver = Some(Arc::new(resolver));
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
        // No process-wide rustls provider is installed: every TLS
        // configuration here names its provider (ring) itself, so the
        // program's own choice of default provider, or none, stays its own.
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
        let mut shared_http = SharedHttp::default();
        let mut endpoints = Vec::with_capacity(self.endpoints.len());
        for url in &self.endpoints {
            let transport = match endpoint::parse(url)? {
                Target::Grpc {
                    authority,
                    host,
                    tls,
                } => self.grpc_transport(url, &authority, &host, tls)?,
                Target::Unix { path } => self.unix_transport(url, path)?,
                Target::Rest { authority, tls } => {
                    self.rest_transport(url, &authority, tls, &mut shared_http)?
                }
            };
            endpoints.push(transport);
        }
        Ok(Client {
            inner: Arc::new(Inner {
                stats: Default::default(),
                pool: Pool::new(endpoints, self.balance, self.retries, self.set_aside),
                protocol: self.protocol,
                timeout: self.timeout,
                max_send: self.max_send,
                max_receive: self.max_receive,
                headers: Arc::new(headers),
                compression: self.compression,
            }),
            pin: None,
        })
    }
}

/// The REST client the REST endpoints of one [`Client`] share (one
/// connection pool); nothing without the `rest` feature.
#[derive(Default)]
struct SharedHttp {
    #[cfg(feature = "rest")]
    client: Option<reqwest::Client>,
}

/// The error for an endpoint whose transport this build leaves out.
#[allow(dead_code, reason = "used by whichever transport is left out")]
fn without(url: &str, feature: &str) -> Error {
    Error::Config(format!(
        "endpoint '{url}' needs the `{feature}` feature of serving-client, which this build leaves out"
    ))
}

#[cfg(feature = "grpc")]
impl ClientBuilder {
    /// A gRPC endpoint over TCP: several connections, or connections to
    /// every address its name resolves to.
    fn grpc_transport(
        &self,
        url: &str,
        authority: &str,
        host: &str,
        tls: bool,
    ) -> Result<Arc<dyn Transport>, Error> {
        let channel = match self.resolve_every {
            None => connections::several(
                &self.grpc_endpoint(url, authority, host, tls, authority)?,
                self.connections,
            ),
            Some(every) => {
                let port = authority
                    .rsplit_once(':')
                    .and_then(|(_, p)| p.parse().ok())
                    .ok_or_else(|| {
                        Error::Config(format!("endpoint '{url}' has no port to resolve"))
                    })?;
                // Checked once here; each address's endpoint
                // is made the same way.
                self.grpc_endpoint(url, authority, host, tls, authority)?;
                let this = self.clone();
                let (url, authority, host_name) =
                    (url.to_owned(), authority.to_owned(), host.to_owned());
                connections::resolved(
                    self.resolver
                        .clone()
                        .unwrap_or_else(|| Arc::new(SystemResolver)),
                    host.trim_start_matches('[')
                        .trim_end_matches(']')
                        .to_owned(),
                    port,
                    every,
                    self.connections,
                    move |address| {
                        this.grpc_endpoint(&url, &authority, &host_name, tls, &address.to_string())
                    },
                )?
            }
        };
        Ok(Arc::new(Grpc {
            channel,
            label: url.to_owned(),
            contents: self.contents,
        }))
    }

    /// A gRPC endpoint over a Unix socket.
    fn unix_transport(&self, url: &str, path: String) -> Result<Arc<dyn Transport>, Error> {
        let ep = http2_tuned(
            tonic::transport::Endpoint::from_static("http://localhost")
                .connect_timeout(self.connect_timeout),
        );
        let channel = ep.connect_with_connector_lazy(tower::service_fn(move |_: http::Uri| {
            let path = path.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(path).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
            }
        }));
        Ok(Arc::new(Grpc {
            channel,
            label: url.to_owned(),
            contents: self.contents,
        }))
    }
}

#[cfg(not(feature = "grpc"))]
impl ClientBuilder {
    fn grpc_transport(
        &self,
        url: &str,
        _: &str,
        _: &str,
        _: bool,
    ) -> Result<Arc<dyn Transport>, Error> {
        Err(without(url, "grpc"))
    }

    fn unix_transport(&self, url: &str, _: String) -> Result<Arc<dyn Transport>, Error> {
        Err(without(url, "grpc"))
    }
}

#[cfg(feature = "rest")]
impl ClientBuilder {
    /// A REST endpoint, on the client's shared REST connection pool.
    fn rest_transport(
        &self,
        url: &str,
        authority: &str,
        tls: bool,
        shared_http: &mut SharedHttp,
    ) -> Result<Arc<dyn Transport>, Error> {
        if shared_http.client.is_none() {
            let mut builder = reqwest::Client::builder()
                .connect_timeout(self.connect_timeout)
                .tcp_nodelay(true)
                .tls_backend_preconfigured(self.tls.rustls()?);
            if let Some((interval, timeout)) = self.keep_alive {
                builder = builder
                    .tcp_keepalive(interval)
                    .http2_keep_alive_interval(interval)
                    .http2_keep_alive_timeout(timeout)
                    .http2_keep_alive_while_idle(true);
            }
            shared_http.client = Some(builder.build().map_err(|e| Error::Config(e.to_string()))?);
        }
        let scheme = if tls { "https" } else { "http" };
        Ok(Arc::new(Rest {
            http: shared_http.client.clone().expect("built above"),
            base: format!("{scheme}://{authority}"),
            label: url.to_owned(),
            binary_threshold: self.binary_threshold,
        }))
    }
}

#[cfg(not(feature = "rest"))]
impl ClientBuilder {
    fn rest_transport(
        &self,
        url: &str,
        _: &str,
        _: bool,
        _: &mut SharedHttp,
    ) -> Result<Arc<dyn Transport>, Error> {
        Err(without(url, "rest"))
    }
}

/// The largest HTTP/2 frame the client accepts (`SETTINGS_MAX_FRAME_SIZE`),
/// as the reference server does: a 64 MiB reply arrives in 64 frames instead
/// of 4,096 of the protocol's default 16 KiB, each a read and a wake-up less.
/// A frame is held whole before it is handed on, so this is also what one
/// connection may buffer of a frame.
#[cfg(feature = "grpc")]
const GRPC_MAX_FRAME: u32 = 1 << 20;

/// The HTTP/2 settings of every gRPC connection, TCP or Unix: fixed 8 MiB
/// flow-control windows (large tensors on loopback) and 1 MiB frames.
#[cfg(feature = "grpc")]
fn http2_tuned(ep: tonic::transport::Endpoint) -> tonic::transport::Endpoint {
    ep.http2_adaptive_window(false)
        .initial_stream_window_size(8 << 20)
        .initial_connection_window_size(8 << 20)
        .max_frame_size(GRPC_MAX_FRAME)
}

#[cfg(feature = "grpc")]
impl ClientBuilder {
    /// The tonic endpoint of gRPC endpoint `url` (`authority`, `host`),
    /// connecting to `address` (the authority itself, or one resolved
    /// address of it).
    fn grpc_endpoint(
        &self,
        url: &str,
        authority: &str,
        host: &str,
        tls: bool,
        address: &str,
    ) -> Result<tonic::transport::Endpoint, Error> {
        let scheme = if tls { "https" } else { "http" };
        let config = |e: &dyn std::fmt::Display| Error::Config(format!("endpoint '{url}': {e}"));
        let mut ep = tonic::transport::Endpoint::from_shared(format!("{scheme}://{address}"))
            .map_err(|e| config(&e))?
            .connect_timeout(self.connect_timeout)
            .tcp_nodelay(true);
        ep = http2_tuned(ep);
        if address != authority {
            // One address of the name: requests still name the host.
            let origin: http::Uri = format!("{scheme}://{authority}")
                .parse()
                .map_err(|e| config(&e))?;
            ep = ep.origin(origin);
        }
        if let Some((interval, timeout)) = self.keep_alive {
            ep = ep
                .http2_keep_alive_interval(interval)
                .keep_alive_timeout(timeout)
                .keep_alive_while_idle(true);
        }
        if tls {
            ep = ep
                .tls_config(self.tls.tonic(host))
                .map_err(|e| config(&e))?;
        }
        Ok(ep)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An endpoint whose transport this build leaves out is refused when
    /// the client is built, naming the feature; one it has builds.
    #[tokio::test]
    async fn an_endpoint_of_a_transport_left_out_names_its_feature() {
        let built = |url: &str| Client::builder().endpoint(url).build();
        for (url, feature, on) in [
            ("grpc://127.0.0.1:1", "grpc", cfg!(feature = "grpc")),
            ("unix:/tmp/none.sock", "grpc", cfg!(feature = "grpc")),
            ("http://127.0.0.1:1", "rest", cfg!(feature = "rest")),
        ] {
            match built(url) {
                Ok(_) => assert!(on, "{url} built without the {feature} feature"),
                Err(Error::Config(m)) => {
                    assert!(!on, "{url}: {m}");
                    assert!(m.contains(&format!("the `{feature}` feature")), "{m}");
                }
                Err(e) => panic!("{url}: {e:?}"),
            }
        }
    }
}
