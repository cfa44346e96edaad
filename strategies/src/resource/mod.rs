//! Database servers as resources: [`MySql`] (MySQL / MariaDB) and [`Postgres`], each an
//! opener implementing [`Connect`](crate::Connect) and [`Transact`](crate::Transact).
//!
//! Unlike a SQLite file they can be shared across hosts, so they are what the cross-host
//! strategies (`mysql`, `postgres`, `redis`) are tested and documented with. Like the
//! SQLite opener they run each op in a write transaction, check and record fencing tokens
//! in a `turnstile_fences` table inside that same transaction, and classify "busy, try
//! again" errors (serialization failure, deadlock, lock wait timeout) for the retrying
//! strategies.
//!
//! Neither driver exposes the server's "in transaction" status flag, so
//! [`Transact::in_transaction`](crate::Transact::in_transaction) cannot see an op that
//! committed by itself. Instead `begin` opens a marker savepoint right after `BEGIN`, and
//! `commit` releases it first: if the op ended the transaction (`COMMIT`, `ROLLBACK`, or
//! on MySQL any statement that commits implicitly, such as DDL), the marker is gone,
//! whatever the op left open is rolled back, nothing more is committed, and `commit`
//! fails with [`TransactError::Ended`](crate::TransactError::Ended) — which strategies
//! report as [`Error::TransactionEnded`](crate::Error::TransactionEnded), as they do over
//! SQLite. (Group commit finds out one step earlier: the op's own savepoint is gone too.)
//! An op that fails or panics after it ended the transaction never reaches the commit.
//! Run in a transaction of its own, its transaction is rolled back with
//! [`Transact::rollback_checked`](crate::Transact::rollback_checked): PostgreSQL's rolls
//! back to the marker first, in the same round trip, and finds it gone, so the op gets
//! `TransactionEnded` (and `retry` does not run it again), unless the connection is lost
//! before that rollback, which then cannot run (the exception of
//! [`Error::Op`](crate::Error::Op)); MySQL's cannot tell, since an InnoDB deadlock
//! removes the marker as well, so such an op gets its own error though what it committed
//! stays (see [`Error::Op`](crate::Error::Op)), or runs again if that error is busy. In a
//! group-commit batch its savepoint is gone, and the queue reads its batch marker.
//!
//! A MySQL connection is not used again after an op panicked
//! ([`Connect::survives_panic`](crate::Connect::survives_panic)): the driver does not
//! mark a connection broken after an I/O error, and a panic can hide one (a statement
//! whose read timed out, whose late answer the next statement would take for its own).
//! Where no transaction should be open — after an op a queue ran in autocommit mode —
//! [`Transact::end_stray_transaction`](crate::Transact::end_stray_transaction) asks the
//! server instead, at a round trip or two per op.

#[cfg(feature = "mysql")]
pub(crate) mod mysql;
#[cfg(feature = "postgres")]
pub(crate) mod postgres;

#[cfg(feature = "mysql")]
pub use self::mysql::{MySql, MySqlOpts, io_cause as mysql_io_cause, is_busy as mysql_is_busy};
#[cfg(feature = "postgres")]
pub use self::postgres::{Postgres, is_busy as postgres_is_busy};

/// The transaction isolation level a [`Postgres`] or [`MySql`] resource runs its
/// connections at ([`Postgres::isolation`], [`MySql::isolation`]). Without one, they run
/// at the server's default: PostgreSQL's `default_transaction_isolation` (`READ
/// COMMITTED` unless the server, role, database or URL sets it), InnoDB's
/// `transaction_isolation` (`REPEATABLE READ` unless configured).
///
/// Per-key exclusion is the strategy's work: a stricter level than `READ COMMITTED` adds
/// the database's own arbitration, which can refuse ops of *different* keys as busy —
/// PostgreSQL's `SERIALIZABLE` fails transactions whose predicate locks merely share an
/// index page (`40001`), InnoDB's `REPEATABLE READ` locks the gap around a key a locking
/// statement did not find, so an insert of a neighbouring key waits for it (and can
/// deadlock). Strategies that rely on the database's arbitration instead (`retry`,
/// `optimistic`) may want a stricter one.
///
/// `READ UNCOMMITTED` is not offered: PostgreSQL runs it as `READ COMMITTED`, and on
/// InnoDB it lets an op read what another op has not committed and may still roll back.
///
/// [`Postgres`]: crate::resource::Postgres
/// [`MySql`]: crate::resource::MySql
/// [`Postgres::isolation`]: crate::resource::Postgres::isolation
/// [`MySql::isolation`]: crate::resource::MySql::isolation
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Isolation {
    /// `READ COMMITTED`: each statement sees what was committed before it began; no
    /// serialization failures on PostgreSQL, no gap locks on InnoDB (beyond foreign-key
    /// and duplicate-key checks).
    ReadCommitted,
    /// `REPEATABLE READ`: one snapshot for the whole transaction. PostgreSQL fails a
    /// write to a row another transaction changed since the snapshot (`40001`); InnoDB
    /// takes next-key and gap locks for locking reads and writes.
    RepeatableRead,
    /// `SERIALIZABLE`: PostgreSQL's serializable snapshot isolation (serialization
    /// failures, `40001`, also between transactions that touched no common row); on
    /// InnoDB, `REPEATABLE READ` whose plain reads lock what they read.
    Serializable,
}

impl Isolation {
    /// The level's SQL name, as `SET … ISOLATION LEVEL` takes it (static text).
    pub fn sql(self) -> &'static str {
        match self {
            Isolation::ReadCommitted => "READ COMMITTED",
            Isolation::RepeatableRead => "REPEATABLE READ",
            Isolation::Serializable => "SERIALIZABLE",
        }
    }
}

impl std::fmt::Display for Isolation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.sql())
    }
}

/// The default time to establish a connection to a database server: 10 s.
pub const DEFAULT_CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// A connect timeout as the setters take it: above zero (a zero one would fail every
/// connection, which would look like a server that is down) and at most
/// [`MAX_TIMEOUT`](turnstile_core::MAX_TIMEOUT).
#[cfg(any(feature = "mysql", feature = "postgres"))]
pub(crate) fn check_connect_timeout(
    what: &str,
    timeout: std::time::Duration,
) -> Result<std::time::Duration, turnstile_core::StrategyError> {
    if timeout.is_zero() || timeout > turnstile_core::MAX_TIMEOUT {
        return Err(turnstile_core::Error::Config(format!(
            "{what} connect timeout {timeout:?} must be above zero and at most {:?}",
            turnstile_core::MAX_TIMEOUT
        )));
    }
    Ok(timeout)
}

/// The savepoint `begin` opens right after `BEGIN` and `commit` releases first, to find
/// out whether the op ended the transaction by itself.
#[cfg_attr(not(any(feature = "mysql", feature = "postgres")), allow(dead_code))]
pub(crate) const MARKER_SAVEPOINT: &str = "turnstile_tx";

/// The savepoint MySQL's `end_stray_transaction` sets and releases to learn whether a
/// transaction is open.
#[cfg_attr(not(feature = "mysql"), allow(dead_code))]
pub(crate) const PROBE_SAVEPOINT: &str = "turnstile_probe";

/// `scheme://user@host:port/db`: a server URL without its password, the identity of the
/// data behind a database resource or lock server.
#[cfg_attr(not(any(feature = "mysql", feature = "postgres")), allow(dead_code))]
pub(crate) fn server_identity(scheme: &str, user: &str, host: &str, port: u16, db: &str) -> String {
    let identity = if host.contains(':') && !host.starts_with('[') {
        format!("{scheme}://{user}@[{host}]:{port}/{db}")
    } else {
        format!("{scheme}://{user}@{host}:{port}/{db}")
    };
    // A database name can hold what reads as a password (`…/db&password=x`): the
    // identity is printed and stored, so it is shown as any URL is.
    crate::spec::redact_url(&identity)
}

/// A fence-table column value: the bytes themselves when they fit `max`, else a fixed
/// prefix and their stable hash. Raw lock names contain a NUL byte, hashed ones never do,
/// so the two forms cannot meet; two long names sharing a hash only share a fence row,
/// which can make one refuse a fence spuriously but never accept a stale one.
#[cfg_attr(not(any(feature = "mysql", feature = "postgres")), allow(dead_code))]
pub(crate) fn fence_column(bytes: &[u8], max: usize) -> std::borrow::Cow<'_, [u8]> {
    if bytes.len() <= max {
        std::borrow::Cow::Borrowed(bytes)
    } else {
        std::borrow::Cow::Owned(
            format!("turnstile#{:016x}", turnstile_core::stable_hash64(bytes)).into_bytes(),
        )
    }
}

/// The most logins to one server left waiting on their threads after their connect
/// timeout (a login runs on a thread of its own, so that a server that accepts the
/// connection but never answers cannot block the caller past the timeout): beyond it, a
/// new login fails at once rather than leave one more thread (and socket) waiting on a
/// server that does not answer. It counts the logins of the `Postgres` and `MySql`
/// resources and of `MySqlLock` (a MySQL login with a read timeout ends by itself within
/// it); a `PostgresLock` login is given up at its timeout with its socket closed, and
/// leaves nothing waiting.
pub const MAX_PENDING_LOGINS: usize = 8;

/// Logins whose caller gave up on them while they still ran, per server identity.
static ABANDONED_LOGINS: std::sync::Mutex<Vec<(String, usize)>> = std::sync::Mutex::new(Vec::new());

fn abandoned_logins() -> std::sync::MutexGuard<'static, Vec<(String, usize)>> {
    ABANDONED_LOGINS.lock().unwrap_or_else(|p| p.into_inner())
}

/// Where a login stands; changed only under [`ABANDONED_LOGINS`]' lock.
#[derive(Clone, Copy, PartialEq)]
enum Login {
    Running,
    Finished,
    Abandoned,
}

/// The least time a login is given when a caller's deadline is nearer: a login to a
/// healthy server under load can take tens of milliseconds, and one cut shorter would be
/// abandoned, still running, on every call of a caller with a short timeout — until
/// [`MAX_PENDING_LOGINS`] of them refused every new login as if the server were down. A
/// call that must open a connection may so overrun its deadline by up to this much. The
/// lock backends' logins have the same floor.
pub(crate) const MIN_LOGIN: std::time::Duration = std::time::Duration::from_millis(250);

/// `timeout` cut to what is left before `deadline`, if one is given, but not below
/// [`MIN_LOGIN`] (nor above `timeout`).
pub(crate) fn cut_to(
    timeout: std::time::Duration,
    deadline: Option<std::time::Instant>,
) -> std::time::Duration {
    deadline.map_or(timeout, |at| {
        timeout.min(
            at.saturating_duration_since(std::time::Instant::now())
                .max(MIN_LOGIN),
        )
    })
}

/// Opens a connection to `server` (its identity) on a thread of its own, and waits for
/// it at most `timeout`. A driver's connect timeout covers the TCP connect only: a server
/// that accepts the connection and then never answers the login would block the caller
/// until TCP gives up, or with a read timeout until that runs out (at each read). On
/// timeout the caller gets an [`std::io::Error`] of kind `TimedOut` (`no answer within
/// …`), and the thread is left to end on its own, and drops what it opened; while
/// [`MAX_PENDING_LOGINS`] are left so for one server, a new login to it fails at once.
pub(crate) fn open_within<T: Send + 'static>(
    server: &str,
    timeout: std::time::Duration,
    open: impl FnOnce() -> Result<T, turnstile_core::BoxError> + Send + 'static,
) -> Result<T, turnstile_core::BoxError> {
    use std::sync::mpsc::{RecvTimeoutError, sync_channel};
    use std::sync::{Arc, Mutex};
    if let Some((_, n)) = abandoned_logins()
        .iter()
        .find(|(s, n)| s == server && *n >= MAX_PENDING_LOGINS)
    {
        return Err(format!(
            "{n} logins are still waiting for the server to answer; not starting another"
        )
        .into());
    }
    let state = Arc::new(Mutex::new(Login::Running));
    let (tx, rx) = sync_channel(1);
    let (thread_state, thread_server) = (state.clone(), server.to_owned());
    std::thread::Builder::new()
        .name("turnstile-connect".to_owned())
        .spawn(move || {
            let opened = std::panic::catch_unwind(std::panic::AssertUnwindSafe(open))
                .unwrap_or_else(|_| Err("connecting panicked".into()));
            let mut abandoned = abandoned_logins();
            let mut state = thread_state.lock().unwrap_or_else(|p| p.into_inner());
            if *state == Login::Abandoned {
                if let Some(i) = abandoned.iter().position(|(s, _)| *s == thread_server) {
                    abandoned[i].1 -= 1;
                    if abandoned[i].1 == 0 {
                        abandoned.swap_remove(i);
                    }
                }
            } else {
                *state = Login::Finished;
                let _ = tx.send(opened);
            }
        })?;
    match rx.recv_timeout(timeout) {
        Ok(opened) => opened,
        Err(RecvTimeoutError::Timeout) => {
            let mut abandoned = abandoned_logins();
            let mut state = state.lock().unwrap_or_else(|p| p.into_inner());
            if *state == Login::Finished {
                // It finished just now: its answer is in the channel.
                return rx
                    .recv()
                    .unwrap_or_else(|_| Err("the connecting thread died".into()));
            }
            *state = Login::Abandoned;
            match abandoned.iter_mut().find(|(s, _)| s == server) {
                Some((_, n)) => *n += 1,
                None => abandoned.push((server.to_owned(), 1)),
            }
            // Whole milliseconds: a timeout cut to a deadline would show every nanosecond.
            let shown = std::time::Duration::from_millis(timeout.as_millis() as u64);
            Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!(
                    "no answer within {shown:?}: the server did not complete the connection's login"
                ),
            )
            .into())
        }
        Err(RecvTimeoutError::Disconnected) => Err("the connecting thread died".into()),
    }
}

/// A failure of one database server, named by its identity (`scheme://user@host:port/db`,
/// never a password): `mysql at mysql://app@db:3306/shop: no answer within 10s`. What a
/// lock backend reports, so that a strategy over a lock server and a data server tells
/// which of the two failed (a resource's own errors are not named: its caller has its
/// [`identity`](crate::Connect::identity), and names it where it reports them).
#[cfg_attr(not(any(feature = "mysql", feature = "postgres")), allow(dead_code))]
#[derive(Debug)]
pub(crate) struct ServerError {
    server: String,
    source: turnstile_core::BoxError,
}

#[cfg_attr(not(any(feature = "mysql", feature = "postgres")), allow(dead_code))]
impl ServerError {
    /// `source`, a failure of the server whose identity is `server`.
    pub(crate) fn new(server: &str, source: impl Into<turnstile_core::BoxError>) -> Self {
        ServerError {
            server: server.to_owned(),
            source: source.into(),
        }
    }
}

impl std::fmt::Display for ServerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = self.server.split_once("://").map_or("server", |(s, _)| s);
        write!(f, "{scheme} at {}: {}", self.server, self.source)
    }
}

impl std::error::Error for ServerError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.source)
    }
}
