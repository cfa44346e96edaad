//! Each checker on hand-made histories: it passes a correct one and names what broke in a
//! broken one.

use std::collections::BTreeMap;

use turnstile_harness::check::{self, Verdict};
use turnstile_harness::history::{Event, History, OpInput, OpOutput, Phase};
use turnstile_harness::workload::notify_once::{Effect, Outcome};

/// An op on `key` invoked at `t0`, in its section `enter..exit`, completed at `t1`.
struct Spec {
    id: u64,
    key: &'static str,
    input: OpInput,
    times: [u64; 4],
    end: Option<(Phase, Option<OpOutput>)>,
}

fn op(
    id: u64,
    key: &'static str,
    input: OpInput,
    times: [u64; 4],
    phase: Phase,
    output: Option<OpOutput>,
) -> Spec {
    Spec {
        id,
        key,
        input,
        times,
        end: Some((phase, output)),
    }
}

fn history(specs: Vec<Spec>) -> History {
    let mut events = Vec::new();
    for s in specs {
        let base = Event {
            proc: (s.id % 3) as u32,
            pid: 100 + (s.id % 3) as u32,
            ..Event::invoke(s.id, vec![s.key.to_owned()], s.times[0], s.input)
        };
        events.push(base.clone());
        if let Some((phase, output)) = s.end {
            events.push(Event {
                phase,
                time: s.times[3],
                input: None,
                output,
                enter: Some(s.times[1]),
                exit: Some(s.times[2]),
                ..base
            });
        }
    }
    History::from_events(events)
}

fn wrote(v: i64) -> Option<OpOutput> {
    Some(OpOutput::Wrote { value: v })
}

#[test]
fn lost_update_counts_acknowledged_against_final() {
    let h = history(vec![
        op(
            1,
            "c0",
            OpInput::Increment,
            [0, 1, 2, 3],
            Phase::Ok,
            wrote(1),
        ),
        op(
            2,
            "c0",
            OpInput::Increment,
            [4, 5, 6, 7],
            Phase::Ok,
            wrote(2),
        ),
    ]);
    let ok = BTreeMap::from([("c0".to_owned(), 2)]);
    assert_eq!(check::lost_update::check(&h, &ok).verdict, Verdict::Pass);
    // Two ops wrote 1: one increment lost.
    let h = history(vec![
        op(
            1,
            "c0",
            OpInput::Increment,
            [0, 1, 5, 6],
            Phase::Ok,
            wrote(1),
        ),
        op(
            2,
            "c0",
            OpInput::Increment,
            [0, 2, 4, 7],
            Phase::Ok,
            wrote(1),
        ),
    ]);
    let lost = BTreeMap::from([("c0".to_owned(), 1)]);
    let r = check::lost_update::check(&h, &lost);
    assert_eq!(r.verdict, Verdict::Violation);
    assert!(
        r.details.iter().any(|d| d.contains("1 lost increments")),
        "{:?}",
        r.details
    );
    assert!(
        r.details
            .iter()
            .any(|d| d.contains("value 1 written by 2 ops")),
        "{:?}",
        r.details
    );
    // An unknown op may explain one more, but not two.
    let mut specs = vec![op(
        1,
        "c0",
        OpInput::Increment,
        [0, 1, 2, 3],
        Phase::Ok,
        wrote(1),
    )];
    specs.push(Spec {
        id: 2,
        key: "c0",
        input: OpInput::Increment,
        times: [4, 0, 0, 0],
        end: None,
    });
    let h = history(specs);
    assert_eq!(
        check::lost_update::check(&h, &BTreeMap::from([("c0".to_owned(), 2)])).verdict,
        Verdict::Pass
    );
    assert_eq!(
        check::lost_update::check(&h, &BTreeMap::from([("c0".to_owned(), 3)])).verdict,
        Verdict::Violation
    );
}

#[test]
fn overlap_finds_sections_that_intersect_on_one_key_only() {
    let h = history(vec![
        op(
            1,
            "a",
            OpInput::Increment,
            [0, 10, 20, 21],
            Phase::Ok,
            wrote(1),
        ),
        op(
            2,
            "a",
            OpInput::Increment,
            [0, 20, 30, 31],
            Phase::Ok,
            wrote(2),
        ),
        // Another key may overlap.
        op(
            3,
            "b",
            OpInput::Increment,
            [0, 15, 25, 26],
            Phase::Ok,
            wrote(1),
        ),
    ]);
    assert_eq!(check::overlap::check(&h).verdict, Verdict::Pass);
    let h = history(vec![
        op(
            1,
            "a",
            OpInput::Increment,
            [0, 10, 20, 21],
            Phase::Ok,
            wrote(1),
        ),
        op(
            2,
            "a",
            OpInput::Increment,
            [0, 19, 30, 31],
            Phase::Ok,
            wrote(2),
        ),
    ]);
    let r = check::overlap::check(&h);
    assert_eq!(r.verdict, Verdict::Violation);
    assert!(
        r.details[0].contains("key a") && r.details[0].contains("overlaps"),
        "{:?}",
        r.details
    );
}

#[test]
fn bank_catches_created_money_and_negative_balances() {
    // One acknowledged transfer of 50 from a1 to a0.
    let h = history(vec![op(
        1,
        "a1",
        OpInput::Transfer {
            from: "a1".into(),
            to: "a0".into(),
            amount: 50,
        },
        [0, 1, 2, 3],
        Phase::Ok,
        Some(OpOutput::Transferred { applied: true }),
    )]);
    let fine = BTreeMap::from([("a0".to_owned(), 150), ("a1".to_owned(), 50)]);
    assert_eq!(check::bank::check(&h, &fine, 200).verdict, Verdict::Pass);
    let created = BTreeMap::from([("a0".to_owned(), 150), ("a1".to_owned(), 70)]);
    let r = check::bank::check(&h, &created, 200);
    assert_eq!(r.verdict, Verdict::Violation);
    assert!(r.details[0].contains("20 money created"), "{:?}", r.details);
    let negative = BTreeMap::from([("a0".to_owned(), 210), ("a1".to_owned(), -10)]);
    assert!(
        check::bank::check(&h, &negative, 200)
            .details
            .iter()
            .any(|d| d.contains("a1 is negative"))
    );
}

#[test]
fn exactly_once_allows_one_extra_effect_per_uncertain_op_only() {
    let sent = |id, n, t: u64| {
        op(
            n,
            "n",
            OpInput::Notify { id },
            [t, t + 1, t + 2, t + 3],
            Phase::Ok,
            Some(OpOutput::Notified { sent: true }),
        )
    };
    // Notification 0's effect performed once by each op of `by`, in its process.
    let outcome = |by: &[u64]| Outcome {
        sent: BTreeMap::from([(0, true)]),
        effects: by
            .iter()
            .map(|&op| Effect {
                notification: 0,
                op,
                pid: 100 + (op % 3) as u32,
            })
            .collect(),
        garbled: vec![],
    };
    let h = history(vec![sent(0, 1, 0)]);
    assert_eq!(
        check::exactly_once::check(&h, &outcome(&[1])).verdict,
        Verdict::Pass
    );
    let r = check::exactly_once::check(&h, &outcome(&[1, 1]));
    assert_eq!(r.verdict, Verdict::Violation);
    assert!(
        r.details[0].contains("performed 2 times"),
        "{:?}",
        r.details
    );
    // Two acknowledged sends of one notification.
    let h = history(vec![sent(0, 1, 0), sent(0, 2, 10)]);
    assert!(
        check::exactly_once::check(&h, &outcome(&[1, 2]))
            .details
            .iter()
            .any(|d| d.contains("sent by 2 acknowledged ops"))
    );
    // A cut-off op may have performed it once more.
    let mut specs = vec![sent(0, 1, 0)];
    specs.push(Spec {
        id: 2,
        key: "n",
        input: OpInput::Notify { id: 0 },
        times: [5, 0, 0, 0],
        end: None,
    });
    assert_eq!(
        check::exactly_once::check(&history(specs), &outcome(&[1, 2])).verdict,
        Verdict::Pass
    );
}

#[test]
fn file_store_catches_lost_records_and_torn_reads() {
    let h = history(vec![
        op(
            1,
            "*",
            OpInput::Append { record: 1 },
            [0, 1, 2, 3],
            Phase::Ok,
            Some(OpOutput::Appended),
        ),
        op(
            2,
            "*",
            OpInput::Append { record: 2 },
            [4, 5, 6, 7],
            Phase::Ok,
            Some(OpOutput::Appended),
        ),
    ]);
    assert_eq!(
        check::file_store::check(&h, &Ok(vec![1, 2])).verdict,
        Verdict::Pass
    );
    let r = check::file_store::check(&h, &Ok(vec![2]));
    assert_eq!(r.verdict, Verdict::Violation);
    assert!(
        r.details[0].contains("1 of 2 acknowledged records lost"),
        "{:?}",
        r.details
    );
    assert_eq!(
        check::file_store::check(&h, &Err("bad header".into())).verdict,
        Verdict::Violation
    );
}

#[test]
fn linearizable_accepts_a_chain_and_refuses_a_lost_write() {
    let rw = |id, write, times, read| {
        op(
            id,
            "k",
            OpInput::ReadWrite { write },
            times,
            Phase::Ok,
            Some(OpOutput::Read { value: read }),
        )
    };
    let chain = history(vec![
        rw(1, Some(1), [0, 1, 2, 3], None),
        rw(2, None, [4, 5, 6, 7], Some(1)),
        rw(3, Some(3), [8, 9, 10, 11], None),
    ]);
    let last = BTreeMap::from([("k".to_owned(), 3)]);
    assert_eq!(
        check::linearizable::check(&chain, &last, 1000).verdict,
        Verdict::Pass
    );
    // Sections that claim the wrong order (b entered first, yet read a's write): the
    // replays fail and the exhaustive search finds the real order.
    let misleading = history(vec![
        rw(1, Some(1), [0, 5, 11, 12], None),
        rw(2, Some(2), [0, 1, 10, 12], Some(1)),
    ]);
    let r = check::linearizable::check(&misleading, &BTreeMap::from([("k".to_owned(), 2)]), 1000);
    assert_eq!(r.verdict, Verdict::Pass, "{:?}", r.details);
    assert!(r.summary.contains("(1 keys searched)"), "{}", r.summary);
    // Wrong final state.
    let wrong = BTreeMap::from([("k".to_owned(), 1)]);
    assert_eq!(
        check::linearizable::check(&chain, &wrong, 1000).verdict,
        Verdict::Violation
    );
    // Two ops read 1 and both wrote: one write lost.
    let lost = history(vec![
        rw(1, Some(1), [0, 1, 2, 3], None),
        rw(2, Some(2), [4, 5, 7, 9], Some(1)),
        rw(3, Some(3), [4, 6, 8, 10], Some(1)),
    ]);
    let r = check::linearizable::check(&lost, &BTreeMap::from([("k".to_owned(), 3)]), 1000);
    assert_eq!(r.verdict, Verdict::Violation);
    assert!(
        r.details
            .iter()
            .any(|d| d.contains("value 1 read by 2 ops")),
        "{:?}",
        r.details
    );
    // Out of budget is a failure, never a pass.
    let r = check::linearizable::check(&lost, &BTreeMap::from([("k".to_owned(), 3)]), 1);
    assert_eq!(r.verdict, Verdict::Violation);
    assert!(r.details[0].contains("budget"), "{:?}", r.details);
}

/// A versioned record that is not eight bytes reads as `i64::MIN`: the checkers report it
/// as a violation instead of overflowing.
#[test]
fn a_garbled_record_is_a_violation_not_an_overflow() {
    let h = history(vec![op(
        1,
        "c0",
        OpInput::Increment,
        [0, 1, 2, 3],
        Phase::Ok,
        wrote(1),
    )]);
    let r = check::lost_update::check(&h, &BTreeMap::from([("c0".to_owned(), i64::MIN)]));
    assert_eq!(r.verdict, Verdict::Violation);
    assert!(
        r.details
            .iter()
            .any(|d| d.contains("key c0") && d.contains("garbled")),
        "{:?}",
        r.details
    );

    let h = History::default();
    let mut balances: BTreeMap<String, i64> = (1..4).map(|i| (format!("a{i}"), 100)).collect();
    balances.insert("a0".to_owned(), i64::MIN);
    let r = check::bank::check(&h, &balances, 400);
    assert_eq!(r.verdict, Verdict::Violation);
    assert!(
        r.details
            .iter()
            .any(|d| d.contains("garbled") && d.contains("a0")),
        "{:?}",
        r.details
    );
    balances.insert("a1".to_owned(), i64::MIN);
    let r = check::bank::check(&h, &balances, 400);
    assert_eq!(r.verdict, Verdict::Violation);
    assert!(
        r.details
            .iter()
            .any(|d| d.contains("2 garbled") && d.contains("a0, a1")),
        "{:?}",
        r.details
    );
}
