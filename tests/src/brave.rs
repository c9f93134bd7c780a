//! A stand-in for the Brave Search API (`/res/v1/web/search`, `/res/v1/images/search`):
//! its result shapes with `<strong>` marks in snippets, its `ErrorResponse` bodies, the
//! subscription token check (401), parameter validation (422) and the free plan's rate
//! limit (429 with `X-RateLimit-*` headers).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

use crate::http::{Request, Responder, Server};

/// The sites web results and pictures come from, in turn.
pub const SITES: [&str; 4] = ["example.com", "blog.rust-lang.org", "pinterest.com", "docs.rs"];

/// A recorded search: the endpoint (`web` or `images`) and its query parameters, decoded.
#[derive(Debug, Clone)]
pub struct Search {
    /// `web` or `images`.
    pub endpoint: String,
    /// Query parameters, percent-decoded.
    pub params: HashMap<String, String>,
    /// The `X-Subscription-Token` sent.
    pub token: Option<String>,
}

/// The stand-in; answers with results that echo the query.
pub struct FakeBrave {
    server: Server,
    searches: Arc<Mutex<Vec<Search>>>,
    /// Requests to answer with 429 before answering normally.
    pub rate_limit_next: Arc<AtomicUsize>,
}

fn error(resp: Responder, status: u16, code: &str, detail: &str, headers: &[(&str, &str)]) {
    let body = json!({"type": "ErrorResponse", "error": {"id": "1f3c", "status": status, "code": code,
        "detail": detail, "meta": {"component": "api"}}, "time": 1_764_633_600});
    let mut h = headers.to_vec();
    h.push(("Content-Type", "application/json"));
    resp.send(status, &h, body.to_string().as_bytes());
}

/// A query component as a form decodes it (`+` is a space).
fn decode(s: &str) -> String {
    percent_encoding::percent_decode_str(&s.replace('+', " "))
        .decode_utf8_lossy()
        .into_owned()
}

impl FakeBrave {
    /// Accept `token` only.
    pub fn start(token: &'static str) -> FakeBrave {
        let searches = Arc::new(Mutex::new(Vec::new()));
        let rate_limit_next = Arc::new(AtomicUsize::new(0));
        let (log, limit) = (Arc::clone(&searches), Arc::clone(&rate_limit_next));
        let server = Server::start(move |req: Request, resp| {
            let (path, query) = req.path.split_once('?').unwrap_or((&req.path, ""));
            let endpoint = match path {
                "/res/v1/web/search" => "web",
                "/res/v1/images/search" => "images",
                _ => return error(resp, 404, "RESOURCE_NOT_FOUND", "Resource not found.", &[]),
            };
            let params: HashMap<String, String> = query
                .split('&')
                .filter(|p| !p.is_empty())
                .map(|p| {
                    let (k, v) = p.split_once('=').unwrap_or((p, ""));
                    (decode(k), decode(v))
                })
                .collect();
            let sent = req.header("x-subscription-token").map(str::to_string);
            log.lock().unwrap().push(Search {
                endpoint: endpoint.into(),
                params: params.clone(),
                token: sent.clone(),
            });
            if sent.as_deref() != Some(token) {
                return error(
                    resp,
                    401,
                    "SUBSCRIPTION_TOKEN_INVALID",
                    "The provided subscription token is invalid.",
                    &[],
                );
            }
            if limit.load(Ordering::SeqCst) > 0 {
                limit.fetch_sub(1, Ordering::SeqCst);
                let headers = [
                    ("X-RateLimit-Limit", "1, 2000"),
                    ("X-RateLimit-Remaining", "0, 1990"),
                    ("X-RateLimit-Reset", "1, 1419704"),
                ];
                return error(
                    resp,
                    429,
                    "RATE_LIMITED",
                    "Request rate limit exceeded for plan.",
                    &headers,
                );
            }
            let q = params.get("q").cloned().unwrap_or_default();
            let count: usize = params.get("count").and_then(|c| c.parse().ok()).unwrap_or(20);
            // Brave gives 20 web results at most, 200 pictures.
            let most = if endpoint == "web" { 20 } else { 200 };
            if q.is_empty() || !(1..=most).contains(&count) {
                return error(
                    resp,
                    422,
                    "VALIDATION",
                    "Unable to validate request parameter(s)",
                    &[],
                );
            }
            // Results of several sites; `site:NAME` keeps those of that site, as Brave's
            // search operator does.
            let site = q.split_whitespace().find_map(|w| w.strip_prefix("site:"));
            let host_of = |i: usize| site.unwrap_or(SITES[(i - 1) % SITES.len()]);
            let body = if endpoint == "web" {
                let results: Vec<Value> = (1..=count)
                    .map(|i| (i, host_of(i)))
                    .map(|(i, host)| json!({
                        "title": format!("Result {i} for <strong>{q}</strong>"),
                        "url": format!("https://{host}/{i}"),
                        "is_source_local": false,
                        "description": format!("All about <strong>{q}</strong> &amp; more, part {i}."),
                        "profile": {"name": "Example", "url": format!("https://example.com/{i}"), "long_name": "example.com"},
                        "language": "en", "family_friendly": true, "type": "search_result", "subtype": "generic",
                        "meta_url": {"scheme": "https", "netloc": "example.com", "hostname": "example.com", "path": format!("› {i}")},
                    }))
                    .collect();
                json!({"type": "search", "query": {"original": q, "more_results_available": true},
                    "mixed": {"type": "mixed", "main": [{"type": "web", "index": 0, "all": false}]},
                    "web": {"type": "search", "results": results, "family_friendly": true}})
            } else {
                let results: Vec<Value> = (1..=count)
                    .map(|i| (i, host_of(i)))
                    .map(|(i, host)| json!({
                        "type": "image_result", "title": format!("Picture {i} of {q}"),
                        "url": format!("https://{host}/gallery/{i}"), "source": host,
                        "page_fetched": "2026-11-30T10:00:00Z",
                        "thumbnail": {"src": format!("https://imgs.search.brave.com/t{i}.jpg")},
                        "properties": {"url": format!("https://example.com/img/{i}.jpg"), "placeholder": "https://imgs.search.brave.com/p.jpg", "width": 1200, "height": 800 + i},
                        "meta_url": {"scheme": "https", "netloc": "example.com", "hostname": "example.com"},
                        "confidence": "high",
                    }))
                    .collect();
                json!({"type": "images", "query": {"original": q}, "results": results})
            };
            resp.json(200, &body);
        });
        FakeBrave {
            server,
            searches,
            rate_limit_next,
        }
    }

    /// The base URL the agent takes (`BRAVE_SEARCH_BASE_URL`): `http://127.0.0.1:PORT/res/v1`.
    pub fn base_url(&self) -> String {
        format!("{}/res/v1", self.server.url)
    }

    /// Every search so far.
    pub fn searches(&self) -> Vec<Search> {
        self.searches.lock().unwrap().clone()
    }
}
