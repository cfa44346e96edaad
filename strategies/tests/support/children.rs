//! Child processes for cross-process tests: the test binary re-executes itself to run one
//! test alone, and an environment variable tells that test which role it plays.
#![allow(dead_code)] // Each test binary uses its own part of this.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use turnstile::sqlite::{Sqlite, Synchronous};

/// The variable naming a child's role; absent in the parent.
pub(crate) const CHILD: &str = "TURNSTILE_TEST_CHILD";

/// How long a child may take before the test calls it hung.
pub(crate) const CHILD_PATIENCE: Duration = Duration::from_secs(120);

/// The role this process plays, if it is a child.
pub(crate) fn child_role() -> Option<String> {
    std::env::var(CHILD).ok()
}

/// This test binary, told to run `test` alone as a child playing `role`.
pub(crate) fn child(test: &str, role: &str) -> Command {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "--exact",
        test,
        "--nocapture",
        "--test-threads=1",
        "--include-ignored",
    ])
    .env(CHILD, role)
    .stdin(Stdio::null())
    // The child's own "test result" line would be counted as the parent's.
    .stdout(Stdio::null());
    cmd
}

/// Spawns `processes` children of `test` playing `role`, each told the database `DB`
/// (`db`), its number `PROCESS`, the start signal `GO` and `envs`. They start together once
/// the parent [`touch`]es the returned start signal (see [`wait_for_go`]).
pub(crate) fn spawn_workers(
    test: &str,
    role: &str,
    processes: u32,
    db: &Path,
    envs: &[(&str, String)],
) -> (Children, PathBuf) {
    let go = db.with_extension("go");
    let children = (0..processes)
        .map(|i| {
            let mut cmd = child(test, role);
            cmd.env("DB", db)
                .env("GO", &go)
                .env("PROCESS", i.to_string());
            for (k, v) in envs {
                cmd.env(k, v);
            }
            cmd.spawn().unwrap()
        })
        .collect();
    (Children(children), go)
}

/// [`spawn_workers`], then gives the start signal and waits for every child to succeed.
pub(crate) fn run_workers(
    test: &str,
    role: &str,
    processes: u32,
    db: &Path,
    envs: &[(&str, String)],
) {
    let (mut children, go) = spawn_workers(test, role, processes, db, envs);
    touch(&go);
    children.wait_success();
}

/// In a child of [`spawn_workers`]: waits for the parent's start signal.
pub(crate) fn wait_for_go() {
    let go = env_path("GO");
    wait_until("the start signal", || go.exists());
}

/// Runs `work` on `threads` threads at once and waits for them all; a panic in any of
/// them fails the caller.
pub(crate) fn on_threads(threads: u32, work: impl Fn() + Send + Sync + 'static) {
    let work = Arc::new(work);
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let work = work.clone();
            std::thread::spawn(move || work())
        })
        .collect();
    for handle in handles {
        handle.join().unwrap();
    }
}

/// Kills every child still running when dropped, so a failing test leaves no orphans.
pub(crate) struct Children(pub(crate) Vec<Child>);

impl Children {
    /// Waits for every child (bounded by [`CHILD_PATIENCE`]) and fails unless each one
    /// succeeded.
    pub(crate) fn wait_success(&mut self) {
        for status in self.wait_all() {
            assert!(status.success(), "a worker failed: {status}");
        }
    }

    /// Waits for every child (bounded by [`CHILD_PATIENCE`]) and returns their statuses.
    pub(crate) fn wait_all(&mut self) -> Vec<ExitStatus> {
        let give_up = Instant::now() + CHILD_PATIENCE;
        let mut statuses = Vec::new();
        for child in &mut self.0 {
            loop {
                if let Some(status) = child.try_wait().unwrap() {
                    statuses.push(status);
                    break;
                }
                assert!(Instant::now() < give_up, "a child process hung");
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        statuses
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        for child in &mut self.0 {
            if child.try_wait().ok().flatten().is_none() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// A variable the parent set for its children, as text.
pub(crate) fn env_text(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} not set"))
}

/// A variable the parent set for its children, as a path.
pub(crate) fn env_path(name: &str) -> PathBuf {
    PathBuf::from(env_text(name))
}

/// A variable the parent set for its children, as a number.
pub(crate) fn env_u32(name: &str) -> u32 {
    env_text(name).parse().unwrap()
}

/// Waits (bounded by [`CHILD_PATIENCE`]) until `done` holds.
pub(crate) fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let give_up = Instant::now() + CHILD_PATIENCE;
    while !done() {
        assert!(Instant::now() < give_up, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Creates an empty file: a signal between processes.
pub(crate) fn touch(path: &Path) {
    std::fs::File::create(path).unwrap();
}

/// The test database at `path`, as every process opens it.
pub(crate) fn db_at(path: &Path) -> Sqlite {
    Sqlite::new(path).synchronous(Synchronous::Normal)
}
