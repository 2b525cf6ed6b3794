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

use axum::extract::{Request, State as Extract};
use axum::middleware::Next;
use axum::response::Response;
use http::{HeaderMap, StatusCode, header};

/// The text of every refusal.
pub const REFUSAL: &str = "missing or invalid credentials: send the header 'authorization: Bearer <token>' with the server's token";

/// Whether `headers` carry the token, compared in constant time.
pub fn authorized(headers: &HeaderMap, token: &str) -> bool {
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
pub const OPEN_GRPC: [&str; 2] = [
    "/grpc.health.v1.Health/Check",
    "/grpc.health.v1.Health/Watch",
];

/// The REST paths reachable without the token.
pub const OPEN_REST: [&str; 2] = ["/v2/health/live", "/v2/health/ready"];

/// A tower layer refusing gRPC calls without the token (health excepted).
#[derive(Clone, Debug)]
pub struct GrpcAuth<S> {
    inner: S,
    token: Option<Arc<str>>,
}

impl<S> GrpcAuth<S> {
    /// Wraps `inner`; `None` lets everything through.
    pub fn new(inner: S, token: Option<Arc<str>>) -> GrpcAuth<S> {
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

/// The REST middleware: 401 with the protocol's error body.
pub async fn rest(Extract(token): Extract<Option<Arc<str>>>, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    match &token {
        Some(token) if !OPEN_REST.contains(&path) && !authorized(req.headers(), token) => {
            let mut refusal = crate::rest::error_response(path, StatusCode::UNAUTHORIZED, REFUSAL);
            refusal.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                http::HeaderValue::from_static("Bearer"),
            );
            refusal
        }
        _ => next.run(req).await,
    }
}
