//! The report: a table for people, JSON and JUnit XML for CI.

use std::fmt::Write as _;
use std::time::Duration;

use crate::check::Outcome;

/// One check on one target.
#[derive(Clone, Debug)]
pub struct Row {
    /// The check's name.
    pub check: String,
    /// The rule it enforces and the document it comes from.
    pub rule: String,
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
    /// The target profile the run used (its file, or how it was given),
    /// carried into the JSON and JUnit reports.
    pub profile: Option<String>,
}

/// How many rows of each outcome a report has.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Passed.
    pub passed: usize,
    /// Passed with a warning (a "should" or "may" not kept).
    pub warnings: usize,
    /// Failed.
    pub failed: usize,
    /// Not applicable.
    pub not_applicable: usize,
}

impl Report {
    /// Rows that failed.
    pub fn failures(&self) -> impl Iterator<Item = &Row> {
        self.rows
            .iter()
            .filter(|r| matches!(r.outcome, Outcome::Fail(_)))
    }

    /// How many rows of each outcome.
    pub fn counts(&self) -> Counts {
        let count = |label| {
            self.rows
                .iter()
                .filter(|r| r.outcome.label() == label)
                .count()
        };
        Counts {
            passed: count("pass"),
            warnings: count("warn"),
            failed: count("fail"),
            not_applicable: count("n/a"),
        }
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
        let c = self.counts();
        let _ = writeln!(
            out,
            "\n{} passed, {} warnings, {} failed, {} not applicable",
            c.passed, c.warnings, c.failed, c.not_applicable
        );
        if let Some(profile) = &self.profile {
            let _ = writeln!(out, "profile: {profile}");
        }
        out
    }

    /// The report as JSON.
    pub fn json(&self) -> serde_json::Value {
        let c = self.counts();
        serde_json::json!({
            "passed": c.passed,
            "warnings": c.warnings,
            "failed": c.failed,
            "not_applicable": c.not_applicable,
            "profile": self.profile,
            "results": self.rows.iter().map(|r| serde_json::json!({
                "check": r.check,
                "rule": r.rule,
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
        let c = self.counts();
        let (f, n) = (c.failed, c.not_applicable);
        let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        let _ = writeln!(
            out,
            "<testsuites name=\"conformance\" tests=\"{}\" failures=\"{f}\" skipped=\"{n}\">",
            self.rows.len()
        );
        if let Some(profile) = &self.profile {
            let _ = writeln!(
                out,
                "  <properties><property name=\"profile\" value=\"{}\"/></properties>",
                xml(profile)
            );
        }
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
                    // A warning passes; its text goes to the test's output.
                    Outcome::Warn(d) => {
                        let _ = writeln!(
                            out,
                            ">\n      <system-out>warning: {}</system-out>\n    </testcase>",
                            xml(d)
                        );
                    }
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
                    rule: "spec §1".into(),
                    target: "oip+grpc://h:1".into(),
                    outcome: Outcome::Pass("ok".into()),
                    duration: Duration::from_millis(3),
                },
                Row {
                    check: "a.c".into(),
                    rule: "spec §2".into(),
                    target: "oip+grpc://h:1".into(),
                    outcome: Outcome::Fail("<got> & \"x\"".into()),
                    duration: Duration::ZERO,
                },
                Row {
                    check: "a.d".into(),
                    rule: "spec §3".into(),
                    target: "ms+http://h:2".into(),
                    outcome: Outcome::NotApplicable("no".into()),
                    duration: Duration::ZERO,
                },
                Row {
                    check: "a.e".into(),
                    rule: "spec §4 (should)".into(),
                    target: "ms+http://h:2".into(),
                    outcome: Outcome::Warn("kept the must, not the should".into()),
                    duration: Duration::ZERO,
                },
            ],
            profile: Some("kserve.toml".into()),
        };
        assert_eq!(
            report.counts(),
            Counts {
                passed: 1,
                warnings: 1,
                failed: 1,
                not_applicable: 1
            }
        );
        assert!(
            report
                .junit()
                .contains("<system-out>warning: kept the must, not the should</system-out>")
        );
        assert!(report.junit().contains("value=\"kserve.toml\""));
        assert_eq!(report.json()["warnings"], 1);
        assert_eq!(report.json()["profile"], "kserve.toml");
        assert_eq!(report.json()["results"][0]["rule"], "spec §1");
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
                .contains("1 passed, 1 warnings, 1 failed, 1 not applicable")
        );
    }
}
