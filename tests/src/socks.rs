//! A SOCKS5 proxy (RFC 1928, with RFC 1929 username/password), as an SSH `-D` tunnel or a
//! proxy into a network where Telegram is blocked would be: it records every target and
//! the user that asked for it, and tunnels to the stand-in that `route` names (or answers
//! "host unreachable").

use std::io::{Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};

use crate::http::Acceptor;
use crate::proxy::{splice, Route};

const VERSION: u8 = 5;
const NO_AUTH: u8 = 0x00;
const USER_PASSWORD: u8 = 0x02;
const NO_ACCEPTABLE_METHOD: u8 = 0xff;
const CONNECT: u8 = 0x01;
const SUCCEEDED: u8 = 0x00;
const HOST_UNREACHABLE: u8 = 0x04;
const COMMAND_NOT_SUPPORTED: u8 = 0x07;

/// A running proxy; stops accepting when dropped.
pub struct Socks5Proxy {
    /// `127.0.0.1:PORT`: prefix a scheme (`socks5h://`, `socks5://`) and credentials.
    pub addr: String,
    targets: Arc<Mutex<Vec<String>>>,
    _acceptor: Acceptor,
}

struct Session {
    credentials: Option<(String, String)>,
    targets: Arc<Mutex<Vec<String>>>,
}

impl Socks5Proxy {
    /// Tunnel `CONNECT host:port` to `route("host:port")`; with `credentials`, only a
    /// client that gives them (username/password) is served.
    pub fn start(
        credentials: Option<(&str, &str)>,
        route: impl Fn(&str) -> Option<SocketAddr> + Send + Sync + 'static,
    ) -> Socks5Proxy {
        let targets = Arc::new(Mutex::new(Vec::new()));
        let session = Session {
            credentials: credentials.map(|(u, p)| (u.to_string(), p.to_string())),
            targets: Arc::clone(&targets),
        };
        let acceptor = Acceptor::start("127.0.0.1:0", move |conn| {
            let _ = serve(conn, &session, &route);
        });
        Socks5Proxy {
            addr: format!("127.0.0.1:{}", acceptor.port()),
            targets,
            _acceptor: acceptor,
        }
    }

    /// Every target asked for so far (`host:port`), once authenticated.
    pub fn targets(&self) -> Vec<String> {
        self.targets.lock().unwrap().clone()
    }
}

fn read_exact<const N: usize>(conn: &mut TcpStream) -> std::io::Result<[u8; N]> {
    let mut buf = [0; N];
    conn.read_exact(&mut buf)?;
    Ok(buf)
}

fn read_string(conn: &mut TcpStream) -> std::io::Result<String> {
    let [len] = read_exact::<1>(conn)?;
    let mut buf = vec![0; len as usize];
    conn.read_exact(&mut buf)?;
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

fn serve(mut conn: TcpStream, session: &Session, route: &Route) -> std::io::Result<()> {
    // Greeting: the methods the client offers.
    let [version, count] = read_exact::<2>(&mut conn)?;
    let mut methods = vec![0; count as usize];
    conn.read_exact(&mut methods)?;
    if version != VERSION {
        return Ok(());
    }
    let wanted = if session.credentials.is_some() {
        USER_PASSWORD
    } else {
        NO_AUTH
    };
    if !methods.contains(&wanted) {
        return conn.write_all(&[VERSION, NO_ACCEPTABLE_METHOD]);
    }
    conn.write_all(&[VERSION, wanted])?;
    if let Some((user, password)) = &session.credentials {
        let [_auth_version] = read_exact::<1>(&mut conn)?;
        let (u, p) = (read_string(&mut conn)?, read_string(&mut conn)?);
        let ok = (&u, &p) == (user, password);
        conn.write_all(&[1, if ok { 0 } else { 1 }])?;
        if !ok {
            return Ok(());
        }
    }
    // The request: VER CMD RSV ATYP DST.ADDR DST.PORT.
    let [_, command, _, address_type] = read_exact::<4>(&mut conn)?;
    let host = match address_type {
        1 => Ipv4Addr::from(read_exact::<4>(&mut conn)?).to_string(),
        3 => read_string(&mut conn)?,
        4 => format!("[{}]", Ipv6Addr::from(read_exact::<16>(&mut conn)?)),
        _ => return Ok(()),
    };
    let port = u16::from_be_bytes(read_exact::<2>(&mut conn)?);
    let target = format!("{host}:{port}");
    session.targets.lock().unwrap().push(target.clone());
    let reply = |status: u8| [VERSION, status, 0, 1, 0, 0, 0, 0, 0, 0];
    if command != CONNECT {
        return conn.write_all(&reply(COMMAND_NOT_SUPPORTED));
    }
    let Some(upstream) = route(&target).and_then(|addr| TcpStream::connect(addr).ok()) else {
        return conn.write_all(&reply(HOST_UNREACHABLE));
    };
    conn.write_all(&reply(SUCCEEDED))?;
    let from_client = conn.try_clone()?;
    splice(&conn, from_client, upstream);
    Ok(())
}
