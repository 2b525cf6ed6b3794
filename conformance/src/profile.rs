//! A target profile: which of the target's models play the suite's model
//! roles, the message limits per transport, and a name for the report. A
//! small TOML file (`conformance run --profile FILE`), or the same as flags
//! (`--model ROLE=NAME`, `--limit TRANSPORT=MB|none`).
//!
//! ```
//! use conformance::profile::{Profile, Role};
//!
//! let profile = Profile::from_toml(r#"
//!     name = "furnace-server 0.16"
//!
//!     [models]
//!     add = "sum"              # x1, x2 FP32 [2, 2] -> y = x1 + x2
//!     identity_fp32 = "echo"   # each input comes back as the output at its position
//!     size_probe = ""          # none: the checks that need one are n/a
//!
//!     [limits]
//!     grpc_mb = 4
//!     http_mb = "none"
//! "#)?;
//! assert_eq!(profile.model(Role::Add), Some("sum"));
//! assert_eq!(profile.model(Role::SizeProbe), Some(""));
//! assert_eq!(profile.model(Role::MultiOutput), None);
//! # Ok::<(), String>(())
//! ```
//!
//! Roles not named are looked up by their default names and, for the
//! identity roles, among the identity-like models the suite discovers
//! (OIP targets; MindSpore Serving has no metadata to discover from).

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use serde::Deserialize;
use serving_proto::DataType;

use crate::models::{NUMERIC, identity_name};
use crate::target::{Limits, parse_limit_mb};

/// A model role of the suite: what a check needs a model for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Role {
    /// `x1`, `x2` FP32 `[2, 2]` -> `y = x1 + x2` (MindSpore methods
    /// `add_common`, `add_cast`): errors, health and the liveness probe.
    Add,
    /// `x1`, `x2` FP32 `[-1, 2]` -> `y`, batched (MindSpore instances).
    AddBatch,
    /// `x` FP32 `[-1]` -> `double`, `negated` (requested outputs).
    MultiOutput,
    /// `x` UINT8 `[-1]` -> `n` INT64 (message-size limits).
    SizeProbe,
    /// An identity of one type: each input comes back unchanged as the
    /// output at its position.
    Identity(DataType),
}

impl Role {
    /// Every role.
    pub fn all() -> Vec<Role> {
        let mut all = vec![
            Role::Add,
            Role::AddBatch,
            Role::MultiOutput,
            Role::SizeProbe,
        ];
        all.extend(NUMERIC.iter().map(|&d| Role::Identity(d)));
        all.push(Role::Identity(DataType::Bytes));
        all.push(Role::Identity(DataType::String));
        all
    }

    /// Its key in a profile, which is also the suite's model name for it
    /// (`add`, `identity_fp32`, ...).
    pub fn key(self) -> String {
        match self {
            Role::Add => "add".into(),
            Role::AddBatch => "add_batch".into(),
            Role::MultiOutput => "multi_output".into(),
            Role::SizeProbe => "size_probe".into(),
            Role::Identity(d) => identity_name(d),
        }
    }

    fn from_key(key: &str) -> Option<Role> {
        Role::all().into_iter().find(|r| r.key() == key)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.key())
    }
}

/// A limit in a profile: MiB, or `"none"`.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
enum LimitValue {
    Mb(u64),
    Word(String),
}

impl LimitValue {
    fn bytes(&self, name: &'static str) -> Result<Option<u64>, String> {
        let text = match self {
            LimitValue::Mb(n) => n.to_string(),
            LimitValue::Word(w) => w.clone(),
        };
        parse_limit_mb(name, &text).map_err(|e| e.to_string())
    }
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitsToml {
    grpc_mb: Option<LimitValue>,
    http_mb: Option<LimitValue>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProfileToml {
    name: Option<String>,
    #[serde(default)]
    models: BTreeMap<String, String>,
    #[serde(default)]
    limits: LimitsToml,
}

/// A target profile (see the module documentation).
#[derive(Clone, Debug, Default)]
pub struct Profile {
    /// The name the reports carry (the file's path when it names none).
    pub name: Option<String>,
    models: BTreeMap<Role, String>,
    grpc: Option<Option<u64>>,
    http: Option<Option<u64>>,
}

impl Profile {
    /// A profile from its TOML text.
    pub fn from_toml(text: &str) -> Result<Profile, String> {
        let t: ProfileToml = toml::from_str(text).map_err(|e| format!("profile: {e}"))?;
        let mut profile = Profile {
            name: t.name,
            ..Profile::default()
        };
        for (key, name) in t.models {
            profile.set_model(&key, &name)?;
        }
        if let Some(v) = &t.limits.grpc_mb {
            profile.grpc = Some(v.bytes("limits.grpc_mb")?);
        }
        if let Some(v) = &t.limits.http_mb {
            profile.http = Some(v.bytes("limits.http_mb")?);
        }
        Ok(profile)
    }

    /// A profile from a TOML file; its name defaults to the path.
    pub fn load(path: &Path) -> Result<Profile, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("profile {}: {e}", path.display()))?;
        let mut p = Profile::from_toml(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        p.name.get_or_insert_with(|| path.display().to_string());
        Ok(p)
    }

    /// Maps role `key` to the target's model `name` (empty: it has none).
    pub fn set_model(&mut self, key: &str, name: &str) -> Result<(), String> {
        let role = Role::from_key(key).ok_or_else(|| {
            format!(
                "profile: '{key}' is not a model role; roles: {}",
                Role::all()
                    .iter()
                    .map(|r| r.key())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })?;
        self.models.insert(role, name.to_owned());
        Ok(())
    }

    /// A `ROLE=NAME` flag.
    pub fn set_model_flag(&mut self, flag: &str) -> Result<(), String> {
        let (role, name) = flag
            .split_once('=')
            .ok_or_else(|| format!("--model '{flag}' is not ROLE=NAME"))?;
        self.set_model(role.trim(), name.trim())
    }

    /// A `TRANSPORT=MB|none` flag (`grpc` or `http`).
    pub fn set_limit_flag(&mut self, flag: &str) -> Result<(), String> {
        let (transport, value) = flag
            .split_once('=')
            .ok_or_else(|| format!("--limit '{flag}' is not TRANSPORT=MB or TRANSPORT=none"))?;
        let bytes = parse_limit_mb("--limit", value).map_err(|e| e.to_string())?;
        match transport.trim() {
            "grpc" => self.grpc = Some(bytes),
            "http" => self.http = Some(bytes),
            other => return Err(format!("--limit: '{other}' is not grpc or http")),
        }
        Ok(())
    }

    /// The model the profile names for `role`: `Some("")` where it says
    /// the target has none, `None` where it does not say.
    pub fn model(&self, role: Role) -> Option<&str> {
        self.models.get(&role).map(String::as_str)
    }

    /// Whether the profile says anything.
    pub fn is_empty(&self) -> bool {
        self.models.is_empty() && self.grpc.is_none() && self.http.is_none()
    }

    /// `limits` with the profile's limits in place of theirs.
    pub fn limits(&self, mut limits: Limits) -> Limits {
        if let Some(grpc) = self.grpc {
            limits.grpc = grpc;
        }
        if let Some(http) = self.http {
            limits.ms_http = http;
            limits.oip_http = http;
        }
        limits
    }

    /// How the reports name the profile: its name, else what it maps.
    pub fn describe(&self) -> Option<String> {
        if let Some(name) = &self.name {
            return Some(name.clone());
        }
        if self.is_empty() {
            return None;
        }
        let mut said: Vec<String> = self
            .models
            .iter()
            .map(|(r, n)| format!("{r}={n}"))
            .collect();
        let mb = |l: Option<u64>| l.map_or("none".to_string(), |b| format!("{}", b >> 20));
        if let Some(grpc) = self.grpc {
            said.push(format!("limit grpc={}", mb(grpc)));
        }
        if let Some(http) = self.http {
            said.push(format!("limit http={}", mb(http)));
        }
        Some(format!("flags: {}", said.join(", ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_are_checked_and_applied() {
        let p = Profile::from_toml(
            "[models]\nidentity_int64 = \"echo64\"\n[limits]\ngrpc_mb = 4\nhttp_mb = \"none\"\n",
        )
        .unwrap();
        assert_eq!(p.model(Role::Identity(DataType::Int64)), Some("echo64"));
        let limits = p.limits(Limits::all(100 << 20));
        assert_eq!(limits.grpc, Some(4 << 20));
        assert_eq!((limits.ms_http, limits.oip_http), (None, None));
        for bad in [
            "[models]\nadder = \"x\"\n",
            "[limits]\ngrpc_mb = 0\n",
            "[limits]\ngrpc_mb = \"lots\"\n",
            "unknown = 1\n",
        ] {
            assert!(Profile::from_toml(bad).is_err(), "{bad}");
        }
        let mut flags = Profile::default();
        flags.set_model_flag("add = sum").unwrap();
        flags.set_limit_flag("http=8").unwrap();
        assert!(flags.set_model_flag("add").is_err());
        assert!(flags.set_limit_flag("tcp=8").is_err());
        assert_eq!(flags.model(Role::Add), Some("sum"));
        assert_eq!(flags.limits(Limits::default()).oip_http, Some(8 << 20));
        assert_eq!(
            flags.describe().as_deref(),
            Some("flags: add=sum, limit http=8")
        );
    }
}
