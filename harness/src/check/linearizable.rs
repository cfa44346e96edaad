//! Linearizability per key (kv): every key's ops — each reads the record, then writes a
//! new value or deletes it — must fit one sequential order that respects real time (an op
//! that completed before another was invoked comes first) and ends in the final state.
//!
//! An op of unknown outcome may have taken effect or not; if it did, it did after it was
//! invoked and — like any op — before it ended, unless it may still have been under way
//! at the data when its caller saw it end: an op a killed worker left without an end, an
//! op whose caller stopped waiting ([`Error::Indeterminate`]: the queue's caller that
//! timed out, a `COMMIT` whose answer was lost), an op whose statement a database server
//! may not have answered, an op that panicked ([`Event::settled`] is false for those).
//! Only those may take effect at any time after their invoke.
//!
//! [`Error::Indeterminate`]: turnstile::Error::Indeterminate
//! [`Event::settled`]: crate::history::Event::settled
//!
//! Fast path: written values are unique in a run, so a correct execution is the order in
//! which ops entered their critical sections; the checker replays that order (and the
//! order of exits, for strategies that overlap and arbitrate at commit), slotting in ops
//! of unknown outcome where a read needs their write. If neither order fits, a small
//! history gets an exhaustive Wing–Gong–Lowe search with a step budget; a large one, or a
//! search that runs out of budget, is a violation: nothing showed the history linearizable.

use std::collections::{BTreeMap, HashMap, HashSet};

use super::CheckResult;
use crate::history::{History, OpInput, OpOutput, Phase};

/// The step budget of the exhaustive search per key.
pub const DEFAULT_BUDGET: u64 = 200_000;

/// Histories of at most this many ops per key get the exhaustive search.
pub const SEARCH_LIMIT: usize = 20;

#[derive(Clone, Debug)]
struct KvOp {
    label: String,
    invoke: u64,
    /// `u64::MAX` for an op cut off without completing.
    complete: u64,
    /// The latest its effect may take place: its completion, or `u64::MAX` for an
    /// unknown op that may still have been under way after it (see the module's doc).
    deadline: u64,
    enter: u64,
    exit: u64,
    /// `Some(read)` for an acknowledged op; `None` for an unknown one (its read is unknown,
    /// and it may not have happened at all).
    read: Option<Option<i64>>,
    write: Option<i64>,
}

impl KvOp {
    fn required(&self) -> bool {
        self.read.is_some()
    }
}

/// How [`check_with`] looks for a linearization of a key's ops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Method {
    /// The replays, then the search for a key of at most [`SEARCH_LIMIT`] ops: what
    /// [`check`] does.
    Auto,
    /// Only the replays of the section orders: a key neither fits is a violation, though
    /// the search might have found an order.
    Replay,
    /// Only the exhaustive search; a key of more than [`SEARCH_LIMIT`] ops is a violation,
    /// not searched.
    Search,
}

/// Checks every key of the history against the final `records`, with `budget` search
/// steps per key.
pub fn check(history: &History, records: &BTreeMap<String, i64>, budget: u64) -> CheckResult {
    check_with(history, records, budget, Method::Auto)
}

/// [`check`], looking for each key's linearization by `method` alone: a test of the
/// replay and the search each on its own.
pub fn check_with(
    history: &History,
    records: &BTreeMap<String, i64>,
    budget: u64,
    method: Method,
) -> CheckResult {
    const NAME: &str = "linearizable";
    let mut per_key: BTreeMap<String, Vec<KvOp>> = BTreeMap::new();
    for op in &history.ops {
        let OpInput::ReadWrite { write } = op.input else {
            continue;
        };
        let read = match (op.phase, &op.output) {
            (Phase::Ok, Some(OpOutput::Read { value })) => Some(*value),
            (Phase::Unknown, _) => None,
            // Failed ops did not happen.
            _ => continue,
        };
        let Some(key) = op.keys.first() else { continue };
        let complete = op.complete.unwrap_or(u64::MAX);
        per_key.entry(key.clone()).or_default().push(KvOp {
            label: op.label(),
            invoke: op.invoke,
            complete,
            deadline: if read.is_some() || op.settled {
                complete
            } else {
                u64::MAX
            },
            enter: op.enter.unwrap_or(op.invoke),
            exit: op.exit.or(op.complete).unwrap_or(u64::MAX),
            read,
            write,
        });
    }
    for key in records.keys() {
        per_key.entry(key.clone()).or_default();
    }
    let mut details = Vec::new();
    let mut searched = 0usize;
    let mut total = 0usize;
    for (key, ops) in &per_key {
        total += ops.len();
        let last = records.get(key).copied();
        let why = if method == Method::Search {
            "searched alone".to_owned()
        } else {
            let by_enter = replay(ops, last, |o| o.enter);
            if by_enter.is_ok() || replay(ops, last, |o| o.exit).is_ok() {
                continue;
            }
            by_enter.err().unwrap_or_default()
        };
        if ops.len() <= SEARCH_LIMIT && method != Method::Replay {
            searched += 1;
            match search(ops, last, budget) {
                Search::Found => continue,
                Search::Impossible => details.push(format!(
                    "key {key}: no order of its {} ops is linearizable ({why})",
                    ops.len()
                )),
                Search::OutOfBudget => details.push(format!(
                    "key {key}: search ran out of its {budget}-step budget without finding a linearization ({why})"
                )),
            }
        } else if method == Method::Search {
            details.push(format!(
                "key {key}: not searched: {} ops, more than {SEARCH_LIMIT}",
                ops.len()
            ));
        } else {
            details.push(format!("key {key}: not linearizable: {why}"));
        }
        details.extend(explain(key, ops));
    }
    if details.is_empty() {
        CheckResult::pass(
            NAME,
            format!(
                "{total} ops over {} keys linearizable ({searched} keys searched)",
                per_key.len()
            ),
        )
    } else {
        CheckResult::violation(NAME, "a key's history is not linearizable", details)
    }
}

/// Replays the acknowledged ops in the order `hint` gives, inserting unknown ops where a
/// read needs their write. `Ok` is a witness of linearizability.
fn replay(ops: &[KvOp], last: Option<i64>, hint: impl Fn(&KvOp) -> u64) -> Result<(), String> {
    let mut required: Vec<&KvOp> = ops.iter().filter(|o| o.required()).collect();
    required.sort_by_key(|o| (hint(o), o.invoke));
    let mut unknown: Vec<&KvOp> = ops.iter().filter(|o| !o.required()).collect();
    // The one that must take effect soonest first.
    unknown.sort_by_key(|o| (o.deadline, o.invoke));
    let mut used: HashSet<usize> = HashSet::new();
    let mut state: Option<i64> = None;
    let mut max_invoke = 0u64;
    // An unknown op that wrote `want`, placed after every op so far (invoked up to
    // `after`) and before an op that completed at `before`: invoked by then, and not past
    // its deadline when the ops placed before it were invoked.
    let take_unknown = |want: Option<i64>, before: u64, after: u64, used: &mut HashSet<usize>| {
        let found = unknown
            .iter()
            .enumerate()
            .find(|(i, u)| {
                !used.contains(i) && u.write == want && u.invoke <= before && after <= u.deadline
            })
            .map(|(i, u)| (i, u.invoke));
        if let Some((i, _)) = found {
            used.insert(i);
        }
        found.map(|(_, invoke)| invoke)
    };
    for op in required {
        let read = op.read.unwrap_or_default();
        if read != state {
            match take_unknown(read, op.complete, max_invoke, &mut used) {
                Some(invoke) => max_invoke = max_invoke.max(invoke),
                None => {
                    return Err(format!(
                        "{} read {} but the record held {}",
                        op.label,
                        show(read),
                        show(state)
                    ));
                }
            }
        }
        if op.complete < max_invoke {
            return Err(format!(
                "{} completed before an op ordered ahead of it was invoked",
                op.label
            ));
        }
        state = op.write;
        max_invoke = max_invoke.max(op.invoke);
    }
    if state != last && take_unknown(last, u64::MAX, max_invoke, &mut used).is_none() {
        return Err(format!(
            "the ops leave {} but the record holds {}",
            show(state),
            show(last)
        ));
    }
    Ok(())
}

enum Search {
    Found,
    Impossible,
    OutOfBudget,
}

/// Wing–Gong–Lowe: depth-first over which op takes effect next, memoising (done set,
/// value). No op takes effect after one invoked past its deadline. An acknowledged op
/// still pending when such an op would be taken blocks taking it; an unknown one can no
/// longer take effect, and taking the op drops it (marks it done, never having happened).
/// Unknown ops still pending at the end did not happen either. This finds the same
/// orders as dropping an unknown op as a move of its own, at any point, with less
/// branching: an op the rule drops could only have come after the op taken, which its
/// deadline forbids, and an unknown op left pending blocks no op, so keeping it loses
/// no order that dropping it earlier would allow.
fn search(ops: &[KvOp], last: Option<i64>, budget: u64) -> Search {
    let n = ops.len();
    let required_mask: u64 = ops
        .iter()
        .enumerate()
        .filter(|(_, o)| o.required())
        .fold(0, |m, (i, _)| m | 1 << i);
    let mut seen: HashSet<(u64, Option<i64>)> = HashSet::new();
    let mut steps = 0u64;
    // Explicit stack: (done mask, value).
    let mut stack = vec![(0u64, None::<i64>)];
    while let Some((mask, value)) = stack.pop() {
        if mask & required_mask == required_mask && value == last {
            return Search::Found;
        }
        if !seen.insert((mask, value)) {
            continue;
        }
        steps += 1;
        if steps > budget {
            return Search::OutOfBudget;
        }
        let pending = |j: usize| mask & (1 << j) == 0;
        // The earliest deadline of a pending acknowledged op: none invoked after it
        // takes effect first.
        let min_deadline = (0..n)
            .filter(|&j| pending(j) && ops[j].required())
            .map(|j| ops[j].deadline)
            .min()
            .unwrap_or(u64::MAX);
        for (i, op) in ops.iter().enumerate() {
            if !pending(i) || op.invoke > min_deadline.min(op.deadline) {
                continue;
            }
            if let Some(read) = op.read
                && read != value
            {
                continue;
            }
            let dropped = (0..n)
                .filter(|&j| pending(j) && !ops[j].required() && ops[j].deadline < op.invoke)
                .fold(0, |m, j| m | 1 << j);
            stack.push((mask | 1 << i | dropped, op.write));
        }
    }
    Search::Impossible
}

fn show(v: Option<i64>) -> String {
    v.map_or_else(|| "nothing".into(), |v| v.to_string())
}

/// Readable evidence: acknowledged ops that read the same value (each state is consumed
/// by exactly one successor, so one of their writes was lost).
fn explain(key: &str, ops: &[KvOp]) -> Vec<String> {
    let mut by_read: HashMap<i64, Vec<&str>> = HashMap::new();
    for op in ops {
        if let Some(Some(v)) = op.read {
            by_read.entry(v).or_default().push(&op.label);
        }
    }
    let mut lines: Vec<String> = by_read
        .into_iter()
        .filter(|(_, who)| who.len() > 1)
        .map(|(v, who)| {
            format!(
                "key {key}: value {v} read by {} ops ({}): all but one of their writes was lost",
                who.len(),
                who.join(", ")
            )
        })
        .collect();
    lines.sort();
    lines.truncate(3);
    lines
}

#[cfg(test)]
mod tests {
    use proptest::prelude::{Just, Strategy, any, prop, prop_oneof};

    use super::*;

    fn op(
        label: &str,
        invoke: u64,
        complete: u64,
        read: Option<Option<i64>>,
        write: Option<i64>,
    ) -> KvOp {
        KvOp {
            label: label.into(),
            invoke,
            complete,
            deadline: complete,
            enter: invoke,
            exit: complete,
            read,
            write,
        }
    }

    #[test]
    fn search_finds_concurrent_orders_and_refuses_impossible_ones() {
        // b overlaps a and reads a's write: fine in the order a, b.
        let ops = [
            op("a", 0, 10, Some(None), Some(1)),
            op("b", 5, 20, Some(Some(1)), Some(2)),
        ];
        assert!(matches!(search(&ops, Some(2), 1000), Search::Found));
        // Both read nothing and both wrote: one write was lost.
        let lost = [
            op("a", 0, 10, Some(None), Some(1)),
            op("b", 5, 20, Some(None), Some(2)),
        ];
        assert!(matches!(search(&lost, Some(2), 1000), Search::Impossible));
        // A read from the future: b completed before a was invoked.
        let future = [
            op("a", 30, 40, Some(None), Some(1)),
            op("b", 0, 10, Some(Some(1)), None),
        ];
        assert!(matches!(search(&future, None, 1000), Search::Impossible));
        assert!(replay(&future, None, |o| o.enter).is_err());
        // An unknown op may have happened (its write was read) or not.
        let unknown = [
            op("u", 0, u64::MAX, None, Some(7)),
            op("r", 5, 9, Some(Some(7)), None),
        ];
        assert!(matches!(search(&unknown, None, 1000), Search::Found));
        assert!(replay(&unknown, None, |o| o.enter).is_ok());
        assert!(matches!(search(&lost, Some(2), 1), Search::OutOfBudget));
    }

    /// An unknown op that may still have been under way at the data after `complete`
    /// (its caller stopped waiting, say): it may take effect at any time after `invoke`.
    fn late(label: &str, invoke: u64, complete: u64, write: Option<i64>) -> KvOp {
        KvOp {
            deadline: u64::MAX,
            ..op(label, invoke, complete, None, write)
        }
    }

    /// `u` ended unknown at 10 and `a`, invoked at 20, read nothing: if `u` took effect,
    /// it was after `a`. Only `r`, invoked later still, read `u`'s write.
    fn effect_seen_after_a_later_op(u: KvOp) -> [KvOp; 3] {
        [
            u,
            op("a", 20, 30, Some(None), Some(2)),
            op("r", 40, 50, Some(Some(1)), Some(3)),
        ]
    }

    #[test]
    fn an_unknown_op_takes_effect_before_it_ended_unless_it_may_be_under_way() {
        // Settled: whatever `u` did, it did by 10, before `a` was invoked. `a` read
        // nothing, so `u` had not taken effect then; `r` cannot read its write.
        let ops = effect_seen_after_a_later_op(op("u", 0, 10, None, Some(1)));
        assert!(matches!(search(&ops, Some(3), 1000), Search::Impossible));
        assert!(replay(&ops, Some(3), |o| o.enter).is_err());
        assert!(replay(&ops, Some(3), |o| o.exit).is_err());
        // Its caller stopped waiting at 10 but the op ran on, and took effect after `a`.
        let ops = effect_seen_after_a_later_op(late("u", 0, 10, Some(1)));
        assert!(matches!(search(&ops, Some(3), 1000), Search::Found));
        assert!(replay(&ops, Some(3), |o| o.enter).is_ok());
        // Settled and seen within its window: fine. So is leaving it out, or taking
        // effect last, before any op invoked after it ended.
        let within = [
            op("u", 0, 10, None, Some(1)),
            op("r", 5, 20, Some(Some(1)), Some(3)),
        ];
        assert!(matches!(search(&within, Some(3), 1000), Search::Found));
        assert!(replay(&within, Some(3), |o| o.enter).is_ok());
        let left_out = [
            op("u", 0, 10, None, Some(1)),
            op("a", 20, 30, Some(None), Some(2)),
        ];
        assert!(matches!(search(&left_out, Some(2), 1000), Search::Found));
        assert!(replay(&left_out, Some(2), |o| o.enter).is_ok());
        let last = [
            op("a", 0, 5, Some(None), Some(2)),
            op("u", 3, 10, None, Some(1)),
        ];
        assert!(matches!(search(&last, Some(1), 1000), Search::Found));
        assert!(replay(&last, Some(1), |o| o.enter).is_ok());
        // …but not last after an op invoked once it had ended.
        let too_late = [
            op("u", 0, 10, None, Some(1)),
            op("a", 20, 30, Some(None), Some(2)),
        ];
        assert!(matches!(
            search(&too_late, Some(1), 1000),
            Search::Impossible
        ));
        assert!(replay(&too_late, Some(1), |o| o.enter).is_err());
    }

    /// The same through [`check`], on a history as a run records it: an op that ended
    /// unknown is settled unless the data may still apply it.
    #[test]
    fn a_settled_unknown_op_seen_only_after_a_later_op_is_a_violation() {
        use crate::check::Verdict;
        use crate::check::hand::{history, op};
        let h = |settled: bool| {
            let mut h = history(vec![
                op(
                    1,
                    &["k0"],
                    OpInput::ReadWrite { write: Some(1) },
                    Phase::Unknown,
                    None,
                ),
                op(
                    2,
                    &["k0"],
                    OpInput::ReadWrite { write: Some(2) },
                    Phase::Ok,
                    Some(OpOutput::Read { value: None }),
                ),
                op(
                    3,
                    &["k0"],
                    OpInput::ReadWrite { write: Some(3) },
                    Phase::Ok,
                    Some(OpOutput::Read { value: Some(1) }),
                ),
            ]);
            h.ops[0].settled = settled;
            h
        };
        let records = BTreeMap::from([("k0".to_owned(), 3)]);
        let r = check(&h(true), &records, DEFAULT_BUDGET);
        assert_eq!(r.verdict, Verdict::Violation, "{r:?}");
        assert!(
            r.details[0].contains("no order of its 3 ops is linearizable"),
            "{:?}",
            r.details
        );
        let r = check(&h(false), &records, DEFAULT_BUDGET);
        assert_eq!(r.verdict, Verdict::Pass, "{r:?}");
    }

    /// The search as it was, with dropping a settled unknown op a move of its own at any
    /// point: the reference [`search`] must agree with.
    fn search_with_drop_moves(ops: &[KvOp], last: Option<i64>, budget: u64) -> Search {
        let n = ops.len();
        let required_mask: u64 = ops
            .iter()
            .enumerate()
            .filter(|(_, o)| o.required())
            .fold(0, |m, (i, _)| m | 1 << i);
        let mut seen: HashSet<(u64, Option<i64>)> = HashSet::new();
        let mut steps = 0u64;
        let mut stack = vec![(0u64, None::<i64>)];
        while let Some((mask, value)) = stack.pop() {
            if mask & required_mask == required_mask && value == last {
                return Search::Found;
            }
            if !seen.insert((mask, value)) {
                continue;
            }
            steps += 1;
            if steps > budget {
                return Search::OutOfBudget;
            }
            let min_deadline = (0..n)
                .filter(|&j| mask & (1 << j) == 0)
                .map(|j| ops[j].deadline)
                .min()
                .unwrap_or(u64::MAX);
            for (i, op) in ops.iter().enumerate() {
                if mask & (1 << i) != 0 {
                    continue;
                }
                if !op.required() && op.deadline != u64::MAX {
                    stack.push((mask | 1 << i, value));
                }
                if op.invoke > min_deadline {
                    continue;
                }
                if let Some(read) = op.read
                    && read != value
                {
                    continue;
                }
                stack.push((mask | 1 << i, op.write));
            }
        }
        Search::Impossible
    }

    /// How one generated op ends.
    #[derive(Clone, Copy, Debug)]
    enum End {
        Ok,
        /// Unknown and settled: bounded by its completion.
        Settled,
        /// Unknown and may still be under way after its completion.
        Late,
    }

    /// Ops on one key with random windows, each taking effect (an acknowledged one
    /// always, an unknown one or not) at a random point of its window — after it for a
    /// late one — and reading what the ops before that point left; then, half the time,
    /// one read or the final value changed to another value the ops wrote (or nothing).
    fn gen_history() -> impl Strategy<Value = (Vec<KvOp>, Option<i64>)> {
        let one = (
            0u64..60,
            0u64..30,
            0u64..100,
            prop_oneof![Just(End::Ok), Just(End::Settled), Just(End::Late)],
            any::<bool>(),
            prop::bool::weighted(0.2),
        );
        (
            prop::collection::vec(one, 1..9),
            any::<bool>(),
            any::<prop::sample::Index>(),
            0i64..10,
        )
            .prop_map(|(spec, mutate, victim, wrong)| {
                let mut ops = Vec::new();
                let mut effects = Vec::new();
                for (i, &(invoke, length, at, end, applied, delete)) in spec.iter().enumerate() {
                    let complete = invoke + length;
                    let write = (!delete).then_some(i as i64 + 1);
                    let (deadline, point) = match end {
                        End::Late => (u64::MAX, invoke + at),
                        _ => (complete, invoke + at % (length + 1)),
                    };
                    if matches!(end, End::Ok) || applied {
                        effects.push((point, i));
                    }
                    ops.push(KvOp {
                        deadline,
                        read: None,
                        ..op(&format!("o{i}"), invoke, complete, None, write)
                    });
                }
                // Ties broken by index: still an order each op's window allows.
                effects.sort();
                let mut state = None;
                for &(_, i) in &effects {
                    if matches!(spec[i].3, End::Ok) {
                        ops[i].read = Some(state);
                    }
                    state = ops[i].write;
                }
                let wrong = (wrong > 0).then_some(wrong);
                if mutate {
                    let i = victim.index(ops.len() + 1);
                    match ops.get_mut(i) {
                        Some(o) if o.read.is_some() => o.read = Some(wrong),
                        _ => state = wrong,
                    }
                }
                (ops, state)
            })
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig {
            cases: 2000,
            failure_persistence: None,
            ..proptest::prelude::ProptestConfig::default()
        })]

        /// Dropping a settled unknown op only when an op invoked past its deadline is
        /// taken finds exactly what dropping it as a move of its own found; and whatever
        /// the replays witness, the search finds.
        #[test]
        fn forced_drops_find_what_drop_moves_found((ops, last) in gen_history()) {
            let found = |s: Search| match s {
                Search::Found => Some(true),
                Search::Impossible => Some(false),
                Search::OutOfBudget => None,
            };
            let new = found(search(&ops, last, 1_000_000));
            let old = found(search_with_drop_moves(&ops, last, 1_000_000));
            proptest::prop_assert!(new.is_some() && old.is_some());
            proptest::prop_assert_eq!(new, old, "{:?}", ops);
            if replay(&ops, last, |o| o.enter).is_ok() || replay(&ops, last, |o| o.exit).is_ok() {
                proptest::prop_assert_eq!(new, Some(true), "{:?}", ops);
            }
        }
    }
}
