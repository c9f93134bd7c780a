//! A stand-in for OpenAI's speech-to-text API (`POST /v1/audio/transcriptions`,
//! multipart/form-data: `file`, `model`, `response_format`): the bearer key check (401
//! `invalid_api_key`), the multipart checks OpenAI makes (400 for a missing `model` or
//! `file`, and for a file whose name has no supported extension: OpenAI goes by it), the
//! rate limit (429 `rate_limit_exceeded`) and a used-up quota (429 `insufficient_quota`).
//! The "transcript" is what a test registered for the recording's bytes.
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
    /// Milliseconds to listen before answering (a long recording).
    pub delay_ms: Arc<AtomicUsize>,
    /// Models answered with 404 `model_not_found`, and left out of the model list.
    pub retired: Arc<Mutex<Vec<String>>>,
    /// `GET /v1/models` requests so far.
    pub model_lists: Arc<AtomicUsize>,
}

/// The models the stand-in lists, with their `created`: a chat model among them, as
/// OpenAI lists every model the key may use.
pub const MODELS: [(&str, i64); 6] = [
    ("gpt-4o-mini-transcribe", 1_742_068_596),
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
        let retired = Arc::new(Mutex::new(Vec::<String>::new()));
        let gone = Arc::clone(&retired);
        let model_lists = Arc::new(AtomicUsize::new(0));
        let lists = Arc::clone(&model_lists);
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
            if (req.method.as_str(), req.path.as_str()) != ("POST", "/v1/audio/transcriptions") {
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
            if quota.load(Ordering::SeqCst) {
                let msg = "You exceeded your current quota, please check your plan and billing details.";
                return error(resp, 429, msg, "insufficient_quota", "insufficient_quota");
            }
            if limit.load(Ordering::SeqCst) > 0 {
                limit.fetch_sub(1, Ordering::SeqCst);
                let msg = "Rate limit reached for gpt-4o-mini-transcribe on requests per min (RPM): Limit 3, Used 3.";
                return error(resp, 429, msg, "requests", "rate_limit_exceeded");
            }
            std::thread::sleep(std::time::Duration::from_millis(
                delay.load(Ordering::SeqCst) as u64
            ));
            let text = texts
                .lock()
                .unwrap()
                .get(&file.data)
                .cloned()
                .unwrap_or_else(|| format!("({} bytes of sound)", file.data.len()));
            resp.json(
                200,
                &json!({"text": text, "usage": {"type": "duration", "seconds": 3}}),
            );
        });
        FakeSpeech {
            server,
            requests,
            said,
            rate_limit_next,
            quota_used_up,
            delay_ms,
            retired,
            model_lists,
        }
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
