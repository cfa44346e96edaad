//! The `busy-timeout` baseline keeps the contract on its own: `Ok` means committed, an op
//! error or a panic rolls back, an op that commits by itself is refused, and two
//! connections wait for each other instead of failing.

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
