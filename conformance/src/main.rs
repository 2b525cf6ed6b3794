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
        /// Serve the bare echo servers instead (the request's tensors
        /// returned; no model, no queue, no checks): the baseline of the
        /// overhead benchmark, in a process of its own.
        #[arg(long)]
        echo: bool,
    },
    /// Load generator: concurrency levels against SERVING_TARGET (or the
    /// reference server, started here), or one of the benchmarks of
    /// docs/benchmarks.md with --bench.
    Perf {
        /// Concurrent clients, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
        concurrency: Vec<usize>,
        /// start:end[:step] concurrencies (perf_analyzer's
        /// --concurrency-range), instead of --concurrency.
        #[arg(long, value_name = "START:END:STEP")]
        concurrency_range: Option<String>,
        /// Requests per second, comma-separated: open-loop load instead of
        /// concurrent clients.
        #[arg(long, value_delimiter = ',')]
        request_rate: Vec<f64>,
        /// How --request-rate requests arrive: constant or poisson.
        #[arg(long, default_value = "constant")]
        request_distribution: String,
        /// Windows are repeated until three agree within this percentage
        /// (throughput and p50).
        #[arg(long, default_value_t = 10.0)]
        stability_percentage: f64,
        /// The most windows per level.
        #[arg(long, default_value_t = 10)]
        max_trials: usize,
        /// Also write the levels as CSV (perf_analyzer's column names).
        #[arg(long, value_name = "FILE")]
        csv: Option<PathBuf>,
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
        /// A benchmark instead: overhead, throughput, large, memory, peers, stalled
        /// or hostile.
        #[arg(long)]
        bench: Option<String>,
        /// With --bench overhead: also serve from this conformance binary
        /// (an earlier build) and compare, before and after in one run.
        #[arg(long, value_name = "EXE")]
        baseline: Option<PathBuf>,
        /// Where the tensors travel: `none` (in the messages) or `system`
        /// (system shared memory, Open Inference targets on this host:
        /// inputs written once, an output region per client, as
        /// perf_analyzer's --shared-memory system).
        #[arg(long, default_value = "none")]
        shared_memory: String,
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
            concurrency_range,
            request_rate,
            request_distribution,
            stability_percentage,
            max_trials,
            csv,
            duration,
            warmup,
            requests,
            workload,
            bench,
            baseline,
            shared_memory,
        } => {
            let placed = match shared_memory.as_str() {
                "none" => false,
                "system" => true,
                other => {
                    eprintln!(
                        "conformance perf: --shared-memory {other}: none or system (CUDA shared memory is not offered)"
                    );
                    return ExitCode::from(2);
                }
            };
            let analyzed = concurrency_range.is_some() || !request_rate.is_empty() || csv.is_some();
            if analyzed && bench.is_none() {
                let schedules = match schedules(
                    &concurrency,
                    concurrency_range.as_deref(),
                    &request_rate,
                    &request_distribution,
                ) {
                    Ok(s) => s,
                    Err(e) => {
                        eprintln!("conformance perf: {e}");
                        return ExitCode::from(2);
                    }
                };
                let measure = conformance::perf::analyzer::Measure {
                    warmup: std::time::Duration::from_secs_f64(warmup.max(0.0)),
                    window: std::time::Duration::from_secs_f64(duration.max(0.1)),
                    stability: stability_percentage,
                    max_trials,
                };
                return match analyze(&schedules, measure, &workload, placed, csv.as_deref()).await {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e) => {
                        eprintln!("conformance perf: {e}");
                        ExitCode::FAILURE
                    }
                };
            }
            perf(
                concurrency,
                duration,
                warmup,
                requests,
                &workload,
                placed,
                Bench {
                    name: bench.as_deref(),
                    baseline: baseline.as_deref(),
                },
            )
            .await
        }
        #[cfg(feature = "reference")]
        Command::Serve { max_msg_mb, echo } => {
            let served = if echo {
                conformance::perf::echo::serve_forever().await
            } else {
                conformance::control::serve_forever(max_msg_mb).await
            };
            match served {
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

/// `--bench` and what it takes.
struct Bench<'a> {
    /// The benchmark; none: the load generator.
    name: Option<&'a str>,
    /// `--baseline`.
    baseline: Option<&'a std::path::Path>,
}

async fn perf(
    concurrency: Vec<usize>,
    duration: f64,
    warmup: f64,
    requests: Option<usize>,
    workload: &str,
    placed: bool,
    bench: Bench<'_>,
) -> ExitCode {
    let Bench {
        name: bench,
        baseline,
    } = bench;
    #[cfg(feature = "reference")]
    use conformance::perf::bench as b;
    use std::time::Duration;
    let stolen_from = conformance::perf::steal::CpuTimes::now();
    let window = Duration::from_secs_f64(duration.max(0.1));
    #[cfg(not(feature = "reference"))]
    let _ = baseline;
    #[cfg(not(feature = "reference"))]
    let result = match bench {
        Some(_) => Err(
            "the benchmarks start reference servers, and this build has none (built without the `reference` feature)".to_string(),
        ),
        None => load(&concurrency, warmup, window, requests, workload, placed).await,
    };
    #[cfg(feature = "reference")]
    let result = match bench {
        Some("overhead") => match std::env::current_exe() {
            Ok(exe) => b::overhead(&exe, window, baseline).await,
            Err(e) => Err(e.to_string()),
        },
        Some("throughput") => b::throughput(window).await,
        Some("large") => b::large().await,
        Some("memory") => match std::env::current_exe() {
            Ok(exe) => b::memory(&exe).await,
            Err(e) => Err(e.to_string()),
        },
        Some("peers") => match std::env::current_exe() {
            Ok(exe) => {
                conformance::perf::peers::peers(
                    &exe,
                    &concurrency,
                    Duration::from_secs_f64(warmup),
                    window,
                )
                .await
            }
            Err(e) => Err(e.to_string()),
        },
        Some("stalled") => match std::env::current_exe() {
            Ok(exe) => conformance::perf::stalled::stalled(&exe, 800, 4).await,
            Err(e) => Err(e.to_string()),
        },
        Some("hostile") => match std::env::current_exe() {
            Ok(exe) => conformance::perf::hostile::hostile(&exe).await,
            Err(e) => Err(e.to_string()),
        },
        Some(other) => Err(format!(
            "unknown benchmark '{other}': overhead, throughput, large, memory, peers, stalled or hostile"
        )),
        None => load(&concurrency, warmup, window, requests, workload, placed).await,
    };
    conformance::perf::steal::print_since(stolen_from);
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
    placed: bool,
) -> Result<(), String> {
    use conformance::perf::run_feed;
    use std::time::Duration;
    let workload = parse_workload(workload)?;
    let suite = conformance::Suite::from_env_with_limit(None, 0, 512).await?;
    let most = concurrency.iter().copied().max().unwrap_or(1);
    for target in &suite.targets {
        let Some((client, feed)) = prepare(&suite, target, workload, placed, most).await? else {
            continue;
        };
        for &c in concurrency {
            let s = run_feed(
                &client,
                &feed,
                c,
                Duration::from_secs_f64(warmup),
                window,
                requests,
            )
            .await;
            println!("  {}", s.line());
        }
        feed.release(&client).await;
    }
    #[cfg(feature = "reference")]
    if let Some(c) = suite.control {
        c.running.shutdown().await;
    }
    Ok(())
}

/// The levels the flags ask for: request rates if given, else the
/// concurrency range, else the concurrency list.
fn schedules(
    concurrency: &[usize],
    range: Option<&str>,
    rates: &[f64],
    distribution: &str,
) -> Result<Vec<conformance::perf::analyzer::Schedule>, String> {
    use conformance::perf::analyzer::{Schedule, parse_range};
    let poisson = match distribution {
        "constant" => false,
        "poisson" => true,
        other => {
            return Err(format!(
                "--request-distribution {other}: constant or poisson"
            ));
        }
    };
    if !rates.is_empty() {
        if let Some(bad) = rates.iter().find(|r| !(r.is_finite() && **r > 0.0)) {
            return Err(format!(
                "--request-rate {bad}: a positive number of requests per second"
            ));
        }
        return Ok(rates
            .iter()
            .map(|&per_second| Schedule::Rate {
                per_second,
                poisson,
            })
            .collect());
    }
    let levels = match range {
        Some(r) => parse_range(r)?,
        None => concurrency.to_vec(),
    };
    Ok(levels.into_iter().map(Schedule::Concurrency).collect())
}

/// perf_analyzer's loop: each level measured until stable, a line each,
/// and the CSV.
async fn analyze(
    schedules: &[conformance::perf::analyzer::Schedule],
    measure: conformance::perf::analyzer::Measure,
    workload: &str,
    placed: bool,
    csv: Option<&std::path::Path>,
) -> Result<(), String> {
    use conformance::perf::analyzer::{Schedule, csv as to_csv, level};
    let stolen_from = conformance::perf::steal::CpuTimes::now();
    let workload = parse_workload(workload)?;
    let suite = conformance::Suite::from_env_with_limit(None, 0, 512).await?;
    let mut levels = Vec::new();
    // Output regions: one per client; open-loop requests take turns.
    let most = schedules
        .iter()
        .map(|s| match s {
            Schedule::Concurrency(c) => *c,
            _ => 64,
        })
        .max()
        .unwrap_or(1);
    for target in &suite.targets {
        let Some((client, feed)) = prepare(&suite, target, workload, placed, most).await? else {
            continue;
        };
        for &schedule in schedules {
            let l = level(&client, target, &feed, schedule, measure).await;
            println!("  {}", l.line());
            levels.push(l);
        }
        feed.release(&client).await;
    }
    if let Some(path) = csv {
        std::fs::write(path, to_csv(&levels))
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    conformance::perf::steal::print_since(stolen_from);
    #[cfg(feature = "reference")]
    if let Some(c) = suite.control {
        c.running.shutdown().await;
    }
    Ok(())
}

/// A client for `target` and its requests: tensors in the messages, or
/// placed in system shared memory for `clients` concurrent clients (`None`,
/// with a line, for a MindSpore target then: the extension is Open
/// Inference's).
async fn prepare(
    suite: &conformance::Suite,
    target: &conformance::target::Target,
    workload: conformance::perf::Workload,
    placed: bool,
    clients: usize,
) -> Result<
    Option<(
        serving_client::Client,
        std::sync::Arc<conformance::perf::Feed>,
    )>,
    String,
> {
    use conformance::perf::Feed;
    if placed && target.family == conformance::Family::MindSpore {
        println!("{target}: skipped, --shared-memory is an Open Inference extension");
        return Ok(None);
    }
    println!("{target} ({workload:?})");
    let client = suite
        .builder(target)
        .timeout(std::time::Duration::from_secs(300))
        .build()
        .map_err(|e| e.to_string())?;
    let feed = if placed {
        Feed::shared_memory(&client, target.family, workload, clients).await?
    } else {
        Feed::plain(target.family, workload)
    };
    Ok(Some((client, std::sync::Arc::new(feed))))
}

/// `add` or `identity:BYTES`.
fn parse_workload(workload: &str) -> Result<conformance::perf::Workload, String> {
    use conformance::perf::Workload;
    match workload.split_once(':') {
        None if workload == "add" => Ok(Workload::Add),
        Some(("identity", n)) => Ok(Workload::Identity(
            n.parse()
                .map_err(|_| format!("identity:{n}: not a byte count"))?,
        )),
        _ => Err(format!(
            "unknown workload '{workload}': add or identity:BYTES"
        )),
    }
}
