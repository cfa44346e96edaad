//! Key-value (seed 002's access pattern): each op reads a record, then writes a new value
//! (unique in the run) or deletes it. With exclusion every key's history is a chain of
//! read-then-write steps, which the linearizability checker verifies.

use std::collections::BTreeMap;

use rusqlite::{Connection, OptionalExtension, params};

use super::{OpEnv, OpError};
use crate::data::Tables;
#[cfg(feature = "postgres")]
use crate::data::pg;
use crate::history::OpOutput;

/// The key-value statements on one kind of data. Records are named `k0`, `k1`, … and
/// start absent.
pub trait KvData {
    /// Creates the record table (outside any transaction).
    ///
    /// # Errors
    /// When the data refuses.
    fn create_records(&mut self, tables: &Tables) -> Result<(), OpError>;

    /// A record's value, `None` when absent.
    ///
    /// # Errors
    /// When the data refuses.
    fn get(&mut self, tables: &Tables, key: &str) -> Result<Option<i64>, OpError>;

    /// Writes a record's value, or deletes it (`None`).
    ///
    /// # Errors
    /// When the data refuses.
    fn put(&mut self, tables: &Tables, key: &str, value: Option<i64>) -> Result<(), OpError>;

    /// Every record present.
    ///
    /// # Errors
    /// When the data refuses.
    fn records(&mut self, tables: &Tables, keys: usize) -> Result<BTreeMap<String, i64>, OpError>;
}

pub(crate) fn read_write<D: KvData + ?Sized>(
    db: &mut D,
    t: &Tables,
    key: &str,
    write: Option<i64>,
    env: &OpEnv,
) -> Result<OpOutput, OpError> {
    let read = db.get(t, key)?;
    env.pause();
    db.put(t, key, write)?;
    Ok(OpOutput::Read { value: read })
}

impl KvData for Connection {
    fn create_records(&mut self, t: &Tables) -> Result<(), OpError> {
        self.execute_batch(&format!(
            "CREATE TABLE IF NOT EXISTS {} (key TEXT PRIMARY KEY, value INTEGER NOT NULL)",
            t.kv
        ))?;
        Ok(())
    }

    fn get(&mut self, t: &Tables, key: &str) -> Result<Option<i64>, OpError> {
        Ok(self
            .prepare_cached(&format!("SELECT value FROM {} WHERE key = ?1", t.kv))?
            .query_row([key], |r| r.get(0))
            .optional()?)
    }

    fn put(&mut self, t: &Tables, key: &str, value: Option<i64>) -> Result<(), OpError> {
        match value {
            Some(value) => self
                .prepare_cached(&format!(
                    "INSERT INTO {} (key, value) VALUES (?1, ?2)
                     ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    t.kv
                ))?
                .execute(params![key, value])?,
            None => self
                .prepare_cached(&format!("DELETE FROM {} WHERE key = ?1", t.kv))?
                .execute([key])?,
        };
        Ok(())
    }

    fn records(&mut self, t: &Tables, _keys: usize) -> Result<BTreeMap<String, i64>, OpError> {
        let mut stmt = self.prepare(&format!("SELECT key, value FROM {}", t.kv))?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

#[cfg(feature = "postgres")]
impl KvData for postgres::Client {
    fn create_records(&mut self, t: &Tables) -> Result<(), OpError> {
        self.batch_execute(&format!(
            "CREATE TABLE IF NOT EXISTS {} (key TEXT PRIMARY KEY, value BIGINT NOT NULL)",
            t.kv
        ))?;
        Ok(())
    }

    fn get(&mut self, t: &Tables, key: &str) -> Result<Option<i64>, OpError> {
        let sql = format!("SELECT value FROM {} WHERE key = $1", t.kv);
        pg::opt(self, &sql, &[(&key, pg::TEXT)])
    }

    fn put(&mut self, t: &Tables, key: &str, value: Option<i64>) -> Result<(), OpError> {
        match value {
            Some(value) => {
                let sql = format!(
                    "INSERT INTO {} (key, value) VALUES ($1, $2)
                     ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                    t.kv
                );
                pg::run(self, &sql, &[(&key, pg::TEXT), (&value, pg::INT8)])
            }
            None => {
                let sql = format!("DELETE FROM {} WHERE key = $1", t.kv);
                pg::run(self, &sql, &[(&key, pg::TEXT)])
            }
        }
    }

    fn records(&mut self, t: &Tables, _keys: usize) -> Result<BTreeMap<String, i64>, OpError> {
        let rows = self.query(&format!("SELECT key, value FROM {}", t.kv), &[])?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }
}

#[cfg(feature = "mysql")]
impl KvData for mysql::Conn {
    fn create_records(&mut self, t: &Tables) -> Result<(), OpError> {
        use mysql::prelude::Queryable;
        self.query_drop(format!(
            "CREATE TABLE IF NOT EXISTS {} (`key` VARCHAR(64) PRIMARY KEY, value BIGINT NOT NULL) ENGINE = InnoDB",
            t.kv
        ))?;
        Ok(())
    }

    fn get(&mut self, t: &Tables, key: &str) -> Result<Option<i64>, OpError> {
        use mysql::prelude::Queryable;
        Ok(self.exec_first(
            format!("SELECT value FROM {} WHERE `key` = ?", t.kv),
            (key,),
        )?)
    }

    fn put(&mut self, t: &Tables, key: &str, value: Option<i64>) -> Result<(), OpError> {
        use mysql::prelude::Queryable;
        match value {
            Some(value) => self.exec_drop(
                format!(
                    "INSERT INTO {} (`key`, value) VALUES (?, ?)
                     ON DUPLICATE KEY UPDATE value = VALUES(value)",
                    t.kv
                ),
                (key, value),
            )?,
            None => self.exec_drop(format!("DELETE FROM {} WHERE `key` = ?", t.kv), (key,))?,
        };
        Ok(())
    }

    fn records(&mut self, t: &Tables, _keys: usize) -> Result<BTreeMap<String, i64>, OpError> {
        use mysql::prelude::Queryable;
        Ok(self
            .query::<(String, i64), _>(format!("SELECT `key`, value FROM {}", t.kv))?
            .into_iter()
            .collect())
    }
}

/// Versioned records have no delete: a deleted record holds an empty value.
#[cfg(feature = "optimistic")]
impl<S: turnstile::optimistic::VersionStore> KvData for turnstile::optimistic::Versioned<S> {
    fn create_records(&mut self, _: &Tables) -> Result<(), OpError> {
        Ok(())
    }

    fn get(&mut self, _: &Tables, key: &str) -> Result<Option<i64>, OpError> {
        super::read_i64(self, key)
    }

    fn put(&mut self, _: &Tables, key: &str, value: Option<i64>) -> Result<(), OpError> {
        match value {
            Some(value) => self.write(key, value.to_le_bytes())?,
            None => self.write(key, Vec::new())?,
        }
        Ok(())
    }

    fn records(&mut self, _: &Tables, keys: usize) -> Result<BTreeMap<String, i64>, OpError> {
        (0..keys)
            .filter_map(|i| {
                let id = format!("k{i}");
                super::read_i64(self, &id)
                    .transpose()
                    .map(|value| value.map(|v| (id, v)))
            })
            .collect()
    }
}
