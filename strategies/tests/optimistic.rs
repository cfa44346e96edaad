//! The `optimistic` strategy over SQLite: lost-update free under contention, reruns
//! observed, conflicts past the budget reported as `Contended`.
#![cfg(all(feature = "optimistic", feature = "sqlite", feature = "mutex"))]

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use turnstile::lock::MutexLock;
use turnstile::optimistic::{Optimistic, StoreError, VersionStore, Versioned, Versions};
use turnstile::spec::{Registry, Setup};
use turnstile::sqlite::{Sqlite, Synchronous};
use turnstile::{Connect, Ctx, Error, Key, Locked, Serializer, Wait};

#[path = "support/server_urls.rs"]
mod server_urls;

fn db(dir: &std::path::Path) -> Sqlite {
    Sqlite::new(dir.join("v.db")).synchronous(Synchronous::Normal)
}

fn get(db: &mut Versioned<Sqlite>, id: &str) -> Result<i64, StoreError> {
    Ok(db
        .read(id)?
        .map_or(0, |v| String::from_utf8(v).unwrap().parse().unwrap()))
}

/// Read, pause, write: loses updates unless the commit compares versions.
fn increment(db: &mut Ctx<'_, Versioned<Sqlite>>, id: &str) -> Result<(), StoreError> {
    let n = get(db, id)?;
    std::thread::sleep(Duration::from_micros(200));
    db.write(id, (n + 1).to_string())
}

#[test]
fn concurrent_increments_are_exact_and_rerun() {
    let dir = tempfile::tempdir().unwrap();
    let strategy = Arc::new(Optimistic::new(db(dir.path())).max_attempts(1000).unwrap());
    let caps = strategy.capabilities();
    assert!(!caps.excludes && caps.reruns_op);
    let reruns = Arc::new(AtomicU32::new(0));
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let (s, reruns) = (strategy.clone(), reruns.clone());
            std::thread::spawn(move || {
                for _ in 0..20 {
                    let reruns = reruns.clone();
                    s.run(&Key::new("counter").unwrap(), move |db| {
                        if db.attempt() > 1 {
                            reruns.fetch_add(1, Ordering::Relaxed);
                        }
                        increment(db, "counter")
                    })
                    .unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let n = strategy
        .run(&Key::whole(), |db| get(db, "counter"))
        .unwrap();
    assert_eq!(n, 160);
    assert!(
        reruns.load(Ordering::Relaxed) > 0,
        "no conflict was ever seen"
    );
}

#[test]
fn conflicts_past_the_budget_are_contended() {
    let dir = tempfile::tempdir().unwrap();
    let versions = Versions::new(db(dir.path()));
    let strategy = Optimistic::over(versions.clone())
        .max_attempts(3)
        .unwrap()
        .backoff(Duration::from_micros(1), Duration::from_millis(1))
        .unwrap();
    strategy
        .run(&Key::whole(), |db| db.write("x", "0"))
        .unwrap();
    // A rival that writes the record between every read and commit of the op.
    let rival = Arc::new(std::sync::Mutex::new(versions.connect().unwrap()));
    let runs = Arc::new(AtomicU32::new(0));
    let (r, n) = (rival.clone(), runs.clone());
    let err = strategy
        .run(&Key::whole(), move |db| {
            n.fetch_add(1, Ordering::Relaxed);
            let v = get(db, "x")?;
            // The rival commits its own increment after the op read.
            bump(&versions, &mut r.lock().unwrap());
            db.write("x", (v + 1).to_string())
        })
        .unwrap_err();
    assert!(
        matches!(err, Error::Contended { attempts: 3, .. }),
        "{err:?}"
    );
    assert_eq!(runs.load(Ordering::Relaxed), 3);
    // Nothing of the op was written: the rival's three bumps only.
    let x = strategy.run(&Key::whole(), |db| get(db, "x")).unwrap();
    assert_eq!(x, 3);
}

fn bump(versions: &Versions<Sqlite>, rival: &mut Versioned<Sqlite>) {
    use turnstile::Transact;
    versions.begin(rival, &[]).unwrap();
    let v = get(rival, "x").unwrap();
    rival.write("x", (v + 1).to_string()).unwrap();
    versions.commit(rival).unwrap();
}

#[test]
fn a_changed_read_only_record_is_a_conflict_too() {
    use turnstile::Transact;
    let dir = tempfile::tempdir().unwrap();
    let versions = Versions::new(db(dir.path()));
    let mut a = versions.connect().unwrap();
    let mut b = versions.connect().unwrap();
    // a reads "limit" and writes "spent"; b changes "limit" before a commits.
    versions.begin(&mut a, &[]).unwrap();
    let limit = get(&mut a, "limit").unwrap();
    a.write("spent", (limit + 1).to_string()).unwrap();
    versions.begin(&mut b, &[]).unwrap();
    b.write("limit", "5").unwrap();
    versions.commit(&mut b).unwrap();
    let err = versions.commit(&mut a).unwrap_err();
    assert!(matches!(err, turnstile::TransactError::Busy(_)), "{err:?}");
    versions.begin(&mut a, &[]).unwrap();
    assert_eq!(
        get(&mut a, "spent").unwrap(),
        0,
        "the conflicting write was applied"
    );
}

#[test]
fn op_errors_panics_and_a_zero_wait_are_typed() {
    let dir = tempfile::tempdir().unwrap();
    let strategy = Optimistic::new(db(dir.path()));
    let err = strategy
        .run(&Key::whole(), |db| {
            db.write("y", "1").unwrap();
            Err::<(), _>("nope")
        })
        .unwrap_err();
    assert_eq!(err.into_op(), Some("nope"));
    let err = strategy
        .run(&Key::whole(), |_db| -> Result<(), StoreError> {
            panic!("boom")
        })
        .unwrap_err();
    assert!(
        matches!(err, Error::Panicked(ref m) if m == "boom"),
        "{err:?}"
    );
    // Nothing from either was written.
    assert_eq!(
        strategy.run(&Key::whole(), |db| db.read("y")).unwrap(),
        None
    );
    // A zero wait still runs once.
    strategy
        .run_with(&[Key::whole()], Wait::Timeout(Duration::ZERO), |db| {
            db.write("z", "1")
        })
        .unwrap();
    assert!(matches!(
        Optimistic::new(db(dir.path())).max_attempts(0),
        Err(Error::Config(_))
    ));
    // A zero base never grows: conflicts would be retried in a busy loop.
    for (base, cap) in [
        (Duration::ZERO, Duration::ZERO),
        (Duration::ZERO, Duration::from_millis(1)),
        (Duration::from_millis(2), Duration::from_millis(1)),
        (Duration::from_millis(1), Duration::from_secs(61)),
    ] {
        assert!(
            matches!(
                Optimistic::new(db(dir.path())).backoff(base, cap),
                Err(Error::Config(_))
            ),
            "{base:?}, {cap:?}"
        );
    }
    for bad in ["", "1abc", "a-b", "t; DROP TABLE x", &"t".repeat(64)] {
        assert!(
            matches!(
                Versions::new(db(dir.path())).table(bad),
                Err(Error::Config(_))
            ),
            "{bad:?}"
        );
    }
}

#[test]
fn the_same_ops_run_under_a_lock_and_through_the_registry() {
    let dir = tempfile::tempdir().unwrap();
    let versions = Versions::new(db(dir.path())).table("counters").unwrap();
    let locked = Arc::new(Locked::new(MutexLock::new(), versions.clone()));
    let registry = Registry::builtin_versioned();
    let optimistic = Arc::new(registry.open("optimistic", &Setup::new(versions)).unwrap());
    // Under the lock no commit can conflict; optimistically, conflicts rerun. (Mixing the
    // two at once would let an optimistic commit fail a locked one: the lock does not
    // stop optimistic writers.)
    let locked_threads: Vec<_> = (0..4)
        .map(|_| {
            let l = locked.clone();
            std::thread::spawn(move || {
                for _ in 0..10 {
                    l.run(&Key::whole(), |db| increment(db, "c")).unwrap();
                }
            })
        })
        .collect();
    for t in locked_threads {
        t.join().unwrap();
    }
    let optimistic_threads: Vec<_> = (0..4)
        .map(|_| {
            let o = optimistic.clone();
            std::thread::spawn(move || {
                for _ in 0..10 {
                    o.run_as(&[Key::whole()], Wait::Default, |db| increment(db, "c"))
                        .unwrap();
                }
            })
        })
        .collect();
    for t in optimistic_threads {
        t.join().unwrap();
    }
    assert_eq!(locked.run(&Key::whole(), |db| get(db, "c")).unwrap(), 80);
}

/// Lost-update free on a database server too, reruns observed. Each run uses its own
/// table, since other tests and developers share the server.
#[cfg(any(feature = "postgres", feature = "mysql"))]
fn hammer_server<S>(versions: Versions<S>) -> (i64, u32)
where
    S: turnstile::optimistic::VersionStore,
{
    fn get<S: turnstile::optimistic::VersionStore>(
        db: &mut Versioned<S>,
    ) -> Result<i64, StoreError> {
        Ok(db
            .read("counter")?
            .map_or(0, |v| String::from_utf8(v).unwrap().parse().unwrap()))
    }
    let strategy = Arc::new(Optimistic::over(versions).max_attempts(1000).unwrap());
    let reruns = Arc::new(AtomicU32::new(0));
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let (s, reruns) = (strategy.clone(), reruns.clone());
            std::thread::spawn(move || {
                for _ in 0..8 {
                    let reruns = reruns.clone();
                    s.run(&Key::whole(), move |db| {
                        if db.attempt() > 1 {
                            reruns.fetch_add(1, Ordering::Relaxed);
                        }
                        let n = get(db)?;
                        std::thread::sleep(Duration::from_millis(1));
                        db.write("counter", (n + 1).to_string())
                    })
                    .unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let n = strategy.run(&Key::whole(), |db| get(db)).unwrap();
    (n, reruns.load(Ordering::Relaxed))
}

#[cfg(any(feature = "postgres", feature = "mysql"))]
fn unique_table() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("turnstile_versions_{}_{nanos}", std::process::id())
}

#[cfg(feature = "postgres")]
#[test]
fn concurrent_increments_on_postgres_are_exact_and_rerun() {
    use turnstile::resource::Postgres;
    let url = server_urls::postgres_url();
    let table = unique_table();
    let db = Postgres::new(&url).unwrap();
    let result = hammer_server(Versions::new(db.clone()).table(&table).unwrap());
    let mut admin = db.connect().unwrap();
    admin.batch_execute(&format!("DROP TABLE {table}")).unwrap();
    assert_eq!(result.0, 64);
    assert!(result.1 > 0, "no conflict was ever seen");
}

#[cfg(feature = "mysql")]
#[test]
fn concurrent_increments_on_mysql_are_exact_and_rerun() {
    use mysql::prelude::Queryable;
    use turnstile::resource::MySql;
    let url = server_urls::mysql_url();
    let table = unique_table();
    let db = MySql::new(&url).unwrap();
    let result = hammer_server(Versions::new(db.clone()).table(&table).unwrap());
    let mut admin = db.connect().unwrap();
    admin.query_drop(format!("DROP TABLE {table}")).unwrap();
    assert_eq!(result.0, 64);
    assert!(result.1 > 0, "no conflict was ever seen");
}

/// An id the store's table cannot take is refused by the op's read or write, as the op's
/// error naming the limit, instead of failing at commit (or, on a non-strict MySQL server,
/// being cut so that two ids share a record); one at the limit round-trips.
#[cfg(any(feature = "postgres", feature = "mysql"))]
fn ids_over_the_limit_are_refused_by_the_op<S>(versions: Versions<S>, max: usize)
where
    S: turnstile::optimistic::VersionStore,
{
    use turnstile::optimistic::IdTooLong;
    assert_eq!(versions.store().max_id_len(), Some(max));
    let strategy = Optimistic::over(versions);
    // Letters that do not compress (PostgreSQL would fit a longer id that does).
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let over: String = (0..=max)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            char::from(b'a' + (state % 26) as u8)
        })
        .collect();
    let fits = over[..max].to_owned();
    let id = fits.clone();
    strategy
        .run(&Key::whole(), move |db| db.write(&id, "v"))
        .unwrap();
    let id = fits.clone();
    let read = strategy.run(&Key::whole(), move |db| db.read(&id)).unwrap();
    assert_eq!(read, Some(b"v".to_vec()));
    for write in [true, false] {
        let over = over.clone();
        let error = strategy
            .run(&Key::whole(), move |db| {
                if write {
                    db.write(&over, "v")
                } else {
                    db.read(&over).map(drop)
                }
            })
            .unwrap_err();
        let Error::Op(store) = &error else {
            panic!("expected the op's error, got {error:?}")
        };
        assert!(!store.is_busy());
        let too_long = std::error::Error::source(store)
            .and_then(|s| s.downcast_ref::<IdTooLong>())
            .unwrap_or_else(|| panic!("{error:?}"));
        assert_eq!((too_long.len, too_long.max), (max + 1, max));
        assert!(
            error.to_string().contains(&format!("{max} bytes")),
            "{error}"
        );
    }
    // Nothing was written under the longer id, nor under the one it shares a prefix with.
    let read = strategy
        .run(&Key::whole(), move |db| db.read_record(&fits))
        .unwrap();
    assert_eq!(read.map(|r| r.version), Some(1));
}

#[cfg(feature = "postgres")]
#[test]
fn a_postgres_id_over_the_limit_is_refused_by_the_op() {
    use turnstile::resource::Postgres;
    let url = server_urls::postgres_url();
    let table = unique_table();
    let db = Postgres::new(&url).unwrap();
    ids_over_the_limit_are_refused_by_the_op(
        Versions::new(db.clone()).table(&table).unwrap(),
        turnstile::optimistic::POSTGRES_MAX_ID_LEN,
    );
    let mut admin = db.connect().unwrap();
    admin.batch_execute(&format!("DROP TABLE {table}")).unwrap();
}

#[cfg(feature = "mysql")]
#[test]
fn a_mysql_id_over_the_limit_is_refused_by_the_op() {
    use mysql::prelude::Queryable;
    use turnstile::resource::MySql;
    let url = server_urls::mysql_url();
    let table = unique_table();
    let db = MySql::new(&url).unwrap();
    ids_over_the_limit_are_refused_by_the_op(
        Versions::new(db.clone()).table(&table).unwrap(),
        turnstile::optimistic::MYSQL_MAX_ID_LEN,
    );
    let mut admin = db.connect().unwrap();
    admin.query_drop(format!("DROP TABLE {table}")).unwrap();
}

#[test]
fn wal_on_an_in_memory_database_is_a_config_error() {
    let strategy = Optimistic::new(Sqlite::new(":memory:"));
    match strategy.run(&Key::whole(), |db| db.read("x")) {
        Err(Error::Config(m)) => assert!(m.contains("wal(false)"), "{m}"),
        other => panic!("expected Config, got {other:?}"),
    }
}

#[test]
fn sqlite_takes_long_ids() {
    let dir = tempfile::tempdir().unwrap();
    let strategy = Optimistic::new(db(dir.path()));
    assert_eq!(VersionStore::max_id_len(strategy.versions().store()), None);
    let id = "i".repeat(1 << 20);
    let written = id.clone();
    strategy
        .run(&Key::whole(), move |db| db.write(&written, "v"))
        .unwrap();
    let read = strategy.run(&Key::whole(), move |db| db.read(&id)).unwrap();
    assert_eq!(read, Some(b"v".to_vec()));
}

/// A panic may hide a MySQL connection whose read timed out, with the late answer still
/// on its way: the op that panicked keeps no such connection for the next one, through
/// `optimistic` and through a lock over the same versioned records (whose `Versions`
/// asks its store). Before, the next read took the late answer for its own.
#[cfg(feature = "mysql")]
#[test]
fn a_panic_on_a_timed_out_mysql_read_leaves_no_connection_behind() {
    use mysql::prelude::Queryable;
    use turnstile::resource::MySql;
    let url = server_urls::mysql_url();
    let table = unique_table();
    let db = MySql::new(&url)
        .unwrap()
        .read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let versions = Versions::new(db.clone()).table(&table).unwrap();
    let optimistic = Optimistic::over(versions.clone());
    let locked = Locked::new(MutexLock::new(), versions)
        .pool_size(1)
        .unwrap();
    let key = Key::whole();
    optimistic
        .run(&key, |db| {
            db.write("a", "A")?;
            db.write("b", "B")
        })
        .unwrap();
    // Its pooled connection open (opening one creates the table, which the lock would hold).
    locked.run(&key, |db| db.read("a")).unwrap();
    let mut admin = MySql::new(&url).unwrap().connect().unwrap();
    let panics_on_a_locked_table = |db: &mut Ctx<'_, Versioned<MySql>>| {
        let a = db.read("a").expect("the read timed out");
        Ok::<_, StoreError>(a)
    };
    let mut check = |what: &str, panicked: &dyn Fn() -> String, next: &dyn Fn() -> String| {
        // The table lock holds the op's read past its 500 ms timeout; it is given up at
        // 800 ms, and the late answer then arrives on the op's old connection.
        admin
            .query_drop(format!("LOCK TABLES {table} WRITE"))
            .unwrap();
        let holder = std::mem::replace(&mut admin, MySql::new(&url).unwrap().connect().unwrap());
        let unlocker = std::thread::spawn(move || {
            let mut holder = holder;
            std::thread::sleep(Duration::from_millis(800));
            holder.query_drop("UNLOCK TABLES").unwrap();
        });
        let panicked = panicked();
        unlocker.join().unwrap();
        std::thread::sleep(Duration::from_millis(200));
        assert!(panicked.contains("Panicked"), "{what}: {panicked}");
        assert_eq!(
            next(),
            "Ok(Some([66]))",
            "{what}: reading b after the panic"
        );
    };
    check(
        "optimistic",
        &|| format!("{:?}", optimistic.run(&key, panics_on_a_locked_table)),
        &|| format!("{:?}", optimistic.run(&key, |db| db.read("b"))),
    );
    check(
        "mutex over versioned records",
        &|| format!("{:?}", locked.run(&key, panics_on_a_locked_table)),
        &|| format!("{:?}", locked.run(&key, |db| db.read("b"))),
    );
    admin.query_drop(format!("DROP TABLE {table}")).unwrap();
}

/// Several threads opening a fresh database at once each create the versions table; a
/// plain `CREATE TABLE IF NOT EXISTS` in autocommit upgrades a read to a write and can
/// fail with SQLITE_BUSY_SNAPSHOT without waiting, which the first ops reported as
/// `Unavailable("database is locked")`.
#[test]
fn threads_opening_a_fresh_database_together_all_succeed() {
    for _round in 0..40 {
        let dir = tempfile::tempdir().unwrap();
        let barrier = Arc::new(std::sync::Barrier::new(4));
        let threads: Vec<_> = (0..4)
            .map(|i| {
                let (path, barrier) = (dir.path().to_owned(), barrier.clone());
                std::thread::spawn(move || {
                    let strategy = Optimistic::new(db(&path));
                    barrier.wait();
                    strategy.run(&Key::new(format!("k{i}")).unwrap(), move |db| {
                        db.write(&format!("k{i}"), "1")
                    })
                })
            })
            .collect();
        for t in threads {
            if let Err(e) = t.join().unwrap() {
                panic!("a first op on a fresh database failed: {e:?}");
            }
        }
    }
}

/// Autocommit under a lock would never apply a `Versioned` handle's writes (they apply at
/// commit): it is refused with a config error — by the registry when the spec is opened,
/// by `Locked` at each call before the op runs, by the queue when it is built — instead
/// of acknowledging ops whose writes are dropped.
#[test]
fn autocommit_over_versioned_records_is_refused() {
    use turnstile::{Transact, TxMode};

    let dir = tempfile::tempdir().unwrap();
    let versions = Versions::new(db(dir.path()));
    assert!(!versions.supports_autocommit());
    let ran = Arc::new(AtomicU32::new(0));
    let autocommit = Locked::new(MutexLock::new(), versions.clone()).tx_mode(TxMode::Autocommit);
    let counted = ran.clone();
    let err = autocommit
        .run(&Key::whole(), move |db| {
            counted.fetch_add(1, Ordering::Relaxed);
            db.write("c", "1")
        })
        .unwrap_err();
    assert!(
        matches!(&err, Error::Config(m) if m.contains("commit")),
        "{err:?}"
    );
    assert_eq!(ran.load(Ordering::Relaxed), 0, "the op must not run");

    let registry = Registry::builtin_versioned();
    let setup = Setup::new(versions.clone()).tx_mode(TxMode::Autocommit);
    assert!(matches!(
        registry.open("mutex", &setup),
        Err(Error::Config(_))
    ));
    #[cfg(feature = "queue")]
    assert!(matches!(
        turnstile::queue::Queue::builder()
            .tx_mode(TxMode::Autocommit)
            .build(versions.clone()),
        Err(Error::Config(_))
    ));
    // `optimistic` has no autocommit to refuse: its mechanism is the commit.
    let optimistic = registry.open("optimistic", &setup).unwrap();
    optimistic
        .run_as(&[Key::whole()], Wait::Default, |db| db.write("c", "1"))
        .unwrap();
    // In a transaction, under the same lock, the writes land.
    let locked = Locked::new(MutexLock::new(), versions).tx_mode(TxMode::Transaction);
    locked.run(&Key::whole(), |db| increment(db, "c")).unwrap();
    assert_eq!(locked.run(&Key::whole(), |db| get(db, "c")).unwrap(), 2);
}

/// Every public way to name a record table refuses a bad name with a config error, and
/// the store's own methods only take a validated [`TableName`], so no unvalidated text
/// reaches their SQL.
#[test]
fn every_table_name_is_validated_once() {
    use turnstile::optimistic::{TableName, VersionStore};
    let dir = tempfile::tempdir().unwrap();
    for bad in ["", "1abc", "a-b", "t; DROP TABLE x", "t\0", &"t".repeat(64)] {
        let err = TableName::new(bad).unwrap_err();
        assert!(
            matches!(err, Error::Config(ref m) if m.contains("version table")),
            "{bad:?}: {err:?}"
        );
        assert!(
            matches!(
                Versions::new(db(dir.path())).table(bad),
                Err(Error::Config(_))
            ),
            "{bad:?}"
        );
    }
    let store = db(dir.path());
    let table = TableName::new("Records_1").unwrap();
    assert_eq!(table.as_str(), "Records_1");
    let mut conn = store.connect().unwrap();
    store.ensure_table(&mut conn, &table).unwrap();
    assert_eq!(store.read(&mut conn, &table, "x").unwrap(), None);
    assert_eq!(
        TableName::default().as_str(),
        turnstile::optimistic::DEFAULT_TABLE
    );
}

/// A column error from a table of another shape: typed, naming the table and the column.
fn column_error(err: &(dyn std::error::Error + 'static)) -> turnstile::optimistic::ColumnTypeError {
    let mut next = Some(err);
    while let Some(e) = next {
        if let Some(c) = e.downcast_ref::<turnstile::optimistic::ColumnTypeError>() {
            return c.clone();
        }
        next = e.source();
    }
    panic!("no ColumnTypeError in {err:?}");
}

/// Reads a record from a pre-existing table whose `version` column holds text: the op
/// gets a typed store error naming the table and the column (before: a panic on the
/// servers, a bare driver error on SQLite).
fn read_of_a_foreign_shape<S: turnstile::optimistic::VersionStore>(
    versions: Versions<S>,
    table: &str,
    column: &str,
) {
    let strategy = Optimistic::over(versions);
    let err = strategy.run(&Key::whole(), |db| db.read("x")).unwrap_err();
    let Error::Op(store) = err else {
        panic!("not the op's store error: {err:?}")
    };
    let c = column_error(&store);
    assert_eq!((c.table.as_str(), c.column), (table, column), "{store}");
    let text = store.to_string();
    assert!(text.contains(table) && text.contains(column), "{text}");
    assert!(!store.is_busy());
}

#[test]
fn a_sqlite_table_of_another_shape_is_a_typed_error() {
    use turnstile::Transact;
    let dir = tempfile::tempdir().unwrap();
    let store = db(dir.path());
    let admin = store.connect().unwrap();
    admin
        .execute_batch(
            "CREATE TABLE odd (id TEXT PRIMARY KEY, value BLOB NOT NULL, version TEXT NOT NULL);
             INSERT INTO odd VALUES ('x', X'00', 'abc');
             CREATE TABLE odd2 (id TEXT PRIMARY KEY, value TEXT NOT NULL, version INTEGER);
             INSERT INTO odd2 VALUES ('x', 'text', 1);
             CREATE TABLE odd3 (id TEXT PRIMARY KEY, value BLOB NOT NULL, version INTEGER);
             INSERT INTO odd3 VALUES ('x', X'00', -1);",
        )
        .unwrap();
    read_of_a_foreign_shape(
        Versions::new(store.clone()).table("odd").unwrap(),
        "odd",
        "version",
    );
    read_of_a_foreign_shape(
        Versions::new(store.clone()).table("odd2").unwrap(),
        "odd2",
        "value",
    );
    read_of_a_foreign_shape(
        Versions::new(store.clone()).table("odd3").unwrap(),
        "odd3",
        "version",
    );
    // At commit: a record read, then changed to text before the commit re-checks it.
    let versions = Versions::new(store.clone()).table("odd4").unwrap();
    let mut a = versions.connect().unwrap();
    versions.begin(&mut a, &[]).unwrap();
    a.write("y", "1").unwrap();
    assert_eq!(a.read_record("z").unwrap(), None);
    admin
        .execute_batch("INSERT INTO odd4 VALUES ('z', X'00', 'abc')")
        .unwrap();
    let err = versions.commit(&mut a).unwrap_err();
    let turnstile::TransactError::Failed(e) = err else {
        panic!("{err:?}")
    };
    let c = column_error(&*e);
    assert_eq!((c.table.as_str(), c.column), ("odd4", "version"));
}

/// `Foo` and `foo` name one table (unquoted, SQLite is case-insensitive): one identity,
/// so one lock namespace.
#[test]
fn a_table_name_in_another_case_is_the_same_identity() {
    let dir = tempfile::tempdir().unwrap();
    let upper = Versions::new(db(dir.path())).table("Foo").unwrap();
    let lower = Versions::new(db(dir.path())).table("foo").unwrap();
    assert_eq!(upper.identity(), lower.identity());
    assert_ne!(
        upper.identity(),
        Versions::new(db(dir.path()))
            .table("bar")
            .unwrap()
            .identity()
    );
    assert_eq!(
        Versions::new(db(dir.path())).identity(),
        Versions::new(db(dir.path()))
            .table(&turnstile::optimistic::DEFAULT_TABLE.to_uppercase())
            .unwrap()
            .identity()
    );
    // Both spellings reach the same records.
    Optimistic::over(upper)
        .run(&Key::whole(), |db| db.write("r", "1"))
        .unwrap();
    let got = Optimistic::over(lower)
        .run(&Key::whole(), |db| db.read("r"))
        .unwrap();
    assert_eq!(got, Some(b"1".to_vec()));
}

#[cfg(feature = "postgres")]
#[test]
fn a_postgres_table_of_another_shape_is_a_typed_error() {
    use turnstile::resource::Postgres;
    let url = server_urls::postgres_url();
    let db = Postgres::new(&url).unwrap();
    let mut admin = db.connect().unwrap();
    let (t1, t2) = (unique_table(), format!("{}_b", unique_table()));
    admin
        .batch_execute(&format!(
            "CREATE TABLE {t1} (id TEXT PRIMARY KEY, value BYTEA NOT NULL, version TEXT NOT NULL);
             INSERT INTO {t1} VALUES ('x', '\\x00', 'abc');
             CREATE TABLE {t2} (id TEXT PRIMARY KEY, value TEXT NOT NULL, version BIGINT NOT NULL);
             INSERT INTO {t2} VALUES ('x', 'text', 1);"
        ))
        .unwrap();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        read_of_a_foreign_shape(
            Versions::new(db.clone()).table(&t1).unwrap(),
            &t1,
            "version",
        );
        read_of_a_foreign_shape(Versions::new(db.clone()).table(&t2).unwrap(), &t2, "value");
        // Unquoted, PostgreSQL folds names to lower case: one table, one identity.
        assert_eq!(
            Versions::new(db.clone()).table("Foo").unwrap().identity(),
            Versions::new(db.clone()).table("foo").unwrap().identity()
        );
    }));
    admin
        .batch_execute(&format!("DROP TABLE {t1}; DROP TABLE {t2}"))
        .unwrap();
    if let Err(p) = result {
        std::panic::resume_unwind(p);
    }
}

#[cfg(feature = "mysql")]
#[test]
fn a_mysql_table_of_another_shape_is_a_typed_error() {
    use mysql::prelude::Queryable;
    use turnstile::resource::MySql;
    let url = server_urls::mysql_url();
    let db = MySql::new(&url).unwrap();
    let mut admin = db.connect().unwrap();
    let (t1, t2) = (unique_table(), format!("{}_b", unique_table()));
    admin
        .query_drop(format!(
            "CREATE TABLE {t1} (id VARBINARY(255) PRIMARY KEY, value LONGBLOB NOT NULL,
                                version TEXT NOT NULL)"
        ))
        .unwrap();
    admin
        .query_drop(format!("INSERT INTO {t1} VALUES ('x', x'00', 'abc')"))
        .unwrap();
    admin
        .query_drop(format!(
            "CREATE TABLE {t2} (id VARBINARY(255) PRIMARY KEY, value LONGBLOB NOT NULL,
                                version BIGINT NOT NULL)"
        ))
        .unwrap();
    admin
        .query_drop(format!("INSERT INTO {t2} VALUES ('x', x'00', -1)"))
        .unwrap();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        read_of_a_foreign_shape(
            Versions::new(db.clone()).table(&t1).unwrap(),
            &t1,
            "version",
        );
        read_of_a_foreign_shape(
            Versions::new(db.clone()).table(&t2).unwrap(),
            &t2,
            "version",
        );
    }));
    admin.query_drop(format!("DROP TABLE {t1}, {t2}")).unwrap();
    if let Err(p) = result {
        std::panic::resume_unwind(p);
    }
}
