//! A stand-in for OpenRouter (`https://openrouter.ai/api/v1`), reached as deployed: by
//! its host name, through a CONNECT proxy that alone resolves it, over HTTPS with a
//! certificate of the test CA. As far as the agent uses it, it answers as OpenRouter does:
//! - `POST /api/v1/chat/completions` for the models of its catalogue, named
//!   `vendor/name`; any other name gets its 400 (`NAME is not a valid model ID`);
//! - a Claude model caches as Anthropic does, from the marks on message parts passed on
//!   (converted as [`crate::prompt_cache::anthropic_of_openai`]), and refuses what
//!   Anthropic refuses, wrapped as OpenRouter wraps a provider's refusal
//!   (`Provider returned error`, the provider's body in `metadata.raw`);
//! - the stream's last chunk is the usage, with what was read from and written to the
//!   cache (`prompt_tokens_details.cached_tokens`, `cache_write_tokens`) and the `cost`;
//! - a Gemini model (`google/...`) asked to "run it" calls a tool, with its thought
//!   signature in `reasoning_details`, and refuses, as Gemini does through OpenRouter, a
//!   request whose tool calls come back without it;
//! - `POST /api/v1/messages`, its Anthropic-compatible API (Claude Code's way in): the
//!   same catalogue by the same names, in the Messages dialect, Claude's cache as
//!   Anthropic keeps it;
//! - both take the key only as a bearer token (401 `No auth credentials found` else);
//! - `GET /api/v1/models` lists the catalogue.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use crate::http::Request;
use crate::llm::{anthropic_sse, last_user_text, openai_sse, with_anthropic_usage, FakeLlm, Reply};
use crate::prompt_cache::{anthropic_cache_refusal, anthropic_of_openai, Anthropic};
use crate::proxy::ConnectProxy;
use crate::tls::{fixture, TlsFront};

/// OpenRouter's API base, as users configure it.
pub const BASE: &str = "https://openrouter.ai/api/v1";

/// A running stand-in with the proxy and TLS front that reach it.
pub struct FakeOpenRouter {
    /// The server behind the TLS front: every request it received.
    pub llm: FakeLlm,
    _front: TlsFront,
    proxy: ConnectProxy,
}

impl FakeOpenRouter {
    /// Serve `models` (ids, oldest first); every answer echoes the newest question.
    pub fn start(models: &[&str]) -> FakeOpenRouter {
        FakeOpenRouter::serving(models, None)
    }

    /// The same, with every model served by a provider that refuses cache marks, as
    /// `provider` answers that (`messages.1.content.0.cache_control: Extra inputs are not
    /// permitted`).
    pub fn refusing_marks(models: &[&str], provider: &str) -> FakeOpenRouter {
        FakeOpenRouter::serving(models, Some(provider.to_string()))
    }

    fn serving(models: &[&str], refuses_marks: Option<String>) -> FakeOpenRouter {
        let catalogue: Vec<String> = models.iter().map(|m| m.to_string()).collect();
        let cache = Mutex::new(Anthropic::default());
        let llm = FakeLlm::with(move |req| answer(req, &catalogue, &cache, refuses_marks.as_deref()));
        let front = TlsFront::start(llm.url());
        let port: u16 = front
            .url
            .trim_start_matches("https://localhost:")
            .parse()
            .expect("front port");
        let at = SocketAddr::from(([127, 0, 0, 1], port));
        let proxy = ConnectProxy::start(move |target| (target == "openrouter.ai:443").then_some(at));
        FakeOpenRouter {
            llm,
            _front: front,
            proxy,
        }
    }

    /// What an agent needs to reach it at [`BASE`]: the proxy, the test CA.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("HTTPS_PROXY", self.proxy.url.clone()),
            ("SSL_CERT_FILE", fixture("ca.pem").display().to_string()),
        ]
    }

    /// The chat requests received, as JSON.
    pub fn chats(&self) -> Vec<Value> {
        self.received("/api/v1/chat/completions")
    }

    /// The requests its Anthropic-compatible API received, as JSON.
    pub fn messages(&self) -> Vec<Value> {
        self.received("/api/v1/messages")
    }

    fn received(&self, path: &str) -> Vec<Value> {
        self.llm
            .requests()
            .iter()
            .filter(|r| r.path == path)
            .map(Request::json)
            .collect()
    }
}

fn json_reply(code: u16, body: Value) -> Reply {
    Reply::Status {
        code,
        headers: vec![],
        body: body.to_string(),
    }
}

/// A provider's refusal, as OpenRouter passes it on.
fn provider_refusal(provider: &str, message: &str) -> Reply {
    let raw = json!({"type": "error", "error": {"type": "invalid_request_error", "message": message}});
    json_reply(
        400,
        json!({"error": {"message": "Provider returned error", "code": 400,
            "metadata": {"raw": raw.to_string(), "provider_name": provider, "is_byok": false}},
            "user_id": "user_test"}),
    )
}

fn answer(
    req: &Request,
    catalogue: &[String],
    cache: &Mutex<Anthropic>,
    refuses_marks: Option<&str>,
) -> Reply {
    if req.method == "GET" && req.path == "/api/v1/models" {
        let data: Vec<Value> = catalogue
            .iter()
            .enumerate()
            .map(|(i, id)| {
                json!({"id": id, "name": id, "created": 1_700_000_000 + i as i64, "context_length": 200_000,
                    "pricing": {"prompt": "0.000003", "completion": "0.000015"}})
            })
            .collect();
        return json_reply(200, json!({"data": data}));
    }
    if req.path != "/api/v1/chat/completions" && req.path != "/api/v1/messages" {
        return json_reply(404, json!({"error": {"message": "Not Found", "code": 404}}));
    }
    if !req
        .header("authorization")
        .is_some_and(|a| a.starts_with("Bearer sk-or-"))
    {
        return json_reply(
            401,
            json!({"error": {"message": "No auth credentials found", "code": 401}}),
        );
    }
    let body = req.json();
    let model = body["model"].as_str().unwrap_or("");
    if !catalogue.iter().any(|m| m == model) {
        return json_reply(
            400,
            json!({"error": {"message": format!("{model} is not a valid model ID"), "code": 400}, "user_id": "user_test"}),
        );
    }
    if req.path == "/api/v1/messages" {
        return messages_answer(req, &body, cache);
    }
    if model.starts_with("google/") {
        if let Some(refusal) = gemini_refusal(&body) {
            return refusal;
        }
        let answered = body["messages"]
            .as_array()
            .and_then(|m| m.last())
            .is_some_and(|m| m["role"] == "tool");
        if !answered && last_user_text(req).contains("run it") {
            return Reply::sse(gemini_tool_sse(model));
        }
    }
    let marked = body.to_string().contains("cache_control");
    if let (Some(provider), true) = (refuses_marks, marked) {
        return provider_refusal(
            provider,
            "messages.1.content.0.cache_control: Extra inputs are not permitted",
        );
    }
    let input = body["messages"].to_string().len() + body["tools"].to_string().len();
    let (read, written) = if model.starts_with("anthropic/") {
        let converted = anthropic_of_openai(&body);
        if let Some(why) = anthropic_cache_refusal(&converted) {
            return provider_refusal("Anthropic", &why);
        }
        let mut c = cache.lock().unwrap();
        let before = c.usage;
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
        let read = c.request_at(&converted, now);
        (read, c.usage.written - before.written)
    } else {
        (0, 0)
    };
    let text = format!("echo: {}", last_user_text(req));
    let tokens = |chars: usize| (chars / 4) as u64;
    let (prompt, cached, write, completion) =
        (tokens(input), tokens(read), tokens(written), tokens(text.len()));
    // Claude Sonnet's prices: $3 per million input tokens, a tenth for cache reads, 1.25
    // times for writes; $15 per million output.
    let uncached = prompt.saturating_sub(cached + write);
    let cost = (3.0 * (uncached as f64 + 0.1 * cached as f64 + 1.25 * write as f64)
        + 15.0 * completion as f64)
        / 1e6;
    let usage = json!({"id": "gen-1", "provider": "Anthropic", "model": model, "object": "chat.completion.chunk",
        "choices": [], "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion, "cost": cost, "is_byok": false,
            "prompt_tokens_details": {"cached_tokens": cached, "cache_write_tokens": write, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0}}});
    let mut pieces = openai_sse(&[&text]);
    let done = pieces.len() - 1;
    pieces.insert(done, format!("data: {usage}\n\n"));
    Reply::sse(pieces)
}

/// An answer of the Anthropic-compatible API: Claude's cache kept as Anthropic keeps it
/// (for every model: a router's guess at the others' is not modelled).
fn messages_answer(req: &Request, body: &Value, cache: &Mutex<Anthropic>) -> Reply {
    if let Some(why) = anthropic_cache_refusal(body) {
        return json_reply(
            400,
            json!({"type": "error", "error": {"type": "invalid_request_error", "message": why}}),
        );
    }
    let mut c = cache.lock().unwrap();
    let before = c.usage;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    let read = c.request_at(body, now);
    let (input, written) = (c.usage.input - before.input, c.usage.written - before.written);
    let tokens = |chars: usize| (chars / 4) as u64;
    let usage = json!({"input_tokens": tokens(input.saturating_sub(read + written)),
        "cache_creation_input_tokens": tokens(written), "cache_read_input_tokens": tokens(read), "output_tokens": 1});
    let text = format!("echo: {}", last_user_text(req));
    Reply::sse(with_anthropic_usage(anthropic_sse(&[&text]), usage))
}

/// Gemini's thought signature on its tool call, as OpenRouter passes it on.
const SIGNATURE: &str = "CiQBcsjafGx0aG91Z2h0X3NpZ25hdHVyZQ==";
const CALL_ID: &str = "tool_bash_Xb2k";

/// Gemini thinks, then calls `bash`; the signature comes in `reasoning_details`.
fn gemini_tool_sse(model: &str) -> Vec<String> {
    let chunk = |delta: Value, finish: Value| {
        format!(
            "data: {}\n\n",
            json!({"id": "gen-2", "provider": "Google AI Studio", "model": model, "object": "chat.completion.chunk",
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "native_finish_reason": finish}]})
        )
    };
    vec![
        chunk(
            json!({"role": "assistant", "content": "", "reasoning": "Checking the date.",
                "reasoning_details": [{"type": "reasoning.text", "text": "Checking the date.", "format": "google-gemini-v1", "index": 0}]}),
            Value::Null,
        ),
        chunk(
            json!({"role": "assistant", "content": "",
                "reasoning_details": [{"type": "reasoning.encrypted", "data": SIGNATURE, "id": CALL_ID, "format": "google-gemini-v1", "index": 1}],
                "tool_calls": [{"index": 0, "id": CALL_ID, "type": "function",
                    "function": {"name": "bash", "arguments": "{\"command\":\"echo Sunday\"}"}}]}),
            Value::Null,
        ),
        chunk(json!({"role": "assistant", "content": ""}), json!("tool_calls")),
        "data: [DONE]\n\n".into(),
    ]
}

/// The 400 a Gemini model's request gets through OpenRouter when one of its tool calls
/// comes back without the signature it was given.
fn gemini_refusal(body: &Value) -> Option<Reply> {
    // The signature given with the call, or the value Google documents for calls whose
    // signature is not known (another model made them).
    let signed = |m: &Value| {
        let first = &m["tool_calls"][0]["id"];
        m["reasoning_details"].as_array().is_some_and(|d| {
            d.iter().any(|x| {
                (x["data"] == SIGNATURE && x["id"] == CALL_ID)
                    || (x["data"] == "skip_thought_signature_validator" && x["id"] == *first)
            })
        })
    };
    let unsigned = body["messages"]
        .as_array()?
        .iter()
        .any(|m| m["role"] == "assistant" && m.get("tool_calls").is_some() && !signed(m));
    let upstream = json!({"error": {"code": 400, "status": "INVALID_ARGUMENT",
        "message": "Function call is missing a thought_signature in functionCall parts. This is required for tools to work correctly, and missing thought_signature may lead to degraded model performance."}});
    let raw = format!(
        "Gemini models require OpenRouter reasoning details to be preserved in each request. Please refer to our docs: https://openrouter.ai/docs/guides/best-practices/reasoning-tokens#preserving-reasoning-blocks. Upstream error: {upstream}"
    );
    unsigned.then(|| {
        json_reply(
            400,
            json!({"error": {"message": "Provider returned error", "code": 400,
                "metadata": {"raw": raw, "provider_name": "Google AI Studio"}}, "user_id": "user_test"}),
        )
    })
}
