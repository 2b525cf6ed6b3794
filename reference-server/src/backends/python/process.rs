//! One Python worker process: its control channel (framed JSON on its
//! stdin and stdout), its stderr (logged), and the shared-memory region
//! tensors cross by.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use serving_proto::gather::{Budget, Charge, Exhausted};

use super::bls::{Bls, BlsFailure};
use super::region::Region;
use crate::engine::backend::{RunError, Siblings};

/// The largest control message a worker may send (its replies describe
/// tensors; their bytes are in the region).
const MAX_MESSAGE: usize = 16 << 20;

/// A running worker.
pub(crate) struct Process {
    child: Child,
    stdin: ChildStdin,
    /// Read on the calling thread: a reply wakes no other thread first.
    stdout: ChildStdout,
    pub(crate) region: Region,
    label: String,
    /// The server's memory for requests: what a call writes into the
    /// region beyond its first size is charged to it for the call.
    memory: Arc<Budget>,
    /// The region's first size, which the instance holds whatever it runs.
    base: usize,
    /// The current call's charge (see [`Process::reserve`]).
    reserved: Option<Charge>,
    /// A larger region the worker asked for during the current call, and
    /// the budget refused: the call's failure is then for want of memory.
    refused: Option<Exhausted>,
    /// The current call's decoupled BLS requests, by the number the worker
    /// reads their responses by.
    pub(super) streams: std::collections::HashMap<u64, super::bls::BlsResponses>,
    pub(super) next_stream: u64,
}

impl std::fmt::Debug for Process {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Process")
            .field("pid", &self.child.id())
            .field("label", &self.label)
            .finish_non_exhaustive()
    }
}

/// Where the worker's scripts are and which interpreter runs them.
#[derive(Clone, Debug)]
pub(crate) struct Launch {
    pub(crate) python: PathBuf,
    pub(crate) scripts: PathBuf,
    /// What a grown region is charged to.
    pub(crate) memory: Arc<Budget>,
}

/// What takes each response a decoupled model sends during a call: the
/// message and the region its outputs lie in.
pub(crate) type Respond<'a> = dyn FnMut(&Value, &[u8]) + 'a;

impl Process {
    /// Starts a worker for `label` (`model/version/instance`, for logs)
    /// with a region of `region_size` bytes mapped.
    pub(crate) fn start(
        launch: &Launch,
        label: &str,
        region_size: usize,
    ) -> Result<Process, String> {
        let mut child = Command::new(&launch.python)
            .arg("-u")
            .arg(launch.scripts.join("serving_python_worker.py"))
            .env("PYTHONPATH", python_path(&launch.scripts))
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", launch.python.display()))?;
        let stdin = child.stdin.take().expect("piped");
        let stdout = child.stdout.take().expect("piped");
        let stderr = child.stderr.take().expect("piped");
        let name = label.to_owned();
        std::thread::Builder::new()
            .name(format!("py-log {label}"))
            .spawn(move || log_lines(stderr, &name))
            .map_err(|e| e.to_string())?;
        let region = Region::create(region_size).map_err(|e| format!("shared memory: {e}"))?;
        let mut p = Process {
            child,
            stdin,
            stdout,
            base: region.len(),
            region,
            label: label.to_owned(),
            memory: launch.memory.clone(),
            reserved: None,
            refused: None,
            streams: Default::default(),
            next_stream: 0,
        };
        p.announce_region(None)?;
        Ok(p)
    }

    /// Tells the worker to map the current region; once it has, the
    /// region's name is removed (the mappings stay).
    fn announce_region(&mut self, deadline: Option<Instant>) -> Result<(), String> {
        let msg = json!({"op": "region", "path": self.region.path(), "size": self.region.len()});
        self.send(&msg).map_err(|e| e.to_string())?;
        let reply = self.receive(deadline).map_err(|e| e.to_string())?;
        self.region.unlink();
        ok(reply).map(|_| ())
    }

    fn send(&mut self, msg: &Value) -> Result<(), RunError> {
        let body = serde_json::to_vec(msg).expect("JSON");
        let mut frame = Vec::with_capacity(4 + body.len());
        frame.extend_from_slice(&(body.len() as u32).to_le_bytes());
        frame.extend_from_slice(&body);
        self.stdin
            .write_all(&frame)
            .and_then(|()| self.stdin.flush())
            .map_err(|e| self.lost(format!("cannot write to it: {e}")))
    }

    fn receive(&mut self, deadline: Option<Instant>) -> Result<Value, RunError> {
        if let Some(d) = deadline
            && !readable_by(&self.stdout, d)
        {
            let _ = self.child.kill();
            return Err(RunError::Lost(format!(
                "the Python model {} did not answer before the request's deadline and was stopped; it restarts",
                self.label
            )));
        }
        match read_reply(&mut self.stdout) {
            Ok(v) => Ok(v),
            Err(e) => Err(self.lost(e)),
        }
    }

    /// The worker is gone or broken: why, with its exit status.
    fn lost(&mut self, why: String) -> RunError {
        let _ = self.child.kill();
        let status = self
            .child
            .wait()
            .map(|s| format!(" ({s})"))
            .unwrap_or_default();
        RunError::Lost(format!(
            "the Python model {} stopped{status}: {why}; it restarts",
            self.label
        ))
    }

    /// Sends `msg` and returns the answer (`Err(Failed)` with the worker's
    /// text when it refused), serving the worker's requests for a larger
    /// region on the way.
    pub(crate) fn call(
        &mut self,
        msg: &Value,
        deadline: Option<Instant>,
        bls: Option<&Bls>,
    ) -> Result<Value, RunError> {
        self.call_with(msg, deadline, bls, None, None)
    }

    /// [`Process::call`], serving the worker's calls of the replica's
    /// other models (`siblings`: a MindSpore stage's `Model.call`) and
    /// handing each response a decoupled model sends on the way to
    /// `respond`, with the region it lies in.
    pub(crate) fn call_with(
        &mut self,
        msg: &Value,
        deadline: Option<Instant>,
        bls: Option<&Bls>,
        siblings: Option<&Siblings<'_>>,
        mut respond: Option<&mut Respond<'_>>,
    ) -> Result<Value, RunError> {
        self.refused = None;
        self.send(msg)?;
        loop {
            let reply = self.receive(deadline)?;
            match reply.get("op").and_then(Value::as_str) {
                Some("need") => {
                    let bytes = reply.get("bytes").and_then(Value::as_u64).unwrap_or(0) as usize;
                    match self
                        .reserve(bytes)
                        .and_then(|()| self.grow_to(bytes, deadline))
                    {
                        // The worker's outputs do not fit, and the server
                        // has no room for more: the worker fails the call.
                        Err(RunError::Memory(exhausted)) => {
                            // A BLS request's refusal is its response's
                            // error, which the model may handle.
                            if reply.get("bls").and_then(Value::as_bool) != Some(true) {
                                self.refused = Some(exhausted);
                            }
                            let why = format!(
                                "{} more bytes of server memory are needed, and requests hold {} of the {} bytes this server gives them (--max-incoming-mb)",
                                exhausted.wanted, exhausted.held, exhausted.limit
                            );
                            self.send(&json!({"op": "region", "refused": why}))?;
                        }
                        // The worker waits for a region that will not come:
                        // it cannot go on.
                        grown => grown.map_err(lost)?,
                    }
                }
                Some("response") => {
                    let answer = match respond.as_mut() {
                        Some(respond) => {
                            respond(&reply, self.region.bytes());
                            json!({"ok": true})
                        }
                        None => {
                            json!({"ok": false, "error": "this model is not decoupled: its responses come back from execute"})
                        }
                    };
                    self.send(&answer)?;
                }
                Some(op @ ("infer" | "next" | "cancel" | "call_model")) => {
                    let answer = match op {
                        "call_model" => self.call_model(&reply, siblings, deadline),
                        _ => self.bls(op, &reply, bls, deadline),
                    };
                    let answer = match answer {
                        Ok(a) => a,
                        Err(BlsFailure::Request(e)) => json!({"ok": false, "error": e}),
                        // The worker waits for an answer that will not
                        // come: it cannot go on.
                        Err(BlsFailure::Worker(e)) => return Err(lost(e)),
                    };
                    self.send(&answer)?;
                }
                _ => {
                    return ok(reply).map_err(|e| match self.refused.take() {
                        Some(exhausted) => RunError::Memory(exhausted),
                        None => RunError::Failed(e),
                    });
                }
            }
        }
    }

    /// A tensor the worker laid out in the region, copied out of it.
    pub(super) fn tensor_at(&self, spec: &Value) -> Result<serving_proto::Tensor, String> {
        super::instance::region_tensor("input", spec, self.region.bytes())
    }

    /// Charges the current call for using the first `bytes` of the
    /// region, beyond its first size (which every instance holds): before
    /// they are written, until [`Process::release`]. The pages a call
    /// writes are what the region costs (the object is sparse), so a
    /// region kept larger from an earlier call costs a small call nothing.
    /// `Err(Memory)` when the budget has no room, saying how much the
    /// call needs in all.
    pub(crate) fn reserve(&mut self, bytes: usize) -> Result<(), RunError> {
        let wanted = bytes.saturating_sub(self.base) as u64;
        let have = self.reserved.as_ref().map_or(0, Charge::bytes);
        if wanted <= have {
            return Ok(());
        }
        let charged = match self.reserved.as_mut() {
            Some(c) => c.set(wanted),
            None => self.memory.charge(wanted).map(|c| {
                self.reserved = Some(c);
            }),
        };
        charged.map_err(|e| {
            RunError::Memory(Exhausted {
                wanted,
                held: e.held.saturating_sub(have),
                limit: e.limit,
            })
        })
    }

    /// Ends the current call: gives back its charge, and drops the
    /// responses of decoupled BLS requests it did not read.
    pub(crate) fn release(&mut self) {
        self.reserved = None;
        self.streams.clear();
    }

    /// Replaces the region with one of at least `bytes` (twice the current
    /// size when that is more, so that growing is rare: the pages a call
    /// does not write cost nothing); the caller has reserved what it will
    /// write.
    pub(crate) fn grow_to(
        &mut self,
        bytes: usize,
        deadline: Option<Instant>,
    ) -> Result<(), RunError> {
        let size = bytes.max(self.region.len().saturating_mul(2));
        self.region =
            Region::create(size).map_err(|e| RunError::Failed(format!("shared memory: {e}")))?;
        self.announce_region(deadline).map_err(RunError::Failed)
    }

    /// Gives back a region that a large call grew past `keep` bytes: a
    /// new one of `size` replaces it, so that one large request does not
    /// keep its memory held by the instance for good (written /dev/shm
    /// pages stay resident until the object goes).
    pub(crate) fn shrink(&mut self, keep: usize, size: usize) {
        if self.region.len() <= keep {
            return;
        }
        let deadline = Some(Instant::now() + Duration::from_secs(5));
        let replaced = Region::create(size)
            .map_err(|e| format!("shared memory: {e}"))
            .and_then(|r| {
                self.region = r;
                self.announce_region(deadline)
            });
        if let Err(e) = replaced {
            // The next call finds a broken worker out and restarts it.
            tracing::warn!(model = %self.label, error = %e, "could not shrink the Python worker's region");
        }
    }

    /// Asks the model to finish (`finalize`) and waits a moment for it.
    pub(crate) fn stop(mut self) {
        let deadline = Some(Instant::now() + Duration::from_secs(5));
        let _ = self.call(&json!({"op": "finalize"}), deadline, None);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A failure while the worker waits for an answer leaves it out of step
/// with the server: the instance is lost (restarted), not just the call.
fn lost(e: RunError) -> RunError {
    match e {
        RunError::Failed(why) => RunError::Lost(why),
        other => other,
    }
}

fn ok(reply: Value) -> Result<Value, String> {
    if reply.get("ok").and_then(Value::as_bool) == Some(true) {
        Ok(reply)
    } else {
        Err(reply
            .get("error")
            .and_then(Value::as_str)
            .unwrap_or("the Python worker answered without a result")
            .to_owned())
    }
}

fn python_path(scripts: &Path) -> std::ffi::OsString {
    let mut path = scripts.as_os_str().to_owned();
    if let Some(old) = std::env::var_os("PYTHONPATH") {
        path.push(":");
        path.push(old);
    }
    path
}

/// Whether the worker's stdout has something to read before `deadline`.
fn readable_by(stdout: &ChildStdout, deadline: Instant) -> bool {
    use rustix::event::{PollFd, PollFlags, Timespec, poll};
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let timeout = Timespec {
            tv_sec: left.as_secs().min(i64::MAX as u64) as i64,
            tv_nsec: i64::from(left.subsec_nanos()),
        };
        let mut fds = [PollFd::new(stdout, PollFlags::IN)];
        match poll(&mut fds, Some(&timeout)) {
            // Readable, closed or failed: the read says which.
            Ok(n) if n > 0 => return true,
            Ok(_) => return false,
            Err(rustix::io::Errno::INTR) => continue,
            Err(_) => return true,
        }
    }
}

/// One framed reply: a 4-byte little-endian length, then JSON.
fn read_reply(stdout: &mut impl Read) -> Result<Value, String> {
    let mut head = [0u8; 4];
    stdout
        .read_exact(&mut head)
        .map_err(|_| "its control channel closed".to_owned())?;
    let n = u32::from_le_bytes(head) as usize;
    if n > MAX_MESSAGE {
        return Err(format!(
            "it sent a control message of {n} bytes, over the {MAX_MESSAGE} allowed"
        ));
    }
    let mut body = vec![0u8; n];
    stdout
        .read_exact(&mut body)
        .map_err(|_| "its control channel closed inside a message".to_owned())?;
    serde_json::from_slice(&body).map_err(|e| format!("it sent a bad control message: {e}"))
}

/// Logs the worker's stderr: lines of `pb_utils.Logger` at their level,
/// anything else (prints, tracebacks) at info.
fn log_lines(stderr: impl Read, label: &str) {
    for line in BufReader::new(stderr).lines() {
        let Ok(line) = line else { return };
        match line.strip_prefix("\u{1e}serving-python ") {
            Some(rest) => {
                let (level, text) = rest.split_once(' ').unwrap_or((rest, ""));
                match level {
                    "ERROR" => tracing::error!(target: "python", model = label, "{text}"),
                    "WARN" => tracing::warn!(target: "python", model = label, "{text}"),
                    "VERBOSE" => tracing::debug!(target: "python", model = label, "{text}"),
                    _ => tracing::info!(target: "python", model = label, "{text}"),
                }
            }
            None => tracing::info!(target: "python", model = label, "{line}"),
        }
    }
}
