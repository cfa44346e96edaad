//! A bounded pool of resources, shared by the strategies that keep several open
//! (`Locked`, `PgXactLocked`): at most `max` open at once, callers past that wait until
//! their deadline, and idle ones that went bad are dropped before reuse.

use std::cell::RefCell;
use std::marker::PhantomData;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use turnstile_core::{Connect, Error, StrategyError};

/// Opens a resource within a caller's `deadline` ([`Connect::connect_within`]), for a call
/// that began at `start`: a failure once the deadline has passed is the call's
/// [`Error::Timeout`] (the login was cut short for it), any other a connect error
/// ([`Error::from_connect`]).
pub(crate) fn open_within<C: Connect>(
    connect: &C,
    start: Instant,
    deadline: Option<Instant>,
) -> Result<C::Resource, StrategyError> {
    match connect.connect_within(deadline) {
        Ok(resource) => Ok(resource),
        Err(_) if deadline.is_some_and(|at| Instant::now() >= at) => Err(Error::Timeout {
            waited: start.elapsed(),
        }),
        Err(e) => Err(Error::from_connect(e)),
    }
}

/// A bounded pool of resources: at most `max` open at once; callers past that wait until
/// their deadline.
pub(crate) struct Pool<R> {
    state: Mutex<PoolState<R>>,
    freed: Condvar,
    max: usize,
    /// Tells this pool's loans apart in [`LENT_HERE`].
    id: u64,
}

thread_local! {
    /// The pools (their ids) this thread has a resource of on loan, once per loan: a
    /// thread that has every resource of a pool would wait for itself to free one.
    static LENT_HERE: RefCell<Vec<u64>> = const { RefCell::new(Vec::new()) };
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
            id: crate::holding::new_owner(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, PoolState<R>> {
        // Nothing is held across user code under this mutex, so poison carries no meaning.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A resource, idle or newly opened, lent until [`Lent::put`] or [`Lent::discard`];
    /// a loan dropped without either (a panic in the code that had it) discards it.
    pub(crate) fn get<C: Connect<Resource = R>>(
        &self,
        connect: &C,
        deadline: Option<Instant>,
    ) -> Result<Lent<'_, R>, StrategyError> {
        let start = Instant::now();
        // An op that calls back in (another key) while its call has the pool's last
        // resource would wait for itself: no other thread can give one back.
        let here = LENT_HERE.with_borrow(|lent| lent.iter().filter(|&&id| id == self.id).count());
        if here >= self.max {
            return Err(Error::Reentrant);
        }
        let mut state = self.lock();
        loop {
            if let Some((mut r, since)) = state.idle.pop() {
                // The checks run outside the pool's lock (`is_alive` is a round trip), with
                // the slot still counted: the guard gives it back unless `r` is handed out.
                drop(state);
                let slot = Slot::taken(self);
                // Closed under us while idle (a server restart, a killed session), or by
                // the server while idle where the client had not noticed.
                if connect.is_valid(&mut r)
                    && (since.elapsed() < CHECK_ALIVE_AFTER || connect.is_alive(&mut r))
                {
                    slot.keep();
                    return Ok(Lent::new(self, r));
                }
                drop(r);
                drop(slot);
                state = self.lock();
                continue;
            }
            if state.open < self.max {
                state.open += 1;
                drop(state);
                // A connect that fails or panics (user code, or a driver's `expect`) gives
                // the slot back through the guard; otherwise the pool would shrink for good.
                let slot = Slot::taken(self);
                let r = open_within(connect, start, deadline)?;
                slot.keep();
                return Ok(Lent::new(self, r));
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

    fn put(&self, resource: R) {
        let mut state = self.lock();
        state.idle.push((resource, Instant::now()));
        let waiting = state.waiting > 0;
        drop(state);
        if waiting {
            self.freed.notify_one();
        }
    }

    /// Gives up the slot of a resource that was dropped, and lets a waiter have it.
    fn discard(&self) {
        let mut state = self.lock();
        state.open -= 1;
        let waiting = state.waiting > 0;
        drop(state);
        if waiting {
            self.freed.notify_one();
        }
    }
}

/// A resource lent by a [`Pool`]. Whatever happens to the code that has it, its slot comes
/// back: by [`put`](Lent::put), by [`discard`](Lent::discard), or, dropped without either
/// (a panic in a resource's `begin` or `commit`, say, outside the op's own guard), as a
/// discard, so that the pool never shrinks for good.
///
/// A loan stays on the thread that took it (it is not `Send`), which counts it in
/// [`LENT_HERE`] until it ends.
pub(crate) struct Lent<'a, R> {
    pool: &'a Pool<R>,
    resource: Option<R>,
    on_this_thread: PhantomData<*const ()>,
}

impl<'a, R> Lent<'a, R> {
    fn new(pool: &'a Pool<R>, resource: R) -> Self {
        LENT_HERE.with_borrow_mut(|lent| lent.push(pool.id));
        Lent {
            pool,
            resource: Some(resource),
            on_this_thread: PhantomData,
        }
    }

    /// Gives the resource back, idle, for reuse.
    pub(crate) fn put(mut self) {
        if let Some(r) = self.resource.take() {
            self.returned();
            self.pool.put(r);
        }
    }

    /// Drops the resource (broken, or in an unknown state) and frees its slot.
    pub(crate) fn discard(mut self) {
        drop(self.resource.take());
        self.returned();
        self.pool.discard();
    }

    /// Forgets the loan in [`LENT_HERE`].
    fn returned(&self) {
        LENT_HERE.with_borrow_mut(|lent| {
            if let Some(at) = lent.iter().rposition(|&id| id == self.pool.id) {
                lent.swap_remove(at);
            }
        });
    }
}

impl<R> std::ops::Deref for Lent<'_, R> {
    type Target = R;

    fn deref(&self) -> &R {
        self.resource
            .as_ref()
            .expect("a lent resource is there until put or discarded")
    }
}

impl<R> std::ops::DerefMut for Lent<'_, R> {
    fn deref_mut(&mut self) -> &mut R {
        self.resource
            .as_mut()
            .expect("a lent resource is there until put or discarded")
    }
}

impl<R> Drop for Lent<'_, R> {
    fn drop(&mut self) {
        if let Some(r) = self.resource.take() {
            drop(r);
            self.returned();
            self.pool.discard();
        }
    }
}

/// A slot counted in `open` for a resource that is not in the pool's hands (being opened,
/// or checked before reuse): dropped without [`Slot::keep`], on an error or a panic, it
/// gives the slot back.
struct Slot<'a, R> {
    pool: &'a Pool<R>,
    held: bool,
}

impl<'a, R> Slot<'a, R> {
    fn taken(pool: &'a Pool<R>) -> Self {
        Slot { pool, held: true }
    }

    /// The slot now belongs to a resource handed out, which `put` or `discard` ends.
    fn keep(mut self) {
        self.held = false;
    }
}

impl<R> Drop for Slot<'_, R> {
    fn drop(&mut self) {
        if self.held {
            self.pool.discard();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::panic::{AssertUnwindSafe, catch_unwind};
    use std::sync::atomic::{AtomicU32, Ordering};

    use turnstile_core::BoxError;

    use super::*;

    /// Opens numbered resources; the next `connect` (or `is_alive`) panics or fails when
    /// told to, as a driver's `expect` or a broken server would.
    #[derive(Default)]
    struct Flaky {
        opened: AtomicU32,
        /// 1: the next connect panics; 2: it fails.
        connect_fault: AtomicU32,
        alive_panics: AtomicU32,
    }

    impl Connect for Flaky {
        type Resource = u32;

        fn connect(&self) -> Result<u32, BoxError> {
            match self.connect_fault.swap(0, Ordering::SeqCst) {
                1 => panic!("connect panicked"),
                2 => Err("connect failed".into()),
                _ => Ok(self.opened.fetch_add(1, Ordering::SeqCst)),
            }
        }

        fn identity(&self) -> &str {
            "flaky"
        }

        fn is_alive(&self, _resource: &mut u32) -> bool {
            if self.alive_panics.swap(0, Ordering::SeqCst) == 1 {
                panic!("is_alive panicked");
            }
            true
        }
    }

    fn soon() -> Option<Instant> {
        Some(Instant::now() + Duration::from_millis(200))
    }

    #[test]
    fn a_connect_that_panics_or_fails_gives_its_slot_back() {
        let pool = Pool::new(1);
        let connect = Flaky::default();
        connect.connect_fault.store(1, Ordering::SeqCst);
        let panicked = catch_unwind(AssertUnwindSafe(|| pool.get(&connect, soon())));
        assert!(panicked.is_err(), "the connect should have panicked");
        connect.connect_fault.store(2, Ordering::SeqCst);
        assert!(matches!(
            pool.get(&connect, soon()),
            Err(Error::Unavailable(_))
        ));
        // The one slot is free again: a get opens a resource instead of timing out.
        let r = pool.get(&connect, soon()).expect("the slot was leaked");
        assert_eq!(*r, 0);
        r.discard();
        assert_eq!(pool.lock().open, 0);
    }

    #[test]
    fn a_liveness_check_that_panics_gives_its_slot_back() {
        let pool = Pool::new(1);
        let connect = Flaky::default();
        pool.get(&connect, soon()).unwrap().put();
        // Idle long enough to be asked is_alive before reuse.
        pool.lock().idle[0].1 = Instant::now() - CHECK_ALIVE_AFTER * 2;
        connect.alive_panics.store(1, Ordering::SeqCst);
        let panicked = catch_unwind(AssertUnwindSafe(|| pool.get(&connect, soon())));
        assert!(panicked.is_err(), "is_alive should have panicked");
        let r = pool.get(&connect, soon()).expect("the slot was leaked");
        assert_eq!(*r, 1, "a fresh resource replaces the one dropped");
        r.put();
        assert_eq!(pool.lock().open, 1);
    }

    #[test]
    fn a_loan_dropped_by_a_panic_gives_its_slot_back() {
        let pool = Pool::new(1);
        let connect = Flaky::default();
        let panicked = catch_unwind(AssertUnwindSafe(|| {
            let _r = pool.get(&connect, soon()).unwrap();
            panic!("a resource's commit panicked");
        }));
        assert!(panicked.is_err());
        assert_eq!(pool.lock().open, 0);
        let r = pool.get(&connect, soon()).expect("the slot was leaked");
        assert_eq!(*r, 1, "the resource in the panicking hands is not reused");
        r.put();
    }
}
