//! `turnstile compare` end to end: the table, the JSON schema the book and CI read, the
//! SVG, and the exit code.

use std::process::Command;

#[path = "support/cli.rs"]
mod cli_support;

use cli_support::COMPARE_ENV;

/// The binary, without `compare`'s own variables a shell may have exported: each test
/// says what it runs.
fn turnstile() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_turnstile"));
    for var in COMPARE_ENV {
        command.env_remove(var);
    }
    command
}

/// Runs `command`, which must exit 0 (else the test fails with `what`, its stdout and
/// stderr): its stdout.
fn stdout_of_success(command: &mut Command, what: &str) -> String {
    let output = command.output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert_eq!(
        output.status.code(),
        Some(0),
        "{what}{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// Runs `command`, which must succeed: its stdout and stderr.
fn outputs_of_success(command: &mut Command) -> (String, String) {
    let output = command.output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(0), "{stdout}\n{stderr}");
    (stdout, stderr)
}

/// The JSON report at `path`.
fn report(path: &std::path::Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// The `results` of `compare --quick --no-redis ARGS… --json`, which must exit 0.
fn quick_results(args: &[&str]) -> Vec<serde_json::Value> {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("report.json");
    stdout_of_success(
        turnstile()
            .args(["compare", "--quick", "--no-redis"])
            .args(args)
            .arg("--json")
            .arg(&json),
        &format!("{args:?}: "),
    );
    report(&json)["results"].as_array().unwrap().clone()
}

/// Exit code and stderr.
fn status(command: &mut Command) -> (Option<i32>, String) {
    let output = command.output().unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn compare_writes_a_table_json_and_svg_with_a_verdict_per_setting() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("report.json");
    let svg = dir.path().join("chart.svg");
    let output = turnstile()
        .args(["compare", "--quick", "--no-redis", "--ops", "300"])
        .args([
            "--strategies",
            "queue,mutex,optimistic,unserialized",
            "--threads",
            "1,4",
        ])
        .arg("--json")
        .arg(&json)
        .arg("--svg")
        .arg(&svg)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for name in [
        "queue",
        "mutex",
        "optimistic",
        "unserialized",
        "floor sqlite_commit_1row",
    ] {
        assert!(stdout.contains(name), "{name} missing from:\n{stdout}");
    }

    let report = report(&json);
    let results = report["results"].as_array().unwrap();
    assert_eq!(results.len(), 8, "4 strategies × 2 thread counts");
    for r in results {
        for field in [
            "strategy",
            "workload",
            "threads",
            "procs",
            "sync",
            "ops_per_sec",
            "p50_us",
            "p99_us",
            "p999_us",
            "max_us",
            "safe",
        ] {
            assert!(!r[field].is_null(), "{field} missing in {r}");
        }
        assert!(r["ops_per_sec"].as_f64().unwrap() > 0.0, "{r}");
        if r["strategy"] != "unserialized" {
            assert_eq!(r["safe"], true, "{r}");
        }
    }
    // Optimistic runs on versioned records, held to its own checks: no overlap checker.
    let optimistic: Vec<&serde_json::Value> = results
        .iter()
        .filter(|r| r["strategy"] == "optimistic")
        .collect();
    assert_eq!(optimistic.len(), 2, "{results:?}");
    for r in optimistic {
        let verdicts = r["verdicts"].to_string();
        assert!(
            verdicts.contains("lost_update: pass") && !verdicts.contains("overlap"),
            "{r}"
        );
    }
    assert!(report["floors"][0]["p50_us"].as_f64().unwrap() > 0.0);
    assert!(report["machine"]["cpus"].as_u64().unwrap() >= 1);
    let chart = std::fs::read_to_string(&svg).unwrap();
    assert!(chart.starts_with("<svg") && chart.contains("queue"));

    // A saved report renders the same table again, without running anything.
    let again = dir.path().join("again.svg");
    let rendered = turnstile()
        .args(["compare", "--from-json"])
        .arg(&json)
        .arg("--svg")
        .arg(&again)
        .output()
        .unwrap();
    assert_eq!(rendered.status.code(), Some(0));
    // The table, the floor, then the notes under it, as the run printed them.
    let notes: Vec<&str> = stdout.lines().filter(|l| l.starts_with("note: ")).collect();
    // queue and mutex ran inside SQLite transactions; optimistic is one itself, and the
    // control always runs in autocommit.
    assert_eq!(notes.len(), 1, "{stdout}");
    assert!(
        notes[0].starts_with("note: queue, mutex ran inside SQLite transactions")
            && notes[0].contains("does not test their own exclusion"),
        "{stdout}"
    );
    assert_eq!(
        report["notes"].as_array().map(Vec::len),
        Some(1),
        "{report}"
    );
    assert_eq!(String::from_utf8_lossy(&rendered.stdout), stdout);
    assert_eq!(std::fs::read_to_string(&again).unwrap(), chart);

    // A hand-edited report: a control character in a name reaches neither the terminal
    // nor the chart (XML allows none, even as a reference), and a number no run measures
    // is refused as the report's fault.
    let mut edited = report.clone();
    edited["results"][0]["strategy"] = "que\u{1b}[2Jue".into();
    let path = dir.path().join("edited.json");
    std::fs::write(&path, edited.to_string()).unwrap();
    let edited_svg = dir.path().join("edited.svg");
    let rendered = turnstile()
        .args(["compare", "--from-json"])
        .arg(&path)
        .arg("--svg")
        .arg(&edited_svg)
        .output()
        .unwrap();
    assert_eq!(rendered.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&rendered.stdout).contains("que\\u{1b}[2Jue"));
    let chart = std::fs::read_to_string(&edited_svg).unwrap();
    assert!(!chart.contains('\u{1b}') && chart.contains("que\\u{1b}[2Jue"));
    for (field, value) in [
        ("ops_per_sec", serde_json::json!(1e308)),
        ("p99_us", serde_json::json!(-1.0)),
        ("threads", serde_json::json!(0)),
    ] {
        let mut edited = report.clone();
        edited["results"][1][field] = value;
        std::fs::write(&path, edited.to_string()).unwrap();
        let refused = turnstile()
            .args(["compare", "--from-json"])
            .arg(&path)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert_eq!(refused.status.code(), Some(2), "{field}: {stderr}");
        assert!(
            stderr.contains(&format!("results[1].{field} is ")),
            "{field}: {stderr}"
        );
        assert!(refused.stdout.is_empty(), "{field}");
    }
}

#[test]
fn compare_refuses_an_unknown_strategy_as_bad_usage() {
    let stderr = refused(&["--strategies", "nope"]);
    assert!(stderr.contains("unknown strategy"));
    // A repeated --strategies adds to the list: the second one's spec is looked at too.
    let stderr = refused(&["--strategies", "mutex", "--strategies", "nope2"]);
    assert!(stderr.contains("unknown strategy \"nope2\""), "{stderr}");
}

/// A negative-control workload is broken application code: every strategy would show its
/// violations, so `compare` refuses it as bad usage (`check` runs it).
#[test]
fn compare_refuses_a_negative_control_workload_as_bad_usage() {
    let stderr = refused(&["--strategies", "mutex", "--workload", "notify_stale"]);
    assert!(stderr.contains("negative-control"), "{stderr}");
}

/// The stderr of `compare --quick --no-redis ARGS…`, which must exit as bad usage (2).
fn refused(args: &[&str]) -> String {
    let (code, stderr) = status(
        turnstile()
            .args(["compare", "--quick", "--no-redis"])
            .args(args),
    );
    assert_eq!(code, Some(2), "{args:?}: {stderr}");
    stderr
}

/// With Redis in the run (`TURNSTILE_REDIS_URL`, default `redis://127.0.0.1:6379`; fails
/// when it is down), the report has the two-round-trip floor and the Redis lock's own
/// cycle against it, in the table's footer and in the JSON.
#[test]
fn compare_reports_the_redis_lock_cycle_against_its_floor() {
    let url = turnstile_harness::conformance::redis_url();
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("report.json");
    let stdout = stdout_of_success(
        turnstile()
            .args(["compare", "--quick", "--ops", "200", "--threads", "1"])
            .args(["--strategies", &url, "--redis", &url])
            .arg("--json")
            .arg(&json),
        "",
    );
    for line in ["floor redis_two_round_trips", "lock cycle redis"] {
        assert!(stdout.contains(line), "{line} missing from:\n{stdout}");
    }
    let report = report(&json);
    let cycles = report["lock_cycles"].as_array().unwrap();
    let releases: Vec<&str> = cycles
        .iter()
        .map(|c| c["release"].as_str().unwrap())
        .collect();
    assert_eq!(releases, ["awaited", "dropped"], "{report}");
    for cycle in cycles {
        assert_eq!(cycle["lock"], "redis", "{report}");
        assert_eq!(cycle["floor"], "redis_two_round_trips", "{report}");
        for field in ["p50_us", "ops_per_sec", "floor_ratio"] {
            assert!(cycle[field].as_f64().unwrap() > 0.0, "{field} in {cycle}");
        }
    }
}

/// Over PostgreSQL data (`TURNSTILE_POSTGRES_URL`, default
/// `postgres://postgres@127.0.0.1:5432/test`; fails when it is down): the strategies that
/// run there are measured with a verdict, the others skipped with a note, and the report
/// names the data store without its password (the trusting test server ignores one).
#[test]
fn compare_runs_over_server_data_and_skips_what_cannot() {
    const SECRET: &str = "compare-secret-pw";
    let url = turnstile_harness::conformance::postgres_url();
    let (scheme, rest) = url.split_once("://").unwrap();
    let url = match rest.split_once('@') {
        Some((user, host)) if !user.contains(':') => format!("{scheme}://{user}:{SECRET}@{host}"),
        _ => panic!("the test wants a postgres URL with a user and no password: {url}"),
    };
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("report.json");
    let strategies = format!("mutex,optimistic,queue,file-lock,{url},queue+{url},pg-xact");
    let (stdout, stderr) = outputs_of_success(
        turnstile()
            .args(["compare", "--quick", "--no-redis", "--ops", "200"])
            .args([
                "--threads",
                "1,4",
                "--strategies",
                &strategies,
                "--data",
                &url,
            ])
            .arg("--json")
            .arg(&json),
    );
    assert!(
        stderr.contains("skipped") && stderr.contains("queue, file-lock"),
        "{stderr}"
    );
    let text = std::fs::read_to_string(&json).unwrap();
    for shown in [&stdout as &str, &stderr, &text] {
        assert!(!shown.contains(SECRET), "the password shows:\n{shown}");
    }
    let report: serde_json::Value = serde_json::from_str(&text).unwrap();
    let data = report["data"].as_str().unwrap();
    assert!(
        data.starts_with("postgres://") && data.contains("***"),
        "{data}"
    );
    assert!(stdout.contains(&format!("data: {data}")), "{stdout}");
    let results = report["results"].as_array().unwrap();
    let mut measured: Vec<&str> = results
        .iter()
        .map(|r| r["strategy"].as_str().unwrap())
        .collect();
    measured.dedup();
    let redacted = format!("{scheme}://{}", rest.replacen('@', ":***@", 1));
    assert_eq!(
        measured,
        [
            "mutex",
            "optimistic",
            redacted.as_str(),
            &format!("queue+{redacted}"),
            "pg-xact"
        ],
        "{report}"
    );
    assert_eq!(results.len(), 10, "5 strategies × 2 thread counts");
    for r in results {
        assert_eq!(r["safe"], true, "{r}");
        assert!(r["ops_per_sec"].as_f64().unwrap() > 0.0, "{r}");
    }

    // A list of which nothing runs over the data is bad usage.
    let (code, stderr) = status(
        turnstile()
            .args([
                "compare",
                "--quick",
                "--no-redis",
                "--strategies",
                "queue,retry",
            ])
            .args(["--data", &url]),
    );
    assert_eq!(code, Some(2));
    assert!(stderr.contains("none of the strategies"));
}

/// Over a server's data the default strategies leave out the Redis ones (they run over
/// SQLite only), and say so rather than leave them out silently.
#[cfg(all(feature = "redis", feature = "mysql"))]
#[test]
fn compare_over_server_data_says_why_redis_is_left_out() {
    let url = turnstile_harness::conformance::mysql_url();
    let (code, stderr) = status(
        turnstile()
            .args(["compare", "--quick", "--ops", "50", "--threads", "1"])
            .args(["--data", &url]),
    );
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains("note: redis strategies skipped, they do not run over data in mysql://"),
        "{stderr}"
    );
}

/// Over a server's data (`TURNSTILE_POSTGRES_URL`, `TURNSTILE_MYSQL_URL`; fails when one
/// is down) the commit floor is that server's, in the JSON and under the table, and
/// SQLite's is not measured.
#[test]
fn compare_over_server_data_measures_that_servers_commit_floor() {
    use turnstile_harness::conformance::{mysql_url, postgres_url};
    for (url, kind) in [
        (postgres_url(), "postgres_commit_1row"),
        (mysql_url(), "mysql_commit_1row"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let json = dir.path().join("report.json");
        let stdout = stdout_of_success(
            turnstile()
                .args(["compare", "--quick", "--no-redis", "--ops", "100"])
                .args(["--threads", "1", "--strategies", "mutex", "--data", &url])
                .arg("--json")
                .arg(&json),
            &format!("{url}: "),
        );
        assert!(stdout.contains(&format!("floor {kind}: ")), "{stdout}");
        assert!(!stdout.contains("sqlite_commit_1row"), "{stdout}");
        let report = report(&json);
        let floors = report["floors"].as_array().unwrap();
        assert_eq!(floors.len(), 1, "{report}");
        assert_eq!(floors[0]["kind"], kind, "{report}");
        assert!(floors[0]["sync"].is_null(), "{report}");
        for field in ["p50_us", "ops_per_sec"] {
            assert!(
                floors[0][field].as_f64().unwrap() > 0.0,
                "{field}: {report}"
            );
        }
    }
}

/// A data server that is down stops the comparison at its floor, before any setting
/// runs: inconclusive (exit 3), naming the server, no panic.
#[test]
fn compare_over_a_data_server_that_is_down_is_inconclusive_at_its_floor() {
    for url in [
        "postgres://postgres@127.0.0.1:1/test",
        "mysql://root@127.0.0.1:1/test",
    ] {
        let output = turnstile()
            .args(["compare", "--quick", "--no-redis", "--ops", "100"])
            .args(["--threads", "1", "--strategies", "mutex", "--data", url])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(3), "{url}: {stderr}");
        assert!(
            stderr.contains("backend unavailable") && stderr.contains("127.0.0.1:1"),
            "{url}: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert!(output.stdout.is_empty(), "{url}: nothing ran");
    }
}

/// A strategy whose server is out of reach when the comparison opens it is not tried again
/// by each setting (every one would wait out its connect timeout): its settings, and its
/// `queue+` form's, are recorded inconclusive without running, saying so.
#[cfg(feature = "redis")]
#[test]
fn compare_tries_a_server_out_of_reach_once_not_once_per_setting() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = std::sync::Arc::new(AtomicUsize::new(0));
    // Accepts and holds every connection, never answers: each try waits its timeout.
    let counter = accepted.clone();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for socket in listener.incoming() {
            counter.fetch_add(1, Ordering::SeqCst);
            held.push(socket);
        }
    });
    let redis = format!("redis://127.0.0.1:{port}");
    let output = turnstile()
        .args(["compare", "--quick", "--no-redis", "--ops", "50"])
        .args(["--threads", "1,4", "--strategies"])
        .arg(format!("mutex,{redis},queue+{redis}"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(3), "{stdout}");
    let inconclusive: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("inconclusive: "))
        .collect();
    assert_eq!(inconclusive.len(), 4, "{stdout}");
    for line in inconclusive {
        assert!(
            line.contains("no answer within 2s while connecting")
                && line.ends_with("(found when the comparison began; this setting was not run)"),
            "{line}"
        );
    }
    assert!(stdout.contains("mutex "), "the rest ran: {stdout}");
    // One strategy's open tried the server; nothing after it did.
    let tries = accepted.load(Ordering::SeqCst);
    assert!((1..=2).contains(&tries), "{tries} connections");
}

/// The smallest comparison: embedded only, 50 ops at one thread.
const TINY_RUN: [&str; 7] = [
    "compare",
    "--quick",
    "--no-redis",
    "--ops",
    "50",
    "--threads",
    "1",
];

/// Each URL flag may come from `compare`'s own variable instead (out of `ps`), with the
/// same outcome as the flag — a typed error for a bad one, never the password — and a
/// flag given wins over its variable.
#[test]
fn compare_takes_each_url_flag_from_its_own_environment_variable() {
    let base = TINY_RUN;
    let down_mysql = "mysql://root:env-secret@127.0.0.1:1/test";
    let down_postgres = "postgres://postgres:env-secret@127.0.0.1:1/test";
    for (flag, var, value, extra, code) in [
        // Not a data store: bad usage, as the flag.
        (
            "--data",
            "TURNSTILE_COMPARE_DATA",
            "ftp://u:env-secret@x",
            &["--strategies", "mutex"][..],
            2,
        ),
        // A data server that is down: inconclusive at its floor.
        (
            "--data",
            "TURNSTILE_COMPARE_DATA",
            down_postgres,
            &["--strategies", "mutex"],
            3,
        ),
        // A Redis that is down: its floor is not measured, with a note, and its locks,
        // which join the list, are inconclusive.
        (
            "--redis",
            "TURNSTILE_COMPARE_REDIS",
            "redis://:env-secret@127.0.0.1:1",
            &["--strategies", "mutex"],
            3,
        ),
        // Servers whose locks join the default strategies, and are out of reach.
        ("--mysql", "TURNSTILE_COMPARE_MYSQL", down_mysql, &[], 3),
        (
            "--postgres",
            "TURNSTILE_COMPARE_POSTGRES",
            down_postgres,
            &[],
            3,
        ),
        // A list split at commas, as the flag's.
        (
            "--strategies",
            "TURNSTILE_COMPARE_STRATEGIES",
            "mutex,nope",
            &[],
            2,
        ),
    ] {
        let (by_flag, flag_err) = status(turnstile().args(base).args(extra).args([flag, value]));
        let (by_env, env_err) = status(turnstile().args(base).args(extra).env(var, value));
        assert_eq!(by_flag, Some(code), "{flag} {value}: {flag_err}");
        assert_eq!(by_env, by_flag, "{var}={value}: {env_err}");
        assert!(
            !env_err.is_empty() && !env_err.contains("panicked"),
            "{env_err}"
        );
        assert!(
            !env_err.contains("env-secret"),
            "the password shows: {env_err}"
        );
        // The same notes and errors (run times and table prefixes aside).
        let gist = |err: &str| -> Vec<String> {
            err.lines()
                .filter(|l| {
                    l.contains("127.0.0.1:1") || l.contains("error") || l.contains("unknown")
                })
                .map(|l| l.split(" ×").next().unwrap_or(l).to_owned())
                .collect()
        };
        assert!(!gist(&env_err).is_empty(), "{var}: {env_err}");
        // A value refused as it is parsed names where it came from.
        let from = format!(" (from {var})");
        if flag == "--data" && code == 2 {
            assert!(env_err.contains(&from), "{env_err}");
        }
        assert!(!flag_err.contains("(from "), "{flag_err}");
        assert_eq!(gist(&env_err.replace(&from, "")), gist(&flag_err), "{var}");
    }
    // The help names every variable, and never shows a value.
    let mut help = turnstile();
    help.args(["compare", "--help"]);
    for var in COMPARE_ENV {
        help.env(var, "redis://:env-secret@127.0.0.1:1");
    }
    let help = String::from_utf8(help.output().unwrap().stdout).unwrap();
    cli_support::assert_help_names_env(&help, &COMPARE_ENV);
    // The flag wins: the variable's store is never opened.
    let (code, err) = status(
        turnstile()
            .args(base)
            .args(["--strategies", "mutex", "--data", "sqlite"])
            .env("TURNSTILE_COMPARE_DATA", down_postgres),
    );
    assert_eq!(code, Some(0), "{err}");
}

/// The test suite's server variables (`scripts/services` exports them) are not
/// `compare`'s: a shell set up for the tests runs the embedded comparison it asks for,
/// adding no server (these point at nothing, so a server taken from them would fail).
#[test]
fn compare_ignores_the_test_suites_server_variables() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("report.json");
    let output = turnstile()
        .args(TINY_RUN)
        .arg("--json")
        .arg(&json)
        .env("TURNSTILE_REDIS_URL", "redis://127.0.0.1:1")
        .env("TURNSTILE_MYSQL_URL", "mysql://root@127.0.0.1:1/test")
        .env(
            "TURNSTILE_POSTGRES_URL",
            "postgres://postgres@127.0.0.1:1/test",
        )
        .env("TURNSTILE_DATA_URL", "postgres://postgres@127.0.0.1:1/test")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("127.0.0.1:1"), "{stderr}");
    let report = report(&json);
    assert_eq!(report["data"], "sqlite", "{report}");
    let strategies: Vec<&str> = report["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["strategy"].as_str().unwrap())
        .collect();
    assert!(
        strategies.iter().all(|s| !s.contains("://")),
        "{strategies:?}"
    );
    let floors: Vec<&str> = report["floors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["kind"].as_str().unwrap())
        .collect();
    assert_eq!(floors, ["sqlite_commit_1row"], "{report}");
}

/// Runs `command` with its output in files, for at most `limit`: its exit code, stdout and
/// stderr. A command still running then is killed and the test fails: the point is that
/// it stopped before its first long setting.
fn within(command: &mut Command, limit: std::time::Duration) -> (Option<i32>, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let (out, err) = (dir.path().join("out"), dir.path().join("err"));
    let mut child = command
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "still running after {limit:?}: {}",
                std::fs::read_to_string(&err).unwrap()
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    (
        status.code(),
        std::fs::read_to_string(&out).unwrap(),
        std::fs::read_to_string(&err).unwrap(),
    )
}

/// Every setting and output path is checked before anything runs: a bad one is bad usage
/// (exit 2) at once, naming it, with nothing measured — here the first setting alone
/// would run for minutes.
#[test]
fn compare_refuses_a_bad_setting_or_output_before_the_first_run() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing-dir").join("report.json");
    let cases: [(&[&str], &str); 5] = [
        (&["--strategies", "mutex", "--threads", "1,300"], "300"),
        // Not --quick: file-lock spans processes, so --procs makes settings.
        (&["--strategies", "file-lock", "--procs", "65"], "65"),
        (
            &["--strategies", "mutex,redis://127.0.0.1:1?ttl_ms=0"],
            "redis://127.0.0.1:1",
        ),
        (
            &["--strategies", "mutex", "--json", missing.to_str().unwrap()],
            "--json",
        ),
        (
            &[
                "--strategies",
                "mutex",
                "--svg",
                dir.path().to_str().unwrap(),
            ],
            "--svg",
        ),
    ];
    for (args, named) in cases {
        let (code, out, err) = within(
            turnstile()
                .args(["compare", "--no-redis", "--ops", "10000000"])
                .args(args),
            std::time::Duration::from_secs(30),
        );
        assert_eq!(code, Some(2), "{args:?}: {out}{err}");
        assert!(out.is_empty(), "{args:?}: nothing ran: {out}");
        assert!(err.contains(named), "{args:?}: {err}");
    }
    assert!(!missing.exists());
    // No ops at all is refused as `check` refuses it.
    let (code, err) =
        status(
            turnstile()
                .args(TINY_RUN)
                .args(["--ops", "0", "--strategies", "mutex"]),
        );
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--ops"), "{err}");
}

/// A value given twice in a list is one setting, measured once.
#[test]
fn compare_measures_a_repeated_setting_once() {
    let results = quick_results(&[
        "--ops",
        "50",
        "--strategies",
        "mutex,queue,mutex",
        "--threads",
        "1,2,1",
        "--sync",
        "normal,normal",
    ]);
    let settings: Vec<String> = results
        .iter()
        .map(|r| format!("{} {}", r["strategy"], r["threads"]))
        .collect();
    assert_eq!(
        settings,
        ["\"mutex\" 1", "\"mutex\" 2", "\"queue\" 1", "\"queue\" 2"],
        "{results:?}"
    );
}

/// On a workload whose state lies outside the data (`file_store`'s file, `notify_once`'s
/// effects), a strategy that does not exclude (`optimistic`) cannot protect it: the
/// default list skips it with a note (on stderr, and under the table), as the benchmarks
/// do, and the others pass.
#[cfg(feature = "optimistic")]
#[test]
fn compare_skips_what_cannot_protect_state_outside_the_data() {
    let (stdout, stderr) = outputs_of_success(
        turnstile()
            .args(["compare", "--quick", "--no-redis", "--ops", "100"])
            .args(["--threads", "2", "--workload", "file_store"]),
    );
    assert!(
        stderr.contains("skipped") && stderr.contains("optimistic"),
        "{stderr}"
    );
    // In no row of the table; named only by the note under it.
    let (rows, notes): (Vec<&str>, Vec<&str>) =
        stdout.lines().partition(|l| !l.starts_with("note: "));
    assert!(rows.iter().all(|l| !l.contains("optimistic")), "{stdout}");
    assert!(
        notes
            .iter()
            .any(|n| n.starts_with("note: skipped") && n.ends_with(": optimistic")),
        "{stdout}"
    );
    assert!(stdout.contains("mutex"), "{stdout}");
}

/// A negative control that cannot run (its Redis is down) claims nothing, so it neither
/// makes the comparison inconclusive nor goes unsaid: it is a note under the table and in
/// the JSON's `notes`.
#[cfg(feature = "redis")]
#[test]
fn a_control_that_cannot_run_is_a_note_not_an_inconclusive_setting() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("report.json");
    let control = "redis-nofence://127.0.0.1:1/0?ttl_ms=500";
    let output = turnstile()
        .args(TINY_RUN)
        .args(["--strategies", &format!("mutex,{control}")])
        .arg("--json")
        .arg(&json)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert_eq!(
        output.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let note = format!("note: control {control} ×1 threads ×1 procs, sync=normal did not run: ");
    assert!(stdout.contains(&note), "{stdout}");
    let report = report(&json);
    assert_eq!(report["inconclusive"], serde_json::json!([]), "{report}");
    let notes = report["notes"].as_array().unwrap();
    assert!(
        notes
            .iter()
            .any(|n| n.as_str().unwrap().starts_with(&note["note: ".len()..])),
        "{report}"
    );
}

/// A setting that ended without a verdict is in the JSON report (`inconclusive`, with
/// why; `violations` likewise), said once under the table, and `--from-json` exits as
/// the run did.
#[test]
fn compare_json_keeps_what_did_not_pass_and_from_json_exits_as_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("report.json");
    let output = turnstile()
        .args(TINY_RUN)
        .args(["--strategies", "mutex,redis://127.0.0.1:1"])
        .arg("--json")
        .arg(&json)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert_eq!(output.status.code(), Some(3), "{stdout}");
    let line = stdout
        .lines()
        .find(|l| l.starts_with("inconclusive: "))
        .unwrap_or_else(|| panic!("no inconclusive line:\n{stdout}"));
    assert!(
        line.starts_with("inconclusive: redis://127.0.0.1:1 ×1 threads ×1 procs, sync=normal: "),
        "{line}"
    );
    assert_eq!(line.matches("inconclusive").count(), 1, "{line}");
    let report = report(&json);
    assert_eq!(report["violations"], serde_json::json!([]), "{report}");
    let inconclusive = report["inconclusive"].as_array().unwrap();
    assert_eq!(inconclusive.len(), 1, "{report}");
    assert_eq!(inconclusive[0]["strategy"], "redis://127.0.0.1:1");
    assert_eq!(inconclusive[0]["threads"], 1);
    assert_eq!(inconclusive[0]["procs"], 1);
    assert_eq!(inconclusive[0]["sync"], "normal");
    let reason = inconclusive[0]["reason"].as_str().unwrap();
    assert!(reason.starts_with("backend unavailable: "), "{reason}");
    assert_eq!(reason.matches("refused").count(), 1, "{reason}");

    let from_json = |path: &std::path::Path| {
        let output = turnstile()
            .args(["compare", "--from-json"])
            .arg(path)
            .output()
            .unwrap();
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
        )
    };
    let (code, again) = from_json(&json);
    assert_eq!(code, Some(3), "{again}");
    assert!(again.contains(line), "{again}");
    // The same setting as a violation: 1.
    let mut violated = report.clone();
    violated["violations"] = violated["inconclusive"].take();
    violated["inconclusive"] = serde_json::json!([]);
    let path = dir.path().join("violated.json");
    std::fs::write(&path, violated.to_string()).unwrap();
    let (code, again) = from_json(&path);
    assert_eq!(code, Some(1), "{again}");
    assert!(
        again.contains("VIOLATION: redis://127.0.0.1:1 ×1"),
        "{again}"
    );
    // A report of an older version has neither list, nor a record's `verdict`: a record
    // that claims safety and was not safe is a violation.
    let mut older = report.clone();
    let object = older.as_object_mut().unwrap();
    object.remove("violations");
    object.remove("inconclusive");
    older["results"][0]
        .as_object_mut()
        .unwrap()
        .remove("verdict");
    older["results"][0]["safe"] = serde_json::json!(false);
    let path = dir.path().join("older.json");
    std::fs::write(&path, older.to_string()).unwrap();
    assert_eq!(from_json(&path).0, Some(1));
}

/// An output that fails only after the run (`/dev/full` opens, and refuses every write)
/// is a note naming it, under the printed table; the comparison's own exit code wins
/// over it (3 here), and a comparison that passed exits 2 (its report is missing).
#[test]
fn compare_output_that_fails_after_the_run_keeps_the_comparisons_exit_code() {
    if !std::path::Path::new("/dev/full").exists() {
        eprintln!("no /dev/full here: skipped");
        return;
    }
    for (strategies, code) in [("mutex,redis://127.0.0.1:1", 3), ("mutex", 2)] {
        let output = turnstile()
            .args(TINY_RUN)
            .args(["--strategies", strategies, "--json", "/dev/full"])
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(code), "{strategies}: {stderr}");
        assert!(stdout.contains("mutex"), "the table: {stdout}");
        assert!(stderr.contains("/dev/full"), "{stderr}");
    }
}

/// A comparison stopped by SIGTERM or SIGINT stops its private `redis-server` first (it
/// would outlive it), and exits as the signal would (128 + its number). Needs
/// `redis-server` on `PATH`.
#[test]
fn compare_stopped_by_a_signal_stops_its_private_redis() {
    use rustix::process::{Pid, Signal, kill_process};
    use std::time::{Duration, Instant};

    // `scripts/test` installs redis-server: without it this test fails, never skips.
    std::process::Command::new("redis-server")
        .arg("--version")
        .output()
        .expect("redis-server must be installed (scripts/services installs it)");
    for (signal, code) in [(Signal::TERM, 143), (Signal::INT, 130)] {
        // The default strategies, a private Redis among them; the first setting alone
        // would run for minutes.
        let mut child = turnstile()
            .args(["compare", "--quick", "--threads", "1", "--ops", "10000000"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let started = Instant::now();
        let redis = loop {
            if let Some(&pid) = cli_support::children_named(child.id(), "redis-server").first() {
                break pid;
            }
            if started.elapsed() > Duration::from_secs(30) || child.try_wait().unwrap().is_some() {
                let _ = child.kill();
                panic!("no private redis-server started");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        // Past its start: well into the comparison.
        std::thread::sleep(Duration::from_millis(500));
        kill_process(Pid::from_raw(child.id() as i32).unwrap(), signal).unwrap();
        let status = exit_within(&mut child, started, &format!("{signal:?}"));
        let deadline = Instant::now() + Duration::from_secs(5);
        while !cli_support::gone(redis) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let survived = !cli_support::gone(redis);
        if survived {
            let _ = kill_process(Pid::from_raw(redis as i32).unwrap(), Signal::KILL);
        }
        assert!(
            !survived,
            "redis-server {redis} outlived compare on {signal:?}"
        );
        assert_eq!(status.code(), Some(code), "{signal:?}: {status}");
    }
}

/// A report written before the `violations` and `inconclusive` lists: `--from-json` exits
/// by the verdicts of a record that claimed safety and was not safe (3 when they were only
/// inconclusive, else 1); the book's own report, which has neither, still loads and exits 0.
#[test]
fn an_older_report_exits_by_its_records_verdicts() {
    let book = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../book/src/benchmarks/compare.json"
    );
    let text = std::fs::read_to_string(book).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let from_json = |report: &serde_json::Value| {
        let path = dir.path().join("report.json");
        std::fs::write(&path, report.to_string()).unwrap();
        turnstile()
            .args(["compare", "--from-json"])
            .arg(&path)
            .output()
            .unwrap()
            .status
            .code()
    };
    let original: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert!(
        original.get("violations").is_none(),
        "the book's report is of the older form"
    );
    assert_eq!(from_json(&original), Some(0));
    for (verdict, code) in [
        ("lost_update: inconclusive (too few acknowledged ops)", 3),
        ("lost_update: VIOLATION (2 increments lost)", 1),
    ] {
        let mut report = original.clone();
        let record = report["results"]
            .as_array_mut()
            .unwrap()
            .iter_mut()
            .find(|r| r["claims_safe"] == true)
            .unwrap();
        record["safe"] = false.into();
        record["verdicts"] = serde_json::json!([verdict]);
        assert_eq!(from_json(&report), Some(code), "{verdict}");
    }
}

/// A `--json` path that is a link to a file not there yet is written through the link.
#[test]
fn a_json_path_linking_to_a_new_file_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("link.json");
    std::os::unix::fs::symlink("target.json", &link).unwrap();
    let output = turnstile()
        .args([
            "compare",
            "--no-redis",
            "--strategies",
            "mutex",
            "--threads",
            "1",
        ])
        .args(["--ops", "20", "--procs", "1", "--sync", "normal", "--json"])
        .arg(&link)
        .output()
        .unwrap();
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(dir.path().join("target.json").is_file());
}

/// A signal the caller set to be ignored (`nohup`, `trap '' HUP`) stays ignored: compare
/// goes on through a SIGHUP, and still stops on a SIGTERM it was not told to ignore.
#[test]
fn compare_keeps_ignoring_a_signal_its_caller_ignored() {
    use rustix::process::{Pid, Signal, kill_process};
    use std::time::{Duration, Instant};

    let mut child = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "trap '' HUP; exec \"{}\" compare --no-redis --strategies mutex --threads 1 --procs 1 --sync normal --ops 10000000",
            env!("CARGO_BIN_EXE_turnstile")
        ))
        .env_remove("TURNSTILE_COMPARE_STRATEGIES")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pid = Pid::from_raw(child.id() as i32).unwrap();
    // Well into the comparison (its handler, if any, in place).
    std::thread::sleep(Duration::from_millis(1000));
    assert!(child.try_wait().unwrap().is_none(), "compare ended early");
    kill_process(pid, Signal::HUP).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let after_hup = child.try_wait().unwrap();
    assert!(
        after_hup.is_none(),
        "a SIGHUP its caller ignored stopped compare: {after_hup:?}"
    );
    kill_process(pid, Signal::TERM).unwrap();
    let status = exit_within(&mut child, Instant::now(), "SIGTERM");
    assert!(
        after_hup.is_none(),
        "a SIGHUP its caller ignored stopped compare: {after_hup:?}"
    );
    assert_eq!(status.code(), Some(143), "{status}");
}

/// Waits for `child` to exit within a minute of `since` (killing it and failing the test
/// otherwise), after it was sent `signal`.
fn exit_within(
    child: &mut std::process::Child,
    since: std::time::Instant,
    signal: &str,
) -> std::process::ExitStatus {
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if since.elapsed() > std::time::Duration::from_secs(60) {
            let _ = child.kill();
            panic!("compare did not stop on {signal}");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// `--strategies` (and its variable) is split at the commas between specs, not at those
/// inside one: a Redlock's hosts, a multi-host PostgreSQL URL, a password with a comma, a
/// lock directory's name. Each list ends in `mutex:x`, which `mutex` refuses (exit 2) once
/// every spec before it was opened (the multi-host PostgreSQL lock is refused itself,
/// quoted whole); split at every comma, the piece after a spec's first
/// comma would be refused first, as an unknown strategy, half a password in its name.
#[test]
fn compare_keeps_the_commas_inside_a_spec() {
    let dir = tempfile::tempdir().unwrap();
    let lock_dir = dir.path().join("a,b");
    for (list, hidden) in [
        ("mysql://u:pa,ss@127.0.0.1:1/db", "ss@"),
        ("mysql://u:pa,,ss@127.0.0.1:1/db", "ss@"),
        ("postgres://u:pa,ss@127.0.0.1:1/db", "ss@"),
        ("queue+mysql://u:pa,queue@127.0.0.1:1/db", "queue@"),
        ("redlock://127.0.0.1:1,127.0.0.1:2,127.0.0.1:3/0", "unknown"),
        (
            "queue+redlock://127.0.0.1:1,127.0.0.1:2,127.0.0.1:3",
            "unknown",
        ),
        // Kept whole, and then refused whole: a lock needs one server.
        ("postgres://127.0.0.1:1,127.0.0.1:2/db", "unknown"),
        (&format!("file-lock:{}", lock_dir.display()), "unknown"),
    ] {
        let refusal = if list.starts_with("postgres://127.0.0.1:1,") {
            "\"postgres://127.0.0.1:1,127.0.0.1:2/db\" lists 2 servers"
        } else {
            "strategy \"mutex\" takes no argument"
        };
        let list = format!("mutex,{list},mutex:x");
        let base = ["compare", "--quick", "--no-redis"];
        let (by_flag, flag_err) = status(turnstile().args(base).args(["--strategies", &list]));
        let (by_env, env_err) = status(
            turnstile()
                .args(base)
                .env("TURNSTILE_COMPARE_STRATEGIES", &list),
        );
        for (code, stderr) in [(by_flag, &flag_err), (by_env, &env_err)] {
            assert_eq!(code, Some(2), "{list}: {stderr}");
            assert!(stderr.contains(refusal), "{list}: {stderr}");
            assert!(
                !stderr.contains("unknown") && !stderr.contains(hidden),
                "{list}: {stderr}"
            );
        }
    }
    assert!(
        lock_dir.is_dir(),
        "the lock directory's name keeps its comma"
    );
    // A list without such commas is split as ever, and a trailing comma is an empty spec.
    let (code, stderr) = status(turnstile().args(["compare", "--strategies", "mutex,nosuch"]));
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("unknown strategy \"nosuch\""), "{stderr}");
    let (code, stderr) = status(turnstile().args(["compare", "--strategies", "mutex,"]));
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("empty strategy spec"), "{stderr}");
}

/// A misspelt strategy name after a spec that may hold commas is refused with the name
/// meant, not joined to that spec: it would have become part of a lock directory, a host
/// list or a password. The message does not quote the piece (it may be a password's).
/// A host so named keeps its place in the list with its port.
#[test]
fn compare_refuses_a_misspelt_name_after_a_spec_with_commas() {
    let dir = tempfile::tempdir().unwrap();
    let lock_dir = dir.path().join("locks");
    for list in [
        format!("file-lock:{},mutx", lock_dir.display()),
        "mysql://u:a,mutx,b@127.0.0.1:1/db".to_owned(),
        "redlock://127.0.0.1:1,127.0.0.1:2,queu".to_owned(),
    ] {
        let (code, stderr) =
            status(turnstile().args(["compare", "--no-redis", "--strategies", &list]));
        assert_eq!(code, Some(2), "{list}: {stderr}");
        assert!(stderr.contains("did you mean"), "{list}: {stderr}");
        assert!(
            !stderr.contains("mutx") && !stderr.contains("queu\""),
            "{list}: {stderr}"
        );
    }
    assert!(
        !dir.path().join("locks,mutx").exists() && !lock_dir.exists(),
        "nothing ran"
    );
    // With its port, a host named like a strategy stays in the list (the list then ends
    // in `mutex:x`, refused once the specs before it were opened).
    let (code, stderr) = status(turnstile().args([
        "compare",
        "--quick",
        "--no-redis",
        "--strategies",
        "redlock://127.0.0.1:1,127.0.0.1:2,mutx:3,mutex:x",
    ]));
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("strategy \"mutex\" takes no argument"),
        "{stderr}"
    );
    // A misspelt name on its own is unknown, and the message says what was meant.
    let (code, stderr) = status(turnstile().args(["compare", "--strategies", "mutex,mutx"]));
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("unknown strategy \"mutx\" (did you mean \"mutex\"?)"),
        "{stderr}"
    );
}

/// An unknown strategy is named by its whole spec, its password hidden.
#[test]
fn compare_names_an_unknown_strategy_without_its_password() {
    let (code, stderr) = status(turnstile().args([
        "compare",
        "--no-redis",
        "--strategies",
        "mutex,nosuch://u:hunter2@h/db",
    ]));
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("unknown strategy \"nosuch://u:***@h/db\""),
        "{stderr}"
    );
    assert!(!stderr.contains("hunter2"), "{stderr}");
}

/// A loop of symbolic links given to `--json` or `--svg` is bad usage, named, not a
/// crash: the check that the path can be written follows links only so far.
#[test]
fn a_loop_of_links_as_an_output_path_is_bad_usage() {
    let dir = tempfile::tempdir().unwrap();
    for path in &cli_support::link_loops(dir.path()) {
        for flag in ["--json", "--svg"] {
            let (code, stderr) = status(
                turnstile()
                    .args(["compare", "--no-redis", "--strategies", "mutex", flag])
                    .arg(path),
            );
            assert_eq!(code, Some(2), "{flag} {}: {stderr}", path.display());
            assert!(
                stderr.contains(flag) && stderr.contains("too many levels of symbolic links"),
                "{stderr}"
            );
        }
    }
}

/// A password parameter whose name is percent-encoded (`pass%77ord`, which the driver
/// decodes and uses) is hidden like `password` in the `data:` line, the strategy names
/// and the JSON report (`TURNSTILE_POSTGRES_URL`; fails when PostgreSQL is down: the
/// trusting test server ignores the password).
#[test]
fn compare_hides_a_password_parameter_with_an_encoded_name() {
    const SECRET: &str = "encoded-name-secret";
    let url = turnstile_harness::conformance::postgres_url();
    let sep = if url.contains('?') { '&' } else { '?' };
    let url = format!("{url}{sep}pass%77ord={SECRET}");
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("report.json");
    let (stdout, stderr) = outputs_of_success(
        turnstile()
            .args(["compare", "--no-redis", "--ops", "20", "--threads", "1"])
            .args(["--strategies", &format!("mutex,{url}"), "--data", &url])
            .arg("--json")
            .arg(&json),
    );
    let text = std::fs::read_to_string(&json).unwrap();
    for shown in [&stdout as &str, &stderr, &text] {
        assert!(!shown.contains(SECRET), "the password shows:\n{shown}");
    }
    assert!(stdout.contains("pass%77ord=***"), "{stdout}");
}

/// A server given beside `--strategies` is included, its lock and the queue over it after
/// the strategies named, unless the list already names a lock on it. The report shows
/// which ran.
#[test]
fn compare_includes_a_server_given_beside_the_strategy_list() {
    use turnstile_harness::conformance::{mysql_url, postgres_url};
    for (flag, url) in [("--mysql", mysql_url()), ("--postgres", postgres_url())] {
        let base = ["--ops", "50", "--threads", "1", "--strategies"];
        let results = quick_results(&[&base[..], &["mutex", flag, &url]].concat());
        let ran: Vec<&str> = results
            .iter()
            .map(|r| r["strategy"].as_str().unwrap())
            .collect();
        assert_eq!(ran.len(), 3, "{flag}: {ran:?}");
        assert_eq!(ran[0], "mutex", "{flag}: {ran:?}");
        assert!(ran[2].starts_with("queue+"), "{flag}: {ran:?}");
        // Named in the list: not added a second time, nor its queue.
        let named = quick_results(&[&base[..], &[&url, flag, &url]].concat());
        assert_eq!(named.len(), 1, "{flag}");
    }
}

/// An empty server URL (a variable exported empty) is bad usage that names the flag, not
/// "an empty strategy spec" the user never typed.
#[test]
fn compare_refuses_an_empty_server_url_naming_its_flag() {
    for flag in ["--redis", "--mysql", "--postgres"] {
        let stderr = refused(&["--strategies", "mutex", flag, " "]);
        assert!(stderr.contains(&format!("{flag} (or its")), "{stderr}");
    }
    let (code, stderr) = status(
        turnstile()
            .args(["compare", "--quick", "--strategies", "mutex"])
            .env("TURNSTILE_COMPARE_MYSQL", ""),
    );
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("--mysql (or its"), "{stderr}");
}

/// A server flag takes its server's URL: another server's, or a strategy's name, would run
/// other strategies than the flag says. Refused, naming the flag, never the password.
#[test]
fn compare_refuses_a_server_flag_given_another_kind_of_url() {
    for (flag, wrong) in [
        ("--redis", "mutex"),
        ("--redis", "http://127.0.0.1:6379"),
        ("--mysql", "redis://:hunter2@127.0.0.1:6379/0"),
        ("--mysql", "postgres://postgres@127.0.0.1:5432/test"),
        ("--postgres", "mysql://root:hunter2@127.0.0.1:3306/test"),
        ("--postgres", "unserialized"),
    ] {
        let stderr = refused(&["--strategies", "mutex", flag, wrong]);
        assert!(stderr.contains(&format!("{flag} (or its")), "{stderr}");
        assert!(stderr.contains("takes a URL starting"), "{stderr}");
        assert!(!stderr.contains("hunter2"), "{stderr}");
    }
}

/// `--from-json` reads a report, not whatever a wrong path holds: a file past any
/// report's size is bad usage, read no further (`/dev/zero` never ends).
#[test]
fn compare_from_json_refuses_what_no_report_is_as_long_as() {
    let (code, stderr) = status(turnstile().args(["compare", "--from-json", "/dev/zero"]));
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("longer than 64 MiB"), "{stderr}");
}

/// Two outputs in one file, or the chart over the report it is drawn from, would lose
/// one: bad usage, before anything runs. Also through another spelling of the path.
#[test]
fn compare_refuses_two_outputs_in_one_file() {
    let dir = tempfile::tempdir().unwrap();
    let same = dir.path().join("same.out");
    let other = dir.path().join(".").join("same.out");
    let (code, stderr) = status(
        turnstile()
            .args(["compare", "--quick", "--no-redis", "--strategies", "mutex"])
            .arg("--json")
            .arg(&same)
            .arg("--svg")
            .arg(&other),
    );
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("--json and --svg name one file"),
        "{stderr}"
    );
    assert!(!same.exists());
    // A report read back keeps its file: the chart goes elsewhere.
    let json = dir.path().join("report.json");
    stdout_of_success(
        turnstile()
            .args(["compare", "--quick", "--no-redis", "--ops", "50"])
            .args(["--threads", "1", "--strategies", "mutex", "--json"])
            .arg(&json),
        "a report: ",
    );
    let saved = std::fs::read(&json).unwrap();
    let (code, stderr) = status(
        turnstile()
            .args(["compare", "--from-json"])
            .arg(&json)
            .arg("--svg")
            .arg(&json),
    );
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("--svg and --from-json name one file"),
        "{stderr}"
    );
    assert_eq!(std::fs::read(&json).unwrap(), saved);
    // Read back, the report shows its floors as the run did.
    let shown = stdout_of_success(
        turnstile().args(["compare", "--from-json"]).arg(&json),
        "read back: ",
    );
    assert!(shown.contains("floor sqlite_commit_1row"), "{shown}");
}

/// `--procs` given with `--quick` is run: `--quick` only changes the defaults.
#[test]
fn compare_quick_runs_the_process_counts_given() {
    let results = quick_results(&[
        "--ops",
        "100",
        "--threads",
        "1",
        "--procs",
        "2",
        "--strategies",
        "file-lock",
    ]);
    let procs: Vec<u64> = results
        .iter()
        .map(|r| r["procs"].as_u64().unwrap())
        .collect();
    assert_eq!(procs, [1, 2]);
}

/// The book's saved report, for `--from-json`.
fn book_report() -> serde_json::Value {
    let book = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../book/src/benchmarks/compare.json"
    );
    serde_json::from_str(&std::fs::read_to_string(book).unwrap()).unwrap()
}

/// `--from-json` runs nothing: an option that sets up a run (`--json` among them, which
/// would write nothing) is refused, naming each, rather than ignored. A variable a shell
/// exported for its runs is not an option given, and stays out of it.
#[test]
fn compare_from_json_refuses_the_options_of_a_run() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("report.json");
    std::fs::write(&path, book_report().to_string()).unwrap();
    let out = dir.path().join("out.json");
    for (args, named) in [
        (
            vec!["--json", out.to_str().unwrap()],
            "--json would be ignored (leave it out)",
        ),
        (
            vec!["--threads", "4", "--quick", "--data=sqlite"],
            "--quick, --threads, --data would be ignored (leave them out)",
        ),
        (vec!["--ops", "10"], "--ops would be ignored"),
        (
            vec!["--strategies", "mutex"],
            "--strategies would be ignored",
        ),
    ] {
        let (code, stderr) = status(
            turnstile()
                .args(["compare", "--from-json"])
                .arg(&path)
                .args(&args),
        );
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains("--from-json prints a saved report and runs nothing")
                && stderr.contains(named),
            "{args:?}: {stderr}"
        );
    }
    assert!(!out.exists());
    let (code, stderr) = status(
        turnstile()
            .args(["compare", "--from-json"])
            .arg(&path)
            .env("TURNSTILE_COMPARE_DATA", "postgres://u@127.0.0.1:1/db")
            .env("TURNSTILE_COMPARE_STRATEGIES", "mutex"),
    );
    assert_eq!(code, Some(0), "{stderr}");
}

/// Options a comparison would ignore are refused before it runs: `--sync` (SQLite's) over
/// a server's data, and `--ops` below a setting's threads × procs (each thread runs at
/// least one op, so it would run more than asked).
#[test]
fn compare_refuses_options_it_would_ignore() {
    let data = turnstile_harness::conformance::postgres_url();
    let stderr = refused(&["--strategies", "mutex", "--data", &data, "--sync", "full"]);
    assert!(
        stderr.contains("--sync is SQLite's setting; the data is in postgres://"),
        "{stderr}"
    );
    let stderr = refused(&[
        "--strategies",
        "mutex,file-lock",
        "--threads",
        "1,4",
        "--procs",
        "3",
        "--ops",
        "5",
    ]);
    assert!(
        stderr.contains("--ops 5 is fewer than the 12 threads of a setting (4 threads × 3 procs)"),
        "{stderr}"
    );
}

/// A hand-edited report read back: a line feed or tab in a name is shown escaped, not
/// splitting the table's row; a 100 KB name is cut; a record whose `safe` and `verdict`
/// disagree is refused as malformed, naming it, instead of exiting 1 with no reason.
#[test]
fn compare_from_json_keeps_rows_whole_and_refuses_a_record_at_odds_with_itself() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("report.json");
    let from_json = |report: &serde_json::Value| {
        std::fs::write(&path, report.to_string()).unwrap();
        let output = turnstile()
            .args(["compare", "--from-json"])
            .arg(&path)
            .output()
            .unwrap();
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let original = book_report();
    let rows = original["results"].as_array().unwrap().len();
    let long = "x".repeat(100_000);
    let mut edited = original.clone();
    edited["results"][0]["strategy"] = "que\nue".into();
    edited["results"][1]["sync"] = "nor\tmal".into();
    edited["results"][2]["strategy"] = long.clone().into();
    let (code, stdout, stderr) = from_json(&edited);
    assert_eq!(code, Some(0), "{stderr}");
    let table: Vec<&str> = stdout
        .lines()
        .take_while(|l| !l.starts_with("floor ") && !l.starts_with("lock cycle "))
        .collect();
    assert_eq!(table.len(), rows + 1, "{stdout}");
    assert!(table[1].starts_with("que\\nue "), "{}", table[1]);
    assert!(table[2].contains(" nor\\tmal "), "{}", table[2]);
    assert!(
        table[3].starts_with(&format!("{}… (100000 characters)", &long[..200])),
        "{}",
        &table[3][..300]
    );

    let mut edited = original.clone();
    edited["results"][4]["safe"] = false.into();
    edited["results"][4]["verdict"] = "pass".into();
    let (code, stdout, stderr) = from_json(&edited);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stdout.is_empty(), "{stdout}");
    let strategy = original["results"][4]["strategy"].as_str().unwrap();
    assert!(
        stderr.contains(&format!(
            "results[4].safe ({strategy} ×{} threads ×{} procs, sync=",
            original["results"][4]["threads"], original["results"][4]["procs"]
        )) && stderr.contains("says \"safe\": false but \"verdict\": \"pass\""),
        "{stderr}"
    );
    // Named with a long name: cut.
    edited["results"][4]["strategy"] = long.into();
    let (code, _, stderr) = from_json(&edited);
    assert_eq!(code, Some(2), "{}", &stderr[..stderr.len().min(1000)]);
    assert!(stderr.len() < 1000, "{} bytes", stderr.len());
    assert!(stderr.contains("… (100000 characters)"), "{stderr}");
}

/// A Redis that accepts and never answers: the floor's note names the server (without
/// its password) and says the PING timed out, rather than the socket's "os error 11".
/// And a `--redis` URL whose database is below 0 is bad usage as it is read.
#[test]
fn compare_names_a_silent_redis_and_says_it_timed_out() {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let url = format!("redis://:hunter2@127.0.0.1:{port}");
    let (code, stderr) = status(
        turnstile()
            .args(["compare", "--strategies", "mutex", "--threads", "1"])
            .args(["--ops", "20", "--procs", "1", "--redis", &url]),
    );
    // The Redis settings are inconclusive: their server does not answer.
    assert_eq!(code, Some(3), "{stderr}");
    let note = stderr
        .lines()
        .find(|l| l.starts_with("note: redis round-trip floor not measured: "))
        .unwrap_or_else(|| panic!("{stderr}"));
    assert!(
        note.contains(&format!("redis://:***@127.0.0.1:{port}: timed out")),
        "{note}"
    );
    assert!(
        !stderr.contains("os error 11") && !stderr.contains("hunter2"),
        "{stderr}"
    );
    drop(silent);

    let stderr = refused(&[
        "--strategies",
        "mutex",
        "--redis",
        "redis://127.0.0.1:6379/-1",
    ]);
    assert!(stderr.contains("database -1 is below 0"), "{stderr}");
    let stderr = refused(&["--strategies", "mutex,redis://127.0.0.1:6379/-1"]);
    assert!(stderr.contains("database -1 is below 0"), "{stderr}");
}
