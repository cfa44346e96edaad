//! Bank: move money between two accounts held together (`run_many`). Money is conserved
//! and no balance goes negative; a lost update creates or destroys money.

use std::collections::BTreeMap;

use rusqlite::{Connection, params};
use turnstile::Key;

use super::{OpEnv, OpError};
use crate::data::Tables;
#[cfg(feature = "postgres")]
use crate::data::pg;
use crate::history::{OpInput, OpOutput};

/// Every account's opening balance.
pub const INITIAL_BALANCE: i64 = 100;

pub(crate) fn next_op(rng: &mut fastrand::Rng, keys: usize) -> (Vec<Key>, OpInput) {
    let from = rng.usize(..keys);
    let to = (from + 1 + rng.usize(..keys - 1)) % keys;
    let (from, to) = (name(from), name(to));
    let amount = rng.i64(1..=30);
    let keys = [&from, &to]
        .iter()
        .map(|name| Key::new(name.as_str()).unwrap_or_else(|_| Key::whole()))
        .collect();
    (keys, OpInput::Transfer { from, to, amount })
}

fn name(i: usize) -> String {
    format!("a{i}")
}

/// The bank's statements on one kind of data. Accounts are named `a0`, `a1`, ….
pub trait BankData {
    /// Creates the account table (outside any transaction).
    ///
    /// # Errors
    /// When the data refuses.
    fn create_accounts(&mut self, tables: &Tables) -> Result<(), OpError>;

    /// Opens `keys` accounts with [`INITIAL_BALANCE`] each (inside a transaction).
    ///
    /// # Errors
    /// When the data refuses.
    fn open_accounts(&mut self, tables: &Tables, keys: usize) -> Result<(), OpError>;

    /// An account's balance.
    ///
    /// # Errors
    /// When the data refuses, or the account does not exist.
    fn balance(&mut self, tables: &Tables, name: &str) -> Result<i64, OpError>;

    /// Sets an account's balance.
    ///
    /// # Errors
    /// When the data refuses.
    fn set_balance(&mut self, tables: &Tables, name: &str, balance: i64) -> Result<(), OpError>;

    /// Every account's balance.
    ///
    /// # Errors
    /// When the data refuses.
    fn balances(&mut self, tables: &Tables, keys: usize) -> Result<BTreeMap<String, i64>, OpError>;
}

/// Moves `amount` from `from` to `to` if `from` has it: the debit is a read-modify-write
/// with the pause inside it, as application code that reads a balance, decides, and
/// writes it back would be.
pub(crate) fn transfer<D: BankData + ?Sized>(
    db: &mut D,
    t: &Tables,
    from: &str,
    to: &str,
    amount: i64,
    env: &OpEnv,
) -> Result<OpOutput, OpError> {
    let from_balance = db.balance(t, from)?;
    if from_balance < amount {
        return Ok(OpOutput::Transferred { applied: false });
    }
    env.pause();
    db.set_balance(t, from, from_balance - amount)?;
    let to_balance = db.balance(t, to)?;
    db.set_balance(t, to, to_balance + amount)?;
    Ok(OpOutput::Transferred { applied: true })
}

impl BankData for Connection {
    fn create_accounts(&mut self, t: &Tables) -> Result<(), OpError> {
        self.execute_batch(&format!(
            "CREATE TABLE IF NOT EXISTS {} (name TEXT PRIMARY KEY, balance INTEGER NOT NULL)",
            t.account
        ))?;
        Ok(())
    }

    fn open_accounts(&mut self, t: &Tables, keys: usize) -> Result<(), OpError> {
        let mut insert = self.prepare(&format!(
            "INSERT OR IGNORE INTO {} (name, balance) VALUES (?1, ?2)",
            t.account
        ))?;
        for i in 0..keys {
            insert.execute(params![name(i), INITIAL_BALANCE])?;
        }
        Ok(())
    }

    fn balance(&mut self, t: &Tables, name: &str) -> Result<i64, OpError> {
        Ok(self
            .prepare_cached(&format!(
                "SELECT balance FROM {} WHERE name = ?1",
                t.account
            ))?
            .query_row([name], |r| r.get(0))?)
    }

    fn set_balance(&mut self, t: &Tables, name: &str, balance: i64) -> Result<(), OpError> {
        self.prepare_cached(&format!(
            "UPDATE {} SET balance = ?1 WHERE name = ?2",
            t.account
        ))?
        .execute(params![balance, name])?;
        Ok(())
    }

    fn balances(&mut self, t: &Tables, _keys: usize) -> Result<BTreeMap<String, i64>, OpError> {
        let mut stmt = self.prepare(&format!("SELECT name, balance FROM {}", t.account))?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

#[cfg(feature = "postgres")]
impl BankData for postgres::Client {
    fn create_accounts(&mut self, t: &Tables) -> Result<(), OpError> {
        self.batch_execute(&format!(
            "CREATE TABLE IF NOT EXISTS {} (name TEXT PRIMARY KEY, balance BIGINT NOT NULL)",
            t.account
        ))?;
        Ok(())
    }

    fn open_accounts(&mut self, t: &Tables, keys: usize) -> Result<(), OpError> {
        let insert = self.prepare(&format!(
            "INSERT INTO {} (name, balance) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
            t.account
        ))?;
        for i in 0..keys {
            self.execute(&insert, &[&name(i), &INITIAL_BALANCE])?;
        }
        Ok(())
    }

    fn balance(&mut self, t: &Tables, name: &str) -> Result<i64, OpError> {
        let sql = format!("SELECT balance FROM {} WHERE name = $1", t.account);
        pg::one(self, &sql, &[(&name, pg::TEXT)], name)
    }

    fn set_balance(&mut self, t: &Tables, name: &str, balance: i64) -> Result<(), OpError> {
        let sql = format!("UPDATE {} SET balance = $1 WHERE name = $2", t.account);
        pg::run(self, &sql, &[(&balance, pg::INT8), (&name, pg::TEXT)])
    }

    fn balances(&mut self, t: &Tables, _keys: usize) -> Result<BTreeMap<String, i64>, OpError> {
        let rows = self.query(&format!("SELECT name, balance FROM {}", t.account), &[])?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }
}

#[cfg(feature = "mysql")]
impl BankData for mysql::Conn {
    fn create_accounts(&mut self, t: &Tables) -> Result<(), OpError> {
        use mysql::prelude::Queryable;
        self.query_drop(format!(
            "CREATE TABLE IF NOT EXISTS {} (name VARCHAR(64) PRIMARY KEY, balance BIGINT NOT NULL) ENGINE = InnoDB",
            t.account
        ))?;
        Ok(())
    }

    fn open_accounts(&mut self, t: &Tables, keys: usize) -> Result<(), OpError> {
        use mysql::prelude::Queryable;
        self.exec_batch(
            format!(
                "INSERT IGNORE INTO {} (name, balance) VALUES (?, ?)",
                t.account
            ),
            (0..keys).map(|i| (name(i), INITIAL_BALANCE)),
        )?;
        Ok(())
    }

    fn balance(&mut self, t: &Tables, name: &str) -> Result<i64, OpError> {
        use mysql::prelude::Queryable;
        self.exec_first(
            format!("SELECT balance FROM {} WHERE name = ?", t.account),
            (name,),
        )?
        .ok_or_else(|| OpError::Missing(name.to_owned()))
    }

    fn set_balance(&mut self, t: &Tables, name: &str, balance: i64) -> Result<(), OpError> {
        use mysql::prelude::Queryable;
        self.exec_drop(
            format!("UPDATE {} SET balance = ? WHERE name = ?", t.account),
            (balance, name),
        )?;
        Ok(())
    }

    fn balances(&mut self, t: &Tables, _keys: usize) -> Result<BTreeMap<String, i64>, OpError> {
        use mysql::prelude::Queryable;
        Ok(self
            .query::<(String, i64), _>(format!("SELECT name, balance FROM {}", t.account))?
            .into_iter()
            .collect())
    }
}

#[cfg(feature = "optimistic")]
impl<S: turnstile::optimistic::VersionStore> BankData for turnstile::optimistic::Versioned<S> {
    fn create_accounts(&mut self, _: &Tables) -> Result<(), OpError> {
        Ok(())
    }

    fn open_accounts(&mut self, _: &Tables, keys: usize) -> Result<(), OpError> {
        for i in 0..keys {
            self.write(&name(i), INITIAL_BALANCE.to_le_bytes())?;
        }
        Ok(())
    }

    fn balance(&mut self, _: &Tables, name: &str) -> Result<i64, OpError> {
        super::read_i64(self, name)?.ok_or_else(|| OpError::Missing(name.to_owned()))
    }

    fn set_balance(&mut self, _: &Tables, name: &str, balance: i64) -> Result<(), OpError> {
        self.write(name, balance.to_le_bytes())?;
        Ok(())
    }

    fn balances(&mut self, _: &Tables, keys: usize) -> Result<BTreeMap<String, i64>, OpError> {
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
