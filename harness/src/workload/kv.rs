//! Key-value (seed 002's access pattern): each op reads a record, then writes a new value
//! (unique in the run) or deletes it. With exclusion every key's history is a chain of
//! read-then-write steps, which the linearizability checker verifies.

use std::collections::BTreeMap;

use rusqlite::{Connection, OptionalExtension, params};

use super::{OpEnv, OpError};
use crate::history::OpOutput;

pub(crate) fn init(conn: &Connection) -> Result<(), OpError> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value INTEGER NOT NULL)",
    )?;
    Ok(())
}

pub(crate) fn read_write(
    db: &Connection,
    key: &str,
    write: Option<i64>,
    env: &OpEnv,
) -> Result<OpOutput, OpError> {
    let read: Option<i64> = db
        .query_row("SELECT value FROM kv WHERE key = ?1", [key], |r| r.get(0))
        .optional()?;
    env.pause();
    match write {
        Some(value) => db.execute(
            "INSERT INTO kv (key, value) VALUES (?1, ?2)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            params![key, value],
        )?,
        None => db.execute("DELETE FROM kv WHERE key = ?1", [key])?,
    };
    Ok(OpOutput::Read { value: read })
}

pub(crate) fn records(conn: &Connection) -> Result<BTreeMap<String, i64>, OpError> {
    let mut stmt = conn.prepare("SELECT key, value FROM kv")?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}
