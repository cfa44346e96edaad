//! `FileLock`: `flock(2)` over a fixed set of striped lock files in a lock directory, for
//! processes on one host (seed 002: fifty processes corrupted an embedded database until
//! every operation took a `flock`).
//!
//! See [`FileLock`] for how keys map to lock files and what it guards against.

use std::borrow::Cow;
use std::ffi::OsString;
use std::fmt;
use std::fs::{File, TryLockError};
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use rustix::fs::{FileType, Mode, OFlags};
use turnstile_core::{
    Capabilities, Error, HolderDeath, Key, Lease, Lock, LockName, Scope, StrategyError,
};

use super::{MutexLease, MutexLock};

/// The default number of lock files (stripes): 64.
pub const DEFAULT_STRIPES: u32 = 64;

/// The most stripes a lock directory may have: 4096.
pub const MAX_STRIPES: u32 = 4096;

/// The longest lock directory path [`FileLockBuilder::open`] takes, in bytes: Linux's
/// `PATH_MAX` less its NUL. A longer one is refused before anything is tried, and not
/// echoed in the error.
pub const MAX_DIR_PATH: usize = 4095;

/// The default longest sleep between two `try_lock` polls while waiting with a deadline:
/// 10 ms.
pub const DEFAULT_MAX_POLL: Duration = Duration::from_millis(10);

/// The first sleep between polls; each later one doubles, up to the configured maximum.
const FIRST_POLL: Duration = Duration::from_micros(100);

/// How long opening a lock directory waits for another process that is writing its
/// `layout` file (a few bytes; only a stopped process could hold it this long).
const LAYOUT_WAIT: Duration = Duration::from_secs(10);

const LAYOUT_FILE: &str = "layout";
const LAYOUT_HEADER: &str = "turnstile file-lock v1";

/// Why a lock directory was refused or could not be used.
#[derive(Debug)]
#[non_exhaustive]
pub enum FileLockError {
    /// The lock directory (or the `layout` file in it) is a symbolic link.
    Symlink {
        /// The path refused.
        path: PathBuf,
    },
    /// The lock directory is not a directory, or a lock file is not a regular file (a
    /// FIFO or a device planted under its name).
    WrongFileType {
        /// The path refused.
        path: PathBuf,
    },
    /// The lock directory is world-writable: anyone could plant or replace its files.
    WorldWritable {
        /// The path refused.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The lock directory exists but this process may not create files in it.
    Unwritable {
        /// The file that could not be created.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The directory was set up with another stripe count; processes that disagree on it
    /// would lock different files for one key.
    StripeMismatch {
        /// The lock directory.
        path: PathBuf,
        /// The count this `FileLock` was configured with.
        configured: u32,
        /// The count recorded in the directory.
        found: u32,
    },
    /// The directory's `layout` file holds something this version does not understand.
    BadLayout {
        /// The `layout` file.
        path: PathBuf,
    },
    /// The directory was not a lock directory yet (it had no `layout` file) and holds
    /// other files: it is someone else's (`/`, a home, the database's own), and a lock's
    /// files would mix with them. Give the lock a directory of its own.
    NotDedicated {
        /// The lock directory.
        path: PathBuf,
        /// One entry found in it that is not a lock file.
        entry: PathBuf,
    },
    /// A stripe count of zero or over [`MAX_STRIPES`], a zero poll interval, or a directory
    /// path that is empty, holds a NUL byte, is over [`MAX_DIR_PATH`] bytes, or is under a
    /// parent that does not exist.
    Config(String),
    /// Any other I/O error on the lock directory or a lock file.
    Io {
        /// The path involved.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

impl fmt::Display for FileLockError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FileLockError::Symlink { path } => write!(
                f,
                "lock path {} is a symbolic link; refusing to follow it",
                path.display()
            ),
            FileLockError::WrongFileType { path } => {
                write!(f, "lock path {} has the wrong file type", path.display())
            }
            FileLockError::WorldWritable { path, mode } => write!(
                f,
                "lock directory {} is world-writable (mode {mode:o}); use a directory only its users can write",
                path.display()
            ),
            FileLockError::Unwritable { path, source } => {
                write!(f, "cannot create lock file {}: {source}", path.display())
            }
            FileLockError::StripeMismatch {
                path,
                configured,
                found,
            } => write!(
                f,
                "lock directory {} was set up with {found} stripes, not {configured}; every process must use the same count",
                path.display()
            ),
            FileLockError::BadLayout { path } => {
                write!(f, "unrecognised lock layout file {}", path.display())
            }
            FileLockError::NotDedicated { path, entry } => write!(
                f,
                "{} is not a lock directory yet and holds other files ({} among them); give the lock a new or empty directory of its own",
                path.display(),
                entry.display()
            ),
            FileLockError::Config(m) => write!(f, "invalid file lock configuration: {m}"),
            FileLockError::Io { path, source } => {
                write!(
                    f,
                    "lock directory I/O error on {}: {source}",
                    path.display()
                )
            }
        }
    }
}

impl std::error::Error for FileLockError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            FileLockError::Unwritable { source, .. } | FileLockError::Io { source, .. } => {
                Some(source)
            }
            _ => None,
        }
    }
}

/// A refused configuration becomes [`Error::Config`]; a failing filesystem becomes
/// [`Error::Unavailable`] carrying the `FileLockError`.
impl<E> From<FileLockError> for Error<E> {
    fn from(e: FileLockError) -> Self {
        match e {
            FileLockError::Unwritable { .. } | FileLockError::Io { .. } => {
                Error::Unavailable(Box::new(e))
            }
            other => Error::Config(other.to_string()),
        }
    }
}

/// Settings for a [`FileLock`]; [`FileLockBuilder::open`] checks the directory.
#[derive(Clone, Debug)]
#[must_use = "a builder does nothing until `open` is called"]
pub struct FileLockBuilder {
    dir: PathBuf,
    stripes: u32,
    max_poll: Duration,
}

impl FileLockBuilder {
    /// Sets how many lock files keys are spread over. More stripes mean fewer unrelated
    /// keys waiting for each other, and more open files. Every process using the directory
    /// must use the same count. Default: [`DEFAULT_STRIPES`].
    pub fn stripes(mut self, stripes: u32) -> Self {
        self.stripes = stripes;
        self
    }

    /// Sets the longest sleep between two polls while waiting for a lock with a deadline
    /// (how late a waiter may notice a release). Waiting without a deadline blocks in the
    /// kernel instead. Default: [`DEFAULT_MAX_POLL`].
    pub fn max_poll(mut self, interval: Duration) -> Self {
        self.max_poll = interval;
        self
    }

    /// Creates the lock directory if missing (mode `0700`, parent must exist), checks it
    /// and records or checks its stripe count.
    ///
    /// # Errors
    /// [`FileLockError::Symlink`], [`FileLockError::WrongFileType`],
    /// [`FileLockError::WorldWritable`], [`FileLockError::Unwritable`],
    /// [`FileLockError::StripeMismatch`], [`FileLockError::BadLayout`],
    /// [`FileLockError::NotDedicated`], [`FileLockError::Config`] or [`FileLockError::Io`].
    pub fn open(self) -> Result<FileLock, FileLockError> {
        if self.dir.as_os_str().is_empty() {
            return Err(FileLockError::Config(
                "the lock directory path is empty".into(),
            ));
        }
        // A NUL byte ends a C string: no path can hold one, and the OS would refuse it
        // as an I/O error. Not echoed either (its text is cut there).
        if let Some(at) = self
            .dir
            .as_os_str()
            .as_encoded_bytes()
            .iter()
            .position(|&b| b == 0)
        {
            return Err(FileLockError::Config(format!(
                "the lock directory path holds a NUL byte at byte {at}; no path can"
            )));
        }
        // Not echoed: a path this long is no directory's (a pasted blob, say).
        let len = self.dir.as_os_str().len();
        if len > MAX_DIR_PATH {
            return Err(FileLockError::Config(format!(
                "the lock directory path is {len} bytes long; the limit is {MAX_DIR_PATH}"
            )));
        }
        if self.stripes == 0 || self.stripes > MAX_STRIPES {
            return Err(FileLockError::Config(format!(
                "stripe count {} is outside 1..={MAX_STRIPES}",
                self.stripes
            )));
        }
        if self.max_poll.is_zero() {
            return Err(FileLockError::Config(
                "a zero poll interval would spin a core".into(),
            ));
        }
        let dir_fd = open_dir(&self.dir)?;
        check_layout(&dir_fd, &self.dir, self.stripes)?;
        let backend_id = format!(
            "file-lock:{}",
            self.dir
                .canonicalize()
                .unwrap_or_else(|_| self.dir.clone())
                .display()
        );
        let stripe_names = (0..self.stripes)
            .map(|i| {
                let key = Key::new(i.to_string()).unwrap_or_else(|_| unreachable!());
                LockName::new("file-lock-stripe", key)
            })
            .collect();
        Ok(FileLock {
            inner: Arc::new(Inner {
                files: (0..self.stripes).map(|_| OnceLock::new()).collect(),
                stripe_names,
                table: MutexLock::new(),
                dir: self.dir,
                dir_fd,
                backend_id,
                max_poll: self.max_poll,
            }),
        })
    }
}

/// `flock` over striped lock files in a lock directory: a [`Lock`] that excludes across
/// processes on one host.
///
/// # How a key becomes a lock file
/// A lock name ([`LockName`]: the resource's identity, then the key) maps onto stripe
/// `stable_hash64(name) % stripes`, where [`stable_hash64`](turnstile_core::stable_hash64)
/// is the published, frozen FNV-1a ([`LockName::stable_hash`]). Stripe `i` is the file
/// `stripe-NNNN.lock` (`i` in four or more decimal digits) in the lock directory. No key
/// text ever reaches a path, so `../x` or `/etc/passwd` are ordinary keys. Two keys that
/// share a stripe exclude each other: over-exclusion, which is safe. The stripe count is
/// recorded in the directory's `layout` file when it is first used, and a `FileLock`
/// configured with another count is refused ([`FileLockError::StripeMismatch`]):
/// processes that disagreed on it would lock different files for one key.
///
/// # What it guards against
/// - Threads of one process share each stripe's open file description, and `flock`
///   belongs to the description, so they would not exclude each other: an in-process lock
///   table ([`MutexLock`]) per stripe sits in front of the file lock.
/// - Lock files are opened `O_NOFOLLOW | O_CLOEXEC`, never truncated and never unlinked
///   (unlinking a lock file lets two holders lock two different inodes under one name),
///   in a directory that is not a symbolic link (a trailing `/` or `/.` in its path does
///   not reach through one) and not world-writable (anyone could plant files in it). A
///   new directory is created with mode `0700`. Its owner is not checked (users of one
///   group may share it), so it belongs in a parent directory only those users can
///   write: in `/tmp` another user could create it first.
/// - The directory is the lock's own: one that is not a lock directory yet (no `layout`
///   file) and holds other files is refused ([`FileLockError::NotDedicated`]) before
///   anything is created in it, so `file-lock:/` or the database's own directory cannot
///   become one by a slip.
/// - A holder that dies, even by `SIGKILL`, has its locks freed by the kernel when its
///   file descriptors close. Locks never expire, so no fencing token is needed.
/// - `O_CLOEXEC` keeps a lock from leaking into programs this process starts (a child
///   that inherited the descriptor would hold the lock after its parent died). A child
///   made by a bare `fork()` without `exec` shares the descriptors, and with them the
///   locks: don't fork while holding one.
///
/// # Waiting
/// Threads of one process wait for a stripe on the in-process table (a condition
/// variable). The one thread per process that then waits for the file lock blocks in the
/// kernel when there is no deadline, and otherwise polls `try_lock` with jittered sleeps
/// doubling from 100 µs up to [`FileLockBuilder::max_poll`], so no core spins and the
/// deadline is kept; a zero timeout tries once. Several names are taken in stripe order
/// ([`Lock::order_key`]), names sharing a stripe once, so callers of `run_many` can't
/// deadlock on each other or on themselves.
///
/// Local filesystems only: `flock` on NFS is emulated with byte-range locks (or not at
/// all), and other hosts can't see it anyway.
///
/// ```
/// use turnstile::lock::FileLock;
/// use turnstile::sqlite::{Sqlite, Synchronous};
/// use turnstile::{Key, Locked, Serializer};
///
/// let dir = tempfile::tempdir()?;
/// let db_path = dir.path().join("app.db");
/// // Lock files go to `app.db.locks/`, next to the database.
/// let lock = FileLock::beside(&db_path)?;
/// let db = Sqlite::new(&db_path).synchronous(Synchronous::Normal);
/// let strategy = Locked::new(lock, db);
/// let key = Key::whole();
/// strategy.run(&key, |db| db.execute_batch("CREATE TABLE IF NOT EXISTS t (v INTEGER)"))?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// Cheap to clone; clones share the open lock files and the in-process lock table.
#[derive(Clone)]
pub struct FileLock {
    inner: Arc<Inner>,
}

struct Inner {
    dir: PathBuf,
    dir_fd: OwnedFd,
    /// One open file per stripe, opened on first use; never closed while the lock lives.
    files: Box<[OnceLock<File>]>,
    /// The in-process lock names, one per stripe.
    stripe_names: Box<[LockName]>,
    table: MutexLock,
    backend_id: String,
    max_poll: Duration,
}

impl FileLock {
    /// A builder for a lock directory at `dir`, with the defaults.
    pub fn builder(dir: impl Into<PathBuf>) -> FileLockBuilder {
        FileLockBuilder {
            dir: dir.into(),
            stripes: DEFAULT_STRIPES,
            max_poll: DEFAULT_MAX_POLL,
        }
    }

    /// Opens (creating if missing) the lock directory `dir` with the defaults.
    ///
    /// # Errors
    /// As [`FileLockBuilder::open`].
    pub fn new(dir: impl Into<PathBuf>) -> Result<Self, FileLockError> {
        Self::builder(dir).open()
    }

    /// The default lock directory for a database file: `<database>.locks`, next to it.
    ///
    /// The database's directory is made absolute and free of links when it exists, so
    /// processes that name one database by different paths (another working directory, a
    /// link) still meet in one lock directory.
    pub fn dir_beside(database: impl AsRef<Path>) -> PathBuf {
        let database = database.as_ref();
        let parent = match database.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        if let (Some(file), Ok(dir)) = (database.file_name(), parent.canonicalize()) {
            let mut name = file.to_owned();
            name.push(".locks");
            return dir.join(name);
        }
        let mut raw: OsString = database.as_os_str().to_owned();
        raw.push(".locks");
        PathBuf::from(raw)
    }

    /// Opens the lock directory [`FileLock::dir_beside`] `database`, with the defaults.
    ///
    /// # Errors
    /// As [`FileLockBuilder::open`].
    pub fn beside(database: impl AsRef<Path>) -> Result<Self, FileLockError> {
        Self::new(Self::dir_beside(database))
    }

    /// The lock directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The number of stripes.
    pub fn stripes(&self) -> u32 {
        self.inner.files.len() as u32
    }

    /// The stripe `name` maps to: `name.stable_hash() % stripes`.
    pub fn stripe_of(&self, name: &LockName) -> u32 {
        (name.stable_hash() % u64::from(self.stripes())) as u32
    }

    /// The file name of stripe `stripe` inside the lock directory.
    pub fn stripe_file_name(stripe: u32) -> String {
        format!("stripe-{stripe:04}.lock")
    }

    fn file(&self, stripe: usize) -> Result<&File, FileLockError> {
        let slot = &self.inner.files[stripe];
        if let Some(file) = slot.get() {
            return Ok(file);
        }
        let name = Self::stripe_file_name(stripe as u32);
        let file = open_lock_file(&self.inner.dir_fd, &self.inner.dir, &name)?;
        // The caller holds this stripe's in-process lock, so no other thread opens it at the
        // same time; were one to, the spare file is closed without ever having been locked.
        Ok(slot.get_or_init(|| file))
    }
}

impl fmt::Debug for FileLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileLock")
            .field("dir", &self.inner.dir)
            .field("stripes", &self.stripes())
            .field("max_poll", &self.inner.max_poll)
            .finish_non_exhaustive()
    }
}

impl Lock for FileLock {
    type Lease = FileLease;

    fn capabilities(&self) -> Capabilities {
        Capabilities::new(Scope::Processes, HolderDeath::KernelReleases)
    }

    fn backend_id(&self) -> &str {
        &self.inner.backend_id
    }

    /// The stripe number, big-endian: several names are taken in stripe order, and names
    /// sharing a stripe once.
    fn order_key<'a>(&self, name: &'a LockName) -> Cow<'a, [u8]> {
        Cow::Owned(self.stripe_of(name).to_be_bytes().to_vec())
    }

    fn acquire(
        &self,
        name: &LockName,
        deadline: Option<Instant>,
    ) -> Result<FileLease, StrategyError> {
        let start = Instant::now();
        let stripe = self.stripe_of(name) as usize;
        let local = self
            .inner
            .table
            .acquire(&self.inner.stripe_names[stripe], deadline)?;
        let file = self.file(stripe)?;
        let unavailable = |source: std::io::Error| {
            Error::Unavailable(Box::new(FileLockError::Io {
                path: self.inner.dir.join(Self::stripe_file_name(stripe as u32)),
                source,
            }))
        };
        match deadline {
            // Without a deadline the kernel queues us; no polling.
            None => loop {
                match file.lock() {
                    Ok(()) => break,
                    // A signal handler installed without SA_RESTART interrupts the wait.
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(unavailable(e)),
                }
            },
            Some(at) => {
                let mut pause = FIRST_POLL;
                loop {
                    match file.try_lock() {
                        Ok(()) => break,
                        Err(TryLockError::WouldBlock) => {}
                        Err(TryLockError::Error(e)) => return Err(unavailable(e)),
                    }
                    let now = Instant::now();
                    if now >= at {
                        return Err(Error::Timeout {
                            waited: now - start,
                        });
                    }
                    // Jittered so that processes released at once don't poll in lockstep.
                    let sleep = pause.mul_f64(0.5 + fastrand::f64() * 0.5);
                    std::thread::sleep(sleep.min(at - now));
                    pause = (pause * 2).min(self.inner.max_poll);
                }
            }
        }
        Ok(FileLease {
            inner: self.inner.clone(),
            stripe,
            unlocked: false,
            _local: local,
        })
    }
}

/// A held [`FileLock`] stripe. Dropping it unlocks the file, then the in-process lock.
#[must_use = "the lock is released as soon as the lease is dropped"]
pub struct FileLease {
    inner: Arc<Inner>,
    stripe: usize,
    /// `release` unlocked the file already: `Drop` need not (a system call inside the
    /// in-process lock, on every op).
    unlocked: bool,
    // Dropped after `Drop::drop` has unlocked the file, so no other thread of this process
    // can reach the file lock while it is still ours.
    _local: MutexLease,
}

impl FileLease {
    /// The stripe held.
    pub fn stripe(&self) -> u32 {
        self.stripe as u32
    }

    fn unlock(&self) -> std::io::Result<()> {
        match self.inner.files[self.stripe].get() {
            Some(file) => file.unlock(),
            None => Ok(()),
        }
    }
}

impl fmt::Debug for FileLease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileLease")
            .field("stripe", &self.stripe)
            .finish_non_exhaustive()
    }
}

impl Lease for FileLease {
    fn release(self) -> Result<(), StrategyError>
    where
        Self: Sized,
    {
        let mut this = self;
        let result = this.unlock();
        // A failed unlock is tried again by drop; the lock is freed at the latest when the
        // file closes with the FileLock.
        this.unlocked = result.is_ok();
        let result = result.map_err(|source| {
            let path = this
                .inner
                .dir
                .join(FileLock::stripe_file_name(this.stripe as u32));
            Error::Unavailable(Box::new(FileLockError::Io { path, source }))
        });
        // Drop frees the in-process lock.
        drop(this);
        result
    }
}

impl Drop for FileLease {
    fn drop(&mut self) {
        if self.unlocked {
            return;
        }
        // Unlocking a held flock can't fail on a valid descriptor; if it somehow did, the
        // lock is freed when the file closes with the FileLock.
        let _ = self.unlock();
    }
}

fn io_error(path: &Path, e: impl Into<std::io::Error>) -> FileLockError {
    FileLockError::Io {
        path: path.to_path_buf(),
        source: e.into(),
    }
}

/// Creates `dir` if missing and opens it without following a symbolic link, then checks
/// the opened directory itself (no window between the check and the use).
///
/// Both look at `dir` without trailing separators and `.` components: the kernel resolves
/// a link before a trailing `/` (or `/.`), so `lstat` and `O_NOFOLLOW` on `link/` would
/// see and open the link's target.
fn open_dir(dir: &Path) -> Result<OwnedFd, FileLockError> {
    let named: PathBuf = dir.components().collect();
    match std::fs::DirBuilder::new().mode(0o700).create(&named) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            return Err(FileLockError::Unwritable {
                path: dir.to_path_buf(),
                source: e,
            });
        }
        // Only the directory itself is created: a missing parent is most often a typo,
        // and creating a whole tree under it would hide that.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(FileLockError::Config(missing_parent(&named)));
        }
        Err(e) => return Err(io_error(dir, e)),
    }
    let meta = std::fs::symlink_metadata(&named).map_err(|e| io_error(dir, e))?;
    if meta.file_type().is_symlink() {
        return Err(FileLockError::Symlink {
            path: dir.to_path_buf(),
        });
    }
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let fd = match rustix::fs::open(&named, flags, Mode::empty()) {
        Ok(fd) => fd,
        // Swapped for a link between the check above and the open.
        Err(rustix::io::Errno::LOOP) => {
            return Err(FileLockError::Symlink {
                path: dir.to_path_buf(),
            });
        }
        Err(rustix::io::Errno::NOTDIR) => {
            return Err(FileLockError::WrongFileType {
                path: dir.to_path_buf(),
            });
        }
        Err(e) => return Err(io_error(dir, e)),
    };
    let stat = rustix::fs::fstat(&fd).map_err(|e| io_error(dir, e))?;
    let mode = stat.st_mode as u32 & 0o7777;
    if mode & 0o002 != 0 {
        return Err(FileLockError::WorldWritable {
            path: dir.to_path_buf(),
            mode,
        });
    }
    Ok(fd)
}

/// Why `dir` could not be created for want of its parent: the first missing directory
/// on the way to it, or a parent that is a symbolic link to nothing.
fn missing_parent(dir: &Path) -> String {
    let exists = |p: &Path| std::fs::symlink_metadata(p).is_ok();
    let parent = dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if exists(parent) {
        return format!(
            "the lock directory's parent {} leads to no directory (a symbolic link to \
             nothing?)",
            parent.display()
        );
    }
    let mut missing = parent;
    while let Some(up) = missing.parent().filter(|p| !p.as_os_str().is_empty()) {
        if exists(up) {
            break;
        }
        missing = up;
    }
    format!(
        "{} does not exist, on the way to the lock directory {} (only the lock directory \
         itself is created)",
        missing.display(),
        dir.display()
    )
}

/// Opens (creating if missing, never truncating) the regular file `name` in the lock
/// directory.
fn open_lock_file(dir_fd: &OwnedFd, dir: &Path, name: &str) -> Result<File, FileLockError> {
    open_file(dir_fd, dir, name, OFlags::empty())?.ok_or_else(|| unreachable!())
}

/// [`open_lock_file`] with `extra` flags; `None` when `extra` holds `EXCL` and the file
/// is there already.
fn open_file(
    dir_fd: &OwnedFd,
    dir: &Path,
    name: &str,
    extra: OFlags,
) -> Result<Option<File>, FileLockError> {
    let path = dir.join(name);
    // NONBLOCK: a FIFO planted under a lock file's name must not hang the open.
    let flags = OFlags::RDWR
        | OFlags::CREATE
        | OFlags::NOFOLLOW
        | OFlags::CLOEXEC
        | OFlags::NONBLOCK
        | extra;
    let fd = match rustix::fs::openat(dir_fd, name, flags, Mode::from_raw_mode(0o600)) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::EXIST) if extra.contains(OFlags::EXCL) => return Ok(None),
        Err(rustix::io::Errno::LOOP) => return Err(FileLockError::Symlink { path }),
        Err(
            e @ (rustix::io::Errno::ACCESS | rustix::io::Errno::PERM | rustix::io::Errno::ROFS),
        ) => {
            return Err(FileLockError::Unwritable {
                path,
                source: e.into(),
            });
        }
        Err(e) => return Err(io_error(&path, e)),
    };
    let stat = rustix::fs::fstat(&fd).map_err(|e| io_error(&path, e))?;
    if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile {
        return Err(FileLockError::WrongFileType { path });
    }
    Ok(Some(File::from(fd)))
}

/// Whether `name` is one of the files a lock directory holds: its `layout` or a stripe.
fn is_lock_file(name: &[u8]) -> bool {
    if name == LAYOUT_FILE.as_bytes() {
        return true;
    }
    name.strip_prefix(b"stripe-")
        .and_then(|rest| rest.strip_suffix(b".lock"))
        .is_some_and(|n| n.len() >= 4 && n.iter().all(u8::is_ascii_digit))
}

/// The first entry of the directory that is not a lock directory's own (see
/// [`is_lock_file`]), if any.
fn foreign_entry(dir_fd: &OwnedFd, dir: &Path) -> Result<Option<OsString>, FileLockError> {
    use std::os::unix::ffi::OsStrExt;
    let entries = rustix::fs::Dir::read_from(dir_fd).map_err(|e| io_error(dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| io_error(dir, e))?;
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." && !is_lock_file(name) {
            return Ok(Some(std::ffi::OsStr::from_bytes(name).to_owned()));
        }
    }
    Ok(None)
}

fn layout_text(stripes: u32) -> String {
    format!("{LAYOUT_HEADER}\nstripes {stripes}\n")
}

/// Records the stripe count in a new directory, or checks it against the recorded one,
/// under an exclusive lock on the `layout` file so that two first users can't both write.
///
/// The process that creates the `layout` file makes the directory a lock directory, and
/// only one that holds nothing else (stripe files aside): a directory of other files
/// (`/`, a home, the database's own) is refused with [`FileLockError::NotDedicated`], and
/// its new `layout` removed again.
fn check_layout(dir_fd: &OwnedFd, dir: &Path, stripes: u32) -> Result<(), FileLockError> {
    let path = dir.join(LAYOUT_FILE);
    let give_up = Instant::now() + LAYOUT_WAIT;
    let mut file = loop {
        // A directory that is not a lock directory yet is looked at before anything is
        // created in it.
        let missing = matches!(
            rustix::fs::statat(dir_fd, LAYOUT_FILE, rustix::fs::AtFlags::SYMLINK_NOFOLLOW),
            Err(rustix::io::Errno::NOENT)
        );
        if missing && let Some(entry) = foreign_entry(dir_fd, dir)? {
            return Err(FileLockError::NotDedicated {
                path: dir.to_path_buf(),
                entry: PathBuf::from(entry),
            });
        }
        let (file, created) = match open_file(dir_fd, dir, LAYOUT_FILE, OFlags::EXCL)? {
            Some(file) => (file, true),
            None => (open_lock_file(dir_fd, dir, LAYOUT_FILE)?, false),
        };
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(TryLockError::WouldBlock) if Instant::now() < give_up => {
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(TryLockError::WouldBlock) => {
                    return Err(io_error(
                        &path,
                        std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            "another process kept the layout file locked",
                        ),
                    ));
                }
                Err(TryLockError::Error(e)) => return Err(io_error(&path, e)),
            }
        }
        // Looked at again once created: files may have come meanwhile.
        if created && let Some(entry) = foreign_entry(dir_fd, dir)? {
            // Removed while still locked: a process waiting for it finds it unlinked
            // below and starts over, and refuses the directory too.
            let _ = rustix::fs::unlinkat(dir_fd, LAYOUT_FILE, rustix::fs::AtFlags::empty());
            return Err(FileLockError::NotDedicated {
                path: dir.to_path_buf(),
                entry: PathBuf::from(entry),
            });
        }
        let stat = rustix::fs::fstat(&file).map_err(|e| io_error(&path, e))?;
        if stat.st_nlink > 0 {
            break file;
        }
        // The creator refused the directory and removed this file.
        if Instant::now() >= give_up {
            return Err(io_error(
                &path,
                std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "the layout file kept being removed",
                ),
            ));
        }
    };
    let mut content = String::new();
    // Bounded: a valid layout is a few dozen bytes.
    (&mut file)
        .take(256)
        .read_to_string(&mut content)
        .map_err(|_| FileLockError::BadLayout { path: path.clone() })?;
    let expected = layout_text(stripes);
    let result = if content.is_empty() {
        file.write_all(expected.as_bytes())
            .map_err(|e| io_error(&path, e))
    } else if content == expected {
        Ok(())
    } else {
        match content
            .strip_prefix(LAYOUT_HEADER)
            .and_then(|rest| rest.strip_prefix("\nstripes "))
            .and_then(|rest| rest.strip_suffix('\n'))
            .and_then(|n| n.parse::<u32>().ok())
        {
            Some(found) => Err(FileLockError::StripeMismatch {
                path: dir.to_path_buf(),
                configured: stripes,
                found,
            }),
            None => Err(FileLockError::BadLayout { path: path.clone() }),
        }
    };
    let _ = file.unlock();
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stripe_mapping_is_the_documented_hash() {
        let dir = tempfile::tempdir().unwrap();
        let lock = FileLock::new(dir.path().join("locks")).unwrap();
        let name = LockName::new("db", Key::new("k").unwrap());
        let expected = turnstile_core::stable_hash64(b"db\0k") % 64;
        assert_eq!(u64::from(lock.stripe_of(&name)), expected);
    }

    #[test]
    fn the_default_directory_is_the_same_whatever_the_path_to_the_database() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        std::fs::create_dir(&real).unwrap();
        let alias = dir.path().join("alias");
        std::os::unix::fs::symlink(&real, &alias).unwrap();
        let expected = real.canonicalize().unwrap().join("app.db.locks");
        assert_eq!(FileLock::dir_beside(real.join("app.db")), expected);
        assert_eq!(FileLock::dir_beside(alias.join("app.db")), expected);
        assert_eq!(
            FileLock::dir_beside(real.join("sub").join("..").join("app.db")),
            PathBuf::from(format!("{}/sub/../app.db.locks", real.display())),
            "a missing directory falls back to the path as given"
        );
    }

    #[test]
    fn a_new_directory_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let lock = FileLock::new(dir.path().join("locks")).unwrap();
        let mode = std::fs::metadata(lock.dir()).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "mode {mode:o}");
    }

    #[test]
    fn another_stripe_count_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("locks");
        let _first = FileLock::builder(&path).stripes(8).open().unwrap();
        let _same = FileLock::builder(&path).stripes(8).open().unwrap();
        match FileLock::builder(&path).stripes(16).open() {
            Err(FileLockError::StripeMismatch {
                configured: 16,
                found: 8,
                ..
            }) => {}
            other => panic!("expected a stripe mismatch, got {other:?}"),
        }
        assert!(matches!(
            FileLock::builder(&path).stripes(0).open(),
            Err(FileLockError::Config(_))
        ));
    }

    /// A directory under a missing parent (a typo) and a path no directory has are the
    /// configuration's fault, not the filesystem's: `Error::Config`, the long path not
    /// echoed, and nothing created.
    #[test]
    fn a_missing_parent_or_an_absurd_path_is_refused_as_configuration() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("no/such/locks");
        match FileLock::new(&missing) {
            Err(e @ FileLockError::Config(_)) => {
                let shown = e.to_string();
                assert!(
                    shown.contains(&format!(
                        "{} does not exist, on the way to the lock directory {}",
                        dir.path().join("no").display(),
                        missing.display()
                    )),
                    "{shown}"
                );
                assert!(matches!(Error::<()>::from(e), Error::Config(_)));
            }
            other => panic!("expected a refused configuration, got {other:?}"),
        }
        assert!(!dir.path().join("no").exists());
        // A parent that is a link to nothing is said to be one.
        std::os::unix::fs::symlink(dir.path().join("gone"), dir.path().join("link")).unwrap();
        let shown = FileLock::new(dir.path().join("link/locks"))
            .unwrap_err()
            .to_string();
        assert!(
            shown.contains("parent") && shown.contains("a symbolic link to nothing"),
            "{shown}"
        );
        let long = dir.path().join("a".repeat(MAX_DIR_PATH));
        match FileLock::new(&long) {
            Err(e @ FileLockError::Config(_)) => {
                let shown = e.to_string();
                assert!(shown.contains("bytes long; the limit is 4095"), "{shown}");
                assert!(shown.len() < 200, "{shown}");
            }
            other => panic!("expected a refused configuration, got {other:?}"),
        }
        // A NUL byte is no path's: refused as configuration (before: an I/O error, which
        // became `Error::Unavailable`), for `new`, `beside` and the spec alike.
        for bad in [
            FileLock::new(dir.path().join("lo\0cks")),
            FileLock::beside(dir.path().join("app\0.db")),
        ] {
            match bad {
                Err(e @ FileLockError::Config(_)) => {
                    let shown = e.to_string();
                    assert!(shown.contains("NUL byte"), "{shown}");
                    assert!(matches!(Error::<()>::from(e), Error::Config(_)));
                }
                other => panic!("expected a refused configuration, got {other:?}"),
            }
        }
        // A component too long for the filesystem stays an I/O error, as the OS says it.
        let component = dir.path().join("b".repeat(300));
        assert!(matches!(
            FileLock::new(&component),
            Err(FileLockError::Io { .. })
        ));
    }

    #[test]
    fn two_lock_objects_exclude_each_other_like_two_processes() {
        let dir = tempfile::tempdir().unwrap();
        let a = FileLock::new(dir.path().join("locks")).unwrap();
        let b = FileLock::new(dir.path().join("locks")).unwrap();
        let name = LockName::new("db", Key::new("k").unwrap());
        let held = a.acquire(&name, None).unwrap();
        assert!(matches!(
            b.acquire(&name, Some(Instant::now())),
            Err(Error::Timeout { .. })
        ));
        held.release().unwrap();
        let _again = b.acquire(&name, Some(Instant::now())).unwrap();
    }
}
