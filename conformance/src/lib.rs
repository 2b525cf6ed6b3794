//! `conformance`: checks that tell whether a server keeps the MindSpore
//! Serving protocol or the Open Inference Protocol (KServe v2).
//!
//! Run against the reference server, started in this process:
//!
//! ```sh
//! cargo test -p conformance
//! cargo run -p conformance -- run
//! ```
//!
//! Or against any server (load the conformance models first: `cargo run -p
//! conformance -- models --layout triton --out DIR`):
//!
//! ```sh
//! SERVING_TARGET=oip+grpc://127.0.0.1:8001,oip+http://127.0.0.1:8000 \
//! SERVING_TARGET_MAX_MSG_MB=64 cargo run -p conformance -- run --junit report.xml
//! ```
//!
//! The library runs the same checks from code:
//!
//! ```no_run
//! # async fn demo() -> Result<(), String> {
//! let suite = conformance::Suite::from_env(None, 8).await?;
//! let report = conformance::run(&suite, &[]).await;
//! println!("{}", report.table());
//! # Ok(())
//! # }
//! ```

pub mod call;
pub mod check;
pub mod checks;
#[cfg(feature = "reference")]
pub mod control;
pub mod discovery;
pub mod models;
pub mod perf;
pub mod profile;
pub mod report;
pub mod target;

use std::time::Instant;

pub use check::{Check, Outcome, Suite};
pub use report::{Report, Row};
pub use target::{Environment, Family, Limits, Target, Transport};

impl Suite {
    /// The suite the environment describes: `SERVING_TARGET` and friends,
    /// or, when it is unset, the reference server started here.
    /// `server_exe` serves the repository as a child process for the kill
    /// checks (the conformance binary); `cases` is the number of random
    /// cases per round-trip property.
    pub async fn from_env(
        server_exe: Option<std::path::PathBuf>,
        cases: u32,
    ) -> Result<Suite, String> {
        Suite::from_env_with_limit(server_exe, cases, MAX_MSG_MB).await
    }

    /// As [`Suite::from_env`]; a reference server started here gets a
    /// message limit of `max_msg_mb` (the load generator uses 512).
    pub async fn from_env_with_limit(
        server_exe: Option<std::path::PathBuf>,
        cases: u32,
        max_msg_mb: u32,
    ) -> Result<Suite, String> {
        let env = Environment::from_env().map_err(|e| e.to_string())?;
        let ca = match &env.ca {
            Some(p) => Some(
                std::fs::read(p).map_err(|e| format!("SERVING_TARGET_CA {}: {e}", p.display()))?,
            ),
            None => None,
        };
        if !env.targets.is_empty() {
            let mut suite = Suite::new(env.targets, env.limits, cases);
            suite.ca = ca;
            return Ok(suite);
        }
        #[cfg(feature = "reference")]
        {
            let (control, targets) = control::start_with(server_exe, max_msg_mb).await?;
            let mut suite = Suite::new(
                targets,
                target::Limits::all(u64::from(max_msg_mb) << 20),
                cases,
            );
            suite.ca = ca;
            suite.control = Some(control);
            Ok(suite)
        }
        #[cfg(not(feature = "reference"))]
        {
            let _ = (server_exe, max_msg_mb, ca);
            Err("SERVING_TARGET is not set, and this build has no reference server to start (it was built without the `reference` feature): set SERVING_TARGET to the server to check".into())
        }
    }
}

/// The message limit, MiB, of the reference server the suite starts.
pub const MAX_MSG_MB: u32 = 4;

/// Whether check `name` is selected by `filters`: every check when there
/// are none, else those whose name contains one of them.
pub fn selected(name: &str, filters: &[String]) -> bool {
    filters.is_empty() || filters.iter().any(|f| name.contains(f.as_str()))
}

/// Runs every check selected by `filters` ([`selected`]) on every target
/// of its family, printing a line per result to stderr as it goes.
pub async fn run(suite: &Suite, filters: &[String]) -> Report {
    let mut report = Report {
        profile: suite.profile.describe(),
        ..Report::default()
    };
    for target in &suite.targets {
        for check in checks::all() {
            if !check.families.contains(&target.family) || !selected(check.name, filters) {
                continue;
            }
            let started = Instant::now();
            let outcome = (check.run)(suite, target).await;
            let duration = started.elapsed();
            eprintln!(
                "{:<5} {} on {} ({} ms)",
                outcome.label(),
                check.name,
                target,
                duration.as_millis()
            );
            report.rows.push(Row {
                check: check.name.to_owned(),
                rule: check.spec.to_owned(),
                target: target.to_string(),
                outcome,
                duration,
            });
        }
    }
    report
}
