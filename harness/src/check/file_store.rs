//! File store: the record file parses at the end and during the run, and keeps every
//! acknowledged record.

use std::collections::HashSet;

use super::CheckResult;
use crate::history::{History, OpInput, Phase};

/// Checks the final `store` (its records, or why it did not parse) against the history.
pub fn check(history: &History, store: &Result<Vec<i64>, String>) -> CheckResult {
    const NAME: &str = "file_store";
    let mut details = Vec::new();
    let torn: Vec<_> = history
        .ops
        .iter()
        .filter(|op| {
            op.error
                .as_deref()
                .is_some_and(|e| e.contains("corrupt store"))
        })
        .collect();
    for op in &torn {
        details.push(format!(
            "{} read a torn store: {}",
            op.label(),
            op.error.as_deref().unwrap_or_default()
        ));
    }
    let acked: Vec<i64> = history
        .with_phase(Phase::Ok)
        .filter_map(|op| match op.input {
            OpInput::Append { record } => Some(record),
            _ => None,
        })
        .collect();
    match store {
        Err(why) => details.insert(0, format!("the store does not parse at the end: {why}")),
        Ok(records) => {
            let present: HashSet<i64> = records.iter().copied().collect();
            let lost: Vec<i64> = acked
                .iter()
                .copied()
                .filter(|r| !present.contains(r))
                .collect();
            if !lost.is_empty() {
                details.insert(
                    0,
                    format!(
                        "{} of {} acknowledged records lost (first: {:?})",
                        lost.len(),
                        acked.len(),
                        &lost[..lost.len().min(5)]
                    ),
                );
            }
        }
    }
    if details.is_empty() {
        CheckResult::pass(
            NAME,
            format!(
                "{} acknowledged records kept, the store parses",
                acked.len()
            ),
        )
    } else {
        CheckResult::violation(
            NAME,
            format!(
                "the file store lost records or tore ({} torn reads)",
                torn.len()
            ),
            details,
        )
    }
}
