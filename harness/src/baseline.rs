//! The `busy-timeout` baseline: no turnstile lock at all. Each thread keeps its own
//! connection, every op runs in `BEGIN IMMEDIATE … COMMIT`, and SQLite's own busy handler
//! makes writers wait for each other — across threads and processes of one host. It is
//! what every lock strategy over SQLite must beat, and it is correct by construction.
//!
//! Also here: `std-mutex`, one `std::sync::Mutex` around one connection — fast when
//! uncontended, unfair under contention (a releasing thread usually takes it again), the
//! tail-latency baseline for the lock strategies — `queue-unbatched`, the queue with
//! group commit off (one commit per op), the baseline group commit must beat — and two
//! variants to measure against `queue` in one run: `queue-overlap`, the queue
//! overlapping each batch's flush with the next batch (`overlap_flush(true)`), and
//! `queue-nogather`, the queue whose batches do not wait for callers on their way back
//! (`gather(false)`).

use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Mutex;
use std::thread::ThreadId;

use rusqlite::Connection;
use turnstile::spec::Registry;
use turnstile::sqlite::Sqlite;
use turnstile::{
    Capabilities, Connect, Ctx, Error, HolderDeath, Key, Scope, Serializer, StrategyError,
    Transact, TransactError, TxCounts, TxMode, Wait, panic_message, sorted_keys,
};

/// Per-thread SQLite connections in `BEGIN IMMEDIATE` transactions, waiting on SQLite's
/// busy handler (the connector's `busy_timeout`, default 5 s). An op whose `BEGIN` the
/// handler gave up on gets [`Error::Timeout`]: it never ran.
pub struct BusyTimeout {
    db: Sqlite,
    connections: Mutex<HashMap<ThreadId, Connection>>,
}

impl BusyTimeout {
    /// The baseline over `db`.
    pub fn new(db: Sqlite) -> Self {
        BusyTimeout {
            db,
            connections: Mutex::new(HashMap::new()),
        }
    }

    fn take(&self) -> Result<Connection, turnstile::BoxError> {
        let id = std::thread::current().id();
        let cached = self
            .connections
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
        match cached {
            Some(c) => Ok(c),
            None => self.db.connect(),
        }
    }

    fn give_back(&self, conn: Connection) {
        self.connections
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(std::thread::current().id(), conn);
    }
}

impl std::fmt::Debug for BusyTimeout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BusyTimeout")
            .field("db", &self.db)
            .finish_non_exhaustive()
    }
}

impl Serializer for BusyTimeout {
    type Resource = Connection;

    fn capabilities(&self) -> Capabilities {
        Capabilities::new(Scope::Processes, HolderDeath::ResourceRollsBack)
    }

    fn run_with<T, E, F>(&self, keys: &[Key], _wait: Wait, mut op: F) -> Result<T, Error<E>>
    where
        F: FnMut(&mut Ctx<'_, Connection>) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: Send + Sync + 'static,
    {
        let keys = sorted_keys(keys).map_err(Error::widen)?;
        let mut conn = self.take().map_err(Error::from_connect)?;
        let asked = std::time::Instant::now();
        if let Err(e) = self.db.begin(&mut conn, &[]) {
            self.give_back(conn);
            // SQLite's busy handler gave up waiting for the write lock: this baseline's
            // way to time out, said as such (the raw busy answer reaching a caller is
            // what the `refused` checker reports as a collision).
            if matches!(e, TransactError::Busy(_)) {
                return Err(Error::Timeout {
                    waited: asked.elapsed(),
                });
            }
            return Err(e.into_error());
        }
        let counts = self.db.tx_counts(&conn);
        let result = catch_unwind(AssertUnwindSafe(|| op(&mut Ctx::new(&mut conn, &keys))));
        let outcome = match (result, ended(&self.db, &mut conn, counts)) {
            (Ok(Ok(value)), None) => self
                .db
                .commit(&mut conn)
                .map(|()| value)
                .map_err(|e| e.into_error()),
            // The op ended the transaction by itself: what it wrote may have committed.
            (Ok(Ok(_)), Some(_)) | (_, Some(true)) => Err(Error::TransactionEnded),
            // Rolled back under the op: nothing of it committed.
            (Ok(Err(e)), Some(false)) => Err(Error::Op(e)),
            (Err(payload), Some(false)) => Err(Error::Panicked(panic_message(&*payload))),
            (Ok(Err(e)), None) => {
                let _ = self.db.rollback(&mut conn);
                Err(Error::Op(e))
            }
            (Err(payload), None) => {
                let _ = self.db.rollback(&mut conn);
                Err(Error::Panicked(panic_message(&*payload)))
            }
        };
        // A connection that could not roll back is not reused.
        if !self.db.in_transaction(&conn) {
            self.give_back(conn);
        }
        outcome
    }
}

/// How an op's transaction ended, told by the connection's [`Transact::tx_counts`] read
/// before it (`before`): `Some(true)` by a commit (what the op wrote may have committed),
/// `Some(false)` by a rollback with nothing committed (the op's own, or SQLite's for
/// `INSERT OR ROLLBACK`: no transaction open, no commit counted), `None` not at all (the
/// baseline's to commit or roll back).
/// Where nothing is counted, a transaction that is no longer open may have committed. A
/// transaction the op began after ending its own (`COMMIT; BEGIN`) is the op's: it is
/// rolled back here, never committed by the baseline.
fn ended(db: &Sqlite, conn: &mut Connection, before: Option<TxCounts>) -> Option<bool> {
    let ended = match before.zip(db.tx_counts(conn)) {
        Some((before, now)) if now.commits != before.commits => Some(true),
        _ if db.in_transaction(conn) => None,
        Some(_) => Some(false),
        None => Some(true),
    };
    if ended.is_some() && db.in_transaction(conn) {
        let _ = db.rollback(conn);
    }
    ended
}

/// One `std::sync::Mutex` around one connection. It ignores `Wait`: a std mutex cannot
/// time out, which is one reason it is only a baseline.
pub struct StdMutex {
    db: Sqlite,
    conn: Mutex<Connection>,
    mode: TxMode,
}

impl StdMutex {
    /// Opens the one connection.
    ///
    /// # Errors
    /// [`Error::Unavailable`] when the database cannot be opened; [`Error::Config`] when
    /// its setup cannot work (WAL asked of an in-memory database).
    pub fn new(db: Sqlite, mode: TxMode) -> Result<Self, StrategyError> {
        let conn = db.connect().map_err(Error::from_connect)?;
        Ok(StdMutex {
            db,
            conn: Mutex::new(conn),
            mode,
        })
    }
}

impl Serializer for StdMutex {
    type Resource = Connection;

    fn capabilities(&self) -> Capabilities {
        Capabilities::new(Scope::Threads, HolderDeath::SameProcess)
            .transactional(self.mode == TxMode::Transaction)
    }

    fn run_with<T, E, F>(&self, keys: &[Key], _wait: Wait, mut op: F) -> Result<T, Error<E>>
    where
        F: FnMut(&mut Ctx<'_, Connection>) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: Send + Sync + 'static,
    {
        let keys = sorted_keys(keys).map_err(Error::widen)?;
        // A panic inside the op is caught below, so poison only means an earlier op panicked
        // and was rolled back.
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let tx = self.mode == TxMode::Transaction;
        if tx {
            self.db.begin(&mut conn, &[]).map_err(|e| e.into_error())?;
        }
        let counts = self.db.tx_counts(&conn);
        let result = catch_unwind(AssertUnwindSafe(|| op(&mut Ctx::new(&mut *conn, &keys))));
        if !tx {
            // As before: a transaction the op left open is rolled back.
            return match result {
                Ok(Ok(value)) => Ok(value),
                Ok(Err(e)) => {
                    let _ = self.db.rollback(&mut conn);
                    Err(Error::Op(e))
                }
                Err(payload) => {
                    let _ = self.db.rollback(&mut conn);
                    Err(Error::Panicked(panic_message(&*payload)))
                }
            };
        }
        match (result, ended(&self.db, &mut conn, counts)) {
            (Ok(Ok(value)), None) => {
                self.db.commit(&mut conn).map_err(|e| e.into_error())?;
                Ok(value)
            }
            // The op ended the transaction by itself: what it wrote may have committed.
            (Ok(Ok(_)), Some(_)) | (_, Some(true)) => Err(Error::TransactionEnded),
            // Rolled back under the op: nothing of it committed.
            (Ok(Err(e)), Some(false)) => Err(Error::Op(e)),
            (Err(payload), Some(false)) => Err(Error::Panicked(panic_message(&*payload))),
            (Ok(Err(e)), None) => {
                let _ = self.db.rollback(&mut conn);
                Err(Error::Op(e))
            }
            (Err(payload), None) => {
                let _ = self.db.rollback(&mut conn);
                Err(Error::Panicked(panic_message(&*payload)))
            }
        }
    }
}

/// Registers the baselines `busy-timeout`, `std-mutex` and `queue-unbatched`, and the
/// `queue-nogather` and `queue-overlap` variants.
pub fn register(registry: &mut Registry<Sqlite>) {
    registry.register(
        "busy-timeout",
        "baseline: per-thread connections, BEGIN IMMEDIATE, SQLite's busy handler, no lock",
        |spec, setup| {
            spec.expect_no_arg()?;
            let mut db = setup.connect.clone();
            if let Some(t) = setup.timeout {
                db = db.busy_timeout(t);
            }
            Ok(Box::new(BusyTimeout::new(db)))
        },
    );
    registry.register(
        "std-mutex",
        "baseline: one std::sync::Mutex around one connection (threads; unfair, cannot time out)",
        |spec, setup| {
            spec.expect_no_arg()?;
            Ok(Box::new(StdMutex::new(
                setup.connect.clone(),
                setup.tx_mode,
            )?))
        },
    );
    registry.register(
        "queue-unbatched",
        "baseline: the queue with group commit off, one commit per op (threads)",
        |spec, setup| {
            spec.expect_no_arg()?;
            let mut builder = turnstile::queue::Queue::builder()
                .tx_mode(setup.tx_mode)
                .group_commit(false);
            if let Some(t) = setup.timeout {
                builder = builder.timeout(Some(t));
            }
            Ok(Box::new(builder.build(setup.connect.clone())?))
        },
    );
    registry.register(
        "queue-nogather",
        "variant: the queue whose batches never wait for callers on their way back (gather off; threads)",
        |spec, setup| {
            spec.expect_no_arg()?;
            let mut builder = turnstile::queue::Queue::builder()
                .tx_mode(setup.tx_mode)
                .gather(false);
            if let Some(t) = setup.timeout {
                builder = builder.timeout(Some(t));
            }
            Ok(Box::new(builder.build(setup.connect.clone())?))
        },
    );
    registry.register(
        "queue-overlap",
        "variant: the queue overlapping each batch's flush with the next batch (overlap_flush on; threads)",
        |spec, setup| {
            spec.expect_no_arg()?;
            let mut builder = turnstile::queue::Queue::builder()
                .tx_mode(setup.tx_mode)
                .overlap_flush(true);
            if let Some(t) = setup.timeout {
                builder = builder.timeout(Some(t));
            }
            Ok(Box::new(builder.build(setup.connect.clone())?))
        },
    );
}
