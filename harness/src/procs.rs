//! Child-process workers: the `turnstile` binary re-executes itself as `turnstile worker`
//! (a hidden subcommand), once per process of a run.
//!
//! The protocol is lines on the child's stdin and stdout:
//! - parent → child the worker's spec ([`WorkerSpec`] as one line of JSON), first thing:
//!   not on the command line, which every user of the host can read (`ps`), while the
//!   strategy spec and `--data` URL may carry passwords;
//! - child → parent `ready` once its strategy is open and probed; parent → child `go` when
//!   every worker is ready (the start barrier);
//! - child → parent `in` from inside a critical section, when the nemesis asked for it;
//! - parent → child `stop` when the run's time limit passed: start no new op, end the ops
//!   under way, write the history out;
//! - child → parent `done` (every op it was given, or every one it started before `stop`),
//!   or `error EXIT_CODE MESSAGE`.
//!
//! Each worker writes its own history file; the parent merges them. A worker the nemesis
//! killed is replaced by a new one (a new process index) that runs the ops it had left,
//! so acknowledged ops keep coming after the fault.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use turnstile::spec::Registry;
use turnstile::sqlite::Sqlite;

use crate::data::{Backend, WithBackend};
use crate::history::{History, now_ns};
use crate::nemesis::{self, Fault, MAX_FAULTS, Nemesis};
use crate::run::{RunConfig, RunError, WorkerSpec, run_threads};

/// How long a worker may take to open its strategy and report ready.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// How long the workers of a run past its time limit have, once asked to `stop`, to end
/// the ops they have under way and write their history out before they are killed.
pub const STOP_GRACE: Duration = Duration::from_secs(5);

/// Set in a worker process when its parent says `stop`.
static STOP: AtomicBool = AtomicBool::new(false);

/// Whether this process is a worker whose parent asked it to stop (its run's time limit
/// passed): its threads start no new op, and it ends as when done, its history written.
pub(crate) fn stop_asked() -> bool {
    STOP.load(Ordering::Relaxed)
}

enum Line {
    Text(String),
    Eof,
}

struct Slot {
    child: Child,
    stdin: Option<ChildStdin>,
    spec: WorkerSpec,
    ready: bool,
    /// Told `go`: it runs ops and writes a history file.
    started: bool,
    done: bool,
    killed: bool,
    err_path: PathBuf,
}

fn spawn(
    exe: &Path,
    spec: &WorkerSpec,
    slot: usize,
    tx: &Sender<(usize, Line)>,
) -> Result<Slot, RunError> {
    let json = serde_json::to_string(spec).map_err(|e| RunError::Worker(e.to_string()))?;
    let err_path = spec.paths.dir.join(format!("worker-{}.err", spec.proc));
    let stderr = std::fs::File::create(&err_path)?;
    let mut child = worker_command(exe)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .map_err(|e| RunError::Worker(format!("cannot start {}: {e}", exe.display())))?;
    // One line, far below a pipe's buffer: this cannot block on a child that never reads.
    let sent = match child.stdin.as_mut() {
        Some(stdin) => writeln!(stdin, "{json}").and_then(|()| stdin.flush()),
        None => Err(std::io::Error::other("no stdin")),
    };
    if let Err(e) = sent {
        let _ = child.kill();
        let _ = child.wait();
        return Err(RunError::Worker(format!(
            "cannot send worker p{} its spec: {e}",
            spec.proc
        )));
    }
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| RunError::Worker("no stdout".into()))?;
    let tx = tx.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            match line {
                Ok(l) => {
                    if tx.send((slot, Line::Text(l))).is_err() {
                        return;
                    }
                }
                Err(_) => break,
            }
        }
        let _ = tx.send((slot, Line::Eof));
    });
    Ok(Slot {
        stdin: child.stdin.take(),
        child,
        spec: spec.clone(),
        ready: false,
        started: false,
        done: false,
        killed: false,
        err_path,
    })
}

/// The command that starts a worker: `EXE worker`, and nothing else on its command line
/// (the spec follows on its stdin).
fn worker_command(exe: &Path) -> Command {
    let mut command = Command::new(exe);
    command.arg("worker");
    command
}

fn go(slot: &mut Slot) {
    slot.started = true;
    tell(slot, "go");
}

/// Sends `line` to the worker; one that died before reading it shows up as EOF on its
/// stdout.
fn tell(slot: &mut Slot, line: &str) {
    if let Some(stdin) = slot.stdin.as_mut() {
        let _ = writeln!(stdin, "{line}").and_then(|()| stdin.flush());
    }
}

fn kill_all(slots: &mut [Slot]) {
    for slot in slots {
        if slot.child.try_wait().ok().flatten().is_none() {
            let _ = slot.child.kill();
            let _ = slot.child.wait();
        }
    }
}

/// How many of a worker's ops ended (any way) or were cut off: everything it invoked.
fn invoked(path: &Path) -> usize {
    History::load(&[path]).map_or(0, |h| h.ops.len())
}

/// What the worker processes of a run left.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Ran {
    /// The faults injected.
    pub faults: Vec<Fault>,
    /// Every history file written.
    pub histories: Vec<PathBuf>,
    /// How the run's time limit cut it, if it did.
    pub cut: Option<Cut>,
}

/// A run its time limit ([`RunConfig::time_limit`]) cut short.
///
/// Worker processes are asked to `stop`: each starts no new op, ends the ops it has under
/// way and writes its history out, within [`STOP_GRACE`]; so the history holds every op
/// that started, each with its end. Those that do not stop in time are killed.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Cut {
    /// The time limit.
    pub limit: Duration,
    /// The worker processes (their indexes) that did not stop as asked within
    /// [`STOP_GRACE`] and were killed, or ended another way: their ops under way have no
    /// end, and a worker that held its history in memory
    /// ([`WorkerSpec::hold_history`]) lost what it held.
    pub unfinished: Vec<u32>,
}

impl Cut {
    /// A run cut at `limit` whose workers all stopped as asked (or whose threads, in this
    /// process, did).
    pub fn whole(limit: Duration) -> Self {
        Cut {
            limit,
            unfinished: Vec::new(),
        }
    }
}

/// Runs the worker processes of `config` (spec.proc is the first index) and returns the
/// faults injected and every history file written; past the run's time limit, what the
/// workers wrote until they stopped ([`Ran::cut`]).
///
/// # Errors
/// [`RunError::Unavailable`] when a worker cannot reach the backend,
/// [`RunError::Worker`] when one fails on its own or they are not all ready within 60 s.
pub fn run_children(exe: &Path, base: &WorkerSpec, config: &RunConfig) -> Result<Ran, RunError> {
    let (tx, rx) = mpsc::channel::<(usize, Line)>();
    let procs = config.procs.max(1);
    let mut slots = Vec::new();
    let mut histories = Vec::new();
    let mut next_proc = 0u32;
    for p in 0..procs {
        let mut spec = base.clone();
        spec.proc = next_proc;
        next_proc += 1;
        spec.ops = config.ops / procs + usize::from(p < config.ops % procs);
        spec.seed = base.seed.wrapping_add(p as u64);
        spec.announce = config.nemesis.is_some();
        histories.push(spec.paths.history(spec.proc));
        match spawn(exe, &spec, slots.len(), &tx) {
            Ok(slot) => slots.push(slot),
            Err(e) => {
                kill_all(&mut slots);
                return Err(e);
            }
        }
    }
    let result = supervise(
        exe,
        config,
        &mut slots,
        &mut histories,
        &mut next_proc,
        &tx,
        &rx,
    );
    kill_all(&mut slots);
    result.map(|(faults, cut)| Ran {
        faults,
        histories,
        cut,
    })
}

fn worker_failure(slot: &mut Slot, code: Option<i32>, message: &str) -> RunError {
    let stderr = std::fs::read_to_string(&slot.err_path).unwrap_or_default();
    let text = format!(
        "worker p{} {message}{}",
        slot.spec.proc,
        if stderr.trim().is_empty() {
            String::new()
        } else {
            format!(": {}", stderr.trim())
        }
    );
    if code == Some(3) {
        RunError::Unavailable(text)
    } else if code == Some(2) {
        RunError::Usage(text)
    } else {
        RunError::Worker(text)
    }
}

#[allow(clippy::too_many_arguments)]
fn supervise(
    exe: &Path,
    config: &RunConfig,
    slots: &mut Vec<Slot>,
    histories: &mut Vec<PathBuf>,
    next_proc: &mut u32,
    tx: &Sender<(usize, Line)>,
    rx: &Receiver<(usize, Line)>,
) -> Result<(Vec<Fault>, Option<Cut>), RunError> {
    let started = Instant::now();
    let mut faults = Vec::new();
    let mut all_ready = false;
    let mut next_fault: Option<Instant> = None;
    let mut stopped: HashMap<usize, Instant> = HashMap::new();
    loop {
        if slots.iter().all(|s| s.done || s.killed) {
            return Ok((faults, None));
        }
        if let Some(signal) = crate::interrupt::requested() {
            // The caller kills the workers still running.
            return Err(RunError::Interrupted(signal));
        }
        let limit = if all_ready {
            config.time_limit
        } else {
            READY_TIMEOUT
        };
        if started.elapsed() > limit {
            if !all_ready {
                return Err(RunError::Worker(format!(
                    "the workers were not ready within {limit:?}"
                )));
            }
            let unfinished = stop_all(slots, histories, &mut stopped, rx);
            return Ok((faults, Some(Cut { limit, unfinished })));
        }
        // Resume stopped workers whose pause is over.
        let now = Instant::now();
        let due: Vec<usize> = stopped
            .iter()
            .filter(|(_, until)| **until <= now)
            .map(|(i, _)| *i)
            .collect();
        for i in due {
            stopped.remove(&i);
            let _ = nemesis::signal(&mut slots[i].child, rustix::process::Signal::CONT);
        }
        let (i, line) = match rx.recv_timeout(Duration::from_millis(5)) {
            Ok(msg) => msg,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => return Ok((faults, None)),
        };
        match line {
            Line::Text(t) if t == "ready" => {
                slots[i].ready = true;
                if all_ready {
                    // A replacement joins a run already going.
                    go(&mut slots[i]);
                } else if slots.iter().all(|s| s.ready) {
                    all_ready = true;
                    next_fault = config.nemesis.map(|n| Instant::now() + n.first());
                    for s in slots.iter_mut() {
                        go(s);
                    }
                }
            }
            Line::Text(t) if t == "in" => {
                let (Some(nemesis), Some(at)) = (config.nemesis, next_fault) else {
                    continue;
                };
                if Instant::now() < at || faults.len() >= MAX_FAULTS || slots[i].killed {
                    continue;
                }
                next_fault = Some(Instant::now() + nemesis.interval());
                let proc = slots[i].spec.proc;
                match nemesis {
                    Nemesis::Kill { .. } => {
                        if nemesis::signal(&mut slots[i].child, rustix::process::Signal::KILL)
                            .is_err()
                        {
                            continue;
                        }
                        let _ = slots[i].child.wait();
                        slots[i].killed = true;
                        faults.push(Fault {
                            kind: "kill",
                            proc,
                            time: now_ns(),
                        });
                        let old = &slots[i].spec;
                        let left = old
                            .ops
                            .saturating_sub(invoked(&old.paths.history(old.proc)));
                        if left > 0 {
                            let mut spec = old.clone();
                            spec.proc = *next_proc;
                            *next_proc += 1;
                            spec.ops = left;
                            spec.seed = spec.seed.wrapping_add(0x9e37_79b9);
                            // Joining a run under way: a probe that waits out a dead
                            // holder's lease is an observation, not an unreachable backend;
                            // its ops record any timeouts and the floor judges them.
                            spec.probe = false;
                            histories.push(spec.paths.history(spec.proc));
                            let slot = spawn(exe, &spec, slots.len(), tx)?;
                            slots.push(slot);
                        }
                    }
                    Nemesis::Stop { pause } => {
                        if nemesis::signal(&mut slots[i].child, rustix::process::Signal::STOP)
                            .is_ok()
                        {
                            faults.push(Fault {
                                kind: "stop",
                                proc,
                                time: now_ns(),
                            });
                            stopped.insert(i, Instant::now() + pause);
                        }
                    }
                }
            }
            Line::Text(t) if t == "done" => slots[i].done = true,
            Line::Text(t) if t.starts_with("error ") => {
                let mut parts = t.splitn(3, ' ');
                let code = parts.nth(1).and_then(|c| c.parse().ok());
                let message = parts.next().unwrap_or_default().to_owned();
                let _ = slots[i].child.wait();
                return Err(worker_failure(&mut slots[i], code, &message));
            }
            Line::Text(_) => {}
            Line::Eof => {
                if slots[i].killed {
                    continue;
                }
                let status = slots[i].child.wait()?;
                if !slots[i].done || !status.success() {
                    return Err(worker_failure(
                        &mut slots[i],
                        status.code(),
                        &format!("exited early ({status})"),
                    ));
                }
            }
        }
    }
}

/// Asks every worker still running to stop (those the nemesis stopped are let go on
/// first) and waits up to [`STOP_GRACE`] for each to say `done`; answers the indexes of
/// those that did not. A worker never told `go` ran no op and wrote no history: it is
/// killed at once, and its history file taken off `histories`.
fn stop_all(
    slots: &mut [Slot],
    histories: &mut Vec<PathBuf>,
    stopped: &mut HashMap<usize, Instant>,
    rx: &Receiver<(usize, Line)>,
) -> Vec<u32> {
    for (i, _) in stopped.drain() {
        let _ = nemesis::signal(&mut slots[i].child, rustix::process::Signal::CONT);
    }
    let mut waiting = Vec::new();
    for (i, slot) in slots.iter_mut().enumerate() {
        if slot.done || slot.killed {
            continue;
        }
        if slot.started {
            tell(slot, "stop");
            waiting.push(i);
        } else {
            let _ = slot.child.kill();
            let _ = slot.child.wait();
            slot.killed = true;
            let path = slot.spec.paths.history(slot.spec.proc);
            histories.retain(|p| *p != path);
        }
    }
    let deadline = Instant::now() + STOP_GRACE;
    // Those that ended without `done`: they may not have written everything out.
    let mut ended = Vec::new();
    while waiting
        .iter()
        .any(|&i| !slots[i].done && !ended.contains(&i))
    {
        let Some(left) = deadline.checked_duration_since(Instant::now()) else {
            break;
        };
        match rx.recv_timeout(left) {
            Ok((i, Line::Text(t))) if t == "done" => slots[i].done = true,
            Ok((i, Line::Eof)) if !slots[i].done => ended.push(i),
            Ok(_) => {}
            Err(_) => break,
        }
    }
    waiting
        .into_iter()
        .filter(|&i| !slots[i].done)
        .map(|i| slots[i].spec.proc)
        .collect()
}

/// The `turnstile worker` subcommand: reads its JSON spec from the first line of stdin,
/// runs that worker process and returns its exit code (0 done, 2 bad or missing spec, 3
/// backend out of reach). `registry` is the registry of SQLite data; over other data the
/// worker uses that backend's builtin one.
pub fn worker_main(registry: &Registry<Sqlite>) -> i32 {
    // A worker the nemesis stopped (`SIGSTOP`) reads no end of file: if its parent dies
    // then, it would stay stopped, holding its locks and connections, until someone sent
    // it `SIGCONT`. The kernel kills it instead. The parent spawns its workers from the
    // thread that runs them and waits for them, so that thread outlives them (the signal
    // comes when the parent *thread* ends). A parent that died before this line leaves
    // a worker that is not stopped yet: the end of file below ends it.
    let _ = rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL));
    let stdout = Arc::new(Mutex::new(std::io::stdout()));
    let say = |line: &str| say(&stdout, line);
    let mut spec_json = String::new();
    match std::io::stdin().read_line(&mut spec_json) {
        Ok(n) if n > 0 => {}
        Ok(_) => {
            say("error 2 no worker spec on stdin");
            return 2;
        }
        Err(e) => {
            say(&format!(
                "error 2 cannot read the worker spec from stdin: {e}"
            ));
            return 2;
        }
    }
    let spec: WorkerSpec = match serde_json::from_str(&spec_json) {
        Ok(s) => s,
        Err(e) => {
            say(&format!("error 2 bad worker spec: {e}"));
            return 2;
        }
    };
    let worker = Worker {
        spec: &spec,
        stdout: stdout.clone(),
    };
    match crate::data::with_backend(&spec, registry, worker) {
        Ok(code) => code,
        Err(e) => {
            let code = e.exit_code();
            say(&format!("error {code} {e}"));
            code
        }
    }
}

/// Ends this worker process when its parent closes its stdin: the kernel does that when
/// the parent dies, however it dies (a `SIGKILL` included; a worker stopped then is
/// killed by the kernel, see [`worker_main`]), and the parent holds it open
/// until the worker has ended. A worker left running would go on writing to a run nobody
/// checks, and hold its locks and connections. Until then, a `stop` line from the parent
/// asks the threads to stop ([`stop_asked`]).
fn end_with_parent() {
    std::thread::spawn(|| {
        // Only `stop` follows `go`: this returns at end of file (or on a read error).
        for line in std::io::stdin().lock().split(b'\n') {
            match line {
                Ok(line) if line.trim_ascii() == b"stop" => STOP.store(true, Ordering::Relaxed),
                Ok(_) => {}
                Err(_) => break,
            }
        }
        std::process::exit(3);
    });
}

/// Writes one protocol line to the parent, flushed.
fn say(stdout: &Mutex<std::io::Stdout>, line: &str) {
    let mut out = stdout.lock().unwrap_or_else(|p| p.into_inner());
    let _ = writeln!(out, "{line}").and_then(|()| out.flush());
}

/// One worker process over the backend its spec names.
struct Worker<'a> {
    spec: &'a WorkerSpec,
    stdout: Arc<Mutex<std::io::Stdout>>,
}

impl WithBackend for Worker<'_> {
    type Output = i32;

    fn with<B: Backend>(
        self,
        backend: B,
        registry: &Registry<B::Connect>,
    ) -> Result<i32, RunError> {
        let strategy = self.spec.open(&backend, registry)?;
        say(&self.stdout, "ready");
        let mut line = String::new();
        if std::io::stdin().read_line(&mut line).is_err() || line.trim() != "go" {
            // The parent went away or gave up on the run.
            return Ok(3);
        }
        end_with_parent();
        let announce: Option<Arc<dyn Fn() + Send + Sync>> = if self.spec.announce {
            let out = self.stdout.clone();
            Some(Arc::new(move || {
                say(&out, "in");
                // Stay in the section a random while, up to 1 ms: the fault then lands
                // before the op's writes, between them (a bank transfer's debit and
                // credit) or after them, so a strategy that leaves half an op behind is
                // caught too.
                std::thread::sleep(Duration::from_micros(fastrand::u64(0..=1000)));
            }))
        } else {
            None
        };
        run_threads(self.spec, &backend, &strategy, announce)?;
        drop(strategy);
        say(&self.stdout, "done");
        Ok(0)
    }
}
