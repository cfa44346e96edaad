//! Lost update (counter): per key, `acknowledged ≤ final ≤ acknowledged + unknown`, and no
//! two acknowledged increments wrote the same value (each read the other's predecessor).
//! A key with acknowledged increments that is missing from the final state lost them all.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::{CheckResult, rel};
use crate::history::{History, OpOutput, Phase};

/// Checks the counter's final `values` against the history.
pub fn check(history: &History, values: &BTreeMap<String, i64>) -> CheckResult {
    const NAME: &str = "lost_update";
    let origin = history.origin();
    let mut details = Vec::new();
    let mut lost_total = 0i64;
    let mut exceeded = 0usize;
    let mut acked_total = 0usize;
    let mut garbled = 0usize;
    // Every key the final state or the history names: a counter missing at the end is
    // checked too.
    let keys: BTreeSet<&String> = values
        .keys()
        .chain(history.ops.iter().filter_map(|op| op.keys.first()))
        .collect();
    for &key in &keys {
        let ops: Vec<_> = history
            .ops
            .iter()
            .filter(|op| op.keys.first() == Some(key))
            .collect();
        let acked: Vec<_> = ops.iter().filter(|op| op.phase == Phase::Ok).collect();
        let unknown = ops.iter().filter(|op| op.phase == Phase::Unknown).count() as i64;
        acked_total += acked.len();
        let n = acked.len() as i64;
        let Some(&last) = values.get(key) else {
            if n > 0 {
                lost_total += n;
                details.push(format!(
                    "key {key}: {n} increments acknowledged, but the key is missing from the final state: {n} lost increments"
                ));
            }
            continue;
        };
        if last == i64::MIN {
            // A record that is not eight bytes: no count to compare (and `n - last`
            // would overflow).
            garbled += 1;
            details.push(format!(
                "key {key}: final record garbled (not an 8-byte counter; reads as i64::MIN) after {n} acknowledged increments"
            ));
            continue;
        }
        if last < n {
            lost_total += n - last;
            details.push(format!(
                "key {key}: {n} increments acknowledged, final value {last}: {} lost increments",
                n - last
            ));
        } else if last > n + unknown {
            exceeded += 1;
            details.push(format!(
                "key {key}: final value {last} exceeds {n} acknowledged + {unknown} unknown increments"
            ));
        }
        let mut by_value: HashMap<i64, Vec<_>> = HashMap::new();
        let mut above = Vec::new();
        for op in &acked {
            if let Some(OpOutput::Wrote { value }) = op.output {
                by_value.entry(value).or_default().push(*op);
                if value > last {
                    above.push((value, op.label()));
                }
            }
        }
        if let Some((value, label)) = above.iter().max() {
            details.push(format!(
                "key {key}: {} acknowledged values above the final {last}, up to {value} by {label}: later writes overwrote them with older values",
                above.len()
            ));
        }
        let mut dups: Vec<_> = by_value.into_iter().filter(|(_, v)| v.len() > 1).collect();
        dups.sort_by_key(|(v, _)| *v);
        for (value, ops) in dups.iter().take(5) {
            let who: Vec<String> = ops
                .iter()
                .map(|op| {
                    format!(
                        "{} in section [{} .. {}]",
                        op.label(),
                        op.enter.map_or("?".into(), |t| rel(t, origin)),
                        op.exit.map_or("?".into(), |t| rel(t, origin))
                    )
                })
                .collect();
            details.push(format!(
                "key {key}: value {value} written by {} ops: {}",
                ops.len(),
                who.join(", ")
            ));
        }
        if dups.len() > 5 {
            details.push(format!(
                "key {key}: {} more values written twice or more",
                dups.len() - 5
            ));
        }
    }
    if details.is_empty() {
        CheckResult::pass(
            NAME,
            format!(
                "{acked_total} acknowledged increments over {} keys, none lost",
                keys.len()
            ),
        )
    } else {
        let garbled = if garbled > 0 {
            format!("{garbled} counters garbled; ")
        } else {
            String::new()
        };
        // A count above the ops' is no lost increment: an op that failed and still
        // committed its increment (a failed op not rolled back alone, say), or one
        // applied twice (an op rerun after it committed).
        let summary = if lost_total == 0 && exceeded > 0 {
            format!(
                "{garbled}{exceeded} counters above their acknowledged and unknown increments: failed increments took effect, or some took effect twice"
            )
        } else {
            format!(
                "{garbled}lost increments: {lost_total} of {acked_total} acknowledged increments lost"
            )
        };
        CheckResult::violation(NAME, summary, details)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::Verdict;
    use crate::check::hand::{history, op};
    use crate::history::OpInput;

    #[test]
    fn a_key_with_acknowledged_increments_missing_from_the_final_state_is_a_violation() {
        let h = history(vec![
            op(
                1,
                &["c0"],
                OpInput::Increment,
                Phase::Ok,
                Some(OpOutput::Wrote { value: 1 }),
            ),
            op(
                2,
                &["c1"],
                OpInput::Increment,
                Phase::Ok,
                Some(OpOutput::Wrote { value: 1 }),
            ),
        ]);
        let r = check(&h, &BTreeMap::from([("c1".to_owned(), 1)]));
        assert_eq!(r.verdict, Verdict::Violation, "{r:?}");
        assert!(
            r.details
                .iter()
                .any(|d| d.contains("key c0") && d.contains("missing")),
            "{:?}",
            r.details
        );
        assert!(r.summary.contains("1 of 2"), "{}", r.summary);
        let r = check(
            &h,
            &BTreeMap::from([("c0".to_owned(), 1), ("c1".to_owned(), 1)]),
        );
        assert_eq!(r.verdict, Verdict::Pass, "{r:?}");
    }
}
