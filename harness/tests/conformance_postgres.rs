//! The PostgreSQL advisory lock's conformance suite against `TURNSTILE_POSTGRES_URL`
//! (default `postgres://postgres@127.0.0.1:5432/test`); it fails when the server is down.
//! A SIGKILLed holder's session ends, and the server frees its lock.

use turnstile_harness::conformance::postgres_url;

turnstile_harness::conformance_suite!(postgres, &postgres_url(), procs = true, kill = true);
