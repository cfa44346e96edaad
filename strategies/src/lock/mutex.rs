//! An in-process lock table: one lock per name, for threads of one process.
//!
//! The table holds an entry only while a name is held or waited for, so it does not grow
//! as keys come and go. Fairness is bounded in the style of `parking_lot`: a release
//! normally lets any thread take the lock (fast: the releasing thread often takes it again
//! while its cache is warm), but at least once every [`FAIR_INTERVAL`] a release hands the
//! lock straight to the longest waiter, so nobody starves behind a barging loop.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use turnstile_core::{
    Capabilities, Error, HolderDeath, Lease, Lock, LockName, Scope, StrategyError,
};

/// At most this long between two fair hand-offs of one lock (0.5 ms, as in
/// `parking_lot`).
pub const FAIR_INTERVAL: Duration = Duration::from_micros(500);

/// The in-process lock table. Cheap to clone (clones share the table).
///
/// ```
/// use turnstile::lock::MutexLock;
/// use turnstile::{Key, Lock, LockName};
///
/// let table = MutexLock::new();
/// let name = LockName::new("db", Key::new("row-1")?);
/// let lease = table.acquire(&name, None)?;
/// assert_eq!(table.len(), 1);
/// drop(lease);
/// assert_eq!(table.len(), 0);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Default)]
pub struct MutexLock {
    table: Arc<Table>,
}

#[derive(Default)]
struct Table {
    entries: Mutex<HashMap<Box<[u8]>, Entry>>,
}

struct Entry {
    held: bool,
    waiters: VecDeque<Arc<Waiter>>,
    /// When the next release must hand off fairly.
    fair_at: Instant,
}

struct Waiter {
    /// Set (under the table mutex) when a release handed this waiter the lock.
    granted: std::sync::atomic::AtomicBool,
    /// Set (under the table mutex) when a release woke this waiter and it has not looked
    /// at the lock since: another release need not wake it again.
    notified: std::sync::atomic::AtomicBool,
    wake: Condvar,
}

impl Waiter {
    fn notify(&self) {
        use std::sync::atomic::Ordering::Relaxed;
        if !self.notified.swap(true, Relaxed) {
            self.wake.notify_one();
        }
    }
}

impl MutexLock {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many names are held or waited for right now.
    pub fn len(&self) -> usize {
        self.table.lock().len()
    }

    /// Whether no name is held or waited for.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl std::fmt::Debug for MutexLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MutexLock")
            .field("entries", &self.len())
            .finish()
    }
}

impl Table {
    fn lock(&self) -> MutexGuard<'_, HashMap<Box<[u8]>, Entry>> {
        // No user code runs under this mutex.
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn acquire(&self, name: &[u8], deadline: Option<Instant>) -> Result<(), StrategyError> {
        use std::sync::atomic::Ordering::Relaxed;
        let start = Instant::now();
        let mut entries = self.lock();
        // Looked up before inserting, so that a name already held or waited for costs no
        // allocation.
        let entry = match entries.get_mut(name) {
            Some(entry) => entry,
            None => entries.entry(name.into()).or_insert_with(|| Entry {
                held: false,
                waiters: VecDeque::new(),
                fair_at: start + fair_jitter(),
            }),
        };
        if !entry.held {
            entry.held = true;
            return Ok(());
        }
        let me = Arc::new(Waiter {
            granted: false.into(),
            notified: false.into(),
            wake: Condvar::new(),
        });
        entry.waiters.push_back(me.clone());
        loop {
            entries = match deadline {
                None => me.wake.wait(entries).unwrap_or_else(|p| p.into_inner()),
                Some(at) => {
                    let now = Instant::now();
                    if now >= at {
                        break;
                    }
                    me.wake
                        .wait_timeout(entries, at - now)
                        .unwrap_or_else(|p| p.into_inner())
                        .0
                }
            };
            if me.granted.load(Relaxed) {
                return Ok(());
            }
            me.notified.store(false, Relaxed);
            let Some(entry) = entries.get_mut(name) else {
                unreachable!("an entry with waiters is never removed")
            };
            let first = entry.waiters.front().is_some_and(|w| Arc::ptr_eq(w, &me));
            if !entry.held && first {
                entry.waiters.pop_front();
                entry.held = true;
                return Ok(());
            }
        }
        // Timed out. A hand-off may have raced the timeout: then we hold it after all.
        if me.granted.load(Relaxed) {
            return Ok(());
        }
        let Some(entry) = entries.get_mut(name) else {
            unreachable!("an entry with waiters is never removed")
        };
        entry.waiters.retain(|w| !Arc::ptr_eq(w, &me));
        if !entry.held {
            if let Some(next) = entry.waiters.front() {
                // We may have swallowed the wake-up meant for the new front waiter.
                next.notify();
            } else {
                entries.remove(name);
            }
        }
        Err(Error::Timeout {
            waited: start.elapsed(),
        })
    }

    fn release(&self, name: &[u8]) {
        use std::sync::atomic::Ordering::Relaxed;
        let mut entries = self.lock();
        let Some(entry) = entries.get_mut(name) else {
            return;
        };
        let Some(next) = entry.waiters.front().cloned() else {
            entries.remove(name);
            return;
        };
        let now = Instant::now();
        if now >= entry.fair_at {
            // Fair hand-off: the lock never becomes free, so nobody can barge in.
            entry.waiters.pop_front();
            next.granted.store(true, Relaxed);
            entry.fair_at = now + fair_jitter();
        } else {
            entry.held = false;
        }
        // A front waiter woken by an earlier release and not yet running needs no second
        // wake-up: it will find the lock free (or granted) when it runs.
        next.notify();
    }
}

fn fair_jitter() -> Duration {
    // Randomised so that locks released in lockstep do not all turn fair together.
    Duration::from_nanos(fastrand::u64(0..FAIR_INTERVAL.as_nanos() as u64))
}

/// A lease on a [`MutexLock`] name. Released on drop.
#[must_use = "the lock is released as soon as the lease is dropped"]
pub struct MutexLease {
    table: Arc<Table>,
    name: Box<[u8]>,
}

impl std::fmt::Debug for MutexLease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MutexLease").finish_non_exhaustive()
    }
}

impl Lease for MutexLease {}

impl Drop for MutexLease {
    fn drop(&mut self) {
        self.table.release(&self.name);
    }
}

impl Lock for MutexLock {
    type Lease = MutexLease;

    fn capabilities(&self) -> Capabilities {
        Capabilities::new(Scope::Threads, HolderDeath::SameProcess)
    }

    fn backend_id(&self) -> &str {
        "mutex"
    }

    fn acquire(
        &self,
        name: &LockName,
        deadline: Option<Instant>,
    ) -> Result<MutexLease, StrategyError> {
        self.table.acquire(name.bytes(), deadline)?;
        Ok(MutexLease {
            table: self.table.clone(),
            name: name.bytes().into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use turnstile_core::Key;

    fn name(s: &str) -> LockName {
        LockName::new("t", Key::new(s).unwrap())
    }

    #[test]
    fn excludes_and_times_out() {
        let table = MutexLock::new();
        let held = table.acquire(&name("a"), None).unwrap();
        let err = table
            .acquire(&name("a"), Some(Instant::now() + Duration::from_millis(20)))
            .unwrap_err();
        assert!(matches!(err, Error::Timeout { .. }));
        // Another name is independent.
        let other = table.acquire(&name("b"), Some(Instant::now())).unwrap();
        drop((held, other));
        assert!(table.is_empty());
    }

    #[test]
    fn zero_deadline_tries_once() {
        let table = MutexLock::new();
        let _held = table.acquire(&name("a"), None).unwrap();
        assert!(table.acquire(&name("a"), Some(Instant::now())).is_err());
    }
}
