//! `std-mutex`: the baseline a lock strategy must beat — one `std::sync::Mutex` around
//! one connection. Fast when uncontended, and unfair under contention (a releasing thread
//! usually takes it again), which is what the tail latencies in `compare` show.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Mutex;

use turnstile::sqlite::Sqlite;
use turnstile::sqlite::rusqlite::Connection;
use turnstile::{
    Capabilities, Connect, Ctx, Error, HolderDeath, Key, Scope, Serializer, StrategyError,
    Transact, TxMode, Wait, panic_message, sorted_keys,
};

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
    /// [`Error::Unavailable`] when the database cannot be opened.
    pub fn new(db: Sqlite, mode: TxMode) -> Result<Self, StrategyError> {
        let conn = db.connect().map_err(Error::Unavailable)?;
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
        let result = catch_unwind(AssertUnwindSafe(|| op(&mut Ctx::new(&mut *conn, &keys))));
        match result {
            Ok(Ok(value)) => {
                if tx {
                    if !self.db.in_transaction(&conn) {
                        return Err(Error::TransactionEnded);
                    }
                    self.db.commit(&mut conn).map_err(|e| e.into_error())?;
                }
                Ok(value)
            }
            Ok(Err(e)) => {
                let _ = self.db.rollback(&mut conn);
                Err(Error::Op(e))
            }
            Err(payload) => {
                let _ = self.db.rollback(&mut conn);
                Err(Error::Panicked(panic_message(&*payload)))
            }
        }
    }
}
