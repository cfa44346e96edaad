//! The `turnstile` command line: `compare` runs every available strategy side by side
//! (throughput, latency percentiles and the checkers' verdict of the same run); `check`
//! runs a workload through one strategy and prints each checker's verdict; `worker`
//! (hidden) is one worker process of a run.
//!
//! Exit codes: 0 every checker passed, 1 a violation, 2 bad usage, 3 inconclusive.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::parser::ValueSource;
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use turnstile::spec::redact_url;
use turnstile::sqlite::Synchronous;
use turnstile_harness::nemesis::Nemesis;
use turnstile_harness::report::NoVerdict;
use turnstile_harness::{DataSpec, RunConfig, Workload, procs, registry, report, run};

#[derive(Parser)]
#[command(
    name = "turnstile",
    version,
    about = "Check and compare turnstile strategies"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a workload through a strategy and check the history.
    Check(CheckArgs),
    /// List the strategies and workloads.
    List,
    /// Every available strategy side by side: ops/s, p50/p99/p99.9/max latency, and the
    /// checkers' verdict on the same run. Exits 1 when a strategy that claims to be safe
    /// at a setting had a violation there, 3 when one ended without a verdict.
    Compare(CompareArgs),
    /// One worker process of a run (started by `check`); its spec, as one line of JSON,
    /// comes first on stdin (never on the command line: it may hold passwords).
    #[command(hide = true)]
    Worker,
}

/// After `compare --help`: where the URLs may come from instead.
const COMPARE_ENV: &str = "\
Every URL above may come from the environment instead of the command line, where every \
user of the host sees it (ps): to keep a password out of ps, pass the URL in \
TURNSTILE_COMPARE_DATA, TURNSTILE_COMPARE_REDIS, TURNSTILE_COMPARE_MYSQL, \
TURNSTILE_COMPARE_POSTGRES or TURNSTILE_COMPARE_STRATEGIES (a flag given wins). They are \
not the test suite's TURNSTILE_REDIS_URL, TURNSTILE_MYSQL_URL and TURNSTILE_POSTGRES_URL \
on purpose: scripts/services exports those for the tests, and a shell set up for the \
tests must not add servers to a comparison.";

/// After `check --help`: where the URLs may come from instead.
const CHECK_ENV: &str = "\
The strategy spec and the data URL may come from the environment instead of the command \
line, where every user of the host sees them (ps): to keep a password out of ps, pass \
the URL in TURNSTILE_CHECK_STRATEGY or TURNSTILE_CHECK_DATA (a flag given wins). They are \
not the test suite's TURNSTILE_*_URL on purpose: scripts/services exports those for the \
tests, and a shell set up for the tests must not change what a check runs.";

#[derive(Args)]
#[command(after_help = COMPARE_ENV)]
struct CompareArgs {
    /// A short run (under a minute): fewer ops, threads 1, 16 and 64, no process runs
    /// (--ops, --threads and --procs, when given, win).
    #[arg(long)]
    quick: bool,
    /// SQLite synchronous settings to measure, comma-separated: off, normal, full, extra
    /// (SQLite data only: refused with a server's --data).
    #[arg(long, value_delimiter = ',', default_value = "normal")]
    sync: Vec<Synchronous>,
    /// Strategy specs, comma-separated (default: every embedded strategy, the baselines,
    /// the `unserialized` control, and the servers below). A spec may hold commas
    /// (redlock://h1:p1,h2:p2,h3:p3): a piece that does not start with a known strategy
    /// name continues the spec before it when that one has an argument (percent-encode a
    /// password's comma as %2C when a known name follows it, and name a host that bears a
    /// strategy's name, as postgres:5432, by another name or address). May be repeated.
    #[arg(long, env = "TURNSTILE_COMPARE_STRATEGIES", hide_env_values = true)]
    strategies: Vec<String>,
    /// Threads per process, comma-separated (default 1,4,16,64; 1,16,64 with --quick).
    #[arg(long, value_delimiter = ',')]
    threads: Option<Vec<usize>>,
    /// Process counts for cross-process strategies, comma-separated (default 4; none with
    /// --quick).
    #[arg(long, value_delimiter = ',')]
    procs: Vec<usize>,
    /// Ops per setting (default 10000; 2000 with --quick). Every thread runs at least one
    /// op: a value below a setting's threads × procs is refused (the default is raised to
    /// it, with a note).
    #[arg(long)]
    ops: Option<usize>,
    /// Cut a setting short after this many seconds (worker processes), or once no op has
    /// started for this long (one process): a violation in the ops that ran is its
    /// verdict, otherwise it is inconclusive. Default 300.
    #[arg(long)]
    time_limit_s: Option<u64>,
    /// The workload: counter, bank, notify_once, kv, file_store; or unique (counter's
    /// increment, one op in four failing on purpose with its own error).
    #[arg(long, default_value = "counter")]
    workload: Workload,
    /// Include this Redis: redis://…, or rediss://…[?tls_ca=FILE] over TLS (default: start
    /// a private redis-server found on PATH).
    #[arg(long, env = "TURNSTILE_COMPARE_REDIS", hide_env_values = true)]
    redis: Option<String>,
    /// Don't start a private redis-server.
    #[arg(long)]
    no_redis: bool,
    /// Include this MySQL/MariaDB server's GET_LOCK (mysql://user:pass@host:port/db), and
    /// the queue over it (queue+mysql://…).
    #[arg(long, env = "TURNSTILE_COMPARE_MYSQL", hide_env_values = true)]
    mysql: Option<String>,
    /// Include this PostgreSQL server's advisory locks (postgres://user@host:port/db), and
    /// the queue over them (queue+postgres://…).
    #[arg(long, env = "TURNSTILE_COMPARE_POSTGRES", hide_env_values = true)]
    postgres: Option<String>,
    /// Where the data lives: sqlite (a fresh file per setting), postgres://user@host:port/db
    /// or mysql://user@host:port/db (each setting's own tables, dropped at its end, at READ
    /// COMMITTED whatever the server's default). Over a server its own locks join the
    /// default strategies (and pg-xact over PostgreSQL), the commit floor is that server's,
    /// and strategies that do not run over that data are skipped with a note.
    #[arg(
        long,
        default_value = "sqlite",
        value_parser = DataParser,
        env = "TURNSTILE_COMPARE_DATA",
        hide_env_values = true
    )]
    data: DataSpec,
    /// Write the JSON report here; a comparison that ends without one (bad usage found
    /// once the outputs are checked, a data server down) writes why instead:
    /// {"verdict":"no-verdict","exit":N,"error":{"kind":…,"message":…}}.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write an SVG chart (throughput and p99 against threads) here.
    #[arg(long)]
    svg: Option<PathBuf>,
    /// Don't run anything: print the table (and write --svg) of a report saved with --json.
    /// Takes no other option but --svg: one that sets up a run is refused.
    #[arg(long)]
    from_json: Option<PathBuf>,
}

#[derive(Args)]
#[command(after_help = CHECK_ENV)]
struct CheckArgs {
    /// Strategy spec (see `turnstile list`).
    #[arg(long, env = "TURNSTILE_CHECK_STRATEGY", hide_env_values = true)]
    strategy: String,
    /// Workload: counter, bank, notify_once, kv, file_store; unique (counter's increment,
    /// one op in four failing on purpose, which must get its own error back); or the
    /// negative control notify_stale (seed 004 as written: the flag read before the lock).
    #[arg(long)]
    workload: Workload,
    /// Threads per process.
    #[arg(long, default_value_t = 4)]
    threads: usize,
    /// Worker processes (1: threads in this process).
    #[arg(long, default_value_t = 1)]
    procs: usize,
    /// Ops in total.
    #[arg(long, default_value_t = 1000)]
    ops: usize,
    /// Keys (default: the workload's). bank needs at least 2 (a transfer is between two
    /// accounts); file_store has one, its file, whatever this says (with a note).
    #[arg(long)]
    keys: Option<usize>,
    /// Pause between each op's read and write, in µs.
    #[arg(long, default_value_t = 0)]
    think_us: u64,
    /// Between each op's read and write, wait up to this many µs for another worker to
    /// be there too (makes broken strategies' sections meet; slows correct ones).
    #[arg(long, default_value_t = 0)]
    rendezvous_us: u64,
    /// Faults: kill:EVERY_MS or stop:MS.
    #[arg(long)]
    nemesis: Option<Nemesis>,
    /// Run a lock strategy inside the resource's transaction, as applications do
    /// (fences enforced, a lost lease rolls back), not in autocommit, where only the lock
    /// protects the data. Tests recovery from a paused holder, not exclusion. Kill runs
    /// always do. A control that always runs in autocommit (unserialized, racy-version,
    /// redis-nofence) ignores it, with a note on stderr.
    #[arg(long)]
    transaction: bool,
    /// Print the report as JSON; a run that ends without a verdict prints
    /// {"verdict":"no-verdict","exit":N,"error":{"kind":…,"message":…}} instead.
    #[arg(long)]
    json: bool,
    /// Save history and database here when the run does not pass, or ends without a
    /// verdict (what it had written by then: the time limit, a worker that failed, a
    /// signal): a new directory (made with its parents) or an empty one. One that holds
    /// files already is refused, so that two runs' files never mix.
    #[arg(long)]
    keep: Option<PathBuf>,
    /// Where the data lives: sqlite (a fresh file), postgres://user@host:port/db or
    /// mysql://user@host:port/db (the run's own tables, dropped at the end, at READ
    /// COMMITTED whatever the server's default).
    #[arg(
        long,
        default_value = "sqlite",
        value_parser = DataParser,
        env = "TURNSTILE_CHECK_DATA",
        hide_env_values = true
    )]
    data: DataSpec,
    /// SQLite synchronous: off, normal, full or extra (SQLite data only: refused with a
    /// server's --data).
    #[arg(long, default_value = "normal")]
    sync: Synchronous,
    /// SQLite database path (default: a fresh temporary file).
    #[arg(long)]
    db: Option<PathBuf>,
    /// How long an op may wait to start, in ms (default: the strategy's).
    #[arg(long)]
    timeout_ms: Option<u64>,
    /// Cut the run short after this many seconds (worker processes, which then get 5 s
    /// to end the ops under way), or once no op has started for this long (one process).
    /// The ops that ran are checked: a violation among them is the verdict (exit 1);
    /// otherwise the run is inconclusive (exit 3). Default 300.
    #[arg(long)]
    time_limit_s: Option<u64>,
    /// Write a timeline of the critical sections here (SVG).
    #[arg(long)]
    svg: Option<PathBuf>,
    /// Random seed (default: random).
    #[arg(long)]
    seed: Option<u64>,
}

/// Parses `--data` as [`DataSpec`] does, but an error shows the value redacted only: clap's
/// own message for a bad value repeats it whole, password and all, even when it came from
/// an environment variable meant to keep it out of sight.
#[derive(Clone)]
struct DataParser;

impl clap::builder::TypedValueParser for DataParser {
    type Value = DataSpec;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<DataSpec, clap::Error> {
        let arg = match arg {
            None => "'--data'".to_owned(),
            // A value the flag did not give came from the environment: say which variable.
            Some(arg) => match arg.get_env().filter(|_| !flag_given(arg)) {
                Some(env) => format!("'{arg}' (from {})", env.to_string_lossy()),
                None => format!("'{arg}'"),
            },
        };
        let bad = |why: String| {
            clap::Error::raw(
                clap::error::ErrorKind::ValueValidation,
                format!("invalid value for {arg}: {why}\n"),
            )
            .with_cmd(cmd)
        };
        let given = value.to_str().ok_or_else(|| bad("not UTF-8".to_owned()))?;
        given.parse().map_err(|why: String| {
            let redacted = redact_url(given);
            bad(report::cut_echoes(&why, [given, &redacted]))
        })
    }
}

/// `url` (`compare`'s `--redis`, `--mysql`, `--postgres`) with its scheme (the name
/// before `://`) in lower case: schemes are case-insensitive (RFC 3986), but a driver
/// reads `Postgres://…` as a `key=value` string. Anything else is left as it is. (Strategy
/// specs and `--data` are read so by `Spec::parse` and `DataSpec`'s `FromStr`.)
fn lower_scheme(url: &str) -> String {
    match url.trim_start().split_once("://") {
        Some((scheme, rest))
            if !scheme.is_empty()
                && scheme
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
                && scheme.bytes().any(|b| b.is_ascii_uppercase()) =>
        {
            format!("{}://{rest}", scheme.to_ascii_lowercase())
        }
        _ => url.to_owned(),
    }
}

/// Where the values of a subcommand's arguments came from.
#[derive(Clone, Copy)]
struct Given<'a>(Option<&'a clap::ArgMatches>);

impl Given<'_> {
    /// Whether the command line gave the argument `id` (not its default, nor its
    /// environment variable).
    fn on_command_line(self, id: &str) -> bool {
        self.source(id) == Some(ValueSource::CommandLine)
    }

    /// Whether the argument `id` came from its environment variable.
    fn by_variable(self, id: &str) -> bool {
        self.source(id) == Some(ValueSource::EnvVariable)
    }

    fn source(self, id: &str) -> Option<ValueSource> {
        self.0.and_then(|m| m.value_source(id))
    }
}

/// Every value the command line and `check`'s and `compare`'s variables gave, as a message
/// may echo it (whole, the value of `--flag=value`, with its password redacted): what
/// [`say`] cuts.
fn given_values() -> Vec<String> {
    let mut values = Vec::new();
    for arg in std::env::args_os().skip(1) {
        let arg = arg.to_string_lossy().into_owned();
        if let Some((_, value)) = arg.strip_prefix("--").and_then(|a| a.split_once('=')) {
            values.push(value.to_owned());
        }
        values.push(arg);
    }
    for (name, value) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if name.starts_with("TURNSTILE_CHECK_") || name.starts_with("TURNSTILE_COMPARE_") {
            values.push(value.to_string_lossy().into_owned());
        }
    }
    let redacted: Vec<String> = values
        .iter()
        .map(|v| redact_url(v))
        .filter(|r| !values.contains(r))
        .collect();
    values.extend(redacted);
    values
}

/// Writes `line` to stderr ([`report::to_stderr`]), with any long value it echoes from the
/// command line or the environment [`cut`](report::cut): a message made elsewhere (the
/// run's, a strategy's) may echo a 100 KB path or spec whole.
fn say(line: &str) {
    let values = given_values();
    report::to_stderr(&report::cut_echoes(line, values.iter().map(String::as_str)));
}

/// Prints clap's error or help, with any long value it echoes cut as [`say`] does, and
/// gives the exit code: 2 for an error, 0 for `--help` and `--version`.
fn clap_error(e: &clap::Error) -> u8 {
    if !e.use_stderr() {
        let _ = e.print();
        return 0;
    }
    let text = e.render().to_string();
    let values = given_values();
    let shown = report::cut_echoes(&text, values.iter().map(String::as_str));
    if shown == text {
        // Unchanged: as clap prints it, in colour on a terminal.
        let _ = e.print();
    } else {
        let _ = std::io::stderr()
            .lock()
            .write_all(report::printable(&shown).as_bytes());
    }
    2
}

/// Whether the command line gives `arg`'s flag (`--data URL` or `--data=URL`), rather
/// than its environment variable.
fn flag_given(arg: &clap::Arg) -> bool {
    let Some(long) = arg.get_long() else {
        return true;
    };
    let flag = format!("--{long}");
    std::env::args_os().skip(1).any(|a| {
        let a = a.to_string_lossy();
        a == flag || a.starts_with(&format!("{flag}="))
    })
}

/// Writes to stdout; a closed pipe (`turnstile list | head`) is not an error worth a panic.
/// Control characters are escaped ([`report::printable`]).
fn out(text: &str) {
    let _ = std::io::stdout()
        .lock()
        .write_all(report::printable(text).as_bytes());
}

/// The largest `--from-json` report read: far past any `compare` writes (a few hundred
/// bytes per result), and a bound on what a wrong path (`/dev/zero`) costs.
const MAX_REPORT_BYTES: u64 = 64 << 20;

/// The file at `path`, refused when longer than `limit` bytes (read no further).
fn read_at_most(path: &Path, limit: u64) -> Result<Vec<u8>, String> {
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut bytes = Vec::new();
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    if bytes.len() as u64 > limit {
        return Err(format!(
            "longer than {} MiB: not a report of `turnstile compare --json`",
            limit >> 20
        ));
    }
    Ok(bytes)
}

/// Why a `--sync` given on the command line would be ignored, if it would: the data is
/// on a server (from `--data` or its variable `data_var`), and the setting is SQLite's.
fn sync_ignored(given: Given<'_>, data: &DataSpec, data_var: &str) -> Option<String> {
    (given.on_command_line("sync") && data.is_server()).then(|| {
        format!(
            "--sync is SQLite's setting; the data is in {}{} (drop one of --sync and --data)",
            report::cut(&data.to_string()),
            if given.by_variable("data") {
                format!(" (from {data_var})")
            } else {
                String::new()
            }
        )
    })
}

/// Where `check`'s strategy spec comes from when no flag gives it.
const STRATEGY_VAR: &str = "TURNSTILE_CHECK_STRATEGY";

fn check(args: CheckArgs, given: Given<'_>) -> u8 {
    // When the run cannot start, say where a strategy no flag gave came from.
    let from_variable = || {
        if given.by_variable("strategy") {
            say(&format!(
                "turnstile check: note: the strategy is {STRATEGY_VAR}'s value (no --strategy was given)"
            ));
        }
    };
    let json = args.json;
    let usage = |reason: String| {
        say(&format!("turnstile check: bad usage: {reason}"));
        if json {
            print_no_verdict(&NoVerdict::usage(shown(&reason)));
        }
        from_variable();
        2
    };
    // Options that would be ignored.
    if let Some(reason) = sync_ignored(given, &args.data, "TURNSTILE_CHECK_DATA") {
        return usage(reason);
    }
    match (args.workload, args.keys) {
        (Workload::Bank, Some(k @ 1)) => {
            return usage(format!(
                "--keys must be at least 2 for the bank workload (a transfer moves money between two accounts), got {k}"
            ));
        }
        // A note, not a refusal: one set of flags may serve every workload.
        (Workload::FileStore, Some(k)) if k != 1 => say(&format!(
            "turnstile check: note: --keys {k} has no effect on the file_store workload: its ops all rewrite one file"
        )),
        _ => {}
    }
    let mut config = RunConfig::new(args.strategy, args.workload)
        .threads(args.threads)
        .procs(args.procs)
        .ops(args.ops)
        .think(Duration::from_micros(args.think_us))
        .rendezvous(Duration::from_micros(args.rendezvous_us))
        .data(args.data)
        .sync(args.sync)
        .transaction(args.transaction)
        .progress(!args.json);
    if let Some(k) = args.keys {
        config = config.keys(k);
    }
    if let Some(n) = args.nemesis {
        config = config.nemesis(n);
    }
    if let Some(dir) = args.keep {
        config = config.keep(dir);
    }
    if let Some(db) = args.db {
        config = config.db(db);
    }
    if let Some(ms) = args.timeout_ms {
        config = config.timeout(Duration::from_millis(ms));
    }
    if let Some(s) = args.time_limit_s {
        config = config.time_limit(Duration::from_secs(s));
    }
    if let Some(path) = args.svg {
        config = config.svg(path);
    }
    if let Some(seed) = args.seed {
        config = config.seed(seed);
    }
    stop_early_on_signals("check");
    let registry = registry();
    match run(&config, &registry) {
        Ok(r) => {
            if args.json {
                out(&format!("{}\n", report::json(&r)));
            } else {
                out(&report::text(&r));
            }
            // A strategy that runs in autocommit whatever it is asked (a control).
            if args.transaction && !r.transactional {
                say(&format!(
                    "turnstile check: note: --transaction had no effect: {} runs in autocommit whatever it is asked",
                    report::cut(&r.strategy)
                ));
            }
            r.exit_code() as u8
        }
        Err(e) => {
            say(&format!("turnstile check: {e}"));
            for note in &e.notes {
                say(&format!("turnstile check: note: {note}"));
            }
            if args.json {
                let notes = e.notes.iter().map(|n| shown(n)).collect();
                print_no_verdict(&NoVerdict::of_run(&e, shown(&e.reason()), notes));
            }
            from_variable();
            e.exit_code() as u8
        }
    }
}

/// `message` as [`say`] shows it: any long value it echoes from the command line or the
/// environment cut (passwords are `***` in it already, as in every message of a run).
fn shown(message: &str) -> String {
    let values = given_values();
    report::cut_echoes(message, values.iter().map(String::as_str))
}

/// Prints `no_verdict` on stdout, one line of JSON: what `check --json` prints when the
/// run ends without a report.
fn print_no_verdict(no_verdict: &NoVerdict) {
    out(&format!("{}\n", no_verdict.json()));
}

/// The options of `compare` that set up a run, which `--from-json` (which runs nothing)
/// refuses: their ids and flags.
const RUN_OPTIONS: [(&str, &str); 14] = [
    ("quick", "--quick"),
    ("sync", "--sync"),
    ("strategies", "--strategies"),
    ("threads", "--threads"),
    ("procs", "--procs"),
    ("ops", "--ops"),
    ("time_limit_s", "--time-limit-s"),
    ("workload", "--workload"),
    ("redis", "--redis"),
    ("no_redis", "--no-redis"),
    ("mysql", "--mysql"),
    ("postgres", "--postgres"),
    ("data", "--data"),
    ("json", "--json"),
];

fn compare(args: CompareArgs, given: Given<'_>) -> u8 {
    use turnstile_harness::compare::{self, CompareConfig};
    let usage = |reason: String| {
        say(&format!("turnstile compare: bad usage: {reason}"));
        2
    };
    // Options that would be ignored. A variable (TURNSTILE_COMPARE_…) is not refused: a
    // shell may export one for the runs and still read a report back.
    if args.from_json.is_some() {
        let ignored: Vec<&str> = RUN_OPTIONS
            .iter()
            .filter(|(id, _)| given.on_command_line(id))
            .map(|(_, flag)| *flag)
            .collect();
        if !ignored.is_empty() {
            return usage(format!(
                "--from-json prints a saved report and runs nothing: {} would be ignored (leave {} out)",
                ignored.join(", "),
                if ignored.len() == 1 { "it" } else { "them" }
            ));
        }
    } else if let Some(reason) = sync_ignored(given, &args.data, "TURNSTILE_COMPARE_DATA") {
        return usage(reason);
    }
    let registry = registry();
    let mut config = CompareConfig::default();
    config.quick = args.quick;
    config.sync = args.sync;
    if !args.strategies.is_empty() {
        let mut specs = Vec::new();
        for list in &args.strategies {
            match compare::split_strategies(list, &registry) {
                Ok(more) => specs.extend(more),
                Err(e) => {
                    say(&format!("turnstile compare: {e}"));
                    return e.exit_code() as u8;
                }
            }
        }
        config.strategies = Some(specs);
    }
    config.threads = args.threads.unwrap_or_else(|| {
        if args.quick {
            vec![1, 16, 64]
        } else {
            vec![1, 4, 16, 64]
        }
    });
    config.procs = (!args.procs.is_empty()).then_some(args.procs);
    config.ops = args.ops;
    config.time_limit = args.time_limit_s.map(Duration::from_secs);
    config.workload = args.workload;
    let url = |url: Option<String>| url.as_deref().map(lower_scheme);
    config.redis = url(args.redis);
    config.no_private_redis = args.no_redis;
    config.mysql = url(args.mysql);
    config.postgres = url(args.postgres);
    config.data = args.data;
    config.progress = true;
    // The outputs are checked before anything runs: a comparison takes minutes.
    let json = args.json.as_ref();
    // Two outputs, or an output and the report read, in one file: one would be lost.
    let files = [
        ("--json", json),
        ("--svg", args.svg.as_ref()),
        ("--from-json", args.from_json.as_ref()),
    ];
    for (i, (flag, path)) in files.iter().enumerate() {
        for (other, other_path) in &files[i + 1..] {
            if let (Some(a), Some(b)) = (path, other_path)
                && turnstile_harness::run::same_file(a, b)
            {
                return usage(format!(
                    "{flag} and {other} name one file, {}: one would overwrite the other",
                    b.display()
                ));
            }
        }
    }
    for (flag, path) in [("--json", json), ("--svg", args.svg.as_ref())] {
        if let Some(path) = path
            && let Err(e) = turnstile_harness::run::writable_file(flag, path)
        {
            say(&format!("turnstile compare: {e}"));
            return e.exit_code() as u8;
        }
    }
    if let Some(path) = &args.from_json {
        let report: compare::Report = match read_saved(path) {
            Ok(Saved::Report(report)) => *report,
            // A comparison that ended without a report: said again, and its exit code.
            Ok(Saved::NoVerdict(no_verdict)) => {
                say(&format!(
                    "turnstile compare: {} holds no report: the comparison ended without a verdict (exit {}): {no_verdict}",
                    path.display(),
                    no_verdict.exit
                ));
                if let Some(svg) = &args.svg {
                    say(&format!(
                        "turnstile compare: note: the chart was not drawn to {}: there are no results",
                        svg.display()
                    ));
                }
                return no_verdict.exit as u8;
            }
            Err(e) => {
                say(&format!(
                    "turnstile compare: reading {}: {e}",
                    path.display()
                ));
                return 2;
            }
        };
        print_report(&report);
        let code = report.exit_code();
        return match &args.svg {
            Some(svg) => finish(code, &[("the chart", svg, compare::chart(&report))]),
            None => code as u8,
        };
    }
    stop_early_on_signals("compare");
    let comparison = match compare::compare(&config, &registry) {
        Ok(c) => c,
        Err(e) => {
            say(&format!("turnstile compare: {e}"));
            // No report: `--json` gets why instead, so that a script finds no report of an
            // earlier comparison there, taken for this one's.
            let code = e.exit_code();
            return match &args.json {
                Some(path) => {
                    let json = NoVerdict::new(&e, shown(&e.reason())).json();
                    finish(code, &[("the JSON no-verdict record", path, json + "\n")])
                }
                None => code as u8,
            };
        }
    };
    let report = &comparison.report;
    print_report(report);
    if let Some(signal) = comparison.interrupted {
        let unwritten: Vec<String> = [&args.json, &args.svg]
            .into_iter()
            .flatten()
            .map(|p| p.display().to_string())
            .collect();
        say(&format!(
            "turnstile compare: interrupted by signal {signal}: the table holds the settings that finished{}",
            if unwritten.is_empty() {
                String::new()
            } else {
                format!("; not written: {}", unwritten.join(", "))
            }
        ));
        return comparison.exit_code() as u8;
    }
    let mut outputs = Vec::new();
    if let Some(path) = &args.json {
        let json = serde_json::to_string_pretty(report).unwrap_or_default();
        outputs.push(("the JSON report", path, json));
    }
    if let Some(path) = &args.svg {
        outputs.push(("the chart", path, compare::chart(report)));
    }
    finish(comparison.exit_code(), &outputs)
}

/// What `compare --json` wrote: a report, or why the comparison ended without one.
enum Saved {
    Report(Box<turnstile_harness::compare::Report>),
    NoVerdict(NoVerdict),
}

/// The report `compare --json` wrote at `path`, checked ([`Report::check_values`],
/// [`NoVerdict::check_values`]).
///
/// [`Report::check_values`]: turnstile_harness::compare::Report::check_values
fn read_saved(path: &Path) -> Result<Saved, String> {
    let bytes = read_at_most(path, MAX_REPORT_BYTES)?;
    let value: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
    if value.get("verdict").and_then(serde_json::Value::as_str) == Some(NoVerdict::VERDICT) {
        let no_verdict: NoVerdict = serde_json::from_value(value).map_err(|e| e.to_string())?;
        no_verdict.check_values()?;
        return Ok(Saved::NoVerdict(no_verdict));
    }
    // Parsed again, for an error that says where in the file it is.
    let report: turnstile_harness::compare::Report =
        serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
    report.check_values()?;
    Ok(Saved::Report(Box::new(report)))
}

/// Prints a comparison's table, its data, floors and lock cycles, and its problems: the
/// same for a run and for a report read back with `--from-json`.
fn print_report(report: &turnstile_harness::compare::Report) {
    use turnstile_harness::compare;
    out(&compare::report::table(&report.results));
    if report.data != "sqlite" {
        out(&format!("data: {}\n", report.data));
    }
    for floor in &report.floors {
        out(&format!(
            "floor {}{}: {:.0} µs ({:.0} ops/s on one thread)\n",
            floor.kind,
            floor
                .sync
                .as_deref()
                .map(|s| format!(" (sync={s})"))
                .unwrap_or_default(),
            floor.p50_us,
            floor.ops_per_sec
        ));
    }
    for cycle in &report.lock_cycles {
        out(&format!(
            "lock cycle {} (acquire + {}, nothing in between): {:.0} µs ({:.0} cycles/s on one thread; its rate {:.2}× the {} floor's)\n",
            cycle.lock,
            match cycle.release.as_str() {
                "dropped" => "lease dropped, its release answered with the next acquire",
                _ => "release awaited",
            },
            cycle.p50_us,
            cycle.ops_per_sec,
            cycle.floor_ratio,
            cycle.floor
        ));
    }
    out(&compare::report::problems(report));
}

/// How long a run has, after the first signal, to stop and clean up before the command
/// exits without waiting for it (an op blocked on a server that stopped answering).
const GRACE: Duration = Duration::from_secs(15);

/// On the first `SIGINT`, `SIGTERM` or `SIGHUP`, stops the run early
/// ([`turnstile_harness::interrupt`]): no new op starts, worker processes are killed, the
/// run's temporary files and server tables are removed and a private `redis-server`
/// stopped, and the command exits 128 + the signal's number. A second signal, or
/// [`GRACE`] without the run having ended, exits at once, stopping only the private
/// `redis-server` (it would outlive this process).
fn stop_early_on_signals(command: &'static str) {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    // A signal the caller set to be ignored (`nohup`, `trap '' HUP`, a background job's
    // SIGINT) stays ignored: the kernel's `SigIgn` mask of this process says which.
    let ignored = ignored_signals();
    let signals: Vec<i32> = [SIGINT, SIGTERM, SIGHUP]
        .into_iter()
        .filter(|s| ignored & (1_u64 << (s - 1)) == 0)
        .collect();
    let at_once = |signal: i32| -> ! {
        turnstile_harness::compare::redis_server::stop_all();
        std::process::exit(128 + signal)
    };
    match signal_hook::iterator::Signals::new(signals) {
        Ok(mut signals) => {
            std::thread::spawn(move || {
                let mut signals = signals.forever();
                let Some(first) = signals.next() else { return };
                turnstile_harness::interrupt::request(first);
                // The way out first: nothing below may keep it from being armed.
                std::thread::spawn(move || {
                    std::thread::sleep(GRACE);
                    say(&format!(
                        "turnstile {command}: the run did not stop within {GRACE:?}; exiting without its clean-up"
                    ));
                    at_once(first);
                });
                say(&format!(
                    "turnstile {command}: stopping after signal {first} (a second one stops at once)"
                ));
                if signals.next().is_some() {
                    at_once(first);
                }
            });
        }
        Err(e) => say(&format!(
            "turnstile {command}: note: no signal handler ({e}): an interrupted run may leave its files, tables and redis-server behind"
        )),
    }
}

/// The signals this process ignores, as a mask with bit `n - 1` for signal `n`, read from
/// `/proc/self/status` (none where it cannot be read).
fn ignored_signals() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("SigIgn:"))
                .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
        })
        .unwrap_or(0)
}

/// Writes each `(what, path, text)` of a comparison's outputs, and gives its exit code:
/// `code` (the comparison's), except that a comparison that passed (0) but could not
/// write an output exits 2. A violation (1) or an inconclusive setting (3) keeps its
/// code: the write failure is a note on stderr, naming the path.
fn finish(code: i32, outputs: &[(&str, &PathBuf, String)]) -> u8 {
    let mut failed = false;
    for (what, path, text) in outputs {
        match std::fs::write(path, text) {
            Ok(()) => say(&format!("wrote {what} to {}", path.display())),
            Err(e) => {
                say(&format!(
                    "turnstile compare: note: {what} could not be written to {}: {e}",
                    path.display()
                ));
                failed = true;
            }
        }
    }
    if failed && code == 0 { 2 } else { code as u8 }
}

fn main() -> ExitCode {
    let parsed = Cli::command()
        .try_get_matches()
        .and_then(|matches| Cli::from_arg_matches(&matches).map(|cli| (cli, matches)));
    let (cli, matches) = match parsed {
        Ok(parsed) => parsed,
        Err(e) => return ExitCode::from(clap_error(&e)),
    };
    let given = Given(matches.subcommand().map(|(_, m)| m));
    ExitCode::from(match cli.command {
        Command::Check(args) => check(args, given),
        Command::Compare(args) => compare(args, given),
        Command::List => {
            out(&turnstile_harness::data::listing(&registry()));
            let names: Vec<&str> = Workload::ALL.iter().map(|w| w.name()).collect();
            out(&format!("workloads: {}\n", names.join(", ")));
            let failing: Vec<&str> = Workload::FAILING.iter().map(|w| w.name()).collect();
            out(&format!(
                "workloads whose ops fail on purpose: {}\n",
                failing.join(", ")
            ));
            let controls: Vec<&str> = Workload::CONTROLS.iter().map(|w| w.name()).collect();
            out(&format!(
                "negative-control workloads: {}\n",
                controls.join(", ")
            ));
            0
        }
        Command::Worker => procs::worker_main(&registry()) as u8,
    })
}
