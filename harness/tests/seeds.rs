//! The seed stories run through the harness.
//!
//! - Seed 000 (Twisted and SQLObject): database calls on a pool of threads, each with its
//!   own SQLite connection, and a driver that gives up at once when another thread holds
//!   the write lock. Through `queue` (the seed's fix: a pool of one thread) every op of 8
//!   threads is acknowledged and every checker passes; through `thread-pool` (the seed's
//!   first design) the data stays right but callers get `database is locked`, which the
//!   `refused` checker reports.
//! - Seed 001 (CherryPy): 8 threads hand their calls to one consumer thread, and one call
//!   in four breaks a UNIQUE key on purpose (the `unique` workload). Through `queue`, in
//!   its transactions (group commit) and in autocommit, each of those gets its own error
//!   back and rolls back alone; through `swallow-errors` (a worker that swallows the
//!   error) the `own_error` checker names every one, and in a transaction `lost_update`
//!   sees their increments committed.
//! - Seed 002 (Buzhug): 50 processes, each reading the shared store and then writing or
//!   deleting in it, with a rendezvous between read and write so unserialized sections
//!   meet. Through `file-lock` every checker passes; through `unserialized` the checkers
//!   catch it — on the SQLite record (`kv`: linearizability) and on the plain file
//!   rewritten in place (`file_store`: lost or torn records).
//! - Seed 003 (SQLObject and memcached): versioned records read and written back by 6
//!   threads, or 4 single-threaded processes, with a rendezvous between read and write.
//!   Through `optimistic` (compare-and-set in one transaction) nothing is lost and `kv` is
//!   linearizable; through `racy-optimistic` (the seed's compare, then write) increments
//!   are lost and `kv` is not linearizable.
//! - Seed 004 (notify once): check a flag, send, set the flag, in 4 processes × 16
//!   threads, the flags in MySQL and a lock per notification, as the seed's Django
//!   models had. Through the MySQL lock (`TURNSTILE_MYSQL_URL`, default
//!   `mysql://root@127.0.0.1:3306/test`; fails when the server is down) every
//!   notification is sent once; through `unserialized` some are sent twice. So are some
//!   through the MySQL lock when the flag is read as the seed's code reads it, before the
//!   lock (`notify_stale`): the lock excludes, and still cannot help.

use std::time::Duration;

use turnstile_harness::check::Verdict;
use turnstile_harness::conformance::{assert_passes, mysql_data, mysql_url};
use turnstile_harness::{RunConfig, RunReport, Workload, registry, report, run};

const EXE: &str = env!("CARGO_BIN_EXE_turnstile");

/// Seed 002's shape: 50 single-threaded processes, two ops each, one shared record.
fn seed_002(spec: &str, workload: Workload) -> RunConfig {
    RunConfig::new(spec, workload)
        .procs(50)
        .threads(1)
        .ops(100)
        .keys(1)
        .rendezvous(Duration::from_millis(3))
        .worker_exe(EXE)
}

fn assert_caught(config: &RunConfig, checker: &str) -> RunReport {
    let report = run(config, &registry()).expect("the run produces a verdict");
    let text = report::text(&report);
    assert_eq!(report.verdict, Verdict::Violation, "not caught:\n{text}");
    let c = report.check(checker).expect("the workload's checker ran");
    assert_eq!(
        c.verdict,
        Verdict::Violation,
        "{checker} missed it:\n{text}"
    );
    report
}

/// Seed 000's shape: 8 threads, each op holding the database for a moment (so that a
/// second thread's call arrives while the first holds it).
fn seed_000(spec: &str) -> RunConfig {
    RunConfig::new(spec, Workload::Counter)
        .threads(8)
        .ops(400)
        .think(Duration::from_micros(200))
}

#[test]
fn seed_000_through_the_queue_passes() {
    let report = assert_passes(&seed_000("queue"));
    let refused = report.check("refused").expect("the refused checker ran");
    assert_eq!(refused.verdict, Verdict::Pass);
    assert_eq!(report.acknowledged, 400, "{}", report::text(&report));
}

#[test]
fn seed_000_thread_pool_is_caught_by_refused_and_its_data_stays_right() {
    let report = assert_caught(&seed_000("thread-pool"), "refused");
    let text = report::text(&report);
    // What the seed saw: the writes that met another failed, and the data was fine.
    let lost = report
        .check("lost_update")
        .expect("the workload's checker ran");
    assert_eq!(lost.verdict, Verdict::Pass, "{text}");
    let refused = report.check("refused").expect("the refused checker ran");
    assert!(
        refused
            .details
            .iter()
            .any(|d| d.contains("database is locked")),
        "{text}"
    );
}

/// Seed 001's shape: the web app's 8 threads hand their database calls to one consumer
/// thread, and one call in four breaks an integrity constraint (the `unique` workload:
/// an increment, then an `INSERT` of a row that exists). `transaction`: the queue runs
/// ops in its transactions, a batch of waiting ops in one (group commit, a savepoint per
/// op), so the failing op must roll back alone; else each statement commits by itself.
fn seed_001(spec: &str, transaction: bool) -> RunConfig {
    RunConfig::new(spec, Workload::Unique)
        .threads(8)
        .ops(400)
        .think(Duration::from_micros(100))
        .transaction(transaction)
}

/// Through `queue` (the seed's consumer thread, with the exception "stuffed into the
/// request object"), each op that broke the constraint gets its own error back, and
/// rolled back alone: no other op of its batch lost its increment, and its own is gone.
#[test]
fn seed_001_queue_hands_each_op_its_own_error() {
    for transaction in [true, false] {
        let report = assert_passes(&seed_001("queue", transaction));
        let text = report::text(&report);
        assert_eq!(report.transactional, transaction, "{text}");
        let own = report.check("own_error").expect("own_error ran");
        assert!(
            own.summary
                .starts_with("each of 100 ops that fail on purpose"),
            "{text}"
        );
        assert_eq!(
            report.errors,
            std::collections::BTreeMap::from([("op".to_owned(), 100)]),
            "only the ops that fail on purpose failed, with their own errors:\n{text}"
        );
        assert_eq!(report.acknowledged, 300, "{text}");
        // In a transaction the failed ops are known to have rolled back; in autocommit
        // their increment, written before the INSERT failed, stays (unknown ops).
        let (failed, unknown) = if transaction { (100, 0) } else { (0, 100) };
        assert_eq!((report.failed, report.unknown), (failed, unknown), "{text}");
        assert_eq!(
            report.check("lost_update").map(|c| c.verdict),
            Some(Verdict::Pass),
            "{text}"
        );
    }
}

/// The consumer thread that catches the op's error and does not hand it back: the
/// callers never see their integrity errors. In autocommit nothing else shows it (every
/// increment took effect, and the failed ops may have written theirs): only `own_error`
/// does. In a transaction the failed ops' increments also committed with their batches.
#[test]
fn seed_001_a_queue_that_swallows_op_errors_is_caught() {
    for transaction in [false, true] {
        let report = assert_caught(&seed_001("swallow-errors", transaction), "own_error");
        let text = report::text(&report);
        let own = report.check("own_error").expect("own_error ran");
        assert!(
            own.summary.starts_with(
                "100 of 100 ops that fail on purpose did not get their own error back"
            ),
            "{text}"
        );
        assert!(
            own.details.iter().any(|d| d.contains("not the op's error")),
            "{text}"
        );
        let lost = report.check("lost_update").expect("lost_update ran");
        if transaction {
            assert_eq!(lost.verdict, Verdict::Violation, "{text}");
            assert!(
                lost.summary.contains("failed increments took effect"),
                "{text}"
            );
        } else {
            assert_eq!(lost.verdict, Verdict::Pass, "{text}");
        }
    }
}

#[test]
fn seed_002_kv_through_file_lock_passes() {
    let report = assert_passes(&seed_002("file-lock", Workload::Kv));
    assert_eq!(report.procs, 50);
}

#[test]
fn seed_002_file_store_through_file_lock_passes() {
    assert_passes(&seed_002("file-lock", Workload::FileStore));
}

#[test]
fn seed_002_kv_unserialized_is_caught() {
    assert_caught(&seed_002("unserialized", Workload::Kv), "linearizable");
}

#[test]
fn seed_002_file_store_unserialized_is_caught() {
    assert_caught(&seed_002("unserialized", Workload::FileStore), "file_store");
}

/// Seed 003's shape: versioned records written by several workers at once, each op
/// reading a record and writing it back, with a rendezvous between the read and the write
/// so that two ops read the same version and commit close together. `threads` workers in
/// each of `procs` processes (the seed's objects were shared by several processes).
fn seed_003(spec: &str, workload: Workload, procs: usize, threads: usize) -> RunConfig {
    RunConfig::new(spec, workload)
        .procs(procs)
        .threads(threads)
        .ops(300)
        .rendezvous(Duration::from_millis(2))
        .worker_exe(EXE)
}

/// The seed's compare-then-write, with a 1 ms window between the two.
const RACY_OPTIMISTIC: &str = "racy-optimistic:1000";

#[test]
fn seed_003_counter_through_optimistic_loses_nothing() {
    for (procs, threads) in [(1, 6), (4, 1)] {
        let report = assert_passes(&seed_003("optimistic", Workload::Counter, procs, threads));
        let text = report::text(&report);
        assert!(
            report.data.starts_with("versioned records"),
            "optimistic runs on versioned records:\n{text}"
        );
        assert_eq!(report.acknowledged, 300, "{text}");
    }
}

#[test]
fn seed_003_kv_through_optimistic_is_linearizable() {
    for (procs, threads) in [(1, 6), (4, 1)] {
        assert_passes(&seed_003("optimistic", Workload::Kv, procs, threads));
    }
}

/// The same runs through the seed's scheme as written: two ops that read version `n`
/// both pass the compare, and both write.
#[test]
fn seed_003_racy_optimistic_loses_increments() {
    for (procs, threads) in [(1, 6), (4, 1)] {
        let report = assert_caught(
            &seed_003(RACY_OPTIMISTIC, Workload::Counter, procs, threads),
            "lost_update",
        );
        let text = report::text(&report);
        assert!(report.data.starts_with("versioned records"), "{text}");
        let lost = report.check("lost_update").expect("lost_update ran");
        assert!(
            lost.details.iter().any(|d| d.contains("lost increments")),
            "names a key that lost increments:\n{text}"
        );
        assert!(
            lost.details.iter().any(|d| d.contains("written by")),
            "names ops that wrote one value:\n{text}"
        );
    }
}

#[test]
fn seed_003_racy_optimistic_is_not_linearizable() {
    for (procs, threads) in [(1, 6), (4, 1)] {
        assert_caught(
            &seed_003(RACY_OPTIMISTIC, Workload::Kv, procs, threads),
            "linearizable",
        );
    }
}

/// Seed 004's shape: notify-once in 4 processes × 16 threads, with a rendezvous between
/// checking the flag and sending, so two unserialized senders meet. The flags live in
/// MySQL, as the seed's Django models did, so the MySQL lock is taken per notification
/// (`GET_LOCK` per model instance); over SQLite data, a single writer, every lock
/// strategy takes one lock for the whole database.
fn seed_004(spec: &str) -> RunConfig {
    seed_004_as(spec, Workload::NotifyOnce)
}

/// [`seed_004`] running `workload`: `notify_once`, or the seed's own stale-flag code.
fn seed_004_as(spec: &str, workload: Workload) -> RunConfig {
    RunConfig::new(spec, workload)
        .data(mysql_data())
        .procs(4)
        .threads(16)
        .ops(400)
        .rendezvous(Duration::from_millis(2))
        .worker_exe(EXE)
}

/// [`seed_004_as`] where a double send must happen every time: one notification, so the
/// first sender's partner in the rendezvous read the same flag unset (on many, a random
/// pick may pair only different ones), and a rendezvous long enough for the other
/// processes' slow start. Only the first ops wait: once the flag is set, none do.
fn seed_004_double_send(spec: &str, workload: Workload) -> RunConfig {
    seed_004_as(spec, workload)
        .keys(1)
        .rendezvous(Duration::from_millis(200))
}

#[test]
fn seed_004_notify_once_through_mysql_sends_each_once() {
    let report = assert_passes(&seed_004(&mysql_url()));
    let once = report.check("exactly_once").expect("exactly_once ran");
    assert_eq!(once.verdict, Verdict::Pass);
}

#[test]
fn seed_004_notify_once_unserialized_sends_twice() {
    let report = assert_caught(
        &seed_004_double_send("unserialized", Workload::NotifyOnce),
        "exactly_once",
    );
    let once = report.check("exactly_once").expect("exactly_once ran");
    assert!(
        once.details.iter().any(|d| d.contains("effect performed")),
        "names a notification sent more than once:\n{}",
        report::text(&report)
    );
}

/// The seed's `send()` checks `self.sent` on an instance loaded before `GET_LOCK` and
/// never refreshed: two processes that loaded it unsent both send, one after the other,
/// under the lock. The sections never overlap; the effects repeat.
#[test]
fn seed_004_stale_flag_through_mysql_sends_twice() {
    let report = assert_caught(
        &seed_004_double_send(&mysql_url(), Workload::NotifyStale),
        "exactly_once",
    );
    let text = report::text(&report);
    let once = report.check("exactly_once").expect("exactly_once ran");
    assert!(
        once.details.iter().any(|d| d.contains("effect performed")),
        "names a notification sent more than once:\n{text}"
    );
    assert_eq!(
        report.check("overlap").map(|c| c.verdict),
        Some(Verdict::Pass),
        "the lock itself holds:\n{text}"
    );
}
