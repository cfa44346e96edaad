//! Lock backends. Each implements [`Lock`](crate::Lock); wrap one in
//! [`Locked`](crate::Locked) to get a strategy.

#[cfg(feature = "mutex")]
mod mutex;
#[cfg(feature = "mutex")]
pub use mutex::{FAIR_INTERVAL, MutexLease, MutexLock};
#[cfg(feature = "redis")]
pub mod redis;
#[cfg(feature = "redis")]
pub use self::redis::{RedisLease, RedisLock, RedisLockBuilder, RedlockLease, RedlockLock};
#[cfg(feature = "file-lock")]
mod file;
#[cfg(feature = "file-lock")]
pub use file::{
    DEFAULT_MAX_POLL, DEFAULT_STRIPES, FileLease, FileLock, FileLockBuilder, FileLockError,
    MAX_STRIPES,
};
