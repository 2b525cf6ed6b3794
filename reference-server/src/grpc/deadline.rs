//! gRPC deadlines: a request whose `grpc-timeout` passes is dropped and
//! answered with DEADLINE_EXCEEDED; one that arrives already expired never
//! runs.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};

/// Parses a `grpc-timeout` value: up to 8 digits and a unit
/// (`H`, `M`, `S`, `m`, `u`, `n`).
pub(crate) fn parse_timeout(value: &str) -> Option<Duration> {
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// The deadline a request's `grpc-timeout` sets, from now.
pub(crate) fn deadline_of(metadata: &tonic::metadata::MetadataMap) -> Option<std::time::Instant> {
    let timeout = parse_timeout(metadata.get("grpc-timeout")?.to_str().ok()?)?;
    std::time::Instant::now().checked_add(timeout)
}

/// A tower layer applying each request's `grpc-timeout`.
#[derive(Clone, Debug)]
pub(crate) struct Deadline<S> {
    inner: S,
}

impl<S> Deadline<S> {
    /// Wraps `inner`.
    pub(crate) fn new(inner: S) -> Deadline<S> {
        Deadline { inner }
    }
}

type BoxFuture<T> = Pin<Box<dyn std::future::Future<Output = T> + Send>>;

impl<S, B, RB> tower::Service<Request<B>> for Deadline<S>
where
    S: tower::Service<Request<B>, Response = Response<RB>> + Clone + Send + 'static,
    S::Future: Send,
    B: Send + 'static,
    RB: Default + Send,
{
    type Response = Response<RB>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Response<RB>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let timeout = req
            .headers()
            .get("grpc-timeout")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_timeout);
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            let Some(timeout) = timeout else {
                return inner.call(req).await;
            };
            let exceeded = || {
                tonic::Status::deadline_exceeded(format!(
                    "Deadline Exceeded: the request's grpc-timeout of {timeout:?} passed before it completed"
                ))
                .into_http()
            };
            if timeout.is_zero() {
                return Ok(exceeded());
            }
            match tokio::time::timeout(timeout, inner.call(req)).await {
                Ok(result) => result,
                Err(_) => Ok(exceeded()),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_parse_per_the_grpc_spec() {
        assert_eq!(parse_timeout("100m"), Some(Duration::from_millis(100)));
        assert_eq!(parse_timeout("2S"), Some(Duration::from_secs(2)));
        assert_eq!(parse_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_timeout("5n"), Some(Duration::from_nanos(5)));
        assert_eq!(parse_timeout("123456789S"), None);
        assert_eq!(parse_timeout("S"), None);
        assert_eq!(parse_timeout("10x"), None);
        assert_eq!(parse_timeout(""), None);
    }
}
