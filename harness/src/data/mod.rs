//! Where a run keeps its data: a SQLite file in the run's directory (the default), a
//! PostgreSQL or MySQL / MariaDB database on a server (`--data postgres://…`,
//! `--data mysql://…`), and in each of them either plain tables or versioned records.
//!
//! One run path serves them all: [`run`](crate::run()), its threads, its worker
//! processes and its checkers are generic over a [`Backend`], which opens the data and
//! owns what is specific to it (the opener strategies are built over, the strategy
//! registry, dropping the run's tables, an integrity check). The statements of each
//! workload, for each kind of data, live in that workload's module
//! ([`counter`](crate::workload::counter), …) behind a trait that [`WorkloadData`]
//! gathers, all with bound parameters.
//!
//! - [`SqliteData`]: `rusqlite::Connection`, in a fresh database per run.
//! - [`PostgresData`], [`MySqlData`] (features `postgres`, `mysql`): a `postgres::Client` or
//!   a `mysql::Conn` on a shared server. Each run creates its own tables, named with a
//!   generated prefix ([`Tables`]), and drops them when it ends, so runs on the same
//!   database never meet (unless `--keep` keeps a failed run's tables to look at).
//! - [`VersionedData`] (feature `optimistic`): the records of a
//!   [`Versioned`](turnstile::optimistic::Versioned) handle over any of the three, for
//!   the strategies whose ops work on versioned records (`optimistic`). Their writes
//!   apply at commit, so lock strategies over them always run in their transaction.
//!
//! The `file_store` workload keeps its data in a file whatever the backend: the database
//! is then only probed, and the strategy's exclusion alone protects the file.

#[cfg(feature = "mysql")]
mod mysql;
#[cfg(feature = "postgres")]
mod postgres;
mod sqlite;
#[cfg(feature = "optimistic")]
mod versioned;

use std::fmt;

use serde::{Deserialize, Serialize};
use turnstile::spec::{Registry, redact_url};
use turnstile::sqlite::Sqlite;
use turnstile::{Connect, Transact};

use crate::check::CheckResult;
use crate::run::{RunError, WorkerSpec};
use crate::workload::OpError;
use crate::workload::bank::BankData;
use crate::workload::counter::CounterData;
use crate::workload::kv::KvData;
use crate::workload::notify_once::NotifyData;

#[cfg(feature = "mysql")]
pub use self::mysql::MySqlData;
#[cfg(feature = "postgres")]
pub use self::postgres::PostgresData;
#[cfg(feature = "postgres")]
pub(crate) use self::postgres::pg;
pub use self::sqlite::SqliteData;
#[cfg(feature = "optimistic")]
pub use self::versioned::VersionedData;

/// Where a run keeps its data (`turnstile check --data`).
///
/// Parses from `sqlite`, `postgres://…` (or `postgresql://…`, or a URL with
/// `postgres://`'s query parameters) and `mysql://…`; any other scheme is refused, and so
/// is a URL the driver cannot use (no host, say: [`DataSpec::check`]). `Debug` and
/// `Display` hide a password.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum DataSpec {
    /// A fresh SQLite database in the run's directory (or `--db PATH`). The default.
    #[default]
    Sqlite,
    /// A PostgreSQL database: `postgres://user:password@host:port/database`.
    Postgres(String),
    /// A MySQL / MariaDB database: `mysql://user:password@host:port/database`.
    #[serde(rename = "mysql")]
    MySql(String),
}

impl DataSpec {
    /// Whether the data lives on a server shared with other runs.
    pub fn is_server(&self) -> bool {
        !matches!(self, DataSpec::Sqlite)
    }

    /// Checks a server URL as far as it can be without connecting: it parses, and names
    /// what the driver needs to connect (a host) and what the run needs on the server (a
    /// MySQL database: MySQL has no default one, where PostgreSQL's is the user's name).
    /// Nothing is connected. In a build without the server's feature, nothing is checked
    /// (the run refuses the data).
    ///
    /// # Errors
    /// [`RunError::Usage`] saying what is wrong (never the password).
    pub fn check(&self) -> Result<(), RunError> {
        match self {
            #[cfg(feature = "postgres")]
            DataSpec::Postgres(url) => self::postgres::checked(url)
                .map(drop)
                .map_err(RunError::Usage),
            #[cfg(feature = "mysql")]
            DataSpec::MySql(url) => {
                let db = turnstile::resource::MySql::new(url).map_err(crate::run::open_error)?;
                // MySQL has no default database: without one every statement on the run's
                // tables fails (`ERROR 1046 No database selected`), which would read as a
                // server out of reach. (PostgreSQL's default is the user's name.)
                if db.opts().get_db_name().is_none_or(str::is_empty) {
                    return Err(RunError::Usage(format!(
                        "MySQL data needs a database name, and {:?} names none: give the \
                         database the run's tables go in after the host, as \
                         mysql://user@host:port/DATABASE",
                        redact_url(url)
                    )));
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

impl fmt::Display for DataSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DataSpec::Sqlite => f.write_str("sqlite"),
            DataSpec::Postgres(url) | DataSpec::MySql(url) => f.write_str(&redact_url(url)),
        }
    }
}

impl fmt::Debug for DataSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DataSpec({self})")
    }
}

impl std::str::FromStr for DataSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("sqlite") {
            return Ok(DataSpec::Sqlite);
        }
        // Schemes are case-insensitive (RFC 3986); the drivers' parsers are not: one
        // reads `Postgres://…` as a `key=value` string.
        let (scheme, url) = match s.split_once("://") {
            Some((scheme, rest)) => {
                let scheme = scheme.to_ascii_lowercase();
                let url = format!("{scheme}://{rest}");
                (Some(scheme), url)
            }
            None => (None, s.to_owned()),
        };
        let data = match scheme.as_deref() {
            Some("postgres" | "postgresql") => DataSpec::Postgres(url),
            Some("mysql") => DataSpec::MySql(url),
            _ => {
                return Err(format!(
                    "unknown data {:?}: use sqlite, postgres://user@host:port/db or mysql://user@host:port/db",
                    redact_url(s)
                ));
            }
        };
        data.check().map_err(|e| e.reason())?;
        Ok(data)
    }
}

/// The longest table prefix a worker accepts: the longest table name it makes stays
/// far below PostgreSQL's 63 and MySQL's 64 characters.
const MAX_PREFIX: usize = 32;

/// The tables of one run: each workload's table name with the run's prefix. The prefix is
/// generated ([`Tables::generated`]) or empty (a fresh SQLite database), and validated
/// wherever it is read, since table names cannot be bound parameters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tables {
    prefix: String,
    /// The counters (`counter`).
    pub counter: String,
    /// The bank's accounts (`account`).
    pub account: String,
    /// The notifications' flags (`notification`).
    pub notification: String,
    /// The key-value records (`kv`).
    pub kv: String,
    /// The versioned records (`versions`).
    pub versions: String,
}

impl Tables {
    /// The tables named `PREFIX` + `counter`, `account`, … .
    ///
    /// # Errors
    /// [`RunError::Usage`] unless `prefix` is at most 32 lower-case ASCII letters, digits or
    /// `_`, starting with a letter or `_` (or empty).
    pub fn new(prefix: &str) -> Result<Self, RunError> {
        let mut bytes = prefix.bytes();
        let valid = prefix.len() <= MAX_PREFIX
            && bytes
                .next()
                .is_none_or(|b| b.is_ascii_lowercase() || b == b'_')
            && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !valid {
            return Err(RunError::Usage(format!(
                "table prefix {prefix:?} must be at most {MAX_PREFIX} lower-case ASCII letters, digits or '_', not starting with a digit"
            )));
        }
        let name = |table: &str| format!("{prefix}{table}");
        Ok(Tables {
            counter: name("counter"),
            account: name("account"),
            notification: name("notification"),
            kv: name("kv"),
            versions: name("versions"),
            prefix: prefix.to_owned(),
        })
    }

    /// A fresh prefix for a run on a shared server: `ts_` and 12 random hex digits, `_`.
    pub fn generated() -> String {
        format!("ts_{:012x}_", fastrand::u64(..) >> 16)
    }

    /// The prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Every table a run may create.
    pub fn all(&self) -> [&str; 5] {
        [
            &self.counter,
            &self.account,
            &self.notification,
            &self.kv,
            &self.versions,
        ]
    }
}

/// What a workload's ops work on: the statements of every workload on one kind of data
/// (a `rusqlite::Connection`, a `postgres::Client`, a `mysql::Conn`, a `Versioned`
/// handle), and a trivial one that proves the data is reachable.
pub trait WorkloadData: CounterData + BankData + NotifyData + KvData + Send + 'static {
    /// One trivial read.
    ///
    /// # Errors
    /// When the data cannot be reached.
    fn probe(&mut self) -> Result<(), OpError>;
}

/// One kind of data a run can keep: how to open it from a worker's spec, and what is
/// specific to it besides the workloads' statements.
pub trait Backend: Sized + Send + Sync + 'static {
    /// Opens the resources the strategies serialize; ops get its resource.
    type Connect: Transact<Resource: WorkloadData> + Clone;

    /// The data `spec` describes (nothing is connected or created yet).
    ///
    /// # Errors
    /// [`RunError::Usage`] for a URL or table prefix that does not parse.
    fn open(spec: &WorkerSpec) -> Result<Self, RunError>;

    /// The strategies that run over this data, by spec.
    fn registry() -> Registry<Self::Connect>;

    /// The opener.
    fn connect(&self) -> &Self::Connect;

    /// The run's tables.
    fn tables(&self) -> &Tables;

    /// Whether lock strategies may run each statement in autocommit here, so that only
    /// their lock excludes. Default: yes.
    fn autocommit(&self) -> bool {
        true
    }

    /// Where the data is, for the report (never a password).
    fn describe(&self) -> String {
        self.connect().identity().to_owned()
    }

    /// The store's own consistency check after a run, if it has one. Default: none.
    fn integrity(&self) -> Option<CheckResult> {
        None
    }

    /// Drops the run's tables (on a shared server). Default: nothing to drop.
    ///
    /// # Errors
    /// When the server refuses.
    fn drop_tables(&self) -> Result<(), OpError> {
        Ok(())
    }
}

/// Something to do with the backend a worker spec names: the run, a worker process, the
/// capability probe.
pub(crate) trait WithBackend {
    /// What it gives back.
    type Output;

    /// Does it with `backend` and the strategies over it.
    fn with<B: Backend>(
        self,
        backend: B,
        registry: &Registry<B::Connect>,
    ) -> Result<Self::Output, RunError>;
}

/// Opens the backend `spec` names and hands it to `job`, with `sqlite` as the registry of
/// plain SQLite data (callers may bring their own) and the builtin ones elsewhere.
pub(crate) fn with_backend<W: WithBackend>(
    spec: &WorkerSpec,
    sqlite: &Registry<Sqlite>,
    job: W,
) -> Result<W::Output, RunError> {
    match (&spec.data, spec.versioned) {
        (DataSpec::Sqlite, false) => job.with(SqliteData::open(spec)?, sqlite),
        #[cfg(feature = "optimistic")]
        (DataSpec::Sqlite, true) => visit::<VersionedData<SqliteData>, W>(spec, job),
        #[cfg(feature = "postgres")]
        (DataSpec::Postgres(_), false) => visit::<PostgresData, W>(spec, job),
        #[cfg(all(feature = "postgres", feature = "optimistic"))]
        (DataSpec::Postgres(_), true) => visit::<VersionedData<PostgresData>, W>(spec, job),
        #[cfg(feature = "mysql")]
        (DataSpec::MySql(_), false) => visit::<MySqlData, W>(spec, job),
        #[cfg(all(feature = "mysql", feature = "optimistic"))]
        (DataSpec::MySql(_), true) => visit::<VersionedData<MySqlData>, W>(spec, job),
        #[allow(unreachable_patterns)]
        (data, versioned) => Err(RunError::Usage(format!(
            "this build of the harness cannot keep {}data in {data} (a Cargo feature is off)",
            if versioned { "versioned " } else { "" }
        ))),
    }
}

#[cfg(any(feature = "postgres", feature = "mysql", feature = "optimistic"))]
fn visit<B: Backend, W: WithBackend>(spec: &WorkerSpec, job: W) -> Result<W::Output, RunError> {
    job.with(B::open(spec)?, &B::registry())
}

/// The names of the strategies over versioned records (the same over every store).
pub(crate) fn versioned_names() -> Vec<(String, String)> {
    #[cfg(feature = "optimistic")]
    {
        let registry = crate::controls::versioned_registry::<Sqlite>();
        registry
            .names()
            .map(|(n, s)| (n.to_owned(), s.to_owned()))
            .collect()
    }
    #[cfg(not(feature = "optimistic"))]
    Vec::new()
}

/// What `turnstile list` prints about strategies: those over SQLite data (`sqlite`, then
/// the ones over versioned records only, then those over a server's data only, as
/// `pg-xact`, each saying which `--data` it needs), then the names over each server's
/// data.
pub fn listing(sqlite: &Registry<Sqlite>) -> String {
    let mut out = String::new();
    let tables = table_names(&DataSpec::Sqlite, sqlite);
    let versioned_only: Vec<(String, String)> = versioned_names()
        .into_iter()
        .filter(|(n, _)| !tables.iter().any(|(t, _)| t == n))
        .collect();
    for (name, summary) in &tables {
        out.push_str(&format!("{name:<14} {summary}\n"));
    }
    for (name, summary) in &versioned_only {
        out.push_str(&format!("{name:<14} {summary} [on versioned records]\n"));
    }
    for (name, summary, needs) in only_elsewhere(&DataSpec::Sqlite, sqlite) {
        out.push_str(&format!(
            "{name:<14} {summary} [needs --data {}]\n",
            needs.join(" or --data ")
        ));
    }
    for data in [
        DataSpec::Postgres(String::new()),
        DataSpec::MySql(String::new()),
    ] {
        let names: Vec<String> = table_names(&data, sqlite)
            .into_iter()
            .chain(versioned_only.iter().cloned())
            .map(|(n, _)| n)
            .collect();
        if !names.is_empty() {
            out.push_str(&format!(
                "with --data {}: {}\n",
                kind(&data),
                names.join(", ")
            ));
        }
    }
    out
}

/// How a message names a kind of data: `sqlite`, `postgres://…`, `mysql://…`.
fn kind(data: &DataSpec) -> &'static str {
    match data {
        DataSpec::Sqlite => "sqlite",
        DataSpec::Postgres(_) => "postgres://…",
        DataSpec::MySql(_) => "mysql://…",
    }
}

/// The strategies the harness runs over other data than `data` but not over it (over
/// SQLite data: `pg-xact`, which needs PostgreSQL's), each with its summary and the
/// kinds of data it runs over ([`kind`]), in the order of their registries.
fn only_elsewhere(
    data: &DataSpec,
    sqlite: &Registry<Sqlite>,
) -> Vec<(String, String, Vec<&'static str>)> {
    let mut found: Vec<(String, String, Vec<&'static str>)> = Vec::new();
    for other in [
        DataSpec::Sqlite,
        DataSpec::Postgres(String::new()),
        DataSpec::MySql(String::new()),
    ] {
        if kind(&other) == kind(data) {
            continue;
        }
        for (name, summary) in table_names(&other, sqlite) {
            if runs_over(&name, data, sqlite) {
                continue;
            }
            match found.iter_mut().find(|(n, _, _)| *n == name) {
                Some((_, _, kinds)) => kinds.push(kind(&other)),
                None => found.push((name, summary, vec![kind(&other)])),
            }
        }
    }
    found
}

/// What a message that lists the strategies over `data` (an unknown strategy's, `known:
/// …`) adds about those that run only over other data: `; with --data postgres://…:
/// pg-xact` over SQLite data; nothing when there are none.
pub fn known_elsewhere(data: &DataSpec, sqlite: &Registry<Sqlite>) -> String {
    let elsewhere = only_elsewhere(data, sqlite);
    let mut out = String::new();
    for other in [
        DataSpec::Sqlite,
        DataSpec::Postgres(String::new()),
        DataSpec::MySql(String::new()),
    ] {
        let names: Vec<&str> = elsewhere
            .iter()
            .filter(|(_, _, kinds)| kinds.contains(&kind(&other)))
            .map(|(n, _, _)| n.as_str())
            .collect();
        if !names.is_empty() {
            out.push_str(&format!(
                "; with --data {}: {}",
                kind(&other),
                names.join(", ")
            ));
        }
    }
    out
}

/// Whether the harness can run `strategy` over `data`: its name is known over that data's
/// tables (over SQLite, in `sqlite`, the caller's registry) or over versioned records.
pub fn runs_over(strategy: &str, data: &DataSpec, sqlite: &Registry<Sqlite>) -> bool {
    turnstile::spec::Spec::parse(strategy).is_ok_and(|spec| {
        let known = |names: Vec<(String, String)>| names.iter().any(|(n, _)| n == spec.name());
        known(table_names(data, sqlite)) || known(versioned_names())
    })
}

/// The strategy names known over plain tables in `data` (`sqlite` is the caller's
/// registry), with their summaries.
pub(crate) fn table_names(data: &DataSpec, sqlite: &Registry<Sqlite>) -> Vec<(String, String)> {
    fn owned<C: Connect>(r: &Registry<C>) -> Vec<(String, String)> {
        r.names()
            .map(|(n, s)| (n.to_owned(), s.to_owned()))
            .collect()
    }
    match data {
        DataSpec::Sqlite => owned(sqlite),
        #[cfg(feature = "postgres")]
        DataSpec::Postgres(_) => owned(&PostgresData::registry()),
        #[cfg(feature = "mysql")]
        DataSpec::MySql(_) => owned(&MySqlData::registry()),
        #[allow(unreachable_patterns)]
        _ => Vec::new(),
    }
}

/// The run's tables on a shared server: a prefix is required, so two runs never share a
/// table.
#[cfg(any(feature = "postgres", feature = "mysql"))]
fn server_tables(spec: &WorkerSpec) -> Result<Tables, RunError> {
    if spec.tables.is_empty() {
        return Err(RunError::Usage(format!(
            "data on a server needs a table prefix ({})",
            spec.data
        )));
    }
    Tables::new(&spec.tables)
}

/// Maps a driver's "cannot connect" to an op error.
pub(crate) fn backend_error(e: impl Into<turnstile::BoxError>) -> OpError {
    OpError::Backend(e.into())
}

/// Runs `fill` in one transaction of `connect` on `resource`, after `create` outside it
/// (MySQL commits DDL implicitly). What workloads do to set their tables up.
pub(crate) fn in_transaction<C: Transact>(
    connect: &C,
    resource: &mut C::Resource,
    fill: impl FnOnce(&mut C::Resource) -> Result<(), OpError>,
) -> Result<(), OpError> {
    connect
        .begin(resource, &[])
        .map_err(|e| backend_error(e.to_string()))?;
    match fill(resource) {
        Ok(()) => connect
            .commit(resource)
            .map_err(|e| backend_error(e.to_string())),
        Err(e) => {
            let _ = connect.rollback(resource);
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_specs_parse_by_scheme_and_hide_passwords() {
        assert_eq!("sqlite".parse::<DataSpec>(), Ok(DataSpec::Sqlite));
        assert!(matches!(
            "postgresql://u:pw@h/db".parse::<DataSpec>(),
            Ok(DataSpec::Postgres(_))
        ));
        let mysql: DataSpec = "mysql://root:secret@127.0.0.1:3306/test".parse().unwrap();
        assert!(matches!(mysql, DataSpec::MySql(_)));
        assert!(!format!("{mysql} {mysql:?}").contains("secret"));
        // A password parameter whose name is percent-encoded still authenticates
        // (drivers decode the name), so it is hidden too.
        let postgres: DataSpec = "postgres://u@h/db?pass%77ord=secret".parse().unwrap();
        assert_eq!(postgres.to_string(), "postgres://u@h/db?pass%77ord=***");
        for bad in ["", "redis://h", "postgres", "file:/tmp/x", "mysql:/x"] {
            assert!(bad.parse::<DataSpec>().is_err(), "{bad:?}");
        }
    }

    /// MySQL has no default database: a MySQL data URL without one is refused as it is
    /// parsed, saying so (never the password), instead of a run that fails on the server
    /// with `No database selected`. A PostgreSQL one without is the user's database.
    #[cfg(all(feature = "mysql", feature = "postgres"))]
    #[test]
    fn mysql_data_needs_a_database_name() {
        for url in [
            "mysql://root@127.0.0.1:3306/",
            "mysql://root@127.0.0.1:3306",
            "mysql://root:hunter2@127.0.0.1:3306",
            "MySQL://root@127.0.0.1",
            "mysql://root@127.0.0.1:3306/?prefer_socket=false",
        ] {
            let refused = url.parse::<DataSpec>().unwrap_err();
            assert!(
                refused.contains("needs a database name"),
                "{url}: {refused}"
            );
            assert!(!refused.contains("hunter2"), "{refused}");
        }
        for url in [
            "mysql://root@127.0.0.1:3306/test",
            "mysql://root@127.0.0.1:3306?db_name=test",
            "postgres://postgres@127.0.0.1:5432",
            "postgres://postgres@127.0.0.1:5432/",
        ] {
            assert!(url.parse::<DataSpec>().is_ok(), "{url}");
        }
    }

    /// The worker spec of a `kv` run over `data` (nothing is connected).
    #[cfg(any(feature = "postgres", feature = "mysql"))]
    fn spec_over(data: DataSpec, dir: &std::path::Path) -> WorkerSpec {
        let config = crate::RunConfig::new("mutex", crate::Workload::Kv).data(data);
        let paths = crate::workload::Paths::new(dir, None);
        WorkerSpec::of_run(&config, paths, &crate::registry())
    }

    /// The isolation level of `client`'s next transaction.
    #[cfg(feature = "postgres")]
    fn pg_isolation(client: &mut ::postgres::Client) -> String {
        client
            .query_one("SHOW transaction_isolation", &[])
            .unwrap()
            .get(0)
    }

    /// The harness's PostgreSQL sessions run at `READ COMMITTED` though the URL makes
    /// every session default to `SERIALIZABLE`: in autocommit (the session's default, which
    /// lock strategies' ops and the checkers' final reads get) and in the transactions the
    /// resource begins.
    #[test]
    #[cfg(feature = "postgres")]
    fn postgres_data_runs_at_read_committed_whatever_the_default() {
        let url = crate::conformance::postgres_url();
        let sep = if url.contains('?') { '&' } else { '?' };
        let url = format!("{url}{sep}options=-c%20default_transaction_isolation%3Dserializable");
        // The URL does make a session serializable.
        let plain = self::postgres::checked(&url).unwrap();
        assert_eq!(pg_isolation(&mut plain.connect().unwrap()), "serializable");

        let dir = tempfile::tempdir().unwrap();
        let data = PostgresData::open(&spec_over(DataSpec::Postgres(url), dir.path())).unwrap();
        let db = data.connect();
        let mut client = db.connect().unwrap();
        assert_eq!(pg_isolation(&mut client), "read committed");
        db.begin(&mut client, &[]).unwrap();
        assert_eq!(pg_isolation(&mut client), "read committed");
        db.rollback(&mut client).unwrap();
    }

    /// The harness's MySQL sessions run at `READ COMMITTED` though the server's default is
    /// stricter (InnoDB's `REPEATABLE READ`, as on the test server).
    #[test]
    #[cfg(feature = "mysql")]
    fn mysql_data_runs_at_read_committed_whatever_the_default() {
        use ::mysql::prelude::Queryable;
        fn isolation(conn: &mut ::mysql::Conn, scope: &str) -> String {
            conn.query_first::<String, _>(format!("SELECT @@{scope}.transaction_isolation"))
                .or_else(|_| conn.query_first(format!("SELECT @@{scope}.tx_isolation")))
                .unwrap()
                .unwrap()
        }
        let url = crate::conformance::mysql_url();
        let mut plain = turnstile::resource::MySql::new(&url)
            .unwrap()
            .connect()
            .unwrap();
        let default = isolation(&mut plain, "GLOBAL");
        assert_ne!(
            default, "READ-COMMITTED",
            "the test needs a stricter default"
        );
        assert_eq!(isolation(&mut plain, "SESSION"), default);

        let dir = tempfile::tempdir().unwrap();
        let data = MySqlData::open(&spec_over(DataSpec::MySql(url), dir.path())).unwrap();
        let mut conn = data.connect().connect().unwrap();
        assert_eq!(isolation(&mut conn, "SESSION"), "READ-COMMITTED");
    }

    #[test]
    fn table_prefixes_are_identifiers() {
        assert_eq!(Tables::new("").unwrap().counter, "counter");
        let generated = Tables::generated();
        let tables = Tables::new(&generated).unwrap();
        assert!(tables.notification.len() < 40, "{tables:?}");
        assert_ne!(generated, Tables::generated());
        for bad in ["1x_", "a-b", "x; DROP TABLE y", "A_", &"x".repeat(33)] {
            assert!(Tables::new(bad).is_err(), "{bad:?}");
        }
    }
}
