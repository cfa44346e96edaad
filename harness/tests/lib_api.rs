//! The library API: custom registries (a strategy whose backend is out of reach, one that
//! fails every op), the floor against vacuous passes, and the report's measurements.

use std::time::Duration;

use rusqlite::Connection;
use turnstile::spec::Registry;
use turnstile::sqlite::Sqlite;
use turnstile::{BoxSerializer, Error};
use turnstile_harness::check::Verdict;
use turnstile_harness::{RunConfig, RunError, Workload, registry, run};

fn with(
    name: &str,
    factory: impl Fn(&Sqlite) -> Result<BoxSerializer<Connection>, turnstile::StrategyError>
    + Send
    + Sync
    + 'static,
) -> Registry<Sqlite> {
    let mut r = registry();
    r.register(name, "test strategy", move |_, setup| {
        factory(&setup.connect)
    });
    r
}

#[test]
fn a_strategy_that_cannot_reach_its_backend_is_inconclusive() {
    let r = with("down", |_| {
        Err(Error::unavailable(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "connection refused",
        )))
    });
    let err = run(&RunConfig::new("down", Workload::Counter).ops(50), &r).unwrap_err();
    assert!(matches!(err.error, RunError::Unavailable(_)), "{err}");
    assert_eq!(err.exit_code(), 3);

    // Opens, but its resource cannot be connected (a database under a missing directory).
    let r = with("down-later", |_| {
        let db = Sqlite::new("/nonexistent-turnstile-dir/x.db");
        Ok(Box::new(turnstile::Locked::new(
            turnstile::lock::MutexLock::new(),
            db,
        )))
    });
    let err = run(&RunConfig::new("down-later", Workload::Kv).ops(50), &r).unwrap_err();
    assert!(matches!(err.error, RunError::Unavailable(_)), "{err}");
}

/// Acknowledges nothing: every op times out.
struct AlwaysTimesOut;

impl turnstile::Serializer for AlwaysTimesOut {
    type Resource = Connection;
    fn capabilities(&self) -> turnstile::Capabilities {
        turnstile::Capabilities::new(
            turnstile::Scope::Threads,
            turnstile::HolderDeath::SameProcess,
        )
    }
    fn run_with<T, E, F>(
        &self,
        keys: &[turnstile::Key],
        _: turnstile::Wait,
        _: F,
    ) -> Result<T, Error<E>>
    where
        F: FnMut(&mut turnstile::Ctx<'_, Connection>) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: Send + Sync + 'static,
    {
        // Let the harness's probe (on the whole-resource key) through as unavailable-free:
        // it only needs the strategy to exist; real ops time out.
        let _ = keys;
        Err(Error::Timeout {
            waited: Duration::from_millis(1),
        })
    }
}

#[test]
fn too_few_acknowledged_ops_is_inconclusive_not_a_pass() {
    let r = with("never", |_| Ok(Box::new(AlwaysTimesOut)));
    // The probe itself times out: a strategy that cannot run anything is unavailable.
    let err = run(&RunConfig::new("never", Workload::Counter).ops(50), &r).unwrap_err();
    assert_eq!(err.exit_code(), 3, "{err}");
}

/// Passes the probe, then fails three ops in four.
struct MostlyFails(BoxSerializer<Connection>, std::sync::atomic::AtomicU64);

impl turnstile::Serializer for MostlyFails {
    type Resource = Connection;
    fn capabilities(&self) -> turnstile::Capabilities {
        self.0.capabilities()
    }
    fn run_with<T, E, F>(
        &self,
        keys: &[turnstile::Key],
        wait: turnstile::Wait,
        op: F,
    ) -> Result<T, Error<E>>
    where
        F: FnMut(&mut turnstile::Ctx<'_, Connection>) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: Send + Sync + 'static,
    {
        let n = self.1.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if n.is_multiple_of(4) {
            self.0.run_with(keys, wait, op)
        } else {
            Err(Error::Timeout {
                waited: Duration::ZERO,
            })
        }
    }
}

#[test]
fn a_run_with_mostly_failed_ops_is_inconclusive() {
    let r = with("flaky", |db| {
        let inner: BoxSerializer<Connection> = Box::new(turnstile::Locked::new(
            turnstile::lock::MutexLock::new(),
            db.clone(),
        ));
        Ok(Box::new(MostlyFails(inner, Default::default())))
    });
    let report = run(&RunConfig::new("flaky", Workload::Counter).ops(200), &r).unwrap();
    assert_eq!(report.verdict, Verdict::Inconclusive);
    assert_eq!(report.exit_code(), 3);
    let floor = report.check("floor").expect("the floor names itself");
    assert!(floor.summary.contains("acknowledged"), "{}", floor.summary);
    // The checkers themselves passed: the few ops that ran were correct.
    assert_eq!(report.check("lost_update").unwrap().verdict, Verdict::Pass);
}

#[test]
fn a_report_measures_latencies_and_wall_time() {
    let report = run(
        &RunConfig::new("mutex", Workload::Kv)
            .threads(2)
            .ops(100)
            .seed(7),
        &registry(),
    )
    .unwrap();
    assert_eq!(report.verdict, Verdict::Pass);
    assert_eq!(report.latencies_ns.len(), report.acknowledged);
    assert!(report.wall > Duration::ZERO);
}
