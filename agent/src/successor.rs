//! When the model the agent picked by default is gone. Providers retire models a year or
//! so after release (Anthropic retired `claude-sonnet-4-20250514`, upstream's default, on
//! 2026-06-15; OpenAI shuts `gpt-4o` down in January 2027), and an agent installed once
//! and left to run would then answer every message with a 404. So when the user did not
//! name a model and the server says it has no such model, the agent asks the server which
//! models the key can use (`GET /v1/models`, which Anthropic, OpenAI, Ollama, vLLM and
//! llama.cpp all answer) and takes the newest of the same family. A model the user named
//! is never replaced: that 404 reaches them, with a hint. The same goes for the default
//! image model (`image_generate`), speech-to-text model (voice messages) and text-to-speech
//! model (`respond_with_voice`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::Value;

use crate::llm::{ErrorKind, LlmError, Provider, ProviderKind};

/// The model chosen in place of a retired default, sought at most once per process: a
/// server that lists nothing better is not asked again with each message. Clones share it.
#[derive(Debug, Clone, Default)]
pub struct Successor {
    chosen: Arc<Mutex<Option<String>>>,
    sought: Arc<AtomicBool>,
}

impl Successor {
    /// The model to ask for: `configured`, or the one chosen in its place.
    pub fn model(&self, configured: &str) -> String {
        let chosen = self.chosen.lock().unwrap_or_else(|e| e.into_inner());
        chosen.clone().unwrap_or_else(|| configured.to_string())
    }

    /// When `configured` is a default (`default`, not a model the user named) and a
    /// refusal (`status`, its words `refusal`) says the server no longer has it: the model
    /// to use instead, found the first time only with `find(current)`, and logged as the
    /// `what` ("image model") that gave way.
    pub fn replace(
        &self,
        (default, configured): (bool, &str),
        (status, refusal): (u16, &str),
        what: &str,
        find: impl FnOnce(&str) -> Result<String, String>,
    ) -> Option<String> {
        if !default || !refused_as_gone(status, refusal) {
            return None;
        }
        let current = self.model(configured);
        match self.seek(|| find(&current))? {
            Ok(next) => {
                log::warn!("{what} {current} is gone; using {next} (the server said: {refusal})");
                Some(next)
            }
            Err(e) => {
                log::warn!("{what} {current} is gone ({refusal}), and no other was found: {e}");
                None
            }
        }
    }

    /// The first time only: what `find` picks, kept for [`Successor::model`] when found.
    pub fn seek(&self, find: impl FnOnce() -> Result<String, String>) -> Option<Result<String, String>> {
        if self.sought.swap(true, Ordering::Relaxed) {
            return None;
        }
        let found = find();
        if let Ok(next) = &found {
            *self.chosen.lock().unwrap_or_else(|e| e.into_inner()) = Some(next.clone());
        }
        Some(found)
    }
}

/// Largest model list read (OpenRouter's, every vendor's models with their descriptions
/// and prices, is over 1 MB; read once, when a default model is gone).
const MAX_LIST: u64 = 4 * 1024 * 1024;

/// Whether `err` says the requested model does not exist (a retired one included):
/// Anthropic's 404 `not_found_error` ("model: NAME"), OpenAI's 404 `model_not_found`
/// ("The model `NAME` does not exist or you do not have access to it."), Ollama's
/// ("model \"NAME\" not found, try pulling it first"), OpenRouter's 400 ("NAME is not a
/// valid model ID") and 404 ("No endpoints found for NAME.").
pub fn model_gone(err: &LlmError) -> bool {
    let detail = err.detail.to_ascii_lowercase();
    err.kind == ErrorKind::Request
        && ((detail.starts_with("http 404")
            && (detail.contains("model") || detail.contains("no endpoints found")))
            || (detail.starts_with("http 400") && detail.contains("is not a valid model id")))
}

/// Whether an API's refusal (`status`, its body `text`) says the requested model does not
/// exist: OpenAI's 404 `model_not_found` for an image or speech-to-text model.
pub fn refused_as_gone(status: u16, text: &str) -> bool {
    status == 404 && text.to_ascii_lowercase().contains("model")
}

/// The models the server lists for `p`'s key (`GET /models`, Anthropic's `/v1/models`),
/// in its order, with their `created` time where it says.
pub fn models(agent: &ureq::Agent, p: &Provider) -> Result<Vec<(String, i64)>, String> {
    let list = provider_list(agent, p)?;
    let owned = listed(&list, "")
        .into_iter()
        .map(|(id, created)| (id.to_string(), created));
    Ok(owned.collect())
}

/// The model to use instead of `p.model`, asked of the server with `agent`.
pub fn find(agent: &ureq::Agent, p: &Provider) -> Result<String, String> {
    let list = provider_list(agent, p)?;
    choose(p.kind, p.at_openai(), &p.model, &list)
        .ok_or_else(|| "the server lists no model to use instead".to_string())
}

/// `p`'s server's model list, asked with `p`'s key.
fn provider_list(agent: &ureq::Agent, p: &Provider) -> Result<Value, String> {
    let key = p.key_header();
    let key = key.as_ref().map(|(name, value)| (*name, value.as_str()));
    match p.kind {
        ProviderKind::OpenAi => list(
            agent,
            &format!("{}/models", p.base_url),
            None,
            &Vec::from_iter(key),
        ),
        ProviderKind::Anthropic => {
            let headers: Vec<(&str, &str)> = key
                .into_iter()
                .chain([("anthropic-version", "2023-06-01")])
                .collect();
            list(
                agent,
                &format!("{}/v1/models?limit=100", p.base_url),
                None,
                &headers,
            )
        }
    }
}

/// The image model to use instead of `current` at the OpenAI-compatible `base`: the
/// newest GPT image model (not a small one), else the newest DALL-E.
pub fn find_image_model(agent: &ureq::Agent, base: &str, key: &str, current: &str) -> Result<String, String> {
    let list = list(agent, &format!("{base}/models"), Some(key), &[])?;
    choose_image_model(&list, current).ok_or_else(|| "the server lists no other image model".to_string())
}

/// The pick from an image server's model list, other than `current`.
fn choose_image_model(list: &Value, current: &str) -> Option<String> {
    let models = listed(list, current);
    newest(&models, &|id| id.starts_with("gpt-image") && !id.contains("mini"))
        .or_else(|| newest(&models, &|id| id.starts_with("dall-e")))
}

/// The speech-to-text model to use instead of `current` at the OpenAI-compatible `base`
/// (`key` where it needs one).
pub fn find_transcribe_model(
    agent: &ureq::Agent,
    base: &str,
    key: Option<&str>,
    current: &str,
) -> Result<String, String> {
    let list = list(agent, &format!("{base}/models"), key, &[])?;
    choose_transcribe_model(&list, current)
        .ok_or_else(|| "the server lists no other speech-to-text model".to_string())
}

/// The pick from a model list for speech to text, other than `current`: the newest
/// `*-transcribe` model of `current`'s size (a `mini` for a `mini`), else of any size,
/// else the newest Whisper (OpenAI's `whisper-1`, a local server's `faster-whisper-*`).
/// Never a diarizing model: it answers in another shape and needs more parameters; never
/// a chat model a local server also lists.
fn choose_transcribe_model(list: &Value, current: &str) -> Option<String> {
    let models = listed(list, current);
    let mini = current.contains("mini");
    let transcribes = |id: &str| id.contains("transcribe") && !id.contains("diarize");
    newest(&models, &|id| transcribes(id) && id.contains("mini") == mini)
        .or_else(|| newest(&models, &transcribes))
        .or_else(|| newest(&models, &|id| id.to_ascii_lowercase().contains("whisper")))
}

/// The text-to-speech model to use instead of `current` at the OpenAI-compatible `base`
/// (`key` where it needs one).
pub fn find_speech_model(
    agent: &ureq::Agent,
    base: &str,
    key: Option<&str>,
    current: &str,
) -> Result<String, String> {
    let list = list(agent, &format!("{base}/models"), key, &[])?;
    choose_speech_model(&list, current).ok_or_else(|| "the server lists no other speech model".to_string())
}

/// The pick from a model list for text to speech, other than `current`: the newest `*-tts`
/// model of `current`'s size (a `mini` for a `mini`), else of any size (a local server's
/// `kokoro`-style names are not guessed at). Never a realtime or audio chat model: they
/// speak through another API.
fn choose_speech_model(list: &Value, current: &str) -> Option<String> {
    let models = listed(list, current);
    let mini = current.contains("mini");
    let speaks = |id: &str| id.contains("tts") && !id.contains("realtime") && !id.contains("audio");
    newest(&models, &|id| speaks(id) && id.contains("mini") == mini).or_else(|| newest(&models, &speaks))
}

/// `GET url` with the key as a bearer token (`bearer`) and `headers`: the model list.
fn list(
    agent: &ureq::Agent,
    url: &str,
    bearer: Option<&str>,
    headers: &[(&str, &str)],
) -> Result<Value, String> {
    let mut req = agent.get(url);
    if let Some(key) = bearer {
        req = req.header("authorization", format!("Bearer {key}"));
    }
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let resp = req.call().map_err(|e| format!("listing the models: {e}"))?;
    let status = resp.status().as_u16();
    if status != 200 {
        return Err(format!("listing the models: HTTP {status}"));
    }
    crate::tools::json_answer(resp, MAX_LIST, "the model list", "the model list's server")
}

/// The ids of a model list (`{"data": [{"id", "created"?}]}`) with their `created`,
/// other than `current`, in the server's order.
fn listed<'a>(list: &'a Value, current: &str) -> Vec<(&'a str, i64)> {
    let Some(data) = list["data"].as_array() else {
        return Vec::new();
    };
    data.iter()
        .filter_map(|m| Some((m["id"].as_str()?, m["created"].as_i64().unwrap_or(0))))
        .filter(|(id, _)| !id.is_empty() && *id != current)
        .collect()
}

/// The newest (by `created`; among equals, or none given, the first listed) of `models`
/// that is `eligible`.
fn newest(models: &[(&str, i64)], eligible: &dyn Fn(&str) -> bool) -> Option<String> {
    models
        .iter()
        .enumerate()
        .filter(|(_, (id, _))| eligible(id))
        .min_by_key(|(i, (_, created))| (std::cmp::Reverse(*created), *i))
        .map(|(_, (id, _))| id.to_string())
}

/// The pick from a model list (`{"data": [{"id", ...}]}`), other than `current`.
/// Anthropic lists newest first: the first of `current`'s family (sonnet, opus, haiku).
/// OpenAI's own API lists everything it serves: the newest (by `created`) general chat
/// model, no snapshot, no audio, image, search or small variant. A router that names
/// models by vendor (OpenRouter: `openai/gpt-4o`, among hundreds of every vendor) gets
/// the vendor's pick by the same rules, among that vendor's models only. Another server
/// lists the models it has (Ollama: those pulled): the newest, else the first.
pub fn choose(kind: ProviderKind, openai_itself: bool, current: &str, list: &Value) -> Option<String> {
    let models = listed(list, current);
    // Anthropic's own names have no `/`: a vendor's name there is a router's (OpenRouter's
    // Anthropic-compatible API).
    if let (false, Some((vendor, name))) = (openai_itself, current.split_once('/')) {
        let own: Vec<(&str, i64)> = models
            .iter()
            .filter_map(|&(id, created)| Some((id.strip_prefix(vendor)?.strip_prefix('/')?, created)))
            .collect();
        let pick = match vendor {
            "openai" => newest(&own, &general_chat_model),
            "anthropic" => claude_of_family(&own, name),
            _ => newest(&own, &|_| true),
        };
        return pick.map(|id| format!("{vendor}/{id}"));
    }
    match kind {
        ProviderKind::Anthropic => claude_of_family(&models, current),
        ProviderKind::OpenAi if openai_itself => newest(&models, &general_chat_model),
        ProviderKind::OpenAi => newest(&models, &|_| true),
    }
}

/// The newest Claude of `current`'s family (sonnet, opus, haiku), else the newest.
fn claude_of_family(models: &[(&str, i64)], current: &str) -> Option<String> {
    let family = ["sonnet", "opus", "haiku"]
        .into_iter()
        .find(|f| current.contains(f));
    newest(models, &|id| family.is_none_or(|f| id.contains(f))).or_else(|| newest(models, &|_| true))
}

/// Whether an OpenAI model id is one a chat can talk to: `gpt-`, `o1`..`o9`, `chatgpt-`,
/// neither a dated snapshot nor a model of another kind.
pub fn openai_chat_model(id: &str) -> bool {
    const OTHER: [&str; 9] = [
        "audio",
        "realtime",
        "transcribe",
        "tts",
        "image",
        "embedding",
        "search",
        "moderation",
        "instruct",
    ];
    let family = id.starts_with("gpt-")
        || id.starts_with("chatgpt-")
        || id.len() > 1 && id.starts_with('o') && id.as_bytes()[1].is_ascii_digit();
    family && !dated(id) && !OTHER.iter().any(|o| id.contains(o))
}

/// Whether an OpenAI model id names a general chat model: a `gpt-...` chat model that is
/// not a size or a variant of one.
fn general_chat_model(id: &str) -> bool {
    const VARIANT: [&str; 6] = ["codex", "mini", "nano", "preview", "chat", "pro"];
    id.starts_with("gpt-") && openai_chat_model(id) && !VARIANT.iter().any(|s| id.contains(s))
}

/// Whether a model id names a dated snapshot (`gpt-5.5-2026-08-01`).
pub fn dated(id: &str) -> bool {
    id.len() > 11 && {
        let tail = &id.as_bytes()[id.len() - 11..];
        tail[0] == b'-' && tail[5] == b'-' && tail[8] == b'-' && tail[1..5].iter().all(u8::is_ascii_digit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn a_retired_model_is_told_from_other_refusals() {
        let gone = |kind, detail: &str| {
            model_gone(&LlmError {
                kind,
                detail: detail.into(),
                retry_after: None,
            })
        };
        for detail in [
            "HTTP 404: model: claude-sonnet-4-20250514",
            "HTTP 404: The model `gpt-4o` does not exist or you do not have access to it.",
            "HTTP 400: openai/gpt-4o is not a valid model ID",
            "HTTP 404: No endpoints found for openai/gpt-4o.",
        ] {
            assert!(gone(ErrorKind::Request, detail), "{detail}");
        }
        for detail in [
            "HTTP 400: max_tokens: model limit",
            "HTTP 404: Not Found",
            "HTTP 400: Provider returned error (Anthropic: messages.1: not a valid model input)",
        ] {
            assert!(!gone(ErrorKind::Request, detail), "{detail}");
        }
        assert!(!gone(ErrorKind::Auth, "HTTP 404: model"));
    }

    #[test]
    fn claude_gets_the_newest_of_its_family() {
        // Anthropic's list, newest first.
        let list = json!({"data": [
            {"type": "model", "id": "claude-opus-5", "created_at": "2026-11-01T00:00:00Z"},
            {"type": "model", "id": "claude-sonnet-5", "created_at": "2026-10-01T00:00:00Z"},
            {"type": "model", "id": "claude-sonnet-4-6", "created_at": "2026-02-17T00:00:00Z"}
        ], "has_more": false});
        let pick = |current| choose(ProviderKind::Anthropic, false, current, &list);
        assert_eq!(
            pick("claude-sonnet-4-20250514").as_deref(),
            Some("claude-sonnet-5")
        );
        assert_eq!(pick("claude-opus-4-1").as_deref(), Some("claude-opus-5"));
        assert_eq!(
            pick("claude-haiku-3").as_deref(),
            Some("claude-opus-5"),
            "none of its family"
        );
        assert_eq!(
            pick("claude-sonnet-5").as_deref(),
            Some("claude-sonnet-4-6"),
            "never itself"
        );
    }

    #[test]
    fn a_router_gets_the_newest_of_the_same_vendor_by_its_rules() {
        // OpenRouter's list: every vendor's models, `created` in seconds.
        let list = json!({"data": [
            {"id": "x-ai/grok-9", "created": 1_800_000_000},
            {"id": "openai/gpt-6-mini", "created": 1_790_000_001},
            {"id": "openai/gpt-6", "created": 1_780_000_000},
            {"id": "openai/gpt-realtime-2", "created": 1_790_000_002},
            {"id": "openai/gpt-4o", "created": 1_715_000_000},
            {"id": "anthropic/claude-opus-5", "created": 1_795_000_000},
            {"id": "anthropic/claude-sonnet-5", "created": 1_790_000_000},
            {"id": "openai-like/gpt-7", "created": 1_800_000_000}
        ]});
        let pick = |current| choose(ProviderKind::OpenAi, false, current, &list);
        assert_eq!(pick("openai/gpt-4o").as_deref(), Some("openai/gpt-6"));
        assert_eq!(
            pick("anthropic/claude-sonnet-4.6").as_deref(),
            Some("anthropic/claude-sonnet-5")
        );
        // The same through its Anthropic-compatible API.
        for (current, next) in [
            ("anthropic/claude-sonnet-4.6", "anthropic/claude-sonnet-5"),
            ("openai/gpt-4o", "openai/gpt-6"),
        ] {
            assert_eq!(
                choose(ProviderKind::Anthropic, false, current, &list).as_deref(),
                Some(next)
            );
        }
        assert_eq!(
            pick("mistralai/mistral-large").as_deref(),
            None,
            "no model of that vendor"
        );
        assert_eq!(
            pick("gpt-4o").as_deref(),
            Some("x-ai/grok-9"),
            "a server without vendors: its newest"
        );
    }

    #[test]
    fn openai_gets_its_newest_general_chat_model() {
        let list = json!({"object": "list", "data": [
            {"id": "gpt-6", "object": "model", "created": 1_780_000_000, "owned_by": "system"},
            {"id": "gpt-6-2026-09-01", "object": "model", "created": 1_790_000_000},
            {"id": "gpt-6-mini", "object": "model", "created": 1_790_000_001},
            {"id": "gpt-realtime-2", "object": "model", "created": 1_790_000_002},
            {"id": "gpt-image-2", "object": "model", "created": 1_790_000_003},
            {"id": "text-embedding-3-large", "object": "model", "created": 1_790_000_004},
            {"id": "o5", "object": "model", "created": 1_790_000_005},
            {"id": "gpt-5.5", "object": "model", "created": 1_770_000_000},
            {"id": "gpt-4o", "object": "model", "created": 1_715_000_000}
        ]});
        assert_eq!(
            choose(ProviderKind::OpenAi, true, "gpt-4o", &list).as_deref(),
            Some("gpt-6")
        );
        // Another server lists what it has: the newest of those.
        assert_eq!(
            choose(ProviderKind::OpenAi, false, "gpt-4o", &list).as_deref(),
            Some("o5")
        );
        let ollama = json!({"object": "list", "data": [
            {"id": "llama3.2:latest", "object": "model", "created": 0, "owned_by": "library"},
            {"id": "qwen3:8b", "object": "model", "created": 0, "owned_by": "library"}
        ]});
        assert_eq!(
            choose(ProviderKind::OpenAi, false, "gpt-4o", &ollama).as_deref(),
            Some("llama3.2:latest"),
            "the server's first"
        );
        assert_eq!(choose(ProviderKind::OpenAi, true, "gpt-4o", &ollama), None);
        assert_eq!(
            choose(ProviderKind::OpenAi, false, "gpt-4o", &json!({"data": []})),
            None
        );
        assert_eq!(
            choose(ProviderKind::OpenAi, false, "gpt-4o", &json!("nonsense")),
            None
        );
    }

    #[test]
    fn text_to_speech_gets_the_newest_speaker_of_its_size() {
        let list = json!({"object": "list", "data": [
            {"id": "tts-1", "created": 1_681_940_951},
            {"id": "tts-1-hd", "created": 1_699_046_015},
            {"id": "gpt-4o-mini-tts-2025-12-15", "created": 1_765_000_000},
            {"id": "gpt-5-tts", "created": 1_790_000_001},
            {"id": "gpt-5-mini-tts", "created": 1_790_000_000},
            {"id": "gpt-realtime-mini", "created": 1_790_000_002},
            {"id": "gpt-audio-mini-tts-preview", "created": 1_790_000_003},
            {"id": "gpt-6", "created": 1_790_000_004}
        ]});
        assert_eq!(
            choose_speech_model(&list, "gpt-4o-mini-tts").as_deref(),
            Some("gpt-5-mini-tts")
        );
        assert_eq!(
            choose_speech_model(&list, "gpt-4o-tts").as_deref(),
            Some("gpt-5-tts")
        );
        let old = json!({"data": [{"id": "tts-1"}, {"id": "whisper-1"}]});
        assert_eq!(
            choose_speech_model(&old, "gpt-4o-mini-tts").as_deref(),
            Some("tts-1")
        );
        let none = json!({"data": [{"id": "llama3.2:latest"}, {"id": "gpt-4o-mini-tts"}]});
        assert_eq!(choose_speech_model(&none, "gpt-4o-mini-tts"), None);
    }

    #[test]
    fn speech_to_text_gets_the_newest_transcriber_of_its_size_and_never_a_chat_model() {
        let list = json!({"object": "list", "data": [
            {"id": "whisper-1", "created": 1_677_532_384},
            {"id": "gpt-4o-transcribe", "created": 1_742_068_463},
            {"id": "gpt-5-mini-transcribe", "created": 1_790_000_000},
            {"id": "gpt-5-transcribe", "created": 1_790_000_001},
            {"id": "gpt-5-transcribe-diarize", "created": 1_790_000_002},
            {"id": "gpt-6", "created": 1_790_000_003}
        ]});
        let pick = |current| choose_transcribe_model(&list, current);
        assert_eq!(
            pick("gpt-4o-mini-transcribe").as_deref(),
            Some("gpt-5-mini-transcribe")
        );
        assert_eq!(pick("gpt-4o-transcribe").as_deref(), Some("gpt-5-transcribe"));
        let whisper_only = json!({"data": [
            {"id": "llama3.2:latest", "created": 0},
            {"id": "Systran/faster-whisper-small", "created": 0}
        ]});
        assert_eq!(
            choose_transcribe_model(&whisper_only, "gpt-4o-mini-transcribe").as_deref(),
            Some("Systran/faster-whisper-small")
        );
        let chat_only = json!({"data": [{"id": "llama3.2:latest", "created": 0}]});
        assert_eq!(
            choose_transcribe_model(&chat_only, "gpt-4o-mini-transcribe"),
            None
        );
        assert_eq!(
            choose_image_model(&json!({"data": [{"id": "whisper-1"}]}), "gpt-image-1"),
            None
        );
    }

    proptest! {
        #[test]
        fn any_list_gives_a_listed_model_or_none(ids in proptest::collection::vec("\\PC{0,20}", 0..8), created in proptest::collection::vec(any::<i64>(), 8)) {
            let data: Vec<Value> = ids.iter().zip(&created).map(|(id, c)| json!({"id": id, "created": c})).collect();
            let list = json!({"data": data});
            for (kind, own) in [(ProviderKind::Anthropic, false), (ProviderKind::OpenAi, true), (ProviderKind::OpenAi, false)] {
                if let Some(pick) = choose(kind, own, "gpt-4o", &list) {
                    prop_assert!(ids.contains(&pick) && pick != "gpt-4o");
                }
            }
            if let Some(pick) = choose_transcribe_model(&list, "gpt-4o-mini-transcribe") {
                prop_assert!(ids.contains(&pick) && pick != "gpt-4o-mini-transcribe");
                prop_assert!(pick.contains("transcribe") || pick.to_ascii_lowercase().contains("whisper"));
            }
        }
    }
}
