//! Issue 5's negative control: a Redis lease outlived by a paused holder.
//!
//! A worker stopped (SIGSTOP) in its critical section for longer than the lease's TTL
//! loses the lease without knowing; a successor takes the name and writes. When the holder
//! resumes, `redis-nofence` (no fencing token, autocommit) lets its stale write through and
//! the checkers must catch it; the fenced `redis` in its transaction refuses the stale
//! commit, and every checker passes under the same pauses. Both need the Redis server at
//! `TURNSTILE_REDIS_URL` (default `redis://127.0.0.1:6379`) and fail when it is down.

use std::time::Duration;

#[path = "support/cli.rs"]
mod cli_support;

use turnstile_harness::check::Verdict;
use turnstile_harness::conformance::{assert_passes, redis_url, with_query};
use turnstile_harness::nemesis::Nemesis;
use turnstile_harness::{RunConfig, Workload, registry, report, run};

const EXE: &str = env!("CARGO_BIN_EXE_turnstile");
/// The lease TTL: the pause below outlasts it.
const TTL_MS: u64 = 300;
/// The pause: more than twice the TTL, so the successor has long taken over.
const PAUSE: Duration = Duration::from_millis(800);

/// `counter` on one key in 3 processes × 2 threads, each process stopped in its critical
/// section for [`PAUSE`] (at most `nemesis::MAX_FAULTS` times). Enough ops that the other
/// processes still have work when one is stopped: with 120, a fast lock let the first
/// process do nearly all of them before the first fault (100 ms in), and a successor
/// rarely came to overlap the stopped holder.
fn paused(spec: &str) -> RunConfig {
    RunConfig::new(spec, Workload::Counter)
        .threads(2)
        .procs(3)
        .ops(600)
        .keys(1)
        .nemesis(Nemesis::Stop { pause: PAUSE })
        .worker_exe(EXE)
}

fn nofence_spec() -> String {
    let url = redis_url();
    let rest = url.split_once("://").map_or(url.as_str(), |(_, r)| r);
    with_query(
        &format!("redis-nofence://{rest}"),
        &format!("ttl_ms={TTL_MS}"),
    )
}

#[test]
fn redis_without_fencing_is_caught_when_a_holder_pauses_past_its_ttl() {
    let config = paused(&nofence_spec());
    let report = run(&config, &registry()).expect("the run produces a verdict");
    let text = report::text(&report);
    assert!(
        !report.faults.is_empty(),
        "the nemesis never struck:\n{text}"
    );
    assert_eq!(report.verdict, Verdict::Violation, "not caught:\n{text}");
    assert_eq!(report.exit_code(), 1, "{text}");
    // The stale holder's write went through: an increment is lost.
    let lost = report.check("lost_update").expect("lost_update ran");
    assert_eq!(lost.verdict, Verdict::Violation, "{text}");
}

#[test]
fn fenced_redis_in_its_transaction_refuses_the_paused_holder() {
    let spec = with_query(&redis_url(), &format!("ttl_ms={TTL_MS}"));
    let report = assert_passes(&paused(&spec).transaction(true));
    let text = report::text(&report);
    assert!(
        !report.faults.is_empty(),
        "the nemesis never struck:\n{text}"
    );
    assert!(report.transactional, "{text}");
    // The checkers alone prove little here: in its transaction a stale holder also holds
    // SQLite's write lock, which keeps its successor out. What must show is that the
    // holders paused past their lease were refused (lease lost / stale fence), not
    // committed; with both defences removed from `Locked` this assertion fails.
    let refused: usize = ["lease-lost", "stale-fence"]
        .iter()
        .filter_map(|kind| report.errors.get(*kind))
        .sum();
    assert!(refused > 0, "no paused holder was refused:\n{text}");
}

/// The control's spec, and the TTL parameter of both, are checked: a typed usage error
/// (exit 2), before any server is asked.
#[test]
fn bad_redis_specs_are_usage_errors() {
    for bad in [
        "redis-nofence",
        "redis",
        "Redis",
        "redis+unix",
        "redlock",
        "redis-nofence://127.0.0.1:6379/?ttl_ms=soon",
        "redis://127.0.0.1:6379/?ttl_ms=abc",
        "redis://127.0.0.1:6379/?ttl_ms=0",
        "redis://127.0.0.1:6379/?ttl_ms=5&ttl_ms=500",
        // Misspelt: each would have run with the default TTL of 8 s.
        "redis-nofence://127.0.0.1:6379/0?ttl=300",
        "redis-nofence://127.0.0.1:6379/0?tll_ms=300",
        "redis://127.0.0.1:6379/0?ttl=2000",
    ] {
        let config = RunConfig::new(bad, Workload::Counter).threads(1).ops(1);
        match run(&config, &registry()) {
            Err(e) => {
                assert_eq!(e.exit_code(), 2, "{bad}: {e}");
                let text = e.to_string();
                // A bare name is told the form of its URL.
                if !bad.contains(':') {
                    let scheme = bad.to_ascii_lowercase();
                    assert!(text.contains(&format!("{scheme}://")), "{text}");
                }
                if bad.contains("?tt") && !bad.contains("ttl_ms") {
                    assert!(text.contains("unknown URL parameter \"ttl\""), "{text}");
                }
                assert!(!text.contains("300"), "{bad}: {text}");
            }
            Ok(r) => panic!("{bad} ran:\n{}", report::text(&r)),
        }
    }
}

/// The same pause through the CLI: `--transaction` puts the lock strategies in the
/// resource's transaction, where `redis` refuses the paused holder and `redis-nofence`
/// is still caught.
#[test]
fn the_cli_runs_a_paused_holder_in_its_transaction_when_asked() {
    let fenced = with_query(&redis_url(), &format!("ttl_ms={TTL_MS}"));
    let pause = format!("stop:{}", PAUSE.as_millis());
    let args = |spec: &str| {
        [
            "--strategy",
            spec,
            "--workload",
            "counter",
            "--threads",
            "2",
            "--procs",
            "3",
            "--ops",
            "600",
            "--keys",
            "1",
            "--nemesis",
            &pause,
            "--transaction",
        ]
        .map(str::to_owned)
    };
    let (code, out, err) = cli_support::check(&args(&fenced).each_ref().map(String::as_str));
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("inside the resource's transaction"), "{out}");
    let (code, out, err) =
        cli_support::check(&args(&nofence_spec()).each_ref().map(String::as_str));
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("lost_update   VIOLATION"), "{out}");
}
