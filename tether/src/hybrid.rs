//! Host side of hybrid vsock, as Firecracker and Cloud Hypervisor expose a guest's vsock
//! device: a unix socket on the host.
//!
//! - Host → guest: connect to the VMM's unix socket, write `CONNECT <port>\n`, read
//!   `OK <assigned>\n`; the rest of the connection is the guest's port `<port>`.
//! - Guest → host: the VMM connects to `<uds_path>_<port>`, where the host listens.

use std::fmt;
use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Longest handshake line accepted; real ones are under 20 bytes.
const MAX_HANDSHAKE: usize = 64;

/// Why the hybrid vsock handshake failed.
#[derive(Debug)]
pub enum HybridError {
    /// Socket I/O failed or the VMM hung up.
    Io(io::Error),
    /// The line was not `CONNECT <port>` / `OK <port>`; carries the offending line.
    Malformed(String),
    /// The port field was not a number; carries the field.
    BadPort(String),
}

impl fmt::Display for HybridError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HybridError::Io(e) => write!(f, "hybrid vsock handshake failed: {e}"),
            HybridError::Malformed(l) => write!(f, "hybrid vsock: unexpected handshake line {l:?}"),
            HybridError::BadPort(p) => write!(f, "hybrid vsock: port {p:?} is not a number"),
        }
    }
}

impl std::error::Error for HybridError {}

/// Dial guest `port` through the VMM's hybrid vsock socket at `uds`.
pub fn connect(uds: &Path, port: u32, timeout: Duration) -> Result<UnixStream, HybridError> {
    let mut s = UnixStream::connect(uds).map_err(HybridError::Io)?;
    s.set_read_timeout(Some(timeout)).map_err(HybridError::Io)?;
    s.write_all(format!("CONNECT {port}\n").as_bytes())
        .map_err(HybridError::Io)?;
    let line = read_line(&mut s)?;
    parse_word_port(&line, "OK")?;
    s.set_read_timeout(None).map_err(HybridError::Io)?;
    Ok(s)
}

/// The path where the host listens for guest-initiated connections to `port`.
pub fn listener_path(uds: &Path, port: u32) -> PathBuf {
    let mut p = uds.as_os_str().to_owned();
    p.push(format!("_{port}"));
    PathBuf::from(p)
}

/// Parse a `CONNECT <port>` line (the VMM's side; used by stand-ins in tests).
pub fn parse_connect(line: &str) -> Result<u32, HybridError> {
    parse_word_port(line, "CONNECT")
}

/// Read one handshake line byte by byte, so no byte of the payload after it is consumed.
pub fn read_line(s: &mut impl Read) -> Result<String, HybridError> {
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    loop {
        match s.read(&mut b) {
            Ok(0) => return Err(HybridError::Io(io::ErrorKind::UnexpectedEof.into())),
            Ok(_) if b[0] == b'\n' => break,
            Ok(_) => {
                line.push(b[0]);
                if line.len() > MAX_HANDSHAKE {
                    return Err(HybridError::Malformed(
                        String::from_utf8_lossy(&line).into_owned(),
                    ));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(HybridError::Io(e)),
        }
    }
    String::from_utf8(line)
        .map_err(|e| HybridError::Malformed(String::from_utf8_lossy(e.as_bytes()).into_owned()))
}

fn parse_word_port(line: &str, word: &str) -> Result<u32, HybridError> {
    let line = line.trim_end_matches('\r');
    let mut parts = line.split(' ');
    if parts.next() != Some(word) {
        return Err(HybridError::Malformed(line.to_string()));
    }
    let port = parts
        .next()
        .ok_or_else(|| HybridError::Malformed(line.to_string()))?;
    if parts.next().is_some() {
        return Err(HybridError::Malformed(line.to_string()));
    }
    port.parse().map_err(|_| HybridError::BadPort(port.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    #[test]
    fn connect_handshake_then_payload_flows() {
        let dir = std::env::temp_dir().join(format!("tether-hy-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let uds = dir.join("v.sock");
        let l = UnixListener::bind(&uds).unwrap();
        let vmm = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let port = parse_connect(&read_line(&mut s).unwrap()).unwrap();
            // The VMM answers and immediately relays guest bytes: they must not be eaten.
            s.write_all(format!("OK 1073741824\nhello from {port}").as_bytes())
                .unwrap();
        });
        let mut s = connect(&uds, 1024, Duration::from_secs(2)).unwrap();
        let mut got = String::new();
        s.read_to_string(&mut got).unwrap();
        assert_eq!(got, "hello from 1024");
        vmm.join().unwrap();
        assert_eq!(listener_path(&uds, 52), dir.join("v.sock_52"));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn bad_handshake_lines_are_typed() {
        assert!(matches!(parse_connect("CONNECT abc"), Err(HybridError::BadPort(p)) if p == "abc"));
        assert!(matches!(parse_connect("CONNECT"), Err(HybridError::Malformed(_))));
        assert!(matches!(
            parse_connect("GET / HTTP/1.1"),
            Err(HybridError::Malformed(_))
        ));
        assert!(matches!(
            parse_connect("CONNECT 1 2"),
            Err(HybridError::Malformed(_))
        ));
        assert_eq!(parse_connect("CONNECT 1024\r").unwrap(), 1024);
        let mut long = std::io::Cursor::new(vec![b'x'; 200]);
        assert!(matches!(read_line(&mut long), Err(HybridError::Malformed(_))));
    }
}
