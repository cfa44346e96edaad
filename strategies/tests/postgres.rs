//! The `postgres` lock backends (session advisory locks, and transaction locks through
//! `PgXactLocked`) and the PostgreSQL resource, against a real server
//! (`TURNSTILE_POSTGRES_URL`, default `postgres://postgres@127.0.0.1:5432/test`). The
//! tests fail, not skip, when the server is absent.
#![cfg(all(feature = "postgres", feature = "sqlite", feature = "mutex"))]

use std::sync::Arc;
use std::time::{Duration, Instant};

use turnstile::lock::{PgXactLocked, PostgresLock, advisory_key};
use turnstile::resource::Postgres;
use turnstile::spec::{Registry, Setup};
use turnstile::sqlite::{Sqlite, Synchronous, rusqlite};
use turnstile::{
    Connect, Error, Key, Lease, Lock, LockName, Locked, Scope, Serializer, Transact, TxMode, Wait,
};

#[path = "support/servers.rs"]
mod servers;

#[path = "support/cut_proxy.rs"]
mod cut_proxy;
use servers::{Section, increment, unique};

#[path = "support/server_urls.rs"]
mod server_urls;
use server_urls::{postgres_admin as admin, postgres_url as url};

fn lock() -> PostgresLock {
    PostgresLock::new(&url()).unwrap()
}

fn name(key: &str) -> LockName {
    LockName::new("test", Key::new(key).unwrap())
}

/// `column` of every row of the test's `table`, in its order, and the table dropped.
fn column_then_drop<T: postgres::types::FromSqlOwned>(
    admin: &mut postgres::Client,
    column: &str,
    table: &str,
) -> Vec<T> {
    let values = admin
        .query(
            &format!("SELECT {column} FROM {table} ORDER BY {column}"),
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    admin.batch_execute(&format!("DROP TABLE {table}")).unwrap();
    values
}

#[test]
fn counter_through_the_lock_on_autocommit_sqlite_is_exact() {
    let dir = tempfile::tempdir().unwrap();
    let db = Sqlite::new(dir.path().join("c.db")).synchronous(Synchronous::Normal);
    db.connect()
        .unwrap()
        .execute_batch("CREATE TABLE counter (id INTEGER PRIMARY KEY, n INTEGER); INSERT INTO counter VALUES (1, 0);")
        .unwrap();
    // Through the spec registry, as the CLI and the harness build it.
    let setup = Setup::new(db.clone()).tx_mode(TxMode::Autocommit);
    // (Without fencing: Locked enforces no fence in autocommit mode.)
    let strategy = Arc::new(Registry::builtin().open(&url(), &setup).unwrap());
    assert!(!strategy.capabilities().fences);
    let section = Section::new();
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let (s, section) = (strategy.clone(), section.clone());
            std::thread::spawn(move || {
                for _ in 0..5 {
                    let section = section.clone();
                    s.run_as(&[Key::whole()], Wait::Default, move |db| {
                        increment(db, &section)
                    })
                    .unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let n: i64 = db
        .connect()
        .unwrap()
        .query_row("SELECT n FROM counter", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 40);
}

fn counter_table(admin: &mut postgres::Client) -> String {
    let table = unique("turnstile_counter");
    admin
        .batch_execute(&format!(
            "CREATE TABLE {table} (id INT PRIMARY KEY, n BIGINT NOT NULL); INSERT INTO {table} VALUES (1, 0);"
        ))
        .unwrap();
    table
}

fn hammer<S>(strategy: Arc<S>, key: Key, table: String) -> i64
where
    S: Serializer<Resource = postgres::Client> + 'static,
{
    let section = Section::new();
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let (s, key, table, section) = (
                strategy.clone(),
                key.clone(),
                table.clone(),
                section.clone(),
            );
            std::thread::spawn(move || {
                for _ in 0..12 {
                    let (table, section) = (table.clone(), section.clone());
                    s.run(&key, move |db| {
                        section.enter(|| {
                            let n: i64 = db
                                .query_one(&format!("SELECT n FROM {table} WHERE id = 1"), &[])?
                                .get(0);
                            std::thread::sleep(Duration::from_millis(2));
                            db.execute(
                                &format!("UPDATE {table} SET n = $1 WHERE id = 1"),
                                &[&(n + 1)],
                            )?;
                            Ok::<_, postgres::Error>(())
                        })
                    })
                    .unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let mut admin = admin();
    let n: i64 = admin
        .query_one(&format!("SELECT n FROM {table} WHERE id = 1"), &[])
        .unwrap()
        .get(0);
    admin.batch_execute(&format!("DROP TABLE {table}")).unwrap();
    n
}

#[test]
fn counter_on_the_postgres_resource_is_exact_with_session_locks() {
    let table = counter_table(&mut admin());
    let strategy = Arc::new(Locked::new(lock(), Postgres::new(&url()).unwrap()));
    assert!(strategy.capabilities().fences);
    assert_eq!(
        hammer(strategy, Key::new(table.clone()).unwrap(), table),
        96
    );
}

#[test]
fn counter_on_the_postgres_resource_is_exact_with_transaction_locks() {
    let table = counter_table(&mut admin());
    // Through the registry over the PostgreSQL resource, as the harness builds it.
    let setup = Setup::new(Postgres::new(&url()).unwrap());
    let strategy = Arc::new(
        Registry::builtin_postgres()
            .open("pg-xact", &setup)
            .unwrap(),
    );
    assert_eq!(
        hammer(strategy, Key::new(table.clone()).unwrap(), table),
        96
    );
}

#[test]
fn counter_through_a_queue_over_the_postgres_lock_is_exact() {
    let table = counter_table(&mut admin());
    let setup = Setup::new(Postgres::new(&url()).unwrap());
    let registry = Registry::builtin_postgres();
    for scheme in ["queue+postgres", "queue+postgresql"] {
        assert!(registry.contains(scheme), "{scheme}");
    }
    let strategy = Arc::new(registry.open(&format!("queue+{}", url()), &setup).unwrap());
    let caps = strategy.capabilities();
    assert!(
        caps.fences && caps.reruns_op && caps.scope == Scope::Hosts,
        "{caps:?}"
    );
    assert_eq!(
        hammer(strategy, Key::new(table.clone()).unwrap(), table),
        96
    );
}

#[test]
fn resource_records_fences_refuses_stale_ones_and_forgets_them() {
    servers::resource_records_fences_refuses_stale_ones_and_forgets_them(
        Postgres::new(&url()).unwrap(),
    );
}

#[test]
#[cfg(feature = "queue")]
fn an_op_that_ends_the_transaction_gets_transaction_ended() {
    servers::an_op_that_ends_the_transaction_gets_transaction_ended(Postgres::new(&url()).unwrap());
    // And through `pg-xact`, whose lock the op's COMMIT released with the transaction.
    let xact = PgXactLocked::new(Postgres::new(&url()).unwrap());
    let err = xact
        .run(&Key::new(unique("ended")).unwrap(), |db| {
            db.batch_execute("SELECT 1; COMMIT")
        })
        .unwrap_err();
    assert!(matches!(err, Error::TransactionEnded), "{err:?}");
}

#[test]
#[cfg(feature = "queue")]
fn a_queue_in_autocommit_rolls_back_what_an_op_left_open() {
    servers::a_queue_in_autocommit_rolls_back_what_an_op_left_open(Postgres::new(&url()).unwrap());
}

#[test]
fn lock_excludes_times_out_and_fences_rise() {
    let lock = lock();
    let n = name(&unique("excl"));
    let a = lock.acquire(&n, None).unwrap();
    let start = Instant::now();
    let err = lock
        .acquire(&n, Some(Instant::now() + Duration::from_millis(300)))
        .unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
    assert!(start.elapsed() >= Duration::from_millis(300));
    assert!(start.elapsed() < Duration::from_secs(10));
    assert!(matches!(
        lock.acquire(&n, Some(Instant::now())),
        Err(Error::Timeout { .. })
    ));
    let first = a.fence().unwrap();
    a.check().unwrap();
    a.release().unwrap();
    let b = lock.acquire(&n, Some(Instant::now())).unwrap();
    assert!(b.fence().unwrap() > first);
    drop(b);
    drop(lock.acquire(&n, Some(Instant::now())).unwrap());
    // Without fencing: no token, same exclusion, on both the waiting and the trying path.
    let unfenced = lock.fencing(false);
    let held = unfenced.acquire(&n, None).unwrap();
    assert_eq!(held.fence(), None);
    assert!(matches!(
        unfenced.acquire(&n, Some(Instant::now())),
        Err(Error::Timeout { .. })
    ));
    assert!(matches!(
        unfenced.acquire(&n, Some(Instant::now() + Duration::from_millis(50))),
        Err(Error::Timeout { .. })
    ));
    drop(held);
    drop(unfenced.acquire(&n, Some(Instant::now())).unwrap());
}

#[test]
fn session_and_transaction_locks_on_one_key_exclude_each_other() {
    let db = Postgres::new(&url()).unwrap();
    let key = Key::new(unique("mixed")).unwrap();
    let session = lock()
        .acquire(&LockName::new(db.identity(), key.clone()), None)
        .unwrap();
    let xact = PgXactLocked::new(db)
        .timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let err = xact
        .run(&key, |_| Ok::<_, postgres::Error>(()))
        .unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
    // A zero wait tries once.
    let err = xact
        .run_timeout(&key, Duration::ZERO, |_| Ok::<_, postgres::Error>(()))
        .unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
    drop(session);
    xact.run_timeout(&key, Duration::ZERO, |_| Ok::<_, postgres::Error>(()))
        .unwrap();
    xact.run(&key, |_| Ok::<_, postgres::Error>(())).unwrap();
    // Absurd settings are refused.
    let db = Postgres::new(&url()).unwrap();
    assert!(matches!(
        PgXactLocked::new(db.clone()).timeout(Some(Duration::MAX)),
        Err(Error::Config(_))
    ));
    assert!(matches!(
        PgXactLocked::new(db).pool_size(0),
        Err(Error::Config(_))
    ));
}

#[test]
fn names_long_cased_and_hashed() {
    let lock = lock();
    let tag = unique("n");
    let long_key = LockName::new("t", Key::new(format!("{tag}{}", "x".repeat(200))).unwrap());
    let long_ns = LockName::new(
        format!("{tag}{}", "y".repeat(10_000)),
        Key::new("k").unwrap(),
    );
    let lower = name(&tag.to_lowercase());
    let upper = name(&tag.to_uppercase());
    assert_ne!(advisory_key(&lower), advisory_key(&upper));
    let held: Vec<_> = [&long_key, &long_ns, &lower, &upper]
        .into_iter()
        .map(|n| lock.acquire(n, Some(Instant::now())).unwrap())
        .collect();
    for n in [&long_key, &long_ns, &lower, &upper] {
        assert!(matches!(
            lock.acquire(n, Some(Instant::now())),
            Err(Error::Timeout { .. })
        ));
    }
    drop(held);
    // The mapping is the published FNV-1a of namespace, NUL, key: fixed forever.
    assert_eq!(
        advisory_key(&LockName::new("a", Key::new("b").unwrap())) as u64,
        turnstile::stable_hash64(b"a\0b")
    );
}

fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

#[test]
fn server_down_unknown_role_and_bad_urls_are_typed() {
    // The credential checks below mean something only with the real server up.
    drop(admin());
    let down = PostgresLock::new(&format!(
        "postgres://postgres@127.0.0.1:{}/test",
        closed_port()
    ))
    .unwrap();
    let start = Instant::now();
    let err = down
        .acquire(&name("x"), Some(Instant::now() + Duration::from_secs(2)))
        .unwrap_err();
    assert!(matches!(err, Error::Unavailable(_)), "{err:?}");
    assert!(start.elapsed() < Duration::from_secs(10));
    // The lock's errors name its server, so that a lock on one server over data on
    // another tells which of the two failed.
    let shown = err.to_string();
    assert!(
        shown.starts_with(&format!(
            "backend unavailable: postgres at {}: error connecting to server",
            down.backend_id()
        )),
        "{shown}"
    );
    // The test server trusts local connections whatever the password, so credentials
    // are refused with a role that does not exist.
    let bad = format!(
        "postgres://{}:pw-certainly-wrong@127.0.0.1:5432/test",
        unique("no_such_role")
    );
    let lock = PostgresLock::new(&bad).unwrap();
    let err = lock
        .acquire(&name("x"), Some(Instant::now() + Duration::from_secs(5)))
        .unwrap_err();
    assert!(matches!(err, Error::Unavailable(_)), "{err:?}");
    // The server's own words, without the driver's `db error:` before them.
    let shown = err.to_string();
    assert!(
        shown.starts_with(&format!(
            "backend unavailable: postgres at {}: FATAL: role",
            lock.backend_id()
        )),
        "{shown}"
    );
    assert!(!shown.contains("certainly-wrong"), "{shown}");
    let err = PgXactLocked::new(Postgres::new(&bad).unwrap())
        .run(&Key::whole(), |_| Ok::<_, postgres::Error>(()))
        .unwrap_err();
    assert!(matches!(err, Error::Unavailable(_)), "{err:?}");
    // Also what the driver would refuse only when connecting, as if the server were down:
    // no host, hosts and ports that do not pair up, an empty host name.
    for url in [
        "postgres://h:notaport/db",
        "postgres://h/db?sslmode=bogus",
        "postgres://",
        "postgres://u@/db",
        "host=a,b port=1,2,3 dbname=d",
        "host=a,b hostaddr=127.0.0.1 dbname=d",
        "host=a, port=5432",
    ] {
        assert!(
            matches!(PostgresLock::new(url), Err(Error::Config(_))),
            "{url}"
        );
        assert!(matches!(Postgres::new(url), Err(Error::Config(_))), "{url}");
    }
    let setup = Setup::new(Sqlite::new("unused.db"));
    assert!(matches!(
        Registry::builtin().open("postgres://h:notaport/db", &setup),
        Err(Error::Config(_))
    ));
}

/// The pid of the session holding the bigint advisory lock `key`.
fn holder_pid(admin: &mut postgres::Client, key: i64) -> i32 {
    admin
        .query_one(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 1
               AND classid = (($1::bigint >> 32) & 4294967295)::bigint::text::oid
               AND objid = ($1::bigint & 4294967295)::bigint::text::oid",
            &[&key],
        )
        .unwrap()
        .get(0)
}

#[test]
fn terminating_the_holders_session_loses_the_lease_and_rolls_back() {
    let dir = tempfile::tempdir().unwrap();
    let db = Sqlite::new(dir.path().join("k.db")).synchronous(Synchronous::Normal);
    db.connect()
        .unwrap()
        .execute_batch("CREATE TABLE log (who TEXT)")
        .unwrap();
    let strategy = Arc::new(Locked::new(lock(), db.clone()));
    let key = advisory_key(&LockName::new(db.identity(), Key::whole()));
    let (in_section_tx, in_section_rx) = std::sync::mpsc::channel();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let go_rx = Arc::new(std::sync::Mutex::new(go_rx));
    let s = strategy.clone();
    let holder = std::thread::spawn(move || {
        s.run(&Key::whole(), move |conn| {
            conn.execute("INSERT INTO log VALUES ('holder')", [])?;
            in_section_tx.send(()).unwrap();
            go_rx.lock().unwrap().recv().unwrap();
            Ok::<_, rusqlite::Error>(())
        })
    });
    in_section_rx.recv_timeout(Duration::from_secs(20)).unwrap();
    let mut admin = admin();
    let pid = holder_pid(&mut admin, key);
    admin
        .execute("SELECT pg_terminate_backend($1)", &[&pid])
        .unwrap();
    let s = strategy.clone();
    let waiter = std::thread::spawn(move || {
        s.run_timeout(&Key::whole(), Duration::from_secs(20), |conn| {
            conn.execute("INSERT INTO log VALUES ('waiter')", [])
        })
    });
    go_tx.send(()).unwrap();
    let held = holder.join().unwrap();
    assert!(matches!(held, Err(Error::LeaseLost)), "{held:?}");
    waiter.join().unwrap().unwrap();
    let who: Vec<String> = db
        .connect()
        .unwrap()
        .prepare("SELECT who FROM log")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(who, ["waiter"]);
}

#[test]
fn terminating_a_transaction_lock_holder_rolls_its_write_back() {
    let table = unique("turnstile_xkill");
    let mut admin = admin();
    admin
        .batch_execute(&format!("CREATE TABLE {table} (who TEXT)"))
        .unwrap();
    let strategy = Arc::new(PgXactLocked::new(Postgres::new(&url()).unwrap()));
    let key = Key::new(table.clone()).unwrap();
    let (pid_tx, pid_rx) = std::sync::mpsc::channel();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let go_rx = Arc::new(std::sync::Mutex::new(go_rx));
    let (s, k, t) = (strategy.clone(), key.clone(), table.clone());
    let holder = std::thread::spawn(move || {
        s.run(&k, move |db| {
            db.execute(&format!("INSERT INTO {t} VALUES ('holder')"), &[])?;
            let pid: i32 = db.query_one("SELECT pg_backend_pid()", &[])?.get(0);
            pid_tx.send(pid).unwrap();
            go_rx.lock().unwrap().recv().unwrap();
            Ok::<_, postgres::Error>(())
        })
    });
    let pid = pid_rx.recv_timeout(Duration::from_secs(20)).unwrap();
    admin
        .execute("SELECT pg_terminate_backend($1)", &[&pid])
        .unwrap();
    let (s, k, t) = (strategy.clone(), key.clone(), table.clone());
    let waiter = std::thread::spawn(move || {
        s.run_timeout(&k, Duration::from_secs(20), move |db| {
            db.execute(&format!("INSERT INTO {t} VALUES ('waiter')"), &[])
        })
    });
    go_tx.send(()).unwrap();
    let held = holder.join().unwrap();
    // The commit fails on a dead session. Seen from the client, a session that died
    // before its COMMIT arrived looks like one that died after committing, before the
    // answer: `Indeterminate` (may have committed) is the honest answer then; the table
    // below shows it did not.
    assert!(
        matches!(
            held,
            Err(Error::Resource(_) | Error::Unavailable(_) | Error::Indeterminate)
        ),
        "{held:?}"
    );
    waiter.join().unwrap().unwrap();
    let who: Vec<String> = column_then_drop(&mut admin, "who", &table);
    assert_eq!(who, ["waiter"]);
}

#[test]
fn busy_errors_are_classified_and_savepoints_undo_only_their_part() {
    let table = unique("turnstile_busy");
    let mut admin = admin();
    admin
        .batch_execute(&format!(
            "CREATE TABLE {table} (id INT PRIMARY KEY, v INT); INSERT INTO {table} VALUES (1, 0);"
        ))
        .unwrap();
    let db = Postgres::new(&url()).unwrap();
    let (mut a, mut b) = (db.connect().unwrap(), db.connect().unwrap());
    db.begin(&mut a, &[]).unwrap();
    a.batch_execute(&format!("UPDATE {table} SET v = 1 WHERE id = 1"))
        .unwrap();
    db.begin(&mut b, &[]).unwrap();
    let err = b
        .batch_execute(&format!(
            "SET LOCAL lock_timeout = 100; UPDATE {table} SET v = 2 WHERE id = 1"
        ))
        .unwrap_err();
    assert!(db.is_busy(&err), "{err}");
    db.rollback(&mut b).unwrap();
    let not_busy = b.batch_execute("SELECT 1/0").unwrap_err();
    assert!(!db.is_busy(&not_busy), "{not_busy}");
    // Savepoints: undo the second write only.
    db.savepoint(&mut a, 1).unwrap();
    a.batch_execute(&format!("UPDATE {table} SET v = 5 WHERE id = 1"))
        .unwrap();
    db.rollback_to_savepoint(&mut a, 1).unwrap();
    db.savepoint(&mut a, 2).unwrap();
    a.batch_execute(&format!("UPDATE {table} SET v = v + 10 WHERE id = 1"))
        .unwrap();
    db.release_savepoint(&mut a, 2).unwrap();
    db.commit(&mut a).unwrap();
    let v: i32 = admin
        .query_one(&format!("SELECT v FROM {table} WHERE id = 1"), &[])
        .unwrap()
        .get(0);
    admin.batch_execute(&format!("DROP TABLE {table}")).unwrap();
    assert_eq!(v, 11);
}

/// `retry` over PostgreSQL: an op that ran `COMMIT` and then met a busy error (a
/// serialization failure) has committed what it wrote, and must not run again, which would
/// apply it twice. It gets `TransactionEnded`, whether the error came outside a
/// transaction or in one the op began after its `COMMIT`; a busy error inside the
/// strategy's transaction is still retried.
#[test]
#[cfg(feature = "retry")]
fn retry_never_reruns_an_op_that_committed_before_its_busy_error() {
    let strategy = turnstile::retry::Retry::new(Postgres::new(&url()).unwrap());
    // The server arbitrates, for every host that reaches it.
    assert_eq!(strategy.capabilities().scope, turnstile::Scope::Hosts);
    let mut admin = admin();
    for (then, committed) in [("COMMIT", true), ("COMMIT; BEGIN", true), ("", false)] {
        let table = unique("turnstile_retried");
        admin
            .batch_execute(&format!("CREATE TABLE {table} (v INT)"))
            .unwrap();
        let insert = format!("INSERT INTO {table} VALUES (1)");
        let result = strategy.run(&Key::whole(), move |c| {
            c.batch_execute(&insert)?;
            if c.attempt() == 1 {
                if !then.is_empty() {
                    c.batch_execute(then)?;
                }
                c.batch_execute(
                    "DO $$ BEGIN RAISE EXCEPTION 'conflict' USING ERRCODE = '40001'; END $$",
                )?;
            }
            Ok::<_, postgres::Error>(c.attempt())
        });
        let rows: i64 = admin
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .unwrap()
            .get(0);
        admin.batch_execute(&format!("DROP TABLE {table}")).unwrap();
        if committed {
            assert!(
                matches!(result, Err(Error::TransactionEnded)),
                "{then}: {result:?}"
            );
        } else {
            assert!(matches!(result, Ok(2)), "{result:?}");
        }
        assert_eq!(rows, 1, "{then}: the op's write landed {rows} times");
    }
    // The connection kept serves the next op.
    let one = strategy.run(&Key::whole(), |c| {
        c.query_one("SELECT 1", &[]).map(|r| r.get::<_, i32>(0))
    });
    assert!(matches!(one, Ok(1)), "{one:?}");
}

/// An op run in a transaction of its own over PostgreSQL that ran `COMMIT` and then failed
/// (a non-busy error) or panicked has committed what it wrote before that: it gets
/// `TransactionEnded`, not its own error (which says rolled back), through every strategy
/// that runs an op alone — `Locked`, `pg-xact`, `retry` and a queue without group commit —
/// and what it left open after a `COMMIT; BEGIN` is rolled back. (The errors here are not
/// busy, so `retry` would not run the op again anyway: a busy one after a `COMMIT` is
/// `retry_never_reruns_an_op_that_committed_before_its_busy_error`'s.) An op that ran
/// `ROLLBACK` and then failed or panicked gets `TransactionEnded` too, as documented: the
/// strategy cannot tell it from a `COMMIT`; nothing of it lands. The documented exception:
/// an op whose connection is lost after its `COMMIT`, before the strategy's rollback,
/// keeps its own error, and what it committed stays. An op that fails or panics without
/// ending the transaction keeps its own error, and nothing of it lands; the strategies
/// keep serving.
#[test]
#[cfg(all(feature = "queue", feature = "retry"))]
fn an_op_alone_that_fails_or_panics_after_its_commit_gets_transaction_ended() {
    use turnstile::lock::MutexLock;
    use turnstile::queue::Queue;
    use turnstile::retry::Retry;

    let db = || Postgres::new(&url()).unwrap();
    let queue = Queue::builder().group_commit(false).build(db()).unwrap();
    let wrong = [
        fails_after_commit("locked", &Locked::new(MutexLock::new(), db())),
        fails_after_commit("pg-xact", &PgXactLocked::new(db())),
        fails_after_commit("retry", &Retry::new(db())),
        fails_after_commit("queue", &queue),
    ]
    .concat();
    assert!(wrong.is_empty(), "{wrong:#?}");
}

/// The ops of [`an_op_alone_that_fails_or_panics_after_its_commit_gets_transaction_ended`]
/// through `strategy`: what went wrong.
#[cfg(all(feature = "queue", feature = "retry"))]
fn fails_after_commit<S: Serializer<Resource = postgres::Client>>(
    what: &str,
    strategy: &S,
) -> Vec<String> {
    let table = unique("turnstile_alone");
    let mut admin = admin();
    admin
        .batch_execute(&format!("CREATE TABLE {table} (v INT)"))
        .unwrap();
    let insert = |v: i32| format!("INSERT INTO {table} VALUES ({v})");
    let key = Key::new(table.clone()).unwrap();
    let failing = || "SELEC 1".to_string(); // a syntax error: not busy
    let cases = [
        (vec![insert(1), "COMMIT".into(), failing()], false, "ended"),
        (
            vec![insert(2), "COMMIT; BEGIN".into(), insert(3), failing()],
            false,
            "ended",
        ),
        (vec![insert(4), "COMMIT".into()], true, "ended"),
        (
            vec![insert(5), "COMMIT; BEGIN".into(), insert(6)],
            true,
            "ended",
        ),
        (vec![insert(7), failing()], false, "op"),
        (vec![insert(8)], true, "panicked"),
        (
            vec![insert(10), "ROLLBACK".into(), failing()],
            false,
            "ended",
        ),
        (vec![insert(11), "ROLLBACK".into()], true, "ended"),
        // The connection is lost after the op's own `COMMIT`: the strategy's rollback
        // cannot run, and the op keeps its own error though its insert committed.
        (
            vec![
                insert(12),
                "COMMIT".into(),
                "SELECT pg_terminate_backend(pg_backend_pid())".into(),
            ],
            false,
            "op",
        ),
        (vec![insert(9)], false, "ok"),
    ];
    let mut wrong = Vec::new();
    for (statements, panics, expected) in cases {
        let shown = format!("{what}: {statements:?}, panics: {panics}");
        let result = strategy.run(&key, move |c| {
            for sql in &statements {
                c.batch_execute(sql)?;
            }
            assert!(!panics, "the op panics after its statements");
            Ok::<_, postgres::Error>(c.attempt())
        });
        let got = match &result {
            Err(Error::TransactionEnded) => "ended",
            Err(Error::Op(_)) => "op",
            Err(Error::Panicked(_)) => "panicked",
            Ok(1) => "ok",
            _ => "something else",
        };
        if got != expected {
            wrong.push(format!("{shown}: {result:?}, expected {expected}"));
        }
    }
    let rows: Vec<i32> = column_then_drop(&mut admin, "v", &table);
    if rows != [1, 2, 4, 5, 9, 12] {
        wrong.push(format!(
            "{what}: rows {rows:?}, expected [1, 2, 4, 5, 9, 12]"
        ));
    }
    wrong
}

/// A lease lost while an op ran that had run `COMMIT` itself: what the op wrote
/// committed, so it gets `TransactionEnded`, never `LeaseLost` (which says rolled back) —
/// through `Locked` and through a queue running it alone under its lock. An op that did not
/// commit gets `LeaseLost`, and nothing of it lands.
#[test]
#[cfg(feature = "queue")]
fn a_lease_lost_after_the_ops_own_commit_is_not_answered_as_rolled_back() {
    let db = Postgres::new(&url()).unwrap();
    let table = unique("turnstile_leased");
    let key = Key::new(table.clone()).unwrap();
    let locked = Arc::new(Locked::new(lock(), db.clone()));
    let advisory = advisory_key(&LockName::new(db.identity(), key.clone()));
    lease_lost_after_commit("locked", locked, advisory, &table);
    let queue = turnstile::queue::Queue::builder()
        .lock(lock())
        .group_commit(false)
        .build(db)
        .unwrap();
    let advisory = advisory_key(queue.lock_name().unwrap());
    lease_lost_after_commit("queue", Arc::new(queue), advisory, &format!("{table}_q"));
}

/// The ops of [`a_lease_lost_after_the_ops_own_commit_is_not_answered_as_rolled_back`]
/// through `strategy`, whose lease is the advisory lock `advisory`.
#[cfg(feature = "queue")]
fn lease_lost_after_commit<S>(what: &str, strategy: Arc<S>, advisory: i64, table: &str)
where
    S: Serializer<Resource = postgres::Client> + 'static,
{
    let mut admin = admin();
    admin
        .batch_execute(&format!("CREATE TABLE {table} (v INT)"))
        .unwrap();
    let key = Key::new(table).unwrap();
    for (v, then) in [(1, "COMMIT"), (2, "")] {
        let (in_op_tx, in_op_rx) = std::sync::mpsc::channel();
        let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
        let (s, k, sql) = (
            strategy.clone(),
            key.clone(),
            format!("INSERT INTO {table} VALUES ({v}); {then}"),
        );
        let holder = std::thread::spawn(move || {
            s.run(&k, move |c| {
                c.batch_execute(&sql)?;
                in_op_tx.send(()).unwrap();
                go_rx.recv().unwrap();
                Ok::<_, postgres::Error>(())
            })
        });
        in_op_rx.recv_timeout(Duration::from_secs(20)).unwrap();
        let pid = holder_pid(&mut admin, advisory);
        admin
            .execute("SELECT pg_terminate_backend($1)", &[&pid])
            .unwrap();
        go_tx.send(()).unwrap();
        let result = holder.join().unwrap();
        if then.is_empty() {
            assert!(
                matches!(result, Err(Error::LeaseLost)),
                "{what}: {result:?}"
            );
        } else {
            assert!(
                matches!(result, Err(Error::TransactionEnded)),
                "{what}: {result:?}"
            );
        }
    }
    let rows: Vec<i32> = column_then_drop(&mut admin, "v", table);
    assert_eq!(rows, [1], "{what}");
}

#[test]
fn concurrent_fence_claims_cannot_interleave() {
    let db = Postgres::new(&url()).unwrap();
    let backend = unique("fence-race");
    servers::concurrent_fence_claims_cannot_interleave(&db, &backend);
    db.connect()
        .unwrap()
        .execute(
            "DELETE FROM turnstile_fences WHERE backend = $1",
            &[&backend],
        )
        .unwrap();
}

/// Child-process body of `a_killed_holder_process_frees_the_lock`: takes the lock, says
/// so, and waits to be killed.
#[test]
#[ignore = "child process of a_killed_holder_process_frees_the_lock"]
fn holder_child() {
    use std::io::Write;
    let key = std::env::var("HOLDER_KEY").unwrap();
    let lease = lock().acquire(&name(&key), None).unwrap();
    println!("held");
    std::io::stdout().flush().unwrap();
    std::thread::sleep(Duration::from_secs(60));
    drop(lease);
}

#[test]
fn a_killed_holder_process_frees_the_lock() {
    use std::io::BufRead;
    let key = unique("crash");
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "holder_child",
            "--ignored",
            "--nocapture",
            "--quiet",
        ])
        .env("HOLDER_KEY", &key)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    assert!(
        lines.any(|l| l.is_ok_and(|l| l == "held")),
        "the child took the lock"
    );
    let lock = lock();
    assert!(matches!(
        lock.acquire(&name(&key), Some(Instant::now())),
        Err(Error::Timeout { .. })
    ));
    // SIGKILL: no destructor runs; the server frees the lock when the session ends.
    child.kill().unwrap();
    child.wait().unwrap();
    drop(
        lock.acquire(&name(&key), Some(Instant::now() + Duration::from_secs(20)))
            .unwrap(),
    );
}

/// `postgres://…` and `queue+postgres://…` specs connect when they are opened, as the
/// Redis specs ping: a server out of reach, or one that refuses the role, is
/// `Unavailable` there, over SQLite data and over PostgreSQL data, rather than at the
/// first op; the same specs on the real server open.
#[test]
fn lock_specs_on_a_server_out_of_reach_are_unavailable_at_open() {
    let down = format!("postgres://postgres@127.0.0.1:{}/test", closed_port());
    let refused = format!(
        "postgres://{}:pw@127.0.0.1:5432/test",
        unique("no_such_role")
    );
    let dir = tempfile::tempdir().unwrap();
    let sqlite = Setup::new(Sqlite::new(dir.path().join("a.db")));
    let server = Setup::new(Postgres::new(&url()).unwrap());
    for bad in [&down, &refused] {
        let mut specs = vec![bad.clone()];
        #[cfg(feature = "queue")]
        specs.push(format!("queue+{bad}"));
        for spec in &specs {
            let err = Registry::builtin().open(spec, &sqlite).err();
            assert!(
                matches!(err, Some(Error::Unavailable(_))),
                "{spec}: {err:?}"
            );
            let err = Registry::builtin_postgres().open(spec, &server).err();
            assert!(
                matches!(err, Some(Error::Unavailable(_))),
                "{spec}: {err:?}"
            );
            let up = spec.replace(bad.as_str(), &url());
            Registry::builtin()
                .open(&up, &sqlite)
                .unwrap_or_else(|e| panic!("{up}: {e}"));
        }
    }
}

/// The server closes connections that sat idle (`idle_session_timeout`, a restart, an
/// administrator's `pg_terminate_backend`), where the client cannot see it without a
/// round trip: after a second idle, the next op runs on a new connection instead of
/// failing, under `mutex`'s pool and the queue's worker alike.
#[test]
fn a_connection_the_server_closed_while_idle_is_replaced_before_the_next_op() {
    fn backend_pid(c: &mut postgres::Client) -> Result<i32, postgres::Error> {
        c.query_one("SELECT pg_backend_pid()", &[])
            .map(|r| r.get(0))
    }
    let survives_an_idle_kill = |run: &dyn Fn() -> Result<i32, String>| {
        let pid = run().unwrap();
        admin()
            .execute("SELECT pg_terminate_backend($1)", &[&pid])
            .unwrap();
        std::thread::sleep(Duration::from_millis(1100));
        let next = run().expect("the op after an idle kill failed");
        assert_ne!(next, pid);
    };
    let setup = Setup::new(Postgres::new(&url()).unwrap());
    let mutex = Registry::builtin_postgres().open("mutex", &setup).unwrap();
    let key = [Key::new("k").unwrap()];
    survives_an_idle_kill(&|| {
        mutex
            .run_as(&key, Wait::Default, |c| backend_pid(c))
            .map_err(|e| e.to_string())
    });
    #[cfg(feature = "queue")]
    {
        let queue = turnstile::queue::Queue::new(Postgres::new(&url()).unwrap()).unwrap();
        survives_an_idle_kill(&|| {
            queue
                .run(&Key::whole(), |c| backend_pid(c))
                .map_err(|e| e.to_string())
        });
    }
}

#[test]
#[cfg(feature = "queue")]
fn a_commit_whose_answer_is_lost_is_never_taken_for_a_rollback() {
    let (target, via) = cut_proxy::through_proxy(&url());
    let proxy = cut_proxy::CutProxy::start(&target);
    let cut_url = via(proxy.port());
    servers::a_commit_whose_answer_is_lost_is_never_taken_for_a_rollback(
        Postgres::new(&url()).unwrap(),
        Postgres::new(&cut_url).unwrap(),
        &|| proxy.arm(),
        &|| proxy.cuts(),
    );
}

#[test]
fn a_server_that_never_answers_the_login_fails_within_the_connect_timeout() {
    let (target, via) = cut_proxy::through_proxy(&url());
    let proxy = cut_proxy::CutProxy::start(&target);
    proxy.stall();
    servers::a_login_never_answered_fails_within_the_connect_timeout(
        Postgres::new(&via(proxy.port()))
            .unwrap()
            .connect_timeout(Duration::from_millis(500))
            .unwrap(),
    );
}

/// The driver reads user info up to the first `@`: a raw `@` in the password, or in the
/// query before a `password=`, would leave what follows in the host name, and so in every
/// message that names the server.
#[test]
fn a_raw_at_in_the_password_is_refused_without_showing_it() {
    for url in [
        "postgres://app:Xy7@k9zq@db/app",
        "postgres://db:5432/app?user=a@b&password=Xy7k9zq",
    ] {
        let error = Postgres::new(url).unwrap_err();
        let shown = error.to_string();
        assert!(matches!(error, Error::Config(_)), "{shown}");
        assert!(shown.contains("%40"), "{shown}");
        assert!(!shown.contains("Xy7") && !shown.contains("k9zq"), "{shown}");
    }
}

#[test]
fn a_zero_or_absurd_connect_timeout_is_refused() {
    let db = || Postgres::new(&url()).unwrap();
    for bad in [Duration::ZERO, Duration::MAX] {
        assert!(
            matches!(db().connect_timeout(bad), Err(Error::Config(_))),
            "{bad:?}"
        );
    }
    assert!(db().connect_timeout(Duration::from_millis(1)).is_ok());
}

/// A server that stops answering after the lock connections are open (the proxy stalls
/// them and keeps them open, as a stopped process or a stalled network path does): an
/// acquire fails within its deadline plus the read timeout, one without a deadline within
/// a `WAIT_CHUNK` plus the read timeout, a held lease's check and release within the read
/// timeout, each with a typed error. Their connections are closed, so once the server
/// answers again it ends their sessions, and their locks are free.
#[test]
fn a_server_that_stops_answering_fails_lock_statements_within_the_read_timeout() {
    use turnstile::lock::postgres::WAIT_CHUNK;
    const READ: Duration = Duration::from_millis(500);
    let timed_out = |err: &Error<std::convert::Infallible>| match err {
        // The lock's errors name their server; the I/O error is that one's source.
        Error::Unavailable(source) => {
            source
                .source()
                .and_then(|e| e.downcast_ref::<std::io::Error>())
                .map(|e| e.kind())
                == Some(std::io::ErrorKind::TimedOut)
        }
        _ => false,
    };
    let (target, via) = cut_proxy::through_proxy(&url());
    let proxy = cut_proxy::CutProxy::start(&target);
    let stalled = PostgresLock::new(&via(proxy.port()))
        .unwrap()
        .read_timeout(READ)
        .unwrap();
    let [checked, released, waited, endless] =
        ["check", "release", "acquire", "endless"].map(|what| name(&unique(what)));
    let check_lease = stalled.acquire(&checked, None).unwrap();
    let release_lease = stalled.acquire(&released, None).unwrap();
    // Two idle connections for the two acquires.
    stalled.ping().unwrap();
    stalled.ping().unwrap();
    proxy.stall();

    let (s, n) = (stalled.clone(), endless.clone());
    let without_deadline = std::thread::spawn(move || {
        let start = Instant::now();
        (s.acquire(&n, None).map(drop), start.elapsed())
    });
    let start = Instant::now();
    let err = stalled
        .acquire(&waited, Some(Instant::now() + Duration::from_millis(300)))
        .unwrap_err();
    let took = start.elapsed();
    assert!(timed_out(&err), "{err:?}");
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(5),
        "{took:?}"
    );

    // A new lock connection's login is bounded by the connect timeout, as before.
    let start = Instant::now();
    let proxied = via(proxy.port());
    let sep = if proxied.contains('?') { '&' } else { '?' };
    let err = PostgresLock::new(&format!("{proxied}{sep}connect_timeout=1"))
        .unwrap()
        .ping()
        .unwrap_err();
    assert!(
        matches!(&err, Error::Unavailable(e) if e.to_string().contains("login")),
        "{err:?}"
    );
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );

    let start = Instant::now();
    let err = check_lease.check().unwrap_err();
    assert!(matches!(err, Error::LeaseLost), "{err:?}");
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    // Its connection is gone: nothing more waits on the server.
    let start = Instant::now();
    assert!(matches!(check_lease.release(), Err(Error::LeaseLost)));
    assert!(start.elapsed() < READ, "{:?}", start.elapsed());

    let start = Instant::now();
    let err = release_lease.release().unwrap_err();
    assert!(timed_out(&err), "{err:?}");
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );

    let (acquired, took) = without_deadline.join().unwrap();
    let err = acquired.unwrap_err();
    assert!(timed_out(&err), "{err:?}");
    assert!(
        took >= WAIT_CHUNK && took < WAIT_CHUNK + Duration::from_secs(5),
        "{took:?}"
    );

    // The server answers again, and reads the closes: every one of those sessions ends.
    proxy.resume();
    let direct = lock();
    for n in [&checked, &released, &waited, &endless] {
        let start = Instant::now();
        loop {
            match direct.acquire(n, Some(Instant::now() + Duration::from_millis(200))) {
                Ok(lease) => break lease.release().unwrap(),
                Err(Error::Timeout { .. }) if start.elapsed() < Duration::from_secs(30) => {}
                Err(e) => panic!(
                    "{n:?} still held {:?} after the server came back: {e:?}",
                    start.elapsed()
                ),
            }
        }
    }
}

#[test]
fn a_zero_or_absurd_read_timeout_is_refused() {
    for bad in [
        Duration::ZERO,
        turnstile::MAX_TIMEOUT + Duration::from_secs(1),
    ] {
        let err = lock().read_timeout(bad).unwrap_err();
        assert!(matches!(err, Error::Config(_)), "{bad:?}: {err:?}");
    }
    let held = lock()
        .read_timeout(Duration::from_millis(1))
        .unwrap()
        .read_timeout(turnstile::MAX_TIMEOUT)
        .unwrap()
        .acquire(&name(&unique("read-timeout")), None)
        .unwrap();
    held.release().unwrap();
}

/// 30 days: within `MAX_TIMEOUT`, but more milliseconds than `lock_timeout` takes.
const A_MONTH: Duration = Duration::from_secs(30 * 24 * 3600);

#[test]
fn waits_longer_than_lock_timeout_takes_are_served() {
    let db = Postgres::new(&url()).unwrap();
    let far = || Some(Instant::now() + A_MONTH);
    let n = name(&unique("month"));
    for lock in [lock(), lock().fencing(false)] {
        let held = lock.acquire(&n, far()).unwrap();
        held.release().unwrap();
    }
    // Through Locked, with the wait of the call, and through the transaction locks.
    let key = Key::new(unique("month")).unwrap();
    let locked = Locked::new(lock(), db.clone());
    locked
        .run_timeout(&key, A_MONTH, |_| Ok::<_, postgres::Error>(()))
        .unwrap();
    let xact = PgXactLocked::new(db).timeout(Some(A_MONTH)).unwrap();
    xact.run(&key, |_| Ok::<_, postgres::Error>(())).unwrap();
    xact.run_with(
        std::slice::from_ref(&key),
        Wait::Deadline(Instant::now() + A_MONTH),
        |_| Ok::<_, postgres::Error>(()),
    )
    .unwrap();
    // A held key still times out at a near deadline, and is free after.
    let held = lock()
        .acquire(
            &LockName::new(locked.connector().identity(), key.clone()),
            None,
        )
        .unwrap();
    let err = xact
        .run_timeout(&key, Duration::from_millis(100), |_| {
            Ok::<_, postgres::Error>(())
        })
        .unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
    drop(held);
    xact.run(&key, |_| Ok::<_, postgres::Error>(())).unwrap();
}

#[test]
fn passwords_in_libpq_strings_stay_out_of_errors() {
    for conninfo in [
        "host=127.0.0.1 password=hunter2 port=notaport",
        "host=127.0.0.1 password = 'hunter2 x\\'y' port=notaport",
        "postgres://u@127.0.0.1:notaport/db?password=hunter2",
    ] {
        let errors = [
            Postgres::new(conninfo).unwrap_err().to_string(),
            PostgresLock::new(conninfo).unwrap_err().to_string(),
        ];
        for shown in errors {
            assert!(shown.contains("***"), "{shown}");
            assert!(!shown.contains("hunter2"), "{shown}");
        }
    }
}

/// Logins a silent server never answers are each left on a thread of their own; past
/// `MAX_PENDING_LOGINS` to one server, a new one fails at once instead of leaving yet
/// another thread behind. Once the server answers, logins work again.
#[test]
fn logins_left_waiting_on_a_silent_server_are_capped() {
    use turnstile::resource::MAX_PENDING_LOGINS;
    // Logins that are answered are not capped, however many run at once.
    let logins: Vec<_> = (0..3 * MAX_PENDING_LOGINS)
        .map(|_| std::thread::spawn(|| Postgres::new(&url()).unwrap().connect().map(drop)))
        .collect();
    for login in logins {
        login
            .join()
            .unwrap()
            .expect("a login to a server that answers");
    }
    let (target, via) = cut_proxy::through_proxy(&url());
    let proxy = cut_proxy::CutProxy::start(&target);
    proxy.stall();
    let db = Postgres::new(&via(proxy.port()))
        .unwrap()
        .connect_timeout(Duration::from_millis(100))
        .unwrap();
    let errors: Vec<String> = (0..MAX_PENDING_LOGINS + 3)
        .map(|_| db.connect().map(drop).unwrap_err().to_string())
        .collect();
    let capped = errors
        .iter()
        .filter(|e| e.contains("still waiting"))
        .count();
    assert_eq!(capped, 3, "{errors:#?}");
    proxy.resume();
    let start = Instant::now();
    loop {
        match db.connect() {
            Ok(_) => break,
            Err(e) if start.elapsed() < Duration::from_secs(30) => {
                assert!(
                    e.to_string().contains("still waiting") || e.to_string().contains("login"),
                    "{e}"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("logins did not recover once the server answered: {e}"),
        }
    }
}

/// `url()` with `default_transaction_isolation=serializable` for its sessions, as a
/// server, role or database configured so would give them.
fn serializable_by_default() -> String {
    let url = url();
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}options=-c%20default_transaction_isolation%3Dserializable")
}

/// `SHOW transaction_isolation` inside an op of `strategy`.
fn isolation_in_op(strategy: &impl Serializer<Resource = postgres::Client>) -> String {
    strategy
        .run(&Key::new(unique("iso")).unwrap(), |db| {
            let level: String = db.query_one("SHOW transaction_isolation", &[])?.get(0);
            Ok::<_, postgres::Error>(level)
        })
        .unwrap()
}

/// The URL's default isolation holds without `Postgres::isolation` (so the URL does make
/// the sessions serializable), and the chosen level wins over it: in the transactions
/// `Locked` and `PgXactLocked` begin, in autocommit (the session's default), and after an
/// op changed its session's default.
#[test]
fn a_chosen_isolation_level_wins_over_the_sessions_default() {
    use turnstile::lock::MutexLock;
    use turnstile::resource::Isolation;

    let url = serializable_by_default();
    let server_default = Postgres::new(&url).unwrap();
    assert_eq!(
        isolation_in_op(&Locked::new(MutexLock::new(), server_default.clone())),
        "serializable"
    );
    assert_eq!(
        isolation_in_op(&PgXactLocked::new(server_default)),
        "serializable"
    );

    let chosen = Postgres::new(&url)
        .unwrap()
        .isolation(Isolation::ReadCommitted);
    assert!(
        format!("{chosen:?}").contains("ReadCommitted"),
        "{chosen:?}"
    );
    for mode in [TxMode::Transaction, TxMode::Autocommit] {
        let locked = Locked::new(MutexLock::new(), chosen.clone()).tx_mode(mode);
        assert_eq!(isolation_in_op(&locked), "read committed", "{mode:?}");
    }
    let xact = PgXactLocked::new(chosen.clone()).pool_size(1).unwrap();
    assert_eq!(isolation_in_op(&xact), "read committed");
    // An op turns its session's default back to serializable (it commits with the op):
    // the next transaction on that connection still runs at the chosen level.
    xact.run(&Key::new(unique("iso")).unwrap(), |db| {
        db.batch_execute("SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL SERIALIZABLE")
    })
    .unwrap();
    assert_eq!(isolation_in_op(&xact), "read committed");
    let strict = Postgres::new(&url)
        .unwrap()
        .isolation(Isolation::RepeatableRead);
    assert_eq!(
        isolation_in_op(&Locked::new(MutexLock::new(), strict)),
        "repeatable read"
    );
}

/// An op calling back through `pg-xact` for a key its own transaction holds would wait for
/// that transaction, on another connection, for ever: it is refused at once, and the inner
/// op never runs. Another key is free, and so is the key once the op is over.
#[test]
fn a_pg_xact_op_calling_back_for_its_own_key_is_refused_at_once() {
    let strategy = Arc::new(PgXactLocked::new(Postgres::new(&url()).unwrap()));
    let (a, b) = (
        Key::new(unique("a")).unwrap(),
        Key::new(unique("b")).unwrap(),
    );
    let inner = strategy.clone();
    let (a2, b2) = (a.clone(), b.clone());
    let started = Instant::now();
    let (same, other) = strategy
        .run_with(std::slice::from_ref(&a), Wait::Forever, move |_| {
            // Bounded, so that a deadlock shows as a failure, not a hang.
            let same = inner.run_with(
                std::slice::from_ref(&a2),
                Wait::Timeout(Duration::from_secs(5)),
                |_| Ok::<_, postgres::Error>(()),
            );
            let other = inner.run(&b2, |_| Ok::<_, postgres::Error>(2));
            Ok::<_, postgres::Error>((same, other))
        })
        .unwrap();
    assert!(matches!(same, Err(Error::Reentrant)), "{same:?}");
    assert_eq!(other.unwrap(), 2);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "it waited first"
    );
    assert_eq!(
        strategy.run(&a, |_| Ok::<_, postgres::Error>(1)).unwrap(),
        1
    );
}
