//! The CLI's exit codes and outputs: usage errors, unreachable backends, `--json`,
//! `--keep`, and the kill nemesis against the `busy-timeout` baseline.

#[path = "support/cli.rs"]
mod cli_support;

use cli_support::{CHECK_ENV, check, check_env};

#[test]
fn bad_usage_exits_2() {
    for args in [
        &["--strategy", "no-such-strategy", "--workload", "counter"][..],
        // A lock URL with no host: bad usage, not a server out of reach.
        &["--strategy", "postgres://", "--workload", "counter"],
        &[
            "--strategy",
            "mutex",
            "--workload",
            "counter",
            "--time-limit-s",
            "0",
        ],
        &[
            "--strategy",
            "mutex",
            "--workload",
            "counter",
            "--time-limit-s",
            "9999999",
        ],
        &["--strategy", "mutex", "--workload", "no-such-workload"],
        &[
            "--strategy",
            "mutex",
            "--workload",
            "counter",
            "--threads",
            "0",
        ],
        &[
            "--strategy",
            "mutex",
            "--workload",
            "counter",
            "--nemesis",
            "kill:0",
        ],
        &[
            "--strategy",
            "mutex",
            "--workload",
            "file_store",
            "--nemesis",
            "kill:50",
        ],
        &["--strategy", "", "--workload", "counter"],
        &["--strategy", "mutex:arg", "--workload", "counter"],
        &[
            "--strategy",
            "mutex",
            "--workload",
            "counter",
            "--timeout-ms",
            "0",
        ],
        // A race window past 1 s would only make the run crawl.
        &[
            "--strategy",
            "racy-version:1000001",
            "--workload",
            "counter",
        ],
        // A URL the driver refuses without a server: configuration, not an outage.
        &[
            "--strategy",
            "mutex",
            "--workload",
            "counter",
            "--data",
            "postgres://",
        ],
        &[
            "--strategy",
            "mutex",
            "--workload",
            "counter",
            "--data",
            "postgres://u@127.0.0.1:1/db?hostaddr=127.0.0.1,127.0.0.2",
        ],
    ] {
        let (code, out, err) = check(args);
        assert_eq!(code, 2, "{args:?}: {out}{err}");
        assert!(!err.is_empty(), "{args:?}: says why");
    }
}

#[test]
fn an_existing_database_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("old.db");
    std::fs::write(&db, b"").unwrap();
    let (code, out, err) = check(&[
        "--strategy",
        "mutex",
        "--workload",
        "counter",
        "--db",
        db.to_str().unwrap(),
    ]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.contains("already exists"), "{err}");
}

/// A `--db` in a directory that is not there is a typo, bad usage before anything runs,
/// as `--svg` and `--keep` are.
#[test]
fn database_in_a_missing_directory_is_bad_usage() {
    let dir = tempfile::tempdir().unwrap();
    // `check` with `--db` in `missing`, a directory that does not exist: its stderr.
    let refused = |missing: &str| {
        let db = dir.path().join(missing).join("x.db");
        let args = ["--strategy", "mutex", "--workload", "counter", "--db"];
        let (code, out, err) = check(&[&args[..], &[db.to_str().unwrap()]].concat());
        assert_eq!(code, 2, "{out}{err}");
        err
    };
    let err = refused("missing-dir");
    assert!(err.contains("--db") && err.contains("missing-dir"), "{err}");

    // A path holding an escape sequence and a carriage return is shown, not obeyed.
    let err = refused("red\u{1b}[31mdir\r");
    assert!(!err.contains(['\u{1b}', '\r']), "{err:?}");
    assert!(err.contains("red\\u{1b}[31mdir\\u{d}"), "{err}");
}

#[test]
fn json_report_parses_and_carries_the_verdicts() {
    let (code, out, err) = check(&[
        "--strategy",
        "mutex",
        "--workload",
        "bank",
        "--ops",
        "200",
        "--json",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("valid JSON");
    assert_eq!(v["verdict"], "pass");
    assert_eq!(v["acknowledged"], 200);
    let checkers: Vec<&str> = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["checker"].as_str().unwrap())
        .collect();
    assert_eq!(checkers, ["bank", "overlap", "refused", "integrity"]);
}

#[test]
fn keep_saves_history_and_database_of_a_failed_run() {
    let dir = tempfile::tempdir().unwrap();
    let keep = dir.path().join("kept");
    let (code, out, err) = check(&[
        "--strategy",
        "unserialized",
        "--workload",
        "counter",
        "--threads",
        "6",
        "--ops",
        "500",
        "--keep",
        keep.to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(keep.join("run.db").is_file());
    let history = std::fs::read_to_string(keep.join("history-0.jsonl")).unwrap();
    assert!(
        history.lines().count() >= 1000,
        "invoke + completion per op"
    );
    // A passing run keeps nothing.
    let keep2 = dir.path().join("kept2");
    let (code, out, err) = check(&[
        "--strategy",
        "mutex",
        "--workload",
        "counter",
        "--ops",
        "100",
        "--keep",
        keep2.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(!keep2.exists());
    // A database already in the directory it is kept in stays whole.
    let keep3 = dir.path().join("kept3");
    std::fs::create_dir(&keep3).unwrap();
    let db = keep3.join("run.db");
    let (code, out, err) = check(&[
        "--strategy",
        "unserialized",
        "--workload",
        "counter",
        "--threads",
        "6",
        "--ops",
        "500",
        "--keep",
        keep3.to_str().unwrap(),
        "--db",
        db.to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("kept in"), "{out}");
    let n: i64 = rusqlite::Connection::open(&db)
        .unwrap()
        .query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))
        .unwrap();
    assert!(n > 0, "the kept database lost its tables");
}

#[test]
fn busy_timeout_survives_kills_in_critical_sections() {
    let (code, out, err) = check(&[
        "--strategy",
        "busy-timeout",
        "--workload",
        "counter",
        "--threads",
        "4",
        "--procs",
        "4",
        "--ops",
        "600",
        "--nemesis",
        "kill:100",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        !out.contains(" 0 faults injected"),
        "the nemesis struck:\n{out}"
    );
    assert!(out.contains("integrity     pass"), "{out}");
}

/// A fault run over before the nemesis struck has tested nothing about faults: it is
/// inconclusive (exit 3), not a pass. Two ops in two processes end long before the first
/// kill, due 100 ms after the start.
#[test]
fn a_nemesis_that_never_struck_is_inconclusive() {
    let (code, out, err) = check(&[
        "--strategy",
        "busy-timeout",
        "--workload",
        "counter",
        "--threads",
        "1",
        "--procs",
        "2",
        "--ops",
        "2",
        "--nemesis",
        "kill:60000",
    ]);
    assert_eq!(code, 3, "{out}{err}");
    assert!(out.contains(" 0 faults injected"), "{out}");
    assert!(out.contains("the nemesis killed no worker"), "{out}");
    assert!(out.contains("verdict: INCONCLUSIVE"), "{out}");
}

#[test]
fn stopped_workers_resume_and_the_run_passes() {
    let (code, out, err) = check(&[
        "--strategy",
        "busy-timeout",
        "--workload",
        "kv",
        "--threads",
        "2",
        "--procs",
        "3",
        "--ops",
        "400",
        "--nemesis",
        "stop:20",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("0 unknown"), "a pause loses nothing:\n{out}");
}

#[test]
fn svg_timeline_marks_overlapping_sections_red() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.svg");
    let (code, out, err) = check(&[
        "--strategy",
        "unserialized",
        "--workload",
        "counter",
        "--threads",
        "4",
        "--ops",
        "200",
        "--think-us",
        "100",
        "--svg",
        bad.to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{out}{err}");
    let svg = std::fs::read_to_string(&bad).unwrap();
    assert!(
        svg.starts_with("<svg") && svg.contains("#d62728"),
        "red bars"
    );
    let good = dir.path().join("good.svg");
    let (code, out, err) = check(&[
        "--strategy",
        "mutex",
        "--workload",
        "counter",
        "--threads",
        "4",
        "--ops",
        "200",
        "--svg",
        good.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let svg = std::fs::read_to_string(&good).unwrap();
    assert_eq!(svg.matches("<rect").count(), 200);
    assert!(!svg.contains("#d62728"), "no red bars");
}

#[test]
fn a_worker_reports_bad_specs_and_unreachable_backends_on_its_protocol() {
    use turnstile_harness::workload::Paths;
    use turnstile_harness::{WorkerSpec, Workload};

    let worker = |spec: &str| cli_support::worker(&format!("{spec}\n"));
    let (code, out) = worker("{not json");
    assert_eq!(code, 2);
    assert!(out.starts_with("error 2 "), "{out}");
    // No spec at all: stdin closed at once.
    let (code, out) = cli_support::worker("");
    assert_eq!(code, 2, "{out}");
    assert!(out.starts_with("error 2 no worker spec"), "{out}");

    let dir = tempfile::tempdir().unwrap();
    let spec = |strategy: &str, db: std::path::PathBuf| WorkerSpec {
        strategy: strategy.into(),
        workload: Workload::Counter,
        paths: Paths::new(dir.path(), Some(&db)),
        proc: 0,
        threads: 1,
        ops: 1,
        keys: 1,
        think_us: 0,
        rendezvous_us: 0,
        transaction: false,
        sync: "normal".into(),
        seed: 1,
        announce: false,
        timeout_ms: None,
        probe: true,
        probe_wait_ms: None,
        data: turnstile_harness::DataSpec::Sqlite,
        versioned: false,
        tables: String::new(),
        hold_history: false,
    };
    let json = |s: WorkerSpec| serde_json::to_string(&s).unwrap();
    let (code, out) = worker(&json(spec("no-such", dir.path().join("a.db"))));
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("unknown strategy"), "{out}");
    let (code, out) = worker(&json(spec("mutex", dir.path().join("missing/a.db"))));
    assert_eq!(code, 3, "{out}");
    assert!(out.starts_with("error 3 "), "{out}");
}

/// `--strategy` and `--data` may come from `check`'s own variables instead (out of `ps`),
/// with the same outcome as the flag: a typed error for a bad one, never the password.
#[test]
fn check_takes_its_url_flags_from_its_own_environment_variables() {
    for (flag, var, value, code) in [
        (
            "--strategy",
            "TURNSTILE_CHECK_STRATEGY",
            "no-such-strategy",
            2,
        ),
        (
            "--strategy",
            "TURNSTILE_CHECK_STRATEGY",
            "mysql://root:env-secret@127.0.0.1:1/test",
            3,
        ),
        ("--data", "TURNSTILE_CHECK_DATA", "ftp://u:env-secret@x", 2),
        (
            "--data",
            "TURNSTILE_CHECK_DATA",
            "postgres://postgres:env-secret@127.0.0.1:1/test",
            3,
        ),
    ] {
        let mut args = vec!["--workload", "counter", "--ops", "20"];
        if flag == "--data" {
            args.extend(["--strategy", "mutex"]);
        }
        let (by_flag, _, flag_err) = check(&[&args[..], &[flag, value]].concat());
        let (by_env, _, env_err) = check_env(&args, &[(var, value)]);
        assert_eq!(by_flag, code, "{flag} {value}: {flag_err}");
        assert_eq!(by_env, by_flag, "{var}={value}: {env_err}");
        assert!(!env_err.trim().is_empty(), "{var}: says why");
        assert!(
            !env_err.contains("env-secret"),
            "the password shows: {env_err}"
        );
        // The same message, but for the run's generated table prefix.
        let gist = |err: &str| -> String {
            let first = err.lines().next().unwrap_or("");
            first
                .split(' ')
                .map(|word| {
                    if word.starts_with("ts_") {
                        "ts_…"
                    } else {
                        word
                    }
                })
                .collect::<Vec<_>>()
                .join(" ")
        };
        // A value refused as it is parsed names where it came from.
        let from = format!(" (from {var})");
        if flag == "--data" && code == 2 {
            assert!(env_err.contains(&from), "{env_err}");
            assert!(!flag_err.contains("(from "), "{flag_err}");
        }
        assert_eq!(gist(&env_err.replace(&from, "")), gist(&flag_err), "{var}");
    }
    // The help names both variables, and never shows a value.
    let secret = [
        (CHECK_ENV[0], "mysql://root:env-secret@h/db"),
        (CHECK_ENV[1], "mysql://root:env-secret@h/db"),
    ];
    let (code, help, _) = check_env(&["--help"], &secret);
    assert_eq!(code, 0);
    cli_support::assert_help_names_env(&help, &CHECK_ENV);
    // A required flag is satisfied by its variable.
    let (code, out, err) = check_env(
        &["--workload", "counter", "--ops", "20"],
        &[("TURNSTILE_CHECK_STRATEGY", "mutex")],
    );
    assert_eq!(code, 0, "{out}{err}");
}

/// The small run the output tests make: `strategy` on `counter`, 2 threads, 100 ops, each
/// op waiting up to 2 ms for the other thread between its read and write (so a broken
/// strategy's sections meet).
fn small_run<'a>(strategy: &'a str, more: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "--strategy",
        strategy,
        "--workload",
        "counter",
        "--threads",
        "2",
        "--ops",
        "100",
        "--rendezvous-us",
        "2000",
    ];
    args.extend(more);
    args
}

/// `--svg` and `--keep` are checked before the run: a path that cannot be written is bad
/// usage naming it, and nothing runs.
#[test]
fn unwritable_output_paths_are_bad_usage_before_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"").unwrap();
    let missing = dir.path().join("missing-dir").join("t.svg");
    let under_file = file.join("kept");
    // Opening a named pipe to write would wait for a reader forever.
    let fifo = dir.path().join("pipe");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    for (flag, path) in [
        ("--svg", missing.to_str().unwrap()),
        ("--svg", dir.path().to_str().unwrap()),
        ("--svg", fifo.to_str().unwrap()),
        ("--keep", under_file.to_str().unwrap()),
    ] {
        // `mutex` passes: only the path can make this run fail.
        let (code, out, err) = check(&small_run("mutex", &[flag, path]));
        assert_eq!(code, 2, "{flag} {path}: {out}{err}");
        assert!(out.is_empty(), "{flag} {path}: nothing runs: {out}");
        assert!(err.contains(flag) && err.contains(path), "{err}");
    }
    assert!(!missing.exists(), "the check leaves nothing behind");
    // The timeline over the database it is drawn from.
    let both = dir.path().join("run.svg");
    let both = both.to_str().unwrap();
    let (code, out, err) = check(&small_run("mutex", &["--svg", both, "--db", both]));
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.contains("--svg and --db name one file"), "{err}");
}

/// A loop of symbolic links as `--svg` is bad usage, named, not a crash; a chain of links
/// short of the kernel's limit leads to where the chart is written.
#[test]
fn a_loop_of_links_as_the_svg_path_is_bad_usage() {
    let dir = tempfile::tempdir().unwrap();
    for path in &cli_support::link_loops(dir.path()) {
        let path = path.to_str().unwrap();
        let (code, out, err) = check(&small_run("mutex", &["--svg", path]));
        assert_eq!(code, 2, "{path}: {out}{err}");
        assert!(
            err.contains(path) && err.contains("too many levels of symbolic links"),
            "{err}"
        );
    }
    let mut next = std::path::PathBuf::from("chart.svg");
    for i in 0..10 {
        let link = dir.path().join(format!("link{i}"));
        std::os::unix::fs::symlink(&next, &link).unwrap();
        next = link;
    }
    let (code, out, err) = check(&small_run("mutex", &["--svg", next.to_str().unwrap()]));
    assert_eq!(code, 0, "{out}{err}");
    assert!(dir.path().join("chart.svg").is_file());
    // A dangling link into a missing directory: named as given, with where it leads.
    let dangling = dir.path().join("dangling.svg");
    std::os::unix::fs::symlink("/nonexistent-dir/chart.svg", &dangling).unwrap();
    let dangling = dangling.to_str().unwrap();
    let (code, out, err) = check(&small_run("mutex", &["--svg", dangling]));
    assert_eq!(code, 2, "{out}{err}");
    assert!(
        err.contains(&format!(
            "--svg {dangling} (a symbolic link to /nonexistent-dir/chart.svg): "
        )),
        "{err}"
    );
}

/// A spec refused for its form (no name, an argument to a strategy that takes none) is
/// bad usage whose message hides the password in it.
#[test]
fn a_refused_spec_is_named_without_its_password() {
    for spec in [
        "://u:hunter2@127.0.0.1:1/db",
        "mutex://u:hunter2@127.0.0.1:1/db",
        "unserialized://u:hunter2@127.0.0.1:1/db",
        "racy-version://u:hunter2@127.0.0.1:1/db",
    ] {
        let (code, out, err) = check(&small_run(spec, &[]));
        assert_eq!(code, 2, "{spec}: {out}{err}");
        assert!(err.contains("u:***@127.0.0.1:1/db"), "{spec}: {err}");
        assert!(!err.contains("hunter2"), "{spec}: {err}");
    }
}

/// An output that fails only after the run (`/dev/full` opens, and refuses every write; a
/// directory stands where the history file would be copied): the report is printed with
/// a note naming the path, a violation still exits 1, and a pass whose output is missing
/// exits 2.
#[test]
fn an_output_that_fails_after_the_run_is_a_note_under_the_report() {
    if !std::path::Path::new("/dev/full").exists() {
        eprintln!("no /dev/full here: skipped");
        return;
    }
    let (code, out, err) = check(&small_run("unserialized", &["--svg", "/dev/full"]));
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("verdict: VIOLATION"), "{out}");
    assert!(
        out.contains("note: the timeline could not be written to /dev/full"),
        "{out}"
    );

    let (code, out, err) = check(&small_run("mutex", &["--svg", "/dev/full"]));
    assert_eq!(code, 2, "{out}{err}");
    assert!(
        out.contains("verdict: PASS") && out.contains("/dev/full"),
        "{out}"
    );

    let dir = tempfile::tempdir().unwrap();
    let keep = dir.path().join("kept");
    std::fs::create_dir_all(keep.join("history-0.jsonl")).unwrap();
    let (code, out, err) = check(&small_run(
        "unserialized",
        &["--keep", keep.to_str().unwrap()],
    ));
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("verdict: VIOLATION"), "{out}");
    assert!(
        out.contains(&format!(
            "history and database could not be kept in {}",
            keep.display()
        )),
        "{out}"
    );
}

/// A run in this process's threads is held to its time limit too: past it, the threads
/// stop before their next op and the run is inconclusive (exit 3). Here 20 ops of a
/// 0.5 s race window each would take 10 s; the limit is 1 s.
#[test]
fn a_run_in_threads_past_its_time_limit_is_inconclusive() {
    use std::time::{Duration, Instant};
    use turnstile_harness::{RunConfig, RunError, Workload, registry, run};

    // Each op takes 1 s, past a limit of 300 ms without a new op: stuck.
    let config = RunConfig::new("racy-version:1000000", Workload::Counter)
        .threads(1)
        .ops(20)
        .time_limit(Duration::from_millis(300));
    let started = Instant::now();
    let error = run(&config, &registry()).expect_err("the run is cut off");
    assert!(matches!(error, RunError::TimedOut(_)), "{error}");
    assert_eq!(error.exit_code(), 3);
    assert!(error.to_string().starts_with("inconclusive: "), "{error}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    // The CLI sets it too: ops of 2 s each (the control's 1 s window and a 1 s pause), so
    // no new op starts for over the 1 s limit.
    let (code, _, err) = check(&[
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
    ]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("time limit"), "{err}");
    // A run that is slow but moving (an op every 200 ms, each under the limit) ends.
    let slow = RunConfig::new("racy-version:200000", Workload::Counter)
        .threads(1)
        .ops(6)
        .time_limit(Duration::from_millis(600));
    run(&slow, &registry()).expect("a slow run that moves is not cut off");
}

/// What the CLI says names things as `turnstile list` does, and says each thing once.
#[test]
fn messages_name_what_list_shows_and_say_each_cause_once() {
    // An unknown strategy's message lists what runs, `optimistic` too.
    let (code, _, err) = check(&["--strategy", "no-such", "--workload", "counter"]);
    assert_eq!(code, 2, "{err}");
    #[cfg(feature = "optimistic")]
    assert!(err.contains("optimistic"), "{err}");
    // `list` gives the control's real spec form.
    let list = std::process::Command::new(cli_support::EXE)
        .arg("list")
        .output()
        .unwrap();
    let list = String::from_utf8_lossy(&list.stdout);
    assert!(list.contains("racy-version:MICROS"), "{list}");
    assert!(!list.contains("(racy:"), "{list}");
    // `--sync` takes all four of SQLite's settings, and says so.
    let (_, help, _) = check(&["--help"]);
    assert!(help.contains("off, normal, full or extra"), "{help}");
    let (code, out, err) = check(&[
        "--strategy",
        "mutex",
        "--workload",
        "counter",
        "--ops",
        "20",
        "--sync",
        "extra",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    // A refused connection is said once, not once per layer of the error.
    #[cfg(feature = "redis")]
    {
        let (code, _, err) = check(&[
            "--strategy",
            "redis://127.0.0.1:1",
            "--workload",
            "counter",
            "--ops",
            "10",
        ]);
        assert_eq!(code, 3, "{err}");
        assert_eq!(err.matches("refused").count(), 1, "{err}");
    }
}

/// The op run before the start to see that the backend answers waits no longer than the
/// run's time limit, even with a longer op timeout, and a lock held elsewhere all along is
/// said to be held, not "backend unavailable". Here a holder keeps every stripe of a
/// file-lock directory (as a stale process would).
#[test]
fn a_probe_kept_out_by_a_holder_is_bounded_by_the_time_limit_and_says_so() {
    use std::time::{Duration, Instant};

    let dir = tempfile::tempdir().unwrap();
    let locks = dir.path().join("locks");
    let spec = format!("file-lock:{}", locks.display());
    let (code, out, err) = check(&small_run(&spec, &[]));
    assert_eq!(code, 0, "the lock directory is laid out: {out}{err}");
    let layout = std::fs::read_to_string(locks.join("layout")).unwrap();
    let stripes: usize = layout
        .lines()
        .find_map(|l| l.strip_prefix("stripes "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no stripe count in {layout:?}"));
    let held: Vec<std::fs::File> = (0..stripes)
        .map(|i| {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(locks.join(format!("stripe-{i:04}.lock")))
                .unwrap();
            rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive).unwrap();
            file
        })
        .collect();
    let started = Instant::now();
    let (code, out, err) = check(&small_run(
        &spec,
        &["--timeout-ms", "60000", "--time-limit-s", "1"],
    ));
    let took = started.elapsed();
    drop(held);
    assert_eq!(code, 3, "{out}{err}");
    assert!(err.contains("did not start"), "{err}");
    assert!(err.contains("something else holds the lock"), "{err}");
    assert!(!err.contains("unavailable"), "{err}");
    assert!(took < Duration::from_secs(30), "took {took:?}: {err}");
}
