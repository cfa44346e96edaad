//! Checkers: each reads the merged [`History`] and the state a run left, and returns a
//! [`CheckResult`] that names what broke (keys, ops, overlapping intervals, lost
//! increments).
//!
//! Which checkers run depends on the workload and on the strategy's
//! [`Capabilities`]: the overlap checker only for strategies that promise to exclude, the
//! workload's own invariant always, and SQLite's `PRAGMA integrity_check` after every run.

pub mod bank;
pub mod complete;
pub mod exactly_once;
pub mod file_store;
pub mod integrity;
pub mod linearizable;
pub mod lost_update;
pub mod overlap;
pub mod own_error;
pub mod refused;

use std::fmt;

use serde::{Deserialize, Serialize};
use turnstile::Capabilities;

use crate::history::History;
use crate::workload::{FinalState, Workload};

/// A checker's verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The invariant held.
    Pass,
    /// The invariant broke: the strategy (or the run) is wrong.
    Violation,
    /// The run cannot tell (too few ops, a backend out of reach).
    Inconclusive,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Verdict::Pass => "pass",
            Verdict::Violation => "VIOLATION",
            Verdict::Inconclusive => "inconclusive",
        })
    }
}

/// What one checker found.
#[derive(Clone, Debug, Serialize)]
pub struct CheckResult {
    /// The checker's name (`"lost_update"`, `"overlap"`, …).
    pub checker: &'static str,
    /// Its verdict.
    pub verdict: Verdict,
    /// One line: what was checked, or what broke.
    pub summary: String,
    /// The evidence, one readable line each (capped).
    pub details: Vec<String>,
}

/// The most evidence lines a checker reports.
pub const MAX_DETAILS: usize = 12;

impl CheckResult {
    pub(crate) fn pass(checker: &'static str, summary: impl Into<String>) -> Self {
        CheckResult {
            checker,
            verdict: Verdict::Pass,
            summary: summary.into(),
            details: Vec::new(),
        }
    }

    pub(crate) fn violation(
        checker: &'static str,
        summary: impl Into<String>,
        mut details: Vec<String>,
    ) -> Self {
        if details.len() > MAX_DETAILS {
            let more = details.len() - MAX_DETAILS;
            details.truncate(MAX_DETAILS);
            details.push(format!("… and {more} more"));
        }
        CheckResult {
            checker,
            verdict: Verdict::Violation,
            summary: summary.into(),
            details,
        }
    }

    pub(crate) fn inconclusive(checker: &'static str, summary: impl Into<String>) -> Self {
        CheckResult {
            checker,
            verdict: Verdict::Inconclusive,
            summary: summary.into(),
            details: Vec::new(),
        }
    }
}

/// The checkers that apply to `workload` under a strategy with `caps`, by name.
///
/// The workload's own invariant always applies — `exactly_once` too for strategies that
/// rerun ops: a rerun repeats the op's effects outside the resource, which is the failure
/// seed 004 is about, so it is reported, not excused. [`refused`] (seed 000's failure)
/// applies to every strategy too; it needs the run's pauses, so the run calls it itself.
///
/// [`unique`](crate::workload::unique)'s ops are counter increments too: `lost_update`
/// checks them (and so that an op that failed rolled back alone) beside its own
/// [`own_error`].
pub fn checkers_for(workload: Workload, caps: &Capabilities) -> Vec<&'static str> {
    let mut names = vec![invariant(workload)];
    if workload == Workload::Unique {
        names.insert(0, "lost_update");
    }
    if caps.excludes {
        names.push("overlap");
    }
    names
}

/// The checker of `workload`'s own invariant, which applies whatever the strategy.
pub fn invariant(workload: Workload) -> &'static str {
    match workload {
        Workload::Counter => "lost_update",
        Workload::Bank => "bank",
        Workload::NotifyOnce | Workload::NotifyStale => "exactly_once",
        Workload::Kv => "linearizable",
        Workload::FileStore => "file_store",
        Workload::Unique => own_error::NAME,
    }
}

/// Runs every checker that applies. `integrity` is checked separately (it needs the
/// database); see [`integrity::check`].
pub fn check_all(
    workload: Workload,
    caps: &Capabilities,
    history: &History,
    state: &FinalState,
) -> Vec<CheckResult> {
    checkers_for(workload, caps)
        .into_iter()
        .map(|name| match (name, state) {
            ("overlap", _) => overlap::check(history),
            (own_error::NAME, _) => own_error::check(history),
            ("lost_update", FinalState::Values(values)) => lost_update::check(history, values),
            (
                "bank",
                FinalState::Balances {
                    balances,
                    expected_total,
                },
            ) => bank::check(history, balances, *expected_total),
            ("exactly_once", FinalState::Notifications(outcome)) => {
                exactly_once::check(history, outcome)
            }
            ("linearizable", FinalState::Records(records)) => {
                linearizable::check(history, records, linearizable::DEFAULT_BUDGET)
            }
            ("file_store", FinalState::Store(store)) => file_store::check(history, store),
            (name, _) => CheckResult::inconclusive(name, "the run left no state for this checker"),
        })
        .collect()
}

/// A time relative to the run's origin, in milliseconds with µs precision.
pub(crate) fn rel(t: u64, origin: u64) -> String {
    format!("{:.3}ms", t.saturating_sub(origin) as f64 / 1e6)
}

/// Hand-built histories for the checkers' unit tests.
#[cfg(test)]
pub(crate) mod hand {
    use crate::history::{Event, History, OpInput, OpOutput, Phase};

    /// One op of a hand-built history.
    pub(crate) struct Op {
        pub id: u64,
        pub keys: Vec<String>,
        pub input: OpInput,
        /// How it ended (`None`: cut off, no completion), with its output and whether it
        /// entered its section.
        pub end: Option<(Phase, Option<OpOutput>, bool)>,
    }

    /// An op on `keys` that ended as `phase` with `output`, inside its section.
    pub(crate) fn op(
        id: u64,
        keys: &[&str],
        input: OpInput,
        phase: Phase,
        output: Option<OpOutput>,
    ) -> Op {
        Op {
            id,
            keys: keys.iter().map(|k| (*k).to_owned()).collect(),
            input,
            end: Some((phase, output, true)),
        }
    }

    /// The history of `ops`, op `i` invoked at `10 i`, in its section at `10 i + 1 ..
    /// 10 i + 2`, completed at `10 i + 3`.
    pub(crate) fn history(ops: Vec<Op>) -> History {
        let mut events = Vec::new();
        for (i, o) in ops.into_iter().enumerate() {
            let t = 10 * i as u64 + 1000;
            let invoke = Event {
                ..Event::invoke(o.id, o.keys, t, o.input)
            };
            events.push(invoke.clone());
            if let Some((phase, output, entered)) = o.end {
                events.push(Event {
                    phase,
                    time: t + 3,
                    input: None,
                    output,
                    enter: entered.then_some(t + 1),
                    exit: entered.then_some(t + 2),
                    error: (phase != Phase::Ok).then(|| "op: failed".to_owned()),
                    ..invoke
                });
            }
        }
        History::from_events(events)
    }
}
