//! Model servers on this machine for instances whose agent uses a `host:` model
//! (`host:ollama/llama3.2`), as aegisd serves them (upstream specs/HOST_LLM_PROXY.md).
//! The agent sends an `llm.chat` notification on its tether; serve POSTs the body to the
//! named server's `/chat/completions` and writes each SSE `data:` line back as an
//! `llm.frame` (`llm.delta`), then `llm.done` or `llm.error`. The instance needs no
//! network for it: with `--net none` it still reaches a local model.
//!
//! What an instance controls is confined: it picks a server by name, never a URL; the
//! body must be a JSON object (at most the tether's line limit); a connection has at most
//! `MAX_STREAMS` streams at once; a line over `MAX_LINE` ends its stream; every stream
//! ends with the connection that asked for it.
//!
//! [ours] An `llm.cancel {req_id}` notification (a reply the user stopped, or one the
//! agent gave up on) ends that stream at once, even while the server sends nothing (a
//! model loading, or thinking): the connection to the model server closes
//! ([`tether::cut`]), which stops Ollama, llama.cpp and vLLM generating. So does the end
//! of the agent's connection. aegisd has no such message, and an agent under it sends
//! none.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Read};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Deserialize;
use serde_json::value::RawValue;
use tether::cut::{Cut, Lanes};
use tether::rpc::Message;

/// The servers aegisd knows, by name: Ollama, LM Studio and vLLM at their default ports.
pub const DEFAULTS: [(&str, &str); 3] = [
    ("ollama", "http://localhost:11434/v1"),
    ("lmstudio", "http://localhost:1234/v1"),
    ("vllm", "http://localhost:8000/v1"),
];

/// Streams one agent connection may have open at once.
pub const MAX_STREAMS: usize = 4;
/// Longest SSE line accepted from a model server.
const MAX_LINE: u64 = 256 * 1024;
/// Longest wait for a model server's first byte or next line: loading a model from
/// disk takes a while.
const READ_TIMEOUT: Duration = Duration::from_secs(300);

/// The model servers instances may use.
#[derive(Debug)]
pub struct HostModels {
    /// Base URLs (`.../v1`) by name.
    servers: BTreeMap<String, String>,
    /// An agent per stream, so one stream can be closed alone.
    lanes: Lanes,
}

/// One agent connection's side: where frames go and whether it still stands.
#[derive(Clone)]
pub struct Conn {
    /// Writes one `llm.frame` notification to the agent (through its supervisor).
    pub send: Arc<dyn Fn(Message) + Send + Sync>,
    /// Set when the connection ended: its streams stop.
    pub closed: Arc<AtomicBool>,
    /// Streams running for it.
    pub streams: Arc<Streams>,
}

/// The streams of one connection, by `req_id`, each with the cut that ends it.
#[derive(Debug, Default)]
pub struct Streams(Mutex<HashMap<String, Cut>>);

impl Streams {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Cut>> {
        // Every change is one call: a panic elsewhere cannot leave the map half-changed.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Count `req_id` in, unless the connection has its fill or that id runs already.
    fn begin(&self, req_id: &str) -> Result<Cut, String> {
        let mut running = self.lock();
        if running.len() >= MAX_STREAMS {
            return Err(format!("too many model requests at once (at most {MAX_STREAMS})"));
        }
        if running.contains_key(req_id) {
            return Err(format!("a request {req_id} is already streaming"));
        }
        let cut = Cut::new();
        running.insert(req_id.to_string(), cut.clone());
        Ok(cut)
    }

    fn end(&self, req_id: &str) {
        self.lock().remove(req_id);
    }

    /// Stop stream `req_id` now; false when none runs (it ended already).
    pub fn cancel(&self, req_id: &str) -> bool {
        let cut = self.lock().get(req_id).cloned();
        cut.inspect(Cut::fire).is_some()
    }

    /// Stop every stream now (their connection ended).
    pub fn cancel_all(&self) {
        let cuts: Vec<Cut> = self.lock().values().cloned().collect();
        cuts.iter().for_each(Cut::fire);
    }

    /// How many run.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.lock().len()
    }
}

#[derive(Deserialize)]
struct Chat<'a> {
    provider: String,
    #[serde(default)]
    req_id: Option<String>,
    #[serde(borrow)]
    body: &'a RawValue,
}

/// Parse `NAME=URL` of `--host-llm`.
pub fn parse_server(arg: &str) -> Result<(String, String), String> {
    let (name, url) = arg.split_once('=').ok_or_else(|| {
        format!("--host-llm {arg:?}: expected NAME=URL, as ollama=http://localhost:11434/v1")
    })?;
    let name_ok = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if !name_ok {
        return Err(format!(
            "--host-llm {arg:?}: NAME must be lower-case letters, digits, - or _"
        ));
    }
    if !url.starts_with("http://") {
        return Err(format!(
            "--host-llm {arg:?}: URL must start with http:// (a model server on this machine or the LAN)"
        ));
    }
    Ok((name.to_string(), url.trim_end_matches('/').to_string()))
}

impl HostModels {
    /// The default servers, with `extra` (`--host-llm`) added or replacing them.
    pub fn new(extra: &[(String, String)]) -> HostModels {
        let mut servers: BTreeMap<String, String> = DEFAULTS
            .iter()
            .map(|(n, u)| (n.to_string(), u.to_string()))
            .collect();
        servers.extend(extra.iter().cloned());
        let config = tether::http::agent_config("http://localhost")
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(10)))
            .timeout_recv_response(Some(READ_TIMEOUT))
            .timeout_per_read(Some(READ_TIMEOUT))
            // A finished stream leaves no connection behind.
            .max_idle_connections(0)
            .build();
        HostModels {
            servers,
            lanes: Lanes::new(config),
        }
    }

    /// `name=url, ...` for serve's start-up line.
    pub fn describe(&self) -> String {
        let all: Vec<String> = self.servers.iter().map(|(n, u)| format!("{n}={u}")).collect();
        all.join(", ")
    }

    /// Start the stream an `llm.chat` notification asks for; its frames go to `conn`.
    pub fn start(self: &Arc<Self>, params: Option<&RawValue>, conn: &Conn) {
        let chat = match params.map(|p| serde_json::from_str::<Chat>(p.get())) {
            Some(Ok(c)) => c,
            Some(Err(e)) => return log::warn!("llm.chat: invalid request: {e}"),
            None => return log::warn!("llm.chat without params"),
        };
        let req_id = chat
            .req_id
            .filter(|id| !id.is_empty() && id.len() <= 128)
            .unwrap_or_else(|| {
                let nanos = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos());
                format!("llm-{nanos}")
            });
        let fail = |why: String| (conn.send)(frame("llm.error", &req_id, "error", &why));
        let Some(base) = self.servers.get(&chat.provider).cloned() else {
            // aegisd's words, which agents recognise as final.
            return fail(format!("unknown host LLM provider: {}", chat.provider));
        };
        if !chat.body.get().trim_start().starts_with('{') {
            return fail("llm.chat: body must be a JSON object (a chat completions request)".into());
        }
        let cut = match conn.streams.begin(&req_id) {
            Ok(cut) => cut,
            Err(why) => return fail(why),
        };
        let (me, conn2, body) = (Arc::clone(self), conn.clone(), chat.body.get().to_string());
        let (id2, name) = (req_id.clone(), chat.provider.clone());
        let spawned = thread::Builder::new()
            .name("host-llm".into())
            .stack_size(128 * 1024)
            .spawn(move || {
                me.stream(&name, &base, &body, &id2, &conn2, &cut);
                conn2.streams.end(&id2);
            });
        if let Err(e) = spawned {
            conn.streams.end(&req_id);
            fail(format!("no thread for the request: {e}"));
        }
    }

    /// Handle an `llm.cancel` notification of `conn`.
    pub fn cancel(params: Option<&RawValue>, conn: &Conn) {
        #[derive(Deserialize)]
        struct Cancel {
            req_id: String,
        }
        match params.map(|p| serde_json::from_str::<Cancel>(p.get())) {
            Some(Ok(c)) => {
                if conn.streams.cancel(&c.req_id) {
                    log::debug!("llm {}: cancelled by the agent", c.req_id);
                }
            }
            _ => log::warn!("llm.cancel: invalid request (expected {{\"req_id\": ...}})"),
        }
    }

    fn stream(&self, name: &str, base: &str, body: &str, req_id: &str, conn: &Conn, cut: &Cut) {
        let send = |typ: &str, key: &str, value: &str| (conn.send)(frame(typ, req_id, key, value));
        let Some(agent) = self.lanes.lend(cut) else {
            return log::debug!("llm {req_id}: cancelled before it began");
        };
        let resp = agent
            .post(format!("{base}/chat/completions"))
            .content_type("application/json")
            .header("accept", "text/event-stream")
            .send(body);
        let resp = match resp {
            Ok(r) => r,
            Err(_) if cut.fired() => return log::debug!("llm {req_id}: cancelled; request dropped"),
            Err(e) => return send("llm.error", "error", &format!("{name}: {e}")),
        };
        let status = resp.status().as_u16();
        if status != 200 {
            let text = tether::http::error_text(resp);
            return send(
                "llm.error",
                "error",
                &format!("provider returned {status}: {}", text.trim()),
            );
        }
        let mut reader = BufReader::new(resp.into_body().into_reader());
        let mut line = Vec::new();
        loop {
            line.clear();
            let read = (&mut reader).take(MAX_LINE + 1).read_until(b'\n', &mut line);
            // Returning drops the response, which closes the connection: the server stops.
            if conn.closed.load(Ordering::SeqCst) {
                return log::debug!("llm {req_id}: the agent's connection ended; stream dropped");
            }
            if cut.fired() {
                return log::debug!("llm {req_id}: cancelled; stream dropped");
            }
            match read {
                Ok(0) => break,
                Ok(n) if n as u64 > MAX_LINE => {
                    return send(
                        "llm.error",
                        "error",
                        &format!("stream read: a line over {MAX_LINE} bytes"),
                    )
                }
                Ok(_) => {}
                Err(e) => return send("llm.error", "error", &format!("stream read: {e}")),
            }
            let text = String::from_utf8_lossy(&line);
            let Some(data) = text.trim_end_matches(['\r', '\n']).strip_prefix("data:") else {
                continue;
            };
            let data = data.strip_prefix(' ').unwrap_or(data);
            if data == "[DONE]" {
                break;
            }
            send("llm.delta", "data", data);
        }
        (conn.send)(frame("llm.done", req_id, "", ""));
    }
}

fn frame(typ: &str, req_id: &str, key: &str, value: &str) -> Message {
    let mut f = serde_json::json!({"type": typ, "req_id": req_id});
    if !key.is_empty() {
        f[key] = value.into();
    }
    Message::notification("llm.frame", &f)
}

#[cfg(test)]
mod tests {
    use super::*;
    use aegis_e2e::http::Server;
    use crossbeam_channel::{unbounded, Receiver};

    /// A connection whose frames land on a channel, as (type, req_id, data or error).
    fn conn() -> (Conn, Receiver<(String, String, String)>) {
        let (tx, rx) = unbounded();
        let send = move |m: Message| {
            let Message::Notification { method, params } = m else {
                panic!("{m:?}")
            };
            assert_eq!(method, "llm.frame");
            let v: serde_json::Value = serde_json::from_str(params.unwrap().get()).unwrap();
            let text = v["data"]
                .as_str()
                .or(v["error"].as_str())
                .unwrap_or("")
                .to_string();
            let _ = tx.send((
                v["type"].as_str().unwrap().into(),
                v["req_id"].as_str().unwrap().into(),
                text,
            ));
        };
        let c = Conn {
            send: Arc::new(send),
            closed: Arc::new(AtomicBool::new(false)),
            streams: Arc::new(Streams::default()),
        };
        (c, rx)
    }

    fn chat(provider: &str, req_id: &str, body: &str) -> Box<RawValue> {
        let v = format!(r#"{{"provider":"{provider}","model":"m","req_id":"{req_id}","body":{body}}}"#);
        RawValue::from_string(v).unwrap()
    }

    fn next(rx: &Receiver<(String, String, String)>) -> (String, String, String) {
        rx.recv_timeout(Duration::from_secs(10)).expect("a frame")
    }

    fn models(server: &Server) -> Arc<HostModels> {
        Arc::new(HostModels::new(&[("local".into(), server.url.clone())]))
    }

    #[test]
    fn data_lines_become_deltas_then_done() {
        let server = Server::start(|req, resp| {
            assert_eq!(req.path, "/chat/completions");
            assert_eq!(req.json()["model"], "m");
            let mut r = resp.start_chunked(200, "text/event-stream");
            r.chunk(b": keep-alive\n\ndata: {\"a\":1}\r\n\ndata:{\"b\"");
            r.chunk(b":2}\n\nevent: x\ndata: [DONE]\n\ndata: after-done\n\n");
            r.finish();
        });
        let (c, rx) = conn();
        models(&server).start(Some(&chat("local", "r1", r#"{"model":"m","stream":true}"#)), &c);
        assert_eq!(next(&rx), ("llm.delta".into(), "r1".into(), r#"{"a":1}"#.into()));
        assert_eq!(next(&rx), ("llm.delta".into(), "r1".into(), r#"{"b":2}"#.into()));
        assert_eq!(next(&rx), ("llm.done".into(), "r1".into(), String::new()));
        assert!(
            rx.recv_timeout(Duration::from_millis(200)).is_err(),
            "nothing after [DONE]"
        );
    }

    #[test]
    fn an_instance_names_a_server_never_a_url_and_sends_an_object() {
        let server =
            Server::start(|_, resp| resp.json(500, &serde_json::json!({"error": "must not be reached"})));
        let m = models(&server);
        let (c, rx) = conn();
        m.start(Some(&chat("http://127.0.0.1:22", "r1", "{}")), &c);
        assert_eq!(
            next(&rx),
            (
                "llm.error".into(),
                "r1".into(),
                "unknown host LLM provider: http://127.0.0.1:22".into()
            )
        );
        m.start(Some(&chat("local", "r2", r#""a string""#)), &c);
        assert!(next(&rx).2.contains("body must be a JSON object"));
        // Not even a frame for a request that is not one.
        m.start(Some(&RawValue::from_string("[1]".into()).unwrap()), &c);
        m.start(None, &c);
        assert!(rx.recv_timeout(Duration::from_millis(200)).is_err());
        // The server's refusal comes back in aegisd's words.
        m.start(Some(&chat("local", "r3", "{}")), &c);
        assert_eq!(
            next(&rx),
            (
                "llm.error".into(),
                "r3".into(),
                r#"provider returned 500: {"error":"must not be reached"}"#.into()
            )
        );
    }

    #[test]
    fn streams_are_capped_per_connection_and_the_cap_frees_up() {
        // A server that takes requests and answers only when told.
        let (go_tx, go_rx) = unbounded::<()>();
        let go_rx = std::sync::Mutex::new(go_rx);
        let server = Server::start(move |_, resp| {
            let _ = go_rx.lock().unwrap().recv_timeout(Duration::from_secs(10));
            let mut r = resp.start_chunked(200, "text/event-stream");
            r.chunk(b"data: x\n\n");
            r.finish();
        });
        let m = models(&server);
        let (c, rx) = conn();
        for i in 0..MAX_STREAMS {
            m.start(Some(&chat("local", &format!("r{i}"), "{}")), &c);
        }
        m.start(Some(&chat("local", "over", "{}")), &c);
        let refused = next(&rx);
        assert_eq!((refused.0.as_str(), refused.1.as_str()), ("llm.error", "over"));
        assert!(
            refused.2.contains("too many model requests at once"),
            "{refused:?}"
        );
        for _ in 0..MAX_STREAMS {
            go_tx.send(()).unwrap();
        }
        let mut done = 0;
        while done < MAX_STREAMS {
            if next(&rx).0 == "llm.done" {
                done += 1;
            }
        }
        while c.streams.len() > 0 {
            thread::sleep(Duration::from_millis(5));
        }
        go_tx.send(()).unwrap();
        m.start(Some(&chat("local", "later", "{}")), &c);
        assert_eq!(next(&rx), ("llm.delta".into(), "later".into(), "x".into()));
    }

    #[test]
    fn an_overlong_line_ends_the_stream() {
        let server = Server::start(|_, resp| {
            let mut r = resp.start_chunked(200, "text/event-stream");
            let mut line = b"data: ".to_vec();
            line.resize(MAX_LINE as usize + 10, b'a');
            r.chunk(&line);
            r.chunk(b"\n\ndata: later\n\n");
            r.finish();
        });
        let (c, rx) = conn();
        models(&server).start(Some(&chat("local", "r1", "{}")), &c);
        let f = next(&rx);
        assert_eq!(f.0, "llm.error");
        assert!(f.2.contains("a line over 262144 bytes"), "{f:?}");
        assert!(rx.recv_timeout(Duration::from_millis(200)).is_err());
    }

    #[test]
    fn a_stream_ends_with_its_connection() {
        let (next_tx, next_rx) = unbounded::<()>();
        let next_rx = std::sync::Mutex::new(next_rx);
        let server = Server::start(move |_, resp| {
            let mut r = resp.start_chunked(200, "text/event-stream");
            r.chunk(b"data: one\n\n");
            let _ = next_rx.lock().unwrap().recv_timeout(Duration::from_secs(10));
            r.chunk(b"data: two\n\n");
            r.finish();
        });
        let (c, rx) = conn();
        models(&server).start(Some(&chat("local", "r1", "{}")), &c);
        assert_eq!(next(&rx).2, "one");
        c.closed.store(true, Ordering::SeqCst);
        next_tx.send(()).unwrap();
        assert!(
            rx.recv_timeout(Duration::from_millis(500)).is_err(),
            "no more frames, no done"
        );
        while c.streams.len() > 0 {
            thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn a_cancelled_stream_stops_and_closes_the_servers_connection() {
        // A model generating one token every 20 ms until its client goes away.
        let (gone_tx, gone_rx) = unbounded::<usize>();
        let server = Server::start(move |_, resp| {
            let mut r = resp.start_chunked(200, "text/event-stream");
            for i in 0..500 {
                if !r.chunk(format!("data: t{i}\n\n").as_bytes()) {
                    let _ = gone_tx.send(i);
                    return;
                }
                thread::sleep(Duration::from_millis(20));
            }
            r.finish();
        });
        let m = models(&server);
        let (c, rx) = conn();
        m.start(Some(&chat("local", "r1", "{}")), &c);
        assert_eq!(next(&rx).2, "t0");
        // The same id twice is refused while the first runs.
        m.start(Some(&chat("local", "r1", "{}")), &c);
        let refused = next(&rx);
        assert_eq!(refused.0, "llm.error");
        assert!(refused.2.contains("already streaming"), "{refused:?}");
        assert_eq!(next(&rx).2, "t1");
        let cancel = |id: &str| {
            let p = RawValue::from_string(format!(r#"{{"req_id":"{id}"}}"#)).unwrap();
            HostModels::cancel(Some(&p), &c);
        };
        cancel("someone-else");
        HostModels::cancel(None, &c);
        assert_eq!(next(&rx).2, "t2", "other ids and bad params change nothing");
        cancel("r1");
        // The server sees its client go within a token or two, and no done comes.
        let stopped_at = gone_rx
            .recv_timeout(Duration::from_secs(5))
            .expect("the server's client went away");
        assert!(stopped_at < 10, "{stopped_at}");
        while let Ok(f) = rx.recv_timeout(Duration::from_millis(100)) {
            assert_eq!(f.0, "llm.delta", "no done after a cancel");
        }
        assert_eq!(c.streams.len(), 0);
        assert!(!c.streams.cancel("r1"), "nothing left to cancel");
    }

    #[test]
    fn a_silent_stream_is_closed_at_once_by_a_cancel_or_the_end_of_its_connection() {
        // A model loading from disk, or thinking, sends nothing for minutes: the stream
        // must not wait for its next line to learn it is unwanted.
        let (gone_tx, gone_rx) = unbounded::<()>();
        let server = Server::start(move |_, resp| {
            let r = resp.start_chunked(200, "text/event-stream");
            if r.closed_within(Duration::from_secs(30)) {
                let _ = gone_tx.send(());
            }
        });
        let m = models(&server);
        let (c, rx) = conn();
        let p = RawValue::from_string(r#"{"req_id":"r1"}"#.to_string()).unwrap();
        m.start(Some(&chat("local", "r1", "{}")), &c);
        m.start(Some(&chat("local", "r2", "{}")), &c);
        while c.streams.len() < 2 {
            thread::sleep(Duration::from_millis(5));
        }
        thread::sleep(Duration::from_millis(100));
        HostModels::cancel(Some(&p), &c);
        gone_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("r1's server connection closed");
        assert!(
            gone_rx.recv_timeout(Duration::from_millis(300)).is_err(),
            "r2 still runs"
        );
        // The agent's connection ends: what it asked for ends with it.
        c.closed.store(true, Ordering::SeqCst);
        c.streams.cancel_all();
        gone_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("r2's server connection closed");
        while c.streams.len() > 0 {
            thread::sleep(Duration::from_millis(5));
        }
        assert!(
            rx.try_recv().is_err(),
            "nothing reaches the agent: {:?}",
            rx.try_recv()
        );
    }

    #[test]
    fn server_flags_name_a_server_and_an_http_url() {
        assert_eq!(
            parse_server("llamacpp=http://127.0.0.1:8080/v1/").unwrap(),
            ("llamacpp".to_string(), "http://127.0.0.1:8080/v1".to_string())
        );
        for bad in [
            "ollama",
            "=http://x",
            "Ollama=http://x",
            "a b=http://x",
            "x=https://x",
            "x=file:///etc",
        ] {
            assert!(parse_server(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn flags_add_servers_and_replace_defaults() {
        let m = HostModels::new(&[
            ("ollama".into(), "http://127.0.0.1:9/v1".into()),
            ("llamacpp".into(), "http://127.0.0.1:8080/v1".into()),
        ]);
        assert_eq!(
            m.describe(),
            "llamacpp=http://127.0.0.1:8080/v1, lmstudio=http://localhost:1234/v1, \
             ollama=http://127.0.0.1:9/v1, vllm=http://localhost:8000/v1"
        );
    }
}
