//! The composed `queue+postgres://…` (a queue in each process whose worker takes a fenced
//! PostgreSQL session advisory lock once per batch) against `TURNSTILE_POSTGRES_URL`: the
//! whole suite, across processes and under SIGKILL (a killed worker's session ends, and
//! the server frees its lock), over SQLite data on this host and over data in the
//! PostgreSQL server itself — what every host shares.

use turnstile_harness::conformance::{postgres_data, postgres_url};

fn spec() -> String {
    format!("queue+{}", postgres_url())
}

turnstile_harness::conformance_suite!(queue_postgres, &spec(), procs = true, kill = true);

turnstile_harness::conformance_suite!(
    queue_postgres_over_postgres_data,
    &spec(),
    procs = true,
    kill = true,
    data = postgres_data()
);
