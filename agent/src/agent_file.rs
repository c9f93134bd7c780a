//! `<workspace>/.aegis/agent.json`, the agent's optional configuration file (upstream's
//! shape). Each field is read on its own: a field with a bad value is reported by name
//! and left at its default, and the rest of the file still applies.

use std::collections::BTreeMap;
use std::path::Path;

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;

use crate::mcp::ServerConfig;

/// Per-tool settings (`tools.NAME`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct ToolSetting {
    /// `false` turns the tool off.
    #[serde(default)]
    pub enabled: Option<bool>,
    /// [ours] For `bash`: longest run in seconds (default 60).
    #[serde(default)]
    pub timeout_secs: Option<u64>,
    /// [ours] For `bash`: longest run of a background job in seconds (default 7200).
    #[serde(default)]
    pub background_timeout_secs: Option<u64>,
    /// For `web_search` and `image_search`: the variable holding the Brave Search key.
    #[serde(default)]
    pub brave_api_key_env: Option<String>,
    /// For `image_generate` (and, ours, `respond_with_voice`): the variable holding the
    /// OpenAI key.
    #[serde(default)]
    pub openai_api_key_env: Option<String>,
    /// [ours] For `image_generate`: the image model (default `gpt-image-1`); for
    /// `respond_with_voice`: the speech model (default `gpt-4o-mini-tts`).
    #[serde(default)]
    pub model: Option<String>,
    /// [ours] For `respond_with_voice`: the voice (default `coral`).
    #[serde(default)]
    pub voice: Option<String>,
    /// [ours] For `web_search`: search with the model provider's own tool (Anthropic's)
    /// instead of Brave Search.
    #[serde(default)]
    pub native: Option<bool>,
    /// [ours] For a native `web_search`: searches per model request (default 5).
    #[serde(default)]
    pub max_uses: Option<u32>,
    /// [ours] For `web_search`: only results of these sites.
    #[serde(default)]
    pub allowed_domains: Option<Vec<String>>,
    /// [ours] For `web_search`: never results of these sites.
    #[serde(default)]
    pub blocked_domains: Option<Vec<String>>,
    /// [ours] For a native `web_search`: the user's approximate place.
    #[serde(default)]
    pub user_location: Option<crate::search_scope::Location>,
    /// [ours] For `read_file`: show a PDF to the model whole (default: where the model's
    /// server is Anthropic's, OpenAI's or OpenRouter's).
    #[serde(default)]
    pub pdf: Option<bool>,
    /// [ours] For `read_file` and MCP tools: show an image to the model (default: as for
    /// `pdf`); off for a model without vision, whose server refuses one.
    #[serde(default)]
    pub images: Option<bool>,
}

/// [ours] `limits`: tokens a UTC day the model's requests may take (see `limits.rs`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsSetting {
    /// All chats together.
    pub daily_tokens: Option<u64>,
    /// Each chat.
    pub chat_daily_tokens: Option<u64>,
    /// The replies to each person's messages.
    pub user_daily_tokens: Option<u64>,
}

/// The file's content. Absent fields are `None`/empty.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AgentFile {
    /// `provider/model` (`openai/gpt-4o`, `anthropic/claude-...`) or a bare model name.
    pub model: Option<String>,
    /// Name of the environment variable holding the API key.
    pub api_key_env: Option<String>,
    /// API base URL.
    pub base_url: Option<String>,
    /// Reply token limit.
    pub max_tokens: Option<u32>,
    /// Turns in the context.
    pub context_turns: Option<usize>,
    /// Characters in the context.
    pub context_chars: Option<usize>,
    /// [ours] Whether turns that fell out of the context are recapped (default true).
    pub context_recap: Option<bool>,
    /// System prompt.
    pub system_prompt: Option<String>,
    /// [ours] Tool rounds per message.
    pub max_tool_rounds: Option<usize>,
    /// Tool settings by name.
    pub tools: BTreeMap<String, ToolSetting>,
    /// MCP servers by name.
    pub mcp: BTreeMap<String, ServerConfig>,
    /// Long-term memory settings.
    pub memory: Option<crate::memory::MemoryConfig>,
    /// IANA time zone the host evaluates scheduled tasks in (`Europe/Paris`).
    pub timezone: Option<String>,
    /// [ours] Voice messages: `enabled`, `openai_api_key_env`, `model` (speech to text).
    pub voice: Option<ToolSetting>,
    /// [ours] How hard a reasoning model thinks (OpenAI `reasoning_effort`).
    pub reasoning_effort: Option<String>,
    /// [ours] Claude's thinking: the tokens it may think with, or `"adaptive"`.
    pub thinking_budget: Option<Value>,
    /// [ours] `chat` or `responses`: the OpenAI API requests go to.
    pub openai_api: Option<String>,
    /// [ours] The models a chat may pick with `/model` (else any the provider lists).
    pub models: Option<Vec<String>>,
    /// [ours] Daily limits on the model's tokens.
    pub limits: Option<LimitsSetting>,
}

const FIELDS: &[&str] = &[
    "model",
    "api_key_env",
    "base_url",
    "max_tokens",
    "context_turns",
    "context_chars",
    "context_recap",
    "system_prompt",
    "max_tool_rounds",
    "tools",
    "mcp",
    "memory",
    "timezone",
    "voice",
    "reasoning_effort",
    "thinking_budget",
    "openai_api",
    "models",
    "limits",
];

/// Parse the text of an agent.json; problems come back as messages naming the field.
pub fn parse(text: &str) -> (AgentFile, Vec<String>) {
    let mut problems = Vec::new();
    let root: Value = match serde_json::from_str(text) {
        Ok(v @ Value::Object(_)) => v,
        Ok(_) => return (AgentFile::default(), vec!["the file is not a JSON object".into()]),
        Err(e) => return (AgentFile::default(), vec![format!("not valid JSON: {e}")]),
    };
    let obj = root.as_object().expect("checked above");
    for key in obj.keys().filter(|k| !FIELDS.contains(&k.as_str())) {
        problems.push(format!("unknown field `{key}` (ignored)"));
    }
    let file = AgentFile {
        model: get(obj, "model", &mut problems),
        api_key_env: get(obj, "api_key_env", &mut problems),
        base_url: get(obj, "base_url", &mut problems),
        max_tokens: get(obj, "max_tokens", &mut problems),
        context_turns: get(obj, "context_turns", &mut problems),
        context_chars: get(obj, "context_chars", &mut problems),
        context_recap: get(obj, "context_recap", &mut problems),
        system_prompt: get(obj, "system_prompt", &mut problems),
        max_tool_rounds: get(obj, "max_tool_rounds", &mut problems),
        tools: get(obj, "tools", &mut problems).unwrap_or_default(),
        mcp: get(obj, "mcp", &mut problems).unwrap_or_default(),
        memory: get(obj, "memory", &mut problems),
        timezone: get(obj, "timezone", &mut problems),
        voice: get(obj, "voice", &mut problems),
        reasoning_effort: get(obj, "reasoning_effort", &mut problems),
        thinking_budget: get(obj, "thinking_budget", &mut problems),
        openai_api: get(obj, "openai_api", &mut problems),
        models: get(obj, "models", &mut problems),
        limits: get(obj, "limits", &mut problems),
    };
    (file, problems)
}

fn get<T: DeserializeOwned>(
    obj: &serde_json::Map<String, Value>,
    name: &str,
    problems: &mut Vec<String>,
) -> Option<T> {
    let v = obj.get(name).filter(|v| !v.is_null())?.clone();
    match serde_json::from_value(v) {
        Ok(t) => Some(t),
        Err(e) => {
            problems.push(format!("field `{name}`: {e} (default used)"));
            None
        }
    }
}

/// Read `path`; a missing file is an empty configuration. Problems are logged with the
/// file's path and the field.
pub fn load(path: &Path) -> AgentFile {
    let text = match crate::regular::read_to_string(path, crate::regular::CONFIG_CAP) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return AgentFile::default(),
        Err(e) => {
            log::error!("{}: {e}; running with defaults", path.display());
            return AgentFile::default();
        }
    };
    let (file, problems) = parse(&text);
    for p in &problems {
        log::error!("{}: {p}", path.display());
    }
    if problems.is_empty() {
        log::info!("loaded {}", path.display());
    }
    file
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_shape_parses() {
        let (f, problems) = parse(
            r#"{"model": "anthropic/claude-x", "api_key_env": "MY_KEY", "max_tokens": 1000,
                "context_turns": 10, "system_prompt": "Be brief.", "memory": {"inject_mode": "off"},
                "tools": {"bash": {"enabled": false}, "web_fetch": {"brave_api_key_env": "X"}},
                "mcp": {"weather": {"command": "weather-mcp", "args": ["--stdio"]}}}"#,
        );
        assert!(problems.iter().all(|p| !p.contains("field")), "{problems:?}");
        assert_eq!(f.model.as_deref(), Some("anthropic/claude-x"));
        assert_eq!(f.max_tokens, Some(1000));
        assert_eq!(f.tools["bash"].enabled, Some(false));
        assert_eq!(f.mcp["weather"].args, vec!["--stdio".to_string()]);
    }

    #[test]
    fn a_bad_field_is_named_and_the_rest_still_applies() {
        let (f, problems) = parse(r#"{"max_tokens": "lots", "context_turns": 7, "tools": 3, "colour": 1}"#);
        assert_eq!(f.max_tokens, None);
        assert_eq!(f.context_turns, Some(7));
        assert!(
            problems.iter().any(|p| p.contains("`max_tokens`")),
            "{problems:?}"
        );
        assert!(problems.iter().any(|p| p.contains("`tools`")), "{problems:?}");
        assert!(problems.iter().any(|p| p.contains("`colour`")), "{problems:?}");
        let (_, problems) = parse("{not json");
        assert!(problems[0].contains("not valid JSON"), "{problems:?}");
        let (f, problems) = parse(r#"{"context_recap": false}"#);
        assert_eq!((f.context_recap, problems.len()), (Some(false), 0));
        let (f, problems) = parse(r#"{"context_recap": "no"}"#);
        assert_eq!(f.context_recap, None);
        assert!(problems[0].contains("`context_recap`"), "{problems:?}");
    }
}
