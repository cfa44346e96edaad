//! Lock backends: the small trait each backend implements, in the spirit of
//! `lock_api::RawMutex`. All ergonomics (resource pools, transactions, fences, several
//! keys, panics) live once, in the generic `Locked` strategy of the `turnstile` crate.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use crate::{Capabilities, Key, StrategyError, stable_hash64};

/// A fencing token: a number that rises every time a lease on a name is granted.
///
/// A holder presents it to the resource; the resource refuses a token lower than the
/// highest it has recorded for that name, so a holder whose lease expired while it was
/// paused cannot write after its successor did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Fence(pub u64);

impl fmt::Display for Fence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// The name a backend locks: a [`Key`] inside a namespace (the identity of the resource it
/// guards), so two databases never share lock names.
///
/// Backends map it onto their own key space through [`LockName::bytes`] (compare, store)
/// or [`LockName::stable_hash`] (stripes, integer keys); its text never reaches a path or
/// a query string.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LockName {
    namespace: Arc<str>,
    key: Key,
    bytes: Box<[u8]>,
}

impl LockName {
    /// The lock name for `key` inside `namespace`.
    pub fn new(namespace: impl Into<Arc<str>>, key: Key) -> Self {
        let namespace = namespace.into();
        let bytes = key.scoped(&namespace).into_boxed_slice();
        LockName {
            namespace,
            key,
            bytes,
        }
    }

    /// The namespace part.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The key part.
    pub fn key(&self) -> &Key {
        &self.key
    }

    /// The whole name as bytes: namespace, a NUL, key (see [`Key::scoped`]).
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// [`stable_hash64`] of [`LockName::bytes`].
    pub fn stable_hash(&self) -> u64 {
        stable_hash64(&self.bytes)
    }
}

impl fmt::Debug for LockName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}/{:?}", self.namespace, self.key)
    }
}

impl fmt::Display for LockName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.key)
    }
}

/// A lock backend: grants exclusive leases on names.
///
/// Implementations must be safe to share between threads; a lease is owned by one thread
/// at a time. `acquire` must return by `deadline` (with [`Error::Timeout`] when the name
/// stayed held, [`Error::Unavailable`] when the backend could not be reached); `None`
/// means wait for as long as it takes.
///
/// [`Error::Timeout`]: crate::Error::Timeout
/// [`Error::Unavailable`]: crate::Error::Unavailable
pub trait Lock: Send + Sync + 'static {
    /// A held lock. Dropping it releases it.
    type Lease: Lease;

    /// What this backend promises: its scope, fencing, what happens when a holder dies.
    /// `Locked` adds what the resource's transaction adds.
    fn capabilities(&self) -> Capabilities;

    /// A stable identity of the backend (e.g. `"redis://host:6379/0"`), used with the
    /// lock name to record fences: fences of different backends are not comparable.
    fn backend_id(&self) -> &str;

    /// Acquires an exclusive lease on `name`, waiting until `deadline` at most.
    ///
    /// # Errors
    /// [`Error::Timeout`](crate::Error::Timeout) when still held by someone else at the
    /// deadline; [`Error::Unavailable`](crate::Error::Unavailable) when the backend failed.
    fn acquire(
        &self,
        name: &LockName,
        deadline: Option<Instant>,
    ) -> Result<Self::Lease, StrategyError>;

    /// Where `name` sits in this backend's lock order. Strategies that hold several names
    /// at once acquire them in ascending order of this key, and take names with equal keys
    /// once, so two callers can't deadlock even when a backend maps several names onto one
    /// lock (file-lock's stripes). Default: the name's bytes (one lock per name).
    fn order_key<'a>(&self, name: &'a LockName) -> Cow<'a, [u8]> {
        Cow::Borrowed(name.bytes())
    }
}

/// A held lock. Released on [`Lease::release`] or on drop.
#[must_use = "a lease is released as soon as it is dropped"]
pub trait Lease: Send {
    /// The fencing token of this lease, for backends that issue one.
    fn fence(&self) -> Option<Fence> {
        None
    }

    /// Checks that the lease is still held (not expired, connection alive).
    ///
    /// # Errors
    /// [`Error::LeaseLost`](crate::Error::LeaseLost) when it is not.
    fn check(&self) -> Result<(), StrategyError> {
        Ok(())
    }

    /// Releases the lease explicitly, reporting a failure that `Drop` would swallow.
    ///
    /// # Errors
    /// [`Error::LeaseLost`](crate::Error::LeaseLost) when it had already been lost, or
    /// [`Error::Unavailable`](crate::Error::Unavailable) when the backend failed.
    fn release(self) -> Result<(), StrategyError>
    where
        Self: Sized,
    {
        drop(self);
        Ok(())
    }
}
