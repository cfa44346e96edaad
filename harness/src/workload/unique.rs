//! Unique (seed 001's integrity error): counter increments, one op in four of which then
//! inserts its counter's row again, which the table's primary key refuses. That op fails
//! with its own error — the data's UNIQUE violation — after its increment, on purpose.
//!
//! Seed 001 moved every database call onto one consumer thread and found it had to hand
//! the callers their errors too ("there are exceptions that I do want to let the caller
//! know about, for example if an integrity constraint is violated"). So each such op must
//! come back to its caller as that error (the [`own_error`](crate::check::own_error)
//! checker), and must roll back alone: its increment undone, every other op's kept, also
//! when a queue commits it in one transaction with others (`lost_update` counts both: a
//! failed op's increment that stayed raises the final value above what the acknowledged
//! and unknown ops allow; a batch rolled back with it loses acknowledged increments).
//!
//! Which ops fail is a function of the op's id ([`fails_on_purpose`]), so the checker
//! knows them from the history alone. Its state and statements are the counter's.

use super::counter::{self, CounterData};
use super::{OpEnv, OpError};
use crate::data::Tables;
use crate::history::OpOutput;

/// One op in this many fails on purpose.
pub const ONE_IN: u64 = 4;

/// Whether op `id` fails on purpose: the last of every [`ONE_IN`] ops of its process (an
/// op id is the process index in its high 32 bits and a sequence number in the low ones).
pub fn fails_on_purpose(id: u64) -> bool {
    (id & 0xffff_ffff) % ONE_IN == ONE_IN - 1
}

/// Op `id` on counter `key`: an increment ([`counter::increment`]), then, when it
/// [fails on purpose](fails_on_purpose), an `INSERT` of the counter's row, which exists.
pub(crate) fn increment<D: CounterData + ?Sized>(
    db: &mut D,
    t: &Tables,
    key: &str,
    id: u64,
    env: &OpEnv,
) -> Result<OpOutput, OpError> {
    let out = counter::increment(db, t, key, env)?;
    if fails_on_purpose(id) {
        db.insert_counter(t, key)?;
    }
    Ok(out)
}
