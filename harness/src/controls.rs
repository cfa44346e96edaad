//! Negative controls: deliberately broken strategies the checkers must catch. A harness
//! that passes these is not testing anything.
//!
//! - `unserialized`: no lock at all, each statement in autocommit.
//! - `racy-version` (seed 003): a lock taken by check-then-set on a version row — read
//!   the row, see it free, write our claim — in two statements, so two callers both see it
//!   free and both "hold" it.
//! - `redis-nofence` (issue 5): the Redis lease lock with fencing off, always in
//!   autocommit — `redis-nofence://127.0.0.1:6379/0?ttl_ms=500` is `redis://…` with only
//!   the lease's TTL between a holder paused past it and its successor. The fenced `redis`
//!   in its transaction survives the same pause (the stale holder's commit is refused).
//! - the in-process `mutex` run across processes, outside its scope (no registration
//!   needed: the builtin one).
//!
//! All claim to exclude across hosts, so every checker applies to them.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rusqlite::{Connection, OptionalExtension, params};
use turnstile::spec::{Registry, Setup, redact_url};
use turnstile::sqlite::Sqlite;
use turnstile::{
    BoxSerializer, Capabilities, Error, HolderDeath, Lease, Lock, LockName, Locked, Scope,
    StrategyError, TxMode,
};

/// A "lock" that grants every request at once.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoLock;

/// A lease of [`NoLock`].
#[derive(Debug)]
pub struct NoLease;

impl Lease for NoLease {}

impl Lock for NoLock {
    type Lease = NoLease;

    fn capabilities(&self) -> Capabilities {
        Capabilities::new(Scope::Hosts, HolderDeath::KernelReleases)
    }

    fn backend_id(&self) -> &str {
        "none"
    }

    fn acquire(&self, _: &LockName, _: Option<Instant>) -> Result<NoLease, StrategyError> {
        Ok(NoLease)
    }
}

/// Seed 003's check-then-set lock: a row per name in a side database, claimed by reading
/// it, pausing for [`RacyVersionLock::window`], then writing the claim — not atomically.
pub struct RacyVersionLock {
    path: PathBuf,
    window: Duration,
    idle: Mutex<Vec<Connection>>,
    id: String,
}

impl std::fmt::Debug for RacyVersionLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RacyVersionLock")
            .field("path", &self.path)
            .field("window", &self.window)
            .finish_non_exhaustive()
    }
}

/// The default pause between the racy lock's read and write: 200 µs.
pub const DEFAULT_RACE_WINDOW: Duration = Duration::from_micros(200);

/// The longest window `racy-version:MICROS` takes: 1 s. Each op waits it out, so a longer
/// one only makes a run crawl (a run's time limit is checked between ops).
pub const MAX_RACE_WINDOW: Duration = Duration::from_secs(1);

impl RacyVersionLock {
    /// A lock table in the SQLite file at `path`.
    pub fn new(path: PathBuf) -> Self {
        let id = format!("racy-version:{}", path.display());
        RacyVersionLock {
            path,
            window: DEFAULT_RACE_WINDOW,
            idle: Mutex::new(Vec::new()),
            id,
        }
    }

    /// Sets the pause between reading the version and writing the claim. Default:
    /// [`DEFAULT_RACE_WINDOW`].
    pub fn window(mut self, window: Duration) -> Self {
        self.window = window;
        self
    }

    fn conn(&self) -> Result<Connection, StrategyError> {
        if let Some(c) = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop() {
            return Ok(c);
        }
        let c = Connection::open(&self.path).map_err(Error::unavailable)?;
        c.busy_timeout(Duration::from_secs(5))
            .map_err(Error::unavailable)?;
        c.execute_batch(
            "PRAGMA journal_mode = WAL;
             CREATE TABLE IF NOT EXISTS racy_lock (
                 name BLOB PRIMARY KEY, version INTEGER NOT NULL, held INTEGER NOT NULL)",
        )
        .map_err(Error::unavailable)?;
        Ok(c)
    }

    fn put(&self, c: Connection) {
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).push(c);
    }
}

/// A lease of [`RacyVersionLock`]: releasing clears the row's `held` flag.
pub struct RacyLease {
    lock: std::sync::Arc<RacyVersionLock>,
    name: Vec<u8>,
}

impl Lease for RacyLease {}

impl Drop for RacyLease {
    fn drop(&mut self) {
        if let Ok(c) = self.lock.conn() {
            let _ = c.execute(
                "UPDATE racy_lock SET held = 0 WHERE name = ?1",
                params![self.name],
            );
            self.lock.put(c);
        }
    }
}

/// [`RacyVersionLock`] shared so its leases can release.
#[derive(Clone, Debug)]
pub struct SharedRacyLock(pub std::sync::Arc<RacyVersionLock>);

impl Lock for SharedRacyLock {
    type Lease = RacyLease;

    fn capabilities(&self) -> Capabilities {
        Capabilities::new(Scope::Hosts, HolderDeath::KernelReleases)
    }

    fn backend_id(&self) -> &str {
        &self.0.id
    }

    fn acquire(
        &self,
        name: &LockName,
        deadline: Option<Instant>,
    ) -> Result<RacyLease, StrategyError> {
        let start = Instant::now();
        let c = self.0.conn()?;
        let result = loop {
            let row: Option<(i64, bool)> = match c
                .query_row(
                    "SELECT version, held FROM racy_lock WHERE name = ?1",
                    params![name.bytes()],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()
            {
                Ok(row) => row,
                Err(e) => break Err(Error::unavailable(e)),
            };
            let (version, held) = row.unwrap_or((0, false));
            if !held {
                // The bug under test: the version was compared above, and is written here
                // without checking it is still the one we read.
                std::thread::sleep(self.0.window);
                let claimed = c.execute(
                    "INSERT INTO racy_lock (name, version, held) VALUES (?1, ?2, 1)
                     ON CONFLICT (name) DO UPDATE SET version = excluded.version, held = 1",
                    params![name.bytes(), version + 1],
                );
                break claimed.map(|_| ()).map_err(Error::unavailable);
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                break Err(Error::Timeout {
                    waited: start.elapsed(),
                });
            }
            std::thread::sleep(Duration::from_micros(100));
        };
        self.0.put(c);
        result.map(|()| RacyLease {
            lock: self.0.clone(),
            name: name.bytes().to_vec(),
        })
    }
}

/// Enough pooled connections that every thread of a run races.
const CONTROL_POOL: usize = 64;

/// Seed 000's control: a pool of threads whose connections give up at once on a busy
/// database (caught by the [`refused`](crate::check::refused) checker).
pub const THREAD_POOL: &str = "thread-pool";

/// The scheme of the fenceless Redis control; the rest of its URL is a `redis://` URL's.
pub const REDIS_NOFENCE: &str = "redis-nofence";

/// Registers `unserialized` into a registry over any resource with transactions (the
/// harness's PostgreSQL and MySQL data have it too): no lock, each statement in
/// autocommit.
pub fn register_unserialized<C: turnstile::Transact + Clone>(registry: &mut Registry<C>) {
    registry.register(
        "unserialized",
        "NEGATIVE CONTROL: no lock, autocommit statements",
        |spec, setup: &Setup<C>| {
            spec.expect_no_arg()?;
            let s = Locked::new(NoLock, setup.connect.clone())
                .tx_mode(TxMode::Autocommit)
                .pool_size(CONTROL_POOL)?;
            Ok(Box::new(s) as BoxSerializer<C::Resource>)
        },
    );
}

/// Registers `unserialized`, `thread-pool`, `racy-version` (`racy-version:MICROS` sets the
/// race window) and, with the `redis` feature, `redis-nofence://…` into `registry`. All but
/// `thread-pool` run in autocommit: only their "lock" stands between two ops.
/// `thread-pool` runs each op in a transaction whose `BEGIN IMMEDIATE` fails at once when
/// another op holds the database.
pub fn register(registry: &mut Registry<Sqlite>) {
    #[cfg(feature = "redis")]
    registry.register(
        REDIS_NOFENCE,
        "NEGATIVE CONTROL: the Redis lease lock without fencing, in autocommit (redis-nofence://host:port/db?ttl_ms=N)",
        |spec, setup: &Setup<Sqlite>| {
            let url = spec
                .arg()
                .and_then(|url| url.split_once("://"))
                .map(|(_, rest)| format!("redis://{rest}"))
                .ok_or_else(|| {
                    Error::Config(format!("{REDIS_NOFENCE} needs a URL: {REDIS_NOFENCE}://host:port/db"))
                })?;
            let lock = turnstile::lock::RedisLock::builder_from_url(&url)?
                .fencing(false)
                .build()?;
            lock.ping()?;
            let s = Locked::new(lock, setup.connect.clone())
                .tx_mode(TxMode::Autocommit)
                .pool_size(CONTROL_POOL)?;
            Ok(Box::new(s) as BoxSerializer<Connection>)
        },
    );
    register_unserialized(registry);
    registry.register(
        THREAD_POOL,
        "NEGATIVE CONTROL: seed 000's thread pool: no lock, each thread's connection gives up at once when another holds SQLite's write lock (busy_timeout 0)",
        |spec, setup: &Setup<Sqlite>| {
            spec.expect_no_arg()?;
            // `BEGIN IMMEDIATE` asks for the write lock before the op runs: with no busy
            // handler, an op that meets another fails at once and writes nothing. The
            // data stays right; the callers get `database is locked`.
            let db = setup.connect.clone().busy_timeout(Duration::ZERO);
            let s = Locked::new(NoLock, db)
                .tx_mode(TxMode::Transaction)
                .pool_size(CONTROL_POOL)?;
            Ok(Box::new(s) as BoxSerializer<Connection>)
        },
    );
    registry.register(
        "racy-version",
        "NEGATIVE CONTROL: seed 003's check-then-set version lock (racy-version:MICROS sets the window, at most 1000000)",
        |spec, setup: &Setup<Sqlite>| {
            let window = match spec.arg() {
                None => DEFAULT_RACE_WINDOW,
                Some(us) => us
                    .parse()
                    .ok()
                    .map(Duration::from_micros)
                    .filter(|w| *w <= MAX_RACE_WINDOW)
                    .ok_or_else(|| {
                        Error::Config(format!(
                            "racy-version takes a window of 0..=1000000 µs, got {:?}",
                            redact_url(us)
                        ))
                    })?,
            };
            let mut lock_path = setup.connect.path().as_os_str().to_owned();
            lock_path.push(".racylock");
            let lock = RacyVersionLock::new(lock_path.into()).window(window);
            let s = Locked::new(
                SharedRacyLock(std::sync::Arc::new(lock)),
                setup.connect.clone(),
            )
            .tx_mode(TxMode::Autocommit)
            .pool_size(CONTROL_POOL)?;
            Ok(Box::new(s) as BoxSerializer<Connection>)
        },
    );
}
