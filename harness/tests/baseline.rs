//! The `busy-timeout` baseline keeps the contract on its own: `Ok` means committed, an op
//! error or a panic rolls back, an op that commits by itself is refused (and one that
//! fails after its own commit may have committed), and two connections wait for each
//! other instead of failing.

use std::sync::Arc;
use std::time::Duration;

use turnstile::sqlite::{Sqlite, Synchronous};
use turnstile::{Error, Key, Serializer};
use turnstile_harness::baseline::BusyTimeout;

fn setup() -> (tempfile::TempDir, Arc<BusyTimeout>) {
    let dir = tempfile::tempdir().unwrap();
    let db = Sqlite::new(dir.path().join("b.db")).synchronous(Synchronous::Normal);
    let s = Arc::new(BusyTimeout::new(db));
    s.run(&Key::whole(), |db| {
        db.execute_batch("CREATE TABLE t (v INTEGER)")
    })
    .unwrap();
    (dir, s)
}

fn count(s: &BusyTimeout) -> i64 {
    s.run(&Key::whole(), |db| {
        db.query_row("SELECT count(*) FROM t", [], |r| r.get(0))
    })
    .unwrap()
}

#[test]
fn errors_and_panics_roll_back_and_the_strategy_keeps_serving() {
    let (_dir, s) = setup();
    let e = s
        .run(&Key::whole(), |db| {
            db.execute("INSERT INTO t VALUES (1)", [])?;
            db.execute("INSERT INTO nowhere VALUES (1)", []).map(drop)
        })
        .unwrap_err();
    assert!(matches!(e, Error::Op(_)), "{e}");
    let e = s
        .run(&Key::whole(), |db| -> Result<(), rusqlite::Error> {
            db.execute("INSERT INTO t VALUES (1)", [])?;
            panic!("boom")
        })
        .unwrap_err();
    assert!(matches!(&e, Error::Panicked(m) if m == "boom"), "{e}");
    assert_eq!(count(&s), 0);
    s.run(&Key::whole(), |db| {
        db.execute("INSERT INTO t VALUES (1)", [])
    })
    .unwrap();
    assert_eq!(count(&s), 1);
}

#[test]
fn an_op_that_commits_by_itself_is_refused() {
    let (_dir, s) = setup();
    let e = s
        .run(&Key::whole(), |db| db.execute_batch("COMMIT"))
        .unwrap_err();
    assert!(matches!(e, Error::TransactionEnded), "{e}");
}

#[test]
fn threads_wait_for_each_other_through_the_busy_handler() {
    let (_dir, s) = setup();
    std::thread::scope(|scope| {
        for _ in 0..4 {
            let s = s.clone();
            scope.spawn(move || {
                for _ in 0..25 {
                    s.run(&Key::whole(), |db| {
                        db.execute("INSERT INTO t VALUES (1)", [])?;
                        std::thread::sleep(Duration::from_micros(200));
                        Ok::<_, rusqlite::Error>(())
                    })
                    .unwrap();
                }
            });
        }
    });
    assert_eq!(count(&s), 100);
}

/// An op that commits by itself and then fails (or panics) may have committed: both
/// baselines answer `TransactionEnded`, and the row is there. One whose transaction
/// SQLite rolled back itself (`INSERT OR ROLLBACK`) committed nothing: its own UNIQUE
/// error stands.
#[test]
fn an_op_that_fails_after_its_own_commit_may_have_committed() {
    use turnstile::TxMode;
    use turnstile_harness::baseline::StdMutex;

    let dir = tempfile::tempdir().unwrap();
    let db = Sqlite::new(dir.path().join("b.db")).synchronous(Synchronous::Normal);
    let busy = BusyTimeout::new(db.clone());
    let std_mutex = StdMutex::new(db, TxMode::Transaction).unwrap();
    busy.run(&Key::whole(), |db| {
        db.execute_batch("CREATE TABLE u (v INTEGER UNIQUE); INSERT INTO u VALUES (1)")
    })
    .unwrap();
    let strategies: [&dyn Fn(u8) -> Outcome; 2] = [&|case| outcome(&busy, case), &|case| {
        outcome(&std_mutex, case)
    }];
    for (n, run) in strategies.iter().enumerate() {
        let (r, rows) = run(0);
        assert!(matches!(r, Err(Error::TransactionEnded)), "{n}: {r:?}");
        assert!(r.unwrap_err().may_have_committed());
        assert_eq!(rows, 2 + 3 * n as i64, "{n}: the committed row stays");
        let (r, rows) = run(1);
        assert!(
            matches!(r, Err(Error::TransactionEnded)),
            "{n} panic: {r:?}"
        );
        assert_eq!(rows, 3 + 3 * n as i64, "{n}");
        let (r, rows) = run(2);
        match r {
            Err(Error::Op(e)) => assert!(e.to_string().contains("UNIQUE"), "{n}: {e}"),
            other => panic!("{n}: {other:?}"),
        }
        assert_eq!(rows, 3 + 3 * n as i64, "{n}: the rolled-back row is gone");
        // A commit, then a transaction of the op's own: the commit is counted, and what
        // the op wrote after its `BEGIN` is rolled back, never committed by the baseline.
        let (r, rows) = run(3);
        assert!(matches!(r, Err(Error::TransactionEnded)), "{n}: {r:?}");
        assert_eq!(
            rows,
            4 + 3 * n as i64,
            "{n}: only the row before COMMIT stays"
        );
    }
}

/// An op's result, and the rows in `u` after it.
type Outcome = (Result<(), Error<rusqlite::Error>>, i64);

/// Case 0: a row, COMMIT, then a failing statement; 1: the same with a panic; 2: a row,
/// then `INSERT OR ROLLBACK` of a duplicate; 3: a row, `COMMIT; BEGIN`, another row, then
/// a failing statement. The outcome and the rows in `u` after it.
fn outcome<S: Serializer<Resource = rusqlite::Connection>>(s: &S, case: u8) -> Outcome {
    let r = s.run(&Key::whole(), move |db| {
        let next: i64 = db.query_row("SELECT max(v) + 1 FROM u", [], |r| r.get(0))?;
        db.execute("INSERT INTO u VALUES (?1)", [next])?;
        match case {
            0 => {
                db.execute_batch("COMMIT")?;
                db.execute("INSERT INTO nowhere VALUES (1)", []).map(drop)
            }
            1 => {
                db.execute_batch("COMMIT")?;
                panic!("after its own commit")
            }
            3 => {
                db.execute_batch("COMMIT; BEGIN")?;
                db.execute("INSERT INTO u VALUES (?1)", [next + 100])?;
                db.execute("INSERT INTO nowhere VALUES (1)", []).map(drop)
            }
            _ => db
                .execute("INSERT OR ROLLBACK INTO u VALUES (1)", [])
                .map(drop),
        }
    });
    let rows = s
        .run(&Key::whole(), |db| {
            db.query_row("SELECT count(*) FROM u", [], |r| r.get(0))
        })
        .unwrap();
    (r, rows)
}
