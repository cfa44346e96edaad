//! Redlock: a lease on a majority of N independent Redis servers.
//!
//! The parameters follow redsync (the Go reference implementation): TTL 8 s, clock drift
//! 1 % of the TTL plus 2 ms, a per-server timeout of 5 % of the TTL (cut to the caller's
//! deadline, but never below 50 ms, in an acquire's round and its release), and a random retry
//! delay of 50–250 ms between rounds, until the caller's deadline (instead of redsync's
//! 32 tries). A round asks every server in turn; it wins with a quorum (N/2 + 1) whose
//! remaining validity, TTL − elapsed − drift, is still positive; otherwise it releases
//! on every server and retries.
//!
//! Redlock issues **no fencing tokens**: each server's counter is independent, so no
//! number taken from them is monotonic across the quorum. Its safety leans on bounded
//! clock drift and pauses; use [`RedisLock`](super::RedisLock) with fencing where a paused
//! holder must not write.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use turnstile_core::{
    Capabilities, Error, HolderDeath, Lease, Lock, LockName, Scope, StrategyError,
};

use super::node::{self, Attempt, Keys, Node, ServerError};
use super::watchdog::{LeaseState, Renewal, Watchdog};
use super::{Settings, clock_drift, new_token, settings_setters};

/// The shortest random delay between two Redlock rounds: 50 ms (redsync).
pub const REDLOCK_RETRY_MIN: Duration = Duration::from_millis(50);
/// The longest random delay between two Redlock rounds: 250 ms (redsync).
pub const REDLOCK_RETRY_MAX: Duration = Duration::from_millis(250);

/// Builds a [`RedlockLock`]; every setter documents its default.
#[must_use = "a builder does nothing until build() is called"]
pub struct RedlockBuilder {
    urls: Vec<String>,
    settings: Settings,
    /// The `redlock://` URL the servers' URLs were made from, if they were.
    origin: Option<Origin>,
}

/// A `redlock://` URL that a builder's servers came from: its errors quote it, not the
/// per-server URLs made from it, which the user never wrote.
#[derive(Clone)]
struct Origin {
    /// The URL as given, redacted.
    shown: String,
    /// Each server as written in it, or `None` where redaction hides a byte of it.
    hosts: Vec<Option<String>>,
}

impl Origin {
    /// `error`, from reading the URL of server `i` of `urls`, quoting the `redlock://`
    /// URL instead. The server is named only where the others read well or fail
    /// otherwise: what every server fails alike is in their shared part (the database,
    /// the query), whichever server it is shown for.
    fn config_error(&self, error: StrategyError, i: usize, urls: &[String]) -> StrategyError {
        let Error::Config(message) = error else {
            return error;
        };
        let spec = format!("{:?}", self.shown);
        let in_spec = |message: &str, url: &str| {
            message.replace(&format!("{:?}", crate::spec::redact_url(url)), &spec)
        };
        let message = in_spec(&message, &urls[i]);
        let shared = urls.iter().enumerate().all(|(j, url)| {
            j == i || matches!(node::parse_url(url), Err(Error::Config(m)) if in_spec(&m, url) == message)
        });
        let at = if shared {
            String::new()
        } else {
            format!(" at its {}", self.server(i))
        };
        Error::Config(if message.contains(&spec) {
            message.replacen(&spec, &format!("{spec}{at}"), 1)
        } else {
            format!("{message} (in {spec}{at})")
        })
    }

    /// Server `i` as the URL writes it (by its place in the list where redaction hides
    /// it).
    fn server(&self, i: usize) -> String {
        match &self.hosts[i] {
            Some(host) => format!("server {host:?}"),
            None => format!("server number {} of {}", i + 1, self.hosts.len()),
        }
    }

    /// The error for servers `first` and `again` of the URL, which are the same server,
    /// `display`.
    fn listed_twice(&self, first: usize, again: usize, display: &str) -> StrategyError {
        let spec = &self.shown;
        let (a, b) = (self.server(first), self.server(again));
        Error::Config(match (&self.hosts[first], &self.hosts[again]) {
            (Some(x), Some(y)) if x == y => {
                format!("{spec:?} lists the {a} twice; it would count twice towards the quorum")
            }
            _ => format!(
                "{spec:?} lists one server twice, as its {a} and its {b} (both {display}); \
                 it would count twice towards the quorum"
            ),
        })
    }
}

impl fmt::Debug for RedlockBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let urls: Vec<String> = self
            .urls
            .iter()
            .map(|u| crate::spec::redact_url(u))
            .collect();
        f.debug_struct("RedlockBuilder")
            .field("urls", &urls)
            .field("settings", &self.settings)
            .finish()
    }
}

impl RedlockBuilder {
    settings_setters!();

    /// Checks the settings and builds the lock. Connects lazily.
    ///
    /// # Errors
    /// [`Error::Config`] for no servers, the same server twice (it would count twice
    /// towards the quorum), a bad URL, or a bad setting (as
    /// [`RedisLockBuilder::build`](super::RedisLockBuilder::build)). One server under
    /// two names (`127.0.0.1:6379` and `localhost:6379`) is found once both are reached:
    /// see [`RedlockLock`].
    pub fn build(self) -> Result<RedlockLock, StrategyError> {
        self.settings.check()?;
        if self.urls.is_empty() {
            return Err(Error::Config("Redlock needs at least one server".into()));
        }
        // redsync's timeout factor: each server gets 5 % of the TTL to answer.
        let per_server = (self.settings.ttl / 20).max(node::MIN_IO_TIMEOUT);
        let mut nodes = Vec::with_capacity(self.urls.len());
        for (i, url) in self.urls.iter().enumerate() {
            let (connector, display) = node::parse_url(url).map_err(|e| match &self.origin {
                Some(origin) => origin.config_error(e, i, &self.urls),
                None => e,
            })?;
            if let Some(first) = nodes
                .iter()
                .position(|n: &Arc<Node>| n.display() == display)
            {
                return Err(match &self.origin {
                    Some(origin) => origin.listed_twice(first, i, &display),
                    None => Error::Config(format!("Redlock server {display} is listed twice")),
                });
            }
            nodes.push(Arc::new(
                Node::new(
                    connector,
                    display,
                    Vec::new(),
                    self.settings.connect_timeout.min(per_server),
                    self.settings.response_timeout.min(per_server),
                )
                .identified(),
            ));
        }
        let nodes: Arc<[Arc<Node>]> = nodes.into();
        let quorum = nodes.len() / 2 + 1;
        let watchdog = {
            let nodes = nodes.clone();
            let ttl = self.settings.ttl;
            let renew = move |lease: &LeaseState| {
                let start = Instant::now();
                let mut extended = 0;
                let mut refused = 0;
                for n in nodes.iter() {
                    match n.extend(&lease.keys, &lease.token, ttl, None) {
                        Ok(true) => extended += 1,
                        Ok(false) => refused += 1,
                        Err(_) => {}
                    }
                }
                let validity = ttl.checked_sub(start.elapsed() + clock_drift(ttl));
                match validity {
                    Some(v) if extended >= quorum => Renewal::Extended(start + v),
                    // A majority no longer holds our token: the lease is gone for good.
                    _ if refused > nodes.len() - quorum => Renewal::Lost,
                    _ => Renewal::Failed,
                }
            };
            Watchdog::new(
                self.settings.renew_every(),
                self.settings.max_renewals,
                Box::new(renew),
            )
        };
        Ok(RedlockLock {
            inner: Arc::new(Inner {
                backend_id: format!("redlock:{}", self.settings.prefix),
                nodes,
                quorum,
                settings: self.settings,
                watchdog,
            }),
        })
    }
}

/// A Redlock lease lock over several independent Redis servers. Cheap to clone.
///
/// Capabilities: [`Scope::Hosts`], **no fences**, leases can expire,
/// [`HolderDeath::LeaseExpires`]. Keys are those of [`RedisLock`](super::RedisLock).
///
/// The servers must be distinct: one server listed under two names (`127.0.0.1:6379`,
/// `localhost:6379`, `[::1]:6379`, or over TCP and a Unix socket) would count twice
/// towards the quorum. Each server's first connection reads its `run_id`
/// (`INFO server`), and [`ping_all`](RedlockLock::ping_all) and every acquire refuse,
/// with an [`Error::Config`] naming both entries, two that share one (an acquire releases
/// what its round took first). A server that does not answer `INFO` (renamed away, or
/// denied by an ACL) is not checked.
#[derive(Clone)]
pub struct RedlockLock {
    inner: Arc<Inner>,
}

struct Inner {
    nodes: Arc<[Arc<Node>]>,
    quorum: usize,
    settings: Settings,
    backend_id: String,
    watchdog: Watchdog,
}

impl fmt::Debug for RedlockLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let servers: Vec<&str> = self.inner.nodes.iter().map(|n| n.display()).collect();
        f.debug_struct("RedlockLock")
            .field("servers", &servers)
            .field("quorum", &self.inner.quorum)
            .field("settings", &self.inner.settings)
            .finish_non_exhaustive()
    }
}

impl RedlockLock {
    /// A builder over the servers at `urls` (each as for
    /// [`RedisLock::builder`](super::RedisLock::builder)).
    pub fn builder<S: Into<String>>(urls: impl IntoIterator<Item = S>) -> RedlockBuilder {
        RedlockBuilder {
            urls: urls.into_iter().map(Into::into).collect(),
            settings: Settings::default(),
            origin: None,
        }
    }

    /// Parses `redlock://[user:password@]h1:p1,h2:p2,h3:p3[/db]` into a builder: the user,
    /// password and database (and a `#fragment`) apply to every server. The server list
    /// ends at the first `/`, `?` or `#`, as the `url` crate ends a host. The query parameter
    /// [`TTL_QUERY_PARAM`](super::TTL_QUERY_PARAM) (`?ttl_ms=1000`) sets the lease TTL.
    /// `redlocks://…` reaches every server over TLS (as `rediss://`; feature `redis-tls`),
    /// and the other query parameters, such as [`TLS_CA_PARAM`](super::TLS_CA_PARAM), apply
    /// to every server.
    ///
    /// Errors about a server's URL, here or at [`build`](RedlockBuilder::build), quote
    /// this URL as given (redacted, [`redact_url`](crate::spec::redact_url)), never the
    /// per-server URLs made from it, and name the server as written where only its part
    /// is wrong (`at its server "h2:99999"`).
    ///
    /// # Errors
    /// [`Error::Config`] when the text is not such a URL, a server is empty, a `,` follows
    /// the first `/` (a database per server, `redlock://h1/1,h2/2`: the database goes
    /// once, after the last server), `ttl_ms` is not a whole number, is given twice or is
    /// where the redacted URL does not show it (as
    /// [`RedisLock::builder_from_url`](super::RedisLock::builder_from_url) refuses it),
    /// a query parameter is one that nothing reads or another one is given twice (see
    /// [Specs](super#specs)), or its user info is read differently by drivers (as
    /// [`RedisLockBuilder::build`](super::RedisLockBuilder::build) refuses it).
    pub fn builder_from_url(url: &str) -> Result<RedlockBuilder, StrategyError> {
        let spec = url;
        let (url, ttl) = super::take_ttl_ms(url)?;
        let url = url.as_str();
        let shown = crate::spec::redact_url(url);
        let parts = url.split_once("://").and_then(|(scheme, rest)| {
            let scheme = scheme.to_ascii_lowercase();
            let server = match scheme.as_str() {
                "redlock" => "redis",
                "redlocks" => "rediss",
                _ => return None,
            };
            Some((server, rest))
        });
        let Some((server_scheme, rest)) = parts else {
            return Err(Error::Config(format!(
                "{shown:?} is not a redlock://h1:p1,h2:p2,h3:p3 (or redlocks://…) URL"
            )));
        };
        // The authority ends where the `url` crate ends it, and the check read it: at the
        // first `/`, `?` or `#`. The path, query and fragment go to every server.
        let (authority, path) = match rest.find(['/', '?', '#']) {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        // A database per server (`redlock://h1/1,h2/2`): the first `/` ended the list, and
        // every server would get the database `1,h2/2`.
        let database = path
            .strip_prefix('/')
            .map(|p| p.split(['?', '#']).next().unwrap_or(p));
        if database.is_some_and(|db| db.contains(',')) {
            return Err(Error::Config(format!(
                "{:?} has a `/` before its last server: the list of servers ends at the first `/`, and the database goes once, after the last server, for every server (redlock://host1[:port],host2[:port],host3[:port][/db])",
                crate::spec::redact_url(spec)
            )));
        }
        let (userinfo, hosts) = match authority.rsplit_once('@') {
            Some((u, h)) => (format!("{u}@"), h),
            None => (String::new(), authority),
        };
        // Where each server starts in `url`, to quote it only where redaction shows it.
        let mut at = url.len() - rest.len() + authority.len() - hosts.len();
        let mut written = Vec::new();
        let urls: Vec<String> = hosts
            .split(',')
            .map(|h| {
                let host = h.trim();
                let start = at + h.len() - h.trim_start().len();
                at += h.len() + 1;
                if host.is_empty() {
                    return Err(Error::Config(format!("{shown:?} has an empty server")));
                }
                let hidden = crate::spec::hides(url, start..start + host.len());
                written.push((!hidden).then(|| host.to_owned()));
                Ok(format!("{server_scheme}://{userinfo}{host}{path}"))
            })
            .collect::<Result<_, _>>()?;
        let mut builder = Self::builder(urls);
        builder.origin = Some(Origin {
            shown: crate::spec::redact_url(spec),
            hosts: written,
        });
        Ok(match ttl {
            Some(ttl) => builder.ttl(ttl),
            None => builder,
        })
    }

    /// Pings every server; returns how many answered.
    ///
    /// # Errors
    /// [`Error::Unavailable`] when fewer than a quorum answer, naming every server that
    /// did not and why; [`Error::Config`] when two entries reached one server (one
    /// `run_id`; see [`RedlockLock`]).
    pub fn ping_all(&self) -> Result<usize, StrategyError> {
        let mut answered = 0;
        let mut failed = Vec::new();
        for n in self.inner.nodes.iter() {
            match n.ping() {
                Ok(_) => answered += 1,
                Err(e) => failed.push((n, e)),
            }
        }
        self.check_distinct()?;
        if answered < self.inner.quorum {
            return Err(self.out_of_reach(failed));
        }
        Ok(answered)
    }

    /// [`Error::Unavailable`] for a round in which the servers of `failed` (with their
    /// errors) left fewer than a quorum answering.
    fn out_of_reach(&self, failed: Vec<(&Arc<Node>, StrategyError)>) -> StrategyError {
        Error::unavailable(OutOfReach {
            servers: self.inner.nodes.len(),
            quorum: self.inner.quorum,
            failed: failed
                .into_iter()
                .map(|(n, e)| (n.display().to_owned(), reason(&e)))
                .collect(),
        })
    }

    /// Refuses two entries whose servers said one `run_id`: one server under two names.
    fn check_distinct(&self) -> Result<(), StrategyError> {
        let nodes = &self.inner.nodes;
        for (i, a) in nodes.iter().enumerate() {
            let Some(id) = a.run_id() else { continue };
            if let Some(b) = nodes[i + 1..].iter().find(|b| b.run_id() == Some(id)) {
                return Err(Error::Config(format!(
                    "Redlock servers {} and {} are one Redis server (the same run_id): it \
                     would count twice towards the quorum; list each server once",
                    a.display(),
                    b.display()
                )));
            }
        }
        Ok(())
    }

    /// How many servers must grant a lease.
    pub fn quorum(&self) -> usize {
        self.inner.quorum
    }

    /// How many servers there are.
    pub fn servers(&self) -> usize {
        self.inner.nodes.len()
    }

    /// Releases the lease on every server, each call cut to `limit` (at least
    /// [`node::MIN_IO_TIMEOUT`]); a server that did not answer has it expire at its TTL.
    fn release_all(&self, keys: &Keys, token: &str, limit: Option<Instant>) -> usize {
        let mut released = 0;
        for n in self.inner.nodes.iter() {
            if let Ok(true) = n.release(keys, token, limit) {
                released += 1;
            }
        }
        released
    }
}

impl Lock for RedlockLock {
    type Lease = RedlockLease;

    fn capabilities(&self) -> Capabilities {
        Capabilities::new(Scope::Hosts, HolderDeath::LeaseExpires)
            .fences(false)
            .lease_can_expire(true)
    }

    fn backend_id(&self) -> &str {
        &self.inner.backend_id
    }

    fn acquire(
        &self,
        name: &LockName,
        deadline: Option<Instant>,
    ) -> Result<RedlockLease, StrategyError> {
        let inner = &*self.inner;
        let keys = Keys::new(&inner.settings.prefix, name.bytes());
        let ttl = inner.settings.ttl;
        let started = Instant::now();
        loop {
            let token = new_token();
            let start = Instant::now();
            let mut won = 0;
            let mut answered = 0;
            let mut failed = Vec::new();
            for n in inner.nodes.iter() {
                // Each server's answer is awaited until the caller's deadline at most (but
                // never less than `MIN_IO_TIMEOUT`), as a single Redis lock's is.
                match n.try_acquire(&keys, &token, ttl, false, None, deadline) {
                    Ok(Attempt::Acquired(_)) => {
                        won += 1;
                        answered += 1;
                    }
                    Ok(Attempt::Held(_)) => answered += 1,
                    Err(e) => failed.push((n, e)),
                }
            }
            let validity = ttl.checked_sub(start.elapsed() + clock_drift(ttl));
            // The round reached each server (its first connection reads the `run_id`).
            if let Err(e) = self.check_distinct() {
                self.release_all(&keys, &token, deadline);
                return Err(e);
            }
            if let Some(validity) = validity.filter(|_| won >= inner.quorum) {
                let state = LeaseState::new(keys, token, start + validity);
                if inner.settings.renewal {
                    inner.watchdog.watch(&state, start);
                }
                return Ok(RedlockLease {
                    lock: self.clone(),
                    state,
                });
            }
            self.release_all(&keys, &token, deadline);
            if answered < inner.quorum {
                return Err(self.out_of_reach(failed));
            }
            let now = Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                return Err(Error::Timeout {
                    waited: started.elapsed(),
                });
            }
            let span = (REDLOCK_RETRY_MAX - REDLOCK_RETRY_MIN).as_micros() as u64;
            let mut delay = REDLOCK_RETRY_MIN + Duration::from_micros(fastrand::u64(0..=span));
            if let Some(d) = deadline {
                delay = delay.min(d - now);
            }
            std::thread::sleep(delay);
        }
    }
}

/// Fewer than a quorum of the servers answered as asked: every one that did not (out of
/// reach, or answering with an error), and why.
#[derive(Debug)]
struct OutOfReach {
    servers: usize,
    quorum: usize,
    /// Each server that failed (as [`Node::display`] shows it, no password) and why.
    failed: Vec<(String, String)>,
}

impl fmt::Display for OutOfReach {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} of {} Redis servers failed (quorum {})",
            self.failed.len(),
            self.servers,
            self.quorum
        )?;
        for (i, (server, reason)) in self.failed.iter().enumerate() {
            let sep = if i == 0 { ": " } else { "; " };
            write!(f, "{sep}{server}: {reason}")?;
        }
        Ok(())
    }
}

/// No source: the display says every server's reason, and no one of them is the cause
/// (a printer of the chain would single one out, and say it twice).
impl std::error::Error for OutOfReach {}

/// Why one server's call failed, without the server's name, which the list says.
fn reason(error: &StrategyError) -> String {
    match error {
        Error::Unavailable(e) => match e.downcast_ref::<ServerError>() {
            Some(e) => e.reason().to_string(),
            None => e.to_string(),
        },
        other => other.to_string(),
    }
}

/// A lease on a [`RedlockLock`] name: held on a quorum of servers, renewed by the
/// watchdog. Released on every server on [`Lease::release`] or drop.
#[must_use = "the lock is released as soon as the lease is dropped"]
pub struct RedlockLease {
    lock: RedlockLock,
    state: Arc<LeaseState>,
}

impl fmt::Debug for RedlockLease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedlockLease")
            .field("renewals", &self.state.renewals())
            .finish_non_exhaustive()
    }
}

impl RedlockLease {
    fn release_inner(&self) -> Result<(), StrategyError> {
        if !self.state.mark_released() {
            return Ok(());
        }
        self.lock.inner.watchdog.unwatch(&self.state);
        let released = self
            .lock
            .release_all(&self.state.keys, &self.state.token, None);
        if released >= self.lock.inner.quorum {
            Ok(())
        } else {
            Err(Error::LeaseLost)
        }
    }
}

impl Lease for RedlockLease {
    fn check(&self) -> Result<(), StrategyError> {
        self.state.check()
    }

    fn release(self) -> Result<(), StrategyError> {
        self.release_inner()
    }
}

impl Drop for RedlockLease {
    fn drop(&mut self) {
        let _ = self.release_inner();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_redlock_urls() {
        let b = RedlockLock::builder_from_url("redlock://:pw@a:1,b:2,c:3/2").unwrap();
        assert_eq!(
            b.urls,
            [
                "redis://:pw@a:1/2",
                "redis://:pw@b:2/2",
                "redis://:pw@c:3/2"
            ]
        );
        assert!(!format!("{b:?}").contains("pw"));
        let lock = b.build().unwrap();
        assert_eq!((lock.servers(), lock.quorum()), (3, 2));
        // redlocks://: every server over TLS, each with the query's TLS parameters.
        let tls = RedlockLock::builder_from_url("REDLOCKS://a:1,b:2/0?tls_ca=/ca.pem").unwrap();
        assert_eq!(
            tls.urls,
            [
                "rediss://a:1/0?tls_ca=/ca.pem",
                "rediss://b:2/0?tls_ca=/ca.pem"
            ]
        );
        assert!(RedlockLock::builder_from_url("redis://a:1").is_err());
        assert!(RedlockLock::builder_from_url("redlock://a:1,,b:2").is_err());
        // A `#` ends the server list, as the `url` crate ends a host: the fragment goes to
        // every server, and what follows it is no server.
        let b = RedlockLock::builder_from_url("redlock://a:1,b:2#x").unwrap();
        assert_eq!(b.urls, ["redis://a:1#x", "redis://b:2#x"]);
        let b = RedlockLock::builder_from_url("redlock://a:1#x,b:2").unwrap();
        assert_eq!(b.urls, ["redis://a:1#x,b:2"]);
        let dup = RedlockLock::builder_from_url("redlock://a:1,a:1,b:2").unwrap();
        assert!(matches!(dup.build(), Err(Error::Config(_))));
        let none: [&str; 0] = [];
        assert!(matches!(
            RedlockLock::builder(none).build(),
            Err(Error::Config(_))
        ));
    }

    /// A raw `@` in the shared password, then a `#`: each server's URL would read a piece
    /// of the password as its host (the same for all, so "listed twice" named it).
    #[test]
    fn a_password_with_a_raw_at_is_refused_without_showing_it() {
        // Refused as the URL is read (before its `ttl_ms`), or as each server's is.
        let error = RedlockLock::builder_from_url("redlock://:P@ssw0rd#1@h1:6379,h2:6379,h3:6379")
            .and_then(RedlockBuilder::build)
            .unwrap_err();
        let shown = error.to_string();
        assert!(matches!(error, Error::Config(_)), "{shown}");
        assert!(shown.contains("%40"), "{shown}");
        assert!(
            !shown.contains("ssw0rd") && !shown.contains("P@"),
            "{shown}"
        );
        // A password that starts with `//`: each server's URL would be the host `app`.
        let error = RedlockLock::builder_from_url("redlock://app://Xy:7k9@h1,h2,h3")
            .and_then(RedlockBuilder::build)
            .unwrap_err();
        let shown = error.to_string();
        assert!(matches!(error, Error::Config(_)), "{shown}");
        assert!(shown.contains("redlock://app:***@h1,h2,h3"), "{shown}");
        assert!(!shown.contains("Xy") && !shown.contains("7k9"), "{shown}");
        // Percent-encoded, it is one password for three servers.
        let b = RedlockLock::builder_from_url("redlock://:P%40ssw0rd%231@h1:6379,h2:6379,h3:6379")
            .unwrap();
        assert_eq!(b.build().unwrap().servers(), 3);
        // A raw `@` with no `#`, `/` or `?` after it in the password: each server's URL
        // ends its user info at the last `@` before the host, as written.
        let b = RedlockLock::builder_from_url("redlock://:P@ss@h1,h2,h3").unwrap();
        assert_eq!(b.build().unwrap().servers(), 3);
    }

    /// A port on which nothing listens (as long as no one else takes it).
    /// `N` distinct ports nothing listens on: bound together, so the OS cannot hand out
    /// one twice, then closed.
    fn closed_ports<const N: usize>() -> [u16; N] {
        let listeners: Vec<_> = (0..N)
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
            .collect();
        std::array::from_fn(|i| listeners[i].local_addr().unwrap().port())
    }

    fn config_text(result: Result<RedlockLock, StrategyError>) -> String {
        match result {
            Err(Error::Config(text)) => text,
            other => panic!("expected a config error, got {other:?}"),
        }
    }

    #[test]
    fn out_of_reach_says_every_server_and_why() {
        let error = OutOfReach {
            servers: 3,
            quorum: 2,
            failed: vec![
                (
                    "redis://h1:6379/0".into(),
                    "Connection refused (os error 111)".into(),
                ),
                (
                    "redis://h2:6379/0".into(),
                    "no answer within 400ms while connecting".into(),
                ),
            ],
        };
        assert_eq!(
            error.to_string(),
            "2 of 3 Redis servers failed (quorum 2): \
             redis://h1:6379/0: Connection refused (os error 111); \
             redis://h2:6379/0: no answer within 400ms while connecting"
        );
        assert!(std::error::Error::source(&error).is_none());
        let one = OutOfReach {
            servers: 1,
            quorum: 1,
            failed: vec![("redis://h1:6379/0".into(), "refused".into())],
        };
        assert_eq!(
            one.to_string(),
            "1 of 1 Redis servers failed (quorum 1): redis://h1:6379/0: refused"
        );
    }

    /// Every server that is down is named, with its reason, and the chain says it once.
    #[test]
    fn ping_all_and_acquire_name_every_server_out_of_reach() {
        let ports: [u16; 3] = closed_ports();
        let spec = format!(
            "redlock://:s3cret@127.0.0.1:{},127.0.0.1:{},127.0.0.1:{}/0",
            ports[0], ports[1], ports[2]
        );
        let lock = RedlockLock::builder_from_url(&spec)
            .unwrap()
            .build()
            .unwrap();
        let name = LockName::new("out-of-reach", turnstile_core::Key::new("k").unwrap());
        let acquired = lock
            .acquire(&name, Some(Instant::now() + Duration::from_secs(5)))
            .map(drop);
        for result in [lock.ping_all().map(drop), acquired] {
            let Err(error @ Error::Unavailable(_)) = result else {
                panic!("expected unavailable, got {result:?}");
            };
            let text = error.to_string();
            let servers: Vec<String> = ports
                .iter()
                .map(|p| format!("redis://127.0.0.1:{p}/0: Connection refused"))
                .collect();
            assert!(
                text.starts_with(&format!(
                    "backend unavailable: 3 of 3 Redis servers failed (quorum 2): {}",
                    servers[0]
                )),
                "{text}"
            );
            for server in &servers {
                assert_eq!(text.matches(server.as_str()).count(), 1, "{text}");
            }
            assert!(!text.contains("s3cret"), "{text}");
            // One cause, which the display already says in full, and nothing below it.
            let source = std::error::Error::source(&error).unwrap();
            assert!(text.ends_with(&source.to_string()), "{text}");
            assert!(source.source().is_none());
        }
    }

    /// The database goes once, after the last server: `/` ends the server list, so a
    /// per-server `/db` made every server's URL read the rest of the list as a database,
    /// and the error quoted that URL, which the user never wrote.
    #[test]
    fn a_database_per_server_is_refused_quoting_the_url_as_written() {
        for (url, shown) in [
            ("redlock://h1,h2/1,h3/2", "\"redlock://h1,h2/1,h3/2\""),
            ("redlock://h1/1,h2,h3", "\"redlock://h1/1,h2,h3\""),
            (
                "redlock://u:s3cret@h1:6379/0,h2:6379/0,h3:6379/0?ttl_ms=500",
                "\"redlock://u:***@h1:6379/0,h2:6379/0,h3:6379/0?ttl_ms=500\"",
            ),
        ] {
            let text =
                config_text(RedlockLock::builder_from_url(url).and_then(RedlockBuilder::build));
            assert_eq!(
                text,
                format!(
                    "{shown} has a `/` before its last server: the list of servers ends at \
                     the first `/`, and the database goes once, after the last server, for \
                     every server (redlock://host1[:port],host2[:port],host3[:port][/db])"
                )
            );
        }
        // A `,` in the query or the fragment is no server.
        for url in [
            "redlock://h1,h2,h3/1",
            "redlock://h1,h2/1#a,b",
            "redlock://h1,h2/1?ttl_ms=9,",
        ] {
            let text = match RedlockLock::builder_from_url(url).and_then(RedlockBuilder::build) {
                Ok(_) => continue,
                Err(e) => e.to_string(),
            };
            assert!(!text.contains("before its last server"), "{url}: {text}");
        }
    }

    /// A server URL made from a `redlock://` URL is never quoted: the URL as written is,
    /// with the server named where only it is wrong.
    #[test]
    fn errors_quote_the_redlock_url_not_the_server_urls_made_from_it() {
        let build = |url: &str| {
            config_text(RedlockLock::builder_from_url(url).and_then(RedlockBuilder::build))
        };
        // What every server's URL shares: no server named.
        let text = build("redlock://:s3cret@h1,h2,h3/x");
        assert!(
            text.starts_with("cannot parse Redis URL \"redlock://:***@h1,h2,h3/x\": "),
            "{text}"
        );
        // One server's own text: named as written.
        let text = build("redlock://:s3cret@h1,h2:99999,h3/0");
        assert!(
            text.starts_with(
                "cannot parse Redis URL \"redlock://:***@h1,h2:99999,h3/0\" at its server \"h2:99999\": "
            ),
            "{text}"
        );
        assert_eq!(
            build("redlock://a:1,a:1,b:2"),
            "\"redlock://a:1,a:1,b:2\" lists the server \"a:1\" twice; it would count twice \
             towards the quorum"
        );
        assert_eq!(
            build("redlock://:s3cret@a,b,a:6379"),
            "\"redlock://:***@a,b,a:6379\" lists one server twice, as its server \"a\" and \
             its server \"a:6379\" (both redis://a:6379/0); it would count twice towards the \
             quorum"
        );
        for text in [
            build("redlock://:s3cret@h1,h2,h3/x"),
            build("redlock://:s3cret@h1,h2:99999,h3/0"),
        ] {
            assert!(
                !text.contains("redis://") && !text.contains("s3cret"),
                "{text}"
            );
        }
        // Server URLs given one by one are quoted as given.
        let text =
            config_text(RedlockLock::builder(["redis://h1/0", "redis://h2:99999/0"]).build());
        assert!(text.contains("\"redis://h2:99999/0\""), "{text}");
        let text = config_text(RedlockLock::builder(["redis://a:1/0", "redis://a:1/0"]).build());
        assert_eq!(text, "Redlock server redis://a:1/0 is listed twice");
    }
}
