//! Sending a request to an OpenAI API and trying a refused one again, as OpenAI's SDKs
//! decide (the image and speech tools share it).

use std::time::Duration;

use serde_json::{json, Value};

use super::{transport, Abandoned};

/// Longest wait a server may ask for before a retry; a longer one goes to the model.
const MAX_RETRY_WAIT: Duration = Duration::from_secs(30);
/// Tries at one request, as OpenAI's SDKs make (two retries).
const ATTEMPTS: u32 = 3;

/// One JSON `POST` to an OpenAI API.
pub struct Post<'a> {
    /// The client (a status comes back as an answer: [`super::api_agent`]).
    pub agent: &'a ureq::Agent,
    /// Where.
    pub url: &'a str,
    /// The bearer key, if the server needs one.
    pub key: Option<&'a str>,
    /// The tool, for the log (`image_generate`).
    pub tool: &'a str,
    /// What failed when the server cannot be reached ("image generation failed").
    pub failed: &'a str,
}

/// A file sent in a multipart body (an image to edit).
#[derive(Debug)]
pub struct Upload {
    /// The form field (`image[]`).
    pub field: &'static str,
    /// Its file name.
    pub name: String,
    /// Its media type.
    pub media_type: &'static str,
    /// Its bytes.
    pub bytes: Vec<u8>,
}

/// A request body: JSON, or a multipart form of text fields and files.
pub enum Body<'a> {
    /// `application/json`.
    Json(String),
    /// `multipart/form-data`.
    Form(Vec<(&'static str, String)>, &'a [Upload]),
}

/// What a refusal means to the caller.
pub enum Refused<'a> {
    /// This, for the model (the API's words, the key scrubbed).
    Words(String),
    /// Send this body instead (the model asked for is gone; another takes its place).
    Instead(Body<'a>),
}

impl Post<'_> {
    /// `body` sent until answered 200: `refused(status, answer)` says what a refusal means;
    /// one worth trying again is, up to three tries, after the wait [`retry_wait`] gives,
    /// unless the call was `abandoned` meanwhile.
    pub fn send<'a>(
        &self,
        mut body: Body<'a>,
        abandoned: &Abandoned,
        mut refused: impl FnMut(u16, &str) -> Refused<'a>,
    ) -> Result<ureq::http::Response<ureq::Body>, String> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut req = self.agent.post(self.url);
            if let Some(key) = self.key {
                req = req.header("authorization", &format!("Bearer {key}"));
            }
            let sent = match &body {
                Body::Json(json) => req.content_type("application/json").send(json.as_str()),
                Body::Form(fields, files) => {
                    use ureq::unversioned::multipart::{Form, Part};
                    let mut form = Form::new();
                    for (name, value) in fields {
                        form = form.text(name, value);
                    }
                    for f in files.iter() {
                        let part = Part::bytes(&f.bytes)
                            .file_name(&f.name)
                            .mime_str(f.media_type)
                            .map_err(|e| format!("{}: {e}", self.failed))?;
                        form = form.part(f.field, part);
                    }
                    req.send(form)
                }
            };
            let resp = sent.map_err(|e| format!("{}: {}", self.failed, transport(&e)))?;
            let status = resp.status().as_u16();
            if status == 200 {
                return Ok(resp);
            }
            let (ms, secs) = asked(&resp);
            let answer = tether::http::error_text(resp);
            let refusal = match refused(status, &answer) {
                Refused::Instead(next) => {
                    body = next;
                    attempt -= 1;
                    continue;
                }
                Refused::Words(words) => words,
            };
            match retry_wait(status, (ms.as_deref(), secs.as_deref()), &answer, attempt) {
                Retry::After(wait) if attempt < ATTEMPTS => {
                    log::warn!(
                        "{}: HTTP {status} (attempt {attempt}); retrying in {wait:?}",
                        self.tool
                    );
                    if !abandoned.wait(wait) {
                        return Err("cancelled".into());
                    }
                }
                Retry::TooLong(wait) => {
                    return Err(format!("{refusal}; it asks to wait {} s", wait.as_secs()))
                }
                _ => return Err(refusal),
            }
        }
    }
}

/// The waits a refusal asks for: `retry-after-ms`, then `retry-after` (seconds).
fn asked(resp: &ureq::http::Response<ureq::Body>) -> (Option<String>, Option<String>) {
    let header = |name: &str| {
        let v = resp.headers().get(name)?;
        v.to_str().ok().map(str::to_string)
    };
    (header("retry-after-ms"), header("retry-after"))
}

/// Whether to try a refused request again, and when.
#[derive(Debug, PartialEq)]
enum Retry {
    /// Not worth it: the request itself, the key, or a used-up quota.
    No,
    /// After this wait.
    After(Duration),
    /// The server asks for a longer wait than a tool call should sit through.
    TooLong(Duration),
}

/// As OpenAI's SDKs decide: 408, 409, 429 and 5xx are retried, after the wait the server
/// asks for (`retry-after-ms`, else `retry-after` in seconds: `asked`), else 1 s, then 2 s.
/// A 429 for a used-up quota (`insufficient_quota`) is not: it waits on billing, not time.
fn retry_wait(status: u16, asked: (Option<&str>, Option<&str>), body: &str, attempt: u32) -> Retry {
    match status {
        408 | 409 | 500..=599 => {}
        429 if !quota_used_up(body) => {}
        _ => return Retry::No,
    }
    let seconds = |v: Option<&str>, per: f64| {
        let n = v?.trim().parse::<f64>().ok()?;
        (n.is_finite() && n >= 0.0).then(|| Duration::from_secs_f64(n / per))
    };
    let wait = seconds(asked.0, 1000.0)
        .or_else(|| seconds(asked.1, 1.0))
        .unwrap_or(Duration::from_secs(1 << attempt.saturating_sub(1).min(4)));
    if wait > MAX_RETRY_WAIT {
        Retry::TooLong(wait)
    } else {
        Retry::After(wait)
    }
}

/// Whether an error body says the account's quota is used up (a 429 like a rate limit's).
fn quota_used_up(body: &str) -> bool {
    let v: Value = serde_json::from_str(body).unwrap_or_default();
    [&v["error"]["code"], &v["error"]["type"]].contains(&&json!("insufficient_quota"))
}

/// A refusal of OpenAI's `api` ("the image API"), in its words (`error.message`) when it
/// gave them; `making` says what a used-up quota stops ("images can be made").
pub fn refusal(api: &str, making: &str, status: u16, body: &str) -> String {
    let detail = tether::http::error_words(body);
    let what = match status {
        401 | 403 => format!("{api} rejected the key"),
        429 if quota_used_up(body) => {
            format!("the OpenAI account's quota is used up; its billing must be seen to before {making}")
        }
        429 => format!("{api} is rate-limiting requests; try again later"),
        s if s >= 500 => format!("{api} failed; try again later"),
        _ => format!("{api} refused the request"),
    };
    super::refusal(&what, status, &detail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_follow_openais_sdks_but_not_a_used_up_quota() {
        let limited = r#"{"error": {"message": "Rate limit reached", "type": "requests", "code": "rate_limit_exceeded"}}"#;
        let quota = r#"{"error": {"message": "You exceeded your current quota", "type": "insufficient_quota", "code": "insufficient_quota"}}"#;
        let secs = Duration::from_secs;
        // The server's wait, in milliseconds first, then seconds.
        assert_eq!(
            retry_wait(429, (None, Some("12")), limited, 1),
            Retry::After(secs(12))
        );
        assert_eq!(
            retry_wait(429, (Some("250"), Some("1")), limited, 1),
            Retry::After(Duration::from_millis(250))
        );
        // Without one: 1 s, then 2 s; garbage counts as none.
        assert_eq!(retry_wait(503, (None, None), "", 1), Retry::After(secs(1)));
        assert_eq!(
            retry_wait(500, (None, Some("soon")), "", 2),
            Retry::After(secs(2))
        );
        assert_eq!(retry_wait(408, (None, Some("-3")), "", 1), Retry::After(secs(1)));
        assert_eq!(retry_wait(429, (None, Some("NaN")), "", 1), Retry::After(secs(1)));
        // A wait longer than a tool call should sit through is the model's to know.
        assert_eq!(
            retry_wait(429, (None, Some("90")), limited, 1),
            Retry::TooLong(secs(90))
        );
        // Requests that would fail again, and a quota that takes billing, not time.
        for status in [400, 401, 403, 404] {
            assert_eq!(
                retry_wait(status, (None, Some("1")), "", 1),
                Retry::No,
                "{status}"
            );
        }
        assert_eq!(retry_wait(429, (None, Some("1")), quota, 1), Retry::No);
    }
}
