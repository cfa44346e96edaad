//! The `redis` strategy: a Redis lease lock with fencing tokens and a renewing watchdog,
//! around a SQLite file; what a lost lease looks like; and Redlock over several servers.
//!
//! Needs a Redis server: `TURNSTILE_REDIS_URL`, default `redis://127.0.0.1:6379`
//! (`scripts/services` starts one), and `redis-server` on `PATH` for the three private
//! servers of the Redlock part. Run it with
//! `cargo run -p turnstile --features redis --example redis`. The book's "redis and
//! redlock" chapter includes the parts between the `ANCHOR` markers.

use std::thread;
use std::time::Duration;

use turnstile::lock::{RedisLock, RedlockLock};
use turnstile::sqlite::rusqlite;
use turnstile::sqlite::{Sqlite, Synchronous};
use turnstile::{Error, Key, Lock, Locked, Serializer};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("TURNSTILE_REDIS_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let dir = tempfile::tempdir()?;
    let db = Sqlite::new(dir.path().join("app.db")).synchronous(Synchronous::Normal);

    // ANCHOR: configure
    // Every setting at its default value, spelled out.
    let lock = RedisLock::builder(url.as_str())
        .ttl(Duration::from_secs(8)) // a lease lives this long unless renewed
        .renew_every(Duration::from_secs(8) / 3) // the watchdog renews at TTL/3
        .renewal(true) // renew while the op runs
        .max_renewals(1000) // at most this many renewals per lease
        .connect_timeout(Duration::from_secs(2))
        .response_timeout(Duration::from_secs(1)) // per command
        .poll_interval(Duration::from_millis(100)) // a waiter's fallback poll
        .key_prefix("turnstile") // of every Redis key and channel
        .fencing(true) // issue fencing tokens
        .build()?;
    lock.ping()?; // build() connects lazily; ping shows a wrong address or password now
    let strategy = Locked::new(lock, db);
    // ANCHOR_END: configure

    // ANCHOR: fence
    // Each lease carries a fence that rises with every grant; the resource checked it
    // (and recorded it in `turnstile_fences`) in the op's own transaction.
    let key = Key::new("report")?;
    strategy.run(&key, |db| {
        db.execute_batch("CREATE TABLE runs (fence INTEGER)")
    })?;
    let mut fences = Vec::new();
    for _ in 0..3 {
        let fence = strategy.run(&key, |db| {
            let fence = db.fence().expect("the redis strategy fences").0;
            db.execute("INSERT INTO runs VALUES (?1)", [fence as i64])?;
            Ok::<_, rusqlite::Error>(fence)
        })?;
        fences.push(fence);
    }
    assert!(
        fences.windows(2).all(|w| w[0] < w[1]),
        "fences rise: {fences:?}"
    );
    println!("fences of three leases: {fences:?}");
    // ANCHOR_END: fence

    // ANCHOR: lease_lost
    // A lease that runs out before the op commits: the op is rolled back, the caller
    // gets Error::LeaseLost. (Renewal off and a 200 ms TTL, to make it happen here; with
    // renewal on, it takes a holder that cannot reach Redis in time.)
    let short = RedisLock::builder(url.as_str())
        .ttl(Duration::from_millis(200))
        .renewal(false)
        .build()?;
    let fragile = Locked::new(short, strategy.connector().clone());
    let slow = fragile.run(&key, |db| {
        db.execute("INSERT INTO runs VALUES (0)", [])?;
        thread::sleep(Duration::from_millis(400)); // a GC pause, a SIGSTOP, a slow disk…
        Ok::<_, rusqlite::Error>(())
    });
    match slow {
        Err(e @ Error::LeaseLost) => println!("{e}"),
        other => return Err(format!("expected LeaseLost, got {other:?}").into()),
    }
    let zeros: i64 = strategy.run(&key, |db| {
        db.query_row("SELECT count(*) FROM runs WHERE fence = 0", [], |r| {
            r.get(0)
        })
    })?;
    assert_eq!(zeros, 0, "the op whose lease was lost must not commit");
    // ANCHOR_END: lease_lost

    // ANCHOR: redlock
    // Redlock: a lease on a majority of N independent servers — three private
    // `redis-server`s here (in production, the spec `redlock://h1:6379,h2:6379,h3:6379`).
    // One server under several names or databases is refused: it would vote more than once.
    let servers = Servers::start(3)?;
    let redlock = RedlockLock::builder(servers.urls()).build()?;
    redlock.ping_all()?;
    println!(
        "redlock: quorum {} of {}; fences: {}",
        redlock.quorum(),
        redlock.servers(),
        redlock.capabilities().fences
    );
    let unfenced = Locked::new(redlock, strategy.connector().clone());
    let fence = unfenced.run(&key, |db| Ok::<_, rusqlite::Error>(db.fence()))?;
    assert_eq!(fence, None, "Redlock issues no fencing token");
    // ANCHOR_END: redlock
    Ok(())
}

/// Private `redis-server`s on free loopback ports, keeping nothing on disk; stopped when
/// dropped.
struct Servers(Vec<(std::process::Child, u16)>);

impl Servers {
    fn start(n: usize) -> Result<Self, Box<dyn std::error::Error>> {
        let mut servers = Servers(Vec::new());
        for _ in 0..n {
            // A free port: the OS picks one for a listener that is then closed.
            let port = std::net::TcpListener::bind("127.0.0.1:0")?
                .local_addr()?
                .port();
            let child = std::process::Command::new("redis-server")
                .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
                .args(["--save", "", "--appendonly", "no"])
                .stdout(std::process::Stdio::null())
                .spawn()
                .map_err(|e| format!("redis-server (needed on PATH for Redlock): {e}"))?;
            servers.0.push((child, port));
            // Up once it answers.
            let started = std::time::Instant::now();
            while RedisLock::builder(format!("redis://127.0.0.1:{port}").as_str())
                .build()?
                .ping()
                .is_err()
            {
                if started.elapsed() > Duration::from_secs(10) {
                    return Err(format!("redis-server on port {port} did not start").into());
                }
                thread::sleep(Duration::from_millis(20));
            }
        }
        Ok(servers)
    }

    fn urls(&self) -> Vec<String> {
        self.0
            .iter()
            .map(|(_, port)| format!("redis://127.0.0.1:{port}"))
            .collect()
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        for (child, _) in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
