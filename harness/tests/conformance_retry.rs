//! `retry`'s conformance suite: no lock, the whole transaction rerun on busy. It still
//! claims to exclude (`excludes`), so the overlap checker runs too: SQLite's write
//! transaction (`BEGIN IMMEDIATE`) admits one writer at a time, so no two ops' sections
//! overlap, and every workload's invariant holds, in processes and under SIGKILLs.

turnstile_harness::conformance_suite!(retry, "retry", procs = true, kill = true);
