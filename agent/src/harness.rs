//! Harness-mode ingress: the HTTP listener the AegisVM harness delivers frames to
//! (`POST /v1/tether/recv`, PROTOCOL.md §4), and the chunks of `host:` models
//! (`POST /v1/llm/recv`, see `host_llm`). Answers 202 at once and passes the frame on;
//! requests are handled one at a time, so frames keep the order they arrive in.

use std::io::Read;

use crossbeam_channel::Sender;
use tether::Frame;

use crate::host_llm::{LlmFrame, Routes};

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

/// The body of `req`, at most `MAX_BODY` bytes.
fn body(req: &mut tiny_http::Request) -> Result<Vec<u8>, tiny_http::Response<std::io::Cursor<Vec<u8>>>> {
    let mut body = Vec::new();
    match req.as_reader().take(MAX_BODY + 1).read_to_end(&mut body) {
        Err(e) => Err(error(400, &format!("cannot read body: {e}"))),
        Ok(_) if body.len() as u64 > MAX_BODY => Err(error(413, "frame larger than 1 MiB")),
        Ok(_) => Ok(body),
    }
}

/// Serve requests on `server` until it fails, sending accepted frames to `ingress` and
/// model chunks to `routes`.
pub fn serve(server: tiny_http::Server, ingress: Sender<Frame>, routes: &Routes) {
    for mut req in server.incoming_requests() {
        let resp = match (req.method(), req.url()) {
            (tiny_http::Method::Post, "/v1/llm/recv") => match body(&mut req) {
                Err(resp) => resp,
                Ok(body) => match LlmFrame::parse(&body) {
                    Ok(frame) => {
                        let id = frame.req_id.clone();
                        if !routes.deliver(frame) {
                            // Expected after a cancel or a retry: the host streams on.
                            log::debug!("llm frame for {id:?}, which nothing waits for");
                        }
                        json(202, r#"{"status":"accepted"}"#)
                    }
                    Err(e) => error(400, &format!("invalid llm frame: {e}")),
                },
            },
            (tiny_http::Method::Post, "/v1/tether/recv") => match body(&mut req) {
                Err(resp) => resp,
                Ok(body) => match Frame::parse(&body) {
                    Ok(frame) => {
                        log::debug!("ingress {} frame", frame.kind);
                        if ingress.send(frame).is_err() {
                            error(503, "agent is shutting down")
                        } else {
                            json(202, r#"{"status":"accepted"}"#)
                        }
                    }
                    Err(e) => error(400, &e.to_string()),
                },
            },
            (tiny_http::Method::Get, "/" | "/health" | "/v1/health") => json(200, r#"{"status":"ok"}"#),
            (_, "/v1/tether/recv" | "/v1/llm/recv") => error(405, "use POST"),
            _ => error(404, "not found"),
        };
        if let Err(e) = req.respond(resp) {
            log::debug!("response not delivered: {e}");
        }
    }
}
