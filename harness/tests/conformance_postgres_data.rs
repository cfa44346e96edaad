//! Locks over PostgreSQL *data* (`TURNSTILE_POSTGRES_URL`, default
//! `postgres://postgres@127.0.0.1:5432/test`; the suites fail when the server is down):
//! the whole suite for the session advisory lock (`postgres://…`) and for `pg-xact`, the
//! transaction advisory lock taken inside the data's own transaction. Each run keeps its
//! data in tables of its own in the shared database and drops them at the end.
//!
//! In autocommit (threads and processes) each statement of an op commits by itself on
//! the server, so only the lock stands between two ops; `pg-xact`'s mechanism is the
//! transaction, so it always runs inside it. A SIGKILLed holder's session ends: the server
//! frees its lock and rolls its transaction back.
#![cfg(feature = "postgres")]

use turnstile_harness::conformance::{postgres_data, postgres_url};

turnstile_harness::conformance_suite!(
    postgres_lock,
    &postgres_url(),
    procs = true,
    kill = true,
    data = postgres_data()
);

// ANCHOR: data_line
turnstile_harness::conformance_suite!(
    pg_xact,
    "pg-xact",
    procs = true,
    kill = true,
    data = postgres_data()
);
// ANCHOR_END: data_line
