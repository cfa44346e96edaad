//! The CLI's exit codes and outputs: usage errors, unreachable backends, `--json`,
//! `--keep`, and the kill nemesis against the `busy-timeout` baseline.

#[path = "support/cli.rs"]
mod cli_support;

use cli_support::{CHECK_ENV, check, check_env};
use std::path::Path;

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
    // A racy run kept in `keep`, with its database at `db` if given.
    let racy_run = |keep: &Path, db: Option<&Path>| {
        let mut args = vec![
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
        ];
        if let Some(db) = db {
            args.extend(["--db", db.to_str().unwrap()]);
        }
        let (code, out, err) = check(&args);
        assert_eq!(code, 1, "{out}{err}");
        out
    };
    let keep = dir.path().join("kept");
    racy_run(&keep, None);
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
    let table_count = |db: &Path| -> i64 {
        rusqlite::Connection::open(db)
            .unwrap()
            .query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))
            .unwrap()
    };
    // A database already in the directory it is kept in stays whole.
    let keep3 = dir.path().join("kept3");
    std::fs::create_dir(&keep3).unwrap();
    let db = keep3.join("run.db");
    let out = racy_run(&keep3, Some(&db));
    assert!(out.contains("kept in"), "{out}");
    assert!(table_count(&db) > 0, "the kept database lost its tables");
    // Nothing is copied over a file already there: not over a `--db` in `--keep` named
    // like a file the run keeps, nor that file over the kept history.
    for (keep, db) in [
        ("kept4", dir.path().join("kept4/history-0.jsonl")),
        ("kept5", dir.path().join("elsewhere/history-0.jsonl")),
    ] {
        let keep = dir.path().join(keep);
        std::fs::create_dir_all(db.parent().unwrap()).unwrap();
        let out = racy_run(&keep, Some(&db));
        assert!(out.contains("could not be kept"), "{out}");
        assert!(table_count(&db) > 0, "the database was overwritten");
        let kept = keep.join("history-0.jsonl");
        if kept != db {
            let history = std::fs::read_to_string(&kept).unwrap();
            assert!(
                history.starts_with("{\"phase\":\"invoke\""),
                "{history:.200}"
            );
        }
    }
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
        // A value refused as it is parsed names where it came from; a run that cannot
        // start with a strategy from the variable says so in a note.
        let from = match flag {
            "--data" => format!(" (from {var})"),
            _ => format!("note: the strategy is {var}'s value"),
        };
        if flag == "--strategy" || code == 2 {
            assert!(env_err.contains(&from), "{env_err}");
            assert!(!flag_err.contains(var), "{flag_err}");
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

    // A directory where the history file would be copied, made once the run began (made
    // before, it would be refused as a `--keep` that is not empty): the run's directory
    // appears in its TMPDIR after the checks.
    let dir = tempfile::tempdir().unwrap();
    let keep = dir.path().join("kept");
    let tmp = dir.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    let mut args = small_run("unserialized", &["--keep", keep.to_str().unwrap()]);
    args.extend(["--think-us", "5000"]);
    let child = std::process::Command::new(cli_support::EXE)
        .arg("check")
        .args(&args)
        .env("TMPDIR", &tmp)
        .env_remove(CHECK_ENV[0])
        .env_remove(CHECK_ENV[1])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let began = std::time::Instant::now();
    while std::fs::read_dir(&tmp).unwrap().next().is_none() {
        assert!(began.elapsed().as_secs() < 60, "the run did not begin");
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    std::fs::create_dir_all(keep.join("history-0.jsonl")).unwrap();
    let output = child.wait_with_output().unwrap();
    let (code, out, err) = (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
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
    assert!(matches!(error.error, RunError::TimedOut(_)), "{error}");
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
    let held = cli_support::hold_every_stripe(&locks);
    // With a longer op timeout, and with none (the strategy's default is 30 s).
    for timeout in [&["--timeout-ms", "60000"][..], &[]] {
        let started = Instant::now();
        let (code, out, err) = check(&small_run(
            &spec,
            &[timeout, &["--time-limit-s", "1"]].concat(),
        ));
        let took = started.elapsed();
        assert_eq!(code, 3, "{out}{err}");
        assert!(err.contains("did not start"), "{err}");
        assert!(err.contains("something else holds the lock"), "{err}");
        assert!(!err.contains("unavailable"), "{err}");
        assert!(took < Duration::from_secs(20), "took {took:?}: {err}");
    }
    // A holder that lets go after a while: the run goes ahead, and says it waited.
    let releaser = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(1500));
        drop(held);
    });
    let (code, out, err) = check(&small_run(&spec, &[]));
    releaser.join().unwrap();
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("to open and run a first op") && out.contains("leave that out"),
        "{out}"
    );
    // A quick start says nothing of it.
    let (code, out, err) = check(&small_run(&spec, &[]));
    assert_eq!(code, 0, "{out}{err}");
    assert!(!out.contains("to open and run a first op"), "{out}");
}

/// SQLite opens a database at a path of at most 504 bytes (absolute, links resolved): a
/// `--db` past it is bad usage before the run, not a backend "unavailable" after it.
#[test]
fn a_database_path_too_long_for_sqlite_is_bad_usage() {
    let dir = tempfile::tempdir().unwrap();
    let d = "d".repeat(100);
    let deep = dir
        .path()
        .canonicalize()
        .unwrap()
        .join(&d)
        .join(&d)
        .join(&d);
    std::fs::create_dir_all(&deep).unwrap();
    let at = |len: usize| {
        let name = "x".repeat(len - deep.as_os_str().len() - 1);
        deep.join(name)
    };
    let run = |db: &Path| {
        check(&[
            "--strategy",
            "mutex",
            "--workload",
            "counter",
            "--ops",
            "10",
            "--db",
            db.to_str().unwrap(),
        ])
    };
    let (code, out, err) = run(&at(504));
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = run(&at(505));
    assert_eq!(code, 2, "{out}{err}");
    assert!(
        err.contains("505 bytes") && err.contains("at most 504"),
        "{err}"
    );
    assert!(out.is_empty(), "nothing runs: {out}");
}

/// A rendezvous with one worker never meets anyone: each op waits the whole window, and
/// the report says why the run was slow.
#[test]
fn a_rendezvous_with_a_single_worker_is_noted() {
    let note = "--rendezvous-us with a single worker";
    let run = |threads: &str| {
        let (code, out, err) = check(&[
            "--strategy",
            "mutex",
            "--workload",
            "counter",
            "--threads",
            threads,
            "--ops",
            "4",
            "--rendezvous-us",
            "1000",
        ]);
        assert_eq!(code, 0, "{out}{err}");
        out
    };
    assert!(run("1").contains(note));
    assert!(!run("2").contains(note));
}

/// `optimistic` reruns ops instead of excluding them, so it cannot protect effects outside
/// the data: `check` says so beside the violation it finds there, and says nothing of it
/// where the data is all there is.
#[test]
fn a_strategy_that_does_not_exclude_is_noted_on_effects_outside_the_data() {
    let note = "does not exclude (it reruns ops)";
    let (_, out, err) = check(&[
        "--strategy",
        "optimistic",
        "--workload",
        "notify_once",
        "--threads",
        "4",
        "--ops",
        "200",
    ]);
    assert!(out.contains(note), "{out}{err}");
    let (code, out, err) = check(&small_run("optimistic", &[]));
    assert_eq!(code, 0, "{out}{err}");
    assert!(!out.contains(note), "{out}");
}

/// `--keep` into a directory that holds files already would mix two runs' files: bad usage
/// before the run, naming it, and what is there stays as it was. A name in it past
/// NAME_MAX (255 bytes), or a path whose kept files would pass PATH_MAX, would fail only
/// after the run: bad usage before it too. (`unserialized` fails: its run would keep.)
#[test]
fn keep_refuses_a_directory_with_files_and_a_name_too_long_before_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let keep = dir.path().join("kept");
    std::fs::create_dir(&keep).unwrap();
    std::fs::write(keep.join("history-0.jsonl"), b"an earlier run's\n").unwrap();
    let keep_str = keep.to_str().unwrap();
    let (code, out, err) = check(&small_run("unserialized", &["--keep", keep_str]));
    assert_eq!(code, 2, "{out}{err}");
    assert!(out.is_empty(), "nothing runs: {out}");
    assert!(
        err.contains(&format!("--keep {keep_str} is not empty")),
        "{err}"
    );
    let names: Vec<_> = std::fs::read_dir(&keep).unwrap().collect();
    assert_eq!(names.len(), 1);
    assert_eq!(
        std::fs::read(keep.join("history-0.jsonl")).unwrap(),
        b"an earlier run's\n"
    );
    // An empty directory takes the run's files.
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let (code, out, err) = check(&small_run(
        "unserialized",
        &["--keep", empty.to_str().unwrap()],
    ));
    assert_eq!(code, 1, "{out}{err}");
    assert!(empty.join("history-0.jsonl").is_file(), "{out}");

    let long_name = dir.path().join("n".repeat(300)).join("kept");
    let long_path = dir
        .path()
        .join(vec!["d".repeat(200); 21].join("/"))
        .join("kept");
    for (keep, why) in [
        (&long_name, "a name in it is 300 bytes long, past the 255"),
        (&long_path, "the files kept in it would pass the 4095 bytes"),
    ] {
        let (code, out, err) = check(&small_run(
            "unserialized",
            &["--keep", keep.to_str().unwrap()],
        ));
        assert_eq!(code, 2, "{out}{err}");
        assert!(out.is_empty(), "nothing runs: {out}");
        assert!(err.contains("--keep ") && err.contains(why), "{err}");
    }
}

/// Options the run would ignore are refused before it, saying why: `--sync` (SQLite's)
/// with a server's data, `--keys 1` on `bank` (which needs two accounts). Where one set
/// of flags may serve side by side runs, an ignored one is a note on stderr instead:
/// `--transaction` on a control that always runs in autocommit, `--keys` on `file_store`
/// (one file).
#[test]
fn options_a_run_would_ignore_are_refused_or_noted() {
    let data = turnstile_harness::conformance::postgres_url();
    for (args, says) in [
        (
            small_run("mutex", &["--data", &data, "--sync", "full"]),
            "--sync is SQLite's setting; the data is in postgres://",
        ),
        (
            vec!["--strategy", "mutex", "--workload", "bank", "--keys", "1"],
            "--keys must be at least 2 for the bank workload",
        ),
    ] {
        let (code, out, err) = check(&args);
        assert_eq!(code, 2, "{args:?}: {out}{err}");
        assert!(out.is_empty(), "{args:?}: nothing runs: {out}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
    // The variable's data is named as such.
    let (code, _, err) = check_env(
        &small_run("mutex", &["--sync", "full"]),
        &[(CHECK_ENV[1], &data)],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("(from TURNSTILE_CHECK_DATA)"), "{err}");

    let (code, out, err) = check(&small_run("unserialized", &["--transaction"]));
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("note: --transaction had no effect: unserialized runs in autocommit"),
        "{err}"
    );
    let (code, out, err) = check(&small_run("mutex", &["--transaction"]));
    assert_eq!(code, 0, "{out}{err}");
    assert!(!err.contains("no effect"), "{err}");
    let file_store = [
        "--strategy",
        "mutex",
        "--workload",
        "file_store",
        "--ops",
        "20",
    ];
    let (code, out, err) = check(&[&file_store[..], &["--keys", "3"]].concat());
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        err.contains("note: --keys 3 has no effect on the file_store workload"),
        "{err}"
    );
}

/// A message never echoes a user's value whole past 200 characters: a 100 KB path,
/// spec, nemesis or workload is cut to its first 200, then `…` and its length.
#[test]
fn messages_cut_a_long_value_they_echo() {
    let long = "x".repeat(100_000);
    let medium = "y".repeat(300);
    let path = format!("/nonexistent-dir/{long}");
    let cut = format!("{}… (", &path[..200]);
    for (args, shown) in [
        (small_run("mutex", &["--svg", &path]), &cut),
        (small_run("mutex", &["--db", &path]), &cut),
        (small_run("mutex", &["--keep", &path]), &cut),
        // (A spec too long for its password to be found is not shown at all.)
        (
            small_run(&long, &[]),
            &"[100000 bytes, not shown]".to_owned(),
        ),
        (
            small_run(&medium, &[]),
            &format!("{}… (300 characters)", &medium[..200]),
        ),
        (
            small_run("mutex", &["--nemesis", &long]),
            &format!("{}… (100000 characters)", &long[..200]),
        ),
        (
            vec!["--strategy", "mutex", "--workload", &long],
            &format!("{}… (100000 characters)", &long[..200]),
        ),
    ] {
        let (code, out, err) = check(&args);
        assert_eq!(code, 2, "{}", &err[..err.len().min(1000)]);
        assert!(out.is_empty());
        assert!(err.len() < 2000, "{} bytes: {}", err.len(), &err[..1000]);
        assert!(err.contains(shown.as_str()), "{err}");
    }
}

/// `--data` takes its URL's scheme in any case (RFC 3986): `Postgres://…` is PostgreSQL
/// (`TURNSTILE_POSTGRES_URL`; fails when it is down), not a driver's "unexpected EOF".
#[test]
fn a_data_url_scheme_in_capitals_is_read() {
    let url = turnstile_harness::conformance::postgres_url();
    let (scheme, rest) = url.split_once("://").unwrap();
    let shouted = format!("{}://{rest}", scheme.to_ascii_uppercase());
    let (code, out, err) = check(&small_run("mutex", &["--data", &shouted]));
    assert_eq!(code, 0, "{out}{err}");
    // A strategy's URL too.
    let (code, out, err) = check(&small_run(&format!("queue+{shouted}"), &[]));
    assert_eq!(code, 0, "{out}{err}");
}

/// A Redis URL whose database is below 0 is bad usage, found as the spec is read, not an
/// unreachable server after connecting (the server refuses `SELECT -1`).
#[test]
fn a_negative_redis_database_is_bad_usage() {
    for spec in [
        "redis://127.0.0.1:6379/-1",
        "queue+redis://:hunter2@127.0.0.1:6379/-2?ttl_ms=500",
    ] {
        let (code, out, err) = check(&small_run(spec, &[]));
        assert_eq!(code, 2, "{spec}: {out}{err}");
        assert!(err.contains("is below 0"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
    }
}

/// A strategy spec taken from `TURNSTILE_CHECK_STRATEGY` is named as such when the run
/// cannot start (refused or out of reach): a user who gave no `--strategy` may not know
/// a variable set one.
#[test]
fn a_strategy_from_its_variable_is_named_in_its_errors() {
    for (spec, code) in [
        ("no-such-strategy", 2),
        ("mutex:arg", 2),
        ("redis://127.0.0.1:6379/-1", 2),
        ("mysql://root:env-secret@127.0.0.1:1/test", 3),
    ] {
        let (got, _, err) = check_env(
            &["--workload", "counter", "--ops", "20"],
            &[(CHECK_ENV[0], spec)],
        );
        assert_eq!(got, code, "{spec}: {err}");
        assert!(
            err.contains("note: the strategy is TURNSTILE_CHECK_STRATEGY's value"),
            "{spec}: {err}"
        );
        assert!(!err.contains("env-secret"), "{err}");
    }
    // The error itself is not made the strategy's.
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("old.db");
    std::fs::write(&db, b"").unwrap();
    let (code, _, err) = check_env(
        &["--workload", "counter", "--db", db.to_str().unwrap()],
        &[(CHECK_ENV[0], "mutex")],
    );
    assert_eq!(code, 2, "{err}");
    let first = err.lines().next().unwrap_or_default();
    assert!(first.contains("--db"), "{err}");
    assert!(!first.contains("TURNSTILE_CHECK_STRATEGY"), "{err}");
}
