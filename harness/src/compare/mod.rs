//! `turnstile compare`: every available strategy on the same workload, side by side, with
//! the harness's verdict from the same run.
//!
//! Each setting (strategy × threads × processes × `synchronous`) is one [`run`](crate::run())
//! of the workload, with lock strategies inside the resource's transaction as applications
//! use them ([`RunConfig::transaction`]): over SQLite its write lock then serializes their
//! ops too, so their verdict does not test the lock's exclusion, which a note under the
//! table says ([`Report::notes`]). Its acknowledged ops give the throughput and latency
//! percentiles; its checkers give the verdict column ([`report::verdict`]). Reference
//! floors are measured in the same run, so targets read as ratios on whatever machine this
//! is: one 1-row commit on one thread where the data lives (SQLite's per `synchronous`, or
//! the data server's over one connection to it), and two Redis round trips when Redis is
//! in the run; so is the Redis lock's own cycle (acquire + release, nothing in between),
//! against its floor.
//!
//! The data lives in a fresh SQLite file per setting by default, or in a PostgreSQL or
//! MySQL database ([`CompareConfig::data`], `--data URL`) as `turnstile check --data` keeps
//! it; strategies that do not run over that data are skipped with a note.

mod floor;
pub mod redis_server;
pub mod report;
pub mod stats;
pub mod svg;

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use turnstile::Scope;
use turnstile::spec::{Registry, redact_url};
use turnstile::sqlite::{Sqlite, Synchronous};

use crate::check::Verdict;
use crate::data::{DataSpec, runs_over};
use crate::run::{RunConfig, RunError, capabilities_of};
use crate::workload::Workload;

pub use report::{Floor, LockCycle, MAX_MEASURE, Machine, Problem, Record, Report, SqliteInfo};

/// The embedded strategies compared by default, baselines and the `unserialized` control
/// included. `optimistic` runs the same workload on versioned records in the same SQLite
/// file (see [`crate::data`]).
pub const DEFAULT_STRATEGIES: [&str; 9] = [
    "queue",
    "queue-unbatched",
    "mutex",
    "file-lock",
    "retry",
    "optimistic",
    "busy-timeout",
    "std-mutex",
    "unserialized",
];

/// Negative controls: shown in the table, never expected to be safe; what the checkers
/// found of them does not change the exit code, and one that cannot run is a note.
pub const CONTROLS: [&str; 6] = [
    "unserialized",
    "racy-version",
    crate::controls::RACY_OPTIMISTIC,
    crate::controls::SWALLOW_ERRORS,
    crate::controls::REDIS_NOFENCE,
    crate::controls::THREAD_POOL,
];

/// What to compare. Its `Debug` shows the strategy specs and server URLs as
/// [`redact_url`] does: they may hold passwords.
#[derive(Clone)]
#[non_exhaustive]
pub struct CompareConfig {
    /// Strategy specs; `None`: [`DEFAULT_STRATEGIES`] plus the servers given.
    pub strategies: Option<Vec<String>>,
    /// Threads per process. Default 1, 4, 16, 64.
    pub threads: Vec<usize>,
    /// Process counts for strategies that exclude across processes (each also runs in one
    /// process); `None`: 4, or none with `quick`.
    pub procs: Option<Vec<usize>>,
    /// `synchronous` settings. Default `normal`.
    pub sync: Vec<Synchronous>,
    /// The workload. Default `counter`.
    pub workload: Workload,
    /// Ops per setting; `None`: 10,000 (2,000 with `quick`), or a setting's threads ×
    /// processes when that is more (each thread runs at least one op). Given, it must be
    /// at least that.
    pub ops: Option<usize>,
    /// Each setting's [`RunConfig::time_limit`]; `None`: its default.
    pub time_limit: Option<Duration>,
    /// A short run: fewer ops and no process runs, unless [`ops`](CompareConfig::ops) or
    /// [`procs`](CompareConfig::procs) say otherwise.
    pub quick: bool,
    /// A Redis server to include (`redis://…`, or `rediss://…` with the feature
    /// `redis-tls`); `None`: start a private `redis-server` if one is on `PATH`.
    pub redis: Option<String>,
    /// A MySQL/MariaDB server to include (`mysql://…`, and `queue+mysql://…` after it).
    pub mysql: Option<String>,
    /// A PostgreSQL server to include (`postgres://…`, and `queue+postgres://…` after it).
    pub postgres: Option<String>,
    /// Don't start a private Redis even if `redis-server` is on `PATH`.
    pub no_private_redis: bool,
    /// Where every setting keeps its data: a fresh SQLite file (the default), or its own
    /// tables in a PostgreSQL or MySQL database. Over a server, the default strategies
    /// also take their locks on it (as [`CompareConfig::postgres`] or
    /// [`CompareConfig::mysql`] would, unless those name another), `pg-xact` joins over
    /// PostgreSQL, only the first [`sync`](CompareConfig::sync) setting runs (it is
    /// SQLite's), and the commit floor is the server's (`postgres_commit_1row`,
    /// `mysql_commit_1row`: one 1-row commit on one connection, in a table of its own that
    /// it drops) instead of SQLite's.
    pub data: DataSpec,
    /// The binary to run worker processes with. Default: this executable.
    pub worker_exe: Option<PathBuf>,
    /// Show progress on stderr.
    pub progress: bool,
}

impl fmt::Debug for CompareConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Every field, so that a new one is not left out unseen; specs and URLs redacted.
        let CompareConfig {
            strategies,
            threads,
            procs,
            sync,
            workload,
            ops,
            time_limit,
            quick,
            redis,
            mysql,
            postgres,
            no_private_redis,
            data,
            worker_exe,
            progress,
        } = self;
        let redacted = |url: &Option<String>| url.as_deref().map(redact_url);
        f.debug_struct("CompareConfig")
            .field(
                "strategies",
                &strategies
                    .as_ref()
                    .map(|specs| specs.iter().map(|s| redact_url(s)).collect::<Vec<_>>()),
            )
            .field("threads", threads)
            .field("procs", procs)
            .field("sync", sync)
            .field("workload", workload)
            .field("ops", ops)
            .field("time_limit", time_limit)
            .field("quick", quick)
            .field("redis", &redacted(redis))
            .field("mysql", &redacted(mysql))
            .field("postgres", &redacted(postgres))
            .field("no_private_redis", no_private_redis)
            .field("data", data)
            .field("worker_exe", worker_exe)
            .field("progress", progress)
            .finish()
    }
}

impl Default for CompareConfig {
    fn default() -> Self {
        CompareConfig {
            strategies: None,
            threads: vec![1, 4, 16, 64],
            procs: None,
            sync: vec![Synchronous::Normal],
            workload: Workload::Counter,
            ops: None,
            time_limit: None,
            quick: false,
            redis: None,
            mysql: None,
            postgres: None,
            no_private_redis: false,
            data: DataSpec::Sqlite,
            worker_exe: None,
            progress: false,
        }
    }
}

/// One setting to measure. Its `Debug` shows the spec as [`redact_url`] does.
#[derive(Clone)]
struct Setting {
    spec: String,
    threads: usize,
    procs: usize,
    sync: Synchronous,
    /// Its run's [`RunConfig::seed`], [`Record::seed`] in the report.
    seed: u64,
}

/// Every setting's seed is below this: JSON readers that hold numbers as doubles (jq,
/// JavaScript) read integers up to 2⁵³ exactly, and would round a larger seed in the
/// report to another.
const MAX_SEED: u64 = 1 << 53;

/// A seed for a setting's run: random, below [`MAX_SEED`].
fn new_seed() -> u64 {
    fastrand::u64(..MAX_SEED)
}

impl fmt::Debug for Setting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Setting {
            spec,
            threads,
            procs,
            sync,
            seed,
        } = self;
        f.debug_struct("Setting")
            .field("spec", &redact_url(spec))
            .field("threads", threads)
            .field("procs", procs)
            .field("sync", sync)
            .field("seed", seed)
            .finish()
    }
}

/// The outcome of a comparison: the report, and what it means for the exit code.
#[derive(Debug)]
pub struct Comparison {
    /// Everything measured.
    pub report: Report,
    /// Settings whose strategy claims to be safe there but a checker failed, and which
    /// ([`Report::violations`], one line each).
    pub violations: Vec<String>,
    /// Settings that could not produce a verdict, and why ([`Report::inconclusive`], one
    /// line each).
    pub inconclusive: Vec<String>,
    /// The signal that stopped the comparison early ([`crate::interrupt`]), if one did:
    /// the report then holds only the settings that finished before it.
    pub interrupted: Option<i32>,
}

impl Comparison {
    /// 128 + the signal's number when it was [`interrupted`](Self::interrupted); else 0:
    /// every strategy that claims to be safe was; 1: one had a violation; 3: none had a
    /// violation but a claimed-safe setting was inconclusive.
    pub fn exit_code(&self) -> i32 {
        if let Some(signal) = self.interrupted {
            128 + signal
        } else if !self.violations.is_empty() {
            1
        } else if !self.inconclusive.is_empty() {
            3
        } else {
            0
        }
    }
}

/// The strategies compared when none are named: [`DEFAULT_STRATEGIES`], then the
/// `servers`' locks (their URLs as specs), each followed by its `queue+` composition when
/// `registry` knows one (`queue+file-lock` after `file-lock`, `queue+mysql://…` after
/// `mysql://…`, …), so every composition sits next to its plain lock.
pub fn default_strategies<'a>(
    servers: impl IntoIterator<Item = &'a str>,
    registry: &Registry<Sqlite>,
) -> Vec<String> {
    // `optimistic` is missing from a harness built without its feature.
    let plain = DEFAULT_STRATEGIES
        .iter()
        .copied()
        .filter(|spec| crate::run::knows(spec, registry))
        .chain(servers);
    server_strategies(plain, registry)
}

/// Each of `specs`, followed by its `queue+` composition when `registry` knows one.
fn server_strategies<'a>(
    specs: impl IntoIterator<Item = &'a str>,
    registry: &Registry<Sqlite>,
) -> Vec<String> {
    let mut list = Vec::new();
    for spec in specs {
        list.push(spec.to_owned());
        let composed = format!("queue+{spec}");
        if crate::run::knows(&composed, registry) {
            list.push(composed);
        }
    }
    list
}

/// Splits a comma-separated list of strategy specs (`--strategies`,
/// `TURNSTILE_COMPARE_STRATEGIES`) into specs that may hold commas themselves:
/// `redlock://h1:p1,h2:p2,h3:p3`, `postgres://h1,h2/db`, a password with a comma. A piece
/// belongs to the spec before it when it does not start a spec the harness knows (its name,
/// the part before `:` or `://`, is no strategy `registry`, the versioned records or the
/// server data know) and that spec has an argument (a `:`): a comma inside a spec can
/// only come after its name. A spec is trimmed; a last piece that is empty stays one, so a
/// trailing comma is still refused as an empty spec.
///
/// A password whose comma is followed by text that does start a known spec
/// (`…:pa,mutex:x@h…`) is split there: percent-encode that comma (`%2C`). So is a host
/// list at a host named like a strategy (`postgres://u@db1:5432,postgres:5432/app`):
/// name that host by another name or its address.
///
/// # Errors
/// [`RunError::Usage`] when a piece that would join the spec before it is a bare word
/// (letters, digits, `-`, `+`, `_`) one or two edits from a strategy's name: most likely a
/// misspelt strategy (`file-lock:/srv/locks,mutx`), which would otherwise become part of
/// a lock directory, a host list or a URL. The message names the comma and the strategy
/// meant, never the piece (it might be part of a password). A host named so in a list
/// gets its port (`redlock://h1:6379,mutx:6379`); a comma in a password, `%2C`.
///
/// ```
/// use turnstile_harness::compare::split_strategies;
///
/// let registry = turnstile_harness::registry();
/// assert_eq!(
///     split_strategies("mutex,file-lock:/a,b,queue", &registry)?,
///     ["mutex", "file-lock:/a,b", "queue"]
/// );
/// assert!(split_strategies("file-lock:/a,mutx", &registry).is_err());
/// # Ok::<(), turnstile_harness::run::RunError>(())
/// ```
pub fn split_strategies(list: &str, registry: &Registry<Sqlite>) -> Result<Vec<String>, RunError> {
    let pieces: Vec<&str> = list.split(',').collect();
    let mut specs: Vec<String> = Vec::new();
    for (i, piece) in pieces.iter().enumerate() {
        let last_and_empty = i + 1 == pieces.len() && piece.trim().is_empty();
        match specs.last_mut() {
            Some(spec)
                if spec.contains(':') && !last_and_empty && !known_anywhere(piece, registry) =>
            {
                if let Some(meant) = misspelt_name(piece, registry) {
                    return Err(RunError::Usage(format!(
                        "--strategies: the text after comma {i} reads as a misspelt strategy \
                         name (did you mean {meant:?}?), not as part of the spec before it; \
                         if it is part of that spec, give a host its port (host:port), or \
                         write a comma in a password as %2C"
                    )));
                }
                spec.push(',');
                spec.push_str(piece);
            }
            _ => specs.push((*piece).to_owned()),
        }
    }
    Ok(specs.iter().map(|s| s.trim().to_owned()).collect())
}

/// The strategy name `piece` most likely misspells, when it is a bare word (no `:`, `/`,
/// `@`, `.`, `=` or space that a host, path, URL or password piece would hold).
fn misspelt_name(piece: &str, registry: &Registry<Sqlite>) -> Option<String> {
    let word = piece.trim();
    let bare = word
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'+' | b'_'));
    if !bare {
        return None;
    }
    crate::run::closest_name(word, registry)
}

/// Whether `spec` names a strategy the harness knows over any data.
fn known_anywhere(spec: &str, registry: &Registry<Sqlite>) -> bool {
    crate::run::knows(spec, registry)
        || [
            DataSpec::Postgres(String::new()),
            DataSpec::MySql(String::new()),
        ]
        .iter()
        .any(|data| runs_over(spec, data, registry))
}

/// Runs the comparison.
///
/// # Errors
/// [`RunError::Usage`] for a bad configuration (an empty list, a `threads`, `procs` or
/// `ops` value out of range, `ops` given below a setting's threads × processes (each
/// thread runs at least one op; the default `ops` is raised to it, with a note), a
/// negative-control workload ([`Workload::CONTROLS`]), an
/// unknown strategy or one that refuses its spec, no
/// strategy that runs over the data, a data URL that does not parse), found before
/// anything runs; repeated values in a list run once, and on `notify_once` and
/// `file_store` a strategy that does not exclude is skipped with a note;
/// [`RunError::Unavailable`] when the data's commit floor cannot be measured (a data
/// server that is down), before any setting runs.
pub fn compare(
    config: &CompareConfig,
    registry: &Registry<Sqlite>,
) -> Result<Comparison, RunError> {
    if config.threads.is_empty() || config.sync.is_empty() {
        return Err(RunError::Usage(
            "--threads and --sync need at least one value".into(),
        ));
    }
    if config.ops == Some(0) {
        return Err(RunError::Usage("--ops must be 1..=10000000, got 0".into()));
    }
    if Workload::CONTROLS.contains(&config.workload) {
        // Broken application code: every strategy would show its violations.
        return Err(RunError::Usage(format!(
            "{} is a negative-control workload, which no strategy can make correct: run it with `turnstile check`",
            config.workload.name()
        )));
    }
    let data = &config.data;
    data.check()?;
    // What the comparison leaves out, said on stderr as it is found and kept for the
    // report's notes: a saved report must not drop a strategy without a word.
    let mut skipped_notes: Vec<String> = Vec::new();
    let mut skip = |note: String| {
        crate::report::to_stderr(&format!("note: {note}"));
        skipped_notes.push(note);
    };
    // As messages show it: a long URL cut.
    let data_shown = crate::report::cut(&data.to_string()).into_owned();
    let mut private_redis = None;
    let mut redis_url = config.redis.clone();
    for (flag, url) in [
        ("--redis", &config.redis),
        ("--mysql", &config.mysql),
        ("--postgres", &config.postgres),
    ] {
        if url.as_deref().is_some_and(|u| u.trim().is_empty()) {
            return Err(RunError::Usage(format!(
                "{flag} (or its TURNSTILE_COMPARE_ variable) is empty: give a server's URL, or leave it out"
            )));
        }
        // The flag names the server: a URL of another kind (or a strategy's name) would
        // run other strategies than the flag says.
        let schemes: &[&str] = match flag {
            "--redis" => &["redis://", "rediss://", "redis+unix://"],
            "--mysql" => &["mysql://"],
            _ => &["postgres://", "postgresql://"],
        };
        if let Some(url) = url.as_deref()
            && !schemes.iter().any(|scheme| url.starts_with(scheme))
        {
            return Err(RunError::Usage(format!(
                "{flag} (or its TURNSTILE_COMPARE_ variable) takes a URL starting {}, not {:?}",
                schemes.join(" or "),
                crate::report::cut(&redact_url(url))
            )));
        }
    }
    let strategies: Vec<String> = match &config.strategies {
        // A server given beside the list is included too, unless the list already names
        // a lock on it (`--strategies redis://h --redis redis://h` measures that lock,
        // and the round trip).
        Some(list) => {
            let named = |url: &str| {
                list.iter()
                    .any(|spec| spec.strip_prefix("queue+").unwrap_or(spec) == url)
            };
            let servers = [&config.redis, &config.mysql, &config.postgres]
                .into_iter()
                .flatten()
                .map(String::as_str)
                .filter(|url| !named(url));
            list.iter()
                .cloned()
                .chain(server_strategies(servers, registry))
                .collect()
        }
        None => {
            let redis_runs = runs_over("redis://", data, registry);
            if redis_url.is_none()
                && !config.no_private_redis
                && registry.contains("redis")
                && redis_runs
            {
                match redis_server::PrivateRedis::start() {
                    Ok(server) => {
                        redis_url = Some(server.url());
                        private_redis = Some(server);
                    }
                    Err(e) => skip(format!("redis strategies skipped: {e}")),
                }
            } else if redis_url.is_none()
                && !config.no_private_redis
                && registry.contains("redis")
                && !redis_runs
            {
                skip(format!(
                    "redis strategies skipped, they do not run over data in {data_shown} (no private redis-server started)"
                ));
            }
            // Over a server's data, its own locks are the natural ones to compare.
            let mysql = config.mysql.clone().or_else(|| match data {
                DataSpec::MySql(url) => Some(url.clone()),
                _ => None,
            });
            let postgres = config.postgres.clone().or_else(|| match data {
                DataSpec::Postgres(url) => Some(url.clone()),
                _ => None,
            });
            let servers = redis_url
                .iter()
                .chain(&mysql)
                .chain(&postgres)
                .map(String::as_str);
            let mut list = default_strategies(servers, registry);
            if matches!(data, DataSpec::Postgres(_)) && runs_over("pg-xact", data, registry) {
                list.push("pg-xact".to_owned());
            }
            list
        }
    };
    let mut skipped = Vec::new();
    let mut runnable = Vec::new();
    for spec in distinct_specs(&strategies) {
        turnstile::spec::Spec::parse(&spec).map_err(|e| RunError::Usage(e.to_string()))?;
        if runs_over(&spec, data, registry) {
            runnable.push(spec);
        } else if known_anywhere(&spec, registry) {
            skipped.push(crate::report::cut(&redact_url(&spec)).into_owned());
        } else {
            return Err(RunError::Usage(format!(
                "unknown strategy {:?}{}; see `turnstile list`",
                crate::report::cut(&redact_url(&spec)),
                crate::run::did_you_mean(&spec, registry)
            )));
        }
    }
    if !skipped.is_empty() {
        skip(format!(
            "skipped, they do not run over data in {data_shown}: {}",
            skipped.join(", ")
        ));
    }
    if runnable.is_empty() {
        return Err(RunError::Usage(format!(
            "none of the strategies runs over data in {data_shown}; see `turnstile list`"
        )));
    }
    let strategies = runnable;
    // `synchronous` is SQLite's: over a server's data, more settings would repeat the runs.
    let syncs = if data.is_server() {
        if config.sync.len() > 1 {
            crate::report::to_stderr(&format!(
                "note: over data in {data_shown} only sync={} runs (the setting is SQLite's)",
                config.sync[0].as_str().to_ascii_lowercase()
            ));
        }
        config.sync[..1].to_vec()
    } else {
        distinct(&config.sync)
    };

    let threads = distinct(&config.threads);
    let procs = match &config.procs {
        Some(procs) => distinct(procs),
        None if config.quick => Vec::new(),
        None => vec![4],
    };
    let ops = config
        .ops
        .unwrap_or(if config.quick { 2000 } else { 10_000 });

    // Every strategy opened (not probed) before anything runs: a spec the strategy
    // refuses is bad usage now, not after the settings before it; one whose backend is
    // out of reach is left to its settings, which end inconclusive.
    let mut opened = Vec::new();
    // A server out of reach when a strategy on it is opened here: its settings, and those
    // of the other strategies on it (`queue+…`), are recorded inconclusive without
    // running, instead of each waiting out its connect timeout again (10 s for a port
    // that accepts and never speaks MySQL).
    let mut out_of_reach: Vec<(String, String)> = Vec::new();
    let mut not_run: Vec<(String, String)> = Vec::new();
    let mut cannot_protect = Vec::new();
    // Strategies that run in autocommit unless asked for a transaction: lock strategies,
    // whose run here (inside one) does not test their exclusion over SQLite.
    let mut autocommit = Vec::new();
    for spec in strategies {
        let server = server_of(&spec);
        let earlier = out_of_reach.iter().find(|(s, _)| *s == server);
        let caps = match earlier {
            Some((_, reason)) => {
                not_run.push((spec.clone(), reason.clone()));
                None
            }
            None => match capabilities_of(&spec, data, registry) {
                Ok(caps) => Some(caps),
                Err(RunError::Usage(m)) => {
                    return Err(RunError::Usage(format!(
                        "{}: {m}",
                        crate::report::cut(&redact_url(&spec))
                    )));
                }
                Err(e @ RunError::Unavailable(_)) => {
                    out_of_reach.push((server, e.reason()));
                    not_run.push((spec.clone(), e.reason()));
                    None
                }
                Err(_) => None,
            },
        };
        // As `bench`: a strategy that does not exclude cannot protect state outside the
        // data it arbitrates (notify_once's effects, file_store's file); its run would be
        // a violation of a promise it never made.
        if caps.is_some_and(|c| !c.excludes)
            && matches!(
                config.workload,
                Workload::NotifyOnce | Workload::NotifyStale | Workload::FileStore
            )
            && !is_control(&spec)
        {
            cannot_protect.push(crate::report::cut(&redact_url(&spec)).into_owned());
            continue;
        }
        if caps.is_some_and(|c| !c.transactional) {
            autocommit.push(spec.clone());
        }
        opened.push((spec, caps.map(|c| c.scope)));
    }
    if !cannot_protect.is_empty() {
        skip(format!(
            "skipped, they do not exclude, so they cannot protect {}'s state outside the data: {}",
            config.workload,
            cannot_protect.join(", ")
        ));
    }
    if opened.is_empty() {
        return Err(RunError::Usage(format!(
            "none of the strategies can protect {}'s state outside the data",
            config.workload
        )));
    }

    let mut settings = Vec::new();
    for (spec, scope) in &opened {
        for &sync in &syncs {
            for &t in &threads {
                settings.push(Setting {
                    spec: spec.clone(),
                    threads: t,
                    procs: 1,
                    sync,
                    seed: new_seed(),
                });
            }
            if scope.is_some_and(|s| s >= Scope::Processes) {
                for &p in procs.iter().filter(|&&p| p > 1) {
                    for &t in &threads {
                        settings.push(Setting {
                            spec: spec.clone(),
                            threads: t,
                            procs: p,
                            sync,
                            seed: new_seed(),
                        });
                    }
                }
            }
        }
    }

    // Every thread of a setting runs at least one op: fewer ops than a setting's threads
    // × processes would be more ops than asked.
    if let Some(most) = settings
        .iter()
        .map(|s| s.threads * s.procs)
        .max()
        .filter(|&most| most > ops)
    {
        let widest = settings
            .iter()
            .find(|s| s.threads * s.procs == most)
            .map(|s| format!("{} threads × {} procs", s.threads, s.procs))
            .unwrap_or_default();
        if config.ops.is_some() {
            return Err(RunError::Usage(format!(
                "--ops {ops} is fewer than the {most} threads of a setting ({widest}), each of which runs at least one op: give --ops {most} or more, or fewer --threads or --procs"
            )));
        }
        crate::report::to_stderr(&format!(
            "note: settings with more threads than the default {ops} ops (up to {widest}) run one op per thread"
        ));
    }

    // Every setting checked before the first runs: a bad one stops the comparison now,
    // with nothing half measured.
    let run_config = |setting: &Setting| {
        let mut run_config = RunConfig::new(setting.spec.clone(), config.workload)
            .threads(setting.threads)
            .procs(setting.procs)
            .ops(ops.max(setting.threads * setting.procs))
            .data(data.clone())
            .transaction(true)
            .sync(setting.sync)
            .seed(setting.seed);
        run_config.worker_exe = config.worker_exe.clone();
        if let Some(limit) = config.time_limit {
            run_config = run_config.time_limit(limit);
        }
        run_config
    };
    for &t in &threads {
        RunConfig::new("", config.workload).threads(t).validate()?;
    }
    for &p in &procs {
        RunConfig::new("", config.workload).procs(p).validate()?;
    }
    RunConfig::new("", config.workload).ops(ops).validate()?;
    for setting in &settings {
        run_config(setting).validate()?;
    }

    let bar = config.progress.then(|| {
        let bar = indicatif::ProgressBar::new(settings.len() as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{elapsed_precise} [{bar:30}] {pos}/{len} {msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
    });

    let mut floors = Vec::new();
    let mut lock_cycles = Vec::new();
    // The floor is where the data lives: a server's is one commit over the network.
    if data.is_server() {
        floors.push(floor::server(data)?);
    } else {
        for &sync in &syncs {
            floors.push(floor::sqlite(sync)?);
        }
    }
    if let Some(url) = &redis_url {
        match redis_server::floor_and_lock_cycle(url) {
            Ok((floor, cycle)) => {
                floors.push(floor);
                lock_cycles.extend(cycle);
            }
            Err(e) => skip(format!("redis round-trip floor not measured: {e}")),
        }
    }

    let mut results = Vec::new();
    let mut violations = Vec::new();
    let mut inconclusive = Vec::new();
    let mut notes = Vec::new();
    let mut locks_in_sqlite_tx: Vec<String> = Vec::new();
    let mut interrupted = None;
    for setting in &settings {
        if let Some(signal) = crate::interrupt::requested() {
            interrupted = Some(signal);
            break;
        }
        let ran = !not_run.iter().any(|(spec, _)| *spec == setting.spec);
        let problem = |reason: String| Problem {
            strategy: redact_url(&setting.spec),
            threads: setting.threads as u32,
            procs: setting.procs as u32,
            sync: setting.sync.as_str().to_ascii_lowercase(),
            // A setting recorded without running used no seed.
            seed: ran.then_some(setting.seed),
            reason,
        };
        let label = format!(
            "{} ×{} threads ×{} procs, sync={}",
            redact_url(&setting.spec),
            setting.threads,
            setting.procs,
            setting.sync.as_str().to_ascii_lowercase()
        );
        if let Some(bar) = &bar {
            bar.set_message(label.clone());
        }
        let control = is_control(&setting.spec);
        let outcome = match not_run.iter().find(|(spec, _)| *spec == setting.spec) {
            Some((_, reason)) => Err(RunError::Unavailable(format!(
                "{} (found when the comparison began; this setting was not run)",
                reason
                    .strip_prefix("backend unavailable: ")
                    .unwrap_or(reason)
            ))),
            // Nothing is kept (no `--keep`): the failure's error says it all.
            None => crate::run(&run_config(setting), registry).map_err(|f| f.error),
        };
        match outcome {
            Ok(run) => {
                let out_of_scope = !run.notes.is_empty()
                    && setting.procs > 1
                    && run.scope == Scope::Threads.as_str();
                let claims_safe = !control && !out_of_scope;
                let safe = run.verdict == Verdict::Pass;
                let mut latencies: Vec<Duration> = run
                    .latencies_ns
                    .iter()
                    .map(|&ns| Duration::from_nanos(ns))
                    .collect();
                let summary = stats::Summary::of(&mut latencies);
                let why = |verdict: Verdict| {
                    run.checks
                        .iter()
                        .filter(|c| c.verdict == verdict)
                        .map(|c| format!("{}: {}", c.checker, c.summary))
                        .collect::<Vec<_>>()
                        .join("; ")
                };
                if claims_safe && run.verdict == Verdict::Violation {
                    violations.push(problem(why(Verdict::Violation)));
                }
                if claims_safe && run.verdict == Verdict::Inconclusive {
                    inconclusive.push(problem(why(Verdict::Inconclusive)));
                }
                let spec = redact_url(&setting.spec);
                if !data.is_server()
                    && run.transactional
                    && autocommit.contains(&setting.spec)
                    && !locks_in_sqlite_tx.contains(&spec)
                {
                    locks_in_sqlite_tx.push(spec);
                }
                results.push(Record {
                    strategy: redact_url(&setting.spec),
                    scope: run.scope.to_owned(),
                    workload: config.workload.name().to_owned(),
                    threads: setting.threads as u32,
                    procs: setting.procs as u32,
                    sync: setting.sync.as_str().to_ascii_lowercase(),
                    ops: run.acknowledged as u64,
                    ops_per_sec: stats::ops_per_sec(run.acknowledged as u64, run.wall),
                    p50_us: summary.p50_us,
                    p99_us: summary.p99_us,
                    p999_us: summary.p999_us,
                    max_us: summary.max_us,
                    safe,
                    verdict: Some(run.verdict),
                    seed: Some(run.seed),
                    ops_requested: Some(run.requested as u64),
                    claims_safe,
                    verdicts: run
                        .checks
                        .iter()
                        .map(|c| format!("{}: {} ({})", c.checker, c.verdict, c.summary))
                        .collect(),
                });
            }
            Err(RunError::Usage(m)) => return Err(RunError::Usage(m)),
            Err(RunError::Interrupted(signal)) => {
                interrupted = Some(signal);
                break;
            }
            Err(e) => {
                if control {
                    // Not a claim, so not the exit code's business; but not caught either.
                    notes.push(format!("control {label} did not run: {}", e.reason()));
                } else {
                    inconclusive.push(problem(e.reason()));
                }
                crate::report::to_stderr(&format!("note: {label}: {e}"));
            }
        }
        if let Some(bar) = &bar {
            bar.inc(1);
        }
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    drop(private_redis);
    // What was left out first, as it was found before anything ran; then what the
    // verdicts do not test; then the controls that did not run.
    let mut all_notes = skipped_notes;
    if !locks_in_sqlite_tx.is_empty() {
        all_notes.push(format!(
            "{} ran inside SQLite transactions, whose write lock serialized their ops too: their verdict here does not test their own exclusion (the test suite's autocommit conformance runs do)",
            locks_in_sqlite_tx.join(", ")
        ));
    }
    all_notes.append(&mut notes);
    let notes = all_notes;

    let report = Report {
        turnstile_version: env!("CARGO_PKG_VERSION").to_owned(),
        machine: Machine::current(),
        sqlite: SqliteInfo {
            version: turnstile::sqlite::rusqlite::version().to_owned(),
            journal_mode: "wal".to_owned(),
            sync: syncs
                .iter()
                .map(|s| s.as_str().to_ascii_lowercase())
                .collect(),
        },
        data: data.to_string(),
        floors,
        lock_cycles,
        results,
        violations,
        inconclusive,
        notes,
    };
    Ok(Comparison {
        violations: report.violations.iter().map(ToString::to_string).collect(),
        inconclusive: report
            .inconclusive
            .iter()
            .map(ToString::to_string)
            .collect(),
        report,
        interrupted,
    })
}

/// `list` without its repeats, in its order.
fn distinct<T: Clone + PartialEq>(list: &[T]) -> Vec<T> {
    let mut out: Vec<T> = Vec::with_capacity(list.len());
    for item in list {
        if !out.contains(item) {
            out.push(item.clone());
        }
    }
    out
}

/// The server a strategy spec locks on, shared by its `queue+` form: the spec without
/// `queue+` (in any case); a spec without a server is its own.
fn server_of(spec: &str) -> String {
    const QUEUE: &str = "queue+";
    match spec.get(..QUEUE.len()) {
        Some(head) if head.eq_ignore_ascii_case(QUEUE) => spec[QUEUE.len()..].to_owned(),
        _ => spec.to_owned(),
    }
}

/// `list` without the specs that parse the same as one before them (`Mutex` after
/// `mutex`): names and URL schemes are matched without regard to case. A spec that does
/// not parse stays, for the caller to refuse.
fn distinct_specs(list: &[String]) -> Vec<String> {
    let mut seen: Vec<turnstile::spec::Spec> = Vec::new();
    let mut out = Vec::with_capacity(list.len());
    for text in list {
        match turnstile::spec::Spec::parse(text) {
            Ok(spec) if seen.contains(&spec) => {}
            Ok(spec) => {
                seen.push(spec);
                out.push(text.clone());
            }
            Err(_) => out.push(text.clone()),
        }
    }
    out
}

/// Whether `spec` names one of the [`CONTROLS`].
fn is_control(spec: &str) -> bool {
    turnstile::spec::Spec::parse(spec).is_ok_and(|s| CONTROLS.contains(&s.name()))
}

/// The chart of a report: throughput and p99 against threads, one line per strategy and
/// process count.
pub fn chart(report: &Report) -> String {
    let mut series: Vec<svg::Series> = Vec::new();
    for r in &report.results {
        let setting = if r.procs > 1 {
            format!("sync={}, {} procs", r.sync, r.procs)
        } else {
            format!("sync={}", r.sync)
        };
        let point = svg::Point {
            threads: r.threads,
            ops_per_sec: r.ops_per_sec,
            p99_us: r.p99_us,
            safe: r.safe,
        };
        match series
            .iter_mut()
            .find(|s| s.strategy == r.strategy && s.setting == setting)
        {
            Some(s) => s.points.push(point),
            None => series.push(svg::Series {
                strategy: r.strategy.clone(),
                setting,
                points: vec![point],
            }),
        }
    }
    let workload = report
        .results
        .first()
        .map_or("", |r| r.workload.as_str())
        .to_owned();
    svg::chart(&format!("turnstile compare: {workload}"), &series)
}

#[cfg(all(test, feature = "redis", feature = "mysql", feature = "postgres"))]
mod tests {
    use super::*;

    /// Strategy specs and server URLs may hold passwords: `Debug` shows them as
    /// `redact_url` does.
    #[test]
    fn debug_hides_the_passwords_of_specs_and_urls() {
        let config = CompareConfig {
            strategies: Some(vec![
                "mutex".into(),
                "queue+mysql://app:hunter1@db/app".into(),
            ]),
            redis: Some("redis://:hunter2@cache:6379/0".into()),
            mysql: Some("mysql://app:hunter3@db/app".into()),
            postgres: Some("postgres://app:hunter4@db/app".into()),
            data: "postgres://app:hunter5@db/app".parse().unwrap(),
            ..CompareConfig::default()
        };
        let shown = format!("{config:?}");
        assert!(!shown.contains("hunter"), "{shown}");
        for redacted in [
            "queue+mysql://app:***@db/app",
            "redis://:***@cache:6379/0",
            "mysql://app:***@db/app",
            "postgres://app:***@db/app",
        ] {
            assert!(shown.contains(redacted), "{shown}");
        }
        let setting = Setting {
            spec: "redlock://:hunter6@h1,h2,h3".into(),
            threads: 4,
            procs: 1,
            sync: Synchronous::Normal,
            seed: 7,
        };
        let shown = format!("{setting:?}");
        assert!(!shown.contains("hunter"), "{shown}");
        assert!(shown.contains("redlock://:***@h1,h2,h3"), "{shown}");
        assert!(shown.contains("seed: 7"), "{shown}");
    }

    /// A setting's seed is read exactly by JSON readers that hold numbers as doubles.
    #[test]
    fn settings_seeds_stay_below_two_to_the_53() {
        assert_eq!(MAX_SEED, 1 << 53);
        assert!((0..10_000).all(|_| new_seed() < MAX_SEED));
    }

    #[test]
    fn a_strategy_named_twice_in_any_case_runs_once_as_first_named() {
        let list: Vec<String> = [
            "Mutex",
            "mutex",
            " MUTEX ",
            "retry",
            "redis://h/0",
            "redis://h/0",
            "REDIS://h/0",
        ]
        .map(str::to_owned)
        .to_vec();
        // A URL's scheme is case-insensitive too: `REDIS://h/0` is the same lock.
        assert_eq!(distinct_specs(&list), ["Mutex", "retry", "redis://h/0"]);
    }

    #[test]
    fn a_strategy_list_splits_between_specs_not_inside_one() {
        let registry = crate::registry();
        for (list, specs) in [
            ("queue,mutex", &["queue", "mutex"][..]),
            (" queue , mutex ", &["queue", "mutex"]),
            ("queue,nosuch", &["queue", "nosuch"]),
            ("queue,", &["queue", ""]),
            ("", &[""]),
            (
                "redlock://h1:1,h2:2,h3:3/0,queue",
                &["redlock://h1:1,h2:2,h3:3/0", "queue"],
            ),
            (
                "mutex,queue+redlock://u:p@h1:1,h2:2,h3:3",
                &["mutex", "queue+redlock://u:p@h1:1,h2:2,h3:3"],
            ),
            (
                "postgres://h1,h2/db,pg-xact",
                &["postgres://h1,h2/db", "pg-xact"],
            ),
            ("mysql://u:pa,ss@h/db", &["mysql://u:pa,ss@h/db"]),
            ("mysql://u:pa,,ss@h/db,", &["mysql://u:pa,,ss@h/db", ""]),
            (
                "mysql://u:a,queue@h/db,mysql://u:b,c@h/db",
                &["mysql://u:a,queue@h/db", "mysql://u:b,c@h/db"],
            ),
            (
                "file-lock:/a,b,optimistic",
                &["file-lock:/a,b", "optimistic"],
            ),
            (
                "nosuch://a,b,racy-version:5",
                &["nosuch://a,b", "racy-version:5"],
            ),
        ] {
            assert_eq!(split_strategies(list, &registry).unwrap(), specs, "{list}");
        }
    }

    #[test]
    fn every_composition_the_registry_knows_sits_after_its_plain_lock() {
        let registry = crate::registry();
        let mysql = "mysql://root@127.0.0.1:3306/test";
        let postgres = "postgres://postgres@127.0.0.1:5432/test";
        let redis = "redis://127.0.0.1:6379";
        let list = default_strategies([redis, mysql, postgres], &registry);
        let after = |plain: &str| {
            let i = list.iter().position(|s| s == plain).unwrap();
            list.get(i + 1).cloned()
        };
        assert_eq!(after("file-lock").as_deref(), Some("queue+file-lock"));
        for url in [redis, mysql, postgres] {
            assert_eq!(after(url), Some(format!("queue+{url}")), "{list:?}");
        }
        // Strategies without a composition stand alone, and no server means no server
        // strategies.
        let embedded = default_strategies([], &registry);
        assert_eq!(embedded.len(), DEFAULT_STRATEGIES.len() + 1, "{embedded:?}");
        assert!(embedded.iter().all(|s| !s.contains("://")));
    }
}
