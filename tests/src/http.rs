//! A minimal HTTP/1.1 server for fake upstream services, written against raw sockets so a
//! test controls every byte: chunk boundaries, flush timing, abrupt cuts, odd statuses.

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

/// A parsed request.
#[derive(Debug, Clone)]
pub struct Request {
    /// `GET`, `POST`...
    pub method: String,
    /// Path with query.
    pub path: String,
    /// Header names lower-cased.
    pub headers: HashMap<String, String>,
    /// Body bytes (Content-Length or chunked).
    pub body: Vec<u8>,
}

impl Request {
    /// The body parsed as JSON (Null if it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }

    /// A header value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(&name.to_ascii_lowercase()).map(String::as_str)
    }
}

/// Writes one response; dropped without `finish`, the connection is cut.
pub struct Responder {
    stream: Box<dyn Conn>,
    chunked: bool,
}

/// A connection a response can be written to: TCP or a unix socket.
pub trait Conn: Write + Send {
    /// Close both directions at once.
    fn shutdown(&self);
    /// Whether the client closes its end within `max` (sending nothing more meanwhile),
    /// as a server notices a client that went away without having to write to it.
    fn closed_within(&self, max: Duration) -> bool;
}

impl Conn for TcpStream {
    fn shutdown(&self) {
        let _ = TcpStream::shutdown(self, std::net::Shutdown::Both);
    }

    fn closed_within(&self, max: Duration) -> bool {
        closed_within(self, TcpStream::set_read_timeout, max)
    }
}

impl Conn for std::os::unix::net::UnixStream {
    fn shutdown(&self) {
        let _ = std::os::unix::net::UnixStream::shutdown(self, std::net::Shutdown::Both);
    }

    fn closed_within(&self, max: Duration) -> bool {
        closed_within(self, std::os::unix::net::UnixStream::set_read_timeout, max)
    }
}

/// Whether `conn` meets its end or a reset within `max`, read with its read timeout set
/// by `timeout` (then cleared).
fn closed_within<S>(conn: &S, timeout: fn(&S, Option<Duration>) -> io::Result<()>, max: Duration) -> bool
where
    for<'a> &'a S: Read,
{
    let _ = timeout(conn, Some(max.max(Duration::from_millis(1))));
    let gone = match (&mut &*conn).read(&mut [0u8; 1]) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => !matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut),
    };
    let _ = timeout(conn, None);
    gone
}

impl Responder {
    fn new(stream: Box<dyn Conn>) -> Responder {
        Responder {
            stream,
            chunked: false,
        }
    }

    /// A complete response with a body.
    pub fn send(mut self, status: u16, headers: &[(&str, &str)], body: &[u8]) {
        let mut head = format!(
            "HTTP/1.1 {status} {}\r\nContent-Length: {}\r\n",
            reason(status),
            body.len()
        );
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        let _ = self.stream.write_all(head.as_bytes());
        let _ = self.stream.write_all(body);
        let _ = self.stream.flush();
    }

    /// JSON response.
    pub fn json(self, status: u16, body: &serde_json::Value) {
        self.send(
            status,
            &[("Content-Type", "application/json")],
            body.to_string().as_bytes(),
        );
    }

    /// Start a chunked response; then `chunk` and `finish` (or drop to cut it).
    pub fn start_chunked(self, status: u16, content_type: &str) -> Responder {
        self.start_chunked_with(status, &[("Content-Type", content_type)])
    }

    /// Start a chunked response with `headers`; then `chunk` and `finish`.
    pub fn start_chunked_with(mut self, status: u16, headers: &[(&str, &str)]) -> Responder {
        let mut head = format!("HTTP/1.1 {status} {}\r\n", reason(status));
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("Transfer-Encoding: chunked\r\n\r\n");
        let _ = self.stream.write_all(head.as_bytes());
        let _ = self.stream.flush();
        self.chunked = true;
        self
    }

    /// Send one chunk and flush it; false if the client has gone.
    pub fn chunk(&mut self, data: &[u8]) -> bool {
        if data.is_empty() {
            return true;
        }
        let ok = self
            .stream
            .write_all(format!("{:x}\r\n", data.len()).as_bytes())
            .is_ok()
            && self.stream.write_all(data).is_ok()
            && self.stream.write_all(b"\r\n").is_ok();
        ok && self.stream.flush().is_ok()
    }

    /// End a chunked response properly.
    pub fn finish(mut self) {
        if self.chunked {
            let _ = self.stream.write_all(b"0\r\n\r\n");
        }
        let _ = self.stream.flush();
    }

    /// Close the connection abruptly (a cut stream).
    pub fn cut(self) {
        self.stream.shutdown();
    }

    /// Whether the client closes the connection within `max` (see [`Conn::closed_within`]).
    pub fn closed_within(&self, max: Duration) -> bool {
        self.stream.closed_within(max)
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        202 => "Accepted",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        529 => "Overloaded",
        _ => "Status",
    }
}

/// A loopback listener that gives each connection a thread running `serve`; stops
/// accepting when dropped. Every stand-in server (HTTP, the TLS front, the proxy) is one.
pub struct Acceptor {
    port: u16,
    stop: Arc<AtomicBool>,
}

impl Acceptor {
    /// Listen on `addr` (`127.0.0.1:0` for an ephemeral port).
    pub fn start(addr: &str, serve: impl Fn(TcpStream) + Send + Sync + 'static) -> Acceptor {
        let listener = TcpListener::bind(addr).expect("bind stand-in server");
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = Arc::clone(&stop);
        let serve = Arc::new(serve);
        thread::spawn(move || {
            for conn in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let serve = Arc::clone(&serve);
                thread::spawn(move || serve(conn));
            }
        });
        Acceptor { port, stop }
    }

    /// The port listened on.
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for Acceptor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect_timeout(&([127, 0, 0, 1], self.port).into(), Duration::from_millis(200));
    }
}

/// A running fake server; stops accepting when dropped.
pub struct Server {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    acceptor: Acceptor,
}

impl Server {
    /// Serve on an ephemeral loopback port; `handler` runs on a thread per request.
    pub fn start(handler: impl Fn(Request, Responder) + Send + Sync + 'static) -> Server {
        Server::start_on("127.0.0.1:0", handler)
    }

    /// As [`Server::start`], writing each piece at once (`TCP_NODELAY`), as Node's HTTP
    /// server (the MCP SDK's) does: a response written in several small pieces otherwise
    /// waits for the client's delayed acknowledgement (40 ms) now and then.
    pub fn start_nodelay(handler: impl Fn(Request, Responder) + Send + Sync + 'static) -> Server {
        let acceptor = Acceptor::start("127.0.0.1:0", move |conn: TcpStream| {
            let _ = conn.set_nodelay(true);
            serve_conn(conn, &handler)
        });
        Server {
            url: format!("http://127.0.0.1:{}", acceptor.port()),
            acceptor,
        }
    }

    /// Serve on a given address (to restart a server on the same port).
    pub fn start_on(addr: &str, handler: impl Fn(Request, Responder) + Send + Sync + 'static) -> Server {
        let acceptor = Acceptor::start(addr, move |conn| serve_conn(conn, &handler));
        Server {
            url: format!("http://127.0.0.1:{}", acceptor.port()),
            acceptor,
        }
    }

    /// The port listened on.
    pub fn port(&self) -> u16 {
        self.acceptor.port()
    }
}

fn serve_conn(conn: TcpStream, handler: &(dyn Fn(Request, Responder) + Send + Sync)) {
    let mut reader = BufReader::new(conn.try_clone().expect("clone"));
    loop {
        let req = match read_request(&mut reader) {
            Ok(Some(r)) => r,
            _ => return,
        };
        let Ok(stream) = conn.try_clone() else { return };
        handler(req, Responder::new(Box::new(stream)));
    }
}

/// Serve HTTP on a unix socket at `path` (as aegisd does) with `handler`.
pub fn serve_unix(path: &std::path::Path, handler: impl Fn(Request, Responder) + Send + Sync + 'static) {
    let _ = std::fs::remove_file(path);
    let listener = std::os::unix::net::UnixListener::bind(path).expect("bind unix socket");
    let handler = Arc::new(handler);
    thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            let handler = Arc::clone(&handler);
            thread::spawn(move || {
                let mut reader = BufReader::new(conn.try_clone().expect("clone"));
                while let Ok(Some(req)) = read_request(&mut reader) {
                    let Ok(stream) = conn.try_clone() else { return };
                    handler(req, Responder::new(Box::new(stream)));
                }
            });
        }
    });
}

fn read_request(r: &mut impl BufRead) -> io::Result<Option<Request>> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let path = parts.next().unwrap_or("").to_string();
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        r.read_line(&mut h)?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let mut body = Vec::new();
    if let Some(len) = headers
        .get("content-length")
        .and_then(|l| l.parse::<usize>().ok())
    {
        body.resize(len, 0);
        r.read_exact(&mut body)?;
    } else if headers
        .get("transfer-encoding")
        .is_some_and(|t| t.contains("chunked"))
    {
        loop {
            let mut size = String::new();
            r.read_line(&mut size)?;
            let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
            let mut chunk = vec![0; n + 2];
            r.read_exact(&mut chunk)?;
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
    }
    Ok(Some(Request {
        method,
        path,
        headers,
        body,
    }))
}

/// One part of a multipart/form-data body.
pub struct FormPart {
    /// The field name.
    pub name: String,
    /// The file name, for a file.
    pub filename: Option<String>,
    /// Its `Content-Type`, when given.
    pub content_type: Option<String>,
    /// The bytes.
    pub data: Vec<u8>,
}

/// The parts of a multipart/form-data request (None for any other body).
pub fn multipart(req: &Request) -> Option<Vec<FormPart>> {
    let ct = req.header("content-type")?;
    let boundary = ct
        .strip_prefix("multipart/form-data")?
        .split(';')
        .find_map(|p| p.trim().strip_prefix("boundary="))?
        .trim_matches('"');
    let delim = format!("--{boundary}").into_bytes();
    let body = &req.body;
    let find = |from: usize| {
        body[from..]
            .windows(delim.len())
            .position(|w| w == delim.as_slice())
            .map(|i| i + from)
    };
    let mut parts = Vec::new();
    let mut at = find(0)? + delim.len();
    while body.get(at..at + 2) == Some(b"\r\n") {
        let start = at + 2;
        let next = find(start)?;
        // The part's content ends with CRLF before the next delimiter.
        let part = &body[start..next.saturating_sub(2).max(start)];
        let split = part.windows(4).position(|w| w == b"\r\n\r\n")?;
        let head = String::from_utf8_lossy(&part[..split]);
        let mut fp = FormPart {
            name: String::new(),
            filename: None,
            content_type: None,
            data: part[split + 4..].to_vec(),
        };
        for line in head.split("\r\n") {
            let (k, v) = line.split_once(':')?;
            match k.trim().to_ascii_lowercase().as_str() {
                "content-disposition" => {
                    for attr in v.split(';').map(str::trim) {
                        if let Some(n) = attr.strip_prefix("name=") {
                            fp.name = n.trim_matches('"').to_string();
                        } else if let Some(f) = attr.strip_prefix("filename=") {
                            fp.filename = Some(f.trim_matches('"').to_string());
                        }
                    }
                }
                "content-type" => fp.content_type = Some(v.trim().to_string()),
                _ => {}
            }
        }
        parts.push(fp);
        at = next + delim.len();
    }
    Some(parts)
}
