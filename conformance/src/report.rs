//! The report: a table for people, JSON and JUnit XML for CI.

use std::fmt::Write as _;
use std::time::Duration;

use crate::check::Outcome;

/// One check on one target.
#[derive(Clone, Debug)]
pub struct Row {
    /// The check's name.
    pub check: String,
    /// The target, as `SERVING_TARGET` writes it.
    pub target: String,
    /// What happened.
    pub outcome: Outcome,
    /// How long it took.
    pub duration: Duration,
}

/// Every row of a run.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// The rows, in run order.
    pub rows: Vec<Row>,
}

impl Report {
    /// Rows that failed.
    pub fn failures(&self) -> impl Iterator<Item = &Row> {
        self.rows
            .iter()
            .filter(|r| matches!(r.outcome, Outcome::Fail(_)))
    }

    /// (pass, fail, not applicable).
    pub fn counts(&self) -> (usize, usize, usize) {
        let count = |label| {
            self.rows
                .iter()
                .filter(|r| r.outcome.label() == label)
                .count()
        };
        (count("pass"), count("fail"), count("n/a"))
    }

    /// A plain-text table.
    pub fn table(&self) -> String {
        // Each column as wide as its longest cell, at least its heading.
        let width = |heading: &str, cell: fn(&Row) -> &str| {
            self.rows
                .iter()
                .map(|r| cell(r).len())
                .fold(heading.len(), usize::max)
        };
        let w_check = width("check", |r| &r.check);
        let w_target = width("target", |r| &r.target);
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{:<w_check$}  {:<w_target$}  {:<4}  {:>7}  detail",
            "check", "target", "", "ms"
        );
        for r in &self.rows {
            let detail: String = r.outcome.detail().chars().take(400).collect();
            let _ = writeln!(
                out,
                "{:<w_check$}  {:<w_target$}  {:<4}  {:>7}  {}",
                r.check,
                r.target,
                r.outcome.label(),
                r.duration.as_millis(),
                detail
            );
        }
        let (p, f, n) = self.counts();
        let _ = writeln!(out, "\n{p} passed, {f} failed, {n} not applicable");
        out
    }

    /// The report as JSON.
    pub fn json(&self) -> serde_json::Value {
        let (p, f, n) = self.counts();
        serde_json::json!({
            "passed": p,
            "failed": f,
            "not_applicable": n,
            "results": self.rows.iter().map(|r| serde_json::json!({
                "check": r.check,
                "target": r.target,
                "outcome": r.outcome.label(),
                "detail": r.outcome.detail(),
                "millis": r.duration.as_millis() as u64,
            })).collect::<Vec<_>>(),
        })
    }

    /// The report as JUnit XML: one test suite per target, one test case
    /// per check; n/a is a skipped test.
    pub fn junit(&self) -> String {
        let mut targets: Vec<&str> = self.rows.iter().map(|r| r.target.as_str()).collect();
        targets.dedup();
        let (_, f, n) = self.counts();
        let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        let _ = writeln!(
            out,
            "<testsuites name=\"conformance\" tests=\"{}\" failures=\"{f}\" skipped=\"{n}\">",
            self.rows.len()
        );
        for t in targets {
            let rows: Vec<&Row> = self.rows.iter().filter(|r| r.target == t).collect();
            let fails = rows.iter().filter(|r| r.outcome.label() == "fail").count();
            let skips = rows.iter().filter(|r| r.outcome.label() == "n/a").count();
            let _ = writeln!(
                out,
                "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{fails}\" skipped=\"{skips}\">",
                xml(t),
                rows.len()
            );
            for r in rows {
                let _ = write!(
                    out,
                    "    <testcase classname=\"{}\" name=\"{}\" time=\"{:.3}\"",
                    xml(t),
                    xml(&r.check),
                    r.duration.as_secs_f64()
                );
                match &r.outcome {
                    Outcome::Pass(_) => out.push_str("/>\n"),
                    Outcome::Fail(d) => {
                        let _ = writeln!(
                            out,
                            ">\n      <failure message=\"{}\"/>\n    </testcase>",
                            xml(d)
                        );
                    }
                    Outcome::NotApplicable(d) => {
                        let _ = writeln!(
                            out,
                            ">\n      <skipped message=\"{}\"/>\n    </testcase>",
                            xml(d)
                        );
                    }
                }
            }
            out.push_str("  </testsuite>\n");
        }
        out.push_str("</testsuites>\n");
        out
    }
}

fn xml(s: &str) -> String {
    s.chars()
        .filter(|&c| c == '\t' || c == '\n' || c >= ' ')
        .map(|c| match c {
            '&' => "&amp;".to_string(),
            '<' => "&lt;".to_string(),
            '>' => "&gt;".to_string(),
            '"' => "&quot;".to_string(),
            '\'' => "&apos;".to_string(),
            c => c.to_string(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        let report = Report {
            rows: vec![
                Row {
                    check: "a.b".into(),
                    target: "oip+grpc://h:1".into(),
                    outcome: Outcome::Pass("ok".into()),
                    duration: Duration::from_millis(3),
                },
                Row {
                    check: "a.c".into(),
                    target: "oip+grpc://h:1".into(),
                    outcome: Outcome::Fail("<got> & \"x\"".into()),
                    duration: Duration::ZERO,
                },
                Row {
                    check: "a.d".into(),
                    target: "ms+http://h:2".into(),
                    outcome: Outcome::NotApplicable("no".into()),
                    duration: Duration::ZERO,
                },
            ],
        };
        assert_eq!(report.counts(), (1, 1, 1));
        let junit = report.junit();
        assert!(
            junit.contains("<failure message=\"&lt;got&gt; &amp; &quot;x&quot;\"/>"),
            "{junit}"
        );
        assert!(junit.contains("<skipped message=\"no\"/>"), "{junit}");
        assert_eq!(report.json()["failed"], 1);
        assert!(
            report
                .table()
                .contains("1 passed, 1 failed, 1 not applicable")
        );
    }
}
