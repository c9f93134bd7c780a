//! MCP over Streamable HTTP (revisions 2025-06-18 and 2026-07-28): a server at a URL (a
//! hosted one, or one on the LAN) instead of a child process.
//!
//! Every message is a `POST` to the server's one endpoint, accepting JSON or an SSE
//! stream. A request's answer is either one JSON message, or a stream whose events may
//! carry the server's own requests (`ping`, `roots/list`, a question for the user: each
//! answered with a `POST` of its own) and notifications before the answer. A
//! notification is acknowledged with 202.
//!
//! Duties:
//! 1. keep the session: the `Mcp-Session-Id` the server gives with its `initialize`
//!    answer goes with every later message, with `MCP-Protocol-Version`; a 404 for it
//!    means the session is over, and the caller starts a new one;
//! 2. bound every exchange as the stdio transport does (timeout, cancel), telling the
//!    server with `notifications/cancelled` when the agent stops waiting, and closing the
//!    exchange's connection at once ([`tether::cut`]); a stream that ends without the
//!    answer is an error, never a hang;
//! 3. end the session with `DELETE` when the connection is dropped;
//! 4. never log a header's value: they carry the user's tokens.
//!
//! With a modern server ([`HttpConn::set_modern`]) there is no session: every request
//! carries `MCP-Protocol-Version: 2026-07-28`, `Mcp-Method`, `Mcp-Name` (a call's tool)
//! and the `Mcp-Param-*` headers its caller gives, and a request given up on has its
//! connection closed at once, which is how that revision cancels.
//!
//! Header values and the URL may name environment variables (`${GITHUB_TOKEN}`,
//! `${NAME:-default}`), so tokens stay in secrets rather than agent.json ([`expand`]).

use std::io::Read;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use crossbeam_channel::bounded;
use serde_json::{json, Value};
use tether::cut::{Cut, Lanes};
use tether::rpc::Message;

use crate::mcp::{McpError, Wait};
use crate::mcp_input::{Desk, Question};

/// Largest answer read, JSON or a whole stream.
const MAX_ANSWER: u64 = 8 * 1024 * 1024;
/// Longest wait for a notification's acknowledgement or the session's `DELETE`.
const SHORT_TIMEOUT: Duration = Duration::from_secs(10);

/// A session with one server.
pub struct HttpConn {
    inner: Arc<Inner>,
}

struct Inner {
    /// The server's name in agent.json, for logs.
    name: String,
    url: String,
    /// Extra headers (`Authorization`), values expanded; never logged.
    headers: Vec<(String, String)>,
    /// An agent per exchange in flight, so one given up on can be closed alone.
    lanes: Lanes,
    /// `Mcp-Session-Id` once the server gave one.
    session: Mutex<Option<String>>,
    /// The revision agreed in `initialize`, sent as `MCP-Protocol-Version` after it.
    protocol: Mutex<Option<String>>,
    next_id: AtomicU64,
    /// Cleared when the server forgot the session or could not be reached.
    alive: AtomicBool,
    /// The server speaks the stateless revision.
    modern: AtomicBool,
    /// Set when the server says its tools or prompts changed.
    changed: Arc<crate::mcp::Changes>,
    /// Where a stream's reader leaves the server's questions for the request waiting.
    desk: Desk,
    /// The roots the server is told of.
    workspace: PathBuf,
}

impl HttpConn {
    /// A connection to `url` with `headers`; `longest` bounds any one exchange (a call's
    /// timeout, and the user's time to answer a question), after which its thread gives
    /// up even when no one waits for it; `changed` says what the server said changed (its
    /// tools, its prompts); `workspace` is the root it is told of.
    pub fn new(
        name: &str,
        url: &str,
        headers: Vec<(String, String)>,
        longest: Duration,
        changed: Arc<crate::mcp::Changes>,
        workspace: PathBuf,
    ) -> HttpConn {
        HttpConn {
            inner: Arc::new(Inner {
                name: name.to_string(),
                url: url.to_string(),
                headers,
                lanes: Lanes::new(crate::tools::api_config(url, longest + SHORT_TIMEOUT)),
                session: Mutex::new(None),
                protocol: Mutex::new(None),
                next_id: AtomicU64::new(1),
                alive: AtomicBool::new(true),
                modern: AtomicBool::new(false),
                changed,
                desk: Desk::default(),
                workspace,
            }),
        }
    }

    /// Whether the session still stands.
    pub fn alive(&self) -> bool {
        self.inner.alive.load(Ordering::SeqCst)
    }

    /// From now on, send `MCP-Protocol-Version: version`.
    pub fn agreed(&self, version: &str) {
        *lock(&self.inner.protocol) = Some(version.to_string());
    }

    /// Speak the stateless revision from now on (and forget any session: none is kept
    /// while modern, so a refused probe leaves none behind either).
    pub fn set_modern(&self, modern: bool) {
        self.inner.modern.store(modern, Ordering::SeqCst);
        if modern {
            *lock(&self.inner.session) = None;
        }
    }

    /// Send request `wait.method` (with `headers` too) and wait for its answer as `wait`
    /// says.
    pub fn request(
        &self,
        params: &Value,
        headers: Vec<(String, String)>,
        wait: Wait,
    ) -> Result<Value, McpError> {
        let method = wait.method;
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let (_open, questions) = wait.open(&self.inner.desk);
        let mut headers = headers;
        if self.inner.modern.load(Ordering::SeqCst) {
            headers.push(("mcp-method".into(), method.into()));
            let name = match method {
                "tools/call" | "prompts/get" => params["name"].as_str(),
                "resources/read" => params["uri"].as_str(),
                _ => None,
            };
            if let Some(name) = name {
                headers.push(("mcp-name".into(), crate::mcp_era::header_value(name)));
            }
        }
        let body = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}).to_string();
        let (tx, rx) = bounded(1);
        let inner = Arc::clone(&self.inner);
        let cut = Cut::new();
        let exchange_cut = cut.clone();
        thread::Builder::new()
            .name("mcp-http".into())
            .stack_size(256 * 1024)
            .spawn(move || {
                let _ = tx.send(inner.exchange(id, &body, &headers, &exchange_cut));
            })
            .map_err(McpError::Spawn)?;
        let reply = |id, r: &Value| {
            self.inner.reply(id, r);
            Ok(())
        };
        let read = |r: Result<_, _>| r.unwrap_or(Err(McpError::Gone));
        wait.for_answer(&rx, read, (&questions, reply), |reason| {
            // Closing the connection is the stateless revision's cancellation; the older
            // one asks for the notification (a closed stream is not a cancel there), and
            // closing frees the exchange's thread and connection all the same.
            if !self.inner.modern.load(Ordering::SeqCst) {
                self.inner.cancelled(id, reason);
            }
            cut.fire();
        })
    }

    /// Send notification `method`.
    pub fn notify(&self, method: &str, params: &Value) -> Result<(), McpError> {
        let body = json!({"jsonrpc": "2.0", "method": method, "params": params}).to_string();
        self.inner.post_expecting_nothing(&body)
    }
}

impl Drop for HttpConn {
    fn drop(&mut self) {
        if let Some(session) = lock(&self.inner.session).take() {
            self.inner.end(session);
        }
    }
}

impl Inner {
    /// End `session` with a `DELETE`, in the background: the server may keep state per
    /// session, and nobody should wait for it.
    fn end(self: &Arc<Self>, session: String) {
        let inner = Arc::clone(self);
        let ended = thread::Builder::new()
            .name("mcp-http-end".into())
            .stack_size(128 * 1024)
            .spawn(move || {
                let lane = inner.lanes.any();
                let mut req = lane.delete(&inner.url).header("mcp-session-id", &session);
                if let Some(v) = lock(&inner.protocol).as_deref() {
                    req = req.header("mcp-protocol-version", v);
                }
                for (k, v) in &inner.headers {
                    req = req.header(k, v);
                }
                match req.call() {
                    Ok(r) => log::debug!(
                        "MCP [{}]: session ended (HTTP {})",
                        inner.name,
                        r.status().as_u16()
                    ),
                    Err(e) => log::debug!("MCP [{}]: ending the session failed: {e}", inner.name),
                }
            });
        if let Err(e) = ended {
            log::debug!("MCP [{}]: cannot end the session: {e}", self.name);
        }
    }

    /// `POST body` on `agent` with the session's headers (the revision's, for a modern
    /// server) and `extra`.
    fn post(
        &self,
        agent: &ureq::Agent,
        body: &str,
        extra: &[(String, String)],
    ) -> Result<ureq::http::Response<ureq::Body>, ureq::Error> {
        let mut req = agent
            .post(&self.url)
            .header("accept", "application/json, text/event-stream")
            .content_type("application/json");
        if self.modern.load(Ordering::SeqCst) {
            req = req.header("mcp-protocol-version", crate::mcp_era::MODERN);
        } else {
            if let Some(s) = lock(&self.session).as_deref() {
                req = req.header("mcp-session-id", s);
            }
            if let Some(v) = lock(&self.protocol).as_deref() {
                req = req.header("mcp-protocol-version", v);
            }
        }
        for (k, v) in self.headers.iter().chain(extra) {
            req = req.header(k, v);
        }
        req.send(body)
    }

    /// The server could not be reached (`e`): the connection is over.
    fn unreachable(&self, e: &ureq::Error) -> McpError {
        self.alive.store(false, Ordering::SeqCst);
        McpError::Transport(crate::tools::transport(e))
    }

    /// A refusal, or the end of the session (404 to a message that carried it). A body
    /// holding a JSON-RPC error is kept whole: a modern server's error names what it
    /// wants (the versions it speaks).
    fn refused(&self, resp: ureq::http::Response<ureq::Body>) -> McpError {
        let status = resp.status().as_u16();
        if status == 404 && !self.modern.load(Ordering::SeqCst) && lock(&self.session).take().is_some() {
            // Over on the server's side: nothing to end with a DELETE.
            self.alive.store(false, Ordering::SeqCst);
            return McpError::SessionEnded;
        }
        let challenge = resp
            .headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok())
            .map(crate::oauth_discovery::Challenge::parse)
            .unwrap_or_default();
        let text = tether::http::error_text(resp);
        // A token refused (401), or one lacking the scopes this request needs (403 with
        // the Bearer challenge's word for it): a sign-in may help.
        if status == 401 || challenge.insufficient_scope() {
            return McpError::Unauthorized(Box::new(challenge), tether::http::error_words(&text));
        }
        let rpc = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| serde_json::from_value::<tether::rpc::RpcError>(v["error"].clone()).ok());
        match rpc {
            Some(e) => McpError::HttpRpc(status, e),
            None => McpError::Http(status, tether::http::error_words(&text)),
        }
    }

    /// A message that expects no answer (a notification, our answer to the server).
    fn post_expecting_nothing(&self, body: &str) -> Result<(), McpError> {
        let lane = self.lanes.any();
        let resp = self.post(&lane, body, &[]).map_err(|e| self.unreachable(&e))?;
        match resp.status().as_u16() {
            200..=299 => Ok(()),
            _ => Err(self.refused(resp)),
        }
    }

    /// One request `id` (`body`, with `headers`) and its answer, on a connection `cut`
    /// closes.
    fn exchange(
        self: &Arc<Self>,
        id: u64,
        body: &str,
        headers: &[(String, String)],
        cut: &Cut,
    ) -> Result<Value, McpError> {
        let lane = self.lanes.lend(cut).ok_or(McpError::Cancelled)?;
        // Not reaching the server ends the connection; our own cut does not.
        let resp = self.post(&lane, body, headers).map_err(|e| match cut.fired() {
            true => McpError::Cancelled,
            false => self.unreachable(&e),
        })?;
        let session = resp.headers().get("mcp-session-id").and_then(|v| v.to_str().ok());
        match session.map(str::to_string) {
            // A server of the earlier kind may open a session for the era probe too (any
            // first request): nothing will use it, so it ends at once rather than live on.
            Some(s) if self.modern.load(Ordering::SeqCst) => self.end(s),
            Some(s) if resp.status().as_u16() == 200 => *lock(&self.session) = Some(s),
            _ => {}
        }
        if resp.status().as_u16() != 200 {
            return Err(self.refused(resp));
        }
        let streamed = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|t| t.trim_start().starts_with("text/event-stream"));
        let reader = resp.into_body().into_with_config().limit(MAX_ANSWER).reader();
        if streamed {
            self.answer_from_stream(id, reader)
                .map_err(|e| cancelled_or(cut, e))
        } else {
            let mut text = Vec::new();
            { reader }
                .read_to_end(&mut text)
                .map_err(|e| cancelled_or(cut, McpError::Transport(format!("reading the answer: {e}"))))?;
            match decode(&text)? {
                Message::Response { id: got, outcome } if got == json!(id) => outcome_value(outcome),
                _ => Err(McpError::Protocol(
                    "the answer is not the response to the request".into(),
                )),
            }
        }
    }

    /// Read an SSE stream until the response to `id`, answering what the server asks on
    /// the way.
    fn answer_from_stream(&self, id: u64, mut reader: impl Read) -> Result<Value, McpError> {
        let mut parser = crate::sse::Parser::new();
        let mut events = Vec::new();
        let mut buf = [0u8; 8192];
        loop {
            let n = reader
                .read(&mut buf)
                .map_err(|e| McpError::Transport(format!("reading the stream: {e}")))?;
            if n == 0 {
                return Err(McpError::Protocol("the stream ended without the answer".into()));
            }
            parser
                .feed(&buf[..n], &mut events)
                .map_err(|e| McpError::Protocol(e.to_string()))?;
            for event in events.drain(..) {
                // Events of another type, or without data (a priming event), are not messages.
                if event.event.as_deref().is_some_and(|t| t != "message") || event.data.trim().is_empty() {
                    continue;
                }
                match decode(event.data.as_bytes())? {
                    Message::Response { id: got, outcome } if got == json!(id) => {
                        return outcome_value(outcome)
                    }
                    Message::Response { id: got, .. } => {
                        log::debug!("MCP [{}]: response to unknown request {got}", self.name)
                    }
                    Message::Request {
                        id: asked,
                        method,
                        params,
                    } => self.answer(asked, &method, params),
                    Message::Notification { method, .. } => {
                        log::debug!("MCP [{}]: notification {method}", self.name);
                        self.changed.heard(&method);
                    }
                }
            }
        }
    }

    /// Answer the server's request: `ping`, the roots; a question goes to the request
    /// waiting (`cancel` when there is none); nothing else is offered.
    fn answer(&self, id: Value, method: &str, params: Option<Box<serde_json::value::RawValue>>) {
        if let Some(result) = crate::mcp_input::answered_alone(method, &self.workspace) {
            return self.reply(id, &result);
        }
        if method == "elicitation/create" {
            let params = params.and_then(|p| serde_json::from_str(p.get()).ok());
            let q = Question {
                id,
                params: params.unwrap_or(Value::Null),
            };
            if let Err(q) = self.desk.hand(q) {
                log::info!(
                    "MCP [{}]: a question with no user to ask (answered cancel)",
                    self.name
                );
                self.reply(q.id, &crate::elicit::cancelled());
            }
            return;
        }
        let message = format!("method {method} is not supported by aegis-agent");
        let refusal = json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32601, "message": message}});
        if let Err(e) = self.post_expecting_nothing(&refusal.to_string()) {
            log::debug!("MCP [{}]: answering {method} failed: {e}", self.name);
        }
    }

    /// Send `result` as the answer to the server's request `id`.
    fn reply(&self, id: Value, result: &Value) {
        let reply = json!({"jsonrpc": "2.0", "id": id, "result": result});
        if let Err(e) = self.post_expecting_nothing(&reply.to_string()) {
            log::debug!("MCP [{}]: answering its request failed: {e}", self.name);
        }
    }

    /// Tell the server the agent no longer waits for request `id` (in the background).
    fn cancelled(self: &Arc<Self>, id: u64, reason: &'static str) {
        let inner = Arc::clone(self);
        let _ = thread::Builder::new()
            .name("mcp-http-cancel".into())
            .stack_size(128 * 1024)
            .spawn(move || {
                let note = json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
                    "params": {"requestId": id, "reason": reason}});
                if let Err(e) = inner.post_expecting_nothing(&note.to_string()) {
                    log::debug!("MCP [{}]: notifications/cancelled failed: {e}", inner.name);
                }
            });
    }
}

/// `e`, or `Cancelled` when it is what closing the connection under `cut` caused.
fn cancelled_or(cut: &Cut, e: McpError) -> McpError {
    if cut.fired() {
        McpError::Cancelled
    } else {
        e
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Each change is one assignment: a panic elsewhere cannot leave it half-made.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn decode(bytes: &[u8]) -> Result<Message, McpError> {
    Message::decode(bytes).map_err(|e| McpError::Protocol(format!("not a JSON-RPC message: {e}")))
}

fn outcome_value(
    outcome: Result<Box<serde_json::value::RawValue>, tether::rpc::RpcError>,
) -> Result<Value, McpError> {
    let raw = outcome.map_err(McpError::Rpc)?;
    serde_json::from_str(raw.get()).map_err(|e| McpError::Protocol(e.to_string()))
}

/// `text` with each `${NAME}` replaced by that environment variable (`var`), and
/// `${NAME:-default}` by `default` where it is unset or empty. A variable of `hidden` (the
/// agent's own keys) is refused: agent.json and mcp.json are files the model can write,
/// and a header is a way out of the machine.
pub fn expand(text: &str, hidden: &[String], var: impl Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| format!("unterminated ${{ in {:?}", shown(text)))?;
        let (name, default) = match after[..end].split_once(":-") {
            Some((n, d)) => (n, Some(d)),
            None => (&after[..end], None),
        };
        let valid = name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(format!("${{{name}}} does not name an environment variable"));
        }
        if hidden.iter().any(|h| h == name) {
            return Err(format!(
                "${{{name}}} is one of the agent's own keys, which MCP servers are not given"
            ));
        }
        match (var(name).filter(|v| !v.is_empty()), default) {
            (Some(value), _) => out.push_str(&value),
            (None, Some(d)) => out.push_str(d),
            (None, None) => return Err(format!("${{{name}}} is not set")),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The start of `text` for an error message: up to its first `${`, as values may follow.
fn shown(text: &str) -> &str {
    text.split("${").next().unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "TOKEN" => Some("t0k".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn variables_are_expanded_and_the_agents_keys_refused() {
        let hidden = vec!["OPENAI_API_KEY".to_string()];
        let x = |s: &str| expand(s, &hidden, env);
        assert_eq!(x("Bearer ${TOKEN}").unwrap(), "Bearer t0k");
        assert_eq!(x("${TOKEN}-${TOKEN}").unwrap(), "t0k-t0k");
        assert_eq!(x("${MISSING:-none}/${EMPTY:-dflt}").unwrap(), "none/dflt");
        assert_eq!(x("costs $5 and $HOME").unwrap(), "costs $5 and $HOME");
        assert_eq!(x("${MISSING}").unwrap_err(), "${MISSING} is not set");
        assert_eq!(
            x("Bearer ${OPENAI_API_KEY}").unwrap_err(),
            "${OPENAI_API_KEY} is one of the agent's own keys, which MCP servers are not given"
        );
        assert_eq!(
            x("Bearer ${OPENAI_API_KEY:-x}").unwrap_err(),
            "${OPENAI_API_KEY} is one of the agent's own keys, which MCP servers are not given"
        );
        assert_eq!(
            x("${1X}").unwrap_err(),
            "${1X} does not name an environment variable"
        );
        assert_eq!(x("a ${TOKEN").unwrap_err(), "unterminated ${ in \"a \"");
    }

    #[test]
    fn a_refusal_is_told_in_the_servers_words() {
        let body = r#"{"jsonrpc":"2.0","error":{"code":-32000,"message":"Bad Request: No valid session ID provided"},"id":null}"#;
        assert_eq!(
            tether::http::error_words(body),
            "Bad Request: No valid session ID provided"
        );
        assert_eq!(tether::http::error_words("  Unauthorized\n"), "Unauthorized");
    }

    proptest! {
        #[test]
        fn text_without_a_reference_is_kept_and_nothing_panics(s in "\\PC{0,40}") {
            let hidden = vec!["OPENAI_API_KEY".to_string()];
            let r = expand(&s, &hidden, env);
            if !s.contains("${") {
                prop_assert_eq!(r.unwrap(), s);
            }
        }
    }
}
