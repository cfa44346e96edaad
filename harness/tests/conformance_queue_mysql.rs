//! The composed `queue+mysql://…` (a queue in each process whose worker takes a fenced
//! MySQL / MariaDB `GET_LOCK` once per batch) against `TURNSTILE_MYSQL_URL`: the whole
//! suite, across processes and under SIGKILL (a killed worker's session ends, and the
//! server frees its lock).

use turnstile_harness::conformance::mysql_url;

fn spec() -> String {
    format!("queue+{}", mysql_url())
}

turnstile_harness::conformance_suite!(queue_mysql, &spec(), procs = true, kill = true);
