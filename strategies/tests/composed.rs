//! A queue in each process in front of a cross-process lock, taken once per batch
//! (`queue+file-lock`, `queue+redis://…`), against real child processes and private
//! `redis-server`s: the test binary re-executes itself (`--exact <test> --nocapture`) with
//! `TURNSTILE_COMPOSED_CHILD` set, and that one test then plays the child.
//!
//! Run with `cargo test -p turnstile --all-features --test composed`; the throughput
//! comparison is `--ignored measure_batched_locks_against_plain_locks --nocapture`.
#![cfg(all(feature = "queue", feature = "file-lock", feature = "sqlite"))]

#[cfg(feature = "redis")]
#[path = "support/redis_server.rs"]
mod redis_server;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use turnstile::lock::FileLock;
use turnstile::queue::Queue;
use turnstile::spec::{Registry, Setup};
use turnstile::sqlite::{Sqlite, rusqlite};
use turnstile::{BoxSerializer, Error, HolderDeath, Key, Lock, Scope, Serializer, TxMode, Wait};

#[path = "support/children.rs"]
mod children;
use children::{
    Children, child, child_role, db_at, env_path, env_text, env_u32, on_threads, run_workers,
    spawn_workers, touch, wait_for_go, wait_until,
};

/// Generous bound for "doesn't hang" checks.
const PATIENCE: Duration = Duration::from_secs(120);

// ---------------------------------------------------------------- child processes

/// The strategy `spec` over the database at `path`, as every process opens it.
fn open(spec: &str, path: &Path, mode: TxMode) -> BoxSerializer<rusqlite::Connection> {
    let setup = Setup::new(db_at(path)).tx_mode(mode).timeout(PATIENCE);
    Registry::builtin().open(spec, &setup).unwrap()
}

fn create_tables(path: &Path) {
    rusqlite::Connection::open(path)
        .unwrap()
        .execute_batch(
            "PRAGMA journal_mode = WAL;
             CREATE TABLE IF NOT EXISTS counter (v INTEGER NOT NULL);
             INSERT INTO counter SELECT 0 WHERE NOT EXISTS (SELECT 1 FROM counter);
             CREATE TABLE IF NOT EXISTS log (process INTEGER NOT NULL, what TEXT);",
        )
        .unwrap();
}

fn read_counter(path: &Path) -> i64 {
    rusqlite::Connection::open(path)
        .unwrap()
        .query_row("SELECT v FROM counter", [], |r| r.get(0))
        .unwrap()
}

/// In a child: the strategy SPEC over DB, opened before the start signal, which it then
/// waits for.
fn open_and_wait_for_go(mode: TxMode) -> BoxSerializer<rusqlite::Connection> {
    let strategy = open(&env_text("SPEC"), &env_path("DB"), mode);
    wait_for_go();
    strategy
}

// ---------------------------------------------------------------- counter

const PROCESSES: u32 = 4;
const THREADS: u32 = 8;
const INCREMENTS: u32 = 12;

/// Read, pause, write: a lost update unless the strategy excludes across processes, since
/// every statement commits by itself (`TxMode::Autocommit`).
fn increment(db: &mut rusqlite::Connection) -> rusqlite::Result<()> {
    let v: i64 = db.query_row("SELECT v FROM counter", [], |r| r.get(0))?;
    std::thread::sleep(Duration::from_micros(200));
    db.execute("UPDATE counter SET v = ?1", [v + 1])?;
    Ok(())
}

/// A child: THREADS threads, INCREMENTS autocommit increments each, through SPEC.
fn counter_worker() {
    let strategy = open_and_wait_for_go(TxMode::Autocommit);
    on_threads(THREADS, move || {
        for _ in 0..INCREMENTS {
            strategy.run(&Key::whole(), |db| increment(db)).unwrap();
        }
    });
}

/// Runs the counter from PROCESSES processes through `spec`; returns the final count.
fn counter_through(test: &str, spec: &str) -> i64 {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("counter.db");
    create_tables(&path);
    run_workers(
        test,
        "counter",
        PROCESSES,
        &path,
        &[("SPEC", spec.to_owned())],
    );
    read_counter(&path)
}

const EXPECTED: i64 = (PROCESSES * THREADS * INCREMENTS) as i64;

#[test]
fn counter_through_queue_file_lock_ends_exact() {
    const NAME: &str = "counter_through_queue_file_lock_ends_exact";
    if child_role().is_some() {
        return counter_worker();
    }
    assert_eq!(counter_through(NAME, "queue+file-lock"), EXPECTED);
}

#[test]
fn counter_through_queues_without_a_lock_loses_increments() {
    const NAME: &str = "counter_through_queues_without_a_lock_loses_increments";
    if child_role().is_some() {
        return counter_worker();
    }
    // The negative control: a queue excludes its own threads only.
    let n = counter_through(NAME, "queue");
    assert!(
        n < EXPECTED,
        "queues in separate processes lost no increment ({n}); the locked runs prove nothing"
    );
    eprintln!("without a lock: {n} of {EXPECTED}");
}

#[test]
fn queue_file_lock_and_plain_file_lock_exclude_each_other() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mixed.db");
    create_tables(&path);
    // Both lock the whole-database name in the same lock directory.
    let strategies = [
        Arc::new(open("queue+file-lock", &path, TxMode::Autocommit)),
        Arc::new(open("file-lock", &path, TxMode::Autocommit)),
    ];
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let strategy = strategies[i % 2].clone();
            std::thread::spawn(move || {
                for _ in 0..INCREMENTS {
                    strategy.run(&Key::whole(), |db| increment(db)).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(read_counter(&path), i64::from(8 * INCREMENTS));
}

// ---------------------------------------------------------------- holder death

#[test]
fn a_process_killed_mid_batch_frees_the_file_lock_and_its_batch_rolls_back() {
    const NAME: &str = "a_process_killed_mid_batch_frees_the_file_lock_and_its_batch_rolls_back";
    if child_role().is_some() {
        let path = env_path("DB");
        let holding = env_path("HOLDING");
        // A hold long enough that a loaded machine can't split the batch.
        let queue = Queue::builder()
            .lock(FileLock::beside(&path).unwrap())
            .max_hold(PATIENCE)
            .build(db_at(&path))
            .unwrap();
        // Hold the queue's lock from another descriptor while the batch queues up, so its
        // three ops share one lease and one transaction.
        let gate = FileLock::beside(&path).unwrap();
        let held = gate
            .acquire(queue.lock_name().unwrap(), Some(Instant::now() + PATIENCE))
            .unwrap();
        let insert = |what: &'static str| {
            move |db: &mut turnstile::Ctx<'_, rusqlite::Connection>| {
                db.execute("INSERT INTO log VALUES (1, ?1)", [what])
            }
        };
        let first = queue.submit(&Key::whole(), insert("a")).unwrap();
        let second = queue.submit(&Key::whole(), insert("b")).unwrap();
        let last = queue
            .submit(&Key::whole(), move |db| {
                db.execute("INSERT INTO log VALUES (1, 'c')", [])?;
                touch(&holding);
                // Hold until killed; the bound only keeps a lost child from living forever.
                std::thread::sleep(PATIENCE);
                Ok::<_, rusqlite::Error>(0)
            })
            .unwrap();
        drop(held);
        let results = (first.wait(), second.wait(), last.wait());
        panic!("the holder was meant to be killed, but its batch returned {results:?}");
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.db");
    let holding = dir.path().join("holding");
    create_tables(&path);
    let mut children = Children(vec![
        child(NAME, "holder")
            .env("DB", &path)
            .env("HOLDING", &holding)
            .spawn()
            .unwrap(),
    ]);
    wait_until("the child to hold the lock mid-batch", || {
        assert!(
            children.0[0].try_wait().unwrap().is_none(),
            "the holder exited early"
        );
        holding.exists()
    });
    let queue = Arc::new(open("queue+file-lock", &path, TxMode::Transaction));
    let caps = queue.capabilities();
    assert_eq!(
        (caps.scope, caps.holder_death),
        (Scope::Processes, HolderDeath::KernelReleases)
    );
    // An idle queue tries the lock once for a zero timeout: the child holds it.
    match queue.run_with(&[Key::whole()], Wait::Timeout(Duration::ZERO), |_| {
        Ok::<_, rusqlite::Error>(())
    }) {
        Err(Error::Timeout { .. }) => {}
        other => panic!("the child holds the lock, yet a zero-timeout run gave {other:?}"),
    }
    children.0[0].kill().unwrap(); // SIGKILL through the Child handle
    assert!(!children.0[0].wait().unwrap().success());
    // The others proceed: this process's threads, through their own queue.
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let queue = queue.clone();
            std::thread::spawn(move || {
                for _ in 0..10 {
                    queue
                        .run(&Key::whole(), |db| {
                            db.execute("INSERT INTO log VALUES (0, 'after')", [])
                        })
                        .unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let conn = rusqlite::Connection::open(&path).unwrap();
    let count = |process: i64| -> i64 {
        conn.query_row(
            "SELECT count(*) FROM log WHERE process = ?1",
            [process],
            |r| r.get(0),
        )
        .unwrap()
    };
    assert_eq!(
        count(1),
        0,
        "the killed batch's writes must have rolled back"
    );
    assert_eq!(count(0), 40);
}

// ---------------------------------------------------------------- fairness

/// Rows every fairness run writes before its processes stop: enough for some 80 turns
/// with the file lock (3,000 were about three hand-off intervals, and a process that
/// started its threads late could be held under a twentieth of the rows by chance).
const FAIR_TOTAL: i64 = 20_000;

/// A child that keeps its queue full: THREADS threads insert a row tagged with PROCESS
/// until the log holds FAIR_TOTAL rows.
fn greedy_worker() {
    let process = i64::from(env_u32("PROCESS"));
    let strategy = open_and_wait_for_go(TxMode::Transaction);
    on_threads(THREADS, move || {
        loop {
            let rows: i64 = strategy
                .run(&Key::whole(), move |db| {
                    db.execute("INSERT INTO log (process) VALUES (?1)", [process])?;
                    db.query_row("SELECT count(*) FROM log", [], |r| r.get(0))
                })
                .unwrap();
            if rows >= FAIR_TOTAL {
                break;
            }
        }
    });
}

/// Two greedy processes through `spec`: each must write a fair share, and the lock must
/// change hands back and forth (runs of one process's rows, in commit order, count the
/// times it took the lock from the other, at least).
fn both_make_progress(test: &str, spec: &str) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fair.db");
    create_tables(&path);
    run_workers(test, "greedy", 2, &path, &[("SPEC", spec.to_owned())]);
    let conn = rusqlite::Connection::open(&path).unwrap();
    let order: Vec<i64> = conn
        .prepare("SELECT process FROM log ORDER BY rowid")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let mut rows = [0usize; 2];
    let mut runs = [0usize; 2];
    for (i, &p) in order.iter().enumerate() {
        rows[p as usize] += 1;
        if i == 0 || order[i - 1] != p {
            runs[p as usize] += 1;
        }
    }
    eprintln!("{spec}: rows {rows:?}, turns with the lock {runs:?}");
    for p in 0..2 {
        assert!(
            rows[p] >= order.len() / 20,
            "process {p} wrote {} of {} rows: starved",
            rows[p],
            order.len()
        );
        assert!(
            runs[p] >= 3,
            "process {p} took the lock back only {} times: {runs:?}",
            runs[p]
        );
    }
}

#[test]
fn two_greedy_processes_both_get_the_file_lock() {
    const NAME: &str = "two_greedy_processes_both_get_the_file_lock";
    if child_role().is_some() {
        return greedy_worker();
    }
    both_make_progress(NAME, "queue+file-lock");
}

// ---------------------------------------------------------------- specs and settings

#[test]
fn specs_build_queues_with_the_locks_capabilities() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spec.db");
    let locks = dir.path().join("locks");
    std::fs::create_dir(&locks).unwrap();
    let registry = Registry::builtin();
    assert!(registry.contains("queue+file-lock"));
    for spec in [
        "queue+file-lock".to_owned(),
        format!("queue+file-lock:{}", locks.display()),
    ] {
        let s = registry.open(&spec, &Setup::new(db_at(&path))).unwrap();
        let caps = s.capabilities();
        assert_eq!(caps.scope, Scope::Processes, "{spec}");
        assert!(
            caps.transactional && caps.reruns_op && !caps.fences,
            "{spec}"
        );
        let n: i64 = s
            .run_as(&[Key::whole()], Wait::Default, |db| {
                db.query_row("SELECT 41 + 1", [], |r| r.get(0))
            })
            .unwrap();
        assert_eq!(n, 42);
    }
    // The lock directory given was used.
    assert!(std::fs::read_dir(&locks).unwrap().next().is_some());
    let autocommit = registry
        .open(
            "queue+file-lock",
            &Setup::new(db_at(&path)).tx_mode(TxMode::Autocommit),
        )
        .unwrap();
    assert!(!autocommit.capabilities().transactional);
    for bad in [
        "queue+file-lock:",
        "queue+redis",
        "queue+redlock",
        "queue+mysql",
        "queue+postgres",
        "queue+nosuchlock://x",
    ] {
        match registry.open(bad, &Setup::new(db_at(&path))) {
            Err(Error::Config(_)) => {}
            Err(other) => panic!("{bad}: expected a config error, got {other:?}"),
            Ok(_) => panic!("{bad} was accepted"),
        }
    }
}

#[test]
fn absurd_batch_settings_are_config_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("settings.db");
    let lock = || FileLock::beside(&path).unwrap();
    let cases = [
        Queue::builder()
            .lock(lock())
            .handoff_pause(Duration::from_secs(2)),
        Queue::builder()
            .lock(lock())
            .max_hold(Duration::from_secs(400 * 24 * 3600)),
        Queue::builder().lock(lock()).max_batch(0),
    ];
    for builder in cases {
        let shown = format!("{builder:?}");
        assert!(
            matches!(builder.build(db_at(&path)), Err(Error::Config(_))),
            "{shown} was accepted"
        );
    }
    // A zero hold still runs every op, one lease each.
    let queue = Queue::builder()
        .lock(lock())
        .max_hold(Duration::ZERO)
        .handoff_pause(Duration::ZERO)
        .build(db_at(&path))
        .unwrap();
    let tickets: Vec<_> = (0..20)
        .map(|i| {
            queue
                .submit(&Key::whole(), move |db| {
                    db.query_row("SELECT ?1", [i], |r| r.get::<_, i64>(0))
                })
                .unwrap()
        })
        .collect();
    let got: Vec<i64> = tickets.into_iter().map(|t| t.wait().unwrap()).collect();
    assert_eq!(got, (0..20).collect::<Vec<_>>());
}

/// A lock whose every acquire fails with the error `fail` makes.
struct FailingLock {
    capabilities: turnstile::Capabilities,
    fail: fn() -> turnstile::StrategyError,
}

impl Lock for FailingLock {
    type Lease = turnstile::lock::MutexLease;

    fn capabilities(&self) -> turnstile::Capabilities {
        self.capabilities
    }

    fn backend_id(&self) -> &str {
        "failing"
    }

    fn acquire(
        &self,
        _name: &turnstile::LockName,
        _deadline: Option<Instant>,
    ) -> Result<Self::Lease, turnstile::StrategyError> {
        Err((self.fail)())
    }
}

#[test]
fn every_caller_of_a_batch_gets_its_locks_failure_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("failing.db");
    let fails: [fn() -> turnstile::StrategyError; 9] = [
        || Error::Reentrant,
        || Error::Contended {
            attempts: 3,
            elapsed: Duration::from_millis(7),
        },
        || Error::Panicked("the lock panicked".into()),
        || Error::Indeterminate,
        || Error::TransactionEnded,
        || Error::Full,
        || Error::LeaseLost,
        || {
            Error::Unavailable(Box::new(std::io::Error::new(
                std::io::ErrorKind::ConnectionRefused,
                "lock server refused",
            )))
        },
        || Error::Resource("the lock's table is gone".into()),
    ];
    for fail in fails {
        let expected = fail();
        let lock = FailingLock {
            capabilities: turnstile::lock::MutexLock::new().capabilities(),
            fail,
        };
        let queue = Queue::builder().lock(lock).build(db_at(&path)).unwrap();
        // Several callers, most in one batch: each gets the lock's error.
        let tickets = no_op_tickets(&queue, 8);
        for ticket in tickets {
            let got = ticket.wait().unwrap_err();
            assert_eq!(got.kind(), expected.kind(), "{got:?}");
            assert_eq!(got.to_string(), expected.to_string());
            if let Error::Unavailable(source) = &got {
                let io = turnstile::find_error::<std::io::Error>(source).map(std::io::Error::kind);
                assert_eq!(io, Some(std::io::ErrorKind::ConnectionRefused), "{got:?}");
            }
        }
    }
}

// ---------------------------------------------------------------- redis

/// `n` ops that do nothing, submitted together to `queue` (most join one batch).
fn no_op_tickets(
    queue: &Queue<Sqlite>,
    n: usize,
) -> Vec<turnstile::queue::Ticket<(), rusqlite::Error>> {
    (0..n)
        .map(|_| {
            queue
                .submit(&Key::whole(), |_db| Ok::<_, rusqlite::Error>(()))
                .unwrap()
        })
        .collect()
}

#[cfg(feature = "redis")]
mod redis {
    use super::*;
    use redis_server::RedisServer;
    use std::sync::mpsc;
    use turnstile::lock::RedisLock;
    use turnstile::{Connect, Fence, FenceClaim, Lease, Transact, TransactError};

    #[test]
    fn counter_through_queue_redis_ends_exact() {
        const NAME: &str = "redis::counter_through_queue_redis_ends_exact";
        if child_role().is_some() {
            return counter_worker();
        }
        let server = RedisServer::start();
        let spec = format!("queue+{}", server.url());
        assert_eq!(counter_through(NAME, &spec), EXPECTED);
    }

    #[test]
    fn two_greedy_processes_both_get_the_redis_lock() {
        const NAME: &str = "redis::two_greedy_processes_both_get_the_redis_lock";
        if child_role().is_some() {
            return greedy_worker();
        }
        let server = RedisServer::start();
        both_make_progress(NAME, &format!("queue+{}", server.url()));
    }

    type Inserted = Result<Option<Fence>, Error<rusqlite::Error>>;

    /// Queues `ops` inserts on `queue` while `lock` is held elsewhere, so they form one
    /// batch under the queue's next lease; the last op runs `last` after its insert.
    fn one_batch(
        queue: &Queue<Sqlite>,
        lock: &RedisLock,
        ops: usize,
        last: impl FnOnce() + Send + 'static,
    ) -> Vec<Inserted> {
        let held = lock
            .acquire(queue.lock_name().unwrap(), Some(Instant::now() + PATIENCE))
            .unwrap();
        let mut last = Some(last);
        let tickets: Vec<_> = (0..ops)
            .map(|i| {
                let mut then = if i + 1 == ops { last.take() } else { None };
                queue
                    .submit(&Key::whole(), move |db| {
                        db.execute("INSERT INTO log VALUES (0, 'batch')", [])?;
                        if let Some(then) = then.take() {
                            then();
                        }
                        Ok(db.fence())
                    })
                    .unwrap()
            })
            .collect();
        held.release().unwrap();
        tickets.into_iter().map(|t| t.wait()).collect()
    }

    /// A queue whose batches are never split by their hold time (a loaded machine can
    /// pause the worker for longer than the default), for [`one_batch`].
    fn one_batch_queue(lock: &RedisLock, db: &Sqlite) -> Queue<Sqlite> {
        Queue::builder()
            .lock(lock.clone())
            .max_hold(PATIENCE)
            .build(db.clone())
            .unwrap()
    }

    fn logged(db: &Sqlite) -> i64 {
        db.connect()
            .unwrap()
            .query_row("SELECT count(*) FROM log", [], |r| r.get(0))
            .unwrap()
    }

    #[test]
    fn a_batch_that_outlives_its_lease_rolls_back_whole() {
        let server = RedisServer::start();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lease.db");
        create_tables(&path);
        let db = db_at(&path);
        let lock = RedisLock::builder(server.url())
            .ttl(Duration::from_millis(300))
            .renewal(false)
            .build()
            .unwrap();
        let queue = one_batch_queue(&lock, &db);
        let caps = queue.capabilities();
        assert!(caps.fences && caps.lease_can_expire && caps.reruns_op);
        assert_eq!(caps.scope, Scope::Hosts);

        // The first batch's ops all run under one fence, and commit.
        let fine = one_batch(&queue, &lock, 4, || {});
        let fences: Vec<Fence> = fine.iter().map(|r| r.as_ref().unwrap().unwrap()).collect();
        assert!(fences.windows(2).all(|w| w[0] == w[1]), "{fences:?}");
        assert_eq!(logged(&db), 4);

        // The last op of the next batch pauses past the TTL, with no renewal.
        let lost = one_batch(&queue, &lock, 5, || {
            std::thread::sleep(Duration::from_millis(600));
        });
        assert_eq!(lost.len(), 5);
        for r in &lost {
            assert!(matches!(r, Err(Error::LeaseLost)), "{lost:?}");
        }
        assert_eq!(logged(&db), 4, "none of the lost batch's writes may commit");

        // The queue keeps serving, under a new, higher fence.
        let after = queue
            .run(&Key::whole(), |db| {
                db.execute("INSERT INTO log VALUES (0, 'after')", [])?;
                Ok::<_, rusqlite::Error>(db.fence())
            })
            .unwrap()
            .unwrap();
        assert!(after > fences[0]);
        assert_eq!(logged(&db), 5);
    }

    #[test]
    fn the_batch_transaction_records_its_fence_and_a_stale_one_is_refused_whole() {
        let server = RedisServer::start();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fence.db");
        create_tables(&path);
        let db = db_at(&path);
        let lock = RedisLock::new(&server.url()).unwrap();
        let queue = one_batch_queue(&lock, &db);
        let name = queue.lock_name().unwrap().clone();
        let claim = |fence| FenceClaim {
            backend: lock.backend_id(),
            name: name.bytes(),
            fence,
        };
        let batch = one_batch(&queue, &lock, 3, || {});
        let fence = batch[0].as_ref().unwrap().unwrap();
        // The batch's commit recorded its fence: a lower one is refused.
        let mut conn = db.connect().unwrap();
        match db.begin(&mut conn, &[claim(Fence(fence.0 - 1))]) {
            Err(TransactError::StaleFence { highest, .. }) => assert_eq!(highest, fence),
            other => panic!("the batch's fence was not recorded: {other:?}"),
        }
        // A successor (from another backend client, say) recorded a far higher fence: the
        // queue's next batch presents a lower one and is refused as a whole.
        let successor = Fence(fence.0 + 1_000_000_000);
        db.begin(&mut conn, &[claim(successor)]).unwrap();
        db.commit(&mut conn).unwrap();
        let stale = one_batch(&queue, &lock, 3, || {});
        for r in &stale {
            assert!(
                matches!(r, Err(Error::StaleFence { highest, .. }) if *highest == successor),
                "{stale:?}"
            );
        }
        assert_eq!(logged(&db), 3, "the stale batch wrote nothing");
    }

    /// Submits `ops` ops that each sleep `op_time` while `queue`'s lock is held elsewhere,
    /// then returns how many ops ran under each lease (fence), in order.
    fn ops_per_lease(
        queue: &Queue<Sqlite>,
        lock: &RedisLock,
        ops: usize,
        op_time: Duration,
    ) -> Vec<usize> {
        let held = lock
            .acquire(queue.lock_name().unwrap(), Some(Instant::now() + PATIENCE))
            .unwrap();
        let tickets: Vec<_> = (0..ops)
            .map(|_| {
                queue
                    .submit(&Key::whole(), move |db| {
                        std::thread::sleep(op_time);
                        Ok::<_, rusqlite::Error>(db.fence().unwrap())
                    })
                    .unwrap()
            })
            .collect();
        held.release().unwrap();
        let fences: Vec<Fence> = tickets.into_iter().map(|t| t.wait().unwrap()).collect();
        let mut per_lease: Vec<(Fence, usize)> = Vec::new();
        for f in fences {
            match per_lease.last_mut() {
                Some((last, n)) if *last == f => *n += 1,
                _ => per_lease.push((f, 1)),
            }
        }
        assert!(
            per_lease.windows(2).all(|w| w[0].0 < w[1].0),
            "leases out of order: {per_lease:?}"
        );
        per_lease.into_iter().map(|(_, n)| n).collect()
    }

    #[test]
    fn batches_are_bounded_by_count_and_by_time() {
        let server = RedisServer::start();
        let dir = tempfile::tempdir().unwrap();
        let db = db_at(&dir.path().join("bounds.db"));
        let lock = RedisLock::new(&server.url()).unwrap();
        let by_count = Queue::builder()
            .lock(lock.clone())
            .max_batch(2)
            .max_hold(PATIENCE)
            .build(db.clone())
            .unwrap();
        assert_eq!(
            ops_per_lease(&by_count, &lock, 6, Duration::ZERO),
            [2, 2, 2]
        );
        // Two 30 ms ops outlast a 50 ms hold: the third waits for the next lease.
        let by_time = Queue::builder()
            .lock(lock.clone())
            .max_hold(Duration::from_millis(50))
            .build(db)
            .unwrap();
        let per_lease = ops_per_lease(&by_time, &lock, 6, Duration::from_millis(30));
        assert_eq!(per_lease.iter().sum::<usize>(), 6);
        assert!(
            per_lease.len() >= 3 && per_lease.iter().all(|&n| n <= 2),
            "{per_lease:?}"
        );
    }

    #[test]
    fn a_server_killed_mid_batch_fails_every_caller_of_the_batch() {
        let mut server = RedisServer::start();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kill.db");
        create_tables(&path);
        let db = db_at(&path);
        let lock = RedisLock::builder(server.url())
            .ttl(Duration::from_millis(300))
            .connect_timeout(Duration::from_millis(200))
            .response_timeout(Duration::from_millis(200))
            .build()
            .unwrap();
        let queue = Queue::builder()
            .lock(lock.clone())
            .max_hold(PATIENCE)
            .timeout(Some(Duration::from_secs(2)))
            .build(db.clone())
            .unwrap();
        let (killed_tx, killed_rx) = mpsc::channel::<()>();
        let (kill_tx, kill_rx) = mpsc::channel::<()>();
        let queue = Arc::new(queue);
        let batch = {
            let (queue, lock) = (queue.clone(), lock.clone());
            std::thread::spawn(move || {
                one_batch(&queue, &lock, 4, move || {
                    kill_tx.send(()).unwrap();
                    killed_rx.recv().unwrap();
                    // The watchdog cannot renew: the lease runs out before the commit.
                    std::thread::sleep(Duration::from_millis(500));
                })
            })
        };
        kill_rx.recv_timeout(PATIENCE).unwrap();
        server.kill();
        killed_tx.send(()).unwrap();
        let results = batch.join().unwrap();
        for r in &results {
            assert!(matches!(r, Err(Error::LeaseLost)), "{results:?}");
        }
        assert_eq!(logged(&db), 0, "none of the batch's writes may commit");
        // With the server down, new callers hear so, quickly.
        let start = Instant::now();
        let r = queue.run(&Key::whole(), |db| {
            db.execute("INSERT INTO log VALUES (0, 'down')", [])
        });
        assert!(matches!(r, Err(Error::Unavailable(_))), "{r:?}");
        assert!(start.elapsed() < Duration::from_secs(30));
        // And once it is back, the queue serves again.
        server.restart();
        queue
            .run(&Key::whole(), |db| {
                db.execute("INSERT INTO log VALUES (0, 'back')", [])
            })
            .unwrap();
        assert_eq!(logged(&db), 1);
    }

    #[test]
    fn a_redis_server_down_reaches_the_queues_callers_typed_and_said_once() {
        let dir = tempfile::tempdir().unwrap();
        let db = db_at(&dir.path().join("down.db"));
        let url = "redis://127.0.0.1:1/0";
        let lock = RedisLock::builder(url)
            .connect_timeout(Duration::from_millis(500))
            .build()
            .unwrap();
        let queue = Queue::builder().lock(lock).build(db).unwrap();
        let tickets = no_op_tickets(&queue, 4);
        for ticket in tickets {
            let error = ticket.wait().unwrap_err();
            assert!(matches!(error, Error::Unavailable(_)), "{error:?}");
            let text = error.to_string();
            assert_eq!(text.matches("backend unavailable").count(), 1, "{text}");
            assert!(
                text.starts_with(&format!("backend unavailable: redis at {url}: ")),
                "{text}"
            );
            // The chain: the server's own error, said once (it has no source: its text
            // says the driver's error in words).
            let server = std::error::Error::source(&error).unwrap();
            assert_eq!(format!("backend unavailable: {server}"), text);
        }
    }

    #[test]
    fn redis_specs_open_ping_and_refuse_a_dead_server() {
        let servers: Vec<RedisServer> = (0..3).map(|_| RedisServer::start()).collect();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spec.db");
        let registry = Registry::builtin();
        let single = format!("queue+{}", servers[0].url());
        let addrs: Vec<String> = servers.iter().map(RedisServer::addr).collect();
        let quorum = format!("queue+redlock://{}/0", addrs.join(","));
        for (spec, fences) in [(single.as_str(), true), (quorum.as_str(), false)] {
            let s = registry.open(spec, &Setup::new(db_at(&path))).unwrap();
            let caps = s.capabilities();
            assert_eq!((caps.scope, caps.fences), (Scope::Hosts, fences), "{spec}");
            let fence: Option<Fence> = s
                .run_as(&[Key::whole()], Wait::Default, |db| {
                    Ok::<_, rusqlite::Error>(db.fence())
                })
                .unwrap();
            assert_eq!(fence.is_some(), fences, "{spec}");
        }
        let dead = RedisServer::start();
        let url = format!("queue+{}", dead.url());
        drop(dead);
        match registry.open(&url, &Setup::new(db_at(&path))) {
            Err(Error::Unavailable(_)) => {}
            Err(other) => panic!("expected unavailable, got {other:?}"),
            Ok(_) => panic!("a dead server was accepted"),
        }
    }
}

// ---------------------------------------------------------------- measurement

/// Ops per thread in the measurement (`MEASURE_OPS` overrides).
fn measure_ops() -> u32 {
    std::env::var("MEASURE_OPS").map_or(300, |n| n.parse().unwrap())
}
/// Measurements of each strategy; the median is reported.
const MEASURE_ROUNDS: usize = 3;
const MEASURE_PROCESSES: u32 = 4;
const MEASURE_THREADS: u32 = 16;

/// A measurement child: MEASURE_THREADS threads, MEASURE_OPS transactional increments each.
fn measure_worker() {
    let strategy = open_and_wait_for_go(TxMode::Transaction);
    on_threads(MEASURE_THREADS, move || {
        for _ in 0..measure_ops() {
            strategy
                .run(&Key::whole(), |db| {
                    db.execute("UPDATE counter SET v = v + 1", [])
                })
                .unwrap();
        }
    });
}

/// Ops per second of `spec` at MEASURE_PROCESSES × MEASURE_THREADS, from the start signal
/// to the last child's exit.
fn ops_per_second(test: &str, spec: &str) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("measure.db");
    create_tables(&path);
    let (mut children, go) = spawn_workers(
        test,
        "measure",
        MEASURE_PROCESSES,
        &path,
        &[("SPEC", spec.to_owned())],
    );
    // Let every child open its strategy before the clock starts.
    std::thread::sleep(Duration::from_millis(500));
    let start = Instant::now();
    touch(&go);
    children.wait_success();
    let took = start.elapsed();
    let ops = MEASURE_PROCESSES * MEASURE_THREADS * measure_ops();
    assert_eq!(read_counter(&path), i64::from(ops));
    f64::from(ops) / took.as_secs_f64()
}

/// Prints ops/s of the batched locks next to the plain ones (no assertion on speed).
#[test]
#[ignore = "a measurement: run with --ignored --nocapture"]
fn measure_batched_locks_against_plain_locks() {
    const NAME: &str = "measure_batched_locks_against_plain_locks";
    if child_role().is_some() {
        return measure_worker();
    }
    #[allow(unused_mut)]
    let mut pairs = vec![("file-lock".to_owned(), "queue+file-lock".to_owned())];
    #[cfg(feature = "redis")]
    let server = redis_server::RedisServer::start();
    #[cfg(feature = "redis")]
    pairs.push((server.url(), format!("queue+{}", server.url())));
    for (plain, batched) in pairs {
        let (mut p, mut b) = (Vec::new(), Vec::new());
        // Alternated, so that both see the same background load.
        for _ in 0..MEASURE_ROUNDS {
            p.push(ops_per_second(NAME, &plain));
            b.push(ops_per_second(NAME, &batched));
        }
        let median = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let (p, b) = (median(&mut p), median(&mut b));
        println!(
            "{MEASURE_PROCESSES} procs x {MEASURE_THREADS} threads, median of {MEASURE_ROUNDS}: {plain}: {p:.0} ops/s; {batched}: {b:.0} ops/s; x{:.1}",
            b / p
        );
    }
}
