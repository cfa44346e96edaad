//! The `mysql` strategy: MySQL / MariaDB `GET_LOCK` on a dedicated connection, fenced,
//! around data in the same server — seed 004's "send the notification once", with its
//! details fixed.
//!
//! Needs a MySQL or MariaDB server: `TURNSTILE_MYSQL_URL`, default
//! `mysql://root@127.0.0.1:3306/test` (`scripts/services` starts one). Run it with
//! `cargo run -p turnstile --features mysql --example mysql`. The book's "mysql" chapter
//! includes the parts between the `ANCHOR` markers.

use std::sync::Arc;
use std::thread;
use std::time::Duration;

use mysql::prelude::Queryable;
use turnstile::lock::{MySqlLock, mysql_server_lock_name};
use turnstile::resource::MySql;
use turnstile::spec::{Registry, Setup, redact_url};
use turnstile::{Connect, Error, Key, LockName, Locked, Serializer};

const CALLERS: usize = 8;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("TURNSTILE_MYSQL_URL")
        .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".to_owned());

    // ANCHOR: configure
    // The data lives in MySQL too, so every host sees it. Every setting at its default
    // value, spelled out.
    let db = MySql::new(&url)?.connect_timeout(Duration::from_secs(10))?;
    let lock = MySqlLock::new(&url)?
        .fencing(true) // bump a counter row per grant: the fencing token
        .connect_timeout(Duration::from_secs(10))? // to open a lock connection
        .max_idle(4); // idle lock connections kept for reuse
    let strategy = Locked::new(lock, db)
        .timeout(Some(Duration::from_secs(30)))? // seed 004 waited 45 s
        .pool_size(8)?; // data connections open at once
    // ANCHOR_END: configure

    // ANCHOR: schema
    // DDL commits implicitly in MySQL, so it cannot run inside the strategy's transaction
    // (an op that tried would fail with `Error::TransactionEnded`): set the schema up beforehand.
    let mut admin = MySql::new(&url)?
        .connect()
        .map_err(|e| e as Box<dyn std::error::Error>)?;
    admin.query_drop(
        "CREATE TABLE IF NOT EXISTS example_notifications (
             id BIGINT UNSIGNED PRIMARY KEY, message TEXT NOT NULL, sent BOOL NOT NULL)",
    )?;
    admin.query_drop(
        "CREATE TABLE IF NOT EXISTS example_mails (
             notification BIGINT UNSIGNED NOT NULL, body TEXT NOT NULL)",
    )?;
    // ANCHOR_END: schema
    // A notification of our own (a fresh id), so runs sharing the server don't meet.
    let id: u64 = fastrand::u64(1..u64::MAX >> 1);
    admin.exec_drop(
        "INSERT INTO example_notifications VALUES (?, 'Hello world', FALSE)",
        (id,),
    )?;

    // ANCHOR: send_once
    // Eight callers race to send notification `id`. Under the lock for that notification
    // the first one sends (here: writes the mail to an outbox table in the same
    // transaction) and marks it sent; the others find it sent.
    let strategy = Arc::new(strategy);
    let callers: Vec<_> = (0..CALLERS)
        .map(|_| {
            let strategy = Arc::clone(&strategy);
            thread::spawn(move || -> Result<bool, Error<mysql::Error>> {
                let key = Key::new(format!("notification/{id}"))?;
                strategy.run(&key, move |db| {
                    let sent: Option<bool> = db
                        .exec_first("SELECT sent FROM example_notifications WHERE id = ?", (id,))?;
                    if sent == Some(true) {
                        return Ok(false);
                    }
                    db.exec_drop(
                        "INSERT INTO example_mails
                         SELECT id, message FROM example_notifications WHERE id = ?",
                        (id,),
                    )?;
                    db.exec_drop(
                        "UPDATE example_notifications SET sent = TRUE WHERE id = ?",
                        (id,),
                    )?;
                    Ok(true)
                })
            })
        })
        .collect();
    let mut senders = 0;
    for caller in callers {
        senders += usize::from(caller.join().expect("a caller panicked")?);
    }
    // ANCHOR_END: send_once
    let mails: Option<u64> = strategy.run(&Key::new("check")?, move |db| {
        db.exec_first(
            "SELECT count(*) FROM example_mails WHERE notification = ?",
            (id,),
        )
    })?;
    assert_eq!((senders, mails), (1, Some(1)), "sent exactly once");
    println!(
        "{CALLERS} callers, {senders} sender, {} mail",
        mails.unwrap_or(0)
    );

    // ANCHOR: names
    // The server-wide GET_LOCK name of a key: `identity|key` when it fits 64 characters
    // of lower-case printable ASCII, else a stable hash under a prefix no raw name has.
    let identity = strategy.connector().identity();
    for key in ["notification/7", "Notification/7"] {
        let name = LockName::new(identity, Key::new(key)?);
        println!("{key:>16} -> {}", mysql_server_lock_name(&name));
    }
    // ANCHOR_END: names

    // ANCHOR: spec
    // The same strategy by spec, as the `turnstile` command line builds it; and a queue
    // in front of the same lock, which takes it once per batch of this process's ops.
    let registry = Registry::builtin_mysql();
    let queued = format!("queue+{url}");
    for spec in [url.as_str(), queued.as_str()] {
        let chosen = registry.open(spec, &Setup::new(MySql::new(&url)?))?;
        let caps = chosen.capabilities();
        println!(
            "{}: excludes across {}, fences: {}",
            redact_url(spec),
            caps.scope.as_str(),
            caps.fences
        );
    }
    // ANCHOR_END: spec
    admin.exec_drop("DELETE FROM example_mails WHERE notification = ?", (id,))?;
    admin.exec_drop("DELETE FROM example_notifications WHERE id = ?", (id,))?;
    Ok(())
}
