//! Output: a readable verdict per checker, or the whole report as JSON.

use std::fmt::Write;

use crate::check::Verdict;
use crate::run::RunReport;

/// The report as text: one line per checker, its evidence indented below.
pub fn text(report: &RunReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "strategy {} ({} scope, {}), workload {}, {} procs x {} threads, {} ops requested",
        report.strategy,
        report.scope,
        if report.transactional {
            "inside the resource's transaction"
        } else {
            "autocommit: only the strategy excludes"
        },
        report.workload,
        report.procs,
        report.threads,
        report.requested
    );
    let _ = writeln!(
        out,
        "ops: {} acknowledged, {} failed, {} unknown in {:.2?}; {} faults injected",
        report.acknowledged,
        report.failed,
        report.unknown,
        report.wall,
        report.faults.len()
    );
    if !report.errors.is_empty() {
        let errors: Vec<String> = report
            .errors
            .iter()
            .map(|(k, n)| format!("{k} x{n}"))
            .collect();
        let _ = writeln!(out, "errors: {}", errors.join(", "));
    }
    for note in &report.notes {
        let _ = writeln!(out, "note: {note}");
    }
    for c in &report.checks {
        let _ = writeln!(
            out,
            "{:<13} {:<12} {}",
            c.checker,
            c.verdict.to_string(),
            c.summary
        );
        for d in &c.details {
            let _ = writeln!(out, "    {d}");
        }
    }
    let _ = writeln!(
        out,
        "verdict: {}",
        match report.verdict {
            Verdict::Pass => "PASS",
            Verdict::Violation => "VIOLATION",
            Verdict::Inconclusive => "INCONCLUSIVE",
        }
    );
    if let Some(dir) = &report.kept {
        let _ = writeln!(out, "history and database kept in {}", dir.display());
    }
    out
}

/// The report as one JSON document.
pub fn json(report: &RunReport) -> String {
    serde_json::to_string_pretty(report).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
}
