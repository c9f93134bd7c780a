//! A small MCP server (stdio, newline-delimited JSON-RPC, revision 2025-06-18) for the
//! agent's tests. Strict where clients go wrong: it refuses `tools/list` and
//! `tools/call` before `notifications/initialized`, and pages its tool list (two tools
//! per page, `nextCursor`). Tools:
//! - `echo {text}` → the text; `add {a, b}` → the sum;
//! - `fail` → an `isError` result;
//! - `hang` → never answers; `crash` → the process exits at once;
//! - `pid` → its process id (so a test can see it was restarted);
//! - `env {name}` → that environment variable's value, or `(unset)`;
//! - `screenshot` → an `image` content (`aegis_e2e::agent::MCP_SCREENSHOT`) and a text;
//! - `grow` → adds the tool `extra` (→ `extra ran`) and says so with
//!   `notifications/tools/list_changed` before answering.
//!
//! `FAKE_MCP_LOG=PATH` appends every received line to PATH; `FAKE_MCP_SLOW_START_MS`
//! delays the answer to `initialize`; `FAKE_MCP_DEEP=N` gives every tool a schema, and
//! `echo`'s answer a `structuredContent`, of N nested properties; `FAKE_MCP_INSTRUCTIONS`
//! is what the server says about its tools (`instructions` of `initialize` and
//! `server/discover`); `FAKE_MCP_RESOURCES` gives it resources: `notes://today` (text,
//! listed on the first page, which has a next one) and `file:///chart.png` (an image, on
//! the second), a template `notes://{day}`, and `Resource not found` for any other URI.
//!
//! `FAKE_MCP_PROMPTS` gives it prompts, two a page: `review` (argument `pr` required,
//! `focus` optional; a user message naming them, an embedded resource, and the
//! assistant's first words), `standup` (no argument), `picture` (an image), `hang` (never
//! answers) and, in 2026-07-28 only, `ask` (`input_required`); any other name is refused
//! with `-32602`; `FAKE_MCP_PROMPTS_HANG_AFTER=N` leaves every `prompts/list` page after
//! the Nth unanswered. `grow` adds the prompt `extra` too, and says so with
//! `notifications/prompts/list_changed` (in 2026-07-28, to a subscription that asked).
//!
//! `FAKE_MCP_ERA=modern` makes it a server of the stateless revision 2026-07-28 only, as
//! that revision describes one: `initialize` is refused with an error naming the version
//! it speaks; every request must carry `_meta` with `io.modelcontextprotocol/protocolVersion`
//! (another version: `-32022` listing the supported ones) and `clientCapabilities` (else
//! `-32602`); `server/discover` answers; results carry `resultType`, `tools/list` its
//! `ttlMs` and `cacheScope`; change notifications go only to a `subscriptions/listen`
//! subscription, acknowledged first and tagged with its id.
//!
//! `ask` asks the user [`ASK_FORM`] (an account, and a plan with a default) and the client
//! its roots, and answers what came back (`account A, plan P`, `declined`, `cancelled`,
//! then `; roots URI`). In 2025-06-18 it sends `roots/list` and `elicitation/create`
//! requests of its own while the call is open (refused when the client did not declare
//! `elicitation` in `initialize`); in 2026-07-28 it answers `input_required` with both and
//! a `requestState`, which the retry must echo. `ask_url` asks the user to open a page;
//! `confirm` asks yes or no (`Delete 3 files?`) and answers `deleted`, `kept`, `declined`
//! or `cancelled`.

use std::io::{BufRead, Write};

use serde_json::{json, Value};

const TOOLS: &[(&str, &str)] = &[
    ("echo", "Echo the text back"),
    ("add", "Add two numbers"),
    ("fail", "Always fails"),
    ("hang", "Never answers"),
    ("crash", "Exits the server"),
    ("pid", "The server's process id"),
    ("env", "An environment variable of the server"),
    ("screenshot", "A picture of the screen"),
    ("grow", "Adds a tool"),
    ("ask", "Asks the user first"),
    ("ask_url", "Asks the user to open a page"),
    ("confirm", "Asks the user yes or no"),
];
const EXTRA: (&str, &str) = ("extra", "Added by grow");

/// The form `ask` puts to the user.
fn ask_form() -> Value {
    json!({"mode": "form", "message": "Which account?", "requestedSchema": {"type": "object",
        "properties": {"account": {"type": "string", "description": "Your login"},
            "plan": {"type": "string", "enum": ["free", "pro"], "default": "free"}},
        "required": ["account"]}})
}

/// What `ask` answers, given the user's `ElicitResult` and the client's roots.
fn asked(answer: &Value, roots: &Value) -> Value {
    let said = match answer["action"].as_str() {
        Some("accept") if answer["content"].is_object() => format!(
            "account {}, plan {}",
            answer["content"]["account"].as_str().unwrap_or("?"),
            answer["content"]["plan"].as_str().unwrap_or("?")
        ),
        Some("accept") => "accepted".to_string(),
        Some("decline") => "declined".to_string(),
        Some("cancel") => "cancelled".to_string(),
        _ => format!("unexpected answer {answer}"),
    };
    text(
        &format!(
            "{said}; roots {}",
            roots["roots"][0]["uri"].as_str().unwrap_or("none")
        ),
        false,
    )
}

fn main() {
    let log_path = std::env::var("FAKE_MCP_LOG").ok();
    let slow_start: u64 = std::env::var("FAKE_MCP_SLOW_START_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let stdin = std::io::stdin();
    let mut out = std::io::stdout();
    let modern = std::env::var("FAKE_MCP_ERA").is_ok_and(|e| e == "modern");
    let mut initialized = false;
    let mut grown = false;
    // The `subscriptions/listen` request that asked for tool changes, if any, and whether
    // it asked for prompt changes too.
    let mut subscription: Option<Value> = None;
    let mut prompt_changes = false;
    // 2025-06-18: the client's capabilities, the `ask` call waiting for the user's answer,
    // and the roots the client gave.
    let mut client_caps = json!({});
    let mut asking: Option<Value> = None;
    let mut confirming = false;
    let mut roots = Value::Null;
    for line in stdin.lock().lines() {
        let Ok(line) = line else { break };
        if let Some(p) = &log_path {
            if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(p) {
                let _ = writeln!(f, "{line}");
            }
        }
        let Ok(msg) = serde_json::from_str::<Value>(&line) else {
            reply(
                &mut out,
                json!({"jsonrpc": "2.0", "id": null, "error": {"code": -32700, "message": "parse error"}}),
            );
            continue;
        };
        let method = msg["method"].as_str().unwrap_or("");
        if msg.get("method").is_none() && msg.get("id").is_some() {
            // The client's answer to a request of ours.
            match msg["id"].as_str() {
                Some("roots-1") => roots = msg["result"].clone(),
                Some("ask-1") => {
                    if let Some(call) = asking.take() {
                        let r = &msg["result"];
                        let answer = match msg.get("error") {
                            Some(e) => text(&format!("the client refused: {e}"), true),
                            None if std::mem::take(&mut confirming) => text(
                                match (r["action"].as_str(), r["content"]["ok"].as_bool()) {
                                    (Some("accept"), Some(true)) => "deleted",
                                    (Some("accept"), _) => "kept",
                                    (Some("decline"), _) => "declined",
                                    _ => "cancelled",
                                },
                                false,
                            ),
                            None => asked(r, &roots),
                        };
                        reply(&mut out, json!({"jsonrpc": "2.0", "id": call, "result": answer}));
                    }
                }
                _ => {}
            }
            continue;
        }
        if method == "notifications/cancelled" && asking.is_some() {
            asking = None;
            continue;
        }
        let id = msg.get("id").cloned();
        let Some(id) = id else {
            if method == "notifications/initialized" {
                initialized = true;
            }
            continue;
        };
        let meta = &msg["params"]["_meta"];
        let version = meta["io.modelcontextprotocol/protocolVersion"].as_str();
        let result = match method {
            "initialize" if modern => Err((
                -32601,
                "initialize is not a method of MCP 2026-07-28, the only version this server speaks",
            )),
            _ if modern && version.is_none() => {
                Err((-32602, "missing _meta io.modelcontextprotocol/protocolVersion"))
            }
            _ if modern && version != Some("2026-07-28") => {
                let e = json!({"code": -32022, "message": "Unsupported protocol version",
                    "data": {"supported": ["2026-07-28"], "requested": version}});
                reply(&mut out, json!({"jsonrpc": "2.0", "id": id, "error": e}));
                continue;
            }
            _ if modern && !meta["io.modelcontextprotocol/clientCapabilities"].is_object() => {
                Err((-32602, "missing _meta io.modelcontextprotocol/clientCapabilities"))
            }
            "server/discover" if modern => Ok(with_resources(with_instructions(json!({
                "supportedVersions": ["2026-07-28"],
                "capabilities": {"tools": {"listChanged": true}},
                "_meta": {"io.modelcontextprotocol/serverInfo": {"name": "fake-mcp", "version": "2.0.0"}}
            })))),
            "subscriptions/listen" if modern => {
                let wanted = msg["params"]["notifications"]["toolsListChanged"] == true;
                prompt_changes = prompts() && msg["params"]["notifications"]["promptsListChanged"] == true;
                reply(
                    &mut out,
                    json!({"jsonrpc": "2.0", "method": "notifications/subscriptions/acknowledged",
                        "params": {"_meta": {"io.modelcontextprotocol/subscriptionId": id},
                                   "notifications": {"toolsListChanged": wanted,
                                                     "promptsListChanged": prompt_changes}}}),
                );
                if wanted {
                    subscription = Some(id);
                }
                continue;
            }
            "ping" if modern => Err((-32601, "method not found")),
            "initialize" => {
                client_caps = msg["params"]["capabilities"].clone();
                std::thread::sleep(std::time::Duration::from_millis(slow_start));
                Ok(with_resources(with_instructions(json!({
                    "protocolVersion": "2025-06-18",
                    "capabilities": {"tools": {"listChanged": false}},
                    "serverInfo": {"name": "fake-mcp", "version": "1.0.0"}
                }))))
            }
            "ping" => Ok(json!({})),
            "prompts/list" | "prompts/get" if !initialized && !modern => Err((
                -32002,
                "server not initialized: send notifications/initialized first",
            )),
            "prompts/list" if prompts() => {
                if listing_hangs() {
                    continue;
                }
                let start: usize = msg["params"]["cursor"]
                    .as_str()
                    .and_then(|c| c.parse().ok())
                    .unwrap_or(0);
                let all = [
                    json!({"name": "review", "title": "Review", "description": "Review a pull request",
                        "arguments": [{"name": "pr", "description": "Its number", "required": true},
                                      {"name": "focus", "description": "What to look at"}]}),
                    json!({"name": "standup", "description": "Today's stand-up"}),
                    json!({"name": "picture", "description": "A picture to talk about"}),
                    json!({"name": "hang", "description": "Never answers"}),
                    json!({"name": "ask", "description": "Asks the user first"}),
                ];
                let extra = json!({"name": "extra", "description": "Added by grow"});
                let listed: Vec<&Value> = all
                    .iter()
                    .filter(|p| modern || p["name"] != "ask")
                    .chain(grown.then_some(&extra))
                    .collect();
                let mut r = json!({"prompts": listed.iter().skip(start).take(2).collect::<Vec<_>>()});
                if start + 2 < listed.len() {
                    r["nextCursor"] = json!((start + 2).to_string());
                }
                Ok(r)
            }
            "prompts/get" if prompts() => {
                let args = &msg["params"]["arguments"];
                match msg["params"]["name"].as_str().unwrap_or("") {
                    "review" => match args["pr"].as_str() {
                        Some(pr) => {
                            let focus = args["focus"].as_str().unwrap_or("everything");
                            Ok(json!({"description": "Review", "messages": [
                                {"role": "user", "content": {"type": "text",
                                    "text": format!("Review pull request #{pr}, looking at {focus}.")}},
                                {"role": "user", "content": {"type": "resource", "resource": {
                                    "uri": format!("pr://{pr}/diff"), "mimeType": "text/x-diff",
                                    "text": "-old line\n+new line"}}},
                                {"role": "assistant", "content": {"type": "text",
                                    "text": "I will read the diff first."}}
                            ]}))
                        }
                        None => Err((-32602, "missing required argument pr")),
                    },
                    "standup" => Ok(json!({"messages": [{"role": "user", "content":
                        {"type": "text", "text": "Write today's stand-up from the notes."}}]})),
                    "picture" => {
                        use base64::Engine;
                        let data = base64::engine::general_purpose::STANDARD
                            .encode(aegis_e2e::agent::MCP_SCREENSHOT);
                        Ok(json!({"messages": [{"role": "user", "content":
                            {"type": "image", "data": data, "mimeType": "image/png"}}]}))
                    }
                    "hang" => continue,
                    "ask" if modern => match msg["params"]["inputResponses"]["who"]["content"]["repo"]
                        .as_str()
                    {
                        Some(repo) => Ok(json!({"messages": [{"role": "user", "content": {"type": "text",
                            "text": format!("List the open issues of {repo}.")}}]})),
                        None => Ok(json!({"resultType": "input_required", "inputRequests": {
                            "who": {"method": "elicitation/create", "params": {"mode": "form",
                                "message": "Which repository?", "requestedSchema": {"type": "object",
                                "properties": {"repo": {"type": "string"}}}}}}})),
                    },
                    _ => Err((-32602, "Invalid prompt name")),
                }
            }
            "resources/list" | "resources/templates/list" | "resources/read" if !initialized && !modern => {
                Err((
                    -32002,
                    "server not initialized: send notifications/initialized first",
                ))
            }
            "resources/list" if resources() => match msg["params"]["cursor"].as_str() {
                None => Ok(json!({"resources": [{"uri": "notes://today", "name": "today",
                    "title": "Today's notes", "mimeType": "text/markdown"}], "nextCursor": "2"})),
                Some(_) => Ok(
                    json!({"resources": [{"uri": "file:///chart.png", "name": "chart.png",
                    "mimeType": "image/png", "size": aegis_e2e::agent::MCP_SCREENSHOT.len()}]}),
                ),
            },
            "resources/templates/list" if resources() => Ok(json!({"resourceTemplates": [
                {"uriTemplate": "notes://{day}", "name": "notes of a day"}]})),
            "resources/read" if resources() => match msg["params"]["uri"].as_str().unwrap_or("") {
                "notes://today" => Ok(json!({"contents": [{"uri": "notes://today",
                    "mimeType": "text/markdown", "text": "# Today\nship it"}]})),
                "file:///chart.png" => {
                    use base64::Engine;
                    let data =
                        base64::engine::general_purpose::STANDARD.encode(aegis_e2e::agent::MCP_SCREENSHOT);
                    Ok(
                        json!({"contents": [{"uri": "file:///chart.png", "mimeType": "image/png", "blob": data}]}),
                    )
                }
                _ if modern => Err((-32602, "Resource not found")),
                _ => Err((-32002, "Resource not found")),
            },
            "tools/list" | "tools/call" if !initialized && !modern => Err((
                -32002,
                "server not initialized: send notifications/initialized first",
            )),
            "tools/list" => {
                let start: usize = msg["params"]["cursor"]
                    .as_str()
                    .and_then(|c| c.parse().ok())
                    .unwrap_or(0);
                let tools: Vec<(&str, &str)> = TOOLS.iter().copied().chain(grown.then_some(EXTRA)).collect();
                let schema = match deep() {
                    Some(levels) => deep_schema(levels),
                    None => json!({"type": "object", "properties": {}}),
                };
                let page: Vec<Value> = tools
                    .iter()
                    .skip(start)
                    .take(2)
                    .map(|(name, d)| json!({"name": name, "description": d, "inputSchema": schema}))
                    .collect();
                let mut r = json!({"tools": page});
                if modern {
                    r["ttlMs"] = json!(3_600_000);
                    r["cacheScope"] = json!("private");
                }
                if start + 2 < tools.len() {
                    r["nextCursor"] = json!((start + 2).to_string());
                }
                Ok(r)
            }
            "tools/call" => {
                let args = &msg["params"]["arguments"];
                match msg["params"]["name"].as_str().unwrap_or("") {
                    "echo" if deep().is_some() => {
                        let mut r = text(args["text"].as_str().unwrap_or(""), false);
                        r["structuredContent"] = deep_schema(deep().unwrap_or(0));
                        Ok(r)
                    }
                    "echo" => Ok(text(args["text"].as_str().unwrap_or(""), false)),
                    "add" => Ok(text(
                        &(args["a"].as_f64().unwrap_or(0.0) + args["b"].as_f64().unwrap_or(0.0)).to_string(),
                        false,
                    )),
                    "fail" => Ok(text("this tool always fails", true)),
                    "pid" => Ok(text(&std::process::id().to_string(), false)),
                    "grow" => {
                        grown = true;
                        match (&subscription, modern) {
                            (_, false) => reply(
                                &mut out,
                                json!({"jsonrpc": "2.0", "method": "notifications/tools/list_changed"}),
                            ),
                            // Only a subscriber hears of it.
                            (Some(sub), true) => reply(
                                &mut out,
                                json!({"jsonrpc": "2.0", "method": "notifications/tools/list_changed",
                                    "params": {"_meta": {"io.modelcontextprotocol/subscriptionId": sub}}}),
                            ),
                            (None, true) => {}
                        }
                        match (&subscription, modern) {
                            (_, false) if prompts() => reply(
                                &mut out,
                                json!({"jsonrpc": "2.0", "method": "notifications/prompts/list_changed"}),
                            ),
                            (Some(sub), true) if prompt_changes => reply(
                                &mut out,
                                json!({"jsonrpc": "2.0", "method": "notifications/prompts/list_changed",
                                    "params": {"_meta": {"io.modelcontextprotocol/subscriptionId": sub}}}),
                            ),
                            _ => {}
                        }
                        Ok(text("grown", false))
                    }
                    "ask" | "ask_url" if modern => {
                        let responses = &msg["params"]["inputResponses"];
                        let caps = &meta["io.modelcontextprotocol/clientCapabilities"];
                        let question = match msg["params"]["name"] == "ask_url" {
                            true => json!({"mode": "url", "url": "https://accounts.example.com/connect?s=1",
                                "message": "Connect your account."}),
                            false => ask_form(),
                        };
                        if responses.is_null() {
                            let mut requests = json!({"where": {"method": "roots/list", "params": {}}});
                            if caps["elicitation"].is_object() {
                                requests["who"] = json!({"method": "elicitation/create", "params": question});
                            }
                            Ok(json!({"resultType": "input_required", "requestState": "state-1",
                                "inputRequests": requests}))
                        } else if msg["params"]["requestState"] != "state-1" {
                            Err((-32602, "requestState missing or altered"))
                        } else if responses["who"].is_null() {
                            Ok(text("no user to ask", true))
                        } else {
                            Ok(asked(&responses["who"], &responses["where"]))
                        }
                    }
                    "confirm" if !modern => {
                        reply(
                            &mut out,
                            json!({"jsonrpc": "2.0", "id": "ask-1",
                            "method": "elicitation/create", "params": {"message": "Delete 3 files?",
                                "requestedSchema": {"type": "object", "properties": {"ok": {"type": "boolean"}},
                                "required": ["ok"]}}}),
                        );
                        asking = Some(id);
                        confirming = true;
                        continue;
                    }
                    "ask" | "ask_url" => {
                        if client_caps["elicitation"].is_null() {
                            Ok(text("the client takes no questions", true))
                        } else {
                            let question = match msg["params"]["name"] == "ask_url" {
                                true => {
                                    json!({"mode": "url", "url": "https://accounts.example.com/connect?s=1",
                                    "message": "Connect your account."})
                                }
                                false => ask_form(),
                            };
                            reply(
                                &mut out,
                                json!({"jsonrpc": "2.0", "id": "roots-1", "method": "roots/list"}),
                            );
                            reply(
                                &mut out,
                                json!({"jsonrpc": "2.0", "id": "ask-1",
                                "method": "elicitation/create", "params": question}),
                            );
                            asking = Some(id);
                            continue;
                        }
                    }
                    "extra" if grown => Ok(text("extra ran", false)),
                    "screenshot" => {
                        use base64::Engine;
                        let data = base64::engine::general_purpose::STANDARD
                            .encode(aegis_e2e::agent::MCP_SCREENSHOT);
                        Ok(json!({"content": [{"type": "text", "text": "the screen:"},
                            {"type": "image", "data": data, "mimeType": "image/png"}]}))
                    }
                    "env" => {
                        let name = args["name"].as_str().unwrap_or("");
                        Ok(text(
                            &std::env::var(name).unwrap_or_else(|_| "(unset)".into()),
                            false,
                        ))
                    }
                    "hang" => continue,
                    "crash" => std::process::exit(3),
                    _ => Err((-32602, "unknown tool")),
                }
            }
            _ => Err((-32601, "method not found")),
        };
        let msg = match result {
            Ok(mut r) => {
                if modern && r.get("resultType").is_none() {
                    r["resultType"] = json!("complete");
                }
                json!({"jsonrpc": "2.0", "id": id, "result": r})
            }
            Err((code, m)) => json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": m}}),
        };
        reply(&mut out, msg);
    }
}

/// `FAKE_MCP_RESOURCES`: the server has resources.
fn resources() -> bool {
    std::env::var("FAKE_MCP_RESOURCES").is_ok()
}

/// `FAKE_MCP_PROMPTS`: the server has prompts.
fn prompts() -> bool {
    std::env::var("FAKE_MCP_PROMPTS").is_ok()
}

/// With `FAKE_MCP_PROMPTS_HANG_AFTER=N`, whether this `prompts/list` comes after the Nth
/// and is never answered (a server that stopped answering after it started).
fn listing_hangs() -> bool {
    static LISTED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let Some(n) = std::env::var("FAKE_MCP_PROMPTS_HANG_AFTER")
        .ok()
        .and_then(|n| n.parse().ok())
    else {
        return false;
    };
    LISTED.fetch_add(1, std::sync::atomic::Ordering::SeqCst) >= n
}

/// `result` declaring the resources and prompts capabilities, when the server has them.
fn with_resources(mut result: Value) -> Value {
    if resources() {
        result["capabilities"]["resources"] = json!({});
    }
    if prompts() {
        result["capabilities"]["prompts"] = json!({"listChanged": false});
    }
    result
}

/// `result` with `instructions` from `FAKE_MCP_INSTRUCTIONS`, when set.
fn with_instructions(mut result: Value) -> Value {
    if let Ok(text) = std::env::var("FAKE_MCP_INSTRUCTIONS") {
        result["instructions"] = json!(text);
    }
    result
}

/// `FAKE_MCP_DEEP`: how many levels of properties the deep schemas have.
fn deep() -> Option<usize> {
    std::env::var("FAKE_MCP_DEEP").ok()?.parse().ok()
}

/// A schema of `levels` nested properties (two JSON levels each): 60 is as deep as a line
/// may be and still be read by serde_json (128 levels, the envelope's included), a hostile
/// or broken server's.
fn deep_schema(levels: usize) -> Value {
    let mut schema = json!({"type": "string", "x-mcp-header": "Deep"});
    for i in 0..levels {
        schema = json!({"type": "object", "properties": {format!("p{i}"): schema}});
    }
    schema
}

fn text(t: &str, is_error: bool) -> Value {
    json!({"content": [{"type": "text", "text": t}], "isError": is_error})
}

fn reply(out: &mut impl Write, msg: Value) {
    let _ = writeln!(out, "{msg}");
    let _ = out.flush();
}
