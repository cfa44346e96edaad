//! SQLite whose `COMMIT` panics while armed: a failure of the resource's own code, outside
//! the op, that a real SQLite cannot be made to produce. Include after `sqlite_delegate`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use turnstile::sqlite::Sqlite;
use turnstile::sqlite::rusqlite::Connection;
use turnstile::{BoxError, Connect, Transact, TransactError};

/// See the module docs.
pub(crate) struct PanickyCommit {
    pub(crate) db: Sqlite,
    /// While set, `commit` panics.
    pub(crate) armed: Arc<AtomicBool>,
}

impl Connect for PanickyCommit {
    type Resource = Connection;
    fn connect(&self) -> Result<Connection, BoxError> {
        self.db.connect()
    }
    fn identity(&self) -> &str {
        self.db.identity()
    }
}

impl Transact for PanickyCommit {
    delegate_to_db!(
        begin,
        rollback,
        in_transaction,
        savepoint,
        release_savepoint,
        rollback_to_savepoint
    );
    fn commit(&self, c: &mut Connection) -> Result<(), TransactError> {
        assert!(!self.armed.load(Ordering::SeqCst), "commit exploded");
        self.db.commit(c)
    }
}
