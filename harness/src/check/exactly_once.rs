//! Exactly once (notify-once): each notification's side effect happened once; at most
//! once more for each op on it that may have run it without finishing (cut off by a kill,
//! or failed after entering its section), never with the flag left unset by an
//! acknowledged send.

use std::collections::BTreeMap;

use super::CheckResult;
use crate::history::{History, OpInput, OpOutput, Phase};
use crate::workload::notify_once::Outcome;

/// Checks the effects log and flags against the history.
pub fn check(history: &History, outcome: &Outcome) -> CheckResult {
    const NAME: &str = "exactly_once";
    #[derive(Default)]
    struct PerId {
        sent_by: Vec<String>,
        uncertain: usize,
    }
    let mut per: BTreeMap<i64, PerId> = BTreeMap::new();
    for op in &history.ops {
        let OpInput::Notify { id } = op.input else {
            continue;
        };
        let entry = per.entry(id).or_default();
        match op.phase {
            Phase::Ok if op.output == Some(OpOutput::Notified { sent: true }) => {
                entry.sent_by.push(op.label());
            }
            Phase::Unknown => entry.uncertain += 1,
            Phase::Fail if op.enter.is_some() => entry.uncertain += 1,
            _ => {}
        }
    }
    let mut details: Vec<String> = outcome
        .garbled
        .iter()
        .map(|l| format!("garbled effect line {l:?}"))
        .collect();
    let mut effects_total = 0;
    for (&id, &sent) in &outcome.sent {
        let effects = outcome.effects.get(&id).copied().unwrap_or(0);
        effects_total += effects;
        let ops = per.remove(&id).unwrap_or_default();
        if ops.sent_by.len() > 1 {
            details.push(format!(
                "notification {id} sent by {} acknowledged ops: {}",
                ops.sent_by.len(),
                ops.sent_by.join(", ")
            ));
        }
        let allowed = 1 + ops.uncertain;
        if effects > allowed {
            details.push(format!(
                "notification {id}: effect performed {effects} times (allowed {allowed}: 1 + {} uncertain ops)",
                ops.uncertain
            ));
        }
        if (sent || !ops.sent_by.is_empty()) && effects == 0 {
            details.push(format!(
                "notification {id} marked sent but its effect never happened"
            ));
        }
        if !sent && !ops.sent_by.is_empty() {
            details.push(format!(
                "notification {id}: sent by {} but its flag is not set (a lost update)",
                ops.sent_by.join(", ")
            ));
        }
    }
    for (&id, &n) in &outcome.effects {
        if !outcome.sent.contains_key(&id) {
            details.push(format!("effect for unknown notification {id} ({n} times)"));
        }
    }
    if details.is_empty() {
        CheckResult::pass(
            NAME,
            format!(
                "{effects_total} effects for {} notifications, none repeated",
                outcome.sent.len()
            ),
        )
    } else {
        CheckResult::violation(NAME, "side effects not exactly once", details)
    }
}
