//! # turnstile-harness
//!
//! Workloads, a recorded history, checkers and negative controls that prove which
//! turnstile strategy is correct for a workload, and the `turnstile` CLI that compares
//! them side by side.
#![forbid(unsafe_code)]
pub mod compare;
