//! `Locked<L, C>`: any [`Lock`] backend plus a resource opener is a [`Serializer`].
//!
//! This is the one place the ergonomics of lock strategies live (as `lock_api::Mutex`
//! is for raw mutexes): several keys in sorted order, a bounded pool of resources, the
//! resource's transaction around the op, fences checked by the resource, a lease checked
//! before commit, panics caught and rolled back. A backend only grants leases.
//!
//! ```
//! use turnstile::{Key, Locked, Serializer};
//! use turnstile::lock::MutexLock;
//! use turnstile::sqlite::Sqlite;
//!
//! let dir = tempfile::tempdir()?;
//! let strategy = Locked::new(MutexLock::new(), Sqlite::new(dir.path().join("app.db")));
//! let key = Key::new("counter")?;
//! strategy.run(&key, |db| db.execute_batch("CREATE TABLE IF NOT EXISTS t (v INTEGER)"))?;
//! let n = strategy.run(&key, |db| {
//!     db.execute("INSERT INTO t VALUES (1)", [])?;
//!     db.query_row("SELECT count(*) FROM t", [], |r| r.get::<_, i64>(0))
//! })?;
//! assert_eq!(n, 1);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::pool::Pool;
use turnstile_core::{
    Capabilities, Connect, Ctx, Error, FenceClaim, Key, Lease, Lock, LockName, Serializer,
    StrategyError, Transact, TxCounts, Wait, check_timeout, panic_message, sorted_keys,
};

/// The default time a call waits for its locks (and a pooled resource): 30 s.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// The default most resources a [`Locked`] keeps open at once: 8.
pub const DEFAULT_POOL_SIZE: usize = 8;

/// How a lock strategy runs the op against its resource.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum TxMode {
    /// Inside the resource's write transaction: `Ok` means committed, errors mean rolled
    /// back, fences are enforced by the resource. The default.
    #[default]
    Transaction,
    /// Each statement of the op commits by itself; only the lock protects the op. No
    /// rollback, no fence enforcement. The harness uses this to test a lock's exclusion
    /// alone, and it is the only mode for resources without transactions. Refused with
    /// [`Error::Config`] over a resource whose writes only apply at commit
    /// ([`Transact::supports_autocommit`] false, such as the optimistic strategy's
    /// `optimistic::Versions`), where it would drop every write.
    Autocommit,
}

/// Refuses `mode` over `connect` when the op's writes would never apply: autocommit over a
/// resource whose writes only apply at commit.
pub(crate) fn check_tx_mode<C: Transact>(mode: TxMode, connect: &C) -> Result<(), StrategyError> {
    if mode == TxMode::Autocommit && !connect.supports_autocommit() {
        return Err(Error::Config(format!(
            "autocommit over {} would drop every write: its writes only apply at commit (use TxMode::Transaction)",
            connect.identity()
        )));
    }
    Ok(())
}

/// How the strategy's transaction stands after an op ran in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AfterOp {
    /// Still the strategy's to commit or roll back, as far as the resource can tell (a
    /// database server's cannot tell until its own commit).
    Open,
    /// The op ended it by a commit: what it wrote may have committed. A transaction the op
    /// began after that (`COMMIT; BEGIN`) may be open: it is the op's, rolled back, never
    /// committed by the strategy.
    Committed,
    /// It ended under the op with nothing committed: the resource rolled it back itself
    /// (SQLite's `INSERT OR ROLLBACK`), or the op did (`ROLLBACK`).
    RolledBack,
}

/// How the transaction stands after an op, given `before`, the resource's
/// [`Transact::tx_counts`] read before the op on this thread. A commit counted during the
/// op means the op committed, whether or not a transaction is open after it (one the op
/// began is its own); none, and no transaction open, that it was rolled back; where
/// nothing is counted, a transaction that is no longer open may have committed.
pub(crate) fn after_op<C: Transact>(
    connect: &C,
    resource: &C::Resource,
    before: Option<TxCounts>,
) -> AfterOp {
    match before.zip(connect.tx_counts(resource)) {
        Some((before, now)) if now.commits != before.commits => AfterOp::Committed,
        _ if connect.in_transaction(resource) => AfterOp::Open,
        Some(_) => AfterOp::RolledBack,
        None => AfterOp::Committed,
    }
}

/// After [`AfterOp::Committed`] or [`AfterOp::RolledBack`]: rolls back a transaction the
/// op began after its own commit or rollback. False when that failed (the resource is
/// then not reused).
pub(crate) fn end_rest<C: Transact>(connect: &C, resource: &mut C::Resource) -> bool {
    !connect.in_transaction(resource) || connect.rollback(resource).is_ok()
}

/// Which lock names a key maps to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyScope {
    /// One lock per key.
    PerKey,
    /// One lock for the whole resource, whatever the key. The default over single-writer
    /// resources (SQLite), where different keys would meet at its write lock anyway.
    Whole,
}

/// A lock backend plus a resource opener: a [`Serializer`].
///
/// Defaults: [`TxMode::Transaction`], a [`DEFAULT_TIMEOUT`] wait, a pool of
/// [`DEFAULT_POOL_SIZE`] resources, and [`KeyScope::Whole`] over a single-writer resource
/// ([`Connect::single_writer`]), [`KeyScope::PerKey`] otherwise.
///
/// An op that calls back into the same strategy for a lock its own call holds (any key,
/// under [`KeyScope::Whole`]), or for another key while its call has the pool's last
/// resource, gets [`Error::Reentrant`] at once, and the inner op never runs: waiting would
/// wait for itself.
pub struct Locked<L, C: Connect> {
    /// Tells this strategy's locks apart among those held on a thread
    /// ([`crate::holding`]).
    id: u64,
    lock: L,
    connect: C,
    pool: Pool<C::Resource>,
    mode: TxMode,
    keys: KeyScope,
    timeout: Option<Duration>,
    namespace: Arc<str>,
}

impl<L: Lock, C: Transact> Locked<L, C> {
    /// A strategy taking `lock` around ops on resources opened by `connect`.
    pub fn new(lock: L, connect: C) -> Self {
        let namespace: Arc<str> = connect.identity().into();
        let keys = if connect.single_writer() {
            KeyScope::Whole
        } else {
            KeyScope::PerKey
        };
        Locked {
            id: crate::holding::new_owner(),
            lock,
            connect,
            pool: Pool::new(DEFAULT_POOL_SIZE),
            mode: TxMode::default(),
            keys,
            timeout: Some(DEFAULT_TIMEOUT),
            namespace,
        }
    }

    /// Sets how the op runs against the resource. Default: [`TxMode::Transaction`].
    ///
    /// [`TxMode::Autocommit`] over a resource whose writes only apply at commit
    /// ([`Transact::supports_autocommit`] false) would drop every write: every call then
    /// fails with [`Error::Config`] instead, before it takes a lock or runs the op (the
    /// spec registry refuses it when the spec is opened).
    pub fn tx_mode(mut self, mode: TxMode) -> Self {
        self.mode = mode;
        self
    }

    /// Sets which lock names keys map to. Default: [`KeyScope::Whole`] over a
    /// single-writer resource, [`KeyScope::PerKey`] otherwise.
    pub fn key_scope(mut self, keys: KeyScope) -> Self {
        self.keys = keys;
        self
    }

    /// Sets how long a call waits for its locks by default; `None` waits forever.
    /// Default: [`DEFAULT_TIMEOUT`].
    ///
    /// # Errors
    /// [`Error::Config`] for a timeout over [`MAX_TIMEOUT`](turnstile_core::MAX_TIMEOUT).
    pub fn timeout(mut self, timeout: Option<Duration>) -> Result<Self, StrategyError> {
        self.timeout = check_timeout(timeout)?;
        Ok(self)
    }

    /// Sets the most resources open at once. Default: [`DEFAULT_POOL_SIZE`].
    ///
    /// # Errors
    /// [`Error::Config`] for zero.
    pub fn pool_size(mut self, size: usize) -> Result<Self, StrategyError> {
        if size == 0 {
            return Err(Error::Config("the pool needs at least one resource".into()));
        }
        self.pool = Pool::new(size);
        Ok(self)
    }

    /// The lock backend.
    pub fn lock(&self) -> &L {
        &self.lock
    }

    /// The resource opener.
    pub fn connector(&self) -> &C {
        &self.connect
    }

    fn names(&self, keys: &[Key]) -> Vec<LockName> {
        let mut names: Vec<LockName> = match self.keys {
            KeyScope::Whole => vec![LockName::new(self.namespace.clone(), Key::whole())],
            KeyScope::PerKey => keys
                .iter()
                .map(|k| LockName::new(self.namespace.clone(), k.clone()))
                .collect(),
        };
        // In the backend's lock order, one name per backend lock: names that share a lock
        // (file-lock stripes) would otherwise wait for themselves or cross another caller.
        names.sort_by(|a, b| self.lock.order_key(a).cmp(&self.lock.order_key(b)));
        names.dedup_by(|a, b| self.lock.order_key(a) == self.lock.order_key(b));
        names
    }

    fn run_locked<T, E, F>(
        &self,
        keys: &[Key],
        deadline: Option<Instant>,
        leases: &[L::Lease],
        names: &[LockName],
        resource: &mut C::Resource,
        op: &mut F,
    ) -> Outcome<T, E>
    where
        F: FnMut(&mut Ctx<'_, C::Resource>) -> Result<T, E>,
        E: Send + Sync + 'static,
    {
        let fence = leases.iter().filter_map(|l| l.fence()).max();
        let transactional = self.mode == TxMode::Transaction;
        if transactional {
            let claims: Vec<FenceClaim<'_>> = leases
                .iter()
                .zip(names)
                .filter_map(|(lease, name)| {
                    lease.fence().map(|fence| FenceClaim {
                        backend: self.lock.backend_id(),
                        name: name.bytes(),
                        fence,
                    })
                })
                .collect();
            if let Err(e) = self.connect.begin(resource, &claims) {
                let broken = e.discards_resource();
                return Outcome {
                    before_op: true,
                    ..Outcome::err(e.into_error(), broken)
                };
            }
        }
        let commits = if transactional {
            self.connect.tx_counts(resource)
        } else {
            None
        };
        let result = catch_unwind(AssertUnwindSafe(|| {
            let mut ctx = Ctx::new(&mut *resource, keys)
                .with_fence(fence)
                .with_deadline(deadline);
            op(&mut ctx)
        }));
        // Whether the op ended the transaction by a commit (what it wrote may have
        // committed), or the resource by a rollback (SQLite's `INSERT OR ROLLBACK`), after
        // which the op's own answer stands.
        let after = |connect: &C, resource: &mut C::Resource| {
            if transactional {
                after_op(connect, resource, commits)
            } else {
                AfterOp::Open
            }
        };
        let value = match result {
            Ok(Ok(value)) => value,
            Ok(Err(e)) => {
                let broken = self.connect.is_broken(resource, &e);
                return match after(&self.connect, resource) {
                    AfterOp::Committed => {
                        let ended = end_rest(&self.connect, resource);
                        Outcome::err(Error::TransactionEnded, broken || !ended)
                    }
                    AfterOp::RolledBack => {
                        let ended = end_rest(&self.connect, resource);
                        Outcome::err(Error::Op(e), broken || !ended)
                    }
                    AfterOp::Open if !transactional => Outcome::err(Error::Op(e), broken),
                    // Over PostgreSQL the rollback also sees an op that ran `COMMIT`
                    // (its marker savepoint is gone), in the same round trip.
                    AfterOp::Open => match self.connect.rollback_checked(resource) {
                        Ok(true) => Outcome::err(Error::Op(e), broken),
                        Ok(false) => Outcome::err(Error::TransactionEnded, broken),
                        Err(_) => Outcome::err(Error::Op(e), true),
                    },
                };
            }
            Err(payload) => {
                // A panic may hide a broken connection (a read that timed out): nothing
                // more is sent on it, and it is dropped, which rolls its transaction back.
                let broken = !self.connect.survives_panic(resource);
                let message = panic_message(&*payload);
                return match after(&self.connect, resource) {
                    AfterOp::Committed => {
                        let ended = !broken && end_rest(&self.connect, resource);
                        Outcome::err(Error::TransactionEnded, !ended)
                    }
                    AfterOp::RolledBack => {
                        let ended = !broken && end_rest(&self.connect, resource);
                        Outcome::err(Error::Panicked(message), !ended)
                    }
                    AfterOp::Open if broken => Outcome::err(Error::Panicked(message), true),
                    AfterOp::Open if !transactional => {
                        Outcome::err(Error::Panicked(message), false)
                    }
                    AfterOp::Open => match self.connect.rollback_checked(resource) {
                        Ok(true) => Outcome::err(Error::Panicked(message), false),
                        Ok(false) => Outcome::err(Error::TransactionEnded, false),
                        Err(_) => Outcome::err(Error::Panicked(message), true),
                    },
                };
            }
        };
        if !transactional {
            return Outcome::ok(value);
        }
        match after(&self.connect, resource) {
            AfterOp::Open => {}
            AfterOp::Committed => {
                let ended = end_rest(&self.connect, resource);
                return Outcome::err(Error::TransactionEnded, !ended);
            }
            // The op ended the transaction by itself, with nothing committed, though it
            // answered as if it had.
            AfterOp::RolledBack => {
                let ended = end_rest(&self.connect, resource);
                return Outcome::err(Error::TransactionEnded, !ended);
            }
        }
        // A lease that expired while the op ran must not commit: its successor may already
        // be writing.
        if let Some(lost) = leases.iter().find_map(|l| l.check().err()) {
            return match self.connect.rollback_checked(resource) {
                Ok(true) => Outcome::err(lost.widen(), false),
                // The op had ended the transaction by itself: what it wrote may have
                // committed, whatever became of the lease.
                Ok(false) => Outcome::err(Error::TransactionEnded, false),
                Err(_) => Outcome::err(lost.widen(), true),
            };
        }
        match self.connect.commit(resource) {
            Ok(()) => Outcome::ok(value),
            Err(e) => {
                let broken = e.discards_resource();
                Outcome::err(e.into_error(), broken)
            }
        }
    }
}

struct Outcome<T, E> {
    result: Result<T, Error<E>>,
    discard_resource: bool,
    /// The resource failed before the op started (at `BEGIN`): nothing ran.
    before_op: bool,
}

impl<T, E> Outcome<T, E> {
    fn ok(value: T) -> Self {
        Outcome {
            result: Ok(value),
            discard_resource: false,
            before_op: false,
        }
    }
    fn err(error: Error<E>, discard_resource: bool) -> Self {
        Outcome {
            result: Err(error),
            discard_resource,
            before_op: false,
        }
    }
}

impl<L: Lock, C: Transact> Serializer for Locked<L, C> {
    type Resource = C::Resource;

    fn capabilities(&self) -> Capabilities {
        let lock = self.lock.capabilities();
        let transactional = self.mode == TxMode::Transaction;
        lock.transactional(transactional)
            .fences(lock.fences && transactional)
    }

    fn run_with<T, E, F>(&self, keys: &[Key], wait: Wait, mut op: F) -> Result<T, Error<E>>
    where
        F: FnMut(&mut Ctx<'_, C::Resource>) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: Send + Sync + 'static,
    {
        check_tx_mode(self.mode, &self.connect).map_err(Error::widen)?;
        let keys = sorted_keys(keys).map_err(Error::widen)?;
        let deadline = wait.deadline(self.timeout).map_err(Error::widen)?;
        let names = self.names(&keys);
        // An op calling back into this strategy for a lock its own call holds would wait
        // for itself until its deadline (forever without one).
        let order_keys: Vec<Vec<u8>> = names
            .iter()
            .map(|n| self.lock.order_key(n).into_owned())
            .collect();
        if crate::holding::holds(self.id, &order_keys) {
            return Err(Error::Reentrant);
        }
        // Locks first, then a resource: a caller holding a pooled resource while waiting for
        // a lock could starve the lock's holder of a resource.
        let mut leases = Vec::with_capacity(names.len());
        for name in &names {
            leases.push(self.lock.acquire(name, deadline).map_err(Error::widen)?);
        }
        let mut resource = self
            .pool
            .get(&self.connect, deadline)
            .map_err(Error::widen)?;
        let holding = crate::holding::Holding::enter(self.id, order_keys);
        let mut outcome = self.run_locked(&keys, deadline, &leases, &names, &mut resource, &mut op);
        // A pooled connection the server closed (a restart, a killed session) can look
        // alive until used: one that broke at `BEGIN`, before the op ran, is replaced once.
        if outcome.before_op && outcome.discard_resource {
            resource.discard();
            resource = match self.pool.get(&self.connect, deadline) {
                Ok(fresh) => fresh,
                Err(e) => return Err(e.widen()),
            };
            outcome = self.run_locked(&keys, deadline, &leases, &names, &mut resource, &mut op);
        }
        drop(holding);
        if outcome.discard_resource {
            resource.discard();
        } else {
            resource.put();
        }
        // Release in reverse order of acquisition, by dropping: the op's outcome is
        // settled, and a failed release (of a lease that expired, say) changes nothing
        // for it. Nothing waits for the answer, which lets a backend send a release
        // without waiting for its reply (Redis).
        while let Some(lease) = leases.pop() {
            drop(lease);
        }
        outcome.result
    }
}

impl<L, C: Connect> std::fmt::Debug for Locked<L, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Locked")
            .field("namespace", &self.namespace)
            .field("mode", &self.mode)
            .field("keys", &self.keys)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}
