//! Servers the suite controls: the reference server in this process on
//! ephemeral ports, and child processes of it for the kill checks.

use std::path::{Path, PathBuf};
use std::time::Duration;

use reference_server::server::{self, Config, Running};
use tokio::io::AsyncBufReadExt;

use crate::models::{self, Layout, ReferenceOptions};
use crate::target::{Family, Target, Transport};

pub use crate::MAX_MSG_MB;

/// A reference server the suite started, with its repository.
pub struct Control {
    /// The running server.
    pub running: Running,
    /// The conformance repository it serves (deleted on drop).
    pub repository: tempfile::TempDir,
    /// An executable whose `serve` subcommand serves the repository as a
    /// child process (the conformance binary).
    pub server_exe: Option<PathBuf>,
}

fn config(repository: &Path, max_msg_mb: u32) -> Config {
    Config {
        grpc_address: ([127, 0, 0, 1], 0).into(),
        rest_address: ([127, 0, 0, 1], 0).into(),
        model_repository: Some(repository.to_owned()),
        max_msg_mb_size: max_msg_mb,
        fault_injection: true,
        // The suite's server is on this host: the shared-memory
        // extension is checked there.
        allow_shared_memory: true,
        poll_interval: None,
        drain_timeout: Duration::from_secs(5),
        // For the suite's add_cached (the response cache's check).
        response_cache_bytes: Some(1 << 20),
        ..Config::default()
    }
}

/// Writes the conformance repository and starts the reference server on
/// it; returns the four targets (both families on both transports).
pub async fn start(server_exe: Option<PathBuf>) -> Result<(Control, Vec<Target>), String> {
    start_with(server_exe, MAX_MSG_MB).await
}

/// As [`start`], with another message limit (the benchmarks use 512 MiB).
pub async fn start_with(
    server_exe: Option<PathBuf>,
    max_msg_mb: u32,
) -> Result<(Control, Vec<Target>), String> {
    let repository =
        tempfile::tempdir().map_err(|e| format!("cannot make a temporary folder: {e}"))?;
    models::write(
        Layout::Reference,
        repository.path(),
        ReferenceOptions {
            identity_replicas: 2,
        },
    )
    .map_err(|e| format!("cannot write the conformance models: {e}"))?;
    let running = server::start(config(repository.path(), max_msg_mb))
        .await
        .map_err(|e| format!("the reference server did not start: {e}"))?;
    let mut targets = Vec::new();
    for family in [Family::MindSpore, Family::OpenInference] {
        targets.push(Target {
            family,
            transport: Transport::Grpc,
            tls: false,
            authority: running.grpc_address.to_string(),
        });
        targets.push(Target {
            family,
            transport: Transport::Http,
            tls: false,
            authority: running.rest_address.to_string(),
        });
    }
    Ok((
        Control {
            running,
            repository,
            server_exe,
        },
        targets,
    ))
}

/// The body of `conformance serve`: serves the conformance repository on
/// ephemeral ports, prints `READY <grpc> <rest>`, and runs until killed.
pub async fn serve_forever(max_msg_mb: u32) -> Result<(), String> {
    let repository = tempfile::tempdir().map_err(|e| e.to_string())?;
    models::write(
        Layout::Reference,
        repository.path(),
        ReferenceOptions::default(),
    )
    .map_err(|e| e.to_string())?;
    let running = server::start(config(repository.path(), max_msg_mb))
        .await
        .map_err(|e| e.to_string())?;
    println!("READY {} {}", running.grpc_address, running.rest_address);
    std::future::pending::<()>().await;
    Ok(())
}

/// Starts `exe serve` and waits for its addresses: the child, its gRPC URL
/// and its REST URL. The child is killed when dropped.
pub async fn spawn(exe: &Path) -> Result<(tokio::process::Child, String, String), String> {
    spawn_with(exe, MAX_MSG_MB).await
}

/// As [`spawn`], with another message limit.
pub async fn spawn_with(
    exe: &Path,
    max_msg_mb: u32,
) -> Result<(tokio::process::Child, String, String), String> {
    spawn_serve(exe, &["--max-msg-mb", &max_msg_mb.to_string()]).await
}

/// Starts `exe serve ARGS` (`--echo`: the bare echo servers) and waits for
/// its addresses, as [`spawn`].
pub async fn spawn_serve(
    exe: &Path,
    args: &[&str],
) -> Result<(tokio::process::Child, String, String), String> {
    let mut child = tokio::process::Command::new(exe)
        .arg("serve")
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", exe.display()))?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let ready = tokio::time::timeout(Duration::from_secs(300), async {
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(rest) = line.strip_prefix("READY ") {
                return Some(rest.to_owned());
            }
        }
        None
    })
    .await
    .map_err(|_| "the server process did not start in 300 s".to_string())?
    .ok_or("the server process ended before it was ready")?;
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let (g, r) = ready.split_once(' ').ok_or("a malformed READY line")?;
    Ok((child, format!("grpc://{g}"), format!("http://{r}")))
}
