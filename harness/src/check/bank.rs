//! Bank conservation: the balances add up to the money the bank started with, and none is
//! negative.

use std::collections::BTreeMap;

use super::CheckResult;
use crate::history::{History, OpOutput, Phase};

/// Checks the final `balances`.
pub fn check(history: &History, balances: &BTreeMap<String, i64>, expected: i64) -> CheckResult {
    const NAME: &str = "bank";
    let total: i64 = balances.values().sum();
    let applied = history
        .with_phase(Phase::Ok)
        .filter(|op| op.output == Some(OpOutput::Transferred { applied: true }))
        .count();
    let mut details = Vec::new();
    if total != expected {
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
        if *balance < 0 {
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
