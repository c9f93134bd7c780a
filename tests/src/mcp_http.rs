//! A stand-in for a remote MCP server speaking Streamable HTTP (revision 2025-06-18) at
//! `/mcp`, as the official SDKs' servers answer: a bearer token check (401 with
//! `WWW-Authenticate`), 406 when the client does not accept both JSON and an event stream,
//! a session id given with the `initialize` answer and required afterwards (400 without
//! it, 404 `Session not found` for one it does not know), 400 for an unsupported
//! `MCP-Protocol-Version`, 202 for notifications and responses, `DELETE` to end a session,
//! 405 for `GET` (it offers no stream of its own). With [`FakeMcpHttp::open_sessions_for_anything`],
//! it opens a session for any first request, as some servers do, and answers one that is
//! not `initialize` with a 400 that carries the new session's id.
//!
//! Tools: `echo {text}` (answered in an SSE stream, after a log notification), `add {a, b}`
//! (answered as plain JSON), `ask_ping` (the server pings the client on the stream and
//! says whether the answer came), `ask_user` (the server asks the client its roots and
//! the user for an account on the stream, as `fake-mcp`'s `ask`, and answers what came
//! back within a minute), `hang` (a stream that never answers), `cut` (a stream
//! cut before the answer), `grow` (adds the tool `extra`, saying so on the stream with
//! `notifications/tools/list_changed` before the answer).
//!
//! [`FakeMcpHttp::start_protected`] makes it a protected resource of an authorization
//! server ([`crate::oauth::FakeAuth`]): its metadata (RFC 9728) at
//! `/.well-known/oauth-protected-resource/mcp`, named in the `WWW-Authenticate` of its 401s;
//! `add` then needs the scope `write`, and a token without it gets a 403
//! `insufficient_scope` naming that scope.

use std::collections::HashSet;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

use crate::http::{Request, Responder, Server};

/// One message the server received.
#[derive(Debug, Clone)]
pub struct Seen {
    /// `POST`, `DELETE`, `GET`.
    pub http: String,
    /// The JSON-RPC method, or `response` for the client's answer to the server.
    pub what: String,
    /// The body (JSON-RPC).
    pub body: Value,
    /// `Mcp-Session-Id` sent.
    pub session: Option<String>,
    /// `MCP-Protocol-Version` sent.
    pub protocol: Option<String>,
    /// `Authorization` sent.
    pub auth: Option<String>,
    /// The status answered.
    pub status: u16,
}

#[derive(Default)]
struct State {
    seen: Vec<Seen>,
    sessions: HashSet<String>,
    initialized: HashSet<String>,
    next_session: u32,
    /// Ids of the client's answers to our pings.
    pongs: HashSet<String>,
    /// The client's answers to our requests, by id.
    answers: std::collections::HashMap<String, Value>,
    /// `grow` was called: `extra` is listed.
    grown: bool,
    /// A first request of any method opens a session.
    opens_for_anything: bool,
}

impl State {
    /// A new session: its id (`sess-1`, `sess-2`, ...).
    fn open_session(&mut self) -> String {
        self.next_session += 1;
        let id = format!("sess-{}", self.next_session);
        self.sessions.insert(id.clone());
        id
    }
}

/// The stand-in.
pub struct FakeMcpHttp {
    server: Server,
    state: Arc<(Mutex<State>, Condvar)>,
}

const TOOLS: [(&str, &str); 7] = [
    ("echo", "Echo the text back"),
    ("add", "Add two numbers"),
    ("ask_ping", "Pings the client first"),
    ("ask_user", "Asks the user first"),
    ("hang", "Never answers"),
    ("cut", "Cuts the stream"),
    ("grow", "Adds a tool"),
];

fn rpc_error(resp: Responder, status: u16, code: i64, message: &str) {
    resp.json(
        status,
        &json!({"jsonrpc": "2.0", "error": {"code": code, "message": message}, "id": null}),
    );
}

fn sse_event(msg: &Value) -> Vec<u8> {
    format!("event: message\ndata: {msg}\n\n").into_bytes()
}

/// The scope of a live token, `None` for any other.
type ScopeOf = dyn Fn(&str) -> Option<String> + Send + Sync;

/// Who may use the server.
enum Guard {
    Anyone,
    Token(&'static str),
    /// Tokens of the authorization server at `issuer` that `valid` accepts (it gives
    /// their scope).
    OAuth {
        issuer: String,
        valid: Box<ScopeOf>,
    },
}

const METADATA_PATH: &str = "/.well-known/oauth-protected-resource/mcp";

impl FakeMcpHttp {
    /// Accept requests with `Authorization: Bearer TOKEN` only (`None`: no check).
    pub fn start(token: Option<&'static str>) -> FakeMcpHttp {
        FakeMcpHttp::guarded(token.map_or(Guard::Anyone, Guard::Token))
    }

    /// Accept the tokens of the authorization server `auth` issued for this server.
    pub fn start_protected(auth: &crate::oauth::FakeAuth) -> FakeMcpHttp {
        // The resource is known once the port is: the checker asks for it then.
        let resource: Arc<Mutex<String>> = Arc::default();
        let res = Arc::clone(&resource);
        let st = Arc::clone(&auth.shared());
        let fake = FakeMcpHttp::guarded(Guard::OAuth {
            issuer: auth.issuer(),
            valid: Box::new(move |token| crate::oauth::FakeAuth::scope_of(&st, token, &res.lock().unwrap())),
        });
        *resource.lock().unwrap() = fake.url();
        fake
    }

    fn guarded(guard: Guard) -> FakeMcpHttp {
        let state: Arc<(Mutex<State>, Condvar)> = Arc::default();
        let st = Arc::clone(&state);
        let base: Arc<Mutex<String>> = Arc::default();
        let b = Arc::clone(&base);
        let server = Server::start_nodelay(move |req: Request, resp: Responder| {
            // Not held while a request is served: several are at once (a stream, and the
            // client's answer to what the server asked on it).
            let base = b.lock().unwrap().clone();
            handle(&st, &guard, &base, req, resp)
        });
        *base.lock().unwrap() = server.url.clone();
        FakeMcpHttp { server, state }
    }

    /// The endpoint.
    pub fn url(&self) -> String {
        format!("{}/mcp", self.server.url)
    }

    /// Everything received so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.state.0.lock().unwrap().seen.clone()
    }

    /// Open a session for any first request, not only `initialize`.
    pub fn open_sessions_for_anything(&self) {
        self.state.0.lock().unwrap().opens_for_anything = true;
    }

    /// The sessions open now.
    pub fn sessions(&self) -> Vec<String> {
        let mut open: Vec<String> = self.state.0.lock().unwrap().sessions.iter().cloned().collect();
        open.sort();
        open
    }

    /// Forget every session, as a restarted server does.
    pub fn forget_sessions(&self) {
        let mut st = self.state.0.lock().unwrap();
        st.sessions.clear();
        st.initialized.clear();
    }
}

fn handle(state: &(Mutex<State>, Condvar), guard: &Guard, base: &str, req: Request, resp: Responder) {
    let body = req.json();
    let session = req.header("mcp-session-id").map(str::to_string);
    let what = match (body["method"].as_str(), body.get("id")) {
        (Some(m), _) => m.to_string(),
        (None, Some(_)) => "response".to_string(),
        (None, None) => String::new(),
    };
    let record = |status: u16| {
        let (lock, cvar) = state;
        let mut st = lock.lock().unwrap();
        st.seen.push(Seen {
            http: req.method.clone(),
            what: what.clone(),
            body: body.clone(),
            session: session.clone(),
            protocol: req.header("mcp-protocol-version").map(str::to_string),
            auth: req.header("authorization").map(str::to_string),
            status,
        });
        if what == "response" {
            if let Some(id) = body["id"].as_str() {
                st.pongs.insert(id.to_string());
                st.answers.insert(id.to_string(), body["result"].clone());
            }
        }
        cvar.notify_all();
    };
    if let (Guard::OAuth { issuer, .. }, "GET", METADATA_PATH) =
        (guard, req.method.as_str(), req.path.as_str())
    {
        record(200);
        return resp.json(
            200,
            &json!({"resource": format!("{base}/mcp"), "authorization_servers": [issuer],
                "scopes_supported": ["read"], "bearer_methods_supported": ["header"]}),
        );
    }
    if req.path != "/mcp" {
        record(404);
        return resp.send(404, &[("Content-Type", "text/plain")], b"Not Found");
    }
    let bearer = req
        .header("authorization")
        .and_then(|a| a.strip_prefix("Bearer "));
    let (allowed, challenge) = match guard {
        Guard::Anyone => (true, String::new()),
        Guard::Token(t) => (bearer == Some(*t), "Bearer error=\"invalid_token\"".to_string()),
        Guard::OAuth { valid, .. } => {
            let scope = bearer.and_then(valid);
            let adding = what == "tools/call" && body["params"]["name"] == "add";
            if adding
                && scope
                    .as_ref()
                    .is_some_and(|s| !s.split(' ').any(|s| s == "write"))
            {
                record(403);
                let challenge = format!(
                    "Bearer error=\"insufficient_scope\", scope=\"write\", resource_metadata=\"{base}{METADATA_PATH}\""
                );
                let body = json!({"error": "insufficient_scope", "error_description": "add needs write"});
                return resp.send(
                    403,
                    &[
                        ("Content-Type", "application/json"),
                        ("WWW-Authenticate", &challenge),
                    ],
                    body.to_string().as_bytes(),
                );
            }
            (
                scope.is_some(),
                format!(
                    "Bearer error=\"invalid_token\", resource_metadata=\"{base}{METADATA_PATH}\", scope=\"read\""
                ),
            )
        }
    };
    if !allowed {
        record(401);
        let body = json!({"error": "invalid_token", "error_description": "Missing or invalid access token"});
        return resp.send(
            401,
            &[
                ("Content-Type", "application/json"),
                ("WWW-Authenticate", &challenge),
            ],
            body.to_string().as_bytes(),
        );
    }
    let known = |s: &Option<String>| {
        s.as_ref()
            .is_some_and(|s| state.0.lock().unwrap().sessions.contains(s))
    };
    match req.method.as_str() {
        "DELETE" => {
            let status = if known(&session) { 200 } else { 404 };
            if let Some(s) = &session {
                state.0.lock().unwrap().sessions.remove(s);
            }
            record(status);
            return resp.send(status, &[], b"");
        }
        "POST" => {}
        _ => {
            record(405);
            return rpc_error(resp, 405, -32000, "Method not allowed.");
        }
    }
    let accept = req.header("accept").unwrap_or("");
    if !(accept.contains("application/json") && accept.contains("text/event-stream")) {
        record(406);
        let msg = "Not Acceptable: Client must accept both application/json and text/event-stream";
        return rpc_error(resp, 406, -32000, msg);
    }
    if what == "initialize" {
        let id = state.0.lock().unwrap().open_session();
        record(200);
        let result = json!({"jsonrpc": "2.0", "id": body["id"], "result": {
            "protocolVersion": "2025-06-18",
            "capabilities": {"tools": {"listChanged": false}},
            "serverInfo": {"name": "fake-remote", "version": "1.0.0"}}});
        return resp.send(
            200,
            &[("Content-Type", "application/json"), ("mcp-session-id", &id)],
            result.to_string().as_bytes(),
        );
    }
    if session.is_none() && state.0.lock().unwrap().opens_for_anything {
        let id = state.0.lock().unwrap().open_session();
        record(400);
        let body = json!({"jsonrpc": "2.0", "id": body["id"],
            "error": {"code": -32600, "message": "Bad Request: Session not initialized"}});
        return resp.send(
            400,
            &[("Content-Type", "application/json"), ("mcp-session-id", &id)],
            body.to_string().as_bytes(),
        );
    }
    if session.is_none() {
        record(400);
        return rpc_error(
            resp,
            400,
            -32000,
            "Bad Request: Mcp-Session-Id header is required",
        );
    }
    if !known(&session) {
        record(404);
        return rpc_error(resp, 404, -32001, "Session not found");
    }
    if let Some(v) = req.header("mcp-protocol-version") {
        if !["2025-06-18", "2025-03-26"].contains(&v) {
            record(400);
            let msg = format!("Bad Request: Unsupported protocol version: {v}");
            return rpc_error(resp, 400, -32000, &msg);
        }
    }
    let sid = session.clone().unwrap_or_default();
    if body.get("id").is_none() || what == "response" {
        if what == "notifications/initialized" {
            state.0.lock().unwrap().initialized.insert(sid);
        }
        record(202);
        return resp.send(202, &[], b"");
    }
    record(200);
    let id = body["id"].clone();
    let answer = |result: Value| json!({"jsonrpc": "2.0", "id": id, "result": result});
    if !state.0.lock().unwrap().initialized.contains(&sid) {
        let msg = json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32002, "message": "Server not initialized"}});
        return resp.json(200, &msg);
    }
    match what.as_str() {
        "tools/list" => {
            let grown = state.0.lock().unwrap().grown;
            let tools: Vec<Value> = TOOLS
                .iter()
                .chain(grown.then_some(&("extra", "Added by grow")))
                .map(|(n, d)| json!({"name": n, "description": d, "inputSchema": {"type": "object", "properties": {}}}))
                .collect();
            resp.json(200, &answer(json!({"tools": tools})))
        }
        "tools/call" => {
            let args = &body["params"]["arguments"];
            let text = |t: String| json!({"content": [{"type": "text", "text": t}], "isError": false});
            let headers = [
                ("Content-Type", "text/event-stream"),
                ("Cache-Control", "no-cache"),
            ];
            match body["params"]["name"].as_str().unwrap_or("") {
                "add" => {
                    let sum = args["a"].as_i64().unwrap_or(0) + args["b"].as_i64().unwrap_or(0);
                    resp.json(200, &answer(text(sum.to_string())))
                }
                "echo" => {
                    let mut s = resp.start_chunked_with(200, &headers);
                    let note = json!({"jsonrpc": "2.0", "method": "notifications/message",
                        "params": {"level": "info", "data": "echoing"}});
                    s.chunk(&sse_event(&note));
                    s.chunk(&sse_event(&answer(text(
                        args["text"].as_str().unwrap_or("").to_string(),
                    ))));
                    s.finish();
                }
                "ask_ping" => {
                    let mut s = resp.start_chunked_with(200, &headers);
                    let ping_id = format!("srv-ping-{id}");
                    s.chunk(&sse_event(
                        &json!({"jsonrpc": "2.0", "id": ping_id, "method": "ping"}),
                    ));
                    let (lock, cvar) = state;
                    let st = lock.lock().unwrap();
                    let (st, _) = cvar
                        .wait_timeout_while(st, Duration::from_secs(5), |st| !st.pongs.contains(&ping_id))
                        .unwrap();
                    let said = if st.pongs.contains(&ping_id) {
                        "pong answered"
                    } else {
                        "no pong"
                    };
                    drop(st);
                    s.chunk(&sse_event(&answer(text(said.to_string()))));
                    s.finish();
                }
                "ask_user" => {
                    let mut s = resp.start_chunked_with(200, &headers);
                    let (roots_id, ask_id) = (format!("srv-roots-{id}"), format!("srv-ask-{id}"));
                    s.chunk(&sse_event(
                        &json!({"jsonrpc": "2.0", "id": roots_id, "method": "roots/list"}),
                    ));
                    s.chunk(&sse_event(&json!({"jsonrpc": "2.0", "id": ask_id,
                        "method": "elicitation/create", "params": {"message": "Which account?",
                            "requestedSchema": {"type": "object", "properties": {
                                "account": {"type": "string"},
                                "plan": {"type": "string", "enum": ["free", "pro"], "default": "free"}},
                            "required": ["account"]}}})));
                    let (lock, cvar) = state;
                    let st = lock.lock().unwrap();
                    let (st, _) = cvar
                        .wait_timeout_while(st, Duration::from_secs(60), |st| {
                            !(st.answers.contains_key(&ask_id) && st.answers.contains_key(&roots_id))
                        })
                        .unwrap();
                    let (user, roots) = (
                        st.answers.get(&ask_id).cloned().unwrap_or_default(),
                        st.answers.get(&roots_id).cloned().unwrap_or_default(),
                    );
                    drop(st);
                    let said = match user["action"].as_str() {
                        Some("accept") => format!(
                            "account {}, plan {}",
                            user["content"]["account"].as_str().unwrap_or("?"),
                            user["content"]["plan"].as_str().unwrap_or("?")
                        ),
                        Some(other) => other.to_string(),
                        None => "no answer".to_string(),
                    };
                    let roots = roots["roots"][0]["uri"].as_str().unwrap_or("none").to_string();
                    s.chunk(&sse_event(&answer(text(format!("{said}; roots {roots}")))));
                    s.finish();
                }
                "hang" => {
                    let mut s = resp.start_chunked_with(200, &headers);
                    // Keep-alive comments until the client goes (at most a minute).
                    for _ in 0..600 {
                        if !s.chunk(b": keep-alive\n\n") {
                            return;
                        }
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
                "grow" => {
                    state.0.lock().unwrap().grown = true;
                    let mut s = resp.start_chunked_with(200, &headers);
                    let note = json!({"jsonrpc": "2.0", "method": "notifications/tools/list_changed"});
                    s.chunk(&sse_event(&note));
                    s.chunk(&sse_event(&answer(text("grown".to_string()))));
                    s.finish();
                }
                "extra" if state.0.lock().unwrap().grown => {
                    resp.json(200, &answer(text("extra ran".to_string())))
                }
                "cut" => {
                    let mut s = resp.start_chunked_with(200, &headers);
                    let note = json!({"jsonrpc": "2.0", "method": "notifications/progress",
                        "params": {"progressToken": 1, "progress": 1}});
                    s.chunk(&sse_event(&note));
                    s.cut();
                }
                other => {
                    let msg = json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32602, "message": format!("Unknown tool: {other}")}});
                    resp.json(200, &msg)
                }
            }
        }
        other => {
            let msg = json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32601, "message": format!("Method not found: {other}")}});
            resp.json(200, &msg)
        }
    }
}
