//! Which servers the suite runs against: `SERVING_TARGET` and friends.
//!
//! `SERVING_TARGET` is a comma-separated list of
//! `<family>+<transport>://host:port`, family `ms` (MindSpore Serving) or
//! `oip` (Open Inference Protocol), transport `grpc`, `grpcs`, `http` or
//! `https`: `oip+grpc://127.0.0.1:8001,oip+http://127.0.0.1:8000`.

use std::fmt;
use std::path::PathBuf;

use serving_client::Protocol;

/// A protocol family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Family {
    /// MindSpore Serving.
    MindSpore,
    /// The Open Inference Protocol (KServe v2).
    OpenInference,
}

impl Family {
    /// The prefix in `SERVING_TARGET`.
    pub fn prefix(self) -> &'static str {
        match self {
            Family::MindSpore => "ms",
            Family::OpenInference => "oip",
        }
    }

    /// The client's protocol.
    pub fn protocol(self) -> Protocol {
        match self {
            Family::MindSpore => Protocol::MindSpore,
            Family::OpenInference => Protocol::OpenInference,
        }
    }
}

/// A transport.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Transport {
    /// gRPC.
    Grpc,
    /// REST over HTTP/1.1.
    Http,
}

/// One endpoint to check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// The protocol family.
    pub family: Family,
    /// The transport.
    pub transport: Transport,
    /// Whether TLS is used.
    pub tls: bool,
    /// `host:port`.
    pub authority: String,
}

impl Target {
    /// The URL the client takes: `grpc://`, `grpcs://`, `http://`, `https://`.
    pub fn url(&self) -> String {
        let scheme = match (self.transport, self.tls) {
            (Transport::Grpc, false) => "grpc",
            (Transport::Grpc, true) => "grpcs",
            (Transport::Http, false) => "http",
            (Transport::Http, true) => "https",
        };
        format!("{scheme}://{}", self.authority)
    }

    /// The base URL of REST requests made by hand.
    pub fn http_base(&self) -> String {
        format!(
            "{}://{}",
            if self.tls { "https" } else { "http" },
            self.authority
        )
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}+{}", self.family.prefix(), self.url())
    }
}

/// A malformed `SERVING_TARGET`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TargetError {
    /// An entry that is not `<family>+<transport>://host:port`.
    #[error(
        "SERVING_TARGET entry '{0}' is not <family>+<transport>://host:port with family ms or oip and transport grpc, grpcs, http or https (example: oip+grpc://127.0.0.1:8001)"
    )]
    Entry(String),
    /// A variable that is not a number.
    #[error("{name}='{value}' is not a positive number of MiB")]
    Number {
        /// The variable.
        name: &'static str,
        /// Its value.
        value: String,
    },
}

/// Parses a `SERVING_TARGET` value.
pub fn parse(list: &str) -> Result<Vec<Target>, TargetError> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|entry| {
            let bad = || TargetError::Entry(entry.to_owned());
            let (family, rest) = entry.split_once('+').ok_or_else(bad)?;
            let (scheme, authority) = rest.split_once("://").ok_or_else(bad)?;
            let family = match family {
                "ms" => Family::MindSpore,
                "oip" => Family::OpenInference,
                _ => return Err(bad()),
            };
            let (transport, tls) = match scheme {
                "grpc" => (Transport::Grpc, false),
                "grpcs" => (Transport::Grpc, true),
                "http" => (Transport::Http, false),
                "https" => (Transport::Http, true),
                _ => return Err(bad()),
            };
            let authority = authority.trim_end_matches('/');
            if authority.is_empty() || authority.contains('/') || !authority.contains(':') {
                return Err(bad());
            }
            Ok(Target {
                family,
                transport,
                tls,
                authority: authority.to_owned(),
            })
        })
        .collect()
}

/// What the environment says about the servers to check.
#[derive(Clone, Debug, Default)]
pub struct Environment {
    /// `SERVING_TARGET`, parsed; empty: start the reference server.
    pub targets: Vec<Target>,
    /// `SERVING_TARGET_MAX_MSG_MB` (default 100).
    pub max_msg_mb: u64,
    /// `SERVING_TARGET_CA`: a PEM CA for `grpcs`/`https` targets.
    pub ca: Option<PathBuf>,
}

impl Environment {
    /// Reads `SERVING_TARGET`, `SERVING_TARGET_MAX_MSG_MB` and
    /// `SERVING_TARGET_CA`.
    pub fn from_env() -> Result<Environment, TargetError> {
        let targets = match std::env::var("SERVING_TARGET") {
            Ok(v) if !v.trim().is_empty() => parse(&v)?,
            _ => Vec::new(),
        };
        let max_msg_mb = match std::env::var("SERVING_TARGET_MAX_MSG_MB") {
            Ok(v) => v
                .trim()
                .parse()
                .ok()
                .filter(|&n: &u64| n > 0)
                .ok_or(TargetError::Number {
                    name: "SERVING_TARGET_MAX_MSG_MB",
                    value: v,
                })?,
            Err(_) => 100,
        };
        let ca = std::env::var_os("SERVING_TARGET_CA").map(PathBuf::from);
        Ok(Environment {
            targets,
            max_msg_mb,
            ca,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_lists() {
        let t = parse("oip+grpc://127.0.0.1:8001, ms+https://h:1500").unwrap();
        assert_eq!(
            t[0],
            Target {
                family: Family::OpenInference,
                transport: Transport::Grpc,
                tls: false,
                authority: "127.0.0.1:8001".into()
            }
        );
        assert_eq!(t[1].url(), "https://h:1500");
        assert_eq!(t[1].to_string(), "ms+https://h:1500");
        for bad in [
            "grpc://h:1",
            "x+grpc://h:1",
            "ms+ftp://h:1",
            "ms+grpc://",
            "ms+grpc://h:1/v2",
            "ms+grpc://h",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
