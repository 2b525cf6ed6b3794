//! Triton's own trace files (`trace_mode triton`, `--trace-config
//! triton,file=PATH`): each traced request as Triton 2.51 writes it, a
//! JSON array of objects, the model's (`{"id", "model_name",
//! "model_version"}`) among its timestamps (`{"id", "timestamps": [{"name",
//! "ns"}]}`), the times in nanoseconds of the monotonic clock, so Triton's
//! `trace_summary.py` reads them.
//!
//! With `log_frequency` N (N > 0) the traces go to `PATH.0`, `PATH.1`, ...,
//! N to a file, as Triton's do. With 0 they go to `PATH` itself. Triton
//! keeps those in memory until the file changes (2.51 writes nothing at
//! exit); here each trace is written as it ends, and the file is a whole
//! JSON array after every trace. Nothing is kept in memory but a bounded
//! queue: a writer thread of its own appends, and a full queue drops
//! traces, never a request.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Seek as _, SeekFrom, Write as _};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::time::Instant;

/// Traces waiting to be written at most; more are dropped.
const QUEUED: usize = 1024;

/// One traced request, ready to write.
#[derive(Debug)]
pub(crate) struct FileTrace {
    /// Where it goes (the setting's `trace_file`).
    pub(crate) path: String,
    /// The setting's `log_frequency`.
    pub(crate) log_frequency: u64,
    /// Its JSON objects, comma-separated, without the array's brackets.
    pub(crate) objects: String,
}

enum Message {
    Trace(FileTrace),
    /// Answered once everything queued before it is written.
    Flush(std::sync::mpsc::Sender<()>),
}

/// The writer thread's end of the queue.
#[derive(Debug)]
pub(crate) struct Writer {
    tx: SyncSender<Message>,
}

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Message::Trace(t) => write!(f, "Trace({})", t.path),
            Message::Flush(_) => f.write_str("Flush"),
        }
    }
}

impl Writer {
    /// Starts the writer thread.
    pub(crate) fn start() -> std::io::Result<Writer> {
        let (tx, rx) = std::sync::mpsc::sync_channel(QUEUED);
        std::thread::Builder::new()
            .name("trace-files".into())
            .spawn(move || write_loop(rx))?;
        Ok(Writer { tx })
    }

    /// Queues `trace`; dropped when the queue is full.
    pub(crate) fn send(&self, trace: FileTrace) {
        match self.tx.try_send(Message::Trace(trace)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                tracing::debug!("trace file queue full; a trace is dropped")
            }
            Err(TrySendError::Disconnected(_)) => {}
        }
    }

    /// Waits until every trace queued so far is in its file.
    pub(crate) fn flush(&self) {
        let (tx, rx) = std::sync::mpsc::channel();
        if self.tx.send(Message::Flush(tx)).is_ok() {
            let _ = rx.recv_timeout(std::time::Duration::from_secs(5));
        }
    }
}

/// A trace file being written.
struct Open {
    file: File,
    /// The index of `PATH.index` (`log_frequency` > 0).
    index: u64,
    /// Traces in this file so far.
    traces: u64,
}

fn write_loop(rx: Receiver<Message>) {
    let mut open: HashMap<String, Open> = HashMap::new();
    let mut warned = false;
    while let Ok(message) = rx.recv() {
        match message {
            Message::Trace(trace) => {
                if let Err(e) = append(&mut open, &trace) {
                    // Once: a full disk would otherwise log every request.
                    if !warned {
                        tracing::warn!(path = %trace.path, error = %e, "a trace could not be written to its file");
                        warned = true;
                    }
                    open.remove(&trace.path);
                }
            }
            Message::Flush(done) => {
                let _ = done.send(());
            }
        }
    }
}

/// The file `path` names for index `index`: `PATH.index`, or `PATH` when
/// every trace goes to one file.
fn file_name(path: &str, log_frequency: u64, index: u64) -> String {
    if log_frequency == 0 {
        path.to_owned()
    } else {
        format!("{path}.{index}")
    }
}

fn append(open: &mut HashMap<String, Open>, trace: &FileTrace) -> std::io::Result<()> {
    // The next file once this one holds log_frequency traces.
    if let Some(o) = open.get(&trace.path)
        && trace.log_frequency > 0
        && o.traces >= trace.log_frequency
    {
        let index = o.index + 1;
        open.remove(&trace.path);
        let file = File::create(file_name(&trace.path, trace.log_frequency, index))?;
        open.insert(
            trace.path.clone(),
            Open {
                file,
                index,
                traces: 0,
            },
        );
    }
    let o = match open.get_mut(&trace.path) {
        Some(o) => o,
        None => {
            let file = File::create(file_name(&trace.path, trace.log_frequency, 0))?;
            open.entry(trace.path.clone()).or_insert(Open {
                file,
                index: 0,
                traces: 0,
            })
        }
    };
    if o.traces == 0 {
        o.file.write_all(b"[")?;
    } else {
        // Over the closing bracket: the file stays one JSON array.
        o.file.seek(SeekFrom::End(-1))?;
        o.file.write_all(b",")?;
    }
    o.file.write_all(trace.objects.as_bytes())?;
    o.file.write_all(b"]")?;
    o.traces += 1;
    Ok(())
}

/// The monotonic clock's nanoseconds for `t` (Triton's trace times).
pub(crate) struct Clock {
    now: Instant,
    now_ns: i128,
}

impl Clock {
    /// The clock read now.
    pub(crate) fn now() -> Clock {
        let now = Instant::now();
        let ts = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
        Clock {
            now,
            now_ns: ts.tv_sec as i128 * 1_000_000_000 + ts.tv_nsec as i128,
        }
    }

    /// `t` in the monotonic clock's nanoseconds.
    pub(crate) fn ns(&self, t: Instant) -> i128 {
        if t <= self.now {
            self.now_ns - self.now.duration_since(t).as_nanos() as i128
        } else {
            self.now_ns + t.duration_since(self.now).as_nanos() as i128
        }
    }
}

/// A request's trace as Triton's objects: the model's object after the
/// receive times, then one object per timestamp, in Triton's order.
pub(crate) fn objects(
    id: u64,
    model: &str,
    version: i64,
    stamps: &[(&str, i128)],
    model_after: usize,
) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let model_object = serde_json::json!({
        "id": id,
        "model_name": model,
        "model_version": version,
    });
    for (i, (name, ns)) in stamps.iter().enumerate() {
        if i == model_after {
            let _ = write!(out, "{model_object},");
        }
        let _ = write!(
            out,
            r#"{{"id":{id},"timestamps":[{{"name":"{name}","ns":{ns}}}]}},"#
        );
    }
    if model_after >= stamps.len() {
        let _ = write!(out, "{model_object},");
    }
    out.pop();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_file_is_a_json_array_after_every_trace_and_log_frequency_splits_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("trace.json").display().to_string();
        let mut open = HashMap::new();
        for id in 1..=3 {
            let objects = objects(id, "m", 1, &[("REQUEST_START", 10), ("REQUEST_END", 20)], 0);
            append(
                &mut open,
                &FileTrace {
                    path: path.clone(),
                    log_frequency: 2,
                    objects,
                },
            )
            .unwrap();
            // Whole after every trace.
            let first: serde_json::Value =
                serde_json::from_slice(&std::fs::read(format!("{path}.0")).unwrap()).unwrap();
            assert_eq!(first.as_array().unwrap().len(), 3 * id.min(2) as usize);
        }
        let second: serde_json::Value =
            serde_json::from_slice(&std::fs::read(format!("{path}.1")).unwrap()).unwrap();
        let second = second.as_array().unwrap();
        assert_eq!(second.len(), 3);
        assert_eq!(second[0]["model_name"], "m");
        assert_eq!(second[0]["id"], 3);
        assert_eq!(second[2]["timestamps"][0]["name"], "REQUEST_END");
        assert!(!std::path::Path::new(&path).exists());
    }

    #[test]
    fn the_clock_keeps_order_and_distance() {
        let c = Clock::now();
        let earlier = c.now - std::time::Duration::from_micros(5);
        assert_eq!(c.ns(c.now) - c.ns(earlier), 5_000);
        assert!(c.ns(c.now) > 0);
    }
}
