//! What the CLI's reports say about themselves: `compare`'s JSON keeps what it skipped
//! and every run's seed; a run that ends without a verdict still gives JSON to read;
//! `list` and an unknown strategy's message name every strategy with what it needs; the
//! lock cycle's ratio says it is one of rates; URLs that cannot mean what they say are
//! refused before anything connects.

#[path = "support/cli.rs"]
mod cli_support;

use std::process::Command;

use cli_support::{CHECK_ENV, COMPARE_ENV, EXE, check};
use serde_json::Value;

/// Runs `turnstile ARGS…` without the variables of `check` and `compare` a shell may have
/// exported: its exit code (-1 when killed by a signal), stdout and stderr.
fn turnstile(args: &[&str]) -> (i32, String, String) {
    let mut command = Command::new(EXE);
    for var in COMPARE_ENV.iter().chain(&CHECK_ENV) {
        command.env_remove(var);
    }
    let out = command.args(args).output().expect("turnstile runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The JSON document at `path`.
fn read_json(path: &std::path::Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// `path` as an argument.
fn arg(path: &std::path::Path) -> &str {
    path.to_str().unwrap()
}

/// A strategy asked for that the comparison cannot run is in the JSON report's notes,
/// not only on stderr, and `--from-json` shows it under the table as the run did: over
/// PostgreSQL data (`TURNSTILE_POSTGRES_URL`; fails when it is down), the `queue` that
/// runs over SQLite only; on `notify_once`, `optimistic`, which does not exclude.
#[test]
fn compare_json_notes_what_it_skipped_and_from_json_shows_it() {
    let dir = tempfile::tempdir().unwrap();
    let postgres = turnstile_harness::conformance::postgres_url();
    let mut cases = vec![(
        vec!["--strategies", "queue,mutex", "--data", postgres.as_str()],
        "skipped, they do not run over data in postgres://",
        "queue",
    )];
    if cfg!(feature = "optimistic") {
        cases.push((
            vec![
                "--strategies",
                "optimistic,mutex",
                "--workload",
                "notify_once",
            ],
            "skipped, they do not exclude, so they cannot protect notify_once's state",
            "optimistic",
        ));
    }
    for (i, (args, note, skipped)) in cases.into_iter().enumerate() {
        let json = dir.path().join(format!("report-{i}.json"));
        let base = ["compare", "--quick", "--no-redis", "--threads", "2"];
        let run = [&base[..], &["--ops", "50", "--json", arg(&json)], &args].concat();
        let (code, stdout, stderr) = turnstile(&run);
        assert_eq!(code, 0, "{args:?}: {stdout}{stderr}");
        assert!(stderr.contains(&format!("note: {note}")), "{stderr}");
        let report = read_json(&json);
        let notes: Vec<&str> = report["notes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n.as_str().unwrap())
            .collect();
        let said = notes
            .iter()
            .find(|n| n.starts_with(note))
            .unwrap_or_else(|| panic!("{args:?}: no skip note in {report}"));
        assert!(said.ends_with(&format!(": {skipped}")), "{said}");
        let ran: Vec<&str> = report["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["strategy"].as_str().unwrap())
            .collect();
        assert_eq!(ran, ["mutex"], "{report}");
        // Under the table, in the run and read back alike.
        let line = format!("note: {said}\n");
        assert!(stdout.contains(&line), "{stdout}");
        let (code, again, err) = turnstile(&["compare", "--from-json", arg(&json)]);
        assert_eq!(code, 0, "{err}");
        assert_eq!(again, stdout);
    }
}

/// Every setting of a comparison runs with a seed of its own, recorded with its result
/// below 2⁵³ (which JSON readers holding numbers as doubles read exactly), with the ops it
/// requested: what `check --seed` takes to replay the run's op choices, and reports back.
#[test]
fn compare_json_records_each_runs_seed_for_check_to_replay() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("report.json");
    let (code, out, err) = turnstile(&[
        "compare",
        "--quick",
        "--no-redis",
        "--strategies",
        "mutex,queue",
        "--threads",
        "1,2",
        "--ops",
        "40",
        "--workload",
        "kv",
        "--json",
        arg(&json),
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let report = read_json(&json);
    let results = report["results"].as_array().unwrap();
    assert_eq!(results.len(), 4, "{report}");
    let mut seeds = Vec::new();
    for r in results {
        let seed = r["seed"]
            .as_u64()
            .unwrap_or_else(|| panic!("no seed in {r}"));
        assert!(seed < 1 << 53, "{r}");
        assert_eq!(r["ops_requested"], 40, "{r}");
        seeds.push(seed);
    }
    seeds.sort_unstable();
    seeds.dedup();
    assert_eq!(seeds.len(), 4, "each setting its own seed: {seeds:?}");
    // The command that replays a setting runs with its seed and its ops.
    let r = &results[3];
    let seed = r["seed"].to_string();
    let (threads, ops) = (r["threads"].to_string(), r["ops_requested"].to_string());
    let (code, out, err) = check(&[
        "--strategy",
        r["strategy"].as_str().unwrap(),
        "--workload",
        r["workload"].as_str().unwrap(),
        "--threads",
        &threads,
        "--procs",
        &r["procs"].to_string(),
        "--ops",
        &ops,
        "--sync",
        r["sync"].as_str().unwrap(),
        "--transaction",
        "--seed",
        &seed,
        "--json",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let replay: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(replay["seed"].to_string(), seed, "{replay}");
    assert_eq!(replay["requested"].to_string(), ops, "{replay}");
}

/// A setting that ran and ended without a verdict names its run's seed, in the line
/// under the table and in the JSON's `inconclusive`: here a file lock every stripe of
/// which another process holds, so that the run's first op never starts.
#[test]
fn an_inconclusive_setting_that_ran_names_its_seed() {
    let dir = tempfile::tempdir().unwrap();
    let locks = dir.path().join("locks");
    let _held = cli_support::hold_every_stripe(&locks);
    let json = dir.path().join("report.json");
    let spec = format!("file-lock:{}", locks.display());
    let (code, stdout, stderr) = turnstile(&[
        "compare",
        "--quick",
        "--no-redis",
        "--strategies",
        &spec,
        "--threads",
        "1",
        "--ops",
        "10",
        "--time-limit-s",
        "1",
        "--json",
        arg(&json),
    ]);
    assert_eq!(code, 3, "{stdout}{stderr}");
    let report = read_json(&json);
    let problem = &report["inconclusive"][0];
    let seed = problem["seed"]
        .as_u64()
        .unwrap_or_else(|| panic!("no seed in {report}"));
    assert!(seed < 1 << 53, "{problem}");
    let line = format!("inconclusive: {spec} ×1 threads ×1 procs, sync=normal, seed {seed}: ");
    assert!(stdout.contains(&line), "{stdout}");
    let (code, again, err) = turnstile(&["compare", "--from-json", arg(&json)]);
    assert_eq!(code, 3, "{err}");
    assert!(again.contains(&line), "{again}");
}

/// `list` gives `pg-xact` its own line, saying what it needs, and an unknown strategy's
/// message, which lists those over the data, names those over other data too.
#[cfg(feature = "postgres")]
#[test]
fn list_and_an_unknown_strategy_name_pg_xact_with_what_it_needs() {
    let (code, list, err) = turnstile(&["list"]);
    assert_eq!(code, 0, "{err}");
    let line = list
        .lines()
        .find(|l| l.starts_with("pg-xact "))
        .unwrap_or_else(|| panic!("no line of its own for pg-xact:\n{list}"));
    assert!(
        line.contains("transaction advisory locks")
            && line.ends_with("[needs --data postgres://…]"),
        "{line}"
    );
    let (code, out, err) = check(&["--strategy", "no-such", "--workload", "counter"]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.contains("; known: mutex"), "{err}");
    assert!(err.contains("; with --data postgres://…: pg-xact"), "{err}");
    // Over PostgreSQL data, those that run only over SQLite.
    let postgres = turnstile_harness::conformance::postgres_url();
    let (code, out, err) = check(&[
        "--strategy",
        "no-such",
        "--workload",
        "counter",
        "--data",
        &postgres,
    ]);
    assert_eq!(code, 2, "{out}{err}");
    let known = err.split("; known: ").nth(1).unwrap_or_default();
    let (here, elsewhere) = known
        .split_once("; with --data sqlite: ")
        .unwrap_or_default();
    assert!(
        here.contains("pg-xact") && !here.contains("file-lock"),
        "{err}"
    );
    assert!(
        elsewhere.contains("file-lock") && !elsewhere.contains("pg-xact"),
        "{err}"
    );
}

/// The lock cycle's ratio to its floor is one of rates, and its line says so: the µs
/// beside it are medians, which may say the cycle is the slower when its rate is higher.
/// The book's saved report has two cycles.
#[test]
fn the_lock_cycle_line_says_its_ratio_is_of_rates() {
    let book = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../book/src/benchmarks/compare.json"
    );
    let report: Value = serde_json::from_str(&std::fs::read_to_string(book).unwrap()).unwrap();
    let (code, stdout, err) = turnstile(&["compare", "--from-json", book]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("lock cycle "))
        .collect();
    let cycles = report["lock_cycles"].as_array().unwrap();
    assert_eq!(lines.len(), cycles.len(), "{stdout}");
    for (line, cycle) in lines.iter().zip(cycles) {
        let ratio = cycle["floor_ratio"].as_f64().unwrap();
        let said = format!(
            "cycles/s on one thread; its rate {ratio:.2}× the {} floor's)",
            cycle["floor"].as_str().unwrap()
        );
        assert!(line.ends_with(&said), "{line}");
    }
}

/// A `%` that starts no percent-escape in a URL's user info (or a password parameter) is
/// bad usage as the URL is read, naming the part and never showing the password, for
/// every kind of URL: lock specs (`redis`, `rediss`, `redlock`, `mysql`, `postgres`, and
/// the queue over one), `--data`, and `compare`'s server flags. Nothing is connected:
/// the servers named need not be there.
#[test]
fn a_stray_percent_in_user_info_is_bad_usage_that_hides_the_password() {
    const SECRET: &str = "sec%zzret";
    let strategies = [
        format!("redis://u:{SECRET}@127.0.0.1:6379"),
        format!("rediss://:{SECRET}@127.0.0.1:6380/0"),
        format!("redlock://:{SECRET}@127.0.0.1:1,127.0.0.1:2,127.0.0.1:3/0"),
        format!("queue+redis://:{SECRET}@127.0.0.1:6379"),
        format!("redis+unix:///tmp/r.sock?pass={SECRET}"),
        format!("mysql://root:{SECRET}@127.0.0.1:3306/test"),
        format!("postgres://postgres:{SECRET}@127.0.0.1:5432/test"),
        format!("postgres://postgres@127.0.0.1:5432/test?password={SECRET}"),
    ];
    let refused = |code: i32, out: &str, err: &str, what: &str| {
        assert_eq!(code, 2, "{what}: {out}{err}");
        assert!(
            err.contains("holds a `%` that starts no percent-escape") && err.contains("%25"),
            "{what}: {err}"
        );
        assert!(
            !err.contains("zzret") && !out.contains("zzret"),
            "{what}: {out}{err}"
        );
    };
    for spec in &strategies {
        let (code, out, err) = check(&["--strategy", spec, "--workload", "counter"]);
        refused(code, &out, &err, spec);
    }
    for data in [
        format!("mysql://root:{SECRET}@127.0.0.1:3306/test"),
        format!("postgres://postgres:{SECRET}@127.0.0.1:5432/test"),
    ] {
        let (code, out, err) = check(&[
            "--strategy",
            "mutex",
            "--workload",
            "counter",
            "--data",
            &data,
        ]);
        refused(code, &out, &err, &data);
        let (code, out, err) = turnstile(&["compare", "--no-redis", "--data", &data]);
        refused(code, &out, &err, &data);
    }
    for (flag, url) in [
        ("--redis", format!("redis://:{SECRET}@127.0.0.1:6379")),
        (
            "--mysql",
            format!("mysql://root:{SECRET}@127.0.0.1:3306/test"),
        ),
        (
            "--postgres",
            format!("postgres://u:{SECRET}@127.0.0.1:5432/test"),
        ),
    ] {
        let (code, out, err) = turnstile(&[
            "compare",
            "--quick",
            "--no-redis",
            "--strategies",
            "mutex",
            flag,
            &url,
        ]);
        refused(code, &out, &err, flag);
    }
    // Escaped as `%25`, the same password is read.
    let (code, out, err) = check(&[
        "--strategy",
        "mysql://root:sec%25zzret@127.0.0.1:1/test",
        "--workload",
        "counter",
        "--ops",
        "10",
    ]);
    assert_eq!(code, 3, "a server out of reach, not bad usage: {out}{err}");
}

/// MySQL has no default database: a `--data mysql://` URL without one is bad usage as it
/// is read (exit 2, saying a database name is needed), not a run that ends inconclusive
/// on the server's `No database selected`.
#[cfg(feature = "mysql")]
#[test]
fn mysql_data_without_a_database_is_bad_usage() {
    for url in [
        "mysql://root@127.0.0.1:3306/",
        "mysql://root@127.0.0.1:3306",
        "mysql://root:hunter2@127.0.0.1:3306",
    ] {
        let (code, out, err) = check(&[
            "--strategy",
            "mutex",
            "--workload",
            "counter",
            "--data",
            url,
        ]);
        assert_eq!(code, 2, "{url}: {out}{err}");
        assert!(err.contains("needs a database name"), "{url}: {err}");
        assert!(!err.contains("hunter2"), "{err}");
        let (code, out, err) = turnstile(&["compare", "--no-redis", "--data", url]);
        assert_eq!(code, 2, "{url}: {out}{err}");
        assert!(err.contains("needs a database name"), "{url}: {err}");
    }
}

/// `check --json` of a run that ends without a verdict prints one JSON object on stdout
/// all the same, with the exit code, the kind of error and its message (the password
/// hidden, as in the message on stderr): a backend out of reach, a run past its time
/// limit, bad usage.
#[test]
fn check_json_prints_why_a_run_has_no_verdict() {
    let no_verdict = |args: &[&str], exit: i64, kind: &str| -> String {
        let (code, out, err) = check(&[args, &["--json"][..]].concat());
        assert_eq!(i64::from(code), exit, "{args:?}: {out}{err}");
        let v: Value = serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("{args:?}: stdout is no JSON ({e}): {out:?}{err}"));
        assert_eq!(v["verdict"], "no-verdict", "{v}");
        assert_eq!(v["exit"], exit, "{v}");
        assert_eq!(v["error"]["kind"], kind, "{v}");
        let message = v["error"]["message"].as_str().unwrap().to_owned();
        // The words of the message on stderr.
        assert!(err.contains(&message), "{message}\n{err}");
        message
    };
    #[cfg(feature = "redis")]
    {
        let message = no_verdict(
            &[
                "--strategy",
                "redis://:hunter2@127.0.0.1:1",
                "--workload",
                "counter",
                "--ops",
                "10",
            ],
            3,
            "unavailable",
        );
        assert!(
            message.starts_with("backend unavailable: ") && message.contains("127.0.0.1:1"),
            "{message}"
        );
        assert!(!message.contains("hunter2"), "{message}");
    }
    let message = no_verdict(
        &[
            "--strategy",
            "file-lock",
            "--workload",
            "counter",
            "--procs",
            "2",
            "--threads",
            "1",
            "--ops",
            "10000000",
            "--time-limit-s",
            "1",
        ],
        3,
        "timed-out",
    );
    assert!(message.contains("time limit of 1s"), "{message}");
    let message = no_verdict(
        &["--strategy", "no-such", "--workload", "counter"],
        2,
        "usage",
    );
    assert!(
        message.starts_with("unknown strategy \"no-such\""),
        "{message}"
    );
    let message = no_verdict(
        &["--strategy", "mutex", "--workload", "bank", "--keys", "1"],
        2,
        "usage",
    );
    assert!(message.contains("--keys must be at least 2"), "{message}");
}

/// A comparison that ends without a report writes why to `--json` in its place (not
/// leaving an earlier comparison's report there to be read as this one's), and
/// `--from-json` of it says so again and exits as the comparison did; a hand-edited one
/// with an exit code no such comparison has is refused.
#[test]
fn compare_json_of_a_comparison_without_a_report_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("report.json");
    std::fs::write(&json, "{\"an earlier report\": true}").unwrap();
    let down = "postgres://postgres:hunter2@127.0.0.1:1/test";
    let (code, stdout, stderr) = turnstile(&[
        "compare",
        "--quick",
        "--no-redis",
        "--strategies",
        "mutex",
        "--data",
        down,
        "--json",
        arg(&json),
    ]);
    assert_eq!(code, 3, "{stdout}{stderr}");
    let text = std::fs::read_to_string(&json).unwrap();
    assert!(!text.contains("hunter2"), "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["verdict"], "no-verdict", "{v}");
    assert_eq!(v["exit"], 3, "{v}");
    assert_eq!(v["error"]["kind"], "unavailable", "{v}");
    let message = v["error"]["message"].as_str().unwrap();
    assert!(message.contains("127.0.0.1:1"), "{message}");
    assert!(stderr.contains(message), "{stderr}");
    let (code, out, err) = turnstile(&["compare", "--from-json", arg(&json)]);
    assert_eq!(code, 3, "{out}{err}");
    assert!(
        err.contains("holds no report: the comparison ended without a verdict (exit 3)")
            && err.contains(message),
        "{err}"
    );
    let mut edited = v.clone();
    edited["exit"] = 0.into();
    std::fs::write(&json, edited.to_string()).unwrap();
    let (code, _, err) = turnstile(&["compare", "--from-json", arg(&json)]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("\"exit\" is 0"), "{err}");
}
