//! The composed `queue+redis://…` (a queue in each process whose worker takes a fenced Redis
//! lease once per batch) against `TURNSTILE_REDIS_URL`: the whole suite across processes and
//! under SIGKILL, 4 processes × 8 threads, and a holder paused past its lease's TTL, whose
//! whole batch the fence must refuse. A 500 ms TTL keeps kill runs short.

use std::time::Duration;

use turnstile_harness::conformance::{assert_passes, redis_url, with_query};
use turnstile_harness::nemesis::Nemesis;
use turnstile_harness::{RunConfig, Workload};

fn spec(ttl_ms: u64) -> String {
    format!(
        "queue+{}",
        with_query(&redis_url(), &format!("ttl_ms={ttl_ms}"))
    )
}

turnstile_harness::conformance_suite!(queue_redis, &spec(500), procs = true, kill = true);

#[test]
fn four_processes_of_eight_threads_pass_every_workload() {
    for workload in [
        Workload::Counter,
        Workload::Bank,
        Workload::Kv,
        Workload::FileStore,
    ] {
        assert_passes(
            &RunConfig::new(spec(500), workload)
                .procs(4)
                .threads(8)
                .ops(800)
                .worker_exe(env!("CARGO_BIN_EXE_turnstile")),
        );
    }
}

#[test]
fn a_batch_paused_past_its_ttl_is_refused_by_the_fence() {
    let report = assert_passes(
        // Enough ops that the processes still have work when the first fault comes (100 ms
        // in): a fast run could otherwise be almost over by then.
        &RunConfig::new(spec(300), Workload::Counter)
            .threads(2)
            .procs(3)
            .ops(600)
            .keys(1)
            .nemesis(Nemesis::Stop {
                pause: Duration::from_millis(800),
            })
            .transaction(true)
            .worker_exe(env!("CARGO_BIN_EXE_turnstile")),
    );
    let text = turnstile_harness::report::text(&report);
    assert!(
        !report.faults.is_empty(),
        "the nemesis never struck:\n{text}"
    );
    assert!(report.transactional, "{text}");
    let refused: usize = ["lease-lost", "stale-fence"]
        .iter()
        .filter_map(|kind| report.errors.get(*kind))
        .sum();
    assert!(refused > 0, "no paused batch was refused:\n{text}");
}
