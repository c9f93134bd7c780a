//! Streaming chat completions from an LLM provider, on a reader thread of its own.
//!
//! Duties:
//! 1. send the request (OpenAI Chat Completions or Anthropic Messages, both `stream:true`);
//!    with the tools on offer;
//! 2. retry connect errors, 429 (honouring `retry-after`), 5xx, 529, timeouts and cut
//!    streams with backoff, within the attempt budget. A retry after text was streamed
//!    first sends `Chunk::Restart`, so the worker can start the round's text over in
//!    front of the user; only the last attempt's failure ends the round with an error;
//! 3. turn the SSE body into `Chunk`s on a channel, so the session worker can wait on
//!    tokens and on a cancel at the same time, and collect streamed tool calls (their
//!    arguments arrive in arbitrary pieces) into whole `ToolCall`s at the end. Dropping
//!    the `Stream` cancels: the reader thread notices at its next chunk or backoff and
//!    closes the connection;
//! 4. keep a reasoning model's thoughts apart from its answer, whether the server sends
//!    them in a field of their own (`reasoning`, `reasoning_content`, Anthropic's
//!    `thinking_delta`) or inline at the start of the content (`think.rs`).

use std::fmt;
use std::io::Read;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use crossbeam_channel::{bounded, select, unbounded, Receiver, RecvTimeoutError, Sender};
use tether::cut::{Cut, Lanes};

use crate::carry::{Carried, StandIn};
use crate::host_llm::{HostLink, LlmFrame, Refused};
use crate::prompt_cache::{Marks, Ttl};
use crate::session::{Block, Content, Role, Turn};
use crate::sse;
use crate::think::{InlineThink, Split};
use crate::usage::{Ledger, Tokens};

/// A tool as offered to the model.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolSpec {
    /// Name the model calls it by.
    pub name: String,
    /// What it does, for the model.
    pub description: String,
    /// JSON Schema of its arguments (an object schema).
    pub input_schema: serde_json::Value,
}

/// A tool call the model made.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolCall {
    /// Provider's call id, echoed with the result.
    pub id: String,
    /// Tool name.
    pub name: String,
    /// Arguments: an object, or a JSON string holding text that did not parse.
    pub input: serde_json::Value,
}

/// Which API dialect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderKind {
    /// OpenAI Chat Completions and compatible servers.
    OpenAi,
    /// Anthropic Messages.
    Anthropic,
}

/// What each provider is known by: one table, for the configuration and for `/model`.
impl ProviderKind {
    /// The prefix that names it in a model's name (`anthropic/claude-sonnet-4-6`).
    pub fn prefix(self) -> &'static str {
        match self {
            ProviderKind::Anthropic => "anthropic",
            ProviderKind::OpenAi => "openai",
        }
    }

    /// The variable its key is read from.
    pub fn key_var(self) -> &'static str {
        match self {
            ProviderKind::Anthropic => "ANTHROPIC_API_KEY",
            ProviderKind::OpenAi => "OPENAI_API_KEY",
        }
    }

    /// Its own API, where no base URL is set.
    pub fn own_api(self) -> &'static str {
        match self {
            ProviderKind::Anthropic => "https://api.anthropic.com",
            ProviderKind::OpenAi => "https://api.openai.com/v1",
        }
    }

    /// The model asked of its own API when none is named.
    pub fn default_model(self) -> &'static str {
        match self {
            ProviderKind::Anthropic => "claude-sonnet-4-6",
            ProviderKind::OpenAi => "gpt-4o",
        }
    }
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
    /// The variable the key came from (kept out of tool commands).
    pub key_env: Option<String>,
    /// Base URL without trailing slash.
    pub base_url: String,
    /// Model name.
    pub model: String,
    /// The model is the agent's default, not the user's choice: when the server no
    /// longer has it, another is chosen (`successor`).
    pub default_model: bool,
    /// Reply token limit (Anthropic requires one; default 4096).
    pub max_tokens: Option<u32>,
    /// How hard a reasoning model works, when configured: OpenAI's `reasoning_effort`,
    /// Anthropic's `output_config.effort`.
    pub reasoning_effort: Option<String>,
    /// Claude's thinking, when configured: at Anthropic, or through OpenRouter (its
    /// `reasoning`), for no other server.
    pub thinking: Option<Thinking>,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Longest silence allowed between chunks (and before the response head).
    pub read_timeout: Duration,
    /// Attempts before the first token.
    pub attempts: u32,
    /// `host:NAME/MODEL`: the host's model server `NAME` (`ollama`, `lmstudio`, `vllm`),
    /// reached through the host instead of `base_url` (see `host_llm`).
    pub host: Option<String>,
    /// The Anthropic dialect's key is a gateway's token, sent as `authorization: Bearer`
    /// (`ANTHROPIC_AUTH_TOKEN`, OpenRouter's Anthropic-compatible API) rather than as
    /// Anthropic's `x-api-key`.
    pub bearer: bool,
    /// OpenAI dialect: ask the Responses API from the start (`AEGIS_OPENAI_API`), not
    /// only once Chat Completions refuses the model.
    pub responses_api: bool,
    /// The model searches the web with its provider's own tool (Anthropic's, or the
    /// Responses API's at OpenAI), this many searches per request at most (agent.json
    /// `tools.web_search.native`), where agent.json lets it look.
    pub web_search: Option<crate::native_search::NativeSearch>,
}

impl Provider {
    /// Whether requests go to OpenAI's own API (not a server speaking its dialect).
    pub fn at_openai(&self) -> bool {
        self.kind == ProviderKind::OpenAi && self.base_url.starts_with("https://api.openai.com/")
    }

    /// The header that carries the key, if there is one.
    pub fn key_header(&self) -> Option<(&'static str, String)> {
        let key = self.key.as_deref()?;
        Some(match (self.kind, self.bearer) {
            (ProviderKind::Anthropic, false) => ("x-api-key", key.to_string()),
            _ => ("authorization", format!("Bearer {key}")),
        })
    }
}

impl fmt::Debug for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Provider")
            .field("kind", &self.kind)
            .field("key", &self.key.as_ref().map(|_| "<redacted>"))
            .field("base_url", &self.base_url)
            .field("model", &self.model)
            .field("host", &self.host)
            .finish()
    }
}

/// What kind of failure, deciding retry and the message the user sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Could not connect or the connection broke before the response.
    Connect,
    /// The server's TLS certificate does not verify against the trusted roots.
    Certificate,
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
    pub(crate) fn new(kind: ErrorKind, detail: impl Into<String>) -> LlmError {
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
            ErrorKind::Certificate => "llm_certificate",
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
            ErrorKind::Certificate => format!(
                "⚠️ The LLM provider's TLS certificate cannot be verified ({}). If it is signed by a private CA, point SSL_CERT_FILE at that CA.",
                self.detail
            ),
            ErrorKind::Request if crate::successor::model_gone(self) => format!(
                "⚠️ The LLM provider has no such model ({}). It may have been retired: set AEGIS_MODEL or agent.json \"model\" to a current one, or choose one for this chat with /model.",
                self.detail
            ),
            ErrorKind::Request => format!("⚠️ The LLM provider refused the request ({}).", self.detail),
            ErrorKind::Timeout => "⚠️ The LLM provider stopped responding. Please try again.".into(),
            ErrorKind::Cut | ErrorKind::Malformed => {
                format!("⚠️ The reply was interrupted ({}).", self.detail)
            }
        }
    }
}

/// What a request says besides the conversation, laid out so that what stays the same
/// from one request to the next comes first and providers' prompt caches can reuse it:
/// the system prompt (`fixed`, then the session's `recap`, which changes now and then),
/// and `notes` for this message only (the memories chosen by its words, a skill it asks
/// for by name), which go after the newest question instead of into the system prompt.
#[derive(Debug, Clone, Copy, Default)]
pub struct Prompt<'a> {
    /// The system prompt proper: the same for every request of the agent.
    pub fixed: &'a str,
    /// The session's recap of earlier turns ([`crate::recap`]), or "".
    pub recap: &'a str,
    /// Notes for this message, after its question ("" for none).
    pub notes: &'a str,
    /// Mark for Claude's cache what the next request will repeat, kept this long
    /// ([`crate::prompt_cache::cache_marks`]); `None`: no marks.
    pub cache: Option<Marks>,
    /// The conversation's `prompt_cache_key` for Chat Completions servers
    /// ([`crate::prompt_cache::conversation_key`]); `None`: none sent.
    pub cache_key: Option<&'a str>,
    /// A reply's request: the provider's own web search is offered where it is on (a
    /// recap's request searches nothing).
    pub reply: bool,
}

impl<'a> Prompt<'a> {
    /// Just a system prompt, marked for Claude's cache.
    #[cfg(test)]
    pub fn plain(fixed: &'a str) -> Prompt<'a> {
        Prompt {
            fixed,
            cache: Some(Marks::all(Ttl::Minutes5)),
            ..Prompt::default()
        }
    }

    /// The system prompt as one text.
    fn system(&self) -> String {
        format!("{}{}", self.fixed, self.recap)
    }
}

/// One item from the reader thread.
#[derive(Debug)]
pub enum Chunk {
    /// The next piece of text.
    Delta(String),
    /// The next piece of a reasoning model's thoughts: shown, never part of the reply.
    Reasoning(String),
    /// The stream broke after text and is being tried again: the text of this round so
    /// far is void.
    Restart,
    /// Anthropic's signed thinking blocks of the round, in order, just before its end:
    /// to send back before the round's tool calls; with the blocks of its own tools (a
    /// search), and the round's text among them in its place, the turn as it came.
    Thoughts(Vec<crate::session::Block>),
    /// What a Chat Completions server wants back with the round's tool calls, just
    /// before its end.
    Carried(Carried),
    /// What the reply is doing now, for the chat (`tool: web_search` while Anthropic
    /// searches for the model, `thinking` once the results are in).
    Presence(String),
    /// Anthropic paused a long turn of its own tools (`pause_turn`): the round's content
    /// goes back as it is, and the model carries on (before `End`).
    Paused,
    /// What the round's request cost, as the server counted it (before `End`, when the
    /// server said).
    Usage(Tokens),
    /// The round is complete (with the tool calls it asked for), or failed.
    End(Result<Vec<ToolCall>, LlmError>),
}

/// Requests corrected after a refusal (a setting the server wants otherwise), at most, in
/// one reply's round: more would be a server refusing what it was just given.
const MAX_CORRECTIONS: u32 = 8;

/// A reply being streamed. Dropping it cancels the request: the connection closes at
/// once, even while the model is silent (thinking), so the server stops generating.
#[derive(Debug)]
pub struct Stream {
    /// Chunks from the reader thread, in order; ends with one `Chunk::End`.
    pub chunks: Receiver<Chunk>,
    /// Dropped to tell the reader thread to stop.
    _cancel: Sender<()>,
    /// Fired when dropped: ends the read the reader thread is blocked on.
    cut: Cut,
}

impl Drop for Stream {
    fn drop(&mut self) {
        // After the last chunk the request is over and the cut reaches nothing.
        self.cut.fire();
    }
}

/// How Claude thinks before it answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Thinking {
    /// Extended thinking with at most this many tokens (`budget_tokens`).
    Budget(u32),
    /// Claude decides how much (Claude 4.6 and later; the only form the newest take).
    Adaptive,
}

/// An LLM client: provider settings plus the way its requests travel.
#[derive(Debug, Clone)]
pub struct Llm {
    /// Settings.
    provider: Provider,
    /// How requests reach the model.
    transport: Transport,
    /// OpenAI dialect: the reply limit goes as `max_completion_tokens`, not `max_tokens`.
    /// OpenAI's reasoning models (o-series, GPT-5) refuse `max_tokens` with a 400, while
    /// many compatible servers know only `max_tokens`: OpenAI's own API gets the new name
    /// from the start, any other server once it has refused the old one.
    completion_tokens: Arc<AtomicBool>,
    /// The model used instead of a retired default, once chosen.
    successor: crate::successor::Successor,
    /// Anthropic dialect: thinking goes as `{"type": "adaptive"}` although a budget is
    /// configured. The newest Claude models refuse the budget form with a 400; a budget
    /// is kept for those that know only it, until the model refuses it once.
    adaptive: Arc<AtomicBool>,
    /// Anthropic dialect: cache marks are kept the default 5 minutes whatever the pace,
    /// once the server has refused one kept an hour.
    short_marks: Arc<AtomicBool>,
    /// The server refused cache marks altogether (`cache_control`): none are sent again.
    unmarked: Arc<AtomicBool>,
    /// OpenAI dialect: the server refused `prompt_cache_key`: not sent again.
    no_cache_key: Arc<AtomicBool>,
    /// OpenAI dialect: the server refused `stream_options`, so the stream is asked
    /// without it (and tells no usage, unless it does anyway).
    no_stream_options: Arc<AtomicBool>,
    /// OpenAI dialect: Chat Completions does not serve the model (the pro and codex
    /// models), so requests go to the Responses API ([`crate::responses`]).
    responses: Arc<AtomicBool>,
    /// Responses API: the model refused to give its reasoning encrypted: not asked again.
    no_encrypted: Arc<AtomicBool>,
    /// Responses API: reasoning summaries were refused (an organization OpenAI has not
    /// verified): not asked again.
    no_summaries: Arc<AtomicBool>,
    /// Where every request's usage is added up, if anywhere.
    ledger: Option<Arc<Ledger>>,
    /// Chat Completions dialect: what stands in for thoughts the server wants back on tool
    /// calls the session has none for (a [`StandIn`], once the server asked), or that it
    /// refused them.
    stand_in: Arc<AtomicU8>,
    /// A server's context window was seen cutting a request (said once).
    warned_window: Arc<AtomicBool>,
    /// The provider refused its own web search for this key (an organization that has not
    /// allowed it, a model that cannot search): not offered again.
    no_web_search: Arc<AtomicBool>,
}

/// How requests reach the model.
#[derive(Debug, Clone)]
enum Transport {
    /// Straight to `base_url` (TLS, a connection kept per lane).
    Http(Lanes),
    /// Through the host, for `host:` models.
    Host(Arc<HostLink>),
}

/// What an SSE event means for the reply.
enum Step {
    /// Thoughts and text, as the event carries them (the content still to be split).
    Delta(Split),
    /// What the reply is doing now ([`Chunk::Presence`]).
    Presence(String),
    Done,
    Nothing,
}

/// A tool call whose pieces are still arriving.
#[derive(Debug, Default)]
struct PartialCall {
    id: String,
    name: String,
    arguments: String,
    /// What the server added to the call for itself (Gemini's thought signature).
    extra: Option<serde_json::Value>,
}

/// Per-attempt stream state: tool calls under construction, keyed by the provider's
/// index (OpenAI `tool_calls[].index`, Anthropic content block `index`).
#[derive(Debug, Default)]
struct Decoder {
    calls: std::collections::BTreeMap<u64, PartialCall>,
    /// OpenAI sent a `finish_reason`: the reply is complete even if `[DONE]` never comes.
    finished: bool,
    /// Thoughts written inline at the start of the content.
    inline: InlineThink,
    /// Anthropic thinking blocks with their index, as signed (or withheld) by the API,
    /// the blocks of the tools it ran itself, and its text blocks, in the order they came.
    signed: Vec<(u64, crate::session::Block)>,
    /// The input of a tool Anthropic runs itself, by block index, while it arrives.
    server_input: std::collections::BTreeMap<u64, String>,
    /// The sources the answer cites (URL, title), numbered from 1 in this order: all of
    /// Anthropic's, the ones OpenAI's answer does not link itself.
    sources: Vec<(String, String)>,
    /// Responses API: the answer's text so far, to tell the pages it links itself (OpenAI
    /// writes its citations as links in the text) from the ones it does not.
    said: String,
    /// The numbers of the sources each text block cites, by block index, until it ends.
    cited: std::collections::BTreeMap<u64, Vec<usize>>,
    /// Why Anthropic ended the message (`pause_turn`...).
    stop_reason: Option<String>,
    /// What a Chat Completions server wants back with this round's tool calls.
    carried: Carried,
    /// What the request cost, so far as the stream has told.
    usage: Tokens,
}

impl Decoder {
    /// The thinking block at `index`, if one started there.
    fn signed_block(&mut self, index: u64) -> Option<&mut crate::session::Block> {
        self.signed.iter_mut().find(|(i, _)| *i == index).map(|(_, b)| b)
    }

    /// The calls, in index order. Empty arguments mean `{}`.
    fn into_calls(self) -> Vec<ToolCall> {
        self.calls
            .into_values()
            .filter(|c| !c.name.is_empty())
            .enumerate()
            .map(|(i, c)| {
                let raw = c.arguments.trim();
                let input = if raw.is_empty() {
                    serde_json::json!({})
                } else if tether::depth::check(raw.as_bytes()).is_err() {
                    // Kept as the text it is, like arguments that are not JSON: arguments
                    // nested that deep (a prompt injection's) would be read, kept and
                    // dropped by code that recurses once per level on a small stack.
                    serde_json::Value::String(raw.to_string())
                } else {
                    serde_json::from_str(raw).unwrap_or_else(|_| serde_json::Value::String(raw.to_string()))
                };
                let id = if c.id.is_empty() {
                    format!("call_{i}")
                } else {
                    c.id
                };
                ToolCall {
                    id,
                    name: c.name,
                    input,
                }
            })
            .collect()
    }
}

impl Llm {
    /// A client for `provider`; with `host`, its requests go through the host (a
    /// `host:` model) and no HTTP client is built.
    pub fn new(provider: Provider, host: Option<Arc<HostLink>>) -> Llm {
        let transport = match host {
            Some(link) => Transport::Host(link),
            None => Transport::Http(Lanes::new(
                tether::http::agent_config(&provider.base_url)
                    .http_status_as_error(false)
                    .timeout_connect(Some(provider.connect_timeout))
                    .timeout_recv_response(Some(provider.read_timeout))
                    .timeout_per_read(Some(provider.read_timeout))
                    .user_agent(concat!("aegis-agent/", env!("CARGO_PKG_VERSION")))
                    .build(),
            )),
        };
        Llm::over(provider, transport)
    }

    /// A client for `provider` whose requests travel by `transport`, knowing nothing yet
    /// of what the server refuses.
    fn over(provider: Provider, transport: Transport) -> Llm {
        let openai_itself = provider.at_openai();
        // A host's model server is asked as the host asks it (Chat Completions).
        let responses = provider.responses_api && provider.host.is_none();
        Llm {
            provider,
            transport,
            completion_tokens: Arc::new(AtomicBool::new(openai_itself)),
            adaptive: Arc::new(AtomicBool::new(false)),
            short_marks: Arc::new(AtomicBool::new(false)),
            unmarked: Arc::new(AtomicBool::new(false)),
            stand_in: Arc::new(AtomicU8::new(StandIn::Nothing as u8)),
            no_stream_options: Arc::new(AtomicBool::new(false)),
            no_cache_key: Arc::new(AtomicBool::new(false)),
            responses: Arc::new(AtomicBool::new(responses)),
            no_encrypted: Arc::new(AtomicBool::new(false)),
            no_summaries: Arc::new(AtomicBool::new(false)),
            ledger: None,
            warned_window: Arc::new(AtomicBool::new(false)),
            no_web_search: Arc::new(AtomicBool::new(false)),
            successor: Default::default(),
        }
    }

    /// A client for `model` at the same server, as a chat chose it (`/model`): it shares
    /// this one's connections and usage record, and learns the server's refusals for
    /// itself (what one model refuses, another may take). Never replaced when retired:
    /// the user named it.
    pub fn for_model(&self, model: &str) -> Llm {
        let mut provider = self.provider.clone();
        provider.model = model.to_string();
        provider.default_model = false;
        Llm {
            ledger: self.ledger.clone(),
            ..Llm::over(provider, self.transport.clone())
        }
    }

    /// The API it speaks, for a provider reached over HTTP (`None`: the host's model
    /// server, `host:NAME`).
    pub fn kind(&self) -> Option<ProviderKind> {
        self.provider.host.is_none().then_some(self.provider.kind)
    }

    /// Whether it asks OpenRouter, whose model names begin with their vendor's.
    pub fn on_openrouter(&self) -> bool {
        self.provider.base_url.starts_with("https://openrouter.ai/")
    }

    /// The model its requests name (the configured one, or its successor).
    pub fn model_name(&self) -> String {
        self.model()
    }

    /// Where its requests go, for people: the provider and the server's host
    /// (`OpenAI at api.openai.com`), or the host's model server.
    pub fn whereabouts(&self) -> String {
        let p = &self.provider;
        match &p.host {
            Some(host) => format!("the host's {host}"),
            None => {
                let at = crate::elicit::host_of(&p.base_url).unwrap_or_else(|| p.base_url.clone());
                format!("{} at {at}", p.kind)
            }
        }
    }

    /// The models the server lists for the key (`GET /models`), as the server orders
    /// them, with their `created` time where it says.
    pub fn list_models(&self) -> Result<Vec<(String, i64)>, String> {
        match &self.transport {
            Transport::Http(lanes) => crate::successor::models(&lanes.any(), &self.provider),
            Transport::Host(_) => Err("the host's model servers are not listed from here".into()),
        }
    }

    /// The same client, adding the usage of every request to `ledger`.
    pub fn with_ledger(mut self, ledger: Arc<Ledger>) -> Llm {
        self.ledger = Some(ledger);
        self
    }

    /// The model as the usage record names it (`host:ollama/llama3.2` through the host).
    fn label(&self) -> String {
        match &self.provider.host {
            Some(host) => format!("host:{host}/{}", self.provider.model),
            None => self.model(),
        }
    }

    /// End a round of request `body` that came whole: its usage recorded and passed on,
    /// what is left of its text sent, its calls.
    fn finish(
        &self,
        body: &serde_json::Value,
        decoder: &mut Decoder,
        tx: &Sender<Chunk>,
        sent_any: &mut bool,
    ) -> Vec<ToolCall> {
        if !decoder.usage.is_empty() {
            self.record(&decoder.usage);
            self.check_window(body, &decoder.usage);
        }
        complete(decoder, tx, sent_any)
    }

    /// Add one request's `usage` to the record, if there is one.
    fn record(&self, usage: &Tokens) {
        if let Some(ledger) = &self.ledger {
            ledger.record(&self.label(), usage);
        }
    }

    /// Say (once) when a local or compatible server read much less of `body` than was
    /// sent: its context window is cutting the conversation, and the model forgets
    /// without a word. OpenAI and Anthropic refuse a request too long instead.
    fn check_window(&self, body: &serde_json::Value, usage: &Tokens) {
        let own =
            self.provider.host.is_none() && self.provider.base_url.starts_with("https://api.openai.com/");
        if self.provider.kind != ProviderKind::OpenAi || own || self.warned_window.load(Ordering::Relaxed) {
            return;
        }
        let sent = crate::usage::estimated_tokens(body);
        if crate::usage::cut_short(usage.input, sent) {
            self.warned_window.store(true, Ordering::Relaxed);
            log::warn!(
                "{} read {} tokens of a request of about {sent}: its context window cuts the \
                 conversation and the tool list, and the model forgets without a word. Raise \
                 it on the server (Ollama: OLLAMA_CONTEXT_LENGTH=32768, or num_ctx; its default \
                 is 4096). (A server that leaves what its cache served out of its count can \
                 look the same.)",
                self.label(),
                usage.input
            );
        }
    }

    /// How long a mark asking for `ttl` asks for: 5 minutes where an hour was refused.
    fn kept(&self, ttl: Ttl) -> Ttl {
        if self.short_marks.load(Ordering::Relaxed) {
            Ttl::Minutes5
        } else {
            ttl
        }
    }

    /// The marks `prompt` asks for, unless the server refused marks: Claude's, and in the
    /// Chat Completions dialect only for a Claude model (a router such as OpenRouter,
    /// LiteLLM or Portkey passes them on to Anthropic; every other model caches on its own).
    /// Each kept as long as the server allows ([`Llm::kept`]); `model` is the one asked.
    fn marks(&self, prompt: &Prompt, model: &str) -> Option<Marks> {
        let claude = match self.provider.kind {
            ProviderKind::Anthropic => true,
            ProviderKind::OpenAi => model.to_ascii_lowercase().contains("claude"),
        };
        let m = prompt
            .cache
            .filter(|_| claude && !self.unmarked.load(Ordering::Relaxed))?;
        Some(Marks {
            system: self.kept(m.system),
            conversation: self.kept(m.conversation),
        })
    }

    /// What stands in for thoughts the server wants back, as learnt so far.
    fn stand_in(&self) -> StandIn {
        StandIn::from_u8(self.stand_in.load(Ordering::Relaxed))
    }

    /// Start streaming a reply to `turns` on a new reader thread, offering `tools`.
    pub fn stream(&self, prompt: &Prompt, turns: &[Turn], tools: &[ToolSpec]) -> Stream {
        let (tx, rx) = unbounded();
        let (cancel_tx, cancel_rx) = bounded::<()>(0);
        let cut = Cut::new();
        let body = self.request_body(prompt, turns, tools);
        let me = self.clone();
        let reader_cut = cut.clone();
        let spawned = thread::Builder::new()
            .name("llm-reader".into())
            .stack_size(256 * 1024)
            .spawn(move || me.run(&body, &tx, &cancel_rx, &reader_cut));
        if let Err(e) = spawned {
            let (tx, rx2) = unbounded();
            let _ = tx.send(Chunk::End(Err(LlmError::new(
                ErrorKind::Connect,
                format!("no thread: {e}"),
            ))));
            return Stream {
                chunks: rx2,
                _cancel: cancel_tx,
                cut,
            };
        }
        Stream {
            chunks: rx,
            _cancel: cancel_tx,
            cut,
        }
    }

    /// The model requests name: the configured one, or its successor.
    fn model(&self) -> String {
        self.successor.model(&self.provider.model)
    }

    /// When the agent's default model is gone, the model to ask instead (at most one
    /// search per process: a server that lists nothing better is not asked each message).
    fn replace_retired_model(&self, err: &LlmError) -> Option<String> {
        let Transport::Http(lanes) = &self.transport else {
            return None;
        };
        if !self.provider.default_model || !crate::successor::model_gone(err) {
            return None;
        }
        let gone = self.model();
        match self
            .successor
            .seek(|| crate::successor::find(&lanes.any(), &self.provider))?
        {
            Ok(next) => {
                log::warn!(
                    "model {gone} is gone ({}); using {next}, the newest of its kind this key can use \
                     (set AEGIS_MODEL or agent.json model to choose)",
                    err.detail
                );
                Some(next)
            }
            Err(e) => {
                log::warn!(
                    "model {gone} is gone ({}), and no other was found: {e}",
                    err.detail
                );
                None
            }
        }
    }

    /// The request body for `turns` (a valid context: see `context.rs`).
    pub fn request_body(&self, prompt: &Prompt, turns: &[Turn], tools: &[ToolSpec]) -> serde_json::Value {
        let p = &self.provider;
        let model = self.model();
        let marks = self.marks(prompt, &model);
        match p.kind {
            ProviderKind::OpenAi => {
                // OpenAI and local servers (llama.cpp, vLLM, Ollama) reuse the longest
                // prefix they saw: the notes go last. Claude behind a router is marked.
                let system = match marks {
                    Some(m) => crate::prompt_cache::openai_system(prompt.fixed, prompt.recap, m.system),
                    None => prompt.system().into(),
                };
                let mut messages = vec![serde_json::json!({"role": "system", "content": system})];
                messages.extend(turns.iter().map(openai_message));
                crate::carry::carry(&mut messages[1..], turns, self.stand_in());
                let question = turns.iter().rposition(|t| t.role == Role::User).map(|i| i + 1);
                match (marks, question) {
                    (Some(m), _) => crate::prompt_cache::mark_openai(
                        &mut messages,
                        question,
                        prompt.notes,
                        m.conversation,
                    ),
                    (None, Some(q)) => add_openai_notes(&mut messages[q], prompt.notes),
                    (None, None) => {}
                }
                // Last: the messages it inserts shift those after them.
                crate::shown::openai_follow_ups(&mut messages, turns);
                let mut body = serde_json::json!({"model": model, "messages": messages, "stream": true});
                if !self.no_stream_options.load(Ordering::Relaxed) {
                    // Its last chunk then says what the request cost.
                    body["stream_options"] = serde_json::json!({"include_usage": true});
                }
                if let Some(key) = prompt
                    .cache_key
                    .filter(|_| !self.no_cache_key.load(Ordering::Relaxed))
                {
                    body["prompt_cache_key"] = key.into();
                }
                if let Some(m) = p.max_tokens {
                    let name = if self.completion_tokens.load(Ordering::Relaxed) {
                        "max_completion_tokens"
                    } else {
                        "max_tokens"
                    };
                    body[name] = m.into();
                }
                if let Some(e) = &p.reasoning_effort {
                    body["reasoning_effort"] = e.as_str().into();
                }
                // Only OpenRouter's keeps a thinking setting in this dialect (config.rs).
                match p.thinking {
                    Some(Thinking::Budget(budget)) => {
                        body["reasoning"] = serde_json::json!({"max_tokens": budget})
                    }
                    Some(Thinking::Adaptive) => body["reasoning"] = serde_json::json!({"enabled": true}),
                    None => {}
                }
                let mut offered: Vec<serde_json::Value> = tools
                    .iter()
                    .map(|t| {
                        serde_json::json!({"type": "function", "function": {
                            "name": t.name, "description": t.description, "parameters": t.input_schema}})
                    })
                    .collect();
                // Only with the Responses API, which the setting turns on (config.rs).
                if let Some(search) = self.searches(prompt) {
                    offered.push(crate::native_search::openai_tool(search));
                    body["max_tool_calls"] = search.max_uses.into();
                }
                if !offered.is_empty() {
                    body["tools"] = offered.into();
                }
                body
            }
            ProviderKind::Anthropic => {
                // Thinking is part of the reply's tokens: the answer keeps its 4096 on top
                // of a budget; adaptive thinking gets the room Anthropic's examples give it.
                let max_tokens = p.max_tokens.unwrap_or(match p.thinking {
                    Some(Thinking::Budget(budget)) => 4096 + budget,
                    Some(Thinking::Adaptive) => 16_000,
                    None => 4096,
                });
                let mut body = serde_json::json!({
                    "model": model,
                    "max_tokens": max_tokens,
                    "system": crate::prompt_cache::anthropic_system(prompt.fixed, prompt.recap, marks.map(|m| m.system)),
                    "messages": anthropic_messages(turns, prompt.notes, marks.map(|m| m.conversation)),
                    "stream": true,
                });
                match p.thinking {
                    Some(Thinking::Budget(budget)) if !self.adaptive.load(Ordering::Relaxed) => {
                        body["thinking"] = serde_json::json!({"type": "enabled", "budget_tokens": budget});
                    }
                    Some(_) => body["thinking"] = serde_json::json!({"type": "adaptive"}),
                    None => {}
                }
                if let Some(e) = &p.reasoning_effort {
                    body["output_config"] = serde_json::json!({"effort": e});
                }
                let mut offered: Vec<serde_json::Value> = tools
                    .iter()
                    .map(|t| serde_json::json!({"name": t.name, "description": t.description, "input_schema": t.input_schema}))
                    .collect();
                if let Some(search) = self.searches(prompt) {
                    offered.push(crate::native_search::anthropic_tool(search));
                }
                if !offered.is_empty() {
                    body["tools"] = offered.into();
                }
                body
            }
        }
    }

    /// How many searches of its own the provider may run for `prompt`, if it searches: a
    /// reply's requests only (a recap has no use for the web), unless refused.
    fn searches(&self, prompt: &Prompt) -> Option<&crate::native_search::NativeSearch> {
        let refused = self.no_web_search.load(Ordering::Relaxed);
        self.provider
            .web_search
            .as_ref()
            .filter(|_| prompt.reply && !refused)
    }

    /// `body` as it is to be sent again at once, when `err` is a refusal that says what
    /// to change; what was learnt holds for every later request of this process.
    fn corrected(&self, body: &serde_json::Value, err: &LlmError) -> Option<serde_json::Value> {
        let openai = self.provider.kind == ProviderKind::OpenAi;
        if openai && crate::responses::wanted(err) {
            // Another session's request may have learnt it first: this one goes there too.
            if !self.responses.swap(true, Ordering::Relaxed) {
                log::info!(
                    "Chat Completions does not serve {}; asking OpenAI's Responses API from now on",
                    self.model()
                );
            }
            return Some(body.clone());
        }
        // What a Responses request asks for beside the answer, each dropped once refused.
        type Refuses = fn(&LlmError) -> bool;
        let extras: [(Refuses, &AtomicBool, &str); 2] = [
            (
                crate::responses::refuses_encrypted,
                &self.no_encrypted,
                "no encrypted reasoning",
            ),
            (
                crate::responses::refuses_summaries,
                &self.no_summaries,
                "no reasoning summaries",
            ),
        ];
        if openai && self.responses.load(Ordering::Relaxed) {
            for (refuses, dropped, what) in extras {
                if refuses(err) && !dropped.swap(true, Ordering::Relaxed) {
                    log::warn!(
                        "OpenAI gives {what} here ({}); asking again without, from now on",
                        err.detail
                    );
                    return Some(body.clone());
                }
            }
        }
        if let Some(renamed) = with_completion_tokens(body, err) {
            // A reasoning model behind a server that is not OpenAI's own (Azure, a proxy).
            log::info!("the model wants max_completion_tokens instead of max_tokens; asking again");
            self.completion_tokens.store(true, Ordering::Relaxed);
            return Some(renamed);
        }
        if let Some(next) = self.replace_retired_model(err) {
            let mut renamed = body.clone();
            renamed["model"] = next.into();
            return Some(renamed);
        }
        let search_refused = matches!(err.kind, ErrorKind::Request | ErrorKind::Auth);
        if let Some(plain) = crate::native_search::without_it(body, &err.detail).filter(|_| search_refused) {
            log::warn!(
                "{} refuses its web search here ({}); asking without it, from now on",
                self.provider.kind,
                err.detail
            );
            self.no_web_search.store(true, Ordering::Relaxed);
            return Some(plain);
        }
        if let Some(plain) = without(body, err, "stream_options") {
            log::info!("the server refuses stream_options; asking again without (no usage counts)");
            self.no_stream_options.store(true, Ordering::Relaxed);
            return Some(plain);
        }
        if let Some(plain) = without(body, err, "prompt_cache_key") {
            log::info!("the server refuses prompt_cache_key; asking again without");
            self.no_cache_key.store(true, Ordering::Relaxed);
            return Some(plain);
        }
        if let Some(short) = with_short_marks(body, err) {
            log::info!("the server refuses cache marks kept an hour; asking again with 5-minute ones");
            self.short_marks.store(true, Ordering::Relaxed);
            return Some(short);
        }
        let asked = StandIn::asked_by(err).filter(|_| self.stand_in() != StandIn::Refused);
        if let Some((stand_in, filled)) =
            asked.and_then(|s| Some((s, crate::carry::with_stand_ins(body, s)?)))
        {
            log::warn!(
                "the server wants a reasoning model's thoughts back on tool calls the session has none for; \
                 asking again with stand-ins ({})",
                err.detail
            );
            self.stand_in.store(stand_in as u8, Ordering::Relaxed);
            return Some(filled);
        }
        if let Some(plain) = crate::carry::without_carried(body, err) {
            log::warn!(
                "the server refuses a reasoning model's thoughts sent back ({}); asking again without them, from now on",
                err.detail
            );
            self.stand_in.store(StandIn::Refused as u8, Ordering::Relaxed);
            return Some(plain);
        }
        if let Some(plain) = without_marks(body, err) {
            log::warn!(
                "the server refuses prompt cache marks ({}); asking again without them, from now on",
                err.detail
            );
            self.unmarked.store(true, Ordering::Relaxed);
            return Some(plain);
        }
        let adaptive = with_adaptive_thinking(body, err)?;
        log::info!("the model takes only adaptive thinking, not a budget; asking again");
        self.adaptive.store(true, Ordering::Relaxed);
        Some(adaptive)
    }

    fn run(&self, body: &serde_json::Value, tx: &Sender<Chunk>, cancel: &Receiver<()>, cut: &Cut) {
        let mut body = std::borrow::Cow::Borrowed(body);
        let (mut attempt, mut corrections) = (0, 0);
        loop {
            attempt += 1;
            let mut sent_any = false;
            let result = self.attempt(&body, tx, &mut sent_any, (cancel, cut));
            let err = match result {
                Ok(calls) => {
                    let _ = tx.send(Chunk::End(Ok(calls)));
                    return;
                }
                Err(_) if cut.fired() => return, // cancelled: nobody listens any more
                Err(e) => e,
            };
            // A server that keeps refusing what was corrected is not asked forever.
            let correctable = corrections < MAX_CORRECTIONS;
            if let Some(corrected) = self.corrected(&body, &err).filter(|_| correctable) {
                body = std::borrow::Cow::Owned(corrected);
                attempt -= 1;
                corrections += 1;
                continue;
            }
            if !err.retryable() || attempt >= self.provider.attempts {
                let _ = tx.send(Chunk::End(Err(err)));
                return;
            }
            if sent_any && tx.send(Chunk::Restart).is_err() {
                return; // cancelled
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
        (cancel, cut): (&Receiver<()>, &Cut),
    ) -> Result<Vec<ToolCall>, LlmError> {
        let p = &self.provider;
        let lanes = match &self.transport {
            Transport::Http(lanes) => lanes,
            Transport::Host(link) => return self.attempt_host(link, body, tx, sent_any, cancel),
        };
        let Some(agent) = lanes.lend(cut) else {
            return Ok(Vec::new()); // cancelled before it began
        };
        // Read once: another session's refusal may turn it on while this stream runs.
        let responses = p.kind == ProviderKind::OpenAi && self.responses.load(Ordering::Relaxed);
        let text = match responses {
            true => {
                let asks = crate::responses::Asks {
                    encrypted: !self.no_encrypted.load(Ordering::Relaxed),
                    summaries: !self.no_summaries.load(Ordering::Relaxed),
                };
                crate::responses::request(body, asks).to_string()
            }
            false => body.to_string(),
        };
        let mut req = match p.kind {
            ProviderKind::OpenAi if responses => agent.post(format!("{}/responses", p.base_url)),
            ProviderKind::OpenAi => agent.post(format!("{}/chat/completions", p.base_url)),
            ProviderKind::Anthropic => agent
                .post(format!("{}/v1/messages", p.base_url))
                .header("anthropic-version", "2023-06-01"),
        };
        // A string inside the body is escaped: only a mark reads like this.
        if p.kind == ProviderKind::Anthropic && text.contains(r#""ttl":"1h""#) {
            req = req.header("anthropic-beta", crate::prompt_cache::HOUR_BETA);
        }
        req = req.header("accept", "text/event-stream");
        if let Some((name, value)) = p.key_header() {
            req = req.header(name, value);
        }
        let resp = req
            .content_type("application/json")
            .send(text)
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
            let text = tether::http::error_text(resp);
            let mut e = status_error(status, &text);
            e.retry_after = retry_after;
            return Err(e);
        }
        let mut decoder = Decoder::default();
        let reader = resp.into_body().into_reader();
        let read = self.read_stream((body, responses), reader, &mut decoder, tx, sent_any);
        // A reply stopped midway, or a stream cut, was billed for what it had told of
        // (Anthropic counts the input at its start): that is counted too.
        if !decoder.usage.is_empty() {
            self.record(&decoder.usage);
        }
        read
    }

    /// Read the SSE stream of one attempt (of `body`, asked of the Responses API or not)
    /// into `decoder` until the reply is complete.
    fn read_stream(
        &self,
        (body, responses): (&serde_json::Value, bool),
        mut reader: impl Read,
        decoder: &mut Decoder,
        tx: &Sender<Chunk>,
        sent_any: &mut bool,
    ) -> Result<Vec<ToolCall>, LlmError> {
        let mut parser = sse::Parser::new();
        let mut events = Vec::new();
        let mut buf = vec![0u8; 16 * 1024];
        let mut finished = false;
        loop {
            let n = match reader.read(&mut buf) {
                Ok(n) => n,
                Err(e) if decoder.finished => {
                    log::debug!("stream closed after its finish_reason: {e}");
                    return Ok(self.finish(body, decoder, tx, sent_any));
                }
                Err(e) => return Err(read_error(&e)),
            };
            if n == 0 {
                break;
            }
            parser
                .feed(&buf[..n], &mut events)
                .map_err(|e| LlmError::new(ErrorKind::Malformed, e.to_string()))?;
            for ev in events.drain(..) {
                match self.step(&ev, decoder, responses)? {
                    Step::Delta(d) => {
                        if !pass_on(d, decoder, tx, sent_any) {
                            return Ok(Vec::new()); // cancelled: nobody listens any more
                        }
                    }
                    Step::Presence(state) => {
                        if tx.send(Chunk::Presence(state)).is_err() {
                            return Ok(Vec::new()); // cancelled
                        }
                    }
                    Step::Done => finished = true,
                    Step::Nothing => {}
                }
            }
            if finished {
                return Ok(self.finish(body, decoder, tx, sent_any));
            }
        }
        let _ = parser.finish();
        if decoder.finished {
            return Ok(self.finish(body, decoder, tx, sent_any));
        }
        Err(LlmError::new(
            ErrorKind::Cut,
            "the stream ended before the reply was complete",
        ))
    }

    /// One attempt through the host: the request goes up once, its chunks come back as
    /// `llm.frame`s (OpenAI chunks, as from `/chat/completions`). A cancel ends it at once,
    /// telling the host, even while no chunk comes.
    fn attempt_host(
        &self,
        link: &HostLink,
        body: &serde_json::Value,
        tx: &Sender<Chunk>,
        sent_any: &mut bool,
        cancel: &Receiver<()>,
    ) -> Result<Vec<ToolCall>, LlmError> {
        let name = self.provider.host.as_deref().unwrap_or_default();
        let ours = link.next_id();
        let mut route = link.routes.open(&ours);
        let theirs = link
            .request(&ours, name, &self.provider.model, body)
            .map_err(|r| refused_error(name, &r))?;
        if theirs != ours {
            route.alias(&theirs);
        }
        // Whatever ends this reading early (a cancel, a timeout, a bad chunk) also ends
        // the host's generation.
        let mut stream = HostStream {
            link,
            req_id: &theirs,
            ended: false,
        };
        let mut decoder = Decoder::default();
        loop {
            let frame = select! {
                recv(route.frames) -> f => f.ok(),
                // Nothing is ever sent: the `Stream` dropped its end.
                recv(cancel) -> _ => return Ok(Vec::new()),
                default(self.provider.read_timeout) => None,
            };
            let Some(frame) = frame else {
                return Err(LlmError::new(
                    ErrorKind::Timeout,
                    format!("no chunk from host:{name} within the read timeout"),
                ));
            };
            match frame.kind.as_str() {
                "llm.delta" => {
                    if !host_delta(&frame, &mut decoder, tx, sent_any)? {
                        return Ok(Vec::new()); // cancelled
                    }
                }
                "llm.done" => {
                    stream.ended = true;
                    if link.reorders() {
                        for late in route.settle() {
                            if late.kind == "llm.delta" && !host_delta(&late, &mut decoder, tx, sent_any)? {
                                return Ok(Vec::new());
                            }
                        }
                    }
                    return Ok(self.finish(body, &mut decoder, tx, sent_any));
                }
                "llm.error" => {
                    stream.ended = true;
                    return Err(host_error(name, frame.error.as_deref().unwrap_or("")));
                }
                other => log::debug!("host:{name}: ignoring {other} frame"),
            }
        }
    }

    fn step(&self, ev: &sse::Event, decoder: &mut Decoder, responses: bool) -> Result<Step, LlmError> {
        match self.provider.kind {
            ProviderKind::OpenAi if responses => responses_step(ev, decoder),
            ProviderKind::OpenAi => openai_step(ev, decoder),
            ProviderKind::Anthropic => anthropic_step(ev, decoder),
        }
    }
}

/// A `host:` model's stream being read; dropped before its end, it asks the host to stop.
struct HostStream<'a> {
    link: &'a HostLink,
    req_id: &'a str,
    /// `llm.done` or `llm.error` arrived: nothing is left to stop.
    ended: bool,
}

impl Drop for HostStream<'_> {
    fn drop(&mut self) {
        if !self.ended {
            self.link.cancel(self.req_id);
        }
    }
}

fn malformed(what: &str, e: impl fmt::Display) -> LlmError {
    LlmError::new(ErrorKind::Malformed, format!("malformed {what}: {e}"))
}

fn openai_step(ev: &sse::Event, decoder: &mut Decoder) -> Result<Step, LlmError> {
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
    // The last chunk of a stream asked with `include_usage` (its `choices` empty).
    if let Some(t) = v.get("usage").and_then(Tokens::from_openai) {
        decoder.usage = t;
    }
    let choice = &v["choices"][0];
    if let Some(calls) = choice["delta"]["tool_calls"].as_array() {
        for (pos, c) in calls.iter().enumerate() {
            let index = c["index"].as_u64().unwrap_or(pos as u64);
            let partial = decoder.calls.entry(index).or_default();
            if let Some(id) = c["id"].as_str() {
                partial.id = id.to_string();
            }
            if let Some(name) = c["function"]["name"].as_str() {
                partial.name.push_str(name);
            }
            if let Some(args) = c["function"]["arguments"].as_str() {
                partial.arguments.push_str(args);
            }
            if let Some(extra) = c.get("extra_content").filter(|e| e.is_object()) {
                partial.extra = Some(extra.clone());
            }
        }
    }
    if choice["finish_reason"].is_string() {
        decoder.finished = true;
    }
    let delta = &choice["delta"];
    if let Some(piece) = delta["reasoning_content"].as_str() {
        decoder
            .carried
            .content
            .get_or_insert_with(String::new)
            .push_str(piece);
    }
    for piece in delta["reasoning_details"].as_array().into_iter().flatten() {
        decoder.carried.add_detail(piece);
    }
    // Ollama and OpenRouter name the thoughts `reasoning`; DeepSeek, vLLM and LM Studio
    // `reasoning_content`.
    let reasoning = [&delta["reasoning_content"], &delta["reasoning"]]
        .into_iter()
        .find_map(|r| r.as_str().filter(|r| !r.is_empty()));
    let text = delta["content"].as_str();
    if reasoning.is_none() && text.is_none() {
        return Ok(Step::Nothing);
    }
    Ok(Step::Delta(Split {
        reasoning: reasoning.unwrap_or_default().to_string(),
        text: text.unwrap_or_default().to_string(),
    }))
}

/// One event of a Responses API stream, into `decoder` as a Chat Completions chunk would go.
fn responses_step(ev: &sse::Event, decoder: &mut Decoder) -> Result<Step, LlmError> {
    use crate::responses::Event;
    let delta = |reasoning: String, text: String| Step::Delta(Split { reasoning, text });
    Ok(match crate::responses::step(&ev.data)? {
        Event::Text(t) => {
            decoder.said.push_str(&t);
            delta(String::new(), t)
        }
        Event::Reasoning(r) => delta(r, String::new()),
        Event::Call(index, id, name) => {
            let call = decoder.calls.entry(index).or_default();
            (call.id, call.name) = (id, name);
            Step::Nothing
        }
        Event::Arguments(index, piece) => {
            decoder.calls.entry(index).or_default().arguments.push_str(&piece);
            Step::Nothing
        }
        Event::AllArguments(index, all) => {
            decoder.calls.entry(index).or_default().arguments = all;
            Step::Nothing
        }
        Event::Thought(item) => {
            decoder.carried.details.push(item);
            Step::Nothing
        }
        Event::Searching => Step::Presence("tool: web_search".into()),
        Event::Searched(item) => {
            let action = item["action"]["type"].as_str().unwrap_or("search");
            log::info!(
                "web_search_call: {action} ({})",
                item["status"].as_str().unwrap_or("done")
            );
            if crate::native_search::openai_searched(&item) {
                decoder.usage.web_searches += 1;
            }
            // Back with the reasoning it came among, should the round end in tool calls.
            decoder
                .carried
                .details
                .extend(crate::native_search::openai_call(&item));
            Step::Presence("thinking".into())
        }
        Event::Cited(citations) => {
            for c in citations {
                let linked = c["url"].as_str().is_some_and(|u| decoder.said.contains(u));
                if !linked {
                    crate::native_search::source_number(&mut decoder.sources, &c);
                }
            }
            Step::Nothing
        }
        Event::Done(usage) => {
            if let Some(t) = usage.as_ref().and_then(Tokens::from_openai) {
                // The searches were counted from the stream: the usage does not say.
                decoder.usage = Tokens {
                    web_searches: decoder.usage.web_searches,
                    ..t
                };
            }
            decoder.finished = true;
            Step::Done
        }
        Event::Nothing => Step::Nothing,
    })
}

fn anthropic_step(ev: &sse::Event, decoder: &mut Decoder) -> Result<Step, LlmError> {
    let v: serde_json::Value = serde_json::from_str(&ev.data).map_err(|e| malformed("event", e))?;
    let kind = ev.event.as_deref().or(v["type"].as_str()).unwrap_or("");
    let index = v["index"].as_u64().unwrap_or(0);
    match kind {
        "content_block_start" if v["content_block"]["type"] == "thinking" => {
            let block = &v["content_block"];
            let thinking = Block::Thinking {
                thinking: block["thinking"].as_str().unwrap_or_default().to_string(),
                signature: block["signature"].as_str().unwrap_or_default().to_string(),
            };
            decoder.signed.push((index, thinking));
            Ok(Step::Nothing)
        }
        "content_block_start" if v["content_block"]["type"] == "redacted_thinking" => {
            let data = v["content_block"]["data"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            decoder.signed.push((index, Block::RedactedThinking { data }));
            Ok(Step::Nothing)
        }
        // Text in its place among the round's blocks: a turn with Anthropic's own searches
        // goes back in the order it came (see `complete`).
        "content_block_start" if v["content_block"]["type"] == "text" => {
            let text = v["content_block"]["text"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            decoder.signed.push((index, Block::Text { text }));
            Ok(Step::Nothing)
        }
        "content_block_start" if v["content_block"]["type"] == "tool_use" => {
            let block = &v["content_block"];
            let partial = decoder.calls.entry(index).or_default();
            partial.id = block["id"].as_str().unwrap_or_default().to_string();
            partial.name = block["name"].as_str().unwrap_or_default().to_string();
            Ok(Step::Nothing)
        }
        // A tool Anthropic runs itself (its web search): kept to go back as it came; its
        // input arrives in pieces like a client tool's.
        "content_block_start" if v["content_block"]["type"] == "server_tool_use" => {
            let block = v["content_block"].clone();
            let name = block["name"].as_str().unwrap_or("a server tool").to_string();
            decoder.server_input.insert(index, String::new());
            decoder.signed.push((index, Block::Server { block }));
            Ok(Step::Presence(format!("tool: {name}")))
        }
        "content_block_start" if crate::native_search::is_server_result(&v["content_block"]) => {
            crate::native_search::log_result(&v["content_block"]);
            let block = v["content_block"].clone();
            decoder.signed.push((index, Block::Server { block }));
            Ok(Step::Presence("thinking".into()))
        }
        "content_block_stop" => {
            if let Some(input) = decoder.server_input.remove(&index) {
                if let Some(Block::Server { block }) = decoder.signed_block(index) {
                    block["input"] = crate::native_search::input_of(&input);
                }
            }
            // A passage that cites sources ends with their numbers.
            Ok(match decoder.cited.remove(&index) {
                Some(numbers) => {
                    let marks = crate::native_search::marks(&numbers);
                    if let Some(Block::Text { text }) = decoder.signed_block(index) {
                        text.push_str(&marks);
                    }
                    Step::Delta(Split {
                        text: marks,
                        ..Split::default()
                    })
                }
                None => Step::Nothing,
            })
        }
        "content_block_delta" => Ok(match v["delta"]["type"].as_str() {
            Some("text_delta") => {
                let piece = v["delta"]["text"].as_str().unwrap_or_default();
                if let Some(Block::Text { text }) = decoder.signed_block(index) {
                    text.push_str(piece);
                }
                Step::Delta(Split {
                    text: piece.to_string(),
                    ..Split::default()
                })
            }
            // Extended thinking, for a request that turned it on.
            Some("thinking_delta") => {
                let piece = v["delta"]["thinking"].as_str().unwrap_or_default();
                if let Some(Block::Thinking { thinking, .. }) = decoder.signed_block(index) {
                    thinking.push_str(piece);
                }
                Step::Delta(Split {
                    reasoning: piece.to_string(),
                    ..Split::default()
                })
            }
            Some("signature_delta") => {
                if let Some(Block::Thinking { signature, .. }) = decoder.signed_block(index) {
                    signature.push_str(v["delta"]["signature"].as_str().unwrap_or_default());
                }
                Step::Nothing
            }
            Some("input_json_delta") => {
                let piece = v["delta"]["partial_json"].as_str().unwrap_or_default();
                if let Some(p) = decoder.calls.get_mut(&index) {
                    p.arguments.push_str(piece);
                } else if let Some(input) = decoder.server_input.get_mut(&index) {
                    input.push_str(piece);
                }
                Step::Nothing
            }
            Some("citations_delta") => {
                let number =
                    crate::native_search::source_number(&mut decoder.sources, &v["delta"]["citation"]);
                if let Some(n) = number {
                    let numbers = decoder.cited.entry(index).or_default();
                    if !numbers.contains(&n) {
                        numbers.push(n);
                    }
                }
                Step::Nothing
            }
            _ => Step::Nothing,
        }),
        "message_start" => {
            decoder.usage.merge_anthropic(&v["message"]["usage"]);
            Ok(Step::Nothing)
        }
        "message_delta" => {
            decoder.usage.merge_anthropic(&v["usage"]);
            if let Some(why) = v["delta"]["stop_reason"].as_str() {
                decoder.stop_reason = Some(why.to_string());
            }
            Ok(Step::Nothing)
        }
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
        _ => Ok(Step::Nothing), // ping, content_block_start/stop
    }
}

/// `notes` at the end of a Chat Completions user message.
fn add_openai_notes(message: &mut serde_json::Value, notes: &str) {
    if notes.is_empty() {
        return;
    }
    match &mut message["content"] {
        serde_json::Value::String(text) => {
            text.push_str("\n\n");
            text.push_str(notes);
        }
        serde_json::Value::Array(parts) => parts.push(serde_json::json!({"type": "text", "text": notes})),
        _ => {}
    }
}

/// One turn as a Chat Completions message.
fn openai_message(t: &Turn) -> serde_json::Value {
    match (t.role, &t.content) {
        (Role::Tool, _) => serde_json::json!({
            "role": "tool",
            "tool_call_id": t.tool_call_id.clone().unwrap_or_default(),
            "content": crate::shown::result_text(t),
        }),
        (Role::Assistant, c @ Content::Blocks(_)) if c.tool_uses().next().is_some() => {
            let text = c.text();
            let calls: Vec<serde_json::Value> = c
                .tool_uses()
                .map(|(id, name, input)| {
                    serde_json::json!({"id": id, "type": "function",
                        "function": {"name": name, "arguments": input.to_string()}})
                })
                .collect();
            serde_json::json!({
                "role": "assistant",
                "content": if text.is_empty() { serde_json::Value::Null } else { text.into() },
                "tool_calls": calls,
            })
        }
        (Role::User, Content::Blocks(bs)) if bs.iter().any(|b| matches!(b, Block::Image { .. })) => {
            let parts: Vec<serde_json::Value> = bs
                .iter()
                .filter_map(|b| match b {
                    Block::Text { text } if !text.is_empty() => {
                        Some(serde_json::json!({"type": "text", "text": text}))
                    }
                    Block::Image {
                        media_type,
                        data: Some(d),
                        ..
                    } => Some(serde_json::json!({
                        "type": "image_url", "image_url": {"url": format!("data:{media_type};base64,{d}")}})),
                    Block::Image { .. } => {
                        Some(serde_json::json!({"type": "text", "text": "[image no longer available]"}))
                    }
                    _ => None,
                })
                .collect();
            serde_json::json!({"role": "user", "content": parts})
        }
        (role, c) => serde_json::json!({"role": role, "content": c.text()}),
    }
}

/// A user turn as Messages API blocks: images first (as Anthropic recommends), then text.
fn anthropic_user_blocks(c: &Content) -> Vec<serde_json::Value> {
    let Content::Blocks(bs) = c else {
        return text_block(&c.text());
    };
    let mut out: Vec<serde_json::Value> = bs
        .iter()
        .filter_map(|b| match b {
            Block::Image {
                media_type,
                data: Some(d),
                ..
            } => Some(serde_json::json!({
                "type": "image", "source": {"type": "base64", "media_type": media_type, "data": d}})),
            Block::Image { .. } => {
                Some(serde_json::json!({"type": "text", "text": "[image no longer available]"}))
            }
            _ => None,
        })
        .collect();
    out.extend(text_block(&c.text()));
    out
}

/// Turns as Messages API messages: roles alternate, starting with the user. Tool results
/// are user-side `tool_result` blocks; consecutive turns of one side are merged (a failed
/// reply leaves two user turns in a row); a side that is all text stays a plain string.
fn anthropic_messages(turns: &[Turn], notes: &str, mark: Option<Ttl>) -> Vec<serde_json::Value> {
    let question = turns.iter().rposition(|t| t.role == Role::User);
    // Where the newest question ends: (message, block).
    let mut question_end = None;
    let mut sides: Vec<(&str, Vec<serde_json::Value>)> = Vec::new();
    for (i, t) in turns.iter().enumerate() {
        let (role, blocks) = match (t.role, &t.content) {
            (Role::Tool, _) => (
                "user",
                vec![serde_json::json!({"type": "tool_result",
                    "tool_use_id": t.tool_call_id.clone().unwrap_or_default(),
                    "content": crate::shown::anthropic_result(t)})],
            ),
            (Role::User, c) => ("user", anthropic_user_blocks(c)),
            (Role::Assistant, Content::Text(text)) => ("assistant", text_block(text)),
            (Role::Assistant, Content::Blocks(bs)) => (
                "assistant",
                bs.iter()
                    .filter_map(|b| match b {
                        Block::Text { text } if !text.is_empty() => Some(serde_json::json!({"type": "text", "text": text})),
                        Block::ToolUse { id, name, input } => {
                            let input = if input.is_object() { input.clone() } else { serde_json::json!({}) };
                            Some(serde_json::json!({"type": "tool_use", "id": id, "name": name, "input": input}))
                        }
                        Block::Thinking { thinking, signature } => Some(
                            serde_json::json!({"type": "thinking", "thinking": thinking, "signature": signature}),
                        ),
                        Block::RedactedThinking { data } => {
                            Some(serde_json::json!({"type": "redacted_thinking", "data": data}))
                        }
                        // Only the reply going on carries them on; an earlier reply's
                        // may hold a search whose result came in a later round, whose
                        // blocks were not kept.
                        Block::Server { block } if question.is_some_and(|q| i > q) => Some(block.clone()),
                        _ => None,
                    })
                    .collect(),
            ),
        };
        match sides.last_mut() {
            Some((r, existing)) if *r == role => existing.extend(blocks),
            _ => sides.push((role, blocks)),
        }
        if Some(i) == question {
            let at = sides.len() - 1;
            let side = &mut sides[at].1;
            question_end = side.len().checked_sub(1).map(|b| (at, b));
            if !notes.is_empty() {
                side.push(serde_json::json!({"type": "text", "text": notes}));
            }
        }
    }
    if let Some(ttl) = mark {
        crate::prompt_cache::mark_anthropic(&mut sides, question_end, ttl);
    }
    sides
        .into_iter()
        .map(|(role, blocks)| {
            let all_text = blocks
                .iter()
                .all(|b| b["type"] == "text" && b.get("cache_control").is_none());
            if all_text {
                let text: Vec<&str> = blocks.iter().filter_map(|b| b["text"].as_str()).collect();
                serde_json::json!({"role": role, "content": text.join("\n\n")})
            } else {
                serde_json::json!({"role": role, "content": blocks})
            }
        })
        .collect()
}

fn text_block(text: &str) -> Vec<serde_json::Value> {
    if text.is_empty() {
        Vec::new()
    } else {
        vec![serde_json::json!({"type": "text", "text": text})]
    }
}

/// Pass one `llm.delta` on; false when nobody listens any more (cancelled).
fn host_delta(
    frame: &LlmFrame,
    decoder: &mut Decoder,
    tx: &Sender<Chunk>,
    sent_any: &mut bool,
) -> Result<bool, LlmError> {
    let ev = sse::Event {
        event: None,
        data: frame.data.clone().unwrap_or_default(),
    };
    if ev.data.trim().is_empty() {
        return Ok(true);
    }
    Ok(match openai_step(&ev, decoder)? {
        Step::Delta(d) => pass_on(d, decoder, tx, sent_any),
        Step::Presence(_) | Step::Done | Step::Nothing => true,
    })
}

/// Send one event's thoughts and text on, the content split from thoughts written inline;
/// false when nobody listens any more (cancelled).
fn pass_on(d: Split, decoder: &mut Decoder, tx: &Sender<Chunk>, sent_any: &mut bool) -> bool {
    let inline = decoder.inline.feed(&d.text);
    send_split(d.reasoning + &inline.reasoning, inline.text, tx, sent_any)
}

/// The round is complete: what the inline split held back goes out, then the tool calls.
fn complete(decoder: &mut Decoder, tx: &Sender<Chunk>, sent_any: &mut bool) -> Vec<ToolCall> {
    let rest = decoder.inline.finish();
    send_split(rest.reasoning, rest.text, tx, sent_any);
    // What the answer cites, listed under it (Anthropic and OpenAI ask that an answer
    // shown to people show its sources).
    let sources = std::mem::take(&mut decoder.sources);
    if !sources.is_empty() {
        send_split(
            String::new(),
            crate::native_search::listing(&sources),
            tx,
            sent_any,
        );
    }
    if decoder.stop_reason.as_deref() == Some("pause_turn") {
        let _ = tx.send(Chunk::Paused);
    }
    // The round's text goes back in its place only around blocks of Anthropic's own
    // tools, which want the turn as it came (a paused turn above all); otherwise after
    // the thoughts, as the worker puts it.
    let searched = decoder
        .signed
        .iter()
        .any(|(_, b)| matches!(b, Block::Server { .. }));
    let thoughts: Vec<Block> = std::mem::take(&mut decoder.signed)
        .into_iter()
        .map(|(_, b)| b)
        .filter(|b| match b {
            // The API refuses an empty text block.
            Block::Text { text } => searched && !text.is_empty(),
            _ => true,
        })
        .collect();
    if !thoughts.is_empty() {
        let _ = tx.send(Chunk::Thoughts(thoughts));
    }
    // Taken: what is left in the decoder was not passed on (an attempt cut short).
    let usage = std::mem::take(&mut decoder.usage);
    if !usage.is_empty() {
        let _ = tx.send(Chunk::Usage(usage));
    }
    let mut carried = std::mem::take(&mut decoder.carried);
    for call in decoder.calls.values_mut().filter(|c| !c.name.is_empty()) {
        if let Some(extra) = call.extra.take() {
            carried.calls.insert(call.id.clone(), extra);
        }
    }
    let calls = std::mem::take(decoder).into_calls();
    // Thoughts behind an answer are not wanted back.
    if !carried.is_empty() && !calls.is_empty() {
        let _ = tx.send(Chunk::Carried(carried));
    }
    calls
}

fn send_split(reasoning: String, text: String, tx: &Sender<Chunk>, sent_any: &mut bool) -> bool {
    if !reasoning.is_empty() && tx.send(Chunk::Reasoning(reasoning)).is_err() {
        return false;
    }
    if text.is_empty() {
        return true;
    }
    *sent_any = true;
    tx.send(Chunk::Delta(text)).is_ok()
}

/// How aegisd (and serve) refuse a server name they do not know.
const UNKNOWN_SERVER: &str = "unknown host LLM provider";

/// That refusal, final: no retry can find the server.
fn unknown_server(name: &str) -> LlmError {
    LlmError::new(
        ErrorKind::Request,
        format!("the host has no model server named {name:?}"),
    )
}

/// The harness did not take a request for `host:NAME`.
fn refused_error(name: &str, r: &Refused) -> LlmError {
    match r.status {
        0 => LlmError::new(ErrorKind::Connect, r.message.clone()),
        404 | 405 => LlmError::new(
            ErrorKind::Request,
            format!(
                "this harness cannot reach models on the host (HTTP {}); host:{name} needs a newer AegisVM",
                r.status
            ),
        ),
        // aegisd refuses a name it does not know; nothing else it says is worth retrying
        // either, except a busy harness.
        _ if r.message.contains(UNKNOWN_SERVER) => unknown_server(name),
        s => {
            let mut e = status_error(s, "");
            e.detail = format!("HTTP {s}: {}", r.message);
            e
        }
    }
}

/// An `llm.error` from the host: aegisd reports a provider's HTTP error as
/// `provider returned STATUS: BODY`; anything else is a connection or stream failure.
fn host_error(name: &str, text: &str) -> LlmError {
    if let Some(rest) = text.strip_prefix("provider returned ") {
        let (code, body) = rest.split_once(':').unwrap_or((rest, ""));
        if let Ok(status) = code.trim().parse::<u16>() {
            let mut e = status_error(status, body.trim());
            e.detail = format!("host:{name}: {}", e.detail);
            return e;
        }
    }
    if text.starts_with(UNKNOWN_SERVER) {
        return unknown_server(name);
    }
    let kind = if text.starts_with("stream read") {
        ErrorKind::Cut
    } else {
        ErrorKind::Connect
    };
    LlmError::new(
        kind,
        format!("host:{name}: {}", text.chars().take(300).collect::<String>()),
    )
}

/// `body` with `max_tokens` renamed `max_completion_tokens`, when `err` is the refusal of
/// the old name that OpenAI's reasoning models answer (400, "Unsupported parameter:
/// 'max_tokens' is not supported with this model. Use 'max_completion_tokens' instead.").
fn with_completion_tokens(body: &serde_json::Value, err: &LlmError) -> Option<serde_json::Value> {
    let refused = err.kind == ErrorKind::Request && err.detail.contains("'max_completion_tokens'");
    let limit = body.get("max_tokens").filter(|_| refused)?;
    let mut renamed = body.clone();
    renamed["max_completion_tokens"] = limit.clone();
    renamed.as_object_mut()?.remove("max_tokens");
    Some(renamed)
}

/// `body` without the argument `name`, when `err` refuses it (a server that refuses what
/// it does not know: `stream_options` where there is no usage chunk, `prompt_cache_key`).
fn without(body: &serde_json::Value, err: &LlmError, name: &str) -> Option<serde_json::Value> {
    if err.kind != ErrorKind::Request || !err.detail.contains(name) {
        return None;
    }
    let mut plain = body.clone();
    plain.as_object_mut()?.remove(name)?;
    Some(plain)
}

/// `body` with cache marks kept the default 5 minutes, when `err` refuses a `ttl` (a
/// server that speaks the Messages API but not this part of it, or a proxy that drops
/// the beta header).
fn with_short_marks(body: &serde_json::Value, err: &LlmError) -> Option<serde_json::Value> {
    // `cache_control.ttl: Extra inputs are not permitted`, or the beta header refused.
    let about_ttl = ["cache_control", crate::prompt_cache::HOUR_BETA]
        .iter()
        .any(|w| err.detail.contains(w));
    let refused = err.kind == ErrorKind::Request && err.detail.contains("ttl") && about_ttl;
    refused.then(|| crate::prompt_cache::without_ttl(body))?
}

/// `body` without cache marks, when `err` refuses them: an OpenAI-compatible server that
/// checks what a message part may hold, or a router whose provider takes none.
fn without_marks(body: &serde_json::Value, err: &LlmError) -> Option<serde_json::Value> {
    if err.kind != ErrorKind::Request || !err.detail.contains("cache_control") {
        return None;
    }
    crate::prompt_cache::without_marks(body)
}

/// `body` with adaptive thinking instead of a budget, when `err` is the refusal of the
/// budget form by the newest Claude models (400, "\"thinking.type.enabled\" is not
/// supported for this model. Use \"thinking.type.adaptive\" and \"output_config.effort\"
/// to control thinking behavior.").
fn with_adaptive_thinking(body: &serde_json::Value, err: &LlmError) -> Option<serde_json::Value> {
    let refused = err.kind == ErrorKind::Request && err.detail.contains("thinking.type.adaptive");
    if !refused || body["thinking"]["type"] != "enabled" {
        return None;
    }
    let mut adaptive = body.clone();
    adaptive["thinking"] = serde_json::json!({"type": "adaptive"});
    Some(adaptive)
}

fn status_error(status: u16, body: &str) -> LlmError {
    let detail = tether::http::error_words(body);
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
    // A certificate that does not verify fails the same way on every attempt, so it is not
    // retried; rustls' error arrives bare or inside the handshake's io::Error.
    let rustls_error = match e {
        ureq::Error::Rustls(r) => Some(r),
        ureq::Error::Io(io) => io
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>()),
        _ => None,
    };
    match (e, rustls_error) {
        (ureq::Error::Timeout(_), _) => LlmError::new(ErrorKind::Timeout, "no response in time"),
        (_, Some(r @ rustls::Error::InvalidCertificate(_))) => {
            LlmError::new(ErrorKind::Certificate, r.to_string())
        }
        (other, _) => LlmError::new(ErrorKind::Connect, other.to_string()),
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
            matches!(openai_step(&ev(None, r#"{"choices":[{"delta":{"content":"Hi"}}]}"#), &mut Decoder::default()), Ok(Step::Delta(d)) if d.text == "Hi" && d.reasoning.is_empty())
        );
        assert!(matches!(
            openai_step(
                &ev(None, r#"{"choices":[{"delta":{"role":"assistant"}}]}"#),
                &mut Decoder::default()
            ),
            Ok(Step::Nothing)
        ));
        assert!(matches!(
            openai_step(&ev(None, "[DONE]"), &mut Decoder::default()),
            Ok(Step::Done)
        ));
        assert!(matches!(
            openai_step(&ev(None, "{bad"), &mut Decoder::default()),
            Err(LlmError {
                kind: ErrorKind::Malformed,
                ..
            })
        ));
    }

    /// What a server wants back with tool calls is put together from the stream and
    /// passed on at the round's end: DeepSeek's `reasoning_content` in pieces, OpenRouter's
    /// `reasoning_details` pieces joined by `index`; Ollama's `reasoning` is only shown.
    #[test]
    fn tool_arguments_too_deep_to_read_are_kept_as_text() {
        let call = |arguments: String| {
            let mut d = Decoder::default();
            d.calls.insert(
                0,
                PartialCall {
                    id: "c1".into(),
                    name: "bash".into(),
                    arguments,
                    extra: None,
                },
            );
            d.into_calls().remove(0).input
        };
        let nested = |n: usize| format!(r#"{{"a":{}1{}}}"#, "[".repeat(n), "]".repeat(n));
        assert!(call(nested(63)).is_object(), "64 levels are read");
        assert_eq!(call(nested(64)), serde_json::Value::String(nested(64)));
        assert_eq!(
            call("{not json".into()),
            serde_json::Value::String("{not json".into())
        );
    }

    #[test]
    fn thoughts_a_server_wants_back_are_gathered_and_sent_back_on_the_tool_calls() {
        let mut decoder = Decoder::default();
        for chunk in [
            r#"{"choices":[{"delta":{"reasoning_content":"Need "}}]}"#,
            r#"{"choices":[{"delta":{"reasoning_content":"the date."}}]}"#,
            r#"{"choices":[{"delta":{"reasoning":"ollama's","reasoning_details":[{"type":"reasoning.text","text":"Plan ","index":0,"format":"google-gemini-v1"}]}}]}"#,
            r#"{"choices":[{"delta":{"reasoning_details":[{"type":"reasoning.text","text":"it.","index":0,"signature":"sig"},{"type":"reasoning.encrypted","data":"QUJD","id":"tool_1","index":1}]}}]}"#,
            r#"{"choices":[{"delta":{"tool_calls":[{"index":0,"id":"tool_1","function":{"name":"bash","arguments":"{}"}}]}}]}"#,
        ] {
            openai_step(&ev(None, chunk), &mut decoder).unwrap();
        }
        let (tx, rx) = unbounded();
        let calls = complete(&mut decoder, &tx, &mut false);
        assert_eq!(calls.len(), 1);
        let carried = rx
            .try_iter()
            .find_map(|c| match c {
                Chunk::Carried(c) => Some(c),
                _ => None,
            })
            .expect("carried");
        assert_eq!(carried.content.as_deref(), Some("Need the date."));
        assert_eq!(
            carried.details,
            [
                serde_json::json!({"type":"reasoning.text","text":"Plan it.","index":0,"format":"google-gemini-v1","signature":"sig"}),
                serde_json::json!({"type":"reasoning.encrypted","data":"QUJD","id":"tool_1","index":1}),
            ]
        );

        // Sent back on the tool calls' message only, each in its own field.
        let turns = [
            Turn::new(Role::User, "date?"),
            Turn::tool_calls("", &calls).carrying(carried.clone()),
            Turn::tool_result(&calls[0].id, "Sun".into()),
        ];
        let llm = Llm::new(test_provider(ProviderKind::OpenAi), None);
        let body = llm.request_body(&Prompt::plain("s"), &turns, &[]);
        let m = &body["messages"];
        assert_eq!(m[2]["reasoning_content"], "Need the date.");
        assert_eq!(
            m[2]["reasoning_details"],
            serde_json::Value::Array(carried.details.clone())
        );
        assert!(m[1].get("reasoning_content").is_none() && m[3].get("reasoning_content").is_none());
        // And kept by the session file, for every later request.
        let line = serde_json::to_string(&turns[1]).unwrap();
        let back: Turn = serde_json::from_str(&line).unwrap();
        assert_eq!(back.reasoning_content.as_deref(), Some("Need the date."));
        assert!(serde_json::to_string(&turns[0])
            .unwrap()
            .find("reasoning")
            .is_none());

        // Google's own OpenAI-compatible API signs each call in its `extra_content`.
        let mut google = Decoder::default();
        let signed = r#"{"choices":[{"delta":{"role":"assistant","tool_calls":[{"index":0,"id":"function-call-1","type":"function","function":{"name":"bash","arguments":"{}"},"extra_content":{"google":{"thought_signature":"Q2lR"}}}]}}]}"#;
        openai_step(&ev(None, signed), &mut google).unwrap();
        let (tx, rx) = unbounded();
        let google_calls = complete(&mut google, &tx, &mut false);
        let Some(Chunk::Carried(kept)) = rx.try_iter().find(|c| matches!(c, Chunk::Carried(_))) else {
            panic!("nothing carried")
        };
        let turn = Turn::tool_calls("", &google_calls).carrying(kept);
        let body = llm.request_body(&Prompt::plain("s"), &[Turn::new(Role::User, "q"), turn], &[]);
        assert_eq!(
            body["messages"][2]["tool_calls"][0]["extra_content"],
            serde_json::json!({"google": {"thought_signature": "Q2lR"}})
        );

        // DeepSeek refuses tool calls of the session that kept none (another model's):
        // they get an empty one, from then on.
        let older = [
            Turn::new(Role::User, "date?"),
            Turn::tool_calls("", &calls),
            Turn::tool_result(&calls[0].id, "Sun".into()),
        ];
        let body = llm.request_body(&Prompt::plain("s"), &older, &[]);
        let refusal = status_error(
            400,
            r#"{"error":{"message":"The `reasoning_content` in the thinking mode must be passed back to the API.","type":"invalid_request_error","param":null,"code":"invalid_request_error"}}"#,
        );
        let filled = llm.corrected(&body, &refusal).expect("asked again");
        assert_eq!(filled["messages"][2]["reasoning_content"], "");
        assert_eq!(
            llm.request_body(&Prompt::plain("s"), &older, &[])["messages"][2]["reasoning_content"],
            ""
        );
        assert!(llm.corrected(&filled, &refusal).is_none(), "once");
        // A server that refuses the field gets none again.
        let unknown = status_error(
            400,
            r#"{"error":{"message":"messages[2]: unknown field `reasoning_content`"}}"#,
        );
        let plain = llm.corrected(&filled, &unknown).expect("asked again");
        assert!(!plain.to_string().contains("reasoning_"), "{plain}");
        let later = llm.request_body(&Prompt::plain("s"), &turns, &[]);
        assert!(!later.to_string().contains("reasoning_"), "{later}");
        assert!(
            llm.corrected(&later, &refusal).is_none(),
            "no loop between the two"
        );
    }

    fn any_json() -> impl proptest::strategy::Strategy<Value = serde_json::Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            "[a-z{}\\[\\]\",: ]{0,10}".prop_map(serde_json::Value::from),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
                prop::collection::btree_map(
                    prop_oneof![
                        Just("index".to_string()),
                        Just("text".to_string()),
                        Just("id".to_string()),
                        "[a-z_]{1,8}"
                    ],
                    inner,
                    0..4
                )
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest::proptest! {
        /// Whatever a server streams in a delta's thoughts, tool calls and usage, the
        /// decoder neither panics nor loses a piece of `reasoning_content`.
        #[test]
        fn any_chat_completions_stream_decodes_without_panic(
            pieces in proptest::collection::vec(("[a-z ]{0,6}", any_json(), any_json(), any_json()), 0..6),
        ) {
            let mut decoder = Decoder::default();
            let mut thought = String::new();
            for (text, details, calls, usage) in &pieces {
                thought.push_str(text);
                let chunk = serde_json::json!({"usage": usage, "choices": [{"delta": {
                    "reasoning_content": text, "reasoning_details": details, "tool_calls": calls}}]});
                let _ = openai_step(&ev(None, &chunk.to_string()), &mut decoder);
                let _ = anthropic_step(&ev(Some("content_block_delta"), &details.to_string()), &mut Decoder::default());
            }
            proptest::prop_assert_eq!(decoder.carried.content.clone().unwrap_or_default(), thought);
            let (tx, _rx) = unbounded();
            let calls = complete(&mut decoder, &tx, &mut false);
            let turn = Turn::tool_calls("", &calls);
            let llm = Llm::new(test_provider(ProviderKind::OpenAi), None);
            let _ = llm.request_body(&Prompt::plain("s"), &[Turn::new(Role::User, "q"), turn], &[]);
        }
    }

    /// Thoughts in a field of their own, in either name, or inline: reasoning chunks,
    /// never text.
    #[test]
    fn thoughts_reach_the_worker_apart_from_the_text() {
        let (tx, rx) = unbounded();
        let mut decoder = Decoder::default();
        let mut sent_any = false;
        for data in [
            r#"{"choices":[{"delta":{"role":"assistant","content":"","reasoning_content":"Hmm"}}]}"#,
            r#"{"choices":[{"delta":{"content":null,"reasoning":", so"}}]}"#,
            r#"{"choices":[{"delta":{"content":"<think>and"}}]}"#,
            r#"{"choices":[{"delta":{"content":" </thi"}}]}"#,
            r#"{"choices":[{"delta":{"content":"nk>\n\nYes"}}]}"#,
        ] {
            let step = openai_step(&ev(None, data), &mut decoder).unwrap();
            let Step::Delta(d) = step else {
                panic!("{data}: no delta")
            };
            assert!(pass_on(d, &mut decoder, &tx, &mut sent_any));
        }
        assert!(sent_any);
        let calls = complete(&mut decoder, &tx, &mut sent_any);
        assert!(calls.is_empty());
        let got: Vec<String> = rx
            .try_iter()
            .map(|c| match c {
                Chunk::Reasoning(t) => format!("r:{t}"),
                Chunk::Delta(t) => format!("t:{t}"),
                other => format!("{other:?}"),
            })
            .collect();
        assert_eq!(got, ["r:Hmm", "r:, so", "r:and", "r: ", "t:Yes"]);
        let d = r#"{"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"Let me see"}}"#;
        assert!(matches!(
            anthropic_step(&ev(Some("content_block_delta"), d), &mut Decoder::default()),
            Ok(Step::Delta(d)) if d.reasoning == "Let me see" && d.text.is_empty()
        ));
    }

    #[test]
    fn anthropic_events_map_to_steps() {
        let d = r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hello"}}"#;
        assert!(
            matches!(anthropic_step(&ev(Some("content_block_delta"), d), &mut Decoder::default()), Ok(Step::Delta(d)) if d.text == "Hello")
        );
        assert!(matches!(
            anthropic_step(&ev(Some("ping"), r#"{"type": "ping"}"#), &mut Decoder::default()),
            Ok(Step::Nothing)
        ));
        assert!(matches!(
            anthropic_step(
                &ev(Some("message_stop"), r#"{"type":"message_stop"}"#),
                &mut Decoder::default()
            ),
            Ok(Step::Done)
        ));
        let e = r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#;
        let err = match anthropic_step(&ev(Some("error"), e), &mut Decoder::default()) {
            Err(e) => e,
            Ok(_) => panic!("error event accepted"),
        };
        assert_eq!(err.kind, ErrorKind::Overloaded);
        assert!(err.retryable());
    }

    /// The thoughts of a round with Anthropic's own search hold its text in its place,
    /// never an empty text block (the API refuses one); without a search, no text.
    #[test]
    fn a_searched_rounds_text_goes_back_in_its_place() {
        let round = |events: &[&str]| {
            let mut d = Decoder::default();
            for e in events {
                let v: serde_json::Value = serde_json::from_str(e).unwrap();
                let kind = v["type"].as_str().unwrap().to_string();
                anthropic_step(&ev(Some(&kind), e), &mut d).unwrap();
            }
            let (tx, rx) = crossbeam_channel::unbounded();
            complete(&mut d, &tx, &mut false);
            drop(tx);
            rx.iter()
                .find_map(|c| match c {
                    Chunk::Thoughts(t) => Some(t),
                    _ => None,
                })
                .unwrap_or_default()
        };
        let text = |i: u32, t: &str| {
            [
                format!(
                    r#"{{"type":"content_block_start","index":{i},"content_block":{{"type":"text","text":""}}}}"#
                ),
                format!(
                    r#"{{"type":"content_block_delta","index":{i},"delta":{{"type":"text_delta","text":"{t}"}}}}"#
                ),
                format!(r#"{{"type":"content_block_stop","index":{i}}}"#),
            ]
        };
        let search = [
            r#"{"type":"content_block_start","index":2,"content_block":{"type":"server_tool_use","id":"srvtoolu_1","name":"web_search","input":{}}}"#.to_string(),
            r#"{"type":"content_block_stop","index":2}"#.to_string(),
            r#"{"type":"content_block_start","index":3,"content_block":{"type":"web_search_tool_result","tool_use_id":"srvtoolu_1","content":[]}}"#.to_string(),
            r#"{"type":"content_block_stop","index":3}"#.to_string(),
        ];
        let mut events: Vec<String> = text(0, "").to_vec();
        events.extend(text(1, "Let me look."));
        events.extend(search.iter().cloned());
        events.extend(text(4, "Found it."));
        let refs: Vec<&str> = events.iter().map(String::as_str).collect();
        let kinds: Vec<String> = round(&refs)
            .iter()
            .map(|b| match b {
                Block::Text { text } => format!("text {text}"),
                Block::Server { block } => block["type"].as_str().unwrap().to_string(),
                other => format!("{other:?}"),
            })
            .collect();
        assert_eq!(
            kinds,
            [
                "text Let me look.",
                "server_tool_use",
                "web_search_tool_result",
                "text Found it."
            ]
        );
        let plain: Vec<String> = text(0, "Just words.").to_vec();
        let refs: Vec<&str> = plain.iter().map(String::as_str).collect();
        assert!(
            round(&refs).is_empty(),
            "text alone goes back as the worker writes it"
        );
    }

    #[test]
    fn a_conversation_key_goes_to_chat_completions_until_a_server_refuses_it() {
        let llm = Llm::new(test_provider(ProviderKind::OpenAi), None);
        let key = crate::prompt_cache::conversation_key("telegram", "5");
        let prompt = Prompt {
            cache_key: Some(&key),
            ..Prompt::plain("s")
        };
        let body = llm.request_body(&prompt, &[], &[]);
        assert_eq!(body["prompt_cache_key"], key.as_str());
        let refusal = status_error(
            400,
            r#"{"error": {"message": "Unrecognized request argument supplied: prompt_cache_key"}}"#,
        );
        let again = llm.corrected(&body, &refusal).unwrap();
        assert!(again.get("prompt_cache_key").is_none());
        assert!(
            llm.request_body(&prompt, &[], &[])
                .get("prompt_cache_key")
                .is_none(),
            "not sent again"
        );
        let claude = Llm::new(test_provider(ProviderKind::Anthropic), None);
        assert!(claude
            .request_body(&prompt, &[], &[])
            .get("prompt_cache_key")
            .is_none());
    }

    #[test]
    fn openai_itself_gets_max_completion_tokens_and_others_max_tokens_until_refused() {
        let llm = |base: &str| {
            let mut p = test_provider(ProviderKind::OpenAi);
            p.base_url = base.into();
            p.max_tokens = Some(500);
            Llm::new(p, None)
        };
        let openai = llm("https://api.openai.com/v1").request_body(&Prompt::plain("s"), &[], &[]);
        assert_eq!(
            (openai.get("max_tokens"), &openai["max_completion_tokens"]),
            (None, &500.into())
        );
        let local = llm("http://localhost:11434/v1").request_body(&Prompt::plain("s"), &[], &[]);
        assert_eq!(
            (&local["max_tokens"], local.get("max_completion_tokens")),
            (&500.into(), None)
        );
        let refusal = status_error(
            400,
            r#"{"error": {"message": "Unsupported parameter: 'max_tokens' is not supported with this model. Use 'max_completion_tokens' instead.", "param": "max_tokens"}}"#,
        );
        let renamed = with_completion_tokens(&local, &refusal).unwrap();
        assert_eq!(
            (renamed.get("max_tokens"), &renamed["max_completion_tokens"]),
            (None, &500.into())
        );
        assert!(
            with_completion_tokens(&renamed, &refusal).is_none(),
            "renamed once only"
        );
        assert!(with_completion_tokens(&local, &status_error(400, "context too long")).is_none());
        assert!(with_completion_tokens(&local, &status_error(500, &refusal.detail)).is_none());
    }

    /// A prompt with a recap and notes, marked as for a chat going on; a chat of three
    /// turns, and the same in a tool round.
    fn marked_chat() -> (Prompt<'static>, Vec<Turn>, Vec<Turn>) {
        let prompt = Prompt {
            fixed: "S.",
            recap: " R.",
            notes: "[Memories]\n- (m-1) tea",
            cache: Some(Marks {
                system: Ttl::Hour,
                conversation: Ttl::Minutes5,
            }),
            cache_key: None,
            reply: true,
        };
        let call = ToolCall {
            id: "c1".into(),
            name: "bash".into(),
            input: serde_json::json!({"command": "ls"}),
        };
        let chat = vec![
            Turn::new(Role::User, "hi"),
            Turn::new(Role::Assistant, "hello"),
            Turn::new(Role::User, "q"),
        ];
        let mut in_a_tool_round = chat.clone();
        in_a_tool_round.push(Turn::tool_calls("", std::slice::from_ref(&call)));
        in_a_tool_round.push(Turn::tool_result("c1", "a.txt".into()));
        (prompt, chat, in_a_tool_round)
    }

    /// What changes from one message to the next comes last: the system prompt is the
    /// same whatever memories a message brings, and Claude is told where to cache.
    #[test]
    fn requests_keep_what_repeats_first_and_mark_it_for_claude() {
        let (prompt, chat, in_a_tool_round) = marked_chat();

        let openai = Llm::new(test_provider(ProviderKind::OpenAi), None);
        let body = openai.request_body(&prompt, &chat, &[]);
        let m = &body["messages"];
        assert_eq!(m[0]["content"], "S. R.");
        assert_eq!(m[1]["content"], "hi");
        assert_eq!(m[3]["content"], "q\n\n[Memories]\n- (m-1) tea");
        let body = openai.request_body(&prompt, &in_a_tool_round, &[]);
        assert_eq!(
            body["messages"][3]["content"], "q\n\n[Memories]\n- (m-1) tea",
            "the question keeps them"
        );
        assert_eq!(body["messages"][5]["content"], "a.txt");

        let claude = Llm::new(test_provider(ProviderKind::Anthropic), None);
        let body = claude.request_body(&prompt, &chat, &[]);
        let cached = serde_json::json!({"type": "ephemeral"});
        let hour = serde_json::json!({"type": "ephemeral", "ttl": "1h"});
        assert_eq!(
            body["system"],
            serde_json::json!([{"type": "text", "text": "S.", "cache_control": hour}, {"type": "text", "text": " R."}]),
            "the same for every session: kept an hour while any of them goes on"
        );
        assert_eq!(
            body["messages"][0]["content"], "hi",
            "older turns unmarked, as before"
        );
        assert_eq!(
            body["messages"][2]["content"],
            serde_json::json!([{"type": "text", "text": "q", "cache_control": cached},
                               {"type": "text", "text": "[Memories]\n- (m-1) tea"}])
        );
        let body = claude.request_body(&prompt, &in_a_tool_round, &[]);
        let last = &body["messages"][4]["content"][0];
        assert_eq!(last["type"], "tool_result");
        assert_eq!(
            last["cache_control"], cached,
            "the round's results, for the next round"
        );
        let marks = body.to_string().matches("cache_control").count();
        assert_eq!(marks, 3, "at most four are allowed: {body}");
        // Without notes nor recap: one system block, the question marked.
        let plain = claude.request_body(&Prompt::plain("S."), &chat, &[]);
        assert_eq!(plain["system"].as_array().unwrap().len(), 1);
        assert_eq!(plain["messages"][2]["content"][0]["cache_control"], cached);
        // Not worth marking: the same request without a mark.
        let unmarked = Prompt {
            cache: None,
            ..prompt
        };
        let body = claude.request_body(&unmarked, &in_a_tool_round, &[]);
        assert!(!body.to_string().contains("cache_control"), "{body}");
        assert_eq!(body["messages"][2]["content"], "q\n\n[Memories]\n- (m-1) tea");
        // A chat answered now and then: everything kept an hour.
        let slow = Prompt {
            cache: Some(Marks::all(Ttl::Hour)),
            ..prompt
        };
        let body = claude.request_body(&slow, &in_a_tool_round, &[]);
        assert_eq!(body["messages"][2]["content"][0]["cache_control"], hour);
        assert_eq!(body["messages"][4]["content"][0]["cache_control"], hour);
    }

    /// Claude behind an OpenAI-compatible router gets the marks Anthropic's API gets, as
    /// message parts the router passes on; no other model behind it gets any.
    #[test]
    fn claude_behind_a_router_is_marked_in_message_parts() {
        let (prompt, chat, in_a_tool_round) = marked_chat();
        let routed = |model: &str| {
            let mut p = test_provider(ProviderKind::OpenAi);
            p.model = model.into();
            Llm::new(p, None)
        };
        let claude = routed("anthropic/claude-sonnet-4.6");
        let (cached, hour) = (
            serde_json::json!({"type": "ephemeral"}),
            serde_json::json!({"type": "ephemeral", "ttl": "1h"}),
        );
        let body = claude.request_body(&prompt, &chat, &[]);
        let m = &body["messages"];
        assert_eq!(
            m[0]["content"],
            serde_json::json!([{"type": "text", "text": "S.", "cache_control": hour}, {"type": "text", "text": " R."}])
        );
        assert_eq!(m[1]["content"], "hi", "older turns as they were");
        assert_eq!(
            m[3]["content"],
            serde_json::json!([{"type": "text", "text": "q", "cache_control": cached},
                               {"type": "text", "text": "[Memories]\n- (m-1) tea"}])
        );
        let body = claude.request_body(&prompt, &in_a_tool_round, &[]);
        assert_eq!(
            body["messages"][5],
            serde_json::json!({"role": "tool", "tool_call_id": "c1",
                "content": [{"type": "text", "text": "a.txt", "cache_control": cached}]})
        );
        assert_eq!(body.to_string().matches("cache_control").count(), 3);
        // An empty tool result takes no mark (Anthropic refuses one on empty text).
        let mut empty = in_a_tool_round.clone();
        *empty.last_mut().unwrap() = Turn::tool_result("c1", String::new());
        let body = claude.request_body(&prompt, &empty, &[]);
        assert_eq!(body.to_string().matches("cache_control").count(), 2, "{body}");

        for other in ["openai/gpt-5", "meta-llama/llama-3.3-70b-instruct", "m"] {
            let body = routed(other).request_body(&prompt, &in_a_tool_round, &[]);
            assert!(!body.to_string().contains("cache_control"), "{other}: {body}");
            assert_eq!(body["messages"][0]["content"], "S. R.");
        }

        // A server that refuses the marks is asked again without, and never gets them again.
        let refusal = status_error(
            400,
            r#"{"error": {"message": "Unrecognized request argument supplied: messages[3].content[0].cache_control", "type": "invalid_request_error"}}"#,
        );
        let body = claude.request_body(&prompt, &in_a_tool_round, &[]);
        let plain = claude.corrected(&body, &refusal).expect("asked again");
        assert!(!plain.to_string().contains("cache_control"), "{plain}");
        assert_eq!(
            plain["messages"][3]["content"][1]["text"],
            "[Memories]\n- (m-1) tea"
        );
        let later = claude.request_body(&prompt, &chat, &[]);
        assert!(!later.to_string().contains("cache_control"), "{later}");
        assert!(
            claude.corrected(&later, &refusal).is_none(),
            "nothing left to take off"
        );
        assert!(without_marks(&body, &status_error(500, "cache_control")).is_none());
        assert!(without_marks(&body, &status_error(400, "context too long")).is_none());
    }

    #[test]
    fn claude_thinks_by_budget_until_a_model_wants_adaptive_thinking_and_effort_goes_in_output_config() {
        let claude = |thinking| {
            let mut p = test_provider(ProviderKind::Anthropic);
            p.thinking = thinking;
            p.reasoning_effort = Some("low".into());
            Llm::new(p, None).request_body(&Prompt::plain("s"), &[], &[])
        };
        let budget = claude(Some(Thinking::Budget(2048)));
        assert_eq!(
            budget["thinking"],
            serde_json::json!({"type": "enabled", "budget_tokens": 2048})
        );
        assert_eq!(budget["max_tokens"], 2048 + 4096);
        assert_eq!(budget["output_config"], serde_json::json!({"effort": "low"}));
        let adaptive = claude(Some(Thinking::Adaptive));
        assert_eq!(adaptive["thinking"], serde_json::json!({"type": "adaptive"}));
        assert_eq!(adaptive["max_tokens"], 16_000);
        assert_eq!(claude(None).get("thinking"), None);

        let refusal = status_error(
            400,
            r#"{"type":"error","error":{"type":"invalid_request_error","message":"\"thinking.type.enabled\" is not supported for this model. Use \"thinking.type.adaptive\" and \"output_config.effort\" to control thinking behavior."}}"#,
        );
        let asked_again = with_adaptive_thinking(&budget, &refusal).unwrap();
        assert_eq!(asked_again["thinking"], serde_json::json!({"type": "adaptive"}));
        assert_eq!(asked_again["max_tokens"], budget["max_tokens"]);
        assert!(
            with_adaptive_thinking(&asked_again, &refusal).is_none(),
            "once only"
        );
        assert!(with_adaptive_thinking(&budget, &status_error(400, "prompt is too long")).is_none());
        assert!(with_adaptive_thinking(&budget, &status_error(529, &refusal.detail)).is_none());
    }

    #[test]
    fn a_refusal_of_ttl_or_of_its_beta_header_asks_again_with_5_minute_marks() {
        let body = serde_json::json!({"system": [{"type": "text", "text": "S",
            "cache_control": {"type": "ephemeral", "ttl": "1h"}}], "messages": []});
        let refusal = |message: &str| {
            status_error(400, &serde_json::json!({"type": "error", "error": {"type": "invalid_request_error", "message": message}}).to_string())
        };
        for words in [
            "system.0.cache_control.ttl: Extra inputs are not permitted",
            "Unexpected value(s) `extended-cache-ttl-2025-04-11` for the `anthropic-beta` header.",
        ] {
            let again = with_short_marks(&body, &refusal(words)).expect(words);
            assert_eq!(
                again["system"][0]["cache_control"],
                serde_json::json!({"type": "ephemeral"})
            );
        }
        assert!(with_short_marks(&body, &refusal("requests are throttled")).is_none());
        assert!(with_short_marks(&body, &status_error(529, "cache_control.ttl")).is_none());
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
    fn an_unverifiable_certificate_is_final_and_says_what_to_do() {
        let bad = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        for e in [
            ureq::Error::Rustls(bad.clone()),
            ureq::Error::Io(std::io::Error::new(std::io::ErrorKind::InvalidData, bad)),
        ] {
            let err = transport_error(&e);
            assert_eq!(err.kind, ErrorKind::Certificate, "{e}");
            assert!(!err.retryable());
            assert_eq!(err.code(), "llm_certificate");
            assert!(
                err.user_message().contains("SSL_CERT_FILE"),
                "{}",
                err.user_message()
            );
        }
        let refused = ureq::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert_eq!(transport_error(&refused).kind, ErrorKind::Connect);
    }

    fn test_provider(kind: ProviderKind) -> Provider {
        Provider {
            kind,
            key: Some("sk-secret-123".into()),
            key_env: None,
            base_url: "http://x".into(),
            model: "m".into(),
            default_model: false,
            max_tokens: None,
            reasoning_effort: None,
            thinking: None,
            connect_timeout: Duration::from_secs(1),
            read_timeout: Duration::from_secs(1),
            attempts: 1,
            host: None,
            bearer: false,
            responses_api: false,
            web_search: None,
        }
    }

    #[test]
    fn anthropics_own_search_goes_with_a_replys_request_only() {
        let mut p = test_provider(ProviderKind::Anthropic);
        p.web_search = Some(crate::native_search::NativeSearch::anywhere(3));
        let llm = Llm::new(p, None);
        let turns = [Turn::new(Role::User, "q")];
        let reply = Prompt {
            reply: true,
            ..Prompt::plain("s")
        };
        let body = llm.request_body(&reply, &turns, &[]);
        assert_eq!(
            body["tools"],
            serde_json::json!([{"type": "web_search_20250305", "name": "web_search", "max_uses": 3}])
        );
        let recap = llm.request_body(&Prompt::plain("s"), &turns, &[]);
        assert!(recap.get("tools").is_none(), "{recap}");
    }

    #[test]
    fn openais_own_search_goes_with_a_replys_request_only() {
        let mut p = test_provider(ProviderKind::OpenAi);
        p.web_search = Some(crate::native_search::NativeSearch::anywhere(2));
        let llm = Llm::new(p, None);
        let turns = [Turn::new(Role::User, "q")];
        let reply = Prompt {
            reply: true,
            ..Prompt::plain("s")
        };
        let bash = ToolSpec {
            name: "bash".into(),
            description: "Run".into(),
            input_schema: serde_json::json!({"type": "object"}),
        };
        let body = llm.request_body(&reply, &turns, std::slice::from_ref(&bash));
        assert_eq!(body["tools"][1], serde_json::json!({"type": "web_search"}));
        assert_eq!(body["tools"][0]["function"]["name"], "bash");
        assert_eq!(body["max_tool_calls"], 2);
        let recap = llm.request_body(&Prompt::plain("s"), &turns, &[bash]);
        assert_eq!(recap["tools"].as_array().map(Vec::len), Some(1), "{recap}");
        assert!(recap.get("max_tool_calls").is_none(), "{recap}");
    }

    #[test]
    fn a_chats_model_is_named_never_replaced_and_learns_for_itself() {
        let mut p = test_provider(ProviderKind::OpenAi);
        p.default_model = true;
        let llm = Llm::new(p, None);
        llm.responses.store(true, Ordering::Relaxed);
        let chosen = llm.for_model("o3");
        assert_eq!((chosen.model_name(), llm.model_name()), ("o3".into(), "m".into()));
        assert!(!chosen.provider.default_model, "the user named it");
        assert!(
            !chosen.responses.load(Ordering::Relaxed),
            "what the server refused the agent's model is not taken as refused for this one"
        );
        assert_eq!(chosen.whereabouts(), "OpenAI at x");
    }

    #[test]
    fn only_openais_own_api_is_openai() {
        let mut p = test_provider(ProviderKind::OpenAi);
        assert!(!p.at_openai());
        p.base_url = "https://api.openai.com/v1".into();
        assert!(p.at_openai());
        p.kind = ProviderKind::Anthropic;
        assert!(!p.at_openai());
    }

    #[test]
    fn debug_never_shows_the_key() {
        let p = test_provider(ProviderKind::OpenAi);
        assert!(!format!("{p:?}").contains("sk-secret"));
    }

    #[test]
    fn host_errors_keep_the_providers_status() {
        let e = host_error(
            "ollama",
            r#"provider returned 404: {"error":{"message":"model \"qwen\" not found"}}"#,
        );
        assert_eq!(e.kind, ErrorKind::Request);
        assert_eq!(e.detail, r#"host:ollama: HTTP 404: model "qwen" not found"#);
        assert_eq!(
            host_error("ollama", "provider returned 429: slow down").kind,
            ErrorKind::RateLimited
        );
        assert_eq!(
            host_error("vllm", "provider returned 503: ").kind,
            ErrorKind::Server
        );
        let refused = host_error(
            "ollama",
            r#"Post "http://localhost:11434/v1/chat/completions": dial tcp [::1]:11434: connect: connection refused"#,
        );
        assert_eq!(refused.kind, ErrorKind::Connect);
        assert!(refused.retryable());
        assert_eq!(
            host_error("ollama", "stream read: unexpected EOF").kind,
            ErrorKind::Cut
        );
        assert_eq!(host_error("x", "provider returned soon").kind, ErrorKind::Connect);
        let unknown = host_error("olama", "unknown host LLM provider: olama");
        assert_eq!((unknown.kind, unknown.retryable()), (ErrorKind::Request, false));
    }

    #[test]
    fn a_refused_host_request_says_why() {
        let r = |status, message: &str| Refused {
            status,
            message: message.into(),
        };
        let unknown = refused_error("olama", &r(500, "unknown host LLM provider: olama"));
        assert_eq!(unknown.kind, ErrorKind::Request);
        assert!(!unknown.retryable());
        assert!(unknown.detail.contains(r#""olama""#), "{}", unknown.detail);
        let old = refused_error("ollama", &r(404, "404 page not found"));
        assert!(old.detail.contains("newer AegisVM"), "{}", old.detail);
        assert_eq!(refused_error("ollama", &r(503, "busy")).kind, ErrorKind::Server);
        assert_eq!(
            refused_error("ollama", &r(0, "harness unreachable")).kind,
            ErrorKind::Connect
        );
    }
}
