//! Strategies side by side: one criterion group per workload, each strategy at 1, 4 and
//! 16 threads, HTML reports in `target/criterion/report/index.html`.
//!
//! - `insert_one_row`: one `INSERT` of one row per op, into one table per strategy that
//!   its samples share: the reference workload (an op that does as little as an op can).
//! - one group per workload of the harness (`counter`, `bank`, `notify_once`, `kv`,
//!   `file_store`: [`Workload::ALL`]): the harness's own ops
//!   ([`time_ops`](turnstile_harness::bench::time_ops)), without the history and the
//!   checks of `turnstile check`. Each sample starts on fresh data, as a run of that many
//!   ops does; lock strategies run inside the resource's transaction, as applications use
//!   them (and as `turnstile compare` measures).
//!
//! Strategies come from the spec registries, so every strategy compiled in joins without
//! changes here: the embedded ones, `optimistic` on versioned records, and the baselines
//! `busy-timeout` and `std-mutex` that `turnstile compare`'s targets are ratios to. Server
//! strategies (`redis://…`, `mysql://…`, `postgres://…`, each followed by its `queue+`
//! composition) join when their URL is set (`TURNSTILE_REDIS_URL`,
//! `TURNSTILE_MYSQL_URL`, `TURNSTILE_POSTGRES_URL`) and are skipped with a printed note
//! otherwise. `TURNSTILE_BENCH_STRATEGIES=queue,busy-timeout,…` replaces the list (any
//! spec the harness knows, baselines included; split as `turnstile compare --strategies`
//! splits, so `redlock://h1:p1,h2:p2,h3:p3` stays one spec). A strategy that cannot run a
//! workload (`optimistic` does not exclude, so it cannot protect `notify_once`'s side
//! effect or `file_store`'s file; it has no SQL rows to insert) is skipped with a printed
//! note.
//!
//! Everything takes about a quarter of an hour on two cores (twice that with all three
//! servers); a
//! criterion filter (a regex over `group/strategy/threads`) narrows it:
//!
//! ```text
//! cargo bench -p turnstile-benches                          # everything
//! cargo bench -p turnstile-benches -- counter               # one group
//! cargo bench -p turnstile-benches -- 'bank/(queue|mutex)/' # some strategies of one group
//! cargo bench -p turnstile-benches -- --test                # each benchmark once, no timing
//! ```
#![allow(missing_docs)]

use std::cell::Cell;
use std::sync::{Arc, Barrier, OnceLock};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use turnstile::spec::{Registry, Setup, Spec, redact_url};
use turnstile::sqlite::rusqlite::Connection;
use turnstile::sqlite::{Sqlite, Synchronous};
use turnstile::{BoxSerializer, Key, Wait};
use turnstile_harness::bench::time_ops;
use turnstile_harness::{RunConfig, Workload, registry};

const THREADS: [usize; 3] = [1, 4, 16];

/// The specs to compare, chosen (and their notes printed) once for every group.
fn specs() -> &'static [String] {
    static SPECS: OnceLock<Vec<String>> = OnceLock::new();
    SPECS.get_or_init(|| {
        if let Ok(list) = std::env::var("TURNSTILE_BENCH_STRATEGIES")
            && !list.trim().is_empty()
        {
            // Split as `turnstile compare --strategies`: a spec may hold commas.
            return match turnstile_harness::compare::split_strategies(&list, &registry()) {
                Ok(specs) => specs.into_iter().filter(|s| !s.is_empty()).collect(),
                Err(e) => {
                    eprintln!("TURNSTILE_BENCH_STRATEGIES: {e}");
                    std::process::exit(2)
                }
            };
        }
        default_specs(&Registry::builtin())
    })
}

/// Every embedded strategy of `builtin`, `optimistic`, the baselines `busy-timeout` and
/// `std-mutex`, then each server whose URL is in the environment, followed by its `queue+`
/// composition.
fn default_specs(builtin: &Registry<Sqlite>) -> Vec<String> {
    let servers = [
        ("TURNSTILE_REDIS_URL", "redis"),
        ("TURNSTILE_MYSQL_URL", "mysql"),
        ("TURNSTILE_POSTGRES_URL", "postgres"),
    ];
    let mut specs = Vec::new();
    for (name, _) in builtin.names() {
        // Server strategies (and compositions over them) need a URL: added below.
        let needs_server = ["redis", "redlock", "mysql", "postgres"]
            .iter()
            .any(|server| name.contains(server));
        if !needs_server {
            specs.push(name.to_owned());
        }
    }
    // `optimistic` on versioned records, and the baselines the targets are ratios to.
    for extra in ["optimistic", "busy-timeout", "std-mutex"] {
        if turnstile_harness::run::knows(extra, &registry()) {
            specs.push(extra.to_owned());
        }
    }
    for (var, scheme) in servers {
        if !builtin.contains(scheme) {
            continue;
        }
        match std::env::var(var) {
            Ok(url) if !url.trim().is_empty() => {
                let url = url.trim().to_owned();
                if builtin.contains(&format!("queue+{scheme}")) {
                    specs.push(url.clone());
                    specs.push(format!("queue+{url}"));
                } else {
                    specs.push(url);
                }
            }
            _ => eprintln!("note: {scheme} strategies skipped; set {var} to include them"),
        }
    }
    specs
}

/// One group per harness workload: the harness's ops, fresh data per sample.
fn workload_group(c: &mut Criterion, workload: Workload) {
    let registry = registry();
    let mut group = c.benchmark_group(workload.name());
    // Each sample is one short run on fresh data. Its start-up inside the timed part (the
    // first writes to a new database, about a millisecond) stays out of the estimate:
    // criterion's linear sampling times samples of d, 2d, … 10d ops and reports the slope.
    group.throughput(Throughput::Elements(1));
    for spec in specs() {
        let label = redact_url(spec);
        let config = RunConfig::new(spec.as_str(), workload).transaction(true);
        // One op first, so that a strategy that cannot run here is skipped with a note
        // rather than failing in the middle of a measurement.
        match time_ops(&config.clone().threads(1).ops(1), &registry) {
            Err(e) => {
                eprintln!("note: {workload}/{label} skipped: {e}");
                continue;
            }
            Ok(t) if t.failed > 0 => {
                let why = t.first_error.unwrap_or_default();
                eprintln!("note: {workload}/{label} skipped: its op failed: {why}");
                continue;
            }
            Ok(_) => {}
        }
        for threads in THREADS {
            let config = config.clone().threads(threads);
            let warned = Cell::new(false);
            group.bench_function(BenchmarkId::new(&label, threads), |b| {
                b.iter_custom(|iters| {
                    let ops = usize::try_from(iters).unwrap_or(usize::MAX);
                    let timing = time_ops(&config.clone().ops(ops), &registry)
                        .unwrap_or_else(|e| panic!("{workload}/{label}/{threads}: {e}"));
                    if timing.failed > 0 && !warned.replace(true) {
                        eprintln!(
                            "note: {workload}/{label}/{threads}: {} of {} ops failed (timed all the same), first: {}",
                            timing.failed,
                            timing.ops,
                            timing.first_error.unwrap_or_default()
                        );
                    }
                    timing.wall
                })
            });
        }
    }
    group.finish();
}

/// The reference workload's strategy over a fresh database in `dir`, its table created.
fn open_insert(spec: &str, dir: &std::path::Path) -> Result<BoxSerializer<Connection>, String> {
    let registry = registry();
    // `optimistic` works on versioned records: there are no SQL rows to insert.
    let versioned_only = Spec::parse(spec).is_ok_and(|s| !registry.contains(s.name()))
        && turnstile_harness::run::knows(spec, &registry);
    if versioned_only {
        return Err("no SQL connection to insert with (it runs on versioned records)".into());
    }
    let db = Sqlite::new(dir.join("bench.db")).synchronous(Synchronous::Normal);
    let setup = Setup::new(db).timeout(Duration::from_secs(60));
    let strategy = registry.open(spec, &setup).map_err(|e| e.to_string())?;
    strategy
        .run_as(&[Key::whole()], Wait::Default, |db| {
            db.execute_batch(
                "CREATE TABLE IF NOT EXISTS events (id INTEGER PRIMARY KEY, v INTEGER)",
            )
        })
        .map_err(|e| e.to_string())?;
    Ok(strategy)
}

/// Runs `iters` one-row inserts spread over `threads` threads and returns the wall time
/// from the threads' common start, with how many failed and the first error.
fn run_inserts(
    strategy: &Arc<BoxSerializer<Connection>>,
    threads: usize,
    iters: u64,
) -> (Duration, u64, Option<String>) {
    let barrier = Arc::new(Barrier::new(threads + 1));
    let handles: Vec<_> = (0..threads as u64)
        .map(|t| {
            let share = iters / threads as u64 + u64::from(t < iters % threads as u64);
            let strategy = strategy.clone();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                let key = Key::whole();
                let (mut failed, mut first) = (0, None);
                barrier.wait();
                for i in 0..share {
                    let result =
                        strategy.run_as(std::slice::from_ref(&key), Wait::Default, move |db| {
                            db.execute("INSERT INTO events (v) VALUES (?1)", [i as i64])
                        });
                    if let Err(e) = result {
                        failed += 1;
                        first.get_or_insert_with(|| format!("{}: {e}", e.kind()));
                    }
                }
                (failed, first)
            })
        })
        .collect();
    barrier.wait();
    let start = Instant::now();
    let (mut failed, mut first) = (0, None);
    for h in handles {
        let (f, e) = h.join().expect("bench thread panicked");
        failed += f;
        first = first.or(e);
    }
    (start.elapsed(), failed, first)
}

fn insert_one_row(c: &mut Criterion) {
    let mut group = c.benchmark_group("insert_one_row");
    group.throughput(Throughput::Elements(1));
    for spec in specs() {
        let label = redact_url(spec);
        let dir = tempfile::tempdir().expect("tempdir");
        let strategy = match open_insert(spec, dir.path()) {
            Ok(s) => Arc::new(s),
            Err(e) => {
                eprintln!("note: insert_one_row/{label} skipped: {e}");
                continue;
            }
        };
        for threads in THREADS {
            let warned = Cell::new(false);
            group.bench_function(BenchmarkId::new(&label, threads), |b| {
                b.iter_custom(|iters| {
                    let (wall, failed, first) = run_inserts(&strategy, threads, iters);
                    if failed > 0 && !warned.replace(true) {
                        eprintln!(
                            "note: insert_one_row/{label}/{threads}: {failed} of {iters} ops failed (timed all the same), first: {}",
                            first.unwrap_or_default()
                        );
                    }
                    wall
                })
            });
        }
    }
    group.finish();
}

fn harness_workloads(c: &mut Criterion) {
    for workload in Workload::ALL {
        workload_group(c, workload);
    }
}

criterion_group! {
    name = benches;
    // Short by default (the whole suite in about a quarter of an hour on two cores); the command
    // line overrides these (`-- --measurement-time 5 --sample-size 20`).
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = insert_one_row, harness_workloads
}
criterion_main!(benches);
