//! # turnstile
//!
//! Serialize access to a shared resource — first of all a SQLite database — across
//! threads, processes and hosts, with interchangeable strategies behind one trait,
//! [`Serializer`]. Pick a strategy by what it must exclude across (see each one's
//! [`Capabilities`]); the `turnstile-harness` crate proves which are correct and how fast.
//!
//! ```
//! use turnstile::{Key, Locked, Serializer};
//! use turnstile::lock::MutexLock;
//! use turnstile::sqlite::{Sqlite, Synchronous};
//!
//! let dir = tempfile::tempdir()?;
//! let db = Sqlite::new(dir.path().join("app.db")).synchronous(Synchronous::Normal);
//! let strategy = Locked::new(MutexLock::new(), db);
//! let key = Key::whole();
//! strategy.run(&key, |db| db.execute_batch("CREATE TABLE IF NOT EXISTS hits (n INTEGER)"))?;
//! strategy.run(&key, |db| db.execute("INSERT INTO hits VALUES (1)", []))?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ## Features
//! Each strategy is behind a Cargo feature of its name. Default: the embedded ones
//! (`sqlite`, `queue`, `mutex`, `file-lock`, `retry`); `redis`, `mysql`, `postgres` and
//! `optimistic` are opt-in, and `redis-tls` adds TLS (`rediss://`) to `redis`;
//! `redis-tls-preload-roots` makes new TLS connections cheaper (see the TLS section of
//! the `lock::redis` module).
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_auto_cfg))]

pub use turnstile_core::*;

mod holding;
pub mod lock;
pub mod locked;
#[cfg(feature = "optimistic")]
pub mod optimistic;
mod pool;
#[cfg(feature = "queue")]
pub mod queue;
#[cfg(any(feature = "mysql", feature = "postgres"))]
pub mod resource;
#[cfg(feature = "retry")]
pub mod retry;
pub mod spec;
#[cfg(feature = "sqlite")]
pub mod sqlite;

pub use locked::{KeyScope, Locked, TxMode};

/// The `mutex` strategy: an in-process per-key lock table around a resource.
#[cfg(feature = "mutex")]
pub type MutexStrategy<C> = Locked<lock::MutexLock, C>;

/// The README's example, compiled and run as a doctest.
#[doc = include_str!("../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
