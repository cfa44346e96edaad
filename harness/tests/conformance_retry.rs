//! `retry`'s conformance suite: no lock, the whole transaction rerun on busy. It does not
//! promise to exclude (no overlap checker), but every workload's invariant holds, in
//! processes and under SIGKILLs, because SQLite's write transaction serializes writers.

turnstile_harness::conformance_suite!(retry, "retry", procs = true, kill = true);
