//! `perf --bench peers`: the reference server beside the Open Inference
//! servers people compare it with, each in its own process, serving the same
//! `add`, measured by the same load generator and client in one run.
//!
//! - **reference**: `conformance serve` (this binary), ONNX Runtime.
//! - **furnace**: furnace-server 0.16.2 (axum and tonic), `add` computed in
//!   plain Rust through its `TensorModel` trait, no queue. Built from the
//!   registry as a crate of its own (`conformance/peers/furnace`) into
//!   `target/furnace-peer`.
//! - **mlserver**: Seldon MLServer 1.7.1 with the conformance models
//!   (onnxruntime), installed into `target/mlserver-venv` as the
//!   conformance peer is (`conformance/mlserver/run.sh`).
//!
//! A peer that cannot be provisioned is reported and left out; the others
//! are still measured.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serving_client::Client;

use super::load::{Stats, Workload, run_load};
use crate::target::{Family, Target, Transport};

/// Rounds per level.
const ROUNDS: usize = 3;

/// The workspace root (the conformance crate's parent).
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the conformance crate sits in the workspace")
        .to_path_buf()
}

/// A server under measurement: its name, its two addresses, its process.
struct Peer {
    name: &'static str,
    grpc: String,
    http: String,
    /// What stops the server when dropped: a [`Process`], or the
    /// kill-on-drop child of [`crate::control::spawn_with`].
    _process: Box<dyn Send>,
}

/// A child process stopped with SIGTERM (then killed) when dropped, so
/// that servers which fork workers (MLServer) take them down too.
struct Process(std::process::Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .arg(self.0.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A free loopback port (bound, read, released).
fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free port: {e}"))
}

fn run(cmd: &mut std::process::Command, what: &str) -> Result<(), String> {
    let status = cmd
        .status()
        .map_err(|e| format!("cannot run {what}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{what} failed ({status})"))
    }
}

/// Waits until the server at `http` answers ready, or its process ends.
async fn wait_ready(
    name: &str,
    http: &str,
    process: &mut Process,
    log: &Path,
) -> Result<(), String> {
    let client = Client::builder()
        .endpoint(http)
        .timeout(Duration::from_secs(2))
        .retries(0)
        .build()
        .map_err(|e| e.to_string())?;
    let deadline = Instant::now() + Duration::from_secs(180);
    while Instant::now() < deadline {
        if let Ok(true) = client.server_ready().await {
            return Ok(());
        }
        if let Ok(Some(status)) = process.0.try_wait() {
            let tail = std::fs::read_to_string(log).unwrap_or_default();
            let tail: String = tail.lines().rev().take(20).collect::<Vec<_>>().join("\n");
            return Err(format!(
                "{name} exited ({status}); last log lines, newest first:\n{tail}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(format!(
        "{name} was not ready in 180 s (log: {})",
        log.display()
    ))
}

fn spawn(cmd: &mut std::process::Command, log: &Path) -> Result<Process, String> {
    let out = std::fs::File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
    let err = out.try_clone().map_err(|e| e.to_string())?;
    cmd.stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .map(Process)
        .map_err(|e| format!("cannot start {cmd:?}: {e}"))
}

/// furnace-server, built (first time: a few minutes) and started.
async fn furnace() -> Result<Peer, String> {
    let root = root();
    let manifest = root.join("conformance/peers/furnace/Cargo.toml");
    let target_dir = root.join("target/furnace-peer");
    println!("building furnace-server 0.16.2 (conformance/peers/furnace) into target/furnace-peer");
    run(
        std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args([
                "build",
                "--release",
                "--locked",
                "--quiet",
                "--manifest-path",
            ])
            .arg(&manifest)
            .arg("--target-dir")
            .arg(&target_dir),
        "cargo build of furnace-peer",
    )?;
    let (http, grpc) = (free_port()?, free_port()?);
    let log = root.join("target/furnace-peer.log");
    let mut process = spawn(
        std::process::Command::new(target_dir.join("release/furnace-peer")).args([
            "--http-port",
            &http.to_string(),
            "--grpc-port",
            &grpc.to_string(),
        ]),
        &log,
    )?;
    let http = format!("http://127.0.0.1:{http}");
    wait_ready("furnace-server", &http, &mut process, &log).await?;
    Ok(Peer {
        name: "furnace",
        grpc: format!("grpc://127.0.0.1:{grpc}"),
        http,
        _process: Box::new(process),
    })
}

/// MLServer, installed (first time: about a minute) and started on the
/// conformance models, with its inference in the server process
/// (`MLSERVER_PARALLEL_WORKERS=0`: faster for a model this small than a
/// worker process behind a queue; set `MLSERVER_PARALLEL_WORKERS` to
/// measure another setting).
async fn mlserver(repo: &Path) -> Result<Peer, String> {
    let root = root();
    let venv = root.join("target/mlserver-venv");
    let python = venv.join("bin/python");
    let installed = std::process::Command::new(&python)
        .args(["-c", "import mlserver, onnxruntime"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !installed {
        println!("installing MLServer into target/mlserver-venv (about a minute)");
        run(
            std::process::Command::new("python3")
                .args(["-m", "venv"])
                .arg(&venv),
            "python3 -m venv",
        )?;
        run(
            std::process::Command::new(venv.join("bin/pip"))
                .args(["install", "--quiet", "--disable-pip-version-check", "-r"])
                .arg(root.join("conformance/mlserver/requirements.txt")),
            "pip install of MLServer",
        )?;
    }
    crate::models::write(
        crate::models::Layout::Mlserver,
        repo,
        crate::models::ReferenceOptions::default(),
    )
    .map_err(|e| format!("cannot write the MLServer models: {e}"))?;
    let (http, grpc, metrics) = (free_port()?, free_port()?, free_port()?);
    let log = root.join("target/mlserver-peer.log");
    let workers = std::env::var("MLSERVER_PARALLEL_WORKERS").unwrap_or_else(|_| "0".into());
    let mut process = spawn(
        std::process::Command::new(venv.join("bin/mlserver"))
            .arg("start")
            .arg(repo)
            .current_dir(repo)
            .env("MLSERVER_HOST", "127.0.0.1")
            .env("MLSERVER_HTTP_PORT", http.to_string())
            .env("MLSERVER_GRPC_PORT", grpc.to_string())
            .env("MLSERVER_METRICS_PORT", metrics.to_string())
            .env(
                "MLSERVER_GRPC_MAX_MESSAGE_LENGTH",
                (512u32 << 20).to_string(),
            )
            .env("MLSERVER_PARALLEL_WORKERS", workers),
        &log,
    )?;
    let http = format!("http://127.0.0.1:{http}");
    wait_ready("MLServer", &http, &mut process, &log).await?;
    Ok(Peer {
        name: "mlserver",
        grpc: format!("grpc://127.0.0.1:{grpc}"),
        http,
        _process: Box::new(process),
    })
}

/// The reference server in its own process (`conformance serve`).
async fn reference(exe: &Path) -> Result<Peer, String> {
    let (child, grpc, http) = crate::control::spawn_with(exe, 512).await?;
    Ok(Peer {
        name: "reference",
        grpc,
        http,
        _process: Box::new(child),
    })
}

/// One cell: requests per second and p50 µs, or why none.
fn cell(s: &Stats) -> String {
    if s.errors > 0 && s.requests == 0 {
        return format!(
            "failed: {}",
            s.first_error.as_deref().unwrap_or("no answer")
        );
    }
    format!(
        "{:.0} req/s p50 {:.0} µs{}",
        s.rate(),
        s.quantile(0.5).as_secs_f64() * 1e6,
        if s.errors > 0 {
            format!(" ({} errors)", s.errors)
        } else {
            String::new()
        }
    )
}

/// The benchmark: every server, both transports, each concurrency; a row
/// per (transport, concurrency) with each server's figures and our ratios.
pub async fn peers(
    exe: &Path,
    levels: &[usize],
    warmup: Duration,
    window: Duration,
) -> Result<(), String> {
    let repo = tempfile::tempdir().map_err(|e| e.to_string())?;
    let mut servers = vec![reference(exe).await?];
    for (name, started) in [
        ("furnace-server", furnace().await),
        ("MLServer", mlserver(repo.path()).await),
    ] {
        match started {
            Ok(peer) => servers.push(peer),
            Err(e) => println!("{name} left out: {e}"),
        }
    }
    println!(
        "add (two FP32 [2, 2] inputs); every server in its own process; {ROUNDS} rounds in alternation of {:.1} s after {:.1} s of warm-up, the median round shown (by throughput)",
        window.as_secs_f64(),
        warmup.as_secs_f64()
    );
    for transport in [Transport::Grpc, Transport::Http] {
        for &c in levels {
            // Rounds in alternation, so that a slow spell of the machine
            // falls on every server alike; each server's median round.
            let mut rounds: Vec<Vec<Stats>> = servers.iter().map(|_| Vec::new()).collect();
            for _ in 0..ROUNDS {
                for (s, seen) in servers.iter().zip(&mut rounds) {
                    let url = match transport {
                        Transport::Grpc => &s.grpc,
                        Transport::Http => &s.http,
                    };
                    let t = Target::plain(Family::OpenInference, transport, url);
                    seen.push(
                        run_load(
                            &super::bench::client(&t),
                            &t,
                            Workload::Add,
                            c,
                            warmup,
                            window,
                            None,
                        )
                        .await,
                    );
                }
            }
            let figures: Vec<(&str, Stats)> = servers
                .iter()
                .zip(rounds)
                .map(|(s, mut seen)| {
                    seen.sort_by(|a, b| a.rate().total_cmp(&b.rate()));
                    (s.name, seen.swap_remove(seen.len() / 2))
                })
                .collect();
            let ours = figures[0].1.rate();
            let row: Vec<String> = figures
                .iter()
                .map(|(name, s)| {
                    let ratio = if *name == "reference" || s.rate() == 0.0 {
                        String::new()
                    } else {
                        format!(" [ours {:.2}x]", ours / s.rate())
                    };
                    format!("{name}: {}{ratio}", cell(s))
                })
                .collect();
            let transport = match transport {
                Transport::Grpc => "grpc",
                Transport::Http => "http",
            };
            println!("{transport} c={c:<3} {}", row.join(" | "));
        }
    }
    Ok(())
}
