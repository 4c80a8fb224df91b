//! An HTTP/1.1 proxy in front of the Ceph gateway that reads requests,
//! where `proxy.rs` only moves bytes: it logs each request line (method,
//! path and query) in the order the client sent them, can answer the first
//! N requests that match with S3's own `503 SlowDown` without forwarding
//! them (throttling, with a gateway that never throttles), and can hold a
//! matching request unanswered (a server stuck mid-upload, at a known
//! request). Each request goes upstream on a connection of its own, with
//! `Connection: close` both ways: the request's framing (Content-Length or
//! chunked) is all that has to be parsed, and a response ends where the
//! gateway closes. `Connection` is a hop-by-hop header that SigV4 does not
//! sign, so the signatures still hold. Loopback only.

use std::io::{self, BufRead, BufReader, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

/// A request line as the proxy saw it, and what became of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Logged {
    pub method: String,
    /// Path and query, as sent (percent-encoded).
    pub target: String,
    pub answer: Answer,
}

impl Logged {
    /// The path without the query.
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or_default()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Forwarded; the gateway's status, `None` until it answered.
    Gateway(Option<u16>),
    /// Answered `503 SlowDown` by the proxy, never forwarded.
    SlowDown,
    /// Held: never forwarded, never answered.
    Held,
}

/// What a rule sees of a request.
pub struct Head<'a> {
    pub method: &'a str,
    pub target: &'a str,
    headers: &'a [(String, String)],
}

impl Head<'_> {
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or_default()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Header names and values, in the order they came.
type Headers = Vec<(String, String)>;

type Matcher = Box<dyn Fn(&Head) -> bool + Send>;

struct Rule {
    left: usize,
    action: Answer,
    matches: Matcher,
}

struct State {
    upstream: SocketAddr,
    stopped: AtomicBool,
    log: Mutex<Vec<Logged>>,
    rules: Mutex<Vec<Rule>>,
    /// Signalled when a request is logged or the proxy stops.
    changed: Condvar,
    sockets: Mutex<Vec<TcpStream>>,
}

pub struct HttpProxy {
    port: u16,
    state: Arc<State>,
    accepter: Option<JoinHandle<()>>,
}

impl HttpProxy {
    /// A proxy in front of `endpoint` (`http://IP:PORT`).
    pub fn start(endpoint: &str) -> HttpProxy {
        let (upstream, listener, port) = super::proxy::in_front_of(endpoint);
        let state = Arc::new(State {
            upstream,
            stopped: AtomicBool::new(false),
            log: Mutex::new(Vec::new()),
            rules: Mutex::new(Vec::new()),
            changed: Condvar::new(),
            sockets: Mutex::new(Vec::new()),
        });
        let shared = Arc::clone(&state);
        let accepter = thread::spawn(move || accept_loop(&listener, &shared));
        HttpProxy {
            port,
            state,
            accepter: Some(accepter),
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Answers the next `times` requests that match with `503 SlowDown`.
    pub fn slow_down(&self, times: usize, matches: impl Fn(&Head) -> bool + Send + 'static) {
        self.rule(times, Answer::SlowDown, matches);
    }

    /// Holds the next request that matches: logged, never forwarded or
    /// answered, its connection left open.
    pub fn hold(&self, matches: impl Fn(&Head) -> bool + Send + 'static) {
        self.rule(1, Answer::Held, matches);
    }

    fn rule(&self, left: usize, action: Answer, matches: impl Fn(&Head) -> bool + Send + 'static) {
        self.state.rules.lock().unwrap().push(Rule {
            left,
            action,
            matches: Box::new(matches),
        });
    }

    /// Every request so far, in the order they arrived.
    pub fn requests(&self) -> Vec<Logged> {
        self.state.log.lock().unwrap().clone()
    }

    /// A request is being held.
    pub fn holding(&self) -> bool {
        self.requests().iter().any(|r| r.answer == Answer::Held)
    }
}

impl Drop for HttpProxy {
    fn drop(&mut self) {
        self.state.stopped.store(true, Ordering::SeqCst);
        self.state.changed.notify_all();
        for socket in self.state.sockets.lock().unwrap().drain(..) {
            let _ = socket.shutdown(Shutdown::Both);
        }
        if let Some(accepter) = self.accepter.take() {
            let _ = accepter.join();
        }
    }
}

fn accept_loop(listener: &TcpListener, state: &Arc<State>) {
    while !state.stopped.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((client, _)) => {
                let _ = client.set_nonblocking(false);
                if let Ok(copy) = client.try_clone() {
                    state.sockets.lock().unwrap().push(copy);
                }
                let shared = Arc::clone(state);
                thread::spawn(move || {
                    let _ = serve(client, &shared);
                });
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                thread::sleep(Duration::from_millis(5));
            }
            Err(_) => return,
        }
    }
}

/// Serves one request on a client connection, and closes it (the
/// answer says `Connection: close`, so the client opens a new one).
fn serve(client: TcpStream, state: &State) -> io::Result<()> {
    let mut reader = BufReader::new(client.try_clone()?);
    let mut client = client;
    let Some((line, headers)) = read_head(&mut reader)? else {
        return Ok(());
    };
    let mut parts = line.split(' ');
    let (method, target) = (
        parts.next().unwrap_or_default().to_string(),
        parts.next().unwrap_or_default().to_string(),
    );
    let body = read_body(&mut reader, &headers)?;
    let head = Head {
        method: &method,
        target: &target,
        headers: &headers,
    };
    let action = {
        let mut rules = state.rules.lock().unwrap();
        rules
            .iter_mut()
            .find(|r| r.left > 0 && (r.matches)(&head))
            .map(|rule| {
                rule.left -= 1;
                rule.action.clone()
            })
    };
    let index = {
        let mut log = state.log.lock().unwrap();
        log.push(Logged {
            method: method.clone(),
            target: target.clone(),
            answer: action.clone().unwrap_or(Answer::Gateway(None)),
        });
        state.changed.notify_all();
        log.len() - 1
    };
    match action {
        Some(Answer::SlowDown) => {
            let xml = format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message><Resource>{target}</Resource><RequestId>proxy</RequestId></Error>"
            );
            write!(
                client,
                "HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{xml}",
                xml.len()
            )?;
            client.flush()?;
            let _ = client.shutdown(Shutdown::Both);
            return Ok(());
        }
        Some(_) => {
            // Held until the proxy is dropped (which closes the socket).
            let log = state.log.lock().unwrap();
            drop(
                state
                    .changed
                    .wait_while(log, |_| !state.stopped.load(Ordering::SeqCst))
                    .unwrap(),
            );
            return Ok(());
        }
        None => {}
    }
    let mut upstream = TcpStream::connect(state.upstream)?;
    let mut request = format!("{line}\r\n");
    for (name, value) in &headers {
        if !is_hop_by_hop(name) {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
    }
    request.push_str("Connection: close\r\n\r\n");
    upstream.write_all(request.as_bytes())?;
    upstream.write_all(&body)?;
    upstream.flush()?;
    let mut answer = BufReader::new(upstream);
    let Some((status_line, response_headers)) = read_head(&mut answer)? else {
        return Ok(());
    };
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok());
    state.log.lock().unwrap()[index].answer = Answer::Gateway(status);
    let mut response = format!("{status_line}\r\n");
    for (name, value) in &response_headers {
        if !is_hop_by_hop(name) {
            response.push_str(&format!("{name}: {value}\r\n"));
        }
    }
    response.push_str("Connection: close\r\n\r\n");
    client.write_all(response.as_bytes())?;
    // The gateway closes after this one response: the rest of the
    // stream is its body, whatever its framing.
    io::copy(&mut answer, &mut client)?;
    client.flush()?;
    let _ = client.shutdown(Shutdown::Both);
    Ok(())
}

fn is_hop_by_hop(name: &str) -> bool {
    name.eq_ignore_ascii_case("connection") || name.eq_ignore_ascii_case("keep-alive")
}

/// The first line and the headers, or `None` at a clean end of stream.
fn read_head(reader: &mut impl BufRead) -> io::Result<Option<(String, Headers)>> {
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    let first = line.trim_end().to_string();
    let mut headers = Vec::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let text = line.trim_end();
        if text.is_empty() {
            return Ok(Some((first, headers)));
        }
        if let Some((name, value)) = text.split_once(':') {
            headers.push((name.trim().to_string(), value.trim().to_string()));
        }
    }
}

/// The request body as sent, framing included: `Content-Length` bytes, or
/// chunks up to the last one and its trailers.
fn read_body(reader: &mut impl BufRead, headers: &[(String, String)]) -> io::Result<Vec<u8>> {
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    };
    if header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        let mut raw = Vec::new();
        loop {
            let mut size_line = String::new();
            reader.read_line(&mut size_line)?;
            raw.extend_from_slice(size_line.as_bytes());
            let size =
                usize::from_str_radix(size_line.trim().split(';').next().unwrap_or_default(), 16)
                    .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad chunk size"))?;
            if size == 0 {
                // Trailers, up to an empty line.
                loop {
                    let mut trailer = String::new();
                    reader.read_line(&mut trailer)?;
                    raw.extend_from_slice(trailer.as_bytes());
                    if trailer.trim().is_empty() {
                        return Ok(raw);
                    }
                }
            }
            let start = raw.len();
            raw.resize(start + size + 2, 0);
            reader.read_exact(&mut raw[start..])?;
        }
    }
    let length: usize = header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    Ok(body)
}
