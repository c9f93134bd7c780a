//! Stand-ins for the guest side of AegisVM: the harness's HTTP endpoint that collects
//! the agent's egress (`POST /v1/tether/send`, PROTOCOL.md §4), and a host that accepts
//! the agent's direct tether connection and speaks JSON-RPC lines (§3).

use std::io::{BufReader, Write};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{unbounded, Receiver, Sender};
use tether::rpc::{Message, Messages};
use tether::{Addr, Frame, Listener, Stream};

use crate::host_llm::HostModels;
use crate::http::Server;

/// The harness's egress endpoint; frames arrive on a channel. Also the guest API's
/// keepalive lease (`POST`/`DELETE /v1/self/keepalive`), recorded in order.
pub struct FakeHarness {
    server: Server,
    frames: Receiver<Frame>,
    /// Requests to answer with 503 before accepting (simulates a busy harness).
    pub fail_next: Arc<AtomicUsize>,
    /// Lease requests: `acquire TTL_MS REASON` or `release`.
    leases: Arc<Mutex<Vec<String>>>,
    /// `host:` models, as current AegisVM serves them; `None`: an older harness (404).
    pub host_models: Option<HostModels>,
    /// `POST /v1/self/restart` requests (the Go harness then restarts the agent).
    pub restarts: Arc<AtomicUsize>,
    /// Answer those with 404, as a harness without the guest API's restart.
    pub refuse_restart: Arc<std::sync::atomic::AtomicBool>,
}

impl FakeHarness {
    /// Listen on an ephemeral port.
    pub fn start() -> FakeHarness {
        FakeHarness::start_on("127.0.0.1:0")
    }

    /// Listen on `addr`.
    pub fn start_on(addr: &str) -> FakeHarness {
        FakeHarness::start_full(addr, None)
    }

    /// A harness of current AegisVM that also serves `host:` models.
    pub fn with_host_models(models: HostModels) -> FakeHarness {
        FakeHarness::start_full("127.0.0.1:0", Some(models))
    }

    fn start_full(addr: &str, host_models: Option<HostModels>) -> FakeHarness {
        let (tx, rx) = unbounded();
        let models = host_models.clone();
        let restarts = Arc::new(AtomicUsize::new(0));
        let restart_log = Arc::clone(&restarts);
        let refuse_restart = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let refuse = Arc::clone(&refuse_restart);
        let fail_next = Arc::new(AtomicUsize::new(0));
        let fail = Arc::clone(&fail_next);
        let leases = Arc::new(Mutex::new(Vec::new()));
        let lease_log = Arc::clone(&leases);
        let server = Server::start_on(addr, move |req, resp| {
            if let (Some(m), "POST", "/v1/llm/chat") = (&models, req.method.as_str(), req.path.as_str()) {
                return m.chat(&req, resp);
            }
            if (req.method.as_str(), req.path.as_str()) == ("GET", "/v1/self") {
                return resp.json(200, &self_info());
            }
            if (req.method.as_str(), req.path.as_str()) == ("POST", "/v1/self/restart") {
                restart_log.fetch_add(1, Ordering::SeqCst);
                if refuse.load(Ordering::SeqCst) {
                    return resp.send(404, &[("Content-Type", "text/plain")], b"404 page not found\n");
                }
                return resp.json(
                    200,
                    &serde_json::json!({"ok": true, "message": "restart initiated"}),
                );
            }
            if req.path == "/v1/self/keepalive" {
                let entry = match req.method.as_str() {
                    "POST" => {
                        let b = req.json();
                        format!("acquire {} {}", b["ttl_ms"], b["reason"].as_str().unwrap_or(""))
                    }
                    "DELETE" => "release".to_string(),
                    _ => return resp.json(405, &serde_json::json!({"error": "method not allowed"})),
                };
                lease_log.lock().unwrap().push(entry);
                return resp.json(200, &serde_json::json!({"status": "ok"}));
            }
            if req.method != "POST" || req.path != "/v1/tether/send" {
                return resp.json(404, &serde_json::json!({"error": "not found"}));
            }
            if fail.load(Ordering::SeqCst) > 0 {
                fail.fetch_sub(1, Ordering::SeqCst);
                return resp.json(503, &serde_json::json!({"error": "busy"}));
            }
            match Frame::parse(&req.body) {
                Ok(f) => {
                    let _ = tx.send(f);
                    resp.json(202, &serde_json::json!({"status": "accepted"}));
                }
                Err(e) => resp.json(400, &serde_json::json!({"error": e.to_string()})),
            }
        });
        FakeHarness {
            server,
            frames: rx,
            fail_next,
            leases,
            host_models,
            restarts,
            refuse_restart,
        }
    }

    /// Keepalive lease requests so far.
    pub fn leases(&self) -> Vec<String> {
        self.leases.lock().unwrap().clone()
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> &str {
        &self.server.url
    }

    /// Egress frames received so far and later.
    pub fn frames(&self) -> &Receiver<Frame> {
        &self.frames
    }
}

/// What the harness's `GET /v1/self` answers: aegisd's `guest.self_info` of an instance
/// with one exposed port.
pub fn self_info() -> serde_json::Value {
    serde_json::json!({
        "id": "inst-7f3a", "handle": "my-agent", "state": "running",
        "image": "python:3.12-alpine", "parent_id": "",
        "endpoints": [{"guest_port": 8080, "public_port": 40123, "url": "http://127.0.0.1:40123"}],
    })
}

/// Deliver one ingress frame to the agent's `/v1/tether/recv`; returns status and body.
pub fn post_to_agent(agent_addr: &str, body: &str) -> (u16, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .proxy(None)
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    let mut r = agent
        .post(format!("http://{agent_addr}/v1/tether/recv"))
        .content_type("application/json")
        .send(body)
        .expect("agent reachable");
    let status = r.status().as_u16();
    (status, r.body_mut().read_to_string().unwrap_or_default())
}

/// Collect frames from `rx` until `done` frames of type `assistant.done` arrived.
pub fn collect_until_done(rx: &Receiver<Frame>, done: usize, timeout: Duration) -> Vec<Frame> {
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    let mut seen = 0;
    while seen < done {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(f) => {
                if f.kind == "assistant.done" {
                    seen += 1;
                }
                out.push(f);
            }
            Err(_) => panic!("timed out after {seen}/{done} replies; frames so far: {out:#?}"),
        }
    }
    out
}

/// A host end of the direct tether: accepts the agent's connections on a unix socket.
pub struct FakeTetherHost {
    /// Frames the agent sent.
    frames: Receiver<Frame>,
    /// The current connection's writer.
    writer: Arc<Mutex<Option<Stream>>>,
    /// Responses to host requests (e.g. `health`).
    responses: Receiver<Message>,
    /// Connections accepted so far.
    pub connections: Arc<AtomicUsize>,
}

impl FakeTetherHost {
    /// Listen on `path`.
    pub fn bind(path: &Path) -> FakeTetherHost {
        let listener = Listener::bind(&Addr::Unix(path.to_path_buf())).expect("bind tether host");
        let (tx, rx) = unbounded();
        let (rtx, rrx) = unbounded();
        let writer = Arc::new(Mutex::new(None));
        let connections = Arc::new(AtomicUsize::new(0));
        let (w, c) = (Arc::clone(&writer), Arc::clone(&connections));
        std::thread::spawn(move || {
            while let Ok(s) = listener.accept() {
                *w.lock().unwrap() = Some(s.try_clone().unwrap());
                c.fetch_add(1, Ordering::SeqCst);
                let (tx, rtx) = (tx.clone(), rtx.clone());
                std::thread::spawn(move || read_frames(s, &tx, &rtx));
            }
        });
        FakeTetherHost {
            frames: rx,
            writer,
            responses: rrx,
            connections,
        }
    }

    /// Wait until the agent has connected `n` times in total.
    pub fn wait_connected(&self, n: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.connections.load(Ordering::SeqCst) < n {
            assert!(Instant::now() < deadline, "agent did not connect");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Send a raw line to the agent.
    pub fn send_line(&self, line: &[u8]) {
        let mut w = self.writer.lock().unwrap();
        w.as_mut().expect("agent connected").write_all(line).unwrap();
    }

    /// Send a frame as a `tether.frame` notification.
    pub fn send(&self, frame: &Frame) {
        self.send_line(&Message::tether_frame(frame).encode());
    }

    /// Frames from the agent.
    pub fn frames(&self) -> &Receiver<Frame> {
        &self.frames
    }

    /// JSON-RPC responses from the agent.
    pub fn responses(&self) -> &Receiver<Message> {
        &self.responses
    }

    /// Close the current connection (as a host restart would).
    pub fn drop_connection(&self) {
        if let Some(s) = self.writer.lock().unwrap().take() {
            let _ = s.shutdown();
        }
    }
}

fn read_frames(s: Stream, tx: &Sender<Frame>, rtx: &Sender<Message>) {
    for m in Messages::new(BufReader::new(s)) {
        match m.as_tether_frame() {
            Some(Ok(f)) => {
                let _ = tx.send(f);
            }
            Some(Err(_)) => {}
            None => {
                let _ = rtx.send(m);
            }
        }
    }
}
