//! Counter: read a key's value, pause, write it plus one, in separate statements. Each
//! increment returns the value it wrote, so with exclusion the values of one key are
//! unique and the final value counts every acknowledged increment.

use std::collections::BTreeMap;

use rusqlite::{Connection, params};

use super::{OpEnv, OpError};
use crate::history::OpOutput;

pub(crate) fn init(conn: &Connection, keys: usize) -> Result<(), OpError> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS counter (key TEXT PRIMARY KEY, value INTEGER NOT NULL)",
    )?;
    for i in 0..keys.max(1) {
        conn.execute(
            "INSERT OR IGNORE INTO counter (key, value) VALUES (?1, 0)",
            [format!("c{i}")],
        )?;
    }
    Ok(())
}

pub(crate) fn increment(db: &Connection, key: &str, env: &OpEnv) -> Result<OpOutput, OpError> {
    let value: i64 = db.query_row("SELECT value FROM counter WHERE key = ?1", [key], |r| {
        r.get(0)
    })?;
    env.pause();
    db.execute(
        "UPDATE counter SET value = ?1 WHERE key = ?2",
        params![value + 1, key],
    )?;
    Ok(OpOutput::Wrote { value: value + 1 })
}

pub(crate) fn values(conn: &Connection) -> Result<BTreeMap<String, i64>, OpError> {
    let mut stmt = conn.prepare("SELECT key, value FROM counter")?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}
