//! An HTTP CONNECT proxy, as a company's squid would be: it records every target it is
//! asked for and tunnels to the stand-in that `route` names for it (or answers 502).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;

use crate::http::Acceptor;

pub(crate) type Route = dyn Fn(&str) -> Option<SocketAddr> + Send + Sync;

/// A running proxy; stops accepting when dropped.
pub struct ConnectProxy {
    /// `http://127.0.0.1:PORT`, the value for `HTTPS_PROXY`.
    pub url: String,
    targets: Arc<Mutex<Vec<String>>>,
    _acceptor: Acceptor,
}

impl ConnectProxy {
    /// Tunnel `CONNECT host:port` to `route("host:port")`.
    pub fn start(route: impl Fn(&str) -> Option<SocketAddr> + Send + Sync + 'static) -> ConnectProxy {
        let targets = Arc::new(Mutex::new(Vec::new()));
        let recorded = Arc::clone(&targets);
        let acceptor = Acceptor::start("127.0.0.1:0", move |conn| tunnel(conn, &route, &recorded));
        ConnectProxy {
            url: format!("http://127.0.0.1:{}", acceptor.port()),
            targets,
            _acceptor: acceptor,
        }
    }

    /// Every `CONNECT` target asked for so far (`host:port`).
    pub fn targets(&self) -> Vec<String> {
        self.targets.lock().unwrap().clone()
    }
}

fn tunnel(mut client: TcpStream, route: &Route, targets: &Mutex<Vec<String>>) {
    let Ok(read_half) = client.try_clone() else { return };
    let mut reader = BufReader::new(read_half);
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or("").to_string());
    // The rest of the request head.
    loop {
        let mut header = String::new();
        match reader.read_line(&mut header) {
            Ok(0) | Err(_) => return,
            Ok(_) if header == "\r\n" || header == "\n" => break,
            Ok(_) => {}
        }
    }
    targets.lock().unwrap().push(target.clone());
    let upstream = if method == "CONNECT" {
        route(&target).and_then(|addr| TcpStream::connect(addr).ok())
    } else {
        None
    };
    let Some(upstream) = upstream else {
        let _ =
            client.write_all(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        return;
    };
    if client
        .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
        .is_err()
    {
        return;
    }
    // Anything the client sent after the head is in the reader's buffer: copy through it.
    splice(&client, reader, upstream);
}

/// Copy both ways between a proxy's client (read through `from_client`) and the upstream
/// until either side closes.
pub(crate) fn splice(client: &TcpStream, mut from_client: impl Read, upstream: TcpStream) {
    let (Ok(mut up_read), Ok(mut client_write)) = (upstream.try_clone(), client.try_clone()) else {
        return;
    };
    let down = thread::spawn(move || {
        let _ = std::io::copy(&mut up_read, &mut client_write);
        let _ = client_write.shutdown(std::net::Shutdown::Both);
    });
    let mut up_write = upstream;
    let _ = std::io::copy(&mut from_client, &mut up_write);
    let _ = up_write.shutdown(std::net::Shutdown::Both);
    let _ = down.join();
}
