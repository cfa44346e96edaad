//! The cross-process lock a [`Queue`](super::Queue)'s worker takes around each batch: any
//! [`Lock`] backend, type-erased so that `Queue<C>` keeps one type with or without a
//! lock, and the spec registrations `queue+file-lock`, `queue+redis://…`,
//! `queue+redlock://…`.

use std::time::Instant;

use turnstile_core::{
    BoxError, Capabilities, Error, Fence, Lease, Lock, LockName, SharedError, StrategyError,
};

/// The longest sleep between two polls of `queue+file-lock`'s file lock: 1 ms. Only the
/// worker of each process polls, so polling often is cheap, and polling often is what
/// lets it catch the lock in another worker's short
/// [hand-off pause](super::DEFAULT_HANDOFF_PAUSE).
#[cfg(feature = "file-lock")]
pub(super) const QUEUE_FILE_LOCK_POLL: std::time::Duration = std::time::Duration::from_millis(1);

/// A [`Lock`] behind a `dyn`: one acquire per batch makes the virtual call free.
pub(super) trait BatchLock: Send + Sync {
    fn capabilities(&self) -> Capabilities;
    fn backend_id(&self) -> &str;
    fn acquire(
        &self,
        name: &LockName,
        deadline: Option<Instant>,
    ) -> Result<Box<dyn BatchLease>, StrategyError>;
}

/// A [`Lease`] behind a `dyn`.
pub(super) trait BatchLease: Send {
    fn fence(&self) -> Option<Fence>;
    fn check(&self) -> Result<(), StrategyError>;
    fn release(self: Box<Self>) -> Result<(), StrategyError>;
}

impl<L: Lock> BatchLock for L {
    fn capabilities(&self) -> Capabilities {
        Lock::capabilities(self)
    }

    fn backend_id(&self) -> &str {
        Lock::backend_id(self)
    }

    fn acquire(
        &self,
        name: &LockName,
        deadline: Option<Instant>,
    ) -> Result<Box<dyn BatchLease>, StrategyError> {
        Lock::acquire(self, name, deadline).map(|lease| Box::new(lease) as Box<dyn BatchLease>)
    }
}

impl<T: Lease + 'static> BatchLease for T {
    fn fence(&self) -> Option<Fence> {
        Lease::fence(self)
    }

    fn check(&self) -> Result<(), StrategyError> {
        Lease::check(self)
    }

    fn release(self: Box<Self>) -> Result<(), StrategyError> {
        Lease::release(*self)
    }
}

/// `e` made ready for [`copy_error`]: the backend error of an [`Error::Unavailable`] or
/// [`Error::Resource`] put in a [`SharedError`] (once: one a nested queue shared already
/// is shared as it is), so that every copy holds that same error.
pub(super) fn share(e: StrategyError) -> StrategyError {
    fn shared(e: BoxError) -> BoxError {
        match e.downcast::<SharedError>() {
            Ok(shared) => shared,
            Err(e) => Box::new(SharedError::from(e)),
        }
    }
    match e {
        Error::Unavailable(e) => Error::Unavailable(shared(e)),
        Error::Resource(e) => Error::Resource(shared(e)),
        other => other,
    }
}

/// A copy of a strategy failure made ready by [`share`], to answer every job of a batch
/// with the one error its lock gave: the same variant, and for a backend error the same
/// [`SharedError`] (backend errors are not `Clone`), whose message shows once and whose
/// `source()` chain still leads to the driver's error.
pub(super) fn copy_error(e: &StrategyError) -> StrategyError {
    fn copy(e: &BoxError) -> BoxError {
        match e.downcast_ref::<SharedError>() {
            Some(shared) => Box::new(shared.clone()),
            // Not made ready by `share`: its text alone.
            None => e.to_string().into(),
        }
    }
    match e {
        Error::Op(never) => match *never {},
        Error::Timeout { waited } => Error::Timeout { waited: *waited },
        Error::Contended { attempts, elapsed } => Error::Contended {
            attempts: *attempts,
            elapsed: *elapsed,
        },
        Error::Unavailable(e) => Error::Unavailable(copy(e)),
        Error::Resource(e) => Error::Resource(copy(e)),
        Error::LeaseLost => Error::LeaseLost,
        Error::StaleFence { presented, highest } => Error::StaleFence {
            presented: *presented,
            highest: *highest,
        },
        Error::Panicked(m) => Error::Panicked(m.clone()),
        Error::TransactionEnded => Error::TransactionEnded,
        Error::Closed => Error::Closed,
        Error::Full => Error::Full,
        Error::Reentrant => Error::Reentrant,
        Error::InvalidKey(k) => Error::InvalidKey(k.clone()),
        Error::Config(m) => Error::Config(m.clone()),
        Error::Indeterminate => Error::Indeterminate,
        // A variant core adds later, until it is copied above: its text.
        other => Error::unavailable(other.to_string()),
    }
}

/// Registers the queue-in-front-of-a-lock strategies over SQLite that are compiled in:
/// `queue+file-lock[:DIR]`, `queue+redis://…` (and `queue+rediss://…`,
/// `queue+redis+unix://…`), `queue+redlock://h1:p1,h2:p2,…` (and `queue+redlocks://…`).
/// Each takes what the plain lock spec after `queue+` takes; Redis servers are pinged at
/// once, so a wrong address shows as [`Error::Unavailable`] when the spec is opened.
/// (`queue+mysql://…` and `queue+postgres://…` are registered with their plain locks,
/// over any resource.)
#[cfg(feature = "sqlite")]
#[cfg_attr(
    not(any(feature = "file-lock", feature = "redis")),
    allow(unused_variables)
)]
pub(crate) fn register(registry: &mut crate::spec::Registry<crate::sqlite::Sqlite>) {
    #[cfg(feature = "redis")]
    use crate::spec::{Setup, Spec, lock_url};
    #[cfg(feature = "redis")]
    use crate::sqlite::Sqlite;

    #[cfg(feature = "file-lock")]
    registry.register(
        "queue+file-lock",
        "a queue per process whose worker takes a file lock once per batch (processes on one host); queue+file-lock:DIR sets the lock directory",
        |spec, setup| {
            use crate::lock::FileLock;
            let dir = match spec.arg() {
                None => FileLock::dir_beside(setup.connect.path()),
                Some(dir) => dir.into(),
            };
            setup.queued(FileLock::builder(dir).max_poll(QUEUE_FILE_LOCK_POLL).open()?)
        },
    );
    #[cfg(feature = "redis")]
    {
        use crate::lock::redis::url_form;
        // The form of a `queue+` scheme's URL: the plain lock's, after `queue+`.
        fn form(spec: &Spec) -> String {
            let scheme = spec.name().strip_prefix("queue+").unwrap_or(spec.name());
            format!("queue+{}", url_form(scheme))
        }
        let single = |spec: &Spec, setup: &Setup<Sqlite>| {
            let url = lock_url(spec, &form(spec))?;
            let lock = crate::lock::RedisLock::builder_from_url(url)?.build()?;
            lock.ping()?;
            setup.queued(lock)
        };
        for scheme in ["redis", "rediss", "redis+unix"] {
            registry.register(
                &format!("queue+{scheme}"),
                &format!(
                    "a queue per process whose worker takes a Redis lease once per batch, fenced (hosts): queue+{}",
                    url_form(scheme)
                ),
                single,
            );
        }
        for scheme in ["redlock", "redlocks"] {
            registry.register(
                &format!("queue+{scheme}"),
                &format!(
                    "a queue per process whose worker takes a Redlock quorum once per batch; no fencing (hosts): queue+{}",
                    url_form(scheme)
                ),
                |spec, setup| {
                    let url = lock_url(spec, &form(spec))?;
                    let lock = crate::lock::RedlockLock::builder_from_url(url)?.build()?;
                    lock.ping_all()?;
                    setup.queued(lock)
                },
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn copies_keep_the_variant_and_share_the_backend_error() {
        let io = || std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let every: Vec<StrategyError> = vec![
            Error::Timeout {
                waited: Duration::from_millis(1),
            },
            Error::Contended {
                attempts: 2,
                elapsed: Duration::from_millis(3),
            },
            Error::Unavailable(Box::new(io())),
            Error::Resource(Box::new(io())),
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
            Error::InvalidKey(turnstile_core::KeyError::Empty),
            Error::Config("bad".into()),
            Error::Indeterminate,
        ];
        for e in every {
            let (kind, text) = (e.kind(), e.to_string());
            let shared = share(e);
            // Shared again (a queue in front of a queue): the same error, not a wrapper.
            let shared = share(copy_error(&shared));
            for copy in [copy_error(&shared), copy_error(&shared)] {
                assert_eq!(copy.kind(), kind);
                assert_eq!(copy.to_string(), text);
                if let Error::Unavailable(source) | Error::Resource(source) = &copy {
                    let found = turnstile_core::find_error::<std::io::Error>(source);
                    assert_eq!(
                        found.map(std::io::Error::kind),
                        Some(std::io::ErrorKind::ConnectionRefused)
                    );
                    let arc = source.downcast_ref::<SharedError>().unwrap();
                    // The original, the shared one and the two copies.
                    assert!(std::sync::Arc::strong_count(arc) >= 3);
                }
            }
        }
    }
}
