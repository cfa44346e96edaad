//! Overlap: no two committed critical sections on one key overlap in time, across threads
//! and processes (`CLOCK_MONOTONIC` is shared by the host). Only for strategies that
//! promise to exclude; an optimistic strategy overlaps by design.
//!
//! Failed ops are left out: their work was rolled back (or, outside a transaction, they
//! count as unknown and stay in). A holder paused past its lease's expiry overlaps its
//! successor, and that is safe exactly when the fence made its commit fail.

use std::collections::BTreeMap;

use super::{CheckResult, rel};
use crate::history::{History, Op, Phase};

/// Checks every op that recorded both ends of its section.
pub fn check(history: &History) -> CheckResult {
    const NAME: &str = "overlap";
    let origin = history.origin();
    let mut by_key: BTreeMap<&str, Vec<&Op>> = BTreeMap::new();
    let mut sections = 0usize;
    for op in history.ops.iter().filter(|op| op.phase != Phase::Fail) {
        if let (Some(_), Some(_)) = (op.enter, op.exit) {
            sections += 1;
            for key in &op.keys {
                by_key.entry(key.as_str()).or_default().push(op);
            }
        }
    }
    let mut details = Vec::new();
    let mut overlaps = 0usize;
    for (key, mut ops) in by_key {
        ops.sort_by_key(|op| op.enter);
        // The op whose section ends last so far: a later entry before its exit overlaps.
        let mut holder: Option<&Op> = None;
        for op in ops {
            let (enter, exit) = (op.enter.unwrap_or(0), op.exit.unwrap_or(0));
            if let Some(h) = holder {
                let h_exit = h.exit.unwrap_or(0);
                if enter < h_exit {
                    overlaps += 1;
                    details.push(format!(
                        "key {key}: {} [{} .. {}] (pid {}) overlaps {} [{} .. {}] (pid {}) by {:.1}µs",
                        h.label(),
                        rel(h.enter.unwrap_or(0), origin),
                        rel(h_exit, origin),
                        h.pid,
                        op.label(),
                        rel(enter, origin),
                        rel(exit, origin),
                        op.pid,
                        (h_exit.min(exit) - enter) as f64 / 1e3
                    ));
                    if exit > h_exit {
                        holder = Some(op);
                    }
                    continue;
                }
            }
            holder = Some(op);
        }
    }
    if overlaps == 0 {
        CheckResult::pass(NAME, format!("{sections} critical sections, none overlap"))
    } else {
        CheckResult::violation(
            NAME,
            format!("{overlaps} overlapping critical sections among {sections}"),
            details,
        )
    }
}
