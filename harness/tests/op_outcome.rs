//! How a run records a failed op's outcome: as *unknown* (it may have taken effect) or as
//! *failed* (it did not). Test strategies over the run's real SQLite data run the op for
//! real, then report an error: an op whose outcome the strategy cannot know
//! (`Error::Indeterminate`), one that ended the transaction itself
//! (`Error::TransactionEnded`), and, in autocommit, an op that failed after entering its
//! section and writing (`Error::Op`). Each of those committed its increment, so each must
//! count as unknown, or the counter's final value exceeds what the history allows and
//! `lost_update` blames a correct strategy.

use std::any::Any;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use rusqlite::Connection;
use turnstile::spec::Registry;
use turnstile::sqlite::Sqlite;
use turnstile::{AnyError, BoxError, BoxSerializer, Error, Serializer};
use turnstile_harness::check::Verdict;
use turnstile_harness::workload::OpError;
use turnstile_harness::{RunConfig, RunReport, Workload, registry, run};

/// How [`Inject`] fails one op in four, after running it.
#[derive(Clone, Copy, Debug)]
enum How {
    /// The op committed, then the strategy reports `Indeterminate`.
    Indeterminate,
    /// The op committed, then the strategy reports `TransactionEnded`.
    TransactionEnded,
    /// The op wrote, then failed itself (`Error::Op`) inside the section.
    OpAfterWrite,
}

/// `mutex` (in the mode the run asks for) whose every fourth op runs and then fails as
/// [`How`] says; `injected` counts those ops.
struct Inject {
    inner: BoxSerializer<Connection>,
    how: How,
    calls: AtomicU64,
    injected: Arc<AtomicUsize>,
}

impl Serializer for Inject {
    type Resource = Connection;

    fn capabilities(&self) -> turnstile::Capabilities {
        self.inner.capabilities()
    }

    fn run_with<T, E, F>(
        &self,
        keys: &[turnstile::Key],
        wait: turnstile::Wait,
        mut op: F,
    ) -> Result<T, Error<E>>
    where
        F: FnMut(&mut turnstile::Ctx<'_, Connection>) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: Send + Sync + 'static,
    {
        // The first call is the run's probe: it passes.
        if self.calls.fetch_add(1, Ordering::SeqCst) % 4 != 3 {
            return self.inner.run_with(keys, wait, op);
        }
        match self.how {
            How::Indeterminate | How::TransactionEnded => {
                self.inner.run_with(keys, wait, op)?;
                self.injected.fetch_add(1, Ordering::SeqCst);
                Err(match self.how {
                    How::Indeterminate => Error::Indeterminate,
                    _ => Error::TransactionEnded,
                })
            }
            How::OpAfterWrite => {
                let injected = self.injected.clone();
                self.inner.run_with(keys, wait, move |ctx| {
                    op(ctx)?;
                    injected.fetch_add(1, Ordering::SeqCst);
                    // The harness's ops run through `run_op`, whose error is a boxed
                    // `OpError`; this strategy, boxed itself, sees it type-erased. (A
                    // panic here would be caught and also end the op as unknown: the test
                    // checks the error's kind.)
                    let e: BoxError =
                        Box::new(OpError::Io(std::io::Error::other("failed after its write")));
                    let erased: AnyError = Box::new(e);
                    Err(*(Box::new(erased) as Box<dyn Any>)
                        .downcast::<E>()
                        .expect("a boxed strategy's op error is an AnyError"))
                })
            }
        }
    }
}

/// A `counter` run on one key through [`Inject`], and the counter's final value.
fn run_injecting(how: How, transaction: bool) -> (RunReport, usize, i64) {
    let injected = Arc::new(AtomicUsize::new(0));
    let mut r: Registry<Sqlite> = registry();
    let counted = injected.clone();
    r.register("inject", "test strategy", move |_, setup| {
        let inner = registry().open("mutex", setup)?;
        Ok(Box::new(Inject {
            inner,
            how,
            calls: AtomicU64::new(0),
            injected: counted.clone(),
        }) as BoxSerializer<Connection>)
    });
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("outcome.db");
    let config = RunConfig::new("inject", Workload::Counter)
        .threads(2)
        .ops(200)
        .keys(1)
        .seed(11)
        .transaction(transaction)
        .db(&db);
    let report = run(&config, &r).unwrap();
    (report, injected.load(Ordering::SeqCst), final_value(&db))
}

fn final_value(db: &Path) -> i64 {
    Connection::open(db)
        .unwrap()
        .query_row("SELECT value FROM counter WHERE key = 'c0'", [], |r| {
            r.get(0)
        })
        .unwrap()
}

/// The injected ops, which ended with an error of `kind`, count as unknown, and
/// `lost_update` accepts the final value they raised above the acknowledged count.
fn assert_unknown(report: &RunReport, kind: &str, injected: usize, last: i64) {
    assert!(injected > 0, "no op was injected");
    assert_eq!(
        report.errors,
        std::collections::BTreeMap::from([(kind.to_owned(), injected)]),
        "every injected op, and only those, ended with the injected error"
    );
    assert_eq!(
        report.unknown, injected,
        "ops that took effect must be unknown, not failed: {report:?}"
    );
    assert_eq!(report.failed, 0, "{report:?}");
    assert_eq!(last, (report.acknowledged + injected) as i64);
    assert!(last > report.acknowledged as i64);
    let lost_update = report.check("lost_update").expect("counter runs it");
    assert_eq!(lost_update.verdict, Verdict::Pass, "{lost_update:?}");
    assert_eq!(report.verdict, Verdict::Pass, "{report:?}");
}

#[test]
fn an_op_that_committed_then_reported_indeterminate_is_unknown() {
    let (report, injected, last) = run_injecting(How::Indeterminate, true);
    assert!(report.transactional);
    assert_unknown(&report, "indeterminate", injected, last);
}

#[test]
fn an_op_that_committed_then_reported_transaction_ended_is_unknown() {
    let (report, injected, last) = run_injecting(How::TransactionEnded, true);
    assert!(report.transactional);
    assert_unknown(&report, "transaction-ended", injected, last);
}

#[test]
fn an_autocommit_op_that_failed_after_its_write_is_unknown() {
    let (report, injected, last) = run_injecting(How::OpAfterWrite, false);
    assert!(!report.transactional);
    assert_unknown(&report, "op", injected, last);
}
