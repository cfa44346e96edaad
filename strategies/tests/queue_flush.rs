//! The queue's overlapped flush (`QueueBuilder::overlap_flush`) against a real SQLite file
//! with `synchronous = FULL`: the worker commits with `NORMAL`, and no caller hears back
//! before the WAL sync that covers its commit.
#![cfg(all(feature = "queue", feature = "sqlite"))]

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, mpsc};
use std::time::{Duration, Instant};

use turnstile::queue::{Queue, Ticket};
use turnstile::sqlite::rusqlite;
use turnstile::sqlite::{Sqlite, Synchronous};
use turnstile::{BoxError, Connect, Error, Flush, Key, Serializer, Transact};

#[path = "support/sqlite_delegate.rs"]
#[macro_use]
mod sqlite_delegate;

/// Generous bound for "does not hang" checks; never a performance assertion.
const HANG: Duration = Duration::from_secs(60);

fn full(dir: &tempfile::TempDir) -> Sqlite {
    Sqlite::new(dir.path().join("f.db")).synchronous(Synchronous::Full)
}

/// The `synchronous` setting the worker's connection runs ops under (2 = FULL, 1 = NORMAL).
fn worker_synchronous<C>(queue: &Queue<C>) -> i64
where
    C: Transact<Resource = rusqlite::Connection>,
{
    queue
        .run(&Key::whole(), |c| {
            c.query_row("PRAGMA synchronous", [], |r| r.get::<_, i64>(0))
        })
        .unwrap()
}

/// A queue that overlaps its flush.
fn overlapping<C: Transact>(connect: C) -> Queue<C> {
    Queue::builder().overlap_flush(true).build(connect).unwrap()
}

#[test]
fn with_full_sync_the_worker_commits_with_normal_and_flushes_after() {
    let dir = tempfile::tempdir().unwrap();
    // Group commit over FULL, asked to overlap: deferred.
    let queue = overlapping(full(&dir));
    assert_eq!(worker_synchronous(&queue), 1);
    drop(queue);
    // By default: FULL as configured.
    let queue = Queue::new(full(&dir)).unwrap();
    assert_eq!(worker_synchronous(&queue), 2);
    drop(queue);
    // One commit per op: nothing to overlap.
    let queue = Queue::builder()
        .group_commit(false)
        .overlap_flush(true)
        .build(full(&dir))
        .unwrap();
    assert_eq!(worker_synchronous(&queue), 2);
    drop(queue);
    // NORMAL has no flush at commit to defer.
    let queue = overlapping(full(&dir).synchronous(Synchronous::Normal));
    assert_eq!(worker_synchronous(&queue), 1);
    drop(queue);
    // Nor does the rollback journal's FULL turn into anything else.
    let queue = overlapping(
        Sqlite::new(dir.path().join("rollback.db"))
            .wal(false)
            .synchronous(Synchronous::Full),
    );
    assert_eq!(worker_synchronous(&queue), 2);
}

#[test]
fn the_sqlite_flush_syncs_and_leaves_other_modes_alone() {
    let dir = tempfile::tempdir().unwrap();
    let db = full(&dir);
    let mut conn = db.connect().unwrap();
    let flush = db
        .defer_flush(&mut conn)
        .unwrap()
        .expect("FULL in WAL mode defers its flush");
    let sync: i64 = conn
        .query_row("PRAGMA synchronous", [], |r| r.get(0))
        .unwrap();
    assert_eq!(sync, 1);
    conn.execute_batch("CREATE TABLE t (v INTEGER); INSERT INTO t VALUES (1);")
        .unwrap();
    flush.flush().unwrap();
    // The handle outlives its connection (the last one: SQLite checkpoints and removes
    // the WAL as it closes).
    drop(conn);
    flush.flush().unwrap();

    let normal = full(&dir).synchronous(Synchronous::Normal);
    let mut conn = normal.connect().unwrap();
    assert!(normal.defer_flush(&mut conn).unwrap().is_none());
    let rollback = Sqlite::new(dir.path().join("rollback.db"))
        .wal(false)
        .synchronous(Synchronous::Full);
    let mut conn = rollback.connect().unwrap();
    assert!(rollback.defer_flush(&mut conn).unwrap().is_none());
    let sync: i64 = conn
        .query_row("PRAGMA synchronous", [], |r| r.get(0))
        .unwrap();
    assert_eq!(sync, 2, "a resource that does not defer is left as it was");
}

/// What the test controls about [`Gated`]'s flushes.
#[derive(Default)]
struct Gate {
    open: Mutex<bool>,
    opened: Condvar,
    /// The next flush fails (before syncing anything).
    fail_next: AtomicBool,
    /// Flushes that returned `Ok`.
    flushed: AtomicUsize,
    /// Resources switched to deferred flushes: one per connection the worker opened.
    deferred: AtomicUsize,
}

impl Gate {
    fn set(&self, open: bool) {
        *self.open.lock().unwrap() = open;
        self.opened.notify_all();
    }
}

/// Real SQLite (FULL, WAL) whose deferred flush first waits for the test to open a gate,
/// then syncs the WAL for real. A flush the test makes fail fails every later call too,
/// as [`Flush`] requires.
struct Gated {
    db: Sqlite,
    gate: Arc<Gate>,
}

struct GatedFlush {
    inner: Box<dyn Flush>,
    gate: Arc<Gate>,
    failed: AtomicBool,
}

impl Flush for GatedFlush {
    fn flush(&self) -> Result<(), BoxError> {
        let mut open = self.gate.open.lock().unwrap();
        while !*open {
            open = self.gate.opened.wait(open).unwrap();
        }
        drop(open);
        if self.gate.fail_next.swap(false, Ordering::SeqCst) {
            self.failed.store(true, Ordering::SeqCst);
        }
        if self.failed.load(Ordering::SeqCst) {
            return Err("the disk said no".into());
        }
        self.inner.flush()?;
        self.gate.flushed.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

impl Connect for Gated {
    type Resource = rusqlite::Connection;
    fn connect(&self) -> Result<rusqlite::Connection, BoxError> {
        self.db.connect()
    }
    fn identity(&self) -> &str {
        self.db.identity()
    }
}

impl Transact for Gated {
    delegate_to_db!(
        begin,
        commit,
        rollback,
        in_transaction,
        savepoint,
        release_savepoint,
        rollback_to_savepoint
    );
    fn defer_flush(
        &self,
        c: &mut rusqlite::Connection,
    ) -> Result<Option<Box<dyn Flush>>, BoxError> {
        let Some(inner) = self.db.defer_flush(c)? else {
            return Ok(None);
        };
        self.gate.deferred.fetch_add(1, Ordering::SeqCst);
        Ok(Some(Box::new(GatedFlush {
            inner,
            gate: self.gate.clone(),
            failed: AtomicBool::new(false),
        })))
    }
}

/// Opens the gate when dropped, so that a failing test does not leave the queue's
/// shutdown waiting for a flush forever.
struct OpenOnDrop(Arc<Gate>);

impl Drop for OpenOnDrop {
    fn drop(&mut self) {
        self.0.set(true);
    }
}

impl std::ops::Deref for OpenOnDrop {
    type Target = Gate;
    fn deref(&self) -> &Gate {
        &self.0
    }
}

/// A queue over `Gated` SQLite with table `t (v)`, the gate open. Keep the gate after the
/// queue, so that it opens before the queue drops.
fn gated_queue(dir: &tempfile::TempDir) -> (Arc<Queue<Gated>>, OpenOnDrop) {
    let gate = Arc::new(Gate::default());
    gate.set(true);
    let queue = overlapping(Gated {
        db: full(dir),
        gate: gate.clone(),
    });
    queue
        .run(&Key::whole(), |c| {
            c.execute_batch("CREATE TABLE t (v INTEGER)")
        })
        .unwrap();
    assert_eq!(gate.deferred.load(Ordering::SeqCst), 1);
    (Arc::new(queue), OpenOnDrop(gate))
}

fn count(dir: &tempfile::TempDir) -> i64 {
    let conn = rusqlite::Connection::open(dir.path().join("f.db")).unwrap();
    conn.query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .unwrap()
}

/// Waits (up to [`HANG`]) until another connection sees `n` rows committed.
fn await_committed(dir: &tempfile::TempDir, n: i64) {
    let start = Instant::now();
    while count(dir) < n {
        assert!(start.elapsed() < HANG, "the ops never committed");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// `callers` threads insert one row each, all at once, with the gate shut: the rows
/// commit, but no caller hears back until the gate opens and the flush syncs.
fn answers_wait_for_the_flush(callers: usize) {
    let dir = tempfile::tempdir().unwrap();
    let (queue, gate) = gated_queue(&dir);
    gate.set(false);
    // A crowd's ops must all be queued before the worker runs one: an op the worker found
    // alone it flushes itself, before it takes the next (a lone caller's fast path), and
    // the shut gate would hold the rest of the crowd uncommitted. So an op that writes
    // nothing holds the worker until every op is queued.
    let plug = (callers > 1).then(|| {
        let (release, released) = mpsc::channel::<()>();
        let ticket = queue
            .submit(&Key::whole(), move |_| {
                let _ = released.recv_timeout(HANG);
                Ok::<_, rusqlite::Error>(())
            })
            .unwrap();
        while !ticket.is_started() {
            std::thread::sleep(Duration::from_millis(1));
        }
        (release, ticket)
    });
    let go = Arc::new(std::sync::Barrier::new(callers));
    let (tickets_tx, tickets) = mpsc::channel::<Ticket<usize, rusqlite::Error>>();
    let submitters: Vec<_> = (0..callers)
        .map(|i| {
            let (queue, go, tickets_tx) = (queue.clone(), go.clone(), tickets_tx.clone());
            std::thread::spawn(move || {
                go.wait();
                let ticket = queue
                    .submit(&Key::whole(), move |c| {
                        c.execute("INSERT INTO t VALUES (?1)", [i as i64])
                    })
                    .unwrap();
                tickets_tx.send(ticket).unwrap();
            })
        })
        .collect();
    for s in submitters {
        s.join().unwrap();
    }
    let tickets: Vec<_> = tickets.iter().take(callers).collect();
    if let Some((release, _)) = &plug {
        release.send(()).unwrap();
    }
    await_committed(&dir, callers as i64);
    // Time for an answer that did not wait for the flush to arrive.
    std::thread::sleep(Duration::from_millis(50));
    for t in &tickets {
        assert!(!t.is_finished(), "a caller heard back before its flush");
    }
    let flushed_before = gate.flushed.load(Ordering::SeqCst);
    gate.set(true);
    for t in tickets {
        assert_eq!(t.wait_timeout(HANG).unwrap(), 1);
    }
    assert!(gate.flushed.load(Ordering::SeqCst) > flushed_before);
}

#[test]
fn a_lone_caller_hears_back_only_after_the_flush_of_its_commit() {
    answers_wait_for_the_flush(1);
}

#[test]
fn a_crowd_of_callers_hears_back_only_after_the_flush_of_their_commits() {
    answers_wait_for_the_flush(8);
}

#[test]
fn a_failed_flush_answers_indeterminate_and_the_worker_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let (queue, gate) = gated_queue(&dir);
    gate.fail_next.store(true, Ordering::SeqCst);
    let r = queue.run(&Key::whole(), |c| c.execute("INSERT INTO t VALUES (1)", []));
    assert!(matches!(r, Err(Error::Indeterminate)), "{r:?}");
    // The worker reopened its connection (and deferred its flushes again): later ops get
    // a flush that works.
    let r = queue.run(&Key::whole(), |c| c.execute("INSERT INTO t VALUES (2)", []));
    assert_eq!(r.unwrap(), 1);
    assert_eq!(gate.deferred.load(Ordering::SeqCst), 2);
    // A failed op needs no flush and keeps its own error.
    let r = queue.run(&Key::whole(), |c| {
        c.execute("INSERT INTO nowhere VALUES (1)", [])
    });
    assert!(matches!(r, Err(Error::Op(_))), "{r:?}");
}

#[test]
fn close_returns_once_every_op_is_flushed_and_answered() {
    let dir = tempfile::tempdir().unwrap();
    let (queue, gate) = gated_queue(&dir);
    gate.set(false);
    let ticket = queue
        .submit(&Key::whole(), |c| c.execute("INSERT INTO t VALUES (1)", []))
        .unwrap();
    await_committed(&dir, 1);
    let (closed_tx, closed) = mpsc::channel();
    let closer = {
        let queue = queue.clone();
        std::thread::spawn(move || {
            queue.close();
            closed_tx.send(()).unwrap();
        })
    };
    assert!(
        closed.recv_timeout(Duration::from_millis(50)).is_err(),
        "close returned before the flush"
    );
    assert!(!ticket.is_finished());
    gate.set(true);
    closed.recv_timeout(HANG).unwrap();
    closer.join().unwrap();
    assert_eq!(ticket.wait().unwrap(), 1);
}
