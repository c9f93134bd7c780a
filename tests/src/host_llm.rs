//! What AegisVM does for `host:` models, as a stand-in: the harness's guest API
//! `POST /v1/llm/chat` (answered by aegisd's `llm.chat`: `{req_id}` at once, or 500
//! `{"error":{"message":"unknown host LLM provider: NAME"}}`), aegisd streaming the body to
//! the named server and sending each SSE `data:` line as an `llm.frame`, and the harness
//! POSTing every frame to the agent's `/v1/llm/recv` (upstream
//! internal/lifecycle/guest.go, internal/harness/rpc.go).

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use serde_json::{json, Value};

use crate::http::{Request, Responder};

/// The order frames reach the agent in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// As aegisd sent them.
    AsSent,
    /// `llm.done` ahead of the last delta: the real harness forwards each frame on a
    /// goroutine of its own, so this happens.
    DoneOvertakesLastDelta,
}

/// The harness and aegisd's part of `host:` models.
#[derive(Clone)]
pub struct HostModels {
    /// Server name → base URL (`http://127.0.0.1:PORT`, `/chat/completions` appended).
    servers: HashMap<String, String>,
    order: Order,
    /// Where the agent listens (`127.0.0.1:PORT`), set once it is started.
    pub agent_addr: Arc<Mutex<Option<String>>>,
    /// Every `llm.chat` request body, in order.
    pub requests: Arc<Mutex<Vec<Value>>>,
}

impl HostModels {
    /// Serve `servers` (name, base URL), delivering frames in `order`.
    pub fn new(servers: &[(&str, &str)], order: Order) -> HostModels {
        HostModels {
            servers: servers
                .iter()
                .map(|(n, u)| (n.to_string(), u.to_string()))
                .collect(),
            order,
            agent_addr: Arc::new(Mutex::new(None)),
            requests: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// Answer `POST /v1/llm/chat`.
    pub fn chat(&self, req: &Request, resp: Responder) {
        let params = req.json();
        self.requests.lock().unwrap().push(params.clone());
        let provider = params["provider"].as_str().unwrap_or("");
        let Some(base) = self.servers.get(provider).cloned() else {
            let message = format!("unknown host LLM provider: {provider}");
            return resp.json(500, &json!({"error": {"message": message}}));
        };
        let req_id = params["req_id"].as_str().unwrap_or("llm-1").to_string();
        resp.json(200, &json!({"req_id": req_id}));
        let me = self.clone();
        thread::spawn(move || me.stream(&base, &params["body"], &req_id));
    }

    fn stream(&self, base: &str, body: &Value, req_id: &str) {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .proxy(None)
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .into();
        let addr = self
            .agent_addr
            .lock()
            .unwrap()
            .clone()
            .expect("agent address set");
        let deliver = |f: &Value| {
            let _ = agent
                .post(format!("http://{addr}/v1/llm/recv"))
                .content_type("application/json")
                .send(f.to_string());
        };
        // The newest delta, held back while `llm.done` may still overtake it.
        let mut held: Option<Value> = None;
        let mut frame = |typ: &str, extra: Value| {
            let mut f = json!({"type": typ, "req_id": req_id});
            if let (Some(f), Value::Object(extra)) = (f.as_object_mut(), extra) {
                f.extend(extra);
            }
            match (self.order, typ) {
                (Order::AsSent, _) => deliver(&f),
                (Order::DoneOvertakesLastDelta, "llm.delta") => {
                    if let Some(h) = held.replace(f) {
                        deliver(&h);
                    }
                }
                (Order::DoneOvertakesLastDelta, _) => {
                    deliver(&f);
                    if let Some(h) = held.take() {
                        deliver(&h);
                    }
                }
            }
        };
        match agent
            .post(format!("{base}/chat/completions"))
            .content_type("application/json")
            .send(body.to_string())
        {
            Err(e) => frame("llm.error", json!({"error": e.to_string()})),
            Ok(r) if r.status() != 200 => {
                let status = r.status().as_u16();
                let text = r.into_body().read_to_string().unwrap_or_default();
                frame(
                    "llm.error",
                    json!({"error": format!("provider returned {status}: {text}")}),
                );
            }
            Ok(r) => {
                let mut cut = None;
                for line in BufReader::new(r.into_body().into_reader()).lines() {
                    match line {
                        Ok(l) => match l.strip_prefix("data: ") {
                            Some("[DONE]") => break,
                            Some(data) => frame("llm.delta", json!({"data": data})),
                            None => {}
                        },
                        Err(e) => {
                            cut = Some(e);
                            break;
                        }
                    }
                }
                match cut {
                    Some(e) => frame("llm.error", json!({"error": format!("stream read: {e}")})),
                    None => frame("llm.done", json!({})),
                }
            }
        }
    }
}
