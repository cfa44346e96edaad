//! The `postgres` strategies: session advisory locks on a dedicated connection, fenced
//! (`postgres://…`), and transaction advisory locks inside the data's own transaction
//! (`pg-xact`), both around data in the same PostgreSQL database.
//!
//! Needs a PostgreSQL server: `TURNSTILE_POSTGRES_URL`, default
//! `postgres://postgres@127.0.0.1:5432/test` (`scripts/services` starts one). Run it with
//! `cargo run -p turnstile --features postgres --example postgres`. The book's "postgres"
//! chapter includes the parts between the `ANCHOR` markers.

use std::sync::Arc;
use std::thread;
use std::time::Duration;

use turnstile::lock::{PgXactLocked, PostgresLock, advisory_key};
use turnstile::resource::Postgres;
use turnstile::spec::{Registry, Setup, redact_url};
use turnstile::{Connect, Error, Key, LockName, Locked, Serializer};

const THREADS: i64 = 4;
const TRANSFERS: i64 = 10;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("TURNSTILE_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());

    // ANCHOR: configure
    // Every setting at its default value, spelled out.
    let db = Postgres::new(&url)?.connect_timeout(Duration::from_secs(10))?;
    let lock = PostgresLock::new(&url)?
        .fencing(true) // bump a counter row per grant: the fencing token
        .max_idle(4); // idle lock connections kept for reuse
    let session = Locked::new(lock, db.clone())
        .timeout(Some(Duration::from_secs(30)))? // wait for the lock (lock_timeout)
        .pool_size(8)?; // data connections open at once
    // ANCHOR_END: configure

    // Accounts of our own (fresh ids), so runs sharing the server don't meet.
    let base: i64 = fastrand::i64(1..i64::MAX >> 2);
    let (a, b) = (base, base + 1);
    session.run(&Key::new("schema")?, move |db| {
        db.batch_execute(
            "CREATE TABLE IF NOT EXISTS example_accounts (id BIGINT PRIMARY KEY, balance BIGINT NOT NULL)",
        )?;
        db.execute(
            "INSERT INTO example_accounts VALUES ($1, 1000), ($2, 1000)",
            &[&a, &b],
        )
    })?;
    let session = Arc::new(session);

    // ANCHOR: transfer
    // A transfer holds both accounts' locks: `run_many` takes them in sorted order, so
    // two transfers in opposite directions cannot deadlock.
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let session = Arc::clone(&session);
            let (from, to) = if t % 2 == 0 { (a, b) } else { (b, a) };
            thread::spawn(move || -> Result<(), Error<postgres::Error>> {
                let keys = [
                    Key::new(format!("account/{from}"))?,
                    Key::new(format!("account/{to}"))?,
                ];
                for _ in 0..TRANSFERS {
                    session.run_many(&keys, move |db| {
                        let fence = db.fence(); // checked by the resource already
                        assert!(fence.is_some());
                        db.execute(
                            "UPDATE example_accounts SET balance = balance - 10 WHERE id = $1",
                            &[&from],
                        )?;
                        db.execute(
                            "UPDATE example_accounts SET balance = balance + 10 WHERE id = $1",
                            &[&to],
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
    // ANCHOR_END: transfer
    let total: i64 = session.run(&Key::new("check")?, move |db| {
        db.query_one(
            "SELECT sum(balance)::BIGINT FROM example_accounts WHERE id IN ($1, $2)",
            &[&a, &b],
        )
        .map(|row| row.get(0))
    })?;
    assert_eq!(total, 2000, "transfers conserve money");
    println!("{THREADS} threads x {TRANSFERS} transfers; total still {total}");

    // ANCHOR: xact
    // pg-xact: BEGIN, pg_advisory_xact_lock per key, the op, COMMIT. The lock ends with
    // the transaction, and a dead session rolls back its writes with it: no fence needed,
    // and it works behind a transaction-pooling proxy.
    let xact = PgXactLocked::new(db.clone())
        .timeout(Some(Duration::from_secs(30)))? // the default
        .pool_size(8)?; // the default
    let balance: i64 = xact.run(&Key::new(format!("account/{a}"))?, move |db| {
        db.execute(
            "UPDATE example_accounts SET balance = balance + 1 WHERE id = $1",
            &[&a],
        )?;
        db.query_one("SELECT balance FROM example_accounts WHERE id = $1", &[&a])
            .map(|row| row.get(0))
    })?;
    println!("pg-xact: account {a} now holds {balance}");
    // ANCHOR_END: xact

    // ANCHOR: keys
    // Both modes lock the same 64-bit key for a name: a documented stable hash (FNV-1a
    // 64 of identity, NUL, key), so they exclude each other, from any process or host.
    let name = LockName::new(db.identity(), Key::new(format!("account/{a}"))?);
    println!("account/{a} -> pg_advisory_lock({})", advisory_key(&name));
    // ANCHOR_END: keys

    // ANCHOR: spec
    // Both by spec, over PostgreSQL data, as the `turnstile` command line builds them, and
    // a queue in front of the session lock, which takes it once per batch of this
    // process's ops.
    let registry = Registry::builtin_postgres();
    let queued = format!("queue+{url}");
    for spec in [url.as_str(), "pg-xact", queued.as_str()] {
        let chosen = registry.open(spec, &Setup::new(db.clone()))?;
        let caps = chosen.capabilities();
        println!(
            "{}: excludes across {}, fences: {}",
            redact_url(spec),
            caps.scope.as_str(),
            caps.fences
        );
    }
    // ANCHOR_END: spec
    session.run(&Key::new("cleanup")?, move |db| {
        db.execute(
            "DELETE FROM example_accounts WHERE id IN ($1, $2)",
            &[&a, &b],
        )
    })?;
    Ok(())
}
