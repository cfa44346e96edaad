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
