//! The Redis lease lock's conformance suite against `TURNSTILE_REDIS_URL` (default
//! `redis://127.0.0.1:6379`); it fails when the server is down. A 500 ms lease TTL keeps
//! kill runs short: a SIGKILLed holder's lease blocks its name until it expires.

use turnstile_harness::conformance::{redis_url, with_query};

fn redis_spec() -> String {
    with_query(&redis_url(), "ttl_ms=500")
}

turnstile_harness::conformance_suite!(redis, &redis_spec(), procs = true, kill = true);
