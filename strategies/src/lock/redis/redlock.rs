//! Redlock: a lease on a majority of N independent Redis servers.
//!
//! The parameters follow redsync (the Go reference implementation): TTL 8 s, clock drift
//! 1 % of the TTL plus 2 ms, a per-server timeout of 5 % of the TTL, and a random retry
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

use super::node::{self, Attempt, Keys, Node};
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
    /// [`RedisLockBuilder::build`](super::RedisLockBuilder::build)).
    pub fn build(self) -> Result<RedlockLock, StrategyError> {
        self.settings.check()?;
        if self.urls.is_empty() {
            return Err(Error::Config("Redlock needs at least one server".into()));
        }
        // redsync's timeout factor: each server gets 5 % of the TTL to answer.
        let per_server = (self.settings.ttl / 20).max(node::MIN_IO_TIMEOUT);
        let mut nodes = Vec::with_capacity(self.urls.len());
        for url in &self.urls {
            let (connector, display) = node::parse_url(url)?;
            if nodes.iter().any(|n: &Arc<Node>| n.display() == display) {
                return Err(Error::Config(format!(
                    "Redlock server {display} is listed twice"
                )));
            }
            nodes.push(Arc::new(Node::new(
                connector,
                display,
                Vec::new(),
                self.settings.connect_timeout.min(per_server),
                self.settings.response_timeout.min(per_server),
            )));
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
    /// # Errors
    /// [`Error::Config`] when the text is not such a URL, `ttl_ms` is not a whole
    /// number, is given twice or is where the redacted URL does not show it (as
    /// [`RedisLock::builder_from_url`](super::RedisLock::builder_from_url) refuses it),
    /// a query parameter is one that nothing reads or another one is given twice (see
    /// [Specs](super#specs)), or its user info is read differently by drivers (as
    /// [`RedisLockBuilder::build`](super::RedisLockBuilder::build) refuses it).
    pub fn builder_from_url(url: &str) -> Result<RedlockBuilder, StrategyError> {
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
        let (userinfo, hosts) = match authority.rsplit_once('@') {
            Some((u, h)) => (format!("{u}@"), h),
            None => (String::new(), authority),
        };
        let urls: Vec<String> = hosts
            .split(',')
            .map(|h| {
                if h.trim().is_empty() {
                    Err(Error::Config(format!("{shown:?} has an empty server")))
                } else {
                    Ok(format!("{server_scheme}://{userinfo}{}{path}", h.trim()))
                }
            })
            .collect::<Result<_, _>>()?;
        let builder = Self::builder(urls);
        Ok(match ttl {
            Some(ttl) => builder.ttl(ttl),
            None => builder,
        })
    }

    /// Pings every server; returns how many answered.
    ///
    /// # Errors
    /// [`Error::Unavailable`] when fewer than a quorum answer (with the last failure).
    pub fn ping_all(&self) -> Result<usize, StrategyError> {
        let mut answered = 0;
        let mut last = None;
        for n in self.inner.nodes.iter() {
            match n.ping() {
                Ok(_) => answered += 1,
                Err(e) => last = Some(e),
            }
        }
        match last {
            Some(e) if answered < self.inner.quorum => Err(e),
            _ => Ok(answered),
        }
    }

    /// How many servers must grant a lease.
    pub fn quorum(&self) -> usize {
        self.inner.quorum
    }

    /// How many servers there are.
    pub fn servers(&self) -> usize {
        self.inner.nodes.len()
    }

    fn release_all(&self, keys: &Keys, token: &str) -> usize {
        let mut released = 0;
        for n in self.inner.nodes.iter() {
            if let Ok(true) = n.release(keys, token, None) {
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
            let mut last_error = None;
            for n in inner.nodes.iter() {
                match n.try_acquire(&keys, &token, ttl, false, None, None) {
                    Ok(Attempt::Acquired(_)) => {
                        won += 1;
                        answered += 1;
                    }
                    Ok(Attempt::Held(_)) => answered += 1,
                    Err(e) => last_error = Some(e),
                }
            }
            let validity = ttl.checked_sub(start.elapsed() + clock_drift(ttl));
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
            self.release_all(&keys, &token);
            if answered < inner.quorum {
                let detail = last_error.map_or_else(String::new, |e| format!("; last error: {e}"));
                return Err(Error::unavailable(format!(
                    "only {answered} of {} Redlock servers answered, {} needed{detail}",
                    inner.nodes.len(),
                    inner.quorum
                )));
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
        let released = self.lock.release_all(&self.state.keys, &self.state.token);
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
}
