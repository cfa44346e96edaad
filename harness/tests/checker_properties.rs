//! Properties of the linearizability and lost-update checkers over generated histories:
//! every history produced by a real sequential execution (with invoke and completion
//! times stretched around it, so ops overlap) passes — also when some ops end of unknown
//! outcome, settled, having taken effect within their window or not at all; breaking one
//! read or one write makes it fail, and so does a settled unknown op that took effect
//! only after its completion. Small histories with misleading section times go through
//! the exhaustive search; the replay and the search are each tested on their own too.

use std::collections::BTreeMap;

use proptest::prelude::*;
use turnstile_harness::check::linearizable::Method;
use turnstile_harness::check::{self, Verdict};
use turnstile_harness::history::{Event, History, OpInput, OpOutput, Phase};

/// How a generated op ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    /// Acknowledged, with what it read.
    Ok,
    /// Unknown and settled, having taken effect in its turn.
    Applied,
    /// Unknown and settled, having never taken effect.
    NotApplied,
}

/// One generated op of a sequential execution on key `k`: a write (`Some`) or a delete,
/// how far its invoke and completion stretch before and after its turn, and how it ends.
#[derive(Clone, Debug)]
struct Gen {
    delete: bool,
    early: u64,
    late: u64,
    end: End,
}

fn gen_ops(max: usize) -> impl Strategy<Value = Vec<Gen>> {
    prop::collection::vec(
        (prop::bool::weighted(0.25), 0u64..40, 0u64..40).prop_map(|(delete, early, late)| Gen {
            delete,
            early,
            late,
            end: End::Ok,
        }),
        1..max,
    )
}

/// [`gen_ops`], with a random fraction of the ops (up to a half) ending unknown.
fn gen_ops_with_unknowns(max: usize) -> impl Strategy<Value = Vec<Gen>> {
    (gen_ops(max), 0.0..0.5f64, any::<u64>()).prop_map(|(mut ops, fraction, seed)| {
        let mut rng = fastrand::Rng::with_seed(seed);
        for g in &mut ops {
            if rng.f64() < fraction {
                g.end = if rng.bool() {
                    End::Applied
                } else {
                    End::NotApplied
                };
            }
        }
        ops
    })
}

/// Builds the history of executing `ops` one after the other, each taking 10 time units,
/// starting at 100. `honest_sections` records the true section times; otherwise every
/// section claims to span the whole invoke-to-completion window (no hint).
fn execute(ops: &[Gen], honest_sections: bool) -> (Vec<Event>, Option<i64>) {
    execute_deferring(ops, honest_sections, None)
}

/// [`execute`], but with `defer` = `Some((u, r))` op `u` takes effect just before op
/// `r`'s turn rather than in its own.
fn execute_deferring(
    ops: &[Gen],
    honest_sections: bool,
    defer: Option<(usize, usize)>,
) -> (Vec<Event>, Option<i64>) {
    let mut events = Vec::new();
    let mut state: Option<i64> = None;
    let write = |i: usize| (!ops[i].delete).then_some(i as i64 + 1);
    for (i, g) in ops.iter().enumerate() {
        if let Some((u, r)) = defer
            && r == i
        {
            state = write(u);
        }
        let start = 100 + 10 * i as u64;
        let (invoke, complete) = (start - g.early, start + 9 + g.late);
        let base = Event {
            thread: i as u32,
            ..Event::invoke(
                i as u64,
                vec!["k".into()],
                invoke,
                OpInput::ReadWrite { write: write(i) },
            )
        };
        events.push(base.clone());
        let (enter, exit) = if honest_sections {
            (start, start + 9)
        } else {
            (invoke, complete)
        };
        let unknown = g.end != End::Ok;
        events.push(Event {
            phase: if unknown { Phase::Unknown } else { Phase::Ok },
            time: complete,
            input: None,
            output: (!unknown).then_some(OpOutput::Read { value: state }),
            enter: Some(enter),
            exit: Some(exit),
            error: unknown.then(|| "op: unknown".to_owned()),
            settled: unknown,
            ..base
        });
        let deferred = defer.is_some_and(|(u, _)| u == i);
        if g.end != End::NotApplied && !deferred {
            state = write(i);
        }
    }
    (events, state)
}

fn records(last: Option<i64>) -> BTreeMap<String, i64> {
    last.map(|v| BTreeMap::from([("k".to_owned(), v)]))
        .unwrap_or_default()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn sequential_executions_are_linearizable(ops in gen_ops(60), honest in any::<bool>()) {
        let n = ops.len();
        let (events, last) = execute(&ops, honest || n > check::linearizable::SEARCH_LIMIT);
        let r = check::linearizable::check(&History::from_events(events), &records(last), 1_000_000);
        prop_assert_eq!(r.verdict, Verdict::Pass, "{:?}", r.details);
    }

    #[test]
    fn settled_unknown_ops_within_their_windows_are_linearizable(
        ops in gen_ops_with_unknowns(60),
        honest in any::<bool>(),
    ) {
        let n = ops.len();
        let (events, last) = execute(&ops, honest || n > check::linearizable::SEARCH_LIMIT);
        let h = History::from_events(events);
        let r = check::linearizable::check(&h, &records(last), 1_000_000);
        prop_assert_eq!(r.verdict, Verdict::Pass, "{:?}", r.details);
        // Each way on its own: the replay needs the sections' order, the search a small
        // history.
        if honest || n > check::linearizable::SEARCH_LIMIT {
            let r = check::linearizable::check_with(&h, &records(last), 1_000_000, Method::Replay);
            prop_assert_eq!(r.verdict, Verdict::Pass, "{:?}", r.details);
        }
        if n <= check::linearizable::SEARCH_LIMIT {
            let r = check::linearizable::check_with(&h, &records(last), 1_000_000, Method::Search);
            prop_assert_eq!(r.verdict, Verdict::Pass, "{:?}", r.details);
        }
    }

    /// Op `u` ends unknown and settled, and takes effect only at op `r`'s turn, two ops
    /// later; `a`, between them, is invoked once `u` completed and completes before `r`
    /// is invoked, and `r` reads `u`'s write. No order fits: `u`'s write is read by `r`,
    /// so `u` comes right before `r` (every other write is another value); `a` comes
    /// before `r`, so before `u` — but `a` was invoked after `u`'s deadline.
    #[test]
    fn a_settled_unknown_op_applied_after_its_completion_is_caught(
        mut ops in gen_ops_with_unknowns(20),
        at in any::<prop::sample::Index>(),
        honest in any::<bool>(),
    ) {
        prop_assume!(ops.len() >= 3);
        let u = at.index(ops.len() - 2);
        let (a, r) = (u + 1, u + 2);
        ops[u] = Gen { delete: false, late: 0, end: End::Applied, ..ops[u].clone() };
        ops[a] = Gen { early: 0, late: 0, end: End::Ok, ..ops[a].clone() };
        ops[r] = Gen { early: 0, end: End::Ok, ..ops[r].clone() };
        let (events, last) = execute_deferring(&ops, honest, Some((u, r)));
        let h = History::from_events(events);
        for method in [Method::Auto, Method::Replay, Method::Search] {
            let r = check::linearizable::check_with(&h, &records(last), 1_000_000, method);
            prop_assert_eq!(r.verdict, Verdict::Violation, "{:?}: {:?}", method, r.details);
        }
        // The same history with `u` free to take effect later passes.
        let mut events = execute_deferring(&ops, honest, Some((u, r))).0;
        events[2 * u + 1].settled = false;
        let r = check::linearizable::check(&History::from_events(events), &records(last), 1_000_000);
        prop_assert_eq!(r.verdict, Verdict::Pass, "{:?}", r.details);
    }

    #[test]
    fn a_changed_read_is_caught(ops in gen_ops(16), victim in any::<prop::sample::Index>()) {
        let (mut events, last) = execute(&ops, false);
        // Completions are the odd events; make one read a value nobody wrote.
        let i = victim.index(ops.len());
        events[2 * i + 1].output = Some(OpOutput::Read { value: Some(-7) });
        let r = check::linearizable::check(&History::from_events(events), &records(last), 1_000_000);
        prop_assert_eq!(r.verdict, Verdict::Violation);
    }

    #[test]
    fn a_lost_final_write_is_caught(ops in gen_ops(40)) {
        let (events, last) = execute(&ops, true);
        // The record holds something the last op did not leave.
        let wrong = match last { Some(_) => None, None => Some(-1) };
        let r = check::linearizable::check(&History::from_events(events), &records(wrong), 1_000_000);
        prop_assert_eq!(r.verdict, Verdict::Violation);
    }

    #[test]
    fn counters_lose_exactly_what_the_final_value_misses(n in 1usize..200, lost in 0usize..5) {
        let mut events = Vec::new();
        for i in 0..n {
            let base = Event {
                phase: Phase::Invoke, op: i as u64, proc: 0, pid: 1, thread: 0, tid: 1,
                keys: vec!["c0".into()], time: 10 * i as u64, input: Some(OpInput::Increment),
                output: None, enter: None, exit: None, fence: None, error: None, busy: false, settled: false,
            };
            events.push(base.clone());
            events.push(Event {
                phase: Phase::Ok, time: 10 * i as u64 + 5, input: None,
                output: Some(OpOutput::Wrote { value: i as i64 + 1 }),
                enter: Some(10 * i as u64 + 1), exit: Some(10 * i as u64 + 4), ..base
            });
        }
        let lost = lost.min(n);
        let values = BTreeMap::from([("c0".to_owned(), (n - lost) as i64)]);
        let r = check::lost_update::check(&History::from_events(events), &values);
        if lost == 0 {
            prop_assert_eq!(r.verdict, Verdict::Pass);
        } else {
            prop_assert_eq!(r.verdict, Verdict::Violation);
            let expected = format!("{lost} lost increments");
            prop_assert!(r.details[0].contains(&expected), "{:?}", r.details);
        }
    }
}
