//! The `queue` strategy: one worker thread owns the SQLite connection (seeds 000 and 001),
//! many threads hand it ops, group commit batches them, an op's own error still reaches
//! its caller, a full queue refuses `try_submit`, and `close` drains.
//!
//! Run it with `cargo run -p turnstile --example queue`. The book's "queue" chapter
//! includes the parts between the `ANCHOR` markers.

use std::sync::{Arc, mpsc};
use std::thread;
use std::time::Duration;

use turnstile::queue::Queue;
use turnstile::sqlite::rusqlite::{self, ErrorCode};
use turnstile::sqlite::{Sqlite, Synchronous};
use turnstile::{Error, Key, Serializer, TxMode};

const THREADS: i64 = 8;
const INSERTS: i64 = 100;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let db = Sqlite::new(dir.path().join("app.db")).synchronous(Synchronous::Normal);

    // ANCHOR: build
    // Every setting at its default value, spelled out.
    let queue = Queue::builder()
        .capacity(1024) // jobs waiting in the channel before submitters wait
        .timeout(Some(Duration::from_secs(30))) // longest wait for a slot and the op's turn
        .tx_mode(TxMode::Transaction) // each op inside BEGIN IMMEDIATE … COMMIT
        .group_commit(true) // ops already queued share one transaction and one commit
        .max_batch(256) // at most this many ops per group commit
        .build(db)?;
    let queue = Arc::new(queue);
    let key = Key::whole();
    // ANCHOR_END: build

    queue.run(&key, |db| {
        db.execute_batch("CREATE TABLE users (name TEXT PRIMARY KEY, added_by INTEGER)")
    })?;

    // ANCHOR: threads
    // Eight threads, one connection: the worker runs every op in turn, so no op ever sees
    // "database is locked", and ops queued together commit together.
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let queue = Arc::clone(&queue);
            let key = key.clone();
            thread::spawn(move || -> Result<(), Error<rusqlite::Error>> {
                for i in 0..INSERTS {
                    queue.run(&key, move |db| {
                        db.execute(
                            "INSERT INTO users VALUES (?1, ?2)",
                            rusqlite::params![format!("user-{t}-{i}"), t],
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
    // ANCHOR_END: threads
    let users: i64 = queue.run(&key, |db| {
        db.query_row("SELECT count(*) FROM users", [], |r| r.get(0))
    })?;
    assert_eq!(users, THREADS * INSERTS);
    println!("{THREADS} threads inserted {users} rows through one worker");

    // ANCHOR: op_error
    // Three ops submitted together usually share one transaction. The duplicate fails
    // alone (rolled back to its savepoint); its caller gets the UNIQUE violation itself,
    // and the other two commit.
    let first = queue.submit(&key, |db| {
        db.execute("INSERT INTO users VALUES ('ada', 0)", [])
    })?;
    let duplicate = queue.submit(&key, |db| {
        db.execute("INSERT INTO users VALUES ('user-0-0', 0)", [])
    })?;
    let last = queue.submit(&key, |db| {
        db.execute("INSERT INTO users VALUES ('bob', 0)", [])
    })?;
    first.wait()?;
    match duplicate.wait() {
        Err(Error::Op(e)) if e.sqlite_error_code() == Some(ErrorCode::ConstraintViolation) => {
            println!("the duplicate came back to its caller: {e}");
        }
        other => return Err(format!("expected a UNIQUE violation, got {other:?}").into()),
    }
    last.wait_timeout(Duration::from_secs(10))?;
    // ANCHOR_END: op_error
    let users: i64 = queue.run(&key, |db| {
        db.query_row("SELECT count(*) FROM users", [], |r| r.get(0))
    })?;
    assert_eq!(users, THREADS * INSERTS + 2);

    // ANCHOR: try_submit
    // An event loop must never block: `try_submit` refuses at once when the queue is full.
    let small = Queue::builder()
        .capacity(1)
        .build(Sqlite::new(dir.path().join("small.db")).synchronous(Synchronous::Normal))?;
    let (started_tx, started) = mpsc::channel();
    let (let_go, let_go_rx) = mpsc::channel::<()>();
    let busy = small.submit(&key, move |_db| {
        started_tx.send(()).ok(); // the worker is now busy with this op…
        let_go_rx.recv().ok();
        Ok::<_, rusqlite::Error>(())
    })?;
    started.recv()?;
    let queued = small.try_submit(&key, |_db| Ok::<_, rusqlite::Error>(()))?; // …one slot…
    let refused = small.try_submit(&key, |_db| Ok::<_, rusqlite::Error>(()));
    assert!(matches!(refused, Err(Error::Full)), "…and no more");
    let_go.send(())?;
    busy.wait()?;
    queued.wait()?;
    // ANCHOR_END: try_submit

    // ANCHOR: close
    // Closing runs every job accepted before it, exactly once, then refuses new work.
    let pending = queue.submit(&key, |db| {
        db.query_row("SELECT count(*) FROM users", [], |r| r.get::<_, i64>(0))
    })?;
    queue.close();
    assert_eq!(pending.wait()?, THREADS * INSERTS + 2);
    let late = queue.run(&key, |_db| Ok::<_, rusqlite::Error>(()));
    assert!(matches!(late, Err(Error::Closed)));
    // ANCHOR_END: close
    println!(
        "closed: later calls get `{}`",
        Error::<rusqlite::Error>::Closed
    );
    Ok(())
}
