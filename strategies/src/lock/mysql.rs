//! MySQL / MariaDB `GET_LOCK` as a lock backend, with fencing tokens.
//!
//! Seed 004 took `GET_LOCK` per model instance so that a notification mail went out once.
//! This backend keeps its idea and fixes its details:
//!
//! - **A dedicated connection per held lock.** A `GET_LOCK` lock belongs to the session
//!   that took it; a pooled connection would hand it to whoever borrows the connection
//!   next. Connections that hold nothing are kept in a small idle cache
//!   ([`MySqlLock::max_idle`]).
//! - **Bound parameters**: `SELECT GET_LOCK(?, ?)` and `RELEASE_LOCK(?)`, never a
//!   formatted name.
//! - **Names.** Lock names are server-wide (across schemas), at most 64 characters, and
//!   case-insensitive on MySQL 5.7+ (case-sensitive on MariaDB). [`server_lock_name`]
//!   maps a [`LockName`] to `namespace|key` when that is at most 64 characters of
//!   printable ASCII without spaces or upper-case letters, and the namespace has no
//!   `|`; any other name becomes `turnstile#` and the 16 hex digits of
//!   [`LockName::stable_hash`]. No raw name starts with `turnstile#`, so the two forms
//!   never meet. Hence keys that differ only in case are **different locks**, on MySQL
//!   as on MariaDB and every other turnstile backend. (Two names sharing a 64-bit hash
//!   would share a lock: safe, only slower.)
//!   Empty names never get here ([`Key`](crate::Key) refuses them; MariaDB's
//!   `GET_LOCK('')` returns NULL).
//! - **Results**: 1 is held; 0 is [`Error::Timeout`]; NULL (an error on the server, e.g.
//!   the query was killed) is [`Error::Unavailable`] with a [`GetLockNull`] source.
//! - **Errors** name the server, by its identity (never the password), and say what
//!   failed in words: `mysql at mysql://app@db:3306/shop: ERROR 1045 (28000): Access
//!   denied …`, `… Could not connect to address …`, or `… no answer within 10s: …` for a
//!   login past the [connect timeout](MySqlLock::connect_timeout) and `… no answer within
//!   15s` for a statement past the lock connections' read timeout (an [`std::io::Error`]
//!   of kind `TimedOut` as the source), so that a strategy over a MySQL lock and MySQL
//!   data tells which server failed.
//! - **Deadlines.** Whole seconds of the remaining time go to `GET_LOCK(name, secs)`
//!   (some server versions round a fractional timeout); the sub-second rest is polled
//!   with `GET_LOCK(name, 0)` and full-jitter backoff. `None` waits forever, in
//!   `GET_LOCK` calls of [`WAIT_CHUNK`] each (MariaDB answers a negative timeout with
//!   NULL). The wait itself comes from [`Locked`](crate::Locked): 30 s by default
//!   (the seed used 45 s).
//! - **Fences.** While the lock is held, its lock connection bumps a counter row in
//!   `turnstile_lock_fences` (one autocommitted upsert, InnoDB, durable), so tokens rise
//!   monotonically per lock name across processes, hosts and server restarts.
//! - **Holder death.** The server frees the lock when the session ends: a crashed
//!   process's connection closes at once; a dead *host* holds it until TCP keepalive or
//!   the server's `wait_timeout` notices. [`Lease::check`] asks the server whether this
//!   session still holds the lock (`IS_USED_LOCK(name) = CONNECTION_ID()`), so a killed
//!   session is caught before the op commits ([`Error::LeaseLost`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use mysql::prelude::Queryable;
use mysql::{Conn, Opts};
use turnstile_core::{
    BoxError, Capabilities, Error, Fence, HolderDeath, Lease, Lock, LockName, Scope, StrategyError,
};

use crate::resource::mysql as res;
use crate::resource::{DEFAULT_CONNECT_TIMEOUT, ServerError};

/// Longest lock name MySQL and MariaDB accept, in characters.
pub const MAX_SERVER_NAME: usize = 64;

/// How long one `GET_LOCK` call may block when waiting without a deadline: 10 s.
pub const WAIT_CHUNK: Duration = Duration::from_secs(10);

/// Lock connections' read and write timeout beyond [`WAIT_CHUNK`]: 5 s. A server that
/// stops answering (paused, partitioned) is noticed within `WAIT_CHUNK + IO_MARGIN`; a
/// [`Lease::check`] or release against it fails as [`Error::LeaseLost`] after at most
/// that long.
pub const IO_MARGIN: Duration = Duration::from_secs(5);

/// Lock connections' read and write timeout.
const READ_TIMEOUT: Duration = WAIT_CHUNK.saturating_add(IO_MARGIN);

/// The default number of idle lock connections kept for reuse: 4.
pub const DEFAULT_MAX_IDLE: usize = 4;

const HASHED_PREFIX: &str = "turnstile#";

const FENCE_TABLE: &str = "CREATE TABLE IF NOT EXISTS turnstile_lock_fences (
    name VARBINARY(64) NOT NULL PRIMARY KEY,
    fence BIGINT UNSIGNED NOT NULL
) ENGINE = InnoDB";

/// The MySQL lock name used for `name` (see the [module docs](self) for the mapping).
///
/// ```
/// use turnstile::lock::mysql_server_lock_name;
/// use turnstile::{Key, LockName};
///
/// let short = LockName::new("mysql://app@db:3306/shop", Key::new("order/7")?);
/// assert_eq!(mysql_server_lock_name(&short), "mysql://app@db:3306/shop|order/7");
/// let cased = LockName::new("mysql://app@db:3306/shop", Key::new("Order/7")?);
/// assert!(mysql_server_lock_name(&cased).starts_with("turnstile#"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn server_lock_name(name: &LockName) -> String {
    let namespace = name.namespace();
    let key = name.key().as_str();
    let raw_ok = !namespace.contains('|')
        && namespace.len() + 1 + key.len() <= MAX_SERVER_NAME
        && namespace
            .bytes()
            .chain(key.bytes())
            // No spaces: PAD SPACE comparisons could make "a" and "a " one lock.
            .all(|b| b.is_ascii_graphic())
        && !namespace
            .bytes()
            .chain(key.bytes())
            .any(|b| b.is_ascii_uppercase());
    let raw = format!("{namespace}|{key}");
    if raw_ok && !raw.starts_with(HASHED_PREFIX) {
        raw
    } else {
        format!("{HASHED_PREFIX}{:016x}", name.stable_hash())
    }
}

/// `GET_LOCK` returned NULL: the server failed the request (the query was killed, or it
/// ran out of memory). Reported as the source of [`Error::Unavailable`]; it names the
/// server, as the lock's other errors do (`mysql at mysql://app@db:3306/shop:
/// GET_LOCK("…") returned NULL (a server-side error)`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct GetLockNull {
    /// The server lock name.
    pub name: String,
    /// The server's identity ([`Lock::backend_id`]: its URL without the password).
    pub server: String,
}

impl std::fmt::Display for GetLockNull {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "mysql at {}: GET_LOCK({:?}) returned NULL (a server-side error)",
            self.server, self.name
        )
    }
}

impl std::error::Error for GetLockNull {}

/// A lock backend on a MySQL or MariaDB server (`GET_LOCK`). Cheap to clone.
///
/// ```no_run
/// use turnstile::lock::MySqlLock;
/// use turnstile::sqlite::Sqlite;
/// use turnstile::{Key, Locked, Serializer};
///
/// let lock = MySqlLock::new("mysql://root@127.0.0.1:3306/test")?;
/// let strategy = Locked::new(lock, Sqlite::new("/tmp/app.db"));
/// strategy.run(&Key::whole(), |db| db.execute("UPDATE hits SET n = n + 1", []))?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct MySqlLock {
    shared: Arc<Shared>,
}

struct Shared {
    opts: Opts,
    backend_id: String,
    connect_timeout: Duration,
    max_idle: usize,
    idle: Mutex<Vec<Conn>>,
    fence_table_ready: AtomicBool,
    fencing: bool,
}

impl MySqlLock {
    /// A lock backend on the server at `url` (`mysql://user:password@host:port/db`; the
    /// database holds the fence counters). Nothing is connected yet.
    ///
    /// # Errors
    /// [`Error::Config`] when the URL does not parse, or when the driver would read a piece
    /// of its password as the host or database (the rules of [`MySql::new`](crate::resource::MySql::new); percent-encode
    /// an `@` as `%40`).
    pub fn new(url: &str) -> Result<Self, StrategyError> {
        let opts = res::parse_url(url)?;
        Ok(MySqlLock {
            shared: Arc::new(Shared {
                backend_id: res::identity(&opts),
                opts,
                connect_timeout: DEFAULT_CONNECT_TIMEOUT,
                max_idle: DEFAULT_MAX_IDLE,
                idle: Mutex::new(Vec::new()),
                fence_table_ready: AtomicBool::new(false),
                fencing: true,
            }),
        })
    }

    fn with(mut self, f: impl FnOnce(&mut Shared)) -> Self {
        match Arc::get_mut(&mut self.shared) {
            Some(shared) => f(shared),
            None => {
                let mut shared = Shared {
                    opts: self.shared.opts.clone(),
                    backend_id: self.shared.backend_id.clone(),
                    connect_timeout: self.shared.connect_timeout,
                    max_idle: self.shared.max_idle,
                    idle: Mutex::new(Vec::new()),
                    fence_table_ready: AtomicBool::new(false),
                    fencing: self.shared.fencing,
                };
                f(&mut shared);
                self.shared = Arc::new(shared);
            }
        }
        self
    }

    /// Issues fencing tokens (the default) or not. Without them a grant costs one round
    /// trip instead of two (the counter bump is a durable write), and no
    /// `turnstile_lock_fences` table is needed; `Locked` enforces fences only in
    /// [`TxMode::Transaction`](crate::TxMode::Transaction), so the spec registry turns
    /// them off for [`TxMode::Autocommit`](crate::TxMode::Autocommit). Default: on.
    pub fn fencing(self, on: bool) -> Self {
        self.with(|s| s.fencing = on)
    }

    /// Sets the longest time opening a lock connection may take, its login included (it is
    /// also cut to the caller's deadline, but never below 250 ms): a server that accepts the
    /// connection but does not answer fails it with `no answer within …`. Default:
    /// [`DEFAULT_CONNECT_TIMEOUT`].
    ///
    /// # Errors
    /// [`Error::Config`] for a zero timeout or one over
    /// [`MAX_TIMEOUT`](turnstile_core::MAX_TIMEOUT).
    pub fn connect_timeout(self, timeout: Duration) -> Result<Self, StrategyError> {
        let timeout = crate::resource::check_connect_timeout("MySQL lock", timeout)?;
        Ok(self.with(|s| s.connect_timeout = timeout))
    }

    /// Sets how many idle lock connections are kept for reuse. Default:
    /// [`DEFAULT_MAX_IDLE`].
    pub fn max_idle(self, max_idle: usize) -> Self {
        self.with(|s| s.max_idle = max_idle)
    }

    /// Opens a lock connection now (within the
    /// [connect timeout](Self::connect_timeout)), with the fence table when fencing, and
    /// keeps it for the next acquire: a wrong address or password shows at once rather
    /// than at the first op. The spec registry pings when it opens a `mysql://…` or
    /// `queue+mysql://…` spec.
    ///
    /// # Errors
    /// [`Error::Unavailable`] when the server cannot be reached or refuses.
    pub fn ping(&self) -> Result<(), StrategyError> {
        let conn = self.shared.open(None)?;
        self.shared.recycle(conn);
        Ok(())
    }
}

impl std::fmt::Debug for MySqlLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MySqlLock")
            .field("backend", &self.shared.backend_id)
            .finish_non_exhaustive()
    }
}

impl Shared {
    fn idle(&self) -> MutexGuard<'_, Vec<Conn>> {
        // Nothing panics while this mutex is held.
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn open(&self, deadline: Option<Instant>) -> Result<Conn, StrategyError> {
        let timeout = match deadline {
            None => self.connect_timeout,
            Some(at) => at.saturating_duration_since(Instant::now()).clamp(
                crate::resource::MIN_LOGIN,
                self.connect_timeout.max(crate::resource::MIN_LOGIN),
            ),
        };
        let mut conn =
            res::open(&self.opts, timeout, Some(READ_TIMEOUT)).map_err(|e| self.unavailable(e))?;
        if self.fencing && !self.fence_table_ready.load(Ordering::Acquire) {
            conn.query_drop(FENCE_TABLE).map_err(|e| self.failed(e))?;
            self.fence_table_ready.store(true, Ordering::Release);
        }
        Ok(conn)
    }

    /// [`Error::Unavailable`] for `error`, a failure of this lock's server, named.
    fn unavailable(&self, error: impl Into<BoxError>) -> StrategyError {
        Error::Unavailable(Box::new(ServerError::new(&self.backend_id, error)))
    }

    /// [`Error::Unavailable`] for a failed statement on a lock connection, in words and
    /// named.
    fn failed(&self, error: mysql::Error) -> StrategyError {
        self.unavailable(res::readable(error, Some(READ_TIMEOUT)))
    }

    fn recycle(&self, conn: Conn) {
        let mut idle = self.idle();
        if idle.len() < self.max_idle {
            idle.push(conn);
        }
    }

    /// Waits for the lock on `conn`: `Ok(Some(true))` held, `Ok(Some(false))` deadline
    /// passed, `Ok(None)` the server answered NULL.
    fn get_lock(
        &self,
        conn: &mut Conn,
        name: &str,
        deadline: Option<Instant>,
    ) -> Result<Option<bool>, mysql::Error> {
        let mut polls = 0u32;
        loop {
            let remaining = deadline.map(|at| at.saturating_duration_since(Instant::now()));
            let secs = match remaining {
                None => WAIT_CHUNK.as_secs(),
                Some(r) => r.as_secs().min(WAIT_CHUNK.as_secs()),
            };
            let got: Option<Option<i64>> =
                conn.exec_first("SELECT GET_LOCK(?, ?)", (name, secs))?;
            match got.flatten() {
                Some(1) => return Ok(Some(true)),
                Some(_) => {}
                None => return Ok(None),
            }
            let Some(at) = deadline else { continue };
            let now = Instant::now();
            if now >= at {
                return Ok(Some(false));
            }
            if secs == 0 {
                // Sub-second rest: poll with full jitter, never past the deadline.
                let cap =
                    Duration::from_millis(1u64 << polls.min(6)).min(Duration::from_millis(50));
                let nap = Duration::from_nanos(fastrand::u64(0..=cap.as_nanos() as u64));
                std::thread::sleep(nap.min(at - now));
                polls += 1;
            }
        }
    }

    fn bump_fence(&self, conn: &mut Conn, name: &str) -> Result<Fence, mysql::Error> {
        // LAST_INSERT_ID(expr) makes the new value the statement's insert id: one
        // autocommitted, atomic statement per grant.
        conn.exec_drop(
            "INSERT INTO turnstile_lock_fences (name, fence) VALUES (?, LAST_INSERT_ID(1))
             ON DUPLICATE KEY UPDATE fence = LAST_INSERT_ID(fence + 1)",
            (name,),
        )?;
        Ok(Fence(conn.last_insert_id()))
    }
}

impl Lock for MySqlLock {
    type Lease = MySqlLease;

    fn capabilities(&self) -> Capabilities {
        Capabilities::new(Scope::Hosts, HolderDeath::SessionEnds).fences(self.shared.fencing)
    }

    /// The name on the server: two names that share it (a shared hash) are one lock,
    /// taken once by a call that needs both (each lease has a connection of its own, so
    /// taking it twice would wait on itself).
    fn order_key<'a>(&self, name: &'a LockName) -> std::borrow::Cow<'a, [u8]> {
        std::borrow::Cow::Owned(server_lock_name(name).into_bytes())
    }

    fn backend_id(&self) -> &str {
        &self.shared.backend_id
    }

    fn acquire(
        &self,
        name: &LockName,
        deadline: Option<Instant>,
    ) -> Result<MySqlLease, StrategyError> {
        let start = Instant::now();
        let server_name = server_lock_name(name);
        let shared = &self.shared;
        let cached = shared.idle().pop();
        let from_cache = cached.is_some();
        let mut conn = match cached {
            Some(conn) => conn,
            None => shared.open(deadline)?,
        };
        let got = match shared.get_lock(&mut conn, &server_name, deadline) {
            // An idle connection may have been closed by the server (wait_timeout) or
            // killed: one retry on a fresh one.
            Err(e) if from_cache && res::is_connection_error(&e) => {
                conn = shared.open(deadline)?;
                shared.get_lock(&mut conn, &server_name, deadline)
            }
            other => other,
        };
        let Some(got) = got.map_err(|e| shared.failed(e))? else {
            return Err(Error::unavailable(GetLockNull {
                name: server_name,
                server: shared.backend_id.clone(),
            }));
        };
        if !got {
            shared.recycle(conn);
            return Err(Error::Timeout {
                waited: start.elapsed(),
            });
        }
        let fence = if shared.fencing {
            shared.bump_fence(&mut conn, &server_name).map(Some)
        } else {
            Ok(None)
        };
        match fence {
            Ok(fence) => Ok(MySqlLease {
                conn: Mutex::new(Some(conn)),
                name: server_name,
                fence,
                shared: self.shared.clone(),
            }),
            // Dropping the connection frees the lock.
            Err(e) => Err(shared.failed(e)),
        }
    }
}

/// A held `GET_LOCK` lock and its dedicated connection. Released on drop.
#[must_use = "the lock is released as soon as the lease is dropped"]
pub struct MySqlLease {
    conn: Mutex<Option<Conn>>,
    name: String,
    fence: Option<Fence>,
    shared: Arc<Shared>,
}

impl MySqlLease {
    /// The server lock name held.
    pub fn server_name(&self) -> &str {
        &self.name
    }

    /// The server's id of the session holding the lock (what `IS_USED_LOCK` returns).
    pub fn connection_id(&self) -> Option<u32> {
        self.conn
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(Conn::connection_id)
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
        let released: Result<Option<Option<i64>>, _> =
            conn.exec_first("SELECT RELEASE_LOCK(?)", (&self.name,));
        match released {
            Ok(Some(Some(1))) => {
                self.shared.recycle(conn);
                Ok(())
            }
            // 0: held by another session; NULL: not held at all. Either way we had lost
            // it. The connection is dropped, which frees anything it might still hold.
            Ok(_) => Err(Error::LeaseLost),
            Err(e) if res::is_connection_error(&e) => Err(Error::LeaseLost),
            Err(e) => Err(self.shared.failed(e)),
        }
    }
}

impl std::fmt::Debug for MySqlLease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MySqlLease")
            .field("name", &self.name)
            .field("fence", &self.fence)
            .finish_non_exhaustive()
    }
}

impl Lease for MySqlLease {
    fn fence(&self) -> Option<Fence> {
        self.fence
    }

    fn check(&self) -> Result<(), StrategyError> {
        let mut guard = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let Some(conn) = guard.as_mut() else {
            return Err(Error::LeaseLost);
        };
        let mine: Result<Option<Option<i64>>, _> =
            conn.exec_first("SELECT IS_USED_LOCK(?) = CONNECTION_ID()", (&self.name,));
        match mine {
            Ok(Some(Some(1))) => Ok(()),
            _ => {
                // Lost or unreachable: either way this session can no longer vouch for the
                // lock. Dropping the connection frees it if the server still thinks we
                // hold it.
                guard.take();
                Err(Error::LeaseLost)
            }
        }
    }

    fn release(mut self) -> Result<(), StrategyError> {
        self.release_inner()
    }
}

impl Drop for MySqlLease {
    fn drop(&mut self) {
        let _ = self.release_inner();
    }
}
