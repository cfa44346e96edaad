//! Optimistic concurrency: no lock, versioned records, compare-and-set on commit, rerun on
//! conflict.
//!
//! Seed 003 kept per-object serial numbers in memcached and compared them before writing,
//! in separate steps, so two writers could both pass the check ("THIS CODE HAS (at least
//! one) RACE CONDITION"). Here the check and the write are one statement inside one
//! transaction:
//!
//! 1. The op reads records through a [`Versioned`] handle (each read remembers the
//!    version it saw) and buffers its writes ([`Versioned::write`]); nothing is written
//!    while it runs.
//! 2. On commit, one transaction checks every record read but not written is still at
//!    the version read, and writes each buffered record with
//!    `UPDATE … SET value = ?, version = version + 1 WHERE id = ? AND version = ?` (an
//!    `INSERT` that must not find the id for a record that did not exist), each required
//!    to change exactly one row.
//! 3. Any mismatch is a conflict: the transaction rolls back, and [`Optimistic`] runs the
//!    op again after a full-jitter backoff, `U(0, min(cap, base·2ⁿ))`, until its attempt
//!    budget or the caller's deadline is spent ([`Error::Contended`]). An op whose read
//!    met the store's "busy" (its error is a busy [`StoreError`]) is rerun the same way.
//!
//! Ops overlap ([`Capabilities::excludes`] is false) and may run several times
//! ([`Capabilities::reruns_op`]): they must not have effects outside the write set.
//!
//! The records live in one table (default [`DEFAULT_TABLE`]) of any [`VersionStore`]:
//! [`Sqlite`](crate::sqlite::Sqlite), and with their features
//! [`Postgres`](crate::resource::Postgres) and [`MySql`](crate::resource::MySql), whose
//! arbitration reaches across hosts. [`Versions`] wraps a store as
//! a [`Connect`] + [`Transact`] whose resource is the [`Versioned`] handle, so the same
//! ops also run under any lock strategy (`Locked<L, Versions<S>>`), where conflicts
//! cannot happen. Only in [`TxMode::Transaction`](crate::TxMode::Transaction): the writes
//! apply at commit, so [`TxMode::Autocommit`](crate::TxMode::Autocommit), which never
//! commits, is refused with [`Error::Config`].
//!
//! ```
//! use turnstile::optimistic::{Optimistic, StoreError};
//! use turnstile::sqlite::Sqlite;
//! use turnstile::{Key, Serializer};
//!
//! let dir = tempfile::tempdir()?;
//! let strategy = Optimistic::new(Sqlite::new(dir.path().join("app.db")));
//! let key = Key::new("hits")?;
//! for _ in 0..3 {
//!     strategy.run(&key, |db| {
//!         let n = db.read("hits")?.map_or(0, |v| i64::from_le_bytes(v.try_into().unwrap()));
//!         db.write("hits", (n + 1).to_le_bytes())?;
//!         Ok::<_, StoreError>(())
//!     })?;
//! }
//! let n = strategy.run(&key, |db| Ok::<_, StoreError>(db.read("hits")?))?;
//! assert_eq!(n, Some(3i64.to_le_bytes().to_vec()));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::any::Any;
use std::collections::BTreeMap;
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use turnstile_core::{
    BoxError, Capabilities, Connect, Ctx, Error, Fence, FenceClaim, HolderDeath, Key, Scope,
    Serializer, StrategyError, Transact, TransactError, Wait, check_timeout, find_error,
    sorted_keys,
};

/// The default table of versioned records: `turnstile_versions`.
pub const DEFAULT_TABLE: &str = "turnstile_versions";
/// The default most runs of an op for one call: 16.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 16;
/// The default first backoff ceiling: 1 ms (doubling per conflict).
pub const DEFAULT_BACKOFF_BASE: Duration = Duration::from_millis(1);
/// The default largest backoff ceiling: 100 ms.
pub const DEFAULT_BACKOFF_CAP: Duration = Duration::from_millis(100);
/// The default time budget of a call, ops included: 30 s.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// The longest record id MySQL's version store takes: 255 bytes, its `VARBINARY(255)` id
/// column.
pub const MYSQL_MAX_ID_LEN: usize = 255;
/// The longest record id PostgreSQL's version store takes: 2,692 bytes, the longest
/// `TEXT` key that fits a B-tree index entry (2,704 bytes with its headers) when it does
/// not compress. A longer id that compresses well may fit, but whether it does depends on
/// its bytes, so none is taken.
pub const POSTGRES_MAX_ID_LEN: usize = 2692;

/// A record's value and version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// The value.
    pub value: Vec<u8>,
    /// Its version: 1 when inserted, +1 per write.
    pub version: u64,
}

/// A backend that stores versioned records and compares-and-sets them inside its own
/// transactions, in the table a [`TableName`] names (validated, so it can be part of the
/// SQL: a table name cannot be a bound parameter).
pub trait VersionStore: Transact {
    /// The backend's error (the driver's own type, so [`Transact::is_busy`] and
    /// [`Connect::is_broken`] can classify it).
    type StoreErr: std::error::Error + Send + Sync + 'static;

    /// How far the store's arbitration reaches (SQLite: processes on one host).
    fn scope(&self) -> Scope;

    /// The longest record id the store's table takes, in bytes; `None` when it has no
    /// limit of its own. [`Versioned`]'s reads and writes refuse a longer id with an
    /// [`IdTooLong`] error (the op's error), before the store sees it: the store would
    /// fail only at commit (or, on a non-strict MySQL server, cut it, so that two ids
    /// share one record). SQLite: none (an id is `TEXT`, bounded by SQLite's 1 GB string
    /// limit); PostgreSQL: [`POSTGRES_MAX_ID_LEN`] (its B-tree index entry); MySQL:
    /// [`MYSQL_MAX_ID_LEN`] (a `VARBINARY(255)` column). Default: `None`.
    fn max_id_len(&self) -> Option<usize> {
        None
    }

    /// Creates the record table if it does not exist.
    ///
    /// # Errors
    /// The backend's error.
    fn ensure_table(
        &self,
        resource: &mut Self::Resource,
        table: &TableName,
    ) -> Result<(), StoreFault<Self::StoreErr>>;

    /// Reads a record (outside any transaction).
    ///
    /// # Errors
    /// The backend's error; [`StoreFault::Column`] when a column holds a value of another
    /// type (a table of another shape by the same name).
    fn read(
        &self,
        resource: &mut Self::Resource,
        table: &TableName,
        id: &str,
    ) -> Result<Option<Record>, StoreFault<Self::StoreErr>>;

    /// Inside the commit transaction: whether the record is still at `version` (`None`:
    /// still absent). Backends with row locks lock it, so it stays so until commit.
    ///
    /// # Errors
    /// The backend's error; [`StoreFault::Column`] as for [`VersionStore::read`].
    fn still_at(
        &self,
        resource: &mut Self::Resource,
        table: &TableName,
        id: &str,
        version: Option<u64>,
    ) -> Result<bool, StoreFault<Self::StoreErr>>;

    /// Inside the commit transaction: writes `value` if the record is at `expected`
    /// (`None`: absent, then inserted at version 1). Returns whether exactly one row
    /// changed.
    ///
    /// # Errors
    /// The backend's error.
    fn compare_and_set(
        &self,
        resource: &mut Self::Resource,
        table: &TableName,
        id: &str,
        expected: Option<u64>,
        value: &[u8],
    ) -> Result<bool, StoreFault<Self::StoreErr>>;
}

/// The name of a record table: 1-63 ASCII letters, digits or `_`, not starting with a
/// digit, checked once by [`TableName::new`], so every [`VersionStore`] method can put it
/// in its SQL (unquoted).
///
/// Its identity ([`TableName::identity`]) is the name in ASCII lower case: unquoted, `Foo`
/// and `foo` name one table on SQLite (case-insensitive) and PostgreSQL (which folds
/// unquoted names to lower case), and on MySQL / MariaDB whenever
/// `lower_case_table_names` is 1 or 2. Where it is 0 (Linux' default) they are two tables
/// that share one identity, and so one lock namespace: that only over-excludes.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TableName(Arc<str>);

impl TableName {
    /// A validated table name.
    ///
    /// # Errors
    /// [`Error::Config`] unless `name` is 1-63 ASCII letters, digits or `_`, not starting
    /// with a digit.
    pub fn new(name: &str) -> Result<Self, StrategyError> {
        let mut bytes = name.bytes();
        let ok = name.len() <= 63
            && bytes
                .next()
                .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
            && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if ok {
            Ok(TableName(name.into()))
        } else {
            Err(Error::Config(format!(
                "version table name {name:?} must be 1-63 ASCII letters, digits or '_', not starting with a digit"
            )))
        }
    }

    /// The name as given, as it appears in the SQL.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The table's identity: the name in ASCII lower case, the one table every spelling
    /// of it names on SQLite and PostgreSQL (see [`TableName`]).
    pub fn identity(&self) -> String {
        self.0.to_ascii_lowercase()
    }
}

impl Default for TableName {
    /// [`DEFAULT_TABLE`].
    fn default() -> Self {
        TableName(DEFAULT_TABLE.into())
    }
}

impl fmt::Display for TableName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a [`VersionStore`] method failed with.
#[derive(Debug)]
#[non_exhaustive]
pub enum StoreFault<E> {
    /// The backend's own error.
    Backend(E),
    /// A column of the record table held a value of another type.
    Column(ColumnTypeError),
}

impl<E> From<E> for StoreFault<E> {
    fn from(e: E) -> Self {
        StoreFault::Backend(e)
    }
}

impl<E: fmt::Display> fmt::Display for StoreFault<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreFault::Backend(e) => e.fmt(f),
            StoreFault::Column(e) => e.fmt(f),
        }
    }
}

impl<E: std::error::Error + 'static> std::error::Error for StoreFault<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StoreFault::Backend(e) => Some(e),
            StoreFault::Column(e) => Some(e),
        }
    }
}

impl<E: std::error::Error + Send + Sync + 'static> StoreFault<E> {
    /// The error itself, boxed: the backend's, or the [`ColumnTypeError`].
    fn into_box(self) -> BoxError {
        match self {
            StoreFault::Backend(e) => Box::new(e),
            StoreFault::Column(e) => Box::new(e),
        }
    }
}

/// A column of the record table held a value of another type than turnstile's own table
/// has (`value` bytes, `version` a non-negative integer): a table of another shape by the
/// same name. Reported, never decoded by force.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ColumnTypeError {
    /// The table.
    pub table: String,
    /// The column.
    pub column: &'static str,
    /// What it held, as the driver describes it.
    pub found: String,
}

impl ColumnTypeError {
    // Made by the stores, each behind its feature.
    #[cfg(any(feature = "sqlite", feature = "postgres", feature = "mysql"))]
    pub(crate) fn new(table: &TableName, column: &'static str, found: impl fmt::Display) -> Self {
        ColumnTypeError {
            table: table.as_str().to_owned(),
            column,
            found: found.to_string(),
        }
    }
}

impl fmt::Display for ColumnTypeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let want = if self.column == "version" {
            "a non-negative integer"
        } else {
            "bytes"
        };
        write!(
            f,
            "version table {:?}, column {:?}: expected {want}, found {} (a table of another shape by this name?)",
            self.table, self.column, self.found
        )
    }
}

impl std::error::Error for ColumnTypeError {}

/// An error reading or writing through a [`Versioned`] handle: the store failed.
#[derive(Debug)]
pub struct StoreError {
    error: BoxError,
    busy: bool,
    broken: bool,
}

impl StoreError {
    /// The backend's error.
    pub fn into_inner(self) -> BoxError {
        self.error
    }

    /// Whether it was the store's "busy, try again".
    pub fn is_busy(&self) -> bool {
        self.busy
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "version store failed: {}", self.error)
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.error)
    }
}

/// A record id longer than the version store takes ([`VersionStore::max_id_len`]),
/// refused by [`Versioned`]'s reads and writes: the source of their [`StoreError`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct IdTooLong {
    /// The id's length, in bytes.
    pub len: usize,
    /// The store's limit, in bytes.
    pub max: usize,
}

impl fmt::Display for IdTooLong {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "record id of {} bytes is longer than this version store takes ({} bytes at most)",
            self.len, self.max
        )
    }
}

impl std::error::Error for IdTooLong {}

/// A commit found a record changed since the op read it. The source of
/// [`TransactError::Busy`] from [`Versions`]' commit.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Conflict {
    /// The record's id.
    pub id: String,
}

impl fmt::Display for Conflict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "record {:?} changed since it was read", self.id)
    }
}

impl std::error::Error for Conflict {}

/// What an op works on under optimistic concurrency: reads that remember versions and a
/// buffered write set.
pub struct Versioned<S: VersionStore> {
    conn: S::Resource,
    store: Arc<S>,
    table: TableName,
    /// Every record read, as first seen (`None`: absent).
    reads: BTreeMap<String, Option<Record>>,
    writes: BTreeMap<String, Vec<u8>>,
    savepoints: Vec<(usize, BTreeMap<String, Vec<u8>>)>,
    fences: Vec<(String, Vec<u8>, Fence)>,
}

impl<S: VersionStore> fmt::Debug for Versioned<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Versioned")
            .field("table", &self.table)
            .field("reads", &self.reads.keys().collect::<Vec<_>>())
            .field("writes", &self.writes.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl<S: VersionStore> Versioned<S> {
    fn fetch(&mut self, id: &str) -> Result<Option<Record>, StoreError> {
        if let Some(max) = self.store.max_id_len()
            && id.len() > max
        {
            return Err(StoreError {
                error: Box::new(IdTooLong { len: id.len(), max }),
                busy: false,
                broken: false,
            });
        }
        if let Some(seen) = self.reads.get(id) {
            return Ok(seen.clone());
        }
        let record = match self.store.read(&mut self.conn, &self.table, id) {
            Ok(record) => record,
            Err(StoreFault::Column(e)) => {
                return Err(StoreError {
                    error: Box::new(e),
                    busy: false,
                    broken: false,
                });
            }
            Err(StoreFault::Backend(e)) => {
                let busy = self.store.is_busy(&e);
                let broken = self.store.is_broken(&mut self.conn, &e);
                return Err(StoreError {
                    error: Box::new(e),
                    busy,
                    broken,
                });
            }
        };
        self.reads.insert(id.to_owned(), record.clone());
        Ok(record)
    }

    /// The record's value (`None` when absent): this op's own buffered write if any, else
    /// the stored value, whose version the commit will check. Reading a record twice gives
    /// the same answer.
    ///
    /// # Errors
    /// [`StoreError`] when the store fails, or when `id` is longer than the store takes
    /// (its source an [`IdTooLong`]; see [`VersionStore::max_id_len`]).
    pub fn read(&mut self, id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        if let Some(value) = self.writes.get(id) {
            return Ok(Some(value.clone()));
        }
        Ok(self.fetch(id)?.map(|r| r.value))
    }

    /// The record as stored when this op first read it, with its version.
    ///
    /// # Errors
    /// [`StoreError`] when the store fails, or when `id` is longer than the store takes
    /// (its source an [`IdTooLong`]).
    pub fn read_record(&mut self, id: &str) -> Result<Option<Record>, StoreError> {
        self.fetch(id)
    }

    /// Buffers a write of `value` to record `id`, to be compared-and-set against the
    /// version this op read (reading it now if it has not).
    ///
    /// # Errors
    /// [`StoreError`] when the store fails reading the record's version, or when `id` is
    /// longer than the store takes (its source an [`IdTooLong`]; see
    /// [`VersionStore::max_id_len`]).
    pub fn write(&mut self, id: &str, value: impl Into<Vec<u8>>) -> Result<(), StoreError> {
        self.fetch(id)?;
        self.writes.insert(id.to_owned(), value.into());
        Ok(())
    }

    /// The write set so far: `(id, version read, new value)`, by id.
    pub fn write_set(&self) -> impl Iterator<Item = (&str, Option<u64>, &[u8])> {
        self.writes.iter().map(|(id, value)| {
            let version = self
                .reads
                .get(id)
                .and_then(|r| r.as_ref().map(|r| r.version));
            (id.as_str(), version, value.as_slice())
        })
    }

    fn clear(&mut self) {
        self.reads.clear();
        self.writes.clear();
        self.savepoints.clear();
        self.fences.clear();
    }

    /// Validates the read set and writes the write set in one store transaction.
    fn apply(&mut self) -> Result<(), TransactError> {
        if self.writes.is_empty() && self.reads.is_empty() {
            return Ok(());
        }
        let claims: Vec<FenceClaim<'_>> = self
            .fences
            .iter()
            .map(|(backend, name, fence)| FenceClaim {
                backend,
                name,
                fence: *fence,
            })
            .collect();
        let store = &*self.store;
        store.begin(&mut self.conn, &claims)?;
        let outcome = (|| {
            for (id, seen) in &self.reads {
                let ok = if let Some(value) = self.writes.get(id) {
                    let expected = seen.as_ref().map(|r| r.version);
                    store.compare_and_set(&mut self.conn, &self.table, id, expected, value)
                } else {
                    let version = seen.as_ref().map(|r| r.version);
                    store.still_at(&mut self.conn, &self.table, id, version)
                };
                match ok {
                    Ok(true) => {}
                    Ok(false) => {
                        return Err(TransactError::Busy(Box::new(Conflict { id: id.clone() })));
                    }
                    Err(StoreFault::Backend(e)) if store.is_busy(&e) => {
                        return Err(TransactError::Busy(Box::new(e)));
                    }
                    Err(e) => return Err(TransactError::Failed(e.into_box())),
                }
            }
            Ok(())
        })();
        match outcome {
            Ok(()) => store.commit(&mut self.conn),
            Err(e) => {
                let _ = store.rollback(&mut self.conn);
                Err(e)
            }
        }
    }
}

/// A [`VersionStore`] as a [`Connect`] + [`Transact`] whose resource is a [`Versioned`]
/// handle: `begin` starts an empty read and write set, `commit` validates and writes them
/// in one store transaction, a conflict is [`TransactError::Busy`].
pub struct Versions<S> {
    store: Arc<S>,
    table: TableName,
    identity: String,
}

impl<S> Clone for Versions<S> {
    fn clone(&self) -> Self {
        Versions {
            store: self.store.clone(),
            table: self.table.clone(),
            identity: self.identity.clone(),
        }
    }
}

impl<S: VersionStore> fmt::Debug for Versions<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Versions")
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

impl<S: VersionStore> Versions<S> {
    /// Records in [`DEFAULT_TABLE`] of `store`.
    pub fn new(store: S) -> Self {
        let table = TableName::default();
        Versions {
            identity: format!("{}#{}", store.identity(), table.identity()),
            store: Arc::new(store),
            table,
        }
    }

    /// Sets the record table (created on first connect). Default: [`DEFAULT_TABLE`].
    ///
    /// The identity ([`Connect::identity`], which prefixes lock names) holds the table's
    /// [`TableName::identity`], its name in ASCII lower case: `table("Foo")` and
    /// `table("foo")` name one table on SQLite and PostgreSQL, so they share one identity.
    ///
    /// # Errors
    /// [`Error::Config`] unless `table` is 1-63 ASCII letters, digits or `_`, not
    /// starting with a digit (it is part of the SQL; it cannot be a bound parameter): see
    /// [`TableName::new`].
    pub fn table(mut self, table: &str) -> Result<Self, StrategyError> {
        let table = TableName::new(table)?;
        self.identity = format!("{}#{}", self.store.identity(), table.identity());
        self.table = table;
        Ok(self)
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.store
    }
}

impl<S: VersionStore> Connect for Versions<S> {
    type Resource = Versioned<S>;

    fn connect(&self) -> Result<Versioned<S>, BoxError> {
        self.connect_within(None)
    }

    fn connect_within(&self, deadline: Option<Instant>) -> Result<Versioned<S>, BoxError> {
        let mut conn = self.store.connect_within(deadline)?;
        self.store
            .ensure_table(&mut conn, &self.table)
            .map_err(StoreFault::into_box)?;
        Ok(Versioned {
            conn,
            store: self.store.clone(),
            table: self.table.clone(),
            reads: BTreeMap::new(),
            writes: BTreeMap::new(),
            savepoints: Vec::new(),
            fences: Vec::new(),
        })
    }

    fn identity(&self) -> &str {
        &self.identity
    }

    fn single_writer(&self) -> bool {
        self.store.single_writer()
    }

    fn arbitrates(&self) -> Scope {
        self.store.scope()
    }

    fn is_broken(&self, resource: &mut Versioned<S>, error: &(dyn Any + Send + Sync)) -> bool {
        match find_error::<StoreError>(error) {
            Some(e) => e.broken,
            None => self.store.is_broken(&mut resource.conn, error),
        }
    }

    /// The store's answer: a MySQL connection whose read timed out under a panicking op is
    /// not reused.
    fn survives_panic(&self, resource: &mut Versioned<S>) -> bool {
        self.store.survives_panic(&mut resource.conn)
    }
}

impl<S: VersionStore> Transact for Versions<S> {
    fn begin(&self, r: &mut Versioned<S>, fences: &[FenceClaim<'_>]) -> Result<(), TransactError> {
        r.clear();
        r.fences = fences
            .iter()
            .map(|c| (c.backend.to_owned(), c.name.to_vec(), c.fence))
            .collect();
        Ok(())
    }

    fn commit(&self, r: &mut Versioned<S>) -> Result<(), TransactError> {
        let result = r.apply();
        r.clear();
        result
    }

    fn rollback(&self, r: &mut Versioned<S>) -> Result<(), BoxError> {
        r.clear();
        Ok(())
    }

    fn in_transaction(&self, _r: &Versioned<S>) -> bool {
        // The op cannot end a transaction: none is open while it runs.
        true
    }

    /// No: writes are buffered in the handle and only applied by `commit`.
    fn supports_autocommit(&self) -> bool {
        false
    }

    fn savepoint(&self, r: &mut Versioned<S>, n: usize) -> Result<(), BoxError> {
        r.savepoints.push((n, r.writes.clone()));
        Ok(())
    }

    fn release_savepoint(&self, r: &mut Versioned<S>, n: usize) -> Result<(), BoxError> {
        let at = r.savepoints.iter().rposition(|(m, _)| *m == n);
        match at {
            Some(i) => {
                r.savepoints.truncate(i);
                Ok(())
            }
            None => Err(format!("no savepoint {n}").into()),
        }
    }

    fn rollback_to_savepoint(&self, r: &mut Versioned<S>, n: usize) -> Result<(), BoxError> {
        let at = r.savepoints.iter().rposition(|(m, _)| *m == n);
        match at {
            Some(i) => {
                let (_, writes) = r.savepoints.swap_remove(i);
                r.savepoints.truncate(i);
                r.writes = writes;
                Ok(())
            }
            None => Err(format!("no savepoint {n}").into()),
        }
    }

    fn is_busy(&self, error: &(dyn Any + Send + Sync)) -> bool {
        find_error::<Conflict>(error).is_some()
            || match find_error::<StoreError>(error) {
                Some(e) => e.busy,
                None => self.store.is_busy(error),
            }
    }
}

/// The op's read found the store busy; retried like a conflict.
#[derive(Debug)]
struct BusyRead;

impl fmt::Display for BusyRead {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the store was busy while the op read")
    }
}

impl std::error::Error for BusyRead {}

/// The `optimistic` strategy: runs the op without a lock over a [`Versioned`] handle,
/// commits its write set with compare-and-set, reruns it on conflict.
///
/// Defaults: [`DEFAULT_TABLE`], at most [`DEFAULT_MAX_ATTEMPTS`] runs, full-jitter
/// backoff from [`DEFAULT_BACKOFF_BASE`] up to [`DEFAULT_BACKOFF_CAP`], a
/// [`DEFAULT_TIMEOUT`] budget. Connections are kept in an idle list between calls (one
/// open per concurrent call; ops never wait for each other).
pub struct Optimistic<S: VersionStore> {
    versions: Versions<S>,
    idle: Mutex<Vec<Versioned<S>>>,
    max_attempts: u32,
    base: Duration,
    cap: Duration,
    timeout: Option<Duration>,
}

impl<S: VersionStore> fmt::Debug for Optimistic<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Optimistic")
            .field("versions", &self.versions)
            .field("max_attempts", &self.max_attempts)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl<S: VersionStore> Optimistic<S> {
    /// The strategy over records in [`DEFAULT_TABLE`] of `store`.
    pub fn new(store: S) -> Self {
        Self::over(Versions::new(store))
    }

    /// The strategy over an already configured [`Versions`].
    pub fn over(versions: Versions<S>) -> Self {
        Optimistic {
            versions,
            idle: Mutex::new(Vec::new()),
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            base: DEFAULT_BACKOFF_BASE,
            cap: DEFAULT_BACKOFF_CAP,
            timeout: Some(DEFAULT_TIMEOUT),
        }
    }

    /// Sets the most runs of the op per call. Default: [`DEFAULT_MAX_ATTEMPTS`].
    ///
    /// # Errors
    /// [`Error::Config`] for zero.
    pub fn max_attempts(mut self, attempts: u32) -> Result<Self, StrategyError> {
        if attempts == 0 {
            return Err(Error::Config("an op needs at least one attempt".into()));
        }
        self.max_attempts = attempts;
        Ok(self)
    }

    /// Sets the backoff: the ceiling starts at `base` and doubles per conflict up to
    /// `cap`; each sleep is uniform below the ceiling. Defaults: [`DEFAULT_BACKOFF_BASE`],
    /// [`DEFAULT_BACKOFF_CAP`].
    ///
    /// # Errors
    /// [`Error::Config`] when `base` is zero (the ceiling would never grow: conflicts
    /// would be retried in a busy loop), exceeds `cap`, or `cap` exceeds one minute.
    pub fn backoff(mut self, base: Duration, cap: Duration) -> Result<Self, StrategyError> {
        if base.is_zero() || base > cap || cap > Duration::from_secs(60) {
            return Err(Error::Config(format!(
                "backoff base {base:?} must be above zero and not exceed cap {cap:?}, nor cap one minute"
            )));
        }
        self.base = base;
        self.cap = cap;
        Ok(self)
    }

    /// Sets the default time budget of a call, ops and backoff included; `None` means only
    /// the attempt budget limits it. Default: [`DEFAULT_TIMEOUT`].
    ///
    /// # Errors
    /// [`Error::Config`] for a timeout over [`MAX_TIMEOUT`](turnstile_core::MAX_TIMEOUT).
    pub fn timeout(mut self, timeout: Option<Duration>) -> Result<Self, StrategyError> {
        self.timeout = check_timeout(timeout)?;
        Ok(self)
    }

    /// The record store wrapper.
    pub fn versions(&self) -> &Versions<S> {
        &self.versions
    }

    /// An idle connection, or a new one opened within the call's deadline: a login cut
    /// short by the deadline is [`Error::Timeout`], as any wait of the call's.
    fn checkout(
        &self,
        start: Instant,
        deadline: Option<Instant>,
    ) -> Result<Versioned<S>, StrategyError> {
        let cached = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        if let Some(r) = cached {
            return Ok(r);
        }
        crate::pool::open_within(&self.versions, start, deadline)
    }

    fn checkin(&self, r: Versioned<S>) {
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).push(r);
    }

    /// Full jitter: `U(0, min(cap, base·2ⁿ))`.
    fn backoff_for(&self, conflicts: u32) -> Duration {
        let ceiling = self
            .base
            .saturating_mul(1u32 << conflicts.min(20))
            .min(self.cap);
        Duration::from_nanos(fastrand::u64(0..=ceiling.as_nanos() as u64))
    }
}

impl<S: VersionStore> Serializer for Optimistic<S> {
    type Resource = Versioned<S>;

    fn capabilities(&self) -> Capabilities {
        Capabilities::new(self.versions.store.scope(), HolderDeath::ResourceRollsBack)
            .excludes(false)
            .reruns_op(true)
    }

    fn run_with<T, E, F>(&self, keys: &[Key], wait: Wait, mut op: F) -> Result<T, Error<E>>
    where
        F: FnMut(&mut Ctx<'_, Versioned<S>>) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: Send + Sync + 'static,
    {
        let start = Instant::now();
        let keys = sorted_keys(keys).map_err(Error::widen)?;
        let deadline = wait.deadline(self.timeout).map_err(Error::widen)?;
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let mut r = self.checkout(start, deadline).map_err(Error::widen)?;
            // Begin of a Versions transaction only clears the sets; it cannot fail.
            let _ = self.versions.begin(&mut r, &[]);
            let result = catch_unwind(AssertUnwindSafe(|| {
                op(&mut Ctx::new(&mut r, &keys)
                    .with_attempt(attempt)
                    .with_deadline(deadline))
            }));
            let committed = match result {
                Ok(Ok(value)) => self.versions.commit(&mut r).map(|()| value),
                // The store was busy while the op read (SQLite's WAL restarting, say):
                // as retryable as a conflict.
                Ok(Err(e)) if self.versions.is_busy(&e) => {
                    r.clear();
                    Err(TransactError::Busy(Box::new(BusyRead)))
                }
                Ok(Err(e)) => {
                    let broken = self.versions.is_broken(&mut r, &e);
                    r.clear();
                    if !broken {
                        self.checkin(r);
                    }
                    return Err(Error::Op(e));
                }
                Err(payload) => {
                    r.clear();
                    // A panic may hide a broken connection (a read that timed out).
                    if self.versions.survives_panic(&mut r) {
                        self.checkin(r);
                    }
                    return Err(Error::Panicked(turnstile_core::panic_message(&*payload)));
                }
            };
            match committed {
                Ok(value) => {
                    self.checkin(r);
                    return Ok(value);
                }
                Err(TransactError::Busy(_)) => {
                    self.checkin(r);
                    let now = Instant::now();
                    let nap = self.backoff_for(attempt - 1);
                    let out_of_time = deadline.is_some_and(|at| now + nap >= at);
                    if attempt >= self.max_attempts || out_of_time {
                        return Err(Error::Contended {
                            attempts: attempt,
                            elapsed: start.elapsed(),
                        });
                    }
                    std::thread::sleep(nap);
                }
                // A failed store transaction may have broken the connection: drop it.
                Err(e) => return Err(e.into_error()),
            }
        }
    }
}

#[cfg(feature = "sqlite")]
mod sqlite_store {
    use rusqlite::types::Value;
    use rusqlite::{OptionalExtension, params};

    use super::*;
    use crate::sqlite::Sqlite;

    type Fault = StoreFault<rusqlite::Error>;

    /// SQLite keeps any value in any column: a table of another shape by this name can
    /// hold text or a negative number where a version belongs.
    fn version(table: &TableName, v: Value) -> Result<u64, Fault> {
        match v {
            Value::Integer(v) if v >= 0 => Ok(v as u64),
            Value::Integer(v) => Err(StoreFault::Column(ColumnTypeError::new(
                table,
                "version",
                format_args!("the negative integer {v}"),
            ))),
            other => Err(StoreFault::Column(ColumnTypeError::new(
                table,
                "version",
                other.data_type(),
            ))),
        }
    }

    fn value(table: &TableName, v: Value) -> Result<Vec<u8>, Fault> {
        match v {
            Value::Blob(b) => Ok(b),
            other => Err(StoreFault::Column(ColumnTypeError::new(
                table,
                "value",
                other.data_type(),
            ))),
        }
    }

    impl VersionStore for Sqlite {
        type StoreErr = rusqlite::Error;

        fn scope(&self) -> Scope {
            Scope::Processes
        }

        fn ensure_table(
            &self,
            conn: &mut rusqlite::Connection,
            table: &TableName,
        ) -> Result<(), Fault> {
            // `table` is a validated identifier. IMMEDIATE: in autocommit, the statement
            // reads the schema and then writes, and a writer in between makes that upgrade
            // fail with SQLITE_BUSY_SNAPSHOT at once, without the busy handler.
            conn.execute_batch(&format!(
                "BEGIN IMMEDIATE;
                 CREATE TABLE IF NOT EXISTS {table} (
                     id TEXT PRIMARY KEY, value BLOB NOT NULL, version INTEGER NOT NULL);
                 COMMIT;"
            ))
            .inspect_err(|_| {
                if !conn.is_autocommit() {
                    let _ = conn.execute_batch("ROLLBACK");
                }
            })?;
            Ok(())
        }

        fn read(
            &self,
            conn: &mut rusqlite::Connection,
            table: &TableName,
            id: &str,
        ) -> Result<Option<Record>, Fault> {
            let row: Option<(Value, Value)> = conn
                .prepare_cached(&format!("SELECT value, version FROM {table} WHERE id = ?1"))
                .and_then(|mut s| s.query_row([id], |r| Ok((r.get(0)?, r.get(1)?))).optional())?;
            row.map(|(v, n)| {
                Ok(Record {
                    value: value(table, v)?,
                    version: version(table, n)?,
                })
            })
            .transpose()
        }

        fn still_at(
            &self,
            conn: &mut rusqlite::Connection,
            table: &TableName,
            id: &str,
            expected: Option<u64>,
        ) -> Result<bool, Fault> {
            let now: Option<Value> = conn
                .prepare_cached(&format!("SELECT version FROM {table} WHERE id = ?1"))
                .and_then(|mut s| s.query_row([id], |r| r.get(0)).optional())?;
            Ok(now.map(|v| version(table, v)).transpose()? == expected)
        }

        fn compare_and_set(
            &self,
            conn: &mut rusqlite::Connection,
            table: &TableName,
            id: &str,
            expected: Option<u64>,
            value: &[u8],
        ) -> Result<bool, Fault> {
            let changed = match expected {
                None => conn
                    .prepare_cached(&format!(
                        "INSERT INTO {table} (id, value, version) VALUES (?1, ?2, 1)
                         ON CONFLICT (id) DO NOTHING"
                    ))
                    .and_then(|mut s| s.execute(params![id, value])),
                Some(v) => conn
                    .prepare_cached(&format!(
                        "UPDATE {table} SET value = ?1, version = version + 1
                         WHERE id = ?2 AND version = ?3"
                    ))
                    .and_then(|mut s| s.execute(params![value, id, v as i64])),
            }?;
            Ok(changed == 1)
        }
    }
}

#[cfg(feature = "postgres")]
mod postgres_store {
    use super::*;
    use crate::resource::Postgres;

    type Fault = StoreFault<postgres::Error>;

    /// Decodes with the fallible getter: a table of another shape by this name (a `TEXT`
    /// version, say) is a [`ColumnTypeError`], not a panic.
    fn version(table: &TableName, row: &postgres::Row, at: usize) -> Result<u64, Fault> {
        match row.try_get::<_, i64>(at) {
            Ok(v) if v >= 0 => Ok(v as u64),
            Ok(v) => Err(StoreFault::Column(ColumnTypeError::new(
                table,
                "version",
                format_args!("the negative integer {v}"),
            ))),
            Err(e) => Err(StoreFault::Column(ColumnTypeError::new(
                table,
                "version",
                column_type(row, at, e),
            ))),
        }
    }

    fn value(table: &TableName, row: &postgres::Row, at: usize) -> Result<Vec<u8>, Fault> {
        row.try_get::<_, Vec<u8>>(at).map_err(|e| {
            StoreFault::Column(ColumnTypeError::new(
                table,
                "value",
                column_type(row, at, e),
            ))
        })
    }

    /// The column's SQL type when the driver knows it, else its error.
    fn column_type(row: &postgres::Row, at: usize, e: postgres::Error) -> String {
        match row.columns().get(at) {
            Some(c) => format!("type {} ({e})", c.type_()),
            None => e.to_string(),
        }
    }

    /// On PostgreSQL a read-only record is re-read `FOR SHARE` at commit, which keeps it
    /// from changing until the commit; a record that was absent is checked, not locked
    /// (PostgreSQL has no gap locks), so an insert can slip in between that check and the
    /// commit under `READ COMMITTED`. Ids are at most [`POSTGRES_MAX_ID_LEN`] bytes.
    impl VersionStore for Postgres {
        type StoreErr = postgres::Error;

        fn scope(&self) -> Scope {
            Scope::Hosts
        }

        fn max_id_len(&self) -> Option<usize> {
            Some(POSTGRES_MAX_ID_LEN)
        }

        fn ensure_table(
            &self,
            client: &mut postgres::Client,
            table: &TableName,
        ) -> Result<(), Fault> {
            // `table` is a validated identifier.
            crate::resource::postgres::ensure_table(
                client,
                &format!(
                    "CREATE TABLE IF NOT EXISTS {table} (
                         id TEXT PRIMARY KEY, value BYTEA NOT NULL, version BIGINT NOT NULL)"
                ),
            )?;
            Ok(())
        }

        fn read(
            &self,
            client: &mut postgres::Client,
            table: &TableName,
            id: &str,
        ) -> Result<Option<Record>, Fault> {
            let row = client.query_opt(
                &format!("SELECT value, version FROM {table} WHERE id = $1"),
                &[&id],
            )?;
            row.map(|r| {
                Ok(Record {
                    value: value(table, &r, 0)?,
                    version: version(table, &r, 1)?,
                })
            })
            .transpose()
        }

        fn still_at(
            &self,
            client: &mut postgres::Client,
            table: &TableName,
            id: &str,
            expected: Option<u64>,
        ) -> Result<bool, Fault> {
            let now = client.query_opt(
                &format!("SELECT version FROM {table} WHERE id = $1 FOR SHARE"),
                &[&id],
            )?;
            Ok(now.map(|r| version(table, &r, 0)).transpose()? == expected)
        }

        fn compare_and_set(
            &self,
            client: &mut postgres::Client,
            table: &TableName,
            id: &str,
            expected: Option<u64>,
            value: &[u8],
        ) -> Result<bool, Fault> {
            let changed = match expected {
                None => client.execute(
                    &format!(
                        "INSERT INTO {table} (id, value, version) VALUES ($1, $2, 1)
                         ON CONFLICT (id) DO NOTHING"
                    ),
                    &[&id, &value],
                )?,
                Some(v) => client.execute(
                    &format!(
                        "UPDATE {table} SET value = $1, version = version + 1
                         WHERE id = $2 AND version = $3"
                    ),
                    &[&value, &id, &(v as i64)],
                )?,
            };
            Ok(changed == 1)
        }
    }
}

#[cfg(feature = "mysql")]
mod mysql_store {
    use mysql::Row;
    use mysql::prelude::Queryable;

    use super::*;
    use crate::resource::MySql;

    type Fault = StoreFault<mysql::Error>;

    /// `ER_DUP_ENTRY`: the insert of a record believed absent found it.
    const ER_DUP_ENTRY: u16 = 1062;

    /// Decodes a column with the fallible getter (`FromRow` for a tuple panics): a table of
    /// another shape by this name (a `TEXT` version holding `'abc'`, a signed `-1`) is a
    /// [`ColumnTypeError`].
    fn column<T: mysql::prelude::FromValue>(
        table: &TableName,
        row: &Row,
        at: usize,
        name: &'static str,
    ) -> Result<T, Fault> {
        match row.get_opt::<T, usize>(at) {
            Some(Ok(v)) => Ok(v),
            Some(Err(e)) => Err(StoreFault::Column(ColumnTypeError::new(
                table,
                name,
                format_args!("{:?}", e.0),
            ))),
            None => Err(StoreFault::Column(ColumnTypeError::new(
                table,
                name,
                "no such column",
            ))),
        }
    }

    /// On MySQL a read-only record is re-read `LOCK IN SHARE MODE` at commit, which keeps
    /// it as read until the commit; when it was absent that takes a gap lock, except under
    /// `READ COMMITTED` ([`MySql::isolation`]), where InnoDB takes none and an insert can
    /// slip in before the commit, as on PostgreSQL. Ids are binary (case-sensitive), at most
    /// [`MYSQL_MAX_ID_LEN`] (255) bytes.
    impl VersionStore for MySql {
        type StoreErr = mysql::Error;

        fn scope(&self) -> Scope {
            Scope::Hosts
        }

        fn max_id_len(&self) -> Option<usize> {
            Some(MYSQL_MAX_ID_LEN)
        }

        fn ensure_table(&self, conn: &mut mysql::Conn, table: &TableName) -> Result<(), Fault> {
            // `table` is a validated identifier. DDL commits implicitly on MySQL:
            // this runs at connect, outside any transaction.
            conn.query_drop(format!(
                "CREATE TABLE IF NOT EXISTS {table} (
                     id VARBINARY(255) PRIMARY KEY, value LONGBLOB NOT NULL,
                     version BIGINT UNSIGNED NOT NULL) ENGINE = InnoDB"
            ))?;
            Ok(())
        }

        fn read(
            &self,
            conn: &mut mysql::Conn,
            table: &TableName,
            id: &str,
        ) -> Result<Option<Record>, Fault> {
            let row: Option<Row> = conn.exec_first(
                format!("SELECT value, version FROM {table} WHERE id = ?"),
                (id.as_bytes(),),
            )?;
            row.map(|r| {
                Ok(Record {
                    value: column(table, &r, 0, "value")?,
                    version: column(table, &r, 1, "version")?,
                })
            })
            .transpose()
        }

        fn still_at(
            &self,
            conn: &mut mysql::Conn,
            table: &TableName,
            id: &str,
            expected: Option<u64>,
        ) -> Result<bool, Fault> {
            let now: Option<Row> = conn.exec_first(
                format!("SELECT version FROM {table} WHERE id = ? LOCK IN SHARE MODE"),
                (id.as_bytes(),),
            )?;
            let now = now
                .map(|r| column::<u64>(table, &r, 0, "version"))
                .transpose()?;
            Ok(now == expected)
        }

        fn compare_and_set(
            &self,
            conn: &mut mysql::Conn,
            table: &TableName,
            id: &str,
            expected: Option<u64>,
            value: &[u8],
        ) -> Result<bool, Fault> {
            match expected {
                None => match conn.exec_drop(
                    format!("INSERT INTO {table} (id, value, version) VALUES (?, ?, 1)"),
                    (id.as_bytes(), value),
                ) {
                    Ok(()) => Ok(conn.affected_rows() == 1),
                    Err(mysql::Error::MySqlError(e)) if e.code == ER_DUP_ENTRY => Ok(false),
                    Err(e) => Err(e.into()),
                },
                Some(v) => {
                    conn.exec_drop(
                        format!(
                            "UPDATE {table} SET value = ?, version = version + 1
                             WHERE id = ? AND version = ?"
                        ),
                        (value, id.as_bytes(), v),
                    )?;
                    Ok(conn.affected_rows() == 1)
                }
            }
        }
    }
}
