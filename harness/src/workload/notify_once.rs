//! Notify-once (seed 004): check a notification's `sent` flag, perform its side effect,
//! set the flag. The side effect is a line appended to a log file *outside* the
//! transaction (an email, a webhook call), so a rollback cannot undo it: each
//! notification's effect must happen exactly once (at most once more per op cut off by a
//! kill). Each effect line names the op that performed it, so the checker matches
//! effects to ops one by one.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::Write;

use rusqlite::Connection;

use super::{OpEnv, OpError, Paths};
use crate::data::Tables;
#[cfg(feature = "postgres")]
use crate::data::pg;
use crate::history::OpOutput;

/// The notifications' statements on one kind of data. Notifications are numbered `0`,
/// `1`, … (their keys and versioned records are named `n0`, `n1`, …).
pub trait NotifyData {
    /// Creates the notification table (outside any transaction).
    ///
    /// # Errors
    /// When the data refuses.
    fn create_notifications(&mut self, tables: &Tables) -> Result<(), OpError>;

    /// Adds `keys` unsent notifications (inside a transaction).
    ///
    /// # Errors
    /// When the data refuses.
    fn add_notifications(&mut self, tables: &Tables, keys: usize) -> Result<(), OpError>;

    /// Whether notification `id` is marked sent.
    ///
    /// # Errors
    /// When the data refuses, or the notification does not exist.
    fn is_sent(&mut self, tables: &Tables, id: i64) -> Result<bool, OpError>;

    /// Marks notification `id` sent.
    ///
    /// # Errors
    /// When the data refuses.
    fn mark_sent(&mut self, tables: &Tables, id: i64) -> Result<(), OpError>;

    /// Every notification's flag.
    ///
    /// # Errors
    /// When the data refuses.
    fn sent_flags(&mut self, tables: &Tables, keys: usize) -> Result<BTreeMap<i64, bool>, OpError>;
}

/// Reads notification `id`'s flag, then [`send_unless`] it is set: inside one critical
/// section, the flag cannot go stale.
pub(crate) fn notify<D: NotifyData + ?Sized>(
    db: &mut D,
    t: &Tables,
    id: i64,
    op: u64,
    env: &OpEnv,
) -> Result<OpOutput, OpError> {
    let sent = db.is_sent(t, id)?;
    send_unless(db, t, id, op, sent, env)
}

/// Unless `sent`, performs notification `id`'s effect as op `op`, pauses
/// ([`OpEnv::pause`]) and sets its flag. `sent` is the flag as the caller read it:
/// [`notify`] reads it in the same section, the `notify_stale` control before it.
pub(crate) fn send_unless<D: NotifyData + ?Sized>(
    db: &mut D,
    t: &Tables,
    id: i64,
    op: u64,
    sent: bool,
    env: &OpEnv,
) -> Result<OpOutput, OpError> {
    if sent {
        return Ok(OpOutput::Notified { sent: false });
    }
    // One write(2) on an O_APPEND file: effects from several processes never interleave.
    let mut log = OpenOptions::new().append(true).open(&env.paths.effects)?;
    log.write_all(effect_line(id, op, std::process::id()).as_bytes())?;
    env.pause();
    db.mark_sent(t, id)?;
    Ok(OpOutput::Notified { sent: true })
}

/// The effect log's line for notification `id` sent by op `op` of process `pid`.
fn effect_line(id: i64, op: u64, pid: u32) -> String {
    format!("{id} {op} {pid}\n")
}

/// One line of the effect log: a notification's effect, performed once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Effect {
    /// The notification.
    pub notification: i64,
    /// The op that performed it (its id in the history).
    pub op: u64,
    /// The OS process id of the worker that ran the op.
    pub pid: u32,
}

impl Effect {
    /// Parses a line of the effect log: `NOTIFICATION OP PID`. `None` for anything else
    /// — a line of two fields among them, the log of a harness that did not name the op
    /// (nothing keeps an effect log past its run, so none is read back).
    pub fn parse(line: &str) -> Option<Effect> {
        let mut fields = line.split_whitespace();
        let effect = Effect {
            notification: fields.next()?.parse().ok()?,
            op: fields.next()?.parse().ok()?,
            pid: fields.next()?.parse().ok()?,
        };
        fields.next().is_none().then_some(effect)
    }
}

/// The flags and the side effects a notify-once run left.
#[derive(Clone, Debug, Default)]
pub struct Outcome {
    /// `sent` by notification id.
    pub sent: BTreeMap<i64, bool>,
    /// Every effect performed, in the log's order.
    pub effects: Vec<Effect>,
    /// Lines of the effect log that did not parse.
    pub garbled: Vec<String>,
}

impl Outcome {
    /// How many times each notification's effect happened.
    pub fn effect_counts(&self) -> BTreeMap<i64, usize> {
        let mut counts = BTreeMap::new();
        for e in &self.effects {
            *counts.entry(e.notification).or_default() += 1;
        }
        counts
    }
}

pub(crate) fn state<D: NotifyData + ?Sized>(
    db: &mut D,
    t: &Tables,
    paths: &Paths,
    keys: usize,
) -> Result<Outcome, OpError> {
    let mut outcome = Outcome {
        sent: db.sent_flags(t, keys)?,
        ..Outcome::default()
    };
    let log = std::fs::read_to_string(&paths.effects)?;
    for line in log.lines() {
        match Effect::parse(line) {
            Some(effect) => outcome.effects.push(effect),
            None => outcome.garbled.push(line.to_owned()),
        }
    }
    Ok(outcome)
}

impl NotifyData for Connection {
    fn create_notifications(&mut self, t: &Tables) -> Result<(), OpError> {
        self.execute_batch(&format!(
            "CREATE TABLE IF NOT EXISTS {} (id INTEGER PRIMARY KEY, sent INTEGER NOT NULL)",
            t.notification
        ))?;
        Ok(())
    }

    fn add_notifications(&mut self, t: &Tables, keys: usize) -> Result<(), OpError> {
        let mut insert = self.prepare(&format!(
            "INSERT OR IGNORE INTO {} (id, sent) VALUES (?1, 0)",
            t.notification
        ))?;
        for id in 0..keys {
            insert.execute([id as i64])?;
        }
        Ok(())
    }

    fn is_sent(&mut self, t: &Tables, id: i64) -> Result<bool, OpError> {
        Ok(self
            .prepare_cached(&format!(
                "SELECT sent FROM {} WHERE id = ?1",
                t.notification
            ))?
            .query_row([id], |r| r.get(0))?)
    }

    fn mark_sent(&mut self, t: &Tables, id: i64) -> Result<(), OpError> {
        self.prepare_cached(&format!(
            "UPDATE {} SET sent = 1 WHERE id = ?1",
            t.notification
        ))?
        .execute([id])?;
        Ok(())
    }

    fn sent_flags(&mut self, t: &Tables, _keys: usize) -> Result<BTreeMap<i64, bool>, OpError> {
        let mut stmt = self.prepare(&format!("SELECT id, sent FROM {}", t.notification))?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

#[cfg(feature = "postgres")]
impl NotifyData for postgres::Client {
    fn create_notifications(&mut self, t: &Tables) -> Result<(), OpError> {
        self.batch_execute(&format!(
            "CREATE TABLE IF NOT EXISTS {} (id BIGINT PRIMARY KEY, sent BOOLEAN NOT NULL)",
            t.notification
        ))?;
        Ok(())
    }

    fn add_notifications(&mut self, t: &Tables, keys: usize) -> Result<(), OpError> {
        self.execute(
            &format!(
                "INSERT INTO {} (id, sent) SELECT id, FALSE FROM generate_series(0::BIGINT, $1::BIGINT - 1) AS id
                 ON CONFLICT (id) DO NOTHING",
                t.notification
            ),
            &[&(keys as i64)],
        )?;
        Ok(())
    }

    fn is_sent(&mut self, t: &Tables, id: i64) -> Result<bool, OpError> {
        let sql = format!("SELECT sent FROM {} WHERE id = $1", t.notification);
        pg::one(
            self,
            &sql,
            &[(&id, pg::INT8)],
            &format!("notification {id}"),
        )
    }

    fn mark_sent(&mut self, t: &Tables, id: i64) -> Result<(), OpError> {
        let sql = format!("UPDATE {} SET sent = TRUE WHERE id = $1", t.notification);
        pg::run(self, &sql, &[(&id, pg::INT8)])
    }

    fn sent_flags(&mut self, t: &Tables, _keys: usize) -> Result<BTreeMap<i64, bool>, OpError> {
        let rows = self.query(&format!("SELECT id, sent FROM {}", t.notification), &[])?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }
}

#[cfg(feature = "mysql")]
impl NotifyData for mysql::Conn {
    fn create_notifications(&mut self, t: &Tables) -> Result<(), OpError> {
        use mysql::prelude::Queryable;
        self.query_drop(format!(
            "CREATE TABLE IF NOT EXISTS {} (id BIGINT PRIMARY KEY, sent BOOLEAN NOT NULL) ENGINE = InnoDB",
            t.notification
        ))?;
        Ok(())
    }

    fn add_notifications(&mut self, t: &Tables, keys: usize) -> Result<(), OpError> {
        use mysql::prelude::Queryable;
        self.exec_batch(
            format!(
                "INSERT IGNORE INTO {} (id, sent) VALUES (?, FALSE)",
                t.notification
            ),
            (0..keys).map(|id| (id as i64,)),
        )?;
        Ok(())
    }

    fn is_sent(&mut self, t: &Tables, id: i64) -> Result<bool, OpError> {
        use mysql::prelude::Queryable;
        self.exec_first(
            format!("SELECT sent FROM {} WHERE id = ?", t.notification),
            (id,),
        )?
        .ok_or_else(|| OpError::Missing(format!("notification {id}")))
    }

    fn mark_sent(&mut self, t: &Tables, id: i64) -> Result<(), OpError> {
        use mysql::prelude::Queryable;
        self.exec_drop(
            format!("UPDATE {} SET sent = TRUE WHERE id = ?", t.notification),
            (id,),
        )?;
        Ok(())
    }

    fn sent_flags(&mut self, t: &Tables, _keys: usize) -> Result<BTreeMap<i64, bool>, OpError> {
        use mysql::prelude::Queryable;
        Ok(self
            .query::<(i64, bool), _>(format!("SELECT id, sent FROM {}", t.notification))?
            .into_iter()
            .collect())
    }
}

#[cfg(feature = "optimistic")]
impl<S: turnstile::optimistic::VersionStore> NotifyData for turnstile::optimistic::Versioned<S> {
    fn create_notifications(&mut self, _: &Tables) -> Result<(), OpError> {
        Ok(())
    }

    fn add_notifications(&mut self, _: &Tables, keys: usize) -> Result<(), OpError> {
        for id in 0..keys {
            self.write(&format!("n{id}"), [0u8])?;
        }
        Ok(())
    }

    fn is_sent(&mut self, _: &Tables, id: i64) -> Result<bool, OpError> {
        match self.read(&format!("n{id}"))? {
            Some(flag) => Ok(flag != [0]),
            None => Err(OpError::Missing(format!("notification {id}"))),
        }
    }

    fn mark_sent(&mut self, _: &Tables, id: i64) -> Result<(), OpError> {
        self.write(&format!("n{id}"), [1u8])?;
        Ok(())
    }

    fn sent_flags(&mut self, _: &Tables, keys: usize) -> Result<BTreeMap<i64, bool>, OpError> {
        let mut flags = BTreeMap::new();
        for id in 0..keys as i64 {
            if let Some(flag) = self.read(&format!("n{id}"))? {
                flags.insert(id, flag != [0]);
            }
        }
        Ok(flags)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_effect_line_names_its_notification_op_and_process() {
        let op = (3u64 << 32) | 17;
        let line = effect_line(5, op, 4242);
        assert_eq!(
            Effect::parse(line.trim_end()),
            Some(Effect {
                notification: 5,
                op,
                pid: 4242
            })
        );
        // A line that does not name its op (the format before ops were named), or says
        // more, is not an effect.
        for bad in ["5 4242", "5 17 4242 9", "5 x 4242", "", "-"] {
            assert_eq!(Effect::parse(bad), None, "{bad:?}");
        }
    }
}
