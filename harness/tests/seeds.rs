//! The seed stories run through the harness.
//!
//! - Seed 000 (Twisted and SQLObject): database calls on a pool of threads, each with its
//!   own SQLite connection, and a driver that gives up at once when another thread holds
//!   the write lock. Through `queue` (the seed's fix: a pool of one thread) every op of 8
//!   threads is acknowledged and every checker passes; through `thread-pool` (the seed's
//!   first design) the data stays right but callers get `database is locked`, which the
//!   `refused` checker reports.
//! - Seed 002 (Buzhug): 50 processes, each reading the shared store and then writing or
//!   deleting in it, with a rendezvous between read and write so unserialized sections
//!   meet. Through `file-lock` every checker passes; through `unserialized` the checkers
//!   catch it — on the SQLite record (`kv`: linearizability) and on the plain file
//!   rewritten in place (`file_store`: lost or torn records).
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
