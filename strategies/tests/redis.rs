//! `RedisLock` and `RedlockLock` against real, private `redis-server` processes: exclusion
//! across threads and processes, a server killed and restarted, a holder paused past its
//! TTL (in-process and a `SIGSTOP`ped child process), Redlock with dead servers, and bad
//! input; with the feature `redis-tls`, the locks over TLS (`redis/tls.rs`). Run with
//! `cargo test -p turnstile --features redis,redis-tls --test redis`.
#![cfg(all(feature = "redis", feature = "sqlite"))]

#[path = "support/redis_server.rs"]
mod redis_server;
#[cfg(feature = "redis-tls")]
#[path = "support/test_pki.rs"]
mod test_pki;
#[cfg(feature = "redis-tls")]
#[path = "redis/tls.rs"]
mod tls;

use std::path::Path;
use std::process::{Child, Command};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use redis_server::RedisServer;
use turnstile::lock::{RedisLock, RedlockLock};
use turnstile::spec::{Registry, Setup};
use turnstile::sqlite::{Sqlite, Synchronous, rusqlite};
use turnstile::{
    Connect, Error, Fence, FenceClaim, Key, Lease, Lock, LockName, Locked, Serializer, Transact,
    TransactError, TxMode, Wait,
};

/// Which child role a re-executed test binary plays.
const CHILD_ROLE: &str = "TURNSTILE_REDIS_CHILD";

fn sqlite(path: &Path) -> Sqlite {
    Sqlite::new(path).synchronous(Synchronous::Normal)
}

fn create_counter(db: &Sqlite) {
    let conn = db.connect().unwrap();
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS counter (id INTEGER PRIMARY KEY, n INTEGER NOT NULL);
         INSERT OR IGNORE INTO counter VALUES (1, 0);",
    )
    .unwrap();
}

fn read_counter(db: &Sqlite) -> i64 {
    db.connect()
        .unwrap()
        .query_row("SELECT n FROM counter WHERE id = 1", [], |r| r.get(0))
        .unwrap()
}

/// Read, pause, write back: without exclusion, concurrent callers lose updates (SQLite's
/// own locking does not help in autocommit mode).
fn increment<S: Serializer<Resource = rusqlite::Connection>>(
    s: &S,
) -> Result<(), Error<rusqlite::Error>> {
    s.run(&Key::whole(), |db| {
        let n: i64 = db.query_row("SELECT n FROM counter WHERE id = 1", [], |r| r.get(0))?;
        std::thread::yield_now();
        db.execute("UPDATE counter SET n = ?1 WHERE id = 1", [n + 1])?;
        Ok(())
    })
}

fn counter_strategy(url: &str, db: &Sqlite) -> Locked<RedisLock, Sqlite> {
    Locked::new(RedisLock::new(url).unwrap(), db.clone())
        .tx_mode(TxMode::Autocommit)
        .timeout(Some(Duration::from_secs(30)))
        .unwrap()
}

fn run_threads(threads: usize, ops: usize, s: &Arc<Locked<RedisLock, Sqlite>>) {
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let s = s.clone();
            std::thread::spawn(move || {
                for _ in 0..ops {
                    increment(&*s).unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
}

#[test]
fn counter_is_exact_across_threads() {
    let server = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let db = sqlite(&dir.path().join("c.db"));
    create_counter(&db);
    let s = Arc::new(counter_strategy(&server.url(), &db));
    assert!(s.capabilities().lease_can_expire);
    run_threads(8, 25, &s);
    assert_eq!(read_counter(&db), 200);
    // Contention started the release subscriber.
    assert!(s.lock().subscriber_live());
}

/// The body of a child process of `counter_is_exact_across_processes`.
#[test]
fn child_counter_worker() {
    if std::env::var(CHILD_ROLE).as_deref() != Ok("counter") {
        return;
    }
    let url = std::env::var("REDIS_URL").unwrap();
    let db = sqlite(Path::new(&std::env::var("DB_PATH").unwrap()));
    let s = Arc::new(counter_strategy(&url, &db));
    run_threads(2, 20, &s);
}

fn child(role: &str, test: &str, envs: &[(&str, &str)]) -> Child {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        test,
        "--exact",
        "--nocapture",
        "--test-threads",
        "1",
        "--include-ignored",
    ])
    .env(CHILD_ROLE, role)
    // The child's own "test result" line would be counted as the parent's.
    .stdout(std::process::Stdio::null());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.spawn().unwrap()
}

#[test]
fn counter_is_exact_across_processes() {
    let server = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.db");
    let db = sqlite(&path);
    create_counter(&db);
    let url = server.url();
    let path_text = path.to_str().unwrap();
    let children: Vec<Child> = (0..3)
        .map(|_| {
            child(
                "counter",
                "child_counter_worker",
                &[("REDIS_URL", &url), ("DB_PATH", path_text)],
            )
        })
        .collect();
    // The parent competes too.
    run_threads(2, 20, &Arc::new(counter_strategy(&url, &db)));
    for mut c in children {
        assert!(c.wait().unwrap().success());
    }
    assert_eq!(read_counter(&db), 3 * 2 * 20 + 2 * 20);
}

#[test]
fn killed_server_gives_unavailable_and_restart_keeps_fences_rising() {
    let mut server = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let db = sqlite(&dir.path().join("k.db"));
    create_counter(&db);
    let lock = RedisLock::builder(server.url())
        .connect_timeout(Duration::from_millis(300))
        .response_timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let s = Arc::new(Locked::new(lock.clone(), db.clone()));
    let fence_of = |s: &Locked<RedisLock, Sqlite>| -> Result<Fence, Error<rusqlite::Error>> {
        s.run(&Key::whole(), |db| {
            db.execute("UPDATE counter SET n = n + 1 WHERE id = 1", [])?;
            Ok(db.fence().expect("a fenced lease"))
        })
    };
    let before = fence_of(&s).unwrap();
    assert!(fence_of(&s).unwrap() > before);

    // A lease held across the kill: its watchdog can't renew, so it is reported lost.
    let short = RedisLock::builder(server.url())
        .ttl(Duration::from_millis(300))
        .response_timeout(Duration::from_millis(100))
        .build()
        .unwrap();
    let name = LockName::new("kill-test", Key::new("held").unwrap());
    let held = short.acquire(&name, None).unwrap();
    held.check().unwrap();

    server.kill();
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let s = s.clone();
            std::thread::spawn(move || {
                let start = Instant::now();
                let r = s.run_with(
                    &[Key::whole()],
                    Wait::Timeout(Duration::from_secs(2)),
                    |db| db.execute("UPDATE counter SET n = n + 1000 WHERE id = 1", []),
                );
                (r.map(|_| ()), start.elapsed())
            })
        })
        .collect();
    for w in workers {
        let (r, took) = w.join().unwrap();
        assert!(matches!(r, Err(Error::Unavailable(_))), "{r:?}");
        // Generous: the deadline is 2 s, each network call at most 300 ms.
        assert!(took < Duration::from_secs(10), "hung for {took:?}");
    }
    std::thread::sleep(Duration::from_millis(400));
    assert!(matches!(held.check(), Err(Error::LeaseLost)));
    drop(held);

    server.restart();
    // Empty memory: the fence counter is gone and must be re-seeded above the old one.
    let after = fence_of(&s).unwrap();
    assert!(after > before, "fence went back from {before} to {after}");
    assert_eq!(read_counter(&db), 3);
}

#[test]
fn paused_server_is_unavailable_and_leaves_no_ghost_lease() {
    use rustix::process::{Pid, Signal, kill_process};
    let server = RedisServer::start();
    let lock = RedisLock::builder(server.url())
        .response_timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    assert_eq!(lock.ttl(), Duration::from_secs(8));
    let name = LockName::new("pause-server", Key::new("k").unwrap());
    // Loads the scripts, so the paused server will run our next acquire when it resumes.
    lock.acquire(&name, None).unwrap().release().unwrap();
    let pid = Pid::from_child(server.child());
    kill_process(pid, Signal::STOP).unwrap();
    let start = Instant::now();
    let r = lock.acquire(&name, Some(Instant::now() + Duration::from_secs(1)));
    let took = start.elapsed();
    kill_process(pid, Signal::CONT).unwrap();
    // Said in words: what got no answer, within how long (the response timeout).
    match &r {
        Err(e @ Error::Unavailable(_)) => {
            let text = e.to_string();
            assert!(
                text.contains("no answer within 200ms to a command"),
                "{text}"
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(took < Duration::from_secs(5), "hung for {took:?}");
    // Let the resumed server run the acquire whose reply we never saw: a ghost lease with
    // our token and an 8 s TTL, which the next acquire must clear first.
    std::thread::sleep(Duration::from_millis(100));
    let lease = lock.acquire(&name, Some(Instant::now() + Duration::from_secs(2)));
    assert!(lease.is_ok(), "{lease:?}");
}

#[test]
fn paused_holder_without_renewal_cannot_commit() {
    let server = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let db = sqlite(&dir.path().join("pause.db"));
    create_counter(&db);
    let lock = |renewal| {
        RedisLock::builder(server.url())
            .ttl(Duration::from_millis(200))
            .renewal(renewal)
            .build()
            .unwrap()
    };
    let holder = Locked::new(lock(false), db.clone());
    // The successor waits for SQLite's write lock past its own TTL: its watchdog renews.
    let successor = Locked::new(lock(true), db.clone());
    let stale = std::thread::spawn(move || {
        holder.run(&Key::whole(), |db| {
            db.execute("UPDATE counter SET n = n + 100 WHERE id = 1", [])?;
            // Paused past the TTL while inside the section.
            std::thread::sleep(Duration::from_millis(700));
            Ok::<_, rusqlite::Error>(db.fence())
        })
    });
    std::thread::sleep(Duration::from_millis(350));
    // The successor gets the expired lock and then waits for SQLite's write lock.
    let fresh = successor
        .run(&Key::whole(), |db| {
            db.execute("UPDATE counter SET n = n + 1 WHERE id = 1", [])?;
            Ok::<_, rusqlite::Error>(db.fence())
        })
        .unwrap();
    let stale = stale.join().unwrap();
    assert!(matches!(stale, Err(Error::LeaseLost)), "{stale:?}");
    assert!(fresh.is_some());
    // Only the successor's write is there.
    assert_eq!(read_counter(&db), 1);
}

#[test]
fn stale_fence_is_refused_by_the_resource() {
    let server = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let db = sqlite(&dir.path().join("fence.db"));
    create_counter(&db);
    let lock = RedisLock::builder(server.url())
        .ttl(Duration::from_millis(100))
        .renewal(false)
        .build()
        .unwrap();
    let name = LockName::new(db.identity(), Key::whole());
    let claim = |fence| FenceClaim {
        backend: lock.backend_id(),
        name: name.bytes(),
        fence,
    };
    let old = lock.acquire(&name, None).unwrap();
    let old_fence = old.fence().unwrap();
    // The holder stalls past its TTL before it even begins.
    std::thread::sleep(Duration::from_millis(200));
    let new = lock
        .acquire(&name, Some(Instant::now() + Duration::from_secs(2)))
        .unwrap();
    let new_fence = new.fence().unwrap();
    assert!(new_fence > old_fence);
    let mut conn = db.connect().unwrap();
    db.begin(&mut conn, &[claim(new_fence)]).unwrap();
    conn.execute("UPDATE counter SET n = n + 1 WHERE id = 1", [])
        .unwrap();
    db.commit(&mut conn).unwrap();
    new.release().unwrap();

    match db.begin(&mut conn, &[claim(old_fence)]) {
        Err(TransactError::StaleFence { presented, highest }) => {
            assert_eq!((presented, highest), (old_fence, new_fence));
        }
        other => panic!("expected a stale fence, got {other:?}"),
    }
    assert!(matches!(old.check(), Err(Error::LeaseLost)));
    // Its release finds the key gone (or someone else's): lost, not silently fine.
    assert!(matches!(old.release(), Err(Error::LeaseLost)));
    assert_eq!(read_counter(&db), 1);
}

type Fenced = Result<Option<Fence>, Error<std::convert::Infallible>>;

/// Runs one op of `hold` through each of two clients of one server, started 150 ms apart;
/// returns the most ops ever inside the section at once and each op's fence.
fn overlap(make: impl Fn() -> RedisLock, hold: Duration) -> (usize, Vec<Fenced>) {
    let dir = tempfile::tempdir().unwrap();
    let db = sqlite(&dir.path().join("o.db"));
    let inside = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let handles: Vec<_> = (0..2)
        .map(|i| {
            let s = Locked::new(make(), db.clone()).tx_mode(TxMode::Autocommit);
            let (inside, most) = (inside.clone(), most.clone());
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(150 * i));
                s.run_with(
                    &[Key::whole()],
                    Wait::Timeout(Duration::from_secs(5)),
                    move |ctx| {
                        let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(now, Ordering::SeqCst);
                        std::thread::sleep(hold);
                        inside.fetch_sub(1, Ordering::SeqCst);
                        Ok(ctx.fence())
                    },
                )
            })
        })
        .collect();
    let results = handles.into_iter().map(|h| h.join().unwrap()).collect();
    (most.load(Ordering::SeqCst), results)
}

#[test]
fn without_fencing_or_renewal_the_overlap_is_observable() {
    let server = RedisServer::start();
    let url = server.url();
    let unfenced = || {
        RedisLock::builder(url.clone())
            .ttl(Duration::from_millis(100))
            .renewal(false)
            .fencing(false)
            .build()
            .unwrap()
    };
    assert!(!unfenced().capabilities().fences);
    let (most, results) = overlap(unfenced, Duration::from_millis(500));
    assert_eq!(most, 2, "the expired lease let a second holder in");
    assert!(results.iter().all(|r| matches!(r, Ok(None))), "{results:?}");

    // With the watchdog on, the same long op keeps its lease: no overlap.
    let renewed = || {
        RedisLock::builder(url.clone())
            .ttl(Duration::from_millis(100))
            .build()
            .unwrap()
    };
    assert!(renewed().capabilities().fences);
    let (most, results) = overlap(renewed, Duration::from_millis(500));
    assert_eq!(most, 1);
    assert!(
        results.iter().all(|r| matches!(r, Ok(Some(_)))),
        "{results:?}"
    );
}

#[test]
fn watchdog_keeps_a_long_op_committable() {
    let server = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let db = sqlite(&dir.path().join("long.db"));
    create_counter(&db);
    let lock = RedisLock::builder(server.url())
        .ttl(Duration::from_millis(100))
        .build()
        .unwrap();
    let s = Locked::new(lock, db.clone());
    // Five TTLs inside one transaction: the lease is renewed and still checks out at commit.
    s.run(&Key::whole(), |db| {
        std::thread::sleep(Duration::from_millis(500));
        db.execute("UPDATE counter SET n = n + 1 WHERE id = 1", [])
    })
    .unwrap();
    assert_eq!(read_counter(&db), 1);
    // With a renewal cap, the same op outlives its lease and is rolled back.
    let capped = RedisLock::builder(server.url())
        .ttl(Duration::from_millis(100))
        .max_renewals(1)
        .build()
        .unwrap();
    let r = Locked::new(capped, db.clone()).run(&Key::whole(), |db| {
        std::thread::sleep(Duration::from_millis(500));
        db.execute("UPDATE counter SET n = n + 1 WHERE id = 1", [])
    });
    assert!(matches!(r, Err(Error::LeaseLost)), "{r:?}");
    assert_eq!(read_counter(&db), 1);
}

#[test]
fn contention_times_out_and_a_dead_holder_expires() {
    let server = RedisServer::start();
    let lock = RedisLock::new(&server.url()).unwrap();
    let other = RedisLock::builder(server.url())
        .ttl(Duration::from_millis(300))
        .renewal(false)
        .build()
        .unwrap();
    let name = LockName::new("contend", Key::new("k").unwrap());
    let held = lock.acquire(&name, None).unwrap();
    let r = other.acquire(&name, Some(Instant::now() + Duration::from_millis(200)));
    assert!(matches!(r, Err(Error::Timeout { .. })), "{r:?}");
    // A past deadline tries once.
    assert!(matches!(
        other.acquire(&name, Some(Instant::now())),
        Err(Error::Timeout { .. })
    ));
    // A waiter is woken by the release.
    let waiter = {
        let lock = lock.clone();
        let name = name.clone();
        std::thread::spawn(move || {
            lock.acquire(&name, Some(Instant::now() + Duration::from_secs(5)))
                .map(|l| l.fence())
        })
    };
    std::thread::sleep(Duration::from_millis(100));
    held.release().unwrap();
    assert!(waiter.join().unwrap().unwrap().is_some());
    // A holder that dies without releasing: its lease expires and a waiter gets in.
    let dead = other.acquire(&name, None).unwrap();
    std::mem::forget(dead);
    let next = lock.acquire(&name, Some(Instant::now() + Duration::from_secs(5)));
    assert!(next.is_ok(), "{next:?}");
}

#[test]
fn a_release_elsewhere_wakes_the_waiter_through_pubsub() {
    let server = RedisServer::start();
    // Two spellings of one server: separate subscribers and queues, as in two processes.
    let holder = RedisLock::new(&format!("redis://127.0.0.1:{}", server.port())).unwrap();
    let waiter = RedisLock::builder(server.url())
        .poll_interval(Duration::from_secs(30))
        .build()
        .unwrap();
    let name = LockName::new("wake", Key::new("k").unwrap());
    let held = holder.acquire(&name, None).unwrap();
    let handle = {
        let name = name.clone();
        let waiter = waiter.clone();
        std::thread::spawn(move || {
            let lease = waiter.acquire(&name, Some(Instant::now() + Duration::from_secs(60)));
            (lease.map(|l| l.fence()), Instant::now())
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    assert!(waiter.subscriber_live());
    let released = Instant::now();
    held.release().unwrap();
    let (got, at) = handle.join().unwrap();
    assert!(matches!(got, Ok(Some(_))), "{got:?}");
    // Without the release's PUBLISH, only the TTL (8 s) or the poll (30 s) would wake it.
    let woke = at - released;
    assert!(woke < Duration::from_secs(4), "woken after {woke:?}");
}

/// A TCP listener on loopback that accepts every connection and never answers (a hung
/// server, or a port that waits for something else), holding them until dropped.
struct SilentListener {
    port: u16,
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SilentListener {
    fn start() -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let thread = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut held = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((socket, _)) => held.push(socket),
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
            })
        };
        SilentListener {
            port,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for SilentListener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A server that accepts the connection and never answers is said to give no answer
/// within the connect timeout, not with the OS's `Resource temporarily unavailable`; and
/// the connect, setup included, keeps to that timeout (the redis crate waited for each of
/// its setup replies in turn: twice as long).
#[test]
fn a_server_that_never_answers_is_said_to_and_within_the_connect_timeout() {
    let silent = SilentListener::start();
    let url = format!("redis://127.0.0.1:{}", silent.port);
    let dir = tempfile::tempdir().unwrap();
    let setup = Setup::new(sqlite(&dir.path().join("silent.db")));
    let start = Instant::now();
    let r = Registry::builtin().open(&url, &setup).map(|_| ());
    let took = start.elapsed();
    match r {
        Err(e @ Error::Unavailable(_)) => {
            let text = e.to_string();
            assert!(
                text.contains("no answer within 2s while connecting"),
                "{text}"
            );
            assert!(!text.contains("os error"), "{text}");
        }
        other => panic!("{other:?}"),
    }
    assert!(took < Duration::from_secs(10), "hung for {took:?}");
    // Timed with a connect timeout long enough to tell one from two.
    let lock = RedisLock::builder(url)
        .connect_timeout(Duration::from_secs(3))
        .build()
        .unwrap();
    let start = Instant::now();
    let r = lock.ping();
    let took = start.elapsed();
    assert!(matches!(r, Err(Error::Unavailable(_))), "{r:?}");
    assert!(
        took < Duration::from_millis(5000),
        "a connect timeout of 3s took {took:?}"
    );
    // Over TLS: the same listener is what a port that speaks plain Redis looks like.
    #[cfg(feature = "redis-tls")]
    {
        let url = format!("rediss://127.0.0.1:{}", silent.port);
        let r = Registry::builtin().open(&url, &setup).map(|_| ());
        match r {
            Err(e @ Error::Unavailable(_)) => {
                let text = e.to_string();
                assert!(
                    text.contains("no TLS answer within 2s while connecting"),
                    "{text}"
                );
                assert!(text.contains("use redis://"), "{text}");
            }
            other => panic!("{other:?}"),
        }
    }
}

/// A connect timeout below the 50 ms every network wait gets at least is stretched to
/// that, and the text says how long the connection was really given, not the timeout set
/// (with a login and a database too, whose replies come after the connect).
#[test]
fn a_connect_timeout_stretched_to_the_floor_is_said_as_it_was() {
    let silent = SilentListener::start();
    for url in [
        format!("redis://127.0.0.1:{}", silent.port),
        format!("redis://:pw@127.0.0.1:{}/3", silent.port),
    ] {
        let lock = RedisLock::builder(&url)
            .connect_timeout(Duration::from_millis(1))
            .build()
            .unwrap();
        let start = Instant::now();
        let text = match lock.ping() {
            Err(e @ Error::Unavailable(_)) => e.to_string(),
            other => panic!("{url}: {other:?}"),
        };
        assert!(start.elapsed() < Duration::from_secs(10), "{url}: hung");
        let ms: u64 = text
            .split("no answer within ")
            .nth(1)
            .and_then(|rest| rest.split("ms while connecting").next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{url}: {text}"));
        assert!(ms >= 50, "{url}: {text}");
    }
}

/// Sends `commands` to the server at `addr` on one connection, in RESP, and answers the
/// first line of each reply.
fn raw_commands(addr: &str, commands: &[&[&[u8]]]) -> Vec<String> {
    use std::io::{BufRead, BufReader, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    let mut packed = Vec::new();
    for args in commands {
        packed.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
        for arg in *args {
            packed.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
            packed.extend_from_slice(arg);
            packed.extend_from_slice(b"\r\n");
        }
    }
    stream.write_all(&packed).unwrap();
    let mut reader = BufReader::new(stream);
    commands
        .iter()
        .map(|_| {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            line.trim_end().to_owned()
        })
        .collect()
}

/// A new connection logs in and selects the URL's database, whatever the URL asks for: a
/// password, a user and a password, RESP3 (whose `HELLO` logs in) with either; the lease
/// is in that database, and over RESP3 the subscriber still wakes a waiter. A wrong
/// password, and a database the server does not have, are `Unavailable`, in words.
#[test]
fn new_connections_log_in_and_select_the_database() {
    let server = RedisServer::start_with_password("s3cret");
    let addr = server.addr();
    let deadline = || Some(Instant::now() + Duration::from_secs(5));
    for (url, db) in [
        (format!("redis://:s3cret@{addr}/2"), "2"),
        (format!("redis://default:s3cret@{addr}/3"), "3"),
        (format!("redis://:s3cret@{addr}/4?protocol=3"), "4"),
        (
            format!("redis://default:s3cret@{addr}/0?protocol=resp3"),
            "0",
        ),
        (format!("redis://default:s3cret@{addr}/5?protocol=2"), "5"),
    ] {
        let lock = RedisLock::new(&url).unwrap();
        lock.ping().unwrap();
        let name = LockName::new("login", Key::new("k").unwrap());
        let lease = lock.acquire(&name, deadline()).unwrap();
        let replies = raw_commands(
            &addr,
            &[
                &[b"AUTH", b"s3cret"],
                &[b"SELECT", db.as_bytes()],
                &[b"EXISTS", &lock_key(&name)],
            ],
        );
        assert_eq!(replies, ["+OK", "+OK", ":1"], "{url}");
        lease.release().unwrap();
    }
    // A user of the server's ACL, over RESP2 (our `AUTH user password`) and RESP3 (the
    // redis crate's `HELLO 3 AUTH user password`).
    let replies = raw_commands(
        &addr,
        &[
            &[b"AUTH", b"s3cret"],
            &[
                b"ACL",
                b"SETUSER",
                b"alice",
                b"on",
                b">alicepw",
                b"~*",
                b"&*",
                b"+@all",
            ],
        ],
    );
    assert_eq!(replies, ["+OK", "+OK"]);
    for (url, db) in [
        (format!("redis://alice:alicepw@{addr}/6"), "6"),
        (format!("redis://alice:alicepw@{addr}/7?protocol=3"), "7"),
    ] {
        let lock = RedisLock::new(&url).unwrap();
        let name = LockName::new("acl", Key::new("k").unwrap());
        let lease = lock.acquire(&name, deadline()).unwrap();
        let replies = raw_commands(
            &addr,
            &[
                &[b"AUTH", b"alice", b"alicepw"],
                &[b"SELECT", db.as_bytes()],
                &[b"EXISTS", &lock_key(&name)],
            ],
        );
        assert_eq!(replies, ["+OK", "+OK", ":1"], "{url}");
        lease.release().unwrap();
        let wrong = url.replace("alicepw", "certainly-wrong");
        let shown = RedisLock::new(&wrong)
            .unwrap()
            .ping()
            .unwrap_err()
            .to_string();
        assert!(!shown.contains("certainly-wrong"), "{shown}");
    }
    // Over RESP3, a waiter of another lock object (its own subscriber) is woken by the
    // release's PUBLISH: without it, only the holder's 8 s TTL or the 30 s poll would.
    let holder = RedisLock::new(&format!("redis://:s3cret@{addr}/4?protocol=3")).unwrap();
    let waiter = RedisLock::builder(format!("redis://:s3cret@{addr}/4?protocol=resp3"))
        .poll_interval(Duration::from_secs(30))
        .build()
        .unwrap();
    let name = LockName::new("resp3", Key::new("k").unwrap());
    let held = holder.acquire(&name, deadline()).unwrap();
    let handle = {
        let (name, waiter) = (name.clone(), waiter.clone());
        std::thread::spawn(move || waiter.acquire(&name, deadline()).map(|l| l.fence()))
    };
    let start = Instant::now();
    while !waiter.subscriber_live() {
        assert!(start.elapsed() < Duration::from_secs(10), "no subscriber");
        std::thread::sleep(Duration::from_millis(10));
    }
    held.release().unwrap();
    let got = handle.join().unwrap();
    assert!(matches!(got, Ok(Some(_))), "{got:?}");
    for (url, says) in [
        (format!("redis://:wrong@{addr}/0"), "authentication failed"),
        (
            format!("redis://:wrong@{addr}/0?protocol=3"),
            "authentication failed: the server refused the password",
        ),
        (
            format!("redis://:s3cret@{addr}/99"),
            "refused to switch database",
        ),
        (format!("redis://{addr}/0"), "authentication required"),
        (format!("redis://{addr}/1"), "authentication required"),
        (
            format!("redis://{addr}/0?protocol=3"),
            "authentication required",
        ),
        (
            format!("redis://:s3cret@{addr}/99?protocol=3"),
            "refused to switch database",
        ),
    ] {
        let lock = RedisLock::new(&url).unwrap();
        match lock.ping() {
            Err(e @ Error::Unavailable(_)) => {
                let text = e.to_string();
                assert!(text.contains(says), "{url}: {text}");
                assert!(!text.contains("s3cret"), "{url}: {text}");
                // In words, without the driver's kind of error (`- AuthenticationFailed`,
                // `- Server(ResponseError)`).
                assert!(!text.contains(" - "), "{url}: {text}");
            }
            other => panic!("{url}: {other:?}"),
        }
    }
}

/// Over a unix socket the password, user and database are URL parameters (`pass`,
/// `user`, `db`: the redis crate's names): a new connection logs in and selects the
/// database whichever protocol it speaks, and a wrong password or a database the server
/// does not have is `Unavailable`, in words, without the password.
#[test]
fn a_unix_socket_url_logs_in_and_selects_its_database() {
    let dir = tempfile::tempdir().unwrap();
    let server = RedisServer::start_unix_with_password("s3cret", dir.path().to_owned());
    let socket = server.unix_socket();
    let socket = socket.display();
    let deadline = || Some(Instant::now() + Duration::from_secs(5));
    for (query, db) in [
        ("db=2&pass=s3cret", "2"),
        ("db=3&user=default&pass=s3cret", "3"),
        ("db=4&pass=s3cret&protocol=3", "4"),
        ("pass=s3cret", "0"),
    ] {
        let url = format!("redis+unix://{socket}?{query}");
        let lock = RedisLock::new(&url).unwrap();
        let name = LockName::new("unix", Key::new("k").unwrap());
        let lease = lock
            .acquire(&name, deadline())
            .unwrap_or_else(|e| panic!("{url}: {e}"));
        let replies = raw_commands(
            &server.addr(),
            &[
                &[b"AUTH", b"s3cret"],
                &[b"SELECT", db.as_bytes()],
                &[b"EXISTS", &lock_key(&name)],
            ],
        );
        assert_eq!(replies, ["+OK", "+OK", ":1"], "{url}");
        lease.release().unwrap();
    }
    for (query, says) in [
        (
            "db=2&pass=certainly-wrong",
            "authentication failed: the server refused the password",
        ),
        (
            "db=2&pass=certainly-wrong&protocol=3",
            "authentication failed: the server refused the password",
        ),
        (
            "db=2",
            "authentication required: the server has a password and the URL gives none",
        ),
        (
            "db=0",
            "authentication required: the server has a password and the URL gives none",
        ),
        (
            "protocol=3",
            "authentication required: the server has a password and the URL gives none",
        ),
        ("db=99&pass=s3cret", "refused to switch database"),
    ] {
        let url = format!("redis+unix://{socket}?{query}");
        match RedisLock::new(&url).unwrap().ping() {
            Err(e @ Error::Unavailable(_)) => {
                let text = e.to_string();
                assert!(text.contains(says), "{url}: {text}");
                assert!(text.contains("redis at redis+unix://"), "{url}: {text}");
                assert!(!text.contains("certainly-wrong"), "{url}: {text}");
                assert!(!text.contains("s3cret"), "{url}: {text}");
            }
            other => panic!("{url}: {other:?}"),
        }
    }
}

/// A password for a server that has none: Redis 6 and later refuse `AUTH password`
/// (RESP2, no user), and the error says so rather than that the password was wrong; a user
/// with it (`AUTH default password`, or RESP3's `HELLO 3 AUTH`) is taken by the default
/// user, which has `nopass`.
#[test]
fn a_password_for_a_server_without_one_is_said_to_be_one_too_many() {
    let server = RedisServer::start();
    let addr = server.addr();
    let url = format!("redis://:not-needed@{addr}/0");
    match RedisLock::new(&url).unwrap().ping() {
        Err(e @ Error::Unavailable(_)) => {
            let text = e.to_string();
            assert!(text.contains("the server has no password set"), "{text}");
            assert!(text.contains("leave the password out of the URL"), "{text}");
            assert!(!text.contains("not-needed"), "{text}");
            assert!(!text.contains(" - "), "{text}");
            // The whole chain, as the CLI prints it, says it once: no driver's text below.
            let mut below = std::error::Error::source(&e);
            while let Some(cause) = below {
                assert!(text.contains(&cause.to_string()), "{text}: then {cause}");
                below = cause.source();
            }
        }
        other => panic!("{url}: {other:?}"),
    }
    for url in [
        format!("redis://default:not-needed@{addr}/0"),
        format!("redis://:not-needed@{addr}/0?protocol=3"),
    ] {
        RedisLock::new(&url)
            .unwrap()
            .ping()
            .unwrap_or_else(|e| panic!("{url}: {e}"));
    }
}

/// A misspelt parameter is refused, by name, through every Redis scheme of the registry
/// (before any server is asked); its value is not shown.
#[test]
fn a_misspelt_url_parameter_is_refused_on_every_scheme() {
    let dir = tempfile::tempdir().unwrap();
    let setup = Setup::new(sqlite(&dir.path().join("params.db")));
    let registry = Registry::builtin();
    let mut specs = vec![
        "redis://127.0.0.1:1/0?ttl=2000",
        "redis://127.0.0.1:1/0?ttl_ms=500&tll_ms=2000",
        "redis+unix:///tmp/no.sock?db=1&ttl=2000",
        "redlock://127.0.0.1:1,127.0.0.1:2/0?ttl=2000",
    ];
    if cfg!(feature = "queue") {
        specs.push("queue+redis://127.0.0.1:1/0?ttl=2000");
    }
    if cfg!(feature = "redis-tls") {
        specs.push("rediss://127.0.0.1:1/0?ttl=2000");
        specs.push("redlocks://127.0.0.1:1,127.0.0.1:2/0?ttl=2000");
    }
    for spec in specs {
        match registry.open(spec, &setup).map(|_| ()) {
            Err(Error::Config(text)) => {
                assert!(text.contains("unknown URL parameter \"t"), "{spec}: {text}");
                assert!(!text.contains("2000"), "{spec}: {text}");
            }
            other => panic!("{spec}: {other:?}"),
        }
    }
}

#[test]
fn redlock_needs_a_quorum() {
    let mut servers: Vec<RedisServer> = (0..3).map(|_| RedisServer::start()).collect();
    let dir = tempfile::tempdir().unwrap();
    let db = sqlite(&dir.path().join("rl.db"));
    create_counter(&db);
    let addrs: Vec<String> = servers.iter().map(RedisServer::addr).collect();
    let url = format!("redlock://{}/0", addrs.join(","));
    let lock = RedlockLock::builder_from_url(&url)
        .unwrap()
        .ttl(Duration::from_secs(2))
        .build()
        .unwrap();
    assert!(!lock.capabilities().fences);
    assert_eq!(lock.quorum(), 2);
    let s = Arc::new(
        Locked::new(lock, db.clone())
            .tx_mode(TxMode::Autocommit)
            .timeout(Some(Duration::from_secs(20)))
            .unwrap(),
    );
    let run = |s: &Arc<Locked<RedlockLock, Sqlite>>| {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let s = s.clone();
                std::thread::spawn(move || {
                    for _ in 0..5 {
                        increment(&*s).unwrap();
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
    };
    run(&s);
    assert_eq!(read_counter(&db), 20);
    servers[0].kill();
    run(&s);
    assert_eq!(read_counter(&db), 40);
    servers[1].kill();
    let start = Instant::now();
    let r = increment(&*s);
    assert!(matches!(r, Err(Error::Unavailable(_))), "{r:?}");
    assert!(start.elapsed() < Duration::from_secs(10));
    assert_eq!(read_counter(&db), 40);
    // Both servers that are down are named, each with its reason (a pooled connection's
    // end of file, or a new one refused).
    let text = r.unwrap_err().to_string();
    assert!(
        text.starts_with(&format!(
            "backend unavailable: 2 of 3 Redis servers failed (quorum 2): redis://{}/0: ",
            addrs[0]
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!("; redis://{}/0: ", addrs[1])),
        "{text}"
    );
    assert!(!text.contains(&addrs[2]), "{text}");
}

/// A server that will not answer `INFO` (denied by an ACL here; renamed away is the same
/// server error) cannot be checked for being listed twice, but serves: the lock is taken
/// and released, and `ping_all` counts it, rather than failing on the refused `INFO`.
#[test]
fn redlock_serves_through_a_server_that_refuses_info() {
    let servers = [
        RedisServer::start(),
        RedisServer::start(),
        RedisServer::start(),
    ];
    assert_eq!(
        raw_command(
            &servers[0].addr(),
            &[b"ACL", b"SETUSER", b"default", b"-info"]
        ),
        "+OK"
    );
    assert!(
        raw_command(&servers[0].addr(), &[b"INFO", b"server"]).starts_with("-NOPERM"),
        "INFO was not refused"
    );
    let lock = RedlockLock::builder(servers.iter().map(|s| format!("redis://{}/0", s.addr())))
        .ttl(Duration::from_secs(5))
        .build()
        .unwrap();
    let name = LockName::new("no-info", Key::whole());
    for _ in 0..2 {
        lock.acquire(&name, Some(Instant::now() + Duration::from_secs(2)))
            .unwrap()
            .release()
            .unwrap();
    }
    assert_eq!(lock.ping_all().unwrap(), 3);
    let key = lock_key(&name);
    for server in &servers {
        assert_eq!(raw_command(&server.addr(), &[b"EXISTS", &key]), ":0");
    }
}

/// One server listed under two names (`127.0.0.1:P` and `localhost:P`: not a textual
/// duplicate) would count twice towards the quorum: its `run_id` gives it away, and
/// `ping_all`, opening the spec and every acquire refuse it with a config error naming
/// both entries, taking no lease. Before, the acquire won with the one server counted
/// twice.
#[test]
fn redlock_refuses_one_server_under_two_names() {
    let one = RedisServer::start();
    let other = RedisServer::start();
    let url = format!(
        "redlock://127.0.0.1:{p},{o},localhost:{p}/0",
        p = one.port(),
        o = other.addr()
    );
    let lock = RedlockLock::builder_from_url(&url)
        .unwrap()
        .ttl(Duration::from_secs(5))
        .build()
        .unwrap();
    let named = |text: &str| {
        text.contains(&format!("127.0.0.1:{}", one.port()))
            && text.contains(&format!("localhost:{}", one.port()))
            && !text.contains(&other.addr())
    };
    let name = LockName::new("twice", Key::whole());
    match lock.acquire(&name, Some(Instant::now() + Duration::from_secs(2))) {
        Err(Error::Config(text)) => assert!(named(&text), "{text}"),
        other => panic!("expected a config error, got {:?}", other.map(|_| ())),
    }
    // What the round took was released.
    let key = lock_key(&name);
    for addr in [one.addr(), other.addr()] {
        assert_eq!(raw_command(&addr, &[b"EXISTS", &key]), ":0", "{addr}");
    }
    match lock.ping_all() {
        Err(Error::Config(text)) => assert!(named(&text), "{text}"),
        other => panic!("expected a config error, got {other:?}"),
    }
    let dir = tempfile::tempdir().unwrap();
    let setup = Setup::new(sqlite(&dir.path().join("twice.db")));
    match Registry::builtin().open(&url, &setup).map(|_| ()) {
        Err(Error::Config(text)) => assert!(named(&text), "{text}"),
        other => panic!("expected a config error, got {other:?}"),
    }
    // Distinct servers pass.
    let third = RedisServer::start();
    let fine =
        RedlockLock::builder([&one, &other, &third].map(|s| format!("redis://{}/0", s.addr())))
            .build()
            .unwrap();
    assert_eq!(fine.ping_all().unwrap(), 3);
    fine.acquire(&name, Some(Instant::now() + Duration::from_secs(2)))
        .unwrap()
        .release()
        .unwrap();
}

/// A Redlock acquire waits for silent servers until the caller's deadline (with a floor
/// of 50 ms a call), not each server's whole share of the TTL: with a 60 s TTL (3 s a
/// server) and two of three servers that accept and never answer, a 100 ms wait ends in
/// well under the 12 s the acquire and its release would take at 3 s a call.
#[test]
fn redlock_acquire_keeps_to_the_callers_deadline() {
    let server = RedisServer::start();
    // Listening, never accepting: the TCP connect succeeds, no answer ever comes.
    let silent: Vec<_> = (0..2)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    let url = format!(
        "redlock://{},{},{}/0",
        server.addr(),
        silent[0].local_addr().unwrap(),
        silent[1].local_addr().unwrap()
    );
    let lock = RedlockLock::builder_from_url(&url)
        .unwrap()
        .ttl(Duration::from_secs(60))
        .build()
        .unwrap();
    let name = LockName::new("deadline", Key::new("k").unwrap());
    let started = Instant::now();
    let r = lock.acquire(&name, Some(Instant::now() + Duration::from_millis(100)));
    let took = started.elapsed();
    assert!(
        matches!(r, Err(Error::Unavailable(_))),
        "{:?}",
        r.map(|_| ())
    );
    assert!(took < Duration::from_secs(3), "took {took:?}");
}

/// Opening a `redlock://` spec with two of its three servers down names both, each with
/// why, in one message that the error's chain does not repeat; and no password.
#[test]
fn redlock_spec_names_every_server_out_of_reach() {
    let server = RedisServer::start_with_password("s3cret");
    // Bound together, so the OS cannot hand out one port twice; then closed.
    let listeners: Vec<_> = (0..2)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    let closed: Vec<u16> = listeners
        .iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect();
    drop(listeners);
    let dir = tempfile::tempdir().unwrap();
    let setup = Setup::new(sqlite(&dir.path().join("rl.db")));
    let spec = format!(
        "redlock://:s3cret@{},127.0.0.1:{},127.0.0.1:{}/0",
        server.addr(),
        closed[0],
        closed[1]
    );
    let error = match Registry::builtin().open(&spec, &setup) {
        Err(e @ Error::Unavailable(_)) => e,
        other => panic!("{:?}", other.map(|_| ())),
    };
    let text = error.to_string();
    assert_eq!(
        text,
        format!(
            "backend unavailable: 2 of 3 Redis servers failed (quorum 2): \
             redis://127.0.0.1:{a}/0: Connection refused (os error 111); \
             redis://127.0.0.1:{b}/0: Connection refused (os error 111)",
            a = closed[0],
            b = closed[1]
        )
    );
    // The chain: the list, once, and nothing under it.
    let source = std::error::Error::source(&error).unwrap();
    assert_eq!(format!("backend unavailable: {source}"), text);
    assert!(source.source().is_none());

    // A database per server is refused, quoting the spec as written (redacted).
    let spec = format!(
        "redlock://:s3cret@{a},{a}/1,127.0.0.1:{b}/0",
        a = server.addr(),
        b = closed[0]
    );
    match Registry::builtin().open(&spec, &setup).map(|_| ()) {
        Err(Error::Config(text)) => {
            assert!(
                text.starts_with(&format!(
                    "\"redlock://:***@{a},{a}/1,127.0.0.1:{b}/0\" has a `/` before its last server",
                    a = server.addr(),
                    b = closed[0]
                )),
                "{text}"
            );
            assert!(
                !text.contains("redis://") && !text.contains("s3cret"),
                "{text}"
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn bad_input_gives_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let setup = Setup::new(sqlite(&dir.path().join("bad.db")));
    let registry = Registry::builtin();
    let open = |spec: &str| registry.open(spec, &setup).map(|_| ());
    for spec in [
        "redis://127.0.0.1:notaport",
        "redis://",
        "memcached://127.0.0.1:1",
        // No TLS support compiled in (with it, `tls::bad_tls_files_and_parameters_are_config_errors`).
        #[cfg(not(feature = "redis-tls"))]
        "rediss://127.0.0.1:1",
        "redlock://",
        "redlock://127.0.0.1:1,,127.0.0.1:2",
    ] {
        let r = open(spec);
        assert!(matches!(r, Err(Error::Config(_))), "{spec}: {r:?}");
    }
    assert!(matches!(
        RedisLock::new("http://h:1"),
        Err(Error::Config(_))
    ));
    let zero = RedisLock::builder("redis://127.0.0.1:1").ttl(Duration::ZERO);
    assert!(matches!(zero.build(), Err(Error::Config(_))));
    let renew_too_slow = RedisLock::builder("redis://127.0.0.1:1")
        .ttl(Duration::from_millis(100))
        .renew_every(Duration::from_millis(150));
    assert!(matches!(renew_too_slow.build(), Err(Error::Config(_))));

    // Nothing listens: unavailable, at once.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let r = open(&format!("redis://127.0.0.1:{closed}"));
    assert!(matches!(r, Err(Error::Unavailable(_))), "{r:?}");

    // Wrong, missing and right password.
    let server = RedisServer::start_with_password("s3cret");
    let port = server.port();
    for url in [
        format!("redis://:wrong@127.0.0.1:{port}/0"),
        format!("redis://127.0.0.1:{port}/0"),
    ] {
        let r = open(&url);
        match r {
            Err(Error::Unavailable(e)) => assert!(!e.to_string().contains("s3cret")),
            other => panic!("{url}: {other:?}"),
        }
        let lock = RedisLock::new(&url).unwrap();
        let name = LockName::new("auth", Key::new("k").unwrap());
        let r = lock.acquire(&name, Some(Instant::now() + Duration::from_secs(1)));
        assert!(matches!(r, Err(Error::Unavailable(_))), "{r:?}");
    }
    // The right password, through the registry and the type-erased strategy.
    let good = registry.open(&server.url(), &setup).unwrap();
    assert!(good.capabilities().fences);
    let fence = good
        .run_as(&[Key::whole()], Wait::Default, |db| {
            Ok::<_, rusqlite::Error>(db.fence())
        })
        .unwrap();
    assert!(fence.is_some());
    let redlock = registry
        .open(&format!("redlock://:s3cret@{}/0", server.addr()), &setup)
        .unwrap();
    assert!(!redlock.capabilities().fences);
    let fence = redlock
        .run_as(&[Key::whole()], Wait::Default, |db| {
            Ok::<_, rusqlite::Error>(db.fence())
        })
        .unwrap();
    assert!(fence.is_none());
    assert!(!format!("{:?}", RedisLock::new(&server.url()).unwrap()).contains("s3cret"));
}

/// The body of the child process of `sigstopped_holder_is_fenced_out`: acquires, reports
/// its fence, gives the parent a window to stop it, then tries to write under its (by then
/// stale) fence and reports what happened.
#[test]
fn child_stale_holder() {
    if std::env::var(CHILD_ROLE).as_deref() != Ok("stale") {
        return;
    }
    let url = std::env::var("REDIS_URL").unwrap();
    let db = sqlite(Path::new(&std::env::var("DB_PATH").unwrap()));
    let report = std::env::var("REPORT").unwrap();
    let lock = RedisLock::builder(url)
        .ttl(Duration::from_millis(300))
        .build()
        .unwrap();
    let name = LockName::new(db.identity(), Key::whole());
    let lease = lock.acquire(&name, None).unwrap();
    let fence = lease.fence().unwrap();
    let mut conn = db.connect().unwrap();
    std::fs::write(format!("{report}.acquired"), fence.0.to_string()).unwrap();
    // The parent SIGSTOPs us somewhere in here, for longer than the TTL.
    for _ in 0..100 {
        std::thread::sleep(Duration::from_millis(10));
    }
    let claim = FenceClaim {
        backend: lock.backend_id(),
        name: name.bytes(),
        fence,
    };
    let outcome = match db.begin(&mut conn, &[claim]) {
        Err(TransactError::StaleFence { .. }) => "stale".to_owned(),
        Err(e) => format!("error {e}"),
        Ok(()) => {
            conn.execute("UPDATE counter SET n = n + 100 WHERE id = 1", [])
                .unwrap();
            db.commit(&mut conn).unwrap();
            "committed".to_owned()
        }
    };
    let check = match lease.check() {
        Err(Error::LeaseLost) => "lost",
        Ok(()) => "held",
        Err(_) => "other",
    };
    std::fs::write(format!("{report}.done"), format!("{outcome} {check}")).unwrap();
}

/// Kills a child on drop (it works on a stopped child too) so a failing test leaves none.
struct Reaper(Child);

impl Drop for Reaper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn sigstopped_holder_is_fenced_out() {
    use rustix::process::{Pid, Signal, kill_process};
    let server = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stop.db");
    let db = sqlite(&path);
    create_counter(&db);
    let report = dir.path().join("report");
    let report_text = report.to_str().unwrap().to_owned();
    let mut holder = Reaper(child(
        "stale",
        "child_stale_holder",
        &[
            ("REDIS_URL", &server.url()),
            ("DB_PATH", path.to_str().unwrap()),
            ("REPORT", &report_text),
        ],
    ));
    let acquired = format!("{report_text}.acquired");
    let until = Instant::now() + Duration::from_secs(20);
    while !Path::new(&acquired).exists() {
        assert!(Instant::now() < until, "the child never acquired");
        std::thread::sleep(Duration::from_millis(5));
    }
    // The Child is not reaped yet, so its pid can't have been reused.
    kill_process(Pid::from_child(&holder.0), Signal::STOP).unwrap();
    let stale_fence: u64 = std::fs::read_to_string(&acquired).unwrap().parse().unwrap();
    std::thread::sleep(Duration::from_millis(600));
    let s = Locked::new(RedisLock::new(&server.url()).unwrap(), db.clone());
    let fresh = s
        .run(&Key::whole(), |db| {
            db.execute("UPDATE counter SET n = n + 1 WHERE id = 1", [])?;
            Ok::<_, rusqlite::Error>(db.fence().unwrap())
        })
        .unwrap();
    assert!(fresh.0 > stale_fence);
    kill_process(Pid::from_child(&holder.0), Signal::CONT).unwrap();
    assert!(holder.0.wait().unwrap().success());
    let done = std::fs::read_to_string(format!("{report_text}.done")).unwrap();
    assert_eq!(done, "stale lost");
    assert_eq!(read_counter(&db), 1);
}

/// Not a test: on one thread, the time of two `PING` round trips, of one lock cycle
/// (acquire + release, nothing in between), and of one op through `Locked<RedisLock,
/// Sqlite>` in each `TxMode`. The four alternate in `MEASURE_ROUNDS` rounds (default 5) of
/// `MEASURE_OPS` each (default 2,000), so a busy machine slows them alike; prints each
/// one's median round. `cargo test --release -p turnstile --features redis,sqlite --test
/// redis measure_single -- --ignored --nocapture`.
#[test]
#[ignore = "a measurement, not a check"]
fn measure_single_thread_ops() {
    let server = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let db = sqlite(&dir.path().join("m.db"));
    create_counter(&db);
    let lock = RedisLock::new(&server.url()).unwrap();
    let n = measure_env("MEASURE_OPS", 2000);
    let rounds = measure_env("MEASURE_ROUNDS", 5);
    let name = LockName::new("m", Key::whole());
    let autocommit = Locked::new(lock.clone(), db.clone()).tx_mode(TxMode::Autocommit);
    let transaction = Locked::new(lock.clone(), db.clone()).tx_mode(TxMode::Transaction);
    let per_op = |f: &mut dyn FnMut()| {
        let start = Instant::now();
        for _ in 0..n {
            f();
        }
        start.elapsed() / n as u32
    };
    let mut rows: [(&str, Vec<Duration>); 4] = [
        ("two PING round trips", Vec::new()),
        ("lock cycle (acquire + release)", Vec::new()),
        ("op, Autocommit", Vec::new()),
        ("op, Transaction", Vec::new()),
    ];
    for _ in 0..rounds {
        rows[0].1.push(per_op(&mut || {
            lock.ping().unwrap();
            lock.ping().unwrap();
        }));
        rows[1].1.push(per_op(&mut || {
            lock.acquire(&name, None).unwrap().release().unwrap()
        }));
        rows[2]
            .1
            .push(per_op(&mut || increment(&autocommit).unwrap()));
        rows[3]
            .1
            .push(per_op(&mut || increment(&transaction).unwrap()));
    }
    let floor = median(&mut rows[0].1.clone());
    for (what, times) in &mut rows {
        let t = median(times);
        println!(
            "{what}: {t:?} ({:.0}/s), {:.2}x the two-round-trip floor's rate",
            1.0 / t.as_secs_f64(),
            floor.as_secs_f64() / t.as_secs_f64()
        );
    }
}

fn measure_env(name: &str, default: usize) -> usize {
    std::env::var(name).map_or(default, |v| v.parse().expect("a whole number"))
}

fn median(times: &mut [Duration]) -> Duration {
    times.sort();
    times[times.len() / 2]
}

/// Not a test: `MEASURE_USERS` threads (default 64) of one process share one lock name,
/// each looping acquire → a tiny section → release until `MEASURE_OPS` ops (default
/// 20,000) are done; prints ops/s and the latency of one op (start of acquire to end of
/// release) at p50/p99/p99.9/max. The same shape as the `rslock` comparison in the book's
/// benchmarks chapter. Uses `TURNSTILE_REDIS_URL` when set (to measure beside another
/// client on the same server), a private server otherwise:
/// `cargo test --release -p turnstile --features redis,sqlite --test redis measure_contended -- --ignored --nocapture`.
#[test]
#[ignore = "a measurement, not a check"]
fn measure_contended_lock() {
    let users = measure_env("MEASURE_USERS", 64);
    let ops = measure_env("MEASURE_OPS", 20_000);
    let private = std::env::var("TURNSTILE_REDIS_URL")
        .is_err()
        .then(RedisServer::start);
    let url = private.as_ref().map_or_else(
        || std::env::var("TURNSTILE_REDIS_URL").unwrap(),
        |s| s.url(),
    );
    let lock = RedisLock::new(&url).unwrap();
    let name = LockName::new(format!("measure-{}", std::process::id()), Key::whole());
    // Connect before the clock starts.
    lock.acquire(&name, None).unwrap().release().unwrap();
    let left = AtomicUsize::new(ops);
    let inside = std::sync::atomic::AtomicBool::new(false);
    let start = Instant::now();
    let mut latencies: Vec<Duration> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..users)
            .map(|_| {
                s.spawn(|| {
                    let mut mine = Vec::new();
                    while left
                        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                        .is_ok()
                    {
                        let t = Instant::now();
                        let lease = lock.acquire(&name, None).unwrap();
                        assert!(!inside.swap(true, Ordering::AcqRel), "two holders at once");
                        std::hint::black_box(lease.fence());
                        inside.store(false, Ordering::Release);
                        lease.release().unwrap();
                        mine.push(t.elapsed());
                    }
                    mine
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect()
    });
    let wall = start.elapsed();
    latencies.sort();
    let pct = |p: f64| {
        let i = ((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len());
        latencies[i - 1].as_micros()
    };
    println!(
        "turnstile users={users} ops={} wall={:.2}s ops/s={:.0} p50={}us p99={}us p99.9={}us max={}us",
        latencies.len(),
        wall.as_secs_f64(),
        latencies.len() as f64 / wall.as_secs_f64(),
        pct(0.50),
        pct(0.99),
        pct(0.999),
        latencies.last().unwrap().as_micros()
    );
}

/// Sends one command to the server at `addr` in RESP and answers its reply's first line.
fn raw_command(addr: &str, args: &[&[u8]]) -> String {
    use std::io::{BufRead, BufReader, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    let mut packed = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        packed.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        packed.extend_from_slice(arg);
        packed.extend_from_slice(b"\r\n");
    }
    stream.write_all(&packed).unwrap();
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).unwrap();
    line.trim_end().to_owned()
}

/// The Redis key of a lease on `name` under the default prefix.
fn lock_key(name: &LockName) -> Vec<u8> {
    let hex: String = name.bytes().iter().map(|b| format!("{b:02x}")).collect();
    format!("turnstile:lock:{{{hex}}}").into_bytes()
}

/// A dropped lease's release is sent without waiting; when its reply says the server did
/// not run it (here: its script cache was flushed under it), the next command on that
/// connection runs it again, so the name is free without waiting for the TTL.
#[test]
fn a_dropped_lease_is_released_even_when_the_server_lost_the_script() {
    let server = RedisServer::start();
    let lock = RedisLock::new(&server.url()).unwrap();
    let name = LockName::new("dropped", Key::whole());
    let key = lock_key(&name);
    // Dropped, with the script loaded: released.
    drop(lock.acquire(&name, None).unwrap());
    lock.ping().unwrap();
    assert_eq!(raw_command(&server.addr(), &[b"EXISTS", &key]), ":0");
    // Dropped after the server forgot every script: NOSCRIPT, then released again.
    let lease = lock.acquire(&name, None).unwrap();
    assert_eq!(raw_command(&server.addr(), &[b"EXISTS", &key]), ":1");
    assert_eq!(raw_command(&server.addr(), &[b"SCRIPT", b"FLUSH"]), "+OK");
    drop(lease);
    lock.ping().unwrap();
    assert_eq!(raw_command(&server.addr(), &[b"EXISTS", &key]), ":0");
    // The name is free at once, and the fences keep rising.
    let a = lock.acquire(&name, Some(Instant::now())).unwrap();
    let fence = a.fence().unwrap();
    drop(a);
    assert!(lock.acquire(&name, None).unwrap().fence().unwrap() > fence);
}

/// The next acquire on a connection that still owes a dropped lease's release reply is
/// sent before that reply is read (one round trip for both). When the reply says the
/// release did not run (the script cache was flushed), the release is redone before the
/// acquire is tried again: the name is free at once, not after the TTL.
#[test]
fn an_acquire_behind_a_release_that_did_not_run_still_gets_the_name() {
    let server = RedisServer::start();
    let lock = RedisLock::new(&server.url()).unwrap();
    let name = LockName::new("pipelined", Key::whole());
    let key = lock_key(&name);
    let lease = lock.acquire(&name, None).unwrap();
    let fence = lease.fence().unwrap();
    assert_eq!(raw_command(&server.addr(), &[b"SCRIPT", b"FLUSH"]), "+OK");
    drop(lease);
    // No other command in between: this acquire reads the release's NOSCRIPT reply.
    let again = lock
        .acquire(&name, Some(Instant::now()))
        .expect("the old lease was released first");
    assert!(again.fence().unwrap() > fence);
    drop(again);
    lock.ping().unwrap();
    assert_eq!(raw_command(&server.addr(), &[b"EXISTS", &key]), ":0");
}

/// A pooled connection that still owes a release reply and broke meanwhile (the server
/// restarted) costs the next acquire nothing: it is retried on a new connection.
#[test]
fn an_acquire_behind_a_release_on_a_broken_connection_retries_on_a_new_one() {
    let mut server = RedisServer::start();
    let lock = RedisLock::new(&server.url()).unwrap();
    let name = LockName::new("pipelined-restart", Key::whole());
    let lease = lock.acquire(&name, None).unwrap();
    let fence = lease.fence().unwrap();
    drop(lease);
    server.restart();
    let again = lock
        .acquire(&name, Some(Instant::now() + Duration::from_secs(5)))
        .expect("a fresh connection after the restart");
    assert!(
        again.fence().unwrap() > fence,
        "fences keep rising across a restart"
    );
}

/// Threads of one process hand the lease on to each other: every holder still gets its
/// own, higher fence, in the order they held the lock, and never two at once.
#[test]
fn hand_offs_give_every_holder_a_higher_fence() {
    let server = RedisServer::start();
    let lock = RedisLock::new(&server.url()).unwrap();
    let name = LockName::new("handoff", Key::whole());
    let held: std::sync::Mutex<Vec<Fence>> = std::sync::Mutex::new(Vec::new());
    let inside = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        for _ in 0..8 {
            s.spawn(|| {
                for _ in 0..40 {
                    let lease = lock.acquire(&name, None).unwrap();
                    assert!(!inside.swap(true, Ordering::AcqRel), "two holders at once");
                    held.lock().unwrap().push(lease.fence().unwrap());
                    std::thread::yield_now();
                    inside.store(false, Ordering::Release);
                    lease.release().unwrap();
                }
            });
        }
    });
    let held = held.into_inner().unwrap();
    assert_eq!(held.len(), 8 * 40);
    assert!(
        held.windows(2).all(|w| w[0] < w[1]),
        "fences not rising in the order of holding: {held:?}"
    );
}
