//! `Retry`: no lock at all. Each op runs in the resource's own write transaction (SQLite:
//! `BEGIN IMMEDIATE … COMMIT`); when the resource says it is busy, the transaction is
//! rolled back and the whole op runs again after a full-jitter exponential backoff.
//!
//! This is seed 001's first design ("inspired by the Ethernet protocol … exponential
//! backoff … a pinch of randomness … limited the maximum timeout to two seconds after lots
//! of performance experiments"), with what the seed learned the hard way built in:
//!
//! - each caller gets its own connection (from a small pool of idle ones), and keeps it
//!   through its retries; a connection whose error says it is broken
//!   ([`Connect::is_broken`](crate::Connect::is_broken): I/O, corruption, misuse) is
//!   closed and a new one opened next time, as is one whose op panicked where a panic may
//!   hide a broken connection ([`Connect::survives_panic`](crate::Connect::survives_panic):
//!   MySQL's), while an op's own error (a constraint violation) is no reason to;
//! - only busy is retried ([`TransactError::Busy`], or an op error for which
//!   [`Transact::is_busy`] holds, or a busy `COMMIT`); the op's own errors come back at
//!   once as [`Error::Op`], never retried, so a caller can still see its UNIQUE violation;
//! - an op that ended the transaction by itself (`COMMIT`) may have committed, so it is
//!   not run again: it gets [`Error::TransactionEnded`]. Over SQLite the strategy sees
//!   that as the op returns (a transaction SQLite rolled back itself, with nothing
//!   committed, is not that: the op's error stands, and is retried if busy); over
//!   PostgreSQL, after the op failed or panicked, the rollback goes to the marker
//!   savepoint [`begin`](Transact::begin) set first and finds it gone
//!   ([`Transact::rollback_checked`], in the same round trip), unless the connection is
//!   lost before that rollback: the op then gets its own error or [`Error::Panicked`],
//!   though what it committed stays. Over MySQL it cannot tell:
//!   an InnoDB deadlock removes the savepoint too, so an op that ran `COMMIT` (or DDL,
//!   which commits implicitly) and then met a busy error **runs again**, and what it
//!   committed is applied twice; after another error or a panic it gets its own error or
//!   [`Error::Panicked`], though what it committed stays. Ops must not control
//!   transactions;
//! - the budget is enforced by deadline, op time included: at most
//!   [`Retry::max_attempts`] runs and [`Retry::max_elapsed`] of wall time, then
//!   [`Error::Contended`]; a new connection is opened within that deadline too
//!   ([`Connect::connect_within`](crate::Connect::connect_within)), and a login it cuts short is [`Error::Timeout`] (a server login gets
//!   at least 250 ms, so a shorter budget can be overrun by that much).
//!
//! # Backoff
//! After the `n`-th failed attempt the strategy sleeps `U(0, c)` ("full jitter"), never
//! past the deadline, where the ceiling `c` is `min(cap, base·2ⁿ⁻¹)` and, once the call
//! has waited `w` longer than `aging`, also at most `cap · aging / w` (but not below
//! `base`). Defaults: `base` [`DEFAULT_BASE`] (1 ms), `cap` [`DEFAULT_CAP`] (100 ms),
//! `aging` [`DEFAULT_AGING`] (30 ms). The seed settled on a 2 s cap after experiments in
//! a three-process web application; with full jitter the expected sleep is half the
//! ceiling, and a shorter cap keeps the tail latency of a busy database bounded.
//!
//! Nothing tells a sleeping loser that the write lock is free: it finds out only by
//! trying, and the winner, starting its next transaction at once, usually takes the lock
//! again first. A loser's wait is a lottery whose tail grows with the time between its
//! tries. Trying more often costs CPU instead (every try wakes a thread, which on few
//! cores slows the winner), so a shorter cap for everyone trades throughput for the tail.
//! Aging spends the tries where they bound the tail: the few callers that have lost for
//! long try often, the many that have not back off as usual. Raise the cap with
//! [`Retry::cap`] if many processes fight over one file. backon's `with_jitter` adds its
//! jitter *after* the cap (a 2 s cap can sleep 4 s) and budgets sleeps only, so the
//! policy is written out here instead.
//!
//! # SQLite
//! [`Retry::sqlite`] turns SQLite's `busy_timeout` off: a busy handler would wait inside
//! SQLite and hide the busy this strategy exists to see. Every process that uses the file
//! is arbitrated by SQLite's own write lock, so the strategy excludes across processes on
//! one host; keys are validated but do not matter (one writer per file).
//!
//! ```
//! use turnstile::retry::Retry;
//! use turnstile::sqlite::{Sqlite, Synchronous};
//! use turnstile::{Key, Serializer};
//!
//! let dir = tempfile::tempdir()?;
//! let db = Sqlite::new(dir.path().join("app.db")).synchronous(Synchronous::Normal);
//! let strategy = Retry::sqlite(db).max_attempts(50)?;
//! let key = Key::whole();
//! strategy.run(&key, |db| db.execute_batch("CREATE TABLE IF NOT EXISTS t (v INTEGER)"))?;
//! let attempt = strategy.run(&key, |db| {
//!     db.execute("INSERT INTO t VALUES (1)", [])?;
//!     Ok::<_, turnstile::sqlite::rusqlite::Error>(db.attempt())
//! })?;
//! assert!(attempt >= 1);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::locked::{AfterOp, after_op, end_rest};
use turnstile_core::{
    Capabilities, Ctx, Error, HolderDeath, Key, MAX_TIMEOUT, Serializer, StrategyError, Transact,
    TransactError, Wait, check_timeout, panic_message, sorted_keys,
};

/// The default first backoff ceiling: 1 ms.
pub const DEFAULT_BASE: Duration = Duration::from_millis(1);

/// The default largest backoff ceiling: 100 ms.
pub const DEFAULT_CAP: Duration = Duration::from_millis(100);

/// The default time a call waits before its backoff ceiling starts to shrink: 30 ms
/// (see [`Retry::aging`]).
pub const DEFAULT_AGING: Duration = Duration::from_millis(30);

/// The default most runs of one op: 100,000 (with the other defaults, the time budget
/// [`DEFAULT_MAX_ELAPSED`] ends a call first).
pub const DEFAULT_MAX_ATTEMPTS: u32 = 100_000;

/// The default longest time one call may take, ops and sleeps included: 30 s.
pub const DEFAULT_MAX_ELAPSED: Duration = Duration::from_secs(30);

/// The default most idle connections kept open between calls: 8.
pub const DEFAULT_IDLE_CONNECTIONS: usize = 8;

/// Where an attempt met the busy resource.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RetryReason {
    /// `BEGIN` found the resource's write lock taken.
    Begin,
    /// The op returned an error the resource classifies as busy.
    Op,
    /// `COMMIT` was busy (and has been rolled back).
    Commit,
}

/// One retry about to happen, as reported to [`Retry::on_retry`].
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub struct RetryEvent {
    /// The attempt that just failed, from 1.
    pub attempt: u32,
    /// Time since the call started.
    pub elapsed: Duration,
    /// How long the strategy will sleep before the next attempt.
    pub delay: Duration,
    /// Where the attempt met the busy resource.
    pub reason: RetryReason,
}

type RetryHook = Arc<dyn Fn(&RetryEvent) + Send + Sync>;

/// Backoff-retry over a transactional resource: a [`Serializer`] without a lock. See the
/// [module docs](self).
///
/// Over a single-writer resource (SQLite), an op that calls back in (through any `Retry`
/// over the same data, whatever the key) gets [`Error::Reentrant`] at once, and the inner
/// op never runs: it would retry against its own write lock until the budget ran out.
pub struct Retry<C: Transact> {
    connect: C,
    idle: Mutex<Vec<C::Resource>>,
    max_idle: usize,
    base: Duration,
    cap: Duration,
    max_attempts: u32,
    max_elapsed: Option<Duration>,
    aging: Option<Duration>,
    on_retry: Option<RetryHook>,
}

#[cfg(feature = "sqlite")]
impl Retry<crate::sqlite::Sqlite> {
    /// Retries over a SQLite database, with its `busy_timeout` turned off so every busy
    /// comes back to the strategy at once.
    pub fn sqlite(db: crate::sqlite::Sqlite) -> Self {
        Retry::new(db.busy_timeout(Duration::ZERO))
    }
}

impl<C: Transact> Retry<C> {
    /// Retries over resources opened by `connect`, as they are. The resource should report
    /// busy rather than wait for it (for SQLite use [`Retry::sqlite`], which sees to that).
    pub fn new(connect: C) -> Self {
        Retry {
            connect,
            idle: Mutex::new(Vec::new()),
            max_idle: DEFAULT_IDLE_CONNECTIONS,
            base: DEFAULT_BASE,
            cap: DEFAULT_CAP,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            max_elapsed: Some(DEFAULT_MAX_ELAPSED),
            aging: Some(DEFAULT_AGING),
            on_retry: None,
        }
    }

    /// Sets the first backoff ceiling; the `n`-th retry sleeps up to `base·2ⁿ⁻¹` (capped).
    /// Default: [`DEFAULT_BASE`].
    ///
    /// # Errors
    /// [`Error::Config`] for zero (retries would spin) or over
    /// [`MAX_TIMEOUT`].
    pub fn base(mut self, base: Duration) -> Result<Self, StrategyError> {
        self.base = positive("base", base)?;
        Ok(self)
    }

    /// Sets the largest backoff ceiling. Default: [`DEFAULT_CAP`].
    ///
    /// # Errors
    /// [`Error::Config`] for zero or over [`MAX_TIMEOUT`].
    pub fn cap(mut self, cap: Duration) -> Result<Self, StrategyError> {
        self.cap = positive("cap", cap)?;
        Ok(self)
    }

    /// Sets how long a call waits before its backoff ceiling starts to shrink: after
    /// waiting `w` longer than `aging`, a call's ceiling is at most `cap · aging / w` (and
    /// at least `base`), so the longer it has waited the more often it tries. `None` keeps
    /// the plain exponential ceiling. Default: [`DEFAULT_AGING`].
    ///
    /// Nothing tells a sleeping loser that the write lock is free; it finds out only by
    /// trying, and the winner, starting its next transaction at once, usually takes the
    /// lock first. The few callers that have lost for long try often, which bounds the
    /// tail; the many that have not back off as usual, which keeps the tries from taking
    /// the winner's CPU.
    ///
    /// # Errors
    /// [`Error::Config`] for zero or over [`MAX_TIMEOUT`].
    pub fn aging(mut self, aging: Option<Duration>) -> Result<Self, StrategyError> {
        self.aging = aging.map(|d| positive("aging", d)).transpose()?;
        Ok(self)
    }

    /// Sets the most runs of one op (the first included) before [`Error::Contended`].
    /// Default: [`DEFAULT_MAX_ATTEMPTS`].
    ///
    /// # Errors
    /// [`Error::Config`] for zero.
    pub fn max_attempts(mut self, attempts: u32) -> Result<Self, StrategyError> {
        if attempts == 0 {
            return Err(Error::Config("max_attempts must be at least 1".into()));
        }
        self.max_attempts = attempts;
        Ok(self)
    }

    /// Sets the longest a call may take, ops and sleeps included, before
    /// [`Error::Contended`]; `None` for no time limit (the attempt limit still holds). A
    /// call's own [`Wait`] replaces it. Default: [`DEFAULT_MAX_ELAPSED`].
    ///
    /// # Errors
    /// [`Error::Config`] for a limit over [`MAX_TIMEOUT`].
    pub fn max_elapsed(mut self, limit: Option<Duration>) -> Result<Self, StrategyError> {
        self.max_elapsed = check_timeout(limit)?;
        Ok(self)
    }

    /// Sets how many idle connections are kept open between calls (more concurrent calls
    /// open more, and close the surplus afterwards). Default: [`DEFAULT_IDLE_CONNECTIONS`].
    pub fn idle_connections(mut self, count: usize) -> Self {
        self.max_idle = count;
        self
    }

    /// Calls `hook` before each backoff sleep (for logs and metrics). Default: none.
    pub fn on_retry(mut self, hook: impl Fn(&RetryEvent) + Send + Sync + 'static) -> Self {
        self.on_retry = Some(Arc::new(hook));
        self
    }

    /// The resource opener.
    pub fn connector(&self) -> &C {
        &self.connect
    }

    /// The ceiling of the backoff after the `attempt`-th failed attempt:
    /// `min(cap, base·2^(attempt-1))`.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let factor = 1u32
            .checked_shl(attempt.saturating_sub(1))
            .unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// A full-jitter delay after the `attempt`-th failed attempt: uniform in
    /// `0..=`[`ceiling(attempt)`](Retry::ceiling).
    pub fn delay(&self, attempt: u32) -> Duration {
        jitter(self.ceiling(attempt))
    }

    /// The ceiling after the `attempt`-th failed attempt of a call that has waited
    /// `waited`: [`ceiling(attempt)`](Retry::ceiling), shrunk by [`aging`](Retry::aging)
    /// once the call has waited longer than that.
    pub fn aged_ceiling(&self, attempt: u32, waited: Duration) -> Duration {
        let ceiling = self.ceiling(attempt);
        match self.aging {
            Some(aging) if waited > aging => {
                // cap · aging / waited, in nanoseconds: both at most MAX_TIMEOUT.
                let aged = self.cap.as_nanos() * aging.as_nanos() / waited.as_nanos();
                let aged = Duration::from_nanos(u64::try_from(aged).unwrap_or(u64::MAX));
                ceiling.min(aged).max(self.base.min(ceiling))
            }
            _ => ceiling,
        }
    }

    /// A full-jitter delay after the `attempt`-th failed attempt of a call that has
    /// waited `waited`: uniform in `0..=`[`aged_ceiling`](Retry::aged_ceiling).
    pub fn aged_delay(&self, attempt: u32, waited: Duration) -> Duration {
        jitter(self.aged_ceiling(attempt, waited))
    }

    fn idle(&self) -> MutexGuard<'_, Vec<C::Resource>> {
        // No user code runs under this mutex.
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// An idle resource, or a new one opened within the call's deadline: a login cut short
    /// by the deadline is [`Error::Timeout`], as any wait of the call's.
    fn checkout(
        &self,
        start: Instant,
        deadline: Option<Instant>,
    ) -> Result<C::Resource, StrategyError> {
        if let Some(resource) = self.idle().pop() {
            return Ok(resource);
        }
        crate::pool::open_within(&self.connect, start, deadline)
    }

    fn checkin(&self, resource: C::Resource) {
        let mut idle = self.idle();
        if idle.len() < self.max_idle {
            idle.push(resource);
        }
    }

    /// One run of the op on `resource`. The resource comes back with the outcome unless it
    /// went bad: a busy attempt keeps it for the next one, so that a caller sleeping
    /// between attempts does not close and reopen a connection each time (with many
    /// callers and few idle connections kept, that was most of a failed attempt's cost).
    fn attempt<T, E, F>(
        &self,
        mut resource: C::Resource,
        keys: &[Key],
        attempt: u32,
        deadline: Option<Instant>,
        op: &mut F,
    ) -> (Attempt<T, E>, Option<C::Resource>)
    where
        F: FnMut(&mut Ctx<'_, C::Resource>) -> Result<T, E>,
        E: Send + Sync + 'static,
    {
        match self.connect.begin(&mut resource, &[]) {
            Ok(()) => {}
            Err(TransactError::Busy(_)) => {
                return (Attempt::Busy(RetryReason::Begin), Some(resource));
            }
            // A BEGIN that fails for another reason leaves the connection suspect.
            Err(e) => return (Attempt::Done(Err(e.into_error())), None),
        }
        let commits = self.connect.tx_counts(&resource);
        let result = catch_unwind(AssertUnwindSafe(|| {
            let mut ctx = Ctx::new(&mut resource, keys)
                .with_attempt(attempt)
                .with_deadline(deadline);
            op(&mut ctx)
        }));
        match result {
            Ok(Ok(value)) => {
                match after_op(&self.connect, &resource, commits) {
                    AfterOp::Open => {}
                    AfterOp::Committed => {
                        let kept = end_rest(&self.connect, &mut resource).then_some(resource);
                        return (Attempt::Done(Err(Error::TransactionEnded)), kept);
                    }
                    // The op ended the transaction by itself, with nothing committed,
                    // though it answered as if it had.
                    AfterOp::RolledBack => {
                        let kept = end_rest(&self.connect, &mut resource).then_some(resource);
                        return (Attempt::Done(Err(Error::TransactionEnded)), kept);
                    }
                }
                match self.connect.commit(&mut resource) {
                    Ok(()) => (Attempt::Done(Ok(value)), Some(resource)),
                    // Commit rolled the busy transaction back already.
                    Err(TransactError::Busy(_)) => {
                        (Attempt::Busy(RetryReason::Commit), Some(resource))
                    }
                    Err(e) => (Attempt::Done(Err(e.into_error())), None),
                }
            }
            Ok(Err(e)) => {
                let broken = self.connect.is_broken(&mut resource, &e);
                let busy = !broken && self.connect.is_busy(&e);
                // Whether the op's transaction was rolled back (`Ok(true)`), or the op
                // ended it and what it wrote may have committed (`Ok(false)`): such an op
                // is neither retried nor answered as rolled back.
                let rolled_back = match after_op(&self.connect, &resource, commits) {
                    AfterOp::Committed if end_rest(&self.connect, &mut resource) => Ok(false),
                    AfterOp::Committed => {
                        return (Attempt::Done(Err(Error::TransactionEnded)), None);
                    }
                    // Ended under the op by a rollback (SQLite's `INSERT OR ROLLBACK`, or
                    // the op's own): nothing committed.
                    AfterOp::RolledBack if end_rest(&self.connect, &mut resource) => Ok(true),
                    AfterOp::RolledBack => return (Attempt::Done(Err(Error::Op(e))), None),
                    // Over a database server the error may come after the op's own
                    // `COMMIT`, which `in_transaction` cannot see: PostgreSQL's rollback
                    // finds its marker savepoint gone, at no extra round trip.
                    AfterOp::Open => self.connect.rollback_checked(&mut resource),
                };
                match rolled_back {
                    Ok(true) if busy => (Attempt::Busy(RetryReason::Op), Some(resource)),
                    Ok(true) => (
                        Attempt::Done(Err(Error::Op(e))),
                        (!broken).then_some(resource),
                    ),
                    Ok(false) => (
                        Attempt::Done(Err(Error::TransactionEnded)),
                        (!broken).then_some(resource),
                    ),
                    Err(_) => (Attempt::Done(Err(Error::Op(e))), None),
                }
            }
            Err(payload) => {
                // A panic may hide a broken connection (a read that timed out): nothing
                // more is sent on it, and it is dropped, which rolls its transaction back.
                let survives = self.connect.survives_panic(&mut resource);
                let message = panic_message(&*payload);
                let (error, kept) = match after_op(&self.connect, &resource, commits) {
                    AfterOp::Committed => (
                        Error::TransactionEnded,
                        survives && end_rest(&self.connect, &mut resource),
                    ),
                    AfterOp::RolledBack => (
                        Error::Panicked(message),
                        survives && end_rest(&self.connect, &mut resource),
                    ),
                    AfterOp::Open if !survives => (Error::Panicked(message), false),
                    // As after an error: the op may have run `COMMIT` before it panicked.
                    AfterOp::Open => match self.connect.rollback_checked(&mut resource) {
                        Ok(true) => (Error::Panicked(message), true),
                        Ok(false) => (Error::TransactionEnded, true),
                        Err(_) => (Error::Panicked(message), false),
                    },
                };
                (Attempt::Done(Err(error)), kept.then_some(resource))
            }
        }
    }
}

enum Attempt<T, E> {
    Done(Result<T, Error<E>>),
    Busy(RetryReason),
}

/// Uniform in `0..=ceiling`.
fn jitter(ceiling: Duration) -> Duration {
    // A ceiling is at most MAX_TIMEOUT, far below u64::MAX nanoseconds.
    Duration::from_nanos(fastrand::u64(
        0..=u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX),
    ))
}

fn positive(what: &str, d: Duration) -> Result<Duration, StrategyError> {
    if d.is_zero() {
        return Err(Error::Config(format!(
            "backoff {what} must be positive; zero would spin"
        )));
    }
    if d > MAX_TIMEOUT {
        return Err(Error::Config(format!(
            "backoff {what} {d:?} is longer than the maximum {MAX_TIMEOUT:?}"
        )));
    }
    Ok(d)
}

impl<C: Transact> Serializer for Retry<C> {
    type Resource = C::Resource;

    fn capabilities(&self) -> Capabilities {
        Capabilities::new(self.connect.arbitrates(), HolderDeath::ResourceRollsBack).reruns_op(true)
    }

    fn run_with<T, E, F>(&self, keys: &[Key], wait: Wait, mut op: F) -> Result<T, Error<E>>
    where
        F: FnMut(&mut Ctx<'_, C::Resource>) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: Send + Sync + 'static,
    {
        let keys = sorted_keys(keys).map_err(Error::widen)?;
        let start = Instant::now();
        let deadline = wait.deadline(self.max_elapsed).map_err(Error::widen)?;
        // An op that calls back in over a single-writer resource (SQLite) it is writing
        // already would retry against its own write lock until the budget runs out: any
        // `Retry` over the same data, whatever the keys.
        static OWNER: std::sync::LazyLock<u64> =
            std::sync::LazyLock::new(crate::holding::new_owner);
        let data = self
            .connect
            .single_writer()
            .then(|| vec![self.connect.identity().as_bytes().to_vec()]);
        if data
            .as_ref()
            .is_some_and(|data| crate::holding::holds(*OWNER, data))
        {
            return Err(Error::Reentrant);
        }
        let _holding = data.map(|data| crate::holding::Holding::enter(*OWNER, data));
        let mut attempt = 0u32;
        // Kept across the attempts of this call, and back to the idle ones at its end.
        let mut held: Option<C::Resource> = None;
        loop {
            attempt += 1;
            let resource = match held.take() {
                Some(r) => r,
                None => match self.checkout(start, deadline) {
                    Ok(r) => r,
                    Err(e) => return Err(e.widen()),
                },
            };
            let (outcome, kept) = self.attempt(resource, &keys, attempt, deadline, &mut op);
            let reason = match outcome {
                Attempt::Done(result) => {
                    if let Some(resource) = kept {
                        self.checkin(resource);
                    }
                    return result;
                }
                Attempt::Busy(reason) => reason,
            };
            held = kept;
            let now = Instant::now();
            let out_of_time = deadline.is_some_and(|at| now >= at);
            if attempt >= self.max_attempts || out_of_time {
                if let Some(resource) = held.take() {
                    self.checkin(resource);
                }
                return Err(Error::Contended {
                    attempts: attempt,
                    elapsed: now - start,
                });
            }
            let mut delay = self.aged_delay(attempt, now - start);
            if let Some(at) = deadline {
                // The last attempt runs at the deadline rather than sleeping past it.
                delay = delay.min(at - now);
            }
            if let Some(hook) = &self.on_retry {
                hook(&RetryEvent {
                    attempt,
                    elapsed: now - start,
                    delay,
                    reason,
                });
            }
            std::thread::sleep(delay);
        }
    }
}

impl<C: Transact> fmt::Debug for Retry<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Retry")
            .field("identity", &self.connect.identity())
            .field("base", &self.base)
            .field("cap", &self.cap)
            .field("max_attempts", &self.max_attempts)
            .field("max_elapsed", &self.max_elapsed)
            .field("aging", &self.aging)
            .field("idle_connections", &self.max_idle)
            .finish_non_exhaustive()
    }
}

#[cfg(all(test, feature = "sqlite"))]
mod tests {
    use super::*;
    use crate::sqlite::Sqlite;

    fn strategy() -> Retry<Sqlite> {
        Retry::sqlite(Sqlite::new("/nonexistent/never-opened.db"))
    }

    #[test]
    fn ceiling_doubles_up_to_the_cap() {
        let r = strategy()
            .base(Duration::from_millis(1))
            .unwrap()
            .cap(Duration::from_millis(10))
            .unwrap();
        let ms = |n| r.ceiling(n).as_millis();
        assert_eq!([ms(1), ms(2), ms(3), ms(4), ms(5)], [1, 2, 4, 8, 10]);
        assert_eq!(r.ceiling(u32::MAX), Duration::from_millis(10));
    }

    #[test]
    fn delays_are_full_jitter_within_the_ceiling() {
        let r = strategy().cap(Duration::from_millis(4)).unwrap();
        let delays: Vec<Duration> = (0..2000).map(|_| r.delay(10)).collect();
        assert!(delays.iter().all(|d| *d <= Duration::from_millis(4)));
        // Full jitter reaches down towards zero, not just `cap/2 .. cap`.
        assert!(delays.iter().any(|d| *d < Duration::from_millis(1)));
    }

    #[test]
    fn a_call_that_waited_long_gets_a_shrinking_ceiling() {
        let r = strategy();
        let ms = |d: Duration| d.as_millis();
        // Until it has waited `aging`, the plain exponential ceiling.
        assert_eq!(ms(r.aged_ceiling(20, Duration::from_millis(30))), 100);
        assert_eq!(ms(r.aged_ceiling(2, Duration::from_millis(300))), 2);
        // Then cap · aging / waited, down to `base`.
        assert_eq!(ms(r.aged_ceiling(20, Duration::from_millis(60))), 50);
        assert_eq!(ms(r.aged_ceiling(20, Duration::from_millis(300))), 10);
        assert_eq!(ms(r.aged_ceiling(20, Duration::from_secs(10))), 1);
        let delays: Vec<Duration> = (0..2000)
            .map(|_| r.aged_delay(20, Duration::from_millis(300)))
            .collect();
        assert!(delays.iter().all(|d| *d <= Duration::from_millis(10)));
        // Turned off, the ceiling does not age.
        let plain = strategy().aging(None).unwrap();
        assert_eq!(ms(plain.aged_ceiling(20, Duration::from_secs(10))), 100);
    }

    #[test]
    fn absurd_settings_are_refused() {
        assert!(matches!(
            strategy().base(Duration::ZERO),
            Err(Error::Config(_))
        ));
        assert!(matches!(
            strategy().cap(Duration::MAX),
            Err(Error::Config(_))
        ));
        assert!(matches!(strategy().max_attempts(0), Err(Error::Config(_))));
        assert!(matches!(
            strategy().aging(Some(Duration::ZERO)),
            Err(Error::Config(_))
        ));
        assert!(matches!(
            strategy().max_elapsed(Some(Duration::MAX)),
            Err(Error::Config(_))
        ));
    }
}
