//! Stopping the CLI early: a `check` or `compare` sent `SIGINT`, `SIGTERM` or `SIGHUP`
//! starts no new op, kills its worker processes, removes its run directory, drops its
//! tables on a server, and exits 128 + the signal's number; a worker whose parent died
//! (even by `SIGKILL`) ends too. Real processes and signals throughout; the server test
//! uses a database of its own on `TURNSTILE_POSTGRES_URL`.

#[path = "support/cli.rs"]
mod cli_support;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, kill_process};

/// `turnstile check` of a run far too long to end on its own (10 million ops), its
/// temporary files under `tmp`.
fn long_check(tmp: &Path, more: &[&str]) -> Child {
    let mut command = Command::new(cli_support::EXE);
    for var in cli_support::CHECK_ENV {
        command.env_remove(var);
    }
    command
        .args(["check", "--workload", "counter", "--ops", "10000000"])
        .args(more)
        .env("TMPDIR", tmp)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("turnstile runs")
}

/// Polls `ready` every 20 ms for up to `within`; whether it held.
fn eventually(within: Duration, mut ready: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if ready() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Sends `signal` to `child` and waits (a minute at most) for its exit: its code and
/// stderr. The child is killed and the test fails when it does not exit.
fn stop(mut child: Child, signal: Signal) -> (Option<i32>, String) {
    kill_process(Pid::from_raw(child.id() as i32).unwrap(), signal).unwrap();
    let ended = eventually(Duration::from_secs(60), || {
        child.try_wait().unwrap().is_some()
    });
    if !ended {
        let _ = child.kill();
    }
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(ended, "turnstile did not exit on {signal:?}: {stderr}");
    (output.status.code(), stderr)
}

/// The run directories (`turnstile-run-…`) under `tmp`.
fn run_dirs(tmp: &Path) -> Vec<String> {
    std::fs::read_dir(tmp)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("turnstile-run-"))
        .collect()
}

#[test]
fn a_signalled_check_kills_its_workers_removes_its_files_and_exits_as_the_signal() {
    for (signal, code, procs) in [
        (Signal::TERM, 143, "3"),
        (Signal::INT, 130, "1"),
        (Signal::HUP, 129, "2"),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let child = long_check(
            tmp.path(),
            &[
                "--strategy",
                "file-lock",
                "--threads",
                "2",
                "--procs",
                procs,
            ],
        );
        let pid = child.id();
        // Under way: the run directory made and, for processes, every worker started.
        let want = if procs == "1" {
            0
        } else {
            procs.parse().unwrap()
        };
        let workers = {
            let mut workers = Vec::new();
            let started = eventually(Duration::from_secs(30), || {
                workers = cli_support::children(pid);
                !run_dirs(tmp.path()).is_empty() && workers.len() >= want
            });
            assert!(started, "{signal:?}: the run did not start");
            workers
        };
        std::thread::sleep(Duration::from_millis(300));
        let (status, stderr) = stop(child, signal);
        assert_eq!(status, Some(code), "{signal:?}: {stderr}");
        assert!(stderr.contains("interrupted"), "{signal:?}: {stderr}");
        for worker in workers {
            let ended = eventually(Duration::from_secs(10), || cli_support::gone(worker));
            if !ended {
                let _ = kill_process(Pid::from_raw(worker as i32).unwrap(), Signal::KILL);
            }
            assert!(ended, "{signal:?}: worker {worker} outlived its run");
        }
        assert_eq!(run_dirs(tmp.path()), Vec::<String>::new(), "{signal:?}");
    }
}

/// With `--keep`, a signalled check keeps what its run wrote before it stopped (its
/// histories, its database), says where, and still removes its run directory.
#[test]
fn a_signalled_check_keeps_its_files_with_keep() {
    for procs in ["1", "2"] {
        let tmp = tempfile::tempdir().unwrap();
        let keep = tmp.path().join("kept");
        let child = long_check(
            tmp.path(),
            &[
                "--strategy",
                "file-lock",
                "--threads",
                "2",
                "--procs",
                procs,
                "--keep",
                keep.to_str().unwrap(),
            ],
        );
        let pid = child.id();
        let want = if procs == "1" { 0 } else { 2 };
        let started = eventually(Duration::from_secs(30), || {
            !run_dirs(tmp.path()).is_empty() && cli_support::children(pid).len() >= want
        });
        assert!(started, "procs {procs}: the run did not start");
        std::thread::sleep(Duration::from_millis(500));
        let (status, stderr) = stop(child, Signal::INT);
        assert_eq!(status, Some(130), "procs {procs}: {stderr}");
        assert!(
            stderr.contains(&format!("history and database kept in {}", keep.display())),
            "procs {procs}: {stderr}"
        );
        assert!(keep.join("run.db").is_file(), "procs {procs}: {stderr}");
        let procs: u32 = procs.parse().unwrap();
        for p in 0..procs {
            assert!(keep.join(format!("history-{p}.jsonl")).is_file(), "p{p}");
        }
        assert_eq!(run_dirs(tmp.path()), Vec::<String>::new());
    }
}

/// A `--db` outside the run directory is kept with its WAL: worker processes a signal
/// killed leave their last commits there, unchecked-pointed, and a copy of the database
/// file alone lacks them (it was behind its own history).
#[test]
fn a_signalled_check_keeps_an_outside_database_with_its_wal() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("outside.db");
    let wal = tmp.path().join("outside.db-wal");
    let keep = tmp.path().join("kept");
    let child = long_check(
        tmp.path(),
        &[
            "--strategy",
            "file-lock",
            "--threads",
            "2",
            "--procs",
            "2",
            "--db",
            db.to_str().unwrap(),
            "--keep",
            keep.to_str().unwrap(),
        ],
    );
    let writing = eventually(Duration::from_secs(30), || {
        std::fs::metadata(&wal).is_ok_and(|m| m.len() > 0)
    });
    assert!(writing, "the run wrote no WAL");
    std::thread::sleep(Duration::from_millis(500));
    let (status, stderr) = stop(child, Signal::TERM);
    assert_eq!(status, Some(143), "{stderr}");
    assert!(keep.join("outside.db-wal").is_file(), "{stderr}");
    let counters = |path: &Path| -> Vec<(String, i64)> {
        let conn = rusqlite::Connection::open(path).unwrap();
        let mut rows = conn.prepare("SELECT * FROM counter ORDER BY 1").unwrap();
        rows.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    // The kept copy first: opening the database checkpoints what its WAL holds.
    let kept = counters(&keep.join("outside.db"));
    assert!(!kept.is_empty(), "{stderr}");
    assert_eq!(kept, counters(&db), "the kept database is behind the run's");
}

/// A signal that comes while the first op waits for a lock held elsewhere (the start-up
/// probe) stops the run within a second or so, with its clean-up: the probe waits in
/// slices and looks for the signal between them.
#[test]
fn a_signal_during_the_wait_for_the_first_op_stops_the_run_with_its_clean_up() {
    let tmp = tempfile::tempdir().unwrap();
    let locks = tmp.path().join("locks");
    let _held = cli_support::hold_every_stripe(&locks);
    let spec = format!("file-lock:{}", locks.display());
    let child = long_check(tmp.path(), &["--strategy", &spec, "--threads", "1"]);
    let started = eventually(Duration::from_secs(30), || !run_dirs(tmp.path()).is_empty());
    assert!(started, "the run did not start");
    std::thread::sleep(Duration::from_millis(1500));
    let signalled = Instant::now();
    let (status, stderr) = stop(child, Signal::TERM);
    let took = signalled.elapsed();
    assert_eq!(status, Some(143), "{stderr}");
    assert!(!stderr.contains("without its clean-up"), "{stderr}");
    assert!(took < Duration::from_secs(10), "took {took:?}: {stderr}");
    assert_eq!(run_dirs(tmp.path()), Vec::<String>::new());
}

/// Nobody reads stderr any more (`… 2>&1 | tee log`, and Ctrl-C ended `tee` too): the
/// messages about stopping fail to write, and `check` still stops as the signal says,
/// instead of panicking on them.
#[test]
fn a_signalled_check_whose_stderr_is_gone_still_exits_as_the_signal() {
    let tmp = tempfile::tempdir().unwrap();
    let mut child = long_check(tmp.path(), &["--strategy", "mutex", "--threads", "2"]);
    assert!(
        eventually(Duration::from_secs(30), || !run_dirs(tmp.path()).is_empty()),
        "the run did not start"
    );
    drop(child.stderr.take());
    std::thread::sleep(Duration::from_millis(300));
    let (status, _) = stop(child, Signal::INT);
    assert_eq!(status, Some(130));
    assert_eq!(run_dirs(tmp.path()), Vec::<String>::new());
}

/// Workers end when their parent is killed outright: running ones, and one the nemesis
/// has stopped (`SIGSTOP`), which reads no end of file and, before, stayed stopped with
/// its lock stripe held for as long as nobody resumed it.
#[test]
fn workers_end_when_their_parent_is_killed() {
    for nemesis in [None, Some("stop:60000")] {
        let tmp = tempfile::tempdir().unwrap();
        let mut args = vec!["--strategy", "file-lock", "--threads", "1", "--procs", "2"];
        if let Some(nemesis) = nemesis {
            args.extend(["--nemesis", nemesis]);
        }
        let child = long_check(tmp.path(), &args);
        let pid = child.id();
        let mut workers = Vec::new();
        assert!(
            eventually(Duration::from_secs(30), || {
                workers = cli_support::children(pid);
                workers.len() >= 2
            }),
            "the workers did not start"
        );
        if nemesis.is_some() {
            assert!(
                eventually(Duration::from_secs(30), || {
                    cli_support::children(pid).iter().any(|&w| stopped(w))
                }),
                "the nemesis stopped no worker"
            );
            workers = cli_support::children(pid);
        } else {
            // Past `go`: the workers run their ops.
            std::thread::sleep(Duration::from_millis(500));
        }
        let (status, _) = stop(child, Signal::KILL);
        assert_eq!(status, None, "killed");
        for worker in workers {
            let ended = eventually(Duration::from_secs(10), || cli_support::gone(worker));
            if !ended {
                let _ = kill_process(Pid::from_raw(worker as i32).unwrap(), Signal::KILL);
            }
            assert!(
                ended,
                "worker {worker} outlived its killed parent (nemesis {nemesis:?})"
            );
        }
    }
}

/// Whether process `pid` is stopped (state `T`).
fn stopped(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rfind(')')
            .and_then(|close| stat[close + 1..].split_whitespace().next())
            == Some("T")
    })
}

#[test]
fn a_signalled_compare_reports_what_finished_and_writes_no_report() {
    let tmp = tempfile::tempdir().unwrap();
    let json = tmp.path().join("report.json");
    let mut command = Command::new(cli_support::EXE);
    let child = command
        .args(["compare", "--no-redis", "--strategies", "mutex,file-lock"])
        .args(["--threads", "1", "--procs", "1", "--sync", "normal"])
        .args(["--ops", "10000000", "--json"])
        .arg(&json)
        .env_remove("TURNSTILE_COMPARE_STRATEGIES")
        .env("TMPDIR", tmp.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(
        eventually(Duration::from_secs(30), || !run_dirs(tmp.path()).is_empty()),
        "the first setting did not start"
    );
    std::thread::sleep(Duration::from_millis(300));
    let (status, stderr) = stop(child, Signal::INT);
    assert_eq!(status, Some(130), "{stderr}");
    assert!(stderr.contains("interrupted by signal 2"), "{stderr}");
    assert!(stderr.contains("not written"), "{stderr}");
    assert!(!json.exists(), "an interrupted comparison wrote its report");
    assert_eq!(run_dirs(tmp.path()), Vec::<String>::new());
}

/// A comparison killed outright (`SIGKILL`: no handler, no clean-up) takes its private
/// `redis-server` with it: the server is started to die with its parent. Needs
/// `redis-server` (and util-linux's `setpriv`) on `PATH`, as `scripts/services` leaves them.
#[test]
fn a_compare_killed_outright_takes_its_private_redis_with_it() {
    let tmp = tempfile::tempdir().unwrap();
    // The default strategies, a private Redis among them; the first setting alone would
    // run for minutes.
    let mut child = Command::new(cli_support::EXE)
        .args(["compare", "--quick", "--threads", "1", "--ops", "10000000"])
        .env_remove("TURNSTILE_COMPARE_STRATEGIES")
        .env("TMPDIR", tmp.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut redis = None;
    let started = eventually(Duration::from_secs(30), || {
        redis = cli_support::children_named(child.id(), "redis-server")
            .first()
            .copied();
        redis.is_some()
    });
    if !started {
        let _ = child.kill();
    }
    let redis = redis.expect("no private redis-server started");
    std::thread::sleep(Duration::from_millis(300));
    child.kill().unwrap();
    child.wait().unwrap();
    let ended = eventually(Duration::from_secs(5), || cli_support::gone(redis));
    if !ended {
        let _ = kill_process(Pid::from_raw(redis as i32).unwrap(), Signal::KILL);
    }
    assert!(ended, "redis-server {redis} outlived its killed compare");
}

/// A run over PostgreSQL data drops its tables when a signal stops it. It runs in a
/// database of its own, so no other test's tables get in the count.
#[cfg(feature = "postgres")]
#[test]
fn a_signalled_run_drops_its_tables_on_the_server() {
    let url = turnstile_harness::conformance::postgres_url();
    let database = format!("ts_interrupt_{}", std::process::id());
    let mut admin = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    // The name is this test's own (a number from the OS), not input.
    admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {database}"))
        .unwrap();
    admin
        .batch_execute(&format!("CREATE DATABASE {database}"))
        .unwrap();
    let mut config: postgres::Config = url.parse().unwrap();
    config.dbname(&database);
    let tables = |config: &postgres::Config| -> i64 {
        let mut client = config.connect(postgres::NoTls).unwrap();
        client
            .query_one(
                "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'",
                &[],
            )
            .unwrap()
            .get(0)
    };
    let data = {
        let (base, _) = url.rsplit_once('/').expect("a URL with a database");
        format!("{base}/{database}")
    };
    let tmp = tempfile::tempdir().unwrap();
    let child = long_check(
        tmp.path(),
        &["--strategy", "mutex", "--threads", "2", "--data", &data],
    );
    let made = eventually(Duration::from_secs(30), || tables(&config) > 0);
    let (status, stderr) = stop(child, Signal::TERM);
    let left = tables(&config);
    let _ = admin.batch_execute(&format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)"));
    assert!(made, "the run made no tables: {stderr}");
    assert_eq!(status, Some(143), "{stderr}");
    assert_eq!(left, 0, "tables left behind: {stderr}");
}
