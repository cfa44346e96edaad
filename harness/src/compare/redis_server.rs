//! A private `redis-server` for `compare` when no `--redis` is given, and the two-round-trip
//! floor a Redis lock is measured against. Speaks just enough RESP (`PING`) over a plain
//! socket that no Redis client is needed here.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::report::Floor;
use super::stats;

/// A `redis-server` on a free loopback port, without persistence, stopped on drop.
pub struct PrivateRedis {
    child: Child,
    port: u16,
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
            let child = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| format!("no redis-server on PATH ({e})"))?;
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

impl Drop for PrivateRedis {
    fn drop(&mut self) {
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

/// The time of two sequential round trips on one connection (a lock's acquire and
/// release can't take fewer), measured over 500 pairs: `PING`s on a plain socket for a
/// `redis://` URL; for any other (`rediss://`, `redis+unix://`) through the lock's own
/// client ([`RedisLock::ping`](turnstile::lock::RedisLock::ping)), which speaks TLS.
///
/// # Errors
/// A message when the server cannot be reached.
pub fn two_round_trips(url: &str) -> Result<Floor, String> {
    let Some(addr) = url.strip_prefix("redis://") else {
        return client_round_trips(url);
    };
    let addr = addr.rsplit_once('@').map_or(addr, |(_, a)| a);
    let addr = addr.split('/').next().unwrap_or(addr);
    let stream = TcpStream::connect(addr).map_err(|e| format!("{addr}: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .map_err(|e| e.to_string())?;
    let _ = stream.set_nodelay(true);
    let mut reader = BufReader::new(stream.try_clone().map_err(|e| e.to_string())?);
    let mut writer = stream;
    let mut times = Vec::with_capacity(500);
    let start = Instant::now();
    let mut line = String::new();
    for _ in 0..500 {
        let t = Instant::now();
        for _ in 0..2 {
            writer.write_all(b"PING\r\n").map_err(|e| e.to_string())?;
            line.clear();
            reader.read_line(&mut line).map_err(|e| e.to_string())?;
            if !line.starts_with('+') {
                // An AUTH-protected server answers -NOAUTH: report it rather than guess.
                return Err(format!("redis answered {:?}", line.trim_end()));
            }
        }
        times.push(t.elapsed());
    }
    Ok(floor(&mut times, start.elapsed()))
}

/// [`two_round_trips`] through the Redis lock's client (its first `PING` connects and is
/// not counted).
#[cfg(feature = "redis")]
fn client_round_trips(url: &str) -> Result<Floor, String> {
    let lock = turnstile::lock::RedisLock::builder_from_url(url)
        .and_then(turnstile::lock::RedisLockBuilder::build)
        .map_err(|e| e.to_string())?;
    lock.ping().map_err(|e| e.to_string())?;
    let mut times = Vec::with_capacity(500);
    let start = Instant::now();
    for _ in 0..500 {
        let t = Instant::now();
        for _ in 0..2 {
            lock.ping().map_err(|e| e.to_string())?;
        }
        times.push(t.elapsed());
    }
    Ok(floor(&mut times, start.elapsed()))
}

#[cfg(not(feature = "redis"))]
fn client_round_trips(url: &str) -> Result<Floor, String> {
    Err(format!(
        "{} needs the Redis client, which this build does not include",
        turnstile::spec::redact_url(url)
    ))
}

fn floor(times: &mut [Duration], wall: Duration) -> Floor {
    let summary = stats::Summary::of(times);
    Floor {
        kind: "redis_two_round_trips".into(),
        sync: None,
        p50_us: summary.p50_us,
        ops_per_sec: stats::ops_per_sec(times.len() as u64, wall),
    }
}
