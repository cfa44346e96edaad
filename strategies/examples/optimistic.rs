//! The `optimistic` strategy: no lock; the op reads versioned records and buffers its
//! writes, and the commit compares-and-sets them in one transaction, rerunning the op on
//! a conflict — seed 003's serial numbers, with the check and the write made one step.
//!
//! Run it with `cargo run -p turnstile --features optimistic --example optimistic`. The
//! book's "optimistic" chapter includes the parts between the `ANCHOR` markers.

use std::sync::Arc;
use std::thread;
use std::time::Duration;

use turnstile::lock::MutexLock;
use turnstile::optimistic::{Optimistic, StoreError, Versioned, Versions};
use turnstile::sqlite::{Sqlite, Synchronous};
use turnstile::{Error, Key, Locked, Serializer};

const THREADS: i64 = 4;
const INCREMENTS: i64 = 25;

// ANCHOR: op
/// Adds one to the counter record `id`: a read (its version remembered) and a buffered
/// write, compared-and-set at commit.
fn increment(db: &mut Versioned<Sqlite>, id: &str) -> Result<i64, StoreError> {
    let n = db.read(id)?.map_or(0, |v| decode(&v));
    db.write(id, (n + 1).to_le_bytes())?;
    Ok(n + 1)
}
// ANCHOR_END: op

fn decode(bytes: &[u8]) -> i64 {
    i64::from_le_bytes(bytes.try_into().expect("an 8-byte counter"))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let db = Sqlite::new(dir.path().join("app.db")).synchronous(Synchronous::Normal);

    // ANCHOR: configure
    // Every setting at its default value, spelled out.
    let versions = Versions::new(db.clone()).table("turnstile_versions")?; // the record table
    let strategy = Optimistic::over(versions)
        .max_attempts(16)? // runs of one op before Error::Contended
        .backoff(Duration::from_millis(1), Duration::from_millis(100))? // full jitter
        .timeout(Some(Duration::from_secs(30)))?; // time budget of a call, ops included
    let strategy = Arc::new(strategy);
    // ANCHOR_END: configure

    // Open the database once before the threads start (it creates the file, switches it
    // to WAL and creates the record table), so they don't all race to do it.
    strategy.run(&Key::new("hits")?, |db| db.read("hits"))?;

    // ANCHOR: threads
    // Four threads increment one record with no lock at all: ops overlap, and a commit
    // that finds the record changed since its read is refused and the op rerun.
    let workers: Vec<_> = (0..THREADS)
        .map(|_| {
            let strategy = Arc::clone(&strategy);
            thread::spawn(move || -> Result<u32, Error<StoreError>> {
                let mut reruns = 0;
                for _ in 0..INCREMENTS {
                    reruns += strategy.run(&Key::new("hits")?, |db| {
                        increment(db, "hits")?;
                        Ok(db.attempt() - 1)
                    })?;
                }
                Ok(reruns)
            })
        })
        .collect();
    let mut reruns = 0;
    for worker in workers {
        reruns += worker.join().expect("a worker panicked")?;
    }
    // ANCHOR_END: threads
    let hits = strategy.run(&Key::new("hits")?, |db| {
        Ok::<_, StoreError>(db.read("hits")?.map_or(0, |v| decode(&v)))
    })?;
    assert_eq!(hits, THREADS * INCREMENTS, "no update lost");
    println!("{THREADS} threads x {INCREMENTS} increments = {hits}, after {reruns} reruns");

    // ANCHOR: conflict
    // A writer that commits between this op's read and its commit: the commit finds the
    // version moved, rolls back and reruns the op, which reads the new value.
    let key = Key::new("hits")?;
    let (other, other_key) = (Arc::clone(&strategy), key.clone());
    let seen = strategy.run(&key, move |db| {
        let mine = increment(db, "hits")?;
        if db.attempt() == 1 {
            let theirs = other.run(&other_key, |db| increment(db, "hits"));
            assert!(theirs.is_ok(), "the other writer commits first");
        }
        Ok::<_, StoreError>((mine, db.attempt()))
    })?;
    assert_eq!(seen, (hits + 2, 2));
    println!(
        "the conflicting op committed {} on attempt {}",
        seen.0, seen.1
    );
    // ANCHOR_END: conflict

    // ANCHOR: contended
    // With one attempt allowed, the same conflict ends in Error::Contended.
    let once = Arc::new(Optimistic::new(db.clone()).max_attempts(1)?);
    let (other, other_key) = (Arc::clone(&once), key.clone());
    let refused = once.run(&key, move |db| {
        increment(db, "hits")?;
        let _ = other.run(&other_key, |db| increment(db, "hits"));
        Ok::<_, StoreError>(())
    });
    match refused {
        Err(e @ Error::Contended { .. }) => println!("{e}"),
        other => return Err(format!("expected Contended, got {other:?}").into()),
    }
    // ANCHOR_END: contended

    // ANCHOR: locked
    // The same ops run under a lock strategy too, where they cannot conflict.
    let locked = Locked::new(MutexLock::new(), Versions::new(db));
    let n = locked.run(&Key::new("hits")?, |db| increment(db, "hits"))?;
    println!("under a lock: {n}");
    // ANCHOR_END: locked
    Ok(())
}
