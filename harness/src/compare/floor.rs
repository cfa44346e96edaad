//! The commit floor of a comparison: one 1-row commit on one thread, over one connection
//! to where the data lives, the median of [`COMMITS`]. No strategy's op can commit its
//! data faster, so the table's latencies read as multiples of it on whatever machine
//! this is.
//!
//! - SQLite data (`sqlite_commit_1row`, one per `synchronous` setting): `BEGIN
//!   IMMEDIATE`, an `INSERT` of one row, `COMMIT`, in a fresh file.
//! - PostgreSQL data (`postgres_commit_1row`) and MySQL / MariaDB data
//!   (`mysql_commit_1row`): `BEGIN` (`START TRANSACTION`), the same `INSERT` with a bound
//!   parameter, `COMMIT`, each one round trip, in a table of the floor's own (a generated
//!   `ts_…_floor` name) that it creates and drops.
//!
//! A server that refuses or does not answer is [`RunError::Unavailable`] (within the
//! driver's connect timeout); a URL that does not parse is [`RunError::Usage`].

use std::time::Instant;

use turnstile::sqlite::{Sqlite, Synchronous};

use super::report::Floor;
use super::stats;
use crate::data::DataSpec;
use crate::run::RunError;

/// Commits timed for a floor.
pub(crate) const COMMITS: usize = 200;

/// Times [`COMMITS`] calls of `commit` (given `0..COMMITS`, the value to insert) on this
/// thread: their median, and the rate of all of them.
fn measure<E>(
    kind: &str,
    sync: Option<String>,
    mut commit: impl FnMut(i64) -> Result<(), E>,
) -> Result<Floor, E> {
    let mut times = Vec::with_capacity(COMMITS);
    let start = Instant::now();
    for i in 0..COMMITS {
        let t = Instant::now();
        commit(i as i64)?;
        times.push(t.elapsed());
    }
    let wall = start.elapsed();
    let summary = stats::Summary::of(&mut times);
    Ok(Floor {
        kind: kind.to_owned(),
        sync,
        p50_us: summary.p50_us,
        ops_per_sec: stats::ops_per_sec(COMMITS as u64, wall),
    })
}

/// The floor of SQLite data at `sync`: 1-row commits in a fresh file.
pub(crate) fn sqlite(sync: Synchronous) -> Result<Floor, RunError> {
    let dir = tempfile::tempdir()?;
    let db = Sqlite::new(dir.path().join("floor.db")).synchronous(sync);
    let conn = turnstile::Connect::connect(&db)
        .map_err(|e| RunError::Unavailable(format!("floor database: {e}")))?;
    let sql = |e: turnstile::sqlite::rusqlite::Error| RunError::Unavailable(format!("floor: {e}"));
    conn.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, v INTEGER)")
        .map_err(sql)?;
    measure(
        "sqlite_commit_1row",
        Some(sync.as_str().to_ascii_lowercase()),
        |i| {
            conn.execute_batch("BEGIN IMMEDIATE")?;
            conn.execute("INSERT INTO t (v) VALUES (?1)", [i])?;
            conn.execute_batch("COMMIT")
        },
    )
    .map_err(sql)
}

/// The floor of data on a server: 1-row commits in a table of the floor's own on it.
///
/// # Errors
/// [`RunError::Usage`] for SQLite data (see [`sqlite`]), a URL that does not parse, or a
/// build without the server's feature; [`RunError::Unavailable`] when the server
/// refuses or fails.
pub(crate) fn server(data: &DataSpec) -> Result<Floor, RunError> {
    match data {
        #[cfg(feature = "postgres")]
        DataSpec::Postgres(url) => postgres(url, &table()?),
        #[cfg(feature = "mysql")]
        DataSpec::MySql(url) => mysql(url, &table()?),
        #[allow(unreachable_patterns)]
        other => Err(RunError::Usage(format!(
            "no commit floor on a server for data in {other} in this build"
        ))),
    }
}

/// The server `what` failed `doing`, for every cause the driver gives.
#[cfg(any(feature = "postgres", feature = "mysql"))]
fn failed(what: &str, doing: &str, error: &dyn std::error::Error) -> RunError {
    RunError::Unavailable(format!("{what}: {doing}: {}", crate::run::causes(error)))
}

/// A fresh name for a floor's table: the generated prefix of a run's tables, `floor`.
#[cfg(any(feature = "postgres", feature = "mysql"))]
fn table() -> Result<String, RunError> {
    let tables = crate::data::Tables::new(&crate::data::Tables::generated())?;
    Ok(format!("{}floor", tables.prefix()))
}

/// Ends a server floor: drops its table with `drop_table` (which first ends any
/// transaction a failed commit left open, since its locks would hold the drop up), on a
/// new connection if the measurement broke this one, and reports the measurement's error
/// first.
#[cfg(any(feature = "postgres", feature = "mysql"))]
fn finish<C: turnstile::Connect, E: std::error::Error>(
    connect: &C,
    mut conn: C::Resource,
    measured: Result<Floor, E>,
    table: &str,
    drop_table: impl Fn(&mut C::Resource, &str) -> Result<(), E>,
) -> Result<Floor, RunError> {
    let what = connect.identity();
    let dropped = match drop_table(&mut conn, table) {
        Ok(()) => Ok(()),
        // The measurement may have left the connection broken: one more try on a new one,
        // once the old one (and anything it still holds) is gone.
        Err(e) => {
            drop(conn);
            crate::run::connect_to(connect, what)
                .ok()
                .and_then(|mut fresh| drop_table(&mut fresh, table).ok())
                .ok_or(e)
        }
    };
    let floor = measured.map_err(|e| failed(what, "commit floor", &e))?;
    dropped.map_err(|e| {
        failed(
            what,
            &format!("dropping the commit floor's table {table}"),
            &e,
        )
    })?;
    Ok(floor)
}

/// `postgres_commit_1row`, in `table` (a generated name, created and dropped here).
#[cfg(feature = "postgres")]
pub(crate) fn postgres(url: &str, table: &str) -> Result<Floor, RunError> {
    use postgres::types::Type;
    use turnstile::Connect;

    // At the runs' isolation level (see `PostgresData`).
    let db = turnstile::resource::Postgres::new(url)
        .map_err(crate::run::open_error)?
        .isolation(turnstile::resource::Isolation::ReadCommitted);
    let mut client = crate::run::connect_to(&db, &format!("{}: commit floor", db.identity()))?;
    // `table` is a generated identifier; the value is a bound parameter.
    client
        .batch_execute(&format!(
            "CREATE TABLE {table} (id BIGSERIAL PRIMARY KEY, v BIGINT NOT NULL)"
        ))
        .map_err(|e| failed(db.identity(), "creating the commit floor's table", &e))?;
    let insert = format!("INSERT INTO {table} (v) VALUES ($1)");
    let measured = measure("postgres_commit_1row", None, |i| {
        client.batch_execute("BEGIN")?;
        // Typed: one round trip, as the workloads' statements (no prepare).
        client.query_typed(&insert, &[(&i, Type::INT8)])?;
        client.batch_execute("COMMIT")
    });
    finish(&db, client, measured, table, drop_postgres_table)
}

/// Drops a PostgreSQL floor's `table`.
#[cfg(feature = "postgres")]
fn drop_postgres_table(client: &mut postgres::Client, table: &str) -> Result<(), postgres::Error> {
    // Ends a transaction a failed commit left aborted (outside one, only a warning). A
    // session the server has not closed yet may still hold the table: the drop waits
    // 10 s at most (as a run's tables').
    let _ = client.batch_execute("ROLLBACK");
    client.batch_execute(&format!(
        "SET lock_timeout = '10s'; DROP TABLE IF EXISTS {table}"
    ))
}

/// `mysql_commit_1row`, in `table` (a generated name, created and dropped here).
#[cfg(feature = "mysql")]
pub(crate) fn mysql(url: &str, table: &str) -> Result<Floor, RunError> {
    use mysql::prelude::Queryable;
    use turnstile::Connect;

    // At the runs' isolation level (see `MySqlData`).
    let db = turnstile::resource::MySql::new(url)
        .map_err(crate::run::open_error)?
        .isolation(turnstile::resource::Isolation::ReadCommitted);
    let mut conn = crate::run::connect_to(&db, &format!("{}: commit floor", db.identity()))?;
    // `table` is a generated identifier; the value is a bound parameter.
    conn.query_drop(format!(
        "CREATE TABLE {table} (id BIGINT AUTO_INCREMENT PRIMARY KEY, v BIGINT NOT NULL) ENGINE = InnoDB"
    ))
    .map_err(|e| failed(db.identity(), "creating the commit floor's table", &e))?;
    let insert = format!("INSERT INTO {table} (v) VALUES (?)");
    let measured = measure("mysql_commit_1row", None, |i| {
        conn.query_drop("START TRANSACTION")?;
        // Prepared once, by the connection's statement cache: then one round trip.
        conn.exec_drop(&insert, (i,))?;
        conn.query_drop("COMMIT")
    });
    finish(&db, conn, measured, table, |conn, table| {
        // Ends a transaction a failed commit left open, with its locks (harmless outside
        // one). A session the server has not closed yet may still hold the table's
        // metadata lock: the drop waits 10 s at most (as a run's tables').
        let _ = conn.query_drop("ROLLBACK");
        conn.query_drop("SET SESSION lock_wait_timeout = 10")?;
        conn.query_drop(format!("DROP TABLE IF EXISTS {table}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(any(feature = "postgres", feature = "mysql"))]
    fn a_floor_table_is_a_fresh_identifier() {
        let (a, b) = (table().unwrap(), table().unwrap());
        assert_ne!(a, b);
        assert!(a.starts_with("ts_") && a.ends_with("_floor"), "{a}");
        assert!(crate::data::Tables::new(a.trim_end_matches("floor")).is_ok());
    }

    #[test]
    fn sqlite_data_has_no_server_floor() {
        assert!(matches!(server(&DataSpec::Sqlite), Err(RunError::Usage(_))));
    }

    /// A measurement that fails inside its transaction still drops the table, and its
    /// error is the one reported.
    #[test]
    #[cfg(feature = "postgres")]
    fn a_failed_measurement_drops_its_table_and_says_why() {
        use turnstile::Connect;

        let url = crate::conformance::postgres_url();
        let t = table().unwrap();
        let db = turnstile::resource::Postgres::new(&url).unwrap();
        let mut client = db.connect().unwrap();
        client
            .batch_execute(&format!("CREATE TABLE {t} (v BIGINT)"))
            .unwrap();
        // A commit that fails half-way leaves its transaction open and aborted: the
        // connection refuses every statement until it ends.
        client
            .batch_execute(&format!("BEGIN; INSERT INTO {t} (v) VALUES (1)"))
            .unwrap();
        let failed = client.batch_execute("SELECT 1 / 0").unwrap_err();
        let result = finish(
            &db,
            client,
            Err::<Floor, _>(failed),
            &t,
            drop_postgres_table,
        );
        match result {
            Err(RunError::Unavailable(m)) => {
                assert!(
                    m.contains("commit floor") && m.contains("division by zero"),
                    "{m}"
                )
            }
            other => panic!("{other:?}"),
        }
        let mut client = db.connect().unwrap();
        let left: i64 = client
            .query_one("SELECT count(*) FROM pg_tables WHERE tablename = $1", &[&t])
            .unwrap()
            .get(0);
        assert_eq!(left, 0, "{t} is left on PostgreSQL");
    }

    /// The floor creates its table and drops it (on the servers tests use; fails when
    /// they are down).
    #[test]
    #[cfg(all(feature = "postgres", feature = "mysql"))]
    fn server_floors_measure_and_drop_their_table() {
        use crate::conformance::{mysql_url, postgres_url};

        let t = table().unwrap();
        let floor = postgres(&postgres_url(), &t).unwrap();
        assert_eq!(floor.kind, "postgres_commit_1row");
        assert!(floor.sync.is_none() && floor.p50_us > 0.0 && floor.ops_per_sec > 0.0);
        let mut client = postgres::Client::connect(&postgres_url(), postgres::NoTls).unwrap();
        let left: i64 = client
            .query_one("SELECT count(*) FROM pg_tables WHERE tablename = $1", &[&t])
            .unwrap()
            .get(0);
        assert_eq!(left, 0, "{t} is left on PostgreSQL");

        let t = table().unwrap();
        let floor = mysql(&mysql_url(), &t).unwrap();
        assert_eq!(floor.kind, "mysql_commit_1row");
        assert!(floor.sync.is_none() && floor.p50_us > 0.0 && floor.ops_per_sec > 0.0);
        use mysql::prelude::Queryable;
        let mut conn = mysql::Conn::new(mysql::Opts::from_url(&mysql_url()).unwrap()).unwrap();
        let left: Option<i64> = conn
            .exec_first(
                "SELECT count(*) FROM information_schema.tables
                 WHERE table_schema = DATABASE() AND table_name = ?",
                (&t,),
            )
            .unwrap();
        assert_eq!(left, Some(0), "{t} is left on MySQL");
    }
}
