//! How much of the machine's CPU time the hypervisor gave to others during a
//! measurement (the `steal` column of `/proc/stat`): on a shared virtual
//! machine, latency figures taken while it is high are not comparable with
//! figures taken while it is not, so every benchmark prints it.

/// A reading of the machine's CPU time counters (`/proc/stat`, the `cpu`
/// line), in clock ticks.
#[derive(Clone, Copy, Debug)]
pub struct CpuTimes {
    steal: u64,
    total: u64,
}

impl CpuTimes {
    /// Now; `None` where there is no `/proc/stat` (not Linux).
    pub fn now() -> Option<CpuTimes> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        parse(stat.lines().next()?)
    }

    /// The share of CPU time stolen between `self` and `later`, percent.
    pub fn stolen_since(self, later: CpuTimes) -> f64 {
        let total = later.total.saturating_sub(self.total);
        let steal = later.steal.saturating_sub(self.steal);
        100.0 * steal as f64 / total.max(1) as f64
    }
}

/// Prints the share stolen since `from` (a reading taken when the run
/// began), as the last line of a run; nothing where `/proc/stat` is absent.
pub fn print_since(from: Option<CpuTimes>) {
    if let (Some(a), Some(b)) = (from, CpuTimes::now()) {
        println!(
            "machine: {:.1}% of CPU time stolen by the hypervisor during this run",
            a.stolen_since(b)
        );
    }
}

/// `cpu  user nice system idle iowait irq softirq steal guest guest_nice`
/// (guest time is already counted in user time, so it is left out of the
/// total).
fn parse(line: &str) -> Option<CpuTimes> {
    let mut fields = line.split_whitespace();
    if fields.next()? != "cpu" {
        return None;
    }
    let values: Vec<u64> = fields
        .take(8)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    if values.len() < 8 {
        return None;
    }
    Some(CpuTimes {
        steal: values[7],
        total: values.iter().sum(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steal_is_the_eighth_counter_of_the_cpu_line() {
        let a = parse("cpu  100 0 50 800 0 0 0 50 0 0").unwrap();
        let b = parse("cpu  200 0 100 1500 0 0 0 200 7 0").unwrap();
        // 150 stolen of 1000 ticks.
        assert!((a.stolen_since(b) - 15.0).abs() < 1e-9);
        assert!(parse("cpu0 1 2 3 4 5 6 7 8").is_none());
        assert!(parse("cpu  1 2 3").is_none());
    }
}
