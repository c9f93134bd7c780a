//! `respond_with_voice`: words spoken by OpenAI's text-to-speech API (`POST
//! {base}/audio/speech`), asked for as Ogg Opus, the format Telegram plays as a voice
//! message, and attached to the reply after its text, images and files. The recording is
//! kept in the workspace blob store, as a generated image is. `OPENAI_AUDIO_BASE_URL`
//! points it (and speech to text) at another server that speaks the API, such as a local
//! one, which may need no key.
//!
//! [ours] A model that offers it (not `tts-1`) is asked for its recording as events
//! (`stream_format: "sse"`: `speech.audio.delta` with the bytes in base64, then
//! `speech.audio.done` with the tokens it was billed), which is how OpenAI says what a
//! recording cost: the usage record and the daily limits count it. A server that refuses
//! the setting is asked without it, from then on; one that ignores it sends the bytes.

use std::fmt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use super::retry::{Body, Post, Refused};
use super::{arg_opt, arg_str, Abandoned};
use crate::blobs;
use crate::usage::{Ledger, Tokens};

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
    /// The server refused `stream_format`: recordings come as bytes alone.
    plain: Arc<AtomicBool>,
    /// Where each recording's usage is added up.
    ledger: Option<Arc<Ledger>>,
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
            plain: Arc::default(),
            ledger: None,
        })
    }

    /// The same client, adding each recording's usage to `ledger`.
    pub fn with_ledger(self, ledger: Arc<Ledger>) -> Speaker {
        Speaker {
            ledger: Some(ledger),
            ..self
        }
    }

    /// The request body for `model`: `instructions` (how to speak) and the recording as
    /// events only for the models that take them.
    fn body(&self, model: &str, text: &str, instructions: Option<&str>) -> Value {
        let mut body = json!({"model": model, "input": text, "voice": self.voice, "response_format": "opus"});
        let newer = !model.starts_with("tts-1");
        if let Some(how) = instructions.filter(|_| newer) {
            body["instructions"] = how.into();
        }
        if newer && !self.plain.load(Ordering::Relaxed) {
            body["stream_format"] = "sse".into();
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
    ) -> Result<(tether::frame::FileRef, String, Tokens), String> {
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
        let mut model = model;
        let resp = post.send(Body::Json(body), abandoned, |status, answer| {
            if status == 400 && answer.contains("stream_format") && !self.plain.swap(true, Ordering::Relaxed)
            {
                log::info!("the speech API refuses stream_format; recordings come without their usage");
                return Refused::Instead(Body::Json(self.body(&model, text, instructions).to_string()));
            }
            let refusal = self.scrub(status_error(status, answer));
            match self.replace_retired_model(&agent, status, &refusal) {
                Some(next) => {
                    model = next;
                    Refused::Instead(Body::Json(self.body(&model, text, instructions).to_string()))
                }
                None => Refused::Words(refusal),
            }
        })?;
        let events = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|t| t.starts_with("text/event-stream"));
        // Base64 takes a third more, and each event its JSON around.
        let raw = resp
            .into_body()
            .into_with_config()
            .limit(if events { MAX_AUDIO * 3 / 2 } else { MAX_AUDIO })
            .read_to_vec()
            .map_err(|e| format!("reading the recording failed: {e}"))?;
        let (bytes, spent) = match events {
            true => recording_of_events(&raw)?,
            false => (raw, Tokens::default()),
        };
        if let Some(ledger) = self.ledger.as_deref().filter(|_| !spent.is_empty()) {
            ledger.record(&model, &spent);
        }
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
        Ok((voice, note.to_string(), spent))
    }

    /// `text` without the key, should a server ever echo it.
    fn scrub(&self, text: String) -> String {
        match &self.key {
            Some(key) => text.replace(key.as_str(), "[the key]"),
            None => text,
        }
    }
}

/// The recording a stream of `speech.audio.*` events carries, and the tokens its last
/// event says it was billed; an error event, or a stream that ends before
/// `speech.audio.done`, is no recording.
fn recording_of_events(raw: &[u8]) -> Result<(Vec<u8>, Tokens), String> {
    use base64::Engine;
    let mut parser = crate::sse::Parser::new();
    let mut events = Vec::new();
    parser
        .feed(raw, &mut events)
        .map_err(|e| format!("the speech API sent a bad stream: {e}"))?;
    let mut bytes = Vec::new();
    for e in events.iter().filter(|e| !e.data.trim().is_empty()) {
        let v: Value =
            serde_json::from_str(&e.data).map_err(|err| format!("the speech API sent a bad event: {err}"))?;
        match v["type"].as_str().unwrap_or_default() {
            "speech.audio.delta" => {
                let chunk = base64::engine::general_purpose::STANDARD
                    .decode(v["audio"].as_str().unwrap_or_default().trim())
                    .map_err(|err| format!("the speech API sent audio that is not base64: {err}"))?;
                if (bytes.len() + chunk.len()) as u64 > MAX_AUDIO {
                    return Err(format!("the recording is larger than {} MB", MAX_AUDIO >> 20));
                }
                bytes.extend_from_slice(&chunk);
            }
            "speech.audio.done" => {
                let spent = Tokens::from_api(&v["usage"]).unwrap_or_default();
                return Ok((bytes, spent));
            }
            "error" => {
                let words = v["error"]["message"]
                    .as_str()
                    .or(v["message"].as_str())
                    .unwrap_or("no reason given");
                return Err(format!("the speech API failed midway: {words}"));
            }
            _ => {}
        }
    }
    Err("the speech API's stream ended before the recording was done".into())
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
            plain: Arc::default(),
            ledger: None,
        }
    }

    #[test]
    fn instructions_and_events_go_only_to_models_that_take_them() {
        let s = speaker(DEFAULT_MODEL);
        let b = s.body(DEFAULT_MODEL, "hi", Some("cheerful"));
        assert_eq!(
            b,
            json!({"model": "gpt-4o-mini-tts", "input": "hi", "voice": "coral", "response_format": "opus",
                "instructions": "cheerful", "stream_format": "sse"})
        );
        s.plain.store(true, Ordering::Relaxed);
        assert!(
            s.body(DEFAULT_MODEL, "hi", None).get("stream_format").is_none(),
            "refused once"
        );
        let old = speaker("tts-1-hd").body("tts-1-hd", "hi", Some("cheerful"));
        assert!(
            old.get("instructions").is_none() && old.get("stream_format").is_none(),
            "{old}"
        );
        assert!(speaker(DEFAULT_MODEL)
            .body(DEFAULT_MODEL, "hi", None)
            .get("instructions")
            .is_none());
    }

    /// `speech.audio.*` events as OpenAI sends them, the audio in `pieces`.
    fn events(pieces: &[&[u8]], end: &str) -> Vec<u8> {
        use base64::Engine;
        let mut out = String::new();
        for p in pieces {
            let audio = base64::engine::general_purpose::STANDARD.encode(p);
            out.push_str(&format!(
                "data: {}\n\n",
                json!({"type": "speech.audio.delta", "audio": audio})
            ));
        }
        out.push_str(end);
        out.into_bytes()
    }

    #[test]
    fn a_recording_of_events_is_whole_with_its_usage_or_none() {
        let done = r#"data: {"type":"speech.audio.done","usage":{"input_tokens":14,"output_tokens":101,"total_tokens":115}}"#;
        let (bytes, spent) =
            recording_of_events(&events(&[b"OggS", b"\x00rest"], &format!("{done}\n\n"))).unwrap();
        assert_eq!(bytes, b"OggS\x00rest");
        assert_eq!((spent.input, spent.output), (14, 101));
        let cut = recording_of_events(&events(&[b"OggS"], "")).unwrap_err();
        assert!(cut.contains("ended before the recording was done"), "{cut}");
        let failed = r#"data: {"type":"error","error":{"message":"The server had an error"}}"#;
        let failed = recording_of_events(&events(&[b"OggS"], &format!("{failed}\n\n"))).unwrap_err();
        assert!(
            failed.ends_with("failed midway: The server had an error"),
            "{failed}"
        );
        let bad =
            recording_of_events(b"data: {\"type\":\"speech.audio.delta\",\"audio\":\"%%\"}\n\n").unwrap_err();
        assert!(bad.contains("not base64"), "{bad}");
        // Events of 700 KB (a line stays within the parser's 1 MB), 11 MB in all.
        let big = vec![0u8; 700 * 1024];
        let huge: Vec<&[u8]> = std::iter::repeat_n(big.as_slice(), 16).collect();
        let huge = recording_of_events(&events(&huge, &format!("{done}\n\n"))).unwrap_err();
        assert!(huge.contains("larger than 10 MB"), "{huge}");
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
