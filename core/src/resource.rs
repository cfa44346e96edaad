//! Resources: what a strategy serializes access to.
//!
//! [`Connect`] opens one (a SQLite connection, a PostgreSQL client, a directory); it is
//! r2d2's `ManageConnection` under another name. [`Transact`] adds transactions, savepoints
//! and fence checks to it, so strategies can promise "`Ok` means committed" and enforce
//! fencing tokens themselves instead of trusting each op to.

use std::any::Any;

use crate::{BoxError, Error, Fence, Scope};

/// Opens resources of one kind, all pointing at the same data.
pub trait Connect: Send + Sync + 'static {
    /// What an op gets to work on.
    type Resource: Send + 'static;

    /// Opens a new resource.
    ///
    /// # Errors
    /// Any error opening it; strategies report it as
    /// [`Error::Unavailable`](crate::Error::Unavailable). A
    /// [`ConfigError`](crate::ConfigError) says the resource's own configuration cannot
    /// work (connecting again would not help): strategies classify the error with
    /// [`Error::from_connect`](crate::Error::from_connect), which reports it as
    /// [`Error::Config`](crate::Error::Config).
    fn connect(&self) -> Result<Self::Resource, BoxError>;

    /// Opens a new resource for a caller that waits no later than `deadline`: a connector
    /// whose opening can take long (a network login) cuts its own connect timeout to what
    /// is left, so that a server that accepts and never answers does not keep the caller
    /// past its timeout. It may keep a floor (the PostgreSQL and MySQL resources give a
    /// login at least 250 ms): a login cut shorter than a healthy server needs would fail
    /// every time. The default ignores the deadline and calls
    /// [`connect`](Self::connect).
    ///
    /// # Errors
    /// As [`connect`](Self::connect).
    fn connect_within(
        &self,
        deadline: Option<std::time::Instant>,
    ) -> Result<Self::Resource, BoxError> {
        let _ = deadline;
        self.connect()
    }

    /// A stable, human-readable identity of the data behind the resources (a canonical
    /// database path, a server URL without password plus database name). Lock names are
    /// prefixed with it, so two databases never share a lock, and two processes opening the
    /// same data agree on it.
    fn identity(&self) -> &str;

    /// Whether an idle resource is still usable (a server connection that was not closed
    /// under it). Pools ask before handing one out and drop those that are not, as r2d2's
    /// `is_valid` does. Default: always.
    fn is_valid(&self, resource: &mut Self::Resource) -> bool {
        let _ = resource;
        true
    }

    /// Whether a resource that sat idle for a while still answers: a round trip (MySQL's
    /// ping, PostgreSQL's empty query), for what [`is_valid`](Connect::is_valid) cannot
    /// see without one — a server that closed the connection while nobody used it (its
    /// idle timeout, a restart, an administrator's `KILL`). The pools of the lock
    /// strategies and the queue's worker ask it of a resource idle for more than a second
    /// before they run an op on it, and reopen one that does not answer, so that the op
    /// does not fail for it. Default: always.
    fn is_alive(&self, resource: &mut Self::Resource) -> bool {
        let _ = resource;
        true
    }

    /// Whether the data accepts one writer at a time whatever the keys (SQLite: one writer
    /// per file). Lock strategies then default to one whole-resource key, since finer keys
    /// would still meet at the resource's own write lock.
    fn single_writer(&self) -> bool {
        false
    }

    /// How far the data's own arbitration of concurrent transactions reaches: which
    /// callers a strategy that leaves exclusion to the data (`retry`) keeps apart. A
    /// SQLite file: the processes of one host; a database server: every host that reaches
    /// it. Default: [`Scope::Processes`].
    fn arbitrates(&self) -> Scope {
        Scope::Processes
    }

    /// Whether a resource that just failed is broken for good and must be reopened (an
    /// I/O error, a closed connection) rather than returned to a pool. An op's own error
    /// (a constraint violation) is never such a reason.
    ///
    /// `error` is the op's error as the op returned it, seen as `Any`: the driver's own
    /// error, or an application's error type, possibly inside the box a
    /// [`DynSerializer`](crate::DynSerializer) erases it into. Look for the driver's error
    /// with [`find_error`](crate::find_error), which sees through that box and through a
    /// [`BoxError`]'s `source()` chain, so that an op whose error is its own type, boxed,
    /// is classified too; an unboxed application type is opaque (not broken).
    fn is_broken(&self, resource: &mut Self::Resource, error: &(dyn Any + Send + Sync)) -> bool {
        let _ = (resource, error);
        false
    }

    /// Whether a resource whose op panicked can still be used. A panic carries no error
    /// to show [`is_broken`](Connect::is_broken), yet it may hide one: an op that calls
    /// `expect` on a statement whose read timed out leaves a connection whose next
    /// statement would read the late answer as its own. A resource that answers false is
    /// treated as broken after every panic: strategies send nothing more on it (the
    /// server rolls back the transaction of a connection that closes), and reopen it (a
    /// queue) or drop it (a pool). Default: true.
    fn survives_panic(&self, resource: &mut Self::Resource) -> bool {
        let _ = resource;
        true
    }
}

/// A fence to check and record at the start of a transaction.
#[derive(Clone, Copy, Debug)]
pub struct FenceClaim<'a> {
    /// The lock backend's identity ([`Lock::backend_id`](crate::Lock::backend_id)).
    pub backend: &'a str,
    /// The lock name, as [`LockName::bytes`](crate::LockName::bytes).
    pub name: &'a [u8],
    /// The token presented.
    pub fence: Fence,
}

/// Why a transaction could not begin or commit.
#[derive(Debug)]
#[non_exhaustive]
pub enum TransactError {
    /// Someone else holds the resource's own write lock (SQLite's `SQLITE_BUSY` or
    /// `SQLITE_LOCKED`, a serialization failure): trying again later may succeed. The
    /// transaction is rolled back.
    Busy(BoxError),
    /// [`Transact::begin`] found a higher fence already recorded for this name. Nothing
    /// was written.
    StaleFence {
        /// The fence presented.
        presented: Fence,
        /// The highest one recorded.
        highest: Fence,
    },
    /// Anything else. The transaction is rolled back.
    Failed(BoxError),
    /// The op ended the transaction by itself (`COMMIT`, `ROLLBACK`, or a statement that
    /// commits implicitly, such as DDL on MySQL), which a resource without a readable
    /// transaction status ([`Transact::in_transaction`]) finds out only at
    /// [`Transact::commit`]. What the op wrote before that may have committed; nothing
    /// after it was committed by the strategy, and whatever the op left open was rolled
    /// back. Strategies report it as
    /// [`Error::TransactionEnded`](crate::Error::TransactionEnded).
    Ended,
    /// `COMMIT` was sent, but the connection broke before its answer came back: the
    /// transaction may have committed or not, and the resource must be discarded.
    /// Strategies report it as [`Error::Indeterminate`](crate::Error::Indeterminate), never
    /// as a rollback: an op rerun after it could be applied twice.
    Indeterminate(BoxError),
}

impl TransactError {
    /// The strategy error for this failure (busy and failed both become
    /// [`Error::Resource`]; retrying strategies look at [`TransactError::Busy`] first;
    /// [`TransactError::Ended`] becomes [`Error::TransactionEnded`];
    /// [`TransactError::Indeterminate`] becomes [`Error::Indeterminate`]).
    pub fn into_error<E>(self) -> Error<E> {
        match self {
            TransactError::Busy(e) | TransactError::Failed(e) => Error::Resource(e),
            TransactError::StaleFence { presented, highest } => {
                Error::StaleFence { presented, highest }
            }
            TransactError::Ended => Error::TransactionEnded,
            TransactError::Indeterminate(_) => Error::Indeterminate,
        }
    }

    /// Whether the resource must be discarded after this error: the transaction failed
    /// for another reason than busy, a stale fence or the op ending it, or its commit's
    /// outcome is not known.
    pub fn discards_resource(&self) -> bool {
        matches!(
            self,
            TransactError::Failed(_) | TransactError::Indeterminate(_)
        )
    }
}

impl std::fmt::Display for TransactError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TransactError::Busy(e) => write!(f, "resource busy: {e}"),
            TransactError::StaleFence { presented, highest } => {
                write!(f, "stale fence {presented}; {highest} already recorded")
            }
            TransactError::Failed(e) => write!(f, "transaction failed: {e}"),
            TransactError::Ended => f.write_str(
                "the op ended the transaction by itself (COMMIT, ROLLBACK or an implicitly \
                 committing statement)",
            ),
            TransactError::Indeterminate(e) => {
                write!(f, "the connection broke before COMMIT was answered: {e}")
            }
        }
    }
}

impl std::error::Error for TransactError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TransactError::Busy(e) | TransactError::Failed(e) | TransactError::Indeterminate(e) => {
                Some(&**e)
            }
            TransactError::StaleFence { .. } | TransactError::Ended => None,
        }
    }
}

/// Makes durable the commits a resource made after [`Transact::defer_flush`] switched it
/// to commits that return first.
///
/// It may run on another thread than the resource, at the same time as later commits.
pub trait Flush: Send + Sync {
    /// Blocks until every commit made so far on the resource it was returned for is
    /// durable.
    ///
    /// # Errors
    /// When that could not be made sure of. Whether those commits are durable is then not
    /// known, and every later call fails too: the resource must be discarded.
    fn flush(&self) -> Result<(), BoxError>;
}

/// Transactions on a [`Connect`]'s resources.
///
/// Only strategies call these; ops get a [`Ctx`](crate::Ctx) with no transaction control.
pub trait Transact: Connect {
    /// Begins a write transaction (SQLite: `BEGIN IMMEDIATE`). For each fence, refuses it if
    /// a higher one for the same backend and name is recorded, and records it, inside the
    /// same transaction, so the check and the op's writes commit or roll back together.
    ///
    /// # Errors
    /// [`TransactError::Busy`], [`TransactError::StaleFence`] (rolled back) or
    /// [`TransactError::Failed`].
    fn begin(
        &self,
        resource: &mut Self::Resource,
        fences: &[FenceClaim<'_>],
    ) -> Result<(), TransactError>;

    /// Commits. On failure the transaction is rolled back before returning (a busy
    /// SQLite `COMMIT` leaves it open otherwise), unless its outcome is not known.
    ///
    /// # Errors
    /// [`TransactError::Busy`] or [`TransactError::Failed`]; [`TransactError::Ended`]
    /// when the op had ended the transaction by itself and
    /// [`in_transaction`](Transact::in_transaction) could not tell;
    /// [`TransactError::Indeterminate`] when the connection broke after `COMMIT` was sent
    /// (a database server), so that it may have committed.
    fn commit(&self, resource: &mut Self::Resource) -> Result<(), TransactError>;

    /// Rolls back; a no-op when no transaction is open.
    ///
    /// # Errors
    /// When the resource failed to roll back (it should then be discarded).
    fn rollback(&self, resource: &mut Self::Resource) -> Result<(), BoxError>;

    /// Whether a transaction is still open. Strategies check it after each op: an op that
    /// ended the transaction gets [`Error::TransactionEnded`](crate::Error::TransactionEnded)
    /// (unless [`tx_counts`](Transact::tx_counts) shows that nothing was committed: the
    /// resource rolled it back). A resource whose driver does not expose the
    /// status (a database server) answers true and reports the ended transaction from
    /// [`commit`](Transact::commit) as [`TransactError::Ended`] instead; releasing a
    /// savepoint opened before the op then fails too.
    fn in_transaction(&self, resource: &Self::Resource) -> bool;

    /// How many transactions this resource has committed, where it counts them, so that a
    /// transaction that ended under an op can be told committed from rolled back. The
    /// resource itself may roll back: SQLite does for `INSERT OR ROLLBACK`, an `ON
    /// CONFLICT ROLLBACK` constraint, `RAISE(ROLLBACK)` in a trigger, and after some I/O or
    /// out-of-memory errors. Strategies read it before an op and after it: a commit
    /// counted means the op ended the transaction by a commit (what it wrote may have
    /// committed: [`Error::TransactionEnded`](crate::Error::TransactionEnded)), even if it
    /// began another (`COMMIT; BEGIN`), which the strategy rolls back; none counted and no
    /// transaction open means it was rolled back, and the op's own error stands.
    ///
    /// Only a difference between two reads on the same thread, around an op run on it,
    /// means anything. The count must not miss a commit of this resource made on that
    /// thread; one it includes that is not this resource's fails the op as
    /// `TransactionEnded` (and rolls its transaction back), so it should include none.
    /// Default: `None`, not counted: a transaction that is no longer open after an op is
    /// taken to have maybe committed, and one that is open to be the strategy's.
    fn tx_counts(&self, resource: &Self::Resource) -> Option<TxCounts> {
        let _ = resource;
        None
    }

    /// Rolls back the transaction [`begin`](Transact::begin) opened, and says whether it
    /// was still open: `Ok(false)` when it had ended before (the op ran `COMMIT` or
    /// `ROLLBACK`), so that what the op wrote may have committed; whatever the op left open
    /// is rolled back too. Strategies roll back with it the transaction of an op that
    /// failed, panicked or lost its lease (outside a group-commit batch): `Ok(false)` makes
    /// the op's answer [`Error::TransactionEnded`](crate::Error::TransactionEnded) rather
    /// than one that says rolled back, and a retrying strategy does not run it again (it
    /// would be applied twice). The default asks
    /// [`in_transaction`](Transact::in_transaction), then rolls back, which is exact where
    /// that answer is; a resource that cannot see the end of a transaction without asking
    /// its server overrides it (PostgreSQL, at no extra round trip), or answers true where
    /// it cannot tell (MySQL, whose deadlocks remove the savepoints a check would need).
    ///
    /// # Errors
    /// When the resource failed to answer or to roll back (it should then be discarded).
    fn rollback_checked(&self, resource: &mut Self::Resource) -> Result<bool, BoxError> {
        if self.in_transaction(resource) {
            self.rollback(resource)?;
            Ok(true)
        } else {
            Ok(false)
        }
    }

    /// Where no transaction should be open (an op run in autocommit mode has returned),
    /// rolls back one the op left open and says whether there was one, so it cannot
    /// swallow later ops' writes on the same resource. The default asks
    /// [`in_transaction`](Transact::in_transaction), which is right where that answer is
    /// exact; a resource that cannot tell without asking its server overrides it.
    ///
    /// # Errors
    /// When the resource failed to answer or to roll back (it should then be discarded).
    fn end_stray_transaction(&self, resource: &mut Self::Resource) -> Result<bool, BoxError> {
        if self.in_transaction(resource) {
            self.rollback(resource)?;
            Ok(true)
        } else {
            Ok(false)
        }
    }

    /// Whether an op's writes take effect without a transaction around it, so that a
    /// strategy may run ops in autocommit mode (`TxMode::Autocommit`: each statement
    /// commits by itself, only the lock excludes). Default: yes. A resource whose writes
    /// only apply at [`commit`](Transact::commit) (the optimistic strategy's `Versions`,
    /// whose writes are buffered until then) answers no, and strategies refuse autocommit
    /// over it with [`Error::Config`](crate::Error::Config) rather than drop every write.
    fn supports_autocommit(&self) -> bool {
        true
    }

    /// Opens savepoint number `n` inside the transaction (group commit uses one per op).
    ///
    /// # Errors
    /// When the resource refuses.
    fn savepoint(&self, resource: &mut Self::Resource, n: usize) -> Result<(), BoxError>;

    /// Releases savepoint `n`, keeping its work in the transaction.
    ///
    /// # Errors
    /// When the resource refuses.
    fn release_savepoint(&self, resource: &mut Self::Resource, n: usize) -> Result<(), BoxError>;

    /// Rolls back to savepoint `n` and releases it, undoing only the work since it.
    ///
    /// # Errors
    /// When the resource refuses.
    fn rollback_to_savepoint(
        &self,
        resource: &mut Self::Resource,
        n: usize,
    ) -> Result<(), BoxError>;

    /// Switches `resource` to commits that return before they are durable, and returns
    /// what makes them durable: [`Flush::flush`] blocks until every commit made on
    /// `resource` so far is. `Ok(None)` (the default) leaves the resource as it is: its
    /// commits are durable when they return, or its settings say they need not be.
    ///
    /// A queue asked to overlap its flush (`QueueBuilder::overlap_flush`, with group
    /// commit) calls this on its worker's resource, so that one batch's flush to disk
    /// overlaps the next batch's work; it answers no caller before the flush that covers
    /// the caller's commit. Other connections to the same data may
    /// read a commit before it is durable, as with SQLite's `synchronous = NORMAL`.
    /// [`Sqlite`](https://docs.rs/turnstile/latest/turnstile/sqlite/struct.Sqlite.html)
    /// with `synchronous = FULL` in WAL mode implements it: the connection commits with
    /// `NORMAL`, and the flush syncs the WAL file, as `FULL` would have at the commit.
    ///
    /// # Errors
    /// When the resource could not be switched; it is then left as it was.
    fn defer_flush(
        &self,
        resource: &mut Self::Resource,
    ) -> Result<Option<Box<dyn Flush>>, BoxError> {
        let _ = resource;
        Ok(None)
    }

    /// Deletes the record [`begin`](Transact::begin) keeps of the fences claimed for
    /// `backend` and `name`, for a name that will never be claimed again: a queue's batch
    /// marker, named after the queue, when the queue closes. Called with no transaction
    /// open; a record that is not there (or a table never created) is not an error. The
    /// default does nothing, which leaves the record behind.
    ///
    /// # Errors
    /// When the resource failed to delete it (it stays behind; nothing else changes).
    fn forget_fence(
        &self,
        resource: &mut Self::Resource,
        backend: &str,
        name: &[u8],
    ) -> Result<(), BoxError> {
        let _ = (resource, backend, name);
        Ok(())
    }

    /// Whether an error (an op's, seen as `Any`) is the resource's "busy, try again"
    /// (SQLite: primary code `SQLITE_BUSY` or `SQLITE_LOCKED`). Retrying strategies rerun
    /// an op whose error is busy.
    ///
    /// `error` is what [`Connect::is_broken`] gets, and is searched the same way, with
    /// [`find_error`](crate::find_error): an op's error is classified when it is the
    /// driver's error, or a [`BoxError`] whose `source()` chain holds it, whether or not
    /// a [`BoxSerializer`](crate::BoxSerializer) erased it.
    fn is_busy(&self, error: &(dyn Any + Send + Sync)) -> bool {
        let _ = error;
        false
    }
}

/// How many transactions a resource has ended ([`Transact::tx_counts`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TxCounts {
    /// Transactions committed.
    pub commits: u64,
}

impl TxCounts {
    /// `commits` transactions committed.
    pub fn new(commits: u64) -> Self {
        TxCounts { commits }
    }
}
