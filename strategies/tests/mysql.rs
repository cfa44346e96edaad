//! The `mysql` lock backend and the MySQL resource, against a real MariaDB / MySQL
//! server (`TURNSTILE_MYSQL_URL`, default `mysql://root@127.0.0.1:3306/test`). The tests
//! fail, not skip, when the server is absent.
#![cfg(all(feature = "mysql", feature = "sqlite", feature = "mutex"))]

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mysql::prelude::Queryable;
use turnstile::lock::{GetLockNull, MutexLock, MySqlLock, mysql_server_lock_name};
use turnstile::resource::MySql;
use turnstile::spec::{Registry, Setup};
use turnstile::sqlite::{Sqlite, Synchronous, rusqlite};
use turnstile::{
    Connect, Error, Fence, Key, KeyError, Lease, Lock, LockName, Locked, Scope, Serializer,
    Transact, TransactError, TxMode, Wait,
};

#[path = "support/servers.rs"]
mod servers;

#[path = "support/cut_proxy.rs"]
mod cut_proxy;
use servers::{Section, increment, unique};

#[path = "support/server_urls.rs"]
mod server_urls;
use server_urls::{mysql_admin as admin, mysql_url as url};

fn lock() -> MySqlLock {
    MySqlLock::new(&url()).unwrap()
}

fn name(key: &str) -> LockName {
    LockName::new("test", Key::new(key).unwrap())
}

fn sqlite_counter(dir: &std::path::Path) -> Sqlite {
    let db = Sqlite::new(dir.join("c.db")).synchronous(Synchronous::Normal);
    let conn = db.connect().unwrap();
    conn.execute_batch("CREATE TABLE counter (id INTEGER PRIMARY KEY, n INTEGER); INSERT INTO counter VALUES (1, 0);")
        .unwrap();
    db
}

#[test]
fn counter_through_the_lock_on_autocommit_sqlite_is_exact() {
    let dir = tempfile::tempdir().unwrap();
    let db = sqlite_counter(dir.path());
    // Locked enforces no fence in autocommit mode, so the lock issues none.
    let lock = lock().fencing(false);
    assert!(!lock.capabilities().fences);
    let strategy = Arc::new(Locked::new(lock, db.clone()).tx_mode(TxMode::Autocommit));
    let section = Section::new();
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let (s, section) = (strategy.clone(), section.clone());
            std::thread::spawn(move || {
                for _ in 0..5 {
                    let section = section.clone();
                    s.run(&Key::whole(), move |db| increment(db, &section))
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

/// 8 threads × 12 read-pause-write increments of a counter in MySQL through `spec`, opened
/// from the registry over the MySQL resource as the harness builds it: the final count,
/// and the fence each op saw, in the order the ops ran.
fn counter_through(spec: &str) -> (Option<i64>, Vec<Fence>) {
    let table = unique("turnstile_counter");
    let mut admin = admin();
    admin
        .query_drop(format!(
            "CREATE TABLE {table} (id INT PRIMARY KEY, n BIGINT NOT NULL) ENGINE = InnoDB"
        ))
        .unwrap();
    admin
        .query_drop(format!("INSERT INTO {table} VALUES (1, 0)"))
        .unwrap();
    let setup = Setup::new(MySql::new(&url()).unwrap());
    let strategy = Arc::new(Registry::builtin_mysql().open(spec, &setup).unwrap());
    let caps = strategy.capabilities();
    assert!(caps.fences && caps.scope == Scope::Hosts, "{caps:?}");
    let key = Key::new(table.clone()).unwrap();
    let fences = Arc::new(std::sync::Mutex::new(Vec::new()));
    let section = Section::new();
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let (s, key, table, fences, section) = (
                strategy.clone(),
                key.clone(),
                table.clone(),
                fences.clone(),
                section.clone(),
            );
            std::thread::spawn(move || {
                for _ in 0..12 {
                    let (table, fences, section) = (table.clone(), fences.clone(), section.clone());
                    s.run_as(std::slice::from_ref(&key), Wait::Default, move |conn| {
                        section.enter(|| {
                            let n: Option<i64> =
                                conn.query_first(format!("SELECT n FROM {table} WHERE id = 1"))?;
                            std::thread::sleep(Duration::from_millis(2));
                            conn.exec_drop(
                                format!("UPDATE {table} SET n = ? WHERE id = 1"),
                                (n.unwrap() + 1,),
                            )?;
                            fences.lock().unwrap().push(conn.fence().unwrap());
                            Ok::<_, mysql::Error>(())
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
    let n: Option<i64> = admin
        .query_first(format!("SELECT n FROM {table} WHERE id = 1"))
        .unwrap();
    admin.query_drop(format!("DROP TABLE {table}")).unwrap();
    let fences = fences.lock().unwrap().clone();
    (n, fences)
}

#[test]
fn counter_on_the_mysql_resource_is_exact_and_fenced() {
    let (n, fences) = counter_through(&url());
    assert_eq!(n, Some(96));
    // Every grant got its own token, rising.
    assert!(fences.windows(2).all(|w| w[0] < w[1]), "{fences:?}");
}

#[test]
fn counter_through_a_queue_over_the_mysql_lock_is_exact_and_fenced_per_batch() {
    let (n, fences) = counter_through(&format!("queue+{}", url()));
    assert_eq!(n, Some(96));
    // The ops of one batch share its lease's token; later batches have higher ones.
    assert!(fences.windows(2).all(|w| w[0] <= w[1]), "{fences:?}");
}

#[test]
fn resource_records_fences_refuses_stale_ones_and_forgets_them() {
    servers::resource_records_fences_refuses_stale_ones_and_forgets_them(
        MySql::new(&url()).unwrap(),
    );
}

#[test]
#[cfg(feature = "queue")]
fn an_op_that_ends_the_transaction_gets_transaction_ended() {
    servers::an_op_that_ends_the_transaction_gets_transaction_ended(MySql::new(&url()).unwrap());
}

#[test]
#[cfg(feature = "queue")]
fn a_queue_in_autocommit_rolls_back_what_an_op_left_open() {
    servers::a_queue_in_autocommit_rolls_back_what_an_op_left_open(MySql::new(&url()).unwrap());
}

#[test]
fn lock_excludes_times_out_and_fences_rise() {
    let lock = lock();
    let n = name(&unique("excl"));
    let a = lock.acquire(&n, None).unwrap();
    let start = Instant::now();
    // Sub-second deadline: polled with GET_LOCK(name, 0).
    let err = lock
        .acquire(&n, Some(Instant::now() + Duration::from_millis(300)))
        .unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
    assert!(start.elapsed() >= Duration::from_millis(300));
    assert!(start.elapsed() < Duration::from_secs(10));
    // Whole seconds plus a fraction.
    let start = Instant::now();
    let err = lock
        .acquire(&n, Some(Instant::now() + Duration::from_millis(1300)))
        .unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
    assert!(start.elapsed() >= Duration::from_millis(1300));
    // A deadline in the past tries once.
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
    // Released on drop: another acquire succeeds at once.
    drop(lock.acquire(&n, Some(Instant::now())).unwrap());
}

/// `GET_LOCK` answers NULL when its wait is killed (`KILL QUERY` from another session):
/// the waiter's acquire ends with the typed backend error — not a grant, not a timeout,
/// not another wait — and the lock keeps working.
#[test]
fn a_killed_get_lock_wait_is_a_typed_backend_error() {
    let lock = lock();
    let n = name(&unique("null"));
    let server_name = mysql_server_lock_name(&n);
    // The waiter's lock has one idle connection, whose session id we learn from a lease:
    // its next acquire waits on that session (the processlist shows only
    // `SELECT GET_LOCK(?, ?)`, not the name).
    let waiting = MySqlLock::new(&url()).unwrap();
    let probe = waiting.acquire(&name(&unique("probe")), None).unwrap();
    let waiter_id = probe.connection_id().unwrap();
    probe.release().unwrap();
    let held = lock.acquire(&n, None).unwrap();
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let n2 = n.clone();
    // A deadline far beyond the test's patience: ending in time cannot be a timeout.
    let waiter = std::thread::spawn(move || {
        let result = waiting.acquire(&n2, Some(Instant::now() + Duration::from_secs(600)));
        done_tx.send(()).unwrap();
        result.map(|lease| lease.fence())
    });
    let mut admin = admin();
    let patience = Instant::now() + Duration::from_secs(20);
    loop {
        let state: Option<Option<String>> = admin
            .exec_first(
                "SELECT STATE FROM information_schema.PROCESSLIST WHERE ID = ?",
                (waiter_id,),
            )
            .unwrap();
        if state.flatten().as_deref() == Some("User lock") {
            break;
        }
        assert!(
            Instant::now() < patience,
            "session {waiter_id} never waited in GET_LOCK"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    admin.exec_drop("KILL QUERY ?", (waiter_id,)).unwrap();
    done_rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the killed waiter's acquire returned");
    let err = waiter.join().unwrap().unwrap_err();
    let source = match &err {
        Error::Unavailable(e) => e,
        other => panic!("expected a backend error, got {other:?}"),
    };
    let null = source.downcast_ref::<GetLockNull>();
    assert_eq!(null.map(|n| &n.name), Some(&server_name), "{err}");
    // Named as the lock's other errors are.
    assert!(
        err.to_string()
            .contains(&format!("mysql at {}: GET_LOCK(", lock.backend_id())),
        "{err}"
    );
    // The holder was never disturbed; after it, the name is granted as usual.
    held.check().unwrap();
    let first = held.fence();
    held.release().unwrap();
    let again = lock.acquire(&n, Some(Instant::now())).unwrap();
    assert!(again.fence() > first);
    drop(again);
}

#[test]
fn a_waiter_gets_the_lock_when_the_holder_releases() {
    let lock = lock();
    let n = name(&unique("wake"));
    let held = lock.acquire(&n, None).unwrap();
    let (l2, n2) = (lock.clone(), n.clone());
    let waiter = std::thread::spawn(move || {
        l2.acquire(&n2, Some(Instant::now() + Duration::from_secs(20)))
            .map(|lease| lease.fence())
    });
    std::thread::sleep(Duration::from_millis(200));
    let first = held.fence();
    drop(held);
    let second = waiter.join().unwrap().unwrap();
    assert!(second > first);
}

#[test]
fn names_long_cased_and_hashed() {
    // Empty names never reach the server (MariaDB's GET_LOCK('') returns NULL).
    assert_eq!(Key::new(""), Err(KeyError::Empty));
    assert!(matches!(
        Key::new("k".repeat(10_000)),
        Err(KeyError::TooLong { .. })
    ));
    let lock = lock();
    let tag = unique("n");
    // A 65-character key, and a 10,000-character namespace: hashed, and still exclusive.
    let long_key = LockName::new("t", Key::new(format!("{tag}{}", "x".repeat(65))).unwrap());
    let long_ns = LockName::new(
        format!("{tag}{}", "y".repeat(10_000)),
        Key::new("k").unwrap(),
    );
    for n in [&long_key, &long_ns] {
        let server = mysql_server_lock_name(n);
        assert!(
            server.starts_with("turnstile#") && server.len() <= 64,
            "{server}"
        );
        let held = lock.acquire(n, Some(Instant::now())).unwrap();
        assert!(matches!(
            lock.acquire(n, Some(Instant::now())),
            Err(Error::Timeout { .. })
        ));
        drop(held);
    }
    // Keys differing only in case are different locks (MySQL compares lock names
    // case-insensitively, MariaDB does not; turnstile hashes cased names on both).
    let lower = name(&tag.to_lowercase());
    let upper = name(&tag.to_uppercase());
    assert_ne!(
        mysql_server_lock_name(&lower),
        mysql_server_lock_name(&upper)
    );
    let a = lock.acquire(&lower, Some(Instant::now())).unwrap();
    let b = lock.acquire(&upper, Some(Instant::now())).unwrap();
    assert!(matches!(
        lock.acquire(&upper, Some(Instant::now())),
        Err(Error::Timeout { .. })
    ));
    drop((a, b));
    // A raw name is readable and never collides with a hashed one.
    let short = name("row-1");
    assert_eq!(mysql_server_lock_name(&short), "test|row-1");
    let tricky = LockName::new("turnstile#abc", Key::new("k").unwrap());
    assert!(mysql_server_lock_name(&tricky).starts_with("turnstile#"));
    assert_ne!(mysql_server_lock_name(&tricky), "turnstile#abc|k");
}

fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

#[test]
fn server_down_wrong_password_and_bad_urls_are_typed() {
    // The credential checks below mean something only with the real server up.
    drop(admin());
    let down = MySqlLock::new(&format!("mysql://root@127.0.0.1:{}/test", closed_port())).unwrap();
    let start = Instant::now();
    let err = down
        .acquire(&name("x"), Some(Instant::now() + Duration::from_secs(2)))
        .unwrap_err();
    assert!(matches!(err, Error::Unavailable(_)), "{err:?}");
    assert!(start.elapsed() < Duration::from_secs(10));

    let mut parsed: mysql::Opts = mysql::Opts::from_url(&url()).unwrap();
    parsed = mysql::OptsBuilder::from_opts(parsed)
        .pass(Some("certainly-wrong"))
        .into();
    let bad = format!(
        "mysql://{}:certainly-wrong@{}:{}/{}",
        parsed.get_user().unwrap_or("root"),
        parsed.get_ip_or_hostname(),
        parsed.get_tcp_port(),
        parsed.get_db_name().unwrap_or("test")
    );
    let err = MySqlLock::new(&bad)
        .unwrap()
        .acquire(&name("x"), Some(Instant::now() + Duration::from_secs(5)))
        .unwrap_err();
    assert!(matches!(err, Error::Unavailable(_)), "{err:?}");
    assert!(!format!("{err}").contains("certainly-wrong"));
    // The resource opener fails the same way, through Locked: Unavailable.
    let strategy = Locked::new(MutexLock::new(), MySql::new(&bad).unwrap());
    let err = strategy
        .run(&Key::whole(), |_| Ok::<_, mysql::Error>(()))
        .unwrap_err();
    assert!(matches!(err, Error::Unavailable(_)), "{err:?}");

    assert!(matches!(
        Locked::new(lock(), MySql::new(&url()).unwrap()).timeout(Some(Duration::MAX)),
        Err(Error::Config(_))
    ));
    for url in ["mysql://", "mysql://h:notaport/db", "http://h/db"] {
        assert!(
            matches!(MySqlLock::new(url), Err(Error::Config(_))),
            "{url}"
        );
        assert!(matches!(MySql::new(url), Err(Error::Config(_))), "{url}");
    }
}

#[test]
fn killing_the_holders_session_loses_the_lease_and_rolls_back() {
    let dir = tempfile::tempdir().unwrap();
    let db = Sqlite::new(dir.path().join("k.db")).synchronous(Synchronous::Normal);
    db.connect()
        .unwrap()
        .execute_batch("CREATE TABLE log (who TEXT)")
        .unwrap();
    let strategy = Arc::new(Locked::new(lock(), db.clone()));
    let key = Key::new(unique("kill")).unwrap();
    // Over SQLite (one writer per file) Locked takes one whole-database lock.
    let server_name = mysql_server_lock_name(&LockName::new(db.identity(), Key::whole()));
    let (in_section_tx, in_section_rx) = std::sync::mpsc::channel();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let go_rx = Arc::new(std::sync::Mutex::new(go_rx));
    let (s, k) = (strategy.clone(), key.clone());
    let holder = std::thread::spawn(move || {
        s.run(&k, move |conn| {
            conn.execute("INSERT INTO log VALUES ('holder')", [])?;
            in_section_tx.send(()).unwrap();
            go_rx.lock().unwrap().recv().unwrap();
            Ok::<_, rusqlite::Error>(())
        })
    });
    in_section_rx.recv_timeout(Duration::from_secs(20)).unwrap();
    let mut admin = admin();
    let id: Option<Option<u64>> = admin
        .exec_first("SELECT IS_USED_LOCK(?)", (&server_name,))
        .unwrap();
    let id = id.flatten().expect("the holder's session holds the lock");
    admin.exec_drop("KILL CONNECTION ?", (id,)).unwrap();
    let (s, k) = (strategy.clone(), key.clone());
    let waiter = std::thread::spawn(move || {
        s.run_timeout(&k, Duration::from_secs(20), |conn| {
            conn.execute("INSERT INTO log VALUES ('waiter')", [])
        })
    });
    go_tx.send(()).unwrap();
    let held = holder.join().unwrap();
    assert!(matches!(held, Err(Error::LeaseLost)), "{held:?}");
    waiter.join().unwrap().unwrap();
    let conn = db.connect().unwrap();
    let who: Vec<String> = conn
        .prepare("SELECT who FROM log")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(who, ["waiter"]);
}

// ---- Seed 004: send each notification exactly once -------------------------------------

const NOTIFICATIONS: u32 = 200;
const PROCESSES: usize = 4;
const THREADS: usize = 16;
const PER_THREAD: u32 = 50;

/// The notify-once op: if not sent, "send" (append to a log file, outside the database
/// transaction, like the seed's mail) and mark sent. The pause between the check and the
/// effect is where two unexcluded senders meet.
fn notify(
    conn: &mut mysql::Conn,
    table: &str,
    id: u32,
    log: &std::path::Path,
) -> Result<(), mysql::Error> {
    let sent: Option<bool> =
        conn.exec_first(format!("SELECT sent FROM {table} WHERE id = ?"), (id,))?;
    if sent == Some(false) {
        std::thread::sleep(Duration::from_millis(20));
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(log)?;
        f.write_all(format!("{id}\n").as_bytes())?;
        conn.exec_drop(
            format!("UPDATE {table} SET sent = TRUE WHERE id = ?"),
            (id,),
        )?;
    }
    Ok(())
}

fn seed_004_worker(table: &str, log: &std::path::Path, process: usize) {
    let strategy = Arc::new(
        Locked::new(lock(), MySql::new(&url()).unwrap())
            .pool_size(THREADS)
            .unwrap(),
    );
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let (s, table, log) = (strategy.clone(), table.to_owned(), log.to_owned());
            std::thread::spawn(move || {
                let offset =
                    ((process * THREADS + t) as u32 * NOTIFICATIONS) / (PROCESSES * THREADS) as u32;
                for i in 0..PER_THREAD {
                    let id = (offset + i) % NOTIFICATIONS;
                    let key = Key::new(format!("{table}/{id}")).unwrap();
                    let (table, log) = (table.clone(), log.clone());
                    s.run(&key, move |conn| notify(conn, &table, id, &log))
                        .unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

fn notification_table(admin: &mut mysql::Conn) -> String {
    let table = unique("turnstile_notify");
    admin
        .query_drop(format!(
            "CREATE TABLE {table} (id INT PRIMARY KEY, sent BOOLEAN NOT NULL) ENGINE = InnoDB"
        ))
        .unwrap();
    admin
        .exec_batch(
            format!("INSERT INTO {table} VALUES (?, FALSE)"),
            (0..NOTIFICATIONS).map(|id| (id,)),
        )
        .unwrap();
    table
}

fn sent_ids(log: &std::path::Path) -> Vec<u32> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect()
}

/// Child-process body of `seed_004_each_notification_is_sent_exactly_once`.
#[test]
#[ignore = "child process of seed_004_each_notification_is_sent_exactly_once"]
fn seed_004_child() {
    let table = std::env::var("SEED004_TABLE").unwrap();
    let log = std::env::var("SEED004_LOG").unwrap();
    let process: usize = std::env::var("SEED004_PROCESS").unwrap().parse().unwrap();
    seed_004_worker(&table, std::path::Path::new(&log), process);
}

#[test]
fn seed_004_each_notification_is_sent_exactly_once() {
    let mut admin = admin();
    let table = notification_table(&mut admin);
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("sent.log");
    let children: Vec<_> = (0..PROCESSES)
        .map(|p| {
            std::process::Command::new(std::env::current_exe().unwrap())
                .args(["--exact", "seed_004_child", "--ignored", "--quiet"])
                .env("SEED004_TABLE", &table)
                .env("SEED004_LOG", &log)
                .env("SEED004_PROCESS", p.to_string())
                // The test harness reports a child's panic on its stdout.
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    // Wait for every child before judging any.
    let failures: Vec<String> = children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .filter(|out| !out.status.success())
        .map(|out| String::from_utf8_lossy(&out.stdout).into_owned())
        .collect();
    let ok = failures.is_empty();
    let unsent: Option<i64> = admin
        .query_first(format!("SELECT COUNT(*) FROM {table} WHERE NOT sent"))
        .unwrap();
    admin.query_drop(format!("DROP TABLE {table}")).unwrap();
    assert!(ok, "a worker process failed: {failures:#?}");
    let mut ids = sent_ids(&log);
    assert_eq!(
        ids.len(),
        NOTIFICATIONS as usize,
        "some notification was sent twice or never"
    );
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), NOTIFICATIONS as usize);
    assert_eq!(unsent, Some(0));
}

#[test]
fn seed_004_without_a_lock_sends_duplicates() {
    // The control: the same op with nothing excluding. If this ever passes clean, the
    // test above proves nothing.
    let mut admin = admin();
    let table = notification_table(&mut admin);
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("sent.log");
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let (table, log) = (table.clone(), log.clone());
            std::thread::spawn(move || {
                let mut conn = MySql::new(&url()).unwrap().connect().unwrap();
                for id in 0..20 {
                    notify(&mut conn, &table, id, &log).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    admin.query_drop(format!("DROP TABLE {table}")).unwrap();
    let ids = sent_ids(&log);
    let mut distinct = ids.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert!(
        ids.len() > distinct.len(),
        "no duplicate without a lock: the check is blind"
    );
}

#[test]
fn busy_errors_are_classified_and_savepoints_undo_only_their_part() {
    let table = unique("turnstile_busy");
    let mut admin = admin();
    admin
        .query_drop(format!(
            "CREATE TABLE {table} (id INT PRIMARY KEY, v INT) ENGINE = InnoDB"
        ))
        .unwrap();
    admin
        .query_drop(format!("INSERT INTO {table} VALUES (1, 0)"))
        .unwrap();
    let db = MySql::new(&url()).unwrap();
    let (mut a, mut b) = (db.connect().unwrap(), db.connect().unwrap());
    db.begin(&mut a, &[]).unwrap();
    a.query_drop(format!("UPDATE {table} SET v = 1 WHERE id = 1"))
        .unwrap();
    b.query_drop("SET SESSION innodb_lock_wait_timeout = 1")
        .unwrap();
    db.begin(&mut b, &[]).unwrap();
    let err = b
        .query_drop(format!("UPDATE {table} SET v = 2 WHERE id = 1"))
        .unwrap_err();
    assert!(db.is_busy(&err), "{err}");
    assert!(!db.is_busy(&mysql::Error::from(std::io::Error::other("x"))));
    db.rollback(&mut b).unwrap();
    // Savepoints: undo the second write only.
    db.savepoint(&mut a, 1).unwrap();
    a.query_drop(format!("UPDATE {table} SET v = 5 WHERE id = 1"))
        .unwrap();
    db.rollback_to_savepoint(&mut a, 1).unwrap();
    db.savepoint(&mut a, 2).unwrap();
    a.query_drop(format!("UPDATE {table} SET v = v + 10 WHERE id = 1"))
        .unwrap();
    db.release_savepoint(&mut a, 2).unwrap();
    db.commit(&mut a).unwrap();
    let v: Option<i32> = admin
        .query_first(format!("SELECT v FROM {table} WHERE id = 1"))
        .unwrap();
    admin.query_drop(format!("DROP TABLE {table}")).unwrap();
    assert_eq!(v, Some(11));
}

#[test]
fn concurrent_fence_claims_cannot_interleave() {
    let db = MySql::new(&url()).unwrap();
    let backend = unique("fence-race");
    servers::concurrent_fence_claims_cannot_interleave(&db, &backend);
    db.connect()
        .unwrap()
        .exec_drop(
            "DELETE FROM turnstile_fences WHERE backend = ?",
            (&backend,),
        )
        .unwrap();
}

/// Child-process body of `a_killed_holder_process_frees_the_lock`: takes the lock, says
/// so, and waits to be killed.
#[test]
#[ignore = "child process of a_killed_holder_process_frees_the_lock"]
fn holder_child() {
    let key = std::env::var("HOLDER_KEY").unwrap();
    let lease = lock().acquire(&name(&key), None).unwrap();
    println!("held {}", lease.connection_id().unwrap());
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
    let held = lines
        .find_map(|l| l.ok().filter(|l| l.starts_with("held ")))
        .expect("the child took the lock");
    let lock = lock();
    assert!(matches!(
        lock.acquire(&name(&key), Some(Instant::now())),
        Err(Error::Timeout { .. })
    ));
    // SIGKILL: no destructor runs; the server frees the lock when the socket closes.
    child.kill().unwrap();
    child.wait().unwrap();
    let lease = lock
        .acquire(&name(&key), Some(Instant::now() + Duration::from_secs(20)))
        .unwrap();
    assert_ne!(
        held,
        format!("held {}", lease.connection_id().unwrap()),
        "a new session holds it"
    );
}

/// `mysql://…` and `queue+mysql://…` specs connect when they are opened, as the Redis
/// specs ping: a server out of reach is `Unavailable` there, over SQLite data and over
/// MySQL data, rather than at the first op; the same specs on the real server open.
#[test]
fn lock_specs_on_a_server_out_of_reach_are_unavailable_at_open() {
    let down = format!("mysql://root@127.0.0.1:{}/test", closed_port());
    let dir = tempfile::tempdir().unwrap();
    let sqlite = Setup::new(Sqlite::new(dir.path().join("a.db")));
    let server = Setup::new(MySql::new(&url()).unwrap());
    let mut specs = vec![down.clone()];
    #[cfg(feature = "queue")]
    specs.push(format!("queue+{down}"));
    for spec in &specs {
        let err = Registry::builtin().open(spec, &sqlite).err();
        assert!(
            matches!(err, Some(Error::Unavailable(_))),
            "{spec}: {err:?}"
        );
        let err = Registry::builtin_mysql().open(spec, &server).err();
        assert!(
            matches!(err, Some(Error::Unavailable(_))),
            "{spec}: {err:?}"
        );
        let up = spec.replace(&down, &url());
        Registry::builtin()
            .open(&up, &sqlite)
            .unwrap_or_else(|e| panic!("{up}: {e}"));
    }
}

/// The server closes connections that sat idle (its `wait_timeout`, a restart, an
/// administrator's `KILL`), where the client cannot see it without a round trip: after a
/// second idle, the next op runs on a new connection instead of failing, under `mutex`'s
/// pool and the queue's worker alike.
#[test]
fn a_connection_the_server_closed_while_idle_is_replaced_before_the_next_op() {
    fn connection_id(c: &mut mysql::Conn) -> Result<u64, mysql::Error> {
        c.query_first("SELECT CONNECTION_ID()")
            .map(|id: Option<u64>| id.unwrap_or(0))
    }
    let survives_an_idle_kill = |run: &dyn Fn() -> Result<u64, String>| {
        let id = run().unwrap();
        admin().exec_drop("KILL ?", (id,)).unwrap();
        std::thread::sleep(Duration::from_millis(1100));
        let next = run().expect("the op after an idle kill failed");
        assert_ne!(next, id);
    };
    let setup = Setup::new(MySql::new(&url()).unwrap());
    let mutex = Registry::builtin_mysql().open("mutex", &setup).unwrap();
    let key = [Key::new("k").unwrap()];
    survives_an_idle_kill(&|| {
        mutex
            .run_as(&key, Wait::Default, |c| connection_id(c))
            .map_err(|e| e.to_string())
    });
    #[cfg(feature = "queue")]
    {
        let queue = turnstile::queue::Queue::new(MySql::new(&url()).unwrap()).unwrap();
        survives_an_idle_kill(&|| {
            queue
                .run(&Key::whole(), |c| connection_id(c))
                .map_err(|e| e.to_string())
        });
    }
}

#[test]
#[cfg(feature = "queue")]
fn a_commit_whose_answer_is_lost_is_never_taken_for_a_rollback() {
    let (proxy, cut_url) = proxied();
    servers::a_commit_whose_answer_is_lost_is_never_taken_for_a_rollback(
        MySql::new(&url()).unwrap(),
        MySql::new(&cut_url).unwrap(),
        &|| proxy.arm(),
        &|| proxy.cuts(),
    );
}

/// A proxy in front of the test server, and a URL through it (over TCP only: the driver
/// would move a loopback connection to the server's socket).
fn proxied() -> (cut_proxy::CutProxy, String) {
    let (target, via) = cut_proxy::through_proxy(&url());
    let proxy = cut_proxy::CutProxy::start(&target);
    let through = via(proxy.port());
    let sep = if through.contains('?') { '&' } else { '?' };
    let through = format!("{through}{sep}prefer_socket=false");
    (proxy, through)
}

#[test]
fn a_read_timeout_bounds_a_server_that_stops_answering() {
    let (proxy, through) = proxied();
    let db = MySql::new(&through)
        .unwrap()
        .read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let strategy = Arc::new(Locked::new(MutexLock::new(), db.clone()));
    let key = Key::whole();
    strategy.run(&key, |c| c.query_drop("SELECT 1")).unwrap();
    proxy.stall();
    let (done_tx, done) = std::sync::mpsc::channel();
    let s = strategy.clone();
    std::thread::spawn(move || {
        let _ = done_tx.send(s.run(&Key::whole(), |c| c.query_drop("SELECT 1")));
    });
    let err = done
        .recv_timeout(Duration::from_secs(30))
        .expect("a server that stopped answering hung the op")
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Op(_) | Error::Resource(_) | Error::Unavailable(_)
        ),
        "{err:?}"
    );
    proxy.resume();
    // The broken connection was dropped: the next op gets a fresh one.
    strategy.run(&key, |c| c.query_drop("SELECT 1")).unwrap();

    for bad in [Some(Duration::ZERO), Some(Duration::MAX)] {
        assert!(
            matches!(db.clone().read_timeout(bad), Err(Error::Config(_))),
            "{bad:?}"
        );
    }
}

#[test]
fn a_server_that_never_answers_the_login_fails_within_the_connect_timeout() {
    let (proxy, through) = proxied();
    proxy.stall();
    servers::a_login_never_answered_fails_within_the_connect_timeout(
        MySql::new(&through)
            .unwrap()
            .connect_timeout(Duration::from_millis(500))
            .unwrap(),
    );
}

/// A MySQL URL of a server that accepts connections and never answers.
fn silent_server() -> String {
    format!("mysql://root@{}/test", server_urls::silent_server())
}

/// A server that accepts the connection and never answers: a lock's login (whose reads
/// have a 15 s timeout) and a resource's with a read timeout longer than the connect
/// timeout end within the connect timeout, and say so in words (not the system's
/// `Resource temporarily unavailable`), the lock's naming its server.
#[test]
fn a_silent_server_fails_logins_within_the_connect_timeout_in_words() {
    const CONNECT: Duration = Duration::from_secs(1);
    let url = silent_server();
    let within_bounds = |start: Instant| {
        let took = start.elapsed();
        assert!(took < CONNECT + Duration::from_secs(5), "{took:?}");
    };
    let lock = MySqlLock::new(&url)
        .unwrap()
        .connect_timeout(CONNECT)
        .unwrap();
    let start = Instant::now();
    let err = lock.ping().unwrap_err();
    within_bounds(start);
    let shown = err.to_string();
    assert!(
        shown.starts_with(&format!(
            "backend unavailable: mysql at {url}: no answer within 1s"
        )),
        "{shown}"
    );
    assert!(!shown.contains("os error"), "{shown}");
    let start = Instant::now();
    let err = lock
        .acquire(&name("x"), Some(Instant::now() + Duration::from_secs(600)))
        .unwrap_err();
    within_bounds(start);
    assert!(err.to_string().contains("no answer within 1s"), "{err}");

    let db = MySql::new(&url)
        .unwrap()
        .connect_timeout(CONNECT)
        .unwrap()
        .read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let start = Instant::now();
    let err = db.connect().map(drop).unwrap_err();
    within_bounds(start);
    assert!(err.to_string().starts_with("no answer within 1s"), "{err}");
    assert_eq!(
        err.downcast_ref::<std::io::Error>().map(|e| e.kind()),
        Some(std::io::ErrorKind::TimedOut)
    );
}

/// The resource's own statements that its read timeout cuts off say so in words (an op's
/// own statements keep the driver's error, as the op returns it).
#[test]
fn a_begin_the_read_timeout_cuts_off_says_no_answer() {
    let (proxy, through) = proxied();
    let db = MySql::new(&through)
        .unwrap()
        .read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut conn = db.connect().unwrap();
    proxy.stall();
    let err = db.begin(&mut conn, &[]).unwrap_err();
    proxy.resume();
    let source = match &err {
        TransactError::Failed(e) => e,
        other => panic!("expected a failed BEGIN, got {other:?}"),
    };
    assert_eq!(source.to_string(), "no answer within 500ms");
    assert_eq!(
        source.downcast_ref::<std::io::Error>().map(|e| e.kind()),
        Some(std::io::ErrorKind::TimedOut)
    );
}

/// A wrong password's URL for the test server.
fn wrong_password_url() -> String {
    let parsed: mysql::Opts = mysql::Opts::from_url(&url()).unwrap();
    format!(
        "mysql://{}:certainly-wrong@{}:{}/{}",
        parsed.get_user().unwrap_or("root"),
        parsed.get_ip_or_hostname(),
        parsed.get_tcp_port(),
        parsed.get_db_name().unwrap_or("test")
    )
}

/// Errors say what failed in words, not in the driver's `MySqlError { … }` form. The
/// lock's name its server (never the password), so that a lock on one server over data on
/// another tells which one failed; the resource's do not, since whoever reports them has
/// its identity (the harness prints it once).
#[test]
fn errors_are_in_words_and_the_locks_name_their_server() {
    drop(admin());
    let down = format!("mysql://root@127.0.0.1:{}/test", closed_port());
    let shown = MySqlLock::new(&down)
        .unwrap()
        .ping()
        .unwrap_err()
        .to_string();
    assert!(
        shown.starts_with(&format!(
            "backend unavailable: mysql at {down}: Could not connect to address"
        )),
        "{shown}"
    );
    assert!(!shown.contains("DriverError"), "{shown}");

    let bad = wrong_password_url();
    let lock = MySqlLock::new(&bad).unwrap();
    let shown = lock.ping().unwrap_err().to_string();
    assert!(
        shown.contains(&format!(
            "mysql at {}: ERROR 1045 (28000)",
            lock.backend_id()
        )),
        "{shown}"
    );
    assert!(
        !shown.contains("MySqlError") && !shown.contains("certainly-wrong"),
        "{shown}"
    );

    // A lock spec on a server that is down, over data on one that is up.
    let setup = Setup::new(MySql::new(&url()).unwrap());
    let err = Registry::builtin_mysql().open(&down, &setup).err().unwrap();
    assert!(
        err.to_string().contains(&format!("mysql at {down}: ")),
        "{err}"
    );

    // The resource's own, in words, without a name.
    let strategy = Locked::new(MutexLock::new(), MySql::new(&bad).unwrap());
    let shown = strategy
        .run(&Key::whole(), |_| Ok::<_, mysql::Error>(()))
        .unwrap_err()
        .to_string();
    assert!(
        shown.starts_with("backend unavailable: ERROR 1045 (28000)"),
        "{shown}"
    );
    assert!(!shown.contains("certainly-wrong"), "{shown}");
    let shown = MySql::new(&down)
        .unwrap()
        .connect()
        .map(drop)
        .unwrap_err()
        .to_string();
    assert!(shown.starts_with("Could not connect to address"), "{shown}");
}

/// A queue whose connection timed out must not use it again: the late answer would be
/// taken for the next statement's. While the server stays silent, ops fail as
/// unavailable; once it answers again, each op gets its own result.
#[test]
#[cfg(feature = "queue")]
fn a_queue_never_reads_a_late_answer_as_the_next_ops() {
    let (proxy, through) = proxied();
    let db = MySql::new(&through)
        .unwrap()
        .connect_timeout(Duration::from_millis(500))
        .unwrap()
        .read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let queue = turnstile::queue::Queue::new(db).unwrap();
    let select = |n: i64| {
        queue.run(&Key::whole(), move |c| {
            c.query_first::<i64, _>(format!("SELECT {n}"))
        })
    };
    assert_eq!(select(1).unwrap(), Some(1));
    proxy.stall();
    assert!(
        select(111).is_err(),
        "the op waiting on a silent server must fail"
    );
    let err = select(112).unwrap_err();
    assert!(matches!(err, Error::Unavailable(_)), "{err:?}");
    proxy.resume();
    // The answers to 111 and 112 arrive late on the old connection; nobody reads them.
    std::thread::sleep(Duration::from_millis(200));
    for n in 222..226 {
        assert_eq!(
            select(n).unwrap(),
            Some(n),
            "the op after a timeout read another's answer"
        );
    }
}

/// The queue's group commit over a connection whose read timed out: whichever statement
/// timed out (an op's, the batch's `BEGIN`, a savepoint's, the batch marker's probe), the
/// answer may still come, and the next statement on that connection would take it for
/// its own. The worker runs nothing more on it, and the next ops get their own answers.
#[cfg(feature = "queue")]
mod late_answers_in_a_batch {
    use std::sync::mpsc;

    use mysql::Conn;
    use turnstile::queue::{Queue, Ticket};
    use turnstile::{Ctx, FenceClaim};

    use super::*;

    const READ_TIMEOUT: Duration = Duration::from_secs(1);

    /// Generous bound for "does not hang" waits; never a performance assertion.
    const HANG: Duration = Duration::from_secs(60);

    fn timing_out(url: &str) -> MySql {
        MySql::new(url)
            .unwrap()
            .connect_timeout(Duration::from_secs(5))
            .unwrap()
            .read_timeout(Some(READ_TIMEOUT))
            .unwrap()
    }

    /// Occupies the worker of a queue, fresh, so that this op runs alone (no batch, no
    /// marker), with an op that waits for the returned sender: what is submitted
    /// meanwhile runs as one batch once it is released.
    pub(super) fn hold_worker(
        queue: &Queue<MySql>,
    ) -> (Ticket<(), mysql::Error>, mpsc::Sender<()>) {
        let (started_tx, started) = mpsc::channel();
        let (release, released) = mpsc::channel::<()>();
        let mut first = true;
        let ticket = queue
            .submit(&Key::whole(), move |_| {
                if std::mem::take(&mut first) {
                    started_tx.send(()).unwrap();
                    let _ = released.recv();
                }
                Ok(())
            })
            .unwrap();
        started.recv_timeout(HANG).unwrap();
        (ticket, release)
    }

    fn select(n: i64) -> impl FnMut(&mut Ctx<'_, Conn>) -> Result<Option<i64>, mysql::Error> {
        move |c| c.query_first(format!("SELECT {n}"))
    }

    /// Submits `SELECT 42`, `SELECT 43`, `SELECT 44`.
    pub(super) fn selects(queue: &Queue<MySql>) -> Vec<Ticket<Option<i64>, mysql::Error>> {
        (42..45)
            .map(|n| queue.submit(&Key::whole(), select(n)).unwrap())
            .collect()
    }

    pub(super) fn assert_own_answers(tickets: Vec<Ticket<Option<i64>, mysql::Error>>) {
        for (n, ticket) in (42..).zip(tickets) {
            let answer = ticket.wait();
            assert!(
                matches!(answer, Ok(Some(m)) if m == n),
                "SELECT {n} got {answer:?}: an answer meant for another statement"
            );
        }
    }

    /// A database of its own on the test server, dropped with it: its `turnstile_fences`
    /// is this test's alone, so the test may lock it without holding up anyone else.
    struct OwnDatabase {
        name: String,
        url: String,
    }

    impl OwnDatabase {
        fn new() -> Self {
            let name = unique("turnstile_own");
            admin()
                .query_drop(format!("CREATE DATABASE {name}"))
                .unwrap();
            let url = url();
            let start = url.find("://").unwrap() + 3;
            let path = url[start..].find('/').map_or(url.len(), |i| start + i);
            let end = url[path..].find('?').map_or(url.len(), |i| path + i);
            let own = OwnDatabase {
                url: format!("{}/{name}{}", &url[..path], &url[end..]),
                name,
            };
            // Its fence table, made as the resource makes it.
            let db = MySql::new(&own.url).unwrap();
            let mut conn = db.connect().unwrap();
            let claim = FenceClaim {
                backend: "test",
                name: b"own",
                fence: Fence(1),
            };
            db.begin(&mut conn, &[claim]).unwrap();
            db.commit(&mut conn).unwrap();
            own
        }

        /// Locks its fence table until the returned connection unlocks it.
        fn lock_fences(&self) -> Conn {
            let mut conn = MySql::new(&self.url).unwrap().connect().unwrap();
            conn.query_drop("LOCK TABLES turnstile_fences WRITE")
                .unwrap();
            conn
        }
    }

    impl Drop for OwnDatabase {
        fn drop(&mut self) {
            let _ = admin().query_drop(format!("DROP DATABASE IF EXISTS {}", self.name));
        }
    }

    /// An op whose statement outlives the read timeout: its batch-mates run on a new
    /// connection.
    #[test]
    fn after_an_op_timed_out() {
        let queue = Queue::new(timing_out(&url())).unwrap();
        let (busy, release) = hold_worker(&queue);
        let slow = queue
            .submit(&Key::whole(), |c| {
                c.query_first::<i64, _>("SELECT SLEEP(1.5)")
            })
            .unwrap();
        let next = selects(&queue);
        release.send(()).unwrap();
        busy.wait().unwrap();
        let slow = slow.wait();
        assert!(slow.is_err(), "{slow:?}");
        assert_own_answers(next);
    }

    /// A batch whose `BEGIN` outlives the read timeout (its marker's table is locked):
    /// its ops run alone, each on a connection that did not time out.
    #[test]
    fn after_the_batch_began_too_slowly() {
        let own = OwnDatabase::new();
        let queue = Queue::new(timing_out(&own.url)).unwrap();
        let (busy, release) = hold_worker(&queue);
        let mut next = selects(&queue).into_iter();
        let mut locked = own.lock_fences();
        release.send(()).unwrap();
        busy.wait().unwrap();
        // While the table stays locked, the timed-out connection has no answer to give.
        let first = next.next().unwrap().wait();
        locked.query_drop("UNLOCK TABLES").unwrap();
        assert!(matches!(first, Ok(Some(42))), "{first:?}");
        for (n, ticket) in (43..).zip(next) {
            let answer = ticket.wait();
            assert!(matches!(answer, Ok(Some(m)) if m == n), "{answer:?}");
        }
        drop(queue);
    }

    /// An op commits by itself, so the worker reads the batch's marker to learn whether
    /// the batch committed; that read outlives the read timeout (the marker's table is
    /// locked): the op's outcome is not known, and the next ops run on a new connection.
    #[test]
    fn after_the_marker_was_read_too_slowly() {
        let own = OwnDatabase::new();
        let queue = Queue::new(timing_out(&own.url)).unwrap();
        let (busy, release) = hold_worker(&queue);
        let (committed_tx, committed) = mpsc::channel();
        let (lock_taken, locked_rx) = mpsc::channel::<()>();
        let mut first = true;
        let committing = queue
            .submit(&Key::whole(), move |c| {
                c.query_drop("COMMIT")?;
                if std::mem::take(&mut first) {
                    committed_tx.send(()).unwrap();
                    let _ = locked_rx.recv();
                }
                Ok::<_, mysql::Error>(())
            })
            .unwrap();
        let next = selects(&queue);
        release.send(()).unwrap();
        busy.wait().unwrap();
        committed.recv_timeout(HANG).unwrap();
        let mut locked = own.lock_fences();
        lock_taken.send(()).unwrap();
        let ended = committing.wait();
        locked.query_drop("UNLOCK TABLES").unwrap();
        assert!(matches!(ended, Err(Error::Indeterminate)), "{ended:?}");
        assert_own_answers(next);
        drop(queue);
    }

    /// The worker's `RELEASE SAVEPOINT` after an op outlives the read timeout (the
    /// server's answers are held back a while): the ops after it run on a new connection.
    #[test]
    fn after_a_savepoint_was_released_too_slowly() {
        let (proxy, through) = proxied();
        let proxy = Arc::new(proxy);
        let queue = Queue::new(timing_out(&through)).unwrap();
        let (busy, release) = hold_worker(&queue);
        let stalls = proxy.clone();
        let mut first = true;
        let stalling = queue
            .submit(&Key::whole(), move |c: &mut Ctx<'_, Conn>| {
                let answer = c.query_first::<i64, _>("SELECT 41")?;
                if std::mem::take(&mut first) {
                    // Nothing the worker sends next is answered before its read timed out.
                    stalls.stall();
                    let resumes = stalls.clone();
                    std::thread::spawn(move || {
                        std::thread::sleep(READ_TIMEOUT + READ_TIMEOUT / 2);
                        resumes.resume();
                    });
                }
                Ok::<_, mysql::Error>(answer)
            })
            .unwrap();
        let next = selects(&queue);
        release.send(()).unwrap();
        busy.wait().unwrap();
        let stalled = stalling.wait();
        assert!(
            matches!(stalled, Ok(Some(41)) | Err(Error::Indeterminate)),
            "{stalled:?}"
        );
        assert_own_answers(next);
    }
}

/// An op that panics on a statement whose read timed out (it calls `expect` on it): the
/// driver's connection does not know it is broken, and the statement's answer is still on
/// its way. A strategy that sent anything more on it (a `ROLLBACK`) would read that answer
/// as its own, and every later statement the answer of the one before. The connection is
/// replaced instead, and the next op gets its own answer.
mod a_panic_on_a_timed_out_read {
    use mysql::Conn;
    use turnstile::Ctx;

    use super::*;

    fn timing_out() -> MySql {
        MySql::new(&url())
            .unwrap()
            .connect_timeout(Duration::from_secs(5))
            .unwrap()
            .read_timeout(Some(Duration::from_millis(500)))
            .unwrap()
    }

    fn panics(c: &mut Ctx<'_, Conn>) -> Result<Option<i64>, mysql::Error> {
        let slept: Option<i64> = c.query_first("SELECT SLEEP(0.8)").expect("read timed out");
        Ok(slept)
    }

    fn select(n: i64) -> impl FnMut(&mut Ctx<'_, Conn>) -> Result<Option<i64>, mysql::Error> {
        move |c| c.query_first(format!("SELECT {n}"))
    }

    fn check<S: Serializer<Resource = Conn>>(strategy: &S) {
        let panicked = strategy.run(&Key::whole(), panics);
        assert!(
            matches!(panicked, Err(Error::Panicked(ref m)) if m.contains("read timed out")),
            "{panicked:?}"
        );
        for n in 222..225 {
            let answer = strategy.run(&Key::whole(), select(n));
            assert!(
                matches!(answer, Ok(Some(m)) if m == n),
                "SELECT {n} got {answer:?}: an answer meant for another statement"
            );
        }
    }

    #[test]
    #[cfg(feature = "queue")]
    fn through_the_queue_alone() {
        check(&turnstile::queue::Queue::new(timing_out()).unwrap());
    }

    #[test]
    #[cfg(feature = "queue")]
    fn through_the_queue_in_a_batch() {
        use super::late_answers_in_a_batch::{assert_own_answers, hold_worker, selects};
        let queue = turnstile::queue::Queue::new(timing_out()).unwrap();
        let (busy, release) = hold_worker(&queue);
        let before = queue.submit(&Key::whole(), select(41)).unwrap();
        let panicking = queue.submit(&Key::whole(), panics).unwrap();
        let next = selects(&queue);
        release.send(()).unwrap();
        busy.wait().unwrap();
        let panicked = panicking.wait();
        assert!(matches!(panicked, Err(Error::Panicked(_))), "{panicked:?}");
        let before = before.wait();
        assert!(matches!(before, Ok(Some(41))), "{before:?}");
        assert_own_answers(next);
        check(&queue);
    }

    #[test]
    fn through_locked() {
        check(
            &Locked::new(MutexLock::new(), timing_out())
                .pool_size(1)
                .unwrap(),
        );
    }

    #[test]
    #[cfg(feature = "retry")]
    fn through_retry() {
        check(&turnstile::retry::Retry::new(timing_out()).idle_connections(1));
    }
}

/// Closing a queue deletes its batch marker's row on the server, but does not wait long
/// for a server that stopped answering.
#[test]
#[cfg(feature = "queue")]
fn closing_a_queue_does_not_wait_on_a_silent_server() {
    let (proxy, through) = proxied();
    let queue = turnstile::queue::Queue::new(MySql::new(&through).unwrap()).unwrap();
    let tickets: Vec<_> = (0..8)
        .map(|_| {
            queue
                .submit(&Key::whole(), |c| c.query_drop("SELECT 1"))
                .unwrap()
        })
        .collect();
    for t in tickets {
        t.wait().unwrap();
    }
    proxy.stall();
    let (done_tx, done) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        drop(queue);
        let _ = done_tx.send(());
    });
    done.recv_timeout(Duration::from_secs(20))
        .expect("closing the queue hung on a silent server");
    proxy.resume();
}

/// The session's isolation level: `@@transaction_isolation` (MySQL 8, MariaDB 11.1), or
/// `@@tx_isolation` on servers without it. `scope` is `SESSION` or `GLOBAL`.
fn isolation_of(conn: &mut mysql::Conn, scope: &str) -> String {
    conn.query_first::<String, _>(format!("SELECT @@{scope}.transaction_isolation"))
        .or_else(|_| conn.query_first(format!("SELECT @@{scope}.tx_isolation")))
        .unwrap()
        .unwrap()
}

/// The isolation level inside an op of `strategy`.
fn isolation_in_op(strategy: &impl Serializer<Resource = mysql::Conn>) -> String {
    strategy
        .run(&Key::new(unique("iso")).unwrap(), |db| {
            Ok::<_, mysql::Error>(isolation_of(db, "SESSION"))
        })
        .unwrap()
}

/// Without `MySql::isolation` an op runs at the server's default; with it, at the chosen
/// level, in the transactions `Locked` begins and in autocommit.
#[test]
fn a_chosen_isolation_level_wins_over_the_servers_default() {
    use turnstile::lock::MutexLock;
    use turnstile::resource::Isolation;

    let global = isolation_of(&mut admin(), "GLOBAL");
    let server_default = MySql::new(&url()).unwrap();
    assert_eq!(
        isolation_in_op(&Locked::new(MutexLock::new(), server_default)),
        global
    );
    for (level, shown) in [
        (Isolation::ReadCommitted, "READ-COMMITTED"),
        (Isolation::RepeatableRead, "REPEATABLE-READ"),
        (Isolation::Serializable, "SERIALIZABLE"),
    ] {
        let chosen = MySql::new(&url()).unwrap().isolation(level);
        assert!(
            format!("{chosen:?}").contains(&format!("{level:?}")),
            "{chosen:?}"
        );
        for mode in [TxMode::Transaction, TxMode::Autocommit] {
            let locked = Locked::new(MutexLock::new(), chosen.clone()).tx_mode(mode);
            assert_eq!(isolation_in_op(&locked), shown, "{mode:?}");
        }
        // With a read timeout the login runs without a thread of its own: the same.
        let timed = chosen.read_timeout(Some(Duration::from_secs(30))).unwrap();
        assert_eq!(
            isolation_in_op(&Locked::new(MutexLock::new(), timed)),
            shown
        );
    }
}
