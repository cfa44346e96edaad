//! One Redis server: a small pool of blocking connections with connect and response
//! timeouts, and the three Lua scripts every lease needs (acquire, extend, release).
//!
//! Keys and tokens always travel in `KEYS`/`ARGV`; no script text is ever built from data.

use std::fmt;
use std::io;
use std::sync::{Arc, LazyLock, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use redis::{
    Client, Connection, ConnectionAddr, ConnectionLike, ErrorKind, FromRedisValue,
    IntoConnectionInfo, RedisError, Script, ServerErrorKind, Value,
};
use turnstile_core::{BoxError, Error, StrategyError};

/// The shortest timeout a network call gets, even when the caller's deadline is closer:
/// a tighter one would report a healthy server as unavailable.
pub(super) const MIN_IO_TIMEOUT: Duration = Duration::from_millis(50);

/// The most unanswered acquires remembered for release (see `Node::orphans`).
const MAX_ORPHANS: usize = 256;

/// The fence step shared by the acquire and hand-off scripts: with fencing on (`ARGV[4]`
/// is `1`), `INCR` the counter `KEYS[2]`, seeding a missing one (which `INCR` takes to 1)
/// from the server's `TIME` in microseconds, so a restarted server without persistence
/// still hands out higher fences than before, and return `{1, fence}`; otherwise
/// `{1, 0}`. One call in the common case: each `redis.call` costs the server time.
///
/// The seed is built by string concatenation, not arithmetic: Lua numbers are doubles
/// and `tostring` would print 1.7e15 in exponent form.
macro_rules! grant_and_fence {
    () => {
        r"
if ARGV[4] == '1' then
  local fence = redis.call('INCR', KEYS[2])
  if fence == 1 then
    local now = redis.call('TIME')
    redis.call('SET', KEYS[2], now[1] .. string.format('%06d', tonumber(now[2])))
    fence = redis.call('INCR', KEYS[2])
  end
  return {1, fence}
end
return {1, 0}
"
    };
}

/// `SET key token NX PX ttl`; on success, the fence step (see `grant_and_fence`). Returns
/// `{1, fence}` on success, `{0, pttl}` when someone else holds the key. A refused
/// attempt that names a waiting process (`ARGV[3]`, non-empty) marks `KEYS[3]` with it
/// for `ARGV[5]` ms, so a holder elsewhere releases rather than hands on (see `HANDOFF`).
static ACQUIRE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        r"
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  if ARGV[3] ~= '' then
    redis.call('SET', KEYS[3], ARGV[3], 'PX', ARGV[5])
  end
  return {0, redis.call('PTTL', KEYS[1])}
end
",
        grant_and_fence!()
    ))
});

/// Hands a lease on to a waiter of the same process in one round trip: while the key
/// still holds our token (`ARGV[1]`) and no other process marked itself waiting
/// (`KEYS[3]` absent or naming us, `ARGV[5]`), give the key the successor's token
/// (`ARGV[2]`) for a fresh TTL (`ARGV[3]` ms) and take the fence step, returning
/// `{1, fence}`. When another process waits, release as `RELEASE` does (publishing on
/// `ARGV[6]` if non-empty) and return `{2, 0}`, so it gets its turn; `{0, 0}` when the key
/// is not ours any more.
static HANDOFF: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return {0, 0}
end
local waiting = redis.call('GET', KEYS[3])
if waiting and waiting ~= ARGV[5] then
  redis.call('DEL', KEYS[1])
  if ARGV[6] ~= '' then
    redis.call('PUBLISH', ARGV[6], KEYS[1])
  end
  return {2, 0}
end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
",
        grant_and_fence!()
    ))
});

/// Compare-and-pexpire: extends the key only while it still holds our token.
static EXTEND: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
",
    )
});

/// Compare-and-delete, then tell waiting processes (if a channel is given).
static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  if ARGV[2] ~= '' then
    redis.call('PUBLISH', ARGV[2], KEYS[1])
  end
  return 1
end
return 0
",
    )
});

/// What a hand-off found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Handoff {
    /// The successor holds it now; its fence (0 when fencing is off).
    Granted(u64),
    /// Another process waits: released (and published) instead.
    Released,
    /// The key was not ours any more.
    NotOurs,
}

/// A process waiting for a lock name, as marked by its refused attempts: its tag, and for
/// how long the mark stands.
pub(super) type Waiting<'a> = Option<(&'a str, Duration)>;

/// What one acquire attempt on one server found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Attempt {
    /// We hold it now; the fence (0 when fencing is off).
    Acquired(u64),
    /// Someone else holds it for this much longer (as far as the server knows).
    Held(Option<Duration>),
}

/// What a connection was doing when it failed, for the text of a timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stage {
    /// Connecting (TCP, the TLS handshake, the connection's setup), within this long.
    Connect(Duration),
    /// Waiting for the reply of a command, this long at most.
    Reply(Duration),
}

/// A Redis failure on a named server (the name never carries a password).
#[derive(Debug)]
pub(super) struct ServerError {
    server: String,
    source: RedisError,
    stage: Stage,
    transport: Transport,
}

/// How a server is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transport {
    Tcp,
    Tls,
    Unix,
}

impl Transport {
    /// What a server that is not Redis is, said of this way to it.
    fn not_redis(self) -> &'static str {
        match self {
            Transport::Unix => "the socket may not be Redis's",
            Transport::Tcp | Transport::Tls => "the port may not speak Redis",
        }
    }
}

impl ServerError {
    /// Why the server failed, without its name (which [`Display`](fmt::Display) puts
    /// first): for a list of servers that each say their own.
    pub(super) fn reason(&self) -> Reason<'_> {
        Reason(self)
    }
}

impl fmt::Display for ServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "redis at {}: {}", self.server, self.reason())
    }
}

/// What [`ServerError::reason`] shows.
pub(super) struct Reason<'a>(&'a ServerError);

impl fmt::Display for Reason<'_> {
    /// A timeout says in words what got no answer within how long (the OS's text,
    /// `Resource temporarily unavailable`, says neither), and so does a new connection
    /// that the server closed, or whose TLS handshake got an answer that is not TLS;
    /// anything else is the driver's text, less its kind.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Reason(e) = self;
        let kind = io_error(&e.source).map(io::Error::kind);
        let connecting = matches!(e.stage, Stage::Connect(_));
        if connecting && e.transport == Transport::Tls && answered_in_plain_text(&e.source) {
            // A port that speaks plain Redis and answers at once (an error, such as
            // `-ERR max number of clients reached`): rustls reads no TLS record.
            return f.write_str(
                "the answer to the TLS handshake is not TLS while connecting: if the port speaks plain Redis, use redis://",
            );
        }
        if !e.source.is_timeout() {
            let closed = matches!(
                kind,
                Some(
                    io::ErrorKind::ConnectionReset
                        | io::ErrorKind::ConnectionAborted
                        | io::ErrorKind::UnexpectedEof
                        | io::ErrorKind::BrokenPipe
                )
            );
            if closed && e.transport == Transport::Tcp && connecting {
                // What a TLS port does to a client that speaks plain RESP to it, and
                // what other servers do to a line they cannot read.
                return f.write_str(
                    "the server closed the connection while connecting: the port may not speak Redis, or speak only TLS (then use rediss://)",
                );
            }
            let garbled = matches!(
                e.source.kind(),
                ErrorKind::Parse | ErrorKind::UnexpectedReturnType
            );
            if garbled && connecting {
                // Another server's greeting (MySQL's handshake), or replies that are
                // RESP but not what the setup asked for.
                return write!(
                    f,
                    "the answer is not Redis's while connecting: {}",
                    e.transport.not_redis()
                );
            }
            return f.write_str(&in_words(&e.source));
        }
        // A timeout cut to the caller's deadline is shown in whole milliseconds.
        let stage = match e.stage {
            Stage::Connect(t) => Stage::Connect(whole_millis(t)),
            Stage::Reply(t) => Stage::Reply(whole_millis(t)),
        };
        let not_redis = e.transport.not_redis();
        match stage {
            // The TCP connection was made (a read timed out, not the connect): a port
            // that speaks plain Redis waits for a line that a TLS handshake never ends
            // (its first record holds a NUL byte, where Redis stops looking for one).
            Stage::Connect(t)
                if e.transport == Transport::Tls && kind == Some(io::ErrorKind::WouldBlock) =>
            {
                write!(
                    f,
                    "no TLS answer within {t:?} while connecting: if the port speaks plain Redis, use redis://; else the server may be paused or overloaded"
                )
            }
            Stage::Connect(t) => write!(
                f,
                "no answer within {t:?} while connecting: the server may be paused or overloaded, or {not_redis}"
            ),
            Stage::Reply(t) => write!(
                f,
                "no answer within {t:?} to a command: the server may be paused or overloaded"
            ),
        }
    }
}

/// The driver's error without its kind in Rust's words, which its text ends with
/// (`Password authentication failed - AuthenticationFailed`, or `… -
/// Server(ResponseError): DB index is out of range`): a refused login says which it was,
/// anything else is the driver's text less its kind.
fn in_words(e: &RedisError) -> String {
    if e.kind() == ErrorKind::AuthenticationFailed && e.detail() == Some(NO_PASSWORD_SET) {
        return "authentication failed: the server has no password set, so it refuses one: leave the password out of the URL (or give the server one: requirepass)"
            .to_owned();
    }
    // The first command the server got, `SELECT`, `PING` or `HELLO 3`, without a login.
    if e.code() == Some("NOAUTH") || e.detail() == Some(NO_PASSWORD_GIVEN) {
        return "authentication required: the server has a password and the URL gives none (redis://:PASSWORD@host, or ?pass=PASSWORD after a unix socket's path)"
            .to_owned();
    }
    // `WRONGPASS` is how `HELLO 3 AUTH` (RESP3) is refused.
    if e.kind() == ErrorKind::AuthenticationFailed || e.code() == Some("WRONGPASS") {
        return "authentication failed: the server refused the password (or the user and password)"
            .to_owned();
    }
    let text = e.to_string();
    text.replacen(&format!(" - {:?}", e.kind()), "", 1)
}

/// `d` to the nearest whole millisecond (a timeout cut to a deadline, or a setup that a
/// floor stretched, is no round number).
fn whole_millis(d: Duration) -> Duration {
    let ms = d.as_nanos().saturating_add(500_000) / 1_000_000;
    Duration::from_millis(u64::try_from(ms).unwrap_or(u64::MAX))
}

/// The I/O error `e` wraps, if it is one.
fn io_error(e: &RedisError) -> Option<&io::Error> {
    let inner = std::error::Error::source(e)?;
    // The redis crate keeps its I/O errors behind an `Arc`.
    inner.downcast_ref::<io::Error>().or_else(|| {
        inner
            .downcast_ref::<Arc<dyn std::error::Error + Send + Sync>>()
            .and_then(|e| e.downcast_ref::<io::Error>())
    })
}

/// Whether `e` is rustls finding that what the server sent is no TLS record (its first
/// byte no record type: a plain Redis reply starts with `-`, `+`, `$`, …).
#[cfg(feature = "redis-tls")]
fn answered_in_plain_text(e: &RedisError) -> bool {
    let tls = io_error(e)
        .and_then(io::Error::get_ref)
        .and_then(|inner| inner.downcast_ref::<rustls::Error>());
    matches!(
        tls,
        Some(rustls::Error::InvalidMessage(
            rustls::InvalidMessage::InvalidContentType
        ))
    )
}

#[cfg(not(feature = "redis-tls"))]
fn answered_in_plain_text(_: &RedisError) -> bool {
    false
}

/// No source: the display already says the driver's error, in words, and a printer of
/// the error's chain (the CLI, `anyhow`'s `{:#}`) would say it again in the driver's —
/// the OS's `Resource temporarily unavailable` after "no answer within 2s", say.
impl std::error::Error for ServerError {}

/// One server and its idle connections.
pub(super) struct Node {
    connector: Connector,
    display: String,
    idle: Mutex<Vec<Pooled>>,
    /// Where releases are published (empty: nowhere).
    channel: Vec<u8>,
    /// Leases an acquire may have set although we saw no reply (a response timeout, a
    /// dropped connection): released before the next attempt, so a paused server does
    /// not leave a ghost holding the name for a whole TTL after it resumes.
    orphans: Mutex<Vec<(Keys, String)>>,
    connect_timeout: Duration,
    response_timeout: Duration,
    /// How the server is reached (for the text of a failure).
    transport: Transport,
    /// Whether to learn the server's `run_id` (see [`Node::identified`]).
    identify: bool,
    /// The server's `run_id` (`INFO server`), once a connection learned it; `None` inside
    /// when the server would not say (`INFO` renamed away, or denied by an ACL).
    run_id: OnceLock<Option<String>>,
}

struct Pooled {
    conn: Connection,
    /// The read/write timeout currently set on the socket, to skip redundant syscalls.
    timeout: Duration,
    /// A release sent on this connection whose reply is still to be read (see
    /// [`Node::release_later`]): its lease, in case the reply says it did not run.
    pending: Option<(Keys, String)>,
}

impl fmt::Debug for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Node")
            .field("server", &self.display)
            .finish_non_exhaustive()
    }
}

/// Parses a server URL into a connector, refusing what we cannot serve with a typed error.
///
/// # Errors
/// [`Error::Config`] for an unparseable URL, an unknown scheme, user info whose end drivers
/// read differently (see [`crate::spec::userinfo_is_ambiguous`]) or that holds a `%` starting
/// no percent-escape, `rediss://` without TLS
/// support compiled in, or bad TLS parameters (see [`super::tls`]).
pub(super) fn parse_url(url: &str) -> Result<(Connector, String), StrategyError> {
    let shown = crate::spec::redact_url(url);
    let scheme = url.split_once("://").map(|(s, _)| s.to_ascii_lowercase());
    match scheme.as_deref() {
        Some("redis" | "rediss" | "redis+unix" | "unix") => {}
        // The scheme is not quoted on its own: it is the raw text before the first `://`,
        // which may hold a password (`redis:/u:pw@h/0?x=a://b`); the redacted URL shows it.
        Some(_) => {
            return Err(Error::Config(format!(
                "unknown Redis URL scheme in {shown:?}; expected redis://, rediss:// or redis+unix://"
            )));
        }
        None => {
            return Err(Error::Config(format!(
                "{shown:?} is not a Redis URL (redis://[user:password@]host[:port][/db])"
            )));
        }
    }
    // A raw `@` in the password followed by a `/`, `?` or `#`: this driver would take a
    // piece of the password for the host (`redis://:P@ss#1@h`), which `display_of` shows.
    crate::spec::refuse_ambiguous_userinfo("Redis", url)?;
    if cfg!(not(feature = "redis-tls")) && scheme.as_deref() == Some("rediss") {
        return Err(Error::Config(format!(
            "{shown:?} needs TLS, which this build of turnstile does not include (its feature redis-tls)"
        )));
    }
    let (rest, tls) = super::tls::TlsFiles::take(url)?;
    super::refuse_unknown_params(url, false)?;
    let info = rest.as_str().into_connection_info().map_err(|e| {
        // The driver's message may quote a piece of the URL (a parameter's value that
        // is a piece of a password with a raw `?`).
        let e = crate::spec::redact_message(url, &e.to_string());
        Error::Config(format!("cannot parse Redis URL {shown:?}: {e}"))
    })?;
    // The driver takes any number; only the server refuses one below 0, once reached.
    if info.redis_settings().db() < 0 {
        return Err(Error::Config(format!(
            "bad Redis URL {shown:?}: database {} is below 0 (the path /N picks database N, 0 and up)",
            info.redis_settings().db()
        )));
    }
    let display = display_of(&info);
    let client = match info.addr() {
        ConnectionAddr::TcpTls { insecure: true, .. } => {
            return Err(Error::Config(format!(
                "{shown:?} asks for TLS without verifying the server (#insecure), which turnstile does not do; name the server's CA with ?{}=FILE",
                super::TLS_CA_PARAM
            )));
        }
        #[cfg(feature = "redis-tls")]
        ConnectionAddr::TcpTls { .. } => tls.client(info, url)?,
        _ if !tls.is_empty() => {
            return Err(Error::Config(format!(
                "{shown:?}: TLS parameters need a rediss:// URL"
            )));
        }
        _ => Client::open(info).map_err(|e| {
            let e = crate::spec::redact_message(url, &e.to_string());
            Error::Config(format!("cannot use Redis URL {shown:?}: {e}"))
        })?,
    };
    let connector = Connector::new(&client).map_err(|e| {
        let e = crate::spec::redact_message(url, &e.to_string());
        Error::Config(format!("cannot use Redis URL {shown:?}: {e}"))
    })?;
    Ok((connector, display))
}

/// How a new connection to one server is opened and set up within a time budget (see
/// [`connect`](Self::connect)). Cheap to clone; it holds the password, which its `Debug`
/// does not show.
#[derive(Clone)]
pub(super) struct Connector {
    /// The server as parsed (for its database number, and for tests).
    info: redis::ConnectionInfo,
    /// What the redis crate is given to connect: the address and TLS settings, and with
    /// RESP3 the `HELLO` it sends (which also logs in). The rest of the setup is ours.
    driver: Client,
    /// `AUTH`'s user (if any) and password, which we send (RESP2 with a password).
    auth: Option<(Option<String>, String)>,
    /// The database to `SELECT` (0: none).
    db: i64,
    /// Whether the redis crate's connect asks the server something (RESP3's `HELLO`).
    hello: bool,
}

impl fmt::Debug for Connector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connector")
            .field("db", &self.db)
            .finish_non_exhaustive()
    }
}

impl Connector {
    /// A connector for `client`'s server, with its login and database.
    ///
    /// # Errors
    /// What the redis crate says about the connection info without them (nothing, as of
    /// redis 1.8).
    fn new(client: &Client) -> redis::RedisResult<Self> {
        let info = client.get_connection_info().clone();
        let settings = info.redis_settings();
        let hello = settings.protocol().supports_resp3();
        // No `CLIENT SETINFO` on each new connection: nothing reads it.
        let mut driver = redis::RedisConnectionInfo::default().set_skip_set_lib_name();
        let mut auth = None;
        if hello {
            // The redis crate's `Connection` speaks RESP3 only if it sent the `HELLO`
            // itself, and that `HELLO` must log in (a server with a password refuses it
            // otherwise).
            driver = driver.set_protocol(settings.protocol());
            if let Some(user) = settings.username() {
                driver = driver.set_username(user);
            }
            if let Some(password) = settings.password() {
                driver = driver.set_password(password);
            }
        } else if let Some(password) = settings.password() {
            auth = Some((settings.username().map(str::to_owned), password.to_owned()));
        }
        let db = settings.db();
        let driver = Client::open(info.clone().set_redis_settings(driver))?;
        Ok(Connector {
            info,
            driver,
            auth,
            db,
            hello,
        })
    }

    /// The server's connection info, as parsed from its URL.
    pub(super) fn info(&self) -> &redis::ConnectionInfo {
        &self.info
    }

    /// Opens a connection whose server has answered within `budget`: one deadline for the
    /// whole setup, and each step gets what is left of it: the TCP connection, then,
    /// sending the setup's commands, over TLS the handshake, then each reply in turn
    /// (the login, `AUTH`, and `SELECT`; with neither, a `PING`). The redis crate would
    /// give each of its setup replies the whole of what was left after the TCP connect, one
    /// after the other, and over TLS the handshake too: this is why the setup is ours.
    ///
    /// No step gets less than [`MIN_IO_TIMEOUT`]: a budget that runs out (or is below
    /// that) is overrun by up to that much per step, and a failure's
    /// [`allowed`](ConnectError::allowed) says how long the setup was really allowed.
    /// What no timeout here bounds: resolving the host's name; the redis crate's TCP
    /// connect tries each address a name resolves to with the whole of what was left;
    /// with RESP3 (`?protocol=3`) the redis crate sends `HELLO` itself, and over TLS reads
    /// the handshake and `HELLO`'s reply under one socket timeout (what was left after
    /// the TCP connect), so those two may take up to twice that. As always with socket
    /// timeouts, each bounds one wait for data, so a server that trickles bytes slowly
    /// can take longer.
    ///
    /// The connection's socket timeouts are left as the setup's last step set them. (The
    /// redis crate's own `Connection::get_db` says 0 whatever the database: it did not
    /// select it. [`Node`] knows which it is.)
    ///
    /// # Errors
    /// What the redis crate or the server said, with how long the setup was allowed.
    pub(super) fn connect(&self, budget: Duration) -> Result<Connection, ConnectError> {
        let mut clock = SetupClock::new(Instant::now(), budget);
        let step = if self.hello {
            // The redis crate reads `HELLO`'s reply (over TLS, and the handshake) within
            // what is left of this one timeout after the TCP connect, without a floor of
            // its own: the floor is added here, so that the login too gets at least it.
            clock.step_and_floor(Instant::now())
        } else {
            clock.step(Instant::now())
        };
        let mut conn = self
            .driver
            .get_connection_with_timeout(step)
            .map_err(|e| clock.failed(e))?;
        let with_user = self.auth.as_ref().is_some_and(|(user, _)| user.is_some());
        match self.set_up(&mut conn, &mut clock, with_user) {
            Ok(Login::Done) => Ok(conn),
            // A server older than Redis 6 knows no users: the password alone, as the
            // redis crate does.
            Ok(Login::WithoutUser) => match self.set_up(&mut conn, &mut clock, false) {
                Ok(Login::Done) => Ok(conn),
                Ok(Login::WithoutUser) => Err(clock.failed(auth_failed())),
                Err(e) => Err(clock.failed(e)),
            },
            Err(e) => Err(clock.failed(e)),
        }
    }

    /// Sends the setup's commands at once (over TLS, the handshake comes first), then
    /// reads each reply against what is left of `clock`'s deadline. `with_user`: whether
    /// `AUTH` names the user.
    fn set_up(
        &self,
        conn: &mut Connection,
        clock: &mut SetupClock,
        with_user: bool,
    ) -> redis::RedisResult<Login> {
        let mut packed = Vec::new();
        if let Some((user, password)) = &self.auth {
            let mut auth = redis::cmd("AUTH");
            if let Some(user) = user.as_deref().filter(|_| with_user) {
                auth.arg(user);
            }
            auth.arg(password.as_bytes());
            packed.extend(auth.get_packed_command());
        }
        if self.db != 0 {
            packed.extend(redis::cmd("SELECT").arg(self.db).get_packed_command());
        }
        let ping = packed.is_empty() && !self.hello;
        if ping {
            // The setup asks the server nothing: a `PING` shows it answers.
            packed.extend(redis::cmd("PING").get_packed_command());
        }
        if packed.is_empty() {
            // The redis crate's setup cleared the socket timeouts: what is left, as a step
            // would set them.
            let step = clock.step(Instant::now());
            conn.set_write_timeout(Some(step))?;
            conn.set_read_timeout(Some(step))?;
            return Ok(Login::Done);
        }
        let step = clock.step(Instant::now());
        conn.set_write_timeout(Some(step))?;
        conn.set_read_timeout(Some(step))?;
        conn.send_packed_command(&packed)?;
        let mut reply = |clock: &mut SetupClock| {
            conn.set_read_timeout(Some(clock.step(Instant::now())))?;
            conn.recv_response()
        };
        let mut login = Login::Done;
        if self.auth.is_some() {
            login = checked_auth(&reply(clock)?, with_user)?;
        }
        if self.db != 0 {
            let selected = reply(clock)?;
            // After a refused login, `SELECT` was refused too; both are sent again.
            if login == Login::Done {
                checked_select(selected)?;
            }
        }
        if ping {
            reply(clock)?.extract_error()?;
        }
        Ok(login)
    }
}

/// What a login found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Login {
    /// Logged in (or nothing to log in).
    Done,
    /// The server takes `AUTH` without a user only (before Redis 6).
    WithoutUser,
}

/// `AUTH`'s reply, checked as the redis crate checks it.
fn checked_auth(reply: &Value, with_user: bool) -> redis::RedisResult<Login> {
    match reply {
        Value::Okay => Ok(Login::Done),
        Value::ServerError(e)
            if with_user
                && e.details().is_some_and(|d| {
                    d.contains("wrong number of arguments for 'auth' command")
                }) =>
        {
            Ok(Login::WithoutUser)
        }
        // Redis 6 and later, to `AUTH password` without a password set.
        Value::ServerError(e)
            if e.details()
                .is_some_and(|d| d.contains("without any password configured")) =>
        {
            Err(RedisError::from((
                ErrorKind::AuthenticationFailed,
                "Password authentication failed",
                NO_PASSWORD_SET.to_owned(),
            )))
        }
        Value::ServerError(_) => Err(auth_failed()),
        _ => Err(RedisError::from((
            ServerErrorKind::ResponseError.into(),
            "Redis server refused to authenticate, returns Ok() != Value::Okay",
        ))),
    }
}

/// The detail of a refused login whose server has no password to check.
const NO_PASSWORD_SET: &str = "the server has no password set";

/// The detail of a refused `SELECT` that came before any login.
const NO_PASSWORD_GIVEN: &str = "the URL gives no password";

/// The redis crate's error for a password the server refused.
fn auth_failed() -> RedisError {
    RedisError::from((
        ErrorKind::AuthenticationFailed,
        "Password authentication failed",
    ))
}

/// `SELECT`'s reply, checked as the redis crate checks it.
fn checked_select(reply: Value) -> redis::RedisResult<()> {
    match reply {
        Value::ServerError(e) if e.code() == "NOAUTH" => Err(RedisError::from((
            ErrorKind::AuthenticationFailed,
            "Authentication required",
            NO_PASSWORD_GIVEN.to_owned(),
        ))),
        Value::ServerError(e) => Err(RedisError::from((
            ServerErrorKind::ResponseError.into(),
            "Redis server refused to switch database",
            e.details().unwrap_or_default().to_owned(),
        ))),
        _ => Ok(()),
    }
}

/// A connection that could not be opened.
#[derive(Debug)]
pub(super) struct ConnectError {
    /// What the redis crate or the server said.
    pub(super) source: RedisError,
    /// How long the setup was really allowed: its budget, or more where a step got
    /// [`MIN_IO_TIMEOUT`] past the deadline.
    pub(super) allowed: Duration,
}

/// The deadline of one connection's setup, and how long the setup has really been
/// allowed so far: each step gets what is left of the deadline, but at least
/// [`MIN_IO_TIMEOUT`].
#[derive(Debug, Clone, Copy)]
struct SetupClock {
    start: Instant,
    budget: Duration,
    /// `None` past what an `Instant` can hold: then each step gets the whole budget.
    deadline: Option<Instant>,
    allowed: Duration,
}

impl SetupClock {
    fn new(start: Instant, budget: Duration) -> Self {
        SetupClock {
            start,
            budget,
            deadline: start.checked_add(budget),
            allowed: budget,
        }
    }

    /// The timeout of a step that starts at `now`.
    fn step(&mut self, now: Instant) -> Duration {
        let left = self
            .deadline
            .map_or(self.budget, |d| d.saturating_duration_since(now));
        let step = left.max(MIN_IO_TIMEOUT);
        self.allowed = self
            .allowed
            .max(now.saturating_duration_since(self.start) + step);
        step
    }

    /// The timeout of a step that starts at `now` and holds two waits, the second
    /// within what the first leaves: [`step`](Self::step)'s, and the floor once more.
    fn step_and_floor(&mut self, now: Instant) -> Duration {
        let step = self.step(now).saturating_add(MIN_IO_TIMEOUT);
        self.allowed = self
            .allowed
            .max(now.saturating_duration_since(self.start) + step);
        step
    }

    fn failed(&self, source: RedisError) -> ConnectError {
        ConnectError {
            source,
            allowed: self.allowed,
        }
    }
}

/// The server as `scheme://[user@]address/db`, never with a password: built from the
/// parsed settings, not by masking the URL's text.
fn display_of(info: &redis::ConnectionInfo) -> String {
    let user = info
        .redis_settings()
        .username()
        .map(|u| format!("{u}@"))
        .unwrap_or_default();
    let db = info.redis_settings().db();
    match info.addr() {
        ConnectionAddr::Tcp(host, port) => format!("redis://{user}{host}:{port}/{db}"),
        ConnectionAddr::TcpTls { host, port, .. } => format!("rediss://{user}{host}:{port}/{db}"),
        ConnectionAddr::Unix(path) => format!("redis+unix://{user}{}?db={db}", path.display()),
        other => format!("redis://{user}{other}/{db}"),
    }
}

impl Node {
    pub(super) fn new(
        connector: Connector,
        display: String,
        channel: Vec<u8>,
        connect_timeout: Duration,
        response_timeout: Duration,
    ) -> Self {
        let transport = match connector.info().addr() {
            ConnectionAddr::TcpTls { .. } => Transport::Tls,
            ConnectionAddr::Unix(_) => Transport::Unix,
            _ => Transport::Tcp,
        };
        Node {
            connector,
            display,
            idle: Mutex::new(Vec::new()),
            channel,
            orphans: Mutex::new(Vec::new()),
            connect_timeout,
            response_timeout,
            transport,
            identify: false,
            run_id: OnceLock::new(),
        }
    }

    /// This node, learning its server's `run_id` on its first connection: Redlock's
    /// servers must be distinct, and one server listed under two names (`127.0.0.1:6379`
    /// and `localhost:6379`) has one `run_id`. It costs one `INFO server` per node.
    pub(super) fn identified(mut self) -> Self {
        self.identify = true;
        self
    }

    /// The server's `run_id`, once a connection learned it (see [`Node::identified`]).
    pub(super) fn run_id(&self) -> Option<&str> {
        self.run_id.get().and_then(Option::as_deref)
    }

    /// Asks the server for its `run_id` on `pooled`, if this node wants it and does not
    /// know it yet. A server that answers with an error (`INFO` renamed away or denied) is
    /// not asked again; any other failure drops the connection.
    fn learn_run_id(&self, pooled: &mut Pooled) -> Result<(), StrategyError> {
        // A connection that still owes a reply is an old one: it learned it already.
        if !self.identify || self.run_id.get().is_some() || pooled.pending.is_some() {
            return Ok(());
        }
        let info: redis::RedisResult<String> =
            redis::cmd("INFO").arg("server").query(&mut pooled.conn);
        let run_id = match info {
            Ok(text) => text.lines().find_map(|line| {
                line.strip_prefix("run_id:")
                    .map(|id| id.trim().to_owned())
                    .filter(|id| !id.is_empty())
            }),
            Err(e) if matches!(e.kind(), ErrorKind::Server(_)) => None,
            Err(e) => return Err(self.error(e, Stage::Reply(pooled.timeout))),
        };
        let _ = self.run_id.set(run_id);
        Ok(())
    }

    /// The server as shown in errors and `Debug` (no password).
    pub(super) fn display(&self) -> &str {
        &self.display
    }

    /// The database number the URL selected.
    pub(super) fn db(&self) -> i64 {
        self.connector.db
    }

    /// How to open a dedicated connection (the subscriber).
    pub(super) fn connector(&self) -> &Connector {
        &self.connector
    }

    pub(super) fn connect_timeout(&self) -> Duration {
        self.connect_timeout
    }

    fn idle(&self) -> MutexGuard<'_, Vec<Pooled>> {
        // Only pushes and pops happen under this mutex.
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `source`, a failure at `stage`, as [`Error::Unavailable`] naming the server.
    pub(super) fn error(&self, source: RedisError, stage: Stage) -> StrategyError {
        let boxed: BoxError = Box::new(ServerError {
            server: self.display.clone(),
            source,
            stage,
            transport: self.transport,
        });
        Error::Unavailable(boxed)
    }

    /// Runs `f` on a pooled connection whose socket timeouts end at `limit` (but never
    /// below [`MIN_IO_TIMEOUT`] nor above the configured ones). A connection that saw any
    /// error is dropped, never reused: a late reply would answer the next command.
    fn with_conn<T>(
        &self,
        limit: Option<Instant>,
        f: impl FnOnce(&mut Connection) -> redis::RedisResult<T>,
    ) -> Result<T, StrategyError> {
        let pooled = self.checkout(limit)?;
        self.run_on(pooled, f)
    }

    /// A connection, pooled or new, with no reply pending and its socket timeouts set
    /// for `limit` (see [`with_conn`](Self::with_conn)).
    fn checkout(&self, limit: Option<Instant>) -> Result<Pooled, StrategyError> {
        self.checkout_settled(limit, true)
    }

    /// As [`checkout`](Self::checkout); without `settle`, a pooled connection may still
    /// owe the reply of a release (its `pending`), for the caller to read.
    fn checkout_settled(
        &self,
        limit: Option<Instant>,
        settle: bool,
    ) -> Result<Pooled, StrategyError> {
        let clamp = |configured: Duration| match limit {
            Some(at) => configured.min(
                at.saturating_duration_since(Instant::now())
                    .max(MIN_IO_TIMEOUT),
            ),
            None => configured,
        };
        let mut pooled = loop {
            let Some(mut pooled) = self.idle().pop() else {
                let budget = clamp(self.connect_timeout);
                let conn = self
                    .connector
                    .connect(budget)
                    .map_err(|e| self.error(e.source, Stage::Connect(e.allowed)))?;
                break Pooled {
                    conn,
                    timeout: Duration::ZERO,
                    pending: None,
                };
            };
            if !settle || self.settle(&mut pooled) {
                break pooled;
            }
        };
        let timeout = clamp(self.response_timeout);
        if pooled.timeout != timeout {
            let set = pooled
                .conn
                .set_read_timeout(Some(timeout))
                .and_then(|()| pooled.conn.set_write_timeout(Some(timeout)));
            set.map_err(|e| self.error(e, Stage::Reply(timeout)))?;
            pooled.timeout = timeout;
        }
        self.learn_run_id(&mut pooled)?;
        Ok(pooled)
    }

    /// Reads the reply of a release sent earlier on `pooled`, if any (it has mostly
    /// arrived by then). A release that did not run (the server lost our script, or
    /// answered with an error) is run again at once, loading the script if need be, and
    /// remembered to be redone before the next attempt if that fails too; a connection
    /// whose reply did not come is not used again. Answers whether the connection can be
    /// used.
    fn settle(&self, pooled: &mut Pooled) -> bool {
        let Some((keys, token)) = pooled.pending.take() else {
            return true;
        };
        match pooled.conn.recv_response() {
            Ok(Value::ServerError(_)) => {
                let packed = self.release_command(&keys, &token);
                match call::<i64>(&mut pooled.conn, &RELEASE, &packed) {
                    Ok(_) => true,
                    Err(e) => {
                        self.remember_orphan(&keys, &token);
                        // A server error leaves the connection in step; anything else
                        // may not.
                        matches!(e.kind(), ErrorKind::Server(_))
                    }
                }
            }
            // 1: released; 0: it was not ours any more, which a dropped lease reports
            // to nobody.
            Ok(_) => true,
            Err(_) => {
                self.remember_orphan(&keys, &token);
                false
            }
        }
    }

    /// One acquire attempt.
    pub(super) fn try_acquire(
        &self,
        keys: &Keys,
        token: &str,
        ttl: Duration,
        fence: bool,
        waiting: Waiting<'_>,
        limit: Option<Instant>,
    ) -> Result<Attempt, StrategyError> {
        self.release_orphans(limit)?;
        let (tag, mark) = waiting.unwrap_or(("", Duration::ZERO));
        let packed = evalsha(
            &ACQUIRE,
            &[&keys.lock, &keys.fence, &keys.waiting],
            &[
                token.as_bytes(),
                millis(ttl).to_string().as_bytes(),
                tag.as_bytes(),
                flag(fence),
                millis(mark).to_string().as_bytes(),
            ],
        );
        let (won, n) = match self.acquire_on_a_connection(keys, token, limit, &packed) {
            Ok(reply) => reply,
            Err(e) => {
                self.remember_orphan(keys, token);
                return Err(e);
            }
        };
        Ok(if won == 1 {
            Attempt::Acquired(u64::try_from(n).unwrap_or(0))
        } else {
            // PTTL is -1 for a key without expiry (not ours: someone set it by hand).
            Attempt::Held(u64::try_from(n).ok().map(Duration::from_millis))
        })
    }

    /// Runs the acquire script (`packed`) on a pooled connection. When that connection
    /// still owes the reply of a release sent earlier (see
    /// [`release_later`](Self::release_later)), the acquire goes out before that reply is
    /// read, and both replies come back in one round trip instead of two. Redis runs one
    /// connection's commands in order, so the release has run before the acquire, as if
    /// its reply had been waited for.
    fn acquire_on_a_connection(
        &self,
        keys: &Keys,
        token: &str,
        limit: Option<Instant>,
        packed: &[u8],
    ) -> Result<(i64, i64), StrategyError> {
        let mut pooled = self.checkout_settled(limit, false)?;
        let Some((old_keys, old_token)) = pooled.pending.take() else {
            return self.run_on(pooled, |conn| call(conn, &ACQUIRE, packed));
        };
        let replies = pooled.conn.send_packed_command(packed).and_then(|()| {
            let released = pooled.conn.recv_response()?;
            Ok((released, pooled.conn.recv_response()?))
        });
        match replies {
            // Both ran; a lost script cache (`NOSCRIPT`) costs the acquire another try.
            Ok((released, acquired)) if !matches!(released, Value::ServerError(_)) => {
                self.run_on(pooled, |conn| match acquired.extract_error() {
                    Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                        call(conn, &ACQUIRE, packed)
                    }
                    reply => Ok(redis::from_redis_value(reply?)?),
                })
            }
            // The release did not run (the server lost our script): the acquire may have
            // found our old lease in its way. Release it now, then, unless the acquire
            // won all the same (the old lease had expired), try again, in order.
            Ok((_, acquired)) => self.run_on(pooled, |conn| {
                let released = self.release_command(&old_keys, &old_token);
                call::<i64>(conn, &RELEASE, &released)?;
                let won = acquired
                    .extract_error()
                    .ok()
                    .and_then(|v| redis::from_redis_value::<(i64, i64)>(v).ok());
                match won {
                    Some((1, fence)) => Ok((1, fence)),
                    _ => call(conn, &ACQUIRE, packed),
                }
            }),
            // A connection that broke while pooled (a restarted server), or a reply that
            // did not come: either command may have run. Release both leases (the new
            // one may be ours already), then try once more on another connection, as
            // `settle` lets `checkout` do for a connection whose reply was lost.
            Err(_) => {
                drop(pooled);
                self.remember_orphan(&old_keys, &old_token);
                self.remember_orphan(keys, token);
                self.release_orphans(limit)?;
                self.with_conn(limit, |conn| call(conn, &ACQUIRE, packed))
            }
        }
    }

    /// Runs `f` on `pooled`, returning it to the pool unless `f` failed (see
    /// [`with_conn`](Self::with_conn)).
    fn run_on<T>(
        &self,
        mut pooled: Pooled,
        f: impl FnOnce(&mut Connection) -> redis::RedisResult<T>,
    ) -> Result<T, StrategyError> {
        match f(&mut pooled.conn) {
            Ok(value) => {
                self.idle().push(pooled);
                Ok(value)
            }
            Err(e) => Err(self.error(e, Stage::Reply(pooled.timeout))),
        }
    }

    /// Remembers a lease an unanswered command may have set, to release it before the
    /// next attempt.
    fn remember_orphan(&self, keys: &Keys, token: &str) {
        let mut orphans = self.orphans.lock().unwrap_or_else(|p| p.into_inner());
        if orphans.len() >= MAX_ORPHANS {
            // Long unreachable: the oldest have expired by their TTL anyway.
            orphans.remove(0);
        }
        orphans.push((keys.clone(), token.to_owned()));
    }

    /// Hands our lease (`token`) on to `successor` for `ttl`, unless another process than
    /// `tag` waits for it (then it is released). On an error either token may hold the
    /// key; both are released before the next attempt.
    pub(super) fn hand_off(
        &self,
        keys: &Keys,
        token: &str,
        successor: &str,
        ttl: Duration,
        fence: bool,
        tag: &str,
    ) -> Result<Handoff, StrategyError> {
        let packed = evalsha(
            &HANDOFF,
            &[&keys.lock, &keys.fence, &keys.waiting],
            &[
                token.as_bytes(),
                successor.as_bytes(),
                millis(ttl).to_string().as_bytes(),
                flag(fence),
                tag.as_bytes(),
                &self.channel,
            ],
        );
        let result: Result<(i64, i64), _> =
            self.with_conn(None, |conn| call(conn, &HANDOFF, &packed));
        match result {
            Ok((1, n)) => Ok(Handoff::Granted(u64::try_from(n).unwrap_or(0))),
            Ok((2, _)) => Ok(Handoff::Released),
            Ok(_) => Ok(Handoff::NotOurs),
            Err(e) => {
                self.remember_orphan(keys, token);
                self.remember_orphan(keys, successor);
                Err(e)
            }
        }
    }

    fn release_orphans(&self, limit: Option<Instant>) -> Result<(), StrategyError> {
        let orphans = std::mem::take(&mut *self.orphans.lock().unwrap_or_else(|p| p.into_inner()));
        let mut left = orphans.into_iter();
        while let Some((keys, token)) = left.next() {
            if let Err(e) = self.release(&keys, &token, limit) {
                let mut orphans = self.orphans.lock().unwrap_or_else(|p| p.into_inner());
                orphans.push((keys, token));
                orphans.extend(left);
                return Err(e);
            }
        }
        Ok(())
    }

    /// Extends our lease to `ttl` from now. `Ok(false)`: it is no longer ours.
    pub(super) fn extend(
        &self,
        keys: &Keys,
        token: &str,
        ttl: Duration,
        limit: Option<Instant>,
    ) -> Result<bool, StrategyError> {
        let packed = evalsha(
            &EXTEND,
            &[&keys.lock],
            &[token.as_bytes(), millis(ttl).to_string().as_bytes()],
        );
        let n: i64 = self.with_conn(limit, |conn| call(conn, &EXTEND, &packed))?;
        Ok(n == 1)
    }

    /// Deletes our lease and publishes its key on the node's channel (if any).
    /// `Ok(false)`: it was no longer ours.
    pub(super) fn release(
        &self,
        keys: &Keys,
        token: &str,
        limit: Option<Instant>,
    ) -> Result<bool, StrategyError> {
        let packed = self.release_command(keys, token);
        let n: i64 = self.with_conn(limit, |conn| call(conn, &RELEASE, &packed))?;
        Ok(n == 1)
    }

    fn release_command(&self, keys: &Keys, token: &str) -> Vec<u8> {
        evalsha(&RELEASE, &[&keys.lock], &[token.as_bytes(), &self.channel])
    }

    /// Sends the release of our lease and returns without its reply, which the next
    /// command on that connection reads first (see `settle`): for a lease dropped
    /// without anyone to report to. The server runs it as soon as it reads it, exactly
    /// as a release waited for. A release that turns out not to have run is redone
    /// before the next attempt.
    ///
    /// # Errors
    /// [`Error::Unavailable`] when it could not be sent (it is remembered then too).
    pub(super) fn release_later(&self, keys: &Keys, token: &str) -> Result<(), StrategyError> {
        let packed = self.release_command(keys, token);
        let sent = self.checkout(None).and_then(|mut pooled| {
            match pooled.conn.send_packed_command(&packed) {
                Ok(()) => {
                    pooled.pending = Some((keys.clone(), token.to_owned()));
                    self.idle().push(pooled);
                    Ok(())
                }
                Err(e) => Err(self.error(e, Stage::Reply(pooled.timeout))),
            }
        });
        if sent.is_err() {
            self.remember_orphan(keys, token);
        }
        sent
    }

    /// `PING`, answering the round-trip time.
    pub(super) fn ping(&self) -> Result<Duration, StrategyError> {
        let start = Instant::now();
        let _: String = self.with_conn(None, |conn| redis::cmd("PING").query(conn))?;
        Ok(start.elapsed())
    }
}

/// The Redis keys of one lock name: `PREFIX:lock:{HEX}` and `PREFIX:fence:{HEX}`, where
/// `HEX` is the lowercase hex of the whole [`LockName::bytes`](turnstile_core::LockName::bytes)
/// (exact, so two names never share a lock; the braces make it the Cluster hash tag, so
/// both keys live in one slot).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Keys {
    pub(super) lock: Box<[u8]>,
    pub(super) fence: Box<[u8]>,
    /// `PREFIX:waiting:{HEX}`: which process last found the name held (it expires).
    pub(super) waiting: Box<[u8]>,
}

impl Keys {
    pub(super) fn new(prefix: &str, name: &[u8]) -> Self {
        let key = |kind: &[u8]| {
            let mut key = Vec::with_capacity(prefix.len() + kind.len() + 2 * name.len() + 2);
            key.extend_from_slice(prefix.as_bytes());
            key.extend_from_slice(kind);
            key.push(b'{');
            key.extend(
                name.iter()
                    .flat_map(|b| [hex_digit(b >> 4), hex_digit(b & 0xf)]),
            );
            key.push(b'}');
            key.into_boxed_slice()
        };
        Keys {
            lock: key(b":lock:"),
            fence: key(b":fence:"),
            waiting: key(b":waiting:"),
        }
    }
}

/// The lowercase hex digit of a nibble.
pub(super) fn hex_digit(nibble: u8) -> u8 {
    b"0123456789abcdef"[usize::from(nibble & 0xf)]
}

/// `EVALSHA` of `script` with `keys` and `args`, packed in RESP once (rather than through
/// an invocation object that copies every argument twice).
fn evalsha(script: &Script, keys: &[&[u8]], args: &[&[u8]]) -> Vec<u8> {
    fn bulk(out: &mut Vec<u8>, item: &[u8]) {
        out.push(b'$');
        out.extend_from_slice(item.len().to_string().as_bytes());
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(item);
        out.extend_from_slice(b"\r\n");
    }
    let items = keys.iter().chain(args).map(|i| i.len() + 16).sum::<usize>();
    let mut out = Vec::with_capacity(96 + items);
    out.push(b'*');
    out.extend_from_slice((3 + keys.len() + args.len()).to_string().as_bytes());
    out.extend_from_slice(b"\r\n");
    bulk(&mut out, b"EVALSHA");
    bulk(&mut out, script.get_hash().as_bytes());
    bulk(&mut out, keys.len().to_string().as_bytes());
    for item in keys.iter().chain(args) {
        bulk(&mut out, item);
    }
    out
}

/// Runs a packed `EVALSHA` of `script`, loading the script first if the server does not
/// have it (a new server, or one whose script cache was flushed).
fn call<T: FromRedisValue>(
    conn: &mut Connection,
    script: &Script,
    packed: &[u8],
) -> redis::RedisResult<T> {
    let reply = match conn.req_packed_command(packed)?.extract_error() {
        Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
            script.load(conn)?;
            conn.req_packed_command(packed)?.extract_error()?
        }
        reply => reply?,
    };
    Ok(redis::from_redis_value(reply)?)
}

fn flag(on: bool) -> &'static [u8] {
    if on { b"1" } else { b"0" }
}

/// Whole milliseconds, rounding up so a tiny TTL never becomes `PX 0` (which Redis
/// refuses).
pub(super) fn millis(d: Duration) -> u64 {
    let ms = d.as_millis() + u128::from(!d.subsec_nanos().is_multiple_of(1_000_000));
    u64::try_from(ms).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_share_a_hash_tag_and_hide_the_name() {
        let k = Keys::new("t", b"db\0a}b{");
        assert_eq!(&*k.lock, b"t:lock:{646200617d627b}");
        assert_eq!(&*k.fence, b"t:fence:{646200617d627b}");
        assert_eq!(&*k.waiting, b"t:waiting:{646200617d627b}");
    }

    #[test]
    fn urls_are_checked_and_never_shown_with_a_password() {
        let (_, shown) = parse_url("redis://u:secret@127.0.0.1:7/3").unwrap();
        assert_eq!(shown, "redis://u@127.0.0.1:7/3");
        let (_, shown) = parse_url("redis+unix:///tmp/r.sock?db=2&pass=secret").unwrap();
        assert!(!shown.contains("secret"), "{shown}");
        // A raw `@` in the password, then a `#`, `/` or `?`: the driver would read a
        // piece of the password as the host, which every error about the server shows.
        for (url, piece) in [
            ("redis://:P@ssw0rd#1@cache:6379/0", "ssw0rd"),
            ("rediss://u:P@ss/w0rd@cache:6380/0", "w0rd"),
            ("redis://:P@ss?w0rd@cache:6379/0", "w0rd"),
            // A password of digits, a `?` and a `name=value`: the driver would read the
            // host `u` and the port 12.
            ("redis://u:12?x=1@h/0", "12"),
            // An `@` in the value of a parameter that only other drivers know: the
            // driver's host would be `ss`.
            ("redis://:P@ss?db=1@cache", "ss?db"),
            ("redis://h:6379/0?user=a:b@c", "user=a"),
            // A password that starts with `//`: the driver's host would be `app`.
            ("redis://app://Xy:7k9@cache:6379/0", "Xy"),
            // A user with a raw `/`: the driver's host would be `us`.
            ("redis://us/er:Xy7@cache:6379/0", "Xy7"),
            // A password of digits and then a `#`: the driver's port 12.
            ("redis://u:12#x@h", "12"),
        ] {
            let error = parse_url(url).unwrap_err();
            let shown = error.to_string();
            assert!(matches!(error, Error::Config(_)), "{shown}");
            assert!(shown.contains("%40"), "{shown}");
            assert!(!shown.contains(piece), "{shown}");
        }
        // A database below 0, which the driver takes and only the server refuses.
        for url in ["redis://:Xy7@h:6379/-1", "redis+unix:///tmp/r.sock?db=-2"] {
            let error = parse_url(url).unwrap_err();
            let shown = error.to_string();
            assert!(matches!(error, Error::Config(_)), "{shown}");
            assert!(
                shown.contains("is below 0") && !shown.contains("Xy7"),
                "{shown}"
            );
        }
        let (_, shown) = parse_url("redis://:P%40ssw0rd%231@cache:6379/0").unwrap();
        assert_eq!(shown, "redis://cache:6379/0");
        // A raw `@` with no `#`, `/` or `?` after it in the password: the driver's user
        // info ends at the last `@` before the host, as written.
        let (_, shown) = parse_url("redis://u:P@ssw0rd@cache:6379/0").unwrap();
        assert_eq!(shown, "redis://u@cache:6379/0");
        let (_, shown) = parse_url("redis://:P@ss@w0rd@cache:6379/0").unwrap();
        assert_eq!(shown, "redis://cache:6379/0");
        // A `[` in the user: the password starts at the first `:` all the same.
        let (_, shown) = parse_url("redis://u[:p]@h").unwrap();
        assert_eq!(shown, "redis://u[@h:6379/0");
        let (_, shown) = parse_url("redis://u:12%3Fx=1@h/0").unwrap();
        assert_eq!(shown, "redis://u@h:6379/0");
        for fine in [
            "redis://h:6379",
            "redis://[::1]:6379/0",
            "redis+unix:///run/redis.sock?db=1&pass=a:b@c",
        ] {
            assert!(parse_url(fine).is_ok(), "{fine}");
        }
        // A mistyped URL (`:/`) with a `://` later on: its raw scheme text is not
        // quoted, and the redacted URL hides the password.
        let shown = parse_url("redis:/u:s3cret@h/0?x=a://b")
            .unwrap_err()
            .to_string();
        assert!(shown.contains("\"redis:***@h/0?x=a://b\""), "{shown}");
        assert!(!shown.contains("s3cret"), "{shown}");
        // The driver's message about a parameter that may be a piece of the password
        // (the user's, if the `@` in the TLS file's path ends the user info).
        let shown = parse_url("redis://u:pw@h/0?protocol=Xy&tls_ca=/a@b/c")
            .unwrap_err()
            .to_string();
        assert!(!shown.contains("Xy"), "{shown}");
        for bad in ["http://h:1", "h:1", "redis://h:notaport", "redis://"] {
            assert!(
                matches!(parse_url(bad), Err(Error::Config(_))),
                "{bad} accepted"
            );
        }
    }

    /// Every URL built from what a user means that the check accepts, the driver reads
    /// as meant (or refuses), every one the docs promise it accepts and reads as meant,
    /// and no redacted URL, server name or message shows a piece of its password. With
    /// the feature `redis-tls`, a URL with a TLS file parameter is a `rediss://` one
    /// naming a real CA file (whose path holds an `@`), so that the driver reads it.
    #[test]
    fn the_driver_reads_every_accepted_url_as_meant() {
        use crate::spec::Meant;
        #[cfg(feature = "redis-tls")]
        let (dir, values) = {
            let dir = tempfile::tempdir().unwrap();
            write_ca(&dir.path().join("a@b"));
            std::fs::create_dir(dir.path().join("c@d")).unwrap();
            write_ca(&dir.path().join("c@d").join("ca.pem"));
            let at = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
            let values = [at("a@b"), at("c@d/ca.pem")];
            (dir, values)
        };
        #[cfg(not(feature = "redis-tls"))]
        let values = ["a@b".to_owned()];
        let values: Vec<&str> = values.iter().map(String::as_str).collect();
        // What is shown, without the temporary directory's name (which may hold an `X`).
        #[cfg(feature = "redis-tls")]
        let shown = |text: &str| text.replace(dir.path().to_str().unwrap(), "");
        #[cfg(not(feature = "redis-tls"))]
        let shown = |text: &str| text.to_owned();
        let tls = cfg!(feature = "redis-tls");
        for m in crate::spec::meant_urls("redis", 6379, &["?db=", "&user="], "tls_ca", &values) {
            let url = if m.param && tls {
                m.url.replacen("redis://", "rediss://", 1)
            } else {
                m.url.clone()
            };
            assert!(
                !Meant::leaks_into(&shown(&crate::spec::redact_url(&url))),
                "{url}"
            );
            let mistyped = m.mistyped();
            assert!(
                !Meant::leaks_into(&shown(&crate::spec::redact_url(&mistyped))),
                "{mistyped}"
            );
            match parse_url(&mistyped) {
                Err(e) => assert!(
                    !Meant::leaks_into(&shown(&e.to_string())),
                    "{mistyped}: {e}"
                ),
                Ok((_, display)) => assert!(!Meant::leaks_into(&display), "{mistyped}"),
            }
            match parse_url(&url) {
                Err(e) => {
                    assert!(!(m.promised(false) && (tls || !m.param)), "{url}: {e}");
                    assert!(!Meant::leaks_into(&shown(&e.to_string())), "{url}: {e}");
                }
                Ok((connector, display)) => {
                    let info = connector.info();
                    let (host, port) = match info.addr() {
                        ConnectionAddr::Tcp(host, port)
                        | ConnectionAddr::TcpTls { host, port, .. } => (host.clone(), *port),
                        other => (format!("{other:?}"), 0),
                    };
                    let settings = info.redis_settings();
                    let read = (
                        settings.username().unwrap_or(""),
                        settings.password().unwrap_or(""),
                        host,
                        port,
                    );
                    let meant = (&*m.user, &*m.password, m.host.clone(), m.port);
                    assert_eq!(read, meant, "{url}");
                    assert!(!Meant::leaks_into(&display), "{url}");
                }
            }
        }
    }

    /// Writes a self-signed CA certificate, PEM, to `path`.
    #[cfg(feature = "redis-tls")]
    fn write_ca(path: &std::path::Path) {
        let mut params = rcgen::CertificateParams::new(Vec::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let key = rcgen::KeyPair::generate().unwrap();
        std::fs::write(path, params.self_signed(&key).unwrap().pem()).unwrap();
    }

    /// An `@` in the path of a TLS file, with a `/` after it, is the query's: the user
    /// info ends at the `@` before the host.
    #[cfg(feature = "redis-tls")]
    #[test]
    fn an_at_in_a_tls_file_path_ends_no_user_info() {
        let dir = tempfile::tempdir().unwrap();
        let ca_dir = dir.path().join("u@h");
        std::fs::create_dir(&ca_dir).unwrap();
        let ca = ca_dir.join("ca.pem");
        write_ca(&ca);
        let url = format!("rediss://:pw@127.0.0.1:6380/0?tls_ca={}", ca.display());
        let (_, shown) = parse_url(&url).unwrap();
        assert_eq!(shown, "rediss://127.0.0.1:6380/0");
    }

    /// A new connection's setup has one deadline: its first step (the TCP connect) gets
    /// the whole budget, each later one what is left; none gets less than
    /// `MIN_IO_TIMEOUT`, and what the setup was really allowed says so.
    #[test]
    fn each_setup_step_gets_what_is_left_of_one_deadline() {
        let start = Instant::now();
        let budget = Duration::from_secs(2);
        let mut clock = SetupClock::new(start, budget);
        assert_eq!(clock.step(start), budget);
        assert_eq!(
            clock.step(start + Duration::from_millis(600)),
            Duration::from_millis(1400)
        );
        assert_eq!(
            clock.step(start + Duration::from_millis(1990)),
            MIN_IO_TIMEOUT
        );
        let failed = clock.failed(RedisError::from((ErrorKind::Io, "test")));
        assert_eq!(failed.allowed, Duration::from_millis(1990) + MIN_IO_TIMEOUT);
        // Within the budget, the budget is what applied.
        let mut clock = SetupClock::new(start, budget);
        clock.step(start + Duration::from_millis(5));
        clock.step(start + Duration::from_millis(1500));
        assert_eq!(clock.allowed, budget);
        // A budget below the floor: the floor is what applied.
        let mut clock = SetupClock::new(start, Duration::from_millis(1));
        assert_eq!(clock.step(start), MIN_IO_TIMEOUT);
        assert_eq!(clock.allowed, MIN_IO_TIMEOUT);
        // RESP3: the TCP connect and the redis crate's `HELLO` share one timeout, which
        // holds the floor for the second too.
        let mut clock = SetupClock::new(start, Duration::from_millis(10));
        assert_eq!(
            clock.step_and_floor(start + Duration::from_millis(20)),
            MIN_IO_TIMEOUT * 2
        );
        assert_eq!(
            clock.allowed,
            Duration::from_millis(20) + MIN_IO_TIMEOUT * 2
        );
        let mut clock = SetupClock::new(start, budget);
        assert_eq!(clock.step_and_floor(start), budget + MIN_IO_TIMEOUT);
    }

    #[test]
    fn timeouts_are_shown_in_whole_milliseconds() {
        assert_eq!(
            whole_millis(Duration::from_micros(50_400)),
            Duration::from_millis(50)
        );
        assert_eq!(
            whole_millis(Duration::from_micros(1_999_600)),
            Duration::from_secs(2)
        );
    }

    #[test]
    fn millis_round_up() {
        assert_eq!(millis(Duration::from_micros(1)), 1);
        assert_eq!(millis(Duration::from_millis(7)), 7);
    }
}
