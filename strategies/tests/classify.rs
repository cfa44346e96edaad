//! Busy and broken errors raised inside an op are classified whatever wraps them: the
//! type erasure of a strategy opened from a spec ([`turnstile::BoxSerializer`]) and an
//! application's own error type boxed as a [`BoxError`] whose `source()` chain holds the
//! driver's error. Real SQLite files, and real MariaDB / PostgreSQL servers on loopback
//! (`TURNSTILE_MYSQL_URL`, `TURNSTILE_POSTGRES_URL`); the server tests fail, not skip,
//! when their server is absent.
#![cfg(all(feature = "sqlite", feature = "retry", feature = "mutex"))]

use std::fmt;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use turnstile::retry::Retry;
use turnstile::spec::{Registry, Setup};
use turnstile::sqlite::Sqlite;
use turnstile::sqlite::rusqlite::{self, Connection};
use turnstile::{BoxError, Error, Key, Serializer, Wait};

#[path = "support/servers.rs"]
mod servers;
#[cfg(any(feature = "mysql", feature = "postgres"))]
use servers::unique;

/// An application's own op error: the driver's error is its `source()`.
#[derive(Debug)]
enum AppError {
    Db(BoxError),
}

impl fmt::Display for AppError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AppError::Db(e) => write!(f, "the app's database write failed: {e}"),
        }
    }
}

impl std::error::Error for AppError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            AppError::Db(e) => Some(&**e),
        }
    }
}

/// The op's error as an application returns it: its own type, boxed.
fn app_error(e: impl std::error::Error + Send + Sync + 'static) -> BoxError {
    Box::new(AppError::Db(Box::new(e)))
}

fn fresh_db(dir: &Path) -> Sqlite {
    let db = Sqlite::new(dir.join("app.db"));
    Connection::open(db.path())
        .unwrap()
        .execute_batch("CREATE TABLE log (v INTEGER)")
        .unwrap();
    db
}

/// A second database file whose write lock another connection holds (as another
/// process would): an op that writes it gets SQLite's real `SQLITE_BUSY`.
struct LockedSide {
    path: std::path::PathBuf,
    holder: Mutex<Option<Connection>>,
}

impl LockedSide {
    fn new(dir: &Path) -> Arc<Self> {
        let path = dir.join("side.db");
        let holder = Connection::open(&path).unwrap();
        holder
            .execute_batch("CREATE TABLE side (v INTEGER); BEGIN IMMEDIATE;")
            .unwrap();
        Arc::new(LockedSide {
            path,
            holder: Mutex::new(Some(holder)),
        })
    }

    /// Writes the side file without waiting; the first call finds it locked and then
    /// lets the holder commit, so the next call gets through.
    fn write(&self) -> rusqlite::Result<()> {
        let side = Connection::open(&self.path)?;
        side.busy_timeout(Duration::ZERO)?;
        let result = side.execute("INSERT INTO side VALUES (1)", []).map(drop);
        if let Some(holder) = self.holder.lock().unwrap().take() {
            holder.execute_batch("COMMIT").unwrap();
        }
        result
    }
}

#[test]
fn a_busy_op_error_is_retried_through_the_spec_registry() {
    let dir = tempfile::tempdir().unwrap();
    let side = LockedSide::new(dir.path());
    let setup = Setup::new(fresh_db(dir.path())).timeout(Duration::from_secs(30));
    let strategy = Registry::builtin().open("retry", &setup).unwrap();
    let result = strategy.run_as(&[Key::whole()], Wait::Default, move |db| {
        db.execute("INSERT INTO log VALUES (1)", [])?;
        side.write()?;
        Ok::<_, rusqlite::Error>(db.attempt())
    });
    match result {
        Ok(attempt) => assert_eq!(attempt, 2, "the busy attempt was rerun once"),
        Err(e) => panic!("a busy op error through a boxed strategy was not retried: {e:?}"),
    }
}

#[test]
fn a_busy_op_error_is_retried_when_the_app_wraps_it() {
    let dir = tempfile::tempdir().unwrap();
    let side = LockedSide::new(dir.path());
    let strategy = Retry::sqlite(fresh_db(dir.path()));
    let result = strategy.run(&Key::whole(), move |db| {
        db.execute("INSERT INTO log VALUES (1)", [])
            .map_err(app_error)?;
        side.write().map_err(app_error)?;
        Ok::<_, BoxError>(db.attempt())
    });
    match result {
        Ok(attempt) => assert_eq!(attempt, 2, "the busy attempt was rerun once"),
        Err(e) => panic!("a busy error inside the app's error was not retried: {e:?}"),
    }
}

/// A constraint violation stays the op's own error, wrapped or not: never retried.
#[test]
fn a_wrapped_op_error_that_is_not_busy_is_not_retried() {
    let dir = tempfile::tempdir().unwrap();
    let setup = Setup::new(fresh_db(dir.path()));
    let strategy = Registry::builtin().open("retry", &setup).unwrap();
    strategy
        .run_as(&[Key::whole()], Wait::Default, |db| {
            db.execute_batch("CREATE TABLE uniq (k INTEGER UNIQUE); INSERT INTO uniq VALUES (1);")
        })
        .unwrap();
    let result = strategy.run_as(&[Key::whole()], Wait::Default, |db| {
        if db.attempt() > 1 {
            panic!("rerun");
        }
        db.execute("INSERT INTO uniq VALUES (1)", [])
            .map_err(app_error)
    });
    match result {
        Err(Error::Op(e)) => assert!(e.to_string().contains("UNIQUE"), "{e}"),
        other => panic!("expected the op's own error, got {other:?}"),
    }
}

/// Optimistic over a SQLite file in rollback-journal mode, where a writer holding the
/// file's exclusive lock makes readers busy: an op whose read is busy is rerun, through
/// the spec registry's box, until its budget ends.
#[cfg(feature = "optimistic")]
#[test]
fn a_busy_read_under_optimistic_is_rerun_through_the_spec_registry() {
    use turnstile::optimistic::Versions;
    let dir = tempfile::tempdir().unwrap();
    let db = Sqlite::new(dir.path().join("v.db"))
        .wal(false)
        .busy_timeout(Duration::from_millis(10));
    let setup = Setup::new(Versions::new(db.clone())).timeout(Duration::from_millis(300));
    let strategy = Registry::builtin_versioned()
        .open("optimistic", &setup)
        .unwrap();
    let key = [Key::new("c").unwrap()];
    strategy
        .run_as(&key, Wait::Default, |db| db.write("c", *b"0"))
        .unwrap();
    let writer = Connection::open(db.path()).unwrap();
    writer.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let result = strategy.run_as(&key, Wait::Default, |db| db.read("c").map(|_| db.attempt()));
    assert!(
        matches!(result, Err(Error::Contended { attempts, .. }) if attempts > 1),
        "a busy read was not rerun: {result:?}"
    );
    writer.execute_batch("COMMIT").unwrap();
    let read = strategy.run_as(&key, Wait::Default, |db| db.read("c"));
    assert_eq!(read.unwrap(), Some(b"0".to_vec()));
}

#[cfg(any(feature = "mysql", feature = "postgres"))]
#[path = "support/server_urls.rs"]
mod server_urls;

#[cfg(feature = "mysql")]
mod mysql_server {
    use mysql::prelude::Queryable;
    use turnstile::TxMode;
    use turnstile::resource::MySql;

    use super::*;

    use crate::server_urls::{mysql_admin as admin, mysql_url as url};

    fn connection_id(conn: &mut mysql::Conn) -> Result<u64, mysql::Error> {
        conn.query_first("SELECT CONNECTION_ID()")
            .map(|id: Option<u64>| id.unwrap_or(0))
    }

    /// Has the server kill the connection that `mutex` over MySQL, in autocommit mode
    /// (where no failed rollback tells it), runs its ops on: before the next op, or while
    /// that op's query runs (MariaDB then closes it as it answers, and the driver reports
    /// an I/O error). The op fails, and the strategy must not hand the dead connection out
    /// again, as an administrator's `KILL` or a failover would leave it.
    fn a_killed_connection_is_not_reused(mid_query: bool) {
        let setup = Setup::new(MySql::new(&url()).unwrap()).tx_mode(TxMode::Autocommit);
        let strategy = Registry::builtin_mysql().open("mutex", &setup).unwrap();
        let key = [Key::new("k").unwrap()];
        let id = strategy
            .run_as(&key, Wait::Default, |c| connection_id(c))
            .unwrap();
        let kill = move || {
            let mut admin = admin();
            // Until the op's query is running on that connection.
            for _ in 0..500 {
                let running: Option<String> = admin
                    .exec_first(
                        "SELECT info FROM information_schema.processlist WHERE id = ?",
                        (id,),
                    )
                    .unwrap()
                    .flatten();
                if !mid_query || running.is_some_and(|q| q.contains("SLEEP")) {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            admin.exec_drop("KILL ?", (id,)).unwrap();
        };
        let failed = if mid_query {
            let killer = std::thread::spawn(kill);
            let failed = strategy.run_as(&key, Wait::Default, |c| c.query_drop("SELECT SLEEP(20)"));
            killer.join().unwrap();
            failed
        } else {
            kill();
            strategy.run_as(&key, Wait::Default, |c| c.query_drop("SELECT 1"))
        };
        assert!(matches!(failed, Err(Error::Op(_))), "{failed:?}");
        let next = strategy.run_as(&key, Wait::Default, |c| connection_id(c));
        match next {
            Ok(new) => assert_ne!(new, id),
            Err(e) => panic!("the killed connection was handed out again: {e}"),
        }
    }

    #[test]
    fn a_killed_connection_is_not_reused_through_the_spec_registry() {
        a_killed_connection_is_not_reused(false);
    }

    #[test]
    fn a_connection_killed_mid_query_is_not_reused_through_the_spec_registry() {
        a_killed_connection_is_not_reused(true);
    }

    /// InnoDB's lock wait timeout inside an op, under `retry` over MySQL, with the driver's
    /// error inside the application's own: rerun.
    #[test]
    fn a_lock_wait_timeout_inside_the_apps_error_is_retried() {
        let table = unique("turnstile_classify");
        let mut holder = admin();
        holder
            .query_drop(format!(
                "CREATE TABLE {table} (id INT PRIMARY KEY, v INT) ENGINE = InnoDB"
            ))
            .unwrap();
        holder
            .query_drop(format!("INSERT INTO {table} VALUES (1, 0)"))
            .unwrap();
        holder.query_drop("BEGIN").unwrap();
        holder
            .query_drop(format!("UPDATE {table} SET v = 1 WHERE id = 1"))
            .unwrap();
        let holder = Arc::new(Mutex::new(Some(holder)));
        let strategy = Retry::new(MySql::new(&url()).unwrap());
        let update = format!("UPDATE {table} SET v = v + 10 WHERE id = 1");
        let result = strategy.run(&Key::new("k").unwrap(), move |c| {
            c.query_drop("SET SESSION innodb_lock_wait_timeout = 1")
                .map_err(app_error)?;
            let updated = c.query_drop(&update).map_err(app_error);
            // The first attempt waited out the holder's row lock; let the next through.
            if let Some(mut holder) = holder.lock().unwrap().take() {
                holder.query_drop("COMMIT").unwrap();
            }
            updated.map(|()| c.attempt())
        });
        let mut admin = admin();
        let v: Option<i32> = admin.query_first(format!("SELECT v FROM {table}")).unwrap();
        admin.query_drop(format!("DROP TABLE {table}")).unwrap();
        match result {
            Ok(attempt) => assert_eq!(attempt, 2, "the busy attempt was rerun once"),
            Err(e) => panic!("a lock wait timeout inside the app's error was not retried: {e:?}"),
        }
        assert_eq!(v, Some(11));
    }
}

#[cfg(feature = "postgres")]
mod postgres_server {
    use turnstile::resource::Postgres;

    use super::*;

    use crate::server_urls::{postgres_admin as admin, postgres_url as url};

    /// `lock_timeout` inside an op, under `retry` over PostgreSQL, with the driver's error
    /// inside the application's own: rerun.
    #[test]
    fn a_lock_timeout_inside_the_apps_error_is_retried() {
        let table = unique("turnstile_classify");
        let mut holder = admin();
        holder
            .batch_execute(&format!(
                "CREATE TABLE {table} (id INT PRIMARY KEY, v INT); INSERT INTO {table} VALUES (1, 0);"
            ))
            .unwrap();
        holder
            .batch_execute(&format!("BEGIN; UPDATE {table} SET v = 1 WHERE id = 1;"))
            .unwrap();
        let holder = Arc::new(Mutex::new(Some(holder)));
        let strategy = Retry::new(Postgres::new(&url()).unwrap());
        let update =
            format!("SET LOCAL lock_timeout = '100ms'; UPDATE {table} SET v = v + 10 WHERE id = 1");
        let result = strategy.run(&Key::new("k").unwrap(), move |c| {
            let updated = c.batch_execute(&update).map_err(app_error);
            if let Some(mut holder) = holder.lock().unwrap().take() {
                holder.batch_execute("COMMIT").unwrap();
            }
            updated.map(|()| c.attempt())
        });
        let mut admin = admin();
        let v: i32 = admin
            .query_one(&format!("SELECT v FROM {table}"), &[])
            .unwrap()
            .get(0);
        admin.batch_execute(&format!("DROP TABLE {table}")).unwrap();
        match result {
            Ok(attempt) => assert_eq!(attempt, 2, "the busy attempt was rerun once"),
            Err(e) => panic!("a lock timeout inside the app's error was not retried: {e:?}"),
        }
        assert_eq!(v, 11);
    }
}
