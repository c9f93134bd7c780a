//! A stand-in agent for `aegis-kit serve` tests of the keepalive lease: it dials
//! `AEGIS_TETHER` (unix:PATH), sends a `keepalive` notification with `LEASE_TTL_MS`
//! (default 3000), stays silent for `LEASE_HOLD_MS` (default 2500), sends
//! `keepalive.release`, then idles until the host closes the connection. `LEASE_DEEP`:
//! first a `keepalive` whose params nest as deep as a JSON reader reads.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

fn main() {
    let addr = std::env::var("AEGIS_TETHER").expect("AEGIS_TETHER");
    let path = addr.strip_prefix("unix:").expect("unix: address");
    let ms = |name: &str, default: u64| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let mut s = UnixStream::connect(path).expect("connect");
    if std::env::var("LEASE_DEEP").is_ok() {
        // A hostile guest's notification, nested as deep as a JSON reader reads (128).
        let deep = format!("{}1{}", "[".repeat(126), "]".repeat(126));
        let note = format!("{{\"jsonrpc\":\"2.0\",\"method\":\"keepalive\",\"params\":{{\"x\":{deep}}}}}\n");
        s.write_all(note.as_bytes()).expect("deep");
    }
    let lease = format!(
        "{{\"jsonrpc\":\"2.0\",\"method\":\"keepalive\",\"params\":{{\"ttl_ms\":{},\"reason\":\"test\"}}}}\n",
        ms("LEASE_TTL_MS", 3000)
    );
    s.write_all(lease.as_bytes()).expect("lease");
    std::thread::sleep(Duration::from_millis(ms("LEASE_HOLD_MS", 2500)));
    s.write_all(b"{\"jsonrpc\":\"2.0\",\"method\":\"keepalive.release\",\"params\":{}}\n")
        .expect("release");
    let mut buf = [0u8; 4096];
    while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
}
