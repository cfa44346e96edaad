//! Validated lock names and the stable mappings from a name to a backend's key space.
//!
//! A [`Key`] is what callers serialize on: one row, one object, one account, or the
//! whole database. Backends have narrow key spaces (a 64-bit integer for PostgreSQL, 64
//! characters for MySQL, a fixed set of stripe files for `flock`), so every mapping from a
//! key to them goes through [`stable_hash64`], whose output is fixed forever: two
//! releases of turnstile, or two processes built by different compilers, must agree on
//! which backend lock a key means.

use std::borrow::Borrow;
use std::fmt;

/// The longest key accepted, in bytes of UTF-8.
///
/// Long enough for any sensible composite name (`"Notification|123456"`), short enough
/// that a key can be logged and hashed without thought.
pub const MAX_KEY_LEN: usize = 256;

/// A validated lock name: non-empty, at most [`MAX_KEY_LEN`] bytes, no NUL byte.
///
/// Keys order by their bytes; [`run_many`](crate::Serializer::run_many) acquires several
/// keys in that order so two callers can never deadlock on each other.
///
/// ```
/// use turnstile_core::{Key, KeyError};
///
/// let account = Key::new("account/42")?;
/// assert_eq!(account.as_str(), "account/42");
/// assert_eq!(Key::new(""), Err(KeyError::Empty));
/// assert!(matches!(Key::new("a\0b"), Err(KeyError::Nul { position: 1 })));
/// # Ok::<(), KeyError>(())
/// ```
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key(Box<str>);

impl Key {
    /// The key that means "the whole resource", the default for strategies over one
    /// SQLite file: SQLite has one writer per file, so finer keys would still meet at
    /// `BEGIN IMMEDIATE`.
    pub const WHOLE: &'static str = "*";

    /// Validates `name` and wraps it.
    ///
    /// # Errors
    /// [`KeyError::Empty`], [`KeyError::TooLong`] or [`KeyError::Nul`].
    pub fn new(name: impl Into<String>) -> Result<Self, KeyError> {
        let name: String = name.into();
        if name.is_empty() {
            return Err(KeyError::Empty);
        }
        if name.len() > MAX_KEY_LEN {
            return Err(KeyError::TooLong {
                len: name.len(),
                max: MAX_KEY_LEN,
            });
        }
        if let Some(position) = name.bytes().position(|b| b == 0) {
            return Err(KeyError::Nul { position });
        }
        Ok(Key(name.into_boxed_str()))
    }

    /// The key for the whole resource ([`Key::WHOLE`]).
    pub fn whole() -> Self {
        Key(Self::WHOLE.into())
    }

    /// The key as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The key's [`stable_hash64`].
    pub fn stable_hash(&self) -> u64 {
        stable_hash64(self.0.as_bytes())
    }

    /// The name a backend should lock for this key when it is shared by several resources:
    /// `namespace`, a NUL byte, then the key. The NUL (which no key contains) keeps
    /// `("a", "b/c")` and `("a/b", "c")` apart. Backends hash or escape the result; it is
    /// never used as a path or formatted into a query.
    pub fn scoped(&self, namespace: &str) -> Vec<u8> {
        let mut name = Vec::with_capacity(namespace.len() + 1 + self.0.len());
        name.extend_from_slice(namespace.as_bytes());
        name.push(0);
        name.extend_from_slice(self.0.as_bytes());
        name
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for Key {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for Key {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl TryFrom<&str> for Key {
    type Error = KeyError;
    fn try_from(value: &str) -> Result<Self, Self::Error> {
        Key::new(value)
    }
}

impl TryFrom<String> for Key {
    type Error = KeyError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Key::new(value)
    }
}

impl std::str::FromStr for Key {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Key::new(s)
    }
}

/// Why a lock name was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyError {
    /// The name was empty. (MariaDB's `GET_LOCK('')` returns NULL, which naive code reads
    /// as success; we refuse it up front for every backend.)
    Empty,
    /// The name was longer than [`MAX_KEY_LEN`] bytes.
    TooLong {
        /// The length given, in bytes.
        len: usize,
        /// The limit, in bytes.
        max: usize,
    },
    /// The name contained a NUL byte, which C-string backends would truncate at.
    Nul {
        /// Byte offset of the first NUL.
        position: usize,
    },
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyError::Empty => f.write_str("lock key is empty"),
            KeyError::TooLong { len, max } => {
                write!(f, "lock key is {len} bytes long; the limit is {max}")
            }
            KeyError::Nul { position } => {
                write!(f, "lock key contains a NUL byte at offset {position}")
            }
        }
    }
}

impl std::error::Error for KeyError {}

/// FNV-1a, 64-bit, over `bytes`: the one hash turnstile uses to map a key onto a backend's
/// key space (lock stripes, PostgreSQL's `bigint` advisory keys, long MySQL lock names).
///
/// Its output is part of the on-disk and on-the-wire contract and never changes. It is not
/// `std`'s `DefaultHasher`, whose algorithm may change between Rust releases, which would
/// let two builds disagree about which lock a key takes.
///
/// ```
/// // Reference vectors from the FNV specification.
/// assert_eq!(turnstile_core::stable_hash64(b""), 0xcbf2_9ce4_8422_2325);
/// assert_eq!(turnstile_core::stable_hash64(b"a"), 0xaf63_dc4c_8601_ec8c);
/// ```
pub const fn stable_hash64(bytes: &[u8]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut hash = OFFSET;
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(PRIME);
        i += 1;
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_bad_names_with_typed_errors() {
        assert_eq!(Key::new(""), Err(KeyError::Empty));
        assert_eq!(
            Key::new("x".repeat(MAX_KEY_LEN + 1)),
            Err(KeyError::TooLong {
                len: MAX_KEY_LEN + 1,
                max: MAX_KEY_LEN
            })
        );
        assert_eq!(Key::new("ab\0"), Err(KeyError::Nul { position: 2 }));
        assert!(Key::new("x".repeat(MAX_KEY_LEN)).is_ok());
        // Path-looking keys are just names.
        assert!(Key::new("../x").is_ok());
        assert!(Key::new("/etc/passwd").is_ok());
    }

    #[test]
    fn hash_is_the_published_fnv1a() {
        assert_eq!(stable_hash64(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn scoped_names_do_not_collide_across_the_separator() {
        let a = Key::new("b/c").unwrap().scoped("a");
        let b = Key::new("c").unwrap().scoped("a/b");
        assert_ne!(a, b);
    }
}
