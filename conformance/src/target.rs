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
    /// A plaintext target of `family` over `transport` at `url`
    /// (`grpc://host:port` or `http://host:port`; the scheme is dropped).
    pub fn plain(family: Family, transport: Transport, url: &str) -> Target {
        Target {
            family,
            transport,
            tls: false,
            authority: url
                .trim_start_matches("grpc://")
                .trim_start_matches("http://")
                .to_owned(),
        }
    }

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
    /// A limit that is not a number or `none`.
    #[error("{name}='{value}' is not a positive number of MiB or 'none'")]
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

/// The message limits a suite checks, in bytes, per transport and family;
/// `None` where the target declares none (the limit checks are then n/a).
///
/// MindSpore Serving has one limit for both transports (§9); the Open
/// Inference Protocol names none for REST, so an OIP REST limit is checked
/// only where one is declared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Limits {
    /// OIP gRPC (and MindSpore gRPC where [`Limits::ms_grpc`] says
    /// nothing more).
    pub grpc: Option<u64>,
    /// MindSpore gRPC when no limit is declared: its `max_msg_mb_size`
    /// default, 100 MiB. (The Open Inference Protocol names no gRPC limit:
    /// Triton's is 2 GiB, gRPC's own default 4 MiB; an undeclared one is
    /// not checked.)
    pub ms_grpc: Option<u64>,
    /// MindSpore REST.
    pub ms_http: Option<u64>,
    /// OIP REST.
    pub oip_http: Option<u64>,
}

impl Limits {
    /// The same limit everywhere (the reference server's).
    pub fn all(bytes: u64) -> Limits {
        Limits {
            grpc: Some(bytes),
            ms_grpc: Some(bytes),
            ms_http: Some(bytes),
            oip_http: Some(bytes),
        }
    }

    /// The limit of `target`, if it declares one.
    pub fn of(&self, target: &Target) -> Option<u64> {
        match (target.transport, target.family) {
            (Transport::Grpc, Family::OpenInference) => self.grpc,
            (Transport::Grpc, Family::MindSpore) => self.grpc.or(self.ms_grpc),
            (Transport::Http, Family::MindSpore) => self.ms_http,
            (Transport::Http, Family::OpenInference) => self.oip_http,
        }
    }
}

/// A limit as the environment or a profile writes it: a positive number
/// of MiB, or `none`.
pub fn parse_limit_mb(name: &'static str, value: &str) -> Result<Option<u64>, TargetError> {
    let v = value.trim();
    if v.eq_ignore_ascii_case("none") {
        return Ok(None);
    }
    v.parse::<u64>()
        .ok()
        .filter(|&n| n > 0)
        .map(|mb| Some(mb << 20))
        .ok_or(TargetError::Number {
            name,
            value: value.to_owned(),
        })
}

/// What the environment says about the servers to check.
#[derive(Clone, Debug, Default)]
pub struct Environment {
    /// `SERVING_TARGET`, parsed; empty: start the reference server.
    pub targets: Vec<Target>,
    /// The limits: `SERVING_TARGET_MAX_MSG_MB` (gRPC and MindSpore REST;
    /// MindSpore's default 100 MiB for MindSpore targets, none declared
    /// for OIP gRPC), `SERVING_TARGET_MAX_MSG_MB_GRPC` and
    /// `SERVING_TARGET_MAX_MSG_MB_HTTP` (both REST families), each a
    /// number of MiB or `none`.
    pub limits: Limits,
    /// `SERVING_TARGET_CA`: a PEM CA for `grpcs`/`https` targets.
    pub ca: Option<PathBuf>,
}

impl Environment {
    /// Reads `SERVING_TARGET`, the limits and `SERVING_TARGET_CA`.
    pub fn from_env() -> Result<Environment, TargetError> {
        let targets = match std::env::var("SERVING_TARGET") {
            Ok(v) if !v.trim().is_empty() => parse(&v)?,
            _ => Vec::new(),
        };
        let var = |name: &'static str| -> Result<Option<Option<u64>>, TargetError> {
            match std::env::var(name) {
                Ok(v) => parse_limit_mb(name, &v).map(Some),
                Err(_) => Ok(None),
            }
        };
        const MINDSPORE_DEFAULT: Option<u64> = Some(100 << 20);
        let both = var("SERVING_TARGET_MAX_MSG_MB")?;
        let http = var("SERVING_TARGET_MAX_MSG_MB_HTTP")?;
        let grpc = var("SERVING_TARGET_MAX_MSG_MB_GRPC")?.or(both);
        let limits = Limits {
            grpc: grpc.flatten(),
            ms_grpc: grpc.unwrap_or(MINDSPORE_DEFAULT),
            ms_http: http.or(both).unwrap_or(MINDSPORE_DEFAULT),
            oip_http: http.flatten(),
        };
        let ca = std::env::var_os("SERVING_TARGET_CA").map(PathBuf::from);
        Ok(Environment {
            targets,
            limits,
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
        assert_eq!(parse_limit_mb("X", "4").unwrap(), Some(4 << 20));
        assert_eq!(parse_limit_mb("X", "None").unwrap(), None);
        assert!(parse_limit_mb("X", "0").is_err());
        assert!(parse_limit_mb("X", "4MB").is_err());
        let limits = Limits {
            grpc: Some(1),
            ms_grpc: Some(3),
            ms_http: Some(2),
            oip_http: None,
        };
        assert_eq!(limits.of(&t[0]), Some(1));
        assert_eq!(limits.of(&t[1]), Some(2));
        // No OIP gRPC limit declared: none is assumed (MindSpore's default
        // stays MindSpore's).
        let undeclared = Limits {
            grpc: None,
            ..limits
        };
        assert_eq!(undeclared.of(&t[0]), None);
        let ms_grpc = parse("ms+grpc://h:1").unwrap();
        assert_eq!(undeclared.of(&ms_grpc[0]), Some(3));
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
