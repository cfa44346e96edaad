//! The MySQL / MariaDB `GET_LOCK` lock's conformance suite against `TURNSTILE_MYSQL_URL`
//! (default `mysql://root@127.0.0.1:3306/test`); it fails when the server is down. A
//! SIGKILLed holder's session ends, and the server frees its lock.

use turnstile_harness::conformance::mysql_url;

turnstile_harness::conformance_suite!(mysql, &mysql_url(), procs = true, kill = true);
