//! Issue 6: `optimistic` in the harness. Its ops work on versioned records, so the harness
//! runs the workloads on versioned records (`turnstile_harness::data::VersionedData`)
//! through the same run path as every other strategy, judged by the same checkers: no
//! lost update, money conserved, `kv` linearizable — and no `overlap` checker, since
//! optimistic sections overlap by design and conflicts are refused at commit. `mutex` over
//! the same records is held to `overlap` too. Its conformance suites (threads, processes,
//! kills; SQLite, PostgreSQL, MySQL) are in `conformance_optimistic.rs`.
#![cfg(feature = "optimistic")]

use std::time::Duration;

use turnstile_harness::check::Verdict;
use turnstile_harness::{RunConfig, RunReport, Workload, registry, report, run};

fn passes(config: &RunConfig) -> RunReport {
    let report = run(config, &registry()).expect("the run produces a verdict");
    let text = report::text(&report);
    assert_eq!(report.verdict, Verdict::Pass, "{text}");
    assert!(report.acknowledged >= config.ops / 2, "{text}");
    report
}

/// Many threads on few records with a pause between read and write: conflicts galore.
fn contended(spec: &str, workload: Workload, keys: usize) -> RunConfig {
    RunConfig::new(spec, workload)
        .threads(8)
        .ops(400)
        .keys(keys)
        .think(Duration::from_micros(200))
}

#[test]
fn optimistic_counter_loses_no_increment() {
    let report = passes(&contended("optimistic", Workload::Counter, 1));
    let text = report::text(&report);
    let lost = report.check("lost_update").expect("lost_update ran");
    assert_eq!(lost.verdict, Verdict::Pass, "{text}");
    assert!(
        report.check("overlap").is_none(),
        "optimistic overlaps by design:\n{text}"
    );
    assert!(
        report.data.starts_with("versioned records in sqlite"),
        "{text}"
    );
}

#[test]
fn optimistic_bank_conserves_money() {
    let report = passes(&contended("optimistic", Workload::Bank, 3));
    let text = report::text(&report);
    let bank = report.check("bank").expect("bank ran");
    assert_eq!(bank.verdict, Verdict::Pass, "{text}");
    assert!(report.check("overlap").is_none(), "{text}");
}

#[test]
fn mutex_over_versioned_records_is_checked_for_overlap_too() {
    let report = passes(&contended("mutex", Workload::Counter, 2).versioned(true));
    let text = report::text(&report);
    assert!(report.data.starts_with("versioned records"), "{text}");
    assert!(report.transactional, "writes apply at commit:\n{text}");
    let overlap = report
        .check("overlap")
        .expect("a lock is held to exclusion");
    assert_eq!(overlap.verdict, Verdict::Pass, "{text}");
}

#[test]
fn versioned_runs_refuse_what_they_cannot_do() {
    for config in [
        RunConfig::new("no-such-strategy", Workload::Counter),
        RunConfig::new("optimistic:arg", Workload::Counter),
        RunConfig::new("optimistic", Workload::Counter).threads(0),
        RunConfig::new("optimistic", Workload::Counter).think(Duration::from_secs(5)),
        // Strategies over SQLite connections have no versioned form.
        RunConfig::new("busy-timeout", Workload::Counter).versioned(true),
        // Nor does optimistic run on plain tables.
        RunConfig::new("optimistic", Workload::Counter).versioned(false),
    ] {
        match run(&config, &registry()) {
            Err(e) => assert_eq!(e.exit_code(), 2, "{e}"),
            Ok(r) => panic!("ran:\n{}", report::text(&r)),
        }
    }
}

/// `turnstile check --strategy optimistic` reaches the versioned workloads, and is caught
/// where a side effect lies outside its records.
#[test]
fn optimistic_through_the_cli() {
    let check = |workload: &str, extra: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_turnstile"))
            .args([
                "check",
                "--strategy",
                "optimistic",
                "--workload",
                workload,
                "--threads",
                "8",
                "--ops",
                "400",
            ])
            .args(extra)
            .output()
            .expect("turnstile runs");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code(), text)
    };
    let think = ["--keys", "2", "--think-us", "200"];
    let (code, text) = check("counter", &think);
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains("none lost") && !text.contains("overlap"),
        "{text}"
    );
    let (code, text) = check("bank", &think);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("conserved"), "{text}");
    let (code, text) = check("kv", &think);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("linearizable"), "{text}");
    // Reruns repeat the send, and nothing stops two ops sending at once.
    let (code, text) = check("notify_once", &["--rendezvous-us", "3000", "--keys", "1"]);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("exactly_once  VIOLATION"), "{text}");
}
