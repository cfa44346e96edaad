//! The contract: [`Serializer`] runs an op with exclusive access for a key; [`Ctx`] is what
//! the op sees; [`Capabilities`] is what a strategy promises; [`DynSerializer`] is the same
//! contract behind a `Box<dyn …>` for strategies chosen at run time.

use std::any::Any;
use std::ops::{Deref, DerefMut};
use std::time::{Duration, Instant};

use crate::{Error, Fence, Key, StrategyError};

/// The longest timeout accepted (one year). Anything longer is almost certainly a unit
/// mistake; wait forever with [`Wait::Forever`] instead.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(365 * 24 * 3600);

/// How long a call may wait to start its op (for a lock, a queue slot, a conflict-free
/// attempt). Once the op has started, a blocking `run` waits for it to finish.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Wait {
    /// The strategy's configured default (documented on each strategy; never "forever"
    /// unless configured so).
    #[default]
    Default,
    /// Wait at most this long. `Duration::ZERO` means try once.
    Timeout(Duration),
    /// Wait until this instant. An instant in the past means try once; one further than
    /// [`MAX_TIMEOUT`] from now is refused, as such a timeout is.
    Deadline(Instant),
    /// Wait for as long as it takes.
    Forever,
}

impl Wait {
    /// The deadline this wait means now, given the strategy's default timeout.
    ///
    /// # Errors
    /// [`Error::Config`] for a timeout over [`MAX_TIMEOUT`] (or one whose deadline is not
    /// representable), and for a [`Wait::Deadline`] further than [`MAX_TIMEOUT`] from now.
    pub fn deadline(self, default: Option<Duration>) -> Result<Option<Instant>, StrategyError> {
        let timeout = match self {
            Wait::Default => default,
            Wait::Timeout(d) => Some(d),
            Wait::Deadline(at) => {
                let d = at.saturating_duration_since(Instant::now());
                if d > MAX_TIMEOUT {
                    return Err(Error::Config(format!(
                        "deadline {d:?} from now is further than the maximum {MAX_TIMEOUT:?}; use Wait::Forever to wait without limit"
                    )));
                }
                return Ok(Some(at));
            }
            Wait::Forever => None,
        };
        match timeout {
            None => Ok(None),
            Some(d) if d > MAX_TIMEOUT => Err(Error::Config(format!(
                "timeout {d:?} is longer than the maximum {MAX_TIMEOUT:?}; use Wait::Forever to wait without limit"
            ))),
            Some(d) => Instant::now()
                .checked_add(d)
                .map(Some)
                .ok_or_else(|| Error::Config(format!("timeout {d:?} overflows the clock"))),
        }
    }
}

/// Checks a configured default timeout the same way [`Wait::deadline`] checks one.
///
/// # Errors
/// [`Error::Config`] when `timeout` exceeds [`MAX_TIMEOUT`].
pub fn check_timeout(timeout: Option<Duration>) -> Result<Option<Duration>, StrategyError> {
    Wait::Default.deadline(timeout)?;
    Ok(timeout)
}

/// How far a strategy's exclusion reaches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Scope {
    /// Threads of one process.
    Threads,
    /// Processes on one host.
    Processes,
    /// Processes on several hosts.
    Hosts,
}

impl Scope {
    /// A short lower-case name (`"threads"`, `"processes"`, `"hosts"`).
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Threads => "threads",
            Scope::Processes => "processes",
            Scope::Hosts => "hosts",
        }
    }
}

/// What happens to a held lock when its holder dies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum HolderDeath {
    /// Not applicable: the holder is a thread of the process that would die with it.
    SameProcess,
    /// The kernel frees the lock when the process dies (`flock`).
    KernelReleases,
    /// The resource rolls the holder's transaction back (SQLite, a database).
    ResourceRollsBack,
    /// The lease expires after its time to live.
    LeaseExpires,
    /// The server frees it when the session's connection closes (a dead *host* keeps it
    /// until TCP keepalive or the server's idle timeout notice).
    SessionEnds,
}

/// What a strategy promises: the one source for the harness's choice of checkers, the
/// `safe` verdict in reports and the book's tables.
///
/// Build one with [`Capabilities::new`] and the builder methods; fields are public to read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct Capabilities {
    /// How far its exclusion (or arbitration) reaches.
    pub scope: Scope,
    /// Whether ops run one at a time per key. False for optimistic concurrency, which lets
    /// ops overlap and rejects conflicting commits instead.
    pub excludes: bool,
    /// Whether an op may run more than once (after a rollback) for one call.
    pub reruns_op: bool,
    /// Whether the strategy issues fencing tokens that the resource enforces.
    pub fences: bool,
    /// Whether a paused holder can lose its lock without knowing (a lease that expires).
    pub lease_can_expire: bool,
    /// Whether the op runs inside the resource's own transaction, so `Ok` means committed
    /// and every error means rolled back but those of [`Error::may_have_committed`]
    /// ([`Error::Indeterminate`], and [`Error::TransactionEnded`]: the op ended that
    /// transaction itself), and the op's own error, [`Error::Panicked`] or
    /// [`Error::LeaseLost`] after it ended the transaction where the strategy could not
    /// see it (over MySQL, and over PostgreSQL when the connection is lost after the op's
    /// own `COMMIT`, before the strategy's rollback: see [`Error::Op`]).
    pub transactional: bool,
    /// What happens when a holder dies.
    pub holder_death: HolderDeath,
}

impl Capabilities {
    /// An excluding, non-rerunning, unfenced, transactional strategy with this scope.
    pub const fn new(scope: Scope, holder_death: HolderDeath) -> Self {
        Capabilities {
            scope,
            excludes: true,
            reruns_op: false,
            fences: false,
            lease_can_expire: false,
            transactional: true,
            holder_death,
        }
    }

    /// Sets [`Capabilities::excludes`].
    pub const fn excludes(mut self, yes: bool) -> Self {
        self.excludes = yes;
        self
    }

    /// Sets [`Capabilities::reruns_op`].
    pub const fn reruns_op(mut self, yes: bool) -> Self {
        self.reruns_op = yes;
        self
    }

    /// Sets [`Capabilities::fences`].
    pub const fn fences(mut self, yes: bool) -> Self {
        self.fences = yes;
        self
    }

    /// Sets [`Capabilities::lease_can_expire`].
    pub const fn lease_can_expire(mut self, yes: bool) -> Self {
        self.lease_can_expire = yes;
        self
    }

    /// Sets [`Capabilities::transactional`].
    pub const fn transactional(mut self, yes: bool) -> Self {
        self.transactional = yes;
        self
    }
}

/// What an op receives: the resource (through `Deref`/`DerefMut`), the keys it holds, the
/// fence of its lease, which attempt this is, and the caller's deadline.
///
/// It exposes no transaction control on purpose: an op that commits by itself could commit
/// other callers' batched work. Strategies check after the op that their transaction is
/// still open.
pub struct Ctx<'a, R> {
    resource: &'a mut R,
    keys: &'a [Key],
    fence: Option<Fence>,
    attempt: u32,
    deadline: Option<Instant>,
}

impl<'a, R> Ctx<'a, R> {
    /// A context for an op holding `keys` (sorted, non-empty) over `resource`. Strategies
    /// build these; ops only read them.
    pub fn new(resource: &'a mut R, keys: &'a [Key]) -> Self {
        Ctx {
            resource,
            keys,
            fence: None,
            attempt: 1,
            deadline: None,
        }
    }

    /// Sets the fence.
    pub fn with_fence(mut self, fence: Option<Fence>) -> Self {
        self.fence = fence;
        self
    }

    /// Sets the attempt number (1 for the first run).
    pub fn with_attempt(mut self, attempt: u32) -> Self {
        self.attempt = attempt;
        self
    }

    /// Sets the caller's deadline.
    pub fn with_deadline(mut self, deadline: Option<Instant>) -> Self {
        self.deadline = deadline;
        self
    }

    /// The first (for a single-key run, the only) key held.
    pub fn key(&self) -> &Key {
        &self.keys[0]
    }

    /// Every key held, in acquisition (sorted) order.
    pub fn keys(&self) -> &[Key] {
        self.keys
    }

    /// The fencing token of the lease the op runs under, if the strategy issues one. The
    /// strategy has already checked it with the resource; ops that write elsewhere (a
    /// file, an API) can pass it on.
    pub fn fence(&self) -> Option<Fence> {
        self.fence
    }

    /// Which run of the op this is, from 1. Above 1 only for strategies that rerun ops.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The caller's deadline for starting, if any.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }
}

impl<R> Deref for Ctx<'_, R> {
    type Target = R;
    fn deref(&self) -> &R {
        self.resource
    }
}

impl<R> DerefMut for Ctx<'_, R> {
    fn deref_mut(&mut self) -> &mut R {
        self.resource
    }
}

/// Sorts and deduplicates `keys`, the order every strategy acquires several keys in, so
/// two callers can never wait for each other in a cycle.
///
/// # Errors
/// [`Error::Config`] when `keys` is empty.
pub fn sorted_keys(keys: &[Key]) -> Result<Vec<Key>, StrategyError> {
    if keys.is_empty() {
        return Err(Error::Config("an op needs at least one key".into()));
    }
    let mut keys = keys.to_vec();
    keys.sort_unstable();
    keys.dedup();
    Ok(keys)
}

/// Runs ops with exclusive access to a resource for one or more keys.
///
/// The op is a closure so that strategies that cannot hand out a guard (a queue whose
/// worker owns the resource) fit the same contract. It is `FnMut` because retrying
/// strategies run it again after a rollback, and `Send + 'static` because a queue moves it
/// to its worker.
///
/// ```
/// use turnstile_core::{Capabilities, Ctx, Error, HolderDeath, Key, Scope, Serializer, Wait};
/// use std::sync::Mutex;
///
/// /// The simplest correct strategy: one mutex around one resource.
/// struct OneMutex(Mutex<Vec<u32>>);
///
/// impl Serializer for OneMutex {
///     type Resource = Vec<u32>;
///     fn capabilities(&self) -> Capabilities {
///         Capabilities::new(Scope::Threads, HolderDeath::SameProcess).transactional(false)
///     }
///     fn run_with<T, E, F>(&self, keys: &[Key], _wait: Wait, mut op: F) -> Result<T, Error<E>>
///     where
///         F: FnMut(&mut Ctx<'_, Vec<u32>>) -> Result<T, E> + Send + 'static,
///         T: Send + 'static,
///         E: Send + Sync + 'static,
///     {
///         let keys = turnstile_core::sorted_keys(keys).map_err(|e| e.widen())?;
///         let mut guard = self.0.lock().unwrap_or_else(|p| p.into_inner());
///         op(&mut Ctx::new(&mut *guard, &keys)).map_err(Error::Op)
///     }
/// }
///
/// let s = OneMutex(Mutex::new(Vec::new()));
/// let key = Key::new("log")?;
/// let len = s.run(&key, |v| { v.push(7); Ok::<_, std::io::Error>(v.len()) })?;
/// assert_eq!(len, 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub trait Serializer: Send + Sync {
    /// What ops work on (a SQLite connection, a database client, …).
    type Resource;

    /// What this strategy promises.
    fn capabilities(&self) -> Capabilities;

    /// Runs `op` with exclusive access for every key in `keys` (acquired in sorted order),
    /// waiting to start as `wait` says.
    ///
    /// # Errors
    /// [`Error::Op`] with the op's own error (rolled back), or a strategy failure; see
    /// [`Error`] for what each means for the op.
    fn run_with<T, E, F>(&self, keys: &[Key], wait: Wait, op: F) -> Result<T, Error<E>>
    where
        F: FnMut(&mut Ctx<'_, Self::Resource>) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: Send + Sync + 'static;

    /// Runs `op` with exclusive access for `key`, waiting the strategy's default timeout.
    ///
    /// # Errors
    /// As [`Serializer::run_with`].
    fn run<T, E, F>(&self, key: &Key, op: F) -> Result<T, Error<E>>
    where
        F: FnMut(&mut Ctx<'_, Self::Resource>) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: Send + Sync + 'static,
    {
        self.run_with(std::slice::from_ref(key), Wait::Default, op)
    }

    /// Runs `op` holding every key in `keys`, acquired in sorted order so two callers
    /// cannot deadlock (a bank transfer between two accounts).
    ///
    /// # Errors
    /// As [`Serializer::run_with`]; [`Error::Config`] for an empty `keys`.
    fn run_many<T, E, F>(&self, keys: &[Key], op: F) -> Result<T, Error<E>>
    where
        F: FnMut(&mut Ctx<'_, Self::Resource>) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: Send + Sync + 'static,
    {
        self.run_with(keys, Wait::Default, op)
    }

    /// Runs `op` for `key`, waiting at most `timeout` to start.
    ///
    /// # Errors
    /// As [`Serializer::run_with`].
    fn run_timeout<T, E, F>(&self, key: &Key, timeout: Duration, op: F) -> Result<T, Error<E>>
    where
        F: FnMut(&mut Ctx<'_, Self::Resource>) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: Send + Sync + 'static,
    {
        self.run_with(std::slice::from_ref(key), Wait::Timeout(timeout), op)
    }

    /// Runs `op` for `key`, waiting until `deadline` at most to start.
    ///
    /// # Errors
    /// As [`Serializer::run_with`].
    fn run_deadline<T, E, F>(&self, key: &Key, deadline: Instant, op: F) -> Result<T, Error<E>>
    where
        F: FnMut(&mut Ctx<'_, Self::Resource>) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: Send + Sync + 'static,
    {
        self.run_with(std::slice::from_ref(key), Wait::Deadline(deadline), op)
    }
}

/// A type-erased op result.
pub type AnyValue = Box<dyn Any + Send>;
/// A type-erased op error.
pub type AnyError = Box<dyn Any + Send + Sync>;
/// A type-erased op, as [`DynSerializer::run_dyn`] takes it.
pub type DynOp<R> = Box<dyn FnMut(&mut Ctx<'_, R>) -> Result<AnyValue, AnyError> + Send>;

/// The dyn-compatible companion of [`Serializer`], implemented for every `Serializer`.
///
/// Strategies chosen at run time (from a spec string, say) live in a
/// `Box<dyn DynSerializer<Resource = R>>`; [`run_as`](trait.DynSerializer.html#method.run_as) gets typed
/// results and errors back, so the op's error stays matchable. The box implements
/// [`Serializer`] too, so generic code takes either.
pub trait DynSerializer: Send + Sync {
    /// What ops work on.
    type Resource;

    /// What this strategy promises.
    fn capabilities(&self) -> Capabilities;

    /// Runs a boxed, type-erased op. Prefer [`run_as`](trait.DynSerializer.html#method.run_as).
    ///
    /// # Errors
    /// As [`Serializer::run_with`], with the op's error boxed.
    fn run_dyn(
        &self,
        keys: &[Key],
        wait: Wait,
        op: DynOp<Self::Resource>,
    ) -> Result<AnyValue, Error<AnyError>>;
}

impl<R: 'static> dyn DynSerializer<Resource = R> + '_ {
    /// Runs a typed op through the erased interface and downcasts its result and error
    /// back, so the op's own error stays matchable.
    ///
    /// # Errors
    /// As [`Serializer::run_with`].
    pub fn run_as<T, E, F>(&self, keys: &[Key], wait: Wait, mut op: F) -> Result<T, Error<E>>
    where
        F: FnMut(&mut Ctx<'_, R>) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: Send + Sync + 'static,
    {
        let erased: DynOp<R> = Box::new(move |ctx| {
            op(ctx)
                .map(|t| Box::new(t) as AnyValue)
                .map_err(|e| Box::new(e) as AnyError)
        });
        downcast_result(self.run_dyn(keys, wait, erased))
    }
}

fn downcast_result<T: 'static, E: 'static>(
    result: Result<AnyValue, Error<AnyError>>,
) -> Result<T, Error<E>> {
    match result {
        Ok(value) => match value.downcast::<T>() {
            Ok(t) => Ok(*t),
            Err(_) => Err(Error::Config(
                "a strategy returned a value of another type than its op".into(),
            )),
        },
        Err(e) => match e.strategy_only() {
            Ok(strategy) => Err(strategy),
            Err(op) => match op.downcast::<E>() {
                Ok(e) => Err(Error::Op(*e)),
                Err(_) => Err(Error::Config(
                    "a strategy returned an error of another type than its op".into(),
                )),
            },
        },
    }
}

impl<S: Serializer> DynSerializer for S
where
    S::Resource: 'static,
{
    type Resource = S::Resource;

    fn capabilities(&self) -> Capabilities {
        Serializer::capabilities(self)
    }

    fn run_dyn(
        &self,
        keys: &[Key],
        wait: Wait,
        op: DynOp<Self::Resource>,
    ) -> Result<AnyValue, Error<AnyError>> {
        self.run_with(keys, wait, op)
    }
}

/// A strategy chosen at run time.
pub type BoxSerializer<R> = Box<dyn DynSerializer<Resource = R>>;

impl<R: 'static> Serializer for BoxSerializer<R> {
    type Resource = R;

    fn capabilities(&self) -> Capabilities {
        (**self).capabilities()
    }

    fn run_with<T, E, F>(&self, keys: &[Key], wait: Wait, op: F) -> Result<T, Error<E>>
    where
        F: FnMut(&mut Ctx<'_, R>) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: Send + Sync + 'static,
    {
        (**self).run_as(keys, wait, op)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_resolve_and_absurd_timeouts_are_refused() {
        assert_eq!(
            Wait::Forever
                .deadline(Some(Duration::from_secs(1)))
                .unwrap(),
            None
        );
        assert!(
            Wait::Default
                .deadline(Some(Duration::ZERO))
                .unwrap()
                .is_some()
        );
        assert!(matches!(
            Wait::Timeout(Duration::MAX).deadline(None),
            Err(Error::Config(_))
        ));
        assert!(matches!(
            Wait::Timeout(MAX_TIMEOUT + Duration::from_secs(1)).deadline(None),
            Err(Error::Config(_))
        ));
    }

    #[test]
    fn a_deadline_further_than_the_maximum_is_refused_like_a_timeout() {
        let now = Instant::now();
        let far = now + MAX_TIMEOUT + Duration::from_secs(60);
        match Wait::Deadline(far).deadline(None) {
            Err(Error::Config(msg)) => assert!(msg.contains("maximum"), "{msg}"),
            other => panic!("expected a config error, got {other:?}"),
        }
        // Within the maximum, and in the past, a deadline stands as given.
        let near = now + MAX_TIMEOUT - Duration::from_secs(60);
        assert_eq!(Wait::Deadline(near).deadline(None).unwrap(), Some(near));
        assert_eq!(Wait::Deadline(now).deadline(None).unwrap(), Some(now));
    }

    #[test]
    fn sorted_keys_sorts_dedups_and_refuses_empty() {
        let a = Key::new("a").unwrap();
        let b = Key::new("b").unwrap();
        assert_eq!(
            sorted_keys(&[b.clone(), a.clone(), b.clone()]).unwrap(),
            vec![a, b]
        );
        assert!(matches!(sorted_keys(&[]), Err(Error::Config(_))));
    }
}
