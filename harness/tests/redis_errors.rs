//! What the CLI says about mistakes with the Redis lock (`redis://…` specs): a misspelt
//! URL parameter, a password in a TCP URL's query, a TTL out of range, TLS against a
//! plaintext port, a server that never answers. Needs the Redis server at
//! `TURNSTILE_REDIS_URL` (default `redis://127.0.0.1:6379`).
#![cfg(feature = "redis")]

#[path = "support/cli.rs"]
mod cli_support;

use std::time::{Duration, Instant};

use cli_support::check;
use turnstile::lock::redis::DEFAULT_CONNECT_TIMEOUT;

/// How long one `turnstile check` that fails its first connect may take: that connect
/// (the CLI's default connect timeout, one deadline for the whole setup), plus a generous
/// margin for starting the process on a busy machine. A bound against hangs, not a
/// measurement.
const HANG: Duration = DEFAULT_CONNECT_TIMEOUT.saturating_add(Duration::from_secs(6));

/// `url` with `name=value` in its query, instead of any parameter of that name there: its
/// path (a database, or a Unix socket's path), its other parameters and its fragment stay
/// as they were, so `TURNSTILE_REDIS_URL` may carry its own (`redis://h:6379/2?protocol=3`,
/// `redis+unix:///run/redis.sock?db=1`).
fn with_param(url: &str, name: &str, value: &str) -> String {
    let (head, fragment) = url.split_at(url.find('#').unwrap_or(url.len()));
    let (base, query) = head.split_once('?').unwrap_or((head, ""));
    let pair = format!("{name}={value}");
    let mut pairs: Vec<&str> = query
        .split('&')
        .filter(|p| !p.is_empty() && p.split('=').next() != Some(name))
        .collect();
    pairs.push(&pair);
    format!("{base}?{}{fragment}", pairs.join("&"))
}

#[test]
fn urls_get_a_parameter_whatever_they_hold() {
    assert_eq!(
        with_param("redis://127.0.0.1:6379", "ttl", "2000"),
        "redis://127.0.0.1:6379?ttl=2000"
    );
    assert_eq!(
        with_param("redis://:pw@h:6379/2?protocol=3&ttl_ms=5#f", "ttl_ms", "0"),
        "redis://:pw@h:6379/2?protocol=3&ttl_ms=0#f"
    );
    assert_eq!(
        with_param("redis+unix:///run/redis.sock?db=1", "ttl", "2000"),
        "redis+unix:///run/redis.sock?db=1&ttl=2000"
    );
}

/// What a newcomer met with the Redis lock, said in words: a misspelt URL parameter is
/// refused by name (not its value) instead of silently leaving the default TTL; so is a
/// password in a TCP URL's query, with where it goes instead; a TTL out of range is shown
/// in `ttl_ms`'s unit; `rediss://` against the plaintext Redis at `TURNSTILE_REDIS_URL`
/// (default `redis://127.0.0.1:6379`), and `redis://` against a listener that never
/// answers, say that no answer came within the connect timeout.
#[test]
fn redis_mistakes_are_said_in_words() {
    let url = turnstile_harness::conformance::redis_url();
    let run = |strategy: &str| {
        let start = Instant::now();
        let ran = check(&[
            "--strategy",
            strategy,
            "--workload",
            "counter",
            "--ops",
            "20",
        ]);
        (ran, start.elapsed())
    };
    let tcp = url.starts_with("redis://");
    for (name, value, says) in [
        ("ttl", "2000", "unknown URL parameter \"ttl\""),
        ("tll_ms", "2000", "unknown URL parameter \"tll_ms\""),
        ("ttl_ms", "0", "lease TTL 0 ms is below the minimum 10 ms"),
        (
            "pass",
            "hunter2000",
            "the user, password and database go in the URL itself",
        ),
    ] {
        // Over a Unix socket, `pass` is what the redis crate reads.
        if name == "pass" && !tcp {
            continue;
        }
        let strategy = with_param(&url, name, value);
        let ((code, out, err), _) = run(&strategy);
        assert_eq!(code, 2, "{strategy}: {out}{err}");
        assert!(err.contains(says), "{strategy}: {err}");
        assert!(!err.contains("2000"), "{strategy}: {err}");
    }
    #[cfg(feature = "redis-tls")]
    if tcp {
        let strategy = url.replacen("redis://", "rediss://", 1);
        let ((code, out, err), took) = run(&strategy);
        assert_eq!(code, 3, "{strategy}: {out}{err}");
        // A plain Redis never answers a TLS handshake (its first record holds a NUL,
        // where Redis stops looking for a line's end); one that answered would be said
        // to answer in plain text, with the same hint.
        assert!(
            err.contains("no TLS answer within 2s while connecting")
                || err.contains("the answer to the TLS handshake is not TLS"),
            "{err}"
        );
        assert!(err.contains("use redis://"), "{err}");
        assert!(took < HANG, "took {took:?}");
    }
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    // Accepts and holds every connection; never answers. Ends with the test process.
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for socket in listener.incoming() {
            held.push(socket);
        }
    });
    let ((code, out, err), took) = run(&format!("redis://127.0.0.1:{port}"));
    assert_eq!(code, 3, "{out}{err}");
    assert!(
        err.contains("no answer within 2s while connecting"),
        "{err}"
    );
    // Said once, in words: not again in the OS's (`Resource temporarily unavailable`).
    assert!(!err.contains("os error"), "{err}");
    assert!(took < HANG, "took {took:?}");

    // A Redis URL at another server's port: MySQL greets first with its handshake,
    // PostgreSQL hangs up on a line it cannot read. Neither is the driver's parse error.
    use turnstile_harness::conformance::{mysql_url, postgres_url};
    for (server, says) in [
        (
            mysql_url(),
            "the answer is not Redis's while connecting: the port may not speak Redis",
        ),
        (postgres_url(), "the port may not speak Redis"),
    ] {
        let strategy = format!("redis://{}/0", host_port(&server));
        let ((code, out, err), took) = run(&strategy);
        assert_eq!(code, 3, "{strategy}: {out}{err}");
        assert!(err.contains(says), "{strategy}: {err}");
        assert!(!err.contains("Unexpected"), "{strategy}: {err}");
        assert!(took < HANG, "{strategy} took {took:?}");
    }
}

/// `host:port` of a server URL (`mysql://root@127.0.0.1:3306/test` → `127.0.0.1:3306`).
fn host_port(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    rest.split(['/', '?']).next().unwrap_or(rest)
}
