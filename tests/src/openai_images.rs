//! A stand-in for the OpenAI Images API (`POST /v1/images/generations`, and
//! `POST /v1/images/edits` with its multipart form of fields and `image[]` files: a model
//! that takes no images, a file of another type, none at all are refused): the bearer key
//! check (401 `invalid_api_key`), each model family's parameters and sizes (400
//! `unknown_parameter`, `invalid_value`), the safety system's refusal (400
//! `moderation_blocked`), the rate limit (429 `rate_limit_exceeded` with `retry-after` and
//! the `x-ratelimit-*` headers), a used-up quota (429 `insufficient_quota`, which no wait
//! cures, so without `retry-after`), and answers in base64
//! or, for DALL-E without `response_format`, as a URL to fetch the image from.
//!
//! `GET /v1/models` lists the models it serves (newest `created` last, as OpenAI's list
//! comes in no useful order); a model in `retired` is answered 404 `model_not_found`, as
//! OpenAI answers one it has shut down.
//!
//! The "images" are bytes with the real signature of their format (JPEG, PNG) and the
//! requested length, so an agent telling formats apart by their first bytes is exercised.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use serde_json::{json, Value};

use crate::http::{Request, Responder, Server};

/// A prompt containing this is refused by the "safety system".
pub const FORBIDDEN: &str = "FORBIDDEN";

/// A recorded request: its JSON body (an edit's text fields, as strings) and the bearer
/// key sent.
#[derive(Debug, Clone)]
pub struct Generation {
    /// The request body.
    pub body: Value,
    /// The `Authorization: Bearer` key, if any.
    pub key: Option<String>,
    /// An edit's files: field, file name, content type, bytes.
    pub uploads: Vec<(String, String, String, Vec<u8>)>,
}

/// The stand-in.
pub struct FakeImages {
    server: Server,
    requests: Arc<Mutex<Vec<Generation>>>,
    /// Requests to answer with 429 before answering normally.
    pub rate_limit_next: Arc<AtomicUsize>,
    /// The wait in seconds those 429s ask for (1 unless set).
    pub rate_limit_wait: Arc<AtomicUsize>,
    /// Answer every request with 429 `insufficient_quota`.
    pub quota_used_up: Arc<AtomicBool>,
    /// Length of each generated image in bytes.
    pub image_bytes: Arc<AtomicUsize>,
    /// Models answered with 404 `model_not_found`, and left out of the model list.
    pub retired: Arc<Mutex<Vec<String>>>,
    /// Generations take a minute, with nothing sent meanwhile (as the API sends nothing
    /// until the image is done), unless the client closes the connection first.
    pub slow: Arc<AtomicBool>,
    /// Slow generations whose client closed the connection before the image was done.
    pub walked_away: Arc<AtomicUsize>,
}

/// The models the stand-in serves, with their `created`.
pub const MODELS: [(&str, i64); 6] = [
    ("dall-e-3", 1_698_785_189),
    ("gpt-image-1", 1_745_517_030),
    ("gpt-4o", 1_715_367_049),
    ("gpt-image-2", 1_790_000_000),
    ("gpt-image-2-mini", 1_790_000_100),
    ("whisper-1", 1_677_532_384),
];

/// OpenAI's answer to `GET /v1/models`: `models` (id, created) except those `retired`.
pub fn model_list(models: &[(&str, i64)], retired: &[String]) -> Value {
    let data: Vec<Value> = models
        .iter()
        .filter(|(id, _)| !retired.iter().any(|g| g == id))
        .map(|(id, created)| json!({"id": id, "object": "model", "created": created, "owned_by": "system"}))
        .collect();
    json!({"object": "list", "data": data})
}

fn error(resp: Responder, status: u16, message: &str, kind: &str, param: Option<&str>, code: &str) {
    error_with(resp, status, &[], message, kind, param, code);
}

fn error_with(
    resp: Responder,
    status: u16,
    headers: &[(&str, &str)],
    message: &str,
    kind: &str,
    param: Option<&str>,
    code: &str,
) {
    let body = json!({"error": {"message": message, "type": kind, "param": param, "code": code}});
    let mut all = vec![("Content-Type", "application/json")];
    all.extend_from_slice(headers);
    resp.send(status, &all, body.to_string().as_bytes());
}

/// Bytes of `len` that start like a file of `format` (`jpeg`, `png`, `webp`).
pub fn fake_image(format: &str, len: usize) -> Vec<u8> {
    let head: &[u8] = match format {
        "png" => b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR",
        "webp" => b"RIFF\0\0\0\0WEBPVP8 ",
        _ => &[0xff, 0xd8, 0xff, 0xe0, 0, 0x10, b'J', b'F', b'I', b'F', 0],
    };
    let mut bytes = head.to_vec();
    bytes.extend((0..len.saturating_sub(head.len())).map(|i| (i % 251) as u8));
    bytes
}

impl FakeImages {
    /// Accept `key` only.
    pub fn start(key: &'static str) -> FakeImages {
        let requests = Arc::new(Mutex::new(Vec::new()));
        let rate_limit_next = Arc::new(AtomicUsize::new(0));
        let rate_limit_wait = Arc::new(AtomicUsize::new(1));
        let quota_used_up = Arc::new(AtomicBool::new(false));
        let image_bytes = Arc::new(AtomicUsize::new(48 * 1024));
        let (log, limit, len) = (
            Arc::clone(&requests),
            Arc::clone(&rate_limit_next),
            Arc::clone(&image_bytes),
        );
        let (wait, quota) = (Arc::clone(&rate_limit_wait), Arc::clone(&quota_used_up));
        let retired = Arc::new(Mutex::new(Vec::<String>::new()));
        let gone = Arc::clone(&retired);
        let (slow, walked_away) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicUsize::new(0)));
        let (drawing, left) = (Arc::clone(&slow), Arc::clone(&walked_away));
        let server = Server::start(move |req: Request, resp| {
            let n = len.load(Ordering::SeqCst);
            if req.method == "GET" && req.path.starts_with("/files/") {
                return resp.send(200, &[("Content-Type", "image/png")], &fake_image("png", n));
            }
            let authorised = req.header("authorization") == Some(&format!("Bearer {key}"));
            if (req.method.as_str(), req.path.as_str()) == ("GET", "/v1/models") {
                if !authorised {
                    return error(
                        resp,
                        401,
                        "Incorrect API key provided.",
                        "invalid_request_error",
                        None,
                        "invalid_api_key",
                    );
                }
                return resp.json(200, &model_list(&MODELS, &gone.lock().unwrap()));
            }
            let edit = match (req.method.as_str(), req.path.as_str()) {
                ("POST", "/v1/images/generations") => false,
                ("POST", "/v1/images/edits") => true,
                _ => {
                    let msg = format!("Invalid URL ({} {})", req.method, req.path);
                    return error(resp, 404, &msg, "invalid_request_error", None, "");
                }
            };
            let sent = req
                .header("authorization")
                .and_then(|h| h.strip_prefix("Bearer "))
                .map(str::to_string);
            let (body, uploads) = if edit {
                let Some(parts) = crate::http::multipart(&req) else {
                    let msg = "Invalid Content-Type header (application/json), expected multipart/form-data.";
                    return error(resp, 400, msg, "invalid_request_error", None, "invalid_value");
                };
                let mut fields = serde_json::Map::new();
                let mut files = Vec::new();
                for p in parts {
                    match p.filename {
                        Some(name) => files.push((p.name, name, p.content_type.unwrap_or_default(), p.data)),
                        None => {
                            fields.insert(p.name, String::from_utf8_lossy(&p.data).into_owned().into());
                        }
                    }
                }
                (Value::Object(fields), files)
            } else {
                (
                    serde_json::from_slice(&req.body).unwrap_or(Value::Null),
                    Vec::new(),
                )
            };
            log.lock().unwrap().push(Generation {
                body: body.clone(),
                key: sent.clone(),
                uploads: uploads.clone(),
            });
            if sent.as_deref() != Some(key) {
                let shown = sent.as_deref().map_or("".into(), |k| {
                    format!("{}***{}", &k[..k.len().min(3)], &k[k.len().saturating_sub(2)..])
                });
                let msg = format!("Incorrect API key provided: {shown}. You can find your API key at https://platform.openai.com/account/api-keys.");
                return error(resp, 401, &msg, "invalid_request_error", None, "invalid_api_key");
            }
            let model = body["model"].as_str().unwrap_or_default();
            if gone.lock().unwrap().iter().any(|g| g == model) {
                let msg = format!("The model `{model}` does not exist or you do not have access to it.");
                return error(resp, 404, &msg, "invalid_request_error", None, "model_not_found");
            }
            if quota.load(Ordering::SeqCst) {
                let msg = "You exceeded your current quota, please check your plan and billing details. For more information on this error, read the docs: https://platform.openai.com/docs/guides/error-codes/api-errors.";
                return error(resp, 429, msg, "insufficient_quota", None, "insufficient_quota");
            }
            if limit.load(Ordering::SeqCst) > 0 {
                limit.fetch_sub(1, Ordering::SeqCst);
                let secs = wait.load(Ordering::SeqCst);
                let msg = format!("Rate limit reached for gpt-image-1 in organization org-test on images per minute (IPM): Limit 5, Used 5, Requested 1. Please try again in {secs}s.");
                let (after, reset) = (secs.to_string(), format!("{secs}s"));
                let headers = [
                    ("retry-after", after.as_str()),
                    ("x-ratelimit-limit-requests", "5"),
                    ("x-ratelimit-remaining-requests", "0"),
                    ("x-ratelimit-reset-requests", reset.as_str()),
                ];
                return error_with(resp, 429, &headers, &msg, "requests", None, "rate_limit_exceeded");
            }
            if edit {
                if let Some(refusal) = refused_edit(&body, &uploads) {
                    let (msg, param, code) = refusal;
                    return error(resp, 400, &msg, "invalid_request_error", Some(param), code);
                }
            }
            if drawing.load(Ordering::SeqCst) && resp.closed_within(Duration::from_secs(60)) {
                left.fetch_add(1, Ordering::SeqCst);
                return;
            }
            answer(&body, n, &req, resp);
        });
        FakeImages {
            server,
            requests,
            rate_limit_next,
            rate_limit_wait,
            quota_used_up,
            image_bytes,
            retired,
            slow,
            walked_away,
        }
    }

    /// The base URL the agent takes (`OPENAI_IMAGES_BASE_URL`): `http://127.0.0.1:PORT/v1`.
    pub fn base_url(&self) -> String {
        format!("{}/v1", self.server.url)
    }

    /// Every generation request so far.
    pub fn requests(&self) -> Vec<Generation> {
        self.requests.lock().unwrap().clone()
    }
}

/// Why OpenAI refuses an edit (message, param, code): DALL-E 3 edits nothing, DALL-E 2
/// one PNG, GPT image models PNG, JPEG or WebP files in `image` or `image[]`.
fn refused_edit(
    body: &Value,
    uploads: &[(String, String, String, Vec<u8>)],
) -> Option<(String, &'static str, &'static str)> {
    let model = body["model"].as_str().unwrap_or("dall-e-2");
    if !(model == "dall-e-2" || model.starts_with("gpt-image")) {
        return Some((
            format!("Invalid value: '{model}'. Value must be 'dall-e-2'."),
            "model",
            "invalid_value",
        ));
    }
    let images: Vec<_> = uploads
        .iter()
        .filter(|u| u.0 == "image" || u.0 == "image[]")
        .collect();
    if images.is_empty() {
        return Some((
            "Missing required parameter: 'image'.".into(),
            "image",
            "missing_required_parameter",
        ));
    }
    for (_, _, kind, _) in &images {
        if !["image/png", "image/jpeg", "image/webp"].contains(&kind.as_str()) {
            return Some((
                format!("Invalid file 'image': unsupported mimetype ('{kind}'). Supported file formats are 'image/jpeg', 'image/png', and 'image/webp'."),
                "image",
                "unsupported_file_mimetype",
            ));
        }
    }
    None
}

/// The answer to a well-authorised request: a refusal of what this model does not take,
/// or the image.
fn answer(body: &Value, n: usize, req: &Request, resp: Responder) {
    let bad = |resp, msg: &str, param, code| error(resp, 400, msg, "invalid_request_error", param, code);
    let Some(prompt) = body["prompt"].as_str() else {
        return bad(
            resp,
            "Missing required parameter: 'prompt'.",
            Some("prompt"),
            "missing_required_parameter",
        );
    };
    let model = body["model"].as_str().unwrap_or("dall-e-2");
    let gpt = model.starts_with("gpt-image");
    let size = body["size"].as_str().unwrap_or("1024x1024");
    let sizes: &[&str] = if gpt {
        &["1024x1024", "1024x1536", "1536x1024", "auto"]
    } else {
        &["1024x1024", "1792x1024", "1024x1792"]
    };
    if !sizes.contains(&size) {
        let msg = format!(
            "Invalid value: '{size}'. Supported values are: {}.",
            sizes.join(", ")
        );
        return bad(resp, &msg, Some("size"), "invalid_value");
    }
    for (param, ok) in [
        ("response_format", !gpt),
        ("output_format", gpt),
        ("output_compression", gpt),
    ] {
        if body.get(param).is_some() && !ok {
            let msg = format!("Unknown parameter: '{param}'.");
            return bad(resp, &msg, Some(param), "unknown_parameter");
        }
    }
    if prompt.contains(FORBIDDEN) {
        let msg = "Your request was rejected as a result of our safety system. Your request may contain content that is not allowed by our safety system.";
        return error(
            resp,
            400,
            msg,
            "image_generation_user_error",
            None,
            "moderation_blocked",
        );
    }
    let b64 = |format| base64::engine::general_purpose::STANDARD.encode(fake_image(format, n));
    let answer = if gpt {
        let format = body["output_format"].as_str().unwrap_or("png");
        json!({"created": 1_764_633_600, "background": "opaque", "output_format": format,
            "quality": "high", "size": size, "data": [{"b64_json": b64(format)}],
            "usage": {"input_tokens": 12, "output_tokens": 4160, "total_tokens": 4172,
                "input_tokens_details": {"image_tokens": 0, "text_tokens": 12}}})
    } else {
        let revised = format!("A detailed rendering of {prompt}");
        let item = if body["response_format"] == "b64_json" {
            json!({"b64_json": b64("png"), "revised_prompt": revised})
        } else {
            let host = req.header("host").unwrap_or("127.0.0.1");
            json!({"url": format!("http://{host}/files/img-1.png"), "revised_prompt": revised})
        };
        json!({"created": 1_764_633_600, "data": [item]})
    };
    resp.json(200, &answer);
}
