//! Properties of the linearizability and lost-update checkers over generated histories:
//! every history produced by a real sequential execution (with invoke and completion
//! times stretched around it, so ops overlap) passes; breaking one read or one write
//! makes it fail. Small histories with misleading section times go through the
//! exhaustive search.

use std::collections::BTreeMap;

use proptest::prelude::*;
use turnstile_harness::check::{self, Verdict};
use turnstile_harness::history::{Event, History, OpInput, OpOutput, Phase};

/// One generated op of a sequential execution on key `k`: a write (`Some`) or a delete,
/// and how far its invoke and completion stretch before and after its turn.
#[derive(Clone, Debug)]
struct Gen {
    delete: bool,
    early: u64,
    late: u64,
}

fn gen_ops(max: usize) -> impl Strategy<Value = Vec<Gen>> {
    prop::collection::vec(
        (prop::bool::weighted(0.25), 0u64..40, 0u64..40).prop_map(|(delete, early, late)| Gen {
            delete,
            early,
            late,
        }),
        1..max,
    )
}

/// Builds the history of executing `ops` one after the other, each taking 10 time units,
/// starting at 100. `honest_sections` records the true section times; otherwise every
/// section claims to span the whole invoke-to-completion window (no hint).
fn execute(ops: &[Gen], honest_sections: bool) -> (Vec<Event>, Option<i64>) {
    let mut events = Vec::new();
    let mut state: Option<i64> = None;
    for (i, g) in ops.iter().enumerate() {
        let start = 100 + 10 * i as u64;
        let (invoke, complete) = (start - g.early, start + 9 + g.late);
        let write = (!g.delete).then_some(i as i64 + 1);
        let base = Event {
            thread: i as u32,
            ..Event::invoke(
                i as u64,
                vec!["k".into()],
                invoke,
                OpInput::ReadWrite { write },
            )
        };
        events.push(base.clone());
        let (enter, exit) = if honest_sections {
            (start, start + 9)
        } else {
            (invoke, complete)
        };
        events.push(Event {
            phase: Phase::Ok,
            time: complete,
            input: None,
            output: Some(OpOutput::Read { value: state }),
            enter: Some(enter),
            exit: Some(exit),
            ..base
        });
        state = write;
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
