//! A bounded pool of resources, shared by the strategies that keep several open
//! (`Locked`, `PgXactLocked`): at most `max` open at once, callers past that wait until
//! their deadline, and idle ones that went bad are dropped before reuse.

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use turnstile_core::{Connect, Error, StrategyError};

/// A bounded pool of resources: at most `max` open at once; callers past that wait until
/// their deadline.
pub(crate) struct Pool<R> {
    state: Mutex<PoolState<R>>,
    freed: Condvar,
    max: usize,
}

/// How long a resource may sit idle before it is asked [`Connect::is_alive`] (a round
/// trip) before reuse: long enough that a busy pool never pays for it.
pub(crate) const CHECK_ALIVE_AFTER: Duration = Duration::from_secs(1);

struct PoolState<R> {
    /// Idle resources, and since when.
    idle: Vec<(R, Instant)>,
    open: usize,
    /// Callers waiting on `freed`: only then is a notification worth its system call,
    /// which a lock strategy would otherwise pay inside its critical section on every op.
    waiting: usize,
}

impl<R> Pool<R> {
    pub(crate) fn new(max: usize) -> Self {
        Pool {
            state: Mutex::new(PoolState {
                idle: Vec::new(),
                open: 0,
                waiting: 0,
            }),
            freed: Condvar::new(),
            max,
        }
    }

    fn lock(&self) -> MutexGuard<'_, PoolState<R>> {
        // Nothing is held across user code under this mutex, so poison carries no meaning.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn get<C: Connect<Resource = R>>(
        &self,
        connect: &C,
        deadline: Option<Instant>,
    ) -> Result<R, StrategyError> {
        let start = Instant::now();
        let mut state = self.lock();
        loop {
            if let Some((mut r, since)) = state.idle.pop() {
                if !connect.is_valid(&mut r) {
                    // Closed under us while idle (a server restart, a killed session).
                    state = self.free_slot(state);
                    continue;
                }
                if since.elapsed() < CHECK_ALIVE_AFTER {
                    return Ok(r);
                }
                // The round trip runs outside the pool's lock; the slot stays counted.
                drop(state);
                if connect.is_alive(&mut r) {
                    return Ok(r);
                }
                // Closed by the server while idle, where the client had not noticed.
                drop(r);
                state = self.free_slot(self.lock());
                continue;
            }
            if state.open < self.max {
                state.open += 1;
                drop(state);
                return connect.connect().map_err(|e| {
                    self.discard();
                    Error::Unavailable(e)
                });
            }
            let wait = match deadline {
                None => None,
                Some(at) => {
                    let now = Instant::now();
                    if now >= at {
                        return Err(Error::Timeout {
                            waited: now - start,
                        });
                    }
                    Some(at - now)
                }
            };
            state.waiting += 1;
            state = match wait {
                None => self.freed.wait(state).unwrap_or_else(|p| p.into_inner()),
                Some(wait) => {
                    self.freed
                        .wait_timeout(state, wait)
                        .unwrap_or_else(|p| p.into_inner())
                        .0
                }
            };
            state.waiting -= 1;
        }
    }

    /// Gives up the slot of a resource that was dropped, and lets a waiter have it.
    fn free_slot<'a>(
        &'a self,
        mut state: MutexGuard<'a, PoolState<R>>,
    ) -> MutexGuard<'a, PoolState<R>> {
        state.open -= 1;
        if state.waiting > 0 {
            self.freed.notify_one();
        }
        state
    }

    pub(crate) fn put(&self, resource: R) {
        let mut state = self.lock();
        state.idle.push((resource, Instant::now()));
        let waiting = state.waiting > 0;
        drop(state);
        if waiting {
            self.freed.notify_one();
        }
    }

    pub(crate) fn discard(&self) {
        let mut state = self.lock();
        state.open -= 1;
        let waiting = state.waiting > 0;
        drop(state);
        if waiting {
            self.freed.notify_one();
        }
    }
}
