//! The queue's conformance suite. It passes once the `queue` strategy is registered in
//! `Registry::<Sqlite>::builtin()`; until then every test here fails with "unknown
//! strategy".

turnstile_harness::conformance_suite!(queue, "queue", procs = false, kill = false);

/// The acceptance command, through the CLI: the queue loses no increment where the
/// unserialized control loses hundreds.
#[test]
fn queue_counter_through_the_cli_passes() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_turnstile"))
        .args([
            "check",
            "--strategy",
            "queue",
            "--workload",
            "counter",
            "--threads",
            "8",
            "--ops",
            "2000",
        ])
        .output()
        .expect("turnstile runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("none lost"), "{text}");
}

/// Over SQLite with `synchronous = FULL` the queue passes the checkers on every SQLite
/// workload it runs: as it is, where commits that take 100 µs or more (a disk that
/// syncs slowly; not tmpfs) make its batches wait for callers on their way back
/// (gathering, which `callers_on_their_way_back_join_a_slow_commit` in the strategies'
/// tests forces with slow commits), and with its flush overlapped (`queue-overlap`),
/// where it defers each commit's `fsync` to its flushing thread.
#[test]
fn queue_with_full_sync_passes_the_checkers() {
    for (strategy, workload) in ["queue", "queue-overlap"]
        .into_iter()
        .flat_map(|s| ["counter", "bank", "notify_once", "kv"].map(|w| (s, w)))
    {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_turnstile"))
            .args([
                "check",
                "--strategy",
                strategy,
                "--workload",
                workload,
                "--sync",
                "full",
                "--threads",
                "8",
                "--ops",
                "800",
            ])
            .output()
            .expect("turnstile runs");
        assert_eq!(
            out.status.code(),
            Some(0),
            "{strategy} {workload}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
