//! Trying a refused OpenAI API request again, as OpenAI's SDKs decide (the image and
//! speech tools share it).

use std::time::Duration;

use serde_json::{json, Value};

/// Longest wait a server may ask for before a retry; a longer one goes to the model.
const MAX_RETRY_WAIT: Duration = Duration::from_secs(30);

/// The waits a refusal asks for: `retry-after-ms`, then `retry-after` (seconds).
pub fn asked(resp: &ureq::http::Response<ureq::Body>) -> (Option<String>, Option<String>) {
    let header = |name: &str| {
        let v = resp.headers().get(name)?;
        v.to_str().ok().map(str::to_string)
    };
    (header("retry-after-ms"), header("retry-after"))
}

/// Whether to try a refused request again, and when.
#[derive(Debug, PartialEq)]
pub enum Retry {
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
pub fn retry_wait(status: u16, asked: (Option<&str>, Option<&str>), body: &str, attempt: u32) -> Retry {
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
pub fn quota_used_up(body: &str) -> bool {
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
