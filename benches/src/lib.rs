//! Criterion benchmarks for turnstile live in `benches/`; this library is empty.
