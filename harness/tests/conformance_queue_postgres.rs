//! The composed `queue+postgres://…` (a queue in each process whose worker takes a fenced
//! PostgreSQL session advisory lock once per batch) against `TURNSTILE_POSTGRES_URL`: the
//! whole suite, across processes and under SIGKILL (a killed worker's session ends, and
//! the server frees its lock).

use turnstile_harness::conformance::postgres_url;

fn spec() -> String {
    format!("queue+{}", postgres_url())
}

turnstile_harness::conformance_suite!(queue_postgres, &spec(), procs = true, kill = true);
