//! The `compare` report: one record per strategy × setting, the run's reference floors and
//! the machine, printed as a table and written as JSON.

use std::fmt::Write;

use serde::{Deserialize, Serialize};

use crate::check::Verdict;

/// The whole report, as written to `--json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Report {
    /// turnstile's version.
    pub turnstile_version: String,
    /// Where it ran.
    pub machine: Machine,
    /// SQLite as configured for the run.
    pub sqlite: SqliteInfo,
    /// Where the settings kept their data: `sqlite` (a fresh file each), or a server's URL
    /// with any password replaced by `***` (reports of older versions: `sqlite`).
    #[serde(default = "sqlite")]
    pub data: String,
    /// Reference floors measured in the same run.
    pub floors: Vec<Floor>,
    /// Locks' own cycles measured in the same run (absent from reports of older versions).
    #[serde(default)]
    pub lock_cycles: Vec<LockCycle>,
    /// One record per strategy × workload × threads × processes × sync that ran to a
    /// verdict.
    pub results: Vec<Record>,
    /// Settings whose strategy claims to be safe there and had a violation (reports of
    /// older versions: absent, read as none).
    #[serde(default)]
    pub violations: Vec<Problem>,
    /// Settings whose strategy claims to be safe there and ended without a verdict: a
    /// checker was inconclusive (the setting is also in `results`), or the run could not be
    /// made (a backend out of reach: only here). Reports of older versions: absent.
    #[serde(default)]
    pub inconclusive: Vec<Problem>,
    /// What the table cannot say itself, one line each, printed under it: what the
    /// comparison left out (strategies skipped, as they do not run over the data or
    /// cannot protect the workload's state outside it; Redis strategies without a Redis;
    /// a Redis floor not measured), lock strategies whose verdict did not test their
    /// exclusion (they ran inside SQLite transactions), a control that could not run
    /// (reports of older versions: absent, read as none).
    #[serde(default)]
    pub notes: Vec<String>,
}

impl Report {
    /// The exit code of the run this report is of: 1 with a violation, else 3 with an
    /// inconclusive setting, else 0. In a report of an older version, without those
    /// lists, a record that claims safety and was not safe counts by its checkers'
    /// verdicts: 3 when they were only inconclusive, else 1.
    pub fn exit_code(&self) -> i32 {
        // In a report of this version such a record is in one of the lists.
        let older = self.violations.is_empty() && self.inconclusive.is_empty();
        let unsafe_records = self
            .results
            .iter()
            .filter(|r| older && r.claims_safe && !r.safe);
        let (mut violated, mut inconclusive) = (false, false);
        for r in unsafe_records {
            // Read as the table reads it: the word after each checker's name.
            if older_verdict(r) == Verdict::Inconclusive {
                inconclusive = true;
            } else {
                violated = true;
            }
        }
        if !self.violations.is_empty() || violated {
            1
        } else if !self.inconclusive.is_empty() || inconclusive {
            3
        } else {
            0
        }
    }

    /// Checks what a report read back (`compare --from-json`) says it measured: every
    /// rate and time is a number from 0 to [`MAX_MEASURE`] (a hand-edited report may hold
    /// `1e308`, which the table would print as 309 digits and the chart as 300 decades),
    /// every setting ran at least one thread in at least one process, and a record's
    /// `safe` agrees with its `verdict` (`safe` exactly when it is `pass`).
    ///
    /// # Errors
    /// What is out of range, and where.
    pub fn check_values(&self) -> Result<(), String> {
        let check = |what: &str, value: f64| {
            if (0.0..=MAX_MEASURE).contains(&value) {
                Ok(())
            } else {
                Err(format!(
                    "{what} is {value}, outside 0 to {MAX_MEASURE:e}: not a measurement"
                ))
            }
        };
        for (i, r) in self.results.iter().enumerate() {
            let at = |field: &str| format!("results[{i}].{field}");
            for (field, value) in [
                ("ops_per_sec", r.ops_per_sec),
                ("p50_us", r.p50_us),
                ("p99_us", r.p99_us),
                ("p999_us", r.p999_us),
                ("max_us", r.max_us),
            ] {
                check(&at(field), value)?;
            }
            // The verdict column reads `verdict`, the exit code of a report without its
            // lists reads `safe`: they must agree, or the two say different things.
            if let Some(verdict) = r.verdict
                && r.safe != (verdict == Verdict::Pass)
            {
                return Err(format!(
                    "{} ({} ×{} threads ×{} procs, sync={}) says \"safe\": {} but \"verdict\": {}: not a report `turnstile compare` writes (a setting is safe exactly when its verdict is pass)",
                    at("safe"),
                    shown(&r.strategy),
                    r.threads,
                    r.procs,
                    shown(&r.sync),
                    r.safe,
                    serde_json::to_string(&verdict).unwrap_or_default()
                ));
            }
            if r.threads == 0 || r.procs == 0 {
                return Err(format!(
                    "{} is {} thread(s) in {} process(es): a setting runs at least one of each",
                    at("threads"),
                    r.threads,
                    r.procs
                ));
            }
        }
        for (i, f) in self.floors.iter().enumerate() {
            check(&format!("floors[{i}].p50_us"), f.p50_us)?;
            check(&format!("floors[{i}].ops_per_sec"), f.ops_per_sec)?;
        }
        for (i, c) in self.lock_cycles.iter().enumerate() {
            check(&format!("lock_cycles[{i}].p50_us"), c.p50_us)?;
            check(&format!("lock_cycles[{i}].ops_per_sec"), c.ops_per_sec)?;
            check(&format!("lock_cycles[{i}].floor_ratio"), c.floor_ratio)?;
        }
        Ok(())
    }
}

/// The largest rate (ops/s) or time (µs) a report may hold: a trillion, above anything
/// one machine measures (a trillion µs is eleven days).
pub const MAX_MEASURE: f64 = 1e12;

/// A value read from a report (a strategy's name, a setting), as a table cell or a
/// message shows it: on one line ([`crate::report::one_line`]) and at most
/// [`crate::report::MAX_ECHO`] characters long ([`crate::report::cut`]).
pub fn shown(value: &str) -> String {
    crate::report::cut(&crate::report::one_line(value)).into_owned()
}

/// A setting whose strategy claims to be safe there that had a violation or ended
/// without a verdict, and why.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Problem {
    /// The strategy spec (passwords redacted).
    pub strategy: String,
    /// Threads per process.
    pub threads: u32,
    /// Processes.
    pub procs: u32,
    /// SQLite's `synchronous`.
    pub sync: String,
    /// The seed of the setting's run ([`Record::seed`]); absent for a setting recorded
    /// without running, and in reports of older versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// What went wrong: the checkers that failed (or were inconclusive) with their
    /// summaries, or why the run could not be made.
    pub reason: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} ×{} threads ×{} procs, sync={}",
            shown(&self.strategy),
            self.threads,
            self.procs,
            shown(&self.sync),
        )?;
        if let Some(seed) = self.seed {
            write!(f, ", seed {seed}")?;
        }
        write!(f, ": {}", crate::report::one_line(&self.reason))
    }
}

/// The lines under the table for a report's problems: `VIOLATION: …` for each violation,
/// `inconclusive: …` for each setting without a verdict, then `note: …` for each of its
/// [`notes`](Report::notes).
pub fn problems(report: &Report) -> String {
    let mut out = String::new();
    for v in &report.violations {
        let _ = writeln!(out, "VIOLATION: {v}");
    }
    for i in &report.inconclusive {
        let _ = writeln!(out, "inconclusive: {i}");
    }
    for n in &report.notes {
        let _ = writeln!(out, "note: {}", crate::report::one_line(n));
    }
    out
}

fn sqlite() -> String {
    "sqlite".to_owned()
}

/// The machine the run measured.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Machine {
    /// Logical CPUs available to the process.
    pub cpus: usize,
    /// Operating system and architecture.
    pub os: String,
    /// Kernel release, when known.
    pub kernel: Option<String>,
}

impl Machine {
    /// Reads the current machine.
    pub fn current() -> Self {
        Machine {
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            os: format!("{}-{}", std::env::consts::OS, std::env::consts::ARCH),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .ok()
                .map(|s| s.trim().to_owned()),
        }
    }
}

/// SQLite's settings for the run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SqliteInfo {
    /// The library version linked in.
    pub version: String,
    /// The journal mode.
    pub journal_mode: String,
    /// `synchronous` settings measured.
    pub sync: Vec<String>,
}

/// A reference point measured in the same run, so targets can be stated as ratios.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Floor {
    /// What was measured: `sqlite_commit_1row` (SQLite data), `postgres_commit_1row` or
    /// `mysql_commit_1row` (data on that server, over one connection), or
    /// `redis_two_round_trips`.
    pub kind: String,
    /// The `synchronous` setting, for SQLite floors.
    pub sync: Option<String>,
    /// Median time of one, in µs.
    pub p50_us: f64,
    /// The best rate it allows on one thread.
    pub ops_per_sec: f64,
}

/// A lock's own cost on one thread, measured in the same run: acquire, then release and
/// wait for its answer, with nothing in between and no resource. Against the floor of the
/// round trips it cannot do without, this is the lock's overhead; an op through a
/// strategy adds its resource's transaction on top.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LockCycle {
    /// The lock (`redis`).
    pub lock: String,
    /// How the cycle ends its lease: `awaited` (release, then wait for the server's
    /// answer) or `dropped` (as `Locked` does: the release is sent and its answer read with
    /// the next acquire, in one round trip with it).
    #[serde(default)]
    pub release: String,
    /// The floor it is measured against (a [`Floor::kind`]).
    pub floor: String,
    /// Median time of one cycle, in µs.
    pub p50_us: f64,
    /// Cycles per second on one thread.
    pub ops_per_sec: f64,
    /// `ops_per_sec` over the floor's (1.0: as fast as its round trips; above 1, faster):
    /// a ratio of rates, not of the medians in µs (the text report says `its rate 0.73×
    /// the redis_two_round_trips floor's`).
    pub floor_ratio: f64,
}

/// One measured setting.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Record {
    /// The strategy spec (passwords redacted).
    pub strategy: String,
    /// The scope the strategy claims (`threads`, `processes`, `hosts`).
    pub scope: String,
    /// The workload.
    pub workload: String,
    /// Threads per process.
    pub threads: u32,
    /// Processes.
    pub procs: u32,
    /// SQLite's `synchronous`.
    pub sync: String,
    /// Ops acknowledged.
    pub ops: u64,
    /// Acknowledged ops per second of wall time.
    pub ops_per_sec: f64,
    /// Median latency of an acknowledged op (µs).
    pub p50_us: f64,
    /// 99th percentile (µs).
    pub p99_us: f64,
    /// 99.9th percentile (µs).
    pub p999_us: f64,
    /// Slowest op (µs).
    pub max_us: f64,
    /// Every checker passed on this run.
    pub safe: bool,
    /// The run's verdict: `pass`, `violation` or `inconclusive` (reports of older
    /// versions: absent, read from `safe` and `verdicts`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<Verdict>,
    /// The run's random seed, below 2⁵³ (which JSON readers that hold numbers as doubles
    /// read exactly): `turnstile check --seed` with it, this setting's strategy,
    /// workload, threads, procs, sync and [`ops_requested`](Record::ops_requested),
    /// `--transaction` and the report's `--data` replays the same op choices. Reports of
    /// older versions: absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// Ops requested of the run (`ops` is those acknowledged). Reports of older versions:
    /// absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ops_requested: Option<u64>,
    /// Whether the strategy claims to be safe at this setting (a negative control or a
    /// strategy outside its scope does not).
    pub claims_safe: bool,
    /// Each checker's verdict, one line each.
    pub verdicts: Vec<String>,
}

/// Renders the results as an aligned text table, one line per record: a text cell read
/// from a report is [`shown`] (control characters escaped, a long one cut).
pub fn table(results: &[Record]) -> String {
    let header = [
        "strategy",
        "scope",
        "workload",
        "thr",
        "proc",
        "sync",
        "ops/s",
        "p50 µs",
        "p99 µs",
        "p99.9 µs",
        "max µs",
        "verdict",
    ];
    let rows: Vec<[String; 12]> = results
        .iter()
        .map(|r| {
            [
                shown(&r.strategy),
                shown(&r.scope),
                shown(&r.workload),
                r.threads.to_string(),
                r.procs.to_string(),
                shown(&r.sync),
                format!("{:.0}", r.ops_per_sec),
                format!("{:.0}", r.p50_us),
                format!("{:.0}", r.p99_us),
                format!("{:.0}", r.p999_us),
                format!("{:.0}", r.max_us),
                verdict(r).to_owned(),
            ]
        })
        .collect();
    let mut widths = header.map(|h| h.chars().count());
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, cells: &[String]| {
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            let pad = w - cell.chars().count();
            // Text left, numbers right.
            if (3..11).contains(&i) {
                let _ = write!(out, "{}{cell}  ", " ".repeat(pad));
            } else {
                let _ = write!(out, "{cell}{}  ", " ".repeat(pad));
            }
        }
        let trimmed = out.trim_end().len();
        out.truncate(trimmed);
        out.push('\n');
    };
    line(&mut out, &header.map(str::to_owned));
    for row in &rows {
        line(&mut out, row);
    }
    out
}

/// The verdict column. For a strategy that claims to be safe at the setting: `safe`,
/// `VIOLATION` (a checker failed: a bug) or `inconclusive` (no checker failed, one could
/// not tell). For a negative control, or a strategy outside its scope, what the checkers
/// found of the failure it is expected to show: `unsafe (expected: control)` when one
/// caught it, `not caught this run (control)` when all passed (a single thread cannot
/// race), `inconclusive (control)`; `out of scope` in place of `control` for the other.
pub fn verdict(r: &Record) -> &'static str {
    let verdict = r.verdict.unwrap_or_else(|| older_verdict(r));
    let control = super::is_control(&r.strategy);
    match (r.claims_safe, control, verdict) {
        (true, _, Verdict::Pass) => "safe",
        (true, _, Verdict::Violation) => "VIOLATION",
        (true, _, Verdict::Inconclusive) => "inconclusive",
        (false, true, Verdict::Violation) => "unsafe (expected: control)",
        (false, true, Verdict::Pass) => "not caught this run (control)",
        (false, true, Verdict::Inconclusive) => "inconclusive (control)",
        (false, false, Verdict::Violation) => "unsafe (expected: out of scope)",
        (false, false, Verdict::Pass) => "not caught this run (out of scope)",
        (false, false, Verdict::Inconclusive) => "inconclusive (out of scope)",
    }
}

/// The verdict of a record of an older version, which has no `verdict`: `safe`, else a
/// violation if a checker's line says so, else inconclusive if one says that, else a
/// violation.
fn older_verdict(r: &Record) -> Verdict {
    if r.safe {
        return Verdict::Pass;
    }
    // Each line is `checker: VERDICT (summary)`.
    let said = |word: &str| {
        r.verdicts.iter().any(|line| {
            line.split_once(": ")
                .is_some_and(|(_, rest)| rest.split(' ').next() == Some(word))
        })
    };
    if !said("VIOLATION") && said("inconclusive") {
        Verdict::Inconclusive
    } else {
        Verdict::Violation
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(strategy: &str, safe: bool, claims_safe: bool) -> Record {
        let verdict = if safe {
            Verdict::Pass
        } else {
            Verdict::Violation
        };
        judged(strategy, verdict, claims_safe)
    }

    fn judged(strategy: &str, verdict: Verdict, claims_safe: bool) -> Record {
        let safe = verdict == Verdict::Pass;
        Record {
            strategy: strategy.into(),
            scope: "threads".into(),
            workload: "counter".into(),
            threads: 4,
            procs: 1,
            sync: "normal".into(),
            ops: 100,
            ops_per_sec: 1234.4,
            p50_us: 1.0,
            p99_us: 2.0,
            p999_us: 3.0,
            max_us: 4.0,
            safe,
            verdict: Some(verdict),
            seed: None,
            ops_requested: None,
            claims_safe,
            verdicts: vec![],
        }
    }

    #[test]
    fn table_aligns_and_names_verdicts() {
        let t = table(&[
            record("queue", true, true),
            record("unserialized", false, false),
            record("mutex", false, true),
        ]);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 4);
        assert!(lines[1].contains("1234") && lines[1].ends_with("safe"));
        assert!(lines[2].ends_with("unsafe (expected: control)"));
        assert!(lines[3].ends_with("VIOLATION"));
    }

    #[test]
    fn the_verdict_column_tells_inconclusive_and_uncaught_from_caught() {
        use Verdict::{Inconclusive, Pass, Violation};
        for (strategy, v, claims_safe, label) in [
            ("mutex", Pass, true, "safe"),
            ("mutex", Violation, true, "VIOLATION"),
            ("mutex", Inconclusive, true, "inconclusive"),
            (
                "unserialized",
                Violation,
                false,
                "unsafe (expected: control)",
            ),
            ("unserialized", Pass, false, "not caught this run (control)"),
            (
                "racy-version:5",
                Inconclusive,
                false,
                "inconclusive (control)",
            ),
            (
                "redis-nofence://127.0.0.1:6379/0?ttl_ms=50",
                Pass,
                false,
                "not caught this run (control)",
            ),
            ("mutex", Violation, false, "unsafe (expected: out of scope)"),
            ("mutex", Pass, false, "not caught this run (out of scope)"),
            ("mutex", Inconclusive, false, "inconclusive (out of scope)"),
        ] {
            assert_eq!(
                verdict(&judged(strategy, v, claims_safe)),
                label,
                "{strategy} {v} claims_safe={claims_safe}"
            );
        }
    }

    #[test]
    fn a_record_of_an_older_version_is_read_from_its_checkers_lines() {
        let mut r = judged("mutex", Verdict::Violation, true);
        r.verdict = None;
        r.verdicts = vec![
            "lost_update: pass (12 acknowledged increments over 1 keys, none lost)".into(),
            "floor: inconclusive (3 of 12 requested ops acknowledged; VIOLATION named here is not one)".into(),
        ];
        assert_eq!(verdict(&r), "inconclusive");
        // The exit code reads the record as the table does.
        let older_report = |r: &Record| report_of(vec![r.clone()], vec![]);
        assert_eq!(older_report(&r).exit_code(), 3);
        r.verdicts
            .push("overlap: VIOLATION (2 overlapping critical sections among 12)".into());
        assert_eq!(verdict(&r), "VIOLATION");
        assert_eq!(older_report(&r).exit_code(), 1);
        r.safe = true;
        assert_eq!(verdict(&r), "safe");
        // The JSON of a record without `verdict` still reads.
        let json = serde_json::to_value(&r).unwrap();
        assert!(json.get("verdict").is_none(), "{json}");
        let back: Record = serde_json::from_value(json).unwrap();
        assert_eq!(back.verdict, None);
    }

    /// A report of `results` and `notes` alone (no problem lists: as an older version's).
    fn report_of(results: Vec<Record>, notes: Vec<String>) -> Report {
        Report {
            turnstile_version: "0".into(),
            machine: Machine::current(),
            sqlite: SqliteInfo {
                version: "3".into(),
                journal_mode: "wal".into(),
                sync: vec!["normal".into()],
            },
            data: "sqlite".into(),
            floors: vec![],
            lock_cycles: vec![],
            results,
            violations: vec![],
            inconclusive: vec![],
            notes,
        }
    }

    #[test]
    fn notes_go_under_the_problems() {
        let report = report_of(vec![], vec!["one thing".into()]);
        assert_eq!(problems(&report), "note: one thing\n");
        assert_eq!(
            report.exit_code(),
            0,
            "a note does not change the exit code"
        );
    }
}
