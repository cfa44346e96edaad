//! PostgreSQL as a resource.

use std::any::Any;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use postgres::config::Host;
use postgres::error::SqlState;
use postgres::{Client, Config, NoTls};
use turnstile_core::{
    BoxError, Connect, Error, Fence, FenceClaim, StrategyError, Transact, TransactError, find_error,
};

use super::{DEFAULT_CONNECT_TIMEOUT, Isolation, MARKER_SAVEPOINT, fence_column, server_identity};

const FENCE_TABLE: &str = "CREATE TABLE IF NOT EXISTS turnstile_fences (
    backend TEXT NOT NULL,
    name BYTEA NOT NULL,
    fence BIGINT NOT NULL,
    PRIMARY KEY (backend, name)
)";

/// Opens connections to one PostgreSQL database; each op runs in a transaction.
///
/// The op gets a [`postgres::Client`]. Defaults: the server's isolation level (its
/// `default_transaction_isolation`: `READ COMMITTED` unless the server, role, database or
/// URL sets another; [`isolation`](Postgres::isolation) chooses one), a
/// [`DEFAULT_CONNECT_TIMEOUT`] to connect, no TLS.
///
/// The driver has no read timeout: a server that stops answering but keeps its
/// connections open (a stopped process) blocks a statement until it answers again — the
/// op's, and the strategy's `BEGIN`, `COMMIT`, fence check, or [`PgXactLocked`]'s lock
/// (unlike [`PostgresLock`]'s lock connections, whose statements are bounded). A host or
/// network that died shows once TCP gives up; `tcp_user_timeout` (milliseconds) and
/// `keepalives_idle` (seconds) in the URL make that sooner.
///
/// [`PgXactLocked`]: crate::lock::PgXactLocked
/// [`PostgresLock`]: crate::lock::PostgresLock
///
/// Fences are recorded in a `turnstile_fences` table (created on first use). The op must
/// not `COMMIT` or `ROLLBACK` itself: `commit` then fails with [`TransactError::Ended`],
/// and [`rollback_checked`](Transact::rollback_checked), after an op that failed or
/// panicked, answers `Ok(false)` (either way the strategy's [`Error::TransactionEnded`]).
///
/// ```no_run
/// use turnstile::resource::Postgres;
/// use turnstile::Connect;
///
/// let db = Postgres::new("postgres://postgres@127.0.0.1:5432/test")?;
/// assert_eq!(db.identity(), "postgres://postgres@127.0.0.1:5432/test");
/// let mut client = db.connect()?;
/// let one: i32 = client.query_one("SELECT 1", &[])?.get(0);
/// assert_eq!(one, 1);
/// # Ok::<(), Box<dyn std::error::Error + Send + Sync>>(())
/// ```
#[derive(Clone)]
pub struct Postgres {
    config: Config,
    identity: String,
    isolation: Option<Isolation>,
    fence_table_ready: Arc<AtomicBool>,
}

impl std::fmt::Debug for Postgres {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Postgres")
            .field("identity", &self.identity)
            .field("isolation", &self.isolation)
            .finish_non_exhaustive()
    }
}

impl Postgres {
    /// An opener for `url` (`postgres://user:password@host:port/database`, or a libpq
    /// key-value string). Nothing is connected yet.
    ///
    /// # Errors
    /// [`Error::Config`] when the URL does not parse, or when the driver, which reads user
    /// info up to the first `@`, would read a piece of its password as the host or
    /// database, or connect to another host than the URL names: a raw `@` in the password
    /// (`postgres://app:P@ss/1@db/app`), an `@` in the database name or query after a
    /// password or port (but in the value of `user`, `password`, `dbname`, `options`,
    /// `application_name` or `host`), an `@` in the query with no user info before it
    /// (`postgres://h:5432/db?application_name=a@b`), a password that starts with digits
    /// and then `/`, `?` or `,` (read as a port: `postgres://u:12/ab@h/db`), or credentials
    /// that start with `[` (an IPv6 host). Percent-encode such an `@` as `%40` (and the
    /// password's `/` as `%2F`). A `%` in the user info or a `password` parameter that
    /// starts no percent-escape (`postgres://u:secret%zz@h/db`) is refused too, naming the
    /// part, never its text (write a `%` itself as `%25`): the driver would send it as
    /// written, where libpq refuses it. A `connect_timeout` of 0 or below is refused too
    /// (the driver would drop it for the default; libpq reads 0 as no limit). The message
    /// shows the URL with its password, and the value of an option the driver refused (a
    /// misspelt `?passwd=…`), as `***`.
    pub fn new(url: &str) -> Result<Self, StrategyError> {
        let config = parse_url(url)?;
        Ok(Postgres {
            identity: identity(&config),
            config,
            isolation: None,
            fence_table_ready: Arc::new(AtomicBool::new(false)),
        })
    }

    /// Sets how long opening a connection may take. Default: [`DEFAULT_CONNECT_TIMEOUT`]
    /// (unless the URL sets `connect_timeout`).
    ///
    /// # Errors
    /// [`Error::Config`] for a zero timeout or one over
    /// [`MAX_TIMEOUT`](turnstile_core::MAX_TIMEOUT).
    pub fn connect_timeout(mut self, timeout: Duration) -> Result<Self, StrategyError> {
        self.config
            .connect_timeout(super::check_connect_timeout("PostgreSQL", timeout)?);
        Ok(self)
    }

    /// Runs every op at `level` instead of the server's default isolation level (see
    /// [`Isolation`] for what a level stricter than `READ COMMITTED` costs per-key
    /// strategies). Default: none, the server's.
    ///
    /// Each transaction the resource begins for an op names the level (`BEGIN ISOLATION
    /// LEVEL …`, in the same round trip), so an op that changed its session's default does
    /// not change it; [`PgXactLocked`](crate::lock::PgXactLocked) begins its transactions
    /// through the resource too. Each connection also makes it its session's default as it
    /// logs in (`-c default_transaction_isolation=…` in the login's `options`, after any
    /// the URL gives), for the statements of ops run in autocommit
    /// ([`TxMode::Autocommit`](crate::TxMode::Autocommit)). That is a login option rather
    /// than a `SET` so that a pooling proxy cannot carry it to other clients' sessions: a
    /// proxy that drops it leaves autocommit statements at the server's default (ops in a
    /// transaction still run at `level`), and one that refuses it (PgBouncer without
    /// `options` in `ignore_startup_parameters`) fails the connection.
    pub fn isolation(mut self, level: Isolation) -> Self {
        self.isolation = Some(level);
        self
    }

    /// The parsed connection configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    fn ensure_fence_table(&self, client: &mut Client) -> Result<(), TransactError> {
        if self.fence_table_ready.load(Ordering::Acquire) {
            return Ok(());
        }
        ensure_table(client, FENCE_TABLE).map_err(classify)?;
        self.fence_table_ready.store(true, Ordering::Release);
        Ok(())
    }
}

/// Runs a `CREATE TABLE IF NOT EXISTS`, tolerating the race where several sessions
/// create the same table at once: the losers fail on the catalog (a duplicate row type,
/// a unique violation) instead of finding the table, and succeed on a second look.
pub(crate) fn ensure_table(client: &mut Client, ddl: &str) -> Result<(), postgres::Error> {
    ensure_table_with(|ddl| client.batch_execute(ddl), ddl, postgres::Error::code)
}

/// [`ensure_table`] for any way of running the DDL (`run`), whose errors carry the
/// server's code (`code`).
pub(crate) fn ensure_table_with<E>(
    mut run: impl FnMut(&str) -> Result<(), E>,
    ddl: &str,
    code: impl Fn(&E) -> Option<&SqlState>,
) -> Result<(), E> {
    let mut tries = 0;
    loop {
        match run(ddl) {
            Err(e)
                if tries < 3
                    && [
                        SqlState::UNIQUE_VIOLATION,
                        SqlState::DUPLICATE_TABLE,
                        SqlState::DUPLICATE_OBJECT,
                    ]
                    .iter()
                    .any(|c| code(&e) == Some(c)) =>
            {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(10 * tries));
            }
            other => return other,
        }
    }
}

/// Parses a `postgres://` URL, filling in the default connect timeout.
pub(crate) fn parse_url(url: &str) -> Result<Config, StrategyError> {
    parse_config(url).map(Config::from)
}

/// [`parse_url`] for the asynchronous client (the same parser: `postgres::Config` wraps
/// this one, but does not give it out).
pub(crate) fn parse_config(url: &str) -> Result<tokio_postgres::Config, StrategyError> {
    let bad = |why: &dyn std::fmt::Display| {
        Error::Config(format!(
            "bad PostgreSQL URL {:?}: {why}",
            crate::spec::redact_url(url)
        ))
    };
    // A raw `@` in the password followed by another `@` (`app:P@ss/1@db/app`), a user
    // that holds a query (`h/db?password=x&application_name=a@b`), or a host and port
    // before the first `@` (`h:5432/db?application_name=a@b`): the driver would take a
    // piece of the password for the host, database or user, which the identity shows, or
    // connect to another host than the URL names.
    crate::spec::refuse_ambiguous_userinfo("PostgreSQL", url)?;
    let mut config = tokio_postgres::Config::from_str(url).map_err(|e| {
        // The option the driver refused (`?passwd=…`, a misspelt password) may hold a
        // secret: its value is masked, in the URL shown and in the reason.
        let refused = refused_option(&e);
        let refused: Vec<&str> = refused.iter().map(String::as_str).collect();
        Error::Config(format!(
            "bad PostgreSQL URL {:?}: {}",
            crate::spec::redact_url_refusing(url, &refused),
            parse_reason(url, &refused, &e)
        ))
    })?;
    // What the driver would refuse only when it connects, as if the server were out of
    // reach: no host, hosts and `hostaddr`s that do not pair up, more ports than hosts,
    // an empty host name.
    let (hosts, addrs) = (config.get_hosts(), config.get_hostaddrs());
    if hosts.is_empty() && addrs.is_empty() {
        return Err(bad(&"it names no host"));
    }
    if !hosts.is_empty() && !addrs.is_empty() && hosts.len() != addrs.len() {
        return Err(bad(&"its hosts and hostaddrs do not pair up"));
    }
    let ports = config.get_ports().len();
    if ports > 1 && ports != hosts.len().max(addrs.len()) {
        return Err(bad(&"it has more than one port, but not one per host"));
    }
    if hosts
        .iter()
        .any(|h| matches!(h, Host::Tcp(name) if name.is_empty()))
    {
        return Err(bad(&"a host name is empty"));
    }
    // The driver reads user info up to the first `@`: one in the user before a
    // `password=` (`a@b&password=…`, which has no password colon, so the check above
    // finds one reading only) leaves the password in the host name, which the strategy's
    // identity would then show. No host name holds these.
    if hosts
        .iter()
        .any(|h| matches!(h, Host::Tcp(name) if name.contains(['@', '&', '=', '?'])))
    {
        return Err(bad(
            &"a host name holds an `@`, `&`, `=` or `?` (percent-encode an `@` in the user or password as %40)",
        ));
    }
    // Connections are made without TLS (`NoTls`): a URL that requires it would fail only
    // when connecting (`no TLS implementation configured`, `server did not use channel
    // binding`), as if the server were out of reach, however often it is retried.
    if let Some((option, instead)) = requires_tls(&config) {
        return Err(bad(&format_args!(
            "{option} requires TLS, and turnstile connects to PostgreSQL without it; \
             leave it out (or use {instead}), or reach the server through a \
             TLS-terminating tunnel on loopback"
        )));
    }
    // PostgreSQL's strings hold no NUL (`%00`): the driver refuses one in these only
    // when it connects (`string contains embedded null`), as if the server were down.
    let holds_nul = |s: Option<&[u8]>| s.is_some_and(|s| s.contains(&0));
    for (what, value) in [
        ("user", config.get_user().map(str::as_bytes)),
        ("password", config.get_password()),
        ("database name", config.get_dbname().map(str::as_bytes)),
        ("options", config.get_options().map(str::as_bytes)),
        (
            "application_name",
            config.get_application_name().map(str::as_bytes),
        ),
    ] {
        if holds_nul(value) {
            return Err(bad(&format_args!(
                "its {what} holds a NUL character (%00), which PostgreSQL cannot take"
            )));
        }
    }
    if hosts.iter().any(|h| match h {
        Host::Tcp(name) => name.contains('\0'),
        Host::Unix(path) => path.as_os_str().as_encoded_bytes().contains(&0),
    }) {
        return Err(bad(
            &"a host holds a NUL character (%00), which no host name or socket path holds",
        ));
    }
    // The driver drops a `connect_timeout` of zero or below, which would then read as
    // unset (the default); libpq reads 0 as no limit at all, and a negative one means
    // nothing. Neither is taken.
    if let Some(seconds) = params(url)
        .into_iter()
        .filter(|(key, _)| key == "connect_timeout")
        .filter_map(|(_, value)| value.trim().parse::<i64>().ok())
        .find(|&seconds| seconds <= 0)
    {
        return Err(bad(&format_args!(
            "connect_timeout={seconds} must be a positive number of seconds (libpq reads 0 \
             as no limit at all); leave it out for the default of {}s",
            DEFAULT_CONNECT_TIMEOUT.as_secs()
        )));
    }
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(DEFAULT_CONNECT_TIMEOUT);
    }
    Ok(config)
}

/// The options of a connection string the driver accepted, keys and values decoded, as its
/// parser reads them: a URL's query parameters (`postgres://…?key=value&…`; its user info
/// is never looked at), or the `key=value` pairs of a key-value string (values quoted
/// with `'` or not, `\` escaping the next character).
fn params(url: &str) -> Vec<(String, String)> {
    let decode = crate::spec::percent_decoded;
    let mut found = Vec::new();
    let Some(rest) = ["postgres://", "postgresql://"]
        .iter()
        .find_map(|scheme| url.strip_prefix(scheme))
    else {
        // Key-value pairs.
        let mut chars = url.chars().peekable();
        loop {
            while chars.next_if(|c| c.is_whitespace()).is_some() {}
            let mut key = String::new();
            while let Some(c) = chars.next_if(|&c| !c.is_whitespace() && c != '=') {
                key.push(c);
            }
            if key.is_empty() {
                return found;
            }
            while chars.next_if(|c| c.is_whitespace()).is_some() {}
            if chars.next() != Some('=') {
                return found;
            }
            while chars.next_if(|c| c.is_whitespace()).is_some() {}
            let quoted = chars.next_if_eq(&'\'').is_some();
            let mut value = String::new();
            while let Some(c) = chars.next_if(|&c| {
                if quoted {
                    c != '\''
                } else {
                    !c.is_whitespace()
                }
            }) {
                if c == '\\' {
                    value.extend(chars.next());
                } else {
                    value.push(c);
                }
            }
            if quoted {
                chars.next();
            }
            found.push((key, value));
        }
    };
    // The user info ends at the first `@`, the host at a `/` or `?`, the path at a `?`.
    let rest = rest.split_once('@').map_or(rest, |(_, after)| after);
    let Some(mut query) = rest
        .find(['/', '?'])
        .map(|at| &rest[at..])
        .and_then(|rest| rest.find('?').map(|at| &rest[at + 1..]))
    else {
        return found;
    };
    // A key runs to the next `=`, its value to the next `&`.
    while let Some((key, after)) = query.split_once('=') {
        let (value, next) = after.split_once('&').unwrap_or((after, ""));
        found.push((decode(key), decode(value)));
        query = next;
    }
    found
}

/// The option of `config` that requires TLS, which connections made with `NoTls` can
/// never give (`sslmode=require`, `channel_binding=require`), and the setting that does
/// without it.
fn requires_tls(config: &tokio_postgres::Config) -> Option<(&'static str, &'static str)> {
    use tokio_postgres::config::{ChannelBinding, SslMode};
    if config.get_ssl_mode() == SslMode::Require {
        Some(("sslmode=require", "sslmode=prefer"))
    } else if config.get_channel_binding() == ChannelBinding::Require {
        Some(("channel_binding=require", "channel_binding=prefer"))
    } else {
        None
    }
}

/// The option whose name or value the driver refused (`unknown option `KEY``, `invalid
/// value for option `KEY``), as its error names it.
fn refused_option(error: &tokio_postgres::Error) -> Option<String> {
    let mut cause = std::error::Error::source(error);
    while let Some(c) = cause {
        let text = c.to_string();
        let key = ["unknown option `", "invalid value for option `"]
            .iter()
            .find_map(|p| text.strip_prefix(p))
            .and_then(|rest| rest.strip_suffix('`'));
        if let Some(key) = key {
            return Some(key.to_owned());
        }
        cause = c.source();
    }
    None
}

/// Why the driver refused `url`, safe to show: its error says only `invalid connection
/// string`, and its cause the reason (`invalid value for option \`port\``, `unknown option
/// \`foo\``). A reason that names one of the driver's options by itself is shown as it
/// is; any other may quote a piece of the URL, so what [`redact_url`] masks is masked in
/// it too, and a character it quotes from the URL is left out.
///
/// [`redact_url`]: crate::spec::redact_url
fn parse_reason(url: &str, refused: &[&str], error: &tokio_postgres::Error) -> String {
    /// The options the driver names in `invalid value for option `…``: its own words.
    const OPTIONS: [&str; 14] = [
        "sslmode",
        "sslnegotiation",
        "hostaddr",
        "port",
        "connect_timeout",
        "tcp_user_timeout",
        "keepalives",
        "keepalives_idle",
        "keepalives_interval",
        "keepalives_retries",
        "target_session_attrs",
        "channel_binding",
        "load_balance_hosts",
        "host",
    ];
    let mut why = error.to_string();
    let mut cause = std::error::Error::source(error);
    while let Some(c) = cause {
        let mut text = c.to_string();
        let names_an_option = text
            .strip_prefix("invalid value for option `")
            .and_then(|rest| rest.strip_suffix('`'))
            .is_some_and(|option| OPTIONS.contains(&option));
        if !names_an_option {
            // `unexpected character at byte 12: expected `=` but got `x``: the character
            // may be a password's.
            if text.starts_with("unexpected character at byte ")
                && let Some(at) = text.find(": expected `")
            {
                text.truncate(at);
            }
            // `unknown option `KEY``: a key that holds a quote or a backtick would end
            // the quoted piece redaction looks at early, and show the rest; such a key is
            // no option name anyone typed as one (it is a password's tail after a raw `&`).
            if let Some(key) = text
                .strip_prefix("unknown option `")
                .and_then(|rest| rest.strip_suffix('`'))
                && key.contains(['`', '\'', '"'])
            {
                text = "unknown option (not shown: it may be part of a password)".to_owned();
            }
            text = crate::spec::redact_message_refusing(url, refused, &text);
        }
        why.push_str(": ");
        why.push_str(&text);
        cause = c.source();
    }
    why
}

/// `postgres://user@host:port/db`, without the password.
pub(crate) fn identity(config: &Config) -> String {
    let user = config.get_user().unwrap_or("");
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(h)) => h.clone(),
        Some(Host::Unix(p)) => p.display().to_string(),
        None => "localhost".to_owned(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let db = config.get_dbname().unwrap_or(user);
    server_identity("postgres", user, &host, port, db)
}

/// Opens one connection without TLS, within the connect timeout; with `isolation`, the
/// session's default isolation level is that level.
///
/// The level goes in the login's `options` (`-c default_transaction_isolation=…`, after
/// any the URL gave, so it wins), not in a `SET` once connected: a pooling proxy passes a
/// `SET` to whichever server session it picked, which then keeps it for other clients,
/// while a login option never reaches another client's session.
pub(crate) fn open(config: &Config, isolation: Option<Isolation>) -> Result<Client, BoxError> {
    open_by(config, isolation, None)
}

/// [`open`] for a caller that waits no later than `deadline`: the connect timeout cut to
/// what is left ([`cut_to`](super::cut_to): at least [`MIN_LOGIN`](super::MIN_LOGIN)).
fn open_by(
    config: &Config,
    isolation: Option<Isolation>,
    deadline: Option<std::time::Instant>,
) -> Result<Client, BoxError> {
    let timeout = super::cut_to(
        config
            .get_connect_timeout()
            .copied()
            .unwrap_or(super::DEFAULT_CONNECT_TIMEOUT),
        deadline,
    );
    let server = identity(config);
    let mut config = config.clone();
    if let Some(level) = isolation {
        let mut options = config.get_options().unwrap_or_default().to_owned();
        if !options.is_empty() {
            options.push(' ');
        }
        // Static text; a space in a value is escaped with a backslash.
        options.push_str(match level {
            Isolation::ReadCommitted => "-c default_transaction_isolation=read\\ committed",
            Isolation::RepeatableRead => "-c default_transaction_isolation=repeatable\\ read",
            Isolation::Serializable => "-c default_transaction_isolation=serializable",
        });
        config.options(&options);
    }
    super::open_within(&server, timeout, move || Ok(config.connect(NoTls)?))
}

/// Whether `error` is PostgreSQL's "busy, try again": a serialization failure, a
/// deadlock, or a lock wait that hit `lock_timeout`.
pub fn is_busy(error: &postgres::Error) -> bool {
    matches!(
        error.code(),
        Some(c) if *c == SqlState::T_R_SERIALIZATION_FAILURE
            || *c == SqlState::T_R_DEADLOCK_DETECTED
            || *c == SqlState::LOCK_NOT_AVAILABLE
    )
}

fn classify(error: postgres::Error) -> TransactError {
    if is_busy(&error) {
        TransactError::Busy(Box::new(error))
    } else {
        TransactError::Failed(Box::new(error))
    }
}

impl Connect for Postgres {
    type Resource = Client;

    /// A server: every host that reaches it.
    fn arbitrates(&self) -> turnstile_core::Scope {
        turnstile_core::Scope::Hosts
    }

    fn connect(&self) -> Result<Client, BoxError> {
        open(&self.config, self.isolation)
    }

    /// The connect timeout cut to what is left before `deadline`, but not below 250 ms:
    /// a login cut shorter than a healthy server takes under load would be abandoned on
    /// every call, and enough abandoned logins refuse new ones as if the server were down.
    fn connect_within(&self, deadline: Option<std::time::Instant>) -> Result<Client, BoxError> {
        open_by(&self.config, self.isolation, deadline)
    }

    fn identity(&self) -> &str {
        &self.identity
    }

    fn is_valid(&self, client: &mut Client) -> bool {
        !client.is_closed()
    }

    /// An empty query, waiting at most the connect timeout.
    fn is_alive(&self, client: &mut Client) -> bool {
        let timeout = self
            .config
            .get_connect_timeout()
            .copied()
            .unwrap_or(DEFAULT_CONNECT_TIMEOUT);
        client.is_valid(timeout).is_ok()
    }

    fn is_broken(&self, client: &mut Client, error: &(dyn Any + Send + Sync)) -> bool {
        client.is_closed()
            || find_error::<postgres::Error>(error).is_some_and(postgres::Error::is_closed)
    }

    /// Unless the client is closed: the driver pairs each answer with its request, so a
    /// statement an op left unfinished never hands its answer to the next one.
    fn survives_panic(&self, client: &mut Client) -> bool {
        !client.is_closed()
    }
}

fn fence_i64(fence: Fence) -> Result<i64, TransactError> {
    i64::try_from(fence.0).map_err(|_| {
        TransactError::Failed(format!("fence {fence} does not fit PostgreSQL's BIGINT").into())
    })
}

fn check_fences(client: &mut Client, fences: &[FenceClaim<'_>]) -> Result<(), TransactError> {
    for claim in fences {
        let backend =
            String::from_utf8_lossy(&fence_column(claim.backend.as_bytes(), 1024)).into_owned();
        let name = fence_column(claim.name, 1024);
        let presented = fence_i64(claim.fence)?;
        // One statement checks and records: the upsert waits for a concurrent holder's
        // row lock, then re-evaluates its WHERE against the committed row.
        let recorded = client
            .query_opt(
                "INSERT INTO turnstile_fences (backend, name, fence) VALUES ($1, $2, $3)
                 ON CONFLICT (backend, name) DO UPDATE SET fence = EXCLUDED.fence
                 WHERE turnstile_fences.fence <= EXCLUDED.fence
                 RETURNING fence",
                &[&backend, &&*name, &presented],
            )
            .map_err(classify)?;
        if recorded.is_none() {
            let highest: i64 = client
                .query_one(
                    "SELECT fence FROM turnstile_fences WHERE backend = $1 AND name = $2",
                    &[&backend, &&*name],
                )
                .map_err(classify)?
                .get(0);
            return Err(TransactError::StaleFence {
                presented: claim.fence,
                highest: Fence(highest as u64),
            });
        }
    }
    Ok(())
}

impl Transact for Postgres {
    fn begin(&self, client: &mut Client, fences: &[FenceClaim<'_>]) -> Result<(), TransactError> {
        if !fences.is_empty() {
            self.ensure_fence_table(client)?;
        }
        // The marker savepoint lets commit see an op that ended the transaction. The
        // isolation level is static text, the level's SQL name.
        let begin = match self.isolation {
            Some(level) => format!(
                "BEGIN ISOLATION LEVEL {}; SAVEPOINT {MARKER_SAVEPOINT}",
                level.sql()
            ),
            None => format!("BEGIN; SAVEPOINT {MARKER_SAVEPOINT}"),
        };
        client.batch_execute(&begin).map_err(classify)?;
        if let Err(e) = check_fences(client, fences) {
            let _ = self.rollback(client);
            return Err(e);
        }
        Ok(())
    }

    fn commit(&self, client: &mut Client) -> Result<(), TransactError> {
        // If releasing the marker fails, the COMMIT after it in the batch never runs.
        match client.batch_execute(&format!("RELEASE SAVEPOINT {MARKER_SAVEPOINT}; COMMIT")) {
            Ok(()) => Ok(()),
            // No answer from the server but a broken connection: the COMMIT may have
            // reached it and committed.
            Err(e) if e.code().is_none() => Err(TransactError::Indeterminate(Box::new(e))),
            Err(e) => {
                let _ = self.rollback(client);
                let ended = e.code() == Some(&SqlState::NO_ACTIVE_SQL_TRANSACTION)
                    || e.code() == Some(&SqlState::S_E_INVALID_SPECIFICATION);
                if ended {
                    Err(TransactError::Ended)
                } else {
                    Err(classify(e))
                }
            }
        }
    }

    fn rollback(&self, client: &mut Client) -> Result<(), BoxError> {
        client.batch_execute("ROLLBACK").map_err(Into::into)
    }

    /// Always true: the driver does not expose the server's transaction status, and this
    /// method cannot ask the server. [`Transact::commit`] finds an ended transaction
    /// instead (see the [module docs](super)).
    fn in_transaction(&self, _client: &Client) -> bool {
        true
    }

    /// Rolls back to the marker savepoint `begin` set, then rolls back, in one round trip:
    /// if the op had ended the transaction, the marker is gone (`25P01` outside a
    /// transaction block, `3B001` in one the op began), and the `ROLLBACK` after it never
    /// runs; a transaction the op began is then rolled back.
    fn rollback_checked(&self, client: &mut Client) -> Result<bool, BoxError> {
        match client.batch_execute(&format!(
            "ROLLBACK TO SAVEPOINT {MARKER_SAVEPOINT}; ROLLBACK"
        )) {
            Ok(()) => Ok(true),
            Err(e) if e.code() == Some(&SqlState::NO_ACTIVE_SQL_TRANSACTION) => Ok(false),
            Err(e) if e.code() == Some(&SqlState::S_E_INVALID_SPECIFICATION) => {
                self.rollback(client)?;
                Ok(false)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Asks the server, silently: inside a transaction block every statement after the
    /// first sees `statement_timestamp()` later than `transaction_timestamp()`; outside
    /// one each statement is its own transaction and the two are equal. (`ROLLBACK` or
    /// `SAVEPOINT` outside a block would each log a complaint on the server per op.)
    fn end_stray_transaction(&self, client: &mut Client) -> Result<bool, BoxError> {
        // One simple-protocol message: its receipt is both the statement's and (outside a
        // block) the transaction's start. (The extended protocol's separate messages can
        // start them at different moments.)
        let open = match client
            .simple_query("SELECT transaction_timestamp() <> statement_timestamp()")
        {
            Ok(messages) => messages.iter().any(
                |m| matches!(m, postgres::SimpleQueryMessage::Row(row) if row.get(0) == Some("t")),
            ),
            // An aborted transaction refuses every statement until it ends.
            Err(e) if e.code() == Some(&SqlState::IN_FAILED_SQL_TRANSACTION) => true,
            Err(e) => return Err(e.into()),
        };
        if open {
            self.rollback(client)?;
        }
        Ok(open)
    }

    fn savepoint(&self, client: &mut Client, n: usize) -> Result<(), BoxError> {
        // `n` is a number the strategy chose, never user text.
        client
            .batch_execute(&format!("SAVEPOINT turnstile_{n}"))
            .map_err(Into::into)
    }

    fn release_savepoint(&self, client: &mut Client, n: usize) -> Result<(), BoxError> {
        client
            .batch_execute(&format!("RELEASE SAVEPOINT turnstile_{n}"))
            .map_err(Into::into)
    }

    fn rollback_to_savepoint(&self, client: &mut Client, n: usize) -> Result<(), BoxError> {
        client
            .batch_execute(&format!(
                "ROLLBACK TO SAVEPOINT turnstile_{n}; RELEASE SAVEPOINT turnstile_{n}"
            ))
            .map_err(Into::into)
    }

    fn forget_fence(
        &self,
        client: &mut Client,
        backend: &str,
        name: &[u8],
    ) -> Result<(), BoxError> {
        let backend = String::from_utf8_lossy(&fence_column(backend.as_bytes(), 1024)).into_owned();
        let name = fence_column(name, 1024);
        match client.execute(
            "DELETE FROM turnstile_fences WHERE backend = $1 AND name = $2",
            &[&backend, &&*name],
        ) {
            Ok(_) => Ok(()),
            Err(e) if e.code() == Some(&SqlState::UNDEFINED_TABLE) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    fn is_busy(&self, error: &(dyn Any + Send + Sync)) -> bool {
        find_error::<postgres::Error>(error).is_some_and(is_busy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The identity is printed and stored as a fence backend: a database name that reads
    /// as a password is masked in it, and a plain one is kept as it is.
    #[test]
    fn an_identity_shows_no_password_from_the_database_name() {
        let db = Postgres::new("postgres://u@h/db&password=Xy7k9").unwrap();
        assert!(!db.identity().contains("Xy7k9"), "{}", db.identity());
        let db = Postgres::new("postgres://u:secret@h:5433/app").unwrap();
        assert_eq!(db.identity(), "postgres://u@h:5433/app");
    }

    /// A `connect_timeout` of 0 or below, which the driver drops (libpq reads 0 as no
    /// limit), is refused, by the resource and the lock, naming it and no password; a
    /// positive one is kept, and the text of another option is not mistaken for it.
    #[test]
    fn a_connect_timeout_of_zero_or_below_is_refused() {
        for url in [
            "postgres://u:S3cr3t@h/db?connect_timeout=0",
            "postgres://u:S3cr3t@h/db?connect_timeout=-5",
            "postgresql://u:S3cr3t@h:5433/db?connect_timeout=5&connect_timeout=0",
            "postgres://u:S3cr3t@h?connect%5Ftimeout=0",
            "host=h password=S3cr3t connect_timeout=0",
            "host=h password='S3 cr3t' connect_timeout = '-1'",
        ] {
            for error in [
                Postgres::new(url).map(drop).unwrap_err(),
                crate::lock::PostgresLock::new(url).map(drop).unwrap_err(),
            ] {
                let shown = error.to_string();
                assert!(matches!(error, Error::Config(_)), "{url}: {shown}");
                assert!(shown.contains("connect_timeout="), "{url}: {shown}");
                assert!(!shown.contains("S3"), "{url}: {shown}");
            }
        }
        for (url, seconds) in [
            ("postgres://u:S3cr3t@h/db", 10),
            ("postgres://u:S3cr3t@h/db?connect_timeout=5", 5),
            ("postgres://u:connect_timeout=0@h/db?connect_timeout=3", 3),
            ("postgres://h/db?application_name=connect_timeout=0", 10),
            ("host=h password='connect_timeout=0' connect_timeout=7", 7),
            ("host=h application_name=x\\ connect_timeout=0", 10),
        ] {
            let db = Postgres::new(url).unwrap_or_else(|e| panic!("{url}: {e}"));
            let timeout = db.config().get_connect_timeout().copied();
            assert_eq!(timeout, Some(Duration::from_secs(seconds)), "{url}");
        }
    }

    /// The driver's reason for refusing a URL is shown, not only its `invalid connection
    /// string`, without a piece of a password.
    #[test]
    fn a_refused_url_says_why_without_showing_a_password() {
        for (url, why) in [
            ("postgres://u@h:99999/db", "invalid value for option `port`"),
            (
                "postgres://u:pw@h/db?sslmode=bogus",
                "invalid value for option `sslmode`",
            ),
            ("postgres://u@h/db?foo=bar", "unknown option `foo`"),
            (
                "host=h connect_timeout=x",
                "invalid value for option `connect_timeout`",
            ),
            ("host=h foo=bar", "unknown option `foo`"),
        ] {
            let error = parse_config(url).unwrap_err();
            let shown = error.to_string();
            assert!(matches!(error, Error::Config(_)), "{shown}");
            assert!(
                shown.contains(&format!("invalid connection string: {why}")),
                "{url}: {shown}"
            );
        }
        // The tail of a password with a raw `&` reads as an unknown option.
        let shown = parse_config("postgres://u@h/db?password=Xy7&k9zq=1")
            .unwrap_err()
            .to_string();
        assert!(shown.contains("unknown option"), "{shown}");
        assert!(!shown.contains("Xy7") && !shown.contains("k9zq"), "{shown}");
        let shown = parse_config("host=h password=Xy7 k9$zq=1")
            .unwrap_err()
            .to_string();
        assert!(shown.contains("unknown option"), "{shown}");
        assert!(!shown.contains("Xy7") && !shown.contains("k9"), "{shown}");
        // A quote or backtick in that tail would end the quoted piece early.
        for url in [
            "postgres://u@h/db?password=Xy7&k9'zq=1",
            "postgres://u@h/db?password=Xy7&k9`zq=1",
            "host=h password=Xy7 k9'zq=1",
        ] {
            let shown = parse_config(url).unwrap_err().to_string();
            assert!(shown.contains("unknown option"), "{shown}");
            assert!(
                !shown.contains("zq") && !shown.contains("k9"),
                "{url}: {shown}"
            );
        }
        // A character the key-value parser did not expect may be a password's.
        let shown = parse_config("host=h password=Xy7 k9 wq")
            .unwrap_err()
            .to_string();
        assert!(shown.contains("unexpected character at byte"), "{shown}");
        assert!(!shown.contains("Xy7") && !shown.contains("`w`"), "{shown}");
    }

    /// The value of an option the driver refused may be a secret under a misspelt name
    /// (`passwd=`): masked, in the URL shown and in the reason, its name kept; also after
    /// a query password, whose mask no longer hides the refused option's name.
    #[test]
    fn a_refused_option_shows_its_name_and_not_its_value() {
        for (url, named) in [
            (
                "postgres://u@h/db?passwd=Secret1",
                "unknown option `passwd`",
            ),
            (
                "postgres://u@h/db?PassWd=Secret1",
                "unknown option `PassWd`",
            ),
            ("host=h passwd=Secret1", "unknown option `passwd`"),
            ("host=h passwd='Secret1 x'", "unknown option `passwd`"),
            (
                "postgres://u@h/db?password=Secret0&passwd=Secret1",
                "unknown option `passwd`",
            ),
            (
                "postgres://u@h/db?password=Secret0&foo=Secret1",
                "unknown option `foo`",
            ),
            (
                "postgres://u@h/db?sslmode=Secret1",
                "invalid value for option `sslmode`",
            ),
        ] {
            let error = parse_config(url).unwrap_err();
            let shown = error.to_string();
            assert!(matches!(error, Error::Config(_)), "{shown}");
            assert!(shown.contains(named), "{url}: {shown}");
            assert!(
                !shown.contains("Secret") && shown.contains("=***"),
                "{url}: {shown}"
            );
        }
        let shown = parse_config("postgres://u@h/db?password=Secret0&foo=bar")
            .unwrap_err()
            .to_string();
        assert!(shown.contains("?password=***&foo=***\""), "{shown}");
    }

    /// What would fail only when connecting, as if the server were down, is refused as
    /// the URL's fault: TLS (connections are made without it) and a NUL character.
    #[test]
    fn tls_and_nul_characters_are_refused_before_connecting() {
        for (url, why) in [
            (
                "postgres://u@h/db?sslmode=require",
                "sslmode=require requires TLS",
            ),
            (
                "postgres://u@h/db?channel_binding=require",
                "channel_binding=require requires TLS, and turnstile connects to PostgreSQL \
                 without it; leave it out (or use channel_binding=prefer)",
            ),
            ("host=h sslmode=require", "sslmode=require requires TLS"),
            ("postgres://u@h/te%00st", "its database name holds a NUL"),
            ("postgres://u%00v@h/db", "its user holds a NUL"),
            ("postgres://u:Xy7%00k9@h/db", "its password holds a NUL"),
            (
                "postgres://u@h/db?application_name=a%00b",
                "its application_name holds a NUL",
            ),
            ("postgres://u@h/db?options=a%00b", "its options holds a NUL"),
            ("postgres://u@h%00x/db", "a host holds a NUL"),
            ("postgres://u@%2Frun%2Fa%00b/db", "a host holds a NUL"),
        ] {
            let error = parse_config(url).unwrap_err();
            let shown = error.to_string();
            assert!(matches!(error, Error::Config(_)), "{shown}");
            assert!(shown.contains(why), "{url}: {shown}");
            assert!(!shown.contains("Xy7"), "{shown}");
        }
        for fine in [
            "postgres://u@h/db?sslmode=disable",
            "postgres://u@h/db?sslmode=prefer",
            "postgres://u@h/db?channel_binding=prefer",
            // Without TLS to negotiate, the driver connects in plain text as `prefer` does.
            "postgres://u@h/db?sslnegotiation=direct",
        ] {
            assert!(parse_config(fine).is_ok(), "{fine}");
        }
    }

    /// The driver reads user info up to the first `@`: a raw `@` in the password leaves a
    /// piece of it in the host or database name, a query before the first `@` is the user,
    /// and a host and port before it are the user and password, with the host after the
    /// `@`; the identity would show the password's piece, or name the wrong server.
    #[test]
    fn user_info_the_driver_misreads_is_refused_without_showing_it() {
        for (url, pieces) in [
            ("postgres://app:P@ssw0rd/1@db/app", &["P@", "ssw0rd"][..]),
            ("postgresql://app:P@ssw0rd#1@db/app", &["P@", "ssw0rd"]),
            (
                "postgres://h/db?password=Xy7k9&application_name=a@b",
                &["Xy7k9"],
            ),
            // User `h`, password `5432/db?…`, host `b`.
            (
                "postgres://h:5432/db?password=Xy7k9&application_name=a@b",
                &["Xy7k9"],
            ),
            ("postgres://[::1]:5432/db?application_name=a@b", &[]),
            // Indistinguishable from `app:P@ss/1@db`, whose host the driver reads as `ss`.
            ("postgres://u:pw@h/my@db", &["pw@", "h/my"]),
        ] {
            let error = parse_config(url).unwrap_err();
            let shown = error.to_string();
            assert!(matches!(error, Error::Config(_)), "{shown}");
            assert!(shown.contains("%40"), "{shown}");
            for piece in pieces {
                assert!(!shown.contains(piece), "{shown}");
            }
        }
        let config = parse_url("postgres://app:P%40ssw0rd%2F1@db/app").unwrap();
        assert_eq!(identity(&config), "postgres://app@db:5432/app");
        let config = parse_config("postgres://u:pw@h/my%40db").unwrap();
        assert_eq!(config.get_dbname(), Some("my@db"));
        // An `@` in the value of a parameter the driver knows, even with a `/` after it:
        // the driver's credentials end at the first `@`, as written.
        let url = "postgres://u:pw@h/db?application_name=deploy@ci/job";
        let config = parse_config(url).unwrap();
        assert_eq!(config.get_application_name(), Some("deploy@ci/job"));
        assert_eq!(identity(&parse_url(url).unwrap()), "postgres://u@h:5432/db");
        for fine in [
            "postgres://u@h/db?application_name=a@b",
            "postgres://u:pw@h1:5432,h2:5433/db",
            "postgres://u:pw@[::1]:5432/db",
            "postgres://u:pa?ss@h/db",
            "postgres://u:se/cr#et@h/db",
            "postgres://u:1234@h/db",
            "postgres://u@%2Frun%2Fpostgresql/db",
            "host=db user=app password=p@ss/w?rd#1@x",
        ] {
            assert!(parse_config(fine).is_ok(), "{fine}");
        }
    }
}
