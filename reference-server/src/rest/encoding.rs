//! `Content-Encoding` on REST requests.
//!
//! A body in `gzip` or `deflate` is inflated as it is read (by
//! tower-http's request decompression), and what it inflates to counts
//! against the message limit: a body that inflates past it is refused
//! while inflating, with no more memory than the limit. The binary tensor
//! extension's `Inference-Header-Content-Length` counts the inflated body.
//! Any other encoding, or several at once, is refused with 415 before a
//! byte of the body is read, on every route.

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use serving_proto::compression::Encoding;
use serving_proto::text::quote;

/// The codings request bodies may use, as `Accept-Encoding` lists them.
pub(crate) const ACCEPTED: &str = "gzip, deflate, identity";

/// What a request's `Content-Encoding` asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Coding {
    /// No encoding (none given, or `identity`).
    Identity,
    /// One the server inflates.
    Known(Encoding),
    /// One it does not, or several: the refusal's text.
    Refused(String),
}

/// The coding of a request body (every header line and every
/// comma-separated coding counts; `identity` entries are no coding).
pub(crate) fn coding(headers: &HeaderMap) -> Coding {
    let mut found: Vec<String> = Vec::new();
    for value in headers.get_all(header::CONTENT_ENCODING) {
        let Ok(text) = value.to_str() else {
            return Coding::Refused(format!(
                "Content-Encoding '{}' is not supported: send the body as gzip, deflate or uncompressed (identity)",
                quote(&String::from_utf8_lossy(value.as_bytes()))
            ));
        };
        for c in text.split(',').map(str::trim) {
            if !c.is_empty() && !c.eq_ignore_ascii_case("identity") {
                found.push(c.to_owned());
            }
        }
    }
    match found.as_slice() {
        [] => Coding::Identity,
        [one] => match Encoding::from_name(one) {
            Some(e) => Coding::Known(e),
            None => Coding::Refused(format!(
                "Content-Encoding '{}' is not supported: send the body as gzip, deflate or uncompressed (identity)",
                quote(one)
            )),
        },
        several => Coding::Refused(format!(
            "Content-Encoding '{}' applies {} codings; send the body in one of gzip, deflate or uncompressed (identity)",
            quote(&several.join(", ")),
            several.len()
        )),
    }
}

/// Refuses a request body in an encoding the server does not inflate, and
/// names a known one as the decompression layer expects it.
pub(crate) async fn supported_only(mut req: Request, next: Next) -> Response {
    match coding(req.headers()) {
        Coding::Identity => {
            req.headers_mut().remove(header::CONTENT_ENCODING);
            next.run(req).await
        }
        Coding::Known(e) => {
            req.headers_mut()
                .insert(header::CONTENT_ENCODING, HeaderValue::from_static(e.name()));
            next.run(req).await
        }
        Coding::Refused(text) => {
            let mut refusal =
                super::error_response(req.uri().path(), StatusCode::UNSUPPORTED_MEDIA_TYPE, &text);
            refusal
                .headers_mut()
                .insert(header::ACCEPT_ENCODING, HeaderValue::from_static(ACCEPTED));
            refusal
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gzip_and_deflate_pass_others_are_refused() {
        let mut h = HeaderMap::new();
        assert_eq!(coding(&h), Coding::Identity);
        h.insert(header::CONTENT_ENCODING, "Identity".parse().unwrap());
        assert_eq!(coding(&h), Coding::Identity);
        h.insert(header::CONTENT_ENCODING, "GZIP".parse().unwrap());
        assert_eq!(coding(&h), Coding::Known(Encoding::Gzip));
        h.insert(
            header::CONTENT_ENCODING,
            "identity, deflate".parse().unwrap(),
        );
        assert_eq!(coding(&h), Coding::Known(Encoding::Deflate));
        h.insert(header::CONTENT_ENCODING, "br".parse().unwrap());
        assert!(matches!(coding(&h), Coding::Refused(t) if t.contains("'br'")));
        h.insert(header::CONTENT_ENCODING, "gzip, gzip".parse().unwrap());
        assert!(matches!(coding(&h), Coding::Refused(t) if t.contains("2 codings")));
    }
}
