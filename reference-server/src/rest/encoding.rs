//! `Content-Encoding` on REST requests.
//!
//! The server reads request bodies as they are sent: a body in any
//! encoding but `identity` is refused with 415 before a byte of it is read,
//! on every route, instead of being parsed as if it were plain (a gzip body
//! used to get `the JSON header is invalid`, and `Inference-Header-Content-Length`
//! was checked against the compressed length).

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use http::{HeaderMap, StatusCode, header};
use serving_proto::text::quote;

/// The first `Content-Encoding` other than `identity`, if any (every
/// header line and every comma-separated coding counts).
pub(crate) fn unsupported(headers: &HeaderMap) -> Option<String> {
    for value in headers.get_all(header::CONTENT_ENCODING) {
        let Ok(text) = value.to_str() else {
            return Some(String::from_utf8_lossy(value.as_bytes()).into_owned());
        };
        for coding in text.split(',').map(str::trim) {
            if !coding.is_empty() && !coding.eq_ignore_ascii_case("identity") {
                return Some(coding.to_owned());
            }
        }
    }
    None
}

/// Refuses a request body in an encoding the server does not decode.
pub(crate) async fn identity_only(req: Request, next: Next) -> Response {
    match unsupported(req.headers()) {
        None => next.run(req).await,
        Some(coding) => {
            let mut refusal = super::error_response(
                req.uri().path(),
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                &format!(
                    "Content-Encoding '{}' is not supported: send the body uncompressed (identity)",
                    quote(&coding)
                ),
            );
            refusal.headers_mut().insert(
                header::ACCEPT_ENCODING,
                http::HeaderValue::from_static("identity"),
            );
            refusal
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_identity_passes() {
        let mut h = HeaderMap::new();
        assert_eq!(unsupported(&h), None);
        h.insert(header::CONTENT_ENCODING, "Identity".parse().unwrap());
        assert_eq!(unsupported(&h), None);
        h.append(header::CONTENT_ENCODING, "identity, br".parse().unwrap());
        assert_eq!(unsupported(&h).as_deref(), Some("br"));
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_ENCODING, "gzip".parse().unwrap());
        assert_eq!(unsupported(&h).as_deref(), Some("gzip"));
    }
}
