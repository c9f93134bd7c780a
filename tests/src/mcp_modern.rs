//! A stand-in for a remote MCP server of the stateless revision 2026-07-28 only, at `/mcp`,
//! checking what that revision's Streamable HTTP page says a server must check: every
//! request is a `POST` (405 for `GET` and `DELETE`: no stream of its own, no session) whose
//! `MCP-Protocol-Version` header matches `_meta`'s `io.modelcontextprotocol/protocolVersion`,
//! with `clientCapabilities` given, an `Mcp-Method` header matching the method, an
//! `Mcp-Name` matching a call's tool (Base64 between `=?base64?` and `?=` when not plain
//! ASCII), and an `Mcp-Param-{Name}` header for each argument a tool marks with
//! `x-mcp-header`: 400 with `HeaderMismatch` (-32020) when one is missing or differs, 400
//! with `UnsupportedProtocolVersion` (-32022, listing what it speaks) for another version,
//! 404 with -32601 for an unknown method. `initialize` is refused with the versions it
//! speaks. It never gives a session id.
//!
//! Tools: `echo {text}` (answered in an SSE stream), `weather {region, city}` (`region`
//! marked `x-mcp-header: Region`; the answer repeats the header as received), `météo` (a
//! name that needs Base64 in `Mcp-Name`), `bad_mark {n}` (marked on a `number`, which a
//! client must leave out), `hang` (a stream that stays silent, noting when the client closes
//! it), `ask` (`input_required`: an elicitation), `reshape` (renames `weather`'s
//! mark to `Zone` without telling). With [`Speaks::resources`], one resource (below).

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{json, Value};

use crate::http::{Request, Responder, Server};

/// One request received.
#[derive(Debug, Clone)]
pub struct Seen {
    /// HTTP method.
    pub http: String,
    /// JSON-RPC method.
    pub what: String,
    /// The body.
    pub body: Value,
    /// Every header, names in lower case.
    pub headers: std::collections::HashMap<String, String>,
    /// The status answered.
    pub status: u16,
}

#[derive(Default)]
struct State {
    seen: Vec<Seen>,
    /// `reshape` was called: `weather`'s mark is `Zone`.
    reshaped: bool,
    /// When the client closed a `hang` stream.
    hang_closed: Option<Instant>,
}

/// The stand-in.
pub struct FakeMcpModern {
    server: Server,
    state: Arc<(Mutex<State>, Condvar)>,
}

/// Settings of one stand-in.
#[derive(Clone)]
pub struct Speaks {
    /// The versions it supports (only `2026-07-28` by default).
    pub versions: Vec<&'static str>,
    /// The `ttlMs` of its tool list.
    pub ttl_ms: u64,
    /// It has resources: `docs://café/menu` (read with its URI in `Mcp-Name`, in Base64),
    /// and no templates (`resources/templates/list` is an unknown method).
    pub resources: bool,
}

impl Default for Speaks {
    fn default() -> Speaks {
        Speaks {
            versions: vec!["2026-07-28"],
            ttl_ms: 3_600_000,
            resources: false,
        }
    }
}

impl FakeMcpModern {
    /// A server as `speaks` says.
    pub fn start(speaks: Speaks) -> FakeMcpModern {
        let state: Arc<(Mutex<State>, Condvar)> = Arc::default();
        let st = Arc::clone(&state);
        let server =
            Server::start_nodelay(move |req: Request, resp: Responder| handle(&st, &speaks, req, resp));
        FakeMcpModern { server, state }
    }

    /// The endpoint.
    pub fn url(&self) -> String {
        format!("{}/mcp", self.server.url)
    }

    /// Everything received so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.state.0.lock().unwrap().seen.clone()
    }

    /// When the client closed the stream of a `hang` call, waiting up to `timeout` for it.
    pub fn hang_closed(&self, timeout: Duration) -> Option<Instant> {
        let (lock, cvar) = &*self.state;
        let st = lock.lock().unwrap();
        let (st, _) = cvar
            .wait_timeout_while(st, timeout, |st| st.hang_closed.is_none())
            .unwrap();
        st.hang_closed
    }
}

fn error(resp: Responder, status: u16, id: &Value, code: i64, message: &str, data: Option<Value>) {
    let mut e = json!({"code": code, "message": message});
    if let Some(d) = data {
        e["data"] = d;
    }
    resp.json(status, &json!({"jsonrpc": "2.0", "id": id, "error": e}));
}

fn decoded(header: &str) -> Option<String> {
    match header
        .strip_prefix("=?base64?")
        .and_then(|h| h.strip_suffix("?="))
    {
        Some(b64) => String::from_utf8(base64::engine::general_purpose::STANDARD.decode(b64).ok()?).ok(),
        None => Some(header.to_string()),
    }
}

fn tools(reshaped: bool) -> Vec<Value> {
    let mark = if reshaped { "Zone" } else { "Region" };
    let plain = |name: &str, d: &str| json!({"name": name, "description": d, "inputSchema": {"type": "object", "properties": {}}});
    vec![
        json!({"name": "echo", "description": "Echo the text back", "inputSchema": {"type": "object",
            "properties": {"text": {"type": "string"}}}}),
        json!({"name": "weather", "description": "The weather of a city", "inputSchema": {"type": "object",
            "properties": {"region": {"type": "string", "x-mcp-header": mark}, "city": {"type": "string"}}}}),
        plain("météo", "A name outside plain ASCII"),
        json!({"name": "bad_mark", "description": "Marked on a number", "inputSchema": {"type": "object",
            "properties": {"n": {"type": "number", "x-mcp-header": "N"}}}}),
        plain("hang", "Never answers"),
        plain("ask", "Asks the user first"),
        plain("reshape", "Renames weather's header"),
    ]
}

fn handle(state: &(Mutex<State>, Condvar), speaks: &Speaks, req: Request, resp: Responder) {
    let body = req.json();
    let what = body["method"].as_str().unwrap_or("").to_string();
    let id = body.get("id").cloned().unwrap_or(Value::Null);
    let record = |status: u16| {
        let (lock, cvar) = state;
        lock.lock().unwrap().seen.push(Seen {
            http: req.method.clone(),
            what: what.clone(),
            body: body.clone(),
            headers: req.headers.clone(),
            status,
        });
        cvar.notify_all();
    };
    if req.method != "POST" {
        record(405);
        return resp.send(405, &[("Allow", "POST")], b"");
    }
    let accept = req.header("accept").unwrap_or("");
    if !(accept.contains("application/json") && accept.contains("text/event-stream")) {
        record(406);
        return error(
            resp,
            406,
            &id,
            -32600,
            "Not Acceptable: accept application/json and text/event-stream",
            None,
        );
    }
    if what == "initialize" {
        record(400);
        let message = format!(
            "initialize is not part of MCP {}: this server speaks {}",
            speaks.versions[0],
            speaks.versions.join(", ")
        );
        return error(
            resp,
            400,
            &id,
            -32022,
            &message,
            Some(json!({"supported": speaks.versions})),
        );
    }
    let meta = &body["params"]["_meta"];
    let version = meta["io.modelcontextprotocol/protocolVersion"].as_str();
    let header = req.header("mcp-protocol-version");
    if header.is_none() || header != version {
        record(400);
        let m = format!("Header mismatch: MCP-Protocol-Version {header:?}, _meta {version:?}");
        return error(resp, 400, &id, -32020, &m, None);
    }
    if !speaks.versions.contains(&version.unwrap_or("")) {
        record(400);
        let data = json!({"supported": speaks.versions, "requested": version});
        return error(resp, 400, &id, -32022, "Unsupported protocol version", Some(data));
    }
    if !meta["io.modelcontextprotocol/clientCapabilities"].is_object() {
        record(400);
        return error(
            resp,
            400,
            &id,
            -32602,
            "Invalid params: clientCapabilities missing",
            None,
        );
    }
    if req.header("mcp-method") != Some(what.as_str()) {
        record(400);
        let m = format!(
            "Header mismatch: Mcp-Method {:?} does not match body value {what:?}",
            req.header("mcp-method")
        );
        return error(resp, 400, &id, -32020, &m, None);
    }
    let name = body["params"]["name"].as_str().unwrap_or("").to_string();
    let reshaped = state.0.lock().unwrap().reshaped;
    if what == "resources/read" {
        let uri = body["params"]["uri"].as_str().unwrap_or("");
        let given = req.header("mcp-name").and_then(decoded);
        if given.as_deref() != Some(uri) {
            record(400);
            let m = format!("Header mismatch: Mcp-Name {given:?} does not match body value {uri:?}");
            return error(resp, 400, &id, -32020, &m, None);
        }
    }
    if what == "tools/call" {
        let given = req.header("mcp-name").and_then(decoded);
        if given.as_deref() != Some(name.as_str()) {
            record(400);
            let m = format!("Header mismatch: Mcp-Name {given:?} does not match body value {name:?}");
            return error(resp, 400, &id, -32020, &m, None);
        }
        if name == "weather" {
            let mark = if reshaped { "zone" } else { "region" };
            let given = req.header(&format!("mcp-param-{mark}")).and_then(decoded);
            let value = body["params"]["arguments"]["region"].as_str().map(str::to_string);
            if given != value {
                record(400);
                let m = format!(
                    "Header mismatch: Mcp-Param-{mark} {given:?} does not match body value {value:?}"
                );
                return error(resp, 400, &id, -32020, &m, None);
            }
        }
    }
    let complete = |mut r: Value| {
        r["resultType"] = json!("complete");
        json!({"jsonrpc": "2.0", "id": id, "result": r})
    };
    let text = |t: String| json!({"content": [{"type": "text", "text": t}], "isError": false});
    match what.as_str() {
        "server/discover" => {
            record(200);
            let mut capabilities = json!({"tools": {}});
            if speaks.resources {
                capabilities["resources"] = json!({});
            }
            resp.json(200, &complete(json!({"supportedVersions": speaks.versions, "capabilities": capabilities,
                "_meta": {"io.modelcontextprotocol/serverInfo": {"name": "fake-modern", "version": "2.0.0"}}})));
        }
        "resources/list" if speaks.resources => {
            record(200);
            resp.json(
                200,
                &complete(json!({"resources": [{"uri": "docs://café/menu", "name": "menu"}],
                "ttlMs": speaks.ttl_ms, "cacheScope": "private"})),
            );
        }
        "resources/read" if speaks.resources => {
            record(200);
            let uri = body["params"]["uri"].as_str().unwrap_or("");
            if uri == "docs://café/menu" {
                resp.json(
                    200,
                    &complete(
                        json!({"contents": [{"uri": uri, "mimeType": "text/plain", "text": "soup, bread"}],
                    "ttlMs": speaks.ttl_ms, "cacheScope": "private"}),
                    ),
                );
            } else {
                error(
                    resp,
                    200,
                    &id,
                    -32602,
                    "Resource not found",
                    Some(json!({"uri": uri})),
                );
            }
        }
        "tools/list" => {
            record(200);
            resp.json(
                200,
                &complete(json!({"tools": tools(reshaped), "ttlMs": speaks.ttl_ms, "cacheScope": "private"})),
            );
        }
        "tools/call" => {
            record(200);
            let args = &body["params"]["arguments"];
            let sse = [
                ("Content-Type", "text/event-stream"),
                ("Cache-Control", "no-cache"),
            ];
            match name.as_str() {
                "echo" => {
                    let mut s = resp.start_chunked_with(200, &sse);
                    let answer = complete(text(args["text"].as_str().unwrap_or("").to_string()));
                    s.chunk(format!("event: message\ndata: {answer}\n\n").as_bytes());
                    s.finish();
                }
                "weather" => {
                    let mark = if reshaped { "zone" } else { "region" };
                    let h = req.header(&format!("mcp-param-{mark}")).unwrap_or("").to_string();
                    let city = args["city"].as_str().unwrap_or("?");
                    resp.json(200, &complete(text(format!("sunny in {city} (header {h})"))));
                }
                "météo" => resp.json(200, &complete(text("ensoleillé".into()))),
                "reshape" => {
                    state.0.lock().unwrap().reshaped = true;
                    resp.json(200, &complete(text("reshaped".into())));
                }
                // Multi round-trip: asks the user, then answers what the retry carries,
                // which must echo the state it was given.
                "ask" => match &body["params"]["inputResponses"]["who"] {
                    Value::Null => resp.json(
                        200,
                        &json!({"jsonrpc": "2.0", "id": id, "result": {"resultType": "input_required",
                        "requestState": "st-1",
                        "inputRequests": {"who": {"method": "elicitation/create", "params": {"mode": "form",
                            "message": "Which account?", "requestedSchema": {"type": "object",
                            "properties": {"account": {"type": "string"}}, "required": ["account"]}}}}}}),
                    ),
                    _ if body["params"]["requestState"] != "st-1" => {
                        error(resp, 200, &id, -32602, "requestState missing or altered", None)
                    }
                    who => resp.json(
                        200,
                        &complete(text(format!(
                            "{} {}",
                            who["action"].as_str().unwrap_or("?"),
                            who["content"]["account"].as_str().unwrap_or("-")
                        ))),
                    ),
                },
                "hang" => {
                    // Silent, as a server is while it works: the client's close is all
                    // that can tell it the call was given up on.
                    let s = resp.start_chunked_with(200, &sse);
                    if s.closed_within(Duration::from_secs(60)) {
                        let (lock, cvar) = state;
                        lock.lock().unwrap().hang_closed = Some(Instant::now());
                        cvar.notify_all();
                    }
                }
                other => error(resp, 200, &id, -32602, &format!("Unknown tool: {other}"), None),
            }
        }
        other => {
            record(404);
            error(
                resp,
                404,
                &id,
                -32601,
                &format!("Method not found: {other}"),
                None,
            );
        }
    }
}
