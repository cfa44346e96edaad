//! The one error type every strategy returns.
//!
//! [`Error::Op`] carries the op's own error untouched, so a caller can still match on, say,
//! rusqlite's UNIQUE violation. Every other variant is the strategy failing, and each says
//! what the caller may assume about the op: all but [`Error::Indeterminate`] and
//! [`Error::TransactionEnded`] mean the op's effects were rolled back or never happened,
//! with one exception: an op that ended the transaction itself can get its own error,
//! [`Error::Panicked`] or [`Error::LeaseLost`] though what it committed stays, over MySQL,
//! and over PostgreSQL when the connection is lost after the op's own `COMMIT`, before the
//! strategy's rollback (see [`Error::Op`]).

use std::convert::Infallible;
use std::fmt;
use std::time::Duration;

use crate::{Fence, KeyError};

/// A boxed error from a backend (a database driver, a Redis client, the OS).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The error of a strategy-only operation (acquiring a lock, opening a resource), which
/// has no op error yet. Convert it with [`Error::widen`].
pub type StrategyError = Error<Infallible>;

/// What went wrong running an op through a [`Serializer`](crate::Serializer).
///
/// `E` is the op's own error type. The enum is `Send + Sync` when `E` is.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error<E> {
    /// The op ran and returned this error; its transaction (if any) was rolled back —
    /// also when the resource rolled it back under the op (SQLite's `INSERT OR ROLLBACK`;
    /// its commit hook shows that nothing was committed).
    ///
    /// One exception: an op run in a transaction of its own that ended that transaction
    /// itself (`COMMIT`, or on MySQL a statement that commits implicitly) before it
    /// failed, where the strategy cannot see it: over MySQL, whose resource cannot tell
    /// whether a transaction is still open, and over PostgreSQL when the connection is
    /// lost after the op's own `COMMIT`, before the strategy's rollback (an
    /// `idle_session_timeout`, a server restart, `pg_terminate_backend`). What the op
    /// committed stays committed. The same goes for [`Error::Panicked`], and for
    /// [`Error::LeaseLost`] when the lease was lost too. Wherever the strategy sees the
    /// transaction ended (over SQLite; over PostgreSQL, whose rollback finds the
    /// strategy's marker savepoint gone; in a queue's group-commit batch, which reads its
    /// marker) such an op gets [`Error::TransactionEnded`] instead. `retry` over MySQL
    /// runs such an op again when its error is busy (an InnoDB deadlock removes the
    /// savepoint a check would need), and what it committed is applied twice. Ops must
    /// not control transactions.
    Op(E),
    /// The deadline passed before the op could start (the lock or the queue was busy).
    /// The op never ran.
    Timeout {
        /// How long the caller waited.
        waited: Duration,
    },
    /// A retrying strategy gave up: the op kept conflicting until the attempt or time
    /// budget ran out. Its last attempt was rolled back.
    Contended {
        /// Attempts made, the last one included.
        attempts: u32,
        /// Time spent, ops included.
        elapsed: Duration,
    },
    /// The backend (a lock server, the database) could not be reached or refused us
    /// (connection refused, authentication, I/O). The op did not commit.
    Unavailable(BoxError),
    /// The resource failed outside the op (at `BEGIN` or `COMMIT`, say). Rolled back.
    Resource(BoxError),
    /// The lease expired or its connection died before the op committed; the op was
    /// rolled back (or never started). An op run in a transaction of its own that ran
    /// `COMMIT` itself gets this too over MySQL, and over PostgreSQL when the connection
    /// is lost after that `COMMIT`, before the strategy's rollback; what it committed
    /// stays (the exception [`Error::Op`] describes). Elsewhere such an op gets
    /// [`Error::TransactionEnded`].
    LeaseLost,
    /// The resource has seen a newer fencing token for this key than ours: another holder
    /// took over after our lease expired. Nothing was written.
    StaleFence {
        /// The fence we presented.
        presented: Fence,
        /// The highest fence the resource had recorded.
        highest: Fence,
    },
    /// The op panicked. Its transaction was rolled back (with the exception [`Error::Op`]
    /// describes for an op that ended it itself: over MySQL, and over PostgreSQL when the
    /// connection is lost after the op's own `COMMIT`, before the strategy's rollback);
    /// the strategy keeps serving. A connection that may be broken under the panic
    /// ([`Connect::survives_panic`](crate::Connect::survives_panic) false: MySQL's) is not
    /// used again: its server rolls the transaction back as it closes.
    Panicked(String),
    /// The op committed or rolled back the strategy's transaction by itself (`COMMIT`,
    /// `ROLLBACK`, or a statement that commits implicitly, such as DDL on MySQL), which
    /// could commit other callers' work. What the op wrote before that may have
    /// committed, and so may what it wrote after it: those statements ran on their own,
    /// each committing by itself. The strategy committed nothing itself, and rolled back
    /// a transaction the op left open.
    /// Every resource reports it this way: SQLite when the op returns, database servers at
    /// the commit, and both also when the op then fails or panics, except for an op run in
    /// a transaction of its own over MySQL, or over PostgreSQL when the connection is lost
    /// after the op's own `COMMIT`, before the strategy's rollback (see [`Error::Op`]). An
    /// op that fails or panics after its transaction ended with nothing committed (SQLite's
    /// `INSERT OR ROLLBACK`, or the op's own `ROLLBACK`, over SQLite) keeps its own error
    /// or panic instead: nothing of it committed. Over SQLite the strategy counts commits
    /// (a commit hook; [`Transact::tx_counts`](crate::Transact::tx_counts)), so an op that
    /// committed and began a new transaction (`COMMIT; BEGIN`) gets this too, and that new
    /// transaction is rolled back. One that ran `ROLLBACK; BEGIN` is not seen: the strategy
    /// commits its new transaction. Ops must not control transactions. Over PostgreSQL,
    /// after an op run in a transaction of its own failed or panicked, the strategy finds
    /// its marker savepoint gone but cannot tell the op's own `ROLLBACK` from a `COMMIT`:
    /// it answers this for both.
    TransactionEnded,
    /// The strategy is closed and accepts no more work. The op never ran.
    Closed,
    /// The strategy's queue is full; [`try_submit`]-style calls return this instead of
    /// blocking. The op never ran.
    ///
    /// [`try_submit`]: https://docs.rs/turnstile/latest/turnstile/queue/struct.Queue.html#method.try_submit
    Full,
    /// The op tried to run through a strategy it is already running inside (directly, or
    /// through a cycle of queues); waiting would deadlock. The inner op never ran.
    Reentrant,
    /// The lock key was refused.
    InvalidKey(KeyError),
    /// The strategy's configuration, spec or an argument (a timeout) was refused.
    Config(String),
    /// The op's outcome is not known: it may have committed, or may still. The caller
    /// stopped waiting after the op had started; or the connection to a database server
    /// broke after `COMMIT` was sent, before its answer; or a flush that makes a commit
    /// durable failed (the queue's overlapped flush).
    Indeterminate,
}

impl<E> Error<E> {
    /// The op's own error, if this is [`Error::Op`].
    pub fn op(&self) -> Option<&E> {
        match self {
            Error::Op(e) => Some(e),
            _ => None,
        }
    }

    /// Consumes the error and returns the op's own error, if this is [`Error::Op`].
    pub fn into_op(self) -> Option<E> {
        match self {
            Error::Op(e) => Some(e),
            _ => None,
        }
    }

    /// True for [`Error::Indeterminate`]: the op's outcome is not known (the caller
    /// stopped waiting after it started, or its `COMMIT`'s answer was lost), and it may
    /// have committed.
    ///
    /// It is not the only error after which the op may have committed:
    /// [`Error::TransactionEnded`] may follow a commit too. To know whether an op's
    /// effects can be counted as not applied, ask [`Error::may_have_committed`].
    pub fn is_indeterminate(&self) -> bool {
        matches!(self, Error::Indeterminate)
    }

    /// True when the op may have committed (some or all of its writes) even though an
    /// error came back: [`Error::Indeterminate`] (its outcome is not known) and [`Error::TransactionEnded`] (the op ended the transaction itself, so
    /// what it wrote may have committed). After any other error the op's effects were
    /// rolled back or never happened, except what an op that ended the transaction itself
    /// committed where the strategy could not see it, answered with its own error,
    /// [`Error::Panicked`] or [`Error::LeaseLost`]: over MySQL, and over PostgreSQL when
    /// the connection is lost after the op's own `COMMIT`, before the strategy's rollback
    /// (see [`Error::Op`]).
    ///
    /// ```
    /// use turnstile_core::{Error, StrategyError};
    ///
    /// let ended: StrategyError = Error::TransactionEnded;
    /// assert!(ended.may_have_committed() && !ended.is_indeterminate());
    /// let timeout: StrategyError = Error::Timeout { waited: std::time::Duration::ZERO };
    /// assert!(!timeout.may_have_committed());
    /// ```
    pub fn may_have_committed(&self) -> bool {
        matches!(self, Error::Indeterminate | Error::TransactionEnded)
    }

    /// True when waiting or retrying later could succeed: a timeout, contention, a full
    /// queue, an unavailable backend or a lost lease.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Error::Timeout { .. }
                | Error::Contended { .. }
                | Error::Unavailable(_)
                | Error::LeaseLost
                | Error::StaleFence { .. }
                | Error::Full
        )
    }

    /// Maps the op's error, keeping every strategy failure as it is.
    pub fn map_op<F, G: FnOnce(E) -> F>(self, f: G) -> Error<F> {
        match self {
            Error::Op(e) => Error::Op(f(e)),
            other => other.strategy_only().unwrap_or_else(|_| unreachable!()),
        }
    }

    /// Splits a strategy failure from an op error: `Ok` carries the strategy failure
    /// re-typed for any op error type, `Err` gives back the op's own error.
    ///
    /// # Errors
    /// Returns the op's error when this is [`Error::Op`].
    pub fn strategy_only<F>(self) -> Result<Error<F>, E> {
        Ok(match self {
            Error::Op(e) => return Err(e),
            Error::Timeout { waited } => Error::Timeout { waited },
            Error::Contended { attempts, elapsed } => Error::Contended { attempts, elapsed },
            Error::Unavailable(e) => Error::Unavailable(e),
            Error::Resource(e) => Error::Resource(e),
            Error::LeaseLost => Error::LeaseLost,
            Error::StaleFence { presented, highest } => Error::StaleFence { presented, highest },
            Error::Panicked(m) => Error::Panicked(m),
            Error::TransactionEnded => Error::TransactionEnded,
            Error::Closed => Error::Closed,
            Error::Full => Error::Full,
            Error::Reentrant => Error::Reentrant,
            Error::InvalidKey(k) => Error::InvalidKey(k),
            Error::Config(m) => Error::Config(m),
            Error::Indeterminate => Error::Indeterminate,
        })
    }

    /// A short, stable, machine-readable name of the variant (`"timeout"`, `"op"`, …),
    /// used in histories and reports.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Op(_) => "op",
            Error::Timeout { .. } => "timeout",
            Error::Contended { .. } => "contended",
            Error::Unavailable(_) => "unavailable",
            Error::Resource(_) => "resource",
            Error::LeaseLost => "lease-lost",
            Error::StaleFence { .. } => "stale-fence",
            Error::Panicked(_) => "panicked",
            Error::TransactionEnded => "transaction-ended",
            Error::Closed => "closed",
            Error::Full => "full",
            Error::Reentrant => "reentrant",
            Error::InvalidKey(_) => "invalid-key",
            Error::Config(_) => "config",
            Error::Indeterminate => "indeterminate",
        }
    }

    /// Wraps a backend error as [`Error::Unavailable`].
    pub fn unavailable(e: impl Into<BoxError>) -> Self {
        Error::Unavailable(e.into())
    }

    /// Wraps a resource error as [`Error::Resource`].
    pub fn resource(e: impl Into<BoxError>) -> Self {
        Error::Resource(e.into())
    }

    /// What a strategy reports for the error of
    /// [`Connect::connect`](crate::Connect::connect): [`Error::Config`] with its message
    /// when it is a [`ConfigError`] (the resource's own setup is at fault, and no retry
    /// will help), else [`Error::Unavailable`].
    ///
    /// ```
    /// use turnstile_core::{BoxError, ConfigError, Error, StrategyError};
    ///
    /// let setup: BoxError = Box::new(ConfigError::new("no WAL in memory"));
    /// let e: StrategyError = Error::from_connect(setup);
    /// assert!(matches!(&e, Error::Config(m) if m == "no WAL in memory"));
    /// let down: BoxError = "connection refused".into();
    /// assert!(matches!(Error::<()>::from_connect(down), Error::Unavailable(_)));
    /// ```
    pub fn from_connect(error: BoxError) -> Self {
        match error.downcast::<ConfigError>() {
            Ok(config) => Error::Config(config.0),
            Err(error) => Error::Unavailable(error),
        }
    }
}

/// A [`Connect::connect`](crate::Connect::connect) error that is the resource's own
/// configuration at fault, not its backend (SQLite's WAL asked of an in-memory database):
/// connecting again cannot help. Strategies report it as [`Error::Config`] (see
/// [`Error::from_connect`]), whose message is this one's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError(String);

impl ConfigError {
    /// A configuration error saying `message`.
    pub fn new(message: impl Into<String>) -> Self {
        ConfigError(message.into())
    }

    /// Its message.
    pub fn message(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid configuration: {}", self.0)
    }
}

impl std::error::Error for ConfigError {}

impl Error<Infallible> {
    /// Re-types a strategy-only error for any op error type.
    pub fn widen<E>(self) -> Error<E> {
        match self.strategy_only() {
            Ok(e) => e,
            Err(never) => match never {},
        }
    }
}

impl<E> From<KeyError> for Error<E> {
    fn from(e: KeyError) -> Self {
        Error::InvalidKey(e)
    }
}

impl<E: fmt::Display> fmt::Display for Error<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Op(e) => write!(f, "operation failed: {e}"),
            Error::Timeout { waited } => {
                write!(
                    f,
                    "timed out after {waited:?} waiting to start; the op did not run"
                )
            }
            Error::Contended { attempts, elapsed } => write!(
                f,
                "gave up after {attempts} attempts in {elapsed:?} of contention; rolled back"
            ),
            Error::Unavailable(e) => write!(f, "backend unavailable: {e}"),
            Error::Resource(e) => write!(f, "resource failed outside the op: {e}"),
            Error::LeaseLost => f.write_str("the lock lease was lost before commit; rolled back"),
            Error::StaleFence { presented, highest } => write!(
                f,
                "stale fencing token {presented} (the resource has seen {highest}); nothing written"
            ),
            Error::Panicked(m) => write!(f, "the op panicked: {m}"),
            Error::TransactionEnded => f.write_str(
                "the op ended the strategy's transaction by itself; what it wrote may have \
                     committed, before that and after it (only a transaction it left open \
                     was rolled back)",
            ),
            Error::Closed => f.write_str("the strategy is closed"),
            Error::Full => f.write_str("the queue is full"),
            Error::Reentrant => f.write_str(
                "the op called back into a strategy it is running inside; that would deadlock",
            ),
            Error::InvalidKey(e) => write!(f, "invalid lock key: {e}"),
            Error::Config(m) => write!(f, "invalid configuration: {m}"),
            Error::Indeterminate => f.write_str(
                "the op's outcome is not known (the wait ended after it started, or the \
                 answer to its COMMIT was lost); it may or may not have committed",
            ),
        }
    }
}

impl<E: std::error::Error + 'static> std::error::Error for Error<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Op(e) => Some(e),
            Error::Unavailable(e) | Error::Resource(e) => Some(&**e),
            Error::InvalidKey(e) => Some(e),
            _ => None,
        }
    }
}

/// Finds an error of type `T` in an op's error, looking through the boxes put around it.
///
/// This is how a resource's [`Transact::is_busy`](crate::Transact::is_busy) and
/// [`Connect::is_broken`](crate::Connect::is_broken) find their driver's error (say
/// `rusqlite::Error`) in the `&dyn Any` a strategy hands them. It looks at:
/// - `error` itself: an op that returns the driver's error type;
/// - inside an [`AnyError`](crate::AnyError) box, as often as it is nested: the op's error
///   of a strategy run through [`DynSerializer`](crate::DynSerializer) (a
///   [`BoxSerializer`](crate::BoxSerializer) opened from a spec) arrives boxed so;
/// - inside a [`BoxError`], then down its [`source`](std::error::Error::source) chain:
///   an application's own error type, boxed, whose `source()` is (or leads to) the
///   driver's error. On that chain a [`std::io::Error`] wrapping another error
///   (`io::Error::other(e)`) and a [`SharedError`] (an `Arc` of one error that several
///   failures share, as a queue hands its batch lock's error to every caller of the
///   batch) are looked into too, since their `source()` skips the error they hold.
///
/// Any other type is opaque, and `None` comes back: a strategy's op error type is only
/// `Send + Sync + 'static`, so an unboxed error type of the application's own cannot be
/// seen as a `std::error::Error` here. Box it (`Box::new(e) as BoxError`, or `e.into()`)
/// to have a busy or broken driver error inside it classified.
///
/// ```
/// use std::{fmt, io};
/// use turnstile_core::{AnyError, BoxError, find_error};
///
/// #[derive(Debug)]
/// struct AppError(io::Error);
/// impl fmt::Display for AppError {
///     fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
///         f.write_str("app failed")
///     }
/// }
/// impl std::error::Error for AppError {
///     fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
///         Some(&self.0)
///     }
/// }
///
/// let boxed: BoxError = Box::new(AppError(io::Error::from(io::ErrorKind::BrokenPipe)));
/// let found = find_error::<io::Error>(&boxed).map(io::Error::kind);
/// assert_eq!(found, Some(io::ErrorKind::BrokenPipe));
/// // Erased again, as a boxed strategy erases its op's error: still found.
/// let erased: AnyError = Box::new(boxed);
/// assert!(find_error::<io::Error>(&erased).is_some());
/// // The application's type unboxed is opaque.
/// let opaque = AppError(io::Error::from(io::ErrorKind::BrokenPipe));
/// assert!(find_error::<io::Error>(&opaque).is_none());
/// ```
pub fn find_error<T: std::error::Error + 'static>(
    error: &(dyn std::any::Any + Send + Sync),
) -> Option<&T> {
    let mut error = error;
    for _ in 0..MAX_NESTING {
        if let Some(found) = error.downcast_ref::<T>() {
            return Some(found);
        }
        if let Some(inner) = error.downcast_ref::<crate::AnyError>() {
            error = &**inner;
        } else if let Some(boxed) = error.downcast_ref::<BoxError>() {
            return find_in_chain(&**boxed);
        } else {
            return None;
        }
    }
    None
}

/// One error shared by several failures: what a strategy that answers several callers
/// with one backend error puts in each [`Error::Unavailable`] or [`Error::Resource`] (a
/// `BoxError` is not `Clone`). Its [`Display`](fmt::Display) and
/// [`source()`](std::error::Error::source) are the shared error's own, so a message shows
/// it once and a walk down the chain reaches the driver's error under it;
/// [`find_error`] looks into the `Arc` too, finding the shared error itself.
///
/// ```
/// use std::sync::Arc;
/// use turnstile_core::{BoxError, Error, SharedError, StrategyError, find_error};
///
/// let shared: SharedError = Arc::new(std::io::Error::other("refused"));
/// let copies: Vec<StrategyError> =
///     (0..2).map(|_| Error::Unavailable(Box::new(shared.clone()))).collect();
/// for e in &copies {
///     assert_eq!(e.to_string(), "backend unavailable: refused");
///     let Error::Unavailable(source) = e else { unreachable!() };
///     assert!(find_error::<std::io::Error>(source).is_some());
/// }
/// ```
pub type SharedError = std::sync::Arc<dyn std::error::Error + Send + Sync + 'static>;

/// How deep [`find_error`] looks: far past any real nesting, and a bound on a `source()`
/// chain that loops.
const MAX_NESTING: usize = 64;

fn find_in_chain<'a, T: std::error::Error + 'static>(
    error: &'a (dyn std::error::Error + 'static),
) -> Option<&'a T> {
    let mut next = Some(error);
    for _ in 0..MAX_NESTING {
        let error = next?;
        if let Some(found) = error.downcast_ref::<T>() {
            return Some(found);
        }
        next = if let Some(io) = error.downcast_ref::<std::io::Error>() {
            io.get_ref()
                .map(|inner| inner as &(dyn std::error::Error + 'static))
        } else if let Some(shared) = error.downcast_ref::<SharedError>() {
            // Its `source()` is the shared error's own, skipping the shared error itself.
            Some(&**shared as &(dyn std::error::Error + 'static))
        } else {
            error.source()
        };
    }
    None
}

/// A panic payload as text, for [`Error::Panicked`].
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&'static str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync + 'static>() {}

    #[test]
    fn error_is_send_sync() {
        assert_send_sync::<Error<std::io::Error>>();
        assert_send_sync::<StrategyError>();
    }

    #[test]
    fn op_errors_stay_matchable_and_have_a_source() {
        let e: Error<std::io::Error> = Error::Op(std::io::Error::other("boom"));
        assert_eq!(e.kind(), "op");
        assert!(std::error::Error::source(&e).is_some());
        assert_eq!(e.into_op().unwrap().to_string(), "boom");
    }

    /// An application's error whose `source()` is the error it wraps.
    #[derive(Debug)]
    struct Wrapper(BoxError);

    impl fmt::Display for Wrapper {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "wrapped: {}", self.0)
        }
    }

    impl std::error::Error for Wrapper {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&*self.0)
        }
    }

    /// A broken `source()` that names itself.
    #[derive(Debug)]
    struct Loop;

    impl fmt::Display for Loop {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("loop")
        }
    }

    impl std::error::Error for Loop {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(self)
        }
    }

    fn broken_pipe() -> std::io::Error {
        std::io::Error::from(std::io::ErrorKind::BrokenPipe)
    }

    fn kind_found(error: &(dyn std::any::Any + Send + Sync)) -> Option<std::io::ErrorKind> {
        find_error::<std::io::Error>(error).map(std::io::Error::kind)
    }

    #[test]
    fn find_error_sees_through_erasure_boxes_and_source_chains() {
        let pipe = Some(std::io::ErrorKind::BrokenPipe);
        // The error itself.
        assert_eq!(kind_found(&broken_pipe()), pipe);
        // Erased twice, as nested boxed strategies erase an op's error.
        let erased: crate::AnyError = Box::new(Box::new(broken_pipe()) as crate::AnyError);
        assert_eq!(kind_found(&erased), pipe);
        // Two wrappers deep in a boxed chain, then erased.
        let chain: BoxError = Box::new(Wrapper(Box::new(Wrapper(Box::new(broken_pipe())))));
        assert_eq!(kind_found(&chain), pipe);
        let erased: crate::AnyError = Box::new(chain);
        assert_eq!(kind_found(&erased), pipe);
        // Inside an io::Error that wraps another error, whose source() skips it.
        let inner: BoxError = Box::new(Wrapper(Box::new(Loop)));
        let wrapped: BoxError = Box::new(std::io::Error::other(Wrapper(inner)));
        assert!(find_error::<Wrapper>(&wrapped).is_some());
        let wrapped: BoxError = Box::new(Wrapper(Box::new(std::io::Error::other(Wrapper(
            Box::new(broken_pipe()),
        )))));
        // The outer io::Error (kind Other) is found first, as the nearest one.
        assert_eq!(kind_found(&wrapped), Some(std::io::ErrorKind::Other));
        // A turnstile Error whose Op is the driver's error, boxed (a nested strategy).
        let nested: BoxError = Box::new(Error::Op(broken_pipe()));
        assert_eq!(kind_found(&nested), pipe);
    }

    #[test]
    fn find_error_finds_nothing_in_opaque_types_and_ends_on_a_looping_chain() {
        // An application's error type unboxed: not seen into.
        assert_eq!(kind_found(&Wrapper(Box::new(broken_pipe()))), None);
        // Another type altogether.
        assert_eq!(kind_found(&"busy"), None);
        let erased: crate::AnyError = Box::new(7u32);
        assert_eq!(kind_found(&erased), None);
        // A chain without the type, one that loops, and a plain io::Error's end.
        let chain: BoxError = Box::new(Wrapper(Box::new(Loop)));
        assert_eq!(kind_found(&chain), None);
        assert!(find_error::<Wrapper>(&chain).is_some());
        let plain: BoxError = Box::new(std::io::Error::other("no inner error"));
        assert!(find_error::<Loop>(&plain).is_none());
    }

    #[test]
    fn widen_keeps_the_variant() {
        let e: Error<String> = StrategyError::Timeout {
            waited: Duration::from_millis(5),
        }
        .widen();
        assert!(matches!(e, Error::Timeout { .. }));
    }

    #[test]
    fn only_indeterminate_and_transaction_ended_may_have_committed() {
        let every: Vec<Error<std::io::Error>> = vec![
            Error::Op(std::io::Error::other("op")),
            Error::Timeout {
                waited: Duration::ZERO,
            },
            Error::Contended {
                attempts: 1,
                elapsed: Duration::ZERO,
            },
            Error::Unavailable("down".into()),
            Error::Resource("failed".into()),
            Error::LeaseLost,
            Error::StaleFence {
                presented: Fence(1),
                highest: Fence(2),
            },
            Error::Panicked("boom".into()),
            Error::TransactionEnded,
            Error::Closed,
            Error::Full,
            Error::Reentrant,
            Error::InvalidKey(KeyError::Empty),
            Error::Config("bad".into()),
            Error::Indeterminate,
        ];
        for e in &every {
            let may = matches!(e, Error::Indeterminate | Error::TransactionEnded);
            assert_eq!(e.may_have_committed(), may, "{}", e.kind());
            // Unchanged: only Indeterminate is indeterminate.
            assert_eq!(
                e.is_indeterminate(),
                matches!(e, Error::Indeterminate),
                "{}",
                e.kind()
            );
        }
    }
}
