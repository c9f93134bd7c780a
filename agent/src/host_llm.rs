//! Models on the host (`host:ollama/NAME`): the request and its streamed chunks travel
//! through the host instead of the guest's network, as in current AegisVM
//! (upstream specs/HOST_LLM_PROXY.md). The guest needs no route to the host's
//! `localhost:11434`, and an instance without any network can still use a local model.
//!
//! The request goes up once (`POST {harness}/v1/llm/chat`, or an `llm.chat` notification
//! on a direct tether) with an OpenAI Chat Completions body; the host answers with
//! `llm.frame`s carrying our `req_id`: `llm.delta` (one SSE `data:` line each), then
//! `llm.done` or `llm.error`. They arrive on the agent's listener (`POST /v1/llm/recv`)
//! or on the tether, and `Routes` hands each to the reply waiting for its `req_id`.
//!
//! The AegisVM harness forwards every frame on a goroutine of its own, so `llm.done` can
//! overtake the last deltas; `Route::settle` waits briefly for such stragglers.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{unbounded, Receiver, Sender};
use serde::Deserialize;

use crate::uplink::Uplink;

/// How long a harness-delivered reply waits after `llm.done` for deltas that overtook it.
const SETTLE: Duration = Duration::from_millis(40);

/// One `llm.frame`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct LlmFrame {
    /// `llm.delta`, `llm.done` or `llm.error`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The request it answers.
    #[serde(default)]
    pub req_id: String,
    /// `llm.delta`: one SSE data line from the provider (an OpenAI chunk).
    #[serde(default)]
    pub data: Option<String>,
    /// `llm.error`: what went wrong.
    #[serde(default)]
    pub error: Option<String>,
}

impl LlmFrame {
    /// A frame parsed from its JSON.
    pub fn parse(bytes: &[u8]) -> Result<LlmFrame, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    fn error(req_id: &str, why: &str) -> LlmFrame {
        LlmFrame {
            kind: "llm.error".into(),
            req_id: req_id.into(),
            data: None,
            error: Some(why.into()),
        }
    }
}

/// Replies waiting for frames, by `req_id`. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Routes {
    waiting: Arc<Mutex<HashMap<String, Sender<LlmFrame>>>>,
}

impl Routes {
    /// Start waiting for frames of `req_id`; they stop being routed when the `Route` drops.
    pub fn open(&self, req_id: &str) -> Route {
        let (tx, rx) = unbounded();
        self.lock().insert(req_id.to_string(), tx);
        Route {
            routes: self.clone(),
            ids: vec![req_id.to_string()],
            frames: rx,
        }
    }

    /// Hand `frame` to the reply waiting for it. False when none is (a straggler after
    /// the reply ended or was cancelled: expected, and dropped).
    pub fn deliver(&self, frame: LlmFrame) -> bool {
        let waiting = self.lock();
        match waiting.get(&frame.req_id) {
            Some(tx) => tx.send(frame).is_ok(),
            None => false,
        }
    }

    /// End every waiting request with an error: the connection that carried them is gone,
    /// so their frames never come (a direct tether that dropped).
    pub fn fail_all(&self, why: &str) {
        for (id, tx) in self.lock().iter() {
            let _ = tx.send(LlmFrame::error(id, why));
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Sender<LlmFrame>>> {
        // A panic elsewhere cannot leave the map half-changed: every change is one call.
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The frames of one request, in arrival order.
#[derive(Debug)]
pub struct Route {
    routes: Routes,
    ids: Vec<String>,
    /// Frames as they arrive.
    pub frames: Receiver<LlmFrame>,
}

impl Route {
    /// Also route frames carrying `req_id` here (a host that chose its own id).
    pub fn alias(&mut self, req_id: &str) {
        let mut waiting = self.routes.lock();
        if let Some(tx) = waiting.get(&self.ids[0]).cloned() {
            waiting.insert(req_id.to_string(), tx);
            self.ids.push(req_id.to_string());
        }
    }

    /// Frames that arrive within `SETTLE` of each other after `llm.done`.
    pub fn settle(&self) -> Vec<LlmFrame> {
        let mut late = Vec::new();
        while let Ok(f) = self.frames.recv_timeout(SETTLE) {
            late.push(f);
        }
        late
    }
}

impl Drop for Route {
    fn drop(&mut self) {
        let mut waiting = self.routes.lock();
        for id in &self.ids {
            waiting.remove(id);
        }
    }
}

/// A request the host did not take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// HTTP status from the harness; 0 when it could not be reached.
    pub status: u16,
    /// Its message.
    pub message: String,
}

/// The way to host models: where requests go and where their frames come back.
pub struct HostLink {
    /// Replies waiting for frames; the listener or the tether reader delivers to it.
    pub routes: Routes,
    uplink: Uplink,
    /// For the harness's guest API; built on the first request, not at start-up.
    agent: OnceLock<ureq::Agent>,
    counter: AtomicU64,
}

impl std::fmt::Debug for HostLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HostLink")
    }
}

impl HostLink {
    /// A link through `uplink`, delivering into `routes`.
    pub fn new(uplink: Uplink, routes: Routes) -> Arc<HostLink> {
        Arc::new(HostLink {
            routes,
            uplink,
            agent: OnceLock::new(),
            counter: AtomicU64::new(0),
        })
    }

    /// Whether frames can arrive out of order (the harness forwards each on its own).
    pub fn reorders(&self) -> bool {
        matches!(self.uplink, Uplink::Harness(_))
    }

    /// Tell the host to stop streaming `req_id`: the reply no longer reads it. Only our
    /// tether has a message for it (serve then closes the model server's connection, which
    /// stops the generation); under AegisVM the stream runs to its end on the host.
    pub fn cancel(&self, req_id: &str) {
        if let Uplink::Tether(link) = &self.uplink {
            let _ = link.notify("llm.cancel", &serde_json::json!({"req_id": req_id}));
        }
    }

    /// A fresh request id, unique across restarts of the agent.
    pub fn next_id(&self) -> String {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        format!("llm-{nanos}-{}", self.counter.fetch_add(1, Ordering::Relaxed))
    }

    /// Ask the host to stream `body` (an OpenAI Chat Completions request) from
    /// `provider`. Returns the id the host will use in its frames.
    pub fn request(
        &self,
        req_id: &str,
        provider: &str,
        model: &str,
        body: &serde_json::Value,
    ) -> Result<String, Refused> {
        let params = serde_json::json!({
            "provider": provider, "model": model, "req_id": req_id, "body": body,
        });
        match &self.uplink {
            Uplink::Tether(link) => {
                link.notify("llm.chat", &params)
                    .map_err(|message| Refused { status: 0, message })?;
                Ok(req_id.to_string())
            }
            Uplink::Harness(base) => {
                let agent = self.agent.get_or_init(|| {
                    tether::http::agent_config(base)
                        .http_status_as_error(false)
                        .timeout_global(Some(Duration::from_secs(30)))
                        // No idle connection may stay open: the harness counts one as activity.
                        .max_idle_connections(0)
                        .build()
                        .into()
                });
                let resp = agent
                    .post(format!("{base}/v1/llm/chat"))
                    .content_type("application/json")
                    .send(params.to_string())
                    .map_err(|e| Refused {
                        status: 0,
                        message: format!("harness unreachable: {e}"),
                    })?;
                let status = resp.status().as_u16();
                let text = tether::http::error_text(resp);
                let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
                if status != 200 {
                    // The Go harness answers {"error":{"message":...}}; accept a plain string too.
                    let message = v["error"]["message"]
                        .as_str()
                        .or(v["error"].as_str())
                        .unwrap_or(text.trim())
                        .to_string();
                    return Err(Refused { status, message });
                }
                match v["req_id"].as_str() {
                    Some(id) if !id.is_empty() => Ok(id.to_string()),
                    _ => Err(Refused {
                        status,
                        message: "the harness answered without a req_id".into(),
                    }),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delta(id: &str, data: &str) -> LlmFrame {
        LlmFrame {
            kind: "llm.delta".into(),
            req_id: id.into(),
            data: Some(data.into()),
            error: None,
        }
    }

    #[test]
    fn frames_reach_only_their_request_and_stop_when_it_ends() {
        let routes = Routes::default();
        let a = routes.open("a");
        let b = routes.open("b");
        assert!(routes.deliver(delta("a", "1")));
        assert!(routes.deliver(delta("b", "2")));
        assert!(!routes.deliver(delta("c", "3")), "nobody waits for c");
        assert_eq!(a.frames.try_recv().unwrap().data.as_deref(), Some("1"));
        assert_eq!(b.frames.try_recv().unwrap().data.as_deref(), Some("2"));
        assert!(a.frames.try_recv().is_err());
        drop(a);
        assert!(
            !routes.deliver(delta("a", "late")),
            "a straggler after the end is dropped"
        );
        assert!(routes.deliver(delta("b", "still")));
    }

    #[test]
    fn an_alias_routes_to_the_same_request_and_goes_with_it() {
        let routes = Routes::default();
        let mut r = routes.open("ours");
        r.alias("theirs");
        assert!(routes.deliver(delta("theirs", "x")));
        assert_eq!(r.frames.try_recv().unwrap().data.as_deref(), Some("x"));
        drop(r);
        assert!(!routes.deliver(delta("theirs", "y")));
        assert!(routes.waiting.lock().unwrap().is_empty());
    }

    #[test]
    fn fail_all_ends_every_waiting_request_with_an_error() {
        let routes = Routes::default();
        let (a, b) = (routes.open("a"), routes.open("b"));
        routes.fail_all("gone");
        for r in [&a, &b] {
            let f = r.frames.try_recv().unwrap();
            assert_eq!((f.kind.as_str(), f.error.as_deref()), ("llm.error", Some("gone")));
        }
    }

    #[test]
    fn frames_parse_as_aegisd_sends_them() {
        let f =
            LlmFrame::parse(br#"{"type":"llm.delta","req_id":"llm-1","data":"{\"choices\":[]}"}"#).unwrap();
        assert_eq!(f, delta("llm-1", r#"{"choices":[]}"#));
        let done = LlmFrame::parse(br#"{"req_id":"llm-1","type":"llm.done"}"#).unwrap();
        assert_eq!((done.kind.as_str(), done.data), ("llm.done", None));
        assert!(
            LlmFrame::parse(br#"{"req_id":"x"}"#).is_err(),
            "a frame needs its type"
        );
        assert!(LlmFrame::parse(b"not json").is_err());
    }

    #[test]
    fn ids_differ_within_one_nanosecond() {
        let link = HostLink::new(Uplink::Harness("http://127.0.0.1:1".into()), Routes::default());
        assert_ne!(link.next_id(), link.next_id());
    }
}
