//! Agent configuration: flags override environment variables, which override defaults.
//! Every name here is part of the user-facing contract (PROTOCOL.md §6, README).

use std::path::PathBuf;
use std::time::Duration;

use crate::llm::{Provider, ProviderKind};
use crate::session::Budget;

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
    --workspace DIR     sessions live in DIR/sessions [env AEGIS_WORKSPACE, default /workspace]
    -h, --help          print this help
    -V, --version       print the version

LLM (environment only, so keys never appear in a process listing):
    ANTHROPIC_API_KEY   use the Anthropic Messages API (model claude-sonnet-4-20250514)
    OPENAI_API_KEY      else use OpenAI Chat Completions (model gpt-4o)
    OPENAI_BASE_URL     OpenAI-compatible server (Ollama, llama.cpp, vLLM); works without a key
    ANTHROPIC_BASE_URL  Anthropic API base [default https://api.anthropic.com]
    AEGIS_MODEL         model name override
    AEGIS_MAX_TOKENS    reply token limit [Anthropic default 4096]
    AEGIS_SYSTEM_PROMPT system prompt [default \"You are a helpful assistant.\"]
    AEGIS_CONTEXT_TURNS newest turns sent to the model [default 50]
    AEGIS_CONTEXT_CHARS character budget of those turns [default 24000]
    AEGIS_LLM_CONNECT_TIMEOUT  seconds to connect to the LLM API [default 10]
    AEGIS_LLM_READ_TIMEOUT     seconds allowed between streamed chunks [default 120]
    AEGIS_LLM_RETRIES          attempts before the first token [default 4]

Logs go to stderr; RUST_LOG=debug for more.";

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
    /// System prompt.
    pub system_prompt: String,
    /// Context window limits.
    pub budget: Budget,
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
    let budget = Budget {
        turns: env_num("AEGIS_CONTEXT_TURNS", 50)?,
        chars: env_num("AEGIS_CONTEXT_CHARS", 24_000)?,
    };
    Ok(Action::Run(Box::new(Config {
        mode,
        workspace: PathBuf::from(workspace),
        provider: provider_from_env()?,
        system_prompt: env("AEGIS_SYSTEM_PROMPT").unwrap_or_else(|| "You are a helpful assistant.".into()),
        budget,
    })))
}

fn provider_from_env() -> Result<Option<Provider>, ConfigError> {
    let anthropic_key = env("ANTHROPIC_API_KEY");
    let openai_key = env("OPENAI_API_KEY");
    let openai_base = env("OPENAI_BASE_URL");
    let (kind, key, base) = if let Some(k) = anthropic_key {
        let base = env("ANTHROPIC_BASE_URL").unwrap_or_else(|| "https://api.anthropic.com".into());
        (ProviderKind::Anthropic, Some(k), base)
    } else if openai_key.is_some() || openai_base.is_some() {
        let base = openai_base.unwrap_or_else(|| "https://api.openai.com/v1".into());
        (ProviderKind::OpenAi, openai_key, base)
    } else {
        return Ok(None);
    };
    let model = env("AEGIS_MODEL").unwrap_or_else(|| match kind {
        ProviderKind::Anthropic => "claude-sonnet-4-20250514".into(),
        ProviderKind::OpenAi => "gpt-4o".into(),
    });
    let max_tokens = match env("AEGIS_MAX_TOKENS") {
        Some(_) => Some(env_num("AEGIS_MAX_TOKENS", 4096u32)?),
        None => None,
    };
    Ok(Some(Provider {
        kind,
        key,
        base_url: base.trim_end_matches('/').to_string(),
        model,
        max_tokens,
        connect_timeout: Duration::from_secs(env_num("AEGIS_LLM_CONNECT_TIMEOUT", 10)?),
        read_timeout: Duration::from_secs(env_num("AEGIS_LLM_READ_TIMEOUT", 120)?),
        attempts: env_num("AEGIS_LLM_RETRIES", 4u32)?.max(1),
    }))
}
