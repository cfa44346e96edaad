//! `optimistic`'s conformance suites, on versioned records in SQLite, PostgreSQL
//! (`TURNSTILE_POSTGRES_URL`) and MySQL (`TURNSTILE_MYSQL_URL`): threads, processes, and
//! SIGKILLs (a killed writer's commit transaction is rolled back by the store; nothing is
//! held that a successor would wait for).
//!
//! It does not exclude: for `notify_once` (a side effect outside the records, repeated by
//! reruns and by concurrent ops) and `file_store` (a file no record protects) each suite
//! asserts that the harness catches it instead of passing.
#![cfg(feature = "optimistic")]

#[cfg(feature = "mysql")]
use turnstile_harness::conformance::mysql_data;
#[cfg(feature = "postgres")]
use turnstile_harness::conformance::postgres_data;

turnstile_harness::conformance_suite!(sqlite, "optimistic", procs = true, kill = true);

#[cfg(feature = "postgres")]
turnstile_harness::conformance_suite!(
    postgres,
    "optimistic",
    procs = true,
    kill = true,
    data = postgres_data()
);

#[cfg(feature = "mysql")]
turnstile_harness::conformance_suite!(
    mysql,
    "optimistic",
    procs = true,
    kill = true,
    data = mysql_data()
);
