//! The MySQL / MariaDB `GET_LOCK` lock over MySQL *data* (`TURNSTILE_MYSQL_URL`, default
//! `mysql://root@127.0.0.1:3306/test`; the suite fails when the server is down): the
//! whole suite, with each run's data in InnoDB tables of its own in the shared database,
//! dropped at the end. In autocommit each statement commits by itself, so only the lock
//! stands between two ops; a SIGKILLed holder's session ends and the server frees its
//! lock and rolls its transaction back.
#![cfg(feature = "mysql")]

use turnstile_harness::conformance::{mysql_data, mysql_url};

turnstile_harness::conformance_suite!(
    mysql_lock,
    &mysql_url(),
    procs = true,
    kill = true,
    data = mysql_data()
);
