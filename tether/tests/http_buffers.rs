//! The kit's HTTP clients run with small connection buffers (`tether::http`): big bodies
//! must still stream through both ways, and a header block over the read buffer must end
//! the request with an error, not a hang.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::thread;
use std::time::Duration;

use tether::http::{agent_config, INPUT_BUFFER};

/// Serves one connection: reads a request (headers and a Content-Length body), answers
/// with `extra_header_bytes` of padding headers and a body that echoes the request body
/// twice. Returns the address and the thread, which yields the body it received.
fn one_shot_server(extra_header_bytes: usize) -> (String, thread::JoinHandle<Vec<u8>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = format!("http://{}", listener.local_addr().unwrap());
    let handle = thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        serve(stream, extra_header_bytes)
    });
    (addr, handle)
}

fn serve(stream: TcpStream, extra_header_bytes: usize) -> Vec<u8> {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut length = 0;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        if line == "\r\n" || line.is_empty() {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse().unwrap();
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).unwrap();
    let mut head = String::from("HTTP/1.1 200 OK\r\n");
    let mut n = 0;
    while n < extra_header_bytes {
        let line = format!("x-padding-{n}: {}\r\n", "p".repeat(900));
        n += line.len();
        head.push_str(&line);
    }
    head.push_str(&format!(
        "content-length: {}\r\nconnection: close\r\n\r\n",
        body.len() * 2
    ));
    let mut out = stream;
    // The client may give up on an oversized header block; a failed write is fine then.
    let _ = out.write_all(head.as_bytes());
    let _ = out.write_all(&body);
    let _ = out.write_all(&body);
    body
}

fn client() -> ureq::Agent {
    agent_config("http://127.0.0.1")
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into()
}

#[test]
fn bodies_far_larger_than_the_buffers_stream_through_both_ways() {
    let (url, server) = one_shot_server(1024);
    let sent: Vec<u8> = (0..1_500_000u32).map(|i| (i % 251) as u8).collect();
    let mut resp = client().post(&url).send(&sent[..]).unwrap();
    assert_eq!(resp.status(), 200);
    let got = resp
        .body_mut()
        .with_config()
        .limit(10 << 20)
        .read_to_vec()
        .unwrap();
    assert_eq!(server.join().unwrap(), sent);
    assert_eq!(got.len(), sent.len() * 2);
    assert_eq!(&got[..sent.len()], &sent[..]);
    assert_eq!(&got[sent.len()..], &sent[..]);
}

#[test]
fn a_header_block_that_fits_the_read_buffer_is_accepted() {
    let (url, server) = one_shot_server(INPUT_BUFFER / 2);
    let mut resp = client().post(&url).send("hi").unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().contains_key("x-padding-0"));
    assert_eq!(resp.body_mut().read_to_string().unwrap(), "hihi");
    server.join().unwrap();
}

#[test]
fn a_header_block_over_the_read_buffer_is_an_error_not_a_hang() {
    // 48 KiB: under ureq's default limit (64 KiB), over ours.
    let (url, server) = one_shot_server(48 * 1024);
    let err = client().post(&url).send("hi").unwrap_err();
    // A hang would end in the 10 s timeout instead. ureq reports the block it could not
    // parse in a full buffer as a dropped connection.
    assert!(
        !matches!(err, ureq::Error::Timeout(_)),
        "the request hung until {err}"
    );
    server.join().unwrap();
}
