//! Voice messages: what is said in a recording that came with a user message, written down
//! by OpenAI's speech-to-text API (`POST {base}/audio/transcriptions`, multipart) or a
//! server that speaks it (a local Whisper server), so the model reads it as it reads text.
//! The recording itself is not kept; the transcript is the user's turn. A recording too
//! large for a tether line comes as a file of the workspace (the gateway saved it in the
//! inbox), read from there as any file tool reads one: inside the workspace only.
//!
//! Without a key (or with `voice.enabled` false) the message still reaches the model,
//! saying why it was not transcribed, so the model can tell the user.

use std::fmt;
use std::path::Path;
use std::time::Duration;

use base64::Engine;
use tether::cut::Cut;
use ureq::unversioned::multipart::{Form, Part};

use crate::tools::paths::Workspace;
use crate::tools::{api_from_env, json_answer, refusal, transport};
use crate::usage::Tokens;

/// OpenAI's API base; `OPENAI_AUDIO_BASE_URL` replaces it (a local Whisper server).
pub const DEFAULT_BASE: &str = "https://api.openai.com/v1";
/// The model unless agent.json names another (`voice.model`).
pub const DEFAULT_MODEL: &str = "gpt-4o-mini-transcribe";
/// A recording of several minutes takes seconds; a stalled server is given up on.
const TIMEOUT: Duration = Duration::from_secs(90);
/// Tries per recording: a rate limit or a server error is tried once more, 2 s later.
const ATTEMPTS: u32 = 2;
/// Longest transcript kept, in bytes (an hour's monologue is ~60 KB).
const MAX_TEXT: u64 = 256 * 1024;
/// Largest recording sent: OpenAI's speech-to-text takes files of at most 25 MB.
const MAX_RECORDING: u64 = 25 * 1024 * 1024;

/// How voice messages are handled, from agent.json `voice` and the environment.
#[derive(Debug, Clone, PartialEq)]
pub struct VoiceConfig {
    /// `voice.enabled`; false leaves recordings untranscribed.
    pub enabled: bool,
    /// The variable holding the key (`OPENAI_API_KEY` unless agent.json names another or
    /// the chat model's server is not OpenAI's).
    pub key_env: Option<String>,
    /// The speech-to-text model agent.json or `AEGIS_TRANSCRIBE_MODEL` names; `None`:
    /// [`DEFAULT_MODEL`], or its successor once OpenAI has shut it down.
    pub model: Option<String>,
}

/// A speech-to-text client. `Debug` never prints the key.
#[derive(Clone)]
pub struct Transcriber {
    key: Option<String>,
    base: String,
    model: String,
    /// `model` is the default, not one the user named: when the server no longer has it,
    /// the newest speech-to-text model it lists is used instead (`successor`), sought
    /// once per run.
    default_model: bool,
    successor: crate::successor::Successor,
    /// Where each transcript's usage is added up (the `gpt-4o` models count tokens).
    ledger: Option<std::sync::Arc<crate::usage::Ledger>>,
}

impl fmt::Debug for Transcriber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Transcriber")
            .field("base", &self.base)
            .field("model", &self.model())
            .finish()
    }
}

/// Voice messages as the agent handles them: transcribed, or why not.
#[derive(Debug, Clone)]
pub enum Voice {
    /// Through this client.
    On(Transcriber),
    /// Not at all; the reason goes into the message for the model.
    Off(String),
}

impl Voice {
    /// The same, adding each transcript's usage to `ledger`.
    pub fn with_ledger(self, ledger: std::sync::Arc<crate::usage::Ledger>) -> Voice {
        match self {
            Voice::On(t) => Voice::On(Transcriber {
                ledger: Some(ledger),
                ..t
            }),
            off => off,
        }
    }

    /// From the configuration and the environment: a key (or a base URL of a server that
    /// needs none) turns transcription on.
    pub fn from_config(c: &VoiceConfig) -> Voice {
        if !c.enabled {
            return Voice::Off("voice messages are turned off in agent.json".into());
        }
        let base_set = std::env::var("OPENAI_AUDIO_BASE_URL")
            .ok()
            .filter(|v| !v.trim().is_empty());
        let keyed = c
            .key_env
            .as_deref()
            .and_then(|var| api_from_env(var, "OPENAI_AUDIO_BASE_URL", DEFAULT_BASE));
        let client = |key, base| {
            Voice::On(Transcriber {
                key,
                base,
                model: c.model.clone().unwrap_or_else(|| DEFAULT_MODEL.to_string()),
                default_model: c.model.is_none(),
                successor: Default::default(),
                ledger: None,
            })
        };
        match (keyed, base_set) {
            (Some((key, base)), _) => client(Some(key), base),
            (None, Some(base)) => client(None, base.trim().trim_end_matches('/').to_string()),
            (None, None) => Voice::Off(match &c.key_env {
                Some(var) => format!("speech to text is not set up: the agent has no OpenAI key ({var})"),
                None => "speech to text is not set up: the chat model's server is not OpenAI's; \
                    agent.json voice.openai_api_key_env can name an OpenAI key"
                    .into(),
            }),
        }
    }

    /// The text of a user message with recordings: its own text (a caption, or the
    /// gateway's `[voice message, 12 s]`), then each transcript, or why there is none.
    /// A recording given by path is read from `workspace`. Firing `cut` closes the
    /// connection of a transcription in progress (the user stopped the reply).
    pub fn text_with(
        &self,
        workspace: &Path,
        text: &str,
        audio: &[tether::frame::Audio],
        cut: &Cut,
    ) -> (String, Tokens) {
        let mut out = text.to_string();
        let mut spent = Tokens::default();
        for a in audio {
            let line = match self {
                Voice::Off(why) => format!("[not transcribed: {why}]"),
                Voice::On(t) => {
                    let heard = recording(workspace, a).and_then(|bytes| t.transcribe(a, &bytes, cut));
                    if let Ok((_, tokens)) = &heard {
                        spent.add(tokens);
                    }
                    match heard.map(|(said, _)| said) {
                        Ok(said) if said.trim().is_empty() => "[transcript: nothing was said]".to_string(),
                        Ok(said) => format!("🎤 {}", said.trim()),
                        Err(e) => {
                            log::warn!("voice message not transcribed: {e}");
                            format!("[not transcribed: {e}]")
                        }
                    }
                }
            };
            out.push('\n');
            out.push_str(&line);
        }
        (out, spent)
    }
}

/// The bytes of `a`: inline, or the file of `workspace` it names (inside it only, a
/// regular file, at most [`MAX_RECORDING`]).
fn recording(workspace: &Path, a: &tether::frame::Audio) -> Result<Vec<u8>, String> {
    if let Some(given) = a.path.as_deref().filter(|_| a.data.trim().is_empty()) {
        let ws = Workspace::new(workspace).map_err(|e| format!("the workspace: {e}"))?;
        let path = ws.resolve(given).map_err(|e| format!("the recording: {e}"))?;
        let meta = std::fs::metadata(&path).map_err(|e| format!("the recording {given}: {e}"))?;
        if !meta.is_file() {
            return Err(format!("the recording {given} is not a file"));
        }
        if meta.len() > MAX_RECORDING {
            return Err(format!(
                "the recording is too long for speech to text ({} MB; at most {} MB)",
                meta.len() / (1024 * 1024),
                MAX_RECORDING / (1024 * 1024)
            ));
        }
        return crate::regular::read(&path, MAX_RECORDING).map_err(|e| format!("the recording {given}: {e}"));
    }
    if a.data.trim().is_empty() {
        return Err("the recording came without its bytes".into());
    }
    base64::engine::general_purpose::STANDARD
        .decode(a.data.trim())
        .map_err(|e| format!("the recording is not base64: {e}"))
}

impl Transcriber {
    /// The model asked for: the configured one, or its successor.
    fn model(&self) -> String {
        self.successor.model(&self.model)
    }

    /// When the default model is gone (the server's 404 `text` names a model), whether
    /// a successor was found, once per run: OpenAI shuts models down, and an agent left
    /// running would otherwise write down no voice message again.
    fn replace_retired_model(&self, agent: &ureq::Agent, status: u16, text: &str) -> bool {
        let found = self.successor.replace(
            (self.default_model, &self.model),
            (status, text),
            "speech-to-text model",
            |current| {
                crate::successor::find_transcribe_model(agent, &self.base, self.key.as_deref(), current)
            },
        );
        found.is_some()
    }

    /// What is said in `a`, whose bytes are `bytes`, unless `cut` fires first, and the
    /// tokens the service counted.
    fn transcribe(
        &self,
        a: &tether::frame::Audio,
        bytes: &[u8],
        cut: &Cut,
    ) -> Result<(String, Tokens), String> {
        let url = format!("{}/audio/transcriptions", self.base);
        let agent = crate::tools::api_agent(&url, TIMEOUT);
        let _armed = cut.arm(&agent).ok_or("cancelled")?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let model = self.model();
            let form = Form::new()
                .text("model", &model)
                .text("response_format", "json")
                .part(
                    "file",
                    Part::bytes(bytes)
                        .file_name(file_name(&a.media_type))
                        .mime_str(&a.media_type)
                        .map_err(|e| format!("bad media type {:?}: {e}", a.media_type))?,
                );
            let mut req = agent.post(&url);
            if let Some(key) = &self.key {
                req = req.header("authorization", &format!("Bearer {key}"));
            }
            let resp = req
                .send(form)
                .map_err(|e| format!("speech to text failed: {}", transport(&e)))?;
            let status = resp.status().as_u16();
            if status == 200 {
                let v = json_answer(resp, MAX_TEXT, "the transcript", "the speech-to-text API")?;
                let spent = crate::usage::record_answer(self.ledger.as_deref(), &model, &v);
                return v["text"]
                    .as_str()
                    .map(|said| (said.to_string(), spent))
                    .ok_or_else(|| "the speech-to-text API answered without a text".to_string());
            }
            let text = tether::http::error_text(resp);
            if self.replace_retired_model(&agent, status, &text) {
                attempt -= 1;
                continue;
            }
            let worth_again = status == 429 && !text.contains("insufficient_quota") || status >= 500;
            if worth_again && attempt < ATTEMPTS {
                log::warn!("speech to text: HTTP {status} (attempt {attempt}); trying again in 2 s");
                std::thread::sleep(Duration::from_secs(2));
                continue;
            }
            return Err(self.scrub(status_error(status, &text)));
        }
    }

    fn scrub(&self, text: String) -> String {
        match &self.key {
            Some(k) => text.replace(k.as_str(), "[the key]"),
            None => text,
        }
    }
}

/// A file name whose extension says the format: the API goes by it.
fn file_name(media_type: &str) -> &'static str {
    match media_type {
        "audio/ogg" | "audio/opus" => "voice.ogg",
        "audio/mpeg" | "audio/mp3" => "audio.mp3",
        "audio/mp4" | "audio/m4a" | "audio/x-m4a" | "audio/aac" => "audio.m4a",
        "audio/wav" | "audio/x-wav" | "audio/wave" => "audio.wav",
        "audio/flac" | "audio/x-flac" => "audio.flac",
        "audio/webm" => "audio.webm",
        "video/mp4" => "video.mp4",
        "video/webm" => "video.webm",
        _ => "audio.ogg",
    }
}

/// A refusal for the model, in the API's words where it gave them.
fn status_error(status: u16, body: &str) -> String {
    let detail = tether::http::error_words(body);
    let what = match status {
        401 | 403 => "the speech-to-text API rejected the key",
        429 if body.contains("insufficient_quota") => "the OpenAI account has no quota left",
        429 => "the speech-to-text API is rate limited",
        400 | 413 | 415 => "the speech-to-text API refused the recording",
        _ => "the speech-to-text API failed",
    };
    refusal(what, status, &detail)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(enabled: bool, key_env: Option<&str>) -> VoiceConfig {
        VoiceConfig {
            enabled,
            key_env: key_env.map(str::to_string),
            model: None,
        }
    }

    #[test]
    fn without_a_key_or_turned_off_the_model_is_told_why() {
        let audio = [tether::frame::Audio {
            media_type: "audio/ogg".into(),
            data: "T2dnUw==".into(),
            duration: Some(3),
            path: None,
        }];
        let ws = Path::new("/nonexistent");
        let off = Voice::from_config(&config(false, Some("PATH")));
        assert_eq!(
            off.text_with(ws, "[voice message, 3 s]", &audio, &Cut::new()).0,
            "[voice message, 3 s]\n[not transcribed: voice messages are turned off in agent.json]"
        );
        let none = Voice::from_config(&config(true, Some("AEGIS_TEST_NO_SUCH_KEY")));
        assert!(
            none.text_with(ws, "hi", &audio, &Cut::new())
                .0
                .ends_with("no OpenAI key (AEGIS_TEST_NO_SUCH_KEY)]"),
            "{none:?}"
        );
        assert_eq!(none.text_with(ws, "plain", &[], &Cut::new()).0, "plain");
    }

    #[test]
    fn a_recording_without_its_bytes_is_reported_and_the_message_kept() {
        let m: tether::frame::UserMessage =
            serde_json::from_str(r#"{"text": "[voice message]", "audio": [{"duration": 3}]}"#).unwrap();
        let on = Voice::On(Transcriber {
            key: None,
            base: "http://127.0.0.1:9/v1".into(),
            model: DEFAULT_MODEL.into(),
            default_model: true,
            successor: Default::default(),
            ledger: None,
        });
        let tmp = crate::testutil::TempDir::new("transcribe-paths");
        assert_eq!(
            on.text_with(tmp.path(), &m.text, &m.audio, &Cut::new()).0,
            "[voice message]\n[not transcribed: the recording came without its bytes]"
        );
        // A recording by path is read from the workspace only, and only a file.
        let by_path = |p: &str| {
            let a = tether::frame::Audio {
                path: Some(p.into()),
                ..Default::default()
            };
            on.text_with(tmp.path(), "[voice message]", &[a], &Cut::new()).0
        };
        assert!(
            by_path("../../etc/passwd").contains("is outside the workspace"),
            "{}",
            by_path("../../etc/passwd")
        );
        assert!(by_path("inbox/none.ogg").contains("[not transcribed: the recording inbox/none.ogg: "));
        std::fs::create_dir_all(tmp.path().join("inbox/dir.ogg")).unwrap();
        assert!(by_path("inbox/dir.ogg").ends_with("the recording inbox/dir.ogg is not a file]"));
    }

    #[test]
    fn refusals_say_what_went_wrong_and_formats_keep_their_extension() {
        let quota = r#"{"error":{"message":"You exceeded your current quota","type":"insufficient_quota","code":"insufficient_quota"}}"#;
        assert!(status_error(429, quota)
            .starts_with("the OpenAI account has no quota left (HTTP 429: You exceeded"));
        assert!(status_error(401, "{}").starts_with("the speech-to-text API rejected the key"));
        assert_eq!(file_name("audio/ogg"), "voice.ogg");
        assert_eq!(file_name("video/mp4"), "video.mp4");
        assert_eq!(file_name("audio/x-unknown"), "audio.ogg");
    }
}
