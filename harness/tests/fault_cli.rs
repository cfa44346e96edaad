//! Issue 4's fault runs through the CLI: `turnstile check --strategy S --procs 4
//! --threads 4 --nemesis kill:50` for `file-lock` and `retry`, on every workload that has a
//! transaction to survive. Each must finish, inject kills, and pass every checker — not
//! merely avoid a violation: an inconclusive run (too few ops acknowledged after the
//! kills, a worker failing on its own) fails the test too.

use std::process::Command;

use serde_json::Value;

const EXE: &str = env!("CARGO_BIN_EXE_turnstile");

fn survives_kills(strategy: &str, workload: &str, checker: &str) {
    let args = [
        "check",
        "--strategy",
        strategy,
        "--workload",
        workload,
        "--procs",
        "4",
        "--threads",
        "4",
        "--nemesis",
        "kill:50",
        "--json",
    ];
    let out = Command::new(EXE)
        .args(args)
        .output()
        .expect("turnstile runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let shown = format!(
        "{args:?}:\n{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(0), "{shown}");
    let report: Value = serde_json::from_str(&stdout).expect("--json prints one report");
    assert_eq!(report["verdict"], "pass", "{shown}");
    let checks = report["checks"].as_array().expect("checks");
    for c in checks {
        assert_eq!(c["verdict"], "pass", "{shown}");
    }
    let ran: Vec<&str> = checks
        .iter()
        .filter_map(|c| c["checker"].as_str())
        .collect();
    for want in [checker, "integrity"] {
        assert!(ran.contains(&want), "{want} did not run: {shown}");
    }
    if strategy == "file-lock" {
        // A lock promises exclusion; retry does not, so it is not held to it.
        assert!(ran.contains(&"overlap"), "{shown}");
    }
    let kills = report["faults"].as_array().map_or(0, Vec::len);
    assert!(kills > 0, "no worker was killed: {shown}");
    assert!(
        report["acknowledged"].as_u64().unwrap_or(0) > 0,
        "nothing acknowledged: {shown}"
    );
}

#[test]
fn file_lock_counter_survives_kills() {
    survives_kills("file-lock", "counter", "lost_update");
}

#[test]
fn file_lock_bank_survives_kills() {
    survives_kills("file-lock", "bank", "bank");
}

#[test]
fn file_lock_notify_once_survives_kills() {
    survives_kills("file-lock", "notify_once", "exactly_once");
}

#[test]
fn file_lock_kv_survives_kills() {
    survives_kills("file-lock", "kv", "linearizable");
}

#[test]
fn retry_counter_survives_kills() {
    survives_kills("retry", "counter", "lost_update");
}

#[test]
fn retry_bank_survives_kills() {
    survives_kills("retry", "bank", "bank");
}

#[test]
fn retry_notify_once_survives_kills() {
    survives_kills("retry", "notify_once", "exactly_once");
}

#[test]
fn retry_kv_survives_kills() {
    survives_kills("retry", "kv", "linearizable");
}
