//! The composed `queue+mysql://…` (a queue in each process whose worker takes a fenced
//! MySQL / MariaDB `GET_LOCK` once per batch) against `TURNSTILE_MYSQL_URL`: the whole
//! suite, across processes and under SIGKILL (a killed worker's session ends, and the
//! server frees its lock), over SQLite data on this host and over data in the MySQL
//! server itself — what every host shares.

use turnstile_harness::conformance::{mysql_data, mysql_url};

fn spec() -> String {
    format!("queue+{}", mysql_url())
}

turnstile_harness::conformance_suite!(queue_mysql, &spec(), procs = true, kill = true);

turnstile_harness::conformance_suite!(
    queue_mysql_over_mysql_data,
    &spec(),
    procs = true,
    kill = true,
    data = mysql_data()
);
