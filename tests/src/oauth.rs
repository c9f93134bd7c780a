//! A stand-in for an OAuth 2.1 authorization server as MCP servers use them (the shape
//! of the MCP SDKs' and of hosted ones): metadata at `/.well-known/oauth-authorization-server`
//! (RFC 8414), client registration (RFC 7591) at `/register`, `/authorize` answering as a
//! user who allows access (a 302 to the client's redirect address with the code, the
//! state and, when it says so in its metadata, `iss`), and `/token` for the code (checked
//! against the client, the redirect address, the PKCE verifier with S256 and the
//! `resource`) and for a refresh token (rotated on use), and `/revoke` (RFC 7009: a
//! refresh token revoked ends its grant's access tokens too; a token of another client
//! is refused, an unknown one taken). Its refusals are OAuth's: 400 with
//! `{"error": "invalid_grant", ...}`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use base64::Engine;
use percent_encoding::percent_decode_str;
use serde_json::{json, Value};

use crate::http::{Request, Responder, Server};

/// One request the server received: method, path, and its query or form parameters.
#[derive(Debug, Clone)]
pub struct AuthSeen {
    pub method: String,
    pub path: String,
    pub params: HashMap<String, String>,
}

#[derive(Default)]
struct Code {
    client_id: String,
    redirect_uri: String,
    challenge: String,
    resource: String,
    scope: String,
}

#[derive(Default)]
pub(crate) struct State {
    seen: Vec<AuthSeen>,
    /// Registered clients and their redirect addresses.
    clients: HashMap<String, Vec<String>>,
    codes: HashMap<String, Code>,
    /// Access tokens: the resource each is for, and its scope.
    access: HashMap<String, (String, String)>,
    /// The refresh token each access token was given with, and its client.
    given_with: HashMap<String, (String, String)>,
    /// Refresh tokens: (client, resource, scope).
    refresh: HashMap<String, (String, String, String)>,
    next: u32,
    /// Revocations wait here until it opens, when set (a slow authorization server).
    revocations: Option<crate::llm::Gate>,
}

impl State {
    fn next(&mut self, what: &str) -> String {
        self.next += 1;
        format!("{what}-{}", self.next)
    }

    fn issue(&mut self, client: &str, resource: &str, scope: &str) -> Value {
        let access = self.next("at");
        let refresh = self.next("rt");
        self.access
            .insert(access.clone(), (resource.to_string(), scope.to_string()));
        self.given_with
            .insert(access.clone(), (refresh.clone(), client.to_string()));
        self.refresh
            .insert(refresh.clone(), (client.into(), resource.into(), scope.into()));
        json!({"access_token": access, "token_type": "Bearer", "expires_in": 3600,
            "refresh_token": refresh, "scope": scope})
    }
}

/// The stand-in.
pub struct FakeAuth {
    server: Server,
    state: Arc<Mutex<State>>,
}

impl FakeAuth {
    /// An authorization server that registers clients and names itself in redirects.
    pub fn start() -> FakeAuth {
        let state: Arc<Mutex<State>> = Arc::default();
        let st = Arc::clone(&state);
        let issuer: Arc<Mutex<String>> = Arc::default();
        let iss = Arc::clone(&issuer);
        let server = Server::start(move |req, resp| {
            let issuer = iss.lock().unwrap().clone();
            handle(&st, &issuer, req, resp)
        });
        *issuer.lock().unwrap() = server.url.clone();
        FakeAuth { server, state }
    }

    /// Its issuer identifier.
    pub fn issuer(&self) -> String {
        self.server.url.clone()
    }

    /// Its state, for a protected server to check tokens with ([`FakeAuth::accepts`]).
    pub(crate) fn shared(&self) -> Arc<Mutex<State>> {
        Arc::clone(&self.state)
    }

    /// The scope of `token` when it is a live access token for `resource` in `state`.
    pub(crate) fn scope_of(state: &Mutex<State>, token: &str, resource: &str) -> Option<String> {
        let st = state.lock().unwrap();
        let (to, scope) = st.access.get(token)?;
        (to == resource).then(|| scope.clone())
    }

    /// End every access token (as expiry or a revocation does); refresh tokens stay.
    pub fn expire_access(&self) {
        self.state.lock().unwrap().access.clear();
    }

    /// End every token, refresh tokens too: only a new sign-in helps.
    pub fn revoke_all(&self) {
        let mut st = self.state.lock().unwrap();
        st.access.clear();
        st.refresh.clear();
    }

    /// Hold every revocation from now on until the gate returned opens (30 s at most), as
    /// a slow or unreachable authorization server does.
    pub fn hold_revocations(&self) -> crate::llm::Gate {
        let gate = crate::llm::Gate::default();
        self.state.lock().unwrap().revocations = Some(gate.clone());
        gate
    }

    /// Everything received so far.
    pub fn seen(&self) -> Vec<AuthSeen> {
        self.state.lock().unwrap().seen.clone()
    }

    /// What a browser does with the sign-in page `url` when its user allows access: the
    /// address it is sent to next (or the page's refusal, `HTTP 400: ...`).
    pub fn browse(url: &str) -> String {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .max_redirects(0)
            .http_status_as_error(false)
            .build()
            .into();
        let resp = agent.get(url).call().expect("the sign-in page answers");
        match resp.headers().get("location") {
            Some(l) => l.to_str().unwrap().to_string(),
            None => format!(
                "HTTP {}: {}",
                resp.status().as_u16(),
                resp.into_body().read_to_string().unwrap_or_default()
            ),
        }
    }
}

/// `a=1&b=x%20y` as pairs.
pub fn decode_params(text: &str) -> HashMap<String, String> {
    text.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            let v = v.replace('+', " ");
            (
                k.to_string(),
                percent_decode_str(&v).decode_utf8_lossy().into_owned(),
            )
        })
        .collect()
}

fn oauth_error(resp: Responder, error: &str, description: &str) {
    resp.json(400, &json!({"error": error, "error_description": description}));
}

fn handle(state: &Mutex<State>, issuer: &str, req: Request, resp: Responder) {
    let (path, query) = req.path.split_once('?').unwrap_or((&req.path, ""));
    let params = match req.method.as_str() {
        "POST" if req.header("content-type").is_some_and(|t| t.contains("form")) => {
            decode_params(&String::from_utf8_lossy(&req.body))
        }
        _ => decode_params(query),
    };
    state.lock().unwrap().seen.push(AuthSeen {
        method: req.method.clone(),
        path: path.to_string(),
        params: params.clone(),
    });
    let get = |k: &str| params.get(k).cloned().unwrap_or_default();
    match (req.method.as_str(), path) {
        ("GET", "/.well-known/oauth-authorization-server") => resp.json(
            200,
            &json!({
                "issuer": issuer,
                "authorization_endpoint": format!("{issuer}/authorize"),
                "token_endpoint": format!("{issuer}/token"),
                "registration_endpoint": format!("{issuer}/register"),
                "revocation_endpoint": format!("{issuer}/revoke"),
                "revocation_endpoint_auth_methods_supported": ["none"],
                "response_types_supported": ["code"],
                "grant_types_supported": ["authorization_code", "refresh_token"],
                "code_challenge_methods_supported": ["S256"],
                "token_endpoint_auth_methods_supported": ["none"],
                "scopes_supported": ["read", "write", "offline_access"],
                "authorization_response_iss_parameter_supported": true,
            }),
        ),
        ("POST", "/register") => {
            let body = req.json();
            let Some(uris) = body["redirect_uris"].as_array().filter(|u| !u.is_empty()) else {
                return oauth_error(resp, "invalid_redirect_uri", "redirect_uris is required");
            };
            let uris: Vec<String> = uris
                .iter()
                .filter_map(|u| u.as_str().map(str::to_string))
                .collect();
            let mut st = state.lock().unwrap();
            let id = st.next("client");
            st.clients.insert(id.clone(), uris.clone());
            resp.json(
                201,
                &json!({"client_id": id, "redirect_uris": uris, "client_name": body["client_name"],
                    "token_endpoint_auth_method": "none", "client_id_issued_at": 1_700_000_000}),
            );
        }
        ("GET", "/authorize") => {
            let registered = state.lock().unwrap().clients.get(&get("client_id")).cloned();
            let redirect = get("redirect_uri");
            // A client or an address it did not register is told on the page, never
            // redirected to (OAuth 2.1 §4.1.2.1).
            if !registered.is_some_and(|uris| uris.contains(&redirect)) {
                return resp.send(
                    400,
                    &[("Content-Type", "text/plain")],
                    b"unknown client or redirect_uri",
                );
            }
            let missing = ["code_challenge", "state", "resource"]
                .into_iter()
                .find(|k| get(k).is_empty());
            let to = if get("response_type") != "code" || get("code_challenge_method") != "S256" {
                format!("{redirect}?error=invalid_request&state={}", get("state"))
            } else if let Some(k) = missing {
                format!(
                    "{redirect}?error=invalid_request&error_description={k}+is+missing&state={}",
                    get("state")
                )
            } else {
                let mut st = state.lock().unwrap();
                let code = st.next("code");
                st.codes.insert(
                    code.clone(),
                    Code {
                        client_id: get("client_id"),
                        redirect_uri: redirect.clone(),
                        challenge: get("code_challenge"),
                        resource: get("resource"),
                        scope: get("scope"),
                    },
                );
                format!("{redirect}?code={code}&state={}", get("state"))
            };
            let to = format!(
                "{to}&iss={}",
                percent_encoding::utf8_percent_encode(issuer, percent_encoding::NON_ALPHANUMERIC)
            );
            resp.send(302, &[("Location", &to)], b"");
        }
        ("POST", "/token") => {
            let mut st = state.lock().unwrap();
            match get("grant_type").as_str() {
                "authorization_code" => {
                    let Some(code) = st.codes.remove(&get("code")) else {
                        return oauth_error(resp, "invalid_grant", "unknown or used code");
                    };
                    let digest = ring::digest::digest(&ring::digest::SHA256, get("code_verifier").as_bytes());
                    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest.as_ref());
                    if code.client_id != get("client_id")
                        || code.redirect_uri != get("redirect_uri")
                        || code.challenge != challenge
                        || code.resource != get("resource")
                    {
                        return oauth_error(resp, "invalid_grant", "the code was issued for another request");
                    }
                    let tokens = st.issue(&code.client_id, &code.resource, &code.scope);
                    resp.json(200, &tokens);
                }
                "refresh_token" => {
                    let Some((client, resource, scope)) = st.refresh.remove(&get("refresh_token")) else {
                        return oauth_error(resp, "invalid_grant", "unknown refresh token");
                    };
                    if client != get("client_id") || resource != get("resource") {
                        return oauth_error(resp, "invalid_grant", "issued to another client or resource");
                    }
                    let tokens = st.issue(&client, &resource, &scope);
                    resp.json(200, &tokens);
                }
                _ => oauth_error(resp, "unsupported_grant_type", "unknown grant_type"),
            }
        }
        ("POST", "/revoke") => {
            let held = state.lock().unwrap().revocations.clone();
            if let Some(gate) = held {
                gate.wait(std::time::Duration::from_secs(30));
            }
            let mut st = state.lock().unwrap();
            let token = get("token");
            let client = match (st.refresh.get(&token), st.given_with.get(&token)) {
                (Some((client, ..)), _) | (None, Some((_, client))) => Some(client.clone()),
                (None, None) => None,
            };
            if client.as_ref().is_some_and(|c| *c != get("client_id")) {
                return resp.json(
                    401,
                    &json!({"error": "invalid_client", "error_description": "the token is another client's"}),
                );
            }
            // A refresh token takes its grant's access tokens with it.
            st.refresh.remove(&token);
            st.access.remove(&token);
            let ended: Vec<String> = st
                .given_with
                .iter()
                .filter(|(_, (refresh, _))| *refresh == token)
                .map(|(access, _)| access.clone())
                .collect();
            for access in ended {
                st.access.remove(&access);
            }
            resp.send(200, &[], b"");
        }
        _ => resp.send(404, &[("Content-Type", "text/plain")], b"Not Found"),
    }
}
