//! Negative controls through the real CLI: the checkers must catch a missing lock, a racy
//! lock, a racy optimistic commit, a lock used outside its scope and a queue that swallows
//! its ops' errors, every time, and say what broke.

#[path = "support/cli.rs"]
mod cli_support;

/// Runs `turnstile check` with `args`; returns the exit code and stdout followed by stderr.
fn check(args: &[&str]) -> (i32, String) {
    let (code, stdout, stderr) = cli_support::check(args);
    (code, format!("{stdout}{stderr}"))
}

fn assert_caught(args: &[&str], evidence: &[&str]) -> String {
    let (code, out) = check(args);
    assert_eq!(
        code, 1,
        "expected a violation (exit 1) for {args:?}:\n{out}"
    );
    for e in evidence {
        assert!(out.contains(e), "{args:?}: report lacks {e:?}:\n{out}");
    }
    out
}

/// The number right after `marker` in `out` (`lost increments: 12 of …` → 12), which must
/// be there and above zero: a summary that names the failure also when nothing of it
/// happened (`lost increments: 0 of …`, `(0 torn reads)`) is no evidence.
fn assert_some(out: &str, marker: &str) -> u64 {
    let at = out
        .find(marker)
        .unwrap_or_else(|| panic!("report lacks {marker:?}:\n{out}"))
        + marker.len();
    let digits: String = out[at..].chars().take_while(char::is_ascii_digit).collect();
    let n: u64 = digits
        .parse()
        .unwrap_or_else(|_| panic!("no count after {marker:?}:\n{out}"));
    assert!(n > 0, "{marker:?} counts none:\n{out}");
    n
}

/// Increments were lost: the counter's count is above zero.
fn assert_lost_increments(out: &str) {
    assert_some(out, "lost increments: ");
}

#[test]
fn unserialized_counter_loses_increments_and_mutex_does_not() {
    let out = assert_caught(
        &[
            "--strategy",
            "unserialized",
            "--workload",
            "counter",
            "--threads",
            "8",
            "--ops",
            "2000",
        ],
        &[
            "lost_update   VIOLATION",
            "key c0",
            "overlap       VIOLATION",
            "overlaps",
        ],
    );
    assert_lost_increments(&out);
    assert!(
        out.contains("written by"),
        "names the ops that wrote one value:\n{out}"
    );
    let (code, out) = check(&[
        "--strategy",
        "mutex",
        "--workload",
        "counter",
        "--threads",
        "8",
        "--ops",
        "2000",
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("none lost") && out.contains("verdict: PASS"),
        "{out}"
    );
}

#[test]
fn racy_version_is_caught_by_counter_and_kv() {
    // A 500 µs window between reading the lock row and claiming it. Two ops that both
    // got in must also meet between read and write for a stale read to show: left to
    // chance (a 50 µs think), a kv run once had a single overlap and a linearizable
    // history. The rendezvous holds each op there until another thread is there too.
    let racy = |workload| {
        [
            "--strategy",
            "racy-version:500",
            "--workload",
            workload,
            "--threads",
            "6",
            "--ops",
            "300",
            "--rendezvous-us",
            "2000",
        ]
    };
    assert_caught(&racy("counter"), &["lost_update   VIOLATION", "overlaps"]);
    let out = assert_caught(&racy("kv"), &["linearizable  VIOLATION", "overlaps"]);
    assert!(out.contains("key k"), "names the key:\n{out}");

    // Seed 003's system raced in several processes, one op at a time each. Unaided,
    // four single-threaded processes seldom meet in the window; the rendezvous holds each
    // op between its read and its write until another process is there too.
    let racy_procs = |workload| {
        [
            "--strategy",
            "racy-version:500",
            "--workload",
            workload,
            "--procs",
            "4",
            "--threads",
            "1",
            "--ops",
            "200",
            "--rendezvous-us",
            "3000",
        ]
    };
    let out = assert_caught(
        &racy_procs("counter"),
        &["lost_update   VIOLATION", "(pid "],
    );
    assert_lost_increments(&out);
    assert_caught(
        &racy_procs("kv"),
        &["linearizable  VIOLATION", "key k", "(pid "],
    );
}

/// Seed 003's optimistic scheme as written (compare the versions read, then write, in
/// separate steps): listed as a negative control over versioned records, and caught by
/// `counter` and `kv` across threads and processes, where `optimistic` passes the same
/// runs. The rendezvous holds each op between its read and its write until another is
/// there too, so two ops read one version and commit within the 1 ms window.
#[test]
fn racy_optimistic_is_listed_and_caught_where_optimistic_passes() {
    let out = std::process::Command::new(cli_support::EXE)
        .arg("list")
        .output()
        .expect("turnstile runs");
    let list = String::from_utf8_lossy(&out.stdout);
    let line = list
        .lines()
        .find(|l| l.starts_with("racy-optimistic "))
        .unwrap_or_else(|| panic!("list lacks racy-optimistic:\n{list}"));
    assert!(
        line.contains("NEGATIVE CONTROL") && line.contains("[on versioned records]"),
        "{line}"
    );
    let args = |strategy, workload, procs| {
        [
            "--strategy",
            strategy,
            "--workload",
            workload,
            "--procs",
            procs,
            "--threads",
            if procs == "1" { "6" } else { "1" },
            "--ops",
            "300",
            "--rendezvous-us",
            "2000",
        ]
    };
    for procs in ["1", "4"] {
        let out = assert_caught(
            &args("racy-optimistic:1000", "counter", procs),
            &["lost_update   VIOLATION", "written by"],
        );
        assert_lost_increments(&out);
        assert_caught(
            &args("racy-optimistic:1000", "kv", procs),
            &["linearizable  VIOLATION", "key k"],
        );
        for workload in ["counter", "kv"] {
            let (code, out) = check(&args("optimistic", workload, procs));
            assert_eq!(code, 0, "optimistic / {workload} / {procs} procs:\n{out}");
        }
    }
    let (code, out) = check(&args("racy-optimistic:1000001", "counter", "1"));
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("0..=1000000"), "{out}");
}

/// Seed 001's consumer thread that swallows the op's error: on the `unique` workload, one
/// op in four breaks a UNIQUE key on purpose, and `own_error` names each whose caller did
/// not get that error back; `queue` hands every one back.
#[test]
fn swallow_errors_is_caught_by_own_error_and_queue_is_not() {
    let args = |strategy| {
        [
            "--strategy",
            strategy,
            "--workload",
            "unique",
            "--threads",
            "8",
            "--ops",
            "200",
            "--transaction",
        ]
    };
    let out = assert_caught(
        &args("swallow-errors"),
        &[
            "own_error     VIOLATION",
            "50 of 50 ops that fail on purpose did not get their own error back",
            "not the op's error",
            "lost_update   VIOLATION",
        ],
    );
    assert!(out.contains("failed increments took effect"), "{out}");
    let (code, out) = check(&args("queue"));
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("own_error     pass         each of 50 ops"),
        "{out}"
    );
}

#[test]
fn in_process_mutex_across_processes_is_caught() {
    let out = assert_caught(
        &[
            "--strategy",
            "mutex",
            "--workload",
            "counter",
            "--threads",
            "2",
            "--procs",
            "4",
            "--ops",
            "800",
            "--think-us",
            "100",
        ],
        &["outside its scope", "overlaps"],
    );
    assert_lost_increments(&out);
    // Overlaps between different processes are named by pid.
    assert!(out.contains("(pid "), "{out}");
}

#[test]
fn a_rendezvous_catches_the_out_of_scope_mutex_in_a_short_run_every_time() {
    // 40 ops in 2 processes: without the rendezvous most such runs happen to pass; with
    // it, the two processes' read-to-write windows meet on nearly every op.
    for _ in 0..3 {
        let out = assert_caught(
            &[
                "--strategy",
                "mutex",
                "--workload",
                "counter",
                "--threads",
                "1",
                "--procs",
                "2",
                "--ops",
                "40",
                "--rendezvous-us",
                "3000",
            ],
            &["overlaps"],
        );
        assert_lost_increments(&out);
    }
}

#[test]
fn file_store_without_a_lock_across_processes_is_caught() {
    let out = assert_caught(
        &[
            "--strategy",
            "unserialized",
            "--workload",
            "file_store",
            "--threads",
            "1",
            "--procs",
            "8",
            "--ops",
            "300",
        ],
        &["file_store    VIOLATION", "read a torn store"],
    );
    assert_some(&out, "lost records or tore (");
}

#[test]
fn every_workload_catches_the_unserialized_control() {
    for workload in ["bank", "notify_once", "kv", "file_store"] {
        // A notification races only until its flag is set, at the start of the run: a
        // rendezvous holds the first sender in its window until another op is in one too
        // (without it, a slow start let one run pass, once in many). On one notification
        // that other op read the same flag unset, so both send, every run.
        let (keys, meet): (&str, &[&str]) = match workload {
            "notify_once" => ("1", &["--rendezvous-us", "200000"]),
            _ => ("2", &[]),
        };
        let args = [
            "--strategy",
            "unserialized",
            "--workload",
            workload,
            "--threads",
            "6",
            "--ops",
            "400",
            "--think-us",
            "200",
            "--keys",
            keys,
        ];
        let (code, out) = check(&[&args[..], meet].concat());
        assert_eq!(code, 1, "{workload}: expected a violation:\n{out}");
        let own = match workload {
            "bank" => "bank          VIOLATION",
            "notify_once" => "exactly_once  VIOLATION",
            "kv" => "linearizable  VIOLATION",
            _ => "file_store    VIOLATION",
        };
        assert!(
            out.contains(own),
            "{workload}: its own checker must catch it:\n{out}"
        );
    }
}

#[test]
fn notify_stale_is_caught_under_a_lock_that_notify_once_passes_under() {
    // Seed 004's code as written reads the flag before taking the lock; the rendezvous
    // after that read lets other workers read it unset too. On one notification every op
    // reads the same flag, so the first reader's partner in the rendezvous read it unset
    // too and both send, whichever keys a random pick would have paired; the long
    // rendezvous covers a slow start of the other threads, and costs nothing once the
    // flag is set.
    let args = |workload| {
        [
            "--strategy",
            "mutex",
            "--workload",
            workload,
            "--threads",
            "8",
            "--ops",
            "400",
            "--keys",
            "1",
            "--rendezvous-us",
            "200000",
        ]
    };
    assert_caught(
        &args("notify_stale"),
        &[
            "exactly_once  VIOLATION",
            "effect performed",
            "overlap       pass",
        ],
    );
    let (code, out) = check(&args("notify_once"));
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("exactly_once  pass"), "{out}");
}
