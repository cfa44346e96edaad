//! Every test of `queue.rs` again over SQLite with `synchronous = FULL`, and group commit
//! overlapping each batch's flush with the next batch (`QueueBuilder::overlap_flush`), so
//! answers come from the flushing thread.
#![cfg(all(feature = "queue", feature = "sqlite"))]

use turnstile::sqlite::Synchronous;

/// Read by `queue.rs`'s `db` as `crate::SYNC`.
const SYNC: Synchronous = Synchronous::Full;
/// Read by `queue.rs`'s `builder` as `crate::OVERLAP`.
const OVERLAP: bool = true;

#[path = "queue.rs"]
mod with_full_sync;
