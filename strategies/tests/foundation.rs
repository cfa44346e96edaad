//! Acceptance tests of the foundation: the two in-process strategies (queue and mutex)
//! exclude a racy read-modify-write that loses updates without them, keep the op's own
//! error matchable, survive panics, keep the lock table small, and refuse bad keys.
#![cfg(all(feature = "queue", feature = "mutex", feature = "sqlite"))]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use turnstile::lock::MutexLock;
use turnstile::queue::Queue;
use turnstile::sqlite::rusqlite::{self, Connection, ErrorCode};
use turnstile::sqlite::{Sqlite, Synchronous};
use turnstile::{
    Connect, Error, Key, KeyError, KeyScope, Lock, LockName, Locked, MAX_KEY_LEN, Serializer,
    TxMode,
};

#[path = "support/sqlite_delegate.rs"]
#[macro_use]
mod sqlite_delegate;

#[path = "support/panicky_commit.rs"]
mod panicky_commit;

use panicky_commit::PanickyCommit;

const THREADS: usize = 8;
const INCREMENTS: usize = 2_000;

fn db(dir: &tempfile::TempDir) -> Sqlite {
    Sqlite::new(dir.path().join("f.db")).synchronous(Synchronous::Normal)
}

fn create_counter(path: &std::path::Path) {
    let conn = Connection::open(path).unwrap();
    conn.execute_batch(
        "PRAGMA journal_mode = WAL;
         CREATE TABLE counter (id INTEGER PRIMARY KEY, n INTEGER NOT NULL);
         INSERT INTO counter VALUES (1, 0);",
    )
    .unwrap();
}

fn read_counter(path: &std::path::Path) -> i64 {
    Connection::open(path)
        .unwrap()
        .query_row("SELECT n FROM counter WHERE id = 1", [], |r| r.get(0))
        .unwrap()
}

/// One read-modify-write in two autocommit statements, with the window between them
/// widened so that two unprotected increments overlap often.
fn increment(db: &Connection) -> rusqlite::Result<()> {
    let n: i64 = db.query_row("SELECT n FROM counter WHERE id = 1", [], |r| r.get(0))?;
    std::thread::sleep(Duration::from_micros(2));
    db.execute("UPDATE counter SET n = ?1 WHERE id = 1", [n + 1])?;
    Ok(())
}

/// THREADS × INCREMENTS increments through `strategy`; returns the final count.
fn hammer<S>(strategy: Arc<S>, path: &std::path::Path) -> i64
where
    S: Serializer<Resource = Connection> + 'static,
{
    let handles: Vec<_> = (0..THREADS)
        .map(|_| {
            let strategy = strategy.clone();
            std::thread::spawn(move || {
                for _ in 0..INCREMENTS {
                    strategy
                        .run(&Key::whole(), |db| {
                            // Both strategies run in autocommit mode: only they protect it.
                            assert!(db.is_autocommit());
                            increment(db)
                        })
                        .unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    read_counter(path)
}

#[test]
fn the_queue_excludes_a_racy_read_modify_write() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f.db");
    create_counter(&path);
    let queue = Queue::builder()
        .tx_mode(TxMode::Autocommit)
        .build(db(&dir))
        .unwrap();
    assert_eq!(
        hammer(Arc::new(queue), &path),
        (THREADS * INCREMENTS) as i64
    );
}

#[test]
fn the_mutex_strategy_excludes_a_racy_read_modify_write() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f.db");
    create_counter(&path);
    let mutex = Locked::new(MutexLock::new(), db(&dir)).tx_mode(TxMode::Autocommit);
    assert_eq!(
        hammer(Arc::new(mutex), &path),
        (THREADS * INCREMENTS) as i64
    );
}

#[test]
fn without_a_strategy_the_same_increments_lose_updates() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f.db");
    create_counter(&path);
    let opener = db(&dir).busy_timeout(Duration::from_secs(30));
    let handles: Vec<_> = (0..THREADS)
        .map(|_| {
            let opener = opener.clone();
            std::thread::spawn(move || {
                let conn = opener.connect().unwrap();
                for _ in 0..INCREMENTS {
                    // Every statement succeeds (the busy timeout waits out the others'
                    // writes): whatever goes missing is a lost update, not an error.
                    increment(&conn).unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let n = read_counter(&path);
    eprintln!("without a strategy: {n} of {}", THREADS * INCREMENTS);
    assert!(n > 0);
    assert!(
        n < (THREADS * INCREMENTS) as i64,
        "no update was lost without a strategy ({n}); the race window is too narrow for the test to mean anything"
    );
}

fn unique_violation_reaches_the_caller<S: Serializer<Resource = Connection>>(strategy: &S) {
    let key = Key::whole();
    strategy
        .run(&key, |db| {
            db.execute_batch("CREATE TABLE users (name TEXT NOT NULL UNIQUE)")
        })
        .unwrap();
    strategy
        .run(&key, |db| {
            db.execute("INSERT INTO users VALUES ('ada')", [])
        })
        .unwrap();
    match strategy.run(&key, |db| {
        db.execute("INSERT INTO users VALUES ('ada')", [])
    }) {
        Err(Error::Op(rusqlite::Error::SqliteFailure(e, _))) => {
            assert_eq!(e.code, ErrorCode::ConstraintViolation);
            assert_eq!(e.extended_code, rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE);
        }
        other => panic!("expected the UNIQUE violation itself, got {other:?}"),
    }
    let n: i64 = strategy
        .run(&key, |db| {
            db.query_row("SELECT count(*) FROM users", [], |r| r.get(0))
        })
        .unwrap();
    assert_eq!(n, 1);
}

#[test]
fn a_unique_violation_reaches_the_caller_through_the_queue() {
    let dir = tempfile::tempdir().unwrap();
    unique_violation_reaches_the_caller(&Queue::new(db(&dir)).unwrap());
}

#[test]
fn a_unique_violation_reaches_the_caller_through_the_mutex() {
    let dir = tempfile::tempdir().unwrap();
    unique_violation_reaches_the_caller(&Locked::new(MutexLock::new(), db(&dir)));
}

fn a_panic_is_caught_and_rolled_back<S: Serializer<Resource = Connection>>(strategy: &S) {
    let key = Key::whole();
    strategy
        .run(&key, |db| db.execute_batch("CREATE TABLE t (v INTEGER)"))
        .unwrap();
    let r = strategy.run(&key, |db| -> rusqlite::Result<()> {
        db.execute("INSERT INTO t VALUES (1)", [])?;
        panic!("op exploded")
    });
    match r {
        Err(Error::Panicked(message)) => assert_eq!(message, "op exploded"),
        other => panic!("expected Panicked, got {other:?}"),
    }
    // The strategy still serves, and the panicked op's write is gone.
    let n: i64 = strategy
        .run(&key, |db| {
            db.query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        })
        .unwrap();
    assert_eq!(n, 0);
}

#[test]
fn a_panicking_op_is_caught_by_the_queue() {
    let dir = tempfile::tempdir().unwrap();
    a_panic_is_caught_and_rolled_back(&Queue::new(db(&dir)).unwrap());
}

#[test]
fn a_panicking_op_is_caught_by_the_mutex() {
    let dir = tempfile::tempdir().unwrap();
    a_panic_is_caught_and_rolled_back(&Locked::new(MutexLock::new(), db(&dir)));
}

/// An op that commits by itself and then fails or panics gets `TransactionEnded`: what it
/// wrote may have committed (here it did), so no error that says "rolled back".
fn a_commit_then_a_failure_may_have_committed<S: Serializer<Resource = Connection>>(strategy: &S) {
    let key = Key::whole();
    strategy
        .run(&key, |db| db.execute_batch("CREATE TABLE t (v INTEGER)"))
        .unwrap();
    let failed = strategy.run(&key, |db| {
        db.execute_batch("INSERT INTO t VALUES (1); COMMIT")?;
        db.execute("INSERT INTO no_such_table VALUES (1)", [])
    });
    assert!(matches!(failed, Err(Error::TransactionEnded)), "{failed:?}");
    let panicked = strategy.run(&key, |db| -> rusqlite::Result<()> {
        db.execute_batch("INSERT INTO t VALUES (2); COMMIT")?;
        panic!("op exploded")
    });
    assert!(
        matches!(panicked, Err(Error::TransactionEnded)),
        "{panicked:?}"
    );
    // A commit, then a transaction of the op's own (`COMMIT; BEGIN`): a transaction is
    // open again when the op returns, but the commit was counted. What the op wrote after
    // its `BEGIN` is its own, rolled back, never committed by the strategy.
    let failed = strategy.run(&key, |db| {
        db.execute_batch("INSERT INTO t VALUES (3); COMMIT; BEGIN; INSERT INTO t VALUES (30)")?;
        db.execute("INSERT INTO no_such_table VALUES (1)", [])
    });
    assert!(matches!(failed, Err(Error::TransactionEnded)), "{failed:?}");
    let returned = strategy.run(&key, |db| {
        db.execute_batch("INSERT INTO t VALUES (4); COMMIT; BEGIN; INSERT INTO t VALUES (40)")
    });
    assert!(
        matches!(returned, Err(Error::TransactionEnded)),
        "{returned:?}"
    );
    let rows: Vec<i64> = strategy
        .run(&key, |db| {
            db.prepare("SELECT v FROM t ORDER BY v")?
                .query_map([], |r| r.get(0))?
                .collect::<rusqlite::Result<Vec<i64>>>()
        })
        .unwrap();
    assert_eq!(rows, vec![1, 2, 3, 4]);
}

/// An op that commits through a strategy of its own over another database (a nested
/// strategy, on the same thread) has not ended the outer transaction: it commits, and
/// both databases keep their rows.
fn a_nested_strategys_commit_is_not_the_ops<S: Serializer<Resource = Connection>>(
    outer: &S,
    other: &tempfile::TempDir,
) {
    let inner = Arc::new(Locked::new(
        MutexLock::new(),
        Sqlite::new(other.path().join("other.db")),
    ));
    let key = Key::whole();
    inner
        .run(&key, |db| db.execute_batch("CREATE TABLE o (v INTEGER)"))
        .unwrap();
    outer
        .run(&key, |db| db.execute_batch("CREATE TABLE t (v INTEGER)"))
        .unwrap();
    let done = {
        let inner = inner.clone();
        outer.run(&key, move |db| {
            db.execute("INSERT INTO t VALUES (1)", [])?;
            inner
                .run(&Key::whole(), |o| o.execute("INSERT INTO o VALUES (1)", []))
                .map_err(|e| rusqlite::Error::ToSqlConversionFailure(e.to_string().into()))?;
            db.execute("INSERT INTO t VALUES (2)", [])
        })
    };
    assert!(matches!(done, Ok(1)), "{done:?}");
    let count = |s: &dyn Fn() -> i64| s();
    assert_eq!(
        count(&|| outer
            .run(&key, |db| db
                .query_row("SELECT count(*) FROM t", [], |r| r.get(0)))
            .unwrap()),
        2
    );
    assert_eq!(
        count(&|| inner
            .run(&key, |db| db
                .query_row("SELECT count(*) FROM o", [], |r| r.get(0)))
            .unwrap()),
        1
    );
}

/// Another connection to the same file, on the op's thread, that reads in a transaction
/// of its own and rolls it back, has not ended the op's transaction: the op commits.
#[test]
fn a_read_on_another_connection_to_the_file_is_not_the_ops_end() {
    let dir = tempfile::tempdir().unwrap();
    let strategy = Locked::new(MutexLock::new(), db(&dir));
    let key = Key::whole();
    strategy
        .run(&key, |db| db.execute_batch("CREATE TABLE t (v INTEGER)"))
        .unwrap();
    let reader = db(&dir);
    let done = strategy.run(&key, move |db| {
        db.execute("INSERT INTO t VALUES (1)", [])?;
        let other = reader
            .connect()
            .map_err(rusqlite::Error::ToSqlConversionFailure)?;
        other.execute_batch("BEGIN; SELECT count(*) FROM t; ROLLBACK")?;
        db.execute("INSERT INTO t VALUES (2)", [])
    });
    assert!(matches!(done, Ok(1)), "{done:?}");
    let n: i64 = strategy
        .run(&key, |db| {
            db.query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        })
        .unwrap();
    assert_eq!(n, 2);
}

#[test]
fn a_nested_strategys_commit_is_not_the_ops_through_the_mutex() {
    let (dir, other) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    a_nested_strategys_commit_is_not_the_ops(&Locked::new(MutexLock::new(), db(&dir)), &other);
}

#[test]
fn a_nested_strategys_commit_is_not_the_ops_through_the_queue() {
    let (dir, other) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    a_nested_strategys_commit_is_not_the_ops(&Queue::new(db(&dir)).unwrap(), &other);
}

#[test]
fn a_nested_strategys_commit_is_not_the_ops_through_retry() {
    let (dir, other) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    a_nested_strategys_commit_is_not_the_ops(&turnstile::retry::Retry::sqlite(db(&dir)), &other);
}

#[test]
fn a_commit_then_a_failure_through_the_queue_may_have_committed() {
    let dir = tempfile::tempdir().unwrap();
    a_commit_then_a_failure_may_have_committed(&Queue::new(db(&dir)).unwrap());
}

#[test]
fn a_commit_then_a_failure_through_the_mutex_may_have_committed() {
    let dir = tempfile::tempdir().unwrap();
    a_commit_then_a_failure_may_have_committed(&Locked::new(MutexLock::new(), db(&dir)));
}

#[test]
fn a_commit_then_a_failure_through_retry_may_have_committed() {
    let dir = tempfile::tempdir().unwrap();
    a_commit_then_a_failure_may_have_committed(&turnstile::retry::Retry::sqlite(db(&dir)));
}

/// Through `retry`, an op that committed, began a transaction of its own and then met a
/// busy error (another connection holds the write lock) is not run again: its commit was
/// counted, so it may have committed, and a rerun would apply it twice.
#[test]
fn retry_never_reruns_an_op_that_committed_before_a_busy_error() {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = db(&dir).busy_timeout(Duration::from_millis(50));
    let retry = turnstile::retry::Retry::sqlite(sqlite);
    let key = Key::whole();
    retry
        .run(&key, |db| {
            db.execute_batch("CREATE TABLE c (n INTEGER); INSERT INTO c VALUES (0)")
        })
        .unwrap();
    let path = dir.path().join("f.db");
    let runs = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let result = {
        let runs = runs.clone();
        retry.run(&key, move |db| {
            db.execute("UPDATE c SET n = n + 1", [])?;
            if runs.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
                db.execute_batch("COMMIT; BEGIN")?;
                // Another connection takes the write lock: the next write is busy.
                let other = Connection::open(&path)?;
                other.execute_batch("BEGIN IMMEDIATE")?;
                let busy = db.execute("UPDATE c SET n = n + 10", []);
                other.execute_batch("ROLLBACK")?;
                busy?;
            }
            Ok::<_, rusqlite::Error>(())
        })
    };
    assert!(matches!(result, Err(Error::TransactionEnded)), "{result:?}");
    assert_eq!(
        runs.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "run again"
    );
    let n: i64 = retry
        .run(&key, |db| db.query_row("SELECT n FROM c", [], |r| r.get(0)))
        .unwrap();
    assert_eq!(n, 1);
}

/// An op whose transaction SQLite rolls back by itself (`INSERT OR ROLLBACK` failing)
/// committed nothing: it keeps its own error, or its panic, which say rolled back, and is
/// not answered `TransactionEnded` (may have committed).
fn a_rollback_by_sqlite_keeps_the_ops_error<S: Serializer<Resource = Connection>>(strategy: &S) {
    let key = Key::whole();
    strategy
        .run(&key, |db| {
            db.execute_batch("CREATE TABLE u (v INTEGER UNIQUE); INSERT INTO u VALUES (1)")
        })
        .unwrap();
    let failed = strategy.run(&key, |db| {
        db.execute_batch("INSERT INTO u VALUES (2); INSERT OR ROLLBACK INTO u VALUES (1)")
    });
    assert!(!failed.as_ref().unwrap_err().may_have_committed());
    match failed {
        Err(Error::Op(e)) => {
            assert_eq!(e.sqlite_error_code(), Some(ErrorCode::ConstraintViolation));
        }
        other => panic!("expected the op's UNIQUE violation, got {other:?}"),
    }
    let panicked = strategy.run(&key, |db| -> rusqlite::Result<()> {
        let _ = db.execute_batch("INSERT INTO u VALUES (3); INSERT OR ROLLBACK INTO u VALUES (1)");
        panic!("op exploded")
    });
    assert!(
        matches!(panicked, Err(Error::Panicked(ref m)) if m == "op exploded"),
        "{panicked:?}"
    );
    // Rolled back indeed, and the strategy still serves.
    let rows: Vec<i64> = strategy
        .run(&key, |db| {
            db.prepare("SELECT v FROM u ORDER BY v")?
                .query_map([], |r| r.get(0))?
                .collect::<rusqlite::Result<Vec<i64>>>()
        })
        .unwrap();
    assert_eq!(rows, vec![1]);
}

#[test]
fn a_rollback_by_sqlite_through_the_queue_keeps_the_ops_error() {
    let dir = tempfile::tempdir().unwrap();
    a_rollback_by_sqlite_keeps_the_ops_error(&Queue::new(db(&dir)).unwrap());
}

#[test]
fn a_rollback_by_sqlite_through_the_mutex_keeps_the_ops_error() {
    let dir = tempfile::tempdir().unwrap();
    a_rollback_by_sqlite_keeps_the_ops_error(&Locked::new(MutexLock::new(), db(&dir)));
}

#[test]
fn the_mutex_table_holds_only_the_keys_currently_held() {
    const KEYS: usize = 100_000;
    let table = MutexLock::new();
    let deadline = || Some(Instant::now() + Duration::from_secs(10));
    let name = |i: usize| LockName::new("db", Key::new(format!("key-{i}")).unwrap());
    let mut held = Vec::new();
    for i in 0..KEYS {
        let lease = table.acquire(&name(i), deadline()).unwrap();
        if i % 10_000 == 0 {
            // Keep every 10,000th key held through the rest of the run.
            held.push(lease);
            assert_eq!(table.len(), held.len());
        } else {
            assert_eq!(table.len(), held.len() + 1);
            drop(lease);
        }
    }
    assert_eq!(table.len(), 10);
    drop(held);
    assert_eq!(table.len(), 0);
}

#[test]
fn the_mutex_table_stays_small_through_the_strategy() {
    const KEYS: usize = 100_000;
    const WORKERS: usize = 4;
    let dir = tempfile::tempdir().unwrap();
    let table = MutexLock::new();
    let strategy = Arc::new(
        Locked::new(table.clone(), db(&dir))
            .key_scope(KeyScope::PerKey)
            .tx_mode(TxMode::Autocommit),
    );
    let handles: Vec<_> = (0..WORKERS)
        .map(|w| {
            let (strategy, table) = (strategy.clone(), table.clone());
            std::thread::spawn(move || {
                for i in (w..KEYS).step_by(WORKERS) {
                    let key = Key::new(format!("row-{i}")).unwrap();
                    let table = table.clone();
                    // Mid-way, from inside the op: this key is held, and at most the
                    // other workers' keys besides.
                    let entries = strategy
                        .run(&key, move |_| Ok::<_, std::io::Error>(table.len()))
                        .unwrap();
                    assert!((1..=WORKERS).contains(&entries), "{entries} entries");
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(table.len(), 0);
}

#[test]
fn bad_keys_are_refused_with_typed_errors() {
    assert_eq!(Key::new(""), Err(KeyError::Empty));
    assert_eq!(Key::new("a\0b"), Err(KeyError::Nul { position: 1 }));
    assert_eq!(Key::new("\0"), Err(KeyError::Nul { position: 0 }));
    assert_eq!(
        Key::new("k".repeat(MAX_KEY_LEN + 1)),
        Err(KeyError::TooLong {
            len: MAX_KEY_LEN + 1,
            max: MAX_KEY_LEN
        })
    );
    // The limit is in bytes: 129 two-byte characters are too long.
    assert!(matches!(
        Key::new("é".repeat(MAX_KEY_LEN / 2 + 1)),
        Err(KeyError::TooLong { .. })
    ));
    assert_eq!(
        Key::new("k".repeat(MAX_KEY_LEN)).unwrap().as_str().len(),
        MAX_KEY_LEN
    );
    assert!("".parse::<Key>().is_err());
    assert!(Key::try_from("x\0").is_err());
    // And through a strategy, the typed error converts into Error::InvalidKey.
    let e: Error<std::io::Error> = Key::new("").unwrap_err().into();
    assert!(matches!(e, Error::InvalidKey(KeyError::Empty)));
}

#[test]
fn a_resource_that_panics_outside_the_op_costs_no_pool_slot() {
    const POOL: usize = 2;
    let dir = tempfile::tempdir().unwrap();
    let armed = Arc::new(AtomicBool::new(true));
    let strategy = Locked::new(
        MutexLock::new(),
        PanickyCommit {
            db: db(&dir),
            armed: armed.clone(),
        },
    )
    .pool_size(POOL)
    .unwrap()
    .timeout(Some(Duration::from_secs(5)))
    .unwrap();
    for _ in 0..POOL + 1 {
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            strategy.run(&Key::whole(), |db| {
                db.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))
            })
        }));
        assert!(panicked.is_err(), "the commit should have panicked");
    }
    armed.store(false, Ordering::SeqCst);
    // Every slot came back: the next call opens a connection instead of waiting out its
    // deadline for one that was never returned.
    let one = strategy.run(&Key::whole(), |db| {
        db.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))
    });
    assert_eq!(one.unwrap(), 1);
}

#[test]
fn an_op_calling_back_for_a_lock_its_call_holds_is_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    fn select(db: &mut turnstile::Ctx<'_, Connection>) -> rusqlite::Result<i64> {
        db.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))
    }
    // Over SQLite: one lock for the whole database, whatever the key.
    let strategy = Arc::new(Locked::new(MutexLock::new(), db(&dir)));
    let inner = strategy.clone();
    let started = Instant::now();
    let nested = strategy
        .run(&Key::new("a").unwrap(), move |_| {
            Ok::<_, rusqlite::Error>(inner.run(&Key::new("b").unwrap(), select))
        })
        .unwrap();
    assert!(matches!(nested, Err(Error::Reentrant)), "{nested:?}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "it waited first"
    );
    // Per key: another key's lock is free, the same key's is not.
    let strategy = Arc::new(
        Locked::new(MutexLock::new(), db(&dir))
            .key_scope(KeyScope::PerKey)
            .tx_mode(TxMode::Autocommit),
    );
    let inner = strategy.clone();
    let (other, same) = strategy
        .run(&Key::new("a").unwrap(), move |_| {
            let other = inner.run(&Key::new("b").unwrap(), select);
            let same = inner.run_many(&[Key::new("b").unwrap(), Key::new("a").unwrap()], select);
            Ok::<_, rusqlite::Error>((other, same))
        })
        .unwrap();
    assert_eq!(other.unwrap(), 1);
    assert!(matches!(same, Err(Error::Reentrant)), "{same:?}");
    // Once the op is over (even by a panic), its locks are forgotten.
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        strategy.run(
            &Key::new("a").unwrap(),
            |_| -> Result<(), rusqlite::Error> { panic!("the op exploded") },
        )
    }));
    assert!(
        matches!(panicked, Ok(Err(Error::Panicked(_)))),
        "{panicked:?}"
    );
    assert_eq!(strategy.run(&Key::new("a").unwrap(), select).unwrap(), 1);
    // Another strategy's locks are its own.
    let other_strategy = Locked::new(MutexLock::new(), db(&dir)).tx_mode(TxMode::Autocommit);
    let r = strategy
        .run(&Key::new("a").unwrap(), move |_| {
            Ok::<_, rusqlite::Error>(other_strategy.run(&Key::new("a").unwrap(), select))
        })
        .unwrap();
    assert_eq!(r.unwrap(), 1);
}

#[test]
fn callers_waiting_for_a_pooled_connection_get_one_when_it_is_returned() {
    const CALLERS: usize = 8;
    let dir = tempfile::tempdir().unwrap();
    // Keys of their own, so the lock lets them all through and they meet at the pool of
    // one connection; no deadline, so a return that woke nobody would hang them.
    let strategy = Arc::new(
        Locked::new(MutexLock::new(), db(&dir))
            .key_scope(KeyScope::PerKey)
            .tx_mode(TxMode::Autocommit)
            .pool_size(1)
            .unwrap(),
    );
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    for c in 0..CALLERS {
        let (strategy, done_tx) = (strategy.clone(), done_tx.clone());
        std::thread::spawn(move || {
            let key = Key::new(format!("caller-{c}")).unwrap();
            for _ in 0..50 {
                strategy
                    .run_with(std::slice::from_ref(&key), turnstile::Wait::Forever, |db| {
                        std::thread::sleep(Duration::from_micros(50));
                        db.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))
                    })
                    .unwrap();
            }
            done_tx.send(()).unwrap();
        });
    }
    for _ in 0..CALLERS {
        done_rx
            .recv_timeout(Duration::from_secs(60))
            .expect("a caller waiting for the pool was never woken");
    }
}

#[test]
fn a_busy_timeout_longer_than_sqlite_takes_is_clamped_rather_than_a_panic() {
    use turnstile::sqlite::MAX_BUSY_TIMEOUT;
    let dir = tempfile::tempdir().unwrap();
    // 30 days is within MAX_TIMEOUT but over SQLite's i32::MAX milliseconds.
    for timeout in [Duration::from_secs(30 * 24 * 3600), Duration::MAX] {
        let opener = db(&dir).busy_timeout(timeout);
        let strategy = Locked::new(MutexLock::new(), opener.clone());
        let ms: i64 = strategy
            .run_timeout(&Key::whole(), Duration::from_secs(5), |db| {
                db.query_row("PRAGMA busy_timeout", [], |r| r.get(0))
            })
            .unwrap();
        assert_eq!(ms, i64::from(i32::MAX), "for {timeout:?}");
        assert_eq!(opener.busy_timeout_value(), MAX_BUSY_TIMEOUT);
    }
}

/// WAL asked of a database without a file is the setup's fault, not an outage: `Locked`
/// (through its pool) and `retry` report `Error::Config` with the way out, and the
/// database works with `wal(false)`.
#[test]
fn wal_on_a_database_without_a_file_is_a_config_error_for_locked_and_retry() {
    fn one(db: &mut turnstile::Ctx<'_, Connection>) -> rusqlite::Result<i64> {
        db.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))
    }
    let key = Key::whole();
    let locked = Locked::new(MutexLock::new(), Sqlite::new(":memory:"));
    match locked.run(&key, one) {
        Err(Error::Config(m)) => assert!(m.contains("wal(false)"), "{m}"),
        other => panic!("expected Config, got {other:?}"),
    }
    let retry = turnstile::retry::Retry::sqlite(Sqlite::new(":memory:"));
    match retry.run(&key, one) {
        Err(Error::Config(m)) => assert!(m.contains("wal(false)"), "{m}"),
        other => panic!("expected Config, got {other:?}"),
    }
    let locked = Locked::new(MutexLock::new(), Sqlite::new(":memory:").wal(false));
    assert_eq!(locked.run(&key, one).unwrap(), 1);
}

/// An op that calls back in for another key while its own call has the pool's last
/// resource would wait for itself (no other thread can give one back): refused at once,
/// and the inner op never runs. With a resource to spare, the call goes ahead.
#[test]
fn an_op_calling_back_for_the_pools_last_resource_is_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let one = |pool_size: usize| {
        let strategy = Arc::new(
            Locked::new(MutexLock::new(), db(&dir))
                .key_scope(KeyScope::PerKey)
                .tx_mode(TxMode::Autocommit)
                .pool_size(pool_size)
                .unwrap(),
        );
        let inner = strategy.clone();
        let started = Instant::now();
        let nested = strategy
            .run_with(
                &[Key::new("a").unwrap()],
                turnstile::Wait::Forever,
                move |_| {
                    // Bounded, so that a wait for itself shows as a failure, not a hang.
                    Ok::<_, rusqlite::Error>(inner.run_with(
                        &[Key::new("b").unwrap()],
                        turnstile::Wait::Timeout(Duration::from_secs(5)),
                        |db| db.query_row("SELECT 1", [], |r| r.get::<_, i64>(0)),
                    ))
                },
            )
            .unwrap();
        (nested, started.elapsed())
    };
    let (nested, took) = one(1);
    assert!(matches!(nested, Err(Error::Reentrant)), "{nested:?}");
    assert!(took < Duration::from_secs(4), "it waited first: {took:?}");
    let (nested, _) = one(2);
    assert_eq!(nested.unwrap(), 1);
}
