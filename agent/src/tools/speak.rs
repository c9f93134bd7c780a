//! `respond_with_voice`: words spoken by OpenAI's text-to-speech API (`POST
//! {base}/audio/speech`), asked for as Ogg Opus, the format Telegram plays as a voice
//! message, and attached to the reply after its text, images and files. The recording is
//! kept in the workspace blob store, as a generated image is. `OPENAI_AUDIO_BASE_URL`
//! points it (and speech to text) at another server that speaks the API, such as a local
//! one, which may need no key.

use std::fmt;
use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};

use super::retry::{Post, Refused};
use super::{arg_opt, arg_str, Abandoned};
use crate::blobs;

/// The model unless agent.json names another (`tools.respond_with_voice.model`).
pub const DEFAULT_MODEL: &str = "gpt-4o-mini-tts";
/// The voice unless agent.json names another (`tools.respond_with_voice.voice`).
pub const DEFAULT_VOICE: &str = "coral";
/// Longest text the API speaks, in characters.
const MAX_INPUT: usize = 4096;
/// Largest recording kept: 4,096 characters are about five minutes, 1 MB of Opus.
const MAX_AUDIO: u64 = 10 * 1024 * 1024;
/// Five minutes of speech take the API a while to make.
const TIMEOUT: Duration = Duration::from_secs(120);

/// A text-to-speech client. `Debug` never prints the key.
#[derive(Clone)]
pub struct Speaker {
    key: Option<String>,
    base: String,
    model: String,
    voice: String,
    /// `model` is the default, not agent.json's: when the API no longer has it, the
    /// newest speech model it lists is used instead (`successor`), sought once.
    default_model: bool,
    successor: crate::successor::Successor,
}

impl fmt::Debug for Speaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Speaker")
            .field("base", &self.base)
            .field("model", &self.model)
            .field("voice", &self.voice)
            .finish()
    }
}

impl Speaker {
    /// A client with the key in variable `key_env` (or none, for a server named by
    /// `OPENAI_AUDIO_BASE_URL`), or `None` when there is neither.
    pub fn from_env(key_env: Option<&str>, model: Option<&str>, voice: Option<&str>) -> Option<Speaker> {
        let keyed = key_env.and_then(|var| {
            super::api_from_env(var, "OPENAI_AUDIO_BASE_URL", crate::transcribe::DEFAULT_BASE)
        });
        let (key, base) = match keyed {
            Some((key, base)) => (Some(key), base),
            None => {
                let base = std::env::var("OPENAI_AUDIO_BASE_URL").ok()?;
                let base = base.trim().trim_end_matches('/').to_string();
                (!base.is_empty()).then_some((None, base))?
            }
        };
        Some(Speaker {
            key,
            base,
            model: model.unwrap_or(DEFAULT_MODEL).to_string(),
            voice: voice.unwrap_or(DEFAULT_VOICE).to_string(),
            default_model: model.is_none(),
            successor: Default::default(),
        })
    }

    /// The request body for `model`: `instructions` (how to speak) only for the models
    /// that take them.
    fn body(&self, model: &str, text: &str, instructions: Option<&str>) -> Value {
        let mut body = json!({"model": model, "input": text, "voice": self.voice, "response_format": "opus"});
        if let Some(how) = instructions.filter(|_| !model.starts_with("tts-1")) {
            body["instructions"] = how.into();
        }
        body
    }

    /// When the default model is gone (`refusal` is the API's 404), the one to use
    /// instead, found once.
    fn replace_retired_model(&self, agent: &ureq::Agent, status: u16, refusal: &str) -> Option<String> {
        self.successor.replace(
            (self.default_model, &self.model),
            (status, refusal),
            "speech model",
            |current| crate::successor::find_speech_model(agent, &self.base, self.key.as_deref(), current),
        )
    }

    /// `respond_with_voice {text, instructions?}`: the recording stored in the workspace of
    /// `root`, to attach, and the text for the model. A refusal worth retrying is retried
    /// as OpenAI's SDKs do, unless the call was `abandoned` meanwhile.
    pub fn speak(
        &self,
        root: &Path,
        args: &Value,
        abandoned: &Abandoned,
    ) -> Result<(tether::frame::FileRef, String), String> {
        let text = arg_str(args, "text")?.trim();
        if text.is_empty() {
            return Err("text is required".into());
        }
        let chars = text.chars().count();
        if chars > MAX_INPUT {
            return Err(format!(
                "text is {chars} characters; at most {MAX_INPUT} can be spoken: say less, or send the rest as text"
            ));
        }
        let instructions = arg_opt(args, "instructions")?;
        let model = self.successor.model(&self.model);
        let body = self.body(&model, text, instructions).to_string();
        let url = format!("{}/audio/speech", self.base);
        let agent = super::api_agent(&url, TIMEOUT);
        let _armed = abandoned.arm(&agent)?;
        let post = Post {
            agent: &agent,
            url: &url,
            key: self.key.as_deref(),
            tool: "respond_with_voice",
            failed: "speech failed",
        };
        let resp = post.send(body, abandoned, |status, answer| {
            let refusal = self.scrub(status_error(status, answer));
            match self.replace_retired_model(&agent, status, &refusal) {
                Some(next) => Refused::Instead(self.body(&next, text, instructions).to_string()),
                None => Refused::Words(refusal),
            }
        })?;
        let bytes = resp
            .into_body()
            .into_with_config()
            .limit(MAX_AUDIO)
            .read_to_vec()
            .map_err(|e| format!("reading the recording failed: {e}"))?;
        let ext =
            audio_extension(&bytes).ok_or("the speech API sent something that is not Ogg or MP3 audio")?;
        let blob =
            blobs::store_as(root, ext, &bytes).map_err(|e| format!("cannot store the recording: {e}"))?;
        let voice = tether::frame::FileRef {
            name: format!("voice.{ext}"),
            blob: blob.clone(),
            size: Some(bytes.len() as u64),
        };
        let note = json!({
            "ok": true,
            "path": format!(".aegis/blobs/{blob}"),
            "size": bytes.len(),
            "attached": "the voice message is sent after your reply's text; do not repeat it all in writing",
        });
        Ok((voice, note.to_string()))
    }

    /// `text` without the key, should a server ever echo it.
    fn scrub(&self, text: String) -> String {
        match &self.key {
            Some(key) => text.replace(key.as_str(), "[the key]"),
            None => text,
        }
    }
}

/// The extension of a recording Telegram plays as a voice message: Ogg (Opus), or MP3
/// from a server that ignores the format asked for; `None` for anything else.
fn audio_extension(bytes: &[u8]) -> Option<&'static str> {
    if bytes.starts_with(b"OggS") {
        Some("ogg")
    } else if bytes.starts_with(b"ID3")
        || bytes.first() == Some(&0xff) && bytes.get(1).is_some_and(|b| b & 0xe0 == 0xe0)
    {
        Some("mp3")
    } else {
        None
    }
}

/// A refusal, in OpenAI's words (`error.message`) when it gave them.
fn status_error(status: u16, body: &str) -> String {
    super::retry::refusal("the speech API", "speech can be made", status, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn speaker(model: &str) -> Speaker {
        Speaker {
            key: Some("sk-secret".into()),
            base: "http://x".into(),
            model: model.into(),
            voice: DEFAULT_VOICE.into(),
            default_model: false,
            successor: Default::default(),
        }
    }

    #[test]
    fn instructions_go_only_to_models_that_take_them() {
        let b = speaker(DEFAULT_MODEL).body(DEFAULT_MODEL, "hi", Some("cheerful"));
        assert_eq!(
            b,
            json!({"model": "gpt-4o-mini-tts", "input": "hi", "voice": "coral", "response_format": "opus", "instructions": "cheerful"})
        );
        assert!(speaker("tts-1-hd")
            .body("tts-1-hd", "hi", Some("cheerful"))
            .get("instructions")
            .is_none());
        assert!(speaker(DEFAULT_MODEL)
            .body(DEFAULT_MODEL, "hi", None)
            .get("instructions")
            .is_none());
    }

    #[test]
    fn only_audio_telegram_plays_is_kept() {
        assert_eq!(audio_extension(b"OggS\0\x02rest"), Some("ogg"));
        assert_eq!(audio_extension(b"ID3\x04rest"), Some("mp3"));
        assert_eq!(audio_extension(&[0xff, 0xfb, 0x90, 0x64]), Some("mp3"));
        assert_eq!(audio_extension(b"RIFF....WAVE"), None);
        assert_eq!(audio_extension(br#"{"error": "x"}"#), None);
        assert_eq!(audio_extension(b""), None);
    }

    #[test]
    fn refusals_keep_openais_words_and_never_the_key() {
        let body = r#"{"error":{"message":"Invalid voice 'robot'. Expected one of: alloy, ash, ballad, coral.","type":"invalid_request_error","param":"voice","code":null}}"#;
        assert_eq!(
            status_error(400, body),
            "the speech API refused the request (HTTP 400: Invalid voice 'robot'. Expected one of: alloy, ash, ballad, coral.)"
        );
        let s = speaker(DEFAULT_MODEL);
        let echoed = s.scrub(status_error(
            401,
            r#"{"error":{"message":"Incorrect API key provided: sk-secret."}}"#,
        ));
        assert!(
            !echoed.contains("sk-secret") && echoed.contains("[the key]"),
            "{echoed}"
        );
        assert!(format!("{s:?}").find("sk-secret").is_none());
    }

    #[test]
    fn text_past_what_can_be_spoken_is_refused_before_any_call() {
        let s = Speaker {
            base: "http://127.0.0.1:9".into(), // nothing listens: a call would fail otherwise
            ..speaker(DEFAULT_MODEL)
        };
        let long = "é".repeat(MAX_INPUT + 1);
        let abandoned = Abandoned::never();
        let e = s
            .speak(Path::new("/nonexistent"), &json!({"text": long}), &abandoned)
            .unwrap_err();
        assert!(e.contains("4097 characters; at most 4096"), "{e}");
        let e = s
            .speak(Path::new("/nonexistent"), &json!({"text": "  "}), &abandoned)
            .unwrap_err();
        assert_eq!(e, "text is required");
    }
}
