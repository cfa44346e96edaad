//! Faults: SIGKILL or SIGSTOP/SIGCONT a worker process while it is inside its critical
//! section, bounded in count and time.
//!
//! Workers announce "in section" over their stdout pipe and linger there a random 0–1 ms;
//! the nemesis acts on the worker that just announced, so faults land where they hurt —
//! before, between or after the op's writes. Signals go through the `Child`
//! handle: a child that has not been waited for cannot have its pid reused, so
//! [`signal`] first checks (with `try_wait`) that it has not been reaped.

use std::process::Child;
use std::time::Duration;

use serde::Serialize;

/// The most faults one run injects.
pub const MAX_FAULTS: usize = 8;

/// A fault schedule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Nemesis {
    /// SIGKILL a worker in its critical section every `every`; it is replaced.
    Kill {
        /// Time between kills.
        every: Duration,
    },
    /// SIGSTOP a worker in its critical section for `pause`, then SIGCONT it; the next
    /// stop may come as soon as it resumes.
    Stop {
        /// How long it stays stopped.
        pause: Duration,
    },
}

impl Nemesis {
    /// Time between two faults.
    pub fn interval(self) -> Duration {
        match self {
            Nemesis::Kill { every } => every,
            Nemesis::Stop { pause } => pause,
        }
    }

    /// Time from the start of the run to the first fault: the interval, at most 100 ms,
    /// so short runs are hit too.
    pub fn first(self) -> Duration {
        self.interval().min(Duration::from_millis(100))
    }

    /// Whether this nemesis kills workers (ops cut off become unknown).
    pub fn kills(self) -> bool {
        matches!(self, Nemesis::Kill { .. })
    }
}

impl std::str::FromStr for Nemesis {
    type Err = String;

    /// `kill:EVERY_MS` or `stop:MS` (1 ms to 60 s).
    fn from_str(s: &str) -> Result<Self, String> {
        let (kind, ms) = s
            .split_once(':')
            .ok_or_else(|| format!("nemesis {s:?}: expected kill:EVERY_MS or stop:MS"))?;
        let ms: u64 = ms
            .parse()
            .ok()
            .filter(|ms| (1..=60_000).contains(ms))
            .ok_or_else(|| format!("nemesis {s:?}: the time must be 1..=60000 ms"))?;
        let d = Duration::from_millis(ms);
        match kind {
            "kill" => Ok(Nemesis::Kill { every: d }),
            "stop" => Ok(Nemesis::Stop { pause: d }),
            other => Err(format!("unknown nemesis {other:?}; expected kill or stop")),
        }
    }
}

/// One injected fault.
#[derive(Clone, Debug, Serialize)]
pub struct Fault {
    /// `"kill"` or `"stop"`.
    pub kind: &'static str,
    /// The worker process index hit.
    pub proc: u32,
    /// When (ns, `CLOCK_MONOTONIC`).
    pub time: u64,
}

/// Sends `sig` to `child` unless it has already exited (and been reaped).
///
/// # Errors
/// When the child has exited, or the signal could not be sent.
pub fn signal(child: &mut Child, sig: rustix::process::Signal) -> std::io::Result<()> {
    if child.try_wait()?.is_some() {
        return Err(std::io::Error::other("the worker has already exited"));
    }
    // Not reaped yet, so this pid is still our child's.
    rustix::process::kill_process(rustix::process::Pid::from_child(child), sig)
        .map_err(std::io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_schedules_and_refuses_nonsense() {
        assert_eq!(
            "kill:100".parse::<Nemesis>(),
            Ok(Nemesis::Kill {
                every: Duration::from_millis(100)
            })
        );
        assert!("stop:5".parse::<Nemesis>().is_ok());
        for bad in ["kill", "kill:0", "kill:-3", "pause:5", "stop:999999999"] {
            assert!(bad.parse::<Nemesis>().is_err(), "{bad}");
        }
    }
}
