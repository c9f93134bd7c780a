//! Signing in to a remote MCP server that asks for it (MCP authorization, revisions
//! 2025-06-18 to 2026-07-28: OAuth 2.1 with PKCE, RFC 9728, RFC 8414, RFC 7591, RFC 8707,
//! RFC 9207).
//!
//! The agent has no browser and usually no address a browser could reach, so the user
//! signs in from theirs: the chat gets the authorization page's address; after they allow
//! access, the authorization server sends their browser to the redirect address (a
//! loopback one by default, which does not load), and they send that address back. Its
//! `code` is taken only with the `state` this sign-in made, and traded for tokens with the
//! PKCE verifier only the agent holds, so an address seen by someone else is of no use.
//!
//! Steps: the server's 401 names its metadata (or the well-known addresses are tried),
//! which names the authorization server; its metadata (RFC 8414, else OpenID Connect
//! discovery) must name itself as the issuer and offer S256; the client is the one
//! configured (`oauth.client_id`), else the one registered with that issuer before, else
//! one registered now (RFC 7591); the scopes are the configured ones, else those the 401
//! asked for (with those granted before, for a step-up), else the server's.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::elicit::{Heard, Unanswered, User};
use crate::oauth_store::{Client, Grant, Store};

/// Where the authorization server sends the browser unless agent.json says otherwise: a
/// loopback address (OAuth 2.1 §8.4.2), so nothing of the code leaves the user's device
/// unless they send it.
pub const REDIRECT_URI: &str = "http://127.0.0.1:33418/callback";
/// Longest wait for one metadata, registration or token request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest metadata or token answer read.
const MAX_ANSWER: u64 = 256 * 1024;
/// Answers that are not the address taken before the sign-in is given up.
const MAX_TRIES: usize = 3;
/// The name the agent registers under.
const CLIENT_NAME: &str = "Aegis agent";

/// Everything but the unreserved characters is escaped in a query value.
const QUERY: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// A server's sign-in settings (agent.json `mcp.NAME.oauth`), all optional.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OAuthConfig {
    /// A client registered with the authorization server beforehand (some, GitHub's, do
    /// not register clients on the fly).
    #[serde(default)]
    pub client_id: Option<String>,
    /// Its secret, if it has one; `${VAR}` takes a variable's value.
    #[serde(default)]
    pub client_secret: Option<String>,
    /// The scopes to ask for, space-separated, instead of those the server names.
    #[serde(default)]
    pub scope: Option<String>,
    /// Where the browser goes after the user allowed access (registered with the client).
    #[serde(default)]
    pub redirect_uri: Option<String>,
}

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

/// Why a sign-in did not give a grant.
#[derive(Debug, Clone, PartialEq)]
pub enum SignInError {
    /// The user said no (`/decline`), or the authorization server says they did.
    Declined(String),
    /// The user stopped the reply, or did not answer in time.
    Unanswered(Unanswered),
    /// Something on the way failed; the text says what.
    Failed(String),
}

/// Why a token request gave no tokens.
#[derive(Debug)]
pub struct TokenError {
    /// The authorization server said no (the grant is over), rather than could not be
    /// reached or read.
    pub refused: bool,
    pub why: String,
}

impl TokenError {
    fn failed(why: impl Into<String>) -> TokenError {
        TokenError {
            refused: false,
            why: why.into(),
        }
    }
}

/// One sign-in: the server, where it is, and how.
pub struct SignIn<'a> {
    /// Its name in agent.json.
    pub server: &'a str,
    /// Its endpoint (expanded).
    pub url: &'a str,
    /// Its `oauth` settings (the secret expanded).
    pub config: &'a OAuthConfig,
    /// What its refusal said.
    pub challenge: &'a Challenge,
    /// The scopes granted before (kept in a step-up).
    pub granted: Option<&'a str>,
    /// Where the clients registered with each issuer are kept.
    pub store: &'a Store,
}

/// An authorization server as its metadata describes it.
#[derive(Debug, Clone, PartialEq)]
struct Issuer {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
    registration_endpoint: Option<String>,
    iss_supported: bool,
    offline_access: bool,
}

/// Sign in to the server as `s` says, asking `user`: the grant.
pub fn sign_in(s: &SignIn, user: &dyn User) -> Result<Grant, SignInError> {
    let failed = SignInError::Failed;
    let (issuer_url, scopes_supported) = protected_resource(s.url, s.challenge).map_err(failed)?;
    let issuer = authorization_server(&issuer_url).map_err(failed)?;
    let redirect = s.config.redirect_uri.as_deref().unwrap_or(REDIRECT_URI);
    let client = match (&s.config.client_id, s.store.client(&issuer.issuer)) {
        (Some(id), _) => Client {
            issuer: issuer.issuer.clone(),
            client_id: id.clone(),
            client_secret: s.config.client_secret.clone(),
            redirect_uri: redirect.to_string(),
            auth_method: None,
        },
        (None, Some(c)) if c.redirect_uri == redirect => c,
        (None, _) => {
            let c = register(&issuer, redirect).map_err(failed)?;
            // Kept at once: a sign-in the user declines still need not register again.
            s.store.keep_client(&c);
            c
        }
    };
    let scope = scope(s, &scopes_supported, issuer.offline_access);
    let verifier = random_text(32).map_err(failed)?;
    let state = random_text(16).map_err(failed)?;
    let mut params = vec![
        ("response_type", "code".to_string()),
        ("client_id", client.client_id.clone()),
        ("redirect_uri", client.redirect_uri.clone()),
        ("code_challenge", challenge_of(&verifier)),
        ("code_challenge_method", "S256".to_string()),
        ("state", state.clone()),
        ("resource", canonical(s.url)),
    ];
    if let Some(scope) = &scope {
        params.push(("scope", scope.clone()));
    }
    let page = with_query(&issuer.authorization_endpoint, &params);
    let asked = question(s.server, &page, &client.redirect_uri);
    let mut q = asked.clone();
    let code = 'asking: {
        for _ in 0..MAX_TRIES {
            let said = match user.ask_privately(&q, &["/decline".to_string()]) {
                Heard::Said(said) => said,
                Heard::Stopped => return Err(SignInError::Unanswered(Unanswered::Stopped)),
                Heard::Silent => return Err(SignInError::Unanswered(Unanswered::Silent)),
            };
            if said.trim() == "/decline" {
                return Err(SignInError::Declined("the user declined to sign in".into()));
            }
            match callback(&said, &state, &issuer) {
                Ok(code) => break 'asking code,
                Err(Callback::Refused(why)) => return Err(SignInError::Declined(why)),
                Err(Callback::Again(why)) => q = format!("⚠️ {why}\n\n{asked}"),
            }
        }
        return Err(failed(format!(
            "no address with the sign-in's code came in {MAX_TRIES} answers"
        )));
    };
    let form = vec![
        ("grant_type", "authorization_code".to_string()),
        ("code", code),
        ("redirect_uri", client.redirect_uri.clone()),
        ("code_verifier", verifier),
        ("resource", canonical(s.url)),
    ];
    let grant =
        tokens(&issuer.token_endpoint, &form, s.url, &client, scope.as_deref()).map_err(|e| failed(e.why))?;
    log::info!("MCP [{}]: signed in with {}", s.server, issuer.issuer);
    Ok(grant)
}

/// A new access token for `grant` from its refresh token, as `client`.
pub fn refresh(grant: &Grant, client: &Client) -> Result<Grant, TokenError> {
    let refresh = grant
        .refresh_token
        .as_deref()
        .ok_or_else(|| TokenError::failed("no refresh token was given"))?;
    let form = vec![
        ("grant_type", "refresh_token".to_string()),
        ("refresh_token", refresh.to_string()),
        ("resource", canonical(&grant.resource)),
    ];
    let mut new = tokens(
        &grant.token_endpoint,
        &form,
        &grant.resource,
        client,
        grant.scope.as_deref(),
    )?;
    // A server that does not rotate it keeps the one it gave.
    if new.refresh_token.is_none() {
        new.refresh_token = grant.refresh_token.clone();
    }
    if new.scope.is_none() {
        new.scope = grant.scope.clone();
    }
    Ok(new)
}

/// How `client` identifies itself in a token request: form fields, and an
/// `Authorization` header. A public client sends its id alone; one with a secret uses
/// HTTP Basic (which every authorization server must take, RFC 6749 §2.3.1, the id and
/// secret form-encoded first), unless its registration asked for the secret in the body.
fn credentials(client: &Client) -> (Vec<(&'static str, String)>, Option<String>) {
    let Some(secret) = &client.client_secret else {
        return (vec![("client_id", client.client_id.clone())], None);
    };
    if client.auth_method.as_deref() == Some("client_secret_post") {
        let fields = vec![
            ("client_id", client.client_id.clone()),
            ("client_secret", secret.clone()),
        ];
        return (fields, None);
    }
    let encode = |s: &str| utf8_percent_encode(s, QUERY).to_string();
    let pair = format!("{}:{}", encode(&client.client_id), encode(secret));
    let basic = base64::engine::general_purpose::STANDARD.encode(pair);
    (Vec::new(), Some(format!("Basic {basic}")))
}

/// The scopes asked for: configured, else the refusal's (with those granted before),
/// else the server's; `offline_access` added when the issuer offers it, for a refresh
/// token.
fn scope(s: &SignIn, supported: &[String], offline_access: bool) -> Option<String> {
    let mut scopes: Vec<String> = match (&s.config.scope, &s.challenge.scope) {
        (Some(configured), _) => return Some(configured.clone()),
        (None, Some(asked)) => s
            .granted
            .unwrap_or("")
            .split_whitespace()
            .chain(asked.split_whitespace())
            .map(str::to_string)
            .collect(),
        (None, None) => supported.to_vec(),
    };
    if scopes.is_empty() {
        return None;
    }
    if offline_access && !scopes.iter().any(|s| s == "offline_access") {
        scopes.push("offline_access".into());
    }
    let mut seen = std::collections::HashSet::new();
    scopes.retain(|s| seen.insert(s.clone()));
    Some(scopes.join(" "))
}

/// The chat message that asks the user to sign in at `page`.
fn question(server: &str, page: &str, redirect: &str) -> String {
    let host = crate::elicit::host_of(page).unwrap_or_default();
    format!(
        "🔗 The MCP server “{server}” needs you to sign in before its tools can be used:\n\n\
         {page}\n\n{}.\n\nOpen it and allow access. Your browser then goes to an address \
         starting with {redirect}, which may not load: copy that whole address and send it \
         here. /decline to skip.",
        crate::elicit::where_it_is(&host)
    )
}

/// What an answer to the sign-in question gives.
#[derive(Debug, PartialEq)]
enum Callback {
    /// The authorization server says the user refused (or it failed): why.
    Refused(String),
    /// Not the address asked for: why, for the user.
    Again(String),
}

/// The code in the address the user sent back, checked against this sign-in's `state`
/// and, where it says, the issuer (RFC 9207).
fn callback(said: &str, state: &str, issuer: &Issuer) -> Result<String, Callback> {
    let query = said
        .split_whitespace()
        .find(|w| w.contains("code=") || w.contains("error="))
        .map(|w| w.split_once('?').map_or(w, |(_, q)| q))
        .map(|q| q.split('#').next().unwrap_or(""))
        .ok_or_else(|| Callback::Again("That is not the address with the sign-in's code.".into()))?;
    let mut pairs = std::collections::HashMap::new();
    for pair in query.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let v = v.replace('+', " ");
        pairs.insert(
            k.to_string(),
            percent_decode_str(&v).decode_utf8_lossy().into_owned(),
        );
    }
    if pairs.get("state").map(String::as_str) != Some(state) {
        return Err(Callback::Again(
            "That address is not from this sign-in (its state differs): use the link below.".into(),
        ));
    }
    match pairs.get("iss") {
        Some(iss) if *iss != issuer.issuer => {
            return Err(Callback::Again(
                "That address names another authorization server than the one asked: use the link below."
                    .into(),
            ))
        }
        None if issuer.iss_supported => {
            return Err(Callback::Again(
                "That address lacks the authorization server's name (iss): use the link below.".into(),
            ))
        }
        _ => {}
    }
    if let Some(error) = pairs.get("error") {
        let mut why = format!("the authorization server answered {}", clean(error));
        if let Some(d) = pairs.get("error_description").filter(|d| !d.is_empty()) {
            why.push_str(&format!(": {}", clean(d)));
        }
        return Err(Callback::Refused(why));
    }
    pairs
        .remove("code")
        .filter(|c| !c.is_empty())
        .ok_or_else(|| Callback::Again("That address has no code.".into()))
}

/// Text of another party for a message: one line, 200 characters.
fn clean(text: &str) -> String {
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
fn protected_resource(url: &str, challenge: &Challenge) -> Result<(String, Vec<String>), String> {
    let mut last = String::new();
    for candidate in resource_metadata_urls(url, challenge) {
        let meta = match get_json(&candidate) {
            Ok(m) => m,
            Err(e) => {
                log::debug!("protected resource metadata at {candidate}: {e}");
                last = e;
                continue;
            }
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
        return Ok((issuer.to_string(), scopes));
    }
    if challenge.resource_metadata.is_some() {
        return Err(format!("its metadata could not be read: {last}"));
    }
    let (origin, _) = split_origin(url);
    Ok((origin.to_string(), Vec::new()))
}

/// The authorization server at `issuer`, from the first of its metadata addresses that
/// answers; it must name itself `issuer` and offer PKCE with S256.
fn authorization_server(issuer: &str) -> Result<Issuer, String> {
    let mut last = String::new();
    for candidate in issuer_metadata_urls(issuer) {
        let meta = match get_json(&candidate) {
            Ok(m) => m,
            Err(e) => {
                log::debug!("authorization server metadata at {candidate}: {e}");
                last = e;
                continue;
            }
        };
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
        return Ok(Issuer {
            issuer: named.to_string(),
            authorization_endpoint: endpoint("authorization_endpoint")?,
            token_endpoint: endpoint("token_endpoint")?,
            registration_endpoint: endpoint("registration_endpoint").ok(),
            iss_supported: meta["authorization_response_iss_parameter_supported"] == true,
            offline_access,
        });
    }
    Err(format!(
        "the authorization server's metadata could not be read at {issuer}: {last}"
    ))
}

/// A client registered now with the issuer (RFC 7591): public, native, PKCE.
fn register(issuer: &Issuer, redirect: &str) -> Result<Client, String> {
    let Some(endpoint) = &issuer.registration_endpoint else {
        return Err(format!(
            "{} does not register clients on the fly: register one there and give its id as `oauth.client_id`",
            issuer.issuer
        ));
    };
    let body = json!({
        "client_name": CLIENT_NAME,
        "redirect_uris": [redirect],
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "token_endpoint_auth_method": "none",
        "application_type": "native",
    });
    let agent = crate::tools::api_agent(endpoint, REQUEST_TIMEOUT);
    let resp = agent
        .post(endpoint)
        .header("accept", "application/json")
        .content_type("application/json")
        .send(body.to_string())
        .map_err(|e| {
            format!(
                "registering with {} failed: {}",
                issuer.issuer,
                crate::tools::transport(&e)
            )
        })?;
    let status = resp.status().as_u16();
    let answer = crate::tools::json_answer(resp, MAX_ANSWER, "the registration", "the authorization server")?;
    if !(200..300).contains(&status) {
        return Err(format!(
            "registering with {} was refused: {}",
            issuer.issuer,
            oauth_error(status, &answer)
        ));
    }
    let client_id = answer["client_id"]
        .as_str()
        .filter(|c| !c.is_empty())
        .ok_or("the registration's answer has no client_id")?;
    log::info!("registered the agent with {}", issuer.issuer);
    Ok(Client {
        issuer: issuer.issuer.clone(),
        client_id: client_id.to_string(),
        client_secret: answer["client_secret"].as_str().map(str::to_string),
        redirect_uri: redirect.to_string(),
        auth_method: answer["token_endpoint_auth_method"].as_str().map(str::to_string),
    })
}

/// A token request (`form`) and the grant it gives for `resource`.
fn tokens(
    endpoint: &str,
    form: &[(&str, String)],
    resource: &str,
    client: &Client,
    asked_scope: Option<&str>,
) -> Result<Grant, TokenError> {
    let (fields, authorization) = credentials(client);
    let agent = crate::tools::api_agent(endpoint, REQUEST_TIMEOUT);
    let mut req = agent.post(endpoint).header("accept", "application/json");
    if let Some(a) = authorization {
        req = req.header("authorization", a);
    }
    let resp = req
        .send_form(form.iter().chain(&fields).map(|(k, v)| (*k, v.as_str())))
        .map_err(|e| {
            TokenError::failed(format!(
                "the token request failed: {}",
                crate::tools::transport(&e)
            ))
        })?;
    let status = resp.status().as_u16();
    // An error answer need not be JSON; a refusal is one whatever its body.
    let answer = crate::tools::json_answer(resp, MAX_ANSWER, "the tokens", "the authorization server");
    if (400..500).contains(&status) {
        return Err(TokenError {
            refused: true,
            why: format!(
                "the token request was refused: {}",
                oauth_error(status, answer.as_ref().unwrap_or(&Value::Null))
            ),
        });
    }
    let answer = answer.map_err(TokenError::failed)?;
    if status != 200 {
        return Err(TokenError::failed(format!(
            "the token request failed: {}",
            oauth_error(status, &answer)
        )));
    }
    let access = answer["access_token"]
        .as_str()
        .filter(|t| !t.is_empty())
        .ok_or_else(|| TokenError::failed("the token answer has no access_token"))?;
    let kind = answer["token_type"].as_str().unwrap_or("");
    if !kind.eq_ignore_ascii_case("bearer") {
        return Err(TokenError::failed(format!(
            "the token is of type {:?}, not Bearer",
            clean(kind)
        )));
    }
    let expires_at = answer["expires_in"].as_u64().map(|s| now().saturating_add(s));
    Ok(Grant {
        resource: resource.to_string(),
        issuer: client.issuer.clone(),
        token_endpoint: endpoint.to_string(),
        access_token: access.to_string(),
        refresh_token: answer["refresh_token"].as_str().map(str::to_string),
        expires_at,
        scope: answer["scope"]
            .as_str()
            .map(str::to_string)
            .or(asked_scope.map(str::to_string)),
    })
}

/// An OAuth error answer in words (`invalid_grant: the code expired`).
fn oauth_error(status: u16, answer: &Value) -> String {
    match (answer["error"].as_str(), answer["error_description"].as_str()) {
        (Some(e), Some(d)) => format!("HTTP {status}: {}: {}", clean(e), clean(d)),
        (Some(e), None) => format!("HTTP {status}: {}", clean(e)),
        _ => format!("HTTP {status}"),
    }
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

fn is_http_url(u: &str) -> bool {
    u.starts_with("https://") || u.starts_with("http://")
}

/// `base` with `params` added to its query.
fn with_query(base: &str, params: &[(&str, String)]) -> String {
    let mut url = base.to_string();
    let mut sep = if base.contains('?') { '&' } else { '?' };
    for (k, v) in params {
        url.push(sep);
        url.push_str(k);
        url.push('=');
        url.extend(utf8_percent_encode(v, QUERY));
        sep = '&';
    }
    url
}

/// `bytes` random bytes as base64url text (a PKCE verifier, a state).
fn random_text(bytes: usize) -> Result<String, String> {
    use ring::rand::SecureRandom;
    let mut buf = vec![0u8; bytes];
    ring::rand::SystemRandom::new()
        .fill(&mut buf)
        .map_err(|_| "the system gave no random bytes".to_string())?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buf))
}

/// The S256 challenge of a PKCE verifier (RFC 7636 §4.2).
fn challenge_of(verifier: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, verifier.as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest.as_ref())
}

/// Seconds since the epoch.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

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

    fn issuer(iss_supported: bool) -> Issuer {
        Issuer {
            issuer: "https://auth.example.com".into(),
            authorization_endpoint: String::new(),
            token_endpoint: String::new(),
            registration_endpoint: None,
            iss_supported,
            offline_access: false,
        }
    }

    #[test]
    fn only_this_sign_ins_address_gives_its_code() {
        let ok = "http://127.0.0.1:33418/callback?code=a%2Bb+c&state=s1&iss=https%3A%2F%2Fauth.example.com#x";
        assert_eq!(callback(ok, "s1", &issuer(true)), Ok("a+b c".into()));
        assert_eq!(
            callback(&format!("here it is:\n{ok}\nthanks"), "s1", &issuer(false)),
            Ok("a+b c".into()),
            "found among other words"
        );
        assert!(matches!(callback(ok, "s2", &issuer(false)), Err(Callback::Again(w)) if w.contains("state")));
        let other = ok.replace("auth.example.com", "evil.example");
        assert!(
            matches!(callback(&other, "s1", &issuer(false)), Err(Callback::Again(w)) if w.contains("another"))
        );
        let no_iss = "http://x/cb?code=c&state=s1";
        assert_eq!(callback(no_iss, "s1", &issuer(false)), Ok("c".into()));
        assert!(
            matches!(callback(no_iss, "s1", &issuer(true)), Err(Callback::Again(w)) if w.contains("iss"))
        );
        assert_eq!(
            callback(
                "http://x/cb?error=access_denied&error_description=No%0Away&state=s1",
                "s1",
                &issuer(false)
            ),
            Err(Callback::Refused(
                "the authorization server answered access_denied: No way".into()
            ))
        );
        assert!(matches!(
            callback("sure, done", "s1", &issuer(false)),
            Err(Callback::Again(_))
        ));
        assert!(matches!(
            callback("http://x/cb?code=&state=s1", "s1", &issuer(false)),
            Err(Callback::Again(_))
        ));
    }

    #[test]
    fn scopes_come_from_the_config_the_refusal_or_the_server() {
        let config = OAuthConfig::default();
        let challenge = Challenge {
            scope: Some("files:write".into()),
            ..Challenge::default()
        };
        let dir = crate::testutil::TempDir::new("oauth-scope");
        let store = Store::new(dir.path());
        let mut s = SignIn {
            server: "s",
            url: "https://x/mcp",
            config: &config,
            challenge: &challenge,
            granted: Some("files:read files:write"),
            store: &store,
        };
        let supported = vec!["a".to_string(), "b".to_string()];
        assert_eq!(
            scope(&s, &supported, true).as_deref(),
            Some("files:read files:write offline_access")
        );
        let plain = Challenge::default();
        s.challenge = &plain;
        assert_eq!(scope(&s, &supported, false).as_deref(), Some("a b"));
        assert_eq!(
            scope(&s, &[], true),
            None,
            "no scope parameter when nobody names one"
        );
        let configured = OAuthConfig {
            scope: Some("repo".into()),
            ..OAuthConfig::default()
        };
        s.config = &configured;
        assert_eq!(scope(&s, &supported, true).as_deref(), Some("repo"));
    }

    #[test]
    fn the_challenge_is_the_verifiers_sha256_in_base64url() {
        // RFC 7636 appendix B.
        assert_eq!(
            challenge_of("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
        let (a, b) = (random_text(32).unwrap(), random_text(32).unwrap());
        assert_eq!(a.len(), 43);
        assert_ne!(a, b);
        assert_eq!(
            with_query(
                "https://a/authorize?x=1",
                &[("scope", "a b/c".into()), ("s", "é".into())]
            ),
            "https://a/authorize?x=1&scope=a%20b%2Fc&s=%C3%A9"
        );
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

    #[test]
    fn a_secret_goes_in_basic_unless_the_registration_asked_for_the_body() {
        let mut c = Client {
            issuer: "i".into(),
            client_id: "id:1".into(),
            client_secret: None,
            redirect_uri: "r".into(),
            auth_method: None,
        };
        assert_eq!(credentials(&c), (vec![("client_id", "id:1".to_string())], None));
        c.client_secret = Some("s&cret".into());
        // base64("id%3A1:s%26cret")
        assert_eq!(
            credentials(&c),
            (Vec::new(), Some("Basic aWQlM0ExOnMlMjZjcmV0".to_string()))
        );
        c.auth_method = Some("client_secret_post".into());
        assert_eq!(
            credentials(&c),
            (
                vec![
                    ("client_id", "id:1".to_string()),
                    ("client_secret", "s&cret".to_string())
                ],
                None
            )
        );
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

        /// Whatever the user sends, the answer is read without a panic.
        #[test]
        fn any_answer_is_read(said in "\\PC{0,80}") {
            let _ = callback(&said, "s", &issuer(true));
        }
    }
}
