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
    MAX_DIR_PATH, MAX_STRIPES,
};
#[cfg(feature = "mysql")]
pub mod mysql;
#[cfg(feature = "mysql")]
pub use self::mysql::{
    GetLockNull, MySqlLease, MySqlLock, server_lock_name as mysql_server_lock_name,
};
#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(feature = "postgres")]
pub use self::postgres::{
    DEFAULT_XACT_POOL_SIZE, DEFAULT_XACT_TIMEOUT, PgXactLocked, PostgresLease, PostgresLock,
    advisory_key,
};
