//! The conformance suite, one line per strategy (see `turnstile_harness::conformance`).
//! Strategies that need a server or a later merge add their line here.

turnstile_harness::conformance_suite!(mutex, "mutex", procs = false);
// ANCHOR: conformance_line
turnstile_harness::conformance_suite!(busy_timeout, "busy-timeout", procs = true, kill = true);
// ANCHOR_END: conformance_line
