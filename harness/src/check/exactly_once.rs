//! Exactly once (notify-once): each effect line names the op that performed it, and is
//! matched to that op. An effect must come from an op on its notification that sent it
//! or may have (acknowledged as sent; of unknown outcome, cut off by a kill; or failed
//! after entering its section), at most once per op — a rerun that repeats it is caught
//! — and an op acknowledged as sent must have performed it. Per notification: it was
//! sent by at most one acknowledged op, its effect happened once if one was, plus at most
//! once for each op that may have sent it without saying so; its flag is set by no op
//! that did not send, and not left unset by an acknowledged send; and no notification
//! with acknowledged ops is missing from the final flags.
//!
//! A line must also fit the op it names: an op on the line's notification, run by the
//! line's process. One that does not is reported as garbled or misattributed, and not
//! credited to that op: a worker killed in the middle of its write leaves part of a
//! line, which the next append completes (a torn `5` then `3 17 4242` reads
//! `53 17 4242`, naming op 17 with another notification), and a line naming an op of
//! another process was not written by that op.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::CheckResult;
use crate::history::{History, Op, OpInput, OpOutput, Phase};
use crate::workload::notify_once::Outcome;

/// How an op on a notification may have performed its effect.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Sender {
    /// Acknowledged: it sent the notification.
    Acknowledged,
    /// It may have sent without saying so: unknown, or failed inside its section.
    Uncertain,
    /// It did not send: it found the notification sent, or failed before its section.
    No,
}

fn sender(op: &Op) -> Sender {
    match op.phase {
        Phase::Ok if op.output == Some(OpOutput::Notified { sent: true }) => Sender::Acknowledged,
        Phase::Unknown => Sender::Uncertain,
        Phase::Fail if op.enter.is_some() => Sender::Uncertain,
        _ => Sender::No,
    }
}

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
    // The notify ops by id, with their notification; and every op, for a line naming one
    // of another kind.
    let mut ops: HashMap<u64, (&Op, i64)> = HashMap::new();
    let all: HashMap<u64, &Op> = history.ops.iter().map(|op| (op.id, op)).collect();
    for op in &history.ops {
        let OpInput::Notify { id } = op.input else {
            continue;
        };
        ops.insert(op.id, (op, id));
        let entry = per.entry(id).or_default();
        if op.phase == Phase::Ok {
            entry.acknowledged += 1;
        }
        match sender(op) {
            Sender::Acknowledged => entry.sent_by.push(op.label()),
            Sender::Uncertain => entry.uncertain += 1,
            Sender::No => {}
        }
    }
    // Evidence by notification, so each one's lines read together.
    let mut found: BTreeMap<i64, Vec<String>> = BTreeMap::new();

    // Each effect against the op it names. A line that does not fit that op — another
    // process, or another notification — was torn or misattributed: reported, and not
    // credited to the op.
    let mut by_op: BTreeMap<u64, Vec<i64>> = BTreeMap::new();
    for e in &outcome.effects {
        let n = e.notification;
        let line = format!("{n} {} {}", e.op, e.pid);
        let misattributed = |op: &Op, what: String| {
            format!(
                "notification {n}: effect line {line:?} names {}, {what}: a garbled or misattributed line",
                op.label()
            )
        };
        let Some(&(op, id)) = ops.get(&e.op) else {
            found.entry(n).or_default().push(match all.get(&e.op) {
                Some(op) => format!(
                    "notification {n}: effect line {line:?} names {}, which is not a notify op",
                    op.label()
                ),
                None => format!(
                    "notification {n}: effect performed by op {} (process {}), which is not in the history",
                    e.op, e.pid
                ),
            });
            continue;
        };
        if op.pid != e.pid {
            found
                .entry(n)
                .or_default()
                .push(misattributed(op, format!("an op of process {}", op.pid)));
            continue;
        }
        if id != n {
            found
                .entry(n)
                .or_default()
                .push(misattributed(op, format!("an op on notification {id}")));
            continue;
        }
        by_op.entry(e.op).or_default().push(n);
        match (sender(op), op.phase) {
            (Sender::No, Phase::Ok) => found.entry(n).or_default().push(format!(
                "notification {n}: effect performed by {}, which found it already sent",
                op.label()
            )),
            (Sender::No, _) => found.entry(n).or_default().push(format!(
                "notification {n}: effect performed by {}, which failed before its section",
                op.label()
            )),
            _ => {}
        }
    }
    for (&op_id, notifications) in &by_op {
        let Some(&(op, id)) = ops.get(&op_id) else {
            continue;
        };
        let times = notifications.len();
        if times > 1 {
            found.entry(id).or_default().push(format!(
                "notification {id}: effect performed {times} times by {}, which may perform it once (a rerun repeats it)",
                op.label()
            ));
        }
    }
    // Every acknowledged send has its effect.
    let mut acknowledged: Vec<(&Op, i64)> = ops
        .values()
        .filter(|(op, _)| sender(op) == Sender::Acknowledged)
        .copied()
        .collect();
    acknowledged.sort_by_key(|(op, _)| op.id);
    for (op, id) in acknowledged {
        let performed = by_op.contains_key(&op.id);
        if !performed {
            found.entry(id).or_default().push(format!(
                "notification {id}: {} acknowledged sending it, but performed no effect",
                op.label()
            ));
        }
    }

    // Every notification the flags, the effects or the history name: one missing from
    // the flags is checked too.
    let counts = outcome.effect_counts();
    let ids: BTreeSet<i64> = outcome
        .sent
        .keys()
        .chain(counts.keys())
        .chain(per.keys())
        .copied()
        .collect();
    let mut effects_total = 0;
    for id in ids {
        let effects = counts.get(&id).copied().unwrap_or(0);
        effects_total += effects;
        let ops = per.remove(&id).unwrap_or_default();
        let mut details = Vec::new();
        let Some(&sent) = outcome.sent.get(&id) else {
            if ops.acknowledged > 0 || effects > 0 {
                details.push(format!(
                    "notification {id} is missing from the final flags, with {} acknowledged ops on it and its effect performed {effects} times",
                    ops.acknowledged
                ));
            }
            details.extend(found.remove(&id).unwrap_or_default());
            found.insert(id, details);
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
        // anyway). The effects matched to their ops above say which op is to blame; this
        // says how many there were.
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
        if sent && effects == 0 {
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
        details.extend(found.remove(&id).unwrap_or_default());
        found.insert(id, details);
    }
    let details: Vec<String> = outcome
        .garbled
        .iter()
        .map(|l| format!("garbled effect line {l:?} (expected: notification, op, process id)"))
        .chain(found.into_values().flatten())
        .collect();
    if details.is_empty() {
        CheckResult::pass(
            NAME,
            format!(
                "{effects_total} effects for {} notifications, each matched to one op that sent it",
                outcome.sent.len()
            ),
        )
    } else {
        CheckResult::violation(NAME, "side effects not exactly once", details)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::Verdict;
    use crate::check::hand::{Op, history, op};
    use crate::workload::notify_once::Effect;

    fn notify(id: u64, n: i64, phase: Phase, sent: Option<bool>) -> Op {
        op(
            id,
            &["n"],
            OpInput::Notify { id: n },
            phase,
            sent.map(|sent| OpOutput::Notified { sent }),
        )
    }

    /// The flags `sent`, and `effects` as (notification, op) pairs.
    fn outcome(sent: &[(i64, bool)], effects: &[(i64, u64)]) -> Outcome {
        Outcome {
            sent: sent.iter().copied().collect(),
            effects: effects
                .iter()
                .map(|&(notification, op)| Effect {
                    notification,
                    op,
                    pid: 1,
                })
                .collect(),
            garbled: vec![],
        }
    }

    fn violation(r: &CheckResult, naming: &str) {
        assert_eq!(r.verdict, Verdict::Violation, "{r:?}");
        assert!(
            r.details.iter().any(|d| d.contains(naming)),
            "no detail names {naming:?}: {:?}",
            r.details
        );
    }

    #[test]
    fn an_effect_no_op_produced_is_a_violation() {
        // The only op on notification 0 failed before its section (a definite failure):
        // nothing may have sent it, yet its effect happened and its flag is set.
        let mut failed = notify(1, 0, Phase::Fail, None);
        failed.end = Some((Phase::Fail, None, false));
        let h = history(vec![failed]);
        let r = check(&h, &outcome(&[(0, true)], &[(0, 1)]));
        violation(&r, "failed before its section");
        assert!(
            r.details
                .iter()
                .any(|d| d.contains("notification 0") && d.contains("no op")),
            "{:?}",
            r.details
        );
        // No op at all on it, flag unset: the effect still has no author.
        let r = check(&history(vec![]), &outcome(&[(0, false)], &[(0, 7)]));
        violation(&r, "op 7 (process 1), which is not in the history");
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
        // An uncertain op, then an acknowledged send: two effects allowed, one each.
        let ops = || {
            vec![
                notify(1, 0, Phase::Unknown, None),
                notify(2, 0, Phase::Ok, Some(true)),
            ]
        };
        let r = check(&history(ops()), &outcome(&[(0, true)], &[(0, 1), (0, 2)]));
        assert_eq!(r.verdict, Verdict::Pass, "{r:?}");
        let r = check(
            &history(ops()),
            &outcome(&[(0, true)], &[(0, 1), (0, 2), (0, 2)]),
        );
        violation(&r, "effect performed 3 times");
        // An op that found it sent accounts for nothing.
        let ops = vec![
            notify(1, 0, Phase::Ok, Some(true)),
            notify(2, 0, Phase::Ok, Some(false)),
        ];
        let r = check(&history(ops), &outcome(&[(0, true)], &[(0, 1), (0, 2)]));
        violation(&r, "found it already sent");
    }

    /// Counting effects per notification let one op's effects stand in for another's:
    /// matched to their ops, each is accounted for once, by the op that performed it.
    #[test]
    fn effects_are_matched_to_their_ops_one_by_one() {
        let ops = || {
            vec![
                notify(1, 0, Phase::Unknown, None),
                notify(2, 0, Phase::Ok, Some(true)),
            ]
        };
        // The acknowledged sender ran its effect twice (a rerun), the unknown op none:
        // two effects, as many as the notification allows, but one op repeated it.
        let r = check(&history(ops()), &outcome(&[(0, true)], &[(0, 2), (0, 2)]));
        violation(&r, "effect performed 2 times by p0/t0#2");
        // The acknowledged sender performed nothing; an unknown op's effect is not its.
        let r = check(&history(ops()), &outcome(&[(0, true)], &[(0, 1)]));
        violation(
            &r,
            "p0/t0#2 acknowledged sending it, but performed no effect",
        );
        // An op on another notification performed this one's effect.
        let ops = vec![
            notify(1, 0, Phase::Unknown, None),
            notify(2, 1, Phase::Ok, Some(true)),
        ];
        let r = check(
            &history(ops),
            &outcome(&[(0, false), (1, true)], &[(1, 2), (0, 2)]),
        );
        violation(&r, "an op on notification 1");
    }

    /// A line names its op's process too, and one naming an op of another process was
    /// not written by that op. A worker killed mid-write can leave part of a line that
    /// the next append completes: the line then names the right op and process with
    /// another notification.
    #[test]
    fn an_effect_line_naming_another_process_is_misattributed() {
        let sent = || notify(1, 0, Phase::Ok, Some(true));
        let mut o = outcome(&[(0, true)], &[(0, 1)]);
        o.effects[0].pid = 4242;
        let r = check(&history(vec![sent()]), &o);
        violation(
            &r,
            "effect line \"0 1 4242\" names p0/t0#1, an op of process 1: a garbled or misattributed line",
        );
        // Not credited to the op it names: that op has no effect of its own.
        violation(
            &r,
            "p0/t0#1 acknowledged sending it, but performed no effect",
        );
        // A torn "5" completed by "3 1 1": the right op and process, another notification.
        let sent = notify(1, 3, Phase::Ok, Some(true));
        let r = check(
            &history(vec![sent]),
            &outcome(&[(3, true), (53, false)], &[(53, 1)]),
        );
        violation(
            &r,
            "effect line \"53 1 1\" names p0/t0#1, an op on notification 3: a garbled or misattributed line",
        );
    }

    #[test]
    fn an_effect_naming_an_op_that_is_not_a_notify_op_says_so() {
        let other = op(
            7,
            &["k0"],
            OpInput::ReadWrite { write: Some(1) },
            Phase::Ok,
            Some(OpOutput::Read { value: None }),
        );
        let r = check(&history(vec![other]), &outcome(&[(0, false)], &[(0, 7)]));
        violation(&r, "names p0/t0#7, which is not a notify op");
        assert!(
            !r.details.iter().any(|d| d.contains("not in the history")),
            "{:?}",
            r.details
        );
    }

    #[test]
    fn an_effect_line_without_its_op_is_garbled() {
        let sent = notify(1, 0, Phase::Ok, Some(true));
        let mut o = outcome(&[(0, true)], &[(0, 1)]);
        o.garbled.push("0 4242".into());
        let r = check(&history(vec![sent]), &o);
        violation(&r, "garbled effect line \"0 4242\"");
    }

    #[test]
    fn a_notification_missing_from_the_final_flags_is_a_violation() {
        let sent = notify(1, 3, Phase::Ok, Some(true));
        let r = check(&history(vec![sent]), &outcome(&[(0, false)], &[]));
        violation(&r, "notification 3");
    }
}
