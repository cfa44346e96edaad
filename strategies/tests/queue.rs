//! The `queue` strategy against a real SQLite file: tickets, cancellation, back-pressure,
//! re-entrancy, closing under load, and group commit's failure paths.
#![cfg(all(feature = "queue", feature = "sqlite"))]

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use turnstile::queue::{Queue, QueueBuilder, Ticket};
use turnstile::spec::{Registry, Setup};
use turnstile::sqlite::rusqlite::{self, ErrorCode};
use turnstile::sqlite::{Sqlite, Synchronous};
use turnstile::{BoxError, Connect, Error, Key, Serializer, Transact, TransactError, TxMode, Wait};

#[path = "support/sqlite_delegate.rs"]
#[macro_use]
mod sqlite_delegate;

#[path = "support/panicky_commit.rs"]
mod panicky_commit;

use panicky_commit::PanickyCommit;

type Io = std::io::Error;

/// Generous bound for "does not hang" checks; never a performance assertion.
const HANG: Duration = Duration::from_secs(60);

/// The `synchronous` setting of [`db`]. `queue_full.rs` runs every test of this file again
/// as its module, with its own `SYNC` (FULL) and `OVERLAP` (on), which `crate::SYNC` and
/// `crate::OVERLAP` then name instead of these.
#[allow(dead_code)]
const SYNC: Synchronous = Synchronous::Normal;

/// Whether the queues under test overlap their flush ([`QueueBuilder::overlap_flush`]):
/// `queue_full.rs` turns it on, as `crate::OVERLAP`.
#[allow(dead_code)]
const OVERLAP: bool = false;

/// `Queue::builder()`, overlapping its flush as `crate::OVERLAP` says.
fn builder<C: Transact>() -> QueueBuilder<C> {
    Queue::builder().overlap_flush(crate::OVERLAP)
}

/// `Queue::new`, overlapping its flush as `crate::OVERLAP` says.
fn new_queue<C: Transact>(connect: C) -> Result<Queue<C>, turnstile::StrategyError> {
    builder().build(connect)
}

fn db(dir: &tempfile::TempDir) -> Sqlite {
    Sqlite::new(dir.path().join("q.db")).synchronous(crate::SYNC)
}

fn whole() -> Key {
    Key::whole()
}

/// Runs `f` on its own thread; fails the test if it has not returned within `limit`.
fn within<T: Send + 'static>(limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit)
        .expect("did not finish in time: deadlock or hang")
}

/// Occupies the worker with an op that waits for the returned sender (or its drop).
fn block_worker(queue: &Queue<Sqlite>) -> (Ticket<(), Io>, mpsc::Sender<()>) {
    let (started_tx, started_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    // Ops queued behind it may join its batch; should they make the batch rerun, it runs
    // again: only its first run waits.
    let mut first = true;
    let ticket = queue
        .submit(&whole(), move |_| {
            if std::mem::take(&mut first) {
                started_tx.send(()).unwrap();
                let _ = release_rx.recv();
            }
            Ok(())
        })
        .unwrap();
    started_rx.recv_timeout(HANG).unwrap();
    (ticket, release_tx)
}

struct Unpark(std::thread::Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

/// A minimal executor: polls on this thread, parks between polls.
fn block_on<F: Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    loop {
        match future.as_mut().poll(&mut cx) {
            Poll::Ready(out) => return out,
            Poll::Pending => std::thread::park_timeout(Duration::from_millis(100)),
        }
    }
}

fn create_table(queue: &Queue<Sqlite>, sql: &'static str) {
    queue
        .run(&whole(), move |db| db.execute_batch(sql))
        .unwrap();
}

/// An op that only records, in the returned flag, that it ran: for checks that it never
/// does.
fn op_that_records_running() -> (
    Arc<AtomicBool>,
    impl FnMut(&mut turnstile::Ctx<'_, rusqlite::Connection>) -> Result<(), Io> + Send + 'static,
) {
    let ran = Arc::new(AtomicBool::new(false));
    let flag = ran.clone();
    let op = move |_: &mut turnstile::Ctx<'_, rusqlite::Connection>| {
        flag.store(true, Ordering::SeqCst);
        Ok(())
    };
    (ran, op)
}

/// A queue over a new table `t (v)` in `dir`'s database (whose path comes second), its
/// worker held by [`block_worker`]: what is submitted before the release forms one batch.
fn held_queue_over_t(
    dir: &tempfile::TempDir,
) -> (
    Arc<Queue<Sqlite>>,
    std::path::PathBuf,
    Ticket<(), Io>,
    mpsc::Sender<()>,
) {
    let queue = Arc::new(new_queue(db(dir)).unwrap());
    create_table(&queue, "CREATE TABLE t (v INTEGER)");
    let (busy, release) = block_worker(&queue);
    (queue, dir.path().join("q.db"), busy, release)
}

fn values(path: &std::path::Path) -> Vec<i64> {
    let conn = rusqlite::Connection::open(path).unwrap();
    let mut stmt = conn.prepare("SELECT v FROM t ORDER BY v").unwrap();
    stmt.query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

fn batch_markers(path: &std::path::Path) -> i64 {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.query_row(
        "SELECT count(*) FROM turnstile_fences WHERE backend = 'turnstile-queue-batch'",
        [],
        |r| r.get(0),
    )
    .unwrap_or(0)
}

#[test]
fn connect_failure_is_a_typed_error() {
    let dir = tempfile::tempdir().unwrap();
    let missing = Sqlite::new(dir.path().join("no/such/dir/x.db"));
    match new_queue(missing) {
        Err(Error::Unavailable(_)) => {}
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

/// WAL asked of a database without a file (in memory, or temporary) is the setup at
/// fault, not an outage: `Config`, saying what to do instead.
#[test]
fn wal_on_a_database_without_a_file_is_a_config_error() {
    for path in [":memory:", "", "file:mem?mode=memory"] {
        match new_queue(Sqlite::new(path)) {
            Err(Error::Config(m)) => assert!(m.contains("wal(false)"), "{path:?}: {m}"),
            other => panic!("{path:?}: expected Config, got {other:?}"),
        }
        let queue = new_queue(Sqlite::new(path).wal(false)).unwrap();
        let one = queue
            .run(&whole(), |db| {
                db.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))
            })
            .unwrap();
        assert_eq!(one, 1);
    }
}

#[test]
fn bad_configuration_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(
        builder().capacity(0).build(db(&dir)),
        Err(Error::Config(_))
    ));
    // Not allocated up front (a panic in the channel, or an abort).
    for capacity in [turnstile::queue::MAX_CAPACITY + 1, usize::MAX] {
        assert!(matches!(
            builder().capacity(capacity).build(db(&dir)),
            Err(Error::Config(_))
        ));
    }
    assert!(matches!(
        builder().max_batch(0).build(db(&dir)),
        Err(Error::Config(_))
    ));
    assert!(matches!(
        builder().timeout(Some(Duration::MAX)).build(db(&dir)),
        Err(Error::Config(_))
    ));
    let queue = new_queue(db(&dir)).unwrap();
    let r = queue.run_with(
        &[whole()],
        Wait::Timeout(Duration::MAX),
        |_| Ok::<_, Io>(()),
    );
    assert!(matches!(r, Err(Error::Config(_))));
    let r = queue.run_many(&[], |_| Ok::<_, Io>(()));
    assert!(matches!(r, Err(Error::Config(_))));
}

#[test]
fn try_submit_on_a_full_queue_gives_full_without_blocking() {
    let dir = tempfile::tempdir().unwrap();
    let queue = builder().capacity(2).build(db(&dir)).unwrap();
    let (busy, release) = block_worker(&queue);
    let a = queue.try_submit(&whole(), |_| Ok::<_, Io>(1)).unwrap();
    let b = queue.try_submit(&whole(), |_| Ok::<_, Io>(2)).unwrap();
    assert!(matches!(
        queue.try_submit(&whole(), |_| Ok::<_, Io>(3)),
        Err(Error::Full)
    ));
    // A blocking submit with a zero wait tries once, too.
    assert!(matches!(
        queue.submit_with(&[whole()], Wait::Timeout(Duration::ZERO), |_| Ok::<_, Io>(
            4
        )),
        Err(Error::Timeout { .. })
    ));
    release.send(()).unwrap();
    busy.wait().unwrap();
    assert_eq!(a.wait().unwrap() + b.wait().unwrap(), 3);
}

/// A call whose op must start at once: `run_timeout` with a zero timeout, or
/// `try_submit` on a queue whose default timeout is zero.
type ZeroWait = fn(
    &Queue<Sqlite>,
    Box<dyn FnMut(&mut turnstile::Ctx<'_, rusqlite::Connection>) -> Result<i32, Io> + Send>,
) -> Result<i32, Error<Io>>;

#[test]
fn a_zero_timeout_runs_only_on_an_idle_queue() {
    let ways: [(Option<Duration>, ZeroWait); 2] = [
        (None, |q, op| q.run_timeout(&whole(), Duration::ZERO, op)),
        (Some(Duration::ZERO), |q, op| {
            q.try_submit(&whole(), op)?.wait_timeout(HANG)
        }),
    ];
    for (default_timeout, call) in ways {
        let dir = tempfile::tempdir().unwrap();
        let mut b = builder();
        if default_timeout.is_some() {
            b = b.timeout(default_timeout);
        }
        let queue = b.build(db(&dir)).unwrap();
        queue.run(&whole(), |_| Ok::<_, Io>(())).unwrap();
        // Idle: the op runs, although it cannot start "before" a zero deadline.
        assert_eq!(call(&queue, Box::new(|_| Ok(1))).unwrap(), 1);
        // Busy: it gives up at once, and never runs.
        let (busy, release) = block_worker(&queue);
        let ran = Arc::new(AtomicBool::new(false));
        let flag = ran.clone();
        let r = call(
            &queue,
            Box::new(move |_| {
                flag.store(true, Ordering::SeqCst);
                Ok(2)
            }),
        );
        assert!(matches!(r, Err(Error::Timeout { .. })), "{r:?}");
        release.send(()).unwrap();
        busy.wait().unwrap();
        queue.close();
        assert!(!ran.load(Ordering::SeqCst));
    }
}

#[test]
fn a_ticket_polled_to_completion_answers_a_later_wait_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let queue = new_queue(db(&dir)).unwrap();
    let mut ticket = queue.submit(&whole(), |_| Ok::<_, Io>(5)).unwrap();
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let answer = loop {
        match Pin::new(&mut ticket).poll(&mut Context::from_waker(&waker)) {
            Poll::Ready(answer) => break answer,
            Poll::Pending => std::thread::park_timeout(Duration::from_millis(10)),
        }
    };
    assert_eq!(answer.unwrap(), 5);
    assert!(ticket.is_finished());
    // Its answer is gone: waiting says so instead of sleeping forever.
    let r = within(HANG, move || ticket.wait());
    assert!(matches!(r, Err(Error::Config(_))), "{r:?}");
}

/// Panics when dropped: what an op may capture.
struct Bomb;

impl Drop for Bomb {
    fn drop(&mut self) {
        panic!("a captured value's drop exploded");
    }
}

#[test]
fn an_op_whose_captures_panic_when_dropped_leaves_the_queue_serving() {
    for group_commit in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let queue = builder()
            .group_commit(group_commit)
            .build(db(&dir))
            .unwrap();
        let bomb = Bomb;
        let r = queue.run(&whole(), move |_| {
            let _ = &bomb;
            Ok::<_, Io>(1)
        });
        assert_eq!(r.unwrap(), 1);
        // Cancelled unrun, the op is dropped by the worker too.
        let (busy, release) = block_worker(&queue);
        let bomb = Bomb;
        let r = queue.run_timeout(&whole(), Duration::from_millis(10), move |_| {
            let _ = &bomb;
            Ok::<_, Io>(2)
        });
        assert!(matches!(r, Err(Error::Timeout { .. })), "{r:?}");
        release.send(()).unwrap();
        busy.wait().unwrap();
        let q = &queue;
        let later = q.run(&whole(), |_| Ok::<_, Io>(3));
        assert_eq!(later.unwrap(), 3, "group_commit {group_commit}");
        assert!(!queue.is_closed());
    }
}

#[test]
fn a_wait_that_times_out_before_start_cancels_the_op() {
    let dir = tempfile::tempdir().unwrap();
    let queue = Arc::new(new_queue(db(&dir)).unwrap());
    let (busy, release) = block_worker(&queue);

    let (ran, op) = op_that_records_running();
    let ticket = queue.submit(&whole(), op).unwrap();
    assert!(matches!(
        ticket.wait_timeout(Duration::from_millis(50)),
        Err(Error::Timeout { .. })
    ));

    // The same through `run` with a timeout, from another thread.
    let (ran_by_run, op) = op_that_records_running();
    let q = queue.clone();
    let r = within(HANG, move || {
        q.run_timeout(&whole(), Duration::from_millis(50), op)
    });
    assert!(matches!(r, Err(Error::Timeout { .. })), "{r:?}");

    // A dropped ticket (and a dropped future) cancels too.
    let (ran_dropped, op) = op_that_records_running();
    drop(queue.submit(&whole(), op).unwrap());

    release.send(()).unwrap();
    busy.wait().unwrap();
    // Everything queued before this has been taken off the queue by now.
    queue.run(&whole(), |_| Ok::<_, Io>(())).unwrap();
    assert!(!ran.load(Ordering::SeqCst), "a cancelled op ran");
    assert!(
        !ran_by_run.load(Ordering::SeqCst),
        "a timed-out run's op ran"
    );
    assert!(
        !ran_dropped.load(Ordering::SeqCst),
        "a dropped ticket's op ran"
    );
}

#[test]
fn a_wait_that_times_out_after_start_is_indeterminate() {
    let dir = tempfile::tempdir().unwrap();
    let queue = new_queue(db(&dir)).unwrap();
    create_table(&queue, "CREATE TABLE t (v INTEGER)");
    let (started_tx, started_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let ticket = queue
        .submit(&whole(), move |db| {
            started_tx.send(()).unwrap();
            let _ = release_rx.recv();
            db.execute("INSERT INTO t VALUES (7)", [])
        })
        .unwrap();
    started_rx.recv_timeout(HANG).unwrap();
    assert!(ticket.is_started());
    assert!(matches!(
        ticket.wait_timeout(Duration::from_millis(20)),
        Err(Error::Indeterminate)
    ));
    release_tx.send(()).unwrap();
    queue.close();
    // Indeterminate means "may have committed": here it did.
    assert_eq!(values(&dir.path().join("q.db")), vec![7]);
}

#[test]
fn a_ticket_is_a_future() {
    let dir = tempfile::tempdir().unwrap();
    let queue = new_queue(db(&dir)).unwrap();
    let (busy, release) = block_worker(&queue);
    let ticket = queue
        .submit(&whole(), |db| {
            db.query_row("SELECT 6 * 7", [], |r| r.get::<_, i64>(0))
        })
        .unwrap();
    let releaser = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(20));
        release.send(()).unwrap();
    });
    // Pending at first (the worker is busy), then woken by the worker.
    let answer = within(HANG, move || block_on(ticket));
    assert_eq!(answer.unwrap(), 42);
    releaser.join().unwrap();
    busy.wait().unwrap();

    // A dropped future cancels its op.
    let (busy, release) = block_worker(&queue);
    let (ran, op) = op_that_records_running();
    let future = queue.submit(&whole(), op).unwrap();
    let mut future = Box::pin(future);
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    assert!(
        future
            .as_mut()
            .poll(&mut Context::from_waker(&waker))
            .is_pending()
    );
    drop(future);
    release.send(()).unwrap();
    busy.wait().unwrap();
    queue.run(&whole(), |_| Ok::<_, Io>(())).unwrap();
    assert!(!ran.load(Ordering::SeqCst));
}

#[test]
fn reentrant_run_is_refused_instead_of_deadlocking() {
    let dir = tempfile::tempdir().unwrap();
    let queue = Arc::new(new_queue(db(&dir)).unwrap());
    let q = queue.clone();
    let inner = within(Duration::from_secs(1), move || {
        let q2 = q.clone();
        q.run(&whole(), move |_| {
            let run = q2.run(&whole(), |_| Ok::<_, Io>(()));
            let submit = q2.submit(&whole(), |_| Ok::<_, Io>(())).map(drop);
            let try_submit = q2.try_submit(&whole(), |_| Ok::<_, Io>(())).map(drop);
            Ok::<_, Io>([run, submit, try_submit].map(|r| matches!(r, Err(Error::Reentrant))))
        })
    });
    assert_eq!(inner.unwrap(), [true; 3]);
    // The queue still serves.
    queue.run(&whole(), |_| Ok::<_, Io>(())).unwrap();
}

#[test]
fn reentrant_run_through_another_queue_is_refused() {
    let dir_a = tempfile::tempdir().unwrap();
    let dir_b = tempfile::tempdir().unwrap();
    let a = Arc::new(new_queue(db(&dir_a)).unwrap());
    let b = Arc::new(new_queue(db(&dir_b)).unwrap());
    let (a2, b2) = (a.clone(), b.clone());
    let result = within(Duration::from_secs(1), move || {
        let a3 = a2.clone();
        a2.run(&whole(), move |_| {
            let a4 = a3.clone();
            // A → B is fine; B → A would wait for A's worker, which waits for B.
            let via_b = b2.run(&whole(), move |_| {
                Ok::<_, Io>(matches!(
                    a4.run(&whole(), |_| Ok::<_, Io>(())),
                    Err(Error::Reentrant)
                ))
            });
            Ok::<_, Io>(via_b.map_err(|e| e.to_string()))
        })
    });
    assert_eq!(result.unwrap(), Ok(true));
    // Both keep serving, and B's worker runs ops from A's worker normally.
    let b3 = b.clone();
    let inner = a.run(&whole(), move |_| {
        Ok::<_, Io>(b3.run(&whole(), |_| Ok::<_, Io>(5)).ok())
    });
    assert_eq!(inner.unwrap(), Some(5));
}

#[test]
fn close_racing_blocked_submitters_runs_every_accepted_job_once() {
    let dir = tempfile::tempdir().unwrap();
    let queue = Arc::new(builder().capacity(2).build(db(&dir)).unwrap());
    let runs = Arc::new(Mutex::new(Vec::<(usize, usize)>::new()));
    // A slow op keeps the worker busy, so the submitters fill the queue and block.
    let slow = queue
        .submit(&whole(), |_| {
            std::thread::sleep(Duration::from_millis(200));
            Ok::<_, Io>(())
        })
        .unwrap();
    let handles: Vec<_> = (0..8)
        .map(|thread| {
            let queue = queue.clone();
            let runs = runs.clone();
            std::thread::spawn(move || {
                let mut accepted = Vec::new();
                for seq in 0.. {
                    let runs = runs.clone();
                    match queue.submit_with(&[whole()], Wait::Timeout(HANG), move |_| {
                        runs.lock().unwrap().push((thread, seq));
                        std::thread::sleep(Duration::from_micros(200));
                        Ok::<_, Io>((thread, seq))
                    }) {
                        Ok(ticket) => accepted.push(ticket),
                        Err(Error::Closed) => break,
                        Err(e) => panic!("submit failed with {e:?}"),
                    }
                }
                accepted
                    .into_iter()
                    .map(|t| t.wait_timeout(HANG).unwrap())
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(50));
    let q = queue.clone();
    within(HANG, move || q.close());
    let mut answered = HashSet::new();
    for h in handles {
        for id in h.join().unwrap() {
            assert!(answered.insert(id));
        }
    }
    slow.wait().unwrap();
    let runs = runs.lock().unwrap();
    let ran: HashSet<_> = runs.iter().copied().collect();
    assert_eq!(ran.len(), runs.len(), "an op ran twice");
    assert_eq!(ran, answered, "ops run != tickets accepted");
    assert!(!answered.is_empty());
    assert!(matches!(
        queue.run(&whole(), |_| Ok::<_, Io>(())),
        Err(Error::Closed)
    ));
}

/// `try_submit` never blocks, not even while `close` waits for a submitter blocked on a
/// full queue: it says the queue is closed at once. (It used to wait behind `close` for
/// as long as the worker's op ran.)
#[test]
fn try_submit_does_not_block_behind_a_close_under_way() {
    let dir = tempfile::tempdir().unwrap();
    let queue = Arc::new(builder().capacity(1).build(db(&dir)).unwrap());
    let (running, release) = block_worker(&queue);
    // One job fills the queue; the next submitter blocks in its send.
    let queued = queue.submit(&whole(), |_| Ok::<_, Io>(())).unwrap();
    let q = queue.clone();
    let blocked = std::thread::spawn(move || {
        q.submit_with(&[whole()], Wait::Timeout(HANG), |_| Ok::<_, Io>(()))
            .map(|t| t.wait_timeout(HANG))
    });
    std::thread::sleep(Duration::from_millis(50));
    let q = queue.clone();
    let closing = std::thread::spawn(move || q.close());
    while !queue.is_closed() {
        std::thread::yield_now();
    }
    // Let `close` reach its wait for the submitter.
    std::thread::sleep(Duration::from_millis(100));
    let q = queue.clone();
    let tried = within(Duration::from_secs(10), move || {
        q.try_submit(&whole(), |_| Ok::<_, Io>(())).map(drop)
    });
    assert!(matches!(tried, Err(Error::Closed)), "{tried:?}");
    drop(release);
    running.wait_timeout(HANG).unwrap();
    queued.wait_timeout(HANG).unwrap();
    // Accepted before the close shut the gate, or refused as closed: never lost.
    match blocked.join().unwrap() {
        Ok(answer) => answer.unwrap(),
        Err(e) => assert!(matches!(e, Error::Closed), "{e:?}"),
    }
    closing.join().unwrap();
}

#[test]
fn ten_thousand_submits_then_close_all_run_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let queue = new_queue(db(&dir)).unwrap();
    create_table(&queue, "CREATE TABLE t (v INTEGER NOT NULL)");
    let count = Arc::new(AtomicUsize::new(0));
    let tickets: Vec<_> = (0..10_000)
        .map(|i| {
            let count = count.clone();
            queue
                .submit(&whole(), move |db| {
                    count.fetch_add(1, Ordering::SeqCst);
                    db.execute("INSERT INTO t VALUES (?1)", [i])
                })
                .unwrap()
        })
        .collect();
    queue.close();
    assert_eq!(count.load(Ordering::SeqCst), 10_000);
    for t in tickets {
        assert_eq!(t.wait().unwrap(), 1);
    }
    assert_eq!(
        values(&dir.path().join("q.db")),
        (0..10_000).collect::<Vec<i64>>()
    );
}

#[test]
fn dropping_the_queue_drains_it() {
    let dir = tempfile::tempdir().unwrap();
    let queue = new_queue(db(&dir)).unwrap();
    create_table(&queue, "CREATE TABLE t (v INTEGER NOT NULL)");
    let tickets: Vec<_> = (0..100)
        .map(|i| {
            queue
                .submit(&whole(), move |db| {
                    db.execute("INSERT INTO t VALUES (?1)", [i])
                })
                .unwrap()
        })
        .collect();
    drop(queue);
    for t in tickets {
        t.wait().unwrap();
    }
    assert_eq!(values(&dir.path().join("q.db")).len(), 100);
}

#[test]
fn close_from_inside_an_op_does_not_deadlock() {
    let dir = tempfile::tempdir().unwrap();
    let queue = Arc::new(new_queue(db(&dir)).unwrap());
    let q = queue.clone();
    let later = within(HANG, move || {
        let q2 = q.clone();
        let first = q.submit(&whole(), move |_| {
            q2.close();
            Ok::<_, Io>(())
        });
        first.unwrap().wait().unwrap();
        q.run(&whole(), |_| Ok::<_, Io>(()))
    });
    assert!(matches!(later, Err(Error::Closed)));
    within(HANG, move || drop(queue));

    // The last handle dropped by an op, on the worker thread itself.
    let queue = Arc::new(new_queue(db(&dir)).unwrap());
    let last = queue.clone();
    let (busy, release) = block_worker(&queue);
    let ticket = queue
        .submit(&whole(), move |_| Ok::<_, Io>(Arc::strong_count(&last)))
        .unwrap();
    drop(queue);
    release.send(()).unwrap();
    busy.wait().unwrap();
    assert_eq!(within(HANG, move || ticket.wait()).unwrap(), 1);
}

#[test]
fn transaction_mode_wraps_ops_and_autocommit_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let tx = new_queue(db(&dir)).unwrap();
    assert!(tx.capabilities().transactional);
    assert!(
        !tx.run(&whole(), |db| Ok::<_, Io>(db.is_autocommit()))
            .unwrap()
    );
    let auto = builder()
        .tx_mode(TxMode::Autocommit)
        .build(db(&dir))
        .unwrap();
    assert!(!auto.capabilities().transactional);
    assert!(!auto.capabilities().reruns_op);
    assert!(
        auto.run(&whole(), |db| Ok::<_, Io>(db.is_autocommit()))
            .unwrap()
    );
}

#[test]
fn in_autocommit_mode_a_transaction_left_open_is_rolled_back() {
    let dir = tempfile::tempdir().unwrap();
    let queue = builder()
        .tx_mode(TxMode::Autocommit)
        .build(db(&dir))
        .unwrap();
    create_table(&queue, "CREATE TABLE t (v INTEGER)");
    // Managing its own transaction is the op's right in autocommit mode.
    queue
        .run(&whole(), |db| {
            db.execute_batch("BEGIN; INSERT INTO t VALUES (1); COMMIT")
        })
        .unwrap();
    let r = queue.run(&whole(), |db| {
        db.execute_batch("BEGIN; INSERT INTO t VALUES (2)")
    });
    assert!(matches!(r, Err(Error::Resource(_))), "{r:?}");
    let r = queue.run(&whole(), |db| -> rusqlite::Result<()> {
        db.execute_batch("BEGIN; INSERT INTO t VALUES (3)")?;
        panic!("left it open")
    });
    assert!(matches!(r, Err(Error::Panicked(_))), "{r:?}");
    // Later ops do not run inside the abandoned transactions.
    assert!(
        queue
            .run(&whole(), |db| Ok::<_, Io>(db.is_autocommit()))
            .unwrap()
    );
    queue
        .run(&whole(), |db| db.execute("INSERT INTO t VALUES (4)", []))
        .unwrap();
    assert_eq!(values(&dir.path().join("q.db")), vec![1, 4]);
}

#[test]
fn an_op_that_commits_by_itself_gets_transaction_ended() {
    let dir = tempfile::tempdir().unwrap();
    let queue = new_queue(db(&dir)).unwrap();
    create_table(&queue, "CREATE TABLE t (v INTEGER)");
    let r = queue.run(&whole(), |db| {
        db.execute_batch("INSERT INTO t VALUES (1); COMMIT")
    });
    assert!(matches!(r, Err(Error::TransactionEnded)), "{r:?}");
    queue
        .run(&whole(), |db| db.execute("INSERT INTO t VALUES (2)", []))
        .unwrap();
    assert_eq!(values(&dir.path().join("q.db")), vec![1, 2]);
}

#[test]
fn the_spec_registry_builds_queues_with_the_setup() {
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::builtin();
    let setup = Setup::new(db(&dir)).timeout(Duration::from_secs(3));
    let q = registry.open("queue", &setup).unwrap();
    assert!(q.capabilities().transactional);
    let n: i64 = q
        .run_as(&[whole()], Wait::Default, |db| {
            db.query_row("SELECT 3", [], |r| r.get(0))
        })
        .unwrap();
    assert_eq!(n, 3);
    let auto = registry
        .open("queue", &Setup::new(db(&dir)).tx_mode(TxMode::Autocommit))
        .unwrap();
    assert!(!auto.capabilities().transactional);
    assert!(matches!(
        registry.open("queue:extra", &setup),
        Err(Error::Config(_))
    ));

    // The setup's timeout is the queue's default wait.
    let short = Arc::new(
        registry
            .open(
                "queue",
                &Setup::new(db(&dir)).timeout(Duration::from_millis(50)),
            )
            .unwrap(),
    );
    let (started_tx, started_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let blocker = short.clone();
    let busy = std::thread::spawn(move || {
        blocker.run_as(&[whole()], Wait::Forever, move |_| {
            started_tx.send(()).unwrap();
            let _ = release_rx.recv();
            Ok::<_, Io>(())
        })
    });
    started_rx.recv_timeout(HANG).unwrap();
    let s = short.clone();
    let r = within(HANG, move || {
        s.run_as(&[whole()], Wait::Default, |_| Ok::<_, Io>(()))
    });
    assert!(matches!(r, Err(Error::Timeout { .. })), "{r:?}");
    release_tx.send(()).unwrap();
    busy.join().unwrap().unwrap();
}

/// Queues `ops` behind a blocked worker, then releases it, so the worker takes them as
/// one batch.
fn batch(queue: &Queue<Sqlite>, ops: Vec<Op>) -> Vec<Result<(usize, u32), Error<rusqlite::Error>>> {
    let (busy, release) = block_worker(queue);
    let tickets: Vec<_> = ops
        .into_iter()
        .map(|mut op| {
            queue
                .submit(&whole(), move |ctx| {
                    let attempt = ctx.attempt();
                    op(ctx).map(|t| (t, attempt))
                })
                .unwrap()
        })
        .collect();
    release.send(()).unwrap();
    busy.wait().unwrap();
    let results = tickets.into_iter().map(Ticket::wait).collect();
    // Every path of a batch leaves the queue idle again: a zero timeout runs at once.
    queue
        .run_timeout(&whole(), Duration::ZERO, |_| Ok::<_, Io>(()))
        .expect("the queue should be idle after a batch");
    results
}

type Op = Box<dyn FnMut(&mut rusqlite::Connection) -> rusqlite::Result<usize> + Send>;

fn insert(v: i64) -> Op {
    Box::new(move |db| db.execute("INSERT INTO t (v) VALUES (?1)", [v]))
}

#[test]
fn group_commit_rolls_back_only_the_failing_op() {
    let dir = tempfile::tempdir().unwrap();
    let queue = new_queue(db(&dir)).unwrap();
    assert!(queue.capabilities().reruns_op);
    create_table(&queue, "CREATE TABLE t (v INTEGER UNIQUE)");
    let panicking: Op = Box::new(|db| {
        db.execute("INSERT INTO t VALUES (4)", [])?;
        panic!("boom")
    });
    let results = batch(
        &queue,
        vec![insert(1), insert(1), insert(3), panicking, insert(5)],
    );
    assert_eq!(results[0].as_ref().unwrap(), &(1, 1));
    match &results[1] {
        Err(Error::Op(rusqlite::Error::SqliteFailure(e, _))) => {
            assert_eq!(e.code, ErrorCode::ConstraintViolation);
        }
        other => panic!("expected a UNIQUE violation, got {other:?}"),
    }
    assert_eq!(results[2].as_ref().unwrap(), &(1, 1));
    assert!(matches!(&results[3], Err(Error::Panicked(m)) if m == "boom"));
    assert_eq!(results[4].as_ref().unwrap(), &(1, 1));
    let path = dir.path().join("q.db");
    assert_eq!(values(&path), vec![1, 3, 5]);
    // The five ran as one batch (one marker, written once per queue).
    assert_eq!(batch_markers(&path), 1);
}

#[test]
fn closing_a_queue_deletes_its_batch_marker() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q.db");
    for round in 1..=3_i64 {
        let queue = new_queue(db(&dir)).unwrap();
        create_table(&queue, "CREATE TABLE IF NOT EXISTS t (v INTEGER)");
        let results = batch(&queue, (0..5).map(|i| insert(round * 10 + i)).collect());
        assert!(results.iter().all(Result::is_ok), "{results:?}");
        assert_eq!(
            batch_markers(&path),
            1,
            "round {round}: the open queue's marker"
        );
        // Dropping the queue closes it, as `close` does.
        if round % 2 == 0 {
            drop(queue);
        } else {
            queue.close();
        }
        assert_eq!(
            batch_markers(&path),
            0,
            "round {round}: left behind by a closed queue"
        );
    }
    assert_eq!(values(&path).len(), 15);
}

#[test]
fn group_commit_after_an_op_committed_by_itself_lands_each_write_once() {
    let dir = tempfile::tempdir().unwrap();
    let queue = new_queue(db(&dir)).unwrap();
    create_table(&queue, "CREATE TABLE t (v INTEGER)");
    let committing: Op = Box::new(|db| {
        db.execute_batch("INSERT INTO t VALUES (2); COMMIT")?;
        Ok(1)
    });
    let results = batch(&queue, vec![insert(1), committing, insert(3)]);
    // The first op was committed by the second: it must not run again.
    assert_eq!(results[0].as_ref().unwrap(), &(1, 1));
    assert!(matches!(results[1], Err(Error::TransactionEnded)));
    assert_eq!(results[2].as_ref().unwrap(), &(1, 1));
    assert_eq!(values(&dir.path().join("q.db")), vec![1, 2, 3]);
}

/// An op that commits by itself and then fails, or panics, may have committed what it
/// wrote: it gets `TransactionEnded`, never its own error (which says rolled back).
#[test]
fn an_op_that_committed_by_itself_and_then_failed_may_have_committed() {
    fn commit_then(panics: bool) -> Op {
        Box::new(move |db| {
            db.execute_batch("INSERT INTO t VALUES (2); COMMIT")?;
            assert!(!panics, "boom");
            db.execute("INSERT INTO no_such_table VALUES (1)", [])
        })
    }
    for panics in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.db");
        let queue = new_queue(db(&dir)).unwrap();
        create_table(&queue, "CREATE TABLE t (v INTEGER)");
        // In a batch...
        let results = batch(&queue, vec![insert(1), commit_then(panics), insert(3)]);
        let ended = &results[1];
        assert!(matches!(ended, Err(Error::TransactionEnded)), "{ended:?}");
        assert_eq!(results[0].as_ref().unwrap(), &(1, 1));
        assert_eq!(results[2].as_ref().unwrap(), &(1, 1));
        assert_eq!(values(&path), vec![1, 2, 3]);
        drop(queue);
        // ...and in a transaction of its own.
        let queue = builder().group_commit(false).build(db(&dir)).unwrap();
        let mut op = commit_then(panics);
        let alone = queue.run(&whole(), move |db| op(db));
        assert!(matches!(alone, Err(Error::TransactionEnded)), "{alone:?}");
        assert_eq!(values(&path), vec![1, 2, 2, 3]);
    }
}

/// An op whose transaction SQLite rolls back by itself (`INSERT OR ROLLBACK` failing),
/// in a batch or in a transaction of its own, committed nothing: it keeps its own error or
/// its panic, never `TransactionEnded`; its batch-mates, rolled back with it, run again.
#[test]
fn an_op_whose_transaction_sqlite_rolled_back_keeps_its_own_error() {
    fn or_rollback(panics: bool) -> Op {
        Box::new(move |db| {
            let failed =
                db.execute_batch("INSERT INTO t VALUES (2); INSERT OR ROLLBACK INTO t VALUES (1)");
            assert!(!panics, "boom");
            failed.map(|()| 0)
        })
    }
    fn check(result: &Result<(usize, u32), Error<rusqlite::Error>>, panics: bool) {
        let err = result.as_ref().unwrap_err();
        assert!(!err.may_have_committed(), "{err:?}");
        match err {
            Error::Panicked(m) if panics => assert_eq!(m, "boom"),
            Error::Op(e) if !panics => {
                assert_eq!(e.sqlite_error_code(), Some(ErrorCode::ConstraintViolation));
            }
            other => panic!("expected the op's own answer, got {other:?}"),
        }
    }
    for panics in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.db");
        let queue = new_queue(db(&dir)).unwrap();
        create_table(&queue, "CREATE TABLE t (v INTEGER UNIQUE)");
        // In a batch, after the op that wrote the 1 it collides with...
        let results = batch(&queue, vec![insert(1), or_rollback(panics), insert(3)]);
        check(&results[1], panics);
        // ...which was rolled back with the batch, and ran again on its own.
        assert_eq!(results[0].as_ref().unwrap(), &(1, 2));
        assert_eq!(results[2].as_ref().unwrap(), &(1, 1));
        assert_eq!(values(&path), vec![1, 3]);
        drop(queue);
        // ...and in a transaction of its own.
        let queue = builder().group_commit(false).build(db(&dir)).unwrap();
        let mut op = or_rollback(panics);
        let alone = queue.run(&whole(), move |db| op(db).map(|n| (n, 1)));
        check(&alone, panics);
        assert_eq!(values(&path), vec![1, 3]);
    }
}

#[test]
fn group_commit_after_an_op_rolled_back_by_itself_reruns_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let queue = new_queue(db(&dir)).unwrap();
    create_table(&queue, "CREATE TABLE t (v INTEGER)");
    let rolling_back: Op = Box::new(|db| {
        db.execute_batch("INSERT INTO t VALUES (2); ROLLBACK")?;
        Ok(1)
    });
    let results = batch(&queue, vec![insert(1), insert(10), rolling_back, insert(3)]);
    // The first two were rolled back with the batch, so they ran again on their own.
    assert_eq!(results[0].as_ref().unwrap(), &(1, 2));
    assert_eq!(results[1].as_ref().unwrap(), &(1, 2));
    assert!(matches!(results[2], Err(Error::TransactionEnded)));
    assert_eq!(results[3].as_ref().unwrap(), &(1, 1));
    assert_eq!(values(&dir.path().join("q.db")), vec![1, 3, 10]);
}

#[test]
fn group_commit_reruns_the_batch_alone_when_the_commit_fails() {
    let dir = tempfile::tempdir().unwrap();
    let queue = new_queue(db(&dir)).unwrap();
    create_table(
        &queue,
        "CREATE TABLE parent (id INTEGER PRIMARY KEY);
         CREATE TABLE t (v INTEGER, parent INTEGER REFERENCES parent (id) DEFERRABLE INITIALLY DEFERRED)",
    );
    // A deferred foreign key is checked at COMMIT: this op makes the batch's commit fail.
    let orphan: Op = Box::new(|db| db.execute("INSERT INTO t VALUES (2, 99)", []));
    let results = batch(&queue, vec![insert(1), orphan, insert(3)]);
    assert_eq!(results[0].as_ref().unwrap(), &(1, 2));
    assert!(
        matches!(results[1], Err(Error::Resource(_))),
        "{:?}",
        results[1]
    );
    assert_eq!(results[2].as_ref().unwrap(), &(1, 2));
    assert_eq!(values(&dir.path().join("q.db")), vec![1, 3]);
}

#[test]
fn without_group_commit_ops_commit_one_by_one() {
    let dir = tempfile::tempdir().unwrap();
    let queue = builder().group_commit(false).build(db(&dir)).unwrap();
    assert!(!queue.capabilities().reruns_op);
    create_table(&queue, "CREATE TABLE t (v INTEGER UNIQUE)");
    let results = batch(&queue, vec![insert(1), insert(1), insert(3)]);
    assert!(results[0].is_ok() && results[2].is_ok());
    assert!(matches!(results[1], Err(Error::Op(_))));
    let path = dir.path().join("q.db");
    assert_eq!(values(&path), vec![1, 3]);
    assert_eq!(batch_markers(&path), 0);
}

#[test]
fn a_worker_killed_by_its_resource_leaves_no_caller_hanging() {
    let dir = tempfile::tempdir().unwrap();
    let armed = Arc::new(AtomicBool::new(false));
    let queue = Arc::new(
        builder()
            .group_commit(false)
            .build(PanickyCommit {
                db: db(&dir),
                armed: armed.clone(),
            })
            .unwrap(),
    );
    queue.run(&whole(), |_| Ok::<_, Io>(())).unwrap();
    let (started_tx, started_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let running = queue
        .submit(&whole(), move |_| {
            started_tx.send(()).unwrap();
            let _ = release_rx.recv();
            Ok::<_, Io>(())
        })
        .unwrap();
    started_rx.recv_timeout(HANG).unwrap();
    let queued: Vec<_> = (0..3)
        .map(|_| queue.submit(&whole(), |_| Ok::<_, Io>(())).unwrap())
        .collect();
    armed.store(true, Ordering::SeqCst);
    release_tx.send(()).unwrap();
    let (running, queued) = within(HANG, move || {
        (
            running.wait(),
            queued.into_iter().map(Ticket::wait).collect::<Vec<_>>(),
        )
    });
    // The running op's commit never finished: its caller cannot know.
    assert!(matches!(running, Err(Error::Indeterminate)), "{running:?}");
    for r in queued {
        assert!(matches!(r, Err(Error::Closed)), "{r:?}");
    }
    let q = queue.clone();
    let later = within(HANG, move || q.run(&whole(), |_| Ok::<_, Io>(())));
    assert!(matches!(later, Err(Error::Closed)));
    assert!(queue.is_closed());
    within(HANG, move || drop(queue));
}

/// SQLite whose commits take [`SlowCommit::TAKES`] longer (a disk that is slow to sync),
/// counting them.
struct SlowCommit {
    db: Sqlite,
    commits: Arc<AtomicUsize>,
}

impl SlowCommit {
    const TAKES: Duration = Duration::from_millis(40);
}

impl Connect for SlowCommit {
    type Resource = rusqlite::Connection;
    fn connect(&self) -> Result<rusqlite::Connection, BoxError> {
        self.db.connect()
    }
    fn identity(&self) -> &str {
        self.db.identity()
    }
}

impl Transact for SlowCommit {
    delegate_to_db!(
        begin,
        rollback,
        in_transaction,
        savepoint,
        release_savepoint,
        rollback_to_savepoint
    );
    fn commit(&self, c: &mut rusqlite::Connection) -> Result<(), TransactError> {
        std::thread::sleep(Self::TAKES);
        self.commits.fetch_add(1, Ordering::SeqCst);
        self.db.commit(c)
    }
}

#[test]
fn callers_on_their_way_back_join_a_slow_commit() {
    const THREADS: usize = 8;
    const ROUNDS: usize = 8;
    let dir = tempfile::tempdir().unwrap();
    let commits = Arc::new(AtomicUsize::new(0));
    let queue = Arc::new(
        builder()
            .build(SlowCommit {
                db: db(&dir),
                commits: commits.clone(),
            })
            .unwrap(),
    );
    queue
        .run(&whole(), |c| {
            c.execute_batch("CREATE TABLE t (v INTEGER)")
                .map_err(Io::other)
        })
        .unwrap();
    let threads: Vec<_> = (0..THREADS)
        .map(|i| {
            let queue = queue.clone();
            std::thread::spawn(move || {
                for round in 0..ROUNDS {
                    let v = i64::try_from(i * ROUNDS + round).unwrap();
                    queue
                        .run(&whole(), move |c| {
                            c.execute("INSERT INTO t VALUES (?1)", [v])
                                .map_err(Io::other)
                        })
                        .unwrap();
                    // Callers come back at different times: some work between ops.
                    std::thread::sleep(Duration::from_millis(u64::try_from(i).unwrap()));
                }
            })
        })
        .collect();
    within(HANG, move || {
        for t in threads {
            t.join().unwrap();
        }
    });
    assert_eq!(values(&dir.path().join("q.db")).len(), THREADS * ROUNDS);
    // Each caller's next op waits for the one before to commit, so one commit per round
    // is the least there can be. Without gathering, the batch that starts as the first
    // caller comes back commits without the others, who come back up to 7 ms later:
    // about two commits a round. The first rounds teach the queue how many callers there
    // are; a batch waits for them for up to half a commit (20 ms).
    let commits = commits.load(Ordering::SeqCst) - 1;
    assert!(
        commits <= ROUNDS + 4,
        "{commits} commits for {ROUNDS} rounds of {THREADS} callers"
    );
}

#[test]
fn ops_see_their_sorted_keys_and_tickets_can_be_cancelled() {
    let dir = tempfile::tempdir().unwrap();
    let queue = new_queue(db(&dir)).unwrap();
    let (a, b) = (Key::new("a").unwrap(), Key::new("b").unwrap());
    let keys = queue
        .run_many(&[b.clone(), a.clone(), b.clone()], |ctx| {
            Ok::<_, Io>(ctx.keys().to_vec())
        })
        .unwrap();
    assert_eq!(keys, vec![a, b]);

    let (busy, release) = block_worker(&queue);
    let (ran, op) = op_that_records_running();
    let ticket = queue.submit(&whole(), op).unwrap();
    assert!(!ticket.is_started() && !ticket.is_finished());
    assert!(ticket.cancel());
    assert!(busy.is_started());
    assert!(!busy.cancel(), "a started op cannot be cancelled");
    release.send(()).unwrap();
    queue.close();
    assert!(!ran.load(Ordering::SeqCst));
}

#[test]
fn an_op_queued_while_a_batch_runs_joins_that_batch() {
    let dir = tempfile::tempdir().unwrap();
    let (queue, path, busy, release) = held_queue_over_t(&dir);
    // Two callers queue together: the worker learns that a crowd submits, so a lone op
    // now starts a batch that later ops may join.
    let first: Vec<_> = (0..2_i64)
        .map(|v| {
            queue
                .submit(&whole(), move |db| {
                    db.execute("INSERT INTO t VALUES (?1)", [v]).map(drop)
                })
                .unwrap()
        })
        .collect();
    release.send(()).unwrap();
    busy.wait().unwrap();
    for t in first {
        t.wait().unwrap();
    }
    let (started_tx, started_rx) = mpsc::channel();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let a = queue
        .submit(&whole(), move |db| {
            db.execute("INSERT INTO t VALUES (10)", [])?;
            started_tx.send(()).unwrap();
            let _ = go_rx.recv();
            Ok::<_, rusqlite::Error>(())
        })
        .unwrap();
    started_rx.recv_timeout(HANG).unwrap();
    // Queued while `a` runs: it runs in `a`'s transaction, before `a` commits, so another
    // connection cannot see `a`'s row yet.
    let outside = path.clone();
    let b = queue
        .submit(&whole(), move |_| {
            let reader = rusqlite::Connection::open(&outside)?;
            reader.query_row("SELECT count(*) FROM t WHERE v = 10", [], |r| {
                r.get::<_, i64>(0)
            })
        })
        .unwrap();
    go_tx.send(()).unwrap();
    a.wait().unwrap();
    assert_eq!(
        b.wait().unwrap(),
        0,
        "b ran after a's commit, in a batch of its own"
    );
    assert_eq!(values(&path), vec![0, 1, 10]);
}

#[test]
fn group_commit_answers_a_caller_only_after_the_commit_holding_its_op() {
    let dir = tempfile::tempdir().unwrap();
    let (queue, path, busy, release) = held_queue_over_t(&dir);
    let tickets: Vec<_> = (0..50_i64)
        .map(|v| {
            queue
                .submit(&whole(), move |db| {
                    db.execute("INSERT INTO t VALUES (?1)", [v]).map(|_| v)
                })
                .unwrap()
        })
        .collect();
    release.send(()).unwrap();
    busy.wait().unwrap();
    let reader = rusqlite::Connection::open(&path).unwrap();
    for ticket in tickets {
        let v = ticket.wait().unwrap();
        // Another connection sees the write as soon as its caller hears Ok.
        let seen: i64 = reader
            .query_row("SELECT count(*) FROM t WHERE v = ?1", [v], |r| r.get(0))
            .unwrap();
        assert_eq!(seen, 1, "answered before its commit: {v}");
    }
    assert_eq!(batch_markers(&path), 1);
}

#[test]
fn queues_and_tickets_cross_threads() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    send_sync::<Queue<Sqlite>>();
    send_sync::<Ticket<i64, rusqlite::Error>>();
    // A ticket is a `Send` future, so multi-threaded runtimes can spawn on it.
    send::<Ticket<String, Io>>();
    send_sync::<Error<rusqlite::Error>>();
}

/// A caller of [`sleeping_callers`]: whether, once answered, it saw its write committed.
type SleepingCaller = std::thread::JoinHandle<Result<bool, Error<rusqlite::Error>>>;

/// Callers sleeping in `run` behind a blocked worker, `n` of them, each inserting its
/// number and checking, once answered, that another connection sees it (Ok(true)).
/// Returns once they are all queued.
fn sleeping_callers(
    queue: &Arc<Queue<Sqlite>>,
    path: &std::path::Path,
    n: i64,
) -> Vec<SleepingCaller> {
    let queued_before = queue.len();
    let callers = (0..n)
        .map(|v| {
            let (queue, path) = (queue.clone(), path.to_owned());
            std::thread::spawn(move || {
                // No deadline: a wake-up lost would leave it asleep for good.
                queue.run_with(&[whole()], Wait::Forever, move |db| {
                    db.execute("INSERT INTO t VALUES (?1)", [v])
                })?;
                let reader = rusqlite::Connection::open(&path).unwrap();
                let seen: i64 = reader
                    .query_row("SELECT count(*) FROM t WHERE v = ?1", [v], |r| r.get(0))
                    .unwrap();
                Ok(seen == 1)
            })
        })
        .collect();
    let all_queued = {
        let queue = queue.clone();
        move || {
            while queue.len() < queued_before + n as usize {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    };
    within(HANG, all_queued);
    callers
}

/// Waits (bounded by [`HANG`]) for every one of `callers` to be answered; fails unless
/// each succeeded and saw its write committed.
fn assert_answered_after_their_commits(callers: Vec<SleepingCaller>) {
    let answers = within(HANG, move || {
        callers
            .into_iter()
            .map(|c| c.join().unwrap())
            .collect::<Vec<_>>()
    });
    for answer in answers {
        assert!(answer.unwrap(), "a caller was answered before its commit");
    }
}

#[test]
fn group_commit_wakes_every_sleeping_caller_of_a_batch_after_its_commit() {
    let dir = tempfile::tempdir().unwrap();
    let (queue, path, busy, release) = held_queue_over_t(&dir);
    // A future among the sleepers: the worker wakes it itself.
    let future = queue
        .submit(&whole(), |db| db.execute("INSERT INTO t VALUES (-1)", []))
        .unwrap();
    let callers = sleeping_callers(&queue, &path, 40);
    release.send(()).unwrap();
    busy.wait().unwrap();
    assert_answered_after_their_commits(callers);
    assert_eq!(block_on(future).unwrap(), 1);
    assert_eq!(values(&path).len(), 41);
    assert_eq!(batch_markers(&path), 1);
}

#[test]
fn a_caller_that_stopped_waiting_does_not_leave_its_batch_mates_asleep() {
    let dir = tempfile::tempdir().unwrap();
    let (queue, path, busy, release) = held_queue_over_t(&dir);
    // One batch: an op whose caller gives up once it has run, one that holds the batch
    // open until told, then callers asleep in `run`.
    let impatient = queue
        .submit(&whole(), |db| db.execute("INSERT INTO t VALUES (-1)", []))
        .unwrap();
    let (held_tx, held_rx) = mpsc::channel();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let holding = queue
        .submit(&whole(), move |db| {
            held_tx.send(()).unwrap();
            let _ = go_rx.recv();
            db.execute("INSERT INTO t VALUES (-2)", [])
        })
        .unwrap();
    let callers = sleeping_callers(&queue, &path, 20);
    release.send(()).unwrap();
    busy.wait().unwrap();
    held_rx.recv_timeout(HANG).unwrap();
    // The impatient op ran, but its batch has not committed: its caller cannot know.
    let gave_up = impatient.wait_timeout(Duration::from_millis(10));
    assert!(matches!(gave_up, Err(Error::Indeterminate)), "{gave_up:?}");
    go_tx.send(()).unwrap();
    assert_answered_after_their_commits(callers);
    assert_eq!(holding.wait().unwrap(), 1);
    // The op whose caller gave up committed with its batch.
    assert_eq!(values(&path).len(), 22);
}
