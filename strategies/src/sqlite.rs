//! SQLite as a resource: an opener with the pragmas that matter for concurrency (WAL,
//! `synchronous`, `busy_timeout`), `BEGIN IMMEDIATE` write transactions, fences recorded in
//! a small table, and busy errors classified by their primary result code.
//!
//! ```
//! use turnstile::sqlite::{Sqlite, Synchronous};
//! use turnstile::Connect;
//!
//! let dir = tempfile::tempdir()?;
//! let db = Sqlite::new(dir.path().join("app.db")).synchronous(Synchronous::Normal);
//! let conn = db.connect()?;
//! let mode: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0))?;
//! assert_eq!(mode, "wal");
//! # Ok::<(), Box<dyn std::error::Error + Send + Sync>>(())
//! ```

use std::any::Any;
use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{Connection, ErrorCode};
use turnstile_core::{
    BoxError, ConfigError, Connect, Fence, FenceClaim, Flush, Transact, TransactError, TxCounts,
};

pub use rusqlite;

/// SQLite's `synchronous` pragma: how hard a commit pushes data to disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Synchronous {
    /// No syncs at all: fast, and a power loss can corrupt the database.
    Off,
    /// In WAL mode: consistent after a crash, but the last commits may be lost on power
    /// loss. The usual choice for WAL.
    Normal,
    /// Every commit is synced: durable. The default.
    #[default]
    Full,
    /// As `Full`, and the directory is synced too.
    Extra,
}

impl Synchronous {
    /// The pragma's value.
    pub fn as_str(self) -> &'static str {
        match self {
            Synchronous::Off => "OFF",
            Synchronous::Normal => "NORMAL",
            Synchronous::Full => "FULL",
            Synchronous::Extra => "EXTRA",
        }
    }
}

impl std::str::FromStr for Synchronous {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "off" => Ok(Synchronous::Off),
            "normal" => Ok(Synchronous::Normal),
            "full" => Ok(Synchronous::Full),
            "extra" => Ok(Synchronous::Extra),
            other => Err(format!(
                "unknown synchronous mode {other:?}; expected off, normal, full or extra"
            )),
        }
    }
}

/// Opens connections to one SQLite database file.
///
/// Defaults: WAL journal, `synchronous = FULL`, `busy_timeout = 5 s`, foreign keys on.
/// Strategies that lock before `BEGIN IMMEDIATE` keep a busy timeout at least as long as a
/// hold, so different keys over one file wait for each other instead of failing; the
/// `retry` strategy turns it off so it sees every busy. With `FULL` in WAL mode, a queue
/// asked to overlap its flush commits with `NORMAL` and syncs the WAL itself before it
/// answers, while it runs its next batch ([`Transact::defer_flush`]; see "Overlapped
/// flush" in the `queue` module).
///
/// Each connection gets a commit hook that counts its commits ([`Transact::tx_counts`]),
/// so that strategies tell a transaction an op committed by itself from one SQLite rolled
/// back (`INSERT OR ROLLBACK` failing, say): an op must not replace it
/// (`Connection::commit_hook`).
#[derive(Clone, Debug)]
pub struct Sqlite {
    path: PathBuf,
    /// What its connections' commits are counted by ([`counted_file`]), made once.
    counted_file: Option<Arc<Path>>,
    identity: String,
    wal: bool,
    synchronous: Synchronous,
    busy_timeout: Duration,
    foreign_keys: bool,
}

/// The default `busy_timeout`.
pub const DEFAULT_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The longest `busy_timeout` SQLite takes: `i32::MAX` milliseconds (about 24.8 days),
/// since `sqlite3_busy_timeout` counts milliseconds in a C `int`. Longer ones are cut to
/// it.
pub const MAX_BUSY_TIMEOUT: Duration = Duration::from_millis(i32::MAX as u64);

impl Sqlite {
    /// A database at `path` (created on first connect).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        let path = path.into();
        let identity = format!("sqlite:{}", canonical(&path).display());
        Sqlite {
            counted_file: counted_file(&path),
            path,
            identity,
            wal: true,
            synchronous: Synchronous::default(),
            busy_timeout: DEFAULT_BUSY_TIMEOUT,
            foreign_keys: true,
        }
    }

    /// The database path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Sets the `synchronous` pragma. Default: [`Synchronous::Full`].
    pub fn synchronous(mut self, mode: Synchronous) -> Self {
        self.synchronous = mode;
        self
    }

    /// The `synchronous` pragma in use.
    pub fn synchronous_mode(&self) -> Synchronous {
        self.synchronous
    }

    /// Sets SQLite's busy timeout: how long a statement waits for another connection's
    /// write lock before failing with `SQLITE_BUSY`. `Duration::ZERO` turns it off.
    /// SQLite counts it in whole milliseconds in a C `int`: anything longer than
    /// [`MAX_BUSY_TIMEOUT`] (about 24.8 days, `Duration::MAX` included) is clamped to it,
    /// and the sub-millisecond rest is dropped. Default: [`DEFAULT_BUSY_TIMEOUT`].
    pub fn busy_timeout(mut self, timeout: Duration) -> Self {
        self.busy_timeout = timeout.min(MAX_BUSY_TIMEOUT);
        self
    }

    /// The busy timeout in use (after clamping to [`MAX_BUSY_TIMEOUT`]).
    pub fn busy_timeout_value(&self) -> Duration {
        self.busy_timeout
    }

    /// Uses WAL (the default; readers never block the writer) or the rollback journal.
    ///
    /// An in-memory or temporary database (`:memory:`, `""`, a `mode=memory` URI) has no
    /// file to keep a WAL in: with WAL on, connecting to one fails with a
    /// [`ConfigError`] (which strategies that classify connect errors with
    /// [`Error::from_connect`](turnstile_core::Error::from_connect) report as
    /// [`Error::Config`](turnstile_core::Error::Config)) saying to turn WAL off or use a
    /// file. (Each connection to `:memory:` is a database of its own, too.) So does a file
    /// that SQLite will not switch to WAL because its filesystem lacks the shared memory
    /// WAL needs (some network filesystems; SQLite's `unix-dotfile` VFS).
    pub fn wal(mut self, yes: bool) -> Self {
        self.wal = yes;
        self
    }

    /// Turns `foreign_keys` enforcement on (the default) or off.
    pub fn foreign_keys(mut self, yes: bool) -> Self {
        self.foreign_keys = yes;
        self
    }

    fn open(&self) -> Result<Connection, BoxError> {
        let conn = Connection::open(&self.path)?;
        if self.wal {
            // Several processes opening a fresh file race to switch it to WAL; a short wait
            // for the switch costs nothing, even when the strategy wants busy_timeout off.
            let wait = self.busy_timeout.max(DEFAULT_BUSY_TIMEOUT);
            conn.busy_timeout(wait)?;
            let mode = switch_to_wal(&conn, wait)?;
            if !mode.eq_ignore_ascii_case("wal")
                && (self.counted_file.is_none() || mode.eq_ignore_ascii_case("memory"))
            {
                // Not an outage: connecting again gives the same answer.
                return Err(Box::new(ConfigError::new(format!(
                    "SQLite database {:?} has no file of its own to keep a WAL in (journal_mode \
                     is {mode}): use Sqlite::wal(false), or a database file",
                    self.path
                ))));
            }
            if !mode.eq_ignore_ascii_case("wal") {
                // SQLite keeps the journal it had when the file cannot have a WAL (its
                // VFS has no shared memory: some network filesystems). Connecting again
                // gives the same answer: a setup error, as above.
                return Err(Box::new(ConfigError::new(format!(
                    "SQLite could not switch database {:?} to WAL (journal_mode is {mode}; \
                     its filesystem may not support the shared memory WAL needs): use \
                     Sqlite::wal(false), or a local filesystem",
                    self.path
                ))));
            }
        }
        conn.busy_timeout(self.busy_timeout)?;
        conn.pragma_update(None, "synchronous", self.synchronous.as_str())?;
        conn.pragma_update(None, "foreign_keys", self.foreign_keys)?;
        if let Some(file) = self.counted_file.clone() {
            conn.commit_hook(Some(move || {
                count_commit(&file);
                false
            }));
        }
        Ok(conn)
    }
}

/// The key the commits of connections to `path` are counted by (see
/// [`Transact::tx_counts`]): the path as configured, the same for every connection a
/// `Sqlite` opens. `None` for an in-memory or temporary database, of which every
/// connection has its own.
fn counted_file(path: &Path) -> Option<Arc<Path>> {
    let name = path.as_os_str();
    let in_memory = name.is_empty()
        || name == ":memory:"
        || name.as_encoded_bytes().starts_with(b"file::memory:");
    (!in_memory).then(|| Arc::from(path))
}

thread_local! {
    /// Commits made on this thread, per database file, as the commit hooks of the
    /// connections a [`Sqlite`] opened counted them (see [`Transact::tx_counts`]): one
    /// entry per file a thread ever committed to.
    static COMMITS: RefCell<HashMap<Arc<Path>, u64>> = RefCell::new(HashMap::new());
}

/// Counts a commit of `file` on this thread (the hook runs on the thread that ran the
/// statement ending the transaction).
fn count_commit(file: &Arc<Path>) {
    // While the thread exits, after the map is gone, the commit is nobody's op's.
    let _ = COMMITS.try_with(|commits| {
        if let Ok(mut commits) = commits.try_borrow_mut() {
            let n = commits.entry(file.clone()).or_default();
            *n = n.wrapping_add(1);
        }
    });
}

/// `PRAGMA journal_mode = WAL`, retried on busy until `wait` has passed.
///
/// A fresh file starts in rollback-journal mode, where two connections that both read and
/// then want to write would deadlock; SQLite breaks that by answering one of them
/// `SQLITE_BUSY` at once, without calling the busy handler. Openers racing to switch the
/// same fresh file hit exactly that, so the wait has to be ours.
fn switch_to_wal(conn: &Connection, wait: Duration) -> rusqlite::Result<String> {
    // No deadline when `wait` overflows the clock: waiting that long is waiting forever.
    let deadline = std::time::Instant::now().checked_add(wait);
    let mut pause = Duration::from_millis(1);
    loop {
        match conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get::<_, String>(0)) {
            Err(e) if is_busy(&e) && deadline.is_none_or(|at| std::time::Instant::now() < at) => {
                std::thread::sleep(pause.mul_f64(0.5 + fastrand::f64()));
                pause = (pause * 2).min(Duration::from_millis(50));
            }
            other => return other,
        }
    }
}

fn canonical(path: &Path) -> PathBuf {
    if let Ok(p) = path.canonicalize() {
        return p;
    }
    // The file may not exist yet: canonicalize its directory.
    match (path.parent(), path.file_name()) {
        (Some(dir), Some(name)) => {
            let dir = if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            };
            dir.canonicalize()
                .map(|d| d.join(name))
                .unwrap_or_else(|_| path.to_path_buf())
        }
        _ => path.to_path_buf(),
    }
}

/// Whether `error` is SQLite's "busy, try again": primary result code `SQLITE_BUSY` or
/// `SQLITE_LOCKED`, including extended forms such as `SQLITE_BUSY_SNAPSHOT`.
pub fn is_busy(error: &rusqlite::Error) -> bool {
    matches!(
        error.sqlite_error_code(),
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
    )
}

/// Whether `error` means the connection itself is unusable (I/O, corruption, misuse)
/// and should be closed and reopened.
pub fn is_broken(error: &rusqlite::Error) -> bool {
    matches!(
        error.sqlite_error_code(),
        Some(
            ErrorCode::SystemIoFailure
                | ErrorCode::DatabaseCorrupt
                | ErrorCode::NotADatabase
                | ErrorCode::ApiMisuse
                | ErrorCode::CannotOpen
                | ErrorCode::OutOfMemory
        )
    )
}

fn classify(error: rusqlite::Error) -> TransactError {
    if is_busy(&error) {
        TransactError::Busy(Box::new(error))
    } else {
        TransactError::Failed(Box::new(error))
    }
}

impl Connect for Sqlite {
    type Resource = Connection;

    fn connect(&self) -> Result<Connection, BoxError> {
        self.open()
    }

    fn identity(&self) -> &str {
        &self.identity
    }

    fn single_writer(&self) -> bool {
        true
    }

    fn is_broken(&self, _resource: &mut Connection, error: &(dyn Any + Send + Sync)) -> bool {
        turnstile_core::find_error::<rusqlite::Error>(error).is_some_and(is_broken)
    }
}

const FENCE_TABLE: &str = "CREATE TABLE IF NOT EXISTS turnstile_fences (
    backend TEXT NOT NULL,
    name BLOB NOT NULL,
    fence INTEGER NOT NULL,
    PRIMARY KEY (backend, name)
)";

/// The statements below are run through the connection's statement cache: a group
/// commit runs them once per batch, and parsing them anew each time cost more than the
/// work they do.
const SELECT_FENCE: &str = "SELECT fence FROM turnstile_fences WHERE backend = ?1 AND name = ?2";
/// Records a fence unless a higher one is recorded: the check and the record in one
/// statement. It changes no row exactly when the fence is stale.
const CLAIM_FENCE: &str = "INSERT INTO turnstile_fences (backend, name, fence) VALUES (?1, ?2, ?3)
     ON CONFLICT (backend, name) DO UPDATE SET fence = excluded.fence
     WHERE excluded.fence >= turnstile_fences.fence";

const FORGET_FENCE: &str = "DELETE FROM turnstile_fences WHERE backend = ?1 AND name = ?2";

/// Whether `error` says the fence table does not exist (yet), so it is created only then
/// rather than with a `CREATE TABLE IF NOT EXISTS` at every fenced `begin`.
fn is_missing_table(error: &rusqlite::Error) -> bool {
    matches!(error, rusqlite::Error::SqliteFailure(e, Some(msg))
        if e.code == ErrorCode::Unknown && msg.starts_with("no such table"))
}

/// Records `fence` for `claim`'s backend and name unless a higher one is recorded,
/// creating the table on first use (inside the caller's transaction, so it rolls back
/// with it). Answers whether it was recorded.
fn claim_fence(conn: &Connection, claim: &FenceClaim<'_>, fence: i64) -> rusqlite::Result<bool> {
    let claim = |conn: &Connection| {
        conn.prepare_cached(CLAIM_FENCE)?.execute(rusqlite::params![
            claim.backend,
            claim.name,
            fence
        ])
    };
    let changed = match claim(conn) {
        Err(e) if is_missing_table(&e) => {
            conn.execute_batch(FENCE_TABLE)?;
            claim(conn)?
        }
        other => other?,
    };
    Ok(changed == 1)
}

fn check_fences(conn: &Connection, fences: &[FenceClaim<'_>]) -> Result<(), TransactError> {
    for claim in fences {
        // Fences are stored as SQLite's signed INTEGER; the order is the same below 2^63.
        let presented = i64::try_from(claim.fence.0).map_err(|_| {
            TransactError::Failed(
                format!("fence {} does not fit SQLite's INTEGER", claim.fence).into(),
            )
        })?;
        if claim_fence(conn, claim, presented).map_err(classify)? {
            continue;
        }
        let highest: i64 = conn
            .prepare_cached(SELECT_FENCE)
            .and_then(|mut s| {
                s.query_row(rusqlite::params![claim.backend, claim.name], |r| r.get(0))
            })
            .map_err(classify)?;
        return Err(TransactError::StaleFence {
            presented: claim.fence,
            highest: Fence(highest as u64),
        });
    }
    Ok(())
}

/// Runs a fixed statement through the connection's statement cache.
fn run_cached(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(drop)
}

/// The one savepoint name group commit uses. The ops of a batch run one after another,
/// each savepoint released or rolled back to before the next is set, so they never
/// overlap; SQLite resolves a name to the most recent savepoint carrying it, so even
/// nested ones resolve right as long as they end in the reverse order they began (as
/// savepoints must). One name keeps three statements in the cache rather than three per
/// batch position, which a 16-entry cache would thrash.
const SAVEPOINT: &str = "SAVEPOINT turnstile_op";
const RELEASE: &str = "RELEASE turnstile_op";
const ROLLBACK_TO: &str = "ROLLBACK TO turnstile_op";

impl Transact for Sqlite {
    fn begin(&self, conn: &mut Connection, fences: &[FenceClaim<'_>]) -> Result<(), TransactError> {
        // IMMEDIATE: a deferred transaction that reads and then writes gets SQLITE_BUSY
        // at the upgrade without the busy handler ever running.
        run_cached(conn, "BEGIN IMMEDIATE").map_err(classify)?;
        if let Err(e) = check_fences(conn, fences) {
            let _ = self.rollback(conn);
            return Err(e);
        }
        Ok(())
    }

    fn commit(&self, conn: &mut Connection) -> Result<(), TransactError> {
        match run_cached(conn, "COMMIT") {
            Ok(()) => Ok(()),
            Err(e) => {
                // A busy COMMIT leaves the transaction open.
                let _ = self.rollback(conn);
                Err(classify(e))
            }
        }
    }

    fn rollback(&self, conn: &mut Connection) -> Result<(), BoxError> {
        if conn.is_autocommit() {
            return Ok(());
        }
        run_cached(conn, "ROLLBACK").map_err(Into::into)
    }

    fn in_transaction(&self, conn: &Connection) -> bool {
        !conn.is_autocommit()
    }

    /// Commits of this database file made on the calling thread, counted by a commit hook
    /// set when the connection opens: SQLite calls it for each write transaction that
    /// commits (an explicit `COMMIT`, or a statement run outside a transaction that
    /// writes). Counted per file, as configured, rather than per connection (rusqlite
    /// offers no safe per-connection state): while a strategy's `BEGIN IMMEDIATE` holds
    /// the file's write lock, no other connection commits a write to it — except to its
    /// own `TEMP` tables or an attached database, which an op must not do through another
    /// connection to the same file on its own thread (its op would fail as
    /// `TransactionEnded`). A nested strategy over another file counts apart. It cannot
    /// see the op's connection used from another thread, nor a hook the op replaced: an op
    /// must do neither. `None` for an in-memory or temporary database.
    fn tx_counts(&self, _conn: &Connection) -> Option<TxCounts> {
        let file = self.counted_file.as_ref()?;
        COMMITS
            .try_with(|commits| {
                commits
                    .try_borrow()
                    .map(|commits| TxCounts::new(commits.get(file).copied().unwrap_or(0)))
                    .ok()
            })
            .ok()
            .flatten()
    }

    fn forget_fence(
        &self,
        conn: &mut Connection,
        backend: &str,
        name: &[u8],
    ) -> Result<(), BoxError> {
        match conn.execute(FORGET_FENCE, rusqlite::params![backend, name]) {
            Ok(_) => Ok(()),
            Err(e) if is_missing_table(&e) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Every `n` maps to one savepoint name (see `SAVEPOINT` in the source): savepoints
    /// must end in the reverse order they began, which group commit's never-overlapping
    /// ones do.
    fn savepoint(&self, conn: &mut Connection, _n: usize) -> Result<(), BoxError> {
        run_cached(conn, SAVEPOINT).map_err(Into::into)
    }

    fn release_savepoint(&self, conn: &mut Connection, _n: usize) -> Result<(), BoxError> {
        run_cached(conn, RELEASE).map_err(Into::into)
    }

    fn rollback_to_savepoint(&self, conn: &mut Connection, _n: usize) -> Result<(), BoxError> {
        run_cached(conn, ROLLBACK_TO)?;
        run_cached(conn, RELEASE).map_err(Into::into)
    }

    fn is_busy(&self, error: &(dyn Any + Send + Sync)) -> bool {
        turnstile_core::find_error::<rusqlite::Error>(error).is_some_and(is_busy)
    }

    /// With `synchronous = FULL` in WAL mode: the connection commits with `NORMAL`, and
    /// the flush syncs the WAL file, which is what `FULL` does at each commit. A WAL
    /// commit is a run of frames appended to that file, and recovery keeps every commit
    /// up to the first one it cannot read whole, so syncing it makes every earlier commit
    /// durable, whichever connection wrote it. `None` in any other mode, and for a
    /// database without a file of its own (`:memory:`, temporary).
    fn defer_flush(&self, conn: &mut Connection) -> Result<Option<Box<dyn Flush>>, BoxError> {
        if !self.wal || self.synchronous != Synchronous::Full {
            return Ok(None);
        }
        let mode: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Ok(None);
        }
        // The WAL is the database's name plus `-wal` with the default VFS; a URI can
        // choose another VFS, which may name (or keep) it otherwise, and a flush of the
        // wrong file would make nothing durable.
        if self.path.to_str().is_none_or(|p| p.starts_with("file:")) {
            return Ok(None);
        }
        let Some(flush) = conn.path().filter(|p| !p.is_empty()).map(WalFlush::new) else {
            return Ok(None);
        };
        conn.pragma_update(None, "synchronous", Synchronous::Normal.as_str())?;
        Ok(Some(Box::new(flush)))
    }
}

/// Syncs one connection's WAL file: see [`Sqlite`]'s `defer_flush`.
///
/// The file is opened at the first flush: a fresh database gets its WAL with its first
/// write. It stays the same file while the connection is open: SQLite removes the WAL only
/// when the last connection to the database closes, after copying it into the database
/// and syncing that. So the handle keeps serving after its connection is gone, and a WAL
/// that is not there holds no commit of the connection's.
#[derive(Debug)]
struct WalFlush {
    path: PathBuf,
    file: Mutex<Option<File>>,
    failed: AtomicBool,
}

impl WalFlush {
    /// The WAL of the database at `db`.
    fn new(db: &str) -> WalFlush {
        let mut path = OsString::from(db);
        path.push("-wal");
        WalFlush {
            path: PathBuf::from(path),
            file: Mutex::new(None),
            failed: AtomicBool::new(false),
        }
    }

    fn sync(&self) -> std::io::Result<()> {
        let mut file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        if file.is_none() {
            match File::options().read(true).write(true).open(&self.path) {
                Ok(opened) => *file = Some(opened),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        file.as_ref().map_or(Ok(()), File::sync_data)
    }
}

impl Flush for WalFlush {
    fn flush(&self) -> Result<(), BoxError> {
        if self.failed.load(Ordering::Acquire) {
            // After a failed sync the kernel may have dropped the dirty pages and cleared
            // the error: a later sync that succeeds would prove nothing.
            return Err(format!("an earlier sync of {} failed", self.path.display()).into());
        }
        self.sync().map_err(|e| {
            self.failed.store(true, Ordering::Release);
            format!("syncing {}: {e}", self.path.display()).into()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fences_are_checked_and_recorded_in_the_transaction() {
        let dir = tempfile::tempdir().unwrap();
        let db = Sqlite::new(dir.path().join("f.db")).synchronous(Synchronous::Normal);
        let mut conn = db.connect().unwrap();
        let claim = |f| FenceClaim {
            backend: "test",
            name: b"k",
            fence: Fence(f),
        };
        db.begin(&mut conn, &[claim(5)]).unwrap();
        db.commit(&mut conn).unwrap();
        // Equal is fine (a rerun under the same lease); lower is refused.
        db.begin(&mut conn, &[claim(5)]).unwrap();
        db.commit(&mut conn).unwrap();
        match db.begin(&mut conn, &[claim(4)]) {
            Err(TransactError::StaleFence { presented, highest }) => {
                assert_eq!((presented, highest), (Fence(4), Fence(5)));
            }
            other => panic!("expected a stale fence, got {other:?}"),
        }
        assert!(!db.in_transaction(&conn));
        // A fence recorded in a rolled-back transaction is not recorded.
        db.begin(&mut conn, &[claim(9)]).unwrap();
        db.rollback(&mut conn).unwrap();
        db.begin(&mut conn, &[claim(6)]).unwrap();
        db.commit(&mut conn).unwrap();
    }

    /// A database file on which SQLite will not keep a WAL (a VFS without shared memory:
    /// SQLite's `unix-dotfile` here, a network filesystem elsewhere) answers the same on
    /// every connect: a setup error saying to turn WAL off, not an outage.
    #[test]
    fn a_file_that_cannot_keep_a_wal_is_a_config_error() {
        let dir = tempfile::tempdir().unwrap();
        let uri = format!(
            "file:{}?vfs=unix-dotfile",
            dir.path().join("d.db").display()
        );
        let error = Sqlite::new(&uri).connect().unwrap_err();
        let config = error
            .downcast_ref::<ConfigError>()
            .unwrap_or_else(|| panic!("not a config error: {error:?}"));
        let text = config.to_string();
        assert!(text.contains("wal(false)"), "{text}");
        assert!(text.contains("journal_mode is delete"), "{text}");
        // Without WAL it opens and writes.
        let conn = Sqlite::new(&uri).wal(false).connect().unwrap();
        conn.execute_batch("CREATE TABLE t (v INTEGER); INSERT INTO t VALUES (1)")
            .unwrap();
    }

    #[test]
    fn savepoints_undo_only_their_own_op() {
        let dir = tempfile::tempdir().unwrap();
        let db = Sqlite::new(dir.path().join("s.db")).synchronous(Synchronous::Normal);
        let mut conn = db.connect().unwrap();
        conn.execute_batch("CREATE TABLE t (v INTEGER)").unwrap();
        db.begin(&mut conn, &[]).unwrap();
        // More savepoints than the statement cache holds entries.
        for n in 0..40_i64 {
            let at = usize::try_from(n).unwrap();
            db.savepoint(&mut conn, at).unwrap();
            conn.execute("INSERT INTO t VALUES (?1)", [n]).unwrap();
            if n % 3 == 0 {
                db.rollback_to_savepoint(&mut conn, at).unwrap();
            } else {
                db.release_savepoint(&mut conn, at).unwrap();
            }
            assert!(
                db.in_transaction(&conn),
                "savepoint {n} ended the transaction"
            );
        }
        db.commit(&mut conn).unwrap();
        let kept: i64 = conn
            .query_row("SELECT count(*) FROM t WHERE v % 3 != 0", [], |r| r.get(0))
            .unwrap();
        let undone: i64 = conn
            .query_row("SELECT count(*) FROM t WHERE v % 3 = 0", [], |r| r.get(0))
            .unwrap();
        assert_eq!((kept, undone), (26, 0));
    }

    #[test]
    fn a_fence_table_dropped_under_the_cache_is_created_again() {
        let dir = tempfile::tempdir().unwrap();
        let db = Sqlite::new(dir.path().join("d.db")).synchronous(Synchronous::Normal);
        let mut conn = db.connect().unwrap();
        let claim = |f| FenceClaim {
            backend: "test",
            name: b"k",
            fence: Fence(f),
        };
        // Created inside a transaction that rolls back: gone again, and created anew.
        db.begin(&mut conn, &[claim(7)]).unwrap();
        db.rollback(&mut conn).unwrap();
        db.begin(&mut conn, &[claim(3)]).unwrap();
        db.commit(&mut conn).unwrap();
        conn.execute_batch("DROP TABLE turnstile_fences").unwrap();
        db.begin(&mut conn, &[claim(1)]).unwrap();
        db.commit(&mut conn).unwrap();
        match db.begin(&mut conn, &[claim(0)]) {
            Err(TransactError::StaleFence { highest, .. }) => assert_eq!(highest, Fence(1)),
            other => panic!("expected a stale fence, got {other:?}"),
        }
    }

    #[test]
    fn busy_is_classified_by_primary_code() {
        let dir = tempfile::tempdir().unwrap();
        let db = Sqlite::new(dir.path().join("b.db")).busy_timeout(Duration::ZERO);
        let mut a = db.connect().unwrap();
        let mut b = db.connect().unwrap();
        db.begin(&mut a, &[]).unwrap();
        match db.begin(&mut b, &[]) {
            Err(TransactError::Busy(_)) => {}
            other => panic!("expected busy, got {other:?}"),
        }
        db.rollback(&mut a).unwrap();
        db.begin(&mut b, &[]).unwrap();
        db.commit(&mut b).unwrap();
    }
}
