//! History complete: every process's history file is there and reads whole, so the other
//! checkers see every op. A torn last line of a worker the nemesis killed is expected (it
//! died in the middle of a write; the op it wrote about reads as unknown); a missing file,
//! any other line that does not parse, or an event without its op makes the run
//! inconclusive: the ops it hides could be the ones that broke something.

use std::path::Path;

use super::{CheckResult, MAX_DETAILS};
use crate::history::History;

/// `Some` inconclusive result naming what is missing when `history` is not whole; `None`
/// when it is (the run's report then has no `history` line). `killed` are the history
/// files of the workers the nemesis killed.
pub fn check(history: &History, killed: &[impl AsRef<Path>]) -> Option<CheckResult> {
    const NAME: &str = "history";
    let gaps = history.gaps(killed);
    let first = gaps.first()?;
    let mut result = CheckResult::inconclusive(
        NAME,
        format!(
            "the history is not whole ({} gaps), the checkers may have missed ops: {first}",
            gaps.len()
        ),
    );
    result.details = gaps.into_iter().skip(1).take(MAX_DETAILS).collect();
    Some(result)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;
    use crate::check::Verdict;
    use crate::history::{Event, HistoryWriter, OpInput, OpOutput, Phase};

    fn event(op: u64, phase: Phase) -> Event {
        let invoked = Event::invoke(op, vec!["c0".into()], op * 10, OpInput::Increment);
        Event {
            phase,
            time: op * 10 + u64::from(phase != Phase::Invoke),
            input: (phase == Phase::Invoke).then_some(OpInput::Increment),
            output: (phase == Phase::Ok).then_some(OpOutput::Wrote { value: op as i64 }),
            ..invoked
        }
    }

    /// A history file of `ops` acknowledged increments, then `tail` appended as is.
    fn file(dir: &Path, name: &str, ops: u64, tail: &[u8]) -> std::path::PathBuf {
        let path = dir.join(name);
        let w = HistoryWriter::create(&path).unwrap();
        for op in 1..=ops {
            w.record(&event(op, Phase::Invoke)).unwrap();
            w.record(&event(op, Phase::Ok)).unwrap();
        }
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(tail)
            .unwrap();
        path
    }

    const NONE: &[&Path] = &[];

    #[test]
    fn a_missing_history_file_makes_the_run_inconclusive() {
        let dir = tempfile::tempdir().unwrap();
        let there = file(dir.path(), "history-0.jsonl", 3, b"");
        let gone = dir.path().join("history-1.jsonl");
        let h = History::load(&[&there, &gone]).unwrap();
        assert_eq!(h.ops.len(), 3);
        let r = check(&h, NONE).expect("a missing file is a gap");
        assert_eq!(r.verdict, Verdict::Inconclusive);
        assert!(
            r.summary.contains("history-1.jsonl") && r.summary.contains("missing"),
            "{r:?}"
        );
        assert!(check(&History::load(&[&there]).unwrap(), NONE).is_none());
    }

    #[test]
    fn a_bad_line_before_the_last_makes_the_run_inconclusive_even_if_killed() {
        let dir = tempfile::tempdir().unwrap();
        let mut tail = b"{\"phase\":\"ok\",\"op\n".to_vec();
        let mut next = serde_json::to_vec(&event(9, Phase::Invoke)).unwrap();
        next.push(b'\n');
        tail.extend(next);
        let path = file(dir.path(), "history-0.jsonl", 2, &tail);
        let h = History::load(&[&path]).unwrap();
        let r = check(&h, &[&path]).expect("a bad line in the middle is a gap");
        assert_eq!(r.verdict, Verdict::Inconclusive);
        assert!(r.summary.contains("before its last"), "{r:?}");
    }

    #[test]
    fn a_torn_last_line_is_expected_of_a_killed_worker_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = file(dir.path(), "history-0.jsonl", 2, b"{\"phase\":\"ok\",\"op");
        let other = file(dir.path(), "history-1.jsonl", 2, b"");
        let h = History::load(&[&path, &other]).unwrap();
        assert!(check(&h, &[&path]).is_none(), "killed mid-write");
        let r = check(&h, &[&other]).expect("not killed: the tear is a gap");
        assert!(r.summary.contains("was not killed"), "{r:?}");
        assert_eq!(
            check(&h, NONE).map(|r| r.verdict),
            Some(Verdict::Inconclusive)
        );
    }

    #[test]
    fn a_completion_without_its_invoke_makes_the_run_inconclusive() {
        let h = History::from_events(vec![
            event(1, Phase::Invoke),
            event(1, Phase::Ok),
            event(2, Phase::Ok),
        ]);
        let r = check(&h, NONE).expect("an event without its op is a gap");
        assert!(
            r.summary.contains("completion without invoke: op 2"),
            "{r:?}"
        );
    }
}
