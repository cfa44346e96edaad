//! Exactly once (notify-once): each notification's side effect happened once if an op
//! acknowledged sending it (two such ops are a violation), and at most once more
//! for each op on it that may have run it without finishing (cut off by a kill, or failed
//! after entering its section); never with no op that sent or may have sent it, never with
//! the flag left unset by an acknowledged send or set by no op, and no notification with
//! acknowledged ops missing from the final flags.

use std::collections::{BTreeMap, BTreeSet};

use super::CheckResult;
use crate::history::{History, OpInput, OpOutput, Phase};
use crate::workload::notify_once::Outcome;

/// Checks the effects log and flags against the history.
pub fn check(history: &History, outcome: &Outcome) -> CheckResult {
    const NAME: &str = "exactly_once";
    #[derive(Default)]
    struct PerId {
        sent_by: Vec<String>,
        acknowledged: usize,
        uncertain: usize,
    }
    let mut per: BTreeMap<i64, PerId> = BTreeMap::new();
    for op in &history.ops {
        let OpInput::Notify { id } = op.input else {
            continue;
        };
        let entry = per.entry(id).or_default();
        if op.phase == Phase::Ok {
            entry.acknowledged += 1;
        }
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
    // Every notification the flags, the effects or the history name: one missing from
    // the flags is checked too.
    let ids: BTreeSet<i64> = outcome
        .sent
        .keys()
        .chain(outcome.effects.keys())
        .chain(per.keys())
        .copied()
        .collect();
    let mut effects_total = 0;
    for id in ids {
        let effects = outcome.effects.get(&id).copied().unwrap_or(0);
        effects_total += effects;
        let ops = per.remove(&id).unwrap_or_default();
        let Some(&sent) = outcome.sent.get(&id) else {
            if ops.acknowledged > 0 || effects > 0 {
                details.push(format!(
                    "notification {id} is missing from the final flags, with {} acknowledged ops on it and its effect performed {effects} times",
                    ops.acknowledged
                ));
            }
            continue;
        };
        if ops.sent_by.len() > 1 {
            details.push(format!(
                "notification {id} sent by {} acknowledged ops: {}",
                ops.sent_by.len(),
                ops.sent_by.join(", ")
            ));
        }
        // One effect if an op acknowledged sending it (a second such op is reported
        // above), and one more for each op that may have sent without saying so. An
        // effect without either ran where no op did (a failed or cancelled op that ran
        // anyway).
        let acknowledged_send = usize::from(!ops.sent_by.is_empty());
        let allowed = acknowledged_send + ops.uncertain;
        if effects > allowed {
            details.push(if allowed == 0 {
                format!(
                    "notification {id}: effect performed {effects} times, but no op acknowledged sending it and none may have"
                )
            } else {
                format!(
                    "notification {id}: effect performed {effects} times (allowed {allowed}: {acknowledged_send} acknowledged send + {} uncertain ops)",
                    ops.uncertain
                )
            });
        }
        if sent && ops.sent_by.is_empty() && ops.uncertain == 0 {
            details.push(format!(
                "notification {id} marked sent, but no op acknowledged sending it and none may have"
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::check::Verdict;
    use crate::check::hand::{Op, history, op};

    fn notify(id: u64, n: i64, phase: Phase, sent: Option<bool>) -> Op {
        op(
            id,
            &["n"],
            OpInput::Notify { id: n },
            phase,
            sent.map(|sent| OpOutput::Notified { sent }),
        )
    }

    fn outcome(sent: &[(i64, bool)], effects: &[(i64, usize)]) -> Outcome {
        Outcome {
            sent: sent.iter().copied().collect(),
            effects: effects.iter().copied().collect::<BTreeMap<_, _>>(),
            garbled: vec![],
        }
    }

    #[test]
    fn an_effect_no_op_produced_is_a_violation() {
        // The only op on notification 0 failed before its section (a definite failure):
        // nothing may have sent it, yet its effect happened and its flag is set.
        let mut failed = notify(1, 0, Phase::Fail, None);
        failed.end = Some((Phase::Fail, None, false));
        let h = history(vec![failed]);
        let r = check(&h, &outcome(&[(0, true)], &[(0, 1)]));
        assert_eq!(r.verdict, Verdict::Violation, "{r:?}");
        assert!(
            r.details
                .iter()
                .any(|d| d.contains("notification 0") && d.contains("no op")),
            "{:?}",
            r.details
        );
        // No op at all on it, flag unset: the effect still has no author.
        let r = check(&history(vec![]), &outcome(&[(0, false)], &[(0, 1)]));
        assert_eq!(r.verdict, Verdict::Violation, "{r:?}");
        // A flag set by no op, with no effect.
        let r = check(&history(vec![]), &outcome(&[(0, true)], &[]));
        assert_eq!(r.verdict, Verdict::Violation, "{r:?}");
    }

    #[test]
    fn an_acknowledged_or_uncertain_op_accounts_for_its_effect() {
        let sent = notify(1, 0, Phase::Ok, Some(true));
        let r = check(&history(vec![sent]), &outcome(&[(0, true)], &[(0, 1)]));
        assert_eq!(r.verdict, Verdict::Pass, "{r:?}");
        // Cut off (no completion): it may have sent, and set the flag or not.
        for flag in [true, false] {
            let mut cut = notify(1, 0, Phase::Unknown, None);
            cut.end = None;
            let r = check(&history(vec![cut]), &outcome(&[(0, flag)], &[(0, 1)]));
            assert_eq!(r.verdict, Verdict::Pass, "{r:?}");
        }
        // Failed inside its section: the effect outside the rolled-back flag stands.
        let failed = notify(1, 0, Phase::Fail, None);
        let r = check(&history(vec![failed]), &outcome(&[(0, false)], &[(0, 1)]));
        assert_eq!(r.verdict, Verdict::Pass, "{r:?}");
        // An uncertain op, then an acknowledged send: two effects allowed, not three.
        let ops = || {
            vec![
                notify(1, 0, Phase::Unknown, None),
                notify(2, 0, Phase::Ok, Some(true)),
            ]
        };
        let r = check(&history(ops()), &outcome(&[(0, true)], &[(0, 2)]));
        assert_eq!(r.verdict, Verdict::Pass, "{r:?}");
        let r = check(&history(ops()), &outcome(&[(0, true)], &[(0, 3)]));
        assert_eq!(r.verdict, Verdict::Violation, "{r:?}");
        // An op that found it sent accounts for nothing.
        let ops = vec![
            notify(1, 0, Phase::Ok, Some(true)),
            notify(2, 0, Phase::Ok, Some(false)),
        ];
        let r = check(&history(ops), &outcome(&[(0, true)], &[(0, 2)]));
        assert_eq!(r.verdict, Verdict::Violation, "{r:?}");
    }

    #[test]
    fn a_notification_missing_from_the_final_flags_is_a_violation() {
        let sent = notify(1, 3, Phase::Ok, Some(true));
        let r = check(&history(vec![sent]), &outcome(&[(0, false)], &[]));
        assert_eq!(r.verdict, Verdict::Violation, "{r:?}");
        assert!(
            r.details.iter().any(|d| d.contains("notification 3")),
            "{:?}",
            r.details
        );
    }
}
