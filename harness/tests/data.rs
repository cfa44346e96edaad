//! Data on a server (`--data postgres://…`, `--data mysql://…`), against
//! `TURNSTILE_POSTGRES_URL` and `TURNSTILE_MYSQL_URL` (fails when a server is down): runs
//! keep their data in tables of their own, drop them at the end (a failed run kept with
//! `--keep` leaves them to look at), never meet another run's, and the checkers catch
//! the unserialized control there as on SQLite. Bad `--data` gets a typed error through
//! the CLI: bad usage (exit 2) or unavailable (exit 3), never a panic or a hang.
#![cfg(all(feature = "postgres", feature = "mysql"))]

use std::process::Command;
use std::time::Duration;

use turnstile_harness::check::Verdict;
use turnstile_harness::conformance::{mysql_data, mysql_url, postgres_data, postgres_url};
use turnstile_harness::{DataSpec, RunConfig, RunReport, Workload, registry, report, run};

#[path = "support/cli.rs"]
mod cli_support;

use cli_support::{EXE, check};

/// The run's table prefix, from its data description (`…, tables ts_…_*`).
fn prefix(report: &RunReport) -> String {
    let (_, tables) = report
        .data
        .rsplit_once(", tables ")
        .unwrap_or_else(|| panic!("no tables in {:?}", report.data));
    tables.trim_end_matches('*').to_owned()
}

/// The tables in the test database whose names start with `prefix`.
fn tables_with(data: &DataSpec, prefix: &str) -> Vec<String> {
    let pattern = format!("{prefix}%");
    match data {
        DataSpec::Postgres(url) => {
            let mut client = postgres::Client::connect(url, postgres::NoTls).unwrap();
            client
                .query(
                    "SELECT tablename FROM pg_tables WHERE tablename LIKE $1",
                    &[&pattern],
                )
                .unwrap()
                .iter()
                .map(|r| r.get(0))
                .collect()
        }
        DataSpec::MySql(url) => {
            use mysql::prelude::Queryable;
            let mut conn = mysql::Conn::new(mysql::Opts::from_url(url).unwrap()).unwrap();
            conn.exec(
                "SELECT table_name FROM information_schema.tables
                 WHERE table_schema = DATABASE() AND table_name LIKE ?",
                (pattern,),
            )
            .unwrap()
        }
        other => panic!("not a server: {other}"),
    }
}

fn drop_tables(data: &DataSpec, tables: &[String]) {
    for table in tables {
        // Names read back from the catalog, with the prefix this test checked.
        let sql = format!("DROP TABLE IF EXISTS {table}");
        match data {
            DataSpec::Postgres(url) => {
                let mut client = postgres::Client::connect(url, postgres::NoTls).unwrap();
                client.batch_execute(&sql).unwrap();
            }
            DataSpec::MySql(url) => {
                use mysql::prelude::Queryable;
                let mut conn = mysql::Conn::new(mysql::Opts::from_url(url).unwrap()).unwrap();
                conn.query_drop(sql).unwrap();
            }
            _ => {}
        }
    }
}

/// Two runs at once on the same database pass (their tables are apart) and leave no
/// table behind; an unserialized run kept with `--keep` is caught and keeps its tables.
fn tables_are_the_runs_own(data: DataSpec) {
    let runs: Vec<RunReport> = std::thread::scope(|s| {
        let handles: Vec<_> = [Workload::Counter, Workload::Bank]
            .into_iter()
            .map(|workload| {
                let config = RunConfig::new("mutex", workload)
                    .data(data.clone())
                    .threads(4)
                    .ops(200);
                s.spawn(move || run(&config, &registry()).expect("the run produces a verdict"))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for report in &runs {
        assert_eq!(report.verdict, Verdict::Pass, "{}", report::text(report));
        let prefix = prefix(report);
        assert!(prefix.starts_with("ts_"), "{prefix}");
        assert_eq!(tables_with(&data, &prefix), Vec::<String>::new());
    }
    assert_ne!(prefix(&runs[0]), prefix(&runs[1]));

    let keep = tempfile::tempdir().unwrap();
    let report = run(
        &RunConfig::new("unserialized", Workload::Counter)
            .data(data.clone())
            .threads(6)
            .ops(300)
            .rendezvous(Duration::from_millis(1))
            .keep(keep.path()),
        &registry(),
    )
    .expect("the run produces a verdict");
    let text = report::text(&report);
    assert_eq!(report.verdict, Verdict::Violation, "not caught:\n{text}");
    assert_eq!(
        report.check("lost_update").map(|c| c.verdict),
        Some(Verdict::Violation),
        "{text}"
    );
    assert!(text.contains("tables are kept"), "{text}");
    let kept = tables_with(&data, &prefix(&report));
    assert!(
        kept.iter().any(|t| t.ends_with("counter")),
        "{kept:?}\n{text}"
    );
    drop_tables(&data, &kept);
}

#[test]
fn postgres_tables_are_the_runs_own() {
    tables_are_the_runs_own(postgres_data());
}

#[test]
fn mysql_tables_are_the_runs_own() {
    tables_are_the_runs_own(mysql_data());
}

/// Every workload's final state reads back from the server: the unserialized control is
/// caught by each workload's own checker in processes (a rendezvous makes sections meet).
#[test]
fn every_workload_catches_the_unserialized_control_on_server_data() {
    for data in [postgres_data(), mysql_data()] {
        for workload in [Workload::Counter, Workload::Bank, Workload::Kv] {
            let report = run(
                &RunConfig::new("unserialized", workload)
                    .data(data.clone())
                    .threads(2)
                    .procs(2)
                    .ops(80)
                    .keys(1)
                    .rendezvous(Duration::from_millis(3))
                    .worker_exe(EXE),
                &registry(),
            )
            .expect("the run produces a verdict");
            let checker = turnstile_harness::check::invariant(workload);
            assert_eq!(
                report.check(checker).map(|c| c.verdict),
                Some(Verdict::Violation),
                "{workload} over {data}:\n{}",
                report::text(&report)
            );
        }
    }
}

#[test]
fn the_cli_runs_on_server_data() {
    for url in [postgres_url(), mysql_url()] {
        let (code, out, err) = check(&[
            "--strategy",
            "mutex",
            "--workload",
            "kv",
            "--ops",
            "200",
            "--data",
            &url,
            "--json",
        ]);
        assert_eq!(code, 0, "{url}: {out}{err}");
        let v: serde_json::Value = serde_json::from_str(&out).expect("valid JSON");
        assert_eq!(v["verdict"], "pass");
        let data = v["data"].as_str().unwrap();
        assert!(
            data.contains("127.0.0.1") && data.contains("tables ts_"),
            "{data}"
        );
    }
}

#[test]
fn bad_data_is_bad_usage() {
    let pg = postgres_url();
    for args in [
        &["--data", "redis://127.0.0.1:6379"][..],
        &["--data", "ftp://user:data-secret@127.0.0.1/x"],
        &["--data", "nosuch"],
        &["--data", ""],
        &["--data", "postgres://postgres@127.0.0.1:notaport/test"],
        &[
            "--data",
            "mysql://root@127.0.0.1:3306/test?no_such_option=1",
        ],
        &["--data", &pg, "--db", "/tmp/never-created.db"],
        // Strategies over SQLite connections have no form over server data.
        &["--data", &pg, "--strategy", "busy-timeout"],
    ] {
        let mut all = vec!["--workload", "counter", "--ops", "20"];
        if !args.contains(&"--strategy") {
            all.extend(["--strategy", "mutex"]);
        }
        all.extend(args);
        let (code, out, err) = check(&all);
        assert_eq!(code, 2, "{args:?}: {out}{err}");
        assert!(!err.trim().is_empty(), "{args:?}: says why");
        assert!(!err.contains("panicked"), "{err}");
        assert!(!err.contains("data-secret"), "the password shows: {err}");
    }
}

#[test]
fn a_server_out_of_reach_is_inconclusive_at_once() {
    for url in [
        "postgres://postgres@127.0.0.1:1/test".to_owned(),
        "mysql://root@127.0.0.1:1/test".to_owned(),
        // A wrong password: the server answers, and refuses.
        mysql_url().replacen("root@", "root:wrong-password@", 1),
    ] {
        for strategy in ["mutex", "optimistic"] {
            let (code, out, err) = check(&[
                "--strategy",
                strategy,
                "--workload",
                "counter",
                "--ops",
                "20",
                "--data",
                &url,
            ]);
            assert_eq!(code, 3, "{url} {strategy}: {out}{err}");
            assert!(err.contains("unavailable"), "{err}");
            assert!(!err.contains("wrong-password"), "no password in {err}");
        }
    }
}

#[test]
fn a_worker_refuses_a_table_prefix_that_is_not_an_identifier() {
    let dir = tempfile::tempdir().unwrap();
    let spec = serde_json::json!({
        "strategy": "mutex",
        "workload": "counter",
        "paths": turnstile_harness::workload::Paths::new(dir.path(), None),
        "proc": 0, "threads": 1, "ops": 1, "keys": 1, "think_us": 0,
        "transaction": false, "sync": "normal", "seed": 1, "announce": false,
        "data": { "postgres": postgres_url() },
        "tables": "t; DROP TABLE turnstile_fences; --",
    });
    let (code, stdout) = cli_support::worker(&format!("{spec}\n"));
    assert_eq!(code, 2, "{stdout}");
    assert!(
        stdout.starts_with("error 2 ") && stdout.contains("prefix"),
        "{stdout}"
    );
}

/// `url` with a password: its own, or `cmdline-secret-4711` added to its user (a server
/// that trusts loopback ignores it). Returns the URL and the password.
fn with_password(url: &str) -> (String, String) {
    const SECRET: &str = "cmdline-secret-4711";
    let (scheme, rest) = url.split_once("://").expect("a URL");
    let end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    match authority.rsplit_once('@') {
        Some((userinfo, _)) if userinfo.contains(':') => {
            let (_, password) = userinfo.split_once(':').unwrap();
            (url.to_owned(), password.to_owned())
        }
        Some((user, host)) => (
            format!("{scheme}://{user}:{SECRET}@{host}{path}"),
            SECRET.to_owned(),
        ),
        None => (
            format!("{scheme}://postgres:{SECRET}@{authority}{path}"),
            SECRET.to_owned(),
        ),
    }
}

/// The processes whose parent is `parent`, with their command lines (arguments split).
fn children_of(parent: u32) -> Vec<(u32, Vec<String>)> {
    let mut children = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return children;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        // `pid (comm) state ppid …`; comm may hold spaces and parentheses.
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, tail)| tail.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if ppid != Some(parent) {
            continue;
        }
        if let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) {
            let args = cmdline
                .split(|&b| b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            children.push((pid, args));
        }
    }
    children
}

/// Worker processes' command lines, which every user of the host can read (`ps`), carry
/// no password: a strategy spec and a `--data` URL with one reach the worker on its stdin.
#[test]
fn worker_command_lines_carry_no_password() {
    let (url, secret) = with_password(&postgres_url());
    let dir = tempfile::tempdir().unwrap();
    let (out_path, err_path) = (dir.path().join("out"), dir.path().join("err"));
    let mut child = Command::new(EXE)
        .args(["check", "--strategy", &url, "--data", &url, "--json"])
        .args(["--workload", "counter", "--procs", "2", "--threads", "1"])
        .args(["--ops", "200", "--think-us", "3000"])
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .expect("turnstile runs");
    let mut workers: Vec<(u32, Vec<String>)> = Vec::new();
    while child.try_wait().unwrap().is_none() {
        for (pid, args) in children_of(child.id()) {
            // A child between fork and exec still shows the parent's command line.
            let is_worker = args.get(1).is_some_and(|a| a == "worker");
            if is_worker && !workers.iter().any(|(p, _)| *p == pid) {
                workers.push((pid, args));
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let status = child.wait().unwrap();
    let out = std::fs::read_to_string(&out_path).unwrap();
    let err = std::fs::read_to_string(&err_path).unwrap();
    assert_eq!(status.code(), Some(0), "{out}{err}");
    assert!(!workers.is_empty(), "no worker process seen\n{out}{err}");
    for (pid, args) in &workers {
        assert!(
            args.iter().all(|a| !a.contains(&secret)),
            "worker {pid}'s command line shows the password: {args:?}"
        );
    }
    // Nor does the report: its strategy and notes show the spec redacted.
    assert!(
        !out.contains(&secret),
        "the report shows the password:\n{out}"
    );
    assert!(!err.contains(&secret), "stderr shows the password:\n{err}");
}

/// A run over PostgreSQL whose sessions default to `SERIALIZABLE` (here through the URL;
/// a server, role or database can say the same): the harness runs its data at `READ
/// COMMITTED`, so a per-key strategy's ops on different keys never meet at the server's
/// predicate locks, and `refused` passes. (At `SERIALIZABLE` the `kv` ops' reads of absent
/// records and inserts of others into the same index page fail with `40001`.)
#[test]
fn a_serializable_server_default_does_not_refuse_ops_of_different_keys() {
    let url = postgres_url();
    let sep = if url.contains('?') { '&' } else { '?' };
    let serializable = DataSpec::Postgres(format!(
        "{url}{sep}options=-c%20default_transaction_isolation%3Dserializable"
    ));
    let report = run(
        &RunConfig::new("pg-xact", Workload::Kv)
            .data(serializable)
            .threads(8)
            .ops(400)
            .keys(16)
            .rendezvous(Duration::from_millis(2)),
        &registry(),
    )
    .expect("the run produces a verdict");
    let text = report::text(&report);
    assert_eq!(
        report.check("refused").map(|c| c.verdict),
        Some(Verdict::Pass),
        "{text}"
    );
    assert_eq!(report.verdict, Verdict::Pass, "{text}");
}
