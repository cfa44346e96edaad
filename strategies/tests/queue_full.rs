//! Every test of `queue.rs` again over SQLite with `synchronous = FULL`, where group commit
//! overlaps each batch's flush with the next batch (`QueueBuilder::overlap_flush`), so
//! answers come from the flushing thread.
#![cfg(all(feature = "queue", feature = "sqlite"))]

use turnstile::sqlite::Synchronous;

/// Read by `queue.rs`'s `db` as `crate::SYNC`.
const SYNC: Synchronous = Synchronous::Full;

#[path = "queue.rs"]
mod with_full_sync;
