//! Agent configuration: flags override environment variables, which override defaults.
//! Every name here is part of the user-facing contract (PROTOCOL.md §6, README).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use crate::agent_file::{self, AgentFile};
use crate::context::Budget;
use crate::llm::{Provider, ProviderKind, Thinking};
use crate::mcp::{self, ServerConfig};
use crate::tools::{Builtin, Selection, ToolConfig};

/// Tool rounds per message unless configured.
pub const DEFAULT_TOOL_ROUNDS: usize = 20;

/// Usage text for `--help`.
pub const HELP: &str = "\
aegis-agent: the Aegis agent runtime. Answers tether messages with streamed LLM replies.

USAGE:
    aegis-agent [OPTIONS]

OPTIONS:
    --listen ADDR       harness mode: HTTP address for POST /v1/tether/recv
                        [env AEGIS_AGENT_ADDR, default 127.0.0.1:7778]
    --harness URL       harness mode: where egress frames are POSTed
                        [env AEGIS_HARNESS_URL, default http://127.0.0.1:7777]
    --tether ADDR       direct mode: dial the control channel yourself
                        (unix:/path, tcp:host:port or vsock:cid:port) [env AEGIS_TETHER]
    --workspace DIR     the agent's folder: sessions in DIR/sessions, config in
                        DIR/.aegis/agent.json, tools work here
                        [env AEGIS_WORKSPACE, default /workspace]
    -h, --help          print this help
    -V, --version       print the version

LLM (environment only, so keys never appear in a process listing):
    ANTHROPIC_API_KEY   use the Anthropic Messages API (model claude-sonnet-4-6)
    OPENAI_API_KEY      else use OpenAI Chat Completions (model gpt-4o)
    OPENAI_BASE_URL     OpenAI-compatible server (Ollama, llama.cpp, vLLM); works without a key
    OPENROUTER_API_KEY  use OpenRouter (https://openrouter.ai/api/v1; also when OPENAI_BASE_URL
                        names it): models by its names, anthropic/claude-sonnet-4.6,
                        openai/gpt-5 [default openai/gpt-4o]; Claude's prompt is marked for
                        its cache there too
    ANTHROPIC_AUTH_TOKEN  an Anthropic-compatible gateway's token, sent as a bearer
                        token (before ANTHROPIC_API_KEY, which is then not sent)
    ANTHROPIC_BASE_URL  Anthropic API base [default https://api.anthropic.com]; at
                        https://openrouter.ai/api, OpenRouter's names and bearer token
    AEGIS_MODEL         model override (NAME, openai/NAME, anthropic/NAME, host:SERVER/NAME)
    AEGIS_MODELS        the models a chat may pick for itself with /model, comma-separated
                        (none: every chat talks to the agent's) [any the provider lists
                        for the key, and another provider's (anthropic/NAME, openai/NAME)
                        whose key is set too]
    AEGIS_MAX_TOKENS    reply token limit [Anthropic default 4096]
    AEGIS_REASONING_EFFORT  how hard a reasoning model works (OpenAI-compatible
                        reasoning_effort: minimal, low, medium, high; Claude's
                        output_config.effort: low, medium, high, xhigh, max)
                        [model's default]
    AEGIS_OPENAI_API    chat (Chat Completions) or responses (OpenAI's Responses API:
                        its reasoning summaries shown, reasoning kept across tool
                        rounds); a model only the latter serves is asked there
                        anyway [chat]
    AEGIS_THINKING_BUDGET   Claude's thinking: tokens it may think with (at least
                        1024; 0 = off), or `adaptive` (Claude decides; 4.6 and
                        later; a model that takes only that gets it); through
                        OpenRouter as its `reasoning` [off]
    AEGIS_SYSTEM_PROMPT system prompt [default \"You are a helpful assistant.\"]
    AEGIS_CONTEXT_TURNS newest turns sent to the model [default 50]
    AEGIS_CONTEXT_CHARS character budget of those turns [default 24000]
    AEGIS_CONTEXT_RECAP 1: turns that no longer fit are recapped by the model into
                        the system prompt (sessions/NAME.recap.json); 0: forgotten
                        [default 1]
    AEGIS_LLM_CONNECT_TIMEOUT  seconds to connect to the LLM API [default 10]
    AEGIS_LLM_READ_TIMEOUT     seconds allowed between streamed chunks [default 120]
    AEGIS_LLM_RETRIES          attempts per model request [default 4]

TOOLS:
    AEGIS_TOOLS         which tools are on: comma-separated names or groups (shell,
                        files, skills, web, memory, cron, self, mcp), `all`, `none`, `-NAME` to
                        remove; a list starting with a name selects exactly those
                        [default all]
    AEGIS_MAX_TOOL_ROUNDS  model calls per message [default 20]
    AEGIS_SKILLS_PATH   folders of skills besides the workspace's, `:`-separated
                        (skills shipped in the image: /opt/skills)
    AEGIS_TRUSTED_USERS  user ids (or channel/id) whose messages get every tool; set, it
                        makes everyone else a guest [default: everyone is trusted]
    AEGIS_GUEST_TOOLS   a guest's tools, as AEGIS_TOOLS names them, within the agent's
                        [default web_fetch,web_search,image_search,memory]; a scheduled
                        task's run gets its creator's
    AEGIS_WEB_PRIVATE_HOSTS  hosts web_fetch may reach at a private address (this
                        machine, its networks, link-local), comma-separated names or
                        addresses, or `*`; by default it reaches public addresses only
    Built-in: bash; read_file, write_file, edit_file, list_files, glob, grep,
    respond_with_image, send_file; web_fetch, web_search, image_search (these two with a
    Brave Search key in BRAVE_SEARCH_API_KEY, or the variable agent.json's
    tools.web_search.brave_api_key_env names; BRAVE_SEARCH_BASE_URL for another
    endpoint; AEGIS_WEB_SEARCH=native, or tools.web_search.native, has the model search
    with its provider's own tool instead: a Claude model at Anthropic, an OpenAI model
    at OpenAI (its Responses API, then used for every request) or at a server set to
    AEGIS_OPENAI_API=responses; max_uses searches a request [default 5]); image_generate (OpenAI Images API, model gpt-image-1, with the key in
    OPENAI_API_KEY unless the chat goes elsewhere with that key, or in the variable
    tools.image_generate.openai_api_key_env names; OPENAI_IMAGES_BASE_URL for another
    endpoint); respond_with_voice (OpenAI text to speech, model gpt-4o-mini-tts,
    voice coral, with the key found as for image_generate; OPENAI_AUDIO_BASE_URL for
    another server); memory_store, memory_search, memory_delete
    (DIR/.aegis/memory/memories.jsonl); cron_create, cron_list, cron_delete,
    cron_enable, cron_disable (DIR/.aegis/cron.json, fired by the host);
    self_info (the host's description of this instance); self_restart (the host
    restarts the agent to load new configuration). MCP servers
    come from agent.json `mcp`, DIR/.aegis/mcp.json, and aegis-mcp-guest on PATH
    (as server `aegis`): a program (stdio), or a URL (Streamable HTTP) with headers
    that may name variables (\"Bearer ${TOKEN}\"); the agent's own keys are never
    given to a server.

NETWORK (as for Go programs, curl and OpenSSL):
    SSL_CERT_FILE, SSL_CERT_DIR  trust the PEM certificates of this file / these
                        folders (`:`-separated) instead of the bundled Mozilla roots
    HTTPS_PROXY for https://, HTTP_PROXY for http://, else ALL_PROXY; NO_PROXY
                        proxy for the model and web_fetch: http://HOST:PORT
                        (CONNECT) or socks5h://, socks5://, socks4a://, socks4://;
                        localhost and loopback addresses (the harness, a local
                        model) never use it

DIR/.aegis/agent.json (optional; the variables above override it):
    model (\"openai/NAME\", \"anthropic/NAME\", or \"host:SERVER/NAME\" for a model
    server on the host, reached through it: host:ollama/llama3.2, host:lmstudio/...,
    host:vllm/...), models (those a chat may pick), api_key_env, base_url, max_tokens,
    reasoning_effort, openai_api,
    thinking_budget, context_turns, context_chars, context_recap, system_prompt,
    max_tool_rounds,
    tools {NAME: {enabled, timeout_secs, background_timeout_secs, brave_api_key_env, openai_api_key_env,
    model, voice, native, max_uses, allowed_domains, blocked_domains, user_location
    {city, region, country, timezone}, pdf, images}}, mcp {NAME: {command, args, env, timeout_secs} or {url, headers,
    timeout_secs}},
    memory {inject_mode (relevant, recent_only, off), max_inject_chars,
    max_inject_count, max_total}, timezone (IANA name, for scheduled tasks),
    voice {enabled, openai_api_key_env, model}, limits {daily_tokens,
    chat_daily_tokens, user_daily_tokens}

VOICE MESSAGES (a recording that comes with a message is written down for the model):
    OpenAI speech to text (model gpt-4o-mini-transcribe) with the key found as for
    image_generate; AEGIS_TRANSCRIBE_MODEL another model; OPENAI_AUDIO_BASE_URL
    another server (a local Whisper server needs no key)

DAILY LIMITS (tokens a UTC day as the provider counted them, one read from the prompt
cache counting a tenth; a message that finds one used up gets a note and is not sent to
the model, a reply that uses one up stops before its next request) [none]:
    AEGIS_DAILY_TOKENS       all chats, scheduled tasks, recaps, images, transcripts
    AEGIS_CHAT_DAILY_TOKENS  each chat (its images, transcripts, recaps too), its
                        topics and /new conversations together
    AEGIS_USER_DAILY_TOKENS  the replies to each person's messages, in every chat
                        (these two counted in DIR/.aegis/usage-chats.json)

Logs go to stderr; RUST_LOG=debug for more. Each reply logs the tokens its model
requests took (as the provider counted them); DIR/.aegis/usage.json adds them up by day
and model.";

/// How ingress arrives and egress leaves.
#[derive(Debug, Clone)]
pub enum Mode {
    /// Behind the AegisVM harness: HTTP in on `listen`, HTTP out to `harness`.
    Harness {
        /// Address to listen on.
        listen: String,
        /// Base URL of the harness.
        harness: String,
    },
    /// [ours] Dial the control channel and speak JSON-RPC ourselves.
    Direct(tether::Addr),
}

/// Everything the agent needs to run.
#[derive(Debug, Clone)]
pub struct Config {
    /// Transport mode.
    pub mode: Mode,
    /// Workspace root; sessions are under `sessions/`.
    pub workspace: PathBuf,
    /// The LLM to call, if any key or base URL is configured.
    pub provider: Option<Provider>,
    /// System prompt, if configured (else a default that mentions the tools).
    pub system_prompt: Option<String>,
    /// Context window limits.
    pub budget: Budget,
    /// Recap what falls out of the window (`recap.rs`).
    pub recap: bool,
    /// Built-in tool settings.
    pub tools: ToolConfig,
    /// MCP servers to attach.
    pub mcp: BTreeMap<String, ServerConfig>,
    /// agent.json `memory`.
    pub memory: crate::memory::MemoryConfig,
    /// Model calls per message at most.
    pub max_rounds: usize,
    /// Voice messages (speech to text).
    pub voice: crate::transcribe::VoiceConfig,
    /// The models a chat may pick with `/model` (`AEGIS_MODELS`, agent.json `models`);
    /// `None`: any the provider lists.
    pub chat_models: Option<Vec<String>>,
    /// [ours] The other providers whose keys the environment holds, for a chat's
    /// `/model anthropic/NAME` or `/model openai/NAME` (their model is a placeholder).
    pub other_providers: Vec<Provider>,
    /// Daily limits on the model's tokens (`AEGIS_DAILY_TOKENS`,
    /// `AEGIS_CHAT_DAILY_TOKENS`, agent.json `limits`).
    pub limits: crate::limits::LimitConfig,
}

/// A flag or variable with a bad value.
#[derive(Debug)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

/// What `main` should do.
pub enum Action {
    /// Run with this configuration.
    Run(Box<Config>),
    /// Print help or version and exit.
    Print(String),
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn env_num<T: std::str::FromStr>(name: &str, default: T) -> Result<T, ConfigError> {
    match env(name) {
        None => Ok(default),
        Some(v) => v
            .trim()
            .parse()
            .map_err(|_| ConfigError(format!("{name}={v:?} is not a valid number"))),
    }
}

fn env_flag(name: &str, default: bool) -> Result<bool, ConfigError> {
    match env(name).as_deref().map(str::trim) {
        None => Ok(default),
        Some("1" | "true" | "on") => Ok(true),
        Some("0" | "false" | "off") => Ok(false),
        Some(v) => Err(ConfigError(format!("{name}={v:?} is not 1 or 0"))),
    }
}

/// Parse flags (lexopt) and the environment.
pub fn from_args_and_env(args: impl IntoIterator<Item = std::ffi::OsString>) -> Result<Action, ConfigError> {
    use lexopt::prelude::*;
    let mut listen = env("AEGIS_AGENT_ADDR").unwrap_or_else(|| "127.0.0.1:7778".into());
    let mut harness = env("AEGIS_HARNESS_URL").unwrap_or_else(|| "http://127.0.0.1:7777".into());
    let mut tether = env("AEGIS_TETHER");
    let mut workspace = env("AEGIS_WORKSPACE").unwrap_or_else(|| "/workspace".into());
    let mut parser = lexopt::Parser::from_args(args);
    let bad = |e: lexopt::Error| ConfigError(format!("{e} (see --help)"));
    while let Some(arg) = parser.next().map_err(bad)? {
        match arg {
            Long("listen") => listen = parser.value().map_err(bad)?.string().map_err(bad)?,
            Long("harness") => harness = parser.value().map_err(bad)?.string().map_err(bad)?,
            Long("tether") => tether = Some(parser.value().map_err(bad)?.string().map_err(bad)?),
            Long("workspace") => workspace = parser.value().map_err(bad)?.string().map_err(bad)?,
            Short('h') | Long("help") => return Ok(Action::Print(HELP.to_string())),
            Short('V') | Long("version") => {
                return Ok(Action::Print(format!(
                    "aegis-agent {}",
                    env!("CARGO_PKG_VERSION")
                )))
            }
            other => return Err(bad(other.unexpected())),
        }
    }
    let mode = match tether {
        Some(t) => Mode::Direct(t.parse().map_err(|e| ConfigError(format!("AEGIS_TETHER: {e}")))?),
        None => Mode::Harness {
            listen,
            harness: harness.trim_end_matches('/').to_string(),
        },
    };
    let workspace = PathBuf::from(workspace);
    let file = agent_file::load(&workspace.join(".aegis/agent.json"));
    let budget = Budget {
        turns: env_num("AEGIS_CONTEXT_TURNS", file.context_turns.unwrap_or(50))?,
        chars: env_num("AEGIS_CONTEXT_CHARS", file.context_chars.unwrap_or(24_000))?,
    };
    let mut provider = provider_from(&file)?;
    let mut tools = tool_config(&file, provider.as_ref())?;
    native_search(&file, provider.as_mut(), &mut tools)?;
    // Their keys are among those the model's commands never see (`tool_config`).
    let other_providers = others(&file, provider.as_ref())?;
    let voice = voice_config(&file, provider.as_ref());
    tools.hidden_env.extend(voice.key_env.clone());
    let mut mcp_servers = BTreeMap::new();
    if tools.selection.mcp {
        if let Some(guest) = mcp::guest_server() {
            mcp_servers.insert("aegis".to_string(), guest);
        }
        mcp_servers.extend(mcp::servers_file(&workspace));
        mcp_servers.extend(file.mcp.clone());
    }
    Ok(Action::Run(Box::new(Config {
        mode,
        workspace,
        provider,
        system_prompt: env("AEGIS_SYSTEM_PROMPT").or(file.system_prompt.clone()),
        budget,
        recap: env_flag("AEGIS_CONTEXT_RECAP", file.context_recap.unwrap_or(true))?,
        tools,
        mcp: mcp_servers,
        memory: file.memory.clone().unwrap_or_default(),
        max_rounds: env_num(
            "AEGIS_MAX_TOOL_ROUNDS",
            file.max_tool_rounds.unwrap_or(DEFAULT_TOOL_ROUNDS),
        )?
        .max(1),
        voice,
        chat_models: chat_models(&file)?,
        other_providers,
        limits: limits(&file)?,
    })))
}

/// The daily limits: the variables, else agent.json `limits`; absent or 0, none.
fn limits(file: &AgentFile) -> Result<crate::limits::LimitConfig, ConfigError> {
    let set = file.limits.unwrap_or_default();
    let pick =
        |name, given: Option<u64>| env_num(name, given.unwrap_or(0)).map(|n| Some(n).filter(|n| *n > 0));
    Ok(crate::limits::LimitConfig {
        daily: pick("AEGIS_DAILY_TOKENS", set.daily_tokens)?,
        chat_daily: pick("AEGIS_CHAT_DAILY_TOKENS", set.chat_daily_tokens)?,
        user_daily: pick("AEGIS_USER_DAILY_TOKENS", set.user_daily_tokens)?,
    })
}

/// The models a chat may pick (`AEGIS_MODELS`, comma-separated; agent.json `models`): an
/// operator's bound on what a chat's members can spend. None (`none`, `[]`): every chat
/// keeps the agent's.
fn chat_models(file: &AgentFile) -> Result<Option<Vec<String>>, ConfigError> {
    let from_env = env("AEGIS_MODELS");
    let given: Vec<String> = match (&from_env, &file.models) {
        (Some(list), _) if list.trim() == "none" => Vec::new(),
        (Some(list), _) => list
            .split(',')
            .map(|m| m.trim().to_string())
            .filter(|m| !m.is_empty())
            .collect(),
        (None, Some(list)) => list.iter().map(|m| m.trim().to_string()).collect(),
        (None, None) => return Ok(None),
    };
    match given.iter().find(|m| !crate::chat_model::plausible(m)) {
        Some(bad) => bad_setting(
            "AEGIS_MODELS",
            "models",
            from_env.is_some(),
            format!("{bad:?} is not a model name"),
        ),
        None => Ok(Some(given)),
    }
}

/// agent.json `voice` and `AEGIS_TRANSCRIBE_MODEL`: the key is found as `image_generate`'s.
fn voice_config(file: &AgentFile, chat: Option<&Provider>) -> crate::transcribe::VoiceConfig {
    let v = file.voice.clone().unwrap_or_default();
    let key_env = openai_key_env(v.openai_api_key_env, chat);
    crate::transcribe::VoiceConfig {
        enabled: v.enabled.unwrap_or(true),
        key_env,
        model: env("AEGIS_TRANSCRIBE_MODEL").or(v.model.filter(|m| !m.trim().is_empty())),
    }
}

/// Whether the model searches the web with its provider's own tool instead of Brave
/// Search (`AEGIS_WEB_SEARCH=native`, agent.json `tools.web_search.native`), while
/// `web_search` is on: a Claude model asked at an Anthropic API (Anthropic's web search
/// tool), an OpenAI model asked at OpenAI or at a server said to speak its Responses API
/// (its `web_search` tool, which only the Responses API offers: the requests go there).
fn native_search(
    file: &AgentFile,
    provider: Option<&mut Provider>,
    tools: &mut ToolConfig,
) -> Result<(), ConfigError> {
    let setting = file.tools.get("web_search");
    let native = match env("AEGIS_WEB_SEARCH").as_deref().map(str::trim) {
        Some("native") => true,
        Some("brave") => false,
        Some(other) => {
            return Err(ConfigError(format!(
                "AEGIS_WEB_SEARCH: expected native or brave, not {other:?}"
            )))
        }
        None => setting.and_then(|t| t.native).unwrap_or(false),
    };
    if !native || !tools.selection.builtins.contains(&Builtin::WebSearch) {
        return Ok(());
    }
    let searches = |p: &Provider| match p.kind {
        _ if p.host.is_some() => false,
        ProviderKind::Anthropic => true,
        ProviderKind::OpenAi => p.at_openai() || p.responses_api,
    };
    match provider {
        Some(p) if searches(p) => {
            let max_uses = setting
                .and_then(|t| t.max_uses)
                .unwrap_or(crate::native_search::DEFAULT_MAX_USES)
                .clamp(1, crate::native_search::MAX_USES);
            if p.kind == ProviderKind::OpenAi && !tools.search_scope.blocked.is_empty() {
                log::warn!(
                    "agent.json: tools.web_search.blocked_domains: OpenAI's own search takes only \
                     allowed_domains; its results are not filtered"
                );
            }
            p.web_search = Some(crate::native_search::NativeSearch {
                max_uses,
                scope: tools.search_scope.clone(),
            });
            p.responses_api |= p.kind == ProviderKind::OpenAi;
            tools.native_search = true;
        }
        p => log::warn!(
            "web_search: only a Claude model asked at Anthropic, or an OpenAI model asked at OpenAI's \
             Responses API, searches the web with its provider's tool, not {}; Brave Search is used \
             where its key is set",
            p.map_or("a missing model".to_string(), |p| format!(
                "{} ({})",
                p.model, p.kind
            ))
        ),
    }
    Ok(())
}

fn tool_config(file: &AgentFile, provider: Option<&Provider>) -> Result<ToolConfig, ConfigError> {
    let mut selection = Selection::all();
    for (name, setting) in &file.tools {
        if setting.enabled == Some(false) {
            match Builtin::ALL.into_iter().find(|b| b.name() == name) {
                Some(b) => {
                    selection.builtins.remove(&b);
                }
                None => log::warn!("agent.json: tools.{name}: no built-in tool of that name"),
            }
        }
    }
    if let Some(spec) = env("AEGIS_TOOLS") {
        selection.narrow(&spec).map_err(ConfigError)?;
    }
    let bash = file.tools.get("bash");
    let bash_timeout = bash
        .and_then(|t| t.timeout_secs)
        .map_or(Duration::from_secs(60), |s| Duration::from_secs(s.max(1)));
    let background_timeout = bash
        .and_then(|t| t.background_timeout_secs)
        .map_or(crate::tools::jobs::DEFAULT_TIMEOUT, |s| {
            Duration::from_secs(s.max(1))
        });
    let search_key_env = ["web_search", "image_search"].map(|tool| {
        file.tools
            .get(tool)
            .and_then(|t| t.brave_api_key_env.clone())
            .filter(|v| !v.trim().is_empty())
            .unwrap_or_else(|| crate::tools::brave::DEFAULT_KEY_ENV.to_string())
    });
    let image = file.tools.get("image_generate");
    let image_key_env = openai_key_env(image.and_then(|t| t.openai_api_key_env.clone()), provider);
    let named = |v: Option<&String>| v.filter(|m| !m.trim().is_empty()).cloned();
    let image_model = named(image.and_then(|t| t.model.as_ref()));
    let speech = file.tools.get("respond_with_voice");
    let speech_key_env = openai_key_env(speech.and_then(|t| t.openai_api_key_env.clone()), provider);
    let speech_model = named(speech.and_then(|t| t.model.as_ref()));
    let speech_voice = named(speech.and_then(|t| t.voice.as_ref()));
    // The agent's own credentials stay out of commands the model runs.
    let mut hidden_env = [
        "ANTHROPIC_API_KEY",
        AUTH_TOKEN,
        "OPENAI_API_KEY",
        "OPENROUTER_API_KEY",
    ]
    .map(String::from)
    .to_vec();
    hidden_env.extend(provider.and_then(|p| p.key_env.clone()));
    hidden_env.extend(search_key_env.iter().cloned());
    hidden_env.extend(image_key_env.clone());
    hidden_env.extend(speech_key_env.clone());
    let (search_scope, problems) = crate::search_scope::SearchScope::from_setting(
        file.tools.get("web_search"),
        file.timezone.as_deref(),
    );
    for p in problems {
        log::warn!("agent.json: {p}");
    }
    // Images come from the sites image_search's own lists name, else web_search's.
    let image_setting = file
        .tools
        .get("image_search")
        .filter(|s| s.allowed_domains.is_some() || s.blocked_domains.is_some());
    let image_scope = match image_setting {
        Some(setting) => {
            let (scope, problems) =
                crate::search_scope::SearchScope::of_tool("image_search", Some(setting), None);
            for p in problems {
                log::warn!("agent.json: {p}");
            }
            scope
        }
        None => search_scope.clone(),
    };
    // From the environment only: agent.json is in the workspace, which the model can
    // write, and this opens the operator's network to it.
    let private_hosts: Vec<String> = env("AEGIS_WEB_PRIVATE_HOSTS")
        .map(|v| {
            v.split(',')
                .map(|h| h.trim().to_string())
                .filter(|h| !h.is_empty())
                .collect()
        })
        .unwrap_or_default();
    if !private_hosts.is_empty() {
        log::info!(
            "web_fetch may reach private addresses of: {}",
            private_hosts.join(", ")
        );
    }
    let guests = crate::tools::guests::Guests::from_env(env, &selection).map_err(ConfigError)?;
    if let Some(g) = &guests {
        log::info!(
            "a guest's reply (not AEGIS_TRUSTED_USERS) may use: {}",
            g.describe()
        );
    }
    // A PDF goes whole only to servers known to read them; agent.json says otherwise for
    // another (a gateway in front of one of them).
    let read_file = file.tools.get("read_file");
    let known = provider.is_some_and(takes_files);
    let pdf = read_file.and_then(|t| t.pdf).unwrap_or(known);
    // So do images, where a model without vision makes its server refuse them (then the
    // request goes again without: see `worker::rounds`).
    let images = read_file.and_then(|t| t.images).unwrap_or(known);
    Ok(ToolConfig {
        pdf,
        images,
        guests,
        web_reach: std::sync::Arc::new(crate::tools::reach::Reach::new(&private_hosts)),
        selection,
        bash_timeout,
        background_timeout,
        hidden_env,
        timezone: file.timezone.clone(),
        search_key_env,
        image_key_env,
        image_model,
        speech_key_env,
        speech_model,
        speech_voice,
        native_search: false,
        search_scope,
        image_scope,
        model_menu: provider.is_some(),
        skills_path: env("AEGIS_SKILLS_PATH")
            .map(|p| {
                p.split(':')
                    .filter(|d| !d.trim().is_empty())
                    .map(PathBuf::from)
                    .collect()
            })
            .unwrap_or_default(),
    })
}

/// Whether the model's server takes the files tools show (PDFs whole, images):
/// Anthropic's Messages API (and those that speak it), OpenAI's, and OpenRouter's (which
/// reads PDFs for any model); not a model server on the host (`host:NAME` is none of these).
fn takes_files(p: &Provider) -> bool {
    p.kind == ProviderKind::Anthropic || p.at_openai() || p.base_url.starts_with("https://openrouter.ai/")
}

/// The variable holding the OpenAI key of an OpenAI API the agent calls besides its chat
/// model (images, speech): the one agent.json `named`, else `OPENAI_API_KEY`, unless that
/// variable holds the key of another OpenAI-compatible server the chat model is on, which
/// OpenAI would only refuse (a chat on OpenRouter with `OPENROUTER_API_KEY` leaves
/// `OPENAI_API_KEY` OpenAI's).
fn openai_key_env(named: Option<String>, chat: Option<&Provider>) -> Option<String> {
    let default = crate::tools::image_gen::DEFAULT_KEY_ENV;
    let elsewhere = chat.is_some_and(|p| {
        p.kind == ProviderKind::OpenAi
            && p.host.is_none()
            && !p.base_url.starts_with("https://api.openai.com/")
            && p.key_env.as_deref().is_none_or(|k| k == default)
    });
    match named.filter(|v| !v.trim().is_empty()) {
        Some(named) => Some(named),
        None if elsewhere => None,
        None => Some(default.to_string()),
    }
}

/// The provider: agent.json's `model`, `api_key_env` and `base_url`, overridden by the
/// environment; without either, the first of `ANTHROPIC_API_KEY`, `OPENAI_API_KEY`,
/// `OPENAI_BASE_URL` that is set.
fn provider_from(file: &AgentFile) -> Result<Option<Provider>, ConfigError> {
    let spec = env("AEGIS_MODEL").or(file.model.clone());
    if let Some(rest) = spec.as_deref().and_then(|m| m.strip_prefix("host:")) {
        return host_provider(rest, file).map(Some);
    }
    // `openai/gpt-4o` names a provider; `meta-llama/Llama-3` is just a model name.
    let (named, model_name) = match spec.as_deref().and_then(|m| m.split_once('/')) {
        Some(("openai", m)) => (Some(ProviderKind::OpenAi), Some(m.to_string())),
        Some(("anthropic", m)) => (Some(ProviderKind::Anthropic), Some(m.to_string())),
        _ => (None, spec.clone()),
    };
    let key_env = file.api_key_env.clone().filter(|k| !k.trim().is_empty());
    let from_key_env = key_env.as_deref().and_then(|k| {
        let k = k.to_ascii_lowercase();
        if k.contains("anthropic") {
            Some(ProviderKind::Anthropic)
        } else if k.contains("openai") {
            Some(ProviderKind::OpenAi)
        } else {
            None
        }
    });
    let explicit_key = key_env.as_deref().and_then(env);
    if key_env.is_some() && explicit_key.is_none() {
        log::warn!(
            "agent.json: api_key_env names {:?}, which is not set",
            key_env.as_deref().unwrap_or("")
        );
    }
    let openai_base = env("OPENAI_BASE_URL").or(file.base_url.clone());
    let anthropic_env = anthropic_credential();
    let anthropic_key = match &key_env {
        Some(_) => from_key_env == Some(ProviderKind::Anthropic) && explicit_key.is_some(),
        None => anthropic_env.is_some(),
    };
    let router_key_named = key_env
        .as_deref()
        .is_some_and(|k| k.to_ascii_lowercase().contains("openrouter"));
    let via_router = match openai_base.as_deref() {
        Some(base) => on_openrouter(base),
        None => {
            router_key_named
                || (key_env.is_none()
                    && env("OPENROUTER_API_KEY").is_some()
                    && env("OPENAI_API_KEY").is_none()
                    && !anthropic_key)
        }
    };
    // With Anthropic's own key, `anthropic/NAME` still means Claude at Anthropic.
    if via_router && !(named == Some(ProviderKind::Anthropic) && anthropic_key) {
        let (key, key_env) = match key_env {
            Some(k) => (explicit_key, Some(k)),
            None => match env("OPENROUTER_API_KEY") {
                Some(k) => (Some(k), Some("OPENROUTER_API_KEY".to_string())),
                None => (env("OPENAI_API_KEY"), Some("OPENAI_API_KEY".to_string())),
            },
        };
        let (model, default_model) = openrouter_model(spec.as_deref());
        let base = openai_base.unwrap_or_else(|| OPENROUTER.to_string());
        return provider(
            file,
            ProviderKind::OpenAi,
            (key, key_env),
            base,
            (model, default_model),
        )
        .map(Some);
    }
    // Claude Code's way to OpenRouter (`ANTHROPIC_BASE_URL=https://openrouter.ai/api`, its
    // key in `ANTHROPIC_AUTH_TOKEN`) reaches every model there, `openai/gpt-5` included.
    let anthropic_router = anthropic_key
        && env("ANTHROPIC_BASE_URL").is_some_and(|b| on_openrouter(&b))
        && openai_base.is_none()
        && env("OPENAI_API_KEY").is_none();
    let kind = match named.or(from_key_env) {
        _ if anthropic_router => ProviderKind::Anthropic,
        Some(k) => k,
        None if anthropic_env.is_some() => ProviderKind::Anthropic,
        None if explicit_key.is_some()
            || env("OPENAI_API_KEY").is_some()
            || env("OPENAI_BASE_URL").is_some()
            || file.base_url.is_some() =>
        {
            ProviderKind::OpenAi
        }
        None => return Ok(None),
    };
    let (key, key_env) = match (explicit_key, kind) {
        (Some(k), _) => (Some(k), key_env),
        (None, ProviderKind::Anthropic) => match anthropic_env {
            Some((k, var)) => (Some(k), Some(var.to_string())),
            None => (None, Some(kind.key_var().into())),
        },
        (None, ProviderKind::OpenAi) => (env(kind.key_var()), Some(kind.key_var().into())),
    };
    let base = match kind {
        ProviderKind::Anthropic => env("ANTHROPIC_BASE_URL"),
        ProviderKind::OpenAi => env("OPENAI_BASE_URL"),
    }
    .or(file.base_url.clone());
    if key.is_none() && (kind == ProviderKind::Anthropic || base.is_none()) {
        return Ok(None);
    }
    let base = base.unwrap_or_else(|| kind.own_api().into());
    // OpenRouter's Anthropic-compatible API takes its own names (`anthropic/claude-...`)
    // and only a bearer token.
    let router = kind == ProviderKind::Anthropic && on_openrouter(&base);
    let model_name = if router {
        spec.filter(|s| !s.trim().is_empty())
    } else {
        model_name
    };
    let default_model = model_name.is_none();
    let model = model_name.unwrap_or_else(|| match kind {
        ProviderKind::Anthropic if router => "anthropic/claude-sonnet-4.6".into(),
        _ => kind.default_model().into(),
    });
    provider(file, kind, (key, key_env), base, (model, default_model)).map(Some)
}

/// [ours] The providers besides the agent's that a chat may talk to (`/model
/// anthropic/NAME`): Anthropic's where its credential is set, OpenAI's (or the server of
/// `OPENAI_BASE_URL`) where `OPENAI_API_KEY` or that URL is, each with the agent's settings
/// (reply limit, reasoning effort; Claude's thinking for Claude only) and its own web
/// search where the agent's is the provider's. None besides a provider of the same kind
/// as the agent's, and none on OpenRouter, whose model names begin with those vendors'
/// names (`anthropic/claude-sonnet-4.6` is a model there).
fn others(file: &AgentFile, agent: Option<&Provider>) -> Result<Vec<Provider>, ConfigError> {
    let Some(agent) = agent else {
        return Ok(Vec::new());
    };
    let anthropic = anthropic_credential().map(|(key, var)| {
        let credential = (Some(key), var.to_string());
        (credential, env("ANTHROPIC_BASE_URL"))
    });
    let (key, base) = (env("OPENAI_API_KEY"), env("OPENAI_BASE_URL"));
    let openai = (key.is_some() || base.is_some()).then(|| ((key, "OPENAI_API_KEY".to_string()), base));
    let mut found = Vec::new();
    for (kind, set) in [
        (ProviderKind::Anthropic, anthropic),
        (ProviderKind::OpenAi, openai),
    ] {
        if let Some((credential, base)) = set {
            found.extend(other(file, agent, kind, credential, base)?);
        }
    }
    Ok(found)
}

/// Another provider of `kind` beside `agent`, with `credential` (the key and its
/// variable), at `base` (else the provider's own API); `None` where a chat may not pick
/// from it (see [`others`]).
fn other(
    file: &AgentFile,
    agent: &Provider,
    kind: ProviderKind,
    (key, key_env): (Option<String>, String),
    base: Option<String>,
) -> Result<Option<Provider>, ConfigError> {
    let base = base.unwrap_or_else(|| kind.own_api().into());
    let same = agent.host.is_none() && agent.kind == kind;
    if same || on_openrouter(&agent.base_url) || on_openrouter(&base) {
        return Ok(None);
    }
    // The model is a placeholder: a chat names its own.
    let mut p = provider_of(
        file,
        kind,
        (key, Some(key_env)),
        base,
        (kind.default_model().to_string(), false),
        false,
    )?;
    // The agent's model searches with its provider's tool (so Brave's is not offered):
    // another provider's does too, where it has one.
    if let Some(search) = &agent.web_search {
        match kind {
            ProviderKind::Anthropic => p.web_search = Some(search.clone()),
            ProviderKind::OpenAi if p.at_openai() => {
                p.web_search = Some(search.clone());
                p.responses_api = true;
            }
            ProviderKind::OpenAi => {}
        }
    }
    Ok(Some(p))
}

/// The variable of an Anthropic-compatible gateway's token (Claude Code's and Anthropic's
/// SDKs'), sent as `authorization: Bearer`.
const AUTH_TOKEN: &str = "ANTHROPIC_AUTH_TOKEN";

/// Anthropic's credential in the environment and its variable: a gateway's token first,
/// as in Claude Code, else the API key.
fn anthropic_credential() -> Option<(String, &'static str)> {
    [AUTH_TOKEN, "ANTHROPIC_API_KEY"]
        .into_iter()
        .find_map(|var| Some((env(var)?, var)))
}

/// OpenRouter's API, where a key from `OPENROUTER_API_KEY` alone sends the agent.
const OPENROUTER: &str = "https://openrouter.ai/api/v1";

/// Whether `base` is OpenRouter's API (`https://openrouter.ai/api/v1`).
fn on_openrouter(base: &str) -> bool {
    let rest = base.split_once("://").map_or(base, |(_, rest)| rest);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = host.split(':').next().unwrap_or("").to_ascii_lowercase();
    host == "openrouter.ai" || host.ends_with(".openrouter.ai")
}

/// The model asked of OpenRouter for `spec`, and whether it is the agent's default.
/// OpenRouter names every model `vendor/name` (`anthropic/claude-sonnet-4.6`,
/// `openai/gpt-5`), which reads like this agent's provider prefix: there the whole name
/// is the model's, and `openai/` is taken off only in front of another vendor's name
/// (`openai/anthropic/claude-sonnet-4.6`, the form that picks the dialect explicitly).
fn openrouter_model(spec: Option<&str>) -> (String, bool) {
    match spec.map(str::trim).filter(|s| !s.is_empty()) {
        None => ("openai/gpt-4o".to_string(), true),
        Some(s) => match s.strip_prefix("openai/") {
            Some(rest) if rest.contains('/') => (rest.to_string(), false),
            _ => (s.to_string(), false),
        },
    }
}

/// A provider speaking `kind` at `base` with `key` (from the variable `key_env`), asked
/// for `model` (the agent's default or not), with the settings of `file` and the
/// environment.
fn provider(
    file: &AgentFile,
    kind: ProviderKind,
    key: (Option<String>, Option<String>),
    base: String,
    model: (String, bool),
) -> Result<Provider, ConfigError> {
    provider_of(file, kind, key, base, model, true)
}

/// [`provider`], for the agent's own (`agents`: a thinking budget it cannot use is said
/// in the log) or for another a chat may pick ([`others`]: it just goes without).
fn provider_of(
    file: &AgentFile,
    kind: ProviderKind,
    (key, key_env): (Option<String>, Option<String>),
    base: String,
    (model, default_model): (String, bool),
    agents: bool,
) -> Result<Provider, ConfigError> {
    let limit = max_tokens(file)?;
    let openrouter = on_openrouter(&base);
    // OpenRouter passes a thinking budget on to Claude (and Gemini) as its `reasoning`.
    let router = kind == ProviderKind::OpenAi && openrouter;
    // A gateway's token, and any key OpenRouter's Anthropic-compatible API gets, is a
    // bearer token there.
    let bearer = kind == ProviderKind::Anthropic && (openrouter || key_env.as_deref() == Some(AUTH_TOKEN));
    let takes_thinking = kind == ProviderKind::Anthropic || router;
    let thinking = match agents || takes_thinking {
        true => thinking(file, takes_thinking, limit)?,
        false => None,
    };
    let mut effort = reasoning_effort(file)?;
    if let (true, Some(Thinking::Budget(budget)), Some(e)) = (router, thinking, &effort) {
        log::warn!(
            "OpenRouter takes a thinking budget or a reasoning effort, not both: \
             the budget ({budget} tokens) is used, not {e:?}"
        );
        effort = None;
    }
    Ok(Provider {
        kind,
        key,
        key_env,
        base_url: base.trim_end_matches('/').to_string(),
        model,
        default_model,
        max_tokens: limit,
        reasoning_effort: effort,
        thinking,
        connect_timeout: Duration::from_secs(env_num("AEGIS_LLM_CONNECT_TIMEOUT", 10)?),
        read_timeout: Duration::from_secs(env_num("AEGIS_LLM_READ_TIMEOUT", 120)?),
        attempts: env_num("AEGIS_LLM_RETRIES", 4u32)?.max(1),
        host: None,
        bearer,
        responses_api: kind == ProviderKind::OpenAi && openai_api(file)?,
        web_search: None,
    })
}

/// Whether requests go to OpenAI's Responses API from the start (`AEGIS_OPENAI_API`,
/// agent.json `openai_api`: `chat`, the default, or `responses`).
fn openai_api(file: &AgentFile) -> Result<bool, ConfigError> {
    let from_env = env("AEGIS_OPENAI_API");
    match from_env.as_deref().or(file.openai_api.as_deref()).map(str::trim) {
        None | Some("chat") => Ok(false),
        Some("responses") => Ok(true),
        Some(other) => {
            let problem = format!("{other:?}: use \"chat\" (Chat Completions, the default) or \"responses\"");
            bad_setting("AEGIS_OPENAI_API", "openai_api", from_env.is_some(), problem)
                .map(|_: Option<()>| false)
        }
    }
}

fn max_tokens(file: &AgentFile) -> Result<Option<u32>, ConfigError> {
    match env("AEGIS_MAX_TOKENS") {
        Some(_) => Ok(Some(env_num("AEGIS_MAX_TOKENS", 4096u32)?)),
        None => Ok(file.max_tokens),
    }
}

/// How hard a reasoning model thinks (`AEGIS_REASONING_EFFORT`, agent.json
/// `reasoning_effort`): OpenAI's `reasoning_effort` (`minimal`, `low`, `medium`, `high`)
/// or Anthropic's `output_config.effort` (`low` to `max`), and what new models add, passed
/// on as given; a word of lower-case letters, at most 16.
fn reasoning_effort(file: &AgentFile) -> Result<Option<String>, ConfigError> {
    let from_env = env("AEGIS_REASONING_EFFORT");
    let Some(given) = from_env.as_ref().or(file.reasoning_effort.as_ref()) else {
        return Ok(None);
    };
    let effort = given.trim();
    if effort.is_empty() || effort.len() > 16 || !effort.bytes().all(|b| b.is_ascii_lowercase()) {
        let problem = format!("{given:?} is not a word such as low, medium or high");
        return bad_setting(
            "AEGIS_REASONING_EFFORT",
            "reasoning_effort",
            from_env.is_some(),
            problem,
        );
    }
    Ok(Some(effort.to_string()))
}

/// A bad value of a setting: from the environment (`var`) it stops the agent with a
/// message naming it; from agent.json (`field`), as for any field there, it is reported
/// and the agent runs on without it.
fn bad_setting<T>(var: &str, field: &str, from_env: bool, problem: String) -> Result<Option<T>, ConfigError> {
    if from_env {
        return Err(ConfigError(format!("{var}: {problem}")));
    }
    log::warn!("agent.json: field `{field}`: {problem} (ignored)");
    Ok(None)
}

/// Claude's thinking (`AEGIS_THINKING_BUDGET`, agent.json `thinking_budget`): the tokens
/// it may think with, at least 1,024 (the API's minimum) and below the reply limit when
/// one is set; or `adaptive`, Claude deciding (4.6 and later).
fn thinking(file: &AgentFile, taken: bool, max_tokens: Option<u32>) -> Result<Option<Thinking>, ConfigError> {
    let from_env = env("AEGIS_THINKING_BUDGET");
    let given = match (&from_env, &file.thinking_budget) {
        (Some(v), _) => v.trim().to_string(),
        (None, Some(serde_json::Value::String(s))) => s.trim().to_string(),
        (None, Some(v)) => v.to_string(),
        (None, None) => return Ok(None),
    };
    let problem = match (given.as_str(), given.parse::<u32>()) {
        ("adaptive", _) => None,
        (_, Ok(0)) => return Ok(None),
        (_, Ok(budget @ 1..=1023)) => Some(format!("{budget}: Anthropic's minimum is 1024 tokens")),
        (_, Ok(budget)) => max_tokens.filter(|m| *m <= budget).map(|m| {
            format!("{budget} must be below max_tokens ({m}): thinking is part of the reply's tokens")
        }),
        (_, Err(_)) => Some(format!(
            "{given:?} is neither a number of tokens nor \"adaptive\""
        )),
    };
    if let Some(p) = problem {
        return bad_setting("AEGIS_THINKING_BUDGET", "thinking_budget", from_env.is_some(), p);
    }
    if !taken {
        log::warn!(
            "thinking_budget is Claude's thinking (at Anthropic or through OpenRouter); \
             ignored for this model (see reasoning_effort)"
        );
        return Ok(None);
    }
    Ok(Some(match given.parse() {
        Ok(budget) => Thinking::Budget(budget),
        Err(_) => Thinking::Adaptive,
    }))
}

/// `host:NAME/MODEL` (after `host:`): a model server on the host, reached through it
/// (upstream's local models). No key: the host adds none, as in the Go agent.
fn host_provider(rest: &str, file: &AgentFile) -> Result<Provider, ConfigError> {
    let named = rest.split_once('/').filter(|(name, model)| {
        !name.is_empty()
            && !model.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
    });
    let Some((name, model)) = named else {
        return Err(ConfigError(format!(
            "model \"host:{rest}\": expected host:SERVER/MODEL, as host:ollama/llama3.2 \
             (SERVER in lower case: ollama, lmstudio, vllm)"
        )));
    };
    Ok(Provider {
        kind: ProviderKind::OpenAi,
        key: None,
        key_env: None,
        base_url: format!("host:{name}"),
        model: model.to_string(),
        default_model: false,
        max_tokens: max_tokens(file)?,
        reasoning_effort: reasoning_effort(file)?,
        thinking: None,
        connect_timeout: Duration::from_secs(env_num("AEGIS_LLM_CONNECT_TIMEOUT", 10)?),
        // A host server may first load the model from disk: half a minute is common.
        read_timeout: Duration::from_secs(env_num("AEGIS_LLM_READ_TIMEOUT", 120)?),
        attempts: env_num("AEGIS_LLM_RETRIES", 4u32)?.max(1),
        host: Some(name.to_string()),
        bearer: false,
        responses_api: false,
        web_search: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_models_chats_may_pick_are_names_or_none() {
        let models = |text: &str| chat_models(&crate::agent_file::parse(text).0).unwrap();
        assert_eq!(models("{}"), None, "any the server lists");
        assert_eq!(models(r#"{"models": []}"#), Some(vec![]));
        assert_eq!(
            models(r#"{"models": [" gpt-5.5-mini ", "anthropic/claude-opus-4.7"]}"#),
            Some(vec![
                "gpt-5.5-mini".to_string(),
                "anthropic/claude-opus-4.7".to_string()
            ])
        );
        assert_eq!(
            models(r#"{"models": ["gpt 5"]}"#),
            None,
            "a bad list is ignored, said in the log"
        );
    }

    #[test]
    fn daily_limits_are_tokens_and_zero_is_none() {
        let limits = |text: &str| {
            let (file, problems) = crate::agent_file::parse(text);
            (limits(&file).unwrap(), problems)
        };
        let (set, problems) = limits(r#"{"limits": {"daily_tokens": 2000000, "chat_daily_tokens": 0}}"#);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(
            (set.daily, set.chat_daily, set.user_daily),
            (Some(2_000_000), None, None)
        );
        let (set, _) = limits(r#"{"limits": {"user_daily_tokens": 50000}}"#);
        assert_eq!(set.user_daily, Some(50_000));
        assert_eq!(limits("{}").0, crate::limits::LimitConfig::default());
        let (set, problems) = limits(r#"{"limits": {"daily_token": 5}}"#);
        assert_eq!(set, crate::limits::LimitConfig::default());
        assert!(
            problems[0].contains("unknown field `daily_token`"),
            "{problems:?}"
        );
    }

    /// `read_file` shows PDFs whole to the servers known to read them, unless agent.json
    /// says otherwise either way.
    #[test]
    fn pdfs_go_where_they_are_read_or_where_agent_json_says() {
        let at = |kind, base: &str, file: &AgentFile| {
            let mut p = host_provider("ollama/m", file).unwrap();
            (p.kind, p.base_url, p.host) = (kind, base.into(), None);
            p
        };
        for (setting, expect_local, expect_known) in [
            ("", false, true),
            (r#"{"tools": {"read_file": {"pdf": true}}}"#, true, true),
            (r#"{"tools": {"read_file": {"pdf": false}}}"#, false, false),
        ] {
            let images_setting = setting.replace("pdf", "images");
            let (images_file, _) =
                crate::agent_file::parse(if setting.is_empty() { "{}" } else { &images_setting });
            let (file, problems) = crate::agent_file::parse(if setting.is_empty() { "{}" } else { setting });
            assert!(problems.is_empty(), "{problems:?}");
            let known = [
                at(ProviderKind::Anthropic, "https://api.anthropic.com", &file),
                at(ProviderKind::OpenAi, "https://api.openai.com/v1", &file),
                at(ProviderKind::OpenAi, "https://openrouter.ai/api/v1", &file),
            ];
            for p in &known {
                assert_eq!(
                    tool_config(&file, Some(p)).unwrap().pdf,
                    expect_known,
                    "{setting} {p:?}"
                );
                assert_eq!(
                    tool_config(&images_file, Some(p)).unwrap().images,
                    expect_known,
                    "{images_setting} {p:?}"
                );
            }
            let local = [
                at(ProviderKind::OpenAi, "http://localhost:11434/v1", &file),
                host_provider("ollama/m", &file).unwrap(),
            ];
            for p in &local {
                assert_eq!(
                    tool_config(&file, Some(p)).unwrap().pdf,
                    expect_local,
                    "{setting} {p:?}"
                );
                assert_eq!(
                    tool_config(&images_file, Some(p)).unwrap().images,
                    expect_local,
                    "{images_setting} {p:?}"
                );
            }
            assert_eq!(tool_config(&file, None).unwrap().pdf, expect_local, "no model");
        }
    }

    /// The setting reaches the provider that offers a search of its own, and turns the
    /// Responses API on for OpenAI (its search is there only); others keep Brave's.
    #[test]
    fn native_search_goes_where_the_provider_offers_one() {
        let (file, problems) =
            crate::agent_file::parse(r#"{"tools": {"web_search": {"native": true, "max_uses": 7}}}"#);
        assert!(problems.is_empty(), "{problems:?}");
        let at = |kind, base: &str, responses_api: bool| {
            let mut p = host_provider("ollama/m", &file).unwrap();
            (p.kind, p.base_url, p.host, p.responses_api) = (kind, base.into(), None, responses_api);
            p
        };
        let cases = [
            (at(ProviderKind::OpenAi, "https://api.openai.com/v1", false), true),
            (at(ProviderKind::OpenAi, "http://vllm.local/v1", true), true),
            (at(ProviderKind::OpenAi, "http://vllm.local/v1", false), false),
            (
                at(ProviderKind::Anthropic, "https://api.anthropic.com", false),
                true,
            ),
            (host_provider("ollama/m", &file).unwrap(), false),
        ];
        for (mut p, searches) in cases {
            let mut tools = tool_config(&file, Some(&p)).unwrap();
            let asked_there = p.responses_api;
            native_search(&file, Some(&mut p), &mut tools).unwrap();
            assert_eq!(p.web_search.as_ref().map(|s| s.max_uses), searches.then_some(7));
            assert_eq!(tools.native_search, searches, "{p:?}");
            let there = asked_there || searches && p.kind == ProviderKind::OpenAi;
            assert_eq!(p.responses_api, there, "{p:?}");
        }
    }

    #[test]
    fn a_chat_may_pick_another_providers_model_with_its_search_and_not_at_openrouter() {
        let (file, _) = crate::agent_file::parse(
            r#"{"max_tokens": 2000, "thinking_budget": 1024, "tools": {"web_search": {"native": true}}}"#,
        );
        let at = |kind, base: &str| {
            let mut p = host_provider("ollama/m", &file).unwrap();
            (p.kind, p.base_url, p.host) = (kind, base.into(), None);
            let mut tools = tool_config(&file, Some(&p)).unwrap();
            native_search(&file, Some(&mut p), &mut tools).unwrap();
            p
        };
        let key = |var: &str| (Some("k".to_string()), var.to_string());
        let openai = at(ProviderKind::OpenAi, "https://api.openai.com/v1");
        let claude = other(
            &file,
            &openai,
            ProviderKind::Anthropic,
            key("ANTHROPIC_API_KEY"),
            None,
        )
        .unwrap()
        .expect("Claude beside OpenAI");
        assert_eq!(claude.base_url, "https://api.anthropic.com");
        assert_eq!(claude.key_env.as_deref(), Some("ANTHROPIC_API_KEY"));
        assert!(claude.web_search.is_some(), "the agent's own search goes with it");
        assert_eq!(
            (claude.max_tokens, claude.thinking),
            (Some(2000), Some(Thinking::Budget(1024)))
        );
        let anthropic = at(ProviderKind::Anthropic, "https://api.anthropic.com");
        let gpt = other(
            &file,
            &anthropic,
            ProviderKind::OpenAi,
            key("OPENAI_API_KEY"),
            None,
        )
        .unwrap()
        .expect("OpenAI beside Claude");
        assert!(
            gpt.web_search.is_some() && gpt.responses_api,
            "OpenAI searches in the Responses API"
        );
        assert_eq!(gpt.thinking, None, "Claude's thinking is Claude's");
        let local = other(
            &file,
            &anthropic,
            ProviderKind::OpenAi,
            (None, "OPENAI_API_KEY".into()),
            Some("http://vllm.local/v1".into()),
        )
        .unwrap()
        .expect("a local server");
        assert!(local.web_search.is_none() && !local.responses_api);
        let none = |agent: &Provider, kind, base: Option<&str>| {
            other(&file, agent, kind, key("K"), base.map(String::from))
                .unwrap()
                .is_none()
        };
        assert!(none(&openai, ProviderKind::OpenAi, None), "the agent's own kind");
        let router = at(ProviderKind::OpenAi, "https://openrouter.ai/api/v1");
        assert!(
            none(&router, ProviderKind::Anthropic, None),
            "names there are OpenRouter's"
        );
        assert!(none(
            &openai,
            ProviderKind::Anthropic,
            Some("https://openrouter.ai/api")
        ));
        let host = host_provider("ollama/m", &file).unwrap();
        assert!(
            !none(&host, ProviderKind::OpenAi, None),
            "a host model's agent may pick OpenAI's"
        );
    }

    #[test]
    fn openrouter_is_known_by_its_host_alone() {
        for base in [
            "https://openrouter.ai/api/v1",
            "https://OpenRouter.ai/api/v1/",
            "https://openrouter.ai:443/api/v1",
            "https://eu.openrouter.ai/api/v1",
            "openrouter.ai/api/v1",
        ] {
            assert!(on_openrouter(base), "{base}");
        }
        for base in [
            "https://api.openai.com/v1",
            "https://openrouter.ai.example.com/v1",
            "https://notopenrouter.ai/v1",
            "http://localhost:8080/openrouter.ai",
            "https://openrouter.ai@proxy.example/v1",
            "",
        ] {
            assert!(!on_openrouter(base), "{base}");
        }
    }

    #[test]
    fn openrouter_gets_its_own_model_names_whole() {
        let named = |s: &str| openrouter_model(Some(s));
        assert_eq!(
            named("anthropic/claude-sonnet-4.6"),
            ("anthropic/claude-sonnet-4.6".into(), false)
        );
        assert_eq!(named("openai/gpt-5"), ("openai/gpt-5".into(), false));
        assert_eq!(
            named("openai/anthropic/claude-opus-4.5"),
            ("anthropic/claude-opus-4.5".into(), false)
        );
        assert_eq!(
            named("meta-llama/llama-3.3-70b-instruct:free"),
            ("meta-llama/llama-3.3-70b-instruct:free".into(), false)
        );
        assert_eq!(named("openrouter/auto"), ("openrouter/auto".into(), false));
        assert_eq!(openrouter_model(None), ("openai/gpt-4o".into(), true));
        assert_eq!(openrouter_model(Some("  ")), ("openai/gpt-4o".into(), true));
    }
}
