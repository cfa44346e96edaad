//! A bounded pool of resources, shared by the strategies that keep several open
//! (`Locked`, `PgXactLocked`): at most `max` open at once, callers past that wait until
//! their deadline, and idle ones that went bad are dropped before reuse.

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Instant;

use turnstile_core::{Connect, Error, StrategyError};

/// A bounded pool of resources: at most `max` open at once; callers past that wait until
/// their deadline.
pub(crate) struct Pool<R> {
    state: Mutex<PoolState<R>>,
    freed: Condvar,
    max: usize,
}

struct PoolState<R> {
    idle: Vec<R>,
    open: usize,
}

impl<R> Pool<R> {
    pub(crate) fn new(max: usize) -> Self {
        Pool {
            state: Mutex::new(PoolState {
                idle: Vec::new(),
                open: 0,
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
            if let Some(mut r) = state.idle.pop() {
                if connect.is_valid(&mut r) {
                    return Ok(r);
                }
                // Closed under us while idle (a server restart, a killed session).
                state.open -= 1;
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
            state = match deadline {
                None => self.freed.wait(state).unwrap_or_else(|p| p.into_inner()),
                Some(at) => {
                    let now = Instant::now();
                    if now >= at {
                        return Err(Error::Timeout {
                            waited: now - start,
                        });
                    }
                    self.freed
                        .wait_timeout(state, at - now)
                        .unwrap_or_else(|p| p.into_inner())
                        .0
                }
            };
        }
    }

    pub(crate) fn put(&self, resource: R) {
        self.lock().idle.push(resource);
        self.freed.notify_one();
    }

    pub(crate) fn discard(&self) {
        self.lock().open -= 1;
        self.freed.notify_one();
    }
}
