//! MySQL / MariaDB data: the run's own InnoDB tables in a shared database.

use mysql::Conn;
use mysql::prelude::Queryable;
use turnstile::Connect;
use turnstile::resource::{Isolation, MySql};
use turnstile::spec::Registry;

use super::{Backend, DataSpec, Tables, WorkloadData, backend_error, server_tables};
use crate::run::{RunError, WorkerSpec, open_error};
use crate::workload::OpError;

/// A MySQL / MariaDB database, with tables named by the run's prefix. Its sessions run at
/// `READ COMMITTED` whatever the server's default ([`MySql::isolation`]): under InnoDB's
/// `REPEATABLE READ` a `kv` op deleting an absent record locks the gap around it, and an
/// op inserting a neighbouring key waits for that transaction (a lock wait timeout, which
/// the `refused` checker would take for a collision, if it stays open long enough).
#[derive(Clone, Debug)]
pub struct MySqlData {
    db: MySql,
    tables: Tables,
}

/// How long dropping a table may wait for its metadata lock (held by a transaction of a
/// worker's connection the server has not closed yet), in seconds.
const DROP_LOCK_TIMEOUT: &str = "SET SESSION lock_wait_timeout = 10";

impl Backend for MySqlData {
    type Connect = MySql;

    fn open(spec: &WorkerSpec) -> Result<Self, RunError> {
        let DataSpec::MySql(url) = &spec.data else {
            return Err(RunError::Usage(format!("not MySQL data: {}", spec.data)));
        };
        Ok(MySqlData {
            db: MySql::new(url)
                .map_err(open_error)?
                .isolation(Isolation::ReadCommitted),
            tables: server_tables(spec)?,
        })
    }

    /// `Registry::builtin_mysql()` (`mutex`, `mysql://…`, `postgres://…`) and the
    /// `unserialized` control.
    fn registry() -> Registry<MySql> {
        let mut registry = Registry::builtin_mysql();
        crate::controls::register_unserialized(&mut registry);
        registry
    }

    fn connect(&self) -> &MySql {
        &self.db
    }

    fn tables(&self) -> &Tables {
        &self.tables
    }

    /// The server URL without password, and the run's tables.
    fn describe(&self) -> String {
        format!("{}, tables {}*", self.db.identity(), self.tables.prefix())
    }

    fn drop_tables(&self) -> Result<(), OpError> {
        let mut conn = self.db.connect().map_err(backend_error)?;
        conn.query_drop(DROP_LOCK_TIMEOUT)?;
        for table in self.tables.all() {
            // `table` is one of the run's validated names.
            conn.query_drop(format!("DROP TABLE IF EXISTS {table}"))?;
        }
        Ok(())
    }
}

impl WorkloadData for Conn {
    fn probe(&mut self) -> Result<(), OpError> {
        self.query_drop("SELECT 1")?;
        Ok(())
    }
}
