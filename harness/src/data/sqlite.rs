//! SQLite data: a fresh database file per run, tables without a prefix.

use rusqlite::Connection;
use turnstile::Connect;
use turnstile::spec::Registry;
use turnstile::sqlite::{Sqlite, Synchronous};

use super::{Backend, Tables, WorkloadData};
use crate::check::{self, CheckResult};
use crate::run::{RunError, WorkerSpec};
use crate::workload::OpError;

/// The run's SQLite database (`WorkerSpec::paths.db`), opened with the spec's
/// `synchronous`.
#[derive(Clone, Debug)]
pub struct SqliteData {
    db: Sqlite,
    tables: Tables,
}

impl Backend for SqliteData {
    type Connect = Sqlite;

    fn open(spec: &WorkerSpec) -> Result<Self, RunError> {
        let sync = spec.sync.parse().unwrap_or(Synchronous::Normal);
        Ok(SqliteData {
            db: Sqlite::new(&spec.paths.db).synchronous(sync),
            tables: Tables::new(&spec.tables)?,
        })
    }

    /// The harness's [`registry`](crate::registry()): the builtin strategies, the
    /// baselines and the negative controls.
    fn registry() -> Registry<Sqlite> {
        crate::registry()
    }

    fn connect(&self) -> &Sqlite {
        &self.db
    }

    fn tables(&self) -> &Tables {
        &self.tables
    }

    fn describe(&self) -> String {
        format!("sqlite {}", self.db.path().display())
    }

    /// `PRAGMA integrity_check`.
    fn integrity(&self) -> Option<CheckResult> {
        Some(match self.db.connect() {
            Ok(conn) => check::integrity::check(&conn),
            Err(e) => CheckResult::violation("integrity", format!("cannot open: {e}"), vec![]),
        })
    }
}

impl WorkloadData for Connection {
    fn probe(&mut self) -> Result<(), OpError> {
        self.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))?;
        Ok(())
    }
}
