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
//! delays the answer to `initialize`.

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
];
const EXTRA: (&str, &str) = ("extra", "Added by grow");

fn main() {
    let log_path = std::env::var("FAKE_MCP_LOG").ok();
    let slow_start: u64 = std::env::var("FAKE_MCP_SLOW_START_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let stdin = std::io::stdin();
    let mut out = std::io::stdout();
    let mut initialized = false;
    let mut grown = false;
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
        let id = msg.get("id").cloned();
        let Some(id) = id else {
            if method == "notifications/initialized" {
                initialized = true;
            }
            continue;
        };
        let result = match method {
            "initialize" => {
                std::thread::sleep(std::time::Duration::from_millis(slow_start));
                Ok(json!({
                    "protocolVersion": "2025-06-18",
                    "capabilities": {"tools": {"listChanged": false}},
                    "serverInfo": {"name": "fake-mcp", "version": "1.0.0"}
                }))
            }
            "ping" => Ok(json!({})),
            "tools/list" | "tools/call" if !initialized => Err((
                -32002,
                "server not initialized: send notifications/initialized first",
            )),
            "tools/list" => {
                let start: usize = msg["params"]["cursor"]
                    .as_str()
                    .and_then(|c| c.parse().ok())
                    .unwrap_or(0);
                let tools: Vec<(&str, &str)> = TOOLS.iter().copied().chain(grown.then_some(EXTRA)).collect();
                let page: Vec<Value> = tools
                    .iter()
                    .skip(start)
                    .take(2)
                    .map(|(name, d)| json!({"name": name, "description": d, "inputSchema": {"type": "object", "properties": {}}}))
                    .collect();
                let mut r = json!({"tools": page});
                if start + 2 < tools.len() {
                    r["nextCursor"] = json!((start + 2).to_string());
                }
                Ok(r)
            }
            "tools/call" => {
                let args = &msg["params"]["arguments"];
                match msg["params"]["name"].as_str().unwrap_or("") {
                    "echo" => Ok(text(args["text"].as_str().unwrap_or(""), false)),
                    "add" => Ok(text(
                        &(args["a"].as_f64().unwrap_or(0.0) + args["b"].as_f64().unwrap_or(0.0)).to_string(),
                        false,
                    )),
                    "fail" => Ok(text("this tool always fails", true)),
                    "pid" => Ok(text(&std::process::id().to_string(), false)),
                    "grow" => {
                        grown = true;
                        reply(
                            &mut out,
                            json!({"jsonrpc": "2.0", "method": "notifications/tools/list_changed"}),
                        );
                        Ok(text("grown", false))
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
            Ok(r) => json!({"jsonrpc": "2.0", "id": id, "result": r}),
            Err((code, m)) => json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": m}}),
        };
        reply(&mut out, msg);
    }
}

fn text(t: &str, is_error: bool) -> Value {
    json!({"content": [{"type": "text", "text": t}], "isError": is_error})
}

fn reply(out: &mut impl Write, msg: Value) {
    let _ = writeln!(out, "{msg}");
    let _ = out.flush();
}
