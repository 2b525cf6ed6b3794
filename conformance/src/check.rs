//! What a check is, what it returns, and the suite it runs in.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::time::Duration;

use serving_client::{Client, Error, Tensor};

use crate::call::{self, Failed};
use crate::target::{Family, Target};

/// The result of one check on one target.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// The server kept the protocol; what was verified.
    Pass(String),
    /// It did not; what differed.
    Fail(String),
    /// The check does not apply to this target, and why.
    NotApplicable(String),
}

impl Outcome {
    /// `pass`, `fail` or `n/a`.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Pass(_) => "pass",
            Outcome::Fail(_) => "fail",
            Outcome::NotApplicable(_) => "n/a",
        }
    }

    /// The detail or reason.
    pub fn detail(&self) -> &str {
        match self {
            Outcome::Pass(s) | Outcome::Fail(s) | Outcome::NotApplicable(s) => s,
        }
    }
}

impl From<Result<String, String>> for Outcome {
    fn from(r: Result<String, String>) -> Outcome {
        match r {
            Ok(s) => Outcome::Pass(s),
            Err(s) => Outcome::Fail(s),
        }
    }
}

/// A boxed check future.
pub type CheckFuture<'a> = Pin<Box<dyn Future<Output = Outcome> + Send + 'a>>;

/// One named check.
#[derive(Clone, Copy)]
pub struct Check {
    /// A stable name: `errors.unknown_servable`.
    pub name: &'static str,
    /// The families it applies to.
    pub families: &'static [Family],
    /// What it sends and expects, in one line.
    pub summary: &'static str,
    /// Where the expectation comes from.
    pub spec: &'static str,
    /// Runs it on one target.
    pub run: for<'a> fn(&'a Suite, &'a Target) -> CheckFuture<'a>,
}

impl std::fmt::Debug for Check {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Check").field("name", &self.name).finish()
    }
}

/// Both families.
pub const BOTH: &[Family] = &[Family::MindSpore, Family::OpenInference];
/// MindSpore only.
pub const MS: &[Family] = &[Family::MindSpore];
/// Open Inference only.
pub const OIP: &[Family] = &[Family::OpenInference];

/// What a suite knows about the servers it checks.
pub struct Suite {
    /// The targets.
    pub targets: Vec<Target>,
    /// The targets' message limit in bytes.
    pub max_msg_bytes: u64,
    /// A PEM CA for TLS targets.
    pub ca: Option<Vec<u8>>,
    /// The server the suite started, when it started one.
    pub control: Option<crate::control::Control>,
    /// Property-based cases per round-trip property.
    pub cases: u32,
}

impl std::fmt::Debug for Suite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Suite")
            .field("targets", &self.targets)
            .field("controlled", &self.control.is_some())
            .finish()
    }
}

impl Suite {
    /// A client builder for `target`: its protocol, the CA, a 60 s timeout
    /// and no retries (a check wants the first answer).
    pub fn builder(&self, target: &Target) -> serving_client::ClientBuilder {
        let mut b = Client::builder()
            .endpoint(target.url())
            .protocol(target.family.protocol())
            .timeout(Duration::from_secs(60))
            .retries(0);
        if let Some(ca) = &self.ca {
            b = b.ca_certificate_pem(ca.clone());
        }
        b
    }

    /// A client for `target`.
    pub fn client(&self, target: &Target) -> Result<Client, String> {
        self.builder(target)
            .build()
            .map_err(|e| format!("cannot build a client: {e}"))
    }

    /// A REST client for hand-made requests.
    pub fn http(&self) -> Result<reqwest::Client, String> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut b = reqwest::Client::builder().timeout(Duration::from_secs(120));
        if let Some(ca) = &self.ca {
            let cert = reqwest::Certificate::from_pem(ca)
                .map_err(|e| format!("SERVING_TARGET_CA: {e}"))?;
            b = b.add_root_certificate(cert);
        }
        b.build().map_err(|e| e.to_string())
    }

    /// A gRPC channel for hand-made requests.
    pub async fn channel(&self, target: &Target) -> Result<tonic::transport::Channel, String> {
        let scheme = if target.tls { "https" } else { "http" };
        let mut ep =
            tonic::transport::Endpoint::from_shared(format!("{scheme}://{}", target.authority))
                .map_err(|e| e.to_string())?
                .timeout(Duration::from_secs(120));
        if target.tls {
            let mut tls = tonic::transport::ClientTlsConfig::new();
            if let Some(ca) = &self.ca {
                tls = tls.ca_certificate(tonic::transport::Certificate::from_pem(ca));
            }
            ep = ep.tls_config(tls).map_err(|e| e.to_string())?;
        }
        ep.connect()
            .await
            .map_err(|e| format!("cannot connect to {target}: {e}"))
    }

    /// After a negative check: the server must still be live and answer
    /// the `add` model correctly.
    pub async fn still_correct(&self, target: &Target) -> Result<(), String> {
        let client = self.client(target)?;
        let x1 = Tensor::from_vec(&[2, 2], vec![1f32, 2.0, 3.0, 4.0]).expect("4 values");
        let x2 = Tensor::from_vec(&[2, 2], vec![0.5f32; 4]).expect("4 values");
        let inputs = [("x1".to_string(), x1), ("x2".to_string(), x2)];
        let outputs =
            match call::run(&client, target.family, "add", "add_common", &inputs, None).await {
                Ok(outputs) => outputs,
                Err(Failed::Call(e)) => return Err(format!("afterwards, add failed: {e}")),
                Err(Failed::Instance(e)) => {
                    return Err(format!("afterwards, add failed: {}", e.message));
                }
                Err(Failed::NoResult) => return Err("afterwards, add returned no result".into()),
            };
        let y = call::output(outputs, "y")
            .ok_or("afterwards, add returned no y")?
            .to_f64_vec()
            .map_err(|e| e.to_string())?;
        if y != [1.5, 2.5, 3.5, 4.5] {
            return Err(format!(
                "afterwards, add returned {y:?}, not [1.5, 2.5, 3.5, 4.5]"
            ));
        }
        Ok(())
    }

    /// The executable that serves the conformance repository as a child
    /// process (`conformance serve`), when the suite controls servers.
    pub fn server_exe(&self) -> Option<&PathBuf> {
        self.control.as_ref().and_then(|c| c.server_exe.as_ref())
    }
}

/// Formats an error for a report.
pub fn describe(e: &Error) -> String {
    format!("{e} [{}]", variant(e))
}

/// The variant name of a client error.
pub fn variant(e: &Error) -> &'static str {
    match e {
        Error::MessageTooLarge { .. } => "MessageTooLarge",
        Error::Unavailable { .. } => "Unavailable",
        Error::DeadlineExceeded { .. } => "DeadlineExceeded",
        Error::NotFound { .. } => "NotFound",
        Error::InvalidArgument { .. } => "InvalidArgument",
        Error::Unauthenticated { .. } => "Unauthenticated",
        Error::Servable(_) => "Servable",
        Error::Server { .. } => "Server",
        Error::Transport { .. } => "Transport",
        Error::Protocol { .. } => "Protocol",
        Error::Request(_) => "Request",
        Error::Config(_) => "Config",
        _ => "other",
    }
}
