//! A stand-in for the upstream Go aegisd with an upstream Go agent behind it, for
//! proving the gateway against the old behaviour it must tolerate: egress frames carry
//! no `seq` and no `msg_id`, every stream connection first replays the last 50 frames,
//! `?after=` is ignored. Speaks HTTP on a unix socket like aegisd; answers
//! `POST .../tether` (202, and the "agent" replies `echo: TEXT` in two deltas and a done),
//! `GET .../tether/stream`, `GET /v1/secrets/{name}` and `GET /v1/instances/{id}`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use serde_json::json;
use tether::frame::{kind, UserMessage};
use tether::Frame;

use crate::http::serve_unix;

#[derive(Default)]
struct Shared {
    /// Every egress frame so far, oldest first.
    frames: Vec<String>,
    /// Bumped to make every open stream end (as an aegisd restart would).
    generation: u64,
    /// User messages received.
    received: Vec<Frame>,
}

/// The stand-in; serves until the test process ends.
pub struct OldAegisd {
    /// The socket path.
    pub socket: PathBuf,
    state: Arc<(Mutex<Shared>, Condvar)>,
}

impl OldAegisd {
    /// Serve on `socket`; `secrets` are `(name, value)` pairs.
    pub fn start(socket: &Path, secrets: Vec<(String, String)>) -> OldAegisd {
        let state: Arc<(Mutex<Shared>, Condvar)> = Arc::default();
        let st = Arc::clone(&state);
        serve_unix(socket, move |req, resp| {
            let path = req.path.split('?').next().unwrap_or("").to_string();
            let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
            match (req.method.as_str(), segs.as_slice()) {
                ("GET", ["v1", "secrets", name]) => match secrets.iter().find(|(n, _)| n == name) {
                    Some((_, v)) => resp.json(200, &json!({"name": name, "value": v})),
                    None => resp.json(404, &json!({"error": "secret not found"})),
                },
                ("GET", ["v1", "instances", _]) => resp.json(200, &json!({"state": "running"})),
                ("POST", ["v1", "instances", _, "tether"]) => {
                    let Ok(f) = Frame::parse(&req.body) else {
                        return resp.json(400, &json!({"error": "invalid frame"}));
                    };
                    resp.json(202, &json!({"status": "accepted"}));
                    if f.kind == kind::USER_MESSAGE {
                        reply_like_the_go_agent(&st, f);
                    }
                }
                ("GET", ["v1", "instances", _, "tether", "stream"]) => {
                    let mut r = resp.start_chunked(200, "application/x-ndjson");
                    let (lock, cv) = &*st;
                    let mut s = lock.lock().unwrap();
                    let generation = s.generation;
                    let mut sent = s.frames.len().saturating_sub(50);
                    loop {
                        while sent < s.frames.len() {
                            let line = format!("{}\n", s.frames[sent]);
                            sent += 1;
                            if !r.chunk(line.as_bytes()) {
                                return;
                            }
                        }
                        if s.generation != generation {
                            return r.cut();
                        }
                        s = cv.wait_timeout(s, Duration::from_millis(200)).unwrap().0;
                    }
                }
                _ => resp.json(404, &json!({"error": "not found"})),
            }
        });
        OldAegisd {
            socket: socket.to_path_buf(),
            state,
        }
    }

    /// End every open stream (clients reconnect and get the replay).
    pub fn drop_streams(&self) {
        let (lock, cv) = &*self.state;
        lock.lock().unwrap().generation += 1;
        cv.notify_all();
    }

    /// User messages received so far.
    pub fn received(&self) -> Vec<Frame> {
        self.state.0.lock().unwrap().received.clone()
    }
}

fn reply_like_the_go_agent(state: &Arc<(Mutex<Shared>, Condvar)>, f: Frame) {
    let session = f.session.clone().expect("validated");
    let text = f.payload_as::<UserMessage>().map(|m| m.text).unwrap_or_default();
    let reply = format!("echo: {text}");
    let (a, b) = reply.split_at(reply.len() / 2);
    let mut frames = vec![
        Frame::new(kind::EVENT_ACK, Some(session.clone())),
        Frame::new(kind::STATUS_PRESENCE, Some(session.clone())).with_payload(&json!({"state": "thinking"})),
        Frame::text(kind::ASSISTANT_DELTA, session.clone(), a),
        Frame::text(kind::ASSISTANT_DELTA, session.clone(), b),
        Frame::text(kind::ASSISTANT_DONE, session, &reply),
    ];
    let (lock, cv) = &**state;
    let mut s = lock.lock().unwrap();
    s.received.push(f);
    for fr in frames.drain(..) {
        s.frames.push(fr.to_json());
    }
    cv.notify_all();
}
