//! Streaming chat completions from an LLM provider, on a reader thread of its own.
//!
//! Duties:
//! 1. send the request (OpenAI Chat Completions or Anthropic Messages, both `stream:true`);
//! 2. retry connect errors, 429 (honouring `retry-after`), 5xx and 529 with backoff, but
//!    only until the first token: after that a failure ends the reply, keeping its text;
//! 3. turn the SSE body into `Chunk`s on a channel, so the session worker can wait on
//!    tokens and on a cancel at the same time. Dropping the `Stream` cancels: the reader
//!    thread notices at its next chunk or backoff and closes the connection.

use std::fmt;
use std::io::Read;
use std::thread;
use std::time::Duration;

use crossbeam_channel::{bounded, unbounded, Receiver, RecvTimeoutError, Sender};

use crate::session::Turn;
use crate::sse;

/// Which API dialect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderKind {
    /// OpenAI Chat Completions and compatible servers.
    OpenAi,
    /// Anthropic Messages.
    Anthropic,
}

impl fmt::Display for ProviderKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ProviderKind::OpenAi => "OpenAI",
            ProviderKind::Anthropic => "Anthropic",
        })
    }
}

/// Provider settings. `Debug` never prints the key.
#[derive(Clone)]
pub struct Provider {
    /// API dialect.
    pub kind: ProviderKind,
    /// API key; `None` for local OpenAI-compatible servers that need none.
    pub key: Option<String>,
    /// Base URL without trailing slash.
    pub base_url: String,
    /// Model name.
    pub model: String,
    /// Reply token limit (Anthropic requires one; default 4096).
    pub max_tokens: Option<u32>,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Longest silence allowed between chunks (and before the response head).
    pub read_timeout: Duration,
    /// Attempts before the first token.
    pub attempts: u32,
}

impl fmt::Debug for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Provider")
            .field("kind", &self.kind)
            .field("key", &self.key.as_ref().map(|_| "<redacted>"))
            .field("base_url", &self.base_url)
            .field("model", &self.model)
            .finish()
    }
}

/// What kind of failure, deciding retry and the message the user sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Could not connect or the connection broke before the response.
    Connect,
    /// HTTP 429 or a rate-limit error event.
    RateLimited,
    /// HTTP 529 or an `overloaded_error` event.
    Overloaded,
    /// HTTP 5xx or an `api_error` event.
    Server,
    /// HTTP 401/403: the key is wrong.
    Auth,
    /// Another 4xx: the request itself was refused.
    Request,
    /// No chunk within the read timeout.
    Timeout,
    /// The stream ended before its end marker.
    Cut,
    /// A chunk that is not what the API promises.
    Malformed,
}

/// A failed LLM call.
#[derive(Debug, Clone)]
pub struct LlmError {
    /// Failure class.
    pub kind: ErrorKind,
    /// Detail for logs and the user (never contains the key).
    pub detail: String,
    /// Server-requested wait before retrying.
    pub retry_after: Option<Duration>,
}

impl fmt::Display for LlmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {}", self.kind, self.detail)
    }
}

impl LlmError {
    fn new(kind: ErrorKind, detail: impl Into<String>) -> LlmError {
        LlmError {
            kind,
            detail: detail.into(),
            retry_after: None,
        }
    }

    /// Whether another attempt may succeed (only used before the first token).
    pub fn retryable(&self) -> bool {
        matches!(
            self.kind,
            ErrorKind::Connect
                | ErrorKind::RateLimited
                | ErrorKind::Overloaded
                | ErrorKind::Server
                | ErrorKind::Timeout
                | ErrorKind::Cut
        )
    }

    /// The `code` of the `error` frame.
    pub fn code(&self) -> &'static str {
        match self.kind {
            ErrorKind::Connect | ErrorKind::Server => "llm_unavailable",
            ErrorKind::RateLimited => "llm_rate_limited",
            ErrorKind::Overloaded => "llm_overloaded",
            ErrorKind::Auth => "llm_auth",
            ErrorKind::Request => "llm_bad_request",
            ErrorKind::Timeout => "llm_timeout",
            ErrorKind::Cut | ErrorKind::Malformed => "llm_interrupted",
        }
    }

    /// What the user reads.
    pub fn user_message(&self) -> String {
        match self.kind {
            ErrorKind::Auth => format!("⚠️ The LLM provider rejected the API key ({}).", self.detail),
            ErrorKind::RateLimited => {
                "⚠️ The LLM provider is rate-limiting requests. Please try again in a moment.".into()
            }
            ErrorKind::Overloaded => {
                "⚠️ The LLM provider is overloaded. Please try again in a moment.".into()
            }
            ErrorKind::Connect | ErrorKind::Server => {
                format!(
                    "⚠️ The LLM provider is unavailable ({}). Please try again later.",
                    self.detail
                )
            }
            ErrorKind::Request => format!("⚠️ The LLM provider refused the request ({}).", self.detail),
            ErrorKind::Timeout => "⚠️ The LLM provider stopped responding. Please try again.".into(),
            ErrorKind::Cut | ErrorKind::Malformed => {
                format!("⚠️ The reply was interrupted ({}).", self.detail)
            }
        }
    }
}

/// One item from the reader thread.
#[derive(Debug)]
pub enum Chunk {
    /// The next piece of text.
    Delta(String),
    /// The reply is complete, or failed.
    End(Result<(), LlmError>),
}

/// A reply being streamed. Dropping it cancels the request.
#[derive(Debug)]
pub struct Stream {
    /// Chunks from the reader thread, in order; ends with one `Chunk::End`.
    pub chunks: Receiver<Chunk>,
    /// Dropped to tell the reader thread to stop.
    _cancel: Sender<()>,
}

/// An LLM client: provider settings plus a reusable HTTP agent.
#[derive(Debug, Clone)]
pub struct Llm {
    /// Settings.
    provider: Provider,
    /// HTTP client (TLS, connection pool).
    agent: ureq::Agent,
}

/// What an SSE event means for the reply.
enum Step {
    Text(String),
    Done,
    Nothing,
}

impl Llm {
    /// A client for `provider`.
    pub fn new(provider: Provider) -> Llm {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(provider.connect_timeout))
            .timeout_recv_response(Some(provider.read_timeout))
            .timeout_per_read(Some(provider.read_timeout))
            .user_agent(concat!("aegis-agent/", env!("CARGO_PKG_VERSION")))
            .build();
        Llm {
            agent: config.new_agent(),
            provider,
        }
    }

    /// Start streaming a reply to `turns` on a new reader thread.
    pub fn stream(&self, system: &str, turns: &[Turn]) -> Stream {
        let (tx, rx) = unbounded();
        let (cancel_tx, cancel_rx) = bounded::<()>(0);
        let body = self.request_body(system, turns);
        let me = self.clone();
        let spawned = thread::Builder::new()
            .name("llm-reader".into())
            .stack_size(256 * 1024)
            .spawn(move || me.run(&body, &tx, &cancel_rx));
        if let Err(e) = spawned {
            let (tx, rx2) = unbounded();
            let _ = tx.send(Chunk::End(Err(LlmError::new(
                ErrorKind::Connect,
                format!("no thread: {e}"),
            ))));
            return Stream {
                chunks: rx2,
                _cancel: cancel_tx,
            };
        }
        Stream {
            chunks: rx,
            _cancel: cancel_tx,
        }
    }

    fn request_body(&self, system: &str, turns: &[Turn]) -> serde_json::Value {
        let p = &self.provider;
        match p.kind {
            ProviderKind::OpenAi => {
                let mut messages = vec![serde_json::json!({"role": "system", "content": system})];
                messages.extend(
                    turns
                        .iter()
                        .map(|t| serde_json::json!({"role": t.role, "content": t.content})),
                );
                let mut body = serde_json::json!({"model": p.model, "messages": messages, "stream": true});
                if let Some(m) = p.max_tokens {
                    body["max_tokens"] = m.into();
                }
                body
            }
            ProviderKind::Anthropic => {
                // The Messages API wants alternating roles starting with a user turn: merge
                // consecutive turns of one role (a failed reply leaves two user turns).
                let mut messages: Vec<serde_json::Value> = Vec::new();
                for t in turns {
                    match messages.last_mut() {
                        Some(last) if last["role"] == serde_json::json!(t.role) => {
                            let merged =
                                format!("{}\n\n{}", last["content"].as_str().unwrap_or(""), t.content);
                            last["content"] = merged.into();
                        }
                        _ => messages.push(serde_json::json!({"role": t.role, "content": t.content})),
                    }
                }
                serde_json::json!({
                    "model": p.model,
                    "max_tokens": p.max_tokens.unwrap_or(4096),
                    "system": system,
                    "messages": messages,
                    "stream": true,
                })
            }
        }
    }

    fn run(&self, body: &serde_json::Value, tx: &Sender<Chunk>, cancel: &Receiver<()>) {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut sent_any = false;
            let result = self.attempt(body, tx, &mut sent_any);
            let err = match result {
                Ok(()) => {
                    let _ = tx.send(Chunk::End(Ok(())));
                    return;
                }
                Err(e) => e,
            };
            if sent_any || !err.retryable() || attempt >= self.provider.attempts {
                let _ = tx.send(Chunk::End(Err(err)));
                return;
            }
            let backoff = err
                .retry_after
                .unwrap_or(Duration::from_millis(500 * (1 << (attempt - 1).min(4))))
                .min(Duration::from_secs(60));
            log::warn!(
                "{} attempt {attempt} failed ({err}); retrying in {:?}",
                self.provider.kind,
                backoff
            );
            // Wait, but stop at once if the reply is cancelled meanwhile.
            if cancel.recv_timeout(backoff) != Err(RecvTimeoutError::Timeout) {
                return;
            }
        }
    }

    fn attempt(
        &self,
        body: &serde_json::Value,
        tx: &Sender<Chunk>,
        sent_any: &mut bool,
    ) -> Result<(), LlmError> {
        let p = &self.provider;
        let mut req = match p.kind {
            ProviderKind::OpenAi => self.agent.post(format!("{}/chat/completions", p.base_url)),
            ProviderKind::Anthropic => self
                .agent
                .post(format!("{}/v1/messages", p.base_url))
                .header("anthropic-version", "2023-06-01"),
        };
        req = req.header("accept", "text/event-stream");
        if let Some(key) = &p.key {
            req = match p.kind {
                ProviderKind::OpenAi => req.header("authorization", format!("Bearer {key}")),
                ProviderKind::Anthropic => req.header("x-api-key", key),
            };
        }
        let resp = req
            .content_type("application/json")
            .send(body.to_string())
            .map_err(|e| transport_error(&e))?;
        let status = resp.status().as_u16();
        if status != 200 {
            let retry_after = resp
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<f64>().ok())
                .filter(|s| s.is_finite() && *s >= 0.0)
                .map(Duration::from_secs_f64);
            let text = resp
                .into_body()
                .into_with_config()
                .limit(64 * 1024)
                .read_to_string()
                .unwrap_or_default();
            let mut e = status_error(status, &text);
            e.retry_after = retry_after;
            return Err(e);
        }
        let mut reader = resp.into_body().into_reader();
        let mut parser = sse::Parser::new();
        let mut events = Vec::new();
        let mut buf = vec![0u8; 16 * 1024];
        let mut finished = false;
        loop {
            let n = match reader.read(&mut buf) {
                Ok(n) => n,
                Err(e) => return Err(read_error(&e)),
            };
            if n == 0 {
                break;
            }
            parser
                .feed(&buf[..n], &mut events)
                .map_err(|e| LlmError::new(ErrorKind::Malformed, e.to_string()))?;
            for ev in events.drain(..) {
                match self.step(&ev)? {
                    Step::Text(t) if !t.is_empty() => {
                        *sent_any = true;
                        if tx.send(Chunk::Delta(t)).is_err() {
                            return Ok(()); // cancelled: nobody listens any more
                        }
                    }
                    Step::Done => finished = true,
                    _ => {}
                }
            }
            if finished {
                return Ok(());
            }
        }
        let _ = parser.finish();
        Err(LlmError::new(
            ErrorKind::Cut,
            "the stream ended before the reply was complete",
        ))
    }

    fn step(&self, ev: &sse::Event) -> Result<Step, LlmError> {
        match self.provider.kind {
            ProviderKind::OpenAi => openai_step(ev),
            ProviderKind::Anthropic => anthropic_step(ev),
        }
    }
}

fn malformed(what: &str, e: impl fmt::Display) -> LlmError {
    LlmError::new(ErrorKind::Malformed, format!("malformed {what}: {e}"))
}

fn openai_step(ev: &sse::Event) -> Result<Step, LlmError> {
    let data = ev.data.trim();
    if data == "[DONE]" {
        return Ok(Step::Done);
    }
    let v: serde_json::Value = serde_json::from_str(data).map_err(|e| malformed("chunk", e))?;
    if let Some(err) = v.get("error") {
        let msg = err
            .get("message")
            .and_then(|m| m.as_str())
            .unwrap_or("error event");
        return Err(LlmError::new(ErrorKind::Server, msg.to_string()));
    }
    let choice = &v["choices"][0];
    Ok(match choice["delta"]["content"].as_str() {
        Some(t) => Step::Text(t.to_string()),
        None => Step::Nothing,
    })
}

fn anthropic_step(ev: &sse::Event) -> Result<Step, LlmError> {
    let v: serde_json::Value = serde_json::from_str(&ev.data).map_err(|e| malformed("event", e))?;
    let kind = ev.event.as_deref().or(v["type"].as_str()).unwrap_or("");
    match kind {
        "content_block_delta" => Ok(match v["delta"]["text"].as_str() {
            Some(t) if v["delta"]["type"] == "text_delta" => Step::Text(t.to_string()),
            _ => Step::Nothing,
        }),
        "message_stop" => Ok(Step::Done),
        "error" => {
            let etype = v["error"]["type"].as_str().unwrap_or("");
            let msg = v["error"]["message"]
                .as_str()
                .unwrap_or("error event")
                .to_string();
            let kind = match etype {
                "overloaded_error" => ErrorKind::Overloaded,
                "rate_limit_error" => ErrorKind::RateLimited,
                "api_error" => ErrorKind::Server,
                "authentication_error" | "permission_error" => ErrorKind::Auth,
                _ => ErrorKind::Request,
            };
            Err(LlmError::new(kind, msg))
        }
        _ => Ok(Step::Nothing), // message_start, ping, content_block_start/stop, message_delta
    }
}

fn status_error(status: u16, body: &str) -> LlmError {
    let detail = serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
        .unwrap_or_else(|| body.trim().chars().take(200).collect());
    let detail = if detail.is_empty() {
        format!("HTTP {status}")
    } else {
        format!("HTTP {status}: {detail}")
    };
    let kind = match status {
        429 => ErrorKind::RateLimited,
        529 => ErrorKind::Overloaded,
        401 | 403 => ErrorKind::Auth,
        500..=599 => ErrorKind::Server,
        _ => ErrorKind::Request,
    };
    LlmError::new(kind, detail)
}

fn transport_error(e: &ureq::Error) -> LlmError {
    match e {
        ureq::Error::Timeout(_) => LlmError::new(ErrorKind::Timeout, "no response in time"),
        other => LlmError::new(ErrorKind::Connect, other.to_string()),
    }
}

fn read_error(e: &std::io::Error) -> LlmError {
    let text = e.to_string();
    if e.kind() == std::io::ErrorKind::TimedOut || text.contains("imeout") {
        LlmError::new(ErrorKind::Timeout, "no data within the read timeout")
    } else {
        LlmError::new(ErrorKind::Cut, text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(event: Option<&str>, data: &str) -> sse::Event {
        sse::Event {
            event: event.map(str::to_string),
            data: data.into(),
        }
    }

    #[test]
    fn openai_chunks_map_to_steps() {
        assert!(
            matches!(openai_step(&ev(None, r#"{"choices":[{"delta":{"content":"Hi"}}]}"#)), Ok(Step::Text(t)) if t == "Hi")
        );
        assert!(matches!(
            openai_step(&ev(None, r#"{"choices":[{"delta":{"role":"assistant"}}]}"#)),
            Ok(Step::Nothing)
        ));
        assert!(matches!(openai_step(&ev(None, "[DONE]")), Ok(Step::Done)));
        assert!(matches!(
            openai_step(&ev(None, "{bad")),
            Err(LlmError {
                kind: ErrorKind::Malformed,
                ..
            })
        ));
    }

    #[test]
    fn anthropic_events_map_to_steps() {
        let d = r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hello"}}"#;
        assert!(
            matches!(anthropic_step(&ev(Some("content_block_delta"), d)), Ok(Step::Text(t)) if t == "Hello")
        );
        assert!(matches!(
            anthropic_step(&ev(Some("ping"), r#"{"type": "ping"}"#)),
            Ok(Step::Nothing)
        ));
        assert!(matches!(
            anthropic_step(&ev(Some("message_stop"), r#"{"type":"message_stop"}"#)),
            Ok(Step::Done)
        ));
        let e = r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#;
        let err = match anthropic_step(&ev(Some("error"), e)) {
            Err(e) => e,
            Ok(_) => panic!("error event accepted"),
        };
        assert_eq!(err.kind, ErrorKind::Overloaded);
        assert!(err.retryable());
    }

    #[test]
    fn statuses_classify() {
        assert_eq!(status_error(429, "").kind, ErrorKind::RateLimited);
        assert_eq!(
            status_error(
                529,
                r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#
            )
            .detail,
            "HTTP 529: Overloaded"
        );
        assert_eq!(status_error(401, "").kind, ErrorKind::Auth);
        assert!(!status_error(400, "").retryable());
        assert!(status_error(503, "").retryable());
    }

    #[test]
    fn debug_never_shows_the_key() {
        let p = Provider {
            kind: ProviderKind::OpenAi,
            key: Some("sk-secret-123".into()),
            base_url: "http://x".into(),
            model: "m".into(),
            max_tokens: None,
            connect_timeout: Duration::from_secs(1),
            read_timeout: Duration::from_secs(1),
            attempts: 1,
        };
        assert!(!format!("{p:?}").contains("sk-secret"));
    }
}
