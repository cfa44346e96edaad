//! MySQL / MariaDB as a resource.

use std::any::Any;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use mysql::prelude::Queryable;
use mysql::{Conn, Opts, OptsBuilder};
use turnstile_core::{
    BoxError, Connect, Error, Fence, FenceClaim, MAX_TIMEOUT, StrategyError, Transact,
    TransactError, find_error,
};

use super::{
    DEFAULT_CONNECT_TIMEOUT, Isolation, MARKER_SAVEPOINT, PROBE_SAVEPOINT, fence_column,
    server_identity,
};

/// `ER_LOCK_WAIT_TIMEOUT`: InnoDB gave up waiting for a row lock.
const ER_LOCK_WAIT_TIMEOUT: u16 = 1205;
/// `ER_LOCK_DEADLOCK`: InnoDB chose this transaction as a deadlock victim (rolled back).
const ER_LOCK_DEADLOCK: u16 = 1213;
/// `ER_SERVER_SHUTDOWN`: the server is shutting down; it closes the connection next.
const ER_SERVER_SHUTDOWN: u16 = 1053;
/// `ER_CONNECTION_KILLED` (MariaDB): an administrator's `KILL` ended the connection.
const ER_CONNECTION_KILLED: u16 = 1927;
/// `ER_NO_SUCH_TABLE`.
const ER_NO_SUCH_TABLE: u16 = 1146;
/// `ER_SP_DOES_NOT_EXIST`, also returned for an unknown savepoint.
const ER_SP_DOES_NOT_EXIST: u16 = 1305;

const FENCE_TABLE: &str = "CREATE TABLE IF NOT EXISTS turnstile_fences (
    backend VARBINARY(255) NOT NULL,
    name VARBINARY(1024) NOT NULL,
    fence BIGINT UNSIGNED NOT NULL,
    PRIMARY KEY (backend, name)
) ENGINE = InnoDB";

/// Opens connections to one MySQL or MariaDB database; each op runs in an InnoDB
/// transaction.
///
/// The op gets a [`mysql::Conn`]. Defaults: the server's isolation level (its
/// `transaction_isolation`, InnoDB's `REPEATABLE READ` unless configured;
/// [`isolation`](MySql::isolation) chooses one), a [`DEFAULT_CONNECT_TIMEOUT`] to
/// connect, no read timeout: a server that stops answering but keeps its connections open
/// (a stopped process, a host gone without a reset) blocks a statement until TCP gives up,
/// unless [`read_timeout`](MySql::read_timeout) bounds it.
///
/// What the strategies report of its logins and of `BEGIN` (with its fence check) and
/// `COMMIT` ([`Error::Unavailable`], [`Error::Resource`]) is in words (a failed rollback
/// or savepoint statement keeps the driver's [`mysql::Error`], which the queue reads): the server's message
/// (`ERROR 1045 (28000): Access denied …`), the driver's (`Could not connect to address
/// …`) or the system's, or `no answer within …` for a login past the connect timeout or a
/// read past the read timeout. It does not name the server: its caller has the
/// [`identity`](Connect::identity) (a lock backend on a server, such as
/// [`MySqlLock`](crate::lock::MySqlLock), names its own).
///
/// Fences are recorded in a `turnstile_fences` table (created on first use, outside any
/// transaction, because DDL commits implicitly on MySQL). The op must not run DDL or
/// `COMMIT` itself: that ends the transaction, and `commit` then fails with
/// [`TransactError::Ended`] (the strategy's [`Error::TransactionEnded`]).
///
/// ```no_run
/// use turnstile::resource::MySql;
/// use turnstile::Connect;
/// use mysql::prelude::Queryable;
///
/// let db = MySql::new("mysql://root@127.0.0.1:3306/test")?;
/// assert_eq!(db.identity(), "mysql://root@127.0.0.1:3306/test");
/// let mut conn = db.connect()?;
/// let one: Option<i64> = conn.query_first("SELECT 1")?;
/// assert_eq!(one, Some(1));
/// # Ok::<(), Box<dyn std::error::Error + Send + Sync>>(())
/// ```
#[derive(Clone)]
pub struct MySql {
    opts: MySqlOpts,
    identity: String,
    connect_timeout: Duration,
    read_timeout: Option<Duration>,
    isolation: Option<Isolation>,
    fence_table_ready: Arc<AtomicBool>,
}

/// Shows the identity only: the options hold the password.
impl std::fmt::Debug for MySql {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MySql")
            .field("identity", &self.identity)
            .field("connect_timeout", &self.connect_timeout)
            .field("read_timeout", &self.read_timeout)
            .field("isolation", &self.isolation)
            .finish_non_exhaustive()
    }
}

/// [`MySql`]'s parsed connection options: the driver's [`mysql::Opts`], read through
/// `Deref` (`db.opts().get_db_name()`), [`AsRef`], or taken with [`Opts::from`] (or
/// `.into()`, which [`mysql::Conn::new`] and [`OptsBuilder::from_opts`] accept as they
/// are).
///
/// Its `Debug` shows the server, the user and the database, and the password as `***`.
/// The driver's [`Opts`] it dereferences to prints the password in clear in its own
/// `Debug` (`pass: Some("…")`): **do not log `*db.opts()`, `db.opts().as_ref()`, nor an
/// `Opts` made from it.**
///
/// ```
/// use turnstile::resource::MySql;
///
/// let db = MySql::new("mysql://app:S3cr3t@db.example:3306/app")?;
/// assert_eq!(db.opts().get_db_name(), Some("app"));
/// assert!(!format!("{:?}", db.opts()).contains("S3cr3t"));
/// let opts: mysql::Opts = db.opts().clone().into();
/// assert_eq!(opts.get_pass(), Some("S3cr3t"));
/// # Ok::<(), Box<dyn std::error::Error + Send + Sync>>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct MySqlOpts(Opts);

impl std::ops::Deref for MySqlOpts {
    type Target = Opts;

    fn deref(&self) -> &Opts {
        &self.0
    }
}

impl AsRef<Opts> for MySqlOpts {
    fn as_ref(&self) -> &Opts {
        &self.0
    }
}

impl From<MySqlOpts> for Opts {
    fn from(opts: MySqlOpts) -> Opts {
        opts.0
    }
}

/// The server, user and database; the password as `***`.
impl std::fmt::Debug for MySqlOpts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let opts = &self.0;
        f.debug_struct("MySqlOpts")
            .field("host", &opts.get_ip_or_hostname())
            .field("port", &opts.get_tcp_port())
            .field("socket", &opts.get_socket())
            .field("user", &opts.get_user())
            .field("pass", &opts.get_pass().map(|_| "***"))
            .field("db_name", &opts.get_db_name())
            .finish_non_exhaustive()
    }
}

impl MySql {
    /// An opener for `url` (`mysql://user:password@host:port/database`). Nothing is
    /// connected yet.
    ///
    /// # Errors
    /// [`Error::Config`] when the URL does not parse, or when the driver would read a piece
    /// of its password as the host, port or database: a raw `@` in the password followed
    /// by a `/`, `?` or `#` in it (`mysql://app:P@ss#1@db/app`), a password of digits and
    /// then `?`, `/` or `#` (`mysql://u:7?a=b@h`: the host `u`, port 7), a password that
    /// starts with `//` (`mysql://app://Xy:7k9@db/app`: the host `app`), a user with a raw
    /// `/`, `?` or `#`, with a password or without (`mysql://us/er:pw@h/db`: the host `us`,
    /// the database `er:pw@h`; `mysql://us/er@h/db`: the host `us`), or an `@` in the
    /// database name or query (`mysql://h/my@db`, which may be the user `h/my` on the host
    /// `db`; `mysql://u@h:3306/my@db`), unless in the value of `user`, `password`, `socket`
    /// or `db_name` (percent-encode them, `%40` for `@`, `%2F`, `%3F`, `%23`:
    /// `mysql://h/my%40db` is the database `my@db`). A
    /// raw `@` alone in the password (`mysql://app:P@ss@db/app`) is read as written. A
    /// `%` in the user info or a `password` parameter that starts no percent-escape
    /// (`mysql://u:secret%zz@h/db`) is refused too, naming the part, never its text (write
    /// a `%` itself as `%25`): the driver would send it as written. The
    /// message shows the URL with its password, and the value of a parameter the driver
    /// refused (a misspelt `?passwd=…`), as `***`.
    pub fn new(url: &str) -> Result<Self, StrategyError> {
        let opts = parse_url(url)?;
        Ok(MySql {
            identity: identity(&opts),
            opts: MySqlOpts(opts),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            read_timeout: None,
            isolation: None,
            fence_table_ready: Arc::new(AtomicBool::new(false)),
        })
    }

    /// Sets how long one read or write on a connection may block. A server that stops
    /// answering then fails the statement waiting on it (the op's, or a `BEGIN`,
    /// `COMMIT` or ping of the strategy) with an I/O error after `timeout`, and the
    /// connection is dropped, instead of blocking until TCP gives up. A `COMMIT` cut off
    /// that way is [`TransactError::Indeterminate`]. The strategy's own statements
    /// (`BEGIN`, fences, `COMMIT`) report it as an [`std::io::Error`] of kind `TimedOut`,
    /// `no answer within …`; an op's statement gets the driver's error, as the op returns
    /// it (kind `WouldBlock` on Linux). It bounds every statement an op runs, so it must be
    /// longer than the longest of them. Default: `None`, no limit.
    ///
    /// # Errors
    /// [`Error::Config`] for a zero timeout or one over [`MAX_TIMEOUT`].
    pub fn read_timeout(mut self, timeout: Option<Duration>) -> Result<Self, StrategyError> {
        if let Some(t) = timeout
            && (t.is_zero() || t > MAX_TIMEOUT)
        {
            return Err(Error::Config(format!(
                "MySQL read timeout {t:?} must be above zero and at most {MAX_TIMEOUT:?}"
            )));
        }
        self.read_timeout = timeout;
        Ok(self)
    }

    /// Sets how long opening a connection may take, its login included: a server that
    /// accepts the connection but does not answer fails it after `timeout` with an
    /// [`std::io::Error`] of kind `TimedOut` (`no answer within …`), read timeout or not.
    /// Default: [`DEFAULT_CONNECT_TIMEOUT`].
    ///
    /// # Errors
    /// [`Error::Config`] for a zero timeout or one over [`MAX_TIMEOUT`].
    pub fn connect_timeout(mut self, timeout: Duration) -> Result<Self, StrategyError> {
        self.connect_timeout = super::check_connect_timeout("MySQL", timeout)?;
        Ok(self)
    }

    /// Runs every op at `level` instead of the server's default isolation level (see
    /// [`Isolation`] for what a level stricter than `READ COMMITTED` costs per-key
    /// strategies). Each connection makes it its session's level when it opens (`SET
    /// SESSION TRANSACTION ISOLATION LEVEL …`, one round trip per connection, within the
    /// connect timeout, or the read timeout when one is set), so the transactions the resource begins and the statements of ops
    /// run in autocommit all run at it. MySQL cannot name the level in `START
    /// TRANSACTION`: an op that changes its session's level changes it for the later ops
    /// on its connection. Default: none, the server's.
    ///
    /// Under `READ COMMITTED` InnoDB takes no gap locks: the `optimistic` strategy's
    /// re-read, at commit, of a record an op found absent and did not write no longer keeps
    /// it absent until the commit (an insert can slip in, as on PostgreSQL).
    pub fn isolation(mut self, level: Isolation) -> Self {
        self.isolation = Some(level);
        self
    }

    /// The parsed connection options: the driver's [`mysql::Opts`] through
    /// [`MySqlOpts`], whose `Debug` shows the password as `***` (the driver's prints it).
    pub fn opts(&self) -> &MySqlOpts {
        &self.opts
    }

    fn ensure_fence_table(&self, conn: &mut Conn) -> Result<(), TransactError> {
        if !self.fence_table_ready.load(Ordering::Acquire) {
            conn.query_drop(FENCE_TABLE)
                .map_err(|e| classify(e, self.read_timeout))?;
            self.fence_table_ready.store(true, Ordering::Release);
        }
        Ok(())
    }
}

/// Parses a `mysql://` URL, refusing anything the driver refuses, and user info whose end
/// drivers read differently ([`crate::spec::userinfo_is_ambiguous`]).
pub(crate) fn parse_url(url: &str) -> Result<Opts, StrategyError> {
    // A raw `@` in the password followed by a `/`, `?` or `#`: the driver ends the host
    // there, and its user info at an `@` before it, taking a piece of the password for
    // the host (`mysql://app:P@ss#1@db/app`), which the identity shows. A raw `@` with
    // none of them after it in the password (`app:P@ss@db`) is read as written.
    crate::spec::refuse_ambiguous_userinfo("MySQL", url)?;
    let opts = Opts::from_url(url).map_err(|e| {
        // The driver's message may quote a piece of the URL (an unknown parameter that is
        // the tail of a password with a raw `&`), and the parameter it refused may hold a
        // secret (`?passwd=…`, a misspelt password): its value is masked.
        let refused = match &e {
            mysql::UrlError::UnknownParameter(name)
            | mysql::UrlError::InvalidValue(name, _)
            | mysql::UrlError::FeatureRequired(_, name) => vec![name.as_str()],
            _ => Vec::new(),
        };
        Error::Config(format!(
            "bad MySQL URL {:?}: {}",
            crate::spec::redact_url_refusing(url, &refused),
            crate::spec::redact_message_refusing(url, &refused, &url_error_text(&e))
        ))
    })?;
    // A NUL (`%00`) is no part of a name MySQL takes: the handshake sends the user and
    // database NUL-terminated, so a database name is cut short there (`Unknown database
    // 'te'` for `te%00st`); a password with one is refused too, the same mistake in it.
    for (what, value) in [
        ("user", opts.get_user()),
        ("password", opts.get_pass()),
        ("database name", opts.get_db_name()),
        ("socket", opts.get_socket()),
        ("host", Some(&*opts.get_ip_or_hostname())),
    ] {
        if value.is_some_and(|v| v.contains('\0')) {
            return Err(Error::Config(format!(
                "bad MySQL URL {:?}: its {what} holds a NUL character (%00), which MySQL \
                 cannot take",
                crate::spec::redact_url(url)
            )));
        }
    }
    Ok(opts)
}

/// The driver's URL error in words: the `url` crate's reason without the driver's
/// `URL ParseError { … }` around it.
fn url_error_text(error: &mysql::UrlError) -> String {
    match error {
        mysql::UrlError::ParseError(e) => e.to_string(),
        other => other.to_string(),
    }
}

/// `error` in words, for the errors the strategies report (an op's own errors stay as the
/// op returned them): the error inside the driver's, without its `MySqlError { … }`
/// around it — the server's ([`mysql::MySqlError`], `ERROR 1045 (28000): Access denied
/// …`), the driver's ([`mysql::DriverError`], `Could not connect to address …`) or the
/// system's ([`std::io::Error`]); and a read or write that `timeout` cut off is `no answer
/// within …`, an [`std::io::Error`] of kind `TimedOut` (the system's text would be
/// `Resource temporarily unavailable`).
pub(crate) fn readable(error: mysql::Error, timeout: Option<Duration>) -> BoxError {
    use std::io::ErrorKind;
    let cut_off = |kind: ErrorKind| {
        timeout.filter(|_| matches!(kind, ErrorKind::WouldBlock | ErrorKind::TimedOut))
    };
    let no_answer = |t: Duration| -> BoxError {
        std::io::Error::new(ErrorKind::TimedOut, format!("no answer within {t:?}")).into()
    };
    match error {
        mysql::Error::IoError(e) => match cut_off(e.kind()) {
            Some(t) => no_answer(t),
            None => e.into(),
        },
        mysql::Error::CodecError(ref e) => match io_cause(&error) {
            Some(io) => match cut_off(io.kind()) {
                Some(t) => no_answer(t),
                None => std::io::Error::new(io.kind(), io.to_string()).into(),
            },
            None => e.to_string().into(),
        },
        mysql::Error::MySqlError(e) => e.into(),
        mysql::Error::DriverError(e) => e.into(),
        mysql::Error::UrlError(e) => url_error_text(&e).into(),
        other => other.into(),
    }
}

/// The system's I/O error under a MySQL driver error, if it is one: the driver's own
/// ([`mysql::Error::IoError`]), or its packet codec's cause, whose type the driver does
/// not export. A read that the connection's read timeout cut off is one of kind
/// `WouldBlock` (or `TimedOut`), whose text says neither (`Resource temporarily
/// unavailable`).
pub fn io_cause(error: &mysql::Error) -> Option<&std::io::Error> {
    match error {
        mysql::Error::IoError(e) => Some(e),
        mysql::Error::CodecError(e) => {
            std::error::Error::source(e).and_then(|c| c.downcast_ref::<std::io::Error>())
        }
        _ => None,
    }
}

/// `mysql://user@host:port/db`, without the password.
pub(crate) fn identity(opts: &Opts) -> String {
    server_identity(
        "mysql",
        opts.get_user().unwrap_or(""),
        &opts.get_ip_or_hostname(),
        opts.get_tcp_port(),
        opts.get_db_name().unwrap_or(""),
    )
}

/// Opens one connection with a connect timeout and, if given, a read and write timeout.
/// The login runs on a thread of its own, so that the connect timeout bounds it as a
/// whole: a read timeout bounds each of its reads, and a server that accepts the
/// connection but never answers would otherwise keep the caller a read timeout (or until
/// TCP gives up) whatever the connect timeout. Errors come [`readable`].
pub(crate) fn open(
    opts: &Opts,
    connect_timeout: Duration,
    read_timeout: Option<Duration>,
) -> Result<Conn, BoxError> {
    let builder = OptsBuilder::from_opts(opts.clone())
        .tcp_connect_timeout(Some(connect_timeout))
        .read_timeout(read_timeout)
        .write_timeout(read_timeout);
    super::open_within(&identity(opts), connect_timeout, move || {
        Conn::new(builder).map_err(|e| readable(e, read_timeout))
    })
}

/// Whether `error` is MySQL's "busy, try again": a deadlock (the transaction was rolled
/// back) or a lock wait timeout.
pub fn is_busy(error: &mysql::Error) -> bool {
    matches!(error, mysql::Error::MySqlError(e) if e.code == ER_LOCK_DEADLOCK || e.code == ER_LOCK_WAIT_TIMEOUT)
}

/// Whether `error` leaves the connection unusable: I/O, protocol or driver state, or the
/// server's own word that it is closing the connection (shutting down, or the
/// connection was killed). Most often a killed connection shows as I/O (`2013`, lost
/// connection); MariaDB sends `1927` when the kill lands while it is working for it.
pub(crate) fn is_connection_error(error: &mysql::Error) -> bool {
    match error {
        mysql::Error::IoError(_) | mysql::Error::CodecError(_) | mysql::Error::DriverError(_) => {
            true
        }
        mysql::Error::MySqlError(e) => {
            e.code == ER_SERVER_SHUTDOWN || e.code == ER_CONNECTION_KILLED
        }
        _ => false,
    }
}

/// A failed statement of the resource's own (not the op's) as a [`TransactError`], in
/// words ([`readable`]; `timeout` is the read timeout).
fn classify(error: mysql::Error, timeout: Option<Duration>) -> TransactError {
    if is_busy(&error) {
        TransactError::Busy(readable(error, timeout))
    } else {
        TransactError::Failed(readable(error, timeout))
    }
}

impl Connect for MySql {
    type Resource = Conn;

    /// A server: every host that reaches it.
    fn arbitrates(&self) -> turnstile_core::Scope {
        turnstile_core::Scope::Hosts
    }

    fn connect(&self) -> Result<Conn, BoxError> {
        self.connect_within(None)
    }

    /// The connect timeout cut to what is left before `deadline`, but not below 250 ms:
    /// a login cut shorter than a healthy server takes under load would be abandoned on
    /// every call, and enough abandoned logins refuse new ones as if the server were down.
    fn connect_within(&self, deadline: Option<std::time::Instant>) -> Result<Conn, BoxError> {
        let connect_timeout = super::cut_to(self.connect_timeout, deadline);
        match self.isolation {
            None => open(&self.opts, connect_timeout, self.read_timeout),
            // The driver runs its init statements as part of the login, which the connect
            // (or read) timeout bounds. Static text: the level's SQL name.
            Some(level) => {
                let mut init = self.opts.get_init();
                init.push(format!(
                    "SET SESSION TRANSACTION ISOLATION LEVEL {}",
                    level.sql()
                ));
                let opts = OptsBuilder::from_opts(self.opts.clone()).init(init).into();
                open(&opts, connect_timeout, self.read_timeout)
            }
        }
    }

    fn identity(&self) -> &str {
        &self.identity
    }

    /// `COM_PING`.
    fn is_alive(&self, conn: &mut Conn) -> bool {
        conn.ping().is_ok()
    }

    fn is_broken(&self, _conn: &mut Conn, error: &(dyn Any + Send + Sync)) -> bool {
        find_error::<mysql::Error>(error).is_some_and(is_connection_error)
    }

    /// Never: the driver's connection does not mark itself broken after an I/O error, so
    /// after an op that panicked on one (a statement whose read timed out, say) the next
    /// statement would read the late answer as its own. The connection is replaced.
    fn survives_panic(&self, _conn: &mut Conn) -> bool {
        false
    }
}

fn check_fences(
    conn: &mut Conn,
    fences: &[FenceClaim<'_>],
    timeout: Option<Duration>,
) -> Result<(), TransactError> {
    let classify = |e| classify(e, timeout);
    for claim in fences {
        let backend = fence_column(claim.backend.as_bytes(), 255);
        let name = fence_column(claim.name, 1024);
        // The upsert takes the row lock first, so a concurrent holder of an older fence
        // waits for us and then sees ours: check and record cannot interleave.
        conn.exec_drop(
            "INSERT INTO turnstile_fences (backend, name, fence) VALUES (?, ?, ?)
             ON DUPLICATE KEY UPDATE fence = GREATEST(fence, VALUES(fence))",
            (&*backend, &*name, claim.fence.0),
        )
        .map_err(classify)?;
        let highest: Option<u64> = conn
            .exec_first(
                "SELECT fence FROM turnstile_fences WHERE backend = ? AND name = ?",
                (&*backend, &*name),
            )
            .map_err(classify)?;
        let highest = highest.ok_or_else(|| {
            TransactError::Failed("the fence row vanished inside its own transaction".into())
        })?;
        if highest > claim.fence.0 {
            return Err(TransactError::StaleFence {
                presented: claim.fence,
                highest: Fence(highest),
            });
        }
    }
    Ok(())
}

impl Transact for MySql {
    fn begin(&self, conn: &mut Conn, fences: &[FenceClaim<'_>]) -> Result<(), TransactError> {
        if !fences.is_empty() {
            self.ensure_fence_table(conn)?;
        }
        // One statement per query: the driver drops the errors of a multi-statement
        // query's later statements.
        let classify = |e| classify(e, self.read_timeout);
        conn.query_drop("START TRANSACTION").map_err(classify)?;
        // The marker savepoint lets commit see an op that ended the transaction.
        let marked = conn
            .query_drop(format!("SAVEPOINT {MARKER_SAVEPOINT}"))
            .map_err(classify);
        if let Err(e) = marked.and_then(|()| check_fences(conn, fences, self.read_timeout)) {
            let _ = self.rollback(conn);
            return Err(e);
        }
        Ok(())
    }

    fn commit(&self, conn: &mut Conn) -> Result<(), TransactError> {
        let released = conn.query_drop(format!("RELEASE SAVEPOINT {MARKER_SAVEPOINT}"));
        let sent = released.is_ok();
        match released.and_then(|()| conn.query_drop("COMMIT")) {
            Ok(()) => Ok(()),
            // The COMMIT may have reached the server and committed before the connection
            // broke.
            Err(e) if sent && is_connection_error(&e) => {
                Err(TransactError::Indeterminate(readable(e, self.read_timeout)))
            }
            Err(e) => {
                let _ = self.rollback(conn);
                match &e {
                    mysql::Error::MySqlError(m) if m.code == ER_SP_DOES_NOT_EXIST => {
                        Err(TransactError::Ended)
                    }
                    _ => Err(classify(e, self.read_timeout)),
                }
            }
        }
    }

    fn rollback(&self, conn: &mut Conn) -> Result<(), BoxError> {
        conn.query_drop("ROLLBACK").map_err(Into::into)
    }

    /// Always true: the driver does not expose the server's transaction flag, and this
    /// method cannot ask the server. [`Transact::commit`] finds an ended transaction
    /// instead (see the [module docs](super)).
    fn in_transaction(&self, _conn: &Conn) -> bool {
        true
    }

    /// Asks the server: a savepoint set outside a transaction is gone by the next
    /// statement, so releasing it succeeds only inside one (two round trips; MySQL has no
    /// `@@in_transaction`, and the driver keeps the server's status flag to itself).
    fn end_stray_transaction(&self, conn: &mut Conn) -> Result<bool, BoxError> {
        conn.query_drop(format!("SAVEPOINT {PROBE_SAVEPOINT}"))?;
        match conn.query_drop(format!("RELEASE SAVEPOINT {PROBE_SAVEPOINT}")) {
            Err(mysql::Error::MySqlError(e)) if e.code == ER_SP_DOES_NOT_EXIST => Ok(false),
            Err(e) => Err(e.into()),
            Ok(()) => {
                self.rollback(conn)?;
                Ok(true)
            }
        }
    }

    fn savepoint(&self, conn: &mut Conn, n: usize) -> Result<(), BoxError> {
        // `n` is a number the strategy chose, never user text.
        conn.query_drop(format!("SAVEPOINT turnstile_{n}"))
            .map_err(Into::into)
    }

    fn release_savepoint(&self, conn: &mut Conn, n: usize) -> Result<(), BoxError> {
        conn.query_drop(format!("RELEASE SAVEPOINT turnstile_{n}"))
            .map_err(Into::into)
    }

    fn rollback_to_savepoint(&self, conn: &mut Conn, n: usize) -> Result<(), BoxError> {
        conn.query_drop(format!("ROLLBACK TO SAVEPOINT turnstile_{n}"))?;
        conn.query_drop(format!("RELEASE SAVEPOINT turnstile_{n}"))
            .map_err(Into::into)
    }

    fn forget_fence(&self, conn: &mut Conn, backend: &str, name: &[u8]) -> Result<(), BoxError> {
        let backend = fence_column(backend.as_bytes(), 255);
        let name = fence_column(name, 1024);
        match conn.exec_drop(
            "DELETE FROM turnstile_fences WHERE backend = ? AND name = ?",
            (&*backend, &*name),
        ) {
            Ok(()) => Ok(()),
            Err(mysql::Error::MySqlError(e)) if e.code == ER_NO_SUCH_TABLE => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Busy in an op's own error (a [`mysql::Error`]) or in one of the strategy's
    /// statements, whose errors come in words: the server's bare [`mysql::MySqlError`].
    fn is_busy(&self, error: &(dyn Any + Send + Sync)) -> bool {
        find_error::<mysql::Error>(error).is_some_and(is_busy)
            || find_error::<mysql::MySqlError>(error)
                .is_some_and(|e| e.code == ER_LOCK_DEADLOCK || e.code == ER_LOCK_WAIT_TIMEOUT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The strategy's own statements (`BEGIN`'s fence bump, `COMMIT`) come back
    /// [`readable`], the server's error bare: a lock-wait timeout or deadlock there is
    /// still busy (the harness's `refused` checker asks this of them).
    #[test]
    fn a_busy_server_error_of_the_strategys_statements_is_busy() {
        let db = MySql::new("mysql://u@h/db").unwrap();
        let server = |code| {
            mysql::Error::MySqlError(mysql::MySqlError {
                state: "HY000".into(),
                message: "lock wait".into(),
                code,
            })
        };
        for (code, busy) in [
            (ER_LOCK_WAIT_TIMEOUT, true),
            (ER_LOCK_DEADLOCK, true),
            (1045, false),
        ] {
            let statement: BoxError = readable(server(code), None);
            assert_eq!(db.is_busy(&statement), busy, "{code}");
            let erased: turnstile_core::AnyError = Box::new(statement);
            assert_eq!(db.is_busy(&erased), busy, "{code} erased");
            assert_eq!(db.is_busy(&server(code)), busy, "{code} as an op's");
        }
    }

    #[test]
    fn an_identity_shows_no_password_from_the_database_name() {
        let db = MySql::new("mysql://u@h/password=Xy7k9").unwrap();
        assert!(!db.identity().contains("Xy7k9"), "{}", db.identity());
        let db = MySql::new("mysql://u:secret@h:3307/app").unwrap();
        assert_eq!(db.identity(), "mysql://u@h:3307/app");
    }

    #[test]
    fn a_refused_url_shows_no_piece_of_its_password() {
        // The driver names the tail of a password with a raw `&` as an unknown parameter.
        let error = MySql::new("mysql://app@db/app?password=Xy7&k9zq").unwrap_err();
        let shown = error.to_string();
        assert!(shown.contains("bad MySQL URL"), "{shown}");
        assert!(!shown.contains("Xy7") && !shown.contains("k9zq"), "{shown}");
    }

    /// The `url` crate's reason, without the driver's `URL ParseError { … }` around it.
    #[test]
    fn a_refused_url_says_why_in_words() {
        for (url, why) in [
            ("mysql://h:notaport/db", "invalid port number"),
            ("mysql://u@h:99999/db", "invalid port number"),
            ("mysql://h/db?foo=bar", "Unknown URL parameter `foo'"),
        ] {
            let shown = MySql::new(url).unwrap_err().to_string();
            assert!(shown.ends_with(&format!(": {why}")), "{url}: {shown}");
        }
    }

    /// A NUL character would cut a database name short (`Unknown database 'te'`) or make
    /// a right password wrong: refused as the URL's fault, before connecting.
    #[test]
    fn a_nul_character_is_refused_before_connecting() {
        for (url, what) in [
            ("mysql://u@h/te%00st", "database name"),
            ("mysql://u%00v@h/db", "user"),
            ("mysql://u:Xy7%00k9@h/db", "password"),
            ("mysql://u@h/db?socket=/tmp/a%00b", "socket"),
            ("mysql://u@h/db?host=a%00b", "host"),
        ] {
            let error = MySql::new(url).unwrap_err();
            let shown = error.to_string();
            assert!(matches!(error, Error::Config(_)), "{shown}");
            assert!(
                shown.contains(&format!("its {what} holds a NUL")),
                "{url}: {shown}"
            );
            assert!(!shown.contains("Xy7"), "{shown}");
        }
    }

    /// A raw `@` in the password, then a `#`, `/` or `?`: the driver would read a piece of
    /// the password as the host, which the identity shows.
    #[test]
    fn a_raw_at_in_the_password_is_refused_without_showing_it() {
        for (url, pieces) in [
            ("mysql://app:P@ssw0rd#1@db/app", ["P@", "ssw0rd"]),
            ("mysql://app:P@ss?w0rd!@db/app", ["P@", "w0rd"]),
            ("mysql://app:1234?abc@h/db", ["1234", "abc"]),
            // Indistinguishable from `app:P@ss/1@db`, whose host the driver reads as `ss`.
            ("mysql://u:pw@h/my@db", ["pw@", "h/my"]),
        ] {
            let error = MySql::new(url).unwrap_err();
            let shown = error.to_string();
            assert!(matches!(error, Error::Config(_)), "{shown}");
            assert!(shown.contains("%40"), "{shown}");
            for piece in pieces {
                assert!(!shown.contains(piece), "{shown}");
            }
        }
        let db = MySql::new("mysql://app:P%40ssw0rd%231@db/app").unwrap();
        assert_eq!(db.identity(), "mysql://app@db:3306/app");
        // A raw `@` with no `/`, `?` or `#` after it in the password: the driver's user
        // info ends at the last `@` before the host, as written.
        let opts = parse_url("mysql://app:P@ss@db/app").unwrap();
        assert_eq!(opts.get_pass(), Some("P@ss"));
        let db = MySql::new("mysql://app:P@ss@db/app").unwrap();
        assert_eq!(db.identity(), "mysql://app@db:3306/app");
        // An `@` in the value of a parameter the driver knows.
        let opts = parse_url("mysql://u:pw@h/db?socket=/run/u@h/mysqld.sock").unwrap();
        assert_eq!(opts.get_socket(), Some("/run/u@h/mysqld.sock"));
        for fine in [
            "mysql://u:pw@[::1]:3306/db?prefer_socket=false",
            "mysql://root@127.0.0.1:3306/test",
            "mysql://u:pw@h?user=a@b",
        ] {
            assert!(MySql::new(fine).is_ok(), "{fine}");
        }
    }

    /// The driver's message names a parameter, or its value, that is a piece of the query's
    /// password: shown as `***`.
    #[test]
    fn the_drivers_message_shows_no_piece_of_a_query_password() {
        let error = MySql::new("mysql://app@db/app?password=Xy7&pool_min=x9").unwrap_err();
        let shown = error.to_string();
        assert!(shown.contains("bad MySQL URL"), "{shown}");
        assert!(!shown.contains("x9") && !shown.contains("Xy7"), "{shown}");
    }

    /// The value of a parameter the driver refused may be a secret under a misspelt name
    /// (`passwd=`): masked, in the URL shown and in the driver's message, its name kept;
    /// also after a query password, whose mask no longer hides the refused name.
    #[test]
    fn a_refused_parameter_shows_its_name_and_not_its_value() {
        for (url, named) in [
            (
                "mysql://u@h/db?passwd=Secret1",
                "Unknown URL parameter `passwd'",
            ),
            (
                "mysql://u@h/db?password=Secret0&passwd=Secret1",
                "Unknown URL parameter `passwd'",
            ),
            (
                "mysql://u@h/db?password=Secret0&foo=Secret1",
                "Unknown URL parameter `foo'",
            ),
            (
                "mysql://u@h/db?prefer_socket=Secret1",
                "Invalid value `***' for URL parameter `prefer_socket'",
            ),
        ] {
            let error = MySql::new(url).unwrap_err();
            let shown = error.to_string();
            assert!(matches!(error, Error::Config(_)), "{shown}");
            assert!(shown.contains(named), "{url}: {shown}");
            assert!(
                !shown.contains("Secret") && shown.contains("=***"),
                "{url}: {shown}"
            );
        }
    }

    #[test]
    fn debug_shows_no_password() {
        let db = MySql::new("mysql://app:s3cret-pw@127.0.0.1:3306/test").unwrap();
        let shown = format!("{db:?}");
        assert!(!shown.contains("s3cret-pw"), "{shown}");
        assert!(shown.contains("mysql://app@127.0.0.1:3306/test"), "{shown}");
        // Nor do the options it gives out, which still connect with it.
        for url in [
            "mysql://app:s3cret-pw@127.0.0.1:3306/test",
            "mysql://127.0.0.1:3306/test?user=app&password=s3cret-pw",
        ] {
            let db = MySql::new(url).unwrap();
            let shown = format!("{:?} {:#?}", db.opts(), db.opts());
            assert!(!shown.contains("s3cret-pw"), "{shown}");
            assert!(shown.contains("\"***\""), "{shown}");
            assert!(
                shown.contains("\"app\"") && shown.contains("\"test\""),
                "{shown}"
            );
            assert_eq!(db.opts().get_pass(), Some("s3cret-pw"));
            assert_eq!(Opts::from(db.opts().clone()).get_pass(), Some("s3cret-pw"));
        }
    }

    #[test]
    fn connect_timeouts_are_checked() {
        let db = || MySql::new("mysql://app@127.0.0.1:3306/test").unwrap();
        for bad in [
            Duration::ZERO,
            MAX_TIMEOUT + Duration::from_secs(1),
            Duration::MAX,
        ] {
            assert!(
                matches!(db().connect_timeout(bad), Err(Error::Config(_))),
                "{bad:?}"
            );
        }
        assert!(db().connect_timeout(Duration::from_millis(1)).is_ok());
        let lock = || crate::lock::MySqlLock::new("mysql://app@127.0.0.1:3306/test").unwrap();
        assert!(matches!(
            lock().connect_timeout(Duration::ZERO),
            Err(Error::Config(_))
        ));
        assert!(lock().connect_timeout(Duration::from_secs(1)).is_ok());
    }

    fn server_error(code: u16) -> mysql::Error {
        mysql::Error::MySqlError(mysql::MySqlError {
            state: "HY000".into(),
            message: "from the server".into(),
            code,
        })
    }

    /// The server saying it closes the connection is a broken connection (a queue
    /// reconnects; a `COMMIT` it answers so is of unknown outcome); its other errors
    /// leave the connection usable.
    #[test]
    fn the_servers_own_goodbye_is_a_connection_error() {
        assert!(is_connection_error(&server_error(ER_SERVER_SHUTDOWN)));
        assert!(is_connection_error(&server_error(ER_CONNECTION_KILLED)));
        for usable in [
            ER_LOCK_DEADLOCK,
            ER_LOCK_WAIT_TIMEOUT,
            ER_NO_SUCH_TABLE,
            1062,
        ] {
            assert!(!is_connection_error(&server_error(usable)), "{usable}");
        }
        assert!(is_connection_error(&mysql::Error::IoError(
            std::io::ErrorKind::UnexpectedEof.into()
        )));
    }
}
