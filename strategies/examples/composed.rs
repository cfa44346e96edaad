//! The composed strategy: a queue in each process in front of a cross-process lock, which
//! its worker takes once per batch (`queue+file-lock`). Seed 001's author had to rewrite
//! his helper processes as threads to keep his single consumer; here each process keeps
//! its own queue, and the processes share one SQLite file.
//!
//! The example re-executes itself as worker processes, each with several threads. Run it
//! with `cargo run -p turnstile --example composed`. The book's "Composed" chapter
//! includes the parts between the `ANCHOR` markers.

use std::borrow::Cow;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use turnstile::lock::FileLock;
use turnstile::queue::Queue;
use turnstile::spec::{Registry, Setup};
use turnstile::sqlite::{Sqlite, Synchronous, rusqlite};
use turnstile::{
    Capabilities, Error, Key, Lock, LockName, Scope, Serializer, StrategyError, TxMode, Wait,
};

const PROCESSES: i64 = 3;
const THREADS: i64 = 8;
const INCREMENTS: i64 = 25;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if let [_, role, path] = args.as_slice()
        && role == "worker"
    {
        return worker(Path::new(path));
    }

    let dir = tempfile::tempdir()?;
    let path = dir.path().join("app.db");
    let db = Sqlite::new(&path).synchronous(Synchronous::Normal);

    // ANCHOR: over
    // The shortest form: the queue's worker takes this file lock once per batch. Only the
    // worker waits for the lock, so it can afford to poll it every millisecond (as the
    // spec `queue+file-lock` does); at the default, 10 ms, it would mostly sleep through
    // the other processes' short hand-off pauses.
    let lock = FileLock::builder(FileLock::dir_beside(&path))
        .max_poll(Duration::from_millis(1))
        .open()?;
    let queue = Queue::over(lock, db.clone())?;
    // ANCHOR_END: over
    queue.run(&Key::whole(), |db| {
        db.execute_batch(
            "CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
             INSERT INTO counters VALUES ('hits', 0);",
        )
    })?;

    // ANCHOR: processes
    // Hold the lock, as another process would (a second FileLock opens its own
    // descriptors), while the workers start: their threads' ops queue up behind it.
    let gate = FileLock::beside(&path)?;
    let lock_name = queue.lock_name().ok_or("a queue over a lock has a name")?;
    let held = gate.acquire(lock_name, Some(Instant::now() + Duration::from_secs(10)))?;

    let exe = std::env::current_exe()?;
    let mut children = Vec::new();
    for _ in 0..PROCESSES {
        let mut child = Command::new(&exe)
            .arg("worker")
            .arg(&path)
            .stdout(Stdio::piped())
            .spawn()?;
        let mut out = BufReader::new(child.stdout.take().ok_or("no stdout")?);
        let mut ready = String::new();
        out.read_line(&mut ready)?;
        assert_eq!(ready.trim(), "ready", "a worker failed to start");
        children.push((child, out));
    }

    // A caller of this process's queue that cannot wait that long gets a timeout; its op
    // never runs.
    match queue.run_with(
        &[Key::whole()],
        Wait::Timeout(Duration::from_millis(20)),
        |db| db.execute("UPDATE counters SET value = -1000", []),
    ) {
        Err(Error::Timeout { waited }) => println!("the lock was held: gave up after {waited:?}"),
        other => return Err(format!("expected a timeout, got {other:?}").into()),
    }

    drop(held); // the workers' batches go in turn
    for (mut child, out) in children {
        let report = out.lines().collect::<Result<Vec<_>, _>>()?.join("\n");
        assert!(child.wait()?.success(), "a worker failed");
        let (ops, leases) = report.split_once(' ').ok_or("no report from a worker")?;
        let (ops, leases): (i64, i64) = (ops.parse()?, leases.parse()?);
        // Every lease ran at least one op; a busy queue runs many under each.
        assert!((1..=ops).contains(&leases));
        println!("a worker process ran {ops} ops under {leases} leases");
    }
    // ANCHOR_END: processes

    let hits: i64 = queue.run(&Key::whole(), |db| {
        db.query_row("SELECT value FROM counters WHERE name = 'hits'", [], |r| {
            r.get(0)
        })
    })?;
    assert_eq!(hits, PROCESSES * THREADS * INCREMENTS);
    println!("{PROCESSES} processes x {THREADS} threads x {INCREMENTS} increments = {hits}");

    // ANCHOR: spec
    // The same strategy by name, as the harness and the CLI open it: `queue+file-lock`
    // (lock directory `<db>.locks/`, like plain `file-lock`, so the two exclude each
    // other), `queue+file-lock:DIR`, `queue+redis://…`, `queue+redlock://…`.
    let registry = Registry::builtin();
    let strategy = registry.open("queue+file-lock", &Setup::new(db))?;
    let caps = strategy.capabilities();
    assert_eq!(caps.scope, Scope::Processes);
    assert!(caps.transactional && !caps.fences);
    let same: i64 = strategy.run_as(&[Key::whole()], Wait::Default, |db| {
        db.query_row("SELECT value FROM counters WHERE name = 'hits'", [], |r| {
            r.get(0)
        })
    })?;
    assert_eq!(same, hits);
    // ANCHOR_END: spec
    println!("queue+file-lock: {caps:?}");
    Ok(())
}

// ANCHOR: worker
/// One worker process: a queue over the file lock, and THREADS threads running
/// read-modify-write increments through it.
fn worker(path: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let leases = Arc::new(AtomicU64::new(0));
    let queue = Arc::new(open_queue(path, leases.clone())?);
    println!("ready");
    let threads: Vec<_> = (0..THREADS)
        .map(|_| {
            let queue = queue.clone();
            std::thread::spawn(move || -> Result<(), Error<rusqlite::Error>> {
                for _ in 0..INCREMENTS {
                    queue.run(&Key::whole(), |db| {
                        let value: i64 = db.query_row(
                            "SELECT value FROM counters WHERE name = 'hits'",
                            [],
                            |r| r.get(0),
                        )?;
                        db.execute(
                            "UPDATE counters SET value = ?1 WHERE name = 'hits'",
                            [value + 1],
                        )
                    })?;
                }
                Ok(())
            })
        })
        .collect();
    for t in threads {
        t.join().expect("a thread panicked")?;
    }
    let ops = THREADS * INCREMENTS;
    println!("{ops} {}", leases.load(Ordering::Relaxed));
    Ok(())
}
// ANCHOR_END: worker

// ANCHOR: build
/// The queue every worker process opens: every setting at its default, spelled out, over
/// a file lock that counts its leases.
fn open_queue(path: &Path, leases: Arc<AtomicU64>) -> Result<Queue<Sqlite>, StrategyError> {
    let lock = FileLock::builder(FileLock::dir_beside(path))
        .max_poll(Duration::from_millis(1)) // one poller per process: poll often
        .open()?;
    Queue::builder()
        .lock(Counted { lock, leases }) // any Lock: FileLock, RedisLock, MySqlLock, …
        .capacity(1024) // jobs waiting in the channel before submitters wait
        .timeout(Some(Duration::from_secs(30))) // longest wait for a slot, the lock and the turn
        .tx_mode(TxMode::Transaction) // a batch is one BEGIN IMMEDIATE … COMMIT
        .group_commit(true) // a savepoint per op; one commit per batch
        .max_batch(256) // at most this many ops per batch, so per lease
        .max_hold(Duration::from_millis(20)) // a lease starts no op after this long
        .handoff_pause(Duration::from_micros(300)) // then leave the lock free this long,
        .handoff_interval(Duration::from_millis(10)) // at most once per this interval
        .build(Sqlite::new(path).synchronous(Synchronous::Normal))
}
// ANCHOR_END: build

// ANCHOR: count
/// A lock that counts the leases its inner lock grants. Any `Lock` goes behind a queue:
/// this one shows that a queue takes one lease per batch, not one per op.
struct Counted<L> {
    lock: L,
    leases: Arc<AtomicU64>,
}

impl<L: Lock> Lock for Counted<L> {
    type Lease = L::Lease;

    fn capabilities(&self) -> Capabilities {
        self.lock.capabilities()
    }

    fn backend_id(&self) -> &str {
        self.lock.backend_id()
    }

    fn acquire(
        &self,
        name: &LockName,
        deadline: Option<Instant>,
    ) -> Result<Self::Lease, StrategyError> {
        let lease = self.lock.acquire(name, deadline)?;
        self.leases.fetch_add(1, Ordering::Relaxed);
        Ok(lease)
    }

    fn order_key<'a>(&self, name: &'a LockName) -> Cow<'a, [u8]> {
        self.lock.order_key(name)
    }
}
// ANCHOR_END: count
