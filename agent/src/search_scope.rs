//! [ours] Where the web search looks, and from where: the sites its results may come from
//! (`allowed_domains`) or may not (`blocked_domains`), and the user's approximate place
//! (`user_location`: city, region, country, time zone), agent.json `tools.web_search`.
//! Claude's and OpenAI's own searches take them as settings of their tools (OpenAI's
//! takes no blocked sites); Brave's results are kept or dropped by their address's host,
//! after asking Brave for more of them, so a list never lets a result of another site
//! through. A domain counts with its subdomains (`rust-lang.org` is also
//! `blog.rust-lang.org`).

use serde_json::{json, Value};

use crate::agent_file::ToolSetting;

/// Most domains a list keeps (OpenAI's allowed list takes 100).
pub const MAX_DOMAINS: usize = 100;

/// The user's approximate place, as both providers take it.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Location {
    pub city: Option<String>,
    pub region: Option<String>,
    /// ISO 3166-1 alpha-2 (`FR`).
    pub country: Option<String>,
    /// IANA (`Europe/Paris`).
    pub timezone: Option<String>,
}

/// The sites and the place of the searches.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SearchScope {
    /// Only these sites, when any.
    pub allowed: Vec<String>,
    /// Never these sites.
    pub blocked: Vec<String>,
    /// Where the user is, roughly.
    pub location: Option<Location>,
}

impl SearchScope {
    /// The scope agent.json's `web_search` entry sets (the agent's `timezone` standing for
    /// the location's when it names none), and what was wrong in it (left out).
    pub fn from_setting(setting: Option<&ToolSetting>, timezone: Option<&str>) -> (SearchScope, Vec<String>) {
        Self::of_tool("web_search", setting, timezone)
    }

    /// The same for the setting of `tool` (`image_search` takes the site lists; a place
    /// is for the providers' web searches).
    pub fn of_tool(
        tool: &str,
        setting: Option<&ToolSetting>,
        timezone: Option<&str>,
    ) -> (SearchScope, Vec<String>) {
        let mut problems = Vec::new();
        let mut list = |name: &str, given: Option<&Vec<String>>| -> Vec<String> {
            let mut out: Vec<String> = Vec::new();
            for raw in given.into_iter().flatten() {
                match domain(raw) {
                    Some(d) if !out.contains(&d) => out.push(d),
                    Some(_) => {}
                    None => problems.push(format!(
                        "tools.{tool}.{name}: {raw:?} is not a domain (like \"docs.rs\"); left out"
                    )),
                }
            }
            if out.len() > MAX_DOMAINS {
                problems.push(format!(
                    "tools.{tool}.{name}: {} domains, {MAX_DOMAINS} kept",
                    out.len()
                ));
                out.truncate(MAX_DOMAINS);
            }
            out
        };
        let allowed = list(
            "allowed_domains",
            setting.and_then(|s| s.allowed_domains.as_ref()),
        );
        let mut blocked = list(
            "blocked_domains",
            setting.and_then(|s| s.blocked_domains.as_ref()),
        );
        if !allowed.is_empty() && !blocked.is_empty() {
            // The providers take one list or the other; the allowed one says more.
            problems.push(format!(
                "tools.{tool}: allowed_domains and blocked_domains together; only allowed_domains applies"
            ));
            blocked.clear();
        }
        let mut location = setting.and_then(|s| s.user_location.clone()).unwrap_or_default();
        let plain =
            |v: &mut Option<String>| *v = v.take().map(|s| s.trim().to_string()).filter(|s| !s.is_empty());
        plain(&mut location.city);
        plain(&mut location.region);
        plain(&mut location.country);
        plain(&mut location.timezone);
        if let Some(c) = location.country.take() {
            match c.len() == 2 && c.bytes().all(|b| b.is_ascii_alphabetic()) {
                true => location.country = Some(c.to_ascii_uppercase()),
                false => problems.push(format!(
                    "tools.{tool}.user_location.country: {c:?} is not a two-letter country code (like \"FR\"); left out"
                )),
            }
        }
        if location.timezone.is_none() {
            location.timezone = timezone.map(str::to_string);
        }
        let scope = SearchScope {
            allowed,
            blocked,
            location: Some(location).filter(|l| *l != Location::default()),
        };
        (scope, problems)
    }

    /// Whether a result at `url` may be shown: its host is an allowed domain's (when
    /// there are any) and no blocked domain's. An address without a host is not.
    pub fn admits(&self, url: &str) -> bool {
        if self.allowed.is_empty() && self.blocked.is_empty() {
            return true;
        }
        let Some(host) = host_of(url) else {
            return false;
        };
        let within = |d: &String| host == *d || host.ends_with(&format!(".{d}"));
        (self.allowed.is_empty() || self.allowed.iter().any(within)) && !self.blocked.iter().any(within)
    }

    /// Whether results are filtered.
    pub fn filters(&self) -> bool {
        !self.allowed.is_empty() || !self.blocked.is_empty()
    }

    /// Anthropic's web search tool with this scope.
    pub fn anthropic(&self, mut tool: Value) -> Value {
        if !self.allowed.is_empty() {
            tool["allowed_domains"] = json!(self.allowed);
        }
        if !self.blocked.is_empty() {
            tool["blocked_domains"] = json!(self.blocked);
        }
        if let Some(l) = &self.location {
            tool["user_location"] = location_json(l);
        }
        tool
    }

    /// OpenAI's web search tool with this scope (it takes allowed sites only).
    pub fn openai(&self, mut tool: Value) -> Value {
        if !self.allowed.is_empty() {
            tool["filters"] = json!({"allowed_domains": self.allowed});
        }
        if let Some(l) = &self.location {
            tool["user_location"] = location_json(l);
        }
        tool
    }
}

/// `{"type": "approximate", ...}` with the parts known.
fn location_json(l: &Location) -> Value {
    let mut v = json!({"type": "approximate"});
    for (name, part) in [
        ("city", &l.city),
        ("region", &l.region),
        ("country", &l.country),
        ("timezone", &l.timezone),
    ] {
        if let Some(p) = part {
            v[name] = json!(p);
        }
    }
    v
}

/// `raw` as a domain the providers take: lower case, no scheme, no `www.`, no path;
/// `None` when it is not one (a space, a path, a port, no dot).
fn domain(raw: &str) -> Option<String> {
    let d = raw.trim().to_ascii_lowercase();
    let d = d
        .strip_prefix("https://")
        .or_else(|| d.strip_prefix("http://"))
        .unwrap_or(&d);
    let d = d.trim_end_matches('/');
    let d = d.strip_prefix("www.").unwrap_or(d);
    let label =
        |l: &str| !l.is_empty() && l.len() <= 63 && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    (d.len() <= 253 && d.contains('.') && d.split('.').all(label)).then(|| d.to_string())
}

/// The host of `url`, lower case, without a port or credentials.
fn host_of(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split(['/', '?', '#']).next()?;
    let host = authority.rsplit('@').next()?;
    let host = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next()?,
        None => host.split(':').next()?,
    };
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    (!host.is_empty()).then_some(host)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn setting(json: Value) -> ToolSetting {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn domains_are_plain_and_lists_exclusive() {
        let (scope, problems) = SearchScope::from_setting(
            Some(&setting(json!({"allowed_domains":
                ["https://www.Docs.rs/", "github.com", "docs.rs", "a b.com", "x.com/path", "localhost"],
                "blocked_domains": ["pinterest.com"]}))),
            None,
        );
        assert_eq!(scope.allowed, ["docs.rs", "github.com"]);
        assert!(scope.blocked.is_empty(), "the allowed list says more");
        assert_eq!(problems.len(), 4, "{problems:?}");
        assert!(
            problems[0].contains("\"a b.com\" is not a domain"),
            "{problems:?}"
        );
        assert!(
            problems[3].contains("only allowed_domains applies"),
            "{problems:?}"
        );
        let many: Vec<String> = (0..150).map(|i| format!("s{i}.com")).collect();
        let (scope, problems) =
            SearchScope::from_setting(Some(&setting(json!({"blocked_domains": many}))), None);
        assert_eq!(scope.blocked.len(), MAX_DOMAINS);
        assert!(problems[0].ends_with("150 domains, 100 kept"), "{problems:?}");
    }

    #[test]
    fn the_place_is_the_setting_or_the_agents_time_zone() {
        let (scope, problems) = SearchScope::from_setting(
            Some(&setting(
                json!({"user_location": {"city": " Paris ", "country": "fr"}}),
            )),
            Some("Europe/Paris"),
        );
        assert!(problems.is_empty(), "{problems:?}");
        let tool = scope.anthropic(json!({"type": "web_search_20250305", "name": "web_search"}));
        assert_eq!(
            tool["user_location"],
            json!({"type": "approximate", "city": "Paris", "country": "FR", "timezone": "Europe/Paris"})
        );
        let (scope, problems) = SearchScope::from_setting(
            Some(&setting(json!({"user_location": {"country": "France"}}))),
            None,
        );
        assert_eq!(scope.location, None);
        assert!(problems[0].contains("\"France\" is not a two-letter country code"));
        let (nothing, _) = SearchScope::from_setting(None, None);
        assert_eq!(nothing, SearchScope::default());
        let tool = json!({"type": "web_search"});
        assert_eq!(nothing.openai(tool.clone()), tool, "nothing added");
    }

    #[test]
    fn each_provider_gets_its_shape() {
        let (allowed, _) = SearchScope::from_setting(
            Some(&setting(json!({"allowed_domains": ["docs.rs"]}))),
            Some("UTC"),
        );
        assert_eq!(
            allowed.openai(json!({"type": "web_search"})),
            json!({"type": "web_search", "filters": {"allowed_domains": ["docs.rs"]},
                "user_location": {"type": "approximate", "timezone": "UTC"}})
        );
        let (blocked, _) = SearchScope::from_setting(
            Some(&setting(json!({"blocked_domains": ["pinterest.com"]}))),
            None,
        );
        assert_eq!(
            blocked.anthropic(json!({"type": "web_search_20250305"})),
            json!({"type": "web_search_20250305", "blocked_domains": ["pinterest.com"]})
        );
        let tool = json!({"type": "web_search"});
        assert_eq!(
            blocked.openai(tool.clone()),
            tool,
            "OpenAI's takes no blocked sites"
        );
    }

    #[test]
    fn results_are_kept_by_their_host_and_its_parents() {
        let scope = SearchScope {
            allowed: vec!["rust-lang.org".into()],
            ..SearchScope::default()
        };
        for url in [
            "https://rust-lang.org/",
            "https://blog.rust-lang.org/2026/x",
            "http://user@Blog.Rust-Lang.org:8080/x",
            "https://rust-lang.org./",
            "https://someone@rust-lang.org/",
        ] {
            assert!(scope.admits(url), "{url}");
        }
        for url in [
            "https://notrust-lang.org/",
            "https://rust-lang.org.evil.com/",
            "https://evil.com/?rust-lang.org",
            "https://evil.com/#https://rust-lang.org",
            "https://rust-lang.org@evil.com/",
            "rust-lang.org",
            "",
        ] {
            assert!(!scope.admits(url), "{url}");
        }
        let blocked = SearchScope {
            blocked: vec!["pinterest.com".into()],
            ..SearchScope::default()
        };
        assert!(!blocked.admits("https://www.pinterest.com/pin/1"));
        assert!(!blocked.admits("https://me@pinterest.com/pin/1"));
        assert!(blocked.admits("https://example.com/pinterest.com"));
        assert!(SearchScope::default().admits("not even a url"));
    }

    proptest! {
        /// Whatever the address, a result of a site outside the allowed one is never
        /// kept, and reading it never panics.
        #[test]
        fn no_address_gets_another_site_through(url in "\\PC{0,60}", host in "[a-z.@:]{0,20}") {
            let scope = SearchScope { allowed: vec!["docs.rs".into()], ..SearchScope::default() };
            let _ = scope.admits(&url);
            let url = format!("https://{host}/docs.rs");
            if scope.admits(&url) {
                let h = host_of(&url).unwrap();
                prop_assert!(h == "docs.rs" || h.ends_with(".docs.rs"), "{}", url);
            }
        }
    }
}
