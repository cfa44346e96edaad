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

/// The queue with its flush overlapped (`queue-overlap`), over SQLite with
/// `synchronous = FULL` where it defers each commit's `fsync` to its flushing thread,
/// passes the checkers on every SQLite workload the queue runs.
#[test]
fn queue_overlap_with_full_sync_passes_the_checkers() {
    for workload in ["counter", "bank", "notify_once", "kv"] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_turnstile"))
            .args([
                "check",
                "--strategy",
                "queue-overlap",
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
            "{workload}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
