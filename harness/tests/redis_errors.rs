//! What the CLI says about mistakes with the Redis lock (`redis://…` specs): a misspelt
//! URL parameter, a TTL out of range, TLS against a plaintext port, a server that never
//! answers. Needs the Redis server at `TURNSTILE_REDIS_URL` (default
//! `redis://127.0.0.1:6379`).
#![cfg(feature = "redis")]

#[path = "support/cli.rs"]
mod cli_support;

use cli_support::check;

/// What a newcomer met with the Redis lock, said in words: a misspelt URL parameter is
/// refused by name (not its value) instead of silently leaving the default TTL; a TTL
/// out of range is shown in `ttl_ms`'s unit; `rediss://` against the plaintext Redis at
/// `TURNSTILE_REDIS_URL` (default `redis://127.0.0.1:6379`), and `redis://` against a
/// listener that never answers, say that no answer came within the connect timeout.
#[test]
fn redis_mistakes_are_said_in_words() {
    use std::time::{Duration, Instant};
    let url = turnstile_harness::conformance::redis_url();
    let run = |strategy: &str| {
        check(&[
            "--strategy",
            strategy,
            "--workload",
            "counter",
            "--ops",
            "20",
        ])
    };
    let base = url.trim_end_matches('/');
    for (query, says) in [
        ("?ttl=2000", "unknown URL parameter \"ttl\""),
        ("?tll_ms=2000", "unknown URL parameter \"tll_ms\""),
        ("?ttl_ms=0", "lease TTL 0 ms is below the minimum 10 ms"),
    ] {
        let strategy = format!("{base}/0{query}");
        let (code, out, err) = run(&strategy);
        assert_eq!(code, 2, "{strategy}: {out}{err}");
        assert!(err.contains(says), "{strategy}: {err}");
        assert!(!err.contains("2000"), "{strategy}: {err}");
    }
    #[cfg(feature = "redis-tls")]
    {
        let strategy = url.replacen("redis://", "rediss://", 1);
        let (code, out, err) = run(&strategy);
        assert_eq!(code, 3, "{strategy}: {out}{err}");
        assert!(
            err.contains("no TLS answer within 2s while connecting"),
            "{err}"
        );
        assert!(err.contains("use redis://"), "{err}");
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
    let start = Instant::now();
    let (code, out, err) = run(&format!("redis://127.0.0.1:{port}"));
    let took = start.elapsed();
    assert_eq!(code, 3, "{out}{err}");
    assert!(
        err.contains("no answer within 2s while connecting"),
        "{err}"
    );
    assert!(took < Duration::from_secs(20), "took {took:?}");
}
