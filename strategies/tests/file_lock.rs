//! The `file-lock` strategy against threads and real child processes: the test binary
//! re-executes itself (`--exact <test> --nocapture`) with `TURNSTILE_CHILD` set, and that
//! one test then plays the child.
#![cfg(all(feature = "file-lock", feature = "sqlite"))]

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use turnstile::lock::{FileLock, FileLockError};
use turnstile::spec::{Registry, Setup};
use turnstile::sqlite::rusqlite;
use turnstile::{
    Error, HolderDeath, Key, KeyError, KeyScope, Lock, LockName, Locked, MAX_TIMEOUT, Scope,
    Serializer, TxMode, Wait,
};

#[path = "support/children.rs"]
mod children;
use children::{
    Children, child, child_role, db_at, env_path, env_u32, on_threads, run_workers, touch,
    wait_for_go, wait_until,
};

/// Generous bound for "doesn't hang" checks.
const PATIENCE: Duration = Duration::from_secs(120);

// ---------------------------------------------------------------- counter

const PROCESSES: u32 = 4;
const THREADS: u32 = 4;
const INCREMENTS: u32 = 25;

/// Read, pause, write: a lost update unless the lock excludes, since every statement
/// commits by itself (`TxMode::Autocommit`).
fn increment(db: &mut rusqlite::Connection) -> rusqlite::Result<()> {
    let v: i64 = db.query_row("SELECT v FROM counter", [], |r| r.get(0))?;
    std::thread::yield_now();
    db.execute("UPDATE counter SET v = ?1", [v + 1])?;
    Ok(())
}

/// A child: THREADS threads, INCREMENTS autocommit increments each, under a file lock
/// beside DB.
fn counter_worker() {
    let db_path = env_path("DB");
    let strategy = Locked::new(FileLock::beside(&db_path).unwrap(), db_at(&db_path))
        .tx_mode(TxMode::Autocommit);
    wait_for_go();
    on_threads(THREADS, move || {
        for _ in 0..INCREMENTS {
            strategy.run(&Key::whole(), |db| increment(db)).unwrap();
        }
    });
}

#[test]
fn counter_from_processes_and_threads_ends_exact() {
    const NAME: &str = "counter_from_processes_and_threads_ends_exact";
    if child_role().is_some() {
        return counter_worker();
    }
    let dir = tempfile::tempdir().unwrap();
    let db_path = dir.path().join("counter.db");
    {
        let conn = rusqlite::Connection::open(&db_path).unwrap();
        conn.execute_batch("CREATE TABLE counter (v INTEGER); INSERT INTO counter VALUES (0);")
            .unwrap();
    }
    run_workers(NAME, "counter", PROCESSES, &db_path, &[]);
    let conn = rusqlite::Connection::open(&db_path).unwrap();
    let v: i64 = conn
        .query_row("SELECT v FROM counter", [], |r| r.get(0))
        .unwrap();
    assert_eq!(v, i64::from(PROCESSES * THREADS * INCREMENTS));
}

// ---------------------------------------------------------------- seed 002

/// Seed 002's embedded store, reduced to its failure mode: the whole store is read, changed
/// in memory and written back in place, one record per `write` call. Not atomic, as
/// buzhug's files were not.
mod store {
    use super::*;

    pub(super) type Records = BTreeMap<String, String>;

    /// Parses the store: a `count N` line, N `key=value` lines, an `end` line.
    pub(super) fn read(path: &Path) -> Result<Records, String> {
        let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
        let mut lines = text.lines();
        let count: usize = lines
            .next()
            .and_then(|l| l.strip_prefix("count "))
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| format!("bad header in {text:?}"))?;
        let mut records = Records::new();
        for _ in 0..count {
            let line = lines.next().ok_or("truncated store")?;
            let (k, v) = line
                .split_once('=')
                .ok_or_else(|| format!("bad record {line:?}"))?;
            if records.insert(k.to_owned(), v.to_owned()).is_some() {
                return Err(format!("duplicate record {k:?}"));
            }
        }
        if lines.next() != Some("end") || lines.next().is_some() {
            return Err("bad trailer".into());
        }
        Ok(records)
    }

    pub(super) fn write(path: &Path, records: &Records) {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(path)
            .unwrap();
        file.write_all(format!("count {}\n", records.len()).as_bytes())
            .unwrap();
        for (k, v) in records {
            file.write_all(format!("{k}={v}\n").as_bytes()).unwrap();
            std::thread::yield_now();
        }
        file.write_all(b"end\n").unwrap();
    }

    pub(super) fn seeded(path: &Path, processes: u32) {
        let records = (0..processes)
            .map(|i| (format!("seed{i:02}"), "x".to_owned()))
            .collect();
        std::fs::File::create(path).unwrap();
        write(path, &records);
    }
}

const STORE_PROCESSES: u32 = 50;

fn marker(dir: &Path, what: &str, i: u32) -> PathBuf {
    dir.join(format!("{what}-{i:02}"))
}

/// One of seed 002's processes: one read and one write-or-delete, with a rendezvous
/// between them: it waits until every other process has read, finished, or is blocked on
/// the lock. Without a lock that lines up all reads before any write; with one, the holder
/// waits until everybody queues behind it.
fn store_worker(locked: bool) {
    let i = env_u32("INDEX");
    let n = env_u32("PROCESSES");
    let dir = env_path("DIR");
    let store_path = dir.join("store");
    let lock = FileLock::new(dir.join("locks")).unwrap();
    let name = LockName::new("store", Key::whole());
    let lease = if locked {
        touch(&marker(&dir, "waiting", i));
        Some(
            lock.acquire(&name, Some(Instant::now() + PATIENCE))
                .unwrap(),
        )
    } else {
        None
    };
    let mut records = match store::read(&store_path) {
        Ok(records) => records,
        Err(e) => {
            touch(&marker(&dir, "corrupt", i));
            panic!("process {i} read a corrupt store: {e}");
        }
    };
    touch(&marker(&dir, "read", i));
    wait_until("the rendezvous", || {
        (0..n).filter(|&j| j != i).all(|j| {
            ["waiting", "read", "done", "corrupt"]
                .iter()
                .any(|m| marker(&dir, m, j).exists())
        })
    });
    if i.is_multiple_of(2) {
        records.insert(format!("p{i:02}"), format!("v{i}"));
    } else {
        records.remove(&format!("seed{i:02}"));
    }
    store::write(&store_path, &records);
    drop(lease);
    touch(&marker(&dir, "ack", i));
    touch(&marker(&dir, "done", i));
}

/// Runs seed 002 with 50 processes and returns every violation found: a corrupt store,
/// an acknowledged write missing, a record lost that nobody deleted.
fn run_seed_002(test: &str) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let store_path = dir.path().join("store");
    store::seeded(&store_path, STORE_PROCESSES);
    let mut children = Children(
        (0..STORE_PROCESSES)
            .map(|i| {
                child(test, "store")
                    .env("INDEX", i.to_string())
                    .env("PROCESSES", STORE_PROCESSES.to_string())
                    .env("DIR", dir.path())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap()
            })
            .collect(),
    );
    children.wait_all();
    let mut violations = Vec::new();
    for i in 0..STORE_PROCESSES {
        if marker(dir.path(), "corrupt", i).exists() {
            violations.push(format!("process {i} read a corrupt store"));
        }
    }
    let records = match store::read(&store_path) {
        Ok(records) => records,
        Err(e) => {
            violations.push(format!("the final store is corrupt: {e}"));
            return violations;
        }
    };
    for i in 0..STORE_PROCESSES {
        let acked = marker(dir.path(), "ack", i).exists();
        let seed = format!("seed{i:02}");
        if i.is_multiple_of(2) {
            if acked && !records.contains_key(&format!("p{i:02}")) {
                violations.push(format!("acknowledged insert p{i:02} is missing"));
            }
            if !records.contains_key(&seed) {
                violations.push(format!("{seed} was lost; nobody deleted it"));
            }
        } else if acked && records.contains_key(&seed) {
            violations.push(format!("acknowledged delete of {seed} was undone"));
        }
    }
    violations
}

#[test]
fn seed_002_store_under_file_lock_stays_consistent() {
    const NAME: &str = "seed_002_store_under_file_lock_stays_consistent";
    if child_role().is_some() {
        return store_worker(true);
    }
    let violations = run_seed_002(NAME);
    assert!(violations.is_empty(), "{violations:#?}");
}

#[test]
fn seed_002_store_without_a_lock_is_caught_losing_writes() {
    const NAME: &str = "seed_002_store_without_a_lock_is_caught_losing_writes";
    if child_role().is_some() {
        return store_worker(false);
    }
    let violations = run_seed_002(NAME);
    // Every process read the seeded store before anyone wrote, so each write drops the
    // other 49 changes (or the writes interleave into a corrupt file): the check must see it.
    assert!(
        !violations.is_empty(),
        "the checker missed the lost updates"
    );
    eprintln!("caught: {violations:?}");
}

// ---------------------------------------------------------------- holder death

#[test]
fn a_holder_killed_mid_section_frees_the_lock() {
    const NAME: &str = "a_holder_killed_mid_section_frees_the_lock";
    if child_role().is_some() {
        let db_path = env_path("DB");
        let holding = env_path("HOLDING");
        let strategy = Locked::new(FileLock::beside(&db_path).unwrap(), db_at(&db_path));
        let result = strategy.run(&Key::whole(), move |db| {
            db.execute("INSERT INTO t VALUES ('from the killed holder')", [])?;
            touch(&holding);
            // Hold until killed; the bound only keeps a lost child from living forever.
            std::thread::sleep(PATIENCE);
            Ok::<_, rusqlite::Error>(())
        });
        panic!("the holder was meant to be killed, but its op returned {result:?}");
    }
    let dir = tempfile::tempdir().unwrap();
    let db_path = dir.path().join("app.db");
    let holding = dir.path().join("holding");
    rusqlite::Connection::open(&db_path)
        .unwrap()
        .execute_batch("CREATE TABLE t (v TEXT)")
        .unwrap();
    let mut children = Children(vec![
        child(NAME, "holder")
            .env("DB", &db_path)
            .env("HOLDING", &holding)
            .spawn()
            .unwrap(),
    ]);
    wait_until("the child to hold the lock", || {
        assert!(
            children.0[0].try_wait().unwrap().is_none(),
            "the holder exited early"
        );
        holding.exists()
    });
    let strategy = Arc::new(Locked::new(
        FileLock::beside(&db_path).unwrap(),
        db_at(&db_path),
    ));
    let ran = Arc::new(AtomicBool::new(false));
    let flag = ran.clone();
    match strategy.run_timeout(&Key::whole(), Duration::ZERO, move |_| {
        flag.store(true, Ordering::SeqCst);
        Ok::<_, rusqlite::Error>(())
    }) {
        Err(Error::Timeout { .. }) => {}
        other => panic!("the child holds the lock, yet a zero-timeout run gave {other:?}"),
    }
    assert!(!ran.load(Ordering::SeqCst), "a timed-out op must not run");

    let (tx, rx) = std::sync::mpsc::channel();
    let waiter = strategy.clone();
    std::thread::spawn(move || {
        let rows = waiter.run_timeout(&Key::whole(), PATIENCE, |db| {
            db.query_row("SELECT count(*) FROM t", [], |r| r.get::<_, i64>(0))
        });
        let _ = tx.send(rows);
    });
    children.0[0].kill().unwrap(); // SIGKILL through the Child handle
    let status = children.0[0].wait().unwrap();
    assert!(!status.success());
    let rows = rx
        .recv_timeout(PATIENCE)
        .expect("the next waiter hung after the holder died")
        .unwrap();
    assert_eq!(rows, 0, "the killed holder's insert must have rolled back");
}

// ---------------------------------------------------------------- bad input

fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

fn is_stripe_file(name: &str) -> bool {
    name.strip_prefix("stripe-")
        .and_then(|rest| rest.strip_suffix(".lock"))
        .is_some_and(|n| n.len() == 4 && n.bytes().all(|b| b.is_ascii_digit()))
}

#[test]
fn bad_keys_are_typed_errors() {
    assert_eq!(Key::new(""), Err(KeyError::Empty));
    assert_eq!(Key::new("a\0b"), Err(KeyError::Nul { position: 1 }));
    assert!(matches!(
        Key::new("k".repeat(10_000)),
        Err(KeyError::TooLong { .. })
    ));
}

#[test]
fn path_like_keys_stay_inside_the_lock_directory() {
    let root = tempfile::tempdir().unwrap();
    let db_path = root.path().join("app.db");
    let strategy = Locked::new(FileLock::beside(&db_path).unwrap(), db_at(&db_path))
        .key_scope(KeyScope::PerKey);
    let tricky = [
        "../x",
        "/etc/passwd",
        "a/b",
        "..",
        ".",
        "layout",
        "stripe-0000.lock",
        "../../../../../../tmp/turnstile-escape",
    ];
    for name in tricky {
        let key = Key::new(name).unwrap();
        let seen = strategy
            .run(&key, |ctx| {
                Ok::<_, rusqlite::Error>(ctx.key().as_str().to_owned())
            })
            .unwrap();
        assert_eq!(seen, name);
    }
    let keys: Vec<Key> = tricky.iter().map(|k| Key::new(*k).unwrap()).collect();
    strategy
        .run_many(&keys, |_| Ok::<_, rusqlite::Error>(()))
        .unwrap();

    let lock_dir = FileLock::dir_beside(&db_path);
    let names = names_in(&lock_dir);
    assert!(names.iter().any(|n| is_stripe_file(n)), "{names:?}");
    for name in &names {
        assert!(
            is_stripe_file(name) || name == "layout",
            "unexpected file {name:?} in the lock directory"
        );
    }
    for name in names_in(root.path()) {
        assert!(
            ["app.db", "app.db-wal", "app.db-shm", "app.db.locks"].contains(&name.as_str()),
            "unexpected file {name:?} next to the database"
        );
    }
    assert!(!Path::new("/tmp/turnstile-escape").exists());
}

fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    let probe = tempfile::tempfile().unwrap();
    probe.metadata().unwrap().uid() == 0
}

/// An empty directory of sysfs, where even root cannot create a file.
fn empty_sysfs_dir() -> PathBuf {
    ["/sys/kernel", "/sys/class", "/sys/fs", "/sys/bus"]
        .iter()
        .flat_map(|top| std::fs::read_dir(top).into_iter().flatten().flatten())
        .map(|entry| entry.path())
        .find(|p| {
            !p.is_symlink()
                && p.is_dir()
                && std::fs::read_dir(p).is_ok_and(|mut d| d.next().is_none())
        })
        .expect("no empty directory in /sys to test an unwritable lock directory in")
}

#[test]
fn an_unwritable_lock_directory_is_refused() {
    let root = tempfile::tempdir().unwrap();
    // Root ignores permission bits, so it is tested on a filesystem that refuses files,
    // in an empty directory (one that holds files is refused before any is created).
    let dir = if running_as_root() {
        empty_sysfs_dir()
    } else {
        let dir = root.path().join("locks");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o500)).unwrap();
        dir
    };
    assert!(dir.is_dir(), "{} is missing", dir.display());
    match FileLock::new(&dir) {
        Err(FileLockError::Unwritable { .. }) => {}
        other => panic!("expected Unwritable, got {other:?}"),
    }
    let setup = Setup::new(db_at(&root.path().join("app.db")));
    let spec = format!("file-lock:{}", dir.display());
    assert!(matches!(
        Registry::builtin().open(&spec, &setup),
        Err(Error::Unavailable(_))
    ));
}

/// A directory that is not a lock directory yet (no `layout`) must hold nothing but lock
/// files: the lock's files would otherwise mix with someone else's (`file-lock:/`, a
/// home, the database's directory). Nothing is created in it. Once it is a lock
/// directory, files that come later do not matter.
#[test]
fn a_directory_of_other_files_is_not_made_a_lock_directory() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("data");
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::write(dir.join("app.db"), "").unwrap();
    match FileLock::new(&dir) {
        Err(e @ FileLockError::NotDedicated { .. }) => {
            let FileLockError::NotDedicated { path, entry } = &e else {
                unreachable!()
            };
            assert_eq!((path, entry), (&dir, &PathBuf::from("app.db")));
            assert!(e.to_string().contains("app.db"), "{e}");
        }
        other => panic!("expected NotDedicated, got {other:?}"),
    }
    assert_eq!(names_in(&dir), ["app.db"], "nothing may be created in it");
    let setup = Setup::new(db_at(&root.path().join("app.db")));
    let spec = format!("file-lock:{}", dir.display());
    assert!(matches!(
        Registry::builtin().open(&spec, &setup),
        Err(Error::Config(_))
    ));
    // Stripe files alone (a directory whose layout was lost) are a lock's own.
    let stripes = root.path().join("stripes");
    std::fs::create_dir(&stripes).unwrap();
    std::fs::write(stripes.join(FileLock::stripe_file_name(3)), "").unwrap();
    FileLock::new(&stripes).unwrap();
    // A lock directory stays one whatever comes into it later.
    let locks = root.path().join("locks");
    FileLock::new(&locks).unwrap();
    std::fs::write(locks.join("README"), "lock files").unwrap();
    FileLock::new(&locks).unwrap();
}

#[test]
fn a_world_writable_lock_directory_is_refused() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("locks");
    std::fs::create_dir(&dir).unwrap();
    for mode in [0o777, 0o1777, 0o702] {
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode)).unwrap();
        match FileLock::new(&dir) {
            Err(FileLockError::WorldWritable { mode: m, .. }) => assert_eq!(m, mode),
            other => panic!("expected WorldWritable for {mode:o}, got {other:?}"),
        }
    }
    assert!(names_in(&dir).is_empty(), "nothing may be created in it");
    let setup = Setup::new(db_at(&root.path().join("app.db")));
    let spec = format!("file-lock:{}", dir.display());
    assert!(matches!(
        Registry::builtin().open(&spec, &setup),
        Err(Error::Config(_))
    ));
}

#[test]
fn a_symlinked_lock_directory_is_refused() {
    let root = tempfile::tempdir().unwrap();
    let real = root.path().join("real");
    std::fs::create_dir(&real).unwrap();
    std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o700)).unwrap();
    let link = root.path().join("link");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    // Also behind a trailing `/` or `/.`, before which the kernel resolves the link.
    let mut named = vec![link.clone(), link.join("")];
    for tail in ["/.", "//", "/./", "/././/"] {
        let mut text = link.clone().into_os_string();
        text.push(tail);
        named.push(text.into());
    }
    for dir in &named {
        match FileLock::new(dir) {
            Err(FileLockError::Symlink { path }) => assert_eq!(&path, dir),
            other => panic!("expected Symlink for {}, got {other:?}", dir.display()),
        }
        let setup = Setup::new(db_at(&root.path().join("app.db")));
        let spec = format!("file-lock:{}", dir.display());
        assert!(
            matches!(
                Registry::builtin().open(&spec, &setup),
                Err(Error::Config(_))
            ),
            "{spec}"
        );
        assert!(
            names_in(&real).is_empty(),
            "nothing may be created through the link ({})",
            dir.display()
        );
    }
    // A lock file planted as a link is refused too, and its target left alone.
    let target = root.path().join("target");
    std::fs::write(&target, "precious").unwrap();
    let lock = FileLock::builder(&real).stripes(1).open().unwrap();
    std::os::unix::fs::symlink(&target, real.join(FileLock::stripe_file_name(0))).unwrap();
    let name = LockName::new("db", Key::whole());
    match lock.acquire(&name, Some(Instant::now())) {
        Err(Error::Config(_) | Error::Unavailable(_)) => {}
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "precious");
    // A file instead of a directory.
    let file = root.path().join("file");
    std::fs::write(&file, "").unwrap();
    assert!(matches!(
        FileLock::new(&file),
        Err(FileLockError::WrongFileType { .. } | FileLockError::Io { .. })
    ));
    assert!(matches!(FileLock::new(""), Err(FileLockError::Config(_))));
}

#[test]
fn a_zero_deadline_tries_once() {
    let dir = tempfile::tempdir().unwrap();
    let db_path = dir.path().join("app.db");
    // Two strategies with their own lock files open behave like two processes.
    let holder = Arc::new(Locked::new(
        FileLock::beside(&db_path).unwrap(),
        db_at(&db_path),
    ));
    let other = Locked::new(FileLock::beside(&db_path).unwrap(), db_at(&db_path));
    let (entered_tx, entered_rx) = std::sync::mpsc::channel();
    let (leave_tx, leave_rx) = std::sync::mpsc::channel::<()>();
    let h = holder.clone();
    let holding = std::thread::spawn(move || {
        h.run(&Key::whole(), move |_| {
            entered_tx.send(()).unwrap();
            let _ = leave_rx.recv_timeout(PATIENCE);
            Ok::<_, rusqlite::Error>(())
        })
    });
    entered_rx.recv_timeout(PATIENCE).unwrap();
    let ran = Arc::new(AtomicBool::new(false));
    for strategy in [&other, &*holder] {
        let flag = ran.clone();
        match strategy.run_timeout(&Key::whole(), Duration::ZERO, move |_| {
            flag.store(true, Ordering::SeqCst);
            Ok::<_, rusqlite::Error>(())
        }) {
            Err(Error::Timeout { .. }) => {}
            other => panic!("expected a timeout, got {other:?}"),
        }
    }
    assert!(!ran.load(Ordering::SeqCst));
    leave_tx.send(()).unwrap();
    holding.join().unwrap().unwrap();
    other
        .run_timeout(&Key::whole(), Duration::ZERO, |_| {
            Ok::<_, rusqlite::Error>(())
        })
        .unwrap();
}

#[test]
fn an_overflowing_deadline_is_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let db_path = dir.path().join("app.db");
    let strategy = Locked::new(FileLock::beside(&db_path).unwrap(), db_at(&db_path));
    let ran = Arc::new(AtomicBool::new(false));
    for wait in [
        Wait::Timeout(Duration::MAX),
        Wait::Timeout(MAX_TIMEOUT + Duration::from_secs(1)),
    ] {
        let flag = ran.clone();
        let result = strategy.run_with(&[Key::whole()], wait, move |_| {
            flag.store(true, Ordering::SeqCst);
            Ok::<_, rusqlite::Error>(())
        });
        assert!(matches!(result, Err(Error::Config(_))), "{result:?}");
    }
    assert!(!ran.load(Ordering::SeqCst));
    assert!(matches!(
        strategy.timeout(Some(Duration::MAX)),
        Err(Error::Config(_))
    ));
}

// ---------------------------------------------------------------- spec and capabilities

#[test]
fn the_spec_registry_builds_file_lock_beside_the_database_or_in_a_given_directory() {
    let root = tempfile::tempdir().unwrap();
    let db_path = root.path().join("app.db");
    let setup = Setup::new(db_at(&db_path));
    let registry = Registry::builtin();
    let beside = registry.open("file-lock", &setup).unwrap();
    assert!(FileLock::dir_beside(&db_path).is_dir());
    let caps = beside.capabilities();
    assert_eq!(caps.scope, Scope::Processes);
    assert_eq!(caps.holder_death, HolderDeath::KernelReleases);
    assert!(!caps.fences && !caps.lease_can_expire && caps.transactional);
    let n: i64 = beside
        .run_as(&[Key::whole()], Wait::Default, |db| {
            db.query_row("SELECT 41 + 1", [], |r| r.get(0))
        })
        .unwrap();
    assert_eq!(n, 42);

    let elsewhere = root.path().join("elsewhere");
    let spec = format!("file-lock:{}", elsewhere.display());
    registry.open(&spec, &setup).unwrap();
    assert!(names_in(&elsewhere).contains(&"layout".to_owned()));
    assert!(matches!(
        registry.open("file-lock:", &setup),
        Err(Error::Config(_))
    ));
    // A NUL byte in the directory is a bad spec, not an unavailable filesystem.
    let nul = format!("file-lock:{}/lo\0cks", root.path().display());
    match registry.open(&nul, &setup) {
        Err(Error::Config(m)) => assert!(m.contains("NUL"), "{m}"),
        other => panic!("expected a config error, got {:?}", other.err()),
    }
    let plain = FileLock::new(root.path().join("plain")).unwrap();
    let caps = plain.capabilities();
    assert_eq!(
        (caps.scope, caps.holder_death, caps.fences),
        (Scope::Processes, HolderDeath::KernelReleases, false)
    );
}

// ---------------------------------------------------------------- several keys

/// Keys `(lo, hi)` with `lo < hi` whose stripes are in the opposite order (`want_lo_first`
/// false) or the same order (true).
fn key_pair(lock: &FileLock, namespace: &str, want_lo_first: bool, skip: usize) -> [Key; 2] {
    let stripe = |k: &Key| lock.stripe_of(&LockName::new(namespace, k.clone()));
    let keys: Vec<Key> = (0..1000)
        .map(|i| Key::new(format!("k{i:04}")).unwrap())
        .collect();
    let mut found = keys.windows(2).filter(|w| {
        let (a, b) = (stripe(&w[0]), stripe(&w[1]));
        a != b && (a < b) == want_lo_first
    });
    let w = found.nth(skip).unwrap();
    [w[0].clone(), w[1].clone()]
}

#[test]
fn several_keys_on_one_stripe_do_not_wait_for_themselves() {
    let dir = tempfile::tempdir().unwrap();
    let db_path = dir.path().join("app.db");
    let lock = FileLock::builder(FileLock::dir_beside(&db_path))
        .stripes(1)
        .open()
        .unwrap();
    let strategy = Locked::new(lock, db_at(&db_path)).key_scope(KeyScope::PerKey);
    let keys = [Key::new("a").unwrap(), Key::new("b").unwrap()];
    let held = strategy
        .run_with(&keys, Wait::Timeout(Duration::ZERO), |ctx| {
            Ok::<_, rusqlite::Error>(ctx.keys().len())
        })
        .unwrap();
    assert_eq!(held, 2, "the op still sees every key");
}

#[test]
fn several_keys_are_taken_in_stripe_order_so_callers_cannot_deadlock() {
    let dir = tempfile::tempdir().unwrap();
    let db_path = dir.path().join("app.db");
    let namespace = db_at(&db_path);
    let namespace = turnstile::Connect::identity(&namespace).to_owned();
    let probe = FileLock::builder(FileLock::dir_beside(&db_path))
        .stripes(2)
        .open()
        .unwrap();
    // Sorted by key, the first pair takes stripe 1 then 0 and the second 0 then 1.
    let crossed = key_pair(&probe, &namespace, false, 0);
    let straight = key_pair(&probe, &namespace, true, 0);
    let workers: Vec<_> = [crossed, straight]
        .into_iter()
        .map(|keys| {
            // One FileLock each: as separate processes would be.
            let lock = FileLock::builder(FileLock::dir_beside(&db_path))
                .stripes(2)
                .open()
                .unwrap();
            let strategy = Locked::new(lock, db_at(&db_path))
                .key_scope(KeyScope::PerKey)
                .tx_mode(TxMode::Autocommit);
            std::thread::spawn(move || {
                for _ in 0..200 {
                    strategy
                        .run_with(&keys, Wait::Timeout(PATIENCE), |_| {
                            std::thread::yield_now();
                            Ok::<_, rusqlite::Error>(())
                        })
                        .unwrap();
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
}

// ---------------------------------------------------------------- O_CLOEXEC

/// Creates the stop file when dropped, so a failing test still ends the grandchild.
struct StopOnDrop(PathBuf);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::File::create(&self.0);
    }
}

#[test]
fn a_program_started_by_the_holder_does_not_inherit_the_lock() {
    const NAME: &str = "a_program_started_by_the_holder_does_not_inherit_the_lock";
    let name = LockName::new("t", Key::whole());
    match child_role().as_deref() {
        Some("sleeper") => {
            let dir = env_path("DIR");
            touch(&dir.join("sleeping"));
            let give_up = Instant::now() + PATIENCE;
            while !dir.join("stop").exists() && Instant::now() < give_up {
                std::thread::sleep(Duration::from_millis(5));
            }
            // The directory may be gone already if the test failed.
            let _ = std::fs::File::create(dir.join("stopped"));
            return;
        }
        Some(_) => {
            let dir = env_path("DIR");
            let lock = FileLock::new(dir.join("locks")).unwrap();
            let _lease = lock.acquire(&name, None).unwrap();
            // Started while holding: without O_CLOEXEC it would keep the lock file open.
            let mut grandchild = child(NAME, "sleeper").env("DIR", &dir).spawn().unwrap();
            wait_until("the grandchild", || dir.join("sleeping").exists());
            touch(&dir.join("holding"));
            // Blocks (bounded: the grandchild gives up by itself) until killed.
            let _ = grandchild.wait();
            panic!("the holder was meant to be killed");
        }
        None => {}
    }
    let dir = tempfile::tempdir().unwrap();
    let _stop = StopOnDrop(dir.path().join("stop"));
    let mut children = Children(vec![
        child(NAME, "holder")
            .env("DIR", dir.path())
            .spawn()
            .unwrap(),
    ]);
    wait_until("the holder", || {
        assert!(
            children.0[0].try_wait().unwrap().is_none(),
            "the holder exited early"
        );
        dir.path().join("holding").exists()
    });
    let lock = FileLock::new(dir.path().join("locks")).unwrap();
    assert!(matches!(
        lock.acquire(&name, Some(Instant::now())),
        Err(Error::Timeout { .. })
    ));
    children.0[0].kill().unwrap();
    children.0[0].wait().unwrap();
    let lease = lock.acquire(&name, Some(Instant::now() + Duration::from_secs(30)));
    assert!(
        !dir.path().join("stopped").exists(),
        "the grandchild must still be running for this to prove anything"
    );
    assert!(
        lease.is_ok(),
        "the lock stayed held after its holder died: {lease:?}"
    );
    drop(lease);
    drop(_stop);
    wait_until("the grandchild to stop", || {
        dir.path().join("stopped").exists()
    });
}
