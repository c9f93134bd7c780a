//! HTTPS for the stand-in servers: a TLS front that terminates TLS with the test
//! certificate for localhost (`tests/fixtures/tls`, signed by the test CA no binary trusts
//! unless `SSL_CERT_FILE` names it) and relays the plaintext to a plain stand-in, byte for
//! byte, so every stand-in works over HTTPS unchanged, its errors and cut streams included.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::thread;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ServerConfig, ServerConnection};

use crate::http::Acceptor;

/// A file of `tests/fixtures/tls`: `ca.pem` (the test CA, ECDSA P-256), `other-ca.pem` (a
/// CA that signed nothing here), `localhost.pem` and `localhost.key` (the server's);
/// `rsa-ca.pem` and `localhost-rsa.*`, the same with RSA-2048 (as Telegram's chain).
pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/tls")
        .join(name)
}

/// A running TLS front; stops accepting when dropped.
pub struct TlsFront {
    /// `https://localhost:PORT`.
    pub url: String,
    _acceptor: Acceptor,
}

impl TlsFront {
    /// Serve HTTPS on an ephemeral loopback port in front of `backend`
    /// (`http://127.0.0.1:PORT`), with the ECDSA certificate of the test CA.
    pub fn start(backend: &str) -> TlsFront {
        TlsFront::start_with(backend, "localhost")
    }

    /// As `start`, with the certificate `NAME.pem` and key `NAME.key` of the fixtures.
    pub fn start_with(backend: &str, name: &str) -> TlsFront {
        let backend: SocketAddr = backend
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .parse()
            .expect("backend is http://IP:PORT");
        let config = Arc::new(server_config(name));
        let acceptor = Acceptor::start("127.0.0.1:0", move |client| {
            relay(client, backend, Arc::clone(&config))
        });
        TlsFront {
            url: format!("https://localhost:{}", acceptor.port()),
            _acceptor: acceptor,
        }
    }
}

fn server_config(name: &str) -> ServerConfig {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(fixture(&format!("{name}.pem")))
        .expect("certificate file")
        .collect::<Result<_, _>>()
        .expect("certificate parses");
    let key = PrivateKeyDer::from_pem_file(fixture(&format!("{name}.key"))).expect("key file");
    ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("certificate and key match")
}

/// Relay one connection until either side ends it. An end from the backend (a complete
/// response or a cut) ends the client's TCP connection without a TLS close_notify, so a
/// cut stream reaches the client as the truncation it is.
fn relay(client: TcpStream, backend_addr: SocketAddr, config: Arc<ServerConfig>) {
    let Ok(backend) = TcpStream::connect(backend_addr) else {
        return;
    };
    // Each record written at once, as a TLS terminator does (nginx's `tcp_nodelay` is on
    // by default): a record held back by Nagle until the client's delayed acknowledgement
    // would add 40 ms now and then, which no deployed agent sees.
    let _ = client.set_nodelay(true);
    let _ = backend.set_nodelay(true);
    let Ok(conn) = ServerConnection::new(config) else {
        return;
    };
    let conn = Arc::new(Mutex::new(conn));
    let (Ok(client2), Ok(backend2)) = (client.try_clone(), backend.try_clone()) else {
        return;
    };
    let conn2 = Arc::clone(&conn);
    let downstream = thread::spawn(move || {
        let _ = backend_to_client(&backend2, &client2, &conn2);
        let _ = client2.shutdown(std::net::Shutdown::Both);
    });
    let _ = client_to_backend(&client, &backend, &conn);
    let _ = backend.shutdown(std::net::Shutdown::Both);
    let _ = downstream.join();
}

fn client_to_backend(
    client: &TcpStream,
    mut backend: &TcpStream,
    conn: &Mutex<ServerConnection>,
) -> io::Result<()> {
    let mut buf = vec![0u8; 16 * 1024];
    let mut plain = vec![0u8; 16 * 1024];
    loop {
        let n = (&*client).read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        let mut c = conn.lock().unwrap();
        let mut input = &buf[..n];
        while !input.is_empty() {
            c.read_tls(&mut input)?;
            if let Err(e) = c.process_new_packets() {
                // Send the alert: a client that rejected our certificate gets its answer.
                let _ = write_tls(&mut c, client);
                return Err(io::Error::new(io::ErrorKind::InvalidData, e));
            }
            loop {
                match c.reader().read(&mut plain) {
                    Ok(0) => return Ok(()),
                    Ok(m) => backend.write_all(&plain[..m])?,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e),
                }
            }
        }
        write_tls(&mut c, client)?;
    }
}

fn backend_to_client(
    mut backend: &TcpStream,
    client: &TcpStream,
    conn: &Mutex<ServerConnection>,
) -> io::Result<()> {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = backend.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        let mut c = conn.lock().unwrap();
        c.writer().write_all(&buf[..n])?;
        write_tls(&mut c, client)?;
    }
}

fn write_tls(conn: &mut ServerConnection, mut client: &TcpStream) -> io::Result<()> {
    while conn.wants_write() {
        conn.write_tls(&mut client)?;
    }
    client.flush()
}
