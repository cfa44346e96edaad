//! Lost update (counter): per key, `acknowledged ≤ final ≤ acknowledged + unknown`, and no
//! two acknowledged increments wrote the same value (each read the other's predecessor).

use std::collections::{BTreeMap, HashMap};

use super::{CheckResult, rel};
use crate::history::{History, OpOutput, Phase};

/// Checks the counter's final `values` against the history.
pub fn check(history: &History, values: &BTreeMap<String, i64>) -> CheckResult {
    const NAME: &str = "lost_update";
    let origin = history.origin();
    let mut details = Vec::new();
    let mut lost_total = 0i64;
    let mut acked_total = 0usize;
    let mut garbled = 0usize;
    for (key, &last) in values {
        let ops: Vec<_> = history
            .ops
            .iter()
            .filter(|op| op.keys.first() == Some(key))
            .collect();
        let acked: Vec<_> = ops.iter().filter(|op| op.phase == Phase::Ok).collect();
        let unknown = ops.iter().filter(|op| op.phase == Phase::Unknown).count() as i64;
        acked_total += acked.len();
        let n = acked.len() as i64;
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
                values.len()
            ),
        )
    } else {
        let garbled = if garbled > 0 {
            format!("{garbled} counters garbled; ")
        } else {
            String::new()
        };
        CheckResult::violation(
            NAME,
            format!(
                "{garbled}lost increments: {lost_total} of {acked_total} acknowledged increments lost"
            ),
            details,
        )
    }
}
