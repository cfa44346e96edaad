//! The Redis locks over TLS (feature `redis-tls`) against private TLS-only `redis-server`
//! processes whose certificates `support/test_pki.rs` makes at run time: `rediss://`,
//! `queue+rediss://` and `redlocks://` serialize; a client that does not trust the server's
//! CA, a plaintext client on the TLS port and a TLS client on a plaintext port each get
//! `Unavailable` within their deadline; mutual TLS; bad TLS files are `Config` errors; the
//! password stays out of `Debug` and error texts.

use turnstile::lock::redis::{TLS_CA_PARAM, TLS_CERT_PARAM, TLS_KEY_PARAM};

use super::redis_server::RedisServer;
use super::test_pki::TestPki;
use super::*;

/// The deadline of an acquire that must fail; the bound asserted is generous.
const DEADLINE: Duration = Duration::from_secs(2);
const HANG: Duration = Duration::from_secs(10);
/// The connect and response timeouts of clients that must fail: a handshake the server
/// never answers costs this, not the 2 s default.
const SHORT: Duration = Duration::from_millis(300);

/// A lock on `url` with [`SHORT`] timeouts.
fn short_lock(url: &str) -> RedisLock {
    RedisLock::builder(url)
        .connect_timeout(SHORT)
        .response_timeout(SHORT)
        .build()
        .unwrap()
}

fn tls_server(pki: &TestPki) -> RedisServer {
    RedisServer::start_tls(pki.server(false), None)
}

/// `url` with `pairs` added to its query.
fn with(url: &str, pairs: &[(&str, &std::path::Path)]) -> String {
    let mut url = url.to_owned();
    for (name, path) in pairs {
        let sep = if url.contains('?') { '&' } else { '?' };
        url = format!("{url}{sep}{name}={}", path.display());
    }
    url
}

#[test]
fn rediss_locks_fences_and_excludes_threads() {
    let pki = TestPki::new();
    let server = tls_server(&pki);
    let url = server.url();
    assert!(url.starts_with("rediss://"), "{url}");

    let lock = RedisLock::new(&url).unwrap();
    lock.ping().unwrap();
    let name = LockName::new("tls", Key::new("k").unwrap());
    let first = lock
        .acquire(&name, Some(Instant::now() + DEADLINE))
        .unwrap();
    let f1 = first.fence().unwrap();
    let r = lock.acquire(&name, Some(Instant::now() + Duration::from_millis(100)));
    assert!(matches!(r, Err(Error::Timeout { .. })), "{r:?}");
    first.release().unwrap();
    let second = lock
        .acquire(&name, Some(Instant::now() + DEADLINE))
        .unwrap();
    assert!(second.fence().unwrap() > f1);
    drop(second);

    let dir = tempfile::tempdir().unwrap();
    let db = sqlite(&dir.path().join("tls.db"));
    create_counter(&db);
    let s = Arc::new(counter_strategy(&url, &db));
    run_threads(4, 50, &s);
    assert_eq!(read_counter(&db), 200);
    // Contention started the release subscriber, over TLS too.
    assert!(s.lock().subscriber_live());
}

#[test]
fn rediss_queue_rediss_and_redlocks_specs_serialize() {
    let pki = TestPki::new();
    let servers: Vec<RedisServer> = (0..3).map(|_| tls_server(&pki)).collect();
    let addrs: Vec<String> = servers.iter().map(RedisServer::addr).collect();
    let ca = pki.file("ca.pem");
    let specs = [
        servers[0].url(),
        format!("queue+{}", servers[0].url()),
        with(
            &format!("redlocks://{}/0?ttl_ms=2000", addrs.join(",")),
            &[(TLS_CA_PARAM, &ca)],
        ),
        with(
            &format!("queue+redlocks://{}/0", addrs.join(",")),
            &[(TLS_CA_PARAM, &ca)],
        ),
    ];
    let registry = Registry::builtin();
    for spec in specs {
        let dir = tempfile::tempdir().unwrap();
        let db = sqlite(&dir.path().join("spec.db"));
        create_counter(&db);
        let s = Arc::new(registry.open(&spec, &Setup::new(db.clone())).unwrap());
        let handles: Vec<_> = (0..3)
            .map(|_| {
                let s = s.clone();
                std::thread::spawn(move || {
                    for _ in 0..20 {
                        increment(&*s).unwrap();
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(read_counter(&db), 60, "{spec}");
    }
}

/// Acquires once with [`DEADLINE`], answering the error and how long it took.
fn refused(lock: &RedisLock) -> (Error<std::convert::Infallible>, Duration) {
    let name = LockName::new("refused", Key::new("k").unwrap());
    let start = Instant::now();
    match lock.acquire(&name, Some(start + DEADLINE)) {
        Ok(_) => panic!("{lock:?} acquired"),
        Err(e) => (e, start.elapsed()),
    }
}

#[test]
fn untrusted_and_mismatched_clients_are_unavailable_within_the_deadline() {
    let pki = TestPki::new();
    let server = tls_server(&pki);
    let plain = RedisServer::start();
    let port = server.port();
    let bare = format!("rediss://127.0.0.1:{port}/0");
    let cases = [
        // Trusts another CA only.
        (
            with(&bare, &[(TLS_CA_PARAM, &pki.file("other-ca.pem"))]),
            "certificate",
        ),
        // Trusts the system's roots, which did not sign the test CA.
        (bare.clone(), "certificate"),
        // Plaintext RESP on the TLS port: the server closes the connection.
        (
            format!("redis://127.0.0.1:{port}/0"),
            "the server closed the connection while connecting: the port may not speak Redis, or speak only TLS (then use rediss://)",
        ),
        // A TLS client on a plaintext port: the server waits for a line that never comes.
        (
            with(
                &format!("rediss://127.0.0.1:{}/0", plain.port()),
                &[(TLS_CA_PARAM, &pki.file("ca.pem"))],
            ),
            "no TLS answer within 300ms while connecting: if the port speaks plain Redis, use redis://",
        ),
    ];
    for (url, says) in cases {
        let lock = short_lock(&url);
        let (e, took) = refused(&lock);
        assert!(matches!(e, Error::Unavailable(_)), "{url}: {e:?}");
        assert!(took < HANG, "{url}: hung for {took:?}");
        let text = format!("{e} {:?}", std::error::Error::source(&e));
        assert!(text.contains(says), "{url}: {text}");
        assert!(matches!(lock.ping(), Err(Error::Unavailable(_))), "{url}");
    }
}

/// A plain Redis that answers a TLS client at once, in RESP (here: all its client slots
/// are taken, so it says `-ERR max number of clients reached` to every new connection),
/// is said to speak plain Redis, as one that never answers the handshake is.
#[test]
fn a_plain_answer_to_a_tls_handshake_is_said_to_be_plain_redis() {
    use std::io::{BufRead, BufReader, Write};
    let plain = RedisServer::start();
    // This connection keeps the only slot.
    let mut slot = std::net::TcpStream::connect(plain.addr()).unwrap();
    slot.write_all(b"*4\r\n$6\r\nCONFIG\r\n$3\r\nSET\r\n$10\r\nmaxclients\r\n$1\r\n1\r\n")
        .unwrap();
    let mut line = String::new();
    BufReader::new(&slot).read_line(&mut line).unwrap();
    assert_eq!(line.trim_end(), "+OK");
    let lock = short_lock(&format!("rediss://127.0.0.1:{}/0", plain.port()));
    let (e, took) = refused(&lock);
    assert!(matches!(e, Error::Unavailable(_)), "{e:?}");
    assert!(took < HANG, "hung for {took:?}");
    let text = e.to_string();
    assert!(
        text.contains(
            "the answer to the TLS handshake is not TLS while connecting: if the port speaks plain Redis, use redis://"
        ),
        "{text}"
    );
    drop(slot);
}

/// A TCP proxy on loopback to `127.0.0.1:target` that passes what the client sends at
/// once and delays each chunk the server sends by `delay` (in order): a slow link or a
/// slow server. Its threads end with their connections, its listener with the process.
fn slow_proxy(target: u16, delay: Duration) -> u16 {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(client) = client else { continue };
            let Ok(server) = std::net::TcpStream::connect(("127.0.0.1", target)) else {
                continue;
            };
            let (Ok(mut from_client), Ok(mut to_server)) = (client.try_clone(), server.try_clone())
            else {
                continue;
            };
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut from_client, &mut to_server);
                let _ = to_server.shutdown(std::net::Shutdown::Write);
            });
            let (late, chunks) = std::sync::mpsc::channel::<(Instant, Vec<u8>)>();
            let mut from_server = server;
            std::thread::spawn(move || {
                let mut buf = [0; 16 * 1024];
                while let Ok(n @ 1..) = from_server.read(&mut buf) {
                    if late
                        .send((Instant::now() + delay, buf[..n].to_vec()))
                        .is_err()
                    {
                        break;
                    }
                }
            });
            let mut to_client = client;
            std::thread::spawn(move || {
                for (at, chunk) in chunks {
                    std::thread::sleep(at.saturating_duration_since(Instant::now()));
                    if to_client.write_all(&chunk).is_err() {
                        break;
                    }
                }
                let _ = to_client.shutdown(std::net::Shutdown::Both);
            });
        }
    });
    port
}

/// The TLS handshake counts in the connect timeout: through a link that delays every
/// answer of the server by 700 ms, the handshake's comes after 0.7 s and `SELECT`'s after
/// 1.4 s, past a connect timeout of 1 s, so the connect fails, saying 1 s. (The handshake
/// and the reply each got the whole timeout before: it took 1.4 s and connected.) With a
/// longer timeout the same link connects.
#[test]
fn the_tls_handshake_counts_in_the_connect_timeout() {
    let pki = TestPki::new();
    let server = tls_server(&pki);
    let port = slow_proxy(server.port(), Duration::from_millis(700));
    let url = with(
        &format!("rediss://127.0.0.1:{port}/1"),
        &[(TLS_CA_PARAM, &pki.file("ca.pem"))],
    );
    let lock = RedisLock::builder(&url)
        .connect_timeout(Duration::from_secs(1))
        .response_timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let start = Instant::now();
    let r = lock.ping();
    let took = start.elapsed();
    match r {
        Err(e @ Error::Unavailable(_)) => {
            let text = e.to_string();
            assert!(text.contains("within 1s while connecting"), "{text}");
        }
        other => panic!("{other:?}"),
    }
    assert!(took < HANG, "hung for {took:?}");
    let lock = RedisLock::builder(&url)
        .connect_timeout(Duration::from_secs(5))
        .response_timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    lock.ping().unwrap();
}

/// The body of a child process of [`without_tls_ca_the_systems_roots_are_trusted`], whose
/// "system's roots" are what `SSL_CERT_FILE` names.
#[test]
fn child_trusting_the_systems_roots() {
    if std::env::var(CHILD_ROLE).as_deref() != Ok("system-roots") {
        return;
    }
    let bare = std::env::var("REDIS_URL").unwrap();
    short_lock(&bare).ping().unwrap();
    // `tls_ca` replaces the system's roots: with another CA named, the server is refused.
    let other = std::env::var("OTHER_CA").unwrap();
    let other = with(&bare, &[(TLS_CA_PARAM, std::path::Path::new(&other))]);
    let r = short_lock(&other).ping();
    assert!(matches!(r, Err(Error::Unavailable(_))), "{r:?}");
}

#[test]
fn without_tls_ca_the_systems_roots_are_trusted() {
    let pki = TestPki::new();
    let server = tls_server(&pki);
    let bare = format!("rediss://127.0.0.1:{}/0", server.port());
    // A child whose system store is the test CA alone (rustls-native-certs reads
    // SSL_CERT_FILE instead of the platform's store).
    let ca = pki.file("ca.pem");
    let other = pki.file("other-ca.pem");
    let status = child(
        "system-roots",
        "tls::child_trusting_the_systems_roots",
        &[
            ("SSL_CERT_FILE", ca.to_str().unwrap()),
            ("REDIS_URL", &bare),
            ("OTHER_CA", other.to_str().unwrap()),
        ],
    )
    .wait()
    .unwrap();
    assert!(status.success(), "{status}");
}

/// Not a test: prints what a new connection costs, as the medians of building a lock and
/// of its first `PING` (connect, TLS handshake, `PING`), in plaintext, over TLS with
/// `tls_ca`, and over TLS trusting the system's roots (in a child process whose
/// `SSL_CERT_DIR` is the system's `/etc/ssl/certs` plus a directory with the test CA):
/// `cargo test --release -p turnstile --all-features --test redis measure_new_connections -- --ignored --nocapture`.
#[test]
#[ignore = "a measurement, not a check"]
fn measure_new_connections() {
    match std::env::var(CHILD_ROLE).as_deref() {
        Ok("measure") => {
            let url = std::env::var("REDIS_URL").unwrap();
            return print_connection_cost("rediss://, the system's roots", &url);
        }
        Ok(_) => return,
        Err(_) => {}
    }
    let pki = TestPki::new();
    let tls = tls_server(&pki);
    let plain = RedisServer::start();
    print_connection_cost("redis://", &plain.url());
    print_connection_cost("rediss://?tls_ca", &tls.url());
    let ca_dir = pki.dir().join("ca-only");
    std::fs::create_dir(&ca_dir).unwrap();
    std::fs::copy(pki.file("ca.pem"), ca_dir.join("ca.pem")).unwrap();
    let cert_dirs = format!("/etc/ssl/certs:{}", ca_dir.display());
    let status = child(
        "measure",
        "tls::measure_new_connections",
        &[
            ("SSL_CERT_DIR", &cert_dirs),
            ("REDIS_URL", &format!("rediss://127.0.0.1:{}/0", tls.port())),
        ],
    )
    .wait()
    .unwrap();
    assert!(status.success(), "{status}");
}

fn print_connection_cost(what: &str, url: &str) {
    const ROUNDS: usize = 100;
    let (mut builds, mut pings) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        let start = Instant::now();
        let lock = RedisLock::new(url).unwrap();
        let built = Instant::now();
        lock.ping().unwrap();
        builds.push(built - start);
        pings.push(built.elapsed());
    }
    // The child's stdout is not shown.
    eprintln!(
        "{what}: build {:?}, first PING {:?} (medians of {ROUNDS})",
        median(&mut builds),
        median(&mut pings)
    );
}

#[test]
fn mutual_tls_needs_the_client_certificate() {
    let pki = TestPki::new();
    let server = RedisServer::start_tls(pki.server(true), None);
    let without = short_lock(&server.url());
    let (e, took) = refused(&without);
    assert!(matches!(e, Error::Unavailable(_)), "{e:?}");
    assert!(took < HANG, "hung for {took:?}");

    let url = with(
        &server.url(),
        &[
            (TLS_CERT_PARAM, &pki.file("client.pem")),
            (TLS_KEY_PARAM, &pki.file("client.key")),
        ],
    );
    let lock = RedisLock::new(&url).unwrap();
    let name = LockName::new("mtls", Key::new("k").unwrap());
    let lease = lock
        .acquire(&name, Some(Instant::now() + DEADLINE))
        .unwrap();
    assert!(lease.fence().is_some());
    lease.release().unwrap();
}

#[test]
fn bad_tls_files_and_parameters_are_config_errors() {
    let pki = TestPki::new();
    let garbage = pki.file("garbage.pem");
    std::fs::write(&garbage, "not a certificate\n").unwrap();
    let bad_pem = pki.file("bad.pem");
    std::fs::write(
        &bad_pem,
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let base = "rediss://:hunter2@127.0.0.1:1/0";
    let ca = pki.file("ca.pem");
    let cert = pki.file("client.pem");
    let key = pki.file("client.key");
    let cases: Vec<String> = vec![
        with(base, &[(TLS_CA_PARAM, &pki.file("missing.pem"))]),
        // A directory can't be read as a file.
        with(base, &[(TLS_CA_PARAM, pki.dir())]),
        with(base, &[(TLS_CA_PARAM, &garbage)]),
        // A key is not a certificate.
        with(base, &[(TLS_CA_PARAM, &key)]),
        with(base, &[(TLS_CA_PARAM, &bad_pem)]),
        with(base, &[(TLS_CA_PARAM, &ca), (TLS_CA_PARAM, &ca)]),
        format!("{base}?{TLS_CA_PARAM}="),
        with(base, &[(TLS_CERT_PARAM, &cert)]),
        with(base, &[(TLS_KEY_PARAM, &key)]),
        with(base, &[(TLS_CERT_PARAM, &cert), (TLS_KEY_PARAM, &ca)]),
        // The server's key does not match the client's certificate.
        with(
            base,
            &[
                (TLS_CERT_PARAM, &cert),
                (TLS_KEY_PARAM, &pki.file("server.key")),
            ],
        ),
        with(base, &[(TLS_CERT_PARAM, &garbage), (TLS_KEY_PARAM, &key)]),
        // A typo must not silently fall back to the system's roots.
        with(base, &[("tls_cafile", &ca)]),
        // TLS files on a plaintext URL.
        with("redis://:hunter2@127.0.0.1:1/0", &[(TLS_CA_PARAM, &ca)]),
        // No verification at all.
        format!("{base}#insecure"),
    ];
    for url in &cases {
        match RedisLock::new(url) {
            Err(Error::Config(text)) => {
                assert!(!text.contains("hunter2"), "{url}: {text}");
            }
            other => panic!("{url}: {other:?}"),
        }
    }
    // The same through Redlock and the spec registry.
    let redlock = with(
        "redlocks://127.0.0.1:1,127.0.0.1:2/0",
        &[(TLS_CA_PARAM, &garbage)],
    );
    let built = RedlockLock::builder_from_url(&redlock).and_then(|b| b.build());
    assert!(matches!(built, Err(Error::Config(_))), "{built:?}");
    let dir = tempfile::tempdir().unwrap();
    let setup = Setup::new(sqlite(&dir.path().join("bad.db")));
    for spec in [&cases[0], &format!("queue+{}", cases[2]), &redlock] {
        let r = Registry::builtin().open(spec, &setup).map(|_| ());
        assert!(matches!(r, Err(Error::Config(_))), "{spec}: {r:?}");
    }
    // Well-formed files build (connecting is lazy); paths are percent-decoded.
    let good = with(
        base,
        &[
            (TLS_CA_PARAM, &ca),
            (TLS_CERT_PARAM, &cert),
            (TLS_KEY_PARAM, &key),
        ],
    );
    assert!(RedisLock::new(&good).is_ok());
    std::fs::copy(&ca, pki.file("the ca.pem")).unwrap();
    let spaced = format!("{base}?{TLS_CA_PARAM}={}/the%20ca.pem", pki.dir().display());
    assert!(RedisLock::new(&spaced).is_ok(), "{spaced}");
}

#[test]
fn rediss_passwords_stay_out_of_debug_and_errors() {
    let pki = TestPki::new();
    let server = RedisServer::start_tls(pki.server(false), Some("s3cret"));
    let url = server.url();
    assert!(url.contains(":s3cret@"), "{url}");
    let builder = RedisLock::builder(url.clone());
    assert!(!format!("{builder:?}").contains("s3cret"));
    let lock = builder.build().unwrap();
    assert!(!format!("{lock:?}").contains("s3cret"));
    assert!(lock.server().starts_with("rediss://"), "{}", lock.server());
    lock.ping().unwrap();

    let wrong = url.replace("s3cret", "wr0ng");
    let lock = short_lock(&wrong);
    let (e, _) = refused(&lock);
    assert!(matches!(e, Error::Unavailable(_)), "{e:?}");
    let text = format!("{e} {e:?}");
    assert!(!text.contains("wr0ng"), "{text}");
    let dir = tempfile::tempdir().unwrap();
    let setup = Setup::new(sqlite(&dir.path().join("pw.db")));
    let r = Registry::builtin().open(&wrong, &setup).map(|_| ());
    match r {
        Err(Error::Unavailable(e)) => assert!(!e.to_string().contains("wr0ng"), "{e}"),
        other => panic!("{other:?}"),
    }
    let redlock = RedlockLock::builder_from_url(&format!(
        "redlocks://:s3cret@{}/0?{TLS_CA_PARAM}={}",
        server.addr(),
        pki.file("ca.pem").display()
    ))
    .unwrap();
    assert!(!format!("{redlock:?}").contains("s3cret"));
    let redlock = redlock.build().unwrap();
    assert!(!format!("{redlock:?}").contains("s3cret"));
    assert_eq!(redlock.ping_all().unwrap(), 1);
}
