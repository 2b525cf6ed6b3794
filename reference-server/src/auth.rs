//! Bearer-token authentication on both ports (`--auth-token`): a request
//! without `authorization: Bearer <token>` gets UNAUTHENTICATED on gRPC and
//! 401 on REST, whatever its path, before any routing. Only the documented
//! health checks stay open for probes, matched exactly: the two RPCs of
//! `grpc.health.v1.Health` and `GET /v2/health/live` and `/v2/health/ready`.
//! A prefix rule (everything under `/v2/health/`) let `..`, `%2e%2e` and
//! trailing segments through to a servable.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{HeaderMap, header};

/// The text of every refusal.
pub(crate) const REFUSAL: &str = "missing or invalid credentials: send the header 'authorization: Bearer <token>' with the server's token";

/// Whether `headers` carry the token, compared in constant time.
pub(crate) fn authorized(headers: &HeaderMap, token: &str) -> bool {
    let Some(given) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    let (a, b) = (given.as_bytes(), token.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The gRPC paths reachable without the token.
pub(crate) const OPEN_GRPC: [&str; 2] = [
    "/grpc.health.v1.Health/Check",
    "/grpc.health.v1.Health/Watch",
];

/// The REST paths reachable without the token.
pub(crate) const OPEN_REST: [&str; 2] = ["/v2/health/live", "/v2/health/ready"];

/// A tower layer refusing gRPC calls without the token (health excepted).
#[derive(Clone, Debug)]
pub(crate) struct GrpcAuth<S> {
    inner: S,
    token: Option<Arc<str>>,
}

impl<S> GrpcAuth<S> {
    /// Wraps `inner`; `None` lets everything through.
    pub(crate) fn new(inner: S, token: Option<Arc<str>>) -> GrpcAuth<S> {
        GrpcAuth { inner, token }
    }
}

type BoxFuture<T> = Pin<Box<dyn std::future::Future<Output = T> + Send>>;

impl<S, B, RB> tower::Service<http::Request<B>> for GrpcAuth<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>> + Send,
    S::Future: Send + 'static,
    RB: Default + Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<RB>;
    type Error = S::Error;
    type Future = BoxFuture<Result<http::Response<RB>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if let Some(token) = &self.token
            && !OPEN_GRPC.contains(&req.uri().path())
            && !authorized(req.headers(), token)
        {
            return Box::pin(async { Ok(tonic::Status::unauthenticated(REFUSAL).into_http()) });
        }
        Box::pin(self.inner.call(req))
    }
}

/// A tower layer refusing REST requests without the token (the two health
/// checks excepted) before the router sees them: every refused request,
/// whatever its path and method, gets the same 401 (no `allow` header, no
/// hint of which routes exist).
#[derive(Clone, Debug)]
pub(crate) struct RestAuth<S> {
    inner: S,
    token: Option<Arc<str>>,
}

impl<S> RestAuth<S> {
    /// Wraps `inner`; `None` lets everything through.
    pub(crate) fn new(inner: S, token: Option<Arc<str>>) -> RestAuth<S> {
        RestAuth { inner, token }
    }
}

impl<S, B> tower::Service<http::Request<B>> for RestAuth<S>
where
    S: tower::Service<http::Request<B>, Response = axum::response::Response>,
{
    type Response = axum::response::Response;
    type Error = S::Error;
    type Future = futures_util::future::Either<
        std::future::Ready<Result<axum::response::Response, S::Error>>,
        S::Future,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if let Some(token) = &self.token
            && !OPEN_REST.contains(&req.uri().path())
            && !authorized(req.headers(), token)
        {
            let refusal = crate::rest::unauthenticated(req.uri().path());
            return futures_util::future::Either::Left(std::future::ready(Ok(refusal)));
        }
        futures_util::future::Either::Right(self.inner.call(req))
    }
}
