//! Quick start: eight threads share one SQLite database through the `mutex` strategy,
//! and none of their increments is lost.
//!
//! Run it with `cargo run -p turnstile --example quickstart`. The book's "Quick start"
//! chapter includes the parts between the `ANCHOR` markers, so what it shows compiles.

use std::sync::Arc;
use std::thread;

// ANCHOR: imports
use turnstile::lock::MutexLock;
use turnstile::spec::{Registry, Setup};
use turnstile::sqlite::rusqlite::{self, ErrorCode};
use turnstile::sqlite::{Sqlite, Synchronous};
use turnstile::{Error, Key, Locked, Serializer};
// ANCHOR_END: imports

const THREADS: i64 = 8;
const INCREMENTS: i64 = 50;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("app.db");

    // ANCHOR: open
    // The resource: a SQLite file, opened in WAL mode. `Normal` skips an fsync per
    // commit (the last commits may be lost on power loss, never corrupted).
    let db = Sqlite::new(&path).synchronous(Synchronous::Normal);
    // The strategy: an in-process lock table around it.
    let strategy = Arc::new(Locked::new(MutexLock::new(), db));
    let counter = Key::new("counter")?;
    // ANCHOR_END: open

    // ANCHOR: schema
    strategy.run(&counter, |db| {
        db.execute_batch(
            "CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
             INSERT OR IGNORE INTO counters VALUES ('hits', 0);",
        )
    })?;
    // ANCHOR_END: schema

    // ANCHOR: threads
    let workers: Vec<_> = (0..THREADS)
        .map(|_| {
            let strategy = Arc::clone(&strategy);
            let counter = counter.clone();
            thread::spawn(move || -> Result<(), Error<rusqlite::Error>> {
                for _ in 0..INCREMENTS {
                    // A read-modify-write: without the strategy, two threads could read
                    // the same value and one increment would be lost.
                    strategy.run(&counter, |db| {
                        let value: i64 = db.query_row(
                            "SELECT value FROM counters WHERE name = 'hits'",
                            [],
                            |row| row.get(0),
                        )?;
                        db.execute(
                            "UPDATE counters SET value = ?1 WHERE name = 'hits'",
                            [value + 1],
                        )
                    })?;
                }
                Ok(())
            })
        })
        .collect();
    for worker in workers {
        worker.join().expect("a worker panicked")?;
    }
    let hits: i64 = strategy.run(&counter, |db| {
        db.query_row("SELECT value FROM counters WHERE name = 'hits'", [], |r| {
            r.get(0)
        })
    })?;
    assert_eq!(hits, THREADS * INCREMENTS);
    // ANCHOR_END: threads
    println!("{THREADS} threads x {INCREMENTS} increments = {hits}");

    // ANCHOR: op_error
    // The op's own error comes back untouched as `Error::Op`, after a rollback.
    let duplicate = strategy.run(&counter, |db| {
        db.execute("INSERT INTO counters VALUES ('hits', 0)", [])
    });
    match duplicate {
        Err(Error::Op(e)) if e.sqlite_error_code() == Some(ErrorCode::ConstraintViolation) => {
            println!("the duplicate row was refused and rolled back: {e}");
        }
        other => return Err(format!("expected a UNIQUE violation, got {other:?}").into()),
    }
    // ANCHOR_END: op_error

    // ANCHOR: spec
    // The same strategy chosen at run time by name, as the `turnstile` CLI does.
    let registry = Registry::builtin();
    let chosen = registry.open("mutex", &Setup::new(Sqlite::new(&path)))?;
    // The box is a `Serializer` too: the same `run`, the same typed result and error.
    let hits: i64 = chosen.run(&counter, |db| {
        db.query_row("SELECT value FROM counters WHERE name = 'hits'", [], |r| {
            r.get(0)
        })
    })?;
    let scope = chosen.capabilities().scope;
    println!(
        "`mutex` excludes across {}; it sees {hits} hits",
        scope.as_str()
    );
    // ANCHOR_END: spec
    assert_eq!(hits, THREADS * INCREMENTS);
    Ok(())
}
