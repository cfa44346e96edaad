//! The event log every run records: one JSON line per event, one file per process.
//!
//! An op writes its `invoke` event *before* it runs, with one `write(2)` and no buffer, so
//! a worker killed in the middle of the op cannot hide that the op started: an invoke
//! without a completion is an *unknown* op, which may or may not have taken effect.
//! Timestamps come from `CLOCK_MONOTONIC`, which every process on the host shares (an
//! `Instant` cannot be exported); the critical section's own timestamps are taken inside
//! the op, after the strategy granted access and before it released it.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The calling thread's OS id.
pub fn os_thread_id() -> u32 {
    rustix::thread::gettid().as_raw_nonzero().get() as u32
}

/// Nanoseconds on `CLOCK_MONOTONIC`, comparable across the processes of one host.
pub fn now_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    // The monotonic clock starts near boot: both parts are non-negative.
    (t.tv_sec as u64) * 1_000_000_000 + t.tv_nsec as u64
}

/// What an op was asked to do.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "f", rename_all = "snake_case")]
pub enum OpInput {
    /// Counter: read the key's value, write it plus one.
    Increment,
    /// Bank: move `amount` from one account to another if the balance allows.
    Transfer {
        /// Debited account.
        from: String,
        /// Credited account.
        to: String,
        /// Amount moved.
        amount: i64,
    },
    /// Notify-once: send notification `id` unless its `sent` flag is set.
    Notify {
        /// The notification.
        id: i64,
    },
    /// Key-value: read the record, then write `write` (`None` deletes it).
    ReadWrite {
        /// The value written (unique per run), or `None` for a delete.
        write: Option<i64>,
    },
    /// File store: add record `record` to the file.
    Append {
        /// The record's unique id.
        record: i64,
    },
}

/// What an op returned.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "r", rename_all = "snake_case")]
pub enum OpOutput {
    /// Counter: the value this increment wrote.
    Wrote {
        /// The new value.
        value: i64,
    },
    /// Bank: whether the transfer moved money (false: insufficient balance).
    Transferred {
        /// Whether it moved money.
        applied: bool,
    },
    /// Notify-once: whether this op performed the side effect.
    Notified {
        /// Whether it sent.
        sent: bool,
    },
    /// Key-value: the value read before writing.
    Read {
        /// The value read (`None`: no record).
        value: Option<i64>,
    },
    /// File store: the record was added.
    Appended,
}

/// How an op ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// The op is about to run.
    Invoke,
    /// Acknowledged: it took effect.
    Ok,
    /// It definitely did not take effect.
    Fail,
    /// It may or may not have taken effect (an indeterminate error, a partial write
    /// outside a transaction). Killed ops have no completion event and count as unknown.
    Unknown,
}

/// One event of a history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Invoke, or how the op ended.
    pub phase: Phase,
    /// The op's id, unique in the run.
    pub op: u64,
    /// The worker process's index in the run (replacements get new indexes).
    pub proc: u32,
    /// The OS process id.
    pub pid: u32,
    /// The worker thread's index in its process.
    pub thread: u32,
    /// The OS thread id.
    #[serde(default)]
    pub tid: u32,
    /// The keys the op ran under.
    pub keys: Vec<String>,
    /// When this event happened (ns, `CLOCK_MONOTONIC`).
    pub time: u64,
    /// Invoke: what the op was asked to do.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<OpInput>,
    /// Ok: what it returned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<OpOutput>,
    /// When the op's last attempt entered the critical section (ns), if it ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enter: Option<u64>,
    /// When the op's last attempt left the critical section (ns), if it finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit: Option<u64>,
    /// The fencing token the op ran under.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fence: Option<u64>,
    /// Fail / unknown: the error's kind and text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Fail / unknown: the data refused the op as busy (another held it), as told by
    /// [`refused_as_busy`](crate::workload::refused_as_busy).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub busy: bool,
    /// Unknown: whatever the op did, it did before this completion — every statement it
    /// sent had its answer — so it cannot take effect after it. False when it still may:
    /// the caller stopped waiting while the op was under way
    /// ([`Error::Indeterminate`](turnstile::Error::Indeterminate): a queue's caller that
    /// timed out, a `COMMIT` whose answer was lost), a database server may not have
    /// answered one of its statements (a lost connection, or an error the harness cannot
    /// see into), or it panicked, which may hide such a statement (see
    /// [`may_take_effect_later`]); and in a history written without this field, which is
    /// read as leniently as before it.
    ///
    /// [`may_take_effect_later`]: crate::workload::may_take_effect_later
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub settled: bool,
}

impl Event {
    /// The invoke event of op `op` on `keys` at `time`, asked to do `input`, by process 0
    /// (pid 1), thread 0 (tid 1): where a history starts (change the fields that differ
    /// with `Event { proc: 2, ..Event::invoke(…) }`).
    pub fn invoke(op: u64, keys: Vec<String>, time: u64, input: OpInput) -> Event {
        Event {
            phase: Phase::Invoke,
            op,
            proc: 0,
            pid: 1,
            thread: 0,
            tid: 1,
            keys,
            time,
            input: Some(input),
            output: None,
            enter: None,
            exit: None,
            fence: None,
            error: None,
            busy: false,
            settled: false,
        }
    }
}

/// Appends events to one process's history file: one unbuffered `write(2)` per
/// [`record`](Self::record), or per op through a [`ThreadLog`].
#[derive(Debug)]
pub struct HistoryWriter {
    file: File,
}

impl HistoryWriter {
    /// Creates (or appends to) the history file at `path`.
    ///
    /// # Errors
    /// When the file cannot be opened.
    pub fn create(path: &Path) -> std::io::Result<Self> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(HistoryWriter { file })
    }

    /// Writes one event as one line with a single `write_all` on an `O_APPEND` file, so
    /// threads never interleave inside a line.
    ///
    /// # Errors
    /// When the write fails.
    pub fn record(&self, event: &Event) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(event).map_err(std::io::Error::other)?;
        line.push(b'\n');
        (&self.file).write_all(&line)
    }

    /// A per-thread log on this writer that needs one `write(2)` per op, not two.
    pub fn thread_log(&self) -> ThreadLog<'_> {
        ThreadLog {
            writer: self,
            buf: Vec::with_capacity(512),
            hold: 0,
        }
    }

    /// A per-thread log that keeps events in memory until they fill [`HELD_HISTORY`]
    /// bytes (or it is flushed or dropped): one `write(2)` per some hundred ops. Only for
    /// a worker that nothing kills mid-run: an invoke still in memory when the process
    /// dies hides an op that may have taken effect.
    pub fn held_thread_log(&self) -> ThreadLog<'_> {
        ThreadLog {
            writer: self,
            buf: Vec::with_capacity(HELD_HISTORY + 1024),
            hold: HELD_HISTORY,
        }
    }
}

/// How many bytes of events a [`HistoryWriter::held_thread_log`] keeps before it writes
/// them out.
pub const HELD_HISTORY: usize = 32 * 1024;

/// One thread's view of a [`HistoryWriter`]: an op's completion waits in a buffer and
/// goes out in the same `write(2)` as the thread's next invoke (or at [`ThreadLog::flush`],
/// or when the log is dropped). A [held](HistoryWriter::held_thread_log) log keeps invokes
/// too, for a worker that nothing kills; what follows is about the other kind.
///
/// Every invoke is still written before its op runs, so a kill cannot hide an op that
/// started. What a kill can cost is the completion of the op that finished just before it
/// (the thread was between two ops): that op then reads as *unknown*, which the checkers
/// treat as "may or may not have taken effect" — less precise, never wrong.
#[derive(Debug)]
pub struct ThreadLog<'a> {
    writer: &'a HistoryWriter,
    buf: Vec<u8>,
    /// Invokes wait in `buf` until it holds this many bytes (0: each goes out at once).
    hold: usize,
}

impl ThreadLog<'_> {
    /// Writes `event` (an invoke) now, with any completion waiting before it; a held log
    /// writes only once it holds enough.
    ///
    /// # Errors
    /// When the write fails.
    pub fn invoke(&mut self, event: &Event) -> std::io::Result<()> {
        self.push(event)?;
        if self.buf.len() >= self.hold {
            self.flush()?;
        }
        Ok(())
    }

    /// Queues `event` (a completion) for the next write.
    ///
    /// # Errors
    /// When the event cannot be serialized.
    pub fn complete(&mut self, event: &Event) -> std::io::Result<()> {
        self.push(event)
    }

    /// Writes whatever waits, in one `write_all` on the `O_APPEND` file.
    ///
    /// # Errors
    /// When the write fails.
    pub fn flush(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let result = (&self.writer.file).write_all(&self.buf);
        self.buf.clear();
        result
    }

    fn push(&mut self, event: &Event) -> std::io::Result<()> {
        serde_json::to_writer(&mut self.buf, event).map_err(std::io::Error::other)?;
        self.buf.push(b'\n');
        Ok(())
    }
}

impl Drop for ThreadLog<'_> {
    fn drop(&mut self) {
        // Best effort: a completion that cannot be written reads as unknown.
        let _ = self.flush();
    }
}

/// A finished op: its invoke event joined with its completion.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Op {
    /// The op's id.
    pub id: u64,
    /// Worker process index.
    pub proc: u32,
    /// OS process id.
    pub pid: u32,
    /// Thread index.
    pub thread: u32,
    /// OS thread id.
    pub tid: u32,
    /// Keys.
    pub keys: Vec<String>,
    /// What it was asked to do.
    pub input: OpInput,
    /// Ok, fail or unknown (never invoke).
    pub phase: Phase,
    /// What it returned (ok ops).
    pub output: Option<OpOutput>,
    /// Invoked at (ns).
    pub invoke: u64,
    /// Completed at (ns); `None` for an op cut off by a kill.
    pub complete: Option<u64>,
    /// Entered the critical section at (ns).
    pub enter: Option<u64>,
    /// Left the critical section at (ns).
    pub exit: Option<u64>,
    /// Fence.
    pub fence: Option<u64>,
    /// Error text of a failed or unknown op.
    pub error: Option<String>,
    /// Whether the data refused it as busy (see [`Event::busy`]).
    pub busy: bool,
    /// Whether an unknown op cannot take effect after its completion (see
    /// [`Event::settled`]); false for an op cut off without one.
    pub settled: bool,
}

impl Op {
    /// A short readable name: `p1/t3#42`.
    pub fn label(&self) -> String {
        format!("p{}/t{}#{}", self.proc, self.thread, self.id & 0xffff_ffff)
    }
}

/// A merged history: every op of every process of one run.
#[derive(Clone, Debug, Default)]
pub struct History {
    /// Ops ordered by invoke time.
    pub ops: Vec<Op>,
    /// Events that could not be joined (a completion without invoke, an unreadable line),
    /// and history files that were missing, one readable line each.
    pub malformed: Vec<String>,
    /// What is missing from the history or does not read, by where it is:
    /// [`History::gaps`] says which of these leave it incomplete.
    pub flaws: Vec<Flaw>,
}

/// Something a history file lacks or holds that the history cannot use.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Flaw {
    /// A history file that was not there: every op of its process is unknown to the
    /// checkers.
    Missing(PathBuf),
    /// A line that does not parse.
    BadLine {
        /// The file it is in.
        path: PathBuf,
        /// Whether it is the file's last line, where a writer killed in the middle of its
        /// write leaves one.
        last: bool,
        /// The parse error and the line.
        text: String,
    },
    /// An event that could not be joined to its op (a completion without its invoke, an
    /// invoke without its input).
    Unjoined(String),
}

impl History {
    /// Reads and merges history files. A line that does not parse — a torn last line
    /// (the writer was killed in the middle of a write, which one `write(2)` makes
    /// unlikely), even one cut inside a multi-byte character — and a file that is
    /// missing are reported in [`History::malformed`] and [`History::flaws`], not
    /// fatal: [`History::gaps`] says whether the history is still whole.
    ///
    /// # Errors
    /// When a file cannot be read.
    pub fn load(paths: &[impl AsRef<Path>]) -> std::io::Result<Self> {
        let mut events = Vec::new();
        let mut malformed = Vec::new();
        let mut flaws = Vec::new();
        for path in paths {
            let path = path.as_ref();
            let file = match File::open(path) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    malformed.push(format!("{}: missing", path.display()));
                    flaws.push(Flaw::Missing(path.to_owned()));
                    continue;
                }
                Err(e) => return Err(e),
            };
            // A bad line waits here until the next line says it was not the last.
            let mut bad: Option<String> = None;
            // Split on bytes, not `lines()`: a line torn inside a multi-byte character
            // (error text carries `µ`) is not UTF-8, and is malformed like any torn line.
            for line in BufReader::new(file).split(b'\n') {
                let line = line?;
                if line.trim_ascii().is_empty() {
                    continue;
                }
                if let Some(text) = bad.take() {
                    flaws.push(Flaw::BadLine {
                        path: path.to_owned(),
                        last: false,
                        text,
                    });
                }
                match serde_json::from_slice::<Event>(&line) {
                    Ok(e) => events.push(e),
                    Err(e) => {
                        let text = format!("{e}: {}", String::from_utf8_lossy(&line));
                        malformed.push(format!("{}: {text}", path.display()));
                        bad = Some(text);
                    }
                }
            }
            if let Some(text) = bad {
                flaws.push(Flaw::BadLine {
                    path: path.to_owned(),
                    last: true,
                    text,
                });
            }
        }
        let mut history = Self::from_events(events);
        history.malformed.extend(malformed);
        history.flaws.extend(flaws);
        Ok(history)
    }

    /// Why this history is not whole, one line each; empty when every op of every
    /// process is in it. A missing file, a line that does not parse and an event that
    /// cannot be joined each hide what some op did — except a torn last line of a file in
    /// `killed`: a worker killed in the middle of its write leaves one, and hides nothing
    /// (a torn completion leaves its op unknown; a torn invoke's op never ran).
    pub fn gaps(&self, killed: &[impl AsRef<Path>]) -> Vec<String> {
        self.flaws
            .iter()
            .filter_map(|flaw| match flaw {
                Flaw::Missing(path) => Some(format!(
                    "history file {} is missing: its process's ops are unknown",
                    path.display()
                )),
                Flaw::BadLine { path, last, .. }
                    if *last && killed.iter().any(|k| k.as_ref() == path) =>
                {
                    None
                }
                Flaw::BadLine { path, last, text } => Some(format!(
                    "{} has a line that does not parse{}: {text}",
                    path.display(),
                    if *last {
                        " at its end, and its worker was not killed"
                    } else {
                        " before its last"
                    }
                )),
                Flaw::Unjoined(what) => Some(format!("history event {what}")),
            })
            .collect()
    }

    /// Joins invoke events with their completions.
    pub fn from_events(events: Vec<Event>) -> Self {
        let mut open: HashMap<u64, Op> = HashMap::new();
        let mut done = Vec::new();
        let mut malformed = Vec::new();
        for e in events {
            match e.phase {
                Phase::Invoke => {
                    let Some(input) = e.input.clone() else {
                        malformed.push(format!("invoke without input: op {}", e.op));
                        continue;
                    };
                    open.insert(
                        e.op,
                        Op {
                            id: e.op,
                            proc: e.proc,
                            pid: e.pid,
                            thread: e.thread,
                            tid: e.tid,
                            keys: e.keys,
                            input,
                            phase: Phase::Unknown,
                            output: None,
                            invoke: e.time,
                            complete: None,
                            enter: None,
                            exit: None,
                            fence: None,
                            error: None,
                            busy: false,
                            settled: false,
                        },
                    );
                }
                phase => match open.remove(&e.op) {
                    Some(mut op) => {
                        op.phase = phase;
                        op.output = e.output;
                        op.complete = Some(e.time);
                        op.enter = e.enter;
                        op.exit = e.exit;
                        op.fence = e.fence;
                        op.error = e.error;
                        op.busy = e.busy;
                        op.settled = e.settled;
                        done.push(op);
                    }
                    None => malformed.push(format!("completion without invoke: op {}", e.op)),
                },
            }
        }
        // Ops left open were cut off (killed): unknown, no completion.
        done.extend(open.into_values());
        done.sort_by_key(|op| (op.invoke, op.id));
        History {
            ops: done,
            flaws: malformed.iter().cloned().map(Flaw::Unjoined).collect(),
            malformed,
        }
    }

    /// Ops that ended as `phase`.
    pub fn with_phase(&self, phase: Phase) -> impl Iterator<Item = &Op> {
        self.ops.iter().filter(move |op| op.phase == phase)
    }

    /// How many ops were acknowledged.
    pub fn acknowledged(&self) -> usize {
        self.with_phase(Phase::Ok).count()
    }

    /// The earliest invoke time, for readable relative times.
    pub fn origin(&self) -> u64 {
        self.ops.iter().map(|op| op.invoke).min().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invoke(op: u64, time: u64) -> Event {
        Event::invoke(op, vec!["k".into()], time, OpInput::Increment)
    }

    #[test]
    fn joins_completions_and_leaves_cut_off_ops_unknown() {
        let mut done = invoke(1, 10);
        done.phase = Phase::Ok;
        done.input = None;
        done.output = Some(OpOutput::Wrote { value: 1 });
        done.time = 20;
        let h = History::from_events(vec![invoke(1, 10), invoke(2, 15), done]);
        assert_eq!(h.ops.len(), 2);
        assert_eq!(h.ops[0].phase, Phase::Ok);
        assert_eq!(h.ops[0].complete, Some(20));
        assert_eq!(h.ops[1].phase, Phase::Unknown);
        assert_eq!(h.ops[1].complete, None);
    }

    #[test]
    fn writes_and_reads_back_a_file_with_a_torn_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.jsonl");
        let w = HistoryWriter::create(&path).unwrap();
        w.record(&invoke(7, now_ns())).unwrap();
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"{\"phase\":\"ok\",\"op")
            .unwrap();
        let h = History::load(&[&path]).unwrap();
        assert_eq!(h.ops.len(), 1);
        assert_eq!(h.malformed.len(), 1);
    }

    #[test]
    fn a_line_torn_inside_a_multibyte_character_is_malformed_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.jsonl");
        let w = HistoryWriter::create(&path).unwrap();
        w.record(&invoke(1, 10)).unwrap();
        let mut done = invoke(1, 20);
        done.phase = Phase::Ok;
        done.input = None;
        done.output = Some(OpOutput::Wrote { value: 1 });
        w.record(&done).unwrap();
        w.record(&invoke(2, 30)).unwrap();
        // The completion of op 2 torn after the first byte of `µ` (C2 B5).
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"{\"phase\":\"unknown\",\"op\":2,\"error\":\"timed out after 500\xC2")
            .unwrap();
        let h = History::load(&[&path]).unwrap();
        let phases: Vec<Phase> = h.ops.iter().map(|op| op.phase).collect();
        assert_eq!(phases, [Phase::Ok, Phase::Unknown]);
        assert_eq!(h.malformed.len(), 1, "{:?}", h.malformed);
        assert!(
            h.malformed[0].contains("timed out after 500"),
            "{:?}",
            h.malformed
        );
    }

    #[test]
    fn a_thread_log_writes_a_completion_with_the_next_invoke_or_when_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.jsonl");
        let w = HistoryWriter::create(&path).unwrap();
        let lines = || std::fs::read_to_string(&path).unwrap().lines().count();
        let mut log = w.thread_log();
        log.invoke(&invoke(1, 10)).unwrap();
        assert_eq!(lines(), 1, "an invoke is written before its op runs");
        let mut done = invoke(1, 20);
        done.phase = Phase::Ok;
        done.input = None;
        done.output = Some(OpOutput::Wrote { value: 1 });
        log.complete(&done).unwrap();
        assert_eq!(lines(), 1, "the completion waits for the next write");
        log.invoke(&invoke(2, 30)).unwrap();
        assert_eq!(lines(), 3);
        let mut done = invoke(2, 40);
        done.phase = Phase::Fail;
        done.input = None;
        log.complete(&done).unwrap();
        drop(log);
        let h = History::load(&[&path]).unwrap();
        assert!(h.malformed.is_empty(), "{:?}", h.malformed);
        let phases: Vec<Phase> = h.ops.iter().map(|op| op.phase).collect();
        assert_eq!(phases, [Phase::Ok, Phase::Fail]);
    }

    #[test]
    fn a_held_thread_log_writes_once_it_holds_enough_and_loses_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.jsonl");
        let w = HistoryWriter::create(&path).unwrap();
        let bytes = || std::fs::metadata(&path).unwrap().len() as usize;
        let mut log = w.held_thread_log();
        let mut op = 0;
        while bytes() == 0 {
            op += 1;
            assert!(op < 10_000, "nothing written after {op} ops");
            log.invoke(&invoke(op, op * 10)).unwrap();
            let mut done = invoke(op, op * 10 + 5);
            done.phase = Phase::Ok;
            done.input = None;
            done.output = Some(OpOutput::Wrote { value: 1 });
            log.complete(&done).unwrap();
        }
        assert!(op > 10, "a held log wrote after {op} ops");
        assert!(bytes() >= HELD_HISTORY, "{} bytes written", bytes());
        log.invoke(&invoke(op + 1, 0)).unwrap();
        drop(log);
        let h = History::load(&[&path]).unwrap();
        assert!(h.malformed.is_empty(), "{:?}", h.malformed);
        assert_eq!(
            h.ops.len() as u64,
            op + 1,
            "every op, the last one unfinished"
        );
    }
}
