//! Counter: read a key's value, pause, write it plus one, in separate statements. Each
//! increment returns the value it wrote, so with exclusion the values of one key are
//! unique and the final value counts every acknowledged increment.

use std::collections::BTreeMap;

use rusqlite::{Connection, params};

use super::{OpEnv, OpError};
use crate::data::Tables;
#[cfg(feature = "postgres")]
use crate::data::pg;
use crate::history::OpOutput;

/// The counter's statements on one kind of data. Counters are named `c0`, `c1`, ….
pub trait CounterData {
    /// Creates the counter table (outside any transaction).
    ///
    /// # Errors
    /// When the data refuses.
    fn create_counters(&mut self, tables: &Tables) -> Result<(), OpError>;

    /// Sets `keys` counters to zero (inside a transaction).
    ///
    /// # Errors
    /// When the data refuses.
    fn zero_counters(&mut self, tables: &Tables, keys: usize) -> Result<(), OpError>;

    /// A counter's value.
    ///
    /// # Errors
    /// When the data refuses, or the counter does not exist.
    fn value(&mut self, tables: &Tables, key: &str) -> Result<i64, OpError>;

    /// Sets a counter's value.
    ///
    /// # Errors
    /// When the data refuses.
    fn set_value(&mut self, tables: &Tables, key: &str, value: i64) -> Result<(), OpError>;

    /// Inserts counter `key` at zero, by a plain `INSERT` that the table's primary key
    /// refuses when the counter exists (what the [`unique`](super::unique) workload's ops
    /// that fail on purpose do). Versioned records have no constraints: there the op's own
    /// check refuses it, with [`OpError::Duplicate`].
    ///
    /// # Errors
    /// The data's UNIQUE violation when the counter exists; when the data refuses.
    fn insert_counter(&mut self, tables: &Tables, key: &str) -> Result<(), OpError>;

    /// Every counter's value.
    ///
    /// # Errors
    /// When the data refuses.
    fn counters(&mut self, tables: &Tables, keys: usize) -> Result<BTreeMap<String, i64>, OpError>;
}

fn name(i: usize) -> String {
    format!("c{i}")
}

/// Reads `key`'s value, pauses ([`OpEnv::pause`]), writes it plus one: two statements.
pub(crate) fn increment<D: CounterData + ?Sized>(
    db: &mut D,
    t: &Tables,
    key: &str,
    env: &OpEnv,
) -> Result<OpOutput, OpError> {
    let value = db.value(t, key)?;
    env.pause();
    db.set_value(t, key, value + 1)?;
    Ok(OpOutput::Wrote { value: value + 1 })
}

impl CounterData for Connection {
    fn create_counters(&mut self, t: &Tables) -> Result<(), OpError> {
        self.execute_batch(&format!(
            "CREATE TABLE IF NOT EXISTS {} (key TEXT PRIMARY KEY, value INTEGER NOT NULL)",
            t.counter
        ))?;
        Ok(())
    }

    fn zero_counters(&mut self, t: &Tables, keys: usize) -> Result<(), OpError> {
        let mut insert = self.prepare(&format!(
            "INSERT OR IGNORE INTO {} (key, value) VALUES (?1, 0)",
            t.counter
        ))?;
        for i in 0..keys {
            insert.execute([name(i)])?;
        }
        Ok(())
    }

    fn value(&mut self, t: &Tables, key: &str) -> Result<i64, OpError> {
        Ok(self
            .prepare_cached(&format!("SELECT value FROM {} WHERE key = ?1", t.counter))?
            .query_row([key], |r| r.get(0))?)
    }

    fn set_value(&mut self, t: &Tables, key: &str, value: i64) -> Result<(), OpError> {
        self.prepare_cached(&format!(
            "UPDATE {} SET value = ?1 WHERE key = ?2",
            t.counter
        ))?
        .execute(params![value, key])?;
        Ok(())
    }

    fn insert_counter(&mut self, t: &Tables, key: &str) -> Result<(), OpError> {
        self.prepare_cached(&format!(
            "INSERT INTO {} (key, value) VALUES (?1, 0)",
            t.counter
        ))?
        .execute([key])?;
        Ok(())
    }

    fn counters(&mut self, t: &Tables, _keys: usize) -> Result<BTreeMap<String, i64>, OpError> {
        let mut stmt = self.prepare(&format!("SELECT key, value FROM {}", t.counter))?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

#[cfg(feature = "postgres")]
impl CounterData for postgres::Client {
    fn create_counters(&mut self, t: &Tables) -> Result<(), OpError> {
        self.batch_execute(&format!(
            "CREATE TABLE IF NOT EXISTS {} (key TEXT PRIMARY KEY, value BIGINT NOT NULL)",
            t.counter
        ))?;
        Ok(())
    }

    fn zero_counters(&mut self, t: &Tables, keys: usize) -> Result<(), OpError> {
        let insert = self.prepare(&format!(
            "INSERT INTO {} (key, value) VALUES ($1, 0) ON CONFLICT (key) DO NOTHING",
            t.counter
        ))?;
        for i in 0..keys {
            self.execute(&insert, &[&name(i)])?;
        }
        Ok(())
    }

    fn value(&mut self, t: &Tables, key: &str) -> Result<i64, OpError> {
        let sql = format!("SELECT value FROM {} WHERE key = $1", t.counter);
        pg::one(self, &sql, &[(&key, pg::TEXT)], key)
    }

    fn set_value(&mut self, t: &Tables, key: &str, value: i64) -> Result<(), OpError> {
        let sql = format!("UPDATE {} SET value = $1 WHERE key = $2", t.counter);
        pg::run(self, &sql, &[(&value, pg::INT8), (&key, pg::TEXT)])
    }

    fn insert_counter(&mut self, t: &Tables, key: &str) -> Result<(), OpError> {
        let sql = format!("INSERT INTO {} (key, value) VALUES ($1, 0)", t.counter);
        pg::run(self, &sql, &[(&key, pg::TEXT)])
    }

    fn counters(&mut self, t: &Tables, _keys: usize) -> Result<BTreeMap<String, i64>, OpError> {
        let rows = self.query(&format!("SELECT key, value FROM {}", t.counter), &[])?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }
}

#[cfg(feature = "mysql")]
impl CounterData for mysql::Conn {
    fn create_counters(&mut self, t: &Tables) -> Result<(), OpError> {
        use mysql::prelude::Queryable;
        self.query_drop(format!(
            "CREATE TABLE IF NOT EXISTS {} (`key` VARCHAR(64) PRIMARY KEY, value BIGINT NOT NULL) ENGINE = InnoDB",
            t.counter
        ))?;
        Ok(())
    }

    fn zero_counters(&mut self, t: &Tables, keys: usize) -> Result<(), OpError> {
        use mysql::prelude::Queryable;
        self.exec_batch(
            format!(
                "INSERT IGNORE INTO {} (`key`, value) VALUES (?, 0)",
                t.counter
            ),
            (0..keys).map(|i| (name(i),)),
        )?;
        Ok(())
    }

    fn value(&mut self, t: &Tables, key: &str) -> Result<i64, OpError> {
        use mysql::prelude::Queryable;
        self.exec_first(
            format!("SELECT value FROM {} WHERE `key` = ?", t.counter),
            (key,),
        )?
        .ok_or_else(|| OpError::Missing(key.to_owned()))
    }

    fn set_value(&mut self, t: &Tables, key: &str, value: i64) -> Result<(), OpError> {
        use mysql::prelude::Queryable;
        self.exec_drop(
            format!("UPDATE {} SET value = ? WHERE `key` = ?", t.counter),
            (value, key),
        )?;
        Ok(())
    }

    fn insert_counter(&mut self, t: &Tables, key: &str) -> Result<(), OpError> {
        use mysql::prelude::Queryable;
        self.exec_drop(
            format!("INSERT INTO {} (`key`, value) VALUES (?, 0)", t.counter),
            (key,),
        )?;
        Ok(())
    }

    fn counters(&mut self, t: &Tables, _keys: usize) -> Result<BTreeMap<String, i64>, OpError> {
        use mysql::prelude::Queryable;
        Ok(self
            .query::<(String, i64), _>(format!("SELECT `key`, value FROM {}", t.counter))?
            .into_iter()
            .collect())
    }
}

#[cfg(feature = "optimistic")]
impl<S: turnstile::optimistic::VersionStore> CounterData for turnstile::optimistic::Versioned<S> {
    fn create_counters(&mut self, _: &Tables) -> Result<(), OpError> {
        Ok(())
    }

    fn zero_counters(&mut self, _: &Tables, keys: usize) -> Result<(), OpError> {
        for i in 0..keys {
            self.write(&name(i), 0i64.to_le_bytes())?;
        }
        Ok(())
    }

    fn value(&mut self, _: &Tables, key: &str) -> Result<i64, OpError> {
        super::read_i64(self, key)?.ok_or_else(|| OpError::Missing(key.to_owned()))
    }

    fn set_value(&mut self, _: &Tables, key: &str, value: i64) -> Result<(), OpError> {
        self.write(key, value.to_le_bytes())?;
        Ok(())
    }

    fn insert_counter(&mut self, _: &Tables, key: &str) -> Result<(), OpError> {
        if self.read(key)?.is_some() {
            return Err(OpError::Duplicate(key.to_owned()));
        }
        self.write(key, 0i64.to_le_bytes())?;
        Ok(())
    }

    fn counters(&mut self, _: &Tables, keys: usize) -> Result<BTreeMap<String, i64>, OpError> {
        (0..keys)
            .filter_map(|i| {
                let id = name(i);
                super::read_i64(self, &id)
                    .transpose()
                    .map(|value| value.map(|v| (id, v)))
            })
            .collect()
    }
}
