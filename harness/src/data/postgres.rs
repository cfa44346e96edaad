//! PostgreSQL data: the run's own tables in a shared database.

use postgres::Client;
use turnstile::Connect;
use turnstile::resource::{Isolation, Postgres};
use turnstile::spec::Registry;

use super::{Backend, DataSpec, Tables, WorkloadData, backend_error, server_tables};
use crate::run::{RunError, WorkerSpec, open_error};
use crate::workload::OpError;

/// Parses a `postgres://` URL; [`Postgres::new`] refuses what the driver would only
/// refuse when it connects (no host, hosts and `hostaddr`s that do not pair up, …).
pub(crate) fn checked(url: &str) -> Result<Postgres, String> {
    Postgres::new(url).map_err(|e| match open_error(e) {
        RunError::Usage(m) => m,
        other => other.reason(),
    })
}

/// A PostgreSQL database, with tables named by the run's prefix. Its sessions run at
/// `READ COMMITTED` whatever the server's default ([`Postgres::isolation`]): under
/// `SERIALIZABLE` the server's predicate locks fail ops of different keys (`40001`), which
/// the `refused` checker would take for ops the strategy let collide.
#[derive(Clone, Debug)]
pub struct PostgresData {
    db: Postgres,
    tables: Tables,
}

/// How long dropping a table may wait for a session that still holds it (a worker's
/// connection the server has not closed yet).
const DROP_LOCK_TIMEOUT: &str = "SET lock_timeout = '10s'";

impl Backend for PostgresData {
    type Connect = Postgres;

    fn open(spec: &WorkerSpec) -> Result<Self, RunError> {
        let DataSpec::Postgres(url) = &spec.data else {
            return Err(RunError::Usage(format!(
                "not PostgreSQL data: {}",
                spec.data
            )));
        };
        Ok(PostgresData {
            db: checked(url)
                .map_err(RunError::Usage)?
                .isolation(Isolation::ReadCommitted),
            tables: server_tables(spec)?,
        })
    }

    /// `Registry::builtin_postgres()` (`mutex`, `mysql://…`, `postgres://…`, `pg-xact`)
    /// and the `unserialized` control.
    fn registry() -> Registry<Postgres> {
        let mut registry = Registry::builtin_postgres();
        crate::controls::register_unserialized(&mut registry);
        registry
    }

    fn connect(&self) -> &Postgres {
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
        let mut client = self.db.connect().map_err(backend_error)?;
        client.batch_execute(DROP_LOCK_TIMEOUT)?;
        for table in self.tables.all() {
            // `table` is one of the run's validated names.
            client.batch_execute(&format!("DROP TABLE IF EXISTS {table}"))?;
        }
        Ok(())
    }
}

impl WorkloadData for Client {
    fn probe(&mut self) -> Result<(), OpError> {
        self.query_one("SELECT 1", &[])?;
        Ok(())
    }
}

/// The workloads' statements on PostgreSQL, each one round trip: typed parameters need
/// no prepare (a statement sent as text is prepared, run and closed: three).
pub(crate) mod pg {
    use postgres::Client;
    use postgres::types::{FromSqlOwned, ToSql, Type};

    use crate::workload::OpError;

    /// `TEXT`.
    pub(crate) const TEXT: Type = Type::TEXT;
    /// `BIGINT`.
    pub(crate) const INT8: Type = Type::INT8;

    /// Runs `sql`.
    pub(crate) fn run(
        client: &mut Client,
        sql: &str,
        params: &[(&(dyn ToSql + Sync), Type)],
    ) -> Result<(), OpError> {
        client.query_typed(sql, params)?;
        Ok(())
    }

    /// The first column of the first row `sql` returns, if any.
    pub(crate) fn opt<T: FromSqlOwned>(
        client: &mut Client,
        sql: &str,
        params: &[(&(dyn ToSql + Sync), Type)],
    ) -> Result<Option<T>, OpError> {
        let rows = client.query_typed(sql, params)?;
        Ok(match rows.first() {
            Some(row) => Some(row.try_get(0)?),
            None => None,
        })
    }

    /// The first column of the first row `sql` returns; [`OpError::Missing`] (`what`)
    /// when there is none.
    pub(crate) fn one<T: FromSqlOwned>(
        client: &mut Client,
        sql: &str,
        params: &[(&(dyn ToSql + Sync), Type)],
        what: &str,
    ) -> Result<T, OpError> {
        opt(client, sql, params)?.ok_or_else(|| OpError::Missing(what.to_owned()))
    }
}
