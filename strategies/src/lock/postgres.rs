//! PostgreSQL advisory locks as a lock backend, in two modes.
//!
//! **Session locks** ([`PostgresLock`], spec `postgres://…`): `pg_advisory_lock` on a
//! dedicated connection per held lock (session locks survive `ROLLBACK` and belong to the
//! session, so a pooled connection must never hold one). Names map to the 64-bit key
//! space with [`advisory_key`], the documented [`LockName::stable_hash`] (FNV-1a 64 over
//! namespace, NUL, key) reinterpreted as `i64` — never `DefaultHasher`, which may change
//! between Rust releases. Two names that share a hash share a lock: safe, only slower.
//! The deadline is enforced by the server (`lock_timeout`, in milliseconds), so a waiter
//! wakes as soon as the lock is free; a deadline under a millisecond tries once with
//! `pg_try_advisory_lock`. The setting is a 32-bit count: a deadline further than
//! [`MAX_LOCK_TIMEOUT`] (about 24.8 days) is waited for in waits of at most that long. While held, the lock connection bumps a counter row in
//! `turnstile_lock_fences` (one autocommitted upsert), which is the fencing token.
//! [`Lease::check`] asks `pg_locks` whether this session still holds the lock, so a
//! terminated session (`pg_terminate_backend`) is caught before the op commits.
//!
//! **Transaction locks** ([`PgXactLocked`]): behind a transaction-pooling proxy
//! (PgBouncer in transaction mode) a session lock may outlive the transaction on a
//! connection that the proxy hands to someone else. When the data lives in the same
//! PostgreSQL, take the lock *inside the data's own transaction* instead:
//! `PgXactLocked` runs `BEGIN`, `pg_advisory_xact_lock` for each key (sorted by key),
//! the op, `COMMIT`. The lock ends with the transaction; if the session dies, the server
//! rolls the op's writes back with it, so no fence is needed.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use postgres::error::SqlState;
use postgres::{Client, Config, SimpleQueryMessage};
use turnstile_core::{
    Capabilities, Ctx, Error, Fence, HolderDeath, Key, Lease, Lock, LockName, Scope, Serializer,
    StrategyError, Transact, Wait, check_timeout, panic_message, sorted_keys,
};

use crate::pool::Pool;
use crate::resource::Postgres;
use crate::resource::postgres as res;

/// The default number of idle lock connections kept for reuse: 4.
pub const DEFAULT_MAX_IDLE: usize = 4;

const FENCE_TABLE: &str = "CREATE TABLE IF NOT EXISTS turnstile_lock_fences (
    key BIGINT PRIMARY KEY,
    fence BIGINT NOT NULL
)";

/// The advisory lock key for `name`: [`LockName::stable_hash`] as a signed 64-bit
/// integer (the same bits).
///
/// ```
/// use turnstile::lock::advisory_key;
/// use turnstile::{Key, LockName};
///
/// let name = LockName::new("postgres://app@db:5432/shop", Key::new("order/7")?);
/// assert_eq!(advisory_key(&name) as u64, name.stable_hash());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn advisory_key(name: &LockName) -> i64 {
    name.stable_hash() as i64
}

/// The longest wait one lock statement is given: `i32::MAX` milliseconds (about 24.8
/// days), the most PostgreSQL's `lock_timeout` takes (a longer one fails with "value
/// exceeds integer range"). A deadline further away is waited for in several waits of at
/// most this long, each one timing out and starting again until the deadline.
pub const MAX_LOCK_TIMEOUT: Duration = Duration::from_millis(i32::MAX as u64);

/// How the next lock statement waits for `deadline`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LockWait {
    /// No time left: try once, without waiting.
    TryOnce,
    /// `lock_timeout` in milliseconds (0: no limit). `more`: the deadline is further than
    /// this wait, so its timing out means "wait again", not "the deadline passed".
    Wait { ms: u64, more: bool },
}

impl LockWait {
    /// The wait until `deadline`, rounded up to a millisecond so the server never gives up
    /// before the deadline, and cut to `chunk` (at most [`MAX_LOCK_TIMEOUT`]): no limit
    /// without a deadline.
    fn until(deadline: Option<Instant>, chunk: Duration) -> LockWait {
        let Some(at) = deadline else {
            return LockWait::Wait { ms: 0, more: false };
        };
        let left = at.saturating_duration_since(Instant::now());
        let ms = left.as_millis() + u128::from(!left.subsec_nanos().is_multiple_of(1_000_000));
        if ms == 0 {
            return LockWait::TryOnce;
        }
        // At least 1 ms: `lock_timeout = 0` would mean no limit.
        let cap = chunk.min(MAX_LOCK_TIMEOUT).as_millis().max(1);
        LockWait::Wait {
            ms: u64::try_from(ms.min(cap)).unwrap_or(u64::MAX),
            more: ms > cap,
        }
    }
}

/// A session-level advisory lock backend on a PostgreSQL server. Cheap to clone.
///
/// The wait for the lock is bounded by the server (`lock_timeout`), and opening a
/// connection, login included, by the connect timeout. The driver has no read timeout:
/// a server that stops answering but keeps its connections open (a stopped process)
/// blocks an acquire, a lease check or a release until it answers again, past the
/// caller's deadline. A dead host or network shows once TCP gives up; `tcp_user_timeout`
/// (milliseconds) and `keepalives_idle` (seconds) in the URL make that sooner.
///
/// ```no_run
/// use turnstile::lock::PostgresLock;
/// use turnstile::resource::Postgres;
/// use turnstile::{Key, Locked, Serializer};
///
/// let url = "postgres://postgres@127.0.0.1:5432/test";
/// let strategy = Locked::new(PostgresLock::new(url)?, Postgres::new(url)?);
/// strategy.run(&Key::new("account/7")?, |db| {
///     db.execute("UPDATE accounts SET balance = balance - 10 WHERE id = 7", &[])
/// })?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct PostgresLock {
    shared: Arc<Shared>,
}

struct Shared {
    config: Config,
    backend_id: String,
    max_idle: usize,
    idle: Mutex<Vec<Client>>,
    fence_table_ready: AtomicBool,
    fencing: bool,
    /// The longest one lock statement waits: [`MAX_LOCK_TIMEOUT`] (shorter in tests).
    chunk: Duration,
}

impl PostgresLock {
    /// A lock backend on the server at `url` (`postgres://user:password@host:port/db`;
    /// the database holds the fence counters). Nothing is connected yet; the URL's
    /// `connect_timeout` defaults to
    /// [`DEFAULT_CONNECT_TIMEOUT`](crate::resource::DEFAULT_CONNECT_TIMEOUT).
    ///
    /// # Errors
    /// [`Error::Config`] when the URL does not parse.
    pub fn new(url: &str) -> Result<Self, StrategyError> {
        let config = res::parse_url(url)?;
        Ok(PostgresLock {
            shared: Arc::new(Shared {
                backend_id: res::identity(&config),
                config,
                max_idle: DEFAULT_MAX_IDLE,
                idle: Mutex::new(Vec::new()),
                fence_table_ready: AtomicBool::new(false),
                fencing: true,
                chunk: MAX_LOCK_TIMEOUT,
            }),
        })
    }

    /// Sets how many idle lock connections are kept for reuse. Default:
    /// [`DEFAULT_MAX_IDLE`].
    pub fn max_idle(self, max_idle: usize) -> Self {
        self.with(|s| s.max_idle = max_idle)
    }

    /// Opens a lock connection now (within the URL's `connect_timeout`), with the fence
    /// table when fencing, and keeps it for the next acquire: a wrong address or password
    /// shows at once rather than at the first op. The spec registry pings when it opens a
    /// `postgres://…` or `queue+postgres://…` spec.
    ///
    /// # Errors
    /// [`Error::Unavailable`] when the server cannot be reached or refuses.
    pub fn ping(&self) -> Result<(), StrategyError> {
        let client = self.shared.open(None)?;
        self.shared.recycle(client);
        Ok(())
    }

    /// Issues fencing tokens (the default) or not. Without them a grant needs no
    /// `turnstile_lock_fences` table and no durable write; `Locked` enforces fences only
    /// in [`TxMode::Transaction`](crate::TxMode::Transaction), so the spec registry turns
    /// them off for [`TxMode::Autocommit`](crate::TxMode::Autocommit). Default: on.
    pub fn fencing(self, on: bool) -> Self {
        self.with(|s| s.fencing = on)
    }

    fn with(mut self, f: impl FnOnce(&mut Shared)) -> Self {
        let mut shared = Shared {
            config: self.shared.config.clone(),
            backend_id: self.shared.backend_id.clone(),
            max_idle: self.shared.max_idle,
            idle: Mutex::new(Vec::new()),
            fence_table_ready: AtomicBool::new(false),
            fencing: self.shared.fencing,
            chunk: self.shared.chunk,
        };
        f(&mut shared);
        self.shared = Arc::new(shared);
        self
    }
}

impl std::fmt::Debug for PostgresLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresLock")
            .field("backend", &self.shared.backend_id)
            .finish_non_exhaustive()
    }
}

impl Shared {
    fn idle(&self) -> MutexGuard<'_, Vec<Client>> {
        // Nothing panics while this mutex is held.
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn open(&self, deadline: Option<Instant>) -> Result<Client, StrategyError> {
        let mut config = self.config.clone();
        if let Some(at) = deadline {
            let configured = config
                .get_connect_timeout()
                .copied()
                .unwrap_or(crate::resource::DEFAULT_CONNECT_TIMEOUT);
            let left = at
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(250));
            config.connect_timeout(left.min(configured));
        }
        let mut client = res::open(&config).map_err(Error::unavailable)?;
        if self.fencing && !self.fence_table_ready.load(Ordering::Acquire) {
            res::ensure_table(&mut client, FENCE_TABLE).map_err(Error::unavailable)?;
            self.fence_table_ready.store(true, Ordering::Release);
        }
        Ok(client)
    }

    fn checkout(&self, deadline: Option<Instant>) -> Result<Client, StrategyError> {
        loop {
            let Some(client) = self.idle().pop() else {
                return self.open(deadline);
            };
            if !client.is_closed() {
                return Ok(client);
            }
        }
    }

    fn recycle(&self, client: Client) {
        let mut idle = self.idle();
        if idle.len() < self.max_idle && !client.is_closed() {
            idle.push(client);
        }
    }

    /// Waits for the lock and bumps its fence: `Ok(Some(fence))` held (the fence `None`
    /// without fencing), `Ok(None)` the deadline passed. A deadline further than one
    /// wait ([`MAX_LOCK_TIMEOUT`]) takes several.
    fn lock(
        &self,
        client: &mut Client,
        key: i64,
        deadline: Option<Instant>,
    ) -> Result<Option<Option<Fence>>, postgres::Error> {
        loop {
            let wait = LockWait::until(deadline, self.chunk);
            match self.lock_once(client, key, wait)? {
                Some(fence) => return Ok(Some(fence)),
                None if matches!(wait, LockWait::Wait { more: true, .. }) => {
                    // The wait ran out before the deadline: wait again. Had the lock been
                    // granted and only the fence bump timed out, the session would hold
                    // it (session locks outlive the failed statement), and a second grant
                    // would count twice, outliving the lease's one unlock: let it go
                    // first. A lock connection holds no other lock.
                    client.simple_query("SELECT pg_advisory_unlock_all()")?;
                }
                None => return Ok(None),
            }
        }
    }

    /// One wait for the lock and the fence bump, as [`Shared::lock`] answers. Each path is
    /// one round trip of the simple query protocol, whose statements may only contain
    /// numbers computed here (the key is a hash, the timeout a count of milliseconds),
    /// never user text.
    fn lock_once(
        &self,
        client: &mut Client,
        key: i64,
        wait: LockWait,
    ) -> Result<Option<Option<Fence>>, postgres::Error> {
        if !self.fencing {
            let held = match wait {
                LockWait::TryOnce => client
                    .simple_query(&format!("SELECT pg_try_advisory_lock({key})"))
                    .map(|m| last_value(&m) == Some("t")),
                LockWait::Wait { ms, .. } => client
                    .batch_execute(&format!(
                        "SET lock_timeout = {ms}; SELECT pg_advisory_lock({key})"
                    ))
                    .map(|()| true),
            };
            return match held {
                Ok(held) => Ok(held.then_some(None)),
                Err(e) if e.code() == Some(&SqlState::LOCK_NOT_AVAILABLE) => Ok(None),
                Err(e) => Err(e),
            };
        }
        let bump = format!(
            "INSERT INTO turnstile_lock_fences (key, fence) VALUES ({key}, 1)
             ON CONFLICT (key) DO UPDATE SET fence = turnstile_lock_fences.fence + 1
             RETURNING fence"
        );
        let script = match wait {
            // No time left: try once, and bump the fence only if that took the lock.
            LockWait::TryOnce => format!(
                "WITH got AS (SELECT pg_try_advisory_lock({key}) AS ok)
                 INSERT INTO turnstile_lock_fences (key, fence)
                     SELECT {key}, 1 FROM got WHERE ok
                 ON CONFLICT (key) DO UPDATE SET fence = turnstile_lock_fences.fence + 1
                 RETURNING fence"
            ),
            // The server bounds the wait and wakes us the moment the lock is free.
            LockWait::Wait { ms, .. } => {
                format!("SET lock_timeout = {ms}; SELECT pg_advisory_lock({key}); {bump}")
            }
        };
        let messages = match client.simple_query(&script) {
            Ok(messages) => messages,
            Err(e) if e.code() == Some(&SqlState::LOCK_NOT_AVAILABLE) => return Ok(None),
            Err(e) => return Err(e),
        };
        let fence = last_value(&messages).and_then(|f| f.parse::<u64>().ok());
        Ok(fence.map(|f| Some(Fence(f))))
    }
}

/// The first column of the last row a simple query returned.
fn last_value(messages: &[SimpleQueryMessage]) -> Option<&str> {
    messages.iter().rev().find_map(|m| match m {
        SimpleQueryMessage::Row(row) => row.get(0),
        _ => None,
    })
}

impl Lock for PostgresLock {
    type Lease = PostgresLease;

    fn capabilities(&self) -> Capabilities {
        Capabilities::new(Scope::Hosts, HolderDeath::SessionEnds).fences(self.shared.fencing)
    }

    fn backend_id(&self) -> &str {
        &self.shared.backend_id
    }

    fn acquire(
        &self,
        name: &LockName,
        deadline: Option<Instant>,
    ) -> Result<PostgresLease, StrategyError> {
        let start = Instant::now();
        let key = advisory_key(name);
        let shared = &self.shared;
        let mut client = shared.checkout(deadline)?;
        // On failure the client is dropped, which ends the session and any lock it took.
        let fence = match shared.lock(&mut client, key, deadline) {
            // A cached connection may have died since (server restart, idle timeout).
            Err(e) if e.is_closed() => {
                client = shared.open(deadline)?;
                shared.lock(&mut client, key, deadline)
            }
            other => other,
        }
        .map_err(Error::unavailable)?;
        let Some(fence) = fence else {
            // Not recycled: had the lock been granted and only the fence bump timed out,
            // the session would still hold it; closing the connection frees it for sure.
            drop(client);
            return Err(Error::Timeout {
                waited: start.elapsed(),
            });
        };
        Ok(PostgresLease {
            client: Mutex::new(Some(client)),
            key,
            fence,
            shared: self.shared.clone(),
        })
    }
}

/// A held session advisory lock and its dedicated connection. Released on drop.
#[must_use = "the lock is released as soon as the lease is dropped"]
pub struct PostgresLease {
    client: Mutex<Option<Client>>,
    key: i64,
    fence: Option<Fence>,
    shared: Arc<Shared>,
}

impl PostgresLease {
    /// The advisory key held.
    pub fn key(&self) -> i64 {
        self.key
    }

    fn release_inner(&mut self) -> Result<(), StrategyError> {
        let Some(mut client) = self
            .client
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        else {
            return Err(Error::LeaseLost);
        };
        match client.query_one("SELECT pg_advisory_unlock($1)", &[&self.key]) {
            Ok(row) if row.get::<_, bool>(0) => {
                self.shared.recycle(client);
                Ok(())
            }
            // Not held by this session any more (or the session is gone).
            Ok(_) => Err(Error::LeaseLost),
            Err(e) if e.is_closed() => Err(Error::LeaseLost),
            Err(e) => Err(Error::unavailable(e)),
        }
    }
}

impl std::fmt::Debug for PostgresLease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresLease")
            .field("key", &self.key)
            .field("fence", &self.fence)
            .finish_non_exhaustive()
    }
}

impl Lease for PostgresLease {
    fn fence(&self) -> Option<Fence> {
        self.fence
    }

    fn check(&self) -> Result<(), StrategyError> {
        let mut guard = self.client.lock().unwrap_or_else(|p| p.into_inner());
        let Some(client) = guard.as_mut() else {
            return Err(Error::LeaseLost);
        };
        // A bigint advisory key shows in pg_locks as classid = high 32 bits, objid = low
        // 32 bits, objsubid = 1.
        let held = client.query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_locks
                 WHERE locktype = 'advisory' AND pid = pg_backend_pid() AND granted
                   AND classid = (($1::bigint >> 32) & 4294967295)::bigint::text::oid
                   AND objid = ($1::bigint & 4294967295)::bigint::text::oid
                   AND objsubid = 1)",
            &[&self.key],
        );
        match held {
            Ok(row) if row.get::<_, bool>(0) => Ok(()),
            _ => {
                guard.take();
                Err(Error::LeaseLost)
            }
        }
    }

    fn release(mut self) -> Result<(), StrategyError> {
        self.release_inner()
    }
}

impl Drop for PostgresLease {
    fn drop(&mut self) {
        let _ = self.release_inner();
    }
}

/// The default time a [`PgXactLocked`] call waits for its locks and a connection: 30 s.
pub const DEFAULT_XACT_TIMEOUT: Duration = Duration::from_secs(30);

/// The default most connections a [`PgXactLocked`] keeps open: 8.
pub const DEFAULT_XACT_POOL_SIZE: usize = 8;

/// Transaction-level advisory locks taken inside the data's own PostgreSQL transaction:
/// a [`Serializer`] over [`Postgres`] that works behind transaction-pooling proxies.
///
/// Each call: `BEGIN`, `pg_advisory_xact_lock` for every key (sorted by advisory key, so
/// two callers cannot deadlock; the wait bounded by `lock_timeout`), the op, `COMMIT`.
/// Losing the session aborts the transaction and frees the lock together, so no fence
/// is needed. Lock keys are [`advisory_key`] of the key inside the database's identity,
/// so this and [`PostgresLock`] over the same database take the same 64-bit keys (but
/// session and transaction locks on one key do conflict with each other, as they should).
///
/// Defaults: [`DEFAULT_XACT_TIMEOUT`], a pool of [`DEFAULT_XACT_POOL_SIZE`] connections.
///
/// ```no_run
/// use turnstile::lock::PgXactLocked;
/// use turnstile::resource::Postgres;
/// use turnstile::{Key, Serializer};
///
/// let strategy = PgXactLocked::new(Postgres::new("postgres://postgres@127.0.0.1/test")?);
/// strategy.run(&Key::new("notification/7")?, |db| {
///     db.execute("UPDATE notifications SET sent = true WHERE id = 7", &[])
/// })?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct PgXactLocked {
    db: Postgres,
    pool: Pool<Client>,
    timeout: Option<Duration>,
    /// The longest one lock statement waits: [`MAX_LOCK_TIMEOUT`] (shorter in tests).
    chunk: Duration,
}

impl std::fmt::Debug for PgXactLocked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgXactLocked")
            .field("db", &self.db)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl PgXactLocked {
    /// A strategy over `db`.
    pub fn new(db: Postgres) -> Self {
        PgXactLocked {
            db,
            pool: Pool::new(DEFAULT_XACT_POOL_SIZE),
            timeout: Some(DEFAULT_XACT_TIMEOUT),
            chunk: MAX_LOCK_TIMEOUT,
        }
    }

    /// Sets how long a call waits for its locks by default; `None` waits forever.
    /// Default: [`DEFAULT_XACT_TIMEOUT`].
    ///
    /// # Errors
    /// [`Error::Config`] for a timeout over [`MAX_TIMEOUT`](turnstile_core::MAX_TIMEOUT).
    pub fn timeout(mut self, timeout: Option<Duration>) -> Result<Self, StrategyError> {
        self.timeout = check_timeout(timeout)?;
        Ok(self)
    }

    /// Sets the most connections open at once. Default: [`DEFAULT_XACT_POOL_SIZE`].
    ///
    /// # Errors
    /// [`Error::Config`] for zero.
    pub fn pool_size(mut self, size: usize) -> Result<Self, StrategyError> {
        if size == 0 {
            return Err(Error::Config(
                "the pool needs at least one connection".into(),
            ));
        }
        self.pool = Pool::new(size);
        Ok(self)
    }

    /// Takes every lock inside the open transaction, in one round trip. `Ok(false)`: the
    /// deadline passed (the transaction is then aborted). The script holds only numbers
    /// computed here: hashed keys and a count of milliseconds. A deadline further than one
    /// wait ([`MAX_LOCK_TIMEOUT`]) takes several, each in a savepoint: a wait that runs out
    /// aborts only its savepoint, which is rolled back before the next.
    fn lock_all(
        client: &mut Client,
        keys: &[i64],
        deadline: Option<Instant>,
        chunk: Duration,
    ) -> Result<bool, postgres::Error> {
        loop {
            let (ms, more) = match LockWait::until(deadline, chunk) {
                LockWait::TryOnce => {
                    // No time left: try each once, failing on the first one held elsewhere.
                    let tries: Vec<String> = keys
                        .iter()
                        .map(|k| format!("pg_try_advisory_xact_lock({k})"))
                        .collect();
                    let all = tries.join(" AND ");
                    let got: bool = client
                        .simple_query(&format!("SELECT {all}"))?
                        .iter()
                        .find_map(|m| match m {
                            SimpleQueryMessage::Row(row) => row.get(0).map(|v| v == "t"),
                            _ => None,
                        })
                        .unwrap_or(false);
                    return Ok(got);
                }
                LockWait::Wait { ms, more } => (ms, more),
            };
            let mut script = String::new();
            if more {
                script.push_str("SAVEPOINT turnstile_lock_wait; ");
            }
            // Save the session's lock_timeout in a transaction-local setting, bound the lock
            // waits, then restore it for the op's own lock waits.
            script.push_str(
                "SELECT set_config('turnstile.lock_timeout', current_setting('lock_timeout'), true); ",
            );
            script.push_str(&format!("SET LOCAL lock_timeout = {ms}; "));
            for k in keys {
                script.push_str(&format!("SELECT pg_advisory_xact_lock({k}); "));
            }
            script.push_str(
                "SELECT set_config('lock_timeout', current_setting('turnstile.lock_timeout'), true)",
            );
            if more {
                script.push_str("; RELEASE SAVEPOINT turnstile_lock_wait");
            }
            match client.batch_execute(&script) {
                Ok(()) => return Ok(true),
                Err(e) if e.code() == Some(&SqlState::LOCK_NOT_AVAILABLE) => {
                    if !more {
                        return Ok(false);
                    }
                    // The wait ran out before the deadline: undo it, and wait again.
                    client.batch_execute(
                        "ROLLBACK TO SAVEPOINT turnstile_lock_wait; RELEASE SAVEPOINT turnstile_lock_wait",
                    )?;
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn run_in_transaction<T, E, F>(
        &self,
        client: &mut Client,
        keys: &[Key],
        deadline: Option<Instant>,
        start: Instant,
        op: &mut F,
    ) -> (Result<T, Error<E>>, bool)
    where
        F: FnMut(&mut Ctx<'_, Client>) -> Result<T, E>,
        E: Send + Sync + 'static,
    {
        let namespace = turnstile_core::Connect::identity(&self.db).to_owned();
        let mut lock_keys: Vec<i64> = keys
            .iter()
            .map(|k| advisory_key(&LockName::new(namespace.as_str(), k.clone())))
            .collect();
        lock_keys.sort_unstable();
        lock_keys.dedup();
        if let Err(e) = self.db.begin(client, &[]) {
            let broken = e.discards_resource();
            return (Err(e.into_error()), broken);
        }
        match Self::lock_all(client, &lock_keys, deadline, self.chunk) {
            Ok(true) => {}
            Ok(false) => {
                let broken = self.db.rollback(client).is_err();
                return (
                    Err(Error::Timeout {
                        waited: start.elapsed(),
                    }),
                    broken,
                );
            }
            Err(e) => {
                let broken = self.db.rollback(client).is_err() || e.is_closed();
                return (Err(Error::unavailable(e)), broken);
            }
        }
        let result = catch_unwind(AssertUnwindSafe(|| {
            op(&mut Ctx::new(&mut *client, keys).with_deadline(deadline))
        }));
        match result {
            Ok(Ok(value)) => match self.db.commit(client) {
                Ok(()) => (Ok(value), false),
                Err(e) => {
                    let broken = client.is_closed();
                    (Err(e.into_error()), broken)
                }
            },
            // The rollback also sees an op that ran `COMMIT` (its marker savepoint is
            // gone), in the same round trip: what that op wrote may have committed.
            Ok(Err(e)) => match self.db.rollback_checked(client) {
                Ok(true) => (Err(Error::Op(e)), false),
                Ok(false) => (Err(Error::TransactionEnded), false),
                Err(_) => (Err(Error::Op(e)), true),
            },
            Err(payload) => match self.db.rollback_checked(client) {
                Ok(true) => (Err(Error::Panicked(panic_message(&*payload))), false),
                Ok(false) => (Err(Error::TransactionEnded), false),
                Err(_) => (Err(Error::Panicked(panic_message(&*payload))), true),
            },
        }
    }
}

impl Serializer for PgXactLocked {
    type Resource = Client;

    fn capabilities(&self) -> Capabilities {
        Capabilities::new(Scope::Hosts, HolderDeath::SessionEnds)
    }

    fn run_with<T, E, F>(&self, keys: &[Key], wait: Wait, mut op: F) -> Result<T, Error<E>>
    where
        F: FnMut(&mut Ctx<'_, Client>) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: Send + Sync + 'static,
    {
        let start = Instant::now();
        let keys = sorted_keys(keys).map_err(Error::widen)?;
        let deadline = wait.deadline(self.timeout).map_err(Error::widen)?;
        let mut client = self.pool.get(&self.db, deadline).map_err(Error::widen)?;
        let (result, broken) =
            self.run_in_transaction(&mut client, &keys, deadline, start, &mut op);
        if broken || client.is_closed() {
            drop(client);
            self.pool.discard();
        } else {
            self.pool.put(client);
        }
        result
    }
}

#[cfg(test)]
mod tests {
    //! The waits of a deadline further than one `lock_timeout`, tried with a short chunk
    //! against the test server (`TURNSTILE_POSTGRES_URL`, as the integration tests).
    use super::*;
    use turnstile_core::Connect;

    fn url() -> String {
        std::env::var("TURNSTILE_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
    }

    fn admin() -> Client {
        res::open(&res::parse_url(&url()).unwrap()).expect("the PostgreSQL test server")
    }

    fn unique(prefix: &str) -> String {
        format!("{prefix}-{}-{:016x}", std::process::id(), fastrand::u64(..))
    }

    const CHUNK: Duration = Duration::from_millis(40);

    #[test]
    fn a_wait_is_cut_into_chunks_of_at_most_the_maximum() {
        let in_a_month = Some(Instant::now() + Duration::from_secs(30 * 24 * 3600));
        assert_eq!(
            LockWait::until(in_a_month, MAX_LOCK_TIMEOUT),
            LockWait::Wait {
                ms: i32::MAX as u64,
                more: true
            }
        );
        assert_eq!(
            LockWait::until(None, MAX_LOCK_TIMEOUT),
            LockWait::Wait { ms: 0, more: false }
        );
        assert_eq!(
            LockWait::until(Some(Instant::now()), MAX_LOCK_TIMEOUT),
            LockWait::TryOnce
        );
        match LockWait::until(Some(Instant::now() + Duration::from_secs(2)), CHUNK) {
            LockWait::Wait { ms: 40, more: true } => {}
            other => panic!("{other:?}"),
        }
        match LockWait::until(
            Some(Instant::now() + Duration::from_millis(1500)),
            MAX_LOCK_TIMEOUT,
        ) {
            LockWait::Wait { ms, more: false } => assert!((1400..=1500).contains(&ms), "{ms}"),
            other => panic!("{other:?}"),
        }
    }

    /// Holds `key` from another session for `hold`, in a thread; answers when it is held.
    fn hold_for(key: i64, hold: Duration) -> std::thread::JoinHandle<()> {
        let (held_tx, held_rx) = std::sync::mpsc::channel();
        let holder = std::thread::spawn(move || {
            let mut admin = admin();
            admin
                .execute("SELECT pg_advisory_lock($1)", &[&key])
                .unwrap();
            held_tx.send(()).unwrap();
            std::thread::sleep(hold);
            admin
                .execute("SELECT pg_advisory_unlock($1)", &[&key])
                .unwrap();
        });
        held_rx.recv().unwrap();
        holder
    }

    fn chunked(lock: PostgresLock) -> PostgresLock {
        lock.with(|s| s.chunk = CHUNK)
    }

    #[test]
    fn a_session_lock_waits_past_its_first_chunk() {
        for fencing in [true, false] {
            let lock = chunked(PostgresLock::new(&url()).unwrap().fencing(fencing));
            let name = LockName::new("chunks", Key::new(unique("s")).unwrap());
            let key = advisory_key(&name);
            let holder = hold_for(key, CHUNK * 5);
            let start = Instant::now();
            let lease = lock
                .acquire(&name, Some(Instant::now() + Duration::from_secs(10)))
                .expect("the lock, once the holder lets it go");
            assert!(start.elapsed() >= CHUNK * 4, "{:?}", start.elapsed());
            assert_eq!(lease.fence().is_some(), fencing);
            holder.join().unwrap();
            lease.release().unwrap();
            // Held once: the one release freed it for everyone.
            let free: bool = admin()
                .query_one("SELECT pg_try_advisory_lock($1)", &[&key])
                .unwrap()
                .get(0);
            assert!(free, "fencing {fencing}: still held after its release");
        }
    }

    #[test]
    fn a_fence_bump_that_outlasts_a_chunk_leaves_the_lock_held_once() {
        let lock = chunked(PostgresLock::new(&url()).unwrap());
        let name = LockName::new("chunks", Key::new(unique("f")).unwrap());
        let key = advisory_key(&name);
        // The fence row exists, and another session keeps it locked for a few chunks: the
        // lock is granted at once, and its fence bump waits for the row.
        drop(lock.acquire(&name, None).unwrap());
        let (locked_tx, locked_rx) = std::sync::mpsc::channel();
        let row_holder = std::thread::spawn(move || {
            let mut admin = admin();
            let mut tx = admin.transaction().unwrap();
            tx.execute(
                "SELECT fence FROM turnstile_lock_fences WHERE key = $1 FOR UPDATE",
                &[&key],
            )
            .unwrap();
            locked_tx.send(()).unwrap();
            std::thread::sleep(CHUNK * 5);
            tx.rollback().unwrap();
        });
        locked_rx.recv().unwrap();
        let lease = lock
            .acquire(&name, Some(Instant::now() + Duration::from_secs(10)))
            .expect("the lock, once the fence row is free");
        row_holder.join().unwrap();
        lease.release().unwrap();
        let free: bool = admin()
            .query_one("SELECT pg_try_advisory_lock($1)", &[&key])
            .unwrap()
            .get(0);
        assert!(free, "still held after its release: granted twice");
    }

    #[test]
    fn transaction_locks_wait_past_their_first_chunk() {
        let db = Postgres::new(&url()).unwrap();
        let mut xact = PgXactLocked::new(db.clone());
        xact.chunk = CHUNK;
        let k = Key::new(unique("x")).unwrap();
        let other = Key::new(unique("y")).unwrap();
        let key = advisory_key(&LockName::new(db.identity(), k.clone()));
        let holder = hold_for(key, CHUNK * 5);
        let start = Instant::now();
        // Two keys: the one free is taken again in each chunk, and once at the end.
        xact.run_with(
            &[k.clone(), other.clone()],
            Wait::Timeout(Duration::from_secs(10)),
            |db| {
                db.batch_execute("SELECT 1")?;
                Ok::<_, postgres::Error>(())
            },
        )
        .expect("the locks, once the holder lets go");
        assert!(start.elapsed() >= CHUNK * 4, "{:?}", start.elapsed());
        holder.join().unwrap();
        // The deadline still ends the wait on time: the last chunk is what is left.
        let holder = hold_for(key, Duration::from_millis(600));
        let start = Instant::now();
        let err = xact
            .run_with(&[k], Wait::Timeout(Duration::from_millis(150)), |_| {
                Ok::<_, postgres::Error>(())
            })
            .unwrap_err();
        assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
        assert!(
            start.elapsed() < Duration::from_millis(500),
            "{:?}",
            start.elapsed()
        );
        holder.join().unwrap();
    }
}
