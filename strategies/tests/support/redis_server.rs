//! A private `redis-server` for tests that kill, pause or restart it: no persistence, its
//! own loopback port, stopped through its `Child` handle (never a bare pid), killed on
//! drop. Never the machine's shared server on 6379. It can also serve TLS only
//! ([`RedisServer::start_tls`], certificates from `support/test_pki.rs`).
#![allow(dead_code, unreachable_pub)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `redis-server` child process on 127.0.0.1.
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    password: Option<String>,
    tls: Option<ServerTls>,
    /// A directory for a unix socket beside the plain TCP port.
    unix_dir: Option<PathBuf>,
}

/// What a TLS-only server is started with (PEM files).
#[derive(Clone, Debug)]
pub struct ServerTls {
    /// Its certificate, for 127.0.0.1 and localhost.
    pub cert: PathBuf,
    /// Its certificate's private key.
    pub key: PathBuf,
    /// The CA that signed its certificate and the client certificates it accepts.
    pub ca: PathBuf,
    /// Whether clients must present a certificate (mutual TLS).
    pub require_client_cert: bool,
    /// A directory for its unix socket: the readiness check speaks plain RESP there, as
    /// its only port speaks TLS.
    pub dir: PathBuf,
}

impl RedisServer {
    /// Starts a server on a free port (retrying if another process grabs it first).
    pub fn start() -> Self {
        Self::start_with(None)
    }

    /// Starts a server that requires `password`.
    pub fn start_with_password(password: &str) -> Self {
        Self::start_with(Some(password.to_owned()))
    }

    /// Starts a server whose only TCP port speaks TLS (`--port 0 --tls-port P`), requiring
    /// `password` if given.
    pub fn start_tls(tls: ServerTls, password: Option<&str>) -> Self {
        Self::start_as(password.map(str::to_owned), Some(tls))
    }

    /// Starts a server that requires `password`, on a unix socket in `dir` as well as on
    /// its port ([`unix_socket`](Self::unix_socket)).
    pub fn start_unix_with_password(password: &str, dir: PathBuf) -> Self {
        Self::start_on(Some(password.to_owned()), None, Some(dir))
    }

    fn start_with(password: Option<String>) -> Self {
        Self::start_as(password, None)
    }

    fn start_as(password: Option<String>, tls: Option<ServerTls>) -> Self {
        Self::start_on(password, tls, None)
    }

    fn start_on(
        password: Option<String>,
        tls: Option<ServerTls>,
        unix_dir: Option<PathBuf>,
    ) -> Self {
        for _ in 0..20 {
            let port = free_port();
            let mut server = RedisServer {
                child: None,
                port,
                password: password.clone(),
                tls: tls.clone(),
                unix_dir: unix_dir.clone(),
            };
            if server.spawn() {
                return server;
            }
        }
        panic!("could not start a private redis-server");
    }

    fn spawn(&mut self) -> bool {
        let mut cmd = Command::new("redis-server");
        cmd.args(["--save", "", "--appendonly", "no", "--bind", "127.0.0.1"])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        match &self.tls {
            None => {
                cmd.arg("--port").arg(self.port.to_string());
                if self.unix_dir.is_some() {
                    cmd.arg("--unixsocket").arg(self.socket());
                }
            }
            Some(tls) => {
                let auth = if tls.require_client_cert { "yes" } else { "no" };
                cmd.args(["--port", "0", "--tls-auth-clients", auth])
                    .arg("--tls-port")
                    .arg(self.port.to_string())
                    .arg("--tls-cert-file")
                    .arg(&tls.cert)
                    .arg("--tls-key-file")
                    .arg(&tls.key)
                    .arg("--tls-ca-cert-file")
                    .arg(&tls.ca)
                    .arg("--unixsocket")
                    .arg(self.socket());
            }
        }
        if let Some(pw) = &self.password {
            cmd.arg("--requirepass").arg(pw);
        }
        let mut child = cmd.spawn().expect("redis-server must be installed");
        let until = Instant::now() + Duration::from_secs(10);
        while Instant::now() < until {
            if let Ok(Some(_)) = child.try_wait() {
                // Exited: most likely the port was taken.
                return false;
            }
            if self.answers() {
                self.child = Some(child);
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }

    /// Whether the server answers (any reply to `PING`; `-NOAUTH` counts): on its port, or
    /// for a TLS server on its unix socket (redis-server listens on every socket before it
    /// serves any, and exits if it can't bind one).
    fn answers(&self) -> bool {
        let wait = Some(Duration::from_millis(200));
        match &self.tls {
            None => TcpStream::connect(("127.0.0.1", self.port))
                .is_ok_and(|mut s| s.set_read_timeout(wait).is_ok() && pong(&mut s)),
            Some(_) => UnixStream::connect(self.socket())
                .is_ok_and(|mut s| s.set_read_timeout(wait).is_ok() && pong(&mut s)),
        }
    }

    fn socket(&self) -> PathBuf {
        let dir = match (&self.tls, &self.unix_dir) {
            (Some(tls), _) => tls.dir.clone(),
            (None, Some(dir)) => dir.clone(),
            (None, None) => PathBuf::new(),
        };
        dir.join(format!("redis-{}.sock", self.port))
    }

    /// The unix socket of a server started with one.
    pub fn unix_socket(&self) -> PathBuf {
        assert!(
            self.tls.is_some() || self.unix_dir.is_some(),
            "started without a unix socket"
        );
        self.socket()
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:PORT/0`, with the password if any; for a TLS server
    /// `rediss://…/0?tls_ca=CA`, trusting the CA that signed its certificate.
    pub fn url(&self) -> String {
        let auth = match &self.password {
            Some(pw) => format!(":{pw}@"),
            None => String::new(),
        };
        match &self.tls {
            None => format!("redis://{auth}127.0.0.1:{}/0", self.port),
            Some(tls) => format!(
                "rediss://{auth}127.0.0.1:{}/0?tls_ca={}",
                self.port,
                tls.ca.display()
            ),
        }
    }

    /// `host:port`, for Redlock URLs.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// SIGKILLs the server and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port, with empty memory.
    pub fn restart(&mut self) {
        self.kill();
        let until = Instant::now() + Duration::from_secs(10);
        while Instant::now() < until {
            if self.spawn() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("could not restart redis-server on port {}", self.port);
    }

    /// The child, to signal it (SIGSTOP/SIGCONT) while it is not reaped.
    pub fn child(&self) -> &Child {
        self.child.as_ref().expect("server is running")
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Sends `PING` and reads any reply.
fn pong(s: &mut (impl Read + Write)) -> bool {
    if s.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 64];
    matches!(s.read(&mut buf), Ok(n) if n > 0)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}
