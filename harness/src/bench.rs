//! Timing a workload's ops, without history or checks: what the criterion benchmarks
//! (`benches/`, `cargo bench -p turnstile-benches`) measure.
//!
//! [`time_ops`] sets the data up as a [`run`](crate::run()) does (fresh tables and files,
//! versioned records for `optimistic`, the strategy opened and probed), runs the
//! workload's own ops ([`Workload::next_op`], [`Workload::execute`]) in threads of this
//! process, and returns the wall time of the ops alone. Nothing is recorded and nothing is
//! checked, so a broken strategy times as well as a sound one: [`run`](crate::run()) is
//! what says whether a strategy is correct for a workload.
//!
//! ```
//! use turnstile_harness::{RunConfig, Workload, bench, registry};
//!
//! let timing = bench::time_ops(&RunConfig::new("mutex", Workload::Bank).threads(4).ops(200), &registry())?;
//! assert_eq!(timing.failed, 0);
//! println!("200 transfers in {:?}", timing.wall);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use turnstile::BoxSerializer;
use turnstile::spec::Registry;
use turnstile::sqlite::Sqlite;

use crate::data::{self, Backend, WithBackend, WorkloadData};
use crate::run::{RunConfig, RunError, WorkerSpec};
use crate::workload::{OpEnv, Paths, Probe, Workload};

/// What one timed batch of ops did.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Timing {
    /// From the moment the threads start together (a barrier) until the last op
    /// returned. Setting the data up, opening the strategy, starting the threads and
    /// dropping the data are not in it.
    pub wall: Duration,
    /// Ops run.
    pub ops: usize,
    /// Ops that returned an error (they are in [`Timing::wall`] too).
    pub failed: usize,
    /// The first of those errors, as `kind: message`.
    pub first_error: Option<String>,
}

/// Runs `config.ops` ops of `config.workload` through `config.strategy` in
/// `config.threads` threads of this process, on fresh data, and times them (see the
/// [module](self)). Each call sets its own data up and drops it afterwards (a server's
/// tables too), so every call starts from the workload's initial state, as a run does.
///
/// Of the [`RunConfig`], the strategy, workload, threads, ops, keys, think time,
/// rendezvous, data, `versioned`, `synchronous`, timeout, transaction and seed apply;
/// `keep`, `svg`, `progress`, `worker_exe` and `time_limit` are ignored.
///
/// # Errors
/// As [`run`](crate::run()); besides, [`RunError::Usage`] for worker processes, a nemesis or
/// a `--db` path (this times threads of one process on fresh data), and for a strategy
/// that does not exclude on a workload whose state lies outside the data it protects
/// (`optimistic` on `notify_once` or `file_store`): those ops would race, and their time
/// would be a broken run's.
pub fn time_ops(config: &RunConfig, registry: &Registry<Sqlite>) -> Result<Timing, RunError> {
    config.validate()?;
    if config.procs != 1 || config.nemesis.is_some() || config.db.is_some() {
        return Err(RunError::Usage(
            "timing runs threads of one process on fresh data: no --procs, --nemesis or --db"
                .into(),
        ));
    }
    let tmp = tempfile::Builder::new()
        .prefix("turnstile-bench-")
        .tempdir()?;
    let spec = WorkerSpec::of_run(config, Paths::new(tmp.path(), None), registry);
    data::with_backend(&spec, registry, Timed(&spec))
}

/// [`time_ops`] over the backend its spec names.
struct Timed<'a>(&'a WorkerSpec);

impl WithBackend for Timed<'_> {
    type Output = Timing;

    fn with<B: Backend>(
        self,
        backend: B,
        registry: &Registry<B::Connect>,
    ) -> Result<Timing, RunError> {
        // Reachable first: a server that is down leaves no tables to drop.
        crate::run::reachable(&backend)?;
        let timed = time_on(&backend, registry, self.0);
        let dropped = backend.drop_tables();
        let timing = timed?;
        dropped.map_err(|e| {
            RunError::Unavailable(format!("{}: dropping the tables: {e}", backend.describe()))
        })?;
        Ok(timing)
    }
}

fn time_on<B: Backend>(
    backend: &B,
    registry: &Registry<B::Connect>,
    spec: &WorkerSpec,
) -> Result<Timing, RunError> {
    let workload = spec.workload;
    workload
        .init(backend.connect(), &spec.paths, backend.tables(), spec.keys)
        .map_err(|e| RunError::Unavailable(format!("{}: {e}", backend.describe())))?;
    let strategy = spec.open(backend, registry)?;
    let caps = strategy.capabilities();
    if !caps.excludes
        && matches!(
            workload,
            Workload::NotifyOnce | Workload::NotifyStale | Workload::FileStore
        )
    {
        return Err(RunError::Usage(format!(
            "{} does not exclude, so it cannot protect {} (state outside the data); timing it would time a broken run",
            spec.strategy,
            match workload {
                Workload::NotifyOnce | Workload::NotifyStale => "notify_once's side effect",
                _ => "file_store's file",
            }
        )));
    }
    let env = OpEnv {
        paths: Arc::new(spec.paths.clone()),
        tables: Arc::new(backend.tables().clone()),
        think: Duration::from_micros(spec.think_us),
        in_section: None,
        rendezvous: Duration::from_micros(spec.rendezvous_us),
    };
    Ok(time_threads(spec, &env, &strategy))
}

/// The ops of `spec` in its threads, started together; the wall time is taken from the
/// release of the barrier to the last thread's end.
fn time_threads<R: WorkloadData>(
    spec: &WorkerSpec,
    env: &OpEnv,
    strategy: &BoxSerializer<R>,
) -> Timing {
    let threads = spec.threads.max(1);
    let seq = AtomicU64::new(0);
    let barrier = Barrier::new(threads + 1);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let share = spec.ops / threads + usize::from(t < spec.ops % threads);
                let (seq, barrier) = (&seq, &barrier);
                s.spawn(move || {
                    let mut rng = fastrand::Rng::with_seed(spec.seed ^ ((t as u64) << 20));
                    let probe = Arc::new(Probe::default());
                    let mut failed = 0;
                    let mut first_error = None;
                    barrier.wait();
                    for _ in 0..share {
                        let op_id = seq.fetch_add(1, Ordering::Relaxed);
                        let (keys, input) = spec.workload.next_op(&mut rng, spec.keys, op_id);
                        let result = spec
                            .workload
                            .execute(strategy, op_id, &keys, &input, env, &probe);
                        if let Err(e) = result {
                            failed += 1;
                            first_error.get_or_insert_with(|| format!("{}: {e}", e.kind()));
                        }
                    }
                    (failed, first_error)
                })
            })
            .collect();
        barrier.wait();
        let start = Instant::now();
        let mut timing = Timing {
            wall: Duration::ZERO,
            ops: spec.ops,
            failed: 0,
            first_error: None,
        };
        for handle in handles {
            // An op that panics comes back as `Error::Panicked`: the thread itself does
            // not, but a panic is kept a panic.
            let (failed, first_error) = handle
                .join()
                .unwrap_or_else(|p| std::panic::resume_unwind(p));
            timing.failed += failed;
            if timing.first_error.is_none() {
                timing.first_error = first_error;
            }
        }
        timing.wall = start.elapsed();
        timing
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry;

    #[test]
    fn times_every_op_of_every_workload() {
        for workload in Workload::ALL {
            let config = RunConfig::new("mutex", workload).threads(3).ops(50);
            let timing = time_ops(&config, &registry()).unwrap();
            assert_eq!(
                (timing.ops, timing.failed),
                (50, 0),
                "{workload}: {timing:?}"
            );
            assert!(timing.wall > Duration::ZERO, "{workload}: {timing:?}");
        }
    }

    #[test]
    fn counts_failed_ops_with_their_first_error() {
        // One key held 20 ms per op, waited for 1 ms at most: the other thread's ops
        // time out while the first one's run.
        let config = RunConfig::new("mutex", Workload::Counter)
            .threads(2)
            .ops(10)
            .keys(1)
            .think(Duration::from_millis(20))
            .timeout(Duration::from_millis(1));
        let timing = time_ops(&config, &registry()).unwrap();
        assert!((1..10).contains(&timing.failed), "{timing:?}");
        let first = timing.first_error.unwrap_or_default();
        assert!(first.starts_with("timeout: "), "{first}");
    }

    #[test]
    fn refuses_what_it_cannot_time_in_one_process() {
        let procs = RunConfig::new("mutex", Workload::Counter).procs(2);
        assert!(matches!(
            time_ops(&procs, &registry()),
            Err(RunError::Usage(_))
        ));
        let zero = RunConfig::new("mutex", Workload::Counter).threads(0);
        assert!(matches!(
            time_ops(&zero, &registry()),
            Err(RunError::Usage(_))
        ));
    }

    #[cfg(all(feature = "postgres", feature = "mysql"))]
    #[test]
    fn times_ops_on_data_on_a_server() {
        use crate::conformance::{mysql_data, postgres_data};
        for data in [postgres_data(), mysql_data()] {
            let config = RunConfig::new("mutex", Workload::Bank)
                .data(data.clone())
                .threads(2)
                .ops(20);
            let timing = time_ops(&config, &registry()).unwrap();
            assert_eq!(timing.failed, 0, "{data}: {timing:?}");
        }
    }

    #[cfg(feature = "optimistic")]
    #[test]
    fn refuses_a_strategy_that_cannot_protect_the_workload() {
        for workload in [Workload::NotifyOnce, Workload::FileStore] {
            let config = RunConfig::new("optimistic", workload).threads(2).ops(10);
            match time_ops(&config, &registry()) {
                Err(RunError::Usage(m)) => assert!(m.contains("does not exclude"), "{m}"),
                other => panic!("{workload}: {other:?}"),
            }
        }
        // Over its own data it times like any other.
        let kv = RunConfig::new("optimistic", Workload::Kv)
            .threads(2)
            .ops(20);
        assert_eq!(time_ops(&kv, &registry()).unwrap().failed, 0);
    }
}
