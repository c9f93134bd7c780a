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
//! Steps: the server's 401 leads to its authorization server ([`crate::oauth_discovery`]);
//! the client is the one configured (`oauth.client_id`), else the one registered with that
//! issuer before, else one registered now (RFC 7591); the scopes are the configured ones,
//! else those the refusal asked for (with those granted before, for a step-up), else the
//! server's.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::elicit::{Heard, Unanswered, User};
use crate::oauth_discovery::{
    authorization_server, canonical, clean, protected_resource, Challenge, Issuer, MAX_ANSWER,
    REQUEST_TIMEOUT,
};
use crate::oauth_store::{Client, Grant, Store};

/// Where the authorization server sends the browser unless agent.json says otherwise: a
/// loopback address (OAuth 2.1 §8.4.2), so nothing of the code leaves the user's device
/// unless they send it.
pub const REDIRECT_URI: &str = "http://127.0.0.1:33418/callback";
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
         {}\n\n{}.\n\nOpen it and allow access. Your browser then goes to an address \
         starting with {redirect}, which may not load: copy that whole address and send it \
         here. /decline to skip.",
        crate::elicit::link(page),
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
    let resp = post_form(endpoint, form, client)
        .map_err(|e| TokenError::failed(format!("the token request failed: {e}")))?;
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
    // GitHub answers a refusal with 200 and the error in the body.
    if answer["error"].is_string() {
        return Err(TokenError {
            refused: true,
            why: format!("the token request was refused: {}", oauth_error(status, &answer)),
        });
    }
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

/// Revoke `grant` at `endpoint` (RFC 7009) as `client`: its refresh token first (which
/// ends the grant's access tokens too, where the server ties them), then its access token.
/// A token the server no longer knows counts as revoked (it answers 200 for that too).
pub fn revoke(grant: &Grant, client: &Client, endpoint: &str) -> Result<(), String> {
    let refresh = grant.refresh_token.iter().map(|t| (t, "refresh_token"));
    for (token, hint) in refresh.chain([(&grant.access_token, "access_token")]) {
        let form = [("token", token.clone()), ("token_type_hint", hint.to_string())];
        let resp = post_form(endpoint, &form, client)?;
        let status = resp.status().as_u16();
        if status != 200 {
            let answer =
                crate::tools::json_answer(resp, MAX_ANSWER, "the answer", "the authorization server");
            return Err(format!(
                "revoking the {} was refused: {}",
                hint.replace('_', " "),
                oauth_error(status, answer.as_ref().unwrap_or(&Value::Null))
            ));
        }
    }
    Ok(())
}

/// A form POST to the authorization server's `endpoint`, `client` identifying itself.
fn post_form(
    endpoint: &str,
    form: &[(&str, String)],
    client: &Client,
) -> Result<ureq::http::Response<ureq::Body>, String> {
    let (fields, authorization) = credentials(client);
    let agent = crate::tools::api_agent(endpoint, REQUEST_TIMEOUT);
    let mut req = agent.post(endpoint).header("accept", "application/json");
    if let Some(a) = authorization {
        req = req.header("authorization", a);
    }
    req.send_form(form.iter().chain(&fields).map(|(k, v)| (*k, v.as_str())))
        .map_err(|e| crate::tools::transport(&e))
}

/// An OAuth error answer in words (`invalid_grant: the code expired`).
fn oauth_error(status: u16, answer: &Value) -> String {
    match (answer["error"].as_str(), answer["error_description"].as_str()) {
        (Some(e), Some(d)) => format!("HTTP {status}: {}: {}", clean(e), clean(d)),
        (Some(e), None) => format!("HTTP {status}: {}", clean(e)),
        _ => format!("HTTP {status}"),
    }
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

    fn issuer(iss_supported: bool) -> Issuer {
        Issuer {
            issuer: "https://auth.example.com".into(),
            authorization_endpoint: String::new(),
            token_endpoint: String::new(),
            registration_endpoint: None,
            revocation_endpoint: None,
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
    #[test]
    fn a_refusal_is_one_whatever_its_status_and_body() {
        let client = Client {
            issuer: "i".into(),
            client_id: "c".into(),
            client_secret: None,
            redirect_uri: "r".into(),
            auth_method: None,
        };
        let answering = |status: u16, body: &'static str| {
            aegis_e2e::http::Server::start(move |_, resp| {
                resp.send(status, &[("Content-Type", "application/json")], body.as_bytes())
            })
        };
        let github = answering(
            200,
            r#"{"error":"bad_verification_code","error_description":"The code passed is incorrect or expired."}"#,
        );
        let e = tokens(&github.url, &[], "https://mcp", &client, None).unwrap_err();
        assert!(e.refused);
        assert_eq!(
            e.why,
            "the token request was refused: HTTP 200: bad_verification_code: The code passed is incorrect or expired."
        );
        let plain = answering(401, "Unauthorized");
        let e = tokens(&plain.url, &[], "https://mcp", &client, None).unwrap_err();
        assert!(e.refused, "{}", e.why);
        let down = answering(503, "{}");
        assert!(
            !tokens(&down.url, &[], "https://mcp", &client, None)
                .unwrap_err()
                .refused
        );
        let mac = answering(200, r#"{"access_token":"a","token_type":"mac"}"#);
        let e = tokens(&mac.url, &[], "https://mcp", &client, None).unwrap_err();
        assert!(e.why.contains("not Bearer"), "{}", e.why);
        let ok = answering(
            200,
            r#"{"access_token":"a","token_type":"bearer","expires_in":60}"#,
        );
        let before = now();
        let g = tokens(&ok.url, &[], "https://mcp", &client, Some("read")).unwrap();
        assert_eq!((g.access_token.as_str(), g.scope.as_deref()), ("a", Some("read")));
        assert!((before + 60..=now() + 60).contains(&g.expires_at.unwrap()));
    }

    #[test]
    fn revoking_sends_the_refresh_token_then_the_access_token_and_says_a_refusal() {
        use std::sync::{Arc, Mutex};
        let client = Client {
            issuer: "i".into(),
            client_id: "c1".into(),
            client_secret: None,
            redirect_uri: "r".into(),
            auth_method: None,
        };
        let mut grant = Grant {
            resource: "https://mcp".into(),
            issuer: "i".into(),
            token_endpoint: "t".into(),
            access_token: "at-1".into(),
            refresh_token: Some("rt-1".into()),
            expires_at: None,
            scope: None,
        };
        let seen: Arc<Mutex<Vec<String>>> = Arc::default();
        let answering = |status: u16, body: &'static str| {
            let seen = Arc::clone(&seen);
            aegis_e2e::http::Server::start(move |req, resp| {
                seen.lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&req.body).into_owned());
                resp.send(status, &[("Content-Type", "application/json")], body.as_bytes())
            })
        };
        let ok = answering(200, "");
        assert_eq!(revoke(&grant, &client, &ok.url), Ok(()));
        assert_eq!(
            *seen.lock().unwrap(),
            [
                "token=rt-1&token_type_hint=refresh_token&client_id=c1",
                "token=at-1&token_type_hint=access_token&client_id=c1"
            ]
        );
        seen.lock().unwrap().clear();
        grant.refresh_token = None;
        assert_eq!(revoke(&grant, &client, &ok.url), Ok(()));
        assert_eq!(seen.lock().unwrap().len(), 1, "the access token alone");
        let refused = answering(400, r#"{"error":"unsupported_token_type"}"#);
        assert_eq!(
            revoke(&grant, &client, &refused.url),
            Err("revoking the access token was refused: HTTP 400: unsupported_token_type".into())
        );
        let down = answering(503, "busy");
        assert_eq!(
            revoke(&grant, &client, &down.url),
            Err("revoking the access token was refused: HTTP 503".into())
        );
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
        /// Whatever the user sends, the answer is read without a panic.
        #[test]
        fn any_answer_is_read(said in "\\PC{0,80}") {
            let _ = callback(&said, "s", &issuer(true));
        }
    }
}
