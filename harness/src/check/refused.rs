//! No op refused as busy: the data never turned an op away because another op held it.
//!
//! Seed 000's bug: a thread pool in front of SQLite, each thread with its own connection,
//! and a driver that gave up at once when another thread held the write lock — every
//! write issued at almost the same moment as another failed with `database is locked`.
//! A strategy that serializes ops keeps them from meeting at the data; one built on the
//! data's own locking gives up with its own errors
//! ([`Error::Timeout`](turnstile::Error::Timeout) from `busy-timeout`,
//! [`Error::Contended`](turnstile::Error::Contended) from `retry` and `optimistic`). So a
//! busy answer that reaches the caller means ops met at the data.
//!
//! Except behind a paused holder whose lease ran out: a worker the nemesis stopped
//! (`stop:MS`) inside its transaction keeps the data locked while its lease expires, and
//! its successor's `BEGIN` waits out the busy timeout and fails — what fencing is there to
//! make safe, not a collision the strategy let happen. For a strategy whose lease can
//! expire, a busy op of another process whose run overlaps a pause is excused and counted
//! apart; for any other strategy a paused holder keeps its lock too, and a refusal is a
//! collision.

use super::{CheckResult, rel};
use crate::history::History;

/// The checker's name.
pub const NAME: &str = "refused";

/// A worker process stopped by the nemesis, from `from` to `to` (ns, `CLOCK_MONOTONIC`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pause {
    /// The worker process index stopped.
    pub proc: u32,
    /// When it was stopped.
    pub from: u64,
    /// When it was let go on.
    pub to: u64,
}

/// Checks that no op failed (or ended unknown) because the data refused it as busy,
/// excusing ops of other processes that ran while a holder whose lease can expire was
/// stopped (`paused`: empty for a strategy without leases).
pub fn check(history: &History, paused: &[Pause]) -> CheckResult {
    let origin = history.origin();
    let (excused, refused): (Vec<_>, Vec<_>) =
        history.ops.iter().filter(|op| op.busy).partition(|op| {
            let end = op.complete.unwrap_or(u64::MAX);
            paused
                .iter()
                .any(|p| p.proc != op.proc && op.invoke <= p.to && p.from <= end)
        });
    let behind_pauses = if excused.is_empty() {
        String::new()
    } else {
        format!(
            "; {} refused behind a stopped holder whose lease ran out are excused",
            excused.len()
        )
    };
    if refused.is_empty() {
        return CheckResult::pass(
            NAME,
            format!(
                "no op of {} was refused by the data as busy outside a pause{behind_pauses}",
                history.ops.len()
            ),
        );
    }
    let details = refused
        .iter()
        .map(|op| {
            format!(
                "{} at {}: {}",
                op.label(),
                rel(op.complete.unwrap_or(op.invoke), origin),
                op.error.as_deref().unwrap_or("refused as busy")
            )
        })
        .collect();
    CheckResult::violation(
        NAME,
        format!(
            "{} of {} ops were refused by the data as busy (another op held it): they collided{}",
            refused.len(),
            history.ops.len(),
            if excused.is_empty() {
                String::new()
            } else {
                format!(
                    "; {} more behind a paused holder are excused",
                    excused.len()
                )
            }
        ),
        details,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::Verdict;
    use crate::history::{Op, OpInput, Phase};

    fn op(id: u64, phase: Phase, busy: bool) -> Op {
        Op {
            id,
            proc: 0,
            pid: 1,
            thread: 0,
            tid: 1,
            keys: vec!["c0".into()],
            input: OpInput::Increment,
            phase,
            output: None,
            invoke: id * 10,
            complete: Some(id * 10 + 5),
            enter: None,
            exit: None,
            fence: None,
            error: busy.then(|| "resource: database is locked".to_owned()),
            busy,
            settled: false,
        }
    }

    #[test]
    fn an_op_refused_as_busy_is_a_collision() {
        let ok = History {
            ops: vec![op(1, Phase::Ok, false), op(2, Phase::Fail, false)],
            ..History::default()
        };
        assert_eq!(check(&ok, &[]).verdict, Verdict::Pass);
        let refused = History {
            ops: vec![op(1, Phase::Ok, false), op(2, Phase::Fail, true)],
            ..History::default()
        };
        let result = check(&refused, &[]);
        assert_eq!(result.verdict, Verdict::Violation);
        assert!(
            result.summary.starts_with("1 of 2 ops"),
            "{}",
            result.summary
        );
        assert!(
            result.details[0].contains("database is locked"),
            "{:?}",
            result.details
        );
    }

    /// Op 2 (process 0) runs from 20 to 25 ns: a pause of another process that overlaps
    /// it excuses it; one of its own process, or one that ended before it began, does not.
    #[test]
    fn a_refusal_behind_a_paused_holder_is_excused() {
        let refused = History {
            ops: vec![op(1, Phase::Ok, false), op(2, Phase::Fail, true)],
            ..History::default()
        };
        let pause = |proc, from, to| Pause { proc, from, to };
        let behind = check(&refused, &[pause(1, 22, 1_000)]);
        assert_eq!(behind.verdict, Verdict::Pass);
        assert!(
            behind.summary.contains("; 1 refused behind"),
            "{}",
            behind.summary
        );
        assert_eq!(
            check(&refused, &[pause(0, 22, 1_000)]).verdict,
            Verdict::Violation
        );
        assert_eq!(
            check(&refused, &[pause(1, 0, 19)]).verdict,
            Verdict::Violation
        );
    }
}
