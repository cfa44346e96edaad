//! The queue's conformance suite. It passes once the `queue` strategy is registered in
//! `Registry::<Sqlite>::builtin()`; until then every test here fails with "unknown
//! strategy".

turnstile_harness::conformance_suite!(queue, "queue", procs = false, kill = false);
