//! How a gRPC endpoint's connections are made: several HTTP/2 connections
//! per endpoint (one connection caps a busy client at one socket's
//! throughput and one server thread's attention), and endpoints whose name
//! is resolved again and again, so that a name with one address per replica
//! (a Kubernetes headless Service) spreads calls over every replica as
//! replicas come and go.
//!
//! Both are tonic balance channels: calls go to the least loaded of two
//! connections picked at random (power of two choices), and a connection
//! that breaks is opened again on the next call.

#[cfg(feature = "grpc")]
use std::collections::BTreeSet;
use std::net::SocketAddr;
#[cfg(feature = "grpc")]
use std::sync::Arc;
#[cfg(feature = "grpc")]
use std::time::Duration;

use futures_util::future::BoxFuture;
#[cfg(feature = "grpc")]
use tonic::transport::channel::Change;
#[cfg(feature = "grpc")]
use tonic::transport::{Channel, Endpoint};

#[cfg(feature = "grpc")]
use crate::Error;

/// Resolves a host name to the addresses of its replicas: what
/// [`crate::ClientBuilder::resolve_every`] asks each round. The default
/// asks the system resolver (`getaddrinfo`); give your own to look
/// replicas up elsewhere (a service registry, a fixed list in tests).
pub trait Resolve: Send + Sync + 'static {
    /// The addresses of `host` (the endpoint URL's host; `port` is its
    /// port, which addresses may keep or replace).
    fn resolve(
        &self,
        host: &str,
        port: u16,
    ) -> BoxFuture<'static, std::io::Result<Vec<SocketAddr>>>;
}

/// The system resolver.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemResolver;

impl Resolve for SystemResolver {
    fn resolve(
        &self,
        host: &str,
        port: u16,
    ) -> BoxFuture<'static, std::io::Result<Vec<SocketAddr>>> {
        let target = format!("{host}:{port}");
        Box::pin(async move { Ok(tokio::net::lookup_host(target).await?.collect()) })
    }
}

/// `n` connections to one endpoint, balanced.
#[cfg(feature = "grpc")]
pub(crate) fn several(endpoint: &Endpoint, n: usize) -> Channel {
    if n <= 1 {
        return endpoint.connect_lazy();
    }
    // Keyed by index: tonic's balance_list keys by URI, which would make
    // the n connections one.
    let (channel, changes) = Channel::balance_channel::<usize>(n);
    for i in 0..n {
        let _ = changes.try_send(Change::Insert(i, endpoint.clone()));
    }
    channel
}

/// A channel over every address `resolver` gives for `host:port`, asked
/// again every `every`; `n` connections per address. `endpoint_for` makes
/// the endpoint of one address (TLS names and `:authority` stay the
/// host's). The first answer is awaited by the first call, not here.
#[cfg(feature = "grpc")]
pub(crate) fn resolved(
    resolver: Arc<dyn Resolve>,
    host: String,
    port: u16,
    every: Duration,
    n: usize,
    endpoint_for: impl Fn(SocketAddr) -> Result<Endpoint, Error> + Send + 'static,
) -> Result<Channel, Error> {
    let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
        Error::Config("resolve_every needs a Tokio runtime: build the client inside one".into())
    })?;
    let (channel, changes) = Channel::balance_channel::<(SocketAddr, usize)>(64);
    runtime.spawn(async move {
        let mut current: BTreeSet<SocketAddr> = BTreeSet::new();
        loop {
            if changes.is_closed() {
                return;
            }
            match resolver.resolve(&host, port).await {
                Ok(addresses) if !addresses.is_empty() => {
                    let fresh: BTreeSet<SocketAddr> = addresses.into_iter().collect();
                    for gone in current.difference(&fresh) {
                        tracing::debug!(host = %host, address = %gone, "address gone; its connections close");
                        for i in 0..n.max(1) {
                            if changes.send(Change::Remove((*gone, i))).await.is_err() {
                                return;
                            }
                        }
                    }
                    for new in fresh.difference(&current) {
                        match endpoint_for(*new) {
                            Ok(endpoint) => {
                                tracing::debug!(host = %host, address = %new, "new address");
                                for i in 0..n.max(1) {
                                    let change = Change::Insert((*new, i), endpoint.clone());
                                    if changes.send(change).await.is_err() {
                                        return;
                                    }
                                }
                            }
                            Err(e) => tracing::warn!(host = %host, address = %new, error = %e, "address skipped"),
                        }
                    }
                    current = fresh;
                }
                // A failed or empty lookup keeps the addresses known: a
                // resolver's bad moment does not take every replica away.
                Ok(_) => tracing::warn!(host = %host, "the name resolved to no address; keeping the last ones"),
                Err(e) => tracing::warn!(host = %host, error = %e, "resolving failed; keeping the last addresses"),
            }
            tokio::time::sleep(every).await;
        }
    });
    Ok(channel)
}
