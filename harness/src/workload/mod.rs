//! Workloads: what the ops of a run do, and the state each leaves for the checkers.
//!
//! Each workload has an invariant a broken strategy breaks:
//! - [`counter`]: read-modify-write in separate statements; no increment is lost.
//! - [`bank`]: transfers between two accounts; money is conserved, no balance negative.
//! - [`notify_once`]: check a flag, perform a side effect outside the database, set the
//!   flag; each notification's effect happens once. [`Workload::NotifyStale`] is its
//!   negative control: seed 004's code as written, which checks a flag read before the
//!   lock.
//! - [`kv`]: read a record, then write or delete it; each key is linearizable.
//! - [`file_store`]: a small record file rewritten in place, with no locking of its own;
//!   it always parses and keeps every acknowledged record.
//! - [`unique`] (seed 001): counter increments, one op in four of which then breaks the
//!   counter table's UNIQUE key on purpose; each such op gets its own error back and rolls
//!   back alone. Not in [`Workload::ALL`], whose ops are all meant to succeed: see
//!   [`Workload::FAILING`].
//!
//! Each database workload's module holds its statements for every kind of data the
//! harness keeps (SQLite, PostgreSQL, MySQL, versioned records), behind a trait
//! ([`counter::CounterData`], …) that [`WorkloadData`] gathers;
//! the op itself (read, pause, write) is written once over that trait. Ops run through a
//! [`BoxSerializer`] from the registry, and take their critical section timestamps inside
//! the op, through a [`Probe`].

pub mod bank;
pub mod counter;
pub mod file_store;
pub mod kv;
pub mod notify_once;
pub mod unique;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use turnstile::{BoxError, BoxSerializer, Ctx, Error, Key, Transact, Wait};

use self::bank::BankData;
use self::counter::CounterData;
use self::kv::KvData;
use self::notify_once::NotifyData;
use crate::data::{Tables, WorkloadData, backend_error, in_transaction};
use crate::history::{OpInput, OpOutput, now_ns};

/// The workloads the harness knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Workload {
    /// [`counter`].
    Counter,
    /// [`bank`].
    Bank,
    /// [`notify_once`].
    NotifyOnce,
    /// NEGATIVE CONTROL (seed 004 as written): [`notify_once`] acting on a `sent` flag
    /// read *before* its critical section, in a section of its own (the seed's `send()`
    /// checks `self.sent` on a model instance loaded before its `GET_LOCK` and never
    /// refreshed), so two ops that both read it unset both send, one after the other,
    /// under the lock. Checked by `exactly_once`; not in [`Workload::ALL`].
    NotifyStale,
    /// [`kv`].
    Kv,
    /// [`file_store`].
    FileStore,
    /// [`unique`]: [`counter`], one op in four of which fails on purpose with the data's
    /// UNIQUE violation (seed 001's integrity error), which must reach its caller. In
    /// [`Workload::FAILING`], not in [`Workload::ALL`].
    Unique,
}

impl Workload {
    /// Every workload whose ops are all meant to succeed; those that fail on purpose are
    /// [`Workload::FAILING`], the negative-control ones [`Workload::CONTROLS`].
    pub const ALL: [Workload; 5] = [
        Workload::Counter,
        Workload::Bank,
        Workload::NotifyOnce,
        Workload::Kv,
        Workload::FileStore,
    ];

    /// The negative-control workloads: broken application code that a correct strategy
    /// cannot save, which the checkers must catch.
    pub const CONTROLS: [Workload; 1] = [Workload::NotifyStale];

    /// The workloads some of whose ops fail on purpose, with their own errors, which the
    /// strategy must hand back to their callers untouched. Apart from [`Workload::ALL`],
    /// whose every op is meant to succeed (the benchmarks time those).
    pub const FAILING: [Workload; 1] = [Workload::Unique];

    /// Its CLI name.
    pub fn name(self) -> &'static str {
        match self {
            Workload::Counter => "counter",
            Workload::Bank => "bank",
            Workload::NotifyOnce => "notify_once",
            Workload::NotifyStale => "notify_stale",
            Workload::Kv => "kv",
            Workload::FileStore => "file_store",
            Workload::Unique => "unique",
        }
    }

    /// How many keys it uses when the run does not say. A run of notify-once scales its
    /// notifications with its ops instead (see [`RunConfig::key_count`]), so unsent ones
    /// remain to race on for the whole run.
    ///
    /// [`RunConfig::key_count`]: crate::RunConfig::key_count
    pub fn default_keys(self) -> usize {
        match self {
            Workload::Counter | Workload::Unique => 2,
            Workload::Bank => 4,
            Workload::NotifyOnce | Workload::NotifyStale => 16,
            Workload::Kv => 4,
            Workload::FileStore => 1,
        }
    }

    /// Whether kill runs make sense: the file store has no transaction, so a killed
    /// writer leaves a torn file whatever the strategy.
    pub fn survives_kills(self) -> bool {
        self != Workload::FileStore
    }

    /// Creates its tables, rows and files: the tables outside any transaction, the rows
    /// in one transaction of `connect` (versioned records are written at its commit).
    ///
    /// # Errors
    /// When the data or a file cannot be written.
    pub fn init<C>(
        self,
        connect: &C,
        paths: &Paths,
        tables: &Tables,
        keys: usize,
    ) -> Result<(), OpError>
    where
        C: Transact<Resource: WorkloadData>,
    {
        match self {
            Workload::FileStore => return file_store::init(paths),
            Workload::NotifyOnce | Workload::NotifyStale => {
                drop(std::fs::File::create(&paths.effects)?)
            }
            _ => {}
        }
        let mut db = connect.connect().map_err(backend_error)?;
        let t = tables;
        match self {
            Workload::Counter | Workload::Unique => {
                db.create_counters(t)?;
                in_transaction(connect, &mut db, |db| db.zero_counters(t, keys))
            }
            Workload::Bank => {
                db.create_accounts(t)?;
                in_transaction(connect, &mut db, |db| db.open_accounts(t, keys.max(2)))
            }
            Workload::NotifyOnce | Workload::NotifyStale => {
                db.create_notifications(t)?;
                in_transaction(connect, &mut db, |db| db.add_notifications(t, keys))
            }
            Workload::Kv => db.create_records(t),
            Workload::FileStore => Ok(()),
        }
    }

    /// Picks the next op: its keys and input. `op_id` is unique in the run.
    pub fn next_op(self, rng: &mut fastrand::Rng, keys: usize, op_id: u64) -> (Vec<Key>, OpInput) {
        let keys = keys.max(1);
        match self {
            Workload::Counter | Workload::Unique => {
                (vec![key("c", rng.usize(..keys))], OpInput::Increment)
            }
            Workload::Bank => bank::next_op(rng, keys.max(2)),
            Workload::NotifyOnce | Workload::NotifyStale => {
                let id = rng.usize(..keys);
                (vec![key("n", id)], OpInput::Notify { id: id as i64 })
            }
            Workload::Kv => {
                // One op in five deletes, so reads see absent records too.
                let write = if rng.u8(..5) == 0 {
                    None
                } else {
                    Some(op_id as i64)
                };
                (
                    vec![key("k", rng.usize(..keys))],
                    OpInput::ReadWrite { write },
                )
            }
            Workload::FileStore => (
                vec![Key::whole()],
                OpInput::Append {
                    record: op_id as i64,
                },
            ),
        }
    }

    /// Runs op `op_id` (unique in the run: notify-once's effect log names it) through
    /// `strategy`, on the tables of `env`.
    ///
    /// # Errors
    /// The strategy's error, with the op's own [`OpError`].
    pub fn execute<R: WorkloadData>(
        self,
        strategy: &BoxSerializer<R>,
        op_id: u64,
        keys: &[Key],
        input: &OpInput,
        env: &OpEnv,
        probe: &Arc<Probe>,
    ) -> Result<OpOutput, Error<OpError>> {
        let env = env.clone();
        let probe = probe.clone();
        let input = input.clone();
        let key = keys[0].as_str().to_owned();
        // The control's stale copy of the flag: read in a section of its own, before the
        // op's, and not read again.
        let loaded = match (self, &input) {
            (Workload::NotifyStale, &OpInput::Notify { id }) => {
                let tables = env.tables.clone();
                let sent = run_op(strategy, keys, move |db| db.is_sent(&tables, id))?;
                // Between an unset read and the send: the race window the rendezvous
                // widens (a set flag sends nothing, so it has none). Outside any section:
                // the nemesis must not take this for one.
                if !sent {
                    env.wait();
                }
                Some(sent)
            }
            _ => None,
        };
        run_op(strategy, keys, move |db| {
            // Each attempt enters anew: the history keeps the last one's section.
            probe.enter(db.fence().map(|f| f.0));
            let t = &*env.tables;
            let out = match &input {
                OpInput::Increment if self == Workload::Unique => {
                    unique::increment(&mut **db, t, &key, op_id, &env)
                }
                OpInput::Increment => counter::increment(&mut **db, t, &key, &env),
                OpInput::Transfer { from, to, amount } => {
                    bank::transfer(&mut **db, t, from, to, *amount, &env)
                }
                OpInput::Notify { id } => match loaded {
                    Some(sent) => notify_once::send_unless(&mut **db, t, *id, op_id, sent, &env),
                    None => notify_once::notify(&mut **db, t, *id, op_id, &env),
                },
                OpInput::ReadWrite { write } => kv::read_write(&mut **db, t, &key, *write, &env),
                OpInput::Append { record } => file_store::append(&env, *record),
            };
            probe.exit();
            out
        })
    }

    /// Reads the state the run left, for the checkers.
    ///
    /// # Errors
    /// When the data cannot be read.
    pub fn final_state<R: WorkloadData>(
        self,
        db: &mut R,
        paths: &Paths,
        tables: &Tables,
        keys: usize,
    ) -> Result<FinalState, OpError> {
        Ok(match self {
            Workload::Counter | Workload::Unique => FinalState::Values(db.counters(tables, keys)?),
            Workload::Bank => FinalState::Balances {
                balances: db.balances(tables, keys.max(2))?,
                expected_total: bank::INITIAL_BALANCE * keys.max(2) as i64,
            },
            Workload::NotifyOnce | Workload::NotifyStale => {
                FinalState::Notifications(notify_once::state(db, tables, paths, keys)?)
            }
            Workload::Kv => FinalState::Records(db.records(tables, keys)?),
            Workload::FileStore => FinalState::Store(file_store::read(&paths.store)),
        })
    }
}

impl fmt::Display for Workload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Workload {
    type Err = String;
    /// A workload by its name, in any case, with `-` for `_`, and spaces around it
    /// ignored, as strategy names are read.
    fn from_str(s: &str) -> Result<Self, String> {
        let wanted = s.trim().to_ascii_lowercase().replace('-', "_");
        Workload::ALL
            .into_iter()
            .chain(Workload::FAILING)
            .chain(Workload::CONTROLS)
            .find(|w| w.name() == wanted)
            .ok_or_else(|| {
                let names = |list: &[Workload]| {
                    list.iter().map(|w| w.name()).collect::<Vec<_>>().join(", ")
                };
                format!(
                    "unknown workload {s:?}; known: {}; with ops that fail on purpose: {}; negative controls (turnstile check only): {}",
                    names(&Workload::ALL),
                    names(&Workload::FAILING),
                    names(&Workload::CONTROLS)
                )
            })
    }
}

fn key(prefix: &str, i: usize) -> Key {
    // Short ASCII names are always valid keys.
    Key::new(format!("{prefix}{i}")).unwrap_or_else(|_| Key::whole())
}

/// The files of one run, all in one directory.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Paths {
    /// The directory.
    pub dir: PathBuf,
    /// The SQLite database.
    pub db: PathBuf,
    /// The notify-once side-effect log (append-only, one line per effect: the
    /// notification, the op that performed it, its process id).
    pub effects: PathBuf,
    /// The file store's record file.
    pub store: PathBuf,
}

impl Paths {
    /// The standard layout in `dir`, with the database at `db` (default `dir/run.db`).
    pub fn new(dir: &Path, db: Option<&Path>) -> Self {
        Paths {
            dir: dir.to_path_buf(),
            db: db.map_or_else(|| dir.join("run.db"), Path::to_path_buf),
            effects: dir.join("effects.log"),
            store: dir.join("store.txt"),
        }
    }

    /// The history file of worker process `proc`.
    pub fn history(&self, proc: u32) -> PathBuf {
        self.dir.join(format!("history-{proc}.jsonl"))
    }
}

/// What ops need besides the resource: the files, the tables, the think time, and a hook
/// called inside the critical section (the nemesis uses it to learn a worker is in its
/// section).
#[derive(Clone)]
pub struct OpEnv {
    /// The run's files.
    pub paths: Arc<Paths>,
    /// The run's tables.
    pub tables: Arc<Tables>,
    /// How long an op pauses between its read and its write (widens race windows).
    pub think: Duration,
    /// Called inside the critical section, between the read and the write.
    pub in_section: Option<Arc<dyn Fn() + Send + Sync>>,
    /// Wait up to this long between the read and the write for another worker (of any
    /// process) to be at the same point: a rendezvous makes two broken critical sections
    /// overlap far more reliably than a think time. Zero: no rendezvous.
    pub rendezvous: Duration,
}

impl fmt::Debug for OpEnv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpEnv")
            .field("paths", &self.paths)
            .field("tables", &self.tables)
            .field("think", &self.think)
            .finish_non_exhaustive()
    }
}

impl OpEnv {
    /// Between an op's read and its write: the hook, then the think time.
    pub fn pause(&self) {
        if let Some(hook) = &self.in_section {
            hook();
        }
        self.wait();
    }

    /// The think time and the rendezvous of [`pause`](Self::pause), without its hook:
    /// for a wait outside any critical section.
    pub fn wait(&self) {
        if !self.think.is_zero() {
            std::thread::sleep(self.think);
        }
        if !self.rendezvous.is_zero() {
            rendezvous(&self.paths.dir.join("rendezvous"), self.rendezvous);
        }
    }
}

/// Marks this thread as "between read and write" with a file in `dir`, and waits up to
/// `wait` until another worker's mark shows up. Files, so processes meet too.
fn rendezvous(dir: &Path, wait: Duration) {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    if std::fs::create_dir_all(dir).is_err() {
        return;
    }
    let me = dir.join(format!(
        "{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    if std::fs::File::create(&me).is_err() {
        return;
    }
    let deadline = std::time::Instant::now() + wait;
    loop {
        let others = std::fs::read_dir(dir).map_or(0, |d| d.count()) > 1;
        if others {
            // Linger, so a partner that polls a little later still sees this mark.
            std::thread::sleep(Duration::from_micros(200));
            break;
        }
        if std::time::Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(Duration::from_micros(20));
    }
    let _ = std::fs::remove_file(&me);
}

/// Critical-section timestamps of one op, written from inside the op.
#[derive(Debug, Default)]
pub struct Probe {
    enter: AtomicU64,
    exit: AtomicU64,
    fence: AtomicU64,
}

impl Probe {
    /// Records entering the section (a rerun overwrites the earlier attempt).
    pub fn enter(&self, fence: Option<u64>) {
        self.exit.store(0, Ordering::SeqCst);
        self.fence
            .store(fence.map_or(0, |f| f.saturating_add(1)), Ordering::SeqCst);
        self.enter.store(now_ns(), Ordering::SeqCst);
    }

    /// Records leaving the section.
    pub fn exit(&self) {
        self.exit.store(now_ns(), Ordering::SeqCst);
    }

    /// When the last attempt entered, if it did.
    pub fn entered(&self) -> Option<u64> {
        Some(self.enter.load(Ordering::SeqCst)).filter(|&t| t != 0)
    }

    /// When the last attempt left, if it did.
    pub fn exited(&self) -> Option<u64> {
        Some(self.exit.load(Ordering::SeqCst)).filter(|&t| t != 0)
    }

    /// The fence of the last attempt.
    pub fn fence(&self) -> Option<u64> {
        self.fence.load(Ordering::SeqCst).checked_sub(1)
    }
}

/// Runs `op` through `strategy`, handing the strategy the op's [`OpError`] boxed as a
/// [`BoxError`] and unboxing it again for the caller.
///
/// A strategy classifies an op's error ([`Transact::is_busy`], [`Connect::is_broken`])
/// by looking for its driver's error with [`find_error`](turnstile::find_error), which
/// sees into a `BoxError`'s `source()` chain but not into a type of the harness's own:
/// an `OpError` handed over as it is would make every busy statement of an op final under
/// `retry` and `optimistic`, and keep a connection the server had closed.
///
/// [`Connect::is_broken`]: turnstile::Connect::is_broken
///
/// # Errors
/// The strategy's error, with the op's own [`OpError`].
pub fn run_op<R: 'static, T: Send + 'static>(
    strategy: &BoxSerializer<R>,
    keys: &[Key],
    op: impl FnMut(&mut Ctx<'_, R>) -> Result<T, OpError> + Send + 'static,
) -> Result<T, Error<OpError>> {
    run_op_within(strategy, keys, Wait::Default, op)
}

/// [`run_op`], waiting to start as `wait` says.
pub fn run_op_within<R: 'static, T: Send + 'static>(
    strategy: &BoxSerializer<R>,
    keys: &[Key],
    wait: Wait,
    mut op: impl FnMut(&mut Ctx<'_, R>) -> Result<T, OpError> + Send + 'static,
) -> Result<T, Error<OpError>> {
    strategy
        .run_as(keys, wait, move |db| {
            op(db).map_err(|e| Box::new(e) as BoxError)
        })
        .map_err(|e| {
            e.map_op(|boxed| match boxed.downcast::<OpError>() {
                Ok(e) => *e,
                // Only OpErrors are boxed above.
                Err(other) => OpError::Backend(other),
            })
        })
}

/// An op's own failure. Strategies see it through [`run_op`], boxed, so that the
/// driver's error in it (its [`source`](std::error::Error::source)) is classified.
#[derive(Debug)]
#[non_exhaustive]
pub enum OpError {
    /// SQLite failed.
    Sql(rusqlite::Error),
    /// PostgreSQL failed.
    #[cfg(feature = "postgres")]
    Postgres(postgres::Error),
    /// MySQL / MariaDB failed.
    #[cfg(feature = "mysql")]
    MySql(mysql::Error),
    /// A versioned record could not be read or written.
    #[cfg(feature = "optimistic")]
    Store(turnstile::optimistic::StoreError),
    /// The data could not be opened, or a transaction around the workload's setup failed.
    Backend(turnstile::BoxError),
    /// A row or record the workload created is gone.
    Missing(String),
    /// A file failed.
    Io(std::io::Error),
    /// The file store did not parse: another writer tore it.
    Corrupt(String),
    /// A record the op inserts exists already: the op's own uniqueness check refused it,
    /// where the data has no UNIQUE constraint to (versioned records).
    Duplicate(String),
}

impl fmt::Display for OpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpError::Sql(e) => write!(f, "sqlite: {e}"),
            #[cfg(feature = "postgres")]
            OpError::Postgres(e) => write!(f, "postgres: {e}"),
            #[cfg(feature = "mysql")]
            OpError::MySql(e) => write!(f, "mysql: {}", mysql_in_words(e)),
            #[cfg(feature = "optimistic")]
            OpError::Store(e) => write!(f, "{e}"),
            OpError::Backend(e) => write!(f, "{e}"),
            OpError::Missing(what) => write!(f, "{what} is missing"),
            OpError::Io(e) => write!(f, "i/o: {e}"),
            OpError::Corrupt(m) => write!(f, "corrupt store: {m}"),
            OpError::Duplicate(id) => write!(f, "{id} exists already (its id is unique)"),
        }
    }
}

/// A MySQL error as a reader wants it: the server's, driver's or system's message without
/// the driver's wrapping (`MySqlError { … }`, `CodecError { … }`), and a read the
/// connection's read timeout cut off said as such: the system's text for it is
/// `Resource temporarily unavailable (os error 11)`.
#[cfg(feature = "mysql")]
fn mysql_in_words(error: &mysql::Error) -> String {
    use std::io::ErrorKind;
    match (turnstile::resource::mysql_io_cause(error), error) {
        (Some(e), _) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
            "no answer within the connection's read timeout".to_owned()
        }
        (Some(e), _) => e.to_string(),
        (None, mysql::Error::MySqlError(e)) => e.to_string(),
        (None, mysql::Error::DriverError(e)) => e.to_string(),
        (None, other) => other.to_string(),
    }
}

impl std::error::Error for OpError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            OpError::Sql(e) => Some(e),
            #[cfg(feature = "postgres")]
            OpError::Postgres(e) => Some(e),
            #[cfg(feature = "mysql")]
            OpError::MySql(e) => Some(e),
            #[cfg(feature = "optimistic")]
            OpError::Store(e) => Some(e),
            OpError::Backend(e) => Some(&**e),
            OpError::Io(e) => Some(e),
            OpError::Missing(_) | OpError::Corrupt(_) | OpError::Duplicate(_) => None,
        }
    }
}

/// Whether `error` is the data refusing an op because another held it: SQLite's
/// `database is locked` (`SQLITE_BUSY`), PostgreSQL's and MySQL's busy answers (a
/// serialization failure, a deadlock, a lock wait that timed out), a versioned record's
/// busy read or commit conflict. Strategies that give up on contention say so with their
/// own errors ([`Error::Timeout`], [`Error::Contended`]); this is the database's refusal
/// reaching the caller, as seed 000's thread pool saw it.
///
/// `connect` is the connector the op's strategy runs over, and the answer is its
/// [`Transact::is_busy`]: the very classification a retrying strategy asks before it
/// reruns an op, so what the harness counts as a refusal and what a strategy treats as
/// busy cannot drift apart (the per-driver rules are the strategies crate's:
/// [`turnstile::sqlite::is_busy`], `turnstile::resource::postgres_is_busy` and
/// `mysql_is_busy`, which the connectors' `is_busy` apply). The op's own error is handed
/// to it as the strategy saw it: boxed as a [`BoxError`], as [`run_op`] boxes it, so
/// `is_busy` looks through the same `source()` chain (into an [`OpError::Io`]'s inner
/// error too). That is why `error` is borrowed mutably: the op's error is moved into the
/// box for the question and put back, unchanged, after it.
pub fn refused_as_busy<C: Transact + ?Sized>(connect: &C, error: &mut Error<OpError>) -> bool {
    match error {
        Error::Op(op) => {
            let boxed: BoxError = Box::new(std::mem::replace(op, OpError::Missing(String::new())));
            let busy = connect.is_busy(&boxed);
            *op = match boxed.downcast::<OpError>() {
                Ok(e) => *e,
                // Only an OpError was boxed above.
                Err(other) => OpError::Backend(other),
            };
            busy
        }
        Error::Resource(e) => connect.is_busy(e),
        _ => false,
    }
}

/// Whether an op that ended with `error` may still take effect after its caller saw it
/// end: its caller stopped waiting while it was under way ([`Error::Indeterminate`]: a
/// queue's caller that timed out while the op ran, a `COMMIT` whose answer the
/// connection lost), a statement of it got no answer from a database server, which
/// may still apply it ([`OpError::unanswered`]), or it panicked ([`Error::Panicked`]):
/// a panic may hide such a statement (a read that timed out, which the op's code did
/// not expect), which is why the strategies drop a connection after a panic unless it
/// [survives one](turnstile::Connect::survives_panic). After any other error, whatever
/// the op did it did before the error came back: its statements all had their answers.
/// A killed worker's op has no end at all, and may take effect at any time after it
/// started.
pub fn may_take_effect_later(error: &Error<OpError>) -> bool {
    error.is_indeterminate()
        || matches!(error, Error::Panicked(_))
        || error.op().is_some_and(OpError::unanswered)
}

impl OpError {
    /// Whether the op failed on a statement a database server never answered — its
    /// connection broke or timed out while the statement was under way — so the server
    /// may still apply that statement after the op ended. A server's answer, even an
    /// error, means it is done with the statement; SQLite and files answer every call
    /// before it returns. An error the harness cannot see into (a version store's, a
    /// boxed backend's) counts as unanswered: the lenient side.
    pub fn unanswered(&self) -> bool {
        match self {
            #[cfg(feature = "postgres")]
            OpError::Postgres(e) => e.as_db_error().is_none(),
            #[cfg(feature = "mysql")]
            OpError::MySql(e) => !matches!(e, mysql::Error::MySqlError(_)),
            #[cfg(feature = "optimistic")]
            OpError::Store(_) => true,
            OpError::Backend(_) => true,
            OpError::Sql(_)
            | OpError::Missing(_)
            | OpError::Io(_)
            | OpError::Corrupt(_)
            | OpError::Duplicate(_) => false,
        }
    }
}

impl From<rusqlite::Error> for OpError {
    fn from(e: rusqlite::Error) -> Self {
        OpError::Sql(e)
    }
}

#[cfg(feature = "postgres")]
impl From<postgres::Error> for OpError {
    fn from(e: postgres::Error) -> Self {
        OpError::Postgres(e)
    }
}

#[cfg(feature = "mysql")]
impl From<mysql::Error> for OpError {
    fn from(e: mysql::Error) -> Self {
        OpError::MySql(e)
    }
}

#[cfg(feature = "optimistic")]
impl From<turnstile::optimistic::StoreError> for OpError {
    fn from(e: turnstile::optimistic::StoreError) -> Self {
        OpError::Store(e)
    }
}

impl From<std::io::Error> for OpError {
    fn from(e: std::io::Error) -> Self {
        OpError::Io(e)
    }
}

/// A versioned record as an `i64` (little-endian): `None` when absent or empty (a deleted
/// `kv` record); a value that is not eight bytes reads as `i64::MIN`, which every checker
/// flags.
#[cfg(feature = "optimistic")]
fn read_i64<S: turnstile::optimistic::VersionStore>(
    db: &mut turnstile::optimistic::Versioned<S>,
    id: &str,
) -> Result<Option<i64>, OpError> {
    Ok(match db.read(id)? {
        None => None,
        Some(bytes) if bytes.is_empty() => None,
        Some(bytes) => Some(bytes.try_into().map_or(i64::MIN, i64::from_le_bytes)),
    })
}

/// The state a run left, as each workload's checker needs it.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum FinalState {
    /// Counter values by key.
    Values(std::collections::BTreeMap<String, i64>),
    /// Bank balances by account, and the total they must add up to.
    Balances {
        /// Balance by account.
        balances: std::collections::BTreeMap<String, i64>,
        /// The total money in the bank.
        expected_total: i64,
    },
    /// Notify-once flags and effects.
    Notifications(notify_once::Outcome),
    /// Key-value records (absent keys are missing).
    Records(std::collections::BTreeMap<String, i64>),
    /// The file store's records, or why it does not parse.
    Store(Result<Vec<i64>, String>),
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use turnstile::sqlite::Sqlite;

    use super::*;

    /// Workloads are read as strategy names are: any case, `-` for `_`, spaces around
    /// ignored; an unknown one lists the controls apart.
    #[test]
    fn workload_names_are_read_loosely_and_unknown_ones_listed() {
        for name in [
            "counter",
            " counter ",
            "Counter",
            "notify-once",
            "NOTIFY_ONCE\t",
        ] {
            assert!(name.parse::<Workload>().is_ok(), "{name:?}");
        }
        assert_eq!("file-store".parse::<Workload>(), Ok(Workload::FileStore));
        let unknown = "nope".parse::<Workload>().unwrap_err();
        assert!(
            unknown.ends_with(
                "known: counter, bank, notify_once, kv, file_store; \
                 with ops that fail on purpose: unique; \
                 negative controls (turnstile check only): notify_stale"
            ),
            "{unknown}"
        );
        for bad in ["", "count", "counter x", "counter_"] {
            assert!(bad.parse::<Workload>().is_err(), "{bad:?}");
        }
    }

    /// A real `database is locked`: a write while another connection holds the file's
    /// exclusive lock, with no busy timeout to wait it out.
    fn sqlite_busy(dir: &Path) -> rusqlite::Error {
        let path = dir.join("busy.db");
        let holder = rusqlite::Connection::open(&path).unwrap();
        holder
            .execute_batch("CREATE TABLE IF NOT EXISTS t (x INTEGER); BEGIN EXCLUSIVE")
            .unwrap();
        let other = rusqlite::Connection::open(&path).unwrap();
        other.busy_timeout(Duration::ZERO).unwrap();
        other.execute("INSERT INTO t VALUES (1)", []).unwrap_err()
    }

    #[test]
    fn refusals_are_what_the_connector_calls_busy() {
        let dir = tempfile::tempdir().unwrap();
        let sqlite = Sqlite::new(dir.path().join("run.db"));
        let op = |e| Error::Op(OpError::Sql(e));
        assert!(refused_as_busy(&sqlite, &mut op(sqlite_busy(dir.path()))));
        // At `BEGIN` or `COMMIT`, boxed by the strategy.
        let mut resource = Error::Resource(Box::new(sqlite_busy(dir.path())));
        assert!(refused_as_busy(&sqlite, &mut resource));
        // Boxed by the harness itself (an op's setup), found in the chain.
        let mut backend = Error::Op(OpError::Backend(Box::new(sqlite_busy(dir.path()))));
        assert!(refused_as_busy(&sqlite, &mut backend));
        // Inside an io::Error, where a strategy's `is_busy` looks too (`get_ref`).
        let mut io = Error::Op(OpError::Io(std::io::Error::other(sqlite_busy(dir.path()))));
        assert!(refused_as_busy(&sqlite, &mut io));
        // The question leaves the op's error as it was.
        let inner = match &io {
            Error::Op(OpError::Io(e)) => e.get_ref(),
            _ => None,
        };
        assert!(inner.is_some_and(|e| e.is::<rusqlite::Error>()), "{io:?}");
        for mut other in [
            op(rusqlite::Error::QueryReturnedNoRows),
            Error::Op(OpError::Missing("c0".into())),
            Error::Op(OpError::Io(std::io::Error::other("disk"))),
            Error::Timeout {
                waited: Duration::ZERO,
            },
            Error::Contended {
                attempts: 3,
                elapsed: Duration::ZERO,
            },
        ] {
            assert!(!refused_as_busy(&sqlite, &mut other), "{other}");
        }
    }

    /// What the harness counts as refused is what a retrying strategy reruns: the
    /// connector's answer for the op's error as a strategy holds it (erased, around the
    /// box [`run_op`] puts it in).
    #[test]
    fn refused_as_busy_agrees_with_the_strategys_view_of_an_op_error() {
        let dir = tempfile::tempdir().unwrap();
        let sqlite = Sqlite::new(dir.path().join("run.db"));
        let errors = || {
            vec![
                OpError::Sql(sqlite_busy(dir.path())),
                OpError::Io(std::io::Error::other(sqlite_busy(dir.path()))),
                OpError::Io(std::io::Error::other(OpError::Sql(sqlite_busy(dir.path())))),
                OpError::Backend(Box::new(std::io::Error::other(sqlite_busy(dir.path())))),
                OpError::Sql(rusqlite::Error::QueryReturnedNoRows),
                OpError::Io(std::io::Error::other("disk")),
                OpError::Missing("c0".into()),
            ]
        };
        for (ours, theirs) in errors().into_iter().zip(errors()) {
            let strategy_view: turnstile::AnyError = Box::new(Box::new(theirs) as BoxError);
            let rerun = sqlite.is_busy(&strategy_view);
            let mut ours = Error::Op(ours);
            assert_eq!(refused_as_busy(&sqlite, &mut ours), rerun, "{ours}");
        }
    }

    #[test]
    fn only_an_op_the_data_may_still_apply_may_take_effect_later() {
        let dir = tempfile::tempdir().unwrap();
        assert!(may_take_effect_later(&Error::Indeterminate));
        // A panic may hide a statement the server never answered (a read that timed
        // out): the strategies drop such a connection rather than reuse it.
        assert!(may_take_effect_later(&Error::Panicked("boom".into())));
        for settled in [
            Error::TransactionEnded,
            Error::LeaseLost,
            Error::Op(OpError::Sql(sqlite_busy(dir.path()))),
            Error::Op(OpError::Io(std::io::Error::other("disk"))),
        ] {
            assert!(!may_take_effect_later(&settled), "{settled}");
        }
    }

    #[cfg(feature = "mysql")]
    #[test]
    fn a_mysql_statement_without_the_servers_answer_may_still_apply() {
        let lost = mysql::Error::from(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        assert!(may_take_effect_later(&Error::Op(OpError::MySql(lost))));
        let deadlock = mysql::Error::MySqlError(mysql::error::MySqlError {
            state: "40001".into(),
            message: "Deadlock found when trying to get lock".into(),
            code: 1213,
        });
        assert!(!may_take_effect_later(&Error::Op(OpError::MySql(deadlock))));
    }

    #[cfg(feature = "mysql")]
    #[test]
    fn a_mysql_op_error_is_said_in_words() {
        let cut_off = mysql::Error::from(std::io::Error::from(std::io::ErrorKind::WouldBlock));
        assert_eq!(
            OpError::MySql(cut_off).to_string(),
            "mysql: no answer within the connection's read timeout"
        );
        let deadlock = mysql::Error::MySqlError(mysql::error::MySqlError {
            state: "40001".into(),
            message: "Deadlock found when trying to get lock".into(),
            code: 1213,
        });
        let text = OpError::MySql(deadlock).to_string();
        assert!(text.starts_with("mysql: ERROR 1213 (40001)"), "{text}");
        assert!(!text.contains("MySqlError"), "{text}");
    }

    /// The real server's slow answer, cut off by the read timeout: the driver wraps the
    /// system's `WouldBlock` in its codec's error.
    #[cfg(feature = "mysql")]
    #[test]
    fn a_mysql_read_cut_off_by_its_timeout_says_so() {
        use mysql::prelude::Queryable;
        let opts = mysql::Opts::from_url(&crate::conformance::mysql_url()).unwrap();
        let builder = mysql::OptsBuilder::from_opts(opts)
            .read_timeout(Some(std::time::Duration::from_millis(100)));
        let mut conn = mysql::Conn::new(builder).expect("the test MySQL server");
        let error = conn.query_drop("SELECT SLEEP(3)").unwrap_err();
        assert_eq!(
            OpError::MySql(error).to_string(),
            "mysql: no answer within the connection's read timeout"
        );
    }

    #[cfg(feature = "postgres")]
    #[test]
    fn a_postgres_statement_without_the_servers_answer_may_still_apply() {
        // Nothing listens on port 1: the driver's own error, no server's answer.
        let Err(refused) = postgres::Client::connect(
            "host=127.0.0.1 port=1 user=x connect_timeout=5",
            postgres::NoTls,
        ) else {
            panic!("something answers on port 1");
        };
        assert!(may_take_effect_later(&Error::Op(OpError::Postgres(
            refused
        ))));
    }
}
