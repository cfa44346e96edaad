//! Redlock's conformance suite, and that of the composed `queue+redlock://…` (a queue in
//! each process whose worker takes a Redlock lease once per batch), over three private
//! `redis-server` processes (started per test on free loopback ports, killed when the
//! test's run ends; never the shared server). A 500 ms lease TTL keeps kill runs short.
//! Redlock issues no fencing token: in its transaction a lease lost during a pause is
//! caught by a lease check instead (`Locked`'s, or the queue worker's before it commits).

use std::ops::Deref;

#[path = "../../strategies/tests/support/redis_server.rs"]
mod redis_server;

use redis_server::RedisServer;

/// Three servers and the `{scheme}://…` spec over them; derefs to the spec, and stops the
/// servers when dropped (at the end of the statement that runs the suite's case).
struct Redlock {
    _servers: Vec<RedisServer>,
    spec: String,
}

impl Deref for Redlock {
    type Target = str;
    fn deref(&self) -> &str {
        &self.spec
    }
}

fn redlock_spec(scheme: &str) -> Redlock {
    let servers: Vec<RedisServer> = (0..3).map(|_| RedisServer::start()).collect();
    let hosts: Vec<String> = servers.iter().map(RedisServer::addr).collect();
    Redlock {
        spec: format!("{scheme}://{}/0?ttl_ms=500", hosts.join(",")),
        _servers: servers,
    }
}

turnstile_harness::conformance_suite!(redlock, &redlock_spec("redlock"), procs = true, kill = true);
turnstile_harness::conformance_suite!(
    queue_redlock,
    &redlock_spec("queue+redlock"),
    procs = true,
    kill = true
);
