//! `turnstile compare`: every available strategy on the same workloads, side by side, with
//! the harness's verdict from the same run.

pub mod baselines;
pub mod report;
pub mod stats;
pub mod svg;
