//! The cross-process lock a [`Queue`](super::Queue)'s worker takes around each batch: any
//! [`Lock`] backend, type-erased so that `Queue<C>` keeps one type with or without a
//! lock, and the spec registrations `queue+file-lock`, `queue+redis://…`,
//! `queue+redlock://…`.

use std::time::Instant;

use turnstile_core::{Capabilities, Error, Fence, Lease, Lock, LockName, StrategyError};

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

/// A copy of a strategy failure, to answer every job of a batch with the one error its
/// lock gave (backend errors are not `Clone`; their text is kept).
pub(super) fn copy_error(e: &StrategyError) -> StrategyError {
    match e {
        Error::Timeout { waited } => Error::Timeout { waited: *waited },
        Error::LeaseLost => Error::LeaseLost,
        Error::StaleFence { presented, highest } => Error::StaleFence {
            presented: *presented,
            highest: *highest,
        },
        Error::Config(m) => Error::Config(m.clone()),
        Error::InvalidKey(k) => Error::InvalidKey(k.clone()),
        Error::Closed => Error::Closed,
        Error::Resource(r) => Error::resource(r.to_string()),
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
