//! A stand-in for the upstream Go aegisd with an upstream Go agent behind it, for
//! proving the gateway against the old behaviour it must tolerate: egress frames carry
//! no `seq` and no `msg_id`, every stream connection first replays the last 50 frames,
//! `?after=` is ignored. Speaks HTTP on a unix socket like aegisd; answers
//! `POST .../tether` (202, and the "agent" replies `echo: TEXT` in two deltas and a done),
//! `GET .../tether/stream`, `GET /v1/secrets/{name}`, `GET /v1/instances/{id}`, and
//! `POST .../exec` (the command really runs, in a folder standing for the VM's
//! `/workspace`, its output streamed as aegisd's NDJSON log entries).

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
    /// Commands run through the exec API.
    execs: Vec<Vec<String>>,
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
        let workspace = socket.with_file_name("workspace");
        let _ = std::fs::create_dir_all(&workspace);
        serve_unix(socket, move |req, resp| {
            let path = req.path.split('?').next().unwrap_or("").to_string();
            let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
            match (req.method.as_str(), segs.as_slice()) {
                ("GET", ["v1", "secrets", name]) => match secrets.iter().find(|(n, _)| n == name) {
                    Some((_, v)) => resp.json(200, &json!({"name": name, "value": v})),
                    None => resp.json(404, &json!({"error": "secret not found"})),
                },
                ("GET", ["v1", "instances", _]) => resp.json(200, &json!({"state": "running"})),
                ("POST", ["v1", "instances", _, "exec"]) => {
                    let command: Vec<String> = serde_json::from_slice::<serde_json::Value>(&req.body)
                        .ok()
                        .and_then(|v| serde_json::from_value(v["command"].clone()).ok())
                        .unwrap_or_default();
                    if command.is_empty() {
                        return resp.json(400, &json!({"error": "command is required"}));
                    }
                    st.0.lock().unwrap().execs.push(command.clone());
                    exec_like_aegisd(&command, &workspace, resp);
                }
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

    /// Commands run through the exec API so far.
    pub fn execs(&self) -> Vec<Vec<String>> {
        self.state.0.lock().unwrap().execs.clone()
    }
}

/// Run `command` in `dir` and stream it as aegisd does: `{exec_id, started_at}`, a log
/// entry per output line (`{ts, stream, line, exec_id}`), then `{exec_id, exit_code, done}`.
fn exec_like_aegisd(command: &[String], dir: &Path, resp: crate::http::Responder) {
    use std::io::BufRead;
    use std::process::{Command, Stdio};
    let exec_id = format!("exec-{}", std::process::id());
    let child = Command::new(&command[0])
        .args(&command[1..])
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => return resp.json(500, &json!({"error": format!("exec: {e}")})),
    };
    let mut r = resp.start_chunked(200, "application/x-ndjson");
    let line = |v: serde_json::Value| format!("{v}\n");
    r.chunk(line(json!({"exec_id": exec_id, "started_at": "2026-12-02T08:00:00Z"})).as_bytes());
    let (tx, rx) = crossbeam_channel::unbounded();
    let out = child.stdout.take().expect("piped");
    let err = child.stderr.take().expect("piped");
    let readers = [
        ("stdout", Box::new(out) as Box<dyn std::io::Read + Send>),
        ("stderr", Box::new(err)),
    ]
    .map(|(stream, pipe)| {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for l in std::io::BufReader::new(pipe).lines().map_while(Result::ok) {
                let _ = tx.send((stream, l));
            }
        })
    });
    drop(tx);
    for (stream, l) in rx {
        let entry = json!({"ts": "2026-12-02T08:00:01Z", "stream": stream, "line": l,
            "source": "exec", "exec_id": exec_id});
        if !r.chunk(line(entry).as_bytes()) {
            break;
        }
    }
    for h in readers {
        let _ = h.join();
    }
    let code = child.wait().ok().and_then(|s| s.code()).unwrap_or(-1);
    r.chunk(line(json!({"exec_id": exec_id, "exit_code": code, "done": true})).as_bytes());
    r.finish();
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
