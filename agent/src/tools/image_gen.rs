//! `image_generate`: a picture from the OpenAI Images API (`POST {base}/images/generations`),
//! as upstream AegisVM's agent makes it, attached to the reply like `respond_with_image`.
//! [ours] With `images` (files of the workspace: a photo someone sent, a picture a tool
//! made), the picture is made from them (`POST {base}/images/edits`, multipart): "put a
//! hat on my cat", "combine these two logos".
//!
//! GPT image models are asked for JPEG: Telegram recompresses every photo to JPEG anyway,
//! and a JPEG of 1024x1024 fits the tether's 1 MiB line (base64) where a PNG of it often
//! does not. DALL-E models are asked for base64 (`response_format`) so the picture comes in
//! the answer itself; a server that still answers with a URL gets it fetched once. The
//! image goes into the workspace blob store either way, and an image too large for the
//! tether travels by blob name only (a gateway reading the workspace, as upstream's and
//! ours do, still sends it).

use std::fmt;
use std::io::Read;
use std::path::Path;
use std::time::Duration;

use base64::Engine;
use serde_json::{json, Value};

use super::retry::{Body, Post, Refused, Upload};
use super::{arg_str, transport, Abandoned};
use crate::blobs;

/// OpenAI's API base; `OPENAI_IMAGES_BASE_URL` replaces it (a stand-in, a compatible server).
pub const DEFAULT_BASE: &str = "https://api.openai.com/v1";
/// The variable holding the key unless agent.json names another (`openai_api_key_env`).
pub const DEFAULT_KEY_ENV: &str = "OPENAI_API_KEY";
/// The model unless agent.json names another (`tools.image_generate.model`), as upstream.
pub const DEFAULT_MODEL: &str = "gpt-image-1";
/// Largest image kept (that of the blob store).
const MAX_IMAGE: usize = blobs::MAX_IMAGE;
/// Largest answer read: a maximal image in base64, and its JSON around it.
const MAX_BODY: u64 = (MAX_IMAGE as u64) * 4 / 3 + 64 * 1024;
/// Largest image sent inline with the reply: its base64 must fit a 1 MiB tether line.
const INLINE_CAP: usize = super::files::ATTACH_CAP as usize;
/// GPT image models at high quality take a minute or more.
const TIMEOUT: Duration = Duration::from_secs(180);

/// An Images API client. `Debug` never prints the key.
#[derive(Clone)]
pub struct ImageGen {
    key: String,
    base: String,
    model: String,
    /// `model` is the default, not agent.json's: when the API no longer has it, the
    /// newest image model it lists is used instead (`successor`), sought once.
    default_model: bool,
    successor: crate::successor::Successor,
    /// Where each image's usage is added up (`gpt-image-1` counts tokens).
    ledger: Option<std::sync::Arc<crate::usage::Ledger>>,
}

impl fmt::Debug for ImageGen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ImageGen")
            .field("base", &self.base)
            .field("model", &self.model)
            .finish()
    }
}

/// What the API is asked for, by model family.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Family {
    /// `gpt-image-*`: always base64; `output_format` chooses the encoding.
    GptImage,
    /// `dall-e-*`: a URL unless `response_format` asks for base64.
    Dalle,
    /// Anything else (a compatible server): only the common fields.
    Other,
}

impl Family {
    fn of(model: &str) -> Family {
        if model.starts_with("gpt-image") {
            Family::GptImage
        } else if model.starts_with("dall-e") {
            Family::Dalle
        } else {
            Family::Other
        }
    }
}

impl ImageGen {
    /// A client with the key in variable `key_env` for `model` (the default when
    /// `None`), or `None` when the variable is unset or empty.
    pub fn from_env(key_env: &str, model: Option<&str>) -> Option<ImageGen> {
        let (key, base) = super::api_from_env(key_env, "OPENAI_IMAGES_BASE_URL", DEFAULT_BASE)?;
        Some(ImageGen {
            key,
            base,
            model: model.unwrap_or(DEFAULT_MODEL).to_string(),
            default_model: model.is_none(),
            successor: Default::default(),
            ledger: None,
        })
    }

    /// The same client, adding each image's usage to `ledger`.
    pub fn with_ledger(self, ledger: std::sync::Arc<crate::usage::Ledger>) -> ImageGen {
        ImageGen {
            ledger: Some(ledger),
            ..self
        }
    }

    /// The model asked for: the configured one, or its successor.
    fn model(&self) -> String {
        self.successor.model(&self.model)
    }

    /// When the default model is gone (`refusal` is the API's 404), the one to use
    /// instead, found once.
    fn replace_retired_model(&self, agent: &ureq::Agent, status: u16, refusal: &str) -> Option<String> {
        self.successor.replace(
            (self.default_model, &self.model),
            (status, refusal),
            "image model",
            |current| crate::successor::find_image_model(agent, &self.base, &self.key, current),
        )
    }

    /// The request body for `prompt` at `size` from `model`.
    fn body(model: &str, prompt: &str, size: &str) -> Value {
        let mut body = json!({"model": model, "prompt": prompt, "n": 1, "size": size});
        match Family::of(model) {
            Family::GptImage => {
                body["output_format"] = "jpeg".into();
                body["output_compression"] = 90.into();
            }
            Family::Dalle => body["response_format"] = "b64_json".into(),
            Family::Other => {}
        }
        body
    }

    /// The request for `prompt` at `size` from `model`: JSON to make a picture, a form
    /// with the `inputs` to make one from them.
    fn request<'a>(model: &str, prompt: &str, size: &str, inputs: &'a [Upload]) -> Body<'a> {
        let body = Self::body(model, prompt, size);
        if inputs.is_empty() {
            return Body::Json(body.to_string());
        }
        let fields = [
            "model",
            "prompt",
            "n",
            "size",
            "output_format",
            "output_compression",
            "response_format",
        ]
        .into_iter()
        .filter_map(|k| {
            let v = body.get(k)?;
            Some((k, v.as_str().map_or_else(|| v.to_string(), str::to_string)))
        })
        .collect();
        Body::Form(fields, inputs)
    }

    /// The form field of an image to edit: GPT image models take several (`image[]`, as
    /// OpenAI's SDKs send them), DALL-E 2 one.
    pub fn input_field(&self) -> &'static str {
        match Family::of(&self.model()) {
            Family::GptImage => "image[]",
            _ => "image",
        }
    }

    /// `image_generate {prompt, size?}`: the image stored in the workspace of `root`, to
    /// attach, and the text for the model. A refusal worth retrying is retried as OpenAI's
    /// SDKs do (`retry_wait`), unless the call was `abandoned` meanwhile.
    pub fn generate(
        &self,
        root: &Path,
        args: &Value,
        inputs: &[Upload],
        abandoned: &Abandoned,
    ) -> Result<(tether::frame::Image, String, crate::usage::Tokens), String> {
        let prompt = arg_str(args, "prompt")?.trim();
        if prompt.is_empty() {
            return Err("prompt is required".into());
        }
        let size = size(args)?;
        let endpoint = if inputs.is_empty() { "generations" } else { "edits" };
        let url = format!("{}/images/{endpoint}", self.base);
        let agent = http_agent(&url);
        let _armed = abandoned.arm(&agent)?;
        let body = Self::request(&self.model(), prompt, &size, inputs);
        let post = Post {
            agent: &agent,
            url: &url,
            key: Some(&self.key),
            tool: "image_generate",
            failed: "image generation failed",
        };
        let resp = post.send(body, abandoned, |status, answer| {
            let refusal = self.scrub(status_error(status, answer));
            match self.replace_retired_model(&agent, status, &refusal) {
                Some(next) => Refused::Instead(Self::request(&next, prompt, &size, inputs)),
                None => Refused::Words(refusal),
            }
        })?;
        let v = super::json_answer(resp, MAX_BODY, "the generated image", "the image API")?;
        let spent = crate::usage::record_answer(self.ledger.as_deref(), &self.model(), &v);
        let first = &v["data"][0];
        let bytes = if let Some(b64) = first["b64_json"].as_str() {
            base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .map_err(|e| format!("the image API sent an image that is not base64: {e}"))?
        } else if let Some(link) = first["url"].as_str() {
            download(link, abandoned)?
        } else {
            return Err("the image API answered without an image".into());
        };
        let media_type = blobs::sniff(&bytes)
            .ok_or("the image API sent something that is not a PNG, JPEG, GIF or WebP image")?;
        let blob =
            blobs::store(root, media_type, &bytes).map_err(|e| format!("cannot store the image: {e}"))?;
        let inline = bytes.len() <= INLINE_CAP;
        let image = tether::frame::Image {
            media_type: media_type.to_string(),
            blob: Some(blob.clone()),
            data: inline.then(|| blobs::encode(&bytes)),
            size: Some(bytes.len() as u64),
        };
        let mut note = json!({
            "ok": true,
            "blob": blob,
            "path": format!(".aegis/blobs/{blob}"),
            "media_type": media_type,
            "size": bytes.len(),
            "prompt": prompt,
            "attached": "the image is attached to your reply",
        });
        if let Some(revised) = first["revised_prompt"].as_str().filter(|r| !r.is_empty()) {
            note["revised_prompt"] = revised.into();
        }
        if !inputs.is_empty() {
            note["made_from"] = inputs.iter().map(|i| i.name.clone()).collect::<Vec<_>>().into();
        }
        if !inline {
            note["attached"] =
                "the image is attached by its workspace file only (too large to travel inline); the chat receives it if the gateway can read the workspace".into();
        }
        Ok((image, note.to_string(), spent))
    }

    /// `text` without the key, should a server ever echo it.
    fn scrub(&self, text: String) -> String {
        text.replace(&self.key, "[the key]")
    }
}

fn http_agent(url: &str) -> ureq::Agent {
    super::api_agent(url, TIMEOUT)
}

/// The image a server linked to instead of sending it (DALL-E's default).
fn download(link: &str, abandoned: &Abandoned) -> Result<Vec<u8>, String> {
    if !(link.starts_with("https://") || link.starts_with("http://")) {
        return Err("the image API linked to an image that is not http(s)".into());
    }
    let agent = http_agent(link);
    let _armed = abandoned.arm(&agent)?;
    let resp = agent
        .get(link)
        .call()
        .map_err(|e| format!("downloading the generated image failed: {}", transport(&e)))?;
    if resp.status().as_u16() != 200 {
        return Err(format!(
            "downloading the generated image failed (HTTP {})",
            resp.status().as_u16()
        ));
    }
    let mut bytes = Vec::new();
    resp.into_body()
        .into_reader()
        .take(MAX_IMAGE as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("downloading the generated image failed: {e}"))?;
    if bytes.len() > MAX_IMAGE {
        return Err(format!("the generated image is larger than {MAX_IMAGE} bytes"));
    }
    Ok(bytes)
}

/// `size`: `WIDTHxHEIGHT` or `auto`, `1024x1024` when absent. Which sizes a model takes is
/// the API's to say (its refusal names them).
fn size(args: &Value) -> Result<String, String> {
    let given = match args.get("size") {
        None | Some(Value::Null) => return Ok("1024x1024".into()),
        Some(Value::String(s)) => s.trim().to_ascii_lowercase(),
        Some(other) => return Err(format!("size must be a string like \"1024x1024\", got {other}")),
    };
    let dims = given.split_once('x').is_some_and(|(w, h)| {
        [w, h]
            .iter()
            .all(|d| (2..=5).contains(&d.len()) && d.bytes().all(|b| b.is_ascii_digit()))
    });
    if dims || given == "auto" {
        Ok(given)
    } else {
        Err(format!(
            "size must be WIDTHxHEIGHT, e.g. 1024x1024, 1536x1024 (landscape) or 1024x1536 (portrait), got {given:?}"
        ))
    }
}

/// A refusal, in OpenAI's words (`error.message`) when it gave them.
fn status_error(status: u16, body: &str) -> String {
    let v: Value = serde_json::from_str(body).unwrap_or_default();
    let code = v["error"]["code"].as_str().unwrap_or("");
    if status == 400 && matches!(code, "moderation_blocked" | "content_policy_violation") {
        let detail = tether::http::error_words(body);
        return super::refusal(
            "the image API refused the prompt under its content policy",
            status,
            &detail,
        );
    }
    super::retry::refusal("the image API", "images can be made", status, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gen(model: &str) -> ImageGen {
        ImageGen {
            key: "sk-secret".into(),
            base: DEFAULT_BASE.into(),
            model: model.into(),
            default_model: false,
            successor: Default::default(),
            ledger: None,
        }
    }

    #[test]
    fn each_model_family_is_asked_in_its_own_terms() {
        let b = ImageGen::body("gpt-image-1", "a cat", "1024x1024");
        assert_eq!(
            b,
            json!({"model": "gpt-image-1", "prompt": "a cat", "n": 1, "size": "1024x1024",
                   "output_format": "jpeg", "output_compression": 90})
        );
        let b = ImageGen::body("dall-e-3", "a cat", "1792x1024");
        assert_eq!(b["response_format"], "b64_json");
        assert!(b.get("output_format").is_none());
        let b = ImageGen::body("flux-schnell", "a cat", "auto");
        assert_eq!(
            b,
            json!({"model": "flux-schnell", "prompt": "a cat", "n": 1, "size": "auto"})
        );
    }

    #[test]
    fn sizes_are_dimensions_or_auto() {
        assert_eq!(size(&json!({})).unwrap(), "1024x1024");
        assert_eq!(size(&json!({"size": " 1536X1024 "})).unwrap(), "1536x1024");
        assert_eq!(size(&json!({"size": "auto"})).unwrap(), "auto");
        for bad in [
            json!("big"),
            json!("1024"),
            json!("1024x"),
            json!("x1024"),
            json!(1024),
        ] {
            assert!(size(&json!({ "size": bad })).is_err(), "{bad}");
        }
    }

    #[test]
    fn refusals_keep_openais_words_and_never_the_key() {
        let body = r#"{"error":{"message":"Your request was rejected by the safety system.","type":"image_generation_user_error","param":null,"code":"moderation_blocked"}}"#;
        assert_eq!(
            status_error(400, body),
            "the image API refused the prompt under its content policy (HTTP 400: Your request was rejected by the safety system.)"
        );
        assert!(status_error(429, "").starts_with("the image API is rate-limiting"));
        let quota = r#"{"error": {"message": "You exceeded your current quota", "type": "insufficient_quota", "code": "insufficient_quota"}}"#;
        assert!(status_error(429, quota).starts_with("the OpenAI account's quota is used up"));
        assert!(status_error(503, "upstream connect error").ends_with("(HTTP 503: upstream connect error)"));
        let g = gen("gpt-image-1");
        assert_eq!(g.scrub("bad key sk-secret here".into()), "bad key [the key] here");
        assert!(!format!("{g:?}").contains("sk-secret"));
    }
}
