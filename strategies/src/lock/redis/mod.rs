//! Redis lease locks: [`RedisLock`] on one server, with fencing tokens, and
//! [`RedlockLock`] over several independent servers (no fencing).
//!
//! A lease is a key set with `SET key token NX PX ttl`, where `token` is random per lease;
//! it is released by a Lua compare-and-delete and extended by a Lua compare-and-pexpire, so
//! nobody ever deletes or extends a lease that expired and went to someone else. Keys and
//! tokens always travel as `KEYS`/`ARGV`, never inside the script text.
//!
//! **Leases expire.** A holder that pauses (GC, swap, `SIGSTOP`, a slow disk) past its TTL
//! loses the lock without knowing, and its successor may start. Two defences, both on by
//! default:
//! - a *watchdog* renews each lease every renewal period (TTL/3 by default) while the op
//!   runs; if a renewal is refused or the lease's validity runs out, [`Lease::check`]
//!   fails with [`Error::LeaseLost`] and [`Locked`](crate::Locked) rolls back instead of
//!   committing;
//! - a *fencing token*: the acquire script also `INCR`s a per-name counter and returns it;
//!   [`Locked`](crate::Locked) in [`TxMode::Transaction`](crate::TxMode::Transaction)
//!   hands it to the resource, which refuses a token lower than one it has seen. A missing
//!   counter (first use, or a restarted server without persistence) is seeded from the
//!   server's `TIME` in microseconds, so fences keep rising across restarts as long as the
//!   server's clock does not go back and fewer than a million leases per second are
//!   granted. Fence counters never expire: one small key per lock name.
//!
//! The lock is as safe as one Redis server: a failover to an asynchronously replicated
//! replica can lose the latest grant (lease and fence alike). Needs Redis 5 or later
//! (scripts that call `TIME` before writing).
//!
//! ## Keys
//! A [`LockName`] maps to `PREFIX:lock:{HEX}` (the lease) and `PREFIX:fence:{HEX}` (the
//! fence counter), where `HEX` is the lowercase hex of [`LockName::bytes`] — exact, so
//! two names never share a lock, and free of braces, so `{HEX}` is the Redis Cluster hash
//! tag and both keys live in one slot. `PREFIX` is `turnstile` unless configured.
//! Releases are published on the channel `PREFIX:released` with the lock key as payload.
//! A refused attempt also sets `PREFIX:waiting:{HEX}` to its process's tag for two poll
//! intervals (see *Waiting*); it expires by itself.
//!
//! The [backend id](Lock::backend_id), under which the resource records fences, is
//! `redis:PREFIX/dbN`: it names the fence counters, not the address, so clients that
//! reach one server by different names (a DNS name here, an IP there) still compare
//! their fences. Two different servers must therefore not guard one resource under the
//! same prefix and database.
//!
//! ## Specs
//! In a strategy spec (`turnstile check --strategy …`, [`Registry`](crate::spec::Registry)),
//! `redis://host:port/db?ttl_ms=1000` and `redlock://h1:p1,h2:p2,h3:p3?ttl_ms=1000` set
//! the lease TTL ([`TTL_QUERY_PARAM`]); a short TTL makes a dead holder's lease expire
//! sooner, at the price of more renewals.
//!
//! A URL's query holds only what something reads, each parameter once: `protocol` (the
//! redis crate's `2`/`resp2` or `3`/`resp3`); over a Unix socket (`redis+unix://`) also
//! `db`, `user` and `pass`, which a TCP URL carries as `redis://user:password@host/db`
//! instead; the TLS files of `rediss://` and `redlocks://` (see [TLS](self#tls)); and, in
//! a spec, `ttl_ms`. Names are read as the redis crate reads them, percent-decoded
//! (`?%70rotocol=3` is `protocol`). Anything else (`?ttl=2000`, `?tll_ms=100`), or one of
//! these given twice, is an [`Error::Config`] that names the parameter where the redacted
//! URL ([`redact_url`](crate::spec::redact_url)) shows its name (after a raw `?` in what
//! may be the password it may be a piece of that, and is not named), but never shows its
//! value, which may be a secret: the redis crate would ignore it (or take the last one)
//! without a word.
//!
//! ## TLS
//! With the feature `redis-tls`, `rediss://host:port/db` reaches the server over TLS
//! (rustls with the *ring* provider: no OpenSSL needed), and
//! `redlocks://h1:p1,h2:p2,h3:p3` reaches every Redlock server so. The server's
//! certificate must be valid for the host in the URL and signed by a CA in the system's
//! trusted roots or, with [`TLS_CA_PARAM`] (`?tls_ca=/etc/redis/ca.pem`), by one in that
//! PEM file instead: a deployment's private CA. [`TLS_CERT_PARAM`] and [`TLS_KEY_PARAM`]
//! (`&tls_cert=client.pem&tls_key=client.key`) present a client certificate, for a
//! server that requires one (mutual TLS). Paths are percent-decoded (`%20` for a space).
//! These parameters apply only to `rediss://` and `redlocks://` URLs; the files are read
//! and checked by `build`, so a missing, unreadable or invalid file, a certificate without
//! its key or a key that does not match it is an [`Error::Config`] at once. A URL asking
//! for no verification (`#insecure`) is refused.
//!
//! What only a connection can tell — a certificate from another CA or for another name, a
//! server that wants a client certificate we lack, a port that does not speak TLS (or a
//! `redis://` client on a TLS port) — gives [`Error::Unavailable`], as a refused
//! connection does, within the caller's deadline; its text says why: rustls's reason
//! (`invalid peer certificate: UnknownIssuer`), or for a port that speaks plain Redis,
//! which never answers a TLS handshake, `no TLS answer within 2s while connecting: if
//! the port speaks plain Redis, use redis://; …`, and for a `redis://` client that a TLS
//! port hangs up on, `the server closed the connection while connecting: if the port
//! speaks TLS, use rediss://`. It is not [`Error::Config`] because the cause may be the
//! server's (a rotated or expired certificate) and because it shows only on connecting.
//!
//! Each new connection costs a TLS handshake, within the connect timeout. Connections are
//! pooled, so that is once per connection, not per op. With `redis-tls` alone, the Redis
//! client also loads the system's trusted roots for every new connection, even with
//! [`TLS_CA_PARAM`] (milliseconds, see the book's Redis chapter). The feature
//! `redis-tls-preload-roots` spares that: `build` reads the system's roots once for the
//! lock (only where no [`TLS_CA_PARAM`] replaces them), as strictly as the client would,
//! and a store that cannot be read, or holds a certificate that is not a usable root, is
//! then an [`Error::Config`] of `build` rather than a failure of every connection. Roots
//! added to or removed from the system afterwards count for locks built after that. It
//! turns on the redis crate's `tls-rustls-webpki-roots`: turnstile never uses those
//! compiled-in roots, but other code in the same program that opens `rediss://`
//! connections with the redis crate, naming no CA, would trust them instead of the
//! system's, so the feature is for programs rather than libraries.
//!
//! If the process has no default rustls crypto provider, the first TLS lock built
//! installs *ring* as that default. Without the feature, `rediss://` and `redlocks://`
//! are an [`Error::Config`] that names it.
//!
//! ## Waiting
//! A caller that finds the name held joins an in-process FIFO queue for it; only the head
//! of the queue talks to Redis. One subscriber connection per process and server (lock
//! objects on the same URL and key prefix share it, and its queues), subscribed before the head's next `SET NX`, wakes the head when the release
//! script publishes; the head also retries when the holder's TTL runs out (it may have
//! died) and at least every poll interval. There are no random sleeps: waiters of one
//! process are served in order. A name still held at the caller's deadline gives
//! [`Error::Timeout`]; a server that refuses the connection, times out or rejects the
//! password gives [`Error::Unavailable`] at once.
//!
//! A holder that releases while a waiter of the same lock object heads the queue hands
//! the lease on instead: one script checks that the key still holds the holder's token,
//! gives it the successor's token with a fresh TTL, and increments the fence, so the
//! waiter gets its lease — with a higher fence, as from any acquire — in one round trip
//! where a release and an acquire took two. Hand-offs must not starve other processes:
//! every refused attempt marks its process as waiting on `PREFIX:waiting:{HEX}`, and while
//! another process's mark stands the script releases (and publishes) rather than hands
//! on, so that process gets its chance as after any release.
//!
//! [`Lease::release`] waits for the server's answer and reports a lease already lost
//! ([`Error::LeaseLost`]) or a failure ([`Error::Unavailable`]). Dropping a lease, whose
//! outcome nobody hears ([`Locked`](crate::Locked) drops its leases after the op is
//! settled), sends the release and returns: the server runs it when it reads it, and the
//! reply is read by the next command on that connection (an acquire is sent before it
//! reads that reply, so both take one round trip); a release that turns out not to have
//! run is redone before the next attempt.
//!
//! ## Timeouts
//! Every network call has a connect timeout (default [`DEFAULT_CONNECT_TIMEOUT`]) and a
//! response timeout (default [`DEFAULT_RESPONSE_TIMEOUT`]), both also cut to the caller's
//! deadline. The connect timeout is one deadline for a new connection, until the server
//! has answered: the TCP connect gets all of it, then the TLS handshake what is left,
//! then each reply of the login (`AUTH`, or with RESP3 `HELLO`) and `SELECT` (or, with
//! neither, a `PING`) what is left then. What it does not bound: resolving the host's
//! name; the redis crate's TCP connect gives each address a name resolves to what was
//! left when it started; and with RESP3 (`?protocol=3`) over TLS the redis crate sends
//! `HELLO` itself and reads the handshake and `HELLO`'s reply under one socket timeout,
//! what was left after the TCP connect, so those two may take up to twice that. A server
//! that does not answer in time gives [`Error::Unavailable`] saying so:
//! `redis at redis://host:6379/0: no answer within 2s while connecting: …`, or `no
//! answer within 1s to a command: …` (the time is how long it was really allowed: the
//! timeout, cut to the caller's deadline, or stretched by the floor below).
//!
//! **No wait gets less than 50 ms of the caller's deadline**, so that a healthy server
//! is not reported unavailable: a deadline closer than that is overrun without a word by
//! up to 50 ms per wait. A command is one wait (a response timeout set below 50 ms is
//! used as set); a new connection's setup up to four (TCP, the TLS handshake, the
//! login, `SELECT`; seven when a server older than Redis 6 has the login sent again
//! without the user), each given at least 50 ms however little is left, even of a connect
//! timeout set below that. A failure's text then quotes the time really allowed, not the
//! timeout set (`connect_timeout(Duration::from_millis(1))`: `no answer within 50ms
//! while connecting`).
//!
//! A connection that saw any error is closed, never reused. An acquire whose reply never
//! came (a paused or overloaded server) may still have set the key when the server
//! resumes; its token is remembered and released before the next attempt on that
//! server, so the ghost lease does not block the name for a whole TTL.
//!
//! ```no_run
//! use std::time::Duration;
//! use turnstile::lock::RedisLock;
//! use turnstile::sqlite::Sqlite;
//! use turnstile::{Key, Locked, Serializer};
//!
//! let lock = RedisLock::builder("redis://127.0.0.1:6379/0")
//!     .ttl(Duration::from_secs(5))
//!     .build()?;
//! let strategy = Locked::new(lock, Sqlite::new("app.db"));
//! strategy.run(&Key::whole(), |db| db.execute("UPDATE t SET n = n + 1", []))?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod node;
mod redlock;
mod tls;
mod waiters;
mod watchdog;

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use turnstile_core::{
    Capabilities, Error, Fence, HolderDeath, Lease, Lock, LockName, MAX_TIMEOUT, Scope,
    StrategyError,
};

use node::{Attempt, Handoff, Keys, Node};
use waiters::{Turn, Waiters, owner_of};
use watchdog::{LeaseState, Renewal, Watchdog};

pub use redlock::{
    REDLOCK_RETRY_MAX, REDLOCK_RETRY_MIN, RedlockBuilder, RedlockLease, RedlockLock,
};
pub use tls::{TLS_CA_PARAM, TLS_CERT_PARAM, TLS_KEY_PARAM};

/// The default lease time to live: 8 s (redsync's default expiry).
pub const DEFAULT_TTL: Duration = Duration::from_secs(8);
/// The default connect timeout: 2 s.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// The default response timeout of one command: 1 s.
pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(1);
/// The default longest sleep of a waiter between two attempts when no release
/// notification arrives: 100 ms.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_millis(100);
/// The default most renewals of one lease: 1000 (at the default TTL, an op may run
/// about 45 minutes before its lease runs out).
pub const DEFAULT_MAX_RENEWALS: u32 = 1000;
/// The default prefix of every Redis key and channel: `turnstile`.
pub const DEFAULT_KEY_PREFIX: &str = "turnstile";
/// The shortest TTL accepted: 10 ms.
pub const MIN_TTL: Duration = Duration::from_millis(10);

/// The query parameter of a `redis://…` or `redlock://…` spec URL that sets the lease
/// TTL in milliseconds (`redis://127.0.0.1:6379/0?ttl_ms=1000`); read by
/// [`RedisLock::builder_from_url`] and [`RedlockLock::builder_from_url`] and removed
/// before the URL reaches the Redis client. [`RedisLock::builder`] refuses it: there the
/// TTL is set with [`ttl`](RedisLockBuilder::ttl).
pub const TTL_QUERY_PARAM: &str = "ttl_ms";

/// A query parameter [`take_params`] took out of a URL.
struct Taken<'a> {
    /// Its name as written.
    name: &'a str,
    /// Its name as the redis crate reads it: percent-decoded (see [`param_name`]).
    key: String,
    value: &'a str,
    /// Where its `name=value` is in the URL.
    at: std::ops::Range<usize>,
}

impl Taken<'_> {
    /// Where its name is in the URL.
    fn name_at(&self) -> std::ops::Range<usize> {
        self.at.start..self.at.start + self.name.len()
    }

    /// ` "name"` for a message, as written, and as read where that differs
    /// (` "%70ass" (read as "pass")`); nothing where [`redact_url`](crate::spec::redact_url)
    /// hides the name of `url`'s parameter (it may be a piece of what may be the
    /// password). Never the value.
    fn quoted(&self, url: &str) -> String {
        if crate::spec::hides(url, self.name_at()) {
            String::new()
        } else if self.key == self.name {
            format!(" {:?}", self.name)
        } else {
            format!(" {:?} (read as {:?})", self.name, self.key)
        }
    }
}

/// A query parameter's name as the redis crate (through the `url` crate's
/// `query_pairs`) reads it: `+` a blank, each `%XX` the byte it stands for, bytes that are
/// not UTF-8 U+FFFD. So `?%70rotocol=3` sets the protocol, and is taken for `protocol`
/// here too.
fn param_name(name: &str) -> String {
    // The `url` crate drops tabs and line breaks wherever they are, before anything else.
    let name: String = name
        .chars()
        .filter(|c| !matches!(c, '\t' | '\n' | '\r'))
        .collect();
    let bytes = name.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |at: usize| {
            bytes
                .get(at)
                .and_then(|&b| char::from(b).to_digit(16))
                .and_then(|d| u8::try_from(d).ok())
        };
        match (bytes[i], hex(i + 1), hex(i + 2)) {
            (b'%', Some(high), Some(low)) => {
                out.push(high * 16 + low);
                i += 3;
            }
            (b'+', _, _) => {
                out.push(b' ');
                i += 1;
            }
            (byte, _, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Removes the query parameters whose names `take` accepts (as read: see [`param_name`])
/// from `url`, answering the URL without them and the parameters taken, in order. Other
/// parameters (`redis+unix://…?db=N&pass=…`) and a `#fragment` stay as they were.
fn take_params(url: &str, take: impl Fn(&str) -> bool) -> (String, Vec<Taken<'_>>) {
    let (head, fragment) = match url.find('#') {
        Some(i) => url.split_at(i),
        None => (url, ""),
    };
    let Some((base, query)) = head.split_once('?') else {
        return (url.to_owned(), Vec::new());
    };
    let mut taken = Vec::new();
    let mut kept = Vec::new();
    let mut start = base.len() + 1;
    for pair in query.split('&') {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let key = param_name(name);
        if take(&key) {
            taken.push(Taken {
                name,
                key,
                value,
                at: start..start + pair.len(),
            });
        } else {
            kept.push(pair);
        }
        start += pair.len() + 1;
    }
    let url = if kept.is_empty() {
        format!("{base}{fragment}")
    } else {
        format!("{base}?{}{fragment}", kept.join("&"))
    };
    (url, taken)
}

/// What a URL of one scheme may carry in its query, as the redis crate (1.x) reads it:
/// over TCP (`redis://`, `rediss://`, and each server of `redlock://` and `redlocks://`)
/// only `protocol`, since the user, password and database are in the URL itself; over a
/// Unix socket (`redis+unix://`, `unix://`) also `db`, `user` and `pass`. turnstile adds
/// the TLS files ([`TLS_CA_PARAM`], [`TLS_CERT_PARAM`], [`TLS_KEY_PARAM`]) on `rediss://`
/// and `redlocks://`, and [`TTL_QUERY_PARAM`] in a spec.
struct Params {
    /// The scheme, as written in messages.
    scheme: &'static str,
    /// What the redis crate reads.
    driver: &'static [&'static str],
    /// Whether the TLS file parameters belong here.
    tls: bool,
    /// Where the user, password and database go instead, for a TCP scheme.
    form: Option<&'static str>,
}

impl Params {
    /// The parameters of `url`'s scheme; `None` for a scheme no Redis lock reads (refused
    /// elsewhere, with its own message).
    fn of(url: &str) -> Option<Params> {
        const TCP: &[&str] = &["protocol"];
        const UNIX: &[&str] = &["db", "user", "pass", "protocol"];
        const SINGLE: &str = "redis://user:password@host:port/db";
        const REDLOCK: &str = "redlock://user:password@h1:p1,h2:p2,h3:p3/db";
        let (scheme, _) = url.split_once("://")?;
        let (scheme, driver, tls, form) = match scheme.to_ascii_lowercase().as_str() {
            "redis" => ("redis://", TCP, false, Some(SINGLE)),
            "rediss" => ("rediss://", TCP, true, Some(SINGLE)),
            "redlock" => ("redlock://", TCP, false, Some(REDLOCK)),
            "redlocks" => ("redlocks://", TCP, true, Some(REDLOCK)),
            "redis+unix" => ("redis+unix://", UNIX, false, None),
            "unix" => ("unix://", UNIX, false, None),
            _ => return None,
        };
        Some(Params {
            scheme,
            driver,
            tls,
            form,
        })
    }

    /// The names this scheme takes, in words (`protocol, tls_ca, … and ttl_ms`).
    fn listed(&self, spec: bool) -> String {
        let mut names: Vec<&str> = self.driver.to_vec();
        if self.tls {
            names.extend([TLS_CA_PARAM, TLS_CERT_PARAM, TLS_KEY_PARAM]);
        }
        if spec {
            names.push(TTL_QUERY_PARAM);
        }
        match names.split_last() {
            Some((last, [])) => (*last).to_owned(),
            Some((last, rest)) => format!("{} and {last}", rest.join(", ")),
            None => String::new(),
        }
    }
}

/// Refuses a query parameter of `url` that nothing reads, or one the redis crate reads
/// given twice (it would take the last silently): a misspelt `?ttl=2000` or `?tll_ms=100`
/// would otherwise leave the default TTL in place without a word, and `?pass=Xy7&k9`
/// (a raw `&` in a password) would log in with the wrong one. `spec`: whether `url` is a
/// spec's, which may also hold [`TTL_QUERY_PARAM`]; the `tls_…` parameters are left to
/// [`tls::TlsFiles::take`], which refuses the unknown ones, and, with the others, on a URL
/// without TLS. A scheme that is not Redis's is left to the caller. Names are compared as
/// the redis crate reads them, percent-decoded: `?%70rotocol=3` is `protocol`.
///
/// The message names the parameter where the redacted URL shows its name (it may
/// otherwise be a piece of what may be the password), and never its value, which may be
/// a secret (`?passwd=…` is no name redaction masks; `?pass=…` is, and its name is shown).
fn refuse_unknown_params(url: &str, spec: bool) -> Result<(), StrategyError> {
    let Some(params) = Params::of(url) else {
        return Ok(());
    };
    let (_, taken) = take_params(url, |_| true);
    let mut seen: Vec<&str> = Vec::new();
    for param in &taken {
        let name = param.key.as_str();
        // `?&protocol=3`, `…&`: nothing there.
        if param.at.is_empty() || name.starts_with("tls_") || (spec && name == TTL_QUERY_PARAM) {
            continue;
        }
        let known = params.driver.contains(&name);
        if known && !seen.contains(&name) {
            seen.push(name);
            continue;
        }
        // The name where the redacted URL shows it: a value it masks (`?pass=…`) hides
        // nothing of the name. Where the name is hidden, nor is anything said that tells
        // which name it is (a hint for `ttl_ms`).
        let quoted = param.quoted(url);
        let shown = !quoted.is_empty();
        let scheme = params.scheme;
        if known {
            return Err(Error::Config(format!(
                "URL parameter{quoted} is given twice in a {scheme} URL (its values are not shown); give it once"
            )));
        }
        let hint = if !shown {
            String::new()
        } else if name == TTL_QUERY_PARAM {
            format!(
                "; {TTL_QUERY_PARAM} is read from a spec's URL (RedisLock::builder_from_url, RedlockLock::builder_from_url), and a builder's TTL set with ttl()"
            )
        } else if let Some(form) = params.form.filter(|_| {
            ["db", "user", "username", "pass", "password", "database"]
                .iter()
                .any(|n| name.eq_ignore_ascii_case(n))
        }) {
            format!("; the user, password and database go in the URL itself: {form}")
        } else {
            String::new()
        };
        return Err(Error::Config(format!(
            "unknown URL parameter{quoted} in a {scheme} URL (its value is not shown): this URL takes {}{hint}",
            params.listed(spec)
        )));
    }
    Ok(())
}

/// Refuses a [`TTL_QUERY_PARAM`] taken from `url` where
/// [`redact_url`](crate::spec::redact_url) hides it: what may be a piece of the password
/// (after a raw `?` in it, `rediss://u:Xy?ttl_ms=5&tls_ca=/a@h/0`) must not become a TTL,
/// which `build`'s messages and `Debug` output show. Redaction errs on the side of
/// masking, and so does this: before an `@` in a TLS file's path with a `/` after it
/// (`?ttl_ms=1000&tls_ca=/etc/u@h/ca.pem`) the `ttl_ms` is refused too; after it, or with
/// that `@` written `%40`, it is read. So is it after a password holding `pass=` or
/// `password=` (which redaction masks to the end, wherever it is) once that `=` is
/// written `%3D`.
fn refuse_hidden_ttl(url: &str, param: &Taken<'_>) -> Result<(), StrategyError> {
    if !crate::spec::hides(url, param.at.clone()) {
        return Ok(());
    }
    Err(Error::Config(format!(
        "{TTL_QUERY_PARAM} in {:?} is in what may be the password, which is not shown: \
         percent-encode a `?`, `&` or `@` in the password as %3F, %26 or %40 (and the `=` \
         of a `pass=` in it as %3D), and an `@` in a later parameter's value as %40 (or give \
         {TTL_QUERY_PARAM} after that parameter)",
        crate::spec::redact_url(url)
    )))
}

/// Removes [`TTL_QUERY_PARAM`] from `url`'s query, answering the URL without it and the
/// TTL it set. A URL whose user info drivers read differently is refused first: its query
/// may hold a piece of the password (`redis://u:Xy?ttl_ms=9k2@h/0`), which a message
/// about the value would show; and so is a `ttl_ms` that the redacted URL does not show
/// (`rediss://u:Xy?ttl_ms=5&tls_ca=/a@h/0`, where the `@` in a TLS file's path ends no
/// user info): `build` would show its TTL.
fn take_ttl_ms(url: &str) -> Result<(String, Option<Duration>), StrategyError> {
    crate::spec::refuse_ambiguous_userinfo("Redis", url)?;
    refuse_unknown_params(url, true)?;
    let (rest, taken) = take_params(url, |name| name == TTL_QUERY_PARAM);
    let mut ttl = None;
    for param in taken {
        refuse_hidden_ttl(url, &param)?;
        let bad = |why: &str| {
            // The value is not quoted: the redacted URL shows it.
            let shown = crate::spec::redact_url(url);
            Err(Error::Config(format!(
                "{TTL_QUERY_PARAM} in {shown:?} {why}"
            )))
        };
        if ttl.is_some() {
            return bad("is given twice");
        }
        match param.value.parse::<u64>() {
            // build() checks the range, against MIN_TTL and MAX_TIMEOUT.
            Ok(ms) => ttl = Some(Duration::from_millis(ms)),
            Err(_) => return bad("is not a whole number of milliseconds"),
        }
    }
    Ok((rest, ttl))
}

/// The clock-drift allowance subtracted from a lease's validity: 1 % of the TTL plus
/// 2 ms (the Redlock algorithm's figures).
pub fn clock_drift(ttl: Duration) -> Duration {
    ttl / 100 + Duration::from_millis(2)
}

/// This process among the clients of a server: its pid and a random number (pids repeat
/// across hosts). Marks the process waiting for a name (see [`RedisLease`]'s hand-off).
fn process_tag() -> &'static str {
    static TAG: LazyLock<String> =
        LazyLock::new(|| format!("{:x}-{:016x}", std::process::id(), fastrand::u64(..)));
    &TAG
}

/// A fresh lease token: unique per process (its tag, a counter) and random across
/// processes.
fn new_token() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    // Written out by hand: `format!` cost more than the rest of an acquire's own work.
    let hex = |out: &mut String, bytes: &[u8]| {
        for b in bytes {
            out.push(char::from(node::hex_digit(b >> 4)));
            out.push(char::from(node::hex_digit(b & 0xf)));
        }
    };
    let mut token = String::with_capacity(process_tag().len() + 2 + 16 + 32);
    token.push_str(process_tag());
    token.push('.');
    hex(&mut token, &n.to_be_bytes());
    token.push('.');
    hex(&mut token, &fastrand::u128(..).to_be_bytes());
    token
}

/// `d` in milliseconds, with as many decimals as it needs: `0 ms`, `10 ms`, `0.5 ms`.
fn in_ms(d: Duration) -> String {
    let nanos = d.as_nanos();
    let (ms, rest) = (nanos / 1_000_000, nanos % 1_000_000);
    if rest == 0 {
        return format!("{ms} ms");
    }
    let decimals = format!("{rest:06}");
    format!("{ms}.{} ms", decimals.trim_end_matches('0'))
}

/// Settings shared by [`RedisLock`] and [`RedlockLock`] builders.
#[derive(Clone, Debug)]
struct Settings {
    ttl: Duration,
    renew_every: Option<Duration>,
    renewal: bool,
    max_renewals: u32,
    connect_timeout: Duration,
    response_timeout: Duration,
    prefix: String,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            ttl: DEFAULT_TTL,
            renew_every: None,
            renewal: true,
            max_renewals: DEFAULT_MAX_RENEWALS,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            response_timeout: DEFAULT_RESPONSE_TIMEOUT,
            prefix: DEFAULT_KEY_PREFIX.to_owned(),
        }
    }
}

impl Settings {
    fn renew_every(&self) -> Duration {
        self.renew_every.unwrap_or(self.ttl / 3)
    }

    fn check(&self) -> Result<(), StrategyError> {
        let config = |m: String| Err(Error::Config(m));
        // In milliseconds, the unit of `ttl_ms` (as `Debug`, a zero one would be `0ns`).
        if self.ttl < MIN_TTL {
            return config(format!(
                "lease TTL {} is below the minimum {}",
                in_ms(self.ttl),
                in_ms(MIN_TTL)
            ));
        }
        if self.ttl > MAX_TIMEOUT {
            return config(format!(
                "lease TTL {} is above the maximum {} (a year)",
                in_ms(self.ttl),
                in_ms(MAX_TIMEOUT)
            ));
        }
        let renew = self.renew_every();
        let validity = self.ttl - clock_drift(self.ttl);
        if renew.is_zero() || renew >= validity {
            return config(format!(
                "renewal period {renew:?} must be above zero and shorter than the TTL {:?} less its drift allowance {:?}",
                self.ttl,
                clock_drift(self.ttl)
            ));
        }
        for (what, d) in [
            ("connect timeout", self.connect_timeout),
            ("response timeout", self.response_timeout),
        ] {
            if d.is_zero() || d > MAX_TIMEOUT {
                return config(format!(
                    "{what} {d:?} must be above zero and at most {MAX_TIMEOUT:?}"
                ));
            }
        }
        if self.prefix.is_empty() || self.prefix.contains(['{', '}']) {
            return config(format!(
                "key prefix {:?} must be non-empty and free of braces (they would change the Cluster hash tag)",
                self.prefix
            ));
        }
        Ok(())
    }

    fn channel(&self) -> Vec<u8> {
        format!("{}:released", self.prefix).into_bytes()
    }
}

macro_rules! settings_setters {
    () => {
        /// Sets the lease time to live. Default: [`DEFAULT_TTL`](crate::lock::redis::DEFAULT_TTL).
        /// [`build`](Self::build) refuses one below
        /// [`MIN_TTL`](crate::lock::redis::MIN_TTL).
        pub fn ttl(mut self, ttl: Duration) -> Self {
            self.settings.ttl = ttl;
            self
        }

        /// Sets how often the watchdog extends a held lease. Default: a third of the TTL.
        /// [`build`](Self::build) refuses one not shorter than the TTL less its drift
        /// allowance.
        pub fn renew_every(mut self, period: Duration) -> Self {
            self.settings.renew_every = Some(period);
            self
        }

        /// Turns the watchdog's renewals on (the default) or off. Without them a lease
        /// lives one TTL, and an op that runs longer fails with
        /// [`Error::LeaseLost`](turnstile_core::Error::LeaseLost) before its commit.
        pub fn renewal(mut self, on: bool) -> Self {
            self.settings.renewal = on;
            self
        }

        /// Sets the most renewals of one lease, a cap on how long an op can keep a lock.
        /// Default: [`DEFAULT_MAX_RENEWALS`](crate::lock::redis::DEFAULT_MAX_RENEWALS).
        pub fn max_renewals(mut self, n: u32) -> Self {
            self.settings.max_renewals = n;
            self
        }

        /// Sets the connect timeout: one deadline for a new connection's TCP connect,
        /// TLS handshake, login and `SELECT`, cut to the caller's deadline (see
        /// [Timeouts](crate::lock::redis#timeouts), which also says what it does not
        /// bound). Default:
        /// [`DEFAULT_CONNECT_TIMEOUT`](crate::lock::redis::DEFAULT_CONNECT_TIMEOUT).
        /// [`build`](Self::build) refuses zero or more than
        /// [`MAX_TIMEOUT`](turnstile_core::MAX_TIMEOUT). A Redlock server gets no more than 5 %
        /// of the TTL, or 50 ms where that is more.
        ///
        /// No step of the setup gets less than 50 ms: a timeout, or what is left of the
        /// caller's deadline, below that is stretched to it without a word, by up to
        /// 50 ms per step (TCP, the TLS handshake, the login, `SELECT`; the login and
        /// `SELECT` twice for a server older than Redis 6, which takes no user); a failed
        /// connect's text quotes the time it was really allowed.
        pub fn connect_timeout(mut self, timeout: Duration) -> Self {
            self.settings.connect_timeout = timeout;
            self
        }

        /// Sets the response timeout of one command, cut to the caller's deadline.
        /// Default:
        /// [`DEFAULT_RESPONSE_TIMEOUT`](crate::lock::redis::DEFAULT_RESPONSE_TIMEOUT).
        /// [`build`](Self::build) refuses zero or more than
        /// [`MAX_TIMEOUT`](turnstile_core::MAX_TIMEOUT). A Redlock server gets no more than 5 %
        /// of the TTL, or 50 ms where that is more.
        ///
        /// What is left of the caller's deadline gives a command no less than 50 ms,
        /// though: a closer deadline is overrun by up to that, without a word (see
        /// [Timeouts](crate::lock::redis#timeouts)); a timeout set below 50 ms is used as
        /// set. A failure's text quotes the time really allowed.
        pub fn response_timeout(mut self, timeout: Duration) -> Self {
            self.settings.response_timeout = timeout;
            self
        }

        /// Sets the prefix of every Redis key and channel. Default:
        /// [`DEFAULT_KEY_PREFIX`](crate::lock::redis::DEFAULT_KEY_PREFIX). Fences are
        /// comparable only within one prefix and database.
        pub fn key_prefix(mut self, prefix: impl Into<String>) -> Self {
            self.settings.prefix = prefix.into();
            self
        }
    };
}
use settings_setters;

/// Builds a [`RedisLock`]; every setter documents its default.
#[must_use = "a builder does nothing until build() is called"]
pub struct RedisLockBuilder {
    url: String,
    settings: Settings,
    fencing: bool,
    poll_interval: Duration,
}

impl fmt::Debug for RedisLockBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisLockBuilder")
            .field("url", &crate::spec::redact_url(&self.url))
            .field("settings", &self.settings)
            .field("fencing", &self.fencing)
            .field("poll_interval", &self.poll_interval)
            .finish()
    }
}

impl RedisLockBuilder {
    settings_setters!();

    /// Issues fencing tokens (the default) or not. `false` is a negative control for the
    /// harness: leases report no fence, so a paused holder's late writes go through.
    pub fn fencing(mut self, on: bool) -> Self {
        self.fencing = on;
        self
    }

    /// Sets the longest sleep of a waiter between two attempts when no release
    /// notification arrives. Default: [`DEFAULT_POLL_INTERVAL`].
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval;
        self
    }

    /// Checks the settings and builds the lock. Connects lazily: an unreachable server
    /// shows at the first acquire (or at [`RedisLock::ping`]).
    ///
    /// # Errors
    /// [`Error::Config`] for an unparseable URL, a URL whose password the
    /// driver would read partly as the host or port (a raw `@` followed by `/`, `?` or `#`
    /// in the password, `redis://:P@ss?db=1@h`; a password of digits and then `?`, `/` or
    /// `#`, `redis://u:12?x=1@h`; a password that starts with `//`,
    /// `redis://app://Xy:7k9@h`, the host `app`; a user with a raw `/`, `?` or `#`, with
    /// a password or without, `redis://us/er:pw@h` and `redis://us?er@h`, the host `us`;
    /// an `@` in the path, query or fragment after a host, or after a `:` (a password's, a
    /// port's or any other), but in the value of `tls_ca`, `tls_cert` or `tls_key` (a Unix
    /// socket's path, `redis+unix:///run/u@h/redis.sock`, follows no host): percent-encode
    /// them, `%40` for `@`, `%2F` for `/`, `%3F` for `?`, `%23`
    /// for `#`), a `%` in the user info or a `pass` parameter that starts no
    /// percent-escape (`redis://u:secret%zz@h`: write a `%` itself as `%25`; the message
    /// names the part, never its text), an unknown scheme, a query parameter that nothing reads or that is given
    /// twice (see [Specs](self#specs); `ttl_ms` is a spec's: here the TTL is set with
    /// [`ttl`](Self::ttl)), `rediss://` without
    /// the feature `redis-tls`, a TLS file that is missing, unreadable or invalid (with
    /// `redis-tls-preload-roots`, the system's trusted roots too; see [TLS](self#tls)), or
    /// a bad setting (a TTL below [`MIN_TTL`], a renewal period not
    /// shorter than the TTL, a zero timeout or poll interval, a prefix with braces).
    pub fn build(self) -> Result<RedisLock, StrategyError> {
        self.settings.check()?;
        if self.poll_interval.is_zero() || self.poll_interval > MAX_TIMEOUT {
            return Err(Error::Config(format!(
                "poll interval {:?} must be above zero and at most {MAX_TIMEOUT:?}",
                self.poll_interval
            )));
        }
        let (connector, display) = node::parse_url(&self.url)?;
        let node = Arc::new(Node::new(
            connector,
            display,
            self.settings.channel(),
            self.settings.connect_timeout,
            self.settings.response_timeout,
        ));
        let backend_id = format!("redis:{}/db{}", self.settings.prefix, node.db());
        let watchdog = {
            let node = node.clone();
            let ttl = self.settings.ttl;
            let renew = move |lease: &LeaseState| {
                let start = Instant::now();
                match node.extend(&lease.keys, &lease.token, ttl, Some(lease.valid_until())) {
                    Ok(true) => Renewal::Extended(start + ttl - clock_drift(ttl)),
                    Ok(false) => Renewal::Lost,
                    Err(_) => Renewal::Failed,
                }
            };
            Watchdog::new(
                self.settings.renew_every(),
                self.settings.max_renewals,
                Box::new(renew),
            )
        };
        let channel = self.settings.channel();
        let waiters = Waiters::shared(&self.url, &channel);
        Ok(RedisLock {
            inner: Arc::new(Inner {
                node,
                channel,
                settings: self.settings,
                fencing: self.fencing,
                poll_interval: self.poll_interval,
                backend_id,
                waiters,
                watchdog,
            }),
        })
    }
}

/// A lease lock on one Redis server, with fencing tokens. Cheap to clone (clones share
/// connections, the subscriber and the watchdog).
///
/// Capabilities: [`Scope::Hosts`], fences (unless built with
/// [`fencing(false)`](RedisLockBuilder::fencing)), leases can expire,
/// [`HolderDeath::LeaseExpires`]. See the [module docs](self) for keys, waiting and
/// timeouts.
#[derive(Clone)]
pub struct RedisLock {
    inner: Arc<Inner>,
}

struct Inner {
    node: Arc<Node>,
    settings: Settings,
    channel: Vec<u8>,
    fencing: bool,
    poll_interval: Duration,
    backend_id: String,
    waiters: Arc<Waiters>,
    watchdog: Watchdog,
}

impl fmt::Debug for RedisLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisLock")
            .field("server", &self.inner.node.display())
            .field("backend_id", &self.inner.backend_id)
            .field("settings", &self.inner.settings)
            .field("fencing", &self.inner.fencing)
            .finish_non_exhaustive()
    }
}

impl RedisLock {
    /// A builder for a lock on the server at `url`
    /// (`redis://[user:password@]host[:port][/db]`, `redis+unix:///path?db=N&pass=…`, or
    /// with the feature `redis-tls`, `rediss://…[?tls_ca=FILE][&tls_cert=FILE&tls_key=FILE]`:
    /// see [TLS](self#tls)).
    pub fn builder(url: impl Into<String>) -> RedisLockBuilder {
        RedisLockBuilder {
            url: url.into(),
            settings: Settings::default(),
            fencing: true,
            poll_interval: DEFAULT_POLL_INTERVAL,
        }
    }

    /// A builder from a spec URL: as [`RedisLock::builder`], plus the query parameter
    /// [`TTL_QUERY_PARAM`] (`?ttl_ms=1000`) setting the lease TTL.
    ///
    /// # Errors
    /// [`Error::Config`] when `ttl_ms` is not a whole number or is given twice (a TTL out
    /// of range is refused by [`build`](RedisLockBuilder::build)), or is where the
    /// redacted URL does not show it (after a raw `?` in what may be the password,
    /// `rediss://u:Xy?ttl_ms=5&tls_ca=/a@h/0`; redaction errs on the side of masking, so
    /// also before an `@` in a TLS file's path with a `/` after it: give `ttl_ms` after
    /// that parameter, or write the `@` as `%40`), for a query parameter that nothing
    /// reads (`?ttl=2000`) or another one given twice (see [Specs](self#specs)), or for a
    /// URL whose user info drivers read differently (as
    /// [`build`](RedisLockBuilder::build) refuses it).
    pub fn builder_from_url(url: &str) -> Result<RedisLockBuilder, StrategyError> {
        let (url, ttl) = take_ttl_ms(url)?;
        let builder = Self::builder(url);
        Ok(match ttl {
            Some(ttl) => builder.ttl(ttl),
            None => builder,
        })
    }

    /// A lock on the server at `url` with every default.
    ///
    /// # Errors
    /// As [`RedisLockBuilder::build`].
    pub fn new(url: &str) -> Result<Self, StrategyError> {
        Self::builder(url).build()
    }

    /// Sends `PING`, answering the round trip (it also checks the password).
    ///
    /// # Errors
    /// [`Error::Unavailable`] when the server can't be reached or refuses us.
    pub fn ping(&self) -> Result<Duration, StrategyError> {
        self.inner.node.ping()
    }

    /// The lease time to live.
    pub fn ttl(&self) -> Duration {
        self.inner.settings.ttl
    }

    /// Whether the release subscriber is connected right now (it starts with the first
    /// contended acquire).
    pub fn subscriber_live(&self) -> bool {
        self.inner.waiters.is_live()
    }

    /// The server, without password.
    pub fn server(&self) -> &str {
        self.inner.node.display()
    }

    fn lease(&self, keys: Keys, token: String, fence: u64, start: Instant) -> RedisLease {
        new_lease(&self.inner, keys, token, fence, start)
    }
}

/// A lease granted at `start` (its validity counts from then), watched by the watchdog.
fn new_lease(
    inner: &Arc<Inner>,
    keys: Keys,
    token: String,
    fence: u64,
    start: Instant,
) -> RedisLease {
    let ttl = inner.settings.ttl;
    let state = LeaseState::new(keys, token, start + ttl - clock_drift(ttl));
    if inner.settings.renewal {
        inner.watchdog.watch(&state, start);
    }
    RedisLease {
        lock: inner.clone(),
        state,
        fence: inner.fencing.then_some(Fence(fence)),
    }
}

impl Lock for RedisLock {
    type Lease = RedisLease;

    fn capabilities(&self) -> Capabilities {
        Capabilities::new(Scope::Hosts, HolderDeath::LeaseExpires)
            .fences(self.inner.fencing)
            .lease_can_expire(true)
    }

    fn backend_id(&self) -> &str {
        &self.inner.backend_id
    }

    fn acquire(
        &self,
        name: &LockName,
        deadline: Option<Instant>,
    ) -> Result<RedisLease, StrategyError> {
        let inner = &*self.inner;
        let keys = Keys::new(&inner.settings.prefix, name.bytes());
        let token = new_token();
        let ttl = inner.settings.ttl;
        let started = Instant::now();
        // A refused attempt marks this process waiting, for as long as its next attempt
        // may take: a holder elsewhere then releases rather than hands on locally.
        let waiting = Some((process_tag(), inner.poll_interval * 2));
        // Answers when the attempt started too: the lease's validity counts from then.
        let attempt = || {
            let start = Instant::now();
            inner
                .node
                .try_acquire(&keys, &token, ttl, inner.fencing, waiting, deadline)
                .map(|a| (a, start))
        };
        let timeout = || {
            Err(Error::Timeout {
                waited: started.elapsed(),
            })
        };
        // Fast path: nobody of ours is queued, so try at once.
        if !inner.waiters.has_queue(&keys.lock) {
            if let (Attempt::Acquired(fence), at) = attempt()? {
                return Ok(self.lease(keys, token, fence, at));
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return timeout();
            }
        }
        // Subscribe before the next SET NX, so its release can't slip past us.
        let subscribe_wait = deadline
            .map(|d| d.saturating_duration_since(Instant::now()))
            .unwrap_or(inner.settings.connect_timeout)
            .min(inner.settings.connect_timeout);
        inner.waiters.ensure_subscriber(
            inner.node.connector(),
            &inner.channel,
            inner.node.connect_timeout(),
            subscribe_wait,
        );
        let place = inner.waiters.join(&keys.lock, owner_of(&self.inner));
        let mut trust_local = true;
        loop {
            let (seen, held_here) = match place.wait_head(deadline, inner.poll_interval) {
                Turn::Granted(lease) => {
                    place.leave_holding();
                    return Ok(lease);
                }
                Turn::TimedOut => return timeout(),
                Turn::Head { seen, held_here } => (seen, held_here),
            };
            let poll_until = |now: Instant, sleep: Duration| {
                deadline.map_or(now + sleep, |d| d.min(now + sleep))
            };
            if held_here && std::mem::take(&mut trust_local) {
                // One of ours just took the lock: its release or hand-off comes here
                // first. Only once, for at most a poll interval: it may also hang.
                let until = poll_until(Instant::now(), inner.poll_interval);
                if let Some(lease) = place.wait_release(seen, until) {
                    place.leave_holding();
                    return Ok(lease);
                }
                continue;
            }
            match attempt()? {
                (Attempt::Acquired(fence), at) => {
                    place.leave_holding();
                    return Ok(self.lease(keys, token, fence, at));
                }
                (Attempt::Held(pttl), _) => {
                    let now = Instant::now();
                    if deadline.is_some_and(|d| now >= d) {
                        return timeout();
                    }
                    // The holder's TTL running out (it may have died) publishes nothing.
                    let mut sleep = inner.poll_interval;
                    if let Some(pttl) = pttl {
                        sleep = sleep.min(pttl + Duration::from_millis(1));
                    }
                    if let Some(lease) = place.wait_release(seen, poll_until(now, sleep)) {
                        place.leave_holding();
                        return Ok(lease);
                    }
                }
            }
        }
    }
}

/// A lease on a [`RedisLock`] name, renewed by the watchdog while held. Released (by a
/// compare-and-delete) on [`Lease::release`] or drop.
#[must_use = "the lock is released as soon as the lease is dropped"]
pub struct RedisLease {
    lock: Arc<Inner>,
    state: Arc<LeaseState>,
    fence: Option<Fence>,
}

impl fmt::Debug for RedisLease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisLease")
            .field("fence", &self.fence)
            .field("renewals", &self.state.renewals())
            .finish_non_exhaustive()
    }
}

impl RedisLease {
    /// How many times the watchdog has extended this lease.
    pub fn renewals(&self) -> u32 {
        self.state.renewals()
    }

    /// Until when the lease is surely held, by the local monotonic clock (TTL from the
    /// last successful acquire or extension, less the drift allowance).
    pub fn valid_until(&self) -> Instant {
        self.state.valid_until()
    }

    /// Releases the lease: hands it on to a waiter of ours if one is at the head of the
    /// queue, else deletes it. `later`: for a dropped lease, whose outcome nobody hears,
    /// the release is sent without waiting for its reply when no thread of this process
    /// waits for the name (see `Node::release_later`).
    fn release_inner(&self, later: bool) -> Result<(), StrategyError> {
        if !self.state.mark_released() {
            return Ok(());
        }
        let inner = &*self.lock;
        inner.watchdog.unwatch(&self.state);
        let keys = &self.state.keys;
        let owner = owner_of(&self.lock);
        if inner.waiters.can_grant(&keys.lock, owner) {
            return self.hand_off(owner);
        }
        if later && !inner.waiters.has_queue(&keys.lock) {
            // A thread of ours that finds the name held meanwhile joins the queue and,
            // as its head, tries again at once: our release has reached the server first.
            return inner.node.release_later(keys, &self.state.token);
        }
        let ours = inner.node.release(keys, &self.state.token, None);
        // Our own waiters need no round trip through the subscriber.
        inner.waiters.notify(&keys.lock);
        match ours? {
            true => Ok(()),
            false => Err(Error::LeaseLost),
        }
    }

    /// Hands the lease on to the head of this process's queue for the name, a waiter of
    /// the same lock object: one round trip gives the key a new token, a fresh TTL and a
    /// higher fence, where a release and the waiter's acquire took two. Unless another
    /// process marked itself waiting: then the script releases, and that process gets
    /// its chance as after any release.
    fn hand_off(&self, owner: usize) -> Result<(), StrategyError> {
        let inner = &*self.lock;
        let keys = &self.state.keys;
        let token = new_token();
        let start = Instant::now();
        let handoff = inner.node.hand_off(
            keys,
            &self.state.token,
            &token,
            inner.settings.ttl,
            inner.fencing,
            process_tag(),
        );
        match handoff {
            Ok(Handoff::Granted(fence)) => {
                let lease = new_lease(&self.lock, keys.clone(), token, fence, start);
                // The head left meanwhile (and no waiter of ours took its place): dropping
                // the lease releases it.
                if let Err(unclaimed) = inner.waiters.grant(&keys.lock, owner, lease) {
                    drop(unclaimed);
                }
                Ok(())
            }
            Ok(Handoff::Released) => {
                inner.waiters.notify(&keys.lock);
                Ok(())
            }
            Ok(Handoff::NotOurs) => {
                inner.waiters.notify(&keys.lock);
                Err(Error::LeaseLost)
            }
            Err(e) => {
                inner.waiters.notify(&keys.lock);
                Err(e)
            }
        }
    }
}

impl Lease for RedisLease {
    fn fence(&self) -> Option<Fence> {
        self.fence
    }

    fn check(&self) -> Result<(), StrategyError> {
        self.state.check()
    }

    fn release(self) -> Result<(), StrategyError> {
        self.release_inner(false)
    }
}

impl Drop for RedisLease {
    fn drop(&mut self) {
        // A failed release leaves the key to expire at its TTL (or to the next attempt,
        // which releases what it knows may be left); nothing else to do.
        let _ = self.release_inner(true);
    }
}

/// The form of a URL of each Redis scheme (`redis`, `rediss`, `redis+unix`, `redlock`,
/// `redlocks`), for `turnstile list` and a spec without one.
#[cfg(feature = "sqlite")]
pub(crate) fn url_form(scheme: &str) -> &'static str {
    match scheme {
        "redis+unix" => "redis+unix:///path/to/redis.sock?db=N&user=U&pass=P",
        "rediss" => "rediss://[user:password@]host[:port][/db]",
        "redlock" => "redlock://[user:password@]host1[:port],host2[:port],host3[:port][/db]",
        "redlocks" => "redlocks://[user:password@]host1[:port],host2[:port],host3[:port][/db]",
        _ => "redis://[user:password@]host[:port][/db]",
    }
}

/// Registers `redis://…`, `rediss://…` (and `redis+unix://…`),
/// `redlock://h1:p1,h2:p2,h3:p3` and `redlocks://…` in a SQLite registry (called by
/// [`Registry::builtin`](crate::spec::Registry::builtin)). Each factory pings its
/// server(s) so a wrong address or password shows at once, as [`Error::Unavailable`].
#[cfg(feature = "sqlite")]
pub(crate) fn register(registry: &mut crate::spec::Registry<crate::sqlite::Sqlite>) {
    use crate::spec::{Setup, Spec};
    use crate::sqlite::Sqlite;
    use turnstile_core::BoxSerializer;

    fn finish<L: Lock>(
        lock: L,
        setup: &Setup<Sqlite>,
    ) -> Result<BoxSerializer<<Sqlite as turnstile_core::Connect>::Resource>, StrategyError> {
        setup.locked(lock)
    }
    use url_form as form;
    fn url(spec: &Spec) -> Result<&str, StrategyError> {
        spec.arg().ok_or_else(|| {
            Error::Config(format!(
                "strategy {:?} needs a URL: {}",
                spec.name(),
                form(spec.name())
            ))
        })
    }
    let single = |spec: &Spec, setup: &Setup<Sqlite>| {
        let lock = RedisLock::builder_from_url(url(spec)?)?.build()?;
        lock.ping()?;
        finish(lock, setup)
    };
    for scheme in ["redis", "redis+unix"] {
        registry.register(
            scheme,
            &format!(
                "Redis lease lock with fencing tokens and a renewing watchdog (hosts): {}; ?ttl_ms=N sets the lease TTL (default 8000)",
                form(scheme)
            ),
            single,
        );
    }
    registry.register(
        "rediss",
        &format!(
            "the redis lock over TLS (feature redis-tls): {}; ?tls_ca=FILE trusts a private CA, ?tls_cert=FILE&tls_key=FILE for mutual TLS",
            form("rediss")
        ),
        single,
    );
    let redlock = |spec: &Spec, setup: &Setup<Sqlite>| {
        let lock = RedlockLock::builder_from_url(url(spec)?)?.build()?;
        lock.ping_all()?;
        finish(lock, setup)
    };
    registry.register(
        "redlock",
        &format!(
            "Redlock over N independent Redis servers, quorum N/2+1; no fencing (hosts): {}",
            form("redlock")
        ),
        redlock,
    );
    registry.register(
        "redlocks",
        &format!(
            "Redlock with every server over TLS (feature redis-tls), TLS parameters as rediss://: {}",
            form("redlocks")
        ),
        redlock,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A queue in front of the lock answers each caller of a batch with the lock's own
    /// error, shared: said once, and found by type under the `Unavailable`.
    #[cfg(all(feature = "queue", feature = "sqlite"))]
    #[test]
    fn a_queue_hands_on_the_servers_error_itself() {
        let dir = tempfile::tempdir().unwrap();
        let url = "redis://127.0.0.1:1/0";
        let lock = RedisLock::builder(url)
            .connect_timeout(Duration::from_millis(500))
            .build()
            .unwrap();
        let queue = crate::queue::Queue::builder()
            .lock(lock)
            .build(crate::sqlite::Sqlite::new(dir.path().join("q.db")))
            .unwrap();
        let tickets: Vec<_> = (0..3)
            .map(|_| {
                queue
                    .submit(&turnstile_core::Key::whole(), |_db| {
                        Ok::<_, rusqlite::Error>(())
                    })
                    .unwrap()
            })
            .collect();
        for ticket in tickets {
            let error = ticket.wait().unwrap_err();
            let Error::Unavailable(source) = &error else {
                panic!("{error:?}")
            };
            let server = turnstile_core::find_error::<node::ServerError>(source)
                .unwrap_or_else(|| panic!("not the server's error: {error:?}"));
            assert_eq!(
                error.to_string(),
                format!("backend unavailable: {server}"),
                "said once"
            );
            assert!(server.to_string().starts_with(&format!("redis at {url}: ")));
        }
    }

    #[test]
    fn bad_settings_are_typed_config_errors() {
        let url = "redis://127.0.0.1:1";
        let cases = [
            RedisLock::builder(url).ttl(Duration::ZERO),
            RedisLock::builder(url).ttl(Duration::from_millis(5)),
            RedisLock::builder(url)
                .ttl(Duration::from_secs(1))
                .renew_every(Duration::from_secs(1)),
            RedisLock::builder(url).renew_every(Duration::ZERO),
            RedisLock::builder(url).connect_timeout(Duration::ZERO),
            RedisLock::builder(url).poll_interval(Duration::ZERO),
            RedisLock::builder(url).key_prefix("a{b"),
            RedisLock::builder("redis://h:99999"),
            RedisLock::builder("memcached://h:1"),
        ];
        for builder in cases {
            let shown = format!("{builder:?}");
            assert!(
                matches!(builder.build(), Err(Error::Config(_))),
                "{shown} was accepted"
            );
        }
        assert!(RedisLock::builder(url).build().is_ok());
    }

    #[test]
    fn passwords_in_the_query_stay_out_of_debug_and_errors() {
        let url = "redis+unix:///tmp/r.sock?db=2&pass=hunter2";
        let mut shown = vec![format!("{:?}", RedisLock::builder(url))];
        let bad_ttl = RedisLock::builder_from_url(&format!("{url}&ttl_ms=soon")).unwrap_err();
        assert!(matches!(bad_ttl, Error::Config(_)));
        shown.push(bad_ttl.to_string());
        for bad in [
            format!("{url}&tls_ca=ca.pem"),
            format!("{url}&tls_nope=1"),
            "memcached:///tmp/r.sock?pass=hunter2".to_owned(),
        ] {
            let err = RedisLock::builder(bad).build().unwrap_err();
            assert!(matches!(err, Error::Config(_)));
            shown.push(err.to_string());
        }
        for text in shown {
            assert!(text.contains("pass=***"), "{text}");
            assert!(!text.contains("hunter2"), "{text}");
        }
        // A password with a raw `?`, `ttl_ms=` and an `@` in it: refused as such, not
        // for the TTL, whose value would be a piece of the password.
        for url in [
            "redis://u:Xy?ttl_ms=9k2@h/0",
            "redlock://u:Xy?ttl_ms=9k2@h1,h2,h3",
        ] {
            let shown = match RedisLock::builder_from_url(url) {
                Ok(_) => panic!("{url} was accepted"),
                Err(e) => e.to_string(),
            };
            assert!(shown.contains("%40"), "{shown}");
            assert!(!shown.contains("9k2") && !shown.contains("Xy"), "{shown}");
            let shown = match RedlockLock::builder_from_url(url) {
                Ok(_) => panic!("{url} was accepted"),
                Err(e) => e.to_string(),
            };
            assert!(!shown.contains("9k2") && !shown.contains("Xy"), "{shown}");
        }
        // The same, where the `@` is in a TLS file's path: not refused for its user info,
        // but for a `ttl_ms` that the redacted URL does not show, whose value is not quoted.
        let url = "rediss://u:Xy?ttl_ms=9k2&tls_ca=/a@h/0";
        let shown = match RedisLock::builder_from_url(url) {
            Ok(_) => panic!("{url} was accepted"),
            Err(e) => e.to_string(),
        };
        assert!(
            shown.contains("ttl_ms in \"rediss://u:***@h/0\""),
            "{shown}"
        );
        assert!(!shown.contains("9k2") && !shown.contains("Xy"), "{shown}");
        // A password holding `pass=`, which redaction masks to the end: the `ttl_ms` after
        // it is refused, with the way out; with that `=` as `%3D` it is read.
        let shown = match RedisLock::builder_from_url("redis://app:Password=1@h:6379/0?ttl_ms=2000")
        {
            Ok(_) => panic!("a ttl_ms that the redacted URL hides was read"),
            Err(e) => e.to_string(),
        };
        assert!(shown.contains("%3D"), "{shown}");
        let lock = RedisLock::builder_from_url("redis://app:Password%3D1@h:6379/0?ttl_ms=2000")
            .unwrap()
            .build()
            .unwrap();
        assert_eq!(lock.ttl(), Duration::from_millis(2000));
        // Nor where the redacted URL shows it as the start of another value.
        let url = "rediss://u:Xy?ttl_ms=abc&tls_ca=/a@h/0?ttl_ms=abcd";
        let shown = match RedisLock::builder_from_url(url) {
            Ok(_) => panic!("{url} was accepted"),
            Err(e) => e.to_string(),
        };
        assert!(shown.contains("ttl_ms in \"rediss://u:***@h/0"), "{shown}");
        assert!(!shown.contains("\"abc\""), "{shown}");
        let shown = match RedisLock::builder_from_url("redis://u:pw@h/0?ttl_ms=9k2") {
            Ok(_) => panic!("a TTL of 9k2 was accepted"),
            Err(e) => e.to_string(),
        };
        assert!(
            shown.contains("ttl_ms in \"redis://u:***@h/0?ttl_ms=9k2\""),
            "{shown}"
        );
    }

    /// A `ttl_ms` in what the redacted URL hides (after a raw `?` in what may be the
    /// password) is refused, whatever its value: as a TTL it would show in `build`'s
    /// messages (below the minimum, above the maximum) and in `Debug` output.
    #[test]
    fn a_ttl_that_redaction_hides_is_refused_without_showing_it() {
        for url in [
            "rediss://u:Xy?ttl_ms=58&tls_ca=/a@h/0",
            "rediss://u:Xy?ttl_ms=1858&tls_ca=/a@h/0",
            "redlocks://u:Xy?ttl_ms=58&tls_ca=/a@h1,h2",
            "redlocks://u:Xy?ttl_ms=1858&tls_ca=/a@h1,h2",
            // A mistyped URL: its password from the first `:`.
            "redis:/u:Xy?ttl_ms=58&x@h",
            "redis:/u:Xy?ttl_ms=1858&x@h",
        ] {
            let single = RedisLock::builder_from_url(url)
                .map(|b| format!("{b:?}"))
                .and_then(|_| RedisLock::builder_from_url(url)?.build());
            let redlock = RedlockLock::builder_from_url(url)
                .map(|b| format!("{b:?}"))
                .and_then(|_| RedlockLock::builder_from_url(url)?.build());
            for built in [single.map(|_| ()), redlock.map(|_| ())] {
                let shown = match built {
                    Err(e @ Error::Config(_)) => e.to_string(),
                    other => panic!("{url}: {other:?}"),
                };
                assert!(
                    !shown.contains("58") && !shown.contains("Xy"),
                    "{url}: {shown}"
                );
            }
            let refused = RedisLock::builder_from_url(url).unwrap_err().to_string();
            assert!(refused.contains("%3F"), "{url}: {refused}");
        }
        // Where the redacted URL shows it, it is the TTL: redaction errs on the side of
        // masking before an `@` in a TLS file's path with a `/` after it, but not after
        // it, nor before it written `%40`.
        for url in [
            "rediss://u:pw@h/0?tls_ca=/a@b/c&ttl_ms=1858",
            "rediss://u:pw@h/0?ttl_ms=1858&tls_ca=/a%40b/c",
            "rediss://u:Xy@h/0?ttl_ms=1858&tls_ca=/a@b",
        ] {
            let b = RedisLock::builder_from_url(url).unwrap();
            assert_eq!(b.settings.ttl, Duration::from_millis(1858), "{url}");
        }
        let refused = RedisLock::builder_from_url("rediss://u:pw@h/0?ttl_ms=1858&tls_ca=/a@b/c")
            .unwrap_err()
            .to_string();
        assert!(!refused.contains("1858"), "{refused}");
    }

    #[test]
    fn ttl_ms_sets_the_ttl_and_leaves_the_rest_of_the_url() {
        let lock = RedisLock::builder_from_url("redis://127.0.0.1:1/0?ttl_ms=1000")
            .unwrap()
            .build()
            .unwrap();
        assert_eq!(lock.ttl(), Duration::from_millis(1000));
        assert_eq!(lock.server(), "redis://127.0.0.1:1/0");
        let plain = RedisLock::builder_from_url("redis://127.0.0.1:1/0").unwrap();
        assert_eq!(plain.build().unwrap().ttl(), DEFAULT_TTL);
        assert_eq!(
            take_ttl_ms("redis+unix:///tmp/r.sock?db=2&ttl_ms=50&pass=x").unwrap(),
            (
                "redis+unix:///tmp/r.sock?db=2&pass=x".to_owned(),
                Some(Duration::from_millis(50))
            )
        );
        for bad in [
            "redis://127.0.0.1:1/?ttl_ms=",
            "redis://127.0.0.1:1/?ttl_ms=-5",
            "redis://127.0.0.1:1/?ttl_ms=1s",
            "redis://127.0.0.1:1/?ttl_ms=99999999999999999999999",
            "redis://127.0.0.1:1/?ttl_ms=100&ttl_ms=200",
        ] {
            assert!(
                matches!(RedisLock::builder_from_url(bad), Err(Error::Config(_))),
                "{bad} was accepted"
            );
        }
        // In range is build()'s to check: below MIN_TTL, or zero, or above a year; the
        // message is in the unit of ttl_ms.
        for (out_of_range, says) in [
            (
                "redis://127.0.0.1:1/?ttl_ms=0",
                "lease TTL 0 ms is below the minimum 10 ms",
            ),
            (
                "redis://127.0.0.1:1/?ttl_ms=5",
                "lease TTL 5 ms is below the minimum 10 ms",
            ),
            (
                "redis://127.0.0.1:1/?ttl_ms=31536000001",
                "lease TTL 31536000001 ms is above the maximum 31536000000 ms",
            ),
            (
                "redlock://127.0.0.1:1,127.0.0.1:2/?ttl_ms=0",
                "lease TTL 0 ms is below the minimum 10 ms",
            ),
        ] {
            let built = if out_of_range.starts_with("redlock") {
                RedlockLock::builder_from_url(out_of_range)
                    .unwrap()
                    .build()
                    .map(drop)
            } else {
                RedisLock::builder_from_url(out_of_range)
                    .unwrap()
                    .build()
                    .map(drop)
            };
            match built {
                Err(Error::Config(text)) => assert!(text.contains(says), "{text}"),
                other => panic!("{out_of_range}: {other:?}"),
            }
        }
        assert_eq!(in_ms(Duration::from_micros(1500)), "1.5 ms");
        assert_eq!(in_ms(Duration::from_nanos(1)), "0.000001 ms");
        assert_eq!(in_ms(Duration::from_secs(8)), "8000 ms");
        assert!(
            RedlockLock::builder_from_url("redlock://a:1,b:2,c:3/0?ttl_ms=900")
                .unwrap()
                .build()
                .is_ok()
        );
        for bad in [
            "redlock://a:1,b:2,c:3/0?ttl_ms=x",
            "redlock://a:1,b:2,c:3/0?ttl_ms=1",
        ] {
            let built = RedlockLock::builder_from_url(bad).and_then(RedlockBuilder::build);
            assert!(matches!(built, Err(Error::Config(_))), "{bad} was accepted");
        }
    }

    /// A parameter nothing reads is refused on every scheme, named but without its
    /// value; so is one the redis crate reads given twice. What each scheme reads passes.
    #[test]
    fn unknown_url_parameters_are_refused_on_every_scheme() {
        let refused = |url: &str| -> String {
            let single = RedisLock::builder_from_url(url).and_then(RedisLockBuilder::build);
            let redlock = RedlockLock::builder_from_url(url).and_then(RedlockBuilder::build);
            let lock = if url.starts_with("redlock") {
                redlock.map(drop)
            } else {
                single.map(drop)
            };
            match lock {
                Err(e @ Error::Config(_)) => e.to_string(),
                other => panic!("{url}: {other:?}"),
            }
        };
        let tls = cfg!(feature = "redis-tls");
        for base in [
            "redis://127.0.0.1:1/0",
            "redis+unix:///tmp/r.sock",
            "unix:///tmp/r.sock",
            "redlock://127.0.0.1:1,127.0.0.1:2/0",
            "rediss://127.0.0.1:1/0",
            "redlocks://127.0.0.1:1,127.0.0.1:2/0",
        ] {
            for (query, name) in [
                ("?ttl=2000", "ttl"),
                ("?tll_ms=100", "tll_ms"),
                ("?protocol=3&Protocol=2", "Protocol"),
                ("?ttl_ms=100&passwd=hunter2", "passwd"),
                ("?=hunter2", ""),
            ] {
                let url = format!("{base}{query}");
                let text = refused(&url);
                assert!(
                    text.contains(&format!("unknown URL parameter {name:?}")),
                    "{url}: {text}"
                );
                assert!(
                    !text.contains("2000") && !text.contains("hunter2"),
                    "{url}: {text}"
                );
            }
            let text = refused(&format!("{base}?protocol=2&protocol=hunter2"));
            assert!(text.contains("\"protocol\" is given twice"), "{text}");
            assert!(!text.contains("hunter2"), "{text}");
            let mut fine = format!("{base}?protocol=resp2&ttl_ms=100&");
            if base.contains("unix") {
                fine.push_str("db=3&user=u&pass=p");
            }
            let built = if base.starts_with("redlock") {
                RedlockLock::builder_from_url(&fine)
                    .and_then(RedlockBuilder::build)
                    .map(|l| format!("{l:?}"))
            } else {
                RedisLock::builder_from_url(&fine)
                    .and_then(RedisLockBuilder::build)
                    .map(|l| format!("{l:?}"))
            };
            // Without the feature redis-tls, TLS URLs are refused for that.
            let tls_scheme = base.starts_with("rediss") || base.starts_with("redlocks");
            assert!(built.is_ok() || (tls_scheme && !tls), "{fine}: {built:?}");
        }
        // The user, password and database of a TCP URL are in the URL itself.
        let text = refused("redis://127.0.0.1:1?db=2&pass=hunter2");
        assert!(
            text.contains("\"db\"") && text.contains("host:port/db"),
            "{text}"
        );
        let text = refused("redis://127.0.0.1:1/0?db=2");
        assert!(text.contains("takes protocol and ttl_ms;"), "{text}");
        let text = refused("redis+unix:///tmp/r.sock?db=1&db=2");
        assert!(text.contains("\"db\" is given twice"), "{text}");
        // A raw `&` in a query's password: the driver would log in with its first piece;
        // the rest, hidden by redaction, is not named.
        let text = refused("redis+unix:///run/redis.sock?pass=Xy7&k9&db=1");
        assert!(text.contains("unknown URL parameter in"), "{text}");
        assert!(!text.contains("Xy7") && !text.contains("k9"), "{text}");
        // Only a spec's URL carries ttl_ms: a builder's TTL is set with ttl().
        let direct = RedisLock::builder("redis://127.0.0.1:1/0?ttl_ms=100").build();
        match direct {
            Err(Error::Config(text)) => assert!(text.contains("ttl()"), "{text}"),
            other => panic!("{other:?}"),
        }
        let direct = RedlockLock::builder(["redis://127.0.0.1:1/0?ttl=100"]).build();
        assert!(matches!(direct, Err(Error::Config(_))), "{direct:?}");
    }

    /// A parameter name that the redacted URL hides (after a raw `?` in what may be the
    /// password) is not quoted.
    #[test]
    fn an_unknown_parameter_that_redaction_hides_is_not_named() {
        for url in [
            "rediss://u:Xy?Xy8&tls_ca=/a@h/0",
            "redlocks://u:Xy?Xy8&tls_ca=/a@h1,h2/0",
        ] {
            let text = match RedisLock::builder_from_url(url) {
                Err(e @ Error::Config(_)) => e.to_string(),
                other => panic!("{url}: {other:?}"),
            };
            assert!(text.contains("unknown URL parameter in"), "{url}: {text}");
            assert!(!text.contains("Xy"), "{url}: {text}");
            let text = match RedlockLock::builder_from_url(url) {
                Err(e @ Error::Config(_)) => e.to_string(),
                other => panic!("{url}: {other:?}"),
            };
            assert!(!text.contains("Xy"), "{url}: {text}");
        }
        // Once shown, it is named.
        let text = RedisLock::builder_from_url("rediss://u:pw@h/0?Xy8=1")
            .map(drop)
            .unwrap_err()
            .to_string();
        assert!(text.contains("\"Xy8\""), "{text}");
    }

    /// The refusal of `url` by `RedisLock::builder_from_url` and `build` (or Redlock's,
    /// for a `redlock…` URL), as text.
    fn refusal(url: &str) -> String {
        let built = if url.starts_with("redlock") {
            RedlockLock::builder_from_url(url)
                .and_then(RedlockBuilder::build)
                .map(drop)
        } else {
            RedisLock::builder_from_url(url)
                .and_then(RedisLockBuilder::build)
                .map(drop)
        };
        match built {
            Err(e @ Error::Config(_)) => e.to_string(),
            other => panic!("{url}: {other:?}"),
        }
    }

    /// A password in the query of a TCP URL (`?pass=…`, `?password=…`), whose value
    /// redaction masks, is named, with the hint where a password goes; its value is not
    /// shown.
    #[test]
    fn a_password_parameter_on_a_tcp_url_is_named_with_a_hint() {
        let mut cases = vec![
            ("redis://127.0.0.1:1/0?pass=hunter2", "\"pass\""),
            ("redis://127.0.0.1:1/0?password=hunter2", "\"password\""),
            ("redis://127.0.0.1:1/0?ttl_ms=100&PASS=hunter2", "\"PASS\""),
            (
                "redis://127.0.0.1:1/0?pass%77ord=hunter2",
                "\"pass%77ord\" (read as \"password\")",
            ),
            (
                "redlock://127.0.0.1:1,127.0.0.1:2/0?pass=hunter2",
                "\"pass\"",
            ),
        ];
        if cfg!(feature = "redis-tls") {
            cases.push(("rediss://127.0.0.1:1/0?password=hunter2", "\"password\""));
        }
        for (url, named) in cases {
            let text = refusal(url);
            assert!(
                text.contains(&format!("unknown URL parameter {named} in")),
                "{url}: {text}"
            );
            assert!(
                text.contains("the user, password and database go in the URL itself"),
                "{url}: {text}"
            );
            assert!(!text.contains("hunter2"), "{url}: {text}");
        }
    }

    /// Parameter names are read percent-decoded, as the redis crate reads them: known
    /// ones are accepted (and read), and checked for being given twice; unknown ones are
    /// named as written and as read.
    #[test]
    fn percent_encoded_parameter_names_are_read_as_the_driver_reads_them() {
        let lock = RedisLock::builder("redis://127.0.0.1:1/0?%70rotocol=3")
            .build()
            .unwrap();
        let protocol = lock
            .inner
            .node
            .connector()
            .info()
            .redis_settings()
            .protocol();
        assert!(protocol.supports_resp3(), "{protocol:?}");
        let lock = RedisLock::builder("redis+unix:///tmp/r.sock?%64b=3&%70ass=hunter2")
            .build()
            .unwrap();
        assert_eq!(lock.backend_id(), "redis:turnstile/db3");
        assert!(!format!("{lock:?}").contains("hunter2"));
        let built = RedisLock::builder_from_url("redis://127.0.0.1:1/0?%74tl_ms=100").unwrap();
        assert_eq!(built.settings.ttl, Duration::from_millis(100));
        let built =
            RedlockLock::builder_from_url("redlock://a:1,b:2/0?ttl%5Fms=900&%70rotocol=2").unwrap();
        assert!(format!("{built:?}").contains("ttl: 900ms"), "{built:?}");
        assert!(built.build().is_ok());
        let text = refusal("redis://127.0.0.1:1/0?protocol=2&%70rotocol=3");
        assert!(
            text.contains("URL parameter \"%70rotocol\" (read as \"protocol\") is given twice"),
            "{text}"
        );
        let text = refusal("redis://127.0.0.1:1/0?ttl_ms=100&ttl%5Fms=200");
        assert!(text.contains("given twice"), "{text}");
        let text = refusal("redis://127.0.0.1:1/0?%74tl=2000");
        assert!(
            text.contains("unknown URL parameter \"%74tl\" (read as \"ttl\")"),
            "{text}"
        );
        assert!(!text.contains("2000"), "{text}");
        assert_eq!(param_name("a+b%2"), "a b%2");
        assert_eq!(param_name("%ff"), "\u{fffd}");
        assert_eq!(param_name("proto\tcol"), "protocol");
        assert_eq!(param_name("pro\r\nto%63ol"), "protocol");
    }

    #[test]
    fn tokens_are_unique() {
        let a = new_token();
        let b = new_token();
        assert_ne!(a, b);
    }

    #[test]
    fn debug_hides_the_password() {
        let b = RedisLock::builder("redis://u:hunter2@127.0.0.1:1/0");
        assert!(!format!("{b:?}").contains("hunter2"));
        let lock = b.build().unwrap();
        assert!(!format!("{lock:?}").contains("hunter2"));
        assert_eq!(lock.backend_id(), "redis:turnstile/db0");
    }
}
