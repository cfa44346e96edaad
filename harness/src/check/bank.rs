//! Bank: the balances add up to the money the bank started with, none is negative, and
//! each account holds what the history says: its opening balance plus the net of every
//! acknowledged applied transfer, give or take the transfers of unknown outcome (each may
//! have moved its money, or not, or only debited its account outside a transaction).
//! Failed transfers and acknowledged ones that found too little money moved nothing.

use std::collections::{BTreeMap, BTreeSet};

use super::CheckResult;
use crate::history::{History, OpInput, OpOutput, Phase};
use crate::workload::bank::INITIAL_BALANCE;

/// What the history allows one account to hold at the end.
#[derive(Default)]
struct Bounds {
    /// Opening balance plus the net of the acknowledged applied transfers.
    net: i128,
    /// What unknown transfers out of it may have taken.
    out: i128,
    /// What unknown transfers into it may have brought.
    into: i128,
    /// Acknowledged transfers on it.
    acknowledged: usize,
}

/// Checks the final `balances` (every account opened with
/// [`INITIAL_BALANCE`]) against `expected`, their total, and the history.
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
    details.extend(against_history(history, balances));
    if details.is_empty() {
        CheckResult::pass(
            NAME,
            format!(
                "{applied} transfers applied, total {total} conserved over {} accounts, each as the history allows",
                balances.len()
            ),
        )
    } else {
        CheckResult::violation(
            NAME,
            format!("balances wrong after {applied} applied transfers"),
            details,
        )
    }
}

/// The accounts whose final balance the history does not allow, one line each; an
/// account the history names that is missing from `balances` too. A garbled balance is
/// reported by the caller.
fn against_history(history: &History, balances: &BTreeMap<String, i64>) -> Vec<String> {
    let mut bounds: BTreeMap<&str, Bounds> = BTreeMap::new();
    for op in &history.ops {
        let OpInput::Transfer { from, to, amount } = &op.input else {
            continue;
        };
        let amount = i128::from(*amount);
        match op.phase {
            Phase::Ok => {
                bounds.entry(from).or_default().acknowledged += 1;
                bounds.entry(to).or_default().acknowledged += 1;
                if op.output == Some(OpOutput::Transferred { applied: true }) {
                    bounds.entry(from).or_default().net -= amount;
                    bounds.entry(to).or_default().net += amount;
                }
            }
            Phase::Unknown => {
                bounds.entry(from).or_default().out += amount;
                bounds.entry(to).or_default().into += amount;
            }
            Phase::Fail | Phase::Invoke => {}
        }
    }
    let accounts: BTreeSet<&str> = balances
        .keys()
        .map(String::as_str)
        .chain(bounds.keys().copied())
        .collect();
    let mut details = Vec::new();
    for account in accounts {
        let b = bounds.remove(account).unwrap_or_default();
        let low = i128::from(INITIAL_BALANCE) + b.net - b.out;
        let high = i128::from(INITIAL_BALANCE) + b.net + b.into;
        let expected = if low == high {
            format!("expected {low}")
        } else {
            format!("expected {low}..={high} with the transfers of unknown outcome")
        };
        match balances.get(account) {
            None if b.acknowledged > 0 => details.push(format!(
                "account {account} is missing from the final state after {} acknowledged transfers on it ({expected})",
                b.acknowledged
            )),
            None => {}
            Some(&i64::MIN) => {}
            Some(&balance) if !(low..=high).contains(&i128::from(balance)) => {
                details.push(format!(
                    "account {account} holds {balance}, {expected} from {} acknowledged transfers on it",
                    b.acknowledged
                ));
            }
            Some(_) => {}
        }
    }
    details
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::Verdict;
    use crate::check::hand::{Op, history, op};
    use crate::history::OpInput;

    fn transfer(id: u64, from: &str, to: &str, amount: i64, phase: Phase, applied: bool) -> Op {
        op(
            id,
            &[from, to],
            OpInput::Transfer {
                from: from.into(),
                to: to.into(),
                amount,
            },
            phase,
            (phase == Phase::Ok).then_some(OpOutput::Transferred { applied }),
        )
    }

    fn balances(a0: i64, a1: i64) -> BTreeMap<String, i64> {
        BTreeMap::from([("a0".to_owned(), a0), ("a1".to_owned(), a1)])
    }

    #[test]
    fn acknowledged_transfers_that_left_no_trace_are_a_violation() {
        // 50 acknowledged transfers of 1 from a0 to a1, and the balances never moved.
        let ops = (0..50)
            .map(|i| transfer(i, "a0", "a1", 1, Phase::Ok, true))
            .collect();
        let h = history(ops);
        let r = check(&h, &balances(100, 100), 200);
        assert_eq!(r.verdict, Verdict::Violation, "{r:?}");
        assert!(
            r.details
                .iter()
                .any(|d| d.contains("account a0") && d.contains("expected 50")),
            "{:?}",
            r.details
        );
        assert_eq!(check(&h, &balances(50, 150), 200).verdict, Verdict::Pass);
    }

    #[test]
    fn unknown_transfers_widen_the_bounds_failed_ones_do_not() {
        let ops = || {
            vec![
                transfer(1, "a0", "a1", 10, Phase::Ok, true),
                transfer(2, "a1", "a0", 30, Phase::Unknown, false),
                transfer(3, "a0", "a1", 5, Phase::Fail, false),
                transfer(4, "a0", "a1", 500, Phase::Ok, false),
            ]
        };
        // The unknown transfer applied, or not: both pass.
        for (a0, a1) in [(90, 110), (120, 80)] {
            let r = check(&history(ops()), &balances(a0, a1), 200);
            assert_eq!(r.verdict, Verdict::Pass, "{a0}/{a1}: {r:?}");
        }
        // The failed transfer applied: a violation.
        let r = check(&history(ops()), &balances(85, 115), 200);
        assert_eq!(r.verdict, Verdict::Violation, "{r:?}");
        // Beyond what the unknown one allows.
        let r = check(&history(ops()), &balances(130, 70), 200);
        assert_eq!(r.verdict, Verdict::Violation, "{r:?}");
    }

    #[test]
    fn an_account_missing_from_the_final_state_is_a_violation() {
        let h = history(vec![transfer(1, "a0", "a2", 10, Phase::Ok, true)]);
        let r = check(&h, &balances(90, 100), 200);
        assert_eq!(r.verdict, Verdict::Violation, "{r:?}");
        assert!(
            r.details.iter().any(|d| d.contains("a2")),
            "{:?}",
            r.details
        );
    }
}
