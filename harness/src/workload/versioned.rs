//! `counter` and `bank` written against a [`Versioned`] handle, for the strategies whose
//! ops work on versioned records ([`Registry::builtin_versioned`]: `optimistic`, and
//! `mutex` around the same records).
//!
//! Those strategies' resource is not a SQLite [`Connection`](rusqlite::Connection), so
//! the ops of [`Workload`] cannot run through them. This module runs the same two
//! workloads' ops, recorded in the same [`History`] and judged by the same checkers
//! ([`check::check_all`]): `lost_update` and `bank` apply, and `overlap` only to a
//! strategy that promises to exclude — an optimistic strategy overlaps by design, and
//! its conflicts are caught at commit instead (issue 6). Values are `i64` little-endian
//! in records named as the workloads' keys (`c0`, `a1`, …). The run is in threads of one
//! process; the runs across processes and under faults that [`crate::run()`] does are not
//! available here yet.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::Instant;

use turnstile::optimistic::{StoreError, Versioned, Versions};
use turnstile::spec::{Registry, Setup};
use turnstile::sqlite::Sqlite;
use turnstile::{BoxSerializer, Key, Wait};

use super::bank::INITIAL_BALANCE;
use super::{FinalState, OpEnv, Paths, Probe, Workload};
use crate::check::{self, CheckResult, Verdict};
use crate::history::{Event, History, OpInput, OpOutput, Phase, now_ns};
use crate::run::{RunConfig, RunError, RunReport, open_error};

/// The strategy a versioned run goes through.
type VersionedStrategy = BoxSerializer<Versioned<Sqlite>>;

/// The strategies over versioned SQLite records: `Registry::builtin_versioned()`.
pub fn registry() -> Registry<Versions<Sqlite>> {
    Registry::builtin_versioned()
}

/// Whether `workload` has a versioned variant here.
pub fn supports(workload: Workload) -> bool {
    matches!(workload, Workload::Counter | Workload::Bank)
}

/// A record's value; absent is zero. The op's error must stay [`StoreError`] (the strategy
/// reruns an op whose read met a busy store by its type), so a record that is not eight
/// bytes reads as `i64::MIN`, which every checker flags.
fn decode(value: Option<Vec<u8>>) -> i64 {
    match value {
        None => 0,
        Some(bytes) => bytes.try_into().map_or(i64::MIN, i64::from_le_bytes),
    }
}

fn read_i64(db: &mut Versioned<Sqlite>, id: &str) -> Result<i64, StoreError> {
    Ok(decode(db.read(id)?))
}

/// Runs `config` (a `counter` or `bank` workload, in threads of one process) through
/// `config.strategy` from `registry`, and checks it like [`crate::run()`] does.
///
/// # Errors
/// [`RunError::Usage`] for another workload, processes, a nemesis, or an unknown spec;
/// [`RunError::Unavailable`] when the database fails outside the ops.
pub fn run(
    config: &RunConfig,
    registry: &Registry<Versions<Sqlite>>,
) -> Result<RunReport, RunError> {
    if !supports(config.workload) {
        return Err(RunError::Usage(format!(
            "the versioned strategies run counter and bank, not {}",
            config.workload
        )));
    }
    if config.procs != 1 || config.nemesis.is_some() {
        return Err(RunError::Usage(
            "versioned runs are in threads of one process (no --procs, no --nemesis)".into(),
        ));
    }
    if !(1..=256).contains(&config.threads)
        || !(1..=1_000_000).contains(&config.ops)
        || config.keys.is_some_and(|k| !(1..=100_000).contains(&k))
        || config.think > std::time::Duration::from_secs(1)
        || config.rendezvous > std::time::Duration::from_secs(1)
    {
        return Err(RunError::Usage(
            "versioned runs take --threads 1..=256, --ops 1..=1000000, --keys 1..=100000 and at most 1 s of --think-us / --rendezvous-us".into(),
        ));
    }
    if config.db.is_some() || config.keep.is_some() || config.svg.is_some() {
        return Err(RunError::Usage(
            "versioned runs keep no files (no --db, --keep or --svg)".into(),
        ));
    }
    let tmp = tempfile::Builder::new()
        .prefix("turnstile-versioned-")
        .tempdir()?;
    let paths = Paths::new(tmp.path(), None);
    let keys = config.key_count();
    let sqlite = Sqlite::new(&paths.db).synchronous(config.sync);
    let mut setup = Setup::new(Versions::new(sqlite.clone()));
    if let Some(t) = config.timeout {
        setup = setup.timeout(t);
    }
    let strategy = registry
        .open(&config.strategy, &setup)
        .map_err(open_error)?;
    let caps = strategy.capabilities();
    let names = names(config.workload, keys);
    init(&strategy, config.workload, &names)?;

    let env = OpEnv {
        paths: Arc::new(paths.clone()),
        think: config.think,
        in_section: None,
        rendezvous: config.rendezvous,
    };
    let events = Mutex::new(Vec::new());
    let seq = AtomicU64::new(0);
    let barrier = Barrier::new(config.threads);
    let started = Instant::now();
    std::thread::scope(|s| {
        for t in 0..config.threads {
            let share = config.ops / config.threads + usize::from(t < config.ops % config.threads);
            let (strategy, env, events, seq, barrier) = (&strategy, &env, &events, &seq, &barrier);
            s.spawn(move || {
                let mut rng = fastrand::Rng::with_seed(config.seed ^ ((t as u64) << 20));
                barrier.wait();
                for _ in 0..share {
                    let op = seq.fetch_add(1, Ordering::Relaxed);
                    let recorded = one_op(config.workload, strategy, env, &mut rng, keys, op, t);
                    events
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .extend(recorded);
                }
            });
        }
    });
    let wall = started.elapsed();
    let history = History::from_events(events.into_inner().unwrap_or_else(|p| p.into_inner()));

    let state = final_state(&strategy, config.workload, &names, keys)?;
    drop(strategy);
    let mut checks = check::check_all(config.workload, &caps, &history, &state);
    let conn = turnstile::Connect::connect(&sqlite)
        .map_err(|e| RunError::Unavailable(format!("{}: {e}", paths.db.display())))?;
    checks.push(check::integrity::check(&conn));
    let acked = history.acknowledged();
    if acked < config.ops.div_ceil(2) {
        checks.push(CheckResult::inconclusive(
            "floor",
            format!("only {acked} of {} ops acknowledged", config.ops),
        ));
    }
    let verdict = if checks.iter().any(|c| c.verdict == Verdict::Violation) {
        Verdict::Violation
    } else if checks.iter().any(|c| c.verdict == Verdict::Inconclusive) {
        Verdict::Inconclusive
    } else {
        Verdict::Pass
    };
    let mut errors = std::collections::BTreeMap::new();
    for op in &history.ops {
        if let Some(e) = &op.error {
            let kind = e.split(':').next().unwrap_or(e).to_owned();
            *errors.entry(kind).or_insert(0) += 1;
        }
    }
    Ok(RunReport {
        strategy: config.strategy.clone(),
        workload: config.workload,
        threads: config.threads,
        procs: 1,
        requested: config.ops,
        seed: config.seed,
        scope: caps.scope.as_str(),
        transactional: caps.transactional,
        verdict,
        checks,
        acknowledged: acked,
        failed: history.with_phase(Phase::Fail).count(),
        unknown: history.with_phase(Phase::Unknown).count(),
        errors,
        faults: Vec::new(),
        latencies_ns: history
            .with_phase(Phase::Ok)
            .filter_map(|op| op.complete.map(|c| c.saturating_sub(op.invoke)))
            .collect(),
        wall,
        notes: vec!["versioned records (Versioned handle), threads of one process".into()],
        kept: None,
    })
}

/// The record names of `workload` with `keys` keys.
fn names(workload: Workload, keys: usize) -> Vec<String> {
    match workload {
        Workload::Bank => (0..keys.max(2)).map(|i| format!("a{i}")).collect(),
        _ => (0..keys).map(|i| format!("c{i}")).collect(),
    }
}

fn key_of(name: &str) -> Key {
    Key::new(name).unwrap_or_else(|_| Key::whole())
}

fn unavailable(e: impl std::fmt::Display) -> RunError {
    RunError::Unavailable(e.to_string())
}

/// Opens every bank account with [`INITIAL_BALANCE`]; counters start absent (zero).
fn init(
    strategy: &VersionedStrategy,
    workload: Workload,
    names: &[String],
) -> Result<(), RunError> {
    if workload != Workload::Bank {
        return Ok(());
    }
    for name in names {
        let id = name.clone();
        strategy
            .run_as(&[key_of(name)], Wait::Default, move |db| {
                db.write(&id, INITIAL_BALANCE.to_le_bytes())
            })
            .map_err(unavailable)?;
    }
    Ok(())
}

fn final_state(
    strategy: &VersionedStrategy,
    workload: Workload,
    names: &[String],
    keys: usize,
) -> Result<FinalState, RunError> {
    let mut values = std::collections::BTreeMap::new();
    for name in names {
        let id = name.clone();
        let value = strategy
            .run_as(&[key_of(name)], Wait::Default, move |db| read_i64(db, &id))
            .map_err(unavailable)?;
        values.insert(name.clone(), value);
    }
    Ok(match workload {
        Workload::Bank => FinalState::Balances {
            balances: values,
            expected_total: INITIAL_BALANCE * keys.max(2) as i64,
        },
        _ => FinalState::Values(values),
    })
}

/// Runs one op and answers its invoke and completion events.
fn one_op(
    workload: Workload,
    strategy: &VersionedStrategy,
    env: &OpEnv,
    rng: &mut fastrand::Rng,
    keys: usize,
    op: u64,
    thread: usize,
) -> [Event; 2] {
    let (op_keys, input) = workload.next_op(rng, keys, op);
    let mut event = Event {
        phase: Phase::Invoke,
        op,
        proc: 0,
        pid: std::process::id(),
        thread: thread as u32,
        tid: crate::history::os_thread_id(),
        keys: op_keys.iter().map(|k| k.as_str().to_owned()).collect(),
        time: now_ns(),
        input: Some(input.clone()),
        output: None,
        enter: None,
        exit: None,
        fence: None,
        error: None,
    };
    let invoke = event.clone();
    let probe = Arc::new(Probe::default());
    let result = execute(strategy, &op_keys, &input, env, &probe);
    event.time = now_ns();
    event.input = None;
    event.enter = probe.entered();
    event.exit = probe.exited();
    match result {
        Ok(output) => {
            event.phase = Phase::Ok;
            event.output = Some(output);
        }
        Err(e) => {
            // Every attempt wrote only into the op's buffer; a commit that failed
            // definitely wrote nothing, unless the outcome itself is unknown.
            event.phase = if e.is_indeterminate() {
                Phase::Unknown
            } else {
                Phase::Fail
            };
            event.error = Some(format!("{}: {e}", e.kind()));
        }
    }
    [invoke, event]
}

fn execute(
    strategy: &VersionedStrategy,
    keys: &[Key],
    input: &OpInput,
    env: &OpEnv,
    probe: &Arc<Probe>,
) -> Result<OpOutput, turnstile::Error<StoreError>> {
    let (env, probe) = (env.clone(), probe.clone());
    match input.clone() {
        OpInput::Increment => {
            let id = keys[0].as_str().to_owned();
            strategy.run_as(keys, Wait::Default, move |db| {
                // Each attempt re-enters: the history keeps the last one's section.
                probe.enter(None);
                let value = read_i64(db, &id)? + 1;
                env.pause();
                db.write(&id, value.to_le_bytes())?;
                probe.exit();
                Ok(OpOutput::Wrote { value })
            })
        }
        OpInput::Transfer { from, to, amount } => strategy.run_as(keys, Wait::Default, move |db| {
            probe.enter(None);
            let from_balance = read_i64(db, &from)?;
            if from_balance < amount {
                probe.exit();
                return Ok(OpOutput::Transferred { applied: false });
            }
            env.pause();
            db.write(&from, (from_balance - amount).to_le_bytes())?;
            let to_balance = read_i64(db, &to)?;
            db.write(&to, (to_balance + amount).to_le_bytes())?;
            probe.exit();
            Ok(OpOutput::Transferred { applied: true })
        }),
        // `supports` keeps the other workloads out.
        _ => Err(turnstile::Error::Config(
            "the versioned strategies run counter and bank only".into(),
        )),
    }
}
