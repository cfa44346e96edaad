//! [`interrupt::request`] from a program of one's own: a run asked to stop answers
//! [`RunError::Interrupted`] with the signal, even one that got to its end before it
//! looked, and keeps its files when asked to (`keep`). A binary of its own: the request
//! is for the whole process and stays.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use turnstile::lock::{MutexLease, MutexLock};
use turnstile::spec::{Setup, Spec};
use turnstile::{BoxSerializer, Capabilities, Lock, LockName, Locked, StrategyError};
use turnstile_harness::interrupt;
use turnstile_harness::{RunConfig, RunError, Workload, registry, run};

/// The ops of the run that gets to its end (on one thread, so the last lease is its last).
const OPS: usize = 50;

/// The in-process lock that asks to stop while it grants its `at`-th lease: the run's last,
/// so the run has nothing left to cut short.
struct StopsAt {
    inner: MutexLock,
    granted: Arc<AtomicUsize>,
    at: usize,
}

impl Lock for StopsAt {
    type Lease = MutexLease;

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    fn backend_id(&self) -> &str {
        self.inner.backend_id()
    }

    fn acquire(
        &self,
        name: &LockName,
        deadline: Option<Instant>,
    ) -> Result<MutexLease, StrategyError> {
        let lease = self.inner.acquire(name, deadline)?;
        if self.granted.fetch_add(1, Ordering::SeqCst) + 1 == self.at {
            interrupt::request(15);
        }
        Ok(lease)
    }
}

#[test]
fn a_run_asked_to_stop_answers_interrupted() {
    let config = RunConfig::new("mutex", Workload::Counter)
        .threads(2)
        .ops(50);
    run(&config, &registry()).expect("a run nobody stopped passes");

    // Asked during its last op, a run does every op and still answers interrupted. How
    // many leases a run takes (its ops, and whatever the harness runs around them) is
    // counted first, in a run that is not asked to stop.
    let granted = Arc::new(AtomicUsize::new(0));
    let stop_at = Arc::new(AtomicUsize::new(usize::MAX));
    let mut stopping = registry();
    let (counter, at) = (granted.clone(), stop_at.clone());
    stopping.register(
        "stops-at-last",
        "the mutex lock, asking to stop when it grants its last lease",
        move |_spec: &Spec, setup: &Setup<_>| {
            let lock = StopsAt {
                inner: MutexLock::new(),
                granted: counter.clone(),
                at: at.load(Ordering::SeqCst),
            };
            Ok(Box::new(Locked::new(lock, setup.connect.clone())) as BoxSerializer<_>)
        },
    );
    let last = RunConfig::new("stops-at-last", Workload::Counter)
        .threads(1)
        .ops(OPS);
    run(&last, &stopping).expect("a run nobody stopped passes");
    let leases = granted.swap(0, Ordering::SeqCst);
    assert!(leases >= OPS, "{leases} leases for {OPS} ops");
    stop_at.store(leases, Ordering::SeqCst);
    // With `keep`, what it wrote is kept all the same: every op, since it got to its end.
    let dir = tempfile::tempdir().unwrap();
    let keep = dir.path().join("kept");
    match run(&last.clone().keep(&keep), &stopping) {
        Err(failure) if matches!(failure.error, RunError::Interrupted(15)) => {
            assert_eq!(failure.kept.as_deref(), Some(keep.as_path()), "{failure}");
            assert!(failure.to_string().contains("kept in"), "{failure}");
        }
        other => panic!("{other:?}"),
    }
    let history = std::fs::read_to_string(keep.join("history-0.jsonl")).unwrap();
    assert_eq!(
        history.lines().count(),
        2 * OPS,
        "an invoke and an end per op"
    );
    assert!(keep.join("run.db").is_file());
    assert_eq!(
        granted.load(Ordering::SeqCst),
        leases,
        "the run got to its end: the request came with its last lease"
    );

    interrupt::request(2);
    assert_eq!(
        interrupt::requested(),
        Some(15),
        "the first request is kept"
    );
    match run(&config, &registry()) {
        Err(failure) if matches!(failure.error, RunError::Interrupted(15)) => {}
        other => panic!("{other:?}"),
    }
    let error = RunError::Interrupted(15);
    assert_eq!(error.exit_code(), 143);
    assert!(error.to_string().starts_with("interrupted: "), "{error}");
}
