//! The spec registry: turns a strategy spec string (`"queue"`, `"mutex"`,
//! `"file-lock:/var/lock/app"`, `"redis://host:6379"`, …) into a boxed strategy.
//!
//! The CLI, the harness's child processes and its negative controls all go through one
//! registry, so a spec means the same thing everywhere. Applications can register their
//! own strategies next to the built-in ones.
//!
//! ```
//! use turnstile::spec::{Registry, Setup};
//! use turnstile::sqlite::Sqlite;
//! use turnstile::{Key, Wait};
//!
//! let dir = tempfile::tempdir()?;
//! let setup = Setup::new(Sqlite::new(dir.path().join("app.db")));
//! let strategy = Registry::builtin().open("mutex", &setup)?;
//! let n: i64 = strategy.run_as(&[Key::whole()], Wait::Default, |db| {
//!     db.query_row("SELECT 40 + 2", [], |r| r.get(0))
//! })?;
//! assert_eq!(n, 42);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use turnstile_core::{BoxSerializer, Connect, Error, StrategyError};

use crate::locked::TxMode;

/// A parsed spec: a strategy name and an optional argument.
///
/// `name` and `name:arg` give the name and the argument; a URL (`scheme://…`) gives its
/// scheme as the name and the whole URL as the argument.
#[derive(Clone, PartialEq, Eq)]
pub struct Spec {
    name: String,
    arg: Option<String>,
}

impl Spec {
    /// Parses a spec.
    ///
    /// # Errors
    /// [`Error::Config`] for an empty spec or name (the message shows the spec with its
    /// password masked, as [`redact_url`] does).
    pub fn parse(text: &str) -> Result<Self, StrategyError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(Error::Config("empty strategy spec".into()));
        }
        let (name, arg) = if let Some((scheme, rest)) = text.split_once("://") {
            // Schemes are case-insensitive (RFC 3986), drivers' parsers not all: a
            // driver reads `Postgres://…` as a `key=value` string.
            (
                scheme,
                Some(format!("{}://{rest}", scheme.to_ascii_lowercase())),
            )
        } else if let Some((name, arg)) = text.split_once(':') {
            (name, Some(arg.to_owned()))
        } else {
            (text, None)
        };
        if name.is_empty() {
            return Err(Error::Config(format!(
                "strategy spec {:?} has no name",
                redact_url(text)
            )));
        }
        Ok(Spec {
            name: name.to_ascii_lowercase(),
            arg,
        })
    }

    /// The strategy name (a URL's scheme), lower-case.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The argument after `name:`, or the whole URL (its scheme in lower case).
    pub fn arg(&self) -> Option<&str> {
        self.arg.as_deref()
    }

    /// Refuses an argument, for strategies that take none.
    ///
    /// # Errors
    /// [`Error::Config`] when the spec has an argument (shown as [`redact_url`] shows the
    /// whole spec: `mutex:pw@h` may be the user `mutex` with the password `pw`, so the
    /// argument shows as `***@h`).
    pub fn expect_no_arg(&self) -> Result<(), StrategyError> {
        if self.arg.is_none() {
            return Ok(());
        }
        // Redacted as the whole spec: cut from it, the argument may read otherwise.
        let whole = redact_url(&self.whole());
        let shown = match whole.strip_prefix(&format!("{}:", self.name)) {
            Some(arg) if !self.is_a_url() => arg,
            _ => &whole,
        };
        Err(Error::Config(format!(
            "strategy {:?} takes no argument (got {shown:?})",
            self.name(),
        )))
    }

    /// Whether the spec is a URL (`scheme://…`), its argument the whole text. (Only a URL's
    /// argument holds a `://`: text with one is read as a URL.)
    fn is_a_url(&self) -> bool {
        self.arg.as_deref().is_some_and(|arg| arg.contains("://"))
    }

    /// The spec as parsed: the URL, or `name:arg`, or the name.
    fn whole(&self) -> String {
        match &self.arg {
            Some(arg) if self.is_a_url() => arg.clone(),
            Some(arg) => format!("{}:{arg}", self.name),
            None => self.name.clone(),
        }
    }
}

impl fmt::Debug for Spec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A URL argument may carry a password, and the cut between name and argument may
        // fall inside it: the spec is redacted whole.
        f.debug_struct("Spec")
            .field("spec", &redact_url(&self.whole()))
            .finish()
    }
}

/// `url` with every password in it replaced by `***`, for messages and `Debug` output:
///
/// - in each URL in it (wherever it starts: `pg-xact:postgres://…`,
///   `DATABASE_URL=postgres://…`), the password of `scheme://user:password@host…`, and the
///   value of each query parameter named `pass` or `password` (or ending in `password`, as
///   `sslpassword`), as in `redis+unix:///run/redis.sock?pass=…` or
///   `postgres://host/db?password=…`, whatever its case and however its name is
///   percent-encoded (`pass%77ord`: drivers decode it);
/// - in a libpq `key=value` connection string (`host=db password='my secret'
///   port=5432`), the `password` value, quoted or not, also as a spec's argument
///   (`postgres:host=db password=…`);
/// - in other text without `://` (a mistyped URL, `mysq:/u:pw@h/db`, a spec,
///   `postgres:u:pw@h/db`, or a spec's argument, `u:pw@h/db`), and in text with one
///   where more than a name precedes the first one's scheme (`mysql:/u:pw@h/db?x=a://b`
///   shows as `mysql:***@h/db?x=a://b`), or a name precedes a scheme that no driver of
///   turnstile's reads (`u:a://b@h`, which may be the user `u` with the password `a://b`,
///   shows as `u:***@h`; `pg-xact:postgres://…` is only a name and a URL),
///   everything from its first `:` (not a port's) to the `@` that ends what looks like
///   user info (but a file lock's directory, `file-lock:/srv/a@b`, is kept), and the same
///   query parameters.
///
/// Where drivers read a text differently (which `@` ends the user info; a raw `/`, `?`,
/// `#` or `@` in a password), each reading is masked. A password starts at the first
/// `:`, whatever comes before or after it, as the PostgreSQL driver reads it
/// (`postgres://app://Xy:7k9@db` is the user `app` with the password `//Xy:7k9`), and as
/// the `url` crate reads user info with no `/`, `?` or `#` (`redis://u[:p]@h`); a URL in
/// a path or query is masked from its scheme's `:` (`redis://h/0?next=redis://u:pw@h2`
/// shows as `redis://h/0?next=redis:***@h2`). An `@` in the value of a query parameter
/// that the scheme's driver knows and that may hold one (PostgreSQL's `user`,
/// `password`, `dbname`, `options`, `application_name`, `host`; MySQL's `user`,
/// `password`, `socket`, `db_name`; Redis's `tls_ca`, `tls_cert`, `tls_key`, and over a
/// Unix socket `user`, `pass`; for other schemes, any driver's parameter) ends no user
/// info after a host and port (`mysql://h:3306/db?user=a@b`), nor after user info and a
/// path when no `/` follows it in the value (`mysql://u:pw@h/db?user=a@b`). Otherwise it
/// may, and what precedes it is masked from the first `:`: with a `/` after it, which
/// may start a host's path (`postgres://u:pw@h/db?application_name=deploy@ci/job` shows
/// as `postgres://u:***@ci/job`, and `mysql://u:pw@h/db?user=a@b/c` as
/// `mysql://u:***@b/c`), or in a query right after the host (`redis://u:pw@h?tls_ca=a@b`
/// shows as `redis://u:***@b`). Masking errs there: the check that refuses URLs whose
/// user info drivers read differently takes such an `@` for the value's, whatever
/// follows it, as no user info holds `?user=` or `?tls_ca=`. Elsewhere an `@` may end
/// it, and what precedes it from the first `:` is masked, digits the `url` crate reads as
/// a port included (`redis://u:12?x=1@h/0` shows as `redis://u:***@h/0`). A `#` does not
/// end a query: the PostgreSQL driver reads it as part of a value. After a raw `&` in a
/// query's password, what follows is masked up to the next parameter a driver knows
/// (`sslmode=`, `db=`, …). A `password=` or `pass=` anywhere is masked, whatever unclosed
/// quote comes before it. Text longer than 4096 bytes is not shown at all, only its
/// length.
///
/// It errs on the side of masking: text that only looks like a password goes too.
///
/// ```
/// use turnstile::spec::redact_url;
///
/// assert_eq!(redact_url("redis://u:secret@h:6379/0"), "redis://u:***@h:6379/0");
/// assert_eq!(
///     redact_url("redis+unix:///tmp/r.sock?db=2&pass=secret"),
///     "redis+unix:///tmp/r.sock?db=2&pass=***"
/// );
/// assert_eq!(
///     redact_url("host=db password='my secret' port=5432"),
///     "host=db password=*** port=5432"
/// );
/// ```
pub fn redact_url(url: &str) -> String {
    match url_masks(url) {
        Some(masks) => masked(url, masks),
        None => format!("[{} bytes, not shown]", url.len()),
    }
}

/// Whether [`redact_url`] hides any byte of `range` of `url` (for text too long to read,
/// all of it): what is there may be a piece of a password, which no message may show,
/// nor anything read from it (a value turnstile takes from the query, or its name).
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
pub(crate) fn hides(url: &str, range: std::ops::Range<usize>) -> bool {
    url_masks(url).is_none_or(|masks| {
        masks
            .iter()
            .any(|m| !m.is_empty() && m.start < range.end && range.start < m.end)
    })
}

/// `message` (a driver's error about `url`, which may quote a piece of it), safe to show:
/// a piece it quotes (`` `…' ``, `` `…` `` or `"…"`) is kept only where the URL as
/// [`redact_url`] shows it holds that text (as it is or decoded, `+` a blank and `%XX`
/// its byte), and is `***` otherwise, since the driver may have cut the URL elsewhere than
/// [`redact_url`] did; and every piece of what [`redact_url`] masks that shows outside
/// quotes is `***` too: each secret whole, and split at `&`, `=`, `/`, `?`, `#`, `@` and
/// `:` (where a driver may have cut it), as it is and decoded. For a URL too long to
/// read, the message is not shown at all.
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
pub(crate) fn redact_message(url: &str, message: &str) -> String {
    redact_message_refusing(url, &[], message)
}

/// [`redact_url`] for a URL whose driver refused the query parameters (or libpq
/// keywords) named `refused` (an unknown option, or a value it does not take): their
/// values are masked too, as they may be secrets under a misspelt name
/// (`?passwd=…`, which is no name [`redact_url`] masks). Their names stay shown, also
/// where a query's password masks what follows it (a raw `&` in a password:
/// `?password=…&sslmod=…`), when the name reads as an option's (`sslmod`: ASCII lower-case
/// letters and `_`, which is what every option of turnstile's drivers is made of); a
/// name with anything else in it (`k9zq`, `Zq`) may be a piece of the password, and is
/// not shown.
#[cfg_attr(not(any(feature = "mysql", feature = "postgres")), allow(dead_code))]
pub(crate) fn redact_url_refusing(url: &str, refused: &[&str]) -> String {
    match refused_masks(url, refused) {
        Some(masks) => masked(url, masks),
        None => format!("[{} bytes, not shown]", url.len()),
    }
}

/// [`redact_message`] for a URL whose driver refused the parameters named `refused`:
/// what [`redact_url_refusing`] masks is masked in the message too, so the driver's
/// quote of a refused value (MySQL's ``Invalid value `…' for URL parameter `…'``) is
/// `***`, and a refused name it shows is kept.
#[cfg_attr(
    not(any(feature = "mysql", feature = "postgres", feature = "redis")),
    allow(dead_code)
)]
pub(crate) fn redact_message_refusing(url: &str, refused: &[&str], message: &str) -> String {
    let Some(masks) = refused_masks(url, refused) else {
        return "[driver message not shown]".to_owned();
    };
    let shown = masked(url, masks.clone());
    let decoded = percent_decoded(&shown.replace('+', " "));
    let out = redact_quoted(message, |piece| {
        shown.contains(piece) || decoded.contains(piece)
    });
    without_secrets(url, &masks, &out)
}

/// [`url_masks`], with the value of every parameter named in `refused` masked, and the
/// name of each (with the `=` after it) unmasked where it reads as an option's.
fn refused_masks(url: &str, refused: &[&str]) -> Option<Vec<std::ops::Range<usize>>> {
    let mut masks = url_masks(url)?;
    if refused.is_empty() {
        return Some(masks);
    }
    let wanted = |name: &str| {
        let name = percent_decoded(name.trim());
        refused.iter().any(|r| r.eq_ignore_ascii_case(&name))
    };
    let mut values = Vec::new();
    let mut names = Vec::new();
    // A name starts the text, or follows `?`, `&` or a blank (a libpq string), and runs
    // to `=`.
    let starts = std::iter::once(0).chain(
        url.char_indices()
            .filter(|&(_, c)| c == '?' || c == '&' || c.is_whitespace())
            .map(|(i, c)| i + c.len_utf8()),
    );
    for start in starts {
        let rest = &url[start..];
        let Some(eq) = rest
            .find(['=', '&', '?'])
            .filter(|&e| rest[e..].starts_with('='))
        else {
            continue;
        };
        let name = &rest[..eq];
        if name.is_empty() || name.contains(char::is_whitespace) || !wanted(name) {
            continue;
        }
        let value_at = start + eq + 1;
        let value = &url[value_at..];
        let len = if value.starts_with('\'') {
            value_len(value)
        } else {
            value_len(value).min(value.find('&').unwrap_or(value.len()))
        };
        values.push(value_at..value_at + len);
        if reads_as_an_option_name(name) {
            // With the `&` before it, which no password mask keeps then.
            let from = if url[..start].ends_with('&') {
                start - 1
            } else {
                start
            };
            names.push(from..value_at);
        }
    }
    for name in names {
        masks = masks
            .into_iter()
            .flat_map(|m| {
                if m.start < name.end && name.start < m.end {
                    vec![m.start..name.start.max(m.start), name.end.min(m.end)..m.end]
                } else {
                    vec![m]
                }
            })
            .filter(|m| !m.is_empty())
            .collect();
    }
    masks.extend(values.into_iter().filter(|m| !m.is_empty()));
    Some(masks)
}

/// Whether a refused parameter's name reads as an option's: ASCII lower-case letters and
/// `_`, at most 64 of them. A password's piece after a raw `&` in it most often has a
/// digit, a capital or a sign, and is then not shown.
fn reads_as_an_option_name(name: &str) -> bool {
    (2..=64).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
}

/// `text` with every piece of what `masks` mask in `url` replaced by `***` where no
/// letter or digit touches it: each secret whole, and split at `&`, `=`, `/`, `?`, `#`,
/// `@` and `:`, as it is, decoded, and as `{:?}` quotes it (a `"`, `\` or control
/// character escaped).
fn without_secrets(url: &str, masks: &[std::ops::Range<usize>], text: &str) -> String {
    // Each secret and each piece of one, longest first, so that a secret holding a
    // shorter one goes whole; each once.
    let mut secrets: std::collections::BTreeSet<(std::cmp::Reverse<usize>, String)> =
        std::collections::BTreeSet::new();
    let mut add = |secret: String| {
        if !secret.is_empty() {
            let escaped = secret.escape_debug().to_string();
            if escaped != secret {
                secrets.insert((std::cmp::Reverse(escaped.len()), escaped));
            }
            secrets.insert((std::cmp::Reverse(secret.len()), secret));
        }
    };
    for m in masks {
        let text = &url[m.clone()];
        add(text.to_owned());
        for piece in text.split(['&', '=', '/', '?', '#', '@', ':']) {
            add(piece.to_owned());
            add(percent_decoded(&piece.replace('+', " ")));
        }
    }
    let secrets = secrets.into_iter().map(|(_, secret)| secret);
    let mut out = text.to_owned();
    for secret in secrets {
        out = replace_token(&out, &secret);
    }
    out
}

/// `message` with each piece it quotes (`` `…' ``, `` `…` ``, `"…"`) that `keep` refuses
/// replaced by `***`. A piece opened by a backtick runs to the last `'` or backtick
/// before the next backtick (a quoted value may hold a `'`); an unclosed one, to the end.
fn redact_quoted(message: &str, keep: impl Fn(&str) -> bool) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(open) = rest.find(['`', '"']) {
        let quote = rest.as_bytes()[open];
        let inside = &rest[open + 1..];
        let (len, close) = if quote == b'`' {
            let within = &inside[..inside.find('`').unwrap_or(inside.len())];
            match within.rfind('\'') {
                Some(end) => (end, 1),
                // The next backtick closes it (or nothing does).
                None if within.len() < inside.len() => (within.len(), 1),
                None => (inside.len(), 0),
            }
        } else {
            inside.find('"').map_or((inside.len(), 0), |end| (end, 1))
        };
        let piece = &inside[..len];
        out.push_str(&rest[..=open]);
        out.push_str(if piece.is_empty() || keep(piece) {
            piece
        } else {
            "***"
        });
        out.push_str(&inside[len..len + close]);
        rest = &inside[len + close..];
    }
    out.push_str(rest);
    out
}

/// Whether the URL `url` (`scheme://…`) leaves it open where its user info ends, in a way
/// that makes its driver read a piece of the password as the host, port, database or a
/// parameter, which messages and identities built from the parsed URL would then show.
///
/// A reading is an `@` that may end the user info, with a password colon before it: those
/// [`redact_url`] masks (so a refusal never shows their pieces). The driver's own reading
/// is the PostgreSQL driver's for `postgres://` and `postgresql://` (the first `@`
/// anywhere; its host runs to the next `/` or `?`) and the `url` crate's for every other
/// scheme (the last `@` before the first `/`, `?` or `#`, where its host ends). The URL is
/// ambiguous when another reading ends past the driver's `@` (in what the driver reads as
/// its host, path, query or fragment) while that reading's password colon comes before the
/// end of the driver's host: `redis://:P@ss#1@h` (host `ss`), `mysql://app:P@ss/1@db/app`,
/// `mysql://app:P@ss?1@db`, `postgres://app:P@ss/1@db/app`, and also
/// `postgres://u:pw@h/my@db`, which is `postgres://app:P@ss/1@db` in form. So is a
/// password of digits and then `?`, `/` or `#` where the `url` crate reads a host and port
/// (`redis://u:12?x=1@h/0` is the host `u`, port 12), one that starts with `//`
/// (`mysql://app://Xy:7k9@db/app` is the host `app`, an empty port and the path
/// `//Xy:7k9@db/app`), and a `[` where no IPv6 address starts (`redis://u[:p]?x=1@h`).
/// Where the `url` crate reads the URL, so is a reading whose user holds a `/`, `?` or `#`
/// (`mysql://us/er:pw@h/db` is the host `us` and the database `er:pw@h`), as over
/// PostgreSQL, and any `@` past a non-empty host with no colon before it
/// (`redis://us?er@cache/0` is the host `us`; `mysql://h/my@db` may be the user `h/my` on
/// the host `db`, as `mysql://u:pw@h/my@db` is refused too, and so is `mysql://u@h/my@db`).
/// Not ambiguous:
///
/// - an `@` the driver keeps inside the user info: a raw `@` in a password that ends at
///   the last `@` before the host (`mysql://app:P@ss@db/app`, `redis://:P@ss@h:6379/0`,
///   and with a `[` in it, `redis://u[:p]@h`, the user `u[`) is read as written by the
///   `url` crate (the PostgreSQL driver reads it up to the first `@`, which is ambiguous
///   there);
/// - an `@` in the value of a query parameter that the scheme's driver knows and whose
///   value may hold one (a user, password, file or database name: PostgreSQL's `user`,
///   `password`, `dbname`, `options`, `application_name` and `host`; MySQL's `user`,
///   `password`, `socket` and `db_name`; Redis's `tls_ca`, `tls_cert` and `tls_key`, and
///   over a Unix socket `user` and `pass`), also after a host and port
///   (`mysql://h:3306/db?user=a@b`, `?application_name=deploy@ci/job`,
///   `?tls_ca=/etc/u@h/ca.pem`), and whatever follows it in the value, a `/` or another
///   `@` too (`mysql://h/db?user=a@b/c@d` is the user `a@b/c@d`): no password or user
///   holds `?tls_ca=` or `?user=`, so the `@` ends no user info; but not past a `#`
///   where the `url` crate reads the URL, whose query ends there
///   (`mysql://u:pw@h/db?user=a#x@b` is the user `a`, and `#x@b` its fragment).
///   Another driver's parameter is no exception (`redis://:P@ss?db=1@cache` would be
///   the host `ss`: `db` is a Redis parameter only over a Unix socket);
/// - without a password colon, an `@` after an empty host, as in a Unix socket's path
///   (`redis+unix:///run/u@h/redis.sock`).
///
/// Over PostgreSQL, the driver's credentials (all before the first `@`) are also
/// ambiguous when they read as a host and then a path, query or next host, as every other
/// reader (the `url` crate, libpq) takes them: a user (up to the first `:`) that holds a
/// `/` or `?` (`postgres://h/db?password=x&application_name=a@b` puts the password in the
/// user), a password that starts with digits and then `/`, `?` or `,` (a port:
/// `postgres://h:5432/db?application_name=a@b` is user `h` on host `b`), or credentials
/// that start with an IPv6 address's `[…]`. A password with a raw `/`, `?` or `#`
/// elsewhere (`postgres://u:pa?ss@h/db`, `postgres://u:se/cr#et@h/db`) is read as written
/// by that driver. A URL with more `@`s than [`redact_url`] tries is ambiguous too. Text
/// that is no `scheme://` URL (a libpq `key=value` string) is not.
#[cfg_attr(
    not(any(feature = "redis", feature = "mysql", feature = "postgres")),
    allow(dead_code)
)]
pub(crate) fn userinfo_is_ambiguous(url: &str) -> bool {
    let Some(at) = url.find("://") else {
        return false;
    };
    let scheme = &url[..at];
    let a_scheme = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'));
    if !a_scheme {
        return false;
    }
    let from = at + 3;
    let rest = &url[from..];
    if rest.matches('@').count() > MAX_READINGS {
        return true;
    }
    let postgres =
        scheme.eq_ignore_ascii_case("postgres") || scheme.eq_ignore_ascii_case("postgresql");
    let reader = match Reader::of(scheme) {
        _ if postgres => Reader::Postgres,
        // Read by the `url` crate, whatever its name ends with.
        Reader::Postgres => Reader::Other,
        reader => reader,
    };
    // The `@` the driver takes as the end of the user info, where its host ends, and its
    // query (without the `?`).
    let (driver_at, host_end, query) = if postgres {
        let driver_at = rest.find('@');
        let host = driver_at.map_or(0, |at| at + 1);
        let host_end = rest[host..]
            .find(['/', '?'])
            .map_or(rest.len(), |end| host + end);
        let query = rest[host_end..]
            .find('?')
            .map(|q| host_end + q + 1..rest.len());
        (driver_at, host_end, query)
    } else {
        let host_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let fragment = rest[host_end..]
            .find('#')
            .map_or(rest.len(), |f| host_end + f);
        let query = rest[host_end..fragment]
            .find('?')
            .map(|q| host_end + q + 1..fragment);
        (rest[..host_end].rfind('@'), host_end, query)
    };
    if postgres
        && let Some(end) = driver_at
        && credentials_read_as_a_host(&rest[..end])
    {
        return true;
    }
    // Whether the `@` at `i` is in the value of a query parameter the driver knows, one
    // that may hold an `@`.
    let in_a_known_value = |i: usize| {
        query.clone().is_some_and(|query| {
            let mut start = query.start;
            rest[query].split('&').any(|param| {
                let (from, to) = (start, start + param.len());
                start = to + 1;
                (from..to).contains(&i)
                    && param.find('=').is_some_and(|eq| from + eq < i)
                    && reader.knows_text(param)
            })
        })
    };
    // Without a password colon, an `@` past the `url` crate's host still reads as the end
    // of user info to the user: `redis://us?er@cache/0` is the host `us`, `mysql://h/my@db`
    // may be meant as the user `h/my`, and so may `mysql://u@h/my@db`. Every such `@`
    // counts, not only the first. Not after an empty host (`redis+unix:///a@b.sock`),
    // which no user info precedes.
    if !postgres
        && host_end > driver_at.map_or(0, |at| at + 1)
        && rest[host_end..]
            .match_indices('@')
            .map(|(i, _)| host_end + i)
            .any(|at| !rest[..at].contains(':') && !in_a_known_value(at))
    {
        return true;
    }
    let mut readings = Vec::new();
    userinfo_masks(url, from, reader, &mut readings);
    readings.iter().any(|m| {
        // The mask runs from just after the password colon to the `@`.
        let colon = m.start - 1 - from;
        let at = m.end - from;
        // Where the `url` crate reads the URL, every such reading counts: one whose colon
        // comes past that crate's host has a user that holds the `/`, `?` or `#` that
        // ends the host (`mysql://us/er:pw@h/db` is the host `us` and the database
        // `er:pw@h`). Over PostgreSQL, only a reading whose colon comes before the end of
        // the driver's host (which follows the first `@`) counts: a colon past it is in
        // the driver's path or query, and a user with a `/` or `?` was checked by
        // [`credentials_read_as_a_host`].
        let counts = !postgres || colon < host_end;
        driver_at.is_none_or(|driver| at > driver) && counts && !in_a_known_value(at)
    })
}

/// Whether the PostgreSQL driver's credentials `creds` (all before the first `@`) read as
/// a host and then a path, query or next host to every other reader: a user (up to the
/// first `:`) with a `/` or `?`, a password that starts with digits and then `/`, `?` or
/// `,` (a port), or an IPv6 address's `[…]` at the start.
fn credentials_read_as_a_host(creds: &str) -> bool {
    let (user, password) = match creds.split_once(':') {
        Some((user, password)) => (user, Some(password)),
        None => (creds, None),
    };
    let port = password.is_some_and(|password| {
        let digits = password.bytes().take_while(u8::is_ascii_digit).count();
        digits > 0 && matches!(password.as_bytes().get(digits), Some(b'/' | b'?' | b','))
    });
    user.contains(['/', '?']) || port || (creds.starts_with('[') && creds.contains(']'))
}

/// Refuses the URL `url` of a `kind` server (`"Redis"`, `"MySQL"`, …) when
/// [`userinfo_is_ambiguous`] says it is, or when its user info or the value of a password
/// parameter holds a `%` that starts no percent-escape ([`stray_percent`]: the drivers
/// would pass it on as written, and the login fail as if the password were wrong), with a
/// message that shows it as [`redact_url`] does, as the check read it (trimmed, without
/// tabs and line breaks), and names the part, never its text.
///
/// # Errors
/// [`Error::Config`] for such a URL.
#[cfg_attr(
    not(any(feature = "redis", feature = "mysql", feature = "postgres")),
    allow(dead_code)
)]
pub(crate) fn refuse_ambiguous_userinfo(kind: &str, url: &str) -> Result<(), StrategyError> {
    if url.len() > MAX_REDACTED {
        return Err(Error::Config(format!(
            "bad {kind} URL: over {MAX_REDACTED} bytes ({} bytes)",
            url.len()
        )));
    }
    // Read as the `url` crate reads it: without the leading and trailing spaces and
    // control characters it trims, and without the tabs and line breaks it drops
    // anywhere (a stray space before the scheme would hide it from the check).
    let trimmed = url.trim_matches(|c: char| c == ' ' || c.is_ascii_control());
    let normalised: String = trimmed
        .chars()
        .filter(|c| !matches!(c, '\t' | '\n' | '\r'))
        .collect();
    if userinfo_is_ambiguous(&normalised) {
        return Err(Error::Config(format!(
            "bad {kind} URL {:?}: drivers read where its user info ends differently, and \
             one would show a piece of the password as the host, port, user or database, or \
             connect to another host; \
             percent-encode an `@` in the user, password, database name or query as %40 \
             (and a `/`, `?`, `#` or `,` in the password as %2F, %3F, %23, %2C)",
            // Shown as read: the masks are those of the text the check read.
            redact_url(&normalised)
        )));
    }
    if let Some(part) = stray_percent(&normalised) {
        return Err(Error::Config(format!(
            "bad {kind} URL {:?}: its {part} holds a `%` that starts no percent-escape (a \
             `%` and two hex digits, as %40 for `@`); write a `%` itself as %25",
            redact_url(&normalised)
        )));
    }
    Ok(())
}

/// The part of the URL `url` that holds a `%` not followed by two hex digits, which
/// starts no percent-escape, if one does: its user info's `user` or `password` (up to the
/// first `@` over PostgreSQL, whose driver reads it so, else up to the last `@` before
/// the first `/`, `?` or `#`, as the `url` crate does), or a `password parameter` (the
/// value of a query parameter that names a password, as `?password=…`, `?pass=…`).
/// Drivers decode such a `%` as the `%` it is (`secret%zz` stays `secret%zz`), where
/// libpq refuses it: the password sent is then not what was meant, and the login fails
/// as if it were wrong. Text without `://` (a libpq `key=value` string, which is not
/// percent-decoded) holds none.
fn stray_percent(url: &str) -> Option<&'static str> {
    let stray = |text: &str| {
        let bytes = text.as_bytes();
        bytes.iter().enumerate().any(|(i, &b)| {
            b == b'%'
                && !(bytes.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                    && bytes.get(i + 2).is_some_and(u8::is_ascii_hexdigit))
        })
    };
    let at = url.find("://")?;
    let postgres = matches!(Reader::of(&url[..at]), Reader::Postgres);
    let rest = &url[at + 3..];
    let userinfo_end = if postgres {
        rest.find('@')
    } else {
        let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
        authority.rfind('@')
    };
    if let Some(end) = userinfo_end {
        let (user, password) = rest[..end].split_once(':').unwrap_or((&rest[..end], ""));
        if stray(user) {
            return Some("user");
        }
        if stray(password) {
            return Some("password");
        }
    }
    let after = &rest[userinfo_end.map_or(0, |end| end + 1)..];
    let query = &after[after.find('?')? + 1..];
    // The `url` crate ends the query at a `#`; the PostgreSQL driver reads one as part
    // of a value.
    let query = match query.find('#') {
        Some(fragment) if !postgres => &query[..fragment],
        _ => query,
    };
    query
        .split('&')
        .filter_map(|param| param.split_once('='))
        .any(|(name, value)| names_password(&percent_decoded(name)) && stray(value))
        .then_some("password parameter")
}

/// `text` with each occurrence of `token` that no letter or digit touches on either side
/// replaced by `***`.
fn replace_token(text: &str, token: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut done = 0;
    for (i, _) in text.match_indices(token) {
        if i < done {
            continue;
        }
        let before = text[..i].chars().next_back();
        let after = text[i + token.len()..].chars().next();
        if before.is_some_and(char::is_alphanumeric) || after.is_some_and(char::is_alphanumeric) {
            continue;
        }
        out.push_str(&text[done..i]);
        out.push_str("***");
        done = i + token.len();
    }
    out.push_str(&text[done..]);
    out
}

/// The byte ranges of `url` that [`redact_url`] masks; `None` for text too long to read.
fn url_masks(url: &str) -> Option<Vec<std::ops::Range<usize>>> {
    // Nothing this long is a spec or a URL anyone typed, and reading it would cost time
    // that grows faster than its length.
    if url.len() > MAX_REDACTED {
        return None;
    }
    let mut masks = Vec::new();
    // Every URL in the text, wherever it starts (`postgres://…`, `pg-xact:postgres://…`,
    // `DATABASE_URL=postgres://…`), and the text as one without a scheme: the union.
    for (at, _) in url.match_indices("://").take(MAX_READINGS) {
        let reader = Reader::of(&url[..at]);
        userinfo_masks(url, at + 3, reader, &mut masks);
        query_masks(url, at + 3, &mut masks);
    }
    masks_without_scheme(url, &mut masks);
    Some(masks)
}

/// The longest text [`redact_url`] reads; a longer one is not shown at all.
const MAX_REDACTED: usize = 4096;

/// The most URLs (`://`) [`redact_url`] reads in one text, and the most `@`s it tries as
/// the end of one URL's user info: the cost of reading a text grows with their product.
const MAX_READINGS: usize = 16;

/// `text` with each of `masks` (byte ranges) replaced by `***`; overlapping or adjacent
/// ones as one.
fn masked(text: &str, mut masks: Vec<std::ops::Range<usize>>) -> String {
    masks.sort_by_key(|m| m.start);
    let mut out = String::with_capacity(text.len());
    // Where the text after the last mask starts, once there is one.
    let mut done: Option<usize> = None;
    for m in masks {
        match done {
            // Overlapping or touching the last mask: one mask.
            Some(end) if m.start <= end => done = Some(end.max(m.end)),
            _ => {
                out.push_str(&text[done.unwrap_or(0)..m.start]);
                out.push_str("***");
                done = Some(m.end);
            }
        }
    }
    let done = done.unwrap_or(0);
    out.push_str(&text[done..]);
    out
}

/// Whether a query parameter or a libpq keyword names a password. Tabs and line breaks
/// in it are ignored, as the `url` crate drops them.
fn names_password(name: &str) -> bool {
    let name: String = name
        .chars()
        .filter(|c| !matches!(c, '\t' | '\n' | '\r'))
        .collect::<String>()
        .to_ascii_lowercase();
    name == "pass" || name.ends_with("password")
}

/// `text` with each `%XX` (two hex digits) replaced by the byte it stands for, as drivers
/// decode a query parameter's name; bytes that are not UTF-8 come out as U+FFFD.
pub(crate) fn percent_decoded(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| char::from(b).to_digit(16);
        match (
            bytes[i],
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(high), Some(low)) => {
                out.push((high * 16 + low) as u8);
                i += 3;
            }
            (byte, _, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Masks the password of the user info of the URL-like text starting at `from`, as
/// `reader` reads it: from its first [password colon](password_colon) to an `@` that may
/// end it. Drivers differ on which `@` that is (the first; the last before the path), so
/// every `@` up to the query of what follows the first one counts, and each masks its
/// own reading: a password with a raw `/`, `?`, `#` or `@` is masked whole, and an `@` in
/// the value of a parameter the reader knows that may hold one (`h:3306/db?user=a@b`)
/// masks nothing, as no password colon comes before it. Where the `url` crate reads the
/// URL, its own reading (up to the last `@` before the first `/`, `?` or `#`, from the
/// first `:`) is always masked, however many `@`s come before it.
fn userinfo_masks(
    text: &str,
    from: usize,
    reader: Reader,
    masks: &mut Vec<std::ops::Range<usize>>,
) {
    let rest = &text[from..];
    let Some(first) = rest.find('@') else {
        return;
    };
    if !reader.first_colon() {
        let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
        if let Some(at) = authority.rfind('@')
            && let Some(colon) = authority[..at].find(':')
        {
            masks.push(from + colon + 1..from + at);
        }
    }
    let after = &rest[first..];
    let limit = after.find('/').map_or(after.len(), |slash| {
        after[slash..].find('?').map_or(after.len(), |q| slash + q)
    });
    // Past the query's start, an `@` in the value of a parameter the reader knows
    // (`?user=a@b`) is the query's; one elsewhere may be a password's. Without a host
    // after the first `@` (`u:@//X:?db=a@h`), the first `@` may be the password's and
    // the query no query.
    let a_host = !after[1..].starts_with('/');
    let mut known = KnownValues::new(after, limit, reader);
    let mut taken = 0;
    for (i, _) in after.match_indices('@') {
        if taken == MAX_READINGS {
            break;
        }
        if a_host && known.holds(i) {
            continue;
        }
        taken += 1;
        let at = from + first + i;
        if let Some(colon) = password_colon(&text[from..at], reader) {
            masks.push(from + colon + 1..at);
        }
    }
}

/// Which `@`s of `after` (user-info-like text from its first `@`, whose query starts at
/// `limit`) are in the value of a query parameter the reader knows (`?user=a@b`), with no
/// `/` or `?` after them before the next `&` (where a host's path or query would start),
/// and, but over PostgreSQL, no `#` before them (where the `url` crate's fragment starts:
/// `?user=a#x@b` is the user `a`, and `#x@b` no value): asked of `@`s in increasing
/// order, read in one forward pass (asking each `@` anew would cost time that grows with
/// the square of their number).
struct KnownValues<'a> {
    after: &'a str,
    limit: usize,
    /// Where a fragment starts: the first `#`, but over PostgreSQL (the length for none).
    fragment: usize,
    reader: Reader,
    /// How far the text is read for the start of the current parameter.
    scanned: usize,
    /// Where the current `&`-piece of the query starts.
    param_start: usize,
    /// For the piece at `param_start`: where its `=` is, and whether the reader knows it.
    param: Option<(usize, Option<usize>, bool)>,
    /// The first `/`, `?` or `&` after the last `@` asked about (the length for none).
    next_delimiter: Option<usize>,
}

impl<'a> KnownValues<'a> {
    fn new(after: &'a str, limit: usize, reader: Reader) -> Self {
        let fragment = match reader {
            Reader::Postgres => None,
            _ => after.find('#'),
        };
        KnownValues {
            after,
            limit,
            fragment: fragment.unwrap_or(after.len()),
            reader,
            scanned: limit + 1,
            param_start: limit + 1,
            param: None,
            next_delimiter: None,
        }
    }

    /// Whether the `@` at `i` (past every one asked before) is in a known value.
    fn holds(&mut self, i: usize) -> bool {
        let after = self.after;
        let bytes = after.as_bytes();
        if i <= self.limit || i > self.fragment {
            return false;
        }
        let delimiter = match self.next_delimiter {
            Some(d) if d > i => d,
            _ => {
                let d = after[i + 1..]
                    .find(['/', '?', '&'])
                    .map_or(after.len(), |j| i + 1 + j);
                self.next_delimiter = Some(d);
                d
            }
        };
        if delimiter < after.len() && bytes[delimiter] != b'&' {
            return false;
        }
        while self.scanned < i {
            if bytes[self.scanned] == b'&' {
                self.param_start = self.scanned + 1;
            }
            self.scanned += 1;
        }
        let start = self.param_start;
        let (eq, knows) = match self.param {
            Some((s, eq, knows)) if s == start => (eq, knows),
            _ => {
                let end = after[start..].find('&').map_or(after.len(), |e| start + e);
                let piece = &after[start..end];
                let eq = piece.find('=').map(|e| start + e);
                let knows = self.reader.knows_text(piece);
                self.param = Some((start, eq, knows));
                (eq, knows)
            }
        };
        eq.is_some_and(|eq| eq < i) && knows
    }
}

/// Where a password may start in `region`, what precedes an `@`, as `reader` reads it:
/// its first `:`, whatever comes before or after it. The PostgreSQL driver splits its
/// credentials (everything before the first `@`) there (`app://Xy:7k9` is the user `app`
/// with the password `//Xy:7k9`), and so does the `url` crate in user info with no `/`,
/// `?` or `#` (`u[:p]` is the user `u[` with the password `p]`). Elsewhere a `:` followed
/// by `//` starts a password too: the user may have meant one (`u/:///Xy:7k9`, the user
/// `u/` with the password `///Xy:7k9`), and a URL in a path or query
/// (`h/0?next=redis://u:pw`) is masked from its scheme's `:`. Only where the `url` crate
/// reads the URL and the `@` is in the value of a query parameter the reader knows (that
/// may hold an `@`) is a `:` skipped inside an IPv6 address's `[…]` where a host starts,
/// or when it is a port's: before the first `/`, `?` or `#`, followed by digits and then
/// `/`, `?` or `,` (`h:3306/db?user=a@b`, `[::1]:3306/db?user=a@b`). Elsewhere the `@`
/// may end a password, and what the `url` crate reads as a host and port (`u:12?x=1@h`,
/// `[::]#@h`) its first piece.
fn password_colon(region: &str, reader: Reader) -> Option<usize> {
    if reader.first_colon() {
        return region.find(':');
    }
    let Some(authority_end) = region.find(['/', '?', '#']) else {
        return region.find(':');
    };
    let bytes = region.as_bytes();
    // Whether the `@` ends a known parameter's value in the query, which starts at the
    // first `?` unless a `#` (a fragment) comes first, and ends at a `#` but over
    // PostgreSQL (whose driver reads a `#` as part of a value), as `KnownValues` reads it.
    let in_a_known_value = region[authority_end..]
        .find(['?', '#'])
        .map(|q| authority_end + q)
        .filter(|&q| bytes[q] == b'?')
        .and_then(|q| region[q + 1..].rsplit('&').next())
        .is_some_and(|param| {
            (matches!(reader, Reader::Postgres) || !param.contains('#')) && reader.knows_text(param)
        });
    let mut in_brackets = false;
    for (i, &byte) in bytes.iter().enumerate() {
        match byte {
            b'[' if in_a_known_value
                && (i == 0 || bytes[i - 1] == b'@')
                && ipv6_at(&region[i..]) =>
            {
                in_brackets = true;
            }
            b']' => in_brackets = false,
            b':' if !in_brackets => {
                let after = &region[i + 1..];
                let digits = after.bytes().take_while(u8::is_ascii_digit).count();
                let port = i > 0
                    && i < authority_end
                    && digits > 0
                    && matches!(after.as_bytes().get(digits), Some(b'/' | b'?' | b','))
                    && in_a_known_value;
                if !port {
                    return Some(i);
                }
            }
            _ => {}
        }
    }
    None
}

/// Whether `text` starts with an IPv6 address in brackets (`[::1]`), as a host does.
fn ipv6_at(text: &str) -> bool {
    // The longest IPv6 address in text is 45 bytes.
    let end = text.bytes().take(48).position(|b| b == b']');
    end.is_some_and(|end| text[1..end].parse::<std::net::Ipv6Addr>().is_ok())
}

/// Masks the values of password parameters in the query of the URL-like text starting at
/// `from`: from its first `?`, `&`-separated `name=value` pairs. A `#` is no fragment: the
/// PostgreSQL driver reads `password=ab#cd` as the password `ab#cd`, so a value runs to
/// the next `&`. A name is read after the last `?` in it (a raw `?` in a password may have
/// begun the query early) and percent-decoded, as drivers decode it.
fn query_masks(text: &str, from: usize, masks: &mut Vec<std::ops::Range<usize>>) {
    let Some(q) = text[from..].find('?') else {
        return;
    };
    let mut at = from + q + 1;
    let params: Vec<&str> = text[at..].split('&').collect();
    for (n, param) in params.iter().enumerate() {
        if let Some((name, _)) = param.split_once('=') {
            let name = name.rsplit('?').next().unwrap_or(name);
            if names_password(&percent_decoded(name)) {
                // A raw `&` in the password: the pieces after it that are no
                // `name=value` belong to it.
                let more: usize = params[n + 1..]
                    .iter()
                    .take_while(|p| !names_known_parameter(p))
                    .map(|p| p.len() + 1)
                    .sum();
                masks.push(at + name_end(param) + 1..at + param.len() + more);
            }
        }
        at += param.len() + 1;
    }
}

/// Whose reading of a URL's user info and query applies: the driver that reads a scheme's
/// URLs, as far as where its user info ends and which query parameters it knows.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Reader {
    /// tokio-postgres (`postgres://`, `postgresql://`): credentials up to the first `@`.
    Postgres,
    /// The `mysql` crate, through the `url` crate.
    MySql,
    /// The `redis` crate over TCP (`redis://`, `rediss://`, and the `redlock://` URLs
    /// turnstile splits into them), through the `url` crate.
    RedisTcp,
    /// The `redis` crate over a Unix socket (`redis+unix://`, `unix://`).
    RedisUnix,
    /// An unknown scheme: read as the `url` crate reads it, with every driver's parameters.
    Other,
    /// Text without `://`, or with more than a name before the first one's scheme (a
    /// mistyped URL, a spec's argument): its password from the first `:`, with every
    /// driver's parameters.
    Bare,
}

impl Reader {
    /// The reader of the URL whose scheme ends `prefix` (the text before `://`, which may
    /// hold more: `pg-xact:postgres`, `DATABASE_URL=mysql`, `queue+redis`). Tabs and line
    /// breaks in it are ignored, as the `url` crate drops them (`my\nsql` is `mysql`).
    fn of(prefix: &str) -> Reader {
        let scheme: String = prefix
            .chars()
            .filter(|c| !matches!(c, '\t' | '\n' | '\r'))
            .collect::<String>()
            .to_ascii_lowercase();
        let ends = |names: &[&str]| names.iter().any(|name| scheme.ends_with(name));
        if ends(&["postgres", "postgresql"]) {
            Reader::Postgres
        } else if ends(&["mysql"]) {
            Reader::MySql
        } else if ends(&["unix"]) {
            Reader::RedisUnix
        } else if ends(&["redis", "rediss", "redlock", "redlocks"]) {
            Reader::RedisTcp
        } else {
            Reader::Other
        }
    }

    /// Whether this reader's password starts at the first `:` of what precedes an `@`,
    /// whatever it is.
    fn first_colon(self) -> bool {
        matches!(self, Reader::Postgres | Reader::Bare)
    }

    /// Whether the `&`-piece `param` of a query (`name=value`) is a parameter this reader
    /// knows whose value may hold an `@` (a user, password, file path, database name,
    /// application name): an `@` in its value ends no user info. Its name is read
    /// percent-decoded, as drivers decode it, and matched exactly, as they match it; for
    /// text of an unknown scheme, any parameter of any driver, in any case.
    fn knows_text(self, param: &str) -> bool {
        let names: &[&str] = match self {
            // tokio-postgres's.
            Reader::Postgres => &[
                "user",
                "password",
                "dbname",
                "options",
                "application_name",
                "host",
            ],
            // The `mysql` crate's.
            Reader::MySql => &["user", "password", "socket", "db_name"],
            // turnstile's TLS files (the `redis` crate reads no other over TCP but
            // `protocol`, and turnstile `ttl_ms`: numbers).
            Reader::RedisTcp => &["tls_ca", "tls_cert", "tls_key"],
            Reader::RedisUnix => &["user", "pass", "tls_ca", "tls_cert", "tls_key"],
            Reader::Other | Reader::Bare => return names_known_parameter(param),
        };
        param
            .split_once('=')
            .is_some_and(|(name, _)| names.contains(&percent_decoded(name).as_str()))
    }
}

/// Whether the `&`-piece `param` of a query is a parameter some driver (or turnstile)
/// knows, rather than the tail of a password with a raw `&`.
fn names_known_parameter(param: &str) -> bool {
    const KNOWN: [&str; 38] = [
        "user",
        "password",
        "pass",
        "db",
        "dbname",
        "host",
        "hostaddr",
        "port",
        "sslmode",
        "sslcert",
        "sslkey",
        "sslrootcert",
        "sslpassword",
        "ssl_mode",
        "ssl-mode",
        "channel_binding",
        "application_name",
        "options",
        "connect_timeout",
        "keepalives",
        "keepalives_idle",
        "tcp_user_timeout",
        "target_session_attrs",
        "load_balance_hosts",
        "prefer_socket",
        "socket",
        "compress",
        "stmt_cache_size",
        "tcp_keepalive_time_ms",
        "tcp_nodelay",
        "protocol",
        "insecure",
        "ttl_ms",
        "tls_ca",
        "tls_cert",
        "tls_key",
        "require_ssl",
        "verify_ca",
    ];
    param.split_once('=').is_some_and(|(name, _)| {
        KNOWN.contains(&percent_decoded(name).to_ascii_lowercase().as_str())
    })
}

/// Where the name of a `name=value` parameter ends.
fn name_end(param: &str) -> usize {
    param.find('=').unwrap_or(param.len())
}

/// Whether `text` starts as a libpq `key=value` string does: a keyword, then `=`.
fn starts_key_values(text: &str) -> bool {
    let rest = text.trim_start();
    let keyword = rest
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(rest.len());
    keyword > 0 && rest[keyword..].trim_start().starts_with('=')
}

/// Masks for text without a `://` after a scheme: a libpq `key=value` string, also as a
/// spec's argument (`postgres:host=db password=…`); or else URL-like text (a mistyped
/// URL, `mysq:/u:pw@h/db`, a spec, `postgres:u:pw@h/db`, or a spec's argument,
/// `u:pw@h/db`, `/tmp/r.sock?pass=…`): its user info from the first `:` (none for the
/// directory of a file lock, `file-lock:/srv/a@b`, and none where only a name precedes
/// a URL, `pg-xact:postgres://…`: a mistyped URL may have a `://` later on,
/// `mysql:/u:pw@h/db?x=a://b`), its query's password parameters, and with blanks in it
/// any `password=…` too.
fn masks_without_scheme(text: &str, masks: &mut Vec<std::ops::Range<usize>>) {
    masks_without_scheme_in(text, true, masks);
}

/// [`masks_without_scheme`]; `outer`: whether a `NAME=value`'s value is read too (one
/// level only, or text of many `=` would nest as deep).
fn masks_without_scheme_in(text: &str, outer: bool, masks: &mut Vec<std::ops::Range<usize>>) {
    let colon = text.find(':');
    // Any `password=` or `pass=`, whatever quote or escape comes before it: an unclosed
    // one in an earlier value would hide it from the key=value reading.
    loose_password_masks(text, masks);
    if starts_key_values(text) {
        key_value_masks(text, 0, masks);
        // `NAME=value` alone (`DATABASE_URL=mysql:/u:pw@h/db`): its value read too.
        if outer
            && !text.trim().contains(char::is_whitespace)
            && let Some(eq) = text.find('=')
        {
            let mut inner = Vec::new();
            masks_without_scheme_in(&text[eq + 1..], false, &mut inner);
            masks.extend(inner.into_iter().map(|m| m.start + eq + 1..m.end + eq + 1));
        }
        return;
    }
    if let Some(c) = colon.filter(|&c| starts_key_values(&text[c + 1..])) {
        key_value_masks(text, c + 1, masks);
        // With blanks, or without an `@`, it reads as key=value (`postgres:host=db
        // password=p@ss`); else it may be user info too (`u:abc==@h`): both are masked.
        if text.contains(char::is_whitespace) || !text.contains('@') {
            return;
        }
    }
    // A file lock's directory is no user info. Text with a `://` had its URLs read, each
    // forward from its `://`; it is read here too unless only a name precedes the first
    // one's scheme (`pg-xact:postgres://…`, `DATABASE_URL=mysql://…`): it may be a
    // mistyped URL with a `://` later on (`mysql:/u:pw@h/db?x=a://b`, or
    // `mysql:/u:///pw@h`, a password that starts with `//`).
    let a_directory = colon.is_some_and(|c| text[..c].to_ascii_lowercase().ends_with("file-lock"));
    if !a_directory && !only_a_name_before_a_url(text) {
        userinfo_masks(text, 0, Reader::Bare, masks);
    }
    query_masks(text, 0, masks);
    if text.contains(char::is_whitespace) {
        key_value_masks(text, 0, masks);
    }
}

/// Whether `text` has a `://`, and what precedes the first one's scheme (the letters,
/// digits, `+`, `-` and `.` right before it) is nothing, or a name and then at most one
/// `:` or `=` (`pg-xact:`, `DATABASE_URL=`) before a scheme that turnstile's drivers read
/// (`postgres`, `mysql`, `redis`, `redlock`, …, also after `queue+`): no user info. Before
/// another scheme, the `:` after a name may be a password's (`u:a://b@h`, the user `u` with
/// the password `a://b`).
fn only_a_name_before_a_url(text: &str) -> bool {
    let Some(at) = text.find("://") else {
        return false;
    };
    let scheme_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.');
    // Tabs and line breaks are dropped by the `url` crate (`my\nsql://`).
    let dropped = |c: char| matches!(c, '\t' | '\n' | '\r');
    let head = text[..at].trim_end_matches(|c| scheme_char(c) || dropped(c));
    // Leading spaces and control characters are trimmed by the `url` crate too.
    let before = head.trim_start_matches(|c: char| c == ' ' || c.is_ascii_control());
    let name = before.strip_suffix([':', '=']).unwrap_or(before);
    if !name
        .chars()
        .all(|c| scheme_char(c) || c == '_' || dropped(c))
    {
        return false;
    }
    if before.is_empty() {
        return true;
    }
    let scheme: String = text[head.len()..at]
        .chars()
        .filter(|&c| !dropped(c))
        .collect::<String>()
        .to_ascii_lowercase();
    let scheme = scheme.strip_prefix("queue+").unwrap_or(&scheme);
    const DRIVERS: [&str; 9] = [
        "postgres",
        "postgresql",
        "mysql",
        "redis",
        "rediss",
        "redis+unix",
        "unix",
        "redlock",
        "redlocks",
    ];
    DRIVERS.contains(&scheme)
}

/// Masks the value after each `password` or `pass` (any case) followed by `=`, read as a
/// libpq value is (an unquoted one up to a blank or an `&`).
fn loose_password_masks(text: &str, masks: &mut Vec<std::ops::Range<usize>>) {
    let lower = text.to_ascii_lowercase();
    for (i, _) in lower.match_indices("pass") {
        let word = &lower[i..];
        let name_len = if word.starts_with("password") { 8 } else { 4 };
        let after = &text[i + name_len..];
        let Some(value) = after.trim_start().strip_prefix('=') else {
            continue;
        };
        let value = value.trim_start();
        let start = text.len() - value.len();
        // In a URL's query, an `&` ends it.
        let mut len = value_len(value);
        if !value.starts_with('\'') {
            // Up to an `&` that starts a `name=value`, as in a URL's query.
            let mut end = 0;
            for piece in value[..len].split('&') {
                if end > 0 && piece.contains('=') {
                    break;
                }
                end += piece.len() + 1;
            }
            len = len.min(end.saturating_sub(1));
        }
        masks.push(start..start + len);
    }
}

/// Masks the password values of the libpq `key=value` string (`host=h password=x`,
/// spaces allowed around `=`, values quoted with `'` or not, `\` escaping the next
/// character) starting at `from`. An unquoted password value runs on over blanks up to
/// the next `keyword=` (the driver refuses such a string, and says so with the text).
/// Text that is not such a string yields a mask only for a `password=…` in it.
fn key_value_masks(text: &str, from: usize, masks: &mut Vec<std::ops::Range<usize>>) {
    let mut at = from;
    while at < text.len() {
        let rest = &text[at..];
        // Whitespace, then a keyword up to `=` or whitespace.
        let trimmed = rest.trim_start();
        at += rest.len() - trimmed.len();
        let keyword_len = trimmed
            .find(|c: char| c == '=' || c.is_whitespace())
            .unwrap_or(trimmed.len());
        let keyword = &trimmed[..keyword_len];
        at += keyword_len;
        // Then `=`, with optional whitespace on both sides; else it was no keyword.
        let rest = &text[at..];
        let Some(after) = rest.trim_start().strip_prefix('=') else {
            continue;
        };
        let value = after.trim_start();
        at += rest.len() - value.len();
        let mut len = value_len(value);
        if names_password(keyword) {
            if !value.starts_with('\'') {
                loop {
                    let more = &value[len..];
                    let word = more.trim_start();
                    if word.is_empty() || starts_key_values(word) {
                        break;
                    }
                    len += more.len() - word.len() + value_len(word);
                }
            }
            masks.push(at..at + len);
        }
        at += len;
    }
}

/// The length of the libpq value `text` starts with: up to the closing quote of a quoted
/// one (the whole text if it is never closed), up to whitespace otherwise, `\` escaping
/// the next character in both.
fn value_len(text: &str) -> usize {
    let quoted = text.starts_with('\'');
    let mut chars = text.char_indices().skip(usize::from(quoted));
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => {
                chars.next();
            }
            '\'' if quoted => return i + 1,
            c if !quoted && c.is_whitespace() => return i,
            _ => {}
        }
    }
    text.len()
}

/// What a factory builds a strategy over: the resource opener and the common settings.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Setup<C> {
    /// Opens the resource the strategy serializes.
    pub connect: C,
    /// How lock strategies run ops. Default: [`TxMode::Transaction`]. Strategies whose
    /// mechanism is the transaction (`retry`, `optimistic`) ignore it; lock strategies
    /// refuse [`TxMode::Autocommit`] over a resource whose writes only apply at commit.
    pub tx_mode: TxMode,
    /// The default wait; `None` means each strategy's own default.
    pub timeout: Option<Duration>,
    /// Which lock names lock strategies map keys to; `None`: [`Locked`](crate::Locked)'s
    /// default ([`KeyScope::Whole`](crate::KeyScope::Whole) over a single-writer resource,
    /// [`KeyScope::PerKey`](crate::KeyScope::PerKey) otherwise).
    pub key_scope: Option<crate::KeyScope>,
}

impl<C> Setup<C> {
    /// Defaults over `connect`.
    pub fn new(connect: C) -> Self {
        Setup {
            connect,
            tx_mode: TxMode::default(),
            timeout: None,
            key_scope: None,
        }
    }

    /// Sets [`Setup::key_scope`].
    pub fn key_scope(mut self, keys: crate::KeyScope) -> Self {
        self.key_scope = Some(keys);
        self
    }

    /// Sets [`Setup::tx_mode`].
    pub fn tx_mode(mut self, mode: TxMode) -> Self {
        self.tx_mode = mode;
        self
    }

    /// Sets [`Setup::timeout`].
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// `lock` around this setup's resource: a [`Locked`](crate::Locked) with the setup's
    /// transaction mode, timeout and key scope, boxed. What most lock factories return.
    ///
    /// # Errors
    /// [`Error::Config`] for an absurd timeout, or for [`TxMode::Autocommit`] over a
    /// resource whose writes only apply at commit
    /// ([`Transact::supports_autocommit`](turnstile_core::Transact::supports_autocommit)).
    pub fn locked<L: turnstile_core::Lock>(
        &self,
        lock: L,
    ) -> Result<BoxSerializer<C::Resource>, StrategyError>
    where
        C: turnstile_core::Transact + Clone,
    {
        crate::locked::check_tx_mode(self.tx_mode, &self.connect)?;
        let mut s = crate::Locked::new(lock, self.connect.clone()).tx_mode(self.tx_mode);
        if let Some(keys) = self.key_scope {
            s = s.key_scope(keys);
        }
        if let Some(t) = self.timeout {
            s = s.timeout(Some(t))?;
        }
        Ok(Box::new(s))
    }

    /// A [`Queue`](crate::queue::Queue) over this setup's resource whose worker takes
    /// `lock` once per batch, with the setup's transaction mode and timeout, boxed. What
    /// the `queue+…` factories return.
    ///
    /// # Errors
    /// As [`QueueBuilder::build`](crate::queue::QueueBuilder::build): [`Error::Config`] for
    /// an absurd timeout or autocommit over a resource whose writes only apply at commit.
    #[cfg(feature = "queue")]
    pub fn queued<L: turnstile_core::Lock>(
        &self,
        lock: L,
    ) -> Result<BoxSerializer<C::Resource>, StrategyError>
    where
        C: turnstile_core::Transact + Clone,
    {
        let mut builder = crate::queue::Queue::builder()
            .tx_mode(self.tx_mode)
            .lock(lock);
        if let Some(t) = self.timeout {
            builder = builder.timeout(Some(t));
        }
        Ok(Box::new(builder.build(self.connect.clone())?))
    }
}

/// Builds a strategy from a parsed spec.
pub type Factory<C> = Arc<
    dyn Fn(&Spec, &Setup<C>) -> Result<BoxSerializer<<C as Connect>::Resource>, StrategyError>
        + Send
        + Sync,
>;

struct Entry<C: Connect> {
    name: String,
    summary: String,
    factory: Factory<C>,
}

/// The names a spec may start with, and how to build each.
pub struct Registry<C: Connect> {
    entries: Vec<Entry<C>>,
}

impl<C: Connect> Default for Registry<C> {
    fn default() -> Self {
        Registry {
            entries: Vec::new(),
        }
    }
}

impl<C: Connect> Registry<C> {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers (or replaces) the strategy called `name`.
    pub fn register(
        &mut self,
        name: &str,
        summary: &str,
        factory: impl Fn(&Spec, &Setup<C>) -> Result<BoxSerializer<C::Resource>, StrategyError>
        + Send
        + Sync
        + 'static,
    ) -> &mut Self {
        let name = name.to_ascii_lowercase();
        self.entries.retain(|e| e.name != name);
        self.entries.push(Entry {
            name,
            summary: summary.to_owned(),
            factory: Arc::new(factory),
        });
        self
    }

    /// The registered names with their one-line summaries, in registration order.
    pub fn names(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries
            .iter()
            .map(|e| (e.name.as_str(), e.summary.as_str()))
    }

    /// Whether `name` is registered.
    pub fn contains(&self, name: &str) -> bool {
        self.entries.iter().any(|e| e.name == name)
    }

    /// Parses `spec` and builds its strategy over `setup`.
    ///
    /// # Errors
    /// [`Error::Config`] for a bad spec or an unknown name (the message lists the known
    /// ones); whatever the factory returns (an unreachable server is
    /// [`Error::Unavailable`]). A factory's [`Error::Config`] about an argument cut from
    /// the spec (`name:arg`) loses every piece of what [`redact_url`] masks in the whole
    /// spec: `postgres:pw@db/app` may be the user `postgres` with the password `pw`, which
    /// the argument redacted alone, `pw@db/app`, would show.
    pub fn open(
        &self,
        spec: &str,
        setup: &Setup<C>,
    ) -> Result<BoxSerializer<C::Resource>, StrategyError> {
        let parsed = Spec::parse(spec)?;
        match self.entries.iter().find(|e| e.name == parsed.name) {
            Some(entry) => (entry.factory)(&parsed, setup).map_err(|e| match e {
                // The factory saw the argument alone, and its message shows it redacted
                // alone; but cut from the spec it may read otherwise: `postgres:pw@db/app`
                // may be the user `postgres` with the password `pw`. What the whole spec's
                // redaction masks goes from the message too.
                Error::Config(message) if parsed.arg.is_some() && !parsed.is_a_url() => {
                    let whole = parsed.whole();
                    Error::Config(match url_masks(&whole) {
                        Some(masks) => without_secrets(&whole, &masks, &message),
                        None => format!(
                            "strategy {:?} refused its argument (a spec too long to show)",
                            parsed.name
                        ),
                    })
                }
                other => other,
            }),
            None => {
                let known: Vec<&str> = self.entries.iter().map(|e| e.name.as_str()).collect();
                // The whole spec, redacted: a mistyped URL's "name" may hold a piece of
                // its password (`mysql:/u:pw://x@h` reads as the name `mysql:/u:pw`).
                Err(Error::Config(format!(
                    "unknown strategy {:?}; known: {}",
                    redact_url(spec.trim()),
                    known.join(", ")
                )))
            }
        }
    }
}

#[cfg(feature = "sqlite")]
impl Registry<crate::sqlite::Sqlite> {
    /// Every strategy compiled in (by Cargo feature), over SQLite.
    pub fn builtin() -> Self {
        #[allow(unused_mut)]
        let mut registry: Self = Registry::new();
        #[cfg(feature = "mutex")]
        registry.register(
            "mutex",
            "in-process per-key lock table (threads of one process)",
            |spec, setup| {
                spec.expect_no_arg()?;
                setup.locked(crate::lock::MutexLock::new())
            },
        );
        #[cfg(feature = "redis")]
        crate::lock::redis::register(&mut registry);
        #[cfg(feature = "file-lock")]
        registry.register(
            "file-lock",
            "flock over striped lock files (processes on one host); file-lock:DIR sets the lock directory, default <db>.locks",
            |spec, setup| {
                let lock = match spec.arg() {
                    None => crate::lock::FileLock::beside(setup.connect.path())?,
                    Some(dir) => crate::lock::FileLock::new(dir)?,
                };
                setup.locked(lock)
            },
        );
        #[cfg(feature = "retry")]
        registry.register(
            "retry",
            "no lock: rerun the whole transaction on busy, with full-jitter backoff",
            |spec, setup| {
                spec.expect_no_arg()?;
                let mut s = crate::retry::Retry::sqlite(setup.connect.clone());
                if let Some(t) = setup.timeout {
                    s = s.max_elapsed(Some(t))?;
                }
                Ok(Box::new(s))
            },
        );
        #[cfg(feature = "queue")]
        registry.register(
            "queue",
            "one worker thread owns the connection; ops queue up (threads of one process)",
            |spec, setup| {
                spec.expect_no_arg()?;
                let mut builder = crate::queue::Queue::builder().tx_mode(setup.tx_mode);
                if let Some(t) = setup.timeout {
                    builder = builder.timeout(Some(t));
                }
                Ok(Box::new(builder.build(setup.connect.clone())?))
            },
        );
        #[cfg(any(feature = "mysql", feature = "postgres"))]
        register_server_locks(&mut registry);
        #[cfg(feature = "queue")]
        crate::queue::register_locked(&mut registry);
        registry
    }
}

#[cfg(feature = "optimistic")]
impl<S: crate::optimistic::VersionStore> Registry<crate::optimistic::Versions<S>> {
    /// The strategies whose ops work on versioned records (a
    /// [`Versioned`](crate::optimistic::Versioned) handle) in any
    /// [`VersionStore`](crate::optimistic::VersionStore) (SQLite, PostgreSQL, MySQL):
    /// `optimistic`, and `mutex` around the same records. Named apart from
    /// [`Registry::builtin`] so that `Registry::builtin()` stays unambiguous.
    pub fn builtin_versioned() -> Self {
        let mut registry: Self = Registry::new();
        registry.register(
            "optimistic",
            "no lock: compare-and-set the op's write set, rerun on conflict with full-jitter backoff",
            |spec, setup| {
                spec.expect_no_arg()?;
                let mut s = crate::optimistic::Optimistic::over(setup.connect.clone());
                if let Some(t) = setup.timeout {
                    s = s.timeout(Some(t))?;
                }
                Ok(Box::new(s))
            },
        );
        #[cfg(feature = "mutex")]
        registry.register(
            "mutex",
            "in-process per-key lock table (threads of one process)",
            |spec, setup| {
                spec.expect_no_arg()?;
                setup.locked(crate::lock::MutexLock::new())
            },
        );
        registry
    }
}

/// Registers the lock strategies on database servers: `mysql://…` and `postgres://…`
/// (also `postgresql://…`), each wrapped in [`Locked`](crate::Locked) over the setup's
/// resource, and with the `queue` feature `queue+mysql://…` and `queue+postgres://…`
/// (`queue+postgresql://…`): a [`Queue`](crate::queue::Queue) per process whose worker
/// takes the same lock once per batch. Both issue fencing tokens only where they are
/// enforced ([`TxMode::Transaction`]), and open a lock connection when the spec is opened
/// (as the Redis specs ping theirs), so a server out of reach or a wrong password is
/// [`Error::Unavailable`] at once, within the connect timeout.
#[cfg(any(feature = "mysql", feature = "postgres"))]
fn register_server_locks<C: turnstile_core::Transact + Clone>(registry: &mut Registry<C>) {
    #[cfg(feature = "mysql")]
    register_lock(
        registry,
        &["mysql"],
        "MySQL / MariaDB GET_LOCK",
        "mysql://user:pass@host:port/db",
        |url, setup| {
            let lock =
                crate::lock::MySqlLock::new(url)?.fencing(setup.tx_mode == TxMode::Transaction);
            lock.ping()?;
            Ok(lock)
        },
    );
    #[cfg(feature = "postgres")]
    register_lock(
        registry,
        &["postgres", "postgresql"],
        "PostgreSQL session advisory lock",
        "postgres://user:pass@host:port/db",
        |url, setup| {
            let lock =
                crate::lock::PostgresLock::new(url)?.fencing(setup.tx_mode == TxMode::Transaction);
            lock.ping()?;
            Ok(lock)
        },
    );
}

/// Registers each of `schemes` as the lock `build` makes from the spec's URL, in
/// [`Locked`](crate::Locked), and (with the `queue` feature) `queue+SCHEME` as a queue
/// whose worker takes that lock once per batch ([`Setup::queued`]).
#[cfg(any(feature = "mysql", feature = "postgres"))]
fn register_lock<C, L>(
    registry: &mut Registry<C>,
    schemes: &[&str],
    lock: &str,
    url_form: &str,
    build: fn(&str, &Setup<C>) -> Result<L, StrategyError>,
) where
    C: turnstile_core::Transact + Clone,
    L: turnstile_core::Lock,
{
    for scheme in schemes {
        let form = url_form.to_owned();
        registry.register(
            scheme,
            &format!("{lock} on a dedicated connection, fenced (hosts): {url_form}"),
            move |spec, setup| setup.locked(build(lock_url(spec, &form)?, setup)?),
        );
        #[cfg(feature = "queue")]
        {
            let form = format!("queue+{url_form}");
            registry.register(
                &format!("queue+{scheme}"),
                &format!(
                    "a queue per process whose worker takes a {lock} once per batch, fenced (hosts): {form}"
                ),
                move |spec, setup| setup.queued(build(lock_url(spec, &form)?, setup)?),
            );
        }
    }
}

#[cfg(any(feature = "mysql", feature = "postgres"))]
fn register_mutex<C: turnstile_core::Transact + Clone>(registry: &mut Registry<C>) {
    #[cfg(feature = "mutex")]
    registry.register(
        "mutex",
        "in-process per-key lock table (threads of one process)",
        |spec, setup| {
            spec.expect_no_arg()?;
            setup.locked(crate::lock::MutexLock::new())
        },
    );
    #[cfg(not(feature = "mutex"))]
    let _ = registry;
}

#[cfg(feature = "postgres")]
impl Registry<crate::resource::Postgres> {
    /// Every strategy compiled in whose ops run on a [`postgres::Client`], with the data
    /// in PostgreSQL: `mutex`, `mysql://…`, `postgres://…`, `queue+mysql://…`,
    /// `queue+postgres://…`, and `pg-xact` (transaction advisory locks inside the data's
    /// own transaction, see [`PgXactLocked`](crate::lock::PgXactLocked)).
    pub fn builtin_postgres() -> Self {
        let mut registry: Self = Registry::new();
        register_mutex(&mut registry);
        register_server_locks(&mut registry);
        registry.register(
            "pg-xact",
            "PostgreSQL transaction advisory locks inside the data's own transaction (hosts; works behind transaction-pooling proxies)",
            |spec, setup| {
                spec.expect_no_arg()?;
                let mut s = crate::lock::PgXactLocked::new(setup.connect.clone());
                if let Some(t) = setup.timeout {
                    s = s.timeout(Some(t))?;
                }
                Ok(Box::new(s))
            },
        );
        registry
    }
}

#[cfg(feature = "mysql")]
impl Registry<crate::resource::MySql> {
    /// Every strategy compiled in whose ops run on a [`mysql::Conn`], with the data in
    /// MySQL / MariaDB: `mutex`, `mysql://…`, `postgres://…`, `queue+mysql://…`,
    /// `queue+postgres://…`.
    pub fn builtin_mysql() -> Self {
        let mut registry: Self = Registry::new();
        register_mutex(&mut registry);
        register_server_locks(&mut registry);
        registry
    }
}

/// The lock server's URL in a spec: the whole text of `scheme://…`, or of `queue+scheme://…`
/// without its `queue+`; a spec without one is refused with the URL's `form`.
#[cfg(any(
    feature = "mysql",
    feature = "postgres",
    all(feature = "redis", feature = "queue", feature = "sqlite")
))]
pub(crate) fn lock_url<'s>(spec: &'s Spec, form: &str) -> Result<&'s str, StrategyError> {
    const QUEUE: &str = "queue+";
    let url = match spec.arg() {
        Some(text) if spec.name().starts_with(QUEUE) => text
            .get(..QUEUE.len())
            .filter(|head| head.eq_ignore_ascii_case(QUEUE))
            .map(|_| &text[QUEUE.len()..]),
        other => other,
    };
    url.ok_or_else(|| {
        Error::Config(format!(
            "strategy {:?} needs a server URL: {form}",
            spec.name()
        ))
    })
}

/// A server URL built from what a user means by it, written raw (nothing
/// percent-encoded), for the tests that hold each driver's reading against the check:
/// see [`meant_urls`].
#[cfg(all(test, any(feature = "redis", feature = "mysql", feature = "postgres")))]
#[derive(Debug)]
pub(crate) struct Meant {
    pub(crate) url: String,
    pub(crate) user: String,
    pub(crate) password: String,
    pub(crate) host: String,
    pub(crate) port: u16,
    /// Whether the tail holds the driver's parameter whose value holds an `@`.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) param: bool,
}

#[cfg(all(test, any(feature = "redis", feature = "mysql", feature = "postgres")))]
impl Meant {
    /// Checks a driver against this URL and its mistyped twin (`mistyped`): no
    /// redacted URL, identity or message shows a piece of the password, and a URL the
    /// driver reads, it reads as meant (`read`: user, password, host and port), while
    /// one it refuses is no URL the docs promise it reads (`over_postgres` picks whose
    /// promises).
    #[cfg(any(feature = "mysql", feature = "postgres"))]
    pub(crate) fn check_driver<T, E: std::fmt::Display>(
        &self,
        over_postgres: bool,
        parse: impl Fn(&str) -> Result<T, E>,
        identity: impl Fn(&T) -> String,
        read: impl Fn(&T) -> (Option<&str>, Option<&[u8]>, String, u16),
    ) {
        assert!(!Self::leaks_into(&redact_url(&self.url)), "{self:?}");
        let mistyped = self.mistyped();
        assert!(!Self::leaks_into(&redact_url(&mistyped)), "{mistyped}");
        match parse(&mistyped) {
            Err(e) => assert!(!Self::leaks_into(&e.to_string()), "{mistyped}: {e}"),
            Ok(read) => assert!(!Self::leaks_into(&identity(&read)), "{mistyped}"),
        }
        match parse(&self.url) {
            Err(e) => {
                assert!(!self.promised(over_postgres), "{self:?}: {e}");
                assert!(!Self::leaks_into(&e.to_string()), "{self:?}: {e}");
            }
            Ok(parsed) => {
                let (user, password, host, port) = read(&parsed);
                let read = (user.unwrap_or(""), password.unwrap_or(b""), host, port);
                let meant = (
                    &*self.user,
                    self.password.as_bytes(),
                    self.host.clone(),
                    self.port,
                );
                assert_eq!(read, meant, "{}", self.url);
                assert!(!Self::leaks_into(&identity(&parsed)), "{self:?}");
            }
        }
    }

    /// Whether the docs promise that the check accepts this URL and the driver reads it as
    /// written: over the `url` crate (`postgres` false), a user and a password with no
    /// raw `/`, `?` or `#` (a raw `@`, `:`, `[` or `]` is fine: `mysql://app:P@ss@db/app`,
    /// `redis://u[:p]@h`); over PostgreSQL, a user with no `/` or `?`, a password with no
    /// `@` that does not start with digits and then `/`, `?` or `,`, and credentials that
    /// do not start with an IPv6 address's `[…]`.
    pub(crate) fn promised(&self, postgres: bool) -> bool {
        if !postgres {
            return !self.user.contains(['/', '?', '#'])
                && !self.password.contains(['/', '?', '#']);
        }
        let digits = self.password.bytes().take_while(u8::is_ascii_digit).count();
        let port = digits > 0
            && matches!(
                self.password.as_bytes().get(digits),
                Some(b'/' | b'?' | b',')
            );
        let ipv6 = self.user.starts_with('[') && self.password.contains(']');
        !self.user.contains(['/', '?']) && !self.password.contains('@') && !port && !ipv6
    }

    /// The URL mistyped: `scheme:/…` for `scheme://…`, with a URL in its query
    /// (`mysql:/u:pw@h/db?x=a://b`), which the driver refuses or reads as it may.
    pub(crate) fn mistyped(&self) -> String {
        let url = self.url.replacen("://", ":/", 1);
        let join = if url.contains('?') { '&' } else { '?' };
        format!("{url}{join}x=a://b")
    }

    /// Whether `text` (a redacted URL, identity or message) shows a piece of the
    /// password: each piece holds an `X` or an `8`, and nothing else in the URL does.
    pub(crate) fn leaks_into(text: &str) -> bool {
        text.contains(['X', '8'])
    }
}

/// `scheme://user:password@host[:port][tail]`, and `scheme://user@host[:port][tail]`
/// (no password), for users `u`, ``, `u[`, `[`, `u/`, `u?` and `u#`; passwords of the
/// pieces `X`, `8`, `@`, `/`, `?`, `#`, `:`, `=`, `&`, `[`, `]`, `,`, `//X:` and
/// `foreign` (parameter names of other drivers, `?db=`): every one
/// of up to two pieces, every one of three of `X`, `8`, `@`, `/`, `?`, `#` and `:`, and
/// (seeded) samples of three to six of all; hosts `h`, `h:port` and `[::1]:port`; and
/// tails ``, `/0`, and for each of `values`, `/0?text=value` and `?text=value`, where
/// `text` is a parameter of this driver whose value may hold an `@`. Only a password
/// holds an `X` or an `8` ([`Meant::leaks_into`]), and every piece of it between the
/// characters drivers cut at holds one (but the names of `foreign`), so a redacted URL,
/// identity or message that shows a piece of the password shows one too.
#[cfg(all(test, any(feature = "redis", feature = "mysql", feature = "postgres")))]
pub(crate) fn meant_urls(
    scheme: &str,
    port: u16,
    foreign: &[&str],
    text: &str,
    values: &[&str],
) -> Vec<Meant> {
    let mut pieces = vec![
        "X", "8", "@", "/", "?", "#", ":", "=", "&", "[", "]", ",", "//X:",
    ];
    pieces.extend_from_slice(foreign);
    let users = ["u", "", "u[", "[", "u/", "u?", "u#"];
    let hosts = [
        ("h".to_owned(), "h".to_owned()),
        (format!("h:{port}"), "h".to_owned()),
        (format!("[::1]:{port}"), "::1".to_owned()),
    ];
    let mut tails = vec![(String::new(), false), ("/0".to_owned(), false)];
    for value in values {
        tails.push((format!("/0?{text}={value}"), true));
        tails.push((format!("?{text}={value}"), true));
    }
    let meant =
        |user: &str, password: String, host: &(String, String), tail: &(String, bool)| Meant {
            url: format!("{scheme}://{user}:{password}@{}{}", host.0, tail.0),
            user: user.to_owned(),
            password,
            host: host.1.clone(),
            port,
            param: tail.1,
        };
    let mut passwords = vec![String::new()];
    for a in &pieces {
        passwords.push((*a).to_owned());
        for b in &pieces {
            passwords.push(format!("{a}{b}"));
        }
    }
    let mut out = Vec::new();
    // No password: `scheme://user@host[:port][tail]`.
    for user in users {
        for host in &hosts {
            for tail in &tails {
                let mut m = meant(user, String::new(), host, tail);
                m.url = format!("{scheme}://{user}@{}{}", host.0, tail.0);
                out.push(m);
            }
        }
    }
    for password in &passwords {
        for user in users {
            for host in &hosts {
                for tail in &tails {
                    out.push(meant(user, password.clone(), host, tail));
                }
            }
        }
    }
    // Three pieces of the characters that decide where drivers cut, each with every user
    // and one host and tail in turn.
    let small = ["X", "8", "@", "/", "?", "#", ":"];
    let mut n = 0;
    for a in small {
        for b in small {
            for c in small {
                for user in users {
                    let host = &hosts[n % hosts.len()];
                    let tail = &tails[n / hosts.len() % tails.len()];
                    out.push(meant(user, format!("{a}{b}{c}"), host, tail));
                    n += 1;
                }
            }
        }
    }
    let mut rng = fastrand::Rng::with_seed(0x7572_6c73);
    for _ in 0..3000 {
        let len = rng.usize(3..=6);
        let password: String = (0..len)
            .map(|_| pieces[rng.usize(..pieces.len())])
            .collect();
        let user = users[rng.usize(..users.len())];
        let host = &hosts[rng.usize(..hosts.len())];
        let tail = &tails[rng.usize(..tails.len())];
        out.push(meant(user, password, host, tail));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The one forward pass over a query's `@`s answers as asking each anew does, and a
    /// text of many `@`s in known values (which asking each anew took quadratic time
    /// over) is read.
    #[test]
    fn known_values_are_read_in_one_pass() {
        let anew = |after: &str, limit: usize, reader: Reader, i: usize| {
            let tail = &after[i + 1..];
            let host_follows = tail
                .find(['/', '?', '&'])
                .is_some_and(|j| tail.as_bytes()[j] != b'&');
            let in_fragment = reader != Reader::Postgres && after[..i].contains('#');
            i > limit
                && !host_follows
                && !in_fragment
                && after[limit + 1..i]
                    .rsplit('&')
                    .next()
                    .is_some_and(|param| reader.knows_text(param))
        };
        let pieces = [
            "@", "&", "=", "/", "?", "#", "user", "socket", "tls_ca", "x", "db",
        ];
        let mut rng = fastrand::Rng::with_seed(0x6b6e_6f77);
        for n in 0..20_000 {
            let len = rng.usize(1..12);
            let mut after = "@".to_owned();
            for _ in 0..len {
                after.push_str(pieces[rng.usize(..pieces.len())]);
            }
            let limit = after.find('/').map_or(after.len(), |slash| {
                after[slash..].find('?').map_or(after.len(), |q| slash + q)
            });
            let reader = [
                Reader::MySql,
                Reader::RedisTcp,
                Reader::Bare,
                Reader::Postgres,
            ][n % 4];
            let mut known = KnownValues::new(&after, limit, reader);
            for (i, _) in after.match_indices('@') {
                assert_eq!(
                    known.holds(i),
                    anew(&after, limit, reader, i),
                    "{after} {i}"
                );
            }
        }
        let text = format!("mysql://u:pw@h/db?user={}", "a@".repeat(2030));
        assert!(text.len() <= MAX_REDACTED);
        for _ in 0..50 {
            assert_eq!(redact_url(&text), text.replacen(":pw@", ":***@", 1));
        }
    }

    #[test]
    fn parses_names_args_and_urls() {
        let s = Spec::parse("file-lock:/tmp/x").unwrap();
        assert_eq!((s.name(), s.arg()), ("file-lock", Some("/tmp/x")));
        let s = Spec::parse("redis://:pw@h:1/0").unwrap();
        assert_eq!((s.name(), s.arg()), ("redis", Some("redis://:pw@h:1/0")));
        // A scheme is case-insensitive; the URL the driver gets has it in lower case.
        let s = Spec::parse("Postgres://U@H/Db").unwrap();
        assert_eq!((s.name(), s.arg()), ("postgres", Some("postgres://U@H/Db")));
        assert!(Spec::parse("").is_err());
        assert!(Spec::parse(":x").is_err());
    }

    #[test]
    fn redacts_passwords() {
        assert_eq!(redact_url("redis://u:secret@h:1/0"), "redis://u:***@h:1/0");
        assert_eq!(redact_url("redis://h:1"), "redis://h:1");
        assert!(!format!("{:?}", Spec::parse("mysql://r:pw@h/db").unwrap()).contains("pw"));
    }

    #[test]
    fn redacts_passwords_in_user_info_query_and_key_values() {
        for (text, shown) in [
            // User info: without a user, with a raw `/` or `@` in the password, in a spec
            // whose argument is the URL.
            ("redis://:secret@h:1", "redis://:***@h:1"),
            // Leading spaces, which the `url` crate trims, hide no user info.
            (
                " mysql://root@127.0.0.1:3306/test",
                " mysql://root@127.0.0.1:3306/test",
            ),
            ("postgres://u:se/cr@et@h/db", "postgres://u:***@h/db"),
            // A raw `?` or `#` in the password is not a query or a fragment.
            ("postgres://u:pa?ss@h/db", "postgres://u:***@h/db"),
            (
                "mysql://u:s3cr?t@127.0.0.1:3306/test?prefer_socket=false",
                "mysql://u:***@127.0.0.1:3306/test?prefer_socket=false",
            ),
            ("redis://:p?w@h:6379/0", "redis://:***@h:6379/0"),
            ("redis://:p#w@h:6379/0", "redis://:***@h:6379/0"),
            ("postgres://u@h/db?x=1", "postgres://u@h/db?x=1"),
            (
                "pg-xact:postgres://u:secret@h/db",
                "pg-xact:postgres://u:***@h/db",
            ),
            // Query parameters, whatever their case, and the rest kept.
            (
                "redis+unix:///tmp/r.sock?db=2&pass=secret",
                "redis+unix:///tmp/r.sock?db=2&pass=***",
            ),
            (
                "unix:///tmp/r.sock?PASS=secret&db=1#frag",
                "unix:///tmp/r.sock?PASS=***&db=1#frag",
            ),
            (
                "postgres://u@h/db?password=secret&sslpassword=secret&sslmode=disable",
                "postgres://u@h/db?password=***&sslpassword=***&sslmode=disable",
            ),
            (
                "redis://u:secret@h/0?pass=secret",
                "redis://u:***@h/0?pass=***",
            ),
            ("rediss://h/0#insecure", "rediss://h/0#insecure"),
            // A password that starts with `//`: from its first `:`, also after a user
            // with a raw `/`, and so is a URL in a query.
            ("mysql://app://Xy:7k9@db/app", "mysql://app:***@db/app"),
            ("mysql://://Xy:7k9@h", "mysql://:***@h"),
            ("mysql://u/:///Xy:7k9@h", "mysql://u/:***@h"),
            (
                "redis://h/0?next=redis://u:pw@h2",
                "redis://h/0?next=redis:***@h2",
            ),
            // A `#` is no fragment (the PostgreSQL driver reads it as part of a value).
            (
                "postgres://h/db?password=ab#cd&sslmode=disable",
                "postgres://h/db?password=***&sslmode=disable",
            ),
            (
                "postgres://u@h/db#x?password=secret",
                "postgres://u@h/db#x?password=***",
            ),
            // No `://`: a mistyped URL, or a spec's argument, with user info.
            ("mysq:/u:hunter2@h/db", "mysq:***@h/db"),
            ("postgres:u:hunter2@h/db", "postgres:***@h/db"),
            ("postgres//u:pa@ss@h/db", "postgres//u:***@h/db"),
            // … with a query, or a `=` in the password.
            (
                "postgres:/app:s3cret@db/app?sslmode=require&password=x",
                "postgres:***@db/app?sslmode=require&password=***",
            ),
            ("postgres:u:abc==@h/db", "postgres:***@h/db"),
            // A spec's argument, as `Spec::parse` cuts it, and query passwords anywhere.
            ("u:hunter2@h/db", "u:***@h/db"),
            ("/u:hunter2@h/db", "/u:***@h/db"),
            ("u:abc==@h/db", "u:***@h/db"),
            ("mysq:/u:pa:ss@h", "mysq:***@h"),
            // A password that starts with `/`.
            ("postgres:u:/pw@h/db", "postgres:***@h/db"),
            ("u:/pw@h/db", "u:***@h/db"),
            ("mysq:/u:/pw@h/db", "mysq:***@h/db"),
            // … and with a URL after it: what precedes that URL's scheme is read too.
            ("mysql:/u:pw@h/db?x=a://b", "mysql:***@h/db?x=a://b"),
            ("redis:/u:s3cret@h/0?x=a://b", "redis:***@h/0?x=a://b"),
            ("u:pw@h/db?next=redis://h", "u:***@h/db?next=redis://h"),
            ("mysql:/u:///Xy:7k9@h", "mysql:***@h"),
            ("mysql:/u:a://Xy@h", "mysql:***@h"),
            // A name, then a `:` and a scheme that no driver reads: the `:` may be a
            // password's (the user `u`, the password `a://b`). Before a driver's scheme,
            // it is a name and a URL.
            ("u:a://b@h", "u:***@h"),
            ("app:s3cr://et@db/app", "app:***@db/app"),
            (" app:Pa://ss@db", " app:***@db"),
            ("pg-xact:postgres://u@h/db", "pg-xact:postgres://u@h/db"),
            ("x:QUEUE+Postgres://u@h/db", "x:QUEUE+Postgres://u@h/db"),
            (
                "x:redis+unix:///run/u@h.sock",
                "x:redis+unix:///run/u@h.sock",
            ),
            ("x:my\nsql://u@h/db", "x:my\nsql://u@h/db"),
            ("a://b@h", "a://b@h"),
            (
                "pg-xact:postgres://u:secret@h/db?x=a://b",
                "pg-xact:postgres://u:***@h/db?x=a://b",
            ),
            // An `@` in the query is no user info's.
            (
                "mysql://db.example.com:3306/app?user=alice@corp&password=s3cret",
                "mysql://db.example.com:3306/app?user=alice@corp&password=***",
            ),
            // … but the PostgreSQL driver reads credentials up to the first `@`.
            (
                "postgres://db:5432/app?application_name=deploy@ci",
                "postgres://db:***@ci",
            ),
            (
                "mysq:/h:3306/db?user=a@b&password=x",
                "mysq:***@b&password=***",
            ),
            // A key=value string as a spec's argument, with an `@` in the password.
            (
                "postgres:host=db user=app password=p@ssw0rd",
                "postgres:host=db user=app password=***",
            ),
            (
                "mysql:user=root password=p@ss/w0rd host=db",
                "mysql:user=root password=*** host=db",
            ),
            // An unquoted password with blanks, up to the next keyword.
            (
                "host=db password=correct horse battery port=5432",
                "host=db password=*** port=5432",
            ),
            // A line break in a parameter's name, which the `url` crate drops.
            (
                "mysql://h/db?pass\nword=s3cret",
                "mysql://h/db?pass\nword=***",
            ),
            // A relative file-lock directory with an `@`.
            ("file-lock:locks@v2", "file-lock:locks@v2"),
            (
                "queue+file-lock:./run@blue/locks",
                "queue+file-lock:./run@blue/locks",
            ),
            (
                "redis+unix:/tmp/r.sock?db=2&pass=x",
                "redis+unix:/tmp/r.sock?db=2&pass=***",
            ),
            ("/tmp/r.sock?db=2&pass=x", "/tmp/r.sock?db=2&pass=***"),
            (
                "postgres:/u@h/db?sslmode=disable&password=x",
                "postgres:***@h/db?sslmode=disable&password=***",
            ),
            (
                "postgres:/h/db?user=a@b&password=x",
                "postgres:***@b&password=***",
            ),
            ("x:u:pw@h password=y", "x:***@h password=***"),
            ("racy-version:100", "racy-version:100"),
            // A `/` and a `?` before the `@` that ends the user info.
            (
                "postgres://app:Xy/9?k@db.internal/app",
                "postgres://app:***@db.internal/app",
            ),
            ("postgres://u/x:pw?y@h/db", "postgres://u/x:***@h/db"),
            (
                "queue+postgres://u:a/b?c@h/db",
                "queue+postgres://u:***@h/db",
            ),
            ("redlock://:a/b?c@h1,h2,h3", "redlock://:***@h1,h2,h3"),
            ("postgres:/u:pa?ss@h/db", "postgres:***@h/db"),
            ("/u:pa?ss@h/db", "/u:***@h/db"),
            ("postgres:///u:pa?ss@h/db", "postgres:///u:***@h/db"),
            // A URL after `NAME=` or a blank.
            (
                "DATABASE_URL=postgres://app:s3cret@db/app",
                "DATABASE_URL=postgres://app:***@db/app",
            ),
            ("x=y postgres://u:pw@h", "x=y postgres://u:***@h"),
            // An `@` and a later `/` in the password.
            ("postgres://u:p@ss/w@h/db", "postgres://u:***@h/db"),
            // A port before an `@` in the query, without a path.
            (
                "mysql://h:3306?prefer_socket=false&user=a@b",
                "mysql://h:3306?prefer_socket=false&user=a@b",
            ),
            (
                "mysql://[::1]:3306/db?user=a@b",
                "mysql://[::1]:3306/db?user=a@b",
            ),
            // A password that starts with digits and a `/`, `?` or `,`.
            ("postgres://app:12/ab@db/app", "postgres://app:***@db/app"),
            ("postgres://app:123?xyz@db/app", "postgres://app:***@db/app"),
            ("mysql://app:2024/Summer@db/app", "mysql://app:***@db/app"),
            // An unclosed quote or a trailing `\` before a password.
            (
                "postgres:host=db user='app password=hunter2",
                "postgres:host=db user='app password=***",
            ),
            ("host=db\\ password=x", "host=db\\ password=***"),
            // A mistyped URL as the value of `NAME=`.
            (
                "DATABASE_URL=mysql:/u:pw@h/db",
                "DATABASE_URL=mysql:***@h/db",
            ),
            // A password of digits, a `/` or `,`, then a `?`: no port.
            ("mysql://app:2024/Summer?@db/app", "mysql://app:***@db/app"),
            ("redis://:7?k2Lm9x@h:6379/0", "redis://:***@h:6379/0"),
            ("rediss://u:3,x?y@h:6380/0", "rediss://u:***@h:6380/0"),
            // A raw `&` in a query's password.
            (
                "mysql://app@db/app?password=Xy7&k9",
                "mysql://app@db/app?password=***",
            ),
            (
                "redis+unix:///run/redis.sock?pass=Xy7&k9&db=1",
                "redis+unix:///run/redis.sock?pass=***&db=1",
            ),
            // An `@` before a `/…?` in user info.
            ("mysql://u:p@ss/w?rd@h/db", "mysql://u:***@h/db"),
            (
                "mysql://alice@corp.com:ab/cd?ef@h/db",
                "mysql://alice@corp.com:***@h/db",
            ),
            // A raw `&` in a query password, a `=` after it.
            (
                "postgres://app@db/app?password=Xy7&k=9&sslmode=require",
                "postgres://app@db/app?password=***&sslmode=require",
            ),
            (
                "redis+unix:///run/redis.sock?pass=Xy7&k=9&db=1",
                "redis+unix:///run/redis.sock?pass=***&db=1",
            ),
            // A password of digits, `?` and `=`, with no user: no port without a host.
            ("redis://:7?Kx=9@cache:6379/0", "redis://:***@cache:6379/0"),
            // A user with `@` and a password with `/`, `?` and `=`.
            (
                "mysql://alice@corp.com:7WX/?k2=q@db:3306/app",
                "mysql://alice@corp.com:***@db:3306/app",
            ),
            // A password that starts with `//`.
            (
                "redis://app://Xy7k9@cache:6379/0",
                "redis://app:***@cache:6379/0",
            ),
            // The PostgreSQL driver's password starts at the first `:` of its
            // credentials, whatever comes before it: no scheme's `//`, no IPv6 brackets.
            (
                "postgres://app://Xy:7k9@db/app",
                "postgres://app:***@db/app",
            ),
            (
                "postgresql://app://Xy:7k9@db/app",
                "postgresql://app:***@db/app",
            ),
            (
                "pg-xact:postgres://app://Xy:7k9@db/app",
                "pg-xact:postgres://app:***@db/app",
            ),
            ("postgres://a[b:pw@h/db", "postgres://a[b:***@h/db"),
            ("postgres://[::1]:5432/db?x=a@b", "postgres://[:***@b"),
            // A `[` in the user info where no host starts: the `url` crate's password
            // starts at the first `:` all the same.
            ("redis://u[:p]@h", "redis://u[:***@h"),
            ("redis://[:a]@h", "redis://[:***@h"),
            ("redis://u:p[@x]@h", "redis://u:***@h"),
            ("mysql://u[:p]@h/db", "mysql://u[:***@h/db"),
            (
                "rediss://[::1]:6380/0?tls_ca=/u@h/ca.pem",
                "rediss://[::1]:6380/0?tls_ca=/u@h/ca.pem",
            ),
            // A password of digits, a `?` and a `name=value`: the `url` crate reads a
            // port (host `u`, port 12), unless the `@` is in the value of a parameter
            // the scheme's driver knows.
            ("redis://u:12?x=1@h/0", "redis://u:***@h/0"),
            // More `@`s than readings tried: the `url` crate's own is masked all the same.
            (
                &format!("redis://u:p{}h:6379", "@".repeat(24)),
                "redis://u:***@h:6379",
            ),
            ("mysql://u:7?a=b@h:3306", "mysql://u:***@h:3306"),
            ("redis://h:6379/0?user=a@b", "redis://h:***@b"),
            ("mysql://h:3306/db?user=a@b", "mysql://h:3306/db?user=a@b"),
            // Absurdly long text is not read.
            (&"://@".repeat(2000), "[8000 bytes, not shown]"),
            // A password all digits, and one in user info with a query `@` after it.
            ("redis://:1234@h:6379", "redis://:***@h:6379"),
            ("mysql://u:pw@h/db?user=a@b", "mysql://u:***@h/db?user=a@b"),
            // … but with a `/` after it, it may end user info, and start a host's path.
            ("mysql://u:pw@h/db?user=a@b/c@d", "mysql://u:***@b/c@d"),
            // … and after a `#`, it is in the `url` crate's fragment, not the value.
            ("mysql://u:pw@h/db?user=a#x@b", "mysql://u:***@b"),
            // The PostgreSQL driver reads a `#` as part of a value.
            (
                "postgres://u:pw@h/db?application_name=a#x@b",
                "postgres://u:***@h/db?application_name=a#x@b",
            ),
            // Two readings that overlap are one mask.
            ("postgres:password=p@ss", "postgres:***"),
            // A path with an `@` is no user info.
            (
                "file-lock:/srv/app@blue/locks",
                "file-lock:/srv/app@blue/locks",
            ),
            ("queue+file-lock:/srv/a@b", "queue+file-lock:/srv/a@b"),
            // Names percent-encoded, as drivers decode them (tokio-postgres, url).
            (
                "postgres://u@h/db?pass%77ord=secret&sslmode=disable",
                "postgres://u@h/db?pass%77ord=***&sslmode=disable",
            ),
            (
                "redis+unix:///r.sock?%70%61%53%73=secret&db=%70ass",
                "redis+unix:///r.sock?%70%61%53%73=***&db=%70ass",
            ),
            (
                "postgres://h/db?sslpass%77%6Frd=secret",
                "postgres://h/db?sslpass%77%6Frd=***",
            ),
            // Not a name's encoding: kept as it is.
            (
                "postgres://h/db?pass%7=x&pass%=y",
                "postgres://h/db?pass%7=x&pass%=y",
            ),
            // libpq key=value strings: plain, spaced, quoted with escapes, unclosed.
            (
                "host=127.0.0.1 password=secret port=notaport",
                "host=127.0.0.1 password=*** port=notaport",
            ),
            (
                "host=h password = 'se cr\\'et' port=1",
                "host=h password = *** port=1",
            ),
            ("password=se\\ cret dbname=d", "password=*** dbname=d"),
            ("user=u password='secret", "user=u password=***"),
            (
                "host=h options='-c a://b' password=secret",
                "host=h options='-c a://b' password=***",
            ),
            // Nothing to mask.
            ("file-lock:/var/lock/app", "file-lock:/var/lock/app"),
            ("host=h port=5432", "host=h port=5432"),
            ("queue", "queue"),
            ("", ""),
        ] {
            assert_eq!(redact_url(text), shown, "{text}");
        }
        // The longest texts it reads, built to make it try the most readings: read
        // through (a cost that grew with the cube of the length once hung on such text).
        for unit in ["://@", "://:@", "://?pass=x&", ":@", "[:@", "a:1/?@", "a="] {
            let text = unit.repeat(MAX_REDACTED / unit.len());
            assert!(!redact_url(&text).is_empty());
        }
        let spec = Spec::parse("redis+unix:///tmp/r.sock?db=2&pass=hunter2").unwrap();
        assert!(!format!("{spec:?}").contains("hunter2"));
        // A spec's argument is redacted as it is cut: without its name.
        for text in [
            "postgres:u:hunter2@h/db",
            "mysql:/u:hunter2@h/db",
            "mutex:u:hunter2==@h/db",
            "redis+unix:/tmp/r.sock?db=2&pass=hunter2",
        ] {
            let spec = Spec::parse(text).unwrap();
            assert!(!format!("{spec:?}").contains("hunter2"), "{text}: {spec:?}");
        }
    }

    /// A spec refused for its form never repeats a password.
    #[test]
    fn a_drivers_message_loses_the_pieces_of_a_password() {
        let url = "mysql://app@db/app?password=Xy7&k9";
        assert_eq!(
            redact_message(url, "Unknown URL parameter `k9'"),
            "Unknown URL parameter `***'"
        );
        assert_eq!(
            redact_message("postgres://u:s3cret@h/db", "s3cret is wrong, s3crets kept"),
            "*** is wrong, s3crets kept"
        );
        assert_eq!(redact_message("redis://h/0", "no secret"), "no secret");
        let url = "mysql://app@db/app?password=Xy7&k+9&prefer_socket=false";
        assert_eq!(
            redact_message(url, "Unknown URL parameter `k 9'"),
            "Unknown URL parameter `***'"
        );
        let url = "mysql://app@db/app?password=Xy7&k=9";
        assert_eq!(
            redact_message(url, "Unknown URL parameter `k'"),
            "Unknown URL parameter `***'"
        );
        // The driver read `7` as a port and `a=b@h:3306` as the query.
        assert_eq!(
            redact_message("mysql://u:7?a=b@h:3306", "Unknown URL parameter `a'"),
            "Unknown URL parameter `***'"
        );
    }

    /// The examples of URLs whose user info drivers read differently, each with the
    /// password's pieces a driver would show as the host, user or database.
    const AMBIGUOUS: [(&str, &[&str]); 54] = [
        // A raw `@` in the password, then a `#`, `/` or `?`: the `url` crate's authority
        // ends there, its user info at the `@` before it, and its host is `ssw0rd`.
        ("redis://:P@ssw0rd#1@cache:6379/0", &["ssw0rd", "P@ss"]),
        ("redis://:P@ssw0rd#1@h1:6379", &["ssw0rd"]),
        ("rediss://u:P@ss/w0rd@cache:6380/0", &["ss/w0rd", "P@ss"]),
        ("mysql://app:P@ssw0rd#1@db/app", &["ssw0rd"]),
        ("mysql://app:P@ss?w0rd!@db/app", &["ss?w0rd", "w0rd!"]),
        // The same in the value of a parameter no driver knows.
        ("mysql://app:P@ss?x=1@db/app", &["P@ss", "x=1"]),
        // No `@` before the `?`: the `url` crate reads `1234` as a port.
        ("mysql://app:1234?abc@h/db", &["1234", "abc"]),
        ("redis://x:12/5?a@h", &["12/5"]),
        // An `@` in the database name reads as a raw `@` and `/` in a password
        // (`app:P@ss/1@db`): the driver's host would be `ss`.
        ("mysql://u:pw@h/my@db", &["pw@h"]),
        ("postgres://u:pw@h/my@db", &["pw@h"]),
        // A raw `@` in the password: the PostgreSQL driver ends the user info at the
        // first `@`.
        ("postgres://app:P@ssw0rd/1@db/app", &["ssw0rd", "1@db"]),
        ("postgresql://app:P@ss@db/app", &["P@ss"]),
        // A query before the first `@`: the PostgreSQL driver's user holds it.
        (
            "postgres://h/db?password=Xy7k9&application_name=a@b",
            &["Xy7k9"],
        ),
        // A host and port before the first `@`: the PostgreSQL driver reads the host as
        // the user and the rest as the password, and connects to `b` or `ci`.
        ("postgres://h:5432/db?application_name=a@b", &[]),
        ("postgres://[::1]:5432/db?application_name=a@b", &[]),
        ("postgres://h1:5432,h2:5433/db?application_name=a@b", &[]),
        ("postgres://db:5432/app?application_name=deploy@ci", &[]),
        ("postgres://h:5432?application_name=a@b", &[]),
        // So does a password that starts with digits and then a `/`.
        ("postgres://u:12/ab@h/db", &["12/ab"]),
        // More `@`s than readings tried.
        ("mysql://u:p@@@@@@@@@@@@@@@@@@@h/db", &["p@@@"]),
        // A password of digits, then a `?` or `/` and a `name=value`: the `url` crate
        // reads a host `u` and a port 12, unless the `@` is in the value of a parameter
        // that the scheme's driver knows, and `user` is none of Redis over TCP.
        ("redis://u:12?x=1@h/0", &["12", "x=1"]),
        ("redis://u:12/0?x=1@h", &["12/0", "x=1"]),
        ("mysql://u:7?a=b@h:3306", &["7?", "a=b"]),
        ("redis://h:6379/0?user=a:b@c", &["6379/0", "user=a"]),
        // An `@` in the value of a parameter other drivers know, but not this one.
        ("redis://:P@ss?db=1@cache", &["P@", "ss?db"]),
        ("redis://:P@ss/0?db=1@cache", &["P@", "ss/0"]),
        ("mysql://app:P@ss?dbname=1@db/app", &["P@", "ss?"]),
        ("postgres://u:pw@h/db?db_name=a@b", &["pw@h"]),
        // … or in the fragment after a known value (`?user=a#x@b` is the user `a`):
        // where the `url` crate reads the URL, a `#` ends the query.
        ("mysql://u:pw@h/db?user=a#x@b", &["pw@h", "#x"]),
        ("redis://u:pw@h/0?tls_ca=a#x@b", &["pw@h", "#x"]),
        // So with a port's colon before it and no password.
        ("mysql://h:3306/db?user=a#x@b", &["#x"]),
        ("redis://h:6379/0?tls_ca=a#x@b", &["#x"]),
        ("mysql://u:7?user=a#Xy9@db/app", &["Xy9"]),
        // A `[` that starts no IPv6 address hides no password colon.
        ("redis://[:X/@h", &["X/"]),
        ("redis://u[:p]?x=1@h", &["p]?", "x=1"]),
        // So does a password of digits and then a `#`.
        ("redis://u:12#x@h", &["12#", "x"]),
        ("mysql://u:12#x@h/db", &["12#", "x"]),
        // A password that starts with `//`: the `url` crate reads the host `app`, an
        // empty port and the path `//Xy:7k9@db/app`.
        ("mysql://app://Xy:7k9@db/app", &["Xy", "7k9"]),
        ("redis://app://Xy:7k9@cache:6379/0", &["Xy", "7k9"]),
        ("redlock://app://Xy:7k9@h1,h2,h3", &["Xy", "7k9"]),
        ("mysql://://Xy:7k9@h", &["Xy", "7k9"]),
        // A user with a raw `/`, `?` or `#`: the `url` crate's host ends there, and the
        // rest (the password too) is its path, query or fragment.
        ("mysql://us/er:Xy7@h/db", &["Xy7"]),
        ("mysql://us?er:Xy7@h/db", &["Xy7"]),
        ("redis://us#er:Xy7@h/0", &["Xy7"]),
        ("redis://a@b/c:Xy7@h/0", &["Xy7"]),
        // … also without a password: the `url` crate's host is `us`, and so is an `@` in
        // a database name (or query) without one.
        ("redis://us?er@cache:6379/0", &[]),
        ("mysql://us/er@h/db", &[]),
        ("redis://us#er@h/0", &[]),
        ("mysql://h/my@db", &[]),
        ("mysql://h/db?x=a@b", &[]),
        ("redlock://h1,h2/0?x=a@b", &[]),
        // … and with user info before the host: every `@` past the host counts.
        ("mysql://u@h/my@db", &[]),
        ("redis://x@us?er@cache/0", &[]),
        ("redis://u@h/0#a@b", &[]),
    ];

    #[test]
    fn user_info_that_drivers_read_differently_is_ambiguous() {
        for (url, pieces) in AMBIGUOUS {
            assert!(userinfo_is_ambiguous(url), "{url}");
            let refused = refuse_ambiguous_userinfo("Test", url)
                .unwrap_err()
                .to_string();
            assert!(refused.contains("%40"), "{refused}");
            assert!(refused.contains(&redact_url(url)), "{refused}");
            for piece in pieces {
                assert!(!refused.contains(piece), "{refused}");
            }
        }
        for url in [
            "redis://h:6379",
            "redis://u:secret@127.0.0.1:7/3",
            "redis://:p%40ss%23w@cache:6379/0",
            "rediss://h/0#insecure",
            "redis+unix:///tmp/r.sock?db=2&pass=secret",
            // An `@` (and a `:`) in a query's value, after the host, with IPv6 or more
            // hosts, or in the socket path's query.
            "redis+unix:///run/redis.sock?pass=a:b@c",
            "mysql://h:3306/db?user=a:b@c",
            "mysql://u:pw@h/db?user=a@b",
            "mysql://x@[::1]:3306/db?user=a@b",
            "redis+unix:///run/redis.sock?user=a@b&pass=x",
            "rediss://[::1]:6380/0?tls_ca=/etc/u@h/ca.pem",
            // The same, percent-encoded.
            "redis://u:12%3Fx=1@h/0",
            "redis://:P%40ss%3Fdb=1@cache",
            // A `[` in the user info: the `url` crate's password starts at the first `:`.
            "redis://u[:p]@h",
            "mysql://u[:p]@h/db",
            "redis://u:p[@x]@h",
            "mysql://[::1]:3306/db?user=a@b",
            "mysql://u:pw@[::1]:3306/db?prefer_socket=false",
            "mysql://h:3306?prefer_socket=false&user=a@b",
            "mysql://alice@corp@h/db",
            // Percent-encoded, an `@` in a database name; raw, one in a socket's path,
            // which no host precedes.
            "mysql://h/my%40db",
            "mysql://u@h/my%40db",
            "redis+unix:///run/u@h/redis.sock",
            "mysql://h/db?user=a@b",
            "postgres://u@h/db?application_name=a@b",
            "postgres://u:pw@h/db?application_name=a@b",
            "postgres://u:pw@h1:5432,h2:5433/db",
            "postgres://u:pw@[::1]:5432/db",
            "postgres://u:pa?ss@h/db",
            "postgres://u:se/cr#et@h/db",
            "postgres://u@%2Frun%2Fpostgresql/db",
            "postgres:///db?host=/run/postgresql",
            // A raw `@` in the password, where the `url` crate's user info ends at the
            // last `@` before the host: read as written.
            "mysql://app:P@ss@db/app",
            "redis://:P@ssw0rd@cache:6379/0",
            "redis://u:P@ss@w0rd@h:6379",
            "redlock://:P@ss@h1,h2,h3",
            // An `@` in the value of a parameter drivers know, with a `/` after it.
            "postgres://u:pw@h/db?application_name=deploy@ci/job",
            "postgres://u:pw@h/db?application_name=a#x@b",
            "rediss://:pw@h:6380/0?tls_ca=/etc/u@h/ca.pem",
            "mysql://u:pw@h?user=a@b",
            "mysql://u:pw@h/db?socket=/run/u@h/mysqld.sock",
            // … whatever follows it in the value: no user info holds `?user=`.
            "mysql://h/db?user=a@b/c@d",
            "mysql://u:pw@h/db?user=a@b/c@d",
            "mysql://h/db?socket=/run/u@h/mysqld.sock",
            // A PostgreSQL password of digits, or with digits not followed by `/`, `?`
            // or `,`.
            "postgres://u:1234@h/db",
            "postgres://u:12ab/x@h/db",
            // libpq key=value strings have no user info.
            "host=db user=app password=p@ss/w?rd#1@x",
            "host=h options='-c a://b@c' password=secret",
            "",
        ] {
            assert!(!userinfo_is_ambiguous(url), "{url}");
            assert!(refuse_ambiguous_userinfo("Test", url).is_ok(), "{url}");
        }
    }

    /// A `%` that starts no percent-escape in the user info or a password parameter is
    /// refused, naming the part and never showing the password; a `%` elsewhere, and
    /// every well-formed escape, is left to the driver.
    #[test]
    fn a_stray_percent_in_user_info_or_a_password_is_refused_without_showing_it() {
        for (url, part) in [
            ("redis://u:secret%zzpw@127.0.0.1:6379", "password"),
            ("rediss://:secret%zzpw@h:6380/0", "password"),
            ("redlock://:secret%zzpw@h1,h2,h3/0", "password"),
            ("redis://u:secret%4@h/0", "password"),
            ("redis://u:secret%@h/0", "password"),
            ("mysql://root:secret%zzpw@127.0.0.1:3306/test", "password"),
            ("mysql://ro%zzot:secretpw@h/db", "user"),
            ("mysql://app:secret%zzpw@db@h/app", "password"),
            (
                "postgres://postgres:secret%zzpw@127.0.0.1:5432/test",
                "password",
            ),
            ("postgresql://u%g1:secretpw@h/db", "user"),
            (
                "postgres://u@h/db?password=secret%zzpw",
                "password parameter",
            ),
            (
                "postgres://u@h/db?pass%77ord=secret%zzpw",
                "password parameter",
            ),
            (
                "redis+unix:///tmp/r.sock?db=2&pass=secret%zzpw",
                "password parameter",
            ),
        ] {
            let refused = refuse_ambiguous_userinfo("Test", url)
                .unwrap_err()
                .to_string();
            assert!(
                refused.contains(&format!(
                    "its {part} holds a `%` that starts no percent-escape"
                )) && refused.contains("%25"),
                "{url}: {refused}"
            );
            assert!(refused.contains(&redact_url(url)), "{url}: {refused}");
            assert!(!refused.contains("secret"), "{url}: {refused}");
        }
        for url in [
            "redis://u:secret%25zz%40pw@127.0.0.1:6379",
            "redis://u:p%2fs%2Cs@h/0",
            "mysql://h/my%zzdb",
            "mysql://u:pw@h/db?user=a%zz",
            "postgres://u@h/db?application_name=50%",
            "postgres://u@h/db?password=p%41ss",
            "redis://h/0#frag%zz",
            "redis://h?x=1#pass=a%zz",
            "host=h password=secret%zz",
        ] {
            assert!(refuse_ambiguous_userinfo("Test", url).is_ok(), "{url}");
        }
    }

    /// The `url` crate trims leading spaces and control characters and drops tabs and
    /// line breaks: such a URL is read as the driver reads it, and text too long to read
    /// is refused.
    #[test]
    fn the_check_reads_a_url_as_the_url_crate_does() {
        for url in [
            " mysql://app:P@ss#1@db/app",
            "\u{1}mysql://app:P@ss#1@db/app ",
            "my\nsql://app:P@ss#1@db/app",
            "mysql://app:P@ss#1@d\tb/app",
        ] {
            let refused = refuse_ambiguous_userinfo("MySQL", url);
            assert!(matches!(refused, Err(Error::Config(_))), "{url:?}");
        }
        assert!(refuse_ambiguous_userinfo("MySQL", " mysql://app:P@ss@db/app").is_ok());
        // The refusal shows the text as the check read it: a MySQL URL, whose driver
        // knows no `dbname`, so the `@` may end a password of digits, `?` and the rest.
        let url = "my\nsql://u:12?dbname=Xy7@h/db";
        let refused = refuse_ambiguous_userinfo("MySQL", url)
            .unwrap_err()
            .to_string();
        assert!(refused.contains("\"mysql://u:***@h/db\""), "{refused}");
        assert_eq!(redact_url(url), "my\nsql://u:***@h/db");
        let long = format!("mysql://u@h/{}", "d".repeat(MAX_REDACTED));
        assert!(matches!(
            refuse_ambiguous_userinfo("MySQL", &long),
            Err(Error::Config(_))
        ));
    }

    /// Every URL built from what a user means that the check accepts, the driver reads
    /// as meant (or refuses), every one the docs promise it accepts and reads as meant,
    /// and no redacted URL, identity or message shows a piece of its password.
    #[cfg(feature = "mysql")]
    #[test]
    fn the_mysql_driver_reads_every_accepted_url_as_meant() {
        use crate::resource::mysql::{identity, parse_url};
        let meant_urls = meant_urls(
            "mysql",
            3306,
            &["?db=", "&dbname="],
            "socket",
            &["a@b", "a@b/c@d"],
        );
        for m in meant_urls {
            m.check_driver(false, parse_url, identity, |opts| {
                let host = opts
                    .get_ip_or_hostname()
                    .trim_matches(['[', ']'])
                    .to_owned();
                let (user, password) = (opts.get_user(), opts.get_pass());
                (
                    user,
                    password.map(str::as_bytes),
                    host.to_owned(),
                    opts.get_tcp_port(),
                )
            });
        }
    }

    /// `MySql::new` refuses a URL that the driver would read with a piece of the
    /// password as its host and port, or with the rest of it as a parameter (which its
    /// message names), and shows neither.
    #[cfg(feature = "mysql")]
    #[test]
    fn mysql_refuses_a_password_read_as_a_port_without_showing_it() {
        for (url, pieces) in [
            ("mysql://u:7?a=b@h:3306", ["7?", "a=b"]),
            ("mysql://app:12/db?x=1@db/app", ["12/", "x=1"]),
            ("mysql://app:P@ss?dbname=1@db/app", ["P@", "ss?"]),
            ("mysql://u:12#x@h/db", ["12#", "x@"]),
            // The identity would be `mysql://@app:3306/`, the driver's host `app`.
            ("mysql://app://Xy:7k9@db/app", ["Xy", "7k9"]),
            // The driver's host `us`, its database `er:Xy7@h` (sent to `us`).
            ("mysql://us/er:Xy7@h/db", ["Xy7", "Xy"]),
        ] {
            let error = crate::resource::MySql::new(url).unwrap_err();
            let shown = error.to_string();
            assert!(matches!(error, Error::Config(_)), "{shown}");
            assert!(shown.contains("%40"), "{shown}");
            for piece in pieces {
                assert!(!shown.contains(piece), "{shown}");
            }
        }
        let db = crate::resource::MySql::new("mysql://u:7%3Fa=b@h:3306").unwrap();
        assert_eq!(db.identity(), "mysql://u@h:3306/");
        let db = crate::resource::MySql::new("mysql://u[:p]@h/db").unwrap();
        assert_eq!(db.identity(), "mysql://u[@h:3306/db");
        let db = crate::resource::MySql::new("mysql://h:3306/db?user=a@b").unwrap();
        assert_eq!(db.identity(), "mysql://a@b@h:3306/db");
        // An `@` in the value of a parameter the driver knows is the value's, whatever
        // follows it there.
        for (url, identity) in [
            ("mysql://h/db?user=a@b/c@d", "mysql://a@b/c@d@h:3306/db"),
            (
                "mysql://u:pw@h/db?user=a@b/c@d",
                "mysql://a@b/c@d@h:3306/db",
            ),
        ] {
            let db = crate::resource::MySql::new(url).unwrap();
            assert_eq!(db.opts().get_user(), Some("a@b/c@d"), "{url}");
            assert_eq!(db.identity(), identity, "{url}");
        }
        // A raw `@` in the database name, without a password too: `%40` it is.
        let refused = crate::resource::MySql::new("mysql://h/my@db").unwrap_err();
        assert!(refused.to_string().contains("%40"), "{refused}");
        let db = crate::resource::MySql::new("mysql://h/my%40db").unwrap();
        assert_eq!(db.opts().get_db_name(), Some("my@db"));
    }

    /// A mistyped URL (`:/`) with a `://` later on, which the driver refuses: its
    /// message shows no password.
    #[cfg(feature = "mysql")]
    #[test]
    fn mysql_refuses_a_mistyped_url_without_showing_its_password() {
        let error = crate::resource::MySql::new("mysql:/u:Xy7k9@h/db?x=a://b").unwrap_err();
        let shown = error.to_string();
        assert!(matches!(error, Error::Config(_)), "{shown}");
        assert!(shown.contains("\"mysql:***@h/db?x=a://b\""), "{shown}");
        assert!(!shown.contains("Xy7k9"), "{shown}");
    }

    /// As [`the_mysql_driver_reads_every_accepted_url_as_meant`], for PostgreSQL.
    #[cfg(feature = "postgres")]
    #[test]
    fn the_postgres_driver_reads_every_accepted_url_as_meant() {
        use crate::resource::postgres::{identity, parse_url};
        let meant_urls = meant_urls(
            "postgres",
            5432,
            &["?db=", "&socket="],
            "application_name",
            &["a@b", "a@b/c@d"],
        );
        for m in meant_urls {
            m.check_driver(true, parse_url, identity, |config| {
                let host = match config.get_hosts() {
                    [postgres::config::Host::Tcp(host)] => host.clone(),
                    other => format!("{other:?}"),
                };
                // One port, the meant one, or none that could be.
                let port = match config.get_ports() {
                    [port] => *port,
                    _ => 0,
                };
                (config.get_user(), config.get_password(), host, port)
            });
        }
    }

    #[test]
    fn a_drivers_message_keeps_only_what_the_redacted_url_shows() {
        for (url, message, shown) in [
            // The driver cut the password at a raw `?`, `/` or `@`, or read the query's
            // password as a parameter's value.
            (
                "mysql://app:P@ss?w0rd!@db/app",
                "UrlError { Unknown URL parameter `w0rd!@db/app' }",
                "UrlError { Unknown URL parameter `***' }",
            ),
            (
                "mysql://app:1234?abc@h/db",
                "UrlError { Unknown URL parameter `abc@h/db' }",
                "UrlError { Unknown URL parameter `***' }",
            ),
            (
                "mysql://app@db/app?password=Xy7&pool_min=x9",
                "UrlError { Invalid value `x9' for URL parameter `pool_min' }",
                "UrlError { Invalid value `***' for URL parameter `***' }",
            ),
            // What the redacted URL shows is kept, as it is or decoded.
            (
                "mysql://app:s3cret@db/app?pool_min=x9",
                "Invalid value `x9' for URL parameter `pool_min'",
                "Invalid value `x9' for URL parameter `pool_min'",
            ),
            (
                "mysql://app@db/app?pool%5Fmin=a+b",
                "Invalid value `a b' for URL parameter `pool_min'",
                "Invalid value `a b' for URL parameter `pool_min'",
            ),
            // A quoted value with a `'` in it goes whole.
            (
                "mysql://app@db/app?password=it's&pool_min=x",
                "Invalid value `it's' for URL parameter `pool_min'",
                "Invalid value `***' for URL parameter `***'",
            ),
            // Double quotes, an unclosed quote.
            (
                "mysql://u:pw@h/db",
                "bad \"pw\" and `pw",
                "bad \"***\" and `***",
            ),
            // A piece of a secret outside quotes, cut at any of `&=/?#@:`.
            (
                "postgres://u:ab12/cd34@h/db",
                "host cd34 is unknown, ab12 too",
                "host *** is unknown, *** too",
            ),
        ] {
            assert_eq!(redact_message(url, message), shown, "{url}");
        }
        // A URL too long to read: the message is not shown either.
        let long = format!("mysql://u:{}@h/db", "x".repeat(MAX_REDACTED));
        assert_eq!(
            redact_message(&long, "Unknown URL parameter `xxx'"),
            "[driver message not shown]"
        );
    }

    #[test]
    fn refusals_of_a_spec_hide_its_password() {
        let no_name = Spec::parse("://u:hunter2@h").unwrap_err().to_string();
        assert!(no_name.contains("has no name"), "{no_name}");
        assert!(!no_name.contains("hunter2"), "{no_name}");
        let spec = Spec::parse("mutex://u:hunter2@h/db").unwrap();
        let no_arg = spec.expect_no_arg().unwrap_err().to_string();
        assert!(no_arg.contains("takes no argument"), "{no_arg}");
        assert!(no_arg.contains("mutex://u:***@h/db"), "{no_arg}");
        assert!(!no_arg.contains("hunter2"), "{no_arg}");
        // Cut from the spec, the argument may read otherwise: `mutex:hunter2@h` may be the
        // user `mutex` with the password `hunter2`.
        let no_arg = Spec::parse("mutex:hunter2@h")
            .unwrap()
            .expect_no_arg()
            .unwrap_err()
            .to_string();
        assert!(no_arg.contains("(got \"***@h\")"), "{no_arg}");
        let no_arg = Spec::parse("mutex:/var/x")
            .unwrap()
            .expect_no_arg()
            .unwrap_err()
            .to_string();
        assert!(no_arg.contains("(got \"/var/x\")"), "{no_arg}");
        // A spec whose whole text is its name: a connection string given as a strategy.
        #[cfg(feature = "sqlite")]
        {
            let setup = Setup::new(crate::sqlite::Sqlite::new("unused.db"));
            let unknown = match Registry::builtin().open("host=db password=hunter2", &setup) {
                Err(e) => e.to_string(),
                Ok(_) => panic!("a connection string is no strategy"),
            };
            assert!(unknown.contains("unknown strategy"), "{unknown}");
            assert!(!unknown.contains("hunter2"), "{unknown}");
            // A mistyped URL whose password holds a `://`: the text before it is no name.
            for typo in [
                "mysql:/u:hunter2://x@h/db",
                "mysql:/u:a://Xy@h",
                "app:Xy://hunter2@db/app",
            ] {
                let unknown = match Registry::builtin().open(typo, &setup) {
                    Err(e) => e.to_string(),
                    Ok(_) => panic!("{typo} is no strategy"),
                };
                assert!(unknown.contains("unknown strategy"), "{unknown}");
                for piece in ["hunter2", ":a\"", "Xy"] {
                    assert!(!unknown.contains(piece), "{unknown}");
                }
            }
            // A known name and then no URL: the name may be the user, the argument its
            // password and host, which the factory's message shows as it redacts the
            // argument alone.
            #[cfg_attr(
                not(any(feature = "redis", feature = "postgres", feature = "mysql")),
                allow(unused_mut)
            )]
            let mut specs = vec!["mutex:hunter2@h", "retry:hunter2@h"];
            #[cfg(feature = "redis")]
            specs.extend(["redis:hunter2@h/0", "redlock:hunter2@h1,h2"]);
            #[cfg(feature = "postgres")]
            specs.extend([
                "postgres:hunter2@db/app",
                "postgresql:hunter2@127.0.0.1:1/app",
            ]);
            #[cfg(feature = "mysql")]
            specs.push("mysql:hunter2@127.0.0.1:1/app");
            // A password with a `"` or `\\`, which a message quoting with `{:?}` escapes.
            #[cfg(feature = "postgres")]
            specs.push("postgres:hunter2\"x@db/app");
            #[cfg(feature = "redis")]
            specs.push("redis:hunter2\\7k@h/0");
            #[cfg(feature = "mysql")]
            specs.push("mysql:hunter2\"&3@127.0.0.1:1/app");
            for spec in specs {
                let refused = match Registry::builtin().open(spec, &setup) {
                    Err(e @ Error::Config(_)) => e.to_string(),
                    Err(e) => panic!("{spec}: {e:?}"),
                    Ok(_) => panic!("{spec} was opened"),
                };
                assert!(!refused.contains("hunter2"), "{spec}: {refused}");
                assert!(
                    !refused.contains("7k") && !refused.contains("&3"),
                    "{spec}: {refused}"
                );
            }
        }
    }

    /// A server strategy named without its URL is told the URL's form, `queue+` and all.
    #[cfg(all(
        feature = "sqlite",
        any(feature = "redis", feature = "postgres", feature = "mysql")
    ))]
    #[test]
    fn a_server_strategy_without_a_url_is_told_its_form() {
        let setup = Setup::new(crate::sqlite::Sqlite::new("unused.db"));
        let mut expected: Vec<(&str, &str)> = Vec::new();
        #[cfg(feature = "redis")]
        expected.extend([
            ("redis", "redis://[user:password@]host[:port][/db]"),
            ("redlock", "redlock://[user:password@]host1[:port],"),
            ("redis+unix", "redis+unix:///path/to/redis.sock"),
        ]);
        #[cfg(all(feature = "redis", feature = "queue"))]
        expected.extend([
            (
                "queue+redis",
                "queue+redis://[user:password@]host[:port][/db]",
            ),
            (
                "queue+redlock",
                "queue+redlock://[user:password@]host1[:port],",
            ),
        ]);
        #[cfg(feature = "postgres")]
        expected.push(("postgres", "postgres://user:pass@host:port/db"));
        #[cfg(all(feature = "postgres", feature = "queue"))]
        expected.push(("queue+postgres", "queue+postgres://user:pass@host:port/db"));
        #[cfg(feature = "mysql")]
        expected.push(("mysql", "mysql://user:pass@host:port/db"));
        #[cfg(all(feature = "mysql", feature = "queue"))]
        expected.push(("QUEUE+MySQL", "queue+mysql://user:pass@host:port/db"));
        for (spec, form) in expected {
            let refused = match Registry::builtin().open(spec, &setup) {
                Err(e @ Error::Config(_)) => e.to_string(),
                Err(e) => panic!("{spec}: {e:?}"),
                Ok(_) => panic!("{spec} was opened"),
            };
            assert!(refused.contains("needs a"), "{spec}: {refused}");
            assert!(refused.contains(form), "{spec}: {refused}");
        }
    }
}
