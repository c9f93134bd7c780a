//! `web_search` and `image_search`: the Brave Search API, as upstream AegisVM's agent
//! uses it (`GET {base}/web/search`, `{base}/images/search`, key in
//! `X-Subscription-Token`). Results go to the model as upstream's JSON
//! (`{"query", "count", "results": [...]}`), with the markup of Brave's snippets removed.
//!
//! The free plan allows one request a second, and a model often searches twice in one
//! round: a 429 is waited out once (Brave's `X-RateLimit-Reset`, 2 s at most), then
//! reported.

use std::fmt;
use std::time::Duration;

use serde_json::{json, Value};

use super::web::html_to_text;
use super::{arg_opt, arg_str, transport, Abandoned};
use crate::search_scope::SearchScope;

/// Brave's API base; `BRAVE_SEARCH_BASE_URL` replaces it (a stand-in, a gateway).
pub const DEFAULT_BASE: &str = "https://api.search.brave.com/res/v1";
/// The variable holding the key unless agent.json names another (`brave_api_key_env`).
pub const DEFAULT_KEY_ENV: &str = "BRAVE_SEARCH_API_KEY";
/// Largest response read.
const MAX_BODY: u64 = 1 << 20;
/// Most results Brave gives for one request.
const MAX_COUNT: u64 = 20;
/// Pictures asked for at once when filtering (Brave gives up to 200).
const MAX_IMAGES_ASKED: u64 = 100;
/// Longest wait for one rate-limited retry.
const MAX_RETRY_WAIT: Duration = Duration::from_secs(2);

/// A Brave Search client. `Debug` never prints the key.
#[derive(Clone)]
pub struct Brave {
    key: String,
    base: String,
    /// The sites results may come from.
    scope: SearchScope,
}

impl fmt::Debug for Brave {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Brave").field("base", &self.base).finish()
    }
}

impl Brave {
    /// A client with the key in variable `key_env`, or `None` when it is unset or empty.
    pub fn from_env(key_env: &str) -> Option<Brave> {
        let (key, base) = super::api_from_env(key_env, "BRAVE_SEARCH_BASE_URL", DEFAULT_BASE)?;
        Some(Brave {
            key,
            base,
            scope: SearchScope::default(),
        })
    }

    /// The same client, keeping only the results `scope` admits.
    pub fn within(self, scope: SearchScope) -> Brave {
        Brave { scope, ..self }
    }

    /// `web_search {query, count?, freshness?}`.
    pub fn web(&self, args: &Value, abandoned: &Abandoned) -> Result<String, String> {
        let query = arg_str(args, "query")?.trim();
        let wanted = count(args)?;
        let (q, asked) = self.asking(query, wanted, MAX_COUNT);
        let mut params = vec![("q", q), ("count", asked.to_string())];
        if let Some(f) = arg_opt(args, "freshness")?
            .map(str::trim)
            .filter(|f| !f.is_empty())
        {
            params.push(("freshness", freshness(f)?));
        }
        let v = self.get("web/search", query, &params, abandoned)?;
        let results: Vec<Value> = v["web"]["results"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .filter(|r| self.scope.admits(r["url"].as_str().unwrap_or("")))
            .take(wanted as usize)
            .map(|r| {
                json!({
                    "title": clean(&r["title"]),
                    "url": r["url"].as_str().unwrap_or(""),
                    "description": clean(&r["description"]),
                })
            })
            .collect();
        Ok(json!({"query": query, "count": results.len(), "results": results}).to_string())
    }

    /// `image_search {query, count?}`.
    pub fn images(&self, args: &Value, abandoned: &Abandoned) -> Result<String, String> {
        let query = arg_str(args, "query")?.trim();
        let wanted = count(args)?;
        let (q, asked) = self.asking(query, wanted, MAX_IMAGES_ASKED);
        let params = [
            ("q", q),
            ("count", asked.to_string()),
            ("safesearch", "strict".to_string()),
        ];
        let v = self.get("images/search", query, &params, abandoned)?;
        let results: Vec<Value> = v["results"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            // By the page the picture is on: the site that shows it.
            .filter(|r| self.scope.admits(r["url"].as_str().unwrap_or("")))
            .take(wanted as usize)
            .map(|r| {
                let p = &r["properties"];
                let image = p["url"].as_str().or(r["url"].as_str()).unwrap_or("");
                let mut out = json!({
                    "title": clean(&r["title"]),
                    "url": image,
                    "thumbnail_url": r["thumbnail"]["src"].as_str().unwrap_or(""),
                    "source_page": r["url"].as_str().unwrap_or(""),
                });
                for side in ["width", "height"] {
                    if let Some(n) = p[side].as_u64() {
                        out[side] = n.into();
                    }
                }
                out
            })
            .collect();
        Ok(json!({"query": query, "count": results.len(), "results": results}).to_string())
    }

    /// The query and the count to ask Brave for `wanted` results of `query`: filtered,
    /// as many as it gives at once (`most`), and one allowed site by name (`site:`), so
    /// that what is kept still fills the answer.
    fn asking(&self, query: &str, wanted: u64, most: u64) -> (String, u64) {
        match self.scope.allowed.as_slice() {
            [only] => (format!("{query} site:{only}"), most),
            _ if self.scope.filters() => (query.to_string(), most),
            _ => (query.to_string(), wanted),
        }
    }

    /// The rate-limited retry is skipped when the call was `abandoned` meanwhile: each
    /// search counts against the plan's monthly quota.
    fn get(
        &self,
        path: &str,
        query: &str,
        params: &[(&str, String)],
        abandoned: &Abandoned,
    ) -> Result<Value, String> {
        if query.is_empty() {
            return Err("query is required".into());
        }
        let url = format!("{}/{path}", self.base);
        let agent = super::api_agent(&url, Duration::from_secs(15));
        let _armed = abandoned.arm(&agent)?;
        let mut retried = false;
        loop {
            let mut req = agent
                .get(&url)
                .header("accept", "application/json")
                .header("x-subscription-token", &self.key);
            for (k, v) in params {
                req = req.query(*k, v);
            }
            // The key travels in a header only, so an error naming the URL cannot leak it.
            let resp = req
                .call()
                .map_err(|e| format!("search failed: {}", transport(&e)))?;
            let status = resp.status().as_u16();
            if status == 429 && !retried {
                retried = true;
                if !abandoned.wait(reset_wait(resp.headers().get("x-ratelimit-reset"))) {
                    return Err("cancelled".into());
                }
                continue;
            }
            if status != 200 {
                return Err(status_error(status, &tether::http::error_text(resp)));
            }
            return super::json_answer(resp, MAX_BODY, "the search results", "the search API");
        }
    }
}

/// `count` in 1..=20, 5 when absent.
fn count(args: &Value) -> Result<u64, String> {
    match args.get("count") {
        None | Some(Value::Null) => Ok(5),
        Some(v) => v
            .as_u64()
            .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
            .map(|n| n.clamp(1, MAX_COUNT))
            .ok_or_else(|| format!("count must be a number from 1 to 20, got {v}")),
    }
}

/// Brave's `freshness`: `pd`, `pw`, `pm`, `py`, or `YYYY-MM-DDtoYYYY-MM-DD`.
fn freshness(f: &str) -> Result<String, String> {
    let date = |d: &str| {
        d.len() == 10
            && d.bytes().enumerate().all(|(i, b)| {
                if i == 4 || i == 7 {
                    b == b'-'
                } else {
                    b.is_ascii_digit()
                }
            })
    };
    let ok =
        matches!(f, "pd" | "pw" | "pm" | "py") || f.split_once("to").is_some_and(|(a, b)| date(a) && date(b));
    if ok {
        Ok(f.to_string())
    } else {
        Err(format!(
            "freshness must be pd (24 h), pw (7 days), pm (31 days), py (a year) or YYYY-MM-DDtoYYYY-MM-DD, got {f:?}"
        ))
    }
}

/// A snippet as text: Brave marks the matched words with `<strong>` and escapes entities.
fn clean(v: &Value) -> String {
    html_to_text(v.as_str().unwrap_or("")).trim().to_string()
}

/// How long Brave says to wait: the first of `X-RateLimit-Reset`'s numbers (seconds,
/// per-second window first), at most `MAX_RETRY_WAIT`.
fn reset_wait(header: Option<&ureq::http::HeaderValue>) -> Duration {
    let secs = header
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.split(',').next())
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(1);
    Duration::from_secs(secs.max(1)).min(MAX_RETRY_WAIT)
}

/// A refusal, in Brave's words (`error.detail`) when it gave them.
fn status_error(status: u16, body: &str) -> String {
    let v: Value = serde_json::from_str(body).unwrap_or_default();
    let detail = v["error"]["detail"]
        .as_str()
        .or(v["message"].as_str())
        .map(str::to_string)
        .unwrap_or_else(|| body.trim().chars().take(200).collect());
    let what = match status {
        401 | 403 => "the search API rejected the key",
        429 => "the search API is rate-limiting requests; try again later",
        _ => "the search API refused the request",
    };
    super::refusal(what, status, &detail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_clamped_and_bad_ones_named() {
        assert_eq!(count(&json!({})), Ok(5));
        assert_eq!(count(&json!({"count": 50})), Ok(20));
        assert_eq!(count(&json!({"count": 0})), Ok(1));
        assert_eq!(count(&json!({"count": "3"})), Ok(3));
        assert!(count(&json!({"count": "many"}))
            .unwrap_err()
            .contains("count must be"));
    }

    #[test]
    fn freshness_takes_brave_values_only() {
        for ok in ["pd", "pw", "pm", "py", "2026-01-01to2026-02-01"] {
            assert_eq!(freshness(ok).as_deref(), Ok(ok));
        }
        for bad in ["week", "2026-1-1to2026-02-01", "pd&count=20", "2026-01-01to"] {
            assert!(freshness(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn snippets_lose_their_markup() {
        assert_eq!(
            clean(&json!("The <strong>Rust</strong> book &amp; more")),
            "The Rust book & more"
        );
    }

    #[test]
    fn refusals_keep_braves_words_and_the_wait_is_bounded() {
        let body = r#"{"type":"ErrorResponse","error":{"id":"x","status":429,"code":"RATE_LIMITED","detail":"Request rate limit exceeded for plan.","meta":{"plan":"Free"}},"time":1}"#;
        assert_eq!(
            status_error(429, body),
            "the search API is rate-limiting requests; try again later (HTTP 429: Request rate limit exceeded for plan.)"
        );
        assert!(status_error(401, "").starts_with("the search API rejected the key (HTTP 401)"));
        let h = |s: &'static str| ureq::http::HeaderValue::from_static(s);
        assert_eq!(reset_wait(Some(&h("1, 1419704"))), Duration::from_secs(1));
        assert_eq!(reset_wait(Some(&h("60"))), MAX_RETRY_WAIT);
        assert_eq!(reset_wait(None), Duration::from_secs(1));
    }

    #[test]
    fn debug_never_shows_the_key() {
        let b = Brave {
            key: "BSA-secret".into(),
            base: DEFAULT_BASE.into(),
            scope: SearchScope::default(),
        };
        assert!(!format!("{b:?}").contains("BSA-secret"));
    }
}
