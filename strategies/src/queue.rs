//! The `queue` strategy: one worker thread owns the resource, and every op is handed to it
//! over a bounded channel, so ops never overlap (seeds 000 and 001: "run all database
//! operations in a single thread").
//!
//! # Running ops
//!
//! [`Queue`] implements [`Serializer`]: `run` hands the op to the worker and blocks until
//! its result comes back. The op's own error reaches the caller untouched, as
//! [`Error::Op`], so a UNIQUE violation can still be matched.
//!
//! ```
//! use turnstile::queue::Queue;
//! use turnstile::sqlite::{Sqlite, Synchronous};
//! use turnstile::sqlite::rusqlite::{self, ErrorCode};
//! use turnstile::{Error, Key, Serializer};
//!
//! let dir = tempfile::tempdir()?;
//! let queue = Queue::new(Sqlite::new(dir.path().join("app.db")).synchronous(Synchronous::Normal))?;
//! let key = Key::whole();
//! queue.run(&key, |db| db.execute_batch("CREATE TABLE users (name TEXT UNIQUE)"))?;
//! queue.run(&key, |db| db.execute("INSERT INTO users VALUES ('ada')", []))?;
//! match queue.run(&key, |db| db.execute("INSERT INTO users VALUES ('ada')", [])) {
//!     Err(Error::Op(rusqlite::Error::SqliteFailure(e, _))) => {
//!         assert_eq!(e.code, ErrorCode::ConstraintViolation);
//!     }
//!     other => panic!("expected a UNIQUE violation, got {other:?}"),
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Tickets
//!
//! [`Queue::submit`] returns at once with a [`Ticket`]; wait on it with
//! [`wait`](Ticket::wait), [`wait_timeout`](Ticket::wait_timeout) or
//! [`wait_deadline`](Ticket::wait_deadline). A wait that times out before the op started
//! cancels it: the op never runs and the caller gets [`Error::Timeout`]. After the op
//! started, a timed-out wait gets [`Error::Indeterminate`]: it may still commit. Dropping a
//! ticket cancels its op too, unless it already started.
//!
//! ```
//! use std::time::Duration;
//! use turnstile::queue::Queue;
//! use turnstile::sqlite::{Sqlite, Synchronous};
//! use turnstile::Key;
//!
//! let dir = tempfile::tempdir()?;
//! let queue = Queue::new(Sqlite::new(dir.path().join("app.db")).synchronous(Synchronous::Normal))?;
//! let tickets: Vec<_> = (0..10)
//!     .map(|i| queue.submit(&Key::whole(), move |db| db.query_row("SELECT ?1 * 2", [i], |r| r.get::<_, i64>(0))))
//!     .collect::<Result<_, _>>()?;
//! let doubled: Vec<i64> = tickets
//!     .into_iter()
//!     .map(|t| t.wait_timeout(Duration::from_secs(10)))
//!     .collect::<Result<_, _>>()?;
//! assert_eq!(doubled, (0..10).map(|i| i * 2).collect::<Vec<_>>());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Async
//!
//! A [`Ticket`] is a [`Future`], so async code awaits it on any runtime (seed 000's
//! deferred). Here with a minimal hand-rolled executor:
//!
//! ```
//! use std::future::Future;
//! use std::sync::Arc;
//! use std::task::{Context, Poll, Wake, Waker};
//! use std::thread::Thread;
//! use turnstile::queue::Queue;
//! use turnstile::sqlite::{Sqlite, Synchronous};
//! use turnstile::Key;
//!
//! struct Unpark(Thread);
//! impl Wake for Unpark {
//!     fn wake(self: Arc<Self>) { self.0.unpark() }
//! }
//! fn block_on<F: Future>(future: F) -> F::Output {
//!     let mut future = std::pin::pin!(future);
//!     let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
//!     let mut cx = Context::from_waker(&waker);
//!     loop {
//!         match future.as_mut().poll(&mut cx) {
//!             Poll::Ready(out) => return out,
//!             Poll::Pending => std::thread::park(),
//!         }
//!     }
//! }
//!
//! let dir = tempfile::tempdir()?;
//! let queue = Queue::new(Sqlite::new(dir.path().join("app.db")).synchronous(Synchronous::Normal))?;
//! let answer = block_on(async {
//!     queue.submit(&Key::whole(), |db| db.query_row("SELECT 42", [], |r| r.get::<_, i64>(0)))?.await
//! })?;
//! assert_eq!(answer, 42);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Back-pressure
//!
//! The channel is bounded ([`QueueBuilder::capacity`]): a full queue makes `run` and
//! `submit` wait (up to their deadline), and [`Queue::try_submit`] returns [`Error::Full`]
//! without ever blocking.
//!
//! ```
//! use std::sync::mpsc;
//! use turnstile::queue::Queue;
//! use turnstile::sqlite::{Sqlite, Synchronous};
//! use turnstile::{Error, Key};
//!
//! let dir = tempfile::tempdir()?;
//! let queue = Queue::builder()
//!     .capacity(1)
//!     .build(Sqlite::new(dir.path().join("app.db")).synchronous(Synchronous::Normal))?;
//! let (started_tx, started) = mpsc::channel();
//! let (release, release_rx) = mpsc::channel::<()>();
//! // Occupy the worker, then fill the one slot.
//! let busy = queue.submit(&Key::whole(), move |_| {
//!     started_tx.send(()).unwrap();
//!     release_rx.recv().unwrap();
//!     Ok::<_, std::io::Error>(())
//! })?;
//! started.recv()?;
//! let queued = queue.try_submit(&Key::whole(), |_| Ok::<_, std::io::Error>(()))?;
//! let refused = queue.try_submit(&Key::whole(), |_| Ok::<_, std::io::Error>(()));
//! assert!(matches!(refused, Err(Error::Full)));
//! release.send(())?;
//! busy.wait()?;
//! queued.wait()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Closing
//!
//! [`Queue::close`] (and dropping the queue) stops accepting work, runs every job accepted
//! before it exactly once, and joins the worker. Later calls get [`Error::Closed`].
//!
//! ```
//! use turnstile::queue::Queue;
//! use turnstile::sqlite::{Sqlite, Synchronous};
//! use turnstile::{Error, Key, Serializer};
//!
//! let dir = tempfile::tempdir()?;
//! let queue = Queue::new(Sqlite::new(dir.path().join("app.db")).synchronous(Synchronous::Normal))?;
//! let ticket = queue.submit(&Key::whole(), |db| db.query_row("SELECT 1", [], |r| r.get::<_, i64>(0)))?;
//! queue.close();
//! assert_eq!(ticket.wait()?, 1);
//! assert!(matches!(queue.run(&Key::whole(), |_| Ok::<_, std::io::Error>(())), Err(Error::Closed)));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Group commit
//!
//! In [`TxMode::Transaction`] (the default) each op runs inside the resource's
//! transaction. With group commit (on by default) the worker takes everything already
//! queued, up to [`QueueBuilder::max_batch`] ops, into one transaction with a savepoint
//! per op (ops queued while the batch runs join it, up to the same bound): a failing op
//! rolls back only itself, and one commit serves the whole batch. No
//! caller hears back before the commit that holds its op. When an op's failure ends the
//! whole transaction, or the commit fails, the batch's other ops run again, one
//! transaction each, so one bad op costs no other caller its write; that is why
//! [`Capabilities::reruns_op`] is true with group commit on.
//!
//! ```
//! use turnstile::queue::Queue;
//! use turnstile::sqlite::{Sqlite, Synchronous};
//! use turnstile::{Key, Serializer};
//!
//! let dir = tempfile::tempdir()?;
//! let queue = Queue::builder()
//!     .group_commit(true)
//!     .max_batch(64)
//!     .build(Sqlite::new(dir.path().join("app.db")).synchronous(Synchronous::Normal))?;
//! queue.run(&Key::whole(), |db| db.execute_batch("CREATE TABLE t (v INTEGER)"))?;
//! let tickets: Vec<_> = (0..100)
//!     .map(|i| queue.submit(&Key::whole(), move |db| db.execute("INSERT INTO t VALUES (?1)", [i])))
//!     .collect::<Result<_, _>>()?;
//! for t in tickets {
//!     t.wait()?;
//! }
//! let n: i64 = queue.run(&Key::whole(), |db| db.query_row("SELECT count(*) FROM t", [], |r| r.get(0)))?;
//! assert_eq!(n, 100);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Group commit records a marker (a fence named after the queue instance, through
//! [`Transact::begin`]; for SQLite a row of the `turnstile_fences` table) in each batch
//! (two or more ops queued together, or one that others may join), so that after an op ended the batch's transaction by itself, or after
//! a `COMMIT` whose answer a database server's connection lost
//! ([`TransactError::Indeterminate`]), the worker can tell whether the batch committed,
//! and reruns the ops only if it did not: a batch that committed must not have its writes
//! applied twice. Where the marker cannot be read, the ops get [`Error::Indeterminate`]. The worker
//! deletes the marker's row when the queue closes ([`Transact::forget_fence`]); a
//! process that dies with its queue open leaves that one small row behind. Resources whose `begin` ignores fences (against the
//! [`Transact`] contract) would make that check answer "not committed".
//!
//! ## Gathering
//!
//! Callers that wait for their answers come back together: when a batch's commit
//! answers them, the next batch has usually started with whoever queued meanwhile, and
//! they wait for the commit after it. With commits that wait for the disk
//! (`synchronous = FULL`), the callers then split into two groups that take turns, and
//! each `fsync` serves half of them. So a batch whose commits take long waits for
//! callers on their way back before it commits: while it has run fewer ops than were in
//! flight at recent commits, for at most half the average commit time from its start,
//! and never more than 10 ms (what a caller who misses it would wait anyway, and more).
//! A stalled commit moves that average by at most four times the usual.
//!
//! - A batch gathers only when commits average 100 µs or more. That is a matter of
//!   time, not of disks: a commit over a network to a database server can take that
//!   long without waiting for a disk, and its batches gather too.
//! - Never beyond [`QueueBuilder::max_batch`] ops, nor, under a lock, past the lease's
//!   [`max_hold`](QueueBuilder::max_hold).
//! - A wait that runs out drops the estimate of callers in flight to the batch's size,
//!   or by half: a caller left alone after a crowd of 64 may wait up to half a commit in
//!   each of its next few (about six) commits. While the crowd is there, each commit's
//!   count of ops in flight sets the estimate back.
//! - A batch holds its transaction open while it waits, so other writers to the data
//!   (another process without the queue; rows a database server has locked for the
//!   batch) wait that much longer.
//! - A ticket whose [`wait_timeout`](Ticket::wait_timeout) runs out while its batch
//!   waits gets [`Error::Indeterminate`], as for any op that started and was not
//!   answered in time; [`Serializer::run`] waits for the answer.
//!
//! [`QueueBuilder::gather`]`(false)` turns it off.
//!
//! ## Overlapped flush
//!
//! A commit that waits for the disk (SQLite's `synchronous = FULL`) leaves the worker
//! idle for the length of an `fsync`. With [`QueueBuilder::overlap_flush`]`(true)` and
//! group commit, over a resource that can split its commit from its flush
//! ([`Transact::defer_flush`]: SQLite with `FULL` in WAL mode), the worker commits
//! without waiting and goes on to the next batch, while a second thread flushes (one
//! flush for everything handed to it meanwhile) and only then answers the batch's
//! callers. For a lone caller the worker flushes itself, which saves waking that thread.
//!
//! - `Ok` still means durable: no caller hears back before the flush that covers its
//!   commit.
//! - Other connections to the data may read a commit before it is durable, as under
//!   `synchronous = NORMAL`: a crash can take back what they read. Ops of the queue read
//!   it too, and their answers wait for the same flush.
//! - A flush that fails answers every success it covered with [`Error::Indeterminate`]
//!   (the commit happened; whether it survives a crash is not known), and the worker
//!   reopens its resource. The new connection's flushes vouch only for its own
//!   commits: as with `FULL` itself, a failed `fsync` may have dropped pages the kernel
//!   will never write, and nothing later can tell. Treat `Indeterminate` after a failed
//!   flush as a reason to check the disk.
//! - Every connection to the database must sync its checkpoints (`synchronous` `NORMAL`
//!   or `FULL`, SQLite's default): a checkpoint run by one with `OFF` can copy commits
//!   that are not flushed yet into the database file without syncing it, and a writer
//!   may then start the WAL over, so the flush that follows no longer covers them.
//! - A caller's op counts as in flight until its answer is out, after the flush: a
//!   zero timeout, which takes only an idle queue, gets [`Error::Timeout`] while a flush
//!   is pending even if the worker is idle.
//! - It is off by default: for what other connections may read early, and because it
//!   only pays when the worker has other callers' ops to run during a flush: callers that wait for their answers join
//!   one batch and wait for its flush together, leaving little to overlap. On a 2-core
//!   machine with 1–64 such callers it changed throughput by −4% to +9% (the book's
//!   queue chapter).
//!
//! ```
//! use turnstile::queue::Queue;
//! use turnstile::sqlite::{Sqlite, Synchronous};
//! use turnstile::{Key, Serializer};
//!
//! let dir = tempfile::tempdir()?;
//! let queue = Queue::builder()
//!     .overlap_flush(true)
//!     .build(Sqlite::new(dir.path().join("app.db")).synchronous(Synchronous::Full))?;
//! // The worker's connection commits with NORMAL (1); the WAL is synced before answers.
//! let sync: i64 = queue.run(&Key::whole(), |db| db.query_row("PRAGMA synchronous", [], |r| r.get(0)))?;
//! assert_eq!(sync, 1);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Across processes
//!
//! A queue excludes the threads of its own process only. Give it a cross-process
//! [`Lock`] with [`QueueBuilder::lock`] (or [`Queue::over`]) and its worker takes that lock
//! once per *batch*: acquire, run everything queued under one transaction, commit,
//! release. Each process keeps its own queue, and a lock that costs a network round trip
//! (Redis) or a system call (a file lock) per op costs it once per batch instead.
//!
//! ```
//! use std::time::Duration;
//! use turnstile::lock::FileLock;
//! use turnstile::queue::Queue;
//! use turnstile::sqlite::{Sqlite, Synchronous};
//! use turnstile::{Key, Scope, Serializer};
//!
//! let dir = tempfile::tempdir()?;
//! let path = dir.path().join("app.db");
//! // Every process opening `app.db` this way excludes the others. Only the worker polls
//! // the lock, so it can afford to poll often.
//! let lock = FileLock::builder(FileLock::dir_beside(&path))
//!     .max_poll(Duration::from_millis(1))
//!     .open()?;
//! let queue = Queue::over(lock, Sqlite::new(&path).synchronous(Synchronous::Normal))?;
//! assert_eq!(queue.capabilities().scope, Scope::Processes);
//! queue.run(&Key::whole(), |db| db.execute_batch("CREATE TABLE IF NOT EXISTS t (v INTEGER)"))?;
//! queue.run(&Key::whole(), |db| db.execute("INSERT INTO t VALUES (1)", []))?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! - **One lease per batch.** The lock name is the [whole-resource key](Key::whole) under
//!   the resource's identity ([`Queue::lock_name`]), the name [`Locked`](crate::Locked)
//!   takes over a single-writer resource, so a `queue+file-lock` process and a `file-lock`
//!   process on one database exclude each other.
//! - **Fences.** In [`TxMode::Transaction`] the lease's fence (for backends that issue
//!   one) is claimed in [`Transact::begin`] of the batch's transaction (and of every op
//!   rerun alone), so a stale holder's whole batch is refused (every caller gets
//!   [`Error::StaleFence`]); each op sees the fence in [`Ctx::fence`].
//! - **Lost leases.** The lease is checked before every op but a batch's first, and
//!   before the commit. Lost before the commit, the whole batch rolls back and every op
//!   that ran in it gets [`Error::LeaseLost`]; ops not yet started wait for the next
//!   lease.
//! - **Fairness.** A batch stops starting ops after [`QueueBuilder::max_batch`] ops or
//!   [`QueueBuilder::max_hold`], whichever comes first; the worker then commits and
//!   releases. Once every [`QueueBuilder::handoff_interval`] it leaves the lock free for
//!   [`QueueBuilder::handoff_pause`] before taking it again, so a process whose queue
//!   keeps refilling cannot keep the lock from the others. A lock whose waiters poll
//!   should poll at least that often: `queue+file-lock` opens its [`FileLock`] with a
//!   1 ms [`max_poll`](crate::lock::FileLockBuilder::max_poll) (one poller per process).
//! - **Waiting.** The worker waits for the lock on behalf of the batch's callers, for as
//!   long as one of them still waits to start; a caller whose deadline passes first gets
//!   [`Error::Timeout`], and its op never runs. A lock that fails otherwise (a server
//!   down) answers every caller of the batch with its error, [`Error::Unavailable`].
//! - **Autocommit.** In [`TxMode::Autocommit`] the ops of a batch run one after another
//!   under the one lease, each statement committing by itself: only the lock protects
//!   them, and nothing is fenced.
//!
//! [`Capabilities`] are the lock's scope, fencing, lease expiry and holder death, with
//! [`Capabilities::reruns_op`] as the queue's. The spec registry knows
//! `queue+file-lock[:DIR]`, `queue+redis://…`, `queue+redlock://…`, `queue+mysql://…` and
//! `queue+postgres://…` (the last two also over MySQL and PostgreSQL data).
//!
//! [`FileLock`]: crate::lock::FileLock
//!
//! # Re-entrancy
//!
//! An op that calls back into the queue it runs on (directly, or through other queues
//! whose ops call back: A → B → A) would wait for itself forever; it gets
//! [`Error::Reentrant`] instead.

use std::cell::RefCell;
use std::future::Future;
use std::marker::PhantomData;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, RwLock, TryLockError};
use std::task::{Context, Poll, Waker};
use std::thread::{JoinHandle, ThreadId};
use std::time::{Duration, Instant};

use crossbeam_channel::{
    Receiver, RecvTimeoutError, SendTimeoutError, Sender, TryRecvError, TrySendError,
};
use turnstile_core::{
    BoxError, Capabilities, Ctx, Error, Fence, FenceClaim, Flush, HolderDeath, Key, Lock, LockName,
    MAX_TIMEOUT, Scope, Serializer, StrategyError, Transact, TransactError, TxCounts, Wait,
    check_timeout, panic_message, sorted_keys,
};

use crate::locked::{AfterOp, TxMode, after_op};

mod batch_lock;

#[cfg(feature = "sqlite")]
pub(crate) use batch_lock::register as register_locked;
use batch_lock::{BatchLease, BatchLock, copy_error, share};

/// The default most jobs waiting in the channel: 1024.
pub const DEFAULT_CAPACITY: usize = 1024;

/// The largest capacity accepted: 2<sup>20</sup> jobs. The channel sets aside room for
/// every job it may hold when the queue is built.
pub const MAX_CAPACITY: usize = 1 << 20;

/// The default time a call waits to start its op (a queue slot, then its turn): 30 s.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// The default most ops group commit puts in one transaction: 256.
pub const DEFAULT_MAX_BATCH: usize = 256;

/// The default longest time a batch keeps starting ops under one lease of its
/// [`lock`](QueueBuilder::lock): 20 ms.
pub const DEFAULT_MAX_HOLD: Duration = Duration::from_millis(20);

/// The default pause between releasing the [`lock`](QueueBuilder::lock) and taking it
/// again, once per [hand-off interval](DEFAULT_HANDOFF_INTERVAL): 300 µs.
pub const DEFAULT_HANDOFF_PAUSE: Duration = Duration::from_micros(300);

/// The default least time between two hand-off pauses: 10 ms.
pub const DEFAULT_HANDOFF_INTERVAL: Duration = Duration::from_millis(10);

/// The longest [`QueueBuilder::handoff_pause`] accepted: 1 s.
pub const MAX_HANDOFF_PAUSE: Duration = Duration::from_secs(1);

/// The longest one attempt to take the batch lock waits before the worker drops the jobs
/// whose callers stopped waiting and tries again. Every attempt has a deadline, so a file
/// lock polls instead of blocking in the kernel, where it could not be cancelled.
const ACQUIRE_SLICE: Duration = Duration::from_millis(100);

/// How much longer than the fastest acquire seen an acquire must take to count as having
/// waited for another holder: 50 µs.
const CONTENDED_ACQUIRE: Duration = Duration::from_micros(50);

/// The longest the worker spins for new work before it parks. Waking a parked thread
/// costs tens of microseconds; spinning a little while callers keep submitting avoids it.
const MAX_SPIN: Duration = Duration::from_micros(50);
/// The shortest spin; the budget adapts between the two.
const MIN_SPIN: Duration = Duration::from_micros(2);

/// How many pauses a spinning thread makes between two looks at the clock (a clock read
/// costs about as much as a pause or two).
const SPINS_PER_CLOCK: u32 = 32;

/// How long a caller that found the queue idle spins for its result before it sleeps.
/// Alone on the queue, its op is next and done within tens of microseconds: sleeping and
/// being woken would cost about as much again, and more on a loaded machine. A caller
/// behind others sleeps at once, leaving the CPU to the worker.
const CALLER_SPIN: Duration = Duration::from_micros(50);

/// Whether a lone op's round trip, as estimated in nanoseconds, is short enough to spin
/// for: under [`CALLER_SPIN`]. A commit that waits for the disk (`synchronous = FULL`)
/// is not: spinning through it only takes a CPU the worker may need.
fn worth_spinning(round_trip_ns: &AtomicU64) -> bool {
    u128::from(round_trip_ns.load(Ordering::Relaxed)) < CALLER_SPIN.as_nanos()
}

/// The machine's cores, asked once.
fn cores() -> usize {
    static CORES: OnceLock<usize> = OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, usize::from))
}

/// How many callers submit together of late, as the worker sees them: a decaying maximum
/// of its batches' sizes, in sixteenths. One caller keeps it at one; a crowd of callers
/// keeps it up, since every batch it sees holds several of them.
#[derive(Debug, Default)]
struct Crowd(AtomicU32);

impl Crowd {
    const ONE: u32 = 16;

    /// The worker saw `n` ops queued together.
    fn saw(&self, n: usize) {
        let n = u32::try_from(n)
            .unwrap_or(u32::MAX / Self::ONE)
            .min(u32::MAX / Self::ONE);
        let old = self.0.load(Ordering::Relaxed);
        // An eighth less per batch: some 30 lone batches after a crowd of 64, it reads one.
        self.0
            .store((n * Self::ONE).max(old - old / 8), Ordering::Relaxed);
    }

    /// Whether spinning can pay: the callers of late and the worker each have a core.
    /// Otherwise a spinning thread (caller or worker) only takes the core that the thread
    /// it waits for needs, which is the usual case on a small machine under load.
    fn room_to_spin(&self) -> bool {
        self.callers() < cores()
    }

    /// About how many callers submit together of late (at least one).
    fn callers(&self) -> usize {
        self.0.load(Ordering::Relaxed).div_ceil(Self::ONE).max(1) as usize
    }
}

/// Commits quicker than this on average are not worth waiting for callers before: a
/// caller on its way takes about as long to arrive (tens of microseconds of CPU on a
/// busy machine) as a commit that does not wait for the disk.
const MIN_GATHER_COMMIT: Duration = Duration::from_micros(100);

/// The longest a batch waits for callers on their way back, however slow its commits:
/// a caller that has not come back by then is not on its way.
const MAX_GATHER: Duration = Duration::from_millis(10);

/// Whether, and how long, a group commit waits for callers on their way back before it
/// commits (see "Gathering" in the module docs).
///
/// Callers that wait for their answers come back together: the batch that answered
/// them is over, and the next one starts at once with whoever was queued meanwhile, so
/// the callers just answered miss it and wait for the commit after. With commits that
/// wait for the disk, the callers then split into two groups that take turns, and each
/// `fsync` carries half of them. So while a batch has run fewer ops than there were
/// callers in flight at recent commits, and its commits take long, it waits for more,
/// for at most half a commit's time from its start (and [`MAX_GATHER`]): about what a
/// caller who misses it would wait anyway.
#[derive(Debug, Default)]
struct Gather {
    /// A decaying average of the batches' commit times, in nanoseconds.
    commit_ns: u64,
    /// A decaying maximum of the ops in flight as batches committed, in sixteenths.
    active: u32,
}

impl Gather {
    const ONE: u32 = 16;

    /// A batch commit took `took`, with `in_flight` ops submitted and not answered.
    fn committed(&mut self, took: Duration, in_flight: usize) {
        // One stalled commit (a lock wait, a disk hiccup) moves the average by at most
        // what four times the usual would: it must not make the next batches wait long.
        let cap = match self.commit_ns {
            0 => MAX_GATHER.as_nanos(),
            usual => u128::from(usual).saturating_mul(4),
        };
        let ns = u64::try_from(took.as_nanos().min(cap)).unwrap_or(u64::MAX);
        // An eighth of the way to each new sample.
        self.commit_ns = if self.commit_ns == 0 {
            ns
        } else {
            self.commit_ns - self.commit_ns / 8 + ns / 8
        };
        let n = u32::try_from(in_flight)
            .unwrap_or(u32::MAX)
            .min(u32::MAX / Self::ONE);
        self.active = (n * Self::ONE).max(self.active - self.active / 8);
    }

    /// A batch's wait ran out with `taken` ops: fewer callers came back than the estimate
    /// said. It drops to what came, or by half: a crowd that left is forgotten within a
    /// few commits, not the some 30 the decay of [`Gather::committed`] takes, so a caller
    /// left alone does not wait for it in each of them. While the crowd is still there,
    /// the next commit's count of ops in flight sets the estimate back.
    fn missed(&mut self, taken: usize) {
        let n = u32::try_from(taken)
            .unwrap_or(u32::MAX)
            .min(u32::MAX / Self::ONE);
        self.active = (n * Self::ONE).max(self.active / 2);
    }

    /// Until when a batch that began at `began` and has taken `taken` ops waits for
    /// more; `None` when it does not wait.
    fn until(&self, began: Instant, taken: usize) -> Option<Instant> {
        let commit = Duration::from_nanos(self.commit_ns);
        if commit < MIN_GATHER_COMMIT || taken >= self.active.div_ceil(Self::ONE) as usize {
            return None;
        }
        began.checked_add((commit / 2).min(MAX_GATHER))
    }
}

/// How long closing a queue waits for its batch marker's row to be deleted.
const FORGET_MARKER_WAIT: Duration = Duration::from_secs(2);

/// The backend name of the group-commit marker fence.
const MARKER_BACKEND: &str = "turnstile-queue-batch";

static NEXT_QUEUE_ID: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// The ids of the queues whose worker this thread is running an op for: the queue's
    /// own, and those of the queues its submitter was running on (A → B → A).
    static RUNNING_ON: RefCell<Option<Arc<[u64]>>> = const { RefCell::new(None) };
}

fn running_on() -> Option<Arc<[u64]>> {
    RUNNING_ON.with(|c| c.borrow().clone())
}

/// Configures a [`Queue`]; get one from [`Queue::builder`].
///
/// Every setter documents its default.
#[must_use = "a builder does nothing until `build` is called"]
pub struct QueueBuilder<C> {
    capacity: usize,
    timeout: Option<Duration>,
    tx_mode: TxMode,
    group_commit: bool,
    max_batch: usize,
    lock: Option<Arc<dyn BatchLock>>,
    max_hold: Duration,
    handoff_pause: Duration,
    handoff_interval: Duration,
    overlap_flush: bool,
    gather: bool,
    _connect: PhantomData<fn(C)>,
}

impl<C> Default for QueueBuilder<C> {
    fn default() -> Self {
        QueueBuilder {
            capacity: DEFAULT_CAPACITY,
            timeout: Some(DEFAULT_TIMEOUT),
            tx_mode: TxMode::default(),
            group_commit: true,
            max_batch: DEFAULT_MAX_BATCH,
            lock: None,
            max_hold: DEFAULT_MAX_HOLD,
            handoff_pause: DEFAULT_HANDOFF_PAUSE,
            handoff_interval: DEFAULT_HANDOFF_INTERVAL,
            overlap_flush: false,
            gather: true,
            _connect: PhantomData,
        }
    }
}

impl<C> Clone for QueueBuilder<C> {
    fn clone(&self) -> Self {
        QueueBuilder {
            lock: self.lock.clone(),
            ..*self
        }
    }
}

impl<C> std::fmt::Debug for QueueBuilder<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueueBuilder")
            .field("capacity", &self.capacity)
            .field("timeout", &self.timeout)
            .field("tx_mode", &self.tx_mode)
            .field("group_commit", &self.group_commit)
            .field("max_batch", &self.max_batch)
            .field(
                "lock",
                &self.lock.as_ref().map(|l| l.backend_id().to_owned()),
            )
            .field("max_hold", &self.max_hold)
            .field("handoff_pause", &self.handoff_pause)
            .field("handoff_interval", &self.handoff_interval)
            .field("overlap_flush", &self.overlap_flush)
            .field("gather", &self.gather)
            .finish()
    }
}

impl<C: Transact> QueueBuilder<C> {
    /// Sets how many jobs may wait in the channel; past that, submitters wait (or get
    /// [`Error::Full`] from [`Queue::try_submit`]). At least 1, at most [`MAX_CAPACITY`].
    /// Default: [`DEFAULT_CAPACITY`].
    pub fn capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity;
        self
    }

    /// Sets how long a call waits to start its op by default; `None` waits forever.
    /// At most [`MAX_TIMEOUT`]. Default: [`DEFAULT_TIMEOUT`].
    pub fn timeout(mut self, timeout: Option<Duration>) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets whether ops run inside the resource's transaction. In
    /// [`TxMode::Autocommit`] each statement of an op commits by itself and nothing is
    /// rolled back when an op fails or panics; only the queue's one-at-a-time order
    /// protects the op. An op may run its own `BEGIN … COMMIT`, but one that leaves a
    /// transaction open has it rolled back (and gets [`Error::Resource`] if it returned
    /// `Ok`), since the worker's connection serves every later op. (Over a database
    /// server, finding out costs a round trip or two per op:
    /// [`Transact::end_stray_transaction`].)
    /// Default: [`TxMode::Transaction`].
    pub fn tx_mode(mut self, mode: TxMode) -> Self {
        self.tx_mode = mode;
        self
    }

    /// Sets whether the worker commits the ops already queued (and those queued while
    /// they run) in one transaction, with a savepoint per op. Only applies in
    /// [`TxMode::Transaction`]. Default: `true`.
    pub fn group_commit(mut self, yes: bool) -> Self {
        self.group_commit = yes;
        self
    }

    /// Sets whether, under group commit, a batch's flush to disk overlaps the next batch:
    /// over a resource that can defer it ([`Transact::defer_flush`]: SQLite with
    /// `synchronous = FULL` in WAL mode), the worker commits without waiting for the disk
    /// and goes on to the next batch, while a second thread flushes and then answers the
    /// batch's callers. No caller hears back before its commit is durable; other
    /// connections may read a commit before it is, as with `synchronous = NORMAL`. See
    /// [Overlapped flush](crate::queue#overlapped-flush). Default: `false`.
    pub fn overlap_flush(mut self, yes: bool) -> Self {
        self.overlap_flush = yes;
        self
    }

    /// Sets whether, under group commit, a batch behind slow commits waits for callers on
    /// their way back before it commits, so that one commit serves them too: while it
    /// has run fewer ops than recent commits found in flight, for at most half a commit's
    /// average time from its start (10 ms at most), and never when commits average under
    /// 100 µs. See [Gathering](crate::queue#gathering). Default: `true`.
    pub fn gather(mut self, yes: bool) -> Self {
        self.gather = yes;
        self
    }

    /// Sets the most ops one group commit takes (and, with a [`lock`](Self::lock), the
    /// most ops run under one lease). Must be at least 1. Default: [`DEFAULT_MAX_BATCH`].
    pub fn max_batch(mut self, max: usize) -> Self {
        self.max_batch = max;
        self
    }

    /// Puts a cross-process `lock` behind the queue: its worker takes the lock once per
    /// batch, runs the batch (in one transaction with group commit), and releases it. See
    /// [Across processes](crate::queue#across-processes). Default: no lock (the queue
    /// excludes the threads of its own process only).
    pub fn lock<L: Lock>(mut self, lock: L) -> Self {
        self.lock = Some(Arc::new(lock));
        self
    }

    /// Sets, with a [`lock`](Self::lock), how long a batch keeps starting ops after its
    /// lease was granted; ops still queued then wait for the next lease, so a process whose
    /// queue keeps refilling still lets the others in. An op that started runs to its end,
    /// and every lease runs at least one op. At most [`MAX_TIMEOUT`].
    /// Default: [`DEFAULT_MAX_HOLD`].
    pub fn max_hold(mut self, max: Duration) -> Self {
        self.max_hold = max;
        self
    }

    /// Sets, with a [`lock`](Self::lock), how long the worker leaves the lock free after
    /// releasing it, once every [`handoff_interval`](Self::handoff_interval), before it
    /// takes it again: a lock that wakes its waiters in other processes (Redis' release
    /// message, a polling file lock) gives them this long to get in before this process
    /// barges back. Zero turns it off. At most [`MAX_HANDOFF_PAUSE`].
    /// Default: [`DEFAULT_HANDOFF_PAUSE`].
    pub fn handoff_pause(mut self, pause: Duration) -> Self {
        self.handoff_pause = pause;
        self
    }

    /// Sets, with a [`lock`](Self::lock), the least time between two
    /// [hand-off pauses](Self::handoff_pause); in between, the worker takes the lock
    /// again as soon as it has work. Shorter is fairer to other processes, longer leaves
    /// the lock idle less often. At most [`MAX_TIMEOUT`].
    /// Default: [`DEFAULT_HANDOFF_INTERVAL`].
    pub fn handoff_interval(mut self, interval: Duration) -> Self {
        self.handoff_interval = interval;
        self
    }

    /// Starts the worker thread, which opens its resource with `connect`.
    ///
    /// # Errors
    /// [`Error::Config`] for a zero capacity or batch, a capacity over [`MAX_CAPACITY`], an
    /// absurd timeout, hold or pause,
    /// or [`TxMode::Autocommit`] over a resource whose writes only apply at commit
    /// ([`Transact::supports_autocommit`] false: nothing would ever be written);
    /// [`Error::Unavailable`] when the worker could not open its resource (or start).
    pub fn build(self, connect: C) -> Result<Queue<C>, StrategyError> {
        crate::locked::check_tx_mode(self.tx_mode, &connect)?;
        for (what, d) in [
            ("batch hold", self.max_hold),
            ("hand-off interval", self.handoff_interval),
        ] {
            if d > MAX_TIMEOUT {
                return Err(Error::Config(format!(
                    "a {what} of {d:?} is longer than the maximum {MAX_TIMEOUT:?}"
                )));
            }
        }
        if self.handoff_pause > MAX_HANDOFF_PAUSE {
            return Err(Error::Config(format!(
                "a hand-off pause of {:?} is longer than the maximum {MAX_HANDOFF_PAUSE:?}",
                self.handoff_pause
            )));
        }
        if self.capacity == 0 || self.capacity > MAX_CAPACITY {
            return Err(Error::Config(format!(
                "a queue's capacity of {} is not between 1 and {MAX_CAPACITY}",
                self.capacity
            )));
        }
        if self.max_batch == 0 {
            return Err(Error::Config("a batch needs room for at least 1 op".into()));
        }
        let timeout = check_timeout(self.timeout)?;
        let id = NEXT_QUEUE_ID.fetch_add(1, Ordering::Relaxed);
        let (sender, receiver) = crossbeam_channel::bounded(self.capacity);
        let shared = Arc::new(Shared {
            id,
            closed: AtomicBool::new(false),
            closing_on_worker: AtomicBool::new(false),
            flush_thread: OnceLock::new(),
            in_flight: AtomicUsize::new(0),
            crowd: Crowd::default(),
            gate: RwLock::new(Some(sender)),
        });
        let connect = Arc::new(connect);
        let group_commit = self.group_commit && self.tx_mode == TxMode::Transaction;
        let (ready_tx, ready_rx) = crossbeam_channel::bounded::<Result<(), BoxError>>(1);
        let worker_connect = connect.clone();
        let worker_shared = shared.clone();
        let (mode, max_batch) = (self.tx_mode, self.max_batch);
        // One lease for the whole resource: a batch mixes every key. It is the name
        // `Locked` takes with `KeyScope::Whole`, so both strategies exclude each other.
        let lock_name = LockName::new(connect.identity(), Key::whole());
        let lock_caps = self.lock.as_ref().map(|l| l.capabilities());
        let fence_backend: Arc<str> = self.lock.as_ref().map_or("", |l| l.backend_id()).into();
        let fence_name: Arc<[u8]> = lock_name.bytes().into();
        let worker_lock = self.lock.clone();
        let worker_lock_name = lock_name.clone();
        let (max_hold, handoff_pause, handoff_interval) =
            (self.max_hold, self.handoff_pause, self.handoff_interval);
        let overlap_flush = group_commit && self.overlap_flush;
        let gather = (group_commit && self.gather).then(Gather::default);
        let handle = std::thread::Builder::new()
            .name(format!("turnstile-queue-{id}"))
            .spawn(move || {
                let mut resource = match worker_connect.connect() {
                    Ok(r) => r,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let syncer = overlap_flush
                    .then(|| Syncer::start(&*worker_connect, &mut resource, &worker_shared))
                    .flatten();
                let _ = ready_tx.send(Ok(()));
                Worker {
                    marker: format!("queue-{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..))
                        .into_bytes()
                        .into_boxed_slice(),
                    own_chain: Arc::from([id]),
                    connect: worker_connect,
                    resource,
                    receiver,
                    mode,
                    group_commit,
                    max_batch,
                    spin: MIN_SPIN,
                    batch_seq: 0,
                    broken: false,
                    lock: worker_lock,
                    lock_name: worker_lock_name,
                    fence_backend,
                    fence_name,
                    lease: None,
                    hold_until: None,
                    started_in_hold: 0,
                    max_hold,
                    handoff_pause,
                    handoff_interval,
                    released_at: None,
                    turn_started: None,
                    fast_acquire: Duration::MAX,
                    answers: Answers::new(worker_shared.clone()),
                    syncer,
                    last_ran: Instant::now(),
                    gather,
                    reopen_error: None,
                    shared: worker_shared,
                }
                .serve();
            })
            .map_err(Error::unavailable)?;
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                let _ = handle.join();
                return Err(Error::from_connect(e));
            }
            Err(_) => {
                let _ = handle.join();
                return Err(Error::unavailable(
                    "the queue's worker thread died while opening its resource",
                ));
            }
        }
        Ok(Queue {
            worker_thread: handle.thread().id(),
            worker: Mutex::new(Some(handle)),
            shared,
            connect,
            timeout,
            mode: self.tx_mode,
            group_commit,
            capacity: self.capacity,
            lock_caps,
            lock_name: self.lock.is_some().then_some(lock_name),
            solo_round_trip: Arc::new(AtomicU64::new(0)),
        })
    }
}

/// The `queue` strategy: one worker thread owns the resource and runs every op in turn.
///
/// Excludes across the threads of one process (the queue is the only way to the resource),
/// or, with a [`lock`](QueueBuilder::lock), as far as the lock does (see
/// [Across processes](crate::queue#across-processes)). Defaults: see [`QueueBuilder`].
/// Dropping the queue closes it (see [`Queue::close`]).
///
/// A [`Wait`] (or the default timeout) bounds the time to get a slot in the channel and
/// then to reach the front of the line; once the op has started, a blocking `run` waits
/// for it to finish. A zero timeout, or a deadline already past, runs the op only if the
/// queue is idle (nothing queued or running) and fails with [`Error::Timeout`] at once
/// otherwise; with a lock, it then tries the lock once.
///
/// Re-entrancy is tracked per thread: an op that hands work to another thread of its own
/// and waits for it there, where that work calls back into this queue, is not detected.
pub struct Queue<C: Transact> {
    shared: Arc<Shared<C>>,
    worker: Mutex<Option<JoinHandle<()>>>,
    worker_thread: ThreadId,
    connect: Arc<C>,
    timeout: Option<Duration>,
    mode: TxMode,
    group_commit: bool,
    capacity: usize,
    lock_caps: Option<Capabilities>,
    lock_name: Option<LockName>,
    /// A moving average of a lone op's round trip in nanoseconds, from submit to result.
    solo_round_trip: Arc<AtomicU64>,
}

/// What submitters and the worker share.
struct Shared<C: Transact> {
    id: u64,
    closed: AtomicBool,
    /// `close` was called on the worker thread itself, which cannot wait for itself: the
    /// worker shuts the gate when it can.
    closing_on_worker: AtomicBool,
    /// The thread that flushes and answers, with an overlapped flush. It drops the jobs
    /// it answers, and with them whatever their ops own: maybe the last handle to the
    /// queue.
    flush_thread: OnceLock<ThreadId>,
    /// Jobs accepted and not yet finished (or dropped) by the worker: zero means idle.
    in_flight: AtomicUsize,
    /// How many callers submit together of late: whether spinning can pay.
    crowd: Crowd,
    /// Submitters send under a read guard; `close` takes the write guard (after setting
    /// `closed`) to drop the sender, so it never races a send in flight. The worker keeps
    /// draining meanwhile, so senders blocked on a full channel finish.
    gate: RwLock<Option<Sender<Box<dyn Job<C>>>>>,
}

enum SendMode {
    Try,
    Until(Option<Instant>),
}

impl<C: Transact> Queue<C> {
    /// A queue with the default settings over resources opened by `connect`.
    ///
    /// # Errors
    /// As [`QueueBuilder::build`].
    pub fn new(connect: C) -> Result<Self, StrategyError> {
        QueueBuilder::default().build(connect)
    }

    /// A builder with every setting at its default.
    pub fn builder() -> QueueBuilder<C> {
        QueueBuilder::default()
    }

    /// A queue with the default settings whose worker takes `lock` once per batch (see
    /// [Across processes](crate::queue#across-processes)); the same as
    /// `Queue::builder().lock(lock).build(connect)`.
    ///
    /// # Errors
    /// As [`QueueBuilder::build`].
    pub fn over<L: Lock>(lock: L, connect: C) -> Result<Self, StrategyError> {
        QueueBuilder::default().lock(lock).build(connect)
    }

    /// Queues `op` for `key`, waiting up to the default timeout for a slot, and returns a
    /// ticket for its result. The op must also start before that deadline, or it is
    /// cancelled and its ticket yields [`Error::Timeout`].
    ///
    /// # Errors
    /// [`Error::Timeout`] when the queue stayed full, [`Error::Closed`],
    /// [`Error::Reentrant`] when called from an op running on this queue.
    pub fn submit<T, E, F>(&self, key: &Key, op: F) -> Result<Ticket<T, E>, Error<E>>
    where
        F: FnMut(&mut Ctx<'_, C::Resource>) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: Send + Sync + 'static,
    {
        self.submit_with(std::slice::from_ref(key), Wait::Default, op)
    }

    /// Queues `op` for `keys`; `wait` bounds the time to get a slot and to start.
    ///
    /// # Errors
    /// As [`Queue::submit`]; [`Error::Config`] for empty `keys` or an absurd timeout.
    pub fn submit_with<T, E, F>(
        &self,
        keys: &[Key],
        wait: Wait,
        op: F,
    ) -> Result<Ticket<T, E>, Error<E>>
    where
        F: FnMut(&mut Ctx<'_, C::Resource>) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: Send + Sync + 'static,
    {
        let keys = sorted_keys(keys).map_err(Error::widen)?;
        let deadline = wait.deadline(self.timeout).map_err(Error::widen)?;
        self.enqueue(keys, deadline, SendMode::Until(deadline), op)
    }

    /// Queues `op` for `key` if there is a free slot right now; never blocks. The op must
    /// start within the default timeout; with a zero one, it runs only if the queue is
    /// idle.
    ///
    /// # Errors
    /// [`Error::Full`], [`Error::Closed`], [`Error::Reentrant`]; with a zero default
    /// timeout, [`Error::Timeout`] when the queue is not idle.
    pub fn try_submit<T, E, F>(&self, key: &Key, op: F) -> Result<Ticket<T, E>, Error<E>>
    where
        F: FnMut(&mut Ctx<'_, C::Resource>) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: Send + Sync + 'static,
    {
        let keys = vec![key.clone()];
        let deadline = Wait::Default.deadline(self.timeout).map_err(Error::widen)?;
        self.enqueue(keys, deadline, SendMode::Try, op)
    }

    fn enqueue<T, E, F>(
        &self,
        keys: Vec<Key>,
        deadline: Option<Instant>,
        how: SendMode,
        op: F,
    ) -> Result<Ticket<T, E>, Error<E>>
    where
        F: FnMut(&mut Ctx<'_, C::Resource>) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: Send + Sync + 'static,
    {
        let chain = running_on();
        if chain
            .as_deref()
            .is_some_and(|c| c.contains(&self.shared.id))
        {
            return Err(Error::Reentrant);
        }
        let since = Instant::now();
        let start_deadline = deadline;
        let mut deadline = deadline;
        let mut how = how;
        // Nothing can start "at once" on a queue unless it is idle: a deadline that has
        // already passed (a zero timeout) claims the idle queue or gives up, rather than
        // being accepted and then always expiring.
        let try_once = deadline.is_some_and(|at| at <= since);
        if try_once {
            deadline = None;
            how = SendMode::Try;
        }
        let slot = Arc::new(Slot::new());
        let job: Box<dyn Job<C>> = Box::new(Task::<C, T, E, F> {
            slot: slot.clone(),
            op: OwnedOp(Some(op)),
            keys,
            deadline,
            start_deadline,
            since,
            chain,
            pending: None,
            attempts: 0,
            delivered: false,
            _connect: PhantomData,
        });
        if self.shared.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        let gate = match how {
            // Only `close` writes the gate, and it may wait there for a submitter blocked
            // on a full queue: a try must not wait behind it.
            SendMode::Try => match self.shared.gate.try_read() {
                Ok(gate) => gate,
                Err(TryLockError::Poisoned(p)) => p.into_inner(),
                Err(TryLockError::WouldBlock) => return Err(Error::Closed),
            },
            SendMode::Until(_) => self.shared.gate.read().unwrap_or_else(|p| p.into_inner()),
        };
        let Some(sender) = gate.as_ref() else {
            return Err(Error::Closed);
        };
        if self.shared.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        let mut idle = true;
        if try_once {
            let claimed =
                self.shared
                    .in_flight
                    .compare_exchange(0, 1, Ordering::AcqRel, Ordering::Acquire);
            if claimed.is_err() {
                return Err(Error::Timeout {
                    waited: since.elapsed(),
                });
            }
        } else {
            idle = self.shared.in_flight.fetch_add(1, Ordering::AcqRel) == 0;
        }
        let sent = match how {
            SendMode::Try => sender.try_send(job).map_err(|e| match e {
                TrySendError::Full(_) => Error::Full,
                TrySendError::Disconnected(_) => Error::Closed,
            }),
            SendMode::Until(None) => sender.send(job).map_err(|_| Error::Closed),
            SendMode::Until(Some(at)) => sender.send_deadline(job, at).map_err(|e| match e {
                SendTimeoutError::Timeout(_) => Error::Timeout {
                    waited: since.elapsed(),
                },
                SendTimeoutError::Disconnected(_) => Error::Closed,
            }),
        };
        drop(gate);
        if sent.is_err() {
            self.shared.in_flight.fetch_sub(1, Ordering::AcqRel);
        }
        sent.map(|()| Ticket {
            slot,
            since,
            deadline,
            solo: (idle && self.shared.crowd.room_to_spin()).then(|| self.solo_round_trip.clone()),
        })
    }

    /// Stops accepting work, waits until every job accepted before runs (exactly once),
    /// and joins the worker thread. Later calls get [`Error::Closed`]. Idempotent.
    ///
    /// Called from an op running on this queue, it only stops accepting work: the worker
    /// cannot wait for itself, so it finishes the accepted jobs and exits on its own.
    pub fn close(&self) {
        self.shared.closed.store(true, Ordering::Release);
        if std::thread::current().id() == self.worker_thread {
            self.shared.closing_on_worker.store(true, Ordering::Release);
            return;
        }
        let sender = self
            .shared
            .gate
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        drop(sender);
        if self.shared.flush_thread.get() == Some(&std::thread::current().id()) {
            // The worker joins the flushing thread as it exits: it cannot be waited for
            // from there. With the gate shut it drains the queue and exits by itself.
            return;
        }
        // Held while joining, so that a concurrent `close` returns only once the worker
        // is done too.
        let mut worker = self.worker.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(handle) = worker.take() {
            // The worker catches op panics; one that escaped came from the resource's own
            // code, and the jobs it left were answered as they were dropped.
            let _ = handle.join();
        }
    }

    /// Whether [`Queue::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.shared.closed.load(Ordering::Acquire)
    }

    /// How many jobs wait in the channel right now (not counting the running ones).
    pub fn len(&self) -> usize {
        let gate = self.shared.gate.read().unwrap_or_else(|p| p.into_inner());
        gate.as_ref().map_or(0, Sender::len)
    }

    /// Whether no job waits in the channel right now.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The most jobs that can wait in the channel.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The resource opener.
    pub fn connector(&self) -> &C {
        &self.connect
    }

    /// The name the worker locks once per batch, with a [`lock`](QueueBuilder::lock):
    /// the [whole-resource key](Key::whole) under the resource's identity.
    pub fn lock_name(&self) -> Option<&LockName> {
        self.lock_name.as_ref()
    }
}

impl<C: Transact> Drop for Queue<C> {
    fn drop(&mut self) {
        self.close();
    }
}

impl<C: Transact> std::fmt::Debug for Queue<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue")
            .field("id", &self.shared.id)
            .field("identity", &self.connect.identity())
            .field("mode", &self.mode)
            .field("group_commit", &self.group_commit)
            .field("timeout", &self.timeout)
            .field("capacity", &self.capacity)
            .field("lock_name", &self.lock_name)
            .field("closed", &self.is_closed())
            .finish()
    }
}

impl<C: Transact> Serializer for Queue<C> {
    type Resource = C::Resource;

    fn capabilities(&self) -> Capabilities {
        let transactional = self.mode == TxMode::Transaction;
        let base = match self.lock_caps {
            // The lock decides how far the queue excludes and what a dead holder leaves.
            Some(lock) => lock.fences(lock.fences && transactional),
            None => Capabilities::new(Scope::Threads, HolderDeath::SameProcess),
        };
        base.transactional(transactional)
            .reruns_op(self.group_commit)
    }

    fn run_with<T, E, F>(&self, keys: &[Key], wait: Wait, op: F) -> Result<T, Error<E>>
    where
        F: FnMut(&mut Ctx<'_, C::Resource>) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: Send + Sync + 'static,
    {
        let keys = sorted_keys(keys).map_err(Error::widen)?;
        let deadline = wait.deadline(self.timeout).map_err(Error::widen)?;
        let ticket = self.enqueue(keys, deadline, SendMode::Until(deadline), op)?;
        // The deadline bounds the wait to start; once started, the op runs to the end.
        let deadline = ticket.deadline;
        ticket.wait_inner(deadline, true)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Queued,
    Started,
    Cancelled,
    Done,
}

struct SlotState<T, E> {
    phase: Phase,
    result: Option<Result<T, Error<E>>>,
    waker: Option<Waker>,
    /// The ticket sleeps on the condvar: only then does an answer need a wake-up.
    sleeping: bool,
    /// When the worker answered.
    finished_at: Option<Instant>,
    /// The wake chain of the commit that answered this ticket, which its caller helps
    /// along once it has its answer.
    chain: Option<Arc<WakeChain>>,
}

/// Where the worker leaves a job's result for its ticket.
struct Slot<T, E> {
    state: Mutex<SlotState<T, E>>,
    done: Condvar,
    /// Set once the result is in `state`, for a caller spinning without the mutex.
    finished: AtomicBool,
}

impl<T, E> Slot<T, E> {
    fn new() -> Self {
        Slot {
            state: Mutex::new(SlotState {
                phase: Phase::Queued,
                result: None,
                waker: None,
                sleeping: false,
                finished_at: None,
                chain: None,
            }),
            done: Condvar::new(),
            finished: AtomicBool::new(false),
        }
    }

    fn lock(&self) -> MutexGuard<'_, SlotState<T, E>> {
        // No user code runs under this mutex.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Answers the ticket and wakes it at once.
    fn finish(&self, result: Result<T, Error<E>>) {
        if self.publish(result, None) {
            self.done.notify_all();
        }
    }

    /// Answers the ticket, leaving it `chain` to help along; true when the ticket sleeps
    /// on the condvar and still has to be woken. A waiting future is woken at once.
    fn publish(&self, result: Result<T, Error<E>>, chain: Option<&Arc<WakeChain>>) -> bool {
        let mut state = self.lock();
        state.phase = Phase::Done;
        state.result = Some(result);
        state.finished_at = Some(Instant::now());
        state.chain = chain.cloned();
        let waker = state.waker.take();
        let sleeping = state.sleeping;
        drop(state);
        self.finished.store(true, Ordering::Release);
        if let Some(waker) = waker {
            waker.wake();
        }
        sleeping
    }
}

/// A ticket sleeping for its answer, as the worker hands it to a [`WakeChain`].
trait Sleeper: Send + Sync {
    /// Wakes the ticket, whose answer is already in its slot.
    fn wake_up(&self);
}

impl<T: Send, E: Send> Sleeper for Slot<T, E> {
    fn wake_up(&self) {
        self.done.notify_all();
    }
}

/// How many sleepers the worker wakes itself after a commit, and how many more each
/// woken caller wakes before it returns.
const WAKE_FANOUT: usize = 2;

/// The callers one commit answered that sleep for their answer. Waking a thread is a
/// system call, and often a preemption of the waker: done by the worker, one per caller,
/// before it looks for more work, it is most of the worker's time per op without
/// `fsync`, and the next batch waits for it. So the worker wakes only the first
/// [`WAKE_FANOUT`]; every caller, once it has its answer, wakes the next [`WAKE_FANOUT`]
/// before it returns (a tree: a batch of 64 is awake after six rounds). The worker goes on
/// to the next batch as soon as anything is queued, and until then wakes the rest one by
/// one itself rather than spin. Every answer is in its slot before the first wake, so no
/// caller hears back before its commit. Whoever is still asleep when the worker is about
/// to sleep itself, or has committed again, the worker wakes at once.
struct WakeChain {
    /// Set once every ticket of the commit has its answer.
    sleepers: OnceLock<Vec<Arc<dyn Sleeper>>>,
    /// The next sleeper to wake.
    next: AtomicUsize,
}

impl WakeChain {
    fn new() -> Self {
        WakeChain {
            sleepers: OnceLock::new(),
            next: AtomicUsize::new(0),
        }
    }

    /// Wakes up to `n` sleepers not woken yet; false once none is left.
    fn wake(&self, n: usize) -> bool {
        let Some(sleepers) = self.sleepers.get() else {
            return false;
        };
        for _ in 0..n {
            let at = self.next.fetch_add(1, Ordering::AcqRel);
            match sleepers.get(at) {
                Some(sleeper) => sleeper.wake_up(),
                None => return false,
            }
        }
        true
    }
}

/// Hands answers to callers: the worker's, or with an overlapped flush the flushing
/// thread's. Answers given between two [`wake_answered`](Self::wake_answered) calls share
/// one [`WakeChain`] if [`open_chain`](Self::open_chain) started one for them.
struct Answers<C: Transact> {
    shared: Arc<Shared<C>>,
    /// The wake chain started for the next answers, and the callers answered since the
    /// last wake-up that sleep.
    chain: Option<Arc<WakeChain>>,
    sleepers: Vec<Arc<dyn Sleeper>>,
    /// The last chain handed to callers, until it is known to be done.
    woken: Option<Arc<WakeChain>>,
}

impl<C: Transact> Answers<C> {
    fn new(shared: Arc<Shared<C>>) -> Self {
        Answers {
            shared,
            chain: None,
            sleepers: Vec::new(),
            woken: None,
        }
    }

    /// Lets the answers given before the next wake-up share the wake-ups (a chain that
    /// turns out too small to share them is never used).
    fn open_chain(&mut self) {
        self.chain = Some(Arc::new(WakeChain::new()));
    }

    /// Answers a job. It leaves the count of jobs in flight first, so that its caller,
    /// once woken, finds the queue idle if nothing else is queued.
    fn deliver(&mut self, job: &mut dyn Job<C>) {
        self.shared.in_flight.fetch_sub(1, Ordering::AcqRel);
        if let Some(sleeper) = job.deliver(self.chain.as_ref()) {
            self.sleepers.push(sleeper);
        }
    }

    /// Wakes the callers answered since the last call (see [`WakeChain`]): a few itself,
    /// the rest through each other if a chain was opened for them. First it wakes
    /// whoever the previous chain left asleep, should a woken caller have been slow to
    /// pass the wake-ups on.
    fn wake_answered(&mut self) {
        if let Some(previous) = self.woken.take() {
            previous.wake(usize::MAX);
        }
        let sleepers = std::mem::take(&mut self.sleepers);
        match self.chain.take() {
            Some(chain) if sleepers.len() > WAKE_FANOUT => {
                if chain.sleepers.set(sleepers).is_ok() {
                    chain.wake(WAKE_FANOUT);
                    self.woken = Some(chain);
                }
            }
            // Too few to share the work.
            _ => {
                for sleeper in sleepers {
                    sleeper.wake_up();
                }
            }
        }
    }

    /// Wakes one more caller the last chain left asleep; false once none is left.
    fn wake_one(&mut self) -> bool {
        match &self.woken {
            Some(chain) if chain.wake(1) => true,
            _ => {
                self.woken = None;
                false
            }
        }
    }
}

/// Answers that wait for a flush, as the worker hands them to the flushing thread.
struct Unflushed<C: Transact> {
    jobs: Vec<Box<dyn Job<C>>>,
    /// What makes the commits before them durable, in order: none when no op ran since
    /// the last flush was asked for, two when the resource was replaced meanwhile.
    flushes: Vec<Arc<dyn Flush>>,
}

/// The worker's side of an overlapped flush (see [`QueueBuilder::overlap_flush`]).
struct Syncer<C: Transact> {
    sender: Option<Sender<Unflushed<C>>>,
    thread: Option<JoinHandle<()>>,
    /// Makes the worker's resource's commits durable; `None` after a reconnect to a
    /// resource that could not defer its flush (it commits durably itself).
    flush: Option<Arc<dyn Flush>>,
    /// The replaced resource's flush, after a reconnect: the next answers may stand on
    /// its commits (a batch that committed before its connection broke), so they wait for
    /// it too, and its failure (which every later call repeats) reaches them.
    replaced: Option<Arc<dyn Flush>>,
    /// Jobs answered since the last hand-over.
    unflushed: Vec<Box<dyn Job<C>>>,
    /// An op ran since the last hand-over: something may have committed.
    dirty: bool,
    /// Set by the flushing thread when a flush failed: the resource must be reopened.
    failed: Arc<AtomicBool>,
    /// Hand-overs the flushing thread has not answered yet.
    handed_over: Arc<AtomicUsize>,
}

/// Switches `resource` to deferred flushes if it can; a resource that cannot (or fails
/// to switch, which leaves it as it was) commits durably itself.
fn defer_flush<C: Transact>(connect: &C, resource: &mut C::Resource) -> Option<Arc<dyn Flush>> {
    match catch_unwind(AssertUnwindSafe(|| connect.defer_flush(resource))) {
        Ok(Ok(Some(flush))) => Some(Arc::from(flush)),
        _ => None,
    }
}

impl<C: Transact> Syncer<C> {
    /// Starts the flushing thread and switches `resource` to deferred flushes; `None` when
    /// the resource cannot defer them (or no thread could be started).
    fn start(connect: &C, resource: &mut C::Resource, shared: &Arc<Shared<C>>) -> Option<Self> {
        let (sender, receiver) = crossbeam_channel::unbounded();
        let failed = Arc::new(AtomicBool::new(false));
        let answers = Answers::new(shared.clone());
        let handed_over = Arc::new(AtomicUsize::new(0));
        let (thread_failed, thread_handed_over) = (failed.clone(), handed_over.clone());
        let thread = std::thread::Builder::new()
            .name(format!("turnstile-queue-{}-flush", shared.id))
            .spawn(move || {
                flush_and_answer(&receiver, answers, &thread_failed, &thread_handed_over)
            })
            .ok()?;
        let _ = shared.flush_thread.set(thread.thread().id());
        let Some(flush) = defer_flush(connect, resource) else {
            drop(sender);
            let _ = thread.join();
            return None;
        };
        Some(Syncer {
            sender: Some(sender),
            thread: Some(thread),
            flush: Some(flush),
            replaced: None,
            unflushed: Vec::new(),
            dirty: false,
            failed,
            handed_over,
        })
    }

    /// Hands the jobs answered since the last hand-over to the flushing thread.
    fn send(&mut self) {
        if !self.unflushed.is_empty() {
            self.hand_over();
        }
    }

    /// Like [`send`](Self::send), and asks for a flush even with no job to answer, if an
    /// op ran since the last one: before the resource is replaced.
    fn send_flush(&mut self) {
        if self.dirty || !self.unflushed.is_empty() {
            self.hand_over();
        }
    }

    fn hand_over(&mut self) {
        let flushes = self
            .replaced
            .take()
            .into_iter()
            .chain(self.flush_now())
            .collect();
        let unflushed = Unflushed {
            jobs: std::mem::take(&mut self.unflushed),
            flushes,
        };
        if let Some(sender) = &self.sender {
            self.handed_over.fetch_add(1, Ordering::AcqRel);
            // Should the flushing thread be gone, the jobs drop unanswered, and each tells
            // its caller that the outcome is not known.
            if sender.send(unflushed).is_err() {
                self.handed_over.fetch_sub(1, Ordering::AcqRel);
            }
        }
    }

    /// The flush the jobs answered since the last hand-over wait for, if an op ran since.
    fn flush_now(&mut self) -> Option<Arc<dyn Flush>> {
        if std::mem::take(&mut self.dirty) {
            self.flush.clone()
        } else {
            None
        }
    }

    /// Whether the flushing thread has answered everything handed over to it, and no
    /// replaced resource's flush waits to be repeated.
    fn idle(&self) -> bool {
        self.replaced.is_none() && self.handed_over.load(Ordering::Acquire) == 0
    }

    /// Whether a flush failed since the last call.
    fn take_failure(&self) -> bool {
        self.failed.swap(false, Ordering::AcqRel)
    }
}

impl<C: Transact> Drop for Syncer<C> {
    fn drop(&mut self) {
        self.send();
        drop(self.sender.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The flushing thread: flushes what the worker hands over, then answers it; meanwhile
/// the worker runs the next batch. One flush serves everything handed over while the
/// last one ran.
fn flush_and_answer<C: Transact>(
    receiver: &Receiver<Unflushed<C>>,
    mut answers: Answers<C>,
    failed: &AtomicBool,
    handed_over: &AtomicUsize,
) {
    loop {
        // Until more comes, wake the last answers' callers one by one.
        let first = loop {
            match receiver.try_recv() {
                Ok(unflushed) => break Some(unflushed),
                Err(TryRecvError::Disconnected) => break None,
                Err(TryRecvError::Empty) => {}
            }
            if !answers.wake_one() {
                break receiver.recv().ok();
            }
        };
        let Some(first) = first else {
            break;
        };
        let mut ready = Vec::new();
        let mut waiting = Vec::new();
        let mut pending: Option<Arc<dyn Flush>> = None;
        let mut lost = false;
        let mut taken = 0;
        for unflushed in std::iter::once(first).chain(receiver.try_iter()) {
            taken += 1;
            for flush in unflushed.flushes {
                // A flush covers every earlier commit of its resource; a new resource's
                // turn comes after the old one's flush, and once one failed, nothing
                // after it in this round is vouched for.
                if let Some(old) = pending.take_if(|old| !Arc::ptr_eq(old, &flush)) {
                    settle(&*old, &mut waiting, &mut ready, &mut lost, failed);
                }
                pending = Some(flush);
            }
            waiting.extend(unflushed.jobs);
        }
        match pending {
            Some(flush) => settle(&*flush, &mut waiting, &mut ready, &mut lost, failed),
            None => ready.append(&mut waiting),
        }
        answers.open_chain();
        for mut job in ready {
            answers.deliver(&mut *job);
            // Dropping the job drops what its op owns; a panic there must not take this
            // thread, and the answers after it, down.
            let _ = catch_unwind(AssertUnwindSafe(move || drop(job)));
        }
        handed_over.fetch_sub(taken, Ordering::AcqRel);
        answers.wake_answered();
    }
    answers.wake_answered();
}

/// Flushes, and moves the jobs waiting for it to `ready`. If it fails (or one before it
/// did), their commits may not be durable: a job that succeeded gets
/// [`Error::Indeterminate`].
fn settle<C: Transact>(
    flush: &dyn Flush,
    waiting: &mut Vec<Box<dyn Job<C>>>,
    ready: &mut Vec<Box<dyn Job<C>>>,
    lost: &mut bool,
    failed: &AtomicBool,
) {
    let flushed = !*lost && matches!(catch_unwind(AssertUnwindSafe(|| flush.flush())), Ok(Ok(())));
    if !flushed {
        *lost = true;
        failed.store(true, Ordering::Release);
        for job in waiting.iter_mut() {
            job.indeterminate();
        }
    }
    ready.append(waiting);
}

/// The result of a queued op, to wait on or to `.await`.
///
/// Dropping a ticket before its op started cancels the op: it never runs.
#[must_use = "dropping a ticket cancels its op unless it has started"]
pub struct Ticket<T, E> {
    slot: Arc<Slot<T, E>>,
    since: Instant,
    /// The deadline the op must start by.
    deadline: Option<Instant>,
    /// The queue's estimate of a lone op's round trip, when the queue was idle as this
    /// op was queued: the caller spins for the result if the estimate says it comes soon,
    /// and adds its own round trip to the estimate.
    solo: Option<Arc<AtomicU64>>,
}

impl<T, E> Ticket<T, E> {
    /// Waits for the op's result, however long it takes. (The op still had to start
    /// within the deadline it was submitted with.)
    ///
    /// # Errors
    /// What the op run gave: [`Error::Op`], [`Error::Timeout`] if it could not start in
    /// time, [`Error::Panicked`], a resource failure, …
    pub fn wait(self) -> Result<T, Error<E>> {
        self.wait_inner(None, false)
    }

    /// Waits at most `timeout` for the result.
    ///
    /// # Errors
    /// As [`Ticket::wait`]; [`Error::Timeout`] when the op had not started by then (it is
    /// cancelled and never runs), [`Error::Indeterminate`] when it had (it may still
    /// commit).
    pub fn wait_timeout(self, timeout: Duration) -> Result<T, Error<E>> {
        let deadline = Instant::now().checked_add(timeout);
        self.wait_inner(deadline, false)
    }

    /// Waits until `deadline` at most for the result.
    ///
    /// # Errors
    /// As [`Ticket::wait_timeout`].
    pub fn wait_deadline(self, deadline: Instant) -> Result<T, Error<E>> {
        self.wait_inner(Some(deadline), false)
    }

    /// Cancels the op if it has not started; returns whether it was cancelled (then it
    /// never runs).
    pub fn cancel(self) -> bool {
        let mut state = self.slot.lock();
        if state.phase == Phase::Queued {
            state.phase = Phase::Cancelled;
            true
        } else {
            false
        }
    }

    /// Whether the op has started (or already finished, or was answered without running).
    pub fn is_started(&self) -> bool {
        self.slot.lock().phase != Phase::Queued
    }

    /// Whether the op is done: its result is ready (or was taken by polling the ticket
    /// as a future).
    pub fn is_finished(&self) -> bool {
        self.slot.lock().phase == Phase::Done
    }

    /// With `then_forever`, a deadline that passes after the op started keeps waiting
    /// (a blocking `run`); without, it gives up with `Indeterminate`.
    fn wait_inner(mut self, deadline: Option<Instant>, then_forever: bool) -> Result<T, Error<E>> {
        let solo = self.solo.take();
        let (result, finished_at) = self.wait_result(solo.as_deref(), deadline, then_forever);
        if let (Some(solo), Some(at)) = (solo, finished_at) {
            // Up to the worker's answer, not the caller's wake-up, which would keep an
            // estimate made while sleeping above the spin forever. Capped, so one slow op
            // moves the average only a little.
            let took = at
                .saturating_duration_since(self.since)
                .min(CALLER_SPIN * 4);
            let took = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
            let old = solo.load(Ordering::Relaxed);
            solo.store(old - old / 4 + took / 4, Ordering::Relaxed);
        }
        result
    }

    /// The result, and when the worker answered (if it did).
    fn wait_result(
        &self,
        solo: Option<&AtomicU64>,
        deadline: Option<Instant>,
        then_forever: bool,
    ) -> (Result<T, Error<E>>, Option<Instant>) {
        if solo.is_some_and(worth_spinning) {
            let until = Instant::now() + CALLER_SPIN;
            let mut spins = 0u32;
            // The flag after every pause: the answer is seen within one pause of its
            // coming (tens of nanoseconds), not a whole round of them (over a microsecond
            // for 64 on some CPUs, paid on every op). The clock only now and then.
            while !self.slot.finished.load(Ordering::Acquire) {
                std::hint::spin_loop();
                spins = spins.wrapping_add(1);
                if spins.is_multiple_of(SPINS_PER_CLOCK) && Instant::now() >= until {
                    break;
                }
            }
        }
        let mut state = self.slot.lock();
        state.sleeping = true;
        let mut deadline = deadline;
        let result = loop {
            if let Some(result) = state.result.take() {
                break result;
            }
            if state.phase == Phase::Done {
                // Polled to completion as a future: the answer is gone, and no other
                // will come.
                break Err(Error::Config(
                    "a queue ticket was waited on after it was polled to completion".into(),
                ));
            }
            state = match deadline {
                None => self
                    .slot
                    .done
                    .wait(state)
                    .unwrap_or_else(|p| p.into_inner()),
                Some(at) => {
                    let now = Instant::now();
                    if now >= at {
                        match state.phase {
                            Phase::Queued | Phase::Cancelled => {
                                state.phase = Phase::Cancelled;
                                break Err(Error::Timeout {
                                    waited: self.since.elapsed(),
                                });
                            }
                            _ if then_forever => {
                                deadline = None;
                                continue;
                            }
                            _ => break Err(Error::Indeterminate),
                        }
                    }
                    self.slot
                        .done
                        .wait_timeout(state, at - now)
                        .unwrap_or_else(|p| p.into_inner())
                        .0
                }
            };
        };
        // Not asleep any more: a later answer (after a timeout) needs no wake-up.
        state.sleeping = false;
        let finished_at = state.finished_at;
        let chain = state.chain.take();
        drop(state);
        if let Some(chain) = chain {
            chain.wake(WAKE_FANOUT);
        }
        (result, finished_at)
    }
}

impl<T, E> Drop for Ticket<T, E> {
    fn drop(&mut self) {
        let mut state = self.slot.lock();
        if state.phase == Phase::Queued {
            state.phase = Phase::Cancelled;
        }
        let chain = state.chain.take();
        drop(state);
        if let Some(chain) = chain {
            chain.wake(WAKE_FANOUT);
        }
    }
}

impl<T, E> Future for Ticket<T, E> {
    type Output = Result<T, Error<E>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = self.slot.lock();
        if let Some(result) = state.result.take() {
            let chain = state.chain.take();
            drop(state);
            if let Some(chain) = chain {
                chain.wake(WAKE_FANOUT);
            }
            return Poll::Ready(result);
        }
        if state.phase == Phase::Done {
            return Poll::Ready(Err(Error::Config(
                "a queue ticket was polled again after it completed".into(),
            )));
        }
        match &state.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => state.waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

impl<T, E> std::fmt::Debug for Ticket<T, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ticket")
            .field("phase", &self.slot.lock().phase)
            .finish()
    }
}

/// How an op's run went, for the worker's transaction handling.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ran {
    Ok,
    Failed,
    Panicked,
}

/// A queued op, type-erased for the channel.
trait Job<C: Transact>: Send {
    /// Claims the job for running. False when its ticket cancelled it, or its start
    /// deadline passed (then it is answered with a timeout).
    fn start(&mut self) -> bool;
    /// The deadline the caller asked to start by (for a zero timeout, the instant it
    /// called): how long the worker may wait for its batch lock on the job's behalf.
    fn start_deadline(&self) -> Option<Instant>;
    /// While the worker waits for its batch lock: true when the job will not run, because
    /// its ticket cancelled it or its start deadline passed (then it is answered with a
    /// timeout).
    fn expire(&mut self, now: Instant) -> bool;
    /// The chain of queues the submitter was running on.
    fn chain(&self) -> Option<&Arc<[u64]>>;
    /// Runs the op once under `fence`, keeping the result to deliver later.
    fn run(&mut self, connect: &C, resource: &mut C::Resource, fence: Option<Fence>)
    -> (Ran, bool);
    /// Replaces the kept result with a strategy failure.
    fn fail(&mut self, error: StrategyError);
    /// Replaces a kept success with [`Error::Indeterminate`]: its commit may be lost.
    fn indeterminate(&mut self);
    /// Hands the kept result to the ticket, leaving it `chain` to help along; returns the
    /// ticket if it sleeps and must be woken.
    fn deliver(&mut self, chain: Option<&Arc<WakeChain>>) -> Option<Arc<dyn Sleeper>>;
}

/// An op as a task owns it: dropped (on the worker or the flushing thread, whichever
/// drops the task) so that a panic in what it captured (a value's `Drop`) cannot take that
/// thread, and every answer after it, down.
struct OwnedOp<F>(Option<F>);

impl<F> Drop for OwnedOp<F> {
    fn drop(&mut self) {
        let op = self.0.take();
        let _ = catch_unwind(AssertUnwindSafe(move || drop(op)));
    }
}

struct Task<C: Transact, T, E, F> {
    slot: Arc<Slot<T, E>>,
    op: OwnedOp<F>,
    keys: Vec<Key>,
    /// The deadline the worker must claim the job by (`None` for a zero-timeout call
    /// that found the queue idle).
    deadline: Option<Instant>,
    start_deadline: Option<Instant>,
    since: Instant,
    chain: Option<Arc<[u64]>>,
    pending: Option<Result<T, Error<E>>>,
    attempts: u32,
    delivered: bool,
    _connect: PhantomData<fn(&C)>,
}

impl<C, T, E, F> Job<C> for Task<C, T, E, F>
where
    C: Transact,
    F: FnMut(&mut Ctx<'_, C::Resource>) -> Result<T, E> + Send + 'static,
    T: Send + 'static,
    E: Send + Sync + 'static,
{
    fn start(&mut self) -> bool {
        let mut state = self.slot.lock();
        if state.phase != Phase::Queued {
            return false;
        }
        if self.deadline.is_some_and(|at| Instant::now() >= at) {
            drop(state);
            self.delivered = true;
            self.slot.finish(Err(Error::Timeout {
                waited: self.since.elapsed(),
            }));
            return false;
        }
        state.phase = Phase::Started;
        true
    }

    fn start_deadline(&self) -> Option<Instant> {
        self.start_deadline
    }

    fn expire(&mut self, now: Instant) -> bool {
        let state = self.slot.lock();
        if state.phase != Phase::Queued {
            return true;
        }
        if self.start_deadline.is_some_and(|at| now >= at) {
            drop(state);
            self.delivered = true;
            self.slot.finish(Err(Error::Timeout {
                waited: self.since.elapsed(),
            }));
            return true;
        }
        false
    }

    fn chain(&self) -> Option<&Arc<[u64]>> {
        self.chain.as_ref()
    }

    fn run(
        &mut self,
        connect: &C,
        resource: &mut C::Resource,
        fence: Option<Fence>,
    ) -> (Ran, bool) {
        self.attempts += 1;
        let (keys, op, attempt, deadline) =
            (&self.keys, &mut self.op, self.attempts, self.deadline);
        let result = catch_unwind(AssertUnwindSafe(|| {
            let mut ctx = Ctx::new(&mut *resource, keys)
                .with_attempt(attempt)
                .with_deadline(deadline)
                .with_fence(fence);
            let op =
                op.0.as_mut()
                    .expect("a task's op is there until the task drops");
            op(&mut ctx)
        }));
        let (ran, broken, result) = match result {
            Ok(Ok(value)) => (Ran::Ok, false, Ok(value)),
            Ok(Err(e)) => {
                let broken = connect.is_broken(resource, &e);
                (Ran::Failed, broken, Err(Error::Op(e)))
            }
            // A panic may hide a broken connection (a read that timed out), whose next
            // statement would read the late answer as its own.
            Err(payload) => (
                Ran::Panicked,
                !connect.survives_panic(resource),
                Err(Error::Panicked(panic_message(&*payload))),
            ),
        };
        self.pending = Some(result);
        (ran, broken)
    }

    fn fail(&mut self, error: StrategyError) {
        self.pending = Some(Err(error.widen()));
    }

    fn indeterminate(&mut self) {
        if matches!(self.pending, Some(Ok(_))) {
            self.pending = Some(Err(Error::Indeterminate));
        }
    }

    fn deliver(&mut self, chain: Option<&Arc<WakeChain>>) -> Option<Arc<dyn Sleeper>> {
        self.delivered = true;
        let result = self.pending.take().unwrap_or(Err(Error::Indeterminate));
        let sleeping = self.slot.publish(result, chain);
        sleeping.then(|| self.slot.clone() as Arc<dyn Sleeper>)
    }
}

impl<C: Transact, T, E, F> Drop for Task<C, T, E, F> {
    fn drop(&mut self) {
        if self.delivered {
            return;
        }
        // Dropped unanswered: the queue shut down under it, or the worker died.
        let phase = self.slot.lock().phase;
        match phase {
            Phase::Queued => self.slot.finish(Err(Error::Closed)),
            Phase::Started => self.slot.finish(Err(Error::Indeterminate)),
            Phase::Cancelled | Phase::Done => {}
        }
    }
}

/// What the worker does to an op's savepoint.
#[derive(Clone, Copy)]
enum SavepointStep {
    Set,
    Release,
    RollBackTo,
}

/// Why the worker ran nothing on its resource.
const BROKEN: &str = "the connection broke earlier; nothing more is run on it";

/// How a group commit's loop stopped early.
enum Stop<C: Transact> {
    /// The transaction ended under the op: true when the op ended it (or may have: it
    /// committed, or it returned `Ok` with nothing left to commit); false when it failed
    /// and the resource rolled the transaction back ([`Transact::tx_counts`]).
    Ended(Box<dyn Job<C>>, bool),
    /// The op's savepoint could not be set; the op had not run.
    Savepoint(Box<dyn Job<C>>),
    /// The op ran but its savepoint could not be released or rolled back to: maybe the
    /// op ended the transaction where [`Transact::in_transaction`] cannot see it (a
    /// database server), maybe the resource failed (the op's own failure may have broken
    /// it).
    Kept(Box<dyn Job<C>>),
}

/// Marks the queue closed when the worker exits, and after a panic in the resource's own
/// code answers the jobs left in the channel (each as it drops) and shuts the gate.
struct ClosedOnExit<C: Transact> {
    shared: Arc<Shared<C>>,
    receiver: Receiver<Box<dyn Job<C>>>,
}

impl<C: Transact> Drop for ClosedOnExit<C> {
    fn drop(&mut self) {
        self.shared.closed.store(true, Ordering::Release);
        loop {
            // Draining lets submitters blocked on a full channel finish their send.
            while self.receiver.try_recv().is_ok() {}
            match self.shared.gate.try_write() {
                Ok(mut gate) => {
                    gate.take();
                    break;
                }
                Err(std::sync::TryLockError::Poisoned(gate)) => {
                    gate.into_inner().take();
                    break;
                }
                Err(std::sync::TryLockError::WouldBlock) => std::thread::yield_now(),
            }
        }
        while self.receiver.try_recv().is_ok() {}
    }
}

/// The worker thread's state: it owns the resource.
struct Worker<C: Transact> {
    connect: Arc<C>,
    resource: C::Resource,
    receiver: Receiver<Box<dyn Job<C>>>,
    shared: Arc<Shared<C>>,
    mode: TxMode,
    group_commit: bool,
    max_batch: usize,
    own_chain: Arc<[u64]>,
    spin: Duration,
    batch_seq: u64,
    marker: Box<[u8]>,
    broken: bool,
    /// The cross-process lock taken once per batch, if any.
    lock: Option<Arc<dyn BatchLock>>,
    lock_name: LockName,
    /// The lock's backend id and the lock name's bytes, as the resource records fences.
    fence_backend: Arc<str>,
    fence_name: Arc<[u8]>,
    /// The lease of the batch running now.
    lease: Option<Box<dyn BatchLease>>,
    /// When the batch running now stops starting ops.
    hold_until: Option<Instant>,
    /// Ops claimed under the lease held now.
    started_in_hold: usize,
    max_hold: Duration,
    handoff_pause: Duration,
    handoff_interval: Duration,
    /// When the last lease was released.
    released_at: Option<Instant>,
    /// When this process's turn with the lock began: at its last hand-off pause, or when
    /// it last had to wait for the lock (someone else had a turn).
    turn_started: Option<Instant>,
    /// About the shortest time an acquire took: an acquire well over it waited for
    /// another holder.
    fast_acquire: Duration,
    /// Answers the worker gives itself (those go through `syncer` if there is one).
    answers: Answers<C>,
    /// With an overlapped flush: the thread that flushes commits and then answers.
    syncer: Option<Syncer<C>>,
    /// When the last jobs ran: a resource idle for long is checked before the next.
    last_ran: Instant,
    /// How a batch waits for callers on their way back before it commits; `None` when
    /// it does not ([`QueueBuilder::gather`]).
    gather: Option<Gather>,
    /// Why the resource could not be reopened, while it is broken.
    reopen_error: Option<String>,
}

impl<C: Transact> Worker<C> {
    fn serve(mut self) {
        // Should the worker die (a panic in the resource's own code), submitters must see
        // a closed queue; its queued jobs are answered as they are dropped.
        let _closed_on_exit = ClosedOnExit {
            shared: self.shared.clone(),
            receiver: self.receiver.clone(),
        };
        // Jobs taken from the channel and not run yet; with a lock, those a batch left
        // for the next lease.
        let mut batch: Vec<Box<dyn Job<C>>> = Vec::new();
        loop {
            if batch.is_empty() {
                match self.next_job() {
                    Some(first) => batch.push(first),
                    None => break,
                }
            }
            if self.lock.is_none() {
                self.run_jobs(&mut batch);
                continue;
            }
            self.hand_off();
            if !self.take_lock(&mut batch) {
                continue;
            }
            self.run_jobs(&mut batch);
            self.release_lock();
        }
        self.wake_answered();
        // Every answer out before the resource closes.
        drop(self.syncer.take());
        self.forget_marker();
    }

    /// Deletes the batch marker's record, which no batch will present again, and closes
    /// the resource. Best effort, and bounded: it runs on a thread of its own, waited on
    /// for at most [`FORGET_MARKER_WAIT`], so that a server that stopped answering
    /// cannot hold up `close`; the row then stays behind.
    fn forget_marker(self) {
        if self.batch_seq == 0 || self.broken {
            return;
        }
        let (connect, mut resource, marker) = (self.connect, self.resource, self.marker);
        let (done_tx, done) = crossbeam_channel::bounded::<()>(1);
        let forget = move || {
            let _ = catch_unwind(AssertUnwindSafe(|| {
                connect.forget_fence(&mut resource, MARKER_BACKEND, &marker)
            }));
            let _ = done_tx.send(());
            drop(resource);
        };
        if std::thread::Builder::new()
            .name("turnstile-queue-close".to_owned())
            .spawn(forget)
            .is_ok()
        {
            let _ = done.recv_timeout(FORGET_MARKER_WAIT);
        }
    }

    /// Before taking the lock again right after releasing it: once a turn has lasted a
    /// hand-off interval, lets the pause since the release run out. Barging straight back
    /// every time would starve waiters in other processes, which need a moment to notice
    /// a release (a message, a poll); pausing every time would leave the lock idle when
    /// nobody waits.
    fn hand_off(&mut self) {
        let Some(released) = self.released_at else {
            return;
        };
        let now = Instant::now();
        if self
            .turn_started
            .is_some_and(|at| now.duration_since(at) < self.handoff_interval)
        {
            return;
        }
        let until = released + self.handoff_pause;
        if now < until {
            std::thread::sleep(until - now);
        }
        self.turn_started = Some(Instant::now());
    }

    /// Notes how long an acquire took. One well over the fastest seen waited for another
    /// process's turn, so this process's own turn starts now: a process that waited long
    /// must not have to hand the lock back after a single batch.
    fn acquired_after(&mut self, took: Duration) {
        // Drifts up slowly, so one lucky fast acquire does not make every later one look
        // contended.
        self.fast_acquire = took.min(self.fast_acquire.saturating_add(self.fast_acquire / 64));
        if took
            > self
                .fast_acquire
                .saturating_mul(2)
                .saturating_add(CONTENDED_ACQUIRE)
        {
            self.turn_started = Some(Instant::now());
        }
    }

    /// Adds queued jobs to `batch`, up to the batch size, when ops share a transaction or
    /// a lease.
    fn top_up(&self, batch: &mut Vec<Box<dyn Job<C>>>) {
        if !self.group_commit && self.lock.is_none() {
            return;
        }
        while batch.len() < self.max_batch {
            match self.receiver.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
    }

    /// Runs the jobs of `batch` (under the lease, if any); those the lease's hold left
    /// unstarted stay in `batch`.
    fn run_jobs(&mut self, batch: &mut Vec<Box<dyn Job<C>>>) {
        // A server may have closed an idle connection where the client cannot see it.
        if !self.broken
            && self.last_ran.elapsed() >= crate::pool::CHECK_ALIVE_AFTER
            && !self.connect.is_alive(&mut self.resource)
        {
            self.reconnect();
        }
        self.top_up(batch);
        if !self.usable() {
            for mut job in std::mem::take(batch) {
                if self.claim(&mut *job) {
                    job.fail(self.unusable());
                    self.deliver(job);
                }
            }
            self.wake_answered();
            return;
        }
        // One job alone is worth a batch when a crowd submits: more may come while it runs.
        if self.group_commit && (batch.len() > 1 || self.shared.crowd.callers() > 1) {
            self.run_batch(batch);
        } else {
            self.shared.crowd.saw(batch.len());
            let mut jobs = std::mem::take(batch).into_iter();
            for job in jobs.by_ref() {
                if !self.may_start() {
                    batch.push(job);
                    break;
                }
                self.run_alone(job);
            }
            batch.extend(jobs);
        }
        self.wake_answered();
        if self.broken || self.syncer.as_ref().is_some_and(Syncer::take_failure) {
            self.reconnect();
        }
        self.last_ran = Instant::now();
    }

    /// Takes the batch lock for the jobs in `batch`. It waits in slices, dropping between
    /// them the jobs whose callers stopped waiting, for as long as some caller still waits
    /// to start (a caller with a zero timeout gets one try). False when no job is left to
    /// run: each was cancelled, timed out, or was answered with the lock's error.
    fn take_lock(&mut self, batch: &mut Vec<Box<dyn Job<C>>>) -> bool {
        let Some(lock) = self.lock.clone() else {
            return true;
        };
        loop {
            self.top_up(batch);
            let now = Instant::now();
            // The latest instant a caller still waits to start by; none if one waits forever.
            let latest = batch.iter().try_fold(now, |latest, job| {
                job.start_deadline().map(|d| latest.max(d))
            });
            let slice = now + ACQUIRE_SLICE;
            let deadline = latest.map_or(slice, |latest| latest.min(slice));
            let started = Instant::now();
            match lock.acquire(&self.lock_name, Some(deadline)) {
                Ok(lease) => {
                    self.acquired_after(started.elapsed());
                    self.lease = Some(lease);
                    self.hold_until = Instant::now().checked_add(self.max_hold);
                    self.started_in_hold = 0;
                    return true;
                }
                Err(Error::Timeout { .. }) => {
                    let now = Instant::now();
                    let shared = &self.shared;
                    batch.retain_mut(|job| {
                        let gone = job.expire(now);
                        if gone {
                            shared.in_flight.fetch_sub(1, Ordering::AcqRel);
                        }
                        !gone
                    });
                    if batch.is_empty() {
                        return false;
                    }
                }
                Err(e) => {
                    let e = share(e);
                    for mut job in batch.drain(..) {
                        if self.claim(&mut *job) {
                            job.fail(copy_error(&e));
                            self.deliver(job);
                        }
                    }
                    self.wake_answered();
                    return false;
                }
            }
        }
    }

    fn release_lock(&mut self) {
        self.hold_until = None;
        if let Some(lease) = self.lease.take() {
            // A lease that was lost meanwhile changes nothing: its batch was rolled back.
            let _ = lease.release();
            self.released_at = Some(Instant::now());
        }
    }

    /// Whether the batch may start another op under its lease: every lease runs one op;
    /// more only while the hold lasts and the lease is still held.
    fn may_start(&self) -> bool {
        let Some(lease) = &self.lease else {
            return true;
        };
        self.started_in_hold == 0
            || (self.hold_until.is_none_or(|until| Instant::now() < until) && lease.check().is_ok())
    }

    /// The fence of the lease held now, if its backend issues one.
    fn fence(&self) -> Option<Fence> {
        self.lease.as_ref().and_then(|l| l.fence())
    }

    /// Why the lease held now must not commit, if it was lost.
    fn lease_lost(&self) -> Option<StrategyError> {
        self.lease.as_ref().and_then(|l| l.check().err())
    }

    /// The next job: spin briefly (adaptively) before parking, since a parked worker
    /// costs tens of microseconds to wake. `None` once the queue is closed and drained.
    fn next_job(&mut self) -> Option<Box<dyn Job<C>>> {
        match self.queued_or_wake() {
            Ok(job) => return Some(job),
            Err(TryRecvError::Disconnected) => return None,
            Err(TryRecvError::Empty) => {}
        }
        let start = Instant::now();
        let mut spins = 0u32;
        while self.shared.crowd.room_to_spin() {
            // A look at the channel's ends after every pause, so a job is picked up
            // within one pause of its sending; taken only once there is one.
            std::hint::spin_loop();
            if !self.receiver.is_empty() {
                match self.receiver.try_recv() {
                    Ok(job) => {
                        self.spin = (self.spin * 2).min(MAX_SPIN);
                        return Some(job);
                    }
                    Err(TryRecvError::Disconnected) => return None,
                    Err(TryRecvError::Empty) => {}
                }
            }
            spins = spins.wrapping_add(1);
            // A closed channel shows once the spin ends, in `recv` below.
            if spins.is_multiple_of(SPINS_PER_CLOCK) && start.elapsed() >= self.spin {
                break;
            }
        }
        self.spin = (self.spin / 2).max(MIN_SPIN);
        // About to sleep: nobody may be left asleep behind a slow caller's wake-ups.
        self.wake_answered();
        loop {
            if !self.shared.closing_on_worker.load(Ordering::Acquire) {
                return self.receiver.recv().ok();
            }
            // `close` was called by one of our own ops. Shut the gate once no submitter
            // is sending; until then keep draining so blocked senders get through.
            if let Ok(mut gate) = self.shared.gate.try_write() {
                gate.take();
            }
            match self.receiver.recv_timeout(Duration::from_millis(1)) {
                Ok(job) => return Some(job),
                Err(RecvTimeoutError::Disconnected) => return None,
                Err(RecvTimeoutError::Timeout) => {}
            }
        }
    }

    /// A job for the batch that began at `began` and has taken `taken` ops, from a caller
    /// on its way back, waited for as [`Gather`] allows; meanwhile the last commit's
    /// callers still asleep are woken one by one.
    fn gather_next(&mut self, began: Instant, taken: usize) -> Option<Box<dyn Job<C>>> {
        let gathered = self.gather.as_ref()?.until(began, taken)?;
        // Under a lease, not past its hold: a job that came later could not start.
        if !self.may_start() {
            return None;
        }
        let until = match (&self.lease, self.hold_until) {
            (Some(_), Some(hold)) => gathered.min(hold),
            _ => gathered,
        };
        match self.queued_or_wake() {
            Ok(job) => Some(job),
            Err(TryRecvError::Disconnected) => None,
            Err(TryRecvError::Empty) => match self.receiver.recv_deadline(until) {
                Ok(job) => Some(job),
                Err(RecvTimeoutError::Timeout) => {
                    // A wait the hold cut short says nothing of the estimate.
                    if let Some(gather) = self.gather.as_mut().filter(|_| until == gathered) {
                        gather.missed(taken);
                    }
                    None
                }
                Err(RecvTimeoutError::Disconnected) => None,
            },
        }
    }

    /// A job already queued. While there is none, wakes the last commit's callers still
    /// asleep one by one rather than spin, until one of them (or anyone) submits again:
    /// on few cores a spinning worker only takes a core from the callers it waits for.
    /// `Empty` once nobody is left to wake and nothing is queued.
    fn queued_or_wake(&mut self) -> Result<Box<dyn Job<C>>, TryRecvError> {
        loop {
            match self.receiver.try_recv() {
                Err(TryRecvError::Empty) if self.answers.wake_one() => {}
                taken => return taken,
            }
        }
    }

    /// Claims a job for running (see [`Job::start`]); one that will not run leaves the
    /// count of jobs in flight.
    fn claim(&mut self, job: &mut dyn Job<C>) -> bool {
        let claimed = job.start();
        if claimed {
            self.started_in_hold += 1;
        } else {
            self.shared.in_flight.fetch_sub(1, Ordering::AcqRel);
        }
        claimed
    }

    /// Answers a job; its caller is woken at the next [`wake_answered`](Self::wake_answered).
    /// With an overlapped flush, the answer waits for the flush that follows it.
    fn deliver(&mut self, mut job: Box<dyn Job<C>>) {
        match &mut self.syncer {
            Some(syncer) => syncer.unflushed.push(job),
            None => self.answers.deliver(&mut *job),
        }
    }

    /// Wakes the callers answered since the last call; with an overlapped flush, hands
    /// their answers to the flushing thread.
    fn wake_answered(&mut self) {
        let Some(syncer) = &mut self.syncer else {
            self.answers.wake_answered();
            return;
        };
        if !syncer.idle() || !self.receiver.is_empty() || self.shared.crowd.callers() > 1 {
            syncer.send();
            return;
        }
        // A lone caller: nothing to run meanwhile, nor to flush first. Flushing here saves
        // waking the flushing thread, which costs about as much as a fast flush.
        let mut waiting = std::mem::take(&mut syncer.unflushed);
        let mut ready = Vec::with_capacity(waiting.len());
        match syncer.flush_now() {
            Some(flush) => settle(
                &*flush,
                &mut waiting,
                &mut ready,
                &mut false,
                &syncer.failed,
            ),
            None => ready.append(&mut waiting),
        }
        self.answers.open_chain();
        for mut job in ready {
            self.answers.deliver(&mut *job);
        }
        self.answers.wake_answered();
    }

    /// Replaces the resource with a new one; false when opening it failed. The old one
    /// then stays, marked broken: nothing runs on it (a connection that timed out may
    /// still deliver a late answer, which the next statement would take for its own),
    /// and the next op tries to reopen it first.
    fn reconnect(&mut self) -> bool {
        match catch_unwind(AssertUnwindSafe(|| self.connect.connect())) {
            Ok(Ok(mut resource)) => {
                if let Some(syncer) = &mut self.syncer {
                    // What the old resource committed is flushed by its own flush, before
                    // any later answer goes out. Ops that ran on it and are not answered
                    // yet (a batch that broke its connection) wait for that flush too.
                    let unanswered = syncer.dirty;
                    syncer.send_flush();
                    let old = syncer.flush.take();
                    syncer.replaced = if unanswered { old } else { None };
                    syncer.flush = defer_flush(&*self.connect, &mut resource);
                }
                self.resource = resource;
                self.broken = false;
                self.reopen_error = None;
                true
            }
            Ok(Err(e)) => {
                self.broken = true;
                self.reopen_error = Some(e.to_string());
                false
            }
            Err(payload) => {
                self.broken = true;
                self.reopen_error =
                    Some(format!("connecting panicked: {}", panic_message(&*payload)));
                false
            }
        }
    }

    /// Whether the resource can be used: not broken, or reopened now. A job that cannot
    /// run gets [`Error::Unavailable`] from `unusable`.
    fn usable(&mut self) -> bool {
        !self.broken || self.reconnect()
    }

    /// The error for an op that cannot run because the resource could not be reopened.
    fn unusable(&self) -> StrategyError {
        Error::unavailable(format!(
            "the queue's resource broke and could not be reopened: {}",
            self.reopen_error.as_deref().unwrap_or("unknown error")
        ))
    }

    /// Runs the op with this thread marked as running on this queue (and on the
    /// submitter's chain), so calls back into any of them are refused. Returns how it ran
    /// and the resource's transaction counts from before it ([`Transact::tx_counts`]).
    fn run_op(&mut self, job: &mut dyn Job<C>) -> (Ran, Option<TxCounts>) {
        let chain = match job.chain() {
            None => self.own_chain.clone(),
            Some(outer) => outer.iter().copied().chain([self.shared.id]).collect(),
        };
        RUNNING_ON.with(|c| *c.borrow_mut() = Some(chain));
        let fence = self.fence();
        let commits = self.connect.tx_counts(&self.resource);
        let (ran, broken) = job.run(&self.connect, &mut self.resource, fence);
        RUNNING_ON.with(|c| *c.borrow_mut() = None);
        if let Some(syncer) = &mut self.syncer {
            syncer.dirty = true;
        }
        self.broken |= broken;
        (ran, commits)
    }

    /// How the op's transaction stands after it ran, with `commits` what
    /// [`run_op`](Self::run_op) returned: a commit counted during the op means the op
    /// committed, whether or not a transaction is open after it.
    fn after_op(&self, commits: Option<TxCounts>) -> AfterOp {
        after_op(&*self.connect, &self.resource, commits)
    }

    // The worker's own statements on its resource (transaction control, savepoints, the
    // marker probe) go through the helpers below. None of them runs on a resource marked
    // broken: a connection that failed, a read timeout say, may still deliver the answer
    // to an earlier statement, which the next statement would take for its own. Each
    // marks the resource broken when it fails in a way that discards it.

    /// Begins a transaction presenting `fences`.
    fn begin_tx(&mut self, fences: &[FenceClaim<'_>]) -> Result<(), TransactError> {
        if self.broken {
            return Err(TransactError::Failed(BROKEN.into()));
        }
        let begun = self.connect.begin(&mut self.resource, fences);
        if let Err(e) = &begun {
            self.broken |= e.discards_resource();
        }
        begun
    }

    /// Commits the transaction open.
    fn commit_tx(&mut self) -> Result<(), TransactError> {
        if self.broken {
            return Err(TransactError::Failed(BROKEN.into()));
        }
        let committed = self.connect.commit(&mut self.resource);
        if let Err(e) = &committed {
            self.broken |= e.discards_resource();
        }
        committed
    }

    /// Rolls back the transaction open. On a broken resource it sends nothing: the
    /// server rolls back the transaction of a connection that closes, as the broken one
    /// does when it is replaced.
    fn rollback_tx(&mut self) {
        if !self.broken && self.connect.rollback(&mut self.resource).is_err() {
            self.broken = true;
        }
    }

    /// Rolls back the transaction of an op run alone, where [`after_op`](Self::after_op)
    /// found it open: `Some(false)` when the op had ended it by itself (over PostgreSQL,
    /// which sees its marker savepoint gone, in the same round trip), so that what it
    /// wrote may have committed; `None` when nothing was sent (a broken resource) or the
    /// rollback failed.
    fn rollback_checked_tx(&mut self) -> Option<bool> {
        if self.broken {
            return None;
        }
        let checked = self.connect.rollback_checked(&mut self.resource);
        self.broken |= checked.is_err();
        checked.ok()
    }

    /// Sets, releases or rolls back to op `n`'s savepoint; false when that failed or the
    /// resource is broken.
    fn savepoint_tx(&mut self, step: SavepointStep, n: usize) -> bool {
        if self.broken {
            return false;
        }
        let (connect, resource) = (&*self.connect, &mut self.resource);
        let done = match step {
            SavepointStep::Set => connect.savepoint(resource, n),
            SavepointStep::Release => connect.release_savepoint(resource, n),
            SavepointStep::RollBackTo => connect.rollback_to_savepoint(resource, n),
        };
        match done {
            Ok(()) => true,
            Err(e) => {
                // An op that ended the transaction by itself leaves no savepoint: a
                // refusal, not a broken resource.
                self.broken |= connect.is_broken(resource, &e);
                false
            }
        }
    }

    fn run_alone(&mut self, mut job: Box<dyn Job<C>>) {
        if self.claim(&mut *job) {
            self.transact_alone(&mut *job);
            self.deliver(job);
            self.wake_answered();
        }
    }

    /// One op, in a transaction of its own (or none in autocommit mode). Leaves the
    /// result in the job.
    fn transact_alone(&mut self, job: &mut dyn Job<C>) {
        if !self.usable() {
            job.fail(self.unusable());
            return;
        }
        if self.mode == TxMode::Autocommit {
            let (ran, _) = self.run_op(job);
            if self.broken {
                // The op broke the connection: it is replaced before the next op, and a
                // transaction the op left open ends with it.
                return;
            }
            // The worker's one connection serves every later op: a transaction an op left
            // open would swallow their writes, uncommitted.
            match self.connect.end_stray_transaction(&mut self.resource) {
                Ok(false) => {}
                Ok(true) if ran == Ran::Ok => job.fail(Error::resource(
                    "the op left a transaction open; it was rolled back",
                )),
                Ok(true) => {}
                Err(_) => {
                    // Reopened before the next op; whether the op's writes stand is not
                    // known.
                    self.broken = true;
                    if ran == Ran::Ok {
                        job.fail(Error::Indeterminate);
                    }
                }
            }
            return;
        }
        let (backend, name) = (self.fence_backend.clone(), self.fence_name.clone());
        let claim = self.fence().map(|fence| FenceClaim {
            backend: &backend,
            name: &name,
            fence,
        });
        if let Err(e) = self.begin_tx(claim.as_slice()) {
            job.fail(e.into_error());
            return;
        }
        let (ran, commits) = self.run_op(job);
        match (self.after_op(commits), ran) {
            (AfterOp::Committed, _) => {
                // The op ended the transaction by a commit: what it wrote may have
                // committed. A transaction it began after that is its own, rolled back.
                if self.connect.in_transaction(&self.resource) {
                    self.rollback_tx();
                }
                job.fail(Error::TransactionEnded);
            }
            (AfterOp::RolledBack, ran) => {
                // Rolled back under the op (by SQLite, or by the op itself): nothing
                // committed. A transaction the op began after that is its own.
                if self.connect.in_transaction(&self.resource) {
                    self.rollback_tx();
                }
                // Answered as if committed: the op ended the transaction by itself.
                if ran == Ran::Ok {
                    job.fail(Error::TransactionEnded);
                }
            }
            (AfterOp::Open, Ran::Ok) => {
                if let Some(lost) = self.lease_lost() {
                    // A successor may already be writing: this op must not commit.
                    if self.rollback_checked_tx() == Some(false) {
                        job.fail(Error::TransactionEnded);
                    } else {
                        job.fail(lost);
                    }
                } else if let Err(e) = self.commit_tx() {
                    job.fail(e.into_error());
                }
            }
            (AfterOp::Open, _) => {
                // Whatever the op returned after it ended the transaction, what it wrote
                // may have committed.
                if self.rollback_checked_tx() == Some(false) {
                    job.fail(Error::TransactionEnded);
                }
            }
        }
    }

    /// Reruns ops of a batch that did not commit, one transaction each, and answers them.
    fn rerun_alone(&mut self, jobs: Vec<(Box<dyn Job<C>>, Ran)>) {
        for (mut job, ran) in jobs {
            // A failed op was rolled back to its savepoint: its answer stands.
            if ran == Ran::Ok {
                self.transact_alone(&mut *job);
            }
            self.deliver(job);
            self.wake_answered();
        }
    }

    /// Group commit: the batch in one transaction, a savepoint per op, under the lease's
    /// fence if there is one. Jobs the lease's hold left unstarted stay in `batch`.
    fn run_batch(&mut self, batch: &mut Vec<Box<dyn Job<C>>>) {
        // Answers given before the next wake-up can share the wake-ups (a chain whose
        // batch turns out too small to share them is never used).
        self.answers.open_chain();
        self.batch_seq += 1;
        let seq = self.batch_seq;
        let marker = self.marker.clone();
        let (backend, name) = (self.fence_backend.clone(), self.fence_name.clone());
        let mut claims = vec![FenceClaim {
            backend: MARKER_BACKEND,
            name: &marker,
            fence: Fence(seq),
        }];
        claims.extend(self.fence().map(|fence| FenceClaim {
            backend: &backend,
            name: &name,
            fence,
        }));
        if self.begin_tx(&claims).is_err() {
            // Let each op try on its own (on a new connection if this one broke) and get
            // its own error.
            for job in batch.drain(..) {
                self.run_alone(job);
            }
            return;
        }
        let began = Instant::now();
        let mut done: Vec<(Box<dyn Job<C>>, Ran)> = Vec::with_capacity(batch.len());
        let mut stop = None;
        let mut unstarted = None;
        let mut rest = std::mem::take(batch).into_iter();
        let mut taken = rest.len();
        for n in 0.. {
            // Jobs queued while the batch runs join it, up to the batch size: they would
            // otherwise wait for this commit and then pay for one of their own. So may
            // callers on their way back, if commits are slow (see `Gather`).
            let next = match rest.next() {
                Some(job) => Some(job),
                None if taken < self.max_batch => {
                    let job = match self.receiver.try_recv() {
                        Ok(job) => Some(job),
                        Err(_) => self.gather_next(began, taken),
                    };
                    taken += usize::from(job.is_some());
                    job
                }
                None => None,
            };
            let Some(mut job) = next else {
                break;
            };
            if !self.may_start() {
                unstarted = Some(job);
                break;
            }
            if !self.claim(&mut *job) {
                continue;
            }
            if !self.savepoint_tx(SavepointStep::Set, n) {
                stop = Some(Stop::Savepoint(job));
                break;
            }
            let (ran, commits) = self.run_op(&mut *job);
            if !self.connect.in_transaction(&self.resource) {
                // A failed op whose transaction the resource rolled back keeps its own
                // answer; the batch-mates are rerun as after any ended transaction.
                let ended = ran == Ran::Ok || self.after_op(commits) == AfterOp::Committed;
                stop = Some(Stop::Ended(job, ended));
                break;
            }
            // After an op that broke the connection this runs nothing, and fails.
            let step = match ran {
                Ran::Ok => SavepointStep::Release,
                Ran::Failed | Ran::Panicked => SavepointStep::RollBackTo,
            };
            if !self.savepoint_tx(step, n) {
                stop = Some(Stop::Kept(job));
                break;
            }
            done.push((job, ran));
        }
        self.shared.crowd.saw(taken);
        let rest: Vec<Box<dyn Job<C>>> = unstarted.into_iter().chain(rest).collect();
        match stop {
            None if self.lease_lost().is_some() => {
                // A successor may already be writing: nothing of this batch may commit.
                self.rollback_tx();
                for (mut job, _) in done {
                    job.fail(Error::LeaseLost);
                    self.deliver(job);
                }
            }
            None => {
                let committing = Instant::now();
                let committed = self.commit_tx();
                if let Some(gather) = &mut self.gather {
                    gather.committed(
                        committing.elapsed(),
                        self.shared.in_flight.load(Ordering::Acquire),
                    );
                }
                match committed {
                    Ok(()) => {
                        for (job, _) in done {
                            self.deliver(job);
                        }
                    }
                    // The COMMIT's answer was lost: the batch's marker, read on a new
                    // connection, says whether it committed. Rerunning a batch that did
                    // would apply its ops twice.
                    Err(TransactError::Indeterminate(_)) => {
                        self.answer_as_the_batch_ended(seq, done)
                    }
                    Err(_) => self.rerun_alone(done),
                }
            }
            Some(Stop::Savepoint(job)) => self.rerun_rolled_back(done, job),
            Some(Stop::Kept(mut culprit)) => {
                // Whether the op had ended the transaction: the batch's marker says if
                // it committed (read once the rest is rolled back, on a working
                // connection).
                self.rollback_tx();
                match self.batch_committed(seq) {
                    Some(false) => self.rerun_rolled_back(done, culprit),
                    committed => {
                        // Only the op can have committed the batch: whatever it returned
                        // after that, what it wrote may have committed.
                        culprit.fail(if committed.is_some() {
                            Error::TransactionEnded
                        } else {
                            Error::Indeterminate
                        });
                        self.deliver(culprit);
                        self.answer_done(committed, done);
                    }
                }
            }
            Some(Stop::Ended(mut culprit, ended)) => {
                // Whatever the op returned after it ended the transaction, what it wrote
                // may have committed.
                if ended {
                    culprit.fail(Error::TransactionEnded);
                }
                self.deliver(culprit);
                if !done.is_empty() {
                    self.answer_as_the_batch_ended(seq, done);
                }
            }
        }
        self.wake_answered();
        // Jobs the hold left unstarted (or a lost lease) wait for the next lease.
        for job in rest {
            if self.may_start() {
                self.run_alone(job);
            } else {
                batch.push(job);
            }
        }
    }

    /// After a batch whose transaction did not commit: rolls it back, then reruns its ops
    /// one transaction each, `job` (which stopped it) last.
    fn rerun_rolled_back(&mut self, done: Vec<(Box<dyn Job<C>>, Ran)>, mut job: Box<dyn Job<C>>) {
        self.rollback_tx();
        if self.broken {
            self.reconnect();
        }
        self.rerun_alone(done);
        self.transact_alone(&mut *job);
        self.deliver(job);
    }

    /// Answers the ops of batch `seq`, whose end the worker did not see, as its marker
    /// says it ended (see [`answer_done`](Self::answer_done)).
    fn answer_as_the_batch_ended(&mut self, seq: u64, done: Vec<(Box<dyn Job<C>>, Ran)>) {
        let committed = self.batch_committed(seq);
        self.answer_done(committed, done);
    }

    /// Answers the ops that ran in a batch as it ended: committed, each gets its answer;
    /// not, each is rerun alone; not known, each that succeeded gets
    /// [`Error::Indeterminate`] (a failed op was rolled back to its savepoint: its own
    /// error stands either way).
    fn answer_done(&mut self, committed: Option<bool>, done: Vec<(Box<dyn Job<C>>, Ran)>) {
        match committed {
            Some(true) => {
                for (job, _) in done {
                    self.deliver(job);
                }
            }
            Some(false) => self.rerun_alone(done),
            None => {
                for (mut job, ran) in done {
                    if ran == Ran::Ok {
                        job.fail(Error::Indeterminate);
                    }
                    self.deliver(job);
                }
            }
        }
    }

    /// Whether batch `seq`'s transaction committed, read from its marker fence: a probe
    /// presenting fence 0 is refused with the highest fence recorded. `None` when that
    /// cannot be read.
    fn batch_committed(&mut self, seq: u64) -> Option<bool> {
        // Never on a broken connection: an answer still on its way would be read as the
        // probe's.
        if self.broken && !self.reconnect() {
            return None;
        }
        let marker = self.marker.clone();
        let probe = FenceClaim {
            backend: MARKER_BACKEND,
            name: &marker,
            fence: Fence(0),
        };
        match self.begin_tx(&[probe]) {
            Ok(()) => {
                // Nothing recorded yet: no batch of ours ever committed.
                self.rollback_tx();
                Some(false)
            }
            Err(TransactError::StaleFence { highest, .. }) => Some(highest.0 >= seq),
            // A probe that broke the connection (a read timeout) left it marked broken.
            Err(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_crowd_of_callers_leaves_no_room_to_spin_until_it_thins_out() {
        let crowd = Crowd::default();
        // One caller and the worker: room on any machine with two cores or more.
        assert_eq!(crowd.room_to_spin(), cores() > 1);
        crowd.saw(1);
        assert_eq!(crowd.room_to_spin(), cores() > 1);
        // As many callers as cores: with the worker, one thread too many.
        crowd.saw(cores());
        assert!(!crowd.room_to_spin());
        // One lone batch does not make a crowd go away...
        crowd.saw(1);
        assert!(!crowd.room_to_spin());
        // ...but a run of them does.
        for _ in 0..64 {
            crowd.saw(1);
        }
        assert_eq!(crowd.room_to_spin(), cores() > 1);
        // A batch size beyond `u32` saturates rather than wraps.
        crowd.saw(usize::MAX);
        assert!(!crowd.room_to_spin());
    }

    #[test]
    fn a_batch_gathers_only_behind_slow_commits_and_for_the_callers_in_flight() {
        let began = Instant::now();
        let mut gather = Gather::default();
        // Nothing known yet: no waiting.
        assert_eq!(gather.until(began, 0), None);
        // Commits of 4 ms with 64 ops in flight: a batch of 10 waits up to 2 ms from its
        // start, one of 64 not at all.
        gather.committed(Duration::from_millis(4), 64);
        assert_eq!(
            gather.until(began, 10),
            Some(began + Duration::from_millis(2))
        );
        assert_eq!(
            gather.until(began, 63),
            Some(began + Duration::from_millis(2))
        );
        assert_eq!(gather.until(began, 64), None);
        // A lone caller's batch never waits.
        let mut lone = Gather::default();
        for _ in 0..4 {
            lone.committed(Duration::from_millis(4), 1);
        }
        assert_eq!(lone.until(began, 1), None);
        // Fast commits (no disk wait) are not worth waiting for, whatever the crowd.
        let mut fast = Gather::default();
        for _ in 0..4 {
            fast.committed(Duration::from_micros(20), 64);
        }
        assert_eq!(fast.until(began, 1), None);
        // A crowd that thins out is forgotten after a few dozen commits...
        for _ in 0..64 {
            gather.committed(Duration::from_millis(4), 4);
        }
        assert_eq!(gather.until(began, 4), None);
        assert!(gather.until(began, 3).is_some());
        // ...and commits that got fast stop the waiting.
        for _ in 0..64 {
            gather.committed(Duration::from_micros(20), 4);
        }
        assert_eq!(gather.until(began, 3), None);
        // One stalled commit moves the wait by little...
        let mut stalled = Gather::default();
        for _ in 0..8 {
            stalled.committed(Duration::from_millis(4), 64);
        }
        stalled.committed(Duration::from_secs(2), 64);
        let wait = stalled.until(began, 1).unwrap() - began;
        assert!(wait <= Duration::from_millis(3), "{wait:?}");
        // ...and however slow the commits, a batch waits at most `MAX_GATHER`.
        let mut slow = Gather::default();
        for _ in 0..64 {
            slow.committed(Duration::from_secs(1), 64);
        }
        assert_eq!(slow.until(began, 1), Some(began + MAX_GATHER));
        // A wait that runs out drops the estimate to what came, or by half: after a crowd
        // of 64 leaves a lone caller, its batches stop waiting within a few commits, where
        // the decay alone takes some 30.
        let mut left = Gather::default();
        for _ in 0..8 {
            left.committed(Duration::from_millis(4), 64);
        }
        let mut waited = 0;
        while left.until(began, 1).is_some() {
            waited += 1;
            assert!(waited <= 8, "a lone caller waited in {waited} batches");
            left.missed(1);
            left.committed(Duration::from_millis(4), 1);
        }
        assert!(waited >= 4, "{waited}");
        // While the crowd is there, a batch that missed a straggler waits again next time:
        // the commit's count of ops in flight sets the estimate back.
        let mut crowd = Gather::default();
        crowd.committed(Duration::from_millis(4), 64);
        crowd.missed(60);
        assert_eq!(crowd.until(began, 60), None);
        crowd.committed(Duration::from_millis(4), 64);
        assert!(crowd.until(began, 63).is_some());
        crowd.missed(1);
        crowd.committed(Duration::from_millis(4), 64);
        assert!(crowd.until(began, 63).is_some());
        // Absurd samples saturate rather than overflow.
        let mut absurd = Gather::default();
        absurd.missed(usize::MAX);
        absurd.committed(Duration::MAX, usize::MAX);
        absurd.committed(Duration::MAX, usize::MAX);
        assert!(
            absurd
                .until(began, 0)
                .is_none_or(|t| t <= began + MAX_GATHER)
        );
    }
}
