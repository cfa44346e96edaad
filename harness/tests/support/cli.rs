//! The `turnstile` binary as the CLI tests run it.
#![allow(dead_code)] // Each test binary uses its own part of this.

use std::process::Command;

/// The `turnstile` binary Cargo built for these tests.
pub(crate) const EXE: &str = env!("CARGO_BIN_EXE_turnstile");

/// `check`'s own variables, which stand for its URL flags (see `check --help`).
pub(crate) const CHECK_ENV: [&str; 2] = ["TURNSTILE_CHECK_STRATEGY", "TURNSTILE_CHECK_DATA"];

/// `compare`'s own variables, which stand for its flags (see `compare --help`).
pub(crate) const COMPARE_ENV: [&str; 5] = [
    "TURNSTILE_COMPARE_DATA",
    "TURNSTILE_COMPARE_REDIS",
    "TURNSTILE_COMPARE_MYSQL",
    "TURNSTILE_COMPARE_POSTGRES",
    "TURNSTILE_COMPARE_STRATEGIES",
];

/// Runs `turnstile check ARGS…`: its exit code (-1 when killed by a signal), stdout and
/// stderr.
pub(crate) fn check(args: &[&str]) -> (i32, String, String) {
    check_env(args, &[])
}

/// [`check`] with `env` set, and none of `check`'s own variables a shell may have
/// exported besides.
pub(crate) fn check_env(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut command = Command::new(EXE);
    for var in CHECK_ENV {
        command.env_remove(var);
    }
    let out = command
        .arg("check")
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("turnstile runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs `turnstile worker` with `stdin` as its input (a worker reads its spec from the first
/// line): its exit code (-1 when killed by a signal) and stdout.
pub(crate) fn worker(stdin: &str) -> (i32, String) {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = Command::new(EXE)
        .arg("worker")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("turnstile runs");
    let mut input = child.stdin.take().expect("piped stdin");
    // A worker that already gave up closed its end: its answer is on stdout.
    let _ = input.write_all(stdin.as_bytes());
    drop(input);
    let out = child.wait_with_output().expect("turnstile runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// Checks a `--help` text: it names each of `vars` (`[env: VAR]`), says why they exist
/// (out of `ps`), and never shows a value set in them (`env-secret`).
pub(crate) fn assert_help_names_env(help: &str, vars: &[&str]) {
    for var in vars {
        assert!(
            help.contains(&format!("[env: {var}]")),
            "{var} missing from:\n{help}"
        );
    }
    assert!(
        help.contains("out of ps") && !help.contains("env-secret"),
        "{help}"
    );
}

/// The processes whose parent is `parent`, from `/proc`.
pub(crate) fn children(parent: u32) -> Vec<u32> {
    children_where(parent, |_| true)
}

/// The children of process `parent` named `name`, from `/proc`.
pub(crate) fn children_named(parent: u32, name: &str) -> Vec<u32> {
    children_where(parent, |comm| comm == name)
}

fn children_where(parent: u32, named: impl Fn(&str) -> bool) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // pid (comm) state ppid …: comm may hold spaces, so read after its `)`.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let ppid = stat[close + 1..].split_whitespace().nth(1);
        if named(&stat[open + 1..close]) && ppid == Some(&parent.to_string()) {
            found.push(pid);
        }
    }
    found
}

/// Whether process `pid` is gone (or a zombie: dead, not yet reaped).
pub(crate) fn gone(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |stat| {
        stat.rfind(')')
            .and_then(|close| stat[close + 1..].split_whitespace().next())
            == Some("Z")
    })
}

/// Two loops of symbolic links in `dir`, as output paths no one can write: a link to
/// itself, and the first of two links to each other.
pub(crate) fn link_loops(dir: &std::path::Path) -> [std::path::PathBuf; 2] {
    let selfish = dir.join("loop");
    std::os::unix::fs::symlink("loop", &selfish).unwrap();
    let (a, b) = (dir.join("a"), dir.join("b"));
    std::os::unix::fs::symlink(&b, &a).unwrap();
    std::os::unix::fs::symlink("a", &b).unwrap();
    [selfish, a]
}

/// Lays out a file-lock directory at `locks` (a small `check` through it) and holds every
/// one of its stripes, as a stale process would: until the files are dropped, no op of
/// `file-lock:LOCKS` can start.
pub(crate) fn hold_every_stripe(locks: &std::path::Path) -> Vec<std::fs::File> {
    let spec = format!("file-lock:{}", locks.display());
    let (code, out, err) = check(&["--strategy", &spec, "--workload", "counter", "--ops", "10"]);
    assert_eq!(code, 0, "the lock directory is laid out: {out}{err}");
    let layout = std::fs::read_to_string(locks.join("layout")).unwrap();
    let stripes: usize = layout
        .lines()
        .find_map(|l| l.strip_prefix("stripes "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no stripe count in {layout:?}"));
    (0..stripes)
        .map(|i| {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(locks.join(format!("stripe-{i:04}.lock")))
                .unwrap();
            rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive).unwrap();
            file
        })
        .collect()
}
