//! A stand-in for OpenAI's speech-to-text API (`POST /v1/audio/transcriptions`,
//! multipart/form-data: `file`, `model`, `response_format`): the bearer key check (401
//! `invalid_api_key`), the multipart checks OpenAI makes (400 for a missing `model` or
//! `file`, and for a file whose name has no supported extension: OpenAI goes by it), the
//! rate limit (429 `rate_limit_exceeded`) and a used-up quota (429 `insufficient_quota`).
//! The "transcript" is what a test registered for the recording's bytes.
//!
//! Text to speech too (`POST /v1/audio/speech`, JSON `model`, `input`, `voice`,
//! `response_format`, `instructions`): 400 for a missing `input`, an input past 4,096
//! characters (`string_above_max_length`) and an unknown voice, the same key check, rate
//! limit and quota; the answer is Ogg bytes for `opus` (MP3 for the default `mp3`) made
//! from the input, so a test can tell which text they are. With `stream_format: "sse"`
//! the same bytes come as OpenAI streams them: `speech.audio.delta` events of base64
//! pieces, then `speech.audio.done` with the tokens billed; `tts-1` refuses the setting
//! (400), and so does the whole server when `no_events` says (as a server that does not
//! know it); `cut_next` ends a stream before its `done`.
//!
//! `GET /v1/models` lists the models it serves (in no useful order, as OpenAI's list); a
//! model in `retired` is answered 404 `model_not_found`, as OpenAI answers one it has shut
//! down, and left out of the list.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::json;

use crate::http::{multipart, Request, Responder, Server};

/// Extensions OpenAI accepts.
const FORMATS: &[&str] = &["flac", "mp3", "mp4", "mpeg", "mpga", "m4a", "ogg", "wav", "webm"];

/// One recorded transcription request.
#[derive(Debug, Clone)]
pub struct Transcription {
    /// The `model` field.
    pub model: String,
    /// The file part's name.
    pub file_name: String,
    /// The file part's type.
    pub content_type: Option<String>,
    /// The file's bytes.
    pub bytes: Vec<u8>,
    /// The `Authorization: Bearer` key, if any.
    pub key: Option<String>,
}

/// The stand-in.
pub struct FakeSpeech {
    server: Server,
    requests: Arc<Mutex<Vec<Transcription>>>,
    said: Arc<Mutex<HashMap<Vec<u8>, String>>>,
    /// Requests to answer with 429 `rate_limit_exceeded` first.
    pub rate_limit_next: Arc<AtomicUsize>,
    /// Answer every request with 429 `insufficient_quota`.
    pub quota_used_up: Arc<AtomicBool>,
    /// Milliseconds to listen before answering (a long recording), unless the client
    /// closes the connection first.
    pub delay_ms: Arc<AtomicUsize>,
    /// Transcriptions whose client closed the connection while the service listened.
    pub walked_away: Arc<AtomicUsize>,
    /// Models answered with 404 `model_not_found`, and left out of the model list.
    pub retired: Arc<Mutex<Vec<String>>>,
    /// `GET /v1/models` requests so far.
    pub model_lists: Arc<AtomicUsize>,
    /// Refuse `stream_format` as an unknown parameter.
    pub no_events: Arc<AtomicBool>,
    /// Speech streams to end before their `speech.audio.done`.
    pub cut_next: Arc<AtomicUsize>,
    /// The JSON bodies of `POST /v1/audio/speech` so far.
    spoken: Arc<Mutex<Vec<serde_json::Value>>>,
}

/// OpenAI's voices.
const VOICES: &[&str] = &[
    "alloy", "ash", "ballad", "coral", "echo", "fable", "onyx", "nova", "sage", "shimmer", "verse", "marin",
    "cedar",
];

/// The recording the stand-in makes of `input` in `format`.
pub fn spoken_audio(input: &str, format: &str) -> Vec<u8> {
    let mut bytes = match format {
        "opus" => b"OggS\0\x02".to_vec(),
        _ => b"ID3\x04\0\0".to_vec(),
    };
    bytes.extend_from_slice(input.as_bytes());
    bytes
}

/// A used-up quota or a rate limit answered (`None`), else `resp` to answer with.
fn refused(resp: Responder, quota: &AtomicBool, limit: &AtomicUsize) -> Option<Responder> {
    if quota.load(Ordering::SeqCst) {
        let msg = "You exceeded your current quota, please check your plan and billing details.";
        error(resp, 429, msg, "insufficient_quota", "insufficient_quota");
        return None;
    }
    if limit.load(Ordering::SeqCst) > 0 {
        limit.fetch_sub(1, Ordering::SeqCst);
        let msg = "Rate limit reached for gpt-4o-mini-transcribe on requests per min (RPM): Limit 3, Used 3.";
        error(resp, 429, msg, "requests", "rate_limit_exceeded");
        return None;
    }
    Some(resp)
}

fn spoken_log(req: &Request, spoken: &Mutex<Vec<serde_json::Value>>) {
    spoken.lock().unwrap().push(req.json());
}

/// The tokens OpenAI bills for speaking `input`: its text, and the sound (about 20 a
/// word, at 1.6 per 100 ms).
pub fn speech_usage(input: &str) -> (u64, u64) {
    let words = input.split_whitespace().count() as u64;
    (input.chars().count() as u64 / 4 + 1, words * 20 + 5)
}

/// Answer a speech request as OpenAI does; a model in `retired` is gone; `no_events`:
/// `stream_format` is unknown here; `cut`: the stream ends early.
fn speech(req: &Request, resp: Responder, retired: &[String], (no_events, cut): (bool, bool)) {
    let body = req.json();
    let model = body["model"].as_str().unwrap_or("");
    if retired.iter().any(|r| r == model) {
        let msg = format!("The model `{model}` does not exist or you do not have access to it.");
        return error(resp, 404, &msg, "invalid_request_error", "model_not_found");
    }
    let bad = |resp: Responder, msg: &str, param: &str, code: &str| {
        let body =
            json!({"error": {"message": msg, "type": "invalid_request_error", "param": param, "code": code}});
        resp.json(400, &body)
    };
    let Some(input) = body["input"].as_str() else {
        return bad(
            resp,
            "Missing required parameter: 'input'.",
            "input",
            "missing_required_parameter",
        );
    };
    let n = input.chars().count();
    if n > 4096 {
        let msg = format!("Invalid 'input': string too long. Expected a string with maximum length 4096, but got a string with length {n} instead.");
        return bad(resp, &msg, "input", "string_above_max_length");
    }
    let voice = body["voice"].as_str().unwrap_or("");
    if !VOICES.contains(&voice) {
        let msg = format!(
            "Invalid value: '{voice}'. Supported values are: {}.",
            VOICES.join(", ")
        );
        return bad(resp, &msg, "voice", "invalid_value");
    }
    let format = body["response_format"].as_str().unwrap_or("mp3");
    let kind = if format == "opus" {
        "audio/ogg"
    } else {
        "audio/mpeg"
    };
    let audio = spoken_audio(input, format);
    match body["stream_format"].as_str() {
        None | Some("audio") => resp.send(200, &[("Content-Type", kind)], &audio),
        Some(_) if no_events => bad(
            resp,
            "Unrecognized request argument supplied: stream_format",
            "stream_format",
            "unknown_parameter",
        ),
        Some("sse") if model.starts_with("tts-1") => bad(
            resp,
            &format!("Unsupported value: 'stream_format' does not support 'sse' with model '{model}'."),
            "stream_format",
            "unsupported_value",
        ),
        Some("sse") => {
            use base64::Engine;
            let mut events = String::new();
            for piece in audio.chunks(7) {
                let audio = base64::engine::general_purpose::STANDARD.encode(piece);
                let delta = json!({"type": "speech.audio.delta", "audio": audio});
                events.push_str(&format!("data: {delta}\n\n"));
            }
            if !cut {
                let (input_tokens, output_tokens) = speech_usage(input);
                let done = json!({"type": "speech.audio.done", "usage": {"input_tokens": input_tokens,
                    "output_tokens": output_tokens, "total_tokens": input_tokens + output_tokens}});
                events.push_str(&format!("data: {done}\n\n"));
            }
            resp.send(200, &[("Content-Type", "text/event-stream")], events.as_bytes());
        }
        Some(other) => bad(
            resp,
            &format!("Invalid value: '{other}'. Supported values are: 'sse' and 'audio'."),
            "stream_format",
            "invalid_value",
        ),
    }
}

/// The models the stand-in lists, with their `created`: a chat model among them, as
/// OpenAI lists every model the key may use.
pub const MODELS: [(&str, i64); 8] = [
    ("gpt-4o-mini-transcribe", 1_742_068_596),
    ("gpt-4o-mini-tts", 1_742_403_959),
    ("gpt-5-mini-tts", 1_790_000_400),
    ("whisper-1", 1_677_532_384),
    ("gpt-5-mini-transcribe", 1_790_000_000),
    ("gpt-5-transcribe", 1_790_000_100),
    ("gpt-5-transcribe-diarize", 1_790_000_200),
    ("gpt-6", 1_790_000_300),
];

fn error(resp: Responder, status: u16, message: &str, kind: &str, code: &str) {
    let body = json!({"error": {"message": message, "type": kind, "param": null, "code": code}});
    resp.json(status, &body);
}

impl FakeSpeech {
    /// Accept `key` only (`None`: no key needed, as a local Whisper server).
    pub fn start(key: Option<&'static str>) -> FakeSpeech {
        let requests = Arc::new(Mutex::new(Vec::new()));
        let said: Arc<Mutex<HashMap<Vec<u8>, String>>> = Arc::default();
        let rate_limit_next = Arc::new(AtomicUsize::new(0));
        let quota_used_up = Arc::new(AtomicBool::new(false));
        let delay_ms = Arc::new(AtomicUsize::new(0));
        let delay = Arc::clone(&delay_ms);
        let walked_away = Arc::new(AtomicUsize::new(0));
        let left = Arc::clone(&walked_away);
        let retired = Arc::new(Mutex::new(Vec::<String>::new()));
        let gone = Arc::clone(&retired);
        let model_lists = Arc::new(AtomicUsize::new(0));
        let lists = Arc::clone(&model_lists);
        let spoken = Arc::new(Mutex::new(Vec::new()));
        let speeches = Arc::clone(&spoken);
        let no_events = Arc::new(AtomicBool::new(false));
        let cut_next = Arc::new(AtomicUsize::new(0));
        let (plain, cuts) = (Arc::clone(&no_events), Arc::clone(&cut_next));
        let (log, texts, limit, quota) = (
            Arc::clone(&requests),
            Arc::clone(&said),
            Arc::clone(&rate_limit_next),
            Arc::clone(&quota_used_up),
        );
        let server = Server::start(move |req: Request, resp| {
            if (req.method.as_str(), req.path.as_str()) == ("GET", "/v1/models") {
                lists.fetch_add(1, Ordering::SeqCst);
                let sent = req
                    .header("authorization")
                    .and_then(|h| h.strip_prefix("Bearer "));
                if key.is_some() && sent != key {
                    let msg = "Incorrect API key provided.";
                    return error(resp, 401, msg, "invalid_request_error", "invalid_api_key");
                }
                return resp.json(
                    200,
                    &crate::openai_images::model_list(&MODELS, &gone.lock().unwrap()),
                );
            }
            let speaking = (req.method.as_str(), req.path.as_str()) == ("POST", "/v1/audio/speech");
            if (req.method.as_str(), req.path.as_str()) != ("POST", "/v1/audio/transcriptions") && !speaking {
                let msg = format!("Invalid URL ({} {})", req.method, req.path);
                return error(resp, 404, &msg, "invalid_request_error", "");
            }
            let sent = req
                .header("authorization")
                .and_then(|h| h.strip_prefix("Bearer "))
                .map(str::to_string);
            if key.is_some() && sent.as_deref() != key {
                return error(
                    resp,
                    401,
                    "Incorrect API key provided.",
                    "invalid_request_error",
                    "invalid_api_key",
                );
            }
            if speaking {
                spoken_log(&req, &speeches);
                if let Some(resp) = refused(resp, &quota, &limit) {
                    let streams = req.json()["stream_format"] == "sse";
                    let cut = streams
                        && cuts
                            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                            .is_ok();
                    let modes = (plain.load(Ordering::SeqCst), cut);
                    speech(&req, resp, &gone.lock().unwrap(), modes);
                }
                return;
            }
            let Some(parts) = multipart(&req) else {
                let msg = "Could not parse multipart form";
                return error(resp, 400, msg, "invalid_request_error", "");
            };
            let field = |n: &str| parts.iter().find(|p| p.name == n);
            let Some(model) = field("model").map(|p| String::from_utf8_lossy(&p.data).to_string()) else {
                return error(
                    resp,
                    400,
                    "you must provide a model parameter",
                    "invalid_request_error",
                    "",
                );
            };
            let Some(file) = field("file") else {
                return error(
                    resp,
                    400,
                    "Missing required parameter: 'file'.",
                    "invalid_request_error",
                    "",
                );
            };
            let file_name = file.filename.clone().unwrap_or_default();
            log.lock().unwrap().push(Transcription {
                model: model.clone(),
                file_name: file_name.clone(),
                content_type: file.content_type.clone(),
                bytes: file.data.clone(),
                key: sent,
            });
            if gone.lock().unwrap().contains(&model) {
                let msg = format!("The model `{model}` does not exist or you do not have access to it.");
                return error(resp, 404, &msg, "invalid_request_error", "model_not_found");
            }
            let ext = file_name.rsplit_once('.').map_or("", |(_, e)| e);
            if !FORMATS.contains(&ext) {
                let msg = format!("Invalid file format. Supported formats: {FORMATS:?}");
                return error(resp, 400, &msg, "invalid_request_error", "");
            }
            let Some(resp) = refused(resp, &quota, &limit) else {
                return;
            };
            let listening = std::time::Duration::from_millis(delay.load(Ordering::SeqCst) as u64);
            if !listening.is_zero() && resp.closed_within(listening) {
                left.fetch_add(1, Ordering::SeqCst);
                return;
            }
            let text = texts
                .lock()
                .unwrap()
                .get(&file.data)
                .cloned()
                .unwrap_or_else(|| format!("({} bytes of sound)", file.data.len()));
            // The gpt-4o transcription models count tokens; whisper-1 the seconds heard.
            let usage = if model.starts_with("gpt-4o") {
                let (heard, written) = (file.data.len() as u64 / 100 + 10, text.len() as u64 / 4 + 1);
                json!({"type": "tokens", "input_tokens": heard, "output_tokens": written,
                    "total_tokens": heard + written,
                    "input_token_details": {"text_tokens": 0, "audio_tokens": heard}})
            } else {
                json!({"type": "duration", "seconds": 3})
            };
            resp.json(200, &json!({"text": text, "usage": usage}));
        });
        FakeSpeech {
            server,
            requests,
            said,
            rate_limit_next,
            quota_used_up,
            delay_ms,
            walked_away,
            retired,
            model_lists,
            no_events,
            cut_next,
            spoken,
        }
    }

    /// The JSON bodies of every speech request so far.
    pub fn speeches(&self) -> Vec<serde_json::Value> {
        self.spoken.lock().unwrap().clone()
    }

    /// The API base (`.../v1`), for `OPENAI_AUDIO_BASE_URL`.
    pub fn base_url(&self) -> String {
        format!("{}/v1", self.server.url)
    }

    /// A recording whose transcript is `text`.
    pub fn says(&self, bytes: &[u8], text: &str) {
        self.said.lock().unwrap().insert(bytes.to_vec(), text.to_string());
    }

    /// Every transcription request so far.
    pub fn requests(&self) -> Vec<Transcription> {
        self.requests.lock().unwrap().clone()
    }
}

/// Bytes that start like an Ogg file (a voice message), `len` long.
pub fn fake_ogg(len: usize, seed: u8) -> Vec<u8> {
    let mut bytes = b"OggS\0\x02".to_vec();
    bytes.extend((0..len.saturating_sub(6)).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)));
    bytes
}
