//! The harness's ops return its own `OpError`; a busy or broken driver error inside one
//! must still be classified by the strategy it runs under (`Transact::is_busy`,
//! `Connect::is_broken`): a busy read rerun under `optimistic`, a connection the server
//! killed under an op not handed to the next one. Real SQLite files and a real MariaDB on
//! loopback (`TURNSTILE_MYSQL_URL`; the server test fails, not skips, when it is down).
#![cfg(feature = "optimistic")]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use turnstile::spec::{Registry, Setup};
use turnstile::sqlite::Sqlite;
use turnstile::sqlite::rusqlite::Connection;
use turnstile::{BoxSerializer, Error, Key};
use turnstile_harness::Workload;
use turnstile_harness::data::{Tables, WorkloadData};
use turnstile_harness::history::{OpInput, OpOutput};
use turnstile_harness::workload::{OpEnv, OpError, Paths, Probe};

fn env(paths: Paths, tables: Tables, in_section: Option<Arc<dyn Fn() + Send + Sync>>) -> OpEnv {
    OpEnv {
        paths: Arc::new(paths),
        tables: Arc::new(tables),
        think: Duration::ZERO,
        in_section,
        rendezvous: Duration::ZERO,
    }
}

/// One `counter` increment of key `c0`, as a run's worker makes it.
fn increment<R: WorkloadData>(
    strategy: &BoxSerializer<R>,
    env: &OpEnv,
) -> Result<OpOutput, Error<OpError>> {
    let keys = [Key::new("c0").unwrap()];
    let probe = Arc::new(Probe::default());
    Workload::Counter.execute(strategy, 1, &keys, &OpInput::Increment, env, &probe)
}

fn paths(dir: &Path) -> Paths {
    Paths::new(dir, None)
}

/// The counter workload's versioned records in a SQLite file in `dir`, in rollback-journal
/// mode (a writer's exclusive lock makes reads busy) with a 10 ms busy timeout.
fn versioned_counter(
    dir: &Path,
) -> (
    Paths,
    Tables,
    Sqlite,
    turnstile::optimistic::Versions<Sqlite>,
) {
    let paths = paths(dir);
    let tables = Tables::new("").unwrap();
    let db = Sqlite::new(&paths.db)
        .wal(false)
        .busy_timeout(Duration::from_millis(10));
    let versions = turnstile::optimistic::Versions::new(db.clone())
        .table(&tables.versions)
        .unwrap();
    Workload::Counter
        .init(&versions, &paths, &tables, 1)
        .unwrap();
    (paths, tables, db, versions)
}

/// `optimistic` over versioned records in a SQLite file in rollback-journal mode: while
/// another connection holds the file's exclusive lock, the op's read is SQLite's busy,
/// inside the harness's `OpError::Store`. The strategy reruns it until its budget ends
/// (`Contended`) instead of failing the op at once.
#[test]
fn a_busy_read_inside_an_op_error_is_rerun_under_optimistic() {
    let dir = tempfile::tempdir().unwrap();
    let (paths, tables, db, versions) = versioned_counter(dir.path());
    let setup = Setup::new(versions).timeout(Duration::from_millis(300));
    let strategy = Registry::builtin_versioned()
        .open("optimistic", &setup)
        .unwrap();
    let env = env(paths, tables, None);
    // Opens the strategy's connection (opening one needs a write, to create the table).
    increment(&strategy, &env).unwrap();

    let writer = Connection::open(db.path()).unwrap();
    writer.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let busy = increment(&strategy, &env);
    assert!(
        matches!(busy, Err(Error::Contended { attempts, .. }) if attempts > 1),
        "a busy read inside an OpError was not rerun: {busy:?}"
    );
    writer.execute_batch("COMMIT").unwrap();
    assert!(increment(&strategy, &env).is_ok());
}

/// A lock does not rerun an op: a versioned record's busy read reaches its caller, and the
/// harness counts it as the data refusing the op (`refused`), as the records' connector
/// (`Versions::is_busy`, which `optimistic` reruns by) calls it busy. The harness once
/// classified errors by driver itself and missed this one.
#[test]
fn a_busy_versioned_read_under_a_lock_is_refused_as_busy() {
    use turnstile::TxMode;
    use turnstile_harness::workload::refused_as_busy;
    let dir = tempfile::tempdir().unwrap();
    let (paths, tables, db, versions) = versioned_counter(dir.path());
    let setup = Setup::new(versions.clone()).tx_mode(TxMode::Transaction);
    let strategy = Registry::builtin_versioned().open("mutex", &setup).unwrap();
    let env = env(paths.clone(), tables.clone(), None);
    increment(&strategy, &env).unwrap();
    let writer = Connection::open(db.path()).unwrap();
    writer.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let busy = increment(&strategy, &env);
    writer.execute_batch("COMMIT").unwrap();
    let mut busy = busy.unwrap_err();
    assert!(matches!(busy, Error::Op(OpError::Store(_))), "{busy:?}");
    assert!(refused_as_busy(&versions, &mut busy), "{busy:?}");

    // The same refusal of plain SQLite data (in the same file) under the same lock.
    Workload::Counter.init(&db, &paths, &tables, 1).unwrap();
    let setup = Setup::new(db.clone()).tx_mode(TxMode::Autocommit);
    let strategy = turnstile_harness::registry().open("mutex", &setup).unwrap();
    increment(&strategy, &env).unwrap();
    writer.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let busy = increment(&strategy, &env);
    writer.execute_batch("COMMIT").unwrap();
    let mut busy = busy.unwrap_err();
    assert!(matches!(busy, Error::Op(OpError::Sql(_))), "{busy:?}");
    assert!(refused_as_busy(&db, &mut busy), "{busy:?}");
}

/// `mutex` in autocommit mode over MySQL data: the server kills the op's connection
/// between its read and its write (`KILL`, from another connection, as an administrator
/// or a failover would). That op fails; the strategy must drop the connection, not hand
/// it to the next op (in autocommit no failed rollback tells it either).
#[cfg(feature = "mysql")]
#[test]
fn a_connection_killed_under_an_op_is_not_reused_on_mysql_data() {
    use mysql::prelude::Queryable;
    use std::sync::Mutex;
    use turnstile::resource::MySql;
    use turnstile::{Connect, TxMode};
    use turnstile_harness::conformance::mysql_url;
    use turnstile_harness::workload::run_op;

    let dir = tempfile::tempdir().unwrap();
    let paths = paths(dir.path());
    let tables = Tables::new(&Tables::generated()).unwrap();
    let db = MySql::new(&mysql_url()).unwrap();
    let admin = db
        .connect()
        .expect("the MySQL test server must be running (see TURNSTILE_MYSQL_URL)");
    Workload::Counter.init(&db, &paths, &tables, 1).unwrap();
    let setup = Setup::new(db).tx_mode(TxMode::Autocommit);
    let strategy = Registry::builtin_mysql().open("mutex", &setup).unwrap();
    let key = [Key::new("c0").unwrap()];
    let connection_id = |strategy: &BoxSerializer<mysql::Conn>| {
        run_op(strategy, &key, |c| {
            Ok(c.query_first::<u64, _>("SELECT CONNECTION_ID()")?)
        })
    };
    let id = connection_id(&strategy).unwrap().unwrap();

    // Kills the op's connection once, inside its critical section.
    let to_kill = Arc::new(Mutex::new(Some((id, admin))));
    let kill: Arc<dyn Fn() + Send + Sync> = Arc::new(move || {
        if let Some((id, mut admin)) = to_kill.lock().unwrap().take() {
            admin.exec_drop("KILL ?", (id,)).unwrap();
        }
    });
    let env = env(paths, tables.clone(), Some(kill));
    let killed = increment(&strategy, &env);
    let next = increment(&strategy, &env);
    let after = connection_id(&strategy);

    let mut admin = MySql::new(&mysql_url()).unwrap().connect().unwrap();
    for table in tables.all() {
        admin
            .query_drop(format!("DROP TABLE IF EXISTS {table}"))
            .unwrap();
    }
    assert!(
        matches!(killed, Err(Error::Op(OpError::MySql(_)))),
        "{killed:?}"
    );
    assert!(
        next.is_ok(),
        "the killed connection was handed to the next op: {next:?}"
    );
    assert_ne!(after.unwrap(), Some(id));
}
