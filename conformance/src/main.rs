//! `conformance`: run the checks and print a report, write the conformance
//! model set in a server's repository layout, or serve it.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
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
        /// Only checks whose name contains this.
        #[arg(long)]
        filter: Option<String>,
        /// Random cases per round-trip property.
        #[arg(long, default_value_t = 16)]
        cases: u32,
        /// Also write the report as JSON here.
        #[arg(long, value_name = "FILE")]
        json: Option<PathBuf>,
        /// Also write the report as JUnit XML here.
        #[arg(long, value_name = "FILE")]
        junit: Option<PathBuf>,
    },
    /// Writes the conformance model set as a repository for a server.
    Models {
        /// reference, triton or mlserver.
        #[arg(long, value_enum)]
        layout: Layout,
        /// The repository folder to write.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
    /// Serves the conformance models with the reference server on
    /// ephemeral ports and prints `READY <grpc> <rest>` (used by the kill
    /// checks).
    Serve,
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
        Command::Serve => match conformance::control::serve_forever().await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("conformance serve: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Run {
            filter,
            cases,
            json,
            junit,
        } => {
            let suite =
                match conformance::Suite::from_env(std::env::current_exe().ok(), cases).await {
                    Ok(s) => s,
                    Err(e) => {
                        eprintln!("conformance: {e}");
                        return ExitCode::FAILURE;
                    }
                };
            let report = conformance::run(&suite, filter.as_deref()).await;
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
