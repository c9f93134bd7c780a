//! Finding how to sign in to a remote MCP server (MCP authorization, revisions 2025-06-18
//! to 2026-07-28): what its refusal says (`WWW-Authenticate`), its protected resource
//! metadata (RFC 9728), which names the authorization server, and that server's metadata
//! (RFC 8414, else OpenID Connect discovery), each looked for where and in the order MCP
//! says, and checked to be what it claims: metadata for this resource, an issuer that names
//! itself, PKCE with S256.

use std::time::Duration;

use serde_json::Value;

/// Longest wait for one metadata, registration or token request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest metadata or token answer read.
pub const MAX_ANSWER: u64 = 256 * 1024;

/// What a server's refusal (`WWW-Authenticate: Bearer ...`) says.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Challenge {
    /// Where its protected resource metadata is.
    pub resource_metadata: Option<String>,
    /// The scopes the request needs.
    pub scope: Option<String>,
    /// `error`: `invalid_token`, `insufficient_scope`...
    pub error: Option<String>,
}

impl Challenge {
    /// The `Bearer` challenge of a `WWW-Authenticate` value (nothing when it has none).
    pub fn parse(header: &str) -> Challenge {
        let mut c = Challenge::default();
        let mut in_bearer = false;
        for item in auth_items(header) {
            match item {
                AuthItem::Scheme(s) => in_bearer = s.eq_ignore_ascii_case("bearer"),
                AuthItem::Param(k, v) if in_bearer => match k.to_ascii_lowercase().as_str() {
                    "resource_metadata" => c.resource_metadata = Some(v),
                    "scope" => c.scope = Some(v),
                    "error" => c.error = Some(v),
                    _ => {}
                },
                AuthItem::Param(..) => {}
            }
        }
        c
    }

    /// It asks for scopes the token lacks (a step-up), not for a token.
    pub fn insufficient_scope(&self) -> bool {
        self.error.as_deref() == Some("insufficient_scope")
    }
}

enum AuthItem {
    Scheme(String),
    Param(String, String),
}

/// A `WWW-Authenticate` value as schemes and their `name=value` parameters (RFC 9110
/// §11.6.1): values plain or quoted (with `\` escapes); anything else is skipped.
fn auth_items(header: &str) -> Vec<AuthItem> {
    let mut items = Vec::new();
    let mut chars = header.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace() || *c == ',') {
            chars.next();
        }
        let mut word = String::new();
        while let Some(&c) = chars.peek() {
            if c.is_whitespace() || c == ',' || c == '=' {
                break;
            }
            word.push(c);
            chars.next();
        }
        if word.is_empty() {
            match chars.next() {
                Some(_) => continue, // a stray `=`
                None => return items,
            }
        }
        while chars.peek().is_some_and(|c| *c == ' ' || *c == '\t') {
            chars.next();
        }
        if chars.peek() != Some(&'=') {
            items.push(AuthItem::Scheme(word));
            continue;
        }
        chars.next();
        while chars.peek().is_some_and(|c| *c == ' ' || *c == '\t') {
            chars.next();
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '"' => break,
                    '\\' => value.extend(chars.next()),
                    c => value.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ',' || c.is_whitespace() {
                    break;
                }
                value.push(c);
                chars.next();
            }
        }
        items.push(AuthItem::Param(word, value));
    }
}

/// An authorization server as its metadata describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct Issuer {
    pub issuer: String,
    pub authorization_endpoint: String,
    pub token_endpoint: String,
    pub registration_endpoint: Option<String>,
    /// Where tokens are revoked (RFC 7009), if it says.
    pub revocation_endpoint: Option<String>,
    pub iss_supported: bool,
    pub offline_access: bool,
}

/// Text of another party for a message: one line, 200 characters.
pub fn clean(text: &str) -> String {
    crate::text::clip(&text.replace(char::is_control, " "), 200)
}

/// Where the server's protected resource metadata may be: the refusal's word, else the
/// well-known addresses with the endpoint's path, then at the root (RFC 9728 §3.1).
pub fn resource_metadata_urls(url: &str, challenge: &Challenge) -> Vec<String> {
    if let Some(named) = &challenge.resource_metadata {
        return vec![named.clone()];
    }
    let (origin, path) = split_origin(url);
    let mut urls = Vec::new();
    if !path.is_empty() && path != "/" {
        urls.push(format!("{origin}/.well-known/oauth-protected-resource{path}"));
    }
    urls.push(format!("{origin}/.well-known/oauth-protected-resource"));
    urls
}

/// Where an issuer's metadata may be, in the order MCP asks (RFC 8414 §3.1 with the path
/// inserted, then OpenID Connect's two forms).
pub fn issuer_metadata_urls(issuer: &str) -> Vec<String> {
    let (origin, path) = split_origin(issuer);
    let path = path.trim_end_matches('/');
    match path {
        "" => vec![
            format!("{origin}/.well-known/oauth-authorization-server"),
            format!("{origin}/.well-known/openid-configuration"),
        ],
        path => vec![
            format!("{origin}/.well-known/oauth-authorization-server{path}"),
            format!("{origin}/.well-known/openid-configuration{path}"),
            format!("{origin}{path}/.well-known/openid-configuration"),
        ],
    }
}

/// `scheme://authority` and the path of `url` (query and fragment dropped).
fn split_origin(url: &str) -> (&str, &str) {
    let url = url.split(['?', '#']).next().unwrap_or("");
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    match url[after_scheme..].find('/') {
        Some(i) => url.split_at(after_scheme + i),
        None => (url, ""),
    }
}

/// The server's URI as a `resource` (RFC 8707): without a fragment or a trailing slash,
/// its scheme and host in lower case.
pub fn canonical(url: &str) -> String {
    let url = url.split('#').next().unwrap_or("");
    let (origin, path) = split_origin(url);
    let rest = &url[origin.len() + path.len()..];
    let path = path.trim_end_matches('/');
    format!("{}{path}{rest}", origin.to_ascii_lowercase())
}

/// The issuer the server names, and the scopes it says it needs; a server without
/// metadata (MCP 2025-03-26) is its own authorization server.
pub fn protected_resource(url: &str, challenge: &Challenge) -> Result<(String, Vec<String>), String> {
    let meta = match first_document(
        resource_metadata_urls(url, challenge),
        "protected resource metadata",
    ) {
        Ok(meta) => meta,
        Err(last) if challenge.resource_metadata.is_some() => {
            return Err(format!("its metadata could not be read: {last}"))
        }
        Err(_) => return Ok((split_origin(url).0.to_string(), Vec::new())),
    };
    // RFC 9728 §3.3: metadata for another resource is not this server's.
    if let Some(resource) = meta["resource"].as_str() {
        let ours = canonical(url);
        let theirs = canonical(resource);
        if !(ours == theirs || ours.starts_with(&format!("{theirs}/"))) {
            return Err(format!(
                "its metadata is for another resource ({})",
                clean(resource)
            ));
        }
    }
    let issuer = meta["authorization_servers"][0]
        .as_str()
        .ok_or("its metadata names no authorization server")?;
    if !is_http_url(issuer) {
        return Err(format!(
            "its authorization server is not an http(s) URL: {}",
            clean(issuer)
        ));
    }
    let scopes = meta["scopes_supported"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(str::to_string))
        .collect();
    Ok((issuer.to_string(), scopes))
}

/// The first of `urls` that gives a JSON document (`what`, for the log), or why the last
/// one did not.
fn first_document(urls: Vec<String>, what: &str) -> Result<Value, String> {
    let mut last = String::new();
    for candidate in urls {
        match get_json(&candidate) {
            Ok(document) => return Ok(document),
            Err(e) => {
                log::debug!("{what} at {candidate}: {e}");
                last = e;
            }
        }
    }
    Err(last)
}

/// The authorization server at `issuer`, from the first of its metadata addresses that
/// answers; it must name itself `issuer` and offer PKCE with S256.
pub fn authorization_server(issuer: &str) -> Result<Issuer, String> {
    let meta =
        first_document(issuer_metadata_urls(issuer), "authorization server metadata").map_err(|last| {
            format!("the authorization server's metadata could not be read at {issuer}: {last}")
        })?;
    let named = meta["issuer"].as_str().unwrap_or("");
    if named.trim_end_matches('/') != issuer.trim_end_matches('/') {
        return Err(format!(
            "the authorization server's metadata names another issuer ({})",
            clean(named)
        ));
    }
    let endpoint = |name: &str| {
        meta[name]
            .as_str()
            .filter(|u| is_http_url(u))
            .map(str::to_string)
            .ok_or(format!("the authorization server's metadata has no {name}"))
    };
    let s256 = meta["code_challenge_methods_supported"]
        .as_array()
        .is_some_and(|m| m.iter().any(|m| m == "S256"));
    if !s256 {
        return Err("the authorization server does not say it supports PKCE with S256".into());
    }
    let offline_access = meta["scopes_supported"]
        .as_array()
        .is_some_and(|s| s.iter().any(|s| s == "offline_access"));
    Ok(Issuer {
        issuer: named.to_string(),
        authorization_endpoint: endpoint("authorization_endpoint")?,
        token_endpoint: endpoint("token_endpoint")?,
        registration_endpoint: endpoint("registration_endpoint").ok(),
        revocation_endpoint: endpoint("revocation_endpoint").ok(),
        iss_supported: meta["authorization_response_iss_parameter_supported"] == true,
        offline_access,
    })
}

/// A metadata document.
fn get_json(url: &str) -> Result<Value, String> {
    let agent = crate::tools::api_agent(url, REQUEST_TIMEOUT);
    let resp = agent
        .get(url)
        .header("accept", "application/json")
        .call()
        .map_err(|e| crate::tools::transport(&e))?;
    match resp.status().as_u16() {
        200 => crate::tools::json_answer(resp, MAX_ANSWER, "the metadata", "the server"),
        status => Err(format!("HTTP {status}")),
    }
}

pub fn is_http_url(u: &str) -> bool {
    u.starts_with("https://") || u.starts_with("http://")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn a_bearer_challenge_is_read_whatever_its_layout() {
        let c = Challenge::parse(
            r#"Basic realm="x", Bearer error="insufficient_scope", scope="files:read files:write",
               resource_metadata="https://mcp.example.com/.well-known/oauth-protected-resource", error_description="a \"quoted\" word""#,
        );
        assert_eq!(
            c,
            Challenge {
                resource_metadata: Some(
                    "https://mcp.example.com/.well-known/oauth-protected-resource".into()
                ),
                scope: Some("files:read files:write".into()),
                error: Some("insufficient_scope".into()),
            }
        );
        assert!(c.insufficient_scope());
        // Another scheme's parameters are not the Bearer challenge's; plain values.
        let c = Challenge::parse("Bearer error=invalid_token, DPoP scope=\"x\"");
        assert_eq!(c.error.as_deref(), Some("invalid_token"));
        assert_eq!(c.scope, None);
        assert_eq!(Challenge::parse("Bearer"), Challenge::default());
        assert_eq!(Challenge::parse(""), Challenge::default());
    }

    #[test]
    fn metadata_is_looked_for_where_mcp_says_in_its_order() {
        let none = Challenge::default();
        assert_eq!(
            resource_metadata_urls("https://example.com/public/mcp?x=1", &none),
            [
                "https://example.com/.well-known/oauth-protected-resource/public/mcp",
                "https://example.com/.well-known/oauth-protected-resource"
            ]
        );
        assert_eq!(
            resource_metadata_urls("https://example.com", &none),
            ["https://example.com/.well-known/oauth-protected-resource"]
        );
        let named = Challenge {
            resource_metadata: Some("https://m.example/prm".into()),
            ..Challenge::default()
        };
        assert_eq!(
            resource_metadata_urls("https://example.com/mcp", &named),
            ["https://m.example/prm"]
        );
        assert_eq!(
            issuer_metadata_urls("https://auth.example.com/tenant1"),
            [
                "https://auth.example.com/.well-known/oauth-authorization-server/tenant1",
                "https://auth.example.com/.well-known/openid-configuration/tenant1",
                "https://auth.example.com/tenant1/.well-known/openid-configuration"
            ]
        );
        assert_eq!(
            issuer_metadata_urls("https://auth.example.com/"),
            [
                "https://auth.example.com/.well-known/oauth-authorization-server",
                "https://auth.example.com/.well-known/openid-configuration"
            ]
        );
        assert_eq!(
            canonical("HTTPS://MCP.Example.com/Path/#frag"),
            "https://mcp.example.com/Path"
        );
        assert_eq!(canonical("https://mcp.example.com/"), "https://mcp.example.com");
    }

    /// A server answering every GET with the JSON `doc` gives, with `{base}` replaced by
    /// its own URL.
    fn serving(doc: Value) -> aegis_e2e::http::Server {
        let base = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let b = std::sync::Arc::clone(&base);
        let server = aegis_e2e::http::Server::start(move |req, resp| {
            let text = doc.to_string().replace("{base}", &b.lock().unwrap());
            match req.path.starts_with("/.well-known/") {
                true => resp.send(200, &[("Content-Type", "application/json")], text.as_bytes()),
                false => resp.send(404, &[], b""),
            }
        });
        *base.lock().unwrap() = server.url.clone();
        server
    }

    #[test]
    fn metadata_must_be_the_servers_own_and_offer_s256() {
        let good = json!({"issuer": "{base}", "authorization_endpoint": "{base}/a",
            "token_endpoint": "{base}/t", "code_challenge_methods_supported": ["plain", "S256"]});
        let s = serving(good.clone());
        let issuer = authorization_server(&s.url).unwrap();
        assert_eq!(issuer.token_endpoint, format!("{}/t", s.url));
        assert_eq!(issuer.registration_endpoint, None);
        let mut other = good.clone();
        other["issuer"] = json!("https://evil.example");
        let s = serving(other);
        let e = authorization_server(&s.url).unwrap_err();
        assert!(e.contains("another issuer"), "{e}");
        let mut plain = good.clone();
        plain["code_challenge_methods_supported"] = json!(["plain"]);
        let s = serving(plain);
        assert!(authorization_server(&s.url).unwrap_err().contains("S256"));
        let mut no_token = good;
        no_token["token_endpoint"] = json!("ftp://x");
        let s = serving(no_token);
        assert!(authorization_server(&s.url)
            .unwrap_err()
            .contains("token_endpoint"));

        let prm = json!({"resource": "{base}/mcp", "authorization_servers": ["https://auth.example"],
            "scopes_supported": ["read"]});
        let s = serving(prm);
        let (issuer, scopes) = protected_resource(&format!("{}/mcp", s.url), &Challenge::default()).unwrap();
        assert_eq!(
            (issuer.as_str(), scopes),
            ("https://auth.example", vec!["read".to_string()])
        );
        let e = protected_resource(&format!("{}/other", s.url), &Challenge::default()).unwrap_err();
        assert!(e.contains("another resource"), "{e}");
        // No metadata at all (MCP 2025-03-26): the server is its own authorization server.
        let none = aegis_e2e::http::Server::start(|_, resp| resp.send(404, &[], b""));
        let (issuer, _) = protected_resource(&format!("{}/mcp", none.url), &Challenge::default()).unwrap();
        assert_eq!(issuer, none.url);
    }

    proptest! {
        /// Any header is read without a panic, and a quoted value comes back whole.
        #[test]
        fn any_header_is_read_and_quoted_values_survive(noise in "\\PC{0,60}", value in "[ -~]{0,40}") {
            let _ = Challenge::parse(&noise);
            let quoted = value.replace('\\', "\\\\").replace('"', "\\\"");
            let c = Challenge::parse(&format!("Bearer scope=\"{quoted}\", error=x"));
            prop_assert_eq!(c.scope.as_deref(), Some(value.as_str()));
            prop_assert_eq!(c.error.as_deref(), Some("x"));
        }
    }
}
