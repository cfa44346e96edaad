//! The `mutex` strategy configured explicitly, and what a caller sees when the lock is
//! held past its wait: `Error::Timeout`, with its op never run.
//!
//! Run it with `cargo run -p turnstile --example mutex`. The book's "mutex" chapter
//! includes the parts between the `ANCHOR` markers.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::thread;
use std::time::Duration;

use turnstile::lock::MutexLock;
use turnstile::sqlite::rusqlite;
use turnstile::sqlite::{Sqlite, Synchronous};
use turnstile::{Error, Key, KeyScope, Locked, Serializer, TxMode};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let db = Sqlite::new(dir.path().join("app.db")).synchronous(Synchronous::Normal);

    // ANCHOR: configure
    // Every setting, at its default value except the timeout.
    let strategy = Locked::new(MutexLock::new(), db)
        .tx_mode(TxMode::Transaction) // the op runs inside BEGIN IMMEDIATE … COMMIT
        .key_scope(KeyScope::Whole) // one lock for the whole SQLite file
        .pool_size(8)? // at most 8 connections open at once
        .timeout(Some(Duration::from_secs(5)))?; // wait at most 5 s to start (default 30 s)
    // ANCHOR_END: configure
    let strategy = Arc::new(strategy);
    let key = Key::new("report")?;

    // ANCHOR: timeout
    // One thread holds the key until we tell it to let go…
    let (entered_tx, entered) = mpsc::channel();
    let (let_go, let_go_rx) = mpsc::channel::<()>();
    let holder = {
        let strategy = Arc::clone(&strategy);
        let key = key.clone();
        thread::spawn(move || {
            strategy.run(&key, move |_db| {
                entered_tx.send(()).ok();
                let_go_rx.recv().ok();
                Ok::<_, rusqlite::Error>(())
            })
        })
    };
    entered.recv()?;

    // …so a caller that waits at most 20 ms gives up, and its op never runs.
    let ran = Arc::new(AtomicBool::new(false));
    let impatient = strategy.run_timeout(&key, Duration::from_millis(20), {
        let ran = Arc::clone(&ran);
        move |_db| {
            ran.store(true, Ordering::SeqCst);
            Ok::<_, rusqlite::Error>(())
        }
    });
    match impatient {
        Err(Error::Timeout { waited }) => println!("gave up after {waited:?}"),
        other => return Err(format!("expected a timeout, got {other:?}").into()),
    }
    assert!(!ran.load(Ordering::SeqCst), "a timed-out op must not run");
    // ANCHOR_END: timeout

    let_go.send(())?;
    holder.join().expect("the holder panicked")?;
    Ok(())
}
