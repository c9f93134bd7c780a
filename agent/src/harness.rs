//! Harness-mode ingress: the HTTP listener the AegisVM harness delivers frames to
//! (`POST /v1/tether/recv`, PROTOCOL.md §4). Answers 202 at once and passes the frame to
//! the router; requests are handled one at a time, so frames keep the harness's order.

use std::io::Read;

use crossbeam_channel::Sender;
use tether::Frame;

/// Largest accepted frame body.
const MAX_BODY: u64 = 1 << 20;

fn json(status: u16, body: &str) -> tiny_http::Response<std::io::Cursor<Vec<u8>>> {
    let header = tiny_http::Header::from_bytes("Content-Type", "application/json").expect("static header");
    tiny_http::Response::from_string(body)
        .with_status_code(status)
        .with_header(header)
}

fn error(status: u16, message: &str) -> tiny_http::Response<std::io::Cursor<Vec<u8>>> {
    json(status, &serde_json::json!({ "error": message }).to_string())
}

/// Serve requests on `server` until it fails, sending accepted frames to `ingress`.
pub fn serve(server: tiny_http::Server, ingress: Sender<Frame>) {
    for mut req in server.incoming_requests() {
        let resp = match (req.method(), req.url()) {
            (tiny_http::Method::Post, "/v1/tether/recv") => {
                let mut body = Vec::new();
                let read = req.as_reader().take(MAX_BODY + 1).read_to_end(&mut body);
                if let Err(e) = read {
                    error(400, &format!("cannot read body: {e}"))
                } else if body.len() as u64 > MAX_BODY {
                    error(413, "frame larger than 1 MiB")
                } else {
                    match Frame::parse(&body) {
                        Ok(frame) => {
                            log::debug!("ingress {} frame", frame.kind);
                            if ingress.send(frame).is_err() {
                                error(503, "agent is shutting down")
                            } else {
                                json(202, r#"{"status":"accepted"}"#)
                            }
                        }
                        Err(e) => error(400, &e.to_string()),
                    }
                }
            }
            (tiny_http::Method::Get, "/" | "/health" | "/v1/health") => json(200, r#"{"status":"ok"}"#),
            (_, "/v1/tether/recv") => error(405, "use POST"),
            _ => error(404, "not found"),
        };
        if let Err(e) = req.respond(resp) {
            log::debug!("response not delivered: {e}");
        }
    }
}
