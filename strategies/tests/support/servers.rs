//! What the MySQL and PostgreSQL tests share: unique names on a shared server, a section
//! that fails on overlap, and the tests whose body is the same on both servers, written
//! once over [`Transact`] with [`ServerSql`] for the few statements they run.
#![allow(dead_code)] // Each test binary uses its own part of this.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use turnstile::sqlite::rusqlite;
use turnstile::{BoxError, Ctx, Fence, FenceClaim, Transact, TransactError};

/// A name no other test, process or developer sharing the server uses.
pub(crate) fn unique(prefix: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "{prefix}_{}_{nanos}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Holders inside the section right now, per test; two at once fail the op.
pub(crate) struct Section(AtomicU32);

impl Section {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Section(AtomicU32::new(0)))
    }

    pub(crate) fn enter<T>(&self, f: impl FnOnce() -> T) -> T {
        let others = self.0.fetch_add(1, Ordering::SeqCst);
        assert_eq!(others, 0, "two holders inside the section at once");
        let result = f();
        self.0.fetch_sub(1, Ordering::SeqCst);
        result
    }
}

/// Read, pause, write on a SQLite `counter` table: loses updates (and overlaps) unless
/// the lock excludes.
pub(crate) fn increment(
    db: &mut Ctx<'_, rusqlite::Connection>,
    section: &Section,
) -> rusqlite::Result<()> {
    section.enter(|| {
        let n: i64 = db.query_row("SELECT n FROM counter WHERE id = 1", [], |r| r.get(0))?;
        // Longer than a lock grant takes (the fence bump is an fsync), so that a broken
        // lock lets the next holder in while this one is still inside.
        std::thread::sleep(Duration::from_millis(20));
        db.execute("UPDATE counter SET n = ?1 WHERE id = 1", [n + 1])?;
        Ok(())
    })
}

/// The statements the shared tests run, in each server's driver. Only test-made text
/// (table names from [`unique`], constants) goes into them.
pub(crate) trait ServerSql: Transact + Clone {
    /// Runs one statement.
    fn exec(conn: &mut Self::Resource, sql: &str) -> Result<(), BoxError>;
    /// The first column of every row, as integers.
    fn ints(conn: &mut Self::Resource, sql: &str) -> Result<Vec<i64>, BoxError>;
}

#[cfg(feature = "mysql")]
impl ServerSql for turnstile::resource::MySql {
    fn exec(conn: &mut mysql::Conn, sql: &str) -> Result<(), BoxError> {
        use mysql::prelude::Queryable;
        conn.query_drop(sql).map_err(Into::into)
    }

    fn ints(conn: &mut mysql::Conn, sql: &str) -> Result<Vec<i64>, BoxError> {
        use mysql::prelude::Queryable;
        conn.query(sql).map_err(Into::into)
    }
}

#[cfg(feature = "postgres")]
impl ServerSql for turnstile::resource::Postgres {
    fn exec(conn: &mut postgres::Client, sql: &str) -> Result<(), BoxError> {
        conn.batch_execute(sql).map_err(Into::into)
    }

    fn ints(conn: &mut postgres::Client, sql: &str) -> Result<Vec<i64>, BoxError> {
        Ok(conn.query(sql, &[])?.iter().map(|r| r.get(0)).collect())
    }
}

/// `begin` records each fence, refuses one below the highest recorded (a rolled-back
/// record does not count), and `forget_fence` deletes the record: then any fence is
/// accepted again. Also for a name too long for the fence table's column (stored hashed).
pub(crate) fn resource_records_fences_refuses_stale_ones_and_forgets_them<C: Transact>(db: C) {
    let mut conn = db.connect().unwrap();
    let backend = unique("fence-test");
    let long = vec![b'n'; 5000];
    for name in [&b"k\0x"[..], &long[..]] {
        let claim = |f| FenceClaim {
            backend: &backend,
            name,
            fence: Fence(f),
        };
        db.begin(&mut conn, &[claim(5)]).unwrap();
        db.commit(&mut conn).unwrap();
        db.begin(&mut conn, &[claim(5)]).unwrap();
        db.commit(&mut conn).unwrap();
        match db.begin(&mut conn, &[claim(4)]) {
            Err(TransactError::StaleFence { presented, highest }) => {
                assert_eq!((presented, highest), (Fence(4), Fence(5)));
            }
            other => panic!("expected a stale fence, got {other:?}"),
        }
        // A fence recorded in a rolled-back transaction is not recorded.
        db.begin(&mut conn, &[claim(9)]).unwrap();
        db.rollback(&mut conn).unwrap();
        db.begin(&mut conn, &[claim(6)]).unwrap();
        db.commit(&mut conn).unwrap();
        db.forget_fence(&mut conn, &backend, name).unwrap();
        // Forgotten: a lower fence is accepted (and recorded) again.
        db.begin(&mut conn, &[claim(1)]).unwrap();
        db.commit(&mut conn).unwrap();
        assert!(matches!(
            db.begin(&mut conn, &[claim(0)]),
            Err(TransactError::StaleFence { .. })
        ));
        db.forget_fence(&mut conn, &backend, name).unwrap();
        // Forgetting what is not recorded is no error.
        db.forget_fence(&mut conn, &backend, name).unwrap();
    }
}

/// Two transactions claim fences for one name at once: whichever claims second waits for
/// the first to commit and then sees its fence, so an older fence never slips in after a
/// newer one. Leaves rows under `backend` in `turnstile_fences` for the caller to delete.
pub(crate) fn concurrent_fence_claims_cannot_interleave<C: Transact + Clone>(
    db: &C,
    backend: &str,
) {
    let claim = |fence: u64| FenceClaim {
        backend,
        name: b"k",
        fence: Fence(fence),
    };
    let begin_in_thread = |fence: u64| {
        let (db, backend) = (db.clone(), backend.to_owned());
        std::thread::spawn(move || {
            let mut conn = db.connect().unwrap();
            let claim = FenceClaim {
                backend: &backend,
                name: b"k",
                fence: Fence(fence),
            };
            let result = db.begin(&mut conn, &[claim]);
            if result.is_ok() {
                db.commit(&mut conn).unwrap();
            }
            result
        })
    };
    // The newer holder claims first and keeps its transaction open; the older one's
    // claim waits for it (it has not returned while the newer one is open) and then sees
    // the newer fence.
    let mut newer = db.connect().unwrap();
    db.begin(&mut newer, &[claim(6)]).unwrap();
    let older = begin_in_thread(5);
    std::thread::sleep(Duration::from_millis(200));
    assert!(!older.is_finished(), "the older claim did not wait");
    db.commit(&mut newer).unwrap();
    match older.join().unwrap() {
        Err(TransactError::StaleFence { presented, highest }) => {
            assert_eq!((presented, highest), (Fence(5), Fence(6)));
        }
        other => panic!("expected the older claim to be stale, got {other:?}"),
    }
    // The other way round: the newer one waits, then wins.
    let mut older = db.connect().unwrap();
    db.begin(&mut older, &[claim(6)]).unwrap();
    let newer = begin_in_thread(7);
    std::thread::sleep(Duration::from_millis(200));
    assert!(!newer.is_finished(), "the newer claim did not wait");
    db.commit(&mut older).unwrap();
    newer.join().unwrap().unwrap();
}

/// An op of the shared tests: statements on the server's connection.
#[cfg(feature = "queue")]
type Op<R> = Box<dyn FnMut(&mut R) -> Result<(), BoxError> + Send>;

/// Runs `ops` through `queue` as one group-commit batch (they queue up behind an op that
/// holds the worker, and may join its batch), and answers each with the attempt it
/// succeeded on.
#[cfg(feature = "queue")]
fn batch<C: Transact>(
    queue: &turnstile::queue::Queue<C>,
    ops: Vec<Op<C::Resource>>,
) -> Vec<Result<u32, turnstile::Error<BoxError>>> {
    batch_then(queue, ops, &|| {})
}

/// [`batch`], calling `before_release` once the ops are queued behind the held worker.
#[cfg(feature = "queue")]
fn batch_then<C: Transact>(
    queue: &turnstile::queue::Queue<C>,
    ops: Vec<Op<C::Resource>>,
    before_release: &dyn Fn(),
) -> Vec<Result<u32, turnstile::Error<BoxError>>> {
    use turnstile::Key;
    let (started_tx, started_rx) = std::sync::mpsc::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    // Once the queue has seen a crowd, the ops below join the blocker's batch and, should
    // one of them make the batch rerun, the blocker runs again: only its first run waits.
    let mut first = true;
    let blocker = queue
        .submit(&Key::whole(), move |_| {
            if std::mem::take(&mut first) {
                started_tx.send(()).unwrap();
                let _ = release_rx.recv();
            }
            Ok::<_, BoxError>(())
        })
        .unwrap();
    started_rx.recv_timeout(Duration::from_secs(20)).unwrap();
    let tickets: Vec<_> = ops
        .into_iter()
        .map(|mut op| {
            queue
                .submit(&Key::whole(), move |ctx| {
                    let attempt = ctx.attempt();
                    op(&mut **ctx).map(|()| attempt)
                })
                .unwrap()
        })
        .collect();
    before_release();
    release_tx.send(()).unwrap();
    blocker.wait().unwrap();
    tickets
        .into_iter()
        .map(|t| t.wait_timeout(Duration::from_secs(60)))
        .collect()
}

/// An op that ends the strategy's transaction by itself (`COMMIT`, `ROLLBACK`) gets
/// [`Error::TransactionEnded`](turnstile::Error::TransactionEnded) on a database server
/// as on SQLite — through `Locked`, through a queue running it alone, and in a queue's
/// group-commit batch — and every write lands at most once: what the op wrote before its
/// `COMMIT` stays, what it left open after it is rolled back, and its batch-mates are
/// neither lost nor applied twice.
#[cfg(all(feature = "queue", feature = "mutex"))]
pub(crate) fn an_op_that_ends_the_transaction_gets_transaction_ended<C: ServerSql>(db: C) {
    use turnstile::lock::MutexLock;
    use turnstile::queue::Queue;
    use turnstile::{Error, Key, Locked, Serializer};

    let table = unique("turnstile_ended");
    let mut admin = db.connect().unwrap();
    C::exec(&mut admin, &format!("CREATE TABLE {table} (v BIGINT)")).unwrap();
    let insert = |v: i64| format!("INSERT INTO {table} VALUES ({v})");
    // Statements in order, as one op.
    let op = |statements: Vec<String>| -> Op<C::Resource> {
        Box::new(move |conn| {
            statements
                .iter()
                .try_for_each(|sql| C::exec(&mut *conn, sql))
        })
    };
    let committing = |v: i64| {
        op(vec![
            insert(v),
            "COMMIT".into(),
            "BEGIN".into(),
            insert(v + 1),
        ])
    };
    let is_ended = |r: &Result<u32, Error<BoxError>>| matches!(r, Err(Error::TransactionEnded));

    // Locked: the op's COMMIT committed 1; the 2 it wrote in the transaction it opened
    // after is rolled back.
    let locked = Locked::new(MutexLock::new(), db.clone());
    let mut ending = committing(1);
    let err = locked
        .run(&Key::new("x").unwrap(), move |conn| ending(&mut **conn))
        .unwrap_err();
    assert!(matches!(err, Error::TransactionEnded), "{err:?}");
    let mut next = op(vec![insert(3)]);
    locked
        .run(&Key::new("x").unwrap(), move |conn| next(&mut **conn))
        .unwrap();

    let queue = Queue::new(db.clone()).unwrap();
    // In a batch, after a COMMIT: the op before it was committed by it and must not run
    // again; the op after it runs in a transaction of its own.
    let results = batch(
        &queue,
        vec![op(vec![insert(10)]), committing(20), op(vec![insert(30)])],
    );
    assert_eq!(results[0].as_ref().unwrap(), &1, "{results:?}");
    assert!(is_ended(&results[1]), "{results:?}");
    assert_eq!(results[2].as_ref().unwrap(), &1, "{results:?}");
    // In a batch, after a ROLLBACK: the op before it was rolled back with it and runs
    // again alone.
    let rolling_back = op(vec![insert(50), "ROLLBACK".into()]);
    let results = batch(
        &queue,
        vec![op(vec![insert(40)]), rolling_back, op(vec![insert(60)])],
    );
    assert_eq!(results[0].as_ref().unwrap(), &2, "{results:?}");
    assert!(is_ended(&results[1]), "{results:?}");
    assert_eq!(results[2].as_ref().unwrap(), &1, "{results:?}");
    // In a batch, an op that fails after its COMMIT: what it wrote before may have
    // committed (it did, and so did the op before it).
    let failing = op(vec![
        insert(82),
        "COMMIT".into(),
        format!("SELECT v FROM {table}_missing"),
    ]);
    let results = batch(
        &queue,
        vec![op(vec![insert(81)]), failing, op(vec![insert(83)])],
    );
    assert_eq!(results[0].as_ref().unwrap(), &1, "{results:?}");
    assert!(is_ended(&results[1]), "{results:?}");
    assert_eq!(results[2].as_ref().unwrap(), &1, "{results:?}");
    // Alone in the queue.
    let mut alone = committing(70);
    let err = queue.run(&Key::whole(), move |conn| alone(&mut **conn));
    assert!(matches!(err, Err(Error::TransactionEnded)), "{err:?}");
    // The strategies keep serving.
    let mut last = op(vec![insert(80)]);
    queue
        .run(&Key::whole(), move |conn| last(&mut **conn))
        .unwrap();

    let rows = C::ints(&mut admin, &format!("SELECT v FROM {table} ORDER BY v")).unwrap();
    C::exec(&mut admin, &format!("DROP TABLE {table}")).unwrap();
    assert_eq!(rows, [1, 3, 10, 20, 30, 40, 60, 70, 80, 81, 82, 83]);
}

/// A queue in autocommit mode over the server: each statement of an op commits by itself
/// (an op's own `BEGIN … COMMIT` too), and a transaction an op leaves open is rolled back
/// and reported, so it cannot swallow the next ops' writes on the worker's connection.
#[cfg(feature = "queue")]
pub(crate) fn a_queue_in_autocommit_rolls_back_what_an_op_left_open<C: ServerSql>(db: C) {
    use turnstile::queue::Queue;
    use turnstile::{Error, Key, Serializer, TxMode};

    let table = unique("turnstile_stray");
    let mut admin = db.connect().unwrap();
    C::exec(&mut admin, &format!("CREATE TABLE {table} (v BIGINT)")).unwrap();
    let queue = Queue::builder()
        .tx_mode(TxMode::Autocommit)
        .build(db.clone())
        .unwrap();
    let run = |statements: Vec<String>| {
        queue.run(&Key::whole(), move |conn| {
            statements
                .iter()
                .try_for_each(|sql| C::exec(&mut **conn, sql))
        })
    };
    let insert = |v: i64| format!("INSERT INTO {table} VALUES ({v})");
    run(vec![insert(1)]).unwrap();
    run(vec!["BEGIN".into(), insert(2), "COMMIT".into()]).unwrap();
    let left_open = run(vec!["BEGIN".into(), insert(3)]);
    assert!(
        matches!(left_open, Err(Error::Resource(_))),
        "{left_open:?}"
    );
    run(vec![insert(4)]).unwrap();
    let rows = C::ints(&mut admin, &format!("SELECT v FROM {table} ORDER BY v")).unwrap();
    C::exec(&mut admin, &format!("DROP TABLE {table}")).unwrap();
    assert_eq!(rows, [1, 2, 4]);
}

/// A `COMMIT` whose answer is lost (the connection breaks after the server got it) may
/// have committed: the resource says [`TransactError::Indeterminate`], `Locked` answers
/// [`Error::Indeterminate`](turnstile::Error::Indeterminate), and a queue's group commit
/// reads its batch marker on a new connection to answer each op as it really ended,
/// never running a committed op again. `cut` reaches the server through a proxy that
/// `arm` tells to lose the next `COMMIT`'s answer; `cuts` counts the losses.
#[cfg(all(feature = "queue", feature = "mutex"))]
pub(crate) fn a_commit_whose_answer_is_lost_is_never_taken_for_a_rollback<C: ServerSql>(
    db: C,
    cut: C,
    arm: &dyn Fn(),
    cuts: &dyn Fn() -> usize,
) {
    use turnstile::lock::MutexLock;
    use turnstile::queue::Queue;
    use turnstile::{Error, Key, Locked, Serializer};

    let table = unique("turnstile_lost_commit");
    let mut admin = db.connect().unwrap();
    C::exec(&mut admin, &format!("CREATE TABLE {table} (v BIGINT)")).unwrap();
    let into = table.clone();
    let insert = move |v: i64| format!("INSERT INTO {into} VALUES ({v})");
    // The server runs a cut-off COMMIT on its own time: wait for the row, briefly.
    let mut rows = |v: i64| {
        let sql = format!("SELECT COUNT(*) FROM {table} WHERE v = {v}");
        let start = std::time::Instant::now();
        loop {
            let n = C::ints(&mut admin, &sql).unwrap()[0];
            if n != 0 || start.elapsed() > Duration::from_secs(10) {
                return n;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    };

    // The resource itself.
    let mut conn = cut.connect().unwrap();
    cut.begin(&mut conn, &[]).unwrap();
    C::exec(&mut conn, &insert(1)).unwrap();
    arm();
    match cut.commit(&mut conn) {
        Err(TransactError::Indeterminate(_)) => {}
        other => panic!("a commit whose answer was lost gave {other:?}"),
    }
    assert_eq!(cuts(), 1);
    assert_eq!(rows(1), 1, "the server committed it");

    // `Locked`: the caller must not take it for a rollback and run the op again.
    let locked = Locked::new(MutexLock::new(), cut.clone());
    let sql = insert(2);
    arm();
    let r = locked.run(&Key::new("x").unwrap(), move |conn| {
        C::exec(&mut **conn, &sql)
    });
    assert!(matches!(r, Err(Error::Indeterminate)), "{r:?}");
    assert_eq!(cuts(), 2);
    assert_eq!(rows(2), 1);

    // A queue's batch: the marker says it committed, so each op gets its success, once.
    let queue = Queue::new(cut.clone()).unwrap();
    // A batch first: once the queue has seen callers submit together, the held op below
    // starts a batch that the queued ops join, and the batch's one COMMIT is cut.
    let no_ops = (0..4)
        .map(|_| Box::new(|_: &mut C::Resource| Ok(())) as Op<C::Resource>)
        .collect();
    assert!(batch(&queue, no_ops).iter().all(Result::is_ok));
    let ops: Vec<Op<C::Resource>> = (10..15)
        .map(|v| {
            let sql = insert(v);
            Box::new(move |conn: &mut C::Resource| C::exec(conn, &sql)) as Op<C::Resource>
        })
        .collect();
    let results = batch_then(&queue, ops, arm);
    assert_eq!(cuts(), 3, "the batch's COMMIT lost its answer");
    assert!(
        results.iter().all(|r| matches!(r, Ok(1))),
        "each op committed once, in its first run: {results:?}"
    );
    for v in 10..15 {
        assert_eq!(rows(v), 1, "row {v}");
    }
    drop(queue);
    let mut admin = db.connect().unwrap();
    C::exec(&mut admin, &format!("DROP TABLE {table}")).unwrap();
}

/// `db` reaches its server through a proxy that forwards nothing: the TCP connect
/// succeeds, the login is never answered. Opening a connection must fail within the
/// connect timeout (set short on `db`), not block until TCP gives up.
pub(crate) fn a_login_never_answered_fails_within_the_connect_timeout<C: Transact>(db: C) {
    let (done_tx, done) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = done_tx.send(db.connect().map(drop).map_err(|e| e.to_string()));
    });
    let err = done
        .recv_timeout(Duration::from_secs(30))
        .expect("a login the server never answered hung the connect")
        .unwrap_err();
    assert!(err.contains("login"), "{err}");
}
