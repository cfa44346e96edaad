//! Bank conservation: the balances add up to the money the bank started with, and none is
//! negative.

use std::collections::BTreeMap;

use super::CheckResult;
use crate::history::{History, OpOutput, Phase};

/// Checks the final `balances`.
pub fn check(history: &History, balances: &BTreeMap<String, i64>, expected: i64) -> CheckResult {
    const NAME: &str = "bank";
    // i128: a garbled record reads as i64::MIN, and two of them overflow an i64 sum.
    let total: i128 = balances.values().map(|&b| i128::from(b)).sum();
    let expected = i128::from(expected);
    let applied = history
        .with_phase(Phase::Ok)
        .filter(|op| op.output == Some(OpOutput::Transferred { applied: true }))
        .count();
    let mut details = Vec::new();
    let garbled: Vec<&str> = balances
        .iter()
        .filter(|(_, b)| **b == i64::MIN)
        .map(|(a, _)| a.as_str())
        .collect();
    if !garbled.is_empty() {
        details.push(format!(
            "{} garbled account records (not an 8-byte balance; read as i64::MIN): {}; the total cannot be checked",
            garbled.len(),
            garbled.join(", ")
        ));
    } else if total != expected {
        details.push(format!(
            "total balance {total}, expected {expected}: {} money {}",
            (total - expected).abs(),
            if total > expected {
                "created"
            } else {
                "destroyed"
            }
        ));
    }
    for (account, balance) in balances {
        if *balance < 0 && *balance != i64::MIN {
            details.push(format!("account {account} is negative: {balance}"));
        }
    }
    if details.is_empty() {
        CheckResult::pass(
            NAME,
            format!(
                "{applied} transfers applied, total {total} conserved over {} accounts",
                balances.len()
            ),
        )
    } else {
        CheckResult::violation(
            NAME,
            format!("money not conserved after {applied} transfers"),
            details,
        )
    }
}
