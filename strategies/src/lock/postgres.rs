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
//! [`MAX_LOCK_TIMEOUT`] (about 24.8 days) is waited for in waits of at most that long,
//! and an acquire without a deadline waits in waits of [`WAIT_CHUNK`] (rejoining the
//! server's queue for the lock after each). While held, the lock connection bumps a
//! counter row in `turnstile_lock_fences` (one autocommitted upsert), which is the
//! fencing token. The upsert has a `statement_timeout` of its own, below the read
//! timeout, which bounds all its waits for locks together (for the row, locked by
//! maintenance, say; `lock_timeout` would bound each wait, not their sum), and so has
//! the fence table's creation. [`Lease::check`] asks `pg_locks` whether this session
//! still holds the lock, so a terminated session (`pg_terminate_backend`) is caught
//! before the op commits.
//!
//! Every statement on a lock connection has a time limit on this side too: the wait it
//! gives the server, plus a read timeout ([`PostgresLock::read_timeout`], default
//! [`DEFAULT_READ_TIMEOUT`]). A server that stops answering but keeps its connections
//! open (a stopped process, a stalled network path) so fails the statement instead of
//! blocking it, and the connection is closed for good. Lock connections are
//! `tokio_postgres` clients, each driven by a current-thread runtime of its own (what a
//! `postgres::Client` is inside), so that a statement can be given up on.
//!
//! **Transaction locks** ([`PgXactLocked`]): behind a transaction-pooling proxy
//! (PgBouncer in transaction mode) a session lock may outlive the transaction on a
//! connection that the proxy hands to someone else. When the data lives in the same
//! PostgreSQL, take the lock *inside the data's own transaction* instead:
//! `PgXactLocked` runs `BEGIN`, `pg_advisory_xact_lock` for each key (sorted by key),
//! the op, `COMMIT`. The locks are taken in one statement, whose `statement_timeout`
//! bounds all their waits together. The lock ends with the transaction; if the session
//! dies, the server rolls the op's writes back with it, so no fence is needed. Its
//! statements run on the data's own connection (a `postgres::Client` of [`Postgres`]),
//! which has no read timeout.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use postgres::error::SqlState;
use postgres::types::ToSql;
use postgres::{Client, SimpleQueryMessage};
use tokio::runtime::Runtime;
use turnstile_core::{
    BoxError, Capabilities, Ctx, Error, Fence, HolderDeath, Key, Lease, Lock, LockName,
    MAX_TIMEOUT, Scope, Serializer, StrategyError, Transact, Wait, check_timeout, panic_message,
    sorted_keys,
};

use crate::pool::Pool;
use crate::resource::postgres as res;
use crate::resource::{DEFAULT_CONNECT_TIMEOUT, Postgres, ServerError};

/// The default number of idle lock connections kept for reuse: 4.
pub const DEFAULT_MAX_IDLE: usize = 4;

/// The default read timeout of lock connections: 5 s (see [`PostgresLock::read_timeout`]).
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// The longest one lock statement waits when the acquire has no deadline: 10 s. The wait
/// goes on in as many such waits as it takes, each bounded on this side by its length plus
/// the read timeout, so that a server that stopped answering is noticed.
///
/// Each wait is a new `pg_advisory_lock` call: such a waiter leaves PostgreSQL's queue for
/// the lock every 10 s and rejoins it at the back, so while the queue stays longer than
/// that, waiters that came later can be granted the lock before it.
pub const WAIT_CHUNK: Duration = Duration::from_secs(10);

/// How long dropping a lock connection that still answers gives it to say goodbye to the
/// server (`Terminate`, as a `postgres::Client` does on drop) before its socket is closed.
const CLOSE_WAIT: Duration = Duration::from_millis(100);

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
/// days), the most PostgreSQL's `lock_timeout` and `statement_timeout` take (a longer
/// one fails with "value exceeds integer range"). A deadline further away is waited for
/// in several waits of at most this long, each one timing out and starting again until
/// the deadline.
pub const MAX_LOCK_TIMEOUT: Duration = Duration::from_millis(i32::MAX as u64);

/// How the next lock statement waits for `deadline`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LockWait {
    /// No time left: try once, without waiting.
    TryOnce,
    /// A wait of `ms` milliseconds (0: no limit), the lock statement's `lock_timeout`
    /// ([`PgXactLocked`]'s: `statement_timeout`). `more`: the deadline is further than
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
        // At least 1 ms: a timeout of 0 would mean no limit.
        let cap = chunk.min(MAX_LOCK_TIMEOUT).as_millis().max(1);
        LockWait::Wait {
            ms: u64::try_from(ms.min(cap)).unwrap_or(u64::MAX),
            more: ms > cap,
        }
    }

    /// A wait without a deadline on a connection that must notice a silent server: one
    /// of [`WAIT_CHUNK`] (`chunk` if shorter), to be followed by another.
    fn endless(chunk: Duration) -> LockWait {
        let ms = chunk
            .min(WAIT_CHUNK)
            .min(MAX_LOCK_TIMEOUT)
            .as_millis()
            .max(1);
        LockWait::Wait {
            ms: u64::try_from(ms).unwrap_or(u64::MAX),
            more: true,
        }
    }
}

/// Why a statement on a lock connection failed.
#[derive(Debug)]
enum StatementError {
    /// The server refused it, or the connection broke.
    Postgres(tokio_postgres::Error),
    /// The server did not answer within this long: the connection is not used again.
    Silent(Duration),
}

impl StatementError {
    fn code(&self) -> Option<&SqlState> {
        match self {
            StatementError::Postgres(e) => e.code(),
            StatementError::Silent(_) => None,
        }
    }

    fn is_closed(&self) -> bool {
        matches!(self, StatementError::Postgres(e) if e.is_closed())
    }

    /// What failed, in words: the server's own error ([`DbError`](postgres::error::DbError),
    /// without the driver's `db error:` before it), the driver's ([`postgres::Error`]), or
    /// an [`std::io::Error`] of kind `TimedOut`.
    fn into_boxed(self) -> BoxError {
        match self {
            StatementError::Postgres(e) => in_words(e),
            StatementError::Silent(limit) => std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!(
                    "no answer to a lock statement within {limit:?}; its connection was closed"
                ),
            )
            .into(),
        }
    }

    /// [`Error::Unavailable`], naming the lock server (its identity, `server`) so that a
    /// lock on one server over data on another tells which of the two failed.
    fn unavailable(self, server: &str) -> StrategyError {
        unavailable(server, self.into_boxed())
    }
}

/// The driver's error in words: the server's own ([`DbError`](postgres::error::DbError))
/// when it answered with one, the driver's otherwise.
fn in_words(error: tokio_postgres::Error) -> BoxError {
    match error.as_db_error() {
        Some(db) => Box::new(db.clone()),
        None => error.into(),
    }
}

/// `source` as the lock server's failure: [`Error::Unavailable`] of a [`ServerError`]
/// (`postgres at postgres://app@db:5432/shop: …`), whose own source is `source`.
fn unavailable(server: &str, source: BoxError) -> StrategyError {
    Error::Unavailable(Box::new(ServerError::new(server, source)))
}

/// A lock connection: a `tokio_postgres` client whose connection runs as a task on a
/// current-thread runtime of its own, driven while a statement runs — what a
/// `postgres::Client` is inside, with a time limit on each statement. A connection whose
/// statement ran out of time is `silent`: it is never used again, and dropping it closes
/// its socket at once (dropping the runtime drops the task that owns it), where a
/// `postgres::Client` would wait for the server's answer first.
struct LockConn {
    /// `None` only while dropping.
    client: Option<tokio_postgres::Client>,
    connection: tokio::task::JoinHandle<()>,
    runtime: Runtime,
    silent: bool,
}

impl LockConn {
    /// Connects and logs in within `timeout`. A login cut off closes its socket there and
    /// then: no thread is left waiting on a silent server (as the resource's logins are,
    /// see [`MAX_PENDING_LOGINS`](crate::resource::MAX_PENDING_LOGINS)).
    fn open(config: &tokio_postgres::Config, timeout: Duration) -> Result<LockConn, BoxError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let connected = within(&runtime, timeout, config.connect(tokio_postgres::NoTls));
        let failed: BoxError = match connected {
            Ok(Ok((client, connection))) => {
                let connection = runtime.spawn(async move {
                    // Its error (the session was terminated, say) reaches the client's
                    // next statement as a closed connection.
                    let _ = connection.await;
                });
                return Ok(LockConn {
                    client: Some(client),
                    connection,
                    runtime,
                    silent: false,
                });
            }
            Ok(Err(e)) => in_words(e),
            Err(_) => std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!(
                    "no answer within {:?}: the server did not complete the connection's login",
                    // Whole milliseconds: a timeout cut to a deadline would show every
                    // nanosecond.
                    Duration::from_millis(timeout.as_millis() as u64)
                ),
            )
            .into(),
        };
        // A host name's lookup runs on a thread of the runtime, which may still be at it:
        // don't wait for it.
        runtime.shutdown_background();
        Err(failed)
    }

    fn client(&self) -> &tokio_postgres::Client {
        self.client
            .as_ref()
            .expect("a lock connection's client is taken only when it is dropped")
    }

    /// Neither silent nor closed.
    fn is_usable(&self) -> bool {
        !self.silent && !self.client().is_closed()
    }

    fn simple_query(
        &mut self,
        sql: &str,
        limit: Duration,
    ) -> Result<Vec<SimpleQueryMessage>, StatementError> {
        let answer = within(&self.runtime, limit, self.client().simple_query(sql));
        self.settle(answer, limit)
    }

    fn batch_execute(&mut self, sql: &str, limit: Duration) -> Result<(), StatementError> {
        let answer = within(&self.runtime, limit, self.client().batch_execute(sql));
        self.settle(answer, limit)
    }

    fn query_one(
        &mut self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
        limit: Duration,
    ) -> Result<tokio_postgres::Row, StatementError> {
        let answer = within(&self.runtime, limit, self.client().query_one(sql, params));
        self.settle(answer, limit)
    }

    fn settle<T>(
        &mut self,
        answer: Result<Result<T, tokio_postgres::Error>, tokio::time::error::Elapsed>,
        limit: Duration,
    ) -> Result<T, StatementError> {
        match answer {
            Ok(answer) => answer.map_err(StatementError::Postgres),
            Err(_) => {
                self.silent = true;
                Err(StatementError::Silent(limit))
            }
        }
    }
}

/// Runs `future` on `runtime` for at most `limit`. (The timer is made inside the runtime,
/// which owns the clock it runs on.)
fn within<F: std::future::Future>(
    runtime: &Runtime,
    limit: Duration,
    future: F,
) -> Result<F::Output, tokio::time::error::Elapsed> {
    runtime.block_on(async move { tokio::time::timeout(limit, future).await })
}

impl Drop for LockConn {
    fn drop(&mut self) {
        // Without its client, the connection's task says goodbye to the server and ends:
        // a moment is enough for a server that answers. A silent one gets only the close
        // of the socket, when the runtime is dropped next.
        drop(self.client.take());
        if !self.silent {
            let _ = within(&self.runtime, CLOSE_WAIT, &mut self.connection);
        }
    }
}

/// A session-level advisory lock backend on a PostgreSQL server. Cheap to clone.
///
/// Every statement on a lock connection is bounded in time. Opening one, login included,
/// takes at most the connect timeout. The wait for the lock is bounded by the server
/// (`lock_timeout`: until the caller's deadline, or [`WAIT_CHUNK`] at a time without
/// one), and on this side by that wait plus the [read timeout](Self::read_timeout); a
/// lease's check and release by the read timeout. The fence bump, all its waits for
/// locks together (for the table, the row, then each transaction that holds the row),
/// is bounded by the server too, below the read timeout (a `statement_timeout` of the
/// read timeout less a margin: half of it, at most 1 s), so the server gives up on it
/// before this side does, and the session does not go on waiting with the lock held
/// after this side gave up — except in the bump's commit, which no `statement_timeout`
/// bounds (PostgreSQL stops the timer before it commits): a commit that waits for a
/// synchronous standby that is down outlasts the client, and the backend holds the lock
/// until the standby answers or the backend is terminated. These bounds need PostgreSQL
/// 13 or later, whose `statement_timeout` counts from each statement of a query string;
/// a bump that gave up before the deadline is tried again, one
/// that gave up after it fails the acquire with [`Error::Timeout`]. The fence table's
/// creation, on a new connection, has the same bound (its failure is an
/// [`Error::Unavailable`] whose source names the server, with the server's error as its own
/// source). So a server that stops
/// answering but keeps its connections open (a stopped process, a stalled network path) fails an
/// acquire with [`Error::Unavailable`] at most a read timeout after the caller's deadline
/// on a lock connection that was open already. An acquire that opens a new one first
/// spends up to its login (the time left before the deadline, but at least 250 ms, at
/// most the connect timeout) and, the first time, the fence table's creation (a read
/// timeout): it fails at most two read timeouts after the later of its deadline and
/// 250 ms after it began. Without a deadline, an acquire fails within a [`WAIT_CHUNK`]
/// and a read timeout of the server's going silent (a new connection's login: within the
/// connect timeout). A
/// [`Lease::check`] fails with [`Error::LeaseLost`] after a read timeout (so the op is
/// rolled back, not committed), and a [`Lease::release`] with [`Error::Unavailable`]
/// after a read timeout; the source of such an unavailable error names the server
/// (`postgres at postgres://app@db:5432/shop: no answer to a lock statement within 2s; …`),
/// and its own source is an [`std::io::Error`] of kind `TimedOut`. The connection is then closed, never used again: the server ends
/// its session, and frees its lock, once the session's backend reads the close — an idle
/// one at once, one busy in a statement only once that statement ends (a stopped server:
/// once it runs again and the statement ends; the lock statement ends by itself: its
/// wait for the lock at its `lock_timeout`, its fence bump at its `statement_timeout`).
/// If the close never arrives, that is once the server's TCP keepalive gives up on the
/// connection.
///
/// Not bounded here: the op's own connection (a [`Postgres`] resource's
/// `postgres::Client`, which has no read timeout), nor [`PgXactLocked`], which locks on
/// that connection.
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
    config: tokio_postgres::Config,
    backend_id: String,
    max_idle: usize,
    idle: Mutex<Vec<LockConn>>,
    fence_table_ready: AtomicBool,
    fencing: bool,
    read_timeout: Duration,
    /// The longest one lock statement waits: [`MAX_LOCK_TIMEOUT`] (shorter in tests).
    chunk: Duration,
}

impl PostgresLock {
    /// A lock backend on the server at `url` (`postgres://user:password@host:port/db`;
    /// the database holds the fence counters). Nothing is connected yet; the URL's
    /// `connect_timeout` defaults to
    /// [`DEFAULT_CONNECT_TIMEOUT`].
    ///
    /// # Errors
    /// [`Error::Config`] when the URL does not parse, when the driver would read a piece
    /// of its password as the host or database (the rules of [`Postgres::new`](crate::resource::Postgres::new); percent-encode
    /// an `@` as `%40`), when its `connect_timeout` is 0 or below (libpq would read that
    /// as no limit), or when it lists more than one server (a failover list: the lock
    /// would be taken on whichever server a client reached).
    pub fn new(url: &str) -> Result<Self, StrategyError> {
        let config = res::parse_config(url)?;
        // Advisory locks live on one server. With a failover list, each connection goes to
        // the first server it reaches: a client cut off from the first would take the
        // lock on the second while another holds it on the first.
        let servers = config.get_hosts().len().max(config.get_hostaddrs().len());
        if servers > 1 {
            return Err(Error::Config(format!(
                "PostgreSQL lock URL {:?} lists {servers} servers; a lock needs one server \
                 (its advisory locks are that server's: a client that failed over to \
                 another would take the lock there while it is held on the first)",
                crate::spec::redact_url(url)
            )));
        }
        Ok(PostgresLock {
            shared: Arc::new(Shared {
                backend_id: res::identity(&postgres::Config::from(config.clone())),
                config,
                max_idle: DEFAULT_MAX_IDLE,
                idle: Mutex::new(Vec::new()),
                fence_table_ready: AtomicBool::new(false),
                fencing: true,
                read_timeout: DEFAULT_READ_TIMEOUT,
                chunk: MAX_LOCK_TIMEOUT,
            }),
        })
    }

    /// Sets how many idle lock connections are kept for reuse. Default:
    /// [`DEFAULT_MAX_IDLE`].
    pub fn max_idle(self, max_idle: usize) -> Self {
        self.with(|s| s.max_idle = max_idle)
    }

    /// Sets how long the server may take to answer a statement on a lock connection,
    /// beyond the wait for the lock the statement gave it: a lease's check and release
    /// get this long, the fence table's creation too, and an acquire its wait (until the
    /// caller's deadline, at most [`WAIT_CHUNK`] without one) plus this long. The fence
    /// bump, inside that, and the fence table's creation are given less by the server (a
    /// `statement_timeout` of this less a margin: half of it, at most 1 s, for all their
    /// waits for locks together), so that the server gives up on them first. A statement
    /// that runs out of it fails (an acquire or a release with [`Error::Unavailable`], a
    /// check with [`Error::LeaseLost`]), and its connection is closed, never used again.
    /// Make it longer than a busy server's slowest answer to these small statements (the
    /// fence bump commits a row). Default: [`DEFAULT_READ_TIMEOUT`].
    ///
    /// # Errors
    /// [`Error::Config`] for a zero timeout or one over
    /// [`MAX_TIMEOUT`].
    pub fn read_timeout(self, timeout: Duration) -> Result<Self, StrategyError> {
        if timeout.is_zero() || check_timeout(Some(timeout)).is_err() {
            return Err(Error::Config(format!(
                "PostgreSQL lock read timeout {timeout:?} must be above zero and at most {MAX_TIMEOUT:?}"
            )));
        }
        Ok(self.with(|s| s.read_timeout = timeout))
    }

    /// Opens a lock connection now (within the URL's `connect_timeout`), with the fence
    /// table when fencing, and keeps it for the next acquire: a wrong address or password
    /// shows at once rather than at the first op. The spec registry pings when it opens a
    /// `postgres://…` or `queue+postgres://…` spec.
    ///
    /// # Errors
    /// [`Error::Unavailable`] when the server cannot be reached, refuses, or does not
    /// answer in time.
    pub fn ping(&self) -> Result<(), StrategyError> {
        let conn = self.shared.open(None)?;
        self.shared.recycle(conn);
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
            read_timeout: self.shared.read_timeout,
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
            .field("read_timeout", &self.shared.read_timeout)
            .finish_non_exhaustive()
    }
}

impl Shared {
    fn idle(&self) -> MutexGuard<'_, Vec<LockConn>> {
        // Nothing panics while this mutex is held.
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn open(&self, deadline: Option<Instant>) -> Result<LockConn, StrategyError> {
        let mut config = self.config.clone();
        let configured = config
            .get_connect_timeout()
            .copied()
            .unwrap_or(DEFAULT_CONNECT_TIMEOUT);
        let timeout = match deadline {
            None => configured,
            Some(at) => at
                .saturating_duration_since(Instant::now())
                .max(crate::resource::MIN_LOGIN)
                .min(configured),
        };
        config.connect_timeout(timeout);
        let mut conn =
            LockConn::open(&config, timeout).map_err(|e| unavailable(&self.backend_id, e))?;
        if self.fencing && !self.fence_table_ready.load(Ordering::Acquire) {
            // Bounded by the server too, as the fence bump is (the table or the catalog
            // may be locked, by a concurrent creation, say), so that it gives up first:
            // the backend does not read the close of its connection while it waits.
            let limit = self.read_timeout;
            let ddl = format!(
                "SET LOCAL statement_timeout = {}; {FENCE_TABLE}",
                self.bump_timeout_ms()
            );
            res::ensure_table_with(
                |ddl| conn.batch_execute(ddl, limit),
                &ddl,
                StatementError::code,
            )
            .map_err(|e| e.unavailable(&self.backend_id))?;
            self.fence_table_ready.store(true, Ordering::Release);
        }
        Ok(conn)
    }

    fn checkout(&self, deadline: Option<Instant>) -> Result<LockConn, StrategyError> {
        loop {
            let idle = self.idle().pop();
            match idle {
                Some(conn) if conn.is_usable() => return Ok(conn),
                Some(_) => {}
                None => return self.open(deadline),
            }
        }
    }

    fn recycle(&self, conn: LockConn) {
        if !conn.is_usable() {
            return;
        }
        let mut idle = self.idle();
        if idle.len() < self.max_idle {
            idle.push(conn);
            return;
        }
        // Closed outside the lock.
        drop(idle);
    }

    /// The time limit of a lock statement: the wait it gives the server, plus the read
    /// timeout.
    fn limit(&self, wait: LockWait) -> Duration {
        match wait {
            LockWait::TryOnce => self.read_timeout,
            LockWait::Wait { ms, .. } => {
                Duration::from_millis(ms).saturating_add(self.read_timeout)
            }
        }
    }

    /// The `statement_timeout` of the fence bump and of the fence table's creation, in
    /// milliseconds: the read timeout less a margin (half of it, at most 1 s), at least
    /// 1 ms. The bump starts when the lock is granted, at the latest at the end of the
    /// statement's wait for it, so the server gives up on the bump, all its waits for
    /// locks together (for the table, the row, then each transaction that holds the
    /// row), before this side gives up on the statement (that wait plus the read timeout).
    /// Otherwise the client would close the connection while the backend, which does not
    /// read its socket while it runs a statement, goes on waiting, holding the lock.
    /// (`lock_timeout` would bound each of those waits, not the statement.)
    fn bump_timeout_ms(&self) -> u64 {
        let margin = (self.read_timeout / 2).min(Duration::from_secs(1));
        let ms = self
            .read_timeout
            .saturating_sub(margin)
            .min(MAX_LOCK_TIMEOUT)
            .as_millis()
            .max(1);
        u64::try_from(ms).unwrap_or(u64::MAX)
    }

    /// Waits for the lock and bumps its fence: `Ok(Some(fence))` held (the fence `None`
    /// without fencing), `Ok(None)` the deadline passed. A deadline further than one
    /// wait ([`MAX_LOCK_TIMEOUT`]) takes several, and so does an acquire without one
    /// (waits of [`WAIT_CHUNK`]).
    fn lock(
        &self,
        conn: &mut LockConn,
        key: i64,
        deadline: Option<Instant>,
    ) -> Result<Option<Option<Fence>>, StatementError> {
        loop {
            let wait = match deadline {
                Some(_) => LockWait::until(deadline, self.chunk),
                None => LockWait::endless(self.chunk),
            };
            match self.lock_once(conn, key, wait)? {
                Some(fence) => return Ok(Some(fence)),
                None if matches!(wait, LockWait::Wait { more: true, .. })
                    || deadline.is_some_and(|at| Instant::now() < at) =>
                {
                    // The wait ran out before the deadline (the wait for the lock was one
                    // of several, or the fence bump ran out of its own shorter time,
                    // waiting for its row, say): wait again. Had the lock been granted and
                    // only the fence bump timed out, the session would hold it (session
                    // locks outlive the failed statement), and a second grant would count
                    // twice, outliving the lease's one unlock: let it go first. A lock
                    // connection holds no other lock.
                    conn.simple_query("SELECT pg_advisory_unlock_all()", self.read_timeout)?;
                    // The unlock may be answered after the deadline: then it has passed,
                    // and another try (a statement with a read timeout of its own) would
                    // end up to two read timeouts after it.
                    if deadline.is_some_and(|at| Instant::now() >= at) {
                        return Ok(None);
                    }
                }
                None => return Ok(None),
            }
        }
    }

    /// One wait for the lock and the fence bump, as [`Shared::lock`] answers. Each path is
    /// one round trip of the simple query protocol, whose statements may only contain
    /// numbers computed here (the key is a hash, the timeouts counts of milliseconds),
    /// never user text. Its settings are `SET LOCAL`: the statements of one simple query
    /// run in one (implicit) transaction, and its settings end with it, committed or not,
    /// so the connection keeps the session's own. The wait for the lock gets a
    /// `lock_timeout` and no `statement_timeout`; the fence bump a `statement_timeout`
    /// ([`Shared::bump_timeout_ms`]), which since PostgreSQL 13 applies to each statement
    /// of a simple query on its own, from its start, and bounds all of its waits together.
    fn lock_once(
        &self,
        conn: &mut LockConn,
        key: i64,
        wait: LockWait,
    ) -> Result<Option<Option<Fence>>, StatementError> {
        let limit = self.limit(wait);
        if !self.fencing {
            let held = match wait {
                LockWait::TryOnce => conn
                    .simple_query(&format!("SELECT pg_try_advisory_lock({key})"), limit)
                    .map(|m| last_value(&m) == Some("t")),
                LockWait::Wait { ms, .. } => conn
                    .batch_execute(
                        &format!(
                            "SET LOCAL statement_timeout = 0; SET LOCAL lock_timeout = {ms};
                             SELECT pg_advisory_lock({key})"
                        ),
                        limit,
                    )
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
        // The statement's timeout bounds every wait in it: no `lock_timeout` of its own.
        let bounded = format!(
            "SET LOCAL lock_timeout = 0; SET LOCAL statement_timeout = {};",
            self.bump_timeout_ms()
        );
        let script = match wait {
            // No time left: try once, and bump the fence only if that took the lock, in
            // one statement.
            LockWait::TryOnce => format!(
                "{bounded}
                 WITH got AS (SELECT pg_try_advisory_lock({key}) AS ok)
                 INSERT INTO turnstile_lock_fences (key, fence)
                     SELECT {key}, 1 FROM got WHERE ok
                 ON CONFLICT (key) DO UPDATE SET fence = turnstile_lock_fences.fence + 1
                 RETURNING fence"
            ),
            // The server bounds the wait and wakes us the moment the lock is free.
            LockWait::Wait { ms, .. } => {
                format!(
                    "SET LOCAL statement_timeout = 0; SET LOCAL lock_timeout = {ms};
                     SELECT pg_advisory_lock({key});
                     {bounded} {bump}"
                )
            }
        };
        let messages = match conn.simple_query(&script, limit) {
            Ok(messages) => messages,
            Err(e) if ran_out(e.code()) => return Ok(None),
            Err(e) => return Err(e),
        };
        let fence = last_value(&messages).and_then(|f| f.parse::<u64>().ok());
        Ok(fence.map(|f| Some(Fence(f))))
    }
}

/// Whether the server gave up on a lock statement: a lock wait ran out of its
/// `lock_timeout`, or the statement of its `statement_timeout`. The latter's code,
/// `query_canceled`, is also what a `pg_cancel_backend` of the statement answers, which
/// cannot be told apart (the message may be translated): in the fencing path of
/// [`Shared::lock`] it counts as running out, so the acquire waits again until its
/// deadline (or, without one, goes on waiting); [`PgXactLocked`] counts it only for a
/// wait that is one of several, or once the deadline has passed, and otherwise fails
/// the call as the server's error. The non-fencing lock wait sets no
/// `statement_timeout`, and there a cancel is the server's error too.
fn ran_out(code: Option<&SqlState>) -> bool {
    code.is_some_and(|c| *c == SqlState::LOCK_NOT_AVAILABLE || *c == SqlState::QUERY_CANCELED)
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

    /// The advisory key: two names that share it are one lock, taken once by a call that
    /// needs both (each lease has a session of its own, so taking it twice would wait on
    /// itself).
    fn order_key<'a>(&self, name: &'a LockName) -> std::borrow::Cow<'a, [u8]> {
        std::borrow::Cow::Owned(advisory_key(name).to_be_bytes().to_vec())
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
        let mut conn = shared.checkout(deadline)?;
        // On failure the connection is dropped, which ends the session and any lock it
        // took.
        let fence = match shared.lock(&mut conn, key, deadline) {
            // A cached connection may have died since (server restart, idle timeout).
            Err(e) if e.is_closed() => {
                conn = shared.open(deadline)?;
                shared.lock(&mut conn, key, deadline)
            }
            other => other,
        }
        .map_err(|e| e.unavailable(&shared.backend_id))?;
        let Some(fence) = fence else {
            // Not recycled: had the lock been granted and only the fence bump timed out,
            // the session would still hold it; closing the connection frees it for sure.
            drop(conn);
            return Err(Error::Timeout {
                waited: start.elapsed(),
            });
        };
        Ok(PostgresLease {
            conn: Mutex::new(Some(conn)),
            key,
            fence,
            shared: self.shared.clone(),
        })
    }
}

/// A held session advisory lock and its dedicated connection. Released on drop.
#[must_use = "the lock is released as soon as the lease is dropped"]
pub struct PostgresLease {
    conn: Mutex<Option<LockConn>>,
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
        let Some(mut conn) = self
            .conn
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        else {
            return Err(Error::LeaseLost);
        };
        let released = conn.query_one(
            "SELECT pg_advisory_unlock($1)",
            &[&self.key],
            self.shared.read_timeout,
        );
        match released {
            Ok(row) if row.get::<_, bool>(0) => {
                self.shared.recycle(conn);
                Ok(())
            }
            // Not held by this session any more (or the session is gone).
            Ok(_) => Err(Error::LeaseLost),
            Err(e) if e.is_closed() => Err(Error::LeaseLost),
            // Refused, or no answer in time: the connection is dropped, and the server
            // frees the lock when it reads the close.
            Err(e) => Err(e.unavailable(&self.shared.backend_id)),
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
        let mut guard = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let Some(conn) = guard.as_mut() else {
            return Err(Error::LeaseLost);
        };
        // A bigint advisory key shows in pg_locks as classid = high 32 bits, objid = low
        // 32 bits, objsubid = 1.
        let held = conn.query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_locks
                 WHERE locktype = 'advisory' AND pid = pg_backend_pid() AND granted
                   AND classid = (($1::bigint >> 32) & 4294967295)::bigint::text::oid
                   AND objid = ($1::bigint & 4294967295)::bigint::text::oid
                   AND objsubid = 1)",
            &[&self.key],
            self.shared.read_timeout,
        );
        match held {
            Ok(row) if row.get::<_, bool>(0) => Ok(()),
            _ => {
                // Lost, or no answer in time: either way this session can no longer vouch
                // for the lock. Dropping the connection frees it if the server still
                // thinks we hold it.
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
/// two callers cannot deadlock; all in one statement, whose `statement_timeout` bounds
/// the waits for all of them together, until the deadline), the op, `COMMIT`. The op's
/// statements get the session's own `lock_timeout` and `statement_timeout` back.
/// Losing the session aborts the transaction and frees the lock together, so no fence
/// is needed. Lock keys are [`advisory_key`] of the key inside the database's identity,
/// so this and [`PostgresLock`] over the same database take the same 64-bit keys (but
/// session and transaction locks on one key do conflict with each other, as they should).
///
/// Its statements, the lock's included, run on the op's own connection (a
/// `postgres::Client` of the [`Postgres`] resource), which has no read timeout: unlike
/// [`PostgresLock`]'s, a server that stops answering but keeps the connection open blocks
/// a call until it answers again, past its deadline (see [`Postgres`]).
///
/// An op that calls back in (through any `PgXactLocked` over the same database) for a
/// key its own transaction holds gets [`Error::Reentrant`] at once, and the inner op never
/// runs: its lock would wait, on another connection, for the transaction that waits for
/// it. Other keys are free.
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
    /// [`Error::Config`] for a timeout over [`MAX_TIMEOUT`].
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
            // Save the session's timeouts in transaction-local settings, bound the wait for
            // all the locks together, then restore them for the op's own statements.
            script.push_str(
                "SELECT set_config('turnstile.lock_timeout', current_setting('lock_timeout'), true),
                        set_config('turnstile.statement_timeout', current_setting('statement_timeout'), true); ",
            );
            // One statement takes every lock, in the order of the array (a function scan
            // returns its rows in order), so that its `statement_timeout` bounds their
            // waits together (`lock_timeout` would bound each wait: with several keys held
            // elsewhere, the last could end several waits past the deadline).
            let array: Vec<String> = keys.iter().map(i64::to_string).collect();
            script.push_str(&format!(
                "SET LOCAL lock_timeout = 0; SET LOCAL statement_timeout = {ms};
                 SELECT count(pg_advisory_xact_lock(k)) FROM unnest(ARRAY[{}]::bigint[]) AS k; ",
                array.join(",")
            ));
            script.push_str(
                "SELECT set_config('lock_timeout', current_setting('turnstile.lock_timeout'), true),
                        set_config('statement_timeout', current_setting('turnstile.statement_timeout'), true)",
            );
            if more {
                script.push_str("; RELEASE SAVEPOINT turnstile_lock_wait");
            }
            match client.batch_execute(&script) {
                Ok(()) => return Ok(true),
                // Without a deadline nothing here bounds the wait: a cancel is someone
                // else's (`pg_cancel_backend`), and so is one before the deadline in the
                // last wait.
                Err(e)
                    if ran_out(e.code())
                        && (more || deadline.is_some_and(|at| Instant::now() >= at)) =>
                {
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

    /// In the transaction `client` has begun: takes the locks, runs the op, commits (or
    /// rolls back). Answers the result and whether the connection is to be dropped.
    fn run_in_transaction<T, E, F>(
        &self,
        client: &mut Client,
        keys: &[Key],
        lock_keys: &[i64],
        deadline: Option<Instant>,
        start: Instant,
        op: &mut F,
    ) -> (Result<T, Error<E>>, bool)
    where
        F: FnMut(&mut Ctx<'_, Client>) -> Result<T, E>,
        E: Send + Sync + 'static,
    {
        match Self::lock_all(client, lock_keys, deadline, self.chunk) {
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
        let namespace = turnstile_core::Connect::identity(&self.db).to_owned();
        let mut lock_keys: Vec<i64> = keys
            .iter()
            .map(|k| advisory_key(&LockName::new(namespace.as_str(), k.clone())))
            .collect();
        lock_keys.sort_unstable();
        lock_keys.dedup();
        // An op calling back in for a lock its own transaction holds would wait for that
        // transaction (on another connection), which waits for the op: for ever, or until
        // the deadline. Advisory locks are the server's, so any `PgXactLocked` on the same
        // database shares them: one owner for all.
        static OWNER: std::sync::LazyLock<u64> =
            std::sync::LazyLock::new(crate::holding::new_owner);
        let held: Vec<Vec<u8>> = lock_keys.iter().map(|k| k.to_be_bytes().to_vec()).collect();
        if crate::holding::holds(*OWNER, &held) {
            return Err(Error::Reentrant);
        }
        let mut client = self.pool.get(&self.db, deadline).map_err(Error::widen)?;
        // A pooled session the server closed while it sat idle (a restart, a killed
        // backend) can look alive until used: one that breaks at `BEGIN`, before anything
        // ran, is replaced once.
        let mut fresh = false;
        loop {
            match self.db.begin(&mut client, &[]) {
                Ok(()) => break,
                Err(e) if e.discards_resource() && !fresh => {
                    client.discard();
                    client = self.pool.get(&self.db, deadline).map_err(Error::widen)?;
                    fresh = true;
                }
                Err(e) => {
                    if e.discards_resource() {
                        client.discard();
                    } else {
                        client.put();
                    }
                    return Err(e.into_error());
                }
            }
        }
        let holding = crate::holding::Holding::enter(*OWNER, held);
        let (result, broken) =
            self.run_in_transaction(&mut client, &keys, &lock_keys, deadline, start, &mut op);
        drop(holding);
        if broken || client.is_closed() {
            client.discard();
        } else {
            client.put();
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
        res::open(&res::parse_url(&url()).unwrap(), None).expect("the PostgreSQL test server")
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
        // Without a deadline, a lock connection waits in chunks of at most WAIT_CHUNK.
        assert_eq!(
            LockWait::endless(MAX_LOCK_TIMEOUT),
            LockWait::Wait {
                ms: WAIT_CHUNK.as_millis() as u64,
                more: true
            }
        );
        assert_eq!(
            LockWait::endless(CHUNK),
            LockWait::Wait { ms: 40, more: true }
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

    /// A lock on a list of servers (libpq's failover) would be taken on whichever one a
    /// client reached: two clients on two servers would both hold it. One server only.
    #[test]
    fn a_lock_url_with_several_servers_is_refused() {
        for url in [
            "postgres://u:Xy7@a,b/db",
            "postgres://u@a:5432,b:5433/db",
            "host=a,b user=u password=Xy7 dbname=db",
            "hostaddr=10.0.0.1,10.0.0.2 user=u",
        ] {
            match PostgresLock::new(url) {
                Err(Error::Config(m)) => {
                    assert!(m.contains("one server"), "{url}: {m}");
                    assert!(!m.contains("Xy7"), "{url}: {m}");
                }
                Err(other) => panic!("{url}: {other}"),
                Ok(_) => panic!("{url}: accepted"),
            }
        }
        assert!(PostgresLock::new("postgres://u@a:5433/db").is_ok());
    }

    /// libpq reads a `connect_timeout` of 0 or below as no limit; the lock refuses it as
    /// the resource does, rather than wait on a silent server for ever.
    #[test]
    fn a_lock_url_without_a_positive_connect_timeout_is_refused() {
        for url in [
            "postgres://u:Xy7@a/db?connect_timeout=0",
            "postgres://u:Xy7@a/db?connect_timeout=-1",
        ] {
            match PostgresLock::new(url) {
                Err(Error::Config(m)) => {
                    assert!(m.contains("connect_timeout"), "{url}: {m}");
                    assert!(!m.contains("Xy7"), "{url}: {m}");
                }
                Err(other) => panic!("{url}: {other}"),
                Ok(_) => panic!("{url}: accepted"),
            }
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

    /// With a deadline, and without one (whose waits are chunked too, each bounded on
    /// this side, so that a silent server is noticed).
    #[test]
    fn a_session_lock_waits_past_its_first_chunk() {
        for (fencing, deadline) in [(true, true), (false, true), (true, false), (false, false)] {
            let lock = chunked(PostgresLock::new(&url()).unwrap().fencing(fencing));
            let name = LockName::new("chunks", Key::new(unique("s")).unwrap());
            let key = advisory_key(&name);
            let holder = hold_for(key, CHUNK * 5);
            let start = Instant::now();
            let deadline = deadline.then(|| Instant::now() + Duration::from_secs(10));
            let lease = lock
                .acquire(&name, deadline)
                .expect("the lock, once the holder lets it go");
            assert!(start.elapsed() >= CHUNK * 4, "{:?}", start.elapsed());
            assert_eq!(lease.fence().is_some(), fencing);
            holder.join().unwrap();
            lease.release().unwrap();
            // Held once: the one release freed it for everyone.
            assert!(
                taken_within(key, Duration::ZERO),
                "fencing {fencing}, deadline {deadline:?}: still held after its release"
            );
        }
    }

    /// The read timeout of the fence bump tests: long enough that a loaded machine's stall
    /// does not fail a statement; the bump's waits get 1 s.
    const READ: Duration = Duration::from_secs(2);

    fn with_read_timeout() -> PostgresLock {
        PostgresLock::new(&url())
            .unwrap()
            .read_timeout(READ)
            .unwrap()
    }

    /// The fence row is locked by another session for longer than the bump's wait (the
    /// read timeout less a margin) and than a chunk, but not until the deadline: the bump
    /// is tried again until it gets the row, and the lock is held once.
    #[test]
    fn a_fence_bump_that_outlasts_its_wait_is_tried_again_and_leaves_the_lock_held_once() {
        let row_held = Duration::from_millis(2500);
        for chunks in [true, false] {
            let lock = with_read_timeout();
            assert_eq!(lock.shared.bump_timeout_ms(), 1000);
            let lock = if chunks { chunked(lock) } else { lock };
            let name = LockName::new("chunks", Key::new(unique("f")).unwrap());
            let key = advisory_key(&name);
            // The fence row exists, and another session keeps it locked for longer than
            // the bump's wait: the lock is granted at once, and its fence bump waits for
            // the row.
            drop(lock.acquire(&name, None).unwrap());
            let (row_done, row_holder) = lock_fence_row(key);
            let releaser = std::thread::spawn(move || {
                std::thread::sleep(row_held);
                drop(row_done);
            });
            let start = Instant::now();
            let lease = lock
                .acquire(&name, Some(Instant::now() + Duration::from_secs(30)))
                .expect("the lock, once the fence row is free");
            // Waited for the row past the bump's first wait.
            assert!(
                start.elapsed() >= Duration::from_millis(1000),
                "{:?}",
                start.elapsed()
            );
            releaser.join().unwrap();
            row_holder.join().unwrap();
            lease.release().unwrap();
            assert!(
                taken_within(key, Duration::ZERO),
                "chunks {chunks}: still held after its release: granted twice"
            );
        }
    }

    /// Locks the fence row of `key` (`FOR UPDATE`) from another session, in a thread,
    /// until the sender is used or dropped; answers when it is locked.
    fn lock_fence_row(key: i64) -> (std::sync::mpsc::Sender<()>, std::thread::JoinHandle<()>) {
        let (locked_tx, locked_rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let row_holder = std::thread::spawn(move || {
            let mut admin = admin();
            let mut tx = admin.transaction().unwrap();
            tx.execute(
                "SELECT fence FROM turnstile_lock_fences WHERE key = $1 FOR UPDATE",
                &[&key],
            )
            .unwrap();
            locked_tx.send(()).unwrap();
            let _ = done_rx.recv_timeout(Duration::from_secs(60));
            tx.rollback().unwrap();
        });
        locked_rx.recv().unwrap();
        (done_tx, row_holder)
    }

    /// Whether another session takes `key` within `within` (and lets it go again).
    fn taken_within(key: i64, within: Duration) -> bool {
        let mut admin = admin();
        let start = Instant::now();
        loop {
            let got: bool = admin
                .query_one("SELECT pg_try_advisory_lock($1)", &[&key])
                .unwrap()
                .get(0);
            if got {
                admin
                    .execute("SELECT pg_advisory_unlock($1)", &[&key])
                    .unwrap();
                return true;
            }
            if start.elapsed() >= within {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The lock is granted near the deadline and its fence row is locked by another
    /// session past it: the server gives up on the bump before this side gives up on the
    /// statement, so the acquire times out (not `Unavailable`, which is what this side
    /// giving up would say) and its session does not keep the lock (a backend waiting in a
    /// statement does not read the close of its connection).
    ///
    /// Without the bump's own time limit, the bump would wait for the row with the wait
    /// for the lock's `lock_timeout` (about 5 s) from the grant (4.5 s): this side would
    /// give up at 7 s (deadline plus read timeout), the backend keep the lock until 9.5 s.
    #[test]
    fn a_fence_bump_stuck_on_its_row_gives_up_before_the_client_and_keeps_no_lock() {
        let lock = with_read_timeout();
        let name = LockName::new("bump", Key::new(unique("w")).unwrap());
        let key = advisory_key(&name);
        // The fence row exists.
        drop(lock.acquire(&name, None).unwrap());
        let wait = Duration::from_secs(5);
        let (row_done, row_holder) = lock_fence_row(key);
        let holder = hold_for(key, Duration::from_millis(4500));
        let start = Instant::now();
        let err = lock.acquire(&name, Some(start + wait)).unwrap_err();
        let took = start.elapsed();
        // While the row is still locked.
        assert!(
            taken_within(key, Duration::from_millis(1500)),
            "the failed acquire's session still holds the lock ({took:?}, {err:?})"
        );
        assert!(matches!(err, Error::Timeout { .. }), "{took:?}, {err:?}");
        assert!(took >= wait, "{took:?}");
        drop(row_done);
        row_holder.join().unwrap();
        holder.join().unwrap();
    }

    /// The same with no time left (`pg_try_advisory_lock` and the bump in one statement):
    /// the try-once path bounds the bump too.
    #[test]
    fn a_try_once_fence_bump_stuck_on_its_row_keeps_no_lock() {
        let lock = with_read_timeout();
        let name = LockName::new("bump", Key::new(unique("t")).unwrap());
        let key = advisory_key(&name);
        // A connection kept for reuse, which ran no lock statement (with the fence table),
        // and the fence row, made by another session.
        lock.ping().unwrap();
        assert_eq!(lock.shared.idle().len(), 1);
        admin()
            .execute(
                "INSERT INTO turnstile_lock_fences (key, fence) VALUES ($1, 1)",
                &[&key],
            )
            .unwrap();
        let (row_done, row_holder) = lock_fence_row(key);
        let start = Instant::now();
        let err = lock.acquire(&name, Some(Instant::now())).unwrap_err();
        let took = start.elapsed();
        assert!(
            taken_within(key, Duration::from_secs(3)),
            "the failed acquire's session still holds the lock ({took:?}, {err:?})"
        );
        assert!(matches!(err, Error::Timeout { .. }), "{took:?}, {err:?}");
        assert!(lock.shared.idle().is_empty(), "not the kept connection");
        drop(row_done);
        row_holder.join().unwrap();
    }

    /// Locks the fence row of `key` `FOR SHARE` from `n` sessions, one after the other (a
    /// writer then waits for their transactions in that order, one wait each), each until
    /// the instant it is sent (or its sender dropped); answers when all of them hold it.
    fn share_fence_row(
        key: i64,
        n: usize,
    ) -> Vec<(
        std::sync::mpsc::Sender<Instant>,
        std::thread::JoinHandle<()>,
    )> {
        (0..n)
            .map(|_| {
                let (locked_tx, locked_rx) = std::sync::mpsc::channel();
                let (until_tx, until_rx) = std::sync::mpsc::channel::<Instant>();
                let sharer = std::thread::spawn(move || {
                    let mut admin = admin();
                    let mut tx = admin.transaction().unwrap();
                    tx.execute(
                        "SELECT fence FROM turnstile_lock_fences WHERE key = $1 FOR SHARE",
                        &[&key],
                    )
                    .unwrap();
                    locked_tx.send(()).unwrap();
                    if let Ok(until) = until_rx.recv() {
                        std::thread::sleep(until.saturating_duration_since(Instant::now()));
                    }
                    tx.rollback().unwrap();
                });
                locked_rx.recv().unwrap();
                (until_tx, sharer)
            })
            .collect()
    }

    /// The lock is free, but its fence row is shared by five transactions that end 600 ms
    /// apart: the bump waits for each in turn, every wait shorter than the bump's time
    /// (1 s), 3 s in all. The server gives up on the bump as a whole before this side
    /// gives up on the statement, so the acquire times out (not `Unavailable`) and its
    /// session does not keep the lock.
    ///
    /// With a `lock_timeout` of 1 s for each of the bump's waits instead, the bump would
    /// wait all 3 s: this side would give up at 2.1 s (the deadline, 100 ms, plus the read
    /// timeout), and the backend, still waiting, keep the lock until 3 s.
    #[test]
    fn a_fence_bump_that_waits_several_times_gives_up_as_a_whole_before_the_client() {
        let lock = with_read_timeout();
        assert_eq!(lock.shared.bump_timeout_ms(), 1000);
        let name = LockName::new("bump", Key::new(unique("m")).unwrap());
        let key = advisory_key(&name);
        // The fence row exists.
        drop(lock.acquire(&name, None).unwrap());
        let sharers = share_fence_row(key, 5);
        let start = Instant::now();
        for (i, (until, _)) in (1..).zip(&sharers) {
            until.send(start + Duration::from_millis(600) * i).unwrap();
        }
        let err = lock
            .acquire(&name, Some(start + Duration::from_millis(100)))
            .unwrap_err();
        let took = start.elapsed();
        // While the row is still shared.
        assert!(
            taken_within(key, Duration::from_millis(500)),
            "the failed acquire's session still holds the lock ({took:?}, {err:?})"
        );
        assert!(matches!(err, Error::Timeout { .. }), "{took:?}, {err:?}");
        assert!(took < READ, "{took:?}");
        for (_, sharer) in sharers {
            sharer.join().unwrap();
        }
    }

    /// A new lock connection creates the fence table while another session, which has not
    /// committed yet, creates it too (in a schema of its own, the lock connection's
    /// `search_path`): the creation waits for that transaction. The server gives up on it
    /// before this side does: `Unavailable` with the server's error, not a read that timed
    /// out (after which the backend would go on waiting).
    #[test]
    fn a_fence_table_creation_stuck_on_the_catalog_gives_up_before_the_client() {
        let schema = format!(
            "turnstile_lock_{}_{:016x}",
            std::process::id(),
            fastrand::u64(..)
        );
        admin()
            .batch_execute(&format!("CREATE SCHEMA {schema}"))
            .unwrap();
        let (created_tx, created_rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let ddl = FENCE_TABLE.replace(
            "turnstile_lock_fences",
            &format!("{schema}.turnstile_lock_fences"),
        );
        let creator = std::thread::spawn(move || {
            let mut admin = admin();
            let mut tx = admin.transaction().unwrap();
            tx.batch_execute(&ddl).unwrap();
            created_tx.send(()).unwrap();
            let _ = done_rx.recv_timeout(Duration::from_secs(60));
            tx.rollback().unwrap();
        });
        created_rx.recv().unwrap();
        let url = url();
        let sep = if url.contains('?') { '&' } else { '?' };
        let lock = PostgresLock::new(&format!("{url}{sep}options=-c%20search_path%3D{schema}"))
            .unwrap()
            .read_timeout(READ)
            .unwrap();
        let start = Instant::now();
        let err = lock.ping().unwrap_err();
        let took = start.elapsed();
        drop(done_tx);
        creator.join().unwrap();
        admin()
            .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
            .unwrap();
        let Error::Unavailable(source) = &err else {
            panic!("{took:?}, {err:?}");
        };
        let code = source
            .source()
            .and_then(|e| e.downcast_ref::<postgres::error::DbError>())
            .map(|e| e.code());
        assert_eq!(code, Some(&SqlState::QUERY_CANCELED), "{took:?}, {err:?}");
        assert!(took < READ, "{took:?}");
    }

    /// Two keys held elsewhere: the first until shortly before the deadline, the second
    /// past it. The call still ends at its deadline: the waits for both locks are bounded
    /// together. (With a `lock_timeout` for each wait, the second's would start when the
    /// first lock is let go and last as long as the whole: about 500 ms too long.)
    #[test]
    fn transaction_locks_of_several_keys_are_waited_for_until_the_deadline_in_all() {
        let db = Postgres::new(&url()).unwrap();
        let xact = PgXactLocked::new(db.clone());
        let k1 = Key::new(unique("x")).unwrap();
        let k2 = Key::new(unique("y")).unwrap();
        let mut held = [&k1, &k2].map(|k| advisory_key(&LockName::new(db.identity(), k.clone())));
        held.sort_unstable();
        let second = hold_for(held[1], Duration::from_millis(2500));
        let first = hold_for(held[0], Duration::from_millis(500));
        let wait = Duration::from_millis(600);
        let start = Instant::now();
        let err = xact
            .run_with(&[k1, k2], Wait::Timeout(wait), |_| {
                Ok::<_, postgres::Error>(())
            })
            .unwrap_err();
        let took = start.elapsed();
        assert!(matches!(err, Error::Timeout { .. }), "{took:?}, {err:?}");
        assert!(took < wait + Duration::from_millis(300), "{took:?}");
        first.join().unwrap();
        second.join().unwrap();
    }

    /// Without a deadline nothing of ours bounds a `pg-xact` wait, so a cancel of it
    /// (`pg_cancel_backend`: the same code as a `statement_timeout`) is the server's
    /// error, not a `Timeout` of a call that had none.
    #[test]
    fn a_cancelled_transaction_lock_wait_without_a_deadline_is_no_timeout() {
        let db = Postgres::new(&url()).unwrap();
        let xact = PgXactLocked::new(db.clone());
        let key = Key::new(unique("c")).unwrap();
        let held = advisory_key(&LockName::new(db.identity(), key.clone()));
        let holder = hold_for(held, Duration::from_secs(3));
        let canceller = std::thread::spawn(move || {
            let mut admin = admin();
            let start = Instant::now();
            // The waiting backend: the one whose lock on the key is not granted.
            while start.elapsed() < Duration::from_secs(2) {
                let cancelled: Option<bool> = admin
                    .query_opt(
                        "SELECT pg_cancel_backend(pid) FROM pg_locks
                         WHERE locktype = 'advisory' AND NOT granted
                           AND ((classid::bigint << 32) | objid::bigint) = $1",
                        &[&held],
                    )
                    .unwrap()
                    .map(|row| row.get(0));
                if cancelled == Some(true) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            panic!("no waiter to cancel");
        });
        let err = xact
            .run_with(&[key], Wait::Forever, |_| Ok::<_, postgres::Error>(()))
            .unwrap_err();
        canceller.join().unwrap();
        assert!(matches!(err, Error::Unavailable { .. }), "{err:?}");
        holder.join().unwrap();
    }

    /// The op gets the session's own timeouts (here the URL's) back, not the lock
    /// statement's: with a deadline in one wait or several (savepoints), without one, and
    /// with no time left.
    #[test]
    fn a_transaction_locks_op_has_the_sessions_timeouts() {
        let url = url();
        let sep = if url.contains('?') { '&' } else { '?' };
        let db = Postgres::new(&format!(
            "{url}{sep}options=-c%20statement_timeout%3D4321%20-c%20lock_timeout%3D1234"
        ))
        .unwrap();
        for chunk in [MAX_LOCK_TIMEOUT, CHUNK] {
            let mut xact = PgXactLocked::new(db.clone());
            xact.chunk = chunk;
            for wait in [
                Wait::Timeout(Duration::from_secs(10)),
                Wait::Forever,
                Wait::Timeout(Duration::ZERO),
            ] {
                let keys = [
                    Key::new(unique("s")).unwrap(),
                    Key::new(unique("t")).unwrap(),
                ];
                let seen = xact
                    .run_with(&keys, wait, |db| {
                        let statement: String = db.query_one("SHOW statement_timeout", &[])?.get(0);
                        let lock: String = db.query_one("SHOW lock_timeout", &[])?.get(0);
                        Ok::<_, postgres::Error>((statement, lock))
                    })
                    .unwrap();
                assert_eq!(
                    seen,
                    ("4321ms".to_owned(), "1234ms".to_owned()),
                    "{chunk:?}, {wait:?}"
                );
            }
        }
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
