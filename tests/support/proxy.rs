//! A TCP proxy in front of a real server that a test can kill, reset or
//! freeze, so the server keeps serving other tests while this one sees it
//! die, blip or hang.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

/// A TCP proxy in front of the gateway that a test can kill (connections
/// closed, new ones refused: the server process died) or freeze (nothing
/// forwarded, connections left open: the server was SIGSTOPped).
pub struct Proxy {
    port: u16,
    state: Arc<ProxyState>,
    accepter: Option<JoinHandle<()>>,
}

struct ProxyState {
    mode: AtomicU8,
    upstream: SocketAddr,
    /// Bytes forwarded from the client to the server.
    forwarded: AtomicU64,
    /// Connections accepted and forwarded.
    connections: AtomicU64,
    sockets: Mutex<Vec<TcpStream>>,
}

const FORWARD: u8 = 0;

const FROZEN: u8 = 1;

const DEAD: u8 = 2;

/// The gateway at `endpoint` (`http://IP:PORT`), and a non-blocking
/// listener on a free port of 127.0.0.1 to stand in front of it.
pub fn in_front_of(endpoint: &str) -> (SocketAddr, TcpListener, u16) {
    let upstream: SocketAddr = endpoint
        .trim_start_matches("http://")
        .parse()
        .expect("the test gateway is at http://IP:PORT");
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    (upstream, listener, port)
}

impl Proxy {
    pub fn start(endpoint: &str) -> Proxy {
        let (upstream, listener, port) = in_front_of(endpoint);
        let state = Arc::new(ProxyState {
            mode: AtomicU8::new(FORWARD),
            upstream,
            forwarded: AtomicU64::new(0),
            connections: AtomicU64::new(0),
            sockets: Mutex::new(Vec::new()),
        });
        let shared = Arc::clone(&state);
        let accepter = thread::spawn(move || accept_loop(&listener, &shared));
        Proxy {
            port,
            state,
            accepter: Some(accepter),
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn forwarded(&self) -> u64 {
        self.state.forwarded.load(Ordering::SeqCst)
    }

    /// Connections accepted so far: a new one after a reset is a retry.
    pub fn connections(&self) -> u64 {
        self.state.connections.load(Ordering::SeqCst)
    }

    pub fn freeze(&self) {
        self.state.mode.store(FROZEN, Ordering::SeqCst);
    }

    /// Closes the connections open now (a network blip, a load balancer
    /// restart); new ones are served.
    pub fn reset(&self) {
        for socket in self.state.sockets.lock().unwrap().drain(..) {
            let _ = socket.shutdown(Shutdown::Both);
        }
    }

    /// Closes every connection; the listener closes within milliseconds.
    pub fn kill(&self) {
        self.state.mode.store(DEAD, Ordering::SeqCst);
        for socket in self.state.sockets.lock().unwrap().drain(..) {
            let _ = socket.shutdown(Shutdown::Both);
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.kill();
        if let Some(accepter) = self.accepter.take() {
            let _ = accepter.join();
        }
    }
}

fn accept_loop(listener: &TcpListener, state: &Arc<ProxyState>) {
    while state.mode.load(Ordering::SeqCst) != DEAD {
        match listener.accept() {
            Ok((client, _)) => {
                let Ok(server) = TcpStream::connect(state.upstream) else {
                    continue;
                };
                let _ = client.set_nonblocking(false);
                let (Ok(client2), Ok(server2)) = (client.try_clone(), server.try_clone()) else {
                    continue;
                };
                {
                    let mut sockets = state.sockets.lock().unwrap();
                    if state.mode.load(Ordering::SeqCst) == DEAD {
                        return;
                    }
                    for s in [&client, &server] {
                        if let Ok(s) = s.try_clone() {
                            sockets.push(s);
                        }
                    }
                }
                state.connections.fetch_add(1, Ordering::SeqCst);
                let up = Arc::clone(state);
                thread::spawn(move || pump(client, server, &up, true));
                let down = Arc::clone(state);
                thread::spawn(move || pump(server2, client2, &down, false));
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                thread::sleep(Duration::from_millis(5));
            }
            Err(_) => return,
        }
    }
}

/// Copies `from` to `to` until either closes or the proxy dies; stands
/// still while frozen.
fn pump(mut from: TcpStream, mut to: TcpStream, state: &ProxyState, count: bool) {
    let _ = from.set_read_timeout(Some(Duration::from_millis(100)));
    let mut buf = vec![0u8; 64 << 10];
    loop {
        match state.mode.load(Ordering::SeqCst) {
            DEAD => return,
            FROZEN => {
                thread::sleep(Duration::from_millis(20));
                continue;
            }
            _ => {}
        }
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
                if count {
                    state.forwarded.fetch_add(n as u64, Ordering::SeqCst);
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break,
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}
