//! Output: a readable verdict per checker, the whole report as JSON, and a timeline of
//! critical sections as SVG.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde::{Deserialize, Serialize};

use crate::check::Verdict;
use crate::history::{History, Op, Phase};
use crate::run::{RunError, RunFailure, RunReport};

/// Writes `line` and a newline to stderr, ignoring a failure to: a reader that went away
/// (`… 2>&1 | tee log` after Ctrl-C) or a hung-up terminal must not panic a run, as
/// `eprintln!` would.
pub fn to_stderr(line: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr().lock(), "{}", printable(line));
}

/// `text` as it may reach a terminal: control characters but line feeds and tabs — a
/// NUL, an escape sequence, a carriage return, which a path, a URL or a saved report may
/// hold — written as Rust escapes (`\u{1b}`), so that none acts on the terminal nor
/// hides what stands before it.
pub fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    let acts = |c: char| c.is_control() && c != '\n' && c != '\t';
    if !text.contains(acts) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if acts(c) {
            let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// The most characters of a value a message echoes whole ([`cut`]).
pub const MAX_ECHO: usize = 200;

/// `value` as a message may echo it: whole up to [`MAX_ECHO`] characters; a longer one (a
/// 100 KB path or spec, a name in a hand-edited report) as its first [`MAX_ECHO`]
/// characters, then `…` and its full length, so that the message stays readable and
/// still says which value it is about.
///
/// ```
/// use turnstile_harness::report::{MAX_ECHO, cut};
///
/// assert_eq!(cut("mutex"), "mutex");
/// let long = "x".repeat(100_000);
/// assert_eq!(cut(&long), format!("{}… (100000 characters)", "x".repeat(MAX_ECHO)));
/// ```
pub fn cut(value: &str) -> std::borrow::Cow<'_, str> {
    match value.char_indices().nth(MAX_ECHO) {
        None => std::borrow::Cow::Borrowed(value),
        Some((end, _)) => std::borrow::Cow::Owned(format!(
            "{}… ({} characters)",
            &value[..end],
            value.chars().count()
        )),
    }
}

/// `text` (a message made elsewhere) with each of `values` longer than [`MAX_ECHO`]
/// characters that it echoes, as given or as `{:?}` escapes it, [`cut`]: for messages
/// whose maker did not cut what it echoed (clap's, a strategy's).
pub fn cut_echoes<'a>(text: &str, values: impl IntoIterator<Item = &'a str>) -> String {
    let mut long: Vec<&str> = values
        .into_iter()
        .filter(|v| v.chars().nth(MAX_ECHO).is_some())
        .collect();
    // The longest first: a value may hold a shorter one.
    long.sort_by_key(|v| std::cmp::Reverse(v.len()));
    let mut text = text.to_owned();
    for value in long {
        let escaped = format!("{value:?}");
        let escaped = &escaped[1..escaped.len() - 1];
        for form in [value, escaped] {
            if text.contains(form) {
                text = text.replace(form, &cut(form));
            }
        }
    }
    text
}

/// `text` on one line: every control character, line feeds and tabs too, written as
/// Rust escapes (`\n`, `\u{1b}`): for a value read from a file (a strategy's name in a
/// report) that a table cell or a line of its own shows, where a line feed would split
/// the row and a tab shift its columns.
pub fn one_line(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.contains(char::is_control) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c.is_control() {
            let _ = write!(out, "{}", c.escape_debug());
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// The report as text: one line per checker, its evidence indented below.
pub fn text(report: &RunReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "strategy {} ({} scope, {}), workload {}, {} procs x {} threads, {} ops requested, seed {}",
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
        report.requested,
        report.seed
    );
    let _ = writeln!(out, "data: {}", report.data);
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

/// What `check --json` prints on stdout, and `compare --json PATH` writes, in place of a
/// report when the run ends without a verdict (a [`RunError`]): `{"verdict":
/// "no-verdict", "exit": 3, "error": {"kind": "unavailable", "message": "…"}}`, so that a
/// script that reads the JSON has something to read, and no report of an earlier run is
/// taken for this one's. A run that kept its files (`--keep`) says where (`"kept"`), and
/// one with notes lists them (`"notes"`), as a report does.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NoVerdict {
    /// Always [`NoVerdict::VERDICT`], `no-verdict`: where a report says `pass`,
    /// `violation` or `inconclusive`.
    pub verdict: String,
    /// The command's exit code: 2 bad usage, 3 inconclusive, 128 + a signal's number.
    pub exit: i32,
    /// Why.
    pub error: NoVerdictError,
    /// Where the run's history and database were kept ([`RunFailure::kept`]); left out
    /// when they were not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kept: Option<std::path::PathBuf>,
    /// The run's notes ([`RunFailure::notes`]); left out when there are none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// Why a run ended without a verdict ([`NoVerdict::error`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NoVerdictError {
    /// What kind of error ([`NoVerdict::kind`]): `usage`, `unavailable`, `worker`, `io`,
    /// `timed-out`, `probe-timed-out` or `interrupted`.
    pub kind: String,
    /// What went wrong, in the words of the message on stderr without its `bad usage: `,
    /// `inconclusive: ` or `interrupted: ` ([`RunError::reason`]): passwords are `***`
    /// there as everywhere, and a long value it echoes is cut.
    pub message: String,
}

impl NoVerdict {
    /// The `verdict` of a run that ended without one.
    pub const VERDICT: &'static str = "no-verdict";

    /// The longest message a saved one may hold ([`NoVerdict::check_values`]).
    pub const MAX_MESSAGE: usize = 64 * 1024;

    /// The error `error`, whose message (its [`reason`](RunError::reason)) reads
    /// `message` (as the command shows it: long values it echoes cut).
    pub fn new(error: &RunError, message: String) -> Self {
        NoVerdict {
            verdict: Self::VERDICT.to_owned(),
            exit: error.exit_code(),
            error: NoVerdictError {
                kind: Self::kind(error).to_owned(),
                message,
            },
            kept: None,
            notes: Vec::new(),
        }
    }

    /// The run that ended as `failure`, whose message (its
    /// [`reason`](RunFailure::reason), which names where the files were kept) reads
    /// `message` and whose notes read `notes` (as the command shows them).
    pub fn of_run(failure: &RunFailure, message: String, notes: Vec<String>) -> Self {
        NoVerdict {
            kept: failure.kept.clone(),
            notes,
            ..Self::new(&failure.error, message)
        }
    }

    /// Bad usage the command found itself, before any run: `message`, exit 2.
    pub fn usage(message: String) -> Self {
        NoVerdict {
            verdict: Self::VERDICT.to_owned(),
            exit: 2,
            error: NoVerdictError {
                kind: "usage".to_owned(),
                message,
            },
            kept: None,
            notes: Vec::new(),
        }
    }

    /// The kind of `error`, as [`NoVerdictError::kind`] names it.
    pub fn kind(error: &RunError) -> &'static str {
        match error {
            RunError::Usage(_) => "usage",
            RunError::Unavailable(_) => "unavailable",
            RunError::Worker(_) => "worker",
            RunError::Io(_) => "io",
            RunError::TimedOut(_) => "timed-out",
            RunError::ProbeTimedOut(_) => "probe-timed-out",
            RunError::Interrupted(_) => "interrupted",
        }
    }

    /// As one line of JSON.
    pub fn json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    /// Checks one read back from a file (`compare --from-json`): `verdict` is
    /// `no-verdict`, `exit` one the command exits with when there is no verdict (2, 3, or
    /// 129 to 192: a signal's), `kind` one of the kinds, and the message, and the notes
    /// together, at most [`NoVerdict::MAX_MESSAGE`] bytes.
    ///
    /// # Errors
    /// What is wrong.
    pub fn check_values(&self) -> Result<(), String> {
        const KINDS: [&str; 7] = [
            "usage",
            "unavailable",
            "worker",
            "io",
            "timed-out",
            "probe-timed-out",
            "interrupted",
        ];
        if self.verdict != Self::VERDICT {
            return Err(format!(
                "\"verdict\" is {:?}, not {:?}",
                cut(&one_line(&self.verdict)),
                Self::VERDICT
            ));
        }
        if !matches!(self.exit, 2 | 3 | 129..=192) {
            return Err(format!(
                "\"exit\" is {}: a run without a verdict exits 2, 3 or 128 + a signal's number",
                self.exit
            ));
        }
        if !KINDS.contains(&self.error.kind.as_str()) {
            return Err(format!(
                "\"error\".\"kind\" is {:?}, none of {}",
                cut(&one_line(&self.error.kind)),
                KINDS.join(", ")
            ));
        }
        if self.error.message.len() > Self::MAX_MESSAGE {
            return Err(format!(
                "\"error\".\"message\" is {} bytes, past the {} of any message",
                self.error.message.len(),
                Self::MAX_MESSAGE
            ));
        }
        let notes: usize = self.notes.iter().map(String::len).sum();
        if notes > Self::MAX_MESSAGE {
            return Err(format!(
                "\"notes\" are {notes} bytes, past the {} of any run's",
                Self::MAX_MESSAGE
            ));
        }
        Ok(())
    }
}

impl std::fmt::Display for NoVerdict {
    /// As the command's message on stderr said it (`inconclusive: backend unavailable:
    /// …`), on one line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let said = match self.error.kind.as_str() {
            "usage" => "bad usage",
            "interrupted" => "interrupted",
            _ => "inconclusive",
        };
        write!(f, "{said}: {}", one_line(&self.error.message))
    }
}

/// The most sections [`svg`] draws.
pub const SVG_MAX_OPS: usize = 5000;

/// A timeline of the run's critical sections as SVG: one row per worker thread, one bar
/// per op from entering to leaving its section, bars that overlap another on the same
/// key in red. Shows at a glance whether a strategy excluded.
pub fn svg(history: &History) -> String {
    let ops: Vec<&Op> = history
        .ops
        .iter()
        .filter(|op| op.enter.is_some() && op.exit.is_some() && op.phase != Phase::Fail)
        .take(SVG_MAX_OPS)
        .collect();
    let overlapping = overlapping(&ops);
    let mut rows: Vec<(u32, u32)> = ops.iter().map(|op| (op.proc, op.thread)).collect();
    rows.sort_unstable();
    rows.dedup();
    let t0 = ops.iter().filter_map(|op| op.enter).min().unwrap_or(0);
    let t1 = ops
        .iter()
        .filter_map(|op| op.exit)
        .max()
        .unwrap_or(t0 + 1)
        .max(t0 + 1);
    let (width, row_h, left) = (1200.0, 14.0, 70.0);
    let scale = (width - left - 10.0) / (t1 - t0) as f64;
    let height = 30.0 + row_h * rows.len() as f64;
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="monospace" font-size="10">"#
    );
    let _ = writeln!(
        out,
        r#"<text x="4" y="12">critical sections over {:.3} ms; red: overlaps another on its key</text>"#,
        (t1 - t0) as f64 / 1e6
    );
    for (i, (proc, thread)) in rows.iter().enumerate() {
        let y = 20.0 + row_h * i as f64;
        let _ = writeln!(
            out,
            r#"<text x="4" y="{}">p{proc}/t{thread}</text>"#,
            y + 10.0
        );
    }
    for (op, red) in ops.iter().zip(&overlapping) {
        let row = rows
            .binary_search(&(op.proc, op.thread))
            .unwrap_or_default();
        let (enter, exit) = (op.enter.unwrap_or(t0), op.exit.unwrap_or(t0));
        let x = left + (enter - t0) as f64 * scale;
        let w = ((exit.saturating_sub(enter)) as f64 * scale).max(0.5);
        let y = 22.0 + row_h * row as f64;
        let _ = writeln!(
            out,
            r#"<rect x="{x:.2}" y="{y}" width="{w:.2}" height="{}" fill="{}"><title>{} {}</title></rect>"#,
            row_h - 4.0,
            if *red { "#d62728" } else { "#1f77b4" },
            op.label(),
            op.keys.join(",")
        );
    }
    out.push_str("</svg>\n");
    out
}

/// For each op, whether its section overlaps another's on a shared key.
fn overlapping(ops: &[&Op]) -> Vec<bool> {
    let mut red = vec![false; ops.len()];
    let mut by_key: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, op) in ops.iter().enumerate() {
        for k in &op.keys {
            by_key.entry(k).or_default().push(i);
        }
    }
    for (_, mut idx) in by_key {
        idx.sort_by_key(|&i| ops[i].enter);
        let mut last: Option<usize> = None;
        for i in idx {
            if let Some(h) = last
                && ops[i].enter < ops[h].exit
            {
                red[i] = true;
                red[h] = true;
                if ops[i].exit <= ops[h].exit {
                    continue;
                }
            }
            last = Some(i);
        }
    }
    red
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a run without a verdict prints: its shape, as scripts read it, and back.
    #[test]
    fn a_run_without_a_verdict_is_one_line_of_json_that_reads_back() {
        let error = RunError::Unavailable("redis at redis://127.0.0.1:1/0: refused".into());
        let no_verdict = NoVerdict::new(&error, error.reason());
        let json = no_verdict.json();
        assert!(!json.contains('\n'), "{json}");
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(
            value,
            serde_json::json!({
                "verdict": "no-verdict",
                "exit": 3,
                "error": {
                    "kind": "unavailable",
                    "message": "backend unavailable: redis at redis://127.0.0.1:1/0: refused"
                }
            })
        );
        let back: NoVerdict = serde_json::from_str(&json).unwrap();
        assert_eq!(back, no_verdict);
        assert_eq!(back.check_values(), Ok(()));
        assert_eq!(
            back.to_string(),
            "inconclusive: backend unavailable: redis at redis://127.0.0.1:1/0: refused"
        );
        let interrupted = NoVerdict::new(&RunError::Interrupted(2), "stopped".into());
        assert_eq!(
            (interrupted.exit, interrupted.check_values()),
            (130, Ok(()))
        );
        assert_eq!(NoVerdict::usage("x".into()).to_string(), "bad usage: x");
        // Read back, one no run writes is refused.
        for (field, value) in [
            ("exit", serde_json::json!(0)),
            ("exit", serde_json::json!(1)),
            ("verdict", serde_json::json!("pass")),
        ] {
            let mut edited = value_of(&no_verdict);
            edited[field] = value;
            let edited: NoVerdict = serde_json::from_value(edited).unwrap();
            assert!(edited.check_values().is_err(), "{field}");
        }
        let mut edited = value_of(&no_verdict);
        edited["error"]["kind"] = "nosuch".into();
        let edited: NoVerdict = serde_json::from_value(edited).unwrap();
        assert!(edited.check_values().is_err());
    }

    /// A run that kept its files says where, in its message and in `kept`, and lists its
    /// notes; one that kept nothing has neither field, as before.
    #[test]
    fn a_run_without_a_verdict_says_where_its_files_were_kept() {
        let failure = RunFailure {
            kept: Some("/tmp/kept".into()),
            notes: vec!["the run's tables are kept: postgres://…".into()],
            ..RunFailure::from(RunError::TimedOut(std::time::Duration::from_secs(1)))
        };
        assert_eq!(
            failure.to_string(),
            "inconclusive: the run did not finish within its time limit of 1s; history and database kept in /tmp/kept"
        );
        assert_eq!(failure.exit_code(), 3);
        let no_verdict = NoVerdict::of_run(&failure, failure.reason(), failure.notes.clone());
        let value = value_of(&no_verdict);
        assert_eq!(value["kept"], "/tmp/kept");
        assert_eq!(value["error"]["kind"], "timed-out");
        assert!(
            value["error"]["message"]
                .as_str()
                .unwrap()
                .ends_with("; history and database kept in /tmp/kept"),
            "{value}"
        );
        assert_eq!(value["notes"].as_array().map(Vec::len), Some(1));
        let back: NoVerdict = serde_json::from_str(&no_verdict.json()).unwrap();
        assert_eq!((back.check_values(), &back), (Ok(()), &no_verdict));
        let plain = value_of(&NoVerdict::of_run(
            &RunError::Worker("exited early".into()).into(),
            "a worker failed: exited early".into(),
            Vec::new(),
        ));
        assert!(
            plain.get("kept").is_none() && plain.get("notes").is_none(),
            "{plain}"
        );
    }

    fn value_of(no_verdict: &NoVerdict) -> serde_json::Value {
        serde_json::to_value(no_verdict).unwrap()
    }
}
