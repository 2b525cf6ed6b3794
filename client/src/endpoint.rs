//! Endpoint URLs: the scheme picks the transport.
//!
//! | URL | transport |
//! |---|---|
//! | `grpc://host:port` | gRPC over plaintext HTTP/2 |
//! | `grpcs://host:port` | gRPC over TLS |
//! | `http://host:port` | REST over HTTP |
//! | `https://host:port` | REST over HTTPS |
//! | `unix:/path/to/socket` | gRPC over a Unix domain socket |

use crate::Error;

/// How an endpoint is reached.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Target {
    /// gRPC to `host:port`, with or without TLS.
    Grpc {
        /// `host:port`.
        authority: String,
        /// The host, for TLS names.
        host: String,
        /// Whether TLS is used.
        tls: bool,
    },
    /// gRPC over a Unix domain socket.
    Unix {
        /// The socket path.
        path: String,
    },
    /// REST to `host:port`, with or without TLS.
    Rest {
        /// `host:port`.
        authority: String,
        /// Whether TLS is used.
        tls: bool,
    },
}

/// Parses an endpoint URL.
pub fn parse(url: &str) -> Result<Target, Error> {
    if let Some(path) = url.strip_prefix("unix:") {
        let path = path.strip_prefix("//").unwrap_or(path);
        if path.is_empty() {
            return Err(Error::Config(format!(
                "endpoint '{url}': empty unix socket path"
            )));
        }
        return Ok(Target::Unix {
            path: path.to_owned(),
        });
    }
    let uri: http::Uri = url
        .parse()
        .map_err(|e| Error::Config(format!("endpoint '{url}': {e}")))?;
    let authority = uri
        .authority()
        .ok_or_else(|| Error::Config(format!("endpoint '{url}' has no host:port")))?;
    if uri.path() != "/" && !uri.path().is_empty() {
        return Err(Error::Config(format!(
            "endpoint '{url}': a path is not supported; give scheme://host:port"
        )));
    }
    let host = authority.host().to_owned();
    let scheme = uri.scheme_str().unwrap_or_default().to_ascii_lowercase();
    let with_port = |default: u16| match authority.port_u16() {
        Some(_) => authority.as_str().to_owned(),
        None => format!("{}:{default}", authority.as_str()),
    };
    match scheme.as_str() {
        "grpc" => Ok(Target::Grpc {
            authority: with_port(80),
            host,
            tls: false,
        }),
        "grpcs" => Ok(Target::Grpc {
            authority: with_port(443),
            host,
            tls: true,
        }),
        "http" => Ok(Target::Rest {
            authority: with_port(80),
            tls: false,
        }),
        "https" => Ok(Target::Rest {
            authority: with_port(443),
            tls: true,
        }),
        other => Err(Error::Config(format!(
            "endpoint '{url}': unknown scheme '{other}'; use grpc://, grpcs://, http://, https:// or unix:"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemes_pick_transports() {
        assert_eq!(
            parse("grpc://127.0.0.1:5500").unwrap(),
            Target::Grpc {
                authority: "127.0.0.1:5500".into(),
                host: "127.0.0.1".into(),
                tls: false
            }
        );
        assert_eq!(
            parse("grpcs://models.example").unwrap(),
            Target::Grpc {
                authority: "models.example:443".into(),
                host: "models.example".into(),
                tls: true
            }
        );
        assert_eq!(
            parse("http://localhost:1500").unwrap(),
            Target::Rest {
                authority: "localhost:1500".into(),
                tls: false
            }
        );
        assert_eq!(
            parse("https://h:8443").unwrap(),
            Target::Rest {
                authority: "h:8443".into(),
                tls: true
            }
        );
        assert_eq!(
            parse("unix:/tmp/s.sock").unwrap(),
            Target::Unix {
                path: "/tmp/s.sock".into()
            }
        );
        assert_eq!(
            parse("unix:///tmp/s.sock").unwrap(),
            Target::Unix {
                path: "/tmp/s.sock".into()
            }
        );
        assert!(parse("ftp://h:1").is_err());
        assert!(parse("http://h:1/v2").is_err());
        assert!(parse("unix:").is_err());
    }
}
