//! Strategies side by side: one group per workload (a one-row insert; a read-modify-write
//! counter), each strategy at 1, 4 and 16 threads.
//!
//! Strategies come from the spec registry, so every strategy compiled in joins without
//! changes here. Server strategies join when their URL is set (`TURNSTILE_REDIS_URL`,
//! `TURNSTILE_MYSQL_URL`, `TURNSTILE_POSTGRES_URL`) and are skipped with a printed note
//! otherwise. Run: `cargo bench -p turnstile-benches`.
#![allow(missing_docs)]

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use turnstile::spec::{Registry, Setup};
use turnstile::sqlite::rusqlite::Connection;
use turnstile::sqlite::{Sqlite, Synchronous};
use turnstile::{BoxSerializer, Key, Wait};

const THREADS: [usize; 3] = [1, 4, 16];

/// The specs to compare: every embedded strategy in the registry, plus server strategies
/// whose URL is in the environment.
fn specs(registry: &Registry<Sqlite>) -> Vec<String> {
    let mut specs = Vec::new();
    for (name, _) in registry.names() {
        // Server strategies (and compositions over them) need a URL: added below.
        let needs_server = ["redis", "redlock", "mysql", "postgres"]
            .iter()
            .any(|server| name.contains(server));
        if !needs_server {
            specs.push(name.to_owned());
        }
    }
    for (var, scheme) in [
        ("TURNSTILE_REDIS_URL", "redis"),
        ("TURNSTILE_MYSQL_URL", "mysql"),
        ("TURNSTILE_POSTGRES_URL", "postgres"),
    ] {
        if !registry.contains(scheme) {
            continue;
        }
        match std::env::var(var) {
            Ok(url) => {
                if scheme == "redis" && registry.contains("queue+redis") {
                    specs.push(format!("queue+{url}"));
                }
                specs.push(url);
            }
            Err(_) => eprintln!("note: {scheme} skipped; set {var} to include it"),
        }
    }
    specs
}

fn open(spec: &str, dir: &std::path::Path) -> Option<BoxSerializer<Connection>> {
    let db = Sqlite::new(dir.join("bench.db")).synchronous(Synchronous::Normal);
    let setup = Setup::new(db).timeout(Duration::from_secs(60));
    let strategy = match Registry::builtin().open(spec, &setup) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("note: {spec} skipped: {e}");
            return None;
        }
    };
    let created = strategy.run_as(&[Key::whole()], Wait::Default, |db| {
        db.execute_batch(
            "CREATE TABLE IF NOT EXISTS events (id INTEGER PRIMARY KEY, v INTEGER);
             CREATE TABLE IF NOT EXISTS counter (id INTEGER PRIMARY KEY, n INTEGER NOT NULL);
             INSERT OR IGNORE INTO counter VALUES (1, 0);",
        )
    });
    match created {
        Ok(()) => Some(strategy),
        Err(e) => {
            eprintln!("note: {spec} skipped: {e}");
            None
        }
    }
}

/// What one op does.
#[derive(Clone, Copy)]
enum Workload {
    /// Insert one row.
    Insert,
    /// Read the counter, then write it back incremented (two statements).
    Counter,
}

fn op(db: &Connection, workload: Workload, i: u64) -> turnstile::sqlite::rusqlite::Result<usize> {
    match workload {
        Workload::Insert => db.execute("INSERT INTO events (v) VALUES (?1)", [i as i64]),
        Workload::Counter => {
            let n: i64 = db.query_row("SELECT n FROM counter WHERE id = 1", [], |r| r.get(0))?;
            db.execute("UPDATE counter SET n = ?1 WHERE id = 1", [n + 1])
        }
    }
}

/// Runs `iters` ops spread over `threads` threads and returns the wall time.
fn run_ops(
    strategy: &Arc<BoxSerializer<Connection>>,
    workload: Workload,
    threads: usize,
    iters: u64,
) -> Duration {
    let barrier = Arc::new(Barrier::new(threads + 1));
    let per_thread = iters.div_ceil(threads as u64);
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let strategy = strategy.clone();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                let key = Key::whole();
                barrier.wait();
                for i in 0..per_thread {
                    let result =
                        strategy.run_as(std::slice::from_ref(&key), Wait::Default, move |db| {
                            op(db, workload, i)
                        });
                    if let Err(e) = result {
                        eprintln!("op failed: {e}");
                    }
                }
            })
        })
        .collect();
    let start = Instant::now();
    barrier.wait();
    for h in handles {
        h.join().expect("bench thread panicked");
    }
    start.elapsed()
}

fn group(c: &mut Criterion, name: &str, workload: Workload) {
    let registry = Registry::builtin();
    let mut group = c.benchmark_group(name);
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(3));
    group.throughput(Throughput::Elements(1));
    for spec in specs(&registry) {
        let dir = tempfile::tempdir().expect("tempdir");
        let Some(strategy) = open(&spec, dir.path()) else {
            continue;
        };
        let strategy = Arc::new(strategy);
        let label = turnstile::spec::redact_url(&spec);
        for threads in THREADS {
            group.bench_with_input(BenchmarkId::new(&label, threads), &threads, |b, &t| {
                b.iter_custom(|iters| run_ops(&strategy, workload, t, iters))
            });
        }
    }
    group.finish();
}

fn one_row_insert(c: &mut Criterion) {
    group(c, "insert_one_row", Workload::Insert);
}

fn counter(c: &mut Criterion) {
    group(c, "counter", Workload::Counter);
}

criterion_group!(benches, one_row_insert, counter);
criterion_main!(benches);
