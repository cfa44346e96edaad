//! Stopping runs early, on the user's word.
//!
//! The `turnstile` CLI calls [`request`] on its first `SIGINT`, `SIGTERM` or `SIGHUP`.
//! From then on a [`run`](crate::run()) in this process starts no new op: its threads
//! stop before their next op, its worker processes are killed, and it ends with
//! [`RunError::Interrupted`](crate::RunError::Interrupted) through its ordinary clean-up
//! (its temporary directory removed, its tables on a server dropped). A
//! [`compare`](crate::compare::compare()) runs no further setting and reports the
//! settings that finished. A library caller may call [`request`] too; nothing resets it.
//!
//! Worker processes need nothing of this: each one ends when its parent closes its
//! stdin, which the kernel does when the parent dies, however it dies.
use std::sync::atomic::{AtomicI32, Ordering};

/// The signal that asked to stop; 0 while none has.
static REQUESTED: AtomicI32 = AtomicI32::new(0);

/// Asks every run in this process to stop early, for `signal` (its number: a run ends
/// with [`RunError::Interrupted`](crate::RunError::Interrupted) carrying it). The first
/// request is the one kept.
pub fn request(signal: i32) {
    let _ = REQUESTED.compare_exchange(0, signal.max(1), Ordering::SeqCst, Ordering::SeqCst);
}

/// The signal of the first [`request`], if any came.
pub fn requested() -> Option<i32> {
    match REQUESTED.load(Ordering::Relaxed) {
        0 => None,
        signal => Some(signal),
    }
}
