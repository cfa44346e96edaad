//! The `retry` strategy: no lock; SQLite's own write lock arbitrates, and an op that meets
//! "database is locked" is rolled back and run again after a full-jitter backoff (seed
//! 001's first design, done carefully).
//!
//! Run it with `cargo run -p turnstile --example retry`. The book's "retry" chapter
//! includes the parts between the `ANCHOR` markers.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::Duration;

use turnstile::retry::Retry;
use turnstile::sqlite::rusqlite;
use turnstile::sqlite::{Sqlite, Synchronous};
use turnstile::{Error, Key, Serializer, StrategyError};

const WRITERS: i64 = 4;
const INCREMENTS: i64 = 50;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("app.db");

    // ANCHOR: configure
    let retries = Arc::new(AtomicU32::new(0));
    // Every setting at its default value, spelled out, plus a hook for logs or metrics.
    // `Retry::sqlite` turns SQLite's busy_timeout off, so every busy comes back at once.
    let make_strategy = |retries: Arc<AtomicU32>| -> Result<Retry<Sqlite>, StrategyError> {
        Ok(
            Retry::sqlite(Sqlite::new(&path).synchronous(Synchronous::Normal))
                .base(Duration::from_millis(1))? // first backoff ceiling
                .cap(Duration::from_millis(100))? // largest backoff ceiling
                .aging(Some(Duration::from_millis(30)))? // then the ceiling shrinks
                .max_attempts(100_000)? // runs of one op before Error::Contended
                .max_elapsed(Some(Duration::from_secs(30)))? // time budget, ops included
                .idle_connections(8) // idle connections kept between calls
                .on_retry(move |event| {
                    // event.attempt, event.elapsed, event.delay, event.reason
                    if event.attempt > 0 {
                        retries.fetch_add(1, Ordering::Relaxed);
                    }
                }),
        )
    };
    // ANCHOR_END: configure

    let setup = make_strategy(Arc::clone(&retries))?;
    setup.run(&Key::whole(), |db| {
        db.execute_batch(
            "CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
             INSERT INTO counters VALUES ('hits', 0);",
        )
    })?;

    // ANCHOR: writers
    // Four independent strategies, each with its own connections: as far as SQLite can
    // tell, four processes. Each read-modify-write runs in BEGIN IMMEDIATE … COMMIT, so
    // SQLite lets one writer in at a time and the others retry.
    let writers: Vec<_> = (0..WRITERS)
        .map(|_| {
            let strategy = make_strategy(Arc::clone(&retries));
            thread::spawn(move || -> Result<(), Error<rusqlite::Error>> {
                let strategy = strategy.map_err(Error::widen)?;
                for _ in 0..INCREMENTS {
                    strategy.run(&Key::whole(), |db| {
                        let value: i64 = db.query_row(
                            "SELECT value FROM counters WHERE name = 'hits'",
                            [],
                            |r| r.get(0),
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
    for writer in writers {
        writer.join().expect("a writer panicked")?;
    }
    // ANCHOR_END: writers
    let hits: i64 = setup.run(&Key::whole(), |db| {
        db.query_row("SELECT value FROM counters WHERE name = 'hits'", [], |r| {
            r.get(0)
        })
    })?;
    assert_eq!(hits, WRITERS * INCREMENTS);
    println!(
        "{WRITERS} writers x {INCREMENTS} increments = {hits}, after {} retries",
        retries.load(Ordering::Relaxed)
    );

    // ANCHOR: attempt
    // The op may run more than once: `attempt()` says which run this is. Keep effects
    // outside the database (a mail, an HTTP call) out of it, or make them idempotent.
    let attempt = setup.run(&Key::whole(), |db| {
        db.execute(
            "UPDATE counters SET value = value + 1 WHERE name = 'hits'",
            [],
        )?;
        Ok::<_, rusqlite::Error>(db.attempt())
    })?;
    println!("committed on attempt {attempt}");
    // ANCHOR_END: attempt

    // ANCHOR: contended
    // Past its budget the strategy gives up with Error::Contended, rolled back.
    let holder = rusqlite::Connection::open(&path)?;
    holder.execute_batch("BEGIN IMMEDIATE")?; // another writer that never lets go
    let impatient = Retry::sqlite(Sqlite::new(&path)).max_attempts(3)?;
    match impatient.run(&Key::whole(), |db| db.execute("DELETE FROM counters", [])) {
        Err(e @ Error::Contended { .. }) => println!("{e}"),
        other => return Err(format!("expected Contended, got {other:?}").into()),
    }
    holder.execute_batch("ROLLBACK")?;
    // ANCHOR_END: contended
    Ok(())
}
