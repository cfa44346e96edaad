//! Own error (the [`unique`](crate::workload::unique) workload, seed 001): every op that
//! fails on purpose came back to its caller as its own error.
//!
//! Seed 001's consumer thread owned the SQLite connection; when an op broke an integrity
//! constraint, the error happened in that thread, and its caller had to be told ("I simply
//! catch the exception in the worker thread and stuff it into the request object"). A
//! strategy that runs ops elsewhere (a queue's worker) or reruns them can lose the op's
//! error on the way back: answer `Ok`, or some error of its own in its place. The
//! [`Serializer`](turnstile::Serializer) contract hands the op's error back as
//! `Error::Op`, untouched, so a caller can still match a UNIQUE violation.
//!
//! The ops that fail on purpose are known from their ids
//! ([`fails_on_purpose`]). Each one that ran
//! (entered its section) must have ended with an `op` error. One acknowledged had its
//! error swallowed; one that ended with another error after it ran had it replaced —
//! except by an error that says the strategy lost track of the op (its outcome unknown,
//! its lease lost, its backend gone), which supersedes any answer. Whether the failed op
//! also rolled back alone is `lost_update`'s to say (see the workload).

use super::{CheckResult, rel};
use crate::history::{History, Phase};
use crate::workload::unique::fails_on_purpose;

/// The checker's name.
pub const NAME: &str = "own_error";

/// Strategy errors that may stand in for an op's own: the strategy could not know how the
/// op ended, or lost the right to answer for it.
const SUPERSEDING: [&str; 6] = [
    "indeterminate",
    "lease-lost",
    "stale-fence",
    "unavailable",
    "closed",
    "cut off",
];

/// Checks that each op of `history` that fails on purpose and ran came back with an `op`
/// error.
pub fn check(history: &History) -> CheckResult {
    let origin = history.origin();
    let mut returned = 0usize;
    let mut superseded = 0usize;
    let mut never_ran = 0usize;
    let mut swallowed = Vec::new();
    let mut replaced = Vec::new();
    for op in history.ops.iter().filter(|op| fails_on_purpose(op.id)) {
        let kind = op
            .error
            .as_deref()
            .map(|e| e.split(':').next().unwrap_or(e));
        let at = rel(op.complete.unwrap_or(op.invoke), origin);
        match (op.phase, kind) {
            (Phase::Ok, _) => swallowed.push(format!(
                "{} at {at}: acknowledged, yet it breaks a UNIQUE key on purpose: its error was swallowed",
                op.label()
            )),
            (_, Some("op")) => returned += 1,
            // Cut off (a worker killed in its section): no completion, so no section times
            // either, but it may have run; its outcome is unknown.
            _ if op.complete.is_none() => superseded += 1,
            _ if op.enter.is_none() => never_ran += 1,
            (_, Some(kind)) if SUPERSEDING.contains(&kind) => superseded += 1,
            (_, None) => superseded += 1,
            (_, Some(_)) => replaced.push(format!(
                "{} at {at}: ran to its UNIQUE violation, but its caller got `{}`, not the op's error",
                op.label(),
                op.error.as_deref().unwrap_or_default()
            )),
        }
    }
    let planned = returned + superseded + never_ran + swallowed.len() + replaced.len();
    let rest = [
        (
            superseded,
            "ended unknown or with their lease or backend lost",
        ),
        (never_ran, "never ran"),
    ]
    .iter()
    .filter(|(n, _)| *n > 0)
    .map(|(n, what)| format!("; {n} {what}"))
    .collect::<String>();
    if !swallowed.is_empty() || !replaced.is_empty() {
        return CheckResult::violation(
            NAME,
            format!(
                "{} of {planned} ops that fail on purpose did not get their own error back: {} answered Ok, {} with another error{rest}",
                swallowed.len() + replaced.len(),
                swallowed.len(),
                replaced.len()
            ),
            swallowed.into_iter().chain(replaced).collect(),
        );
    }
    if returned == 0 {
        return CheckResult::inconclusive(
            NAME,
            format!("no op that fails on purpose ran to its error ({planned} planned{rest})"),
        );
    }
    CheckResult::pass(
        NAME,
        format!("each of {returned} ops that fail on purpose got its own error back{rest}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::Verdict;
    use crate::check::hand::{history, op};
    use crate::history::{OpInput, OpOutput};

    fn wrote(id: u64, phase: Phase) -> crate::check::hand::Op {
        let output = (phase == Phase::Ok).then_some(OpOutput::Wrote { value: id as i64 });
        op(id, &["c0"], OpInput::Increment, phase, output)
    }

    /// Ops 3 and 7 fail on purpose; `hand::history` records a failed op's error as
    /// `op: failed`.
    #[test]
    fn ops_that_fail_on_purpose_must_fail_with_their_own_error() {
        let ok = |ids: &[u64]| {
            ids.iter()
                .map(|&id| wrote(id, Phase::Ok))
                .collect::<Vec<_>>()
        };
        let mut ops = ok(&[0, 1, 2, 4, 5, 6]);
        ops.extend([wrote(3, Phase::Fail), wrote(7, Phase::Unknown)]);
        let r = check(&history(ops));
        assert_eq!(r.verdict, Verdict::Pass, "{r:?}");
        assert!(r.summary.starts_with("each of 2 ops"), "{}", r.summary);

        let r = check(&history(ok(&[0, 1, 2, 3])));
        assert_eq!(r.verdict, Verdict::Violation, "{r:?}");
        assert!(r.details[0].contains("#3") && r.details[0].contains("swallowed"));

        let r = check(&history(ok(&[0, 1, 2])));
        assert_eq!(r.verdict, Verdict::Inconclusive, "{r:?}");
    }

    #[test]
    fn another_error_after_the_op_ran_replaced_its_own() {
        let h = |error: &str, entered: bool| {
            let mut h = history(vec![wrote(3, Phase::Fail)]);
            h.ops[0].error = Some(error.to_owned());
            if !entered {
                h.ops[0].enter = None;
            }
            h
        };
        let r = check(&h(
            "config: a strategy returned a value of another type",
            true,
        ));
        assert_eq!(r.verdict, Verdict::Violation, "{r:?}");
        assert!(
            r.details[0].contains("config: a strategy"),
            "{:?}",
            r.details
        );
        assert_eq!(
            check(&h("resource: commit failed", true)).verdict,
            Verdict::Violation
        );
        // An outcome the strategy could not know stands; an op that never ran had no
        // error of its own to give.
        assert_eq!(
            check(&h("indeterminate: unknown", true)).verdict,
            Verdict::Inconclusive
        );
        assert_eq!(
            check(&h("timeout: waited 1s", false)).verdict,
            Verdict::Inconclusive
        );
    }

    /// An op cut off by a kill has no completion, and so no section times: it may have
    /// run, so its outcome is unknown, not "never ran".
    #[test]
    fn an_op_cut_off_is_of_unknown_outcome() {
        let mut cut = wrote(3, Phase::Fail);
        cut.end = None;
        let r = check(&history(vec![cut, wrote(7, Phase::Fail)]));
        assert_eq!(r.verdict, Verdict::Pass, "{r:?}");
        assert!(
            r.summary
                .ends_with("; 1 ended unknown or with their lease or backend lost"),
            "{}",
            r.summary
        );
    }
}
