//! # turnstile-core
//!
//! The contract every turnstile strategy implements, with no backend dependencies. Users
//! add the `turnstile` crate, which re-exports all of this next to the strategies.
//!
//! - [`Serializer`] runs an op with exclusive access for a [`Key`]; the op gets a [`Ctx`]
//!   (the resource, the keys, the fence, the attempt, the deadline). Strategies chosen at
//!   run time use the dyn-compatible [`DynSerializer`].
//! - [`Capabilities`] say what a strategy promises: how far it excludes, whether it reruns
//!   ops, whether it fences, whether a paused holder can lose its lock.
//! - [`Error`] separates the op's own error ([`Error::Op`]) from every way the strategy can
//!   fail, including [`Error::Indeterminate`].
//! - [`Lock`] and [`Lease`] are what a lock backend implements; [`Connect`] and
//!   [`Transact`] are what a resource implements.
#![forbid(unsafe_code)]

mod error;
mod key;
mod lock;
mod resource;
mod serializer;

pub use error::{
    BoxError, ConfigError, Error, SharedError, StrategyError, find_error, panic_message,
};
pub use key::{Key, KeyError, MAX_KEY_LEN, stable_hash64};
pub use lock::{Fence, Lease, Lock, LockName};
pub use resource::{Connect, FenceClaim, Flush, Transact, TransactError, TxCounts};
pub use serializer::{
    AnyError, AnyValue, BoxSerializer, Capabilities, Ctx, DynOp, DynSerializer, HolderDeath,
    MAX_TIMEOUT, Scope, Serializer, Wait, check_timeout, sorted_keys,
};
