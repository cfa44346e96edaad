//! The `file-lock` strategy: several processes share one SQLite file through `flock` on
//! striped lock files next to it (seed 002: fifty processes and a lock file).
//!
//! The example re-executes itself as worker processes. Run it with
//! `cargo run -p turnstile --example file_lock`. The book's "file-lock" chapter includes
//! the parts between the `ANCHOR` markers.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use turnstile::lock::{FileLock, FileLockError};
use turnstile::sqlite::{Sqlite, Synchronous};
use turnstile::{Connect, Error, Key, Lock, LockName, Locked, Serializer};

const PROCESSES: i64 = 4;
const INCREMENTS: i64 = 25;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if let [_, role, path] = args.as_slice()
        && role == "worker"
    {
        return worker(Path::new(path));
    }

    let dir = tempfile::tempdir()?;
    let path = dir.path().join("app.db");
    let db = Sqlite::new(&path).synchronous(Synchronous::Normal);
    let strategy = Locked::new(FileLock::beside(&path)?, db);
    strategy.run(&Key::whole(), |db| {
        db.execute_batch(
            "CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
             INSERT INTO counters VALUES ('hits', 0);",
        )
    })?;

    // ANCHOR: processes
    // Four processes (this program again, as workers), each incrementing the counter.
    let exe = std::env::current_exe()?;
    let children = (0..PROCESSES)
        .map(|_| Command::new(&exe).arg("worker").arg(&path).spawn())
        .collect::<Result<Vec<_>, _>>()?;
    for mut child in children {
        assert!(child.wait()?.success(), "a worker failed");
    }
    // ANCHOR_END: processes
    let hits: i64 = strategy.run(&Key::whole(), |db| {
        db.query_row("SELECT value FROM counters WHERE name = 'hits'", [], |r| {
            r.get(0)
        })
    })?;
    assert_eq!(hits, PROCESSES * INCREMENTS);
    println!("{PROCESSES} processes x {INCREMENTS} increments = {hits}");

    // ANCHOR: configure
    // Every setting at its default, spelled out. All processes sharing a lock directory
    // must agree on the stripe count; the directory records it and refuses another.
    let lock = FileLock::builder(FileLock::dir_beside(&path))
        .stripes(64) // lock files the keys are spread over
        .max_poll(Duration::from_millis(10)) // longest sleep between try_lock polls
        .open()?;
    let name = LockName::new(strategy.connector().identity(), Key::whole());
    println!(
        "{} maps to {}",
        name,
        lock.dir()
            .join(FileLock::stripe_file_name(lock.stripe_of(&name)))
            .display()
    );
    // ANCHOR_END: configure

    // ANCHOR: wait
    // A second FileLock on the same directory opens its own descriptors, so it excludes
    // like another process would: while one holds the stripe, the other times out.
    let other = FileLock::beside(&path)?;
    let held = lock.acquire(&name, None)?;
    let deadline = std::time::Instant::now() + Duration::from_millis(50);
    match other.acquire(&name, Some(deadline)) {
        Err(Error::Timeout { waited }) => println!("the other holder waited {waited:?}"),
        Err(e) => return Err(e.into()),
        Ok(_) => return Err("two holders of one stripe".into()),
    }
    drop(held);
    let _now_ours = other.acquire(
        &name,
        Some(std::time::Instant::now() + Duration::from_secs(5)),
    )?;
    // ANCHOR_END: wait

    // ANCHOR: refuse
    // A world-writable lock directory (seed 002 used /tmp) is refused: anyone on the
    // machine could plant or hold its lock files.
    let shared = dir.path().join("shared-locks");
    std::fs::create_dir(&shared)?;
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777))?;
    match FileLock::new(&shared) {
        Err(e @ FileLockError::WorldWritable { .. }) => println!("refused: {e}"),
        other => return Err(format!("expected a refusal, got {other:?}").into()),
    }
    // ANCHOR_END: refuse
    Ok(())
}

// ANCHOR: worker
/// One worker process: opens the strategy on the shared database and increments.
fn worker(path: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let db = Sqlite::new(path).synchronous(Synchronous::Normal);
    // Lock files in `<db>.locks/`, created with mode 0700 by the first process.
    let strategy = Locked::new(FileLock::beside(path)?, db);
    for _ in 0..INCREMENTS {
        strategy.run(&Key::new("hits")?, |db| {
            let value: i64 =
                db.query_row("SELECT value FROM counters WHERE name = 'hits'", [], |r| {
                    r.get(0)
                })?;
            db.execute(
                "UPDATE counters SET value = ?1 WHERE name = 'hits'",
                [value + 1],
            )
        })?;
    }
    Ok(())
}
// ANCHOR_END: worker
