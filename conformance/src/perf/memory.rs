//! The server's resident memory around one large request: a server process
//! (`conformance serve`) is started, its RSS read from `/proc` before and
//! after.

use std::path::Path;

/// `VmRSS` and `VmHWM` (peak) of a process, in bytes.
pub fn rss(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kb * 1024)
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// Clears the peak (`VmHWM`) of a process so that the next reading is the
/// peak since now (Linux: write 5 to `/proc/<pid>/clear_refs`).
pub fn reset_peak(pid: u32) -> bool {
    std::fs::write(Path::new(&format!("/proc/{pid}/clear_refs")), "5").is_ok()
}
