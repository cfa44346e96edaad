//! The composed `queue+file-lock` (a queue in each process whose worker takes the file
//! lock once per batch): the whole suite, across processes and under SIGKILL, and the
//! issue's 4 processes × 8 threads.

use turnstile_harness::conformance::assert_passes;
use turnstile_harness::{RunConfig, Workload};

turnstile_harness::conformance_suite!(
    queue_file_lock,
    "queue+file-lock",
    procs = true,
    kill = true
);

#[test]
fn four_processes_of_eight_threads_pass_every_workload() {
    for workload in [
        Workload::Counter,
        Workload::Bank,
        Workload::Kv,
        Workload::FileStore,
    ] {
        assert_passes(
            &RunConfig::new("queue+file-lock", workload)
                .procs(4)
                .threads(8)
                .ops(800)
                .worker_exe(env!("CARGO_BIN_EXE_turnstile")),
        );
    }
}
