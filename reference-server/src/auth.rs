//! Bearer-token authentication on both ports (`--auth-token`): a request
//! without `authorization: Bearer <token>` gets UNAUTHENTICATED on gRPC and
//! 401 on REST. Health checks stay open for probes.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::extract::{Request, State as Extract};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
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
            && !req.uri().path().starts_with("/grpc.health.v1.Health/")
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
    let open = path.starts_with("/v2/health/");
    match &token {
        Some(token) if !open && !authorized(req.headers(), token) => {
            let body = if path.starts_with("/v2") {
                serving_proto::oip::rest::encode_error(REFUSAL)
            } else {
                serving_proto::mindspore::rest::encode_error(REFUSAL)
            };
            (
                StatusCode::UNAUTHORIZED,
                [
                    (header::CONTENT_TYPE, "application/json"),
                    (header::WWW_AUTHENTICATE, "Bearer"),
                ],
                Body::from(body),
            )
                .into_response()
        }
        _ => next.run(req).await,
    }
}
