//! A TCP proxy in front of a real database server that can lose the answer to a `COMMIT`:
//! armed, it forwards the next client packet holding `COMMIT` to the server, drops
//! whatever the server answers, and closes both sides. The server committed (or not);
//! the client only sees its connection break, as when a network or a host fails between
//! the two. Everything else passes through untouched, and new connections are served as
//! before. Stalled, it forwards nothing either way while keeping every connection open,
//! as a server that stopped answering (a stopped process, a host gone silent) looks.
#![allow(dead_code)] // Each test binary uses its own part of this.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

/// How long the server gets to run the cut-off `COMMIT` before the connection closes.
const SERVER_GRACE: Duration = Duration::from_millis(300);

pub(crate) struct CutProxy {
    port: u16,
    armed: Arc<AtomicBool>,
    cuts: Arc<AtomicUsize>,
    stalled: Arc<AtomicBool>,
}

impl CutProxy {
    /// Listens on a free loopback port and forwards every connection to `target`
    /// (`host:port`).
    pub(crate) fn start(target: &str) -> CutProxy {
        let target = target
            .to_socket_addrs()
            .expect("proxy target address")
            .next()
            .expect("proxy target resolves");
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let armed = Arc::new(AtomicBool::new(false));
        let cuts = Arc::new(AtomicUsize::new(0));
        let stalled = Arc::new(AtomicBool::new(false));
        let (a, c, st) = (armed.clone(), cuts.clone(), stalled.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(target) else {
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let muted = Arc::new(AtomicBool::new(false));
                let pumps = Pumps {
                    armed: a.clone(),
                    cuts: c.clone(),
                    muted,
                    stalled: st.clone(),
                };
                pump_answers(
                    server.try_clone().unwrap(),
                    client.try_clone().unwrap(),
                    pumps.clone(),
                );
                pump_requests(client, server, pumps);
            }
        });
        CutProxy {
            port,
            armed,
            cuts,
            stalled,
        }
    }

    /// Stops forwarding anything, either way, until [`resume`](Self::resume).
    pub(crate) fn stall(&self) {
        self.stalled.store(true, Ordering::SeqCst);
    }

    /// Forwards again, what was held first.
    pub(crate) fn resume(&self) {
        self.stalled.store(false, Ordering::SeqCst);
    }

    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    /// Loses the answer to the next `COMMIT` any connection sends.
    pub(crate) fn arm(&self) {
        self.armed.store(true, Ordering::SeqCst);
    }

    /// How many `COMMIT`s lost their answer so far.
    pub(crate) fn cuts(&self) -> usize {
        self.cuts.load(Ordering::SeqCst)
    }
}

/// One connection's switches.
#[derive(Clone)]
struct Pumps {
    armed: Arc<AtomicBool>,
    cuts: Arc<AtomicUsize>,
    muted: Arc<AtomicBool>,
    stalled: Arc<AtomicBool>,
}

impl Pumps {
    fn hold_while_stalled(&self) {
        while self.stalled.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Client to server; on an armed `COMMIT`, mutes the answers, forwards it, and closes.
fn pump_requests(mut client: TcpStream, mut server: TcpStream, pumps: Pumps) {
    std::thread::spawn(move || {
        let Pumps {
            armed, cuts, muted, ..
        } = &pumps;
        let mut buf = vec![0_u8; 64 * 1024];
        loop {
            let n = match client.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            pumps.hold_while_stalled();
            let chunk = &buf[..n];
            let commit = chunk.windows(6).any(|w| w == b"COMMIT");
            if commit && armed.swap(false, Ordering::SeqCst) {
                muted.store(true, Ordering::SeqCst);
                let _ = server.write_all(chunk);
                std::thread::sleep(SERVER_GRACE);
                cuts.fetch_add(1, Ordering::SeqCst);
                break;
            }
            if server.write_all(chunk).is_err() {
                break;
            }
        }
        let _ = client.shutdown(Shutdown::Both);
        let _ = server.shutdown(Shutdown::Both);
    });
}

/// Server to client, dropping everything once muted.
fn pump_answers(mut server: TcpStream, mut client: TcpStream, pumps: Pumps) {
    std::thread::spawn(move || {
        let mut buf = vec![0_u8; 64 * 1024];
        loop {
            let n = match server.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            pumps.hold_while_stalled();
            if pumps.muted.load(Ordering::SeqCst) {
                continue;
            }
            if client.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = client.shutdown(Shutdown::Both);
        let _ = server.shutdown(Shutdown::Both);
    });
}

/// `url` with its `host:port` replaced by the proxy's, and `host:port` as it was.
pub(crate) fn through_proxy(url: &str) -> (String, impl Fn(u16) -> String + use<>) {
    let start = url.find("://").expect("a URL") + 3;
    let authority_end = url[start..].find('/').map_or(url.len(), |i| start + i);
    let host_start = url[start..authority_end]
        .rfind('@')
        .map_or(start, |i| start + i + 1);
    let target = url[host_start..authority_end].to_owned();
    let (head, tail) = (
        url[..host_start].to_owned(),
        url[authority_end..].to_owned(),
    );
    (target, move |port| format!("{head}127.0.0.1:{port}{tail}"))
}
