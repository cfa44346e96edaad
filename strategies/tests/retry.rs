//! The `retry` strategy against a real SQLite file, threads and real child processes (the
//! test binary re-executes itself with `TURNSTILE_CHILD` set).
#![cfg(all(feature = "retry", feature = "sqlite"))]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use turnstile::retry::{Retry, RetryEvent, RetryReason};
use turnstile::spec::{Registry, Setup};
use turnstile::sqlite::Sqlite;
use turnstile::sqlite::rusqlite::{self, Connection, ErrorCode};
use turnstile::{Error, HolderDeath, Key, Scope, Serializer, Wait};

#[path = "support/children.rs"]
mod children;
use children::{child_role, db_at, env_path, on_threads, run_workers, wait_for_go};

/// Generous bound for "doesn't hang" checks.
const PATIENCE: Duration = Duration::from_secs(120);

/// A database with `counter (v)` at 0 and `uniq (k UNIQUE)` holding 1.
fn fresh_db(dir: &Path) -> PathBuf {
    let path = dir.join("app.db");
    let conn = Connection::open(&path).unwrap();
    conn.execute_batch(
        "PRAGMA journal_mode = WAL;
         CREATE TABLE counter (v INTEGER NOT NULL);
         INSERT INTO counter VALUES (0);
         CREATE TABLE uniq (k INTEGER UNIQUE);
         INSERT INTO uniq VALUES (1);",
    )
    .unwrap();
    path
}

fn counter(path: &Path) -> i64 {
    Connection::open(path)
        .unwrap()
        .query_row("SELECT v FROM counter", [], |r| r.get(0))
        .unwrap()
}

/// Another connection holding SQLite's write lock, as another process would.
fn hold_write_lock(path: &Path) -> Connection {
    let conn = Connection::open(path).unwrap();
    conn.execute_batch("BEGIN IMMEDIATE").unwrap();
    conn
}

fn increment(db: &mut Connection) -> rusqlite::Result<()> {
    let v: i64 = db.query_row("SELECT v FROM counter", [], |r| r.get(0))?;
    std::thread::yield_now();
    db.execute("UPDATE counter SET v = ?1", [v + 1])?;
    Ok(())
}

const PROCESSES: u32 = 4;
const THREADS: u32 = 4;
const INCREMENTS: u32 = 25;

/// A child: THREADS threads, INCREMENTS increments each, retried through SQLite's own lock
/// on DB.
fn counter_worker() {
    let strategy = Retry::sqlite(db_at(&env_path("DB")));
    wait_for_go();
    on_threads(THREADS, move || {
        for _ in 0..INCREMENTS {
            strategy.run(&Key::whole(), |db| increment(db)).unwrap();
        }
    });
}

#[test]
fn counter_from_processes_and_threads_ends_exact() {
    const NAME: &str = "counter_from_processes_and_threads_ends_exact";
    if child_role().is_some() {
        return counter_worker();
    }
    let dir = tempfile::tempdir().unwrap();
    let path = fresh_db(dir.path());
    run_workers(NAME, "counter", PROCESSES, &path, &[]);
    assert_eq!(counter(&path), i64::from(PROCESSES * THREADS * INCREMENTS));
}

#[test]
fn a_constraint_violation_is_returned_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = fresh_db(dir.path());
    let retries = Arc::new(AtomicU32::new(0));
    let seen = retries.clone();
    let strategy = Retry::sqlite(db_at(&path)).on_retry(move |_| {
        seen.fetch_add(1, Ordering::SeqCst);
    });
    let runs = Arc::new(AtomicU32::new(0));
    let counted = runs.clone();
    let result = strategy.run(&Key::whole(), move |db| {
        counted.fetch_add(1, Ordering::SeqCst);
        db.execute("UPDATE counter SET v = v + 1", [])?;
        db.execute("INSERT INTO uniq VALUES (1)", [])?;
        Ok::<_, rusqlite::Error>(db.attempt())
    });
    match result {
        Err(Error::Op(e)) => {
            assert_eq!(e.sqlite_error_code(), Some(ErrorCode::ConstraintViolation))
        }
        other => panic!("expected the op's own error, got {other:?}"),
    }
    assert_eq!(
        runs.load(Ordering::SeqCst),
        1,
        "an op error is never retried"
    );
    assert_eq!(retries.load(Ordering::SeqCst), 0);
    assert_eq!(counter(&path), 0, "the failed op was rolled back");
}

#[test]
fn a_busy_database_is_retried_until_released() {
    let dir = tempfile::tempdir().unwrap();
    let path = fresh_db(dir.path());
    let (strategy, events) = reporting_retries(Retry::sqlite(db_at(&path)));
    let holder = hold_write_lock(&path);
    let runner = std::thread::spawn(move || {
        strategy.run(&Key::whole(), |db| {
            increment(db)?;
            Ok::<_, rusqlite::Error>(db.attempt())
        })
    });
    let first = events.recv_timeout(PATIENCE).expect("no retry reported");
    assert_eq!(first.attempt, 1);
    assert_eq!(first.reason, RetryReason::Begin);
    holder.execute_batch("COMMIT").unwrap();
    let attempt = runner.join().unwrap().unwrap();
    assert!(attempt >= 2, "the op ran on attempt {attempt}");
    assert_eq!(counter(&path), 1);
}

#[test]
fn the_budget_ends_in_contended() {
    let dir = tempfile::tempdir().unwrap();
    let path = fresh_db(dir.path());
    let _holder = hold_write_lock(&path);
    let fast = || {
        Retry::sqlite(db_at(&path))
            .base(Duration::from_micros(100))
            .unwrap()
            .cap(Duration::from_millis(1))
            .unwrap()
    };
    let op = |db: &mut turnstile::Ctx<'_, Connection>| increment(db);

    // The attempt limit.
    let strategy = fast().max_attempts(3).unwrap();
    match strategy.run(&Key::whole(), op) {
        Err(Error::Contended { attempts: 3, .. }) => {}
        other => panic!("expected Contended after 3 attempts, got {other:?}"),
    }
    // The time limit, by the call's own wait; a zero wait tries once.
    let strategy = fast();
    match strategy.run_timeout(&Key::whole(), Duration::from_millis(30), op) {
        Err(Error::Contended { attempts, elapsed }) => {
            assert!(attempts >= 1);
            assert!(elapsed >= Duration::from_millis(30), "{elapsed:?}");
        }
        other => panic!("expected Contended, got {other:?}"),
    }
    match strategy.run_timeout(&Key::whole(), Duration::ZERO, op) {
        Err(Error::Contended { attempts: 1, .. }) => {}
        other => panic!("a zero wait tries once, got {other:?}"),
    }
    // The configured time limit.
    let strategy = fast().max_elapsed(Some(Duration::from_millis(20))).unwrap();
    assert!(matches!(
        strategy.run(&Key::whole(), op),
        Err(Error::Contended { .. })
    ));
    // An absurd wait is refused before anything runs.
    assert!(matches!(
        strategy.run_with(&[Key::whole()], Wait::Timeout(Duration::MAX), op),
        Err(Error::Config(_))
    ));
    drop(_holder);
    assert_eq!(counter(&path), 0);
}

fn marker_present(db: &Connection) -> rusqlite::Result<bool> {
    db.query_row(
        "SELECT count(*) FROM sqlite_temp_master WHERE name = 'connection_marker'",
        [],
        |r| r.get::<_, i64>(0).map(|n| n == 1),
    )
}

#[test]
fn a_broken_connection_is_reopened_and_an_op_error_is_not_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let path = fresh_db(dir.path());
    let junk = dir.path().join("junk.db");
    std::fs::write(&junk, vec![0x5a; 4096]).unwrap();
    let strategy = Retry::sqlite(db_at(&path)).idle_connections(1);
    let key = Key::whole();
    // A TEMP table lives as long as its connection: it tells which connection an op got.
    strategy
        .run(&key, |db| {
            db.execute_batch("CREATE TEMP TABLE connection_marker (x)")
        })
        .unwrap();
    assert!(strategy.run(&key, |db| marker_present(db)).unwrap());

    // The op's own error keeps the connection.
    let violation = strategy.run(&key, |db| db.execute("INSERT INTO uniq VALUES (1)", []));
    assert!(matches!(violation, Err(Error::Op(_))));
    assert!(strategy.run(&key, |db| marker_present(db)).unwrap(), "kept");

    // An error that says the connection is unusable (here SQLite's real "file is not a
    // database") closes it; the next op gets a new one.
    let broken = strategy.run(&key, move |_| {
        Connection::open(&junk)?.query_row("SELECT count(*) FROM sqlite_master", [], |r| {
            r.get::<_, i64>(0)
        })
    });
    match broken {
        Err(Error::Op(e)) => assert_eq!(e.sqlite_error_code(), Some(ErrorCode::NotADatabase)),
        other => panic!("expected the op's error, got {other:?}"),
    }
    assert!(
        !strategy.run(&key, |db| marker_present(db)).unwrap(),
        "the broken connection was reused"
    );
    strategy.run(&key, |db| increment(db)).unwrap();
    assert_eq!(counter(&path), 1);
}

#[test]
fn a_panic_or_a_self_commit_is_rolled_back_and_the_strategy_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let path = fresh_db(dir.path());
    let strategy = Retry::sqlite(db_at(&path));
    let key = Key::whole();
    let panicked = strategy.run(&key, |db| {
        increment(db)?;
        if db.attempt() > 0 {
            panic!("boom");
        }
        Ok::<_, rusqlite::Error>(())
    });
    assert!(matches!(panicked, Err(Error::Panicked(ref m)) if m == "boom"));
    let ended = strategy.run(&key, |db| db.execute_batch("COMMIT"));
    assert!(matches!(ended, Err(Error::TransactionEnded)), "{ended:?}");
    strategy.run(&key, |db| increment(db)).unwrap();
    assert_eq!(counter(&path), 1);
    // An op that fails or panics after its own COMMIT may have committed (here it did):
    // it is neither retried nor answered as rolled back.
    let failed = strategy.run(&key, |db| {
        increment(db)?;
        db.execute_batch("COMMIT")?;
        db.execute("INSERT INTO no_such_table VALUES (1)", [])
    });
    assert!(matches!(failed, Err(Error::TransactionEnded)), "{failed:?}");
    let panicked = strategy.run(&key, |db| -> rusqlite::Result<()> {
        increment(db)?;
        db.execute_batch("COMMIT")?;
        panic!("boom")
    });
    assert!(
        matches!(panicked, Err(Error::TransactionEnded)),
        "{panicked:?}"
    );
    assert_eq!(counter(&path), 3);
}

/// An op whose transaction SQLite rolls back by itself (`INSERT OR ROLLBACK` failing)
/// committed nothing: it gets its own error (not retried) or its panic, never
/// `TransactionEnded`.
#[test]
fn an_op_whose_transaction_sqlite_rolled_back_keeps_its_own_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = fresh_db(dir.path());
    let strategy = Retry::sqlite(db_at(&path));
    let key = Key::whole();
    let runs = Arc::new(AtomicU32::new(0));
    let counted = runs.clone();
    let failed = strategy.run(&key, move |db| {
        counted.fetch_add(1, Ordering::Relaxed);
        increment(db)?;
        db.execute("INSERT OR ROLLBACK INTO uniq VALUES (1)", [])
    });
    assert!(!failed.as_ref().unwrap_err().may_have_committed());
    match failed {
        Err(Error::Op(e)) => {
            assert_eq!(e.sqlite_error_code(), Some(ErrorCode::ConstraintViolation));
        }
        other => panic!("expected the op's UNIQUE violation, got {other:?}"),
    }
    assert_eq!(runs.load(Ordering::Relaxed), 1);
    let panicked = strategy.run(&key, |db| -> rusqlite::Result<()> {
        increment(db)?;
        let _ = db.execute("INSERT OR ROLLBACK INTO uniq VALUES (1)", []);
        panic!("boom")
    });
    assert!(
        matches!(panicked, Err(Error::Panicked(ref m)) if m == "boom"),
        "{panicked:?}"
    );
    assert_eq!(counter(&path), 0);
    strategy.run(&key, |db| increment(db)).unwrap();
    assert_eq!(counter(&path), 1);
}

#[test]
fn the_spec_registry_builds_retry_with_its_capabilities() {
    let dir = tempfile::tempdir().unwrap();
    let path = fresh_db(dir.path());
    let setup = Setup::new(db_at(&path)).timeout(Duration::from_secs(5));
    let registry = Registry::builtin();
    let strategy = registry.open("retry", &setup).unwrap();
    let caps = strategy.capabilities();
    assert_eq!(caps.scope, Scope::Processes);
    assert_eq!(caps.holder_death, HolderDeath::ResourceRollsBack);
    assert!(caps.reruns_op && caps.transactional && !caps.fences);
    strategy
        .run_as(&[Key::whole()], Wait::Default, |db| increment(db))
        .unwrap();
    assert_eq!(counter(&path), 1);
    assert!(matches!(
        registry.open("retry:fast", &setup),
        Err(Error::Config(_))
    ));
    // Its connections report busy at once instead of waiting inside SQLite.
    let direct = Retry::sqlite(db_at(&path));
    assert_eq!(direct.connector().busy_timeout_value(), Duration::ZERO);
}

/// A database in rollback-journal mode with `counter (v)` at 0, and a reader in a
/// transaction that has read it: under that journal the reader's SHARED lock makes a
/// writer's COMMIT busy until the reader commits.
fn journal_db_with_a_reader(dir: &Path) -> (PathBuf, Connection) {
    let path = dir.join("journal.db");
    Connection::open(&path)
        .unwrap()
        .execute_batch("CREATE TABLE counter (v INTEGER NOT NULL); INSERT INTO counter VALUES (0);")
        .unwrap();
    let reader = Connection::open(&path).unwrap();
    reader.execute_batch("BEGIN").unwrap();
    let seen: i64 = reader
        .query_row("SELECT v FROM counter", [], |r| r.get(0))
        .unwrap();
    assert_eq!(seen, 0);
    (path, reader)
}

/// `strategy`, reporting each of its retries on the returned channel.
fn reporting_retries(strategy: Retry<Sqlite>) -> (Retry<Sqlite>, mpsc::Receiver<RetryEvent>) {
    let (events_tx, events) = mpsc::channel();
    let strategy = strategy.on_retry(move |event| {
        let _ = events_tx.send(*event);
    });
    (strategy, events)
}

#[test]
fn a_busy_commit_is_rolled_back_and_retried() {
    let dir = tempfile::tempdir().unwrap();
    let (path, reader) = journal_db_with_a_reader(dir.path());
    let (strategy, events) = reporting_retries(Retry::sqlite(db_at(&path).wal(false)));
    let runs = Arc::new(AtomicU32::new(0));
    let counted = runs.clone();
    let runner = std::thread::spawn(move || {
        strategy.run(&Key::whole(), move |db| {
            counted.fetch_add(1, Ordering::SeqCst);
            increment(db)
        })
    });
    let first = events.recv_timeout(PATIENCE).expect("no retry reported");
    assert_eq!(first.reason, RetryReason::Commit);
    // The busy commit was rolled back: the reader's snapshot and the file still say 0.
    reader.execute_batch("COMMIT").unwrap();
    runner.join().unwrap().unwrap();
    assert!(runs.load(Ordering::SeqCst) >= 2, "the whole op ran again");
    assert_eq!(counter(&path), 1, "exactly one increment committed");
}

#[test]
fn a_caller_keeps_its_connection_through_its_retries() {
    // The reader makes COMMIT busy, so the op runs again; no idle connection is kept, so
    // one given back between the runs would be closed and the next run would get a new one.
    let dir = tempfile::tempdir().unwrap();
    let (path, reader) = journal_db_with_a_reader(dir.path());
    let (strategy, events) =
        reporting_retries(Retry::sqlite(db_at(&path).wal(false)).idle_connections(0));
    let runner = std::thread::spawn(move || {
        strategy.run(&Key::whole(), move |db| {
            // `cache_size` belongs to the connection and survives a rollback: each run
            // reads what the run before it set, and leaves its own attempt number.
            let seen: i64 = db.query_row("PRAGMA cache_size", [], |r| r.get(0))?;
            db.execute_batch(&format!(
                "PRAGMA cache_size = {}",
                -1000 - i64::from(db.attempt())
            ))?;
            increment(db)?;
            Ok::<_, rusqlite::Error>((db.attempt(), seen))
        })
    });
    let first = events.recv_timeout(PATIENCE).expect("no retry reported");
    assert_eq!(first.reason, RetryReason::Commit);
    reader.execute_batch("COMMIT").unwrap();
    let (attempt, seen) = runner.join().unwrap().unwrap();
    assert!(attempt >= 2, "the op ran on attempt {attempt}");
    assert_eq!(
        seen,
        -1000 - i64::from(attempt - 1),
        "a retry ran on another connection"
    );
    assert_eq!(counter(&path), 1);
}

/// An op calling back through `retry` over the SQLite database it is writing would retry
/// against its own write lock until the budget ran out: it is refused at once, whatever
/// the key, and the inner op never runs. Another database is free.
#[test]
fn an_op_calling_back_over_its_own_database_is_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = fresh_db(dir.path());
    let other_path = dir.path().join("other.db");
    let strategy = Arc::new(Retry::sqlite(db_at(&path)));
    let other = Retry::sqlite(db_at(&other_path));
    let inner = strategy.clone();
    let started = std::time::Instant::now();
    let (nested, elsewhere) = strategy
        .run(&Key::new("a").unwrap(), move |db| {
            increment(db)?;
            let nested = inner.run(&Key::new("b").unwrap(), |_| -> rusqlite::Result<()> {
                panic!("the inner op ran")
            });
            let elsewhere = other.run(&Key::new("b").unwrap(), |db| {
                db.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))
            });
            Ok::<_, rusqlite::Error>((nested, elsewhere))
        })
        .unwrap();
    assert!(matches!(nested, Err(Error::Reentrant)), "{nested:?}");
    assert_eq!(elsewhere.unwrap(), 1);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "it retried first"
    );
    assert_eq!(counter(&path), 1);
    strategy
        .run(&Key::new("a").unwrap(), |db| increment(db))
        .unwrap();
    assert_eq!(counter(&path), 2);
}
