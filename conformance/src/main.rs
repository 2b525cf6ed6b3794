//! `conformance`: run the checks and print a report, write the conformance
//! model set in a server's repository layout, or serve it.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// mimalloc keeps freed large blocks for reuse: large tensors then do not
/// cost a fresh mapping, page faults and zeroing per request (the profile
/// in docs/benchmarks.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
#[cfg(feature = "reference")]
use conformance::models::{self, Layout, ReferenceOptions};

#[derive(Debug, Parser)]
#[command(
    name = "conformance",
    about = "Protocol conformance for MindSpore Serving and Open Inference Protocol servers"
)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs the checks against SERVING_TARGET (or the reference server,
    /// started here) and prints a table; exits 1 if a check failed.
    Run {
        /// Only checks whose name contains one of these (repeat the flag
        /// or separate them with commas: `--filter errors,health.server`).
        #[arg(long, value_delimiter = ',')]
        filter: Vec<String>,
        /// Random cases per round-trip property.
        #[arg(long, default_value_t = 16)]
        cases: u32,
        /// Also write the report as JSON here.
        #[arg(long, value_name = "FILE")]
        json: Option<PathBuf>,
        /// Also write the report as JUnit XML here.
        #[arg(long, value_name = "FILE")]
        junit: Option<PathBuf>,
        /// A target profile (TOML): which models play the suite's roles,
        /// the limits per transport (docs/conformance.md).
        #[arg(long, value_name = "FILE")]
        profile: Option<PathBuf>,
        /// ROLE=NAME: the target's model for a role (after the profile;
        /// repeatable). An empty NAME: the target has none.
        #[arg(long = "model", value_name = "ROLE=NAME")]
        models: Vec<String>,
        /// TRANSPORT=MB or TRANSPORT=none (grpc, http): a message limit
        /// (after the profile and the environment; repeatable).
        #[arg(long = "limit", value_name = "TRANSPORT=MB")]
        limits: Vec<String>,
    },
    /// Writes the conformance model set as a repository for a server.
    #[cfg(feature = "reference")]
    Models {
        /// reference, triton or mlserver.
        #[arg(long, value_enum)]
        layout: Layout,
        /// The repository folder to write.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
    #[cfg(feature = "reference")]
    /// Serves the conformance models with the reference server on
    /// ephemeral ports and prints `READY <grpc> <rest>` (used by the kill
    /// checks and the memory benchmark).
    Serve {
        /// The message limit, MiB.
        #[arg(long, default_value_t = conformance::MAX_MSG_MB)]
        max_msg_mb: u32,
    },
    /// Load generator: concurrency levels against SERVING_TARGET (or the
    /// reference server, started here), or one of the benchmarks of
    /// docs/benchmarks.md with --bench.
    Perf {
        /// Concurrent clients, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
        concurrency: Vec<usize>,
        /// Measured seconds per level.
        #[arg(long, default_value_t = 5.0)]
        duration: f64,
        /// Warm-up seconds per level (not measured).
        #[arg(long, default_value_t = 1.0)]
        warmup: f64,
        /// Stop each level after this many measured requests.
        #[arg(long)]
        requests: Option<usize>,
        /// `add` (the demo model), or `identity:BYTES` (identity_fp32 with an
        /// FP32 input of BYTES bytes).
        #[arg(long, default_value = "add")]
        workload: String,
        /// A benchmark instead: overhead, throughput, large, memory or stalled.
        #[arg(long)]
        bench: Option<String>,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    match Args::parse().command {
        #[cfg(feature = "reference")]
        Command::Models { layout, out } => {
            match models::write(layout, &out, ReferenceOptions::default()) {
                Ok(()) => {
                    println!(
                        "wrote {} models to {} ({layout:?} layout)",
                        models::model_set().len(),
                        out.display()
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("conformance: cannot write {}: {e}", out.display());
                    ExitCode::FAILURE
                }
            }
        }
        Command::Perf {
            concurrency,
            duration,
            warmup,
            requests,
            workload,
            bench,
        } => {
            perf(
                concurrency,
                duration,
                warmup,
                requests,
                &workload,
                bench.as_deref(),
            )
            .await
        }
        #[cfg(feature = "reference")]
        Command::Serve { max_msg_mb } => {
            match conformance::control::serve_forever(max_msg_mb).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("conformance serve: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Run {
            filter,
            cases,
            json,
            junit,
            profile,
            models,
            limits,
        } => {
            let profile = match read_profile(profile.as_deref(), &models, &limits) {
                Ok(p) => p,
                Err(e) => {
                    eprintln!("conformance: {e}");
                    return ExitCode::from(2);
                }
            };
            let mut suite =
                match conformance::Suite::from_env(std::env::current_exe().ok(), cases).await {
                    Ok(s) => s,
                    Err(e) => {
                        eprintln!("conformance: {e}");
                        return ExitCode::FAILURE;
                    }
                };
            suite.limits = profile.limits(suite.limits);
            suite.profile = profile;
            let report = conformance::run(&suite, &filter).await;
            print!("{}", report.table());
            for (path, text) in [
                (
                    json,
                    serde_json::to_string_pretty(&report.json()).unwrap_or_default(),
                ),
                (junit, report.junit()),
            ] {
                if let Some(path) = path
                    && let Err(e) = std::fs::write(&path, text)
                {
                    eprintln!("conformance: cannot write {}: {e}", path.display());
                    return ExitCode::FAILURE;
                }
            }
            #[cfg(feature = "reference")]
            if let Some(c) = suite.control {
                c.running.shutdown().await;
            }
            if report.failures().next().is_some() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
    }
}

/// The profile of `--profile`, then the `--model` and `--limit` flags.
fn read_profile(
    file: Option<&std::path::Path>,
    models: &[String],
    limits: &[String],
) -> Result<conformance::profile::Profile, String> {
    let mut profile = match file {
        Some(path) => conformance::profile::Profile::load(path)?,
        None => conformance::profile::Profile::default(),
    };
    for m in models {
        profile.set_model_flag(m)?;
    }
    for l in limits {
        profile.set_limit_flag(l)?;
    }
    Ok(profile)
}

async fn perf(
    concurrency: Vec<usize>,
    duration: f64,
    warmup: f64,
    requests: Option<usize>,
    workload: &str,
    bench: Option<&str>,
) -> ExitCode {
    #[cfg(feature = "reference")]
    use conformance::perf::bench as b;
    use std::time::Duration;
    let window = Duration::from_secs_f64(duration.max(0.1));
    #[cfg(not(feature = "reference"))]
    let result = match bench {
        Some(_) => Err(
            "the benchmarks start reference servers, and this build has none (built without the `reference` feature)".to_string(),
        ),
        None => load(&concurrency, warmup, window, requests, workload).await,
    };
    #[cfg(feature = "reference")]
    let result = match bench {
        Some("overhead") => b::overhead(window).await,
        Some("throughput") => b::throughput(window).await,
        Some("large") => b::large().await,
        Some("memory") => match std::env::current_exe() {
            Ok(exe) => b::memory(&exe).await,
            Err(e) => Err(e.to_string()),
        },
        Some("stalled") => match std::env::current_exe() {
            Ok(exe) => conformance::perf::stalled::stalled(&exe, 800, 4).await,
            Err(e) => Err(e.to_string()),
        },
        Some(other) => Err(format!(
            "unknown benchmark '{other}': overhead, throughput, large, memory or stalled"
        )),
        None => load(&concurrency, warmup, window, requests, workload).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("conformance perf: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The load generator against SERVING_TARGET (or the reference server).
async fn load(
    concurrency: &[usize],
    warmup: f64,
    window: std::time::Duration,
    requests: Option<usize>,
    workload: &str,
) -> Result<(), String> {
    use conformance::perf::{Workload, run_load};
    use std::time::Duration;
    let workload = match workload.split_once(':') {
        None if workload == "add" => Workload::Add,
        Some(("identity", n)) => Workload::Identity(
            n.parse()
                .map_err(|_| format!("identity:{n}: not a byte count"))?,
        ),
        _ => {
            return Err(format!(
                "unknown workload '{workload}': add or identity:BYTES"
            ));
        }
    };
    let suite = conformance::Suite::from_env_with_limit(None, 0, 512).await?;
    for target in &suite.targets {
        println!("{target} ({workload:?})");
        let client = suite
            .builder(target)
            .timeout(Duration::from_secs(300))
            .build()
            .map_err(|e| e.to_string())?;
        for &c in concurrency {
            let s = run_load(
                &client,
                target,
                workload,
                c,
                Duration::from_secs_f64(warmup),
                window,
                requests,
            )
            .await;
            println!("  {}", s.line());
        }
    }
    #[cfg(feature = "reference")]
    if let Some(c) = suite.control {
        c.running.shutdown().await;
    }
    Ok(())
}
