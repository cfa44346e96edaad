//! One checked run: set up the data, run a workload's ops through a strategy in threads
//! (and child processes), inject faults, merge the histories, run the checkers, drop the
//! run's tables.
//!
//! [`run`] is what `turnstile check` calls; it also returns per-op latencies and the
//! wall time, for measurements. The data is a SQLite file by default, or a PostgreSQL or
//! MySQL database ([`RunConfig::data`]); the same run path, generic over the
//! [`Backend`], serves every kind (see [`crate::data`]).
//!
//! How the strategy runs is decided by its [`Capabilities`]: a strategy whose mechanism
//! is the resource's own transaction (it reports `transactional` even when asked for
//! [`TxMode::Autocommit`]) runs inside it; a lock strategy runs in autocommit, so only its
//! lock stands between two ops — SQLite's `BEGIN IMMEDIATE` would otherwise serialize
//! writers by itself and hide a broken lock. Kill runs put lock strategies back in their
//! transaction: they test recovery, not exclusion. Over versioned records, whose writes
//! apply at commit, every strategy runs in its transaction.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use turnstile::spec::{Registry, Setup, Spec, redact_url};
use turnstile::sqlite::{Sqlite, Synchronous};
use turnstile::{BoxSerializer, Capabilities, Connect, Error, Key, Scope, Transact, TxMode, Wait};

use crate::check::{self, CheckResult, Verdict};
use crate::data::{self, Backend, DataSpec, Tables, WithBackend, WorkloadData};
use crate::history::{Event, History, HistoryWriter, Phase, ThreadLog, now_ns};
use crate::nemesis::{Fault, Nemesis};
use crate::procs::{Cut, Ran, STOP_GRACE};
use crate::workload::{OpEnv, Paths, Probe, Workload};

/// The longest [`RunConfig::time_limit`]: a week.
pub const MAX_TIME_LIMIT: Duration = Duration::from_secs(7 * 24 * 3600);

/// What to run. Its `Debug` shows the strategy spec as
/// [`redact_url`] does: it may hold a password.
#[derive(Clone)]
#[non_exhaustive]
pub struct RunConfig {
    /// The strategy spec (`"mutex"`, `"busy-timeout"`, …).
    pub strategy: String,
    /// The workload.
    pub workload: Workload,
    /// Threads per process. Default 4.
    pub threads: usize,
    /// Processes; 1 runs the threads in this process. Default 1.
    pub procs: usize,
    /// Ops in total. Default 1000.
    pub ops: usize,
    /// Keys (accounts, notifications, records); `None`: the workload's default.
    pub keys: Option<usize>,
    /// Pause between an op's read and its write. Default zero.
    pub think: Duration,
    /// The most an op waits between its read and write for another worker to be there
    /// too (see [`OpEnv::rendezvous`](crate::workload::OpEnv::rendezvous)); for negative controls. Default zero (off).
    pub rendezvous: Duration,
    /// Faults to inject (needs worker processes). Default none.
    pub nemesis: Option<Nemesis>,
    /// With a [`nemesis`](Self::nemesis), whether a run it never struck is inconclusive
    /// (the [floor](crate::check) checker): a fault test in which nothing failed has
    /// tested nothing about faults. Default on. The conformance suite's generated
    /// configurations turn it off: their short pauses are one perturbation among many,
    /// and a run over before the first is due still tests the rest.
    pub require_fault: bool,
    /// Where the data lives: a SQLite file (the default), or a PostgreSQL or MySQL
    /// database, in tables of the run's own that it drops at the end.
    pub data: DataSpec,
    /// Whether the ops work on versioned records (a
    /// [`Versioned`](turnstile::optimistic::Versioned) handle over the data) rather than
    /// tables. `None` (the default): only for strategies known over versioned records
    /// alone (`optimistic`). `Some(true)` runs a lock strategy (`mutex`) over the same
    /// records.
    pub versioned: Option<bool>,
    /// SQLite's `synchronous`. Default `Normal`.
    pub sync: Synchronous,
    /// Where to save history and database when the run does not pass (on a server, its
    /// tables are then kept too): a violation, an inconclusive verdict, and a run that
    /// ends without a verdict once past bad usage — the time limit, a worker that failed,
    /// a backend lost, a signal ([`RunFailure::kept`]) — which keeps what it had written by
    /// then. A new directory, or an empty one, so that two runs' files never mix (one that
    /// holds files is refused before the run); no file in it is ever overwritten. Default
    /// none.
    pub keep: Option<PathBuf>,
    /// The SQLite database path; default a fresh file in a temporary directory.
    pub db: Option<PathBuf>,
    /// The `turnstile` binary to run workers with; default this executable.
    pub worker_exe: Option<PathBuf>,
    /// The random seed. Default: random, below 2^53, so that it survives a JSON reader
    /// that takes numbers as doubles (`jq`, JavaScript).
    pub seed: u64,
    /// How long a run may go on before it is cut short (at most [`MAX_TIME_LIMIT`]).
    /// Worker processes still running this long after they started are asked to stop:
    /// each starts no new op, ends the ones under way and writes its history out, and is
    /// killed if it has not within [`STOP_GRACE`]. A run in this process's threads is cut
    /// only when it is stuck, once no op has started for this long: each thread stops
    /// before its next op, and an op under way still ends first (within its strategy's
    /// timeout; one blocked on a server that stopped answering, whenever that returns).
    ///
    /// The ops that started before the cut are checked: a violation among them is the
    /// run's verdict, and the report says the run was cut; otherwise the run ends
    /// without a verdict, [`RunError::TimedOut`] (a partial pass proves nothing), as it
    /// does when a worker that did not stop in time leaves a history the checkers cannot
    /// trust. Default 300 s.
    pub time_limit: Duration,
    /// Show a progress bar on stderr (only drawn on a terminal). Default off.
    pub progress: bool,
    /// How long an op may wait to start ([`Setup::timeout`]); `None`: the strategy's
    /// default.
    pub timeout: Option<Duration>,
    /// Write a timeline of the critical sections here, as SVG. Default none.
    pub svg: Option<PathBuf>,
    /// Run lock strategies inside the resource's transaction, as applications do (fences
    /// enforced, a lost lease rolls back), instead of in autocommit where only the lock
    /// protects the data. Tests recovery from a paused holder, not exclusion (SQLite's
    /// own write lock then also protects the data); `compare` measures this way. Kill
    /// runs always do. Default off.
    pub transaction: bool,
}

impl fmt::Debug for RunConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Every field, so that a new one is not left out unseen; the spec redacted.
        let RunConfig {
            strategy,
            workload,
            threads,
            procs,
            ops,
            keys,
            think,
            rendezvous,
            nemesis,
            require_fault,
            data,
            versioned,
            sync,
            keep,
            db,
            worker_exe,
            seed,
            time_limit,
            progress,
            timeout,
            svg,
            transaction,
        } = self;
        f.debug_struct("RunConfig")
            .field("strategy", &redact_url(strategy))
            .field("workload", workload)
            .field("threads", threads)
            .field("procs", procs)
            .field("ops", ops)
            .field("keys", keys)
            .field("think", think)
            .field("rendezvous", rendezvous)
            .field("nemesis", nemesis)
            .field("require_fault", require_fault)
            .field("data", data)
            .field("versioned", versioned)
            .field("sync", sync)
            .field("keep", keep)
            .field("db", db)
            .field("worker_exe", worker_exe)
            .field("seed", seed)
            .field("time_limit", time_limit)
            .field("progress", progress)
            .field("timeout", timeout)
            .field("svg", svg)
            .field("transaction", transaction)
            .finish()
    }
}

impl RunConfig {
    /// A run of `workload` through `strategy` with the defaults above.
    pub fn new(strategy: impl Into<String>, workload: Workload) -> Self {
        RunConfig {
            strategy: strategy.into(),
            workload,
            threads: 4,
            procs: 1,
            ops: 1000,
            keys: None,
            think: Duration::ZERO,
            rendezvous: Duration::ZERO,
            nemesis: None,
            require_fault: true,
            data: DataSpec::Sqlite,
            versioned: None,
            sync: Synchronous::Normal,
            keep: None,
            db: None,
            worker_exe: None,
            seed: fastrand::u64(..MAX_DEFAULT_SEED),
            time_limit: Duration::from_secs(300),
            progress: false,
            timeout: None,
            svg: None,
            transaction: false,
        }
    }

    /// Sets [`RunConfig::threads`].
    pub fn threads(mut self, n: usize) -> Self {
        self.threads = n;
        self
    }

    /// Sets [`RunConfig::procs`].
    pub fn procs(mut self, n: usize) -> Self {
        self.procs = n;
        self
    }

    /// Sets [`RunConfig::ops`].
    pub fn ops(mut self, n: usize) -> Self {
        self.ops = n;
        self
    }

    /// Sets [`RunConfig::keys`].
    pub fn keys(mut self, n: usize) -> Self {
        self.keys = Some(n);
        self
    }

    /// Sets [`RunConfig::think`].
    pub fn think(mut self, d: Duration) -> Self {
        self.think = d;
        self
    }

    /// Sets [`RunConfig::rendezvous`].
    pub fn rendezvous(mut self, d: Duration) -> Self {
        self.rendezvous = d;
        self
    }

    /// Sets [`RunConfig::nemesis`].
    pub fn nemesis(mut self, n: Nemesis) -> Self {
        self.nemesis = Some(n);
        self
    }

    /// Sets [`RunConfig::require_fault`].
    pub fn require_fault(mut self, yes: bool) -> Self {
        self.require_fault = yes;
        self
    }

    /// Sets [`RunConfig::data`].
    pub fn data(mut self, data: DataSpec) -> Self {
        self.data = data;
        self
    }

    /// Sets [`RunConfig::versioned`].
    pub fn versioned(mut self, yes: bool) -> Self {
        self.versioned = Some(yes);
        self
    }

    /// Sets [`RunConfig::worker_exe`].
    pub fn worker_exe(mut self, exe: impl Into<PathBuf>) -> Self {
        self.worker_exe = Some(exe.into());
        self
    }

    /// Sets [`RunConfig::db`].
    pub fn db(mut self, path: impl Into<PathBuf>) -> Self {
        self.db = Some(path.into());
        self
    }

    /// Sets [`RunConfig::keep`].
    pub fn keep(mut self, dir: impl Into<PathBuf>) -> Self {
        self.keep = Some(dir.into());
        self
    }

    /// Sets [`RunConfig::sync`].
    pub fn sync(mut self, sync: Synchronous) -> Self {
        self.sync = sync;
        self
    }

    /// Sets [`RunConfig::progress`].
    pub fn progress(mut self, yes: bool) -> Self {
        self.progress = yes;
        self
    }

    /// Sets [`RunConfig::timeout`].
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Sets [`RunConfig::svg`].
    pub fn svg(mut self, path: impl Into<PathBuf>) -> Self {
        self.svg = Some(path.into());
        self
    }

    /// Sets [`RunConfig::transaction`].
    pub fn transaction(mut self, yes: bool) -> Self {
        self.transaction = yes;
        self
    }

    /// Sets [`RunConfig::time_limit`].
    pub fn time_limit(mut self, limit: Duration) -> Self {
        self.time_limit = limit;
        self
    }

    /// Sets [`RunConfig::seed`].
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// The number of keys the run uses.
    pub fn key_count(&self) -> usize {
        self.keys
            .unwrap_or_else(|| match self.workload {
                // Enough notifications that unsent ones remain for the whole run.
                Workload::NotifyOnce | Workload::NotifyStale => (self.ops / 4).clamp(16, 100_000),
                w => w.default_keys(),
            })
            .max(1)
    }

    fn uses_children(&self) -> bool {
        self.procs > 1 || self.nemesis.is_some()
    }

    pub(crate) fn validate(&self) -> Result<(), RunError> {
        let bad = |m: String| Err(RunError::Usage(m));
        if self.time_limit.is_zero() || self.time_limit > MAX_TIME_LIMIT {
            return bad(format!(
                "--time-limit-s must be 1..={}, got {}",
                MAX_TIME_LIMIT.as_secs(),
                // In the flag's unit, seconds, when whole (a library caller may give less).
                match self.time_limit.subsec_nanos() {
                    0 => self.time_limit.as_secs().to_string(),
                    _ => format!("{:?}", self.time_limit),
                }
            ));
        }
        if !(1..=256).contains(&self.threads) {
            return bad(format!("--threads must be 1..=256, got {}", self.threads));
        }
        if !(1..=64).contains(&self.procs) {
            return bad(format!("--procs must be 1..=64, got {}", self.procs));
        }
        if !(1..=10_000_000).contains(&self.ops) {
            return bad(format!("--ops must be 1..=10000000, got {}", self.ops));
        }
        if let Some(k) = self.keys.filter(|k| !(1..=100_000).contains(k)) {
            return bad(format!("--keys must be 1..=100000, got {k}"));
        }
        if self.think > Duration::from_secs(1) || self.rendezvous > Duration::from_secs(1) {
            return bad("--think-us and --rendezvous-us must be at most 1 s".into());
        }
        if self
            .timeout
            .is_some_and(|t| t.is_zero() || t > Duration::from_secs(3600))
        {
            return bad("--timeout-ms must be 1..=3600000".into());
        }
        self.data.check()?;
        if self.db.is_some() && self.data.is_server() {
            return bad(format!(
                "--db is a SQLite path; the data is in {} (drop one of --db and --data)",
                self.data
            ));
        }
        if let Some(db) = &self.db
            && db.exists()
        {
            return bad(format!(
                "--db {} already exists; a run needs a fresh database (its invariants count from zero)",
                db.display()
            ));
        }
        if let Some(db) = &self.db {
            // A directory that is not there is a typo to report now, not a run that ends
            // inconclusive because SQLite could not open the file.
            writable_file("--db", db)?;
            let len = sqlite_path_len(db);
            if len > SQLITE_PATH_MAX {
                return bad(format!(
                    "--db: its path is {len} bytes long once absolute and free of links; SQLite opens a database at a path of at most {SQLITE_PATH_MAX}"
                ));
            }
        }
        if let Some(n) = self.nemesis
            && n.kills()
            && !self.workload.survives_kills()
        {
            return bad(format!(
                "the {} workload has no transaction to survive kills",
                self.workload
            ));
        }
        if let Some(svg) = &self.svg {
            writable_file("--svg", svg)?;
            if let Some(db) = &self.db
                && same_file(svg, db)
            {
                return bad(format!(
                    "--svg and --db name one file, {}: the timeline would overwrite the database",
                    svg.display()
                ));
            }
        }
        if let Some(keep) = &self.keep {
            check_keep(keep, self.db.as_deref()).map_err(RunError::Usage)?;
            writable_dir("--keep", keep)?;
        }
        Ok(())
    }
}

/// The longest database path SQLite opens, in bytes, as it measures it (absolute, links
/// resolved): its unix VFS's 512 less the 8 it keeps for a suffix (`-journal`).
const SQLITE_PATH_MAX: usize = 504;

/// The length of `db`'s path as SQLite measures it: absolute, with the links of its
/// directory resolved (the file itself is new). As given when that cannot be worked out.
fn sqlite_path_len(db: &Path) -> usize {
    let parent = match db.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    match (parent.canonicalize(), db.file_name()) {
        (Ok(dir), Some(name)) => dir.join(name).as_os_str().len(),
        _ => db.as_os_str().len(),
    }
}

/// The longest file name Linux takes (`NAME_MAX`), in bytes.
const NAME_MAX: usize = 255;

/// The longest path Linux takes (`PATH_MAX` less its NUL), in bytes.
const PATH_MAX: usize = 4095;

/// The longest name of a file a run keeps in `--keep` but the database's own
/// (`history-63.jsonl`, `effects.log`, `run.db-shm`, …), with room to spare.
const KEPT_NAME_MAX: usize = 32;

/// Checks `--keep DIR` before the run, beyond [`writable_dir`] (a directory that can be
/// made there): that DIR holds no files yet, since a kept run's files would mix with an
/// earlier run's and no one could tell them apart; and that each name in it fits
/// [`NAME_MAX`] and the files kept in it [`PATH_MAX`], which would otherwise fail only
/// after the run (`File name too long`). `db` is `--db`, whose name the kept copy takes.
fn check_keep(dir: &Path, db: Option<&Path>) -> Result<(), String> {
    let shown = || crate::report::cut(&dir.display().to_string()).into_owned();
    for part in dir.components() {
        let len = part.as_os_str().len();
        if len > NAME_MAX {
            return Err(format!(
                "--keep {}: a name in it is {len} bytes long, past the {NAME_MAX} a file name may have",
                shown()
            ));
        }
    }
    let longest = db
        .and_then(Path::file_name)
        .map_or(0, std::ffi::OsStr::len)
        .max(KEPT_NAME_MAX);
    let len = dir.as_os_str().len();
    if len + 1 + longest > PATH_MAX {
        return Err(format!(
            "--keep {}: its path is {len} bytes long: the files kept in it would pass the {PATH_MAX} bytes a path may have",
            shown()
        ));
    }
    // Not there, not a directory or not readable: the run's own check says what it is.
    if let Ok(mut entries) = std::fs::read_dir(dir)
        && entries.next().is_some()
    {
        return Err(format!(
            "--keep {} is not empty: the run's files would mix with what is there; keep each run in a new or empty directory",
            shown()
        ));
    }
    Ok(())
}

/// Whether `a` and `b` name one file: the same path once made absolute and free of links
/// (for a file not there yet, its directory's), or, for files that exist, the same inode
/// (a hard link). Paths that cannot be resolved are compared as given.
pub fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    if let (Ok(x), Ok(y)) = (std::fs::metadata(a), std::fs::metadata(b))
        && (x.dev(), x.ino()) == (y.dev(), y.ino())
    {
        return true;
    }
    let resolved = |p: &Path| -> PathBuf {
        if let Ok(real) = p.canonicalize() {
            return real;
        }
        let parent = match p.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        match (parent.canonicalize(), p.file_name()) {
            (Ok(dir), Some(name)) => dir.join(name),
            _ => p.to_path_buf(),
        }
    };
    resolved(a) == resolved(b)
}

/// Checks, before a run, that a file can be written at `path` (the value of `flag`): its
/// directory exists and takes a new file, or the file exists and opens for writing.
/// Nothing is left behind (a file made to find out is removed) and nothing existing is
/// changed. A link to a file not there yet is followed to where writing would create it,
/// through at most 40 links in a row, as Linux's `open` would.
///
/// # Errors
/// [`RunError::Usage`] naming `flag`, the path and why ("too many levels of symbolic
/// links" for a loop of links).
pub fn writable_file(flag: &str, path: &Path) -> Result<(), RunError> {
    let given = path;
    let mut path = path.to_path_buf();
    for _ in 0..=MAX_SYMLINKS {
        // The path given, and where its links led when that is elsewhere.
        let bad = |why: String| {
            let shown = if path == given {
                given.display().to_string()
            } else {
                format!(
                    "{} (a symbolic link to {})",
                    given.display(),
                    path.display()
                )
            };
            RunError::Usage(format!("{flag} {shown}: {why}"))
        };
        if path.is_dir() {
            return Err(bad("is a directory".into()));
        }
        // Opening a named pipe to write waits for a reader, maybe forever; a socket does
        // not open at all.
        if let Ok(meta) = std::fs::metadata(&path) {
            use std::os::unix::fs::FileTypeExt;
            let kind = meta.file_type();
            if kind.is_fifo() || kind.is_socket() {
                let what = if kind.is_fifo() {
                    "named pipe"
                } else {
                    "socket"
                };
                return Err(bad(format!("is a {what}, not a file")));
            }
        }
        let mut open = std::fs::OpenOptions::new();
        open.write(true);
        if path.exists() {
            open.open(&path).map_err(|e| bad(e.to_string()))?;
        } else if path.is_symlink() {
            // A link to a file not there yet: writing follows it and creates that file.
            let target = std::fs::read_link(&path).map_err(|e| bad(e.to_string()))?;
            path = match path.parent() {
                Some(dir) if target.is_relative() => dir.join(target),
                _ => target,
            };
            continue;
        } else {
            open.create_new(true)
                .open(&path)
                .map_err(|e| bad(e.to_string()))?;
            let _ = std::fs::remove_file(&path);
        }
        return Ok(());
    }
    Err(RunError::Usage(format!(
        "{flag} {}: too many levels of symbolic links",
        given.display()
    )))
}

/// How many symbolic links [`writable_file`] follows in a row, as Linux's `open` does
/// (`ELOOP` beyond).
const MAX_SYMLINKS: usize = 40;

/// Checks, before a run, that `dir` (the value of `flag`) is a directory files can be
/// made in, or can be created as one: its nearest existing ancestor is a directory that
/// takes new entries. Nothing is created.
///
/// # Errors
/// [`RunError::Usage`] naming `flag`, the path and why.
pub fn writable_dir(flag: &str, dir: &Path) -> Result<(), RunError> {
    let bad = |why: String| RunError::Usage(format!("{flag} {}: {why}", dir.display()));
    let mut existing = dir;
    while std::fs::symlink_metadata(existing).is_err() {
        existing = match existing.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            _ if existing != Path::new(".") => Path::new("."),
            _ => return Err(bad("no directory above it exists".into())),
        };
    }
    if !existing.is_dir() {
        return Err(bad(format!("{} is not a directory", existing.display())));
    }
    tempfile::tempfile_in(existing)
        .map(drop)
        .map_err(|e| bad(format!("cannot write in {}: {e}", existing.display())))
}

/// Why a run could not produce a verdict.
#[derive(Debug)]
#[non_exhaustive]
pub enum RunError {
    /// Bad arguments or an unknown strategy (exit 2).
    Usage(String),
    /// The strategy's backend or the database is out of reach (exit 3).
    Unavailable(String),
    /// A worker process failed outside the nemesis (exit 3).
    Worker(String),
    /// The run directory failed (exit 3).
    Io(std::io::Error),
    /// The run's ops did not finish within [`RunConfig::time_limit`], and those that ran
    /// showed no violation, or could not be checked (exit 3).
    TimedOut(Duration),
    /// The op run before the start to see that the backend answers waited this long and
    /// did not start: something else holds the lock, or keeps the data busy (exit 3).
    ProbeTimedOut(Duration),
    /// The run was stopped early by [`interrupt::request`](crate::interrupt::request),
    /// for this signal (exit 128 + its number, as a shell reports a process the signal
    /// ended).
    Interrupted(i32),
}

impl RunError {
    /// The CLI's exit code for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            RunError::Usage(_) => 2,
            RunError::Interrupted(signal) => 128 + signal,
            _ => 3,
        }
    }
}

impl RunError {
    /// What went wrong, without the `bad usage: ` or `inconclusive: ` that [`Display`]
    /// puts first: for a line that says that already.
    ///
    /// [`Display`]: std::fmt::Display
    pub fn reason(&self) -> String {
        match self {
            RunError::Usage(m) => m.clone(),
            RunError::Unavailable(m) => format!("backend unavailable: {m}"),
            RunError::Worker(m) => format!("a worker failed: {m}"),
            RunError::Io(e) => format!("run directory: {e}"),
            RunError::TimedOut(limit) => {
                format!("the run did not finish within its time limit of {limit:?}")
            }
            RunError::ProbeTimedOut(waited) => format!(
                "the first op waited {waited:?} and did not start: something else holds \
                 the lock or keeps the data busy (another run, a stale holder)"
            ),
            RunError::Interrupted(signal) => format!("stopped early by signal {signal}"),
        }
    }
}

impl std::fmt::Display for RunError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RunError::Usage(_) => write!(f, "bad usage: {}", self.reason()),
            RunError::Interrupted(_) => write!(f, "interrupted: {}", self.reason()),
            _ => write!(f, "inconclusive: {}", self.reason()),
        }
    }
}

impl std::error::Error for RunError {}

impl From<std::io::Error> for RunError {
    fn from(e: std::io::Error) -> Self {
        RunError::Io(e)
    }
}

/// How [`run`] ends without a report: why ([`RunError`]), and what the run kept of itself
/// all the same (`--keep`), so that the files of a run that went wrong are not lost with it.
#[derive(Debug)]
#[non_exhaustive]
pub struct RunFailure {
    /// Why the run ended without a verdict.
    pub error: RunError,
    /// Where the run's history and database were saved ([`RunConfig::keep`]): a run that
    /// got past bad usage keeps what it had written when it ended (its histories so far,
    /// the worker processes' stderr, its SQLite database; on a server its tables stay).
    pub kept: Option<PathBuf>,
    /// What the run found besides: files that could not be kept, tables kept on a server,
    /// what the partial history of a run cut by its time limit showed.
    pub notes: Vec<String>,
}

impl RunFailure {
    /// The CLI's exit code: the [`error`](Self::error)'s.
    pub fn exit_code(&self) -> i32 {
        self.error.exit_code()
    }

    /// What went wrong ([`RunError::reason`]), and where the files were kept if they were.
    pub fn reason(&self) -> String {
        format!("{}{}", self.error.reason(), self.kept_clause())
    }

    fn kept_clause(&self) -> String {
        self.kept.as_ref().map_or_else(String::new, |dir| {
            format!("; history and database kept in {}", dir.display())
        })
    }
}

impl From<RunError> for RunFailure {
    fn from(error: RunError) -> Self {
        RunFailure {
            error,
            kept: None,
            notes: Vec::new(),
        }
    }
}

impl From<std::io::Error> for RunFailure {
    fn from(e: std::io::Error) -> Self {
        RunError::Io(e).into()
    }
}

impl std::fmt::Display for RunFailure {
    /// As the [`error`](Self::error) says it, then where the files were kept.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}{}", self.error, self.kept_clause())
    }
}

/// No `source`: the message says the error's own words already.
impl std::error::Error for RunFailure {}

/// Maps a strategy error met while opening or probing to a run error.
pub(crate) fn open_error(e: turnstile::StrategyError) -> RunError {
    match e {
        Error::Config(m) => RunError::Usage(m),
        Error::InvalidKey(k) => RunError::Usage(k.to_string()),
        // Its own words: `RunError` says "backend unavailable" once.
        Error::Unavailable(e) => RunError::Unavailable(causes(&*e)),
        other => RunError::Unavailable(other.to_string()),
    }
}

/// What one run found and measured.
#[derive(Clone, Debug, Serialize)]
pub struct RunReport {
    /// The strategy spec, with any password shown as `***`.
    pub strategy: String,
    /// The workload.
    pub workload: Workload,
    /// Threads per process.
    pub threads: usize,
    /// Processes.
    pub procs: usize,
    /// Ops requested.
    pub requested: usize,
    /// The random seed (`--seed` replays the same op choices).
    pub seed: u64,
    /// The strategy's scope, as it reports it.
    pub scope: &'static str,
    /// Whether ops ran inside the resource's transaction.
    pub transactional: bool,
    /// Where the data was (no password): `sqlite PATH`, or a server URL and the run's table
    /// prefix (`postgres://u@h:5432/db, tables ts_…_*`), or versioned records in either.
    pub data: String,
    /// The overall verdict.
    pub verdict: Verdict,
    /// Every checker's result, plus the `floor` when too few ops were acknowledged.
    pub checks: Vec<CheckResult>,
    /// Ops acknowledged.
    pub acknowledged: usize,
    /// Ops that definitely failed.
    pub failed: usize,
    /// Ops of unknown outcome.
    pub unknown: usize,
    /// Failures by error kind (`"timeout: …"` → count).
    pub errors: std::collections::BTreeMap<String, usize>,
    /// Faults injected.
    pub faults: Vec<Fault>,
    /// Latency of every acknowledged op, invoke to completion, in ns.
    #[serde(skip)]
    pub latencies_ns: Vec<u64>,
    /// Wall time of the ops phase.
    pub wall: Duration,
    /// Notes: scope warnings, malformed history lines, a server's tables kept or not
    /// dropped.
    pub notes: Vec<String>,
    /// Where history and database were saved.
    pub kept: Option<PathBuf>,
    /// Outputs asked for (`--svg`, `--keep`) that could not be written after the run,
    /// each also in [`notes`](RunReport::notes) with why.
    pub unwritten: Vec<PathBuf>,
}

impl RunReport {
    /// The CLI's exit code: 0 pass, 1 violation, 3 inconclusive — and 2 for a pass
    /// whose [`unwritten`](RunReport::unwritten) outputs are missing (a violation or an
    /// inconclusive run keeps its code: the verdict is what the run found).
    pub fn exit_code(&self) -> i32 {
        match self.verdict {
            Verdict::Pass if !self.unwritten.is_empty() => 2,
            Verdict::Pass => 0,
            Verdict::Violation => 1,
            Verdict::Inconclusive => 3,
        }
    }

    /// The result of checker `name`, if it ran.
    pub fn check(&self, name: &str) -> Option<&CheckResult> {
        self.checks.iter().find(|c| c.checker == name)
    }
}

/// What a worker process (or the in-process threads) runs: everything is explicit, so it
/// serializes, for a child process, to the first line of its stdin. Its `Debug` shows the
/// strategy spec as [`redact_url`] does.
#[derive(Clone, Serialize, Deserialize)]
pub struct WorkerSpec {
    /// Strategy spec.
    pub strategy: String,
    /// Workload.
    pub workload: Workload,
    /// Files.
    pub paths: Paths,
    /// This worker process's index (replacements get new ones).
    pub proc: u32,
    /// Threads.
    pub threads: usize,
    /// Ops this process runs in total.
    pub ops: usize,
    /// Keys.
    pub keys: usize,
    /// Think time, µs.
    pub think_us: u64,
    /// Rendezvous wait, µs (0: off).
    #[serde(default)]
    pub rendezvous_us: u64,
    /// Whether to run lock strategies in their transaction (kill runs).
    pub transaction: bool,
    /// SQLite `synchronous`.
    pub sync: String,
    /// Random seed.
    pub seed: u64,
    /// Whether to announce "in section" on stdout (for the nemesis).
    pub announce: bool,
    /// How long an op may wait to start, in ms (`None`: the strategy's default).
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// Whether to run one trivial op before reporting ready (replacements skip it).
    #[serde(default = "yes")]
    pub probe: bool,
    /// How long that op may wait to start, in ms (`None`: [`PROBE_WAIT`]): the run's op
    /// timeout, or without one [`PROBE_WAIT`], cut to the run's time limit.
    #[serde(default)]
    pub probe_wait_ms: Option<u64>,
    /// Where the data lives (default SQLite at `paths.db`).
    #[serde(default)]
    pub data: DataSpec,
    /// Whether the ops work on versioned records.
    #[serde(default)]
    pub versioned: bool,
    /// The prefix of the run's table names ([`Tables`]); empty in a fresh SQLite database.
    #[serde(default)]
    pub tables: String,
    /// Whether the threads may keep their history in memory for a while
    /// ([`HistoryWriter::held_thread_log`]) rather than write each invoke before its op
    /// runs: only when nothing kills workers mid-run (no nemesis). It takes a system call
    /// per op off every strategy's measured cost.
    #[serde(default)]
    pub hold_history: bool,
}

fn yes() -> bool {
    true
}

impl fmt::Debug for WorkerSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Every field, so that a new one is not left out unseen; the spec redacted.
        let WorkerSpec {
            strategy,
            workload,
            paths,
            proc,
            threads,
            ops,
            keys,
            think_us,
            rendezvous_us,
            transaction,
            sync,
            seed,
            announce,
            timeout_ms,
            probe,
            probe_wait_ms,
            data,
            versioned,
            tables,
            hold_history,
        } = self;
        f.debug_struct("WorkerSpec")
            .field("strategy", &redact_url(strategy))
            .field("workload", workload)
            .field("paths", paths)
            .field("proc", proc)
            .field("threads", threads)
            .field("ops", ops)
            .field("keys", keys)
            .field("think_us", think_us)
            .field("rendezvous_us", rendezvous_us)
            .field("transaction", transaction)
            .field("sync", sync)
            .field("seed", seed)
            .field("announce", announce)
            .field("timeout_ms", timeout_ms)
            .field("probe", probe)
            .field("probe_wait_ms", probe_wait_ms)
            .field("data", data)
            .field("versioned", versioned)
            .field("tables", tables)
            .field("hold_history", hold_history)
            .finish()
    }
}

impl WorkerSpec {
    /// Opens the strategy this worker runs, over `backend`'s data.
    ///
    /// # Errors
    /// [`RunError::Usage`] for an unknown or bad spec, [`RunError::Unavailable`] when its
    /// backend cannot be reached.
    pub fn open<B: Backend>(
        &self,
        backend: &B,
        registry: &Registry<B::Connect>,
    ) -> Result<BoxSerializer<<B::Connect as Connect>::Resource>, RunError> {
        let mode = if self.transaction || !backend.autocommit() {
            TxMode::Transaction
        } else {
            TxMode::Autocommit
        };
        let mut setup = Setup::new(backend.connect().clone()).tx_mode(mode);
        if mode == TxMode::Autocommit {
            // A lock per key, so that a run tests the lock's own per-key exclusion: over
            // SQLite `Locked` would take one lock for the whole database (its transactions
            // would meet at `BEGIN IMMEDIATE` anyway), and only one lock name would be
            // tested. In autocommit each statement takes SQLite's write lock on its own.
            setup = setup.key_scope(turnstile::KeyScope::PerKey);
        }
        if let Some(ms) = self.timeout_ms {
            setup = setup.timeout(Duration::from_millis(ms));
        }
        let strategy = registry.open(&self.strategy, &setup).map_err(open_error)?;
        if self.probe {
            let budget = self.probe_wait_ms.map_or(PROBE_WAIT, Duration::from_millis);
            probe(&strategy, budget)?;
        }
        Ok(strategy)
    }
}

/// Default seeds stay below this: 2^53, the largest run of integers a double holds exactly.
const MAX_DEFAULT_SEED: u64 = 1 << 53;

/// How long opening a strategy (with its first op) may take before the report says so.
const SLOW_START: Duration = Duration::from_secs(1);

/// How long the start-up probe waits for its op to start when neither an op timeout nor
/// a shorter time limit says otherwise: the longest default timeout of any strategy.
pub const PROBE_WAIT: Duration = Duration::from_secs(30);

/// How long one try of the start-up probe waits before it looks for a signal
/// ([`interrupt::requested`](crate::interrupt::requested)) and tries again.
const PROBE_SLICE: Duration = Duration::from_secs(1);

/// Runs one trivial op, so a backend out of reach shows before the run starts; it may
/// wait up to `budget` to start, in tries of at most [`PROBE_SLICE`] so that a signal
/// stops it. Answers how long it took.
fn probe<R: WorkloadData>(
    strategy: &BoxSerializer<R>,
    budget: Duration,
) -> Result<Duration, RunError> {
    let started = Instant::now();
    loop {
        if let Some(signal) = crate::interrupt::requested() {
            return Err(RunError::Interrupted(signal));
        }
        let slice = budget.saturating_sub(started.elapsed()).min(PROBE_SLICE);
        let tried =
            crate::workload::run_op_within(strategy, &[Key::whole()], Wait::Timeout(slice), |db| {
                db.probe()
            });
        return Err(match tried {
            Ok(()) => return Ok(started.elapsed()),
            Err(Error::Timeout { .. }) if started.elapsed() < budget => continue,
            Err(Error::Op(e)) => RunError::Unavailable(e.to_string()),
            // Not out of reach: something else holds the lock (or the data) all along.
            Err(Error::Timeout { .. }) => RunError::ProbeTimedOut(started.elapsed()),
            Err(other) => open_error(other.strategy_only().unwrap_or(Error::Indeterminate)),
        });
    }
}

/// Runs a worker's ops in its threads through `strategy` (opened over `backend`, as
/// [`WorkerSpec::open`] does), on `backend`'s tables, recording history. The threads
/// start together (a barrier); `announce` is called inside each op's critical section.
/// `backend`'s connector classifies the ops' errors: which were the data refusing them
/// as busy ([`refused_as_busy`](crate::workload::refused_as_busy)).
///
/// # Errors
/// When the history file cannot be written.
pub fn run_threads<B: Backend>(
    spec: &WorkerSpec,
    backend: &B,
    strategy: &BoxSerializer<<B::Connect as Connect>::Resource>,
    announce: Option<Arc<dyn Fn() + Send + Sync>>,
) -> Result<(), RunError> {
    run_threads_within(spec, backend, strategy, announce, None)
}

/// [`run_threads`] with a time limit: once no op has started for `limit` (the run is
/// stuck, not merely slow), each thread stops before its next op (an op under way ends
/// first: within its strategy's timeout, or, blocked on a server that stopped
/// answering, whenever that returns), and the run is [`RunError::TimedOut`]. The history
/// written so far stays.
///
/// # Errors
/// When the history file cannot be written, or the limit passed.
pub fn run_threads_within<B: Backend>(
    spec: &WorkerSpec,
    backend: &B,
    strategy: &BoxSerializer<<B::Connect as Connect>::Resource>,
    announce: Option<Arc<dyn Fn() + Send + Sync>>,
    limit: Option<Duration>,
) -> Result<(), RunError> {
    let (tables, connect) = (backend.tables(), backend.connect());
    let writer = Arc::new(HistoryWriter::create(&spec.paths.history(spec.proc))?);
    let transactional = strategy.capabilities().transactional;
    let env = OpEnv {
        paths: Arc::new(spec.paths.clone()),
        tables: Arc::new(tables.clone()),
        think: Duration::from_micros(spec.think_us),
        in_section: announce,
        rendezvous: Duration::from_micros(spec.rendezvous_us),
    };
    let seq = AtomicU64::new(0);
    let barrier = Barrier::new(spec.threads);
    let threads = spec.threads.max(1);
    let errors: std::sync::Mutex<Vec<std::io::Error>> = std::sync::Mutex::new(Vec::new());
    // Set when the limit passes; `cut` when a thread then stopped with ops left.
    let expired = std::sync::atomic::AtomicBool::new(false);
    let cut = std::sync::atomic::AtomicBool::new(false);
    // Each thread holds a sender until it ends: the channel disconnects when all have.
    let (running, all_ended) = std::sync::mpsc::channel::<()>();
    std::thread::scope(|s| {
        for t in 0..threads {
            let share = spec.ops / threads + usize::from(t < spec.ops % threads);
            let (writer, env, seq, barrier, errors) = (&writer, &env, &seq, &barrier, &errors);
            let (expired, cut, running) = (&expired, &cut, running.clone());
            s.spawn(move || {
                let _running = running;
                let mut rng = fastrand::Rng::with_seed(
                    spec.seed ^ (u64::from(spec.proc) << 40) ^ ((t as u64) << 20),
                );
                // Asked once per thread, not per op: each is a system call.
                let who = Who {
                    proc: spec.proc,
                    pid: std::process::id(),
                    thread: t as u32,
                    tid: crate::history::os_thread_id(),
                };
                let mut log = if spec.hold_history {
                    writer.held_thread_log()
                } else {
                    writer.thread_log()
                };
                barrier.wait();
                for _ in 0..share {
                    if expired.load(Ordering::Relaxed)
                        || crate::interrupt::requested().is_some()
                        || crate::procs::stop_asked()
                    {
                        cut.store(true, Ordering::Relaxed);
                        break;
                    }
                    let op_id = (u64::from(spec.proc) << 32) | seq.fetch_add(1, Ordering::Relaxed);
                    if let Err(e) = one_op(
                        spec,
                        connect,
                        strategy,
                        &mut log,
                        env,
                        &mut rng,
                        op_id,
                        who,
                        transactional,
                    ) {
                        errors.lock().unwrap_or_else(|p| p.into_inner()).push(e);
                        return;
                    }
                }
                if let Err(e) = log.flush() {
                    errors.lock().unwrap_or_else(|p| p.into_inner()).push(e);
                }
            });
        }
        drop(running);
        if let Some(limit) = limit {
            // Stuck means no op started for `limit`: a run that is slow but moving ends.
            let slice = limit.min(Duration::from_secs(1));
            let (mut started, mut since) = (seq.load(Ordering::Relaxed), Instant::now());
            while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                all_ended.recv_timeout(slice)
            {
                let now_started = seq.load(Ordering::Relaxed);
                if now_started != started {
                    (started, since) = (now_started, Instant::now());
                } else if since.elapsed() >= limit {
                    expired.store(true, Ordering::Relaxed);
                    break;
                }
            }
        }
    });
    if cut.into_inner() {
        match (crate::interrupt::requested(), limit) {
            (Some(signal), _) => return Err(RunError::Interrupted(signal)),
            // A worker whose parent asked it to stop (the run's time limit passed) ends as
            // one that is done: every op it started has its end in the history.
            (None, None) if crate::procs::stop_asked() => {}
            // A thread stops early only when asked to, or once a limit passed.
            (None, limit) => return Err(RunError::TimedOut(limit.unwrap_or_default())),
        }
    }
    match errors.into_inner().unwrap_or_else(|p| p.into_inner()).pop() {
        Some(e) => Err(RunError::Io(e)),
        None => Ok(()),
    }
}

/// Who runs an op: the worker process and thread, by index and by OS id.
#[derive(Clone, Copy, Debug)]
struct Who {
    proc: u32,
    pid: u32,
    thread: u32,
    tid: u32,
}

#[allow(clippy::too_many_arguments)]
fn one_op<C: Transact<Resource: WorkloadData>>(
    spec: &WorkerSpec,
    connect: &C,
    strategy: &BoxSerializer<C::Resource>,
    log: &mut ThreadLog<'_>,
    env: &OpEnv,
    rng: &mut fastrand::Rng,
    op_id: u64,
    who: Who,
    transactional: bool,
) -> std::io::Result<()> {
    let (keys, input) = spec.workload.next_op(rng, spec.keys, op_id);
    let key_names: Vec<String> = keys.iter().map(|k| k.as_str().to_owned()).collect();
    let mut event = Event {
        proc: who.proc,
        pid: who.pid,
        thread: who.thread,
        tid: who.tid,
        ..Event::invoke(op_id, key_names, now_ns(), input.clone())
    };
    log.invoke(&event)?;
    let probe = Arc::new(Probe::default());
    let result = spec
        .workload
        .execute(strategy, op_id, &keys, &input, env, &probe);
    event.time = now_ns();
    event.input = None;
    event.enter = probe.entered();
    event.exit = probe.exited();
    event.fence = probe.fence();
    match result {
        Ok(output) => {
            event.phase = Phase::Ok;
            event.output = Some(output);
        }
        Err(mut e) => {
            // An op whose outcome is not known, or that ended the transaction itself, may
            // have committed; outside a transaction one that started may have written part
            // of its work.
            // A torn store is refused before the op writes anything.
            let wrote_nothing = matches!(e.op(), Some(crate::workload::OpError::Corrupt(_)));
            let unknown = e.may_have_committed()
                || (!transactional && event.enter.is_some() && !wrote_nothing);
            event.phase = if unknown { Phase::Unknown } else { Phase::Fail };
            // Whatever an unknown op did, it did before now, unless it may still be
            // under way at the data.
            event.settled = unknown && !crate::workload::may_take_effect_later(&e);
            event.busy = crate::workload::refused_as_busy(connect, &mut e);
            event.error = Some(format!("{}: {e}", e.kind()));
        }
    }
    log.complete(&event)
}

/// Every strategy the harness knows: the builtin ones, the `busy-timeout` baseline and the
/// negative controls. The CLI and its worker processes use this registry.
pub fn registry() -> Registry<Sqlite> {
    let mut registry = Registry::builtin();
    crate::baseline::register(&mut registry);
    crate::controls::register(&mut registry);
    registry
}

/// Runs `config` with strategies from `registry` (over SQLite data; over a server's
/// data, the builtin registry of that server's backend) and checks the result. A strategy
/// only known over versioned records (`optimistic`) runs its workload on them.
///
/// A run cut by its time limit ([`RunConfig::time_limit`]) is checked on what it did
/// before the cut: a violation there is the run's verdict (the report says the run was
/// cut); a history that shows none is [`RunError::TimedOut`] all the same, since a partial
/// pass proves nothing.
///
/// # Errors
/// [`RunFailure`] when the run could not produce a verdict (bad usage, a backend out of
/// reach, a worker that failed on its own, the time limit, [`RunError::Interrupted`] once
/// [`interrupt::request`](crate::interrupt::request) was called), with where its files
/// were kept if [`RunConfig::keep`] asked for it.
pub fn run(config: &RunConfig, registry: &Registry<Sqlite>) -> Result<RunReport, RunFailure> {
    config.validate()?;
    known_over(&config.strategy, &config.data, registry)?;
    let tmp = tempfile::Builder::new()
        .prefix("turnstile-run-")
        .tempdir()?;
    let paths = Paths::new(tmp.path(), config.db.as_deref());
    let spec = WorkerSpec {
        transaction: false,
        ..WorkerSpec::of_run(config, paths, registry)
    };
    let result = data::with_backend(
        &spec,
        registry,
        Run {
            config,
            spec: spec.clone(),
            dir: tmp.path(),
        },
    )
    .unwrap_or_else(|e| Err(e.into()));
    match (result, crate::interrupt::requested()) {
        // A run cut short by a signal fails as it can (a worker process the same Ctrl-C
        // ended, say): the signal is why. One that got to its end anyway was still asked
        // to stop: it answers as stopped too, so the caller's exit code says so. What it
        // kept stays kept.
        (Err(f), _) if matches!(f.error, RunError::Usage(_)) => Err(f),
        (Err(f), Some(signal)) => Err(RunFailure {
            error: RunError::Interrupted(signal),
            ..f
        }),
        (Ok(report), Some(signal)) => Err(RunFailure {
            error: RunError::Interrupted(signal),
            kept: report.kept,
            notes: report.notes,
        }),
        (result, None) => result,
    }
}

impl WorkerSpec {
    /// The spec of `config`'s first process (index 0), its files under `paths`; a run
    /// over a server's data gets fresh table names.
    pub(crate) fn of_run(config: &RunConfig, paths: Paths, registry: &Registry<Sqlite>) -> Self {
        let versioned = config
            .versioned
            .unwrap_or_else(|| only_versioned(&config.strategy, &config.data, registry));
        WorkerSpec {
            strategy: config.strategy.clone(),
            workload: config.workload,
            paths,
            proc: 0,
            threads: config.threads,
            ops: config.ops,
            keys: config.key_count(),
            think_us: config.think.as_micros() as u64,
            rendezvous_us: config.rendezvous.as_micros() as u64,
            transaction: config.transaction,
            sync: config.sync.as_str().to_owned(),
            seed: config.seed,
            announce: false,
            timeout_ms: config.timeout.map(|t| t.as_millis() as u64),
            probe: true,
            // Without a timeout, the longest a strategy's default is; either way within
            // the run's time limit.
            probe_wait_ms: Some(
                config
                    .timeout
                    .unwrap_or(PROBE_WAIT)
                    .min(config.time_limit)
                    .as_millis() as u64,
            ),
            data: config.data.clone(),
            versioned,
            tables: if config.data.is_server() {
                Tables::generated()
            } else {
                String::new()
            },
            hold_history: config.nemesis.is_none(),
        }
    }
}

/// Whether `strategy` is known over versioned records only, not over `data`'s tables.
pub(crate) fn only_versioned(strategy: &str, data: &DataSpec, registry: &Registry<Sqlite>) -> bool {
    let Ok(spec) = Spec::parse(strategy) else {
        return false;
    };
    let name = spec.name();
    !data::table_names(data, registry)
        .iter()
        .any(|(n, _)| n == name)
        && data::versioned_names().iter().any(|(n, _)| n == name)
}

/// Whether `strategy` names a strategy the harness can run over SQLite data (tables from
/// `registry`, or versioned records).
pub fn knows(strategy: &str, registry: &Registry<Sqlite>) -> bool {
    Spec::parse(strategy).is_ok_and(|spec| {
        registry.contains(spec.name())
            || data::versioned_names()
                .iter()
                .any(|(n, _)| n == spec.name())
    })
}

/// The strategy name the harness knows that `name` most likely misspells: the closest by
/// edit distance (ignoring case), at most one edit from a name of up to four characters
/// and two from a longer one; `None` for a name the harness knows as typed, or nothing
/// that close.
///
/// It answers with a known name only, never with the text it was given.
pub(crate) fn closest_name(name: &str, registry: &Registry<Sqlite>) -> Option<String> {
    let typed = name.trim();
    let name = typed.to_ascii_lowercase();
    // Past this length nothing is within two edits of a known name; this also bounds the work.
    if name.is_empty() || name.len() > 40 {
        return None;
    }
    let known = registry
        .names()
        .map(|(n, _)| n.to_owned())
        .chain(data::versioned_names().into_iter().map(|(n, _)| n));
    let (best, distance) = known
        .map(|n| {
            let d = edit_distance(&name, &n.to_ascii_lowercase());
            (n, d)
        })
        .min_by_key(|(_, d)| *d)?;
    let most = if best.len() <= 4 { 1 } else { 2 };
    (best != typed && distance <= most).then_some(best)
}

/// Levenshtein distance over bytes (names are ASCII).
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, &ca) in a.iter().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (diagonal + usize::from(ca != cb))
                .min(above + 1)
                .min(row[j] + 1);
            diagonal = above;
        }
    }
    row[b.len()]
}

/// ` (did you mean "NAME"?)` when [`closest_name`] finds one, else nothing.
pub(crate) fn did_you_mean(strategy: &str, registry: &Registry<Sqlite>) -> String {
    let meant = match Spec::parse(strategy) {
        Ok(spec) => closest_name(spec.name(), registry),
        Err(_) => closest_name(strategy, registry),
    };
    meant.map_or_else(String::new, |n| format!(" (did you mean {n:?}?)"))
}

/// Refuses a strategy the harness does not run over `data`, naming those it does (the
/// registry's own message would leave out the ones over versioned records, `optimistic`).
/// A spec that does not parse is left to the registry to refuse.
pub(crate) fn known_over(
    strategy: &str,
    data: &DataSpec,
    registry: &Registry<Sqlite>,
) -> Result<(), RunError> {
    let Ok(spec) = Spec::parse(strategy) else {
        return Ok(());
    };
    if data::runs_over(strategy, data, registry) {
        return Ok(());
    }
    let mut names: Vec<String> = data::table_names(data, registry)
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    for (n, _) in data::versioned_names() {
        if !names.contains(&n) {
            names.push(n);
        }
    }
    let kind = |data: &DataSpec| match data {
        DataSpec::Sqlite => "sqlite",
        DataSpec::Postgres(_) => "postgres://…",
        DataSpec::MySql(_) => "mysql://…",
    };
    let elsewhere: Vec<&str> = [
        DataSpec::Sqlite,
        DataSpec::Postgres(String::new()),
        DataSpec::MySql(String::new()),
    ]
    .iter()
    .filter(|other| kind(other) != kind(data) && data::runs_over(strategy, other, registry))
    .map(kind)
    .collect();
    let data_kind = kind(data);
    Err(RunError::Usage(if elsewhere.is_empty() {
        format!(
            "unknown strategy {:?}{}; known: {}{}",
            // The whole spec: a mistyped URL's "name" may hold a piece of its password.
            redact_url(strategy.trim()),
            did_you_mean(strategy, registry),
            names.join(", "),
            // Those over other data too (`pg-xact`, with --data postgres://…).
            data::known_elsewhere(data, registry)
        )
    } else {
        format!(
            "strategy {:?} does not run over data in {data_kind} (it does with --data {}); over it: {}",
            spec.name(),
            elsewhere.join(" or "),
            names.join(", ")
        )
    }))
}

/// One run over the backend its spec names.
struct Run<'a> {
    config: &'a RunConfig,
    spec: WorkerSpec,
    dir: &'a Path,
}

/// Connects to `backend` once: a server that is down is [`RunError::Unavailable`], with
/// every cause the driver gives, before any table is made (and left to drop).
pub(crate) fn reachable<B: Backend>(backend: &B) -> Result<(), RunError> {
    connect_to(backend.connect(), &backend.describe()).map(drop)
}

/// Opens one connection with `connect`; one that fails is [`RunError::Unavailable`],
/// named `what` (never a password), with every cause the driver gives.
pub(crate) fn connect_to<C: Connect>(connect: &C, what: &str) -> Result<C::Resource, RunError> {
    connect
        .connect()
        .map_err(|e| RunError::Unavailable(format!("{what}: {}", causes(&*e))))
}

/// `error` and every cause below it, `: `-separated: the drivers say what failed at the
/// top (`db error`) and why below it.
///
/// A cause whose words are already said is left out: many errors repeat their source's
/// text in their own (`Connection refused (os error 111)` would come three times).
pub(crate) fn causes(error: &dyn std::error::Error) -> String {
    let mut why = error.to_string();
    let mut source = error.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !why.contains(&text) {
            why.push_str(&format!(": {text}"));
        }
        source = s.source();
    }
    why
}

impl WithBackend for Run<'_> {
    type Output = Result<RunReport, RunFailure>;

    /// Sets the data up, runs, checks, and drops the run's tables — unless a run that did
    /// not pass keeps its files and tables (`--keep`): one with a verdict other than pass,
    /// one that ended without a verdict once past bad usage, one a signal stopped.
    fn with<B: Backend>(
        self,
        backend: B,
        registry: &Registry<B::Connect>,
    ) -> Result<Self::Output, RunError> {
        reachable(&backend)?;
        let paths = self.spec.paths.clone();
        let mut result = run_on(&backend, registry, self.config, self.spec);
        let keep = self.config.keep.as_deref().filter(|_| match &result {
            Ok(report) => {
                report.verdict != Verdict::Pass || crate::interrupt::requested().is_some()
            }
            // A run that failed before its first op (a strategy's server out of reach, a
            // lock held elsewhere) has nothing to keep: its database is only set up.
            Err(failure) => !matches!(failure.error, RunError::Usage(_)) && ran_ops(self.dir),
        });
        let mut notes = Vec::new();
        let mut kept = None;
        if let Some(keep) = keep {
            match keep_files(self.config, &paths, self.dir, keep) {
                Ok(true) => kept = Some(keep.to_path_buf()),
                Ok(false) => {}
                Err(e) => {
                    notes.push(format!(
                        "history and database could not be kept in {}: {e}",
                        keep.display()
                    ));
                    if let Ok(report) = &mut result {
                        report.unwritten.push(keep.to_path_buf());
                    }
                }
            }
        }
        // Kept for a run that did not pass, even when its files could not be copied.
        if self.config.data.is_server() && keep.is_some() {
            notes.push(format!("the run's tables are kept: {}", backend.describe()));
        } else if let Err(e) = backend.drop_tables()
            && result.is_ok()
        {
            // After a failure, most often the server's: said once, by the failure.
            notes.push(format!("the run's tables could not be dropped: {e}"));
        }
        Ok(match result {
            Ok(mut report) => {
                report.kept = kept;
                report.notes.extend(notes);
                Ok(report)
            }
            Err(mut failure) => {
                failure.kept = kept;
                failure.notes.extend(notes);
                Err(failure)
            }
        })
    }
}

/// The run proper, after the data is reachable.
fn run_on<B: Backend>(
    backend: &B,
    registry: &Registry<B::Connect>,
    config: &RunConfig,
    mut spec: WorkerSpec,
) -> Result<RunReport, RunFailure> {
    let paths = spec.paths.clone();
    let keys = spec.keys;
    let setup_failed =
        |e: crate::workload::OpError| RunError::Unavailable(format!("{}: {e}", backend.describe()));
    config
        .workload
        .init(backend.connect(), &paths, backend.tables(), keys)
        .map_err(setup_failed)?;

    // Ask the strategy for autocommit: one that still reports `transactional` ignores it
    // (its mechanism is the transaction). A kill run keeps lock strategies transactional.
    let opening = Instant::now();
    let mut strategy = spec.open(backend, registry)?;
    let mut caps = strategy.capabilities();
    if !caps.transactional && (config.transaction || config.nemesis.is_some_and(Nemesis::kills)) {
        spec.transaction = true;
        strategy = spec.open(backend, registry)?;
        caps = strategy.capabilities();
    }

    let mut notes = Vec::new();
    let opened_in = opening.elapsed();
    if opened_in >= SLOW_START {
        notes.push(format!(
            "the strategy took {:.1} s to open and run a first op (another holder of the lock, or a slow server): the run's time and latencies leave that out",
            opened_in.as_secs_f64()
        ));
    }
    if !caps.excludes
        && matches!(config.workload, Workload::NotifyOnce | Workload::FileStore)
        && !turnstile::spec::Spec::parse(&config.strategy)
            .is_ok_and(|s| crate::compare::CONTROLS.contains(&s.name()))
    {
        notes.push(format!(
            "{} does not exclude (it reruns ops), so it cannot protect {}'s state outside the data: a violation here breaks no promise of its own",
            redact_url(&config.strategy),
            config.workload
        ));
    }
    if config.rendezvous > Duration::ZERO && config.threads * config.procs < 2 {
        notes.push(
            "--rendezvous-us with a single worker: no partner ever comes, so every op waits the whole window".to_owned(),
        );
    }
    if config.procs > 1 && caps.scope == Scope::Threads {
        notes.push(format!(
            "{} excludes threads of one process only; this run spans {} processes, outside its scope",
            redact_url(&config.strategy),
            config.procs
        ));
    }
    let started = Instant::now();
    let origin = now_ns();
    let progress = config
        .progress
        .then(|| Progress::start(&paths.dir, config.ops));
    let ran = if config.uses_children() {
        drop(strategy);
        let exe = match &config.worker_exe {
            Some(exe) => exe.clone(),
            None => std::env::current_exe()?,
        };
        crate::procs::run_children(&exe, &spec, config)
    } else {
        let ran = run_threads_within(&spec, backend, &strategy, None, Some(config.time_limit));
        drop(strategy);
        let cut = match ran {
            Ok(()) => Ok(None),
            // The threads stopped before their next op: every op that started has its end.
            Err(RunError::TimedOut(limit)) => Ok(Some(Cut::whole(limit))),
            Err(e) => Err(e),
        };
        cut.map(|cut| Ran {
            faults: Vec::new(),
            histories: vec![paths.history(0)],
            cut,
        })
    };
    let wall = started.elapsed();
    drop(progress);
    let Ran {
        faults,
        histories: history_paths,
        cut,
    } = ran?;

    let history = History::load(&history_paths)?;
    let mut unwritten = Vec::new();
    if let Some(path) = &config.svg
        && let Err(e) = std::fs::write(path, crate::report::svg(&history))
    {
        notes.push(format!(
            "the timeline could not be written to {}: {e}",
            path.display()
        ));
        unwritten.push(path.clone());
    }
    for m in history.malformed.iter().take(5) {
        notes.push(format!("history: {m}"));
    }
    if let Some(cut) = &cut {
        if let Some(why) = unchecked(cut, &spec, &caps, config.workload) {
            notes.push(why);
            return Err(RunFailure {
                error: RunError::TimedOut(cut.limit),
                kept: None,
                notes,
            });
        }
        if let Some(who) = unfinished_workers(cut) {
            notes.push(format!(
                "{who} did not stop as asked within {STOP_GRACE:?} of the cut and {} killed: the ops under way then are of unknown outcome, as after the kill nemesis",
                if cut.unfinished.len() == 1 { "was" } else { "were" }
            ));
        }
    }
    let state_failed = |e: String| RunError::Unavailable(format!("reading the final state: {e}"));
    let mut db = backend
        .connect()
        .connect()
        .map_err(|e| state_failed(e.to_string()))?;
    let state = config
        .workload
        .final_state(&mut db, &paths, backend.tables(), keys)
        .map_err(|e| state_failed(e.to_string()))?;
    drop(db);
    let mut checks = check::check_all(config.workload, &caps, &history, &state);
    // Only a lease can run out under a stopped holder and let a successor in while the
    // holder's transaction keeps the data: with any other strategy a refusal during a
    // pause is still a collision.
    let paused: Vec<check::refused::Pause> = match config.nemesis {
        Some(Nemesis::Stop { pause }) if caps.lease_can_expire => faults
            .iter()
            .filter(|f| f.kind == "stop")
            .map(|f| {
                let pause = u64::try_from(pause.as_nanos()).unwrap_or(u64::MAX);
                check::refused::Pause {
                    proc: f.proc,
                    from: f.time,
                    to: f.time.saturating_add(pause),
                }
            })
            .collect(),
        _ => Vec::new(),
    };
    checks.push(check::refused::check(&history, &paused));
    checks.extend(backend.integrity());
    // A worker killed mid-write leaves a torn last line; any other gap hides ops.
    let killed: Vec<PathBuf> = faults
        .iter()
        .filter(|f| f.kind == "kill")
        .map(|f| f.proc)
        .chain(cut.iter().flat_map(|c| c.unfinished.iter().copied()))
        .map(|proc| paths.history(proc))
        .collect();
    // A violation stands even so: the `history` line says that ops were missing, which
    // can explain some findings (a count above the acknowledged) and not others (a lost
    // increment, an overlap), and hiding the ones it cannot explain would be worse.
    checks.extend(check::complete::check(&history, &killed));

    let floor = floor(config, &history, &faults, origin);
    checks.extend(floor);

    if let Some(cut) = &cut {
        let started = history.ops.len();
        if !checks.iter().any(|c| c.verdict == Verdict::Violation) {
            notes.push(format!(
                "the run was cut by its time limit; the {started} ops that started before the cut (of {} requested) were checked and show no violation, which proves nothing of the run's other ops",
                config.ops
            ));
            return Err(RunFailure {
                error: RunError::TimedOut(cut.limit),
                kept: None,
                notes,
            });
        }
        checks.insert(
            0,
            CheckResult::inconclusive(
                TIME_LIMIT,
                format!(
                    "the run was cut by its time limit of {:?} after {started} of {} ops had started: the history is partial, and the violation below is in what it holds",
                    cut.limit, config.ops
                ),
            ),
        );
    }

    let verdict = if checks.iter().any(|c| c.verdict == Verdict::Violation) {
        Verdict::Violation
    } else if checks.iter().any(|c| c.verdict == Verdict::Inconclusive) {
        Verdict::Inconclusive
    } else {
        Verdict::Pass
    };
    let mut errors = std::collections::BTreeMap::new();
    for op in &history.ops {
        if let Some(e) = &op.error {
            let kind = e.split(':').next().unwrap_or(e).to_owned();
            *errors.entry(kind).or_insert(0) += 1;
        } else if op.phase == Phase::Unknown {
            *errors.entry("cut off".to_owned()).or_insert(0) += 1;
        }
    }
    let latencies_ns = history
        .with_phase(Phase::Ok)
        .filter_map(|op| op.complete.map(|c| c.saturating_sub(op.invoke)))
        .collect();
    Ok(RunReport {
        strategy: redact_url(&config.strategy),
        workload: config.workload,
        threads: config.threads,
        procs: config.procs,
        requested: config.ops,
        seed: config.seed,
        scope: caps.scope.as_str(),
        transactional: caps.transactional,
        data: backend.describe(),
        verdict,
        checks,
        acknowledged: history.acknowledged(),
        failed: history.with_phase(Phase::Fail).count(),
        unknown: history.with_phase(Phase::Unknown).count(),
        errors,
        faults,
        latencies_ns,
        wall,
        notes,
        kept: None,
        unwritten,
    })
}

/// The name of the line a report of a run cut by its time limit has among its checks.
pub const TIME_LIMIT: &str = "time_limit";

/// Why the partial history of a run `cut` by its time limit cannot be checked, if it
/// cannot: a worker process did not stop as asked and was killed. A worker that held its
/// history in memory lost ops that may have taken effect, which the checkers would miss
/// (a count above the acknowledged, an effect no op claims); one killed in the middle of an
/// op outside a transaction may have left half of it in the data (a debit without its
/// credit, a torn file), which no checker tells from a broken strategy's work. A worker
/// killed inside a transaction, its every op's start written first, leaves what the kill
/// nemesis leaves, and is checked as those runs are.
fn unchecked(
    cut: &Cut,
    spec: &WorkerSpec,
    caps: &Capabilities,
    workload: Workload,
) -> Option<String> {
    let who = unfinished_workers(cut)?;
    let its = if cut.unfinished.len() == 1 {
        "its"
    } else {
        "their"
    };
    let why = if spec.hold_history {
        format!(
            "the history {its} threads held in memory was lost, with ops that may have taken effect"
        )
    } else if !(spec.transaction || caps.transactional) || !workload.survives_kills() {
        "an op under way outside a transaction may have left half its work in the data".to_owned()
    } else {
        return None;
    };
    Some(format!(
        "{who} did not stop as asked within {STOP_GRACE:?} of the cut (killed, or ended without saying done): {why}, so the partial history was not checked"
    ))
}

/// The workers a cut had to end without their `done` (`worker p1`, `workers p1, p3`).
fn unfinished_workers(cut: &Cut) -> Option<String> {
    let names: Vec<String> = cut.unfinished.iter().map(|p| format!("p{p}")).collect();
    match names.len() {
        0 => None,
        1 => Some(format!("worker {}", names[0])),
        _ => Some(format!("workers {}", names.join(", "))),
    }
}

/// Whether a run got to its ops: its directory holds a history or a worker's stderr.
fn ran_ops(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|entries| {
        entries.filter_map(Result::ok).any(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            name.starts_with("history-") || name.starts_with("worker-")
        })
    })
}

/// `path` with `suffix` added to its file name (`run.db` → `run.db-wal`).
fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// Saves the run's files in `keep`: those of its directory `dir` (histories, the worker
/// processes' stderr, a SQLite database made there) and a SQLite database made elsewhere
/// (`--db`). `Ok(false)`: there was nothing to keep (nothing is made in `keep` then).
///
/// # Errors
/// When a file cannot be copied, or one is in the way ([`copy_dir`]).
fn keep_files(config: &RunConfig, paths: &Paths, dir: &Path, keep: &Path) -> std::io::Result<bool> {
    // A database already where it is kept (`--db` in `--keep`) stays as it is: a copy
    // onto itself would empty it.
    let db = (!config.data.is_server() && !paths.db.starts_with(dir) && paths.db.is_file())
        .then_some(&paths.db)
        .and_then(|db| db.file_name().map(|name| (db, keep.join(name))))
        .filter(|(db, kept)| !same_file(db, kept));
    let files = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .any(|e| e.file_type().is_ok_and(|t| t.is_file()));
    if !files && db.is_none() {
        return Ok(false);
    }
    copy_dir(dir, keep)?;
    if let Some((db, kept)) = db {
        // With its WAL, where the last commits of workers that were killed (a signal, a
        // worker that did not stop in time) still are: nobody checkpointed them. Not its
        // shared-memory index, which SQLite rebuilds from the WAL.
        let wal = with_suffix(db, "-wal");
        let mut copies = vec![(db.as_path(), kept.clone())];
        if wal.is_file() {
            copies.push((wal.as_path(), with_suffix(&kept, "-wal")));
        }
        for (from, to) in copies {
            // Not over a kept file of the same name (a `--db` named `history-0.jsonl`).
            copy_new(from, &to).map_err(|e| match e.kind() {
                std::io::ErrorKind::AlreadyExists => std::io::Error::new(
                    e.kind(),
                    format!(
                        "the database was not copied: the run keeps a file of its name, {}",
                        to.display()
                    ),
                ),
                _ => e,
            })?;
        }
    }
    Ok(true)
}

/// No vacuous passes: at least half the requested ops acknowledged, a nemesis that hit
/// something (unless [`RunConfig::require_fault`] is off), and after a fault some ops
/// still acknowledged (the strategy recovered).
fn floor(
    config: &RunConfig,
    history: &History,
    faults: &[Fault],
    origin: u64,
) -> Option<CheckResult> {
    let acked = history.acknowledged();
    let want = config.ops.div_ceil(2);
    if acked < want {
        return Some(CheckResult::inconclusive(
            "floor",
            format!(
                "only {acked} of {} ops acknowledged (need {want})",
                config.ops
            ),
        ));
    }
    if let Some(nemesis) = config.nemesis
        && config.require_fault
        && faults.is_empty()
    {
        let (kind, when) = match nemesis {
            Nemesis::Kill { .. } => ("killed", "kill"),
            Nemesis::Stop { .. } => ("stopped", "stop"),
        };
        return Some(CheckResult::inconclusive(
            "floor",
            format!(
                "the nemesis {kind} no worker: the run was over before its first {when} \
                 (due {:?} after the start) or no op entered a critical section it could \
                 {when} in; give it more ops",
                nemesis.first()
            ),
        ));
    }
    if let Some(first) = faults.iter().map(|f| f.time).min() {
        let after = history
            .with_phase(Phase::Ok)
            .filter(|op| op.invoke > first)
            .count();
        let want = (config.ops / 20).max(1);
        if after < want {
            return Some(CheckResult::inconclusive(
                "floor",
                format!(
                    "only {after} ops acknowledged after the first fault at {} (need {want})",
                    check::rel(first, origin)
                ),
            ));
        }
    }
    None
}

/// A progress bar fed by counting the lines of the history files (two per finished op).
struct Progress {
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Progress {
    fn start(dir: &Path, ops: usize) -> Self {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (dir, flag) = (dir.to_path_buf(), stop.clone());
        let thread = std::thread::spawn(move || {
            let bar = indicatif::ProgressBar::with_draw_target(
                Some(ops as u64),
                indicatif::ProgressDrawTarget::stderr(),
            );
            while !flag.load(Ordering::Relaxed) {
                let lines: usize = std::fs::read_dir(&dir)
                    .into_iter()
                    .flatten()
                    .flatten()
                    .filter(|e| e.file_name().to_string_lossy().starts_with("history-"))
                    .filter_map(|e| std::fs::read(e.path()).ok())
                    .map(|bytes| bytes.iter().filter(|&&b| b == b'\n').count())
                    .sum();
                bar.set_position((lines / 2) as u64);
                // Woken early by `drop`.
                std::thread::park_timeout(Duration::from_millis(200));
            }
            bar.finish_and_clear();
        });
        Progress {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

/// Copies the files of `from` into `to`, never over a file already there: `--keep` was
/// empty before the run, so one there now is the run's own `--db` (named like a file the
/// run keeps), or was put there meanwhile, and is not the run's to replace. The others are
/// still copied; the first such file is the error.
fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    let mut taken = None;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        if !entry.file_type()?.is_file() {
            continue;
        }
        let target = to.join(entry.file_name());
        match copy_new(&entry.path(), &target) {
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                taken.get_or_insert(target);
            }
            result => result?,
        }
    }
    match taken {
        Some(target) => Err(std::io::Error::new(
            std::io::ErrorKind::AlreadyExists,
            format!(
                "{} was already there (the --db?) and was not overwritten",
                target.display()
            ),
        )),
        None => Ok(()),
    }
}

/// Copies `from` to a new file `to`: `AlreadyExists` if there is one.
fn copy_new(from: &Path, to: &Path) -> std::io::Result<()> {
    let mut source = std::fs::File::open(from)?;
    let mut target = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(to)?;
    std::io::copy(&mut source, &mut target)?;
    Ok(())
}

/// The capabilities `spec` reports over `data` (SQLite data with strategies from
/// `registry`; versioned records for a strategy known over them alone), opened as a run
/// opens it but not probed, for choosing what to run. Nothing is created: on SQLite a
/// scratch database, on a server no table.
///
/// # Errors
/// As [`run`].
pub fn capabilities_of(
    spec: &str,
    data: &DataSpec,
    registry: &Registry<Sqlite>,
) -> Result<Capabilities, RunError> {
    struct Caps<'a>(&'a WorkerSpec);
    impl WithBackend for Caps<'_> {
        type Output = Capabilities;
        fn with<B: Backend>(
            self,
            backend: B,
            registry: &Registry<B::Connect>,
        ) -> Result<Capabilities, RunError> {
            Ok(self.0.open(&backend, registry)?.capabilities())
        }
    }
    let tmp = tempfile::tempdir()?;
    let worker = WorkerSpec {
        strategy: spec.to_owned(),
        workload: Workload::Counter,
        paths: Paths::new(tmp.path(), Some(&tmp.path().join("caps.db"))),
        proc: 0,
        threads: 1,
        ops: 1,
        keys: 1,
        think_us: 0,
        rendezvous_us: 0,
        transaction: false,
        sync: Synchronous::Normal.as_str().to_owned(),
        seed: 0,
        announce: false,
        timeout_ms: None,
        probe: false,
        probe_wait_ms: None,
        data: data.clone(),
        versioned: only_versioned(spec, data, registry),
        tables: Tables::generated(),
        hold_history: false,
    };
    data::with_backend(&worker, registry, Caps(&worker))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{OpInput, OpOutput};

    /// A default seed read back from JSON as a double (`jq`, JavaScript) is the same seed.
    #[test]
    fn default_seeds_survive_a_double() {
        for _ in 0..1000 {
            let seed = RunConfig::new("mutex", Workload::Counter).seed;
            assert!(seed < MAX_DEFAULT_SEED, "{seed}");
            assert_eq!(seed as f64 as u64, seed);
        }
    }

    /// A strategy spec may hold a password (`queue+postgres://…`): `Debug` shows it as
    /// `redact_url` does, in the run's config and in what a worker is told.
    #[test]
    fn a_misspelt_strategy_name_finds_the_name_meant_and_nothing_else_does() {
        let registry = crate::registry();
        for (typed, meant) in [
            ("mutx", Some("mutex")),
            ("Mutex", Some("mutex")),
            ("mutex", None),
            ("queu", Some("queue")),
            ("redsi", Some("redis")),
            ("rety", Some("retry")),
            ("file_lock", Some("file-lock")),
            ("filelock", Some("file-lock")),
            ("busy-timout", Some("busy-timeout")),
            ("optimistc", Some("optimistic")),
            ("xyz", None),
            ("", None),
            ("  ", None),
            ("mux", Some("mutex")),
            ("cache", None),
            (
                "a-name-far-longer-than-any-strategy-name-there-is-at-all",
                None,
            ),
        ] {
            assert_eq!(
                closest_name(typed, &registry).as_deref(),
                meant,
                "{typed:?}"
            );
        }
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("abc", ""), 3);
    }

    #[test]
    fn debug_hides_the_password_of_the_strategy_spec() {
        let mut config = RunConfig::new("queue+postgres://app:hunter2@db/app", Workload::Counter);
        config.data = "postgres://app:hunter3@db/app".parse().unwrap();
        let shown = format!("{config:?}");
        assert!(!shown.contains("hunter"), "{shown}");
        assert!(shown.contains("queue+postgres://app:***@db/app"), "{shown}");
        let paths = Paths::new(Path::new("/nonexistent"), None);
        let worker = WorkerSpec::of_run(&config, paths, &registry());
        let shown = format!("{worker:?}");
        assert!(!shown.contains("hunter"), "{shown}");
        assert!(shown.contains("queue+postgres://app:***@db/app"), "{shown}");
    }

    fn acked(n: u64, from: u64) -> History {
        let mut events = Vec::new();
        for i in 0..n {
            let invoke = Event::invoke(i, vec!["c0".into()], from + 10 * i, OpInput::Increment);
            events.push(invoke.clone());
            events.push(Event {
                phase: Phase::Ok,
                time: from + 10 * i + 5,
                input: None,
                output: Some(OpOutput::Wrote {
                    value: i as i64 + 1,
                }),
                ..invoke
            });
        }
        History::from_events(events)
    }

    /// A run cut by its time limit whose workers all stopped is checked; one with a worker
    /// killed at the cut only when that worker wrote every op's start first and ran its
    /// Lock strategies run in autocommit lock per key, over SQLite too (where `Locked`
    /// takes one lock for the whole database by default): an op on one key runs while an
    /// op on another holds its lock, so a run tests the lock's per-key exclusion rather
    /// than one name's. In a transaction the whole database stays one lock.
    #[test]
    fn lock_strategies_in_autocommit_lock_per_key_over_sqlite() {
        use crate::data::SqliteData;
        use turnstile::{Key, Wait};
        for (spec, transaction) in [("mutex", false), ("file-lock", false), ("mutex", true)] {
            let dir = tempfile::tempdir().unwrap();
            let registry = registry();
            let config = RunConfig::new(spec, Workload::Counter).transaction(transaction);
            let worker = WorkerSpec {
                probe: false,
                ..WorkerSpec::of_run(&config, Paths::new(dir.path(), None), &registry)
            };
            let backend = SqliteData::open(&worker).unwrap();
            let strategy = worker.open(&backend, &registry).unwrap();
            let (b_in, b_ran) = std::sync::mpsc::channel::<()>();
            let (a_in, a_held) = std::sync::mpsc::channel::<()>();
            let met = std::thread::scope(|scope| {
                // Holds key a until an op on key b has run (or 1 s has passed).
                let holder = scope.spawn(|| {
                    strategy.run_as(
                        &[Key::new("a").unwrap()],
                        Wait::Timeout(Duration::from_secs(5)),
                        move |_| {
                            let _ = a_in.send(());
                            Ok::<_, std::io::Error>(
                                b_ran.recv_timeout(Duration::from_secs(1)).is_ok(),
                            )
                        },
                    )
                });
                a_held.recv().unwrap();
                let b = strategy.run_as(
                    &[Key::new("b").unwrap()],
                    Wait::Timeout(Duration::from_secs(5)),
                    move |_| {
                        let _ = b_in.send(());
                        Ok::<_, std::io::Error>(())
                    },
                );
                assert!(b.is_ok(), "{spec}: {b:?}");
                holder.join().unwrap().unwrap()
            });
            assert_eq!(met, !transaction, "{spec}, transaction {transaction}");
        }
    }

    /// ops in transactions (what the kill nemesis leaves).
    #[test]
    fn a_cut_history_is_checked_unless_a_killed_worker_may_have_hidden_or_torn_ops() {
        let registry = registry();
        let config = RunConfig::new("busy-timeout", Workload::Counter).procs(2);
        let paths = Paths::new(Path::new("/nonexistent"), None);
        let spec = WorkerSpec::of_run(&config, paths, &registry);
        let transactional =
            Capabilities::new(Scope::Processes, turnstile::HolderDeath::KernelReleases);
        let autocommit = transactional.transactional(false);
        let limit = Duration::from_secs(1);
        let whole = Cut::whole(limit);
        let one = Cut {
            unfinished: vec![1],
            ..Cut::whole(limit)
        };
        // Held histories (no nemesis): a killed worker lost events.
        assert!(spec.hold_history);
        assert!(unchecked(&whole, &spec, &transactional, Workload::Counter).is_none());
        let why = unchecked(&one, &spec, &transactional, Workload::Counter).expect("lost");
        assert!(
            why.starts_with("worker p1 did not stop as asked within 5s of the cut")
                && why.contains("held in memory"),
            "{why}"
        );
        // Every start written first (a nemesis run): checked inside a transaction only.
        let written = WorkerSpec {
            hold_history: false,
            ..spec
        };
        assert!(unchecked(&one, &written, &transactional, Workload::Counter).is_none());
        let why = unchecked(&one, &written, &autocommit, Workload::Bank).expect("torn");
        assert!(why.contains("half its work"), "{why}");
        let run_in_transaction = WorkerSpec {
            transaction: true,
            ..written.clone()
        };
        assert!(unchecked(&one, &run_in_transaction, &autocommit, Workload::Bank).is_none());
        assert!(
            unchecked(&one, &run_in_transaction, &autocommit, Workload::FileStore).is_some(),
            "the file store is written outside any transaction"
        );
        let two = Cut {
            unfinished: vec![1, 3],
            ..Cut::whole(limit)
        };
        let why = unchecked(&two, &written, &autocommit, Workload::Counter).expect("torn");
        assert!(why.starts_with("workers p1, p3 did not stop"), "{why}");
        assert!(
            why.ends_with("the partial history was not checked"),
            "{why}"
        );
    }

    #[test]
    fn an_unavailable_backend_is_said_once() {
        let e = open_error(Error::Unavailable("connection refused".into()));
        assert_eq!(
            e.to_string(),
            "inconclusive: backend unavailable: connection refused"
        );
    }

    #[test]
    fn the_floor_wants_half_the_ops_and_some_after_the_first_fault() {
        let config = RunConfig::new("mutex", Workload::Counter).ops(100);
        assert!(floor(&config, &acked(50, 0), &[], 0).is_none());
        let low = floor(&config, &acked(49, 0), &[], 0).expect("too few");
        assert_eq!(low.verdict, Verdict::Inconclusive);
        let fault = |time| Fault {
            kind: "kill",
            proc: 0,
            time,
        };
        // 80 ops between 0 and 800; a fault at 790 leaves one op after it (need 5).
        assert!(floor(&config, &acked(80, 0), &[fault(790)], 0).is_some());
        assert!(floor(&config, &acked(80, 0), &[fault(100)], 0).is_none());
        // A nemesis that never struck leaves the run saying nothing about faults.
        let kills = config.clone().nemesis(Nemesis::Kill {
            every: Duration::from_millis(100),
        });
        let none = floor(&kills, &acked(80, 0), &[], 0).expect("no fault struck");
        assert_eq!(none.verdict, Verdict::Inconclusive);
        assert!(
            none.summary.contains("killed no worker"),
            "{}",
            none.summary
        );
        assert!(floor(&kills, &acked(80, 0), &[fault(100)], 0).is_none());
        // Unless the run asked for faults only as a perturbation.
        let optional = kills.require_fault(false);
        assert!(floor(&optional, &acked(80, 0), &[], 0).is_none());
    }
}
