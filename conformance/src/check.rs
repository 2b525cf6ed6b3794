//! What a check is, what it returns, and the suite it runs in.

use std::future::Future;
#[cfg(feature = "reference")]
use std::path::PathBuf;
use std::pin::Pin;
use std::time::Duration;

use serving_client::{Client, Error, NamedTensors, Tensor};
use serving_proto::DataType;

use std::collections::HashMap;
use std::sync::Arc;

use crate::call::{self, Failed};
use crate::discovery::{Capabilities, IdentityModel, Pair};
use crate::profile::{Profile, Role};
use crate::target::{Family, Limits, Target};

/// The result of one check on one target.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// The server kept the protocol; what was verified.
    Pass(String),
    /// It did not; what differed.
    Fail(String),
    /// It kept every "must" but not a "should" or "may" of the spec: what
    /// differed (a warning, not a failure).
    Warn(String),
    /// The check does not apply to this target, and why.
    NotApplicable(String),
}

impl Outcome {
    /// `pass`, `fail` or `n/a`.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Pass(_) => "pass",
            Outcome::Fail(_) => "fail",
            Outcome::Warn(_) => "warn",
            Outcome::NotApplicable(_) => "n/a",
        }
    }

    /// The detail or reason.
    pub fn detail(&self) -> &str {
        match self {
            Outcome::Pass(s) | Outcome::Fail(s) | Outcome::Warn(s) | Outcome::NotApplicable(s) => s,
        }
    }
}

/// The failing cases of a check that runs many: each one kept, the first
/// [`Cases::SHOWN`] of them printed, and how many there were.
#[derive(Debug, Default)]
pub struct Cases {
    /// How many cases ran.
    pub ran: usize,
    failed: Vec<String>,
}

impl Cases {
    /// How many failing cases a report prints.
    pub const SHOWN: usize = 12;

    /// Records one case: `Err` is its failure (inputs, expected, got).
    pub fn case(&mut self, result: Result<(), String>) {
        self.ran += 1;
        if let Err(e) = result {
            self.failed.push(e);
        }
    }

    /// Records a failing case.
    pub fn fail(&mut self, what: impl Into<String>) {
        self.case(Err(what.into()));
    }

    /// Records a passing case.
    pub fn pass(&mut self) {
        self.case(Ok(()));
    }

    /// Whether every case so far passed.
    pub fn all_passed(&self) -> bool {
        self.failed.is_empty()
    }

    /// Pass with `passed` when every case passed; otherwise a failure
    /// listing the failing cases (capped).
    pub fn outcome(self, passed: impl Into<String>) -> Outcome {
        if self.failed.is_empty() {
            return Outcome::Pass(passed.into());
        }
        let n = self.failed.len();
        let mut text = format!("{n} of {} cases failed: ", self.ran);
        text.push_str(&self.failed[..n.min(Self::SHOWN)].join("; "));
        if n > Self::SHOWN {
            text.push_str(&format!("; and {} more", n - Self::SHOWN));
        }
        Outcome::Fail(text)
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
    /// The targets' message limits.
    pub limits: crate::target::Limits,
    /// A PEM CA for TLS targets.
    pub ca: Option<Vec<u8>>,
    /// The server the suite started, when it started one.
    #[cfg(feature = "reference")]
    pub control: Option<crate::control::Control>,
    /// Property-based cases per round-trip property.
    pub cases: u32,
    /// Which of the targets' models play the suite's roles, and limits.
    pub profile: Profile,
    /// What each target serves, asked once (OIP targets).
    pub discovered: tokio::sync::Mutex<HashMap<String, Arc<Capabilities>>>,
    /// Which servables each MindSpore target serves, asked once.
    pub ms_servables: tokio::sync::Mutex<HashMap<String, bool>>,
}

impl std::fmt::Debug for Suite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Suite")
            .field("targets", &self.targets)
            .field("controlled", &self.controlled())
            .finish()
    }
}

impl Suite {
    /// A suite of `targets` with these limits and no profile.
    pub fn new(targets: Vec<Target>, limits: Limits, cases: u32) -> Suite {
        Suite {
            targets,
            limits,
            ca: None,
            #[cfg(feature = "reference")]
            control: None,
            cases,
            profile: Profile::default(),
            discovered: Default::default(),
            ms_servables: Default::default(),
        }
    }

    /// What `target` serves (asked on first use; empty for MindSpore
    /// targets, which have no metadata to ask).
    pub async fn capabilities(&self, target: &Target) -> Arc<Capabilities> {
        let mut cache = self.discovered.lock().await;
        if let Some(c) = cache.get(&target.to_string()) {
            return c.clone();
        }
        let caps = match (target.family, self.client(target)) {
            (Family::OpenInference, Ok(client)) => {
                Arc::new(Capabilities::discover(&client, &self.profile).await)
            }
            _ => Arc::new(Capabilities::default()),
        };
        cache.insert(target.to_string(), caps.clone());
        caps
    }

    /// The target's model for `role`: the profile's, else the suite's
    /// default name where the target serves it (MindSpore: assumed), else,
    /// for an identity role, an identity-like model of that type the
    /// target serves. `Err` says why there is none (the check is n/a).
    pub async fn model(&self, target: &Target, role: Role) -> Result<String, String> {
        match self.profile.model(role) {
            Some("") => {
                return Err(format!("the profile says the target has no {role} model"));
            }
            Some(name) => return Ok(name.to_owned()),
            None => {}
        }
        if target.family == Family::MindSpore {
            // MindSpore Serving has no metadata to ask: a request to a
            // servable it lacks answers that it is not available.
            let name = role.key();
            return match self.ms_serves(target, &name).await {
                true => Ok(name),
                false => Err(format!(
                    "the target serves no servable {name} (it answers `servable is not available`); name one with --model {role}=NAME or in a profile"
                )),
            };
        }
        let caps = self.capabilities(target).await;
        if caps.serves(&role.key()) {
            return Ok(role.key());
        }
        if let Role::Identity(dtype) = role
            && let Some(m) = caps.identities(dtype).into_iter().next()
        {
            return Ok(m.name);
        }
        Err(format!(
            "the target serves no {role} model (none named {role}{}); name one with --model {role}=NAME or in a profile",
            if matches!(role, Role::Identity(_)) {
                " and no identity-like model of that type"
            } else {
                ""
            }
        ))
    }

    /// Whether a MindSpore target serves servable `name`: a request of one
    /// instance to it is not answered MindSpore Serving's
    /// `servable is not available` (the protocol's only way to tell).
    /// Asked once per target and servable.
    pub async fn ms_serves(&self, target: &Target, name: &str) -> bool {
        let key = format!("{target} {name}");
        if let Some(&known) = self.ms_servables.lock().await.get(&key) {
            return known;
        }
        let Ok(client) = self.client(target) else {
            return true;
        };
        // One scalar input (MindSpore's REST refuses an empty instance
        // before it looks for the servable). On gRPC the error is in the
        // reply; on REST it comes with a 404.
        let probe: NamedTensors = [("x".to_owned(), Tensor::scalar(0f32))].into();
        let served = !matches!(
            client.predict(name, "predict", &[probe]).await,
            Err(e) if e.to_string().contains("servable is not available")
        );
        self.ms_servables.lock().await.insert(key, served);
        served
    }

    /// The identity model for `dtype` and its inputs: from its metadata on
    /// OIP targets, the suite's own signature (`x0` `[]` .. `x3` rank 3)
    /// on MindSpore targets.
    pub async fn identity(
        &self,
        target: &Target,
        dtype: DataType,
    ) -> Result<IdentityModel, String> {
        let name = self.model(target, Role::Identity(dtype)).await?;
        let caps = self.capabilities(target).await;
        if target.family == Family::OpenInference
            && let Some(meta) = caps.models.get(&name)
        {
            return caps.identity(&name).ok_or_else(|| {
                format!("model {name} does not have an identity's signature: {meta:?}")
            });
        }
        if dtype == DataType::String {
            // MindSpore strings: one element per input (spec §2.4).
            return Ok(IdentityModel {
                name,
                dtype,
                pairs: vec![Pair {
                    input: "x".into(),
                    output: "y".into(),
                    dims: vec![1],
                }],
                max_rows: None,
            });
        }
        Ok(IdentityModel {
            name,
            dtype,
            pairs: (0..4)
                .map(|rank| Pair {
                    input: format!("x{rank}"),
                    output: format!("y{rank}"),
                    dims: vec![-1; rank],
                })
                .collect(),
            max_rows: None,
        })
    }

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
    /// the `add` model correctly (where the target has no add model: live,
    /// and its FP32 identity, if any, still an identity).
    pub async fn still_correct(&self, target: &Target) -> Result<(), String> {
        let client = self.client(target)?;
        let add = match self.model(target, Role::Add).await {
            Ok(add) => add,
            Err(_) => return self.still_live(&client, target).await,
        };
        let x1 = Tensor::from_vec(&[2, 2], vec![1f32, 2.0, 3.0, 4.0]).expect("4 values");
        let x2 = Tensor::from_vec(&[2, 2], vec![0.5f32; 4]).expect("4 values");
        let inputs = [("x1".to_string(), x1), ("x2".to_string(), x2)];
        let outputs =
            match call::run(&client, target.family, &add, "add_common", &inputs, None).await {
                Ok(outputs) => outputs,
                Err(Failed::Call(e)) => return Err(format!("afterwards, {add} failed: {e}")),
                Err(Failed::Instance(e)) => {
                    return Err(format!("afterwards, {add} failed: {}", e.message));
                }
                Err(Failed::NoResult) => {
                    return Err(format!("afterwards, {add} returned no result"));
                }
            };
        let y = call::output(outputs, "y")
            .ok_or_else(|| format!("afterwards, {add} returned no y"))?
            .to_f64_vec()
            .map_err(|e| e.to_string())?;
        if y != [1.5, 2.5, 3.5, 4.5] {
            return Err(format!(
                "afterwards, {add} returned {y:?}, not [1.5, 2.5, 3.5, 4.5]"
            ));
        }
        Ok(())
    }

    /// The liveness probe of a target without an add model.
    async fn still_live(&self, client: &Client, target: &Target) -> Result<(), String> {
        match client.server_live().await {
            Ok(true) => {}
            other => return Err(format!("afterwards, the server is not live: {other:?}")),
        }
        let Ok(identity) = self.identity(target, DataType::Fp32).await else {
            return Ok(());
        };
        let inputs: Vec<(String, Tensor)> = identity
            .pairs
            .iter()
            .map(|p| {
                let shape = crate::discovery::fill(&p.dims, identity.rows(2), 2);
                let n = shape.iter().product::<i64>() as usize;
                let values: Vec<f32> = (0..n).map(|i| i as f32 + 0.5).collect();
                (
                    p.input.clone(),
                    Tensor::from_vec(&shape, values).expect("sized"),
                )
            })
            .collect();
        let outputs = call::run(
            client,
            target.family,
            &identity.name,
            "predict",
            &inputs,
            None,
        )
        .await
        .map_err(|e| format!("afterwards, {} failed: {e:?}", identity.name))?;
        for ((_, sent), pair) in inputs.iter().zip(&identity.pairs) {
            let got = outputs
                .iter()
                .find(|(n, _)| *n == pair.output)
                .map(|(_, t)| t);
            if got != Some(sent) {
                return Err(format!(
                    "afterwards, {} returned {got:?} for {sent:?}",
                    identity.name
                ));
            }
        }
        Ok(())
    }

    /// The executable that serves the conformance repository as a child
    /// process (`conformance serve`), when the suite controls servers.
    #[cfg(feature = "reference")]
    pub fn server_exe(&self) -> Option<&PathBuf> {
        self.control.as_ref().and_then(|c| c.server_exe.as_ref())
    }

    /// Whether the suite started the server it checks (the checks that
    /// make replicas fail or kill processes need it).
    pub fn controlled(&self) -> bool {
        #[cfg(feature = "reference")]
        return self.control.is_some();
        #[cfg(not(feature = "reference"))]
        false
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
        Error::Unimplemented { .. } => "Unimplemented",
        Error::Transport { .. } => "Transport",
        Error::Protocol { .. } => "Protocol",
        Error::Request(_) => "Request",
        Error::Config(_) => "Config",
        _ => "other",
    }
}
