//! Lease state and the watchdog that renews leases while their ops run.
//!
//! One watchdog thread per lock object (started with the first renewed lease) keeps every
//! live lease of that object alive: every renewal period it extends the lease, moving its
//! local validity forward; when an extension is refused (the lease is someone else's now)
//! the lease is marked lost at once; when the server can't be reached, the watchdog keeps
//! trying until the validity runs out, and from then on [`LeaseState::check`] fails.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use turnstile_core::{Error, StrategyError};

use super::node::Keys;

/// The state of one lease, shared by the lease and the watchdog.
pub(super) struct LeaseState {
    pub(super) keys: Keys,
    pub(super) token: String,
    /// Until when the lease is surely ours (local monotonic clock, drift subtracted).
    valid_until: Mutex<Instant>,
    /// Set when an extension was refused or the lease was released.
    lost: AtomicBool,
    released: AtomicBool,
    renewals: AtomicU32,
}

impl LeaseState {
    pub(super) fn new(keys: Keys, token: String, valid_until: Instant) -> Arc<Self> {
        Arc::new(LeaseState {
            keys,
            token,
            valid_until: Mutex::new(valid_until),
            lost: AtomicBool::new(false),
            released: AtomicBool::new(false),
            renewals: AtomicU32::new(0),
        })
    }

    pub(super) fn valid_until(&self) -> Instant {
        *self.valid_until.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set_valid_until(&self, at: Instant) {
        let mut v = self.valid_until.lock().unwrap_or_else(|p| p.into_inner());
        // Never move it back: a slow reply to an earlier extension must not shorten a later one.
        if at > *v {
            *v = at;
        }
    }

    pub(super) fn mark_lost(&self) {
        self.lost.store(true, Ordering::Release);
    }

    /// Marks the lease released (the watchdog stops renewing it). Returns whether it was
    /// still unreleased.
    pub(super) fn mark_released(&self) -> bool {
        !self.released.swap(true, Ordering::AcqRel)
    }

    pub(super) fn is_released(&self) -> bool {
        self.released.load(Ordering::Acquire)
    }

    /// How many times the watchdog extended it.
    pub(super) fn renewals(&self) -> u32 {
        self.renewals.load(Ordering::Relaxed)
    }

    /// [`Error::LeaseLost`] when an extension was refused or the validity ran out.
    pub(super) fn check(&self) -> Result<(), StrategyError> {
        if self.lost.load(Ordering::Acquire) || Instant::now() >= self.valid_until() {
            Err(Error::LeaseLost)
        } else {
            Ok(())
        }
    }
}

/// What one renewal attempt found.
pub(super) enum Renewal {
    /// Extended; valid until then.
    Extended(Instant),
    /// Refused: the lease is not ours any more.
    Lost,
    /// The server(s) could not be reached; try again soon.
    Failed,
}

/// Renews one lease (one server, or a Redlock quorum).
pub(super) type Renew = dyn Fn(&LeaseState) -> Renewal + Send + Sync;

pub(super) struct Watchdog {
    shared: Arc<Shared>,
}

struct Shared {
    entries: Mutex<Entries>,
    changed: Condvar,
    period: Duration,
    max_renewals: u32,
    renew: Box<Renew>,
}

#[derive(Default)]
struct Entries {
    list: Vec<(Weak<LeaseState>, Instant)>,
    started: bool,
    stopped: bool,
    /// When the sleeping watchdog thread wakes by itself; `None` while it is awake (or
    /// not started). A lease due no earlier needs no wake-up call: on two cores, waking
    /// the thread at every acquire cost a context switch per lease.
    wakes_at: Option<Instant>,
}

impl Watchdog {
    pub(super) fn new(period: Duration, max_renewals: u32, renew: Box<Renew>) -> Self {
        Watchdog {
            shared: Arc::new(Shared {
                entries: Mutex::new(Entries::default()),
                changed: Condvar::new(),
                period,
                max_renewals,
                renew,
            }),
        }
    }

    /// Starts renewing `lease` one period after `acquired`.
    pub(super) fn watch(&self, lease: &Arc<LeaseState>, acquired: Instant) {
        let due = acquired + self.shared.period;
        let mut entries = self.shared.entries();
        entries.list.push((Arc::downgrade(lease), due));
        if !std::mem::replace(&mut entries.started, true) {
            let shared = Arc::downgrade(&self.shared);
            let spawned = std::thread::Builder::new()
                .name("turnstile-redis-watchdog".into())
                .spawn(move || run(&shared));
            if spawned.is_err() {
                // No watchdog: leases simply run out at their TTL and check() says so.
                entries.started = false;
            }
            return;
        }
        // An awake watchdog looks at the whole list before it sleeps again.
        if entries.wakes_at.is_some_and(|at| due < at) {
            entries.wakes_at = None;
            self.shared.changed.notify_one();
        }
    }

    /// Stops renewing `lease` (released): drops its entry now rather than at the
    /// watchdog's next pass, so the list holds only live leases.
    pub(super) fn unwatch(&self, lease: &Arc<LeaseState>) {
        let mut entries = self.shared.entries();
        // The newest entries are at the end, and a lease is mostly released soon.
        if let Some(i) = entries
            .list
            .iter()
            .rposition(|(l, _)| l.as_ptr() == Arc::as_ptr(lease))
        {
            entries.list.swap_remove(i);
        }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.shared.entries().stopped = true;
        self.shared.changed.notify_one();
    }
}

impl Shared {
    fn entries(&self) -> MutexGuard<'_, Entries> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn run(shared: &Weak<Shared>) {
    loop {
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let mut due = Vec::new();
        {
            let mut entries = shared.entries();
            if entries.stopped {
                return;
            }
            let now = Instant::now();
            entries
                .list
                .retain(|(lease, _)| lease.upgrade().is_some_and(|l| !l.is_released()));
            let mut next = now + Duration::from_secs(1);
            for (lease, at) in &entries.list {
                if *at <= now {
                    if let Some(l) = lease.upgrade() {
                        due.push(l);
                    }
                } else {
                    next = next.min(*at);
                }
            }
            if due.is_empty() {
                let wait = next.saturating_duration_since(now);
                entries.wakes_at = Some(next);
                let (mut entries, _) = shared
                    .changed
                    .wait_timeout(entries, wait)
                    .unwrap_or_else(|p| p.into_inner());
                entries.wakes_at = None;
                continue;
            }
        }
        for lease in due {
            let next = renew_one(&shared, &lease);
            let mut entries = shared.entries();
            for (l, at) in entries.list.iter_mut() {
                if l.as_ptr() == Arc::as_ptr(&lease) {
                    *at = next;
                }
            }
        }
    }
}

/// Renews `lease` once; returns when to look at it next.
fn renew_one(shared: &Shared, lease: &LeaseState) -> Instant {
    let now = Instant::now();
    let far = now + Duration::from_secs(3600);
    if lease.is_released() || lease.lost.load(Ordering::Acquire) {
        return far;
    }
    if lease.renewals() >= shared.max_renewals {
        // The cap is reached: let it run out; check() reports it lost after that.
        return far;
    }
    match (shared.renew)(lease) {
        Renewal::Extended(until) => {
            lease.set_valid_until(until);
            lease.renewals.fetch_add(1, Ordering::Relaxed);
            now + shared.period
        }
        Renewal::Lost => {
            lease.mark_lost();
            far
        }
        Renewal::Failed => {
            if Instant::now() >= lease.valid_until() {
                lease.mark_lost();
                far
            } else {
                // Retry a few times within the remaining validity.
                now + (shared.period / 4).max(Duration::from_millis(10))
            }
        }
    }
}
