//! Negative controls: deliberately broken strategies the checkers must catch. A harness
//! that passes these is not testing anything.
//!
//! - `unserialized`: no lock at all, each statement in autocommit.
//! - `thread-pool` (seed 000): no lock, each thread's connection gives up at once on a
//!   busy database; caught by `refused`.
//! - `swallow-errors` (seed 001): the real `queue`, whose worker catches an op's error and
//!   carries on — commits what the op wrote, answers an empty result — so the caller never
//!   gets its integrity error; caught by `own_error` on the `unique` workload (and, in a
//!   transaction, by `lost_update`: the failed op did not roll back).
//! - `racy-optimistic` (seed 003, as the seed wrote it), over versioned records beside
//!   `optimistic`: the op reads and buffers its writes as under `optimistic`, then the
//!   commit compares the versions read, pauses (`racy-optimistic:MICROS`), and writes, in
//!   separate store transactions, so two committers that read version `n` both pass and
//!   both write: lost updates (`lost_update`, `linearizable`).
//! - `racy-version` (seed 003's check-then-set applied to a lock): a version row claimed
//!   by reading it, seeing it free and writing our claim, in two statements, so two callers
//!   both see it free and both "hold" it.
//! - `redis-nofence` (issue 5): the Redis lease lock with fencing off, always in
//!   autocommit — `redis-nofence://127.0.0.1:6379/0?ttl_ms=500` is `redis://…` with only
//!   the lease's TTL between a holder paused past it and its successor. The fenced `redis`
//!   in its transaction survives the same pause (the stale holder's commit is refused).
//! - the in-process `mutex` run across processes, outside its scope (no registration
//!   needed: the builtin one).
//!
//! The lock controls claim to exclude across hosts, so every checker applies to them;
//! `swallow-errors` claims what `queue` does, and `racy-optimistic` what `optimistic`
//! does (no exclusion: the workloads' own checkers catch it).

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rusqlite::{Connection, OptionalExtension, params};
#[cfg(feature = "optimistic")]
use turnstile::optimistic::{VersionStore, Versioned, Versions};
use turnstile::spec::{Registry, Setup, Spec, redact_url};
use turnstile::sqlite::Sqlite;
use turnstile::{
    BoxSerializer, Capabilities, Error, HolderDeath, Lease, Lock, LockName, Locked, Scope,
    StrategyError, TxMode,
};
#[cfg(feature = "optimistic")]
use turnstile::{Connect, Ctx, Key, Transact, TransactError, Wait};

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

/// Seed 001's control: the queue whose worker swallows an op's error (caught by the
/// [`own_error`](crate::check::own_error) checker on the `unique` workload).
pub const SWALLOW_ERRORS: &str = "swallow-errors";

/// Seed 001's consumer thread before its author's third update: [`queue`](turnstile::queue)
/// (the real one, its worker and group commit) with each op wrapped so that the worker
/// catches the op's error and goes on as if the op had succeeded: what the op wrote
/// before failing stays in the transaction and commits with it, and the caller is
/// answered `Ok` with an empty result — the request object's result slot the seed's
/// caller read, with no exception stuffed into it.
///
/// In Rust the caller's typed result cannot be made up: through a [`BoxSerializer`]
/// (whose op result is type-erased) the answer is `Ok` with a unit value, which the
/// caller's [`run_as`](turnstile::DynSerializer) then finds is not of its op's type
/// (`Error::Config`); called directly with a concrete type, it is `Error::Config` at once.
/// Either way the op's own error — the UNIQUE violation its caller wanted to match — is
/// gone.
pub struct SwallowErrors<R> {
    inner: BoxSerializer<R>,
}

impl<R> std::fmt::Debug for SwallowErrors<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SwallowErrors").finish_non_exhaustive()
    }
}

impl<R: 'static> SwallowErrors<R> {
    /// Swallows the op errors of `inner`.
    pub fn new(inner: BoxSerializer<R>) -> Self {
        SwallowErrors { inner }
    }
}

impl<R: 'static> turnstile::Serializer for SwallowErrors<R> {
    type Resource = R;

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    fn run_with<T, E, F>(
        &self,
        keys: &[turnstile::Key],
        wait: turnstile::Wait,
        mut op: F,
    ) -> Result<T, Error<E>>
    where
        F: FnMut(&mut turnstile::Ctx<'_, R>) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: Send + Sync + 'static,
    {
        let answer = self.inner.run_with(keys, wait, move |ctx| {
            // The bug under test: the op's error is caught here, in the worker, and
            // dropped; the op "succeeded".
            Ok::<_, E>(op(ctx).ok())
        })?;
        match answer {
            Some(value) => Ok(value),
            None => {
                let empty: turnstile::AnyValue = Box::new(());
                (Box::new(empty) as Box<dyn std::any::Any>)
                    .downcast::<T>()
                    .map(|value| *value)
                    .map_err(|_| Error::Config("the op's result was lost".into()))
            }
        }
    }
}

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

/// Registers `unserialized`, `thread-pool`, `swallow-errors`, `racy-version`
/// (`racy-version:MICROS` sets the race window) and, with the `redis` feature,
/// `redis-nofence://…` into `registry` (`racy-optimistic` runs over versioned records: see
/// [`register_versioned`]). The lock controls but `thread-pool` run in autocommit: only
/// their "lock" stands between two ops. `thread-pool` runs each op in a transaction whose
/// `BEGIN IMMEDIATE` fails at once when another op holds the database; `swallow-errors`
/// runs as `queue` does, in the mode the run asks for.
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
        SWALLOW_ERRORS,
        "NEGATIVE CONTROL: seed 001's queue whose worker swallows an op's error: commits what the op wrote, answers an empty result",
        |spec, setup: &Setup<Sqlite>| {
            spec.expect_no_arg()?;
            let queue = Registry::builtin().open("queue", setup)?;
            Ok(Box::new(SwallowErrors::new(queue)) as BoxSerializer<Connection>)
        },
    );
    registry.register(
        "racy-version",
        "NEGATIVE CONTROL: seed 003's check-then-set version lock (racy-version:MICROS sets the window, at most 1000000)",
        |spec, setup: &Setup<Sqlite>| {
            let window = race_window("racy-version", spec)?;
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

/// The pause a control's `NAME:MICROS` argument sets: [`DEFAULT_RACE_WINDOW`] without
/// one, at most [`MAX_RACE_WINDOW`].
fn race_window(name: &str, spec: &Spec) -> Result<Duration, StrategyError> {
    match spec.arg() {
        None => Ok(DEFAULT_RACE_WINDOW),
        Some(us) => us
            .parse()
            .ok()
            .map(Duration::from_micros)
            .filter(|w| *w <= MAX_RACE_WINDOW)
            .ok_or_else(|| {
                Error::Config(format!(
                    "{name} takes a window of 0..=1000000 µs, got {:?}",
                    redact_url(us)
                ))
            }),
    }
}

/// The name of seed 003's optimistic control.
pub const RACY_OPTIMISTIC: &str = "racy-optimistic";

/// Seed 003's optimistic scheme, as written: the op reads versioned records and buffers
/// its writes, as under [`Optimistic`](turnstile::optimistic::Optimistic); then its
/// commit *compares* the versions the op read with the stored ones, pauses for
/// [`RacyOptimistic::window`], and *writes* — in separate store transactions, where
/// `optimistic` does both in one. Two committers that read version `n` of a record both
/// pass the compare and both write: the second overwrites the first, and one update is
/// lost ("THIS CODE HAS (at least one) RACE CONDITION … the object in question could
/// have changed after we test to see if our copy is up to date").
///
/// Built on the public [`Versions`] / [`Versioned`] API over any [`VersionStore`]: the
/// compare reads each written record's version through the handle; the write buffers the
/// op's values again over whatever version is stored by then, and commits that. A
/// compare that finds a record moved on is a conflict, rerun as `optimistic` reruns one.
#[cfg(feature = "optimistic")]
pub struct RacyOptimistic<S: VersionStore> {
    versions: Versions<S>,
    window: Duration,
    timeout: Option<Duration>,
    idle: Mutex<Vec<Versioned<S>>>,
}

#[cfg(feature = "optimistic")]
impl<S: VersionStore> std::fmt::Debug for RacyOptimistic<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RacyOptimistic")
            .field("versions", &self.versions)
            .field("window", &self.window)
            .finish_non_exhaustive()
    }
}

/// One record of an op's write set: its id, the version the op read (`None`: absent),
/// and the value it wrote.
#[cfg(feature = "optimistic")]
type Write = (String, Option<u64>, Vec<u8>);

#[cfg(feature = "optimistic")]
impl<S: VersionStore> RacyOptimistic<S> {
    /// The racy scheme over `versions`, with the default window and
    /// [`optimistic::DEFAULT_TIMEOUT`](turnstile::optimistic::DEFAULT_TIMEOUT).
    pub fn new(versions: Versions<S>) -> Self {
        RacyOptimistic {
            versions,
            window: DEFAULT_RACE_WINDOW,
            timeout: Some(turnstile::optimistic::DEFAULT_TIMEOUT),
            idle: Mutex::new(Vec::new()),
        }
    }

    /// Sets the pause between the compare and the write. Default:
    /// [`DEFAULT_RACE_WINDOW`].
    pub fn window(mut self, window: Duration) -> Self {
        self.window = window;
        self
    }

    /// Sets the default wait of a call (`None`: none).
    pub fn timeout(mut self, timeout: Option<Duration>) -> Self {
        self.timeout = timeout;
        self
    }

    fn checkout(&self, deadline: Option<Instant>) -> Result<Versioned<S>, StrategyError> {
        if let Some(r) = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop() {
            return Ok(r);
        }
        self.versions
            .connect_within(deadline)
            .map_err(Error::from_connect)
    }

    fn checkin(&self, r: Versioned<S>) {
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).push(r);
    }

    /// The racy commit of `writes`: `Ok(false)` when the compare found a record moved on
    /// (a conflict: nothing was written).
    fn commit(
        &self,
        r: &mut Versioned<S>,
        writes: &[Write],
        deadline: Option<Instant>,
    ) -> Result<bool, TransactError> {
        let v = &self.versions;
        let failed = |e: turnstile::optimistic::StoreError| TransactError::Failed(Box::new(e));
        // 1. Compare, in a transaction of its own: is every record still at the version
        // the op read?
        v.begin(r, &[])?;
        for (id, seen, _) in writes {
            let now = r.read_record(id).map_err(failed)?.map(|rec| rec.version);
            if now != *seen {
                let _ = v.rollback(r);
                return Ok(false);
            }
        }
        let _ = v.rollback(r);
        // The bug under test: what was compared above is written below without
        // comparing it again.
        std::thread::sleep(self.window);
        // 2. Write, over whatever version is stored now: the handle reads it afresh, and
        // its commit compares against that. Only a write that lands in the few µs between
        // this read and that commit is seen (and written over, on the next round).
        loop {
            v.begin(r, &[])?;
            for (id, _, value) in writes {
                r.write(id, value.clone()).map_err(failed)?;
            }
            match v.commit(r) {
                // Tried again until the caller's deadline (a writer stopped with the
                // store's lock would otherwise keep this call for ever), then a busy
                // attempt like any other.
                Err(TransactError::Busy(_)) if deadline.is_none_or(|at| Instant::now() < at) => {}
                done => return done.map(|()| true),
            }
        }
    }
}

#[cfg(feature = "optimistic")]
impl<S: VersionStore> turnstile::Serializer for RacyOptimistic<S> {
    type Resource = Versioned<S>;

    /// What `optimistic` promises: it does not exclude, and reruns ops.
    fn capabilities(&self) -> Capabilities {
        Capabilities::new(
            self.versions.store().scope(),
            HolderDeath::ResourceRollsBack,
        )
        .excludes(false)
        .reruns_op(true)
    }

    fn run_with<T, E, F>(&self, keys: &[Key], wait: Wait, mut op: F) -> Result<T, Error<E>>
    where
        F: FnMut(&mut Ctx<'_, Versioned<S>>) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: Send + Sync + 'static,
    {
        let start = Instant::now();
        let keys = turnstile::sorted_keys(keys).map_err(Error::widen)?;
        let deadline = wait.deadline(self.timeout).map_err(Error::widen)?;
        let v = &self.versions;
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let mut r = self.checkout(deadline).map_err(Error::widen)?;
            let _ = v.begin(&mut r, &[]);
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                op(&mut Ctx::new(&mut r, &keys)
                    .with_attempt(attempt)
                    .with_deadline(deadline))
            }));
            let value = match result {
                Ok(Ok(value)) => value,
                Ok(Err(e)) if v.is_busy(&e) => {
                    let _ = v.rollback(&mut r);
                    self.checkin(r);
                    if self.give_up(attempt, deadline) {
                        return Err(Error::Contended {
                            attempts: attempt,
                            elapsed: start.elapsed(),
                        });
                    }
                    continue;
                }
                Ok(Err(e)) => {
                    let broken = v.is_broken(&mut r, &e);
                    let _ = v.rollback(&mut r);
                    if !broken {
                        self.checkin(r);
                    }
                    return Err(Error::Op(e));
                }
                Err(payload) => {
                    let _ = v.rollback(&mut r);
                    return Err(Error::Panicked(turnstile::panic_message(&*payload)));
                }
            };
            let writes: Vec<Write> = r
                .write_set()
                .map(|(id, seen, value)| (id.to_owned(), seen, value.to_vec()))
                .collect();
            let _ = v.rollback(&mut r);
            match self.commit(&mut r, &writes, deadline) {
                Ok(true) => {
                    self.checkin(r);
                    return Ok(value);
                }
                Ok(false) | Err(TransactError::Busy(_)) => {
                    self.checkin(r);
                    if self.give_up(attempt, deadline) {
                        return Err(Error::Contended {
                            attempts: attempt,
                            elapsed: start.elapsed(),
                        });
                    }
                }
                Err(e) => return Err(e.into_error()),
            }
        }
    }
}

#[cfg(feature = "optimistic")]
impl<S: VersionStore> RacyOptimistic<S> {
    /// After a conflict: whether the attempt budget or the deadline is spent; else sleeps
    /// a full-jitter backoff, `U(0, min(100 ms, 1 ms·2ⁿ))`.
    fn give_up(&self, attempt: u32, deadline: Option<Instant>) -> bool {
        let cap = Duration::from_millis(1)
            .saturating_mul(1 << attempt.min(16))
            .min(Duration::from_millis(100));
        let nap = cap.mul_f64(fastrand::f64());
        if attempt >= turnstile::optimistic::DEFAULT_MAX_ATTEMPTS
            || deadline.is_some_and(|at| Instant::now() + nap >= at)
        {
            return true;
        }
        std::thread::sleep(nap);
        false
    }
}

/// Registers `racy-optimistic` (`racy-optimistic:MICROS` sets the window between the
/// compare and the write) into a registry over versioned records, beside `optimistic`.
#[cfg(feature = "optimistic")]
pub fn register_versioned<S: VersionStore + Clone>(registry: &mut Registry<Versions<S>>) {
    registry.register(
        RACY_OPTIMISTIC,
        "NEGATIVE CONTROL: seed 003's optimistic scheme: compare the versions read, then write, in separate steps (racy-optimistic:MICROS sets the window, at most 1000000)",
        |spec, setup: &Setup<Versions<S>>| {
            let window = race_window(RACY_OPTIMISTIC, spec)?;
            let s = RacyOptimistic::new(setup.connect.clone())
                .window(window)
                .timeout(setup.timeout.or(Some(turnstile::optimistic::DEFAULT_TIMEOUT)));
            Ok(Box::new(s) as BoxSerializer<Versioned<S>>)
        },
    );
}

/// The strategies over versioned records: the builtin ones (`optimistic`, `mutex`) and
/// [`RACY_OPTIMISTIC`].
#[cfg(feature = "optimistic")]
pub fn versioned_registry<S: VersionStore + Clone>() -> Registry<Versions<S>> {
    let mut registry = Registry::builtin_versioned();
    register_versioned(&mut registry);
    registry
}
