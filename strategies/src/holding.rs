//! The locks that ops running on this thread hold, so that a strategy can refuse an op
//! that calls back into it for a lock its own call holds ([`Error::Reentrant`]): waiting
//! would wait for itself, until the deadline or forever.
//!
//! [`Error::Reentrant`]: turnstile_core::Error::Reentrant

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};

thread_local! {
    /// The locks held on this thread while an op runs: whose (an owner from
    /// [`new_owner`]) and which (the owner's own bytes for it).
    static HOLDING: RefCell<Vec<(u64, Vec<u8>)>> = const { RefCell::new(Vec::new()) };
}

/// A number no other owner has, to tell its locks apart from others'.
pub(crate) fn new_owner() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Whether an op running on this thread holds one of `keys` of `owner`.
pub(crate) fn holds(owner: u64, keys: &[Vec<u8>]) -> bool {
    HOLDING.with_borrow(|held| {
        held.iter()
            .any(|(whose, key)| *whose == owner && keys.contains(key))
    })
}

/// Records locks as held while an op runs; forgets them when dropped, on a panic too.
/// Nested calls on one thread end in the reverse order of their start, so each forgets
/// exactly what it recorded.
pub(crate) struct Holding {
    before: usize,
}

impl Holding {
    /// Records `keys` of `owner` as held until the result is dropped.
    pub(crate) fn enter(owner: u64, keys: Vec<Vec<u8>>) -> Self {
        HOLDING.with_borrow_mut(|held| {
            let before = held.len();
            held.extend(keys.into_iter().map(|key| (owner, key)));
            Holding { before }
        })
    }
}

impl Drop for Holding {
    fn drop(&mut self) {
        HOLDING.with_borrow_mut(|held| held.truncate(self.before));
    }
}
