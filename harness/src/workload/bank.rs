//! Bank: move money between two accounts held together (`run_many`). Money is conserved
//! and no balance goes negative; a lost update creates or destroys money.

use std::collections::BTreeMap;

use rusqlite::{Connection, params};
use turnstile::Key;

use super::{OpEnv, OpError};
use crate::history::{OpInput, OpOutput};

/// Every account's opening balance.
pub const INITIAL_BALANCE: i64 = 100;

pub(crate) fn init(conn: &Connection, keys: usize) -> Result<(), OpError> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS account (name TEXT PRIMARY KEY, balance INTEGER NOT NULL)",
    )?;
    for i in 0..keys.max(2) {
        conn.execute(
            "INSERT OR IGNORE INTO account (name, balance) VALUES (?1, ?2)",
            params![format!("a{i}"), INITIAL_BALANCE],
        )?;
    }
    Ok(())
}

pub(crate) fn next_op(rng: &mut fastrand::Rng, keys: usize) -> (Vec<Key>, OpInput) {
    let from = rng.usize(..keys);
    let to = (from + 1 + rng.usize(..keys - 1)) % keys;
    let (from, to) = (format!("a{from}"), format!("a{to}"));
    let amount = rng.i64(1..=30);
    let keys = [&from, &to]
        .iter()
        .map(|name| Key::new(name.as_str()).unwrap_or_else(|_| Key::whole()))
        .collect();
    (keys, OpInput::Transfer { from, to, amount })
}

fn balance(db: &Connection, name: &str) -> Result<i64, OpError> {
    Ok(
        db.query_row("SELECT balance FROM account WHERE name = ?1", [name], |r| {
            r.get(0)
        })?,
    )
}

pub(crate) fn transfer(
    db: &Connection,
    from: &str,
    to: &str,
    amount: i64,
    env: &OpEnv,
) -> Result<OpOutput, OpError> {
    let from_balance = balance(db, from)?;
    if from_balance < amount {
        return Ok(OpOutput::Transferred { applied: false });
    }
    // The debit is a read-modify-write with the pause inside it, as application code
    // that reads a balance, decides, and writes it back would be.
    env.pause();
    db.execute(
        "UPDATE account SET balance = ?1 WHERE name = ?2",
        params![from_balance - amount, from],
    )?;
    let to_balance = balance(db, to)?;
    db.execute(
        "UPDATE account SET balance = ?1 WHERE name = ?2",
        params![to_balance + amount, to],
    )?;
    Ok(OpOutput::Transferred { applied: true })
}

pub(crate) fn balances(conn: &Connection) -> Result<BTreeMap<String, i64>, OpError> {
    let mut stmt = conn.prepare("SELECT name, balance FROM account")?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}
