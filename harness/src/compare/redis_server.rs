//! A private `redis-server` for `compare` when no `--redis` is given, and the two-round-trip
//! floor a Redis lock is measured against. Speaks just enough RESP (`PING`) over a plain
//! socket that no Redis client is needed here.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::report::{Floor, LockCycle};
use super::stats;

/// A `redis-server` on a free loopback port, without persistence, stopped on drop — or
/// by [`stop_all`], which a program calls before it exits on a signal (drops do not run
/// then).
pub struct PrivateRedis {
    child: Child,
    port: u16,
}

/// The process ids of the private servers started and not yet stopped. A pid is taken
/// out before its process is waited for, so one here is never another process's.
static RUNNING: Mutex<Vec<u32>> = Mutex::new(Vec::new());

/// Kills every [`PrivateRedis`] still running, for a program about to exit without
/// dropping them (on `SIGINT` or `SIGTERM`): a `redis-server` outlives its parent
/// otherwise.
pub fn stop_all() {
    let running = RUNNING.lock().unwrap_or_else(|p| p.into_inner());
    for &pid in running.iter() {
        if let Some(pid) = i32::try_from(pid)
            .ok()
            .and_then(rustix::process::Pid::from_raw)
        {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
        }
    }
}

impl PrivateRedis {
    /// Starts one from `redis-server` on `PATH` and waits until it answers `PING`.
    ///
    /// # Errors
    /// A message when there is no `redis-server` or it does not come up within 10 s.
    pub fn start() -> Result<Self, String> {
        // The OS picks a free port; another process could take it before redis-server
        // binds it, so try a few.
        let mut last = String::new();
        for _ in 0..3 {
            let port = TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map_err(|e| format!("no free port: {e}"))?
                .port();
            let child = server_command()?
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| format!("no redis-server on PATH ({e})"))?;
            RUNNING
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(child.id());
            let mut server = PrivateRedis { child, port };
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(status)) = server.child.try_wait() {
                    last = format!("redis-server exited with {status}");
                    break;
                }
                if ping(&format!("127.0.0.1:{port}")).is_ok() {
                    return Ok(server);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            if last.is_empty() {
                last = "redis-server did not answer within 10 s".into();
            }
            let _ = server.child.kill();
        }
        Err(last)
    }

    /// Its URL.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

/// The command that starts `redis-server`: behind `setpriv --pdeathsig KILL` (util-linux)
/// when there is one, so that the server dies with the thread that started it even when
/// this process is killed outright (`SIGKILL` runs no clean-up, not even [`stop_all`]);
/// the server alone otherwise.
fn server_command() -> Result<Command, String> {
    let server = on_path("redis-server").ok_or("no redis-server on PATH")?;
    Ok(match on_path("setpriv") {
        Some(setpriv) => {
            let mut command = Command::new(setpriv);
            command.args(["--pdeathsig", "KILL", "--"]).arg(server);
            command
        }
        None => Command::new(server),
    })
}

/// The executable file `name` in a directory of `PATH`, as a shell would find it.
fn on_path(name: &str) -> Option<std::path::PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths)
        .map(|dir| dir.join(name))
        .find(|path| {
            std::fs::metadata(path)
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        let pid = self.child.id();
        RUNNING
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|&p| p != pid);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn ping(addr: &str) -> std::io::Result<Duration> {
    let stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    stream.set_nodelay(true)?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream;
    let mut line = String::new();
    let start = Instant::now();
    writer.write_all(b"PING\r\n")?;
    reader.read_line(&mut line)?;
    if line.trim_end() != "+PONG" {
        return Err(std::io::Error::other(format!("unexpected reply {line:?}")));
    }
    Ok(start.elapsed())
}

/// Pairs of round trips (and lock cycles) per round of [`floor_and_lock_cycle`].
const ROUND: usize = 100;
/// Rounds of [`floor_and_lock_cycle`]: 500 of each in all.
const ROUNDS: usize = 5;

/// The floor a Redis lock is measured against: two sequential `PING` round trips on one
/// connection (a lock's acquire and release can't take fewer) — a plain socket for
/// `redis://`, the lock's own client for `rediss://` and `redis+unix://`. With the `redis`
/// feature, also the Redis lock's own cycles against that floor, on one thread with nothing
/// in between: [`RedisLock`] acquire, then release and wait for its answer (`awaited`);
/// and acquire, then drop the lease as `Locked` does, whose release is sent at once and
/// its answer read with the next acquire (`dropped`). The three alternate in rounds of
/// 100, so a busy machine slows them alike.
///
/// [`RedisLock`]: turnstile::lock::RedisLock
///
/// # Errors
/// A message when the server cannot be reached or does not answer in time, naming it
/// (its URL without the password).
pub fn floor_and_lock_cycle(url: &str) -> Result<(Floor, Vec<LockCycle>), String> {
    measure_floor_and_lock_cycle(url).map_err(|e| {
        let server = crate::report::cut(&turnstile::spec::redact_url(url)).into_owned();
        // The lock's client names its server itself.
        if e.contains(&server) {
            e
        } else {
            format!("{server}: {e}")
        }
    })
}

/// [`floor_and_lock_cycle`], its errors without the server's name.
fn measure_floor_and_lock_cycle(url: &str) -> Result<(Floor, Vec<LockCycle>), String> {
    let mut pings = Pings::connect(url)?;
    let mut cycle = LockCycler::new(url);
    let (mut pairs, mut pairs_wall) = (Vec::new(), Duration::ZERO);
    let mut cycles = [(Vec::new(), Duration::ZERO), (Vec::new(), Duration::ZERO)];
    for _ in 0..ROUNDS {
        let start = Instant::now();
        for _ in 0..ROUND {
            let t = Instant::now();
            pings.ping()?;
            pings.ping()?;
            pairs.push(t.elapsed());
        }
        pairs_wall += start.elapsed();
        if let Some(lock) = &mut cycle {
            for (release, (times, wall)) in [Release::Awaited, Release::Dropped]
                .into_iter()
                .zip(cycles.iter_mut())
            {
                let start = Instant::now();
                for _ in 0..ROUND {
                    let t = Instant::now();
                    lock.cycle(release)?;
                    times.push(t.elapsed());
                }
                *wall += start.elapsed();
            }
        }
    }
    let floor = Floor {
        kind: "redis_two_round_trips".into(),
        sync: None,
        p50_us: stats::Summary::of(&mut pairs).p50_us,
        ops_per_sec: stats::ops_per_sec(pairs.len() as u64, pairs_wall),
    };
    let cycles = [Release::Awaited, Release::Dropped]
        .into_iter()
        .zip(cycles)
        .filter(|(_, (times, _))| !times.is_empty())
        .map(|(release, (mut times, wall))| {
            let ops_per_sec = stats::ops_per_sec(times.len() as u64, wall);
            LockCycle {
                lock: "redis".into(),
                release: release.name().into(),
                floor: floor.kind.clone(),
                p50_us: stats::Summary::of(&mut times).p50_us,
                ops_per_sec,
                floor_ratio: ops_per_sec / floor.ops_per_sec,
            }
        })
        .collect();
    Ok((floor, cycles))
}

/// How long the floor waits for a `PING`'s answer on its socket.
const PING_TIMEOUT: Duration = Duration::from_secs(2);

/// What speaks `PING` for the floor: a plain socket for a `redis://` URL, so no client
/// cost is counted; for any other (`rediss://`, `redis+unix://`) the lock's own client,
/// which speaks TLS and unix sockets (its first `PING` connects and is not counted).
enum Pings {
    Socket {
        reader: BufReader<TcpStream>,
        writer: TcpStream,
        line: Vec<u8>,
    },
    #[cfg(feature = "redis")]
    Client(turnstile::lock::RedisLock),
}

impl Pings {
    fn connect(url: &str) -> Result<Self, String> {
        let Some(addr) = url.strip_prefix("redis://") else {
            return Self::client(url);
        };
        let addr = addr.rsplit_once('@').map_or(addr, |(_, a)| a);
        let addr = addr.split('/').next().unwrap_or(addr);
        let stream = TcpStream::connect(addr).map_err(|e| e.to_string())?;
        stream
            .set_read_timeout(Some(PING_TIMEOUT))
            .map_err(|e| e.to_string())?;
        let _ = stream.set_nodelay(true);
        Ok(Pings::Socket {
            reader: BufReader::new(stream.try_clone().map_err(|e| e.to_string())?),
            writer: stream,
            line: Vec::new(),
        })
    }

    #[cfg(feature = "redis")]
    fn client(url: &str) -> Result<Self, String> {
        let lock = turnstile::lock::RedisLock::new(url).map_err(|e| e.to_string())?;
        lock.ping().map_err(|e| e.to_string())?;
        Ok(Pings::Client(lock))
    }

    #[cfg(not(feature = "redis"))]
    fn client(url: &str) -> Result<Self, String> {
        Err(format!(
            "{} needs the Redis client, which this build does not include",
            turnstile::spec::redact_url(url)
        ))
    }

    fn ping(&mut self) -> Result<(), String> {
        match self {
            Pings::Socket {
                reader,
                writer,
                line,
            } => {
                writer.write_all(b"PING\r\n").map_err(|e| e.to_string())?;
                // At most a line's worth, in any bytes: a server of another kind may send
                // anything. The buffer is kept: this is the floor's measured loop.
                line.clear();
                (&mut *reader)
                    .take(256)
                    .read_until(b'\n', line)
                    .map_err(|e| match e.kind() {
                        // What a read timeout is, as Linux reports it (os error 11).
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
                            format!(
                                "timed out: no answer to PING within {PING_TIMEOUT:?}: the server may be paused or overloaded, or not speak Redis"
                            )
                        }
                        _ => e.to_string(),
                    })?;
                ping_answer(&String::from_utf8_lossy(line))
            }
            #[cfg(feature = "redis")]
            Pings::Client(lock) => lock.ping().map(drop).map_err(|e| e.to_string()),
        }
    }
}

/// What a `PING`'s answer line says: `+PONG` is fine, a Redis error (`-NOAUTH …`, for a
/// server with a password) is the server's, and anything else is not Redis speaking.
fn ping_answer(line: &str) -> Result<(), String> {
    let shown: String = line.trim_end().chars().take(80).collect();
    if line.starts_with('+') {
        Ok(())
    } else if line.is_empty() {
        Err(
            "the server closed the connection without answering PING: it may not speak \
             Redis, or speak only TLS (then use rediss://)"
                .to_owned(),
        )
    } else if let Some(error) = shown.strip_prefix('-') {
        Err(format!("redis refused PING: {error}"))
    } else {
        Err(format!(
            "the answer to PING is not Redis's ({shown:?}): the port may not speak Redis"
        ))
    }
}

/// How a measured cycle ends its lease.
#[derive(Clone, Copy, Debug)]
enum Release {
    /// `release()`, waiting for the server's answer.
    Awaited,
    /// Dropped, as `Locked` ends a lease: the release is sent, its answer read with the
    /// next command on that connection (the next acquire, in one round trip with it).
    Dropped,
}

impl Release {
    fn name(self) -> &'static str {
        match self {
            Release::Awaited => "awaited",
            Release::Dropped => "dropped",
        }
    }
}

/// The Redis lock whose cycle is measured, when this build has it.
#[cfg(feature = "redis")]
struct LockCycler {
    lock: turnstile::lock::RedisLock,
    name: turnstile::LockName,
}

#[cfg(feature = "redis")]
impl LockCycler {
    fn new(url: &str) -> Option<Self> {
        let lock = turnstile::lock::RedisLock::new(url).ok()?;
        let name = turnstile::LockName::new(
            format!("turnstile-compare-{}", std::process::id()),
            turnstile::Key::whole(),
        );
        Some(LockCycler { lock, name })
    }

    fn cycle(&mut self, release: Release) -> Result<(), String> {
        use turnstile::{Lease, Lock};
        let lease = self
            .lock
            .acquire(&self.name, None)
            .map_err(|e| e.to_string())?;
        match release {
            Release::Awaited => lease.release().map_err(|e| e.to_string()),
            Release::Dropped => {
                drop(lease);
                Ok(())
            }
        }
    }
}

#[cfg(not(feature = "redis"))]
struct LockCycler;

#[cfg(not(feature = "redis"))]
impl LockCycler {
    fn new(_url: &str) -> Option<Self> {
        None
    }

    fn cycle(&mut self, _release: Release) -> Result<(), String> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::ping_answer;

    /// The floor's own PING says what answered it, not `redis answered ""`.
    #[test]
    fn a_ping_answer_is_said_in_words() {
        assert_eq!(ping_answer("+PONG\r\n"), Ok(()));
        let closed = ping_answer("").unwrap_err();
        assert!(closed.contains("closed the connection") && closed.contains("rediss://"));
        assert_eq!(
            ping_answer("-NOAUTH Authentication required.\r\n").unwrap_err(),
            "redis refused PING: NOAUTH Authentication required."
        );
        let other = ping_answer("J\0\0\0\n5.5.5-10.11\u{1b}x").unwrap_err();
        assert!(
            other.starts_with("the answer to PING is not Redis's"),
            "{other}"
        );
        assert!(
            !other.contains('\u{1b}') && !other.contains('\0'),
            "{other}"
        );
    }
}
