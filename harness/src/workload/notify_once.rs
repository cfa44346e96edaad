//! Notify-once (seed 004): check a notification's `sent` flag, perform its side effect,
//! set the flag. The side effect is a line appended to a log file *outside* the
//! transaction (an email, a webhook call), so a rollback cannot undo it: each
//! notification's effect must happen exactly once (at most once more per op cut off by a
//! kill).

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::Write;

use rusqlite::Connection;

use super::{OpEnv, OpError, Paths};
use crate::history::OpOutput;

pub(crate) fn init(conn: &Connection, paths: &Paths, keys: usize) -> Result<(), OpError> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS notification (id INTEGER PRIMARY KEY, sent INTEGER NOT NULL)",
    )?;
    for id in 0..keys.max(1) {
        conn.execute(
            "INSERT OR IGNORE INTO notification (id, sent) VALUES (?1, 0)",
            [id as i64],
        )?;
    }
    std::fs::File::create(&paths.effects)?;
    Ok(())
}

pub(crate) fn notify(db: &Connection, id: i64, env: &OpEnv) -> Result<OpOutput, OpError> {
    let sent: bool = db.query_row("SELECT sent FROM notification WHERE id = ?1", [id], |r| {
        r.get(0)
    })?;
    if sent {
        return Ok(OpOutput::Notified { sent: false });
    }
    // One write(2) on an O_APPEND file: effects from several processes never interleave.
    let mut log = OpenOptions::new().append(true).open(&env.paths.effects)?;
    log.write_all(format!("{id} {}\n", std::process::id()).as_bytes())?;
    env.pause();
    db.execute("UPDATE notification SET sent = 1 WHERE id = ?1", [id])?;
    Ok(OpOutput::Notified { sent: true })
}

/// The flags and the side effects a notify-once run left.
#[derive(Clone, Debug, Default)]
pub struct Outcome {
    /// `sent` by notification id.
    pub sent: BTreeMap<i64, bool>,
    /// How many times each notification's effect happened.
    pub effects: BTreeMap<i64, usize>,
    /// Lines of the effect log that did not parse.
    pub garbled: Vec<String>,
}

pub(crate) fn state(conn: &Connection, paths: &Paths) -> Result<Outcome, OpError> {
    let mut stmt = conn.prepare("SELECT id, sent FROM notification")?;
    let sent = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    let mut outcome = Outcome {
        sent,
        ..Outcome::default()
    };
    let log = std::fs::read_to_string(&paths.effects)?;
    for line in log.lines() {
        match line.split_whitespace().next().map(str::parse::<i64>) {
            Some(Ok(id)) => *outcome.effects.entry(id).or_default() += 1,
            _ => outcome.garbled.push(line.to_owned()),
        }
    }
    Ok(outcome)
}
