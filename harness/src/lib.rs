//! # turnstile-harness
//!
//! Proves which turnstile strategy is correct for a workload — and catches the ones that
//! are not. A run puts a [`workload`] through a strategy from the spec [`registry`] in
//! threads and child processes ([`procs`]), optionally with faults ([`nemesis`]), records
//! a [`history`] of every op, and hands it to the [`check`]ers, which the strategy's
//! [`Capabilities`](turnstile::Capabilities) select. The workload's [`data`] is a SQLite
//! file, or tables of the run's own in a PostgreSQL or MySQL database
//! ([`RunConfig::data`]), as plain rows or as versioned records (`optimistic`).
//!
//! SQLite's own `BEGIN IMMEDIATE` serializes writers across processes, so a broken lock
//! passes any workload run inside a SQLite transaction. Lock strategies therefore run the
//! workloads in autocommit (only their lock excludes), and the negative [`controls`] prove
//! that the checkers catch a missing lock, a racy lock, and a lock used outside its scope.
//!
//! ```
//! use turnstile_harness::{RunConfig, Workload, registry, run};
//! use turnstile_harness::check::Verdict;
//!
//! let report = run(&RunConfig::new("mutex", Workload::Counter).threads(4).ops(200), &registry())?;
//! assert_eq!(report.verdict, Verdict::Pass);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Every strategy gets the same conformance suite with one line of
//! [`conformance_suite!`]. [`bench::time_ops`] times a workload's ops without history or
//! checks: what the criterion benchmarks (`benches/`) measure.
#![forbid(unsafe_code)]
pub mod baseline;
pub mod bench;
pub mod check;
pub mod compare;
pub mod conformance;
pub mod controls;
pub mod data;
pub mod history;
pub mod interrupt;
pub mod nemesis;
pub mod procs;
pub mod report;
pub mod run;
pub mod workload;

pub use data::DataSpec;
pub use run::{
    MAX_TIME_LIMIT, RunConfig, RunError, RunFailure, RunReport, WorkerSpec, registry, run,
};
pub use workload::Workload;
