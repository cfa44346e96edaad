//! Runs that end early: one cut by its time limit is checked on the ops that ran before
//! the cut (a violation there is the verdict, exit 1; none leaves it inconclusive, exit 3),
//! and `--keep` keeps the files of a run that ends without a verdict as it does those of a
//! run that did not pass.

#[path = "support/cli.rs"]
mod cli_support;

use std::collections::HashMap;
use std::path::Path;

use cli_support::check;
use serde_json::Value;
use turnstile_harness::{RunConfig, RunError, Workload, registry, run};

/// `(invokes, ends)` over the history files in `dir`.
fn ops_in(dir: &Path) -> (usize, usize) {
    let mut phases: HashMap<String, usize> = HashMap::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if !path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("history-")
        {
            continue;
        }
        for line in std::fs::read_to_string(&path).unwrap().lines() {
            let event: Value = serde_json::from_str(line).unwrap();
            *phases
                .entry(event["phase"].as_str().unwrap().to_owned())
                .or_default() += 1;
        }
    }
    let invokes = phases.remove("invoke").unwrap_or(0);
    (invokes, phases.values().sum())
}

/// Across worker processes, the `unserialized` control loses updates within a second: a
/// run cut then by its time limit is a violation, whose report says it was cut. Before,
/// the cut made it inconclusive whatever the ops that ran showed.
#[test]
fn a_run_cut_by_its_time_limit_is_a_violation_when_what_ran_is_one() {
    let (code, out, err) = check(&[
        "--strategy",
        "unserialized",
        "--workload",
        "counter",
        "--procs",
        "2",
        "--threads",
        "4",
        "--ops",
        "10000000",
        "--time-limit-s",
        "1",
        "--json",
    ]);
    assert_eq!(code, 1, "{out}{err}");
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["verdict"], "violation", "{report}");
    let checks = report["checks"].as_array().unwrap();
    let verdict_of = |name: &str| {
        checks
            .iter()
            .find(|c| c["checker"] == name)
            .map(|c| c["verdict"].as_str().unwrap().to_owned())
    };
    assert_eq!(verdict_of("lost_update").as_deref(), Some("violation"));
    // The first line says the history is partial.
    assert_eq!(checks[0]["checker"], "time_limit", "{report}");
    assert_eq!(checks[0]["verdict"], "inconclusive", "{report}");
    let summary = checks[0]["summary"].as_str().unwrap();
    assert!(
        summary.contains("cut by its time limit of 1s") && summary.contains("partial"),
        "{summary}"
    );
    // The workers were asked to stop, not killed: every op that started has its end.
    assert_eq!(report["unknown"], 0, "{report}");

    // In this process's threads too: two ops of a 1 s race window and a 1 s pause meet
    // (one increment lost), then no op starts for over the 1 s limit.
    let (code, out, err) = check(&[
        "--strategy",
        "racy-version:1000000",
        "--workload",
        "counter",
        "--threads",
        "2",
        "--keys",
        "1",
        "--ops",
        "20",
        "--think-us",
        "1000000",
        "--time-limit-s",
        "1",
    ]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("verdict: VIOLATION"), "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("time_limit") && l.contains("cut by its time limit of 1s")),
        "{out}"
    );
}

/// Strategies that serialize, cut by their time limit over each workload (worker
/// processes, with a nemesis or without): what ran before the cut shows no violation, and
/// the run stays inconclusive — no op left half done, nor one in flight counted as done.
#[test]
fn a_correct_strategy_cut_by_its_time_limit_stays_inconclusive() {
    for (strategy, workload, nemesis) in [
        ("busy-timeout", "counter", None),
        ("file-lock", "bank", None),
        ("file-lock", "kv", Some("stop:200")),
        ("busy-timeout", "notify_once", Some("kill:100")),
        ("file-lock", "file_store", None),
    ] {
        let mut args = vec![
            "--strategy",
            strategy,
            "--workload",
            workload,
            "--procs",
            "3",
            "--threads",
            "2",
            "--ops",
            "10000000",
            "--time-limit-s",
            "1",
        ];
        if let Some(n) = nemesis {
            args.extend(["--nemesis", n]);
        }
        let (code, out, err) = check(&args);
        assert_eq!(code, 3, "{strategy} {workload} {nemesis:?}: {out}{err}");
        assert!(
            err.contains("time limit of 1s") && err.contains("show no violation"),
            "{err}"
        );
    }
}

/// `--keep` keeps what a run that ends without a verdict wrote: here the time limit cuts a
/// run across processes that passes so far, and one in this process's threads. Before,
/// only a run with a verdict other than pass kept anything, and these files were removed
/// with the run.
#[test]
fn keep_saves_the_files_of_a_run_without_a_verdict() {
    let dir = tempfile::tempdir().unwrap();
    let keep = dir.path().join("kept");
    let keep_arg = keep.to_str().unwrap();
    let (code, out, err) = check(&[
        "--strategy",
        "busy-timeout",
        "--workload",
        "counter",
        "--procs",
        "2",
        "--threads",
        "2",
        "--ops",
        "10000000",
        "--time-limit-s",
        "1",
        "--keep",
        keep_arg,
        "--json",
    ]);
    assert_eq!(code, 3, "{out}{err}");
    let said: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(said["verdict"], "no-verdict", "{said}");
    assert_eq!(said["error"]["kind"], "timed-out", "{said}");
    assert_eq!(said["kept"], keep_arg, "{said}");
    let message = said["error"]["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("history and database kept in {keep_arg}")),
        "{message}"
    );
    assert!(err.contains(message), "{err}");
    for file in ["history-0.jsonl", "history-1.jsonl", "run.db"] {
        assert!(keep.join(file).is_file(), "{file} not kept: {err}");
    }
    let (invokes, ends) = ops_in(&keep);
    assert!(invokes > 0, "an empty history kept");
    assert_eq!(invokes, ends, "the workers stopped with ops in flight");

    // One process: the threads stop before their next op; what ran is kept.
    let keep = dir.path().join("kept-threads");
    let (code, out, err) = check(&[
        "--strategy",
        "racy-version:1000000",
        "--workload",
        "counter",
        "--threads",
        "1",
        "--ops",
        "10",
        "--think-us",
        "1000000",
        "--time-limit-s",
        "1",
        "--keep",
        keep.to_str().unwrap(),
    ]);
    assert_eq!(code, 3, "{out}{err}");
    assert!(
        err.contains(&format!("history and database kept in {}", keep.display())),
        "{err}"
    );
    assert!(keep.join("run.db").is_file(), "{err}");
    assert_eq!(ops_in(&keep), (1, 1));

    // Bad usage runs nothing and keeps nothing.
    let keep = dir.path().join("kept-usage");
    let (code, _, err) = check(&[
        "--strategy",
        "no-such",
        "--workload",
        "counter",
        "--keep",
        keep.to_str().unwrap(),
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(!keep.exists() && !err.contains("kept in"), "{err}");

    // Nor does a run whose strategy's server is out of reach: no op ran, and a directory
    // holding only the database it set up would refuse the next run's --keep.
    let keep = dir.path().join("kept-unreachable");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (code, _, err) = check(&[
        "--strategy",
        &format!("redis://127.0.0.1:{port}/0"),
        "--workload",
        "counter",
        "--keep",
        keep.to_str().unwrap(),
    ]);
    assert_eq!(code, 3, "{err}");
    assert!(!keep.exists() && !err.contains("kept in"), "{err}");
}

/// Through the library: a run whose worker process fails keeps what it wrote (here only
/// the workers' stderr: `false` runs nothing) and says where in its error.
#[test]
fn a_run_whose_worker_failed_keeps_its_files() {
    let dir = tempfile::tempdir().unwrap();
    let keep = dir.path().join("kept");
    let Some(exe) = ["/bin/false", "/usr/bin/false"]
        .into_iter()
        .find(|p| Path::new(p).exists())
    else {
        eprintln!("no `false` here: skipped");
        return;
    };
    let config = RunConfig::new("busy-timeout", Workload::Counter)
        .procs(2)
        .ops(10)
        .worker_exe(exe)
        .keep(&keep);
    let failure = run(&config, &registry()).expect_err("the workers fail");
    assert!(matches!(failure.error, RunError::Worker(_)), "{failure}");
    assert_eq!(failure.exit_code(), 3);
    assert_eq!(failure.kept.as_deref(), Some(keep.as_path()));
    assert!(
        failure.to_string().ends_with(&format!(
            "; history and database kept in {}",
            keep.display()
        )),
        "{failure}"
    );
    assert!(keep.join("worker-0.err").is_file());
}

/// A worker that does not stop within the grace after the cut — here blocked on a Redis
/// lease that a killed holder left for 20 s — is killed; ops in a transaction leave what
/// the kill nemesis leaves, so the ops that ran are still checked, and a note names the
/// workers that were killed (their ops under way are of unknown outcome).
#[test]
fn workers_killed_at_the_end_of_the_grace_are_named() {
    let spec = turnstile_harness::conformance::with_query(
        &turnstile_harness::conformance::redis_url(),
        "ttl_ms=20000",
    );
    let (code, out, err) = check(&[
        "--strategy",
        &spec,
        "--workload",
        "counter",
        "--procs",
        "3",
        "--threads",
        "2",
        "--ops",
        "100000",
        "--nemesis",
        "kill:300",
        "--time-limit-s",
        "2",
    ]);
    assert_eq!(code, 3, "{out}{err}");
    assert!(
        err.lines()
            .any(|l| l.contains("did not stop as asked within 5s of the cut")
                && l.contains("killed: the ops under way then are of unknown outcome")),
        "{err}"
    );
}
