//! One Redis server: a small pool of blocking connections with connect and response
//! timeouts, and the three Lua scripts every lease needs (acquire, extend, release).
//!
//! Keys and tokens always travel in `KEYS`/`ARGV`; no script text is ever built from data.

use std::fmt;
use std::sync::{LazyLock, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use redis::{Client, Connection, ConnectionAddr, IntoConnectionInfo, RedisError, Script};
use turnstile_core::{BoxError, Error, StrategyError};

/// The shortest timeout a network call gets, even when the caller's deadline is closer:
/// a tighter one would report a healthy server as unavailable.
pub(super) const MIN_IO_TIMEOUT: Duration = Duration::from_millis(50);

/// The most unanswered acquires remembered for release (see `Node::orphans`).
const MAX_ORPHANS: usize = 256;

/// `SET key token NX PX ttl`; on success, optionally `INCR` the fence counter, seeding a
/// missing counter from the server's `TIME` in microseconds (so a restarted server without
/// persistence still hands out higher fences than before). Returns `{1, fence}` on
/// success, `{0, pttl}` when someone else holds the key.
///
/// The seed is built by string concatenation, not arithmetic: Lua numbers are doubles
/// and `tostring` would print 1.7e15 in exponent form.
static ACQUIRE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  if ARGV[3] == '1' then
    if redis.call('EXISTS', KEYS[2]) == 0 then
      local now = redis.call('TIME')
      redis.call('SET', KEYS[2], now[1] .. string.format('%06d', tonumber(now[2])))
    end
    return {1, redis.call('INCR', KEYS[2])}
  end
  return {1, 0}
end
return {0, redis.call('PTTL', KEYS[1])}
",
    )
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

/// What one acquire attempt on one server found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Attempt {
    /// We hold it now; the fence (0 when fencing is off).
    Acquired(u64),
    /// Someone else holds it for this much longer (as far as the server knows).
    Held(Option<Duration>),
}

/// A Redis failure on a named server (the name never carries a password).
#[derive(Debug)]
pub(super) struct ServerError {
    server: String,
    source: RedisError,
}

impl fmt::Display for ServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "redis at {}: {}", self.server, self.source)
    }
}

impl std::error::Error for ServerError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

/// One server and its idle connections.
pub(super) struct Node {
    client: Client,
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
}

struct Pooled {
    conn: Connection,
    /// The read/write timeout currently set on the socket, to skip redundant syscalls.
    timeout: Duration,
}

impl fmt::Debug for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Node")
            .field("server", &self.display)
            .finish_non_exhaustive()
    }
}

/// Parses a server URL into a client, refusing what we cannot serve with a typed error.
///
/// # Errors
/// [`Error::Config`] for an unparseable URL, an unknown scheme, `rediss://` without TLS
/// support compiled in, or bad TLS parameters (see [`super::tls`]).
pub(super) fn parse_url(url: &str) -> Result<(Client, String), StrategyError> {
    let shown = crate::spec::redact_url(url);
    let scheme = url.split_once("://").map(|(s, _)| s.to_ascii_lowercase());
    if cfg!(not(feature = "redis-tls")) && scheme.as_deref() == Some("rediss") {
        return Err(Error::Config(format!(
            "{shown:?} needs TLS, which this build of turnstile does not include (its feature redis-tls)"
        )));
    }
    match scheme.as_deref() {
        Some("redis" | "rediss" | "redis+unix" | "unix") => {}
        Some(other) => {
            return Err(Error::Config(format!(
                "unknown Redis URL scheme {other:?} in {shown:?}; expected redis://, rediss:// or redis+unix://"
            )));
        }
        None => {
            return Err(Error::Config(format!(
                "{shown:?} is not a Redis URL (redis://[user:password@]host[:port][/db])"
            )));
        }
    }
    let (url, tls) = super::tls::TlsFiles::take(url)?;
    let info = url
        .as_str()
        .into_connection_info()
        .map_err(|e| Error::Config(format!("cannot parse Redis URL {shown:?}: {e}")))?;
    let display = display_of(&info);
    let client = match info.addr() {
        ConnectionAddr::TcpTls { insecure: true, .. } => {
            return Err(Error::Config(format!(
                "{shown:?} asks for TLS without verifying the server (#insecure), which turnstile does not do; name the server's CA with ?{}=FILE",
                super::TLS_CA_PARAM
            )));
        }
        #[cfg(feature = "redis-tls")]
        ConnectionAddr::TcpTls { .. } => tls.client(info, &shown)?,
        _ if !tls.is_empty() => {
            return Err(Error::Config(format!(
                "{shown:?}: TLS parameters need a rediss:// URL"
            )));
        }
        _ => Client::open(info)
            .map_err(|e| Error::Config(format!("cannot use Redis URL {shown:?}: {e}")))?,
    };
    Ok((client, display))
}

/// The server as `scheme://[user@]address/db`, never with a password (a `redis+unix` URL
/// carries it in the query, which `redact_url` would miss).
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
        client: Client,
        display: String,
        channel: Vec<u8>,
        connect_timeout: Duration,
        response_timeout: Duration,
    ) -> Self {
        Node {
            client,
            display,
            idle: Mutex::new(Vec::new()),
            channel,
            orphans: Mutex::new(Vec::new()),
            connect_timeout,
            response_timeout,
        }
    }

    /// The server as shown in errors and `Debug` (no password).
    pub(super) fn display(&self) -> &str {
        &self.display
    }

    /// The database number the URL selected.
    pub(super) fn db(&self) -> i64 {
        self.client.get_connection_info().redis_settings().db()
    }

    /// A client for a dedicated connection (the subscriber).
    pub(super) fn client(&self) -> &Client {
        &self.client
    }

    pub(super) fn connect_timeout(&self) -> Duration {
        self.connect_timeout
    }

    fn idle(&self) -> MutexGuard<'_, Vec<Pooled>> {
        // Only pushes and pops happen under this mutex.
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn error(&self, source: RedisError) -> StrategyError {
        let boxed: BoxError = Box::new(ServerError {
            server: self.display.clone(),
            source,
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
        let clamp = |configured: Duration| match limit {
            Some(at) => configured.min(
                at.saturating_duration_since(Instant::now())
                    .max(MIN_IO_TIMEOUT),
            ),
            None => configured,
        };
        let pooled = self.idle().pop();
        let mut pooled = match pooled {
            Some(p) => p,
            None => {
                let conn = self
                    .client
                    .get_connection_with_timeout(clamp(self.connect_timeout))
                    .map_err(|e| self.error(e))?;
                Pooled {
                    conn,
                    timeout: Duration::ZERO,
                }
            }
        };
        let timeout = clamp(self.response_timeout);
        if pooled.timeout != timeout {
            let set = pooled
                .conn
                .set_read_timeout(Some(timeout))
                .and_then(|()| pooled.conn.set_write_timeout(Some(timeout)));
            set.map_err(|e| self.error(e))?;
            pooled.timeout = timeout;
        }
        match f(&mut pooled.conn) {
            Ok(value) => {
                self.idle().push(pooled);
                Ok(value)
            }
            Err(e) => Err(self.error(e)),
        }
    }

    /// One acquire attempt.
    pub(super) fn try_acquire(
        &self,
        keys: &Keys,
        token: &str,
        ttl: Duration,
        fence: bool,
        limit: Option<Instant>,
    ) -> Result<Attempt, StrategyError> {
        self.release_orphans(limit)?;
        let result: Result<(i64, i64), _> = self.with_conn(limit, |conn| {
            ACQUIRE
                .key(&keys.lock[..])
                .key(&keys.fence[..])
                .arg(token)
                .arg(millis(ttl))
                .arg(if fence { "1" } else { "0" })
                .invoke(conn)
        });
        let (won, n) = match result {
            Ok(reply) => reply,
            Err(e) => {
                let mut orphans = self.orphans.lock().unwrap_or_else(|p| p.into_inner());
                if orphans.len() >= MAX_ORPHANS {
                    // Long unreachable: the oldest have expired by their TTL anyway.
                    orphans.remove(0);
                }
                orphans.push((keys.clone(), token.to_owned()));
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
        let n: i64 = self.with_conn(limit, |conn| {
            EXTEND
                .key(&keys.lock[..])
                .arg(token)
                .arg(millis(ttl))
                .invoke(conn)
        })?;
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
        let channel = &self.channel[..];
        let n: i64 = self.with_conn(limit, |conn| {
            RELEASE
                .key(&keys.lock[..])
                .arg(token)
                .arg(channel)
                .invoke(conn)
        })?;
        Ok(n == 1)
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
}

impl Keys {
    pub(super) fn new(prefix: &str, name: &[u8]) -> Self {
        let mut hex = String::with_capacity(name.len() * 2);
        for b in name {
            hex.push(char::from_digit(u32::from(b >> 4), 16).unwrap_or('0'));
            hex.push(char::from_digit(u32::from(b & 0xf), 16).unwrap_or('0'));
        }
        Keys {
            lock: format!("{prefix}:lock:{{{hex}}}").into_bytes().into(),
            fence: format!("{prefix}:fence:{{{hex}}}").into_bytes().into(),
        }
    }
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
    }

    #[test]
    fn urls_are_checked_and_never_shown_with_a_password() {
        let (_, shown) = parse_url("redis://u:secret@127.0.0.1:7/3").unwrap();
        assert_eq!(shown, "redis://u@127.0.0.1:7/3");
        let (_, shown) = parse_url("redis+unix:///tmp/r.sock?db=2&pass=secret").unwrap();
        assert!(!shown.contains("secret"), "{shown}");
        for bad in ["http://h:1", "h:1", "redis://h:notaport", "redis://"] {
            assert!(
                matches!(parse_url(bad), Err(Error::Config(_))),
                "{bad} accepted"
            );
        }
    }

    #[test]
    fn millis_round_up() {
        assert_eq!(millis(Duration::from_micros(1)), 1);
        assert_eq!(millis(Duration::from_millis(7)), 7);
    }
}
